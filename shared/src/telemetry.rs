//! Logging set-up shared by both binaries.

use tracing_subscriber::{EnvFilter, fmt};

/// Installs a `tracing` subscriber that writes to stderr.
///
/// `RUST_LOG` picks the filter (default `info`); `PIXMILL_LOG_FORMAT=json` switches to one
/// JSON object per line for log shippers. Every job span carries `job_id`, so one grep
/// follows a job through the gateway and whichever worker ran it.
pub fn init(default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let json = std::env::var("PIXMILL_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    // try_init: tests may set up several services in one process.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
