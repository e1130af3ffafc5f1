//! Crash safety (issue 9, part 1): sync runs go on while `sync-worker` and `api-server`
//! processes are killed — SIGKILL at random moments, and aborts at named points through the
//! workers' test-only crash hook (`SCAIDRIVE_CRASH_AT`, see `sync_worker::crash`) — and are
//! started again. Four connectors (two one-way, two two-way) each live in their own folder of
//! one Samba share; every round changes files on SMB (and, two-way, through the REST API) and
//! needs one clean run before the next round. Afterwards: both sides agree, every content
//! ever written is reachable, nothing is duplicated, no temporary file is left on either side,
//! no job is left running.
//!
//! CI: `FAULT_KILLS` (default 30) kills. The long campaign:
//! `FAULT_KILLS=500 cargo test -p e2e-tests --test sync crash -- --nocapture`
//! (`FAULT_SEED` replays a campaign's random choices; the seed is printed).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use e2e_tests::{ApiProcess, WorkerOptions, WorkerProcess};
use reqwest::StatusCode;
use serde_json::json;

use crate::driver::{sha256, Conn, Entry, Env, Setup, Tree, TERMINAL};

/// A small deterministic PRNG (xorshift64*); `FAULT_SEED` replays a campaign.
pub struct Rng(pub u64);

impl Rng {
    pub fn from_env(what: &str) -> Rng {
        let seed = std::env::var("FAULT_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
        });
        println!("{what}: FAULT_SEED={seed}");
        Rng(seed | 1)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len() as u64) as usize]
    }
}

/// Self-identifying content: every line names the writer's tag (who, which file, which
/// generation), so a torn or mixed file can never hash like a state some writer produced.
pub fn content(tag: &str, size: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(size + 64);
    let mut i = 0u64;
    while v.len() < size {
        v.extend_from_slice(format!("{tag} line {i:08}\n").as_bytes());
        i += 1;
    }
    v
}

/// Every file on disk under `base` (relative path → SHA-256).
pub fn disk_files(env: &Env, base: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let root = env.disk().join(base);
    let mut stack = vec![(root, String::new())];
    while let Some((dir, prefix)) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else { continue };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            let rel = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
            let md = std::fs::symlink_metadata(e.path()).unwrap();
            if md.is_dir() {
                stack.push((e.path(), rel));
            } else if md.is_file() {
                out.insert(rel, crate::driver::sha256_file(&e.path()).1);
            }
        }
    }
    out
}

/// The SHA-256 of every version of every file ScaiDrive holds for `c` (live or trashed).
pub async fn drive_versions(env: &Env, c: &Conn) -> BTreeMap<String, Vec<String>> {
    let mut ids: Vec<(String, String)> = Vec::new();
    let root = env.item(c, &c.target).await.expect("target folder");
    let mut stack = vec![(root["id"].as_str().unwrap().to_string(), String::new())];
    while let Some((id, prefix)) = stack.pop() {
        for ch in env.children(&id).await {
            let rel = format!("{prefix}/{}", ch["name"].as_str().unwrap());
            if ch["type"] == "folder" {
                stack.push((ch["id"].as_str().unwrap().to_string(), rel));
            } else {
                ids.push((ch["id"].as_str().unwrap().to_string(), rel));
            }
        }
    }
    for t in env.trash(c).await {
        if t["type"] != "folder" {
            ids.push((t["id"].as_str().unwrap().to_string(), format!("trash:{}", t["name"].as_str().unwrap_or(""))));
        }
    }
    let mut out = BTreeMap::new();
    for (id, rel) in ids {
        let v: Vec<String> =
            env.versions(&id).await.iter().map(|v| v["sha256"].as_str().unwrap_or("").to_string()).collect();
        out.insert(format!("{rel} ({id})"), v);
    }
    out
}

