//! Sync runs of a connector: trigger, jobs and their progress, cancellation, per-file state,
//! and connectivity tests (carried out by a worker, since workers are the ones with a route
//! to the file servers). Every endpoint needs MANAGE_PERMISSIONS on the connector's target
//! share, like the connector itself.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::connectors::managed;
use super::extract::{limit, ApiJson, ApiQuery};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::fleet;
use crate::perm;
use crate::secrets::Secret;
use crate::store::acl::{self, share_resource};
use crate::store::connectors::{self, validate, SyncDirection};
use crate::store::file_states::{self, FileState};
use crate::store::jobs::{self, Job};
use crate::store::{conn_tests, shares};
use crate::time::rfc3339;
use crate::AppState;

/// How long a connectivity test waits for a worker.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(30);

pub fn routes() -> Router<AppState> {
    let mut r = Router::new();
    for slash in ["", "/"] {
        let base = "/api/v1/smb-connectors";
        r = r
            .route(&format!("{base}/test{slash}"), post(test_unsaved))
            .route(&format!("{base}/{{id}}/test{slash}"), post(test_connector))
            .route(&format!("{base}/{{id}}/sync{slash}"), post(trigger_sync))
            .route(&format!("{base}/{{id}}/jobs{slash}"), get(list_jobs))
            .route(&format!("{base}/{{id}}/jobs/{{job_id}}{slash}"), get(get_job))
            .route(&format!("{base}/{{id}}/jobs/{{job_id}}/cancel{slash}"), post(cancel_job))
            .route(&format!("{base}/{{id}}/file-states{slash}"), get(list_file_states));
    }
    r
}

#[derive(Serialize, ToSchema)]
pub struct JobError {
    pub code: String,
    pub message: String,
}

#[derive(Serialize, ToSchema)]
pub struct JobProgress {
    /// connecting, scanning, planning, transferring, permissions, finalizing
    pub phase: Option<String>,
    pub current_path: Option<String>,
    pub files_total: i64,
    pub bytes_total: i64,
    pub bytes_per_second: i64,
}

#[derive(Serialize, ToSchema)]
pub struct JobResponse {
    pub id: String,
    pub connector_id: String,
    /// queued, running, completed, failed, cancelled, skipped, interrupted
    pub status: String,
    /// manual, scheduled, or change_notify (a change reported by the file server)
    pub trigger: String,
    /// change_notify runs: the folders looked at (relative to the sync root, `""` is the root;
    /// `recursive`: with everything below). Absent: the whole tree.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub scope: Option<serde_json::Value>,
    /// Why a scheduled run was skipped, and the like.
    pub reason: Option<String>,
    /// The worker that ran (or runs) it.
    pub worker: Option<String>,
    pub attempt: i64,
    pub requested_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub files_scanned: i64,
    pub files_synced: i64,
    pub files_skipped: i64,
    pub files_deleted: i64,
    pub conflicts: i64,
    pub bytes_transferred: i64,
    /// Per-file errors, plus one for a job-wide error.
    pub error_count: i64,
    pub error: Option<JobError>,
    pub cancel_requested: bool,
    /// Live progress while running.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<JobProgress>,
}

impl From<Job> for JobResponse {
    fn from(j: Job) -> Self {
        let job_error =
            j.error_code.clone().map(|code| JobError { code, message: j.error_message.clone().unwrap_or_default() });
        JobResponse {
            progress: (j.status == "running").then(|| JobProgress {
                phase: j.phase.clone(),
                current_path: j.current_path.clone(),
                files_total: j.files_total,
                bytes_total: j.bytes_total,
                bytes_per_second: j.bytes_per_second,
            }),
            error_count: j.counts.files_failed + i64::from(job_error.is_some()),
            error: job_error,
            id: j.id,
            connector_id: j.connector_id,
            status: j.status,
            trigger: j.trigger,
            scope: j.scope.as_deref().and_then(|s| serde_json::from_str(s).ok()),
            reason: j.reason,
            worker: j.worker_id,
            attempt: j.attempt,
            requested_at: rfc3339(j.requested_at),
            started_at: j.started_at.map(rfc3339),
            finished_at: j.finished_at.map(rfc3339),
            files_scanned: j.counts.files_scanned,
            files_synced: j.counts.files_synced,
            files_skipped: j.counts.files_skipped,
            files_deleted: j.counts.files_deleted,
            conflicts: j.counts.conflicts,
            bytes_transferred: j.counts.bytes_transferred,
            cancel_requested: j.cancel_requested,
        }
    }
}

