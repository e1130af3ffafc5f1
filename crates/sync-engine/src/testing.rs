//! In-memory replicas for tests: an SMB share ([`MemSmb`], case-insensitive, file ids, change
//! times, temp files), a ScaiDrive folder ([`MemDrive`], node ids, every version kept forever,
//! trash), a state store ([`MemState`]), and injected crashes ([`Faults`]).
//!
//! Public behind the `testing` feature so the sync-worker's tests can reuse them. Never used
//! in production code.
//!
//! A crash is simulated by [`Faults::crash_after`]: after that many replica or state calls,
//! every further call fails with code `CRASHED`, as if the process had died at that point.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;

use crate::model::*;
use crate::replica::*;

/// Shared fault injection and logical clock.
#[derive(Debug, Default)]
pub struct Faults {
    /// Calls left before the crash; negative = no crash planned.
    left: AtomicI64,
    clock: AtomicU64,
}

impl Faults {
    /// No crash planned.
    pub fn new() -> Arc<Faults> {
        let f = Faults::default();
        f.left.store(-1, Ordering::SeqCst);
        f.clock.store(1_000, Ordering::SeqCst);
        Arc::new(f)
    }

    /// Every call after the next `n` fails.
    pub fn crash_after(&self, n: u64) {
        self.left.store(n as i64, Ordering::SeqCst);
    }

    /// Back to normal.
    pub fn heal(&self) {
        self.left.store(-1, Ordering::SeqCst);
    }

    fn check(&self) -> Result<(), ReplicaError> {
        let r = self.left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| if v > 0 { Some(v - 1) } else { None });
        match r {
            Ok(_) => Ok(()),
            Err(v) if v < 0 => Ok(()),
            Err(_) => Err(ReplicaError::new("CRASHED", "injected crash")),
        }
    }

    /// A fresh, strictly increasing time.
    pub fn tick(&self) -> FileTime {
        FileTime(self.clock.fetch_add(1, Ordering::SeqCst) + 1)
    }
}

fn chunked(data: Bytes) -> ByteStream {
    let chunks: Vec<Result<Bytes, ReplicaError>> = if data.is_empty() {
        vec![]
    } else {
        (0..data.len()).step_by(5).map(|i| Ok(data.slice(i..(i + 5).min(data.len())))).collect()
    };
    futures::stream::iter(chunks).boxed()
}

async fn collect(mut s: ByteStream) -> Result<Bytes, ReplicaError> {
    let mut v = Vec::new();
    while let Some(c) = s.next().await {
        v.extend_from_slice(&c?);
    }
    Ok(Bytes::from(v))
}

fn err(code: &str, msg: impl Into<String>) -> ReplicaError {
    ReplicaError::new(code, msg)
}

fn p(s: &str) -> RelPath {
    RelPath::new(s).expect("valid test path")
}

// -------------------------------------------------------------------------------------------
// SMB

#[derive(Clone, Debug)]
struct SmbEntry {
    path: RelPath,
    kind: ItemKind,
    data: Bytes,
    file_id: u64,
    last_write: FileTime,
    change_time: FileTime,
    hidden: bool,
    system: bool,
    reparse: bool,
}

impl SmbEntry {
    fn item(&self) -> SmbItem {
        SmbItem {
            path: self.path.clone(),
            kind: self.kind,
            size: self.data.len() as u64,
            last_write: self.last_write,
            change_time: self.change_time,
            file_id: self.file_id,
            hidden: self.hidden,
            system: self.system,
            reparse: self.reparse,
        }
    }
}

/// An in-memory SMB share: case-insensitive, case-preserving names, stable file ids.
pub struct MemSmb {
    fs: Mutex<(BTreeMap<PathKey, SmbEntry>, u64)>,
    faults: Arc<Faults>,
    on_read: Mutex<Option<(PathKey, Bytes)>>,
    probe: Mutex<Option<Arc<ReadProbe>>>,
}

/// Counts reads in flight (see [`MemSmb::probe_reads`]): every `open_read` is held for the
/// probe's delay while counted, so the peaks show how many transfers the executor overlaps.
#[derive(Debug, Default)]
pub struct ReadProbe {
    delay: std::time::Duration,
    /// (in flight now, of them over [`crate::exec::LARGE_TRANSFER_BYTES`], peak of all, peak of large).
    counts: Mutex<(usize, usize, usize, usize)>,
}

impl ReadProbe {
    /// The peaks: (reads at once, large reads at once).
    pub fn peaks(&self) -> (usize, usize) {
        let c = self.counts.lock().unwrap();
        (c.2, c.3)
    }
}

impl MemSmb {
    /// An empty share.
    pub fn new(faults: Arc<Faults>) -> Self {
        MemSmb { fs: Mutex::new((BTreeMap::new(), 0)), faults, on_read: Mutex::new(None), probe: Mutex::new(None) }
    }

