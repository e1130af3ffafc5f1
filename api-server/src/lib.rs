//! The ScaiDrive control plane.
//!
//! One stateless process type: the REST API (the ScaiDrive file service and, on top of it,
//! the SMB connectors), the gRPC service the sync workers talk to, and the scheduler. State
//! lives in the database (PostgreSQL, or SQLite in standalone mode) and the content store;
//! any number of replicas can run side by side against the same database.
//!
//! Code map: [`http`] (routes, request/response types, OpenAPI), [`store`] (persistence,
//! tenant scoping), [`perm`] (permission resolution, pure), [`content`] (chunked,
//! content-addressed storage), [`auth`] (bearer tokens), [`db`] (pool and migrations).

pub mod auth;
pub mod cli;
pub mod config;
pub mod content;
pub mod db;
pub mod error;
pub mod fleet;
pub mod grpc;
pub mod http;
pub mod ids;
pub mod observe;
pub mod paths;
pub mod perm;
pub mod secrets;
pub mod store;
pub mod time;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;

pub use config::Config;

/// Everything a request handler needs; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub db: db::Db,
    pub content: Arc<dyn content::ContentStore>,
    pub config: Arc<Config>,
    /// Seals and opens connector credentials.
    pub secrets: Arc<secrets::SecretBox>,
    /// The job queue (RabbitMQ, or in-process in standalone mode).
    pub queue: Arc<dyn jobqueue::JobQueue>,
    /// The token sync workers present on gRPC.
    pub worker_token: Arc<String>,
    /// Queues this state has declared (one declare per queue, not per publish).
    pub declared_queues: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
}

impl AppState {
    /// Opens the database (running migrations), the content store and the secret key. Refuses
    /// to start when the database holds secrets sealed with another key.
    pub async fn open(config: Config) -> anyhow::Result<AppState> {
        let db = db::Db::connect(&config.database_url()).await?;
        let (secrets, _) = secrets::SecretBox::load(&config)?;
        store::connectors::check_key(&db, &secrets).await?;
        let queue = fleet::open_queue(&config).await?;
        let worker_token = match &config.worker_token {
            Some(t) if !t.trim().is_empty() => t.trim().to_string(),
            _ => {
                let path = config.worker_token_file();
                match std::fs::read_to_string(&path) {
                    Ok(t) if !t.trim().is_empty() => t.trim().to_string(),
                    _ => {
                        let t = format!("swt_{}", &auth::new_token()[auth::TOKEN_PREFIX.len()..]);
                        cli::write_secret_file(&path, &format!("{t}\n"))
                            .with_context(|| format!("writing {}", path.display()))?;
                        t
                    }
                }
            }
        };
        let content_dir = config.content_dir();
        let content = content::LocalDirStore::open(&content_dir)
            .with_context(|| format!("opening the content store at {}", content_dir.display()))?;
        Ok(AppState {
            db,
            content: Arc::new(content),
            config: Arc::new(config),
            secrets: Arc::new(secrets),
            queue,
            worker_token: Arc::new(worker_token),
            declared_queues: Default::default(),
        })
    }
}

/// A running server: its addresses, and a handle to stop it.
pub struct Running {
    /// The REST API.
    pub addr: SocketAddr,
    /// The workers' gRPC service.
    pub grpc_addr: SocketAddr,
    stop: tokio_util::sync::CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    http: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// Stops accepting, lets requests in flight finish, stops the background tasks, waits.
    pub async fn stop(self) -> std::io::Result<()> {
        self.stop.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
        self.http.await.unwrap_or_else(|e| Err(std::io::Error::other(e)))
    }

    /// A token that is cancelled when the server stops (for tasks started beside it).
    pub fn stop_token(&self) -> tokio_util::sync::CancellationToken {
        self.stop.clone()
    }
}

