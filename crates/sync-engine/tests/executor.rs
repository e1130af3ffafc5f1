//! The executor over the in-memory replicas: verified writes, changes during a run,
//! cancellation, the delete guard, conflict resolutions and echo suppression.

use sync_engine::testing::World;
use sync_engine::*;

fn settings(direction: Direction, conflict: ConflictStrategy) -> Settings {
    Settings { direction, conflict, ..Settings::default() }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().build().unwrap()
}

type Listing = Vec<(String, Option<String>)>;

fn tree(w: &World) -> (Listing, Listing) {
    let f = |t: std::collections::BTreeMap<String, Option<bytes::Bytes>>| {
        t.into_iter().map(|(k, v)| (k, v.map(|b| String::from_utf8_lossy(&b).into_owned()))).collect::<Vec<_>>()
    };
    (f(w.smb.tree()), f(w.drive.tree()))
}

#[test]
fn first_sync_of_a_nested_tree_then_a_second_run_transfers_nothing() {
    let rt = rt();
    let w = World::default();
    w.smb.user_write("empty.txt", b"");
    w.smb.user_write("Straße/Ünïcødé €.txt", b"unicode");
    w.smb.user_write("a/b/c/d/e/f/deep.bin", &vec![7u8; 100_000]);
    w.smb.user_mkdir("empty-folder");
    let s = settings(Direction::SmbToDrive, ConflictStrategy::LastWriterWins);
    let (_, rep) = rt.block_on(w.run(&s));
    assert!(rep.errors.is_empty(), "{:?}", rep.errors);
    assert_eq!(rep.files_synced, 3);
    assert_eq!(rep.bytes_uploaded, 100_007);
    let (smb, drive) = tree(&w);
    assert_eq!(smb, drive);
    let versions = w.drive.version_count();
    assert!(w.plan(&s).is_noop());
    let (plan, rep) = rt.block_on(w.run(&s));
    assert!(plan.actions.is_empty());
    assert_eq!((rep.files_synced, rep.bytes_uploaded), (0, 0));
    assert_eq!(w.drive.version_count(), versions);
}

#[test]
fn a_file_changed_while_being_read_is_not_committed_and_is_retried() {
    let rt = rt();
    let w = World::default();
    w.smb.user_write("a.txt", b"first");
    let s = settings(Direction::SmbToDrive, ConflictStrategy::LastWriterWins);
    w.smb.change_on_next_read("a.txt", b"second, longer");
    let (_, rep) = rt.block_on(w.run(&s));
    assert_eq!(rep.errors.len(), 1, "{:?}", rep.errors);
    assert!(w.drive.tree().is_empty(), "nothing half-read is committed");
    assert!(w.state.base().entries.is_empty(), "no state for an uncommitted file");
    let (_, rep) = rt.block_on(w.run(&s));
    assert!(rep.errors.is_empty());
    assert_eq!(tree(&w).1, vec![("a.txt".to_string(), Some("second, longer".to_string()))]);
}

#[test]
fn a_file_changed_after_listing_is_reported_and_retried() {
    let rt = rt();
    let w = World::default();
    w.smb.user_write("a.txt", b"one");
    let s = settings(Direction::SmbToDrive, ConflictStrategy::LastWriterWins);
    let plan = w.plan(&s);
    w.smb.user_write("a.txt", b"two!");
    let rep = rt.block_on(execute(&plan, &w.smb, &w.drive, &w.state, &ExecOptions::default()));
    assert_eq!(rep.errors[0].code, codes::SMB_CHANGED);
    assert_eq!(w.state.take_issues().len(), 1);
    rt.block_on(w.run(&s));
    assert_eq!(tree(&w).1, vec![("a.txt".to_string(), Some("two!".to_string()))]);
}

#[test]
fn cancellation_stops_between_files() {
    let rt = rt();
    let w = World::default();
    w.smb.user_write("a.txt", b"a");
    let plan = w.plan(&Settings::default());
    let opts = ExecOptions::default();
    opts.cancel.cancel();
    let rep = rt.block_on(execute(&plan, &w.smb, &w.drive, &w.state, &opts));
    assert!(rep.cancelled);
    assert_eq!(rep.applied, 0);
    assert!(w.drive.tree().is_empty());
}

