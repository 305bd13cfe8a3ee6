//! The records the gateway answers with. The fields the client reads are typed; every
//! other field is kept as it came (`#[serde(flatten)]`), so `--json` passes a record on
//! whole, including fields added to the gateway after this client was built.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A job record as `GET /v1/jobs/{id}` returns it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    pub id: String,
    pub state: String,
    #[serde(default)]
    pub error: Option<ErrorBody>,
    #[serde(default)]
    pub result: Option<ResultMeta>,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

impl Job {
    /// No state follows these.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self.state.as_str(),
            "succeeded" | "failed" | "cancelled" | "expired"
        )
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResultMeta {
    #[serde(default)]
    pub content_type: String,
    #[serde(default)]
    pub width: u32,
    #[serde(default)]
    pub height: u32,
    #[serde(default)]
    pub bytes: u64,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

/// One page of `GET /v1/jobs`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Page {
    pub jobs: Vec<Job>,
    #[serde(default)]
    pub next_cursor: Option<String>,
}

/// A downloaded result.
#[derive(Debug, Clone)]
pub struct Downloaded {
    pub path: std::path::PathBuf,
    pub bytes: u64,
    pub content_type: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_record_round_trips_whole() {
        let record = serde_json::json!({
            "id": "j", "state": "succeeded", "error": null, "attempts": 1,
            "result": {"content_type": "image/jpeg", "width": 3, "height": 2, "bytes": 9, "processing_ms": 4},
            "links": {"self": "/v1/jobs/j"}
        });
        let job: Job = serde_json::from_value(record.clone()).expect("parses");
        assert!(job.is_terminal());
        assert_eq!(
            job.result.as_ref().map(|r| (r.width, r.height)),
            Some((3, 2))
        );
        assert_eq!(serde_json::to_value(&job).expect("serializes"), record);
    }
}
