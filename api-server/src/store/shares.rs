//! Shares and their members (users or groups with a role).

use sqlx::any::AnyRow;

use super::{get_i64, get_str};
use crate::auth::Caller;
use crate::db::Db;
use crate::error::{ApiError, ApiResult};
use crate::ids::{ShareId, TenantId};
use crate::perm::Role;
use crate::time::now_ms;

#[derive(Clone, Debug)]
pub struct Share {
    pub id: ShareId,
    pub tenant_id: TenantId,
    pub name: String,
    pub description: String,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Clone, Debug)]
pub struct Member {
    pub principal_type: String,
    pub principal_id: String,
    pub role: Role,
    pub created_at: i64,
}

fn share_from(r: &AnyRow) -> Share {
    Share {
        id: ShareId::from_db(get_str(r, "id")),
        tenant_id: TenantId::from_db(get_str(r, "tenant_id")),
        name: get_str(r, "name"),
        description: get_str(r, "description"),
        created_by: get_str(r, "created_by"),
        created_at: get_i64(r, "created_at"),
        updated_at: get_i64(r, "updated_at"),
    }
}

/// Creates a share; its creator becomes its owner.
pub async fn create(db: &Db, tenant: &TenantId, creator: &str, name: &str, description: &str) -> ApiResult<Share> {
    crate::store::accounts::validate_display("name", name, 255)?;
    if description.chars().count() > 2000 {
        return Err(ApiError::validation("description", "must be at most 2000 characters"));
    }
    let now = now_ms();
    let s = Share {
        id: ShareId::generate(),
        tenant_id: tenant.clone(),
        name: name.to_string(),
        description: description.to_string(),
        created_by: creator.to_string(),
        created_at: now,
        updated_at: now,
    };
    let mut tx = db.begin().await?;
    sqlx::query(
        "INSERT INTO shares (id, tenant_id, name, description, created_by, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(s.id.as_str())
    .bind(s.tenant_id.as_str())
    .bind(&s.name)
    .bind(&s.description)
    .bind(&s.created_by)
    .bind(now)
    .bind(now)
    .execute(&mut *tx)
    .await
    .map_err(|e| match ApiError::from(e) {
        err if err.code == "ALREADY_EXISTS" => {
            ApiError::conflict("ALREADY_EXISTS", "a share with that name exists").with_field("name")
        }
        err => err,
    })?;
    sqlx::query(
        "INSERT INTO share_members (share_id, principal_type, principal_id, role, created_at)
         VALUES ($1, 'user', $2, 'owner', $3)",
    )
    .bind(s.id.as_str())
    .bind(creator)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(s)
}

/// A share of the tenant, or 404.
pub async fn get(db: &Db, tenant: &TenantId, id: &str) -> ApiResult<Share> {
    sqlx::query("SELECT * FROM shares WHERE id = $1 AND tenant_id = $2")
        .bind(id)
        .bind(tenant.as_str())
        .fetch_optional(&db.pool)
        .await?
        .map(|r| share_from(&r))
        .ok_or_else(|| ApiError::not_found("share"))
}

/// Shares the caller can see: all of the tenant's for admins, else those the caller or one
/// of the caller's groups is a member of.
pub async fn list_visible(db: &Db, caller: &Caller) -> ApiResult<Vec<Share>> {
    let rows = if caller.is_admin() {
        sqlx::query("SELECT * FROM shares WHERE tenant_id = $1 ORDER BY name, id")
            .bind(caller.tenant_id.as_str())
            .fetch_all(&db.pool)
            .await?
    } else {
        sqlx::query(
            "SELECT DISTINCT s.* FROM shares s JOIN share_members m ON m.share_id = s.id
             WHERE s.tenant_id = $1 AND (m.principal_id = $2
               OR m.principal_id IN (SELECT group_id FROM group_members WHERE user_id = $2))
             ORDER BY s.name, s.id",
        )
        .bind(caller.tenant_id.as_str())
        .bind(caller.user_id.as_str())
        .fetch_all(&db.pool)
        .await?
    };
    Ok(rows.iter().map(share_from).collect())
}

pub async fn members(db: &Db, share: &ShareId) -> ApiResult<Vec<Member>> {
    let rows = sqlx::query("SELECT * FROM share_members WHERE share_id = $1 ORDER BY created_at, principal_id")
        .bind(share.as_str())
        .fetch_all(&db.pool)
        .await?;
    Ok(rows
        .iter()
        .map(|r| Member {
            principal_type: get_str(r, "principal_type"),
            principal_id: get_str(r, "principal_id"),
            role: Role::parse(&get_str(r, "role")).unwrap_or(Role::Reader),
            created_at: get_i64(r, "created_at"),
        })
        .collect())
}

/// Adds a member or changes its role. The principal must be a user or group of the tenant.
pub async fn set_member(
    db: &Db,
    share: &Share,
    principal_type: &str,
    principal_id: &str,
    role: Role,
) -> ApiResult<Member> {
    let table = match principal_type {
        "user" => "users",
        "group" => "groups",
        _ => return Err(ApiError::validation("principal_type", "must be 'user' or 'group'")),
    };
    let sql = format!("SELECT COUNT(*) FROM {table} WHERE id = $1 AND tenant_id = $2");
    let (n,): (i64,) =
        sqlx::query_as(&sql).bind(principal_id).bind(share.tenant_id.as_str()).fetch_one(&db.pool).await?;
    if n == 0 {
        return Err(ApiError::validation("principal_id", format!("no {principal_type} with that id in this tenant")));
    }
    let now = now_ms();
    sqlx::query(
        "INSERT INTO share_members (share_id, principal_type, principal_id, role, created_at)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (share_id, principal_id) DO UPDATE SET role = excluded.role",
    )
    .bind(share.id.as_str())
    .bind(principal_type)
    .bind(principal_id)
    .bind(role.as_str())
    .bind(now)
    .execute(&db.pool)
    .await?;
    Ok(Member {
        principal_type: principal_type.to_string(),
        principal_id: principal_id.to_string(),
        role,
        created_at: now,
    })
}

pub async fn remove_member(db: &Db, share: &Share, principal_id: &str) -> ApiResult<()> {
    let r = sqlx::query("DELETE FROM share_members WHERE share_id = $1 AND principal_id = $2")
        .bind(share.id.as_str())
        .bind(principal_id)
        .execute(&db.pool)
        .await?;
    if r.rows_affected() == 0 {
        return Err(ApiError::not_found("share member"));
    }
    Ok(())
}

/// The union of the share-role permissions of a user and the user's groups.
pub async fn role_bits(db: &Db, share: &str, user_id: &str, group_ids: &[String]) -> ApiResult<i64> {
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT principal_id, role FROM share_members WHERE share_id = $1")
            .bind(share)
            .fetch_all(&db.pool)
            .await?;
    Ok(rows
        .iter()
        .filter(|(p, _)| p == user_id || group_ids.contains(p))
        .filter_map(|(_, r)| Role::parse(r))
        .fold(0, |acc, r| acc | r.bits()))
}
