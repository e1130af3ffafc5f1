//! Folders and files: create, list, look up by path or id, streamed upload and download
//! (with `Range`), resumable uploads, rename and move, trash and restore, versions.
//!
//! Content is streamed end to end: a request body goes chunk by chunk into the content
//! store and a download comes out chunk by chunk, so memory does not grow with file size.
//! A write may name the version it is based on (`base_version_id`, or `If-Match`); if the
//! file has moved on, the answer is 409 `VERSION_CONFLICT` and nothing changes.

use axum::body::Body;
use axum::extract::{MatchedPath, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::extract::{limit, ApiJson, ApiQuery};
use crate::auth::Caller;
use crate::content::{self, ChunkRef, Ingested, CHUNK_SIZE};
use crate::error::{ApiError, ApiResult};
use crate::ids::UploadId;
use crate::paths;
use crate::perm;
use crate::store::acl::{self, node_resource, share_resource};
use crate::store::nodes::{self, Expect, Kind, Node, Target, Version};
use crate::store::{get_i64, get_opt_i64, get_opt_str, get_str, shares};
use crate::time::{now_ms, parse_rfc3339, rfc3339};
use crate::AppState;

#[derive(Serialize, ToSchema)]
pub struct NodeResponse {
    pub id: String,
    /// `file` or `folder`.
    #[serde(rename = "type")]
    pub kind: String,
    pub share_id: String,
    /// The share id for items at the share's root.
    pub parent_id: String,
    pub name: String,
    pub path: String,
    pub size: i64,
    pub sha256: Option<String>,
    pub current_version_id: Option<String>,
    pub owner_id: String,
    pub modified_at: String,
    pub created_at: String,
    pub updated_at: String,
    /// True when the item (or a folder above it) is in trash.
    pub deleted: bool,
    pub deleted_at: Option<String>,
}

fn node_response(n: Node, path: String, in_trash: bool) -> NodeResponse {
    NodeResponse {
        id: n.id,
        kind: n.kind.as_str().to_string(),
        share_id: n.share_id,
        parent_id: n.parent_id,
        name: n.name,
        path,
        size: n.size,
        sha256: n.sha256,
        current_version_id: n.current_version_id,
        owner_id: n.owner_id,
        modified_at: rfc3339(n.modified_at),
        created_at: rfc3339(n.created_at),
        updated_at: rfc3339(n.updated_at),
        deleted: in_trash || n.deleted_at.is_some(),
        deleted_at: n.deleted_at.map(rfc3339),
    }
}

async fn respond_node(s: &AppState, n: Node) -> ApiResult<NodeResponse> {
    let loc = nodes::locate(&s.db, &n.id).await?;
    Ok(node_response(n, loc.path, loc.in_trash))
}

#[derive(Serialize, ToSchema)]
pub struct VersionResponse {
    pub id: String,
    pub file_id: String,
    pub number: i64,
    pub size: i64,
    pub sha256: String,
    pub modified_at: String,
    pub created_at: String,
    pub actor: super::changes::ActorResponse,
}

impl From<Version> for VersionResponse {
    fn from(v: Version) -> Self {
        VersionResponse {
            id: v.id,
            file_id: v.file_id,
            number: v.number,
            size: v.size,
            sha256: v.sha256,
            modified_at: rfc3339(v.modified_at),
            created_at: rfc3339(v.created_at),
            actor: super::changes::ActorResponse { kind: v.actor_type, id: v.actor_id },
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct FileWriteResponse {
    pub file: NodeResponse,
    pub version: VersionResponse,
}

/// A node the caller may see, with the permission `bit` checked; the route decides whether
/// a file or a folder is expected.
async fn node_for(s: &AppState, caller: &Caller, id: &str, want: Option<Kind>, bit: i64) -> ApiResult<Node> {
    let n = nodes::get(&s.db, &caller.tenant_id, id).await?;
    if want.is_some_and(|k| k != n.kind) {
        return Err(ApiError::not_found(want.map(Kind::as_str).unwrap_or("item")));
    }
    acl::require(&s.db, caller, &node_resource(&n), bit).await?;
    Ok(n)
}

fn kind_of_route(m: &MatchedPath) -> Option<Kind> {
    if m.as_str().starts_with("/api/v1/files") {
        Some(Kind::File)
    } else if m.as_str().starts_with("/api/v1/folders") {
        Some(Kind::Folder)
    } else {
        None
    }
}

/// The parent to create in: the share root or a folder of that share; checks CREATE there.
async fn parent_for(s: &AppState, caller: &Caller, share_id: &str, parent_id: &str) -> ApiResult<()> {
    let res = if parent_id == share_id {
        share_resource(share_id)
    } else {
        let p = nodes::get(&s.db, &caller.tenant_id, parent_id).await.map_err(|e| e.with_field("parent_id"))?;
        if p.share_id != share_id {
            return Err(ApiError::not_found("parent folder").with_field("parent_id"));
        }
        node_resource(&p)
    };
    acl::require(&s.db, caller, &res, perm::CREATE).await
}

/// The folder at `segs` under the share root (the share id for the root), created with its
/// missing parents when `create` (which needs CREATE on the share).
async fn parent_folder(
    s: &AppState,
    caller: &Caller,
    share_id: &str,
    segs: &[String],
    create: bool,
) -> ApiResult<String> {
    if create {
        acl::require(&s.db, caller, &share_resource(share_id), perm::CREATE).await?;
        return nodes::ensure_folders(&s.db, &caller.tenant_id, &caller.actor(), share_id, segs).await;
    }
    match nodes::lookup_path(&s.db, share_id, segs).await.map_err(|e| e.with_field("path"))? {
        None => Ok(share_id.to_string()),
        Some(n) if n.kind == Kind::Folder => Ok(n.id),
        Some(_) => Err(ApiError::validation("path", "a parent in the path is a file")),
    }
}

/// May the caller write the file `name` in `parent_id`: WRITE on the file if it exists,
/// CREATE on the folder if not; a folder of that name is a 409.
async fn check_file_write(s: &AppState, caller: &Caller, share_id: &str, parent_id: &str, name: &str) -> ApiResult<()> {
    match nodes::child(&s.db, parent_id, name).await? {
        Some(existing) if existing.kind == Kind::File => {
            acl::require(&s.db, caller, &node_resource(&existing), perm::WRITE).await
        }
        Some(_) => Err(ApiError::conflict("NAME_TAKEN", format!("'{name}' is a folder")).with_field("path")),
        None => parent_for(s, caller, share_id, parent_id).await,
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateFolder {
    pub share_id: String,
    /// The parent folder (or the share id for the root); with `name`.
    pub parent_id: Option<String>,
    pub name: Option<String>,
    /// Alternatively a path from the share root; missing parents are created when
    /// `create_parents` is true.
    pub path: Option<String>,
    #[serde(default)]
    pub create_parents: bool,
}

/// Creates a folder.
#[utoipa::path(post, path = "/api/v1/folders", tag = "files", request_body = CreateFolder,
    responses((status = 201, body = NodeResponse), (status = 409, body = crate::error::ErrorBody)))]
pub async fn create_folder(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateFolder>,
) -> ApiResult<(StatusCode, Json<NodeResponse>)> {
    let share = shares::get(&s.db, &caller.tenant_id, &body.share_id).await.map_err(|e| e.with_field("share_id"))?;
    let share_id = share.id.to_string();
    let (parent_id, name) = match (&body.path, &body.parent_id, &body.name) {
        (Some(p), None, None) => {
            let mut segs = paths::segments("path", p)?;
            let name = segs.pop().ok_or_else(|| ApiError::validation("path", "the path names no folder"))?;
            let parent = parent_folder(&s, &caller, &share_id, &segs, body.create_parents).await?;
            (parent, name)
        }
        (None, parent, Some(name)) => (parent.clone().unwrap_or_else(|| share_id.clone()), paths::name("name", name)?),
        (Some(_), _, _) => return Err(ApiError::validation("path", "give either path, or parent_id and name")),
        (None, _, None) => return Err(ApiError::validation("name", "name (or path) is required")),
    };
    parent_for(&s, &caller, &share_id, &parent_id).await?;
    let n = nodes::create_folder(&s.db, &caller.tenant_id, &caller.actor(), &share_id, &parent_id, &name).await?;
    Ok((StatusCode::CREATED, Json(respond_node(&s, n).await?)))
}

/// A file or folder by id (trashed items too, marked `deleted`).
#[utoipa::path(get, path = "/api/v1/files/{id}", tag = "files", params(("id" = String, Path)),
    responses((status = 200, body = NodeResponse), (status = 404, body = crate::error::ErrorBody)))]
pub async fn get_item(
    State(s): State<AppState>,
    caller: Caller,
    m: MatchedPath,
    Path(id): Path<String>,
) -> ApiResult<Json<NodeResponse>> {
    let n = node_for(&s, &caller, &id, kind_of_route(&m), perm::READ).await?;
    Ok(Json(respond_node(&s, n).await?))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// 1–1000, default 200.
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct NodePage {
    pub items: Vec<NodeResponse>,
    pub next_cursor: Option<String>,
}

async fn list_children(s: &AppState, parent_id: &str, parent_path: &str, q: ListQuery) -> ApiResult<NodePage> {
    let limit = limit(q.limit, 200, 1000)?;
    let list = nodes::children(&s.db, parent_id, q.cursor.as_deref(), limit).await?;
    let next_cursor = if list.len() as i64 == limit { list.last().map(|n| n.name.clone()) } else { None };
    let base = parent_path.trim_end_matches('/');
    Ok(NodePage {
        items: list
            .into_iter()
            .map(|n| {
                let p = format!("{base}/{}", n.name);
                node_response(n, p, false)
            })
            .collect(),
        next_cursor,
    })
}

/// The items in a folder, by name.
#[utoipa::path(get, path = "/api/v1/folders/{id}/children", tag = "files", params(("id" = String, Path), ListQuery),
    responses((status = 200, body = NodePage)))]
pub async fn children(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<NodePage>> {
    let n = node_for(&s, &caller, &id, Some(Kind::Folder), perm::READ).await?;
    let loc = nodes::locate(&s.db, &n.id).await?;
    Ok(Json(list_children(&s, &n.id, &loc.path, q).await?))
}

/// The items at a share's root, by name.
#[utoipa::path(get, path = "/api/v1/shares/{id}/children", tag = "files", params(("id" = String, Path), ListQuery),
    responses((status = 200, body = NodePage)))]
