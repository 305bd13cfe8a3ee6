//! The edge: `Authorization: Bearer …` in, a [`Principal`] request extension out.
//!
//! [`authenticate`] runs before every route. It decides who the caller is and whether
//! the route's scope ([`required_scope`]) is among theirs, so handlers only read the
//! [`Principal`] it leaves. Its answers:
//!
//! - a key that is malformed, unknown, expired or revoked: 401 naming which, with a
//!   `WWW-Authenticate: Bearer` challenge, and never the key itself;
//! - no key where one is needed: 401 `credential_missing`;
//! - a valid key without the route's scope: 403 `insufficient_scope`.
//!
//! `PIXMILL_AUTH` ([`AuthMode`]) decides what a request *without* a key is: refused
//! (`required`), or the tenant `local` with every scope (`open`, the loopback default).
//! A presented key is checked in both modes.

use std::{fmt, sync::Arc};

use axum::{
    extract::{FromRequestParts, OptionalFromRequestParts, Request, State},
    http::{Method, header, request::Parts},
    middleware::Next,
    response::{IntoResponse, Response},
};

use super::{ApiScope, Authenticator, Principal, Refused, key};
use crate::{
    error::{ApiCode, ApiError},
    jwt::{JwtError, JwtVerifier, looks_like_jwt},
    store::Store,
};

/// `PIXMILL_AUTH`: what a request without a key is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// Every API route needs a key.
    Required,
    /// A request without a key is the tenant `local`, with every scope: one machine,
    /// one user, as `make run` serves on 127.0.0.1.
    Open,
}

impl AuthMode {
    pub const fn as_str(self) -> &'static str {
        match self {
            AuthMode::Required => "required",
            AuthMode::Open => "open",
        }
    }
}

impl fmt::Display for AuthMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for AuthMode {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value.trim() {
            "required" => Ok(AuthMode::Required),
            "open" => Ok(AuthMode::Open),
            _ => Err("expected required or open".into()),
        }
    }
}

/// What the edge check needs: the mode, the key verifier and, when configured, the
/// JWT verifier.
#[derive(Debug, Clone)]
pub struct AuthState {
    pub mode: AuthMode,
    pub authenticator: Arc<Authenticator>,
    /// Bearer JWTs from an identity provider (`PIXMILL_JWT_*`); None: API keys only.
    pub jwt: Option<Arc<JwtVerifier>>,
}

impl AuthState {
    pub fn new(mode: AuthMode, store: Store) -> Self {
        AuthState {
            mode,
            authenticator: Arc::new(Authenticator::new(store)),
            jwt: None,
        }
    }

    /// Also accepts bearer JWTs that `verifier` verifies.
    pub fn with_jwt(mut self, verifier: Option<JwtVerifier>) -> Self {
        self.jwt = verifier.map(Arc::new);
        self
    }

    /// The principal a bearer token stands for: an API key (`pmk_…`), or a JWT when
    /// JWTs are configured. Anything else is read as a malformed key, whose error says
    /// what a key looks like.
    async fn verify(&self, token: &str) -> Result<Principal, Refused> {
        if let Some(jwt) = &self.jwt
            && !token.starts_with(key::PREFIX)
            && looks_like_jwt(token)
        {
            return Ok(Principal::of_token(jwt.verify(token).await?));
        }
        self.authenticator
            .verify(token, pixmill_shared::now_ms())
            .await
    }
}

/// What a path needs before its handler runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Nothing: no key is read, none is needed (liveness, the page, the contract).
    Nothing,
    /// A key is checked when presented; without one the handler runs with no principal
    /// (a signed result link, whose signature the handler checks; `/readyz`, which
    /// shows an anonymous caller less).
    Optional,
    /// A principal with this scope.
    Scope(ApiScope),
    /// A principal (unknown paths, which answer 404 to anyone identified).
    Identified,
}

