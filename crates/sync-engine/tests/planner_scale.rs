//! The planner at the size of a real share: a no-change re-sync of many tracked files, and one
//! folder renamed among them. Asserts the plan (behaviour), and prints how long planning took
//! (`PLANNER_SCALE_FILES=100000 cargo test --release -p sync-engine --test planner_scale --
//! --nocapture` for the figure in docs/PERFORMANCE.md). Planning used to search the synced
//! state linearly for every tracked entry (quadratic); a quadratic planner makes this test
//! take minutes instead of a second.

use std::time::Instant;

use sync_engine::*;

fn p(s: &str) -> RelPath {
    RelPath::new(s).unwrap()
}

const PER_DIR: usize = 100;

/// `n` files in `n / PER_DIR` folders, synced and unchanged on both sides; folder `d0001` is
/// renamed to `renamed` on SMB (same file ids and times).
fn world(n: usize) -> (SmbSnapshot, DriveSnapshot, BaseState) {
    let mut smb = Vec::new();
    let mut drive = Vec::new();
    let mut base = Vec::new();
    let dirs = n.div_ceil(PER_DIR);
    let t = FileTime(10);
    for d in 0..dirs {
        let dir = format!("d{d:04}");
        let smb_dir = if d == 1 { "renamed".to_string() } else { dir.clone() };
        let dir_id = 1_000_000 + d as u64;
        let node = NodeId(format!("n{dir}").into());
        smb.push(SmbItem {
            path: p(&smb_dir),
            kind: ItemKind::Dir,
            size: 0,
            last_write: t,
            change_time: t,
            file_id: dir_id,
            hidden: false,
            system: false,
            reparse: false,
        });
        drive.push(DriveItem {
            path: p(&dir),
            kind: ItemKind::Dir,
            node_id: node.clone(),
            version_id: None,
            size: 0,
            modified_at: t,
            sha256: None,
        });
        base.push(SyncedState {
            path: p(&dir),
            kind: ItemKind::Dir,
            smb: SmbSide { file_id: dir_id, size: 0, last_write: t, change_time: t, sha256: None },
            drive: DriveSide { node_id: node, version_id: None, size: 0, modified_at: t, sha256: None },
            last_synced_at: t,
        });
        for f in 0..PER_DIR.min(n - d * PER_DIR) {
            let id = (d * PER_DIR + f) as u64 + 1;
            let name = format!("f{id:07}.dat");
            let sha = Some(Sha256::of(name.as_bytes()));
            let node = NodeId(format!("n{id}").into());
            let version = Some(VersionId(format!("v{id}").into()));
            smb.push(SmbItem {
                path: p(&format!("{smb_dir}/{name}")),
                kind: ItemKind::File,
                size: 100,
                last_write: t,
                change_time: t,
                file_id: id,
                hidden: false,
                system: false,
                reparse: false,
            });
            drive.push(DriveItem {
                path: p(&format!("{dir}/{name}")),
                kind: ItemKind::File,
                node_id: node.clone(),
                version_id: version.clone(),
                size: 100,
                modified_at: t,
                sha256: sha,
            });
            base.push(SyncedState {
                path: p(&format!("{dir}/{name}")),
                kind: ItemKind::File,
                smb: SmbSide { file_id: id, size: 100, last_write: t, change_time: t, sha256: sha },
                drive: DriveSide { node_id: node, version_id: version, size: 100, modified_at: t, sha256: sha },
                last_synced_at: t,
            });
        }
    }
    (SmbSnapshot::from_items(smb), DriveSnapshot::from_items(drive), BaseState::from_states(base))
}

#[test]
fn planning_many_tracked_files_replays_the_one_rename_and_nothing_else() {
    let n: usize = std::env::var("PLANNER_SCALE_FILES").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000);
    let (smb, drive, base) = world(n);
    let settings = Settings::default();
    let started = Instant::now();
    let plan = plan(&smb, &drive, &base, &settings);
    let took = started.elapsed();
    println!("planned {n} tracked files ({} entries with folders) in {:.3} s", base.entries.len(), took.as_secs_f64());
    assert_eq!(plan.blocked, None);
    let moves: Vec<&Action> = plan.actions.iter().filter(|a| !matches!(a, Action::RebaseState { .. })).collect();
    assert_eq!(moves.len(), 1, "only the folder rename: {moves:#?}");
    match moves[0] {
        Action::MoveOnDrive { from, to, .. } => {
            assert_eq!((from.as_str(), to.as_str()), ("d0001", "renamed"));
        }
        other => panic!("expected the folder's move, got {other:?}"),
    }
    // Planning again gives the same plan, and so does planning with every unchanged path.
    assert_eq!(sync_engine::plan(&smb, &drive, &base, &settings), plan);
    let started = Instant::now();
    let full = sync_engine::plan::plan_unpruned(&smb, &drive, &base, &settings);
    println!("without leaving out the unchanged paths: {:.3} s", started.elapsed().as_secs_f64());
    assert_eq!(full, plan);
    // And from the compact forms a worker holds.
    let t = Tracked::from_base(&base);
    let (walk, overlay) = (SmbWalk::from_snapshot(&t, smb.clone()), DriveOverlay::from_snapshot(&t, drive.clone()));
    let started = Instant::now();
    let compact = plan_tracked(walk, overlay, &t, &settings);
    println!("from the compact forms: {:.3} s", started.elapsed().as_secs_f64());
    assert_eq!(compact, plan);
}
