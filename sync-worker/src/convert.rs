//! Conversions between the wire (`proto::v1`), the SMB layer and the sync engine's model, and
//! the two roots: SMB `base_path` inside the share, ScaiDrive `target_path` inside the share.
//!
//! Pure functions only.

use proto::v1;
use smb_layer::DirEntry;
use sync_engine::{
    DriveItem, DriveSide, FileTime, ItemKind, NodeId, RelPath, Sha256, SmbItem, SmbSide, SyncedState, VersionId,
};

/// Engine time of a protobuf timestamp (unset = 0).
pub fn ft_of_ts(t: Option<&prost_types::Timestamp>) -> FileTime {
    match t {
        Some(t) => FileTime::from_unix(t.seconds, t.nanos.max(0) as u32),
        None => FileTime(0),
    }
}

/// Protobuf timestamp of an engine time (0 = unset).
pub fn ts_of_ft(t: FileTime) -> Option<prost_types::Timestamp> {
    if t.0 == 0 {
        return None;
    }
    let (seconds, nanos) = t.to_unix();
    Some(prost_types::Timestamp { seconds, nanos: nanos as i32 })
}

/// The sync root inside the SMB share (`base_path`, share-relative, `/`-separated).
///
/// Paths the planner sees are NFC; names on the file server may be spelled otherwise (NFD,
/// as macOS clients write them). The root remembers the server's own spelling of every
/// listed path whose NFC form differs, so operations on SMB use the name the server knows.
#[derive(Clone, Debug)]
pub struct SmbRoot {
    root: String,
    spellings: std::sync::Arc<std::sync::RwLock<std::collections::HashMap<String, String>>>,
}

impl SmbRoot {
    /// From `SmbEndpoint.base_path` (leading/trailing slashes and backslashes tolerated).
    pub fn new(base_path: &str) -> Self {
        SmbRoot { root: smb_layer::path::normalize(&base_path.replace('\\', "/")), spellings: Default::default() }
    }
    /// The root itself, share-relative (`""` for the share root).
    pub fn as_str(&self) -> &str {
        &self.root
    }
    /// The share-relative path of `rel`, in the server's spelling where it differs.
    pub fn abs(&self, rel: &RelPath) -> String {
        let map = self.spellings.read().unwrap_or_else(|e| e.into_inner());
        if !map.is_empty() {
            // The deepest ancestor (or the path itself) with a recorded spelling.
            let p = rel.as_str();
            let mut cut = p.len();
            loop {
                if let Some(raw) = map.get(&p[..cut]) {
                    return smb_layer::path::join(&self.root, &format!("{raw}{}", &p[cut..]));
                }
                match p[..cut].rfind('/') {
                    Some(i) => cut = i,
                    None => break,
                }
            }
        }
        smb_layer::path::join(&self.root, rel.as_str())
    }
    /// The sync-root-relative path of a share-relative path strictly below the root.
    /// Records the server's spelling where it differs from the NFC form.
    pub fn rel(&self, share_path: &str) -> Option<RelPath> {
        let (rel, raw) = self.split(share_path)?;
        if rel.as_str() != raw {
            self.set_spelling(&rel, Some(&raw));
        }
        Some(rel)
    }
    /// [`SmbRoot::rel`] and the server's own spelling of it (root-relative), recording nothing.
    pub fn split(&self, share_path: &str) -> Option<(RelPath, String)> {
        let p = smb_layer::path::normalize(share_path);
        let rest =
            if self.root.is_empty() { p.as_str() } else { p.strip_prefix(self.root.as_str())?.strip_prefix('/')? };
        let rel = RelPath::new(rest).ok()?;
        Some((rel, rest.to_string()))
    }
    /// Records `raw` (root-relative) as the server's spelling of `rel`; `None` forgets it.
    pub fn set_spelling(&self, rel: &RelPath, raw: Option<&str>) {
        let mut map = self.spellings.write().unwrap_or_else(|e| e.into_inner());
        match raw {
            Some(raw) if raw != rel.as_str() => {
                map.insert(rel.as_str().to_string(), raw.to_string());
            }
            _ => {
                map.remove(rel.as_str());
            }
        }
    }
}

/// The sync root inside the ScaiDrive share (`target_path`, absolute).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DriveRoot(String);