/// What `method path` needs. The one table of which route needs which scope; the
/// OpenAPI document says the same per operation.
pub fn required_scope(method: &Method, path: &str, query: Option<&str>) -> Need {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        [""] | ["healthz"] | ["openapi.json"] | ["asyncapi.json"] | ["docs"] => Need::Nothing,
        ["docs", ..] => Need::Nothing,
        ["readyz"] => Need::Optional,
        ["metrics"] | ["v1", "stats"] | ["v1", "keys", ..] | ["v1", "tenants", ..] => {
            Need::Scope(ApiScope::Admin)
        }
        ["v1", "webhooks", ..] => Need::Scope(ApiScope::JobsWrite),
        ["v1", "jobs", _, "result"] | ["v1", "jobs", _, "result", _]
            if *method == Method::GET && is_signed_link(query) =>
        {
            Need::Optional
        }
        ["v1", "jobs", ..] if *method == Method::POST || *method == Method::DELETE => {
            Need::Scope(ApiScope::JobsWrite)
        }
        ["v1", "jobs", ..] => Need::Scope(ApiScope::JobsRead),
        _ => Need::Identified,
    }
}

/// Whether a query carries a signed link's `sig` and `exp` parameters.
fn is_signed_link(query: Option<&str>) -> bool {
    let names = || {
        query
            .unwrap_or_default()
            .split('&')
            .filter_map(|pair| pair.split('=').next())
    };
    names().any(|n| n == "sig") && names().any(|n| n == "exp")
}

/// The challenge of every 401 and 403 (RFC 6750 §3).
const REALM: &str = "Bearer realm=\"pixmill\"";

/// The middleware: see the module docs.
pub async fn authenticate(
    State(auth): State<AuthState>,
    mut request: Request,
    next: Next,
) -> Response {
    let need = required_scope(
        request.method(),
        request.uri().path(),
        request.uri().query(),
    );
    if need == Need::Nothing {
        return next.run(request).await;
    }
    let presented = match bearer(&request) {
        Ok(presented) => presented,
        Err(refused) => return refused.into_response(),
    };
    let principal = match presented {
        Some(token) => match auth.verify(token).await {
            Ok(principal) => Some(principal),
            // A probe that needs no key is not failed by a store (or an identity
            // provider) that cannot check one.
            Err(Refused::Store(_) | Refused::Token(JwtError::JwksUnavailable(_)))
                if need == Need::Optional =>
            {
                None
            }
            Err(refused) => return refusal(refused).into_response(),
        },
        None if auth.mode == AuthMode::Open => Some(Principal::anonymous()),
        None => None,
    };
    match (need, &principal) {
        (Need::Scope(_) | Need::Identified, None) => return credential_missing().into_response(),
        (Need::Scope(scope), Some(principal)) if !principal.allows(scope) => {
            return insufficient(scope, principal).into_response();
        }
        _ => {}
    }
    if let Some(principal) = principal {
        request.extensions_mut().insert(principal);
    }
    next.run(request).await
}

/// The bearer token of the request, None when it has no `Authorization` header.
fn bearer(request: &Request) -> Result<Option<&str>, ApiError> {
    let Some(value) = request.headers().get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let malformed = |why: &str| {
        ApiError::new(ApiCode::CredentialMalformed, why.to_string()).challenge(format!(
            "{REALM}, error=\"invalid_request\", error_description=\"{}\"",
            quoted(why)
        ))
    };
    let value = value
        .to_str()
        .map_err(|_| malformed("the Authorization header is not visible ASCII"))?;
    let (scheme, token) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(malformed(
            "the Authorization header must read `Bearer pmk_…` (the Bearer scheme)",
        ));
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(malformed(
            "the Authorization header has no key after Bearer",
        ));
    }
    Ok(Some(token))
}

/// `text` as RFC 6750 allows inside a quoted `error_description`: visible ASCII and
/// spaces, without `"` or `\\`.
fn quoted(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '"' | '\\' => '\'',
            '…' => '.',
            c if c == ' ' || c.is_ascii_graphic() => c,
            _ => '?',
        })
        .collect()
}

/// 401 `credential_missing`.
pub fn credential_missing() -> ApiError {
    ApiError::new(
        ApiCode::CredentialMissing,
        "this API needs a key: send `Authorization: Bearer pmk_…` (PIXMILL_AUTH=required)",
    )
    .challenge(REALM)
}

