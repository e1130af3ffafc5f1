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
        /// Where the moved item's synced state is now (rebased with its subtree to `to`);
        /// `None` for a case alignment of never-synced items.
        state_from: Option<RelPath>,
        /// The moved item's state afterwards.
        record: Option<SyncedState>,
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
        /// Where the moved item's synced state is now (rebased with its subtree to `to`);
        /// `None` for a case alignment of never-synced items.
        state_from: Option<RelPath>,
        /// The moved item's state afterwards (its SMB change time is refreshed).
        record: Option<SyncedState>,
    },
    /// Bookkeeping only: the item was moved identically on both sides (or a replayed move
    /// was not yet recorded); rebase the states under `from` to `to` and record `record`.
    RebaseState {
        /// Old path of the state.
        from: RelPath,
        /// New path.
        to: RelPath,
        /// The moved item's state afterwards, if it has one of its own.
        record: Option<SyncedState>,
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
        /// The content is not in ScaiDrive yet: upload it and trash it there first. For a
        /// folder: files below were so kept; trash the ScaiDrive folder they went into.
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
    /// Forget states of paths that are gone or out of scope (first, so that no later record
    /// at the same path is undone).
    Forget,
    /// Folder creations, moves, restores: sequential, in plan order.
    Structure,
    /// Uploads, downloads, conflicts: concurrent.
    Transfer,
    /// Trash and deletions, deepest first: sequential.
    Destroy,
    /// Record states and report skips.
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
            | Action::RebaseState { .. }
            | Action::RestoreOnDrive { .. } => Phase::Structure,
            Action::UploadToDrive { .. } | Action::DownloadToSmb { .. } | Action::Conflict { .. } => Phase::Transfer,
            Action::TrashOnDrive { .. } | Action::DeleteOnSmb { .. } => Phase::Destroy,
            Action::ForgetState { .. } => Phase::Forget,
            Action::RecordState { .. } | Action::Skip { .. } => Phase::Bookkeeping,
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
            Action::MoveOnDrive { to, .. } | Action::RenameOnSmb { to, .. } | Action::RebaseState { to, .. } => to,
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
        self.actions.iter().all(|a| matches!(a, Action::Skip { .. }))
    }
}

/// Plans one run. See the module and crate documentation.
///
/// Paths unchanged on both sides since the last sync, and unrelated to anything that did
/// change, are left out before the planner builds its own indexes (see [`unchanged_paths`]):
/// they would produce no action, and copying a million of them is most of a quiet run's time
/// and memory. [`plan_unpruned`] plans with everything; tests check that both agree.
pub fn plan(smb: &SmbSnapshot, drive: &DriveSnapshot, base: &BaseState, settings: &Settings) -> Plan {
    let unchanged = unchanged_paths(smb, drive, base, settings);
    Planner::new(smb, drive, base, settings, unchanged).run()
}

/// [`plan`] without leaving out the unchanged paths: the reference the tests compare with.
#[doc(hidden)]
pub fn plan_unpruned(smb: &SmbSnapshot, drive: &DriveSnapshot, base: &BaseState, settings: &Settings) -> Plan {
    Planner::new(smb, drive, base, settings, Unchanged::default()).run()
}

/// The paths [`plan`] may leave out (in path order, with their synced states), and how many
/// of them are files (the delete guard's count of tracked files includes them).
#[derive(Default)]
pub(crate) struct Unchanged<'b> {
    pub(crate) paths: Vec<(&'b RelPath, &'b SyncedState)>,
    pub(crate) files: usize,
}

impl<'b> Unchanged<'b> {
    /// A test of "left out?" for paths asked in ascending order (a walk of a path-keyed map).
    fn cursor(&self) -> impl FnMut(&RelPath) -> bool + '_ {
        let mut i = 0;
        move |path| {
            while i < self.paths.len() && self.paths[i].0 < path {
                i += 1;
            }
            i < self.paths.len() && self.paths[i].0 == path
        }
    }
}

/// The item at `path` in a path-ordered map walked alongside, if there is one.
fn seek<'m, V>(
    it: &mut std::iter::Peekable<std::collections::btree_map::Iter<'m, RelPath, V>>,
    path: &RelPath,
) -> Option<&'m V> {
    while it.next_if(|(k, _)| *k < path).is_some() {}
    it.next_if(|(k, _)| *k == path).map(|(_, v)| v)
}

/// The synced paths that can be left out of planning: the same path (exact spelling) holds an
/// item of the synced kind on both sides, each side as last synced ([`St::Same`]; the SMB
/// file id the one synced, not merely unknown then), in scope under the current settings —
/// and nothing planned can touch it: its case-insensitive key is not the key of another item
/// (another unchanged one included) nor below one, it is not in a folder where keep both
/// picks a free name, and neither its SMB file id nor its node id appears anywhere else. An unchanged
/// folder above something planned is planned too, as context, without the rest of its
/// subtree. For an unchanged path the full planner produces no action (see
/// [`Planner::unchanged`]), and everything that could make it act — moves found by id, case
/// twins, folders deleted, replaced or moved around it, filters — involves a path that is
/// planned, which then keeps its whole neighbourhood.
///
/// The three maps are walked side by side (all are in path order). Only the item's own name
/// rules and attributes are checked: an ancestor folder that a rule excludes is itself not
/// unchanged-in-scope, so it is planned, and everything below it with it.
fn unchanged_paths<'b>(
    smb: &SmbSnapshot,
    drive: &DriveSnapshot,
    base: &'b BaseState,
    settings: &Settings,
) -> Unchanged<'b> {
    let mut out = Unchanged::default();
    let (mut smb_it, mut drive_it) = (smb.items.iter().peekable(), drive.items.iter().peekable());
    for (path, b) in &base.entries {
        let (Some(s), Some(d)) = (seek(&mut smb_it, path), seek(&mut drive_it, path)) else { continue };
        if as_synced(s, d, b, settings) && name_in_scope(path.as_str(), b.kind, settings) {
            out.paths.push((path, b));
        }
    }
    let twins = case_twins(out.paths.len(), |i| out.paths[i].0.as_str());
    remove_indices(&mut out.paths, &twins);
    // What is planned (every other path of the three sources); grown with every unchanged
    // path that turns out to be related to it, until nothing more is.
    let mut planned = Planned::new(settings);
    {
        let mut left_out = out.cursor();
        for s in smb.items.values().filter(|s| !left_out(&s.path)) {
            planned.note(s.path.as_str(), s.file_id, None);
        }
        let mut left_out = out.cursor();
        for d in drive.items.values().filter(|d| !left_out(&d.path)) {
            planned.note(d.path.as_str(), 0, Some(&d.node_id));
        }
        let mut left_out = out.cursor();
        for b in base.entries.values().filter(|b| !left_out(&b.path)) {
            planned.note(b.path.as_str(), b.smb.file_id, Some(&b.drive.node_id));
        }
    }
    while !planned.keys.is_empty() {
        let mut related = Vec::new();
        out.paths.retain(|(path, b)| match planned.touches(path.as_str(), b.smb.file_id, &b.drive.node_id.0) {
            Some(touch) => {
                related.push((*path, *b, touch));
                false
            }
            None => true,
        });
        if related.is_empty() {
            break;
        }
        for (path, b, touch) in related {
            match touch {
                Touch::Ancestor => planned.note_ids(b.smb.file_id, &b.drive.node_id),
                Touch::Related => planned.note(path.as_str(), b.smb.file_id, Some(&b.drive.node_id)),
            }
        }
    }
    out.files = out.paths.iter().filter(|(_, b)| b.kind == ItemKind::File).count();
    out
}

/// Whether both sides of a synced path hold what was synced there: the synced kind on both
/// sides, each side as last synced ([`St::Same`]; the SMB file id the one synced, not merely
/// unknown then), not a reparse point, not excluded by its attributes.
pub(crate) fn as_synced(s: &SmbItem, d: &DriveItem, b: &SyncedState, settings: &Settings) -> bool {
    s.kind == b.kind
        && d.kind == b.kind
        && s.file_id == b.smb.file_id
        && smb_state(Some(s), Some(b)) == St::Same
        && drive_state(Some(d), Some(b)) == St::Same
        && !s.reparse
        && !attr_excluded(s, settings)
}