impl DriveRoot {
    /// From `ConnectorConfig.target_path` (`"/"`, `"/From Fileserver"`).
    pub fn new(target_path: &str) -> Self {
        let inner = target_path.split('/').filter(|s| !s.is_empty()).collect::<Vec<_>>().join("/");
        DriveRoot(format!("/{inner}"))
    }
    /// `"/"` or `"/a/b"`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// Whether the root is the share root.
    pub fn is_share_root(&self) -> bool {
        self.0 == "/"
    }
    /// The absolute path of `rel`.
    pub fn abs(&self, rel: &RelPath) -> String {
        if self.is_share_root() {
            format!("/{}", rel.as_str())
        } else {
            format!("{}/{}", self.0, rel.as_str())
        }
    }
    /// The absolute path of the folder containing `rel`.
    pub fn parent_abs(&self, rel: &RelPath) -> String {
        match rel.parent() {
            Some(p) => self.abs(&p),
            None => self.0.clone(),
        }
    }
    /// The root-relative path of an absolute path strictly below the root.
    pub fn rel(&self, abs: &str) -> Option<RelPath> {
        let rest = if self.is_share_root() {
            abs.strip_prefix('/')?
        } else {
            abs.strip_prefix(self.0.as_str())?.strip_prefix('/')?
        };
        RelPath::new(rest).ok()
    }
    /// Whether the root is `abs` or inside the folder `abs`.
    pub fn is_at_or_below(&self, abs: &str) -> bool {
        let a = abs.trim_end_matches('/');
        a.is_empty() || self.0 == a || self.0.starts_with(&format!("{a}/"))
    }
    /// Whether `abs` is the root itself.
    pub fn is_root(&self, abs: &str) -> bool {
        abs == self.0 || (self.is_share_root() && abs.is_empty())
    }
}

/// The engine's view of an SMB entry at `rel`.
pub fn smb_item(rel: RelPath, e: &DirEntry) -> SmbItem {
    SmbItem {
        path: rel,
        kind: if e.is_dir { ItemKind::Dir } else { ItemKind::File },
        size: if e.is_dir { 0 } else { e.size },
        last_write: FileTime(e.last_write_time.0),
        change_time: FileTime(e.change_time.0),
        file_id: e.file_id,
        hidden: e.attributes.is_hidden(),
        system: e.attributes.is_system(),
        reparse: e.attributes.is_reparse_point(),
    }
}

