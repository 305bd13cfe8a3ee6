//! `GET /v1/stats`: the operations panel's figures, as JSON.
//!
//! Throughput, failure rate and processing-time percentiles come from the task store
//! (so every gateway on one database shows the same figures); the queue depth and the
//! workers online come from the broker (the jobs queue's consumer count: one consumer
//! per connected worker process).

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use serde::Serialize;

use crate::{
    queue_depth::{OpQueue, QueueDepth},
    store::{Finished, JobState, Store, StoreError},
};

/// Most finished jobs one stats request reads.
const SAMPLE: u32 = 20_000;

/// The JSON body of `GET /v1/stats`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stats {
    /// The window the job figures cover, in seconds.
    pub window_secs: u64,
    /// The jobs queue, as last read from the broker (None before the first read).
    pub queue: Option<QueueDepth>,
    /// Worker processes consuming the jobs queue (its consumer count).
    pub workers_online: Option<u64>,
    /// Jobs that succeeded or failed in the window.
    pub finished: u64,
    pub succeeded: u64,
    pub failed: u64,
    /// Finished jobs per minute over the window.
    pub jobs_per_minute: f64,
    /// Failed / finished over the window (0 when nothing finished).
    pub failure_rate: f64,
    /// Processing time of the window's successful jobs, in milliseconds.
    pub processing_ms_p50: Option<u64>,
    pub processing_ms_p95: Option<u64>,
    /// True when the window held more jobs than one request reads; the figures then
    /// cover the newest ones.
    pub sampled: bool,
    /// The window's jobs by op (a job of several ops counts for each), and every
    /// registered custom op with its queue, even one with no jobs.
    pub ops: Vec<OpStats>,
}

/// One op's jobs over the window, and for a custom op its queue.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OpStats {
    pub op: String,
    /// Registered in `PIXMILL_OPS_FILE` and served on a queue of its own.
    pub custom: bool,
    /// Jobs using the op that succeeded or failed in the window.
    pub finished: u64,
    pub succeeded: u64,
    pub failed: u64,
    /// The op's queue (custom ops; built-in ops share the jobs queue).
    pub queue: Option<String>,
    /// Its messages waiting, and its consumers (one per worker process that serves the
    /// op), as last read from the broker.
    pub ready: Option<u64>,
    pub consumers: Option<u64>,
    /// Set when no worker consumes the queue: its jobs wait until one starts.
    pub warning: Option<String>,
}

/// The per-op figures: jobs by op from `rows`, and every custom op of `queues`.
fn by_op(rows: &[Finished], queues: &[OpQueue]) -> Vec<OpStats> {
    let mut ops: Vec<OpStats> = Vec::new();
    let entry = |ops: &mut Vec<OpStats>, op: &str| -> usize {
        if let Some(i) = ops.iter().position(|o| o.op == op) {
            return i;
        }
        let queue = queues.iter().find(|q| q.op == op);
        ops.push(OpStats {
            op: op.to_string(),
            custom: queue.is_some(),
            finished: 0,
            succeeded: 0,
            failed: 0,
            queue: queue.map(|q| q.queue.clone()),
            ready: queue.and_then(|q| q.ready),
            consumers: queue.and_then(|q| q.consumers),
            warning: queue.filter(|q| q.consumers == Some(0)).map(|q| {
                format!(
                    "no worker consumes {}: jobs of the custom op {} wait until one starts",
                    q.queue, q.op
                )
            }),
        });
        ops.len() - 1
    };
    for q in queues {
        entry(&mut ops, &q.op);
    }
    for row in rows {
        for op in &row.ops {
            let i = entry(&mut ops, op);
            ops[i].finished += 1;
            if row.state == JobState::Failed {
                ops[i].failed += 1;
            } else {
                ops[i].succeeded += 1;
            }
        }
    }
    ops.sort_by(|a, b| b.custom.cmp(&a.custom).then_with(|| a.op.cmp(&b.op)));
    ops
}

