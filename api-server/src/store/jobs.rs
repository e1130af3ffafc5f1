//! Sync jobs: created by a manual trigger or the schedule, claimed by a worker under the
//! connector's lease, reported on while they run, finished with an outcome.
//!
//! Invariants:
//! - at most one queued-or-running job per connector (a partial unique index);
//! - at most one scheduled job (run or skip) per connector and due time, however many
//!   api-server replicas schedule (a unique index and a compare-and-set on `next_sync_at`);
//! - every worker write (claim, progress, file states, outcome) checks the lease's fencing
//!   token in its own transaction; a stale token commits nothing;
//! - an outcome is recorded once; the queue message is acknowledged only after that.

use sqlx::any::AnyRow;

use super::leases::{self, Fence};
use super::{get_i64, get_opt_i64, get_opt_str, get_str};
use crate::db::Db;
use crate::error::{ApiError, ApiResult};
use crate::ids::{JobId, TenantId};
use crate::time::now_ms;

pub const ACTIVE: [&str; 2] = ["queued", "running"];

#[derive(Clone, Debug, Default)]
pub struct Counts {
    pub files_scanned: i64,
    pub files_synced: i64,
    pub files_failed: i64,
    pub files_skipped: i64,
    pub files_deleted: i64,
    pub conflicts: i64,
    pub bytes_transferred: i64,
}

#[derive(Clone, Debug)]
pub struct Job {
    pub id: String,
    pub tenant_id: String,
    pub connector_id: String,
    pub status: String,
    pub trigger: String,
    pub due_at: Option<i64>,
    pub reason: Option<String>,
    pub requested_by: Option<String>,
    pub worker_id: Option<String>,
    pub lease_id: Option<String>,
    pub fencing_token: Option<i64>,
    pub attempt: i64,
    pub requested_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub phase: Option<String>,
    pub current_path: Option<String>,
    pub files_total: i64,
    pub bytes_total: i64,
    pub bytes_per_second: i64,
    pub counts: Counts,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub cancel_requested: bool,
    pub cancel_reason: Option<String>,
    pub updated_at: i64,
    /// change_notify jobs: the folders to look at (JSON, see `store::watch::Scope`); `None`:
    /// the whole tree.
    pub scope: Option<String>,
    /// A change reported while the job runs: the follow-up's scope (JSON).
    pub follow_up: Option<String>,
}

impl Job {
    pub fn is_active(&self) -> bool {
        ACTIVE.contains(&self.status.as_str())
    }
}

fn job_from(r: &AnyRow) -> Job {
    Job {
        id: get_str(r, "id"),
        tenant_id: get_str(r, "tenant_id"),
        connector_id: get_str(r, "connector_id"),
        status: get_str(r, "status"),
        trigger: get_str(r, "trigger_kind"),
        due_at: get_opt_i64(r, "due_at"),
        reason: get_opt_str(r, "reason"),
        requested_by: get_opt_str(r, "requested_by"),
        worker_id: get_opt_str(r, "worker_id"),
        lease_id: get_opt_str(r, "lease_id"),
        fencing_token: get_opt_i64(r, "fencing_token"),
        attempt: get_i64(r, "attempt"),
        requested_at: get_i64(r, "requested_at"),
        started_at: get_opt_i64(r, "started_at"),
        finished_at: get_opt_i64(r, "finished_at"),
        phase: get_opt_str(r, "phase"),
        current_path: get_opt_str(r, "current_path"),
        files_total: get_i64(r, "files_total"),
        bytes_total: get_i64(r, "bytes_total"),
        bytes_per_second: get_i64(r, "bytes_per_second"),
        counts: Counts {
            files_scanned: get_i64(r, "files_scanned"),
            files_synced: get_i64(r, "files_synced"),
            files_failed: get_i64(r, "files_failed"),
            files_skipped: get_i64(r, "files_skipped"),
            files_deleted: get_i64(r, "files_deleted"),
            conflicts: get_i64(r, "conflicts"),
            bytes_transferred: get_i64(r, "bytes_transferred"),
        },
        error_code: get_opt_str(r, "error_code"),
        error_message: get_opt_str(r, "error_message"),
        cancel_requested: get_i64(r, "cancel_requested") != 0,
        cancel_reason: get_opt_str(r, "cancel_reason"),
        updated_at: get_i64(r, "updated_at"),
        scope: get_opt_str(r, "scope"),
        follow_up: get_opt_str(r, "follow_up"),
    }
}

