//! [`SmbShare`]: the engine's [`SmbReplica`] over `smb_layer::SmbClient`, scoped to the
//! connector's `base_path`.
//!
//! Writes are safe: content goes to a temporary name in the target's folder, is checked, and
//! is renamed over the target only after the target was stat'ed again and found as the plan
//! expected; destructive steps re-stat first and refuse if the item changed. Reads stream; a
//! file that changes while it is read fails its stream with `SMB_CHANGED_DURING_READ`, so
//! nothing built from it is committed. Must never hold a whole file in memory.

use async_trait::async_trait;
use futures::StreamExt;
use smb_layer::{SetTimes, SmbClient, SmbError};
use sync_engine::{
    codes, ByteStream, FileTime, ItemKind, RelPath, ReplicaError, SmbExpect, SmbItem, SmbReplica, TempFile,
};

use crate::convert::{smb_item, SmbRoot};

/// Code of a file that changed (size, times or id) while its content was being read.
pub const SMB_CHANGED_DURING_READ: &str = "SMB_CHANGED_DURING_READ";

/// The SMB side of a sync, rooted at `base_path`.
#[derive(Clone, Debug)]
pub struct SmbShare {
    client: SmbClient,
    root: SmbRoot,
}

/// A replica error of an SMB error (its message carries the NT status when there was one).
pub fn replica_error(e: &SmbError) -> ReplicaError {
    let code = match e {
        SmbError::PathNotFound { .. } => codes::NOT_FOUND,
        SmbError::AlreadyExists { .. } => codes::NAME_CONFLICT,
        SmbError::NotADirectory { .. } => codes::KIND_MISMATCH,
        other => other.code(),
    };
    ReplicaError::new(code, e.to_string())
}

/// Temporary files of downloads are named `.~scaidrive-<ulid>.tmp`, beside their target.
pub const TEMP_PREFIX: &str = ".~scaidrive-";
const TEMP_SUFFIX: &str = ".tmp";

/// Whether a file name is one of our temporary files.
pub fn is_temp_name(name: &str) -> bool {
    name.len() > TEMP_PREFIX.len() + TEMP_SUFFIX.len() && name.starts_with(TEMP_PREFIX) && name.ends_with(TEMP_SUFFIX)
}

/// Takes the temporary files of earlier runs out of a scanned snapshot and deletes them on
/// SMB (best effort: what cannot be deleted now is tried again next run). A run that died
/// between writing a temporary file and renaming it over its target (a crash, a kill, a lost
/// lease) leaves one behind; nobody else writes our names. Only files last written before
/// `started` (this run's start, server time) go: a temporary file written right now belongs
/// to a live run of another connector whose base path overlaps this one.
pub async fn sweep_temp_leftovers(
    client: &SmbClient,
    root: &SmbRoot,
    walk: &mut sync_engine::SmbWalk,
    base: &sync_engine::Tracked,
    started: FileTime,
) -> usize {
    let is_temp = |path: &str| is_temp_name(path.rsplit('/').next().unwrap_or(path));
    let mut temps: Vec<RelPath> = walk
        .items
        .values()
        .filter(|i| i.kind == ItemKind::File && is_temp(i.path.as_str()))
        .map(|i| i.path.clone())
        .collect();
    temps.extend(
        (0..base.len())
            .filter(|&i| walk.is_same(i) && base.kind(i) == ItemKind::File && is_temp(base.path(i)))
            .map(|i| base.rel_path(i)),
    );
    let mut removed = 0;
    for p in temps {
        // Never planned: neither side may see it.
        let item = walk.remove(base, p.as_str()).expect("listed above");
        if item.last_write >= started {
            continue;
        }
        match client.delete_file(&root.abs(&p)).await {
            Ok(()) | Err(SmbError::PathNotFound { .. }) => {
                tracing::info!(smb.path = %p, "deleted the temporary file of an earlier run");
                removed += 1;
            }
            Err(e) => {
                tracing::warn!(smb.path = %p, error = %e, "could not delete the temporary file of an earlier run")
            }
        }
    }
    removed
}

impl SmbShare {
    /// A replica over `client` rooted at `base_path` (share-relative).
    pub fn new(client: SmbClient, base_path: &str) -> Self {
        Self::with_root(client, SmbRoot::new(base_path))
    }

