//! Streamed file content: [`SmbClient::read_stream`] and [`SmbClient::write_stream`].
//!
//! Both keep `limits.io_depth` requests of at most `min(limits.io_chunk, server max)` bytes in
//! flight, so memory is bounded by depth × chunk whatever the file size. Workarounds for the
//! library: buffers are split at the server's maximum read/write size here (the library sends
//! whatever it is given); every request first waits for credits (see `transport.rs`) and, when
//! the connection wears out on credits lost to interim responses, the transfer reopens the file
//! on a fresh connection and carries on at the same offset.
//!
//! Must never hold a whole file in memory, or reuse a handle's cached size (each transfer
//! opens its own handle and asks the server).

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::stream::{FuturesUnordered, StreamExt};
use futures::Stream;
use smb::{CreateDisposition, CreateOptions, File, Resource};
use tokio::io::AsyncRead;
use tokio::sync::Mutex;
use tracing::{debug, info};

use crate::client::{am, Conn, SmbClient};
use crate::error::{classify, classify_io, Result, SmbError};
use crate::ops::entry_of_all;
use crate::path::normalize;
use crate::types::DirEntry;

/// Credits a request of `len` payload bytes costs (one per 64 KiB).
fn charge(len: usize) -> i64 {
    1 + (len.max(1) as i64 - 1) / 65536
}

/// How often one request may move to a fresh connection before giving up.
const MAX_MOVES: u32 = 8;

/// A handle that moves to a fresh connection when its connection wears out.
struct Handle {
    client: SmbClient,
    path: String,
    write: bool,
    cur: Mutex<(Arc<Conn>, Arc<File>)>,
}

impl Handle {
    async fn open(client: &SmbClient, conn: &Conn, path: &str, write: bool, create: bool) -> Result<File> {
        let (disposition, access) = if write {
            (
                if create { CreateDisposition::OverwriteIf } else { CreateDisposition::Open },
                am::READ_DATA | am::WRITE_DATA | am::READ_ATTRIBUTES | am::WRITE_ATTRIBUTES,
            )
        } else {
            (CreateDisposition::Open, am::READ_DATA | am::READ_ATTRIBUTES)
        };
        let fut = SmbClient::open_on(
            conn,
            path,
            disposition,
            CreateOptions::new().with_non_directory_file(true),
            access,
            smb::FileAttributes::new(),
        );
        let r = conn.guard(client.inner.cfg.timeouts.request, 1, || format!("opening {path:?}"), fut).await?;
        match r {
            Resource::File(f) => Ok(f),
            _ => Err(SmbError::Other { detail: format!("{path:?} is not a file"), status: None }),
        }
    }

    /// The (connection, file) to use for the next request, moving to a fresh connection first
    /// if the current one should not take new requests. The handle on the old connection is
    /// let go without a close when that connection is dry (the close could never be sent);
    /// the server closes it with the connection.
    async fn current(&self) -> Result<(Arc<Conn>, Arc<File>)> {
        let mut cur = self.cur.lock().await;
        if !cur.0.usable() {
            let old = cur.0.clone();
            let conn = self.client.conn().await?;
            let file = Handle::open(&self.client, &conn, &self.path, self.write, false).await?;
            conn.count_handle(1);
            info!(smb.path = %self.path, from = old.id, to = conn.id, "transfer moved to a fresh connection");
            *cur = (conn, Arc::new(file));
            old.count_handle(-1);
        }
        Ok(cur.clone())
    }

    /// Closes the file. On a connection that can no longer send anything (dry or broken), the
    /// connection is shut instead, which closes the file on the server too: waiting for a
    /// credit that will not come would hang, and a handle left open would keep the file open.
    async fn close(&self) -> Result<()> {
        let cur = self.cur.lock().await;
        let (conn, file) = (&cur.0, &cur.1);
        conn.count_handle(-1);
        if conn.dry(1) {
            debug!(smb.path = %self.path, smb.conn = conn.id, "no credit left to close the file; shutting its connection");
            conn.shut().await;
            return Ok(());
        }
        let t = self.client.inner.cfg.timeouts.request;
        let r = conn.guard(t, 1, || format!("close of {:?}", self.path), async {
            file.close().await.map_err(|e| classify(e, &self.path))
        });
        match r.await {
            Ok(()) => Ok(()),
            Err(e) if e.is_connection_lost() => {
                // The handle may still be open on the server: take the connection down with it.
                conn.shut().await;
                Err(e)
            }
            Err(e) => Err(e),
        }
    }
}

