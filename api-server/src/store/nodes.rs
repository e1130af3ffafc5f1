//! Folders, files, versions and trash.
//!
//! Invariants:
//! - among the live (not trashed) children of a folder, names are unique (a partial unique
//!   index enforces it);
//! - a version becomes visible only in the transaction that records all its chunks, after
//!   the content was completely stored; a file's current version is its newest one;
//! - every write takes the tenant's next change position first and records its change in
//!   the same transaction;
//! - deleting moves to trash (the item keeps its versions); restoring brings it back.

use sqlx::any::AnyRow;

use super::changes::{self, Actor, ChangeType, NewChange};
use super::{get_i64, get_opt_i64, get_opt_str, get_str, Tx};
use crate::content::{ChunkRef, Ingested};
use crate::db::Db;
use crate::error::{ApiError, ApiResult};
use crate::ids::{FileId, FolderId, TenantId, VersionId};
use crate::time::now_ms;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Folder,
    File,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Folder => "folder",
            Kind::File => "file",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Node {
    pub id: String,
    pub tenant_id: TenantId,
    pub share_id: String,
    /// The share id for items at the share's root.
    pub parent_id: String,
    pub name: String,
    pub kind: Kind,
    pub size: i64,
    pub sha256: Option<String>,
    pub current_version_id: Option<String>,
    pub owner_id: String,
    pub modified_at: i64,
    pub created_at: i64,
    pub updated_at: i64,
    pub deleted_at: Option<i64>,
    /// The change-log position of the node's last change: its etag.
    pub last_change: i64,
}

#[derive(Clone, Debug)]
pub struct Version {
    pub id: String,
    pub file_id: String,
    pub number: i64,
    pub size: i64,
    pub sha256: String,
    pub modified_at: i64,
    pub created_at: i64,
    pub actor_type: String,
    pub actor_id: String,
}

fn node_from(r: &AnyRow) -> Node {
    Node {
        id: get_str(r, "id"),
        tenant_id: TenantId::from_db(get_str(r, "tenant_id")),
        share_id: get_str(r, "share_id"),
        parent_id: get_str(r, "parent_id"),
        name: get_str(r, "name"),
        kind: if get_str(r, "kind") == "folder" { Kind::Folder } else { Kind::File },
        size: get_i64(r, "size"),
        sha256: get_opt_str(r, "sha256"),
        current_version_id: get_opt_str(r, "current_version_id"),
        owner_id: get_str(r, "owner_id"),
        modified_at: get_i64(r, "modified_at"),
        created_at: get_i64(r, "created_at"),
        updated_at: get_i64(r, "updated_at"),
        deleted_at: get_opt_i64(r, "deleted_at"),
        last_change: get_i64(r, "last_change"),
    }
}

fn version_from(r: &AnyRow) -> Version {
    Version {
        id: get_str(r, "id"),
        file_id: get_str(r, "file_id"),
        number: get_i64(r, "number"),
        size: get_i64(r, "size"),
        sha256: get_str(r, "sha256"),
        modified_at: get_i64(r, "modified_at"),
        created_at: get_i64(r, "created_at"),
        actor_type: get_str(r, "actor_type"),
        actor_id: get_str(r, "actor_id"),
    }
}

/// A node of the tenant (trashed or not), or 404.
pub async fn get(db: &Db, tenant: &TenantId, id: &str) -> ApiResult<Node> {
    sqlx::query("SELECT * FROM nodes WHERE id = $1 AND tenant_id = $2")
        .bind(id)
        .bind(tenant.as_str())
        .fetch_optional(&db.pool)
        .await?
        .map(|r| node_from(&r))
        .ok_or_else(|| ApiError::not_found("item"))
}

async fn get_tx(tx: &mut Tx<'_>, tenant: &TenantId, id: &str) -> ApiResult<Option<Node>> {
    Ok(sqlx::query("SELECT * FROM nodes WHERE id = $1 AND tenant_id = $2")
        .bind(id)
        .bind(tenant.as_str())
        .fetch_optional(&mut **tx)
        .await?
        .map(|r| node_from(&r)))
}

/// Where a node stands: its path from the share root and whether it or an ancestor is in trash.
#[derive(Clone, Debug)]
pub struct Location {
    pub path: String,
    /// Ids from the node up to (excluding) the share, nearest first.
    pub ancestry: Vec<String>,
    pub in_trash: bool,
}

