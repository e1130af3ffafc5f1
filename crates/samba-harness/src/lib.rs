//! A throwaway Samba server on 127.0.0.1 for tests.
//!
//! [`SambaServer::start`] creates a private directory (a [`tempfile::TempDir`]) with its own
//! `smb.conf`, passdb, lock/state/cache/pid/log directories and a share directory, creates the
//! fixed test accounts (see [`TestUser`]), picks a free TCP port and runs
//! `smbd -F --no-process-group` as a child in its own process group. [`Drop`] kills the whole
//! process group (smbd forks one process per client connection) and removes the directory.
//!
//! What it is for: integration tests of any crate that needs a real SMB server (never a mock).
//! Tests prepare trees directly on disk under [`SambaServer::share_dir`]: files written there are
//! visible over SMB at once.
//!
//! The server is a classic (NT4-style) primary domain controller of [`DOMAIN`] rather than a
//! standalone server, so that its accounts are `CORP\alice`, `CORP\bob` and (mapped with
//! `net groupmap`) the domain group `CORP\finance`, with SIDs `S-1-5-21-<domain>-<rid>`: what a
//! Windows admin sees on a domain file server. (A standalone server names them after its
//! NetBIOS name and leaves `finance` a `Unix Group\finance`, `S-1-22-2-<gid>`.)
//! [`SambaServer::sid_of`] resolves a name with `rpcclient`, independently of the code under test.
//!
//! What it must never do: touch a system-wide Samba configuration or instance, listen on anything
//! but 127.0.0.1, or kill processes it did not start. It needs root (it runs `useradd`,
//! `groupadd` and `smbd`).
//!
//! ```no_run
//! let samba = samba_harness::SambaServer::start().unwrap();
//! let (domain, user, password) = samba.service_account();
//! println!("smb://{domain};{user}@{}:{}/{}", samba.host(), samba.port(), samba.share_name());
//! # let _ = password;
//! ```
//!
//! The API is synchronous: starting takes about a second. From an async test either call it
//! directly (it blocks the test's thread briefly) or wrap it in `spawn_blocking`.

#![warn(missing_docs)]

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The NetBIOS domain (workgroup) of every harness server.
pub const DOMAIN: &str = "CORP";
/// The default share name.
pub const DEFAULT_SHARE: &str = "Share";
/// The group that [`TestUser::Alice`] belongs to (and [`TestUser::Bob`] does not).
pub const FINANCE_GROUP: &str = "finance";

/// The fixed accounts every harness server knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TestUser {
    /// `scaidrive-svc`: the connector's service account; owns the share directory.
    ServiceAccount,
    /// `alice`: an ordinary user, member of [`FINANCE_GROUP`].
    Alice,
    /// `bob`: an ordinary user, in no extra group.
    Bob,
}

impl TestUser {
    /// All accounts, in creation order.
    pub const ALL: [TestUser; 3] = [TestUser::ServiceAccount, TestUser::Alice, TestUser::Bob];

    /// The account name (Unix and Samba).
    pub fn name(self) -> &'static str {
        match self {
            TestUser::ServiceAccount => "scaidrive-svc",
            TestUser::Alice => "alice",
            TestUser::Bob => "bob",
        }
    }

    /// The account's password (fixed; these are throwaway test accounts).
    pub fn password(self) -> &'static str {
        match self {
            TestUser::ServiceAccount => "Svc-Passw0rd.2026",
            TestUser::Alice => "Alice-Passw0rd.2026",
            TestUser::Bob => "Bob-Passw0rd.2026",
        }
    }
}

/// Credentials of one account: `(domain, user, password)` parts with names.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The domain, always [`DOMAIN`].
    pub domain: String,
    /// The user name.
    pub user: String,
    /// The password.
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("domain", &self.domain)
            .field("user", &self.user)
            .field("password", &"***")
            .finish()
    }
}