pub async fn get(db: &Db, id: &str) -> ApiResult<Option<Job>> {
    Ok(sqlx::query("SELECT * FROM jobs WHERE id = $1").bind(id).fetch_optional(&db.pool).await?.map(|r| job_from(&r)))
}

/// A job of a connector (404 otherwise).
pub async fn get_for(db: &Db, connector_id: &str, id: &str) -> ApiResult<Job> {
    get(db, id).await?.filter(|j| j.connector_id == connector_id).ok_or_else(|| ApiError::not_found("job"))
}

pub async fn active(db: &Db, connector_id: &str) -> ApiResult<Option<Job>> {
    Ok(sqlx::query("SELECT * FROM jobs WHERE connector_id = $1 AND status IN ('queued', 'running')")
        .bind(connector_id)
        .fetch_optional(&db.pool)
        .await?
        .map(|r| job_from(&r)))
}

/// A connector's jobs, newest first, before `before` (a job id from the previous page).
pub async fn list(db: &Db, connector_id: &str, before: Option<&str>, limit: i64) -> ApiResult<Vec<Job>> {
    let rows =
        sqlx::query("SELECT * FROM jobs WHERE connector_id = $1 AND ($2 = '' OR id < $2) ORDER BY id DESC LIMIT $3")
            .bind(connector_id)
            .bind(before.unwrap_or(""))
            .bind(limit)
            .fetch_all(&db.pool)
            .await?;
    Ok(rows.iter().map(job_from).collect())
}

fn running_conflict(active: &Job) -> ApiError {
    ApiError::conflict(
        "SYNC_ALREADY_RUNNING",
        format!("job {} of this connector is {}; it must finish first", active.id, active.status),
    )
    .with_details(serde_json::json!({ "job_id": active.id, "status": active.status }))
}

/// Queues a manual run, or 409 `SYNC_ALREADY_RUNNING` naming the job that is queued or running.
pub async fn create_manual(db: &Db, tenant: &TenantId, connector_id: &str, requested_by: &str) -> ApiResult<Job> {
    if let Some(a) = active(db, connector_id).await? {
        return Err(running_conflict(&a));
    }
    let now = now_ms();
    let id = JobId::generate().to_string();
    let r = sqlx::query(
        "INSERT INTO jobs (id, tenant_id, connector_id, status, trigger_kind, requested_by, requested_at, updated_at)
         VALUES ($1, $2, $3, 'queued', 'manual', $4, $5, $5)",
    )
    .bind(&id)
    .bind(tenant.as_str())
    .bind(connector_id)
    .bind(requested_by)
    .bind(now)
    .execute(&db.pool)
    .await;
    match r {
        Ok(_) => {}
        Err(e) if e.as_database_error().is_some_and(|d| d.is_unique_violation()) => {
            // Lost a race with another trigger.
            let a = active(db, connector_id)
                .await?
                .ok_or_else(|| ApiError::conflict("SYNC_ALREADY_RUNNING", "a job is already queued"))?;
            return Err(running_conflict(&a));
        }
        Err(e) => return Err(e.into()),
    }
    get(db, &id).await?.ok_or_else(|| ApiError::internal("job vanished after insert"))
}

/// What the scheduler decided for one due connector.
#[derive(Debug)]
pub enum Decision {
    Queued(Job),
    Skipped(Job),
}