/// The node and its ancestors, the node first. The first row's `kind`, `share_id` and
/// `tenant_id` let a writer check a parent folder with this one query.
const ANCESTRY_SQL: &str = "WITH RECURSIVE up(id, parent_id, name, deleted_at, kind, share_id, tenant_id, depth) AS (
        SELECT id, parent_id, name, deleted_at, kind, share_id, tenant_id, 0 FROM nodes WHERE id = $1
        UNION ALL
        SELECT n.id, n.parent_id, n.name, n.deleted_at, n.kind, n.share_id, n.tenant_id, up.depth + 1
        FROM nodes n JOIN up ON n.id = up.parent_id
    ) SELECT id, name, deleted_at, kind, share_id, tenant_id FROM up ORDER BY depth";

fn location_from(rows: &[AnyRow]) -> Location {
    let mut names: Vec<String> = rows.iter().map(|r| get_str(r, "name")).collect();
    names.reverse();
    Location {
        path: crate::paths::join(&names),
        ancestry: rows.iter().map(|r| get_str(r, "id")).collect(),
        in_trash: rows.iter().any(|r| get_opt_i64(r, "deleted_at").is_some()),
    }
}

pub async fn locate(db: &Db, id: &str) -> ApiResult<Location> {
    let rows = sqlx::query(ANCESTRY_SQL).bind(id).fetch_all(&db.pool).await?;
    Ok(location_from(&rows))
}

async fn locate_tx(tx: &mut Tx<'_>, id: &str) -> ApiResult<Location> {
    let rows = sqlx::query(ANCESTRY_SQL).bind(id).fetch_all(&mut **tx).await?;
    Ok(location_from(&rows))
}

/// The live child `name` of `parent_id`.
pub async fn child(db: &Db, parent_id: &str, name: &str) -> ApiResult<Option<Node>> {
    Ok(sqlx::query("SELECT * FROM nodes WHERE parent_id = $1 AND name = $2 AND deleted_at IS NULL")
        .bind(parent_id)
        .bind(name)
        .fetch_optional(&db.pool)
        .await?
        .map(|r| node_from(&r)))
}

async fn child_tx(tx: &mut Tx<'_>, parent_id: &str, name: &str) -> ApiResult<Option<Node>> {
    Ok(sqlx::query("SELECT * FROM nodes WHERE parent_id = $1 AND name = $2 AND deleted_at IS NULL")
        .bind(parent_id)
        .bind(name)
        .fetch_optional(&mut **tx)
        .await?
        .map(|r| node_from(&r)))
}

/// The live item at `segs` under the share root (an empty path is the root: `None`).
pub async fn lookup_path(db: &Db, share_id: &str, segs: &[String]) -> ApiResult<Option<Node>> {
    let mut parent = share_id.to_string();
    let mut found = None;
    for (i, s) in segs.iter().enumerate() {
        let Some(n) = child(db, &parent, s).await? else {
            return Err(ApiError::not_found("item"));
        };
        if n.kind == Kind::File && i + 1 < segs.len() {
            return Err(ApiError::not_found("item"));
        }
        parent = n.id.clone();
        found = Some(n);
    }
    Ok(found)
}

/// Live children of a folder (or of the share root), ordered by name, after `after` (a name).
pub async fn children(db: &Db, parent_id: &str, after: Option<&str>, limit: i64) -> ApiResult<Vec<Node>> {
    let rows = sqlx::query(
        "SELECT * FROM nodes WHERE parent_id = $1 AND deleted_at IS NULL AND name > $2 ORDER BY name LIMIT $3",
    )
    .bind(parent_id)
    .bind(after.unwrap_or(""))
    .bind(limit)
    .fetch_all(&db.pool)
    .await?;
    Ok(rows.iter().map(node_from).collect())
}

/// Items moved to trash themselves (not their descendants), newest first.
pub async fn trash(db: &Db, share_id: &str) -> ApiResult<Vec<Node>> {
    let rows =
        sqlx::query("SELECT * FROM nodes WHERE share_id = $1 AND deleted_at IS NOT NULL ORDER BY deleted_at DESC, id")
            .bind(share_id)
            .fetch_all(&db.pool)
            .await?;
    Ok(rows.iter().map(node_from).collect())
}

