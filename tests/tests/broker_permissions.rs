//! The broker users of `deploy/rabbitmq/users.sh`, on the real broker: the worker's user
//! is refused everything but consuming jobs and publishing replies and retries, and a
//! gateway and a worker running as those users still complete a job.
//!
//! The test creates its own pair of users for its queue prefix with the same script that
//! sets up the shipped users, so it checks the shipped permissions.

use std::{path::Path, time::Duration};

use lapin::{
    BasicProperties, Channel, Confirmation, Connection,
    options::{
        BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions,
        QueueDeclareOptions, QueueDeleteOptions,
    },
    types::FieldTable,
};
use pixmill_shared::{Topology, amqp, topology::is_access_refused};
use pixmill_tests::{Stack, TIMEOUT, amqp_url, common, photos::photo, temp_dir};
use uuid::Uuid;

/// A gateway user and a worker user made by `users.sh apply` for one queue prefix, and
/// removed by `users.sh remove` when dropped (a failed test included).
struct Users {
    env: Vec<(&'static str, String)>,
    gateway_url: String,
    worker_url: String,
}

/// `url` with `user:password` as its credentials.
fn with_credentials(url: &str, user: &str, password: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("scheme");
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    format!("{scheme}://{user}:{password}@{rest}")
}

impl Users {
    fn create(prefix: &str) -> Self {
        let url = amqp_url();
        let port = amqp::node_of(&url)
            .rsplit_once(':')
            .map_or("5672".to_string(), |(_, p)| p.to_string());
        let gateway_password = Uuid::new_v4().simple().to_string();
        let worker_password = Uuid::new_v4().simple().to_string();
        let users = Self {
            gateway_url: with_credentials(&url, &format!("{prefix}-gateway"), &gateway_password),
            worker_url: with_credentials(&url, &format!("{prefix}-worker"), &worker_password),
            env: vec![
                ("PIXMILL_QUEUE_PREFIX", prefix.to_string()),
                ("PIXMILL_BROKER_NODE", format!("pixmill-{port}@localhost")),
                ("PIXMILL_BROKER_GATEWAY_PASSWORD", gateway_password),
                ("PIXMILL_BROKER_WORKER_PASSWORD", worker_password),
            ],
        };
        assert!(users.script("apply"), "users.sh apply failed");
        users
    }

