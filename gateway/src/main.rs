//! `pixmill-gateway`: set up logging, read settings, serve until SIGTERM or Ctrl-C.

use pixmill_gateway::{Application, Settings};
use pixmill_shared::{config::EXIT_CONFIG, shutdown, telemetry};

fn main() -> anyhow::Result<()> {
    pixmill_shared::runtime::tune_malloc();
    pixmill_shared::runtime::build()?.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    telemetry::init("info,lapin=warn,tower_http=warn");
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("pixmill-gateway: {e}");
            std::process::exit(EXIT_CONFIG);
        }
    };
    let app = Application::build(settings).await?;
    app.run_until_stopped(async {
        shutdown::signal().await;
        tracing::info!("shutdown requested: finishing in-flight requests");
    })
    .await
}
