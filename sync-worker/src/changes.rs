//! The ScaiDrive side of a run, rebuilt without listing the target tree: start from the last
//! synced state's ScaiDrive side and replay the share's change log since the stored cursor.
//!
//! Replay is by node id and state-based (each change carries the node as it was right after
//! it), so replaying a suffix of the log that was partly seen before converges to the same
//! view. A moved or renamed folder re-paths its descendants; a trashed folder takes its
//! subtree to the trash; only nodes at or under the target path count.
//!
//! Pure: no I/O. The caller fetches the pages and stats nodes whose change carries no
//! modification time ([`DriveView::needs_stat`]).

use std::collections::{BTreeMap, BTreeSet};

use proto::v1;
#[cfg(test)]
use sync_engine::BaseState;
use sync_engine::{DriveItem, DriveSnapshot, ItemKind, NodeId, RelPath, Tracked, TrashedItem};

use crate::convert::{drive_item, DriveRoot};

/// A ScaiDrive snapshot being built, with an index by node id.
#[derive(Debug, Default)]
pub struct DriveView {
    /// Live items and known trashed nodes.
    pub snapshot: DriveSnapshot,
    by_id: BTreeMap<NodeId, RelPath>,
    /// Paths (before and after) of everything a change touched, for the cursor decision.
    pub touched: BTreeSet<RelPath>,
    /// Files whose modification time is unknown after replay (the change log does not carry
    /// it): stat them before planning.
    pub needs_stat: BTreeSet<NodeId>,
}

impl DriveView {
    /// The view the last run left: the ScaiDrive side of every synced state. (Built only
    /// when the change log has something to replay: otherwise the run plans from the synced
    /// states themselves, `sync_engine::DriveOverlay::unchanged`.)
    pub fn from_tracked(base: &Tracked) -> Self {
        // Both maps built in one go (full nodes; a map filled one insert at a time in order
        // stays about half full). When two states name one node, the inserts below decide,
        // as replay does, which path keeps it.
        let items: BTreeMap<RelPath, DriveItem> =
            (0..base.len()).map(|i| (base.rel_path(i), base.drive_item(i))).collect();
        let by_id: BTreeMap<NodeId, RelPath> = items.values().map(|i| (i.node_id.clone(), i.path.clone())).collect();
        if by_id.len() == items.len() {
            return DriveView {
                snapshot: DriveSnapshot { items, trashed: BTreeMap::new() },
                by_id,
                ..Default::default()
            };
        }
        let mut v = DriveView::default();
        for i in 0..base.len() {
            v.insert(base.drive_item(i));
        }
        v
    }

    /// [`DriveView::from_tracked`] of a base (tests).
    #[cfg(test)]
    fn from_base(base: &BaseState) -> Self {
        DriveView::from_tracked(&Tracked::from_base(base))
    }

    /// A view from a full listing of the target folder (first run).
    pub fn from_listing(root: &DriveRoot, nodes: impl IntoIterator<Item = v1::Node>) -> Self {
        let mut v = DriveView::default();
        for n in nodes {
            if n.deleted {
                continue;
            }
            if let Some(rel) = root.rel(&n.path) {
                v.insert(drive_item(rel, &n));
            }
        }
        v
    }

    /// Puts `item` at its path, displacing whatever node was indexed there.
    fn insert(&mut self, item: DriveItem) {
        if let Some(old) = self.snapshot.items.get(&item.path) {
            if old.node_id != item.node_id {
                let id = old.node_id.clone();
                self.by_id.remove(&id);
            }
        }
        if let Some(prev) = self.by_id.insert(item.node_id.clone(), item.path.clone()) {
            if prev != item.path {
                self.snapshot.items.remove(&prev);
            }
        }
        self.snapshot.items.insert(item.path.clone(), item);
    }

