//! [`DriveTarget`]: the engine's [`DriveReplica`] over the gRPC `FileService`, scoped to the
//! connector's target share and `target_path`, every call carrying the lease token.
//!
//! Content streams: an upload sends its header and then chunks of at most 1 MiB as the source
//! yields them (gRPC flow control gives back-pressure); a download verifies size and SHA-256
//! while it streams. A source that fails mid-upload cancels the call, so the server commits
//! nothing. A lease refusal cancels the run (`lease_lost`). Must never buffer a whole file.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use proto::v1;
use sha2::Digest;
use sync_engine::{
    codes, ByteStream, Committed, DownloadHead, DriveItem, DriveReplica, FileTime, NodeId, RelPath, ReplicaError,
    Sha256, UploadSpec, VersionId,
};
use tokio_util::sync::CancellationToken;

use crate::convert::{drive_item, ts_of_ft, DriveRoot};
use crate::rpc::{call_retrying, ControlPlane, RpcError};

/// Largest content chunk of an upload message.
pub const UPLOAD_CHUNK: usize = 1024 * 1024;

/// The ScaiDrive side of a sync.
#[derive(Clone)]
pub struct DriveTarget {
    rpc: ControlPlane,
    lease: v1::LeaseToken,
    share_id: String,
    root: DriveRoot,
    /// Cancelled when a call is refused for a stale or expired lease; also aborts calls.
    lease_lost: CancellationToken,
}

impl DriveTarget {
    /// A replica of `target_path` in `share_id` under `lease`.
    pub fn new(
        rpc: ControlPlane,
        lease: v1::LeaseToken,
        share_id: impl Into<String>,
        target_path: &str,
        lease_lost: CancellationToken,
    ) -> Self {
        DriveTarget { rpc, lease, share_id: share_id.into(), root: DriveRoot::new(target_path), lease_lost }
    }

    /// The root.
    pub fn root(&self) -> &DriveRoot {
        &self.root
    }

    fn lease(&self) -> Option<v1::LeaseToken> {
        Some(self.lease.clone())
    }

