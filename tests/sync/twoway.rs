//! Two-way sync and ScaiDrive → SMB (issue 5), standalone only to bound CI time. Every case
//! is data: a synced baseline (`a.txt` … `d.txt`), changes on SMB (on disk) and/or on
//! ScaiDrive (REST), one run; then both sides must hold exactly the expected files, no
//! content that existed before the run may be unreachable in ScaiDrive (live, a previous
//! version or trash), and a second run must plan nothing (no file synced or deleted, nothing
//! in the change log, both trees unchanged).

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, SystemTime};

use e2e_tests::{encode, Api};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::driver::{assert_trees, no_skip, sha256, Conn, Entry, Env, Setup, Tree};

/// One change on one side.
#[derive(Clone, Copy, Debug)]
enum Op {
    /// Create or overwrite a file.
    Put(&'static str, &'static str),
    /// The same, with a modification time this many seconds after the baseline.
    PutAt(&'static str, &'static str, u64),
    Del(&'static str),
    /// Rename in the same folder.
    Mv(&'static str, &'static str),
}

struct Case {
    direction: &'static str,
    strategy: &'static str,
    smb: &'static [Op],
    drive: &'static [Op],
    /// Both sides after the run, besides the untouched `c.txt` and `d.txt`.
    want: &'static [(&'static str, &'static str)],
    /// Files only ScaiDrive holds after the run (names SMB cannot hold).
    drive_only: &'static [(&'static str, &'static str)],
}

const BASE: [(&str, &str); 4] = [("a.txt", "a base"), ("b.txt", "b base"), ("c.txt", "c base"), ("d.txt", "d base")];
const BYSTANDERS: [(&str, &str); 2] = [("c.txt", "c base"), ("d.txt", "d base")];

const BI: &str = "bidirectional";
const STRATEGIES: [&str; 4] = ["LAST_WRITER_WINS", "KEEP_BOTH", "SCAIDRIVE_WINS", "SMB_WINS"];
const D2S: &str = "scaidrive_to_smb";

/// What a case leaves for its own checks.
struct Ran {
    env: Env,
    c: Conn,
    /// The first run after the changes, and the second one.
    job: Value,
    job2: Value,
    /// ScaiDrive file ids and SMB inodes of the baseline, by path.
    ids: BTreeMap<String, String>,
    inodes: BTreeMap<String, u64>,
    /// The change log of the first run (after the test's own REST changes).
    run_changes: Vec<Value>,
}

fn tree(files: &[(&str, &str)]) -> Tree {
    files
        .iter()
        .map(|(p, d)| (p.to_string(), Entry::File { size: d.len() as u64, sha256: sha256(d.as_bytes()) }))
        .collect()
}

/// RFC 3339 (UTC) of a time, for `modified_at`.
fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem / 60 % 60, rem % 60)
}

async fn drive_put(env: &Env, c: &Conn, rel: &str, data: &str, mtime: Option<SystemTime>) {
    let mut q =
        format!("/api/v1/shares/{}/files?path={}&create_parents=true", c.share, encode(&format!("{}/{rel}", c.target)));
    if let Some(t) = mtime {
        q.push_str(&format!("&modified_at={}", encode(&rfc3339(t))));
    }
    let (st, v) = Api::send(env.api.request(reqwest::Method::PUT, &q).body(data.to_string())).await;
    assert!(st == StatusCode::CREATED || st == StatusCode::OK, "upload {rel}: {st} {v}");
}

async fn id_of(env: &Env, c: &Conn, rel: &str) -> String {
    env.must(c, rel).await["id"].as_str().unwrap().to_string()
}

async fn apply_drive(env: &Env, c: &Conn, ops: &[Op], t0: SystemTime) {
    for op in ops {
        match *op {
            Op::Put(p, d) => drive_put(env, c, p, d, None).await,
            Op::PutAt(p, d, s) => drive_put(env, c, p, d, Some(t0 + Duration::from_secs(s))).await,
            Op::Del(p) => {
                let (st, v) = env.api.delete(&format!("/api/v1/files/{}", id_of(env, c, p).await)).await;
                assert_eq!(st, StatusCode::NO_CONTENT, "delete {p}: {v}");
            }
            Op::Mv(from, to) => {
                let (st, v) =
                    env.api.patch(&format!("/api/v1/files/{}", id_of(env, c, from).await), json!({"name": to})).await;
                assert_eq!(st, StatusCode::OK, "rename {from}: {v}");
            }
        }
    }
}