pub async fn share_children(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<NodePage>> {
    let share = shares::get(&s.db, &caller.tenant_id, &id).await?;
    acl::require(&s.db, &caller, &share_resource(share.id.as_str()), perm::READ).await?;
    Ok(Json(list_children(&s, share.id.as_str(), "/", q).await?))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PathQuery {
    pub path: String,
}

/// The item at a path from the share root.
#[utoipa::path(get, path = "/api/v1/shares/{id}/items", tag = "files", params(("id" = String, Path), PathQuery),
    responses((status = 200, body = NodeResponse), (status = 404, body = crate::error::ErrorBody)))]
pub async fn lookup(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<PathQuery>,
) -> ApiResult<Json<NodeResponse>> {
    let share = shares::get(&s.db, &caller.tenant_id, &id).await?;
    let segs = paths::segments("path", &q.path)?;
    let n = nodes::lookup_path(&s.db, share.id.as_str(), &segs).await?.ok_or_else(|| {
        ApiError::validation("path", "the share root is not an item; use GET /api/v1/shares/{id}/children")
    })?;
    acl::require(&s.db, &caller, &node_resource(&n), perm::READ).await?;
    Ok(Json(node_response(n, paths::join(&segs), false)))
}

#[derive(Serialize, ToSchema)]
pub struct TrashList {
    pub items: Vec<NodeResponse>,
}

