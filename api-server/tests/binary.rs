//! The `api-server` binary as a user runs it: first start, the admin token file, the CLI,
//! and a 2 GiB file streamed through a separate server process whose peak memory is read
//! from /proc.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

const BIN: &str = env!("CARGO_BIN_EXE_api-server");

struct Server {
    child: Child,
    url: String,
    token: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the server on ports the kernel picks (`127.0.0.1:0`) and reads the address it bound
/// from its own start-up line: a port chosen here and released before the server binds it can
/// be taken meanwhile by another test's server (its gRPC listener on port 0, say), and then
/// this test would talk to the wrong process.
fn start(dir: &std::path::Path) -> Server {
    let log_dir = tempfile::tempdir().unwrap();
    let log = log_dir.path().join("api-server.log");
    let mut child = Command::new(BIN)
        .args(["--data-dir", dir.to_str().unwrap(), "--listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0"])
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("spawn api-server");
    const READY: &str = "ScaiDrive API on http://";
    let deadline = Instant::now() + Duration::from_secs(30);
    let addr = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(rest) = text.split(READY).nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("api-server exited ({status}) before serving: {text}");
        }
        assert!(Instant::now() < deadline, "api-server did not start: {text}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let token = std::fs::read_to_string(dir.join("admin-token")).expect("admin token file").trim().to_string();
    Server { child, url: format!("http://{addr}"), token }
}

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap()
}

#[test]
fn first_start_writes_a_private_admin_token_and_the_cli_manages_accounts() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start(dir.path());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("admin-token")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(srv.token.starts_with("sdt_"));
    drop(srv);

    let cli = |args: &[&str]| {
        let out = Command::new(BIN).arg("--data-dir").arg(dir.path()).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let user = cli(&["users", "create", "alice"]);
    assert_eq!(user["username"], "alice");
    let group = cli(&["groups", "create", "finance"]);
    cli(&["groups", "add-member", "finance", "alice"]);
    let share = cli(&["shares", "create", "Finance", "--owner", "admin"]);
    cli(&["shares", "add-member", share["id"].as_str().unwrap(), "--group", "finance", "--role", "reader"]);
    let tok = cli(&["tokens", "create", "alice"]);
    assert!(tok["token"].as_str().unwrap().starts_with("sdt_"));
    assert_eq!(group["name"], "finance");

    // A second start keeps the same admin, and alice's token works over HTTP.
    let srv = start(dir.path());
    let client = reqwest::blocking::Client::new();
    let me: serde_json::Value = client
        .get(format!("{}/api/v1/shares", srv.url))
        .bearer_auth(tok["token"].as_str().unwrap())
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(me["shares"][0]["name"], "Finance");

    // Bad CLI input is a clear error, not a panic.
    let out =
        Command::new(BIN).arg("--data-dir").arg(dir.path()).args(["users", "create", "bad name"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("VALIDATION_FAILED"));
}

/// A deterministic stream of pseudo-random bytes (xorshift), `total` long, 1 MiB at a time.
struct Pattern {
    state: u64,
    left: u64,
}

impl Read for Pattern {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.left).min(1 << 20) as usize;
        let n = n - n % 8;
        let n = if n == 0 { self.left.min(buf.len() as u64) as usize } else { n };
        for chunk in buf[..n].chunks_mut(8) {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            let b = self.state.to_le_bytes();
            chunk.copy_from_slice(&b[..chunk.len()]);
        }
        self.left -= n as u64;
        Ok(n)
    }
}

