//! Change notification: after a completed run, the worker keeps watching the connector's SMB
//! tree (CHANGE_NOTIFY, recursive) while it holds the connector's watch lease, and turns the
//! reported changes, debounced, into one `RequestSync` with the changed folders as its scope.
//!
//! - One watcher per connector across the fleet: the control plane's watch lease (separate
//!   from the run lease, so a watch never blocks a run). A refused renewal or request
//!   (connector changed or deleted, lease taken over) stops the watcher; the next completed
//!   run starts a fresh one with the configuration it ran with.
//! - A broken watch (connection lost) is re-subscribed with backoff while the lease is held,
//!   and asks for a whole-tree sync, since changes may have been missed meanwhile; so does an
//!   overflow of the server's notification buffer.
//! - Notifications are hints: Samba reports changes made through SMB, not always those made
//!   directly on its disk. The scheduled full walk stays the backstop.
//!
//! Must never log the connector's credentials (kept in memory for the watcher's life only),
//! and never write anything but sync requests: the runs do the work, under their own lease.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use proto::v1;
use smb_layer::ChangeEvent;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

use crate::config::MAX_DEBOUNCE;
use crate::convert::SmbRoot;
use crate::job::JobContext;
use crate::rpc::{call, duration, RpcError};
use crate::scope::Scope;

/// Codes that end a watch.
pub mod codes {
    pub const WATCH_HELD: &str = "WATCH_HELD";
    pub const WATCH_STALE: &str = "WATCH_STALE";
    pub const WATCH_EXPIRED: &str = "WATCH_EXPIRED";
    pub const WATCH_CONFIG_CHANGED: &str = "WATCH_CONFIG_CHANGED";
}

struct Entry {
    config_version: String,
    stop: CancellationToken,
    generation: u64,
}

