//! Mirroring: a first sync of a nested tree, then edits, additions, deletions, renames and
//! moves; a run with no change; SMB authoritative over ScaiDrive-side edits; per-file state.

use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

use crate::driver::{no_skip, sha256, sha256_file, Env, Setup};

/// Bytes 0..=255 repeated with a twist: binary content with every byte value and NULs.
fn binary(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ ((i >> 8) as u8)).collect()
}

const DEEP: usize = 16;

fn deep_dir() -> String {
    (0..DEEP).map(|i| format!("level{i:02}")).collect::<Vec<_>>().join("/")
}

/// 2020-01-02T03:04:05Z
fn fixed_mtime() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_577_934_245)
}

fn nested_tree(env: &Env) {
    env.write("root.txt", b"at the root\n");
    env.write("docs/empty.txt", b"");
    env.write("docs/caf\u{e9} cr\u{e8}me.txt", "NFC on disk".as_bytes());
    env.write("Nai\u{308}ve/re\u{301}sume\u{301}.txt", "NFD on disk".as_bytes());
    env.write("docs/\u{65e5}\u{672c}\u{8a9e} \u{1f600}.txt", "CJK and an emoji".as_bytes());
    env.write(&format!("{}/leaf.bin", deep_dir()), &binary(5000, 7));
    env.write("bin/blob.bin", &binary(700_000, 3));
    env.mkdir("empty-folder");
    let f = std::fs::File::options().write(true).open(env.disk().join("root.txt")).unwrap();
    f.set_modified(fixed_mtime()).unwrap();
}

on_both_setups!(
    first_sync_mirrors_a_nested_tree,
    edits_additions_deletions_renames_and_moves_are_mirrored,
    smb_wins_over_scaidrive_side_changes,
    file_states_show_both_sides,
    a_quiet_rerun_plans_against_the_workers_copy_of_the_synced_states,
);

async fn first_sync_mirrors_a_nested_tree(setup: Setup) {
    let env = Env::start(setup).await;
    nested_tree(&env);
    let c = env.connector(json!({})).await;
    let job = env.sync_ok(&c).await;
    env.assert_mirrored(&c, "", no_skip).await;

    // The NFD name is one NFC name in ScaiDrive, found by either spelling.
    let nfc = env.must(&c, "Na\u{ef}ve/r\u{e9}sum\u{e9}.txt").await;
    let nfd = env.must(&c, "Nai\u{308}ve/re\u{301}sume\u{301}.txt").await;
    assert_eq!(nfc["id"], nfd["id"]);
    assert_eq!(env.download(nfc["id"].as_str().unwrap()).await, b"NFD on disk");
    // Deep path and binary content, byte for byte.
    let leaf = env.must(&c, &format!("{}/leaf.bin", deep_dir())).await;
    assert_eq!(env.download(leaf["id"].as_str().unwrap()).await, binary(5000, 7));
    // The SMB last-write time is kept.
    let root = env.must(&c, "root.txt").await;
    assert!(root["modified_at"].as_str().unwrap().starts_with("2020-01-02T03:04:05"), "{root}");
    // Counters: 7 files (one empty), their bytes.
    let bytes = 12 + 11 + 11 + "CJK and an emoji".len() + 5000 + 700_000;
    assert_eq!(job["files_synced"], 7, "{job:#}");
    assert_eq!(job["bytes_transferred"], bytes as u64, "{job:#}");
    let cn = env.connector_json(&c).await;
    assert_eq!(cn["status"], "idle", "{cn}");
    assert_eq!(cn["total_files_synced"], 7, "{cn}");
    assert!(cn["last_sync_at"].is_string(), "{cn}");
    env.finish().await;
}