/// Starts a sync now: `202 Accepted` with the queued job; 409 `SYNC_ALREADY_RUNNING` (naming
/// the job) while one is queued or running.
#[utoipa::path(post, path = "/api/v1/smb-connectors/{id}/sync", tag = "smb-connectors", params(("id" = String, Path)),
    responses((status = 202, body = JobResponse), (status = 409, body = crate::error::ErrorBody)))]
pub async fn trigger_sync(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<JobResponse>)> {
    let c = managed(&s, &caller, &id).await?;
    let job = jobs::create_manual(&s.db, &c.tenant_id, c.id.as_str(), caller.user_id.as_str()).await?;
    if let Err(e) = fleet::publish_job(&s, &job).await {
        // The job stays queued; the sweeper publishes it once the queue is back.
        tracing::warn!(job.id = %job.id, error = %e.message, "publishing a manual job failed; the sweeper retries");
    }
    tracing::info!(job.id = %job.id, connector.id = %c.id, "manual sync queued");
    Ok((StatusCode::ACCEPTED, Json(job.into())))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct JobsQuery {
    /// 1–200, default 50.
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct JobList {
    pub jobs: Vec<JobResponse>,
    pub next_cursor: Option<String>,
}

/// The connector's jobs, newest first: runs, and the schedule's decisions (skipped runs).
#[utoipa::path(get, path = "/api/v1/smb-connectors/{id}/jobs", tag = "smb-connectors", params(("id" = String, Path), JobsQuery),
    responses((status = 200, body = JobList)))]
pub async fn list_jobs(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<JobsQuery>,
) -> ApiResult<Json<JobList>> {
    let c = managed(&s, &caller, &id).await?;
    let limit = limit(q.limit, 50, 200)?;
    let list = jobs::list(&s.db, c.id.as_str(), q.cursor.as_deref(), limit).await?;
    let next_cursor = if list.len() as i64 == limit { list.last().map(|j| j.id.clone()) } else { None };
    Ok(Json(JobList { jobs: list.into_iter().map(Into::into).collect(), next_cursor }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct JobQuery {
    /// Events after this sequence number (`next_events_cursor` of the previous answer).
    pub events_cursor: Option<i64>,
    /// 1–1000, default 100.
    pub events_limit: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct JobEvent {
    pub seq: i64,
    /// error, warning or info
    pub level: String,
    pub path: Option<String>,
    pub code: Option<String>,
    pub nt_status: Option<String>,
    pub message: String,
    pub created_at: String,
}

#[derive(Serialize, ToSchema)]
pub struct JobDetail {
    #[serde(flatten)]
    pub job: JobResponse,
    /// Per-file errors and warnings, oldest first.
    pub events: Vec<JobEvent>,
    pub next_events_cursor: Option<i64>,
}

/// One job with its per-file errors and warnings (paginated) and, while it runs, live progress.
#[utoipa::path(get, path = "/api/v1/smb-connectors/{id}/jobs/{job_id}", tag = "smb-connectors",
    params(("id" = String, Path), ("job_id" = String, Path), JobQuery), responses((status = 200, body = JobDetail)))]
pub async fn get_job(
    State(s): State<AppState>,
    caller: Caller,
    Path((id, job_id)): Path<(String, String)>,
    ApiQuery(q): ApiQuery<JobQuery>,
) -> ApiResult<Json<JobDetail>> {
    let c = managed(&s, &caller, &id).await?;
    let job = jobs::get_for(&s.db, c.id.as_str(), &job_id).await?;
    let lim = limit(q.events_limit, 100, 1000)?;
    let events = jobs::events(&s.db, &job.id, q.events_cursor.unwrap_or(0), lim).await?;
    let next = if events.len() as i64 == lim { events.last().map(|e| e.seq) } else { None };
    Ok(Json(JobDetail {
        job: job.into(),
        events: events
            .into_iter()
            .map(|e| JobEvent {
                seq: e.seq,
                level: e.level,
                path: e.path,
                code: e.code,
                nt_status: e.nt_status,
                message: e.message,
                created_at: rfc3339(e.created_at),
            })
            .collect(),
        next_events_cursor: next,
    }))
}

/// Cancels a job: a queued one at once, a running one cleanly between files.
#[utoipa::path(post, path = "/api/v1/smb-connectors/{id}/jobs/{job_id}/cancel", tag = "smb-connectors",
    params(("id" = String, Path), ("job_id" = String, Path)),
    responses((status = 202, body = JobResponse), (status = 409, body = crate::error::ErrorBody)))]
