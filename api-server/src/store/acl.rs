//! ACLs on shares, folders and files, and effective permissions.
//!
//! Every resource has an ACL (implicitly empty and inheriting until written). Resolution is
//! [`crate::perm::resolve`]; this module gathers its inputs: the share-role baseline and the
//! ACLs from the resource up to its share.

use std::collections::{HashMap, HashSet};

use sqlx::any::AnyRow;

use super::{get_i64, get_opt_str, get_str};
use crate::auth::Caller;
use crate::db::Db;
use crate::error::{ApiError, ApiResult};
use crate::ids::{AceId, TenantId};
use crate::perm::{self, Entry, Level, Principal, Subject};
use crate::store::nodes::{self, Kind};
use crate::time::now_ms;

/// A resource permissions apply to.
#[derive(Clone, Debug)]
pub struct Resource {
    /// `share`, `folder` or `file`.
    pub resource_type: &'static str,
    pub id: String,
    pub share_id: String,
}

/// Resolves `resource_type`/`resource_id` inside the tenant, or 404.
pub async fn resource(db: &Db, tenant: &TenantId, resource_type: &str, resource_id: &str) -> ApiResult<Resource> {
    match resource_type {
        "share" => {
            let s = crate::store::shares::get(db, tenant, resource_id).await?;
            Ok(Resource { resource_type: "share", id: s.id.to_string(), share_id: s.id.to_string() })
        }
        "folder" | "file" => {
            let n = nodes::get(db, tenant, resource_id).await?;
            let kind_ok = (n.kind == Kind::Folder) == (resource_type == "folder");
            if !kind_ok {
                return Err(ApiError::not_found(resource_type));
            }
            Ok(Resource {
                resource_type: if n.kind == Kind::Folder { "folder" } else { "file" },
                id: n.id,
                share_id: n.share_id,
            })
        }
        _ => Err(ApiError::validation("resource_type", "must be 'share', 'folder' or 'file'")),
    }
}

/// The resource a node is.
pub fn node_resource(n: &nodes::Node) -> Resource {
    Resource {
        resource_type: if n.kind == Kind::Folder { "folder" } else { "file" },
        id: n.id.clone(),
        share_id: n.share_id.clone(),
    }
}

pub fn share_resource(share_id: &str) -> Resource {
    Resource { resource_type: "share", id: share_id.to_string(), share_id: share_id.to_string() }
}

#[derive(Clone, Debug)]
pub struct AclEntry {
    pub id: String,
    pub principal_type: String,
    pub principal_id: Option<String>,
    pub permissions: i64,
    pub ace_type: String,
    pub inherit_to_children: bool,
}

#[derive(Clone, Debug)]
pub struct Acl {
    pub resource_type: String,
    pub resource_id: String,
    pub inherit_from_parent: bool,
    pub entries: Vec<AclEntry>,
}

fn entry_from(r: &AnyRow) -> AclEntry {
    AclEntry {
        id: get_str(r, "id"),
        principal_type: get_str(r, "principal_type"),
        principal_id: get_opt_str(r, "principal_id"),
        permissions: get_i64(r, "permissions"),
        ace_type: get_str(r, "ace_type"),
        inherit_to_children: get_i64(r, "inherit_to_children") != 0,
    }
}

/// A new entry, as a client writes it.
#[derive(Clone, Debug)]
pub struct NewEntry {
    pub principal_type: String,
    pub principal_id: Option<String>,
    pub permissions: i64,
    pub ace_type: String,
    pub inherit_to_children: bool,
}

pub async fn get(db: &Db, res: &Resource) -> ApiResult<Acl> {
    let inherit: Option<(i64,)> = sqlx::query_as("SELECT inherit_from_parent FROM acls WHERE resource_id = $1")
        .bind(&res.id)
        .fetch_optional(&db.pool)
        .await?;
    let rows = sqlx::query("SELECT * FROM acl_entries WHERE resource_id = $1 ORDER BY created_at, id")
        .bind(&res.id)
        .fetch_all(&db.pool)
        .await?;
    Ok(Acl {
        resource_type: res.resource_type.to_string(),
        resource_id: res.id.clone(),
        inherit_from_parent: inherit.map(|(i,)| i != 0).unwrap_or(true),
        entries: rows.iter().map(entry_from).collect(),
    })
}

