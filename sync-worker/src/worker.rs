//! The worker loop: consume the jobs queue (at most `max_jobs` unsettled deliveries, so at
//! most `max_jobs` connectors at once) and the connection-tests queue, run each delivery, and
//! settle it as its handler says. On shutdown it stops consuming, lets running jobs stop at
//! their next safe point (they hand their message back) and returns once they have.
//!
//! Must never acknowledge a job message before its outcome is recorded, and holds no global
//! state: several workers may run in one process (tests, standalone mode).

use std::sync::Arc;
use std::time::Duration;

use jobqueue::{Delivery, JobQueue, Message};
use prost::Message as _;
use proto::v1;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};

use crate::config::WorkerConfig;
use crate::health::Readiness;
use crate::job::{handle_job, JobContext, Settle};
use crate::message::{decode_job, decode_test};
use crate::rpc::{call, ControlPlane, RpcError};

/// The sync jobs queue.
pub const SYNC_JOBS_QUEUE: &str = "scaidrive.sync-jobs.default";
/// The connectivity tests queue (request/reply).
pub const CONNECTION_TESTS_QUEUE: &str = "scaidrive.connection-tests.default";

/// The pool of connectors and workers that name none.
pub const DEFAULT_POOL: &str = "default";

/// The sync-jobs queue of a worker pool.
pub fn sync_jobs_queue(pool: &str) -> String {
    format!("scaidrive.sync-jobs.{pool}")
}

/// The connection-tests queue of a worker pool.
pub fn connection_tests_queue(pool: &str) -> String {
    format!("scaidrive.connection-tests.{pool}")
}

/// A pool name: `[a-z0-9][a-z0-9-]*`, 1 to 63 characters (it is part of queue names).
pub fn valid_pool_name(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 63
        && !p.starts_with('-')
        && p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Runs the worker until `shutdown` is cancelled and every running job has stopped.
///
/// ```no_run
/// # async fn demo() -> anyhow::Result<()> {
/// use std::sync::Arc;
/// let queue: Arc<dyn jobqueue::JobQueue> = Arc::new(jobqueue::MemoryQueue::new());
/// let shutdown = tokio_util::sync::CancellationToken::new();
/// let config = sync_worker::WorkerConfig::new("http://127.0.0.1:8081", "worker-token");
/// sync_worker::run(config, queue, shutdown).await
/// # }
/// ```
pub async fn run(config: WorkerConfig, queue: Arc<dyn JobQueue>, shutdown: CancellationToken) -> anyhow::Result<()> {
    run_with_readiness(config, queue, shutdown, Readiness::default()).await
}

/// [`run`], reporting whether the jobs consumer runs through `readiness` (for `/readyz`).
pub async fn run_with_readiness(
    config: WorkerConfig,
    queue: Arc<dyn JobQueue>,
    shutdown: CancellationToken,
    readiness: Readiness,
) -> anyhow::Result<()> {
    let rpc = ControlPlane::connect_lazy(&config.control_plane_url, &config.worker_token, config.rpc_timeout)?;
    readiness.set_control_plane(rpc.clone(), config.worker_id.clone(), config.worker_version.clone());
    let ctx = JobContext { config: Arc::new(config), rpc, watches: Default::default() };
    info!(worker.id = %ctx.config.worker_id, max_jobs = ctx.config.max_jobs, max_transfers = ctx.config.max_transfers, "sync worker starting");
    let jobs = tokio::spawn(jobs_loop(ctx.clone(), queue.clone(), shutdown.clone(), readiness.clone()));
    let tests = tokio::spawn(tests_loop(ctx.clone(), queue, shutdown.clone()));
    tokio::spawn(pinger(ctx.clone(), shutdown.clone()));
    let (a, b) = tokio::join!(jobs, tests);
    // Watchers stop with the worker and release their watch leases.
    ctx.watches.stop_all().await;
    a?;
    b?;
    info!("sync worker stopped");
    Ok(())
}

/// Pings the control plane every 20 s: the fleet's live-workers gauge counts these.
async fn pinger(ctx: JobContext, shutdown: CancellationToken) {
    loop {
        let req = v1::PingRequest {
            worker_id: ctx.config.worker_id.clone(),
            worker_version: ctx.config.worker_version.clone(),
            worker_pool: ctx.config.worker_pool.clone(),
        };
        let mut cp = ctx.rpc.cp.clone();
        if let Err(e) = crate::rpc::call(&shutdown, Duration::from_secs(5), cp.ping(req)).await {
            tracing::debug!(error = %e, "ping failed");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(20)) => {}
        }
    }
}