#[test]
fn delete_guard_stops_before_deleting_anything() {
    let rt = rt();
    let w = World::default();
    for n in ["a", "b", "c"] {
        w.smb.user_write(&format!("{n}.txt"), n.as_bytes());
    }
    let s = settings(Direction::SmbToDrive, ConflictStrategy::LastWriterWins);
    rt.block_on(w.run(&s));
    w.smb.user_delete("a.txt");
    w.smb.user_delete("b.txt");
    w.smb.user_write("new.txt", b"new");
    let (plan, rep) = rt.block_on(w.run(&s));
    assert_eq!(plan.blocked, Some(DeleteGuard { would_delete: 2, tracked: 3, percent: 67 }));
    assert_eq!(rep.blocked, plan.blocked);
    assert_eq!(rep.applied, 0);
    assert_eq!(w.drive.tree().len(), 3, "nothing trashed, nothing uploaded");
}

#[test]
fn keep_both_renames_the_scaidrive_copy() {
    let rt = rt();
    let w = World::default();
    w.smb.user_write("report.docx", b"v1");
    let s = settings(Direction::Bidirectional, ConflictStrategy::KeepBoth);
    rt.block_on(w.run(&s));
    w.smb.user_write("report.docx", b"smb edit");
    w.drive.user_write("report.docx", b"drive edit");
    let (_, rep) = rt.block_on(w.run(&s));
    assert!(rep.errors.is_empty(), "{:?}", rep.errors);
    let expected = vec![
        ("report (conflict).docx".to_string(), Some("drive edit".to_string())),
        ("report.docx".to_string(), Some("smb edit".to_string())),
    ];
    assert_eq!(tree(&w), (expected.clone(), expected));
    assert_eq!(rep.conflicts, 1);
    let notes = w.state.notes();
    assert!(
        notes.iter().any(|n| n.path.as_str() == "report.docx"
            && n.code == note_codes::CONFLICT_RESOLVED
            && n.message.contains("report (conflict).docx")),
        "the job log names the conflict and where the other copy went: {notes:?}"
    );
    assert!(w.plan(&s).is_noop());
}

#[test]
fn drive_wins_keeps_the_smb_content_as_a_scaidrive_version() {
    let rt = rt();
    let w = World::default();
    w.smb.user_write("a.txt", b"v1");
    let s = settings(Direction::Bidirectional, ConflictStrategy::DriveWins);
    rt.block_on(w.run(&s));
    w.smb.user_write("a.txt", b"smb edit");
    w.drive.user_write("a.txt", b"drive edit");
    rt.block_on(w.run(&s));
    let only = vec![("a.txt".to_string(), Some("drive edit".to_string()))];
    assert_eq!(tree(&w), (only.clone(), only));
    assert!(w.drive.all_contents().contains(&bytes::Bytes::from_static(b"smb edit")));
    let codes: Vec<String> = w.state.notes().into_iter().map(|n| n.code).collect();
    assert!(codes.contains(&note_codes::SMB_CONTENT_KEPT.to_string()), "{codes:?}");
    assert!(codes.contains(&note_codes::CONFLICT_RESOLVED.to_string()), "{codes:?}");
    assert!(w.plan(&s).is_noop());
}

#[test]
fn last_writer_wins_takes_the_newer_side() {
    let rt = rt();
    let w = World::default();
    w.smb.user_write("a.txt", b"v1");
    let s = settings(Direction::Bidirectional, ConflictStrategy::LastWriterWins);
    rt.block_on(w.run(&s));
    w.smb.user_write("a.txt", b"older smb edit");
    w.drive.user_write("a.txt", b"newer drive edit");
    rt.block_on(w.run(&s));
    let only = vec![("a.txt".to_string(), Some("newer drive edit".to_string()))];
    assert_eq!(tree(&w), (only.clone(), only));
    assert!(w.drive.all_contents().contains(&bytes::Bytes::from_static(b"older smb edit")));
}

#[test]
fn identical_content_created_on_both_sides_is_no_conflict() {
    let rt = rt();
    let w = World::default();
    w.smb.user_write("same.txt", b"same");
    w.drive.user_write("same.txt", b"same");
    let versions = w.drive.version_count();
    let s = settings(Direction::Bidirectional, ConflictStrategy::KeepBoth);
    let (_, rep) = rt.block_on(w.run(&s));
    assert!(rep.errors.is_empty());
    assert_eq!(w.drive.version_count(), versions, "no new version");
    assert_eq!(tree(&w).0.len(), 1, "no conflict copy");
    assert!(w.plan(&s).is_noop());
}

