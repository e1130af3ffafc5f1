//! [`SmbClient`]: a small pool of connections to one share, rebuilt on demand.
//!
//! The client owns up to `Limits::connections` live SMB connections (TCP + session + tree),
//! built lazily. Each operation takes the next slot in turn (a streamed transfer keeps the
//! connection it opened its file on): Samba serves each connection from one single-threaded
//! `smbd`, so spreading work over a few connections lets the server use more than one core.
//! A connection that broke (server restart, timeout) or that is wearing out on lost credits
//! (see `transport.rs`) is replaced by a fresh one in its slot on the next operation there,
//! while operations still running on the old one finish there.
//!
//! Must never: hang (every library call is under a timeout), log or print the password, or let
//! a library type escape the crate.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use smb::{
    Connection, ConnectionConfig, CreateDisposition, CreateOptions, FileAccessMask, FileCreateArgs, Guid, Resource,
    Session, Tree, UncPath,
};
use tokio::sync::{Mutex, Semaphore};
use tracing::{debug, info, warn};

use crate::config::SmbConfig;
use crate::error::{classify, classify_connect, Result, SmbError};
use crate::path::to_smb_path;
use crate::transport::{CreditStats, NodelayTcp};

/// Raw access-mask bits used when opening.
pub(crate) mod am {
    pub const READ_DATA: u32 = 0x0000_0001; // also LIST_DIRECTORY
    pub const WRITE_DATA: u32 = 0x0000_0002;
    pub const APPEND_DATA: u32 = 0x0000_0004;
    pub const READ_EA: u32 = 0x0000_0008;
    pub const WRITE_EA: u32 = 0x0000_0010;
    pub const READ_ATTRIBUTES: u32 = 0x0000_0080;
    pub const WRITE_ATTRIBUTES: u32 = 0x0000_0100;
    pub const DELETE: u32 = 0x0001_0000;
    pub const READ_CONTROL: u32 = 0x0002_0000;
    pub const WRITE_DAC: u32 = 0x0004_0000;
    pub const WRITE_OWNER: u32 = 0x0008_0000;
    pub const SYNCHRONIZE: u32 = 0x0010_0000;
}

/// A connection is retired (no new operations) once this many credits were lost in interim
/// responses. Samba's default `smb2 max credits` is 8192; Windows' is 8192 too. Retiring at a
/// quarter of that leaves room for what is in flight.
const LOST_CREDITS_LIMIT: u64 = 2048;

/// Credits a read or write leaves unreserved on its connection for the small requests (opens,
/// stats, listing pages) of other operations, on top of one per open transfer handle (its close).
const KEEP_CREDITS: i64 = 4;

/// How long an operation may wait while its connection has no credit and nothing in flight
/// that could bring one (so its request is queued in the library for ever) before it is
/// abandoned as if the connection were lost.
const DRY_GRACE: Duration = Duration::from_millis(300);

pub(crate) fn access(bits: u32) -> FileAccessMask {
    FileAccessMask::from_bytes(bits.to_le_bytes())
}

/// One established connection: transport, session and tree.
pub(crate) struct Conn {
    pub(crate) id: u64,
    // Field order matters for Drop: tree, then session, then connection.
    pub(crate) tree: Arc<Tree>,
    _session: Session,
    connection: Arc<Connection>,
    pub(crate) credits: Arc<CreditStats>,
    broken: AtomicBool,
    starved: AtomicBool,
    /// Streamed-transfer handles open on this connection; each keeps a credit for its close.
    handles: AtomicI64,
    /// A call on it ran into its timeout: the server (or the path to it) hangs.
    hung: AtomicBool,
    pub(crate) max_read: u32,
    pub(crate) max_write: u32,
    pub(crate) max_transact: u32,
}

impl Conn {
    /// Whether new operations may start on this connection.
    pub(crate) fn usable(&self) -> bool {
        !self.broken.load(Ordering::SeqCst) && !self.starved.load(Ordering::SeqCst) && !self.worn_out()
    }

    /// Too many credits lost, or too few left (beyond those kept for the closes of open
    /// transfers) with nothing in flight that could bring more.
    pub(crate) fn worn_out(&self) -> bool {
        let c = &self.credits;
        c.lost() >= LOST_CREDITS_LIMIT
            || (c.available() - c.reserved() - self.handles() < 1 && c.outstanding_sync() <= 0)
    }

