//! ACLs and effective permissions, in ScaiDrive's shapes:
//! an ACL is `{resource_type, resource_id, inherit_from_parent, entries}`, an entry
//! `{id, principal_type, principal_id, permissions: [names], ace_type, inherit_to_children}`.
//! Reading an ACL needs READ on the resource; changing it needs MANAGE_PERMISSIONS.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::extract::{ApiJson, ApiQuery};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::perm;
use crate::store::accounts;
use crate::store::acl::{self, Acl, AclEntry, NewEntry, Who};
use crate::AppState;

#[derive(Serialize, ToSchema)]
pub struct EntryResponse {
    pub id: String,
    /// `user`, `group` or `everyone`.
    pub principal_type: String,
    pub principal_id: Option<String>,
    /// Names: `READ`, `WRITE`, `DELETE`, `CREATE`, `SHARE`, `MANAGE_PERMISSIONS`.
    pub permissions: Vec<String>,
    /// `allow` or `deny`.
    pub ace_type: String,
    pub inherit_to_children: bool,
}

impl From<AclEntry> for EntryResponse {
    fn from(e: AclEntry) -> Self {
        EntryResponse {
            id: e.id,
            principal_type: e.principal_type,
            principal_id: e.principal_id,
            permissions: perm::names(e.permissions),
            ace_type: e.ace_type,
            inherit_to_children: e.inherit_to_children,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct AclResponse {
    pub resource_type: String,
    pub resource_id: String,
    pub inherit_from_parent: bool,
    pub entries: Vec<EntryResponse>,
}

impl From<Acl> for AclResponse {
    fn from(a: Acl) -> Self {
        AclResponse {
            resource_type: a.resource_type,
            resource_id: a.resource_id,
            inherit_from_parent: a.inherit_from_parent,
            entries: a.entries.into_iter().map(Into::into).collect(),
        }
    }
}

fn default_true() -> bool {
    true
}

#[derive(Deserialize, ToSchema, Clone)]
#[serde(deny_unknown_fields)]
pub struct EntryRequest {
    pub principal_type: String,
    #[serde(default)]
    pub principal_id: Option<String>,
    pub permissions: Vec<String>,
    pub ace_type: String,
    #[serde(default = "default_true")]
    pub inherit_to_children: bool,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AclRequest {
    #[serde(default = "default_true")]
    pub inherit_from_parent: bool,
    pub entries: Vec<EntryRequest>,
}

async fn to_new_entry(s: &AppState, caller: &Caller, e: EntryRequest, field: &str) -> ApiResult<NewEntry> {
    let permissions = perm::from_names(&e.permissions)
        .map_err(|bad| ApiError::validation(format!("{field}permissions"), format!("unknown permission '{bad}'")))?;
    if permissions == 0 {
        return Err(ApiError::validation(format!("{field}permissions"), "must name at least one permission"));
    }
    let ne = NewEntry {
        principal_type: e.principal_type,
        principal_id: e.principal_id,
        permissions,
        ace_type: e.ace_type,
        inherit_to_children: e.inherit_to_children,
    };
    acl::validate_entry(&s.db, &caller.tenant_id, &ne, field).await?;
    Ok(ne)
}

/// A resource's ACL.
#[utoipa::path(get, path = "/api/v1/permissions/acl/{resource_type}/{resource_id}", tag = "permissions",
    params(("resource_type" = String, Path, description = "share, folder or file"), ("resource_id" = String, Path)),
    responses((status = 200, body = AclResponse)))]
pub async fn get_acl(
    State(s): State<AppState>,
    caller: Caller,
    Path((rt, rid)): Path<(String, String)>,
) -> ApiResult<Json<AclResponse>> {
    let res = acl::resource(&s.db, &caller.tenant_id, &rt, &rid).await?;
    acl::require(&s.db, &caller, &res, perm::READ).await?;
    Ok(Json(acl::get(&s.db, &res).await?.into()))
}

/// Adds one entry to a resource's ACL.
#[utoipa::path(post, path = "/api/v1/permissions/acl/{resource_type}/{resource_id}", tag = "permissions",
    params(("resource_type" = String, Path), ("resource_id" = String, Path)), request_body = EntryRequest,
    responses((status = 201, body = EntryResponse)))]
pub async fn add_entry(
    State(s): State<AppState>,
    caller: Caller,
    Path((rt, rid)): Path<(String, String)>,
    ApiJson(body): ApiJson<EntryRequest>,
) -> ApiResult<(StatusCode, Json<EntryResponse>)> {
    let res = acl::resource(&s.db, &caller.tenant_id, &rt, &rid).await?;
    acl::require(&s.db, &caller, &res, perm::MANAGE_PERMISSIONS).await?;
    let ne = to_new_entry(&s, &caller, body, "").await?;
    let id = acl::add_entry(&s.db, &caller.tenant_id, &res, &ne).await?;
    Ok((
        StatusCode::CREATED,
        Json(EntryResponse {
            id,
            principal_type: ne.principal_type,
            principal_id: ne.principal_id,
            permissions: perm::names(ne.permissions),
            ace_type: ne.ace_type,
            inherit_to_children: ne.inherit_to_children,
        }),
    ))
}

/// Replaces a resource's whole ACL.
#[utoipa::path(put, path = "/api/v1/permissions/acl/{resource_type}/{resource_id}", tag = "permissions",
    params(("resource_type" = String, Path), ("resource_id" = String, Path)), request_body = AclRequest,
    responses((status = 200, body = AclResponse)))]