#[test]
fn drive_to_smb_keeps_smb_only_files_in_the_trash_before_deleting() {
    let rt = rt();
    let w = World::default();
    w.drive.user_write("a.txt", b"from drive");
    w.smb.user_write("d/only-on-smb.txt", b"precious");
    let s = Settings { max_delete_percent: 100, ..settings(Direction::DriveToSmb, ConflictStrategy::LastWriterWins) };
    let (_, rep) = rt.block_on(w.run(&s));
    assert!(rep.errors.is_empty(), "{:?}", rep.errors);
    let only = vec![("a.txt".to_string(), Some("from drive".to_string()))];
    assert_eq!(tree(&w), (only.clone(), only));
    assert!(w.drive.all_contents().contains(&bytes::Bytes::from_static(b"precious")));
    let notes = w.state.notes();
    assert!(
        notes.iter().any(|n| n.path.as_str() == "d/only-on-smb.txt" && n.code == note_codes::SMB_CONTENT_KEPT),
        "the job log names the SMB-only file kept in trash: {notes:?}"
    );
    assert!(w.plan(&s).is_noop());
}

#[test]
fn smb_to_drive_overwrites_drive_edits_and_restores_drive_deletions() {
    let rt = rt();
    let w = World::default();
    w.smb.user_write("a.txt", b"smb");
    w.smb.user_write("b.txt", b"smb b");
    let s = Settings { max_delete_percent: 100, ..settings(Direction::SmbToDrive, ConflictStrategy::LastWriterWins) };
    rt.block_on(w.run(&s));
    w.drive.user_write("a.txt", b"drive edit");
    w.drive.user_delete("b.txt");
    w.drive.user_write("drive-only.txt", b"x");
    let (plan, rep) = rt.block_on(w.run(&s));
    assert!(rep.errors.is_empty(), "{:?}", rep.errors);
    assert!(plan.actions.iter().any(|a| matches!(a, Action::RestoreOnDrive { .. })));
    let (smb, drive) = tree(&w);
    assert_eq!(smb, drive);
    assert!(w.drive.all_contents().contains(&bytes::Bytes::from_static(b"drive edit")));
    assert!(w.plan(&s).is_noop());
}

#[test]
fn renames_and_moves_are_replayed_without_reupload() {
    let rt = rt();
    let w = World::default();
    w.smb.user_write("d/a.txt", b"a");
    w.smb.user_write("d/b.txt", b"b");
    w.smb.user_mkdir("e");
    let s = settings(Direction::SmbToDrive, ConflictStrategy::LastWriterWins);
    rt.block_on(w.run(&s));
    let versions = w.drive.version_count();
    w.smb.user_rename("d", "renamed");
    w.smb.user_rename("renamed/a.txt", "e/a.txt");
    let (_, rep) = rt.block_on(w.run(&s));
    assert!(rep.errors.is_empty(), "{:?}", rep.errors);
    assert_eq!(rep.bytes_uploaded, 0);
    assert_eq!(w.drive.version_count(), versions);
    let (smb, drive) = tree(&w);
    assert_eq!(smb, drive);
    assert!(w.plan(&s).is_noop());
}

#[test]
fn runs_without_user_changes_create_no_versions_in_any_mode() {
    let rt = rt();
    for d in [Direction::SmbToDrive, Direction::DriveToSmb, Direction::Bidirectional] {
        let w = World::default();
        w.smb.user_write("s.txt", b"s");
        w.drive.user_write("d.txt", b"d");
        let s = Settings { max_delete_percent: 100, ..settings(d, ConflictStrategy::LastWriterWins) };
        rt.block_on(w.run(&s));
        let v = w.drive.version_count();
        for _ in 0..3 {
            let (plan, _) = rt.block_on(w.run(&s));
            assert!(plan.actions.is_empty(), "{d:?}: {plan:?}");
        }
        assert_eq!(w.drive.version_count(), v);
    }
}

/// Many small files go at once; files over 1 MiB only `max_large_transfers` at a time, with
/// small ones beside them.
#[test]
fn small_files_overlap_widely_and_large_ones_are_bounded() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let w = World::default();
    for i in 0..10 {
        w.smb.user_write(&format!("large/{i}.bin"), &vec![i as u8; 1024 * 1024 + 1]);
    }
    for i in 0..60 {
        w.smb.user_write(&format!("small/{i}.txt"), format!("small {i}").as_bytes());
    }
    let probe = w.smb.probe_reads(std::time::Duration::from_millis(20));
    let s = settings(Direction::SmbToDrive, ConflictStrategy::LastWriterWins);
    let plan = w.plan(&s);
    let opts = ExecOptions { max_transfers: 16, max_large_transfers: 2, ..Default::default() };
    let rep = rt.block_on(execute(&plan, &w.smb, &w.drive, &w.state, &opts));
    assert!(rep.errors.is_empty(), "{:?}", rep.errors);
    assert_eq!(rep.files_synced, 70);
    let (all, large) = probe.peaks();
    assert_eq!(large, 2, "large transfers at once");
    assert_eq!(all, 16, "transfers at once");
    assert_eq!(tree(&w).0, tree(&w).1);
}
