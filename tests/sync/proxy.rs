//! Fault injection for the dependencies the product talks to over TCP (Samba, PostgreSQL,
//! RabbitMQ): a small proxy of the test's own on 127.0.0.1, forwarding to the real service,
//! that can refuse new connections, cut live ones or stall them (a hung server) on demand;
//! and [`Faulty`], a distributed deployment (one api-server, `sync-worker` processes) whose
//! database and broker connections go through such proxies.
//!
//! It must never stop or reconfigure the machine's shared PostgreSQL or RabbitMQ: the faults
//! are only ever on this test's own connections (its own database and virtual host).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use e2e_tests::{Api, Backend, Options, PgDatabase, TestServer, WorkerProcess};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::driver::{Env, Setup};

/// A one-shot signal (cancelled once, seen by every waiter).
#[derive(Clone)]
struct Trip(Arc<watch::Sender<bool>>);

impl Trip {
    fn new() -> Trip {
        Trip(Arc::new(watch::channel(false).0))
    }
    fn cancel(&self) {
        self.0.send_replace(true);
    }
    async fn cancelled(&self) {
        let mut rx = self.0.subscribe();
        let _ = rx.wait_for(|v| *v).await;
    }
}

const FORWARD: u8 = 0;
const REFUSE: u8 = 1;
const STALL: u8 = 2;

/// The bytes one connection carried in one direction.
type Tape = Arc<Mutex<Vec<u8>>>;

struct Ctl {
    upstream: SocketAddr,
    mode: AtomicU8,
    /// Live connections: cancelled to cut them.
    live: Mutex<Vec<Trip>>,
    /// True while forwarding is paused on every connection (new and live).
    stalled: watch::Sender<bool>,
    /// With recording on: every byte of every connection, one tape per direction.
    tapes: Option<Mutex<Vec<Tape>>>,
    /// Bytes still forwarded before everything stalls by itself (see `Proxy::stall_after`).
    budget: std::sync::atomic::AtomicI64,
    /// Microseconds every forwarded read waits before it goes on (see `Proxy::slow`).
    delay_us: std::sync::atomic::AtomicU64,
}

/// A fault-injecting TCP proxy in front of `upstream`. Dropping it closes its listener and
/// every connection through it.
pub struct Proxy {
    pub addr: SocketAddr,
    ctl: Arc<Ctl>,
    stop: Trip,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Proxy {
        Self::start_with(upstream, false).await
    }

    /// A proxy that also keeps every byte it forwards (see [`tapes`](Self::tapes)).
    pub async fn recording(upstream: SocketAddr) -> Proxy {
        Self::start_with(upstream, true).await
    }

    async fn start_with(upstream: SocketAddr, record: bool) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let ctl = Arc::new(Ctl {
            upstream,
            mode: AtomicU8::new(FORWARD),
            live: Mutex::new(Vec::new()),
            stalled: watch::channel(false).0,
            tapes: record.then(|| Mutex::new(Vec::new())),
            budget: std::sync::atomic::AtomicI64::new(i64::MAX),
            delay_us: std::sync::atomic::AtomicU64::new(0),
        });
        let stop = Trip::new();
        tokio::spawn(accept_loop(listener, ctl.clone(), stop.clone()));
        Proxy { addr, ctl, stop }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// New connections are closed at once (the service is down); live ones keep going.
    pub fn refuse(&self) {
        self.ctl.mode.store(REFUSE, Ordering::SeqCst);
    }

    /// Forwards again, and un-stalls.
    pub fn restore(&self) {
        self.ctl.budget.store(i64::MAX, Ordering::SeqCst);
        self.ctl.mode.store(FORWARD, Ordering::SeqCst);
        self.ctl.stalled.send_replace(false);
    }

    /// Forwards `bytes` more (both directions together), then stalls as [`stall`](Self::stall)
    /// does: a service that hangs in the middle of a transfer, however fast the transfer is.
    pub fn stall_after(&self, bytes: u64) {
        self.ctl.budget.store(bytes as i64, Ordering::SeqCst);
    }

    /// A slow link: from now on every read forwarded (either way, at most 64 KiB) waits
    /// `delay` first, so each request and each reply takes that much longer. Tests whose
    /// faults must land while a run is in flight use it: a run's length then does not depend
    /// on how fast the product has become.
    pub fn slow(&self, delay: Duration) {
        self.ctl.delay_us.store(delay.as_micros() as u64, Ordering::SeqCst);
    }

