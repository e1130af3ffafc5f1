//! SMB connectors and their identity mappings, under `/api/v1/smb-connectors` (each route
//! also answers with a trailing slash).
//!
//! Every endpoint needs MANAGE_PERMISSIONS on the connector's target share; another tenant's
//! connector is 404. The password is write-only: no response, error or log line carries it.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

use super::extract::{limit, ApiJson, ApiQuery};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, ErrorDetail};
use crate::ids::ShareId;
use crate::perm;
use crate::secrets::Secret;
use crate::store::acl::{self, share_resource};
use crate::store::connectors::{self, validate, Connector, Filter, Settings};
use crate::store::mappings::{self, Mapping, RowOutcome};
use crate::store::nodes;
use crate::time::rfc3339;
use crate::AppState;

pub fn routes() -> Router<AppState> {
    let mut r = Router::new();
    for slash in ["", "/"] {
        let base = "/api/v1/smb-connectors";
        r = r
            .route(&format!("{base}{slash}"), get(list_connectors).post(create_connector))
            .route(
                &format!("{base}/{{id}}{slash}"),
                get(get_connector).patch(update_connector).delete(delete_connector),
            )
            .route(&format!("{base}/{{id}}/identity-mappings{slash}"), get(list_mappings).post(create_mapping))
            .route(&format!("{base}/{{id}}/identity-mappings/import{slash}"), post(import_mappings))
            .route(&format!("{base}/{{id}}/identity-mappings/{{map_id}}{slash}"), delete(delete_mapping));
    }
    r
}

/// A field of a PATCH body: absent, explicitly `null`, or a value.
#[derive(Default)]
pub enum Patch<T> {
    #[default]
    Absent,
    Null,
    Value(T),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Patch<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match Option::<T>::deserialize(d)? {
            None => Patch::Null,
            Some(v) => Patch::Value(v),
        })
    }
}

/// An include (whitelist) or exclude (blacklist) filter. Extensions are matched
/// case-insensitively with or without the dot and read back lowercase without it; patterns
/// are globs (`*`, `?`, `[...]`, `{a,b}`, `**`).
#[derive(Deserialize, Serialize, ToSchema, Clone)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"extensions": ["pdf", "docx"], "patterns": ["~$*", "Thumbs.db"]}))]
pub struct FilterBody {
    #[serde(default)]
    pub extensions: Vec<String>,
    #[serde(default)]
    pub patterns: Vec<String>,
}

impl From<Filter> for FilterBody {
    fn from(f: Filter) -> Self {
        FilterBody { extensions: f.extensions, patterns: f.patterns }
    }
}