/// Why the harness could not do what it was asked.
#[derive(Debug)]
pub enum HarnessError {
    /// A command could not be run or failed; the text says which and its output.
    Command(String),
    /// smbd did not become ready in time; carries the tail of its logs.
    NotReady(String),
    /// A file-system operation on the harness directory failed.
    Io(io::Error),
}

impl fmt::Display for HarnessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HarnessError::Command(s) => write!(f, "samba harness command failed: {s}"),
            HarnessError::NotReady(s) => write!(f, "samba did not become ready: {s}"),
            HarnessError::Io(e) => write!(f, "samba harness I/O error: {e}"),
        }
    }
}

impl std::error::Error for HarnessError {}

impl From<io::Error> for HarnessError {
    fn from(e: io::Error) -> Self {
        HarnessError::Io(e)
    }
}

/// Result type of the harness.
pub type Result<T> = std::result::Result<T, HarnessError>;

/// Options for a harness server; get one from [`SambaServer::builder`].
#[derive(Debug, Clone)]
pub struct SambaBuilder {
    share_name: String,
    read_only: bool,
    ready_timeout: Duration,
    log_level: u8,
}

impl Default for SambaBuilder {
    fn default() -> Self {
        SambaBuilder {
            share_name: DEFAULT_SHARE.to_string(),
            read_only: false,
            ready_timeout: Duration::from_secs(30),
            log_level: 1,
        }
    }
}

impl SambaBuilder {
    /// Sets the share name (default [`DEFAULT_SHARE`]).
    pub fn share_name(mut self, name: impl Into<String>) -> Self {
        self.share_name = name.into();
        self
    }

    /// Starts the share read-only (default: writable).
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }

    /// How long to wait for smbd to accept an authenticated `ls` (default 30 s).
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// smbd's `log level` (default 1).
    pub fn log_level(mut self, level: u8) -> Self {
        self.log_level = level;
        self
    }

    /// Creates the directory, accounts and configuration, and starts smbd.
    pub fn start(self) -> Result<SambaServer> {
        ensure_unix_accounts()?;
        let dir = tempfile::Builder::new().prefix("samba-h").tempdir()?;
        let root = dir.path().to_path_buf();
        for sub in ["private", "lock", "state", "cache", "pid", "log", "ncalrpc", "share"] {
            std::fs::create_dir_all(root.join(sub))?;
        }
        let share = root.join("share");
        run(Command::new("chown").arg(format!("{0}:{0}", TestUser::ServiceAccount.name())).arg(&share))?;
        run(Command::new("chmod").arg("0777").arg(&share))?;

        let mut server = SambaServer { root, port: 0, options: self, child: None, _dir: dir };
        // A port picked by binding :0 may be taken by someone else before smbd binds it: retry.
        let mut last_err = None;
        for _ in 0..5 {
            server.port = free_port()?;
            server.write_config()?;
            if last_err.is_none() {
                server.add_samba_users()?;
                server.map_finance_group()?;
            }
            match server.spawn_and_wait() {
                Ok(()) => return Ok(server),
                Err(e) => {
                    server.kill();
                    last_err = Some(e);
                }
            }
        }
        Err(last_err.unwrap_or_else(|| HarnessError::NotReady("no attempt made".into())))
    }
}

/// A running throwaway Samba server. Dropping it kills smbd and removes its directory.
pub struct SambaServer {
    root: PathBuf,
    port: u16,
    options: SambaBuilder,
    child: Option<Child>,
    // Last field: removed after smbd is killed in Drop.
    _dir: tempfile::TempDir,
}

impl fmt::Debug for SambaServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SambaServer")
            .field("root", &self.root)
            .field("port", &self.port)
            .field("share", &self.options.share_name)
            .field("running", &self.child.is_some())
            .finish()
    }
}

impl SambaServer {
    /// Starts a server with the default options (share [`DEFAULT_SHARE`], writable).
    pub fn start() -> Result<SambaServer> {
        SambaBuilder::default().start()
    }

    /// Options for a server; finish with [`SambaBuilder::start`].
    pub fn builder() -> SambaBuilder {
        SambaBuilder::default()
    }

