//! Exit codes 2 (usage) and 3 (unreachable or still busy), the retry policy, and
//! following a redirect, partly against a stand-in gateway.

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use pixmill_tests::{photos, photos::decode, temp_dir};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

use super::{NOWHERE, photo, pixmill};

#[tokio::test]
async fn usage_errors_exit_2_before_anything_is_sent() {
    // Pointed at nothing: an attempt to send would exit 3, not 2.
    let flower = photo("flower.jpg");
    let cases: &[&[&str]] = &[
        &["submit", &flower, "--bogus"],
        &["submit", "/no/such/photo.jpg", "--swap"],
        &["submit", "/no/such/*.jpg", "--swap"],
        &["submit", &flower, "--resize", "12xx"],
        &["submit", &flower, "--resize", "0x10"],
        &["submit", &flower, "--steps", r#"[{"op":"resize""#],
        &["submit", &flower, "--steps", r#"{"op":"resize"}"#],
        &["submit", &flower, "--rotate", "45"],
        &["submit", &flower],
        &["list", "--limit", "0"],
        &["status"],
    ];
    for args in cases {
        let run = pixmill(NOWHERE, args).await;
        assert_eq!(run.code, 2, "{args:?}: {run:#?}");
        assert!(!run.stderr.is_empty(), "{args:?} says why");
    }
    let run = pixmill(NOWHERE, &["--help"]).await;
    assert_eq!(run.code, 0);
    assert!(run.stdout.contains("Exit codes:"), "{run:#?}");
}

#[tokio::test]
async fn an_unreachable_gateway_exits_3() {
    let flower = photo("flower.jpg");
    let id = uuid::Uuid::new_v4().to_string();
    let cases: &[&[&str]] = &[
        &["submit", &flower, "--swap", "--wait"],
        &["status", &id],
        &["list"],
        &["cancel", &id],
    ];
    for args in cases {
        let run = pixmill(NOWHERE, args).await;
        assert_eq!(run.code, 3, "{args:?}: {run:#?}");
        assert!(
            run.stderr.contains("Connection refused"),
            "{args:?}: {run:#?}"
        );
    }
}

/// A stand-in gateway: answers each connection with `respond(n, request head)`, where n
/// counts the requests from 0, then closes it.
async fn stand_in(
    respond: impl Fn(usize, &str) -> Vec<u8> + Send + Sync + 'static,
) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match socket.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let n = seen.fetch_add(1, Ordering::SeqCst);
            let answer = respond(n, &String::from_utf8_lossy(&head));
            let _ = socket.write_all(&answer).await;
            let _ = socket.shutdown().await;
        }
    });
    (base, count)
}

fn http(status: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

const BUSY: &[u8] =
    br#"{"error":{"code":"broker_unavailable","message":"the broker is unavailable"}}"#;

#[tokio::test]
async fn a_busy_gateway_is_tried_three_times_then_exits_3() {
    let (base, count) = stand_in(|_, _| {
        http(
            "503 Service Unavailable",
            &[("content-type", "application/json"), ("retry-after", "0")],
            BUSY,
        )
    })
    .await;
    let id = uuid::Uuid::new_v4().to_string();
    let run = pixmill(&base, &["status", &id]).await;
    assert_eq!(run.code, 3, "{run:#?}");
    assert_eq!(count.load(Ordering::SeqCst), 3, "three tries in all");
    assert!(
        run.stderr
            .contains("broker_unavailable: the broker is unavailable"),
        "{run:#?}"
    );
}

#[tokio::test]
async fn a_busy_gateway_that_recovers_is_not_an_error() {
    let (base, count) = stand_in(|n, head| {
        if n == 0 {
            return http("503 Service Unavailable", &[("retry-after", "1")], BUSY);
        }
        let id = head.split_whitespace().nth(1).unwrap_or_default();
        let id = id
            .trim_start_matches("/v1/jobs/")
            .split('?')
            .next()
            .unwrap_or_default();
        let body = format!(r#"{{"id":"{id}","state":"running","error":null,"result":null}}"#);
        http(
            "200 OK",
            &[("content-type", "application/json")],
            body.as_bytes(),
        )
    })
    .await;
    let id = uuid::Uuid::new_v4().to_string();
    let run = pixmill(&base, &["status", &id, "--json"]).await;
    assert_eq!(
        (run.code, run.json()["state"].as_str()),
        (0, Some("running")),
        "{run:#?}"
    );
    assert_eq!(count.load(Ordering::SeqCst), 2);
}

/// The tenant's own limits are pacing, not an outage: more than three 429s with
/// `tenant_quota_exceeded` or `rate_limited` are waited out, then the answer is used.
#[tokio::test]
async fn the_tenants_own_limits_are_waited_out() {
    const QUOTA: &[u8] = br#"{"error":{"code":"tenant_quota_exceeded","message":"tenant \"local\" has 50 jobs queued or running"}}"#;
    const RATE: &[u8] = br#"{"error":{"code":"rate_limited","message":"tenant \"local\" may submit 1 job per second"}}"#;
    let (base, count) = stand_in(|n, head| {
        if n < 5 {
            let body = if n % 2 == 0 { QUOTA } else { RATE };
            return http(
                "429 Too Many Requests",
                &[("content-type", "application/json"), ("retry-after", "0")],
                body,
            );
        }
        let id = head.split_whitespace().nth(1).unwrap_or_default();
        let id = id
            .trim_start_matches("/v1/jobs/")
            .split('?')
            .next()
            .unwrap_or_default();
        let body = format!(r#"{{"id":"{id}","state":"queued","error":null,"result":null}}"#);
        http(
            "200 OK",
            &[("content-type", "application/json")],
            body.as_bytes(),
        )
    })
    .await;
    let id = uuid::Uuid::new_v4().to_string();
    let run = pixmill(&base, &["status", &id, "--json"]).await;
    assert_eq!(
        (run.code, run.json()["state"].as_str()),
        (0, Some("queued")),
        "{run:#?}"
    );
    assert_eq!(
        count.load(Ordering::SeqCst),
        6,
        "five waits, then the answer"
    );
    assert!(run.stderr.contains("tenant limit reached"), "{run:#?}");
}

#[tokio::test]
async fn get_follows_a_redirect_to_the_object_store() {
    let png = photos::png(&decode(&photos::photo("flower.jpg")));
    let expected = png.clone();
    let (base, _) = stand_in(move |_, head| {
        if head.starts_with("GET /v1/jobs/") {
            http(
                "307 Temporary Redirect",
                &[
                    ("location", "/bucket/result?X-Amz-Signature=abc"),
                    ("cache-control", "no-store"),
                ],
                b"",
            )
        } else if head.starts_with("GET /bucket/result?X-Amz-Signature=abc ") {
            http("200 OK", &[("content-type", "image/png")], &png)
        } else {
            http("404 Not Found", &[], b"")
        }
    })
    .await;
    let file: PathBuf = temp_dir().with_extension("png");
    let file_arg = file.display().to_string();
    let run = pixmill(
        &base,
        &["get", &uuid::Uuid::new_v4().to_string(), "-o", &file_arg],
    )
    .await;
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(std::fs::read(&file).expect("written"), expected);
    let _ = std::fs::remove_file(&file);
}