/// Checks an entry's principal exists in the tenant and its type matches.
pub async fn validate_entry(db: &Db, tenant: &TenantId, e: &NewEntry, field: &str) -> ApiResult<()> {
    if e.ace_type != "allow" && e.ace_type != "deny" {
        return Err(ApiError::validation(format!("{field}ace_type"), "must be 'allow' or 'deny'"));
    }
    let table = match e.principal_type.as_str() {
        "everyone" => {
            return if e.principal_id.is_none() {
                Ok(())
            } else {
                Err(ApiError::validation(format!("{field}principal_id"), "must be null for 'everyone'"))
            }
        }
        "user" => "users",
        "group" => "groups",
        _ => {
            return Err(ApiError::validation(format!("{field}principal_type"), "must be 'user', 'group' or 'everyone'"))
        }
    };
    let Some(pid) = &e.principal_id else {
        return Err(ApiError::validation(format!("{field}principal_id"), "is required for users and groups"));
    };
    let (n,): (i64,) = sqlx::query_as(&format!("SELECT COUNT(*) FROM {table} WHERE id = $1 AND tenant_id = $2"))
        .bind(pid)
        .bind(tenant.as_str())
        .fetch_one(&db.pool)
        .await?;
    if n == 0 {
        return Err(ApiError::validation(
            format!("{field}principal_id"),
            format!("no {} with that id in this tenant", e.principal_type),
        ));
    }
    Ok(())
}

