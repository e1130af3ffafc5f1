//! The engine's vocabulary: paths, the two sides' items, the last synced state, settings and
//! filters.
//!
//! These types know neither SMB nor gRPC: the sync-worker converts `smb_layer::DirEntry` and
//! proto `Node`/`FileState` into them. They are not `Serialize` on purpose (the wire formats
//! are contracts of their own).
//!
//! Times: every instant is a [`FileTime`], Windows FILETIME (100 ns ticks since 1601-01-01
//! UTC), the SMB native unit. The ScaiDrive side's `google.protobuf.Timestamp` converts
//! losslessly down to 100 ns, so both sides compare in one unit (last-writer-wins).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use globset::{Glob, GlobSet, GlobSetBuilder};
use unicode_normalization::UnicodeNormalization;

/// A Windows FILETIME: 100-nanosecond ticks since 1601-01-01 UTC (0 = unknown).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct FileTime(pub u64);

impl FileTime {
    /// FILETIME of the Unix epoch.
    pub const UNIX_EPOCH: u64 = 116_444_736_000_000_000;

    /// From Unix seconds and nanoseconds (as in `google.protobuf.Timestamp`), truncated to 100 ns.
    pub fn from_unix(secs: i64, nanos: u32) -> FileTime {
        let ticks = (secs as i128) * 10_000_000 + (nanos as i128) / 100 + Self::UNIX_EPOCH as i128;
        FileTime(ticks.clamp(0, u64::MAX as i128) as u64)
    }

    /// To Unix seconds and nanoseconds.
    pub fn to_unix(self) -> (i64, u32) {
        let t = self.0 as i128 - Self::UNIX_EPOCH as i128;
        let secs = t.div_euclid(10_000_000);
        let rem = t.rem_euclid(10_000_000);
        (secs as i64, (rem * 100) as u32)
    }
}

impl fmt::Debug for FileTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FileTime({})", self.0)
    }
}

/// Why a string is not a [`RelPath`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid relative path {path:?}: {reason}")]
pub struct PathError {
    /// The rejected input.
    pub path: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// A path relative to the sync root: `/`-separated, no leading or trailing `/`, no empty, `.`
/// or `..` components, NFC-normalised. Never the root itself.
///
/// Equality and ordering are case-sensitive and byte-wise on the NFC form; use [`RelPath::key`]
/// for SMB's case-insensitive namespace. All paths below one folder are contiguous in the
/// ordering (they share the prefix `folder/`).
///
/// Cloning shares the text (a worker holds each tracked path in its synced state, both
/// snapshots and the plan: one allocation, not four).
///
/// ```
/// use sync_engine::RelPath;
/// let p = RelPath::new("Finance/2026/report.docx").unwrap();
/// assert_eq!(p.name(), "report.docx");
/// assert_eq!(p.parent().unwrap().as_str(), "Finance/2026");
/// assert_eq!(p.key(), RelPath::new("FINANCE/2026/Report.DOCX").unwrap().key());
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RelPath(Arc<str>);

impl RelPath {
    /// Validates and NFC-normalises `s`.
    pub fn new(s: &str) -> Result<RelPath, PathError> {
        let err = |reason| PathError { path: s.to_string(), reason };
        if s.is_empty() {
            return Err(err("empty"));
        }
        let n: String = s.nfc().collect();
        for c in n.split('/') {
            match c {
                "" => return Err(err("empty component (leading, trailing or double '/')")),
                "." | ".." => return Err(err("'.' or '..' component")),
                _ => {}
            }
        }
        Ok(RelPath(n.into()))
    }

    /// The path as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The last component.
    pub fn name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }

    /// The containing folder; `None` for a top-level item (whose parent is the sync root).
    pub fn parent(&self) -> Option<RelPath> {
        self.0.rfind('/').map(|i| RelPath(self.0[..i].into()))
    }

    /// `self/name`.
    pub fn join(&self, name: &str) -> Result<RelPath, PathError> {
        RelPath::new(&format!("{}/{}", self.0, name))
    }

    /// `parent/name`, or `name` at the root.
    pub fn child_of(parent: Option<&RelPath>, name: &str) -> Result<RelPath, PathError> {
        match parent {
            Some(p) => p.join(name),
            None => RelPath::new(name),
        }
    }