    fn path_ref(p: String) -> Option<v1::NodeRef> {
        Some(v1::NodeRef { r#ref: Some(v1::node_ref::Ref::Path(p)) })
    }

    /// The replica error of a failed call; a lease refusal also cancels the run.
    pub fn error(&self, e: RpcError) -> ReplicaError {
        if e.is_lease_lost() {
            self.lease_lost.cancel();
        }
        let code = match e.code() {
            proto::codes::NODE_NOT_FOUND => codes::NOT_FOUND,
            c => c,
        };
        ReplicaError::new(code, e.to_string())
    }

    fn item(&self, n: &v1::Node) -> Result<DriveItem, ReplicaError> {
        let rel = self.root.rel(&n.path).ok_or_else(|| {
            ReplicaError::new(
                "OUTSIDE_TARGET",
                format!("ScaiDrive node {} is at {}, outside the target folder", n.id, n.path),
            )
        })?;
        Ok(drive_item(rel, n))
    }

    fn precondition(base: Option<&VersionId>) -> Option<v1::Precondition> {
        base.map(|v| v1::Precondition { base_version_id: v.0.to_string(), etag: String::new() })
    }

    /// Creates the target folder (and its parents) if missing.
    pub async fn ensure_root(&self) -> Result<(), ReplicaError> {
        if self.root.is_share_root() {
            return Ok(());
        }
        let (parent, name) = self.root.as_str().rsplit_once('/').unwrap_or(("", self.root.as_str()));
        let parent = if parent.is_empty() { "/".to_string() } else { parent.to_string() };
        let fs = self.rpc.fs.clone();
        let req = v1::CreateFolderRequest {
            lease: self.lease(),
            share_id: self.share_id.clone(),
            parent: Self::path_ref(parent),
            name: name.to_string(),
            create_parents: true,
            ..Default::default()
        };
        call_retrying(&self.lease_lost, self.rpc.timeout, 3, || {
            let (mut c, r) = (fs.clone(), req.clone());
            async move { c.create_folder(r).await }
        })
        .await
        .map_err(|e| self.error(e))?;
        Ok(())
    }

    /// Stat by absolute path (`None` when absent).
    pub async fn stat_path(&self, abs: &str) -> Result<Option<v1::Node>, RpcError> {
        let fs = self.rpc.fs.clone();
        let req = v1::StatRequest {
            lease: self.lease(),
            share_id: self.share_id.clone(),
            node: Self::path_ref(abs.to_string()),
        };
        match call_retrying(&self.lease_lost, self.rpc.timeout, 3, || {
            let (mut c, r) = (fs.clone(), req.clone());
            async move { c.stat(r).await }
        })
        .await
        {
            Ok(n) => Ok(Some(n)),
            Err(e) if e.code() == proto::codes::NODE_NOT_FOUND => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Stat by node id.
    pub async fn stat_node(&self, id: &str) -> Result<Option<v1::Node>, RpcError> {
        let fs = self.rpc.fs.clone();
        let req = v1::StatRequest {
            lease: self.lease(),
            share_id: self.share_id.clone(),
            node: Some(v1::NodeRef { r#ref: Some(v1::node_ref::Ref::NodeId(id.to_string())) }),
        };
        match call_retrying(&self.lease_lost, self.rpc.timeout, 3, || {
            let (mut c, r) = (fs.clone(), req.clone());
            async move { c.stat(r).await }
        })
        .await
        {
            Ok(n) => Ok(Some(n)),
            Err(e) if e.code() == proto::codes::NODE_NOT_FOUND => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every live node under the target folder (recursive listing, paged); first runs only.
    pub async fn list_all(&self, mut each: impl FnMut(v1::Node)) -> Result<(), RpcError> {
        let fs = self.rpc.fs.clone();
        let mut page_token = String::new();
        loop {
            let req = v1::ListRequest {
                lease: self.lease(),
                share_id: self.share_id.clone(),
                folder: Self::path_ref(self.root.as_str().to_string()),
                recursive: true,
                include_deleted: false,
                page_size: 5000,
                page_token: page_token.clone(),
            };
            let resp = call_retrying(&self.lease_lost, self.rpc.timeout, 3, || {
                let (mut c, r) = (fs.clone(), req.clone());
                async move { c.list(r).await }
            })
            .await?;
            resp.nodes.into_iter().for_each(&mut each);
            if resp.next_page_token.is_empty() {
                return Ok(());
            }
            page_token = resp.next_page_token;
        }
    }

    /// The change log after `cursor`, page by page; returns the cursor after the last change.
    pub async fn list_changes(&self, cursor: &str, mut each: impl FnMut(Vec<v1::Change>)) -> Result<String, RpcError> {
        let fs = self.rpc.fs.clone();
        let mut cursor = cursor.to_string();
        loop {
            let req = v1::ListChangesRequest {
                lease: self.lease(),
                share_id: self.share_id.clone(),
                cursor: cursor.clone(),
                limit: 5000,
            };
            let resp = call_retrying(&self.lease_lost, self.rpc.timeout, 3, || {
                let (mut c, r) = (fs.clone(), req.clone());
                async move { c.list_changes(r).await }
            })
            .await?;
            each(resp.changes);
            cursor = resp.cursor;
            if !resp.has_more {
                return Ok(cursor);
            }
        }
    }
}

/// Sends `data` as chunks of at most [`UPLOAD_CHUNK`], hashing as they pass (the only hash
/// pass of the worker), and checks the size and, when it was announced, the digest. Without an
/// announced digest, sends it in the trailer once the source ended cleanly: a source that fails
/// (an SMB file that changed while read) never gets a trailer, so nothing is committed.
/// Returns the digest sent. `Err(None)`: the call ended first.
async fn feed(
    tx: &tokio::sync::mpsc::Sender<v1::UploadRequest>,
    mut data: ByteStream,
    expect_size: u64,
    expect_sha: Option<Sha256>,
    path: &RelPath,
) -> Result<Sha256, Option<ReplicaError>> {
    let mut hasher = sha2::Sha256::new();
    let mut sent: u64 = 0;
    while let Some(item) = data.next().await {
        let mut b: Bytes = item.map_err(Some)?;
        hasher.update(&b);
        sent += b.len() as u64;
        if sent > expect_size {
            return Err(Some(ReplicaError::new(
                codes::CHECKSUM_MISMATCH,
                format!("{path}: more bytes than the {expect_size} announced"),
            )));
        }
        while !b.is_empty() {
            let part = b.split_to(b.len().min(UPLOAD_CHUNK));
            let msg = v1::UploadRequest { part: Some(v1::upload_request::Part::Chunk(part.to_vec())) };
            tx.send(msg).await.map_err(|_| None)?;
            crate::crash::point("upload");
        }
    }
    let digest = Sha256(hasher.finalize().into());
    if sent != expect_size || expect_sha.is_some_and(|e| e != digest) {
        return Err(Some(ReplicaError::new(
            codes::CHECKSUM_MISMATCH,
            format!("{path}: the content read ({sent} bytes) does not match the size and SHA-256 planned"),
        )));
    }
    if expect_sha.is_none() {
        let trailer = v1::UploadTrailer { sha256: digest.to_hex() };
        let msg = v1::UploadRequest { part: Some(v1::upload_request::Part::Trailer(trailer)) };
        tx.send(msg).await.map_err(|_| None)?;
    }
    Ok(digest)
}

#[async_trait]
impl DriveReplica for DriveTarget {
    async fn stat(&self, node: &NodeId) -> Result<Option<(DriveItem, bool)>, ReplicaError> {
        match self.stat_node(&node.0).await.map_err(|e| self.error(e))? {
            None => Ok(None),
            Some(n) => match self.root.rel(&n.path) {
                Some(rel) => Ok(Some((drive_item(rel, &n), n.deleted))),
                None => Ok(None),
            },
        }
    }

    async fn upload(&self, spec: &UploadSpec, data: ByteStream) -> Result<Committed, ReplicaError> {
        let header = v1::UploadHeader {
            lease: self.lease(),
            share_id: self.share_id.clone(),
            parent: Self::path_ref(self.root.parent_abs(&spec.path)),
            name: spec.path.name().to_string(),
            size: spec.size,
            sha256: spec.sha256.map(|s| s.to_hex()).unwrap_or_default(),
            modified_at: ts_of_ft(spec.modified_at),
            created_at: None,
            base_version_id: spec.base_version_id.as_ref().map(|v| v.0.to_string()).unwrap_or_default(),
            create_parents: true,
        };
        // The source is fed through a small channel: memory holds a few chunks at most. If the
        // source fails or does not match the announced size and digest, the feeder reports it
        // and the call is dropped before the stream ends, so the server commits nothing.
        let (tx, rx) = tokio::sync::mpsc::channel::<v1::UploadRequest>(2);
        let (fail_tx, mut fail_rx) = tokio::sync::oneshot::channel::<ReplicaError>();
        let expect_size = spec.size;
        let expect_sha = spec.sha256;
        let path = spec.path.clone();
        let sent_digest: std::sync::Arc<std::sync::Mutex<Option<Sha256>>> = Default::default();
        let sent = sent_digest.clone();
        let feeder = tokio::spawn(async move {
            let first = v1::UploadRequest { part: Some(v1::upload_request::Part::Header(header)) };
            if tx.send(first).await.is_err() {
                return;
            }
            match feed(&tx, data, expect_size, expect_sha, &path).await {
                Ok(digest) => {
                    *sent.lock().unwrap() = Some(digest);
                    drop(tx) // ends the request stream: the server may commit
                }
                Err(Some(e)) => {
                    // Keep the stream open: the call is dropped (cancelled) instead of ended.
                    let _ = fail_tx.send(e);
                    std::future::pending::<()>().await;
                }
                Err(None) => {}
            }
        });
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        let mut fs = self.rpc.fs.clone();
        let result = tokio::select! {
            biased;
            _ = self.lease_lost.cancelled() => Err(ReplicaError::new(codes::CANCELLED, "lease lost")),
            Ok(e) = &mut fail_rx => Err(e),
            r = fs.upload(stream) => r.map(|r| r.into_inner()).map_err(|s| self.error(RpcError::from_status(s))),
        };
        feeder.abort();
        let resp = result?;
        let node = resp.node.ok_or_else(|| ReplicaError::new("PROTOCOL_ERROR", "upload reply without a node"))?;
        let item = self.item(&node)?;
        // ScaiDrive verified the digest before committing; this only guards against a reply
        // about other content.
        let sent = *sent_digest.lock().unwrap();
        if item.sha256.is_none() || (sent.is_some() && item.sha256 != sent) {
            return Err(ReplicaError::new(
                codes::CHECKSUM_MISMATCH,
                format!("{}: ScaiDrive reports other content than was sent", spec.path),
            ));
        }
        Ok(Committed { item, unchanged: resp.unchanged })
    }

    async fn create_folder(&self, path: &RelPath, modified_at: FileTime) -> Result<DriveItem, ReplicaError> {
        let fs = self.rpc.fs.clone();
        let req = v1::CreateFolderRequest {
            lease: self.lease(),
            share_id: self.share_id.clone(),
            parent: Self::path_ref(self.root.parent_abs(path)),
            name: path.name().to_string(),
            create_parents: true,
            modified_at: ts_of_ft(modified_at),
            created_at: None,
        };
        let resp = call_retrying(&self.lease_lost, self.rpc.timeout, 3, || {
            let (mut c, r) = (fs.clone(), req.clone());
            async move { c.create_folder(r).await }
        })
        .await
        .map_err(|e| self.error(e))?;
        let node =
            resp.node.ok_or_else(|| ReplicaError::new("PROTOCOL_ERROR", "create-folder reply without a node"))?;
        self.item(&node)
    }

    async fn move_node(
        &self,
        node: &NodeId,
        to: &RelPath,
        base_version_id: Option<&VersionId>,
    ) -> Result<DriveItem, ReplicaError> {
        let fs = self.rpc.fs.clone();
        let req = v1::MoveRequest {
            lease: self.lease(),
            share_id: self.share_id.clone(),
            node_id: node.0.to_string(),
            new_parent: Self::path_ref(self.root.parent_abs(to)),
            new_name: to.name().to_string(),
            precondition: Self::precondition(base_version_id),
        };
        let n = call_retrying(&self.lease_lost, self.rpc.timeout, 3, || {
            let (mut c, r) = (fs.clone(), req.clone());
            async move { c.r#move(r).await }
        })
        .await
        .map_err(|e| self.error(e))?;
        self.item(&n)
    }

    async fn trash(&self, node: &NodeId, base_version_id: Option<&VersionId>) -> Result<(), ReplicaError> {
        let fs = self.rpc.fs.clone();
        let req = v1::DeleteRequest {
            lease: self.lease(),
            share_id: self.share_id.clone(),
            node_id: node.0.to_string(),
            precondition: Self::precondition(base_version_id),
        };
        call_retrying(&self.lease_lost, self.rpc.timeout, 3, || {
            let (mut c, r) = (fs.clone(), req.clone());
            async move { c.delete(r).await }
        })
        .await
        .map_err(|e| self.error(e))?;
        Ok(())
    }

    async fn restore(&self, node: &NodeId, version: Option<&VersionId>) -> Result<DriveItem, ReplicaError> {
        let fs = self.rpc.fs.clone();
        let req = v1::RestoreRequest {
            lease: self.lease(),
            share_id: self.share_id.clone(),
            node_id: node.0.to_string(),
            version_id: version.map(|v| v.0.to_string()).unwrap_or_default(),
            precondition: None,
        };
        let n = call_retrying(&self.lease_lost, self.rpc.timeout, 3, || {
            let (mut c, r) = (fs.clone(), req.clone());
            async move { c.restore(r).await }
        })
        .await
        .map_err(|e| self.error(e))?;
        self.item(&n)
    }

    async fn download(
        &self,
        node: &NodeId,
        version: Option<&VersionId>,
    ) -> Result<(DownloadHead, ByteStream), ReplicaError> {
        let mut fs = self.rpc.fs.clone();
        let req = v1::DownloadRequest {
            lease: self.lease(),
            share_id: self.share_id.clone(),
            node: Some(v1::NodeRef { r#ref: Some(v1::node_ref::Ref::NodeId(node.0.to_string())) }),
            version_id: version.map(|v| v.0.to_string()).unwrap_or_default(),
            offset: 0,
            length: 0,
        };
        let mut stream =
            crate::rpc::call(&self.lease_lost, self.rpc.timeout, fs.download(req)).await.map_err(|e| self.error(e))?;
        let first = tokio::time::timeout(self.rpc.timeout, stream.message())
            .await
            .map_err(|_| ReplicaError::new("CONTROL_PLANE_UNAVAILABLE", "no download header in time"))?
            .map_err(|s| self.error(RpcError::from_status(s)))?;
        let head = match first.and_then(|m| m.part) {
            Some(v1::download_response::Part::Header(h)) => h,
            _ => return Err(ReplicaError::new("PROTOCOL_ERROR", "download did not start with a header")),
        };
        let sha = Sha256::from_hex(&head.sha256)
            .ok_or_else(|| ReplicaError::new("PROTOCOL_ERROR", "download header without a SHA-256"))?;
        let dh = DownloadHead { version_id: VersionId(head.version_id.as_str().into()), size: head.size, sha256: sha };
        let me = Arc::new(self.clone());
        let size = head.size;
        // Verify while streaming: the last item is an error unless size and digest match.
        let state = (stream, sha2::Sha256::new(), 0u64, false, me);
        let body = futures::stream::unfold(state, move |(mut s, mut h, mut n, done, me)| async move {
            if done {
                return None;
            }
            match s.message().await {
                Ok(Some(v1::DownloadResponse { part: Some(v1::download_response::Part::Chunk(c)) })) => {
                    h.update(&c);
                    n += c.len() as u64;
                    Some((Ok(Bytes::from(c)), (s, h, n, false, me)))
                }
                Ok(Some(_)) => {
                    Some((Err(ReplicaError::new("PROTOCOL_ERROR", "unexpected download message")), (s, h, n, true, me)))
                }
                Ok(None) => {
                    let digest = Sha256(h.clone().finalize().into());
                    if n == size && digest == sha {
                        None
                    } else {
                        Some((
                            Err(ReplicaError::new(
                                codes::CHECKSUM_MISMATCH,
                                format!("downloaded {n} bytes not matching the version's size {size} and SHA-256"),
                            )),
                            (s, h, n, true, me),
                        ))
                    }
                }
                Err(st) => {
                    let e = me.error(RpcError::from_status(st));
                    Some((Err(e), (s, h, n, true, me)))
                }
            }
        });
        Ok((dh, body.boxed()))
    }
}