    /// No credit to send anything and nothing in flight: a request handed to the library now
    /// waits inside it for ever.
    pub(crate) fn dry(&self, need: i64) -> bool {
        self.credits.available() < need && self.credits.outstanding() <= 0
    }

    pub(crate) fn mark_broken(&self) {
        if !self.broken.swap(true, Ordering::SeqCst) {
            info!(smb.conn = self.id, "SMB connection marked broken; the next operation reconnects");
        }
    }

    fn retire(&self, why: &'static str) {
        if !self.starved.swap(true, Ordering::SeqCst) {
            info!(
                smb.conn = self.id,
                available = self.credits.available(),
                lost = self.credits.lost(),
                interim = self.credits.interim_responses(),
                "{why}; retiring the SMB connection"
            );
        }
    }

    /// Whether this connection was retired for want of credits (not for a server fault): a
    /// request abandoned on it had not been sent and may be sent again elsewhere.
    pub(crate) fn ran_dry(&self) -> bool {
        self.starved.load(Ordering::SeqCst)
    }

    /// Whether a transfer request that failed on this connection with `e` may be sent again on
    /// a fresh one: the connection ran dry (the request was never sent), or it broke (reset,
    /// a response that failed its signature check) without hanging. A hung server gets no
    /// second chance: each retry would wait out the timeout again.
    pub(crate) fn retry_elsewhere(&self, e: &SmbError) -> bool {
        self.ran_dry() || (e.is_connection_lost() && !self.hung.load(Ordering::SeqCst))
    }

    pub(crate) fn handles(&self) -> i64 {
        self.handles.load(Ordering::SeqCst)
    }

    /// A transfer handle was opened on (`+1`) or left (`-1`) this connection.
    pub(crate) fn count_handle(&self, delta: i64) {
        self.handles.fetch_add(delta, Ordering::SeqCst);
    }

    /// Stops the connection at once (its open handles close with it on the server).
    pub(crate) async fn shut(&self) {
        self.mark_broken();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.connection.close()).await;
    }

    /// Reserves `charge` credits for a read/write about to be issued: waits until the library has
    /// that many to spend that no other transfer has reserved, beyond those kept for small
    /// requests and closes, so that a request is never queued behind credits that will not
    /// come. Returns `Ok(false)` (and retires the connection for new work) when it starved or
    /// broke: too few credits and nothing in flight that could bring more. The caller then
    /// moves to a fresh connection.
    pub(crate) async fn wait_credits(&self, charge: i64, limit: Duration) -> Result<bool> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if self.credits.transport_failed() {
                self.mark_broken();
            }
            if self.broken.load(Ordering::SeqCst) {
                return Ok(false);
            }
            let keep = KEEP_CREDITS + self.handles();
            if self.credits.try_reserve(charge, keep) {
                return Ok(true);
            }
            let c = &self.credits;
            if c.available() - keep < charge && c.outstanding_sync() <= 0 && c.reserved() <= 0 {
                self.retire("SMB connection starved of credits");
                return Ok(false);
            }
            if tokio::time::Instant::now() >= deadline {
                self.mark_broken();
                return Err(SmbError::lost("timed out waiting for SMB credits"));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Runs one library call on this connection under `limit`, abandoning it early (as a lost
    /// connection, which retires this one) when the connection has gone dry (fewer than `need`
    /// credits and nothing in flight, so the call's request can never be sent) or its socket
    /// failed (the answer cannot come; the library does not always fail the call itself).
    pub(crate) async fn guard<T, F>(&self, limit: Duration, need: i64, what: impl Fn() -> String, fut: F) -> Result<T>
    where
        F: std::future::Future<Output = Result<T>>,
    {
        let mut fut = std::pin::pin!(fut);
        let deadline = tokio::time::sleep(limit);
        let mut deadline = std::pin::pin!(deadline);
        let mut dry_since: Option<tokio::time::Instant> = None;
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                r = &mut fut => return r,
                _ = &mut deadline => {
                    self.hung.store(true, Ordering::SeqCst);
                    return Err(SmbError::lost(format!("{} timed out after {limit:?}", what())));
                }
                _ = tick.tick() => {
                    if self.credits.transport_failed() {
                        // Reset or closed under us: the answer cannot come. A broken
                        // connection, not a hung server: the caller may resend elsewhere.
                        self.retire("the SMB connection's socket failed");
                        self.mark_broken();
                        return Err(SmbError::lost(format!("{}: the SMB connection was reset or closed", what())));
                    }
                    if !self.dry(need) {
                        dry_since = None;
                        continue;
                    }
                    let since = *dry_since.get_or_insert_with(tokio::time::Instant::now);
                    if since.elapsed() >= DRY_GRACE {
                        self.retire("SMB connection ran out of credits with nothing in flight");
                        self.mark_broken();
                        return Err(SmbError::lost(format!("{}: the SMB connection ran out of credits", what())));
                    }
                }
            }
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        debug!(smb.conn = self.id, lost_credits = self.credits.lost(), "closing SMB connection");
        let c = self.connection.clone();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(5), c.close()).await;
            });
        }
    }
}