/// Items moved to trash in a share, newest first.
#[utoipa::path(get, path = "/api/v1/shares/{id}/trash", tag = "files", params(("id" = String, Path)),
    responses((status = 200, body = TrashList)))]
pub async fn share_trash(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<TrashList>> {
    let share = shares::get(&s.db, &caller.tenant_id, &id).await?;
    acl::require(&s.db, &caller, &share_resource(share.id.as_str()), perm::READ).await?;
    // Only what the caller may read: READ on the share does not open a closed folder, nor
    // what was trashed from it.
    let trashed = nodes::trash(&s.db, share.id.as_str()).await?;
    let ids: Vec<String> = trashed.iter().map(|n| n.id.clone()).collect();
    let ok = acl::readable(&s.db, &acl::Who::from(&caller), share.id.as_str(), &ids).await?;
    let mut items = Vec::new();
    for n in trashed.into_iter().filter(|n| ok.contains(&n.id)) {
        items.push(respond_node(&s, n).await?);
    }
    Ok(Json(TrashList { items }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct UploadQuery {
    /// Path of the file from the share root (for `PUT /shares/{id}/files`).
    pub path: Option<String>,
    /// Create missing parent folders (default false).
    #[serde(default)]
    pub create_parents: Option<bool>,
    /// The version this write is based on; 409 if the file has another current version.
    pub base_version_id: Option<String>,
    /// The content's modification time (RFC 3339); default: now.
    pub modified_at: Option<String>,
}

fn base_version(headers: &HeaderMap, q: Option<&str>) -> ApiResult<Option<String>> {
    if let Some(v) = q {
        return Ok(Some(v.to_string()));
    }
    match headers.get(http::header::IF_MATCH) {
        None => Ok(None),
        Some(v) => {
            let s = v.to_str().map_err(|_| ApiError::validation("If-Match", "not a version id"))?;
            Ok(Some(s.trim().trim_matches('"').to_string()))
        }
    }
}

fn modified(q: Option<&str>) -> ApiResult<Option<i64>> {
    q.map(|m| parse_rfc3339(m).ok_or_else(|| ApiError::validation("modified_at", "must be an RFC 3339 time")))
        .transpose()
}

async fn ingest_body(s: &AppState, body: Body) -> ApiResult<Ingested> {
    let stream = body.into_data_stream();
    Ok(content::ingest(s.content.as_ref(), stream, s.config.max_file_size).await?)
}

/// Uploads a file by path: creates it, or adds a new version. The body is the raw content,
/// streamed.
#[utoipa::path(put, path = "/api/v1/shares/{share_id}/files", tag = "files",
    params(("share_id" = String, Path), UploadQuery), request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 201, body = FileWriteResponse), (status = 200, body = FileWriteResponse),
        (status = 409, body = crate::error::ErrorBody)))]
