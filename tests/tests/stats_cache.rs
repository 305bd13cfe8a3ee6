//! `GET /v1/stats` answers are kept for a second per window, on a real gateway: a job
//! that finished in between two reads within the second shows only after it.

use std::time::{Duration, Instant};

use pixmill_gateway::store::Change;
use pixmill_tests::{Stack, photos::photo};
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_answers_are_kept_for_a_second() {
    let stack = Stack::start().await.expect("start");
    let image = photo("flower.jpg");
    let finished = |reply: pixmill_tests::Reply| {
        assert_eq!(reply.status, 200);
        reply.json()["finished"].as_u64().expect("finished")
    };
    // Each attempt uses a window of its own, so no earlier answer is cached for it. An
    // attempt counts only when both reads fell within the second.
    for window in 600..610 {
        let path = format!("/v1/stats?window={window}");
        let id = stack
            .client
            .submit_ok(&image, &[("op", "grayscale")])
            .await
            .expect("submit");
        let started = Instant::now();
        let before = finished(stack.client.get(&path).await.expect("stats"));
        let failed = Change::Failed {
            worker: None,
            attempt: 1,
            code: "internal".into(),
            message: "failed for the stats test".into(),
            started_at: None,
            hops: Vec::new(),
        };
        stack
            .jobs()
            .record(Uuid::parse_str(&id).expect("uuid"), failed)
            .await
            .expect("record")
            .expect("the job changed");
        let cached = finished(stack.client.get(&path).await.expect("stats"));
        if started.elapsed() >= Duration::from_millis(900) {
            eprintln!("window {window}: too slow to be sure of the cache, again");
            continue;
        }
        assert_eq!(
            cached, before,
            "a job finished within the second is not shown yet"
        );
        tokio::time::sleep(pixmill_gateway::stats::CACHE_FOR + Duration::from_millis(100)).await;
        let fresh = finished(stack.client.get(&path).await.expect("stats"));
        assert_eq!(fresh, before + 1, "after the second it is");
        stack.stop().await.expect("stop");
        return;
    }
    panic!("no attempt read /v1/stats twice within a second");
}
