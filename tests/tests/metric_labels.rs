//! `/metrics` stays bounded whatever clients send: 10,000 requests with made-up method
//! names, to made-up paths and to real ones, add no series to a real gateway's scrape.
//! Every label is bounded: the method is a standard one or `other`, the route the matched
//! template or `unmatched`, the status one of the statuses those requests get.
//!
//! This file holds one test: the metrics recorder is per process, and any other test in
//! the same binary would add series of its own meanwhile.

use std::collections::BTreeSet;

use futures_util::{StreamExt, stream};
use pixmill_tests::Stack;
use uuid::Uuid;

/// Every series of a scrape: each sample line without its value.
fn series(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.rsplit_once(' ').map_or(l, |(name, _)| name).to_string())
        .collect()
}

async fn scrape(base: &str) -> String {
    let response = reqwest::get(format!("{base}/metrics"))
        .await
        .expect("scrape");
    assert_eq!(response.status().as_u16(), 200);
    response.text().await.expect("body")
}

/// A method name no standard lists: 6 to 13 upper-case letters.
fn made_up_method() -> reqwest::Method {
    let letters: String = Uuid::new_v4()
        .simple()
        .to_string()
        .bytes()
        .map(|b| char::from(b'A' + b % 26))
        .collect();
    let len = 6 + usize::from(letters.as_bytes()[0] % 8);
    reqwest::Method::from_bytes(&letters.as_bytes()[..len]).expect("a token")
}

/// One request of kind `i % 3`: a made-up method to a made-up path, a made-up method to a
/// real route, a GET to a made-up path. Returns its status.
async fn send(http: &reqwest::Client, base: &str, i: usize) -> u16 {
    let unknown = format!("{base}/nowhere/{}", Uuid::new_v4().simple());
    let request = match i % 3 {
        0 => http.request(made_up_method(), unknown),
        1 => http.request(made_up_method(), format!("{base}/healthz")),
        _ => http.get(unknown),
    };
    request.send().await.expect("request").status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_methods_and_paths_add_no_series() {
    let stack = Stack::start().await.expect("start");
    let http = reqwest::Client::new();
    // Each kind of request once, so the series they legitimately make already exist:
    // method `other` on `unmatched` (404) and on `/healthz` (405), GET on `unmatched`.
    let mut statuses = BTreeSet::new();
    for i in 0..3 {
        statuses.insert(send(&http, &stack.base, i).await);
    }
    assert_eq!(statuses, BTreeSet::from([404, 405]));
    // Twice: the first scrape makes the series of `GET /metrics` itself. In between, the
    // background tasks' gauges (the queue depth every 0.5 s) get their first values.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    scrape(&stack.base).await;
    let before = scrape(&stack.base).await;
    let known = series(&before);
    for needed in [
        r#"method="other",route="unmatched",status="404""#,
        r#"method="other",route="/healthz",status="405""#,
        r#"method="GET",route="unmatched",status="404""#,
    ] {
        assert!(
            known.iter().any(|s| s.contains(needed)),
            "no series with {needed}:\n{before}"
        );
    }

    let sent = stream::iter(0..10_000)
        .map(|i| {
            let (http, base) = (http.clone(), stack.base.clone());
            async move { send(&http, &base, i).await }
        })
        .buffer_unordered(32)
        .fold(0usize, |n, status| async move {
            assert!(matches!(status, 404 | 405), "status {status}");
            n + 1
        })
        .await;
    assert_eq!(sent, 10_000);

    let after = scrape(&stack.base).await;
    let now = series(&after);
    let added: Vec<_> = now.difference(&known).collect();
    let gone: Vec<_> = known.difference(&now).collect();
    assert!(added.is_empty(), "new series: {added:#?}");
    assert!(gone.is_empty(), "series gone: {gone:#?}");
    assert_eq!(
        after.lines().filter(|l| !l.starts_with('#')).count(),
        before.lines().filter(|l| !l.starts_with('#')).count(),
        "the number of sample lines"
    );
    // And the requests were counted, under `other`.
    let counted = |text: &str| -> f64 {
        text.lines()
            .filter(|l| {
                l.starts_with("pixmill_http_requests_total{") && l.contains("method=\"other\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert_eq!(counted(&after) - counted(&before), 6_667.0);
    stack.stop().await.expect("stop");
}