fn apply_smb(env: &Env, ops: &[Op], t0: SystemTime) {
    for op in ops {
        match *op {
            Op::Put(p, d) => env.write(p, d.as_bytes()),
            Op::PutAt(p, d, s) => {
                env.write(p, d.as_bytes());
                let f = std::fs::File::options().write(true).open(env.disk().join(p)).unwrap();
                f.set_modified(t0 + Duration::from_secs(s)).unwrap();
            }
            Op::Del(p) => std::fs::remove_file(env.disk().join(p)).unwrap(),
            Op::Mv(from, to) => std::fs::rename(env.disk().join(from), env.disk().join(to)).unwrap(),
        }
    }
    env.chown_all();
}

/// The SHA-256 of every content ScaiDrive can still give back: every version of every live
/// file under the target and of every file in the share's trash.
async fn reachable(env: &Env, c: &Conn) -> BTreeSet<String> {
    let mut files = Vec::new();
    let root = env.item(c, &c.target).await.expect("target folder");
    let mut stack = vec![root["id"].as_str().unwrap().to_string()];
    while let Some(id) = stack.pop() {
        for ch in env.children(&id).await {
            let cid = ch["id"].as_str().unwrap().to_string();
            if ch["type"] == "folder" {
                stack.push(cid);
            } else {
                files.push(cid);
            }
        }
    }
    for t in env.trash(c).await {
        if t["type"] != "folder" {
            files.push(t["id"].as_str().unwrap().to_string());
        }
    }
    let mut out = BTreeSet::new();
    for f in files {
        for v in env.versions(&f).await {
            out.insert(v["sha256"].as_str().unwrap().to_string());
        }
    }
    out
}

async fn assert_sides(env: &Env, c: &Conn, files: &[(&str, &str)], drive_only: &[(&str, &str)], when: &str) {
    let mut want: Vec<(&str, &str)> = BYSTANDERS.to_vec();
    want.extend_from_slice(files);
    let smb = env.disk_tree("", no_skip).await;
    let want_smb = tree(&want);
    assert!(smb == want_smb, "{when}: SMB holds {smb:#?}\nexpected {want_smb:#?}");
    want.extend_from_slice(drive_only);
    assert_trees(&tree(&want), &env.drive_tree(c).await, when);
}

async fn run_case(case: &Case) -> Ran {
    let env = Env::start(Setup::Standalone).await;
    let c = env.connector(json!({"sync_direction": case.direction, "conflict_resolution": case.strategy})).await;
    // The baseline, from the side that is authoritative (SMB in two-way mode).
    if case.direction == D2S {
        for (p, d) in BASE {
            drive_put(&env, &c, p, d, None).await;
        }
    } else {
        for (p, d) in BASE {
            env.write(p, d.as_bytes());
        }
        env.chown_all();
    }
    env.sync_ok(&c).await;
    assert_sides(&env, &c, &BASE[..2], &[], "baseline").await;
    let mut ids = BTreeMap::new();
    let mut inodes = BTreeMap::new();
    for (p, _) in BASE {
        ids.insert(p.to_string(), id_of(&env, &c, p).await);
        inodes.insert(p.to_string(), std::fs::metadata(env.disk().join(p)).unwrap().ino());
    }

    // The changes, after the baseline's times.
    let t0 = SystemTime::now();
    apply_smb(&env, case.smb, t0);
    apply_drive(&env, &c, case.drive, t0).await;
    let (_, cursor) = env.changes(&c, 0).await;

    // Everything that existed on either side before the run.
    let mut before: BTreeSet<String> = BASE.iter().map(|(_, d)| sha256(d.as_bytes())).collect();
    for op in case.smb.iter().chain(case.drive) {
        if let Op::Put(_, d) | Op::PutAt(_, d, _) = op {
            before.insert(sha256(d.as_bytes()));
        }
    }

    let job = env.sync_and_wait(&c).await;
    assert_eq!(job["status"], "completed", "{job:#}");
    assert_eq!(job["error_count"], 0, "{job:#}");
    let (run_changes, cursor) = env.changes(&c, cursor).await;
    assert_sides(&env, &c, case.want, case.drive_only, &format!("after the run {job:#}")).await;
    let kept = reachable(&env, &c).await;
    let lost: Vec<&String> = before.iter().filter(|s| !kept.contains(*s)).collect();
    assert!(lost.is_empty(), "content lost (sha256): {lost:?}\njob {job:#}\nchanges {run_changes:#?}");

    // A second run plans nothing.
    let job2 = env.sync_and_wait(&c).await;
    assert_eq!(job2["status"], "completed", "{job2:#}");
    assert_eq!(job2["error_count"], 0, "{job2:#}");
    assert_eq!((job2["files_synced"].as_i64(), job2["files_deleted"].as_i64()), (Some(0), Some(0)), "{job2:#}");
    let (changes2, _) = env.changes(&c, cursor).await;
    assert!(changes2.is_empty(), "the second run wrote: {changes2:#?}");
    assert_sides(&env, &c, case.want, case.drive_only, "after the second run").await;
    Ran { env, c, job, job2, ids, inodes, run_changes }
}

