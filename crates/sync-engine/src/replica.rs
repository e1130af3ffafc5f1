//! The three traits the executor works through: the SMB share, the ScaiDrive target folder and
//! the store of synced states. The sync-worker implements them over `smb-layer` and the gRPC
//! `FileService`/`ControlPlane`; [`crate::testing`] implements them in memory.
//!
//! Every path is relative to the sync root (SMB `base_path`, ScaiDrive `target_path`). No
//! method buffers a whole file: content moves as a [`ByteStream`].

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

use crate::model::{DriveItem, FileTime, ItemKind, NodeId, RelPath, Sha256, SmbItem, SyncedState, VersionId};

/// File content as a stream of chunks.
pub type ByteStream = BoxStream<'static, Result<Bytes, ReplicaError>>;

/// A failed replica operation: a stable machine code (the proto `ErrorDetail.code`, e.g.
/// `SMB_SHARING_VIOLATION`, `VERSION_CONFLICT`) and a human message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ReplicaError {
    /// Stable SCREAMING_SNAKE_CASE code.
    pub code: String,
    /// Human-readable, never containing secrets.
    pub message: String,
}

impl ReplicaError {
    /// A new error.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        ReplicaError { code: code.into(), message: message.into() }
    }
}

/// Codes the engine itself produces or interprets.
pub mod codes {
    /// The item is not there.
    pub const NOT_FOUND: &str = "NOT_FOUND";
    /// A name is taken.
    pub const NAME_CONFLICT: &str = "NAME_CONFLICT";
    /// ScaiDrive's current version is not the base version the plan saw (re-plan next run).
    pub const VERSION_CONFLICT: &str = "VERSION_CONFLICT";
    /// The bytes sent or received do not have the announced SHA-256 or size.
    pub const CHECKSUM_MISMATCH: &str = "CHECKSUM_MISMATCH";
    /// The SMB item is no longer what the plan saw (changed while syncing); retried next run.
    pub const SMB_CHANGED: &str = "SMB_CHANGED_DURING_SYNC";
    /// A file where a folder is needed or the reverse.
    pub const KIND_MISMATCH: &str = "NODE_KIND_MISMATCH";
    /// The run was cancelled.
    pub const CANCELLED: &str = "CANCELLED";
    /// SMB reparse point (symlink, junction): not followed.
    pub const REPARSE_POINT: &str = "SMB_REPARSE_POINT";
    /// Two ScaiDrive names differ only in case: one syncs, this one is reported.
    pub const CASE_CONFLICT: &str = "NAME_CASE_CONFLICT";
    /// The delete guard blocked the run's destructive actions.
    pub const DELETE_GUARD: &str = "DELETE_GUARD_TRIGGERED";
}

/// What an SMB item must still look like for a destructive step to go ahead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmbExpect {
    /// File id (0 = do not check).
    pub file_id: u64,
    /// Size.
    pub size: u64,
    /// LastWriteTime.
    pub last_write: FileTime,
}

impl SmbExpect {
    /// The expectation that `item` is unchanged.
    pub fn of(item: &SmbItem) -> Self {
        SmbExpect { file_id: item.file_id, size: item.size, last_write: item.last_write }
    }

    /// Whether `item` still matches.
    pub fn matches(&self, item: &SmbItem) -> bool {
        (self.file_id == 0 || self.file_id == item.file_id)
            && self.size == item.size
            && self.last_write == item.last_write
    }
}

/// Name prefix of the executor's temporary files on SMB. The planner ignores such items, and
/// [`SmbReplica::delete`] of a folder removes leftovers of a crashed run first.
pub const TEMP_PREFIX: &str = ".~scaidrive-sync-";

/// A temporary file written next to its target, not yet visible under the target name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TempFile {
    /// Its path (same folder as the target).
    pub path: RelPath,
}

/// The SMB share.
#[async_trait]
pub trait SmbReplica: Send + Sync {
    /// The item at `path` now, or `None`.
    async fn stat(&self, path: &RelPath) -> Result<Option<SmbItem>, ReplicaError>;

    /// Streams a file's content.
    async fn read(&self, path: &RelPath) -> Result<ByteStream, ReplicaError>;

