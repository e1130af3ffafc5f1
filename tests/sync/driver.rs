//! The driver every sync case goes through: a throwaway Samba, an api-server (standalone:
//! SQLite and embedded workers; distributed: PostgreSQL, RabbitMQ and two `sync-worker`
//! processes), a connector pointing at the Samba share, and helpers that run a sync through
//! the REST API and read the ScaiDrive side back. It never reaches into the product's
//! internals except the database for test set-up (`next_sync_at`) and the secrets grep.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use e2e_tests::{encode, Api, Backend, Options, TestServer, WorkerProcess};
use reqwest::StatusCode;
use samba_harness::SambaServer;
use serde_json::{json, Value};
use sha2::Digest;

/// Where the sync runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Setup {
    /// SQLite, in-process queue, two embedded workers.
    Standalone,
    /// PostgreSQL, RabbitMQ, two `sync-worker` processes.
    Distributed,
}

/// The test service account's password, also the connector's password: it must never leak.
pub const PASSWORD: &str = "Svc-Passw0rd.2026";
pub const TARGET: &str = "/Mirror";

/// One test's world.
pub struct Env {
    #[allow(dead_code)]
    pub setup: Setup,
    pub srv: TestServer,
    pub api: Api,
    pub samba: SambaServer,
    pub workers: Vec<WorkerProcess>,
}

/// A connector and its target share.
#[derive(Clone, Debug)]
pub struct Conn {
    pub id: String,
    pub share: String,
    pub target: String,
}

impl Conn {
    pub fn url(&self, rest: &str) -> String {
        format!("/api/v1/smb-connectors/{}{rest}", self.id)
    }
}

/// One item of a tree: folder, or file with size and SHA-256.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    Dir,
    File { size: u64, sha256: String },
}

pub type Tree = BTreeMap<String, Entry>;

pub const TERMINAL: [&str; 5] = ["completed", "failed", "cancelled", "skipped", "interrupted"];

impl Env {
    pub async fn start(setup: Setup) -> Env {
        Self::start_with(setup, None).await
    }

    /// `tick_ms`: the scheduler's period (default 1 s).
    pub async fn start_with(setup: Setup, tick_ms: Option<u64>) -> Env {
        let samba = tokio::task::spawn_blocking(SambaServer::start).await.unwrap().expect("samba");
        let (backend, opts) = match setup {
            Setup::Standalone => (
                Backend::Sqlite,
                Options { embedded_workers: 2, rabbitmq: false, scheduler_tick_ms: tick_ms, watch: false },
            ),
            Setup::Distributed => (
                Backend::Postgres,
                Options { embedded_workers: 0, rabbitmq: true, scheduler_tick_ms: tick_ms, watch: false },
            ),
        };
        let srv = TestServer::start_with(backend, opts).await;
        let workers = match setup {
            Setup::Standalone => vec![],
            Setup::Distributed => vec![srv.spawn_worker("w1"), srv.spawn_worker("w2")],
        };
        let api = srv.admin();
        Env { setup, srv, api, samba, workers }
    }

    pub async fn finish(self) {
        let Env { srv, workers, samba, .. } = self;
        drop(workers);
        srv.stop().await;
        drop(samba);
    }

    /// The SMB share's directory on disk.
    pub fn disk(&self) -> PathBuf {
        self.samba.share_dir()
    }

