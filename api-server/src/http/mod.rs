//! The REST API: routes under `/api/v1`, health probes, and the OpenAPI document generated
//! from the handlers' annotations (`/api/v1/openapi.json`). This is the only module that
//! knows HTTP and JSON; request and response types live here, apart from the domain types.

pub mod accounts;
pub mod changes;
pub mod connectors;
pub mod extract;
pub mod files;
pub mod jobs;
pub mod permissions;
pub mod shares;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use utoipa::OpenApi;

use crate::error::ApiError;
use crate::AppState;

/// Largest JSON body accepted (uploads are streamed and not bound by it).
pub const JSON_BODY_LIMIT: usize = 1024 * 1024;

#[derive(OpenApi)]
#[openapi(
    info(title = "ScaiDrive API (with the SMB connector)", version = "1"),
    paths(
        accounts::me, accounts::list_users, accounts::create_user, accounts::list_groups, accounts::create_group,
        accounts::group_members, accounts::add_group_member, accounts::remove_group_member,
        accounts::list_tokens, accounts::create_token, accounts::revoke_token,
        shares::create_share, shares::list_shares, shares::get_share, shares::list_members, shares::add_member,
        shares::remove_member,
        files::create_folder, files::get_item, files::children, files::share_children, files::lookup,
        files::share_trash, files::upload_by_path, files::upload_version, files::download, files::update_item,
        files::delete_item, files::restore_item, files::list_versions, files::download_version,
        files::restore_version, files::create_upload, files::upload_part, files::upload_status,
        files::complete_upload, files::abort_upload,
        permissions::get_acl, permissions::add_entry, permissions::replace_acl, permissions::clear_acl,
        permissions::remove_entry, permissions::effective, permissions::check,
        changes::list_changes,
        jobs::trigger_sync, jobs::list_jobs, jobs::get_job, jobs::cancel_job, jobs::list_file_states,
        jobs::test_connector, jobs::test_unsaved,
        connectors::create_connector, connectors::list_connectors, connectors::get_connector,
        connectors::update_connector, connectors::delete_connector, connectors::create_mapping,
        connectors::list_mappings, connectors::delete_mapping, connectors::import_mappings,
    ),
    components(schemas(crate::error::ErrorBody, crate::error::ErrorDetail)),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The OpenAPI document (like every `/api/v1` path, for authenticated callers).
async fn openapi(_caller: crate::auth::Caller) -> impl IntoResponse {
    Json(ApiDoc::openapi())
}

async fn healthz() -> impl IntoResponse {
    Json(serde_json::json!({"status": "ok"}))
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    if state.db.ping().await {
        (StatusCode::OK, Json(serde_json::json!({"status": "ready"})))
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(serde_json::json!({"status": "unavailable", "reason": "database"})))
    }
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", "no such endpoint")
}

pub fn router(state: AppState) -> Router {
    // Streamed content endpoints take bodies of any size.
    let streaming = Router::new()
        .route("/api/v1/shares/{share_id}/files", put(files::upload_by_path))
        .route("/api/v1/files/{id}/content", put(files::upload_version).get(files::download))
        .route("/api/v1/uploads/{id}", put(files::upload_part).get(files::upload_status).delete(files::abort_upload))
        .layer(DefaultBodyLimit::disable());

    let api = Router::new()
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/users/me", get(accounts::me))
        .route("/api/v1/users", get(accounts::list_users).post(accounts::create_user))
        .route("/api/v1/groups", get(accounts::list_groups).post(accounts::create_group))
        .route("/api/v1/groups/{id}/members", get(accounts::group_members).post(accounts::add_group_member))
        .route("/api/v1/groups/{id}/members/{user_id}", axum::routing::delete(accounts::remove_group_member))
        .route("/api/v1/tokens", get(accounts::list_tokens).post(accounts::create_token))
        .route("/api/v1/tokens/{id}", axum::routing::delete(accounts::revoke_token))
        .route("/api/v1/shares", get(shares::list_shares).post(shares::create_share))
        .route("/api/v1/shares/{id}", get(shares::get_share))
        .route("/api/v1/shares/{id}/members", get(shares::list_members).post(shares::add_member))
        .route("/api/v1/shares/{id}/members/{principal_id}", axum::routing::delete(shares::remove_member))
        .route("/api/v1/shares/{id}/children", get(files::share_children))
        .route("/api/v1/shares/{id}/items", get(files::lookup))
        .route("/api/v1/shares/{id}/trash", get(files::share_trash))
        .route("/api/v1/folders", post(files::create_folder))
        .route("/api/v1/folders/{id}", get(files::get_item).patch(files::update_item).delete(files::delete_item))
        .route("/api/v1/folders/{id}/children", get(files::children))
        .route("/api/v1/folders/{id}/restore", post(files::restore_item))
        .route("/api/v1/files/{id}", get(files::get_item).patch(files::update_item).delete(files::delete_item))
        .route("/api/v1/files/{id}/restore", post(files::restore_item))
        .route("/api/v1/files/{id}/versions", get(files::list_versions))
        .route("/api/v1/files/{id}/versions/{version_id}/content", get(files::download_version))
        .route("/api/v1/files/{id}/versions/{version_id}/restore", post(files::restore_version))
        .route("/api/v1/uploads", post(files::create_upload))
        .route("/api/v1/uploads/{id}/complete", post(files::complete_upload))
        .route(
            "/api/v1/permissions/acl/{resource_type}/{resource_id}",
            get(permissions::get_acl)
                .post(permissions::add_entry)
                .put(permissions::replace_acl)
                .delete(permissions::clear_acl),
        )
        .route(
            "/api/v1/permissions/acl/{resource_type}/{resource_id}/entries/{entry_id}",
            axum::routing::delete(permissions::remove_entry),
        )
        .route("/api/v1/permissions/effective", get(permissions::effective))
        .route("/api/v1/permissions/check", post(permissions::check))
        .route("/api/v1/sync/changes", get(changes::list_changes))
        .merge(connectors::routes())
        .merge(jobs::routes())
        .layer(DefaultBodyLimit::max(JSON_BODY_LIMIT));

    Router::new()
        .merge(api)
        .merge(streaming)
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED", "method not allowed on this endpoint")
        })
        .layer(tower_http::trace::TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
            let route = req
                .extensions()
                .get::<axum::extract::MatchedPath>()
                .map(|p| p.as_str().to_string())
                .unwrap_or_default();
            let span = tracing::info_span!(
                "http.request",
                otel.kind = "server",
                http.method = %req.method(),
                http.route = %route,
                trace_id = tracing::field::Empty,
                span_id = tracing::field::Empty
            );
            telemetry::propagation::adopt_http(&span, req.headers());
            telemetry::propagation::record_ids(&span);
            span
        }))
        .layer(axum::middleware::from_fn(crate::observe::http_metrics))
        .with_state(state)
}

/// A page of a list: the items and the cursor to pass for the next page (`null` at the end).
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Page<T: utoipa::ToSchema> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}