pub async fn cancel_job(
    State(s): State<AppState>,
    caller: Caller,
    Path((id, job_id)): Path<(String, String)>,
) -> ApiResult<(StatusCode, Json<JobResponse>)> {
    let c = managed(&s, &caller, &id).await?;
    let job = jobs::get_for(&s.db, c.id.as_str(), &job_id).await?;
    if !job.is_active() {
        return Err(ApiError::conflict("JOB_FINISHED", format!("the job already ended as {}", job.status)));
    }
    let job = jobs::request_cancel(&s.db, &job, &format!("cancelled by {}", caller.user_id)).await?;
    Ok((StatusCode::ACCEPTED, Json(job.into())))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct FileStatesQuery {
    /// synced, pending, error, excluded or conflict_resolved
    pub status: Option<String>,
    /// Only this path and what is under it (relative to the sync root).
    pub path_prefix: Option<String>,
    /// 1–1000, default 200.
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct SmbSideResponse {
    pub size: Option<i64>,
    pub last_write_time: Option<String>,
    pub change_time: Option<String>,
    pub file_id: Option<String>,
    pub checksum: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ScaiDriveSideResponse {
    pub file_id: Option<String>,
    pub version_id: Option<String>,
    pub size: Option<i64>,
    pub modified_at: Option<String>,
    pub checksum: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct FileStateResponse {
    pub path: String,
    /// file or folder
    pub kind: String,
    pub status: String,
    pub smb: SmbSideResponse,
    pub scaidrive: ScaiDriveSideResponse,
    pub last_synced_at: Option<String>,
    pub last_error: Option<JobError>,
}

impl From<FileState> for FileStateResponse {
    fn from(f: FileState) -> Self {
        FileStateResponse {
            smb: SmbSideResponse {
                size: f.smb_size,
                last_write_time: f.smb_modified_at.map(rfc3339_ns),
                change_time: f.smb_changed_at.map(rfc3339_ns),
                file_id: f.smb_file_id,
                checksum: f.smb_sha256,
            },
            scaidrive: ScaiDriveSideResponse {
                file_id: f.drive_node_id,
                version_id: f.drive_version_id,
                size: f.drive_size,
                modified_at: f.drive_modified_at.map(rfc3339),
                checksum: f.drive_sha256,
            },
            last_synced_at: f.last_synced_at.map(rfc3339),
            last_error: f.error_code.map(|code| JobError { code, message: f.error_message.unwrap_or_default() }),
            path: f.path,
            kind: f.kind,
            status: f.status,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct FileStateList {
    pub file_states: Vec<FileStateResponse>,
    pub next_cursor: Option<String>,
}

/// The items the connector tracks: per-file status, both sides' state, last sync, last error.
#[utoipa::path(get, path = "/api/v1/smb-connectors/{id}/file-states", tag = "smb-connectors",
    params(("id" = String, Path), FileStatesQuery), responses((status = 200, body = FileStateList)))]
pub async fn list_file_states(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<FileStatesQuery>,
) -> ApiResult<Json<FileStateList>> {
    let c = managed(&s, &caller, &id).await?;
    if let Some(st) = q.status.as_deref() {
        if !["synced", "pending", "error", "excluded", "conflict_resolved"].contains(&st) {
            return Err(ApiError::validation(
                "status",
                "must be synced, pending, error, excluded or conflict_resolved",
            ));
        }
    }
    let prefix = q.path_prefix.as_deref().map(|p| p.trim_matches('/').to_string()).filter(|p| !p.is_empty());
    let lim = limit(q.limit, 200, 1000)?;
    let list =
        file_states::list(&s.db, c.id.as_str(), q.status.as_deref(), prefix.as_deref(), q.cursor.as_deref(), lim)
            .await?;
    let next_cursor = if list.len() as i64 == lim { list.last().map(|f| f.path.clone()) } else { None };
    Ok(Json(FileStateList { file_states: list.into_iter().map(Into::into).collect(), next_cursor }))
}

#[derive(Serialize, ToSchema)]
pub struct TestError {
    /// CONNECTOR_AUTH_FAILED, CONNECTOR_UNREACHABLE, CONNECTOR_SHARE_NOT_FOUND,
    /// CONNECTOR_PATH_NOT_FOUND, CONNECTOR_ACCESS_DENIED, CONNECTOR_TEST_TIMEOUT
    pub code: String,
    /// The NT status the SMB server answered, as `0xC000006D`.
    pub nt_status: Option<String>,
    pub message: String,
}

#[derive(Serialize, ToSchema)]
pub struct TestResponse {
    pub success: bool,
    pub message: String,
    pub error: Option<TestError>,
}

async fn run_test(
    s: &AppState,
    tenant: &crate::ids::TenantId,
    connector_id: Option<&str>,
    pool: &str,
    t: conn_tests::PendingTest,
) -> ApiResult<(StatusCode, Json<TestResponse>)> {
    let id = t.id.clone();
    conn_tests::create(&s.db, &s.secrets, tenant, connector_id, &t).await?;
    let a = fleet::run_test(s, &id, pool, TEST_TIMEOUT).await?;
    let status = if a.answered { StatusCode::OK } else { StatusCode::GATEWAY_TIMEOUT };
    Ok((
        status,
        Json(TestResponse {
            success: a.success,
            message: a.message,
            error: a.error.map(|(code, nt, message)| TestError {
                code,
                nt_status: nt.map(|n| format!("0x{n:08X}")),
                message,
            }),
        }),
    ))
}

/// SMB times keep their 100 ns ticks when shown.
fn rfc3339_ns(ns: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp(ns.div_euclid(1_000_000_000), ns.rem_euclid(1_000_000_000) as u32)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

fn test_id() -> String {
    format!("tst_{}", ulid::Ulid::new())
}

/// Tests the connector's SMB connection (a worker resolves, connects, authenticates, opens
/// the share and the base path, and checks write access when the direction writes to SMB).
#[utoipa::path(post, path = "/api/v1/smb-connectors/{id}/test", tag = "smb-connectors", params(("id" = String, Path)),
    responses((status = 200, body = TestResponse), (status = 504, body = TestResponse)))]
pub async fn test_connector(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<TestResponse>)> {
    let c = managed(&s, &caller, &id).await?;
    let creds = connectors::decrypted_credentials(&s.db, &s.secrets, &c.id).await?;
    let st = &c.settings;
    let t = conn_tests::PendingTest {
        id: test_id(),
        server_host: st.server_host.clone(),
        server_port: st.server_port,
        share_name: st.share_name.clone(),
        base_path: st.base_path.clone(),
        domain: creds.domain,
        username: creds.username,
        password: creds.password,
        check_write: st.sync_direction != SyncDirection::SmbToScaidrive,
    };
    run_test(&s, &c.tenant_id, Some(c.id.as_str()), &st.worker_pool, t).await
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"server_host": "fs01.corp.example.com", "server_port": 445, "share_name": "Finance",
    "base_path": "2026", "domain": "CORP", "username": "scaidrive-svc", "password": "<secret>",
    "target_share_id": "shr_01J3H", "sync_direction": "bidirectional"}))]
pub struct TestUnsaved {
    pub server_host: String,
    pub server_port: Option<i64>,
    pub share_name: String,
    pub base_path: Option<String>,
    pub domain: Option<String>,
    pub username: String,
    #[schema(value_type = String, format = Password)]
    pub password: Secret,
    /// The share the connector would mirror into: MANAGE_PERMISSIONS on it is needed
    /// (without it, only tenant admins may test).
    pub target_share_id: Option<String>,
    /// Whether the connector would write to SMB (then write access is checked too).
    pub sync_direction: Option<String>,
    /// The worker pool that would run it (the test goes to that pool's workers); default
    /// `default`.
    pub worker_pool: Option<String>,
}

/// Tests a connection for a configuration that is not saved yet.
#[utoipa::path(post, path = "/api/v1/smb-connectors/test", tag = "smb-connectors", request_body = TestUnsaved,
    responses((status = 200, body = TestResponse), (status = 504, body = TestResponse)))]