    /// Removes the item at `path` and everything below it; returns them (the item first).
    fn take_subtree(&mut self, path: &RelPath) -> Vec<DriveItem> {
        let mut out = Vec::new();
        if let Some(it) = self.snapshot.items.remove(path) {
            self.by_id.remove(&it.node_id);
            out.push(it);
        }
        // Paths below `path` share its prefix, so they are contiguous in the ordering.
        let below: Vec<RelPath> = self
            .snapshot
            .items
            .range(path.clone()..)
            .map(|(p, _)| p)
            .take_while(|p| p.as_str().starts_with(path.as_str()))
            .filter(|p| p.is_inside(path))
            .cloned()
            .collect();
        for p in below {
            if let Some(it) = self.snapshot.items.remove(&p) {
                self.by_id.remove(&it.node_id);
                out.push(it);
            }
        }
        out
    }

    /// Replays changes, oldest first.
    pub fn apply(&mut self, root: &DriveRoot, changes: &[v1::Change]) {
        for c in changes {
            self.apply_one(root, c);
        }
    }

    fn apply_one(&mut self, root: &DriveRoot, c: &v1::Change) {
        let Some(node) = c.node.as_ref() else { return };
        let id = NodeId(node.id.as_str().into());
        let ty = v1::ChangeType::try_from(c.r#type).unwrap_or(v1::ChangeType::Unspecified);

        // The target folder (or a folder above it) trashed or moved away: nothing is under
        // the target any more.
        let covers_root = |abs: &str| !abs.is_empty() && root.is_at_or_below(abs);
        let gone = (ty == v1::ChangeType::Deleted && covers_root(&node.path))
            || (covers_root(&c.previous_path) && !root.is_root(&node.path) && !covers_root(&node.path));
        if gone {
            let all: Vec<RelPath> = self.snapshot.items.keys().cloned().collect();
            self.touched.extend(all);
            self.snapshot.items.clear();
            self.by_id.clear();
            return;
        }

        let new_rel = root.rel(&node.path);
        let old_rel = self.by_id.get(&id).cloned();
        if let Some(p) = &old_rel {
            self.touched.insert(p.clone());
        }
        if let Some(p) = &new_rel {
            self.touched.insert(p.clone());
        }
        let previous = old_rel.as_ref().and_then(|p| self.snapshot.items.get(p)).cloned();

        match ty {
            v1::ChangeType::Deleted => {
                let subtree = match &old_rel {
                    Some(p) => self.take_subtree(p),
                    None => Vec::new(),
                };
                // Known to the trash with the path it had; the node itself first.
                let mut items = subtree;
                if items.is_empty() {
                    if let Some(rel) = new_rel.clone() {
                        items.push(drive_item(rel, node));
                    }
                }
                for it in items {
                    self.touched.insert(it.path.clone());
                    self.snapshot.trashed.insert(it.node_id.clone(), TrashedItem { item: it, restorable: false });
                }
            }
            _ => {
                // Created, updated, moved, renamed, restored (or a type this worker does not
                // know: treat it as "the node is now like this").
                self.snapshot.trashed.remove(&id);
                let kind = crate::convert::kind_of(node.kind);
                let moved_children = match (&old_rel, kind) {
                    (Some(old), ItemKind::Dir) if Some(old) != new_rel.as_ref() => {
                        let mut sub = self.take_subtree(old);
                        if !sub.is_empty() {
                            sub.remove(0);
                        }
                        sub.into_iter().map(|it| (old.clone(), it)).collect::<Vec<_>>()
                    }
                    (Some(old), _) => {
                        if Some(old) != new_rel.as_ref() {
                            self.take_subtree(old);
                        }
                        Vec::new()
                    }
                    _ => Vec::new(),
                };
                let Some(rel) = new_rel else {
                    // Moved out of the target: it and its subtree are gone from view.
                    for (_, it) in moved_children {
                        self.touched.insert(it.path.clone());
                    }
                    return;
                };
                let mut item = drive_item(rel.clone(), node);
                if node.modified_at.is_none() {
                    match previous.as_ref() {
                        Some(prev) if prev.version_id == item.version_id => item.modified_at = prev.modified_at,
                        _ if kind == ItemKind::File => {
                            self.needs_stat.insert(id.clone());
                        }
                        _ => {}
                    }
                }
                if kind == ItemKind::Dir && item.modified_at.0 == 0 {
                    if let Some(prev) = &previous {
                        item.modified_at = prev.modified_at;
                    }
                }
                self.insert(item);
                for (old, child) in moved_children {
                    if let Some(p) = child.path.rebase(&old, &rel) {
                        self.touched.insert(child.path.clone());
                        self.touched.insert(p.clone());
                        self.insert(DriveItem { path: p, ..child });
                    }
                }
            }
        }
    }

    /// Sets `restorable` on trashed items (their former parent is live) and returns the
    /// snapshot.
    pub fn finish(mut self) -> DriveSnapshot {
        let live_dirs: BTreeSet<RelPath> =
            self.snapshot.items.values().filter(|i| i.kind == ItemKind::Dir).map(|i| i.path.clone()).collect();
        for t in self.snapshot.trashed.values_mut() {
            t.restorable = match t.item.path.parent() {
                None => true,
                Some(p) => live_dirs.contains(&p),
            };
        }
        self.snapshot
    }

    /// Replaces a file's details after a `Stat` (modification time the log lacked).
    pub fn refresh(&mut self, root: &DriveRoot, node: &v1::Node) {
        let id = NodeId(node.id.as_str().into());
        self.needs_stat.remove(&id);
        if node.deleted {
            return;
        }
        let Some(rel) = root.rel(&node.path) else {
            return;
        };
        if self.by_id.get(&id) == Some(&rel) {
            self.insert(drive_item(rel, node));
        }
    }

    /// The live item of a node id.
    pub fn get(&self, id: &NodeId) -> Option<&DriveItem> {
        self.by_id.get(id).and_then(|p| self.snapshot.items.get(p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sync_engine::{DriveSide, FileTime, SmbSide, SyncedState, VersionId};

    fn p(s: &str) -> RelPath {
        RelPath::new(s).unwrap()
    }

    fn node(id: &str, path: &str, folder: bool, version: &str) -> v1::Node {
        v1::Node {
            id: id.into(),
            path: path.into(),
            name: path.rsplit('/').next().unwrap().into(),
            kind: if folder { v1::NodeKind::Folder } else { v1::NodeKind::File } as i32,
            current_version_id: version.into(),
            size: if folder { 0 } else { 3 },
            ..Default::default()
        }
    }

    fn change(ty: v1::ChangeType, n: v1::Node, previous: &str) -> v1::Change {
        v1::Change { r#type: ty as i32, node: Some(n), previous_path: previous.into(), ..Default::default() }
    }

    fn state(path: &str, id: &str, folder: bool, version: &str) -> SyncedState {
        SyncedState {
            path: p(path),
            kind: if folder { ItemKind::Dir } else { ItemKind::File },
            smb: SmbSide { file_id: 1, size: 0, last_write: FileTime(5), change_time: FileTime(5), sha256: None },
            drive: DriveSide {
                node_id: NodeId(id.into()),
                version_id: (!version.is_empty()).then(|| VersionId(version.into())),
                size: 0,
                modified_at: FileTime(77),
                sha256: None,
            },
            last_synced_at: FileTime(1),
        }
    }

    fn paths(v: &DriveView) -> Vec<(String, String)> {
        v.snapshot.items.values().map(|i| (i.path.to_string(), i.node_id.0.to_string())).collect()
    }

    fn base() -> BaseState {
        BaseState::from_states([
            state("docs", "fld_d", true, ""),
            state("docs/a.txt", "fil_a", false, "ver_1"),
            state("docs/sub", "fld_s", true, ""),
            state("docs/sub/b.txt", "fil_b", false, "ver_2"),
            state("docs2", "fld_x", true, ""),
            state("top.txt", "fil_t", false, "ver_3"),
        ])
    }

    #[test]
    fn the_view_from_the_base_is_the_one_inserts_give_even_with_a_node_named_twice() {
        let by_inserts = |b: &BaseState| {
            let mut v = DriveView::default();
            for s in b.entries.values() {
                let d = &s.drive;
                v.insert(DriveItem {
                    path: s.path.clone(),
                    kind: s.kind,
                    node_id: d.node_id.clone(),
                    version_id: d.version_id.clone(),
                    size: d.size,
                    modified_at: d.modified_at,
                    sha256: d.sha256,
                });
            }
            v
        };
        let b = base();
        let (bulk, one_by_one) = (DriveView::from_base(&b), by_inserts(&b));
        assert_eq!(bulk.snapshot.items, one_by_one.snapshot.items);
        assert_eq!(bulk.by_id, one_by_one.by_id);
        assert_eq!(bulk.snapshot.items.len(), b.entries.len());

        // A stale base naming one node at two paths: the later path keeps it.
        let mut twice = base();
        let mut dup = twice.entries.values().find(|s| s.kind == ItemKind::File).unwrap().clone();
        dup.path = p("zz-copy.txt");
        twice.entries.insert(dup.path.clone(), dup.clone());
        let (bulk, one_by_one) = (DriveView::from_base(&twice), by_inserts(&twice));
        assert_eq!(bulk.snapshot.items, one_by_one.snapshot.items);
        assert_eq!(bulk.by_id, one_by_one.by_id);
        assert_eq!(bulk.by_id[&dup.drive.node_id], dup.path);
        assert_eq!(bulk.snapshot.items.len(), twice.entries.len() - 1);
    }

    #[test]
    fn a_moved_folder_re_paths_its_descendants() {
        let root = DriveRoot::new("/T");
        let mut v = DriveView::from_base(&base());
        v.apply(&root, &[change(v1::ChangeType::Moved, node("fld_d", "/T/docs2/renamed", true, ""), "/T/docs")]);
        assert_eq!(
            paths(&v),
            vec![
                ("docs2".into(), "fld_x".into()),
                ("docs2/renamed".into(), "fld_d".into()),
                ("docs2/renamed/a.txt".into(), "fil_a".into()),
                ("docs2/renamed/sub".into(), "fld_s".into()),
                ("docs2/renamed/sub/b.txt".into(), "fil_b".into()),
                ("top.txt".into(), "fil_t".into()),
            ]
        );
        // Descendants keep what the log did not change.
        assert_eq!(v.get(&NodeId("fil_b".into())).unwrap().modified_at, FileTime(77));
        assert!(v.needs_stat.is_empty());
        assert!(v.touched.contains(&p("docs/sub/b.txt")) && v.touched.contains(&p("docs2/renamed/sub/b.txt")));
    }

    #[test]
    fn a_folder_moved_out_of_the_target_disappears_with_its_subtree() {
        let root = DriveRoot::new("/T");
        let mut v = DriveView::from_base(&base());
        v.apply(&root, &[change(v1::ChangeType::Moved, node("fld_d", "/Elsewhere/docs", true, ""), "/T/docs")]);
        assert_eq!(paths(&v), vec![("docs2".into(), "fld_x".into()), ("top.txt".into(), "fil_t".into())]);
        // ... and one moved in appears (its content is unknown until listed: a new node).
        v.apply(
            &root,
            &[change(v1::ChangeType::Moved, node("fil_n", "/T/docs2/n.txt", false, "ver_9"), "/Other/n.txt")],
        );
        assert!(v.snapshot.items.contains_key(&p("docs2/n.txt")));
        assert!(v.needs_stat.contains(&NodeId("fil_n".into())));
    }

    #[test]
    fn trashed_folders_take_their_subtree_and_restore_brings_the_node_back() {
        let root = DriveRoot::new("/");
        let mut v = DriveView::from_base(&base());
        let mut del = node("fld_d", "/docs", true, "");
        del.deleted = true;
        v.apply(&root, &[change(v1::ChangeType::Deleted, del, "")]);
        assert_eq!(paths(&v), vec![("docs2".into(), "fld_x".into()), ("top.txt".into(), "fil_t".into())]);
        assert_eq!(v.snapshot.trashed.len(), 4);
        v.apply(&root, &[change(v1::ChangeType::Restored, node("fil_a", "/docs/a.txt", false, "ver_1"), "")]);
        // Restored under a folder that is still trashed in this view: no parent live yet.
        let snap = v.finish();
        assert!(snap.items.contains_key(&p("docs/a.txt")));
        assert!(!snap.trashed.contains_key(&NodeId("fil_a".into())));
        assert!(!snap.trashed[&NodeId("fld_s".into())].restorable);
        assert!(snap.trashed[&NodeId("fld_d".into())].restorable);
    }

    #[test]
    fn updates_renames_and_creations_replay_in_order() {
        let root = DriveRoot::new("/T");
        let mut v = DriveView::from_base(&base());
        v.apply(
            &root,
            &[
                change(v1::ChangeType::Updated, node("fil_t", "/T/top.txt", false, "ver_4"), ""),
                change(v1::ChangeType::Renamed, node("fil_a", "/T/docs/A2.txt", false, "ver_1"), "/T/docs/a.txt"),
                change(v1::ChangeType::Created, node("fil_c", "/T/docs/a.txt", false, "ver_5"), ""),
                change(v1::ChangeType::Created, node("fil_o", "/Outside/x.txt", false, "ver_6"), ""),
            ],
        );
        let t = v.get(&NodeId("fil_t".into())).unwrap();
        assert_eq!(t.version_id, Some(VersionId("ver_4".into())));
        assert!(v.needs_stat.contains(&NodeId("fil_t".into())));
        assert_eq!(v.get(&NodeId("fil_a".into())).unwrap().path, p("docs/A2.txt"));
        assert_eq!(v.get(&NodeId("fil_a".into())).unwrap().modified_at, FileTime(77));
        assert_eq!(v.get(&NodeId("fil_c".into())).unwrap().path, p("docs/a.txt"));
        assert!(v.get(&NodeId("fil_o".into())).is_none());
        // A Stat fills the missing time.
        let mut n = node("fil_t", "/T/top.txt", false, "ver_4");
        n.modified_at = Some(prost_types::Timestamp { seconds: 10, nanos: 0 });
        v.refresh(&root, &n);
        assert_eq!(v.needs_stat.iter().map(|n| &*n.0).collect::<Vec<_>>(), vec!["fil_c"]);
        assert_eq!(v.get(&NodeId("fil_t".into())).unwrap().modified_at, FileTime::from_unix(10, 0));
    }

    #[test]
    fn replaying_a_suffix_twice_converges() {
        let root = DriveRoot::new("/T");
        let log = [
            change(v1::ChangeType::Moved, node("fld_s", "/T/sub", true, ""), "/T/docs/sub"),
            change(v1::ChangeType::Renamed, node("fld_s", "/T/sub2", true, ""), "/T/sub"),
            change(v1::ChangeType::Updated, node("fil_b", "/T/sub2/b.txt", false, "ver_7"), ""),
        ];
        let mut once = DriveView::from_base(&base());
        once.apply(&root, &log);
        let mut twice = DriveView::from_base(&base());
        twice.apply(&root, &log);
        twice.apply(&root, &log[1..]);
        assert_eq!(paths(&once), paths(&twice));
        assert!(paths(&once).contains(&("sub2/b.txt".into(), "fil_b".into())));
    }

    #[test]
    fn the_target_folder_trashed_empties_the_view() {
        let root = DriveRoot::new("/T");
        let mut v = DriveView::from_base(&base());
        let mut t = node("fld_t", "/T", true, "");
        t.deleted = true;
        v.apply(&root, &[change(v1::ChangeType::Deleted, t, "")]);
        assert!(v.snapshot.items.is_empty());
    }

    #[test]
    fn a_listing_builds_the_first_view() {
        let root = DriveRoot::new("/T");
        let mut gone = node("fil_g", "/T/gone.txt", false, "ver_1");
        gone.deleted = true;
        let v = DriveView::from_listing(
            &root,
            [node("fld_d", "/T/docs", true, ""), node("fil_a", "/T/docs/a.txt", false, "ver_1"), gone],
        );
        assert_eq!(paths(&v), vec![("docs".into(), "fld_d".into()), ("docs/a.txt".into(), "fil_a".into())]);
    }
}