/// Takes every connector whose run is due: moves its `next_sync_at` forward (a
/// compare-and-set, so one replica wins each due time) and, in the same transaction,
/// queues a job, or records a skipped one if the previous run is still going.
pub async fn schedule_due(db: &Db, now: i64) -> ApiResult<Vec<Decision>> {
    let due: Vec<(String, String, i64, i64)> = sqlx::query_as(
        "SELECT id, tenant_id, next_sync_at, sync_interval_minutes FROM connectors
         WHERE next_sync_at IS NOT NULL AND next_sync_at <= $1 AND sync_interval_minutes > 0 ORDER BY next_sync_at LIMIT 100",
    )
    .bind(now)
    .fetch_all(&db.pool)
    .await?;
    let mut out = Vec::new();
    for (connector_id, tenant_id, due_at, interval) in due {
        let interval_ms = interval * 60_000;
        // The next due time after now, on the connector's cadence (missed slots are not replayed).
        let missed = (now - due_at) / interval_ms;
        let next = due_at + (missed + 1) * interval_ms;
        let mut tx = db.begin().await?;
        let won = sqlx::query("UPDATE connectors SET next_sync_at = $1 WHERE id = $2 AND next_sync_at = $3")
            .bind(next)
            .bind(&connector_id)
            .bind(due_at)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            == 1;
        if !won {
            continue;
        }
        let running: Option<(String, String)> =
            sqlx::query_as("SELECT id, status FROM jobs WHERE connector_id = $1 AND status IN ('queued', 'running')")
                .bind(&connector_id)
                .fetch_optional(&mut *tx)
                .await?;
        let id = JobId::generate().to_string();
        let (status, reason) = match &running {
            Some((rid, rstatus)) => (
                "skipped",
                Some(format!(
                    "the previous run ({rid}) is still {rstatus}; this due run was skipped rather than overlap"
                )),
            ),
            None => ("queued", None),
        };
        let finished = (status == "skipped").then_some(now);
        let inserted = sqlx::query(
            "INSERT INTO jobs (id, tenant_id, connector_id, status, trigger_kind, due_at, reason, requested_at, finished_at, updated_at)
             VALUES ($1, $2, $3, $4, 'scheduled', $5, $6, $7, $8, $7)",
        )
        .bind(&id)
        .bind(&tenant_id)
        .bind(&connector_id)
        .bind(status)
        .bind(due_at)
        .bind(reason)
        .bind(now)
        .bind(finished)
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => {}
            // A job for this due time exists already (the due time was set again to one that
            // was scheduled before), or a run became active meanwhile: nothing to add.
            Err(e) if e.as_database_error().is_some_and(|d| d.is_unique_violation()) => {
                tx.rollback().await?;
                continue;
            }
            Err(e) => return Err(e.into()),
        }
        tx.commit().await?;
        let job = get(db, &id).await?.ok_or_else(|| ApiError::internal("job vanished after insert"))?;
        out.push(if status == "queued" { Decision::Queued(job) } else { Decision::Skipped(job) });
    }
    Ok(out)
}

pub async fn mark_published(db: &Db, id: &str) -> ApiResult<()> {
    sqlx::query("UPDATE jobs SET published_at = $1 WHERE id = $2").bind(now_ms()).bind(id).execute(&db.pool).await?;
    Ok(())
}

/// Jobs that may have no live queue message, to be published (again):
/// - queued jobs never published (a crash or a queue outage between commit and publish)
///   requested before `fresh_before` (so the normal path had its chance), or every queued
///   job when `all_queued` (after a restart with the in-process queue, whose messages died);
/// - running jobs whose lease has lapsed (their worker died or froze: a frozen worker's
///   connection can keep its message unacknowledged for ever), at most once per
///   `republish_ms`.
/// Publishing again is safe: claims are idempotent, finished jobs refuse a claim, and the
/// lease keeps runs apart.
pub async fn needing_publish(
    db: &Db,
    now: i64,
    fresh_before: i64,
    all_queued: bool,
    republish_ms: i64,
) -> ApiResult<Vec<Job>> {
    let rows = sqlx::query(
        "SELECT j.* FROM jobs j WHERE
            (j.status = 'queued' AND ($1 = 1 OR (j.published_at IS NULL AND j.requested_at < $2)))
            OR (j.status = 'running' AND NOT EXISTS (
                    SELECT 1 FROM leases l WHERE l.id = j.lease_id AND l.released = 0 AND l.expires_at >= $3)
                AND (j.published_at IS NULL OR j.published_at < $4))
         ORDER BY j.requested_at LIMIT 500",
    )
    .bind(all_queued as i64)
    .bind(fresh_before)
    .bind(now)
    .bind(now - republish_ms)
    .fetch_all(&db.pool)
    .await?;
    Ok(rows.iter().map(job_from).collect())
}

/// Why a claim was refused.
#[derive(Debug)]
pub enum ClaimRefusal {
    NotFound,
    Finished(String),
    WrongConnector,
    Lease(leases::Refusal),
}