/// This worker's watchers, by connector.
#[derive(Default)]
pub struct Watches {
    inner: Mutex<HashMap<String, Entry>>,
    generation: std::sync::atomic::AtomicU64,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Watches {
    /// Connectors watched now.
    pub fn len(&self) -> usize {
        self.inner.lock().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// After a completed run of `conn` (configured as `config_version`): keep the watcher that
    /// runs with this configuration, or replace one with another, or start one.
    pub fn after_completed(
        self: &Arc<Self>,
        ctx: &JobContext,
        conn: v1::ConnectorConfig,
        config_version: String,
        shutdown: &CancellationToken,
    ) {
        if !ctx.config.watch.enabled || config_version.is_empty() || shutdown.is_cancelled() {
            return;
        }
        let id = conn.connector_id.clone();
        let generation = self.generation.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let stop = shutdown.child_token();
        {
            let mut map = self.inner.lock().unwrap();
            match map.get(&id) {
                Some(e) if e.config_version == config_version && !e.stop.is_cancelled() => return,
                Some(e) => {
                    info!(connector.id = %id, "connector changed: replacing its watcher");
                    e.stop.cancel();
                }
                None if map.len() >= ctx.config.watch.max_watches => {
                    info!(connector.id = %id, max = ctx.config.watch.max_watches, "not watching: this worker watches its maximum of connectors");
                    return;
                }
                None => {}
            }
            map.insert(id.clone(), Entry { config_version: config_version.clone(), stop: stop.clone(), generation });
        }
        let (me, ctx) = (self.clone(), ctx.clone());
        let span = tracing::info_span!("watch", connector.id = %id, worker.id = %ctx.config.worker_id);
        let task = tokio::spawn(
            async move {
                run_watch(&ctx, &conn, &config_version, &stop).await;
                stop.cancel();
                let mut map = me.inner.lock().unwrap();
                if map.get(&conn.connector_id).is_some_and(|e| e.generation == generation) {
                    map.remove(&conn.connector_id);
                }
            }
            .instrument(span),
        );
        let mut tasks = self.tasks.lock().unwrap();
        tasks.retain(|t| !t.is_finished());
        tasks.push(task);
    }

    /// Stops every watcher (they release their leases) and waits for them, bounded.
    pub async fn stop_all(&self) {
        for e in self.inner.lock().unwrap().values() {
            e.stop.cancel();
        }
        let tasks: Vec<_> = std::mem::take(&mut *self.tasks.lock().unwrap());
        let _ = tokio::time::timeout(Duration::from_secs(10), futures::future::join_all(tasks)).await;
    }
}

/// Why a watch ended (for the log).
#[derive(Debug)]
enum Ended {
    Stopped,
    Refused(String),
}

fn ended_by(e: &RpcError) -> Option<Ended> {
    match e {
        RpcError::Cancelled => Some(Ended::Stopped),
        RpcError::Refused { detail, .. } => Some(Ended::Refused(format!("{}: {}", detail.code, detail.message))),
        _ => None,
    }
}

async fn run_watch(ctx: &JobContext, conn: &v1::ConnectorConfig, config_version: &str, stop: &CancellationToken) {
    let mut cp = ctx.rpc.cp.clone();
    let ttl = ctx.config.lease_ttl.clamp(Duration::from_secs(10), Duration::from_secs(600));
    let req = v1::AcquireWatchRequest {
        connector_id: conn.connector_id.clone(),
        worker_id: ctx.config.worker_id.clone(),
        ttl: Some(duration(ttl)),
        config_version: config_version.to_string(),
    };
    let token = match call(stop, ctx.rpc.timeout, cp.acquire_watch(req)).await {
        Ok(r) => match r.watch {
            Some(w) => w,
            None => return,
        },
        Err(e) if e.code() == codes::WATCH_HELD => {
            info!("another worker watches this connector");
            return;
        }
        Err(e) => {
            info!(error = %e, "not watching this connector");
            return;
        }
    };
    info!(watch.id = %token.watch_id, watch.token = token.fencing_token, "watching the connector's SMB tree for changes");
    let lost = stop.child_token();
    let renewer = tokio::spawn(renew_loop(ctx.clone(), token.clone(), ttl, lost.clone()));
    let why = watch_loop(ctx, conn, &token, &lost).await;
    lost.cancel();
    renewer.abort();
    let _ = renewer.await;
    let req = v1::ReleaseWatchRequest { watch: Some(token.clone()) };
    let _ = call(&CancellationToken::new(), Duration::from_secs(5), cp.release_watch(req)).await;
    match why {
        Ended::Stopped => info!("stopped watching"),
        Ended::Refused(reason) => info!(reason = %reason, "stopped watching: the control plane refused the watch"),
    }
}

/// Renews every third of the lifetime; cancels `lost` when refused or expired.
async fn renew_loop(ctx: JobContext, token: v1::WatchToken, ttl: Duration, lost: CancellationToken) {
    let mut cp = ctx.rpc.cp.clone();
    let mut valid_until = Instant::now() + ttl;
    loop {
        tokio::select! {
            _ = lost.cancelled() => return,
            _ = tokio::time::sleep(ttl / 3) => {}
        }
        loop {
            let sent = Instant::now();
            let req = v1::RenewWatchRequest { watch: Some(token.clone()), ttl: Some(duration(ttl)) };
            match call(&lost, Duration::from_secs(5), cp.renew_watch(req)).await {
                Ok(_) => {
                    valid_until = sent + ttl;
                    break;
                }
                Err(RpcError::Cancelled) => return,
                Err(RpcError::Unavailable(m)) if Instant::now() + Duration::from_secs(1) < valid_until => {
                    debug!(error = %m, "watch renewal failed; retrying");
                    tokio::select! {
                        _ = lost.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
                Err(e) => {
                    info!(error = %e, "watch lease refused; stopping");
                    lost.cancel();
                    return;
                }
            }
        }
    }
}

/// Subscribes, collects and sends; re-subscribes with backoff when the watch breaks.
async fn watch_loop(
    ctx: &JobContext,
    conn: &v1::ConnectorConfig,
    token: &v1::WatchToken,
    stop: &CancellationToken,
) -> Ended {
    let endpoint = conn.smb.clone().unwrap_or_default();
    let root = SmbRoot::new(&endpoint.base_path);
    let mut backoff = Duration::from_secs(1);
    let mut resubscribed = false;
    loop {
        if stop.is_cancelled() {
            return Ended::Stopped;
        }
        let connected = {
            let creds = conn.credentials.clone().unwrap_or_default();
            let mut cfg = crate::conntest::smb_config(&endpoint, &creds, &ctx.config.smb_timeouts);
            cfg.limits.connections = 1;
            tokio::select! {
                _ = stop.cancelled() => return Ended::Stopped,
                r = smb_layer::SmbClient::connect(cfg) => r,
            }
        };
        match connected {
            Ok(client) => {
                match client.watch(root.as_str(), true).await {
                    Ok(stream) => {
                        if resubscribed {
                            // Changes made while the watch was down were not reported.
                            if let Some(end) = request(ctx, token, &Scope::full(), stop).await {
                                client.close().await;
                                return end;
                            }
                        }
                        backoff = Duration::from_secs(1);
                        if let Some(end) = pump(ctx, token, root.as_str(), stream, stop).await {
                            client.close().await;
                            return end;
                        }
                        info!("the change notification watch broke; subscribing again");
                    }
                    Err(e) => warn!(error = %e, retry_in = ?backoff, "cannot watch the SMB tree; retrying"),
                }
                client.close().await;
            }
            Err(e) => warn!(error = %e, retry_in = ?backoff, "cannot connect to watch the SMB tree; retrying"),
        }
        resubscribed = true;
        tokio::select! {
            _ = stop.cancelled() => return Ended::Stopped,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(60));
    }
}

/// Reads changes until the stream breaks (`None`: subscribe again) or the watch ends.
async fn pump(
    ctx: &JobContext,
    token: &v1::WatchToken,
    root: &str,
    stream: impl futures::Stream<Item = smb_layer::Result<ChangeEvent>>,
    stop: &CancellationToken,
) -> Option<Ended> {
    let quiet = ctx.config.watch.debounce.min(MAX_DEBOUNCE);
    let mut stream = std::pin::pin!(stream);
    let mut batch: Vec<ChangeEvent> = Vec::new();
    let mut first_at: Option<tokio::time::Instant> = None;
    let mut last_at = tokio::time::Instant::now();
    loop {
        let deadline = match first_at {
            Some(f) => (last_at + quiet).min(f + MAX_DEBOUNCE),
            None => tokio::time::Instant::now() + Duration::from_secs(3600),
        };
        tokio::select! {
            _ = stop.cancelled() => return Some(Ended::Stopped),
            _ = tokio::time::sleep_until(deadline), if first_at.is_some() => {
                let scope = Scope::from_events(root, &batch);
                batch.clear();
                first_at = None;
                if !scope.is_empty() {
                    debug!(folders = scope.folders.len(), full = scope.full, "changes reported");
                    if let Some(end) = request(ctx, token, &scope, stop).await {
                        return Some(end);
                    }
                }
            }
            next = stream.next() => match next {
                Some(Ok(ev)) => {
                    last_at = tokio::time::Instant::now();
                    first_at.get_or_insert(last_at);
                    batch.push(ev);
                    if batch.len() > 100_000 {
                        batch.truncate(0);
                        batch.push(ChangeEvent { kind: smb_layer::ChangeKind::Overflow, path: String::new() });
                    }
                }
                Some(Err(e)) => {
                    debug!(error = %e, "watch stream failed");
                    return flush_then(ctx, token, root, &batch, stop).await;
                }
                None => return flush_then(ctx, token, root, &batch, stop).await,
            }
        }
    }
}

/// Sends what was collected before a break, then says "subscribe again".
async fn flush_then(
    ctx: &JobContext,
    token: &v1::WatchToken,
    root: &str,
    batch: &[ChangeEvent],
    stop: &CancellationToken,
) -> Option<Ended> {
    let scope = Scope::from_events(root, batch);
    if !scope.is_empty() {
        if let Some(end) = request(ctx, token, &scope, stop).await {
            return Some(end);
        }
    }
    None
}

/// One `RequestSync` (retried while the control plane is unreachable); `Some` ends the watch.
async fn request(ctx: &JobContext, token: &v1::WatchToken, scope: &Scope, stop: &CancellationToken) -> Option<Ended> {
    let mut cp = ctx.rpc.cp.clone();
    for attempt in 0..5u32 {
        let req = v1::RequestSyncRequest { watch: Some(token.clone()), scope: Some(scope.to_proto()) };
        match call(stop, ctx.rpc.timeout, cp.request_sync(req)).await {
            Ok(r) => {
                info!(job.id = %r.job_id, disposition = r.disposition, folders = scope.folders.len(), full = scope.full, "sync requested for reported changes");
                return None;
            }
            Err(e) => {
                if let Some(end) = ended_by(&e) {
                    return Some(end);
                }
                warn!(error = %e, "requesting a sync failed; retrying");
                tokio::select! {
                    _ = stop.cancelled() => return Some(Ended::Stopped),
                    _ = tokio::time::sleep(Duration::from_secs(1 << attempt.min(4))) => {}
                }
            }
        }
    }
    // The scheduled walk catches what this request was about.
    warn!("giving up on this sync request");
    None
}