/// A new connector. Only `name`, `server_host`, `share_name`, `username`, `password` and
/// `target_share_id` are required; the SMB server need not be reachable yet.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "name": "Finance Fileserver",
    "description": "Legacy Windows share — finance department",
    "server_host": "fs01.corp.example.com",
    "server_port": 445,
    "share_name": "Finance",
    "base_path": "2026",
    "domain": "CORP",
    "username": "scaidrive-svc",
    "password": "<secret>",
    "target_share_id": "shr_01J3H",
    "target_path": "/From Fileserver",
    "sync_direction": "bidirectional",
    "sync_permissions": true,
    "include_patterns": {"extensions": ["pdf", "docx", "xlsx"]},
    "exclude_patterns": {"patterns": ["~$*", ".DS_Store", "Thumbs.db"]},
    "conflict_resolution": "LAST_WRITER_WINS",
    "sync_interval_minutes": 15
}))]
pub struct CreateConnector {
    /// Display name, 1–255 characters.
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// Host name or IP address of the SMB server, without scheme or port.
    pub server_host: String,
    /// 1–65535; default 445.
    #[serde(default)]
    pub server_port: Option<i64>,
    /// The SMB share (no slashes).
    pub share_name: String,
    /// Sub-path inside the SMB share; `\` or `/` separated, read back `/`-separated without
    /// leading or trailing separator. Default: the share root.
    #[serde(default)]
    pub base_path: Option<String>,
    /// NT domain or workgroup.
    #[serde(default)]
    pub domain: Option<String>,
    /// Service account (without the domain).
    pub username: String,
    /// Write-only: encrypted at rest, never returned.
    #[schema(value_type = String, format = Password, write_only)]
    pub password: Secret,
    /// The ScaiDrive share to mirror into (immutable).
    pub target_share_id: String,
    /// Folder inside the target share, created if missing. Default `/`.
    #[serde(default)]
    pub target_path: Option<String>,
    /// `bidirectional`, `smb_to_scaidrive` (default) or `scaidrive_to_smb`.
    #[serde(default)]
    pub sync_direction: Option<String>,
    /// Replicate SMB ACLs (needs identity mappings). Default false.
    #[serde(default)]
    pub sync_permissions: Option<bool>,
    /// Default false.
    #[serde(default)]
    pub sync_hidden_files: Option<bool>,
    /// Default false.
    #[serde(default)]
    pub sync_system_files: Option<bool>,
    #[serde(default)]
    pub include_patterns: Option<FilterBody>,
    #[serde(default)]
    pub exclude_patterns: Option<FilterBody>,
    /// `LAST_WRITER_WINS`, `KEEP_BOTH` (default), `SCAIDRIVE_WINS` or `SMB_WINS`.
    #[serde(default)]
    pub conflict_resolution: Option<String>,
    /// 0 disables scheduled runs; at most 44640 (31 days); default 15.
    #[serde(default)]
    pub sync_interval_minutes: Option<i64>,
    /// A run that would delete more than this share of the synced items stops instead
    /// (0–100, default 50).
    #[serde(default)]
    pub max_delete_percent: Option<i64>,
    /// The worker pool that runs this connector's jobs and connectivity tests (e.g. the
    /// workers on the file server's site): `[a-z0-9][a-z0-9-]*`, at most 63; default `default`.
    #[serde(default)]
    pub worker_pool: Option<String>,
}

/// Changes to a connector: any field but `target_share_id` (which may only be repeated
/// unchanged). `null` clears `description`, `base_path`, `domain` and the patterns. Values are
/// validated exactly as on creation.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"username": "new-svc", "password": "<new-secret>"}))]
pub struct UpdateConnector {
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub name: Patch<String>,
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub description: Patch<String>,
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub server_host: Patch<String>,
    #[serde(default)]
    #[schema(value_type = Option<i64>)]
    pub server_port: Patch<i64>,
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub share_name: Patch<String>,
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub base_path: Patch<String>,
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub domain: Patch<String>,
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub username: Patch<String>,
    #[serde(default)]
    #[schema(value_type = Option<String>, format = Password, write_only)]
    pub password: Patch<Secret>,
    /// Immutable: refused with 422 `FIELD_IMMUTABLE` unless equal to the current value.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub target_share_id: Patch<String>,
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub target_path: Patch<String>,
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub sync_direction: Patch<String>,
    #[serde(default)]
    #[schema(value_type = Option<bool>)]
    pub sync_permissions: Patch<bool>,
    #[serde(default)]
    #[schema(value_type = Option<bool>)]
    pub sync_hidden_files: Patch<bool>,
    #[serde(default)]
    #[schema(value_type = Option<bool>)]
    pub sync_system_files: Patch<bool>,
    #[serde(default)]
    #[schema(value_type = Option<FilterBody>)]
    pub include_patterns: Patch<FilterBody>,
    #[serde(default)]
    #[schema(value_type = Option<FilterBody>)]
    pub exclude_patterns: Patch<FilterBody>,
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub conflict_resolution: Patch<String>,
    /// A new value reschedules the next run (now + interval; none for 0).
    #[serde(default)]
    #[schema(value_type = Option<i64>)]
    pub sync_interval_minutes: Patch<i64>,
    #[serde(default)]
    #[schema(value_type = Option<i64>)]
    pub max_delete_percent: Patch<i64>,
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub worker_pool: Patch<String>,
}

