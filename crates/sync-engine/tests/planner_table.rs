//! The planner's classification table, one small case per row and direction. One helper
//! builds the three inputs from short descriptions; each case states the plan it expects in a
//! compact rendering (`upload f.txt over ver_1`, `trash f.txt`, ...).

use std::collections::BTreeMap;

use sync_engine::*;

fn p(s: &str) -> RelPath {
    RelPath::new(s).unwrap()
}

fn sha(s: &str) -> Sha256 {
    Sha256::of(s.as_bytes())
}

/// Renders an action compactly for comparisons.
fn show(a: &Action) -> String {
    match a {
        Action::CreateDriveFolder { path, .. } => format!("mkdir-drive {path}"),
        Action::MkdirSmb { path, .. } => format!("mkdir-smb {path}"),
        Action::MoveOnDrive { from, to, .. } => format!("move-drive {from} -> {to}"),
        Action::RenameOnSmb { from, to, .. } => format!("rename-smb {from} -> {to}"),
        Action::RebaseState { from, to, .. } => format!("rebase {from} -> {to}"),
        Action::RestoreOnDrive { path, .. } => format!("restore {path}"),
        Action::UploadToDrive { path, base_version_id, .. } => match base_version_id {
            Some(v) => format!("upload {path} over {}", v.0),
            None => format!("upload {path} new"),
        },
        Action::DownloadToSmb { path, drive, smb_expected, preserve_smb } => format!(
            "download {path} ({}){}{}",
            drive.version_id.as_ref().map(|v| &*v.0).unwrap_or("-"),
            if smb_expected.is_some() { " replacing" } else { "" },
            if *preserve_smb { " preserving" } else { "" }
        ),
        Action::Conflict { path, resolution, .. } => match resolution {
            Resolution::SmbWins => format!("conflict {path} smb-wins"),
            Resolution::DriveWins => format!("conflict {path} drive-wins"),
            Resolution::KeepBoth { conflict_path } => {
                format!("conflict {path} keep-both as {conflict_path}")
            }
        },
        Action::TrashOnDrive { path, .. } => format!("trash {path}"),
        Action::DeleteOnSmb { path, preserve, .. } => {
            format!("delete-smb {path}{}", if *preserve { " preserving" } else { "" })
        }
        Action::RecordState { state } => format!("record {}", state.path),
        Action::ForgetState { path } => format!("forget {path}"),
        Action::Skip { path, code, .. } => format!("skip {path} {code}"),
    }
}

/// A world described item by item.
#[derive(Default, Clone)]
struct W {
    smb: BTreeMap<RelPath, SmbItem>,
    drive: DriveSnapshot,
    base: BaseState,
}