    /// Opens a file for one consistent read: the file as it is when opened (`None` if it is
    /// not there), and its content. The stream must end with an error (not cleanly) if the
    /// file's size, times or id after the last byte differ from those returned, so that a
    /// consumer that commits only on a clean end never commits torn content.
    ///
    /// The default stats, reads (whose stream checks the file again at its end) and is
    /// correct for replicas whose [`read`](Self::read) makes that check; the SMB replica
    /// does all of it on one open handle.
    async fn open_read(&self, path: &RelPath) -> Result<Option<(SmbItem, ByteStream)>, ReplicaError> {
        let Some(item) = self.stat(path).await? else {
            return Ok(None);
        };
        if item.kind != ItemKind::File {
            return Ok(Some((item, Box::pin(futures::stream::empty()))));
        }
        Ok(Some((item, self.read(path).await?)))
    }

    /// Writes `data` to a fresh temporary name starting with [`TEMP_PREFIX`] in the folder of
    /// `target` (which must exist).
    async fn write_temp(&self, target: &RelPath, data: ByteStream) -> Result<TempFile, ReplicaError>;

    /// Renames `temp` over `target` and sets its LastWriteTime. Right before, checks `target`:
    /// `expected = None` means it must not exist, `Some(e)` means it must match `e`
    /// (`SMB_CHANGED_DURING_SYNC` otherwise, and nothing happens). Returns the new stat.
    async fn commit_temp(
        &self,
        temp: &TempFile,
        target: &RelPath,
        expected: Option<&SmbExpect>,
        last_write: FileTime,
    ) -> Result<SmbItem, ReplicaError>;

    /// Removes a temporary file (best effort after a failure).
    async fn discard_temp(&self, temp: &TempFile) -> Result<(), ReplicaError>;

    /// Creates a folder (the parent must exist). Idempotent if a folder is already there.
    async fn mkdir(&self, path: &RelPath) -> Result<SmbItem, ReplicaError>;

    /// Renames or moves an item (the destination folder must exist, the name must be free
    /// except for a case-only rename). Refused unless the source has file id `expected_file_id`
    /// (0 = do not check).
    async fn rename(&self, from: &RelPath, to: &RelPath, expected_file_id: u64) -> Result<SmbItem, ReplicaError>;

    /// Deletes a file (if it still matches `expected`) or a folder that is empty apart from
    /// leftover temporary files ([`TEMP_PREFIX`]), which go with it.
    async fn delete(&self, path: &RelPath, kind: ItemKind, expected: Option<&SmbExpect>) -> Result<(), ReplicaError>;

    /// Sets LastWriteTime.
    async fn set_times(&self, path: &RelPath, last_write: FileTime) -> Result<SmbItem, ReplicaError>;
}

/// What an upload must produce.
#[derive(Clone, Debug)]
pub struct UploadSpec {
    /// Where.
    pub path: RelPath,
    /// `None`: a new file (the name must be free). `Some(v)`: a new version of the file at
    /// `path`, whose current version must be `v` (`VERSION_CONFLICT` otherwise).
    pub base_version_id: Option<VersionId>,
    /// Exact size of the content.
    pub size: u64,
    /// SHA-256 of the content, if known before sending; the replica commits only if the
    /// received bytes match. `None`: the replica hashes the bytes as they pass, and ScaiDrive
    /// commits only once the stream ended cleanly and what it received has that digest
    /// (announced after the last byte); the committed item carries it.
    pub sha256: Option<Sha256>,
    /// Stored modification time (the SMB LastWriteTime).
    pub modified_at: FileTime,
}

/// A committed upload.
#[derive(Clone, Debug)]
pub struct Committed {
    /// The file after the commit.
    pub item: DriveItem,
    /// Nothing was stored: the current version already had this content.
    pub unchanged: bool,
}

/// The header of a download.
#[derive(Clone, Debug)]
pub struct DownloadHead {
    /// The version being sent.
    pub version_id: VersionId,
    /// Its size.
    pub size: u64,
    /// Its SHA-256, for verification.
    pub sha256: Sha256,
}