/// A connector as read back: every configuration field but the password, and its state.
#[derive(Serialize, ToSchema)]
pub struct ConnectorResponse {
    /// `cnn_…`
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub server_host: String,
    pub server_port: i64,
    pub share_name: String,
    pub base_path: Option<String>,
    pub domain: Option<String>,
    pub username: String,
    pub target_share_id: String,
    pub target_path: String,
    pub sync_direction: String,
    pub sync_permissions: bool,
    pub sync_hidden_files: bool,
    pub sync_system_files: bool,
    pub include_patterns: Option<FilterBody>,
    pub exclude_patterns: Option<FilterBody>,
    pub conflict_resolution: String,
    pub sync_interval_minutes: i64,
    pub max_delete_percent: i64,
    /// The worker pool that runs this connector's jobs.
    pub worker_pool: String,
    /// `idle` until the first sync.
    pub status: String,
    pub status_message: Option<String>,
    pub error_count: i64,
    pub last_sync_at: Option<String>,
    /// The next scheduled run; null when `sync_interval_minutes` is 0.
    pub next_sync_at: Option<String>,
    pub total_files_synced: i64,
    pub total_bytes_synced: i64,
    /// When the identity mappings last changed.
    pub mappings_changed_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl From<Connector> for ConnectorResponse {
    fn from(c: Connector) -> Self {
        let s = c.settings;
        ConnectorResponse {
            id: c.id.to_string(),
            name: s.name,
            description: s.description,
            server_host: s.server_host,
            server_port: s.server_port,
            share_name: s.share_name,
            base_path: s.base_path,
            domain: s.domain,
            username: s.username,
            target_share_id: c.target_share_id.to_string(),
            target_path: s.target_path,
            sync_direction: s.sync_direction.as_str().to_string(),
            sync_permissions: s.sync_permissions,
            sync_hidden_files: s.sync_hidden_files,
            sync_system_files: s.sync_system_files,
            include_patterns: s.include_patterns.map(Into::into),
            exclude_patterns: s.exclude_patterns.map(Into::into),
            conflict_resolution: s.conflict_resolution.as_str().to_string(),
            sync_interval_minutes: s.sync_interval_minutes,
            max_delete_percent: s.max_delete_percent,
            worker_pool: s.worker_pool,
            status: c.status,
            status_message: c.status_message,
            error_count: c.error_count,
            last_sync_at: c.last_sync_at.map(rfc3339),
            next_sync_at: c.next_sync_at.map(rfc3339),
            total_files_synced: c.total_files_synced,
            total_bytes_synced: c.total_bytes_synced,
            mappings_changed_at: c.mappings_changed_at.map(rfc3339),
            created_at: rfc3339(c.created_at),
            updated_at: rfc3339(c.updated_at),
        }
    }
}

/// The configuration as given, before validation; POST and PATCH both end here.
struct Raw {
    name: String,
    description: Option<String>,
    server_host: String,
    server_port: Option<i64>,
    share_name: String,
    base_path: Option<String>,
    domain: Option<String>,
    username: String,
    target_path: Option<String>,
    sync_direction: Option<String>,
    sync_permissions: Option<bool>,
    sync_hidden_files: Option<bool>,
    sync_system_files: Option<bool>,
    include_patterns: Option<FilterBody>,
    exclude_patterns: Option<FilterBody>,
    conflict_resolution: Option<String>,
    sync_interval_minutes: Option<i64>,
    max_delete_percent: Option<i64>,
    worker_pool: Option<String>,
}

impl Raw {
    fn from_settings(s: Settings) -> Raw {
        Raw {
            name: s.name,
            description: s.description,
            server_host: s.server_host,
            server_port: Some(s.server_port),
            share_name: s.share_name,
            base_path: s.base_path,
            domain: s.domain,
            username: s.username,
            target_path: Some(s.target_path),
            sync_direction: Some(s.sync_direction.as_str().to_string()),
            sync_permissions: Some(s.sync_permissions),
            sync_hidden_files: Some(s.sync_hidden_files),
            sync_system_files: Some(s.sync_system_files),
            include_patterns: s.include_patterns.map(Into::into),
            exclude_patterns: s.exclude_patterns.map(Into::into),
            conflict_resolution: Some(s.conflict_resolution.as_str().to_string()),
            sync_interval_minutes: Some(s.sync_interval_minutes),
            max_delete_percent: Some(s.max_delete_percent),
            worker_pool: Some(s.worker_pool),
        }
    }

