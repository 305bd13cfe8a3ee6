//! The gateway's background tasks (reply consumer, notice listener, sweeper, webhook
//! deliveries, queue-depth reader), each reporting when it exits, so `/readyz` and the
//! `pixmill_background_task_up` gauge know when one has died.

use std::{
    collections::BTreeMap,
    future::Future,
    sync::{Arc, Mutex},
};

use metrics::gauge;
use pixmill_shared::metrics::names;
use tokio::task::JoinHandle;
use tracing::{error, info};

/// Which tasks are running.
#[derive(Debug, Clone, Default)]
pub struct TaskHealth(Arc<Mutex<BTreeMap<&'static str, bool>>>);

impl TaskHealth {
    /// Spawns `task` under `name`, marking it up now and down when it ends. A task that
    /// ends while `stopping` is false ended on its own: that is logged as an error.
    pub fn spawn(
        &self,
        name: &'static str,
        stopping: tokio_util::sync::CancellationToken,
        task: impl Future<Output = ()> + Send + 'static,
    ) -> JoinHandle<()> {
        self.set(name, true);
        let health = self.clone();
        tokio::spawn(async move {
            let outcome = tokio::spawn(task).await;
            health.set(name, false);
            match outcome {
                Err(e) if e.is_panic() => error!(task = name, "background task panicked"),
                _ if !stopping.is_cancelled() => {
                    error!(task = name, "background task exited on its own");
                }
                _ => info!(task = name, "background task stopped"),
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

    /// True when every task is running.
    pub fn all_up(&self) -> bool {
        self.snapshot().values().all(|up| *up)
    }

    fn set(&self, name: &'static str, up: bool) {
        gauge!(names::TASK_UP, "task" => name).set(if up { 1.0 } else { 0.0 });
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(name, up);
    }
}
