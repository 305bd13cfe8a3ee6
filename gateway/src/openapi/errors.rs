//! The error answers of each operation, built from [`ApiCode`]: one response per status,
//! with an example for every code that operation can answer.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use serde_json::json;
use utoipa::openapi::{
    ContentBuilder, RefOr, Response, ResponseBuilder,
    example::ExampleBuilder,
    header::{Header, HeaderBuilder},
    schema::{ObjectBuilder, Ref, Type},
};

use crate::error::ApiCode;

/// A realistic `message` for each code, as the gateway words it.
pub fn example_message(code: ApiCode) -> &'static str {
    use ApiCode::*;
    match code {
        MissingImage => "no `image` field: attach the file as form field `image`",
        EmptyImage => "the `image` field is empty",
        MalformedMultipart => {
            "the multipart body could not be read: failed to read stream: incomplete multipart body"
        }
        DuplicateField => "send exactly one `image` field",
        BodyReadFailed => "reading the body failed: connection reset",
        InvalidIdempotencyKey => "Idempotency-Key must be 1 to 255 visible ASCII characters",
        LinkInvalid => {
            "the link's signature does not match: it was changed, or made for another job"
        }
        LinkExpired => "the link expired at 2025-12-01T11:00:00Z; ask for a new one",
        CrossSiteRequest => {
            r#"refused a cross-site POST: Sec-Fetch-Site is "cross-site", so another site's page sent it; a browser may change state here only from this gateway's own pages"#
        }
        LinksDisabled => "signed links are off on this gateway: set PIXMILL_LINK_KEYS to make them",
        WebhooksDisabled => {
            "webhooks are off on this gateway: set PIXMILL_WEBHOOK_SECRET to sign them"
        }
        CredentialMissing => {
            "this API needs a key: send `Authorization: Bearer pmk_…` (PIXMILL_AUTH=required)"
        }
        CredentialMalformed => {
            "the Authorization header is not a pixmill API key: an API key reads pmk_<id>_<secret>, with a 16-hex-digit id"
        }
        CredentialInvalid => "the API key is not valid",
        CredentialExpired => "the API key 4f40a8905c1e4d7b expired",
        CredentialRevoked => "the API key 4f40a8905c1e4d7b was revoked",
        InsufficientScope => "this needs the jobs:write scope; the key has jobs:read",
        NotFound => "no job with id \"4f40a890-0000-4000-8000-000000000000\"",
        MethodNotAllowed => {
            "this path does not take this method; the Allow header lists the ones it does"
        }
        RequestTimeout => {
            "the request took longer than the 120 s limit (PIXMILL_REQUEST_TIMEOUT_SECS)"
        }
        NotReady => {
            "the job is running; poll /v1/jobs/4f40a890-5c1e-4d7b-9a3e-2b8f6c0d1e27 until it has succeeded"
        }
        JobFailed => {
            "the job failed (undecodable_image): the image could not be decoded; there is no result"
        }
        JobCancelled => {
            "job 4f40a890-5c1e-4d7b-9a3e-2b8f6c0d1e27 was cancelled before it ran; there is no result"
        }
        ResultMissing => "the result is no longer stored",
        NotCancellable => {
            "job 4f40a890-5c1e-4d7b-9a3e-2b8f6c0d1e27 is already running and will finish; only queued jobs can be cancelled"
        }
        Expired => {
            "job 4f40a890-5c1e-4d7b-9a3e-2b8f6c0d1e27 finished longer ago than the retention period (PIXMILL_RETENTION_SECS); its files are gone"
        }
        ResultDeleted => {
            "the result of job 4f40a890-5c1e-4d7b-9a3e-2b8f6c0d1e27 was deleted on request"
        }
        UploadTooLarge => {
            "the upload is larger than the 26214400-byte limit (PIXMILL_MAX_UPLOAD_BYTES)"
        }
        UnsupportedMediaType => {
            "the bytes are not an image this service reads (JPEG, PNG, WebP or GIF)"
        }
        InvalidParameter => "blur: sigma must be between 0.1 and 50 (got 60)",
        UnknownOp => {
            "unknown op \"sharpen\"; expected one of resize, crop, blur, edges, swap, grayscale, rotate, flip"
        }
        TooManySteps => "the pipeline has 1000 steps; at most 20 are allowed (PIXMILL_MAX_STEPS)",
        TooManyPixels => {
            "the image is 100000×100000 pixels; at most 50000000 are allowed (PIXMILL_MAX_PIXELS)"
        }
        TooManyScans => {
            "the JPEG has 20000 scans; the limit is 100 scans (PIXMILL_MAX_SCANS): each scan is another pass over the whole image, and encoders write about 10"
        }
        TruncatedImage => "the JPEG is truncated: it has no end-of-image marker",
        InvalidImage => "the PNG header could not be read",
        IdempotencyKeyReused => {
            "Idempotency-Key \"order-1234-thumb\" was already used for job 4f40a890-5c1e-4d7b-9a3e-2b8f6c0d1e27 with a different request"
        }
        CallbackNotAllowed => {
            "callback_url \"http://hooks.internal/pixmill\" is refused: hooks.internal resolves to a loopback, private or otherwise non-public address (name the host in PIXMILL_WEBHOOK_ALLOW to allow it)"
        }
        QueueFull => "the job queue is full (PIXMILL_MAX_QUEUED jobs waiting); retry later",
        RateLimited => {
            "tenant \"acme\" may submit 20 jobs per second with bursts of 40 (PIXMILL_TENANT_RATE, PIXMILL_TENANT_BURST); retry in 1 s"
        }
        TenantQuotaExceeded => {
            "tenant \"acme\" has 50 jobs queued or running, its limit (PIXMILL_TENANT_MAX_INFLIGHT) is 50; retry when some have finished"
        }
        Internal => "an internal error occurred; it has been logged",
        BrokerUnavailable => {
            "the job could not be queued: the broker did not confirm within 1.5s; retry shortly"
        }
        StoreUnavailable => "the task store is unavailable; try again shortly",
        BlobStoreUnavailable => {
            "the result could not be read: the blob store is unavailable; retry shortly"
        }
        IdentityProviderUnavailable => {
            "the identity provider's keys (PIXMILL_JWT_JWKS) cannot be read, so the token cannot be checked; try again shortly"
        }
        ServerBusy => {
            "the gateway holds as many uploads as it may (PIXMILL_UPLOAD_BUDGET_BYTES, 268435456 bytes); retry shortly"
        }
    }
}

