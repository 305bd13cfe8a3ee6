//! Webhooks against a real local HTTP receiver: signed deliveries that survive a
//! gateway restart between the job's end and the delivery, callbacks to disallowed
//! addresses refused at submit, each tenant's deliveries signed with its own secret,
//! which verifies none of another tenant's, and a slow receiver that does not hold up
//! another's deliveries.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode, Uri},
    routing::post,
};
use hmac::{Hmac, Mac};
use pixmill_gateway::{
    auth::{self, ApiScope, AuthMode, KeyRequest},
    webhooks::sign::tenant_secret,
};
use pixmill_tests::{GatewayProcess, Stack, TIMEOUT, common, free_port, photos::photo, temp_dir};
use serde_json::Value;
use sha2::Sha256;
use uuid::Uuid;

const SECRET: &str = "a-test-secret-for-webhooks";

/// What the receiver has seen, and whether it accepts deliveries yet.
#[derive(Default)]
struct Receiver {
    accepting: bool,
    received: Vec<(HeaderMap, Bytes)>,
    refused: usize,
}

type Shared = Arc<Mutex<Receiver>>;

async fn hook(State(shared): State<Shared>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let mut r = shared.lock().expect("lock");
    if r.accepting {
        r.received.push((headers, body));
        StatusCode::OK
    } else {
        r.refused += 1;
        StatusCode::SERVICE_UNAVAILABLE
    }
}

