//! Change notification on the control plane: watch leases, and the jobs change notifications
//! ask for (`RequestSync`).
//!
//! A watch lease says which worker watches a connector's SMB tree (CHANGE_NOTIFY) while the
//! connector is idle. One row per connector in `watch_leases`: acquiring is a compare-and-set
//! on that row (free = released or expired, or held by the same worker) that bumps the
//! fencing token, so two workers never both watch and an older holder's token is stale at once.
//! It is separate from the run lease (`leases.rs`): a watch never blocks a run.
//!
//! A watch is tied to the connector's configuration (`config_version`, a fingerprint of the
//! columns that decide what is synced and how to reach it): once the connector is changed or
//! deleted, renewals and sync requests under the old watch are refused and the watcher stops.
//!
//! Must never be needed for safety: a change-triggered job is an ordinary job under the run
//! lease; the fence here only keeps stale watchers from asking for work.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::jobs::{self, Job};
use super::{get_i64, get_opt_str, get_str};
use crate::db::Db;
use crate::error::{ApiError, ApiResult};
use crate::ids::JobId;
use crate::time::now_ms;

/// At most this many folders in one scope; more become the whole tree.
pub const MAX_SCOPE_FOLDERS: usize = 256;

/// A live watch lease.
#[derive(Clone, Debug)]
pub struct Watch {
    pub connector_id: String,
    pub tenant_id: String,
    pub watch_id: String,
    pub worker_id: String,
    pub fencing_token: i64,
    pub ttl_ms: i64,
    pub expires_at: i64,
}

/// Proof of a watch lease, as a worker presents it.
#[derive(Clone, Debug)]
pub struct WatchFence {
    pub watch_id: String,
    pub token: i64,
}

/// Why a watch was refused; each maps to a stable machine code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    Held { expires_at: i64 },
    Stale,
    Expired,
    ConfigChanged,
    ConnectorGone,
}

impl Refusal {
    pub fn code(self) -> &'static str {
        match self {
            Refusal::Held { .. } => "WATCH_HELD",
            Refusal::Stale => "WATCH_STALE",
            Refusal::Expired => "WATCH_EXPIRED",
            Refusal::ConfigChanged => "WATCH_CONFIG_CHANGED",
            Refusal::ConnectorGone => "CONNECTOR_NOT_FOUND",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Refusal::Held { .. } => "another worker watches this connector",
            Refusal::Stale => "the watch was taken over or released",
            Refusal::Expired => "the watch has expired",
            Refusal::ConfigChanged => "the connector was changed since this watch started",
            Refusal::ConnectorGone => "no such connector",
        }
    }
}

/// The scope of a change-triggered job: the folders to look at (relative to the sync root, in
/// the file server's spelling; `""` is the root). `None` where one is expected means the whole
/// tree. Stored as JSON in `jobs.scope` / `jobs.follow_up`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scope {
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub full: bool,
    #[serde(default)]
    pub folders: Vec<ScopeFolder>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopeFolder {
    pub path: String,
    pub recursive: bool,
}

impl Scope {
    /// The whole tree.
    pub fn full() -> Scope {
        Scope { full: true, folders: vec![] }
    }

    /// Parses a stored scope; unreadable JSON is the whole tree (never less than asked).
    pub fn parse(json: &str) -> Scope {
        serde_json::from_str(json).unwrap_or_else(|_| Scope::full())
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a scope serialises")
    }

    /// Both scopes: recursive wins over listing-only for the same folder, folders inside a
    /// recursive one are dropped, too many folders become the whole tree.
    pub fn merge(&self, other: &Scope) -> Scope {
        if self.full || other.full {
            return Scope::full();
        }
        let mut all: std::collections::BTreeMap<String, bool> = std::collections::BTreeMap::new();
        for f in self.folders.iter().chain(other.folders.iter()) {
            let r = all.entry(f.path.clone()).or_insert(false);
            *r |= f.recursive;
        }
        let recursive: Vec<String> = all.iter().filter(|(_, r)| **r).map(|(p, _)| p.clone()).collect();
        let inside =
            |p: &str, dir: &str| dir.is_empty() || p.strip_prefix(dir).is_some_and(|rest| rest.starts_with('/'));
        let folders: Vec<ScopeFolder> = all
            .into_iter()
            .filter(|(p, _)| !recursive.iter().any(|r| r != p && inside(p, r)))
            .map(|(path, recursive)| ScopeFolder { path, recursive })
            .collect();
        if folders.len() > MAX_SCOPE_FOLDERS || folders.iter().any(|f| f.recursive && f.path.is_empty()) {
            return Scope::full();
        }
        Scope { full: false, folders }
    }
}

