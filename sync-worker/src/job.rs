//! One sync job, from its queue message to its recorded outcome:
//! AcquireLease → heartbeat → ClaimJob → CONNECTING → SCANNING → PLANNING → TRANSFERRING →
//! FINALIZING → CompleteJob → (the caller acks) → ReleaseLease.
//!
//! Every control-plane write carries the lease; a renewal refused, or impossible until the
//! lease's expiry, cancels the run at once (`lease_lost`), and so does any call refused for a
//! stale lease. Cancellation (requested through the progress stream or `CheckCancel`) and
//! shutdown stop the executor between files. Must never log the job's credentials (the
//! generated `SmbCredentials` Debug prints `***`, and nothing here prints them at all) and
//! never settle a message as done before `CompleteJob` succeeded.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use proto::v1;
use sync_engine::{
    ConflictStrategy, Direction, DriveOverlay, ExecOptions, ExecReport, FileIssue, FileTime, FilterConfig, Filters,
    Plan, RelPath, Settings, StateSink,
};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};

use crate::changes::DriveView;
use crate::config::WorkerConfig;
use crate::convert::{synced_of_proto, DriveRoot, SmbRoot};
use crate::drive_replica::DriveTarget;
use crate::message::JobMessage;
use crate::rpc::{call, call_retrying, duration, now_ts, ControlPlane, RpcError};
use crate::scan::{scan_smb, ScanError};
use crate::smb_replica::SmbShare;
use crate::state_sink::StateReporter;

/// How the queue message of a job is settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settle {
    /// The job's outcome is recorded (or there is nothing to do): acknowledge.
    Ack,
    /// Give it back for later or for another worker.
    Requeue,
    /// Poison: dead-letter with this reason.
    Reject(String),
}

/// What a job needs from the worker.
#[derive(Clone)]
pub struct JobContext {
    /// Configuration.
    pub config: Arc<WorkerConfig>,
    /// The control plane.
    pub rpc: ControlPlane,
    /// This worker's change-notification watchers (started after completed runs).
    pub watches: Arc<crate::watch::Watches>,
}

/// How a run ended (one per job; its size does not matter).
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
enum End {
    /// An outcome to record.
    Outcome { outcome: v1::JobOutcome, counts: v1::JobCounts, error: Option<v1::ErrorDetail>, cursor: String },
    /// Stopped by shutdown: hand the job back unfinished.
    Shutdown,
    /// The lease is gone: nothing more may be written.
    LeaseLost,
}

fn detail(code: &str, message: impl Into<String>) -> v1::ErrorDetail {
    v1::ErrorDetail { code: code.to_string(), message: message.into(), ..Default::default() }
}

fn smb_detail(e: &smb_layer::SmbError) -> v1::ErrorDetail {
    let mut d = detail(e.code(), e.to_string());
    if let Some(s) = e.nt_status() {
        d.metadata.insert("nt_status".into(), s.to_string());
    }
    d
}

/// Runs the job of `msg` and says how to settle its message. `shutdown` stops it at the
/// next safe point and hands it back (`Requeue`) without recording an outcome.
pub async fn handle_job(ctx: &JobContext, msg: &JobMessage, shutdown: &CancellationToken) -> Settle {
    let span = tracing::info_span!("sync_job", job.id = %msg.job_id, connector.id = %msg.connector_id, worker.id = %ctx.config.worker_id);
    handle_job_inner(ctx, msg, shutdown).instrument(span).await
}

async fn backoff(ctx: &JobContext, shutdown: &CancellationToken) {
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = tokio::time::sleep(ctx.config.lease_held_backoff) => {}
    }
}

async fn handle_job_inner(ctx: &JobContext, msg: &JobMessage, shutdown: &CancellationToken) -> Settle {
    let cfg = &ctx.config;
    let mut cp = ctx.rpc.cp.clone();
    let req = v1::AcquireLeaseRequest {
        connector_id: msg.connector_id.clone(),
        worker_id: cfg.worker_id.clone(),
        ttl: Some(duration(cfg.lease_ttl)),
    };
    let lease = match call(shutdown, ctx.rpc.timeout, cp.acquire_lease(req)).await {
        Ok(l) => v1::LeaseToken { lease_id: l.lease_id, fencing_token: l.fencing_token },
        Err(e) if e.code() == proto::codes::LEASE_HELD => {
            info!("connector leased by another worker; requeueing later");
            backoff(ctx, shutdown).await;
            return Settle::Requeue;
        }
        Err(e) if e.code() == proto::codes::CONNECTOR_NOT_FOUND => {
            info!("connector deleted; dropping the job");
            return Settle::Ack;
        }
        Err(RpcError::Cancelled) => return Settle::Requeue,
        Err(e) => {
            warn!(error = %e, "cannot acquire the lease; requeueing later");
            backoff(ctx, shutdown).await;
            return Settle::Requeue;
        }
    };
    info!(lease.id = %lease.lease_id, lease.token = lease.fencing_token, "lease acquired");
    let lease_lost = CancellationToken::new();
    let heartbeat = tokio::spawn(heartbeat(ctx.rpc.clone(), lease.clone(), cfg.lease_ttl, lease_lost.clone()));

    let settle = claim_and_run(ctx, msg, &lease, &lease_lost, shutdown).await;

    heartbeat.abort();
    release(ctx, &lease).await;
    settle
}