    /// Closes every live connection (both ends), as a crash or a network cut would.
    pub fn cut(&self) {
        for c in self.ctl.live.lock().unwrap().drain(..) {
            c.cancel();
        }
    }

    /// The service is down: refuse new connections and cut live ones.
    pub fn down(&self) {
        self.refuse();
        self.cut();
    }

    /// A hung service: connections are accepted and kept open, but no byte moves either way,
    /// on new and live connections alike, until [`restore`](Self::restore).
    pub fn stall(&self) {
        self.ctl.mode.store(STALL, Ordering::SeqCst);
        self.ctl.stalled.send_replace(true);
    }

    /// What went through each connection in each direction, in order (recording proxies).
    pub fn tapes(&self) -> Vec<Vec<u8>> {
        let tapes = self.ctl.tapes.as_ref().expect("a recording proxy");
        tapes.lock().unwrap().iter().map(|t| t.lock().unwrap().clone()).collect()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
        self.cut();
    }
}

async fn accept_loop(listener: TcpListener, ctl: Arc<Ctl>, stop: Trip) {
    loop {
        let (client, _) = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => match r { Ok(c) => c, Err(_) => continue },
        };
        if ctl.mode.load(Ordering::SeqCst) == REFUSE {
            drop(client);
            continue;
        }
        let token = Trip::new();
        ctl.live.lock().unwrap().push(token.clone());
        let ctl = ctl.clone();
        tokio::spawn(async move {
            let upstream = tokio::select! {
                _ = token.cancelled() => return,
                r = TcpStream::connect(ctl.upstream) => match r { Ok(s) => s, Err(_) => return },
            };
            let _ = client.set_nodelay(true);
            let _ = upstream.set_nodelay(true);
            let (cr, cw) = client.into_split();
            let (ur, uw) = upstream.into_split();
            tokio::select! {
                _ = token.cancelled() => {}
                _ = pump(cr, uw, &ctl) => {}
                _ = pump(ur, cw, &ctl) => {}
            }
        });
    }
}

