//! Concurrent edits (issue 9, part 4): writers keep changing files on the SMB share's disk
//! (in place, as editors that overwrite do) and through the REST API while two-way runs go
//! on back to back; some files are written by both. Every content is self-identifying and
//! its SHA-256 recorded. Afterwards no ScaiDrive version of any file (live or trashed) and no
//! SMB file is anything but a state some writer produced — nothing torn, nothing mixed — and
//! once the writers stop, the next runs converge (both sides agree).
//!
//! An in-place write passes through the empty file (truncate, then write): that is a state
//! the writer produced, and counts as one. The long variant:
//! `EDITS_SECS=600 cargo test -p e2e-tests --test sync edits -- --nocapture`.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::crash::{assert_converged_and_whole, content, Rng};
use crate::driver::{sha256, Env, Setup, TERMINAL};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_never_get_torn_content_committed() {
    let secs: u64 = std::env::var("EDITS_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(25);
    let mut rng = Rng::from_env("concurrent edits");
    let env = Env::start(Setup::Distributed).await;
    let base = "edits";
    // smb-*: written on the disk only; api-*: through the API only; both-*: by both.
    let names: Vec<String> = (0..4)
        .map(|i| format!("smb-{i}.txt"))
        .chain((0..4).map(|i| format!("api-{i}.txt")))
        .chain((0..3).map(|i| format!("both-{i}.txt")))
        .collect();
    let written: Arc<Mutex<HashSet<String>>> = Arc::default();
    written.lock().unwrap().insert(sha256(b""));
    for n in &names {
        let data = content(&format!("{n} initial"), 2000);
        written.lock().unwrap().insert(sha256(&data));
        env.write(&format!("{base}/{n}"), &data);
    }
    env.chown_all();
    let c = env.connector(json!({"base_path": base, "sync_direction": "bidirectional"})).await;
    env.sync_ok(&c).await;

    let stop = Arc::new(AtomicBool::new(false));
    let disk_writer = {
        let (stop, written, dir) = (stop.clone(), written.clone(), env.disk().join(base));
        let smb_names: Vec<String> = names.iter().filter(|n| !n.starts_with("api-")).cloned().collect();
        let mut rng = Rng(rng.next() | 1);
        tokio::task::spawn_blocking(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let name = rng.pick(&smb_names).clone();
                let size = if rng.chance(20) { 300_000 + rng.below(700_000) } else { 1 + rng.below(50_000) } as usize;
                let data = content(&format!("{name} smb write {n}"), size);
                written.lock().unwrap().insert(sha256(&data));
                // In place (truncate and write), owner and file id kept, like an editor saving.
                std::fs::write(dir.join(&name), &data).unwrap();
                n += 1;
                std::thread::sleep(Duration::from_millis(20 + rng.below(150)));
            }
            n
        })
    };
    let api_writer = {
        let (stop, written, api, share) = (stop.clone(), written.clone(), env.api.clone(), c.share.clone());
        let api_names: Vec<String> = names.iter().filter(|n| !n.starts_with("smb-")).cloned().collect();
        let mut rng = Rng(rng.next() | 1);
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let name = rng.pick(&api_names).clone();
                let size = if rng.chance(20) { 300_000 + rng.below(700_000) } else { 1 + rng.below(50_000) } as usize;
                let data = content(&format!("{name} api write {n}"), size);
                written.lock().unwrap().insert(sha256(&data));
                let (st, v) = api.upload(&share, &format!("{}/{name}", crate::driver::TARGET), data).await;
                assert!(st.is_success(), "API write: {st} {v}");
                n += 1;
                tokio::time::sleep(Duration::from_millis(30 + rng.below(200))).await;
            }
            n
        })
    };

    // Runs back to back while the writers write.
    let started = Instant::now();
    let mut runs = 0u64;
    while started.elapsed() < Duration::from_secs(secs) {
        let job = env.trigger(&c).await;
        let j = env.wait_job(&c, &job, Duration::from_secs(120)).await;
        assert!(TERMINAL.contains(&j["status"].as_str().unwrap()));
        assert_ne!(j["status"], "failed", "a run failed outright: {j:#}\n{}", env.logs());
        runs += 1;
    }
    stop.store(true, Ordering::SeqCst);
    let smb_writes = disk_writer.await.unwrap();
    let api_writes = api_writer.await.unwrap();

    // Writers stopped: a clean run or two, then nothing left to do.
    let mut clean = false;
    for _ in 0..4 {
        let j = env.sync_and_wait(&c).await;
        if j["status"] == "completed" && j["error_count"] == 0 {
            clean = true;
            break;
        }
    }
    assert!(clean, "no clean run once the writers stopped\n{}", env.logs());
    let j = env.sync_ok(&c).await;
    assert_eq!((j["files_synced"].as_i64(), j["files_deleted"].as_i64()), (Some(0), Some(0)), "converged: {j:#}");
    let written = written.lock().unwrap().clone();
    assert_converged_and_whole(&env, &c, base, &written, false).await;
    println!(
        "concurrent edits: {smb_writes} writes on SMB, {api_writes} through the API, {runs} runs in {:.0?}",
        started.elapsed()
    );
    assert!(runs >= 2 && smb_writes > 10 && api_writes > 10, "too little happened to prove anything");
    env.finish().await;
}
