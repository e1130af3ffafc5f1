//! The end-to-end test harness: starts the real api-server on `127.0.0.1:0` against a fresh
//! database (a new SQLite file, or a new PostgreSQL database created for the test and dropped
//! after it), and drives it over HTTP like any client.
//!
//! PostgreSQL is reached at `TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`); each test gets its own database.

use std::path::PathBuf;

use api_server::{AppState, Config};
use reqwest::StatusCode;
use serde_json::Value;

/// The database a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Generates one test per backend from an `async fn(Backend)`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name($crate::Backend::Postgres).await
            }
        }
    )*};
}

pub fn postgres_admin_url() -> String {
    std::env::var("TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A PostgreSQL database of its own, dropped when this is dropped.
pub struct PgDatabase {
    pub url: String,
    name: String,
}

impl PgDatabase {
    pub async fn create() -> PgDatabase {
        use sqlx::Connection;
        let admin = postgres_admin_url();
        let name = format!("scd_test_{}", ulid::Ulid::new().to_string().to_lowercase());
        let mut conn =
            sqlx::PgConnection::connect(&admin).await.expect("PostgreSQL must run for the tests (TEST_POSTGRES_URL)");
        sqlx::Executor::execute(&mut conn, format!("CREATE DATABASE {name}").as_str())
            .await
            .expect("create test database");
        let base = admin.rsplit_once('/').map(|(b, _)| b.to_string()).unwrap_or(admin);
        PgDatabase { url: format!("{base}/{name}"), name }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop may run inside a runtime: do the cleanup on a thread of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            rt.block_on(async {
                use sqlx::Connection;
                let mut conn = sqlx::PgConnection::connect(&postgres_admin_url()).await.ok()?;
                sqlx::Executor::execute(&mut conn, format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                    .await
                    .ok()
            })
        })
        .join();
    }
}

/// The in-process api-server logs through a global subscriber that writes into the output
/// libtest captures, so a failing test shows what the server said (an `INTERNAL` answer's
/// cause is only in the log). Errors only by default; `TEST_SERVER_LOG` sets the filter
/// (e.g. `info,api_server=debug`). Tokio's worker threads inherit the capture of the test
/// that started their runtime, so each line lands in the output of the test it belongs to.
fn init_server_log() {
    let filter = std::env::var("TEST_SERVER_LOG").unwrap_or_else(|_| "error".to_string());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_test_writer()
        .try_init();
}

/// A running api-server with its own database and content store.
pub struct TestServer {
    pub url: String,
    /// The workers' gRPC endpoint (`http://127.0.0.1:port`).
    pub grpc_url: String,
    pub admin_token: String,
    pub state: AppState,
    pub data_dir: PathBuf,
    running: Option<api_server::Running>,
    _dir: tempfile::TempDir,
    _pg: Option<PgDatabase>,
    vhost: Option<jobqueue::testing::TestVhost>,
}

/// A `sync-worker` process; killed when dropped.
pub struct WorkerProcess {
    pub child: std::process::Child,
    pub log: PathBuf,
}

impl WorkerProcess {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends a signal (`libc`-free: through `kill(1)`).
    pub fn signal(&self, sig: &str) {
        let _ = std::process::Command::new("kill").args([&format!("-{sig}"), &self.pid().to_string()]).status();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What [`TestServer::spawn_worker_with`] changes.
#[derive(Clone, Debug, Default)]
pub struct WorkerOptions {
    /// The control plane's gRPC endpoint (default: the test server's).
    pub control_plane_url: Option<String>,
    /// More environment, e.g. `SCAIDRIVE_CRASH_AT`.
    pub env: Vec<(String, String)>,
}

/// An `api-server` replica process (see [`TestServer::api_process`]): started, SIGKILLed and
/// started again on the same ports; killed when dropped.
pub struct ApiProcess {
    pub url: String,
    pub grpc_url: String,
    pub log: PathBuf,
    env: Vec<(String, String)>,
    child: Option<std::process::Child>,
}

impl ApiProcess {
    /// Starts the process and waits until it answers `/healthz` (and so listens on gRPC).
    pub async fn start(&mut self) {
        assert!(self.child.is_none(), "already running");
        let bin = bin_path("api-server");
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let child = std::process::Command::new(&bin)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(std::process::Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {} (build it with cargo build -p api-server): {e}", bin.display()));
        self.child = Some(child);
        let http = reqwest::Client::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            if let Ok(r) = http.get(format!("{}/healthz", self.url)).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "api-server exited at start ({st}):\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            assert!(std::time::Instant::now() < deadline, "api-server did not start within 60 s");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// SIGKILL, then reaps it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

impl Drop for ApiProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The log filter of the worker and api-server processes tests start: `TEST_PROCESS_LOG` when
/// set (e.g. `info,smb_layer=debug` to see SMB credits while chasing a stall), else `info`.
pub fn process_log_filter() -> String {
    std::env::var("TEST_PROCESS_LOG").unwrap_or_else(|_| "info".to_string())
}

/// A binary of this workspace, next to the test executable's directory (`cargo test
/// --workspace` builds every package's binaries before running tests).
pub fn bin_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    dir.join(name)
}

/// How a test server runs.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Sync workers inside the server (standalone mode); 0 for none.
    pub embedded_workers: usize,
    /// Use RabbitMQ (a fresh virtual host) instead of the in-process queue.
    pub rabbitmq: bool,
    /// Seconds between scheduler passes (default 1).
    pub scheduler_tick_ms: Option<u64>,
    /// Workers (embedded and spawned) watch idle connectors for SMB change notifications.
    /// Off by default: change-triggered runs would interleave with the runs a test triggers.
    pub watch: bool,
}

impl TestServer {
    pub async fn start(backend: Backend) -> TestServer {
        Self::start_with(backend, Options::default()).await
    }

    pub async fn start_with(backend: Backend, opts: Options) -> TestServer {
        init_server_log();
        let dir = tempfile::tempdir().expect("tempdir");
        let pg = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(PgDatabase::create().await),
        };
        let vhost = if opts.rabbitmq {
            Some(jobqueue::testing::TestVhost::create().await.expect("RabbitMQ must run for the tests"))
        } else {
            None
        };
        let mut config = Config::for_dir(dir.path().to_path_buf(), pg.as_ref().map(|p| p.url.clone()));
        config.embedded_workers = Some(opts.embedded_workers);
        config.embedded_watch = opts.watch;
        config.amqp_url = vhost.as_ref().map(|v| v.url().to_string());
        if let Some(t) = opts.scheduler_tick_ms {
            config.scheduler_tick_ms = t;
        }
        let state = AppState::open(config).await.expect("open state");
        let admin_token =
            api_server::cli::bootstrap(&state).await.expect("bootstrap").expect("a fresh database bootstraps");
        let running = api_server::start(state.clone(), "127.0.0.1:0".parse().unwrap()).await.expect("start server");
        TestServer {
            url: format!("http://{}", running.addr),
            grpc_url: format!("http://{}", running.grpc_addr),
            admin_token,
            state,
            data_dir: dir.path().to_path_buf(),
            running: Some(running),
            _dir: dir,
            _pg: pg,
            vhost,
        }
    }

    /// Starts a `sync-worker` process against this server (needs RabbitMQ: `Options::rabbitmq`).
    pub fn spawn_worker(&self, worker_id: &str) -> WorkerProcess {
        self.spawn_worker_in_pool(worker_id, "default")
    }

    /// Starts a `sync-worker` process serving the worker pool `pool`.
    pub fn spawn_worker_in_pool(&self, worker_id: &str, pool: &str) -> WorkerProcess {
        let amqp = self.vhost.as_ref().expect("worker processes need the RabbitMQ option").url().to_string();
        let bin = bin_path("sync-worker");
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let log = self.data_dir.join(format!("{worker_id}.log"));
        let child = std::process::Command::new(&bin)
            .env("SCAIDRIVE_CONTROL_PLANE_URL", &self.grpc_url)
            .env("SCAIDRIVE_WORKER_TOKEN", self.worker_token())
            .env("SCAIDRIVE_AMQP_URL", amqp)
            .env("SCAIDRIVE_WORKER_ID", worker_id)
            .env("SCAIDRIVE_WORKER_POOL", pool)
            .env("SCAIDRIVE_WATCH", if self.state.config.embedded_watch { "1" } else { "0" })
            .env("SCAIDRIVE_LEASE_TTL_SECS", "10")
            .env("SCAIDRIVE_WORKER_LISTEN", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", process_log_filter())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {} (build it with cargo build -p sync-worker): {e}", bin.display()));
        WorkerProcess { child, log }
    }

    /// Starts a `sync-worker` process as [`TestServer::spawn_worker`] does, with `opts` on top;
    /// its log is appended to `<data dir>/<worker_id>.log` (restarts keep the earlier lines).
    pub fn spawn_worker_with(&self, worker_id: &str, opts: &WorkerOptions) -> WorkerProcess {
        let amqp = self.vhost.as_ref().expect("worker processes need the RabbitMQ option").url().to_string();
        let bin = bin_path("sync-worker");
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let log = self.data_dir.join(format!("{worker_id}.log"));
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
        let mut cmd = std::process::Command::new(&bin);
        cmd.env("SCAIDRIVE_CONTROL_PLANE_URL", opts.control_plane_url.as_deref().unwrap_or(&self.grpc_url))
            .env("SCAIDRIVE_WORKER_TOKEN", self.worker_token())
            .env("SCAIDRIVE_AMQP_URL", amqp)
            .env("SCAIDRIVE_WORKER_ID", worker_id)
            .env("SCAIDRIVE_WORKER_POOL", "default")
            .env("SCAIDRIVE_WATCH", if self.state.config.embedded_watch { "1" } else { "0" })
            .env("SCAIDRIVE_LEASE_TTL_SECS", "10")
            .env("SCAIDRIVE_WORKER_LISTEN", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", process_log_filter())
            .env_remove("SCAIDRIVE_CRASH_AT");
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        let child =
            cmd.stdout(std::process::Stdio::null()).stderr(file).spawn().unwrap_or_else(|e| {
                panic!("starting {} (build it with cargo build -p sync-worker): {e}", bin.display())
            });
        WorkerProcess { child, log }
    }

    /// The PostgreSQL database of this server (`None` on SQLite).
    pub fn database_url(&self) -> Option<String> {
        self._pg.as_ref().map(|p| p.url.clone())
    }

    /// An `api-server` replica as a process of its own (PostgreSQL and RabbitMQ only), on the
    /// same database, queue, content store, sealing key and worker token as this server, so
    /// that a test can SIGKILL it. Not started yet: see [`ApiProcess::start`].
    pub fn api_process(&self, name: &str) -> ApiProcess {
        let db = self.database_url().expect("an api-server process needs PostgreSQL");
        let amqp = self.vhost.as_ref().expect("an api-server process needs the RabbitMQ option").url().to_string();
        let free = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let (http, grpc) = (free(), free());
        let dir = self.data_dir.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let env = vec![
            ("DATABASE_URL".to_string(), db),
            ("SCAIDRIVE_AMQP_URL".to_string(), amqp),
            ("SCAIDRIVE_DATA_DIR".to_string(), dir.display().to_string()),
            ("SCAIDRIVE_CONTENT_DIR".to_string(), self.state.config.content_dir().display().to_string()),
            ("SCAIDRIVE_SECRET_KEY_FILE".to_string(), self.state.config.secret_key_file().display().to_string()),
            ("SCAIDRIVE_WORKER_TOKEN".to_string(), self.worker_token()),
            ("SCAIDRIVE_EMBEDDED_WORKERS".to_string(), "0".to_string()),
            ("SCAIDRIVE_LISTEN".to_string(), format!("127.0.0.1:{http}")),
            ("SCAIDRIVE_GRPC_LISTEN".to_string(), format!("127.0.0.1:{grpc}")),
            ("SCAIDRIVE_SCHEDULER_TICK_MS".to_string(), "1000".to_string()),
            ("RUST_LOG".to_string(), process_log_filter()),
        ];
        ApiProcess {
            url: format!("http://127.0.0.1:{http}"),
            grpc_url: format!("http://127.0.0.1:{grpc}"),
            log: dir.join("api-server.log"),
            env,
            child: None,
        }
    }

    /// A client authenticated as the bootstrap admin.
    pub fn admin(&self) -> Api {
        self.client(Some(&self.admin_token))
    }

    pub fn client(&self, token: Option<&str>) -> Api {
        Api { http: reqwest::Client::new(), base: self.url.clone(), token: token.map(str::to_string) }
    }

    /// Creates a user in the default tenant and returns (user id, a client with its token).
    pub async fn user(&self, username: &str) -> (String, Api) {
        let admin = self.admin();
        let (st, u) = admin.post("/api/v1/users", serde_json::json!({"username": username})).await;
        assert_eq!(st, StatusCode::CREATED, "{u}");
        let id = u["id"].as_str().unwrap().to_string();
        let (st, t) = admin.post("/api/v1/tokens", serde_json::json!({"name": "test", "user_id": id})).await;
        assert_eq!(st, StatusCode::CREATED, "{t}");
        (id, self.client(Some(t["token"].as_str().unwrap())))
    }

    /// A user `eve` with `role` (`tenant_admin`, `super_admin`) in a new tenant named
    /// `tenant`, made through the store as the CLI does: its token, for "another tenant" cases.
    pub async fn other_tenant_token(&self, tenant: &str, role: &str) -> String {
        use api_server::store::accounts;
        let db = &self.state.db;
        let t = accounts::create_tenant(db, tenant).await.unwrap();
        let new = accounts::NewUser { username: "eve", display_name: None, email: None, global_role: Some(role) };
        let u = accounts::create_user(db, &t.id, new).await.unwrap();
        accounts::create_token(db, &u.id, "t").await.unwrap().1
    }

    /// The fleet's worker token.
    pub fn worker_token(&self) -> String {
        self.state.worker_token.to_string()
    }

    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await.expect("clean stop");
        }
    }
}

/// A small JSON-over-HTTP client for the API.
#[derive(Clone)]
pub struct Api {
    pub http: reqwest::Client,
    pub base: String,
    pub token: Option<String>,
}

impl Api {
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut rb = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(t) = &self.token {
            rb = rb.bearer_auth(t);
        }
        rb
    }

    pub async fn send(rb: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let resp = rb.send().await.expect("request");
        let status = resp.status();
        let bytes = resp.bytes().await.expect("body");
        let v = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        (status, v)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        Self::send(self.request(reqwest::Method::GET, path)).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        Self::send(self.request(reqwest::Method::POST, path).json(&body)).await
    }

    pub async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        Self::send(self.request(reqwest::Method::PUT, path).json(&body)).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> (StatusCode, Value) {
        Self::send(self.request(reqwest::Method::PATCH, path).json(&body)).await
    }

    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        Self::send(self.request(reqwest::Method::DELETE, path)).await
    }

    /// Uploads bytes to a path of a share (creating parents).
    pub async fn upload(&self, share_id: &str, path: &str, data: impl Into<reqwest::Body>) -> (StatusCode, Value) {
        let q = format!("/api/v1/shares/{share_id}/files?path={}&create_parents=true", encode(path));
        Self::send(self.request(reqwest::Method::PUT, &q).body(data)).await
    }

    /// Downloads a file's current content.
    pub async fn download(&self, file_id: &str) -> (StatusCode, Vec<u8>) {
        let resp = self
            .request(reqwest::Method::GET, &format!("/api/v1/files/{file_id}/content"))
            .send()
            .await
            .expect("request");
        let st = resp.status();
        (st, resp.bytes().await.expect("body").to_vec())
    }

    /// Creates a share and returns its id.
    pub async fn share(&self, name: &str) -> String {
        let (st, s) = self.post("/api/v1/shares", serde_json::json!({"name": name})).await;
        assert_eq!(st, StatusCode::CREATED, "{s}");
        s["id"].as_str().unwrap().to_string()
    }
}

/// Percent-encodes a query value.
pub fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(b) {
            out.push(*b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
