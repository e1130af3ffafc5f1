//! Change notification (issue 8, part 3): with no schedule (`sync_interval_minutes` 0), a
//! change made through SMB after a completed run reaches ScaiDrive within seconds through a
//! `change_notify` job that looks only at the changed folders; a change during a run gets a
//! follow-up run; changing the connector stops the old watch; one watcher per connector.
//!
//! Changes are made through SMB (`smbclient`, a second client beside the workers): Samba
//! reports those, not always changes made directly on its disk.

use std::time::{Duration, Instant};

use e2e_tests::{Backend, Options, TestServer};
use proto::v1;
use reqwest::StatusCode;
use samba_harness::SambaServer;
use serde_json::{json, Value};

use crate::driver::{no_skip, sha256, Conn, Env, Setup, TERMINAL};

/// An environment whose workers watch (the driver's default is off).
async fn start(setup: Setup) -> Env {
    let samba = tokio::task::spawn_blocking(SambaServer::start).await.unwrap().expect("samba");
    let (backend, opts) = match setup {
        Setup::Standalone => {
            (Backend::Sqlite, Options { embedded_workers: 2, rabbitmq: false, scheduler_tick_ms: None, watch: true })
        }
        Setup::Distributed => {
            (Backend::Postgres, Options { embedded_workers: 0, rabbitmq: true, scheduler_tick_ms: None, watch: true })
        }
    };
    let srv = TestServer::start_with(backend, opts).await;
    let workers = match setup {
        Setup::Standalone => vec![],
        Setup::Distributed => vec![srv.spawn_worker("w1"), srv.spawn_worker("w2")],
    };
    let api = srv.admin();
    Env { setup, srv, api, samba, workers }
}

/// Runs `smbclient -c <cmd>` as the service account (a client other than the workers).
fn smb(env: &Env, cmd: &str) {
    env.smbclient(cmd);
}

/// Writes `data` to `rel` through SMB.
fn smb_put(env: &Env, rel: &str, data: &[u8]) {
    let local = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(local.path(), data).unwrap();
    smb(env, &format!("put \"{}\" \"{}\"", local.path().display(), rel.replace('/', "\\")));
}

