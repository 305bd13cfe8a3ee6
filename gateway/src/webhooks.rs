//! Webhooks: when a job with a `callback_url` ends, the gateway POSTs its record there.
//!
//! - **Signed.** `Pixmill-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>` over
//!   `"<t>.<body>"` with `PIXMILL_WEBHOOK_SECRET`, as Stripe signs its events: the
//!   receiver recomputes it, and rejects old timestamps to stop replays.
//! - **Durable.** Pending deliveries live in the task store. A pass every second claims
//!   the due ones (a lease, so N gateways never send the same attempt twice), sends,
//!   and records each attempt in the job; failures back off (1 s, 2 s, 4 s … up to
//!   10 min) until `PIXMILL_WEBHOOK_MAX_ATTEMPTS`. A gateway restart loses nothing.
//! - **Guarded.** The URL is someone else's choice, so: http(s) only; no redirects
//!   followed; a short timeout; and loopback, private, link-local and other non-public
//!   addresses are refused, at submit and again at every delivery (the address is
//!   pinned for the request, so DNS cannot swap it in between), unless the host is on
//!   `PIXMILL_WEBHOOK_ALLOW`. When that allow-list is set, only its hosts are allowed.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    error::{ApiCode, ApiError},
    jobs::Jobs,
    routes::view,
    store::{Job, StoreError, Sweep},
};

/// The webhook settings (`PIXMILL_WEBHOOK_*`).
#[derive(Clone, Default)]
pub struct WebhookSettings {
    /// `PIXMILL_WEBHOOK_SECRET`: signs every delivery. Without it, callbacks are refused.
    pub secret: Option<String>,
    /// `PIXMILL_WEBHOOK_ALLOW`: hosts (`name` or `name:port`) callbacks may go to.
    pub allow: Vec<String>,
    /// `PIXMILL_WEBHOOK_TIMEOUT_SECS`: one delivery's budget, connect included.
    pub timeout: Duration,
    /// `PIXMILL_WEBHOOK_MAX_ATTEMPTS`: deliveries tried before giving up.
    pub max_attempts: u32,
}

impl std::fmt::Debug for WebhookSettings {
    /// Never prints the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSettings")
            .field("secret", &self.secret.as_ref().map(|_| "***"))
            .field("allow", &self.allow)
            .field("timeout", &self.timeout)
            .field("max_attempts", &self.max_attempts)
            .finish()
    }
}

/// Where a job's callback stands, as the job record shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Callback {
    pub url: String,
    /// `pending` (until delivered or given up), `delivered` or `failed`.
    pub state: String,
    /// Every attempt so far, oldest first.
    pub attempts: Vec<Attempt>,
}

/// One delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// When it was made (ms since the epoch).
    pub at_ms: i64,
    /// The receiver's HTTP status, if it answered.
    pub status: Option<u16>,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

/// Checks a `callback_url` at submit time: the answer is a 422 naming the rule broken.
pub async fn check_url(settings: &WebhookSettings, raw: &str) -> Result<String, ApiError> {
    let refused = |why: String| {
        ApiError::new(
            ApiCode::CallbackNotAllowed,
            format!("callback_url {raw:?} is refused: {why}"),
        )
    };
    if settings.secret.is_none() {
        return Err(refused(
            "webhooks are off on this gateway (set PIXMILL_WEBHOOK_SECRET to sign them)".into(),
        ));
    }
    if raw.len() > 2048 {
        return Err(refused("it is longer than 2048 characters".into()));
    }
    resolve(settings, raw).await.map_err(refused)?;
    Ok(raw.to_string())
}

/// Parses and resolves a callback URL under the rules above; returns the URL, its host
/// and the one address to connect to.
async fn resolve(
    settings: &WebhookSettings,
    raw: &str,
) -> Result<(reqwest::Url, String, SocketAddr), String> {
    let url = reqwest::Url::parse(raw).map_err(|e| format!("not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("only http and https are allowed".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("credentials in the URL are not allowed".into());
    }
    let host = url.host_str().ok_or("it has no host")?.to_string();
    let port = url.port_or_known_default().ok_or("it has no port")?;
    let listed = settings.allow.iter().any(|a| {
        a.eq_ignore_ascii_case(&host) || a.eq_ignore_ascii_case(&format!("{host}:{port}"))
    });
    if !settings.allow.is_empty() && !listed {
        return Err(format!("{host} is not on PIXMILL_WEBHOOK_ALLOW"));
    }
    let lookup = tokio::time::timeout(
        Duration::from_secs(3),
        tokio::net::lookup_host((host.trim_matches(['[', ']']), port)),
    )
    .await
    .map_err(|_| format!("{host} did not resolve within 3 s"))?
    .map_err(|e| format!("{host} does not resolve ({e})"))?;
    let addrs: Vec<SocketAddr> = lookup.collect();
    let first = *addrs
        .first()
        .ok_or_else(|| format!("{host} has no address"))?;
    if !listed && let Some(bad) = addrs.iter().find(|a| !is_public(a.ip())) {
        return Err(format!(
            "{host} resolves to {}, a loopback, private or otherwise non-public address \
             (name the host in PIXMILL_WEBHOOK_ALLOW to allow it)",
            bad.ip()
        ));
    }
    Ok((url, host, first))
}

/// True for an address on the public internet.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_multicast()
                || a == 0
                || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT
                || (a == 198 && (b == 18 || b == 19)) // benchmarking
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80) // link local
        }
    }
}

