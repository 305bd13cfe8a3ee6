//! The claim-check blob store: image bytes live here, messages carry only keys.
//!
//! The default is a local folder, shared by the gateway and every worker on the machine.
//! Writes go to a temporary file that is synced and then renamed, so a reader never sees
//! half a blob and a crash never leaves one behind under its real key.

use std::{
    io,
    path::{Path, PathBuf},
};
use uuid::Uuid;

use crate::messages::OutputFormat;

/// A folder of blobs addressed by relative keys such as `inputs/<job id>`.
#[derive(Debug, Clone)]
pub struct BlobStore {
    /// Folder that holds `inputs/`, `results/` and `tmp/`.
    root: PathBuf,
}

impl BlobStore {
    /// Opens (creating if needed) the store under `root`.
    pub fn open(root: impl Into<PathBuf>) -> io::Result<Self> {
        let root = root.into();
        for dir in ["inputs", "results", "cancelled", "tmp"] {
            std::fs::create_dir_all(root.join(dir))?;
        }
        Ok(Self { root })
    }

    /// The folder this store lives in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Key of a job's uploaded image.
    pub fn input_key(id: Uuid) -> String {
        format!("inputs/{id}")
    }

    /// Key of a job's result.
    pub fn result_key(id: Uuid, format: OutputFormat) -> String {
        format!("results/{id}.{}", format.extension())
    }

    /// Key of the marker that tells workers a job was cancelled. Workers need only the
    /// broker and the blob store, so the cancellation lives here, persistently, rather
    /// than in any worker's memory.
    pub fn cancel_key(id: Uuid) -> String {
        format!("cancelled/{id}")
    }

    /// True when `key` exists.
    pub async fn exists(&self, key: &str) -> io::Result<bool> {
        tokio::fs::try_exists(self.path(key)?).await
    }

    /// Stores `bytes` under `key`, atomically.
    pub async fn put(&self, key: &str, bytes: &[u8]) -> io::Result<()> {
        self.put_owned(key, bytes.to_vec()).await
    }

    /// [`BlobStore::put`] for bytes the caller hands over: written on a blocking thread
    /// straight from `bytes`, where `put` must first copy the slice it borrows.
    pub async fn put_owned<B>(&self, key: &str, bytes: B) -> io::Result<()>
    where
        B: AsRef<[u8]> + Send + 'static,
    {
        let (store, key) = (self.clone(), key.to_string());
        tokio::task::spawn_blocking(move || store.put_blocking(&key, bytes.as_ref()))
            .await
            .map_err(io::Error::other)?
    }

    /// Stores `bytes` under `key` from a blocking thread: written to a temporary file,
    /// synced, then renamed into place. Every `put` ends here; a worker calls it
    /// directly to write its result from the thread that encoded it, with no copy.
    pub fn put_blocking(&self, key: &str, bytes: &[u8]) -> io::Result<()> {
        use std::io::Write;
        let path = self.path(key)?;
        let tmp = self.root.join("tmp").join(Uuid::new_v4().to_string());
        let result = (|| {
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(bytes)?;
            file.sync_data()?;
            drop(file);
            std::fs::rename(&tmp, &path)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    /// [`BlobStore::get`] for a blocking thread.
    pub fn get_blocking(&self, key: &str) -> io::Result<Vec<u8>> {
        std::fs::read(self.path(key)?)
    }

    /// Reads a whole blob. `NotFound` means the key does not exist.
    pub async fn get(&self, key: &str) -> io::Result<Vec<u8>> {
        tokio::fs::read(self.path(key)?).await
    }

    /// Opens a blob for streaming, with its length.
    pub async fn open_read(&self, key: &str) -> io::Result<(tokio::fs::File, u64)> {
        let file = tokio::fs::File::open(self.path(key)?).await?;
        let len = file.metadata().await?.len();
        Ok((file, len))
    }

    /// Removes a blob; a missing one is not an error.
    pub async fn delete(&self, key: &str) -> io::Result<()> {
        match tokio::fs::remove_file(self.path(key)?).await {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    /// Maps a key to a path, refusing anything that could leave the store's folder.
    fn path(&self, key: &str) -> io::Result<PathBuf> {
        let valid = !key.is_empty()
            && key.len() <= 200
            && !key.starts_with('/')
            && key
                .split('/')
                .all(|part| !part.is_empty() && part != "." && part != "..")
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'));
        if !valid {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("invalid blob key {key:?}"),
            ));
        }
        Ok(self.root.join(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_store() -> BlobStore {
        let dir = std::env::temp_dir().join(format!("pixmill-blobs-{}", Uuid::new_v4()));
        BlobStore::open(dir).expect("open store")
    }

    #[tokio::test]
    async fn put_get_delete_round_trip() {
        let store = temp_store();
        let key = BlobStore::input_key(Uuid::new_v4());
        store.put(&key, b"hello").await.expect("put");
        assert_eq!(store.get(&key).await.expect("get"), b"hello");
        store
            .put_owned(&key, b"owned".to_vec())
            .await
            .expect("put_owned");
        assert_eq!(store.get(&key).await.expect("get"), b"owned");
        store.put_blocking(&key, b"again").expect("put_blocking");
        assert_eq!(store.get_blocking(&key).expect("get_blocking"), b"again");
        let (_, len) = store.open_read(&key).await.expect("open");
        assert_eq!(len, 5);
        let err = store.get_blocking("inputs/../x").expect_err("escapes");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        store.delete(&key).await.expect("delete");
        let err = store.get(&key).await.expect_err("gone");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        store.delete(&key).await.expect("deleting twice is fine");
        let _ = std::fs::remove_dir_all(store.root());
    }

    #[tokio::test]
    async fn keys_cannot_escape_the_folder() {
        let store = temp_store();
        for key in [
            "../etc/passwd",
            "/etc/passwd",
            "inputs/../../x",
            "",
            "a//b",
            "inputs/a b",
        ] {
            let err = store.get(key).await.expect_err(key);
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{key}");
        }
        let _ = std::fs::remove_dir_all(store.root());
    }
}