pub async fn test_unsaved(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(b): ApiJson<TestUnsaved>,
) -> ApiResult<(StatusCode, Json<TestResponse>)> {
    match b.target_share_id.as_deref() {
        Some(share) => {
            let sh = shares::get(&s.db, &caller.tenant_id, share).await.map_err(|e| e.with_field("target_share_id"))?;
            acl::require(&s.db, &caller, &share_resource(sh.id.as_str()), perm::MANAGE_PERMISSIONS).await?;
        }
        None if caller.is_admin() => {}
        None => return Err(ApiError::forbidden("name the target_share_id you manage, or be a tenant admin")),
    }
    validate::password(&b.password)?;
    let direction = validate::sync_direction(b.sync_direction.as_deref())?;
    let pool = validate::worker_pool(b.worker_pool.as_deref())?;
    let t = conn_tests::PendingTest {
        id: test_id(),
        server_host: validate::server_host(&b.server_host)?,
        server_port: validate::server_port(b.server_port.unwrap_or(445))?,
        share_name: validate::share_name(&b.share_name)?,
        base_path: validate::base_path(b.base_path)?,
        domain: validate::domain(b.domain)?,
        username: validate::username(&b.username)?,
        password: b.password,
        check_write: direction != SyncDirection::SmbToScaidrive,
    };
    run_test(&s, &caller.tenant_id, None, &pool, t).await
}