/// The 401 (or 503) for a refused key. The message names the key's public id at most.
fn refusal(refused: Refused) -> ApiError {
    let (code, message) = match &refused {
        Refused::Malformed(why) => (
            ApiCode::CredentialMalformed,
            format!("the Authorization header is not a pixmill API key: {why}"),
        ),
        Refused::Invalid => (ApiCode::CredentialInvalid, refused.to_string()),
        Refused::Expired => (ApiCode::CredentialExpired, refused.to_string()),
        Refused::Revoked => (ApiCode::CredentialRevoked, refused.to_string()),
        Refused::Store(e) => {
            tracing::error!(error = %e, "could not look an API key up");
            return ApiError::new(
                ApiCode::StoreUnavailable,
                "the task store is unavailable, so the API key cannot be checked; try again shortly",
            )
            .retry_after(2);
        }
        Refused::Token(JwtError::JwksUnavailable(why)) => {
            tracing::error!(error = %why, "could not read the JWK set");
            return ApiError::new(
                ApiCode::IdentityProviderUnavailable,
                "the identity provider's keys (PIXMILL_JWT_JWKS) cannot be read, so the token cannot be checked; try again shortly",
            )
            .retry_after(5);
        }
        Refused::Token(JwtError::Malformed(why)) => (
            ApiCode::CredentialMalformed,
            format!("the bearer token is not a well-formed JWT: {why}"),
        ),
        Refused::Token(JwtError::Expired) => (
            ApiCode::CredentialExpired,
            "the bearer token expired (exp)".to_string(),
        ),
        Refused::Token(other) => (
            ApiCode::CredentialInvalid,
            format!("the bearer token is not valid: {other}"),
        ),
    };
    let error = if matches!(
        refused,
        Refused::Malformed(_) | Refused::Token(JwtError::Malformed(_))
    ) {
        "invalid_request"
    } else {
        "invalid_token"
    };
    ApiError::new(code, message.clone()).challenge(format!(
        "{REALM}, error=\"{error}\", error_description=\"{}\"",
        quoted(&message)
    ))
}

/// 403 `insufficient_scope` at the edge: the route needs `scope`.
fn insufficient(scope: ApiScope, principal: &Principal) -> ApiError {
    let held: Vec<&str> = principal.scopes.iter().map(|s| s.as_str()).collect();
    let held = if held.is_empty() {
        "none".to_string()
    } else {
        held.join(", ")
    };
    scope_needed(
        scope,
        format!("this needs the {scope} scope; the key has {held}"),
    )
}

/// 403 `insufficient_scope`, with its challenge: what was asked needs `scope` (also
/// for a handler, when a parameter asks for more than the route).
pub fn scope_needed(scope: ApiScope, message: impl Into<String>) -> ApiError {
    ApiError::new(ApiCode::InsufficientScope, message).challenge(format!(
        "{REALM}, error=\"insufficient_scope\", scope=\"{scope}\""
    ))
}

/// A handler's caller. The edge check put it there; a route that reaches its handler
/// without one (a signed result link) is answered 401 `credential_missing`.
impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or_else(credential_missing)
    }
}

/// A handler's caller when the route lets requests without a key through (`/readyz`, a
/// signed result link): None for those.
impl<S: Send + Sync> OptionalFromRequestParts<S> for Principal {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<Principal>().cloned())
    }
}

#[cfg(test)]
mod tests {
    use axum::{Router, body::Body, http::Request as HttpRequest, routing::get};
    use tower::ServiceExt;

    use super::*;
    use crate::{
        auth::key,
        store::{ApiKey, DatabaseUrl},
    };

    #[test]
    fn each_route_needs_its_scope() {
        use ApiScope::*;
        let need =
            |method: Method, path: &str, query: Option<&str>| required_scope(&method, path, query);
        let id = "/v1/jobs/4f40a890-5c1e-4d7b-9a3e-2b8f6c0d1e27";
        for path in [
            "/healthz",
            "/",
            "/openapi.json",
            "/asyncapi.json",
            "/docs",
            "/docs/",
            "/docs/x.css",
        ] {
            assert_eq!(need(Method::GET, path, None), Need::Nothing, "{path}");
        }
        assert_eq!(need(Method::GET, "/readyz", None), Need::Optional);
        assert_eq!(need(Method::POST, "/v1/jobs", None), Need::Scope(JobsWrite));
        assert_eq!(need(Method::DELETE, id, None), Need::Scope(JobsWrite));
        assert_eq!(need(Method::GET, "/v1/jobs", None), Need::Scope(JobsRead));
        assert_eq!(need(Method::GET, id, None), Need::Scope(JobsRead));
        let events = format!("{id}/events");
        assert_eq!(need(Method::GET, &events, None), Need::Scope(JobsRead));
        assert_eq!(
            need(Method::GET, "/v1/webhooks/secret", None),
            Need::Scope(JobsWrite)
        );
        let result = format!("{id}/result");
        assert_eq!(need(Method::GET, &result, None), Need::Scope(JobsRead));
        assert_eq!(
            need(Method::GET, &result, Some("exp=1&sig=abc")),
            Need::Optional
        );
        assert_eq!(
            need(Method::GET, &result, Some("sig=abc")),
            Need::Scope(JobsRead)
        );
        assert_eq!(
            need(Method::GET, &events, Some("exp=1&sig=abc")),
            Need::Scope(JobsRead)
        );
        for (method, path) in [
            (Method::GET, "/metrics"),
            (Method::GET, "/v1/stats"),
            (Method::GET, "/v1/keys"),
            (Method::POST, "/v1/keys"),
            (Method::DELETE, "/v1/keys/0123456789abcdef"),
        ] {
            assert_eq!(need(method, path, None), Need::Scope(Admin), "{path}");
        }
        assert_eq!(need(Method::GET, "/nope", None), Need::Identified);
        assert!("open".parse::<AuthMode>() == Ok(AuthMode::Open));
        assert!("required".parse::<AuthMode>() == Ok(AuthMode::Required));
        assert!("yes".parse::<AuthMode>().is_err());
    }