async fn release(ctx: &JobContext, lease: &v1::LeaseToken) {
    let mut cp = ctx.rpc.cp.clone();
    let req = v1::ReleaseLeaseRequest { lease_id: lease.lease_id.clone(), fencing_token: lease.fencing_token };
    match call(&CancellationToken::new(), Duration::from_secs(5), cp.release_lease(req)).await {
        Ok(r) => info!(released = r.released, "lease released"),
        Err(e) => warn!(error = %e, "could not release the lease (it expires by itself)"),
    }
}

/// Renews the lease every third of its lifetime; cancels `lease_lost` when a renewal is
/// refused or cannot succeed before the lease would expire.
async fn heartbeat(rpc: ControlPlane, lease: v1::LeaseToken, ttl: Duration, lease_lost: CancellationToken) {
    let ttl = ttl.clamp(Duration::from_secs(10), Duration::from_secs(600));
    let period = ttl / 3;
    let mut valid_until = Instant::now() + ttl;
    let mut cp = rpc.cp.clone();
    loop {
        tokio::select! {
            _ = lease_lost.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
        loop {
            let sent = Instant::now();
            let req = v1::RenewLeaseRequest {
                lease_id: lease.lease_id.clone(),
                fencing_token: lease.fencing_token,
                ttl: Some(duration(ttl)),
            };
            let left = valid_until.saturating_duration_since(sent);
            match call(&lease_lost, left.min(period).max(Duration::from_millis(500)), cp.renew_lease(req)).await {
                Ok(_) => {
                    valid_until = sent + ttl;
                    break;
                }
                Err(RpcError::Cancelled) => return,
                Err(RpcError::Unavailable(m)) if Instant::now() + Duration::from_secs(1) < valid_until => {
                    warn!(error = %m, "lease renewal failed; retrying");
                    tokio::select! {
                        _ = lease_lost.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
                Err(e) => {
                    warn!(error = %e, "lease lost; stopping the run");
                    lease_lost.cancel();
                    return;
                }
            }
        }
    }
}

async fn claim_and_run(
    ctx: &JobContext,
    msg: &JobMessage,
    lease: &v1::LeaseToken,
    lease_lost: &CancellationToken,
    shutdown: &CancellationToken,
) -> Settle {
    let cp = ctx.rpc.cp.clone();
    let req = v1::ClaimJobRequest { job_id: msg.job_id.clone(), lease: Some(lease.clone()) };
    let spec = match call_retrying(lease_lost, ctx.rpc.timeout, 3, || {
        let (mut c, r) = (cp.clone(), req.clone());
        async move { c.claim_job(r).await }
    })
    .await
    {
        Ok(r) => match r.job {
            Some(j) => j,
            None => return Settle::Reject("ClaimJob answered without a job".into()),
        },
        Err(e) if e.code() == proto::codes::JOB_FINISHED => {
            info!("job already finished; acknowledging");
            return Settle::Ack;
        }
        Err(e) if e.code() == proto::codes::JOB_NOT_FOUND || e.code() == proto::codes::JOB_LEASE_MISMATCH => {
            warn!(error = %e, "job message refused by the control plane");
            return Settle::Reject(e.to_string());
        }
        Err(e) => {
            warn!(error = %e, "cannot claim the job; requeueing");
            return Settle::Requeue;
        }
    };
    info!(job.attempt = spec.attempt, trigger = spec.trigger, scoped = spec.scope.is_some(), "job claimed");
    // What a watcher started after this run needs (kept only if the run completes).
    let watched = (spec.connector.clone(), spec.config_version.clone());

    let run = Run::new(ctx.clone(), spec, lease.clone(), lease_lost.clone(), shutdown.clone());
    let end = run.run().await;
    match end {
        End::Shutdown => {
            info!("stopped by shutdown; handing the job back");
            Settle::Requeue
        }
        End::LeaseLost => {
            warn!("lease lost during the run; nothing more is written, the job will be redelivered");
            Settle::Requeue
        }
        End::Outcome { outcome, counts, error, cursor } => {
            let req = v1::CompleteJobRequest {
                job_id: msg.job_id.clone(),
                lease: Some(lease.clone()),
                outcome: outcome as i32,
                counts: Some(counts),
                error: error.clone(),
                scaidrive_cursor: cursor,
            };
            let cp = ctx.rpc.cp.clone();
            match call_retrying(lease_lost, ctx.rpc.timeout, 10, || {
                let (mut c, r) = (cp.clone(), req.clone());
                async move { c.complete_job(r).await }
            })
            .await
            {
                Ok(r) => {
                    info!(outcome = ?outcome, already_recorded = r.already_recorded, error.code = error.as_ref().map(|e| e.code.as_str()).unwrap_or(""), "job completed");
                    if let (v1::JobOutcome::Completed, (Some(conn), version)) = (outcome, watched) {
                        ctx.watches.after_completed(ctx, conn, version, shutdown);
                    }
                    Settle::Ack
                }
                Err(e) if e.code() == proto::codes::JOB_FINISHED => Settle::Ack,
                Err(e) => {
                    warn!(error = %e, "could not record the job's outcome; requeueing");
                    Settle::Requeue
                }
            }
        }
    }
}

/// Live progress of a run, sampled by the progress stream.
#[derive(Default)]
struct Board {
    phase: Mutex<Option<v1::JobPhase>>,
    scanned: AtomicU64,
    total: AtomicU64,
    reporter: Mutex<Option<Arc<StateReporter>>>,
}

impl Board {
    fn set_phase(&self, p: v1::JobPhase) {
        *self.phase.lock().unwrap() = Some(p);
        tracing::debug!(phase = ?p, "phase");
    }

    fn counts(&self) -> (v1::JobCounts, String, u64) {
        let mut c = v1::JobCounts { files_scanned: self.scanned.load(Ordering::Relaxed), ..Default::default() };
        let mut path = String::new();
        let mut bytes = 0;
        if let Some(r) = self.reporter.lock().unwrap().as_ref() {
            let t = r.tally();
            c.files_synced = t.progress.files_synced;
            c.files_failed = t.failed;
            c.files_skipped = t.skipped;
            bytes = t.progress.bytes_uploaded + t.progress.bytes_downloaded;
            c.bytes_transferred = bytes;
            path = t.current_path;
        }
        (c, path, bytes)
    }
}

struct Run {
    ctx: JobContext,
    spec: v1::JobSpec,
    lease: v1::LeaseToken,
    lease_lost: CancellationToken,
    shutdown: CancellationToken,
    /// Stops scanning and the executor: cancel requested, shutdown or lease lost.
    stop: CancellationToken,
    cancel_requested: Arc<AtomicBool>,
    board: Arc<Board>,
}

impl Run {
    fn new(
        ctx: JobContext,
        spec: v1::JobSpec,
        lease: v1::LeaseToken,
        lease_lost: CancellationToken,
        shutdown: CancellationToken,
    ) -> Self {
        Run {
            ctx,
            spec,
            lease,
            lease_lost,
            shutdown,
            stop: CancellationToken::new(),
            cancel_requested: Arc::new(AtomicBool::new(false)),
            board: Arc::new(Board::default()),
        }
    }

    async fn run(self) -> End {
        // Anything that must stop the run stops it through `stop`.
        let watch = {
            let (stop, lease_lost, shutdown) = (self.stop.clone(), self.lease_lost.clone(), self.shutdown.clone());
            tokio::spawn(async move {
                tokio::select! {
                    _ = lease_lost.cancelled() => {}
                    _ = shutdown.cancelled() => {}
                    _ = stop.cancelled() => {}
                }
                stop.cancel();
            })
        };
        let progress = tokio::spawn(progress_loop(
            self.ctx.clone(),
            self.spec.job_id.clone(),
            self.lease.clone(),
            self.board.clone(),
            self.stop.clone(),
            self.lease_lost.clone(),
            self.cancel_requested.clone(),
        ));
        let poll = tokio::spawn(cancel_poll(
            self.ctx.clone(),
            self.spec.job_id.clone(),
            self.lease.clone(),
            self.stop.clone(),
            self.lease_lost.clone(),
            self.cancel_requested.clone(),
        ));
        let end = self.phases().await;
        watch.abort();
        poll.abort();
        // Let the last progress sample go out (bounded), then end the stream.
        self.board.set_phase(v1::JobPhase::Finalizing);
        progress.abort();
        end
    }

    /// The end of a run stopped early, by why it was stopped.
    fn stopped(&self, counts: v1::JobCounts) -> End {
        if self.lease_lost.is_cancelled() {
            End::LeaseLost
        } else if self.shutdown.is_cancelled() {
            End::Shutdown
        } else {
            End::Outcome { outcome: v1::JobOutcome::Cancelled, counts, error: None, cursor: String::new() }
        }
    }

    fn failed(&self, error: v1::ErrorDetail) -> End {
        if self.lease_lost.is_cancelled() {
            return End::LeaseLost;
        }
        if self.shutdown.is_cancelled() {
            return End::Shutdown;
        }
        let (counts, _, _) = self.board.counts();
        warn!(error.code = %error.code, error = %error.message, "job failed");
        End::Outcome { outcome: v1::JobOutcome::Failed, counts, error: Some(error), cursor: String::new() }
    }

    async fn phases(&self) -> End {
        let Some(conn) = self.spec.connector.clone() else {
            return self.failed(detail(proto::codes::VALIDATION_FAILED, "the job has no connector configuration"));
        };
        let settings = match settings_of(&conn) {
            Ok(s) => s,
            Err(e) => return self.failed(detail(proto::codes::VALIDATION_FAILED, e)),
        };
        let endpoint = conn.smb.clone().unwrap_or_default();
        let creds = conn.credentials.clone().unwrap_or_default();

        // CONNECTING
        self.board.set_phase(v1::JobPhase::Connecting);
        let mut smb_cfg = crate::conntest::smb_config(&endpoint, &creds, &self.ctx.config.smb_timeouts);
        smb_cfg.limits.connections = self.ctx.config.smb_connections.max(1);
        drop(creds);
        let client = tokio::select! {
            _ = self.stop.cancelled() => return self.stopped(Default::default()),
            r = smb_layer::SmbClient::connect(smb_cfg) => match r {
                Ok(c) => c,
                Err(e) => return self.failed(smb_detail(&e)),
            },
        };
        let end = self.with_client(&client, &conn, &endpoint, settings).await;
        client.close().await;
        end
    }

    async fn with_client(
        &self,
        client: &smb_layer::SmbClient,
        conn: &v1::ConnectorConfig,
        endpoint: &v1::SmbEndpoint,
        settings: Settings,
    ) -> End {
        let smb_root = SmbRoot::new(&endpoint.base_path);
        let drive = DriveTarget::new(
            self.ctx.rpc.clone(),
            self.lease.clone(),
            conn.target_share_id.clone(),
            &conn.target_path,
            self.lease_lost.clone(),
        );
        let drive_root = drive.root().clone();

        // SCANNING: the base, the SMB tree, the ScaiDrive side.
        self.board.set_phase(v1::JobPhase::Scanning);
        let (base, reused) = match self.list_base().await {
            Ok(b) => b,
            Err(e) => return self.rpc_failed(e),
        };
        if let Err(e) = drive.ensure_root().await {
            return self.failed(detail(&e.code, e.message));
        }
        let tracked = base.len();
        let board = self.board.clone();
        let started = now_ts();
        let started = FileTime::from_unix(started.seconds, started.nanos as u32);
        // A change-triggered run with a scope looks only there (not on a first run: there is
        // no base to carry over).
        let scope = self
            .spec
            .scope
            .as_ref()
            .map(crate::scope::Scope::from_proto)
            .filter(|s| !s.full && !base.is_empty() && !self.spec.scaidrive_cursor.is_empty());
        let mut looked_at: Option<u64> = None;
        let walked = match &scope {
            Some(scope) => crate::scope::scan_scoped(client, &smb_root, &settings, &base, scope, &self.stop, |n| {
                board.scanned.store(n, Ordering::Relaxed)
            })
            .instrument(tracing::info_span!("job.walk", scoped_folders = scope.folders.len()))
            .await
            .map(|s| {
                looked_at = Some(s.looked_at);
                s.scan
            }),
            None => {
                scan_smb(client, &smb_root, &settings, &base, &self.stop, |n| board.scanned.store(n, Ordering::Relaxed))
                    .instrument(tracing::info_span!("job.walk"))
                    .await
            }
        };
        let mut smb_scan = match walked {
            Ok(s) => s,
            Err(ScanError::Cancelled) => return self.stopped(self.board.counts().0),
            Err(ScanError::RootNotFound(p)) => {
                return self.failed(detail(
                    crate::conntest::codes::PATH_NOT_FOUND,
                    format!(
                        "the base path {p:?} does not exist in \\\\{}\\{} or is not a folder",
                        endpoint.server_host, endpoint.share_name
                    ),
                ))
            }
            Err(ScanError::Smb(e)) => return self.failed(smb_detail(&e)),
        };
        crate::smb_replica::sweep_temp_leftovers(client, &smb_root, &mut smb_scan.walk, &base, started).await;
        crate::crash::point("listing");
        let first_run = self.spec.scaidrive_cursor.is_empty();
        let (drive_overlay, touched, cursor) = match self
            .drive_side(&drive, &drive_root, &base, first_run)
            .instrument(tracing::info_span!("job.scaidrive_view"))
            .await
        {
            Ok(x) => x,
            Err(e) => return self.rpc_failed(e),
        };
        info!(
            smb.items = smb_scan.walk.len(),
            smb.changed = smb_scan.walk.items.len(),
            drive.changed = drive_overlay.items.len(),
            base.items = base.len(),
            first_run,
            "scanned"
        );

        // PLANNING (CPU work off the runtime; a planner fault fails the job, not the worker).
        self.board.set_phase(v1::JobPhase::Planning);
        let smb_walk = std::mem::take(&mut smb_scan.walk);
        let mut change_times: std::collections::HashMap<RelPath, (FileTime, FileTime)> = Default::default();
        if conn.sync_permissions {
            smb_walk.for_each(&base, |i| {
                change_times.insert(i.path.clone(), (i.change_time, i.last_write));
            });
        }
        // The synced states move into the planner's task and back (no copy); the walk and
        // the ScaiDrive side are dropped there.
        let planned = tokio::task::spawn_blocking(move || {
            let scanned = smb_walk.len() as u64;
            let plan = sync_engine::plan_tracked(smb_walk, drive_overlay, &base, &settings);
            (plan, scanned, base)
        })
        .instrument(tracing::info_span!("job.plan"))
        .await;
        let (plan, scanned, base) = match planned {
            Ok(p) => p,
            Err(e) => return self.failed(detail(proto::codes::INTERNAL, format!("the planner failed: {e}"))),
        };
        // A scoped run counts what it looked at, not what it carried over.
        let scanned = looked_at.unwrap_or(scanned);
        self.board.scanned.store(scanned, Ordering::Relaxed);
        self.board.total.store(plan.actions.len() as u64, Ordering::Relaxed);
        if self.stop.is_cancelled() {
            return self.stopped(self.board.counts().0);
        }

        // TRANSFERRING
        self.board.set_phase(v1::JobPhase::Transferring);
        let reporter = Arc::new(
            StateReporter::new(
                self.ctx.rpc.clone(),
                &self.spec.job_id,
                self.lease.clone(),
                base,
                self.lease_lost.clone(),
            )
            .forgetting(self.ctx.config.state_cache.clone(), &self.spec.connector_id),
        );
        *self.board.reporter.lock().unwrap() = Some(reporter.clone());
        if reused {
            reporter.info(
                crate::state_cache::REUSED,
                format!(
                    "planned against this worker's copy of the {tracked} synced states (unchanged since it listed them); none listed"
                ),
            );
        }
        for issue in &smb_scan.unreadable {
            reporter.report_issue(issue).await;
        }
        for issue in &smb_scan.twins {
            reporter.warn(issue);
        }
        let flusher = {
            let (r, stop, every) = (reporter.clone(), self.stop.clone(), self.ctx.config.state_flush_interval);
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(every) => {}
                    }
                    if let Err(e) = r.flush().await {
                        warn!(error = %e, "file states not sent yet");
                    }
                }
            })
        };
        let smb = SmbShare::with_root(client.clone(), smb_root.clone());
        let opts = ExecOptions {
            max_transfers: self.ctx.config.max_transfers.max(1),
            max_large_transfers: self.ctx.config.max_large_transfers.max(1),
            cancel: self.stop.clone(),
            synced_at: FileTime::from_unix(now_ts().seconds, now_ts().nanos as u32),
        };
        let report = if plan.blocked.is_some() {
            ExecReport { blocked: plan.blocked.clone(), ..Default::default() }
        } else {
            sync_engine::execute(&plan, &smb, &drive, reporter.as_ref(), &opts)
                .instrument(tracing::info_span!("job.transfer", actions = plan.actions.len()))
                .await
        };
        flusher.abort();

        // FINALIZING
        self.board.set_phase(v1::JobPhase::Finalizing);
        if let Err(e) = reporter.flush().instrument(tracing::info_span!("job.commit")).await {
            if e.is_lease_lost() || self.lease_lost.is_cancelled() {
                return End::LeaseLost;
            }
            if !self.shutdown.is_cancelled() {
                return self.failed(detail("FILE_STATES_NOT_RECORDED", format!("could not record file states: {e}")));
            }
        }
        let counts = final_counts(&plan, &report, scanned, smb_scan.unreadable.len() as u64);
        if self.lease_lost.is_cancelled() {
            return End::LeaseLost;
        }
        if report.cancelled || self.stop.is_cancelled() {
            return self.stopped(counts);
        }
        if let Some(g) = &report.blocked {
            let mut d = detail(
                sync_engine::codes::DELETE_GUARD,
                format!(
                    "the run would move {} of {} tracked files ({}%) to the trash, more than the connector allows; nothing was deleted. \
                     If these deletions are intended, raise max_delete_percent for this connector (or delete in smaller steps) and sync again",
                    g.would_delete, g.tracked, g.percent
                ),
            );
            d.metadata.insert("would_delete".into(), g.would_delete.to_string());
            d.metadata.insert("tracked".into(), g.tracked.to_string());
            d.metadata.insert("percent".into(), g.percent.to_string());
            return End::Outcome { outcome: v1::JobOutcome::Failed, counts, error: Some(d), cursor: String::new() };
        }
        if conn.sync_permissions {
            self.board.set_phase(v1::JobPhase::Permissions);
            match self
                .permissions(client, &smb_root, conn, &change_times)
                .instrument(tracing::info_span!("job.permissions"))
                .await
            {
                Err(e) => return self.rpc_failed(e),
                Ok(Some(fatal)) => {
                    return End::Outcome {
                        outcome: v1::JobOutcome::Failed,
                        counts,
                        error: Some(fatal),
                        cursor: String::new(),
                    }
                }
                Ok(None) => {}
            }
            self.board.set_phase(v1::JobPhase::Finalizing);
        }
        let mut errors: Vec<&FileIssue> = report.errors.iter().collect();
        errors.extend(smb_scan.unreadable.iter());
        let advance = cursor_may_advance(&touched, errors.iter().map(|i| &i.path));
        if !advance {
            info!("per-file errors on items the change log touched: the ScaiDrive cursor is kept for the next run");
        }
        End::Outcome {
            outcome: v1::JobOutcome::Completed,
            counts,
            error: None,
            cursor: if advance { cursor } else { String::new() },
        }
    }

    /// The PERMISSIONS phase over every synced item; its job-log lines are recorded here.
    async fn permissions(
        &self,
        client: &smb_layer::SmbClient,
        root: &SmbRoot,
        conn: &v1::ConnectorConfig,
        change_times: &std::collections::HashMap<RelPath, (FileTime, FileTime)>,
    ) -> Result<Option<v1::ErrorDetail>, RpcError> {
        let (base, _) = self.list_base().await?;
        let items: Vec<crate::permissions::Item> = (0..base.len())
            .map(|i| {
                let s = base.state(i);
                crate::permissions::Item {
                    node_id: s.drive.node_id.0.to_string(),
                    change_time: change_times.get(&s.path).map(|t| t.0).unwrap_or(s.smb.change_time),
                    last_write: change_times.get(&s.path).map(|t| t.1).unwrap_or(s.smb.last_write),
                    path: s.path,
                    kind: s.kind,
                }
            })
            .collect();
        drop(base);
        let cx = crate::permissions::PermContext {
            client,
            root,
            rpc: &self.ctx.rpc,
            job_id: &self.spec.job_id,
            lease: &self.lease,
            stop: &self.stop,
            concurrency: (self.ctx.config.max_transfers.max(1) * 2).min(16),
        };
        let out = crate::permissions::replicate(&cx, conn, items).await?;
        let cp = self.ctx.rpc.cp.clone();
        for batch in out.events.chunks(1000) {
            let req = v1::ReportJobEventsRequest {
                job_id: self.spec.job_id.clone(),
                lease: Some(self.lease.clone()),
                events: batch.to_vec(),
            };
            call_retrying(&self.stop, self.ctx.rpc.timeout, 3, || {
                let (mut c, r) = (cp.clone(), req.clone());
                async move { c.report_job_events(r).await }
            })
            .await?;
        }
        Ok(out.fatal.map(|m| detail(crate::permissions::codes::NOT_REPLICATED, m)))
    }

    fn rpc_failed(&self, e: RpcError) -> End {
        if e.is_lease_lost() || self.lease_lost.is_cancelled() {
            self.lease_lost.cancel();
            return End::LeaseLost;
        }
        if matches!(e, RpcError::Cancelled) {
            return self.stopped(self.board.counts().0);
        }
        self.failed(e.to_detail())
    }

    /// The connector's synced states, in their compact form (a million of them in about
    /// 150 MB): this worker's copy when the control plane says they did not change since it
    /// was listed ([`crate::state_cache`]), else listed page by page (and kept for the next
    /// run); true when the copy was reused.
    async fn list_base(&self) -> Result<(Arc<sync_engine::Tracked>, bool), RpcError> {
        let cp = self.ctx.rpc.cp.clone();
        let cache = &self.ctx.config.state_cache;
        let connector_id = &self.spec.connector_id;
        let mut held = cache.get(connector_id);
        let started = std::time::Instant::now();
        let mut states = sync_engine::TrackedBuilder::default();
        let mut page_token = String::new();
        let mut version = String::new();
        loop {
            let req = v1::ListFileStatesRequest {
                job_id: self.spec.job_id.clone(),
                lease: Some(self.lease.clone()),
                page_token: page_token.clone(),
                page_size: 5000,
                known_version: held.as_ref().map(|(v, _)| v.clone()).unwrap_or_default(),
            };
            let resp = call_retrying(&self.stop, self.ctx.rpc.timeout, 3, || {
                let (mut c, r) = (cp.clone(), req.clone());
                async move { c.list_file_states(r).await }
            })
            .await?;
            if page_token.is_empty() {
                version = resp.states_version.clone();
                if resp.unchanged {
                    if let Some((_, base)) = held.take() {
                        info!(base.items = base.len(), states.version = %version, "synced states unchanged since this worker listed them");
                        return Ok((base, true));
                    }
                    continue; // (only asked with a copy in hand; if not, list them)
                }
                held = None;
            }
            for s in resp.states.iter().filter_map(synced_of_proto) {
                states.push(s);
            }
            if resp.next_page_token.is_empty() {
                // Sorted by path (a page order that is not gets sorted), the last of equal
                // paths kept, as inserts would.
                let base = Arc::new(states.finish());
                cache.put(connector_id, &version, base.clone());
                info!(
                    base.items = base.len(),
                    states.version = %version,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "synced states listed"
                );
                return Ok((base, false));
            }
            page_token = resp.next_page_token;
        }
    }

    /// The ScaiDrive side against the synced states, the paths the change log touched, and
    /// the cursor to record. With nothing in the change log the synced states are the
    /// ScaiDrive side, and no copy of them is made.
    async fn drive_side(
        &self,
        drive: &DriveTarget,
        root: &DriveRoot,
        base: &sync_engine::Tracked,
        first_run: bool,
    ) -> Result<(DriveOverlay, BTreeSet<RelPath>, String), RpcError> {
        if first_run {
            // The cursor is taken before the listing: changes made meanwhile are replayed next
            // run (replay is idempotent), none is missed.
            let cursor = drive.list_changes("", |_| {}).await?;
            let mut nodes = Vec::new();
            drive.list_all(|n| nodes.push(n)).await?;
            let view = DriveView::from_listing(root, nodes);
            let touched: BTreeSet<RelPath> = view.snapshot.items.keys().cloned().collect();
            return Ok((DriveOverlay::from_snapshot(base, view.finish()), touched, cursor));
        }
        let mut replayed: Option<DriveView> = None;
        let cursor = drive
            .list_changes(&self.spec.scaidrive_cursor, |page| {
                if !page.is_empty() {
                    replayed.get_or_insert_with(|| DriveView::from_tracked(base)).apply(root, &page)
                }
            })
            .await?;
        // (A stale base naming one node at two paths needs the view, which keeps one.)
        let mut view = match replayed {
            Some(view) => view,
            None if base.node_ids_unique() => return Ok((DriveOverlay::unchanged(base), BTreeSet::new(), cursor)),
            None => DriveView::from_tracked(base),
        };
        let ids: Vec<_> = view.needs_stat.iter().cloned().collect();
        let mut stats =
            futures::stream::iter(ids).map(|id| async move { drive.stat_node(&id.0).await }).buffer_unordered(8);
        let mut fresh = Vec::new();
        while let Some(r) = stats.next().await {
            if let Some(n) = r? {
                fresh.push(n);
            }
        }
        for n in &fresh {
            view.refresh(root, n);
        }
        let touched = std::mem::take(&mut view.touched);
        Ok((DriveOverlay::from_snapshot(base, view.finish()), touched, cursor))
    }
}

