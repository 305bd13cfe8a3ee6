//! What a real gateway tells and refuses browsers, over real HTTP: another site's page
//! cannot make a visitor's browser submit or delete (403 `cross_site_request`, nothing
//! queued) while the gateway's own pages, typed URLs and non-browser clients can; every
//! answer, results included, carries `X-Content-Type-Options: nosniff`; and the pages
//! carry their Content-Security-Policy, `X-Frame-Options` and `Referrer-Policy`.

use pixmill_tests::{Stack, photos::photo};
use reqwest::header::HeaderMap;
use serde_json::Value;

fn nosniff(headers: &HeaderMap, what: &str) {
    assert_eq!(
        headers
            .get("x-content-type-options")
            .and_then(|v| v.to_str().ok()),
        Some("nosniff"),
        "{what}"
    );
}

/// `POST /v1/jobs` with `headers`: (status, headers, body).
async fn submit_with(
    base: &str,
    image: &[u8],
    headers: &[(&str, &str)],
) -> (u16, HeaderMap, Value) {
    let form = reqwest::multipart::Form::new()
        .part(
            "image",
            reqwest::multipart::Part::bytes(image.to_vec()).file_name("upload.jpg"),
        )
        .text("op", "grayscale");
    let mut request = reqwest::Client::new()
        .post(format!("{base}/v1/jobs"))
        .multipart(form);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("submit");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, headers, body)
}

async fn job_count(stack: &Stack) -> usize {
    let list = stack.client.get("/v1/jobs?limit=100").await.expect("list");
    assert_eq!(list.status, 200);
    list.json()["jobs"].as_array().expect("jobs").len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_writes_are_refused_and_own_pages_pass() {
    let stack = Stack::start().await.expect("start");
    let image = photo("flower.jpg");
    let base = stack.base.clone();
    let own_origin = base.clone(); // http://127.0.0.1:PORT, the Host reqwest sends

    for (headers, names) in [
        (
            vec![("origin", "https://evil.example")],
            "https://evil.example",
        ),
        (vec![("sec-fetch-site", "cross-site")], "cross-site"),
        (
            vec![
                ("sec-fetch-site", "cross-site"),
                ("origin", own_origin.as_str()),
            ],
            "cross-site",
        ),
        // Another port on 127.0.0.1 is the same site, but not this gateway's page.
        (vec![("sec-fetch-site", "same-site")], "same-site"),
        (vec![("origin", "null")], "null"),
        (vec![("origin", "http://127.0.0.1:1")], "http://127.0.0.1:1"),
    ] {
        let (status, answer, body) = submit_with(&base, &image, &headers).await;
        assert_eq!(status, 403, "{headers:?}: {body}");
        assert_eq!(body["error"]["code"], "cross_site_request", "{body}");
        let message = body["error"]["message"].as_str().expect("message");
        assert!(
            message.contains("cross-site POST") && message.contains(names),
            "{message}"
        );
        nosniff(&answer, "a refusal");
    }
    assert_eq!(
        job_count(&stack).await,
        0,
        "a refused submit queued nothing"
    );

    // DELETE is state-changing too; GET is not refused.
    let id = uuid::Uuid::new_v4();
    let http = reqwest::Client::new();
    let deleted = http
        .delete(format!("{base}/v1/jobs/{id}"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .expect("delete");
    assert_eq!(deleted.status().as_u16(), 403);
    let read = http
        .get(format!("{base}/v1/jobs"))
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .expect("list");
    assert_eq!(read.status().as_u16(), 200);
    nosniff(read.headers(), "a JSON answer");

    // The page's own requests, a typed URL, and clients that are not browsers.
    for headers in [
        vec![("origin", own_origin.as_str())],
        vec![
            ("sec-fetch-site", "same-origin"),
            ("origin", own_origin.as_str()),
        ],
        vec![("sec-fetch-site", "none")],
        vec![],
    ] {
        let (status, answer, body) = submit_with(&base, &image, &headers).await;
        assert_eq!(status, 202, "{headers:?}: {body}");
        nosniff(&answer, "a 202");
    }
    assert_eq!(job_count(&stack).await, 4);
    stack.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_and_pages_carry_security_headers() {
    let mut stack = Stack::start().await.expect("start");
    stack.add_worker("guard-worker", 1);
    let id = stack
        .client
        .submit_ok(
            &photo("flower.jpg"),
            &[("op", "grayscale"), ("format", "png")],
        )
        .await
        .expect("submit");
    let (_, result) = stack.client.result_of(&id).await.expect("result");
    assert_eq!(
        result.headers.get("content-type").map(|v| v.as_bytes()),
        Some(&b"image/png"[..])
    );
    nosniff(&result.headers, "a result");
    for path in [
        "/healthz",
        "/v1/stats",
        "/nowhere",
        "/openapi.json",
        "/metrics",
    ] {
        let reply = stack.client.get(path).await.expect(path);
        nosniff(&reply.headers, path);
        assert!(
            reply.headers.get("content-security-policy").is_none(),
            "{path}"
        );
    }
    for path in ["/", "/docs/"] {
        let reply = stack.client.get(path).await.expect(path);
        assert_eq!(reply.status, 200, "{path}");
        let header = |name: &str| {
            reply
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        let csp = header("content-security-policy");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert!(csp.contains("default-src 'none'"), "{path}: {csp}");
        assert!(!csp.contains("script-src 'unsafe-inline'"), "{path}: {csp}");
        assert_eq!(header("x-frame-options"), "DENY", "{path}");
        assert_eq!(header("referrer-policy"), "same-origin", "{path}");
        nosniff(&reply.headers, path);
    }
    let css = stack.client.get("/docs/swagger-ui.css").await.expect("css");
    assert_eq!(css.status, 200);
    nosniff(&css.headers, "a Swagger UI file");
    stack.stop().await.expect("stop");
}