pub async fn upload_by_path(
    State(s): State<AppState>,
    caller: Caller,
    Path(share_id): Path<String>,
    ApiQuery(q): ApiQuery<UploadQuery>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<(StatusCode, Json<FileWriteResponse>)> {
    let share = shares::get(&s.db, &caller.tenant_id, &share_id).await?;
    let share_id = share.id.to_string();
    let raw = q.path.as_deref().ok_or_else(|| ApiError::validation("path", "path is required"))?;
    let mut segs = paths::segments("path", raw)?;
    let name = segs.pop().ok_or_else(|| ApiError::validation("path", "the path names no file"))?;
    let base = base_version(&headers, q.base_version_id.as_deref())?;
    let mtime = modified(q.modified_at.as_deref())?;
    let parent_id = parent_folder(&s, &caller, &share_id, &segs, q.create_parents.unwrap_or(false)).await?;
    // Check before reading the body, so refused writes store nothing.
    check_file_write(&s, &caller, &share_id, &parent_id, &name).await?;
    let content = ingest_body(&s, body).await?;
    let c = nodes::commit_content(
        &s.db,
        &caller.tenant_id,
        &caller.actor(),
        &share_id,
        Target::Named { parent_id: &parent_id, name: &name },
        &content,
        Expect::from_base(base.as_deref()),
        mtime,
    )
    .await?;
    let status = if c.created { StatusCode::CREATED } else { StatusCode::OK };
    let file = respond_node(&s, c.node).await?;
    Ok((status, Json(FileWriteResponse { file, version: c.version.into() })))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct VersionWriteQuery {
    pub base_version_id: Option<String>,
    pub modified_at: Option<String>,
}

/// Uploads a new version of an existing file (raw body, streamed).
#[utoipa::path(put, path = "/api/v1/files/{id}/content", tag = "files", params(("id" = String, Path), VersionWriteQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 200, body = FileWriteResponse), (status = 409, body = crate::error::ErrorBody)))]
pub async fn upload_version(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<VersionWriteQuery>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<FileWriteResponse>> {
    let n = node_for(&s, &caller, &id, Some(Kind::File), perm::WRITE).await?;
    let base = base_version(&headers, q.base_version_id.as_deref())?;
    let mtime = modified(q.modified_at.as_deref())?;
    let content = ingest_body(&s, body).await?;
    let c = nodes::commit_content(
        &s.db,
        &caller.tenant_id,
        &caller.actor(),
        &n.share_id,
        Target::Existing { file_id: &n.id },
        &content,
        Expect::from_base(base.as_deref()),
        mtime,
    )
    .await?;
    let file = respond_node(&s, c.node).await?;
    Ok(Json(FileWriteResponse { file, version: c.version.into() }))
}

/// A single byte range from a `Range` header: `bytes=a-b`, `bytes=a-`, `bytes=-n`.
/// `Ok(None)`: no (usable) range, send everything. `Err(())`: unsatisfiable.
pub fn parse_range(header: Option<&str>, size: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(h) = header else { return Ok(None) };
    let Some(spec) = h.trim().strip_prefix("bytes=") else { return Ok(None) };
    if spec.contains(',') {
        return Ok(None); // several ranges: answer with the whole content (allowed by RFC 9110)
    }
    let Some((a, b)) = spec.split_once('-') else { return Ok(None) };
    let (a, b) = (a.trim(), b.trim());
    let range = if a.is_empty() {
        let n: u64 = b.parse().map_err(|_| ())?;
        if n == 0 {
            return Err(());
        }
        (size.saturating_sub(n), size)
    } else {
        let start: u64 = a.parse().map_err(|_| ())?;
        let end = if b.is_empty() {
            size
        } else {
            let e: u64 = b.parse().map_err(|_| ())?;
            if e < start {
                return Err(());
            }
            e.saturating_add(1).min(size)
        };
        if start >= size {
            return Err(());
        }
        (start, end)
    };
    Ok(Some(range))
}

fn content_disposition(name: &str) -> String {
    let mut enc = String::new();
    for b in name.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(b) {
            enc.push(*b as char);
        } else {
            enc.push_str(&format!("%{b:02X}"));
        }
    }
    format!("attachment; filename*=UTF-8''{enc}")
}

async fn stream_version(s: &AppState, name: &str, v: &Version, headers: &HeaderMap) -> ApiResult<Response> {
    let chunks: Vec<ChunkRef> = nodes::version_chunks(&s.db, &v.id).await?;
    let size = v.size as u64;
    let range = parse_range(headers.get(http::header::RANGE).and_then(|h| h.to_str().ok()), size);
    let (status, start, end) = match range {
        Ok(None) => (StatusCode::OK, 0, size),
        Ok(Some((a, b))) => (StatusCode::PARTIAL_CONTENT, a, b),
        Err(()) => {
            let mut r = ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "RANGE_NOT_SATISFIABLE",
                "the requested range is outside the content",
            )
            .into_response();
            r.headers_mut()
                .insert(http::header::CONTENT_RANGE, HeaderValue::from_str(&format!("bytes */{size}")).expect("ascii"));
            return Ok(r);
        }
    };
    let stream = content::read_range(s.content.clone(), chunks, start, end).map_err(|e| {
        tracing::error!(error = %e, "content read failed mid-download");
        std::io::Error::other(e.to_string())
    });
    let mut resp = Response::new(Body::from_stream(stream));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    h.insert(http::header::CONTENT_LENGTH, HeaderValue::from(end - start));
    h.insert(http::header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(http::header::ETAG, HeaderValue::from_str(&format!("\"{}\"", v.id)).expect("ascii"));
    h.insert("x-content-sha256", HeaderValue::from_str(&v.sha256).expect("ascii"));
    h.insert("x-version-id", HeaderValue::from_str(&v.id).expect("ascii"));
    if let Ok(cd) = HeaderValue::from_str(&content_disposition(name)) {
        h.insert(http::header::CONTENT_DISPOSITION, cd);
    }
    if status == StatusCode::PARTIAL_CONTENT {
        h.insert(
            http::header::CONTENT_RANGE,
            HeaderValue::from_str(&format!("bytes {}-{}/{}", start, end.saturating_sub(1), size)).expect("ascii"),
        );
    }
    Ok(resp)
}

/// Downloads a file's current content; supports a single `Range`.
#[utoipa::path(get, path = "/api/v1/files/{id}/content", tag = "files", params(("id" = String, Path)),
    responses((status = 200, description = "the content"), (status = 206, description = "a range of it"),
        (status = 416, body = crate::error::ErrorBody)))]
