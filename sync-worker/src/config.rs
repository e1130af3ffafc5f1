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
    /// Files in flight per job (small files are bound by round trips and commits, so many).
    pub max_transfers: usize,
    /// Of those, files over 1 MiB in flight per job (each keeps a few MiB in flight).
    pub max_large_transfers: usize,
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
    /// SMB change notification of idle connectors (see [`WatchConfig`]).
    pub watch: WatchConfig,
    /// The synced states kept between runs ([`crate::state_cache`]); workers of one process
    /// may share one (standalone mode's embedded workers do).
    pub state_cache: std::sync::Arc<crate::state_cache::StateCache>,
}

/// Change notification: after a completed run a worker keeps watching the connector's SMB
/// tree (CHANGE_NOTIFY) while it is idle and asks for a sync of the changed folders.
///
/// Read from the environment by [`WatchConfig::from_env`] (so the binary and standalone mode
/// take the same settings): `SCAIDRIVE_WATCH` (`1`/`0`, `true`/`false`; default on),
/// `SCAIDRIVE_MAX_WATCHES` (per worker, default 64), `SCAIDRIVE_WATCH_DEBOUNCE_MS` (quiet
/// time before changes are sent, default 1500, at most 10 000).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchConfig {
    /// Watch at all.
    pub enabled: bool,
    /// Connectors watched at once by this worker; later ones are not watched.
    pub max_watches: usize,
    /// Changes are sent once none came for this long (and at the latest [`MAX_DEBOUNCE`]
    /// after the first of a batch).
    pub debounce: Duration,
}

/// The longest debounce, and the longest a reported change waits before it is sent.
pub const MAX_DEBOUNCE: Duration = Duration::from_secs(10);

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig { enabled: true, max_watches: 64, debounce: Duration::from_millis(1500) }
    }
}

impl WatchConfig {
    /// The defaults, overridden by `SCAIDRIVE_WATCH`, `SCAIDRIVE_MAX_WATCHES` and
    /// `SCAIDRIVE_WATCH_DEBOUNCE_MS` where set and valid.
    pub fn from_env() -> Self {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// [`WatchConfig::from_env`] over any variable source.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Self {
        let mut c = WatchConfig::default();
        if let Some(v) = var("SCAIDRIVE_WATCH") {
            match v.trim().to_ascii_lowercase().as_str() {
                "0" | "false" | "off" | "no" => c.enabled = false,
                "1" | "true" | "on" | "yes" => c.enabled = true,
                _ => {}
            }
        }
        if let Some(n) = var("SCAIDRIVE_MAX_WATCHES").and_then(|v| v.trim().parse::<usize>().ok()) {
            c.max_watches = n;
        }
        if let Some(ms) = var("SCAIDRIVE_WATCH_DEBOUNCE_MS").and_then(|v| v.trim().parse::<u64>().ok()) {
            c.debounce = Duration::from_millis(ms).min(MAX_DEBOUNCE);
        }
        c
    }
}

impl WorkerConfig {
    /// A configuration with the documented defaults.
    pub fn new(control_plane_url: impl Into<String>, worker_token: impl Into<String>) -> Self {
        WorkerConfig {
            control_plane_url: control_plane_url.into(),
            worker_token: Secret::new(worker_token),
            worker_id: default_worker_id(),
            max_jobs: 2,
            max_transfers: 32,
            max_large_transfers: 4,
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
            watch: WatchConfig::from_env(),
            state_cache: Default::default(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_settings_come_from_the_environment_with_a_capped_debounce() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
        };
        assert_eq!(WatchConfig::from_vars(env(&[])), WatchConfig::default());
        let c = WatchConfig::from_vars(env(&[
            ("SCAIDRIVE_WATCH", "0"),
            ("SCAIDRIVE_MAX_WATCHES", "3"),
            ("SCAIDRIVE_WATCH_DEBOUNCE_MS", "60000"),
        ]));
        assert_eq!(c, WatchConfig { enabled: false, max_watches: 3, debounce: MAX_DEBOUNCE });
        assert!(WatchConfig::from_vars(env(&[("SCAIDRIVE_WATCH", "bogus")])).enabled);
    }
}
