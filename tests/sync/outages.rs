//! Dependencies failing in the middle of a job (issue 9, part 3): PostgreSQL, RabbitMQ and
//! Samba unavailable and back, a connection dropped mid-transfer, a read-only share, a full
//! content store. Each fails only what it must, with its code and status message, loses
//! nothing, and the next run converges.
//!
//! The faults are made by the test's own proxies (`proxy.rs`) in front of the services, never
//! by stopping the machine's PostgreSQL or RabbitMQ. The campaign runs `OUTAGE_ROUNDS` rounds
//! (default 4: one of each outage); `OUTAGE_ROUNDS=50` is the long campaign.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::driver::{no_skip, Conn, Env, Setup};
use crate::failures::wait_running;
use crate::proxy::{Faulty, Proxy, WorkerOpts};

fn rounds() -> usize {
    std::env::var("OUTAGE_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(4)
}

/// Rewrites `n` files of `mib` MiB under `dir` with content of this round (sparse, a few
/// distinct markers), so every round has real transfers to interrupt.
fn write_round(env: &Env, dir: &str, n: usize, mib: u64, round: usize) {
    use std::io::{Seek, SeekFrom, Write};
    for i in 0..n {
        let p = env.disk().join(format!("{dir}/f-{i:02}.bin"));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let mut f = std::fs::File::create(&p).unwrap();
        let size = (mib << 20) + i as u64;
        f.set_len(size).unwrap();
        for off in [0, size / 3, size - 64] {
            f.seek(SeekFrom::Start(off)).unwrap();
            f.write_all(format!("round {round} file {i} at {off}").as_bytes()).unwrap();
        }
    }
    env.chown_all();
}

/// Runs until one run completes without errors (at most `tries`), then checks both sides
/// agree, nothing went to the trash, the connector is idle and no job is left unfinished.
async fn converge(env: &Env, c: &Conn, tries: usize) {
    let mut last = Value::Null;
    for _ in 0..tries {
        last = env.sync_and_wait(c).await;
        if last["status"] == "completed" && last["error_count"] == 0 {
            break;
        }
    }
    assert_eq!((&last["status"], &last["error_count"]), (&json!("completed"), &json!(0)), "{last:#}\n{}", env.logs());
    env.assert_mirrored(c, "", no_skip).await;
    assert!(env.trash(c).await.is_empty(), "an outage must not delete anything");
    let cn = env.connector_json(c).await;
    assert_eq!(cn["status"], "idle", "{cn:#}");
    for j in env.jobs(c).await {
        assert!(crate::driver::TERMINAL.contains(&j["status"].as_str().unwrap()), "a job left unfinished: {j:#}");
    }
}

/// No version was committed twice: consecutive versions of every file differ.
async fn no_duplicate_versions(env: &Env, c: &Conn, dir: &str, n: usize) {
    for i in 0..n {
        let f = env.must(c, &format!("{dir}/f-{i:02}.bin")).await;
        let vs = env.versions(f["id"].as_str().unwrap()).await;
        for w in vs.windows(2) {
            assert_ne!(w[0]["sha256"], w[1]["sha256"], "{dir}/f-{i:02}.bin committed twice: {vs:#?}");
        }
    }
}

/// Waits until the job has moved some files, so the fault lands mid-transfer.
async fn wait_transferring(env: &Env, c: &Conn, job: &str) {
    wait_running(env, c, job).await;
    env.wait_job_until(c, job, Duration::from_secs(60), "transferring", |j| {
        assert!(
            !crate::driver::TERMINAL.contains(&j["status"].as_str().unwrap()),
            "the job ended before the fault (make the data bigger): {j:#}"
        );
        j["bytes_transferred"].as_i64().unwrap_or(0) > 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_rabbitmq_and_samba_fail_mid_job_and_the_next_run_converges() {
    let f = Faulty::start(WorkerOpts::default()).await;
    let env = &f.env;
    let smb = Proxy::start(env.samba.addr()).await;
    // Each forwarded piece waits 2 ms (about 30 MiB/s per connection): a run lasts a few
    // seconds, long enough for each fault to land mid-transfer.
    smb.slow(Duration::from_millis(2));
    let (n, mib) = (24, 12);
    write_round(env, "data", n, mib, 0);
    let c = env.connector(json!({"server_port": smb.port()})).await;
    let other = env.connector(json!({})).await;
    env.sync_ok(&c).await;
    for round in 1..=rounds() {
        write_round(env, "data", n, mib, round);
        let job = env.trigger(&c).await;
        wait_transferring(env, &c, &job).await;
        let kind = ["postgres", "rabbitmq", "smb-cut", "smb-down"][round % 4];
        eprintln!("round {round}: {kind}");
        match kind {
            "postgres" => {
                f.pg.down();
                // REST answers at once, 503 with its code, never a 500 or a hang.
                let t0 = Instant::now();
                let (st, v) = env.api.get(&c.url("")).await;
                assert_eq!(
                    (st, v["error"]["code"].as_str()),
                    (StatusCode::SERVICE_UNAVAILABLE, Some("UNAVAILABLE")),
                    "{v}"
                );
                assert!(t0.elapsed() < Duration::from_secs(35), "{:?}", t0.elapsed());
                let (st, _) = env.api.get("/readyz").await;
                assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE);
                tokio::time::sleep(Duration::from_secs(3)).await;
                f.pg.restore();
            }
            "rabbitmq" => {
                f.amqp.down();
                // A run requested meanwhile is recorded (202) and published once the broker is back.
                let queued = env.trigger(&other).await;
                tokio::time::sleep(Duration::from_secs(3)).await;
                f.amqp.restore();
                let j = env.wait_job(&other, &queued, Duration::from_secs(90)).await;
                assert_eq!(j["status"], "completed", "{j:#}\n{}", env.logs());
            }
            "smb-cut" => smb.cut(),
            _ => {
                smb.down();
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
        let j = env.wait_job(&c, &job, Duration::from_secs(120)).await;
        eprintln!(
            "round {round} {kind}: {} errors {} code {} attempt {}",
            j["status"], j["error_count"], j["error"]["code"], j["attempt"]
        );
        match kind {
            "smb-down" => {
                // The file server is gone: the files in hand fail (connection codes), the run
                // records why, and the connector's status message says so.
                assert!(j["status"] == "failed" || j["error_count"].as_i64().unwrap() > 0, "{j:#}");
                let cn = env.connector_json(&c).await;
                let msg = cn["status_message"].as_str().unwrap_or("");
                assert!(msg.contains("CONNECTOR_UNREACHABLE") || msg.contains("file errors"), "{cn:#}");
                smb.restore();
            }
            _ => {
                // The others are survived: retried, redelivered or reconnected.
                assert_eq!(j["status"], "completed", "{kind}: {j:#}\n{}", env.logs());
            }
        }
        if kind == "rabbitmq" {
            // Its message, unacknowledged on the lost connection, was redelivered and
            // acknowledged without a second run (the claim answers JOB_FINISHED).
            assert_eq!(j["attempt"], 1, "{j:#}");
            let deadline = Instant::now() + Duration::from_secs(30);
            while !env.workers.iter().any(|w| w.log().contains("job already finished; acknowledging")) {
                assert!(Instant::now() < deadline, "the message was not redelivered and settled\n{}", env.logs());
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        converge(env, &c, 3).await;
        no_duplicate_versions(env, &c, "data", n).await;
    }
    converge(env, &other, 2).await;
    drop(smb);
    f.finish().await;
}

/// ScaiDrive → SMB writes on a share turned read-only fail one by one with
/// `SMB_ACCESS_DENIED`; SMB → ScaiDrive keeps flowing; once writable, the next run converges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_share_fails_only_the_writes_to_it() {
    let mut env = Env::start(Setup::Standalone).await;
    env.write("docs/a.txt", b"a");
    env.chown_all();
    let c = env.connector(json!({"sync_direction": "bidirectional"})).await;
    env.sync_ok(&c).await;

    env.samba.set_read_only(true).unwrap();
    let (st, v) = env.api.upload(&c.share, &format!("{}/docs/from-drive.txt", c.target), "made in ScaiDrive").await;
    assert!(st.is_success(), "{v}");
    env.write("docs/from-smb.txt", b"made on SMB");
    let j = env.sync_and_wait(&c).await;
    assert_eq!(j["status"], "completed", "{j:#}");
    assert_eq!(j["error_count"], 1, "only the write to SMB fails: {j:#}");
    let errs = env.file_states(&c, "&status=error").await;
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert_eq!(errs[0]["path"], "docs/from-drive.txt", "{errs:#?}");
    assert!(errs[0].to_string().contains("SMB_ACCESS_DENIED"), "{errs:#?}");
    assert!(env.target_item(&c, "docs/from-smb.txt").await.is_some(), "SMB → ScaiDrive kept flowing");
    assert!(env.target_item(&c, "docs/from-drive.txt").await.is_some(), "the ScaiDrive file is kept");
    let cn = env.connector_json(&c).await;
    assert!(cn["status_message"].as_str().unwrap_or("").contains("1 file errors"), "{cn:#}");

    env.samba.set_read_only(false).unwrap();
    env.sync_ok(&c).await;
    env.assert_mirrored(&c, "", no_skip).await;
    assert!(env.trash(&c).await.is_empty());
    env.finish().await;
}

/// A tmpfs mounted over the content store, unmounted when dropped.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(dir: &std::path::Path, mib: u64) -> SmallDisk {
        // The store's folder layout (made when it opened), recreated on the small disk.
        let mut folders = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    folders.push(p.strip_prefix(dir).unwrap().to_path_buf());
                    stack.push(p);
                }
            }
        }
        assert!(!folders.is_empty(), "the content store has no layout to copy");
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "mounting a tmpfs needs root: {}", String::from_utf8_lossy(&out.stderr));
        for f in folders {
            std::fs::create_dir_all(dir.join(f)).unwrap();
        }
        SmallDisk(dir.to_path_buf())
    }

    fn grow(&self, mib: u64) {
        let st = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={mib}m")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(st.success());
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A full disk under the content store fails only the files that do not fit
/// (`STORAGE_FULL`), leaves no partial chunk behind, and once there is room the next run
/// converges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_content_store_fails_only_what_does_not_fit() {
    let env = Env::start(Setup::Standalone).await;
    let disk = SmallDisk::mount(&env.srv.data_dir.join("content"), 10);
    for i in 0u32..6 {
        let data: Vec<u8> =
            (0..3 << 20).map(|k: u32| (k.wrapping_mul(2654435761).wrapping_add(i) >> 13) as u8).collect();
        env.write(&format!("big-{i}.bin"), &data);
    }
    env.write("small.txt", b"fits");
    env.chown_all();
    let c = env.connector(json!({})).await;
    let j = env.sync_and_wait(&c).await;
    assert_eq!(j["status"], "completed", "{j:#}");
    let failed = j["error_count"].as_i64().unwrap();
    assert!((1..6).contains(&failed), "some files fit, some do not: {j:#}");
    let errs = env.file_states(&c, "&status=error").await;
    assert_eq!(errs.len() as i64, failed, "{errs:#?}");
    for e in &errs {
        assert!(e.to_string().contains("STORAGE_FULL"), "{e:#}");
    }
    assert!(env.target_item(&c, "small.txt").await.is_some() || failed >= 1);
    let cn = env.connector_json(&c).await;
    assert!(cn["status_message"].as_str().unwrap_or("").contains("file errors"), "{cn:#}");
    // No partial chunk is left taking space (temporary files are written beside their chunk,
    // in the 256 fan-out folders).
    let mut tmp = Vec::new();
    for dir in std::fs::read_dir(disk.0.join("chunks")).unwrap() {
        for f in std::fs::read_dir(dir.unwrap().path()).unwrap() {
            let f = f.unwrap().path();
            if f.extension().is_some_and(|e| e == "tmp") {
                tmp.push(f);
            }
        }
    }
    assert!(tmp.is_empty(), "partial chunks left behind: {tmp:?}");

    disk.grow(64);
    env.sync_ok(&c).await;
    env.assert_mirrored(&c, "", no_skip).await;
    drop(disk);
    env.finish().await;
}