/// The error body for `code`, with its example message.
pub fn example_body(code: ApiCode) -> serde_json::Value {
    json!({"error": {"code": code.as_str(), "message": example_message(code)}})
}

/// One response per status among `codes`, each with an example per code.
pub fn responses(codes: &[ApiCode]) -> BTreeMap<String, RefOr<Response>> {
    let mut by_status: BTreeMap<u16, Vec<ApiCode>> = BTreeMap::new();
    for &code in codes {
        by_status
            .entry(code.status().as_u16())
            .or_default()
            .push(code);
    }
    by_status
        .into_iter()
        .map(|(status, codes)| (status.to_string(), RefOr::T(response(status, &codes))))
        .collect()
}

fn response(status: u16, codes: &[ApiCode]) -> Response {
    let reason = StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    let names: Vec<String> = codes.iter().map(|c| format!("`{}`", c.as_str())).collect();
    let mut content = ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody")));
    for &code in codes {
        content = content.examples_from_iter([(
            code.as_str(),
            ExampleBuilder::new()
                .summary(code.as_str())
                .value(Some(example_body(code)))
                .build(),
        )]);
    }
    let mut builder = ResponseBuilder::new()
        .description(format!("{reason}: {}", names.join(", ")))
        .content("application/json", content.build());
    if matches!(status, 429 | 503) {
        builder = builder.header(
            "Retry-After",
            integer_header("Seconds to wait before retrying; nothing was done."),
        );
    }
    if codes
        .iter()
        .any(|c| matches!(c, ApiCode::RateLimited | ApiCode::TenantQuotaExceeded))
    {
        builder = builder
            .header(
                "RateLimit-Policy",
                string_header(
                    "The tenant's limit that refused the request (IETF draft \
                     `draft-ietf-httpapi-ratelimit-headers`): `\"submits\";q=40;w=2` for \
                     the submit rate, `\"in-flight\";q=50;qu=\"concurrent-requests\"` for \
                     the in-flight quota.",
                ),
            )
            .header(
                "RateLimit",
                string_header(
                    "What is left of it: `\"submits\";r=0;t=1` (remaining, seconds until \
                     it resets).",
                ),
            );
    }
    if matches!(status, 401 | 403) {
        builder = builder.header(
            "WWW-Authenticate",
            HeaderBuilder::new()
                .schema(ObjectBuilder::new().schema_type(Type::String))
                .description(Some(
                    "The bearer challenge (RFC 6750): `Bearer realm=\"pixmill\"`, with \
                     `error` and `error_description` when a key was presented, and `scope` \
                     when one is missing.",
                ))
                .build(),
        );
    }
    if status == 405 {
        builder = builder.header(
            "Allow",
            HeaderBuilder::new()
                .schema(ObjectBuilder::new().schema_type(Type::String))
                .description(Some("The methods the path has."))
                .build(),
        );
    }
    builder.build()
}