impl Ran {
    async fn id(&self, rel: &str) -> String {
        id_of(&self.env, &self.c, rel).await
    }

    async fn version_shas(&self, rel: &str) -> Vec<String> {
        let id = self.id(rel).await;
        self.env.versions(&id).await.iter().map(|v| v["sha256"].as_str().unwrap().to_string()).collect()
    }

    async fn in_trash(&self, id: &str) -> bool {
        self.env.trash(&self.c).await.iter().any(|t| t["id"] == id)
    }

    fn changes_of(&self, id: &str) -> Vec<String> {
        self.run_changes
            .iter()
            .filter(|ch| ch["node_id"] == id)
            .map(|ch| ch["type"].as_str().unwrap().to_string())
            .collect()
    }

    fn inode(&self, rel: &str) -> u64 {
        std::fs::metadata(self.env.disk().join(rel)).unwrap().ino()
    }
}

// ---- bidirectional: one-sided changes ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bi_smb_edit_is_uploaded_as_a_version() {
    // Not a conflict: every strategy must give the same result.
    for strategy in STRATEGIES {
        let r = run_case(&Case {
            direction: BI,
            strategy,
            smb: &[Op::Put("a.txt", "a edited on SMB")],
            drive: &[],
            want: &[("a.txt", "a edited on SMB"), ("b.txt", "b base")],
            drive_only: &[],
        })
        .await;
        assert_eq!(r.id("a.txt").await, r.ids["a.txt"], "same ScaiDrive file");
        assert_eq!(r.version_shas("a.txt").await, [sha256(b"a edited on SMB"), sha256(b"a base")]);
        assert_eq!(r.job["files_synced"], 1, "{:#}", r.job);
        r.env.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bi_scaidrive_edit_is_written_to_smb() {
    // Not a conflict: every strategy must give the same result.
    for strategy in STRATEGIES {
        let r = run_case(&Case {
            direction: BI,
            strategy,
            smb: &[],
            drive: &[Op::Put("a.txt", "a edited in ScaiDrive")],
            want: &[("a.txt", "a edited in ScaiDrive"), ("b.txt", "b base")],
            drive_only: &[],
        })
        .await;
        assert_eq!(r.id("a.txt").await, r.ids["a.txt"]);
        assert_eq!(r.version_shas("a.txt").await.len(), 2, "the download creates no version");
        assert!(r.run_changes.is_empty(), "a download writes nothing to ScaiDrive: {:#?}", r.run_changes);
        assert_eq!(r.job2["bytes_transferred"], 0, "{:#}", r.job2);
        r.env.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bi_creations_on_each_side_replicate() {
    // Not a conflict: every strategy must give the same result.
    for strategy in STRATEGIES {
        let r = run_case(&Case {
            direction: BI,
            strategy,
            smb: &[Op::Put("from-smb.txt", "created on SMB")],
            drive: &[Op::Put("from-drive.txt", "created in ScaiDrive")],
            want: &[
                ("a.txt", "a base"),
                ("b.txt", "b base"),
                ("from-smb.txt", "created on SMB"),
                ("from-drive.txt", "created in ScaiDrive"),
            ],
            drive_only: &[],
        })
        .await;
        assert_eq!(r.job["files_synced"], 2, "{:#}", r.job);
        r.env.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bi_deletions_on_each_side_replicate_and_keep_the_content() {
    // Not a conflict: every strategy must give the same result.
    for strategy in STRATEGIES {
        let r = run_case(&Case {
            direction: BI,
            strategy,
            smb: &[Op::Del("a.txt")],
            drive: &[Op::Del("b.txt")],
            want: &[],
            drive_only: &[],
        })
        .await;
        assert!(r.in_trash(&r.ids["a.txt"]).await, "the SMB deletion trashes the ScaiDrive file");
        assert!(r.in_trash(&r.ids["b.txt"]).await, "the ScaiDrive deletion leaves it in trash");
        assert_eq!(r.changes_of(&r.ids["a.txt"]), ["deleted"], "{:#?}", r.run_changes);
        r.env.finish().await;
    }
}

// ---- bidirectional: edits on both sides, the four strategies ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bi_conflict_last_writer_wins_by_modification_time() {
    let r = run_case(&Case {
        direction: BI,
        strategy: "LAST_WRITER_WINS",
        // a.txt: ScaiDrive is newer; b.txt: SMB is newer.
        smb: &[Op::PutAt("a.txt", "a on SMB, older", 100), Op::PutAt("b.txt", "b on SMB, newer", 300)],
        drive: &[Op::PutAt("a.txt", "a in ScaiDrive, newer", 200), Op::PutAt("b.txt", "b in ScaiDrive, older", 200)],
        want: &[("a.txt", "a in ScaiDrive, newer"), ("b.txt", "b on SMB, newer")],
        drive_only: &[],
    })
    .await;
    assert_eq!(r.id("a.txt").await, r.ids["a.txt"]);
    assert_eq!(r.id("b.txt").await, r.ids["b.txt"]);
    r.env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bi_conflict_keep_both_renames_the_scaidrive_copy() {
    let r = run_case(&Case {
        direction: BI,
        strategy: "KEEP_BOTH",
        smb: &[Op::Put("a.txt", "a edited on SMB")],
        drive: &[Op::Put("a.txt", "a edited in ScaiDrive")],
        want: &[("a.txt", "a edited on SMB"), ("a (conflict).txt", "a edited in ScaiDrive"), ("b.txt", "b base")],
        drive_only: &[],
    })
    .await;
    assert_eq!(r.id("a (conflict).txt").await, r.ids["a.txt"], "the ScaiDrive copy is moved to the conflict name");
    assert_logged(&r.job, "a.txt", "CONFLICT_RESOLVED", "a (conflict).txt");
    assert_eq!(r.job["conflicts"], 1);
    r.env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bi_conflict_scaidrive_wins() {
    let r = run_case(&Case {
        direction: BI,
        strategy: "SCAIDRIVE_WINS",
        smb: &[Op::Put("a.txt", "a edited on SMB")],
        drive: &[Op::Put("a.txt", "a edited in ScaiDrive")],
        want: &[("a.txt", "a edited in ScaiDrive"), ("b.txt", "b base")],
        drive_only: &[],
    })
    .await;
    assert_eq!(r.id("a.txt").await, r.ids["a.txt"]);
    let shas = r.version_shas("a.txt").await;
    assert!(shas.contains(&sha256(b"a edited on SMB")), "the SMB loser is a version: {shas:?}");
    assert_logged(&r.job, "a.txt", "CONFLICT_RESOLVED", "ScaiDrive's content won");
    assert_logged(&r.job, "a.txt", "SMB_CONTENT_KEPT", "version");
    r.env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bi_conflict_smb_wins() {
    let r = run_case(&Case {
        direction: BI,
        strategy: "SMB_WINS",
        smb: &[Op::Put("a.txt", "a edited on SMB")],
        drive: &[Op::Put("a.txt", "a edited in ScaiDrive")],
        want: &[("a.txt", "a edited on SMB"), ("b.txt", "b base")],
        drive_only: &[],
    })
    .await;
    assert_eq!(r.id("a.txt").await, r.ids["a.txt"]);
    let shas = r.version_shas("a.txt").await;
    assert_eq!(shas[0], sha256(b"a edited on SMB"));
    assert!(shas.contains(&sha256(b"a edited in ScaiDrive")), "the ScaiDrive loser is a version: {shas:?}");
    r.env.finish().await;
}

// ---- bidirectional: delete vs edit, renames ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bi_an_edit_beats_a_deletion_on_either_side() {
    // Not a conflict: every strategy must give the same result.
    for strategy in STRATEGIES {
        let r = run_case(&Case {
            direction: BI,
            strategy,
            // a.txt: deleted on SMB, edited in ScaiDrive; b.txt: deleted in ScaiDrive, edited on SMB.
            smb: &[Op::Del("a.txt"), Op::Put("b.txt", "b edited on SMB")],
            drive: &[Op::Put("a.txt", "a edited in ScaiDrive"), Op::Del("b.txt")],
            want: &[("a.txt", "a edited in ScaiDrive"), ("b.txt", "b edited on SMB")],
            drive_only: &[],
        })
        .await;
        assert_eq!(r.id("a.txt").await, r.ids["a.txt"]);
        assert_eq!(r.id("b.txt").await, r.ids["b.txt"], "the trashed file is restored with the change");
        r.env.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bi_a_rename_on_either_side_is_replayed_as_a_rename() {
    // Not a conflict: every strategy must give the same result.
    for strategy in STRATEGIES {
        let r = run_case(&Case {
            direction: BI,
            strategy,
            smb: &[Op::Mv("a.txt", "a renamed on SMB.txt")],
            drive: &[Op::Mv("b.txt", "b renamed in ScaiDrive.txt")],
            want: &[("a renamed on SMB.txt", "a base"), ("b renamed in ScaiDrive.txt", "b base")],
            drive_only: &[],
        })
        .await;
        // SMB → ScaiDrive: the same file, renamed, never re-uploaded.
        assert_eq!(r.id("a renamed on SMB.txt").await, r.ids["a.txt"]);
        assert_eq!(r.changes_of(&r.ids["a.txt"]), ["renamed"], "{:#?}", r.run_changes);
        assert_eq!(r.version_shas("a renamed on SMB.txt").await.len(), 1);
        // ScaiDrive → SMB: the same SMB file, renamed, never re-written.
        assert_eq!(r.inode("b renamed in ScaiDrive.txt"), r.inodes["b.txt"], "the SMB file is renamed in place");
        assert!(r.changes_of(&r.ids["b.txt"]).is_empty(), "{:#?}", r.run_changes);
        assert_eq!(r.job["files_synced"], 0, "no transfer: {:#}", r.job);
        r.env.finish().await;
    }
}

/// The job's events name `path` with `code`, in a message mentioning `mention`.
fn assert_logged(job: &Value, path: &str, code: &str, mention: &str) {
    let events = job["events"].as_array().unwrap();
    assert!(
        events
            .iter()
            .any(|e| e["path"] == path && e["code"] == code && e["message"].as_str().unwrap_or("").contains(mention)),
        "no {code} event for {path} mentioning {mention:?}: {events:#?}"
    );
}

// ---- scaidrive_to_smb ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d2s_smb_edits_additions_and_deletions_are_undone_and_kept() {
    let r = run_case(&Case {
        direction: D2S,
        strategy: "KEEP_BOTH",
        smb: &[Op::Put("a.txt", "a edited on SMB"), Op::Put("smb-only.txt", "only SMB had this"), Op::Del("b.txt")],
        drive: &[],
        want: &[("a.txt", "a base"), ("b.txt", "b base")],
        drive_only: &[],
    })
    .await;
    // The overwritten SMB edit is a previous version of a.txt, ScaiDrive's current again.
    assert_eq!(r.id("a.txt").await, r.ids["a.txt"]);
    let shas = r.version_shas("a.txt").await;
    assert_eq!(shas[0], sha256(b"a base"), "{shas:?}");
    assert!(shas.contains(&sha256(b"a edited on SMB")), "{shas:?}");
    // The SMB-only file is in trash, b.txt untouched in ScaiDrive.
    let trash = r.env.trash(&r.c).await;
    assert!(trash.iter().any(|t| t["name"] == "smb-only.txt"), "{trash:?}");
    assert_eq!(r.id("b.txt").await, r.ids["b.txt"]);
    // The job log names each case where SMB content was kept before SMB lost it.
    assert_logged(&r.job, "a.txt", "SMB_CONTENT_KEPT", "previous version");
    assert_logged(&r.job, "smb-only.txt", "SMB_CONTENT_KEPT", "trash");
    r.env.finish().await;
}
// ---- further two-way cases: identical creations, names SMB cannot hold, … ----

// ---- identical content created on both sides ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bi_identical_content_created_on_both_sides_is_no_conflict() {
    // Not a conflict: every strategy must give the same result.
    for strategy in STRATEGIES {
        let r = run_case(&Case {
            direction: BI,
            strategy,
            smb: &[Op::Put("same.txt", "the same bytes")],
            drive: &[Op::Put("same.txt", "the same bytes")],
            want: &[("a.txt", "a base"), ("b.txt", "b base"), ("same.txt", "the same bytes")],
            drive_only: &[],
        })
        .await;
        assert_eq!(r.version_shas("same.txt").await.len(), 1);
        assert_eq!(r.job["conflicts"], 0, "{:#}", r.job);
        r.env.finish().await;
    }
}

// ---- names SMB cannot hold ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bi_scaidrive_names_smb_cannot_hold_are_reported_per_file() {
    let r = run_case(&Case {
        direction: BI,
        strategy: "KEEP_BOTH",
        smb: &[],
        drive: &[Op::Put("a:b.txt", "colon"), Op::Put("CON.txt", "device"), Op::Put("trailing.", "dot")],
        want: &[("a.txt", "a base"), ("b.txt", "b base")],
        drive_only: &[("a:b.txt", "colon"), ("CON.txt", "device"), ("trailing.", "dot")],
    })
    .await;
    // The run that meets them reports each in its events (a warning with the code) and counts
    // it as skipped; the file states keep the code for as long as the name stays unsyncable,
    // and later runs (which see no change there) neither fail nor report it again.
    let events: Vec<(String, String, String)> = r.job["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let f = |k: &str| e[k].as_str().unwrap_or("").to_string();
            (f("path"), f("code"), f("level"))
        })
        .collect();
    let states = r.env.file_states(&r.c, "").await;
    for (name, code) in [
        ("a:b.txt", "NAME_INVALID_CHARACTER"),
        ("CON.txt", "NAME_RESERVED"),
        ("trailing.", "NAME_TRAILING_DOT_OR_SPACE"),
    ] {
        assert!(
            events.iter().any(|(p, c, l)| p == name && c == code && l == "warning"),
            "{name} must be reported with {code}: {events:?}\n{:#}",
            r.job
        );
        let st = states.iter().find(|s| s["path"] == name).unwrap_or_else(|| panic!("no file state for {name}"));
        assert_eq!(
            (st["status"].as_str(), st["last_error"]["code"].as_str()),
            (Some("excluded"), Some(code)),
            "{st:#}"
        );
    }
    assert_eq!(r.job["files_skipped"], 3, "{:#}", r.job);
    assert_eq!(r.job["error_count"], 0);
    assert_eq!(r.job2["error_count"], 0);
    r.env.finish().await;
}

/// The spec's onboarding advice: start `smb_to_scaidrive`, then switch to `bidirectional`.
/// The switch takes effect on the next run and copies nothing again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_direction_on_a_connector_with_history_recopies_nothing() {
    let env = Env::start(Setup::Standalone).await;
    for (p, d) in BASE {
        env.write(p, d.as_bytes());
    }
    env.chown_all();
    let c = env.connector(json!({"sync_direction": "smb_to_scaidrive"})).await;
    env.sync_ok(&c).await;
    let (_, cursor) = env.changes(&c, 0).await;
    env.patch(&c, json!({"sync_direction": "bidirectional", "conflict_resolution": "LAST_WRITER_WINS"})).await;
    let job = env.sync_ok(&c).await;
    assert_eq!((job["files_synced"].as_i64(), job["bytes_transferred"].as_i64()), (Some(0), Some(0)), "{job:#}");
    let (changes, cursor) = env.changes(&c, cursor).await;
    assert!(changes.is_empty(), "the switch re-copied: {changes:#?}");
    // Now ScaiDrive-side edits reach SMB.
    drive_put(&env, &c, "a.txt", "edited in ScaiDrive", None).await;
    env.sync_ok(&c).await;
    assert_eq!(std::fs::read_to_string(env.disk().join("a.txt")).unwrap(), "edited in ScaiDrive");
    let (changes, _) = env.changes(&c, cursor).await;
    assert_eq!(changes.len(), 1, "only the edit itself: {changes:#?}");
    env.finish().await;
}

/// A folder deleted on SMB while a file was added inside it in ScaiDrive: the added content
/// survives (the folder comes back with it); what was only deleted goes to trash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_added_inside_a_folder_deleted_on_the_other_side_survives() {
    let env = Env::start(Setup::Standalone).await;
    env.write("F/old.txt", b"old");
    env.write("keep.txt", b"keep");
    env.chown_all();
    let c = env.connector(json!({"sync_direction": "bidirectional", "max_delete_percent": 100})).await;
    env.sync_ok(&c).await;
    let old_id = id_of(&env, &c, "F/old.txt").await;
    std::fs::remove_dir_all(env.disk().join("F")).unwrap();
    drive_put(&env, &c, "F/new.txt", "added meanwhile", None).await;
    env.sync_ok(&c).await;
    assert_eq!(std::fs::read_to_string(env.disk().join("F/new.txt")).unwrap(), "added meanwhile");
    assert!(!env.disk().join("F/old.txt").exists());
    assert!(env.target_item(&c, "F/old.txt").await.is_none());
    assert!(env.trash(&c).await.iter().any(|t| t["id"].as_str() == Some(old_id.as_str())), "old.txt is in trash");
    let job2 = env.sync_ok(&c).await;
    assert_eq!((job2["files_synced"].as_i64(), job2["files_deleted"].as_i64()), (Some(0), Some(0)), "{job2:#}");
    env.finish().await;
}

/// A case-only rename in ScaiDrive reaches SMB (whose names are case-insensitive).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_case_only_rename_propagates() {
    let env = Env::start(Setup::Standalone).await;
    env.write("report.txt", b"r");
    env.chown_all();
    let c = env.connector(json!({"sync_direction": "bidirectional"})).await;
    env.sync_ok(&c).await;
    let id = id_of(&env, &c, "report.txt").await;
    let (st, v) = env.api.patch(&format!("/api/v1/files/{id}"), json!({"name": "Report.txt"})).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    env.sync_ok(&c).await;
    let names: Vec<String> = std::fs::read_dir(env.disk())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.to_lowercase() == "report.txt")
        .collect();
    assert_eq!(names, vec!["Report.txt".to_string()]);
    assert_eq!(id_of(&env, &c, "Report.txt").await, id, "same ScaiDrive file");
    let job2 = env.sync_ok(&c).await;
    assert_eq!(job2["files_synced"], 0, "{job2:#}");
    env.finish().await;
}

