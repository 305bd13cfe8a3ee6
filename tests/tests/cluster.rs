//! Failover on a three-node RabbitMQ cluster (deploy/rabbitmq/cluster.sh), under load:
//! the node leading `pixmill.jobs` killed with `kill -9`; the node the gateway is
//! connected to killed; and a rolling restart of all three. Every client gets the list
//! of nodes. A submit during a failover is either 202 after a real confirm or a 503
//! with `Retry-After`; every accepted job succeeds: 0 lost, 0 stuck.
//!
//! Run by `make test-faults`. Each scenario prints one line:
//! `scenario: accepted=… succeeded=… lost=… stuck=… refused_503=… longest_stall_ms=…`.

use std::{
    path::Path,
    process::Command,
    sync::{
        Arc, Mutex as StdMutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use pixmill_tests::{Client, Stack, TIMEOUT, common, photos::photo, temp_dir};
use tokio::sync::{Mutex, OnceCell};
use uuid::Uuid;

/// The cluster, started once for this test binary; scenarios take turns.
static CLUSTER: OnceCell<String> = OnceCell::const_new();
static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

fn cluster(args: &[&str]) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/rabbitmq/cluster.sh");
    let out = Command::new("bash")
        .arg(&script)
        .args(args)
        .output()
        .expect("cluster.sh");
    assert!(
        out.status.success(),
        "cluster.sh {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The node list, with 2 s heartbeats so a dead peer is noticed fast.
async fn urls() -> String {
    CLUSTER
        .get_or_init(|| async {
            let urls = tokio::task::spawn_blocking(|| cluster(&["start"]))
                .await
                .expect("start the cluster");
            let last = urls.lines().last().unwrap_or_default().to_string();
            last.split(',')
                .map(|u| format!("{u}?heartbeat=2"))
                .collect::<Vec<_>>()
                .join(",")
        })
        .await
        .clone()
}

/// What a load saw.
#[derive(Debug, Default)]
struct Seen {
    accepted: Vec<String>,
    refused: usize,
    longest_stall: Duration,
}

/// Submits from 6 clients until `stop`; a 503 must carry `Retry-After` and is retried.
async fn load(client: Client, stop: Arc<AtomicBool>) -> Seen {
    let image = photo("china.jpg");
    let refused = Arc::new(AtomicUsize::new(0));
    let last_accept = Arc::new(StdMutex::new((Instant::now(), Duration::ZERO)));
    let tasks = (0..6).map(|_| {
        let (client, image, stop, refused, last_accept) = (
            client.clone(),
            image.clone(),
            stop.clone(),
            refused.clone(),
            last_accept.clone(),
        );
        tokio::spawn(async move {
            let mut accepted = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let Ok(reply) = client
                    .submit(
                        &image,
                        &[("op", "resize"), ("width", "160"), ("height", "100")],
                    )
                    .await
                else {
                    panic!("the gateway stopped answering");
                };
                match reply.status {
                    202 => {
                        accepted.push(reply.json()["id"].as_str().expect("id").to_string());
                        {
                            let mut last = last_accept.lock().expect("lock");
                            let gap = last.0.elapsed();
                            *last = (Instant::now(), last.1.max(gap));
                        }
                        tokio::time::sleep(Duration::from_millis(40)).await;
                    }
                    503 => {
                        assert!(
                            reply.headers.contains_key("retry-after"),
                            "a 503 without Retry-After"
                        );
                        refused.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(200)).await;
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
    let mut seen = Seen::default();
    for task in futures_util::future::join_all(tasks).await {
        seen.accepted.extend(task.expect("client"));
    }
    seen.refused = refused.load(Ordering::Relaxed);
    seen.longest_stall = last_accept.lock().expect("lock").1;
    seen
}

/// Waits for every accepted job; returns (succeeded, lost, stuck).
async fn settle(client: &Client, ids: &[String]) -> (usize, usize, usize) {
    let (mut ok, mut lost, mut stuck) = (0, 0, 0);
    // One deadline for the whole ledger: past it, whatever is not done is stuck.
    let deadline = tokio::time::Instant::now() + TIMEOUT * 2;
    for id in ids {
        loop {
            let reply = client.get(&format!("/v1/jobs/{id}?wait=2")).await;
            if let Ok(reply) = reply {
                if reply.status == 404 {
                    lost += 1;
                    break;
                }
                if reply.status == 200 {
                    match reply.json()["state"].as_str() {
                        Some("succeeded") => {
                            ok += 1;
                            break;
                        }
                        Some("failed" | "cancelled") => {
                            panic!("job {id} did not succeed: {}", reply.json())
                        }
                        _ => {}
                    }
                }
            }
            if tokio::time::Instant::now() > deadline {
                stuck += 1;
                // What the record says, so a stuck job can be told apart: never
                // published, held, running on a vanished worker, …
                if let Ok(reply) = client.get(&format!("/v1/jobs/{id}")).await {
                    println!("stuck: {}", String::from_utf8_lossy(&reply.body));
                }
                break;
            }
        }
    }
    (ok, lost, stuck)
}

/// Runs a load on a stack on the cluster, with `fault` in the middle.
async fn scenario(name: &str, fault: impl FnOnce(&str, &str) + Send + 'static) {
    let _turn = ONE_AT_A_TIME.lock().await;
    let urls = urls().await;
    let mut common = common(&format!("cluster-{}", Uuid::new_v4().simple()), &temp_dir());
    common.amqp_url = urls;
    // The defaults as shipped: every failover hands the deliveries in flight back and
    // the quorum queue counts each return, yet no healthy job may end `worker_crashed`.
    assert_eq!(
        common.topology.delivery_limit,
        pixmill_shared::topology::DEFAULT_DELIVERY_LIMIT
    );
    let mut stack = Stack::start_configured(common, |s| {
        s.publish_timeout = Duration::from_secs(3);
        s.upkeep.interval = Duration::from_secs(1);
    })
    .await
    .expect("stack");
    stack
        .spawn_worker_process("cluster-w1", 2)
        .expect("worker 1");
    stack
        .spawn_worker_process("cluster-w2", 2)
        .expect("worker 2");

    let stop = Arc::new(AtomicBool::new(false));
    let running = tokio::spawn(load(stack.client.clone(), stop.clone()));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ready = stack.client.get("/readyz").await.expect("readyz").json();
    let gateway_node = ready["broker_node"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let jobs_queue = stack.common.topology.jobs.clone();
    println!("{name}: the gateway publishes through {gateway_node}");
    let started = Instant::now();
    tokio::task::spawn_blocking(move || fault(&gateway_node, &jobs_queue))
        .await
        .expect("fault");
    let fault_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let seen = running.await.expect("load");
    let (ok, lost, stuck) = settle(&stack.client, &seen.accepted).await;
    println!(
        "{name}: accepted={} succeeded={ok} lost={lost} stuck={stuck} refused_503={} longest_stall_ms={} fault_s={fault_secs:.1}",
        seen.accepted.len(),
        seen.refused,
        seen.longest_stall.as_millis()
    );
    assert_eq!(
        cluster(&["running"]),
        "3",
        "{name}: every node is back in the cluster"
    );
    assert!(
        seen.accepted.len() >= 100,
        "{name}: the load was too thin to mean anything"
    );
    assert_eq!((lost, stuck), (0, 0), "{name}: nothing lost, nothing stuck");
    assert_eq!(
        ok,
        seen.accepted.len(),
        "{name}: every accepted job succeeds"
    );
    stack.stop().await.expect("stop");
}

fn port_of(node: &str) -> String {
    node.rsplit(':').next().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_jobs_queue_leader_loses_nothing() {
    scenario("kill -9 of the pixmill.jobs leader", |_, jobs_queue| {
        // The leader of this run's jobs queue (its name carries the test prefix).
        let leader = cluster(&["leader", jobs_queue]);
        println!("killing {leader}, the leader of {jobs_queue}");
        cluster(&["kill", &leader]);
        std::thread::sleep(Duration::from_secs(4));
        cluster(&["restart", &leader]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_gateways_node_loses_nothing() {
    scenario("kill -9 of the gateway's node", |gateway_node, _| {
        let port = port_of(gateway_node);
        assert!(!port.is_empty(), "/readyz names the broker node");
        cluster(&["kill", &port]);
        std::thread::sleep(Duration::from_secs(4));
        cluster(&["restart", &port]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_loses_nothing() {
    scenario("rolling restart of all three nodes", |_, _| {
        for port in ["5681", "5682", "5683"] {
            cluster(&["stop-node", port]);
            cluster(&["restart", port]);
        }
    })
    .await;
}