fn lost_or(conn: &Conn, e: SmbError) -> SmbError {
    if e.is_connection_lost() {
        conn.mark_broken();
    }
    e
}

async fn read_chunk(h: Arc<Handle>, offset: u64, len: usize, timeout: Duration) -> Result<Bytes> {
    let mut buf = vec![0u8; len];
    let mut filled = 0;
    let mut moves = 0;
    while filled < len {
        let (conn, file) = h.current().await?;
        let want = len - filled;
        if !conn.wait_credits(charge(want), timeout).await? {
            moves += 1;
            if moves > MAX_MOVES {
                return Err(SmbError::lost("SMB credits keep running out"));
            }
            continue; // current() moves to a fresh connection
        }
        let read = async { file.read_block(&mut buf[filled..], offset + filled as u64, None, false).await };
        let r = conn.guard(timeout, charge(want), || format!("read of {:?}", h.path), async {
            read.await.map_err(|e| classify_io(e, &h.path))
        });
        let n = match r.await {
            Ok(n) => n,
            Err(e) if moves < MAX_MOVES && conn.retry_elsewhere(&e) => {
                // Reading the same range again, on a fresh connection, is harmless.
                info!(smb.path = %h.path, smb.conn = conn.id, error = %e, "read moves to a fresh connection");
                conn.mark_broken();
                moves += 1;
                continue;
            }
            Err(e) => return Err(lost_or(&conn, e)),
        };
        if n == 0 {
            break; // end of file (it shrank since we asked its size)
        }
        filled += n;
    }
    buf.truncate(filled);
    Ok(Bytes::from(buf))
}

async fn write_chunk(h: Arc<Handle>, offset: u64, data: Bytes, timeout: Duration) -> Result<usize> {
    let mut done = 0;
    let mut moves = 0;
    while done < data.len() {
        let (conn, file) = h.current().await?;
        if !conn.wait_credits(charge(data.len() - done), timeout).await? {
            moves += 1;
            if moves > MAX_MOVES {
                return Err(SmbError::lost("SMB credits keep running out"));
            }
            continue; // current() moves to a fresh connection
        }
        let part: Arc<[u8]> = Arc::from(&data[done..]);
        let need = charge(part.len());
        let r = conn.guard(timeout, need, || format!("write to {:?}", h.path), async {
            file.write_block_zc(part, offset + done as u64, None).await.map_err(|e| classify_io(e, &h.path))
        });
        let n = match r.await {
            Ok(n) => n,
            Err(e) if moves < MAX_MOVES && conn.retry_elsewhere(&e) => {
                // Writing the same bytes at the same offset again is harmless.
                info!(smb.path = %h.path, smb.conn = conn.id, error = %e, "write moves to a fresh connection");
                conn.mark_broken();
                moves += 1;
                continue;
            }
            Err(e) => return Err(lost_or(&conn, e)),
        };
        if n == 0 {
            return Err(SmbError::other(format!("server wrote 0 bytes to {:?}", h.path)));
        }
        done += n;
    }
    Ok(done)
}

/// Whether the file behind `h` still has the size, times and id it had at open (asked on the
/// handle, so a rename meanwhile does not matter; a write by anyone does).
async fn still_same(h: &Handle, at_open: &DirEntry, timeout: Duration) -> Result<()> {
    // A fresh stat by path once our handle is closed, not a query on that handle: Samba answers
    // with the write time it recorded when the file was opened for as long as an open exists,
    // so a file rewritten in place on the server's disk looked unchanged (same size, new
    // content and times, reported as at open).
    let now = match tokio::time::timeout(timeout, h.client.stat(&h.path)).await {
        Ok(r) => r?,
        Err(_) => return Err(SmbError::lost(format!("stat of {:?} timed out", h.path))),
    };
    let same = now.size == at_open.size
        && now.last_write_time == at_open.last_write_time
        && now.change_time == at_open.change_time
        && now.file_id == at_open.file_id;
    if same {
        Ok(())
    } else {
        debug!(smb.path = %h.path, before = ?at_open, after = ?now, "file changed while being read");
        Err(SmbError::ChangedWhileReading { path: h.path.clone() })
    }
}

