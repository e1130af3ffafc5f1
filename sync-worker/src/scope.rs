//! Scoped runs: which folders a batch of SMB change notifications asks to look at
//! ([`Scope::from_events`]), and the SMB half of a scan that looks only there ([`scan_scoped`]).
//!
//! Kept apart from `scan.rs` (the full walk) on purpose; it shares its helpers. The rules:
//! - an added or renamed-to entry: its parent folder is listed, and the entry itself walked
//!   (if it is a folder); removed, modified, renamed-from: the parent folder is listed;
//!   an overflow of notifications: the whole tree;
//! - a listed folder's direct entries are looked at; a walked folder's whole subtree is;
//! - an item of the base (the last synced state) directly in a listed folder, or inside a
//!   walked one, that is no longer there is gone (deletions and renames inside the scope are
//!   seen; renames are matched by file id as in any run), and so is everything below a folder
//!   that is gone;
//! - every other item of the base is carried over unchanged.
//!
//! Must never make an item outside what was looked at look deleted: a folder that cannot be
//! listed keeps its tracked content, exactly as in the full walk.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use futures::StreamExt;
use proto::v1;
use smb_layer::{ChangeEvent, ChangeKind, SmbClient, SmbError};
use sync_engine::{ItemKind, RelPath, Settings, SmbItem, Tracked};
use tokio_util::sync::CancellationToken;

use crate::convert::{smb_item, SmbRoot};
use crate::scan::{error_path, place_respelled, ScanError, SmbScan};

/// At most this many folders in one scope; more become the whole tree (the server applies
/// the same bound).
pub const MAX_FOLDERS: usize = 256;

/// Folders to look at, relative to the sync root in the file server's spelling (`""` is the
/// root), each listed only (`false`) or walked (`true`). `full`: the whole tree.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scope {
    pub full: bool,
    pub folders: BTreeMap<String, bool>,
}

fn parent_of(p: &str) -> &str {
    p.rsplit_once('/').map(|(a, _)| a).unwrap_or("")
}

fn inside(p: &str, dir: &str) -> bool {
    dir.is_empty() && !p.is_empty() || p.strip_prefix(dir).is_some_and(|r| r.starts_with('/'))
}

impl Scope {
    /// The whole tree.
    pub fn full() -> Scope {
        Scope { full: true, folders: BTreeMap::new() }
    }

    /// Adds a folder (walked wins over listed).
    pub fn add(&mut self, path: &str, recursive: bool) {
        if !self.full {
            *self.folders.entry(path.to_string()).or_insert(false) |= recursive;
        }
    }

    /// Folders inside a walked one dropped; the root walked, or too many folders: the whole tree.
    pub fn normalized(mut self) -> Scope {
        if self.full {
            return Scope::full();
        }
        let walked: Vec<String> = self.folders.iter().filter(|(_, r)| **r).map(|(p, _)| p.clone()).collect();
        self.folders.retain(|p, _| !walked.iter().any(|w| inside(p, w)));
        if self.folders.len() > MAX_FOLDERS || self.folders.get("").copied() == Some(true) {
            return Scope::full();
        }
        self
    }

    /// The scope of a batch of changes reported under the sync root `root` (share-relative).
    pub fn from_events<'a>(root: &str, events: impl IntoIterator<Item = &'a ChangeEvent>) -> Scope {
        let mut s = Scope::default();
        for e in events {
            if e.kind == ChangeKind::Overflow {
                return Scope::full();
            }
            let p = smb_layer::path::normalize(&e.path);
            let rel = if root.is_empty() {
                p.as_str()
            } else {
                match p.strip_prefix(root).and_then(|r| r.strip_prefix('/')) {
                    Some(r) => r,
                    None => continue,
                }
            };
            if rel.is_empty() {
                continue;
            }
            s.add(parent_of(rel), false);
            if matches!(e.kind, ChangeKind::Added | ChangeKind::RenamedTo) {
                s.add(rel, true);
            }
        }
        s.normalized()
    }

    pub fn is_empty(&self) -> bool {
        !self.full && self.folders.is_empty()
    }

    pub fn to_proto(&self) -> v1::SyncScope {
        v1::SyncScope {
            full: self.full,
            folders: self.folders.iter().map(|(p, r)| v1::ScopeFolder { path: p.clone(), recursive: *r }).collect(),
        }
    }

    pub fn from_proto(m: &v1::SyncScope) -> Scope {
        if m.full {
            return Scope::full();
        }
        let mut s = Scope::default();
        for f in &m.folders {
            s.add(&f.path, f.recursive);
        }
        s.normalized()
    }
}