/// Binds a job to a lease (idempotent for the same lease; a newer lease takes over a job left
/// running by a stale one, with `attempt` + 1).
pub async fn claim(
    db: &Db,
    id: &str,
    fence: &Fence,
    worker_id_hint: Option<&str>,
) -> ApiResult<Result<Job, ClaimRefusal>> {
    let mut tx = db.begin().await?;
    let lease = match leases::validate_tx(&mut tx, fence).await? {
        Ok(l) => l,
        Err(r) => return Ok(Err(ClaimRefusal::Lease(r))),
    };
    let Some(job) =
        sqlx::query("SELECT * FROM jobs WHERE id = $1").bind(id).fetch_optional(&mut *tx).await?.map(|r| job_from(&r))
    else {
        return Ok(Err(ClaimRefusal::NotFound));
    };
    if job.connector_id != lease.connector_id {
        return Ok(Err(ClaimRefusal::WrongConnector));
    }
    if !job.is_active() {
        return Ok(Err(ClaimRefusal::Finished(job.status)));
    }
    if job.lease_id.as_deref() == Some(fence.lease_id.as_str()) {
        tx.rollback().await?;
        return Ok(Ok(job));
    }
    let now = now_ms();
    sqlx::query(
        "UPDATE jobs SET status = 'running', worker_id = $1, lease_id = $2, fencing_token = $3, attempt = attempt + 1,
            started_at = COALESCE(started_at, $4), updated_at = $4 WHERE id = $5",
    )
    .bind(worker_id_hint.unwrap_or(&lease.worker_id))
    .bind(&fence.lease_id)
    .bind(fence.token)
    .bind(now)
    .bind(id)
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE connectors SET status = 'syncing', status_message = $1, updated_at = $2 WHERE id = $3")
        .bind(format!("job {id} running"))
        .bind(now)
        .bind(&job.connector_id)
        .execute(&mut *tx)
        .await?;
    let out =
        sqlx::query("SELECT * FROM jobs WHERE id = $1").bind(id).fetch_one(&mut *tx).await.map(|r| job_from(&r))?;
    tx.commit().await?;
    Ok(Ok(out))
}

/// Live progress of a running job.
pub struct Progress<'a> {
    pub phase: &'a str,
    pub current_path: &'a str,
    pub files_total: i64,
    pub bytes_total: i64,
    pub bytes_per_second: i64,
    pub counts: Counts,
}

/// Records progress under the job's lease; returns whether cancellation was requested.
pub async fn report_progress(db: &Db, id: &str, fence: &Fence, p: Progress<'_>) -> ApiResult<(bool, Option<String>)> {
    let mut tx = db.begin().await?;
    leases::check(&mut tx, fence).await?;
    let r = sqlx::query(
        "UPDATE jobs SET phase = $1, current_path = $2, files_total = $3, bytes_total = $4, bytes_per_second = $5,
            files_scanned = $6, files_synced = $7, files_failed = $8, files_skipped = $9, files_deleted = $10,
            conflicts = $11, bytes_transferred = $12, updated_at = $13
         WHERE id = $14 AND lease_id = $15 AND status = 'running'",
    )
    .bind(p.phase)
    .bind(p.current_path)
    .bind(p.files_total)
    .bind(p.bytes_total)
    .bind(p.bytes_per_second)
    .bind(p.counts.files_scanned)
    .bind(p.counts.files_synced)
    .bind(p.counts.files_failed)
    .bind(p.counts.files_skipped)
    .bind(p.counts.files_deleted)
    .bind(p.counts.conflicts)
    .bind(p.counts.bytes_transferred)
    .bind(now_ms())
    .bind(id)
    .bind(&fence.lease_id)
    .execute(&mut *tx)
    .await?;
    if r.rows_affected() == 0 {
        return Err(ApiError::conflict("JOB_NOT_CLAIMED", "this job is not running under this lease"));
    }
    let (cancel, reason): (i64, Option<String>) =
        sqlx::query_as("SELECT cancel_requested, cancel_reason FROM jobs WHERE id = $1")
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
    tx.commit().await?;
    Ok((cancel != 0, reason))
}

pub async fn cancel_state(db: &Db, id: &str) -> ApiResult<(bool, Option<String>)> {
    let row: Option<(i64, Option<String>)> =
        sqlx::query_as("SELECT cancel_requested, cancel_reason FROM jobs WHERE id = $1")
            .bind(id)
            .fetch_optional(&db.pool)
            .await?;
    row.map(|(c, r)| (c != 0, r)).ok_or_else(|| ApiError::not_found("job"))
}

/// Asks a job to stop: a queued job is cancelled at once, a running one at its next safe
/// point (between files). Returns the job as it is now.
pub async fn request_cancel(db: &Db, job: &Job, reason: &str) -> ApiResult<Job> {
    let now = now_ms();
    if job.status == "queued" {
        sqlx::query(
            "UPDATE jobs SET status = 'cancelled', cancel_requested = 1, cancel_reason = $1, finished_at = $2, updated_at = $2
             WHERE id = $3 AND status = 'queued'",
        )
        .bind(reason)
        .bind(now)
        .bind(&job.id)
        .execute(&db.pool)
        .await?;
    }
    sqlx::query("UPDATE jobs SET cancel_requested = 1, cancel_reason = $1, updated_at = $2 WHERE id = $3 AND status = 'running'")
        .bind(reason)
        .bind(now)
        .bind(&job.id)
        .execute(&db.pool)
        .await?;
    get(db, &job.id).await?.ok_or_else(|| ApiError::not_found("job"))
}