    /// Validates every field; returns the settings and the target path's names.
    fn validate(self) -> ApiResult<(Settings, Vec<String>)> {
        let filter = |field: &str, f: Option<FilterBody>| match f {
            None => Ok(None),
            Some(f) => validate::filter(field, f.extensions, f.patterns),
        };
        let (target_path, segs) = validate::target_path(self.target_path.as_deref())?;
        let settings = Settings {
            name: validate::name(&self.name)?,
            description: validate::optional_text("description", self.description, 2000)?,
            server_host: validate::server_host(&self.server_host)?,
            server_port: validate::server_port(self.server_port.unwrap_or(connectors::DEFAULT_PORT))?,
            share_name: validate::share_name(&self.share_name)?,
            base_path: validate::base_path(self.base_path)?,
            domain: validate::domain(self.domain)?,
            username: validate::username(&self.username)?,
            target_path,
            sync_direction: validate::sync_direction(self.sync_direction.as_deref())?,
            sync_permissions: self.sync_permissions.unwrap_or(false),
            sync_hidden_files: self.sync_hidden_files.unwrap_or(false),
            sync_system_files: self.sync_system_files.unwrap_or(false),
            include_patterns: filter("include_patterns", self.include_patterns)?,
            exclude_patterns: filter("exclude_patterns", self.exclude_patterns)?,
            conflict_resolution: validate::conflict_resolution(self.conflict_resolution.as_deref())?,
            sync_interval_minutes: validate::sync_interval_minutes(
                self.sync_interval_minutes.unwrap_or(connectors::DEFAULT_INTERVAL_MINUTES),
            )?,
            max_delete_percent: validate::max_delete_percent(
                self.max_delete_percent.unwrap_or(connectors::DEFAULT_MAX_DELETE_PERCENT),
            )?,
            worker_pool: validate::worker_pool(self.worker_pool.as_deref())?,
        };
        Ok((settings, segs))
    }
}

/// Creates the target folder chain (as the caller) so the connector's root exists.
async fn ensure_target(s: &AppState, caller: &Caller, share: &ShareId, segs: &[String]) -> ApiResult<()> {
    nodes::ensure_folders(&s.db, &caller.tenant_id, &caller.actor(), share.as_str(), segs).await.map(|_| ()).map_err(
        |e| match e.code {
            // A file is in the way: the value is unusable, like any other invalid path.
            "NOT_A_FOLDER" => ApiError::validation("target_path", e.message).with_code("NOT_A_FOLDER"),
            _ if e.field.as_deref() == Some("path") => e.with_field("target_path"),
            _ => e,
        },
    )
}

/// The connector, if it is the caller's tenant's and the caller may manage it.
pub(crate) async fn managed(s: &AppState, caller: &Caller, id: &str) -> ApiResult<Connector> {
    let c = connectors::get(&s.db, &caller.tenant_id, id).await?;
    acl::require(&s.db, caller, &share_resource(c.target_share_id.as_str()), perm::MANAGE_PERMISSIONS).await?;
    Ok(c)
}

/// Creates a connector (needs MANAGE_PERMISSIONS on the target share). The target folder is
/// created if missing. Does not contact the SMB server.
#[utoipa::path(post, path = "/api/v1/smb-connectors", tag = "smb-connectors", request_body = CreateConnector,
    responses((status = 201, body = ConnectorResponse), (status = 403, body = crate::error::ErrorBody),
        (status = 422, body = crate::error::ErrorBody)))]