/// A snapshot of [`SmbClient::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectionStats {
    /// Connections established by this client so far (1 + reconnects and recycles).
    pub connections_made: u64,
    /// Credits the live connections can spend (summed over the pool).
    pub credits_available: i64,
    /// Credits the live connections lost in interim responses (summed).
    pub credits_lost: u64,
    /// Interim (STATUS_PENDING) responses seen on the live connections (summed).
    pub interim_responses: u64,
    /// Messages sent on the live connections (summed).
    pub requests_sent: u64,
}

pub(crate) struct Inner {
    pub(crate) cfg: SmbConfig,
    /// The pool: one slot per connection, filled on first use.
    slots: Vec<Mutex<Option<Arc<Conn>>>>,
    next_slot: AtomicUsize,
    pub(crate) ops: Semaphore,
    next_id: AtomicU64,
    connects: AtomicU64,
}

/// A client for one share. Cheap to clone (shared state); safe to use from many tasks.
///
/// Paths are share-relative with `/` separators (`"dir/sub/file.txt"`; `""` is the share root).
#[derive(Clone)]
pub struct SmbClient {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for SmbClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmbClient")
            .field("host", &self.inner.cfg.host)
            .field("port", &self.inner.cfg.port)
            .field("share", &self.inner.cfg.share)
            .field("user", &self.inner.cfg.username)
            .finish()
    }
}

impl SmbClient {
    /// Connects, authenticates and connects to the share; fails fast with
    /// [`SmbError::AuthFailed`], [`SmbError::Unreachable`] or [`SmbError::ShareNotFound`].
    pub async fn connect(cfg: SmbConfig) -> Result<SmbClient> {
        let client = SmbClient {
            inner: Arc::new(Inner {
                ops: Semaphore::new(cfg.limits.max_ops_in_flight.max(1)),
                slots: (0..cfg.limits.connections.max(1)).map(|_| Mutex::new(None)).collect(),
                next_slot: AtomicUsize::new(0),
                cfg,
                next_id: AtomicU64::new(1),
                connects: AtomicU64::new(0),
            }),
        };
        client.conn().await?;
        Ok(client)
    }

    /// The configuration this client was built with.
    pub fn config(&self) -> &SmbConfig {
        &self.inner.cfg
    }

    /// How many connections this client has established so far (1 + reconnects).
    pub fn connections_made(&self) -> u64 {
        self.inner.connects.load(Ordering::SeqCst)
    }

    /// Counters of the client and its live connections (for telemetry and tests).
    pub async fn stats(&self) -> ConnectionStats {
        let mut s = ConnectionStats { connections_made: self.connections_made(), ..Default::default() };
        for slot in &self.inner.slots {
            if let Some(c) = slot.lock().await.as_ref() {
                s.credits_available += c.credits.available();
                s.credits_lost += c.credits.lost();
                s.interim_responses += c.credits.interim_responses();
                s.requests_sent += c.credits.sent();
            }
        }
        s
    }

    /// Drops every connection; the next operation builds a new one.
    pub async fn reconnect(&self) -> Result<()> {
        for slot in &self.inner.slots {
            if let Some(c) = slot.lock().await.take() {
                c.mark_broken();
            }
        }
        self.conn().await.map(|_| ())
    }

    /// Closes the connections (operations still running on them fail).
    pub async fn close(&self) {
        for slot in &self.inner.slots {
            if let Some(c) = slot.lock().await.take() {
                c.mark_broken();
                let _ = tokio::time::timeout(Duration::from_secs(5), c.connection.close()).await;
            }
        }
    }