async fn declare(queue: &dyn JobQueue, name: &str, shutdown: &CancellationToken) -> bool {
    loop {
        match queue.declare(name).await {
            Ok(()) => return true,
            Err(e) => {
                warn!(queue.name = name, error = %e, "cannot declare the queue; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return false,
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                }
            }
        }
    }
}

async fn jobs_loop(ctx: JobContext, queue: Arc<dyn JobQueue>, shutdown: CancellationToken, readiness: Readiness) {
    let mut running = JoinSet::new();
    let prefetch = ctx.config.max_jobs.clamp(1, u16::MAX as usize) as u16;
    let jobs_queue = sync_jobs_queue(&ctx.config.worker_pool);
    'outer: while declare(queue.as_ref(), &jobs_queue, &shutdown).await {
        let mut consumer = match queue.consume(&jobs_queue, prefetch).await {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "cannot consume the jobs queue; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_secs(2)) => continue,
                }
            }
        };
        readiness.set_consuming(true);
        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => break 'outer,
                Some(done) = running.join_next(), if !running.is_empty() => {
                    if let Err(e) = done { warn!(error = %e, "job task failed"); }
                    continue;
                }
                n = consumer.next() => n,
            };
            match next {
                Some(Ok(delivery)) => {
                    let (ctx, queue, shutdown) = (ctx.clone(), queue.clone(), shutdown.clone());
                    running.spawn(async move { job_delivery(&ctx, queue.as_ref(), delivery, &shutdown).await });
                }
                Some(Err(e)) => {
                    warn!(error = %e, "jobs consumer failed; re-subscribing");
                    break;
                }
                None => break,
            }
        }
        readiness.set_consuming(false);
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
    readiness.set_consuming(false);
    // The consumer is dropped: no new deliveries. Running jobs stop at their next safe point.
    info!(running = running.len(), "no longer taking jobs; waiting for running jobs to hand back");
    while let Some(done) = running.join_next().await {
        if let Err(e) = done {
            warn!(error = %e, "job task failed");
        }
    }
    let _ = queue;
}

async fn job_delivery(ctx: &JobContext, _queue: &dyn JobQueue, delivery: Delivery, shutdown: &CancellationToken) {
    let msg = match decode_job(&delivery.body) {
        Ok(m) => m,
        Err(reason) => {
            warn!(reason = %reason, "poison job message; dead-lettering");
            if let Err(e) = delivery.reject(reason).await {
                warn!(error = %e, "could not dead-letter the message");
            }
            return;
        }
    };
    // One trace per job: the span continues the trace the api-server put in the message
    // headers (the REST call or the scheduler); its id is on every log line of the job.
    let parent = tracing::info_span!(
        "job",
        otel.kind = "consumer",
        job.id = %msg.job_id,
        connector.id = %msg.connector_id,
        redelivered = delivery.redelivered,
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty
    );
    telemetry::propagation::adopt(&parent, &delivery.headers);
    telemetry::propagation::record_ids(&parent);
    let active = [telemetry::metrics::kv("pool", ctx.config.worker_pool.clone())];
    telemetry::metrics::get().worker_jobs_active.add(1, &active);
    let settle = handle_job(ctx, &msg, shutdown).instrument(parent).await;
    telemetry::metrics::get().worker_jobs_active.add(-1, &active);
    let r = match settle {
        Settle::Ack => {
            crate::crash::point("ack");
            delivery.ack().await
        }
        Settle::Requeue => delivery.nack_requeue().await,
        Settle::Reject(reason) => delivery.reject(reason).await,
    };
    if let Err(e) = r {
        // The broker redelivers what it did not see settled; every job step is idempotent.
        warn!(job.id = %msg.job_id, error = %e, "could not settle the job message");
    }
}