/// Whether a synced path's own name keeps it in scope: not a temporary name of ours, a name
/// SMB can hold when the run writes there, not excluded nor left out by the name rules. (An
/// ancestor that a rule excludes is not in scope itself, so it is planned with its subtree.)
pub(crate) fn name_in_scope(path: &str, kind: ItemKind, settings: &Settings) -> bool {
    let f = &settings.filters;
    let name = crate::model::name_of(path);
    let writes_smb = settings.direction != Direction::SmbToDrive;
    !name.starts_with(crate::replica::TEMP_PREFIX)
        && !(writes_smb && windows_name_problem(name).is_some())
        && !f.excludes_name_str(path, kind)
        && f.includes_str(path, kind)
}

/// Of `n` unchanged paths (`path(i)`), the indices (ascending) of the spellings of one
/// case-insensitive key (case twins): those are planned, as only one of them syncs. A path
/// already in its key's form (ASCII lower case) needs no key of its own; the others are
/// compared by the hashes of their keys, then by the keys where the hashes meet, so that a
/// million unchanged paths need no million keys held at once.
pub(crate) fn case_twins<'p>(n: usize, path: impl Fn(usize) -> &'p str) -> Vec<usize> {
    use std::hash::{Hash, Hasher};
    let key_of = |p: &str| (!p.is_ascii() || p.bytes().any(|c| c.is_ascii_uppercase())).then(|| key_of_str(p));
    let hash = |s: &str| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        s.hash(&mut h);
        h.finish()
    };
    let mut keyed: Vec<(u64, usize)> = (0..n).filter_map(|i| key_of(path(i)).map(|k| (hash(&k), i))).collect();
    if keyed.is_empty() {
        return Vec::new();
    }
    keyed.sort_unstable();
    let mut twins = Vec::new();
    for group in keyed.chunk_by(|a, b| a.0 == b.0).filter(|g| g.len() > 1) {
        let keys: Vec<String> = group.iter().map(|(_, i)| key_of_str(path(*i))).collect();
        for (j, k) in keys.iter().enumerate() {
            if keys.iter().filter(|x| *x == k).count() > 1 {
                twins.push(group[j].1);
            }
        }
    }
    for i in 0..n {
        let p = path(i);
        if key_of(p).is_some() {
            continue;
        }
        let h = hash(p);
        let from = keyed.partition_point(|(x, _)| *x < h);
        if keyed[from..].iter().take_while(|(x, _)| *x == h).any(|(_, j)| key_of_str(path(*j)) == p) {
            twins.push(i);
        }
    }
    twins.sort_unstable();
    twins
}

/// Removes the elements at `indices` (ascending) from `v`.
pub(crate) fn remove_indices<T>(v: &mut Vec<T>, indices: &[usize]) {
    if indices.is_empty() {
        return;
    }
    let (mut k, mut next) = (0, indices.iter().peekable());
    v.retain(|_| {
        let drop = next.next_if(|&&x| x == k).is_some();
        k += 1;
        !drop
    });
}

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use crate::model::key_of_str;

/// What [`unchanged_paths`] knows is planned: keys (case-insensitive), their ancestors, the
/// folders they are in (for keep both's free names), SMB file ids and node ids.
#[derive(Default)]
pub(crate) struct Planned {
    keep_both: bool,
    pub(crate) keys: HashSet<String>,
    ancestors: HashSet<String>,
    folders: HashSet<String>,
    file_ids: HashSet<u64>,
    nodes: HashSet<NodeId>,
}

fn parent_key(k: &str) -> &str {
    k.rfind('/').map(|i| &k[..i]).unwrap_or("")
}

impl Planned {
    pub(crate) fn new(settings: &Settings) -> Planned {
        let keep_both =
            settings.direction == Direction::Bidirectional && settings.conflict == ConflictStrategy::KeepBoth;
        Planned { keep_both, ..Planned::default() }
    }

    /// Notes the item at `path` (its text), with its SMB file id (0: none) and node id.
    pub(crate) fn note(&mut self, path: &str, file_id: u64, node: Option<&NodeId>) {
        let key = key_of_str(path);
        let k = key.as_str();
        for (i, _) in k.match_indices('/') {
            if !self.ancestors.contains(&k[..i]) {
                self.ancestors.insert(k[..i].to_string());
            }
        }
        if self.keep_both && !self.folders.contains(parent_key(k)) {
            self.folders.insert(parent_key(k).to_string());
        }
        if let Some(node) = node {
            self.note_ids(file_id, node);
        } else if file_id != 0 {
            self.file_ids.insert(file_id);
        }
        self.keys.insert(key);
    }

    pub(crate) fn note_ids(&mut self, file_id: u64, node: &NodeId) {
        if file_id != 0 {
            self.file_ids.insert(file_id);
        }
        if !self.nodes.contains(node) {
            self.nodes.insert(node.clone());
        }
    }

    /// How the unchanged `path` (synced with SMB file id `file_id` and node id `node`) is
    /// related to something planned, if it is: only as a folder above it (it is planned as
    /// the unchanged folder it is, as context; the rest of its subtree may still be left
    /// out), or more closely: the same key, below it, in a folder keep both picks names in,
    /// or sharing an SMB file id or a node id.
    pub(crate) fn touches(&self, path: &str, file_id: u64, node: &str) -> Option<Touch> {
        let key = key_of_str(path);
        let k = key.as_str();
        if self.keys.contains(k)
            || k.match_indices('/').any(|(i, _)| self.keys.contains(&k[..i]))
            || (self.keep_both && self.folders.contains(parent_key(k)))
            || self.file_ids.contains(&file_id)
            || self.nodes.contains(node)
        {
            Some(Touch::Related)
        } else if self.ancestors.contains(k) {
            Some(Touch::Ancestor)
        } else {
            None
        }
    }
}

/// See [`Planned::touches`].
pub(crate) enum Touch {
    Ancestor,
    Related,
}

use crate::replica::codes;

/// The state of one side of a path relative to the last synced state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum St {
    /// Neither now nor at the last sync.
    Absent,
    /// As last synced.
    Same,
    /// Different from the last sync.
    Changed,
    /// There now, not at the last sync.
    Created,
    /// There at the last sync, not now.
    Deleted,
}

fn smb_state(s: Option<&SmbItem>, b: Option<&SyncedState>) -> St {
    match (s, b) {
        (None, None) => St::Absent,
        (Some(_), None) => St::Created,
        (None, Some(_)) => St::Deleted,
        (Some(s), Some(b)) => {
            let id_differs = s.file_id != 0 && b.smb.file_id != 0 && s.file_id != b.smb.file_id;
            let changed = if s.kind == ItemKind::Dir {
                id_differs
            } else {
                id_differs
                    || s.size != b.smb.size
                    || s.last_write != b.smb.last_write
                    || s.change_time != b.smb.change_time
            };
            if changed {
                St::Changed
            } else {
                St::Same
            }
        }
    }
}

fn drive_state(d: Option<&DriveItem>, b: Option<&SyncedState>) -> St {
    match (d, b) {
        (None, None) => St::Absent,
        (Some(_), None) => St::Created,
        (None, Some(_)) => St::Deleted,
        (Some(d), Some(b)) => {
            if d.node_id != b.drive.node_id || (d.kind == ItemKind::File && d.version_id != b.drive.version_id) {
                St::Changed
            } else {
                St::Same
            }
        }
    }
}

/// The first free `name (conflict).ext`, `name (conflict 2).ext`, … next to `path`.
fn conflict_name(path: &RelPath, n: u32) -> RelPath {
    let name = path.name();
    let (stem, ext) = match name.rfind('.') {
        Some(i) if i > 0 => (&name[..i], &name[i..]),
        _ => (name, ""),
    };
    let suffix = if n == 1 { " (conflict)".to_string() } else { format!(" (conflict {n})") };
    RelPath::child_of(path.parent().as_ref(), &format!("{stem}{suffix}{ext}")).expect("valid name")
}

fn prefix_range<V>(m: &BTreeMap<PathKey, V>, root: &PathKey) -> Vec<PathKey> {
    let mut out: Vec<PathKey> = m.get_key_value(root).map(|(k, _)| k.clone()).into_iter().collect();
    let start = format!("{}/", root.as_str());
    out.extend(
        m.range(PathKey::from_raw(start.clone())..)
            .take_while(|(k, _)| k.as_str().starts_with(&start))
            .map(|(k, _)| k.clone()),
    );
    out
}

