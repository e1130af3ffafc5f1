//! The `sync-worker` binary: configuration from flags and environment, telemetry, RabbitMQ,
//! the health server, and graceful shutdown on SIGTERM/SIGINT (exit 0).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use sync_worker::{Readiness, WorkerConfig};
use tokio_util::sync::CancellationToken;

/// A ScaiDrive SMB connector worker: runs sync jobs and connectivity tests from the queue.
#[derive(Parser, Debug)]
#[command(name = "sync-worker", version)]
struct Args {
    /// The api-server's gRPC address.
    #[arg(long, env = "SCAIDRIVE_CONTROL_PLANE_URL", default_value = "http://127.0.0.1:8081")]
    control_plane_url: String,
    /// The fleet's worker token.
    #[arg(long, env = "SCAIDRIVE_WORKER_TOKEN", hide_env_values = true)]
    worker_token: Option<String>,
    /// A file holding the worker token (instead of --worker-token).
    #[arg(long, env = "SCAIDRIVE_WORKER_TOKEN_FILE")]
    worker_token_file: Option<PathBuf>,
    /// This worker's identity (default: host name and pid).
    #[arg(long, env = "SCAIDRIVE_WORKER_ID")]
    worker_id: Option<String>,
    /// The worker pool this worker serves (its queues: scaidrive.sync-jobs.<pool>, …).
    #[arg(long, env = "SCAIDRIVE_WORKER_POOL", default_value = "default")]
    worker_pool: String,
    /// RabbitMQ URL (amqp://user:password@host:5672/vhost).
    #[arg(long, env = "SCAIDRIVE_AMQP_URL", hide_env_values = true)]
    amqp_url: String,
    /// Connectors synced at once.
    #[arg(long, env = "SCAIDRIVE_MAX_JOBS", default_value_t = 2)]
    max_jobs: usize,
    /// Files in flight per job.
    #[arg(long, env = "SCAIDRIVE_MAX_TRANSFERS", default_value_t = 32)]
    max_transfers: usize,
    /// Of those, files over 1 MiB in flight per job.
    #[arg(long, env = "SCAIDRIVE_MAX_LARGE_TRANSFERS", default_value_t = 4)]
    max_large_transfers: usize,
    /// SMB connections per job (Samba serves each connection with one single-threaded process).
    #[arg(long, env = "SCAIDRIVE_SMB_CONNECTIONS", default_value_t = 4)]
    smb_connections: usize,
    /// Synced states kept between runs, all connectors together (about 170 bytes each; 0
    /// keeps none): a quiet re-sync of a connector this worker ran last needs no listing.
    #[arg(long, env = "SCAIDRIVE_STATE_CACHE_ITEMS", default_value_t = sync_worker::state_cache::DEFAULT_ITEMS)]
    state_cache_items: usize,
    /// Requested lease lifetime in seconds (renewed every third of it).
    #[arg(long, env = "SCAIDRIVE_LEASE_TTL_SECS", default_value_t = 30)]
    lease_ttl_secs: u64,
    /// Bound on connecting to an SMB server (TCP, negotiate, session set-up, tree connect).
    #[arg(long, env = "SCAIDRIVE_SMB_CONNECT_TIMEOUT_SECS", default_value_t = 15)]
    smb_connect_timeout_secs: u64,
    /// Bound on one SMB request (open, stat, one read or write chunk, one listing page).
    #[arg(long, env = "SCAIDRIVE_SMB_REQUEST_TIMEOUT_SECS", default_value_t = 60)]
    smb_request_timeout_secs: u64,
    /// Bound on one unary gRPC call to the control plane.
    #[arg(long, env = "SCAIDRIVE_RPC_TIMEOUT_SECS", default_value_t = 30)]
    rpc_timeout_secs: u64,
    /// Address of /healthz and /readyz.
    #[arg(long, env = "SCAIDRIVE_WORKER_LISTEN", default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
}

fn token(args: &Args) -> anyhow::Result<String> {
    if let Some(t) = &args.worker_token {
        return Ok(t.trim().to_string());
    }
    if let Some(p) = &args.worker_token_file {
        let t = std::fs::read_to_string(p).with_context(|| format!("reading the worker token file {}", p.display()))?;
        return Ok(t.trim().to_string());
    }
    anyhow::bail!("a worker token is required: --worker-token, SCAIDRIVE_WORKER_TOKEN or --worker-token-file")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _telemetry = telemetry::init("sync-worker")?;
    let mut config = WorkerConfig::new(args.control_plane_url.clone(), token(&args)?);
    if let Some(id) = &args.worker_id {
        config.worker_id = id.clone();
    }
    config.worker_pool = args.worker_pool.clone();
    config.max_jobs = args.max_jobs.max(1);
    config.max_transfers = args.max_transfers.max(1);
    config.max_large_transfers = args.max_large_transfers.max(1);
    config.smb_connections = args.smb_connections.max(1);
    config.state_cache = Arc::new(sync_worker::state_cache::StateCache::new(args.state_cache_items));
    config.lease_ttl = Duration::from_secs(args.lease_ttl_secs.max(10));
    config.smb_timeouts.connect = Duration::from_secs(args.smb_connect_timeout_secs.max(1));
    config.smb_timeouts.request = Duration::from_secs(args.smb_request_timeout_secs.max(1));
    config.rpc_timeout = Duration::from_secs(args.rpc_timeout_secs.max(1));

    let mut rabbit = jobqueue::RabbitConfig::new(args.amqp_url.clone());
    rabbit.connection_name = format!("sync-worker {}", config.worker_id);
    let queue: Arc<dyn jobqueue::JobQueue> =
        Arc::new(jobqueue::RabbitQueue::connect(rabbit).await.context("connecting to RabbitMQ")?);

    let shutdown = CancellationToken::new();
    let readiness = Readiness::default();
    let listener =
        tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
    tracing::info!(listen = %listener.local_addr()?, "health endpoints listening");
    let health = tokio::spawn(sync_worker::health::serve(listener, readiness.clone(), shutdown.clone()));

    let signals = {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutdown requested: no new jobs; running jobs hand back at their next safe point");
            shutdown.cancel();
        })
    };
    let result = sync_worker::run_with_readiness(config, queue, shutdown.clone(), readiness).await;
    shutdown.cancel();
    signals.abort();
    let _ = health.await;
    result
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
