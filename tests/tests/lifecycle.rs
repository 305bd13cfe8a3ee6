//! A job's life beyond the happy path: transient-failure retries, the sweeper, retention,
//! and deleting a finished job's files.

use std::time::Duration;

use pixmill_gateway::store::{Admission, NewJob};
use pixmill_shared::{OutputFormat, Step, keys};
use pixmill_tests::{Stack, TIMEOUT, common, photos::photo, temp_dir};
use uuid::Uuid;

fn unique() -> pixmill_shared::config::Common {
    common(&format!("test-{}", Uuid::new_v4().simple()), &temp_dir())
}

/// Polls the job until `done` holds for its JSON, at most [`TIMEOUT`].
async fn until_job(
    stack: &Stack,
    id: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let job = stack
            .client
            .get(&format!("/v1/jobs/{id}"))
            .await
            .expect("get")
            .json();
        if done(&job) {
            return job;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "job never reached the state: {job}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Makes a job's upload unreadable (a folder where the file should be): the blob store
/// answers with an I/O error that is not "not found", which a worker treats as transient.
fn break_input(stack: &Stack, id: &str) -> Vec<u8> {
    let input = stack.blob_dir().join("inputs").join(id);
    let bytes = std::fs::read(&input).expect("read input");
    std::fs::remove_file(&input).expect("remove input");
    std::fs::create_dir(&input).expect("block input");
    bytes
}

fn mend_input(stack: &Stack, id: &str, bytes: &[u8]) {
    let input = stack.blob_dir().join("inputs").join(id);
    std::fs::remove_dir(&input).expect("unblock input");
    std::fs::write(&input, bytes).expect("restore input");
}

#[tokio::test]
async fn a_transient_failure_is_retried_until_it_clears() {
    let mut stack = Stack::start().await.expect("start");
    let id = stack
        .client
        .submit_ok(&photo("china.jpg"), &[("op", "grayscale")])
        .await
        .expect("submit");
    let bytes = break_input(&stack, &id);
    stack.add_worker_with("retrying", 1, |s| s.retry_base = Duration::from_millis(100));
    // Reading the upload keeps failing; each retry is a new attempt.
    until_job(&stack, &id, |job| job["attempts"].as_u64() >= Some(2)).await;
    mend_input(&stack, &id, &bytes);
    let job = stack.client.wait_terminal(&id).await.expect("wait");
    assert_eq!(job["state"], "succeeded", "{job}");
    assert!(job["attempts"].as_u64() >= Some(2), "{job}");
    stack.stop().await.expect("stop");
}

#[tokio::test]
async fn a_failure_that_never_clears_ends_retries_exhausted() {
    let mut stack = Stack::start().await.expect("start");
    let id = stack
        .client
        .submit_ok(&photo("china.jpg"), &[("op", "grayscale")])
        .await
        .expect("submit");
    break_input(&stack, &id);
    stack.add_worker_with("giving-up", 1, |s| {
        s.retry_base = Duration::from_millis(20);
        s.max_retries = 2;
    });
    let job = stack.client.wait_terminal(&id).await.expect("wait");
    assert_eq!(job["state"], "failed", "{job}");
    assert_eq!(job["error"]["code"], "retries_exhausted");
    assert_eq!(job["attempts"], 3, "the first try and two retries");
    stack.stop().await.expect("stop");
}

/// A gateway that died between recording a job and publishing it left a `queued` job
/// with no message. The sweeper publishes it, or fails it as `lost` if its upload is gone.
#[tokio::test]
async fn the_sweeper_repairs_jobs_whose_publish_was_never_confirmed() {
    let mut stack = Stack::start_configured(unique(), |s| {
        s.upkeep.interval = Duration::from_millis(200);
        s.upkeep.unconfirmed_after = Duration::from_millis(500);
    })
    .await
    .expect("start");
    stack.add_worker("swept", 1);

    // What a crashed gateway leaves behind: a stored upload and a task, but no message.
    let (store, blobs) = (&stack.jobs().store, &stack.jobs().blobs);
    let orphan = |id: Uuid| NewJob {
        id,
        tenant: pixmill_gateway::store::LOCAL_TENANT.into(),
        steps: vec![Step::Grayscale {}.into()],
        format: OutputFormat::Png,
        quality: 85,
        input_key: keys::input(id),
        idempotency: None,
        callback_url: None,
        variants: Vec::new(),
    };
    let (with_upload, without_upload) = (Uuid::new_v4(), Uuid::new_v4());
    blobs
        .put(&keys::input(with_upload), photo("china.jpg").into())
        .await
        .expect("upload");
    store
        .insert(orphan(with_upload), Admission::unlimited())
        .await
        .expect("insert");
    store
        .insert(orphan(without_upload), Admission::unlimited())
        .await
        .expect("insert");

    let job = stack
        .client
        .wait_terminal(&with_upload.to_string())
        .await
        .expect("wait");
    assert_eq!(job["state"], "succeeded", "{job}");
    let job = stack
        .client
        .wait_terminal(&without_upload.to_string())
        .await
        .expect("wait");
    assert_eq!(job["state"], "failed", "{job}");
    assert_eq!(job["error"]["code"], "lost");
    stack.stop().await.expect("stop");
}

#[tokio::test]
async fn finished_jobs_expire_after_the_retention_period() {
    let mut stack = Stack::start_configured(unique(), |s| {
        s.upkeep.interval = Duration::from_millis(200);
        s.upkeep.retention = Duration::from_millis(300);
    })
    .await
    .expect("start");
    stack.add_worker("retained", 1);
    let id = stack
        .client
        .submit_ok(
            &photo("china.jpg"),
            &[("op", "grayscale"), ("format", "png")],
        )
        .await
        .expect("submit");
    stack.client.result_of(&id).await.expect("result");

    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let gone = loop {
        let reply = stack
            .client
            .get(&format!("/v1/jobs/{id}"))
            .await
            .expect("get");
        if reply.status == 410 {
            break reply;
        }
        assert!(tokio::time::Instant::now() < deadline, "never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(gone.json()["state"], "expired");
    assert_eq!(gone.error_code(), "expired");
    let result = stack
        .client
        .get(&format!("/v1/jobs/{id}/result"))
        .await
        .expect("result");
    assert_eq!(result.status, 410);
    let blob_dir = stack.blob_dir();
    assert!(!blob_dir.join("inputs").join(&id).exists(), "input removed");
    assert!(
        !blob_dir.join("results").join(format!("{id}.png")).exists(),
        "result removed"
    );
    stack.stop().await.expect("stop");
}

#[tokio::test]
async fn deleting_a_finished_job_removes_its_result() {
    let mut stack = Stack::start().await.expect("start");
    stack.add_worker("deleter", 1);
    let id = stack
        .client
        .submit_ok(
            &photo("china.jpg"),
            &[("op", "grayscale"), ("format", "png")],
        )
        .await
        .expect("submit");
    stack.client.result_of(&id).await.expect("result");
    let deleted = stack
        .client
        .delete(&format!("/v1/jobs/{id}"))
        .await
        .expect("delete");
    assert_eq!(deleted.status, 200);
    assert_eq!(deleted.json()["result_deleted"], true);
    assert!(deleted.json()["result"].is_null());
    let result = stack
        .client
        .get(&format!("/v1/jobs/{id}/result"))
        .await
        .expect("result");
    assert_eq!(result.status, 410);
    assert_eq!(result.error_code(), "result_deleted");
    assert!(
        !stack
            .blob_dir()
            .join("results")
            .join(format!("{id}.png"))
            .exists()
    );
    stack.stop().await.expect("stop");
}
