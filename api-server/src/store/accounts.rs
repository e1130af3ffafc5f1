//! Tenants, users, groups and API tokens.

use sqlx::any::AnyRow;

use super::{get_i64, get_opt_i64, get_opt_str, get_str};
use crate::auth::{hash_token, new_token, Caller};
use crate::db::Db;
use crate::error::{ApiError, ApiResult};
use crate::ids::{GroupId, TenantId, TokenId, UserId};
use crate::time::now_ms;

#[derive(Clone, Debug)]
pub struct Tenant {
    pub id: TenantId,
    pub name: String,
    pub created_at: i64,
}

#[derive(Clone, Debug)]
pub struct User {
    pub id: UserId,
    pub tenant_id: TenantId,
    pub username: String,
    pub display_name: String,
    pub email: Option<String>,
    pub global_role: Option<String>,
    pub created_at: i64,
}

#[derive(Clone, Debug)]
pub struct Group {
    pub id: GroupId,
    pub tenant_id: TenantId,
    pub name: String,
    pub created_at: i64,
}

#[derive(Clone, Debug)]
pub struct TokenInfo {
    pub id: TokenId,
    pub user_id: UserId,
    pub name: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

fn user_from(r: &AnyRow) -> User {
    User {
        id: UserId::from_db(get_str(r, "id")),
        tenant_id: TenantId::from_db(get_str(r, "tenant_id")),
        username: get_str(r, "username"),
        display_name: get_str(r, "display_name"),
        email: get_opt_str(r, "email"),
        global_role: get_opt_str(r, "global_role"),
        created_at: get_i64(r, "created_at"),
    }
}

fn group_from(r: &AnyRow) -> Group {
    Group {
        id: GroupId::from_db(get_str(r, "id")),
        tenant_id: TenantId::from_db(get_str(r, "tenant_id")),
        name: get_str(r, "name"),
        created_at: get_i64(r, "created_at"),
    }
}

fn token_from(r: &AnyRow) -> TokenInfo {
    TokenInfo {
        id: TokenId::from_db(get_str(r, "id")),
        user_id: UserId::from_db(get_str(r, "user_id")),
        name: get_str(r, "name"),
        created_at: get_i64(r, "created_at"),
        revoked_at: get_opt_i64(r, "revoked_at"),
    }
}

pub fn validate_username(field: &str, s: &str) -> ApiResult<()> {
    let ok = !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c));
    if ok {
        Ok(())
    } else {
        Err(ApiError::validation(field, "must be 1-64 characters of letters, digits, '.', '_', '-' or '@'"))
    }
}

pub fn validate_display(field: &str, s: &str, max: usize) -> ApiResult<()> {
    if s.trim().is_empty() {
        return Err(ApiError::validation(field, "must not be empty"));
    }
    if s.chars().count() > max {
        return Err(ApiError::validation(field, format!("must be at most {max} characters")));
    }
    if s.chars().any(char::is_control) {
        return Err(ApiError::validation(field, "must not contain control characters"));
    }
    Ok(())
}

pub fn validate_role(field: &str, role: Option<&str>) -> ApiResult<()> {
    match role {
        None | Some("tenant_admin") | Some("super_admin") => Ok(()),
        Some(_) => Err(ApiError::validation(field, "must be null, 'tenant_admin' or 'super_admin'")),
    }
}

pub async fn create_tenant(db: &Db, name: &str) -> ApiResult<Tenant> {
    validate_display("name", name, 128)?;
    let t = Tenant { id: TenantId::generate(), name: name.to_string(), created_at: now_ms() };
    sqlx::query("INSERT INTO tenants (id, name, change_seq, created_at) VALUES ($1, $2, 0, $3)")
        .bind(t.id.as_str())
        .bind(&t.name)
        .bind(t.created_at)
        .execute(&db.pool)
        .await?;
    Ok(t)
}

pub async fn list_tenants(db: &Db) -> ApiResult<Vec<Tenant>> {
    let rows =
        sqlx::query("SELECT id, name, created_at FROM tenants ORDER BY created_at, id").fetch_all(&db.pool).await?;
    Ok(rows
        .iter()
        .map(|r| Tenant {
            id: TenantId::from_db(get_str(r, "id")),
            name: get_str(r, "name"),
            created_at: get_i64(r, "created_at"),
        })
        .collect())
}

pub async fn find_tenant(db: &Db, id_or_name: &str) -> ApiResult<Tenant> {
    let r = sqlx::query("SELECT id, name, created_at FROM tenants WHERE id = $1 OR name = $1")
        .bind(id_or_name)
        .fetch_optional(&db.pool)
        .await?
        .ok_or_else(|| ApiError::not_found("tenant"))?;
    Ok(Tenant {
        id: TenantId::from_db(get_str(&r, "id")),
        name: get_str(&r, "name"),
        created_at: get_i64(&r, "created_at"),
    })
}

