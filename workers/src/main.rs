//! `pixmill-worker`: set up logging, read settings, consume until SIGTERM or Ctrl-C.

use pixmill_shared::{config::EXIT_CONFIG, telemetry};
use pixmill_workers::Settings;
use tokio_util::sync::CancellationToken;

fn main() -> anyhow::Result<()> {
    pixmill_shared::runtime::tune_malloc();
    pixmill_shared::runtime::build()?.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    telemetry::init("info,lapin=warn");
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("pixmill-worker: {e}");
            std::process::exit(EXIT_CONFIG);
        }
    };
    let shutdown = CancellationToken::new();
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            pixmill_shared::shutdown::signal().await;
            tracing::info!("shutdown requested: no new jobs; finishing the ones in hand");
            shutdown.cancel();
        }
    });
    pixmill_workers::run(settings, shutdown).await
}
