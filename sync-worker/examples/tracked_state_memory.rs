//! How much memory a worker needs for the state of N tracked files (issue 8: "a worker
//! holding the state of 1,000,000 tracked files", target under 200 MB).
//!
//! A no-change re-sync of a share this size would first need an initial sync of a million
//! files, hours on the benchmark machine, so this builds what a worker's job holds in memory
//! during such a run from synthetic data, with the worker's own types and code, in the order
//! `job.rs` does:
//!
//! 1. the synced states from the control plane (`BaseState`, as `list_base` builds it from
//!    pages of `FileState`s converted by `convert::synced_of_proto`, collected, then built
//!    in one go);
//! 2. the SMB walk (`SmbSnapshot`, one `SmbItem` per file and folder);
//! 3. the ScaiDrive side of a run with nothing in the change log (`DriveView::from_base`);
//! 4. the plan (`sync_engine::plan`, which indexes all three), after which both snapshots are
//!    dropped and the base moves on to the state reporter.
//!
//! It prints the process's resident memory after each step and the peak (`VmHWM`), in total
//! and per tracked file. Paths, ids and digests have the shapes and lengths of real ones
//! (`aNNN/bN/cN/fNNNNNNN.dat` as the benchmark's data sets, `fil_`/`ver_` + ULID ids, SHA-256 on
//! both sides). `bench/run --scenarios state` runs it; the harness's distributed no-change
//! scenario measures the real worker process at smaller sizes to compare.
//!
//! ```text
//! cargo run --release -p sync-worker --example tracked_state_memory -- 1000000
//! ```

use std::collections::BTreeMap;
use std::time::Instant;

use proto::v1;
use sync_engine::{BaseState, ItemKind, Settings, Sha256, SmbSnapshot};
use sync_worker::changes::DriveView;
use sync_worker::convert::synced_of_proto;

/// `VmRSS` and `VmHWM` of this process, in KiB.
fn memory() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn report(step: &str, files: usize, started: Instant) {
    let (rss, hwm) = memory();
    println!(
        "{step:<34} rss {:>8.1} MiB  peak {:>8.1} MiB  {:>6} B/file  {:>6.1} s",
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0,
        rss * 1024 / files.max(1) as u64,
        started.elapsed().as_secs_f64()
    );
}

/// A 26-character ULID-like id from a number (distinct, the length of a real one).
fn ulid(n: u64) -> String {
    format!("01JD{n:022}")
}

/// The tree of the benchmark's data sets: 10 files per `c` folder, 10 `c` per `b`, 10 `b`
/// per `a`; every folder a tracked item too.
fn paths(files: usize) -> Vec<(String, ItemKind)> {
    let mut out = Vec::with_capacity(files + files / 8);
    let mut last_dirs: [Option<String>; 3] = [None, None, None];
    for i in 0..files {
        let (a, b, c) = (i / 1000, (i / 100) % 10, (i / 10) % 10);
        let dirs = [format!("a{a:03}"), format!("a{a:03}/b{b}"), format!("a{a:03}/b{b}/c{c}")];
        for (level, d) in dirs.iter().enumerate() {
            if last_dirs[level].as_ref() != Some(d) {
                out.push((d.clone(), ItemKind::Dir));
                last_dirs[level] = Some(d.clone());
            }
        }
        out.push((format!("{}/f{i:07}.dat", dirs[2]), ItemKind::File));
    }
    out
}

fn main() {
    let files: usize = std::env::args().nth(1).and_then(|a| a.replace('_', "").parse().ok()).unwrap_or(1_000_000);
    let started = Instant::now();
    report("start", files, started);
    let tree = paths(files);
    let items = tree.len();

    // 1. The base, page by page as list_base receives it (5,000 states per page).
    let mut collected = Vec::new();
    for (n, page) in tree.chunks(5000).enumerate() {
        let states: Vec<v1::FileState> = page
            .iter()
            .enumerate()
            .map(|(i, (path, kind))| {
                let id = (n * 5000 + i) as u64;
                let file = *kind == ItemKind::File;
                let sha = if file { Sha256::of(path.as_bytes()).to_hex() } else { String::new() };
                let ts = Some(prost_types::Timestamp { seconds: 1_790_000_000, nanos: 0 });
                v1::FileState {
                    path: path.clone(),
                    kind: if file { v1::NodeKind::File } else { v1::NodeKind::Folder } as i32,
                    status: v1::FileSyncStatus::Synced as i32,
                    smb: Some(v1::SmbItemState {
                        size: 4096,
                        modified_at: ts,
                        changed_at: ts,
                        created_at: ts,
                        file_id: id + 1,
                        sha256: sha.clone(),
                    }),
                    scaidrive: Some(v1::ScaiDriveItemState {
                        node_id: format!("{}_{}", if file { "fil" } else { "fld" }, ulid(id)),
                        version_id: if file { format!("ver_{}", ulid(id)) } else { String::new() },
                        size: 4096,
                        modified_at: ts,
                        sha256: sha,
                    }),
                    synced_at: ts,
                    ..Default::default()
                }
            })
            .collect();
        collected.extend(states.iter().filter_map(synced_of_proto));
    }
    let base = BaseState::from_states(collected);
    assert_eq!(base.entries.len(), items, "every synthetic state converts");
    report("base (synced states)", files, started);

    // 2. The SMB walk.
    let smb = SmbSnapshot {
        items: base
            .entries
            .values()
            .map(|s| {
                // As the walker lists it: the same fields, a path of its own.
                let item = sync_worker::scan::carried(s);
                (item.path.clone(), item)
            })
            .collect::<BTreeMap<_, _>>(),
    };
    drop(tree);
    report("+ SMB walk", files, started);

    // 3. The ScaiDrive side with an empty change log.
    let drive = DriveView::from_base(&base).finish();
    report("+ ScaiDrive side", files, started);

    // 4. The plan; the snapshots go, the base stays (the state reporter's known states).
    let plan = sync_engine::plan(&smb, &drive, &base, &Settings::default());
    report("+ plan", files, started);
    assert!(plan.blocked.is_none(), "a no-change run is not blocked");
    let actions = plan.actions.len();
    drop((smb, drive));
    report("snapshots dropped (transfer phase)", files, started);

    let (_, hwm) = memory();
    println!(
        "tracked files {files}, items {items} (with folders), actions {actions}: peak {:.1} MiB, {} bytes per tracked file",
        hwm as f64 / 1024.0,
        hwm * 1024 / files.max(1) as u64
    );
    drop((plan, base));
}
