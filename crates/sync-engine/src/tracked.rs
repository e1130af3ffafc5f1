//! The compact form of a run's inputs, for shares with many tracked files.
//!
//! A worker holding a million synced states as [`BaseState`], the SMB walk as [`SmbSnapshot`]
//! and the ScaiDrive side as [`DriveSnapshot`] holds every path and id three times, in maps
//! of about 500 bytes per item. In a quiet run nearly every item is the same on both sides as
//! at its last sync, so this module keeps:
//!
//! - [`Tracked`]: the synced states sorted by path, in columns: all paths in one text, ids of
//!   the usual shape (`fil_`/`fld_`/`ver_` + ULID) as 16 bytes, one digest where both sides
//!   have the same (any state that does not fit is kept whole on the side);
//! - [`SmbWalk`]: one bit per tracked path for "SMB lists exactly what was synced here", and
//!   a map of everything else the walk found;
//! - [`DriveOverlay`]: one bit per tracked path for "ScaiDrive no longer holds what was synced
//!   here", and a map of every other live item (what the change log changed);
//!
//! and [`plan_tracked`] plans from them the plan [`crate::plan()`] makes from the full maps: it
//! finds the same unchanged paths (see `plan::unchanged_paths`), then builds the full maps
//! of only the other paths for the planner.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::Arc;

use crate::model::{
    BaseState, DriveItem, DriveSide, DriveSnapshot, FileTime, ItemKind, NodeId, RelPath, Settings, Sha256, SmbItem,
    SmbSide, SmbSnapshot, SyncedState, TrashedItem, VersionId,
};
use crate::plan::{as_synced, case_twins, name_in_scope, Plan, Planned, Planner, Touch, Unchanged};

/// A set of tracked indices.
#[derive(Clone, Default, Debug, PartialEq, Eq)]
pub struct Bits(Vec<u64>);

impl Bits {
    /// `n` cleared bits.
    pub fn new(n: usize) -> Bits {
        Bits(vec![0; n.div_ceil(64)])
    }

    /// Whether bit `i` is set.
    pub fn get(&self, i: usize) -> bool {
        self.0.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    /// Sets bit `i` to `on`.
    pub fn set(&mut self, i: usize, on: bool) {
        let w = &mut self.0[i / 64];
        if on {
            *w |= 1 << (i % 64);
        } else {
            *w &= !(1 << (i % 64));
        }
    }

    /// How many bits are set.
    pub fn count(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }
}

const DIR: u8 = 1;
/// Ids of the usual shape and a ScaiDrive side that the columns describe.
const PLAIN: u8 = 2;
/// The SMB side has a digest (in `sha`).
const SMB_SHA: u8 = 4;

/// A state that the columns cannot describe: its SMB digest and its whole ScaiDrive side.
#[derive(Clone, Debug, PartialEq)]
struct Odd {
    smb_sha: Option<Sha256>,
    drive: DriveSide,
}

/// The last synced state of every tracked path, sorted by path, in columns (see the module
/// documentation). Index `i` is a tracked path; [`Tracked::state`] gives its [`SyncedState`].
#[derive(Clone, Default, Debug, PartialEq)]
pub struct Tracked {
    text: String,
    ends: Vec<u32>,
    flags: Vec<u8>,
    file_id: Vec<u64>,
    size: Vec<u64>,
    last_write: Vec<u64>,
    change_time: Vec<u64>,
    modified_at: Vec<u64>,
    synced_at: Vec<u64>,
    node: Vec<[u8; 16]>,
    version: Vec<[u8; 16]>,
    sha: Vec<[u8; 32]>,
    odd: HashMap<u32, Odd>,
    files: usize,
}

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// The 128 bits of a ULID in canonical text (26 upper-case Crockford base-32 characters).
fn ulid_bits(s: &str) -> Option<u128> {
    let b = s.as_bytes();
    if b.len() != 26 || b[0] > b'7' {
        return None;
    }
    let mut v: u128 = 0;
    for &c in b {
        let d = CROCKFORD.iter().position(|&x| x == c)? as u128;
        v = (v << 5) | d;
    }
    Some(v)
}

fn ulid_text(v: u128, out: &mut [u8]) {
    for (k, o) in out.iter_mut().enumerate().take(26) {
        *o = CROCKFORD[((v >> (5 * (25 - k))) & 31) as usize];
    }
}

/// `prefix` + ULID as 16 bytes, if `id` has that shape.
fn compact_id(id: &str, prefix: &str) -> Option<[u8; 16]> {
    ulid_bits(id.strip_prefix(prefix)?).map(u128::to_be_bytes)
}

/// An id's text in `buf` from its 16 bytes.
fn id_text<'b>(prefix: &str, bytes: &[u8; 16], buf: &'b mut [u8; 30]) -> &'b str {
    buf[..4].copy_from_slice(prefix.as_bytes());
    ulid_text(u128::from_be_bytes(*bytes), &mut buf[4..]);
    std::str::from_utf8(buf).expect("ASCII")
}