/// The fingerprint of a connector's configuration: every column that decides what is synced
/// and how the file server is reached (not its name, description or schedule). `None` when
/// the connector does not exist.
pub async fn config_version(db: &Db, connector_id: &str) -> ApiResult<Option<String>> {
    let row = sqlx::query("SELECT * FROM connectors WHERE id = $1").bind(connector_id).fetch_optional(&db.pool).await?;
    let Some(r) = row else { return Ok(None) };
    let mut h = Sha256::new();
    for col in [
        "server_host",
        "share_name",
        "base_path",
        "domain",
        "username",
        "password_sealed",
        "target_share_id",
        "target_path",
        "sync_direction",
        "include_patterns",
        "exclude_patterns",
        "conflict_resolution",
        "worker_pool",
    ] {
        let v = get_opt_str(&r, col);
        h.update(format!("{col}={v:?}\n").as_bytes());
    }
    for col in [
        "server_port",
        "sync_permissions",
        "sync_hidden_files",
        "sync_system_files",
        "max_delete_percent",
        "mappings_version",
    ] {
        h.update(format!("{col}={}\n", get_i64(&r, col)).as_bytes());
    }
    Ok(Some(format!("cv1-{}", hex::encode(&h.finalize()[..12]))))
}

/// Takes the connector's watch lease for `worker_id` if it is free (or already this worker's),
/// provided the connector's configuration is still `config_version`.
pub async fn acquire(
    db: &Db,
    connector_id: &str,
    worker_id: &str,
    ttl_ms: i64,
    config_version: &str,
) -> ApiResult<Result<Watch, Refusal>> {
    let tenant: Option<(String,)> = sqlx::query_as("SELECT tenant_id FROM connectors WHERE id = $1")
        .bind(connector_id)
        .fetch_optional(&db.pool)
        .await?;
    let Some((tenant_id,)) = tenant else { return Ok(Err(Refusal::ConnectorGone)) };
    match self::config_version(db, connector_id).await? {
        None => return Ok(Err(Refusal::ConnectorGone)),
        Some(v) if v != config_version => return Ok(Err(Refusal::ConfigChanged)),
        Some(_) => {}
    }
    let now = now_ms();
    let ttl = super::leases::clamp_ttl(ttl_ms);
    sqlx::query(
        "INSERT INTO watch_leases (connector_id, watch_id, worker_id, fencing_token, config_version, ttl_ms, acquired_at, expires_at, released)
         VALUES ($1, '', '', 0, '', 0, 0, 0, 1) ON CONFLICT (connector_id) DO NOTHING",
    )
    .bind(connector_id)
    .execute(&db.pool)
    .await?;
    let watch_id = format!("wch_{}", ulid::Ulid::new());
    // One statement: free (released, expired, or this worker's own) → taken, token bumped.
    let won: Option<(i64,)> = sqlx::query_as(
        "UPDATE watch_leases SET watch_id = $1, worker_id = $2, fencing_token = fencing_token + 1, config_version = $3,
            ttl_ms = $4, acquired_at = $5, expires_at = $6, released = 0
         WHERE connector_id = $7 AND (released = 1 OR expires_at < $5 OR worker_id = $2)
         RETURNING fencing_token",
    )
    .bind(&watch_id)
    .bind(worker_id)
    .bind(config_version)
    .bind(ttl)
    .bind(now)
    .bind(now + ttl)
    .bind(connector_id)
    .fetch_optional(&db.pool)
    .await?;
    let Some((token,)) = won else {
        let (expires_at,): (i64,) = sqlx::query_as("SELECT expires_at FROM watch_leases WHERE connector_id = $1")
            .bind(connector_id)
            .fetch_one(&db.pool)
            .await?;
        return Ok(Err(Refusal::Held { expires_at }));
    };
    Ok(Ok(Watch {
        connector_id: connector_id.to_string(),
        tenant_id,
        watch_id,
        worker_id: worker_id.to_string(),
        fencing_token: token,
        ttl_ms: ttl,
        expires_at: now + ttl,
    }))
}