    /// Number of components (1 for a top-level item).
    pub fn depth(&self) -> usize {
        self.0.split('/').count()
    }

    /// Whether `self` is strictly inside folder `dir`.
    pub fn is_inside(&self, dir: &RelPath) -> bool {
        self.0.len() > dir.0.len() && self.0.starts_with(&*dir.0) && self.0.as_bytes()[dir.0.len()] == b'/'
    }

    /// Whether `self` is `dir` or inside it.
    pub fn is_at_or_inside(&self, dir: &RelPath) -> bool {
        self == dir || self.is_inside(dir)
    }

    /// `self` with its prefix `from` replaced by `to`, if `self` is at or inside `from`.
    pub fn rebase(&self, from: &RelPath, to: &RelPath) -> Option<RelPath> {
        if self == from {
            Some(to.clone())
        } else if self.is_inside(from) {
            Some(RelPath(format!("{}{}", to.0, &self.0[from.0.len()..]).into()))
        } else {
            None
        }
    }

    /// The proper ancestors, nearest first.
    pub fn ancestors(&self) -> impl Iterator<Item = RelPath> + '_ {
        let mut cur = self.parent();
        std::iter::from_fn(move || {
            let out = cur.take()?;
            cur = out.parent();
            Some(out)
        })
    }

    /// The key of this path in a case-insensitive namespace (SMB): NFC, then lower-cased.
    pub fn key(&self) -> PathKey {
        PathKey(key_of_str(&self.0))
    }

    /// A path from text that already is one (taken from a `RelPath` earlier).
    pub(crate) fn from_valid(s: &str) -> RelPath {
        RelPath(s.into())
    }
}

/// [`RelPath::key`] of a path's text.
pub(crate) fn key_of_str(s: &str) -> String {
    s.chars().flat_map(char::to_lowercase).collect::<String>().nfc().collect()
}

/// Looking a path up by its text (`str`'s order and hash are `RelPath`'s).
impl std::borrow::Borrow<str> for RelPath {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A path's identity in a case-insensitive namespace; see [`RelPath::key`].
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct PathKey(String);

impl PathKey {
    pub(crate) fn from_raw(s: String) -> PathKey {
        PathKey(s)
    }

    /// The key as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// File or folder.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum ItemKind {
    /// A regular file.
    File,
    /// A folder.
    Dir,
}

/// A SHA-256 digest (64 lowercase hex characters on the wire).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Sha256(pub [u8; 32]);

impl Sha256 {
    /// Parses 64 hex characters.
    pub fn from_hex(s: &str) -> Option<Sha256> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(Sha256(out))
    }

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The digest of `data` (tests and small inputs; stream large content through
    /// [`sha2::Digest`]).
    pub fn of(data: &[u8]) -> Sha256 {
        use sha2::Digest;
        Sha256(sha2::Sha256::digest(data).into())
    }
}

impl fmt::Debug for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", &self.to_hex()[..12])
    }
}

impl fmt::Display for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// A ScaiDrive node id (`fil_…` or `fld_…`), stable across rename, move and trash. Clones
/// share the text.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct NodeId(pub Arc<str>);

/// Looking a node id up by its text.
impl std::borrow::Borrow<str> for NodeId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// A ScaiDrive file version id (`ver_…`). Clones share the text.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct VersionId(pub Arc<str>);

/// An entry on the SMB share, as listed or stat'ed now (content unread).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SmbItem {
    /// Path relative to the sync root.
    pub path: RelPath,
    /// File or folder.
    pub kind: ItemKind,
    /// End-of-file size; 0 for folders.
    pub size: u64,
    /// SMB LastWriteTime.
    pub last_write: FileTime,
    /// SMB ChangeTime (any data or metadata change, including a rename).
    pub change_time: FileTime,
    /// The server's 64-bit file id (stable across rename and move); 0 if unknown.
    pub file_id: u64,
    /// FILE_ATTRIBUTE_HIDDEN.
    pub hidden: bool,
    /// FILE_ATTRIBUTE_SYSTEM.
    pub system: bool,
    /// FILE_ATTRIBUTE_REPARSE_POINT (symlink, junction): never followed nor synced.
    pub reparse: bool,
}