impl SmbClient {
    fn chunk_size(&self, server_max: u32) -> usize {
        self.inner.cfg.limits.io_chunk.min(server_max).max(4096) as usize
    }

    /// Opens a handle and asks the server about the file on it (one FileAllInformation query:
    /// size, times, attributes, file id).
    async fn open_handle(&self, path: &str, write: bool) -> Result<(Arc<Handle>, DirEntry)> {
        let path = normalize(path);
        let client = self.clone();
        let p = path.clone();
        let (conn, file, entry) = self
            .run(&path, |conn| async move {
                let file = Handle::open(&client, &conn, &p, write, write).await?;
                let info: smb::FileAllInformation = file.query_info().await.map_err(|e| classify(e, &p))?;
                Ok((conn, file, entry_of_all(&p, &info)))
            })
            .await?;
        conn.count_handle(1);
        let h = Handle { client: self.clone(), path, write, cur: Mutex::new((conn, Arc::new(file))) };
        Ok((Arc::new(h), entry))
    }

    /// Streams a file's content as `Bytes` chunks in order, with several reads in flight.
    /// The size is taken when the file is opened; the stream ends after the first error.
    pub async fn read_stream(&self, path: &str) -> Result<impl Stream<Item = Result<Bytes>> + Send + 'static> {
        let (h, entry) = self.retrying(|| self.open_handle(path, false)).await?;
        Ok(self.content(h, entry, false).await)
    }

    /// Opens a file for one consistent read: its metadata as seen on the open handle, and its
    /// content. After the last byte, the stream asks the server about the file again on the same
    /// handle; if its size, last-write time, change time or file id differ from those at open,
    /// the stream ends with [`SmbError::ChangedWhileReading`] instead of ending cleanly, so a
    /// consumer that commits only on a clean end never commits content that may mix old and
    /// new bytes. That is 1 CREATE + 2 QUERY_INFO + the READs + 1 CLOSE for the whole check,
    /// instead of a separate stat (open, query, close) before and after.
    pub async fn read_checked(
        &self,
        path: &str,
    ) -> Result<(DirEntry, impl Stream<Item = Result<Bytes>> + Send + 'static)> {
        let (h, entry) = self.retrying(|| self.open_handle(path, false)).await?;
        if entry.is_dir {
            let _ = h.close().await;
            return Err(SmbError::other(format!("{path:?} is a directory")));
        }
        Ok((entry.clone(), self.content(h, entry, true).await))
    }

    async fn content(
        &self,
        h: Arc<Handle>,
        entry: DirEntry,
        check_at_end: bool,
    ) -> impl Stream<Item = Result<Bytes>> + Send + 'static {
        let size = entry.size;
        let chunk = self.chunk_size(h.cur.lock().await.0.max_read) as u64;
        let depth = self.inner.cfg.limits.io_depth.max(1);
        let timeout = self.inner.cfg.timeouts.request;
        debug!(smb.path = %h.path, size, chunk, depth, "read stream");
        let offsets = (0..size.div_ceil(chunk)).map(move |i| i * chunk);
        let hh = h.clone();
        let stream = futures::stream::iter(offsets)
            .map(move |off| {
                let len = chunk.min(size - off) as usize;
                read_chunk(hh.clone(), off, len, timeout)
            })
            .buffered(depth)
            // Stop after the first error; close the handle when done.
            .scan(false, |failed, r| {
                if *failed {
                    return futures::future::ready(None);
                }
                *failed = r.is_err();
                futures::future::ready(Some(r))
            })
            .filter(|r| futures::future::ready(!matches!(r, Ok(b) if b.is_empty())));
        // After the content (or its first error): the check, then the close. An empty chunk
        // stands for "nothing to report" and is filtered out.
        let ended = futures::stream::once(async move {
            // Closed first: while any open of the file exists, Samba reports the write time it
            // recorded at open, so only a stat after our close sees an in-place rewrite.
            let _ = h.close().await;
            let checked = if check_at_end { still_same(&h, &entry, timeout).await } else { Ok(()) };
            checked.map(|()| Bytes::new())
        });
        stream
            .chain(ended)
            .scan(false, |failed, r| {
                if *failed {
                    return futures::future::ready(None);
                }
                *failed = r.is_err();
                futures::future::ready(Some(r))
            })
            .filter(|r| futures::future::ready(!matches!(r, Ok(b) if b.is_empty())))
    }

    /// Reads a whole file into memory (for small files and tests).
    ///
    /// (Unchecked: see [`read_checked`](Self::read_checked) for a read that detects writes.)
    pub async fn read_to_vec(&self, path: &str) -> Result<Vec<u8>> {
        let mut s = std::pin::pin!(self.read_stream(path).await?);
        let mut out = Vec::new();
        while let Some(b) = s.next().await {
            out.extend_from_slice(&b?);
        }
        Ok(out)
    }

    /// Creates or overwrites `path` with the content of `src`, with several writes in flight.
    /// Returns the number of bytes written. An error of `src` aborts the upload (the file is
    /// left partially written: write to a temporary name and [`rename`](Self::rename) for
    /// atomic replacement).
    pub async fn write_stream<S, B, E>(&self, path: &str, src: S) -> Result<u64>
    where
        S: Stream<Item = std::result::Result<B, E>> + Send,
        B: Into<Bytes>,
        E: std::fmt::Display,
    {
        let (h, _entry) = self.retrying(|| self.open_handle(path, true)).await?;
        let chunk = self.chunk_size(h.cur.lock().await.0.max_write);
        let depth = self.inner.cfg.limits.io_depth.max(1);
        let timeout = self.inner.cfg.timeouts.request;
        let mut src = std::pin::pin!(src);
        let mut pending = BytesMut::new();
        let mut offset = 0u64;
        let mut in_flight = FuturesUnordered::new();
        let mut source_done = false;
        let result: Result<()> = async {
            loop {
                // Dispatch full chunks (or the tail once the source is done).
                while in_flight.len() < depth && (pending.len() >= chunk || (source_done && !pending.is_empty())) {
                    let n = pending.len().min(chunk);
                    let data = pending.split_to(n).freeze();
                    in_flight.push(write_chunk(h.clone(), offset, data, timeout));
                    offset += n as u64;
                }
                if source_done && pending.is_empty() {
                    while let Some(r) = in_flight.next().await {
                        r?;
                    }
                    return Ok(());
                }
                if in_flight.len() >= depth || (source_done && !pending.is_empty()) {
                    if let Some(r) = in_flight.next().await {
                        r?;
                    }
                    continue;
                }
                // Room for more: read from the source (and reap finished writes meanwhile).
                tokio::select! {
                    biased;
                    Some(r) = in_flight.next(), if !in_flight.is_empty() => { r?; }
                    item = src.next() => match item {
                        Some(Ok(b)) => pending.extend_from_slice(&b.into()),
                        Some(Err(e)) => return Err(SmbError::other(format!("reading the upload source failed: {e}"))),
                        None => source_done = true,
                    },
                }
            }
        }
        .await;
        drop(in_flight);
        let closed = h.close().await;
        result?;
        closed?;
        debug!(smb.path = %h.path, bytes = offset, "write stream done");
        Ok(offset)
    }

    /// Creates or overwrites `path` with everything `reader` yields.
    pub async fn write_from_reader<R: AsyncRead + Send>(&self, path: &str, reader: R) -> Result<u64> {
        let cap = self.inner.cfg.limits.io_chunk.max(4096) as usize;
        self.write_stream(path, tokio_util::io::ReaderStream::with_capacity(reader, cap)).await
    }

    /// Creates or overwrites `path` with `data` (for small files and tests).
    pub async fn write_all(&self, path: &str, data: impl Into<Bytes>) -> Result<u64> {
        let data: Bytes = data.into();
        let src = futures::stream::iter([Ok::<Bytes, std::convert::Infallible>(data)]);
        self.write_stream(path, src).await
    }
}
