//! Randomised histories over the in-memory replicas (`sync_engine::testing`): edits,
//! creations, deletions and renames on both sides over several runs, for every direction and
//! conflict strategy, with crashes injected between executor steps.
//!
//! Checked after every round: no content that existed on either side at the start of a run is
//! unreachable afterwards (crashed run included); after a clean run both sides agree (modulo
//! reported skips); a second plan is a no-op.
//!
//! Case count: `PROPTEST_CASES` (default 256 per direction/strategy pair).

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use proptest::prelude::*;
use sync_engine::testing::World;
use sync_engine::*;

const PATHS: &[&str] = &[
    "a.txt",
    "b.txt",
    "d1",
    "d1/a.txt",
    "d1/b.txt",
    "d2",
    "d2/a.txt",
    "d1/d3",
    "d1/d3/c.txt",
    // Case variants: one name on SMB, two on ScaiDrive.
    "A.TXT",
    "D1/B.txt",
];

#[derive(Debug, Clone)]
enum Op {
    Write { drive: bool, path: usize, content: u8 },
    Delete { drive: bool, path: usize },
    Rename { drive: bool, from: usize, to: usize },
    Mkdir { drive: bool, path: usize },
}

fn op() -> impl Strategy<Value = Op> {
    let n = PATHS.len();
    prop_oneof![
        4 => (any::<bool>(), 0..n, 0u8..6).prop_map(|(drive, path, content)| Op::Write { drive, path, content }),
        2 => (any::<bool>(), 0..n).prop_map(|(drive, path)| Op::Delete { drive, path }),
        2 => (any::<bool>(), 0..n, 0..n).prop_map(|(drive, from, to)| Op::Rename { drive, from, to }),
        1 => (any::<bool>(), 0..n).prop_map(|(drive, path)| Op::Mkdir { drive, path }),
    ]
}

/// ScaiDrive is case-sensitive: the case variants are used on SMB only (where they name the
/// same items); case twins on ScaiDrive are covered by the planner tests.
fn drive_path(i: usize) -> usize {
    match PATHS[i] {
        "A.TXT" => 0,
        "D1/B.txt" => 4,
        _ => i,
    }
}

fn apply(w: &World, op: &Op, round: usize) {
    let op = &match *op {
        Op::Write { drive: true, path, content } => Op::Write { drive: true, path: drive_path(path), content },
        Op::Delete { drive: true, path } => Op::Delete { drive: true, path: drive_path(path) },
        Op::Rename { drive: true, from, to } => Op::Rename { drive: true, from: drive_path(from), to: drive_path(to) },
        Op::Mkdir { drive: true, path } => Op::Mkdir { drive: true, path: drive_path(path) },
        ref other => other.clone(),
    };
    match *op {
        Op::Write { drive, path, content } => {
            let data = format!("content {content} of round {round}");
            let data = if content == 0 { "same".to_string() } else { data };
            if drive {
                w.drive.user_write(PATHS[path], data.as_bytes());
            } else {
                w.smb.user_write(PATHS[path], data.as_bytes());
            }
        }
        Op::Delete { drive, path } => {
            if drive {
                w.drive.user_delete(PATHS[path]);
            } else {
                w.smb.user_delete(PATHS[path]);
            }
        }
        Op::Rename { drive, from, to } => {
            if drive {
                w.drive.user_rename(PATHS[from], PATHS[to]);
            } else {
                w.smb.user_rename(PATHS[from], PATHS[to]);
            }
        }
        Op::Mkdir { drive, path } => {
            if drive {
                w.drive.user_mkdir(PATHS[path]);
            } else {
                w.smb.user_mkdir(PATHS[path]);
            }
        }
    }
}

fn reachable(w: &World) -> BTreeSet<Bytes> {
    let mut all = w.smb.contents();
    all.extend(w.drive.all_contents());
    all
}

fn without_skipped(t: BTreeMap<String, Option<Bytes>>, skipped: &[String]) -> BTreeMap<String, Option<Bytes>> {
    t.into_iter()
        .filter(|(p, _)| {
            // Skips name one spelling; SMB names are case-insensitive.
            let p = p.to_lowercase();
            !skipped.iter().map(|s| s.to_lowercase()).any(|s| p == s || p.starts_with(&format!("{s}/")))
        })
        .collect()
}