fn string_header(description: &str) -> Header {
    HeaderBuilder::new()
        .schema(ObjectBuilder::new().schema_type(Type::String))
        .description(Some(description))
        .build()
}

fn integer_header(description: &str) -> Header {
    HeaderBuilder::new()
        .schema(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(0)),
        )
        .description(Some(description))
        .build()
}

/// Declares a type whose `IntoResponses` are the error answers for the given codes, for
/// `responses(...)` in a `#[utoipa::path]`.
macro_rules! errors {
    ($($(#[doc = $doc:literal])* $name:ident: [$($code:ident),+ $(,)?];)+) => {
        $(
            $(#[doc = $doc])*
            pub struct $name;

            impl $name {
                /// The codes this operation can answer.
                pub const CODES: &'static [ApiCode] = &[$(ApiCode::$code),+];
            }

            impl utoipa::IntoResponses for $name {
                fn responses() -> BTreeMap<String, RefOr<Response>> {
                    responses(Self::CODES)
                }
            }
        )+
    };
}

errors! {
    /// `POST /v1/jobs`.
    SubmitErrors: [
        MissingImage, EmptyImage, MalformedMultipart, DuplicateField, BodyReadFailed,
        InvalidIdempotencyKey, CredentialMissing, CredentialMalformed, CredentialInvalid,
        CredentialExpired, CredentialRevoked, IdentityProviderUnavailable,
        InsufficientScope, CrossSiteRequest, RequestTimeout,
        UploadTooLarge, UnsupportedMediaType, InvalidParameter, UnknownOp, TooManySteps,
        TooManyPixels, TooManyScans, TruncatedImage, InvalidImage, IdempotencyKeyReused,
        CallbackNotAllowed, QueueFull, RateLimited, TenantQuotaExceeded, BrokerUnavailable,
        StoreUnavailable, BlobStoreUnavailable, ServerBusy,
    ];
    /// `GET /v1/jobs` and `GET /v1/stats`.
    QueryErrors: [
        CredentialMissing, CredentialMalformed, CredentialInvalid, CredentialExpired,
        CredentialRevoked, IdentityProviderUnavailable,
        InsufficientScope, InvalidParameter, StoreUnavailable,
    ];
    /// `GET /v1/jobs/{id}` (its 410 is the job record, declared beside it).
    StatusErrors: [
        CredentialMissing, CredentialMalformed, CredentialInvalid, CredentialExpired,
        CredentialRevoked, IdentityProviderUnavailable,
        InsufficientScope, NotFound, InvalidParameter, StoreUnavailable, ServerBusy,
    ];
    /// `DELETE /v1/jobs/{id}`.
    CancelErrors: [
        CredentialMissing, CredentialMalformed, CredentialInvalid, CredentialExpired,
        CredentialRevoked, IdentityProviderUnavailable,
        InsufficientScope, CrossSiteRequest, NotFound, NotCancellable, Expired,
        StoreUnavailable, BlobStoreUnavailable,
    ];
    /// `POST /v1/jobs/{id}/links`.
    LinkErrors: [
        CredentialMissing, CredentialMalformed, CredentialInvalid, CredentialExpired,
        CredentialRevoked, IdentityProviderUnavailable,
        InsufficientScope, CrossSiteRequest, NotFound, JobFailed, JobCancelled, LinksDisabled,
        Expired, ResultDeleted, InvalidParameter, StoreUnavailable,
    ];
    /// `GET /v1/jobs/{id}/result`.
    ResultErrors: [
        CredentialMissing, CredentialMalformed, CredentialInvalid, CredentialExpired,
        CredentialRevoked, IdentityProviderUnavailable,
        InsufficientScope, LinkInvalid, LinkExpired, NotFound, NotReady,
        JobFailed, JobCancelled, ResultMissing, Expired, ResultDeleted, StoreUnavailable,
        BlobStoreUnavailable,
    ];
    /// `GET /v1/jobs/{id}/events`.
    EventsErrors: [
        CredentialMissing, CredentialMalformed, CredentialInvalid, CredentialExpired,
        CredentialRevoked, IdentityProviderUnavailable,
        InsufficientScope, NotFound, StoreUnavailable, ServerBusy,
    ];
    /// `GET /metrics`.
    AdminErrors: [
        CredentialMissing, CredentialMalformed, CredentialInvalid, CredentialExpired,
        CredentialRevoked, IdentityProviderUnavailable,
        InsufficientScope, StoreUnavailable,
    ];
    /// `GET /readyz`, when a key is presented (it is not needed).
    PresentedKeyErrors: [
        CredentialMalformed, CredentialInvalid, CredentialExpired, CredentialRevoked,
    ];
    /// `POST /v1/keys`.
    CreateKeyErrors: [
        CredentialMissing, CredentialMalformed, CredentialInvalid, CredentialExpired,
        CredentialRevoked, IdentityProviderUnavailable,
        InsufficientScope, CrossSiteRequest, InvalidParameter, StoreUnavailable,
    ];
    /// `GET /v1/keys`.
    ListKeysErrors: [
        CredentialMissing, CredentialMalformed, CredentialInvalid, CredentialExpired,
        CredentialRevoked, IdentityProviderUnavailable,
        InsufficientScope, InvalidParameter, StoreUnavailable,
    ];
    /// `DELETE /v1/keys/{id}`.
    KeyErrors: [
        CredentialMissing, CredentialMalformed, CredentialInvalid, CredentialExpired,
        CredentialRevoked, IdentityProviderUnavailable,
        InsufficientScope, CrossSiteRequest, NotFound, StoreUnavailable,
    ];
    /// `PUT /v1/tenants/{name}`, `GET /v1/tenants/{name}`.
    TenantErrors: [
        CredentialMissing, CredentialMalformed, CredentialInvalid, CredentialExpired,
        CredentialRevoked, IdentityProviderUnavailable,
        InsufficientScope, CrossSiteRequest, InvalidParameter, StoreUnavailable,
    ];
    /// `GET /v1/webhooks/secret`.
    WebhookSecretErrors: [
        CredentialMissing, CredentialMalformed, CredentialInvalid, CredentialExpired,
        CredentialRevoked, IdentityProviderUnavailable,
        InsufficientScope, WebhooksDisabled, StoreUnavailable,
    ];
    /// The Swagger UI files.
    FileErrors: [NotFound];
}