/// The ScaiDrive target folder.
#[async_trait]
pub trait DriveReplica: Send + Sync {
    /// A node by id (live or trashed: `Ok(Some((item, trashed)))`).
    async fn stat(&self, node: &NodeId) -> Result<Option<(DriveItem, bool)>, ReplicaError>;

    /// Stores a file or a new version from `data` (parents created as needed); atomic: a
    /// failed or mismatching stream commits nothing.
    async fn upload(&self, spec: &UploadSpec, data: ByteStream) -> Result<Committed, ReplicaError>;

    /// Creates a folder (parents as needed). Idempotent for an existing folder.
    async fn create_folder(&self, path: &RelPath, modified_at: FileTime) -> Result<DriveItem, ReplicaError>;

    /// Moves/renames a node to `to` (the parent folder must exist). With `base_version_id`,
    /// refused with `VERSION_CONFLICT` unless the file's current version is that.
    async fn move_node(
        &self,
        node: &NodeId,
        to: &RelPath,
        base_version_id: Option<&VersionId>,
    ) -> Result<DriveItem, ReplicaError>;

    /// Moves a node (with its subtree) to the trash, guarded like `move_node`.
    async fn trash(&self, node: &NodeId, base_version_id: Option<&VersionId>) -> Result<(), ReplicaError>;

    /// Brings a node back from the trash to its former path, and/or makes `version` current
    /// again as a new version on top.
    async fn restore(&self, node: &NodeId, version: Option<&VersionId>) -> Result<DriveItem, ReplicaError>;

    /// Streams a version's content (`None` = current).
    async fn download(
        &self,
        node: &NodeId,
        version: Option<&VersionId>,
    ) -> Result<(DownloadHead, ByteStream), ReplicaError>;
}

/// A per-file problem worth showing on the job: an error (retried next run) or a skip.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileIssue {
    /// The path.
    pub path: RelPath,
    /// Stable code.
    pub code: String,
    /// Human message.
    pub message: String,
    /// `true` for a failure of an attempted action, `false` for a planned skip or a warning.
    pub is_error: bool,
}

/// A line of the job log about one item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    /// The path.
    pub path: RelPath,
    /// Stable code: `CONFLICT_RESOLVED`, `SMB_CONTENT_KEPT`.
    pub code: String,
    /// Human message (names where the other content is kept).
    pub message: String,
}

/// Codes of [`Note`]s.
pub mod note_codes {
    /// A file changed on both sides was resolved by the connector's strategy.
    pub const CONFLICT_RESOLVED: &str = "CONFLICT_RESOLVED";
    /// SMB content was stored in ScaiDrive (a version, or trash) before SMB lost it.
    pub const SMB_CONTENT_KEPT: &str = "SMB_CONTENT_KEPT";
}

/// Cumulative progress counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Actions finished (successfully or not).
    pub actions_done: u64,
    /// Actions in the plan.
    pub actions_total: u64,
    /// Files whose content was transferred.
    pub files_synced: u64,
    /// Content bytes uploaded to ScaiDrive.
    pub bytes_uploaded: u64,
    /// Content bytes written to SMB.
    pub bytes_downloaded: u64,
    /// Failures.
    pub errors: u64,
}

/// Where synced states and per-file outcomes go (the control plane's file states).
#[async_trait]
pub trait StateSink: Send + Sync {
    /// Upserts the synced state of `state.path`.
    async fn put(&self, state: SyncedState) -> Result<(), ReplicaError>;
    /// Removes the state of `path` (only that path).
    async fn forget(&self, path: &RelPath) -> Result<(), ReplicaError>;
    /// Moves the states at and below `from` to `to` (a replayed folder move).
    async fn rebase(&self, from: &RelPath, to: &RelPath) -> Result<(), ReplicaError>;
    /// Records a per-file error or skip.
    async fn report_issue(&self, issue: &FileIssue);
    /// Records what the run did to keep content safe (a conflict resolved, SMB content kept
    /// in ScaiDrive before it was overwritten or deleted), for the job log. No state changes.
    async fn note(&self, _note: &Note) {}
    /// Reports progress (cumulative; lossy delivery is fine).
    async fn progress(&self, progress: &Progress);
}
