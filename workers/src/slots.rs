//! The job slots: one long-lived thread per slot runs the CPU work of jobs.
//!
//! Dedicated threads rather than tokio's blocking pool, for two reasons. A job's
//! buffers (several megabytes each) are always allocated by the same few threads, so
//! the allocator keeps one arena per slot instead of one per pool thread a job happened
//! to land on, and the worker's memory stays flat. And a job's time limit starts when
//! a slot starts it, not while it waits for one.
//!
//! Each slot also hands its jobs' image buffers on from one job to the next
//! ([`crate::buffers`]), and gives them back after [`buffers::IDLE`] without a job.

use std::{
    panic::{AssertUnwindSafe, catch_unwind},
    sync::{
        Arc, Mutex,
        mpsc::{self, RecvTimeoutError},
    },
    time::Duration,
};

use metrics::gauge;
use pixmill_shared::metrics::names;
use tokio::sync::oneshot;

use crate::buffers;

type Task = Box<dyn FnOnce() + Send>;

/// Why a job's work did not return a value.
#[derive(Debug, thiserror::Error)]
pub enum SlotError {
    #[error("the work ran past its time limit")]
    TimedOut,
    #[error("the work panicked: {0}")]
    Panicked(String),
    #[error("the slots are shut down")]
    Closed,
}

/// A fixed set of threads fed from one queue. Cloning shares the same threads; they
/// exit once every clone is dropped and the queue is empty.
#[derive(Clone)]
pub struct Slots {
    queue: mpsc::Sender<Task>,
}

impl Slots {
    /// Starts `count` threads; `worker` labels their busy-slot gauge. Each keeps up to
    /// `keep` bytes of its jobs' image buffers for its next job.
    pub fn new(count: usize, worker: &str, keep: usize) -> std::io::Result<Self> {
        let (queue, tasks) = mpsc::channel::<Task>();
        let tasks = Arc::new(Mutex::new(tasks));
        let count = count.max(1);
        gauge!(names::WORKER_SLOTS, "worker" => worker.to_string()).set(count as f64);
        for i in 0..count {
            let tasks = tasks.clone();
            let busy = gauge!(names::WORKER_SLOTS_BUSY, "worker" => worker.to_string());
            std::thread::Builder::new()
                .name(format!("pixmill-slot-{i}"))
                .spawn(move || {
                    buffers::enable(keep);
                    loop {
                        // The lock is held only while waiting for the next task. The
                        // wait is bounded so that every idle slot, not only the one
                        // holding the lock, soon gets its turn to give its buffers back.
                        let next = match tasks.lock() {
                            Ok(receiver) => receiver.recv_timeout(buffers::IDLE),
                            Err(_) => break,
                        };
                        match next {
                            Ok(task) => {
                                busy.increment(1);
                                task();
                                buffers::job_done();
                                busy.decrement(1);
                            }
                            Err(RecvTimeoutError::Timeout) => buffers::release(),
                            Err(RecvTimeoutError::Disconnected) => break,
                        }
                    }
                    buffers::release();
                })?;
        }
        Ok(Self { queue })
    }

    /// Runs `work` on a slot and waits for it, at most `limit` from when it starts. A
    /// panic is caught and reported, and the slot goes on with the next job. Work that
    /// runs past the limit cannot be stopped: it finishes in the background, holding
    /// its slot until then.
    pub async fn run<T, F>(&self, limit: Duration, work: F) -> Result<T, SlotError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        self.run_then(limit, work, || {})
            .await
            .map(|(value, _)| value)
    }

    /// Like [`Slots::run`], calling `on_start` when a slot starts the work, and
    /// returning when that was along with the value.
    pub async fn run_then<T, F, S>(
        &self,
        limit: Duration,
        work: F,
        on_start: S,
    ) -> Result<(T, tokio::time::Instant), SlotError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
        S: FnOnce(),
    {
        let (started_tx, started) = oneshot::channel::<()>();
        let (done_tx, done) = oneshot::channel();
        let task: Task = Box::new(move || {
            let _ = started_tx.send(());
            let _ = done_tx.send(catch_unwind(AssertUnwindSafe(work)));
        });
        self.queue.send(task).map_err(|_| SlotError::Closed)?;
        started.await.map_err(|_| SlotError::Closed)?;
        let at = tokio::time::Instant::now();
        on_start();
        match tokio::time::timeout(limit, done).await {
            Err(_) => Err(SlotError::TimedOut),
            Ok(Err(_)) => Err(SlotError::Closed),
            Ok(Ok(Err(panic))) => Err(SlotError::Panicked(
                panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "no message".into()),
            )),
            Ok(Ok(Ok(value))) => Ok((value, at)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn work_runs_on_the_slot_threads_and_returns() {
        let slots = Slots::new(2, "test", 0).expect("slots");
        let name = slots
            .run(Duration::from_secs(5), || {
                std::thread::current().name().map(str::to_owned)
            })
            .await
            .expect("run");
        assert!(name.is_some_and(|n| n.starts_with("pixmill-slot-")));
    }

    #[tokio::test]
    async fn a_panic_is_reported_and_the_slot_lives_on() {
        let slots = Slots::new(1, "test", 0).expect("slots");
        let err = slots
            .run(Duration::from_secs(5), || -> u8 { panic!("decoder bug") })
            .await
            .expect_err("panicked");
        assert!(
            matches!(err, SlotError::Panicked(ref m) if m == "decoder bug"),
            "{err}"
        );
        let v = slots
            .run(Duration::from_secs(5), || 7)
            .await
            .expect("next job");
        assert_eq!(v, 7);
    }

    #[tokio::test]
    async fn the_time_limit_starts_when_a_slot_starts_the_work() {
        let slots = Slots::new(1, "test", 0).expect("slots");
        let ran = Arc::new(AtomicUsize::new(0));
        // The first job holds the only slot for 300 ms; the second, limited to 200 ms,
        // waits for the slot and then finishes in time.
        let first = {
            let (slots, ran) = (slots.clone(), ran.clone());
            tokio::spawn(async move {
                slots
                    .run(Duration::from_secs(5), move || {
                        std::thread::sleep(Duration::from_millis(300));
                        ran.fetch_add(1, Ordering::SeqCst);
                    })
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        let second = slots.run(Duration::from_millis(200), || 1).await;
        assert_eq!(second.expect("in time"), 1);
        first.await.expect("join").expect("first");
        let late = slots
            .run(Duration::from_millis(50), || {
                std::thread::sleep(Duration::from_millis(300));
            })
            .await;
        assert!(matches!(late, Err(SlotError::TimedOut)));
        assert_eq!(ran.load(Ordering::SeqCst), 1);
    }
}