/// `t=<unix>,v1=<hex>`: the signature header for `body` at `timestamp`.
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("t={timestamp},v1={hex}")
}

/// The pause before attempt `n + 1` after `n` failed ones.
fn backoff(failed: usize) -> Duration {
    Duration::from_secs(1u64 << failed.min(10).saturating_sub(1)).min(Duration::from_secs(600))
}

/// Delivers due callbacks every second until `shutdown`.
pub async fn run(jobs: Jobs, settings: WebhookSettings, shutdown: CancellationToken) {
    let Some(secret) = settings.secret.clone() else {
        return shutdown.cancelled().await;
    };
    loop {
        if let Err(e) = pass(&jobs, &settings, &secret).await {
            warn!(error = %e, "webhook pass failed; trying again shortly");
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

async fn pass(jobs: &Jobs, settings: &WebhookSettings, secret: &str) -> Result<(), StoreError> {
    let now = pixmill_shared::now_ms();
    let lease = now + 60_000;
    for job in jobs.store.claim(Sweep::Webhooks, now, 50, lease).await? {
        let Some(mut callback) = job.callback.clone() else {
            continue;
        };
        let attempt = deliver(settings, secret, &job, &callback.url).await;
        let ok = attempt.status.is_some_and(|s| (200..300).contains(&s));
        callback.attempts.push(attempt.clone());
        let tried = callback.attempts.len();
        let next_at = if ok {
            callback.state = "delivered".into();
            info!(job_id = %job.id, url = %callback.url, attempts = tried, "webhook delivered");
            None
        } else if tried >= settings.max_attempts as usize {
            callback.state = "failed".into();
            warn!(job_id = %job.id, url = %callback.url, attempts = tried, "webhook given up");
            None
        } else {
            let delay = backoff(tried);
            warn!(job_id = %job.id, url = %callback.url, status = ?attempt.status,
                  error = ?attempt.error, retry_in = ?delay, "webhook delivery failed");
            Some(pixmill_shared::now_ms() + i64::try_from(delay.as_millis()).unwrap_or(0))
        };
        jobs.store
            .record_callback(job.id, &callback, next_at)
            .await?;
    }
    Ok(())
}

/// One signed POST of the job record, with the address checked and pinned.
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
    let client = match reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(settings.timeout)
        .connect_timeout(settings.timeout)
        .resolve(&host, addr)
        .build()
    {
        Ok(client) => client,
        Err(e) => return failed(e.to_string()),
    };
    let body = match serde_json::to_vec(&view(job)) {
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
        .header("pixmill-signature", signature(secret, timestamp, &body))
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
            format!("could not deliver: {e}")
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_stripe_style_and_stable() {
        // HMAC-SHA256("secret", "1700000000.{}") computed independently.
        let sig = signature("secret", 1_700_000_000, b"{}");
        assert!(sig.starts_with("t=1700000000,v1="), "{sig}");
        assert_eq!(sig.len(), "t=1700000000,v1=".len() + 64);
        assert_ne!(sig, signature("secret", 1_700_000_001, b"{}"));
        assert_ne!(sig, signature("other", 1_700_000_000, b"{}"));
    }

    #[test]
    fn only_public_addresses_pass() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(!is_public(private.parse().expect("ip")), "{private}");
        }
        for public in ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111"] {
            assert!(is_public(public.parse().expect("ip")), "{public}");
        }
    }

    #[test]
    fn backoff_doubles_up_to_ten_minutes() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(4), Duration::from_secs(8));
        assert_eq!(backoff(30), Duration::from_secs(512));
    }

    #[tokio::test]
    async fn callbacks_to_private_or_unlisted_hosts_are_refused() {
        let open = WebhookSettings {
            secret: Some("s".into()),
            ..WebhookSettings::default()
        };
        for url in [
            "http://127.0.0.1:9/hook",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]/x",
            "ftp://example.com/x",
            "http://user:pw@example.com/",
            "not a url",
        ] {
            let err = check_url(&open, url).await.expect_err(url);
            assert!(err.to_string().contains("is refused"), "{url}: {err}");
        }
        let listed = WebhookSettings {
            allow: vec!["127.0.0.1".into()],
            ..open.clone()
        };
        check_url(&listed, "http://127.0.0.1:9/hook")
            .await
            .expect("listed");
        let err = check_url(&listed, "http://localhost:9/hook")
            .await
            .expect_err("unlisted");
        assert!(err.to_string().contains("PIXMILL_WEBHOOK_ALLOW"), "{err}");
        let off = WebhookSettings::default();
        let err = check_url(&off, "http://127.0.0.1:9/")
            .await
            .expect_err("off");
        assert!(err.to_string().contains("PIXMILL_WEBHOOK_SECRET"), "{err}");
    }
}