    /// A replica over `client` at `root`, sharing what the scan learned of the server's
    /// spelling of names (see [`SmbRoot`]).
    pub fn with_root(client: SmbClient, root: SmbRoot) -> Self {
        SmbShare { client, root }
    }

    /// The client.
    pub fn client(&self) -> &SmbClient {
        &self.client
    }

    /// The root.
    pub fn root(&self) -> &SmbRoot {
        &self.root
    }

    async fn stat_abs(&self, rel: &RelPath) -> Result<Option<SmbItem>, ReplicaError> {
        match self.client.stat(&self.root.abs(rel)).await {
            Ok(e) => Ok(Some(smb_item(rel.clone(), &e))),
            Err(SmbError::PathNotFound { .. }) => Ok(None),
            Err(e) => Err(replica_error(&e)),
        }
    }

    async fn must_stat(&self, rel: &RelPath) -> Result<SmbItem, ReplicaError> {
        self.stat_abs(rel)
            .await?
            .ok_or_else(|| ReplicaError::new(codes::NOT_FOUND, format!("{rel} is not on the SMB share")))
    }

    fn changed(rel: &RelPath, what: &str) -> ReplicaError {
        ReplicaError::new(
            codes::SMB_CHANGED,
            format!("{rel} changed on SMB since it was planned ({what}); retried next run"),
        )
    }
}

#[async_trait]
impl SmbReplica for SmbShare {
    async fn stat(&self, path: &RelPath) -> Result<Option<SmbItem>, ReplicaError> {
        self.stat_abs(path).await
    }

    async fn read(&self, path: &RelPath) -> Result<ByteStream, ReplicaError> {
        match self.open_read(path).await? {
            Some((item, stream)) if item.kind == ItemKind::File => Ok(stream),
            Some(_) => Err(ReplicaError::new(codes::KIND_MISMATCH, format!("{path} is a folder"))),
            None => Err(ReplicaError::new(codes::NOT_FOUND, format!("{path} is not on the SMB share"))),
        }
    }

    /// One open handle for the stat and the content: the layer's `read_checked` asks the
    /// server about the file on the handle at open and, after the last byte and the close,
    /// stats it by path again, failing the stream's end (`SMB_CHANGED_DURING_READ`) if size,
    /// times or id differ. That is what the separate stats before and after each read
    /// checked, with one stat fewer.
    async fn open_read(&self, path: &RelPath) -> Result<Option<(SmbItem, ByteStream)>, ReplicaError> {
        let abs = self.root.abs(path);
        let (entry, inner) = match self.client.read_checked(&abs).await {
            Ok(r) => r,
            Err(SmbError::PathNotFound { .. }) => return Ok(None),
            Err(e) => {
                // Not a file (a folder now): say what is there instead of failing the open.
                return match self.stat_abs(path).await? {
                    Some(item) if item.kind == ItemKind::Dir => Ok(Some((item, futures::stream::empty().boxed()))),
                    None => Ok(None),
                    Some(_) => Err(replica_error(&e)),
                };
            }
        };
        let item = smb_item(path.clone(), &entry);
        if item.reparse {
            return Err(ReplicaError::new(
                codes::REPARSE_POINT,
                format!("{path} is a symbolic link or reparse point; not followed"),
            ));
        }
        Ok(Some((item, inner.map(|r| r.map_err(|e| replica_error(&e))).boxed())))
    }

    async fn write_temp(&self, target: &RelPath, data: ByteStream) -> Result<TempFile, ReplicaError> {
        let name = format!("{TEMP_PREFIX}{}{TEMP_SUFFIX}", ulid::Ulid::new().to_string().to_lowercase());
        let temp = RelPath::child_of(target.parent().as_ref(), &name)
            .map_err(|e| ReplicaError::new("INVALID_PATH", e.to_string()))?;
        let abs = self.root.abs(&temp);
        let failure: std::sync::Arc<std::sync::Mutex<Option<ReplicaError>>> = Default::default();
        let f2 = failure.clone();
        let src = data.map(move |r| {
            crate::crash::point("download");
            r.map_err(|e| {
                let msg = e.to_string();
                *f2.lock().unwrap() = Some(e);
                msg
            })
        });
        let written = match self.client.write_stream(&abs, src).await {
            Ok(n) => n,
            Err(e) => {
                let _ = self.client.delete_file(&abs).await;
                return Err(failure.lock().unwrap().take().unwrap_or_else(|| replica_error(&e)));
            }
        };
        // Verify what landed before anyone may rename it into place.
        match self.client.stat(&abs).await {
            Ok(st) if st.size == written && !st.is_dir => Ok(TempFile { path: temp }),
            Ok(st) => {
                let _ = self.client.delete_file(&abs).await;
                Err(ReplicaError::new(
                    codes::CHECKSUM_MISMATCH,
                    format!("temporary file for {target} has {} bytes, {written} were written", st.size),
                ))
            }
            Err(e) => {
                let _ = self.client.delete_file(&abs).await;
                Err(replica_error(&e))
            }
        }
    }

