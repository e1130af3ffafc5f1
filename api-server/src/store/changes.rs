//! The change log: every change in a share appended, in commit order, with a gapless
//! position per tenant and its actor (a user or a connector). Clients page through it with
//! an opaque cursor (the last position they saw).

use sqlx::any::AnyRow;

use super::{get_i64, get_opt_i64, get_opt_str, get_str, Tx};
use crate::db::Db;
use crate::error::ApiResult;
use crate::ids::{ChangeId, TenantId};
use crate::time::now_ms;

/// Who made a change.
#[derive(Clone, Debug)]
pub struct Actor {
    pub kind: &'static str,
    pub id: String,
    /// For a worker writing on a connector's behalf: the lease it holds. Every write checks
    /// it inside its own transaction, so a worker whose lease was taken over commits nothing.
    pub fence: Option<super::leases::Fence>,
}

impl Actor {
    pub fn user(id: &str) -> Self {
        Actor { kind: "user", id: id.to_string(), fence: None }
    }
    pub fn connector(id: &str) -> Self {
        Actor { kind: "connector", id: id.to_string(), fence: None }
    }
    /// A connector's worker, writing under its lease.
    pub fn fenced_connector(id: &str, fence: super::leases::Fence) -> Self {
        Actor { kind: "connector", id: id.to_string(), fence: Some(fence) }
    }
}

/// Opens a write transaction: takes the tenant's next change position first (see
/// [`next_position`]), then checks the actor's lease, if any.
pub async fn begin_write<'a>(db: &'a Db, tenant: &TenantId, actor: &Actor) -> ApiResult<(Tx<'a>, i64)> {
    let mut tx = db.begin().await?;
    let pos = next_position(&mut tx, tenant).await?;
    if let Some(f) = &actor.fence {
        super::leases::check(&mut tx, f).await?;
    }
    Ok((tx, pos))
}

/// `created`, `updated`, `deleted`, `moved`, `renamed`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeType {
    Created,
    Updated,
    Deleted,
    Moved,
    Renamed,
}

impl ChangeType {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeType::Created => "created",
            ChangeType::Updated => "updated",
            ChangeType::Deleted => "deleted",
            ChangeType::Moved => "moved",
            ChangeType::Renamed => "renamed",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Change {
    pub position: i64,
    pub id: String,
    pub share_id: String,
    pub node_id: String,
    pub node_type: String,
    pub change_type: String,
    pub name: String,
    pub parent_id: String,
    pub path: String,
    pub old_parent_id: Option<String>,
    pub old_path: Option<String>,
    pub version_id: Option<String>,
    pub size: Option<i64>,
    pub sha256: Option<String>,
    pub actor_type: String,
    pub actor_id: String,
    pub created_at: i64,
}

/// What a write records; the position comes from [`next_position`].
pub struct NewChange<'a> {
    pub share_id: &'a str,
    pub node_id: &'a str,
    pub node_type: &'a str,
    pub change_type: ChangeType,
    pub name: &'a str,
    pub parent_id: &'a str,
    pub path: &'a str,
    pub old_parent_id: Option<&'a str>,
    pub old_path: Option<&'a str>,
    pub version_id: Option<&'a str>,
    pub size: Option<i64>,
    pub sha256: Option<&'a str>,
}

/// Takes the tenant's next change position. Call it FIRST in a write transaction: the row
/// lock it takes orders concurrent writers (so positions are gapless and commit-ordered) and,
/// on SQLite, takes the write lock up front so the transaction cannot deadlock on upgrade.
pub async fn next_position(tx: &mut Tx<'_>, tenant: &TenantId) -> ApiResult<i64> {
    let (pos,): (i64,) =
        sqlx::query_as("UPDATE tenants SET change_seq = change_seq + 1 WHERE id = $1 RETURNING change_seq")
            .bind(tenant.as_str())
            .fetch_one(&mut **tx)
            .await?;
    Ok(pos)
}

pub async fn record(
    tx: &mut Tx<'_>,
    tenant: &TenantId,
    position: i64,
    actor: &Actor,
    c: NewChange<'_>,
) -> ApiResult<()> {
    sqlx::query(
        "INSERT INTO changes (tenant_id, position, id, share_id, node_id, node_type, change_type, name,
            parent_id, path, old_parent_id, old_path, version_id, size, sha256, actor_type, actor_id, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)",
    )
    .bind(tenant.as_str())
    .bind(position)
    .bind(ChangeId::generate().as_str())
    .bind(c.share_id)
    .bind(c.node_id)
    .bind(c.node_type)
    .bind(c.change_type.as_str())
    .bind(c.name)
    .bind(c.parent_id)
    .bind(c.path)
    .bind(c.old_parent_id)
    .bind(c.old_path)
    .bind(c.version_id)
    .bind(c.size)
    .bind(c.sha256)
    .bind(actor.kind)
    .bind(&actor.id)
    .bind(now_ms())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn change_from(r: &AnyRow) -> Change {
    Change {
        position: get_i64(r, "position"),
        id: get_str(r, "id"),
        share_id: get_str(r, "share_id"),
        node_id: get_str(r, "node_id"),
        node_type: get_str(r, "node_type"),
        change_type: get_str(r, "change_type"),
        name: get_str(r, "name"),
        parent_id: get_str(r, "parent_id"),
        path: get_str(r, "path"),
        old_parent_id: get_opt_str(r, "old_parent_id"),
        old_path: get_opt_str(r, "old_path"),
        version_id: get_opt_str(r, "version_id"),
        size: get_opt_i64(r, "size"),
        sha256: get_opt_str(r, "sha256"),
        actor_type: get_str(r, "actor_type"),
        actor_id: get_str(r, "actor_id"),
        created_at: get_i64(r, "created_at"),
    }
}

/// Changes after `cursor` (exclusive), oldest first, at most `limit`; restricted to the
/// given shares. Returns the changes, the cursor to continue from and whether more follow.
pub async fn list(
    db: &Db,
    tenant: &TenantId,
    share_ids: &[String],
    cursor: i64,
    limit: i64,
) -> ApiResult<(Vec<Change>, i64, bool)> {
    if share_ids.is_empty() {
        return Ok((Vec::new(), cursor, false));
    }
    // Share ids are our own validated ids; a list of placeholders keeps it one query.
    let placeholders: Vec<String> = (0..share_ids.len()).map(|i| format!("${}", i + 4)).collect();
    let sql = format!(
        "SELECT * FROM changes WHERE tenant_id = $1 AND position > $2 AND share_id IN ({})
         ORDER BY position LIMIT $3",
        placeholders.join(", ")
    );
    let mut q = sqlx::query(&sql).bind(tenant.as_str()).bind(cursor).bind(limit + 1);
    for s in share_ids {
        q = q.bind(s.as_str());
    }
    let rows = q.fetch_all(&db.pool).await?;
    let has_more = rows.len() as i64 > limit;
    let changes: Vec<Change> = rows.iter().take(limit as usize).map(change_from).collect();
    let next = changes.last().map(|c| c.position).unwrap_or(cursor);
    Ok((changes, next, has_more))
}
