//! The distributed backends a test may ask for: PostgreSQL and an S3-compatible server,
//! both started once per test run by `make test` (deploy/postgres, deploy/s3), which
//! passes them as `PIXMILL_TEST_DATABASE_URL` and `PIXMILL_TEST_BLOB_URL` plus the
//! standard `AWS_*` variables.

use pixmill_gateway::store::DatabaseUrl;
use pixmill_shared::BlobUrl;
use uuid::Uuid;

/// True when the backends must be there (`make test` sets
/// `PIXMILL_TEST_REQUIRE_BACKENDS=1`): then a missing one fails the test.
fn required() -> bool {
    std::env::var("PIXMILL_TEST_REQUIRE_BACKENDS").as_deref() == Ok("1")
}

fn configured(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(value) if !value.is_empty() => Some(value),
        _ if required() => panic!("{var} is not set; run `make test`, which starts the server"),
        _ => {
            eprintln!("{var} is unset: skipping this test (run it with `make test`)");
            None
        }
    }
}

/// A fresh, empty PostgreSQL database, or None when no server is configured.
pub async fn fresh_postgres() -> Option<DatabaseUrl> {
    let admin = configured("PIXMILL_TEST_DATABASE_URL")?;
    let name = format!("pixmill_test_{}", Uuid::new_v4().simple());
    let url = pixmill_gateway::store::postgres::create_database(&admin, &name)
        .await
        .expect("create a test database");
    Some(DatabaseUrl::Postgres(url))
}

/// The admin URL of the test PostgreSQL server, for tests that stop and start it.
pub fn postgres_admin() -> Option<String> {
    configured("PIXMILL_TEST_DATABASE_URL")
}

/// A fresh prefix in the test bucket, or None when no S3 server is configured.
pub fn fresh_s3() -> Option<BlobUrl> {
    let url = configured("PIXMILL_TEST_BLOB_URL")?;
    let url = format!(
        "{}/test-{}",
        url.trim_end_matches('/'),
        Uuid::new_v4().simple()
    );
    Some(url.parse().expect("PIXMILL_TEST_BLOB_URL is an s3:// URL"))
}
