//! `ApiError`: every failure the API can answer, with its status and stable code.
//!
//! The body is always `{"error": {"code": "...", "message": "..."}}`, and the message
//! names the limit or field at fault, so a client can fix its request without guessing.
//! [`ApiCode`] is the one list of codes: the OpenAPI document's `error.code` enum is
//! derived from it, and a test holds the error table of docs/api.md to it.

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::routes::JobView;

/// Every `error.code` the gateway answers with. Clients branch on these, so a code, once
/// shipped, is never renamed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ApiCode {
    MissingImage,
    EmptyImage,
    MalformedMultipart,
    DuplicateField,
    BodyReadFailed,
    InvalidIdempotencyKey,
    NotFound,
    MethodNotAllowed,
    RequestTimeout,
    NotReady,
    JobFailed,
    JobCancelled,
    ResultMissing,
    NotCancellable,
    Expired,
    ResultDeleted,
    UploadTooLarge,
    UnsupportedMediaType,
    InvalidParameter,
    UnknownOp,
    TooManySteps,
    TooManyPixels,
    TooManyScans,
    TruncatedImage,
    InvalidImage,
    IdempotencyKeyReused,
    CallbackNotAllowed,
    QueueFull,
    Internal,
    BrokerUnavailable,
    StoreUnavailable,
    BlobStoreUnavailable,
}

impl ApiCode {
    /// Every code, in the order of docs/api.md. A test checks this against the derived schema,
    /// which lists every variant.
    pub const ALL: [ApiCode; 32] = {
        use ApiCode::*;
        [
            MissingImage,
            EmptyImage,
            MalformedMultipart,
            DuplicateField,
            BodyReadFailed,
            InvalidIdempotencyKey,
            NotFound,
            MethodNotAllowed,
            RequestTimeout,
            NotReady,
            JobFailed,
            JobCancelled,
            ResultMissing,
            NotCancellable,
            Expired,
            ResultDeleted,
            UploadTooLarge,
            UnsupportedMediaType,
            InvalidParameter,
            UnknownOp,
            TooManySteps,
            TooManyPixels,
            TooManyScans,
            TruncatedImage,
            InvalidImage,
            IdempotencyKeyReused,
            CallbackNotAllowed,
            QueueFull,
            Internal,
            BrokerUnavailable,
            StoreUnavailable,
            BlobStoreUnavailable,
        ]
    };

    /// The wire name.
    pub const fn as_str(self) -> &'static str {
        use ApiCode::*;
        match self {
            MissingImage => "missing_image",
            EmptyImage => "empty_image",
            MalformedMultipart => "malformed_multipart",
            DuplicateField => "duplicate_field",
            BodyReadFailed => "body_read_failed",
            InvalidIdempotencyKey => "invalid_idempotency_key",
            NotFound => "not_found",
            MethodNotAllowed => "method_not_allowed",
            RequestTimeout => "request_timeout",
            NotReady => "not_ready",
            JobFailed => "job_failed",
            JobCancelled => "job_cancelled",
            ResultMissing => "result_missing",
            NotCancellable => "not_cancellable",
            Expired => "expired",
            ResultDeleted => "result_deleted",
            UploadTooLarge => "upload_too_large",
            UnsupportedMediaType => "unsupported_media_type",
            InvalidParameter => "invalid_parameter",
            UnknownOp => "unknown_op",
            TooManySteps => "too_many_steps",
            TooManyPixels => "too_many_pixels",
            TooManyScans => "too_many_scans",
            TruncatedImage => "truncated_image",
            InvalidImage => "invalid_image",
            IdempotencyKeyReused => "idempotency_key_reused",
            CallbackNotAllowed => "callback_not_allowed",
            QueueFull => "queue_full",
            Internal => "internal",
            BrokerUnavailable => "broker_unavailable",
            StoreUnavailable => "store_unavailable",
            BlobStoreUnavailable => "blob_store_unavailable",
        }
    }

    /// The HTTP status every answer with this code has.
    pub const fn status(self) -> StatusCode {
        use ApiCode::*;
        match self {
            MissingImage
            | EmptyImage
            | MalformedMultipart
            | DuplicateField
            | BodyReadFailed
            | InvalidIdempotencyKey => StatusCode::BAD_REQUEST,
            NotFound => StatusCode::NOT_FOUND,
            MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            NotReady | JobFailed | JobCancelled | ResultMissing | NotCancellable => {
                StatusCode::CONFLICT
            }
            Expired | ResultDeleted => StatusCode::GONE,
            UploadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            InvalidParameter | UnknownOp | TooManySteps | TooManyPixels | TooManyScans
            | TruncatedImage | InvalidImage | IdempotencyKeyReused | CallbackNotAllowed => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            QueueFull => StatusCode::TOO_MANY_REQUESTS,
            Internal => StatusCode::INTERNAL_SERVER_ERROR,
            BrokerUnavailable | StoreUnavailable | BlobStoreUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    /// Parses a wire name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == name)
    }
}

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong, for a program (`code`) and for a person (`message`).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable and machine-readable; see the `ApiCode` schema for the status of each.
    #[schema(value_type = ApiCode)]
    pub code: &'static str,
    /// Names the field or limit at fault. Meant for people; do not parse it.
    pub message: String,
}

