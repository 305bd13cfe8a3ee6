//! Run marks: how a worker tells a job that kills workers from a job a broker failover
//! handed back.
//!
//! The broker counts every return of a delivery in `x-delivery-count`: a worker that
//! died, and just as much a worker alive and well whose connection went with a node
//! that failed over. That count says nothing about crashes. So a worker that takes a
//! job *handed out again* leaves a mark in the blob store while it runs it
//! ([`keys::run_mark`]), and removes it when it finishes the job, hands it back, or
//! loses its broker connection while alive. Only a worker that dies leaves its mark
//! behind. The next worker counts the marks earlier deliveries of the message left: at
//! `PIXMILL_CRASH_LIMIT` the job is answered `worker_crashed` instead of being run again.
//!
//! A first delivery leaves no mark, so the fast path costs nothing: a poisonous job
//! takes down at most the crash limit plus one worker. Marks are only ever read on
//! redeliveries.

use std::{collections::HashSet, sync::Mutex};

use bytes::Bytes;
use futures_util::future::join_all;
use pixmill_shared::{BlobError, Blobs, keys};
use tracing::warn;
use uuid::Uuid;

use crate::decision::Attempt;

/// The marks of one worker process: the store they live in, and those it holds now.
#[derive(Debug)]
pub struct Marks {
    blobs: Blobs,
    held: Mutex<HashSet<String>>,
}

impl Marks {
    /// Marks in `blobs`.
    pub fn new(blobs: Blobs) -> Self {
        Self {
            blobs,
            held: Mutex::default(),
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The marks earlier deliveries of this message left behind: one per worker that
    /// died running it. Empty for a first delivery, without asking the store.
    pub async fn left_behind(&self, id: Uuid, attempt: Attempt) -> Result<Vec<String>, BlobError> {
        let keys: Vec<String> = (1..attempt.redeliveries)
            .map(|delivery| keys::run_mark(id, attempt.retries, delivery))
            .collect();
        let found = join_all(keys.iter().map(|key| self.blobs.exists(key))).await;
        let mut left = Vec::new();
        for (key, exists) in keys.into_iter().zip(found) {
            if exists? {
                left.push(key);
            }
        }
        Ok(left)
    }

    /// Leaves this delivery's mark, to stay behind if this worker dies running the job.
    /// A first delivery leaves none.
    pub async fn leave(&self, id: Uuid, attempt: Attempt) -> Result<Option<String>, BlobError> {
        if !attempt.is_redelivery() {
            return Ok(None);
        }
        let key = keys::run_mark(id, attempt.retries, attempt.redeliveries);
        self.held().insert(key.clone());
        if let Err(e) = self.blobs.put(&key, Bytes::new()).await {
            self.held().remove(&key);
            return Err(e);
        }
        Ok(Some(key))
    }

    /// Removes marks: this worker's own when it is done with the job (alive), and those
    /// of dead workers once the job needs them no more. A mark that cannot be removed
    /// is logged: at worst it counts one death too many later.
    pub async fn remove(&self, keys: impl IntoIterator<Item = String>) {
        for key in keys {
            if let Err(e) = self.blobs.delete(&key).await {
                warn!(key, error = %e, "could not remove a run mark");
            }
            self.held().remove(&key);
        }
    }

    /// Removes every mark this worker still holds: its jobs in hand were cut off (the
    /// broker connection was lost, or shutdown's grace ran out) while it stayed alive,
    /// so none of them is a death.
    pub async fn remove_held(&self) {
        let held: Vec<String> = self.held().iter().cloned().collect();
        self.remove(held).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pixmill_shared::blobs::folder::FolderStore;

    fn marks() -> (Marks, tempfile_dir::Dir) {
        let dir = tempfile_dir::Dir::new();
        let blobs = Blobs::new(FolderStore::open(dir.path().to_path_buf()).expect("folder"));
        (Marks::new(blobs), dir)
    }

    mod tempfile_dir {
        /// A fresh folder under the system's temporary directory, removed on drop.
        pub struct Dir(std::path::PathBuf);

        impl Dir {
            pub fn new() -> Self {
                let path = std::env::temp_dir().join(format!("marks-{}", uuid::Uuid::new_v4()));
                std::fs::create_dir_all(&path).expect("temp dir");
                Self(path)
            }

            pub fn path(&self) -> &std::path::Path {
                &self.0
            }
        }

        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    fn delivery(redeliveries: u32) -> Attempt {
        Attempt {
            retries: 0,
            redeliveries,
        }
    }

    #[tokio::test]
    async fn a_first_delivery_leaves_and_finds_nothing() {
        let (marks, _dir) = marks();
        let id = Uuid::new_v4();
        assert_eq!(marks.leave(id, delivery(0)).await.expect("leave"), None);
        assert!(
            marks
                .left_behind(id, delivery(0))
                .await
                .expect("count")
                .is_empty()
        );
    }

    #[tokio::test]
    async fn only_marks_of_dead_workers_are_counted() {
        let (marks, _dir) = marks();
        let id = Uuid::new_v4();
        // Delivery 1's worker died: its mark stays.
        let dead = marks
            .leave(id, delivery(1))
            .await
            .expect("leave")
            .expect("key");
        marks.held().clear();
        // Delivery 2's worker lost its connection but lived: it removes its mark.
        assert_eq!(
            marks.left_behind(id, delivery(2)).await.expect("count"),
            std::slice::from_ref(&dead)
        );
        marks.leave(id, delivery(2)).await.expect("leave");
        marks.remove_held().await;
        // Delivery 3 counts one death, not two.
        let left = marks.left_behind(id, delivery(3)).await.expect("count");
        assert_eq!(left, [dead]);
        // Another retry's marks are another message's.
        let retried = Attempt {
            retries: 1,
            redeliveries: 3,
        };
        assert!(
            marks
                .left_behind(id, retried)
                .await
                .expect("count")
                .is_empty()
        );
        marks.remove(left).await;
        assert!(
            marks
                .left_behind(id, delivery(3))
                .await
                .expect("count")
                .is_empty()
        );
    }
}
