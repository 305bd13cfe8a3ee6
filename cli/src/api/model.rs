//! The records the gateway answers with. The fields the client reads are typed; every
//! other field is kept as it came (`#[serde(flatten)]`), so `--json` passes a record on
//! whole, including fields added to the gateway after this client was built.
//!
//! A typed field the gateway always sends is required here, even when it may be null:
//! a renamed or missing field must fail loudly as a bad answer rather than read as
//! `None` or 0. `tests/tests/cli_contract.rs` feeds the gateway's own records through
//! these types to keep both sides in step.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A job record as `GET /v1/jobs/{id}` returns it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    pub id: String,
    pub state: State,
    /// Null unless the job failed, was cancelled or expired; the key is always there.
    #[serde(deserialize_with = "Option::deserialize")]
    pub error: Option<ErrorBody>,
    /// Null unless the job succeeded and its result is kept; the key is always there.
    #[serde(deserialize_with = "Option::deserialize")]
    pub result: Option<ResultMeta>,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

impl Job {
    /// No state follows this one.
    pub fn is_terminal(&self) -> bool {
        self.state.is_terminal()
    }
}

/// A job's state, by its wire name.
///
/// The six states this client knows are variants; any other name is kept as
/// [`State::Other`] rather than refused. A gateway may be upgraded before its clients,
/// and a state added there must not turn every record that carries it into a "bad
/// answer": `status`, `list` and `--json` still show the record whole, with its state's
/// name. An unknown state counts as not terminal, so a wait keeps polling until the job
/// reaches a state this client knows (or its `--wait` limit).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum State {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    Expired,
    /// A state this client does not know, as the gateway named it.
    Other(String),
}

impl State {
    /// Every state this client knows, in the order a job can pass through them.
    pub const KNOWN: [State; 6] = [
        State::Queued,
        State::Running,
        State::Succeeded,
        State::Failed,
        State::Cancelled,
        State::Expired,
    ];

    /// The wire name: the one place this client spells the states.
    pub fn as_str(&self) -> &str {
        match self {
            State::Queued => "queued",
            State::Running => "running",
            State::Succeeded => "succeeded",
            State::Failed => "failed",
            State::Cancelled => "cancelled",
            State::Expired => "expired",
            State::Other(name) => name,
        }
    }

    /// Nothing more will happen to a job in this state.
    pub fn is_terminal(&self) -> bool {
        match self {
            State::Succeeded | State::Failed | State::Cancelled | State::Expired => true,
            State::Queued | State::Running | State::Other(_) => false,
        }
    }
}

impl From<String> for State {
    fn from(name: String) -> Self {
        State::KNOWN
            .into_iter()
            .find(|known| known.as_str() == name)
            .unwrap_or(State::Other(name))
    }
}