/// ScaiDrive case twins that SMB does not have (reported skips, possibly moved along with
/// their folder since) are left out of the comparison.
fn without_twins(
    t: BTreeMap<String, Option<Bytes>>,
    smb: &BTreeMap<String, Option<Bytes>>,
) -> BTreeMap<String, Option<Bytes>> {
    let mut count: BTreeMap<String, usize> = BTreeMap::new();
    for k in t.keys() {
        *count.entry(k.to_lowercase()).or_default() += 1;
    }
    t.into_iter().filter(|(k, _)| count[&k.to_lowercase()] == 1 || smb.contains_key(k)).collect()
}

fn has_twins(t: &BTreeMap<String, Option<Bytes>>) -> bool {
    let lower: BTreeSet<String> = t.keys().map(|k| k.to_lowercase()).collect();
    lower.len() != t.len()
}

fn settings(direction: Direction, conflict: ConflictStrategy) -> Settings {
    Settings { direction, conflict, max_delete_percent: 100, ..Settings::default() }
}

fn check_history(
    direction: Direction,
    conflict: ConflictStrategy,
    rounds: Vec<(Vec<Op>, Option<u16>)>,
) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let w = World::default();
    let s = settings(direction, conflict);
    for (round, (ops, crash)) in rounds.iter().enumerate() {
        for op in ops {
            apply(&w, op, round);
        }
        let before = reachable(&w);
        if let Some(k) = crash {
            w.faults.crash_after(*k as u64);
            rt.block_on(w.run(&s));
            w.faults.heal();
            let after = reachable(&w);
            prop_assert!(before.is_subset(&after), "content lost in a crashed run: {:?}", before.difference(&after));
        }
        // Known limitation: with ScaiDrive case twins (names differing only in case), when
        // the twin that synced moves or goes away, the other one syncs in a later run. Those
        // histories get up to two more clean runs; all others must converge in one.
        let twins = has_twins(&w.drive.tree());
        let mut extra = if twins { 2 } else { 0 };
        loop {
            let (plan, rep) = rt.block_on(w.run(&s));
            let after = reachable(&w);
            prop_assert!(before.is_subset(&after), "content lost: {:?}\nplan: {:#?}", before.difference(&after), plan);
            let skipped: Vec<String> = rep.skipped.iter().map(|i| i.path.as_str().to_string()).collect();
            let st = without_skipped(w.smb.tree(), &skipped);
            let dt = without_twins(without_skipped(w.drive.tree(), &skipped), &st);
            let again = w.plan(&s);
            let ok = rep.errors.is_empty() && st == dt && again.is_noop();
            if !ok && extra > 0 {
                extra -= 1;
                continue;
            }
            prop_assert!(rep.errors.is_empty(), "errors in a clean run: {:#?}\nplan: {:#?}", rep.errors, plan);
            prop_assert_eq!(&st, &dt, "sides differ after round {}\nplan: {:#?}", round, plan);
            prop_assert!(again.is_noop(), "second plan not empty: {:#?}\nfirst plan: {:#?}", again, plan);
            break;
        }
    }
    Ok(())
}

fn rounds() -> impl Strategy<Value = Vec<(Vec<Op>, Option<u16>)>> {
    prop::collection::vec(
        (prop::collection::vec(op(), 0..8), prop_oneof![2 => Just(None), 1 => (0u16..40).prop_map(Some)]),
        1..5,
    )
}

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256);
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

macro_rules! history_test {
    ($name:ident, $dir:expr, $strategy:expr) => {
        proptest! {
            #![proptest_config(config())]
            #[test]
            fn $name(rounds in rounds()) {
                check_history($dir, $strategy, rounds)?;
            }
        }
    };
}

history_test!(smb_to_drive_histories_converge, Direction::SmbToDrive, ConflictStrategy::LastWriterWins);
history_test!(drive_to_smb_histories_converge, Direction::DriveToSmb, ConflictStrategy::LastWriterWins);
history_test!(bidirectional_lww_histories_converge, Direction::Bidirectional, ConflictStrategy::LastWriterWins);
history_test!(bidirectional_keep_both_histories_converge, Direction::Bidirectional, ConflictStrategy::KeepBoth);
history_test!(bidirectional_drive_wins_histories_converge, Direction::Bidirectional, ConflictStrategy::DriveWins);
history_test!(bidirectional_smb_wins_histories_converge, Direction::Bidirectional, ConflictStrategy::SmbWins);
