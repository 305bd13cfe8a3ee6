//! Tenants' limits: how many jobs each may have in flight, and how fast it may submit.
//!
//! - **In flight** (`PIXMILL_TENANT_MAX_INFLIGHT`): jobs `queued` or `running`. Counted
//!   by the task store in the transaction that inserts the job, under a per-tenant lock,
//!   so the quota holds across any number of gateways on PostgreSQL.
//! - **Rate** (`PIXMILL_TENANT_RATE`, `PIXMILL_TENANT_BURST`): submits per second, a GCRA
//!   (token bucket) per tenant *in each gateway*. With N gateways behind a balancer a
//!   tenant may submit up to N times the rate; the in-flight quota is the shared bound.
//!
//! A tenant's own limits (`pixmill-gateway tenants set`, `PUT /v1/tenants/{name}`)
//! override the defaults; they are read from the store at most every
//! [`LIMITS_CACHE`], so a change reaches every gateway within that time.
//!
//! Both answer a refused submit with 429, `Retry-After` and the `RateLimit-Policy` and
//! `RateLimit` fields of the IETF draft (draft-ietf-httpapi-ratelimit-headers): a policy
//! named `submits` (quota `q` per window `w` seconds) and one named `in-flight` (quota
//! unit `concurrent-requests`).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crate::{
    error::{ApiCode, ApiError},
    store::{Store, TenantLimits},
};

/// How long a tenant's own limits are cached.
pub const LIMITS_CACHE: Duration = Duration::from_secs(2);

/// Buckets kept before idle ones (full again) are dropped.
const MAX_BUCKETS: usize = 10_000;

/// A submit rate: `per_sec` on average, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_sec: f64,
    pub burst: u32,
}

impl Rate {
    /// The `RateLimit-Policy` item: `burst` submits per the seconds it takes to earn them
    /// back (rounded up, so the advertised rate is never above the real one).
    pub fn policy(&self) -> String {
        let window = (f64::from(self.burst) / self.per_sec).ceil().max(1.0);
        format!("\"submits\";q={};w={window}", self.burst)
    }
}

/// The limits that apply to one tenant now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Effective {
    pub max_inflight: u32,
    /// None: no rate limit.
    pub rate: Option<Rate>,
}

/// The gateway's defaults, from `PIXMILL_TENANT_*`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Defaults {
    pub max_inflight: u32,
    pub rate: Option<Rate>,
}

impl Default for Defaults {
    fn default() -> Self {
        Self {
            max_inflight: DEFAULT_MAX_INFLIGHT,
            rate: None,
        }
    }
}

/// `PIXMILL_TENANT_MAX_INFLIGHT`'s default: a tenant can queue a large batch, but not
/// the whole broker queue (`PIXMILL_MAX_QUEUED`, 100 000 by default).
pub const DEFAULT_MAX_INFLIGHT: u32 = 10_000;

impl Defaults {
    /// The limits of a tenant with `own` settings (None: none of its own).
    pub fn apply(&self, own: Option<&TenantLimits>) -> Effective {
        let Some(own) = own else {
            return Effective {
                max_inflight: self.max_inflight,
                rate: self.rate,
            };
        };
        let rate = match (own.rate, self.rate) {
            // A rate of 0 of its own: this tenant is not rate limited.
            (Some(r), _) if r <= 0.0 => None,
            (Some(per_sec), default) => Some(Rate {
                per_sec,
                burst: own
                    .burst
                    .or(default.map(|d| d.burst))
                    .unwrap_or_else(|| default_burst(per_sec)),
            }),
            (None, Some(default)) => Some(Rate {
                burst: own.burst.unwrap_or(default.burst),
                ..default
            }),
            (None, None) => None,
        };
        Effective {
            max_inflight: own.max_inflight.unwrap_or(self.max_inflight),
            rate,
        }
    }
}

/// The burst when none is set: two seconds' worth, at least one.
pub fn default_burst(per_sec: f64) -> u32 {
    // Saturates: a burst above u32::MAX is no limit anyway.
    (per_sec * 2.0).ceil().clamp(1.0, f64::from(u32::MAX)) as u32
}

/// What a rate check found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RateCheck {
    /// Within the rate: `remaining` more submits now, the bucket full again in `reset`.
    Allowed { remaining: u32, reset: Duration },
    /// Over the rate: the next submit is allowed after `retry_after`.
    Limited { retry_after: Duration },
}

/// A tenant's own settings as read at that instant.
type Cached = (Instant, Option<TenantLimits>);

/// Tenants' limits: defaults, cached own settings and the rate buckets. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Tenants {
    store: Store,
    defaults: Defaults,
    /// Own settings as last read, and when.
    cache: Arc<Mutex<HashMap<String, Cached>>>,
    /// Each tenant's theoretical arrival time (GCRA), in seconds since `epoch`.
    buckets: Arc<Mutex<HashMap<String, f64>>>,
    epoch: Instant,
}