/// A live (not trashed) node in the ScaiDrive target folder.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct DriveItem {
    /// Path relative to the connector's `target_path`.
    pub path: RelPath,
    /// File or folder.
    pub kind: ItemKind,
    /// The node id.
    pub node_id: NodeId,
    /// The current version (files only).
    pub version_id: Option<VersionId>,
    /// Size of the current version; 0 for folders.
    pub size: u64,
    /// Modification time as stored in ScaiDrive.
    pub modified_at: FileTime,
    /// SHA-256 of the current version (files only).
    pub sha256: Option<Sha256>,
}

/// A node in the ScaiDrive trash, as it was when deleted (path = its former path).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct TrashedItem {
    /// The node as it was.
    pub item: DriveItem,
    /// Whether `Restore` would bring it back to `item.path` by itself (its former parent
    /// folder is live, not in the trash).
    pub restorable: bool,
}

/// The SMB half of a synced state.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SmbSide {
    /// File id.
    pub file_id: u64,
    /// Size.
    pub size: u64,
    /// LastWriteTime.
    pub last_write: FileTime,
    /// ChangeTime.
    pub change_time: FileTime,
    /// SHA-256 of the content read (files).
    pub sha256: Option<Sha256>,
}

/// The ScaiDrive half of a synced state.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct DriveSide {
    /// Node id.
    pub node_id: NodeId,
    /// Version (files).
    pub version_id: Option<VersionId>,
    /// Size.
    pub size: u64,
    /// Stored modification time.
    pub modified_at: FileTime,
    /// SHA-256 (files).
    pub sha256: Option<Sha256>,
}

/// The last synced state of one path: at that moment both sides held the same thing, the SMB
/// side looked like `smb` and the ScaiDrive side like `drive` (maps onto proto `FileState`).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SyncedState {
    /// The path on both sides.
    pub path: RelPath,
    /// File or folder.
    pub kind: ItemKind,
    /// The SMB side.
    pub smb: SmbSide,
    /// The ScaiDrive side.
    pub drive: DriveSide,
    /// When it was recorded (provided by the caller of the executor; the planner ignores it).
    pub last_synced_at: FileTime,
}

impl SmbSide {
    /// The SMB side of `item` with a known digest.
    pub fn of(item: &SmbItem, sha256: Option<Sha256>) -> SmbSide {
        SmbSide {
            file_id: item.file_id,
            size: item.size,
            last_write: item.last_write,
            change_time: item.change_time,
            sha256,
        }
    }
}

impl DriveSide {
    /// The ScaiDrive side of `item`.
    pub fn of(item: &DriveItem) -> DriveSide {
        DriveSide {
            node_id: item.node_id.clone(),
            version_id: item.version_id.clone(),
            size: item.size,
            modified_at: item.modified_at,
            sha256: item.sha256,
        }
    }
}

/// What the SMB walker saw, keyed by path (already filtered by [`Filters`], or not: the
/// planner applies the filters again).
#[derive(Clone, Default, Debug)]
pub struct SmbSnapshot {
    /// Items by path.
    pub items: BTreeMap<RelPath, SmbItem>,
}

/// The live ScaiDrive tree under the target path, plus what is known about trashed nodes.
#[derive(Clone, Default, Debug)]
pub struct DriveSnapshot {
    /// Live items by path.
    pub items: BTreeMap<RelPath, DriveItem>,
    /// Trashed nodes known to the worker (from the change log), by node id.
    pub trashed: BTreeMap<NodeId, TrashedItem>,
}

/// The last synced state of every tracked path.
#[derive(Clone, Default, Debug, PartialEq)]
pub struct BaseState {
    /// States by path.
    pub entries: BTreeMap<RelPath, SyncedState>,
}

impl SmbSnapshot {
    /// Builds a snapshot from items.
    pub fn from_items(items: impl IntoIterator<Item = SmbItem>) -> Self {
        SmbSnapshot { items: items.into_iter().map(|i| (i.path.clone(), i)).collect() }
    }
}

impl DriveSnapshot {
    /// Builds a snapshot from live items.
    pub fn from_items(items: impl IntoIterator<Item = DriveItem>) -> Self {
        DriveSnapshot { items: items.into_iter().map(|i| (i.path.clone(), i)).collect(), trashed: BTreeMap::new() }
    }
}

