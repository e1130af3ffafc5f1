//! The change log, as ScaiDrive's sync clients read it.

use std::collections::{HashMap, HashSet};

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::extract::{limit, ApiQuery};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::perm;
use crate::store::acl::{self, share_resource};
use crate::store::changes::{self, Change};
use crate::store::shares;
use crate::time::rfc3339;
use crate::AppState;

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ChangesQuery {
    /// Only this share's changes (READ needed); default: every share the caller is a member of.
    pub share_id: Option<String>,
    /// Where the previous page ended (opaque; absent or 0 for the beginning).
    pub cursor: Option<String>,
    /// 1–5000, default 1000.
    pub limit: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct ActorResponse {
    /// `user` or `connector`.
    #[serde(rename = "type")]
    pub kind: String,
    pub id: String,
}

#[derive(Serialize, ToSchema)]
pub struct ChangeResponse {
    pub id: String,
    pub position: i64,
    /// `created`, `updated`, `deleted`, `moved` or `renamed`.
    #[serde(rename = "type")]
    pub change_type: String,
    pub share_id: String,
    pub node_id: String,
    /// `file` or `folder`.
    pub node_type: String,
    pub name: String,
    pub parent_id: String,
    pub path: String,
    pub old_parent_id: Option<String>,
    pub old_path: Option<String>,
    pub version_id: Option<String>,
    pub size: Option<i64>,
    pub sha256: Option<String>,
    pub actor: ActorResponse,
    pub created_at: String,
}

impl From<Change> for ChangeResponse {
    fn from(c: Change) -> Self {
        ChangeResponse {
            id: c.id,
            position: c.position,
            change_type: c.change_type,
            share_id: c.share_id,
            node_id: c.node_id,
            node_type: c.node_type,
            name: c.name,
            parent_id: c.parent_id,
            path: c.path,
            old_parent_id: c.old_parent_id,
            old_path: c.old_path,
            version_id: c.version_id,
            size: c.size,
            sha256: c.sha256,
            actor: ActorResponse { kind: c.actor_type, id: c.actor_id },
            created_at: rfc3339(c.created_at),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct ChangesPage {
    pub changes: Vec<ChangeResponse>,
    /// Pass back as `cursor` to continue (an integer; treat it as opaque).
    pub cursor: i64,
    pub has_more: bool,
}

/// Changes after a cursor, oldest first.
#[utoipa::path(get, path = "/api/v1/sync/changes", tag = "sync", params(ChangesQuery),
    responses((status = 200, body = ChangesPage)))]
pub async fn list_changes(
    State(s): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ChangesQuery>,
) -> ApiResult<Json<ChangesPage>> {
    let limit = limit(q.limit, 1000, 5000)?;
    let cursor = match q.cursor.as_deref() {
        None | Some("") => 0,
        Some(c) => c
            .parse::<i64>()
            .ok()
            .filter(|c| *c >= 0)
            .ok_or_else(|| ApiError::validation("cursor", "not a cursor this server issued"))?,
    };
    let share_ids = match &q.share_id {
        Some(id) => {
            let share = shares::get(&s.db, &caller.tenant_id, id).await?;
            acl::require(&s.db, &caller, &share_resource(share.id.as_str()), perm::READ).await?;
            vec![share.id.to_string()]
        }
        None => shares::list_visible(&s.db, &caller).await?.into_iter().map(|s| s.id.to_string()).collect(),
    };
    let (list, next, has_more) = changes::list(&s.db, &caller.tenant_id, &share_ids, cursor, limit).await?;
    // The cursor still moves past changes filtered out: a page may be short, even empty,
    // while `has_more` says whether to go on.
    let list = readable_only(&s, &caller, list).await?;
    Ok(Json(ChangesPage { changes: list.into_iter().map(Into::into).collect(), cursor: next, has_more }))
}

/// Keeps the changes of items the caller may READ now, made in folders the caller may READ
/// now (READ on the share is not enough: a folder may be closed to the caller, and its items'
/// names and metadata with it). A move out of a folder the caller may not read keeps its
/// change but not where it came from, so a client sees the item appear.
async fn readable_only(s: &AppState, caller: &Caller, list: Vec<Change>) -> ApiResult<Vec<Change>> {
    let who = acl::Who::from(caller);
    if who.is_admin || list.is_empty() {
        return Ok(list);
    }
    let mut per_share: HashMap<&str, Vec<String>> = HashMap::new();
    for c in &list {
        let ids = per_share.entry(c.share_id.as_str()).or_default();
        ids.push(c.node_id.clone());
        for p in [Some(&c.parent_id), c.old_parent_id.as_ref()].into_iter().flatten() {
            if *p != c.share_id {
                ids.push(p.clone());
            }
        }
    }
    let mut ok: HashSet<String> = HashSet::new();
    for (share, ids) in &per_share {
        ok.extend(acl::readable(&s.db, &who, share, ids).await?);
    }
    Ok(list
        .into_iter()
        // The item, and the folder it was in at that change (its path names it).
        .filter(|c| ok.contains(&c.node_id) && (c.parent_id == c.share_id || ok.contains(&c.parent_id)))
        .map(|mut c| {
            if c.old_parent_id.as_ref().is_some_and(|p| *p != c.share_id && !ok.contains(p)) {
                c.old_parent_id = None;
                c.old_path = None;
            }
            c
        })
        .collect())
}
