//! Permission replication on the ScaiDrive side: a connector's worker hands over the ACL and
//! owner it translated from an item's NT security descriptor; this module writes them onto
//! the node (only where they differ), records what was replicated (`permission_states`) and
//! tells, next run, which nodes were edited in ScaiDrive since (drift), so SMB stays the
//! system of record for permissions while `sync_permissions` is on.
//!
//! An ACL and owner are compared in a canonical text form, [`canonical`]: the same for the
//! state recorded here and for a node's current ACL read back, whatever order entries were
//! written in.

use std::collections::HashMap;

use super::{get_i64, get_opt_str, get_str, Tx};
use crate::db::Db;
use crate::error::ApiResult;
use crate::ids::{AceId, TenantId};
use crate::store::leases::{self, Fence};
use crate::time::now_ms;

/// One ACL entry in replication terms.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Entry {
    /// `user`, `group` or `everyone`.
    pub principal_type: String,
    /// `usr_…` / `grp_…`; empty for everyone.
    pub principal_id: String,
    pub deny: bool,
    pub permissions: i64,
    pub inherit_to_children: bool,
}

/// The ACL and owner of one node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Acl {
    pub inherit_from_parent: bool,
    pub entries: Vec<Entry>,
    /// `usr_…`; empty: the connector owns the node.
    pub owner: String,
}

/// The canonical text of an ACL and owner: `inherit|owner|entry;entry…`, entries sorted and
/// merged, each `type:id:a|d:bits:0|1`.
pub fn canonical(acl: &Acl) -> String {
    let mut merged: Vec<Entry> = Vec::new();
    let mut sorted = acl.entries.clone();
    sorted.sort();
    for e in sorted.into_iter().filter(|e| e.permissions != 0) {
        match merged.last_mut() {
            Some(l)
                if l.principal_type == e.principal_type
                    && l.principal_id == e.principal_id
                    && l.deny == e.deny
                    && l.inherit_to_children == e.inherit_to_children =>
            {
                l.permissions |= e.permissions
            }
            _ => merged.push(e),
        }
    }
    let entries: Vec<String> = merged
        .iter()
        .map(|e| {
            format!(
                "{}:{}:{}:{}:{}",
                e.principal_type,
                e.principal_id,
                if e.deny { "d" } else { "a" },
                e.permissions,
                e.inherit_to_children as u8
            )
        })
        .collect();
    format!("{}|{}|{}", acl.inherit_from_parent as u8, acl.owner, entries.join(";"))
}

/// Parses [`canonical`] text back (for the worker's view of what was replicated).
pub fn parse_canonical(s: &str) -> Option<Acl> {
    let mut parts = s.splitn(3, '|');
    let inherit = parts.next()? == "1";
    let owner = parts.next()?.to_string();
    let rest = parts.next()?;
    let mut entries = Vec::new();
    for e in rest.split(';').filter(|e| !e.is_empty()) {
        let f: Vec<&str> = e.split(':').collect();
        if f.len() != 5 {
            return None;
        }
        entries.push(Entry {
            principal_type: f[0].to_string(),
            principal_id: f[1].to_string(),
            deny: f[2] == "d",
            permissions: f[3].parse().ok()?,
            inherit_to_children: f[4] == "1",
        });
    }
    Some(Acl { inherit_from_parent: inherit, entries, owner })
}

/// A recorded replication state.
#[derive(Clone, Debug)]
pub struct State {
    pub path: String,
    pub node_id: String,
    pub sd_changed_at: i64,
    pub mappings_version: i64,
    pub acl: Acl,
    /// The node's ACL or owner no longer is what was replicated (or the node is gone).
    pub drifted: bool,
}

/// The node's owner as replication sees it: the connector's own id means "the connector".
fn owner_view(owner_id: &str, connector_id: &str) -> String {
    if owner_id == connector_id {
        String::new()
    } else {
        owner_id.to_string()
    }
}