impl W {
    fn smb_file(mut self, path: &str, id: u64, size: u64, t: u64) -> Self {
        self.smb.insert(
            p(path),
            SmbItem {
                path: p(path),
                kind: ItemKind::File,
                size,
                last_write: FileTime(t),
                change_time: FileTime(t),
                file_id: id,
                hidden: false,
                system: false,
                reparse: false,
            },
        );
        self
    }
    fn smb_dir(mut self, path: &str, id: u64) -> Self {
        self.smb.insert(
            p(path),
            SmbItem {
                path: p(path),
                kind: ItemKind::Dir,
                size: 0,
                last_write: FileTime(1),
                change_time: FileTime(1),
                file_id: id,
                hidden: false,
                system: false,
                reparse: false,
            },
        );
        self
    }
    fn smb_attrs(mut self, path: &str, hidden: bool, system: bool, reparse: bool) -> Self {
        let it = self.smb.get_mut(&p(path)).unwrap();
        (it.hidden, it.system, it.reparse) = (hidden, system, reparse);
        self
    }
    fn drive_file(mut self, path: &str, node: &str, ver: &str, content: &str, t: u64) -> Self {
        self.drive.items.insert(p(path), drive_item(path, node, Some(ver), content, t));
        self
    }
    fn drive_dir(mut self, path: &str, node: &str) -> Self {
        self.drive.items.insert(p(path), drive_item(path, node, None, "", 1));
        self
    }
    fn trashed(mut self, path: &str, node: &str, ver: &str, content: &str) -> Self {
        let item = drive_item(path, node, Some(ver), content, 10);
        self.drive.trashed.insert(item.node_id.clone(), TrashedItem { item, restorable: true });
        self
    }
    /// A synced file: SMB (id, size = content length, time t) and ScaiDrive (node, version).
    fn synced_file(mut self, path: &str, id: u64, node: &str, ver: &str, content: &str, t: u64) -> Self {
        self.base.entries.insert(
            p(path),
            SyncedState {
                path: p(path),
                kind: ItemKind::File,
                smb: SmbSide {
                    file_id: id,
                    size: content.len() as u64,
                    last_write: FileTime(t),
                    change_time: FileTime(t),
                    sha256: Some(sha(content)),
                },
                drive: DriveSide {
                    node_id: NodeId(node.into()),
                    version_id: Some(VersionId(ver.into())),
                    size: content.len() as u64,
                    modified_at: FileTime(t),
                    sha256: Some(sha(content)),
                },
                last_synced_at: FileTime(t),
            },
        );
        self
    }
    fn synced_dir(mut self, path: &str, id: u64, node: &str) -> Self {
        self.base.entries.insert(
            p(path),
            SyncedState {
                path: p(path),
                kind: ItemKind::Dir,
                smb: SmbSide { file_id: id, size: 0, last_write: FileTime(1), change_time: FileTime(1), sha256: None },
                drive: DriveSide {
                    node_id: NodeId(node.into()),
                    version_id: None,
                    size: 0,
                    modified_at: FileTime(1),
                    sha256: None,
                },
                last_synced_at: FileTime(1),
            },
        );
        self
    }
    /// Synced on both sides and unchanged.
    fn file_everywhere(self, path: &str, id: u64, node: &str, content: &str) -> Self {
        self.synced_file(path, id, node, "ver_1", content, 10)
            .smb_file(path, id, content.len() as u64, 10)
            .drive_file(path, node, "ver_1", content, 10)
    }
    fn dir_everywhere(self, path: &str, id: u64, node: &str) -> Self {
        self.synced_dir(path, id, node).smb_dir(path, id).drive_dir(path, node)
    }

    fn plan(&self, settings: &Settings) -> Plan {
        let smb = SmbSnapshot { items: self.smb.clone() };
        let plan = plan(&smb, &self.drive, &self.base, settings);
        let full = sync_engine::plan::plan_unpruned(&smb, &self.drive, &self.base, settings);
        assert_eq!(plan, full, "the plan without the unchanged paths differs from the full plan");
        let compact = sync_engine::tracked::plan_compact(&smb, &self.drive, &self.base, settings);
        assert_eq!(compact, plan, "the plan from the compact inputs differs");
        plan
    }
}

fn drive_item(path: &str, node: &str, ver: Option<&str>, content: &str, t: u64) -> DriveItem {
    DriveItem {
        path: p(path),
        kind: if ver.is_some() { ItemKind::File } else { ItemKind::Dir },
        node_id: NodeId(node.into()),
        version_id: ver.map(|v| VersionId(v.into())),
        size: if ver.is_some() { content.len() as u64 } else { 0 },
        modified_at: FileTime(t),
        sha256: ver.map(|_| sha(content)),
    }
}

fn settings(direction: Direction, conflict: ConflictStrategy) -> Settings {
    Settings { direction, conflict, ..Settings::default() }
}

fn check(w: &W, settings: &Settings, expected: &[&str]) {
    let plan = w.plan(settings);
    let got: Vec<String> = plan.actions.iter().map(show).collect();
    assert_eq!(got, expected, "\nfull plan: {plan:#?}");
    // Determinism: the same inputs give the same plan.
    assert_eq!(w.plan(settings), plan);
}

