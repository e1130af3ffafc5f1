//! Runs that cannot or must not finish normally: wrong password, Samba down, the delete
//! guard, an overlapping run (skipped when scheduled, 409 when manual), a cancelled run.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::driver::{no_skip, Conn, Env, Setup};

on_both_setups!(
    wrong_password_fails_the_job_until_fixed,
    stopped_samba_fails_the_job_until_restarted,
    delete_guard_stops_before_deleting_anything,
    overlapping_runs_are_skipped_or_refused,
    a_cancelled_job_ends_cleanly_and_the_next_run_converges,
);

/// A tree big enough for a run to take a few seconds: `n` sparse files of `mib` MiB, each
/// with its own content at a few offsets.
pub fn bulk_tree(env: &Env, dir: &str, n: usize, mib: u64) {
    use std::io::{Seek, SeekFrom, Write};
    for i in 0..n {
        let p = env.disk().join(format!("{dir}/part-{i:03}.bin"));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let mut f = std::fs::File::create(&p).unwrap();
        let size = mib << 20;
        f.set_len(size).unwrap();
        for off in [0, size / 2, size - 64] {
            f.seek(SeekFrom::Start(off)).unwrap();
            f.write_all(format!("{dir} file {i} at {off}").as_bytes()).unwrap();
        }
    }
}

/// Waits until the job is running on a worker.
pub async fn wait_running(env: &Env, c: &Conn, job: &str) -> Value {
    env.wait_job_until(c, job, Duration::from_secs(30), "running on a worker", |j| {
        assert!(
            !crate::driver::TERMINAL.contains(&j["status"].as_str().unwrap()),
            "the job ended before the test could act on it (make the data bigger): {j:#}"
        );
        j["status"] == "running" && j["worker"].is_string()
    })
    .await
}

async fn assert_connector_error(env: &Env, c: &Conn, code: &str) {
    let cn = env.connector_json(c).await;
    assert_eq!(cn["status"], "error", "{cn:#}");
    let msg = cn["status_message"].as_str().unwrap_or("");
    assert!(msg.contains(code), "the status message should say why ({code}): {cn:#}");
}

async fn wrong_password_fails_the_job_until_fixed(setup: Setup) {
    let env = Env::start(setup).await;
    env.write("a.txt", b"a");
    let c = env.connector(json!({"password": "not-the-password-42"})).await;
    let job = env.sync_and_wait(&c).await;
    assert_eq!(job["status"], "failed", "{job:#}");
    assert_eq!(job["error"]["code"], "CONNECTOR_AUTH_FAILED", "{job:#}");
    assert!(job["error_count"].as_i64().unwrap() >= 1, "{job:#}");
    assert_connector_error(&env, &c, "CONNECTOR_AUTH_FAILED").await;

    let (_, _, pw) = env.samba.service_account();
    env.patch(&c, json!({"password": pw})).await;
    env.sync_ok(&c).await;
    env.assert_mirrored(&c, "", no_skip).await;
    let cn = env.connector_json(&c).await;
    assert_eq!(cn["status"], "idle", "{cn:#}");
    env.finish().await;
}

async fn stopped_samba_fails_the_job_until_restarted(setup: Setup) {
    let mut env = Env::start(setup).await;
    env.write("a.txt", b"a");
    let c = env.connector(json!({})).await;
    env.sync_ok(&c).await;

    env.samba.stop();
    env.write("b.txt", b"written while the server was down");
    let job = env.sync_and_wait(&c).await;
    assert_eq!(job["status"], "failed", "{job:#}");
    assert_eq!(job["error"]["code"], "CONNECTOR_UNREACHABLE", "{job:#}");
    assert_connector_error(&env, &c, "CONNECTOR_UNREACHABLE").await;
    // Nothing was lost on the ScaiDrive side because the server could not be listed.
    assert!(env.target_item(&c, "a.txt").await.is_some());
    assert!(env.trash(&c).await.is_empty());

    env.samba.restart().unwrap();
    env.sync_ok(&c).await;
    env.assert_mirrored(&c, "", no_skip).await;
    assert_eq!(env.connector_json(&c).await["status"], "idle");
    env.finish().await;
}