    /// From now on every `open_read` waits `delay` (a tokio timer) while it is counted.
    pub fn probe_reads(&self, delay: std::time::Duration) -> Arc<ReadProbe> {
        let probe = Arc::new(ReadProbe { delay, ..ReadProbe::default() });
        *self.probe.lock().unwrap() = Some(probe.clone());
        probe
    }

    /// Everything on the share (the engine's temp files included).
    pub fn snapshot(&self) -> SmbSnapshot {
        let fs = self.fs.lock().unwrap();
        SmbSnapshot::from_items(fs.0.values().map(|e| e.item()))
    }

    /// Files (path → content) and folders, for comparisons; temp files excluded.
    pub fn tree(&self) -> BTreeMap<String, Option<Bytes>> {
        let fs = self.fs.lock().unwrap();
        fs.0.values()
            .filter(|e| !e.path.name().starts_with(TEMP_PREFIX))
            .map(|e| (e.path.as_str().to_string(), (e.kind == ItemKind::File).then(|| e.data.clone())))
            .collect()
    }

    /// The content of every file.
    pub fn contents(&self) -> BTreeSet<Bytes> {
        let fs = self.fs.lock().unwrap();
        fs.0.values().filter(|e| e.kind == ItemKind::File).map(|e| e.data.clone()).collect()
    }

    fn mkdirs(&self, fs: &mut (BTreeMap<PathKey, SmbEntry>, u64), dir: &RelPath) -> bool {
        if let Some(parent) = dir.parent() {
            if !self.mkdirs(fs, &parent) {
                return false;
            }
        }
        match fs.0.get(&dir.key()) {
            Some(e) => e.kind == ItemKind::Dir,
            None => {
                fs.1 += 1;
                let t = self.faults.tick();
                let path = canon(&fs.0, dir);
                fs.0.insert(
                    dir.key(),
                    SmbEntry {
                        path,
                        kind: ItemKind::Dir,
                        data: Bytes::new(),
                        file_id: fs.1,
                        last_write: t,
                        change_time: t,
                        hidden: false,
                        system: false,
                        reparse: false,
                    },
                );
                true
            }
        }
    }

    /// User action: writes a file (creating parent folders); false if a folder is in the way.
    pub fn user_write(&self, path: &str, data: &[u8]) -> bool {
        let path = p(path);
        let mut fs = self.fs.lock().unwrap();
        if let Some(parent) = path.parent() {
            if !self.mkdirs(&mut fs, &parent) {
                return false;
            }
        }
        let t = self.faults.tick();
        let next_id = fs.1 + 1;
        let path = canon(&fs.0, &path);
        match fs.0.get_mut(&path.key()) {
            Some(e) if e.kind == ItemKind::Dir => false,
            Some(e) => {
                e.data = Bytes::copy_from_slice(data);
                e.last_write = t;
                e.change_time = t;
                true
            }
            None => {
                fs.1 = next_id;
                fs.0.insert(
                    path.key(),
                    SmbEntry {
                        path,
                        kind: ItemKind::File,
                        data: Bytes::copy_from_slice(data),
                        file_id: next_id,
                        last_write: t,
                        change_time: t,
                        hidden: false,
                        system: false,
                        reparse: false,
                    },
                );
                true
            }
        }
    }

    /// Simulates a user writing `data` to `path` right after the next read of it started.
    pub fn change_on_next_read(&self, path: &str, data: &[u8]) {
        *self.on_read.lock().unwrap() = Some((p(path).key(), Bytes::copy_from_slice(data)));
    }

    /// User action: creates folders.
    pub fn user_mkdir(&self, path: &str) -> bool {
        let mut fs = self.fs.lock().unwrap();
        self.mkdirs(&mut fs, &p(path))
    }

    /// User action: deletes an item with its subtree.
    pub fn user_delete(&self, path: &str) -> bool {
        let path = p(path);
        let mut fs = self.fs.lock().unwrap();
        let keys: Vec<PathKey> =
            fs.0.iter()
                .filter(|(_, e)| e.path.key() == path.key() || e.path.key_inside(&path))
                .map(|(k, _)| k.clone())
                .collect();
        for k in &keys {
            fs.0.remove(k);
        }
        !keys.is_empty()
    }

    /// User action: renames/moves an item with its subtree (destination parent must exist).
    pub fn user_rename(&self, from: &str, to: &str) -> bool {
        let mut fs = self.fs.lock().unwrap();
        let t = self.faults.tick();
        Self::rename_in(&mut fs.0, &p(from), &p(to), t).is_ok()
    }

    /// User action: sets attributes.
    pub fn user_set_attrs(&self, path: &str, hidden: bool, system: bool, reparse: bool) {
        let mut fs = self.fs.lock().unwrap();
        if let Some(e) = fs.0.get_mut(&p(path).key()) {
            e.hidden = hidden;
            e.system = system;
            e.reparse = reparse;
        }
    }

