//! `ApiError`: every failure the API can answer, with its status and stable code.
//!
//! The body is always `{"error": {"code": "...", "message": "..."}}`, and the message
//! names the limit or field at fault, so a client can fix its request without guessing.
//! [`ApiCode`] is the one list of codes, each with its wire name and its status: an
//! [`ApiError`] carries one, the OpenAPI document's `error.code` enum is derived from it,
//! and a test holds the error table of docs/api.md to it.

use std::fmt;

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Declares [`ApiCode`] from one table of `Variant = "wire_name" => STATUS`: the enum (its
/// serde name is the wire name), `ALL` in the table's order, `as_str` and `status`.
///
/// The wire name is matched as a `tt`, not a `literal`: a `literal` fragment reaches the
/// `ToSchema` derive wrapped in an invisible group, which it does not read as a rename.
macro_rules! api_codes {
    ($($variant:ident = $name:tt => $status:ident,)+) => {
        /// Every `error.code` the gateway answers with. Clients branch on these, so a
        /// code, once shipped, is never renamed.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
        pub enum ApiCode {
            $(
                #[serde(rename = $name)]
                $variant,
            )+
        }

        impl ApiCode {
            /// Every code, in the order of the error table in docs/api.md.
            pub const ALL: [ApiCode; [$($name),+].len()] = [$(ApiCode::$variant),+];

            /// The wire name.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(ApiCode::$variant => $name,)+
                }
            }

            /// The HTTP status every answer with this code has.
            pub const fn status(self) -> StatusCode {
                match self {
                    $(ApiCode::$variant => StatusCode::$status,)+
                }
            }
        }
    };
}

api_codes! {
    MissingImage = "missing_image" => BAD_REQUEST,
    EmptyImage = "empty_image" => BAD_REQUEST,
    MalformedMultipart = "malformed_multipart" => BAD_REQUEST,
    DuplicateField = "duplicate_field" => BAD_REQUEST,
    BodyReadFailed = "body_read_failed" => BAD_REQUEST,
    InvalidIdempotencyKey = "invalid_idempotency_key" => BAD_REQUEST,
    CredentialMissing = "credential_missing" => UNAUTHORIZED,
    CredentialMalformed = "credential_malformed" => UNAUTHORIZED,
    CredentialInvalid = "credential_invalid" => UNAUTHORIZED,
    CredentialExpired = "credential_expired" => UNAUTHORIZED,
    CredentialRevoked = "credential_revoked" => UNAUTHORIZED,
    InsufficientScope = "insufficient_scope" => FORBIDDEN,
    LinkInvalid = "link_invalid" => FORBIDDEN,
    LinkExpired = "link_expired" => FORBIDDEN,
    NotFound = "not_found" => NOT_FOUND,
    MethodNotAllowed = "method_not_allowed" => METHOD_NOT_ALLOWED,
    RequestTimeout = "request_timeout" => REQUEST_TIMEOUT,
    NotReady = "not_ready" => CONFLICT,
    JobFailed = "job_failed" => CONFLICT,
    JobCancelled = "job_cancelled" => CONFLICT,
    ResultMissing = "result_missing" => CONFLICT,
    NotCancellable = "not_cancellable" => CONFLICT,
    LinksDisabled = "links_disabled" => CONFLICT,
    WebhooksDisabled = "webhooks_disabled" => CONFLICT,
    Expired = "expired" => GONE,
    ResultDeleted = "result_deleted" => GONE,
    UploadTooLarge = "upload_too_large" => PAYLOAD_TOO_LARGE,
    UnsupportedMediaType = "unsupported_media_type" => UNSUPPORTED_MEDIA_TYPE,
    InvalidParameter = "invalid_parameter" => UNPROCESSABLE_ENTITY,
    UnknownOp = "unknown_op" => UNPROCESSABLE_ENTITY,
    TooManySteps = "too_many_steps" => UNPROCESSABLE_ENTITY,
    TooManyPixels = "too_many_pixels" => UNPROCESSABLE_ENTITY,
    TooManyScans = "too_many_scans" => UNPROCESSABLE_ENTITY,
    TruncatedImage = "truncated_image" => UNPROCESSABLE_ENTITY,
    InvalidImage = "invalid_image" => UNPROCESSABLE_ENTITY,
    IdempotencyKeyReused = "idempotency_key_reused" => UNPROCESSABLE_ENTITY,
    CallbackNotAllowed = "callback_not_allowed" => UNPROCESSABLE_ENTITY,
    QueueFull = "queue_full" => TOO_MANY_REQUESTS,
    RateLimited = "rate_limited" => TOO_MANY_REQUESTS,
    TenantQuotaExceeded = "tenant_quota_exceeded" => TOO_MANY_REQUESTS,
    Internal = "internal" => INTERNAL_SERVER_ERROR,
    BrokerUnavailable = "broker_unavailable" => SERVICE_UNAVAILABLE,
    StoreUnavailable = "store_unavailable" => SERVICE_UNAVAILABLE,
    BlobStoreUnavailable = "blob_store_unavailable" => SERVICE_UNAVAILABLE,
    IdentityProviderUnavailable = "identity_provider_unavailable" => SERVICE_UNAVAILABLE,
}