/// Checks that `parent_id` is the share root or a live folder of that share, and returns its
/// path (one query: this runs inside every write transaction).
async fn live_parent(tx: &mut Tx<'_>, tenant: &TenantId, share_id: &str, parent_id: &str) -> ApiResult<String> {
    if parent_id == share_id {
        return Ok("/".to_string());
    }
    let rows = sqlx::query(ANCESTRY_SQL).bind(parent_id).fetch_all(&mut **tx).await?;
    let p = rows
        .first()
        .filter(|p| get_str(p, "tenant_id") == tenant.as_str() && get_str(p, "share_id") == share_id)
        .ok_or_else(|| ApiError::not_found("parent folder").with_field("parent_id"))?;
    if get_str(p, "kind") != Kind::Folder.as_str() {
        return Err(ApiError::validation("parent_id", "the parent is a file, not a folder").with_code("NOT_A_FOLDER"));
    }
    let loc = location_from(&rows);
    if loc.in_trash {
        return Err(ApiError::conflict("PARENT_IN_TRASH", "the parent folder is in trash").with_field("parent_id"));
    }
    Ok(loc.path)
}

fn name_taken(name: &str) -> ApiError {
    ApiError::conflict("NAME_TAKEN", format!("an item named '{name}' already exists there")).with_field("name")
}

/// Records the change of node `id` (as the transaction sees it now: name, parent, path,
/// content) at position `pos`, commits, and returns the node. `old` is the parent and path
/// before a move or rename.
async fn record_and_commit(
    mut tx: Tx<'_>,
    tenant: &TenantId,
    pos: i64,
    actor: &Actor,
    id: &str,
    change_type: ChangeType,
    old: Option<(&str, &str)>,
) -> ApiResult<Node> {
    let n =
        get_tx(&mut tx, tenant, id).await?.ok_or_else(|| ApiError::internal("item vanished in its own transaction"))?;
    let path = locate_tx(&mut tx, id).await?.path;
    record_known_and_commit(tx, tenant, pos, actor, &n, &path, change_type, old).await?;
    Ok(n)
}