    fn rename_in(
        m: &mut BTreeMap<PathKey, SmbEntry>,
        from: &RelPath,
        to: &RelPath,
        t: FileTime,
    ) -> Result<SmbItem, ReplicaError> {
        if !m.contains_key(&from.key()) {
            return Err(err(codes::NOT_FOUND, format!("{from}")));
        }
        if to.key() != from.key() && m.contains_key(&to.key()) {
            return Err(err(codes::NAME_CONFLICT, format!("{to}")));
        }
        if to.key_inside(from) {
            return Err(err(codes::NAME_CONFLICT, "into itself"));
        }
        let to = &canon(m, to);
        if let Some(parent) = to.parent() {
            if m.get(&parent.key()).map(|e| e.kind) != Some(ItemKind::Dir) {
                return Err(err(codes::NOT_FOUND, format!("parent of {to}")));
            }
        }
        let root_len = m[&from.key()].path.as_str().len();
        let keys: Vec<PathKey> = m
            .iter()
            .filter(|(_, e)| e.path.key() == from.key() || e.path.key_inside(from))
            .map(|(k, _)| k.clone())
            .collect();
        let entries: Vec<SmbEntry> = keys.iter().map(|k| m.remove(k).unwrap()).collect();
        let mut out = None;
        for mut e in entries {
            let rest = e.path.as_str()[root_len..].to_string();
            e.path = p(&format!("{}{}", to.as_str(), rest));
            if rest.is_empty() {
                e.change_time = t;
                out = Some(e.item());
            }
            m.insert(e.path.key(), e);
        }
        Ok(out.expect("root moved"))
    }
}

/// `path` spelled the way the share spells its parent folder (SMB preserves the case an item
/// was created with; a child created through another spelling lands in the same folder).
fn canon(m: &BTreeMap<PathKey, SmbEntry>, path: &RelPath) -> RelPath {
    match path.parent().and_then(|pp| m.get(&pp.key())) {
        Some(parent) => parent.path.join(path.name()).expect("valid"),
        None => path.clone(),
    }
}

impl RelPath {
    /// Whether `self` is inside `dir` in the case-insensitive namespace.
    fn key_inside(&self, dir: &RelPath) -> bool {
        let (a, b) = (self.key(), dir.key());
        a.as_str().len() > b.as_str().len()
            && a.as_str().starts_with(b.as_str())
            && a.as_str().as_bytes()[b.as_str().len()] == b'/'
    }
}

#[async_trait]
impl SmbReplica for MemSmb {
    async fn stat(&self, path: &RelPath) -> Result<Option<SmbItem>, ReplicaError> {
        self.faults.check()?;
        Ok(self.fs.lock().unwrap().0.get(&path.key()).map(|e| e.item()))
    }

    async fn read(&self, path: &RelPath) -> Result<ByteStream, ReplicaError> {
        self.faults.check()?;
        let stream = {
            let fs = self.fs.lock().unwrap();
            match fs.0.get(&path.key()) {
                Some(e) if e.kind == ItemKind::File => chunked(e.data.clone()),
                _ => return Err(err(codes::NOT_FOUND, format!("{path}"))),
            }
        };
        let hook = self.on_read.lock().unwrap().take_if(|(k, _)| *k == path.key());
        if let Some((_, data)) = hook {
            self.user_write(path.as_str(), &data);
        }
        Ok(stream)
    }

    /// Like the SMB replica: the content as it was at open, then a check of the file against
    /// its state at open (a write meanwhile, e.g. by [`MemSmb::change_on_next_read`], fails
    /// the stream's end with `SMB_CHANGED_DURING_READ`).
    async fn open_read(&self, path: &RelPath) -> Result<Option<(SmbItem, ByteStream)>, ReplicaError> {
        let Some(item) = self.stat(path).await? else {
            return Ok(None);
        };
        if item.kind != ItemKind::File {
            return Ok(Some((item, futures::stream::empty().boxed())));
        }
        let probe = self.probe.lock().unwrap().clone();
        if let Some(p) = probe {
            let large = item.size > crate::exec::LARGE_TRANSFER_BYTES;
            {
                let mut c = p.counts.lock().unwrap();
                c.0 += 1;
                c.1 += large as usize;
                c.2 = c.2.max(c.0);
                c.3 = c.3.max(c.1);
            }
            tokio::time::sleep(p.delay).await;
            let mut c = p.counts.lock().unwrap();
            c.0 -= 1;
            c.1 -= large as usize;
        }
        let content = self.read(path).await?;
        // The in-memory share changes only between calls, so the state after `read` is the
        // state after the last byte.
        let same = self.fs.lock().unwrap().0.get(&path.key()).map(|e| e.item()) == Some(item.clone());
        let end: Vec<Result<Bytes, ReplicaError>> = if same {
            vec![]
        } else {
            vec![Err(err("SMB_CHANGED_DURING_READ", format!("{path} changed while being read")))]
        };
        Ok(Some((item, content.chain(futures::stream::iter(end)).boxed())))
    }