/// The checks every campaign ends with, for one connector whose runs have converged:
/// both sides agree; every content in `written` is on SMB or in some ScaiDrive version (live
/// or trashed); every ScaiDrive version and every SMB file is something a writer wrote (no
/// torn or half-written content); no live content twice; no temporary file; file states
/// match the tree; no job left unfinished. With `all_reachable` false (writers raced the
/// runs, so some states were never there for a run to see) only the first and the last hold.
pub async fn assert_converged_and_whole(
    env: &Env,
    c: &Conn,
    base: &str,
    written: &HashSet<String>,
    all_reachable: bool,
) {
    let logs = || env.logs();
    env.assert_mirrored(c, base, crate::driver::no_skip).await;
    let tree: Tree = env.drive_tree(c).await;
    let temps: Vec<&String> = tree.keys().filter(|k| k.contains(".~scaidrive-")).collect();
    assert!(temps.is_empty(), "temporary files in ScaiDrive: {temps:?}");
    let disk = disk_files(env, base);
    let temps: Vec<&String> = disk.keys().filter(|k| k.contains(".~scaidrive-")).collect();
    assert!(temps.is_empty(), "temporary files left on SMB: {temps:?}\n{}", logs());

    let mut live: BTreeMap<&str, &str> = BTreeMap::new();
    for (path, e) in &tree {
        if let Entry::File { sha256, .. } = e {
            if let Some(other) = live.insert(sha256.as_str(), path.as_str()) {
                panic!("the same content is live twice in ScaiDrive: {other} and {path}");
            }
        }
    }
    let versions = drive_versions(env, c).await;
    let mut reachable: HashSet<&str> = disk.values().map(String::as_str).collect();
    for (file, vs) in &versions {
        for v in vs {
            assert!(written.contains(v), "ScaiDrive version {v} of {file} is nothing any writer wrote (torn?)");
            reachable.insert(v);
        }
    }
    for (path, sha) in &disk {
        assert!(written.contains(sha), "SMB file {base}/{path} is nothing any writer wrote (torn?)");
    }
    let lost: Vec<&String> = written.iter().filter(|w| all_reachable && !reachable.contains(w.as_str())).collect();
    assert!(lost.is_empty(), "{} written contents are nowhere (not on SMB, not in any version): {lost:?}", lost.len());

    let states = env.file_states(c, "").await;
    assert_eq!(states.len(), tree.len(), "file states vs items: {states:#?}\n{tree:#?}");
    for j in env.jobs(c).await {
        assert!(TERMINAL.contains(&j["status"].as_str().unwrap()), "a job is not finished: {j:#}");
    }
}

// ---- the campaign ----

/// Where the crash hook may abort a worker, and how many passes before it does (per-job
/// points are passed once or twice a run, per-file points once per file or chunk).
const POINTS: [(&str, u64); 7] =
    [("listing", 2), ("upload", 6), ("download", 4), ("rename-over", 4), ("renamed", 4), ("state", 10), ("ack", 2)];

struct Worker {
    id: String,
    api: usize,
    proc: Option<WorkerProcess>,
    point: Option<String>,
}

/// One connector under test and the writers' bookkeeping.
struct Cx {
    conn: Conn,
    base: String,
    bidi: bool,
    written: HashSet<String>,
    generation: u64,
    job: Option<String>,
    /// The last run was not clean: run again before changing anything.
    dirty: bool,
    clean_runs: u64,
    clean_after_kills: bool,
}

fn tally(t: &mut BTreeMap<String, u64>, k: &str) {
    *t.entry(k.to_string()).or_default() += 1;
}

/// One round of changes: on SMB (modify, create, sometimes delete and rename) and, two-way,
/// through the REST API on other files (so there are no conflicts to resolve: every
/// difference afterwards is the sync's doing).
async fn mutate(env: &Env, cx: &mut Cx, rng: &mut Rng) {
    cx.generation += 1;
    let g = cx.generation;
    let files: Vec<String> = disk_files(env, &cx.base).into_keys().collect();
    let mut touched: BTreeSet<String> = BTreeSet::new();
    let size = |rng: &mut Rng| {
        if rng.chance(15) {
            1_500_000 + rng.below(1_500_000) as usize
        } else {
            1 + rng.below(40_000) as usize
        }
    };
    for _ in 0..2 {
        if files.is_empty() {
            break;
        }
        let f = rng.pick(&files).clone();
        if touched.insert(f.clone()) {
            let data = content(&format!("{} {f} gen {g} smb", cx.base), size(rng));
            cx.written.insert(sha256(&data));
            env.write(&format!("{}/{f}", cx.base), &data);
        }
    }
    let new = format!("{}new-{g}.txt", if rng.chance(50) { "sub/" } else { "" });
    let data = content(&format!("{} {new} gen {g} smb", cx.base), size(rng));
    cx.written.insert(sha256(&data));
    env.write(&format!("{}/{new}", cx.base), &data);
    touched.insert(new);
    if files.len() > 4 && rng.chance(40) {
        let f = rng.pick(&files).clone();
        if touched.insert(f.clone()) {
            std::fs::remove_file(env.disk().join(&cx.base).join(&f)).unwrap();
        }
    }
    if files.len() > 4 && rng.chance(40) {
        let f = rng.pick(&files).clone();
        if touched.insert(f.clone()) {
            let to = format!("moved-{g}.txt");
            std::fs::rename(env.disk().join(&cx.base).join(&f), env.disk().join(&cx.base).join(&to)).unwrap();
            touched.insert(to);
        }
    }
    chown_base(env, &cx.base);
    if cx.bidi {
        let others: Vec<&String> = files.iter().filter(|f| !touched.contains(*f)).collect();
        let mut targets: Vec<String> = Vec::new();
        if !others.is_empty() {
            targets.push(rng.pick(&others).to_string());
        }
        targets.push(format!("api/new-{g}.txt"));
        for f in targets {
            if !touched.insert(f.clone()) {
                continue;
            }
            let data = content(&format!("{} {f} gen {g} api", cx.base), size(rng));
            cx.written.insert(sha256(&data));
            let (st, v) = env.api.upload(&cx.conn.share, &format!("{}/{f}", cx.conn.target), data).await;
            assert!(st.is_success(), "API write {f}: {st} {v}");
        }
    }
}

