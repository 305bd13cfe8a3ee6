//! Change notices: every state change a gateway applies is published to the topic
//! exchange `pixmill.events` with routing key `job.<state>`.
//!
//! Each gateway binds its own exclusive, auto-delete queue to `job.*`, so a long-poll
//! on one gateway wakes as soon as another applies the reply. Any other service may bind
//! a queue of its own (an audit log to `job.#`, a thumbnail indexer to `job.succeeded`).
//! Notices are published after the store has the change, so a listener that re-reads
//! the job always sees at least that state.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::state::JobState;

/// The body of a change notice (JSON). Pinned by the golden test below.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct JobEvent {
    /// The job that changed.
    pub job_id: Uuid,
    /// The state it is in now.
    pub state: JobState,
    /// When the change was applied, in milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// Deliveries so far (0 until a worker starts it).
    pub attempts: u32,
    /// The worker that last reported on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// For `failed` and `cancelled`: why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<EventError>,
    /// For `succeeded`: what the result is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<EventResult>,
    /// The tenant whose job it is. Absent in notices from gateways that predate
    /// tenants; a listener that serves several tenants filters on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

/// A failure, as clients see it in the job record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct EventError {
    pub code: String,
    pub message: String,
}

/// A result's metadata (its blob key stays private to pixmill).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct EventResult {
    pub content_type: String,
    pub width: u32,
    pub height: u32,
    pub bytes: u64,
    pub processing_ms: u64,
    /// A job with variants: every output, in the order asked for (blob keys left out).
    /// Since contract 1.2.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<EventOutput>,
}

/// One output of a job with variants, in a change notice. Since contract 1.2.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct EventOutput {
    pub name: String,
    pub content_type: String,
    pub width: u32,
    pub height: u32,
    pub bytes: u64,
}

impl JobEvent {
    /// The routing key the notice is published with: `job.<state>`.
    pub fn routing_key(&self) -> String {
        format!("job.{}", self.state.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn job_event_golden_json() {
        let id = Uuid::parse_str("7b0c4a8e-1f5d-4c1e-9a55-0d7e3c7a9b11").expect("uuid");
        let event = JobEvent {
            job_id: id,
            state: JobState::Succeeded,
            at_ms: 1_764_583_200_123,
            attempts: 1,
            worker: Some("worker-1".into()),
            error: None,
            result: Some(EventResult {
                content_type: "image/jpeg".into(),
                width: 640,
                height: 400,
                bytes: 51_234,
                processing_ms: 7,
                outputs: Vec::new(),
            }),
            tenant: Some("acme".into()),
        };
        let golden = json!({
            "job_id": "7b0c4a8e-1f5d-4c1e-9a55-0d7e3c7a9b11",
            "state": "succeeded",
            "at_ms": 1_764_583_200_123_i64,
            "attempts": 1,
            "worker": "worker-1",
            "result": {"content_type": "image/jpeg", "width": 640, "height": 400,
                       "bytes": 51_234, "processing_ms": 7},
            "tenant": "acme",
        });
        assert_eq!(serde_json::to_value(&event).expect("serialize"), golden);
        assert_eq!(
            serde_json::from_value::<JobEvent>(golden).expect("parse"),
            event
        );
        assert_eq!(event.routing_key(), "job.succeeded");

        let failed = json!({"job_id": id, "state": "failed", "at_ms": 5, "attempts": 2,
                            "error": {"code": "timeout", "message": "too slow"}});
        let parsed: JobEvent = serde_json::from_value(failed).expect("parse failed");
        assert_eq!(parsed.error.map(|e| e.code).as_deref(), Some("timeout"));
        assert_eq!(parsed.worker, None);
        // A notice from a gateway without tenants still parses.
        assert_eq!(parsed.tenant, None);
    }
}
