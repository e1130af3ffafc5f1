//! `api-server`: see `api-server --help`. With no subcommand it serves (standalone mode
//! unless `DATABASE_URL` names PostgreSQL).

use clap::Parser;

use api_server::cli::{self, Cli, Command};
use api_server::AppState;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        None | Some(Command::Serve) => serve(cli.config).await,
        Some(cmd) => cli::run_admin(cli.config, cmd).await,
    }
}

async fn serve(config: api_server::Config) -> anyhow::Result<()> {
    let _telemetry = telemetry::init("api-server")?;
    std::fs::create_dir_all(&config.data_dir)?;
    let listen = config.listen;
    let standalone = config.is_standalone();
    let state = AppState::open(config).await?;
    if let Some(token) = cli::bootstrap(&state).await? {
        eprintln!(
            "\nFirst start: created tenant 'default' and user 'admin'.\nAdmin token (also in {}):\n\n    {token}\n",
            state.config.admin_token_file().display()
        );
    }
    let running = api_server::start(state, listen).await?;
    tracing::info!(addr = %running.addr, grpc = %running.grpc_addr, standalone, "ScaiDrive API listening");
    eprintln!(
        "ScaiDrive API on http://{}  (OpenAPI: /api/v1/openapi.json); workers' gRPC on {}",
        running.addr, running.grpc_addr
    );
    shutdown_signal().await;
    tracing::info!("shutting down");
    running.stop().await?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {},
        _ = term.recv() => {},
    }
}