/// `path` (at or below `from` in the case-insensitive namespace) moved to below `to`.
fn rebase_ci(path: &RelPath, from: &RelPath, to: &RelPath) -> RelPath {
    let rest: Vec<&str> = path.as_str().split('/').skip(from.depth()).collect();
    if rest.is_empty() {
        to.clone()
    } else {
        to.join(&rest.join("/")).expect("valid components")
    }
}

fn has_strict_descendant(set: &BTreeSet<PathKey>, root: &PathKey) -> bool {
    let start = format!("{}/", root.as_str());
    set.range(PathKey::from_raw(start.clone())..).next().is_some_and(|k| k.as_str().starts_with(&start))
}

fn key_ancestors(k: &PathKey) -> impl Iterator<Item = PathKey> + '_ {
    k.as_str().match_indices('/').map(move |(i, _)| PathKey::from_raw(k.as_str()[..i].to_string()))
}

pub(crate) struct Planner<'a> {
    settings: &'a Settings,
    trashed: &'a BTreeMap<NodeId, TrashedItem>,
    /// Virtual SMB tree (in scope), as it will be after the structural actions planned so far.
    vs: BTreeMap<PathKey, SmbItem>,
    /// Virtual ScaiDrive tree (in scope), likewise.
    vd: BTreeMap<PathKey, DriveItem>,
    /// Virtual synced state: entity index and state.
    w: BTreeMap<PathKey, (usize, SyncedState)>,
    /// The key each entity was last put at in `w` (by entity index), so that finding an
    /// entity is a lookup, not a search of `w` (which made planning quadratic). An entity
    /// removed or overwritten since still points at its old key: [`Planner::w_find`] checks.
    w_at: Vec<Option<PathKey>>,
    /// Folders whose creation is planned in the structural phase (their action records them).
    planned: BTreeSet<PathKey>,
    /// Out-of-scope roots (their subtrees too).
    oos: BTreeSet<PathKey>,
    /// Keys that will hold an item after the run, per side (descendants before parents).
    survive_smb: BTreeSet<PathKey>,
    survive_drive: BTreeSet<PathKey>,
    smb_by_id: HashMap<u64, PathKey>,
    drive_by_node: HashMap<NodeId, PathKey>,
    /// Conflict names handed out in this plan.
    taken: BTreeSet<PathKey>,
    /// Each base entry's path in the state store (before any rebase), by entity index.
    orig: Vec<&'a RelPath>,
    /// Files left out of planning as unchanged (counted as tracked by the delete guard).
    unchanged_files: usize,
    /// The origin of the entry being reconciled.
    cur_orig: Option<RelPath>,
    /// Entities already moved in this plan.
    moved: BTreeSet<usize>,
    /// Exact paths of ScaiDrive case twins left alone (their names are taken on ScaiDrive).
    drive_twins: BTreeSet<RelPath>,
    /// SMB items deleted after being kept in ScaiDrive's trash.
    preserved: BTreeSet<PathKey>,
    structure: Vec<Action>,
    creates: Vec<Action>,
    restores: Vec<Action>,
    transfers: Vec<Action>,
    destroys: Vec<Action>,
    books: Vec<Action>,
    skips: Vec<Action>,
    would_delete: usize,
}

impl<'a> Planner<'a> {
    pub(crate) fn new(
        smb: &SmbSnapshot,
        drive: &'a DriveSnapshot,
        base: &'a BaseState,
        settings: &'a Settings,
        unchanged: Unchanged<'a>,
    ) -> Self {
        let mut left_out = unchanged.cursor();
        let mut p = Planner {
            settings,
            trashed: &drive.trashed,
            vs: BTreeMap::new(),
            vd: BTreeMap::new(),
            w: BTreeMap::new(),
            w_at: vec![None; base.entries.len()],
            planned: BTreeSet::new(),
            oos: BTreeSet::new(),
            survive_smb: BTreeSet::new(),
            survive_drive: BTreeSet::new(),
            smb_by_id: HashMap::new(),
            drive_by_node: HashMap::new(),
            taken: BTreeSet::new(),
            preserved: BTreeSet::new(),
            drive_twins: BTreeSet::new(),
            moved: BTreeSet::new(),
            orig: base.entries.keys().collect(),
            unchanged_files: unchanged.files,
            cur_orig: None,
            structure: Vec::new(),
            creates: Vec::new(),
            restores: Vec::new(),
            transfers: Vec::new(),
            destroys: Vec::new(),
            books: Vec::new(),
            skips: Vec::new(),
            would_delete: 0,
        };
        let f = &settings.filters;

        // SMB: parents before children.
        let mut smb_items: Vec<&SmbItem> = smb.items.values().filter(|s| !left_out(&s.path)).collect();
        smb_items.sort_by(|a, b| (a.path.depth(), &a.path).cmp(&(b.path.depth(), &b.path)));
        for item in smb_items {
            let key = item.path.key();
            if item.path.name().starts_with(crate::replica::TEMP_PREFIX) {
                continue;
            }
            if p.in_oos(&key) {
                p.survive_smb.insert(key);
                continue;
            }
            if item.reparse {
                p.skip(&item.path, codes::REPARSE_POINT, "symbolic link or reparse point: not followed");
                p.oos.insert(key.clone());
                p.survive_smb.insert(key);
                continue;
            }
            if f.excludes_smb(item, settings) {
                p.oos.insert(key.clone());
                p.survive_smb.insert(key);
                continue;
            }
            p.vs.entry(key).or_insert_with(|| item.clone());
        }

        // ScaiDrive: parents before children; of case-only twins, the one SMB or the base
        // knows by its exact name wins, else the first in byte order.
        let writes_smb = settings.direction != Direction::SmbToDrive;
        let known = |path: &RelPath| smb.items.contains_key(path) || base.entries.contains_key(path);
        let mut left_out = unchanged.cursor();
        let mut drive_items: Vec<&DriveItem> = drive.items.values().filter(|d| !left_out(&d.path)).collect();
        drive_items.sort_by(|a, b| {
            (a.path.depth(), !known(&a.path), &a.path).cmp(&(b.path.depth(), !known(&b.path), &b.path))
        });
        let mut twin_roots: Vec<RelPath> = Vec::new();
        for item in drive_items {
            let key = item.path.key();
            if twin_roots.iter().any(|r| item.path.is_at_or_inside(r)) {
                p.survive_drive.insert(key);
                continue;
            }
            if p.in_oos(&key) {
                p.survive_drive.insert(key);
                continue;
            }
            if f.excludes_path(&item.path, item.kind) {
                p.oos.insert(key.clone());
                p.survive_drive.insert(key);
                continue;
            }
            if writes_smb {
                if let Some(code) = windows_name_problem(item.path.name()) {
                    p.skip(&item.path, code, "this ScaiDrive name cannot be used on SMB");
                    p.oos.insert(key.clone());
                    p.survive_drive.insert(key);
                    continue;
                }
            }
            if p.vd.contains_key(&key) {
                p.skip(
                    &item.path,
                    codes::CASE_CONFLICT,
                    "another ScaiDrive item has the same name except for case; only that one syncs",
                );
                twin_roots.push(item.path.clone());
                p.drive_twins.insert(item.path.clone());
                p.survive_drive.insert(key);
                continue;
            }
            p.vd.insert(key, item.clone());
        }

        let mut left_out = unchanged.cursor();
        for (i, st) in base.entries.values().enumerate() {
            if left_out(&st.path) {
                continue;
            }
            let key = st.path.key();
            if p.in_oos(&key) || p.w.contains_key(&key) {
                p.books.push(Action::ForgetState { path: st.path.clone() });
                continue;
            }
            p.w_put(key, i, st.clone());
        }

        let mut dup_ids = BTreeSet::new();
        for (k, s) in &p.vs {
            if s.file_id != 0 && p.smb_by_id.insert(s.file_id, k.clone()).is_some() {
                dup_ids.insert(s.file_id);
            }
        }
        for id in dup_ids {
            p.smb_by_id.remove(&id);
        }
        for (k, d) in &p.vd {
            p.drive_by_node.insert(d.node_id.clone(), k.clone());
        }
        p
    }