/// Serves the REST API on `addr` and the workers' gRPC service on the configured address
/// (port 0 picks a free one), and runs the scheduler, until [`Running::stop`].
pub async fn start(state: AppState, addr: SocketAddr) -> anyhow::Result<Running> {
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
    let addr = listener.local_addr()?;
    let grpc_listener = tokio::net::TcpListener::bind(state.config.grpc_listen)
        .await
        .with_context(|| format!("binding {} (gRPC)", state.config.grpc_listen))?;
    let grpc_addr = grpc_listener.local_addr()?;
    let stop = tokio_util::sync::CancellationToken::new();

    let app = http::router(state.clone());
    let s1 = stop.clone();
    let http = tokio::spawn(async move {
        use axum::serve::ListenerExt;
        // As for gRPC below: answers leave at once, not after the client's delayed ACK.
        let listener = listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::warn!(error = %e, "could not set TCP_NODELAY on an API connection");
            }
        });
        axum::serve(listener, app).with_graceful_shutdown(async move { s1.cancelled().await }).await
    });

    let routes = grpc::router(state.clone(), state.worker_token.to_string());
    let s2 = stop.clone();
    let grpc_task = tokio::spawn(async move {
        // Replies go out at once (TCP_NODELAY): a unary reply is several small writes (headers,
        // message, trailers), and with Nagle's algorithm the last waited for the client's
        // delayed ACK, about 40 ms per call. A run's renames and deletions, one call after
        // another, took 43 ms each (docs/PERFORMANCE.md, seventh round).
        let incoming = futures::StreamExt::map(tokio_stream::wrappers::TcpListenerStream::new(grpc_listener), |s| {
            s.inspect(|s| {
                if let Err(e) = s.set_nodelay(true) {
                    tracing::warn!(error = %e, "could not set TCP_NODELAY on a gRPC connection");
                }
            })
        });
        let r = tonic::transport::Server::builder()
            .layer(observe::GrpcLayer)
            .add_routes(routes)
            .serve_with_incoming_shutdown(incoming, async move { s2.cancelled().await })
            .await;
        if let Err(e) = r {
            tracing::error!(error = %e, "gRPC server failed");
        }
    });
    let workers = state.config.embedded_workers();
    let config_pools = state.config.embedded_worker_pools.clone();
    let watch = state.config.embedded_watch;
    let cfg = &state.config;
    let (transfers, large, connections) =
        (cfg.embedded_max_transfers, cfg.embedded_max_large_transfers, cfg.embedded_smb_connections);
    let cache_items = cfg.embedded_state_cache_items;
    let queue = state.queue.clone();
    let token = state.worker_token.to_string();
    let mut tasks = fleet::spawn_background(state.clone(), stop.clone());
    tasks.push(tokio::spawn(observe::gauges_loop(state, stop.clone())));
    tasks.push(grpc_task);
    // Standalone mode: the workers run here, on the same queue, talking gRPC over loopback,
    // exactly as separate sync-worker processes would.
    let pools = state_pools(&config_pools);
    // One cache of synced states for all embedded workers: a connector's runs may land on any.
    let state_cache = Arc::new(sync_worker::state_cache::StateCache::new(cache_items));
    for (pool, i) in pools.iter().flat_map(|p| (0..workers).map(move |i| (p.clone(), i))) {
        let mut wc = sync_worker::WorkerConfig::new(format!("http://{grpc_addr}"), token.clone());
        wc.worker_id = format!("embedded-{}-{pool}-{i}", std::process::id());
        wc.worker_pool = pool;
        wc.watch.enabled = watch;
        wc.max_transfers = transfers.max(1);
        wc.max_large_transfers = large.max(1);
        wc.smb_connections = connections.max(1);
        wc.state_cache = state_cache.clone();
        let (q, s) = (queue.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            if let Err(e) = sync_worker::run(wc, q, s).await {
                tracing::error!(error = %e, "embedded sync worker stopped");
            }
        }));
    }
    Ok(Running { addr, grpc_addr, stop, tasks, http })
}

/// The valid, distinct pool names of `--embedded-worker-pools` (`default` if none is).
fn state_pools(names: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for n in names.iter().map(|n| n.trim()) {
        if sync_worker::valid_pool_name(n) && !out.iter().any(|o| o == n) {
            out.push(n.to_string());
        } else if !n.is_empty() && !sync_worker::valid_pool_name(n) {
            tracing::warn!(pool = %n, "ignoring an invalid worker pool name in --embedded-worker-pools");
        }
    }
    if out.is_empty() {
        out.push(sync_worker::DEFAULT_POOL.to_string());
    }
    out
}