    /// The host to connect to: always `"127.0.0.1"`.
    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    /// The TCP port smbd listens on (stable across [`restart`](Self::restart)).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// The share name.
    pub fn share_name(&self) -> &str {
        &self.options.share_name
    }

    /// The share's directory on disk; tests may prepare trees here directly
    /// (then call [`give_to_service_account`](Self::give_to_service_account) if they must be
    /// writable over SMB).
    pub fn share_dir(&self) -> PathBuf {
        self.root.join("share")
    }

    /// The harness's own directory (configuration, logs, state).
    pub fn root_dir(&self) -> &Path {
        &self.root
    }

    /// The path of the generated `smb.conf`.
    pub fn config_path(&self) -> PathBuf {
        self.root.join("smb.conf")
    }

    /// The service account as `(domain, user, password)`.
    pub fn service_account(&self) -> (String, String, String) {
        let c = self.user(TestUser::ServiceAccount);
        (c.domain, c.user, c.password)
    }

    /// The credentials of one of the fixed accounts.
    pub fn user(&self, user: TestUser) -> Credentials {
        Credentials { domain: DOMAIN.to_string(), user: user.name().to_string(), password: user.password().to_string() }
    }

    /// Whether smbd is running (not stopped by [`stop`](Self::stop) and not exited).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Kills smbd and all its per-connection children; established SMB connections break.
    pub fn stop(&mut self) {
        self.kill();
    }

