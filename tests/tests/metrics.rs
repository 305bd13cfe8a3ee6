//! The operators' view under a real load: `/metrics` on the gateway and on a worker
//! process shows every family, the counters grow, the queue-depth gauge rises and falls;
//! `GET /v1/stats` agrees; and every metric the Grafana dashboard and the alert rules
//! query is one the code really exports.

use std::{collections::BTreeSet, path::Path, time::Duration};

use pixmill_tests::{Client, Stack, TIMEOUT, free_port, photos::photo};

const JOBS: usize = 300;

/// The value of the first sample of `family` whose labels contain `labels`.
fn sample(text: &str, family: &str, labels: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            l.starts_with(family) && l[family.len()..].starts_with(['{', ' ']) && l.contains(labels)
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The families a scrape declares (`# TYPE name kind`).
fn families(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_string)
        .collect()
}

/// Every `pixmill_*` name in `text`.
fn pixmill_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("pixmill_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

/// True when `name` is an exported family, or a histogram's `_bucket`/`_sum`/`_count`.
fn exported(name: &str, all: &BTreeSet<String>) -> bool {
    all.contains(name)
        || ["_bucket", "_sum", "_count"]
            .iter()
            .any(|s| name.strip_suffix(s).is_some_and(|base| all.contains(base)))
}

async fn scrape(url: &str) -> String {
    reqwest::get(url)
        .await
        .expect("scrape")
        .text()
        .await
        .expect("text")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_under_load_and_dashboards_query_real_metrics() {
    let mut stack = Stack::start().await.expect("start");
    let port = free_port().expect("port");
    let worker_metrics = format!("http://127.0.0.1:{port}/metrics");
    stack
        .spawn_worker_process_with(
            "metrics-worker",
            1,
            &[("PIXMILL_METRICS_ADDR", &format!("127.0.0.1:{port}"))],
        )
        .expect("worker");
    let gateway_metrics = format!("{}/metrics", stack.base);

    // Before any job: every family is there, at zero.
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while reqwest::get(&worker_metrics).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the worker's metrics never came up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before = scrape(&gateway_metrics).await;
    assert_eq!(
        sample(&before, "pixmill_jobs_submitted_total", ""),
        Some(0.0),
        "{before}"
    );

    // A load that outruns the one worker, so the queue fills, then drains. Some jobs
    // deep in the queue lose their upload before a worker reaches them, so they fail
    // (input_missing) and failures are counted too.
    let image = photo("flower.jpg");
    let inputs = stack.blob_dir().join("inputs");
    let submitter = {
        let (client, image) = (stack.client.clone(), image.clone());
        tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..JOBS {
                let fields = [("op", "blur"), ("sigma", "4")];
                let id = client.submit_ok(&image, &fields).await.expect("submit");
                if i >= 100 && i % 50 == 0 {
                    let _ = std::fs::remove_file(inputs.join(&id));
                }
                ids.push(id);
            }
            ids
        })
    };
    let mut depths = Vec::new();
    let mut submitted = Vec::new();
    while !submitter.is_finished() {
        let text = scrape(&gateway_metrics).await;
        depths.push(sample(&text, "pixmill_queue_messages_ready", "").unwrap_or(0.0));
        submitted.push(sample(&text, "pixmill_jobs_submitted_total", "").unwrap_or(0.0));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let ids = submitter.await.expect("submitter");
    let client = Client::new(&stack.base);
    for id in &ids {
        client.wait_terminal(id).await.expect("job ends");
    }
    // Once drained, the gauge comes back down.
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let text = scrape(&gateway_metrics).await;
        let depth = sample(&text, "pixmill_queue_messages_ready", "").unwrap_or(-1.0);
        depths.push(depth);
        if depth == 0.0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the queue never drained: {depth}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let peak = depths.iter().copied().fold(0.0, f64::max);
    println!(
        "metrics: queue depth peaked at {peak} and fell to 0; submitted counter read {:?} … {:?}",
        submitted.first(),
        submitted.last()
    );
    assert!(peak >= 5.0, "the queue-depth gauge never rose: {depths:?}");
    assert!(
        submitted.windows(2).all(|w| w[0] <= w[1]) && submitted.last() > submitted.first(),
        "the submitted counter grows: {submitted:?}"
    );

    let gateway = scrape(&gateway_metrics).await;
    let worker = scrape(&worker_metrics).await;
    let accepted = ids.len() as f64;
    assert_eq!(
        sample(&gateway, "pixmill_jobs_submitted_total", ""),
        Some(accepted)
    );
    let ok = sample(
        &gateway,
        "pixmill_jobs_finished_total",
        r#"outcome="succeeded""#,
    );
    let failed = sample(
        &gateway,
        "pixmill_jobs_finished_total",
        r#"code="input_missing""#,
    );
    assert_eq!(
        ok.unwrap_or(0.0) + failed.unwrap_or(0.0),
        accepted,
        "{gateway}"
    );
    assert!(
        failed.unwrap_or(0.0) >= 1.0,
        "failures are counted by code: {gateway}"
    );
    assert!(
        sample(
            &gateway,
            "pixmill_http_requests_total",
            r#"route="/v1/jobs",status="202""#
        )
        .unwrap_or(0.0)
            >= accepted
    );
    assert!(
        sample(&gateway, "pixmill_upload_bytes_total", "").unwrap_or(0.0)
            >= accepted * image.len() as f64
    );
    assert_eq!(
        sample(&gateway, "pixmill_queue_consumers", ""),
        Some(1.0),
        "{gateway}"
    );
    assert!(
        sample(
            &worker,
            "pixmill_worker_jobs_total",
            r#"worker="metrics-worker",op="blur",outcome="succeeded""#
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{worker}"
    );
    assert_eq!(
        sample(
            &worker,
            "pixmill_worker_slots",
            r#"worker="metrics-worker""#
        ),
        Some(1.0)
    );

    // Every family docs/operations.md promises, on one side or the other.
    let all: BTreeSet<String> = families(&gateway)
        .union(&families(&worker))
        .cloned()
        .collect();
    for family in [
        "pixmill_jobs_submitted_total",
        "pixmill_jobs_finished_total",
        "pixmill_http_requests_total",
        "pixmill_http_request_duration_seconds",
        "pixmill_job_queue_wait_seconds",
        "pixmill_job_processing_seconds",
        "pixmill_job_end_to_end_seconds",
        "pixmill_worker_jobs_in_flight",
        "pixmill_worker_slots_busy",
        "pixmill_worker_retries_total",
        "pixmill_worker_redeliveries_total",
        "pixmill_jobs_dead_lettered_total",
        "pixmill_worker_timeouts_total",
        "pixmill_worker_panics_total",
        "pixmill_upload_bytes_total",
        "pixmill_result_bytes_served_total",
        "pixmill_queue_messages_ready",
        "pixmill_queue_messages_unacked",
        "pixmill_queue_consumers",
    ] {
        assert!(all.contains(family), "{family} is not exported");
    }

    // /v1/stats tells the same story.
    let stats = client
        .get("/v1/stats?window=600")
        .await
        .expect("stats")
        .json();
    println!("metrics: /v1/stats = {stats}");
    assert_eq!(stats["finished"].as_f64(), Some(accepted), "{stats}");
    assert_eq!(stats["workers_online"], 1, "{stats}");
    assert_eq!(stats["queue"]["source"], "amqp+management", "{stats}");
    assert!(
        stats["failure_rate"].as_f64().unwrap_or(0.0) > 0.0,
        "{stats}"
    );
    assert!(stats["processing_ms_p95"].as_u64().is_some(), "{stats}");
    assert_eq!(
        client
            .get("/v1/stats?window=1")
            .await
            .expect("stats")
            .status,
        422
    );

    // The dashboard and the alert rules query only metrics that exist.
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    for file in ["grafana/pixmill.json", "prometheus/alerts.yaml"] {
        let text = std::fs::read_to_string(deploy.join(file)).expect(file);
        let queried = pixmill_names(&text);
        assert!(!queried.is_empty(), "{file} queries no pixmill metric");
        let unknown: Vec<_> = queried.iter().filter(|n| !exported(n, &all)).collect();
        assert!(
            unknown.is_empty(),
            "{file} queries metrics the code does not export: {unknown:?}"
        );
        println!(
            "metrics: {file} queries {} pixmill metrics, all exported",
            queried.len()
        );
    }
    stack.stop().await.expect("stop");
}
