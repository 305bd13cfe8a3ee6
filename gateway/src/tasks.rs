//! The gateway's background tasks (reply consumer, notice listener, sweeper, webhook
//! deliveries, queue-depth reader), each restarted when it panics or exits on its own,
//! and each reporting whether it runs, so `/readyz` and the `pixmill_background_task_up`
//! gauge know when one is down, and `pixmill_background_task_restarts_total` counts how
//! often one came back.

use std::{
    collections::BTreeMap,
    future::Future,
    sync::{Arc, Mutex},
    time::Duration,
};

use metrics::{counter, gauge};
use pixmill_shared::metrics::names;
use tokio::{task::JoinHandle, time::Instant};
use tracing::{error, info};

const MIN_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A run this long resets the backoff: the task was healthy, this failure is new.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// The text a panic carried, when it was a string.
fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(not a string)".into())
}

/// Which tasks are running.
#[derive(Debug, Clone, Default)]
pub struct TaskHealth(Arc<Mutex<BTreeMap<&'static str, bool>>>);

impl TaskHealth {
    /// Runs the task `make` builds under `name` until `stopping` is cancelled, marking
    /// it up while it runs. A run that panics or ends on its own while `stopping` is
    /// false is logged as an error, counted, and started again after a backoff of 1 s
    /// doubling to 30 s (back to 1 s after a minute of running), so one bad message or
    /// bug does not leave the gateway without a reply consumer until someone restarts it.
    pub fn spawn<F, Fut>(
        &self,
        name: &'static str,
        stopping: tokio_util::sync::CancellationToken,
        make: F,
    ) -> JoinHandle<()>
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.set(name, true);
        counter!(names::TASK_RESTARTS, "task" => name).increment(0);
        let health = self.clone();
        tokio::spawn(async move {
            let mut delay = MIN_BACKOFF;
            loop {
                health.set(name, true);
                let began = Instant::now();
                let outcome = tokio::spawn(make()).await;
                if stopping.is_cancelled() {
                    health.set(name, false);
                    info!(task = name, "background task stopped");
                    return;
                }
                health.set(name, false);
                if began.elapsed() >= HEALTHY_RUN {
                    delay = MIN_BACKOFF;
                }
                let retry_in = format!("{delay:?}");
                match outcome {
                    Err(e) if e.is_panic() => {
                        let panic = panic_message(e.into_panic());
                        error!(task = name, %panic, %retry_in, "background task panicked; restarting it");
                    }
                    _ => {
                        error!(task = name, %retry_in, "background task exited on its own; restarting it")
                    }
                }
                counter!(names::TASK_RESTARTS, "task" => name).increment(1);
                tokio::select! {
                    () = stopping.cancelled() => {
                        info!(task = name, "background task stopped");
                        return;
                    }
                    () = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(MAX_BACKOFF);
            }
        })
    }

    /// Each task and whether it is running.
    pub fn snapshot(&self) -> BTreeMap<&'static str, bool> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn set(&self, name: &'static str, up: bool) {
        gauge!(names::TASK_UP, "task" => name).set(if up { 1.0 } else { 0.0 });
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(name, up);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio_util::sync::CancellationToken;

    use super::*;

    async fn until(what: &str, check: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !check() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn a_task_that_panics_or_exits_is_restarted_and_reported_down_meanwhile() {
        let health = TaskHealth::default();
        let stop = CancellationToken::new();
        let runs = Arc::new(AtomicUsize::new(0));
        let handle = health.spawn("flaky", stop.clone(), {
            let (runs, stop) = (runs.clone(), stop.clone());
            move || {
                let (runs, stop) = (runs.clone(), stop.clone());
                async move {
                    match runs.fetch_add(1, Ordering::SeqCst) {
                        0 => panic!("the first run panics"),
                        1 => {} // the second one returns at once
                        _ => stop.cancelled().await,
                    }
                }
            }
        });
        let up = || health.snapshot().get("flaky").copied();
        until("the panic", || runs.load(Ordering::SeqCst) == 1).await;
        until("it is reported down", || up() == Some(false)).await;
        assert_eq!(
            runs.load(Ordering::SeqCst),
            1,
            "the restart waits a backoff"
        );
        until("the third run", || runs.load(Ordering::SeqCst) == 3).await;
        until("it is reported up", || up() == Some(true)).await;
        stop.cancel();
        handle.await.expect("supervisor");
        assert_eq!(up(), Some(false), "a stopped task is down");
        assert_eq!(
            runs.load(Ordering::SeqCst),
            3,
            "a stopped task is not restarted"
        );
    }
}