impl BaseState {
    /// Builds a base from states.
    pub fn from_states(states: impl IntoIterator<Item = SyncedState>) -> Self {
        BaseState { entries: states.into_iter().map(|s| (s.path.clone(), s)).collect() }
    }
}

/// Which side is authoritative.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum Direction {
    /// `smb_to_scaidrive`: SMB is authoritative.
    SmbToDrive,
    /// `scaidrive_to_smb`: ScaiDrive is authoritative.
    DriveToSmb,
    /// Changes on either side replicate; conflicts follow [`ConflictStrategy`].
    Bidirectional,
}

/// How a bidirectional conflict is resolved.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum ConflictStrategy {
    /// The newer modification time wins; on a tie, SMB wins.
    LastWriterWins,
    /// The ScaiDrive copy is renamed `name (conflict).ext`; both sides get both files.
    KeepBoth,
    /// ScaiDrive's content wins (SMB's is first kept as a ScaiDrive version).
    DriveWins,
    /// SMB's content wins (ScaiDrive's stays a previous version).
    SmbWins,
}

/// A connector's sync settings.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Direction.
    pub direction: Direction,
    /// Conflict strategy (bidirectional only).
    pub conflict: ConflictStrategy,
    /// Include/exclude filters.
    pub filters: Filters,
    /// A plan that would trash or delete more than this percentage of the tracked files is
    /// blocked. 100 disables the guard.
    pub max_delete_percent: u8,
    /// Sync items with the hidden attribute.
    pub sync_hidden: bool,
    /// Sync items with the system attribute.
    pub sync_system: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            direction: Direction::SmbToDrive,
            conflict: ConflictStrategy::LastWriterWins,
            filters: Filters::default(),
            max_delete_percent: 50,
            sync_hidden: false,
            sync_system: false,
        }
    }
}

/// Filter configuration as the connector stores it (`include_patterns`, `exclude_patterns`).
#[derive(Clone, Debug, Default)]
pub struct FilterConfig {
    /// Whitelisted extensions (any case, with or without the dot).
    pub include_extensions: Vec<String>,
    /// Whitelisted glob patterns.
    pub include_patterns: Vec<String>,
    /// Blacklisted extensions.
    pub exclude_extensions: Vec<String>,
    /// Blacklisted glob patterns (`~$*`, `.DS_Store`, `Thumbs.db`, `tmp/**`).
    pub exclude_patterns: Vec<String>,
}

/// An invalid glob pattern.
#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid filter pattern {pattern:?}: {message}")]
pub struct FilterError {
    /// The pattern.
    pub pattern: String,
    /// Why.
    pub message: String,
}

/// Compiled include/exclude filters. Matching is case-insensitive (like SMB).
///
/// - Include rules (extensions and patterns) are a whitelist for **files**: a file passes if
///   there are no include rules or it matches one. Folders are never excluded by include rules.
/// - Exclude rules are a blacklist for files and folders; an excluded folder is not descended.
/// - A pattern is matched against the item's name and against its path relative to the sync
///   root (`*` does not cross `/`, `**` does): `~$*` matches `a/~$x.docx`, `tmp/**` matches
///   everything under the top-level `tmp`.
/// - Hidden and system items (SMB attributes) are excluded unless the settings enable them;
///   reparse points are never followed (reported as skipped by the planner).
#[derive(Clone, Debug, Default)]
pub struct Filters {
    include_ext: Vec<String>,
    include: Option<GlobSet>,
    exclude_ext: Vec<String>,
    exclude: Option<GlobSet>,
}

/// The last component of a path's text.
pub(crate) fn name_of(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn norm_ext(e: &str) -> String {
    e.trim_start_matches('.').to_lowercase()
}

fn globset(patterns: &[String]) -> Result<Option<GlobSet>, FilterError> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        let g = globset::GlobBuilder::new(p)
            .case_insensitive(true)
            .literal_separator(true)
            .build()
            .map_err(|e| FilterError { pattern: p.clone(), message: e.to_string() })?;
        b.add(g);
    }
    b.build().map(Some).map_err(|e| FilterError { pattern: patterns.join(","), message: e.to_string() })
}