    async fn write_temp(&self, target: &RelPath, data: ByteStream) -> Result<TempFile, ReplicaError> {
        self.faults.check()?;
        let data = collect(data).await?;
        self.faults.check()?;
        let mut fs = self.fs.lock().unwrap();
        if let Some(parent) = target.parent() {
            if fs.0.get(&parent.key()).map(|e| e.kind) != Some(ItemKind::Dir) {
                return Err(err(codes::NOT_FOUND, format!("parent of {target}")));
            }
        }
        fs.1 += 1;
        let id = fs.1;
        let temp = RelPath::child_of(target.parent().as_ref(), &format!("{TEMP_PREFIX}{id}")).unwrap();
        let temp = canon(&fs.0, &temp);
        let t = self.faults.tick();
        fs.0.insert(
            temp.key(),
            SmbEntry {
                path: temp.clone(),
                kind: ItemKind::File,
                data,
                file_id: id,
                last_write: t,
                change_time: t,
                hidden: false,
                system: false,
                reparse: false,
            },
        );
        Ok(TempFile { path: temp })
    }

    async fn commit_temp(
        &self,
        temp: &TempFile,
        target: &RelPath,
        expected: Option<&SmbExpect>,
        last_write: FileTime,
    ) -> Result<SmbItem, ReplicaError> {
        self.faults.check()?;
        let mut fs = self.fs.lock().unwrap();
        let cur = fs.0.get(&target.key()).map(|e| e.item());
        let ok = match (expected, &cur) {
            (None, None) => true,
            (Some(e), Some(c)) => c.kind == ItemKind::File && e.matches(c),
            _ => false,
        };
        if !ok {
            return Err(err(codes::SMB_CHANGED, format!("{target} is not what the plan saw")));
        }
        let mut e = fs.0.remove(&temp.path.key()).ok_or_else(|| err(codes::NOT_FOUND, "temp"))?;
        fs.0.remove(&target.key());
        e.path = canon(&fs.0, target);
        e.last_write = last_write;
        e.change_time = self.faults.tick();
        let item = e.item();
        fs.0.insert(target.key(), e);
        Ok(item)
    }

    async fn discard_temp(&self, temp: &TempFile) -> Result<(), ReplicaError> {
        self.faults.check()?;
        self.fs.lock().unwrap().0.remove(&temp.path.key());
        Ok(())
    }

    async fn mkdir(&self, path: &RelPath) -> Result<SmbItem, ReplicaError> {
        self.faults.check()?;
        let mut fs = self.fs.lock().unwrap();
        if let Some(parent) = path.parent() {
            if fs.0.get(&parent.key()).map(|e| e.kind) != Some(ItemKind::Dir) {
                return Err(err(codes::NOT_FOUND, format!("parent of {path}")));
            }
        }
        if let Some(e) = fs.0.get(&path.key()) {
            return if e.kind == ItemKind::Dir {
                Ok(e.item())
            } else {
                Err(err(codes::NAME_CONFLICT, format!("{path}")))
            };
        }
        self.mkdirs(&mut fs, path);
        Ok(fs.0[&path.key()].item())
    }

    async fn rename(&self, from: &RelPath, to: &RelPath, expected_file_id: u64) -> Result<SmbItem, ReplicaError> {
        self.faults.check()?;
        let mut fs = self.fs.lock().unwrap();
        match fs.0.get(&from.key()) {
            Some(e) if expected_file_id == 0 || e.file_id == expected_file_id => {}
            _ => return Err(err(codes::SMB_CHANGED, format!("{from} is not what the plan saw"))),
        }
        let t = self.faults.tick();
        Self::rename_in(&mut fs.0, from, to, t)
    }

    async fn delete(&self, path: &RelPath, kind: ItemKind, expected: Option<&SmbExpect>) -> Result<(), ReplicaError> {
        self.faults.check()?;
        let mut fs = self.fs.lock().unwrap();
        let Some(e) = fs.0.get(&path.key()).cloned() else {
            return Err(err(codes::NOT_FOUND, format!("{path}")));
        };
        if e.kind != kind {
            return Err(err(codes::KIND_MISMATCH, format!("{path}")));
        }
        if let Some(x) = expected {
            if !x.matches(&e.item()) {
                return Err(err(codes::SMB_CHANGED, format!("{path} is not what the plan saw")));
            }
        }
        if kind == ItemKind::Dir {
            let children: Vec<(PathKey, SmbEntry)> =
                fs.0.iter().filter(|(_, c)| c.path.key_inside(path)).map(|(k, c)| (k.clone(), c.clone())).collect();
            if children.iter().any(|(_, c)| !c.path.name().starts_with(TEMP_PREFIX) || c.kind == ItemKind::Dir) {
                return Err(err("SMB_DIRECTORY_NOT_EMPTY", format!("{path}")));
            }
            for (k, _) in children {
                fs.0.remove(&k);
            }
        }
        fs.0.remove(&path.key());
        Ok(())
    }