/// Copies one direction until EOF or an error, holding bytes back while stalled.
async fn pump(mut from: tokio::net::tcp::OwnedReadHalf, mut to: tokio::net::tcp::OwnedWriteHalf, ctl: &Ctl) {
    let mut stalled = ctl.stalled.subscribe();
    let mut buf = vec![0u8; 64 * 1024];
    let tape = ctl.tapes.as_ref().map(|t| {
        let tape = Arc::new(Mutex::new(Vec::new()));
        t.lock().unwrap().push(tape.clone());
        tape
    });
    loop {
        if stalled.wait_for(|s| !*s).await.is_err() {
            return;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if ctl.budget.fetch_sub(n as i64, Ordering::SeqCst) <= n as i64 {
            ctl.mode.store(STALL, Ordering::SeqCst);
            ctl.stalled.send_replace(true);
        }
        if stalled.wait_for(|s| !*s).await.is_err() {
            return;
        }
        let delay = ctl.delay_us.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_micros(delay)).await;
        }
        if let Some(t) = &tape {
            t.lock().unwrap().extend_from_slice(&buf[..n]);
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// `scheme://user:pw@host:port/rest` with host:port replaced by `addr`.
pub fn url_via(url: &str, addr: SocketAddr) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (auth_host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let auth = auth_host.rsplit_once('@').map(|(a, _)| format!("{a}@")).unwrap_or_default();
    format!("{scheme}://{auth}{addr}/{path}")
}

/// The `host:port` of a URL, resolved.
pub fn addr_of(url: &str) -> SocketAddr {
    let rest = url.split_once("://").unwrap().1;
    let host_port = rest.split('/').next().unwrap();
    let host_port = host_port.rsplit_once('@').map(|(_, h)| h).unwrap_or(host_port);
    let host_port = if host_port.contains(':') { host_port.to_string() } else { format!("{host_port}:5432") };
    std::net::ToSocketAddrs::to_socket_addrs(&host_port).unwrap().find(|a| a.is_ipv4()).unwrap()
}

/// How the workers of a [`Faulty`] deployment run.
#[derive(Clone, Debug)]
pub struct WorkerOpts {
    pub count: usize,
    pub max_jobs: usize,
    pub rust_log: &'static str,
    /// Extra environment (e.g. `OTEL_EXPORTER_OTLP_ENDPOINT`).
    pub env: Vec<(String, String)>,
}

impl Default for WorkerOpts {
    fn default() -> Self {
        WorkerOpts { count: 2, max_jobs: 2, rust_log: "info", env: vec![] }
    }
}

/// A distributed deployment whose api-server reaches PostgreSQL and RabbitMQ, and whose
/// workers reach RabbitMQ, only through proxies of this test: [`Faulty::env`] is the usual
/// driver over it (its `api` and `workers` are this deployment's; its `srv` is an idle
/// standalone server that only owns the driver's data directory).
pub struct Faulty {
    pub env: Env,
    pub pg: Proxy,
    pub amqp: Proxy,
    pub state: api_server::AppState,
    pub grpc_url: String,
    pub data_dir: PathBuf,
    running: Option<api_server::Running>,
    _dir: tempfile::TempDir,
    _db: PgDatabase,
    pub vhost: jobqueue::testing::TestVhost,
}

impl Faulty {
    pub async fn start(workers: WorkerOpts) -> Faulty {
        let samba = tokio::task::spawn_blocking(samba_harness::SambaServer::start).await.unwrap().expect("samba");
        let db = PgDatabase::create().await;
        let vhost = jobqueue::testing::TestVhost::create().await.expect("RabbitMQ must run for the tests");
        let pg = Proxy::start(addr_of(&db.url)).await;
        let amqp = Proxy::start(addr_of(vhost.url())).await;
        let dir = tempfile::tempdir().unwrap();
        let mut config = api_server::Config::for_dir(dir.path().to_path_buf(), Some(url_via(&db.url, pg.addr)));
        config.amqp_url = Some(url_via(vhost.url(), amqp.addr));
        config.embedded_workers = Some(0);
        config.scheduler_tick_ms = 500;
        let state = api_server::AppState::open(config).await.expect("open state");
        let admin = api_server::cli::bootstrap(&state).await.unwrap().expect("a fresh database bootstraps");
        let running = api_server::start(state.clone(), "127.0.0.1:0".parse().unwrap()).await.unwrap();
        let api = Api { http: reqwest::Client::new(), base: format!("http://{}", running.addr), token: Some(admin) };
        let idle = TestServer::start_with(Backend::Sqlite, Options { embedded_workers: 0, ..Default::default() }).await;
        let mut f = Faulty {
            env: Env { setup: Setup::Distributed, srv: idle, api, samba, workers: vec![] },
            pg,
            amqp,
            state,
            grpc_url: format!("http://{}", running.grpc_addr),
            data_dir: dir.path().to_path_buf(),
            running: Some(running),
            _dir: dir,
            _db: db,
            vhost,
        };
        for i in 0..workers.count {
            let w = f.spawn_worker(&format!("w{}", i + 1), &workers);
            f.env.workers.push(w);
        }
        f
    }

    /// A `sync-worker` process reaching RabbitMQ through the proxy.
    pub fn spawn_worker(&self, id: &str, o: &WorkerOpts) -> WorkerProcess {
        let bin = e2e_tests::bin_path("sync-worker");
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let log = self.data_dir.join(format!("{id}.log"));
        let mut cmd = std::process::Command::new(&bin);
        cmd.env("SCAIDRIVE_CONTROL_PLANE_URL", &self.grpc_url)
            .env("SCAIDRIVE_WORKER_TOKEN", self.state.worker_token.as_str())
            .env("SCAIDRIVE_AMQP_URL", url_via(self.vhost.url(), self.amqp.addr))
            .env("SCAIDRIVE_WORKER_ID", id)
            .env("SCAIDRIVE_LEASE_TTL_SECS", "10")
            .env("SCAIDRIVE_MAX_JOBS", o.max_jobs.to_string())
            .env("SCAIDRIVE_WORKER_LISTEN", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", o.rust_log)
            .env("SCAIDRIVE_WATCH", "0")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT");
        for (k, v) in &o.env {
            cmd.env(k, v);
        }
        let child = cmd
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {} (cargo build -p sync-worker): {e}", bin.display()));
        WorkerProcess { child, log }
    }

    pub async fn finish(mut self) {
        self.env.workers.clear();
        if let Some(r) = self.running.take() {
            let _ = tokio::time::timeout(Duration::from_secs(30), r.stop()).await;
        }
        self.pg.restore();
        self.amqp.restore();
        let Faulty { env, .. } = self;
        env.finish().await;
    }
}