    /// Starts smbd again (after [`stop`](Self::stop), or kills and restarts it) on the same port.
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        // The listening socket is gone once the group is reaped; retry briefly if the bind races.
        loop {
            match self.spawn_and_wait() {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() < deadline => {
                    self.kill();
                    tracing::debug!(error = %e, "smbd restart attempt failed; retrying");
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Freezes smbd and its children (SIGSTOP to its process group): connections stay open
    /// but nothing answers, like a hung server. Undo with [`resume`](Self::resume).
    pub fn pause(&self) -> Result<()> {
        self.signal_group("-STOP")
    }

    /// Lets a [`pause`](Self::pause)d smbd run again (SIGCONT).
    pub fn resume(&self) -> Result<()> {
        self.signal_group("-CONT")
    }

    fn signal_group(&self, sig: &str) -> Result<()> {
        let pgid =
            self.child.as_ref().map(|c| c.id()).ok_or_else(|| HarnessError::Command("smbd is not running".into()))?;
        run(Command::new("kill").args([sig, "--", &format!("-{pgid}")]))
    }

    /// Makes the share read-only (or writable again). Rewrites `smb.conf` and restarts smbd on
    /// the same port, so established connections break.
    pub fn set_read_only(&mut self, read_only: bool) -> Result<()> {
        self.options.read_only = read_only;
        self.write_config()?;
        self.restart()
    }

    /// `chown -R` a path (under the share) to the service account, so that files a test wrote
    /// directly on disk as root are writable and deletable over SMB.
    pub fn give_to_service_account(&self, path: impl AsRef<Path>) -> Result<()> {
        run(Command::new("chown").arg("-R").arg(format!("{0}:{0}", TestUser::ServiceAccount.name())).arg(path.as_ref()))
    }

    /// The SID the server gives `name` (`"alice"`, `"CORP\\alice"`, `"finance"`, `"Everyone"`),
    /// as `rpcclient -c 'lookupnames <name>'` reports it: a test oracle independent of the SMB
    /// layer, e.g. to build ACLs. Fails with [`HarnessError::Command`] when the name is unknown
    /// (or contains `"` or `;`, which rpcclient's command line cannot carry). Takes ~0.1 s.
    pub fn sid_of(&self, name: &str) -> Result<String> {
        if name.contains('"') || name.contains(';') || name.contains('\n') {
            return Err(HarnessError::Command(format!("sid_of: unsupported name {name:?}")));
        }
        let out = self.rpcclient(&format!("lookupnames \"{name}\""))?;
        // "<name> S-1-5-21-...-1001 (User: 1)"
        out.lines()
            .filter_map(|l| l.split_whitespace().find(|t| t.starts_with("S-1-")))
            .next()
            .map(str::to_string)
            .ok_or_else(|| HarnessError::Command(format!("rpcclient lookupnames {name:?}: {}", out.trim())))
    }

    /// Runs one `rpcclient` command as the service account (credentials from a file, never on
    /// the command line), bounded to 30 s; returns its stdout and stderr.
    fn rpcclient(&self, command: &str) -> Result<String> {
        let auth = self.root.join("private").join("rpcclient.auth");
        if !auth.exists() {
            let c = self.user(TestUser::ServiceAccount);
            use io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&auth)?;
            write!(f, "username = {}\npassword = {}\ndomain = {}\n", c.user, c.password, c.domain)?;
        }
        let mut child = Command::new("rpcclient")
            .arg("-s")
            .arg(self.config_path())
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-A")
            .arg(&auth)
            .args(["-c", command, "127.0.0.1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| HarnessError::Command(format!("rpcclient: {e}")))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait()?.is_none() {
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(HarnessError::Command(format!("rpcclient -c {command:?} timed out")));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let out = child.wait_with_output()?;
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        if !out.status.success() {
            return Err(HarnessError::Command(format!("rpcclient -c {command:?}: {}", text.trim())));
        }
        Ok(text)
    }

    /// The tail (last ~8 KiB) of smbd's log files, for error messages.
    pub fn log_tail(&self) -> String {
        let mut out = String::new();
        for name in ["smbd.stdout", "smbd.log", "log.smbd"] {
            let p = self.root.join("log").join(name);
            if let Ok(s) = std::fs::read_to_string(&p) {
                let start = s.len().saturating_sub(8192);
                let start = (start..s.len()).find(|i| s.is_char_boundary(*i)).unwrap_or(s.len());
                out.push_str(&format!("--- {} ---\n{}\n", p.display(), &s[start..]));
            }
        }
        out
    }

    fn write_config(&self) -> Result<()> {
        let r = self.root.display();
        let conf = format!(
            "[global]\n\
             \tworkgroup = {DOMAIN}\n\
             \tnetbios name = SCAIDRIVE-TEST\n\
             \tserver role = classic primary domain controller\n\
             \tserver signing = auto\n\
             \tsmb ports = {port}\n\
             \tinterfaces = 127.0.0.1\n\
             \tbind interfaces only = yes\n\
             \tprivate dir = {r}/private\n\
             \tlock directory = {r}/lock\n\
             \tstate directory = {r}/state\n\
             \tcache directory = {r}/cache\n\
             \tpid directory = {r}/pid\n\
             \tncalrpc dir = {r}/ncalrpc\n\
             \tlog file = {r}/log/smbd.log\n\
             \tlog level = {level}\n\
             \tmax log size = 0\n\
             \tpassdb backend = tdbsam:{r}/private/passdb.tdb\n\
             \tserver min protocol = SMB2_10\n\
             \tmap to guest = never\n\
             \tload printers = no\n\
             \tprinting = bsd\n\
             \tprintcap name = /dev/null\n\
             \tdisable spoolss = yes\n\
             \tdisable netbios = yes\n\
             \n\
             [{share}]\n\
             \tpath = {r}/share\n\
             \tread only = {ro}\n\
             \tvfs objects = acl_xattr\n\
             \tacl_xattr:ignore system acls = yes\n\
             \tstore dos attributes = yes\n\
             \tea support = yes\n\
             \tmap hidden = no\n\
             \tmap system = no\n\
             \tmap archive = no\n\
             \tcreate mask = 0777\n\
             \tdirectory mask = 0777\n",
            port = self.port,
            level = self.options.log_level,
            share = self.options.share_name,
            ro = if self.options.read_only { "yes" } else { "no" },
        );
        std::fs::write(self.config_path(), conf)?;
        Ok(())
    }

    fn add_samba_users(&self) -> Result<()> {
        for u in TestUser::ALL {
            let mut child = Command::new("smbpasswd")
                .arg("-c")
                .arg(self.config_path())
                .args(["-s", "-a", u.name()])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| HarnessError::Command(format!("smbpasswd: {e}")))?;
            {
                use io::Write;
                let mut stdin = child.stdin.take().expect("piped stdin");
                write!(stdin, "{0}\n{0}\n", u.password())?;
            }
            let out = child.wait_with_output()?;
            if !out.status.success() {
                return Err(HarnessError::Command(format!(
                    "smbpasswd -a {}: {} {}",
                    u.name(),
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                )));
            }
        }
        Ok(())
    }

    /// Maps the Unix group [`FINANCE_GROUP`] to a domain group, so that it is `CORP\finance`
    /// with a domain SID (not `Unix Group\finance`, `S-1-22-2-<gid>`).
    fn map_finance_group(&self) -> Result<()> {
        run(Command::new("net").arg("-s").arg(self.config_path()).args([
            "groupmap",
            "add",
            &format!("ntgroup={FINANCE_GROUP}"),
            &format!("unixgroup={FINANCE_GROUP}"),
            "type=domain",
        ]))
    }

    fn spawn_and_wait(&mut self) -> Result<()> {
        let log_dir = self.root.join("log");
        let stdout = std::fs::OpenOptions::new().create(true).append(true).open(log_dir.join("smbd.stdout"))?;
        let stderr = stdout.try_clone()?;
        let child = Command::new("smbd")
            .arg("-s")
            .arg(self.config_path())
            .args(["-F", "--no-process-group"])
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            // Own process group, so that stop() can kill smbd's per-connection children too.
            .process_group(0)
            .spawn()
            .map_err(|e| HarnessError::Command(format!("spawn smbd: {e}")))?;
        tracing::debug!(pid = child.id(), port = self.port, "smbd started");
        self.child = Some(child);
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + self.options.ready_timeout;
        let (domain, user, password) = self.service_account();
        loop {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    return Err(HarnessError::NotReady(format!(
                        "smbd exited with {status} on port {}\n{}",
                        self.port,
                        self.log_tail()
                    )));
                }
            }
            let tcp_ok = TcpStream::connect_timeout(&self.addr(), Duration::from_millis(500)).is_ok();
            if tcp_ok {
                let out = Command::new("smbclient")
                    .arg("-p")
                    .arg(self.port.to_string())
                    .arg(format!("//127.0.0.1/{}", self.options.share_name))
                    .arg("-U")
                    .arg(format!("{domain}\\{user}%{password}"))
                    .args(["-c", "ls", "-t", "5"])
                    .stdin(Stdio::null())
                    .output();
                if let Ok(out) = out {
                    if out.status.success() {
                        return Ok(());
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(HarnessError::NotReady(format!(
                    "no successful smbclient ls on port {} within {:?}\n{}",
                    self.port,
                    self.options.ready_timeout,
                    self.log_tail()
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // The group id is smbd's pid (process_group(0)); it holds only what smbd forked.
            let pgid = child.id();
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{pgid}")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let _ = child.kill();
            let _ = child.wait();
            // Wait until no member of the group is left (they hold the share's files open).
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && group_alive(pgid) {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.kill_rpc_helpers();
    }

    /// Kills the `samba-dcerpcd` that smbd started on demand for this instance (for the LSA
    /// pipe, for example) and its `rpcd_*` workers. It runs in a process group of its own, so
    /// killing smbd's group leaves it behind. Only a process whose command line names this
    /// instance's `smb.conf` is touched (the pid file might be stale).
    fn kill_rpc_helpers(&self) {
        let Ok(pid) = std::fs::read_to_string(self.root.join("pid").join("samba-dcerpcd.pid")) else {
            return;
        };
        let Ok(pid) = pid.trim().parse::<u32>() else {
            return;
        };
        let ours = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| {
                let conf = self.config_path();
                String::from_utf8_lossy(&c).split('\0').any(|arg| arg.ends_with(&*conf.to_string_lossy()))
            })
            .unwrap_or(false);
        if !ours {
            return;
        }
        // samba-dcerpcd leads its own group; its workers are in it.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pid}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && group_alive(pid) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for SambaServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn group_alive(pgid: u32) -> bool {
    Command::new("kill")
        .args(["-0", "--", &format!("-{pgid}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn free_port() -> Result<u16> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(l.local_addr()?.port())
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().map_err(|e| HarnessError::Command(format!("{cmd:?}: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(HarnessError::Command(format!(
            "{cmd:?}: {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )))
    }
}

fn exists(kind: &str, name: &str) -> bool {
    Command::new("getent")
        .args([kind, name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Runs `cmd` until `done()` holds: tolerates "already exists" and the passwd-file lock held by
/// another test process doing the same at the same time.
fn retry_until(mut cmd: impl FnMut() -> Command, done: impl Fn() -> bool) -> Result<()> {
    let mut last = String::new();
    for attempt in 0..50 {
        if done() {
            return Ok(());
        }
        match cmd().output() {
            Ok(out) => last = String::from_utf8_lossy(&out.stderr).into_owned(),
            Err(e) => last = e.to_string(),
        }
        if done() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20 + 10 * attempt));
    }
    Err(HarnessError::Command(last))
}

static ACCOUNTS: Mutex<bool> = Mutex::new(false);

/// Creates the Unix group and accounts once per process (idempotent across processes).
fn ensure_unix_accounts() -> Result<()> {
    let mut done = ACCOUNTS.lock().unwrap_or_else(|e| e.into_inner());
    if *done {
        return Ok(());
    }
    retry_until(
        || {
            let mut c = Command::new("groupadd");
            c.arg(FINANCE_GROUP);
            c
        },
        || exists("group", FINANCE_GROUP),
    )?;
    for u in TestUser::ALL {
        retry_until(
            || {
                let mut c = Command::new("useradd");
                c.args(["-M", "-s", "/usr/sbin/nologin", u.name()]);
                c
            },
            || exists("passwd", u.name()),
        )?;
    }
    let in_finance = || {
        Command::new("id")
            .args(["-nG", TestUser::Alice.name()])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).split_whitespace().any(|g| g == FINANCE_GROUP))
            .unwrap_or(false)
    };
    retry_until(
        || {
            let mut c = Command::new("usermod");
            c.args(["-a", "-G", FINANCE_GROUP, TestUser::Alice.name()]);
            c
        },
        in_finance,
    )?;
    *done = true;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sid_of_gives_domain_sids_and_drop_reaps_the_rpc_helpers() {
        let s = SambaServer::start().unwrap();
        let alice = s.sid_of("alice").unwrap();
        assert!(alice.starts_with("S-1-5-21-"), "{alice}");
        assert_eq!(s.sid_of("CORP\\alice").unwrap(), alice);
        let domain = |sid: &str| sid.rsplit_once('-').unwrap().0.to_string();
        let finance = s.sid_of(&format!("{DOMAIN}\\{FINANCE_GROUP}")).unwrap();
        assert_eq!(domain(&finance), domain(&alice), "finance is a group of the CORP domain");
        assert_eq!(s.sid_of(FINANCE_GROUP).unwrap(), finance);
        assert_eq!(s.sid_of("Everyone").unwrap(), "S-1-1-0");
        assert!(matches!(s.sid_of("no-such-account"), Err(HarnessError::Command(_))));
        assert!(s.sid_of("a\"; lookupnames bob").is_err());

        // rpcclient made smbd start samba-dcerpcd; dropping the server must not leave it behind.
        let pid = std::fs::read_to_string(s.root_dir().join("pid").join("samba-dcerpcd.pid")).unwrap();
        let proc_dir = PathBuf::from(format!("/proc/{}", pid.trim()));
        assert!(proc_dir.exists());
        drop(s);
        assert!(!proc_dir.exists(), "samba-dcerpcd {} survived the harness", pid.trim());
    }
}
