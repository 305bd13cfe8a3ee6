//! The API key: `--key` and `PIXMILL_API_KEY` against a gateway with
//! `PIXMILL_AUTH=required`.

use pixmill_gateway::auth::{self, ApiScope, AuthMode, KeyRequest};
use pixmill_tests::{Stack, TIMEOUT, common, temp_dir};
use tokio::process::Command;
use uuid::Uuid;

use super::Run;

/// Runs `pixmill ARGS` against `base` with `PIXMILL_API_KEY` set to `env_key` (or unset).
async fn run(base: &str, env_key: Option<&str>, args: &[&str]) -> Run {
    let mut command = Command::new(pixmill_tests::binary("pixmill").expect("the pixmill binary"));
    command
        .args(args)
        .env("PIXMILL_URL", base)
        .env_remove("PIXMILL_API_KEY")
        .kill_on_drop(true);
    if let Some(key) = env_key {
        command.env("PIXMILL_API_KEY", key);
    }
    let out = tokio::time::timeout(TIMEOUT, command.output())
        .await
        .expect("in time")
        .expect("pixmill runs");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[tokio::test]
async fn the_key_comes_from_the_flag_or_the_environment() {
    let common = common(&format!("test-{}", Uuid::new_v4().simple()), &temp_dir());
    let stack = Stack::start_configured(common, |s| s.auth = AuthMode::Required)
        .await
        .expect("start");
    let request = KeyRequest {
        tenant: "cli".into(),
        scopes: ApiScope::parse_list("jobs:read").expect("scopes"),
        ttl: None,
        label: None,
    };
    let (key, _) = auth::issue(&stack.jobs().store, request, pixmill_shared::now_ms())
        .await
        .expect("issue");
    let base = stack.base.clone();

    let listed = run(&base, None, &["list", "--json", "--key", &key]).await;
    assert_eq!(listed.code, 0, "{listed:#?}");
    assert_eq!(listed.json()["jobs"], serde_json::json!([]), "{listed:#?}");
    let listed = run(&base, Some(&key), &["list", "--json"]).await;
    assert_eq!(listed.code, 0, "{listed:#?}");

    let refused = run(&base, None, &["list"]).await;
    assert_eq!(refused.code, 1, "{refused:#?}");
    assert!(
        refused.stderr.contains("credential_missing"),
        "{refused:#?}"
    );
    let refused = run(&base, Some("pmk_nonsense"), &["list"]).await;
    assert_eq!(refused.code, 1, "{refused:#?}");
    assert!(
        refused.stderr.contains("credential_malformed"),
        "{refused:#?}"
    );
    stack.stop().await.expect("stop");
}