    /// Writes a file on the share (parents created), owned by the service account.
    pub fn write(&self, rel: &str, data: &[u8]) {
        let p = self.disk().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, data).unwrap();
    }

    pub fn mkdir(&self, rel: &str) {
        std::fs::create_dir_all(self.disk().join(rel)).unwrap();
    }

    pub fn chown_all(&self) {
        self.samba.give_to_service_account(self.disk()).unwrap();
    }

    /// Sets DOS attributes over SMB (`+h`, `+s`, `-h`...), as a Windows admin would.
    pub fn setmode(&self, rel: &str, mode: &str) {
        self.chown_all();
        self.smbclient(&format!("setmode \"{}\" {mode}", rel.replace('/', "\\")));
    }

    /// Runs `smbclient -c <cmd>` on the share as the service account (an SMB client other
    /// than the workers); fails the test if the command fails.
    pub fn smbclient(&self, cmd: &str) {
        let (d, u, p) = self.samba.service_account();
        let out = std::process::Command::new("smbclient")
            .arg("-p")
            .arg(self.samba.port().to_string())
            .arg(format!("//127.0.0.1/{}", self.samba.share_name()))
            .arg("-U")
            .arg(format!("{d}\\{u}%{p}"))
            .arg("-c")
            .arg(cmd)
            .output()
            .unwrap();
        let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success() && !all.contains("NT_STATUS_"), "smbclient {cmd}: {all}");
    }

    /// Creates a target share and a connector on the harness Samba; `extra` overrides fields.
    pub async fn connector(&self, extra: Value) -> Conn {
        let share = self.api.share(&format!("S{}", ulid::Ulid::new())).await;
        let (d, u, p) = self.samba.service_account();
        let mut body = json!({
            "name": "fileserver", "server_host": "127.0.0.1", "server_port": self.samba.port(),
            "share_name": self.samba.share_name(), "domain": d, "username": u, "password": p,
            "target_share_id": share, "target_path": TARGET, "sync_interval_minutes": 0,
        });
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (st, c) = self.api.post("/api/v1/smb-connectors", body).await;
        assert_eq!(st, StatusCode::CREATED, "{c}");
        Conn { id: c["id"].as_str().unwrap().into(), share, target: TARGET.into() }
    }

    pub async fn connector_json(&self, c: &Conn) -> Value {
        let (st, v) = self.api.get(&c.url("")).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        v
    }

    pub async fn patch(&self, c: &Conn, body: Value) {
        let (st, v) = self.api.patch(&c.url(""), body).await;
        assert_eq!(st, StatusCode::OK, "{v}");
    }

    /// Everything the workers logged so far (distributed setup), for failure messages.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        for w in &self.workers {
            let l = w.log();
            let start = l.len().saturating_sub(6000);
            let start = (start..l.len()).find(|i| l.is_char_boundary(*i)).unwrap_or(l.len());
            s.push_str(&format!("--- worker log {} ---\n{}\n", w.log.display(), &l[start..]));
        }
        s
    }

    /// POST /sync; returns the job id (202 expected).
    pub async fn trigger(&self, c: &Conn) -> String {
        let (st, j) = self.api.post(&c.url("/sync"), json!({})).await;
        assert_eq!(st, StatusCode::ACCEPTED, "{j}");
        assert!(j["id"].as_str().unwrap().starts_with("job_"), "{j}");
        j["id"].as_str().unwrap().to_string()
    }

    pub async fn job(&self, c: &Conn, job: &str) -> Value {
        let (st, j) = self.api.get(&c.url(&format!("/jobs/{job}"))).await;
        assert_eq!(st, StatusCode::OK, "{j}");
        j
    }

    /// Polls a job until `done(job)` holds, at most `timeout`.
    pub async fn wait_job_until(
        &self,
        c: &Conn,
        job: &str,
        timeout: Duration,
        what: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let j = self.job(c, job).await;
            if done(&j) {
                return j;
            }
            if Instant::now() > deadline {
                panic!("job {job} not {what} within {timeout:?}: {j:#}\n{}", self.logs());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn wait_job(&self, c: &Conn, job: &str, timeout: Duration) -> Value {
        self.wait_job_until(c, job, timeout, "terminal", |j| TERMINAL.contains(&j["status"].as_str().unwrap_or("")))
            .await
    }

    /// Waits until no job of the connector is queued or running (runs handed back by a worker
    /// that lost its lease, or queued by the scheduler, included).
    pub async fn wait_idle(&self, c: &Conn, timeout: Duration) {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let jobs = self.jobs(c).await;
            if jobs.iter().all(|j| TERMINAL.contains(&j["status"].as_str().unwrap_or(""))) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "jobs not terminal within {timeout:?}: {jobs:#?}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Triggers a run and waits for its end; returns the job.
    pub async fn sync_and_wait(&self, c: &Conn) -> Value {
        let id = self.trigger(c).await;
        self.wait_job(c, &id, Duration::from_secs(120)).await
    }

    /// A run that must complete without any error.
    pub async fn sync_ok(&self, c: &Conn) -> Value {
        let j = self.sync_and_wait(c).await;
        assert_eq!(j["status"], "completed", "{j:#}\n{}", self.logs());
        assert_eq!(j["error_count"], 0, "{j:#}");
        j
    }

    /// The item at a share path, if there is a live one.
    pub async fn item(&self, c: &Conn, path: &str) -> Option<Value> {
        let (st, v) = self.api.get(&format!("/api/v1/shares/{}/items?path={}", c.share, encode(path))).await;
        match st {
            StatusCode::OK if v["deleted"] == false => Some(v),
            StatusCode::OK | StatusCode::NOT_FOUND => None,
            _ => panic!("lookup {path}: {st} {v}"),
        }
    }

    /// The item at a path under the connector's target.
    pub async fn target_item(&self, c: &Conn, rel: &str) -> Option<Value> {
        self.item(c, &format!("{}/{rel}", c.target)).await
    }

    pub async fn must(&self, c: &Conn, rel: &str) -> Value {
        self.target_item(c, rel)
            .await
            .unwrap_or_else(|| panic!("{rel} is not in ScaiDrive under {}\n{}", c.target, self.logs()))
    }

    pub async fn download(&self, file_id: &str) -> Vec<u8> {
        let (st, b) = self.api.download(file_id).await;
        assert_eq!(st, StatusCode::OK);
        b
    }

    pub async fn versions(&self, file_id: &str) -> Vec<Value> {
        let (st, v) = self.api.get(&format!("/api/v1/files/{file_id}/versions")).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        v["versions"].as_array().unwrap().clone()
    }

    pub async fn trash(&self, c: &Conn) -> Vec<Value> {
        let (st, v) = self.api.get(&format!("/api/v1/shares/{}/trash", c.share)).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        v["items"].as_array().unwrap().clone()
    }

    /// Every child of a folder (all pages).
    pub async fn children(&self, folder_id: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let q = match &cursor {
                Some(c) => format!("/api/v1/folders/{folder_id}/children?limit=1000&cursor={}", encode(c)),
                None => format!("/api/v1/folders/{folder_id}/children?limit=1000"),
            };
            let (st, v) = self.api.get(&q).await;
            assert_eq!(st, StatusCode::OK, "{v}");
            out.extend(v["items"].as_array().unwrap().iter().cloned());
            match v["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => return out,
            }
        }
    }

    /// The ScaiDrive tree under the target (paths relative to it).
    pub async fn drive_tree(&self, c: &Conn) -> Tree {
        let root = self.item(c, &c.target).await.expect("target folder exists");
        let mut tree = Tree::new();
        let mut stack = vec![(root["id"].as_str().unwrap().to_string(), String::new())];
        while let Some((id, prefix)) = stack.pop() {
            for ch in self.children(&id).await {
                let name = ch["name"].as_str().unwrap();
                let rel = if prefix.is_empty() { name.to_string() } else { format!("{prefix}/{name}") };
                if ch["type"] == "folder" {
                    stack.push((ch["id"].as_str().unwrap().to_string(), rel.clone()));
                    tree.insert(rel, Entry::Dir);
                } else {
                    tree.insert(
                        rel,
                        Entry::File {
                            size: ch["size"].as_u64().unwrap(),
                            sha256: ch["sha256"].as_str().unwrap_or("").to_string(),
                        },
                    );
                }
            }
        }
        tree
    }

    /// The SMB tree on disk under `base` (names in NFC, as ScaiDrive keeps them), minus what
    /// `skip` says is out of scope.
    pub async fn disk_tree(&self, base: &str, skip: fn(&str) -> bool) -> Tree {
        let root = self.disk().join(base);
        tokio::task::spawn_blocking(move || disk_tree(&root, skip)).await.unwrap()
    }

    /// The whole SMB tree under `base` equals the ScaiDrive tree under the target.
    pub async fn assert_mirrored(&self, c: &Conn, base: &str, skip: fn(&str) -> bool) {
        let want = self.disk_tree(base, skip).await;
        let got = self.drive_tree(c).await;
        assert_trees(&want, &got, &self.logs());
    }

    /// Changes of the share after a cursor; returns (changes, new cursor).
    pub async fn changes(&self, c: &Conn, cursor: i64) -> (Vec<Value>, i64) {
        let mut out = Vec::new();
        let mut cur = cursor;
        loop {
            let (st, v) =
                self.api.get(&format!("/api/v1/sync/changes?share_id={}&cursor={cur}&limit=5000", c.share)).await;
            assert_eq!(st, StatusCode::OK, "{v}");
            out.extend(v["changes"].as_array().unwrap().iter().cloned());
            cur = v["cursor"].as_i64().unwrap();
            if v["has_more"] != true {
                return (out, cur);
            }
        }
    }

    pub async fn file_states(&self, c: &Conn, query: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut q = format!("/file-states?limit=1000{query}");
            if let Some(cur) = &cursor {
                q.push_str(&format!("&cursor={}", encode(cur)));
            }
            let (st, v) = self.api.get(&c.url(&q)).await;
            assert_eq!(st, StatusCode::OK, "{v}");
            out.extend(v["file_states"].as_array().unwrap().iter().cloned());
            match v["next_cursor"].as_str() {
                Some(n) => cursor = Some(n.to_string()),
                None => return out,
            }
        }
    }

    pub async fn jobs(&self, c: &Conn) -> Vec<Value> {
        let (st, v) = self.api.get(&c.url("/jobs")).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        v["jobs"].as_array().unwrap().clone()
    }

    /// Streams a file's download through the REST API into SHA-256 (never whole in memory).
    pub async fn download_sha256(&self, file_id: &str) -> (u64, String) {
        use futures::StreamExt;
        let resp =
            self.api.request(reqwest::Method::GET, &format!("/api/v1/files/{file_id}/content")).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let mut h = sha2::Sha256::new();
        let mut n = 0u64;
        let mut s = resp.bytes_stream();
        while let Some(b) = s.next().await {
            let b = b.unwrap();
            n += b.len() as u64;
            h.update(&b);
        }
        (n, hex::encode(h.finalize()))
    }
}