    async fn set_times(&self, path: &RelPath, last_write: FileTime) -> Result<SmbItem, ReplicaError> {
        self.faults.check()?;
        let mut fs = self.fs.lock().unwrap();
        let t = self.faults.tick();
        let e = fs.0.get_mut(&path.key()).ok_or_else(|| err(codes::NOT_FOUND, format!("{path}")))?;
        e.last_write = last_write;
        e.change_time = t;
        Ok(e.item())
    }
}

// -------------------------------------------------------------------------------------------
// ScaiDrive

#[derive(Clone, Debug)]
struct Version {
    id: VersionId,
    data: Bytes,
    sha: Sha256,
    modified_at: FileTime,
}

#[derive(Clone, Debug)]
struct Node {
    id: NodeId,
    parent: Option<NodeId>,
    name: String,
    kind: ItemKind,
    versions: Vec<Version>,
    modified_at: FileTime,
    trashed: bool,
}

#[derive(Default)]
struct DriveFs {
    nodes: BTreeMap<NodeId, Node>,
    next: u64,
}

impl DriveFs {
    fn id(&mut self, prefix: &str) -> String {
        self.next += 1;
        // ScaiDrive's shape (prefix and ULID), which the compact synced states store in 16 bytes.
        format!("{prefix}_01JD{:022}", self.next)
    }

    fn path_of(&self, id: &NodeId) -> RelPath {
        let mut names = vec![];
        let mut cur = Some(id.clone());
        while let Some(c) = cur {
            let n = &self.nodes[&c];
            names.push(n.name.clone());
            cur = n.parent.clone();
        }
        names.reverse();
        p(&names.join("/"))
    }

    fn live(&self, id: &NodeId) -> bool {
        let mut cur = Some(id.clone());
        while let Some(c) = cur {
            let n = &self.nodes[&c];
            if n.trashed {
                return false;
            }
            cur = n.parent.clone();
        }
        true
    }

    fn child(&self, parent: Option<&NodeId>, name: &str) -> Option<NodeId> {
        self.nodes.values().find(|n| n.parent.as_ref() == parent && n.name == name && !n.trashed).map(|n| n.id.clone())
    }

    /// The live node at `path` (exact, case-sensitive).
    fn lookup(&self, path: &RelPath) -> Option<NodeId> {
        let mut cur: Option<NodeId> = None;
        for c in path.as_str().split('/') {
            cur = Some(self.child(cur.as_ref(), c)?);
        }
        cur
    }

    fn item(&self, id: &NodeId) -> DriveItem {
        let n = &self.nodes[id];
        let cur = n.versions.last();
        DriveItem {
            path: self.path_of(id),
            kind: n.kind,
            node_id: n.id.clone(),
            version_id: cur.map(|v| v.id.clone()),
            size: cur.map(|v| v.data.len() as u64).unwrap_or(0),
            modified_at: cur.map(|v| v.modified_at).unwrap_or(n.modified_at),
            sha256: cur.map(|v| v.sha),
        }
    }

    fn mkdirs(&mut self, dir: Option<&RelPath>, t: FileTime) -> Result<Option<NodeId>, ReplicaError> {
        let Some(dir) = dir else { return Ok(None) };
        let parent = self.mkdirs(dir.parent().as_ref(), t)?;
        match self.child(parent.as_ref(), dir.name()) {
            Some(id) if self.nodes[&id].kind == ItemKind::Dir => Ok(Some(id)),
            Some(_) => Err(err(codes::NAME_CONFLICT, format!("{dir} is a file"))),
            None => {
                let id = NodeId(self.id("fld").into());
                self.nodes.insert(
                    id.clone(),
                    Node {
                        id: id.clone(),
                        parent,
                        name: dir.name().to_string(),
                        kind: ItemKind::Dir,
                        versions: vec![],
                        modified_at: t,
                        trashed: false,
                    },
                );
                Ok(Some(id))
            }
        }
    }

    fn put_file(&mut self, path: &RelPath, data: Bytes, t: FileTime) -> Result<NodeId, ReplicaError> {
        let parent = self.mkdirs(path.parent().as_ref(), t)?;
        let vid = VersionId(self.id("ver").into());
        let v = Version { id: vid, sha: Sha256::of(&data), data, modified_at: t };
        match self.child(parent.as_ref(), path.name()) {
            Some(id) if self.nodes[&id].kind == ItemKind::Dir => Err(err(codes::NAME_CONFLICT, format!("{path}"))),
            Some(id) => {
                self.nodes.get_mut(&id).unwrap().versions.push(v);
                Ok(id)
            }
            None => {
                let id = NodeId(self.id("fil").into());
                self.nodes.insert(
                    id.clone(),
                    Node {
                        id: id.clone(),
                        parent,
                        name: path.name().to_string(),
                        kind: ItemKind::File,
                        versions: vec![v],
                        modified_at: t,
                        trashed: false,
                    },
                );
                Ok(id)
            }
        }
    }

