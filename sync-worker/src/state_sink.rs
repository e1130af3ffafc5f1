//! [`StateReporter`]: the engine's [`StateSink`] over `ControlPlane.ReportFileStates`.
//!
//! States are batched (at most 1000 per call), sent in order (later entries for a path win),
//! flushed when a batch is full, by the job's periodic flush and at the end. It keeps the
//! known states in memory so that a replayed folder move can re-path the states below it and
//! an error keeps the item's last synced sides. It also keeps the counters the progress
//! stream reports. A lease refusal cancels the run.

use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex};

use async_trait::async_trait;
use proto::v1;
use sync_engine::{FileIssue, ItemKind, KnownStates, Progress, RelPath, ReplicaError, StateSink, SyncedState, Tracked};
use tokio_util::sync::CancellationToken;

use crate::convert::{drive_state, file_state, nt_status_in, proto_kind, smb_state};
use crate::rpc::{call_retrying, ControlPlane, RpcError};
use crate::state_cache::StateCache;

/// Most states per `ReportFileStates` call (the contract's limit).
pub const MAX_BATCH: usize = 1000;

/// Counters for the progress stream and the job's final counts.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    /// The engine's last progress sample.
    pub progress: Progress,
    /// Failed items.
    pub failed: u64,
    /// Skipped items.
    pub skipped: u64,
    /// The item last reported.
    pub current_path: String,
}

/// Where a job's file states go.
pub struct StateReporter {
    rpc: ControlPlane,
    job_id: String,
    lease: v1::LeaseToken,
    lease_lost: CancellationToken,
    pending: StdMutex<Vec<v1::FileState>>,
    /// Job-log lines waiting for the next flush.
    notes: StdMutex<Vec<v1::JobEvent>>,
    known: StdMutex<KnownStates>,
    /// The worker's copy of these states, dropped at the first state written (stale then).
    cached: StdMutex<Option<(Arc<StateCache>, String)>>,
    tally: StdMutex<Tally>,
    /// Serialises flushes so batches reach the server in order.
    flushing: tokio::sync::Mutex<()>,
}

impl StateReporter {
    /// A reporter for `job_id` under `lease`, knowing the states of `base`.
    pub fn new(
        rpc: ControlPlane,
        job_id: &str,
        lease: v1::LeaseToken,
        base: Arc<Tracked>,
        lease_lost: CancellationToken,
    ) -> Self {
        StateReporter {
            rpc,
            job_id: job_id.to_string(),
            lease,
            lease_lost,
            pending: StdMutex::new(Vec::new()),
            notes: StdMutex::new(Vec::new()),
            known: StdMutex::new(KnownStates::new(base)),
            cached: StdMutex::new(None),
            tally: StdMutex::new(Tally::default()),
            flushing: tokio::sync::Mutex::new(()),
        }
    }

    /// The counters now.
    pub fn tally(&self) -> Tally {
        self.tally.lock().unwrap().clone()
    }

    /// States waiting to be sent.
    pub fn pending_len(&self) -> usize {
        self.pending.lock().unwrap().len()
    }

    /// Drops `connector_id`'s states from `cache` as soon as this reporter has a state to
    /// write: the copy would no longer be the connector's states (the next listing, which
    /// gets a new version, keeps the new ones).
    pub fn forgetting(self, cache: Arc<StateCache>, connector_id: &str) -> Self {
        *self.cached.lock().unwrap() = Some((cache, connector_id.to_string()));
        self
    }

    fn push(&self, states: impl IntoIterator<Item = v1::FileState>) -> bool {
        let mut p = self.pending.lock().unwrap();
        let before = p.len();
        p.extend(states);
        if p.len() > before {
            if let Some((cache, connector_id)) = self.cached.lock().unwrap().take() {
                cache.forget(&connector_id);
            }
        }
        p.len() >= MAX_BATCH
    }

    /// A warning in the job log about `issue` (a name left alone, not a failure of the item),
    /// sent with the next flush.
    pub fn warn(&self, issue: &FileIssue) {
        self.notes.lock().unwrap().push(v1::JobEvent {
            level: "warning".to_string(),
            path: issue.path.as_str().to_string(),
            code: issue.code.clone(),
            message: issue.message.clone(),
        });
    }

    /// An information line in the job log about the whole run (no path), sent with the next
    /// flush.
    pub fn info(&self, code: &str, message: String) {
        self.notes.lock().unwrap().push(v1::JobEvent {
            level: "info".to_string(),
            path: String::new(),
            code: code.to_string(),
            message,
        });
    }