#[test]
fn a_2_gib_file_round_trips_byte_identical_in_flat_memory() {
    let size: u64 = std::env::var("BIG_FILE_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(2048) << 20;
    let dir = tempfile::tempdir().unwrap();
    let srv = start(dir.path());
    let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(1800)).build().unwrap();
    let share: serde_json::Value = client
        .post(format!("{}/api/v1/shares", srv.url))
        .bearer_auth(&srv.token)
        .json(&serde_json::json!({"name": "Big"}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let share = share["id"].as_str().unwrap();

    // Expected digest, computed from the same generator.
    let mut expected = Sha256::new();
    let mut gen = Pattern { state: 0x9E37_79B9_7F4A_7C15, left: size };
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = gen.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        expected.update(&buf[..n]);
    }
    let expected = hex::encode(expected.finalize());

    let body = reqwest::blocking::Body::sized(Pattern { state: 0x9E37_79B9_7F4A_7C15, left: size }, size);
    let up: serde_json::Value = client
        .put(format!("{}/api/v1/shares/{share}/files?path=/big.bin", srv.url))
        .bearer_auth(&srv.token)
        .body(body)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(up["version"]["size"].as_u64(), Some(size), "{up}");
    assert_eq!(up["version"]["sha256"].as_str(), Some(expected.as_str()));

    let mut resp = client
        .get(format!("{}/api/v1/files/{}/content", srv.url, up["file"]["id"].as_str().unwrap()))
        .bearer_auth(&srv.token)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut got = Sha256::new();
    let mut total = 0u64;
    loop {
        let n = resp.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        total += n as u64;
        got.update(&buf[..n]);
    }
    assert_eq!(total, size);
    assert_eq!(hex::encode(got.finalize()), expected);

    let peak_mib = peak_rss_kib(srv.child.id()) / 1024;
    eprintln!("api-server peak RSS after a {} MiB round trip: {peak_mib} MiB", size >> 20);
    assert!(peak_mib < 200, "server peak RSS {peak_mib} MiB");
}

/// `secrets rotate-key`: every stored credential is re-sealed under the new key in one
/// transaction, the key file is replaced, and a server still holding the old key refuses to
/// start. The database files never contain the password.
#[test]
fn rotating_the_secret_key_reseals_credentials_and_retires_the_old_key() {
    const PASSWORD: &str = "Rot4te-me-9d2e71";
    let dir = tempfile::tempdir().unwrap();
    let srv = start(dir.path());
    let http = reqwest::blocking::Client::new();
    let post = |path: &str, body: serde_json::Value| {
        http.post(format!("{}{path}", srv.url)).bearer_auth(&srv.token).json(&body).send().unwrap()
    };
    let share: serde_json::Value = post("/api/v1/shares", serde_json::json!({"name": "S"})).json().unwrap();
    let mut ids = Vec::new();
    for name in ["a", "b"] {
        let resp = post(
            "/api/v1/smb-connectors",
            serde_json::json!({"name": name, "server_host": "fs01",
            "share_name": "D", "username": "svc", "password": PASSWORD, "target_share_id": share["id"]}),
        );
        assert_eq!(resp.status(), 201);
        let c: serde_json::Value = resp.json().unwrap();
        ids.push(c["id"].as_str().unwrap().to_string());
    }
    let token = srv.token.clone();
    drop(srv);

    let no_plaintext = || {
        for f in std::fs::read_dir(dir.path()).unwrap() {
            let p = f.unwrap().path();
            if p.is_file() {
                let bytes = std::fs::read(&p).unwrap();
                assert!(!bytes.windows(PASSWORD.len()).any(|w| w == PASSWORD.as_bytes()), "{}", p.display());
            }
        }
    };
    no_plaintext();
    let key_file = dir.path().join("secret.key");
    let old_key = std::fs::read_to_string(&key_file).unwrap().trim().to_string();
    let cli = |args: &[&str]| {
        Command::new(BIN)
            .arg("--data-dir")
            .arg(dir.path())
            .args(args)
            .env_remove("SCAIDRIVE_SECRET_KEY")
            .output()
            .unwrap()
    };
    let new_file = dir.path().join("new.key");
    let out = cli(&["secrets", "generate-key", "--out", new_file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&new_file).unwrap().permissions().mode() & 0o777, 0o600);
    let new_key = std::fs::read_to_string(&new_file).unwrap().trim().to_string();
    assert_ne!(new_key, old_key);

    let out = cli(&["secrets", "rotate-key", "--new-key-file", new_file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["reencrypted"], 2);
    assert_eq!(std::fs::read_to_string(&key_file).unwrap().trim(), new_key, "the key file now holds the new key");
    assert_eq!(std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777, 0o600);
    no_plaintext();
    // Running it again is harmless: nothing left to re-seal.
    let out = cli(&["secrets", "rotate-key", "--new-key-file", new_file.to_str().unwrap()]);
    assert!(out.status.success());
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["reencrypted"], 0);

    // The credentials open with the new key only, and only for their own connector.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let db = api_server::db::Db::connect(&format!("sqlite://{}", dir.path().join("scaidrive.db").display()))
            .await
            .unwrap();
        let new = api_server::secrets::SecretBox::parse_key(&new_key).unwrap();
        let old = api_server::secrets::SecretBox::parse_key(&old_key).unwrap();
        for id in &ids {
            let cid = api_server::ids::ConnectorId::parse(id).unwrap();
            let creds = api_server::store::connectors::decrypted_credentials(&db, &new, &cid).await.unwrap();
            assert_eq!(creds.password.expose(), PASSWORD);
            assert!(api_server::store::connectors::decrypted_credentials(&db, &old, &cid).await.is_err());
            let (sealed,): (String,) = sqlx::query_as("SELECT password_sealed FROM connectors WHERE id = $1")
                .bind(id)
                .fetch_one(&db.pool)
                .await
                .unwrap();
            let other = ids.iter().find(|x| *x != id).unwrap();
            assert!(new.open(other, &sealed).is_err());
        }
    });

    // A server given the old key refuses to start and says why.
    let out = Command::new(BIN)
        .args(["--data-dir", dir.path().to_str().unwrap(), "--listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0"])
        .env("SCAIDRIVE_SECRET_KEY", &old_key)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("secret key"), "{}", String::from_utf8_lossy(&out.stderr));
    // With the installed new key it serves the connectors as before.
    let srv = start(dir.path());
    assert_eq!(srv.token, token);
    let resp =
        http.get(format!("{}/api/v1/smb-connectors/{}", srv.url, ids[0])).bearer_auth(&srv.token).send().unwrap();
    assert_eq!(resp.status(), 200);
}

#[test]
fn migrate_applies_every_migration_and_exits() {
    let dir = tempfile::tempdir().unwrap();
    let run = || Command::new(BIN).arg("--data-dir").arg(dir.path()).arg("migrate").output().unwrap();
    let out = run();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["schema_version"].as_i64().unwrap() >= 4, "{v}");
    // Idempotent: a second run applies nothing and answers the same.
    let again = run();
    assert!(again.status.success());
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&again.stdout).unwrap(), v);
    // Nothing but the database: no admin token, no key file.
    assert!(!dir.path().join("admin-token").exists());
}