async fn tests_loop(ctx: JobContext, queue: Arc<dyn JobQueue>, shutdown: CancellationToken) {
    let mut running = JoinSet::new();
    let tests_queue = connection_tests_queue(&ctx.config.worker_pool);
    'outer: while declare(queue.as_ref(), &tests_queue, &shutdown).await {
        let mut consumer = match queue.consume(&tests_queue, 4).await {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "cannot consume the connection-tests queue; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_secs(2)) => continue,
                }
            }
        };
        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => break 'outer,
                Some(_) = running.join_next(), if !running.is_empty() => continue,
                n = consumer.next() => n,
            };
            match next {
                Some(Ok(delivery)) => {
                    let (ctx, queue) = (ctx.clone(), queue.clone());
                    running.spawn(async move { test_delivery(&ctx, queue.as_ref(), delivery).await });
                }
                Some(Err(e)) => {
                    warn!(error = %e, "connection-tests consumer failed; re-subscribing");
                    break;
                }
                None => break,
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
    // Tests are short (bounded by SMB timeouts): let them answer.
    while running.join_next().await.is_some() {}
}

/// Answers one connectivity test delivery: fetch the test, run it, reply, ack.
pub async fn test_delivery(ctx: &JobContext, queue: &dyn JobQueue, delivery: Delivery) {
    let msg = match decode_test(&delivery.body) {
        Ok(m) => m,
        Err(reason) => {
            warn!(reason = %reason, "poison test message; dead-lettering");
            let _ = delivery.reject(reason).await;
            return;
        }
    };
    let span = tracing::info_span!("connection_test", test.id = %msg.test_id);
    async {
        let mut cp = ctx.rpc.cp.clone();
        let req = v1::FetchConnectionTestRequest { test_id: msg.test_id.clone(), worker_id: ctx.config.worker_id.clone() };
        let test = match call(&CancellationToken::new(), ctx.rpc.timeout, cp.fetch_connection_test(req)).await {
            Ok(t) => t,
            Err(e @ RpcError::Refused { .. }) if e.code() == "TEST_NOT_FOUND" || e.code() == proto::codes::NODE_NOT_FOUND => {
                info!("test already answered or abandoned by its caller");
                let _ = delivery.ack().await;
                return;
            }
            Err(RpcError::Refused { detail, .. }) => {
                warn!(error.code = %detail.code, error = %detail.message, "test refused by the control plane; dead-lettering");
                let _ = delivery.reject(format!("{}: {}", detail.code, detail.message)).await;
                return;
            }
            Err(e) => {
                warn!(error = %e, "cannot fetch the test; requeueing");
                tokio::time::sleep(Duration::from_secs(1)).await;
                let _ = delivery.nack_requeue().await;
                return;
            }
        };
        let endpoint = test.smb.clone().unwrap_or_default();
        let creds = test.credentials.clone().unwrap_or_default();
        let result = crate::conntest::test_connection(&endpoint, &creds, test.check_write, &ctx.config.smb_timeouts).await;
        info!(success = result.success, error.code = result.error.as_ref().map(|e| e.code.as_str()).unwrap_or(""), "connection test done");
        let reply = Message::new(result.encode_to_vec());
        if let Err(e) = queue.reply(&delivery, reply).await {
            warn!(error = %e, "could not send the test's reply");
        }
        let _ = delivery.ack().await;
    }
    .instrument(span)
    .await
}