impl Tenants {
    pub fn new(store: Store, defaults: Defaults) -> Self {
        Self {
            store,
            defaults,
            cache: Arc::default(),
            buckets: Arc::default(),
            epoch: Instant::now(),
        }
    }

    /// The defaults, from the environment.
    pub fn defaults(&self) -> Defaults {
        self.defaults
    }

    /// The limits that apply to `tenant`, its own settings read at most
    /// [`LIMITS_CACHE`] ago. When the store cannot be read, the settings last read (or
    /// the defaults) apply: the submit then meets the outage where it is stored, and is
    /// answered 503 there, after its body is read.
    pub async fn limits(&self, tenant: &str) -> Effective {
        let cached = lock(&self.cache)
            .get(tenant)
            .filter(|(at, _)| at.elapsed() < LIMITS_CACHE)
            .map(|(_, own)| own.clone());
        let own = match cached {
            Some(own) => own,
            None => {
                let own = match self.store.get_tenant(tenant).await {
                    Ok(own) => own,
                    Err(e) => {
                        tracing::warn!(tenant, error = %e, "could not read the tenant's limits; using the last known");
                        return self.defaults.apply(
                            lock(&self.cache)
                                .get(tenant)
                                .and_then(|(_, own)| own.as_ref()),
                        );
                    }
                };
                let mut cache = lock(&self.cache);
                if cache.len() >= MAX_BUCKETS {
                    cache.retain(|_, (at, _)| at.elapsed() < LIMITS_CACHE);
                }
                cache.insert(tenant.to_string(), (Instant::now(), own.clone()));
                own
            }
        };
        self.defaults.apply(own.as_ref())
    }

    /// Drops the cached settings of `tenant`, after this gateway changed them.
    pub fn forget(&self, tenant: &str) {
        lock(&self.cache).remove(tenant);
    }

    /// Takes one submit from `tenant`'s bucket (GCRA: one submit per `1/per_sec`
    /// seconds, `burst` at once).
    pub fn take(&self, tenant: &str, rate: Rate) -> RateCheck {
        self.take_at(tenant, rate, self.epoch.elapsed().as_secs_f64())
    }

    fn take_at(&self, tenant: &str, rate: Rate, now: f64) -> RateCheck {
        let interval = 1.0 / rate.per_sec;
        let capacity = f64::from(rate.burst.max(1)) * interval;
        let mut buckets = lock(&self.buckets);
        if buckets.len() >= MAX_BUCKETS {
            buckets.retain(|_, tat| *tat > now);
        }
        let tat = buckets.get(tenant).copied().unwrap_or(now).max(now);
        let next = tat + interval;
        if next - now > capacity + 1e-9 {
            return RateCheck::Limited {
                retry_after: Duration::from_secs_f64(next - now - capacity),
            };
        }
        buckets.insert(tenant.to_string(), next);
        let used = next - now;
        RateCheck::Allowed {
            // The float is in 0..=burst, so the cast cannot wrap.
            remaining: ((capacity - used) / interval + 1e-9).floor().max(0.0) as u32,
            reset: Duration::from_secs_f64(used),
        }
    }

    /// Checks `tenant`'s submit rate: Ok with the `RateLimit` headers to send (none when
    /// the tenant has no rate limit), or the 429.
    pub fn check_rate(&self, tenant: &str, limits: &Effective) -> Result<RateHeaders, ApiError> {
        let Some(rate) = limits.rate else {
            return Ok(RateHeaders::default());
        };
        match self.take(tenant, rate) {
            RateCheck::Allowed { remaining, reset } => Ok(RateHeaders(Some((
                rate.policy(),
                format!("\"submits\";r={remaining};t={}", ceil_secs(reset)),
            )))),
            RateCheck::Limited { retry_after } => {
                let secs = ceil_secs(retry_after);
                Err(ApiError::new(
                    ApiCode::RateLimited,
                    format!(
                        "tenant {tenant:?} may submit {} jobs per second with bursts of {} \
                         (PIXMILL_TENANT_RATE, PIXMILL_TENANT_BURST); retry in {secs} s",
                        rate.per_sec, rate.burst
                    ),
                )
                .retry_after(secs)
                .rate_limit(rate.policy(), format!("\"submits\";r=0;t={secs}")))
            }
        }
    }
}

/// The 429 for a tenant at its in-flight quota.
pub fn over_quota(tenant: &str, open: u64, max: u32) -> ApiError {
    const RETRY_SECS: u32 = 2;
    ApiError::new(
        ApiCode::TenantQuotaExceeded,
        format!(
            "tenant {tenant:?} has {open} jobs queued or running, its limit \
             (PIXMILL_TENANT_MAX_INFLIGHT) is {max}; retry when some have finished"
        ),
    )
    .retry_after(RETRY_SECS)
    .rate_limit(
        format!("\"in-flight\";q={max};qu=\"concurrent-requests\""),
        format!("\"in-flight\";r=0;t={RETRY_SECS}"),
    )
}