    fn check_base(&self, id: &NodeId, base: Option<&VersionId>) -> Result<(), ReplicaError> {
        if let Some(b) = base {
            let n = &self.nodes[id];
            if n.kind == ItemKind::File && n.versions.last().map(|v| &v.id) != Some(b) {
                return Err(err(codes::VERSION_CONFLICT, format!("{}", self.path_of(id))));
            }
        }
        Ok(())
    }
}

/// An in-memory ScaiDrive folder: node ids, all versions kept forever, a trash.
pub struct MemDrive {
    fs: Mutex<DriveFs>,
    faults: Arc<Faults>,
}

impl MemDrive {
    /// An empty folder.
    pub fn new(faults: Arc<Faults>) -> Self {
        MemDrive { fs: Mutex::new(DriveFs::default()), faults }
    }

    /// Live items and trashed nodes, as the worker would build them.
    pub fn snapshot(&self) -> DriveSnapshot {
        let fs = self.fs.lock().unwrap();
        let mut snap = DriveSnapshot::default();
        for id in fs.nodes.keys() {
            if fs.live(id) {
                let it = fs.item(id);
                snap.items.insert(it.path.clone(), it);
            } else if fs.nodes[id].trashed {
                let restorable = fs.nodes[id].parent.as_ref().is_none_or(|p| fs.live(p));
                snap.trashed.insert(id.clone(), TrashedItem { item: fs.item(id), restorable });
            }
        }
        snap
    }

    /// Live files (path → current content) and folders.
    pub fn tree(&self) -> BTreeMap<String, Option<Bytes>> {
        let fs = self.fs.lock().unwrap();
        fs.nodes
            .keys()
            .filter(|id| fs.live(id))
            .map(|id| {
                let n = &fs.nodes[id];
                (
                    fs.path_of(id).as_str().to_string(),
                    n.versions.last().map(|v| v.data.clone()).or((n.kind == ItemKind::File).then(Bytes::new)),
                )
            })
            .collect()
    }

    /// Every content ever stored (all versions, live or trashed).
    pub fn all_contents(&self) -> BTreeSet<Bytes> {
        let fs = self.fs.lock().unwrap();
        fs.nodes.values().flat_map(|n| n.versions.iter().map(|v| v.data.clone())).collect()
    }

    /// Number of versions stored.
    pub fn version_count(&self) -> usize {
        self.fs.lock().unwrap().nodes.values().map(|n| n.versions.len()).sum()
    }

    /// User action: writes a file (new file or new version; parents created).
    pub fn user_write(&self, path: &str, data: &[u8]) -> bool {
        let t = self.faults.tick();
        self.fs.lock().unwrap().put_file(&p(path), Bytes::copy_from_slice(data), t).is_ok()
    }

    /// User action: creates folders.
    pub fn user_mkdir(&self, path: &str) -> bool {
        let t = self.faults.tick();
        self.fs.lock().unwrap().mkdirs(Some(&p(path)), t).is_ok()
    }

    /// User action: trashes an item.
    pub fn user_delete(&self, path: &str) -> bool {
        let mut fs = self.fs.lock().unwrap();
        match fs.lookup(&p(path)) {
            Some(id) => {
                fs.nodes.get_mut(&id).unwrap().trashed = true;
                true
            }
            None => false,
        }
    }

    /// User action: moves/renames (destination parent must exist, name free).
    pub fn user_rename(&self, from: &str, to: &str) -> bool {
        let mut fs = self.fs.lock().unwrap();
        let Some(id) = fs.lookup(&p(from)) else {
            return false;
        };
        Self::move_in(&mut fs, &id, &p(to)).is_ok()
    }

    fn move_in(fs: &mut DriveFs, id: &NodeId, to: &RelPath) -> Result<DriveItem, ReplicaError> {
        let parent = match to.parent() {
            None => None,
            Some(pp) => {
                let pid = fs.lookup(&pp).ok_or_else(|| err(codes::NOT_FOUND, format!("parent of {to}")))?;
                if fs.nodes[&pid].kind != ItemKind::Dir {
                    return Err(err(codes::KIND_MISMATCH, format!("{pp}")));
                }
                // Not into its own subtree.
                let mut cur = Some(pid.clone());
                while let Some(c) = cur {
                    if &c == id {
                        return Err(err(codes::NAME_CONFLICT, "into itself"));
                    }
                    cur = fs.nodes[&c].parent.clone();
                }
                Some(pid)
            }
        };
        if let Some(other) = fs.child(parent.as_ref(), to.name()) {
            if &other != id {
                return Err(err(codes::NAME_CONFLICT, format!("{to}")));
            }
        }
        let n = fs.nodes.get_mut(id).unwrap();
        n.parent = parent;
        n.name = to.name().to_string();
        Ok(fs.item(id))
    }
}

