//! The last synced state of each item a connector tracks, written by the lease holder after
//! each side effect succeeded and was verified, and shown by `GET …/file-states`.

use sqlx::any::AnyRow;

use super::leases::{self, Fence};
use super::{get_i64, get_opt_i64, get_opt_str, get_str};
use crate::db::Db;
use crate::error::{ApiError, ApiResult};
use crate::time::now_ms;

#[derive(Clone, Debug, Default)]
pub struct FileState {
    pub path: String,
    pub kind: String,
    /// synced, pending, error, excluded, conflict_resolved; `removed` deletes the row.
    pub status: String,
    pub smb_size: Option<i64>,
    pub smb_modified_at: Option<i64>,
    pub smb_changed_at: Option<i64>,
    pub smb_created_at: Option<i64>,
    pub smb_file_id: Option<String>,
    pub smb_sha256: Option<String>,
    pub drive_node_id: Option<String>,
    pub drive_version_id: Option<String>,
    pub drive_size: Option<i64>,
    pub drive_modified_at: Option<i64>,
    pub drive_sha256: Option<String>,
    pub last_synced_at: Option<i64>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub updated_at: i64,
}

fn state_from(r: &AnyRow) -> FileState {
    FileState {
        path: get_str(r, "path"),
        kind: get_str(r, "kind"),
        status: get_str(r, "status"),
        smb_size: get_opt_i64(r, "smb_size"),
        smb_modified_at: get_opt_i64(r, "smb_modified_at"),
        smb_changed_at: get_opt_i64(r, "smb_changed_at"),
        smb_created_at: get_opt_i64(r, "smb_created_at"),
        smb_file_id: get_opt_str(r, "smb_file_id"),
        smb_sha256: get_opt_str(r, "smb_sha256"),
        drive_node_id: get_opt_str(r, "drive_node_id"),
        drive_version_id: get_opt_str(r, "drive_version_id"),
        drive_size: get_opt_i64(r, "drive_size"),
        drive_modified_at: get_opt_i64(r, "drive_modified_at"),
        drive_sha256: get_opt_str(r, "drive_sha256"),
        last_synced_at: get_opt_i64(r, "last_synced_at"),
        error_code: get_opt_str(r, "error_code"),
        error_message: get_opt_str(r, "error_message"),
        updated_at: get_i64(r, "updated_at"),
    }
}