fn opt_str(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

/// The engine's kind of a proto kind (unspecified counts as a file).
pub fn kind_of(k: i32) -> ItemKind {
    if k == v1::NodeKind::Folder as i32 {
        ItemKind::Dir
    } else {
        ItemKind::File
    }
}

/// The proto kind of an engine kind.
pub fn proto_kind(k: ItemKind) -> v1::NodeKind {
    match k {
        ItemKind::Dir => v1::NodeKind::Folder,
        ItemKind::File => v1::NodeKind::File,
    }
}

/// The engine's view of a ScaiDrive node at `rel`.
pub fn drive_item(rel: RelPath, n: &v1::Node) -> DriveItem {
    let kind = kind_of(n.kind);
    DriveItem {
        path: rel,
        kind,
        node_id: NodeId(n.id.as_str().into()),
        version_id: if kind == ItemKind::File {
            opt_str(&n.current_version_id).map(|v| VersionId(v.into()))
        } else {
            None
        },
        size: if kind == ItemKind::File { n.size } else { 0 },
        modified_at: ft_of_ts(n.modified_at.as_ref()),
        sha256: if kind == ItemKind::File { Sha256::from_hex(&n.sha256) } else { None },
    }
}

/// A file state as the base to plan against; `None` unless both sides are recorded and the
/// path is valid (states of skipped items, or errors before a first sync, are not a base).
pub fn synced_of_proto(s: &v1::FileState) -> Option<SyncedState> {
    let path = RelPath::new(&s.path).ok()?;
    let smb = s.smb.as_ref()?;
    let drive = s.scaidrive.as_ref()?;
    if drive.node_id.is_empty() {
        return None;
    }
    let ok = matches!(
        v1::FileSyncStatus::try_from(s.status),
        Ok(v1::FileSyncStatus::Synced | v1::FileSyncStatus::ConflictResolved | v1::FileSyncStatus::Error)
    );
    if !ok {
        return None;
    }
    Some(SyncedState {
        path,
        kind: kind_of(s.kind),
        smb: SmbSide {
            file_id: smb.file_id,
            size: smb.size,
            last_write: ft_of_ts(smb.modified_at.as_ref()),
            change_time: ft_of_ts(smb.changed_at.as_ref()),
            sha256: Sha256::from_hex(&smb.sha256),
        },
        drive: DriveSide {
            node_id: NodeId(drive.node_id.as_str().into()),
            version_id: opt_str(&drive.version_id).map(|v| VersionId(v.into())),
            size: drive.size,
            modified_at: ft_of_ts(drive.modified_at.as_ref()),
            sha256: Sha256::from_hex(&drive.sha256),
        },
        last_synced_at: ft_of_ts(s.synced_at.as_ref()),
    })
}

/// The SMB half of a file state.
pub fn smb_state(s: &SmbSide) -> v1::SmbItemState {
    v1::SmbItemState {
        size: s.size,
        modified_at: ts_of_ft(s.last_write),
        changed_at: ts_of_ft(s.change_time),
        created_at: None,
        file_id: s.file_id,
        sha256: s.sha256.map(|h| h.to_hex()).unwrap_or_default(),
    }
}

/// The ScaiDrive half of a file state.
pub fn drive_state(d: &DriveSide) -> v1::ScaiDriveItemState {
    v1::ScaiDriveItemState {
        node_id: d.node_id.0.to_string(),
        version_id: d.version_id.as_ref().map(|v| v.0.to_string()).unwrap_or_default(),
        size: d.size,
        modified_at: ts_of_ft(d.modified_at),
        sha256: d.sha256.map(|h| h.to_hex()).unwrap_or_default(),
    }
}

/// A synced state as sent to `ReportFileStates`.
pub fn file_state(s: &SyncedState, status: v1::FileSyncStatus) -> v1::FileState {
    v1::FileState {
        path: s.path.as_str().to_string(),
        kind: proto_kind(s.kind) as i32,
        status: status as i32,
        smb: Some(smb_state(&s.smb)),
        scaidrive: Some(drive_state(&s.drive)),
        error: None,
        synced_at: ts_of_ft(s.last_synced_at).or_else(|| Some(crate::rpc::now_ts())),
    }
}

/// The NT status written in a message as `NT status 0x…` (how `SmbError` displays it).
pub fn nt_status_in(message: &str) -> Option<String> {
    let i = message.find("NT status 0x")?;
    let hex: String = message[i + 10..].chars().take(10).collect();
    (hex.len() == 10 && hex[2..].chars().all(|c| c.is_ascii_hexdigit())).then_some(hex)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> RelPath {
        RelPath::new(s).unwrap()
    }

    #[test]
    fn roots_map_paths_both_ways() {
        let smb = SmbRoot::new("/Finance/2026/");
        assert_eq!(smb.abs(&p("a/b.txt")), "Finance/2026/a/b.txt");
        assert_eq!(smb.rel("Finance/2026/a/b.txt"), Some(p("a/b.txt")));
        assert_eq!(smb.rel("Finance/2026"), None);
        assert_eq!(smb.rel("Finance/20267/x"), None);
        assert_eq!(SmbRoot::new("").rel("x/y"), Some(p("x/y")));

        let d = DriveRoot::new("/From Fileserver/");
        assert_eq!(d.as_str(), "/From Fileserver");
        assert_eq!(d.abs(&p("a/b")), "/From Fileserver/a/b");
        assert_eq!(d.parent_abs(&p("a")), "/From Fileserver");
        assert_eq!(d.rel("/From Fileserver/a/b"), Some(p("a/b")));
        assert_eq!(d.rel("/From Fileserverx/a"), None);
        assert!(d.is_root("/From Fileserver"));
        let r = DriveRoot::new("/");
        assert_eq!(r.abs(&p("a")), "/a");
        assert_eq!(r.rel("/a/b"), Some(p("a/b")));
        assert_eq!(r.parent_abs(&p("a")), "/");
    }

    #[test]
    fn smb_paths_keep_the_servers_spelling_of_names() {
        let smb = SmbRoot::new("base");
        let nfd = "Nai\u{308}ve/re\u{301}sume\u{301}.txt";
        let rel = smb.rel(&format!("base/{nfd}")).unwrap();
        assert_eq!(rel.as_str(), "Na\u{ef}ve/r\u{e9}sum\u{e9}.txt", "the planner sees NFC");
        assert_eq!(smb.abs(&rel), format!("base/{nfd}"), "SMB gets the name it listed");
        // A new file inside a folder listed in NFD lands in that folder.
        smb.rel("base/Nai\u{308}ve");
        assert_eq!(smb.abs(&p("Na\u{ef}ve/new.txt")), "base/Nai\u{308}ve/new.txt");
        // Clones share what was learned (the scan's root and the replica's).
        assert_eq!(smb.clone().abs(&rel), format!("base/{nfd}"));
        assert_eq!(smb.abs(&p("plain/x")), "base/plain/x");
    }

    #[test]
    fn times_round_trip() {
        let ts = prost_types::Timestamp { seconds: 1_776_938_400, nanos: 123_456_700 };
        assert_eq!(ts_of_ft(ft_of_ts(Some(&ts))), Some(ts));
        assert_eq!(ts_of_ft(FileTime(0)), None);
    }

    #[test]
    fn nt_status_is_found_in_smb_messages() {
        assert_eq!(
            nt_status_in("sharing violation (file in use or locked): a (NT status 0xC0000043)").as_deref(),
            Some("0xC0000043")
        );
        assert_eq!(nt_status_in("nothing"), None);
    }
}