/// Current ACLs and owners of `node_ids` (absent: the node no longer exists).
async fn current(
    conn: &mut sqlx::AnyConnection,
    connector_id: &str,
    share_id: &str,
    node_ids: &[String],
) -> ApiResult<HashMap<String, Acl>> {
    let mut out: HashMap<String, Acl> = HashMap::new();
    if node_ids.is_empty() {
        return Ok(out);
    }
    let list: Vec<String> = (2..=node_ids.len() + 1).map(|i| format!("${i}")).collect();
    let list = list.join(", ");
    let sql = format!(
        "SELECT n.id, n.owner_id, a.inherit_from_parent FROM nodes n LEFT JOIN acls a ON a.resource_id = n.id
         WHERE n.share_id = $1 AND n.deleted_at IS NULL AND n.id IN ({list})"
    );
    let mut q = sqlx::query(&sql).bind(share_id);
    for id in node_ids {
        q = q.bind(id.as_str());
    }
    for r in q.fetch_all(&mut *conn).await? {
        let inherit = super::get_opt_i64(&r, "inherit_from_parent").map(|i| i != 0).unwrap_or(true);
        out.insert(
            get_str(&r, "id"),
            Acl {
                inherit_from_parent: inherit,
                entries: Vec::new(),
                owner: owner_view(&get_str(&r, "owner_id"), connector_id),
            },
        );
    }
    let sql = format!("SELECT * FROM acl_entries WHERE resource_id IN ({})", {
        let l: Vec<String> = (1..=node_ids.len()).map(|i| format!("${i}")).collect();
        l.join(", ")
    });
    let mut q = sqlx::query(&sql);
    for id in node_ids {
        q = q.bind(id.as_str());
    }
    for r in q.fetch_all(&mut *conn).await? {
        if let Some(acl) = out.get_mut(&get_str(&r, "resource_id")) {
            acl.entries.push(Entry {
                principal_type: get_str(&r, "principal_type"),
                principal_id: get_opt_str(&r, "principal_id").unwrap_or_default(),
                deny: get_str(&r, "ace_type") == "deny",
                permissions: get_i64(&r, "permissions"),
                inherit_to_children: get_i64(&r, "inherit_to_children") != 0,
            });
        }
    }
    Ok(out)
}

/// One page of a connector's replication states, by path, with drift detected.
pub async fn list(db: &Db, connector_id: &str, share_id: &str, after: &str, limit: i64) -> ApiResult<Vec<State>> {
    let mut conn = db.pool.acquire().await?;
    let rows =
        sqlx::query("SELECT * FROM permission_states WHERE connector_id = $1 AND path > $2 ORDER BY path LIMIT $3")
            .bind(connector_id)
            .bind(after)
            .bind(limit)
            .fetch_all(&mut *conn)
            .await?;
    let ids: Vec<String> = rows.iter().map(|r| get_str(r, "node_id")).collect();
    let now = current(&mut *conn, connector_id, share_id, &ids).await?;
    Ok(rows
        .iter()
        .map(|r| {
            let recorded = get_str(r, "acl");
            let node_id = get_str(r, "node_id");
            let drifted = now.get(&node_id).map(|a| canonical(a) != recorded).unwrap_or(true);
            State {
                path: get_str(r, "path"),
                node_id,
                sd_changed_at: get_i64(r, "sd_changed_at"),
                mappings_version: get_i64(r, "mappings_version"),
                acl: parse_canonical(&recorded).unwrap_or_default(),
                drifted,
            }
        })
        .collect())
}

/// What [`apply`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    pub written: u32,
    pub unchanged: u32,
    pub skipped: u32,
    /// Entries naming a user or group no longer in the tenant: allows dropped, denies
    /// applied to everyone.
    pub entries_dropped: u32,
}

