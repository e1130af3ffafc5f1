//! Our TCP transport for the `smb` library: TCP_NODELAY, one write per message, and a credit
//! observer.
//!
//! Why: the library's own TCP transport leaves Nagle on (each small request waits ~40 ms for
//! a delayed ACK), and the library drops the credits a server grants in interim
//! `STATUS_PENDING` responses. It cannot be fixed from outside (responses are signed), so the
//! transport *observes* the SMB2 headers going by and keeps [`CreditStats`]: the credits the
//! library can still use, and the credits lost in interim responses. The client uses them to
//! retire a connection before it starves (see `client.rs`).
//!
//! Must never alter a message: it only reads headers.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use smb::transport::{IoVec, SmbTransport, SmbTransportRead, SmbTransportWrite, TransportError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

const STATUS_PENDING: u32 = 0x0000_0103;
const SMB2_CANCEL: u16 = 0x000C;
const SMB2_READ: u16 = 0x0008;
const SMB2_WRITE: u16 = 0x0009;
const FLAG_ASYNC: u32 = 0x0000_0002;

/// Credit accounting seen on the wire, mirroring the library's own credit semaphore.
#[derive(Debug, Default)]
pub struct CreditStats {
    /// Credits the library may still spend (its semaphore): 1 + granted (final responses) -
    /// charged (requests).
    available: AtomicI64,
    /// Credits granted in interim STATUS_PENDING responses, which the library never uses.
    lost: AtomicU64,
    /// Requests sent whose final response has not arrived yet.
    outstanding: AtomicI64,
    /// Interim responses seen.
    interim: AtomicU64,
    /// Messages sent.
    sent: AtomicU64,
    /// Credits promised to read/write requests about to be sent (see [`CreditStats::try_reserve`]).
    reserved: AtomicI64,
    /// Message ids of requests that got an interim response and await their final one: their
    /// credits were granted (and lost) in the interim, so their final response brings none.
    gone_async: Mutex<HashSet<u64>>,
    /// The socket failed (reset, closed, any I/O error): nothing more will arrive on it.
    failed: AtomicBool,
}

impl CreditStats {
    fn new() -> Self {
        let s = CreditStats::default();
        s.available.store(1, Ordering::SeqCst);
        s
    }
    /// Whether the socket failed. The library may not fail the requests it has in flight
    /// when its receiver stops (they then wait for answers that cannot come), so callers
    /// watch this too.
    pub fn transport_failed(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }

    fn fail(&self, e: std::io::Error) -> TransportError {
        self.failed.store(true, Ordering::SeqCst);
        map_io(e)
    }

    /// Credits the library can spend right now.
    pub fn available(&self) -> i64 {
        self.available.load(Ordering::SeqCst)
    }
    /// Credits lost in interim responses so far.
    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::SeqCst)
    }
    /// Requests in flight.
    pub fn outstanding(&self) -> i64 {
        self.outstanding.load(Ordering::SeqCst)
    }
    /// Interim (STATUS_PENDING) responses seen.
    pub fn interim_responses(&self) -> u64 {
        self.interim.load(Ordering::SeqCst)
    }
    /// Messages sent.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::SeqCst)
    }

    /// Requests in flight whose final response can still grant credits (those that went async
    /// got theirs in the interim response, which the library drops).
    pub fn outstanding_sync(&self) -> i64 {
        self.outstanding() - self.gone_async.lock().map(|s| s.len() as i64).unwrap_or(0)
    }

    /// Reserves `charge` credits for a READ or WRITE that the caller is about to issue, if
    /// that many are free beyond `keep` (available minus already reserved minus `keep`). The
    /// reservation is consumed when a READ/WRITE goes out. Concurrent transfers therefore never
    /// queue inside the library for credits that might never come back, and the `keep` credits
    /// stay for the small requests (opens, closes, stats) that must still get through.
    pub fn try_reserve(&self, charge: i64, keep: i64) -> bool {
        let available = self.available();
        self.reserved
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |r| {
                (available - r - keep >= charge).then_some(r + charge)
            })
            .is_ok()
    }

    /// Credits reserved and not yet sent.
    pub fn reserved(&self) -> i64 {
        self.reserved.load(Ordering::SeqCst)
    }

    fn on_send(&self, first: &[u8]) {
        self.sent.fetch_add(1, Ordering::Relaxed);
        if first.len() < 64 || &first[0..4] != b"\xFESMB" {
            return;
        }
        let command = u16::from_le_bytes([first[12], first[13]]);
        if command == SMB2_CANCEL {
            return;
        }
        let charge = u16::from_le_bytes([first[6], first[7]]).max(1) as i64;
        if command == SMB2_READ || command == SMB2_WRITE {
            let _ = self.reserved.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |r| Some((r - charge).max(0)));
        }
        self.available.fetch_sub(charge, Ordering::SeqCst);
        self.outstanding.fetch_add(1, Ordering::SeqCst);
    }

    fn on_receive(&self, msg: &[u8]) {
        if msg.len() < 64 || &msg[0..4] != b"\xFESMB" {
            return;
        }
        let status = u32::from_le_bytes([msg[8], msg[9], msg[10], msg[11]]);
        let granted = u16::from_le_bytes([msg[14], msg[15]]) as i64;
        let flags = u32::from_le_bytes([msg[16], msg[17], msg[18], msg[19]]);
        let message_id = u64::from_le_bytes(msg[24..32].try_into().expect("8 bytes"));
        if message_id == u64::MAX {
            return; // unsolicited (oplock/lease break): not credit-bearing for the library
        }
        if status == STATUS_PENDING && flags & FLAG_ASYNC != 0 {
            self.interim.fetch_add(1, Ordering::Relaxed);
            self.lost.fetch_add(granted as u64, Ordering::SeqCst);
            if let Ok(mut set) = self.gone_async.lock() {
                set.insert(message_id);
            }
            return;
        }
        if flags & FLAG_ASYNC != 0 {
            if let Ok(mut set) = self.gone_async.lock() {
                set.remove(&message_id);
            }
        }
        self.available.fetch_add(granted, Ordering::SeqCst);
        self.outstanding.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A TCP transport with `TCP_NODELAY`, observing credits into a shared [`CreditStats`].
pub(crate) struct NodelayTcp {
    stream: Option<TcpStream>,
    stats: Arc<CreditStats>,
    connect_timeout: Duration,
    nodelay: bool,
}

impl NodelayTcp {
    pub(crate) fn new(connect_timeout: Duration, nodelay: bool) -> (Self, Arc<CreditStats>) {
        let stats = Arc::new(CreditStats::new());
        (NodelayTcp { stream: None, stats: stats.clone(), connect_timeout, nodelay }, stats)
    }

    /// Connects (bounded by the connect timeout) and sets TCP_NODELAY.
    pub(crate) async fn connect_to(&mut self, addr: SocketAddr) -> Result<(), TransportError> {
        let s = tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| TransportError::Timeout(self.connect_timeout))??;
        s.set_nodelay(self.nodelay)?;
        self.stream = Some(s);
        Ok(())
    }
}