pub async fn replace_acl(
    State(s): State<AppState>,
    caller: Caller,
    Path((rt, rid)): Path<(String, String)>,
    ApiJson(body): ApiJson<AclRequest>,
) -> ApiResult<Json<AclResponse>> {
    let res = acl::resource(&s.db, &caller.tenant_id, &rt, &rid).await?;
    acl::require(&s.db, &caller, &res, perm::MANAGE_PERMISSIONS).await?;
    let mut entries = Vec::with_capacity(body.entries.len());
    for (i, e) in body.entries.into_iter().enumerate() {
        entries.push(to_new_entry(&s, &caller, e, &format!("entries[{i}].")).await?);
    }
    acl::replace(&s.db, &caller.tenant_id, &res, body.inherit_from_parent, &entries).await?;
    Ok(Json(acl::get(&s.db, &res).await?.into()))
}

/// Removes every entry; the resource inherits again.
#[utoipa::path(delete, path = "/api/v1/permissions/acl/{resource_type}/{resource_id}", tag = "permissions",
    params(("resource_type" = String, Path), ("resource_id" = String, Path)), responses((status = 204)))]
pub async fn clear_acl(
    State(s): State<AppState>,
    caller: Caller,
    Path((rt, rid)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let res = acl::resource(&s.db, &caller.tenant_id, &rt, &rid).await?;
    acl::require(&s.db, &caller, &res, perm::MANAGE_PERMISSIONS).await?;
    acl::clear(&s.db, &res).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Removes one entry.
#[utoipa::path(delete, path = "/api/v1/permissions/acl/{resource_type}/{resource_id}/entries/{entry_id}",
    tag = "permissions",
    params(("resource_type" = String, Path), ("resource_id" = String, Path), ("entry_id" = String, Path)),
    responses((status = 204)))]
pub async fn remove_entry(
    State(s): State<AppState>,
    caller: Caller,
    Path((rt, rid, entry)): Path<(String, String, String)>,
) -> ApiResult<StatusCode> {
    let res = acl::resource(&s.db, &caller.tenant_id, &rt, &rid).await?;
    acl::require(&s.db, &caller, &res, perm::MANAGE_PERMISSIONS).await?;
    acl::remove_entry(&s.db, &res, &entry).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct EffectiveQuery {
    pub resource_type: String,
    pub resource_id: String,
    /// Another user (needs MANAGE_PERMISSIONS on the resource); default: the caller.
    pub user_id: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct EffectiveResponse {
    pub resource_type: String,
    pub resource_id: String,
    pub user_id: String,
    /// The bitfield: READ 1, WRITE 2, DELETE 4, CREATE 8, SHARE 16, MANAGE_PERMISSIONS 32.
    pub permissions: i64,
    pub permission_names: Vec<String>,
}

async fn effective_for(
    s: &AppState,
    caller: &Caller,
    rt: &str,
    rid: &str,
    user_id: Option<&str>,
) -> ApiResult<(String, i64)> {
    let res = acl::resource(&s.db, &caller.tenant_id, rt, rid).await?;
    match user_id {
        None => Ok((caller.user_id.to_string(), acl::effective(&s.db, &Who::from(caller), &res).await?)),
        Some(u) if u == caller.user_id.as_str() => {
            Ok((u.to_string(), acl::effective(&s.db, &Who::from(caller), &res).await?))
        }
        Some(u) => {
            acl::require(&s.db, caller, &res, perm::MANAGE_PERMISSIONS).await?;
            let user = accounts::find_user(&s.db, &caller.tenant_id, u)
                .await
                .map_err(|_| ApiError::validation("user_id", "no user with that id in this tenant"))?;
            let groups = accounts::user_group_ids(&s.db, user.id.as_str()).await?;
            let who = Who {
                user_id: user.id.as_str(),
                group_ids: &groups,
                is_admin: matches!(user.global_role.as_deref(), Some("tenant_admin" | "super_admin")),
            };
            Ok((user.id.to_string(), acl::effective(&s.db, &who, &res).await?))
        }
    }
}

/// A user's effective permissions on a resource.
#[utoipa::path(get, path = "/api/v1/permissions/effective", tag = "permissions", params(EffectiveQuery),
    responses((status = 200, body = EffectiveResponse)))]
pub async fn effective(
    State(s): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<EffectiveQuery>,
) -> ApiResult<Json<EffectiveResponse>> {
    let (user_id, bits) = effective_for(&s, &caller, &q.resource_type, &q.resource_id, q.user_id.as_deref()).await?;
    Ok(Json(EffectiveResponse {
        resource_type: q.resource_type,
        resource_id: q.resource_id,
        user_id,
        permissions: bits,
        permission_names: perm::names(bits),
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckRequest {
    pub resource_type: String,
    pub resource_id: String,
    /// The permissions that must all be held.
    pub permissions: Vec<String>,
    pub user_id: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct CheckResponse {
    pub allowed: bool,
    /// The effective bitfield.
    pub permissions: i64,
}

/// Whether a user holds all the given permissions on a resource.
#[utoipa::path(post, path = "/api/v1/permissions/check", tag = "permissions", request_body = CheckRequest,
    responses((status = 200, body = CheckResponse)))]
pub async fn check(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CheckRequest>,
) -> ApiResult<Json<CheckResponse>> {
    let want = perm::from_names(&body.permissions)
        .map_err(|bad| ApiError::validation("permissions", format!("unknown permission '{bad}'")))?;
    let (_, bits) = effective_for(&s, &caller, &body.resource_type, &body.resource_id, body.user_id.as_deref()).await?;
    Ok(Json(CheckResponse { allowed: bits & want == want, permissions: bits }))
}