    /// A file on one side and a folder on the other (after the moves): neither overwrites
    /// the other; the path and everything below it is reported and left alone, and their
    /// synced states are forgotten (they no longer describe both sides).
    fn set_aside_kind_clashes(&mut self) {
        let clashes: Vec<PathKey> = self
            .vs
            .iter()
            .filter(|(k, s)| self.vd.get(*k).is_some_and(|d| d.kind != s.kind))
            .map(|(k, _)| k.clone())
            .collect();
        for k in clashes {
            if self.in_oos(&k) || self.planned.contains(&k) {
                continue;
            }
            let path = self.vs[&k].path.clone();
            self.skip(&path, codes::KIND_MISMATCH, "a file on one side and a folder on the other");
            self.set_aside(&k);
        }
    }

    fn under_twin(&self, key: &PathKey) -> bool {
        !self.drive_twins.is_empty()
            && self.drive_twins.iter().any(|t| {
                let tk = t.key();
                tk == *key || key.as_str().starts_with(&format!("{}/", tk.as_str()))
            })
    }

    /// Whether an entity below `dir` (in the synced state) was already moved in this plan: it
    /// must not be dragged along again by a move of `dir`.
    fn moved_below(&self, dir: &RelPath) -> bool {
        prefix_range(&self.w, &dir.key()).iter().any(|k| self.w[k].1.path != *dir && self.moved.contains(&self.w[k].0))
    }

    fn planned_within(&self, dir: &RelPath) -> bool {
        let k = dir.key();
        self.planned.contains(&k) || has_strict_descendant(&self.planned, &k)
    }

    fn in_oos(&self, key: &PathKey) -> bool {
        !self.oos.is_empty() && (self.oos.contains(key) || key_ancestors(key).any(|a| self.oos.contains(&a)))
    }

    fn skip(&mut self, path: &RelPath, code: &str, reason: &str) {
        self.skips.push(Action::Skip { path: path.clone(), code: code.to_string(), reason: reason.to_string() });
    }

    pub(crate) fn run(mut self) -> Plan {
        self.replay_moves();
        self.set_aside_kind_clashes();
        self.align_case();
        self.reconcile();
        self.finish()
    }

    // ---------------------------------------------------------------------------------------
    // Moves and renames, by identity (SMB file id, ScaiDrive node id), shallowest first.

    fn replay_moves(&mut self) {
        let mut order: Vec<(usize, RelPath, usize)> =
            self.w.values().map(|(i, st)| (st.path.depth(), st.path.clone(), *i)).collect();
        order.sort();
        for (_, _, idx) in order {
            let Some((key, b)) = self.w_find(idx) else {
                continue;
            };
            // A file found under its id elsewhere is the same file only if its last-write
            // time is the one synced: file ids are inode numbers on Samba, and a file system
            // hands them out again, so "deleted, and a new file created" can show the old id
            // at a new path. A rename keeps the last-write time; a file renamed and edited
            // between two runs becomes a deletion (to trash) and a creation, which loses no
            // content, only the link between the two.
            let s_path = if b.smb.file_id != 0 {
                self.smb_by_id
                    .get(&b.smb.file_id)
                    .map(|k| &self.vs[k])
                    .filter(|s| s.kind == b.kind)
                    .filter(|s| s.kind == ItemKind::Dir || s.last_write == b.smb.last_write)
                    .map(|s| s.path.clone())
            } else {
                None
            };
            let d_path = self
                .drive_by_node
                .get(&b.drive.node_id)
                .map(|k| &self.vd[k])
                .filter(|d| d.kind == b.kind)
                .map(|d| d.path.clone());
            let s_moved = s_path.as_ref().is_some_and(|p| *p != b.path);
            let d_moved = d_path.as_ref().is_some_and(|p| *p != b.path);
            if !s_moved && !d_moved {
                continue;
            }
            match (self.settings.direction, s_path, d_path) {
                (_, Some(sp), Some(dp)) if sp == dp => self.rebase_state_only(idx, &key, &b, &sp),
                (Direction::SmbToDrive, Some(sp), Some(dp)) => {
                    self.try_move_drive(idx, &key, &b, &dp, &sp);
                }
                (Direction::DriveToSmb, Some(sp), Some(dp)) => {
                    self.try_rename_smb(idx, &key, &b, &sp, &dp);
                }
                (Direction::Bidirectional, Some(sp), Some(dp)) => {
                    // Only ScaiDrive moved, or both moved and ScaiDrive wins conflicts.
                    let drive_wins = d_moved && (!s_moved || self.settings.conflict == ConflictStrategy::DriveWins);
                    if drive_wins {
                        self.try_rename_smb(idx, &key, &b, &sp, &dp);
                    } else {
                        self.try_move_drive(idx, &key, &b, &dp, &sp);
                    }
                }
                // Moved on one side, gone from the other: a move counts as a change, so the
                // item survives at its new place (as newly created there).
                (Direction::SmbToDrive | Direction::Bidirectional, Some(_), None) if s_moved => {
                    self.forget_entity(&key, &b)
                }
                (Direction::DriveToSmb | Direction::Bidirectional, None, Some(_)) if d_moved => {
                    self.forget_entity(&key, &b)
                }
                _ => {}
            }
        }
    }

    /// Puts entity `i` at `key` in the virtual synced state.
    fn w_put(&mut self, key: PathKey, i: usize, st: SyncedState) {
        self.w_at[i] = Some(key.clone());
        self.w.insert(key, (i, st));
    }

    /// Where entity `idx` is in the virtual synced state now, if it still is.
    fn w_find(&self, idx: usize) -> Option<(PathKey, SyncedState)> {
        let key = self.w_at.get(idx)?.as_ref()?;
        match self.w.get(key) {
            Some((i, st)) if *i == idx => Some((key.clone(), st.clone())),
            _ => None,
        }
    }

    fn forget_entity(&mut self, key: &PathKey, b: &SyncedState) {
        let _ = b;
        if let Some((i, _)) = self.w.remove(key) {
            let path = self.orig[i].clone();
            self.books.push(Action::ForgetState { path });
        }
    }

    /// Whether the state subtree at `from` can move to `to` without colliding.
    fn w_can_rebase(&self, idx: usize, from: &RelPath, to: &RelPath) -> bool {
        if to.is_inside(from) {
            return false;
        }
        let fk = from.key();
        let tk = to.key();
        if fk == tk {
            return true;
        }
        if let Some((i, _)) = self.w.get(&tk) {
            if *i != idx {
                return false;
            }
        }
        prefix_range(&self.w, &fk).iter().all(|k| {
            let st = &self.w[k].1;
            let nk = rebase_ci(&st.path, from, to).key();
            !self.w.contains_key(&nk) || prefix_range(&self.w, &fk).contains(&nk)
        })
    }

    fn rebase_w(&mut self, from: &RelPath, to: &RelPath) {
        let keys = prefix_range(&self.w, &from.key());
        let moved: Vec<(usize, SyncedState)> = keys.iter().map(|k| self.w.remove(k).expect("present")).collect();
        for (i, mut st) in moved {
            st.path = rebase_ci(&st.path, from, to);
            self.w_put(st.path.key(), i, st);
        }
    }

    fn rebase_vd(&mut self, from: &RelPath, to: &RelPath) {
        let keys = prefix_range(&self.vd, &from.key());
        let moved: Vec<DriveItem> = keys.iter().map(|k| self.vd.remove(k).expect("present")).collect();
        let moved_planned: Vec<bool> = keys.iter().map(|k| self.planned.remove(k)).collect();
        for (mut d, was_planned) in moved.into_iter().zip(moved_planned) {
            d.path = rebase_ci(&d.path, from, to);
            let k = d.path.key();
            if was_planned {
                self.planned.insert(k.clone());
            }
            self.drive_by_node.insert(d.node_id.clone(), k.clone());
            self.vd.insert(k, d);
        }
    }

    fn rebase_vs(&mut self, from: &RelPath, to: &RelPath) {
        let keys = prefix_range(&self.vs, &from.key());
        let moved: Vec<SmbItem> = keys.iter().map(|k| self.vs.remove(k).expect("present")).collect();
        let moved_planned: Vec<bool> = keys.iter().map(|k| self.planned.remove(k)).collect();
        for (mut s, was_planned) in moved.into_iter().zip(moved_planned) {
            s.path = rebase_ci(&s.path, from, to);
            let k = s.path.key();
            if was_planned {
                self.planned.insert(k.clone());
            }
            if s.file_id != 0 && self.smb_by_id.contains_key(&s.file_id) {
                self.smb_by_id.insert(s.file_id, k.clone());
            }
            self.vs.insert(k, s);
        }
    }

