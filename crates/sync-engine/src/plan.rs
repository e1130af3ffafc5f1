//! The planner: both snapshots + the last synced state + settings → a [`Plan`].
//!
//! Pure: no I/O, no clock, no randomness, no hash-map iteration order; the same inputs give
//! the same plan. See the crate README for the classification table.

use crate::model::*;
use crate::replica::SmbExpect;

/// How a bidirectional conflict on one path is resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// SMB's content becomes a new ScaiDrive version (ScaiDrive's stays a previous version).
    SmbWins,
    /// ScaiDrive's content is written to SMB, after SMB's content was stored as a ScaiDrive
    /// version (upload over the current version, then restore the current one on top).
    DriveWins,
    /// The ScaiDrive file is moved to `conflict_path` (`name (conflict).ext`, …) and copied to
    /// SMB there; SMB's file is uploaded under the original name. Both sides get both.
    KeepBoth {
        /// The free name for ScaiDrive's copy.
        conflict_path: RelPath,
    },
}

/// One step of a plan. Steps are ordered by phase (see [`Action::phase`]); within the
/// structural and destructive phases the order matters and the executor keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Create a ScaiDrive folder mirroring an SMB folder; then record the state.
    CreateDriveFolder {
        /// Path.
        path: RelPath,
        /// The SMB folder, recorded with the new node.
        smb: SmbSide,
    },
    /// Create an SMB folder mirroring a ScaiDrive folder; then record the state.
    MkdirSmb {
        /// Path.
        path: RelPath,
        /// The ScaiDrive folder, recorded with the new SMB folder.
        drive: DriveSide,
    },
    /// Replay a rename/move on ScaiDrive (never a re-upload); then rebase the states under
    /// `from` to `to` and record `record` for the moved item.
    MoveOnDrive {
        /// The node.
        node_id: NodeId,
        /// Its current ScaiDrive path.
        from: RelPath,
        /// Its new path.
        to: RelPath,
        /// Precondition (files).
        base_version_id: Option<VersionId>,
        /// The moved item's state afterwards.
        record: SyncedState,
    },
    /// Replay a rename/move on SMB; then rebase states and record `record` with the SMB
    /// change time read back after the rename.
    RenameOnSmb {
        /// Current SMB path.
        from: RelPath,
        /// New path.
        to: RelPath,
        /// The file id the source must still have.
        expected_file_id: u64,
        /// The moved item's state afterwards (its SMB change time is refreshed).
        record: SyncedState,
    },
    /// Bring a trashed ScaiDrive file back (SMB still has it; an upload may follow).
    RestoreOnDrive {
        /// Its former and future path.
        path: RelPath,
        /// The node.
        node_id: NodeId,
        /// State to record afterwards if no upload follows.
        record: Option<SyncedState>,
    },
    /// Stream an SMB file into ScaiDrive (a new file, or a new version on top of
    /// `base_version_id`); not committed if the SMB file changes while being read.
    UploadToDrive {
        /// Path.
        path: RelPath,
        /// `None` = new file.
        base_version_id: Option<VersionId>,
        /// What the SMB file looked like when planned; checked before and after reading.
        smb_expected: SmbExpect,
    },
    /// Write a ScaiDrive version to SMB safely (temp name, verify, rename over, set time).
    DownloadToSmb {
        /// Path.
        path: RelPath,
        /// The ScaiDrive file.
        drive: DriveSide,
        /// `None`: nothing may be at `path` on SMB; `Some`: what must be there.
        smb_expected: Option<SmbExpect>,
        /// SMB's current content is not yet in ScaiDrive: store it as a version first.
        preserve_smb: bool,
    },
    /// A conflict (changed or created on both sides) and how it is resolved. Identical
    /// content (same size and SHA-256) is recorded as synced instead.
    Conflict {
        /// Path.
        path: RelPath,
        /// Resolution.
        resolution: Resolution,
        /// The SMB file.
        smb_expected: SmbExpect,
        /// The ScaiDrive file.
        drive: DriveSide,
    },
    /// Move a ScaiDrive file or (empty) folder to the trash; then forget its state.
    TrashOnDrive {
        /// Path.
        path: RelPath,
        /// Kind.
        kind: ItemKind,
        /// Node.
        node_id: NodeId,
        /// Precondition (files).
        base_version_id: Option<VersionId>,
    },
    /// Delete an SMB file or (empty) folder; then forget its state.
    DeleteOnSmb {
        /// Path.
        path: RelPath,
        /// Kind.
        kind: ItemKind,
        /// What the file must still be (files).
        expected: Option<SmbExpect>,
        /// The content is not in ScaiDrive yet: upload it and trash it there first.
        preserve: bool,
    },
    /// Bookkeeping only: both sides already agree.
    RecordState {
        /// The state.
        state: SyncedState,
    },
    /// Bookkeeping only: the path is gone on both sides or out of scope.
    ForgetState {
        /// Path.
        path: RelPath,
    },
    /// Not synced this run, with a stable code (reported on the job).
    Skip {
        /// Path.
        path: RelPath,
        /// Stable code, e.g. `NAME_RESERVED`, `SMB_REPARSE_POINT`.
        code: String,
        /// Explanation.
        reason: String,
    },
}

