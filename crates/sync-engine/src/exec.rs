//! The executor: applies a [`Plan`] through the replica traits.
//!
//! Order: structural actions (folder creations, moves, renames, restores) one by one in plan
//! order; then transfers (uploads, downloads, conflicts) with at most
//! [`ExecOptions::max_transfers`] in flight; then trash and deletions, deepest first; then
//! pure bookkeeping. Invariants it keeps:
//!
//! - A synced state is written only after its side effect succeeded and was verified: the
//!   SHA-256 of what was read from SMB equals what ScaiDrive committed, and what was written to
//!   SMB has the SHA-256 ScaiDrive announced.
//! - An SMB file that changed while being read is not committed; it is reported and retried
//!   next run. Each upload reads the file once ([`SmbReplica::open_read`]): the read stream
//!   ends with an error unless the file after the last byte (size, times, id) is the file
//!   as opened, and the drive replica lets ScaiDrive commit only on a clean end of that
//!   stream, with the SHA-256 of exactly the bytes that passed.
//! - Before SMB content is overwritten or deleted, it is in ScaiDrive (as a version, or in the
//!   trash), and the SMB item is checked to still be what the plan saw.
//! - Per-file failures are data: reported through [`StateSink::report_issue`] and in the
//!   [`ExecReport`]; the run goes on. A blocked plan (delete guard) does nothing at all.
//! - Cancellation is checked between actions. Content is streamed, never buffered whole
//!   (memory stays flat in file size).

use std::sync::{Arc, Mutex};

use futures::StreamExt;
use sha2::Digest;
use tokio_util::sync::CancellationToken;

use crate::model::*;
use crate::plan::{Action, DeleteGuard, Phase, Plan, Resolution};
use crate::replica::*;

/// Files above this size are large transfers (see [`ExecOptions::max_large_transfers`]).
pub const LARGE_TRANSFER_BYTES: u64 = 1024 * 1024;

/// Executor options.
#[derive(Clone, Debug)]
pub struct ExecOptions {
    /// Transfers (uploads, downloads, conflicts) in flight at once. Small files are bound by
    /// per-file round trips and durable commits, not bytes, so many go at once.
    pub max_transfers: usize,
    /// Of those, transfers of files over [`LARGE_TRANSFER_BYTES`] at once (each keeps a
    /// few MiB in flight): bounds memory and leaves room for small files beside them.
    pub max_large_transfers: usize,
    /// Checked between actions; set it to stop the run cleanly between files.
    pub cancel: CancellationToken,
    /// Stamped on every recorded state as `last_synced_at` (the executor reads no clock).
    pub synced_at: FileTime,
}

impl Default for ExecOptions {
    fn default() -> Self {
        ExecOptions {
            max_transfers: 32,
            max_large_transfers: 4,
            cancel: CancellationToken::new(),
            synced_at: FileTime(0),
        }
    }
}

/// What a run did.
#[derive(Clone, Debug, Default)]
pub struct ExecReport {
    /// Actions that succeeded.
    pub applied: usize,
    /// Per-file failures (retried next run).
    pub errors: Vec<FileIssue>,
    /// Planned skips.
    pub skipped: Vec<FileIssue>,
    /// Files whose content was transferred.
    pub files_synced: u64,
    /// Bytes uploaded to ScaiDrive.
    pub bytes_uploaded: u64,
    /// Bytes written to SMB.
    pub bytes_downloaded: u64,
    /// Conflicts resolved by the strategy (identical content on both sides is none).
    pub conflicts: u64,
    /// The plan was blocked by the delete guard: nothing was done.
    pub blocked: Option<DeleteGuard>,
    /// The run stopped early because of cancellation.
    pub cancelled: bool,
}