pub fn sha256_file(p: &Path) -> (u64, String) {
    let mut f = std::fs::File::open(p).unwrap();
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf).unwrap();
        if k == 0 {
            return (n, hex::encode(h.finalize()));
        }
        n += k as u64;
        h.update(&buf[..k]);
    }
}

pub fn sha256(b: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(b))
}

/// NFC for the decomposed spellings the cases write (tests/Cargo.toml has no normalizer).
pub fn nfc(s: &str) -> String {
    s.replace("e\u{301}", "\u{e9}")
        .replace("i\u{308}", "\u{ef}")
        .replace("o\u{308}", "\u{f6}")
        .replace("u\u{308}", "\u{fc}")
        .replace("a\u{30a}", "\u{e5}")
}

fn disk_tree(root: &Path, skip: fn(&str) -> bool) -> Tree {
    let mut tree = Tree::new();
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, prefix)) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let name = nfc(&e.file_name().to_string_lossy());
            let rel = if prefix.is_empty() { name.clone() } else { format!("{prefix}/{name}") };
            if skip(&rel) {
                continue;
            }
            let md = std::fs::symlink_metadata(e.path()).unwrap();
            if md.is_dir() {
                tree.insert(rel.clone(), Entry::Dir);
                stack.push((e.path(), rel));
            } else if md.is_file() {
                let (size, sha256) = sha256_file(&e.path());
                tree.insert(rel, Entry::File { size, sha256 });
            }
        }
    }
    tree
}

pub fn assert_trees(want: &Tree, got: &Tree, logs: &str) {
    if want == got {
        return;
    }
    let mut diff = String::new();
    for (k, v) in want {
        match got.get(k) {
            None => diff.push_str(&format!("  missing in ScaiDrive: {k} {v:?}\n")),
            Some(g) if g != v => diff.push_str(&format!("  differs: {k}: SMB {v:?} ScaiDrive {g:?}\n")),
            _ => {}
        }
    }
    for (k, v) in got {
        if !want.contains_key(k) {
            diff.push_str(&format!("  only in ScaiDrive: {k} {v:?}\n"));
        }
    }
    panic!("the ScaiDrive tree does not mirror the SMB tree:\n{diff}{logs}");
}

pub fn no_skip(_: &str) -> bool {
    false
}