/// What a scoped scan found, and how many entries it looked at (the job's `files_scanned`).
#[derive(Debug, Default)]
pub struct ScopedScan {
    pub scan: SmbScan,
    pub looked_at: u64,
}

/// Where the scoped scan looked; decides which items of the base are gone and which are
/// carried over.
#[derive(Debug, Default)]
pub struct Looked {
    /// The sync root's direct entries were listed.
    pub root_listed: bool,
    /// Folders whose direct entries were listed.
    pub listed: BTreeSet<RelPath>,
    /// Folders walked to the bottom.
    pub walked: Vec<RelPath>,
}

impl Looked {
    /// Whether `p` was in what was looked at (so if it was not seen, it is gone).
    pub fn covers(&self, p: &RelPath) -> bool {
        match p.parent() {
            None if self.root_listed => return true,
            Some(parent) if self.listed.contains(&parent) => return true,
            _ => {}
        }
        self.walked.iter().any(|w| p.is_inside(w))
    }
}

/// Adds every item of the base outside what was looked at to the snapshot, unchanged; items
/// in it that were not seen are gone, and everything below a folder that is gone too.
pub fn carry_over(scan: &mut SmbScan, base: &Tracked, looked: &Looked) {
    let gone: Vec<RelPath> = (0..base.len())
        .filter(|&i| base.kind(i) == ItemKind::Dir && !scan.walk.has(base, i))
        .map(|i| base.rel_path(i))
        .filter(|p| looked.covers(p))
        .collect();
    for i in 0..base.len() {
        if scan.walk.has(base, i) {
            continue;
        }
        let path = base.rel_path(i);
        if looked.covers(&path) || gone.iter().any(|g| path.is_inside(g)) {
            continue;
        }
        scan.walk.carry(base, i);
    }
}

/// Puts one listed entry into the scan (entries whose server spelling is not NFC wait in
/// `respelled`, placed at the end as in the full walk).
fn take(
    root: &SmbRoot,
    base: &Tracked,
    scan: &mut SmbScan,
    respelled: &mut Vec<(String, SmbItem)>,
    e: &smb_layer::DirEntry,
    looked_at: &mut u64,
) {
    if let Some((rel, raw)) = root.split(&e.path) {
        let item = smb_item(rel, e);
        if raw == item.path.as_str() {
            scan.walk.insert(base, item);
        } else {
            respelled.push((raw, item));
        }
        *looked_at += 1;
    }
}

