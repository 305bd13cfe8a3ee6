//! A job's webhook as the store keeps it: the URL, where delivery stands, and every
//! attempt so far. Delivering it is [`crate::webhooks::delivery`]'s job.

use serde::{Deserialize, Serialize};

use super::StoreError;

/// Where a job's callback stands, as the job record shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Callback {
    pub url: String,
    pub state: CallbackState,
    /// Every attempt so far, oldest first.
    pub attempts: Vec<Attempt>,
}

/// How far a callback's delivery got. Stored (`webhook_state`) and shown by its name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallbackState {
    /// Until delivered or given up.
    #[default]
    Pending,
    /// The receiver answered 2xx.
    Delivered,
    /// Every allowed attempt failed.
    Failed,
}

impl CallbackState {
    /// The stored and wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            CallbackState::Pending => "pending",
            CallbackState::Delivered => "delivered",
            CallbackState::Failed => "failed",
        }
    }

    /// Parses a stored name.
    pub fn parse(name: &str) -> Option<Self> {
        [
            CallbackState::Pending,
            CallbackState::Delivered,
            CallbackState::Failed,
        ]
        .into_iter()
        .find(|s| s.as_str() == name)
    }
}

/// One delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// When it was made (ms since the epoch).
    pub at_ms: i64,
    /// The receiver's HTTP status, if it answered.
    pub status: Option<u16>,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

/// The callback columns of a row, as the job shows them (a row without a state is
/// still `pending`).
pub(super) fn from_columns(
    url: Option<String>,
    state: Option<String>,
    log: Option<&str>,
) -> Result<Option<Callback>, StoreError> {
    let Some(url) = url else {
        return Ok(None);
    };
    let state = match state {
        None => CallbackState::Pending,
        Some(name) => CallbackState::parse(&name)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown webhook state {name:?}")))?,
    };
    Ok(Some(Callback {
        url,
        state,
        attempts: log
            .map(serde_json::from_str)
            .transpose()?
            .unwrap_or_default(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callback_states_keep_their_stored_and_wire_names() {
        for (state, name) in [
            (CallbackState::Pending, "pending"),
            (CallbackState::Delivered, "delivered"),
            (CallbackState::Failed, "failed"),
        ] {
            assert_eq!(state.as_str(), name);
            assert_eq!(CallbackState::parse(name), Some(state));
            assert_eq!(
                serde_json::to_value(state).expect("serialize"),
                serde_json::Value::from(name)
            );
        }
        assert_eq!(CallbackState::parse("sent"), None);
    }
}
