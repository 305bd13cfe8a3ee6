//! Load: 200 jobs from 8 concurrent clients against 2 real worker processes. Every job
//! succeeds, and the job records show both workers took a share.

use std::collections::BTreeMap;

use pixmill_tests::{Stack, TIMEOUT, photos::photo};

const JOBS: usize = 200;
const CLIENTS: usize = 8;

#[tokio::test]
async fn two_hundred_jobs_from_eight_clients_on_two_worker_processes() {
    let mut stack = Stack::start().await.expect("start");
    stack
        .spawn_worker_process("load-worker-a", 1)
        .expect("worker a");
    stack
        .spawn_worker_process("load-worker-b", 1)
        .expect("worker b");
    let image = photo("flower.jpg");
    let ops: [&[(&str, &str)]; 4] = [
        &[("op", "resize"), ("width", "160"), ("height", "100")],
        &[("op", "swap")],
        &[("op", "grayscale")],
        &[("op", "flip"), ("direction", "horizontal")],
    ];

    let clients = (0..CLIENTS).map(|c| {
        let client = stack.client.clone();
        let image = image.clone();
        tokio::spawn(async move {
            let mut workers = Vec::new();
            for i in (c..JOBS).step_by(CLIENTS) {
                let id = client
                    .submit_ok(&image, ops[i % ops.len()])
                    .await
                    .expect("submit");
                let (job, result) = client.result_of(&id).await.expect("job succeeds");
                assert!(
                    image::load_from_memory(&result.body).is_ok(),
                    "result decodes"
                );
                workers.push(job["worker"].as_str().unwrap_or_default().to_string());
            }
            workers
        })
    });
    let done = tokio::time::timeout(TIMEOUT * 5, futures_util::future::join_all(clients))
        .await
        .expect("load finished in time");

    let mut per_worker: BTreeMap<String, usize> = BTreeMap::new();
    for workers in done {
        for worker in workers.expect("client task") {
            *per_worker.entry(worker).or_default() += 1;
        }
    }
    println!("jobs per worker: {per_worker:?}");
    assert_eq!(
        per_worker.values().sum::<usize>(),
        JOBS,
        "every job succeeded"
    );
    for name in ["load-worker-a", "load-worker-b"] {
        assert!(
            per_worker.get(name).copied().unwrap_or(0) > 0,
            "{name} took no jobs: {per_worker:?}"
        );
    }
    stack.stop().await.expect("stop");
}