/// The live watch a fence names, with the connector still configured as when it was taken.
pub async fn validate(db: &Db, fence: &WatchFence) -> ApiResult<Result<Watch, Refusal>> {
    let row = sqlx::query(
        "SELECT w.*, c.tenant_id AS tenant FROM watch_leases w LEFT JOIN connectors c ON c.id = w.connector_id
         WHERE w.watch_id = $1",
    )
    .bind(&fence.watch_id)
    .fetch_optional(&db.pool)
    .await?;
    let Some(r) = row else { return Ok(Err(Refusal::Stale)) };
    if get_i64(&r, "fencing_token") != fence.token || get_i64(&r, "released") != 0 {
        return Ok(Err(Refusal::Stale));
    }
    let connector_id = get_str(&r, "connector_id");
    let Some(tenant_id) = get_opt_str(&r, "tenant") else { return Ok(Err(Refusal::ConnectorGone)) };
    if get_i64(&r, "expires_at") < now_ms() {
        return Ok(Err(Refusal::Expired));
    }
    match config_version(db, &connector_id).await? {
        None => return Ok(Err(Refusal::ConnectorGone)),
        Some(v) if v != get_str(&r, "config_version") => return Ok(Err(Refusal::ConfigChanged)),
        Some(_) => {}
    }
    Ok(Ok(Watch {
        connector_id,
        tenant_id,
        watch_id: fence.watch_id.clone(),
        worker_id: get_str(&r, "worker_id"),
        fencing_token: fence.token,
        ttl_ms: get_i64(&r, "ttl_ms"),
        expires_at: get_i64(&r, "expires_at"),
    }))
}

/// Extends a live watch by `ttl_ms` (or its own ttl) from now.
pub async fn renew(db: &Db, fence: &WatchFence, ttl_ms: Option<i64>) -> ApiResult<Result<Watch, Refusal>> {
    let w = match validate(db, fence).await? {
        Ok(w) => w,
        Err(r) => return Ok(Err(r)),
    };
    let ttl = ttl_ms.map(super::leases::clamp_ttl).unwrap_or(w.ttl_ms);
    let now = now_ms();
    let r = sqlx::query(
        "UPDATE watch_leases SET expires_at = $1, ttl_ms = $2
         WHERE watch_id = $3 AND fencing_token = $4 AND released = 0 AND expires_at >= $5",
    )
    .bind(now + ttl)
    .bind(ttl)
    .bind(&fence.watch_id)
    .bind(fence.token)
    .bind(now)
    .execute(&db.pool)
    .await?;
    if r.rows_affected() == 0 {
        return Ok(Err(Refusal::Stale));
    }
    Ok(Ok(Watch { expires_at: now + ttl, ttl_ms: ttl, ..w }))
}

/// Ends a watch; true if it was live.
pub async fn release(db: &Db, fence: &WatchFence) -> ApiResult<bool> {
    let r = sqlx::query(
        "UPDATE watch_leases SET released = 1 WHERE watch_id = $1 AND fencing_token = $2 AND released = 0 AND expires_at >= $3",
    )
    .bind(&fence.watch_id)
    .bind(fence.token)
    .bind(now_ms())
    .execute(&db.pool)
    .await?;
    Ok(r.rows_affected() > 0)
}

/// What [`request_sync`] did.
#[derive(Debug)]
pub enum Requested {
    /// A new change_notify job (to publish).
    Queued(Job),
    /// A job was queued already; the scope was merged into it.
    Merged(Job),
    /// A job is running; the follow-up is recorded on it.
    FollowUp(Job),
}

