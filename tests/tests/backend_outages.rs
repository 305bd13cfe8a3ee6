//! Outages of the distributed backends under load: PostgreSQL stopped for a few
//! seconds, then SeaweedFS. Submits during an outage are refused with 503 and
//! `Retry-After` (never accepted and dropped); every job accepted before, during or
//! after it succeeds: 0 lost, 0 stuck.
//!
//! The servers are the ones `make test` started for the whole run; these tests stop and
//! start them through the same scripts. They run one at a time (a shared lock), and
//! each stops only the server it is about.

use std::{
    path::Path,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use pixmill_tests::{
    Client, Stack, TIMEOUT,
    backends::{fresh_postgres, fresh_s3},
    common,
    photos::photo,
    temp_dir,
};
use tokio::sync::Mutex;
use uuid::Uuid;

/// One outage at a time, so one test never sees the other's.
static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

/// Runs a server script (`deploy/postgres/ensure-postgres.sh stop`, …).
fn script(path: &str, verb: &str) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path);
    let status = Command::new("bash")
        .arg(&script)
        .arg(verb)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run the server script");
    assert!(status.success(), "{path} {verb} failed");
}

/// What a load saw.
#[derive(Debug, Default)]
struct Load {
    accepted: Vec<String>,
    refused: usize,
}

/// Submits jobs from 4 clients until `stop`, recording accepted ids and refusals. A
/// refusal must be a 503 with `Retry-After` and a code naming the store at fault.
async fn load(client: Client, stop: Arc<AtomicBool>, code: &'static str) -> Load {
    let image = photo("flower.jpg");
    let refused = Arc::new(AtomicUsize::new(0));
    let tasks = (0..4).map(|_| {
        let (client, image, stop, refused) =
            (client.clone(), image.clone(), stop.clone(), refused.clone());
        tokio::spawn(async move {
            let mut accepted = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let reply = client
                    .submit(
                        &image,
                        &[("op", "resize"), ("width", "96"), ("height", "64")],
                    )
                    .await
                    .expect("the gateway answers");
                match reply.status {
                    202 => {
                        accepted.push(reply.json()["id"].as_str().expect("id").to_string());
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    503 => {
                        assert!(
                            reply.headers.contains_key("retry-after"),
                            "503 without Retry-After"
                        );
                        assert_eq!(reply.error_code(), code, "{}", reply.error_message());
                        refused.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    other => panic!(
                        "unexpected {other}: {}",
                        String::from_utf8_lossy(&reply.body)
                    ),
                }
            }
            accepted
        })
    });
    let mut seen = Load::default();
    for task in futures_util::future::join_all(tasks).await {
        seen.accepted.extend(task.expect("client"));
    }
    seen.refused = refused.load(Ordering::Relaxed);
    seen
}

/// Waits for every accepted job to end, retrying through 503s; counts lost (unknown
/// to the gateway), stuck (never ended) and failed jobs.
async fn settle(client: &Client, ids: &[String]) -> (usize, usize, usize) {
    let (mut lost, mut stuck, mut failed) = (0, 0, 0);
    for id in ids {
        let deadline = tokio::time::Instant::now() + TIMEOUT * 2;
        loop {
            let reply = client
                .get(&format!("/v1/jobs/{id}?wait=5"))
                .await
                .expect("get");
            if reply.status == 404 {
                lost += 1;
                break;
            }
            if reply.status == 200 {
                match reply.json()["state"].as_str() {
                    Some("succeeded") => break,
                    Some("failed" | "cancelled") => {
                        failed += 1;
                        break;
                    }
                    _ => {}
                }
            }
            if tokio::time::Instant::now() > deadline {
                stuck += 1;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    (lost, stuck, failed)
}

/// Loads a stack, runs `outage` in the middle, and checks the outcome.
async fn under_load(stack: &Stack, name: &str, code: &'static str, outage: impl FnOnce()) {
    let stop = Arc::new(AtomicBool::new(false));
    let running = tokio::spawn(load(stack.client.clone(), stop.clone(), code));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let started = std::time::Instant::now();
    tokio::task::block_in_place(outage);
    let outage_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let seen = running.await.expect("load");
    let (lost, stuck, failed) = settle(&stack.client, &seen.accepted).await;
    println!(
        "{name}: outage {outage_secs:.1} s, accepted={} refused_with_503={} lost={lost} stuck={stuck} failed={failed}",
        seen.accepted.len(),
        seen.refused
    );
    assert!(seen.refused > 0, "{name}: no submit saw the outage");
    assert!(!seen.accepted.is_empty(), "{name}: nothing was accepted");
    assert_eq!(
        (lost, stuck, failed),
        (0, 0, 0),
        "{name}: every accepted job succeeds"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_for_a_few_seconds_loses_nothing() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(database) = fresh_postgres().await else {
        return;
    };
    let common = common(&format!("pg-out-{}", Uuid::new_v4().simple()), &temp_dir());
    let mut stack = Stack::start_configured(common, |s| {
        s.database_url = database;
        s.upkeep.interval = Duration::from_millis(500);
        s.upkeep.unconfirmed_after = Duration::from_secs(3);
    })
    .await
    .expect("start");
    stack.add_worker("pg-outage", 2);
    under_load(&stack, "postgres outage", "store_unavailable", || {
        script("deploy/postgres/ensure-postgres.sh", "stop");
        std::thread::sleep(Duration::from_secs(3));
        script("deploy/postgres/ensure-postgres.sh", "start");
    })
    .await;
    stack.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seaweedfs_stopped_for_a_few_seconds_loses_nothing() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(blobs) = fresh_s3() else {
        return;
    };
    let mut common = common(&format!("s3-out-{}", Uuid::new_v4().simple()), &temp_dir());
    common.blob_url = blobs;
    let mut stack = Stack::start_with(common).await.expect("start");
    // Retries back off from 1 s, doubling: about a minute of patience in all, more
    // than a restart of the S3 server takes.
    stack.add_worker_with("s3-outage", 2, |w| {
        w.retry_base = Duration::from_secs(1);
        w.max_retries = 6;
    });
    under_load(&stack, "s3 outage", "blob_store_unavailable", || {
        script("deploy/s3/ensure-seaweedfs.sh", "stop");
        std::thread::sleep(Duration::from_secs(3));
        script("deploy/s3/ensure-seaweedfs.sh", "start");
    })
    .await;
    stack.stop().await.expect("stop");
}
