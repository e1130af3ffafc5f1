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
pub mod http;
pub mod ids;
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
}

impl AppState {
    /// Opens the database (running migrations), the content store and the secret key. Refuses
    /// to start when the database holds secrets sealed with another key.
    pub async fn open(config: Config) -> anyhow::Result<AppState> {
        let db = db::Db::connect(&config.database_url()).await?;
        let (secrets, _) = secrets::SecretBox::load(&config)?;
        store::connectors::check_key(&db, &secrets).await?;
        let content_dir = config.content_dir();
        let content = content::LocalDirStore::open(&content_dir)
            .with_context(|| format!("opening the content store at {}", content_dir.display()))?;
        Ok(AppState {
            db,
            content: Arc::new(content),
            config: Arc::new(config),
            secrets: Arc::new(secrets),
        })
    }
}

/// A running server: its address, and a handle to stop it.
pub struct Running {
    pub addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// Stops accepting, lets requests in flight finish, and waits.
    pub async fn stop(mut self) -> std::io::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.task.await.unwrap_or_else(|e| Err(std::io::Error::other(e)))
    }
}

/// Serves the API on `addr` (port 0 picks a free one) until [`Running::stop`].
pub async fn start(state: AppState, addr: SocketAddr) -> anyhow::Result<Running> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let addr = listener.local_addr()?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let app = http::router(state);
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await
    });
    Ok(Running {
        addr,
        shutdown: Some(tx),
        task,
    })
}
