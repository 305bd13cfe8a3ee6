//! Webhooks: when a job with a `callback_url` ends, the gateway POSTs its record there.
//!
//! Two halves: [`guard`] and [`sign`] are the rules a callback follows, used when a job
//! is submitted and again at every delivery; [`delivery`] is the background task that
//! sends due callbacks, which needs only the task store (where a callback's progress is
//! kept, see [`crate::store::Callback`]) and the job's [`crate::view`].
//!
//! - **Signed.** `Pixmill-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>` over
//!   `"<t>.<body>"`, as Stripe signs its events: the receiver recomputes it, and rejects
//!   old timestamps to stop replays. The key is the job's tenant's own secret, derived
//!   from `PIXMILL_WEBHOOK_SECRET` ([`sign::tenant_secret`]), so one tenant's receiver
//!   cannot forge deliveries to another's; a tenant reads its secret from
//!   `GET /v1/webhooks/secret`, an operator from `pixmill-gateway webhook-secret`.
//! - **Durable.** Pending deliveries live in the task store. A pass every second claims
//!   the due ones (a lease, so N gateways never send the same attempt twice), sends,
//!   and records each attempt in the job; failures back off (1 s, 2 s, 4 s … up to
//!   10 min) until `PIXMILL_WEBHOOK_MAX_ATTEMPTS`. A gateway restart loses nothing.
//!   Deliveries run concurrently, a few per receiver, so a slow one delays only its own
//!   callbacks; a lease outlasts the longest delivery (see [`delivery`]).
//! - **Guarded.** The URL is someone else's choice, so: http(s) only; no redirects
//!   followed; a short timeout; and loopback, private, link-local and other non-public
//!   addresses are refused, at submit and again at every delivery (the address is
//!   pinned for the request, so DNS cannot swap it in between), unless the host is on
//!   `PIXMILL_WEBHOOK_ALLOW`. When that allow-list is set, only its hosts are allowed.

use std::time::Duration;

pub mod delivery;
pub mod guard;
pub mod sign;

pub use guard::check_url;

/// The webhook settings (`PIXMILL_WEBHOOK_*`).
#[derive(Clone, Default)]
pub struct WebhookSettings {
    /// `PIXMILL_WEBHOOK_SECRET`: the master each tenant's signing secret is derived from.
    /// Without it, callbacks are refused.
    pub secret: Option<String>,
    /// `PIXMILL_WEBHOOK_ALLOW`: hosts callbacks may go to, `name` (the scheme's default
    /// port only) or `name:port` (see [`guard::allow_entry`]).
    pub allow: Vec<String>,
    /// `PIXMILL_WEBHOOK_TIMEOUT_SECS`: one delivery's budget, connect included.
    pub timeout: Duration,
    /// `PIXMILL_WEBHOOK_MAX_ATTEMPTS`: deliveries tried before giving up.
    pub max_attempts: u32,
    /// `PIXMILL_WEBHOOK_CA_FILE`: CA certificates trusted for `https://` callbacks
    /// besides the system's store.
    pub ca_certs: Vec<reqwest::Certificate>,
}

impl std::fmt::Debug for WebhookSettings {
    /// Never prints the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSettings")
            .field("secret", &self.secret.as_ref().map(|_| "***"))
            .field("allow", &self.allow)
            .field("timeout", &self.timeout)
            .field("max_attempts", &self.max_attempts)
            .field("ca_certs", &self.ca_certs.len())
            .finish()
    }
}