pub async fn create_connector(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateConnector>,
) -> ApiResult<(StatusCode, Json<ConnectorResponse>)> {
    let share =
        crate::store::shares::get(&s.db, &caller.tenant_id, body.target_share_id.trim()).await.map_err(|e| {
            if e.status == StatusCode::NOT_FOUND {
                ApiError::validation("target_share_id", "no share with that id in this tenant")
            } else {
                e
            }
        })?;
    acl::require(&s.db, &caller, &share_resource(share.id.as_str()), perm::MANAGE_PERMISSIONS).await?;
    validate::password(&body.password)?;
    let raw = Raw {
        name: body.name,
        description: body.description,
        server_host: body.server_host,
        server_port: body.server_port,
        share_name: body.share_name,
        base_path: body.base_path,
        domain: body.domain,
        username: body.username,
        target_path: body.target_path,
        sync_direction: body.sync_direction,
        sync_permissions: body.sync_permissions,
        sync_hidden_files: body.sync_hidden_files,
        sync_system_files: body.sync_system_files,
        include_patterns: body.include_patterns,
        exclude_patterns: body.exclude_patterns,
        conflict_resolution: body.conflict_resolution,
        sync_interval_minutes: body.sync_interval_minutes,
        max_delete_percent: body.max_delete_percent,
        worker_pool: body.worker_pool,
    };
    let (settings, segs) = raw.validate()?;
    ensure_target(&s, &caller, &share.id, &segs).await?;
    let c = connectors::create(
        &s.db,
        &s.secrets,
        &caller.tenant_id,
        caller.user_id.as_str(),
        &share.id,
        &settings,
        &body.password,
    )
    .await?;
    tracing::info!(connector.id = %c.id, share.id = %share.id, "connector created");
    Ok((StatusCode::CREATED, Json(c.into())))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// 1–1000, default 100.
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ConnectorList {
    pub connectors: Vec<ConnectorResponse>,
    /// Pass as `cursor` for the next page; null at the end.
    pub next_cursor: Option<String>,
}

/// The tenant's connectors the caller may manage (MANAGE_PERMISSIONS on the target share),
/// by id.
#[utoipa::path(get, path = "/api/v1/smb-connectors", tag = "smb-connectors", params(PageQuery),
    responses((status = 200, body = ConnectorList)))]
pub async fn list_connectors(
    State(s): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<ConnectorList>> {
    let limit = limit(q.limit, 100, 1000)?;
    let mut after = q.cursor.unwrap_or_default();
    let mut allowed = std::collections::HashMap::<String, bool>::new();
    let mut out = Vec::new();
    let batch = limit.max(100);
    loop {
        let rows = connectors::list(&s.db, &caller.tenant_id, Some(&after), batch).await?;
        let exhausted = (rows.len() as i64) < batch;
        for c in rows {
            after = c.id.to_string();
            let share = c.target_share_id.to_string();
            let ok = match allowed.get(&share) {
                Some(ok) => *ok,
                None => {
                    let have = acl::effective(&s.db, &acl::Who::from(&caller), &share_resource(&share)).await?;
                    let ok = have & perm::MANAGE_PERMISSIONS != 0;
                    allowed.insert(share, ok);
                    ok
                }
            };
            if ok {
                out.push(ConnectorResponse::from(c));
                if out.len() as i64 == limit {
                    return Ok(Json(ConnectorList { connectors: out, next_cursor: Some(after) }));
                }
            }
        }
        if exhausted {
            return Ok(Json(ConnectorList { connectors: out, next_cursor: None }));
        }
    }
}

/// A connector.
#[utoipa::path(get, path = "/api/v1/smb-connectors/{id}", tag = "smb-connectors", params(("id" = String, Path)),
    responses((status = 200, body = ConnectorResponse), (status = 403, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody)))]
pub async fn get_connector(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<ConnectorResponse>> {
    Ok(Json(managed(&s, &caller, &id).await?.into()))
}

fn not_null<T>(field: &str, p: Patch<T>, current: T) -> ApiResult<T> {
    match p {
        Patch::Absent => Ok(current),
        Patch::Value(v) => Ok(v),
        Patch::Null => Err(ApiError::validation(field, "must not be null")),
    }
}

fn nullable<T>(p: Patch<T>, current: Option<T>) -> Option<T> {
    match p {
        Patch::Absent => current,
        Patch::Null => None,
        Patch::Value(v) => Some(v),
    }
}

/// Changes a connector. `target_share_id` is immutable; a new password is re-encrypted; a new
/// `sync_interval_minutes` reschedules the next run.
#[utoipa::path(patch, path = "/api/v1/smb-connectors/{id}", tag = "smb-connectors", params(("id" = String, Path)),
    request_body = UpdateConnector,
    responses((status = 200, body = ConnectorResponse), (status = 422, body = crate::error::ErrorBody)))]
