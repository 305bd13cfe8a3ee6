//! [`ApiError`]: everything that can stand between a request and its answer, how each
//! maps to an exit code, and how error bodies and transport failures are read.

use reqwest::Response;

use super::model::{ErrorBody, error_body};
use crate::exit::Exit;

/// Why a request did not give what was asked.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Nothing answered: connection refused, a timeout, a connection dropped mid-way.
    #[error("cannot reach {url}: {detail}")]
    Unreachable { url: String, detail: String },
    /// The gateway answered with an error body.
    #[error("{code}: {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    /// The gateway answered something this client cannot read.
    #[error("unexpected answer from {url}: {detail}")]
    Protocol { url: String, detail: String },
    /// Reading an input or writing an output on this machine failed.
    #[error("{path}: {source}")]
    Local {
        path: String,
        source: std::io::Error,
    },
}

impl ApiError {
    /// The exit code this error stands for; see [`crate::exit`].
    pub fn exit(&self) -> Exit {
        match self {
            ApiError::Unreachable { .. } => Exit::Unreachable,
            // Only seen once the retries are spent.
            ApiError::Api {
                status: 503 | 429, ..
            } => Exit::Unreachable,
            ApiError::Api { .. } | ApiError::Protocol { .. } | ApiError::Local { .. } => {
                Exit::JobFailed
            }
        }
    }

    /// A short code for tables and JSON: the gateway's code, or what went wrong here.
    pub fn code(&self) -> &str {
        match self {
            ApiError::Unreachable { .. } => "unreachable",
            ApiError::Api { code, .. } => code,
            ApiError::Protocol { .. } => "bad_answer",
            ApiError::Local { .. } => "io_error",
        }
    }

    /// The HTTP status, when the gateway answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub(super) fn local(path: &std::path::Path, source: std::io::Error) -> Self {
        ApiError::Local {
            path: path.display().to_string(),
            source,
        }
    }
}

/// An error body (`{"error": {"code", "message"}}`), or the status and text when the
/// answer is not the gateway's JSON (a proxy's page, say).
pub(super) async fn error_of(url: &str, response: Response) -> ApiError {
    let status = response.status();
    let text = match response.text().await {
        Ok(text) => text,
        Err(e) => return transport(url, &e),
    };
    match error_body(&text) {
        Some(ErrorBody { code, message }) => ApiError::Api {
            status: status.as_u16(),
            code,
            message,
        },
        None => ApiError::Api {
            status: status.as_u16(),
            code: format!("http_{}", status.as_u16()),
            message: format!(
                "{} from {url}: {}",
                status,
                text.chars().take(200).collect::<String>().trim()
            ),
        },
    }
}

/// A failure below HTTP. All of them mean the gateway could not be talked to.
pub(super) fn transport(url: &str, e: &reqwest::Error) -> ApiError {
    ApiError::Unreachable {
        url: url.split('?').next().unwrap_or(url).into(),
        detail: root_cause(e),
    }
}

/// reqwest's own message ("error sending request for url (…)") repeats the URL and hides
/// the reason; the innermost cause is the one a person needs ("Connection refused").
pub(super) fn root_cause(e: &dyn std::error::Error) -> String {
    let mut innermost = e;
    while let Some(cause) = innermost.source() {
        innermost = cause;
    }
    let text = innermost.to_string();
    if e.to_string().contains("timed out") || text.is_empty() {
        return e.to_string();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_exit_codes() {
        let api = |status| ApiError::Api {
            status,
            code: "x".into(),
            message: "y".into(),
        };
        assert_eq!(api(422).exit(), Exit::JobFailed);
        assert_eq!(api(409).exit(), Exit::JobFailed);
        assert_eq!(api(503).exit(), Exit::Unreachable);
        assert_eq!(api(429).exit(), Exit::Unreachable);
        let down = ApiError::Unreachable {
            url: "u".into(),
            detail: "refused".into(),
        };
        assert_eq!(down.exit(), Exit::Unreachable);
        assert_eq!(api(422).to_string(), "x: y");
    }
}