/// [`record_and_commit`] for a writer that knows the node as it now stands and its path.
#[allow(clippy::too_many_arguments)]
async fn record_known_and_commit(
    mut tx: Tx<'_>,
    tenant: &TenantId,
    pos: i64,
    actor: &Actor,
    n: &Node,
    path: &str,
    change_type: ChangeType,
    old: Option<(&str, &str)>,
) -> ApiResult<()> {
    let file = n.kind == Kind::File;
    changes::record(
        &mut tx,
        tenant,
        pos,
        actor,
        NewChange {
            share_id: &n.share_id,
            node_id: &n.id,
            node_type: n.kind.as_str(),
            change_type,
            name: &n.name,
            parent_id: &n.parent_id,
            path,
            old_parent_id: old.map(|o| o.0),
            old_path: old.map(|o| o.1),
            version_id: n.current_version_id.as_deref(),
            size: file.then_some(n.size),
            sha256: n.sha256.as_deref(),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// The path of `name` in the folder at `parent_path`.
fn child_path(parent_path: &str, name: &str) -> String {
    if parent_path == "/" {
        format!("/{name}")
    } else {
        format!("{parent_path}/{name}")
    }
}

/// Creates a folder. `name` must already be validated (NFC).
pub async fn create_folder(
    db: &Db,
    tenant: &TenantId,
    actor: &Actor,
    share_id: &str,
    parent_id: &str,
    name: &str,
) -> ApiResult<Node> {
    let (mut tx, pos) = changes::begin_write(db, tenant, actor).await?;
    live_parent(&mut tx, tenant, share_id, parent_id).await?;
    if child_tx(&mut tx, parent_id, name).await?.is_some() {
        return Err(name_taken(name));
    }
    let node = insert_folder(&mut tx, tenant, actor, share_id, parent_id, name, pos).await?;
    record_and_commit(tx, tenant, pos, actor, &node.id, ChangeType::Created, None).await
}

async fn insert_folder(
    tx: &mut Tx<'_>,
    tenant: &TenantId,
    actor: &Actor,
    share_id: &str,
    parent_id: &str,
    name: &str,
    pos: i64,
) -> ApiResult<Node> {
    let now = now_ms();
    let node = Node {
        id: FolderId::generate().to_string(),
        tenant_id: tenant.clone(),
        share_id: share_id.to_string(),
        parent_id: parent_id.to_string(),
        name: name.to_string(),
        kind: Kind::Folder,
        size: 0,
        sha256: None,
        current_version_id: None,
        owner_id: actor.id.clone(),
        modified_at: now,
        created_at: now,
        updated_at: now,
        deleted_at: None,
        last_change: pos,
    };
    sqlx::query(
        "INSERT INTO nodes (id, tenant_id, share_id, parent_id, name, kind, size, owner_id, modified_at, created_at, updated_at, last_change)
         VALUES ($1, $2, $3, $4, $5, 'folder', 0, $6, $7, $7, $7, $8)",
    )
    .bind(&node.id)
    .bind(tenant.as_str())
    .bind(share_id)
    .bind(parent_id)
    .bind(name)
    .bind(&node.owner_id)
    .bind(now)
    .bind(pos)
    .execute(&mut **tx)
    .await
    .map_err(|e| match ApiError::from(e) {
        err if err.code == "ALREADY_EXISTS" => name_taken(name),
        err => err,
    })?;
    close_if_replicating(tx, tenant, actor, &node.id, "folder").await?;
    Ok(node)
}

/// While a connector replicates permissions (`sync_permissions`), what it creates starts
/// closed — no entries, no inheritance, only the share role — so replication only ever opens
/// access, and an item the PERMISSIONS phase never reaches (a stopped run, an unreadable
/// descriptor) shows nobody more than the file server would.
async fn close_if_replicating(
    tx: &mut Tx<'_>,
    tenant: &TenantId,
    actor: &Actor,
    node_id: &str,
    kind: &'static str,
) -> ApiResult<()> {
    if actor.kind != "connector" {
        return Ok(());
    }
    // One statement, whether or not the connector replicates permissions.
    sqlx::query(
        "INSERT INTO acls (resource_id, resource_type, tenant_id, inherit_from_parent)
         SELECT $1, $2, $3, 0 WHERE EXISTS (SELECT 1 FROM connectors WHERE id = $4 AND sync_permissions <> 0)
         ON CONFLICT (resource_id) DO NOTHING",
    )
    .bind(node_id)
    .bind(kind)
    .bind(tenant.as_str())
    .bind(&actor.id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The id of the live folder at `segs` when every folder on the way exists, in one query
/// (a join per level, up to 16 levels). `None` when one is missing, is a file, or the path is
/// deeper: [`ensure_folders`] then walks it level by level. Every upload by path asks this.
async fn live_folder_at(db: &Db, share_id: &str, segs: &[String]) -> ApiResult<Option<String>> {
    if segs.is_empty() || segs.len() > 16 {
        return Ok(None);
    }
    let level = |i: usize| format!("n{i}.name = ${} AND n{i}.deleted_at IS NULL AND n{i}.kind = 'folder'", i + 2);
    let mut sql = format!("SELECT n{}.id FROM nodes n0", segs.len() - 1);
    for i in 1..segs.len() {
        sql.push_str(&format!(" JOIN nodes n{i} ON n{i}.parent_id = n{}.id AND {}", i - 1, level(i)));
    }
    sql.push_str(&format!(" WHERE n0.parent_id = $1 AND {}", level(0)));
    let mut q = sqlx::query_as::<_, (String,)>(&sql).bind(share_id);
    for s in segs {
        q = q.bind(s);
    }
    Ok(q.fetch_optional(&db.pool).await?.map(|(id,)| id))
}

/// Makes sure every folder of `segs` exists under the share root, creating the missing ones,
/// and returns the id of the last (the share id for an empty path).
pub async fn ensure_folders(
    db: &Db,
    tenant: &TenantId,
    actor: &Actor,
    share_id: &str,
    segs: &[String],
) -> ApiResult<String> {
    if let Some(id) = live_folder_at(db, share_id, segs).await? {
        return Ok(id);
    }
    let mut parent = share_id.to_string();
    for s in segs {
        match child(db, &parent, s).await? {
            Some(n) if n.kind == Kind::Folder => parent = n.id,
            Some(_) => {
                return Err(
                    ApiError::conflict("NOT_A_FOLDER", format!("'{s}' is a file, not a folder")).with_field("path")
                )
            }
            None => match create_folder(db, tenant, actor, share_id, &parent, s).await {
                Ok(n) => parent = n.id,
                // Created concurrently by someone else: use theirs.
                Err(e) if e.code == "NAME_TAKEN" => {
                    parent = child(db, &parent, s).await?.ok_or(e)?.id;
                }
                Err(e) => return Err(e),
            },
        }
    }
    Ok(parent)
}

/// Where new content goes.
pub enum Target<'a> {
    /// The file named `name` in `parent_id`: a new file, or a new version if one exists.
    Named { parent_id: &'a str, name: &'a str },
    /// A new version of this existing file.
    Existing { file_id: &'a str },
}

/// The result of committing content.
pub struct Committed {
    pub node: Node,
    /// The file's path in its share (it is not in trash: the write checked).
    pub path: String,
    pub version: Version,
    pub created: bool,
}

/// What a content write expects to find.
#[derive(Clone, Copy, Debug)]
pub enum Expect<'a> {
    /// Create the file or add a version, whatever is there.
    Any,
    /// Create a new file: a file of that name must not exist (409 `NAME_TAKEN`).
    Absent,
    /// Add a version to the file whose current version is this (409 `VERSION_CONFLICT`).
    Version(&'a str),
}

impl<'a> Expect<'a> {
    pub fn from_base(base: Option<&'a str>) -> Self {
        base.map(Expect::Version).unwrap_or(Expect::Any)
    }
}

/// Makes stored content a file's new version (or a new file), in one transaction:
/// the chunks were completely stored before this is called.
#[allow(clippy::too_many_arguments)]
pub async fn commit_content(
    db: &Db,
    tenant: &TenantId,
    actor: &Actor,
    share_id: &str,
    target: Target<'_>,
    content: &Ingested,
    expect: Expect<'_>,
    modified_at: Option<i64>,
) -> ApiResult<Committed> {
    let (mut tx, pos) = changes::begin_write(db, tenant, actor).await?;
    let now = now_ms();
    let mtime = modified_at.unwrap_or(now);
    let (existing, parent_id, name, path) = match target {
        Target::Named { parent_id, name } => {
            let parent_path = live_parent(&mut tx, tenant, share_id, parent_id).await?;
            let ex = child_tx(&mut tx, parent_id, name).await?;
            (ex, parent_id.to_string(), name.to_string(), child_path(&parent_path, name))
        }
        Target::Existing { file_id } => {
            let n = get_tx(&mut tx, tenant, file_id)
                .await?
                .filter(|n| n.share_id == share_id && n.kind == Kind::File)
                .ok_or_else(|| ApiError::not_found("file"))?;
            let loc = locate_tx(&mut tx, &n.id).await?;
            if loc.in_trash {
                return Err(ApiError::conflict("IN_TRASH", "the file is in trash; restore it first"));
            }
            let (p, nm) = (n.parent_id.clone(), n.name.clone());
            (Some(n), p, nm, loc.path)
        }
    };
    if let Some(ex) = &existing {
        if ex.kind == Kind::Folder {
            return Err(ApiError::conflict("NAME_TAKEN", format!("'{name}' is a folder")).with_field("name"));
        }
        if matches!(expect, Expect::Absent) {
            return Err(name_taken(&name));
        }
        if let Expect::Version(base) = expect {
            if ex.current_version_id.as_deref() != Some(base) {
                return Err(ApiError::conflict(
                    "VERSION_CONFLICT",
                    "the file changed since the version this write is based on",
                )
                .with_field("base_version_id")
                .with_details(serde_json::json!({ "current_version_id": ex.current_version_id })));
            }
        }
    } else if matches!(expect, Expect::Version(_)) {
        return Err(ApiError::conflict("VERSION_CONFLICT", "the file this write is based on no longer exists")
            .with_field("base_version_id"));
    }

    for c in &content.chunks {
        sqlx::query(
            "INSERT INTO chunks (sha256, size, created_at) VALUES ($1, $2, $3) ON CONFLICT (sha256) DO NOTHING",
        )
        .bind(&c.sha256)
        .bind(c.size as i64)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }

    // Each statement here runs while the write holds the tenant's change position (and, on
    // SQLite, the database's write lock): a new file is inserted as it will stand, and the
    // node is not read back (it is what was written).
    let version_id = VersionId::generate().to_string();
    let created = existing.is_none();
    let node = match existing {
        None => {
            let node = Node {
                id: FileId::generate().to_string(),
                tenant_id: tenant.clone(),
                share_id: share_id.to_string(),
                parent_id,
                name,
                kind: Kind::File,
                size: content.size as i64,
                sha256: Some(content.sha256.clone()),
                current_version_id: Some(version_id.clone()),
                owner_id: actor.id.clone(),
                modified_at: mtime,
                created_at: now,
                updated_at: now,
                deleted_at: None,
                last_change: pos,
            };
            sqlx::query(
                "INSERT INTO nodes (id, tenant_id, share_id, parent_id, name, kind, size, sha256, current_version_id,
                    owner_id, modified_at, created_at, updated_at, last_change)
                 VALUES ($1, $2, $3, $4, $5, 'file', $6, $7, $8, $9, $10, $11, $11, $12)",
            )
            .bind(&node.id)
            .bind(tenant.as_str())
            .bind(share_id)
            .bind(&node.parent_id)
            .bind(&node.name)
            .bind(node.size)
            .bind(&node.sha256)
            .bind(&version_id)
            .bind(&actor.id)
            .bind(mtime)
            .bind(now)
            .bind(pos)
            .execute(&mut *tx)
            .await
            .map_err(|e| match ApiError::from(e) {
                err if err.code == "ALREADY_EXISTS" => name_taken(&node.name),
                err => err,
            })?;
            close_if_replicating(&mut tx, tenant, actor, &node.id, "file").await?;
            node
        }
        Some(ex) => {
            sqlx::query(
                "UPDATE nodes SET size = $1, sha256 = $2, current_version_id = $3, modified_at = $4, updated_at = $5,
                    last_change = $7
                 WHERE id = $6",
            )
            .bind(content.size as i64)
            .bind(&content.sha256)
            .bind(&version_id)
            .bind(mtime)
            .bind(now)
            .bind(&ex.id)
            .bind(pos)
            .execute(&mut *tx)
            .await?;
            Node {
                size: content.size as i64,
                sha256: Some(content.sha256.clone()),
                current_version_id: Some(version_id.clone()),
                modified_at: mtime,
                updated_at: now,
                last_change: pos,
                ..ex
            }
        }
    };
    let number = if created {
        1
    } else {
        let (n,): (i64,) = sqlx::query_as("SELECT COALESCE(MAX(number), 0) + 1 FROM versions WHERE file_id = $1")
            .bind(&node.id)
            .fetch_one(&mut *tx)
            .await?;
        n
    };
    let version = Version {
        id: version_id,
        file_id: node.id.clone(),
        number,
        size: content.size as i64,
        sha256: content.sha256.clone(),
        modified_at: mtime,
        created_at: now,
        actor_type: actor.kind.to_string(),
        actor_id: actor.id.clone(),
    };
    insert_version(&mut tx, &version, &content.chunks).await?;
    let change = if created { ChangeType::Created } else { ChangeType::Updated };
    record_known_and_commit(tx, tenant, pos, actor, &node, &path, change, None).await?;
    Ok(Committed { node, path, version, created })
}

async fn insert_version(tx: &mut Tx<'_>, v: &Version, chunks: &[ChunkRef]) -> ApiResult<()> {
    sqlx::query(
        "INSERT INTO versions (id, file_id, number, size, sha256, modified_at, created_at, actor_type, actor_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&v.id)
    .bind(&v.file_id)
    .bind(v.number)
    .bind(v.size)
    .bind(&v.sha256)
    .bind(v.modified_at)
    .bind(v.created_at)
    .bind(&v.actor_type)
    .bind(&v.actor_id)
    .execute(&mut **tx)
    .await?;
    for (i, c) in chunks.iter().enumerate() {
        sqlx::query("INSERT INTO version_chunks (version_id, idx, sha256, size) VALUES ($1, $2, $3, $4)")
            .bind(&v.id)
            .bind(i as i64)
            .bind(&c.sha256)
            .bind(c.size as i64)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

pub async fn versions(db: &Db, file_id: &str) -> ApiResult<Vec<Version>> {
    let rows = sqlx::query("SELECT * FROM versions WHERE file_id = $1 ORDER BY number DESC")
        .bind(file_id)
        .fetch_all(&db.pool)
        .await?;
    Ok(rows.iter().map(version_from).collect())
}

pub async fn version(db: &Db, file_id: &str, version_id: &str) -> ApiResult<Version> {
    sqlx::query("SELECT * FROM versions WHERE file_id = $1 AND id = $2")
        .bind(file_id)
        .bind(version_id)
        .fetch_optional(&db.pool)
        .await?
        .map(|r| version_from(&r))
        .ok_or_else(|| ApiError::not_found("version"))
}

pub async fn version_chunks(db: &Db, version_id: &str) -> ApiResult<Vec<ChunkRef>> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT sha256, size FROM version_chunks WHERE version_id = $1 ORDER BY idx")
            .bind(version_id)
            .fetch_all(&db.pool)
            .await?;
    Ok(rows.into_iter().map(|(sha256, size)| ChunkRef { sha256, size: size as u64 }).collect())
}

/// Restores an old version as a new version on top (its content is not copied: the new
/// version names the same chunks).
pub async fn restore_version(
    db: &Db,
    tenant: &TenantId,
    actor: &Actor,
    file: &Node,
    old: &Version,
) -> ApiResult<Committed> {
    let chunks = version_chunks(db, &old.id).await?;
    let content = Ingested { size: old.size as u64, sha256: old.sha256.clone(), chunks };
    commit_content(
        db,
        tenant,
        actor,
        &file.share_id,
        Target::Existing { file_id: &file.id },
        &content,
        Expect::Any,
        Some(old.modified_at),
    )
    .await
}

/// The node as the write transaction sees it, and where it is: not in trash (409
/// `IN_TRASH`), and at `base_version_id` when one is given (409 `VERSION_CONFLICT`).
async fn live_for_write(
    tx: &mut Tx<'_>,
    tenant: &TenantId,
    node: &Node,
    base_version_id: Option<&str>,
) -> ApiResult<(Node, Location)> {
    let cur = get_tx(tx, tenant, &node.id).await?.ok_or_else(|| ApiError::not_found("item"))?;
    let loc = locate_tx(tx, &cur.id).await?;
    if loc.in_trash {
        return Err(ApiError::conflict("IN_TRASH", "the item is in trash; restore it first"));
    }
    if let Some(base) = base_version_id {
        if cur.current_version_id.as_deref() != Some(base) {
            return Err(ApiError::conflict(
                "VERSION_CONFLICT",
                "the item changed since the version this write is based on",
            )
            .with_field("base_version_id"));
        }
    }
    Ok((cur, loc))
}

/// Renames and/or moves an item. `new_parent_id` may be the share id (the root).
pub async fn rename_move(
    db: &Db,
    tenant: &TenantId,
    actor: &Actor,
    node: &Node,
    new_name: Option<&str>,
    new_parent_id: Option<&str>,
    base_version_id: Option<&str>,
) -> ApiResult<Node> {
    let (mut tx, pos) = changes::begin_write(db, tenant, actor).await?;
    let (cur, old_loc) = live_for_write(&mut tx, tenant, node, base_version_id).await?;
    let name = new_name.unwrap_or(&cur.name).to_string();
    let parent = new_parent_id.unwrap_or(&cur.parent_id).to_string();
    if name == cur.name && parent == cur.parent_id {
        tx.rollback().await?;
        return Ok(cur);
    }
    live_parent(&mut tx, tenant, &cur.share_id, &parent).await?;
    if parent != cur.share_id && cur.kind == Kind::Folder {
        let anc = locate_tx(&mut tx, &parent).await?.ancestry;
        if anc.iter().any(|a| a == &cur.id) {
            return Err(ApiError::validation("parent_id", "a folder cannot move into itself or its own subfolder")
                .with_code("INVALID_MOVE"));
        }
    }
    if let Some(other) = child_tx(&mut tx, &parent, &name).await? {
        if other.id != cur.id {
            return Err(name_taken(&name));
        }
    }
    let now = now_ms();
    sqlx::query("UPDATE nodes SET name = $1, parent_id = $2, updated_at = $3, last_change = $5 WHERE id = $4")
        .bind(&name)
        .bind(&parent)
        .bind(now)
        .bind(&cur.id)
        .bind(pos)
        .execute(&mut *tx)
        .await
        .map_err(|e| match ApiError::from(e) {
            err if err.code == "ALREADY_EXISTS" => name_taken(&name),
            err => err,
        })?;
    let moved = parent != cur.parent_id;
    record_and_commit(
        tx,
        tenant,
        pos,
        actor,
        &cur.id,
        if moved { ChangeType::Moved } else { ChangeType::Renamed },
        Some((&cur.parent_id, &old_loc.path)),
    )
    .await
}

/// Moves an item (and with it everything inside) to trash.
pub async fn delete(
    db: &Db,
    tenant: &TenantId,
    actor: &Actor,
    node: &Node,
    base_version_id: Option<&str>,
) -> ApiResult<Node> {
    let (mut tx, pos) = changes::begin_write(db, tenant, actor).await?;
    let (cur, _) = live_for_write(&mut tx, tenant, node, base_version_id).await?;
    let now = now_ms();
    sqlx::query("UPDATE nodes SET deleted_at = $1, deleted_by = $2, updated_at = $1, last_change = $4 WHERE id = $3")
        .bind(now)
        .bind(&actor.id)
        .bind(&cur.id)
        .bind(pos)
        .execute(&mut *tx)
        .await?;
    record_and_commit(tx, tenant, pos, actor, &cur.id, ChangeType::Deleted, None).await
}

/// Brings an item back from trash to where it was. Its parent must not be in trash and its
/// name must be free there (else 409, nothing changes).
pub async fn restore(db: &Db, tenant: &TenantId, actor: &Actor, node: &Node) -> ApiResult<Node> {
    let (mut tx, pos) = changes::begin_write(db, tenant, actor).await?;
    let cur = get_tx(&mut tx, tenant, &node.id).await?.ok_or_else(|| ApiError::not_found("item"))?;
    if cur.deleted_at.is_none() {
        return Err(ApiError::conflict("NOT_IN_TRASH", "the item is not in trash"));
    }
    if cur.parent_id != cur.share_id && locate_tx(&mut tx, &cur.parent_id).await?.in_trash {
        return Err(ApiError::conflict("PARENT_IN_TRASH", "the item's folder is in trash; restore the folder first"));
    }
    if child_tx(&mut tx, &cur.parent_id, &cur.name).await?.is_some() {
        return Err(name_taken(&cur.name));
    }
    let now = now_ms();
    sqlx::query(
        "UPDATE nodes SET deleted_at = NULL, deleted_by = NULL, updated_at = $1, last_change = $3 WHERE id = $2",
    )
    .bind(now)
    .bind(&cur.id)
    .bind(pos)
    .execute(&mut *tx)
    .await
    .map_err(|e| match ApiError::from(e) {
        err if err.code == "ALREADY_EXISTS" => name_taken(&cur.name),
        err => err,
    })?;
    record_and_commit(tx, tenant, pos, actor, &cur.id, ChangeType::Created, None).await
}

/// Sets a node's stored modification time (mirroring SMB) without making a new version.
pub async fn set_times(db: &Db, tenant: &TenantId, actor: &Actor, node: &Node, modified_at: i64) -> ApiResult<Node> {
    let (mut tx, pos) = changes::begin_write(db, tenant, actor).await?;
    let cur = get_tx(&mut tx, tenant, &node.id).await?.ok_or_else(|| ApiError::not_found("item"))?;
    if cur.modified_at == modified_at {
        tx.rollback().await?;
        return Ok(cur);
    }
    sqlx::query("UPDATE nodes SET modified_at = $1, updated_at = $2, last_change = $3 WHERE id = $4")
        .bind(modified_at)
        .bind(now_ms())
        .bind(pos)
        .bind(&cur.id)
        .execute(&mut *tx)
        .await?;
    record_and_commit(tx, tenant, pos, actor, &cur.id, ChangeType::Updated, None).await
}

/// The subtree under `parent_id` (the share id for the whole share), parents before
/// children, ordered by path (byte order), after `after_path`; paths are relative to the
/// parent and start with "/".
pub async fn subtree(
    db: &Db,
    parent_id: &str,
    after_path: &str,
    include_deleted: bool,
    limit: i64,
) -> ApiResult<Vec<(Node, String)>> {
    let live = if include_deleted { "" } else { " AND deleted_at IS NULL" };
    let live_n = if include_deleted { "" } else { " AND n.deleted_at IS NULL" };
    let collate = if db.backend == crate::db::Backend::Postgres { " COLLATE \"C\"" } else { "" };
    let sql = format!(
        "WITH RECURSIVE sub(id, path) AS (
            SELECT id, '/' || name FROM nodes WHERE parent_id = $1{live}
            UNION ALL
            SELECT n.id, sub.path || '/' || n.name FROM nodes n JOIN sub ON n.parent_id = sub.id WHERE 1 = 1{live_n}
         ) SELECT nodes.*, sub.path AS sub_path FROM sub JOIN nodes ON nodes.id = sub.id
         WHERE sub.path{collate} > $2 ORDER BY sub.path{collate} LIMIT $3"
    );
    let rows = sqlx::query(&sql).bind(parent_id).bind(after_path).bind(limit).fetch_all(&db.pool).await?;
    Ok(rows.iter().map(|r| (node_from(r), get_str(r, "sub_path"))).collect())
}