impl Filters {
    /// Compiles a configuration.
    pub fn new(cfg: &FilterConfig) -> Result<Filters, FilterError> {
        let _ = Glob::new; // (GlobBuilder is used for case-insensitivity.)
        Ok(Filters {
            include_ext: cfg.include_extensions.iter().map(|e| norm_ext(e)).collect(),
            include: globset(&cfg.include_patterns)?,
            exclude_ext: cfg.exclude_extensions.iter().map(|e| norm_ext(e)).collect(),
            exclude: globset(&cfg.exclude_patterns)?,
        })
    }

    fn ext(name: &str) -> Option<String> {
        let i = name.rfind('.')?;
        if i == 0 {
            return None;
        }
        Some(name[i + 1..].to_lowercase())
    }

    fn glob_hit(set: &Option<GlobSet>, path: &str) -> bool {
        match set {
            Some(s) => s.is_match(name_of(path)) || s.is_match(path),
            None => false,
        }
    }

    /// Whether the exclude rules match this path itself (not its ancestors).
    pub fn excludes_name(&self, path: &RelPath, kind: ItemKind) -> bool {
        self.excludes_name_str(path.as_str(), kind)
    }

    /// [`Filters::excludes_name`] of a path's text.
    pub(crate) fn excludes_name_str(&self, path: &str, kind: ItemKind) -> bool {
        if Self::glob_hit(&self.exclude, path) {
            return true;
        }
        kind == ItemKind::File
            && !self.exclude_ext.is_empty()
            && Self::ext(name_of(path)).is_some_and(|e| self.exclude_ext.contains(&e))
    }

    /// Whether a file passes the include whitelist (always true for folders).
    pub fn includes(&self, path: &RelPath, kind: ItemKind) -> bool {
        self.includes_str(path.as_str(), kind)
    }

    /// [`Filters::includes`] of a path's text.
    pub(crate) fn includes_str(&self, path: &str, kind: ItemKind) -> bool {
        if kind == ItemKind::Dir || (self.include_ext.is_empty() && self.include.is_none()) {
            return true;
        }
        Self::ext(name_of(path)).is_some_and(|e| self.include_ext.contains(&e)) || Self::glob_hit(&self.include, path)
    }

    /// Whether the item at `path` is out of scope by name rules, looking at the path and
    /// every ancestor folder (exclusion of a folder covers its subtree).
    pub fn excludes_path(&self, path: &RelPath, kind: ItemKind) -> bool {
        self.excludes_name(path, kind)
            || !self.includes(path, kind)
            || path.ancestors().any(|a| self.excludes_name(&a, ItemKind::Dir))
    }

    /// Whether the walker should neither sync nor descend this SMB folder (its ancestors are
    /// assumed already checked by the walker).
    pub fn excludes_dir(&self, item: &SmbItem, settings: &Settings) -> bool {
        item.kind == ItemKind::Dir && (self.excludes_name(&item.path, ItemKind::Dir) || attr_excluded(item, settings))
    }

    /// Whether an SMB item is out of scope: by name rules (including ancestors) or attributes.
    pub fn excludes_smb(&self, item: &SmbItem, settings: &Settings) -> bool {
        attr_excluded(item, settings) || self.excludes_path(&item.path, item.kind)
    }
}

/// Hidden or system attribute without the matching setting. (Reparse points are handled
/// separately: skipped and reported.)
pub fn attr_excluded(item: &SmbItem, settings: &Settings) -> bool {
    (item.hidden && !settings.sync_hidden) || (item.system && !settings.sync_system)
}