/// Applies `plan`. See the module documentation.
pub async fn execute(
    plan: &Plan,
    smb: &dyn SmbReplica,
    drive: &dyn DriveReplica,
    state: &dyn StateSink,
    opts: &ExecOptions,
) -> ExecReport {
    let ex = Executor {
        smb,
        drive,
        state,
        opts,
        report: Mutex::new(ExecReport::default()),
        progress: Mutex::new(Progress { actions_total: plan.actions.len() as u64, ..Progress::default() }),
    };
    if let Some(g) = &plan.blocked {
        // Job-level outcome (code DELETE_GUARD_TRIGGERED): the caller records it on the job.
        let mut r = ex.report.into_inner().expect("unpoisoned");
        r.blocked = Some(g.clone());
        return r;
    }
    let by_phase = |ph: Phase| plan.actions.iter().filter(move |a| a.phase() == ph);

    for a in by_phase(Phase::Forget).chain(by_phase(Phase::Structure)) {
        if ex.cancelled() {
            break;
        }
        ex.run(a).await;
    }
    if !ex.cancelled() {
        let large = tokio::sync::Semaphore::new(opts.max_large_transfers.max(1));
        futures::stream::iter(by_phase(Phase::Transfer))
            .for_each_concurrent(opts.max_transfers.max(1), |a| {
                let (large, ex) = (&large, &ex);
                async move {
                    let _slot = match transfer_bytes(a) > LARGE_TRANSFER_BYTES {
                        true => Some(large.acquire().await.expect("never closed")),
                        false => None,
                    };
                    if !ex.cancelled() {
                        ex.run(a).await;
                    }
                }
            })
            .await;
    }
    for ph in [Phase::Destroy, Phase::Bookkeeping] {
        for a in by_phase(ph) {
            if ex.cancelled() {
                break;
            }
            ex.run(a).await;
        }
    }
    let cancelled = ex.cancelled();
    let mut r = ex.report.into_inner().expect("unpoisoned");
    r.cancelled = cancelled;
    r
}

/// The bytes a transfer action moves (the larger side of a conflict).
fn transfer_bytes(a: &Action) -> u64 {
    match a {
        Action::UploadToDrive { smb_expected, .. } => smb_expected.size,
        Action::DownloadToSmb { drive, .. } => drive.size,
        Action::Conflict { smb_expected, drive, .. } => smb_expected.size.max(drive.size),
        _ => 0,
    }
}

struct Executor<'a> {
    smb: &'a dyn SmbReplica,
    drive: &'a dyn DriveReplica,
    state: &'a dyn StateSink,
    opts: &'a ExecOptions,
    report: Mutex<ExecReport>,
    progress: Mutex<Progress>,
}

/// What a successful action moved.
#[derive(Default)]
struct Moved {
    up: u64,
    down: u64,
    files: u64,
    /// A conflict was resolved (not counted when both sides turned out identical).
    conflicts: u64,
}

impl Moved {
    fn add(&mut self, o: Moved) {
        self.up += o.up;
        self.down += o.down;
        self.files += o.files;
        self.conflicts += o.conflicts;
    }
}

fn changed(path: &RelPath, what: &str) -> ReplicaError {
    ReplicaError::new(codes::SMB_CHANGED, format!("{path}: {what}; retried next run"))
}

/// Wraps a stream so that its bytes are hashed and counted as they pass.
fn tap(s: ByteStream) -> (ByteStream, Arc<Mutex<(sha2::Sha256, u64)>>) {
    let acc = Arc::new(Mutex::new((sha2::Sha256::new(), 0u64)));
    let a2 = acc.clone();
    let s = s
        .map(move |chunk| {
            if let Ok(c) = &chunk {
                let mut g = a2.lock().expect("unpoisoned");
                g.0.update(c);
                g.1 += c.len() as u64;
            }
            chunk
        })
        .boxed();
    (s, acc)
}

fn finish(acc: &Arc<Mutex<(sha2::Sha256, u64)>>) -> (Sha256, u64) {
    let g = acc.lock().expect("unpoisoned");
    (Sha256(g.0.clone().finalize().into()), g.1)
}

async fn hash_stream(mut s: ByteStream) -> Result<(Sha256, u64), ReplicaError> {
    let mut h = sha2::Sha256::new();
    let mut n = 0u64;
    while let Some(chunk) = s.next().await {
        let c = chunk?;
        n += c.len() as u64;
        h.update(&c);
    }
    Ok((Sha256(h.finalize().into()), n))
}