    /// The state of a moved entity at `to`: the base, with the SMB change time refreshed when
    /// the SMB item is otherwise unchanged (a rename touches the change time).
    fn moved_record(&self, b: &SyncedState, to: &RelPath) -> SyncedState {
        let mut rec = b.clone();
        rec.path = to.clone();
        if let Some(s) = self.vs.get(&to.key()) {
            if s.file_id == b.smb.file_id && s.size == b.smb.size && s.last_write == b.smb.last_write {
                rec.smb.change_time = s.change_time;
            }
        }
        rec
    }

    fn rebase_state_only(&mut self, idx: usize, key: &PathKey, b: &SyncedState, to: &RelPath) {
        if !self.w_can_rebase(idx, &b.path, to) {
            return;
        }
        let rec = self.moved_record(b, to);
        self.rebase_w(&b.path, to);
        self.w_put(to.key(), idx, rec.clone());
        let _ = key;
        self.structure.push(Action::RebaseState { from: b.path.clone(), to: to.clone(), record: Some(rec) });
    }

    /// Makes sure folder `dir` exists on ScaiDrive by then (creating missing ones that SMB has).
    fn ensure_drive_dir(&mut self, dir: &RelPath) -> bool {
        let k = dir.key();
        if let Some(d) = self.vd.get(&k) {
            return d.kind == ItemKind::Dir && d.path == *dir;
        }
        let Some(s) = self.vs.get(&k).cloned() else {
            return false;
        };
        if s.kind != ItemKind::Dir || s.path != *dir {
            return false;
        }
        if let Some(parent) = dir.parent() {
            if !self.ensure_drive_dir(&parent) {
                return false;
            }
        }
        self.structure.push(Action::CreateDriveFolder { path: dir.clone(), smb: SmbSide::of(&s, None) });
        self.vd.insert(
            k.clone(),
            DriveItem {
                path: dir.clone(),
                kind: ItemKind::Dir,
                node_id: NodeId("".into()),
                version_id: None,
                size: 0,
                modified_at: s.last_write,
                sha256: None,
            },
        );
        self.planned.insert(k);
        true
    }

    /// Makes sure folder `dir` exists on SMB by then (creating missing ones ScaiDrive has).
    fn ensure_smb_dir(&mut self, dir: &RelPath) -> bool {
        let k = dir.key();
        if let Some(s) = self.vs.get(&k) {
            return s.kind == ItemKind::Dir;
        }
        let Some(d) = self.vd.get(&k).cloned() else {
            return false;
        };
        if d.kind != ItemKind::Dir || self.planned.contains(&k) {
            return false;
        }
        if let Some(parent) = dir.parent() {
            if !self.ensure_smb_dir(&parent) {
                return false;
            }
        }
        // SMB keeps the spelling of the existing parent folder.
        let spath = match dir.parent().and_then(|pp| self.vs.get(&pp.key())) {
            Some(parent) => parent.path.join(dir.name()).expect("valid"),
            None => d.path.clone(),
        };
        self.structure.push(Action::MkdirSmb { path: spath.clone(), drive: DriveSide::of(&d) });
        self.vs.insert(
            k.clone(),
            SmbItem {
                path: spath,
                kind: ItemKind::Dir,
                size: 0,
                last_write: d.modified_at,
                change_time: d.modified_at,
                file_id: 0,
                hidden: false,
                system: false,
                reparse: false,
            },
        );
        self.planned.insert(k);
        true
    }

    fn try_move_drive(&mut self, idx: usize, key: &PathKey, b: &SyncedState, from: &RelPath, to: &RelPath) -> bool {
        let _ = key;
        let tk = to.key();
        if to.is_inside(from) || !self.w_can_rebase(idx, &b.path, to) || self.moved_below(&b.path) {
            return false;
        }
        if let Some(occ) = self.vd.get(&tk) {
            if occ.node_id != b.drive.node_id {
                return false;
            }
        }
        if self.drive_twins.iter().any(|t| t.is_at_or_inside(to)) {
            return false;
        }
        // A folder planned to mirror something in the moving subtree would be left behind.
        if self.planned.contains(&tk) || self.planned_within(from) {
            return false;
        }
        if let Some(parent) = to.parent() {
            if !self.ensure_drive_dir(&parent) {
                return false;
            }
        }
        let cur_version = self.vd.get(&from.key()).and_then(|d| d.version_id.clone());
        let rec = self.moved_record(b, to);
        self.structure.push(Action::MoveOnDrive {
            node_id: b.drive.node_id.clone(),
            from: from.clone(),
            to: to.clone(),
            base_version_id: cur_version,
            state_from: Some(b.path.clone()),
            record: Some(rec.clone()),
        });
        self.rebase_vd(from, to);
        self.rebase_w(&b.path, to);
        self.w_put(tk, idx, rec);
        self.moved.insert(idx);
        true
    }

    fn try_rename_smb(&mut self, idx: usize, key: &PathKey, b: &SyncedState, from: &RelPath, to: &RelPath) -> bool {
        let _ = key;
        // SMB keeps the spelling of an existing parent folder.
        let canon = match to.parent().and_then(|pp| self.vs.get(&pp.key())) {
            Some(parent) => parent.path.join(to.name()).expect("valid"),
            None => to.clone(),
        };
        let to = &canon;
        let tk = to.key();
        if to.is_inside(from) || !self.w_can_rebase(idx, &b.path, to) || self.moved_below(&b.path) {
            return false;
        }
        if let Some(occ) = self.vs.get(&tk) {
            if occ.file_id != b.smb.file_id || tk != from.key() {
                return false;
            }
        }
        // A folder planned to mirror something in the moving subtree would be left behind.
        if self.planned.contains(&tk) || self.planned_within(from) {
            return false;
        }
        if let Some(parent) = to.parent() {
            if !self.ensure_smb_dir(&parent) {
                return false;
            }
        }
        // Spelled like the (possibly just planned) parent folder on SMB.
        let canon = match to.parent().and_then(|pp| self.vs.get(&pp.key())) {
            Some(parent) => parent.path.join(to.name()).expect("valid"),
            None => to.clone(),
        };
        let to = &canon;
        let mut rec = b.clone();
        rec.path = to.clone();
        self.structure.push(Action::RenameOnSmb {
            from: from.clone(),
            to: to.clone(),
            expected_file_id: b.smb.file_id,
            state_from: Some(b.path.clone()),
            record: Some(rec.clone()),
        });
        self.rebase_vs(from, to);
        self.rebase_w(&b.path, to);
        self.w_put(tk, idx, rec);
        self.moved.insert(idx);
        true
    }

    /// Items present on both sides under the same key but spelled with different case: align
    /// the names (ScaiDrive follows SMB, except when ScaiDrive is authoritative).
    fn align_case(&mut self) {
        let mismatches: Vec<PathKey> = self
            .vs
            .iter()
            .filter(|(k, s)| !self.planned.contains(*k) && self.vd.get(*k).is_some_and(|d| d.path != s.path))
            .map(|(k, _)| k.clone())
            .collect();
        for k in mismatches {
            let (Some(s), Some(d)) = (self.vs.get(&k).cloned(), self.vd.get(&k).cloned()) else {
                continue;
            };
            if s.path == d.path {
                continue; // aligned with a parent
            }
            let (sp, dp) = (s.path.clone(), d.path.clone());
            let new_path = &if self.settings.direction == Direction::DriveToSmb { dp.clone() } else { sp.clone() };
            // The states below follow the new spelling.
            // The states below follow the new spelling (there may be several old ones).
            let spellings: BTreeSet<RelPath> = prefix_range(&self.w, &k)
                .iter()
                .map(|wk| {
                    let p = &self.w[wk].1.path;
                    let parts: Vec<&str> = p.as_str().split('/').take(new_path.depth()).collect();
                    RelPath::new(&parts.join("/")).expect("valid")
                })
                .filter(|p| p != new_path)
                .collect();
            let state_from: Option<RelPath> = None;
            if !spellings.is_empty() && !self.drive_twins.iter().any(|t| t.is_at_or_inside(&sp)) {
                let first = spellings.iter().next().expect("non-empty").clone();
                self.rebase_w(&first, new_path);
                for old in spellings {
                    self.structure.push(Action::RebaseState { from: old, to: new_path.clone(), record: None });
                }
            }
            let has_own_state = self.w.contains_key(&k);
            if self.settings.direction == Direction::DriveToSmb {
                let file_id = s.file_id;
                let record = has_own_state.then(|| self.w[&k].1.clone());
                self.structure.push(Action::RenameOnSmb {
                    from: sp.clone(),
                    to: dp.clone(),
                    expected_file_id: file_id,
                    state_from,
                    record,
                });
                self.rebase_vs(&sp, &dp);
            } else if self.drive_twins.iter().any(|t| t.is_at_or_inside(&sp)) {
                // The SMB spelling is taken on ScaiDrive by a case twin: leave both alone.
                self.skip(
                    &sp,
                    codes::CASE_CONFLICT,
                    "the SMB name is taken on ScaiDrive by a name differing only in case",
                );
                self.set_aside(&k);
            } else {
                let d = &self.vd[&k];
                self.structure.push(Action::MoveOnDrive {
                    node_id: d.node_id.clone(),
                    from: dp.clone(),
                    to: sp.clone(),
                    base_version_id: d.version_id.clone(),
                    state_from,
                    record: None,
                });
                self.rebase_vd(&dp, &sp);
            }
        }
    }