    /// A usable connection of the pool (the next slot in turn), building one if needed.
    pub(crate) async fn conn(&self) -> Result<Arc<Conn>> {
        let slots = &self.inner.slots;
        let i = self.inner.next_slot.fetch_add(1, Ordering::Relaxed) % slots.len();
        let mut cur = slots[i].lock().await;
        if let Some(c) = cur.as_ref() {
            if c.usable() {
                return Ok(c.clone());
            }
            info!(
                smb.conn = c.id,
                lost_credits = c.credits.lost(),
                broken = c.broken.load(Ordering::SeqCst),
                "replacing SMB connection"
            );
        }
        *cur = None;
        let c = Arc::new(self.build_conn().await?);
        *cur = Some(c.clone());
        Ok(c)
    }

    /// Builds a connection that is not shared with other operations (e.g. for watches).
    pub(crate) async fn dedicated_conn(&self) -> Result<Arc<Conn>> {
        Ok(Arc::new(self.build_conn().await?))
    }

    async fn build_conn(&self) -> Result<Conn> {
        let cfg = &self.inner.cfg;
        let t = cfg.timeouts.connect;
        match tokio::time::timeout(t, self.build_conn_inner()).await {
            Ok(r) => r,
            Err(_) => Err(SmbError::Unreachable {
                detail: format!("connecting to {}:{} timed out after {t:?}", cfg.host, cfg.port),
                status: None,
            }),
        }
    }

    async fn build_conn_inner(&self) -> Result<Conn> {
        let cfg = &self.inner.cfg;
        let id = self.inner.next_id.fetch_add(1, Ordering::SeqCst);
        let (transport, credits) = connect_transport(cfg).await?;
        let conn_cfg = ConnectionConfig {
            port: Some(cfg.port),
            timeout: Some(cfg.timeouts.request),
            smb2_only_negotiate: true,
            compression_enabled: false,
            credits_backlog: Some(256),
            ..Default::default()
        };
        let connection = Connection::from_transport(Box::new(transport), &cfg.host, Guid::generate(), conn_cfg)
            .await
            .map_err(|e| classify_connect(e, &cfg.share))?;
        let username = sspi::Username::new_down_level_logon_name(&cfg.username, &cfg.domain)
            .map_err(|e| SmbError::other(format!("invalid user name: {e}")))?;
        let identity = sspi::AuthIdentity { username, password: cfg.password.expose().to_string().into() };
        let session = connection.authenticate(identity).await.map_err(|e| match classify_connect(e, &cfg.share) {
            SmbError::Other { status: None, .. } => SmbError::AuthFailed { status: None },
            other => other,
        })?;
        let unc = UncPath::new(&cfg.host)
            .and_then(|u| u.with_share(&cfg.share))
            .map_err(|e| SmbError::other(format!("invalid share name: {e}")))?;
        let tree = session.tree_connect(&unc).await.map_err(|e| classify_connect(e, &cfg.share))?;
        let neg = &connection.conn_info().ok_or_else(|| SmbError::other("connection not negotiated"))?.negotiation;
        let (max_read, max_write, max_transact) = (neg.max_read_size, neg.max_write_size, neg.max_transact_size);
        self.inner.connects.fetch_add(1, Ordering::SeqCst);
        info!(
            smb.conn = id,
            smb.host = %cfg.host,
            smb.port = cfg.port,
            smb.share = %cfg.share,
            smb.user = %cfg.username,
            max_read,
            max_write,
            "SMB connection established"
        );
        Ok(Conn {
            id,
            tree: Arc::new(tree),
            _session: session,
            connection: Arc::new(connection),
            credits,
            broken: AtomicBool::new(false),
            starved: AtomicBool::new(false),
            handles: AtomicI64::new(0),
            hung: AtomicBool::new(false),
            max_read,
            max_write,
            max_transact,
        })
    }

    /// Runs `f` on the current connection under the request timeout and the ops semaphore;
    /// marks the connection broken when the failure says so.
    /// [`Self::run`], timed into `scaidrive.smb.request.duration` under `op`.
    pub(crate) async fn run_op<T, F, Fut>(&self, op: &'static str, path: &str, f: F) -> Result<T>
    where
        F: FnOnce(Arc<Conn>) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let start = std::time::Instant::now();
        let res = self.run(path, f).await;
        record(op, start, res.as_ref().err());
        res
    }