/// Upserts states (and deletes `removed` ones) under the connector's lease, in one
/// transaction; error states also become the job's per-file error events.
pub async fn report(db: &Db, connector_id: &str, job_id: &str, fence: &Fence, states: &[FileState]) -> ApiResult<u32> {
    let mut tx = db.begin().await?;
    let lease = leases::check(&mut tx, fence).await?;
    if lease.connector_id != connector_id {
        return Err(ApiError::conflict("JOB_LEASE_MISMATCH", "the lease is for another connector"));
    }
    // Failures below go to the job's log: only to a job of the lease's connector.
    let owner: Option<(String,)> =
        sqlx::query_as("SELECT connector_id FROM jobs WHERE id = $1").bind(job_id).fetch_optional(&mut *tx).await?;
    if owner.is_some_and(|(c,)| c != connector_id) {
        return Err(ApiError::conflict("JOB_LEASE_MISMATCH", "the job belongs to another connector"));
    }
    let now = now_ms();
    let mut events = Vec::new();
    for s in states {
        if s.status == "removed" {
            sqlx::query("DELETE FROM file_states WHERE connector_id = $1 AND path = $2")
                .bind(connector_id)
                .bind(&s.path)
                .execute(&mut *tx)
                .await?;
            continue;
        }
        sqlx::query(
            "INSERT INTO file_states (connector_id, path, kind, status, smb_size, smb_modified_at, smb_changed_at, smb_created_at,
                smb_file_id, smb_sha256, drive_node_id, drive_version_id, drive_size, drive_modified_at, drive_sha256,
                last_synced_at, error_code, error_message, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)
             ON CONFLICT (connector_id, path) DO UPDATE SET kind = excluded.kind, status = excluded.status,
                smb_size = COALESCE(excluded.smb_size, file_states.smb_size),
                smb_modified_at = COALESCE(excluded.smb_modified_at, file_states.smb_modified_at),
                smb_changed_at = COALESCE(excluded.smb_changed_at, file_states.smb_changed_at),
                smb_created_at = COALESCE(excluded.smb_created_at, file_states.smb_created_at),
                smb_file_id = COALESCE(excluded.smb_file_id, file_states.smb_file_id),
                smb_sha256 = COALESCE(excluded.smb_sha256, file_states.smb_sha256),
                drive_node_id = COALESCE(excluded.drive_node_id, file_states.drive_node_id),
                drive_version_id = COALESCE(excluded.drive_version_id, file_states.drive_version_id),
                drive_size = COALESCE(excluded.drive_size, file_states.drive_size),
                drive_modified_at = COALESCE(excluded.drive_modified_at, file_states.drive_modified_at),
                drive_sha256 = COALESCE(excluded.drive_sha256, file_states.drive_sha256),
                last_synced_at = COALESCE(excluded.last_synced_at, file_states.last_synced_at),
                error_code = excluded.error_code, error_message = excluded.error_message, updated_at = excluded.updated_at",
        )
        .bind(connector_id)
        .bind(&s.path)
        .bind(&s.kind)
        .bind(&s.status)
        .bind(s.smb_size)
        .bind(s.smb_modified_at)
        .bind(s.smb_changed_at)
        .bind(s.smb_created_at)
        .bind(s.smb_file_id.clone())
        .bind(s.smb_sha256.clone())
        .bind(s.drive_node_id.clone())
        .bind(s.drive_version_id.clone())
        .bind(s.drive_size)
        .bind(s.drive_modified_at)
        .bind(s.drive_sha256.clone())
        .bind(s.last_synced_at)
        .bind(s.error_code.clone())
        .bind(s.error_message.clone())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        // Per-file errors, and items not synced for a reason (a name SMB cannot hold, a
        // reparse point, …), are also the job's events: errors and warnings.
        if s.status == "error" || (s.status == "excluded" && s.error_code.is_some()) {
            events.push(s);
        }
    }
    let evs: Vec<super::jobs::NewEvent<'_>> = events
        .iter()
        .map(|s| super::jobs::NewEvent {
            level: if s.status == "error" { "error" } else { "warning" },
            path: Some(&s.path),
            code: s.error_code.as_deref(),
            nt_status: None,
            message: s.error_message.as_deref().unwrap_or("failed"),
        })
        .collect();
    super::jobs::add_events(&mut tx, job_id, &evs).await?;
    if !states.is_empty() {
        // In the same transaction: a worker's copy of the states is current exactly as long
        // as the version it was listed with.
        sqlx::query(
            "INSERT INTO file_state_versions (connector_id, version) VALUES ($1, $2)
             ON CONFLICT (connector_id) DO UPDATE SET version = excluded.version",
        )
        .bind(connector_id)
        .bind(ulid::Ulid::new().to_string())
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(states.len() as u32)
}

/// The version of a connector's states as they are now (see `file_state_versions`); `None`
/// when none was ever reported.
pub async fn version(db: &Db, connector_id: &str) -> ApiResult<Option<String>> {
    let row: Option<(String,)> = sqlx::query_as("SELECT version FROM file_state_versions WHERE connector_id = $1")
        .bind(connector_id)
        .fetch_optional(&db.pool)
        .await?;
    Ok(row.map(|(v,)| v))
}

/// A page of a connector's file states, in byte order of path (as workers keep them; also
/// under a PostgreSQL collation other than C), filtered by status and path prefix.
pub async fn list(
    db: &Db,
    connector_id: &str,
    status: Option<&str>,
    prefix: Option<&str>,
    after: Option<&str>,
    limit: i64,
) -> ApiResult<Vec<FileState>> {
    // The index `file_states_path_bytes` (PostgreSQL) serves this order.
    let collate = if db.backend == crate::db::Backend::Postgres { " COLLATE \"C\"" } else { "" };
    let sql = format!(
        "SELECT * FROM file_states WHERE connector_id = $1 AND ($2 = '' OR status = $2)
            AND ($3 = '' OR path = $3 OR substr(path, 1, length($4)) = $4) AND path{collate} > $5
         ORDER BY path{collate} LIMIT $6"
    );
    let rows = sqlx::query(&sql)
        .bind(connector_id)
        .bind(status.unwrap_or(""))
        .bind(prefix.unwrap_or(""))
        .bind(prefix.map(|p| format!("{}/", p.trim_end_matches('/'))).unwrap_or_default())
        .bind(after.unwrap_or(""))
        .bind(limit)
        .fetch_all(&db.pool)
        .await?;
    Ok(rows.iter().map(state_from).collect())
}
