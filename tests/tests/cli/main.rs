//! The `pixmill` command-line client, end to end: the built binary (run as a process,
//! as a person or a script would) against a real stack on real photographs.
//!
//! Build the binary first: `cargo build --bins` (`make test` does), or
//! `cargo build --bins -p pixmill-cli` for just this one.
//!
//! # Layout
//!
//! - `submit.rs`: submit with steps, folders, patterns, `--json`, a refused job,
//!   variants.
//! - `commands.rs`: status, get, cancel and list on real jobs.
//! - `keys.rs`: the API key from `--key` or `PIXMILL_API_KEY`.
//! - `exits.rs`: exit codes 2 and 3, and a stand-in gateway (a bare TCP listener on
//!   127.0.0.1:0) for answers the real one gives only under failure: 503 with
//!   `Retry-After`, and a 307 to a presigned URL.

mod commands;
mod exits;
mod keys;
mod submit;

use std::{path::Path, process::Stdio};

use image::GenericImageView;
use pixmill_tests::{Stack, TIMEOUT, photos, photos::decode};
use serde_json::Value;
use tokio::process::Command;

/// Where nothing listens (the discard port), for exit code 3.
const NOWHERE: &str = "http://127.0.0.1:9";

/// What a run of the binary gave.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:#?}"))
    }
}

/// Runs `pixmill ARGS` with `PIXMILL_URL=base`. Async, because the gateway it talks to
/// runs on this test's runtime.
async fn pixmill(base: &str, args: &[&str]) -> Run {
    let bin = pixmill_tests::binary("pixmill").expect("the pixmill binary");
    let out = tokio::time::timeout(
        TIMEOUT,
        Command::new(bin)
            .args(args)
            .env("PIXMILL_URL", base)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("pixmill {args:?} ran past {TIMEOUT:?}"))
    .expect("pixmill runs");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A real photograph's path, as a string argument.
fn photo(name: &str) -> String {
    let path = photos::dir().join(name);
    assert!(
        path.is_file(),
        "{}: fetch the photographs with deploy/fixtures/fetch-photos.sh",
        path.display()
    );
    path.display().to_string()
}

fn size_of(path: &Path) -> (u32, u32) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    decode(&bytes).dimensions()
}

async fn stack_with_worker() -> Stack {
    let mut stack = Stack::start().await.expect("start stack");
    stack.add_worker("cli-worker", 2);
    stack
}
