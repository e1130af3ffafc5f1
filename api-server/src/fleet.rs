//! The control plane's side of the job queue: publishing sync jobs, the scheduler, the
//! sweeper that republishes jobs whose message may be missing, the dead-letter consumer, and
//! connectivity tests answered by workers.
//!
//! Queue messages carry ids only (`{"job_id", "connector_id"}`, `{"test_id"}`): never a
//! secret. Publishing happens after the job row is committed; a crash in between leaves a job
//! with `published_at` NULL, which the sweeper publishes. Duplicate messages are harmless:
//! claims are idempotent, finished jobs refuse a claim, and the lease keeps runs apart.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use jobqueue::{JobQueue, Message};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::error::{ApiError, ApiResult};
use crate::store::jobs::{self, Decision, Job};
use crate::time::now_ms;
use crate::AppState;

/// Sync jobs for the default worker pool (`scaidrive.sync-jobs.<pool>` for each pool).
pub const JOBS_QUEUE: &str = sync_worker::SYNC_JOBS_QUEUE;
/// Connectivity tests (request/reply) for the default pool.
pub const TESTS_QUEUE: &str = sync_worker::CONNECTION_TESTS_QUEUE;

/// Declares a queue once per state (declaring is idempotent, but a round trip per publish
/// is not free).
async fn ensure_declared(state: &AppState, name: &str) -> ApiResult<()> {
    let known = state.declared_queues.lock().unwrap_or_else(|e| e.into_inner()).contains(name);
    if !known {
        state
            .queue
            .declare(name)
            .await
            .map_err(|e| ApiError::unavailable(format!("the job queue refused to declare {name}: {e}")))?;
        state.declared_queues.lock().unwrap_or_else(|e| e.into_inner()).insert(name.to_string());
    }
    Ok(())
}

/// The worker pool of a connector (`default` if it is gone).
pub async fn pool_of(state: &AppState, connector_id: &str) -> ApiResult<String> {
    let row: Option<(String,)> = sqlx::query_as("SELECT worker_pool FROM connectors WHERE id = $1")
        .bind(connector_id)
        .fetch_optional(&state.db.pool)
        .await?;
    Ok(row.map(|(p,)| p).unwrap_or_else(|| sync_worker::DEFAULT_POOL.to_string()))
}

/// Every pool some connector names, and `default`.
pub async fn known_pools(state: &AppState) -> ApiResult<Vec<String>> {
    let rows: Vec<(String,)> =
        sqlx::query_as("SELECT DISTINCT worker_pool FROM connectors").fetch_all(&state.db.pool).await?;
    let mut pools: Vec<String> = rows.into_iter().map(|(p,)| p).collect();
    if !pools.iter().any(|p| p == sync_worker::DEFAULT_POOL) {
        pools.push(sync_worker::DEFAULT_POOL.to_string());
    }
    pools.sort();
    Ok(pools)
}

/// The body of a job message.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct JobMessage {
    pub job_id: String,
    pub connector_id: String,
}

/// The body of a connectivity-test request.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct TestMessage {
    pub test_id: String,
}

/// Opens the queue the configuration names (RabbitMQ, or the in-process queue) and declares
/// the queues.
pub async fn open_queue(config: &crate::Config) -> anyhow::Result<Arc<dyn JobQueue>> {
    let q: Arc<dyn JobQueue> = match &config.amqp_url {
        Some(url) => {
            let mut rc = jobqueue::RabbitConfig::new(url.clone());
            rc.connection_name = "api-server".into();
            Arc::new(
                jobqueue::RabbitQueue::connect(rc).await.map_err(|e| anyhow::anyhow!("connecting to RabbitMQ: {e}"))?,
            )
        }
        None => Arc::new(jobqueue::MemoryQueue::new()),
    };
    for name in [JOBS_QUEUE, TESTS_QUEUE] {
        q.declare(name).await.map_err(|e| anyhow::anyhow!("declaring queue {name}: {e}"))?;
    }
    Ok(q)
}

