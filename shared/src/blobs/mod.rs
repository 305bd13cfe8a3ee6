//! The claim-check blob store: image bytes live here, messages carry only keys.
//!
//! One interface, [`BlobStore`], two backends chosen by `PIXMILL_BLOB_URL`:
//!
//! - `file://PATH` ([`folder`]): a local folder, the one-machine default. Writes are
//!   synced and renamed into place, so a reader never sees half a blob.
//! - `s3://BUCKET[/PREFIX]` ([`s3`]): any S3-compatible object store, reached with the
//!   standard `AWS_*` variables. Workers on other machines need only this and the broker.
//!
//! Callers hold a [`Blobs`] handle (cheap to clone) and name blobs through [`keys`], the
//! one module that knows how keys are spelled.

use std::{fmt, sync::Arc, time::Duration};

use bytes::Bytes;
use futures_util::stream::BoxStream;
use uuid::Uuid;

pub mod folder;
pub mod keys;
pub mod s3;

/// Why a blob operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// No blob under that key.
    #[error("no blob under key {0:?}")]
    NotFound(String),
    /// The key is not one [`keys`] could have made (it could escape the store).
    #[error("invalid blob key {0:?}")]
    InvalidKey(String),
    /// The store could not be reached or failed; worth retrying later.
    #[error("blob store unavailable: {0}")]
    Unavailable(String),
}

impl BlobError {
    /// True for a missing key, the one error that retrying cannot fix.
    pub fn is_not_found(&self) -> bool {
        matches!(self, BlobError::NotFound(_))
    }
}

/// A blob opened for streaming: its length and its bytes, chunk by chunk.
pub struct BlobStream {
    /// Total length in bytes (for `Content-Length`).
    pub len: u64,
    /// The bytes; an error mid-stream aborts the response.
    pub body: BoxStream<'static, Result<Bytes, BlobError>>,
}

impl fmt::Debug for BlobStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobStream")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

/// What every backend offers. Keys are checked by [`keys::validate`] before use.
#[async_trait::async_trait]
pub trait BlobStore: Send + Sync + fmt::Debug + 'static {
    /// Where the blobs live, for log lines (never includes credentials).
    fn describe(&self) -> String;

    /// Stores `bytes` under `key`, replacing any blob there. Returns once it is durable.
    async fn put(&self, key: &str, bytes: Bytes) -> Result<(), BlobError>;

    /// Reads a whole blob.
    async fn get(&self, key: &str) -> Result<Bytes, BlobError>;

    /// Opens a blob for streaming, so a download never holds the whole blob in memory.
    async fn stream(&self, key: &str) -> Result<BlobStream, BlobError>;

    /// True when `key` exists.
    async fn exists(&self, key: &str) -> Result<bool, BlobError>;

    /// Removes a blob; a missing one is not an error.
    async fn delete(&self, key: &str) -> Result<(), BlobError>;

    /// A URL that lets anyone holding it `GET` the blob for `ttl`, if the backend can
    /// make one (S3 can, a folder cannot).
    async fn presign_get(&self, key: &str, ttl: Duration) -> Result<Option<String>, BlobError> {
        let _ = (key, ttl);
        Ok(None)
    }
}

/// A shared handle to the configured blob store, plus the helpers built on top of it.
#[derive(Debug, Clone)]
pub struct Blobs(Arc<dyn BlobStore>);

impl Blobs {
    /// Wraps a backend.
    pub fn new(store: impl BlobStore) -> Self {
        Self(Arc::new(store))
    }

    /// Opens the backend a `PIXMILL_BLOB_URL` names (see [`BlobUrl`]).
    pub fn open(url: &BlobUrl) -> Result<Self, BlobError> {
        Ok(match url {
            BlobUrl::Folder(path) => Self::new(folder::FolderStore::open(path.clone())?),
            BlobUrl::S3 { bucket, prefix } => Self::new(s3::S3Store::from_env(bucket, prefix)?),
        })
    }

    /// Records that job `id` was cancelled. Workers need only the broker and the blob
    /// store, so the cancellation lives here, persistently, not in a worker's memory.
    pub async fn mark_cancelled(&self, id: Uuid) -> Result<(), BlobError> {
        self.put(&keys::cancel(id), Bytes::new()).await
    }

    /// True when job `id` carries a cancellation marker.
    pub async fn is_cancelled(&self, id: Uuid) -> Result<bool, BlobError> {
        self.exists(&keys::cancel(id)).await
    }

    /// Removes job `id`'s cancellation marker (the cancel lost a race with a worker).
    pub async fn clear_cancelled(&self, id: Uuid) -> Result<(), BlobError> {
        self.delete(&keys::cancel(id)).await
    }
}

impl std::ops::Deref for Blobs {
    type Target = dyn BlobStore;

    fn deref(&self) -> &Self::Target {
        self.0.as_ref()
    }
}

/// A parsed `PIXMILL_BLOB_URL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobUrl {
    /// `file://PATH` (a relative path is taken from the working directory).
    Folder(std::path::PathBuf),
    /// `s3://BUCKET[/PREFIX]`.
    S3 { bucket: String, prefix: String },
}

impl std::str::FromStr for BlobUrl {
    type Err = String;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        if let Some(path) = url.strip_prefix("file://") {
            if path.is_empty() {
                return Err("file:// needs a folder, e.g. file://var/data/blobs".into());
            }
            Ok(BlobUrl::Folder(path.into()))
        } else if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let valid_bucket = (3..=63).contains(&bucket.len())
                && bucket
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.".contains(&b));
            if !valid_bucket {
                return Err(format!(
                    "{bucket:?} is not an S3 bucket name (3-63 lowercase letters, digits, '-' or '.')"
                ));
            }
            let prefix = prefix.trim_matches('/');
            if !prefix.is_empty() && keys::validate(prefix).is_err() {
                return Err(format!(
                    "the prefix {prefix:?} may use letters, digits, '-', '_', '.' and '/' only"
                ));
            }
            Ok(BlobUrl::S3 {
                bucket: bucket.into(),
                prefix: prefix.into(),
            })
        } else {
            Err("expected file://PATH or s3://BUCKET[/PREFIX]".into())
        }
    }
}

impl fmt::Display for BlobUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlobUrl::Folder(path) => write!(f, "file://{}", path.display()),
            BlobUrl::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            BlobUrl::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_urls_parse_and_print_back() {
        for url in ["file://var/data/blobs", "s3://pixmill", "s3://pixmill/a/b"] {
            let parsed: BlobUrl = url.parse().expect(url);
            assert_eq!(parsed.to_string(), url);
        }
        assert_eq!(
            "s3://bucket/pre/".parse::<BlobUrl>(),
            Ok(BlobUrl::S3 {
                bucket: "bucket".into(),
                prefix: "pre".into()
            })
        );
        for bad in [
            "var/data",
            "file://",
            "s3://B",
            "s3://x",
            "s3://ok-bucket/a b",
            "http://x",
        ] {
            assert!(bad.parse::<BlobUrl>().is_err(), "{bad}");
        }
    }
}