/// Why a ScaiDrive name cannot be written to SMB, as a stable code.
///
/// Checks: `< > : " / \ | ? *`, control characters, a trailing dot or space, reserved device
/// names (CON, PRN, AUX, NUL, COM1-9, LPT1-9, with any extension), more than 255 UTF-16 units.
pub fn windows_name_problem(name: &str) -> Option<&'static str> {
    if name.encode_utf16().count() > 255 {
        return Some("NAME_TOO_LONG");
    }
    if name.chars().any(|c| matches!(c, '<' | '>' | ':' | '"' | '/' | '\\' | '|' | '?' | '*') || (c as u32) < 32) {
        return Some("NAME_INVALID_CHARACTER");
    }
    if name.ends_with('.') || name.ends_with(' ') {
        return Some("NAME_TRAILING_DOT_OR_SPACE");
    }
    let stem = name.split('.').next().unwrap_or("").trim_end().to_ascii_uppercase();
    let reserved = matches!(stem.as_str(), "CON" | "PRN" | "AUX" | "NUL")
        || ((stem.starts_with("COM") || stem.starts_with("LPT"))
            && stem.len() == 4
            && matches!(stem.as_bytes()[3], b'1'..=b'9'));
    if reserved {
        return Some("NAME_RESERVED");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> RelPath {
        RelPath::new(s).unwrap()
    }

    #[test]
    fn rel_path_is_nfc_and_rejects_bad_shapes() {
        assert_eq!(p("Cafe\u{301}"), p("Caf\u{e9}"));
        for bad in ["", "/a", "a/", "a//b", "a/./b", "../a"] {
            assert!(RelPath::new(bad).is_err(), "{bad}");
        }
        assert!(p("a/b/c").is_inside(&p("a")));
        assert!(!p("ab/c").is_inside(&p("a")));
        assert_eq!(p("a/b/c").rebase(&p("a/b"), &p("x")), Some(p("x/c")));
        assert_eq!(p("a/b/c").ancestors().collect::<Vec<_>>(), vec![p("a/b"), p("a")]);
    }

    #[test]
    fn key_folds_case_and_normalisation() {
        assert_eq!(p("ÄB/c").key(), p("a\u{308}b/C").key());
    }

    fn filters(inc_ext: &[&str], inc: &[&str], exc: &[&str]) -> Filters {
        Filters::new(&FilterConfig {
            include_extensions: inc_ext.iter().map(|s| s.to_string()).collect(),
            include_patterns: inc.iter().map(|s| s.to_string()).collect(),
            exclude_extensions: vec![],
            exclude_patterns: exc.iter().map(|s| s.to_string()).collect(),
        })
        .unwrap()
    }

    #[test]
    fn spec_exclude_examples_match_names_anywhere_case_insensitively() {
        let f = filters(&[], &[], &["~$*", ".DS_Store", "Thumbs.db", "tmp/**"]);
        assert!(f.excludes_path(&p("a/~$report.docx"), ItemKind::File));
        assert!(f.excludes_path(&p("x/.ds_store"), ItemKind::File));
        assert!(f.excludes_path(&p("THUMBS.DB"), ItemKind::File));
        assert!(f.excludes_path(&p("tmp/a/b"), ItemKind::File));
        assert!(!f.excludes_path(&p("a/tmp.txt"), ItemKind::File));
        assert!(!f.excludes_path(&p("a/report.docx"), ItemKind::File));
    }

    #[test]
    fn includes_whitelist_files_only_and_excluded_folders_cover_subtree() {
        let f = filters(&["PDF", ".docx"], &["keep/*"], &["Private"]);
        assert!(!f.excludes_path(&p("a/x.pdf"), ItemKind::File));
        assert!(!f.excludes_path(&p("a/x.DOCX"), ItemKind::File));
        assert!(f.excludes_path(&p("a/x.txt"), ItemKind::File));
        assert!(!f.excludes_path(&p("keep/x.txt"), ItemKind::File));
        assert!(!f.excludes_path(&p("a.txt.folder"), ItemKind::Dir));
        assert!(f.excludes_path(&p("a/private/x.pdf"), ItemKind::File));
    }

    #[test]
    fn windows_names() {
        for (n, code) in [
            ("a:b", Some("NAME_INVALID_CHARACTER")),
            ("a\u{1}", Some("NAME_INVALID_CHARACTER")),
            ("a.", Some("NAME_TRAILING_DOT_OR_SPACE")),
            ("a ", Some("NAME_TRAILING_DOT_OR_SPACE")),
            ("con", Some("NAME_RESERVED")),
            ("COM1.txt", Some("NAME_RESERVED")),
            ("lpt9.tar.gz", Some("NAME_RESERVED")),
            ("COM10", None),
            ("console", None),
            ("report.docx", None),
        ] {
            assert_eq!(windows_name_problem(n), code, "{n}");
        }
        assert_eq!(windows_name_problem(&"x".repeat(256)), Some("NAME_TOO_LONG"));
    }
}