pub async fn update_connector(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<UpdateConnector>,
) -> ApiResult<Json<ConnectorResponse>> {
    let c = managed(&s, &caller, &id).await?;
    match &b.target_share_id {
        Patch::Absent => {}
        Patch::Value(v) if v.trim() == c.target_share_id.as_str() => {}
        _ => {
            return Err(ApiError::validation(
                "target_share_id",
                "is immutable; create a new connector for another share",
            )
            .with_code("FIELD_IMMUTABLE"))
        }
    }
    let password = match b.password {
        Patch::Absent => None,
        Patch::Null => return Err(ApiError::validation("password", "must not be null")),
        Patch::Value(p) => {
            validate::password(&p)?;
            Some(p)
        }
    };
    let cur = Raw::from_settings(c.settings.clone());
    let raw = Raw {
        name: not_null("name", b.name, cur.name)?,
        description: nullable(b.description, cur.description),
        server_host: not_null("server_host", b.server_host, cur.server_host)?,
        server_port: Some(not_null("server_port", b.server_port, cur.server_port.unwrap_or_default())?),
        share_name: not_null("share_name", b.share_name, cur.share_name)?,
        base_path: nullable(b.base_path, cur.base_path),
        domain: nullable(b.domain, cur.domain),
        username: not_null("username", b.username, cur.username)?,
        target_path: Some(not_null("target_path", b.target_path, cur.target_path.unwrap_or_default())?),
        sync_direction: Some(not_null("sync_direction", b.sync_direction, cur.sync_direction.unwrap_or_default())?),
        sync_permissions: Some(not_null(
            "sync_permissions",
            b.sync_permissions,
            cur.sync_permissions.unwrap_or_default(),
        )?),
        sync_hidden_files: Some(not_null(
            "sync_hidden_files",
            b.sync_hidden_files,
            cur.sync_hidden_files.unwrap_or_default(),
        )?),
        sync_system_files: Some(not_null(
            "sync_system_files",
            b.sync_system_files,
            cur.sync_system_files.unwrap_or_default(),
        )?),
        include_patterns: nullable(b.include_patterns, cur.include_patterns),
        exclude_patterns: nullable(b.exclude_patterns, cur.exclude_patterns),
        conflict_resolution: Some(not_null(
            "conflict_resolution",
            b.conflict_resolution,
            cur.conflict_resolution.unwrap_or_default(),
        )?),
        sync_interval_minutes: Some(not_null(
            "sync_interval_minutes",
            b.sync_interval_minutes,
            cur.sync_interval_minutes.unwrap_or_default(),
        )?),
        max_delete_percent: Some(not_null(
            "max_delete_percent",
            b.max_delete_percent,
            cur.max_delete_percent.unwrap_or_default(),
        )?),
        worker_pool: Some(not_null("worker_pool", b.worker_pool, cur.worker_pool.unwrap_or_default())?),
    };
    let (settings, segs) = raw.validate()?;
    if settings.target_path != c.settings.target_path {
        ensure_target(&s, &caller, &c.target_share_id, &segs).await?;
    }
    let updated = connectors::update(&s.db, &s.secrets, &c, &settings, password.as_ref()).await?;
    tracing::info!(connector.id = %c.id, credentials_rotated = password.is_some(), "connector updated");
    Ok(Json(updated.into()))
}

/// Deletes a connector and its identity mappings. Content already synced into ScaiDrive
/// stays; the SMB share is not touched.
#[utoipa::path(delete, path = "/api/v1/smb-connectors/{id}", tag = "smb-connectors", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = crate::error::ErrorBody)))]
pub async fn delete_connector(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let c = managed(&s, &caller, &id).await?;
    connectors::delete(&s.db, &c).await?;
    tracing::info!(connector.id = %c.id, "connector deleted");
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"identity_type": "user", "smb_principal": "CORP\\alice", "scaidrive_principal_id": "usr_01J4M"}))]
pub struct CreateMapping {
    /// `user` or `group`.
    pub identity_type: String,
    /// `DOMAIN\name`, `name`, or a SID (`S-1-5-21-…`).
    pub smb_principal: String,
    /// A user (`usr_…`) or group (`grp_…`) of the tenant, matching `identity_type`.
    pub scaidrive_principal_id: String,
}

