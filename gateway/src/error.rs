//! `ApiError`: every failure the API can answer, with its status and stable code.
//!
//! The body is always `{"error": {"code": "...", "message": "..."}}`, and the message
//! names the limit or field at fault, so a client can fix its request without guessing.

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::json;

/// An error answered to a client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is not well-formed (missing image, bad multipart, …).
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    /// 404: no such job (or not a job id at all).
    #[error("no job with id {0:?}")]
    NotFound(String),
    /// 409: the job exists but its result is not there (yet, or ever).
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// 410: the job or its result existed but has been removed.
    #[error("{message}")]
    Gone { code: &'static str, message: String },
    /// 410 with a full body (an expired job's record plus its error).
    #[error("gone")]
    GoneWith(serde_json::Value),
    /// 408: the request ran past the request time limit (a stalled upload, say).
    #[error("the request took longer than the {limit_secs} s limit (PIXMILL_REQUEST_TIMEOUT_SECS)")]
    Timeout { limit_secs: u64 },
    /// 413: the upload is over the size limit.
    #[error("the upload is larger than the {limit}-byte limit (PIXMILL_MAX_UPLOAD_BYTES)")]
    TooLarge { limit: u64 },
    /// 415: the bytes are not an image format we accept.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 422: well-formed, but a parameter or the image is out of bounds.
    #[error("{message}")]
    Unprocessable { code: &'static str, message: String },
    /// 429: back-pressure; the job queue is full. Retry after `Retry-After`.
    #[error("{message}")]
    TooManyRequests {
        code: &'static str,
        message: String,
        retry_after_secs: u32,
    },
    /// 503: the broker or the store is unavailable; retry later.
    #[error("{message}")]
    Unavailable {
        code: &'static str,
        message: String,
        retry_after_secs: u32,
    },
    /// 500: a bug. Details go to the log, not to the client.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// 422 for a parameter, naming it.
    pub fn invalid(message: impl Into<String>) -> Self {
        ApiError::Unprocessable {
            code: "invalid_parameter",
            message: message.into(),
        }
    }

    /// 400 with a code.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            code,
            message: message.into(),
        }
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, code),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Conflict { code, .. } => (StatusCode::CONFLICT, code),
            ApiError::Gone { code, .. } => (StatusCode::GONE, code),
            ApiError::GoneWith(_) => (StatusCode::GONE, "expired"),
            ApiError::TooManyRequests { code, .. } => (StatusCode::TOO_MANY_REQUESTS, code),
            ApiError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "upload_too_large"),
            ApiError::Timeout { .. } => (StatusCode::REQUEST_TIMEOUT, "request_timeout"),
            ApiError::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::Unprocessable { code, .. } => (StatusCode::UNPROCESSABLE_ENTITY, code),
            ApiError::Unavailable { code, .. } => (StatusCode::SERVICE_UNAVAILABLE, code),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::GoneWith(body) = self {
            return (StatusCode::GONE, Json(body)).into_response();
        }
        let (status, code) = self.status_and_code();
        let message = match &self {
            ApiError::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                "an internal error occurred; it has been logged".to_string()
            }
            other => other.to_string(),
        };
        let mut response = (
            status,
            Json(json!({"error": {"code": code, "message": message}})),
        )
            .into_response();
        if let ApiError::Unavailable {
            retry_after_secs, ..
        }
        | ApiError::TooManyRequests {
            retry_after_secs, ..
        } = self
        {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
        }
        response
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        tracing::error!(error = %e, "task store failed");
        ApiError::Unavailable {
            code: "store_unavailable",
            message: "the task store is unavailable; try again shortly".into(),
            retry_after_secs: 2,
        }
    }
}
