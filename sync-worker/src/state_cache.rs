//! The synced states of connectors this worker ran, kept between runs.
//!
//! A quiet re-sync needs the connector's synced states (the base it plans against), and
//! listing them is most of what a run costs the control plane. The control plane names the
//! states with a version that changes with every write or removal of one of them
//! (`ListFileStatesResponse.states_version`); a worker that holds the states of that version
//! asks with it and gets `unchanged` instead of the states. Any other worker's run, an
//! interrupted run, a restored database: each gives a version this worker does not hold, and
//! the states are listed again.
//!
//! The cache is bounded by the number of states it holds in all (`--state-cache-items`, about
//! 170 bytes each); the least recently used connectors go first. A connector whose states
//! alone exceed the bound is not kept. The states a run plans against are shared with the
//! cache (`Arc`), not copied.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sync_engine::Tracked;

/// Code of the job-log line of a run that reused the worker's copy (level info).
pub const REUSED: &str = "SYNCED_STATES_REUSED";

/// Default bound on the states kept (all connectors): about 170 MB.
pub const DEFAULT_ITEMS: usize = 1_000_000;

/// Connector id → the version and the states.
#[derive(Debug)]
pub struct StateCache {
    limit: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<String, Entry>,
    clock: u64,
}

#[derive(Debug)]
struct Entry {
    version: String,
    states: Arc<Tracked>,
    used: u64,
}

impl Default for StateCache {
    fn default() -> Self {
        StateCache::new(DEFAULT_ITEMS)
    }
}

impl StateCache {
    /// A cache of at most `limit` states in all (0 keeps nothing).
    pub fn new(limit: usize) -> Self {
        StateCache { limit, inner: Mutex::new(Inner::default()) }
    }

    /// The version and states held for `connector_id`.
    pub fn get(&self, connector_id: &str) -> Option<(String, Arc<Tracked>)> {
        let mut g = self.inner.lock().unwrap();
        g.clock += 1;
        let now = g.clock;
        let e = g.entries.get_mut(connector_id)?;
        e.used = now;
        Some((e.version.clone(), e.states.clone()))
    }

    /// Keeps `states` as `connector_id`'s states of `version` (an empty version is not
    /// kept), making room by dropping the least recently used others.
    pub fn put(&self, connector_id: &str, version: &str, states: Arc<Tracked>) {
        let mut g = self.inner.lock().unwrap();
        g.entries.remove(connector_id);
        if version.is_empty() || states.len() > self.limit {
            return;
        }
        let mut held: usize = g.entries.values().map(|e| e.states.len()).sum();
        while held + states.len() > self.limit {
            let Some(oldest) = g.entries.iter().min_by_key(|(_, e)| e.used).map(|(k, _)| k.clone()) else { break };
            if let Some(e) = g.entries.remove(&oldest) {
                held -= e.states.len();
            }
        }
        g.clock += 1;
        let used = g.clock;
        g.entries.insert(connector_id.to_string(), Entry { version: version.to_string(), states, used });
    }

    /// Drops what is held for `connector_id` (its states were written: the copy is stale).
    pub fn forget(&self, connector_id: &str) {
        self.inner.lock().unwrap().entries.remove(connector_id);
    }

    /// States held in all.
    pub fn items(&self) -> usize {
        self.inner.lock().unwrap().entries.values().map(|e| e.states.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sync_engine::{
        DriveSide, FileTime, ItemKind, NodeId, RelPath, SmbSide, SyncedState, TrackedBuilder, VersionId,
    };

    fn states(n: usize) -> Arc<Tracked> {
        let mut b = TrackedBuilder::default();
        for i in 0..n {
            b.push(SyncedState {
                path: RelPath::new(&format!("f{i:05}")).unwrap(),
                kind: ItemKind::File,
                smb: SmbSide {
                    file_id: i as u64 + 1,
                    size: 1,
                    last_write: FileTime(5),
                    change_time: FileTime(6),
                    sha256: None,
                },
                drive: DriveSide {
                    node_id: NodeId(format!("fil_01JD{i:022}").as_str().into()),
                    version_id: Some(VersionId(format!("ver_01JD{i:022}").as_str().into())),
                    size: 1,
                    modified_at: FileTime(4),
                    sha256: None,
                },
                last_synced_at: FileTime(9),
            });
        }
        Arc::new(b.finish())
    }

    #[test]
    fn keeps_a_version_until_replaced_or_forgotten() {
        let c = StateCache::new(100);
        assert!(c.get("con_a").is_none());
        let s = states(3);
        c.put("con_a", "v1", s.clone());
        let (v, got) = c.get("con_a").unwrap();
        assert_eq!(v, "v1");
        assert!(Arc::ptr_eq(&got, &s), "shared, not copied");
        c.put("con_a", "v2", states(2));
        assert_eq!(c.get("con_a").unwrap().0, "v2");
        assert_eq!(c.items(), 2);
        c.forget("con_a");
        assert!(c.get("con_a").is_none());
        // No version: nothing to compare with later, so nothing kept (and the old copy goes).
        c.put("con_a", "v3", states(1));
        c.put("con_a", "", states(1));
        assert!(c.get("con_a").is_none());
    }

    #[test]
    fn stays_within_its_bound_dropping_the_least_recently_used() {
        let c = StateCache::new(10);
        c.put("con_a", "a", states(4));
        c.put("con_b", "b", states(4));
        c.get("con_a"); // b is now the least recently used
        c.put("con_c", "c", states(4));
        assert!(c.get("con_b").is_none());
        assert!(c.get("con_a").is_some() && c.get("con_c").is_some());
        assert_eq!(c.items(), 8);
        // Larger than the whole bound: not kept, the others stay.
        c.put("con_d", "d", states(11));
        assert!(c.get("con_d").is_none());
        assert_eq!(c.items(), 8);
        let none = StateCache::new(0);
        none.put("con_a", "a", states(1));
        assert!(none.get("con_a").is_none());
    }
}