impl ApiCode {
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
    pub code: ApiCode,
    /// Names the field or limit at fault. Meant for people; do not parse it.
    pub message: String,
}

/// An error answered to a client: its code (which decides the status), the message the
/// body carries, and for back-pressure and outages the `Retry-After` seconds.
#[derive(Debug)]
pub struct ApiError {
    code: ApiCode,
    message: String,
    retry_after_secs: Option<u32>,
    /// For 401 and 403: the `WWW-Authenticate` challenge (RFC 6750).
    challenge: Option<String>,
    /// For a tenant's limits: the `RateLimit-Policy` and `RateLimit` fields.
    rate_limit: Option<Box<(String, String)>>,
    /// For `internal` only: what went wrong, logged when answered and never sent.
    detail: Option<String>,
}

impl ApiError {
    /// An answer with `code`, whose status it decides, and `message`.
    pub fn new(code: ApiCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            retry_after_secs: None,
            challenge: None,
            rate_limit: None,
            detail: None,
        }
    }

    /// Adds a `WWW-Authenticate` header (the bearer challenge of a 401 or 403).
    pub fn challenge(mut self, challenge: impl Into<String>) -> Self {
        self.challenge = Some(challenge.into());
        self
    }

    /// Adds a `Retry-After` header of `secs` (for `queue_full` and the `…_unavailable`
    /// codes: nothing was done, try again then).
    pub fn retry_after(mut self, secs: u32) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    /// Adds the `RateLimit-Policy` and `RateLimit` fields (draft-ietf-httpapi-ratelimit-
    /// headers) of the limit that refused the request.
    pub fn rate_limit(mut self, policy: String, state: String) -> Self {
        self.rate_limit = Some(Box::new((policy, state)));
        self
    }

    /// 422 `invalid_parameter`, naming the parameter.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ApiCode::InvalidParameter, message)
    }

    /// 404 `not_found` for a job id (or something that is not a job id at all).
    pub fn not_found(id: &str) -> Self {
        Self::new(ApiCode::NotFound, format!("no job with id {id:?}"))
    }

    /// 404 `not_found` for a path that is not part of the API.
    pub fn no_route(path: &str) -> Self {
        Self::new(
            ApiCode::NotFound,
            format!("no such path: {path}; the API is described at /openapi.json"),
        )
    }

    /// 405: the path exists but not with this method. The router adds the `Allow` header
    /// after this body is made, so it is not set here.
    pub fn method_not_allowed() -> Self {
        Self::new(
            ApiCode::MethodNotAllowed,
            "this path does not take this method; the Allow header lists the ones it does",
        )
    }

    /// 408: the request ran past the request time limit (a stalled upload, say).
    pub fn timeout(limit_secs: u64) -> Self {
        Self::new(
            ApiCode::RequestTimeout,
            format!(
                "the request took longer than the {limit_secs} s limit (PIXMILL_REQUEST_TIMEOUT_SECS)"
            ),
        )
    }

    /// 413: the upload is over the size limit.
    pub fn too_large(limit: u64) -> Self {
        Self::new(
            ApiCode::UploadTooLarge,
            format!("the upload is larger than the {limit}-byte limit (PIXMILL_MAX_UPLOAD_BYTES)"),
        )
    }

    /// 500: a bug. `detail` goes to the log, not to the client.
    pub fn internal(detail: impl Into<String>) -> Self {
        ApiError {
            detail: Some(detail.into()),
            ..Self::new(
                ApiCode::Internal,
                "an internal error occurred; it has been logged",
            )
        }
    }

    /// The code sent.
    pub fn code(&self) -> ApiCode {
        self.code
    }

    /// The HTTP status of the answer: the code's.
    pub fn status(&self) -> StatusCode {
        self.code.status()
    }

    /// The message sent.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.detail {
            Some(detail) => write!(f, "internal error: {detail}"),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Some(detail) = &self.detail {
            tracing::error!(%detail, "internal error");
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
            },
        };
        let mut response = (self.code.status(), Json(body)).into_response();
        if let Some(secs) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some(value) = self.challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, value);
        }
        if let Some(fields) = self.rate_limit {
            insert_rate_limit(response.headers_mut(), &fields.0, &fields.1);
        }
        response
    }
}

