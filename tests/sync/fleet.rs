//! The worker fleet (distributed setup only): a worker killed mid-job, and a worker paused
//! past its lease. Two api-server replicas enqueueing each due run once is covered by
//! tests/fleet (`scheduled_runs_happen_once_and_skip_when_busy`: two scheduler passes on one
//! database at once).

use std::time::Duration;

use serde_json::{json, Value};

use crate::driver::{no_skip, Conn, Env, Setup};
use crate::failures::{bulk_tree, wait_running};

fn worker_index(env: &Env, job: &Value) -> usize {
    let w = job["worker"].as_str().unwrap();
    ["w1", "w2"].iter().position(|x| *x == w).unwrap_or_else(|| panic!("unknown worker {w}")).min(env.workers.len() - 1)
}

/// Every file has exactly one live node with one version, nothing was trashed, and every
/// path is tracked once.
async fn assert_nothing_lost_or_duplicated(env: &Env, c: &Conn) {
    env.assert_mirrored(c, "", no_skip).await;
    let trash = env.trash(c).await;
    assert!(trash.is_empty(), "nothing may be trashed: {trash:#?}");
    let tree = env.drive_tree(c).await;
    for (path, e) in &tree {
        if let crate::driver::Entry::File { .. } = e {
            let item = env.must(c, path).await;
            let v = env.versions(item["id"].as_str().unwrap()).await;
            assert_eq!(v.len(), 1, "{path} was stored more than once: {v:#?}");
        }
    }
    let states = env.file_states(c, "").await;
    assert_eq!(states.len(), tree.len(), "{states:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_workers_job_completes_on_the_other_worker() {
    let mut env = Env::start(Setup::Distributed).await;
    bulk_tree(&env, "bulk", 8, 48);
    env.write("small/a.txt", b"a");
    let c = env.connector(json!({})).await;
    let job = env.trigger(&c).await;
    let j = wait_running(&env, &c, &job).await;
    let victim = worker_index(&env, &j);
    let victim_id = j["worker"].as_str().unwrap().to_string();
    env.workers[victim].signal("KILL");
    let _ = env.workers[victim].child.wait();

    let j = env.wait_job(&c, &job, Duration::from_secs(120)).await;
    assert_eq!(j["status"], "completed", "{j:#}\n{}", env.logs());
    assert_ne!(j["worker"].as_str().unwrap(), victim_id, "the other worker finished it: {j:#}");
    let jobs = env.jobs(&c).await;
    assert_eq!(jobs.len(), 1, "one job, taken over, not a new one: {jobs:#?}");
    assert_nothing_lost_or_duplicated(&env, &c).await;
    env.workers.remove(victim);
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_paused_past_its_lease_commits_nothing_afterwards() {
    let env = Env::start(Setup::Distributed).await;
    bulk_tree(&env, "bulk", 8, 48);
    let c = env.connector(json!({})).await;
    let job = env.trigger(&c).await;
    let j = wait_running(&env, &c, &job).await;
    let paused = worker_index(&env, &j);
    let paused_id = j["worker"].as_str().unwrap().to_string();
    env.workers[paused].signal("STOP");

    // The other worker takes over once the lease (10 s) expires, and finishes the job: well
    // within a minute (the data takes a few seconds).
    let j = env
        .wait_job_until(&c, &job, Duration::from_secs(60), "taken over (lease TTL 10 s) and finished", |j| {
            crate::driver::TERMINAL.contains(&j["status"].as_str().unwrap())
        })
        .await;
    assert_eq!(j["status"], "completed", "{j:#}\n{}", env.logs());
    assert_ne!(j["worker"].as_str().unwrap(), paused_id, "{j:#}");
    let (_, cursor) = env.changes(&c, 0).await;
    let states_before = env.file_states(&c, "").await;

    // The paused worker wakes up: everything it still tries is refused.
    env.workers[paused].signal("CONT");
    tokio::time::sleep(Duration::from_secs(6)).await;
    let (changes, _) = env.changes(&c, cursor).await;
    assert!(changes.is_empty(), "the stale worker committed after the takeover: {changes:#?}\n{}", env.logs());
    assert_eq!(env.file_states(&c, "").await, states_before, "the stale worker changed file states");
    let jobs = env.jobs(&c).await;
    assert_eq!(jobs.len(), 1, "{jobs:#?}");
    let j = env.job(&c, &job).await;
    assert_eq!(
        (j["status"].as_str(), j["worker"].as_str()),
        (Some("completed"), jobs[0]["worker"].as_str()),
        "the job finished once: {j:#}"
    );
    assert_ne!(j["worker"].as_str().unwrap(), paused_id, "{j:#}");
    assert_nothing_lost_or_duplicated(&env, &c).await;
    env.finish().await;
}

/// SIGTERM: the worker stops at the next safe point, releases its lease and hands the job
/// back, so another worker takes it over at once (no lease expiry to wait for), and the
/// stopped worker exits cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_worker_hands_its_job_back() {
    let mut env = Env::start(Setup::Distributed).await;
    bulk_tree(&env, "bulk", 8, 48);
    let c = env.connector(json!({})).await;
    let job = env.trigger(&c).await;
    let j = wait_running(&env, &c, &job).await;
    let leaving = worker_index(&env, &j);
    let leaving_id = j["worker"].as_str().unwrap().to_string();
    env.workers[leaving].signal("TERM");
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(s) = env.workers[leaving].child.try_wait().unwrap() {
            break s;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "the worker did not stop on SIGTERM");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "a clean exit: {status:?}\n{}", env.workers[leaving].log());

    let j = env.wait_job(&c, &job, Duration::from_secs(60)).await;
    assert_eq!(j["status"], "completed", "{j:#}\n{}", env.logs());
    assert_ne!(j["worker"].as_str().unwrap(), leaving_id, "the other worker finished it: {j:#}");
    assert_eq!(env.jobs(&c).await.len(), 1, "the same job, handed over");
    assert_nothing_lost_or_duplicated(&env, &c).await;
    env.workers.remove(leaving);
    env.finish().await;
}
