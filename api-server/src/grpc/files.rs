//! `FileService`: the ScaiDrive operations of a sync, for the lease holder of a connector,
//! inside its target share. Writes act as the connector and are fenced by the lease.

use std::pin::Pin;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use proto::v1;
use tonic::{Code, Request, Response, Status, Streaming};

use super::{from_api, from_ts, invalid, scope, status, ts, Scope};
use crate::content;
use crate::paths;
use crate::store::changes;
use crate::store::nodes::{self, Expect, Kind, Node, Target};
use crate::AppState;

pub struct Files {
    state: AppState,
}

impl Files {
    pub fn new(state: AppState) -> Self {
        Self { state }
    }
}

/// A node as the contract shows it; `path` and `deleted` as located now.
pub fn node_msg(n: &Node, path: String, in_trash: bool) -> v1::Node {
    v1::Node {
        id: n.id.clone(),
        share_id: n.share_id.clone(),
        parent_id: n.parent_id.clone(),
        name: n.name.clone(),
        path,
        kind: if n.kind == Kind::Folder { v1::NodeKind::Folder } else { v1::NodeKind::File } as i32,
        size: n.size as u64,
        sha256: n.sha256.clone().unwrap_or_default(),
        current_version_id: n.current_version_id.clone().unwrap_or_default(),
        modified_at: Some(ts(n.modified_at)),
        created_at: Some(ts(n.created_at)),
        deleted: in_trash || n.deleted_at.is_some(),
        etag: n.last_change.to_string(),
    }
}

async fn located(state: &AppState, n: Node) -> Result<v1::Node, Status> {
    let loc = nodes::locate(&state.db, &n.id).await.map_err(from_api)?;
    Ok(node_msg(&n, loc.path, loc.in_trash))
}

/// A node of the scope's share by id or path; `Ok(None)` is the share root.
async fn resolve(state: &AppState, sc: &Scope, r: Option<&v1::NodeRef>, field: &str) -> Result<Option<Node>, Status> {
    match r.and_then(|r| r.r#ref.as_ref()) {
        None => Err(invalid(field, "a node id or path is required")),
        Some(v1::node_ref::Ref::NodeId(id)) => {
            if id == &sc.share_id {
                return Ok(None);
            }
            let n = nodes::get(&state.db, &sc.tenant, id).await.map_err(from_api)?;
            if n.share_id != sc.share_id {
                return Err(status(
                    Code::PermissionDenied,
                    proto::codes::OUTSIDE_SCOPE,
                    "the node is outside the target share",
                ));
            }
            Ok(Some(n))
        }
        Some(v1::node_ref::Ref::Path(p)) => {
            let segs = paths::segments(field, p).map_err(from_api)?;
            nodes::lookup_path(&state.db, &sc.share_id, &segs).await.map_err(from_api)
        }
    }
}

