//! The delivery task: every second, claim the due callbacks, POST each job's record,
//! and record the attempt in the job; failures back off (1 s, 2 s, 4 s … up to 10 min)
//! until `PIXMILL_WEBHOOK_MAX_ATTEMPTS`. Each delivery is signed with the secret of the
//! job's tenant ([`tenant_secret`]).
//!
//! Deliveries run concurrently, at most [`MAX_IN_FLIGHT`] at once and at most
//! [`MAX_PER_RECEIVER`] to one receiver (host and port), so a slow receiver holds a
//! couple of slots and everyone else's callbacks keep flowing. A claimed callback whose
//! receiver is busy is handed back at once, due again shortly.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{
    WebhookSettings,
    guard::resolve,
    sign::{SIGNATURE_HEADER, signature, tenant_secret},
};
use crate::{
    store::{Attempt, Callback, CallbackState, Job, Store, StoreError, Sweep},
    view::view,
};

/// Deliveries in flight at once on one gateway, over all receivers.
pub const MAX_IN_FLIGHT: usize = 16;
/// Deliveries in flight at once on one gateway to one receiver (host and port).
pub const MAX_PER_RECEIVER: usize = 2;
/// Most callbacks claimed in one pass; those that cannot start are handed back.
const CLAIM_BATCH: u32 = 64;
/// The most a name lookup may take (see [`resolve`]).
const RESOLVE_BUDGET: Duration = Duration::from_secs(3);

/// The pause before attempt `n + 1` after `n` failed ones.
fn backoff(failed: usize) -> Duration {
    Duration::from_secs(1u64 << failed.min(10).saturating_sub(1)).min(Duration::from_secs(600))
}

/// How long a claim is held.
///
/// Every claimed callback either starts at once or is handed back in the same pass, so
/// a claim lasts as long as ONE delivery: the name lookup (at most [`RESOLVE_BUDGET`]),
/// the POST (at most `timeout`, connect included: reqwest's whole-request timeout) and
/// the write that records it. The lease is twice the first two plus 30 s for the store,
/// so it cannot run out while the delivery is still going — an expired lease would let
/// another gateway claim the callback and send it a second time. It does not depend on
/// how many callbacks a pass claims.
fn lease(timeout: Duration) -> Duration {
    (timeout + RESOLVE_BUDGET) * 2 + Duration::from_secs(30)
}

/// How long a callback whose receiver is busy waits before it is claimed again: about
/// as long as a delivery there may take, between 1 and 5 s.
fn busy_pause(timeout: Duration) -> Duration {
    timeout.clamp(Duration::from_secs(1), Duration::from_secs(5))
}

/// Deliveries in flight per receiver.
type Busy = Arc<Mutex<HashMap<String, usize>>>;

/// One receiver slot, given back when the delivery ends (even by a panic).
struct Slot {
    busy: Busy,
    receiver: String,
}

impl Slot {
    fn take(busy: &Busy, receiver: String) -> Option<Self> {
        let mut map = busy
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = map.entry(receiver.clone()).or_default();
        if *n >= MAX_PER_RECEIVER {
            return None;
        }
        *n += 1;
        Some(Self {
            busy: busy.clone(),
            receiver,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut map = self
            .busy
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = map.get_mut(&self.receiver) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.receiver);
            }
        }
    }
}

/// The receiver a callback URL names: its host and port, lowercased.
fn receiver(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => format!(
            "{}:{}",
            u.host_str().unwrap_or_default().to_ascii_lowercase(),
            u.port_or_known_default().unwrap_or_default()
        ),
        Err(_) => url.to_ascii_lowercase(),
    }
}

/// A callback URL as logs show it: without credentials, query string or fragment,
/// which may carry the receiver's tokens.
pub fn loggable(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            u.set_query(None);
            u.set_fragment(None);
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        }
        Err(_) => "(not a URL)".into(),
    }
}