pub async fn download(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let n = node_for(&s, &caller, &id, Some(Kind::File), perm::READ).await?;
    let vid = n.current_version_id.clone().ok_or_else(|| ApiError::not_found("content"))?;
    let v = nodes::version(&s.db, &n.id, &vid).await?;
    stream_version(&s, &n.name, &v, &headers).await
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateItem {
    /// New name.
    pub name: Option<String>,
    /// New parent folder (the share id for the root).
    pub parent_id: Option<String>,
    /// For files: the version this change is based on.
    pub base_version_id: Option<String>,
}

/// Renames and/or moves a file or folder.
#[utoipa::path(patch, path = "/api/v1/files/{id}", tag = "files", params(("id" = String, Path)), request_body = UpdateItem,
    responses((status = 200, body = NodeResponse), (status = 409, body = crate::error::ErrorBody)))]
pub async fn update_item(
    State(s): State<AppState>,
    caller: Caller,
    m: MatchedPath,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<UpdateItem>,
) -> ApiResult<Json<NodeResponse>> {
    let n = node_for(&s, &caller, &id, kind_of_route(&m), perm::WRITE).await?;
    let name = body.name.as_deref().map(|x| paths::name("name", x)).transpose()?;
    if let Some(p) = body.parent_id.as_deref() {
        if p != n.parent_id {
            parent_for(&s, &caller, &n.share_id, p).await?;
        }
    }
    let out = nodes::rename_move(
        &s.db,
        &caller.tenant_id,
        &caller.actor(),
        &n,
        name.as_deref(),
        body.parent_id.as_deref(),
        body.base_version_id.as_deref(),
    )
    .await?;
    Ok(Json(respond_node(&s, out).await?))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DeleteQuery {
    pub base_version_id: Option<String>,
}

/// Moves a file or folder (with its content) to trash.
#[utoipa::path(delete, path = "/api/v1/files/{id}", tag = "files", params(("id" = String, Path), DeleteQuery),
    responses((status = 204), (status = 409, body = crate::error::ErrorBody)))]
pub async fn delete_item(
    State(s): State<AppState>,
    caller: Caller,
    m: MatchedPath,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<DeleteQuery>,
) -> ApiResult<StatusCode> {
    let n = node_for(&s, &caller, &id, kind_of_route(&m), perm::DELETE).await?;
    nodes::delete(&s.db, &caller.tenant_id, &caller.actor(), &n, q.base_version_id.as_deref()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Restores an item from trash to where it was.
#[utoipa::path(post, path = "/api/v1/files/{id}/restore", tag = "files", params(("id" = String, Path)),
    responses((status = 200, body = NodeResponse), (status = 409, body = crate::error::ErrorBody)))]
pub async fn restore_item(
    State(s): State<AppState>,
    caller: Caller,
    m: MatchedPath,
    Path(id): Path<String>,
) -> ApiResult<Json<NodeResponse>> {
    let n = node_for(&s, &caller, &id, kind_of_route(&m), perm::DELETE).await?;
    let out = nodes::restore(&s.db, &caller.tenant_id, &caller.actor(), &n).await?;
    Ok(Json(respond_node(&s, out).await?))
}