/// Sets `RateLimit-Policy` and `RateLimit` (values we format, so always valid).
pub fn insert_rate_limit(headers: &mut axum::http::HeaderMap, policy: &str, state: &str) {
    if let (Ok(policy), Ok(state)) = (HeaderValue::from_str(policy), HeaderValue::from_str(state)) {
        headers.insert("ratelimit-policy", policy);
        headers.insert("ratelimit", state);
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        tracing::error!(error = %e, "task store failed");
        ApiError::new(
            ApiCode::StoreUnavailable,
            "the task store is unavailable; try again shortly",
        )
        .retry_after(2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The status, body and `Retry-After` of an answer.
    async fn answer(error: ApiError) -> (StatusCode, String, Option<String>) {
        let response = error.into_response();
        let status = response.status();
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .map(|v| v.to_str().expect("ascii").to_string());
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .expect("body");
        (
            status,
            String::from_utf8(body.to_vec()).expect("utf-8"),
            retry_after,
        )
    }

    /// Pins the error body on the wire.
    #[tokio::test]
    async fn error_body_golden_json() {
        let error = ApiError::new(
            ApiCode::TooManySteps,
            "the pipeline has 1000 steps; at most 20 are allowed",
        );
        assert_eq!(
            answer(error).await,
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                r#"{"error":{"code":"too_many_steps","message":"the pipeline has 1000 steps; at most 20 are allowed"}}"#.to_string(),
                None,
            )
        );
    }

    #[test]
    fn codes_round_trip_through_serde_and_parse() {
        for code in ApiCode::ALL {
            assert_eq!(
                serde_json::to_value(code).expect("serialize"),
                serde_json::Value::from(code.as_str())
            );
            assert_eq!(
                serde_json::from_value::<ApiCode>(code.as_str().into()).expect("deserialize"),
                code
            );
            assert_eq!(ApiCode::parse(code.as_str()), Some(code));
        }
        let mut names: Vec<_> = ApiCode::ALL.iter().map(|c| c.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ApiCode::ALL.len(), "a code is listed twice");
    }

    /// Pins every code's wire name, status and place in `ALL`: clients branch on these.
    #[test]
    fn every_code_has_its_status() {
        let pinned = "\
            400 missing_image, 400 empty_image, 400 malformed_multipart, 400 duplicate_field, \
            400 body_read_failed, 400 invalid_idempotency_key, 401 credential_missing, \
            401 credential_malformed, 401 credential_invalid, 401 credential_expired, \
            401 credential_revoked, 403 insufficient_scope, 403 link_invalid, \
            403 link_expired, 404 not_found, 405 method_not_allowed, 408 request_timeout, \
            409 not_ready, 409 job_failed, 409 job_cancelled, 409 result_missing, \
            409 not_cancellable, 409 links_disabled, 409 webhooks_disabled, 410 expired, \
            410 result_deleted, 413 upload_too_large, 415 unsupported_media_type, \
            422 invalid_parameter, 422 unknown_op, 422 too_many_steps, 422 too_many_pixels, \
            422 too_many_scans, 422 truncated_image, 422 invalid_image, \
            422 idempotency_key_reused, 422 callback_not_allowed, 429 queue_full, \
            429 rate_limited, 429 tenant_quota_exceeded, \
            500 internal, 503 broker_unavailable, 503 store_unavailable, \
            503 blob_store_unavailable, 503 identity_provider_unavailable";
        let listed: Vec<String> = ApiCode::ALL
            .iter()
            .map(|c| format!("{} {}", c.status().as_u16(), c.as_str()))
            .collect();
        assert_eq!(listed.join(", "), pinned);
    }

    /// Each constructor's answer: status, body and `Retry-After`.
    #[tokio::test]
    async fn constructors_answer_as_pinned() {
        let body = |code: &str, message: &str| {
            serde_json::json!({"error": {"code": code, "message": message}}).to_string()
        };
        let cases = [
            (
                ApiError::new(ApiCode::MissingImage, "no image"),
                400,
                body("missing_image", "no image"),
                None,
            ),
            (
                ApiError::invalid("width must be positive"),
                422,
                body("invalid_parameter", "width must be positive"),
                None,
            ),
            (
                ApiError::not_found("abc"),
                404,
                body("not_found", "no job with id \"abc\""),
                None,
            ),
            (
                ApiError::no_route("/x"),
                404,
                body(
                    "not_found",
                    "no such path: /x; the API is described at /openapi.json",
                ),
                None,
            ),
            (
                ApiError::method_not_allowed(),
                405,
                body(
                    "method_not_allowed",
                    "this path does not take this method; the Allow header lists the ones it does",
                ),
                None,
            ),
            (
                ApiError::timeout(30),
                408,
                body(
                    "request_timeout",
                    "the request took longer than the 30 s limit (PIXMILL_REQUEST_TIMEOUT_SECS)",
                ),
                None,
            ),
            (
                ApiError::too_large(1024),
                413,
                body(
                    "upload_too_large",
                    "the upload is larger than the 1024-byte limit (PIXMILL_MAX_UPLOAD_BYTES)",
                ),
                None,
            ),
            (
                ApiError::new(ApiCode::QueueFull, "full").retry_after(5),
                429,
                body("queue_full", "full"),
                Some("5".to_string()),
            ),
            (
                ApiError::internal("a secret detail"),
                500,
                body("internal", "an internal error occurred; it has been logged"),
                None,
            ),
            (
                crate::store::StoreError::Unavailable("down".into()).into(),
                503,
                body(
                    "store_unavailable",
                    "the task store is unavailable; try again shortly",
                ),
                Some("2".to_string()),
            ),
        ];
        for (error, status, body, retry_after) in cases {
            let code = error.code();
            assert_eq!(error.status(), code.status());
            assert_eq!(
                answer(error).await,
                (
                    StatusCode::from_u16(status).expect("status"),
                    body,
                    retry_after
                ),
                "{code:?}"
            );
        }
    }

    /// An internal error's detail is in its `Display` (for logs), never in its answer.
    #[test]
    fn internal_detail_is_for_the_log() {
        let error = ApiError::internal("a secret detail");
        assert_eq!(error.to_string(), "internal error: a secret detail");
        assert_eq!(
            error.message(),
            "an internal error occurred; it has been logged"
        );
    }
}