    /// Leaves `k` and its subtree alone this run, forgetting their states.
    fn set_aside(&mut self, k: &PathKey) {
        for sk in prefix_range(&self.vs, k) {
            self.vs.remove(&sk);
            self.survive_smb.insert(sk);
        }
        for dk in prefix_range(&self.vd, k) {
            self.vd.remove(&dk);
            self.survive_drive.insert(dk);
        }
        for wk in prefix_range(&self.w, k) {
            if let Some((i, _)) = self.w.remove(&wk) {
                let path = self.orig[i].clone();
                self.books.push(Action::ForgetState { path });
            }
        }
        self.oos.insert(k.clone());
    }

    // ---------------------------------------------------------------------------------------
    // Per-path three-way reconciliation, descendants before their folders.

    fn reconcile(&mut self) {
        let keys: BTreeSet<PathKey> = self.vs.keys().chain(self.vd.keys()).chain(self.w.keys()).cloned().collect();
        for key in keys.into_iter().rev() {
            if self.planned.contains(&key) {
                // The creation records the new state; an older one under another spelling goes.
                if let (Some((i, st)), Some(v)) = (self.w.get(&key), self.vs.get(&key)) {
                    if st.path != v.path {
                        let path = self.orig[*i].clone();
                        self.books.push(Action::ForgetState { path });
                    }
                }
                self.survive_smb.insert(key.clone());
                self.survive_drive.insert(key);
                continue;
            }
            let s = self.vs.get(&key).cloned();
            let d = self.vd.get(&key).cloned();
            if d.is_none() && self.under_twin(&key) {
                // A ScaiDrive case twin holds this name: nothing may be created over it.
                if let Some(s) = &s {
                    if self.drive_twins.iter().any(|t| t.key() == key) {
                        self.skip(
                            &s.path,
                            codes::CASE_CONFLICT,
                            "the name is taken on ScaiDrive by a name differing only in case",
                        );
                    }
                }
                self.both_survive(&key);
                continue;
            }
            let mut b = self.w.get(&key).map(|(_, st)| st.clone());
            // A base of another kind says nothing about what is there now.
            let now_kind = s.as_ref().map(|s| s.kind).or(d.as_ref().map(|d| d.kind));
            let mut dropped_base = None;
            if let (Some(bk), Some(nk)) = (b.as_ref().map(|b| b.kind), now_kind) {
                let other = [s.as_ref().map(|s| s.kind), d.as_ref().map(|d| d.kind)];
                if bk != nk || other.iter().flatten().any(|k| *k != bk) {
                    dropped_base = b.take();
                }
            }
            if let (Some(s), Some(d)) = (&s, &d) {
                if s.kind != d.kind {
                    self.skip(&s.path, codes::KIND_MISMATCH, "a file on one side and a folder on the other");
                    self.survive_smb.insert(key.clone());
                    self.survive_drive.insert(key);
                    continue;
                }
            }
            let final_path = s.as_ref().map(|s| s.path.clone()).or(d.as_ref().map(|d| d.path.clone()));
            self.cur_orig = self.w.get(&key).map(|(i, _)| self.orig[*i].clone());
            if let Some(old) = dropped_base.as_ref().or(b.as_ref()) {
                if final_path.as_ref() != Some(&old.path) && (s.is_some() || d.is_some()) {
                    // The state moves to the new spelling (recorded by the action below).
                    let path = self.cur_orig.clone().expect("base has an origin");
                    self.books.push(Action::ForgetState { path });
                }
            }
            let kind = now_kind.or(b.as_ref().map(|b| b.kind)).or(dropped_base.as_ref().map(|b| b.kind));
            match kind {
                Some(ItemKind::Dir) => self.reconcile_dir(&key, s, d, b, dropped_base.is_some()),
                Some(ItemKind::File) => self.reconcile_file(&key, s, d, b),
                None => {}
            }
        }
    }

    fn record(&mut self, s: &SmbItem, d: &DriveItem, sha: Option<Sha256>) {
        self.books.push(Action::RecordState {
            state: SyncedState {
                path: s.path.clone(),
                kind: s.kind,
                smb: SmbSide::of(s, sha),
                drive: DriveSide::of(d),
                last_synced_at: FileTime(0),
            },
        });
    }

    fn reconcile_dir(
        &mut self,
        key: &PathKey,
        s: Option<SmbItem>,
        d: Option<DriveItem>,
        b: Option<SyncedState>,
        base_dropped: bool,
    ) {
        let dir = self.settings.direction;
        match (s, d) {
            (Some(s), Some(d)) => {
                let stale = match &b {
                    None => true,
                    Some(b) => {
                        b.path != s.path
                            || b.drive.node_id != d.node_id
                            || (s.file_id != 0 && b.smb.file_id != 0 && s.file_id != b.smb.file_id)
                    }
                };
                if stale {
                    self.record(&s, &d, None);
                }
                self.survive_smb.insert(key.clone());
                self.survive_drive.insert(key.clone());
            }
            (Some(s), None) => {
                let drive_deleted = b.is_some();
                let keep = match dir {
                    Direction::SmbToDrive => true,
                    Direction::DriveToSmb => has_strict_descendant(&self.survive_smb, key),
                    Direction::Bidirectional => !drive_deleted || has_strict_descendant(&self.survive_smb, key),
                };
                if keep {
                    self.creates.push(Action::CreateDriveFolder { path: s.path.clone(), smb: SmbSide::of(&s, None) });
                    self.survive_smb.insert(key.clone());
                    self.survive_drive.insert(key.clone());
                } else {
                    // Files below kept in ScaiDrive's trash were uploaded into a folder of this
                    // name; it goes to the trash too.
                    let preserve = has_strict_descendant(&self.preserved, key);
                    if preserve {
                        self.preserved.insert(key.clone());
                    }
                    self.destroys.push(Action::DeleteOnSmb {
                        path: s.path.clone(),
                        kind: ItemKind::Dir,
                        expected: None,
                        preserve,
                    });
                }
            }
            (None, Some(d)) => {
                let smb_deleted = b.is_some();
                let keep = match dir {
                    Direction::SmbToDrive => false,
                    Direction::DriveToSmb => true,
                    Direction::Bidirectional => !smb_deleted || has_strict_descendant(&self.survive_drive, key),
                };
                if keep {
                    self.creates.push(Action::MkdirSmb { path: d.path.clone(), drive: DriveSide::of(&d) });
                    self.survive_smb.insert(key.clone());
                    self.survive_drive.insert(key.clone());
                } else {
                    self.destroys.push(Action::TrashOnDrive {
                        path: d.path.clone(),
                        kind: ItemKind::Dir,
                        node_id: d.node_id.clone(),
                        base_version_id: None,
                    });
                }
            }
            (None, None) => {
                let _ = base_dropped;
                self.forget(b);
            }
        }
    }

    fn upload(&mut self, key: &PathKey, s: &SmbItem, base_version_id: Option<VersionId>) {
        self.transfers.push(Action::UploadToDrive {
            path: s.path.clone(),
            base_version_id,
            smb_expected: SmbExpect::of(s),
        });
        self.both_survive(key);
    }

