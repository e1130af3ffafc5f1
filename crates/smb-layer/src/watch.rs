//! Change notification: [`SmbClient::watch`].
//!
//! A watch runs on its own connection: change-notify requests stay pending on the server
//! (their interim responses cost credits, see `transport.rs`), and a watch must not be torn
//! down when the shared connection is recycled. Must never be the only source of truth: a
//! [`ChangeKind::Overflow`] event, or the stream ending, means "rescan".

use std::sync::Arc;

use futures::{Stream, StreamExt};
use smb::{Directory, NotifyAction, NotifyFilter, Resource};
use tracing::debug;

use crate::client::SmbClient;
use crate::error::{classify, Result, SmbError};
use crate::path::{join, normalize};
use crate::types::{ChangeEvent, ChangeKind};

const STATUS_NOTIFY_ENUM_DIR: u32 = 0x0000_010C;

fn kind_of(a: &NotifyAction) -> ChangeKind {
    match a {
        NotifyAction::Added => ChangeKind::Added,
        NotifyAction::Removed => ChangeKind::Removed,
        NotifyAction::Modified => ChangeKind::Modified,
        NotifyAction::RenamedOldName => ChangeKind::RenamedFrom,
        NotifyAction::RenamedNewName => ChangeKind::RenamedTo,
        _ => ChangeKind::Other,
    }
}

impl SmbClient {
    /// Watches `path` (a directory; `recursive` includes subdirectories) and yields changes.
    ///
    /// The stream ends with an `Err` when the watch breaks (connection lost, server cleanup);
    /// re-subscribe and rescan then. Dropping the stream cancels the watch.
    pub async fn watch(
        &self,
        path: &str,
        recursive: bool,
    ) -> Result<impl Stream<Item = Result<ChangeEvent>> + Send + 'static> {
        let path = normalize(path);
        let conn = self.dedicated_conn().await?;
        let r = tokio::time::timeout(self.inner.cfg.timeouts.request, SmbClient::open_dir_on(&conn, &path))
            .await
            .map_err(|_| SmbError::lost(format!("opening {path:?} timed out")))??;
        let dir = match r {
            Resource::Directory(d) => Arc::new(d),
            _ => return Err(SmbError::NotADirectory { path, status: None }),
        };
        let filter = NotifyFilter::new()
            .with_file_name(true)
            .with_dir_name(true)
            .with_attributes(true)
            .with_size(true)
            .with_last_write(true)
            .with_creation(true)
            .with_security(true);
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<ChangeEvent>>(1024);
        let base = path.clone();
        tokio::spawn(async move {
            let _conn = conn; // keeps the dedicated connection alive while watching
            let mut s = match Directory::watch_stream(&dir, filter, recursive) {
                Ok(s) => s,
                Err(e) => {
                    let _ = tx.send(Err(classify(e, &base))).await;
                    return;
                }
            };
            loop {
                tokio::select! {
                    _ = tx.closed() => break,
                    item = s.next() => {
                        let ev = match item {
                            None => break,
                            Some(Ok(info)) => Ok(ChangeEvent {
                                kind: kind_of(&info.action),
                                path: join(&base, &info.file_name.to_string().replace('\\', "/")),
                            }),
                            Some(Err(e)) => match e {
                                smb::Error::UnexpectedMessageStatus(STATUS_NOTIFY_ENUM_DIR)
                                | smb::Error::ReceivedErrorMessage(STATUS_NOTIFY_ENUM_DIR, _) => {
                                    Ok(ChangeEvent { kind: ChangeKind::Overflow, path: String::new() })
                                }
                                other => Err(classify(other, &base)),
                            },
                        };
                        let stop = ev.is_err();
                        if tx.send(ev).await.is_err() || stop {
                            break;
                        }
                    }
                }
            }
            debug!(smb.path = %base, "watch ended");
        });
        Ok(futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) }))
    }
}
