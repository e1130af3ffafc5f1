//! The SMB half of the scan: walk the tree under `base_path` with the engine's filters pruning
//! excluded folders, into the engine's `SmbSnapshot`.
//!
//! A sub-folder that cannot be listed must not look empty (the planner would delete its
//! content in ScaiDrive): its tracked items are carried over from the last synced state as
//! unchanged, and the folder is reported. Memory holds the snapshot only (one entry per item).

use std::sync::{Arc, Mutex};

use futures::StreamExt;
use smb_layer::{SmbClient, SmbError, WalkOptions};
use sync_engine::{FileIssue, ItemKind, RelPath, Settings, SmbItem, SmbWalk, Tracked};
use tokio_util::sync::CancellationToken;

use crate::convert::{smb_item, SmbRoot};

/// What the walk found.
#[derive(Debug, Default)]
pub struct SmbScan {
    /// Items by path (excluded and reparse-point folders included, not their content), against
    /// the tracked states the scan was given.
    pub walk: SmbWalk,
    /// Folders that could not be listed (their tracked content was carried over).
    pub unreadable: Vec<FileIssue>,
    /// Names left alone because another name of the same folder is the same in Unicode NFC
    /// (`NAME_NORMALIZATION_CONFLICT`): one of the twins syncs, these are reported.
    pub twins: Vec<FileIssue>,
}

/// Code of a name left alone because a twin with the same NFC form syncs instead.
pub const NORMALIZATION_CONFLICT: &str = "NAME_NORMALIZATION_CONFLICT";

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

pub(crate) fn error_path(e: &SmbError) -> Option<&str> {
    match e {
        SmbError::PathNotFound { path, .. }
        | SmbError::AccessDenied { path, .. }
        | SmbError::SharingViolation { path, .. }
        | SmbError::NotADirectory { path, .. } => Some(path),
        _ => None,
    }
}

/// Fails unless the sync root exists and is a folder.
pub(crate) async fn check_root(client: &SmbClient, root: &SmbRoot) -> Result<(), ScanError> {
    match client.stat(root.as_str()).await {
        Ok(e) if e.is_dir => Ok(()),
        Ok(_) | Err(SmbError::PathNotFound { .. }) | Err(SmbError::NotADirectory { .. }) => {
            Err(ScanError::RootNotFound(root.as_str().to_string()))
        }
        Err(e) => Err(e.into()),
    }
}

/// Folders not walked into, with their server spelling: reparse points and excluded folders.
pub(crate) type Pruned = Arc<Mutex<Vec<(String, SmbItem)>>>;

/// Walk options that never descend into a reparse point (symlink, junction) nor an excluded
/// folder; such a folder itself goes to `pruned`, so the planner sees it (and reports or
/// forgets it).
pub(crate) fn walk_options(root: &SmbRoot, settings: &Settings, pruned: &Pruned) -> WalkOptions {
    let (pruned, root, settings) = (pruned.clone(), root.clone(), settings.clone());
    let exclude = Arc::new(move |e: &smb_layer::DirEntry| {
        let Some((rel, raw)) = root.split(&e.path) else {
            return false;
        };
        let item = smb_item(rel, e);
        if item.reparse || settings.filters.excludes_dir(&item, &settings) {
            pruned.lock().unwrap().push((raw, item));
            return true;
        }
        false
    });
    WalkOptions { exclude: Some(exclude), ..WalkOptions::default() }
}

