//! Custom ops, end to end: the example workers in Python (`examples/python-worker`,
//! op `posterize`) and Node (`examples/node-worker`, op `threshold`), written only
//! against the broker contract, run beside the Rust worker on a gateway that registers
//! both ops from `examples/ops.json`. Jobs of each op run; pipelines that mix ops hop
//! from worker to worker through the blob store (folder and S3), and the job record
//! shows each hop; a foreign worker killed mid-job loses nothing; a built-in job never
//! reaches a custom op's queue; the operators see each op's queue and consumers.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use pixmill_gateway::custom_ops::CustomOps;
use pixmill_shared::BlobUrl;
use pixmill_tests::{
    Stack, TIMEOUT,
    backends::fresh_s3,
    common, examples_setup,
    photos::{decode, photo},
    temp_dir,
};
use serde_json::{Value, json};
use uuid::Uuid;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The two example workers' interpreters, their dependencies installed.
struct Runtimes {
    python: String,
    node_dir: PathBuf,
}

fn runtimes() -> Runtimes {
    Runtimes {
        python: examples_setup("setup.sh"),
        node_dir: PathBuf::from(examples_setup("setup-node.sh")),
    }
}

/// A foreign worker process; killed when dropped.
struct Foreign {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Foreign {
    fn start(stack: &Stack, kind: &str, name: &str, runtimes: &Runtimes) -> Self {
        let log = stack.data_dir().join(format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let mut command = match kind {
            "python" => {
                let mut c = Command::new(&runtimes.python);
                c.arg(root().join("examples/python-worker/worker.py"));
                c
            }
            _ => {
                let mut c = Command::new("node");
                c.arg(runtimes.node_dir.join("worker.mjs"));
                c
            }
        };
        let child = command
            .env("PIXMILL_AMQP_URL", &stack.common.amqp_url)
            .env("PIXMILL_QUEUE_PREFIX", &stack.common.topology.prefix)
            .env("PIXMILL_BLOB_URL", stack.common.blob_url.to_string())
            .env("PIXMILL_WORKER_NAME", name)
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("start the {kind} worker: {e}"));
        let worker = Self {
            name: name.into(),
            child,
            log,
        };
        worker.wait_for("serving");
        worker
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the worker's log says `needle`.
    fn wait_for(&self, needle: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !self.log_text().contains(needle) {
            assert!(
                std::time::Instant::now() < deadline,
                "{} never said {needle:?}: {}",
                self.name,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `kill -9`.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Foreign {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A stack whose gateway registers the example ops, with one Rust worker.
async fn stack_with_ops(blob_url: Option<BlobUrl>) -> Stack {
    let ops = CustomOps::load(&root().join("examples/ops.json")).expect("examples/ops.json");
    let mut common = common(&format!("ops-{}", Uuid::new_v4().simple()), &temp_dir());
    if let Some(url) = blob_url {
        common.blob_url = url;
    }
    let mut stack = Stack::start_configured(common, |s| s.ops = ops)
        .await
        .expect("start");
    stack.add_worker("rust-1", 2);
    stack
}

/// Submits `steps` (JSON) and returns the finished job and its result's bytes.
async fn run(stack: &Stack, image: &[u8], steps: Value, format: &str) -> (Value, Vec<u8>) {
    let id = stack
        .client
        .submit_ok(
            image,
            &[("steps", steps.to_string().as_str()), ("format", format)],
        )
        .await
        .expect("submit");
    let (job, result) = stack.client.result_of(&id).await.expect("succeeds");
    (job, result.body)
}

/// The job record's hops as (worker, ops).
fn hops(job: &Value) -> Vec<(String, Vec<String>)> {
    job["hops"]
        .as_array()
        .unwrap_or_else(|| panic!("the record shows its hops: {job}"))
        .iter()
        .map(|h| {
            assert!(h["ms"].as_u64().is_some(), "each hop says how long: {h}");
            let ops = h["ops"]
                .as_array()
                .expect("ops")
                .iter()
                .map(|o| o.as_str().expect("op").to_string())
                .collect();
            (h["worker"].as_str().expect("worker").to_string(), ops)
        })
        .collect()
}

fn ops(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// The distinct values of an image's luma.
fn gray_levels(bytes: &[u8]) -> BTreeSet<u8> {
    decode(bytes).to_luma8().pixels().map(|p| p.0[0]).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_workers_run_their_ops_and_mixed_pipelines_hop_between_workers() {
    let runtimes = runtimes();
    let stack = stack_with_ops(None).await;
    let python = Foreign::start(&stack, "python", "py-1", &runtimes);
    let mut node = Foreign::start(&stack, "node", "node-1", &runtimes);
    let image = photo("flower.jpg");
    let (width, height) = {
        let d = decode(&image);
        (d.width(), d.height())
    };

    // Each custom op on its own.
    let (job, png) = run(
        &stack,
        &image,
        json!([{"op": "posterize", "bits": 2}]),
        "png",
    )
    .await;
    assert_eq!(job["worker"], "py-1", "{job}");
    assert_eq!(decode(&png).width(), width);
    let (job, png) = run(
        &stack,
        &image,
        json!([{"op": "threshold", "level": 100}]),
        "png",
    )
    .await;
    assert_eq!(job["worker"], "node-1", "{job}");
    assert_eq!(
        gray_levels(&png),
        BTreeSet::from([0, 255]),
        "black and white"
    );

    // Built-in, then Python, then built-in: one job, three hops. Posterizing to one bit
    // before the grayscale leaves at most 8 gray levels, which proves the order.
    let (job, png) = run(
        &stack,
        &image,
        json!([{"op": "resize", "width": 320}, {"op": "posterize", "bits": 1}, {"op": "grayscale"}]),
        "png",
    )
    .await;
    assert_eq!(
        hops(&job),
        [
            ("rust-1".into(), ops(&["resize"])),
            ("py-1".into(), ops(&["posterize"])),
            ("rust-1".into(), ops(&["grayscale"])),
        ],
        "{job}"
    );
    let result = decode(&png);
    assert_eq!(result.width(), 320);
    let levels = gray_levels(&png);
    assert!(levels.len() <= 8, "posterized, then gray: {levels:?}");
    println!("built-in → Python → built-in: {}", job["hops"]);

    // A custom op first (the gateway routes it to its queue), Node then Python then
    // built-in: threshold leaves 0 and 255; 2-bit posterize keeps 0 and 192; the
    // rotation swaps the sides.
    let (job, png) = run(
        &stack,
        &image,
        json!([{"op": "threshold", "level": 128}, {"op": "posterize", "bits": 2}, {"op": "rotate", "degrees": 90}]),
        "png",
    )
    .await;
    assert_eq!(
        hops(&job),
        [
            ("node-1".into(), ops(&["threshold"])),
            ("py-1".into(), ops(&["posterize"])),
            ("rust-1".into(), ops(&["rotate"])),
        ],
        "{job}"
    );
    let result = decode(&png);
    assert_eq!((result.width(), result.height()), (height, width));
    assert_eq!(gray_levels(&png), BTreeSet::from([0, 192]));
    println!("Node → Python → built-in: {}", job["hops"]);

    // The images handed on between workers are removed once the job ends.
    let work = stack.blob_dir().join("work");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left: Vec<_> = std::fs::read_dir(&work)
            .map(|d| d.filter_map(Result::ok).map(|e| e.file_name()).collect())
            .unwrap_or_default();
        if left.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "handed-on images left behind: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Refused before anything is stored, naming the problem.
    for (fields, status, code, named) in [
        (
            vec![("op", "sharpen")],
            422,
            "unknown_op",
            "unknown op \"sharpen\"",
        ),
        (
            vec![("steps", r#"[{"op":"posterize","bits":9}]"#)],
            422,
            "invalid_parameter",
            "parameter `bits`",
        ),
        (
            vec![("steps", r#"[{"op":"posterize"}]"#)],
            422,
            "invalid_parameter",
            "\"bits\" is a required property",
        ),
        (
            vec![("op", "threshold"), ("level", "high")],
            422,
            "invalid_parameter",
            "parameter `level`",
        ),
        (
            vec![("steps", r#"[{"op":"threshold","colour":"red"}]"#)],
            422,
            "invalid_parameter",
            "colour",
        ),
    ] {
        let reply = stack.client.submit(&image, &fields).await.expect("submit");
        let body = reply.json();
        assert_eq!(reply.status, status, "{fields:?}: {body}");
        assert_eq!(body["error"]["code"], code, "{fields:?}: {body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(named), "{fields:?}: {message}");
    }

    // Built-in jobs never reach a custom op's queue: no foreign worker hears of them.
    let mut builtin = Vec::new();
    for _ in 0..10 {
        builtin.push(
            stack
                .client
                .submit_ok(&image, &[("op", "grayscale"), ("format", "png")])
                .await
                .expect("submit"),
        );
    }
    for id in &builtin {
        let job = stack.client.wait_terminal(id).await.expect("terminal");
        assert_eq!(job["state"], "succeeded", "{job}");
        assert_eq!(job["worker"], "rust-1", "{job}");
        assert!(job.get("hops").is_none(), "one worker, no hops: {job}");
    }
    let foreign_logs = python.log_text() + &node.log_text();
    for id in &builtin {
        assert!(
            !foreign_logs.contains(id.as_str()),
            "a foreign worker saw built-in job {id}"
        );
    }

    // The contract documents list the registered ops.
    let openapi = stack
        .client
        .get("/openapi.json")
        .await
        .expect("openapi")
        .json();
    assert!(
        openapi["components"]["schemas"]["CustomStep_posterize"]["properties"]["bits"].is_object(),
        "posterize's parameters are in /openapi.json"
    );
    let listed: Vec<&str> = openapi["x-pixmill-custom-ops"]
        .as_array()
        .expect("x-pixmill-custom-ops")
        .iter()
        .filter_map(|o| o["name"].as_str())
        .collect();
    assert_eq!(listed, ["posterize", "threshold"]);
    let asyncapi = stack
        .client
        .get("/asyncapi.json")
        .await
        .expect("asyncapi")
        .json();
    assert_eq!(
        asyncapi["channels"]["opQueue"]["parameters"]["op"]["enum"],
        json!(["posterize", "threshold"])
    );

    // Operators see each op, its queue and its consumers; an op nobody serves warns,
    // and its jobs wait for a worker rather than fail.
    let stats = op_stats(&stack, "posterize", |o| o["consumers"] == 1).await;
    assert!(stats["finished"].as_u64() >= Some(3), "{stats}");
    assert_eq!(
        stats["queue"],
        format!("{}.op.posterize", stack.common.topology.prefix)
    );
    node.kill();
    let unserved = op_stats(&stack, "threshold", |o| o["consumers"] == 0).await;
    let warning = unserved["warning"].as_str().expect("a warning");
    assert!(warning.contains("no worker consumes"), "{warning}");
    let waiting = stack
        .client
        .submit_ok(&image, &[("op", "threshold"), ("format", "png")])
        .await
        .expect("submit");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let job = stack
        .client
        .get(&format!("/v1/jobs/{waiting}"))
        .await
        .expect("get")
        .json();
    assert_eq!(
        job["state"], "queued",
        "waits for a threshold worker: {job}"
    );
    let _node = Foreign::start(&stack, "node", "node-2", &runtimes);
    let (job, _) = stack.client.result_of(&waiting).await.expect("succeeds");
    assert_eq!(job["worker"], "node-2");
    op_stats(&stack, "threshold", |o| o["warning"].is_null()).await;

    drop(python);
    stack.stop().await.expect("stop");
}

/// Polls `/v1/stats` until the entry of `op` satisfies `done`, and returns it.
async fn op_stats(stack: &Stack, op: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let stats = stack.client.get("/v1/stats").await.expect("stats").json();
        let entry = stats["ops"]
            .as_array()
            .and_then(|ops| ops.iter().find(|o| o["op"] == op))
            .cloned()
            .unwrap_or(Value::Null);
        if done(&entry) {
            assert_eq!(entry["custom"], true, "{entry}");
            return entry;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/v1/stats never showed {op} as expected: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The same hops over an S3 bucket: each worker reads its input and writes its output
/// through the object store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_workers_hand_images_on_through_s3() {
    let Some(blobs) = fresh_s3() else {
        return;
    };
    let runtimes = runtimes();
    let stack = stack_with_ops(Some(blobs)).await;
    let _python = Foreign::start(&stack, "python", "py-s3", &runtimes);
    let _node = Foreign::start(&stack, "node", "node-s3", &runtimes);
    let image = photo("flower.jpg");
    let (job, jpeg) = run(
        &stack,
        &image,
        json!([{"op": "posterize", "bits": 3}, {"op": "threshold", "level": 90}, {"op": "flip", "direction": "horizontal"}, {"op": "resize", "width": 200}]),
        "jpeg",
    )
    .await;
    assert_eq!(
        hops(&job),
        [
            ("py-s3".into(), ops(&["posterize"])),
            ("node-s3".into(), ops(&["threshold"])),
            ("rust-1".into(), ops(&["flip", "resize"])),
        ],
        "{job}"
    );
    assert_eq!(decode(&jpeg).width(), 200);
    println!("over S3: {}", job["hops"]);
    stack.stop().await.expect("stop");
}

/// `kill -9` of one of two Python workers while 200 jobs of its op run: the broker hands
/// the job it held to the other, and every job succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_worker_killed_mid_job_loses_nothing() {
    let runtimes = runtimes();
    let stack = stack_with_ops(None).await;
    let mut victim = Foreign::start(&stack, "python", "py-victim", &runtimes);
    let survivor = Foreign::start(&stack, "python", "py-survivor", &runtimes);
    // Killed in the middle of the run, while it holds a job: after its 30th.
    let killer = std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + TIMEOUT;
        while victim.log_text().matches(" succeeded").count() < 30 {
            assert!(
                std::time::Instant::now() < deadline,
                "the victim ran no jobs"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        victim.kill();
        victim.log_text().matches(" succeeded").count()
    });
    let image = photo("flower.jpg");
    let mut ids = Vec::new();
    for _ in 0..200 {
        ids.push(
            stack
                .client
                .submit_ok(
                    &image,
                    &[("op", "posterize"), ("bits", "3"), ("format", "jpeg")],
                )
                .await
                .expect("submit"),
        );
    }
    let by_victim = killer.join().expect("the victim was killed");
    let mut by_worker = std::collections::BTreeMap::<String, usize>::new();
    let mut again = 0;
    for id in &ids {
        let job = stack.client.wait_terminal(id).await.expect("terminal");
        assert_eq!(job["state"], "succeeded", "{job}");
        *by_worker
            .entry(job["worker"].as_str().unwrap_or_default().into())
            .or_default() += 1;
        if job["attempts"].as_u64() > Some(1) {
            again += 1;
        }
    }
    let report = format!(
        "kill -9 of a Python worker during 200 jobs: succeeded=200 lost=0 by_worker={by_worker:?} \
         run_again_after_the_kill={again} (the victim had finished {by_victim})"
    );
    println!("{report}");
    // A worker logs a job after it has published the reply, so the last lines may trail the
    // gateway's record by a moment.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let by_survivor = survivor.log_text().matches(" succeeded").count();
        if by_survivor >= 200 - by_victim {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the survivor took the rest: it logged {by_survivor} of {}",
            200 - by_victim
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stack.stop().await.expect("stop");
}
