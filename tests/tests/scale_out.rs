//! Scale-out, end to end: two gateways on one PostgreSQL database, three workers (one
//! of them with no data folder at all), every image in SeaweedFS over S3.
//!
//! Each job is submitted to one gateway and long-polled on the other, so every answer
//! depends on a change notice crossing from the gateway that applied the reply to the
//! one that waits. The test asserts that each long-poll returns within 1 s of the job's
//! `finished_at` (or of the poll itself, for a job that finished before it began).

use std::collections::BTreeMap;

use pixmill_tests::{
    Stack, TIMEOUT,
    backends::{fresh_postgres, fresh_s3},
    common,
    photos::photo,
    temp_dir,
};
use uuid::Uuid;

const JOBS: usize = 300;
const CLIENTS: usize = 8;
/// The slowest a cross-gateway long-poll may answer after its job finished.
const MAX_LAG_MS: i64 = 1000;

/// Milliseconds since the epoch of an RFC 3339 timestamp from the API.
fn ms(value: &serde_json::Value) -> i64 {
    let text = value.as_str().expect("a timestamp");
    let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .expect("RFC 3339");
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).expect("fits")
}

#[tokio::test]
async fn two_gateways_three_workers_postgres_and_s3() {
    let (Some(database), Some(blobs)) = (fresh_postgres().await, fresh_s3()) else {
        return;
    };
    let mut common = common(&format!("scale-{}", Uuid::new_v4().simple()), &temp_dir());
    common.blob_url = blobs;
    let mut stack = Stack::start_configured(common, |s| s.database_url = database)
        .await
        .expect("gateway a");
    let gateway_b = stack.add_gateway().await.expect("gateway b");
    let gateways = [stack.client.clone(), gateway_b];
    stack.spawn_worker_process("scale-w1", 1).expect("worker 1");
    stack.spawn_worker_process("scale-w2", 1).expect("worker 2");
    // The third worker runs where there is no data folder: only the broker and S3.
    let bare = temp_dir();
    std::fs::create_dir_all(&bare).expect("bare dir");
    stack
        .spawn_remote_worker("scale-remote", &bare)
        .expect("worker 3");

    let image = photo("flower.jpg");
    let ops: [&[(&str, &str)]; 4] = [
        &[("op", "resize"), ("width", "160"), ("height", "100")],
        &[("op", "swap")],
        &[("op", "blur"), ("sigma", "1.5")],
        &[("op", "edges")],
    ];
    let clients = (0..CLIENTS).map(|c| {
        let (gateways, image) = (gateways.clone(), image.clone());
        tokio::spawn(async move {
            let mut seen = Vec::new();
            for i in (c..JOBS).step_by(CLIENTS) {
                let (submit_to, poll_on) = (&gateways[i % 2], &gateways[(i + 1) % 2]);
                let id = submit_to
                    .submit_ok(&image, ops[i % ops.len()])
                    .await
                    .expect("submit");
                let polled_at = pixmill_shared::now_ms();
                let reply = poll_on
                    .get(&format!("/v1/jobs/{id}?wait=30"))
                    .await
                    .expect("long-poll");
                let answered_at = pixmill_shared::now_ms();
                let job = reply.json();
                assert_eq!(job["state"], "succeeded", "{job}");
                let lag = answered_at - ms(&job["finished_at"]).max(polled_at);
                let worker = job["worker"].as_str().unwrap_or_default().to_string();
                // The result downloads from either gateway, streamed from S3.
                let result = submit_to
                    .get(&format!("/v1/jobs/{id}/result"))
                    .await
                    .expect("result");
                assert_eq!(result.status, 200, "{id}");
                assert!(
                    image::load_from_memory(&result.body).is_ok(),
                    "result decodes"
                );
                seen.push((lag, worker));
            }
            seen
        })
    });
    let done = tokio::time::timeout(TIMEOUT * 5, futures_util::future::join_all(clients))
        .await
        .expect("the load finished in time");

    let mut per_worker: BTreeMap<String, usize> = BTreeMap::new();
    let mut lags = Vec::new();
    for seen in done {
        for (lag, worker) in seen.expect("client task") {
            lags.push(lag);
            *per_worker.entry(worker).or_default() += 1;
        }
    }
    lags.sort_unstable();
    let worst = lags.last().copied().unwrap_or_default();
    let p50 = lags.get(lags.len() / 2).copied().unwrap_or_default();
    println!(
        "scale-out: {} jobs succeeded; cross-gateway long-poll lag after finished_at: p50 {p50} ms, worst {worst} ms; jobs per worker: {per_worker:?}",
        lags.len()
    );
    assert_eq!(lags.len(), JOBS, "every job succeeded");
    assert!(
        worst <= MAX_LAG_MS,
        "a long-poll returned {worst} ms after its job finished"
    );
    assert!(
        per_worker.get("scale-remote").copied().unwrap_or(0) > 0,
        "the worker with no data folder took no jobs: {per_worker:?}"
    );
    let left_behind: Vec<_> = std::fs::read_dir(&bare).expect("bare dir").collect();
    assert!(
        left_behind.is_empty(),
        "the remote worker wrote locally: {left_behind:?}"
    );
    stack.stop().await.expect("stop");
    let _ = std::fs::remove_dir_all(&bare);
}