fn node_prefix(kind: ItemKind) -> &'static str {
    match kind {
        ItemKind::File => "fil_",
        ItemKind::Dir => "fld_",
    }
}

impl Tracked {
    /// From states in any order; of equal paths the last one counts (as in
    /// [`BaseState::from_states`]).
    pub fn from_states(states: impl IntoIterator<Item = SyncedState>) -> Tracked {
        let mut b = TrackedBuilder::default();
        for s in states {
            b.push(s);
        }
        b.finish()
    }

    /// From a base.
    pub fn from_base(base: &BaseState) -> Tracked {
        Tracked::from_states(base.entries.values().cloned())
    }

    /// The base these states make (tests, and small inputs).
    pub fn to_base(&self) -> BaseState {
        BaseState { entries: (0..self.len()).map(|i| (self.rel_path(i), self.state(i))).collect() }
    }

    /// How many paths are tracked.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether nothing is tracked.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// How many of them are files.
    pub fn files(&self) -> usize {
        self.files
    }

    /// The text of path `i`.
    pub fn path(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.text[start..self.ends[i] as usize]
    }

    /// Path `i`.
    pub fn rel_path(&self, i: usize) -> RelPath {
        RelPath::from_valid(self.path(i))
    }

    /// The kind synced at path `i`.
    pub fn kind(&self, i: usize) -> ItemKind {
        if self.flags[i] & DIR != 0 {
            ItemKind::Dir
        } else {
            ItemKind::File
        }
    }

    /// The SMB file id synced at path `i`.
    pub fn file_id(&self, i: usize) -> u64 {
        self.file_id[i]
    }

    /// The index of `path`, if it is tracked.
    pub fn find(&self, path: &str) -> Option<usize> {
        let i = self.lower_bound(path);
        (i < self.len() && self.path(i) == path).then_some(i)
    }

