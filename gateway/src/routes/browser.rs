//! What browsers are told and refused: the security headers of every answer and of the
//! two pages (the upload page `/` and Swagger UI under `/docs/`), and the refusal of
//! state-changing requests another site's page makes a visitor's browser send.
//!
//! A page on another site can make a browser `POST` a multipart form to a gateway on
//! `127.0.0.1` without a CORS preflight. Browsers say where a request comes from: the
//! `Sec-Fetch-Site` header, or, from browsers without it, `Origin`. A `POST`, `PUT`,
//! `PATCH` or `DELETE` is refused with 403 `cross_site_request` when `Sec-Fetch-Site` is
//! anything but `same-origin` or `none` (typed by the user), or, without it, when `Origin`
//! is not the request's own scheme and `Host`. `same-site` is refused too: for an IP
//! address the site is the address, so every other port on `127.0.0.1` is "same-site".
//! Requests with neither header (curl, the SDKs, the CLI) are not from a browser and pass.

use std::sync::LazyLock;

use axum::{
    extract::Request,
    http::{HeaderMap, HeaderName, HeaderValue, Method, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::error::{ApiCode, ApiError};

/// The upload page's policy. Its one inline script is allowed by hash, nothing else
/// runs; it fetches only from this gateway and its own object URLs (`blob:`, the results
/// it fetched with a key), and shows images from object URLs, the gateway and `data:`.
/// Inline styles are allowed: the page sets `style` attributes.
static PAGE_CSP: LazyLock<HeaderValue> = LazyLock::new(|| {
    let policy = format!(
        "default-src 'none'; script-src '{}'; style-src 'unsafe-inline'; \
         img-src 'self' blob: data:; connect-src 'self' blob:; base-uri 'none'; \
         form-action 'self'; frame-ancestors 'none'",
        script_hash(super::PAGE)
    );
    HeaderValue::from_str(&policy).expect("the policy is ASCII")
});

/// Swagger UI's policy: its scripts and styles are its own files under `/docs/`; it reads
/// `/openapi.json` and tries requests against this gateway. Its components set inline
/// styles, and its icons are `data:` images.
const DOCS_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data: blob:; font-src 'self' data:; connect-src 'self'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// `'sha256-…'` of the one inline `<script>` of `html`, for `script-src`.
fn script_hash(html: &str) -> String {
    let body = html
        .split_once("<script>")
        .and_then(|(_, rest)| rest.split_once("</script>"))
        .map_or("", |(script, _)| script);
    let digest = Sha256::digest(body.as_bytes());
    format!(
        "sha256-{}",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

/// Adds `X-Content-Type-Options: nosniff` to every answer (results included: an image
/// is never read as HTML), and to the pages their Content-Security-Policy, which forbids
/// framing, with `X-Frame-Options: DENY` for older browsers and `Referrer-Policy`.
pub(super) async fn security_headers(request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let csp = if path == "/" {
        Some(PAGE_CSP.clone())
    } else if path == "/docs" || path.starts_with("/docs/") {
        Some(HeaderValue::from_static(DOCS_CSP))
    } else {
        None
    };
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let Some(csp) = csp {
        headers.insert(header::CONTENT_SECURITY_POLICY, csp);
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        // `same-origin`, not `no-referrer`: under `no-referrer` a browser sends a
        // same-origin POST's `Origin` as `null`, which the cross-site check would refuse
        // where `Sec-Fetch-Site` is not sent.
        headers.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        );
    }
    response
}

/// Refuses a state-changing request another site's page made a browser send (see the
/// module documentation).
pub(super) async fn refuse_cross_site(request: Request, next: Next) -> Response {
    if let Some(refused) = cross_site(request.method(), request.headers()) {
        return refused.into_response();
    }
    next.run(request).await
}

/// The 403 for a request a browser sent from another site, or None when it may proceed.
pub fn cross_site(method: &Method, headers: &HeaderMap) -> Option<ApiError> {
    if !matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    ) {
        return None;
    }
    let text = |name: &HeaderName| headers.get(name).map(|v| v.to_str().unwrap_or("?"));
    if let Some(site) = text(&HeaderName::from_static("sec-fetch-site")) {
        return match site.trim().to_ascii_lowercase().as_str() {
            "same-origin" | "none" => None,
            _ => Some(ApiError::new(
                ApiCode::CrossSiteRequest,
                format!(
                    "refused a cross-site {method}: Sec-Fetch-Site is {site:?}, so another site's page sent it; a browser may change state here only from this gateway's own pages"
                ),
            )),
        };
    }
    let origin = text(&header::ORIGIN)?;
    let host = text(&header::HOST).unwrap_or("");
    // Behind a proxy that ends TLS, the page's origin is https.
    let scheme = text(&HeaderName::from_static("x-forwarded-proto"))
        .and_then(|p| p.split(',').next())
        .map_or("http", str::trim);
    let own = format!("{scheme}://{host}");
    if !host.is_empty() && origin.trim().eq_ignore_ascii_case(&own) {
        return None;
    }
    Some(ApiError::new(
        ApiCode::CrossSiteRequest,
        format!(
            "refused a cross-site {method}: its Origin {origin:?} is not this gateway's own ({own:?}), so another site's page sent it; a browser may change state here only from this gateway's own pages"
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        map
    }

    #[test]
    fn browsers_from_other_sites_are_refused_on_state_changing_methods() {
        let host = ("host", "127.0.0.1:8080");
        let refused = [
            vec![("sec-fetch-site", "cross-site")],
            vec![("sec-fetch-site", "same-site")],
            vec![("sec-fetch-site", "Cross-Site"), host],
            // Sec-Fetch-Site decides when it is there, whatever Origin says.
            vec![
                ("sec-fetch-site", "cross-site"),
                ("origin", "http://127.0.0.1:8080"),
                host,
            ],
            vec![("origin", "https://evil.example"), host],
            vec![("origin", "null"), host],
            vec![("origin", "http://127.0.0.1:3000"), host],
            vec![("origin", "https://127.0.0.1:8080"), host],
            vec![("origin", "http://127.0.0.1:8080")],
        ];
        for method in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            for case in &refused {
                let error = cross_site(&method, &headers(case)).expect("refused");
                assert_eq!(error.code(), ApiCode::CrossSiteRequest);
                assert!(error.message().contains(method.as_str()), "{case:?}");
            }
            // Reads are never refused.
            for case in &refused {
                assert!(cross_site(&Method::GET, &headers(case)).is_none());
                assert!(cross_site(&Method::HEAD, &headers(case)).is_none());
                assert!(cross_site(&Method::OPTIONS, &headers(case)).is_none());
            }
        }
    }

    #[test]
    fn own_pages_typed_urls_and_non_browsers_pass() {
        let host = ("host", "127.0.0.1:8080");
        for case in [
            vec![],
            vec![host],
            vec![("sec-fetch-site", "same-origin"), host],
            vec![("sec-fetch-site", "none")],
            vec![("origin", "http://127.0.0.1:8080"), host],
            vec![("origin", "HTTP://127.0.0.1:8080"), host],
            vec![
                ("origin", "https://pixmill.example"),
                ("host", "pixmill.example"),
                ("x-forwarded-proto", "https"),
            ],
        ] {
            assert!(
                cross_site(&Method::POST, &headers(&case)).is_none(),
                "{case:?}"
            );
        }
    }

    #[test]
    fn the_page_hash_is_of_its_one_script() {
        let html = "<p>x</p><script>alert(1)</script>";
        // echo -n 'alert(1)' | openssl dgst -sha256 -binary | base64
        assert_eq!(
            script_hash(html),
            "sha256-bhHHL3z2vDgxUt0W3dWQOrprscmda2Y5pLsLg4GF+pI="
        );
        assert!(PAGE_CSP.to_str().expect("ascii").contains("'sha256-"));
        assert_eq!(super::super::PAGE.matches("<script").count(), 1);
    }
}