struct Reader {
    r: OwnedReadHalf,
    stats: Arc<CreditStats>,
}

struct Writer {
    w: OwnedWriteHalf,
    stats: Arc<CreditStats>,
}

fn map_io(e: std::io::Error) -> TransportError {
    use std::io::ErrorKind::*;
    match e.kind() {
        UnexpectedEof | ConnectionAborted | ConnectionReset | BrokenPipe => TransportError::NotConnected,
        _ => TransportError::IoError(e),
    }
}

impl SmbTransport for NodelayTcp {
    fn connect<'a>(
        &'a mut self,
        _server_name: &'a str,
        address: SocketAddr,
    ) -> BoxFuture<'a, Result<(), TransportError>> {
        self.connect_to(address).boxed()
    }

    fn default_port(&self) -> u16 {
        445
    }

    fn split(self: Box<Self>) -> Result<(Box<dyn SmbTransportRead>, Box<dyn SmbTransportWrite>), TransportError> {
        let stream = self.stream.ok_or(TransportError::NotConnected)?;
        let (r, w) = stream.into_split();
        Ok((Box::new(Reader { r, stats: self.stats.clone() }), Box::new(Writer { w, stats: self.stats })))
    }

    fn remote_address(&self) -> Result<SocketAddr, TransportError> {
        Ok(self.stream.as_ref().ok_or(TransportError::NotConnected)?.peer_addr()?)
    }
}

// Before split() the library uses the unsplit transport for nothing but connect; these impls
// exist because the trait requires them.
impl SmbTransportRead for NodelayTcp {
    fn receive_exact<'a>(&'a mut self, out_buf: &'a mut [u8]) -> BoxFuture<'a, Result<(), TransportError>> {
        async move {
            let s = self.stream.as_mut().ok_or(TransportError::NotConnected)?;
            s.read_exact(out_buf).await.map_err(map_io)?;
            Ok(())
        }
        .boxed()
    }
}

impl SmbTransportWrite for NodelayTcp {
    fn send_raw<'a>(&'a mut self, buf: &'a [u8]) -> BoxFuture<'a, Result<(), TransportError>> {
        async move {
            let s = self.stream.as_mut().ok_or(TransportError::NotConnected)?;
            s.write_all(buf).await.map_err(map_io)?;
            Ok(())
        }
        .boxed()
    }
}

impl SmbTransportRead for Reader {
    fn receive_exact<'a>(&'a mut self, out_buf: &'a mut [u8]) -> BoxFuture<'a, Result<(), TransportError>> {
        async move {
            self.r.read_exact(out_buf).await.map_err(|e| self.stats.fail(e))?;
            Ok(())
        }
        .boxed()
    }

