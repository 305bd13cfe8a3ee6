//! Signed result links end to end: minted by a gateway with `PIXMILL_LINK_KEYS`, fetched
//! without a credential, and refused with 403 once changed, expired or moved to another
//! job; a gateway without keys makes none, and one with a short secret does not start.

use std::{process::Stdio, time::Duration};

use pixmill_gateway::links::LinkKeys;
use pixmill_tests::{Stack, binary, common, photos::photo, temp_dir};
use serde_json::Value;
use uuid::Uuid;

/// `PIXMILL_LINK_KEYS` for these tests: `k2` signs, `k1` (an older key) still verifies.
const KEYS: &str =
    "k2:a-test-link-secret-that-is-long-enough-2,k1:a-test-link-secret-that-is-long-enough-1";

/// A stack whose gateway holds `keys`, with one worker.
async fn stack(keys: &str) -> Stack {
    let keys = LinkKeys::parse(keys).expect("keys");
    let common = common(&format!("links-{}", Uuid::new_v4().simple()), &temp_dir());
    let mut stack = Stack::start_configured(common, |s| s.link_keys = keys)
        .await
        .expect("start stack");
    stack.add_worker("links-worker", 1);
    stack
}

/// `POST /v1/jobs/{id}/links` with a query string and a body: status and JSON.
async fn mint(stack: &Stack, id: &str, query: &str, body: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/v1/jobs/{id}/links{query}", stack.base))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("mint");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON"))
}

/// A succeeded job's id.
async fn finished_job(stack: &Stack, width: &str) -> String {
    let id = stack
        .client
        .submit_ok(
            &photo("FreshFlower.jpg"),
            &[("op", "resize"), ("width", width)],
        )
        .await
        .expect("submit");
    let job = stack.client.wait_terminal(&id).await.expect("wait");
    assert_eq!(job["state"], "succeeded", "{job}");
    id
}

/// `url` with its query parameter `name` set to `value`.
fn with_param(url: &str, name: &str, value: &str) -> String {
    let (path, query) = url.split_once('?').expect("query");
    let query: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if k == name => format!("{k}={value}"),
            _ => pair.to_string(),
        })
        .collect();
    format!("{path}?{}", query.join("&"))
}

/// The value of query parameter `name` in `url`.
fn param<'a>(url: &'a str, name: &str) -> &'a str {
    url.split_once('?')
        .expect("query")
        .1
        .split('&')
        .find_map(|pair| pair.strip_prefix(&format!("{name}=")))
        .expect("param")
}