    fn download(&mut self, key: &PathKey, d: &DriveItem, s: Option<&SmbItem>, preserve_smb: bool) {
        self.transfers.push(Action::DownloadToSmb {
            path: d.path.clone(),
            drive: DriveSide::of(d),
            smb_expected: s.map(SmbExpect::of),
            preserve_smb,
        });
        self.both_survive(key);
    }

    /// Unchanged on both sides; if only the spelling of its path changed (a case alignment),
    /// the state is recorded under the new spelling.
    fn unchanged(&mut self, key: &PathKey, s: &SmbItem, d: &DriveItem, b: Option<&SyncedState>) {
        if let Some(b) = b {
            if b.path != s.path {
                self.books.push(Action::RecordState {
                    state: SyncedState {
                        path: s.path.clone(),
                        kind: s.kind,
                        smb: SmbSide::of(s, b.smb.sha256),
                        drive: DriveSide::of(d),
                        last_synced_at: FileTime(0),
                    },
                });
            }
        }
        self.both_survive(key);
    }

    fn both_survive(&mut self, key: &PathKey) {
        self.survive_smb.insert(key.clone());
        self.survive_drive.insert(key.clone());
    }

    fn trash_drive(&mut self, d: &DriveItem) {
        self.would_delete += 1;
        self.destroys.push(Action::TrashOnDrive {
            path: d.path.clone(),
            kind: d.kind,
            node_id: d.node_id.clone(),
            base_version_id: d.version_id.clone(),
        });
    }

    fn delete_smb(&mut self, s: &SmbItem, preserve: bool) {
        self.would_delete += 1;
        if preserve {
            self.preserved.insert(s.path.key());
        }
        self.destroys.push(Action::DeleteOnSmb {
            path: s.path.clone(),
            kind: s.kind,
            expected: Some(SmbExpect::of(s)),
            preserve,
        });
    }

    /// SMB has the file, ScaiDrive deleted it: restore the trashed node where possible, then
    /// upload if SMB changed; otherwise upload a new file.
    fn restore_or_upload(&mut self, key: &PathKey, s: &SmbItem, b: &SyncedState, smb_same: bool) {
        if let Some(t) = self.trashed.get(&b.drive.node_id) {
            if t.restorable && t.item.path == s.path && t.item.kind == ItemKind::File {
                let same_version = t.item.version_id == b.drive.version_id;
                self.restores.push(Action::RestoreOnDrive {
                    path: s.path.clone(),
                    node_id: b.drive.node_id.clone(),
                    record: None,
                });
                if !(smb_same && same_version) {
                    self.transfers.push(Action::UploadToDrive {
                        path: s.path.clone(),
                        base_version_id: t.item.version_id.clone(),
                        smb_expected: SmbExpect::of(s),
                    });
                }
                self.both_survive(key);
                return;
            }
        }
        self.upload(key, s, None);
    }

    fn conflict(&mut self, key: &PathKey, s: &SmbItem, d: &DriveItem) {
        let resolution = match self.settings.conflict {
            ConflictStrategy::SmbWins => Resolution::SmbWins,
            ConflictStrategy::DriveWins => Resolution::DriveWins,
            // Tie: SMB wins (its content is then uploaded on top, so ScaiDrive's stays a
            // previous version without an extra step).
            ConflictStrategy::LastWriterWins => {
                if d.modified_at > s.last_write {
                    Resolution::DriveWins
                } else {
                    Resolution::SmbWins
                }
            }
            ConflictStrategy::KeepBoth => {
                let mut n = 1;
                let cp = loop {
                    let cand = conflict_name(&s.path, n);
                    let ck = cand.key();
                    if !self.vs.contains_key(&ck)
                        && !self.vd.contains_key(&ck)
                        && !self.w.contains_key(&ck)
                        && !self.taken.contains(&ck)
                        && !self.in_oos(&ck)
                    {
                        break cand;
                    }
                    n += 1;
                };
                self.taken.insert(cp.key());
                self.survive_smb.insert(cp.key());
                self.survive_drive.insert(cp.key());
                Resolution::KeepBoth { conflict_path: cp }
            }
        };
        self.transfers.push(Action::Conflict {
            path: s.path.clone(),
            resolution,
            smb_expected: SmbExpect::of(s),
            drive: DriveSide::of(d),
        });
        self.both_survive(key);
    }

    fn reconcile_file(&mut self, key: &PathKey, s: Option<SmbItem>, d: Option<DriveItem>, b: Option<SyncedState>) {
        use St::*;
        let ss = smb_state(s.as_ref(), b.as_ref());
        let ds = drive_state(d.as_ref(), b.as_ref());
        match self.settings.direction {
            Direction::SmbToDrive => match (&s, &d) {
                (Some(s), Some(d)) => {
                    if !(ss == Same && ds == Same) {
                        self.upload(key, s, d.version_id.clone());
                    } else {
                        self.unchanged(key, s, d, b.as_ref());
                    }
                }
                (Some(s), None) => match &b {
                    Some(b) => self.restore_or_upload(key, s, b, ss == Same),
                    None => self.upload(key, s, None),
                },
                (None, Some(d)) => self.trash_drive(d),
                (None, None) => self.forget(b),
            },
            Direction::DriveToSmb => match (&s, &d) {
                (Some(s), Some(d)) => {
                    if !(ss == Same && ds == Same) {
                        self.download(key, d, Some(s), ss != Same);
                    } else {
                        self.unchanged(key, s, d, b.as_ref());
                    }
                }
                (None, Some(d)) => self.download(key, d, None, false),
                (Some(s), None) => self.delete_smb(s, ss != Same),
                (None, None) => self.forget(b),
            },
            Direction::Bidirectional => match (ss, ds, &s, &d) {
                (Same, Same, Some(s), Some(d)) => self.unchanged(key, s, d, b.as_ref()),
                (Changed, Same, Some(s), Some(d)) => self.upload(key, s, d.version_id.clone()),
                (Same, Changed, Some(s), Some(d)) => self.download(key, d, Some(s), false),
                (Changed | Created, Changed | Created, Some(s), Some(d)) => self.conflict(key, s, d),
                (Created, Absent, Some(s), None) => self.upload(key, s, None),
                (Absent, Created, None, Some(d)) => self.download(key, d, None, false),
                (Deleted, Same, None, Some(d)) => self.trash_drive(d),
                (Same, Deleted, Some(s), None) => self.delete_smb(s, false),
                (Deleted, Changed, None, Some(d)) => self.download(key, d, None, false),
                (Changed, Deleted, Some(s), None) => {
                    let b = b.clone().expect("deleted implies a base");
                    self.restore_or_upload(key, s, &b, false)
                }
                (Deleted, Deleted, None, None) => self.forget(b),
                (ss, ds, _, _) => unreachable!("impossible combination {ss:?}/{ds:?}"),
            },
        }
    }

    /// Forgets the current path's base. ForgetState runs before everything else, so it
    /// names the state where the store has it now: its original path.
    fn forget(&mut self, b: Option<SyncedState>) {
        if b.is_some() {
            let path = self.cur_orig.clone().expect("base has an origin");
            self.books.push(Action::ForgetState { path });
        }
    }

    fn finish(mut self) -> Plan {
        let by_path = |a: &Action, b: &Action| a.path().cmp(b.path());
        self.creates.sort_by(|a, b| (a.path().depth(), a.path()).cmp(&(b.path().depth(), b.path())));
        self.restores.sort_by(by_path);
        self.transfers.sort_by(by_path);
        self.destroys.sort_by(|a, b| {
            (std::cmp::Reverse(a.path().depth()), a.path()).cmp(&(std::cmp::Reverse(b.path().depth()), b.path()))
        });
        let (mut forgets, mut books): (Vec<Action>, Vec<Action>) =
            self.books.into_iter().partition(|a| matches!(a, Action::ForgetState { .. }));
        forgets.sort_by(by_path);
        forgets.dedup();
        books.sort_by(by_path);
        books.dedup();
        self.skips.sort_by(by_path);
        let tracked = self.w.values().filter(|(_, st)| st.kind == ItemKind::File).count() + self.unchanged_files;
        let blocked = if self.would_delete > 0 && self.settings.max_delete_percent < 100 {
            let pct = if tracked == 0 { 100 } else { (self.would_delete * 100).div_ceil(tracked).min(100) };
            (self.would_delete * 100 > self.settings.max_delete_percent as usize * tracked).then_some(DeleteGuard {
                would_delete: self.would_delete,
                tracked,
                percent: pct as u8,
            })
        } else {
            None
        };
        let mut actions = forgets;
        actions.extend(self.structure);
        actions.extend(self.creates);
        actions.extend(self.restores);
        actions.extend(self.transfers);
        actions.extend(self.destroys);
        actions.extend(books);
        actions.extend(self.skips);
        Plan { actions, blocked }
    }
}