    pub(crate) async fn run<T, F, Fut>(&self, path: &str, f: F) -> Result<T>
    where
        F: FnOnce(Arc<Conn>) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let _permit = self.inner.ops.acquire().await.map_err(|_| SmbError::other("client closed"))?;
        let conn = self.conn().await?;
        let limit = self.inner.cfg.timeouts.request;
        let res = conn.guard(limit, 1, || format!("request on {path:?}"), f(conn.clone())).await;
        if let Err(e) = &res {
            if e.is_connection_lost() {
                warn!(smb.conn = conn.id, smb.path = %path, error = %e, "SMB connection lost");
                conn.mark_broken();
            }
        }
        res
    }

    /// Runs an idempotent operation again if an attempt lost its connection (e.g. the server
    /// restarted since the last call): callers see a transparent reconnect. Each lost attempt
    /// retires its connection and the next takes the next slot of the pool, so after a server
    /// restart at most one attempt per pooled connection fails before a fresh one is built.
    pub(crate) async fn retrying<T, Fut>(&self, mut op: impl FnMut() -> Fut) -> Result<T>
    where
        Fut: std::future::Future<Output = Result<T>>,
    {
        let mut attempts_left = self.inner.slots.len();
        loop {
            match op().await {
                Err(e) if e.is_connection_lost() && attempts_left > 0 => {
                    attempts_left -= 1;
                    info!(error = %e, "retrying on another SMB connection");
                }
                r => return r,
            }
        }
    }

    /// Opens the existing directory `path` on `conn` for listing (or watching).
    pub(crate) async fn open_dir_on(conn: &Conn, path: &str) -> Result<Resource> {
        Self::open_on(
            conn,
            path,
            CreateDisposition::Open,
            CreateOptions::new().with_directory_file(true),
            am::READ_DATA | am::READ_ATTRIBUTES,
            smb::FileAttributes::new(),
        )
        .await
    }

    /// Opens `path` on `conn` with the given disposition, options and access.
    pub(crate) async fn open_on(
        conn: &Conn,
        path: &str,
        disposition: CreateDisposition,
        options: CreateOptions,
        access_bits: u32,
        attributes: smb::FileAttributes,
    ) -> Result<Resource> {
        let smb_path = to_smb_path(path)?;
        let args =
            FileCreateArgs { disposition, attributes, options, desired_access: access(access_bits | am::SYNCHRONIZE) };
        conn.tree.create(&smb_path, &args).await.map_err(|e| classify(e, path))
    }
}

// Keep the unused constants referenced (they document the bits we might request).
#[allow(dead_code)]
const _UNUSED: [u32; 4] = [am::APPEND_DATA, am::READ_EA, am::WRITE_EA, am::WRITE_OWNER];

/// Records one SMB operation's latency (`status`: `ok` or the error's stable code).
pub(crate) fn record(op: &'static str, start: std::time::Instant, err: Option<&SmbError>) {
    telemetry::metrics::get().smb_duration.record(
        start.elapsed().as_secs_f64(),
        &[
            telemetry::metrics::kv("operation", op),
            telemetry::metrics::kv("status", err.map(|e| e.code()).unwrap_or("ok")),
        ],
    );
}

/// Resolves the server and opens our TCP transport to it (no SMB yet).
pub(crate) async fn connect_transport(cfg: &SmbConfig) -> Result<(NodelayTcp, Arc<crate::transport::CreditStats>)> {
    let addr: SocketAddr = tokio::net::lookup_host((cfg.host.as_str(), cfg.port))
        .await
        .map_err(|e| SmbError::Unreachable { detail: format!("resolving {}: {e}", cfg.host), status: None })?
        .next()
        .ok_or_else(|| SmbError::Unreachable { detail: format!("{} has no address", cfg.host), status: None })?;
    let (mut transport, credits) = NodelayTcp::new(cfg.timeouts.connect, cfg.tcp_nodelay);
    transport
        .connect_to(addr)
        .await
        .map_err(|e| SmbError::Unreachable { detail: format!("connecting to {addr}: {e}"), status: None })?;
    Ok((transport, credits))
}