#[derive(Serialize, ToSchema)]
pub struct VersionList {
    pub versions: Vec<VersionResponse>,
}

/// A file's versions, newest first.
#[utoipa::path(get, path = "/api/v1/files/{id}/versions", tag = "files", params(("id" = String, Path)),
    responses((status = 200, body = VersionList)))]
pub async fn list_versions(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<VersionList>> {
    let n = node_for(&s, &caller, &id, Some(Kind::File), perm::READ).await?;
    let versions = nodes::versions(&s.db, &n.id).await?;
    Ok(Json(VersionList { versions: versions.into_iter().map(Into::into).collect() }))
}

/// Downloads one version's content; supports a single `Range`.
#[utoipa::path(get, path = "/api/v1/files/{id}/versions/{version_id}/content", tag = "files",
    params(("id" = String, Path), ("version_id" = String, Path)), responses((status = 200, description = "the content")))]
pub async fn download_version(
    State(s): State<AppState>,
    caller: Caller,
    Path((id, vid)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let n = node_for(&s, &caller, &id, Some(Kind::File), perm::READ).await?;
    let v = nodes::version(&s.db, &n.id, &vid).await?;
    stream_version(&s, &n.name, &v, &headers).await
}

/// Makes an old version current again, as a new version on top.
#[utoipa::path(post, path = "/api/v1/files/{id}/versions/{version_id}/restore", tag = "files",
    params(("id" = String, Path), ("version_id" = String, Path)), responses((status = 200, body = FileWriteResponse)))]
pub async fn restore_version(
    State(s): State<AppState>,
    caller: Caller,
    Path((id, vid)): Path<(String, String)>,
) -> ApiResult<Json<FileWriteResponse>> {
    let n = node_for(&s, &caller, &id, Some(Kind::File), perm::WRITE).await?;
    let v = nodes::version(&s.db, &n.id, &vid).await?;
    let c = nodes::restore_version(&s.db, &caller.tenant_id, &caller.actor(), &n, &v).await?;
    let file = respond_node(&s, c.node).await?;
    Ok(Json(FileWriteResponse { file, version: c.version.into() }))
}

// ---- resumable uploads -------------------------------------------------------------------

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUpload {
    pub share_id: String,
    /// Path of the file from the share root; its parent folders must exist.
    pub path: String,
    /// Total size, if known; checked at completion.
    pub size: Option<i64>,
    pub base_version_id: Option<String>,
    pub modified_at: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct UploadResponse {
    pub id: String,
    pub share_id: String,
    pub path: String,
    /// Bytes received so far: the offset of the next part.
    pub offset: i64,
    pub size: Option<i64>,
    /// Every part but the last must be a multiple of this many bytes.
    pub part_size_multiple: i64,
    pub created_at: String,
}

struct Session {
    id: String,
    share_id: String,
    user_id: String,
    parent_id: String,
    name: String,
    base_version_id: Option<String>,
    modified_at: Option<i64>,
    total_size: Option<i64>,
    received: i64,
    chunk_count: i64,
    created_at: i64,
}

async fn session(s: &AppState, caller: &Caller, id: &str) -> ApiResult<Session> {
    let r = sqlx::query("SELECT * FROM upload_sessions WHERE id = $1 AND tenant_id = $2 AND user_id = $3")
        .bind(id)
        .bind(caller.tenant_id.as_str())
        .bind(caller.user_id.as_str())
        .fetch_optional(&s.db.pool)
        .await?
        .ok_or_else(|| ApiError::not_found("upload"))?;
    Ok(Session {
        id: get_str(&r, "id"),
        share_id: get_str(&r, "share_id"),
        user_id: get_str(&r, "user_id"),
        parent_id: get_str(&r, "parent_id"),
        name: get_str(&r, "name"),
        base_version_id: get_opt_str(&r, "base_version_id"),
        modified_at: get_opt_i64(&r, "modified_at"),
        total_size: get_opt_i64(&r, "total_size"),
        received: get_i64(&r, "received"),
        chunk_count: get_i64(&r, "chunk_count"),
        created_at: get_i64(&r, "created_at"),
    })
}

async fn upload_response(s: &AppState, u: &Session) -> ApiResult<UploadResponse> {
    let parent_path =
        if u.parent_id == u.share_id { "/".to_string() } else { nodes::locate(&s.db, &u.parent_id).await?.path };
    Ok(UploadResponse {
        id: u.id.clone(),
        share_id: u.share_id.clone(),
        path: format!("{}/{}", parent_path.trim_end_matches('/'), u.name),
        offset: u.received,
        size: u.total_size,
        part_size_multiple: CHUNK_SIZE as i64,
        created_at: rfc3339(u.created_at),
    })
}

/// Starts a resumable upload. Send parts with `PUT /api/v1/uploads/{id}`, then complete it.
#[utoipa::path(post, path = "/api/v1/uploads", tag = "uploads", request_body = CreateUpload,
    responses((status = 201, body = UploadResponse)))]