#[derive(Clone, Copy, Debug)]
enum S {
    Same,
    Changed,
    Created,
    Deleted,
    Absent,
}

/// One file `f.txt` in the given state on each side. Base (if any): SMB id 1, "abc" at t=10;
/// ScaiDrive fil_1/ver_1. SMB changes happen at t=20 ("abcd"), ScaiDrive changes at `dt`
/// (ver_2 "wxyz" for a change, fil_9/ver_9 "wxyz" for a creation).
fn one_file(smb: S, drive: S, dt: u64) -> W {
    let mut w = W::default();
    if !matches!((smb, drive), (S::Created | S::Absent, S::Created | S::Absent)) {
        w = w.synced_file("f.txt", 1, "fil_1", "ver_1", "abc", 10);
    }
    w = match smb {
        S::Same => w.smb_file("f.txt", 1, 3, 10),
        S::Changed => w.smb_file("f.txt", 1, 4, 20),
        S::Created => w.smb_file("f.txt", 7, 4, 20),
        S::Deleted | S::Absent => w,
    };
    match drive {
        S::Same => w.drive_file("f.txt", "fil_1", "ver_1", "abc", 10),
        S::Changed => w.drive_file("f.txt", "fil_1", "ver_2", "wxyz", dt),
        S::Created => w.drive_file("f.txt", "fil_9", "ver_9", "wxyz", dt),
        S::Deleted => w.trashed("f.txt", "fil_1", "ver_1", "abc"),
        S::Absent => w,
    }
}

const LWW: ConflictStrategy = ConflictStrategy::LastWriterWins;

#[test]
fn smb_to_drive_table() {
    use S::*;
    let s = settings(Direction::SmbToDrive, LWW);
    let rows: &[(S, S, &[&str])] = &[
        (Same, Same, &[]),
        (Changed, Same, &["upload f.txt over ver_1"]),
        (Same, Changed, &["upload f.txt over ver_2"]),
        (Changed, Changed, &["upload f.txt over ver_2"]),
        (Deleted, Same, &["trash f.txt"]),
        (Deleted, Changed, &["trash f.txt"]),
        (Same, Deleted, &["restore f.txt"]),
        (Changed, Deleted, &["restore f.txt", "upload f.txt over ver_1"]),
        (Deleted, Deleted, &["forget f.txt"]),
        (Created, Absent, &["upload f.txt new"]),
        (Absent, Created, &["trash f.txt"]),
        (Created, Created, &["upload f.txt over ver_9"]),
    ];
    for (smb, drive, expected) in rows {
        println!("{smb:?}/{drive:?}");
        check(&one_file(*smb, *drive, 30), &Settings { max_delete_percent: 100, ..s.clone() }, expected);
    }
}

#[test]
fn drive_to_smb_table() {
    use S::*;
    let s = Settings { max_delete_percent: 100, ..settings(Direction::DriveToSmb, LWW) };
    let rows: &[(S, S, &[&str])] = &[
        (Same, Same, &[]),
        (Changed, Same, &["download f.txt (ver_1) replacing preserving"]),
        (Same, Changed, &["download f.txt (ver_2) replacing"]),
        (Changed, Changed, &["download f.txt (ver_2) replacing preserving"]),
        (Deleted, Same, &["download f.txt (ver_1)"]),
        (Deleted, Changed, &["download f.txt (ver_2)"]),
        (Same, Deleted, &["delete-smb f.txt"]),
        (Changed, Deleted, &["delete-smb f.txt preserving"]),
        (Deleted, Deleted, &["forget f.txt"]),
        (Created, Absent, &["delete-smb f.txt preserving"]),
        (Absent, Created, &["download f.txt (ver_9)"]),
        (Created, Created, &["download f.txt (ver_9) replacing preserving"]),
    ];
    for (smb, drive, expected) in rows {
        println!("{smb:?}/{drive:?}");
        check(&one_file(*smb, *drive, 30), &s, expected);
    }
}

