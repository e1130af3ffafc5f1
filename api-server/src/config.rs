//! Configuration: command-line flags, each with an environment variable.
//!
//! Standalone (the default): everything under `--data-dir` (`./data`): the SQLite database,
//! the content store, the admin token file, the secret key file. Distributed: `DATABASE_URL=postgres://…` shared
//! by every replica, and a content store all replicas reach.

use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Clone, Debug, clap::Args)]
pub struct Config {
    /// Where standalone mode keeps its database, content and admin token.
    #[arg(long, env = "SCAIDRIVE_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// `postgres://…` for a cluster; default: SQLite in the data directory (standalone).
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,

    /// Content store directory; default: `<data-dir>/content`.
    #[arg(long, env = "SCAIDRIVE_CONTENT_DIR")]
    pub content_dir: Option<PathBuf>,

    /// Address of the REST API.
    #[arg(long, env = "SCAIDRIVE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Largest file accepted, in bytes (default: no limit).
    #[arg(long, env = "SCAIDRIVE_MAX_FILE_SIZE")]
    pub max_file_size: Option<u64>,

    /// The key sealing connector credentials: 32 bytes as 64 hex digits or base64. Default:
    /// the key file. Every replica must use the same key.
    #[arg(long = "secret-key", env = "SCAIDRIVE_SECRET_KEY", hide_env_values = true)]
    pub secret_key: Option<crate::secrets::Secret>,

    /// The key file used when `SCAIDRIVE_SECRET_KEY` is unset; default `<data-dir>/secret.key`
    /// (created with mode 0600 on first start).
    #[arg(long, env = "SCAIDRIVE_SECRET_KEY_FILE")]
    pub secret_key_file: Option<PathBuf>,

    /// Address of the gRPC service the sync workers talk to.
    #[arg(long, env = "SCAIDRIVE_GRPC_LISTEN", default_value = "127.0.0.1:8081")]
    pub grpc_listen: SocketAddr,

    /// The token every sync worker presents; default: `<data-dir>/worker-token`, created
    /// (mode 0600) on first start.
    #[arg(long, env = "SCAIDRIVE_WORKER_TOKEN", hide_env_values = true)]
    pub worker_token: Option<String>,

    /// RabbitMQ (`amqp://user:password@host:5672/vhost`); default: an in-process queue
    /// (standalone mode).
    #[arg(long, env = "SCAIDRIVE_AMQP_URL", hide_env_values = true)]
    pub amqp_url: Option<String>,

    /// Sync workers run inside this process (default: 2 with the in-process queue, 0 with
    /// RabbitMQ, where `sync-worker` processes do the work).
    #[arg(long, env = "SCAIDRIVE_EMBEDDED_WORKERS")]
    pub embedded_workers: Option<usize>,

    /// The worker pools the embedded workers serve (comma-separated; `--embedded-workers`
    /// workers each).
    #[arg(long, env = "SCAIDRIVE_EMBEDDED_WORKER_POOLS", value_delimiter = ',', default_value = "default")]
    pub embedded_worker_pools: Vec<String>,

    /// Embedded workers watch idle connectors for SMB change notifications (as `sync-worker`'s
    /// `SCAIDRIVE_WATCH`; `SCAIDRIVE_MAX_WATCHES` and `SCAIDRIVE_WATCH_DEBOUNCE_MS` apply too).
    #[arg(long, env = "SCAIDRIVE_WATCH", default_value_t = true, action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new())]
    pub embedded_watch: bool,

    /// Files in flight per job of an embedded worker (as `sync-worker`'s `--max-transfers`).
    #[arg(long = "max-transfers", env = "SCAIDRIVE_MAX_TRANSFERS", default_value_t = 32)]
    pub embedded_max_transfers: usize,

    /// Of those, files over 1 MiB in flight (as `sync-worker`'s `--max-large-transfers`).
    #[arg(long = "max-large-transfers", env = "SCAIDRIVE_MAX_LARGE_TRANSFERS", default_value_t = 4)]
    pub embedded_max_large_transfers: usize,

    /// SMB connections per job of an embedded worker (as `sync-worker`'s `--smb-connections`).
    #[arg(long = "smb-connections", env = "SCAIDRIVE_SMB_CONNECTIONS", default_value_t = 4)]
    pub embedded_smb_connections: usize,

    /// Synced states the embedded workers keep between runs, together (as `sync-worker`'s
    /// `--state-cache-items`).
    #[arg(long = "state-cache-items", env = "SCAIDRIVE_STATE_CACHE_ITEMS", default_value_t = sync_worker::state_cache::DEFAULT_ITEMS)]
    pub embedded_state_cache_items: usize,

    /// How often due scheduled runs are looked for, in milliseconds.
    #[arg(long, env = "SCAIDRIVE_SCHEDULER_TICK_MS", default_value = "5000")]
    pub scheduler_tick_ms: u64,
}

impl Config {
    /// A configuration for tests and tools: everything under `data_dir`.
    pub fn for_dir(data_dir: PathBuf, database_url: Option<String>) -> Config {
        Config {
            data_dir,
            database_url,
            content_dir: None,
            listen: "127.0.0.1:0".parse().expect("valid address"),
            max_file_size: None,
            grpc_listen: "127.0.0.1:0".parse().expect("valid address"),
            worker_token: None,
            amqp_url: None,
            embedded_workers: Some(0),
            embedded_worker_pools: vec!["default".to_string()],
            // Off for tests and tools: change-triggered runs would interleave with theirs.
            embedded_watch: false,
            embedded_max_transfers: 32,
            embedded_max_large_transfers: 4,
            embedded_smb_connections: 4,
            embedded_state_cache_items: sync_worker::state_cache::DEFAULT_ITEMS,
            scheduler_tick_ms: 1000,
            secret_key: None,
            secret_key_file: None,
        }
    }

    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(u) => u.clone(),
            None => format!("sqlite://{}", self.data_dir.join("scaidrive.db").display()),
        }
    }

    pub fn is_standalone(&self) -> bool {
        !self.database_url().starts_with("postgres")
    }

    pub fn content_dir(&self) -> PathBuf {
        self.content_dir.clone().unwrap_or_else(|| self.data_dir.join("content"))
    }

    pub fn secret_key_file(&self) -> PathBuf {
        self.secret_key_file.clone().unwrap_or_else(|| self.data_dir.join("secret.key"))
    }

    pub fn worker_token_file(&self) -> PathBuf {
        self.data_dir.join("worker-token")
    }

    /// Embedded workers to run: as configured, else 2 with the in-process queue and 0 with
    /// RabbitMQ.
    pub fn embedded_workers(&self) -> usize {
        self.embedded_workers.unwrap_or(if self.amqp_url.is_some() { 0 } else { 2 })
    }

    pub fn admin_token_file(&self) -> PathBuf {
        self.data_dir.join("admin-token")
    }
}