    fn script(&self, verb: &str) -> bool {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/rabbitmq/users.sh");
        std::process::Command::new(script)
            .arg(verb)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for Users {
    fn drop(&mut self) {
        self.script("remove");
    }
}

/// A connection as `url`'s user; the definitions import may take a moment to land.
async fn connect(url: &str, name: &str) -> Connection {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        match amqp::connect(url, name).await {
            Ok(conn) => return conn,
            Err(e) if tokio::time::Instant::now() > deadline => panic!("connect as {name}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

async fn confirm_channel(conn: &Connection) -> Channel {
    let channel = conn.create_channel().await.expect("channel");
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm mode");
    channel
}

/// Publishes `body` and waits for the broker's answer.
async fn publish(
    channel: &Channel,
    exchange: &str,
    key: &str,
    props: BasicProperties,
) -> lapin::Result<Confirmation> {
    let publish = async {
        channel
            .basic_publish(
                exchange.into(),
                key.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                br#"{"probe":true}"#,
                props,
            )
            .await?
            .await
    };
    tokio::time::timeout(TIMEOUT, publish)
        .await
        .expect("the broker answers")
}

/// `result` is the broker's ACCESS_REFUSED, which closed `channel`.
fn assert_refused<T>(what: &str, channel: &Channel, result: lapin::Result<T>) {
    match result {
        Ok(_) => panic!("{what}: allowed, but the worker's user must be refused"),
        Err(e) => assert!(
            is_access_refused(&e),
            "{what}: refused with {e}, not ACCESS_REFUSED"
        ),
    }
    assert!(
        !channel.status().connected(),
        "{what}: the channel stays open"
    );
}

/// Waits until the gateway has declared the topology (its sessions start in the
/// background): the retry queue's binding is the declaration's last step.
async fn wait_for_topology(admin: &Connection, t: &Topology) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let channel = admin.create_channel().await.expect("channel");
        let declared = channel
            .queue_declare(
                t.retry.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await;
        if declared.is_ok() {
            let _ = channel.close(200, "checked".into()).await;
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the gateway never declared the topology"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn worker_is_refused(worker: &Connection, t: &Topology) {
    let channel = confirm_channel(worker).await;
    let r = publish(&channel, &t.jobs, &t.jobs, BasicProperties::default()).await;
    assert_refused("publish to the jobs exchange", &channel, r);

    let channel = confirm_channel(worker).await;
    let r = publish(&channel, "", &t.jobs, BasicProperties::default()).await;
    assert_refused(
        "publish into the jobs queue through the default exchange",
        &channel,
        r,
    );

    let channel = worker.create_channel().await.expect("channel");
    let r = channel
        .basic_consume(
            t.replies.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await;
    assert_refused("consume the replies queue", &channel, r);

    let channel = worker.create_channel().await.expect("channel");
    let r = channel
        .basic_get(t.replies.as_str().into(), BasicGetOptions::default())
        .await;
    assert_refused("get from the replies queue", &channel, r);

    let channel = worker.create_channel().await.expect("channel");
    let r = channel
        .queue_delete(t.jobs.as_str().into(), QueueDeleteOptions::default())
        .await;
    assert_refused("delete the jobs queue", &channel, r);

    // The experiment behind the worker's passive check: a declare of the existing
    // topology, with the very same arguments, still needs configure permission.
    let channel = worker.create_channel().await.expect("channel");
    let r = t.declare(&channel).await;
    assert_refused("declare the existing topology", &channel, r);
    // A passive declare needs no permission.
    let channel = worker.create_channel().await.expect("channel");
    channel
        .queue_declare(
            t.replies.as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("a passive declare is allowed");
}

/// A retry published by the worker's user through the retry exchange waits in the retry
/// queue, expires, and comes back on the jobs queue.
async fn worker_retry_comes_back(worker: &Connection, admin: &Connection, t: &Topology) {
    let channel = confirm_channel(worker).await;
    let marker = Uuid::new_v4().to_string();
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    // Until the gateway's declaration has bound the retry queue, the retry is returned.
    while let Confirmation::Ack(Some(_)) = publish(
        &channel,
        &t.retry_exchange,
        &t.retry,
        BasicProperties::default()
            .with_message_id(marker.as_str().into())
            .with_expiration("1".into()),
    )
    .await
    .expect("the worker may publish a retry")
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the retry queue is never bound"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let reader = admin.create_channel().await.expect("channel");
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let got = reader
            .basic_get(t.jobs.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .expect("get");
        if let Some(message) = got {
            assert_eq!(
                message
                    .delivery
                    .properties
                    .message_id()
                    .as_ref()
                    .map(|m| m.to_string()),
                Some(marker),
                "the retried message came back to the jobs queue"
            );
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the retry never came back to the jobs queue"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_worker_user_is_confined_and_the_pair_still_completes_a_job() {
    let prefix = format!("test-{}", Uuid::new_v4().simple());
    let users = Users::create(&prefix);
    let mut common = common(&prefix, &temp_dir());
    common.amqp_url = users.gateway_url.clone();
    // The gateway's user declares the whole topology.
    let mut stack = Stack::start_with(common.clone())
        .await
        .expect("gateway as its own user");
    let t = &common.topology;

    let worker = connect(&users.worker_url, "permission-probe-worker").await;
    let admin = connect(&amqp_url(), "permission-probe-admin").await;
    wait_for_topology(&admin, t).await;
    worker_is_refused(&worker, t).await;
    worker_retry_comes_back(&worker, &admin, t).await;
    amqp::close(&worker, "done").await;
    amqp::close(&admin, "done").await;

    let worker_url = users.worker_url.clone();
    stack.add_worker_with("confined-worker", 1, move |s| {
        s.common.amqp_url = worker_url
    });
    let id = stack
        .client
        .submit_ok(
            &photo("FreshFlower.jpg"),
            &[("op", "resize"), ("width", "320"), ("height", "200")],
        )
        .await
        .expect("submit");
    let (job, _) = stack.client.result_of(&id).await.expect("the job succeeds");
    assert_eq!(job["result"]["width"], 320);
    assert_eq!(job["worker"], "confined-worker", "{job}");

    stack.stop().await.expect("stop");
}
