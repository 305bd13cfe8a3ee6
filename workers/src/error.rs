//! How a job can fail, which decides what happens to its delivery.

use pixmill_shared::ErrorCode;

/// A job failure. Permanent ones are answered with a `failed` reply and acked; transient
/// ones send the job to the retry queue to run again after a back-off, until its retries
/// run out (see [`crate::decision`]).
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Running the same job again would fail the same way.
    #[error("{code:?}: {message}")]
    Permanent { code: ErrorCode, message: String },
    /// The job may succeed later (blob store or broker trouble).
    #[error("transient: {0}")]
    Transient(String),
}

impl JobError {
    /// A permanent failure with a stable code and a human message.
    pub fn permanent(code: ErrorCode, message: impl Into<String>) -> Self {
        JobError::Permanent {
            code,
            message: message.into(),
        }
    }

    /// The failure code, for permanent errors.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            JobError::Permanent { code, .. } => Some(*code),
            JobError::Transient(_) => None,
        }
    }
}
