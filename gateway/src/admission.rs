//! Bounds on what requests may hold at once, so no one client can use up the gateway:
//! the bytes of uploads buffered in memory ([`UploadBudget`]) and the long-polls and
//! event streams waiting on jobs ([`Watchers`]). Beyond a bound a request is answered
//! 503 `server_busy` with `Retry-After` at once, rather than queued: a queue of bodies
//! or watchers would hold the very memory and sockets the bound is there to protect.

use std::{sync::Arc, time::Duration};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{ApiCode, ApiError};

/// Default `PIXMILL_HEADER_TIMEOUT_SECS`.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default `PIXMILL_MAX_CONNECTIONS`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Default `PIXMILL_UPLOAD_BUDGET_BYTES`: 256 MiB, ten uploads at the 25 MiB limit.
pub const DEFAULT_UPLOAD_BUDGET_BYTES: u64 = 256 * 1024 * 1024;
/// Default `PIXMILL_MAX_WATCHERS`.
pub const DEFAULT_MAX_WATCHERS: usize = 4096;
/// `Retry-After` of a `server_busy` answer: uploads finish and watchers end within
/// seconds, so a short wait is enough.
const RETRY_AFTER_SECS: u32 = 2;

/// The gateway's bounds, as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// `PIXMILL_HEADER_TIMEOUT_SECS`: a request's headers must arrive within this, and a
    /// connection idle between requests is closed after it.
    pub header_timeout: Duration,
    /// `PIXMILL_MAX_CONNECTIONS`: open connections at most; beyond it new ones wait in
    /// the listen backlog until one closes.
    pub max_connections: usize,
    /// `PIXMILL_UPLOAD_BUDGET_BYTES`: upload bytes all requests together may buffer.
    pub upload_budget_bytes: u64,
    /// `PIXMILL_MAX_WATCHERS`: long-polls and event streams open at once.
    pub max_watchers: usize,
}

impl Default for Bounds {
    fn default() -> Self {
        Self {
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            upload_budget_bytes: DEFAULT_UPLOAD_BUDGET_BYTES,
            max_watchers: DEFAULT_MAX_WATCHERS,
        }
    }
}

/// The bounds a request is admitted under; cheap to clone.
#[derive(Debug, Clone)]
pub struct Admission {
    pub uploads: UploadBudget,
    pub watchers: Watchers,
}

impl Admission {
    pub fn new(bounds: &Bounds) -> Self {
        Self {
            uploads: UploadBudget::new(bounds.upload_budget_bytes),
            watchers: Watchers::new(bounds.max_watchers),
        }
    }
}

impl Default for Admission {
    fn default() -> Self {
        Self::new(&Bounds::default())
    }
}

/// `PIXMILL_UPLOAD_BUDGET_BYTES`: how many bytes of upload bodies all requests together
/// may hold in memory. One permit is one byte.
#[derive(Debug, Clone)]
pub struct UploadBudget {
    bytes: Arc<Semaphore>,
    total: u64,
}

impl UploadBudget {
    pub fn new(total: u64) -> Self {
        let permits = usize::try_from(total)
            .unwrap_or(usize::MAX)
            .min(Semaphore::MAX_PERMITS);
        Self {
            bytes: Arc::new(Semaphore::new(permits)),
            total,
        }
    }

    /// An empty reservation, grown with [`Reservation::add`] as the body comes in.
    pub fn reservation(&self) -> Reservation {
        Reservation {
            budget: self.clone(),
            held: None,
            len: 0,
        }
    }

    /// Bytes not reserved by any upload now.
    pub fn available(&self) -> usize {
        self.bytes.available_permits()
    }

    fn exhausted(&self) -> ApiError {
        ApiError::new(
            ApiCode::ServerBusy,
            format!(
                "the gateway holds as many uploads as it may (PIXMILL_UPLOAD_BUDGET_BYTES, {} bytes); retry shortly",
                self.total
            ),
        )
        .retry_after(RETRY_AFTER_SECS)
    }
}

/// Bytes of the upload budget held by one request; given back when dropped, which is
/// when the request is done with its upload (after the blob is stored, or on refusal).
#[derive(Debug)]
pub struct Reservation {
    budget: UploadBudget,
    held: Option<OwnedSemaphorePermit>,
    len: usize,
}

impl Reservation {
    /// Reserves `more` bytes besides those held, or answers `server_busy` when the
    /// budget has no room. Never waits.
    pub fn add(&mut self, more: usize) -> Result<(), ApiError> {
        if more == 0 {
            return Ok(());
        }
        let more_u32 = u32::try_from(more).map_err(|_| self.budget.exhausted())?;
        let permit = self
            .budget
            .bytes
            .clone()
            .try_acquire_many_owned(more_u32)
            .map_err(|_| self.budget.exhausted())?;
        match &mut self.held {
            Some(held) => held.merge(permit),
            None => self.held = Some(permit),
        }
        self.len += more;
        Ok(())
    }

    /// Bytes held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// `PIXMILL_MAX_WATCHERS`: how many long-polls and event streams may wait at once.
#[derive(Debug, Clone)]
pub struct Watchers {
    slots: Arc<Semaphore>,
    max: usize,
}

/// One watcher's slot, given back when dropped.
#[derive(Debug)]
pub struct WatcherSlot(#[allow(dead_code)] OwnedSemaphorePermit);

impl Watchers {
    pub fn new(max: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max.min(Semaphore::MAX_PERMITS))),
            max,
        }
    }

    /// A slot, or `server_busy` when `max` watchers wait already. Never waits.
    pub fn admit(&self) -> Result<WatcherSlot, ApiError> {
        self.slots
            .clone()
            .try_acquire_owned()
            .map(WatcherSlot)
            .map_err(|_| {
                ApiError::new(
                    ApiCode::ServerBusy,
                    format!(
                        "{} long-polls and event streams are open, the limit (PIXMILL_MAX_WATCHERS); retry shortly, or poll without ?wait",
                        self.max
                    ),
                )
                .retry_after(RETRY_AFTER_SECS)
            })
    }

    /// Watchers waiting now.
    pub fn active(&self) -> usize {
        self.max
            .min(Semaphore::MAX_PERMITS)
            .saturating_sub(self.slots.available_permits())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_share_the_budget_and_give_it_back() {
        let budget = UploadBudget::new(100);
        let mut a = budget.reservation();
        a.add(40).expect("room");
        a.add(20).expect("more room");
        assert_eq!(a.len(), 60);
        let mut b = budget.reservation();
        let busy = b.add(50).expect_err("over the budget");
        assert_eq!(busy.code(), ApiCode::ServerBusy);
        assert!(busy.to_string().contains("PIXMILL_UPLOAD_BUDGET_BYTES"));
        assert!(b.is_empty(), "a refused reservation holds nothing");
        b.add(40).expect("the rest");
        assert_eq!(budget.available(), 0);
        drop(a);
        assert_eq!(budget.available(), 60);
        drop(b);
        assert_eq!(budget.available(), 100);
    }

    #[test]
    fn watchers_are_capped() {
        let watchers = Watchers::new(2);
        let one = watchers.admit().expect("room");
        let _two = watchers.admit().expect("room");
        let busy = watchers.admit().expect_err("full");
        assert_eq!(busy.code(), ApiCode::ServerBusy);
        assert_eq!(watchers.active(), 2);
        drop(one);
        watchers.admit().expect("a slot came back");
    }
}