#[async_trait]
impl DriveReplica for MemDrive {
    async fn stat(&self, node: &NodeId) -> Result<Option<(DriveItem, bool)>, ReplicaError> {
        self.faults.check()?;
        let fs = self.fs.lock().unwrap();
        Ok(fs.nodes.contains_key(node).then(|| (fs.item(node), !fs.live(node))))
    }

    async fn upload(&self, spec: &UploadSpec, data: ByteStream) -> Result<Committed, ReplicaError> {
        self.faults.check()?;
        let data = collect(data).await?;
        self.faults.check()?;
        let sha = Sha256::of(&data);
        if data.len() as u64 != spec.size || spec.sha256.is_some_and(|s| s != sha) {
            return Err(err(codes::CHECKSUM_MISMATCH, format!("{}", spec.path)));
        }
        let mut fs = self.fs.lock().unwrap();
        let existing = fs.lookup(&spec.path);
        if let Some(id) = &existing {
            let it = fs.item(id);
            if it.kind == ItemKind::Dir {
                return Err(err(codes::NAME_CONFLICT, format!("{} is a folder", spec.path)));
            }
            if it.sha256 == Some(sha) {
                return Ok(Committed { item: it, unchanged: true });
            }
            match &spec.base_version_id {
                None => return Err(err(codes::NAME_CONFLICT, format!("{}", spec.path))),
                Some(b) if it.version_id.as_ref() != Some(b) => {
                    return Err(err(codes::VERSION_CONFLICT, format!("{}", spec.path)))
                }
                _ => {}
            }
        } else if spec.base_version_id.is_some() {
            return Err(err(codes::NOT_FOUND, format!("{}", spec.path)));
        }
        let id = fs.put_file(&spec.path, data, spec.modified_at)?;
        Ok(Committed { item: fs.item(&id), unchanged: false })
    }

    async fn create_folder(&self, path: &RelPath, modified_at: FileTime) -> Result<DriveItem, ReplicaError> {
        self.faults.check()?;
        let mut fs = self.fs.lock().unwrap();
        let id = fs.mkdirs(Some(path), modified_at)?.expect("not root");
        Ok(fs.item(&id))
    }

    async fn move_node(
        &self,
        node: &NodeId,
        to: &RelPath,
        base: Option<&VersionId>,
    ) -> Result<DriveItem, ReplicaError> {
        self.faults.check()?;
        let mut fs = self.fs.lock().unwrap();
        if !fs.nodes.contains_key(node) || !fs.live(node) {
            return Err(err(codes::NOT_FOUND, format!("{node:?}")));
        }
        fs.check_base(node, base)?;
        Self::move_in(&mut fs, node, to)
    }

    async fn trash(&self, node: &NodeId, base: Option<&VersionId>) -> Result<(), ReplicaError> {
        self.faults.check()?;
        let mut fs = self.fs.lock().unwrap();
        if !fs.nodes.contains_key(node) {
            return Err(err(codes::NOT_FOUND, format!("{node:?}")));
        }
        if fs.nodes[node].trashed {
            return Ok(());
        }
        fs.check_base(node, base)?;
        fs.nodes.get_mut(node).unwrap().trashed = true;
        Ok(())
    }

    async fn restore(&self, node: &NodeId, version: Option<&VersionId>) -> Result<DriveItem, ReplicaError> {
        self.faults.check()?;
        let mut fs = self.fs.lock().unwrap();
        if !fs.nodes.contains_key(node) {
            return Err(err(codes::NOT_FOUND, format!("{node:?}")));
        }
        if fs.nodes[node].trashed {
            let n = fs.nodes[node].clone();
            if n.parent.as_ref().is_some_and(|pp| !fs.live(pp)) {
                return Err(err(codes::NOT_FOUND, "parent is in the trash"));
            }
            if fs.child(n.parent.as_ref(), &n.name).is_some() {
                return Err(err(codes::NAME_CONFLICT, format!("{}", fs.path_of(node))));
            }
            fs.nodes.get_mut(node).unwrap().trashed = false;
        }
        if let Some(v) = version {
            let old = fs.nodes[node].versions.iter().find(|x| &x.id == v).cloned();
            let old = old.ok_or_else(|| err(codes::NOT_FOUND, format!("{v:?}")))?;
            let vid = VersionId(fs.id("ver").into());
            fs.nodes.get_mut(node).unwrap().versions.push(Version { id: vid, ..old });
        }
        Ok(fs.item(node))
    }