/// An error answered to a client.
///
/// The variants carry the code as a `&'static str` so any module can name one in a struct
/// literal; [`ApiError::api_code`] reads it back as an [`ApiCode`], and
/// `gateway/tests/openapi.rs` checks that every code literal in the gateway's source is one.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is not well-formed (missing image, bad multipart, …).
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    /// 404: no such job (or not a job id at all), or no such path.
    #[error("no job with id {0:?}")]
    NotFound(String),
    /// 404 for a path that is not part of the API.
    #[error("no such path: {0}; the API is described at /openapi.json")]
    NoRoute(String),
    /// 405: the path exists but not with this method. The router adds the `Allow` header
    /// after this body is made, so it is not set here.
    #[error("this path does not take this method; the Allow header lists the ones it does")]
    MethodNotAllowed,
    /// 409: the job exists but its result is not there (yet, or ever).
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// 410: the job or its result existed but has been removed.
    #[error("{message}")]
    Gone { code: &'static str, message: String },
    /// 410 with the expired job's record (its `error` says `expired`).
    #[error("gone")]
    GoneWith(Box<JobView>),
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
            code: ApiCode::InvalidParameter.as_str(),
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

    /// 409 with a code.
    pub fn conflict(code: ApiCode, message: impl Into<String>) -> Self {
        ApiError::Conflict {
            code: code.as_str(),
            message: message.into(),
        }
    }

    /// The status and the code as sent.
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, code),
            ApiError::NotFound(_) | ApiError::NoRoute(_) => {
                (StatusCode::NOT_FOUND, ApiCode::NotFound.as_str())
            }
            ApiError::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                ApiCode::MethodNotAllowed.as_str(),
            ),
            ApiError::Conflict { code, .. } => (StatusCode::CONFLICT, code),
            ApiError::Gone { code, .. } => (StatusCode::GONE, code),
            ApiError::GoneWith(_) => (StatusCode::GONE, ApiCode::Expired.as_str()),
            ApiError::TooManyRequests { code, .. } => (StatusCode::TOO_MANY_REQUESTS, code),
            ApiError::TooLarge { .. } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                ApiCode::UploadTooLarge.as_str(),
            ),
            ApiError::Timeout { .. } => (
                StatusCode::REQUEST_TIMEOUT,
                ApiCode::RequestTimeout.as_str(),
            ),
            ApiError::UnsupportedMediaType(_) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                ApiCode::UnsupportedMediaType.as_str(),
            ),
            ApiError::Unprocessable { code, .. } => (StatusCode::UNPROCESSABLE_ENTITY, code),
            ApiError::Unavailable { code, .. } => (StatusCode::SERVICE_UNAVAILABLE, code),
            ApiError::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                ApiCode::Internal.as_str(),
            ),
        }
    }

    /// The code as an [`ApiCode`]; None only for a code missing from the list, which
    /// the source scan in `gateway/tests/openapi.rs` rules out.
    pub fn api_code(&self) -> Option<ApiCode> {
        ApiCode::parse(self.status_and_code().1)
    }

    /// The HTTP status of the answer.
    pub fn status(&self) -> StatusCode {
        self.status_and_code().0
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::GoneWith(body) = self {
            return (StatusCode::GONE, Json(body)).into_response();
        }
        let (status, code) = self.status_and_code();
        debug_assert_eq!(
            ApiCode::parse(code).map(ApiCode::status),
            Some(status),
            "{code} is not in ApiCode, or is answered with another status"
        );
        let message = match &self {
            ApiError::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                "an internal error occurred; it has been logged".to_string()
            }
            other => other.to_string(),
        };
        let body = ErrorBody {
            error: ErrorDetail { code, message },
        };
        let mut response = (status, Json(body)).into_response();
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
            code: ApiCode::StoreUnavailable.as_str(),
            message: "the task store is unavailable; try again shortly".into(),
            retry_after_secs: 2,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pins the error body on the wire.
    #[test]
    fn error_body_golden_json() {
        let response = ApiError::Unprocessable {
            code: "too_many_steps",
            message: "the pipeline has 1000 steps; at most 20 are allowed".into(),
        };
        let (status, code) = response.status_and_code();
        let body = ErrorBody {
            error: ErrorDetail {
                code,
                message: response.to_string(),
            },
        };
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            serde_json::to_string(&body).expect("serialize"),
            r#"{"error":{"code":"too_many_steps","message":"the pipeline has 1000 steps; at most 20 are allowed"}}"#
        );
    }

    #[test]
    fn codes_round_trip_through_serde_and_parse() {
        for code in ApiCode::ALL {
            assert_eq!(
                serde_json::to_value(code).expect("serialize"),
                serde_json::Value::from(code.as_str())
            );
            assert_eq!(ApiCode::parse(code.as_str()), Some(code));
        }
        let mut names: Vec<_> = ApiCode::ALL.iter().map(|c| c.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ApiCode::ALL.len(), "a code is listed twice");
    }

    /// Every variant is answered with its code's status.
    #[test]
    fn variants_agree_with_their_codes() {
        let samples = [
            ApiError::bad_request("missing_image", "m"),
            ApiError::NotFound("x".into()),
            ApiError::NoRoute("/x".into()),
            ApiError::MethodNotAllowed,
            ApiError::conflict(ApiCode::NotReady, "m"),
            ApiError::Gone {
                code: "result_deleted",
                message: "m".into(),
            },
            ApiError::Timeout { limit_secs: 1 },
            ApiError::TooLarge { limit: 1 },
            ApiError::UnsupportedMediaType("m".into()),
            ApiError::invalid("m"),
            ApiError::TooManyRequests {
                code: "queue_full",
                message: "m".into(),
                retry_after_secs: 1,
            },
            ApiError::Unavailable {
                code: "broker_unavailable",
                message: "m".into(),
                retry_after_secs: 1,
            },
            ApiError::Internal("m".into()),
        ];
        for error in samples {
            let code = error.api_code().expect("listed");
            assert_eq!(code.status(), error.status(), "{code:?}");
        }
    }
}
