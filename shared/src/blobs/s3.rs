//! The S3 backend (`s3://BUCKET[/PREFIX]`): any S3-compatible object store.
//!
//! Endpoint, region and credentials come from the standard `AWS_*` variables
//! (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, …),
//! read by the `object_store` crate, which signs every request (SigV4). Requests are
//! retried only briefly here: a longer outage is the job retry queue's business, and a
//! request must never hang a worker slot or an HTTP handler for minutes.

use std::time::Duration;

use bytes::Bytes;
use futures_util::TryStreamExt;
use object_store::{
    ClientOptions, ObjectStoreExt, PutPayload, RetryConfig, aws::AmazonS3, aws::AmazonS3Builder,
    path::Path, signer::Signer,
};

use super::{BlobError, BlobStore, BlobStream, keys};

/// How long one S3 request may take, connection included, before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Blobs in one bucket, under an optional prefix.
#[derive(Debug)]
pub struct S3Store {
    store: AmazonS3,
    bucket: String,
    /// Prepended (with `/`) to every key; empty for the bucket's root.
    prefix: String,
    /// `AWS_ENDPOINT_URL`, for log lines.
    endpoint: String,
}

impl S3Store {
    /// Builds a client for `bucket` from the `AWS_*` environment. Nothing is contacted
    /// until the first request.
    pub fn from_env(bucket: &str, prefix: &str) -> Result<Self, BlobError> {
        let endpoint = std::env::var("AWS_ENDPOINT_URL")
            .or_else(|_| std::env::var("AWS_ENDPOINT"))
            .unwrap_or_default();
        let allow_http = endpoint.starts_with("http://")
            || std::env::var("AWS_ALLOW_HTTP").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_client_options(
                ClientOptions::new()
                    .with_allow_http(allow_http)
                    .with_timeout(REQUEST_TIMEOUT)
                    .with_connect_timeout(CONNECT_TIMEOUT),
            )
            .with_retry(RetryConfig {
                max_retries: 2,
                retry_timeout: Duration::from_secs(10),
                ..RetryConfig::default()
            });
        if std::env::var("AWS_REGION").is_err() && std::env::var("AWS_DEFAULT_REGION").is_err() {
            builder = builder.with_region("us-east-1");
        }
        let store = builder
            .build()
            .map_err(|e| BlobError::Unavailable(format!("S3 settings: {e}")))?;
        Ok(Self {
            store,
            bucket: bucket.into(),
            prefix: prefix.trim_matches('/').into(),
            endpoint: if endpoint.is_empty() {
                "AWS".into()
            } else {
                endpoint
            },
        })
    }

    fn path(&self, key: &str) -> Result<Path, BlobError> {
        keys::validate(key)?;
        Ok(if self.prefix.is_empty() {
            Path::from(key)
        } else {
            Path::from(format!("{}/{key}", self.prefix))
        })
    }
}

/// Maps an `object_store` error on `key` to the store's error.
fn s3_error(key: &str, e: object_store::Error) -> BlobError {
    match e {
        object_store::Error::NotFound { .. } => BlobError::NotFound(key.to_string()),
        other => BlobError::Unavailable(format!("{key}: {other}")),
    }
}

#[async_trait::async_trait]
impl BlobStore for S3Store {
    fn describe(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{} at {}", self.bucket, self.endpoint)
        } else {
            format!("s3://{}/{} at {}", self.bucket, self.prefix, self.endpoint)
        }
    }

    async fn put(&self, key: &str, bytes: Bytes) -> Result<(), BlobError> {
        let path = self.path(key)?;
        self.store
            .put(&path, PutPayload::from_bytes(bytes))
            .await
            .map(|_| ())
            .map_err(|e| s3_error(key, e))
    }

    async fn get(&self, key: &str) -> Result<Bytes, BlobError> {
        let path = self.path(key)?;
        let got = self.store.get(&path).await.map_err(|e| s3_error(key, e))?;
        got.bytes().await.map_err(|e| s3_error(key, e))
    }

    async fn stream(&self, key: &str) -> Result<BlobStream, BlobError> {
        let path = self.path(key)?;
        let got = self.store.get(&path).await.map_err(|e| s3_error(key, e))?;
        let len = got.meta.size;
        let owned = key.to_string();
        let body = got.into_stream().map_err(move |e| s3_error(&owned, e));
        Ok(BlobStream {
            len,
            body: Box::pin(body),
        })
    }

    async fn exists(&self, key: &str) -> Result<bool, BlobError> {
        let path = self.path(key)?;
        match self.store.head(&path).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(s3_error(key, e)),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), BlobError> {
        let path = self.path(key)?;
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(s3_error(key, e)),
        }
    }

    async fn presign_get(&self, key: &str, ttl: Duration) -> Result<Option<String>, BlobError> {
        let path = self.path(key)?;
        let url = self
            .store
            .signed_url(object_store::signer::Method::GET, &path, ttl)
            .await
            .map_err(|e| s3_error(key, e))?;
        Ok(Some(url.to_string()))
    }
}
