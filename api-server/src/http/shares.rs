//! Shares and their members.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::extract::ApiJson;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::perm::{self, Role};
use crate::store::acl::{self, share_resource};
use crate::store::shares::{self, Member, Share};
use crate::time::rfc3339;
use crate::AppState;

#[derive(Serialize, ToSchema)]
pub struct ShareResponse {
    pub id: String,
    pub name: String,
    pub description: String,
    pub created_by: String,
    pub created_at: String,
    pub updated_at: String,
}

impl From<Share> for ShareResponse {
    fn from(s: Share) -> Self {
        ShareResponse {
            id: s.id.to_string(),
            name: s.name,
            description: s.description,
            created_by: s.created_by,
            created_at: rfc3339(s.created_at),
            updated_at: rfc3339(s.updated_at),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct MemberResponse {
    /// `user` or `group`.
    pub principal_type: String,
    pub principal_id: String,
    /// `owner`, `admin`, `contributor` or `reader`.
    pub role: String,
    pub created_at: String,
}

impl From<Member> for MemberResponse {
    fn from(m: Member) -> Self {
        MemberResponse {
            principal_type: m.principal_type,
            principal_id: m.principal_id,
            role: m.role.as_str().to_string(),
            created_at: rfc3339(m.created_at),
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateShare {
    pub name: String,
    #[serde(default)]
    pub description: String,
}

/// Creates a share; the caller becomes its owner.
#[utoipa::path(post, path = "/api/v1/shares", tag = "shares", request_body = CreateShare,
    responses((status = 201, body = ShareResponse), (status = 409, body = crate::error::ErrorBody)))]
pub async fn create_share(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateShare>,
) -> ApiResult<(StatusCode, Json<ShareResponse>)> {
    let share =
        shares::create(&s.db, &caller.tenant_id, caller.user_id.as_str(), &body.name, &body.description).await?;
    Ok((StatusCode::CREATED, Json(share.into())))
}

#[derive(Serialize, ToSchema)]
pub struct ShareList {
    pub shares: Vec<ShareResponse>,
}

/// The shares the caller is a member of (all of the tenant's for admins).
#[utoipa::path(get, path = "/api/v1/shares", tag = "shares", responses((status = 200, body = ShareList)))]
pub async fn list_shares(State(s): State<AppState>, caller: Caller) -> ApiResult<Json<ShareList>> {
    let list = shares::list_visible(&s.db, &caller).await?;
    Ok(Json(ShareList { shares: list.into_iter().map(Into::into).collect() }))
}

/// A share (needs READ on it).
#[utoipa::path(get, path = "/api/v1/shares/{id}", tag = "shares", params(("id" = String, Path)),
    responses((status = 200, body = ShareResponse), (status = 404, body = crate::error::ErrorBody)))]
pub async fn get_share(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<ShareResponse>> {
    let share = shares::get(&s.db, &caller.tenant_id, &id).await?;
    acl::require(&s.db, &caller, &share_resource(share.id.as_str()), perm::READ).await?;
    Ok(Json(share.into()))
}

#[derive(Serialize, ToSchema)]
pub struct MemberList {
    pub members: Vec<MemberResponse>,
}

/// A share's members (needs READ).
#[utoipa::path(get, path = "/api/v1/shares/{id}/members", tag = "shares", params(("id" = String, Path)),
    responses((status = 200, body = MemberList)))]
pub async fn list_members(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<MemberList>> {
    let share = shares::get(&s.db, &caller.tenant_id, &id).await?;
    acl::require(&s.db, &caller, &share_resource(share.id.as_str()), perm::READ).await?;
    let members = shares::members(&s.db, &share.id).await?;
    Ok(Json(MemberList { members: members.into_iter().map(Into::into).collect() }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMember {
    /// `user` or `group`.
    pub principal_type: String,
    pub principal_id: String,
    /// `owner`, `admin`, `contributor` or `reader`.
    pub role: String,
}

/// Adds a member or changes a member's role (needs MANAGE_PERMISSIONS on the share).
#[utoipa::path(post, path = "/api/v1/shares/{id}/members", tag = "shares", params(("id" = String, Path)),
    request_body = AddMember, responses((status = 201, body = MemberResponse)))]
pub async fn add_member(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<AddMember>,
) -> ApiResult<(StatusCode, Json<MemberResponse>)> {
    let share = shares::get(&s.db, &caller.tenant_id, &id).await?;
    acl::require(&s.db, &caller, &share_resource(share.id.as_str()), perm::MANAGE_PERMISSIONS).await?;
    let role = Role::parse(&body.role)
        .ok_or_else(|| ApiError::validation("role", "must be 'owner', 'admin', 'contributor' or 'reader'"))?;
    let m = shares::set_member(&s.db, &share, &body.principal_type, &body.principal_id, role).await?;
    Ok((StatusCode::CREATED, Json(m.into())))
}

/// Removes a member (needs MANAGE_PERMISSIONS on the share).
#[utoipa::path(delete, path = "/api/v1/shares/{id}/members/{principal_id}", tag = "shares",
    params(("id" = String, Path), ("principal_id" = String, Path)), responses((status = 204)))]
pub async fn remove_member(
    State(s): State<AppState>,
    caller: Caller,
    Path((id, principal_id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let share = shares::get(&s.db, &caller.tenant_id, &id).await?;
    acl::require(&s.db, &caller, &share_resource(share.id.as_str()), perm::MANAGE_PERMISSIONS).await?;
    shares::remove_member(&s.db, &share, &principal_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