#[derive(Serialize, ToSchema)]
pub struct MappingResponse {
    /// `map_…`
    pub id: String,
    pub connector_id: String,
    pub identity_type: String,
    /// As given; a SID in its canonical form.
    pub smb_principal: String,
    pub scaidrive_principal_id: String,
    pub created_at: String,
}

impl From<Mapping> for MappingResponse {
    fn from(m: Mapping) -> Self {
        MappingResponse {
            id: m.id.to_string(),
            connector_id: m.connector_id.to_string(),
            identity_type: m.identity_type,
            smb_principal: m.smb_principal,
            scaidrive_principal_id: m.scaidrive_principal_id,
            created_at: rfc3339(m.created_at),
        }
    }
}

/// Maps an SMB principal to a ScaiDrive user or group. Mapping the same principal twice is
/// a 409.
#[utoipa::path(post, path = "/api/v1/smb-connectors/{id}/identity-mappings", tag = "smb-connectors",
    params(("id" = String, Path)), request_body = CreateMapping,
    responses((status = 201, body = MappingResponse), (status = 409, body = crate::error::ErrorBody),
        (status = 422, body = crate::error::ErrorBody)))]
pub async fn create_mapping(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<CreateMapping>,
) -> ApiResult<(StatusCode, Json<MappingResponse>)> {
    let c = managed(&s, &caller, &id).await?;
    let m = mappings::check(&s.db, &caller.tenant_id, &b.identity_type, &b.smb_principal, &b.scaidrive_principal_id)
        .await?;
    let created = mappings::create(&s.db, &caller.tenant_id, &c.id, &m).await?;
    Ok((StatusCode::CREATED, Json(created.into())))
}

#[derive(Serialize, ToSchema)]
pub struct MappingList {
    pub identity_mappings: Vec<MappingResponse>,
    /// Pass as `cursor` for the next page; null at the end.
    pub next_cursor: Option<String>,
}

/// A connector's identity mappings, by id.
#[utoipa::path(get, path = "/api/v1/smb-connectors/{id}/identity-mappings", tag = "smb-connectors",
    params(("id" = String, Path), PageQuery), responses((status = 200, body = MappingList)))]
pub async fn list_mappings(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<MappingList>> {
    let c = managed(&s, &caller, &id).await?;
    let limit = limit(q.limit, 100, 1000)?;
    let list = mappings::list(&s.db, &c.id, q.cursor.as_deref(), limit).await?;
    let next_cursor = if list.len() as i64 == limit { list.last().map(|m| m.id.to_string()) } else { None };
    Ok(Json(MappingList { identity_mappings: list.into_iter().map(Into::into).collect(), next_cursor }))
}

/// Removes an identity mapping.
#[utoipa::path(delete, path = "/api/v1/smb-connectors/{id}/identity-mappings/{map_id}", tag = "smb-connectors",
    params(("id" = String, Path), ("map_id" = String, Path)),
    responses((status = 204), (status = 404, body = crate::error::ErrorBody)))]
pub async fn delete_mapping(
    State(s): State<AppState>,
    caller: Caller,
    Path((id, map_id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let c = managed(&s, &caller, &id).await?;
    mappings::delete(&s.db, &c.id, &map_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize, ToSchema)]
pub struct ImportRow {
    /// The CSV line the row starts on (1-based).
    pub line: usize,
    /// `created`, `skipped` (already mapped) or `rejected`.
    pub status: String,
    /// The new mapping (created) or the existing one (skipped).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mapping_id: Option<String>,
    /// Why the row was skipped or rejected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail>,
}

#[derive(Serialize, ToSchema)]
pub struct ImportReport {
    pub created: usize,
    pub skipped: usize,
    pub rejected: usize,
    pub rows: Vec<ImportRow>,
}

fn detail(e: ApiError) -> ErrorDetail {
    ErrorDetail { code: e.code.to_string(), message: e.message, field: e.field, details: None }
}

/// Imports identity mappings from CSV: rows `smb_principal,scaidrive_principal_id[,identity_type]`
/// (identity_type defaults from the id's prefix), an optional header row, at most 10,000 rows
/// and 1 MiB. Reports per row what was created, skipped (already mapped) or rejected and why.
#[utoipa::path(post, path = "/api/v1/smb-connectors/{id}/identity-mappings/import", tag = "smb-connectors",
    params(("id" = String, Path)),
    request_body(content = String, content_type = "text/csv",
        example = "smb_principal,scaidrive_principal_id,identity_type\nCORP\\alice,usr_01J4M,user\nS-1-5-21-1004336348-1177238915-682003330-512,grp_01J4N,group\n"),
    responses((status = 200, body = ImportReport), (status = 413, body = crate::error::ErrorBody),
        (status = 415, body = crate::error::ErrorBody)))]