    async fn commit_temp(
        &self,
        temp: &TempFile,
        target: &RelPath,
        expected: Option<&SmbExpect>,
        last_write: FileTime,
    ) -> Result<SmbItem, ReplicaError> {
        let now = self.stat_abs(target).await?;
        match (expected, &now) {
            (None, Some(_)) => return Err(Self::changed(target, "an item appeared at its path")),
            (Some(_), None) => return Err(Self::changed(target, "it is gone")),
            (Some(e), Some(item)) if !e.matches(item) || item.kind != ItemKind::File => {
                return Err(Self::changed(target, "size, time or file id differ"))
            }
            _ => {}
        }
        crate::crash::point("rename-over");
        self.client
            .rename(&self.root.abs(&temp.path), &self.root.abs(target), expected.is_some())
            .await
            .map_err(|e| replica_error(&e))?;
        crate::crash::point("renamed");
        if last_write.0 != 0 {
            self.client
                .set_times(
                    &self.root.abs(target),
                    SetTimes { last_write: Some(smb_layer::FileTime(last_write.0)), ..Default::default() },
                )
                .await
                .map_err(|e| replica_error(&e))?;
        }
        self.must_stat(target).await
    }

    async fn discard_temp(&self, temp: &TempFile) -> Result<(), ReplicaError> {
        match self.client.delete_file(&self.root.abs(&temp.path)).await {
            Ok(()) | Err(SmbError::PathNotFound { .. }) => Ok(()),
            Err(e) => Err(replica_error(&e)),
        }
    }

    async fn mkdir(&self, path: &RelPath) -> Result<SmbItem, ReplicaError> {
        match self.client.mkdir(&self.root.abs(path)).await {
            Ok(()) | Err(SmbError::AlreadyExists { .. }) => {}
            Err(e) => return Err(replica_error(&e)),
        }
        let item = self.must_stat(path).await?;
        if item.kind != ItemKind::Dir {
            return Err(ReplicaError::new(codes::KIND_MISMATCH, format!("{path} is a file on SMB")));
        }
        Ok(item)
    }

    async fn rename(&self, from: &RelPath, to: &RelPath, expected_file_id: u64) -> Result<SmbItem, ReplicaError> {
        let src = self.must_stat(from).await?;
        if expected_file_id != 0 && src.file_id != expected_file_id {
            return Err(Self::changed(from, "another file is at its path"));
        }
        self.client.rename(&self.root.abs(from), &self.root.abs(to), false).await.map_err(|e| replica_error(&e))?;
        self.must_stat(to).await
    }

    async fn delete(&self, path: &RelPath, kind: ItemKind, expected: Option<&SmbExpect>) -> Result<(), ReplicaError> {
        let Some(now) = self.stat_abs(path).await? else {
            return Ok(());
        };
        if now.kind != kind {
            return Err(Self::changed(path, "it is now a different kind of item"));
        }
        if let Some(e) = expected {
            if !e.matches(&now) {
                return Err(Self::changed(path, "size, time or file id differ"));
            }
        }
        let abs = self.root.abs(path);
        let r = match kind {
            ItemKind::File => self.client.delete_file(&abs).await,
            ItemKind::Dir => self.client.delete_dir(&abs).await,
        };
        match r {
            Ok(()) | Err(SmbError::PathNotFound { .. }) => Ok(()),
            Err(e) => Err(replica_error(&e)),
        }
    }

    async fn set_times(&self, path: &RelPath, last_write: FileTime) -> Result<SmbItem, ReplicaError> {
        self.client
            .set_times(
                &self.root.abs(path),
                SetTimes { last_write: Some(smb_layer::FileTime(last_write.0)), ..Default::default() },
            )
            .await
            .map_err(|e| replica_error(&e))?;
        self.must_stat(path).await
    }
}
