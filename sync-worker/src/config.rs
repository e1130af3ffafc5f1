//! The worker's configuration. Must never print the worker token (`Secret`'s `Debug` is `***`).

use std::fmt;
use std::time::Duration;

/// A string that never shows in `Debug`/`Display` output.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The value; call only where it is handed over (the `authorization` header).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Everything [`crate::run`] needs besides the queue and the shutdown token.
///
/// ```
/// let mut cfg = sync_worker::WorkerConfig::new("http://127.0.0.1:8081", "token");
/// cfg.max_jobs = 4;
/// assert!(!format!("{cfg:?}").contains("token\""));
/// ```
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// The api-server's gRPC address, e.g. `http://127.0.0.1:8081`.
    pub control_plane_url: String,
    /// The fleet's worker token (`authorization: Bearer …`).
    pub worker_token: Secret,
    /// This worker's identity (lease holder, logs).
    pub worker_id: String,
    /// Jobs (connectors) run at once; also the jobs consumer's prefetch.
    pub max_jobs: usize,
    /// Files in flight per job.
    pub max_transfers: usize,
    /// SMB connections per job (a pool the walk and the transfers spread over; at least 1).
    /// Samba serves each connection from one single-threaded process, so more than one lets
    /// a job use more than one server core.
    pub smb_connections: usize,
    /// Requested lease lifetime; renewed every third of it.
    pub lease_ttl: Duration,
    /// How long a job whose connector is leased elsewhere waits before it is requeued.
    pub lease_held_backoff: Duration,
    /// How often a progress sample is sent.
    pub progress_interval: Duration,
    /// How often `CheckCancel` is polled during a run.
    pub cancel_poll_interval: Duration,
    /// File states are sent at least this often (and in batches of at most 1000).
    pub state_flush_interval: Duration,
    /// Bound on one unary gRPC call.
    pub rpc_timeout: Duration,
    /// SMB time limits for jobs and tests.
    pub smb_timeouts: smb_layer::Timeouts,
    /// The worker's build version, sent in `Ping`.
    pub worker_version: String,
    /// The worker pool this worker serves (`default` unless configured).
    pub worker_pool: String,
}

impl WorkerConfig {
    /// A configuration with the documented defaults.
    pub fn new(control_plane_url: impl Into<String>, worker_token: impl Into<String>) -> Self {
        WorkerConfig {
            control_plane_url: control_plane_url.into(),
            worker_token: Secret::new(worker_token),
            worker_id: default_worker_id(),
            max_jobs: 2,
            max_transfers: 4,
            smb_connections: 4,
            lease_ttl: Duration::from_secs(30),
            lease_held_backoff: Duration::from_secs(3),
            progress_interval: Duration::from_secs(1),
            cancel_poll_interval: Duration::from_millis(500),
            state_flush_interval: Duration::from_secs(3),
            rpc_timeout: Duration::from_secs(30),
            smb_timeouts: smb_layer::Timeouts::default(),
            worker_version: env!("CARGO_PKG_VERSION").to_string(),
            worker_pool: "default".to_string(),
        }
    }
}

/// `<host name>-<pid>`.
pub fn default_worker_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok().map(|s| s.trim().to_string()))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".to_string());
    format!("{host}-{}", std::process::id())
}