/// Checks `t=…,v1=…` the way a receiver would, with its own HMAC keyed with `secret`
/// (its tenant's webhook secret, as text).
fn verify(secret: &str, header: &str, body: &[u8]) -> Result<i64, String> {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => v1 = Some(v.to_string()),
            _ => {}
        }
    }
    let (t, v1) = (t.ok_or("no t")?, v1.ok_or("no v1")?);
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).map_err(|e| e.to_string())?;
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if expected == v1 {
        Ok(t)
    } else {
        Err(format!("signature mismatch: {v1} != {expected}"))
    }
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_deliveries_survive_a_gateway_restart() {
    let shared: Shared = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let receiver = listener.local_addr().expect("addr");
    let hook_url = format!("http://{receiver}/hook");
    // A bare host would allow port 80 only: the receiver's port is listed.
    let allow = receiver.to_string();
    let app = Router::new()
        .route("/hook", post(hook))
        .with_state(shared.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let common = common(&format!("hooks-{}", Uuid::new_v4().simple()), &temp_dir());
    let mut stack = Stack::workers_only(common.clone()).expect("stack");
    stack.add_worker("hook-worker", 1);
    let port = free_port().expect("port");
    let env = [
        ("PIXMILL_WEBHOOK_SECRET", SECRET),
        ("PIXMILL_WEBHOOK_ALLOW", allow.as_str()),
        ("PIXMILL_SWEEP_INTERVAL_SECS", "1"),
    ];
    let gateway = GatewayProcess::start_with(&common, port, &env)
        .await
        .expect("gateway");
    let client = gateway.client.clone();

    // Callbacks to loopback or private addresses not on the allow-list are refused.
    let image = photo("flower.jpg");
    for url in [
        "http://10.0.0.1/hook".to_string(),
        "http://169.254.169.254/latest".to_string(),
        hook_url.replace("127.0.0.1", "localhost"),
        // The listed host on another port.
        format!(
            "http://127.0.0.1:{}/hook",
            receiver.port().wrapping_add(1).max(1)
        ),
    ] {
        let reply = client
            .submit(&image, &[("op", "grayscale"), ("callback_url", &url)])
            .await
            .expect("submit");
        assert_eq!(reply.status, 422, "{url}");
        assert_eq!(reply.error_code(), "callback_not_allowed", "{url}");
        println!("webhooks: {url} refused: {}", reply.error_message());
    }

    // The receiver refuses at first: the job ends, and its deliveries fail.
    let id = client
        .submit_ok(&image, &[("op", "grayscale"), ("callback_url", &hook_url)])
        .await
        .expect("submit");
    let job = client.wait_terminal(&id).await.expect("job ends");
    assert_eq!(job["state"], "succeeded");
    wait_for("a refused delivery", || {
        shared.lock().expect("lock").refused >= 1
    })
    .await;

    // The gateway dies before any delivery lands; the receiver comes up; a new gateway
    // on the same store delivers.
    gateway.kill().await.expect("kill the gateway");
    shared.lock().expect("lock").accepting = true;
    let gateway = GatewayProcess::start_with(&common, port, &env)
        .await
        .expect("gateway again");
    wait_for("a delivery", || {
        !shared.lock().expect("lock").received.is_empty()
    })
    .await;

    let (headers, body) = shared.lock().expect("lock").received[0].clone();
    // Signed with the secret of the job's tenant (`local`, the open gateway's), which
    // the tenant reads from the gateway; the master itself verifies nothing.
    let secret = tenant_secret(SECRET, "local");
    let answer = gateway
        .client
        .get("/v1/webhooks/secret")
        .await
        .expect("the secret")
        .json();
    assert_eq!(answer["tenant"], "local", "{answer}");
    assert_eq!(answer["secret"], secret.as_str(), "{answer}");
    let signature = headers["pixmill-signature"].to_str().expect("signature");
    let signed_at = verify(&secret, signature, &body).expect("the signature checks out");
    let age = pixmill_shared::now_ms() / 1000 - signed_at;
    assert!((0..120).contains(&age), "signature timestamp {age} s old");
    assert!(
        verify(&secret, signature, b"{\"tampered\":true}").is_err(),
        "a changed body fails the check"
    );
    assert!(
        verify(SECRET, signature, &body).is_err(),
        "signed with the tenant's secret, not the master"
    );
    assert_eq!(headers["pixmill-event"], "job.succeeded");
    let delivered: Value = serde_json::from_slice(&body).expect("JSON body");
    assert_eq!(delivered["id"], id.as_str());
    assert_eq!(delivered["state"], "succeeded");

    // The job record shows every attempt, ending delivered.
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let record = loop {
        let record = gateway
            .client
            .get(&format!("/v1/jobs/{id}"))
            .await
            .expect("get")
            .json();
        if record["callback"]["state"] == "delivered" {
            break record;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not marked delivered: {record}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let attempts = record["callback"]["attempts"].as_array().expect("attempts");
    println!(
        "webhooks: delivered after {} attempts: {attempts:?}",
        attempts.len()
    );
    assert!(attempts.len() >= 2, "{attempts:?}");
    assert_eq!(attempts[0]["status"], 503);
    assert_eq!(attempts.last().expect("last")["status"], 200);
    assert_eq!(
        shared.lock().expect("lock").received.len(),
        1,
        "delivered once"
    );
    gateway.kill().await.expect("stop");
    stack.stop().await.expect("stop");
}

/// Every delivery a receiver got: the path it came to, its headers and its body.
type Deliveries = Arc<Mutex<Vec<(String, HeaderMap, Bytes)>>>;

async fn record(State(seen): State<Deliveries>, uri: Uri, headers: HeaderMap, body: Bytes) {
    seen.lock()
        .expect("lock")
        .push((uri.path().to_string(), headers, body));
}

/// Two tenants, each with a receiver that knows only its own tenant's secret (read from
/// the gateway with its own key): each verifies its own tenant's deliveries, and
/// neither accepts the other's, so one receiver cannot forge deliveries to another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tenants_deliveries_verify_only_with_its_own_secret() {
    let seen: Deliveries = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let receiver = listener.local_addr().expect("addr");
    let base = format!("http://{receiver}");
    let app = Router::new()
        .route("/alpha", post(record))
        .route("/beta", post(record))
        .with_state(seen.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let common = common(&format!("hooks-{}", Uuid::new_v4().simple()), &temp_dir());
    let mut stack = Stack::start_configured(common, |s| {
        s.auth = AuthMode::Required;
        s.webhooks.allow = vec![receiver.to_string()];
    })
    .await
    .expect("start");
    stack.add_worker("hook-worker", 2);
    let master = stack
        .jobs()
        .webhooks
        .secret
        .clone()
        .expect("the stack signs webhooks");
    let store = stack.jobs().store.clone();
    let mut secrets = Vec::new();
    let mut ids = Vec::new();
    let image = photo("flower.jpg");
    for tenant in ["alpha", "beta"] {
        let request = KeyRequest {
            tenant: tenant.into(),
            scopes: ApiScope::parse_list("jobs:write,jobs:read").expect("scopes"),
            ttl: None,
            label: None,
        };
        let (key, _) = auth::issue(&store, request, pixmill_shared::now_ms())
            .await
            .expect("a key");
        let client = stack.client.with_key(&key);
        let answer = client
            .get("/v1/webhooks/secret")
            .await
            .expect("the secret")
            .json();
        assert_eq!(answer["tenant"], tenant, "{answer}");
        assert_eq!(answer["signature_header"], "Pixmill-Signature", "{answer}");
        let secret = answer["secret"].as_str().expect("a secret").to_string();
        assert_eq!(secret, tenant_secret(&master, tenant));
        let hook = format!("{base}/{tenant}");
        ids.push(
            client
                .submit_ok(&image, &[("op", "grayscale"), ("callback_url", &hook)])
                .await
                .expect("submit"),
        );
        secrets.push((tenant, secret));
    }
    assert_ne!(secrets[0].1, secrets[1].1, "each tenant has its own secret");
    wait_for("both deliveries", || seen.lock().expect("lock").len() >= 2).await;

    let deliveries = seen.lock().expect("lock").clone();
    for ((tenant, own), id) in secrets.iter().zip(&ids) {
        let (_, headers, body) = deliveries
            .iter()
            .find(|(path, ..)| path == &format!("/{tenant}"))
            .unwrap_or_else(|| panic!("no delivery to {tenant}'s receiver"));
        let delivered: Value = serde_json::from_slice(body).expect("JSON body");
        assert_eq!(delivered["id"], id.as_str());
        let signature = headers["pixmill-signature"].to_str().expect("signature");
        verify(own, signature, body)
            .unwrap_or_else(|e| panic!("{tenant}'s receiver rejects its own delivery: {e}"));
        for (other, theirs) in secrets.iter().filter(|(t, _)| t != tenant) {
            assert!(
                verify(theirs, signature, body).is_err(),
                "{other}'s receiver would accept {tenant}'s delivery"
            );
        }
        assert!(verify(&master, signature, body).is_err(), "not the master");
    }
    // A receiver that knows its own secret cannot sign for another: beta's receiver
    // signing alpha's delivery body gets a signature alpha's receiver rejects.
    let (_, _, alpha_body) = deliveries
        .iter()
        .find(|(path, ..)| path == "/alpha")
        .expect("alpha's delivery");
    let now = pixmill_shared::now_ms() / 1000;
    let forged = pixmill_gateway::webhooks::sign::signature(&secrets[1].1, now, alpha_body);
    assert!(verify(&secrets[1].1, &forged, alpha_body).is_ok());
    assert!(
        verify(&secrets[0].1, &forged, alpha_body).is_err(),
        "alpha's receiver accepts a delivery signed by beta's"
    );
    stack.stop().await.expect("stop");
}

/// A receiver that answers 200 after `delay`, noting when each job's delivery arrived
/// and how many requests it held at once.
struct Timed {
    delay: Duration,
    in_flight: AtomicUsize,
    most_at_once: AtomicUsize,
    delivered: Mutex<Vec<(String, Instant)>>,
}

async fn timed_hook(State(r): State<Arc<Timed>>, body: Bytes) -> StatusCode {
    let now = r.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    r.most_at_once.fetch_max(now, Ordering::SeqCst);
    tokio::time::sleep(r.delay).await;
    r.in_flight.fetch_sub(1, Ordering::SeqCst);
    let record: Value = serde_json::from_slice(&body).unwrap_or_default();
    let id = record["id"].as_str().unwrap_or_default().to_string();
    r.delivered.lock().expect("lock").push((id, Instant::now()));
    StatusCode::OK
}

async fn timed_receiver(delay: Duration) -> (Arc<Timed>, SocketAddr) {
    let state = Arc::new(Timed {
        delay,
        in_flight: AtomicUsize::new(0),
        most_at_once: AtomicUsize::new(0),
        delivered: Mutex::new(Vec::new()),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = Router::new()
        .route("/hook", post(timed_hook))
        .with_state(state.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (state, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_receiver_does_not_hold_up_other_callbacks() {
    const SLOW_JOBS: usize = 6;
    let slow_delay = Duration::from_secs(3);
    let (slow, slow_addr) = timed_receiver(slow_delay).await;
    let (fast, fast_addr) = timed_receiver(Duration::ZERO).await;
    let common = common(
        &format!("hooks-slow-{}", Uuid::new_v4().simple()),
        &temp_dir(),
    );
    let mut stack = Stack::start_configured(common, |s| {
        s.webhooks.allow = vec![slow_addr.to_string(), fast_addr.to_string()];
        // Above the slow receiver's 3 s, so its deliveries succeed, slowly.
        s.webhooks.timeout = Duration::from_secs(10);
    })
    .await
    .expect("stack");
    stack.add_worker("hooks-slow-worker", 2);
    let client = stack.client.clone();
    let image = photo("flower.jpg");

    let slow_url = format!("http://{slow_addr}/hook");
    let mut slow_ids = Vec::new();
    for _ in 0..SLOW_JOBS {
        let id = client
            .submit_ok(&image, &[("op", "grayscale"), ("callback_url", &slow_url)])
            .await
            .expect("submit");
        slow_ids.push(id);
    }
    for id in &slow_ids {
        client.wait_terminal(id).await.expect("slow job ends");
    }
    // The slow receiver is busy with the first deliveries.
    wait_for("the slow receiver to be busy", || {
        slow.in_flight.load(Ordering::SeqCst) > 0
    })
    .await;

    let fast_url = format!("http://{fast_addr}/hook");
    let fast_id = client
        .submit_ok(&image, &[("op", "grayscale"), ("callback_url", &fast_url)])
        .await
        .expect("submit");
    client.wait_terminal(&fast_id).await.expect("fast job ends");
    let ended = Instant::now();
    wait_for("the fast delivery", || {
        !fast.delivered.lock().expect("lock").is_empty()
    })
    .await;
    let waited = ended.elapsed();
    let slow_done = slow.delivered.lock().expect("lock").len();
    println!(
        "webhooks: fast receiver served {waited:?} after its job ended, \
         with {slow_done} of {SLOW_JOBS} slow deliveries done"
    );
    // One pass a second, plus the POST: well under one slow request, let alone all six.
    assert!(waited < slow_delay, "the fast delivery waited {waited:?}");
    assert!(
        slow_done < SLOW_JOBS,
        "the fast delivery waited for the slow ones"
    );
    assert_eq!(fast.delivered.lock().expect("lock")[0].0, fast_id);

    // Every slow one arrives once, never more than two at a time.
    wait_for("every slow delivery", || {
        slow.delivered.lock().expect("lock").len() >= SLOW_JOBS
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut got: Vec<String> = slow
        .delivered
        .lock()
        .expect("lock")
        .iter()
        .map(|(id, _)| id.clone())
        .collect();
    got.sort();
    slow_ids.sort();
    assert_eq!(got, slow_ids, "each slow job delivered exactly once");
    let most = slow.most_at_once.load(Ordering::SeqCst);
    assert!(most <= 2, "{most} deliveries at once to one receiver");
    for id in &slow_ids {
        let record = client
            .get(&format!("/v1/jobs/{id}"))
            .await
            .expect("get")
            .json();
        assert_eq!(record["callback"]["state"], "delivered", "{record}");
        assert_eq!(
            record["callback"]["attempts"].as_array().map(Vec::len),
            Some(1)
        );
    }
    stack.stop().await.expect("stop");
}