async fn edits_additions_deletions_renames_and_moves_are_mirrored(setup: Setup) {
    let env = Env::start(setup).await;
    env.write("docs/a.txt", b"version one");
    env.write("docs/old.txt", b"to be deleted");
    env.write("docs/moveme.txt", b"I will move");
    env.write("proj/readme.md", b"project");
    env.write("proj/src/main.rs", b"fn main() {}");
    let c = env.connector(json!({})).await;
    env.sync_ok(&c).await;
    let moveme = env.must(&c, "docs/moveme.txt").await;
    let moveme_versions = env.versions(moveme["id"].as_str().unwrap()).await;
    let readme = env.must(&c, "proj/readme.md").await;
    let proj = env.must(&c, "proj").await;
    let (_, cursor) = env.changes(&c, 0).await;

    // On SMB: an edit, an addition, a deletion, a folder rename, a move to another folder.
    env.write("docs/a.txt", b"version two, longer");
    env.write("docs/new.txt", b"brand new");
    std::fs::remove_file(env.disk().join("docs/old.txt")).unwrap();
    std::fs::rename(env.disk().join("proj"), env.disk().join("project")).unwrap();
    env.mkdir("archive");
    std::fs::rename(env.disk().join("docs/moveme.txt"), env.disk().join("archive/moveme.txt")).unwrap();
    let job = env.sync_ok(&c).await;
    env.assert_mirrored(&c, "", no_skip).await;

    // The edit is a new version on the same file.
    let a = env.must(&c, "docs/a.txt").await;
    let av = env.versions(a["id"].as_str().unwrap()).await;
    assert_eq!(av.len(), 2, "{av:?}");
    // The move kept the file's id and history: replayed as a move, never re-uploaded.
    let moved = env.must(&c, "archive/moveme.txt").await;
    assert_eq!(moved["id"], moveme["id"], "a move must keep the ScaiDrive file id");
    assert_eq!(env.versions(moved["id"].as_str().unwrap()).await, moveme_versions);
    assert_eq!(env.must(&c, "project/readme.md").await["id"], readme["id"]);
    assert_eq!(env.must(&c, "project").await["id"], proj["id"], "a folder rename keeps the folder");
    let (changes, _) = env.changes(&c, cursor).await;
    let of = |id: &Value| {
        changes
            .iter()
            .filter(|ch| &ch["node_id"] == id)
            .map(|ch| ch["type"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    let is_move = |t: &Vec<String>| t.len() == 1 && (t[0] == "moved" || t[0] == "renamed");
    assert!(is_move(&of(&moveme["id"])), "moveme: {:?}\n{changes:#?}", of(&moveme["id"]));
    assert!(is_move(&of(&proj["id"])), "proj: {:?}\n{changes:#?}", of(&proj["id"]));
    assert!(of(&readme["id"]).is_empty(), "the renamed folder's content is not touched: {changes:#?}");
    let deleted: Vec<&str> =
        changes.iter().filter(|ch| ch["type"] == "deleted").map(|ch| ch["path"].as_str().unwrap()).collect();
    assert_eq!(deleted, vec!["/Mirror/docs/old.txt"], "{changes:#?}");
    assert_eq!(job["files_synced"], 2, "the edit and the addition only: {job:#}");
    assert_eq!(job["bytes_transferred"], 19 + 9, "{job:#}");
    // The deleted file is in the share's trash.
    let trash = env.trash(&c).await;
    assert!(trash.iter().any(|t| t["name"] == "old.txt"), "{trash:?}");

    // A run with no change transfers nothing and records nothing.
    let (_, cursor) = env.changes(&c, 0).await;
    let job = env.sync_ok(&c).await;
    assert_eq!((job["files_synced"].as_i64(), job["bytes_transferred"].as_i64()), (Some(0), Some(0)), "{job:#}");
    let (changes, _) = env.changes(&c, cursor).await;
    assert!(changes.is_empty(), "a run with no change wrote: {changes:#?}");
    assert_eq!(env.versions(a["id"].as_str().unwrap()).await.len(), 2);
    env.finish().await;
}

async fn smb_wins_over_scaidrive_side_changes(setup: Setup) {
    let env = Env::start(setup).await;
    env.write("edited.txt", b"SMB content");
    env.write("deleted.txt", b"deleted in ScaiDrive");
    let c = env.connector(json!({})).await;
    env.sync_ok(&c).await;
    let edited = env.must(&c, "edited.txt").await;
    let eid = edited["id"].as_str().unwrap().to_string();
    let deleted = env.must(&c, "deleted.txt").await;

    // ScaiDrive side: an edit, a new file, a deletion.
    let (st, w) = e2e_tests::Api::send(
        env.api.request(reqwest::Method::PUT, &format!("/api/v1/files/{eid}/content")).body("edited in ScaiDrive"),
    )
    .await;
    assert_eq!(st, 200, "{w}");
    let (st, only) = env.api.upload(&c.share, "/Mirror/only-in-drive.txt", "not on SMB").await;
    assert_eq!(st, 201, "{only}");
    let (st, _) = env.api.delete(&format!("/api/v1/files/{}", deleted["id"].as_str().unwrap())).await;
    assert_eq!(st, 204);

    env.sync_ok(&c).await;
    env.assert_mirrored(&c, "", no_skip).await;
    // The edit is overwritten, but stays in the history.
    assert_eq!(env.download(&eid).await, b"SMB content");
    let shas: Vec<String> =
        env.versions(&eid).await.iter().map(|v| v["sha256"].as_str().unwrap().to_string()).collect();
    assert!(shas.contains(&sha256(b"edited in ScaiDrive")), "the ScaiDrive edit must stay a version: {shas:?}");
    assert_eq!(shas[0], sha256(b"SMB content"));
    // The ScaiDrive-only file is in trash; the deleted one is restored (same file).
    let trash = env.trash(&c).await;
    assert!(trash.iter().any(|t| t["id"] == only["file"]["id"]), "{trash:?}");
    assert_eq!(env.must(&c, "deleted.txt").await["id"], deleted["id"], "a ScaiDrive-side deletion is restored");
    env.finish().await;
}

async fn file_states_show_both_sides(setup: Setup) {
    let env = Env::start(setup).await;
    env.write("docs/a.txt", b"alpha");
    env.write("docs/sub/b.bin", &binary(3000, 1));
    env.write("c.txt", b"");
    let c = env.connector(json!({})).await;
    env.sync_ok(&c).await;

    let all = env.file_states(&c, "").await;
    let path = |f: &Value| f["path"].as_str().unwrap().trim_matches('/').to_string();
    let mut paths: Vec<String> = all.iter().map(path).collect();
    paths.sort();
    assert_eq!(paths, ["c.txt", "docs", "docs/a.txt", "docs/sub", "docs/sub/b.bin"], "{all:#?}");
    for f in &all {
        assert_eq!(f["status"], "synced", "{f}");
        assert!(f["last_synced_at"].is_string(), "{f}");
        let item = env.must(&c, &path(f)).await;
        assert_eq!(f["scaidrive"]["file_id"], item["id"], "{f}");
        assert!(f["smb"]["file_id"].is_string(), "{f}");
        if f["kind"] == "file" {
            let (size, sha) = sha256_file(&env.disk().join(path(f)));
            assert_eq!(f["smb"]["size"], size, "{f}");
            assert_eq!(f["smb"]["checksum"], sha.as_str(), "{f}");
            assert!(f["smb"]["last_write_time"].is_string(), "{f}");
            assert_eq!(f["scaidrive"]["version_id"], item["current_version_id"], "{f}");
            assert_eq!(f["scaidrive"]["checksum"], sha.as_str(), "{f}");
        } else {
            assert_eq!(f["kind"], "folder", "{f}");
        }
    }
    let docs = env.file_states(&c, "&path_prefix=docs").await;
    let mut dp: Vec<String> = docs.iter().map(path).collect();
    dp.sort();
    assert_eq!(dp, ["docs", "docs/a.txt", "docs/sub", "docs/sub/b.bin"]);
    assert_eq!(env.file_states(&c, "&status=synced").await.len(), 5);
    assert!(env.file_states(&c, "&status=error").await.is_empty());
    env.finish().await;
}

/// A file over 1 GiB, written sparse on disk, streamed through the sync and downloaded back
/// through the REST API into a hash (never held in memory). Standalone only, to bound CI time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_over_one_gib_is_synced_intact() {
    let env = Env::start(Setup::Standalone).await;
    let size: u64 = (1 << 30) + 4099;
    let p = env.disk().join("big/huge.bin");
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::File::create(&p).unwrap();
        f.set_len(size).unwrap();
        for off in [0u64, 4 << 20, 512 << 20, size - 1000] {
            f.seek(SeekFrom::Start(off)).unwrap();
            f.write_all(&binary(1000, off as u8)).unwrap();
        }
    }
    let want = tokio::task::spawn_blocking(move || sha256_file(&p)).await.unwrap();
    let c = env.connector(json!({})).await;
    let id = env.trigger(&c).await;
    let job = env.wait_job(&c, &id, Duration::from_secs(240)).await;
    assert_eq!(job["status"], "completed", "{job:#}");
    assert_eq!(job["bytes_transferred"], size, "{job:#}");
    let item = env.must(&c, "big/huge.bin").await;
    assert_eq!((item["size"].as_u64().unwrap(), item["sha256"].as_str().unwrap()), (want.0, want.1.as_str()));
    let got = env.download_sha256(item["id"].as_str().unwrap()).await;
    assert_eq!(got, want);
    env.finish().await;
}

on_both_setups!(a_file_id_seen_again_with_new_content_is_not_taken_for_a_rename);

/// Samba's file ids are inode numbers, which the file system hands out again: a file deleted
/// and another created may carry the old id at a new path. The planner takes an id at a new
/// path for a rename only if the last-write time is the synced one. Reuse itself cannot be
/// forced here, so the same situation is made deterministically with a hard link: the old
/// name goes away, the id appears under a new name with new content and a new last-write
/// time. That is a deletion (to trash) and a creation, never a move of the old file.
async fn a_file_id_seen_again_with_new_content_is_not_taken_for_a_rename(setup: Setup) {
    use std::os::unix::fs::MetadataExt;
    let env = Env::start(setup).await;
    env.write("keep.txt", b"keep");
    env.write("old.txt", b"old content");
    let c = env.connector(json!({"max_delete_percent": 100})).await;
    env.sync_ok(&c).await;
    let old_id = env.must(&c, "old.txt").await["id"].as_str().unwrap().to_string();
    let (_, cursor) = env.changes(&c, 0).await;

    let ino = std::fs::metadata(env.disk().join("old.txt")).unwrap().ino();
    std::fs::hard_link(env.disk().join("old.txt"), env.disk().join("new.txt")).unwrap();
    std::fs::remove_file(env.disk().join("old.txt")).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(env.disk().join("new.txt"), b"a new file").unwrap();
    assert_eq!(std::fs::metadata(env.disk().join("new.txt")).unwrap().ino(), ino, "same file id");
    env.chown_all();
    env.sync_ok(&c).await;

    let (changes, _) = env.changes(&c, cursor).await;
    let kinds: Vec<(String, String)> = changes
        .iter()
        .map(|ch| (ch["type"].as_str().unwrap().to_string(), ch["path"].as_str().unwrap().to_string()))
        .collect();
    assert!(kinds.iter().all(|(t, _)| t != "renamed" && t != "moved"), "{kinds:?}");
    let new = env.must(&c, "new.txt").await;
    assert_ne!(new["id"].as_str().unwrap(), old_id, "a new ScaiDrive file");
    assert!(env.trash(&c).await.iter().any(|t| t["id"].as_str() == Some(old_id.as_str())), "old.txt is in trash");
    env.assert_mirrored(&c, "", no_skip).await;
    env.finish().await;
}

/// Whether a job's log says it planned against the worker's copy of the synced states.
fn reused_states(job: &Value) -> bool {
    job["events"].as_array().unwrap().iter().any(|e| e["code"] == "SYNCED_STATES_REUSED" && e["level"] == "info")
}

/// Issue 8: a quiet re-run needs no listing of the synced states when the worker already holds
/// them as they are (the control plane's version says so). Changes on either side found in
/// such a run are synced exactly as in any other; the run that writes states makes the copy
/// stale, so the next run lists them again.
async fn a_quiet_rerun_plans_against_the_workers_copy_of_the_synced_states(setup: Setup) {
    let env = Env::start(setup).await;
    for i in 0..10 {
        env.write(&format!("d{}/f{i}.txt", i % 3), format!("file {i}").as_bytes());
    }
    let c = env.connector(json!({})).await;
    let first = env.sync_ok(&c).await;
    assert!(!reused_states(&first), "nothing to reuse on a first run: {first:#}");
    // Quiet runs: the first lists the states (and the worker keeps them), a later one reuses
    // them. (Distributed: two worker processes, each with its own copy.)
    let mut quiet = Vec::new();
    while quiet.len() < 6 && !quiet.last().is_some_and(reused_states) {
        let job = env.sync_ok(&c).await;
        assert_eq!((job["files_synced"].as_i64(), job["files_deleted"].as_i64()), (Some(0), Some(0)), "{job:#}");
        quiet.push(job);
    }
    assert!(!reused_states(&quiet[0]), "the first quiet run lists: {:#}", quiet[0]);
    assert!(quiet.last().is_some_and(reused_states), "no quiet run reused the states: {quiet:#?}\n{}", env.logs());
    if setup == Setup::Standalone {
        assert_eq!(quiet.len(), 2, "the embedded workers share one copy: {quiet:#?}");
    }
    // Another quiet run on either worker now reuses (both listed the same states).
    let job = env.sync_ok(&c).await;
    assert!(reused_states(&job), "{job:#}");

    // Changes on both sides, planned against the copy.
    env.write("d0/f0.txt", b"file 0, edited on SMB");
    std::fs::remove_file(env.disk().join("d1/f1.txt")).unwrap();
    env.write("d2/new.txt", b"added on SMB");
    let gone = env.must(&c, "d2/f2.txt").await;
    let (st, v) = env.api.delete(&format!("/api/v1/files/{}", gone["id"].as_str().unwrap())).await;
    assert!(st.is_success(), "{v}");
    let changed = env.sync_ok(&c).await;
    assert!(reused_states(&changed), "{changed:#}");
    env.assert_mirrored(&c, "", no_skip).await;
    assert_eq!(env.download(env.must(&c, "d0/f0.txt").await["id"].as_str().unwrap()).await, b"file 0, edited on SMB");
    assert!(env.target_item(&c, "d1/f1.txt").await.is_none(), "deleted on SMB");
    assert_eq!(env.download(env.must(&c, "d2/f2.txt").await["id"].as_str().unwrap()).await, b"file 2", "restored");

    // That run wrote states: the next one lists them again, and the copy it keeps is current.
    let next = env.sync_ok(&c).await;
    assert!(!reused_states(&next), "{next:#}");
    assert_eq!((next["files_synced"].as_i64(), next["files_deleted"].as_i64()), (Some(0), Some(0)), "{next:#}");
    env.assert_mirrored(&c, "", no_skip).await;
    env.finish().await;
}