/// Delivers due callbacks every second until `shutdown`, then lets the deliveries in
/// flight finish (each within its lease) so their attempts are recorded.
pub async fn run(store: Store, settings: WebhookSettings, shutdown: CancellationToken) {
    let Some(master) = settings.secret.clone() else {
        return shutdown.cancelled().await;
    };
    let busy = Busy::default();
    let mut flights = JoinSet::new();
    loop {
        while let Some(done) = flights.try_join_next() {
            if let Err(e) = done {
                warn!(error = %e, "a webhook delivery panicked; its lease will expire and it is retried");
            }
        }
        if let Err(e) = pass(&store, &settings, &master, &busy, &mut flights).await {
            warn!(error = %e, "webhook pass failed; trying again shortly");
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
    while flights.join_next().await.is_some() {}
}

/// One pass: claims what fits in the free slots and starts each delivery; `master` is
/// `PIXMILL_WEBHOOK_SECRET`, from which each tenant's secret is derived.
async fn pass(
    store: &Store,
    settings: &WebhookSettings,
    master: &str,
    busy: &Busy,
    flights: &mut JoinSet<()>,
) -> Result<(), StoreError> {
    let free = MAX_IN_FLIGHT.saturating_sub(flights.len());
    if free == 0 {
        return Ok(());
    }
    let now = pixmill_shared::now_ms();
    let lease_until = now + i64::try_from(lease(settings.timeout).as_millis()).unwrap_or(0);
    let claimed = store
        .claim(Sweep::Webhooks, now, CLAIM_BATCH, lease_until)
        .await?;
    let mut started = 0;
    for job in claimed {
        let Some(callback) = job.callback.clone() else {
            continue;
        };
        let slot = if started < free {
            Slot::take(busy, receiver(&callback.url))
        } else {
            None
        };
        let Some(slot) = slot else {
            // No slot (overall or for this receiver): hand it back, due again shortly.
            let pause = if started < free {
                busy_pause(settings.timeout)
            } else {
                Duration::from_secs(1)
            };
            let due = now + i64::try_from(pause.as_millis()).unwrap_or(1000);
            store.record_callback(job.id, &callback, Some(due)).await?;
            continue;
        };
        started += 1;
        let secret = tenant_secret(master, &job.tenant);
        let (store, settings) = (store.clone(), settings.clone());
        flights.spawn(async move {
            let _slot = slot;
            if let Err(e) = attempt(&store, &settings, &secret, &job, callback).await {
                warn!(job_id = %job.id, error = %e, "a webhook attempt could not be recorded; it is retried when its lease ends");
            }
        });
    }
    Ok(())
}

/// One delivery of `job`'s callback, recorded in the job.
async fn attempt(
    store: &Store,
    settings: &WebhookSettings,
    secret: &str,
    job: &Job,
    mut callback: Callback,
) -> Result<(), StoreError> {
    let attempt = deliver(settings, secret, job, &callback.url).await;
    let ok = attempt.status.is_some_and(|s| (200..300).contains(&s));
    callback.attempts.push(attempt.clone());
    let tried = callback.attempts.len();
    let url = loggable(&callback.url);
    let next_at = if ok {
        callback.state = CallbackState::Delivered;
        info!(job_id = %job.id, url = %url, attempts = tried, "webhook delivered");
        None
    } else if tried >= settings.max_attempts as usize {
        callback.state = CallbackState::Failed;
        warn!(job_id = %job.id, url = %url, attempts = tried, "webhook given up");
        None
    } else {
        let delay = backoff(tried);
        warn!(job_id = %job.id, url = %url, status = ?attempt.status,
              error = ?attempt.error, retry_in = ?delay, "webhook delivery failed");
        Some(pixmill_shared::now_ms() + i64::try_from(delay.as_millis()).unwrap_or(0))
    };
    store.record_callback(job.id, &callback, next_at).await
}

/// One POST of the job record signed with `secret` (the job's tenant's), with the
/// address checked and pinned.
async fn deliver(settings: &WebhookSettings, secret: &str, job: &Job, url: &str) -> Attempt {
    let at_ms = pixmill_shared::now_ms();
    let failed = |error: String| Attempt {
        at_ms,
        status: None,
        error: Some(error),
    };
    let (url, host, addr) = match resolve(settings, url).await {
        Ok(resolved) => resolved,
        Err(why) => return failed(format!("refused: {why}")),
    };
    // The connection goes to the checked address only (`resolve`), while TLS still
    // verifies the certificate against the URL's host name (SNI and the name check use
    // the URL, not the address). No proxy from the environment: a proxy would resolve
    // the host itself and undo the pinning.
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(settings.timeout)
        .connect_timeout(settings.timeout)
        .no_proxy()
        .resolve(&host, addr);
    for cert in &settings.ca_certs {
        builder = builder.add_root_certificate(cert.clone());
    }
    let client = match builder.build() {
        Ok(client) => client,
        Err(e) => return failed(e.to_string()),
    };
    let body = match serde_json::to_vec(&view(job, &job.tenant)) {
        Ok(body) => body,
        Err(e) => return failed(e.to_string()),
    };
    let timestamp = at_ms / 1000;
    let sent = client
        .post(url)
        .header("content-type", "application/json")
        .header("user-agent", "pixmill-webhook/1")
        .header("pixmill-event", format!("job.{}", job.state.as_str()))
        .header("pixmill-delivery", format!("{}-{}", job.id, at_ms))
        .header(SIGNATURE_HEADER, signature(secret, timestamp, &body))
        .body(body)
        .send()
        .await;
    match sent {
        Ok(response) => {
            let status = response.status().as_u16();
            Attempt {
                at_ms,
                status: Some(status),
                error: (!(200..300).contains(&status))
                    .then(|| format!("the receiver answered {status}")),
            }
        }
        Err(e) => failed(if e.is_timeout() {
            format!("no answer within {:?}", settings.timeout)
        } else {
            // Without the URL: its query string may hold the receiver's token.
            format!("could not deliver: {}", e.without_url())
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_ten_minutes() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(4), Duration::from_secs(8));
        assert_eq!(backoff(30), Duration::from_secs(512));
    }

    #[test]
    fn a_claim_outlasts_the_longest_delivery() {
        for secs in [1, 5, 30, 600] {
            let timeout = Duration::from_secs(secs);
            assert!(lease(timeout) > timeout + RESOLVE_BUDGET + Duration::from_secs(20));
        }
        assert_eq!(lease(Duration::from_secs(5)), Duration::from_secs(46));
    }

    #[test]
    fn receivers_are_host_and_port() {
        assert_eq!(receiver("http://Hooks.Example/a?b=c"), "hooks.example:80");
        assert_eq!(receiver("https://hooks.example/a"), "hooks.example:443");
        assert_eq!(receiver("http://[::1]:9/a"), "[::1]:9");
    }

    #[test]
    fn receiver_slots_are_limited_and_given_back() {
        let busy = Busy::default();
        let a = Slot::take(&busy, "a:80".into()).expect("first");
        let b = Slot::take(&busy, "a:80".into()).expect("second");
        assert!(
            Slot::take(&busy, "a:80".into()).is_none(),
            "a third to a:80"
        );
        let other = Slot::take(&busy, "b:80".into()).expect("another receiver");
        drop(a);
        let c = Slot::take(&busy, "a:80".into()).expect("a freed slot");
        drop((b, c, other));
        assert!(busy.lock().expect("lock").is_empty());
    }

    #[test]
    fn logged_urls_carry_no_query_or_credentials() {
        assert_eq!(
            loggable("https://user:pw@hooks.example/in?token=s3cret#frag"),
            "https://hooks.example/in"
        );
        assert_eq!(loggable("http://h:8080/a/b"), "http://h:8080/a/b");
        assert_eq!(loggable("::"), "(not a URL)");
    }
}