/// Publishes a job's message (confirmed by the broker) and records that it was.
pub async fn publish_job(state: &AppState, job: &Job) -> ApiResult<()> {
    let body = serde_json::to_vec(&JobMessage { job_id: job.id.clone(), connector_id: job.connector_id.clone() })
        .map_err(ApiError::internal)?;
    // The trace context of the caller (the REST request, or the scheduler's span) travels
    // in the message headers to the worker.
    let mut msg = Message::new(body).with_header("job_id", job.id.clone());
    for (k, v) in telemetry::propagation::current_headers() {
        msg = msg.with_header(k, v);
    }
    let queue = sync_worker::sync_jobs_queue(&pool_of(state, &job.connector_id).await?);
    ensure_declared(state, &queue).await?;
    state
        .queue
        .publish(&queue, msg)
        .await
        .map_err(|e| ApiError::unavailable(format!("the job queue refused the job: {e}")))?;
    jobs::mark_published(&state.db, &job.id).await
}

/// One scheduler pass: queue (or skip) every due run, publish what was queued.
pub async fn schedule_once(state: &AppState) -> ApiResult<usize> {
    let decisions = jobs::schedule_due(&state.db, now_ms()).await?;
    let n = decisions.len();
    for d in decisions {
        match d {
            Decision::Queued(job) => {
                let span = tracing::info_span!("scheduler.run", job.id = %job.id, connector.id = %job.connector_id);
                let _e = span.enter();
                tracing::info!(job.id = %job.id, connector.id = %job.connector_id, "scheduled run queued");
                if let Err(e) = tracing::Instrument::instrument(publish_job(state, &job), span.clone()).await {
                    // The sweeper publishes it later.
                    tracing::warn!(job.id = %job.id, error = %e.message, "publishing a scheduled job failed");
                }
            }
            Decision::Skipped(job) => {
                crate::observe::job_skipped(&job);
                tracing::info!(job.id = %job.id, connector.id = %job.connector_id, reason = job.reason.as_deref().unwrap_or(""), "scheduled run skipped");
            }
        }
    }
    Ok(n)
}

/// Publishes jobs that may have no live message (see [`jobs::needing_publish`]): never
/// published, or running under a lapsed lease; with `all_queued` (a restart with the
/// in-process queue) every queued job too.
pub async fn sweep_once(state: &AppState, all_queued: bool) -> ApiResult<usize> {
    let now = now_ms();
    let mut n = 0;
    for job in jobs::needing_publish(&state.db, now, now - 5_000, all_queued, REPUBLISH_MS).await? {
        tracing::info!(job.id = %job.id, job.status = %job.status, "publishing a job whose message may be missing");
        publish_job(state, &job).await?;
        n += 1;
    }
    Ok(n)
}

/// How often a running job whose lease lapsed is published again.
const REPUBLISH_MS: i64 = 15_000;

/// Records the reason of every dead-lettered job message on its job.
/// Consumes the dead-letter queue of every pool's jobs queue (pools named later are picked
/// up within a minute).
async fn dead_letters(state: AppState, stop: CancellationToken) {
    let mut watching: HashSet<String> = HashSet::new();
    loop {
        if let Ok(pools) = known_pools(&state).await {
            for pool in pools {
                let queue = sync_worker::sync_jobs_queue(&pool);
                if watching.contains(&queue) || ensure_declared(&state, &queue).await.is_err() {
                    continue;
                }
                watching.insert(queue.clone());
                tokio::spawn(dead_letters_of(state.clone(), queue, stop.clone()));
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(60)) => {}
        }
    }
}