/// Gives a connector's folder to the service account (files written on disk are root's).
/// Only that folder: the other connectors' runs create and delete temporary files meanwhile.
fn chown_base(env: &Env, base: &str) {
    let mut last = None;
    for _ in 0..5 {
        match env.samba.give_to_service_account(env.disk().join(base)) {
            Ok(()) => return,
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("chown {base}: {last:?}");
}

async fn trigger(env: &Env, c: &Conn) -> Option<String> {
    let (st, j) = env.api.post(&c.url("/sync"), json!({})).await;
    match st {
        StatusCode::ACCEPTED => Some(j["id"].as_str().unwrap().to_string()),
        StatusCode::CONFLICT => None, // a run is still on: try again next tick
        _ => panic!("POST /sync: {st} {j}"),
    }
}

fn worker_opts(apis: &[ApiProcess], w: &Worker) -> WorkerOptions {
    let mut env = Vec::new();
    if let Some(p) = &w.point {
        env.push(("SCAIDRIVE_CRASH_AT".to_string(), p.clone()));
    }
    WorkerOptions { control_plane_url: Some(apis[w.api].grpc_url.clone()), env }
}

fn next_point(rng: &mut Rng) -> Option<String> {
    if !rng.chance(55) {
        return None;
    }
    let (p, max) = *rng.pick(&POINTS);
    Some(format!("{p}:{}", 1 + rng.below(max)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_workers_and_api_servers_lose_nothing() {
    let kills_wanted: u64 = std::env::var("FAULT_KILLS").ok().and_then(|s| s.parse().ok()).unwrap_or(30);
    let started = Instant::now();
    let limit = Duration::from_secs(240 + kills_wanted * 6);
    let mut rng = Rng::from_env("crash campaign");
    let mut env = Env::start(Setup::Distributed).await;
    drop(std::mem::take(&mut env.workers));

    // Two api-server replicas as processes (the test's own REST calls go to the in-process
    // replica, which stays up), three workers: w1 and w3 talk to replica 0, w2 to replica 1.
    let mut apis = vec![env.srv.api_process("api-0"), env.srv.api_process("api-1")];
    for a in apis.iter_mut() {
        a.start().await;
    }
    let mut workers: Vec<Worker> =
        (0..3).map(|i| Worker { id: format!("w{}", i + 1), api: i % 2, proc: None, point: None }).collect();
    for w in workers.iter_mut() {
        w.point = next_point(&mut rng);
        w.proc = Some(env.srv.spawn_worker_with(&w.id, &worker_opts(&apis, w)));
    }

    let mut cxs = Vec::new();
    for dir in ["s2d-a", "bidi-a", "s2d-b", "bidi-b"] {
        let bidi = dir.starts_with("bidi");
        for k in 0..10 {
            let f = if k % 3 == 0 { format!("sub/f{k}.txt") } else { format!("f{k}.txt") };
            let size = if k == 1 { 2_000_000 } else { 100 + 3000 * k };
            let data = content(&format!("{dir} {f} gen 0 smb"), size);
            env.write(&format!("{dir}/{f}"), &data);
        }
        env.chown_all();
        let direction = if bidi { "bidirectional" } else { "smb_to_scaidrive" };
        let conn = env.connector(json!({"base_path": dir, "sync_direction": direction})).await;
        let written: HashSet<String> = disk_files(&env, dir).into_values().collect();
        cxs.push(Cx {
            conn,
            base: dir.to_string(),
            bidi,
            written,
            generation: 0,
            job: None,
            dirty: true,
            clean_runs: 0,
            clean_after_kills: false,
        });
    }

    let mut kills: BTreeMap<String, u64> = BTreeMap::new();
    let mut total_kills = 0u64;
    let mut runs = 0u64;
    let mut next_kill = Instant::now() + Duration::from_millis(1500);
    let mut api_down: Option<(usize, Instant)> = None;
    loop {
        assert!(
            started.elapsed() < limit,
            "the campaign did not converge within {limit:?} ({total_kills} kills {kills:?}, {runs} runs)\n{}",
            env.logs()
        );
        // Workers that died at their crash point: count and start again (new point).
        for w in workers.iter_mut() {
            let Some(p) = w.proc.as_mut() else { continue };
            if let Some(st) = p.child.try_wait().unwrap() {
                let log = p.log();
                let point = w.point.clone().unwrap_or_default();
                assert_eq!(st.signal(), Some(6), "worker {} exited on its own ({st}); log:\n{log}", w.id);
                assert!(
                    log.contains("SCAIDRIVE_CRASH_AT: aborting"),
                    "worker {} aborted without its hook:\n{log}",
                    w.id
                );
                tally(&mut kills, &format!("hook {}", point.split(':').next().unwrap()));
                total_kills += 1;
                w.point = if total_kills < kills_wanted { next_point(&mut rng) } else { None };
                w.proc = Some(env.srv.spawn_worker_with(&w.id, &worker_opts(&apis, w)));
            }
        }
        if let Some((i, at)) = api_down {
            if Instant::now() >= at {
                apis[i].start().await;
                api_down = None;
            }
        }
        // Random SIGKILLs.
        if total_kills < kills_wanted && Instant::now() >= next_kill {
            if api_down.is_none() && rng.chance(30) {
                let i = rng.below(2) as usize;
                apis[i].kill();
                api_down = Some((i, Instant::now() + Duration::from_millis(300 + rng.below(2000))));
                tally(&mut kills, "SIGKILL api-server");
            } else {
                let i = rng.below(workers.len() as u64) as usize;
                let w = &mut workers[i];
                drop(w.proc.take()); // SIGKILL and reap
                w.point = if total_kills + 1 < kills_wanted { next_point(&mut rng) } else { None };
                w.proc = Some(env.srv.spawn_worker_with(&w.id, &worker_opts(&apis, w)));
                tally(&mut kills, "SIGKILL worker");
            }
            total_kills += 1;
            next_kill = Instant::now() + Duration::from_millis(1000 + rng.below(2500));
        }
        if total_kills >= kills_wanted {
            // No more crashes: hooks off for the workers still armed.
            for w in workers.iter_mut().filter(|w| w.point.is_some()) {
                drop(w.proc.take());
                w.point = None;
                w.proc = Some(env.srv.spawn_worker_with(&w.id, &worker_opts(&apis, w)));
            }
            if let Some((i, _)) = api_down.take() {
                apis[i].start().await;
            }
        }
        // The writers and the runs.
        let mut all_done = true;
        for cx in cxs.iter_mut() {
            if let Some(job) = cx.job.clone() {
                let j = env.job(&cx.conn, &job).await;
                let status = j["status"].as_str().unwrap();
                if !TERMINAL.contains(&status) {
                    all_done = false;
                    continue;
                }
                runs += 1;
                cx.job = None;
                cx.dirty = !(status == "completed" && j["error_count"] == 0);
                if !cx.dirty {
                    cx.clean_runs += 1;
                    cx.clean_after_kills = total_kills >= kills_wanted;
                }
            }
            if total_kills >= kills_wanted && cx.clean_after_kills {
                continue;
            }
            all_done = false;
            if !cx.dirty && total_kills < kills_wanted {
                mutate(&env, cx, &mut rng).await;
                cx.dirty = true;
            }
            cx.job = trigger(&env, &cx.conn).await;
        }
        if all_done && total_kills >= kills_wanted {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The next runs finish and find nothing left to do; then the checks.
    for cx in &cxs {
        let j = env.sync_ok(&cx.conn).await;
        assert_eq!((j["files_synced"].as_i64(), j["files_deleted"].as_i64()), (Some(0), Some(0)), "converged: {j:#}");
        assert_converged_and_whole(&env, &cx.conn, &cx.base, &cx.written, true).await;
    }
    let rounds: u64 = cxs.iter().map(|c| c.clean_runs).sum();
    println!(
        "crash campaign: {total_kills} kills {kills:?}; {runs} runs ({rounds} clean rounds) over {} connectors; {:.0?}",
        cxs.len(),
        started.elapsed()
    );
    assert!(total_kills >= kills_wanted);
    drop(workers);
    drop(apis);
    env.finish().await;
}