/// Walks only `scope` (not full) on SMB and carries the rest of the base over.
#[allow(clippy::too_many_arguments)]
pub async fn scan_scoped(
    client: &SmbClient,
    root: &SmbRoot,
    settings: &Settings,
    base: &Tracked,
    scope: &Scope,
    cancel: &CancellationToken,
    mut on_entry: impl FnMut(u64),
) -> Result<ScopedScan, ScanError> {
    crate::scan::check_root(client, root).await?;
    // A folder the last run did not sync (new, or renamed in) is walked whole, from its
    // topmost new ancestor, and that one's parent listed.
    let known = |raw: &str| -> bool {
        match root.rel(&smb_layer::path::join(root.as_str(), raw)) {
            Some(rel) => base.find(rel.as_str()).is_some_and(|i| base.kind(i) == ItemKind::Dir),
            None => false,
        }
    };
    let mut lists: VecDeque<String> = VecDeque::new();
    let mut walks: BTreeSet<String> = BTreeSet::new();
    for (raw, recursive) in &scope.folders {
        let parts: Vec<&str> = if raw.is_empty() { vec![] } else { raw.split('/').collect() };
        let new_from = (1..=parts.len()).find(|d| !known(&parts[..*d].join("/")));
        match new_from {
            Some(d) => {
                walks.insert(parts[..d].join("/"));
                lists.push_back(parts[..d - 1].join("/"));
            }
            None if *recursive => {
                walks.insert(raw.clone());
            }
            None => lists.push_back(raw.clone()),
        }
    }

    let mut out = ScopedScan { scan: SmbScan::new(base), looked_at: 0 };
    let mut looked = Looked::default();
    let mut respelled: Vec<(String, SmbItem)> = Vec::new();
    let unreadable = |scan: &mut SmbScan, rel: RelPath, e: &SmbError| crate::scan::keep_unlisted(scan, base, rel, e);

    // Walks.
    let pruned: crate::scan::Pruned = Arc::default();
    for raw in walks.clone() {
        if walks.iter().any(|w| inside(&raw, w)) {
            continue;
        }
        let abs = smb_layer::path::join(root.as_str(), &raw);
        let Some(rel) = root.rel(&abs) else { continue };
        let e = match client.stat(&abs).await {
            Ok(e) => e,
            Err(SmbError::PathNotFound { .. }) => continue, // gone again: its parent's listing says so
            Err(e) if error_path(&e).is_some() => {
                unreadable(&mut out.scan, rel, &e);
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        take(root, base, &mut out.scan, &mut respelled, &e, &mut out.looked_at);
        let item = smb_item(rel.clone(), &e);
        if !e.is_dir || item.reparse || settings.filters.excludes_dir(&item, settings) {
            continue;
        }
        let opts = crate::scan::walk_options(root, settings, &pruned);
        let mut walk = std::pin::pin!(client.walk(&abs, opts));
        loop {
            let next = tokio::select! {
                _ = cancel.cancelled() => return Err(ScanError::Cancelled),
                n = walk.next() => n,
            };
            let Some(r) = next else { break };
            match r {
                Ok(e) => {
                    take(root, base, &mut out.scan, &mut respelled, &e, &mut out.looked_at);
                    on_entry(out.looked_at);
                }
                Err(e) => match error_path(&e).and_then(|p| root.rel(p)) {
                    Some(r) => unreadable(&mut out.scan, r, &e),
                    None => return Err(e.into()),
                },
            }
        }
        looked.walked.push(rel);
    }
    for (raw, item) in pruned.lock().unwrap().drain(..) {
        out.looked_at += 1;
        if raw == item.path.as_str() {
            out.scan.walk.insert(base, item);
        } else {
            respelled.push((raw, item));
        }
    }

    // Listings (a folder gone meanwhile: its parent is listed instead).
    let mut done: BTreeSet<String> = BTreeSet::new();
    while let Some(raw) = lists.pop_front() {
        if !done.insert(raw.clone()) || walks.iter().any(|w| inside(&raw, w) || *w == raw) {
            continue;
        }
        if cancel.is_cancelled() {
            return Err(ScanError::Cancelled);
        }
        let abs = smb_layer::path::join(root.as_str(), &raw);
        let rel = if raw.is_empty() { None } else { root.rel(&abs) };
        if !raw.is_empty() && rel.is_none() {
            continue;
        }
        match client.list_dir(&abs).await {
            Ok(entries) => {
                for e in &entries {
                    take(root, base, &mut out.scan, &mut respelled, e, &mut out.looked_at);
                }
                on_entry(out.looked_at);
                match rel {
                    None => looked.root_listed = true,
                    Some(r) => {
                        looked.listed.insert(r);
                    }
                }
            }
            Err(SmbError::PathNotFound { .. } | SmbError::NotADirectory { .. }) if !raw.is_empty() => {
                lists.push_back(parent_of(&raw).to_string());
            }
            Err(SmbError::PathNotFound { .. } | SmbError::NotADirectory { .. }) => {
                return Err(ScanError::RootNotFound(root.as_str().to_string()))
            }
            Err(e) => match (rel, error_path(&e).is_some()) {
                (Some(r), true) => unreadable(&mut out.scan, r, &e),
                _ => return Err(e.into()),
            },
        }
    }
    place_respelled(&mut out.scan, base, root, respelled);
    carry_over(&mut out.scan, base, &looked);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sync_engine::{BaseState, DriveSide, FileTime, NodeId, SmbSide, SyncedState};

    fn ev(kind: ChangeKind, path: &str) -> ChangeEvent {
        ChangeEvent { kind, path: path.to_string() }
    }

    fn folders(s: &Scope) -> Vec<(&str, bool)> {
        s.folders.iter().map(|(p, r)| (p.as_str(), *r)).collect()
    }

    #[test]
    fn an_added_entry_lists_its_parent_and_walks_itself() {
        let s = Scope::from_events("base", &[ev(ChangeKind::Added, "base/docs/new")]);
        assert_eq!(folders(&s), vec![("docs", false), ("docs/new", true)]);
        let s = Scope::from_events("", &[ev(ChangeKind::RenamedTo, "top.txt")]);
        assert_eq!(folders(&s), vec![("", false), ("top.txt", true)]);
    }

    #[test]
    fn removed_modified_and_renamed_from_list_the_parent_only() {
        let s = Scope::from_events(
            "",
            &[
                ev(ChangeKind::Removed, "a/x"),
                ev(ChangeKind::Modified, "b/c/y"),
                ev(ChangeKind::RenamedFrom, "d/old"),
                ev(ChangeKind::Other, "e/z"),
            ],
        );
        assert_eq!(folders(&s), vec![("a", false), ("b/c", false), ("d", false), ("e", false)]);
    }

    #[test]
    fn a_walked_folder_absorbs_what_is_inside_it_and_overflow_is_everything() {
        let s = Scope::from_events(
            "",
            &[ev(ChangeKind::Added, "n"), ev(ChangeKind::Added, "n/a"), ev(ChangeKind::Modified, "n/a/b")],
        );
        assert_eq!(folders(&s), vec![("", false), ("n", true)]);
        assert!(Scope::from_events("", &[ev(ChangeKind::Modified, "a"), ev(ChangeKind::Overflow, "")]).full);
        // Outside the sync root, or the root itself: nothing.
        assert!(Scope::from_events("base", &[ev(ChangeKind::Added, "other/x"), ev(ChangeKind::Modified, "base")])
            .is_empty());
        let many: Vec<ChangeEvent> = (0..=MAX_FOLDERS).map(|i| ev(ChangeKind::Modified, &format!("d{i}/f"))).collect();
        assert!(Scope::from_events("", &many).full);
    }

    #[test]
    fn scopes_round_trip_through_the_wire() {
        let s = Scope::from_events("", &[ev(ChangeKind::Added, "a/b")]);
        assert_eq!(Scope::from_proto(&s.to_proto()), s);
        assert!(Scope::from_proto(&Scope::full().to_proto()).full);
    }

    fn p(s: &str) -> RelPath {
        RelPath::new(s).unwrap()
    }

    fn state(path: &str, kind: ItemKind) -> SyncedState {
        SyncedState {
            path: p(path),
            kind,
            smb: SmbSide { size: 1, last_write: FileTime(1), change_time: FileTime(1), file_id: 7, sha256: None },
            drive: DriveSide {
                node_id: NodeId(format!("n-{path}").into()),
                version_id: None,
                size: 1,
                modified_at: FileTime(1),
                sha256: None,
            },
            last_synced_at: FileTime(1),
        }
    }

    #[test]
    fn the_base_outside_the_scope_is_carried_and_what_vanished_inside_it_is_gone() {
        let mut base = BaseState::default();
        for (path, kind) in [
            ("docs", ItemKind::Dir),
            ("docs/a.txt", ItemKind::File),
            ("docs/gone.txt", ItemKind::File),
            ("docs/sub", ItemKind::Dir),
            ("docs/sub/deep.txt", ItemKind::File),
            ("docs/olddir", ItemKind::Dir),
            ("docs/olddir/x.txt", ItemKind::File),
            ("other", ItemKind::Dir),
            ("other/b.txt", ItemKind::File),
            ("top.txt", ItemKind::File),
            ("w", ItemKind::Dir),
            ("w/q/r.txt", ItemKind::File),
        ] {
            base.entries.insert(p(path), state(path, kind));
        }
        // "docs" was listed and showed a.txt and sub (gone.txt and olddir vanished); "w" was
        // walked and showed nothing.
        let base = Tracked::from_base(&base);
        let mut scan = SmbScan::new(&base);
        for seen in ["docs/a.txt", "docs/sub"] {
            scan.walk.insert(&base, base.carried(base.find(seen).unwrap()));
        }
        let looked = Looked { root_listed: false, listed: [p("docs")].into(), walked: vec![p("w")] };
        carry_over(&mut scan, &base, &looked);
        let snapshot = scan.walk.to_snapshot(&base);
        let got: Vec<&str> = snapshot.items.keys().map(|k| k.as_str()).collect();
        assert_eq!(
            got,
            vec!["docs", "docs/a.txt", "docs/sub", "docs/sub/deep.txt", "other", "other/b.txt", "top.txt", "w"]
        );
    }
}