/// The delete guard protects SMB too: most files deleted in ScaiDrive → the run deletes
/// nothing on SMB and says why; raising `max_delete_percent` lets the next run go ahead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_delete_guard_also_protects_smb() {
    let env = Env::start(Setup::Standalone).await;
    for i in 0..6 {
        env.write(&format!("f{i}.txt"), format!("file {i}").as_bytes());
    }
    env.chown_all();
    let c = env.connector(json!({"sync_direction": "bidirectional"})).await;
    env.sync_ok(&c).await;
    for i in 0..5 {
        let id = id_of(&env, &c, &format!("f{i}.txt")).await;
        let (st, _) = env.api.delete(&format!("/api/v1/files/{id}")).await;
        assert_eq!(st, StatusCode::NO_CONTENT);
    }
    let job = env.sync_and_wait(&c).await;
    assert_eq!(job["error"]["code"], "DELETE_GUARD_TRIGGERED", "{job:#}");
    assert!(job["error"]["message"].as_str().unwrap().contains("max_delete_percent"), "{job:#}");
    for i in 0..6 {
        assert!(env.disk().join(format!("f{i}.txt")).exists(), "f{i}.txt must still be on SMB");
    }
    env.patch(&c, json!({"max_delete_percent": 100})).await;
    env.sync_ok(&c).await;
    for i in 0..5 {
        assert!(!env.disk().join(format!("f{i}.txt")).exists(), "f{i}.txt deleted once allowed");
    }
    assert!(env.disk().join("f5.txt").exists());
    env.finish().await;
}