    struct Fixture {
        store: Store,
        path: std::path::PathBuf,
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            for suffix in ["", "-wal", "-shm", ".lock"] {
                let mut name = self.path.as_os_str().to_owned();
                name.push(suffix);
                let _ = std::fs::remove_file(std::path::PathBuf::from(name));
            }
        }
    }

    async fn fixture() -> Fixture {
        let path = std::env::temp_dir().join(format!("pixmill-layer-{}.db", uuid::Uuid::new_v4()));
        let store = crate::store::open(&DatabaseUrl::Sqlite(path.clone()))
            .await
            .expect("store");
        Fixture { store, path }
    }

    /// A key of `tenant` with `scopes`, changed by `tweak`; returns its token.
    async fn key_with(
        store: &Store,
        tenant: &str,
        scopes: &[&str],
        tweak: impl FnOnce(&mut ApiKey),
    ) -> String {
        let new = key::generate().expect("key");
        let mut record = ApiKey {
            id: new.id.clone(),
            tenant: tenant.into(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            secret_hash: new.secret_hash.clone(),
            label: None,
            created_at: 0,
            expires_at: None,
            revoked_at: None,
        };
        tweak(&mut record);
        store.insert_api_key(&record).await.expect("insert");
        new.token
    }

    /// A router whose handlers answer with the principal's tenant, or `-` for none.
    fn app(mode: AuthMode, store: Store) -> Router {
        app_with(AuthState::new(mode, store))
    }

    fn app_with(auth: AuthState) -> Router {
        async fn who(principal: Option<Principal>) -> String {
            principal.map_or("-".into(), |p| p.tenant)
        }
        Router::new()
            .route("/healthz", get(who))
            .route("/readyz", get(who))
            .route("/v1/jobs", get(who).post(who))
            .route("/v1/jobs/{id}/result", get(who))
            .route("/v1/stats", get(who))
            .layer(axum::middleware::from_fn_with_state(auth, authenticate))
    }

    /// Status, `error.code` (or the body) and `WWW-Authenticate` of one request.
    async fn call(
        app: &Router,
        method: &str,
        uri: &str,
        authorization: Option<&str>,
    ) -> (u16, String, Option<String>) {
        let mut request = HttpRequest::builder().method(method).uri(uri);
        if let Some(value) = authorization {
            request = request.header(header::AUTHORIZATION, value);
        }
        let response = app
            .clone()
            .oneshot(request.body(Body::empty()).expect("request"))
            .await
            .expect("answer");
        let status = response.status().as_u16();
        let challenge = response
            .headers()
            .get(header::WWW_AUTHENTICATE)
            .map(|v| v.to_str().expect("ascii").to_string());
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .expect("body");
        let text = String::from_utf8_lossy(&body).to_string();
        let code = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["error"]["code"].as_str().map(str::to_string))
            .unwrap_or(text);
        (status, code, challenge)
    }

    #[tokio::test]
    async fn required_mode_answers_each_refusal_with_its_code() {
        let f = fixture().await;
        let app = app(AuthMode::Required, f.store.clone());
        let now = pixmill_shared::now_ms();
        let writer = key_with(&f.store, "alpha", &["jobs:write", "jobs:read"], |_| {}).await;
        let reader = key_with(&f.store, "alpha", &["jobs:read"], |_| {}).await;
        let expired = key_with(&f.store, "alpha", &["jobs:read"], |k| {
            k.expires_at = Some(now - 1);
        })
        .await;
        let revoked = key_with(&f.store, "alpha", &["jobs:read"], |k| {
            k.revoked_at = Some(now - 1);
        })
        .await;
        let admin = key_with(&f.store, "ops", &["admin"], |_| {}).await;
        let unknown = key::generate().expect("key").token;
        let bearer = |t: &str| format!("Bearer {t}");

        let (status, code, challenge) = call(&app, "GET", "/v1/jobs", None).await;
        assert_eq!((status, code.as_str()), (401, "credential_missing"));
        assert_eq!(challenge.as_deref(), Some("Bearer realm=\"pixmill\""));

        for (header, want) in [
            ("Basic dXNlcjpwYXNz".to_string(), "credential_malformed"),
            ("Bearer".to_string(), "credential_malformed"),
            ("Bearer not-a-key".to_string(), "credential_malformed"),
            (bearer(&unknown), "credential_invalid"),
            (bearer(&expired), "credential_expired"),
            (bearer(&revoked), "credential_revoked"),
        ] {
            let (status, code, challenge) = call(&app, "GET", "/v1/jobs", Some(&header)).await;
            assert_eq!((status, code.as_str()), (401, want), "{header}");
            let challenge = challenge.expect("a challenge");
            assert!(
                challenge.starts_with("Bearer realm=\"pixmill\", error="),
                "{challenge}"
            );
            // The secret is never repeated.
            let secret = header.rsplit('_').next().unwrap_or_default();
            assert!(
                secret.len() < 8 || !challenge.contains(secret),
                "{challenge}"
            );
        }

        let ok = |tenant: &str| (200, tenant.to_string(), None);
        assert_eq!(
            call(&app, "GET", "/v1/jobs", Some(&bearer(&reader))).await,
            ok("alpha")
        );
        assert_eq!(
            call(&app, "POST", "/v1/jobs", Some(&bearer(&writer))).await,
            ok("alpha")
        );
        let (status, code, challenge) =
            call(&app, "POST", "/v1/jobs", Some(&bearer(&reader))).await;
        assert_eq!((status, code.as_str()), (403, "insufficient_scope"));
        assert!(
            challenge
                .expect("challenge")
                .contains("scope=\"jobs:write\"")
        );
        let (status, code, _) = call(&app, "GET", "/v1/stats", Some(&bearer(&writer))).await;
        assert_eq!((status, code.as_str()), (403, "insufficient_scope"));
        assert_eq!(
            call(&app, "GET", "/v1/stats", Some(&bearer(&admin))).await,
            ok("ops")
        );
        assert_eq!(
            call(&app, "POST", "/v1/jobs", Some(&bearer(&admin))).await,
            ok("ops")
        );

        // No key needed, none read.
        assert_eq!(call(&app, "GET", "/healthz", None).await, ok("-"));
        assert_eq!(
            call(&app, "GET", "/healthz", Some("Bearer junk")).await,
            ok("-")
        );
        // Optional: no key, no principal; a bad key is still refused.
        assert_eq!(call(&app, "GET", "/readyz", None).await, ok("-"));
        assert_eq!(
            call(&app, "GET", "/readyz", Some(&bearer(&admin))).await,
            ok("ops")
        );
        let (status, ..) = call(&app, "GET", "/readyz", Some(&bearer(&revoked))).await;
        assert_eq!(status, 401);
        // A signed link is let through to its handler.
        let link = "/v1/jobs/4f40a890-5c1e-4d7b-9a3e-2b8f6c0d1e27/result?exp=1&sig=x";
        assert_eq!(call(&app, "GET", link, None).await, ok("-"));
        let (status, ..) = call(&app, "GET", "/v1/jobs/x/result", None).await;
        assert_eq!(status, 401);
        // Unknown paths: identified callers only (the router's 404 then).
        let (status, ..) = call(&app, "GET", "/nope", None).await;
        assert_eq!(status, 401);
    }

    #[tokio::test]
    async fn open_mode_makes_anonymous_callers_local_and_still_checks_keys() {
        let f = fixture().await;
        let app = app(AuthMode::Open, f.store.clone());
        let ok = |tenant: &str| (200, tenant.to_string(), None);
        assert_eq!(call(&app, "GET", "/v1/jobs", None).await, ok("local"));
        assert_eq!(call(&app, "POST", "/v1/jobs", None).await, ok("local"));
        assert_eq!(call(&app, "GET", "/v1/stats", None).await, ok("local"));
        assert_eq!(call(&app, "GET", "/readyz", None).await, ok("local"));
        let reader = key_with(&f.store, "alpha", &["jobs:read"], |_| {}).await;
        let bearer = format!("Bearer {reader}");
        assert_eq!(
            call(&app, "GET", "/v1/jobs", Some(&bearer)).await,
            ok("alpha")
        );
        let (status, code, _) = call(&app, "POST", "/v1/jobs", Some(&bearer)).await;
        assert_eq!((status, code.as_str()), (403, "insufficient_scope"));
        let (status, code, _) = call(&app, "GET", "/v1/jobs", Some("Bearer pmk_x")).await;
        assert_eq!((status, code.as_str()), (401, "credential_malformed"));
    }

    /// With `PIXMILL_JWT_*` set, a bearer JWT is a principal of its tenant claim with its
    /// scopes, each refusal has its code, and API keys keep working beside it.
    #[tokio::test]
    async fn bearer_jwts_are_principals_and_each_refusal_has_its_code() {
        use crate::jwt::{JwtKeys, JwtSecret, JwtSettings};
        use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
        use jsonwebtoken::{EncodingKey, Header, encode};

        const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-jwt";
        let f = fixture().await;
        let mut settings =
            JwtSettings::new(JwtKeys::Hs256(JwtSecret::new(SECRET).expect("secret")));
        settings.audience = Some("pixmill".into());
        let verifier = JwtVerifier::new(&settings).expect("verifier");
        let app =
            app_with(AuthState::new(AuthMode::Required, f.store.clone()).with_jwt(Some(verifier)));
        let now = pixmill_shared::now_ms() / 1000;
        let token = |claims: serde_json::Value| {
            encode(
                &Header::default(),
                &claims,
                &EncodingKey::from_secret(SECRET).expect("HMAC key"),
            )
            .expect("token")
        };
        let claims = |exp: i64, aud: &str| serde_json::json!({"sub": "beta", "scope": "jobs:read", "exp": exp, "aud": aud});
        let bearer = |t: &str| format!("Bearer {t}");

        let valid = token(claims(now + 600, "pixmill"));
        let (status, body, _) = call(&app, "GET", "/v1/jobs", Some(&bearer(&valid))).await;
        assert_eq!((status, body.as_str()), (200, "beta"));
        let (status, code, _) = call(&app, "POST", "/v1/jobs", Some(&bearer(&valid))).await;
        assert_eq!((status, code.as_str()), (403, "insufficient_scope"));

        let expired = token(claims(now - 600, "pixmill"));
        let wrong_audience = token(claims(now + 600, "another-service"));
        let header_none = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let payload = valid.split('.').nth(1).expect("payload");
        let alg_none = format!("{header_none}.{payload}.");
        // The signature's first character changed: every character but the last carries
        // six whole bits, so the result is still valid base64url, only the wrong MAC
        // (changing the last one could set padding bits and make it malformed instead).
        let signature_at = valid.rfind('.').expect("a signature") + 1;
        let mut tampered = valid.clone();
        let first = tampered.remove(signature_at);
        tampered.insert(signature_at, if first == 'A' { 'B' } else { 'A' });
        for (presented, code) in [
            (expired, "credential_expired"),
            (wrong_audience, "credential_invalid"),
            (alg_none, "credential_invalid"),
            (tampered, "credential_invalid"),
        ] {
            let (status, got, challenge) =
                call(&app, "GET", "/v1/jobs", Some(&bearer(&presented))).await;
            assert_eq!((status, got.as_str()), (401, code), "{presented}");
            let challenge = challenge.expect("a challenge");
            assert!(!challenge.contains(&presented), "{challenge}");
        }

        let key = key_with(&f.store, "alpha", &["jobs:read"], |_| {}).await;
        let (status, body, _) = call(&app, "GET", "/v1/jobs", Some(&bearer(&key))).await;
        assert_eq!((status, body.as_str()), (200, "alpha"));
    }
}