#[test]
fn bidirectional_table() {
    use S::*;
    let s = Settings { max_delete_percent: 100, ..settings(Direction::Bidirectional, LWW) };
    let rows: &[(S, S, &[&str])] = &[
        (Same, Same, &[]),
        (Changed, Same, &["upload f.txt over ver_1"]),
        (Same, Changed, &["download f.txt (ver_2) replacing"]),
        // ScaiDrive's change (t=30) is newer than SMB's (t=20).
        (Changed, Changed, &["conflict f.txt drive-wins"]),
        (Deleted, Same, &["trash f.txt"]),
        (Same, Deleted, &["delete-smb f.txt"]),
        // A change beats a deletion.
        (Deleted, Changed, &["download f.txt (ver_2)"]),
        (Changed, Deleted, &["restore f.txt", "upload f.txt over ver_1"]),
        (Deleted, Deleted, &["forget f.txt"]),
        (Created, Absent, &["upload f.txt new"]),
        (Absent, Created, &["download f.txt (ver_9)"]),
        // Created on both: a conflict the executor records as synced if the content is equal.
        (Created, Created, &["conflict f.txt drive-wins"]),
    ];
    for (smb, drive, expected) in rows {
        println!("{smb:?}/{drive:?}");
        check(&one_file(*smb, *drive, 30), &s, expected);
    }
}

#[test]
fn conflict_strategies() {
    let both = |dt| one_file(S::Changed, S::Changed, dt);
    let bi = |c| settings(Direction::Bidirectional, c);
    check(&both(30), &bi(ConflictStrategy::SmbWins), &["conflict f.txt smb-wins"]);
    check(&both(5), &bi(ConflictStrategy::DriveWins), &["conflict f.txt drive-wins"]);
    check(&both(30), &bi(LWW), &["conflict f.txt drive-wins"]);
    check(&both(15), &bi(LWW), &["conflict f.txt smb-wins"]);
    // Tie: SMB wins, every time.
    check(&both(20), &bi(LWW), &["conflict f.txt smb-wins"]);
    check(&both(30), &bi(ConflictStrategy::KeepBoth), &["conflict f.txt keep-both as f (conflict).txt"]);
}

#[test]
fn keep_both_picks_the_first_free_conflict_name() {
    let w = one_file(S::Changed, S::Changed, 30).file_everywhere("f (conflict).txt", 2, "fil_2", "x").smb_file(
        "f (conflict 2).txt",
        3,
        1,
        5,
    );
    let s = Settings { conflict: ConflictStrategy::KeepBoth, ..settings(Direction::Bidirectional, LWW) };
    let plan = w.plan(&s);
    let got: Vec<String> = plan.actions.iter().map(show).collect();
    assert!(got.contains(&"conflict f.txt keep-both as f (conflict 3).txt".to_string()), "{got:?}");
}

#[test]
fn smb_rename_is_replayed_as_a_move_never_a_reupload() {
    let w = W::default()
        .synced_file("a.txt", 1, "fil_1", "ver_1", "abc", 10)
        .smb_file("b.txt", 1, 3, 10)
        .drive_file("a.txt", "fil_1", "ver_1", "abc", 10);
    for d in [Direction::SmbToDrive, Direction::Bidirectional] {
        check(&w, &settings(d, LWW), &["move-drive a.txt -> b.txt"]);
    }
    // ScaiDrive authoritative: the SMB rename is undone.
    check(&w, &settings(Direction::DriveToSmb, LWW), &["rename-smb b.txt -> a.txt"]);
}