/// Two-way through the fleet: RabbitMQ, PostgreSQL and separate worker processes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_way_runs_the_same_through_the_worker_fleet() {
    let env = Env::start(Setup::Distributed).await;
    env.write("a.txt", b"a base");
    env.chown_all();
    let c = env.connector(json!({"sync_direction": "bidirectional", "conflict_resolution": "KEEP_BOTH"})).await;
    env.sync_ok(&c).await;
    env.write("a.txt", b"a edited on SMB");
    env.chown_all();
    drive_put(&env, &c, "a.txt", "a edited in ScaiDrive", None).await;
    drive_put(&env, &c, "new.txt", "new in ScaiDrive", None).await;
    let job = env.sync_ok(&c).await;
    assert_eq!(job["conflicts"], 1, "{job:#}");
    assert_eq!(std::fs::read_to_string(env.disk().join("a.txt")).unwrap(), "a edited on SMB");
    assert_eq!(std::fs::read_to_string(env.disk().join("a (conflict).txt")).unwrap(), "a edited in ScaiDrive");
    assert_eq!(std::fs::read_to_string(env.disk().join("new.txt")).unwrap(), "new in ScaiDrive");
    env.assert_mirrored(&c, "", no_skip).await;
    let job2 = env.sync_ok(&c).await;
    assert_eq!((job2["files_synced"].as_i64(), job2["conflicts"].as_i64()), (Some(0), Some(0)), "{job2:#}");
    env.finish().await;
}