/// The `q`-quantile (0..=1) of sorted values, nearest rank.
fn quantile(sorted: &[u64], q: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// Computes the stats over the last `window_secs`.
pub async fn compute(
    store: &Store,
    queue: Option<QueueDepth>,
    op_queues: &[OpQueue],
    window_secs: u64,
) -> Result<Stats, StoreError> {
    let since = pixmill_shared::now_ms() - i64::try_from(window_secs * 1000).unwrap_or(i64::MAX);
    let rows = store.recently_finished(since, SAMPLE).await?;
    let failed = rows.iter().filter(|r| r.state == JobState::Failed).count() as u64;
    let finished = rows.len() as u64;
    let mut processing: Vec<u64> = rows
        .iter()
        .filter(|r| r.state == JobState::Succeeded)
        .filter_map(|r| r.processing_ms)
        .collect();
    processing.sort_unstable();
    Ok(Stats {
        window_secs,
        workers_online: queue.as_ref().map(|q| q.consumers),
        queue,
        finished,
        succeeded: finished - failed,
        failed,
        jobs_per_minute: finished as f64 * 60.0 / window_secs.max(1) as f64,
        failure_rate: if finished == 0 {
            0.0
        } else {
            failed as f64 / finished as f64
        },
        processing_ms_p50: quantile(&processing, 0.5),
        processing_ms_p95: quantile(&processing, 0.95),
        sampled: finished >= u64::from(SAMPLE),
        ops: by_op(&rows, op_queues),
    })
}

/// How long a computed answer is given again for the same window: the page's panel, and
/// every other caller, read the store at most once a second per window.
pub const CACHE_FOR: Duration = Duration::from_secs(1);

/// The answers of the last second, by window. Shared by every request of one gateway.
#[derive(Debug, Clone, Default)]
pub struct Cache {
    answers: Arc<Mutex<HashMap<u64, (Instant, Stats)>>>,
    /// How often the store was read: the cache's misses.
    computed: Arc<AtomicU64>,
}

impl Cache {
    /// The stats over the last `window_secs`: computed at most [`CACHE_FOR`] ago, or now.
    pub async fn get(
        &self,
        store: &Store,
        queue: Option<QueueDepth>,
        op_queues: &[OpQueue],
        window_secs: u64,
    ) -> Result<Stats, StoreError> {
        if let Some(stats) = self.fresh(window_secs) {
            return Ok(stats);
        }
        let stats = compute(store, queue, op_queues, window_secs).await?;
        self.computed.fetch_add(1, Ordering::Relaxed);
        let mut answers = self.answers.lock().unwrap_or_else(|e| e.into_inner());
        // Expired answers go, so at most a second's worth of windows is kept.
        answers.retain(|_, (at, _)| at.elapsed() < CACHE_FOR);
        answers.insert(window_secs, (Instant::now(), stats.clone()));
        Ok(stats)
    }

    /// How many answers were computed from the store (not given from the cache).
    pub fn computed(&self) -> u64 {
        self.computed.load(Ordering::Relaxed)
    }

    fn fresh(&self, window_secs: u64) -> Option<Stats> {
        let answers = self.answers.lock().unwrap_or_else(|e| e.into_inner());
        answers
            .get(&window_secs)
            .filter(|(at, _)| at.elapsed() < CACHE_FOR)
            .map(|(_, stats)| stats.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two calls within the second read the store once; a job that finished between
    /// them shows only once the answer expired. Other windows are their own answers.
    #[tokio::test]
    async fn answers_are_kept_for_a_second_per_window() {
        let dir = std::env::temp_dir().join(format!("pixmill-stats-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let store = crate::store::open(&crate::store::DatabaseUrl::Sqlite(dir.join("s.db")))
            .await
            .expect("store");
        let cache = Cache::default();
        let first = cache.get(&store, None, &[], 300).await.expect("stats");
        assert_eq!((first.finished, cache.computed()), (0, 1));
        let again = cache.get(&store, None, &[], 300).await.expect("stats");
        assert_eq!((again, cache.computed()), (first.clone(), 1));
        cache.get(&store, None, &[], 600).await.expect("stats");
        assert_eq!(cache.computed(), 2, "another window is another answer");
        tokio::time::sleep(CACHE_FOR).await;
        cache.get(&store, None, &[], 300).await.expect("stats");
        assert_eq!(cache.computed(), 3, "an expired answer is computed again");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn jobs_are_counted_by_op_and_an_unserved_op_is_flagged() {
        let row = |state, ops: &[&str]| Finished {
            state,
            processing_ms: Some(5),
            ops: ops.iter().map(|o| o.to_string()).collect(),
        };
        let rows = [
            row(JobState::Succeeded, &["grayscale", "posterize"]),
            row(JobState::Failed, &["posterize"]),
            row(JobState::Succeeded, &["blur"]),
        ];
        let queues = [
            OpQueue {
                op: "posterize".into(),
                queue: "pixmill.op.posterize".into(),
                ready: Some(3),
                consumers: Some(2),
            },
            OpQueue {
                op: "threshold".into(),
                queue: "pixmill.op.threshold".into(),
                ready: Some(7),
                consumers: Some(0),
            },
        ];
        let ops = by_op(&rows, &queues);
        let names: Vec<&str> = ops.iter().map(|o| o.op.as_str()).collect();
        assert_eq!(names, ["posterize", "threshold", "blur", "grayscale"]);
        assert_eq!(
            (ops[0].finished, ops[0].succeeded, ops[0].failed),
            (2, 1, 1)
        );
        assert_eq!(
            (ops[0].consumers, ops[0].warning.as_deref()),
            (Some(2), None)
        );
        assert_eq!(ops[1].finished, 0);
        let warning = ops[1].warning.as_deref().expect("no consumer: a warning");
        assert!(warning.contains("pixmill.op.threshold"), "{warning}");
        assert!(!ops[2].custom && ops[2].queue.is_none());
    }

    #[test]
    fn nearest_rank_quantiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(quantile(&v, 0.5), Some(50));
        assert_eq!(quantile(&v, 0.95), Some(95));
        assert_eq!(quantile(&[7], 0.95), Some(7));
        assert_eq!(quantile(&[], 0.5), None);
    }
}
