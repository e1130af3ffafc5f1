//! How much memory a worker needs for the state of N tracked files (issue 8: "a worker
//! holding the state of 1,000,000 tracked files", target under 200 MB).
//!
//! A no-change re-sync of a share this size would first need an initial sync of a million
//! files, hours on the benchmark machine, so this builds what a worker's job holds in memory
//! during such a run from synthetic data, with the worker's own types and code, in the order
//! `job.rs` does:
//!
//! 1. the synced states from the control plane (`sync_engine::Tracked`, as `list_base` builds
//!    it from pages of `FileState`s converted by `convert::synced_of_proto`);
//! 2. the SMB walk (`SmbWalk`: each entry listed, as the walker makes it, is recorded as one
//!    bit when it is what was synced at its path);
//! 3. the ScaiDrive side of a run with nothing in the change log (`DriveOverlay::unchanged`);
//! 4. the plan (`sync_engine::plan_tracked`), after which the walk and the overlay are gone
//!    and the synced states move on to the state reporter.
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

use std::time::Instant;

use proto::v1;
use sync_engine::{DriveOverlay, ItemKind, RelPath, Settings, Sha256, SmbWalk, TrackedBuilder};
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

/// The tree of the benchmark's data sets, in path order: 10 files per `c` folder, 10 `c` per
/// `b`, 10 `b` per `a`; every folder a tracked item too. Made as it is read (a worker has no
/// list of its paths besides the states).
fn paths(files: usize) -> impl Iterator<Item = (String, ItemKind)> {
    let mut last_dirs: [Option<String>; 3] = [None, None, None];
    (0..files).flat_map(move |i| {
        let (a, b, c) = (i / 1000, (i / 100) % 10, (i / 10) % 10);
        let dirs = [format!("a{a:03}"), format!("a{a:03}/b{b}"), format!("a{a:03}/b{b}/c{c}")];
        let mut out = Vec::new();
        for (level, d) in dirs.iter().enumerate() {
            if last_dirs[level].as_ref() != Some(d) {
                out.push((d.clone(), ItemKind::Dir));
                last_dirs[level] = Some(d.clone());
            }
        }
        out.push((format!("{}/f{i:07}.dat", dirs[2]), ItemKind::File));
        out
    })
}

fn main() {
    let files: usize = std::env::args().nth(1).and_then(|a| a.replace('_', "").parse().ok()).unwrap_or(1_000_000);
    let started = Instant::now();
    report("start", files, started);
    let mut tree = paths(files).peekable();

    // 1. The base, page by page as list_base receives it (5,000 states per page).
    let mut builder = TrackedBuilder::default();
    let mut n = 0;
    while tree.peek().is_some() {
        let page: Vec<(String, ItemKind)> = tree.by_ref().take(5000).collect();
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
        for s in states.iter().filter_map(synced_of_proto) {
            builder.push(s);
        }
        n += 1;
    }
    let tracked = builder.finish();
    let items = tracked.len();
    assert_eq!(items, paths(files).count(), "every synthetic state converts");
    report("synced states (Tracked)", files, started);

    // 2. The SMB walk: every entry as the walker makes it (a path of its own), unchanged.
    let mut walk = SmbWalk::new(&tracked);
    for i in 0..tracked.len() {
        let mut item = tracked.carried(i);
        item.path = RelPath::new(tracked.path(i)).unwrap();
        walk.insert(&tracked, item);
    }
    assert_eq!(walk.items.len(), 0, "every entry is as synced");
    report("+ SMB walk", files, started);

    // 3. The ScaiDrive side with an empty change log.
    let drive = DriveOverlay::unchanged(&tracked);
    report("+ ScaiDrive side", files, started);

    // 4. The plan; the walk and the overlay go, the synced states stay (the state reporter's).
    let plan = sync_engine::plan_tracked(walk, drive, &tracked, &Settings::default());
    report("+ plan", files, started);
    assert!(plan.blocked.is_none(), "a no-change run is not blocked");
    assert!(plan.actions.is_empty(), "a no-change run has nothing to do");
    let actions = plan.actions.len();

    let (_, hwm) = memory();
    println!(
        "tracked files {files}, items {items} (with folders), actions {actions}: peak {:.1} MiB, {} bytes per tracked file",
        hwm as f64 / 1024.0,
        hwm * 1024 / files.max(1) as u64
    );
    drop((plan, tracked));
}
