//! The broker contract, end to end: a gateway serves the AsyncAPI document of its own
//! topology and the AsyncAPI parser accepts it; a worker refuses a job message of a
//! newer major contract version once, with its reason, and runs one of a newer minor
//! version that carries a field it does not know.

use std::time::Duration;

use lapin::{
    BasicProperties,
    options::{BasicAckOptions, BasicGetOptions},
    types::{AMQPValue, FieldTable},
};
use pixmill_shared::{amqp, contract};
use pixmill_tests::{Stack, TIMEOUT, photos::photo};
use serde_json::Value;

/// Takes the one queued job message off the stack's jobs queue and publishes it again
/// as a gateway of contract `version` would: the same properties, the header set to
/// `version`, and the body changed by `edit`. The original is acked only after the
/// broker confirmed the new one.
async fn republish_as(stack: &Stack, version: &str, edit: impl FnOnce(&mut Value)) {
    let conn = amqp::connect(&stack.common.amqp_url, "contract-test")
        .await
        .expect("connect");
    let channel = amqp::confirm_channel(&conn).await.expect("channel");
    let queue = &stack.common.topology.jobs;
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let message = loop {
        let got = channel
            .basic_get(queue.as_str().into(), BasicGetOptions::default())
            .await
            .expect("basic.get");
        match got {
            Some(message) => break message,
            None if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            None => panic!("no job message reached {queue}"),
        }
    };
    let delivery = &message.delivery;
    assert_eq!(
        amqp::header_str(delivery, contract::CONTRACT_HEADER),
        Some(contract::VERSION),
        "the gateway stamps its contract version"
    );
    let mut body: Value = serde_json::from_slice(&delivery.data).expect("a JSON job");
    edit(&mut body);
    let mut headers = FieldTable::default();
    headers.insert(
        contract::CONTRACT_HEADER.into(),
        AMQPValue::LongString(version.into()),
    );
    let properties: BasicProperties = delivery.properties.clone().with_headers(headers);
    amqp::publish_confirmed(
        &channel,
        queue,
        queue,
        &serde_json::to_vec(&body).expect("serialize"),
        properties,
        TIMEOUT,
    )
    .await
    .expect("publish");
    delivery
        .acker
        .ack(BasicAckOptions::default())
        .await
        .expect("ack");
    amqp::close(&conn, "done").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_of_a_newer_major_version_is_refused_once_with_its_reason() {
    let mut stack = Stack::start().await.expect("start");
    let image = photo("flower.jpg");
    // Queued with no worker running, so the test can rewrite the message first.
    let newer = stack
        .client
        .submit_ok(&image, &[("op", "grayscale"), ("format", "png")])
        .await
        .expect("submit");
    // A major version may change anything, the body included.
    republish_as(&stack, "2.0", |body| {
        body["steps"] = serde_json::json!([{"op": "sharpen", "amount": 2}]);
    })
    .await;
    stack.add_worker("w-contract", 2);
    let job = stack.client.wait_terminal(&newer).await.expect("terminal");
    assert_eq!(job["state"], "failed", "{job}");
    assert_eq!(job["error"]["code"], "unsupported_contract", "{job}");
    let message = job["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("2.0") && message.contains("1.x") && message.contains("upgrade"),
        "the reason names both versions and the fix: {message}"
    );
    // Answered once and acked: it is neither redelivered nor left in the queue.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let again = stack
        .client
        .get(&format!("/v1/jobs/{newer}"))
        .await
        .expect("status")
        .json();
    assert_eq!(again["attempts"], 1, "{again}");
    // A handed-back message would be redelivered and answered again with a higher
    // attempt number; one left behind would still be ready.
    let (ready, consumers) = stack
        .jobs()
        .publisher
        .queue_counts(&stack.common.topology.jobs)
        .await
        .expect("queue counts");
    assert_eq!(ready, 0, "nothing is left in the queue");
    assert_eq!(
        consumers, 1,
        "the worker is still consuming, not crash-looping"
    );
    stack.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_of_a_newer_minor_version_with_an_unknown_field_runs() {
    let mut stack = Stack::start().await.expect("start");
    let image = photo("flower.jpg");
    let id = stack
        .client
        .submit_ok(&image, &[("op", "grayscale"), ("format", "png")])
        .await
        .expect("submit");
    republish_as(&stack, "1.9", |body| {
        body["a_field_from_the_future"] = serde_json::json!({"any": "thing"});
    })
    .await;
    stack.add_worker("w-minor", 1);
    let job = stack.client.wait_terminal(&id).await.expect("terminal");
    assert_eq!(job["state"], "succeeded", "{job}");
    stack.stop().await.expect("stop");
}

/// A worker reads only the job's own image: its upload, or what the previous hop handed
/// on at the cursor. A message naming another key, or a cursor past its steps, fails
/// `invalid_request` with the reason, and is not run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_message_naming_another_input_or_a_cursor_past_its_steps_is_refused() {
    let mut stack = Stack::start().await.expect("start");
    let image = photo("flower.jpg");
    let other = stack
        .client
        .submit_ok(&image, &[("op", "grayscale"), ("format", "png")])
        .await
        .expect("submit");
    let foreign_input = stack
        .client
        .submit_ok(&image, &[("op", "grayscale"), ("format", "png")])
        .await
        .expect("submit");
    let past = stack
        .client
        .submit_ok(&image, &[("op", "grayscale"), ("format", "png")])
        .await
        .expect("submit");
    let other_input = format!("inputs/{other}");
    // The queue holds the three in order; `other` goes back unchanged, to its end.
    republish_as(&stack, contract::VERSION, |body| {
        assert_eq!(body["id"], other.as_str());
    })
    .await;
    republish_as(&stack, contract::VERSION, |body| {
        assert_eq!(body["id"], foreign_input.as_str());
        body["input"] = serde_json::json!(other_input);
    })
    .await;
    republish_as(&stack, contract::VERSION, |body| {
        assert_eq!(body["id"], past.as_str());
        body["cursor"] = serde_json::json!(7);
    })
    .await;
    stack.add_worker("w-checks", 1);
    let job = stack
        .client
        .wait_terminal(&foreign_input)
        .await
        .expect("terminal");
    assert_eq!(job["error"]["code"], "invalid_request", "{job}");
    let message = job["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("is not the job's"), "{message}");
    let job = stack.client.wait_terminal(&past).await.expect("terminal");
    assert_eq!(job["error"]["code"], "invalid_request", "{job}");
    let message = job["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("cursor 7 is past its 1 steps"),
        "{message}"
    );
    let job = stack.client.wait_terminal(&other).await.expect("terminal");
    assert_eq!(job["state"], "succeeded", "{job}");
    stack.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_serves_a_valid_asyncapi_document_of_its_own_topology() {
    let stack = Stack::start().await.expect("start");
    let reply = stack.client.get("/asyncapi.json").await.expect("get");
    assert_eq!(reply.status, 200);
    let document = reply.json();
    assert_eq!(document["asyncapi"], "3.0.0");
    let t = &stack.common.topology;
    assert_eq!(
        document["channels"]["jobsQueue"]["address"],
        t.jobs.as_str()
    );
    assert_eq!(
        document["channels"]["repliesQueue"]["address"],
        t.replies.as_str()
    );
    assert_eq!(
        document["channels"]["jobsQueue"]["x-arguments"]["x-delivery-limit"],
        t.delivery_limit
    );
    let file = pixmill_tests::temp_dir().join("asyncapi.json");
    std::fs::create_dir_all(file.parent().expect("dir")).expect("mkdir");
    std::fs::write(&file, document.to_string()).expect("write");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = std::process::Command::new(root.join("deploy/contract/check-asyncapi.sh"))
        .arg(&file)
        .output()
        .expect("run the AsyncAPI parser");
    let said =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the parser refused it: {said}");
    assert!(said.contains("valid AsyncAPI 3.0.0"), "{said}");
    stack.stop().await.expect("stop");
}

/// A listener of its own, written only against the contract, sees every change of every
/// job without taking a notice from the gateway (whose own waits still end).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_example_records_every_change_of_every_job() {
    use std::io::BufRead;

    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = pixmill_tests::examples_setup("setup.sh");
    let mut stack = Stack::start().await.expect("start");
    stack.add_worker("w-audit", 2);
    let t = stack.common.topology.clone();
    let prefix = t.jobs.strip_suffix(".jobs").expect("a prefixed topology");
    let log = pixmill_tests::temp_dir().join("audit.jsonl");
    std::fs::create_dir_all(log.parent().expect("dir")).expect("mkdir");
    let mut listener = std::process::Command::new(&python)
        .arg(root.join("examples/audit-log/audit_log.py"))
        .env("PIXMILL_AMQP_URL", &stack.common.amqp_url)
        .env("PIXMILL_QUEUE_PREFIX", prefix)
        .env("AUDIT_LOG", &log)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the audit log");
    // It says so once its queue is bound and consuming.
    let stderr = listener.stderr.take().expect("stderr");
    let (said, heard) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = said.send(line);
        }
    });
    let ready = heard
        .recv_timeout(Duration::from_secs(30))
        .expect("the audit log starts");
    assert!(ready.contains(&format!("{prefix}.events")), "{ready}");

    let image = photo("flower.jpg");
    let mut ids = Vec::new();
    for _ in 0..5 {
        let id = stack
            .client
            .submit_ok(&image, &[("op", "grayscale"), ("format", "png")])
            .await
            .expect("submit");
        ids.push(id);
    }
    for id in &ids {
        let job = stack.client.wait_terminal(id).await.expect("terminal");
        assert_eq!(job["state"], "succeeded", "{job}");
    }
    // Notices are published after the store has the change; give the listener a moment.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let lines: Vec<Value> = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("each line is JSON"))
            .collect();
        let done = ids.iter().all(|id| {
            lines.iter().any(|l| {
                l["notice"]["job_id"] == id.as_str() && l["routing_key"] == "job.succeeded"
            })
        });
        if done || tokio::time::Instant::now() > deadline {
            break lines;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let _ = listener.kill();
    let _ = listener.wait();
    for id in &ids {
        let keys: Vec<&str> = lines
            .iter()
            .filter(|l| l["notice"]["job_id"] == id.as_str())
            .map(|l| l["routing_key"].as_str().unwrap_or_default())
            .collect();
        assert_eq!(keys.first(), Some(&"job.queued"), "{id}: {keys:?}");
        assert_eq!(keys.last(), Some(&"job.succeeded"), "{id}: {keys:?}");
    }
    for line in &lines {
        assert!(
            line["origin"].is_string(),
            "the gateway names itself: {line}"
        );
        assert_eq!(
            line["routing_key"],
            format!(
                "job.{}",
                line["notice"]["state"].as_str().unwrap_or_default()
            ),
            "{line}"
        );
    }
    // The listener's queue is its own: remove it with the stack.
    let conn = amqp::connect(&stack.common.amqp_url, "contract-test")
        .await
        .expect("connect");
    let channel = conn.create_channel().await.expect("channel");
    channel
        .queue_delete(
            format!("{prefix}.audit-log").as_str().into(),
            lapin::options::QueueDeleteOptions::default(),
        )
        .await
        .expect("delete the audit queue");
    amqp::close(&conn, "done").await;
    stack.stop().await.expect("stop");
}
