//! Directory listings ([`SmbClient::list_dir`]) and the recursive walk ([`SmbClient::walk`]).
//!
//! Workaround: the library's listing stream hands pages over with a `Notify` and can lose the
//! wake-up when producer and consumer run on different worker threads; the listing then never
//! ends. On a current-thread runtime the producer cannot be pre-empted between its last send
//! and its wait, so every listing runs on one dedicated current-thread runtime (its own
//! thread), and is still bounded by timeouts (an idle page and a whole listing).
//!
//! Must never buffer file contents or more than one directory's entries per running listing.

use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use futures::Stream;
use smb::{Directory, FileIdBothDirectoryInformation, Resource};
use tracing::{debug, warn};

use crate::client::SmbClient;
use crate::error::{classify, Result, SmbError};
use crate::ops::attrs_from_smb;
use crate::path::{join, normalize};
use crate::types::{DirEntry, FileTime};

fn listing_runtime() -> &'static tokio::runtime::Handle {
    static RT: OnceLock<tokio::runtime::Handle> = OnceLock::new();
    RT.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("smb-listing".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("building the SMB listing runtime");
                tx.send(rt.handle().clone()).expect("handing over the listing runtime");
                rt.block_on(std::future::pending::<()>());
            })
            .expect("spawning the SMB listing thread");
        rx.recv().expect("listing runtime handle")
    })
}

/// A predicate deciding which directories a walk skips (neither yielded nor descended into).
pub type ExcludeFn = Arc<dyn Fn(&DirEntry) -> bool + Send + Sync>;

/// Options for [`SmbClient::walk`].
#[derive(Clone)]
pub struct WalkOptions {
    /// Directory listings in flight at once (default 8).
    pub concurrency: usize,
    /// Entries buffered between the walk and its consumer (default 1024).
    pub buffer: usize,
    /// Directories for which this returns true are skipped (not yielded, not descended).
    pub exclude: Option<ExcludeFn>,
}

impl Default for WalkOptions {
    fn default() -> Self {
        WalkOptions { concurrency: 8, buffer: 1024, exclude: None }
    }
}

impl std::fmt::Debug for WalkOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WalkOptions")
            .field("concurrency", &self.concurrency)
            .field("buffer", &self.buffer)
            .field("exclude", &self.exclude.is_some())
            .finish()
    }
}

fn entry_from(dir: &str, i: &FileIdBothDirectoryInformation) -> DirEntry {
    let name = i.file_name.to_string();
    let attributes = attrs_from_smb(i.file_attributes);
    DirEntry {
        path: join(dir, &name),
        name,
        is_dir: attributes.is_directory(),
        size: if attributes.is_directory() { 0 } else { i.end_of_file },
        file_id: i.file_id,
        creation_time: FileTime(*i.creation_time),
        last_write_time: FileTime(*i.last_write_time),
        last_access_time: FileTime(*i.last_access_time),
        change_time: FileTime(*i.change_time),
        attributes,
    }
}

/// Drains one listing on the current (listing) runtime, bounded per page.
async fn drain(dir: Arc<Directory>, path: String, idle: Duration, buffer: u32) -> Result<Vec<DirEntry>> {
    let mut stream = Directory::query_with_options::<FileIdBothDirectoryInformation>(&dir, "*", buffer)
        .await
        .map_err(|e| classify(e, &path))?;
    let mut out = Vec::new();
    loop {
        match tokio::time::timeout(idle, stream.next()).await {
            Ok(Some(Ok(i))) => {
                let name = i.file_name.to_string();
                if name != "." && name != ".." {
                    out.push(entry_from(&path, &i));
                }
            }
            Ok(Some(Err(e))) => return Err(classify(e, &path)),
            Ok(None) => return Ok(out),
            Err(_) => {
                return Err(SmbError::ConnectionLost {
                    detail: format!("listing of {path:?} stalled for {idle:?}"),
                    status: None,
                })
            }
        }
    }
}

impl SmbClient {
    /// Lists one directory (without `.` and `..`), with file IDs, sizes, times and attributes.
    pub async fn list_dir(&self, path: &str) -> Result<Vec<DirEntry>> {
        let start = std::time::Instant::now();
        let res = self.retrying(|| self.list_dir_once(path)).await;
        crate::client::record("list_dir", start, res.as_ref().err());
        res
    }

    async fn list_dir_once(&self, path: &str) -> Result<Vec<DirEntry>> {
        let path = normalize(path);
        let idle = self.inner.cfg.timeouts.request;
        let whole = self.inner.cfg.timeouts.list_dir;
        let _permit = self.inner.ops.acquire().await.map_err(|_| SmbError::other("client closed"))?;
        let conn = self.conn().await?;
        let res = async {
            let open = SmbClient::open_dir_on(&conn, &path);
            let r = conn.guard(idle, 1, || format!("opening {path:?}"), open).await?;
            let dir = match r {
                Resource::Directory(d) => Arc::new(d),
                _ => return Err(SmbError::NotADirectory { path: path.clone(), status: None }),
            };
            let buffer = conn.max_transact.clamp(4096, 256 * 1024);
            let task = listing_runtime().spawn(drain(dir.clone(), path.clone(), idle, buffer));
            let task = async {
                task.await.unwrap_or_else(|join| Err(SmbError::other(format!("listing task failed: {join}"))))
            };
            let entries = conn.guard(whole, 1, || format!("listing of {path:?}"), task).await;
            // Close in the background: the listing is what matters.
            let closer = dir.clone();
            tokio::spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(10), closer.handle.close()).await;
            });
            entries
        }
        .await;
        if let Err(e) = &res {
            if e.is_connection_lost() {
                warn!(smb.conn = conn.id, smb.path = %path, error = %e, "listing failed; connection retired");
                conn.mark_broken();
            }
        }
        debug!(smb.path = %path, entries = res.as_ref().map(|v| v.len()).unwrap_or(0), "listed directory");
        res
    }

    /// Walks the tree under `root` (not including `root` itself), yielding every entry.
    ///
    /// Listings run `concurrency` at a time; memory holds the queue of directories still to
    /// list plus `buffer` entries. A directory that fails to list yields one `Err` and the walk
    /// goes on with the others. Dropping the stream stops the walk. Must be called inside a
    /// Tokio runtime (the walk runs as a spawned task).
    pub fn walk(&self, root: &str, opts: WalkOptions) -> impl Stream<Item = Result<DirEntry>> + Send + 'static {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<DirEntry>>(opts.buffer.max(1));
        let client = self.clone();
        let root = normalize(root);
        tokio::spawn(async move {
            let mut pending: VecDeque<String> = VecDeque::from([root]);
            let mut running = FuturesUnordered::new();
            loop {
                while running.len() < opts.concurrency.max(1) {
                    let Some(dir) = pending.pop_front() else { break };
                    let c = client.clone();
                    running.push(async move {
                        let r = c.list_dir(&dir).await;
                        (dir, r)
                    });
                }
                let Some((dir, res)) = running.next().await else { break };
                match res {
                    Ok(entries) => {
                        for e in entries {
                            if e.is_dir {
                                if opts.exclude.as_ref().is_some_and(|f| f(&e)) {
                                    continue;
                                }
                                pending.push_back(e.path.clone());
                            }
                            if tx.send(Ok(e)).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(e) => {
                        debug!(smb.path = %dir, error = %e, "walk: listing failed");
                        if tx.send(Err(e)).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) })
    }
}