impl Executor<'_> {
    fn cancelled(&self) -> bool {
        self.opts.cancel.is_cancelled()
    }

    fn stamp(&self, mut st: SyncedState) -> SyncedState {
        st.last_synced_at = self.opts.synced_at;
        st
    }

    async fn put(&self, st: SyncedState) -> Result<(), ReplicaError> {
        self.state.put(self.stamp(st)).await
    }

    async fn run(&self, a: &Action) {
        let res = self.apply(a).await;
        let snapshot = {
            let mut p = self.progress.lock().expect("unpoisoned");
            p.actions_done += 1;
            let mut r = self.report.lock().expect("unpoisoned");
            match &res {
                Ok(m) => {
                    if !matches!(a, Action::Skip { .. }) {
                        r.applied += 1;
                    }
                    r.files_synced += m.files;
                    r.conflicts += m.conflicts;
                    r.bytes_uploaded += m.up;
                    r.bytes_downloaded += m.down;
                    p.files_synced += m.files;
                    p.bytes_uploaded += m.up;
                    p.bytes_downloaded += m.down;
                }
                Err(_) => p.errors += 1,
            }
            p.clone()
        };
        match res {
            Ok(_) => {
                if let Action::Skip { path, code, reason } = a {
                    let issue =
                        FileIssue { path: path.clone(), code: code.clone(), message: reason.clone(), is_error: false };
                    self.state.report_issue(&issue).await;
                    self.report.lock().expect("unpoisoned").skipped.push(issue);
                }
            }
            Err(e) => {
                let issue = FileIssue {
                    path: a.path().clone(),
                    code: e.code.clone(),
                    message: e.message.clone(),
                    is_error: true,
                };
                self.state.report_issue(&issue).await;
                self.report.lock().expect("unpoisoned").errors.push(issue);
            }
        }
        self.state.progress(&snapshot).await;
    }

    async fn apply(&self, a: &Action) -> Result<Moved, ReplicaError> {
        match a {
            Action::CreateDriveFolder { path, smb } => {
                let d = self.drive.create_folder(path, smb.last_write).await?;
                if d.kind != ItemKind::Dir {
                    return Err(ReplicaError::new(codes::KIND_MISMATCH, format!("{path} is a file on ScaiDrive")));
                }
                self.put(SyncedState {
                    path: path.clone(),
                    kind: ItemKind::Dir,
                    smb: smb.clone(),
                    drive: DriveSide::of(&d),
                    last_synced_at: FileTime(0),
                })
                .await?;
            }
            Action::MkdirSmb { path, drive } => {
                let s = self.smb.mkdir(path).await?;
                if s.kind != ItemKind::Dir {
                    return Err(ReplicaError::new(codes::KIND_MISMATCH, format!("{path} is a file on SMB")));
                }
                self.put(SyncedState {
                    path: path.clone(),
                    kind: ItemKind::Dir,
                    smb: SmbSide::of(&s, None),
                    drive: drive.clone(),
                    last_synced_at: FileTime(0),
                })
                .await?;
            }
            Action::MoveOnDrive { node_id, from: _, to, base_version_id, state_from, record } => {
                self.drive.move_node(node_id, to, base_version_id.as_ref()).await?;
                if let Some(from) = state_from {
                    self.state.rebase(from, to).await?;
                }
                if let Some(rec) = record {
                    self.put(rec.clone()).await?;
                }
            }
            Action::RenameOnSmb { from, to, expected_file_id, state_from, record } => {
                let s = self.smb.rename(from, to, *expected_file_id).await?;
                if let Some(sf) = state_from {
                    self.state.rebase(sf, to).await?;
                }
                if let Some(rec) = record {
                    // A rename touches the SMB change time: record the new one.
                    let mut rec = rec.clone();
                    if s.file_id == rec.smb.file_id && s.size == rec.smb.size && s.last_write == rec.smb.last_write {
                        rec.smb.change_time = s.change_time;
                    }
                    self.put(rec).await?;
                }
            }
            Action::RebaseState { from, to, record } => {
                self.state.rebase(from, to).await?;
                if let Some(rec) = record {
                    self.put(rec.clone()).await?;
                }
            }
            Action::RestoreOnDrive { path: _, node_id, record } => {
                self.drive.restore(node_id, None).await?;
                if let Some(rec) = record {
                    self.put(rec.clone()).await?;
                }
            }
            Action::UploadToDrive { path, base_version_id, smb_expected } => {
                let (st, m) = self.upload(path, base_version_id.clone(), smb_expected).await?;
                self.put(st).await?;
                return Ok(m);
            }
            Action::DownloadToSmb { path, drive, smb_expected, preserve_smb } => {
                return self.download(path, drive, smb_expected.as_ref(), *preserve_smb).await;
            }
            Action::Conflict { path, resolution, smb_expected, drive } => {
                return self.conflict(path, resolution, smb_expected, drive).await;
            }
            Action::TrashOnDrive { path, kind: _, node_id, base_version_id } => {
                self.drive.trash(node_id, base_version_id.as_ref()).await?;
                self.state.forget(path).await?;
            }
            Action::DeleteOnSmb { path, kind, expected, preserve } => {
                let mut m = Moved::default();
                if *preserve && *kind == ItemKind::Dir {
                    let d = self.drive.create_folder(path, FileTime(0)).await?;
                    self.drive.trash(&d.node_id, None).await?;
                } else if *preserve {
                    let e = expected.as_ref().ok_or_else(|| changed(path, "no expectation"))?;
                    let (st, up) = self.upload(path, None, e).await?;
                    m.add(up);
                    self.drive.trash(&st.drive.node_id, st.drive.version_id.as_ref()).await?;
                    self.note(
                        path,
                        note_codes::SMB_CONTENT_KEPT,
                        format!(
                            "SMB's content was kept in ScaiDrive's trash (file {}) before it was deleted from SMB",
                            st.drive.node_id.0
                        ),
                    )
                    .await;
                }
                self.smb.delete(path, *kind, expected.as_ref()).await?;
                self.state.forget(path).await?;
                return Ok(m);
            }
            Action::RecordState { state } => self.put(state.clone()).await?,
            Action::ForgetState { path } => self.state.forget(path).await?,
            Action::Skip { .. } => {}
        }
        Ok(Moved::default())
    }

    /// Streams an SMB file to ScaiDrive, reading it once. Returns the state to record (not
    /// yet recorded).
    ///
    /// No torn content is committed, without a second read: `open_read` gives the file as
    /// opened (checked against the plan here) and a stream that fails instead of ending if
    /// the file's size, last-write time, change time or id differ after the last byte. The
    /// drive replica commits only on a clean end of the stream (a failed stream cancels the
    /// upload), announcing the SHA-256 of the bytes that passed after the last one, and
    /// ScaiDrive commits only if what it received has that digest and the planned size. So
    /// what is committed is exactly what was read while the file stayed unchanged, which is
    /// what the former hash pass + send pass + stats before and after established, at half
    /// the reads. The digest recorded for SMB is the one ScaiDrive verified.
    async fn upload(
        &self,
        path: &RelPath,
        base_version_id: Option<VersionId>,
        expected: &SmbExpect,
    ) -> Result<(SyncedState, Moved), ReplicaError> {
        let (before, data) = self.smb.open_read(path).await?.ok_or_else(|| changed(path, "vanished"))?;
        if before.kind != ItemKind::File || !expected.matches(&before) {
            return Err(changed(path, "changed since it was listed"));
        }
        let size = before.size;
        let spec =
            UploadSpec { path: path.clone(), base_version_id, size, sha256: None, modified_at: before.last_write };
        let committed = self.drive.upload(&spec, data).await?;
        let Some(sha) = committed.item.sha256 else {
            return Err(ReplicaError::new(codes::CHECKSUM_MISMATCH, format!("{path}: ScaiDrive committed no digest")));
        };
        let after = before;
        if committed.item.size != size {
            return Err(ReplicaError::new(
                codes::CHECKSUM_MISMATCH,
                format!("{path}: ScaiDrive committed other content than was read"),
            ));
        }
        let st = SyncedState {
            path: path.clone(),
            kind: ItemKind::File,
            smb: SmbSide::of(&after, Some(sha)),
            drive: DriveSide::of(&committed.item),
            last_synced_at: FileTime(0),
        };
        let m =
            if committed.unchanged { Moved::default() } else { Moved { up: size, down: 0, files: 1, conflicts: 0 } };
        Ok((st, m))
    }

    /// Writes a ScaiDrive version to SMB safely; with `preserve_smb`, first stores SMB's
    /// current content as a ScaiDrive version (then makes `drive`'s version current again).
    async fn download(
        &self,
        path: &RelPath,
        drive: &DriveSide,
        smb_expected: Option<&SmbExpect>,
        preserve_smb: bool,
    ) -> Result<Moved, ReplicaError> {
        let mut m = Moved::default();
        let mut drive = drive.clone();
        let mut expected = smb_expected.cloned();
        if preserve_smb {
            let e = smb_expected.ok_or_else(|| changed(path, "no expectation"))?;
            let (st, up) = self.upload(path, drive.version_id.clone(), e).await?;
            m.add(up);
            if st.drive.version_id == drive.version_id {
                // Same content on both sides already.
                self.put(st).await?;
                return Ok(m);
            }
            let kept = st.drive.version_id.as_ref().map(|v| &*v.0).unwrap_or("?").to_string();
            let restored = self.drive.restore(&drive.node_id, drive.version_id.as_ref()).await?;
            self.note(
                path,
                note_codes::SMB_CONTENT_KEPT,
                format!("SMB's content was kept in ScaiDrive as previous version {kept} before ScaiDrive's version replaced it"),
            )
            .await;
            drive = DriveSide::of(&restored);
            expected = Some(SmbExpect { file_id: st.smb.file_id, size: st.smb.size, last_write: st.smb.last_write });
        }
        let (head, body) = self.drive.download(&drive.node_id, drive.version_id.as_ref()).await?;
        if Some(&head.version_id) != drive.version_id.as_ref() {
            return Err(ReplicaError::new(codes::VERSION_CONFLICT, format!("{path}: ScaiDrive sent another version")));
        }
        let (body, acc) = tap(body);
        let temp = self.smb.write_temp(path, body).await?;
        let (sha, size) = finish(&acc);
        if sha != head.sha256 || size != head.size {
            let _ = self.smb.discard_temp(&temp).await;
            return Err(ReplicaError::new(codes::CHECKSUM_MISMATCH, format!("{path}: downloaded bytes do not match")));
        }
        let item = match self.smb.commit_temp(&temp, path, expected.as_ref(), drive.modified_at).await {
            Ok(i) => i,
            Err(e) => {
                let _ = self.smb.discard_temp(&temp).await;
                return Err(e);
            }
        };
        self.put(SyncedState {
            path: path.clone(),
            kind: ItemKind::File,
            smb: SmbSide::of(&item, Some(sha)),
            drive,
            last_synced_at: FileTime(0),
        })
        .await?;
        m.add(Moved { up: 0, down: size, files: 1, conflicts: 0 });
        Ok(m)
    }

    async fn conflict(
        &self,
        path: &RelPath,
        resolution: &Resolution,
        smb_expected: &SmbExpect,
        drive: &DriveSide,
    ) -> Result<Moved, ReplicaError> {
        Ok(match self.resolve_conflict(path, resolution, smb_expected, drive).await? {
            Some(m) => {
                let what = match resolution {
                    Resolution::SmbWins => format!(
                        "changed on both sides: SMB's content won; ScaiDrive's version {} stays a previous version",
                        drive.version_id.as_ref().map(|v| &*v.0).unwrap_or("?")
                    ),
                    Resolution::DriveWins => {
                        "changed on both sides: ScaiDrive's content won; SMB's content was kept as a previous version"
                            .to_string()
                    }
                    Resolution::KeepBoth { conflict_path } => {
                        format!("changed on both sides: both kept; ScaiDrive's copy is now {conflict_path}")
                    }
                };
                self.note(path, note_codes::CONFLICT_RESOLVED, what).await;
                Moved { conflicts: 1, ..m }
            }
            None => Moved::default(),
        })
    }

    async fn note(&self, path: &RelPath, code: &str, message: String) {
        self.state.note(&Note { path: path.clone(), code: code.to_string(), message }).await;
    }

    /// Resolves one conflict by the strategy; `None` when both sides turned out identical
    /// (recorded as synced: no conflict).
    async fn resolve_conflict(
        &self,
        path: &RelPath,
        resolution: &Resolution,
        smb_expected: &SmbExpect,
        drive: &DriveSide,
    ) -> Result<Option<Moved>, ReplicaError> {
        let now = self.smb.stat(path).await?.ok_or_else(|| changed(path, "vanished"))?;
        if !smb_expected.matches(&now) {
            return Err(changed(path, "changed since it was listed"));
        }
        if drive.sha256.is_some() && drive.size == now.size {
            // One checked read: an error (the file changed while read) is not identity.
            let read = match self.smb.open_read(path).await? {
                Some((opened, data)) if opened == now => hash_stream(data).await.ok(),
                _ => None,
            };
            if read.is_some_and(|(sha, _)| Some(sha) == drive.sha256) {
                let sha = read.expect("some").0;
                // Identical content on both sides: no conflict.
                self.put(SyncedState {
                    path: path.clone(),
                    kind: ItemKind::File,
                    smb: SmbSide::of(&now, Some(sha)),
                    drive: drive.clone(),
                    last_synced_at: FileTime(0),
                })
                .await?;
                return Ok(None);
            }
        }
        match resolution {
            Resolution::SmbWins => {
                let (st, m) = self.upload(path, drive.version_id.clone(), smb_expected).await?;
                self.put(st).await?;
                Ok(Some(m))
            }
            Resolution::DriveWins => self.download(path, drive, Some(smb_expected), true).await.map(Some),
            Resolution::KeepBoth { conflict_path } => {
                let moved = self.drive.move_node(&drive.node_id, conflict_path, drive.version_id.as_ref()).await?;
                let mut m = self.download(conflict_path, &DriveSide::of(&moved), None, false).await?;
                let (st, up) = self.upload(path, None, smb_expected).await?;
                self.put(st).await?;
                m.add(up);
                Ok(Some(m))
            }
        }
    }
}
