//! The gateway checks the replies it reads from the broker: a success reply published
//! onto the real replies queue for a real queued job, naming a result key that is not the
//! job's or a content type pixmill does not write, fails the job with `invalid_reply`,
//! and nothing can be downloaded for it.

use std::time::Duration;

use lapin::BasicProperties;
use pixmill_shared::{JobResult, Outcome, Reply, amqp, keys};
use pixmill_tests::{Stack, photos::photo};
use uuid::Uuid;

/// Publishes `reply` onto the stack's replies queue, as a worker would.
async fn publish_reply(stack: &Stack, reply: &Reply) {
    let conn = amqp::connect(&stack.common.amqp_url, "forged-replies")
        .await
        .expect("connect");
    let channel = amqp::confirm_channel(&conn).await.expect("channel");
    amqp::publish_json(
        &channel,
        &stack.common.topology.reply_exchange,
        &stack.common.topology.replies,
        reply,
        BasicProperties::default().with_correlation_id(reply.job_id.to_string().into()),
        Duration::from_secs(10),
    )
    .await
    .expect("publish");
    amqp::close(&conn, "done").await;
}

fn succeeded(id: Uuid, key: String, content_type: &str) -> Reply {
    Reply {
        job_id: id,
        worker: "forger".into(),
        attempt: 1,
        started_ago_ms: None,
        hops: Vec::new(),
        outcome: Outcome::Succeeded(JobResult {
            key,
            content_type: content_type.into(),
            width: 10,
            height: 10,
            bytes: 100,
            processing_ms: 1,
            outputs: Vec::new(),
        }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_success_replies_fail_the_job_as_invalid_reply() {
    // No workers: the jobs stay queued, and only the forged replies speak for them.
    let stack = Stack::start().await.expect("start");
    let image = photo("flower.jpg");
    let other = stack
        .client
        .submit_ok(&image, &[("op", "grayscale"), ("format", "png")])
        .await
        .expect("submit");
    let other = Uuid::parse_str(&other).expect("uuid");
    let cases = [
        // The job's own upload, served as its result.
        (
            Box::new(|id: Uuid| keys::input(id)) as Box<dyn Fn(Uuid) -> String>,
            "image/png",
            "result key",
        ),
        // Another job's result.
        (
            Box::new(move |_: Uuid| keys::result(other, pixmill_shared::OutputFormat::Png)),
            "image/png",
            "result key",
        ),
        // The right key, served as a page.
        (
            Box::new(|id: Uuid| keys::result(id, pixmill_shared::OutputFormat::Png)),
            "text/html",
            "content type \"text/html\"",
        ),
    ];
    for (key, content_type, says) in cases {
        let id = stack
            .client
            .submit_ok(&image, &[("op", "grayscale"), ("format", "png")])
            .await
            .expect("submit");
        let uuid = Uuid::parse_str(&id).expect("uuid");
        assert_eq!(
            stack
                .client
                .get(&format!("/v1/jobs/{id}"))
                .await
                .expect("status")
                .json()["state"],
            "queued"
        );
        publish_reply(&stack, &succeeded(uuid, key(uuid), content_type)).await;
        let job = stack.client.wait_terminal(&id).await.expect("terminal");
        assert_eq!(job["state"], "failed", "{job}");
        assert_eq!(job["error"]["code"], "invalid_reply", "{job}");
        let message = job["error"]["message"].as_str().expect("message");
        assert!(message.contains(says), "{message}");
        assert!(job["result"].is_null(), "{job}");
        let download = stack
            .client
            .get(&format!("/v1/jobs/{id}/result"))
            .await
            .expect("result");
        assert_eq!(download.status, 409, "{}", download.error_message());
        assert_eq!(download.error_code(), "job_failed");
    }
    // The job whose key was borrowed is untouched.
    let untouched = stack
        .client
        .get(&format!("/v1/jobs/{other}"))
        .await
        .expect("status");
    assert_eq!(untouched.json()["state"], "queued");
    stack.stop().await.expect("stop");
}

/// A reply that does not follow the contract (here an error code pixmill does not know)
/// fails its job with `invalid_reply` and says why, instead of leaving it running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_reply_fails_its_job_with_the_reason() {
    let stack = Stack::start().await.expect("start");
    let image = photo("flower.jpg");
    let id = stack
        .client
        .submit_ok(&image, &[("op", "grayscale"), ("format", "png")])
        .await
        .expect("submit");
    let conn = amqp::connect(&stack.common.amqp_url, "forged-replies")
        .await
        .expect("connect");
    let channel = amqp::confirm_channel(&conn).await.expect("channel");
    let body = serde_json::json!({
        "job_id": id, "worker": "py-1", "attempt": 1,
        "event": "failed", "code": "model_unavailable", "message": "no GPU"
    });
    amqp::publish_confirmed(
        &channel,
        &stack.common.topology.reply_exchange,
        &stack.common.topology.replies,
        body.to_string().as_bytes(),
        BasicProperties::default().with_correlation_id(id.as_str().into()),
        Duration::from_secs(10),
    )
    .await
    .expect("publish");
    amqp::close(&conn, "done").await;
    let job = stack.client.wait_terminal(&id).await.expect("terminal");
    assert_eq!(job["state"], "failed", "{job}");
    assert_eq!(job["error"]["code"], "invalid_reply", "{job}");
    let message = job["error"]["message"].as_str().expect("message");
    assert!(
        message.contains("model_unavailable") && message.contains("reply.json"),
        "{message}"
    );
    assert_eq!(job["worker"], "py-1", "{job}");
    stack.stop().await.expect("stop");
}
