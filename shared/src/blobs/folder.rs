//! The folder backend (`file://PATH`): the one-machine default, shared by the gateway
//! and every worker on the machine.
//!
//! A write goes to a temporary file that is synced and then renamed, and the rename is
//! synced with its directory: a reader never sees half a blob, a crash never leaves one
//! behind under its real key, and a blob `put` returned for survives a power cut.

use std::{io, path::PathBuf};

use bytes::Bytes;
use futures_util::TryStreamExt;
use tokio_util::io::ReaderStream;
use uuid::Uuid;

use super::{BlobError, BlobStore, BlobStream, keys};

/// A folder of blobs addressed by relative keys such as `inputs/<job id>`.
#[derive(Debug, Clone)]
pub struct FolderStore {
    /// Folder that holds `inputs/`, `results/`, `cancelled/`, `running/`, `work/` and
    /// `tmp/`.
    root: PathBuf,
}

impl FolderStore {
    /// Opens (creating if needed) the store under `root`.
    pub fn open(root: PathBuf) -> Result<Self, BlobError> {
        for dir in ["inputs", "results", "cancelled", "running", "tmp", "work"] {
            std::fs::create_dir_all(root.join(dir)).map_err(|e| {
                BlobError::Unavailable(format!("cannot create {}: {e}", root.join(dir).display()))
            })?;
        }
        Ok(Self { root })
    }

    fn path(&self, key: &str) -> Result<PathBuf, BlobError> {
        keys::validate(key)?;
        Ok(self.root.join(key))
    }

    fn put_blocking(&self, key: &str, bytes: &[u8]) -> io::Result<()> {
        use std::io::Write;
        let path = self.root.join(key);
        let tmp = self.root.join("tmp").join(Uuid::new_v4().to_string());
        let result = (|| {
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(bytes)?;
            file.sync_data()?;
            drop(file);
            std::fs::rename(&tmp, &path)?;
            // The rename lives in the directory: without syncing it, a power cut can
            // leave the key missing although `put` returned.
            sync_dir(&path)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }
}

/// Syncs the directory holding `path`, so an entry created or renamed in it survives
/// a power cut.
fn sync_dir(path: &std::path::Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) => std::fs::File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

/// Files up to this size are read in one go by [`FolderStore::stream`].
const WHOLE_READ_MAX: u64 = 1 << 20;
/// The chunk size [`FolderStore::stream`] streams larger files in.
const STREAM_CHUNK: usize = 256 << 10;

/// A file opened for streaming: read whole, or left open to stream.
enum Opened {
    Whole(Bytes),
    Large(std::fs::File, u64),
}

/// Maps an I/O error on `key` to the store's error.
fn io_error(key: &str, e: io::Error) -> BlobError {
    if e.kind() == io::ErrorKind::NotFound {
        BlobError::NotFound(key.to_string())
    } else {
        BlobError::Unavailable(format!("{key}: {e}"))
    }
}

#[async_trait::async_trait]
impl BlobStore for FolderStore {
    fn describe(&self) -> String {
        format!("folder {}", self.root.display())
    }

    async fn put(&self, key: &str, bytes: Bytes) -> Result<(), BlobError> {
        self.path(key)?;
        let (store, owned) = (self.clone(), key.to_string());
        tokio::task::spawn_blocking(move || store.put_blocking(&owned, &bytes))
            .await
            .map_err(|e| BlobError::Unavailable(e.to_string()))?
            .map_err(|e| io_error(key, e))
    }

    async fn get(&self, key: &str) -> Result<Bytes, BlobError> {
        tokio::fs::read(self.path(key)?)
            .await
            .map(Bytes::from)
            .map_err(|e| io_error(key, e))
    }

    async fn stream(&self, key: &str) -> Result<BlobStream, BlobError> {
        let path = self.path(key)?;
        // Most results are well under 1 MiB: one blocking call opens, sizes and reads
        // such a file whole, where a streamed read would hop to the blocking pool once
        // per 4 KiB chunk. Larger files are streamed in 256 KiB chunks, so a download
        // never holds more than that.
        let opened = tokio::task::spawn_blocking(move || -> io::Result<Opened> {
            use std::io::Read;
            let mut file = std::fs::File::open(path)?;
            let len = file.metadata()?.len();
            if len <= WHOLE_READ_MAX {
                let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
                file.read_to_end(&mut bytes)?;
                Ok(Opened::Whole(Bytes::from(bytes)))
            } else {
                Ok(Opened::Large(file, len))
            }
        })
        .await
        .map_err(|e| BlobError::Unavailable(e.to_string()))?
        .map_err(|e| io_error(key, e))?;
        Ok(match opened {
            Opened::Whole(bytes) => BlobStream {
                len: bytes.len() as u64,
                body: Box::pin(futures_util::stream::once(async move { Ok(bytes) })),
            },
            Opened::Large(file, len) => {
                let owned = key.to_string();
                let body =
                    ReaderStream::with_capacity(tokio::fs::File::from_std(file), STREAM_CHUNK)
                        .map_err(move |e| io_error(&owned, e));
                BlobStream {
                    len,
                    body: Box::pin(body),
                }
            }
        })
    }

    async fn exists(&self, key: &str) -> Result<bool, BlobError> {
        tokio::fs::try_exists(self.path(key)?)
            .await
            .map_err(|e| io_error(key, e))
    }

    async fn delete(&self, key: &str) -> Result<(), BlobError> {
        match tokio::fs::remove_file(self.path(key)?).await {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other.map_err(|e| io_error(key, e)),
        }
    }
}
