//! The upload page in a real browser: Debian's Chromium driven by playwright-core
//! (tests/browser/page.test.mjs, node's test runner) against real stacks: one open, as
//! `make run` serves, and one with `PIXMILL_AUTH=required`, where the page asks for a
//! key. `make test` installs both first (`make browser`). Screenshots go to var/browser/.

use std::{path::Path, process::Command};

use pixmill_gateway::{
    auth::{self, ApiScope, AuthMode, KeyRequest},
    store::Store,
};
use pixmill_tests::{Stack, common, temp_dir};
use uuid::Uuid;

/// Makes a key of the tenant `browser` with `scopes`, straight in the store.
async fn issue(store: &Store, scopes: &str, label: &str) -> String {
    let request = KeyRequest {
        tenant: "browser".into(),
        scopes: ApiScope::parse_list(scopes).expect("scopes"),
        ttl: None,
        label: Some(label.into()),
    };
    auth::issue(store, request, pixmill_shared::now_ms())
        .await
        .expect("issue")
        .0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_works_in_chromium() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let browser = root.join("tests/browser");
    let required = std::env::var("PIXMILL_TEST_REQUIRE_BACKENDS").as_deref() == Ok("1");
    if !browser.join("node_modules/playwright-core").exists()
        || !Path::new("/usr/bin/chromium").exists()
    {
        assert!(
            !required,
            "Chromium or playwright-core is missing: run `make browser`"
        );
        eprintln!("skipping the browser test: run `make browser` first");
        return;
    }
    // The open gateway registers the example custom ops, and no worker serves them.
    let ops = pixmill_gateway::custom_ops::CustomOps::load(&root.join("examples/ops.json"))
        .expect("examples/ops.json");
    let mut open = Stack::start_configured(
        common(&format!("test-{}", Uuid::new_v4().simple()), &temp_dir()),
        |s| s.ops = ops,
    )
    .await
    .expect("start");
    open.add_worker("browser-worker", 2);

    let settings = common(&format!("test-{}", Uuid::new_v4().simple()), &temp_dir());
    let mut keyed = Stack::start_configured(settings, |s| s.auth = AuthMode::Required)
        .await
        .expect("start with keys required");
    keyed.add_worker("browser-worker-keyed", 2);
    let store = keyed.jobs().store.clone();
    let key = issue(&store, "jobs:write,jobs:read", "browser test").await;
    let admin = issue(&store, "admin", "browser test, operations panel").await;
    // Well formed, but no key has this id: refused as credential_invalid.
    let (_, secret) = key
        .strip_prefix(auth::key::PREFIX)
        .and_then(|rest| rest.split_once('_'))
        .expect("pmk_<id>_<secret>");
    let unknown = &Uuid::new_v4().simple().to_string()[..16];
    let wrong = format!("pmk_{unknown}_{secret}");
    assert!(
        auth::key::parse(&wrong).is_ok(),
        "the wrong key is well formed"
    );

    let (open_base, keyed_base) = (open.base.clone(), keyed.base.clone());
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg("--test")
            .arg(&browser)
            .current_dir(&root)
            .env("PIXMILL_TEST_GATEWAY", &open_base)
            .env("PIXMILL_TEST_GATEWAY_KEYED", &keyed_base)
            .env("PIXMILL_TEST_KEY", &key)
            .env("PIXMILL_TEST_WRONG_KEY", &wrong)
            .env("PIXMILL_TEST_ADMIN_KEY", &admin)
            .output()
            .expect("node")
    })
    .await
    .expect("node ran");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "the browser test failed:\n{stdout}\n{stderr}"
    );
    keyed.stop().await.expect("stop the keyed stack");
    open.stop().await.expect("stop");
}