/// Execution phases, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Folder creations, moves, restores: sequential, in plan order.
    Structure,
    /// Uploads, downloads, conflicts: concurrent.
    Transfer,
    /// Trash and deletions, deepest first: sequential.
    Destroy,
    /// Record/forget states and skips.
    Bookkeeping,
}

impl Action {
    /// The phase the executor runs this action in.
    pub fn phase(&self) -> Phase {
        match self {
            Action::CreateDriveFolder { .. }
            | Action::MkdirSmb { .. }
            | Action::MoveOnDrive { .. }
            | Action::RenameOnSmb { .. }
            | Action::RestoreOnDrive { .. } => Phase::Structure,
            Action::UploadToDrive { .. }
            | Action::DownloadToSmb { .. }
            | Action::Conflict { .. } => Phase::Transfer,
            Action::TrashOnDrive { .. } | Action::DeleteOnSmb { .. } => Phase::Destroy,
            Action::RecordState { .. } | Action::ForgetState { .. } | Action::Skip { .. } => {
                Phase::Bookkeeping
            }
        }
    }

    /// The path the action is about (the destination for moves).
    pub fn path(&self) -> &RelPath {
        match self {
            Action::CreateDriveFolder { path, .. }
            | Action::MkdirSmb { path, .. }
            | Action::RestoreOnDrive { path, .. }
            | Action::UploadToDrive { path, .. }
            | Action::DownloadToSmb { path, .. }
            | Action::Conflict { path, .. }
            | Action::TrashOnDrive { path, .. }
            | Action::DeleteOnSmb { path, .. }
            | Action::ForgetState { path }
            | Action::Skip { path, .. } => path,
            Action::MoveOnDrive { to, .. } | Action::RenameOnSmb { to, .. } => to,
            Action::RecordState { state } => &state.path,
        }
    }

    /// Whether it trashes or deletes something (what the delete guard holds back).
    pub fn is_destructive(&self) -> bool {
        self.phase() == Phase::Destroy
    }
}

/// Why a plan is blocked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeleteGuard {
    /// Files the plan would trash or delete (renames excluded).
    pub would_delete: usize,
    /// Files tracked in the last synced state.
    pub tracked: usize,
    /// `would_delete` as a percentage of `tracked` (rounded up).
    pub percent: u8,
}

/// The outcome of planning.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Steps, ordered by phase.
    pub actions: Vec<Action>,
    /// Set when the delete guard tripped: the executor then performs nothing.
    pub blocked: Option<DeleteGuard>,
}

impl Plan {
    /// Whether the plan changes nothing (only skips).
    pub fn is_noop(&self) -> bool {
        self.actions
            .iter()
            .all(|a| matches!(a, Action::Skip { .. }))
    }
}

/// Plans one run. See the module and crate documentation.
pub fn plan(
    smb: &SmbSnapshot,
    drive: &DriveSnapshot,
    base: &BaseState,
    settings: &Settings,
) -> Plan {
    let _ = (smb, drive, base, settings);
    todo!("planner: next commit")
}