/// Whether the new change-log cursor may be recorded: not if an item the log touched (or
/// one inside or above it) failed, because the next run starts from the synced states and
/// would not see that change again.
pub fn cursor_may_advance<'a>(touched: &BTreeSet<RelPath>, mut errors: impl Iterator<Item = &'a RelPath>) -> bool {
    !errors.any(|p| touched.contains(p) || touched.iter().any(|t| t.is_inside(p) || p.is_inside(t)))
}

fn final_counts(plan: &Plan, report: &ExecReport, scanned: u64, unreadable: u64) -> v1::JobCounts {
    let failed: BTreeSet<&RelPath> = report.errors.iter().map(|i| &i.path).collect();
    let deleted = plan.actions.iter().filter(|a| a.is_destructive() && !failed.contains(a.path())).count() as u64;
    v1::JobCounts {
        files_scanned: scanned,
        files_synced: report.files_synced,
        files_failed: report.errors.len() as u64 + unreadable,
        files_skipped: report.skipped.len() as u64,
        files_deleted: if report.blocked.is_some() || report.cancelled { 0 } else { deleted },
        conflicts: report.conflicts,
        bytes_transferred: report.bytes_uploaded + report.bytes_downloaded,
    }
}

/// The engine's settings of a connector.
pub fn settings_of(c: &v1::ConnectorConfig) -> Result<Settings, String> {
    let direction = match v1::SyncDirection::try_from(c.direction).unwrap_or(v1::SyncDirection::Unspecified) {
        v1::SyncDirection::ScaidriveToSmb => Direction::DriveToSmb,
        v1::SyncDirection::Bidirectional => Direction::Bidirectional,
        _ => Direction::SmbToDrive,
    };
    let conflict =
        match v1::ConflictResolution::try_from(c.conflict_resolution).unwrap_or(v1::ConflictResolution::Unspecified) {
            v1::ConflictResolution::KeepBoth => ConflictStrategy::KeepBoth,
            v1::ConflictResolution::ScaidriveWins => ConflictStrategy::DriveWins,
            v1::ConflictResolution::SmbWins => ConflictStrategy::SmbWins,
            _ => ConflictStrategy::LastWriterWins,
        };
    let inc = c.include.clone().unwrap_or_default();
    let exc = c.exclude.clone().unwrap_or_default();
    let filters = Filters::new(&FilterConfig {
        include_extensions: inc.extensions,
        include_patterns: inc.patterns,
        exclude_extensions: exc.extensions,
        exclude_patterns: exc.patterns,
    })
    .map_err(|e| e.to_string())?;
    Ok(Settings {
        direction,
        conflict,
        filters,
        sync_hidden: c.sync_hidden_files,
        sync_system: c.sync_system_files,
        max_delete_percent: c.max_delete_percent.map_or(Settings::default().max_delete_percent, |p| p.min(100) as u8),
    })
}