/// Walks the SMB tree under `root`.
pub async fn scan_smb(
    client: &SmbClient,
    root: &SmbRoot,
    settings: &Settings,
    base: &Tracked,
    cancel: &CancellationToken,
    mut on_entry: impl FnMut(u64),
) -> Result<SmbScan, ScanError> {
    check_root(client, root).await?;
    let pruned: Pruned = Arc::default();
    let opts = walk_options(root, settings, &pruned);
    let mut walk = std::pin::pin!(client.walk(root.as_str(), opts));
    let mut scan = SmbScan::new(base);
    // Entries whose name on the server is not in NFC (e.g. NFD, as macOS writes): they are
    // placed once the walk is over, so that twins are resolved the same way every run.
    let mut respelled: Vec<(String, SmbItem)> = Vec::new();
    let mut seen = 0u64;
    loop {
        let next = tokio::select! {
            _ = cancel.cancelled() => return Err(ScanError::Cancelled),
            n = walk.next() => n,
        };
        let Some(r) = next else { break };
        match r {
            Ok(e) => {
                if let Some((rel, raw)) = root.split(&e.path) {
                    let item = smb_item(rel, &e);
                    if raw == item.path.as_str() {
                        scan.walk.insert(base, item);
                    } else {
                        respelled.push((raw, item));
                    }
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
                keep_unlisted(&mut scan, base, rel, &e);
            }
        }
    }
    on_entry(seen);
    for (raw, item) in pruned.lock().unwrap().drain(..) {
        if raw == item.path.as_str() {
            scan.walk.insert(base, item);
        } else {
            respelled.push((raw, item));
        }
    }
    place_respelled(&mut scan, base, root, respelled);
    Ok(scan)
}

impl SmbScan {
    /// Nothing found yet, against the tracked states `base`.
    pub fn new(base: &Tracked) -> SmbScan {
        SmbScan { walk: SmbWalk::new(base), unreadable: Vec::new(), twins: Vec::new() }
    }
}

/// Places the entries whose server spelling is not NFC. Two names of one folder may differ
/// only in normalisation (`café` written precomposed and decomposed): both are the same path
/// for the planner and in ScaiDrive, so exactly one of them syncs — the NFC spelling if there
/// is one, else the smallest spelling byte-wise (the same one every run) — and the others are
/// left alone on the file server, with everything below them, and reported. Without this the
/// last one listed would win, and SMB operations could reach the other twin.
pub(crate) fn place_respelled(
    scan: &mut SmbScan,
    base: &Tracked,
    root: &SmbRoot,
    mut respelled: Vec<(String, SmbItem)>,
) {
    // Byte order puts a folder before everything below it, so its subtree is known to be left
    // alone before its entries come.
    respelled.sort_by(|a, b| a.0.cmp(&b.0));
    let mut left_alone: Vec<String> = Vec::new();
    for (raw, item) in respelled {
        if left_alone.iter().any(|l| raw.strip_prefix(l.as_str()).is_some_and(|rest| rest.starts_with('/'))) {
            continue;
        }
        match scan.walk.contains(base, item.path.as_str()) {
            false => {
                root.set_spelling(&item.path, Some(&raw));
                scan.walk.insert(base, item);
            }
            true => {
                let kept = root.abs(&item.path);
                tracing::warn!(smb.path = %raw, kept = %kept, "name differs from another only in Unicode normalisation; left alone");
                scan.twins.push(FileIssue {
                    path: item.path.clone(),
                    code: NORMALIZATION_CONFLICT.to_string(),
                    message: format!(
                        "{raw:?} differs from {kept:?} only in Unicode normalisation: both are the same name in ScaiDrive, \
                         so {kept:?} syncs and {raw:?} (with anything inside it) is left alone on the file server; rename one"
                    ),
                    is_error: false,
                });
                if item.kind == ItemKind::Dir {
                    left_alone.push(raw);
                }
            }
        }
    }
}

/// A folder that could not be listed: its tracked content is carried over as it was (it must
/// not look deleted), and the folder is reported.
pub(crate) fn keep_unlisted(scan: &mut SmbScan, base: &Tracked, rel: RelPath, e: &SmbError) {
    tracing::warn!(smb.path = %rel, error = %e, "folder not listed; its tracked content is kept as it was");
    for i in base.inside(rel.as_str()) {
        if !scan.walk.has(base, i) {
            scan.walk.carry(base, i);
        }
    }
    scan.unreadable.push(FileIssue { path: rel, code: e.code().to_string(), message: e.to_string(), is_error: true });
}

/// Whether `path` is `dir` or below it.
pub fn at_or_below(path: &RelPath, dir: &RelPath) -> bool {
    path.is_at_or_inside(dir)
}