pub struct NewUser<'a> {
    pub username: &'a str,
    pub display_name: Option<&'a str>,
    pub email: Option<&'a str>,
    pub global_role: Option<&'a str>,
}

pub async fn create_user(db: &Db, tenant: &TenantId, new: NewUser<'_>) -> ApiResult<User> {
    validate_username("username", new.username)?;
    if let Some(d) = new.display_name {
        validate_display("display_name", d, 128)?;
    }
    if let Some(e) = new.email {
        if !e.contains('@') || e.len() > 254 || e.chars().any(char::is_whitespace) {
            return Err(ApiError::validation("email", "must be an e-mail address"));
        }
    }
    validate_role("global_role", new.global_role)?;
    let u = User {
        id: UserId::generate(),
        tenant_id: tenant.clone(),
        username: new.username.to_string(),
        display_name: new.display_name.unwrap_or(new.username).to_string(),
        email: new.email.map(str::to_string),
        global_role: new.global_role.map(str::to_string),
        created_at: now_ms(),
    };
    sqlx::query(
        "INSERT INTO users (id, tenant_id, username, display_name, email, global_role, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(u.id.as_str())
    .bind(u.tenant_id.as_str())
    .bind(&u.username)
    .bind(&u.display_name)
    .bind(u.email.clone())
    .bind(u.global_role.clone())
    .bind(u.created_at)
    .execute(&db.pool)
    .await
    .map_err(|e| match ApiError::from(e) {
        err if err.code == "ALREADY_EXISTS" => {
            ApiError::conflict("ALREADY_EXISTS", "a user with that username exists").with_field("username")
        }
        err => err,
    })?;
    Ok(u)
}

pub async fn list_users(db: &Db, tenant: &TenantId) -> ApiResult<Vec<User>> {
    let rows = sqlx::query("SELECT * FROM users WHERE tenant_id = $1 ORDER BY username")
        .bind(tenant.as_str())
        .fetch_all(&db.pool)
        .await?;
    Ok(rows.iter().map(user_from).collect())
}

/// A user of the tenant, by id or username.
pub async fn find_user(db: &Db, tenant: &TenantId, id_or_name: &str) -> ApiResult<User> {
    sqlx::query("SELECT * FROM users WHERE tenant_id = $1 AND (id = $2 OR username = $2)")
        .bind(tenant.as_str())
        .bind(id_or_name)
        .fetch_optional(&db.pool)
        .await?
        .map(|r| user_from(&r))
        .ok_or_else(|| ApiError::not_found("user"))
}

pub async fn create_group(db: &Db, tenant: &TenantId, name: &str) -> ApiResult<Group> {
    validate_display("name", name, 128)?;
    let g = Group { id: GroupId::generate(), tenant_id: tenant.clone(), name: name.to_string(), created_at: now_ms() };
    sqlx::query("INSERT INTO groups (id, tenant_id, name, created_at) VALUES ($1, $2, $3, $4)")
        .bind(g.id.as_str())
        .bind(g.tenant_id.as_str())
        .bind(&g.name)
        .bind(g.created_at)
        .execute(&db.pool)
        .await?;
    Ok(g)
}

pub async fn list_groups(db: &Db, tenant: &TenantId) -> ApiResult<Vec<Group>> {
    let rows = sqlx::query("SELECT * FROM groups WHERE tenant_id = $1 ORDER BY name")
        .bind(tenant.as_str())
        .fetch_all(&db.pool)
        .await?;
    Ok(rows.iter().map(group_from).collect())
}

pub async fn find_group(db: &Db, tenant: &TenantId, id_or_name: &str) -> ApiResult<Group> {
    sqlx::query("SELECT * FROM groups WHERE tenant_id = $1 AND (id = $2 OR name = $2)")
        .bind(tenant.as_str())
        .bind(id_or_name)
        .fetch_optional(&db.pool)
        .await?
        .map(|r| group_from(&r))
        .ok_or_else(|| ApiError::not_found("group"))
}

pub async fn add_group_member(db: &Db, group: &Group, user: &User) -> ApiResult<()> {
    if group.tenant_id != user.tenant_id {
        return Err(ApiError::not_found("user"));
    }
    sqlx::query("INSERT INTO group_members (group_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
        .bind(group.id.as_str())
        .bind(user.id.as_str())
        .execute(&db.pool)
        .await?;
    Ok(())
}

pub async fn remove_group_member(db: &Db, group: &Group, user_id: &str) -> ApiResult<()> {
    let r = sqlx::query("DELETE FROM group_members WHERE group_id = $1 AND user_id = $2")
        .bind(group.id.as_str())
        .bind(user_id)
        .execute(&db.pool)
        .await?;
    if r.rows_affected() == 0 {
        return Err(ApiError::not_found("group member"));
    }
    Ok(())
}

pub async fn group_members(db: &Db, group: &Group) -> ApiResult<Vec<User>> {
    let rows = sqlx::query(
        "SELECT u.* FROM users u JOIN group_members m ON m.user_id = u.id
         WHERE m.group_id = $1 ORDER BY u.username",
    )
    .bind(group.id.as_str())
    .fetch_all(&db.pool)
    .await?;
    Ok(rows.iter().map(user_from).collect())
}

pub async fn user_group_ids(db: &Db, user_id: &str) -> ApiResult<Vec<String>> {
    let rows: Vec<(String,)> = sqlx::query_as("SELECT group_id FROM group_members WHERE user_id = $1")
        .bind(user_id)
        .fetch_all(&db.pool)
        .await?;
    Ok(rows.into_iter().map(|(g,)| g).collect())
}

/// Creates a token for `user`; the plaintext is returned once and never stored.
pub async fn create_token(db: &Db, user: &UserId, name: &str) -> ApiResult<(TokenInfo, String)> {
    validate_display("name", name, 128)?;
    let plain = new_token();
    let t = TokenInfo {
        id: TokenId::generate(),
        user_id: user.clone(),
        name: name.to_string(),
        created_at: now_ms(),
        revoked_at: None,
    };
    sqlx::query("INSERT INTO api_tokens (id, user_id, name, token_hash, created_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(t.id.as_str())
        .bind(t.user_id.as_str())
        .bind(&t.name)
        .bind(hash_token(&plain))
        .bind(t.created_at)
        .execute(&db.pool)
        .await?;
    Ok((t, plain))
}

pub async fn list_tokens(db: &Db, user: &UserId) -> ApiResult<Vec<TokenInfo>> {
    let rows = sqlx::query("SELECT * FROM api_tokens WHERE user_id = $1 ORDER BY created_at, id")
        .bind(user.as_str())
        .fetch_all(&db.pool)
        .await?;
    Ok(rows.iter().map(token_from).collect())
}

/// Revokes one of the tenant's tokens (`owner` limits it to that user's tokens).
pub async fn revoke_token(db: &Db, tenant: &TenantId, owner: Option<&UserId>, id: &str) -> ApiResult<()> {
    let r = sqlx::query(
        "UPDATE api_tokens SET revoked_at = $1
         WHERE id = $2 AND revoked_at IS NULL
           AND user_id IN (SELECT id FROM users WHERE tenant_id = $3)
           AND ($4 = '' OR user_id = $4)",
    )
    .bind(now_ms())
    .bind(id)
    .bind(tenant.as_str())
    .bind(owner.map(|o| o.as_str()).unwrap_or(""))
    .execute(&db.pool)
    .await?;
    if r.rows_affected() == 0 {
        return Err(ApiError::not_found("token"));
    }
    Ok(())
}

/// The caller a token stands for, if it is valid.
pub async fn authenticate(db: &Db, token: &str) -> ApiResult<Option<Caller>> {
    if !token.starts_with(crate::auth::TOKEN_PREFIX) || token.len() > 200 {
        return Ok(None);
    }
    let row = sqlx::query(
        "SELECT u.id, u.tenant_id, u.global_role FROM api_tokens t JOIN users u ON u.id = t.user_id
         WHERE t.token_hash = $1 AND t.revoked_at IS NULL",
    )
    .bind(hash_token(token))
    .fetch_optional(&db.pool)
    .await?;
    let Some(r) = row else { return Ok(None) };
    let user_id = get_str(&r, "id");
    let group_ids = user_group_ids(db, &user_id).await?;
    Ok(Some(Caller {
        user_id: UserId::from_db(user_id),
        tenant_id: TenantId::from_db(get_str(&r, "tenant_id")),
        global_role: get_opt_str(&r, "global_role"),
        group_ids,
    }))
}

/// First start: when no tenant exists, create the `default` tenant and its `admin`
/// (super_admin) with a token, returned so the caller can show it once and keep it in a
/// 0600 file. Returns `None` when the database was already set up (also when another
/// replica won the race).
pub async fn bootstrap(db: &Db) -> ApiResult<Option<(User, String)>> {
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM tenants").fetch_one(&db.pool).await?;
    if n > 0 {
        return Ok(None);
    }
    let tenant = match create_tenant(db, "default").await {
        Ok(t) => t,
        Err(e) if e.code == "ALREADY_EXISTS" => return Ok(None),
        Err(e) => return Err(e),
    };
    let admin = create_user(
        db,
        &tenant.id,
        NewUser {
            username: "admin",
            display_name: Some("Administrator"),
            email: None,
            global_role: Some("super_admin"),
        },
    )
    .await?;
    let (_, token) = create_token(db, &admin.id, "bootstrap").await?;
    Ok(Some((admin, token)))
}
