//! The delivery task: every second, claim the due callbacks, POST each job's record,
//! and record the attempt in the job; failures back off (1 s, 2 s, 4 s … up to 10 min)
//! until `PIXMILL_WEBHOOK_MAX_ATTEMPTS`. Each delivery is signed with the secret of the
//! job's tenant ([`tenant_secret`]).

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{
    WebhookSettings,
    guard::resolve,
    sign::{SIGNATURE_HEADER, signature, tenant_secret},
};
use crate::{
    store::{Attempt, CallbackState, Job, Store, StoreError, Sweep},
    view::view,
};

/// The pause before attempt `n + 1` after `n` failed ones.
fn backoff(failed: usize) -> Duration {
    Duration::from_secs(1u64 << failed.min(10).saturating_sub(1)).min(Duration::from_secs(600))
}

/// Delivers due callbacks every second until `shutdown`.
pub async fn run(store: Store, settings: WebhookSettings, shutdown: CancellationToken) {
    let Some(master) = settings.secret.clone() else {
        return shutdown.cancelled().await;
    };
    loop {
        if let Err(e) = pass(&store, &settings, &master).await {
            warn!(error = %e, "webhook pass failed; trying again shortly");
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// One pass: claims the due callbacks and tries each once; `master` is
/// `PIXMILL_WEBHOOK_SECRET`, from which each tenant's secret is derived.
async fn pass(store: &Store, settings: &WebhookSettings, master: &str) -> Result<(), StoreError> {
    let now = pixmill_shared::now_ms();
    let lease = now + 60_000;
    for job in store.claim(Sweep::Webhooks, now, 50, lease).await? {
        let Some(mut callback) = job.callback.clone() else {
            continue;
        };
        let secret = tenant_secret(master, &job.tenant);
        let attempt = deliver(settings, &secret, &job, &callback.url).await;
        let ok = attempt.status.is_some_and(|s| (200..300).contains(&s));
        callback.attempts.push(attempt.clone());
        let tried = callback.attempts.len();
        let next_at = if ok {
            callback.state = CallbackState::Delivered;
            info!(job_id = %job.id, url = %callback.url, attempts = tried, "webhook delivered");
            None
        } else if tried >= settings.max_attempts as usize {
            callback.state = CallbackState::Failed;
            warn!(job_id = %job.id, url = %callback.url, attempts = tried, "webhook given up");
            None
        } else {
            let delay = backoff(tried);
            warn!(job_id = %job.id, url = %callback.url, status = ?attempt.status,
                  error = ?attempt.error, retry_in = ?delay, "webhook delivery failed");
            Some(pixmill_shared::now_ms() + i64::try_from(delay.as_millis()).unwrap_or(0))
        };
        store.record_callback(job.id, &callback, next_at).await?;
    }
    Ok(())
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
            format!("could not deliver: {e}")
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
}