#[cfg(test)]
mod unchanged_tests {
    use super::*;

    fn p(s: &str) -> RelPath {
        RelPath::new(s).unwrap()
    }

    /// Synced files and folders, identical on both sides: (path, SMB file id).
    struct World {
        smb: SmbSnapshot,
        drive: DriveSnapshot,
        base: BaseState,
    }

    fn world(items: &[(&str, u64)]) -> World {
        let (mut smb, mut drive, mut base) = (Vec::new(), Vec::new(), Vec::new());
        for (path, id) in items {
            let kind = if path.ends_with(".txt") { ItemKind::File } else { ItemKind::Dir };
            let file = kind == ItemKind::File;
            let s = SmbItem {
                path: p(path),
                kind,
                size: if file { 3 } else { 0 },
                last_write: FileTime(10),
                change_time: FileTime(10),
                file_id: *id,
                hidden: false,
                system: false,
                reparse: false,
            };
            let d = DriveItem {
                path: p(path),
                kind,
                node_id: NodeId(format!("node-{id}").into()),
                version_id: file.then(|| VersionId(format!("ver-{id}").into())),
                size: s.size,
                modified_at: FileTime(10),
                sha256: file.then(|| Sha256::of(path.as_bytes())),
            };
            base.push(SyncedState {
                path: p(path),
                kind,
                smb: SmbSide::of(&s, d.sha256),
                drive: DriveSide::of(&d),
                last_synced_at: FileTime(10),
            });
            smb.push(s);
            drive.push(d);
        }
        World {
            smb: SmbSnapshot::from_items(smb),
            drive: DriveSnapshot::from_items(drive),
            base: BaseState::from_states(base),
        }
    }

    const TREE: &[(&str, u64)] =
        &[("a", 1), ("a/x.txt", 2), ("a/y.txt", 3), ("b", 4), ("b/z.txt", 5), ("b/w.txt", 6), ("c.txt", 7)];

    fn left_out(w: &World, settings: &Settings) -> (Vec<&'static str>, usize) {
        let u = unchanged_paths(&w.smb, &w.drive, &w.base, settings);
        let compact = crate::tracked::left_out_compact(&w.smb, &w.drive, &w.base, settings);
        assert_eq!(
            compact,
            (u.paths.iter().map(|(p, _)| (*p).clone()).collect(), u.files),
            "the compact forms leave out the same"
        );
        let mut out: Vec<&'static str> =
            TREE.iter().map(|(path, _)| *path).filter(|path| u.paths.iter().any(|(q, _)| **q == p(path))).collect();
        out.sort();
        assert_eq!(
            plan(&w.smb, &w.drive, &w.base, settings),
            plan_unpruned(&w.smb, &w.drive, &w.base, settings),
            "the same plan either way"
        );
        (out, u.files)
    }

    #[test]
    fn a_quiet_tree_is_left_out_whole() {
        let w = world(TREE);
        let (out, files) = left_out(&w, &Settings::default());
        assert_eq!(out, ["a", "a/x.txt", "a/y.txt", "b", "b/w.txt", "b/z.txt", "c.txt"]);
        assert_eq!(files, 5);
        assert!(plan(&w.smb, &w.drive, &w.base, &Settings::default()).actions.is_empty());
    }

    #[test]
    fn a_change_keeps_its_ancestors_and_keep_both_its_folder() {
        let mut w = world(TREE);
        w.smb.items.get_mut(&p("b/z.txt")).unwrap().size = 4;
        let (out, _) = left_out(&w, &Settings::default());
        assert_eq!(out, ["a", "a/x.txt", "a/y.txt", "b/w.txt", "c.txt"]);
        let keep_both = Settings {
            direction: Direction::Bidirectional,
            conflict: ConflictStrategy::KeepBoth,
            ..Settings::default()
        };
        let (out, _) = left_out(&w, &keep_both);
        assert_eq!(out, ["a", "a/x.txt", "a/y.txt", "c.txt"], "b/w.txt is a name keep both must see");
    }

    #[test]
    fn a_renamed_folder_keeps_its_subtree_and_a_shared_id_both_holders() {
        // `a` renamed to `A2` on SMB: the old paths are gone there, the new ones are new.
        let mut w = world(TREE);
        for old in ["a", "a/x.txt", "a/y.txt"] {
            let mut item = w.smb.items.remove(&p(old)).unwrap();
            item.path = p(&old.replacen('a', "A2", 1));
            w.smb.items.insert(item.path.clone(), item);
        }
        let (out, _) = left_out(&w, &Settings::default());
        assert_eq!(out, ["b", "b/w.txt", "b/z.txt", "c.txt"]);

        // A new SMB file with c.txt's id (a hard link, or an id handed out again).
        let mut w = world(TREE);
        let mut twin = w.smb.items[&p("c.txt")].clone();
        twin.path = p("b/new.txt");
        w.smb.items.insert(twin.path.clone(), twin);
        let (out, _) = left_out(&w, &Settings::default());
        assert_eq!(out, ["a", "a/x.txt", "a/y.txt", "b/w.txt", "b/z.txt"], "b stays as new.txt's folder");
    }

    #[test]
    fn unchanged_case_twins_and_an_id_unknown_at_the_last_sync_are_planned() {
        // Both spellings unchanged: the planner syncs one and reports the other.
        let w = world(&[("A.txt", 1), ("a.txt", 2), ("c.txt", 7)]);
        let u = unchanged_paths(&w.smb, &w.drive, &w.base, &Settings::default());
        let out: Vec<&str> = u.paths.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(out, ["c.txt"]);
        let compact = crate::tracked::left_out_compact(&w.smb, &w.drive, &w.base, &Settings::default());
        assert_eq!(compact, (vec![p("c.txt")], 1), "the compact forms leave out the same");
        assert_eq!(
            plan(&w.smb, &w.drive, &w.base, &Settings::default()),
            plan_unpruned(&w.smb, &w.drive, &w.base, &Settings::default())
        );

        // p.txt synced without an SMB file id, now listed with 7, which r.txt was synced with,
        // and a hard link q.txt with it too.
        let mut w = world(&[("p.txt", 7), ("r.txt", 7)]);
        w.base.entries.get_mut(&p("p.txt")).unwrap().smb.file_id = 0;
        w.smb.items.remove(&p("r.txt"));
        let mut q = w.smb.items[&p("p.txt")].clone();
        q.path = p("q.txt");
        w.smb.items.insert(q.path.clone(), q);
        for direction in [Direction::SmbToDrive, Direction::DriveToSmb, Direction::Bidirectional] {
            let s = Settings { direction, ..Settings::default() };
            assert!(unchanged_paths(&w.smb, &w.drive, &w.base, &s).paths.is_empty());
            assert!(crate::tracked::left_out_compact(&w.smb, &w.drive, &w.base, &s).0.is_empty());
            assert_eq!(plan(&w.smb, &w.drive, &w.base, &s), plan_unpruned(&w.smb, &w.drive, &w.base, &s));
        }
    }

    #[test]
    fn a_case_twin_or_a_new_filter_keeps_the_path() {
        let mut w = world(TREE);
        let mut twin = w.drive.items[&p("c.txt")].clone();
        twin.path = p("C.TXT");
        twin.node_id = NodeId("node-twin".into());
        w.drive.items.insert(twin.path.clone(), twin);
        let (out, _) = left_out(&w, &Settings::default());
        assert!(!out.contains(&"c.txt"), "{out:?}");
        assert_eq!(out.len(), 6);

        let w = world(TREE);
        let mut s = Settings::default();
        s.filters =
            Filters::new(&FilterConfig { exclude_patterns: vec!["b".into()], ..FilterConfig::default() }).unwrap();
        let (out, _) = left_out(&w, &s);
        assert_eq!(out, ["a", "a/x.txt", "a/y.txt", "c.txt"]);
    }
}