    /// The first index whose path is not below `path` in byte order.
    fn lower_bound(&self, path: &str) -> usize {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.path(mid) < path {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// The indices of the tracked paths strictly inside folder `dir` (contiguous: they all
    /// begin with `dir/`, and `0` follows `/`).
    pub fn inside(&self, dir: &str) -> Range<usize> {
        self.lower_bound(&format!("{dir}/"))..self.lower_bound(&format!("{dir}0"))
    }

    /// The node id synced at path `i`, as text in `buf` (no allocation for the usual shape).
    fn node_str<'b>(&'b self, i: usize, buf: &'b mut [u8; 30]) -> &'b str {
        match self.odd.get(&(i as u32)) {
            Some(o) => &o.drive.node_id.0,
            None => id_text(node_prefix(self.kind(i)), &self.node[i], buf),
        }
    }

    /// Whether no two tracked paths name the same node (a stale base may: then only one of
    /// them can be the node's live path).
    pub fn node_ids_unique(&self) -> bool {
        use std::hash::{Hash, Hasher};
        let hash = |i: usize| {
            let mut buf = [0; 30];
            let mut h = std::collections::hash_map::DefaultHasher::new();
            self.node_str(i, &mut buf).hash(&mut h);
            h.finish()
        };
        let mut hashes: Vec<(u64, u32)> = (0..self.len()).map(|i| (hash(i), i as u32)).collect();
        hashes.sort_unstable();
        hashes.chunk_by(|a, b| a.0 == b.0).filter(|g| g.len() > 1).all(|g| {
            let mut ids: Vec<NodeId> = g.iter().map(|(_, i)| self.node_id(*i as usize)).collect();
            ids.sort();
            ids.windows(2).all(|w| w[0] != w[1])
        })
    }

    /// The node id synced at path `i`.
    pub fn node_id(&self, i: usize) -> NodeId {
        let mut buf = [0; 30];
        NodeId(self.node_str(i, &mut buf).into())
    }

    fn smb_sha(&self, i: usize) -> Option<Sha256> {
        match self.odd.get(&(i as u32)) {
            Some(o) => o.smb_sha,
            None => (self.flags[i] & SMB_SHA != 0).then_some(Sha256(self.sha[i])),
        }
    }

    /// The ScaiDrive side synced at path `i`.
    fn drive_side(&self, i: usize) -> DriveSide {
        if let Some(o) = self.odd.get(&(i as u32)) {
            return o.drive.clone();
        }
        let kind = self.kind(i);
        let mut buf = [0; 30];
        DriveSide {
            node_id: self.node_id(i),
            version_id: (kind == ItemKind::File).then(|| VersionId(id_text("ver_", &self.version[i], &mut buf).into())),
            size: self.size[i],
            modified_at: FileTime(self.modified_at[i]),
            sha256: self.smb_sha(i),
        }
    }

    /// The synced state of path `i`.
    pub fn state(&self, i: usize) -> SyncedState {
        SyncedState {
            path: self.rel_path(i),
            kind: self.kind(i),
            smb: SmbSide {
                file_id: self.file_id[i],
                size: self.size[i],
                last_write: FileTime(self.last_write[i]),
                change_time: FileTime(self.change_time[i]),
                sha256: self.smb_sha(i),
            },
            drive: self.drive_side(i),
            last_synced_at: FileTime(self.synced_at[i]),
        }
    }

    /// The SMB item as synced at path `i` (what the walk lists when nothing changed there).
    pub fn carried(&self, i: usize) -> SmbItem {
        let kind = self.kind(i);
        SmbItem {
            path: self.rel_path(i),
            kind,
            size: if kind == ItemKind::Dir { 0 } else { self.size[i] },
            last_write: FileTime(self.last_write[i]),
            change_time: FileTime(self.change_time[i]),
            file_id: self.file_id[i],
            hidden: false,
            system: false,
            reparse: false,
        }
    }

    /// Whether `item` (at path `i`) is [`Tracked::carried`]`(i)`.
    pub fn carries(&self, i: usize, item: &SmbItem) -> bool {
        let kind = self.kind(i);
        item.kind == kind
            && item.size == if kind == ItemKind::Dir { 0 } else { self.size[i] }
            && item.last_write.0 == self.last_write[i]
            && item.change_time.0 == self.change_time[i]
            && item.file_id == self.file_id[i]
            && !item.hidden
            && !item.system
            && !item.reparse
            && item.path.as_str() == self.path(i)
    }

    /// The live ScaiDrive item as synced at path `i`.
    pub fn drive_item(&self, i: usize) -> DriveItem {
        let d = self.drive_side(i);
        DriveItem {
            path: self.rel_path(i),
            kind: self.kind(i),
            node_id: d.node_id,
            version_id: d.version_id,
            size: d.size,
            modified_at: d.modified_at,
            sha256: d.sha256,
        }
    }
}

/// Builds a [`Tracked`] one state at a time (as pages of states arrive).
#[derive(Default)]
pub struct TrackedBuilder {
    t: Tracked,
    /// Every path so far strictly after the one before it.
    sorted: bool,
    started: bool,
}

impl TrackedBuilder {
    /// Adds a state.
    pub fn push(&mut self, s: SyncedState) {
        let t = &mut self.t;
        let i = t.ends.len();
        let in_order = !self.started || t.path(i - 1) < s.path.as_str();
        self.sorted = (self.sorted || !self.started) && in_order;
        self.started = true;
        t.text.push_str(s.path.as_str());
        t.ends.push(u32::try_from(t.text.len()).expect("tracked paths exceed 4 GiB of text"));
        let kind = s.kind;
        let node = compact_id(&s.drive.node_id.0, node_prefix(kind));
        let version = match (&s.drive.version_id, kind) {
            (Some(v), ItemKind::File) => compact_id(&v.0, "ver_"),
            (None, ItemKind::Dir) => Some([0; 16]),
            _ => None,
        };
        let plain = node.is_some() && version.is_some() && s.drive.size == s.smb.size && s.drive.sha256 == s.smb.sha256;
        let mut flags = if kind == ItemKind::Dir { DIR } else { 0 };
        if plain {
            flags |= PLAIN;
            if s.smb.sha256.is_some() {
                flags |= SMB_SHA;
            }
        } else {
            t.odd.insert(i as u32, Odd { smb_sha: s.smb.sha256, drive: s.drive.clone() });
        }
        t.flags.push(flags);
        t.file_id.push(s.smb.file_id);
        t.size.push(s.smb.size);
        t.last_write.push(s.smb.last_write.0);
        t.change_time.push(s.smb.change_time.0);
        t.modified_at.push(s.drive.modified_at.0);
        t.synced_at.push(s.last_synced_at.0);
        t.node.push(node.unwrap_or_default());
        t.version.push(version.unwrap_or_default());
        t.sha.push(if plain { s.smb.sha256.map(|h| h.0).unwrap_or_default() } else { [0; 32] });
        if kind == ItemKind::File {
            t.files += 1;
        }
    }

    /// The states, sorted by path, the last of equal paths kept.
    pub fn finish(self) -> Tracked {
        if self.sorted || !self.started {
            return self.t;
        }
        // Out of order (a stable sort of the indices by path; the last of equal paths wins).
        let t = self.t;
        let mut order: Vec<u32> = (0..t.len() as u32).collect();
        order.sort_by(|a, b| t.path(*a as usize).cmp(t.path(*b as usize)));
        let mut keep: Vec<u32> = Vec::with_capacity(order.len());
        for i in order {
            match keep.last() {
                Some(&last) if t.path(last as usize) == t.path(i as usize) => *keep.last_mut().unwrap() = i,
                _ => keep.push(i),
            }
        }
        let mut b = TrackedBuilder::default();
        for i in keep {
            b.push(t.state(i as usize));
        }
        debug_assert!(b.sorted);
        b.t
    }
}

/// What the SMB walk found, against the tracked paths (see the module documentation).
#[derive(Clone, Default, Debug)]
pub struct SmbWalk {
    same: Bits,
    /// Every item found that is not [`Tracked::carried`] at its path.
    pub items: BTreeMap<RelPath, SmbItem>,
}

impl SmbWalk {
    /// Nothing found yet.
    pub fn new(t: &Tracked) -> SmbWalk {
        SmbWalk { same: Bits::new(t.len()), items: BTreeMap::new() }
    }

    /// From a whole snapshot.
    pub fn from_snapshot(t: &Tracked, snapshot: SmbSnapshot) -> SmbWalk {
        let mut w = SmbWalk::new(t);
        for item in snapshot.items.into_values() {
            w.insert(t, item);
        }
        w
    }

    /// Whether the walk found exactly what was synced at path `i`.
    pub fn is_same(&self, i: usize) -> bool {
        self.same.get(i)
    }

    /// Whether something was found at tracked path `i`.
    pub fn has(&self, t: &Tracked, i: usize) -> bool {
        self.same.get(i) || self.items.contains_key(t.path(i))
    }

    /// Records that tracked path `i` holds what was synced there (a folder that could not be
    /// listed keeps its content as it was).
    pub fn carry(&mut self, t: &Tracked, i: usize) {
        self.items.remove(t.path(i));
        self.same.set(i, true);
    }

    /// Records `item` (replacing what was found at its path before).
    pub fn insert(&mut self, t: &Tracked, item: SmbItem) {
        match t.find(item.path.as_str()) {
            Some(i) if t.carries(i, &item) => {
                self.same.set(i, true);
                self.items.remove(item.path.as_str());
            }
            found => {
                if let Some(i) = found {
                    self.same.set(i, false);
                }
                self.items.insert(item.path.clone(), item);
            }
        }
    }

    /// Whether something was found at `path`.
    pub fn contains(&self, t: &Tracked, path: &str) -> bool {
        self.items.contains_key(path) || t.find(path).is_some_and(|i| self.same.get(i))
    }

    /// What was found at `path`.
    pub fn get(&self, t: &Tracked, path: &str) -> Option<SmbItem> {
        if let Some(item) = self.items.get(path) {
            return Some(item.clone());
        }
        t.find(path).filter(|&i| self.same.get(i)).map(|i| t.carried(i))
    }

    /// Forgets what was found at `path`.
    pub fn remove(&mut self, t: &Tracked, path: &str) -> Option<SmbItem> {
        let found = self.get(t, path);
        self.items.remove(path);
        if let Some(i) = t.find(path) {
            self.same.set(i, false);
        }
        found
    }

    /// How many items were found.
    pub fn len(&self) -> usize {
        self.same.count() + self.items.len()
    }

    /// Whether nothing was found.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every item found, in path order, calling `f` with each (carried items made on the fly).
    pub fn for_each(&self, t: &Tracked, mut f: impl FnMut(&SmbItem)) {
        let mut items = self.items.values().peekable();
        for i in (0..t.len()).filter(|&i| self.same.get(i)) {
            while let Some(x) = items.next_if(|x| x.path.as_str() < t.path(i)) {
                f(x);
            }
            f(&t.carried(i));
        }
        items.for_each(f);
    }

    /// The whole snapshot (tests, and small inputs).
    pub fn to_snapshot(&self, t: &Tracked) -> SmbSnapshot {
        let mut items = self.items.clone();
        for i in (0..t.len()).filter(|&i| self.same.get(i)) {
            items.insert(t.rel_path(i), t.carried(i));
        }
        SmbSnapshot { items }
    }
}

/// The live ScaiDrive tree against the tracked paths (see the module documentation).
#[derive(Clone, Default, Debug)]
pub struct DriveOverlay {
    gone: Bits,
    /// Live items that are not [`Tracked::drive_item`] at their path.
    pub items: BTreeMap<RelPath, DriveItem>,
    /// Trashed nodes known to the worker, by node id.
    pub trashed: BTreeMap<NodeId, TrashedItem>,
}

impl DriveOverlay {
    /// Every tracked item live as synced, nothing else (an empty change log).
    pub fn unchanged(t: &Tracked) -> DriveOverlay {
        DriveOverlay { gone: Bits::new(t.len()), ..DriveOverlay::default() }
    }

    /// From a whole snapshot.
    pub fn from_snapshot(t: &Tracked, mut snapshot: DriveSnapshot) -> DriveOverlay {
        let mut gone = Bits::new(t.len());
        for i in 0..t.len() {
            let path = t.path(i);
            let same = snapshot.items.get(path).is_some_and(|d| *d == t.drive_item(i));
            if same {
                snapshot.items.remove(path);
            } else {
                gone.set(i, true);
            }
        }
        DriveOverlay { gone, items: snapshot.items, trashed: snapshot.trashed }
    }

    /// The live item at path `i` is the one synced there.
    fn is_synced(&self, t: &Tracked, i: usize) -> bool {
        !self.gone.get(i) && !self.items.contains_key(t.path(i))
    }

    /// How many live items.
    pub fn len(&self, t: &Tracked) -> usize {
        (0..t.len()).filter(|&i| self.is_synced(t, i)).count() + self.items.len()
    }

    /// The whole snapshot (tests, and small inputs).
    pub fn to_snapshot(&self, t: &Tracked) -> DriveSnapshot {
        let mut items = self.items.clone();
        for i in (0..t.len()).filter(|&i| self.is_synced(t, i)) {
            items.insert(t.rel_path(i), t.drive_item(i));
        }
        DriveSnapshot { items, trashed: self.trashed.clone() }
    }
}

/// The synced states as a run changes them: the tracked ones, less those forgotten, with
/// those recorded since on top (what a state reporter keeps, without copying the tracked:
/// they may be shared, e.g. with a worker's cache of the synced states).
#[derive(Clone, Default, Debug)]
pub struct KnownStates {
    tracked: Arc<Tracked>,
    forgotten: Bits,
    recorded: BTreeMap<RelPath, SyncedState>,
}

impl KnownStates {
    /// The tracked states, none changed yet.
    pub fn new(tracked: impl Into<Arc<Tracked>>) -> KnownStates {
        let tracked = tracked.into();
        KnownStates { forgotten: Bits::new(tracked.len()), tracked, recorded: BTreeMap::new() }
    }

    /// The state of `path`.
    pub fn get(&self, path: &str) -> Option<SyncedState> {
        if let Some(s) = self.recorded.get(path) {
            return Some(s.clone());
        }
        self.tracked.find(path).filter(|&i| !self.forgotten.get(i)).map(|i| self.tracked.state(i))
    }

    /// Records `state` at its path.
    pub fn insert(&mut self, state: SyncedState) {
        if let Some(i) = self.tracked.find(state.path.as_str()) {
            self.forgotten.set(i, true);
        }
        self.recorded.insert(state.path.clone(), state);
    }

    /// Forgets the state of `path`, returning it.
    pub fn remove(&mut self, path: &str) -> Option<SyncedState> {
        let recorded = self.recorded.remove(path);
        let tracked = self.tracked.find(path).filter(|&i| !self.forgotten.get(i));
        if let Some(i) = tracked {
            self.forgotten.set(i, true);
        }
        recorded.or_else(|| tracked.map(|i| self.tracked.state(i)))
    }

    /// The paths with a state at or below `dir`, in path order.
    pub fn at_or_inside(&self, dir: &RelPath) -> Vec<RelPath> {
        let mut out: Vec<RelPath> = self
            .recorded
            .range::<str, _>((std::ops::Bound::Included(dir.as_str()), std::ops::Bound::Unbounded))
            .map(|(p, _)| p)
            .take_while(|p| p.as_str().starts_with(dir.as_str()))
            .filter(|p| p.is_at_or_inside(dir))
            .cloned()
            .collect();
        let t = &self.tracked;
        let own = t.find(dir.as_str()).into_iter();
        for i in own.chain(t.inside(dir.as_str())).filter(|&i| !self.forgotten.get(i)) {
            out.push(t.rel_path(i));
        }
        out.sort();
        out.dedup();
        out
    }

    /// How many states.
    pub fn len(&self) -> usize {
        self.tracked.len() - self.forgotten.count() + self.recorded.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The tracked paths `plan::unchanged_paths` leaves out (as bits), and how many are files.
pub(crate) fn unchanged_tracked(
    walk: &SmbWalk,
    drive: &DriveOverlay,
    t: &Tracked,
    settings: &Settings,
) -> (Bits, usize) {
    let n = t.len();
    // Candidates: both sides as synced, the name in scope.
    let mut cand: Vec<u32> = Vec::new();
    for i in 0..n {
        let path = t.path(i);
        let smb_odd = walk.items.get(path);
        let drive_odd = drive.items.get(path);
        let smb_there = smb_odd.is_some() || walk.same.get(i);
        let drive_there = drive_odd.is_some() || !drive.gone.get(i);
        if !smb_there || !drive_there || !name_in_scope(path, t.kind(i), settings) {
            continue;
        }
        let synced = match (smb_odd, drive_odd) {
            (None, None) => true,
            (s, d) => {
                let b = t.state(i);
                let s = s.cloned().unwrap_or_else(|| t.carried(i));
                let d = d.cloned().unwrap_or_else(|| t.drive_item(i));
                as_synced(&s, &d, &b, settings)
            }
        };
        if synced {
            cand.push(i as u32);
        }
    }
    let twins = case_twins(cand.len(), |k| t.path(cand[k] as usize));
    crate::plan::remove_indices(&mut cand, &twins);
    let mut left_out = Bits::new(n);
    for &i in &cand {
        left_out.set(i as usize, true);
    }
    let mut planned = Planned::new(settings);
    for s in walk.items.values().filter(|s| t.find(s.path.as_str()).is_none_or(|i| !left_out.get(i))) {
        planned.note(s.path.as_str(), s.file_id, None);
    }
    for d in drive.items.values().filter(|d| t.find(d.path.as_str()).is_none_or(|i| !left_out.get(i))) {
        planned.note(d.path.as_str(), 0, Some(&d.node_id));
    }
    for i in (0..n).filter(|&i| !left_out.get(i)) {
        planned.note(t.path(i), t.file_id(i), Some(&t.node_id(i)));
    }
    while !planned.keys.is_empty() {
        let mut related = Vec::new();
        cand.retain(|&i| {
            let i = i as usize;
            let mut buf = [0; 30];
            match planned.touches(t.path(i), t.file_id(i), t.node_str(i, &mut buf)) {
                Some(touch) => {
                    related.push((i, touch));
                    false
                }
                None => true,
            }
        });
        if related.is_empty() {
            break;
        }
        for (i, touch) in related {
            left_out.set(i, false);
            match touch {
                Touch::Ancestor => planned.note_ids(t.file_id(i), &t.node_id(i)),
                Touch::Related => planned.note(t.path(i), t.file_id(i), Some(&t.node_id(i))),
            }
        }
    }
    let files = cand.iter().filter(|&&i| t.kind(i as usize) == ItemKind::File).count();
    (left_out, files)
}

/// [`crate::plan()`] of the snapshots and base that `walk`, `drive` and `t` describe, without
/// building them whole: the unchanged paths are found as `plan::unchanged_paths` finds them,
/// and only the other paths go to the planner.
pub fn plan_tracked(walk: SmbWalk, drive: DriveOverlay, t: &Tracked, settings: &Settings) -> Plan {
    let n = t.len();
    let (left_out, files) = unchanged_tracked(&walk, &drive, t, settings);
    // The planner's inputs without the unchanged paths.
    let kept = |path: &str| t.find(path).is_none_or(|i| !left_out.get(i));
    let SmbWalk { same, mut items } = walk;
    items.retain(|p, _| kept(p.as_str()));
    for i in (0..n).filter(|&i| same.get(i) && !left_out.get(i)) {
        items.insert(t.rel_path(i), t.carried(i));
    }
    let smb = SmbSnapshot { items };
    let DriveOverlay { gone, mut items, trashed } = drive;
    items.retain(|p, _| kept(p.as_str()));
    for i in (0..n).filter(|&i| !gone.get(i) && !left_out.get(i)) {
        if !items.contains_key(t.path(i)) {
            items.insert(t.rel_path(i), t.drive_item(i));
        }
    }
    let drive = DriveSnapshot { items, trashed };
    let base = BaseState::from_states((0..n).filter(|&i| !left_out.get(i)).map(|i| t.state(i)));
    Planner::new(&smb, &drive, &base, settings, Unchanged { paths: Vec::new(), files }).run()
}

/// [`plan_tracked`] of full snapshots and base, converted to the compact forms on the way:
/// what the tests compare with [`crate::plan()`].
#[doc(hidden)]
pub fn plan_compact(smb: &SmbSnapshot, drive: &DriveSnapshot, base: &BaseState, settings: &Settings) -> Plan {
    let (walk, overlay, t) = compact(smb, drive, base);
    plan_tracked(walk, overlay, &t, settings)
}

/// The compact forms of full snapshots and base, checked to give them back.
fn compact(smb: &SmbSnapshot, drive: &DriveSnapshot, base: &BaseState) -> (SmbWalk, DriveOverlay, Tracked) {
    let t = Tracked::from_base(base);
    assert_eq!(t.to_base(), *base, "the compact base round-trips");
    let walk = SmbWalk::from_snapshot(&t, smb.clone());
    assert_eq!(walk.to_snapshot(&t).items, smb.items, "the compact walk round-trips");
    let overlay = DriveOverlay::from_snapshot(&t, drive.clone());
    assert_eq!(overlay.to_snapshot(&t).items, drive.items, "the overlay round-trips");
    (walk, overlay, t)
}

/// The paths [`unchanged_tracked`] leaves out of full snapshots and base (the tests of
/// `plan::unchanged_paths` compare).
#[cfg(test)]
pub(crate) fn left_out_compact(
    smb: &SmbSnapshot,
    drive: &DriveSnapshot,
    base: &BaseState,
    settings: &Settings,
) -> (Vec<RelPath>, usize) {
    let (walk, overlay, t) = compact(smb, drive, base);
    let (bits, files) = unchanged_tracked(&walk, &overlay, &t, settings);
    ((0..t.len()).filter(|&i| bits.get(i)).map(|i| t.rel_path(i)).collect(), files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> RelPath {
        RelPath::new(s).unwrap()
    }

    fn state(path: &str, kind: ItemKind, node: &str, version: Option<&str>, sha: Option<u8>) -> SyncedState {
        let sha = sha.map(|b| Sha256([b; 32]));
        SyncedState {
            path: p(path),
            kind,
            smb: SmbSide { file_id: 7, size: 10, last_write: FileTime(5), change_time: FileTime(6), sha256: sha },
            drive: DriveSide {
                node_id: NodeId(node.into()),
                version_id: version.map(|v| VersionId(v.into())),
                size: 10,
                modified_at: FileTime(4),
                sha256: sha,
            },
            last_synced_at: FileTime(9),
        }
    }

    #[test]
    fn states_round_trip_whatever_their_ids_look_like() {
        let ulid = "01JD0000000000000000000042";
        let mut odd_size =
            state("b/odd-size", ItemKind::File, &format!("fil_{ulid}"), Some(&format!("ver_{ulid}")), Some(1));
        odd_size.drive.size = 11;
        let states = vec![
            state("b", ItemKind::Dir, &format!("fld_{ulid}"), None, None),
            state("b/plain", ItemKind::File, "fil_01JDZZZZZZZZZZZZZZZZZZZZZZ", Some(&format!("ver_{ulid}")), Some(3)),
            state("b/test-id", ItemKind::File, "n1", Some("v1"), Some(2)),
            state(
                "b/lower-ulid",
                ItemKind::File,
                &format!("fil_{}", ulid.to_lowercase()),
                Some(&format!("ver_{ulid}")),
                None,
            ),
            state("b/dir-prefix", ItemKind::File, "fld_01JD0000000000000000000043", Some(&format!("ver_{ulid}")), None),
            odd_size,
        ];
        let base = BaseState::from_states(states.clone());
        let t = Tracked::from_states(states);
        assert_eq!(t.len(), 6);
        assert_eq!(t.files(), 5);
        assert_eq!(t.to_base(), base);
        assert_eq!(t.odd.len(), 4, "the test ids, the lower-case ULID, the folder prefix and the size are kept whole");
        assert_eq!(t.inside("b"), 1..6);
        assert_eq!(t.find("b/plain").map(|i| t.path(i)), Some("b/plain"));
        assert_eq!(t.find("b/nothing"), None);
        assert!(t.node_ids_unique());
        let twice = Tracked::from_states([
            state("x", ItemKind::File, &format!("fil_{ulid}"), Some("v"), None),
            state("y", ItemKind::File, &format!("fil_{ulid}"), Some(&format!("ver_{ulid}")), None),
        ]);
        assert_eq!(twice.odd.len(), 1);
        assert!(!twice.node_ids_unique(), "one compact and one whole, the same node");
    }

    #[test]
    fn out_of_order_states_are_sorted_and_the_last_of_a_path_wins() {
        let mut later = state("a", ItemKind::File, "n2", Some("v2"), None);
        later.smb.size = 99;
        let t = Tracked::from_states([
            state("c", ItemKind::File, "n3", Some("v"), None),
            state("a", ItemKind::File, "n1", Some("v"), None),
            state("a/b", ItemKind::File, "n4", Some("v"), None),
            later.clone(),
            state("a.b", ItemKind::File, "n5", Some("v"), None),
        ]);
        let paths: Vec<&str> = (0..t.len()).map(|i| t.path(i)).collect();
        assert_eq!(paths, ["a", "a.b", "a/b", "c"]);
        assert_eq!(t.state(0), later);
        assert_eq!(t.inside("a"), 2..3);
        assert_eq!(t.files(), 4);
    }

    #[test]
    fn the_walk_keeps_a_bit_for_what_is_as_synced_and_the_rest_whole() {
        let t = Tracked::from_states([
            state("a", ItemKind::File, "n1", Some("v"), None),
            state("b", ItemKind::File, "n2", Some("v"), None),
        ]);
        let mut w = SmbWalk::new(&t);
        w.insert(&t, t.carried(0));
        let mut b = t.carried(1);
        b.hidden = true;
        w.insert(&t, b.clone());
        let mut new = t.carried(1);
        new.path = p("new");
        w.insert(&t, new.clone());
        assert_eq!((w.len(), w.items.len()), (3, 2));
        assert!(w.is_same(0) && !w.is_same(1));
        assert_eq!(w.get(&t, "a"), Some(t.carried(0)));
        assert_eq!(w.get(&t, "b"), Some(b.clone()));
        let mut seen = Vec::new();
        w.for_each(&t, |i| seen.push(i.clone()));
        assert_eq!(seen, [t.carried(0), b, new]);
        // A later listing of the same path replaces the earlier one.
        w.insert(&t, t.carried(1));
        assert_eq!((w.len(), w.items.len()), (3, 1));
        assert_eq!(w.remove(&t, "a"), Some(t.carried(0)));
        assert!(!w.contains(&t, "a"));
        assert_eq!(w.to_snapshot(&t).items.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["b", "new"]);
    }

    #[test]
    fn known_states_forget_record_and_find_below_a_folder() {
        let t = Tracked::from_states([
            state("a", ItemKind::Dir, "n1", None, None),
            state("a/x", ItemKind::File, "n2", Some("v"), None),
            state("a/y", ItemKind::File, "n3", Some("v"), None),
            state("ab", ItemKind::File, "n4", Some("v"), None),
        ]);
        let mut k = KnownStates::new(t.clone());
        assert_eq!(k.len(), 4);
        assert_eq!(k.get("a/x"), Some(t.state(1)));
        assert_eq!(k.remove("a/x"), Some(t.state(1)));
        assert_eq!(k.remove("a/x"), None);
        let mut moved = t.state(2);
        moved.path = p("a/z");
        k.insert(moved.clone());
        let mut changed = t.state(3);
        changed.smb.size = 1;
        k.insert(changed.clone());
        assert_eq!(k.get("ab"), Some(changed));
        assert_eq!(k.at_or_inside(&p("a")), [p("a"), p("a/y"), p("a/z")]);
        assert_eq!(k.len(), 4, "a, a/y, a/z, ab");
        assert_eq!(k.remove("a/z"), Some(moved));
        assert_eq!(k.len(), 3);
    }

    #[test]
    fn the_overlay_holds_what_the_change_log_changed() {
        let t = Tracked::from_states([
            state("a", ItemKind::File, "n1", Some("v"), None),
            state("b", ItemKind::File, "n2", Some("v"), None),
            state("c", ItemKind::File, "n3", Some("v"), None),
        ]);
        let mut snap = DriveOverlay::unchanged(&t).to_snapshot(&t);
        assert_eq!(snap.items.len(), 3);
        snap.items.remove("a");
        snap.items.get_mut("b").unwrap().version_id = Some(VersionId("v9".into()));
        let o = DriveOverlay::from_snapshot(&t, snap.clone());
        assert_eq!(o.items.len(), 1);
        assert_eq!(o.len(&t), 2);
        assert_eq!(o.to_snapshot(&t).items, snap.items);
    }
}