#[test]
fn a_new_file_on_a_reused_file_id_is_a_deletion_and_a_creation() {
    // a.txt deleted and b.txt created: the file system gave b.txt a.txt's old id (Samba's
    // file ids are inode numbers), but its last-write time is new. Not a rename.
    let w = W::default()
        .synced_file("a.txt", 1, "fil_1", "ver_1", "abc", 10)
        .smb_file("b.txt", 1, 5, 20)
        .drive_file("a.txt", "fil_1", "ver_1", "abc", 10);
    let s = Settings { max_delete_percent: 100, ..settings(Direction::SmbToDrive, LWW) };
    check(&w, &s, &["upload b.txt new", "trash a.txt"]);
}

#[test]
fn folder_rename_is_one_move_and_children_follow() {
    let mut w = W::default().dir_everywhere("d", 1, "fld_1");
    w = w.synced_file("d/x.txt", 2, "fil_2", "ver_1", "abc", 10).drive_file("d/x.txt", "fil_2", "ver_1", "abc", 10);
    // SMB renamed d -> e (ids kept).
    w.smb.clear();
    let w = w.smb_dir("e", 1).smb_file("e/x.txt", 2, 3, 10);
    check(&w, &settings(Direction::SmbToDrive, LWW), &["move-drive d -> e"]);
}

#[test]
fn drive_rename_is_replayed_on_smb_in_bidirectional() {
    let w = W::default()
        .synced_file("a.txt", 1, "fil_1", "ver_1", "abc", 10)
        .smb_file("a.txt", 1, 3, 10)
        .drive_file("b.txt", "fil_1", "ver_1", "abc", 10);
    check(&w, &settings(Direction::Bidirectional, LWW), &["rename-smb a.txt -> b.txt"]);
    // SMB authoritative: ScaiDrive's rename is undone.
    check(&w, &settings(Direction::SmbToDrive, LWW), &["move-drive b.txt -> a.txt"]);
}

#[test]
fn rename_on_smb_and_edit_on_drive_both_apply() {
    let w = W::default()
        .synced_file("a.txt", 1, "fil_1", "ver_1", "abc", 10)
        .smb_file("b.txt", 1, 3, 10)
        .drive_file("a.txt", "fil_1", "ver_2", "wxyz", 30);
    check(
        &w,
        &settings(Direction::Bidirectional, LWW),
        &["move-drive a.txt -> b.txt", "download b.txt (ver_2) replacing"],
    );
}

#[test]
fn case_only_rename_propagates() {
    let w = W::default()
        .synced_file("Report.txt", 1, "fil_1", "ver_1", "abc", 10)
        .smb_file("report.txt", 1, 3, 10)
        .drive_file("Report.txt", "fil_1", "ver_1", "abc", 10);
    check(&w, &settings(Direction::Bidirectional, LWW), &["move-drive Report.txt -> report.txt"]);
}

#[test]
fn identical_moves_on_both_sides_only_rebase_the_state() {
    let w = W::default()
        .synced_file("a.txt", 1, "fil_1", "ver_1", "abc", 10)
        .smb_file("b.txt", 1, 3, 10)
        .drive_file("b.txt", "fil_1", "ver_1", "abc", 10);
    check(&w, &settings(Direction::Bidirectional, LWW), &["rebase a.txt -> b.txt"]);
}

#[test]
fn folder_deleted_on_smb_while_drive_added_inside_is_recreated() {
    let w = W::default()
        .synced_dir("d", 1, "fld_1")
        .drive_dir("d", "fld_1")
        .synced_file("d/x.txt", 2, "fil_2", "ver_1", "abc", 10)
        .drive_file("d/x.txt", "fil_2", "ver_1", "abc", 10)
        .drive_file("d/new.txt", "fil_3", "ver_3", "new", 30);
    let s = Settings { max_delete_percent: 100, ..settings(Direction::Bidirectional, LWW) };
    check(&w, &s, &["mkdir-smb d", "download d/new.txt (ver_3)", "trash d/x.txt"]);
}

