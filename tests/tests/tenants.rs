//! Tenants' limits end to end: the in-flight quota across two gateways on PostgreSQL,
//! the submit rate with its `RateLimit` fields, the admin API, and fair share: another
//! tenant's job, and an interactive one, go ahead of a tenant's backlog.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use pixmill_gateway::{
    auth::{self, ApiScope, AuthMode, KeyRequest},
    store::Store,
    tenants::{Defaults, Rate},
};
use pixmill_tests::{Client, Reply, Stack, common, photos::photo, temp_dir};
use uuid::Uuid;

async fn key(store: &Store, tenant: &str, scopes: &str) -> String {
    let request = KeyRequest {
        tenant: tenant.into(),
        scopes: ApiScope::parse_list(scopes).expect("scopes"),
        ttl: None,
        label: None,
    };
    auth::issue(store, request, pixmill_shared::now_ms())
        .await
        .expect("issue")
        .0
}

fn header<'a>(reply: &'a Reply, name: &str) -> &'a str {
    reply
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no {name} header on a {} answer", reply.status))
}

fn id(reply: &Reply) -> String {
    assert_eq!(
        reply.status,
        202,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    reply.json()["id"].as_str().expect("id").to_string()
}

/// Two gateways on one PostgreSQL database, a quota of 50: 200 concurrent submits,
/// alternating between them, while no worker runs yet (so nothing leaves the count). At
/// no moment are more than 50 in flight, exactly 50 are accepted, the rest get 429 with
/// `Retry-After` and the `RateLimit` fields; then a worker runs every accepted job to
/// success, and the tenant may submit again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_in_flight_quota_holds_across_two_gateways() {
    let Some(database) = pixmill_tests::backends::fresh_postgres().await else {
        return;
    };
    let common = common(&format!("test-{}", Uuid::new_v4().simple()), &temp_dir());
    let mut stack = Stack::start_configured(common, |s| {
        s.auth = AuthMode::Required;
        s.database_url = database;
        s.tenants = Defaults {
            max_inflight: 50,
            rate: None,
        };
    })
    .await
    .expect("gateway a");
    let other = stack.add_gateway().await.expect("gateway b");
    let store = stack.jobs().store.clone();
    let token = key(&store, "alpha", "jobs:write,jobs:read").await;
    let gateways = [stack.client.with_key(&token), other.with_key(&token)];

    // Watches the store while the submits run: the highest count of alpha's jobs
    // queued or running.
    let (peak, done) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let watcher = tokio::spawn({
        let (store, peak, done) = (store.clone(), peak.clone(), done.clone());
        async move {
            while !done.load(Ordering::Relaxed) {
                let now = store.in_flight("alpha").await.expect("count").open;
                peak.fetch_max(now, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    });
    let image = photo("china.jpg");
    let submits = (0..200).map(|i| {
        let (client, image) = (gateways[i % 2].clone(), image.clone());
        tokio::spawn(async move { client.submit(&image, &[("op", "grayscale")]).await })
    });
    let mut accepted = Vec::new();
    let mut refused = 0;
    for submit in submits {
        let reply = submit.await.expect("task").expect("answer");
        match reply.status {
            202 => accepted.push(id(&reply)),
            429 => {
                refused += 1;
                assert_eq!(reply.error_code(), "tenant_quota_exceeded");
                assert!(
                    reply
                        .error_message()
                        .contains("PIXMILL_TENANT_MAX_INFLIGHT"),
                    "{}",
                    reply.error_message()
                );
                assert!(header(&reply, "retry-after").parse::<u32>().expect("secs") >= 1);
                assert_eq!(
                    header(&reply, "ratelimit-policy"),
                    "\"in-flight\";q=50;qu=\"concurrent-requests\""
                );
                assert!(header(&reply, "ratelimit").starts_with("\"in-flight\";r=0;t="));
            }
            other => panic!(
                "unexpected {other}: {}",
                String::from_utf8_lossy(&reply.body)
            ),
        }
    }
    assert_eq!(accepted.len(), 50, "{refused} refused");
    stack.add_worker("quota", 2);
    let client = &gateways[0];
    for job in &accepted {
        let done = client.wait_terminal(job).await.expect("wait");
        assert_eq!(done["state"], "succeeded", "{done}");
    }
    done.store(true, Ordering::Relaxed);
    watcher.await.expect("watcher");
    let peak = peak.load(Ordering::Relaxed);
    println!(
        "accepted {}, refused {refused}, peak in flight {peak}",
        accepted.len()
    );
    assert!(peak <= 50, "{peak} in flight at once, over the quota of 50");
    assert_eq!(peak, 50, "the watcher never saw the quota reached");
    assert_eq!(refused, 150);
    // Finished jobs leave the count: the tenant may submit again, on either gateway.
    for client in &gateways {
        let again = client
            .submit(&image, &[("op", "grayscale")])
            .await
            .expect("again");
        id(&again);
    }
    stack.stop().await.expect("stop");
}

/// The submit rate: the burst passes with falling `RateLimit`, the next is refused
/// after its upload is read, and after `Retry-After` one more passes. A tenant's own
/// limits, set over the admin API, replace the defaults.
#[tokio::test]
async fn the_submit_rate_is_paced_with_ratelimit_fields() {
    let common = common(&format!("test-{}", Uuid::new_v4().simple()), &temp_dir());
    let mut stack = Stack::start_configured(common, |s| {
        s.auth = AuthMode::Required;
        s.tenants = Defaults {
            max_inflight: 1000,
            rate: Some(Rate {
                per_sec: 1.0,
                burst: 3,
            }),
        };
    })
    .await
    .expect("start");
    stack.add_worker("rate", 2);
    let store = stack.jobs().store.clone();
    let alpha = stack
        .client
        .with_key(&key(&store, "alpha", "jobs:write,jobs:read").await);
    let admin = stack.client.with_key(&key(&store, "ops", "admin").await);
    let image = photo("china.jpg");

    let mut left = Vec::new();
    for _ in 0..3 {
        let reply = alpha
            .submit(&image, &[("op", "grayscale")])
            .await
            .expect("submit");
        id(&reply);
        assert_eq!(header(&reply, "ratelimit-policy"), "\"submits\";q=3;w=3");
        left.push(header(&reply, "ratelimit").to_string());
    }
    assert!(left[0].starts_with("\"submits\";r=2;"), "{left:?}");
    assert!(left[2].starts_with("\"submits\";r=0;"), "{left:?}");
    let refused = alpha
        .submit(&image, &[("op", "grayscale")])
        .await
        .expect("submit");
    assert_eq!(refused.status, 429);
    assert_eq!(refused.error_code(), "rate_limited");
    assert!(refused.error_message().contains("PIXMILL_TENANT_RATE"));
    let wait: u64 = header(&refused, "retry-after").parse().expect("secs");
    assert!((1..=2).contains(&wait), "Retry-After {wait}");
    assert!(header(&refused, "ratelimit").starts_with("\"submits\";r=0;t="));
    // Another tenant has its own bucket.
    let beta = stack
        .client
        .with_key(&key(&store, "beta", "jobs:write,jobs:read").await);
    id(&beta
        .submit(&image, &[("op", "grayscale")])
        .await
        .expect("beta"));
    tokio::time::sleep(Duration::from_secs(wait)).await;
    id(&alpha
        .submit(&image, &[("op", "grayscale")])
        .await
        .expect("after the wait"));

    // Its own limits: no rate limit, at most 1 in flight.
    let set = admin
        .put_json(
            "/v1/tenants/alpha",
            &serde_json::json!({"rate": 0, "max_inflight": 1}),
        )
        .await
        .expect("set");
    assert_eq!(set.status, 200, "{}", String::from_utf8_lossy(&set.body));
    let view = set.json();
    assert_eq!(view["limits"]["max_inflight"], 1, "{view}");
    assert_eq!(view["limits"]["rate"], serde_json::Value::Null, "{view}");
    let bad = admin
        .put_json("/v1/tenants/alpha", &serde_json::json!({"max_inflight": 0}))
        .await
        .expect("bad");
    assert_eq!(
        (bad.status, bad.error_code().as_str()),
        (422, "invalid_parameter")
    );
    let refused = alpha
        .put_json("/v1/tenants/alpha", &serde_json::json!({"rate": 0}))
        .await
        .expect("not admin");
    assert_eq!(refused.status, 403);
    let listed = admin.get("/v1/tenants").await.expect("list").json();
    assert_eq!(listed["tenants"][0]["name"], "alpha", "{listed}");
    stack.stop().await.expect("stop");
}

/// Submits `n` jobs as `client` and returns their ids.
async fn batch(client: &Client, image: &[u8], n: usize, fields: &[(&str, &str)]) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        ids.push(id(&client.submit(image, fields).await.expect("submit")));
    }
    ids
}

/// How many of `ids` have succeeded.
async fn finished(client: &Client, ids: &[String]) -> usize {
    let mut n = 0;
    for job in ids {
        let state = client
            .get(&format!("/v1/jobs/{job}"))
            .await
            .expect("get")
            .json();
        n += usize::from(state["state"] == "succeeded");
    }
    n
}

/// One worker, a window of 2: tenant alpha queues 60 jobs, then beta submits one, and
/// alpha one marked interactive. Both finish while most of alpha's backlog still waits,
/// and every job of the backlog still succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenant_and_the_page_go_ahead_of_a_backlog() {
    let common = common(&format!("test-{}", Uuid::new_v4().simple()), &temp_dir());
    let mut stack = Stack::start_configured(common, |s| {
        s.auth = AuthMode::Required;
        s.fair_share_window = Some(2);
    })
    .await
    .expect("start");
    stack.add_worker("fair", 1);
    let store = stack.jobs().store.clone();
    let alpha = stack
        .client
        .with_key(&key(&store, "alpha", "jobs:write,jobs:read").await);
    let beta = stack
        .client
        .with_key(&key(&store, "beta", "jobs:write,jobs:read").await);
    let image = photo("china.jpg");
    let slow = [("op", "blur"), ("sigma", "20")];
    let backlog = batch(&alpha, &image, 60, &slow).await;

    // Beta's one job waits behind at most alpha's window, not its backlog.
    let before = finished(&alpha, &backlog).await;
    let held = store.in_flight("alpha").await.expect("count").held;
    assert!(held >= 10, "only {held} of alpha's jobs are held back");
    let theirs = batch(&beta, &image, 1, &slow).await;
    let done = beta.wait_terminal(&theirs[0]).await.expect("beta");
    assert_eq!(done["state"], "succeeded");
    let ahead = finished(&alpha, &backlog).await - before;
    println!("beta's job waited for {ahead} of alpha's jobs ({held} were held)");
    assert!(ahead <= 8, "beta waited behind {ahead} of alpha's jobs");

    // Alpha's own interactive job goes ahead of alpha's held bulk jobs.
    let before = finished(&alpha, &backlog).await;
    let held = store.in_flight("alpha").await.expect("count").held;
    assert!(held >= 5, "only {held} of alpha's jobs are held back");
    let interactive = [("op", "blur"), ("sigma", "20"), ("priority", "interactive")];
    let page = batch(&alpha, &image, 1, &interactive).await;
    let done = alpha.wait_terminal(&page[0]).await.expect("interactive");
    assert_eq!(done["state"], "succeeded");
    let ahead = finished(&alpha, &backlog).await - before;
    println!("the interactive job waited for {ahead} bulk jobs ({held} were held)");
    assert!(
        ahead <= 8,
        "the interactive job waited behind {ahead} bulk jobs"
    );

    for job in &backlog {
        let done = alpha.wait_terminal(job).await.expect("backlog");
        assert_eq!(done["state"], "succeeded", "{done}");
    }
    assert_eq!(store.in_flight("alpha").await.expect("count").held, 0);
    stack.stop().await.expect("stop");
}