pub async fn import_mappings(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<super::extract::LimitedBytes, ApiError>,
) -> ApiResult<Json<ImportReport>> {
    let c = managed(&s, &caller, &id).await?;
    let ct = headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mime = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if mime != "text/csv" && mime != "application/csv" {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            "the request body must be CSV (Content-Type: text/csv)",
        ));
    }
    let super::extract::LimitedBytes(body) = body?;
    let text = std::str::from_utf8(&body).map_err(|_| ApiError::validation("body", "the CSV must be UTF-8"))?;
    let mut records =
        mappings::parse_csv(text).map_err(|(line, m)| ApiError::validation("body", format!("line {line}: {m}")))?;
    let is_header = |f: &[String]| {
        let first = f.first().map(|x| x.trim().to_ascii_lowercase()).unwrap_or_default();
        let second = f.get(1).map(|x| x.trim()).unwrap_or("");
        first.starts_with("smb") && crate::ids::prefix_of(second).is_none()
    };
    if records.first().is_some_and(|(_, f)| is_header(f)) {
        records.remove(0);
    }
    if records.len() > mappings::MAX_IMPORT_ROWS {
        return Err(ApiError::validation(
            "body",
            format!("at most {} rows per import (this CSV has {})", mappings::MAX_IMPORT_ROWS, records.len()),
        )
        .with_code("TOO_MANY_ROWS"));
    }
    let mut rows = Vec::with_capacity(records.len());
    for (line, f) in records {
        let checked = if !(2..=3).contains(&f.len()) {
            Err(ApiError::validation("row", "expected smb_principal,scaidrive_principal_id[,identity_type]")
                .with_code("INVALID_ROW"))
        } else {
            let pid = f[1].trim();
            let itype = match f.get(2).map(|t| t.trim()).filter(|t| !t.is_empty()) {
                Some(t) => t.to_ascii_lowercase(),
                None => match crate::ids::prefix_of(pid) {
                    Some("grp") => "group".to_string(),
                    _ => "user".to_string(),
                },
            };
            match mappings::check(&s.db, &caller.tenant_id, &itype, &f[0], pid).await {
                Err(e) if e.status == StatusCode::UNPROCESSABLE_ENTITY => Err(e),
                other => Ok(other?),
            }
        };
        rows.push((line, checked));
    }
    let outcomes = mappings::import(&s.db, &caller.tenant_id, &c.id, rows).await?;
    let mut report = ImportReport { created: 0, skipped: 0, rejected: 0, rows: Vec::with_capacity(outcomes.len()) };
    for (line, o) in outcomes {
        report.rows.push(match o {
            RowOutcome::Created(id) => {
                report.created += 1;
                ImportRow { line, status: "created".into(), mapping_id: Some(id.to_string()), error: None }
            }
            RowOutcome::Skipped(existing) => {
                report.skipped += 1;
                ImportRow {
                    line,
                    status: "skipped".into(),
                    mapping_id: Some(existing),
                    error: Some(ErrorDetail {
                        code: "ALREADY_EXISTS".into(),
                        message: "this SMB principal is already mapped for this connector".into(),
                        field: Some("smb_principal".into()),
                        details: None,
                    }),
                }
            }
            RowOutcome::Rejected(e) => {
                report.rejected += 1;
                ImportRow { line, status: "rejected".into(), mapping_id: None, error: Some(detail(e)) }
            }
        });
    }
    tracing::info!(connector.id = %c.id, created = report.created, skipped = report.skipped,
        rejected = report.rejected, "identity mappings imported");
    Ok(Json(report))
}