/// One per-file error or warning, or a log line, of a job.
#[derive(Clone, Debug)]
pub struct Event {
    pub seq: i64,
    pub level: String,
    pub path: Option<String>,
    pub code: Option<String>,
    pub nt_status: Option<String>,
    pub message: String,
    pub created_at: i64,
}

pub struct NewEvent<'a> {
    pub level: &'a str,
    pub path: Option<&'a str>,
    pub code: Option<&'a str>,
    pub nt_status: Option<&'a str>,
    pub message: &'a str,
}

pub async fn add_events(tx: &mut super::Tx<'_>, job_id: &str, events: &[NewEvent<'_>]) -> ApiResult<()> {
    if events.is_empty() {
        return Ok(());
    }
    let (mut seq,): (i64,) = sqlx::query_as("SELECT COALESCE(MAX(seq), 0) FROM job_events WHERE job_id = $1")
        .bind(job_id)
        .fetch_one(&mut **tx)
        .await?;
    for e in events {
        seq += 1;
        sqlx::query(
            "INSERT INTO job_events (id, job_id, seq, level, path, code, nt_status, message, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(format!("evt_{}", ulid::Ulid::new()))
        .bind(job_id)
        .bind(seq)
        .bind(e.level)
        .bind(e.path)
        .bind(e.code)
        .bind(e.nt_status)
        .bind(e.message)
        .bind(now_ms())
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// Adds log lines to a job of the lease's connector, under the lease.
pub async fn report_events(
    db: &Db,
    connector_id: &str,
    job_id: &str,
    fence: &Fence,
    events: &[NewEvent<'_>],
) -> ApiResult<()> {
    let mut tx = db.begin().await?;
    leases::check(&mut tx, fence).await?;
    let owner: Option<(String,)> =
        sqlx::query_as("SELECT connector_id FROM jobs WHERE id = $1").bind(job_id).fetch_optional(&mut *tx).await?;
    match owner {
        Some((c,)) if c == connector_id => {}
        Some(_) => return Err(ApiError::conflict("JOB_LEASE_MISMATCH", "the job belongs to another connector")),
        None => return Err(ApiError::not_found("job")),
    }
    add_events(&mut tx, job_id, events).await?;
    tx.commit().await?;
    Ok(())
}

pub async fn events(db: &Db, job_id: &str, after_seq: i64, limit: i64) -> ApiResult<Vec<Event>> {
    let rows = sqlx::query("SELECT * FROM job_events WHERE job_id = $1 AND seq > $2 ORDER BY seq LIMIT $3")
        .bind(job_id)
        .bind(after_seq)
        .bind(limit)
        .fetch_all(&db.pool)
        .await?;
    Ok(rows
        .iter()
        .map(|r| Event {
            seq: get_i64(r, "seq"),
            level: get_str(r, "level"),
            path: get_opt_str(r, "path"),
            code: get_opt_str(r, "code"),
            nt_status: get_opt_str(r, "nt_status"),
            message: get_str(r, "message"),
            created_at: get_i64(r, "created_at"),
        })
        .collect())
}

/// A job's outcome, as the worker reports it.
pub struct Outcome<'a> {
    /// completed, failed, cancelled, interrupted
    pub status: &'a str,
    pub counts: Counts,
    pub error_code: Option<&'a str>,
    pub error_message: Option<&'a str>,
    pub cursor: Option<&'a str>,
}

/// Records a job's outcome once, and the connector's bookkeeping with it. Returns true if
/// the same outcome was already recorded (a retry).
pub async fn complete(db: &Db, id: &str, fence: &Fence, o: Outcome<'_>) -> ApiResult<bool> {
    Ok(complete_with_follow_up(db, id, fence, o).await?.0)
}

/// [`complete`], and the id of the follow-up job queued in the same transaction when changes
/// were reported while the job ran (`store::watch::request_sync`): the caller publishes it.
pub async fn complete_with_follow_up(
    db: &Db,
    id: &str,
    fence: &Fence,
    o: Outcome<'_>,
) -> ApiResult<(bool, Option<String>)> {
    let mut tx = db.begin().await?;
    let lease = leases::check(&mut tx, fence).await?;
    let job = sqlx::query("SELECT * FROM jobs WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .map(|r| job_from(&r))
        .ok_or_else(|| ApiError::not_found("job"))?;
    if job.connector_id != lease.connector_id {
        // Not even whether (or how) another connector's job ended.
        return Err(ApiError::conflict("JOB_LEASE_MISMATCH", "the job belongs to another connector"));
    }
    if !job.is_active() {
        if job.status == o.status {
            return Ok((true, None));
        }
        return Err(ApiError::conflict("JOB_FINISHED", format!("the job already ended as {}", job.status))
            .with_details(serde_json::json!({ "outcome": job.status })));
    }
    if job.lease_id.as_deref() != Some(fence.lease_id.as_str()) {
        return Err(ApiError::conflict("JOB_NOT_CLAIMED", "this job is not running under this lease"));
    }
    let now = now_ms();
    let c = &o.counts;
    // RETURNING reads the follow-up under the row lock the update takes: a follow-up recorded
    // before is seen here, one attempted after finds the job no longer running.
    let (follow_up,): (Option<String>,) = sqlx::query_as(
        "UPDATE jobs SET status = $1, finished_at = $2, updated_at = $2, phase = NULL, current_path = NULL,
            files_scanned = $3, files_synced = $4, files_failed = $5, files_skipped = $6, files_deleted = $7,
            conflicts = $8, bytes_transferred = $9, error_code = $10, error_message = $11
         WHERE id = $12 RETURNING follow_up",
    )
    .bind(o.status)
    .bind(now)
    .bind(c.files_scanned)
    .bind(c.files_synced)
    .bind(c.files_failed)
    .bind(c.files_skipped)
    .bind(c.files_deleted)
    .bind(c.conflicts)
    .bind(c.bytes_transferred)
    .bind(o.error_code)
    .bind(o.error_message)
    .bind(id)
    .fetch_one(&mut *tx)
    .await?;
    let (status, message) = match o.status {
        "completed" if c.files_failed == 0 => ("idle", format!("last run {id} completed")),
        "completed" => ("idle", format!("last run {id} completed with {} file errors", c.files_failed)),
        "failed" => {
            ("error", format!("{}: {}", o.error_code.unwrap_or("FAILED"), o.error_message.unwrap_or("the run failed")))
        }
        "cancelled" => ("idle", format!("last run {id} was cancelled")),
        _ => ("idle", format!("last run {id} was interrupted; the next run continues")),
    };
    sqlx::query(
        "UPDATE connectors SET status = $1, status_message = $2, last_sync_at = $3, error_count = $4,
            total_files_synced = total_files_synced + $5, total_bytes_synced = total_bytes_synced + $6, updated_at = $3
         WHERE id = $7",
    )
    .bind(status)
    .bind(message)
    .bind(now)
    .bind(c.files_failed + i64::from(o.status == "failed"))
    .bind(c.files_synced)
    .bind(c.bytes_transferred)
    .bind(&job.connector_id)
    .execute(&mut *tx)
    .await?;
    if let Some(cursor) = o.cursor.filter(|c| !c.is_empty()) {
        sqlx::query(
            "INSERT INTO connector_cursors (connector_id, cursor, updated_at) VALUES ($1, $2, $3)
             ON CONFLICT (connector_id) DO UPDATE SET cursor = excluded.cursor, updated_at = excluded.updated_at",
        )
        .bind(&job.connector_id)
        .bind(cursor)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }
    let follow_up = match follow_up {
        Some(f) => Some(super::watch::queue_follow_up(&mut tx, &job.tenant_id, &job.connector_id, &f).await?),
        None => None,
    };
    tx.commit().await?;
    Ok((false, follow_up))
}

pub async fn cursor(db: &Db, connector_id: &str) -> ApiResult<Option<String>> {
    let row: Option<(String,)> = sqlx::query_as("SELECT cursor FROM connector_cursors WHERE connector_id = $1")
        .bind(connector_id)
        .fetch_optional(&db.pool)
        .await?;
    Ok(row.map(|(c,)| c))
}

/// Marks a connector's active job cancelled before the connector goes away.
pub async fn cancel_for_delete(db: &Db, connector_id: &str) -> ApiResult<()> {
    if let Some(j) = active(db, connector_id).await? {
        request_cancel(db, &j, "connector deleted").await?;
    }
    Ok(())
}
