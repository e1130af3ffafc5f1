//! The SMB half of the scan: walk the tree under `base_path` with the engine's filters pruning
//! excluded folders, into the engine's `SmbSnapshot`.
//!
//! A sub-folder that cannot be listed must not look empty (the planner would delete its
//! content in ScaiDrive): its tracked items are carried over from the last synced state as
//! unchanged, and the folder is reported. Memory holds the snapshot only (one entry per item).

use std::sync::{Arc, Mutex};

use futures::StreamExt;
use smb_layer::{SmbClient, SmbError, WalkOptions};
use sync_engine::{BaseState, FileIssue, ItemKind, RelPath, Settings, SmbItem, SmbSnapshot};
use tokio_util::sync::CancellationToken;

use crate::convert::{smb_item, SmbRoot};

/// What the walk found.
#[derive(Debug, Default)]
pub struct SmbScan {
    /// Items by path (excluded and reparse-point folders included, not their content).
    pub snapshot: SmbSnapshot,
    /// Folders that could not be listed (their tracked content was carried over).
    pub unreadable: Vec<FileIssue>,
}

/// Why the walk could not produce a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// The sync root is missing or not a folder.
    #[error("the base path {0:?} does not exist or is not a folder")]
    RootNotFound(String),
    /// An SMB failure that leaves no safe snapshot (root unreadable, connection lost).
    #[error(transparent)]
    Smb(#[from] SmbError),
    /// Cancelled.
    #[error("cancelled")]
    Cancelled,
}

fn error_path(e: &SmbError) -> Option<&str> {
    match e {
        SmbError::PathNotFound { path, .. }
        | SmbError::AccessDenied { path, .. }
        | SmbError::SharingViolation { path, .. }
        | SmbError::NotADirectory { path, .. } => Some(path),
        _ => None,
    }
}

/// Walks the SMB tree under `root`.
pub async fn scan_smb(
    client: &SmbClient,
    root: &SmbRoot,
    settings: &Settings,
    base: &BaseState,
    cancel: &CancellationToken,
    mut on_entry: impl FnMut(u64),
) -> Result<SmbScan, ScanError> {
    match client.stat(root.as_str()).await {
        Ok(e) if e.is_dir => {}
        Ok(_) | Err(SmbError::PathNotFound { .. }) | Err(SmbError::NotADirectory { .. }) => {
            return Err(ScanError::RootNotFound(root.as_str().to_string()))
        }
        Err(e) => return Err(e.into()),
    }
    let pruned: Arc<Mutex<Vec<SmbItem>>> = Arc::default();
    let exclude = {
        let pruned = pruned.clone();
        let root = root.clone();
        let settings = settings.clone();
        Arc::new(move |e: &smb_layer::DirEntry| {
            let Some(rel) = root.rel(&e.path) else {
                return false;
            };
            let item = smb_item(rel, e);
            // Never descend into a reparse point (symlink, junction) nor an excluded folder;
            // keep the folder itself so the planner sees it (and reports or forgets it).
            if item.reparse || settings.filters.excludes_dir(&item, &settings) {
                pruned.lock().unwrap().push(item);
                return true;
            }
            false
        })
    };
    let opts = WalkOptions { exclude: Some(exclude), ..WalkOptions::default() };
    let mut walk = std::pin::pin!(client.walk(root.as_str(), opts));
    let mut scan = SmbScan::default();
    let mut seen = 0u64;
    loop {
        let next = tokio::select! {
            _ = cancel.cancelled() => return Err(ScanError::Cancelled),
            n = walk.next() => n,
        };
        let Some(r) = next else { break };
        match r {
            Ok(e) => {
                if let Some(rel) = root.rel(&e.path) {
                    scan.snapshot.items.insert(rel.clone(), smb_item(rel, &e));
                    seen += 1;
                    if seen % 256 == 0 {
                        on_entry(seen);
                    }
                }
            }
            Err(e) => {
                let Some(rel) = error_path(&e).and_then(|p| root.rel(p)) else {
                    // The root itself, or no path to protect: no safe snapshot.
                    return Err(e.into());
                };
                tracing::warn!(smb.path = %rel, error = %e, "folder not listed; its tracked content is kept as it was");
                for s in base.entries.values().filter(|s| s.path.is_inside(&rel)) {
                    scan.snapshot.items.entry(s.path.clone()).or_insert_with(|| carried(s));
                }
                scan.unreadable.push(FileIssue {
                    path: rel,
                    code: e.code().to_string(),
                    message: e.to_string(),
                    is_error: true,
                });
            }
        }
    }
    on_entry(seen);
    for item in pruned.lock().unwrap().drain(..) {
        scan.snapshot.items.insert(item.path.clone(), item);
    }
    Ok(scan)
}

/// An item as the last synced state saw it.
fn carried(s: &sync_engine::SyncedState) -> SmbItem {
    SmbItem {
        path: s.path.clone(),
        kind: s.kind,
        size: if s.kind == ItemKind::Dir { 0 } else { s.smb.size },
        last_write: s.smb.last_write,
        change_time: s.smb.change_time,
        file_id: s.smb.file_id,
        hidden: false,
        system: false,
        reparse: false,
    }
}

/// Whether `path` is `dir` or below it.
pub fn at_or_below(path: &RelPath, dir: &RelPath) -> bool {
    path.is_at_or_inside(dir)
}