async fn dead_letters_of(state: AppState, queue: String, stop: CancellationToken) {
    let dlq = jobqueue::dead_letter_queue(&queue);
    let mut consumer = match state.queue.consume(&dlq, 8).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "cannot consume the dead-letter queue");
            return;
        }
    };
    loop {
        let next = tokio::select! {
            _ = stop.cancelled() => return,
            n = consumer.next() => n,
        };
        let Some(Ok(delivery)) = next else { return };
        let reason = delivery.reject_reason().unwrap_or("dead-lettered").to_string();
        if let Ok(m) = serde_json::from_slice::<JobMessage>(&delivery.body) {
            let r = sqlx::query(
                "UPDATE jobs SET status = 'failed', error_code = 'POISON_MESSAGE', error_message = $1, finished_at = $2, updated_at = $2
                 WHERE id = $3 AND status IN ('queued', 'running')",
            )
            .bind(format!("the job's queue message was dead-lettered: {reason}"))
            .bind(now_ms())
            .bind(&m.job_id)
            .execute(&state.db.pool)
            .await;
            if let Err(e) = r {
                tracing::warn!(error = %e, "recording a dead-lettered job failed");
                continue; // unacked: retried after a restart
            }
            tracing::warn!(job.id = %m.job_id, reason = %reason, "job message dead-lettered");
        } else {
            tracing::warn!(reason = %reason, "an undecodable job message was dead-lettered");
        }
        let _ = delivery.ack().await;
    }
}

/// Starts the background tasks of the control plane: the scheduler, the sweeper and the
/// dead-letter consumer. They stop when `stop` is cancelled.
pub fn spawn_background(state: AppState, stop: CancellationToken) -> Vec<tokio::task::JoinHandle<()>> {
    let tick = Duration::from_millis(state.config.scheduler_tick_ms.max(100));
    let s1 = state.clone();
    let stop1 = stop.clone();
    let scheduler = tokio::spawn(async move {
        // After a restart with the in-process queue, its messages are gone: publish again.
        let first_all = s1.config.amqp_url.is_none();
        if let Err(e) = sweep_once(&s1, first_all).await {
            tracing::warn!(error = %e.message, "initial sweep failed");
        }
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop1.cancelled() => return,
                _ = ticker.tick() => {}
            }
            if let Err(e) = schedule_once(&s1).await {
                tracing::warn!(error = %e.message, "scheduler pass failed");
            }
            if let Err(e) = sweep_once(&s1, false).await {
                tracing::warn!(error = %e.message, "sweep failed");
            }
        }
    });
    let dlq = tokio::spawn(dead_letters(state, stop));
    vec![scheduler, dlq]
}

/// The answer of a connectivity test, in the REST shape.
pub struct TestAnswer {
    pub success: bool,
    pub message: String,
    pub error: Option<(String, Option<u32>, String)>,
    /// False when no worker answered in time.
    pub answered: bool,
}

/// Asks a worker to test a connection and waits (bounded) for its answer.
pub async fn run_test(state: &AppState, test_id: &str, pool: &str, timeout: Duration) -> ApiResult<TestAnswer> {
    use prost::Message as _;
    let body = serde_json::to_vec(&TestMessage { test_id: test_id.to_string() }).map_err(ApiError::internal)?;
    let queue = sync_worker::connection_tests_queue(pool);
    ensure_declared(state, &queue).await?;
    let reply = state.queue.request(&queue, Message::new(body), timeout).await;
    crate::store::conn_tests::remove(&state.db, test_id).await?;
    match reply {
        Ok(m) => {
            let r = proto::v1::TestConnectionResult::decode(m.body.as_slice()).map_err(ApiError::internal)?;
            Ok(TestAnswer {
                success: r.success,
                message: r.message,
                error: r.error.map(|e| (e.code, e.nt_status, e.message)),
                answered: true,
            })
        }
        Err(jobqueue::Error::Timeout(_)) => Ok(TestAnswer {
            success: false,
            message: format!("no sync worker answered within {} s", timeout.as_secs()),
            error: Some((
                "CONNECTOR_TEST_TIMEOUT".into(),
                None,
                "no sync worker answered in time: check that workers are running and reach the queue".into(),
            )),
            answered: false,
        }),
        Err(e) => Err(ApiError::unavailable(format!("the job queue is unavailable: {e}"))),
    }
}
