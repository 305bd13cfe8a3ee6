//! Fault tests: real jobs through the real stack while things break. Each test owns its
//! RabbitMQ node (own port, own data folder) and ends by checking that every submitted
//! job reached the right terminal state: none lost, none stuck.
//!
//! Run with `make test-faults`. Each prints one summary line:
//! `scenario: submitted=… succeeded=… failed_as_expected=… lost=… stuck=…`.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use pixmill_tests::{
    Client, GatewayProcess, Stack, TIMEOUT, broker::TestBroker, common, free_port, photos::photo,
    temp_dir,
};
use serde_json::Value;

/// What a job should end as.
#[derive(Debug, Clone, PartialEq)]
enum Expect {
    Succeed,
    Fail(&'static str),
    Cancelled,
}

/// Submitted jobs and what each should become.
#[derive(Debug, Default)]
struct Ledger(Vec<(String, Expect)>);

/// The counts every scenario reports.
#[derive(Debug, Default)]
struct Summary {
    submitted: usize,
    succeeded: usize,
    failed_as_expected: usize,
    cancelled_as_expected: usize,
    lost: usize,
    stuck: usize,
    wrong: Vec<String>,
}

impl Summary {
    fn check(&self, scenario: &str) {
        println!(
            "{scenario}: submitted={} succeeded={} failed_as_expected={} cancelled={} lost={} stuck={} wrong={}",
            self.submitted,
            self.succeeded,
            self.failed_as_expected,
            self.cancelled_as_expected,
            self.lost,
            self.stuck,
            self.wrong.len()
        );
        assert_eq!(self.lost, 0, "{scenario}: lost jobs");
        assert_eq!(self.stuck, 0, "{scenario}: stuck jobs");
        assert!(
            self.wrong.is_empty(),
            "{scenario}: wrong outcomes: {:?}",
            self.wrong
        );
    }
}

/// Waits (bounded) for every job in the ledger to be terminal and counts the outcomes.
async fn settle(client: &Client, ledger: &Ledger, within: Duration) -> Summary {
    let deadline = tokio::time::Instant::now() + within;
    let mut summary = Summary {
        submitted: ledger.0.len(),
        ..Summary::default()
    };
    let mut ids = std::collections::HashSet::new();
    for (id, expect) in &ledger.0 {
        assert!(ids.insert(id.clone()), "job id {id} handed out twice");
        let job = loop {
            let reply = match client.get(&format!("/v1/jobs/{id}?wait=5")).await {
                Ok(r) => r,
                Err(_) if tokio::time::Instant::now() < deadline => continue,
                Err(_) => break None,
            };
            if reply.status == 404 {
                break Some(Value::Null);
            }
            let job = reply.json();
            let terminal = matches!(
                job["state"].as_str(),
                Some("succeeded" | "failed" | "cancelled")
            );
            if terminal || tokio::time::Instant::now() >= deadline {
                break Some(job);
            }
        };
        let Some(job) = job else {
            summary.stuck += 1;
            continue;
        };
        if job.is_null() {
            summary.lost += 1;
            continue;
        }
        match (job["state"].as_str().unwrap_or_default(), expect) {
            ("succeeded", Expect::Succeed) => summary.succeeded += 1,
            ("failed", Expect::Fail(code)) if job["error"]["code"] == *code => {
                summary.failed_as_expected += 1
            }
            ("cancelled", Expect::Cancelled) => summary.cancelled_as_expected += 1,
            ("queued" | "running", _) => summary.stuck += 1,
            (state, expect) => summary.wrong.push(format!(
                "{id}: {state} {} (expected {expect:?})",
                job["error"]
            )),
        }
    }
    summary
}

/// The small mixed workload the fault tests push.
fn fields(i: usize) -> Vec<(&'static str, &'static str)> {
    match i % 4 {
        0 => vec![("op", "resize"), ("width", "160"), ("height", "100")],
        1 => vec![("op", "swap")],
        2 => vec![("op", "grayscale")],
        _ => vec![("op", "blur"), ("sigma", "1.5")],
    }
}

/// Closed-loop submitters: `clients` tasks submit `jobs` jobs in all, retrying after
/// 503/429 the way a well-behaved client does (after `Retry-After`, capped at 1 s here).
/// Returns the accepted ids and how many back-pressure answers were seen.
///
/// With `closed_loop`, each client waits for its job to finish before the next upload,
/// so the load spans the whole run instead of racing ahead of the workers.
async fn submit_all(
    client: &Client,
    jobs: usize,
    clients: usize,
    accepted: Arc<AtomicUsize>,
    closed_loop: bool,
) -> (Vec<String>, usize) {
    let image = Arc::new(photo("flower.jpg"));
    let tasks = (0..clients).map(|c| {
        let client = client.clone();
        let image = image.clone();
        let accepted = accepted.clone();
        tokio::spawn(async move {
            let mut ids = Vec::new();
            let mut pushed_back = 0;
            for i in (c..jobs).step_by(clients) {
                let deadline = tokio::time::Instant::now() + TIMEOUT * 2;
                loop {
                    let started = Instant::now();
                    match client.submit(&image, &fields(i)).await {
                        Ok(r) if r.status == 202 => {
                            let id = r.json()["id"].as_str().unwrap_or_default().to_string();
                            accepted.fetch_add(1, Ordering::SeqCst);
                            if closed_loop {
                                client.wait_terminal(&id).await.expect("job finishes");
                            }
                            ids.push(id);
                            break;
                        }
                        Ok(r) if r.status == 503 || r.status == 429 => {
                            assert!(
                                r.headers.contains_key("retry-after"),
                                "back-pressure without Retry-After"
                            );
                            assert!(
                                started.elapsed() < Duration::from_secs(6),
                                "a refused submit hung for {:?}",
                                started.elapsed()
                            );
                            pushed_back += 1;
                        }
                        Ok(r) => panic!(
                            "unexpected {}: {}",
                            r.status,
                            String::from_utf8_lossy(&r.body)
                        ),
                        Err(e) => panic!("submit failed: {e}"),
                    }
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "could not submit job {i} in time"
                    );
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
            (ids, pushed_back)
        })
    });
    let mut all = Vec::new();
    let mut pushed_back = 0;
    for task in futures_util::future::join_all(tasks).await {
        let (ids, p) = task.expect("submitter");
        all.extend(ids);
        pushed_back += p;
    }
    (all, pushed_back)
}

fn expect_all(ids: Vec<String>) -> Ledger {
    Ledger(ids.into_iter().map(|id| (id, Expect::Succeed)).collect())
}

/// Polls `done` until it holds, at most [`TIMEOUT`].
async fn until(mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not reached in time"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn stack_settings(broker: &TestBroker) -> pixmill_shared::config::Common {
    let mut common = common(&format!("fault-{}", broker.port), &temp_dir());
    common.amqp_url = broker.url.clone();
    common
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_one_of_two_workers_mid_load() {
    let broker = TestBroker::start(5701).expect("broker");
    let mut stack = Stack::start_with(stack_settings(&broker))
        .await
        .expect("stack");
    stack.spawn_worker_process("victim", 2).expect("worker");
    stack.spawn_worker_process("survivor", 2).expect("worker");
    let accepted = Arc::new(AtomicUsize::new(0));
    let load = tokio::spawn({
        let (client, accepted) = (stack.client.clone(), accepted.clone());
        async move { submit_all(&client, 300, 8, accepted, false).await }
    });
    until(|| accepted.load(Ordering::SeqCst) >= 100).await;
    stack.kill_worker(0).await.expect("kill -9");
    let (ids, _) = load.await.expect("load");
    let summary = settle(&stack.client, &expect_all(ids), TIMEOUT * 3).await;
    summary.check("kill-9-worker");
    assert_eq!(summary.succeeded, 300);
    stack.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_mid_load() {
    let broker = TestBroker::start(5702).expect("broker");
    let mut stack = Stack::start_with(stack_settings(&broker))
        .await
        .expect("stack");
    stack.spawn_worker_process("w1", 2).expect("worker");
    stack.spawn_worker_process("w2", 2).expect("worker");
    let accepted = Arc::new(AtomicUsize::new(0));
    let load = tokio::spawn({
        let (client, accepted) = (stack.client.clone(), accepted.clone());
        async move { submit_all(&client, 200, 8, accepted, true).await }
    });
    until(|| accepted.load(Ordering::SeqCst) >= 60).await;
    tokio::task::block_in_place(|| broker.stop()).expect("stop broker");

    // During the outage every submit is refused quickly, never left hanging.
    let mut slowest = Duration::ZERO;
    for _ in 0..10 {
        let started = Instant::now();
        let refused = stack
            .client
            .submit(&photo("flower.jpg"), &[("op", "grayscale")])
            .await
            .expect("submit");
        slowest = slowest.max(started.elapsed());
        assert_eq!(
            refused.status,
            503,
            "{}",
            String::from_utf8_lossy(&refused.body)
        );
        assert_eq!(refused.error_code(), "broker_unavailable");
        assert!(refused.headers.contains_key("retry-after"));
    }
    assert!(
        slowest <= Duration::from_secs(2),
        "a refusal took {slowest:?}"
    );
    println!(
        "broker-restart: 10 submits during the outage were refused with 503, the slowest in {slowest:?}"
    );

    tokio::task::block_in_place(|| broker.start_again()).expect("start broker");
    let (ids, pushed_back) = load.await.expect("load");
    let summary = settle(&stack.client, &expect_all(ids), TIMEOUT * 3).await;
    println!(
        "broker-restart: {pushed_back} submits were refused with 503 and retried by the clients"
    );
    summary.check("broker-restart");
    assert_eq!(summary.succeeded, 200);

    // Recovered without restarting anything: a fresh job goes through.
    let id = stack
        .client
        .submit_ok(&photo("flower.jpg"), &[("op", "grayscale")])
        .await
        .expect("submit after recovery");
    stack
        .client
        .result_of(&id)
        .await
        .expect("result after recovery");
    stack.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_killed_with_jobs_in_flight_then_restarted() {
    let broker = TestBroker::start(5703).expect("broker");
    let common = stack_settings(&broker);
    let mut workers = Stack::workers_only(common.clone()).expect("workers");
    let port = free_port().expect("port");
    let gateway = GatewayProcess::start(&common, port).await.expect("gateway");
    workers.spawn_worker_process("w1", 2).expect("worker");
    workers.spawn_worker_process("w2", 2).expect("worker");
    let (ids, _) = submit_all(
        &gateway.client,
        100,
        8,
        Arc::new(AtomicUsize::new(0)),
        false,
    )
    .await;
    gateway.kill().await.expect("kill -9 gateway");

    // Workers keep going; their replies wait on the durable replies queue.
    let gateway = GatewayProcess::start(&common, port)
        .await
        .expect("gateway again");
    let summary = settle(&gateway.client, &expect_all(ids), TIMEOUT * 3).await;
    summary.check("gateway-restart");
    assert_eq!(summary.succeeded, 100);
    gateway.kill().await.expect("stop gateway");
    workers.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_job_ends_worker_crashed_and_the_queue_keeps_moving() {
    let broker = TestBroker::start(5704).expect("broker");
    // The shipped defaults: the broker's delivery limit is only a backstop; the workers
    // count deaths by the run marks dead workers leave.
    let common = stack_settings(&broker);
    let mut stack = Stack::start_with(common).await.expect("stack");
    let env = [("PIXMILL_FAULT_ABORT_ON_SIGMA", "7.25")];
    stack
        .spawn_worker_process_with("crashy", 1, &env)
        .expect("worker");

    let image = photo("flower.jpg");
    let mut ledger = Ledger::default();
    let poison = stack
        .client
        .submit_ok(&image, &[("op", "blur"), ("sigma", "7.25")])
        .await
        .expect("submit poison");
    ledger.0.push((poison, Expect::Fail("worker_crashed")));
    for i in 0..10 {
        let id = stack
            .client
            .submit_ok(&image, &fields(i))
            .await
            .expect("submit");
        ledger.0.push((id, Expect::Succeed));
    }

    // A supervisor (systemd, Kubernetes, …) restarts the worker each time it dies.
    let mut restarts = 0;
    let deadline = tokio::time::Instant::now() + TIMEOUT * 2;
    loop {
        if stack.worker_exited(0) {
            restarts += 1;
            stack.respawn_worker(0, "crashy", 1, &env).expect("respawn");
        }
        if settle_quick(&stack.client, &ledger).await || tokio::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("poison: the worker was restarted {restarts} times");
    let summary = settle(&stack.client, &ledger, TIMEOUT).await;
    summary.check("poison-job");
    assert_eq!(summary.failed_as_expected, 1);
    assert_eq!(summary.succeeded, 10);
    // Its first run leaves no mark; each later one does. The worker that finds
    // PIXMILL_CRASH_LIMIT marks answers the job instead of running it.
    let limit = pixmill_workers::config::DEFAULT_CRASH_LIMIT;
    assert_eq!(
        restarts,
        limit + 1,
        "the poison job takes down the crash limit plus one worker, no more"
    );
    let job = stack
        .client
        .get(&format!("/v1/jobs/{}", ledger.0[0].0))
        .await
        .expect("poison job")
        .json();
    let message = job["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!("workers died {limit} times")),
        "set aside by the crash count, not the broker's delivery limit: {job}"
    );
    stack.stop().await.expect("stop");
}

/// True when every job in the ledger is terminal right now.
async fn settle_quick(client: &Client, ledger: &Ledger) -> bool {
    for (id, _) in &ledger.0 {
        let Ok(reply) = client.get(&format!("/v1/jobs/{id}")).await else {
            return false;
        };
        if !matches!(
            reply.json()["state"].as_str(),
            Some("succeeded" | "failed" | "cancelled")
        ) {
            return false;
        }
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_over_the_time_limit_fails_with_timeout() {
    let broker = TestBroker::start(5705).expect("broker");
    let mut stack = Stack::start_with(stack_settings(&broker))
        .await
        .expect("stack");
    stack.add_worker_with("strict", 1, |s| s.job_timeout = Duration::from_millis(50));
    let mut ledger = Ledger::default();
    // A 10-megapixel photograph blurred at the largest sigma takes several times longer
    // than 50 ms. (The timed-out computation still runs to its end on its slot, so the
    // photograph is kept small enough for the test to finish promptly.)
    let slow = stack
        .client
        .submit_ok(
            &photo("Wine_by_Jakkub_Mede.jpg"),
            &[("op", "blur"), ("sigma", "50")],
        )
        .await
        .expect("submit");
    ledger.0.push((slow, Expect::Fail("timeout")));
    let summary = settle(&stack.client, &ledger, TIMEOUT).await;
    summary.check("timeout");
    assert_eq!(summary.failed_as_expected, 1);
    stack.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_with_back_pressure_and_loses_nothing() {
    let broker = TestBroker::start(5706).expect("broker");
    let mut common = stack_settings(&broker);
    common.topology.max_queued = 20;
    // The broker's own limit, so every job goes to the broker at once: with fair share
    // on, a tenant's jobs past its window wait in the task store and never meet it.
    let mut stack = Stack::start_configured(common, |s| s.fair_share_window = None)
        .await
        .expect("stack");
    let image = photo("flower.jpg");
    let mut ledger = Ledger::default();
    let mut refused = 0;
    for i in 0..30 {
        let reply = stack
            .client
            .submit(&image, &fields(i))
            .await
            .expect("submit");
        match reply.status {
            202 => ledger.0.push((
                reply.json()["id"].as_str().unwrap_or_default().to_string(),
                Expect::Succeed,
            )),
            429 => {
                assert_eq!(reply.error_code(), "queue_full");
                assert!(reply.error_message().contains("PIXMILL_MAX_QUEUED"));
                assert!(reply.headers.contains_key("retry-after"));
                refused += 1;
            }
            other => panic!(
                "unexpected {other}: {}",
                String::from_utf8_lossy(&reply.body)
            ),
        }
    }
    // A quorum queue checks its length before appending, so it may admit one message
    // past the limit; everything past that is refused.
    let accepted = ledger.0.len();
    assert!(
        (20..=21).contains(&accepted),
        "accepted {accepted} with a limit of 20"
    );
    assert_eq!(refused, 30 - accepted);
    // The refused uploads left nothing behind.
    let inputs = std::fs::read_dir(stack.blob_dir().join("inputs"))
        .expect("inputs")
        .count();
    assert_eq!(inputs, accepted);

    stack.add_worker("drainer", 2);
    let summary = settle(&stack.client, &ledger, TIMEOUT * 2).await;
    println!("queue-full: {refused} submits refused with 429 queue_full");
    summary.check("queue-full");
    assert_eq!(summary.succeeded, accepted);
    stack.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_queued_job_never_runs() {
    let broker = TestBroker::start(5707).expect("broker");
    let mut stack = Stack::start_with(stack_settings(&broker))
        .await
        .expect("stack");
    let image = photo("flower.jpg");
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(
            stack
                .client
                .submit_ok(&image, &fields(i))
                .await
                .expect("submit"),
        );
    }
    let cancelled = stack
        .client
        .delete(&format!("/v1/jobs/{}", ids[1]))
        .await
        .expect("cancel");
    assert_eq!(
        cancelled.status,
        200,
        "{}",
        String::from_utf8_lossy(&cancelled.body)
    );
    assert_eq!(cancelled.json()["state"], "cancelled");

    stack.add_worker("late", 1);
    let ledger = Ledger(vec![
        (ids[0].clone(), Expect::Succeed),
        (ids[1].clone(), Expect::Cancelled),
        (ids[2].clone(), Expect::Succeed),
    ]);
    let summary = settle(&stack.client, &ledger, TIMEOUT).await;
    summary.check("cancel");
    // The worker took and skipped the cancelled job's message: the queue is drained, and
    // no result was ever written for it.
    let results: Vec<String> = std::fs::read_dir(stack.blob_dir().join("results"))
        .expect("results")
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    assert_eq!(results.len(), 2, "{results:?}");
    assert!(
        !results.iter().any(|r| r.starts_with(&ids[1])),
        "{results:?}"
    );
    let result = stack
        .client
        .get(&format!("/v1/jobs/{}/result", ids[1]))
        .await
        .expect("result");
    assert_eq!(result.status, 409);
    assert_eq!(result.error_code(), "job_cancelled");
    stack.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_1000_jobs_16_clients_random_worker_kills() {
    let broker = TestBroker::start(5708).expect("broker");
    let mut stack = Stack::start_with(stack_settings(&broker))
        .await
        .expect("stack");
    let names = ["soak-a", "soak-b", "soak-c"];
    for name in names {
        stack.spawn_worker_process(name, 1).expect("worker");
    }
    let accepted = Arc::new(AtomicUsize::new(0));
    let load = tokio::spawn({
        let (client, accepted) = (stack.client.clone(), accepted.clone());
        async move { submit_all(&client, 1000, 16, accepted, true).await }
    });
    let mut kills = 0;
    while !load.is_finished() {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let victim = (uuid::Uuid::new_v4().as_u128() % names.len() as u128) as usize;
        stack.kill_worker(victim).await.expect("kill");
        stack
            .respawn_worker(victim, names[victim], 1, &[])
            .expect("respawn");
        kills += 1;
    }
    let (ids, _) = load.await.expect("load");
    let summary = settle(&stack.client, &expect_all(ids), TIMEOUT * 5).await;
    println!("soak: {kills} random worker kills");
    summary.check("soak");
    assert_eq!(summary.succeeded, 1000);
    stack.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_blocks_publishers_gets_a_quick_503_then_recovers() {
    let broker = TestBroker::start(5709).expect("broker");
    let mut stack = Stack::start_with(stack_settings(&broker))
        .await
        .expect("stack");
    stack.add_worker("alarm-worker", 1);
    let image = photo("flower.jpg");
    let before = stack
        .client
        .submit_ok(&image, &[("op", "grayscale")])
        .await
        .expect("submit");
    stack
        .client
        .result_of(&before)
        .await
        .expect("result before the alarm");

    // A memory alarm: the broker stops reading from every publishing connection.
    tokio::task::block_in_place(|| broker.ctl(&["set_vm_memory_high_watermark", "0.0000001"]))
        .expect("raise alarm");
    let mut refused = 0;
    for _ in 0..3 {
        let started = Instant::now();
        let reply = stack
            .client
            .submit(&image, &[("op", "grayscale")])
            .await
            .expect("submit");
        let took = started.elapsed();
        assert_eq!(
            reply.status,
            503,
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
        assert_eq!(reply.error_code(), "broker_unavailable");
        assert!(reply.headers.contains_key("retry-after"));
        // The publish timeout is 1.5 s, so the answer comes within 2 s even on a busy
        // machine: a blocked broker never means a hung request.
        assert!(took <= Duration::from_secs(2), "refused after {took:?}");
        println!("memory-alarm: submit refused with 503 after {took:?}");
        refused += 1;
    }
    tokio::task::block_in_place(|| broker.ctl(&["set_vm_memory_high_watermark", "0.4"]))
        .expect("clear alarm");

    let after = stack
        .client
        .submit_ok(&image, &[("op", "grayscale")])
        .await
        .expect("submit after the alarm");
    let ledger = Ledger(vec![(before, Expect::Succeed), (after, Expect::Succeed)]);
    let summary = settle(&stack.client, &ledger, TIMEOUT).await;
    println!("memory-alarm: {refused} submits refused during the alarm, none accepted and lost");
    summary.check("memory-alarm");
    stack.stop().await.expect("stop");
}
