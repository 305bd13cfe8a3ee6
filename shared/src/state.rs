//! A job's states and the one rule about them: a job only moves forward.
//!
//! The rule lives here, above any SQL. Each task-store backend turns
//! [`JobState::sources`] into its conditional `UPDATE … WHERE state IN (…)`, so a late,
//! duplicate or reordered reply can never move a job backwards, whichever gateway
//! applies it.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Where a job is in its life. Stored and sent as its wire name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    /// Finished, and its input and result were removed after the retention period.
    Expired,
}

impl JobState {
    /// Every state, in the order a job can pass through them.
    pub const ALL: [JobState; 6] = [
        JobState::Queued,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Cancelled,
        JobState::Expired,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
            JobState::Expired => "expired",
        }
    }

    /// Parses a wire name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// True once nothing more will happen to the job (but expiry).
    pub fn is_terminal(self) -> bool {
        !matches!(self, JobState::Queued | JobState::Running)
    }

    /// The states from which a job may move to `self`. `running` → `running` is allowed
    /// so a redelivered job records its new worker and attempt.
    pub fn sources(self) -> &'static [JobState] {
        match self {
            JobState::Queued => &[],
            JobState::Running | JobState::Succeeded | JobState::Failed => {
                &[JobState::Queued, JobState::Running]
            }
            JobState::Cancelled => &[JobState::Queued],
            JobState::Expired => &[JobState::Succeeded, JobState::Failed, JobState::Cancelled],
        }
    }

    /// True when a job in state `self` may move to `to`.
    pub fn may_become(self, to: JobState) -> bool {
        to.sources().contains(&self)
    }

    /// `'queued', 'running'`: the sources of `self` as a SQL list of string literals.
    /// Built only from the fixed wire names above, never from input.
    pub fn sources_sql(self) -> String {
        self.sources()
            .iter()
            .map(|s| format!("'{}'", s.as_str()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_round_trip() {
        for state in JobState::ALL {
            assert_eq!(JobState::parse(state.as_str()), Some(state));
            assert_eq!(
                serde_json::to_value(state).expect("serialize"),
                serde_json::Value::String(state.as_str().into())
            );
        }
        assert_eq!(JobState::parse("pending"), None);
    }

    #[test]
    fn a_job_only_moves_forward() {
        use JobState::*;
        // Every allowed move, and nothing else.
        let allowed = [
            (Queued, Running),
            (Running, Running),
            (Queued, Succeeded),
            (Running, Succeeded),
            (Queued, Failed),
            (Running, Failed),
            (Queued, Cancelled),
            (Succeeded, Expired),
            (Failed, Expired),
            (Cancelled, Expired),
        ];
        for from in JobState::ALL {
            for to in JobState::ALL {
                assert_eq!(
                    from.may_become(to),
                    allowed.contains(&(from, to)),
                    "{from} -> {to}"
                );
            }
        }
        assert_eq!(Succeeded.sources_sql(), "'queued', 'running'");
        assert!(Succeeded.is_terminal() && !Running.is_terminal());
    }
}