async fn ensure_acl_row(tx: &mut super::Tx<'_>, tenant: &TenantId, res: &Resource) -> ApiResult<()> {
    sqlx::query(
        "INSERT INTO acls (resource_id, resource_type, tenant_id, inherit_from_parent) VALUES ($1, $2, $3, 1)
         ON CONFLICT (resource_id) DO NOTHING",
    )
    .bind(&res.id)
    .bind(res.resource_type)
    .bind(tenant.as_str())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn insert_entry(tx: &mut super::Tx<'_>, tenant: &TenantId, res: &Resource, e: &NewEntry) -> ApiResult<String> {
    let id = AceId::generate().to_string();
    sqlx::query(
        "INSERT INTO acl_entries (id, resource_id, tenant_id, principal_type, principal_id, permissions, ace_type, inherit_to_children, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&id)
    .bind(&res.id)
    .bind(tenant.as_str())
    .bind(&e.principal_type)
    .bind(e.principal_id.clone())
    .bind(e.permissions)
    .bind(&e.ace_type)
    .bind(e.inherit_to_children as i64)
    .bind(now_ms())
    .execute(&mut **tx)
    .await?;
    Ok(id)
}

/// Adds one entry (validated by the caller).
pub async fn add_entry(db: &Db, tenant: &TenantId, res: &Resource, e: &NewEntry) -> ApiResult<String> {
    let mut tx = db.begin().await?;
    ensure_acl_row(&mut tx, tenant, res).await?;
    let id = insert_entry(&mut tx, tenant, res, e).await?;
    tx.commit().await?;
    Ok(id)
}

/// Replaces the whole ACL (validated by the caller).
pub async fn replace(
    db: &Db,
    tenant: &TenantId,
    res: &Resource,
    inherit_from_parent: bool,
    entries: &[NewEntry],
) -> ApiResult<()> {
    let mut tx = db.begin().await?;
    ensure_acl_row(&mut tx, tenant, res).await?;
    sqlx::query("UPDATE acls SET inherit_from_parent = $1 WHERE resource_id = $2")
        .bind(inherit_from_parent as i64)
        .bind(&res.id)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM acl_entries WHERE resource_id = $1").bind(&res.id).execute(&mut *tx).await?;
    for e in entries {
        insert_entry(&mut tx, tenant, res, e).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Removes every entry and makes the resource inherit again.
pub async fn clear(db: &Db, res: &Resource) -> ApiResult<()> {
    let mut tx = db.begin().await?;
    sqlx::query("DELETE FROM acl_entries WHERE resource_id = $1").bind(&res.id).execute(&mut *tx).await?;
    sqlx::query("DELETE FROM acls WHERE resource_id = $1").bind(&res.id).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(())
}

pub async fn remove_entry(db: &Db, res: &Resource, entry_id: &str) -> ApiResult<()> {
    let r = sqlx::query("DELETE FROM acl_entries WHERE resource_id = $1 AND id = $2")
        .bind(&res.id)
        .bind(entry_id)
        .execute(&db.pool)
        .await?;
    if r.rows_affected() == 0 {
        return Err(ApiError::not_found("ACL entry"));
    }
    Ok(())
}

/// The user whose permissions are computed.
pub struct Who<'a> {
    pub user_id: &'a str,
    pub group_ids: &'a [String],
    pub is_admin: bool,
}

impl<'a> From<&'a Caller> for Who<'a> {
    fn from(c: &'a Caller) -> Self {
        Who { user_id: c.user_id.as_str(), group_ids: &c.group_ids, is_admin: c.is_admin() }
    }
}

/// Effective permission bits of `who` on `res`.
pub async fn effective(db: &Db, who: &Who<'_>, res: &Resource) -> ApiResult<i64> {
    if who.is_admin {
        return Ok(perm::ALL);
    }
    let role = crate::store::shares::role_bits(db, &res.share_id, who.user_id, who.group_ids).await?;
    // The chain of resource ids from the resource up to its share.
    let mut chain_ids =
        if res.resource_type == "share" { Vec::new() } else { nodes::locate(db, &res.id).await?.ancestry };
    chain_ids.push(res.share_id.clone());

    let placeholders: Vec<String> = (1..=chain_ids.len()).map(|i| format!("${i}")).collect();
    let list = placeholders.join(", ");
    let sql_acls = format!("SELECT resource_id, inherit_from_parent FROM acls WHERE resource_id IN ({list})");
    let sql_entries = format!("SELECT * FROM acl_entries WHERE resource_id IN ({list})");
    let mut q = sqlx::query_as::<_, (String, i64)>(&sql_acls);
    for id in &chain_ids {
        q = q.bind(id.as_str());
    }
    let inherits: HashMap<String, bool> =
        q.fetch_all(&db.pool).await?.into_iter().map(|(id, i)| (id, i != 0)).collect();
    let mut eq = sqlx::query(&sql_entries);
    for id in &chain_ids {
        eq = eq.bind(id.as_str());
    }
    let mut entries: HashMap<String, Vec<Entry>> = HashMap::new();
    for r in eq.fetch_all(&db.pool).await? {
        let e = entry_from(&r);
        let principal = match e.principal_type.as_str() {
            "user" => Principal::User(e.principal_id.unwrap_or_default()),
            "group" => Principal::Group(e.principal_id.unwrap_or_default()),
            _ => Principal::Everyone,
        };
        entries.entry(get_str(&r, "resource_id")).or_default().push(Entry {
            principal,
            permissions: e.permissions,
            deny: e.ace_type == "deny",
            inherit_to_children: e.inherit_to_children,
        });
    }
    let levels: Vec<Level> = chain_ids
        .iter()
        .map(|id| Level {
            inherit_from_parent: inherits.get(id).copied().unwrap_or(true),
            entries: entries.remove(id).unwrap_or_default(),
        })
        .collect();
    Ok(perm::resolve(role, &levels, &Subject { user_id: who.user_id, group_ids: who.group_ids }))
}

/// Ids per query in [`readable`]: well under every backend's limit on bound parameters.
const IDS_PER_QUERY: usize = 500;

/// The nodes among `node_ids` (of share `share_id`, live or trashed) on which `who` holds
/// `READ`, for filtering listings (change log, trash) without a query per row: the nodes'
/// ancestors, ACL flags and entries are read in a few batched queries and every chain is
/// resolved in memory by [`perm::resolve`], exactly as [`effective`] does one at a time. A
/// node whose chain cannot be followed up to the share is left out (less, never more).
pub async fn readable(db: &Db, who: &Who<'_>, share_id: &str, node_ids: &[String]) -> ApiResult<HashSet<String>> {
    let wanted: Vec<String> = {
        let mut v: Vec<String> = node_ids.to_vec();
        v.sort();
        v.dedup();
        v
    };
    if who.is_admin {
        return Ok(wanted.into_iter().collect());
    }
    let role = crate::store::shares::role_bits(db, share_id, who.user_id, who.group_ids).await?;
    // Every node with its parent, from the wanted ones up to the share's root.
    let mut parent_of: HashMap<String, String> = HashMap::new();
    for chunk in wanted.chunks(IDS_PER_QUERY) {
        let list = placeholders(2, chunk.len());
        let sql = format!(
            "WITH RECURSIVE up(id, parent_id) AS (
                SELECT id, parent_id FROM nodes WHERE share_id = $1 AND id IN ({list})
                UNION
                SELECT n.id, n.parent_id FROM nodes n JOIN up ON n.id = up.parent_id
             ) SELECT id, parent_id FROM up"
        );
        let mut q = sqlx::query_as::<_, (String, String)>(&sql).bind(share_id);
        for id in chunk {
            q = q.bind(id.as_str());
        }
        parent_of.extend(q.fetch_all(&db.pool).await?);
    }
    let mut all: Vec<String> = parent_of.keys().cloned().collect();
    all.push(share_id.to_string());
    let mut inherits: HashMap<String, bool> = HashMap::new();
    let mut entries: HashMap<String, Vec<Entry>> = HashMap::new();
    for chunk in all.chunks(IDS_PER_QUERY) {
        let list = placeholders(1, chunk.len());
        let sql = format!("SELECT resource_id, inherit_from_parent FROM acls WHERE resource_id IN ({list})");
        let mut q = sqlx::query_as::<_, (String, i64)>(&sql);
        for id in chunk {
            q = q.bind(id.as_str());
        }
        inherits.extend(q.fetch_all(&db.pool).await?.into_iter().map(|(id, i)| (id, i != 0)));
        let sql = format!("SELECT * FROM acl_entries WHERE resource_id IN ({list})");
        let mut q = sqlx::query(&sql);
        for id in chunk {
            q = q.bind(id.as_str());
        }
        for r in q.fetch_all(&db.pool).await? {
            let resource = get_str(&r, "resource_id");
            entries.entry(resource).or_default().push(level_entry(entry_from(&r)));
        }
    }
    let subject = Subject { user_id: who.user_id, group_ids: who.group_ids };
    let level = |id: &str| Level {
        inherit_from_parent: inherits.get(id).copied().unwrap_or(true),
        entries: entries.get(id).cloned().unwrap_or_default(),
    };
    let mut out = HashSet::new();
    'nodes: for id in wanted {
        let mut chain = Vec::new();
        let mut at = id.clone();
        while at != share_id {
            let Some(parent) = parent_of.get(&at) else { continue 'nodes };
            chain.push(level(&at));
            if chain.len() > parent_of.len() {
                continue 'nodes; // a cycle cannot happen; never loop on one
            }
            at = parent.clone();
        }
        chain.push(level(share_id));
        if perm::resolve(role, &chain, &subject) & perm::READ != 0 {
            out.insert(id);
        }
    }
    Ok(out)
}

fn placeholders(first: usize, n: usize) -> String {
    (first..first + n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

fn level_entry(e: AclEntry) -> Entry {
    let principal = match e.principal_type.as_str() {
        "user" => Principal::User(e.principal_id.unwrap_or_default()),
        "group" => Principal::Group(e.principal_id.unwrap_or_default()),
        _ => Principal::Everyone,
    };
    Entry {
        principal,
        permissions: e.permissions,
        deny: e.ace_type == "deny",
        inherit_to_children: e.inherit_to_children,
    }
}

/// Fails with 403 unless `caller` holds `bit` on `res`.
pub async fn require(db: &Db, caller: &Caller, res: &Resource, bit: i64) -> ApiResult<()> {
    let have = effective(db, &Who::from(caller), res).await?;
    if have & bit == bit {
        Ok(())
    } else {
        Err(ApiError::forbidden(format!("{} permission on this {} is required", perm::name_of(bit), res.resource_type)))
    }
}