    /// Sends everything pending, in batches of at most [`MAX_BATCH`]. On failure the unsent
    /// states stay pending (in order) for the next flush.
    pub async fn flush(&self) -> Result<(), RpcError> {
        // Cancel-safe: a batch leaves the queue only once the server has it. The periodic
        // flusher is aborted when the transfers end, possibly in the middle of a call; had it
        // taken its batch out first, that batch was gone (a distributed initial sync of 10,000
        // files once finished "completed" with 909 states unrecorded, transferred again next
        // run). Resending a batch whose answer was lost is harmless for states (upserts); a
        // job-log line, or an error state's job event, may then appear twice.
        let _order = self.flushing.lock().await;
        loop {
            let batch: Vec<v1::JobEvent> = self.notes.lock().unwrap().iter().take(MAX_BATCH).cloned().collect();
            if batch.is_empty() {
                break;
            }
            let n = batch.len();
            let req = v1::ReportJobEventsRequest {
                job_id: self.job_id.clone(),
                lease: Some(self.lease.clone()),
                events: batch,
            };
            let cp = self.rpc.cp.clone();
            let sent = call_retrying(&self.lease_lost, self.rpc.timeout, 5, || {
                let (mut c, r) = (cp.clone(), req.clone());
                async move { c.report_job_events(r).await }
            })
            .await;
            if let Err(e) = &sent {
                if e.is_lease_lost() {
                    self.lease_lost.cancel();
                    return sent.map(|_| ());
                }
                // A log line is not worth failing the run for.
                tracing::warn!(error = %e, "could not send job log lines");
            }
            self.notes.lock().unwrap().drain(..n);
        }
        loop {
            let batch: Vec<v1::FileState> = self.pending.lock().unwrap().iter().take(MAX_BATCH).cloned().collect();
            if batch.is_empty() {
                return Ok(());
            }
            let n = batch.len();
            let req = v1::ReportFileStatesRequest {
                job_id: self.job_id.clone(),
                lease: Some(self.lease.clone()),
                states: batch,
            };
            let cp = self.rpc.cp.clone();
            if let Err(e) = call_retrying(&self.lease_lost, self.rpc.timeout, 5, || {
                let (mut c, r) = (cp.clone(), req.clone());
                async move { c.report_file_states(r).await }
            })
            .await
            {
                if e.is_lease_lost() {
                    self.lease_lost.cancel();
                }
                // Kept queued for the next flush.
                return Err(e);
            }
            self.pending.lock().unwrap().drain(..n);
        }
    }

    async fn maybe_flush(&self, full: bool) -> Result<(), ReplicaError> {
        if full {
            self.flush().await.map_err(|e| ReplicaError::new(e.code(), e.to_string()))?;
        }
        Ok(())
    }

    /// The state an issue is recorded with: the last synced sides (if tracked) and the error.
    fn issue_state(&self, issue: &FileIssue) -> v1::FileState {
        let known = self.known.lock().unwrap().get(issue.path.as_str());
        let mut metadata = HashMap::new();
        if let Some(nt) = nt_status_in(&issue.message) {
            metadata.insert("nt_status".to_string(), nt);
        }
        let status = if issue.is_error { v1::FileSyncStatus::Error } else { v1::FileSyncStatus::Skipped };
        v1::FileState {
            path: issue.path.as_str().to_string(),
            kind: proto_kind(known.as_ref().map(|k| k.kind).unwrap_or(ItemKind::File)) as i32,
            status: status as i32,
            smb: known.as_ref().map(|k| smb_state(&k.smb)),
            scaidrive: known.as_ref().map(|k| drive_state(&k.drive)),
            error: Some(v1::ErrorDetail {
                code: issue.code.clone(),
                message: issue.message.clone(),
                field: String::new(),
                metadata,
            }),
            synced_at: Some(crate::rpc::now_ts()),
        }
    }
}

fn removed(path: &RelPath, kind: ItemKind) -> v1::FileState {
    v1::FileState {
        path: path.as_str().to_string(),
        kind: proto_kind(kind) as i32,
        status: v1::FileSyncStatus::Removed as i32,
        synced_at: Some(crate::rpc::now_ts()),
        ..Default::default()
    }
}

#[async_trait]
impl StateSink for StateReporter {
    async fn put(&self, state: SyncedState) -> Result<(), ReplicaError> {
        crate::crash::point("state");
        let fs = file_state(&state, v1::FileSyncStatus::Synced);
        self.tally.lock().unwrap().current_path = state.path.as_str().to_string();
        self.known.lock().unwrap().insert(state);
        let full = self.push([fs]);
        self.maybe_flush(full).await
    }

    async fn forget(&self, path: &RelPath) -> Result<(), ReplicaError> {
        let kind = self.known.lock().unwrap().remove(path.as_str()).map(|s| s.kind).unwrap_or(ItemKind::File);
        let full = self.push([removed(path, kind)]);
        self.maybe_flush(full).await
    }

    async fn rebase(&self, from: &RelPath, to: &RelPath) -> Result<(), ReplicaError> {
        let mut out = Vec::new();
        {
            let mut known = self.known.lock().unwrap();
            let moving: Vec<RelPath> = known.at_or_inside(from);
            for old in moving {
                let Some(mut s) = known.remove(old.as_str()) else {
                    continue;
                };
                let Some(new) = old.rebase(from, to) else {
                    continue;
                };
                out.push(removed(&old, s.kind));
                s.path = new.clone();
                out.push(file_state(&s, v1::FileSyncStatus::Synced));
                known.insert(s);
            }
        }
        let full = self.push(out);
        self.maybe_flush(full).await
    }

    async fn report_issue(&self, issue: &FileIssue) {
        let state = self.issue_state(issue);
        {
            let mut t = self.tally.lock().unwrap();
            if issue.is_error {
                t.failed += 1;
            } else {
                t.skipped += 1;
            }
            t.current_path = issue.path.as_str().to_string();
        }
        if issue.is_error {
            tracing::warn!(file.path = %issue.path, error.code = %issue.code, error = %issue.message, "file not synced");
        } else {
            tracing::debug!(file.path = %issue.path, code = %issue.code, "file skipped");
        }
        let full = self.push([state]);
        if let Err(e) = self.maybe_flush(full).await {
            tracing::warn!(error = %e, "could not send file states; kept for the next flush");
        }
    }

    async fn note(&self, note: &sync_engine::Note) {
        tracing::info!(file.path = %note.path, code = %note.code, "{}", note.message);
        self.notes.lock().unwrap().push(v1::JobEvent {
            level: "info".to_string(),
            path: note.path.as_str().to_string(),
            code: note.code.clone(),
            message: note.message.clone(),
        });
    }

    async fn progress(&self, progress: &Progress) {
        self.tally.lock().unwrap().progress = progress.clone();
    }
}