pub async fn create_upload(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateUpload>,
) -> ApiResult<(StatusCode, Json<UploadResponse>)> {
    let share = shares::get(&s.db, &caller.tenant_id, &body.share_id).await.map_err(|e| e.with_field("share_id"))?;
    let share_id = share.id.to_string();
    let mut segs = paths::segments("path", &body.path)?;
    let name = segs.pop().ok_or_else(|| ApiError::validation("path", "the path names no file"))?;
    if body.size.is_some_and(|n| n < 0) {
        return Err(ApiError::validation("size", "must not be negative"));
    }
    let mtime = modified(body.modified_at.as_deref())?;
    let parent_id = parent_folder(&s, &caller, &share_id, &segs, false).await?;
    check_file_write(&s, &caller, &share_id, &parent_id, &name).await?;
    let u = Session {
        id: UploadId::generate().to_string(),
        share_id,
        user_id: caller.user_id.to_string(),
        parent_id,
        name,
        base_version_id: body.base_version_id,
        modified_at: mtime,
        total_size: body.size,
        received: 0,
        chunk_count: 0,
        created_at: now_ms(),
    };
    sqlx::query(
        "INSERT INTO upload_sessions (id, tenant_id, share_id, user_id, parent_id, name, base_version_id, modified_at,
            total_size, received, chunk_count, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0, 0, $10)",
    )
    .bind(&u.id)
    .bind(caller.tenant_id.as_str())
    .bind(&u.share_id)
    .bind(&u.user_id)
    .bind(&u.parent_id)
    .bind(&u.name)
    .bind(u.base_version_id.clone())
    .bind(u.modified_at)
    .bind(u.total_size)
    .bind(u.created_at)
    .execute(&s.db.pool)
    .await?;
    Ok((StatusCode::CREATED, Json(upload_response(&s, &u).await?)))
}

/// The offset a part starts at: `Upload-Offset: n` or `Content-Range: bytes n-m/total`.
fn part_offset(headers: &HeaderMap) -> ApiResult<i64> {
    if let Some(v) = headers.get("upload-offset") {
        return v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| ApiError::validation("Upload-Offset", "must be a byte offset"));
    }
    if let Some(v) = headers.get(http::header::CONTENT_RANGE) {
        let s = v.to_str().unwrap_or("");
        return s
            .trim()
            .strip_prefix("bytes ")
            .and_then(|r| r.split('-').next())
            .and_then(|n| n.trim().parse().ok())
            .ok_or_else(|| ApiError::validation("Content-Range", "must be 'bytes <start>-<end>/<total>'"));
    }
    Err(ApiError::validation("Upload-Offset", "an Upload-Offset or Content-Range header is required"))
}

/// Reads and discards up to `max` bytes of a body.
async fn drain(body: Body, max: u64) {
    use futures::StreamExt;
    let mut s = body.into_data_stream();
    let mut n = 0u64;
    while let Some(Ok(b)) = s.next().await {
        n += b.len() as u64;
        if n > max {
            break;
        }
    }
}

/// Sends the next part of a resumable upload (raw body). Parts are appended in order; every
/// part but the last must be a multiple of `part_size_multiple` bytes.
#[utoipa::path(put, path = "/api/v1/uploads/{id}", tag = "uploads", params(("id" = String, Path)),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 200, body = UploadResponse), (status = 409, body = crate::error::ErrorBody)))]
pub async fn upload_part(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<UploadResponse>> {
    let u = session(&s, &caller, &id).await?;
    let offset = part_offset(&headers)?;
    let mismatch = |cur: i64| {
        ApiError::conflict("UPLOAD_OFFSET_MISMATCH", format!("the next part must start at byte {cur}"))
            .with_details(serde_json::json!({ "offset": cur }))
    };
    if offset != u.received {
        // Read the part before answering, so the client sees the answer rather than a
        // connection reset in the middle of its send.
        drain(body, 2 * CHUNK_SIZE as u64).await;
        return Err(mismatch(u.received));
    }
    if u.received % CHUNK_SIZE as i64 != 0 {
        return Err(ApiError::conflict(
            "UPLOAD_FINISHED",
            "the last part was shorter than a part multiple; complete the upload",
        ));
    }
    let part = ingest_body(&s, body).await?;
    if let Some(total) = u.total_size {
        if u.received + part.size as i64 > total {
            return Err(ApiError::validation("size", "the parts exceed the declared size"));
        }
    }
    let mut tx = s.db.begin().await?;
    let r = sqlx::query(
        "UPDATE upload_sessions SET received = received + $1, chunk_count = chunk_count + $2 WHERE id = $3 AND received = $4",
    )
    .bind(part.size as i64)
    .bind(part.chunks.len() as i64)
    .bind(&u.id)
    .bind(u.received)
    .execute(&mut *tx)
    .await?;
    if r.rows_affected() == 0 {
        // Another part won the race.
        tx.rollback().await?;
        let cur = session(&s, &caller, &id).await?;
        return Err(mismatch(cur.received));
    }
    for (i, c) in part.chunks.iter().enumerate() {
        sqlx::query(
            "INSERT INTO chunks (sha256, size, created_at) VALUES ($1, $2, $3) ON CONFLICT (sha256) DO NOTHING",
        )
        .bind(&c.sha256)
        .bind(c.size as i64)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        sqlx::query("INSERT INTO upload_chunks (upload_id, idx, sha256, size) VALUES ($1, $2, $3, $4)")
            .bind(&u.id)
            .bind(u.chunk_count + i as i64)
            .bind(&c.sha256)
            .bind(c.size as i64)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    let u = session(&s, &caller, &id).await?;
    Ok(Json(upload_response(&s, &u).await?))
}

/// Where a resumable upload stands.
#[utoipa::path(get, path = "/api/v1/uploads/{id}", tag = "uploads", params(("id" = String, Path)),
    responses((status = 200, body = UploadResponse)))]