/// The `RateLimit-Policy` and `RateLimit` values for an accepted submit, if any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RateHeaders(pub Option<(String, String)>);

/// Whole seconds, rounded up, at least 1.
fn ceil_secs(d: Duration) -> u32 {
    u32::try_from(d.as_secs() + u64::from(d.subsec_nanos() > 0))
        .unwrap_or(u32::MAX)
        .max(1)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenants() -> Tenants {
        let dir = std::env::temp_dir().join(format!("pixmill-tenants-{}", uuid::Uuid::new_v4()));
        let store: Store =
            Arc::new(crate::store::sqlite::SqliteStore::open(&dir.join("t.db")).expect("store"));
        Tenants::new(store, Defaults::default())
    }

    #[test]
    fn the_bucket_allows_the_burst_then_the_rate() {
        let t = tenants();
        let rate = Rate {
            per_sec: 2.0,
            burst: 3,
        };
        let remaining: Vec<_> = (0..3)
            .map(|_| match t.take_at("a", rate, 10.0) {
                RateCheck::Allowed { remaining, .. } => remaining,
                RateCheck::Limited { .. } => panic!("within the burst"),
            })
            .collect();
        assert_eq!(remaining, [2, 1, 0]);
        let RateCheck::Limited { retry_after } = t.take_at("a", rate, 10.0) else {
            panic!("the fourth at once is over the burst");
        };
        assert!(
            (retry_after.as_secs_f64() - 0.5).abs() < 1e-6,
            "{retry_after:?}"
        );
        // Another tenant has its own bucket.
        assert!(matches!(
            t.take_at("b", rate, 10.0),
            RateCheck::Allowed { remaining: 2, .. }
        ));
        // Half a second later one more is earned, and only one.
        assert!(matches!(
            t.take_at("a", rate, 10.5),
            RateCheck::Allowed { remaining: 0, .. }
        ));
        assert!(matches!(
            t.take_at("a", rate, 10.5),
            RateCheck::Limited { .. }
        ));
        // Long idle: the bucket is full again, not fuller.
        assert!(matches!(
            t.take_at("a", rate, 100.0),
            RateCheck::Allowed { remaining: 2, .. }
        ));
    }

    #[test]
    fn own_limits_override_the_defaults_field_by_field() {
        let defaults = Defaults {
            max_inflight: 100,
            rate: Some(Rate {
                per_sec: 10.0,
                burst: 20,
            }),
        };
        assert_eq!(
            defaults.apply(None),
            Effective {
                max_inflight: 100,
                rate: defaults.rate
            }
        );
        let own = |max, rate, burst| TenantLimits {
            name: "a".into(),
            max_inflight: max,
            rate,
            burst,
            updated_at: 0,
        };
        let e = defaults.apply(Some(&own(Some(5), None, None)));
        assert_eq!((e.max_inflight, e.rate), (5, defaults.rate));
        let e = defaults.apply(Some(&own(None, Some(1.0), None)));
        assert_eq!(
            e.rate,
            Some(Rate {
                per_sec: 1.0,
                burst: 20
            })
        );
        assert_eq!(defaults.apply(Some(&own(None, Some(0.0), None))).rate, None);
        let none = Defaults {
            max_inflight: 7,
            rate: None,
        };
        assert_eq!(
            none.apply(Some(&own(None, Some(4.0), None))).rate,
            Some(Rate {
                per_sec: 4.0,
                burst: 8
            })
        );
    }

    #[test]
    fn headers_follow_the_draft() {
        let rate = Rate {
            per_sec: 10.0,
            burst: 25,
        };
        assert_eq!(rate.policy(), "\"submits\";q=25;w=3");
        let t = tenants();
        let limits = Effective {
            max_inflight: 1,
            rate: Some(Rate {
                per_sec: 1.0,
                burst: 1,
            }),
        };
        let RateHeaders(Some((policy, now))) = t.check_rate("a", &limits).expect("first") else {
            panic!("a rate-limited tenant gets headers");
        };
        assert_eq!(policy, "\"submits\";q=1;w=1");
        assert_eq!(now, "\"submits\";r=0;t=1");
        let refused = t.check_rate("a", &limits).expect_err("second");
        assert_eq!(refused.code(), ApiCode::RateLimited);
        assert!(
            refused.message().contains("PIXMILL_TENANT_RATE"),
            "{refused:?}"
        );
        let quota = over_quota("a", 50, 50);
        assert_eq!(quota.code(), ApiCode::TenantQuotaExceeded);
        assert!(quota.message().contains("PIXMILL_TENANT_MAX_INFLIGHT"));
    }
}
