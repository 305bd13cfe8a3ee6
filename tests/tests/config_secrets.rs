//! Configuration errors never print a password: the real binaries, started with a
//! mistyped URL that holds one, exit with code 64 and say what is wrong without it.
//! No broker needed.

use std::process::Command;

use pixmill_tests::{binary, temp_dir};

const PASSWORD: &str = "Sup3r-Secret-Pa55";

/// Runs `name` with `env` and returns its exit code and stderr.
fn run(name: &str, env: &[(&str, String)]) -> (Option<i32>, String) {
    let dir = temp_dir();
    let output = Command::new(binary(name).expect("binary"))
        .env("PIXMILL_DATA_DIR", &dir)
        .env("PIXMILL_HTTP_ADDR", "127.0.0.1:0")
        .env_remove("PIXMILL_DATABASE_URL")
        .env_remove("PIXMILL_BLOB_URL")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("runs");
    let _ = std::fs::remove_dir_all(dir);
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_mistyped_broker_url_exits_64_without_its_password() {
    for url in [
        format!("amqps//pixmill:{PASSWORD}@broker.internal:5671/%2f"),
        format!("amqp:/pixmill:{PASSWORD}@broker.internal/%2f"),
        format!("amqp://a:b@h1/%2f,http://pixmill:{PASSWORD}@broker.internal/%2f"),
    ] {
        for name in ["pixmill-gateway", "pixmill-worker"] {
            let (code, stderr) = run(name, &[("PIXMILL_AMQP_URL", url.clone())]);
            println!("{name}: {stderr}");
            assert_eq!(code, Some(64), "{name}: {stderr}");
            assert!(stderr.contains("PIXMILL_AMQP_URL"), "{name}: {stderr}");
            assert!(stderr.contains("broker.internal"), "{name}: {stderr}");
            assert!(
                !stderr.contains(PASSWORD),
                "{name} printed the password: {stderr}"
            );
        }
    }
}

#[test]
fn a_mistyped_database_url_exits_64_without_its_password() {
    for url in [
        format!("mysql://pixmill:{PASSWORD}@db.internal/pixmill"),
        format!("postgres://pixmill:{PASSWORD}@db.internal:notaport/pixmill"),
        format!("postgres://pixmill@db.internal:notaport/pixmill?password={PASSWORD}"),
    ] {
        let (code, stderr) = run("pixmill-gateway", &[("PIXMILL_DATABASE_URL", url.clone())]);
        println!("pixmill-gateway: {stderr}");
        assert_eq!(code, Some(64), "{stderr}");
        assert!(stderr.contains("PIXMILL_DATABASE_URL"), "{stderr}");
        assert!(!stderr.contains(PASSWORD), "printed the password: {stderr}");
    }
}