/// Waits until the connector's watch lease is held (the watcher subscribes right after).
async fn wait_watching(env: &Env, c: &Conn) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let row: Option<(i64,)> = sqlx::query_as(
            "SELECT fencing_token FROM watch_leases WHERE connector_id = $1 AND released = 0 AND expires_at > $2",
        )
        .bind(&c.id)
        .bind(now_ms())
        .fetch_optional(&env.srv.state.db.pool)
        .await
        .unwrap();
        if let Some((token,)) = row {
            // The CHANGE_NOTIFY request goes out right after the lease is granted.
            tokio::time::sleep(Duration::from_millis(700)).await;
            return token;
        }
        assert!(Instant::now() < deadline, "no worker started watching the connector\n{}", env.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

/// Polls until `done` holds (bounded), no manual trigger involved.
async fn eventually<F, Fut>(env: &Env, what: &str, timeout: Duration, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !done().await {
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}\n{}", env.logs());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn change_jobs(jobs: &[Value]) -> Vec<Value> {
    jobs.iter().filter(|j| j["trigger"] == "change_notify").cloned().collect()
}

/// Every change_notify job ended, completed and without errors.
async fn settled_change_jobs(env: &Env, c: &Conn) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let jobs = loop {
        let jobs = env.jobs(c).await;
        if jobs.iter().all(|j| TERMINAL.contains(&j["status"].as_str().unwrap())) {
            break jobs;
        }
        assert!(Instant::now() < deadline, "jobs still going: {jobs:#?}\n{}", env.logs());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let cj = change_jobs(&jobs);
    for j in &cj {
        assert_eq!(j["status"], "completed", "{j:#}\n{}", env.logs());
        assert_eq!(j["error_count"], 0, "{j:#}");
    }
    cj
}

async fn content_is(env: &Env, c: &Conn, rel: &str, data: &[u8]) -> bool {
    match env.target_item(c, rel).await {
        Some(v) => v["sha256"].as_str() == Some(sha256(data).as_str()),
        None => false,
    }
}

const WITHIN: Duration = Duration::from_secs(20);

async fn smb_changes_show_up_within_seconds(setup: Setup) {
    let env = start(setup).await;
    for d in ["docs", "other", "deep/sub"] {
        for i in 0..8 {
            env.write(&format!("{d}/f{i}.txt"), format!("{d} {i}").as_bytes());
        }
    }
    env.chown_all();
    let c = env.connector(json!({})).await;
    env.sync_ok(&c).await;
    let tree = env.drive_tree(&c).await.len() as u64;
    wait_watching(&env, &c).await;

    // A new file.
    smb_put(&env, "docs/new.txt", b"saved on the file server");
    eventually(&env, "docs/new.txt in ScaiDrive", WITHIN, || {
        content_is(&env, &c, "docs/new.txt", b"saved on the file server")
    })
    .await;
    let cj = settled_change_jobs(&env, &c).await;
    assert!(!cj.is_empty(), "{:#?}", env.jobs(&c).await);
    for j in &cj {
        let scanned = j["files_scanned"].as_u64().unwrap();
        assert!(scanned < tree, "a scoped run looks at less than the tree ({tree}): {j:#}");
        assert!(j["scope"]["folders"].is_array(), "{j:#}");
    }

    // A modification.
    smb_put(&env, "docs/f0.txt", b"changed on the file server");
    eventually(&env, "docs/f0.txt changed in ScaiDrive", WITHIN, || {
        content_is(&env, &c, "docs/f0.txt", b"changed on the file server")
    })
    .await;

    // A rename (the same ScaiDrive node, renamed).
    let before = env.must(&c, "other/f1.txt").await["id"].clone();
    smb(&env, "rename other\\f1.txt other\\renamed.txt");
    eventually(&env, "other/f1.txt renamed in ScaiDrive", WITHIN, || async {
        env.target_item(&c, "other/f1.txt").await.is_none() && env.target_item(&c, "other/renamed.txt").await.is_some()
    })
    .await;
    assert_eq!(env.must(&c, "other/renamed.txt").await["id"], before, "renamed, not re-uploaded");

    // A deletion in a subfolder.
    smb(&env, "del deep\\sub\\f2.txt");
    eventually(&env, "deep/sub/f2.txt gone from ScaiDrive", WITHIN, || async {
        env.target_item(&c, "deep/sub/f2.txt").await.is_none()
    })
    .await;

    let cj = settled_change_jobs(&env, &c).await;
    assert!(cj.len() >= 4, "one run per change at least: {cj:#?}");
    let manual = env.jobs(&c).await.iter().filter(|j| j["trigger"] == "manual").count();
    assert_eq!(manual, 1, "no other trigger than the first run");
    env.assert_mirrored(&c, "", no_skip).await;
    env.finish().await;
}

/// Triggers a run, or takes the change_notify job already queued or running.
async fn run_now(env: &Env, c: &Conn) -> String {
    let (st, j) = env.api.post(&c.url("/sync"), json!({})).await;
    match st {
        StatusCode::ACCEPTED => j["id"].as_str().unwrap().to_string(),
        StatusCode::CONFLICT => j["error"]["details"]["job_id"].as_str().unwrap_or_else(|| panic!("{j}")).to_string(),
        _ => panic!("{st} {j}"),
    }
}

/// End to end: a change made while a run is going reaches ScaiDrive without a trigger, by a
/// follow-up run (or, if the run ended before the debounce ran out, a fresh one). The
/// follow-up itself is pinned down deterministically below
/// (`a_change_reported_during_a_run_is_queued_when_it_ends`).
async fn a_change_during_a_run_is_not_missed(setup: Setup) {
    let env = start(setup).await;
    env.write("docs/a.txt", b"a");
    env.chown_all();
    let c = env.connector(json!({})).await;
    env.sync_ok(&c).await;
    wait_watching(&env, &c).await;

    // Enough content that the next run is still going when the change comes.
    crate::failures::bulk_tree(&env, "docs/big", 4, 48);
    env.chown_all();
    let job = run_now(&env, &c).await;
    crate::failures::wait_running(&env, &c, &job).await;
    smb_put(&env, "docs/late.txt", b"written while the run was going");
    // The run may not have seen it; the follow-up run does.
    eventually(&env, "docs/late.txt in ScaiDrive", Duration::from_secs(60), || {
        content_is(&env, &c, "docs/late.txt", b"written while the run was going")
    })
    .await;
    let j = env.wait_job(&c, &job, Duration::from_secs(120)).await;
    assert_eq!(j["status"], "completed", "{j:#}");
    // The change was reported too (the busy run may have seen the file already, and the
    // request comes after the debounce): a change_notify run requested after it started.
    let started = j["started_at"].as_str().unwrap().to_string();
    eventually(&env, "a change_notify run after the busy one started", WITHIN, || async {
        let jobs = env.jobs(&c).await;
        change_jobs(&jobs).iter().any(|f| f["requested_at"].as_str().unwrap() > started.as_str())
    })
    .await;
    settled_change_jobs(&env, &c).await;
    env.assert_mirrored(&c, "", no_skip).await;
    env.finish().await;
}

async fn watch_row(env: &Env, c: &Conn) -> (i64, i64, String) {
    sqlx::query_as("SELECT fencing_token, released, config_version FROM watch_leases WHERE connector_id = $1")
        .bind(&c.id)
        .fetch_one(&env.srv.state.db.pool)
        .await
        .unwrap()
}

async fn changing_the_connector_stops_its_watch(setup: Setup) {
    let env = start(setup).await;
    env.write("docs/a.txt", b"a");
    env.chown_all();
    let c = env.connector(json!({})).await;
    env.sync_ok(&c).await;
    let token = wait_watching(&env, &c).await;
    let (_, _, old_version) = watch_row(&env, &c).await;

    env.patch(&c, json!({ "exclude_patterns": { "extensions": [], "patterns": ["*.log"] } })).await;
    let patched_at = now_ms();
    smb_put(&env, "docs/after-patch.txt", b"after the patch");
    // The old watcher's request (or its next renewal) is refused: it stops and lets go.
    eventually(&env, "the old watch released", WITHIN, || async { watch_row(&env, &c).await.1 == 1 }).await;
    let jobs = env.jobs(&c).await;
    assert!(change_jobs(&jobs).is_empty(), "no run under the old watch: {jobs:#?}");
    let _ = patched_at;

    // The next completed run watches with the new configuration.
    env.sync_ok(&c).await;
    assert!(env.target_item(&c, "docs/after-patch.txt").await.is_some());
    let new_token = wait_watching(&env, &c).await;
    assert!(new_token > token, "a new watch lease");
    assert_ne!(watch_row(&env, &c).await.2, old_version, "with the new configuration");
    smb_put(&env, "docs/new.log", b"excluded now");
    smb_put(&env, "docs/new.txt", b"watched again");
    eventually(&env, "docs/new.txt in ScaiDrive", WITHIN, || content_is(&env, &c, "docs/new.txt", b"watched again"))
        .await;
    settled_change_jobs(&env, &c).await;
    assert!(env.target_item(&c, "docs/new.log").await.is_none(), "the new filter applies");
    env.finish().await;
}

/// The control plane's side of a change reported during a run, step by step over gRPC as a
/// worker would do it (no worker runs here): recorded on the running job, queued with the
/// merged scope in the transaction that records its outcome, merged into that queued job
/// afterwards; one watcher per connector; refused once the connector changed.
async fn a_change_reported_during_a_run_is_queued_when_it_ends(setup: Setup) {
    let env = start_without_workers(setup).await;
    let c = env.connector(json!({})).await;
    let run = env.trigger(&c).await;
    let mut cp = control_plane(&env).await;
    let lease = cp
        .acquire_lease(v1::AcquireLeaseRequest { connector_id: c.id.clone(), worker_id: "w-test".into(), ttl: None })
        .await
        .unwrap()
        .into_inner();
    let lease = v1::LeaseToken { lease_id: lease.lease_id, fencing_token: lease.fencing_token };
    let spec = cp
        .claim_job(v1::ClaimJobRequest { job_id: run.clone(), lease: Some(lease.clone()) })
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    assert!(!spec.config_version.is_empty() && spec.scope.is_none(), "{:?}", spec.config_version);
    let acquire = |worker: &str| v1::AcquireWatchRequest {
        connector_id: c.id.clone(),
        worker_id: worker.into(),
        ttl: None,
        config_version: spec.config_version.clone(),
    };
    let watch = cp.acquire_watch(acquire("w-test")).await.unwrap().into_inner().watch;
    let held = cp.acquire_watch(acquire("w-other")).await.expect_err("one watcher per connector");
    assert_eq!(proto::error_detail(&held).unwrap().code, "WATCH_HELD");
    let ask = |folders: &[(&str, bool)]| v1::RequestSyncRequest {
        watch: watch.clone(),
        scope: Some(v1::SyncScope {
            full: false,
            folders: folders.iter().map(|(p, r)| v1::ScopeFolder { path: p.to_string(), recursive: *r }).collect(),
        }),
    };
    for folders in [&[("docs", false)][..], &[("other", true)][..]] {
        let r = cp.request_sync(ask(folders)).await.unwrap().into_inner();
        assert_eq!((r.job_id.as_str(), r.disposition), (run.as_str(), v1::RequestSyncDisposition::FollowUp as i32));
    }
    let jobs = env.jobs(&c).await;
    assert_eq!(jobs.len(), 1, "nothing queued while the run goes: {jobs:#?}");

    cp.complete_job(v1::CompleteJobRequest {
        job_id: run.clone(),
        lease: Some(lease.clone()),
        outcome: v1::JobOutcome::Completed as i32,
        counts: Some(Default::default()),
        error: None,
        scaidrive_cursor: String::new(),
    })
    .await
    .unwrap();
    let jobs = env.jobs(&c).await;
    let next = jobs.iter().find(|j| j["id"] != run.as_str()).unwrap_or_else(|| panic!("a follow-up: {jobs:#?}"));
    assert_eq!(
        (next["status"].as_str(), next["trigger"].as_str()),
        (Some("queued"), Some("change_notify")),
        "{next:#}"
    );
    assert!(next["reason"].as_str().unwrap().contains("while the previous run"), "{next:#}");
    let want = json!({ "folders": [{ "path": "docs", "recursive": false }, { "path": "other", "recursive": true }] });
    assert_eq!(next["scope"], want, "{next:#}");

    // Another change while it waits: merged into it, not a second job.
    let next_id = next["id"].as_str().unwrap().to_string();
    let r = cp.request_sync(ask(&[("docs/new", true)])).await.unwrap().into_inner();
    assert_eq!((r.job_id.as_str(), r.disposition), (next_id.as_str(), v1::RequestSyncDisposition::Merged as i32));
    let merged = env.job(&c, &next_id).await;
    assert_eq!(merged["scope"]["folders"].as_array().unwrap().len(), 3, "{merged:#}");
    assert_eq!(env.jobs(&c).await.len(), 2);

    // The connector changes: the watch is refused from then on.
    env.patch(&c, json!({ "exclude_patterns": { "extensions": ["tmp"], "patterns": [] } })).await;
    let e =
        cp.renew_watch(v1::RenewWatchRequest { watch: watch.clone(), ttl: None }).await.expect_err("renewal refused");
    assert_eq!(proto::error_detail(&e).unwrap().code, "WATCH_CONFIG_CHANGED");
    let e = cp.request_sync(ask(&[("docs", false)])).await.expect_err("request refused");
    assert_eq!(proto::error_detail(&e).unwrap().code, "WATCH_CONFIG_CHANGED");
    env.finish().await;
}

type Intercept = Box<dyn FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Send>;
type Cp = v1::control_plane_client::ControlPlaneClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Intercept>,
>;

/// A ControlPlane client with the worker token, as a worker has.
async fn control_plane(env: &Env) -> Cp {
    let ch = tonic::transport::Channel::from_shared(env.srv.grpc_url.clone()).unwrap().connect().await.unwrap();
    let auth: tonic::metadata::MetadataValue<_> = format!("Bearer {}", env.srv.worker_token()).parse().unwrap();
    let f: Intercept = Box::new(move |mut r: tonic::Request<()>| {
        r.metadata_mut().insert("authorization", auth.clone());
        Ok(r)
    });
    v1::control_plane_client::ControlPlaneClient::with_interceptor(ch, f)
}

/// An environment with no worker at all: jobs stay queued until the test claims them.
async fn start_without_workers(setup: Setup) -> Env {
    let samba = tokio::task::spawn_blocking(SambaServer::start).await.unwrap().expect("samba");
    let backend = if setup == Setup::Standalone { Backend::Sqlite } else { Backend::Postgres };
    let srv = TestServer::start_with(backend, Options { embedded_workers: 0, ..Default::default() }).await;
    let api = srv.admin();
    Env { setup, srv, api, samba, workers: vec![] }
}

on_both_setups!(
    smb_changes_show_up_within_seconds,
    a_change_during_a_run_is_not_missed,
    a_change_reported_during_a_run_is_queued_when_it_ends,
    changing_the_connector_stops_its_watch
);

/// Two workers complete runs of the same connector; only one of them watches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_one_worker_watches_a_connector() {
    let env = start(Setup::Distributed).await;
    env.write("docs/a.txt", b"a");
    env.chown_all();
    let c = env.connector(json!({})).await;
    let mut ran_on = std::collections::BTreeSet::new();
    for _ in 0..6 {
        let j = env.sync_ok(&c).await;
        ran_on.insert(j["worker"].as_str().unwrap().to_string());
        if ran_on.len() == 2 {
            break;
        }
    }
    wait_watching(&env, &c).await;
    smb_put(&env, "docs/b.txt", b"b");
    eventually(&env, "docs/b.txt in ScaiDrive", WITHIN, || content_is(&env, &c, "docs/b.txt", b"b")).await;
    settled_change_jobs(&env, &c).await;
    let watching: Vec<usize> = env
        .workers
        .iter()
        .map(|w| {
            w.log().lines().filter(|l| l.contains(&c.id) && l.contains("watching the connector's SMB tree")).count()
        })
        .collect();
    assert_eq!(
        watching.iter().sum::<usize>(),
        1,
        "exactly one watcher (runs on {ran_on:?}): {watching:?}\n{}",
        env.logs()
    );
    if ran_on.len() == 2 {
        let held =
            env.workers.iter().any(|w| w.log().lines().any(|l| l.contains("another worker watches this connector")));
        assert!(held, "the other worker found the watch taken\n{}", env.logs());
    }
    env.finish().await;
}