/// `text` with its character at `at` changed (to another hex digit, so an id stays an
/// id: a change of case would name the same job).
fn one_changed(text: &str, at: usize) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    chars[at] = if chars[at] == '0' { '1' } else { '0' };
    chars.into_iter().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_link_serves_the_result_and_nothing_else() {
    let stack = stack(KEYS).await;
    let id = finished_job(&stack, "320").await;
    let other = finished_job(&stack, "160").await;
    let plain = stack
        .client
        .get(&format!("/v1/jobs/{id}/result"))
        .await
        .expect("plain result");
    assert_eq!(plain.status, 200);
    assert_eq!(
        plain.headers["cache-control"],
        "private, max-age=86400, immutable"
    );

    let (status, link) = mint(&stack, &id, "?ttl=600", "").await;
    assert_eq!(status, 200, "{link}");
    let url = link["url"].as_str().expect("url").to_string();
    assert!(
        url.starts_with(&format!("/v1/jobs/{id}/result?exp=")),
        "{url}"
    );
    assert_eq!(param(&url, "kid"), "k2", "the first key signs");
    let exp: i64 = param(&url, "exp").parse().expect("exp");
    let expires_at = time::OffsetDateTime::parse(
        link["expires_at"].as_str().expect("expires_at"),
        &time::format_description::well_known::Rfc3339,
    )
    .expect("RFC 3339");
    assert_eq!(expires_at.unix_timestamp(), exp);
    let left = exp - time::OffsetDateTime::now_utc().unix_timestamp();
    assert!((590..=600).contains(&left), "{left}");

    // Through the link: the same bytes, cached no longer than the link lives.
    let served = stack.client.get(&url).await.expect("through the link");
    assert_eq!(served.status, 200);
    assert_eq!(served.body, plain.body);
    let cache = served.headers["cache-control"].to_str().expect("ascii");
    let max_age: i64 = cache
        .strip_prefix("private, max-age=")
        .and_then(|c| c.strip_suffix(", immutable"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{cache}"));
    assert!(max_age > 0 && max_age <= 600, "{cache}");

    // One changed character anywhere in the link: 403 `link_invalid`.
    let sig = param(&url, "sig").to_string();
    let mut tampered = vec![
        with_param(&url, "sig", &one_changed(&sig, 0)),
        with_param(&url, "sig", &one_changed(&sig, sig.len() - 1)),
        with_param(&url, "exp", &one_changed(&exp.to_string(), 9)),
        with_param(&url, "exp", &(exp + 3600).to_string()),
        with_param(&url, "kid", "k1"),
        with_param(&url, "kid", "k3"),
        url.replacen(&id, &one_changed(&id, 3), 1),
        // The link of one job on another job's path.
        url.replacen(&id, &other, 1),
        // A part given twice, or missing.
        format!("{url}&sig={sig}"),
        url.replacen("&kid=k2", "", 1),
    ];
    tampered.push(format!("/v1/jobs/{other}/result?sig={sig}"));
    for bad in &tampered {
        let reply = stack.client.get(bad).await.expect("tampered");
        assert_eq!(reply.status, 403, "{bad}");
        assert_eq!(reply.error_code(), "link_invalid", "{bad}");
        assert!(reply.body.len() < 1024, "{bad}: an error, not the image");
    }

    // A succeeded job's record carries a link of its own, valid an hour.
    let record = stack
        .client
        .get(&format!("/v1/jobs/{id}"))
        .await
        .expect("job");
    let signed = record.json()["links"]["signed_result"]
        .as_str()
        .expect("links.signed_result")
        .to_string();
    let left = param(&signed, "exp").parse::<i64>().expect("exp")
        - time::OffsetDateTime::now_utc().unix_timestamp();
    assert!((3590..=3600).contains(&left), "{left}");
    let served = stack.client.get(&signed).await.expect("signed_result");
    assert_eq!((served.status, &served.body), (200, &plain.body));

    // The ttl may come as a body; bad ones are named.
    let life = |link: &Value| {
        param(link["url"].as_str().expect("url"), "exp")
            .parse::<i64>()
            .expect("exp")
            - time::OffsetDateTime::now_utc().unix_timestamp()
    };
    let (status, by_body) = mint(&stack, &id, "", r#"{"ttl": 60}"#).await;
    assert_eq!(status, 200, "{by_body}");
    assert!((50..=60).contains(&life(&by_body)), "{by_body}");
    let (status, both) = mint(&stack, &id, "?ttl=120", r#"{"ttl": 60}"#).await;
    assert_eq!(status, 200, "{both}");
    assert!((110..=120).contains(&life(&both)), "the query wins: {both}");
    let (status, default) = mint(&stack, &id, "", "").await;
    assert_eq!(status, 200, "{default}");
    assert!(
        (3590..=3600).contains(&life(&default)),
        "default ttl: {default}"
    );
    for (query, body) in [
        ("?ttl=0", ""),
        ("?ttl=604801", ""),
        ("?ttl=soon", ""),
        ("", r#"{"ttl": -1}"#),
        ("", r#"{"tll": 60}"#),
        ("?ttl=0", r#"{"ttl": 60}"#),
    ] {
        let (status, error) = mint(&stack, &id, query, body).await;
        assert_eq!(status, 422, "{query} {body}: {error}");
        assert_eq!(error["error"]["code"], "invalid_parameter");
    }
    let (status, error) = mint(&stack, &Uuid::new_v4().to_string(), "", "").await;
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (404, Some("not_found"))
    );

    // An expired link: 403 `link_expired`, though the same link worked a moment ago.
    let (status, short) = mint(&stack, &id, "?ttl=1", "").await;
    assert_eq!(status, 200, "{short}");
    let short = short["url"].as_str().expect("url").to_string();
    let exp: u64 = param(&short, "exp").parse().expect("exp");
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs()
    };
    while now() < exp {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let reply = stack.client.get(&short).await.expect("expired");
    assert_eq!(reply.status, 403);
    assert_eq!(reply.error_code(), "link_expired");

    // After rotation, a link signed with a key that is no longer listed is refused.
    stack.stop().await.expect("stop");
    let rotated = stack_without_workers("k3:a-test-link-secret-that-is-long-enough-3").await;
    let reply = rotated
        .client
        .get(&url)
        .await
        .expect("link of a retired key");
    assert_eq!(reply.status, 403);
    assert_eq!(reply.error_code(), "link_invalid");
    rotated.stop().await.expect("stop");
}

/// A stack holding `keys`, with no worker.
async fn stack_without_workers(keys: &str) -> Stack {
    let keys = LinkKeys::parse(keys).expect("keys");
    let common = common(&format!("links-{}", Uuid::new_v4().simple()), &temp_dir());
    Stack::start_configured(common, |s| s.link_keys = keys)
        .await
        .expect("start stack")
}

/// Without keys, no link is minted, and a request that carries one is refused even
/// though the same request without `sig` would be answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_keys_links_are_off() {
    let stack = stack("").await;
    let id = finished_job(&stack, "200").await;
    let record = stack
        .client
        .get(&format!("/v1/jobs/{id}"))
        .await
        .expect("job");
    assert_eq!(record.json()["links"].get("signed_result"), None);
    let (status, error) = mint(&stack, &id, "?ttl=60", "").await;
    assert_eq!(status, 409, "{error}");
    assert_eq!(error["error"]["code"], "links_disabled");
    let minted = LinkKeys::parse(KEYS)
        .expect("keys")
        .sign(id.parse().expect("uuid"), u64::MAX / 2)
        .expect("link");
    let reply = stack.client.get(&minted.url).await.expect("result");
    assert_eq!(reply.status, 403);
    assert_eq!(reply.error_code(), "link_invalid");
    let plain = stack
        .client
        .get(&format!("/v1/jobs/{id}/result"))
        .await
        .expect("result");
    assert_eq!(plain.status, 200);
    stack.stop().await.expect("stop");
}

/// A secret under 32 bytes, or one with no key id, stops the gateway at start-up with
/// exit code 64, naming the variable and never the secret.
#[tokio::test]
async fn a_bad_link_key_is_refused_at_start_up() {
    for (keys, secret, reason) in [
        ("k1:tooshort-secret", "tooshort-secret", "at least 32"),
        (
            "a-secret-pasted-without-any-key-id-0123",
            "a-secret-pasted-without-any-key-id-0123",
            "no `:`",
        ),
    ] {
        let output = tokio::process::Command::new(binary("pixmill-gateway").expect("binary"))
            .env("PIXMILL_LINK_KEYS", keys)
            .env("PIXMILL_HTTP_ADDR", "127.0.0.1:0")
            .env("PIXMILL_DATA_DIR", temp_dir())
            .stdin(Stdio::null())
            .output()
            .await
            .expect("run the gateway");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(64), "{stderr}");
        assert!(stderr.contains("PIXMILL_LINK_KEYS"), "{stderr}");
        assert!(stderr.contains(reason), "{stderr}");
        assert!(!stderr.contains(secret), "{stderr}");
    }
}
