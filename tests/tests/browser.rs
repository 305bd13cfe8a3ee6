//! The upload page in a real browser: Debian's Chromium driven by playwright-core
//! (tests/browser/page.test.mjs, node's test runner) against a real stack. `make test`
//! installs both first (`make browser`). Screenshots go to var/browser/.

use std::{path::Path, process::Command};

use pixmill_tests::Stack;

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
    let mut stack = Stack::start().await.expect("start");
    stack.add_worker("browser-worker", 2);
    let base = stack.base.clone();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg("--test")
            .arg(&browser)
            .current_dir(&root)
            .env("PIXMILL_TEST_GATEWAY", &base)
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
    stack.stop().await.expect("stop");
}