/// The same file deleted on both sides: nothing to do but forget it; the ScaiDrive copy
/// stays in trash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_on_both_sides_is_forgotten() {
    for strategy in STRATEGIES {
        let r = run_case(&Case {
            direction: BI,
            strategy,
            smb: &[Op::Del("a.txt")],
            drive: &[Op::Del("a.txt")],
            want: &[("b.txt", "b base")],
            drive_only: &[],
        })
        .await;
        assert!(r.in_trash(&r.ids["a.txt"]).await);
        assert_eq!(r.job["error_count"], 0);
        assert!(r.env.file_states(&r.c, "").await.iter().all(|s| s["path"] != "a.txt"), "a.txt is no longer tracked");
        r.env.finish().await;
    }
}

/// Moves into another folder, on each side, replayed as moves (same ids, no re-upload).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moves_into_other_folders_are_replayed_both_ways() {
    let env = Env::start(Setup::Standalone).await;
    env.write("in/a.txt", b"a");
    env.write("in/b.txt", b"b");
    env.write("out-smb/keep.txt", b"k");
    env.write("out-drive/keep.txt", b"k");
    env.chown_all();
    let c = env.connector(json!({"sync_direction": "bidirectional"})).await;
    env.sync_ok(&c).await;
    let a_id = id_of(&env, &c, "in/a.txt").await;
    let b_id = id_of(&env, &c, "in/b.txt").await;
    let b_ino = std::fs::metadata(env.disk().join("in/b.txt")).unwrap().ino();
    // a.txt moved on SMB; b.txt moved in ScaiDrive.
    std::fs::rename(env.disk().join("in/a.txt"), env.disk().join("out-smb/a.txt")).unwrap();
    let dest = id_of(&env, &c, "out-drive").await;
    let (st, v) = env.api.patch(&format!("/api/v1/files/{b_id}"), json!({"parent_id": dest})).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    // The run's own writes start after the user's move in ScaiDrive.
    let (_, cursor) = env.changes(&c, 0).await;
    let job = env.sync_ok(&c).await;
    assert_eq!(job["bytes_transferred"], 0, "moves move no content: {job:#}");
    assert_eq!(id_of(&env, &c, "out-smb/a.txt").await, a_id);
    assert_eq!(std::fs::metadata(env.disk().join("out-drive/b.txt")).unwrap().ino(), b_ino, "renamed in place on SMB");
    let (changes, _) = env.changes(&c, cursor).await;
    let kinds: Vec<&str> = changes.iter().map(|ch| ch["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["moved"], "only a.txt's move is written to ScaiDrive: {changes:#?}");
    env.assert_mirrored(&c, "", no_skip).await;
    assert_eq!(env.sync_ok(&c).await["files_synced"], 0);
    env.finish().await;
}

/// Two ScaiDrive names differing only in case: one syncs, the other is reported, and
/// neither overwrites the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_twins_in_scaidrive_never_overwrite_each_other() {
    let env = Env::start(Setup::Standalone).await;
    env.write("seed.txt", b"s");
    env.chown_all();
    let c = env.connector(json!({"sync_direction": "bidirectional"})).await;
    env.sync_ok(&c).await;
    drive_put(&env, &c, "Notes.txt", "upper", None).await;
    drive_put(&env, &c, "notes.txt", "lower", None).await;
    let job = env.sync_ok(&c).await;
    let on_smb: Vec<String> = std::fs::read_dir(env.disk())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.eq_ignore_ascii_case("notes.txt"))
        .collect();
    assert_eq!(on_smb.len(), 1, "{on_smb:?}");
    let synced = std::fs::read_to_string(env.disk().join(&on_smb[0])).unwrap();
    let twin = if on_smb[0] == "Notes.txt" { "notes.txt" } else { "Notes.txt" };
    assert_eq!(synced, if on_smb[0] == "Notes.txt" { "upper" } else { "lower" }, "the synced twin's own content");
    let events = job["events"].as_array().unwrap();
    assert!(events.iter().any(|e| e["path"] == twin && e["code"] == "NAME_CASE_CONFLICT"), "{events:#?}");
    // Both stay in ScaiDrive with their own content.
    assert_eq!(env.download(&id_of(&env, &c, "Notes.txt").await).await, b"upper");
    assert_eq!(env.download(&id_of(&env, &c, "notes.txt").await).await, b"lower");
    env.finish().await;
}