/// A change was reported under `watch`: queue a job for `scope`, merge it into the queued
/// one, or record a follow-up on the running one (see the module docs). Each step is a
/// compare-and-set on the job row, retried when another writer moved it meanwhile.
pub async fn request_sync(db: &Db, watch: &Watch, scope: &Scope) -> ApiResult<Requested> {
    for _ in 0..8 {
        match jobs::active(db, &watch.connector_id).await? {
            Some(j) if j.status == "queued" => {
                // Only a change_notify job has a scope; every other one looks at everything.
                let Some(old) = j.scope.clone() else { return Ok(Requested::Merged(j)) };
                let merged = Scope::parse(&old).merge(scope);
                let new = (!merged.full).then(|| merged.to_json());
                if new.as_deref() == Some(old.as_str()) {
                    return Ok(Requested::Merged(j));
                }
                let r = sqlx::query(
                    "UPDATE jobs SET scope = $1, updated_at = $2 WHERE id = $3 AND status = 'queued' AND scope = $4",
                )
                .bind(new)
                .bind(now_ms())
                .bind(&j.id)
                .bind(&old)
                .execute(&db.pool)
                .await?;
                if r.rows_affected() == 1 {
                    return Ok(Requested::Merged(j));
                }
            }
            Some(j) => {
                let merged = match &j.follow_up {
                    Some(f) => Scope::parse(f).merge(scope),
                    None => scope.merge(&Scope::default()),
                };
                let new = merged.to_json();
                if j.follow_up.as_deref() == Some(new.as_str()) {
                    return Ok(Requested::FollowUp(j));
                }
                let r = sqlx::query(
                    "UPDATE jobs SET follow_up = $1 WHERE id = $2 AND status = 'running' AND COALESCE(follow_up, '') = $3",
                )
                .bind(&new)
                .bind(&j.id)
                .bind(j.follow_up.clone().unwrap_or_default())
                .execute(&db.pool)
                .await?;
                if r.rows_affected() == 1 {
                    return Ok(Requested::FollowUp(j));
                }
            }
            None => {
                let scope = scope.merge(&Scope::default());
                let id = JobId::generate().to_string();
                match insert_change_job(db, &id, &watch.tenant_id, &watch.connector_id, &scope).await {
                    Ok(()) => {
                        let job =
                            jobs::get(db, &id).await?.ok_or_else(|| ApiError::internal("job vanished after insert"))?;
                        return Ok(Requested::Queued(job));
                    }
                    // Another trigger queued one meanwhile: look again.
                    Err(e) if e.as_database_error().is_some_and(|d| d.is_unique_violation()) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    Err(ApiError::unavailable("the connector's jobs kept changing; try again"))
}

async fn insert_change_job(
    db: &Db,
    id: &str,
    tenant_id: &str,
    connector_id: &str,
    scope: &Scope,
) -> Result<(), sqlx::Error> {
    let now = now_ms();
    sqlx::query(
        "INSERT INTO jobs (id, tenant_id, connector_id, status, trigger_kind, scope, requested_at, updated_at)
         VALUES ($1, $2, $3, 'queued', 'change_notify', $4, $5, $5)",
    )
    .bind(id)
    .bind(tenant_id)
    .bind(connector_id)
    .bind((!scope.full).then(|| scope.to_json()))
    .bind(now)
    .execute(&db.pool)
    .await
    .map(|_| ())
}

/// Queues the follow-up of a job that ended with `follow_up` recorded, inside the
/// transaction that recorded its outcome. Returns the new job's id.
pub async fn queue_follow_up(
    tx: &mut super::Tx<'_>,
    tenant_id: &str,
    connector_id: &str,
    follow_up: &str,
) -> ApiResult<String> {
    let scope = Scope::parse(follow_up);
    let id = JobId::generate().to_string();
    let now = now_ms();
    sqlx::query(
        "INSERT INTO jobs (id, tenant_id, connector_id, status, trigger_kind, scope, reason, requested_at, updated_at)
         VALUES ($1, $2, $3, 'queued', 'change_notify', $4, $5, $6, $6)",
    )
    .bind(&id)
    .bind(tenant_id)
    .bind(connector_id)
    .bind((!scope.full).then(|| scope.to_json()))
    .bind("changes were reported while the previous run was going")
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(folders: &[(&str, bool)]) -> Scope {
        Scope {
            full: false,
            folders: folders.iter().map(|(p, r)| ScopeFolder { path: p.to_string(), recursive: *r }).collect(),
        }
    }

    #[test]
    fn merging_scopes_keeps_every_folder_once_and_recursive_wins() {
        let a = s(&[("docs", false), ("docs/new", true)]);
        let b = s(&[("docs", true), ("other", false)]);
        assert_eq!(a.merge(&b), s(&[("docs", true), ("other", false)]));
        assert_eq!(a.merge(&Scope::default()), a);
        assert!(a.merge(&Scope::full()).full);
        // The root walked recursively is the whole tree; listed only, it is one folder.
        assert!(s(&[("", true)]).merge(&Scope::default()).full);
        assert_eq!(s(&[("", false)]).merge(&a), s(&[("", false), ("docs", false), ("docs/new", true)]));
        // "docs2" is not inside "docs".
        assert_eq!(s(&[("docs", true), ("docs2", false)]).merge(&Scope::default()).folders.len(), 2);
    }

    #[test]
    fn too_many_folders_become_the_whole_tree_and_bad_json_too() {
        let many: Vec<(String, bool)> = (0..=MAX_SCOPE_FOLDERS).map(|i| (format!("d{i}"), false)).collect();
        let many = Scope {
            full: false,
            folders: many.into_iter().map(|(path, recursive)| ScopeFolder { path, recursive }).collect(),
        };
        assert!(many.merge(&Scope::default()).full);
        assert!(Scope::parse("not json").full);
        let a = s(&[("x", true)]);
        assert_eq!(Scope::parse(&a.to_json()), a);
    }
}