impl From<State> for String {
    fn from(state: State) -> Self {
        match state {
            State::Other(name) => name,
            known => known.as_str().to_string(),
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A job's `error`, and the `error` of an error answer (`{"error": {"code", "message"}}`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
}

/// A succeeded job's `result`. Every typed field is required: the gateway always sends
/// them, and a renamed one must not read as 0.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResultMeta {
    pub content_type: String,
    pub width: u32,
    pub height: u32,
    pub bytes: u64,
    /// A job with variants: every output, in the order asked for (the fields above
    /// repeat the first). Absent for a job with one result.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<OutputMeta>,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

/// One output of a succeeded job with variants.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutputMeta {
    /// The variant's name.
    pub name: String,
    pub content_type: String,
    pub width: u32,
    pub height: u32,
    pub bytes: u64,
    /// Where to download it: `/v1/jobs/{id}/result/{name}`.
    pub url: String,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

/// An error answer's body. Only its `error` is read.
#[derive(Debug, Deserialize)]
struct ErrorAnswer {
    error: ErrorBody,
}

/// The `error` of an error answer, or None when `text` is not the gateway's error JSON
/// (a proxy's page, say).
pub fn error_body(text: &str) -> Option<ErrorBody> {
    serde_json::from_str::<ErrorAnswer>(text)
        .ok()
        .map(|answer| answer.error)
}

/// One page of `GET /v1/jobs`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Page {
    pub jobs: Vec<Job>,
    /// Null on the last page; the key is always there.
    #[serde(deserialize_with = "Option::deserialize")]
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

    #[test]
    fn the_outputs_of_a_job_with_variants_are_read() {
        let record = serde_json::json!({
            "id": "j", "state": "succeeded", "error": null,
            "variants": [{"name": "w320", "steps": [{"op": "resize", "width": 320}],
                          "format": "jpeg", "quality": 85}],
            "result": {"content_type": "image/jpeg", "width": 320, "height": 213, "bytes": 9,
                       "processing_ms": 4,
                       "outputs": [{"name": "w320", "content_type": "image/jpeg", "width": 320,
                                    "height": 213, "bytes": 9, "url": "/v1/jobs/j/result/w320"}]}
        });
        let job: Job = serde_json::from_value(record.clone()).expect("parses");
        let outputs = &job.result.as_ref().expect("a result").outputs;
        assert_eq!(outputs.len(), 1);
        assert_eq!(
            (
                outputs[0].name.as_str(),
                outputs[0].url.as_str(),
                outputs[0].width
            ),
            ("w320", "/v1/jobs/j/result/w320", 320)
        );
        assert_eq!(serde_json::to_value(&job).expect("serializes"), record);
        // An output without its url is a bad answer.
        let mut broken = record;
        broken["result"]["outputs"][0]
            .as_object_mut()
            .expect("object")
            .remove("url");
        assert!(serde_json::from_value::<Job>(broken).is_err());
    }

    #[test]
    fn states_are_read_and_written_by_their_wire_names() {
        for state in State::KNOWN {
            let name = serde_json::to_value(&state).expect("serializes");
            assert_eq!(name, Value::String(state.as_str().into()));
            assert_eq!(serde_json::from_value::<State>(name).ok(), Some(state));
        }
        let terminal: Vec<&str> = State::KNOWN
            .iter()
            .filter(|s| s.is_terminal())
            .map(State::as_str)
            .collect();
        assert_eq!(terminal, ["succeeded", "failed", "cancelled", "expired"]);
    }

    /// A state added to the gateway later is kept by name, not refused.
    #[test]
    fn an_unknown_state_is_kept_and_not_terminal() {
        let state: State = serde_json::from_str(r#""paused""#).expect("parses");
        assert_eq!(state, State::Other("paused".into()));
        assert!(!state.is_terminal());
        assert_eq!(
            serde_json::to_string(&state).expect("serializes"),
            r#""paused""#
        );
    }

    /// A field the gateway always sends must be there: a renamed one is a bad answer,
    /// never a silent null or 0.
    #[test]
    fn required_fields_are_required() {
        let record = serde_json::json!({
            "id": "j", "state": "succeeded", "error": null,
            "result": {"content_type": "image/png", "width": 3, "height": 2, "bytes": 9},
        });
        assert!(serde_json::from_value::<Job>(record.clone()).is_ok());
        for key in ["id", "state", "error", "result"] {
            let mut missing = record.clone();
            missing.as_object_mut().expect("object").remove(key);
            assert!(
                serde_json::from_value::<Job>(missing).is_err(),
                "a record without {key} was accepted"
            );
        }
        for key in ["content_type", "width", "height", "bytes"] {
            let mut missing = record.clone();
            missing["result"]
                .as_object_mut()
                .expect("object")
                .remove(key);
            assert!(
                serde_json::from_value::<Job>(missing).is_err(),
                "a result without {key} was accepted"
            );
        }
        assert!(serde_json::from_str::<Page>(r#"{"jobs": []}"#).is_err());
    }

    #[test]
    fn error_answers_are_read() {
        let body = error_body(r#"{"error": {"code": "not_found", "message": "no job"}}"#)
            .expect("an error body");
        assert_eq!(
            (body.code.as_str(), body.message.as_str()),
            ("not_found", "no job")
        );
        assert!(error_body("<html>502 Bad Gateway</html>").is_none());
        assert!(error_body(r#"{"code": "not_found"}"#).is_none());
    }
}