/// Writes the ACLs and owners of `states` where they differ, records the states and forgets
/// `forget` paths, in one transaction checked against the lease.
pub async fn apply(
    db: &Db,
    tenant: &TenantId,
    connector_id: &str,
    share_id: &str,
    fence: &Fence,
    states: &[State],
    forget: &[String],
) -> ApiResult<Applied> {
    let mut tx = db.begin().await?;
    leases::check(&mut tx, fence).await?;
    let mut out = Applied::default();
    let ids: Vec<String> = states.iter().map(|s| s.node_id.clone()).collect();
    let now_acls = current(&mut *tx, connector_id, share_id, &ids).await?;
    let mut exists: HashMap<(String, String), bool> = HashMap::new();
    let now = now_ms();
    for s in states {
        let Some(before) = now_acls.get(&s.node_id) else {
            out.skipped += 1;
            continue;
        };
        // Principals that left the tenant (deleted between mapping and now) cannot hold an
        // entry. An allow for them is dropped (it granted nobody else anything). A deny is
        // not: whoever the file server denied may still be a ScaiDrive user under another
        // account or through a group, so it becomes a deny for everyone, as for an unmapped
        // principal (less access, never more).
        let mut acl = s.acl.clone();
        let mut kept = Vec::with_capacity(acl.entries.len());
        for mut e in acl.entries.drain(..) {
            let ok = match e.principal_type.as_str() {
                "everyone" => true,
                t @ ("user" | "group") => principal_exists(&mut tx, &mut exists, tenant, t, &e.principal_id).await?,
                _ => false,
            };
            if ok {
                kept.push(e);
            } else if e.deny {
                out.entries_dropped += 1;
                e.principal_type = "everyone".into();
                e.principal_id.clear();
                kept.push(e);
            } else {
                out.entries_dropped += 1;
            }
        }
        acl.entries = kept;
        if !acl.owner.is_empty() && !principal_exists(&mut tx, &mut exists, tenant, "user", &acl.owner).await? {
            acl.owner.clear();
        }
        // What is recorded is what was written (after the substitutions above), so the next
        // run's drift check compares the node with what it really got.
        let text = canonical(&acl);
        if canonical(before) == text {
            out.unchanged += 1;
        } else {
            write_acl(&mut tx, tenant, connector_id, &s.node_id, &acl).await?;
            out.written += 1;
        }
        sqlx::query(
            "INSERT INTO permission_states (connector_id, path, node_id, sd_changed_at, mappings_version, acl, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (connector_id, path) DO UPDATE SET node_id = excluded.node_id,
               sd_changed_at = excluded.sd_changed_at, mappings_version = excluded.mappings_version,
               acl = excluded.acl, updated_at = excluded.updated_at",
        )
        .bind(connector_id)
        .bind(&s.path)
        .bind(&s.node_id)
        .bind(s.sd_changed_at)
        .bind(s.mappings_version)
        .bind(&text)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }
    for p in forget {
        sqlx::query("DELETE FROM permission_states WHERE connector_id = $1 AND path = $2")
            .bind(connector_id)
            .bind(p)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(out)
}

async fn principal_exists(
    tx: &mut Tx<'_>,
    cache: &mut HashMap<(String, String), bool>,
    tenant: &TenantId,
    kind: &str,
    id: &str,
) -> ApiResult<bool> {
    let key = (kind.to_string(), id.to_string());
    if let Some(b) = cache.get(&key) {
        return Ok(*b);
    }
    let sql = if kind == "user" {
        "SELECT COUNT(*) FROM users WHERE id = $1 AND tenant_id = $2"
    } else {
        "SELECT COUNT(*) FROM groups WHERE id = $1 AND tenant_id = $2"
    };
    let (n,): (i64,) = sqlx::query_as(sql).bind(id).bind(tenant.as_str()).fetch_one(&mut **tx).await?;
    cache.insert(key, n > 0);
    Ok(n > 0)
}

async fn write_acl(tx: &mut Tx<'_>, tenant: &TenantId, connector_id: &str, node_id: &str, acl: &Acl) -> ApiResult<()> {
    let (kind,): (String,) =
        sqlx::query_as("SELECT kind FROM nodes WHERE id = $1").bind(node_id).fetch_one(&mut **tx).await?;
    sqlx::query(
        "INSERT INTO acls (resource_id, resource_type, tenant_id, inherit_from_parent) VALUES ($1, $2, $3, $4)
         ON CONFLICT (resource_id) DO UPDATE SET inherit_from_parent = excluded.inherit_from_parent",
    )
    .bind(node_id)
    .bind(if kind == "folder" { "folder" } else { "file" })
    .bind(tenant.as_str())
    .bind(acl.inherit_from_parent as i64)
    .execute(&mut **tx)
    .await?;
    sqlx::query("DELETE FROM acl_entries WHERE resource_id = $1").bind(node_id).execute(&mut **tx).await?;
    let now = now_ms();
    for e in &acl.entries {
        sqlx::query(
            "INSERT INTO acl_entries (id, resource_id, tenant_id, principal_type, principal_id, permissions, ace_type, inherit_to_children, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(AceId::generate().to_string())
        .bind(node_id)
        .bind(tenant.as_str())
        .bind(&e.principal_type)
        .bind((!e.principal_id.is_empty()).then(|| e.principal_id.clone()))
        .bind(e.permissions)
        .bind(if e.deny { "deny" } else { "allow" })
        .bind(e.inherit_to_children as i64)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    let owner = if acl.owner.is_empty() { connector_id } else { acl.owner.as_str() };
    sqlx::query("UPDATE nodes SET owner_id = $1 WHERE id = $2").bind(owner).bind(node_id).execute(&mut **tx).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(t: &str, id: &str, deny: bool, bits: i64, inherit: bool) -> Entry {
        Entry {
            principal_type: t.into(),
            principal_id: id.into(),
            deny,
            permissions: bits,
            inherit_to_children: inherit,
        }
    }

    #[test]
    fn canonical_form_ignores_order_merges_and_round_trips() {
        let a = Acl {
            inherit_from_parent: false,
            entries: vec![
                e("user", "usr_b", true, 2, false),
                e("group", "grp_f", false, 1, true),
                e("user", "usr_b", true, 4, false),
            ],
            owner: "usr_a".into(),
        };
        let b = Acl {
            inherit_from_parent: false,
            entries: vec![
                e("group", "grp_f", false, 1, true),
                e("user", "usr_b", true, 6, false),
                e("everyone", "", false, 0, true),
            ],
            owner: "usr_a".into(),
        };
        assert_eq!(canonical(&a), canonical(&b));
        assert_eq!(canonical(&a), "0|usr_a|group:grp_f:a:1:1;user:usr_b:d:6:0");
        let back = parse_canonical(&canonical(&a)).unwrap();
        assert_eq!(canonical(&back), canonical(&a));
        let c = Acl { inherit_from_parent: true, ..b.clone() };
        assert_ne!(canonical(&c), canonical(&b));
        assert_eq!(
            parse_canonical("1||"),
            Some(Acl { inherit_from_parent: true, entries: vec![], owner: String::new() })
        );
        assert_eq!(parse_canonical("garbage"), None);
    }
}