#[test]
fn folder_deleted_on_drive_while_smb_added_inside_is_recreated() {
    let w = W::default()
        .synced_dir("d", 1, "fld_1")
        .smb_dir("d", 1)
        .synced_file("d/x.txt", 2, "fil_2", "ver_1", "abc", 10)
        .smb_file("d/x.txt", 2, 3, 10)
        .smb_file("d/new.txt", 3, 3, 30);
    let s = Settings { max_delete_percent: 100, ..settings(Direction::Bidirectional, LWW) };
    check(&w, &s, &["mkdir-drive d", "upload d/new.txt new", "delete-smb d/x.txt"]);
}

#[test]
fn folder_deleted_on_one_side_goes_after_its_files() {
    let w = W::default()
        .synced_dir("d", 1, "fld_1")
        .drive_dir("d", "fld_1")
        .synced_file("d/x.txt", 2, "fil_2", "ver_1", "abc", 10)
        .drive_file("d/x.txt", "fil_2", "ver_1", "abc", 10);
    let s = Settings { max_delete_percent: 100, ..settings(Direction::Bidirectional, LWW) };
    check(&w, &s, &["trash d/x.txt", "trash d"]);
}

#[test]
fn folders_are_created_before_their_content() {
    let w = W::default().smb_dir("a", 1).smb_dir("a/b", 2).smb_file("a/b/x.txt", 3, 3, 10);
    check(&w, &settings(Direction::SmbToDrive, LWW), &["mkdir-drive a", "mkdir-drive a/b", "upload a/b/x.txt new"]);
}

#[test]
fn folders_created_on_both_sides_are_recorded() {
    let w = W::default().smb_dir("a", 1).drive_dir("a", "fld_1");
    check(&w, &settings(Direction::Bidirectional, LWW), &["record a"]);
}

#[test]
fn windows_names_are_skipped_with_a_code() {
    let w = W::default()
        .drive_file("a:b.txt", "fil_1", "ver_1", "x", 1)
        .drive_file("CON.txt", "fil_2", "ver_2", "x", 1)
        .drive_file("trailing.", "fil_3", "ver_3", "x", 1)
        .drive_file("ok.txt", "fil_4", "ver_4", "x", 1);
    for d in [Direction::Bidirectional, Direction::DriveToSmb] {
        check(
            &w,
            &settings(d, LWW),
            &[
                "download ok.txt (ver_4)",
                "skip CON.txt NAME_RESERVED",
                "skip a:b.txt NAME_INVALID_CHARACTER",
                "skip trailing. NAME_TRAILING_DOT_OR_SPACE",
            ],
        );
    }
}

#[test]
fn case_only_twins_on_drive_sync_one_and_report_the_other() {
    let w = W::default().drive_file("X.txt", "fil_1", "ver_1", "x", 1).drive_file("x.txt", "fil_2", "ver_2", "y", 1);
    check(&w, &settings(Direction::Bidirectional, LWW), &["download X.txt (ver_1)", "skip x.txt NAME_CASE_CONFLICT"]);
}

#[test]
fn nfc_and_nfd_spellings_are_one_name() {
    let nfd = "Cafe\u{301}.txt";
    let w = W::default().smb_file(nfd, 1, 1, 1).drive_file("Caf\u{e9}.txt", "fil_1", "ver_1", "x", 1);
    // Created on both under one name: a conflict (identical content is recorded by the executor).
    check(&w, &settings(Direction::Bidirectional, ConflictStrategy::SmbWins), &["conflict Café.txt smb-wins"]);
}

