//! `pixmill-gateway`: set up logging, read settings, serve until SIGTERM or Ctrl-C.
//! `pixmill-gateway keys …` and `tenants …` manage API keys and tenants' limits instead,
//! and `pixmill-gateway webhook-secret` prints a tenant's webhook secret (see
//! `pixmill_gateway::manage`).

use clap::Parser;
use pixmill_gateway::{
    Application, Settings,
    manage::{Cli, Command},
};
use pixmill_shared::{config::EXIT_CONFIG, shutdown, telemetry};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Keys { action }) => {
            return pixmill_shared::runtime::build()?.block_on(keys(action));
        }
        Some(Command::Tenants { action }) => {
            return pixmill_shared::runtime::build()?.block_on(tenants(action));
        }
        Some(Command::WebhookSecret { tenant }) => return webhook_secret(&tenant),
        None => {}
    }
    pixmill_shared::runtime::tune_malloc();
    pixmill_shared::runtime::build()?.block_on(run())
}

async fn keys(action: pixmill_gateway::manage::KeysAction) -> anyhow::Result<()> {
    let url = match pixmill_gateway::config::database_url_from_env() {
        Ok(url) => url,
        Err(e) => {
            eprintln!("pixmill-gateway: {e}");
            std::process::exit(EXIT_CONFIG);
        }
    };
    let mut out = std::io::stdout().lock();
    if let Err(e) = pixmill_gateway::manage::keys(&url, action, &mut out).await {
        eprintln!("pixmill-gateway keys: {e}");
        std::process::exit(e.exit_code());
    }
    Ok(())
}

async fn tenants(action: pixmill_gateway::manage::TenantsAction) -> anyhow::Result<()> {
    let url = match pixmill_gateway::config::database_url_from_env() {
        Ok(url) => url,
        Err(e) => {
            eprintln!("pixmill-gateway: {e}");
            std::process::exit(EXIT_CONFIG);
        }
    };
    let mut out = std::io::stdout().lock();
    if let Err(e) = pixmill_gateway::manage::tenants(&url, action, &mut out).await {
        eprintln!("pixmill-gateway tenants: {e}");
        std::process::exit(e.exit_code());
    }
    Ok(())
}

fn webhook_secret(tenant: &str) -> anyhow::Result<()> {
    let master = match pixmill_gateway::config::webhook_secret_from_env() {
        Ok(master) => master,
        Err(e) => {
            eprintln!("pixmill-gateway: {e}");
            std::process::exit(EXIT_CONFIG);
        }
    };
    let mut out = std::io::stdout().lock();
    if let Err(e) = pixmill_gateway::manage::webhook_secret(master.as_deref(), tenant, &mut out) {
        eprintln!("pixmill-gateway webhook-secret: {e}");
        std::process::exit(e.exit_code());
    }
    Ok(())
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