/// The folder id a reference names (the share id for the root), creating missing folders of
/// a path when asked.
async fn folder_id(
    state: &AppState,
    sc: &Scope,
    r: Option<&v1::NodeRef>,
    create: bool,
    field: &str,
) -> Result<String, Status> {
    if let (true, Some(v1::node_ref::Ref::Path(p))) = (create, r.and_then(|r| r.r#ref.as_ref())) {
        let segs = paths::segments(field, p).map_err(from_api)?;
        return nodes::ensure_folders(&state.db, &sc.tenant, &sc.actor, &sc.share_id, &segs).await.map_err(from_api);
    }
    match resolve(state, sc, r, field).await? {
        None => Ok(sc.share_id.clone()),
        Some(n) if n.kind == Kind::Folder => Ok(n.id),
        Some(_) => {
            Err(status(Code::FailedPrecondition, proto::codes::NODE_KIND_MISMATCH, "a file where a folder is needed"))
        }
    }
}

fn check_precondition(n: &Node, p: Option<&v1::Precondition>) -> Result<(), Status> {
    let Some(p) = p else { return Ok(()) };
    let version_ok =
        p.base_version_id.is_empty() || n.current_version_id.as_deref() == Some(p.base_version_id.as_str());
    let etag_ok = p.etag.is_empty() || p.etag == n.last_change.to_string();
    if version_ok && etag_ok {
        return Ok(());
    }
    let mut metadata = std::collections::HashMap::new();
    metadata.insert("current_version_id".to_string(), n.current_version_id.clone().unwrap_or_default());
    metadata.insert("current_etag".to_string(), n.last_change.to_string());
    Err(proto::error_status(
        Code::Aborted,
        &v1::ErrorDetail {
            code: proto::codes::VERSION_CONFLICT.into(),
            message: "the node changed since the state this write is based on".into(),
            field: String::new(),
            metadata,
        },
    ))
}

fn change_type(t: &str) -> v1::ChangeType {
    match t {
        "created" => v1::ChangeType::Created,
        "updated" => v1::ChangeType::Updated,
        "deleted" => v1::ChangeType::Deleted,
        "moved" => v1::ChangeType::Moved,
        "renamed" => v1::ChangeType::Renamed,
        _ => v1::ChangeType::Unspecified,
    }
}

type ByteResult = Result<v1::DownloadResponse, Status>;

#[tonic::async_trait]
impl v1::file_service_server::FileService for Files {
    async fn list_changes(
        &self,
        req: Request<v1::ListChangesRequest>,
    ) -> Result<Response<v1::ListChangesResponse>, Status> {
        let r = req.into_inner();
        let sc = scope(&self.state, r.lease.as_ref(), Some(&r.share_id)).await?;
        let limit = match r.limit {
            0 => 1000,
            n @ 1..=5000 => n as i64,
            _ => return Err(invalid("limit", "must be between 1 and 5000")),
        };
        let cursor = if r.cursor.is_empty() {
            0
        } else {
            r.cursor.parse::<i64>().map_err(|_| invalid("cursor", "not a cursor this server issued"))?
        };
        let (list, next, has_more) =
            changes::list(&self.state.db, &sc.tenant, std::slice::from_ref(&sc.share_id), cursor, limit)
                .await
                .map_err(from_api)?;
        let changes = list
            .into_iter()
            .map(|c| v1::Change {
                change_id: c.id,
                r#type: change_type(&c.change_type) as i32,
                node: Some(v1::Node {
                    id: c.node_id,
                    share_id: c.share_id,
                    parent_id: c.parent_id,
                    name: c.name,
                    path: c.path,
                    kind: if c.node_type == "folder" { v1::NodeKind::Folder } else { v1::NodeKind::File } as i32,
                    size: c.size.unwrap_or(0) as u64,
                    sha256: c.sha256.unwrap_or_default(),
                    current_version_id: c.version_id.unwrap_or_default(),
                    modified_at: None,
                    created_at: None,
                    deleted: c.change_type == "deleted",
                    etag: c.position.to_string(),
                }),
                previous_path: c.old_path.unwrap_or_default(),
                occurred_at: Some(ts(c.created_at)),
                actor_id: c.actor_id,
            })
            .collect();
        Ok(Response::new(v1::ListChangesResponse { changes, cursor: next.to_string(), has_more }))
    }

    async fn stat(&self, req: Request<v1::StatRequest>) -> Result<Response<v1::Node>, Status> {
        let r = req.into_inner();
        let sc = scope(&self.state, r.lease.as_ref(), Some(&r.share_id)).await?;
        match resolve(&self.state, &sc, r.node.as_ref(), "node").await? {
            Some(n) => Ok(Response::new(located(&self.state, n).await?)),
            None => Ok(Response::new(v1::Node {
                id: sc.share_id.clone(),
                share_id: sc.share_id,
                path: "/".into(),
                kind: v1::NodeKind::Folder as i32,
                ..Default::default()
            })),
        }
    }

    async fn list(&self, req: Request<v1::ListRequest>) -> Result<Response<v1::ListResponse>, Status> {
        let r = req.into_inner();
        let sc = scope(&self.state, r.lease.as_ref(), Some(&r.share_id)).await?;
        let limit = match r.page_size {
            0 => 1000,
            n @ 1..=5000 => n as i64,
            _ => return Err(invalid("page_size", "must be between 1 and 5000")),
        };
        let (folder, base_path) = match resolve(&self.state, &sc, r.folder.as_ref(), "folder").await? {
            None => (sc.share_id.clone(), String::new()),
            Some(n) if n.kind == Kind::Folder => {
                let p = nodes::locate(&self.state.db, &n.id).await.map_err(from_api)?.path;
                (n.id, p)
            }
            Some(_) => return Err(status(Code::FailedPrecondition, proto::codes::NODE_KIND_MISMATCH, "not a folder")),
        };
        let base = base_path.trim_end_matches('/').to_string();
        let (nodes_out, next) = if r.recursive {
            let page = nodes::subtree(&self.state.db, &folder, &r.page_token, r.include_deleted, limit)
                .await
                .map_err(from_api)?;
            let next = if page.len() as i64 == limit { page.last().map(|(_, p)| p.clone()) } else { None };
            let out =
                page.into_iter().map(|(n, rel)| node_msg(&n, format!("{base}{rel}"), n.deleted_at.is_some())).collect();
            (out, next)
        } else {
            let page = nodes::children(&self.state.db, &folder, Some(&r.page_token), limit).await.map_err(from_api)?;
            let next = if page.len() as i64 == limit { page.last().map(|n| n.name.clone()) } else { None };
            let out = page.iter().map(|n| node_msg(n, format!("{base}/{}", n.name), false)).collect();
            (out, next)
        };
        Ok(Response::new(v1::ListResponse { nodes: nodes_out, next_page_token: next.unwrap_or_default() }))
    }

    async fn upload(&self, req: Request<Streaming<v1::UploadRequest>>) -> Result<Response<v1::UploadResponse>, Status> {
        let mut stream = req.into_inner();
        let header = match stream.message().await? {
            Some(v1::UploadRequest { part: Some(v1::upload_request::Part::Header(h)) }) => h,
            _ => return Err(invalid("header", "the first message must be the upload header")),
        };
        let sc = scope(&self.state, header.lease.as_ref(), Some(&header.share_id)).await?;
        let name = paths::name("header.name", &header.name).map_err(from_api)?;
        // Either the header announces the digest, or a trailer after the last chunk does.
        let trailer_expected = header.sha256.is_empty();
        if !trailer_expected && header.sha256.len() != 64 {
            return Err(invalid("header.sha256", "must be a SHA-256 in lowercase hex"));
        }
        let parent =
            folder_id(&self.state, &sc, header.parent.as_ref(), header.create_parents, "header.parent").await?;
        let trailer: std::sync::Arc<std::sync::Mutex<Option<String>>> = Default::default();
        let seen = trailer.clone();
        // A message out of protocol is the sender's error (INVALID_ARGUMENT), not an aborted
        // upload (the stream failing by itself, CANCELLED): remember which it was.
        let violation: std::sync::Arc<std::sync::Mutex<Option<(&'static str, &'static str)>>> = Default::default();
        let broke = violation.clone();
        let body = stream.map(move |m| {
            let refuse = |field: &'static str, msg: &'static str| {
                *broke.lock().expect("unpoisoned") = Some((field, msg));
                Err(Status::invalid_argument(msg))
            };
            if seen.lock().expect("unpoisoned").is_some() {
                return refuse("trailer", "nothing may follow the upload trailer");
            }
            match m {
                Ok(v1::UploadRequest { part: Some(v1::upload_request::Part::Chunk(c)) }) => Ok(Bytes::from(c)),
                Ok(v1::UploadRequest { part: Some(v1::upload_request::Part::Trailer(t)) }) if trailer_expected => {
                    *seen.lock().expect("unpoisoned") = Some(t.sha256);
                    Ok(Bytes::new())
                }
                Ok(_) => refuse(
                    "part",
                    "only content chunks may follow the header (and a trailer, if the header has no sha256)",
                ),
                Err(e) => Err(e),
            }
        });
        let ingested = content::ingest(self.state.content.as_ref(), Box::pin(body), Some(header.size)).await.map_err(
            |e| match e {
                content::ContentError::TooLarge => {
                    status(Code::InvalidArgument, proto::codes::CHECKSUM_MISMATCH, "more bytes than the header's size")
                }
                content::ContentError::Body(m) => match *violation.lock().expect("unpoisoned") {
                    Some((field, msg)) => invalid(field, msg),
                    None => status(Code::Cancelled, "UPLOAD_ABORTED", format!("the upload stream failed: {m}")),
                },
                other => from_api(other.into()),
            },
        )?;
        let announced = if trailer_expected {
            // No trailer: the sender did not vouch for the content (it ended the stream
            // without one), so nothing is committed.
            trailer.lock().expect("unpoisoned").take().ok_or_else(|| {
                status(
                    Code::InvalidArgument,
                    proto::codes::CHECKSUM_MISMATCH,
                    "the upload ended without the trailer its header announced",
                )
            })?
        } else {
            header.sha256.clone()
        };
        if ingested.size != header.size || ingested.sha256 != announced {
            return Err(status(
                Code::InvalidArgument,
                proto::codes::CHECKSUM_MISMATCH,
                format!("received {} bytes with another checksum than the one announced", ingested.size),
            ));
        }
        let existing = nodes::child(&self.state.db, &parent, &name).await.map_err(from_api)?;
        // The content is already the current version: a retry after a lost reply, or a run
        // taking over from one that died (or froze) between its upload and recording it, whose
        // base is then that very version. Whatever the base, a second identical version would
        // only duplicate it.
        if let Some(ex) = &existing {
            if ex.kind == Kind::File
                && ex.sha256.as_deref() == Some(announced.as_str())
                && ex.size as u64 == header.size
            {
                let node = located(&self.state, ex.clone()).await?;
                return Ok(Response::new(v1::UploadResponse { node: Some(node), unchanged: true }));
            }
        }
        let expect =
            if header.base_version_id.is_empty() { Expect::Absent } else { Expect::Version(&header.base_version_id) };
        let c = nodes::commit_content(
            &self.state.db,
            &sc.tenant,
            &sc.actor,
            &sc.share_id,
            Target::Named { parent_id: &parent, name: &name },
            &ingested,
            expect,
            header.modified_at.as_ref().map(from_ts),
        )
        .await
        .map_err(from_api)?;
        Ok(Response::new(v1::UploadResponse { node: Some(node_msg(&c.node, c.path, false)), unchanged: false }))
    }

    type DownloadStream = Pin<Box<dyn Stream<Item = ByteResult> + Send>>;

    async fn download(&self, req: Request<v1::DownloadRequest>) -> Result<Response<Self::DownloadStream>, Status> {
        let r = req.into_inner();
        let sc = scope(&self.state, r.lease.as_ref(), Some(&r.share_id)).await?;
        let n = resolve(&self.state, &sc, r.node.as_ref(), "node")
            .await?
            .ok_or_else(|| invalid("node", "the root is not a file"))?;
        if n.kind != Kind::File {
            return Err(status(Code::FailedPrecondition, proto::codes::NODE_KIND_MISMATCH, "not a file"));
        }
        let vid = if r.version_id.is_empty() {
            n.current_version_id.clone().unwrap_or_default()
        } else {
            r.version_id.clone()
        };
        let v = nodes::version(&self.state.db, &n.id, &vid).await.map_err(from_api)?;
        let size = v.size as u64;
        if r.offset > size || (r.offset == size && size > 0 && r.length > 0) {
            return Err(status(
                Code::OutOfRange,
                proto::codes::RANGE_NOT_SATISFIABLE,
                "the offset is beyond the end of the file",
            ));
        }
        let end = if r.length == 0 { size } else { r.offset.saturating_add(r.length).min(size) };
        let chunks = nodes::version_chunks(&self.state.db, &v.id).await.map_err(from_api)?;
        let header = v1::DownloadResponse {
            part: Some(v1::download_response::Part::Header(v1::DownloadHeader {
                node: Some(located(&self.state, n).await?),
                version_id: v.id.clone(),
                size,
                sha256: v.sha256.clone(),
                offset: r.offset,
                length: end - r.offset,
            })),
        };
        let body = content::read_range(self.state.content.clone(), chunks, r.offset, end).flat_map(|piece| {
            let parts: Vec<ByteResult> = match piece {
                Ok(b) => split(b, 1 << 20)
                    .into_iter()
                    .map(|c| Ok(v1::DownloadResponse { part: Some(v1::download_response::Part::Chunk(c.to_vec())) }))
                    .collect(),
                Err(e) => vec![Err(from_api(e.into()))],
            };
            futures::stream::iter(parts)
        });
        Ok(Response::new(Box::pin(futures::stream::once(async { Ok(header) }).chain(body))))
    }

    async fn create_folder(
        &self,
        req: Request<v1::CreateFolderRequest>,
    ) -> Result<Response<v1::CreateFolderResponse>, Status> {
        let r = req.into_inner();
        let sc = scope(&self.state, r.lease.as_ref(), Some(&r.share_id)).await?;
        let name = paths::name("name", &r.name).map_err(from_api)?;
        let parent = folder_id(&self.state, &sc, r.parent.as_ref(), r.create_parents, "parent").await?;
        if let Some(ex) = nodes::child(&self.state.db, &parent, &name).await.map_err(from_api)? {
            if ex.kind == Kind::Folder {
                return Ok(Response::new(v1::CreateFolderResponse {
                    node: Some(located(&self.state, ex).await?),
                    created: false,
                }));
            }
            return Err(status(Code::AlreadyExists, proto::codes::NAME_CONFLICT, "a file of that name exists"));
        }
        let n = nodes::create_folder(&self.state.db, &sc.tenant, &sc.actor, &sc.share_id, &parent, &name)
            .await
            .map_err(from_api)?;
        let n = match r.modified_at.as_ref() {
            Some(t) => {
                nodes::set_times(&self.state.db, &sc.tenant, &sc.actor, &n, from_ts(t)).await.map_err(from_api)?
            }
            None => n,
        };
        Ok(Response::new(v1::CreateFolderResponse { node: Some(located(&self.state, n).await?), created: true }))
    }

    async fn r#move(&self, req: Request<v1::MoveRequest>) -> Result<Response<v1::Node>, Status> {
        let r = req.into_inner();
        let sc = scope(&self.state, r.lease.as_ref(), Some(&r.share_id)).await?;
        let n = by_id(&self.state, &sc, &r.node_id).await?;
        check_precondition(&n, r.precondition.as_ref())?;
        let parent = match r.new_parent.as_ref() {
            None => None,
            Some(p) => Some(folder_id(&self.state, &sc, Some(p), false, "new_parent").await?),
        };
        let name =
            if r.new_name.is_empty() { None } else { Some(paths::name("new_name", &r.new_name).map_err(from_api)?) };
        let out =
            nodes::rename_move(&self.state.db, &sc.tenant, &sc.actor, &n, name.as_deref(), parent.as_deref(), None)
                .await
                .map_err(from_api)?;
        Ok(Response::new(located(&self.state, out).await?))
    }

    async fn delete(&self, req: Request<v1::DeleteRequest>) -> Result<Response<v1::Node>, Status> {
        let r = req.into_inner();
        let sc = scope(&self.state, r.lease.as_ref(), Some(&r.share_id)).await?;
        let n = by_id(&self.state, &sc, &r.node_id).await?;
        if nodes::locate(&self.state.db, &n.id).await.map_err(from_api)?.in_trash {
            return Ok(Response::new(located(&self.state, n).await?));
        }
        check_precondition(&n, r.precondition.as_ref())?;
        let out = nodes::delete(&self.state.db, &sc.tenant, &sc.actor, &n, None).await.map_err(from_api)?;
        Ok(Response::new(located(&self.state, out).await?))
    }

    async fn restore(&self, req: Request<v1::RestoreRequest>) -> Result<Response<v1::Node>, Status> {
        let r = req.into_inner();
        let sc = scope(&self.state, r.lease.as_ref(), Some(&r.share_id)).await?;
        let mut n = by_id(&self.state, &sc, &r.node_id).await?;
        check_precondition(&n, r.precondition.as_ref())?;
        // Trashed ancestors come back first, the top-most first.
        let loc = nodes::locate(&self.state.db, &n.id).await.map_err(from_api)?;
        for id in loc.ancestry.iter().rev() {
            let a = nodes::get(&self.state.db, &sc.tenant, id).await.map_err(from_api)?;
            if a.deleted_at.is_some() {
                let back = nodes::restore(&self.state.db, &sc.tenant, &sc.actor, &a).await.map_err(from_api)?;
                if back.id == n.id {
                    n = back;
                }
            }
        }
        if !r.version_id.is_empty() {
            let v = nodes::version(&self.state.db, &n.id, &r.version_id).await.map_err(from_api)?;
            n = nodes::restore_version(&self.state.db, &sc.tenant, &sc.actor, &n, &v).await.map_err(from_api)?.node;
        }
        Ok(Response::new(located(&self.state, n).await?))
    }

    async fn set_times(&self, req: Request<v1::SetTimesRequest>) -> Result<Response<v1::Node>, Status> {
        let r = req.into_inner();
        let sc = scope(&self.state, r.lease.as_ref(), Some(&r.share_id)).await?;
        let n = by_id(&self.state, &sc, &r.node_id).await?;
        check_precondition(&n, r.precondition.as_ref())?;
        let out = match r.modified_at.as_ref() {
            Some(t) => {
                nodes::set_times(&self.state.db, &sc.tenant, &sc.actor, &n, from_ts(t)).await.map_err(from_api)?
            }
            None => n,
        };
        Ok(Response::new(located(&self.state, out).await?))
    }
}

async fn by_id(state: &AppState, sc: &Scope, id: &str) -> Result<Node, Status> {
    if id.is_empty() {
        return Err(invalid("node_id", "a node id is required"));
    }
    let n = nodes::get(&state.db, &sc.tenant, id).await.map_err(from_api)?;
    if n.share_id != sc.share_id {
        return Err(status(
            Code::PermissionDenied,
            proto::codes::OUTSIDE_SCOPE,
            "the node is outside the target share",
        ));
    }
    Ok(n)
}

fn split(b: Bytes, max: usize) -> Vec<Bytes> {
    let mut out = Vec::with_capacity(b.len() / max + 1);
    let mut b = b;
    while b.len() > max {
        out.push(b.split_to(max));
    }
    if !b.is_empty() {
        out.push(b);
    }
    out
}