#[test]
fn delete_guard_blocks_and_renames_do_not_count() {
    let mut w = W::default();
    for (i, n) in ["a", "b", "c", "d"].iter().enumerate() {
        w = w.file_everywhere(&format!("{n}.txt"), i as u64 + 1, &format!("fil_{i}"), "abc");
    }
    let s = settings(Direction::SmbToDrive, LWW);
    let mut deleted = w.clone();
    for n in ["a", "b", "c"] {
        deleted.smb.remove(&p(&format!("{n}.txt")));
    }
    let plan = deleted.plan(&s);
    assert_eq!(plan.blocked, Some(DeleteGuard { would_delete: 3, tracked: 4, percent: 75 }));
    assert!(deleted.plan(&Settings { max_delete_percent: 100, ..s.clone() }).blocked.is_none());
    // Two of four is not more than 50%.
    let mut two = w.clone();
    two.smb.remove(&p("a.txt"));
    two.smb.remove(&p("b.txt"));
    assert!(two.plan(&s).blocked.is_none());
    // Renames are not deletions.
    let mut renamed = w.clone();
    for (i, n) in ["a", "b", "c"].iter().enumerate() {
        renamed.smb.remove(&p(&format!("{n}.txt")));
        renamed = renamed.smb_file(&format!("{n}2.txt"), i as u64 + 1, 3, 10);
    }
    let plan = renamed.plan(&s);
    assert!(plan.blocked.is_none());
    assert_eq!(plan.actions.len(), 3);
    // The guard holds for deletions on SMB too.
    let mut drive_gone = w.clone();
    drive_gone.drive.items.clear();
    assert!(drive_gone.plan(&settings(Direction::Bidirectional, LWW)).blocked.is_some());
}

#[test]
fn filters_exclude_and_prune() {
    let filters = Filters::new(&FilterConfig {
        exclude_patterns: vec!["~$*".into(), "Thumbs.db".into(), "tmp".into()],
        ..FilterConfig::default()
    })
    .unwrap();
    let w = W::default()
        .smb_file("~$report.docx", 1, 1, 1)
        .smb_file("Thumbs.db", 2, 1, 1)
        .smb_dir("tmp", 3)
        .smb_file("tmp/a.txt", 4, 1, 1)
        .smb_file("hidden.txt", 5, 1, 1)
        .smb_attrs("hidden.txt", true, false, false)
        .smb_file("system.txt", 6, 1, 1)
        .smb_attrs("system.txt", false, true, false)
        .smb_file("link", 7, 1, 1)
        .smb_attrs("link", false, false, true)
        .smb_file("ok.txt", 8, 1, 1)
        // ScaiDrive-only files inside excluded paths are not trashed.
        .drive_file("tmp/b.txt", "fil_1", "ver_1", "x", 1);
    let s = Settings { filters, ..settings(Direction::SmbToDrive, LWW) };
    check(&w, &s, &["upload ok.txt new", "skip link SMB_REPARSE_POINT"]);
    let s2 = Settings { sync_hidden: true, sync_system: true, ..s.clone() };
    check(
        &w,
        &s2,
        &["upload hidden.txt new", "upload ok.txt new", "upload system.txt new", "skip link SMB_REPARSE_POINT"],
    );
    // The walker's pruning predicate.
    assert!(s.filters.excludes_dir(&w.smb[&p("tmp")], &s));
}

#[test]
fn include_whitelist_applies_to_files_only() {
    let filters =
        Filters::new(&FilterConfig { include_extensions: vec!["pdf".into()], ..FilterConfig::default() }).unwrap();
    let w = W::default().smb_dir("docs", 1).smb_file("docs/a.PDF", 2, 1, 1).smb_file("docs/b.txt", 3, 1, 1);
    let s = Settings { filters, ..settings(Direction::SmbToDrive, LWW) };
    check(&w, &s, &["mkdir-drive docs", "upload docs/a.PDF new"]);
}

#[test]
fn kind_clash_is_reported_and_left_alone() {
    let w = W::default().smb_file("x", 1, 1, 1).drive_dir("x", "fld_1").drive_file("x/y.txt", "fil_1", "ver_1", "y", 1);
    for d in [Direction::SmbToDrive, Direction::DriveToSmb, Direction::Bidirectional] {
        check(&w, &settings(d, LWW), &["skip x NODE_KIND_MISMATCH"]);
    }
}