    async fn download(
        &self,
        node: &NodeId,
        version: Option<&VersionId>,
    ) -> Result<(DownloadHead, ByteStream), ReplicaError> {
        self.faults.check()?;
        let fs = self.fs.lock().unwrap();
        let n = fs.nodes.get(node).ok_or_else(|| err(codes::NOT_FOUND, format!("{node:?}")))?;
        let v = match version {
            Some(v) => n.versions.iter().find(|x| &x.id == v),
            None => n.versions.last(),
        }
        .ok_or_else(|| err(codes::NOT_FOUND, "version"))?;
        Ok((
            DownloadHead { version_id: v.id.clone(), size: v.data.len() as u64, sha256: v.sha },
            chunked(v.data.clone()),
        ))
    }
}

// -------------------------------------------------------------------------------------------
// State

/// An in-memory state store.
pub struct MemState {
    states: Mutex<BTreeMap<RelPath, SyncedState>>,
    issues: Mutex<Vec<FileIssue>>,
    notes: Mutex<Vec<Note>>,
    faults: Arc<Faults>,
}

impl MemState {
    /// Empty.
    pub fn new(faults: Arc<Faults>) -> Self {
        MemState { states: Mutex::new(BTreeMap::new()), issues: Mutex::new(vec![]), notes: Mutex::new(vec![]), faults }
    }

    /// The job-log notes recorded so far.
    pub fn notes(&self) -> Vec<Note> {
        self.notes.lock().unwrap().clone()
    }

    /// The recorded states, as the planner's base.
    pub fn base(&self) -> BaseState {
        BaseState { entries: self.states.lock().unwrap().clone() }
    }

    /// Issues reported so far (drained).
    pub fn take_issues(&self) -> Vec<FileIssue> {
        std::mem::take(&mut self.issues.lock().unwrap())
    }
}

#[async_trait]
impl StateSink for MemState {
    async fn put(&self, state: SyncedState) -> Result<(), ReplicaError> {
        self.faults.check()?;
        self.states.lock().unwrap().insert(state.path.clone(), state);
        Ok(())
    }

    async fn forget(&self, path: &RelPath) -> Result<(), ReplicaError> {
        self.faults.check()?;
        self.states.lock().unwrap().remove(path);
        Ok(())
    }

    async fn rebase(&self, from: &RelPath, to: &RelPath) -> Result<(), ReplicaError> {
        self.faults.check()?;
        let mut m = self.states.lock().unwrap();
        let keys: Vec<RelPath> = m.keys().filter(|k| k.is_at_or_inside(from)).cloned().collect();
        let moved: Vec<SyncedState> = keys.iter().map(|k| m.remove(k).unwrap()).collect();
        for mut st in moved {
            st.path = st.path.rebase(from, to).unwrap();
            m.insert(st.path.clone(), st);
        }
        Ok(())
    }

    async fn report_issue(&self, issue: &FileIssue) {
        self.issues.lock().unwrap().push(issue.clone());
    }

    async fn note(&self, note: &Note) {
        self.notes.lock().unwrap().push(note.clone());
    }

    async fn progress(&self, _progress: &Progress) {}
}

/// A complete in-memory world: both replicas, the state store and the fault switch.
pub struct World {
    /// Faults and clock.
    pub faults: Arc<Faults>,
    /// SMB.
    pub smb: MemSmb,
    /// ScaiDrive.
    pub drive: MemDrive,
    /// Synced states.
    pub state: MemState,
}

impl Default for World {
    fn default() -> Self {
        let faults = Faults::new();
        World {
            smb: MemSmb::new(faults.clone()),
            drive: MemDrive::new(faults.clone()),
            state: MemState::new(faults.clone()),
            faults,
        }
    }
}

impl World {
    /// Plans against the current state of everything.
    /// Checks on the way that leaving out the unchanged paths changes nothing.
    pub fn plan(&self, settings: &Settings) -> crate::Plan {
        let (smb, drive, base) = (self.smb.snapshot(), self.drive.snapshot(), self.state.base());
        let plan = crate::plan(&smb, &drive, &base, settings);
        let full = crate::plan::plan_unpruned(&smb, &drive, &base, settings);
        assert_eq!(plan, full, "the plan without the unchanged paths differs from the full plan");
        assert_eq!(
            crate::tracked::plan_compact(&smb, &drive, &base, settings),
            plan,
            "the plan from the compact inputs differs"
        );
        plan
    }

    /// Plans and executes one run.
    pub async fn run(&self, settings: &Settings) -> (crate::Plan, crate::ExecReport) {
        let plan = self.plan(settings);
        let opts = crate::ExecOptions { synced_at: self.faults.tick(), ..Default::default() };
        let rep = crate::execute(&plan, &self.smb, &self.drive, &self.state, &opts).await;
        (plan, rep)
    }
}