/// Feeds `ReportProgress` every interval; a reply with `cancel_requested` stops the run.
async fn progress_loop(
    ctx: JobContext,
    job_id: String,
    lease: v1::LeaseToken,
    board: Arc<Board>,
    stop: CancellationToken,
    lease_lost: CancellationToken,
    cancel_requested: Arc<AtomicBool>,
) {
    let every = ctx.config.progress_interval;
    let mut last_bytes = 0u64;
    let mut last_at = Instant::now();
    loop {
        let (tx, rx) = tokio::sync::mpsc::channel::<v1::ProgressUpdate>(4);
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        let mut cp = ctx.rpc.cp.clone();
        let mut reply = Box::pin(async move { cp.report_progress(stream).await });
        let mut tick = tokio::time::interval(every);
        let ended = loop {
            tokio::select! {
                r = &mut reply => break Some(r),
                _ = tick.tick() => {
                    let (counts, current_path, bytes) = board.counts();
                    let dt = last_at.elapsed().as_secs_f64().max(0.001);
                    let rate = (bytes.saturating_sub(last_bytes) as f64 / dt) as u64;
                    last_bytes = bytes;
                    last_at = Instant::now();
                    let phase = board.phase.lock().unwrap().unwrap_or(v1::JobPhase::Connecting);
                    let update = v1::ProgressUpdate {
                        job_id: job_id.clone(),
                        lease: Some(lease.clone()),
                        phase: phase as i32,
                        counts: Some(counts),
                        files_total: board.total.load(Ordering::Relaxed),
                        bytes_total: 0,
                        bytes_per_second: rate,
                        current_path,
                        observed_at: Some(now_ts()),
                    };
                    if tx.try_send(update).is_err() && tx.is_closed() {
                        break None;
                    }
                }
            }
        };
        match ended {
            Some(Ok(r)) if r.get_ref().cancel_requested => {
                info!("cancellation requested; stopping between files");
                cancel_requested.store(true, Ordering::SeqCst);
                stop.cancel();
                return;
            }
            Some(Err(s)) => {
                let e = RpcError::from_status(s);
                if e.is_lease_lost() {
                    lease_lost.cancel();
                    return;
                }
                tracing::debug!(error = %e, "progress stream ended; reopening");
            }
            _ => {}
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// Polls `CheckCancel` between items.
async fn cancel_poll(
    ctx: JobContext,
    job_id: String,
    lease: v1::LeaseToken,
    stop: CancellationToken,
    lease_lost: CancellationToken,
    cancel_requested: Arc<AtomicBool>,
) {
    let mut cp = ctx.rpc.cp.clone();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(ctx.config.cancel_poll_interval) => {}
        }
        let req = v1::CheckCancelRequest { job_id: job_id.clone(), lease: Some(lease.clone()) };
        match call(&stop, ctx.rpc.timeout, cp.check_cancel(req)).await {
            Ok(r) if r.cancel_requested => {
                info!(reason = %r.reason, "cancellation requested; stopping between files");
                cancel_requested.store(true, Ordering::SeqCst);
                stop.cancel();
                return;
            }
            Ok(_) => {}
            Err(e) if e.is_lease_lost() => {
                lease_lost.cancel();
                return;
            }
            Err(e) => tracing::debug!(error = %e, "CheckCancel failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> RelPath {
        RelPath::new(s).unwrap()
    }

    #[test]
    fn the_cursor_is_held_back_only_for_errors_on_touched_items() {
        let touched: BTreeSet<RelPath> = [p("docs/a.txt"), p("new")].into();
        assert!(cursor_may_advance(&touched, [p("other.txt")].iter()));
        assert!(!cursor_may_advance(&touched, [p("docs/a.txt")].iter()));
        assert!(!cursor_may_advance(&touched, [p("docs")].iter()));
        assert!(!cursor_may_advance(&touched, [p("new/x")].iter()));
        assert!(cursor_may_advance(&touched, std::iter::empty()));
    }

    #[test]
    fn connector_settings_map_to_the_engine() {
        let c = v1::ConnectorConfig {
            direction: v1::SyncDirection::SmbToScaidrive as i32,
            conflict_resolution: v1::ConflictResolution::KeepBoth as i32,
            exclude: Some(v1::PathFilter { extensions: vec!["tmp".into()], patterns: vec!["~$*".into()] }),
            sync_hidden_files: true,
            ..Default::default()
        };
        let s = settings_of(&c).unwrap();
        assert_eq!(s.direction, Direction::SmbToDrive);
        assert_eq!(s.conflict, ConflictStrategy::KeepBoth);
        assert!(s.sync_hidden && !s.sync_system);
        assert!(s.filters.excludes_path(&p("a/~$x.docx"), sync_engine::ItemKind::File));
        assert!(s.filters.excludes_path(&p("a/x.TMP"), sync_engine::ItemKind::File));
        let bad = v1::ConnectorConfig {
            exclude: Some(v1::PathFilter { extensions: vec![], patterns: vec!["a[".into()] }),
            ..Default::default()
        };
        assert!(settings_of(&bad).is_err());
    }
}