    fn receive<'a>(&'a mut self) -> BoxFuture<'a, Result<Vec<u8>, TransportError>> {
        async move {
            let mut header = [0u8; 4];
            self.r.read_exact(&mut header).await.map_err(|e| self.stats.fail(e))?;
            if header[0] != 0 {
                return Err(TransportError::InvalidMessage);
            }
            let len = u32::from_be_bytes([0, header[1], header[2], header[3]]) as usize;
            let mut data = vec![0u8; len];
            self.r.read_exact(&mut data).await.map_err(|e| self.stats.fail(e))?;
            self.stats.on_receive(&data);
            Ok(data)
        }
        .boxed()
    }
}

impl SmbTransportWrite for Writer {
    fn send_raw<'a>(&'a mut self, buf: &'a [u8]) -> BoxFuture<'a, Result<(), TransportError>> {
        async move {
            self.w.write_all(buf).await.map_err(|e| self.stats.fail(e))?;
            Ok(())
        }
        .boxed()
    }

    fn send<'a>(&'a mut self, data: &'a IoVec) -> BoxFuture<'a, Result<(), TransportError>> {
        async move {
            let total = data.total_size();
            if total > 0x00FF_FFFF {
                return Err(TransportError::InvalidMessage);
            }
            if let Some(first) = data.first() {
                self.stats.on_send(first);
            }
            let mut header = [0u8; 4];
            header[1..].copy_from_slice(&(total as u32).to_be_bytes()[1..]);
            // With TCP_NODELAY every write is a segment: coalesce small messages into one write,
            // and at least put the 4-byte frame header together with the SMB2 header.
            if total <= 64 * 1024 {
                let mut buf = Vec::with_capacity(total + 4);
                buf.extend_from_slice(&header);
                for b in data.iter() {
                    buf.extend_from_slice(b);
                }
                self.w.write_all(&buf).await.map_err(|e| self.stats.fail(e))?;
            } else {
                let mut iter = data.iter();
                let mut buf = Vec::with_capacity(4 + 128);
                buf.extend_from_slice(&header);
                if let Some(first) = iter.next() {
                    buf.extend_from_slice(first);
                }
                self.w.write_all(&buf).await.map_err(|e| self.stats.fail(e))?;
                for b in iter {
                    self.w.write_all(b).await.map_err(|e| self.stats.fail(e))?;
                }
            }
            Ok(())
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An SMB2 header: `command`, `credits` (charge on a request, granted on a response),
    /// `status`, `async` flag and message id.
    fn header(command: u16, credits: u16, status: u32, is_async: bool, id: u64) -> Vec<u8> {
        let mut h = vec![0u8; 64];
        h[0..4].copy_from_slice(b"\xFESMB");
        h[8..12].copy_from_slice(&status.to_le_bytes());
        h[12..14].copy_from_slice(&command.to_le_bytes());
        h[6..8].copy_from_slice(&credits.to_le_bytes()); // request: credit charge
        h[14..16].copy_from_slice(&credits.to_le_bytes()); // response: credits granted
        let flags: u32 = if is_async { FLAG_ASYNC | 1 } else { 1 };
        h[16..20].copy_from_slice(&flags.to_le_bytes());
        h[24..32].copy_from_slice(&id.to_le_bytes());
        h
    }

    #[test]
    fn credits_granted_in_interim_responses_are_counted_lost_and_their_request_brings_none() {
        let s = CreditStats::new();
        s.on_send(&header(0, 1, 0, false, 0));
        s.on_receive(&header(0, 101, 0, false, 0)); // a sync response granting 101
        assert_eq!((s.available(), s.outstanding()), (101, 0));
        assert!(s.try_reserve(64, 4));
        assert!(!s.try_reserve(64, 4), "only 37 left unreserved");
        s.on_send(&header(SMB2_READ, 64, 0, false, 1));
        assert_eq!((s.available(), s.reserved(), s.outstanding_sync()), (37, 0, 1));
        // The read goes async: its credits come (and are lost) in the interim response.
        s.on_receive(&header(SMB2_READ, 64, STATUS_PENDING, true, 1));
        assert_eq!((s.lost(), s.outstanding(), s.outstanding_sync()), (64, 1, 0));
        // Its final response grants nothing and leaves nothing outstanding.
        s.on_receive(&header(SMB2_READ, 0, 0, true, 1));
        assert_eq!((s.available(), s.outstanding(), s.outstanding_sync()), (37, 0, 0));
    }

    #[test]
    fn reads_never_reserve_the_credits_kept_for_small_requests() {
        let s = CreditStats::new();
        s.on_send(&header(0, 1, 0, false, 0));
        s.on_receive(&header(0, 68, 0, false, 0));
        assert_eq!(s.available(), 68);
        assert!(!s.try_reserve(64, 5), "68 - 5 kept < 64");
        assert!(s.try_reserve(64, 4));
    }
}
