//! Users, groups and API tokens of the caller's tenant. Creating users and groups and
//! managing group membership is for tenant admins; anyone manages their own tokens.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::extract::ApiJson;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::store::accounts::{self, Group, NewUser, TokenInfo, User};
use crate::time::rfc3339;
use crate::AppState;

#[derive(Serialize, ToSchema)]
pub struct UserResponse {
    pub id: String,
    pub tenant_id: String,
    pub username: String,
    pub display_name: String,
    pub email: Option<String>,
    /// `null`, `tenant_admin` or `super_admin`.
    pub global_role: Option<String>,
    pub created_at: String,
}

impl From<User> for UserResponse {
    fn from(u: User) -> Self {
        UserResponse {
            id: u.id.to_string(),
            tenant_id: u.tenant_id.to_string(),
            username: u.username,
            display_name: u.display_name,
            email: u.email,
            global_role: u.global_role,
            created_at: rfc3339(u.created_at),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct GroupResponse {
    pub id: String,
    pub name: String,
    pub created_at: String,
}

impl From<Group> for GroupResponse {
    fn from(g: Group) -> Self {
        GroupResponse { id: g.id.to_string(), name: g.name, created_at: rfc3339(g.created_at) }
    }
}

#[derive(Serialize, ToSchema)]
pub struct TokenResponse {
    pub id: String,
    pub user_id: String,
    pub name: String,
    pub created_at: String,
    pub revoked_at: Option<String>,
    /// The token itself: present only in the answer to its creation, never again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

impl TokenResponse {
    fn from(t: TokenInfo, token: Option<String>) -> Self {
        TokenResponse {
            id: t.id.to_string(),
            user_id: t.user_id.to_string(),
            name: t.name,
            created_at: rfc3339(t.created_at),
            revoked_at: t.revoked_at.map(rfc3339),
            token,
        }
    }
}

fn require_admin(caller: &Caller) -> ApiResult<()> {
    if caller.is_admin() {
        Ok(())
    } else {
        Err(ApiError::forbidden("only tenant admins may do this"))
    }
}

/// The caller.
#[utoipa::path(get, path = "/api/v1/users/me", tag = "accounts", responses((status = 200, body = UserResponse)))]
pub async fn me(State(s): State<AppState>, caller: Caller) -> ApiResult<Json<UserResponse>> {
    Ok(Json(accounts::find_user(&s.db, &caller.tenant_id, caller.user_id.as_str()).await?.into()))
}

#[derive(Serialize, ToSchema)]
pub struct UserList {
    pub users: Vec<UserResponse>,
}

/// The tenant's users.
#[utoipa::path(get, path = "/api/v1/users", tag = "accounts", responses((status = 200, body = UserList)))]
pub async fn list_users(State(s): State<AppState>, caller: Caller) -> ApiResult<Json<UserList>> {
    let users = accounts::list_users(&s.db, &caller.tenant_id).await?;
    Ok(Json(UserList { users: users.into_iter().map(Into::into).collect() }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    pub username: String,
    pub display_name: Option<String>,
    pub email: Option<String>,
    /// `tenant_admin` (only super admins may create `super_admin`s).
    pub global_role: Option<String>,
}

/// Creates a user in the caller's tenant (tenant admins).
#[utoipa::path(post, path = "/api/v1/users", tag = "accounts", request_body = CreateUser,
    responses((status = 201, body = UserResponse), (status = 409, body = crate::error::ErrorBody)))]
pub async fn create_user(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateUser>,
) -> ApiResult<(StatusCode, Json<UserResponse>)> {
    require_admin(&caller)?;
    if body.global_role.as_deref() == Some("super_admin") && caller.global_role.as_deref() != Some("super_admin") {
        return Err(ApiError::forbidden("only a super admin may create a super admin"));
    }
    let u = accounts::create_user(
        &s.db,
        &caller.tenant_id,
        NewUser {
            username: &body.username,
            display_name: body.display_name.as_deref(),
            email: body.email.as_deref(),
            global_role: body.global_role.as_deref(),
        },
    )
    .await?;
    Ok((StatusCode::CREATED, Json(u.into())))
}

#[derive(Serialize, ToSchema)]
pub struct GroupList {
    pub groups: Vec<GroupResponse>,
}

/// The tenant's groups.
#[utoipa::path(get, path = "/api/v1/groups", tag = "accounts", responses((status = 200, body = GroupList)))]
pub async fn list_groups(State(s): State<AppState>, caller: Caller) -> ApiResult<Json<GroupList>> {
    let groups = accounts::list_groups(&s.db, &caller.tenant_id).await?;
    Ok(Json(GroupList { groups: groups.into_iter().map(Into::into).collect() }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateGroup {
    pub name: String,
}

/// Creates a group (tenant admins).
#[utoipa::path(post, path = "/api/v1/groups", tag = "accounts", request_body = CreateGroup,
    responses((status = 201, body = GroupResponse)))]
pub async fn create_group(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateGroup>,
) -> ApiResult<(StatusCode, Json<GroupResponse>)> {
    require_admin(&caller)?;
    let g = accounts::create_group(&s.db, &caller.tenant_id, &body.name).await?;
    Ok((StatusCode::CREATED, Json(g.into())))
}

/// A group's members.
#[utoipa::path(get, path = "/api/v1/groups/{id}/members", tag = "accounts", params(("id" = String, Path)),
    responses((status = 200, body = UserList)))]
pub async fn group_members(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<UserList>> {
    let g = accounts::find_group(&s.db, &caller.tenant_id, &id).await?;
    let users = accounts::group_members(&s.db, &g).await?;
    Ok(Json(UserList { users: users.into_iter().map(Into::into).collect() }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddGroupMember {
    pub user_id: String,
}

/// Adds a user to a group (tenant admins).
#[utoipa::path(post, path = "/api/v1/groups/{id}/members", tag = "accounts", params(("id" = String, Path)),
    request_body = AddGroupMember, responses((status = 204)))]
pub async fn add_group_member(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<AddGroupMember>,
) -> ApiResult<StatusCode> {
    require_admin(&caller)?;
    let g = accounts::find_group(&s.db, &caller.tenant_id, &id).await?;
    let u = accounts::find_user(&s.db, &caller.tenant_id, &body.user_id)
        .await
        .map_err(|_| ApiError::validation("user_id", "no user with that id in this tenant"))?;
    accounts::add_group_member(&s.db, &g, &u).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Removes a user from a group (tenant admins).
#[utoipa::path(delete, path = "/api/v1/groups/{id}/members/{user_id}", tag = "accounts",
    params(("id" = String, Path), ("user_id" = String, Path)), responses((status = 204)))]
pub async fn remove_group_member(
    State(s): State<AppState>,
    caller: Caller,
    Path((id, user_id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    require_admin(&caller)?;
    let g = accounts::find_group(&s.db, &caller.tenant_id, &id).await?;
    accounts::remove_group_member(&s.db, &g, &user_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize, ToSchema)]
pub struct TokenList {
    pub tokens: Vec<TokenResponse>,
}

/// The caller's tokens (never the tokens themselves).
#[utoipa::path(get, path = "/api/v1/tokens", tag = "accounts", responses((status = 200, body = TokenList)))]
pub async fn list_tokens(State(s): State<AppState>, caller: Caller) -> ApiResult<Json<TokenList>> {
    let tokens = accounts::list_tokens(&s.db, &caller.user_id).await?;
    Ok(Json(TokenList { tokens: tokens.into_iter().map(|t| TokenResponse::from(t, None)).collect() }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    pub name: String,
    /// Another user of the tenant (tenant admins only); default: the caller.
    pub user_id: Option<String>,
}

/// Creates an API token; the answer is the only time the token is shown.
#[utoipa::path(post, path = "/api/v1/tokens", tag = "accounts", request_body = CreateToken,
    responses((status = 201, body = TokenResponse)))]
pub async fn create_token(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateToken>,
) -> ApiResult<(StatusCode, Json<TokenResponse>)> {
    let user = match body.user_id.as_deref() {
        None => caller.user_id.clone(),
        Some(u) if u == caller.user_id.as_str() => caller.user_id.clone(),
        Some(u) => {
            require_admin(&caller)?;
            accounts::find_user(&s.db, &caller.tenant_id, u)
                .await
                .map_err(|_| ApiError::validation("user_id", "no user with that id in this tenant"))?
                .id
        }
    };
    let (t, plain) = accounts::create_token(&s.db, &user, &body.name).await?;
    Ok((StatusCode::CREATED, Json(TokenResponse::from(t, Some(plain)))))
}

/// Revokes a token (one's own; tenant admins any of the tenant's).
#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "accounts", params(("id" = String, Path)),
    responses((status = 204)))]
pub async fn revoke_token(State(s): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<StatusCode> {
    let owner = if caller.is_admin() { None } else { Some(&caller.user_id) };
    accounts::revoke_token(&s.db, &caller.tenant_id, owner, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
