//! `pixmill-gateway`: set up logging, read settings, serve until SIGTERM or Ctrl-C.

use pixmill_gateway::{Application, Settings};
use pixmill_shared::{config::EXIT_CONFIG, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry::init("info,lapin=warn,tower_http=warn");
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("pixmill-gateway: {e}");
            std::process::exit(EXIT_CONFIG);
        }
    };
    let app = Application::build(settings).await?;
    app.run_until_stopped(shutdown_signal()).await
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return ctrl_c.await.unwrap_or_default(),
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    ctrl_c.await.unwrap_or_default();
    tracing::info!("shutdown requested: finishing in-flight requests");
}