async fn delete_guard_stops_before_deleting_anything(setup: Setup) {
    let env = Env::start(setup).await;
    for i in 0..10 {
        env.write(&format!("f{i}.txt"), format!("file {i}").as_bytes());
    }
    let c = env.connector(json!({})).await;
    env.sync_ok(&c).await;
    let (_, cursor) = env.changes(&c, 0).await;

    for i in 0..8 {
        std::fs::remove_file(env.disk().join(format!("f{i}.txt"))).unwrap();
    }
    let job = env.sync_and_wait(&c).await;
    assert_eq!(job["status"], "failed", "{job:#}");
    assert_eq!(job["error"]["code"], "DELETE_GUARD_TRIGGERED", "{job:#}");
    let msg = job["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("max_delete_percent") && msg.contains("nothing was deleted"),
        "the job must say how to proceed: {msg}"
    );
    assert_eq!(job["files_deleted"], 0, "{job:#}");
    assert!(env.trash(&c).await.is_empty(), "the guard must stop before deleting anything");
    let (changes, _) = env.changes(&c, cursor).await;
    assert!(changes.is_empty(), "{changes:#?}");
    for i in 0..10 {
        assert!(env.target_item(&c, &format!("f{i}.txt")).await.is_some());
    }
    assert_connector_error(&env, &c, "DELETE_GUARD_TRIGGERED").await;
    assert!(env.connector_json(&c).await["status_message"].as_str().unwrap().contains("max_delete_percent"));

    env.patch(&c, json!({"max_delete_percent": 100})).await;
    let job = env.sync_ok(&c).await;
    assert_eq!(job["files_deleted"], 8, "{job:#}");
    env.assert_mirrored(&c, "", no_skip).await;
    assert_eq!(env.trash(&c).await.len(), 8);
    assert_eq!(env.connector_json(&c).await["status"], "idle");
    env.finish().await;
}

async fn overlapping_runs_are_skipped_or_refused(setup: Setup) {
    let env = Env::start(setup).await;
    bulk_tree(&env, "bulk", 6, 64);
    let c = env.connector(json!({"sync_interval_minutes": 60})).await;
    let running = env.trigger(&c).await;
    wait_running(&env, &c, &running).await;

    // A manual trigger meanwhile: 409 naming the running job.
    let (st, e) = env.api.post(&c.url("/sync"), json!({})).await;
    assert_eq!(st, StatusCode::CONFLICT, "{e}");
    assert_eq!(e["error"]["code"], "SYNC_ALREADY_RUNNING", "{e}");
    assert!(e.to_string().contains(&running), "the 409 must name the running job {running}: {e}");

    // A scheduled run comes due meanwhile: recorded as skipped, with its reason.
    let due = api_server::time::now_ms() - 1000;
    sqlx::query("UPDATE connectors SET next_sync_at = $1 WHERE id = $2")
        .bind(due)
        .bind(&c.id)
        .execute(&env.srv.state.db.pool)
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let skipped = loop {
        let jobs = env.jobs(&c).await;
        if let Some(j) = jobs.iter().find(|j| j["status"] == "skipped") {
            break j.clone();
        }
        assert!(std::time::Instant::now() < deadline, "no skipped scheduled run recorded: {jobs:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(skipped["trigger"], "scheduled", "{skipped}");
    assert!(skipped["reason"].as_str().is_some_and(|r| !r.is_empty()), "{skipped}");
    let j = env.job(&c, &running).await;
    assert_eq!(j["status"], "running", "the skipped run did not disturb the running one: {j:#}");

    let j = env.wait_job(&c, &running, Duration::from_secs(120)).await;
    assert_eq!(j["status"], "completed", "{j:#}");
    let jobs = env.jobs(&c).await;
    assert_eq!(jobs.len(), 2, "one run and one skipped decision: {jobs:#?}");
    env.assert_mirrored(&c, "", no_skip).await;
    env.finish().await;
}

async fn a_cancelled_job_ends_cleanly_and_the_next_run_converges(setup: Setup) {
    let env = Env::start(setup).await;
    // Many files (a cancel takes effect between files), enough data to take a few seconds.
    bulk_tree(&env, "bulk", 64, 6);
    let c = env.connector(json!({})).await;
    let job = env.trigger(&c).await;
    wait_running(&env, &c, &job).await;
    let (st, j) = env.api.post(&c.url(&format!("/jobs/{job}/cancel")), json!({})).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{j}");
    let j = env.wait_job(&c, &job, Duration::from_secs(60)).await;
    assert_eq!(j["status"], "cancelled", "{j:#}");
    assert_eq!(j["cancel_requested"], true, "{j:#}");
    assert!(j["files_synced"].as_i64().unwrap() < 64, "cancelled between files, not after all of them: {j:#}");
    let cn = env.connector_json(&c).await;
    assert_eq!(cn["status"], "idle", "{cn:#}");
    // Whatever the cancelled run committed is whole: every file present has its SMB content.
    let tree = env.drive_tree(&c).await;
    let disk = env.disk_tree("", no_skip).await;
    for (k, v) in &tree {
        assert_eq!(Some(v), disk.get(k), "{k} half-written by the cancelled run");
    }
    // Cancelling again is refused: the job has ended.
    let (st, _) = env.api.post(&c.url(&format!("/jobs/{job}/cancel")), json!({})).await;
    assert_eq!(st, StatusCode::CONFLICT);

    env.sync_ok(&c).await;
    env.assert_mirrored(&c, "", no_skip).await;
    env.finish().await;
}
