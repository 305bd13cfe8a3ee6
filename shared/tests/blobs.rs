//! One blob-store suite, run against every backend: the local folder and a real
//! S3-compatible server (SeaweedFS, which `make test` installs and starts).
//!
//! S3 comes from `PIXMILL_TEST_BLOB_URL` (`s3://BUCKET`) and the standard `AWS_*`
//! variables; each check works under a fresh prefix. Without the variable only the
//! folder runs, unless `PIXMILL_TEST_REQUIRE_BACKENDS=1` (as `make test` sets).

use std::{path::PathBuf, time::Duration};

use bytes::Bytes;
use futures_util::TryStreamExt;
use pixmill_shared::{BlobError, BlobUrl, Blobs, OutputFormat, keys};
use uuid::Uuid;

/// A folder removed when the suite's backend is dropped.
struct TempFolder(PathBuf);

impl Drop for TempFolder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One backend of the suite; a folder backend's folder goes with it.
struct Backend {
    name: &'static str,
    blobs: Blobs,
    _folder: Option<TempFolder>,
}

/// A fresh, empty store on every configured backend.
fn backends() -> Vec<Backend> {
    let folder = std::env::temp_dir().join(format!("pixmill-blobs-{}", Uuid::new_v4()));
    let mut all = vec![Backend {
        name: "folder",
        blobs: Blobs::open(&BlobUrl::Folder(folder.clone())).expect("open folder"),
        _folder: Some(TempFolder(folder)),
    }];
    match std::env::var("PIXMILL_TEST_BLOB_URL") {
        Ok(url) if url.starts_with("s3://") => {
            let url = format!(
                "{}/suite-{}",
                url.trim_end_matches('/'),
                Uuid::new_v4().simple()
            );
            let parsed: BlobUrl = url.parse().expect("PIXMILL_TEST_BLOB_URL");
            all.push(Backend {
                name: "s3",
                blobs: Blobs::open(&parsed).expect("open s3"),
                _folder: None,
            });
        }
        _ if std::env::var("PIXMILL_TEST_REQUIRE_BACKENDS").as_deref() == Ok("1") => {
            panic!("PIXMILL_TEST_BLOB_URL is not set; run `make test`, which starts SeaweedFS")
        }
        _ => eprintln!("blob suite: PIXMILL_TEST_BLOB_URL unset, S3 skipped"),
    }
    all
}

#[tokio::test]
async fn put_get_stream_delete_round_trip() {
    for Backend {
        name,
        blobs,
        _folder,
    } in backends()
    {
        let key = keys::input(Uuid::new_v4());
        assert!(!blobs.exists(&key).await.expect("exists"), "{name}");
        blobs
            .put(&key, Bytes::from_static(b"hello"))
            .await
            .expect("put");
        assert!(blobs.exists(&key).await.expect("exists"), "{name}");
        assert_eq!(blobs.get(&key).await.expect("get"), "hello", "{name}");

        // A second put replaces the blob whole.
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        blobs
            .put(&key, Bytes::from(big.clone()))
            .await
            .expect("put big");
        let stream = blobs.stream(&key).await.expect("stream");
        assert_eq!(stream.len, big.len() as u64, "{name}");
        let chunks: Vec<Bytes> = stream.body.try_collect().await.expect("read stream");
        assert!(chunks.len() > 1, "{name}: a large blob arrives in pieces");
        assert_eq!(chunks.concat(), big, "{name}");

        blobs.delete(&key).await.expect("delete");
        let err = blobs.get(&key).await.expect_err("gone");
        assert!(err.is_not_found(), "{name}: {err}");
        let err = blobs.stream(&key).await.expect_err("gone");
        assert!(err.is_not_found(), "{name}: {err}");
        blobs.delete(&key).await.expect("deleting twice is fine");
        println!("blob suite [{name}] put_get_stream_delete_round_trip: ok");
    }
}

#[tokio::test]
async fn cancel_markers_live_in_the_store() {
    for Backend {
        name,
        blobs,
        _folder,
    } in backends()
    {
        let id = Uuid::new_v4();
        assert!(!blobs.is_cancelled(id).await.expect("check"), "{name}");
        blobs.mark_cancelled(id).await.expect("mark");
        assert!(blobs.is_cancelled(id).await.expect("check"), "{name}");
        blobs.clear_cancelled(id).await.expect("clear");
        assert!(!blobs.is_cancelled(id).await.expect("check"), "{name}");
        println!("blob suite [{name}] cancel_markers_live_in_the_store: ok");
    }
}

#[tokio::test]
async fn keys_that_could_escape_are_refused() {
    for Backend {
        name,
        blobs,
        _folder,
    } in backends()
    {
        for key in ["../etc/passwd", "/etc/passwd", "inputs/../../x", "", "a//b"] {
            let err = blobs.get(key).await.expect_err(key);
            assert!(
                matches!(err, BlobError::InvalidKey(_)),
                "{name} {key}: {err}"
            );
            let err = blobs.put(key, Bytes::new()).await.expect_err(key);
            assert!(
                matches!(err, BlobError::InvalidKey(_)),
                "{name} {key}: {err}"
            );
        }
        println!("blob suite [{name}] keys_that_could_escape_are_refused: ok");
    }
}

#[tokio::test]
async fn presigned_urls_serve_the_blob_where_the_backend_can_sign() {
    for Backend {
        name,
        blobs,
        _folder,
    } in backends()
    {
        let key = keys::result(Uuid::new_v4(), OutputFormat::Png);
        blobs
            .put(&key, Bytes::from_static(b"\x89PNG..."))
            .await
            .expect("put");
        let url = blobs
            .presign_get(&key, Duration::from_secs(60))
            .await
            .expect("presign");
        match (name, url) {
            ("folder", None) => {}
            ("s3", Some(url)) => {
                // Anyone holding the URL can fetch the bytes, without credentials...
                let body = reqwest::get(&url)
                    .await
                    .expect("get")
                    .bytes()
                    .await
                    .expect("body");
                assert_eq!(&body[..], b"\x89PNG...", "{url}");
                // ...and a tampered signature is refused: the server checks it.
                let tampered = url.replace("X-Amz-Signature=", "X-Amz-Signature=00");
                let status = reqwest::get(&tampered).await.expect("get").status();
                assert_eq!(status.as_u16(), 403, "{tampered}");
            }
            (name, url) => panic!("{name}: unexpected presign answer {url:?}"),
        }
        println!("blob suite [{name}] presigned_urls: ok");
    }
}