pub async fn upload_status(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<UploadResponse>> {
    let u = session(&s, &caller, &id).await?;
    Ok(Json(upload_response(&s, &u).await?))
}

async fn drop_session(s: &AppState, id: &str) -> ApiResult<()> {
    let mut tx = s.db.begin().await?;
    sqlx::query("DELETE FROM upload_chunks WHERE upload_id = $1").bind(id).execute(&mut *tx).await?;
    sqlx::query("DELETE FROM upload_sessions WHERE id = $1").bind(id).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(())
}

/// Finishes a resumable upload: the file (or its new version) appears now, whole.
#[utoipa::path(post, path = "/api/v1/uploads/{id}/complete", tag = "uploads", params(("id" = String, Path)),
    responses((status = 201, body = FileWriteResponse), (status = 200, body = FileWriteResponse)))]
pub async fn complete_upload(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<FileWriteResponse>)> {
    let u = session(&s, &caller, &id).await?;
    if let Some(total) = u.total_size {
        if total != u.received {
            return Err(ApiError::conflict(
                "UPLOAD_INCOMPLETE",
                format!("{} of the declared {} bytes were received", u.received, total),
            )
            .with_details(serde_json::json!({ "offset": u.received })));
        }
    }
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT sha256, size FROM upload_chunks WHERE upload_id = $1 ORDER BY idx")
            .bind(&u.id)
            .fetch_all(&s.db.pool)
            .await?;
    let chunks: Vec<ChunkRef> = rows.into_iter().map(|(sha256, size)| ChunkRef { sha256, size: size as u64 }).collect();
    let sha256 = content::hash_chunks(s.content.as_ref(), &chunks).await?;
    let content = Ingested { size: u.received as u64, sha256, chunks };
    let c = nodes::commit_content(
        &s.db,
        &caller.tenant_id,
        &caller.actor(),
        &u.share_id,
        Target::Named { parent_id: &u.parent_id, name: &u.name },
        &content,
        Expect::from_base(u.base_version_id.as_deref()),
        u.modified_at,
    )
    .await?;
    drop_session(&s, &u.id).await?;
    let status = if c.created { StatusCode::CREATED } else { StatusCode::OK };
    let file = respond_node(&s, c.node).await?;
    Ok((status, Json(FileWriteResponse { file, version: c.version.into() })))
}

/// Abandons a resumable upload.
#[utoipa::path(delete, path = "/api/v1/uploads/{id}", tag = "uploads", params(("id" = String, Path)),
    responses((status = 204)))]
pub async fn abort_upload(State(s): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<StatusCode> {
    let u = session(&s, &caller, &id).await?;
    drop_session(&s, &u.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges_follow_rfc_9110() {
        assert_eq!(parse_range(None, 10), Ok(None));
        assert_eq!(parse_range(Some("bytes=0-3"), 10), Ok(Some((0, 4))));
        assert_eq!(parse_range(Some("bytes=5-"), 10), Ok(Some((5, 10))));
        assert_eq!(parse_range(Some("bytes=-3"), 10), Ok(Some((7, 10))));
        assert_eq!(parse_range(Some("bytes=8-100"), 10), Ok(Some((8, 10))));
        assert_eq!(parse_range(Some("bytes=5-18446744073709551615"), 10), Ok(Some((5, 10))));
        assert_eq!(parse_range(Some("bytes=10-"), 10), Err(()));
        assert_eq!(parse_range(Some("bytes=4-2"), 10), Err(()));
        assert_eq!(parse_range(Some("bytes=0-1,4-5"), 10), Ok(None));
        assert_eq!(parse_range(Some("items=0-1"), 10), Ok(None));
    }
}
