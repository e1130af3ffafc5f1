//! Leases under stress (issue 9, part 2), beyond tests/fleet's `leases_fence_every_write`
//! (one stale write of each kind refused) and tests/sync/fleet.rs (one pause past the lease):
//!
//! - workers frozen (SIGSTOP) again and again, some past their 10 s lease, while runs of
//!   three connectors go on: the lease records never show two live leases of one connector,
//!   the frozen workers give up cleanly when they wake (and go on serving), and nothing is
//!   lost or duplicated;
//! - acquirers racing for one connector through two api-server replicas (one of them a
//!   process of its own), many rounds: one winner per round, tokens strictly growing, and the
//!   loser of a takeover cannot renew or write.
//!
//! - workers with skewed clocks (libfaketime): one whose clocks run at 5 % speed loses its
//!   lease to the api-server's clock and is taken over; ones three hours ahead and behind
//!   run jobs normally and never hold a lease while another is live.
//!
//! Clock skew: lease expiry is decided by the api-server alone (`expires_at = now + ttl` in
//! its own clock, checked in the same statement as every write); a worker sends only a
//! duration and times its renewals on a monotonic clock, so a worker's wall clock cannot
//! extend or steal a lease. docs/RELIABILITY.md says what replicas' clocks must satisfy.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use proto::v1;
use proto::v1::control_plane_client::ControlPlaneClient;
use proto::v1::file_service_client::FileServiceClient;
use serde_json::json;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::crash::Rng;
use crate::driver::{no_skip, Env, Setup, TERMINAL};
use crate::failures::bulk_tree;
use crate::proxy::Proxy;

/// A `leases` row: connector, token, acquired at, expires at, released, worker.
type LeaseRow = (String, i64, i64, i64, i64, String);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_workers_never_make_two_runs_of_a_connector() {
    let secs: u64 = std::env::var("LEASE_STRESS_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(40);
    let mut rng = Rng::from_env("lease stress");
    let mut env = Env::start(Setup::Distributed).await;
    // Runs must last long enough to be caught running and frozen past their lease: the SMB
    // link is slowed (20 ms per forwarded piece), so a run takes a second or more however
    // fast the product is.
    let smb = Proxy::start(env.samba.addr()).await;
    smb.slow(Duration::from_millis(20));
    let mut conns = Vec::new();
    for dir in ["l-a", "l-b", "l-c"] {
        bulk_tree(&env, dir, 4, 6);
        env.chown_all();
        let c = env.connector(json!({"base_path": dir, "server_port": smb.port()})).await;
        conns.push((dir, c, None::<String>, 0u64));
    }
    let started = Instant::now();
    let mut frozen: Option<(usize, Instant)> = None;
    let mut next_freeze = Instant::now() + Duration::from_secs(2);
    let (mut freezes, mut runs) = (0u64, 0u64);
    while started.elapsed() < Duration::from_secs(secs) || frozen.is_some() {
        if let Some((w, until)) = frozen {
            if Instant::now() >= until {
                env.workers[w].signal("CONT");
                frozen = None;
                next_freeze = Instant::now() + Duration::from_millis(1000 + rng.below(3000));
            }
        } else if Instant::now() >= next_freeze && started.elapsed() < Duration::from_secs(secs) {
            // Half the pauses outlast the 10 s lease, half end inside it.
            // Most often the worker of a running job, past its lease; sometimes any worker,
            // briefly.
            let mut running = None;
            for (_, c, job, _) in &conns {
                if let Some(j) = job {
                    let j = env.job(c, j).await;
                    if j["status"] == "running" {
                        running = j["worker"].as_str().and_then(|w| ["w1", "w2"].iter().position(|x| *x == w));
                    }
                }
            }
            let (w, pause) = match running {
                Some(w) if rng.chance(70) => (w, 12_000 + rng.below(4_000)),
                _ => (rng.below(2) as usize, 1_000 + rng.below(6_000)),
            };
            env.workers[w].signal("STOP");
            frozen = Some((w, Instant::now() + Duration::from_millis(pause)));
            freezes += 1;
        }
        for (i, (dir, c, job, gen)) in conns.iter_mut().enumerate() {
            if let Some(j) = job.as_ref() {
                let j = env.job(c, j).await;
                if !TERMINAL.contains(&j["status"].as_str().unwrap()) {
                    continue;
                }
                runs += 1;
            }
            *gen += 1;
            env.write(&format!("{dir}/touch-{i}.txt"), format!("{dir} generation {gen}").as_bytes());
            let (st, j) = env.api.post(&c.url("/sync"), json!({})).await;
            *job = (st == reqwest::StatusCode::ACCEPTED).then(|| j["id"].as_str().unwrap().to_string());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for (_, c, _, _) in &conns {
        env.wait_idle(c, Duration::from_secs(120)).await;
    }
    // Both workers are alive: the frozen ones gave up their runs, not their lives.
    for w in env.workers.iter_mut() {
        assert!(w.child.try_wait().unwrap().is_none(), "worker died:\n{}", w.log());
    }
    for (dir, c, _, _) in &conns {
        env.sync_ok(c).await;
        env.assert_mirrored(c, dir, no_skip).await;
        for j in env.jobs(c).await {
            assert!(TERMINAL.contains(&j["status"].as_str().unwrap()), "{j:#}");
        }
        // A run that took over re-sends what the frozen run had committed but not recorded:
        // stored once, not as a second identical version.
        for (path, e) in env.drive_tree(c).await {
            if let crate::driver::Entry::File { .. } = e {
                let item = env.must(c, &path).await;
                let versions = env.versions(item["id"].as_str().unwrap()).await;
                let mut shas: Vec<&str> = versions.iter().map(|v| v["sha256"].as_str().unwrap()).collect();
                let n = shas.len();
                shas.dedup();
                assert_eq!(shas.len(), n, "{dir}/{path}: one content stored twice in a row: {versions:#?}");
            }
        }
    }

    let (rows, takeovers) = lease_history(&env).await;
    let gave_up = env.workers.iter().filter(|w| w.log().contains("lease lost")).count();
    println!("lease stress: {freezes} freezes, {runs} runs, {} leases, {takeovers} takeovers, {gave_up} workers gave a run up", rows.len());
    assert!(takeovers > 0, "no pause outlasted a lease: the test proved nothing (make it longer)");
    assert!(gave_up > 0, "no frozen worker noticed it lost its lease\n{}", env.logs());
    env.finish().await;
}

/// The lease records, checked: per connector, by token, a lease is acquired only after the one
/// before was released or had expired, and acquisition times grow with the token. Returns
/// the rows and the number of takeovers (a lease that was neither released nor renewed,
/// followed by another worker's).
async fn lease_history(env: &Env) -> (Vec<LeaseRow>, usize) {
    let rows: Vec<LeaseRow> = sqlx::query_as(
        "SELECT connector_id, fencing_token, acquired_at, expires_at, released, worker_id FROM leases
         ORDER BY connector_id, fencing_token",
    )
    .fetch_all(&env.srv.state.db.pool)
    .await
    .unwrap();
    let mut by_conn: BTreeMap<&str, Vec<&LeaseRow>> = BTreeMap::new();
    for r in &rows {
        by_conn.entry(r.0.as_str()).or_default().push(r);
    }
    let mut takeovers = 0;
    for (conn, ls) in &by_conn {
        for w in ls.windows(2) {
            let (a, b) = (w[0], w[1]);
            assert!(b.1 > a.1 && b.2 >= a.2, "{conn}: tokens and times out of order: {a:?} {b:?}");
            assert!(
                a.4 == 1 || b.2 > a.3,
                "{conn}: lease {} ({}) was live until {} when lease {} ({}) was granted at {}",
                a.1,
                a.5,
                a.3,
                b.1,
                b.5,
                b.2
            );
            if a.4 == 0 && a.5 != b.5 {
                takeovers += 1;
            }
        }
    }
    (rows, takeovers)
}

/// libfaketime's preload library for multi-threaded programs (Debian's `libfaketime`
/// package, which `.ci/run` installs).
fn faketime_library() -> String {
    let candidates = [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1",
        "/usr/lib/faketime/libfaketimeMT.so.1",
    ];
    candidates
        .iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or_else(|| panic!("libfaketime is missing (apt-get install libfaketime; .ci/run does): {candidates:?}"))
        .to_string()
}

/// A worker whose clocks libfaketime skews: `faketime` is a FAKETIME spec, e.g. `+3h` (wall
/// clock three hours ahead) or `+0 x0.05` (wall and monotonic clocks at 5 % speed).
fn skewed_worker(env: &Env, id: &str, faketime: &str, extra_env: &[(&str, &str)]) -> e2e_tests::WorkerProcess {
    let mut vars = vec![
        ("LD_PRELOAD".to_string(), faketime_library()),
        ("FAKETIME".to_string(), faketime.to_string()),
        ("FAKETIME_NO_CACHE".to_string(), "1".to_string()),
    ];
    vars.extend(extra_env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let opts = e2e_tests::WorkerOptions { control_plane_url: None, env: vars };
    env.srv.spawn_worker_with(id, &opts)
}

/// Workers with skewed clocks (libfaketime): a worker whose clocks run at 5 % speed holds
/// a job far longer than its 10 s lease by its own reckoning, so it renews too late; the
/// api-server, which alone decides expiry, lets the lease lapse, refuses the slow worker's
/// next write, and another worker takes the job over. Workers whose wall clocks are three
/// hours ahead and behind run jobs like any other and never get a lease while another is
/// live. The lease records prove it, and the tree converges with nothing duplicated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skewed_worker_clocks_cannot_extend_or_steal_a_lease() {
    let mut env = Env::start(Setup::Distributed).await;
    env.workers.clear(); // the two default workers: replaced by skewed ones
                         // Many small files: a run of tens of seconds at two files at a time.
    for i in 0..1200 {
        env.write(&format!("slow/d{:02}/f{i:04}.txt", i % 12), format!("slow file {i}").as_bytes());
    }
    for i in 0..20 {
        env.write(&format!("quick/q{i:02}.txt"), format!("quick file {i}").as_bytes());
    }
    env.chown_all();
    // Through a slowed SMB link (10 ms per forwarded piece): the run lasts far longer than
    // one lease in real time, however fast the product is.
    let smb = Proxy::start(env.samba.addr()).await;
    smb.slow(Duration::from_millis(10));
    let slow_conn = env.connector(json!({"base_path": "slow", "server_port": smb.port()})).await;
    let quick_conn = env.connector(json!({"base_path": "quick"})).await;

    // The slow worker alone takes the big run.
    // Two files at a time: the run takes well over the 10 s lease in real time (with the
    // default 32 in flight it can finish within one lease).
    env.workers.push(skewed_worker(&env, "w-slow", "+0 x0.05", &[("SCAIDRIVE_MAX_TRANSFERS", "2")]));
    let job = env.trigger(&slow_conn).await;
    let j = crate::failures::wait_running(&env, &slow_conn, &job).await;
    assert_eq!(j["worker"], "w-slow", "{j:#}");
    // Then the wall-clock-skewed ones join.
    env.workers.push(skewed_worker(&env, "w-ahead", "+3h", &[]));
    env.workers.push(skewed_worker(&env, "w-behind", "-3h", &[]));

    let j = env.wait_job(&slow_conn, &job, Duration::from_secs(240)).await;
    assert_eq!(j["status"], "completed", "{j:#}\n{}", env.logs());
    assert_ne!(j["worker"], "w-slow", "another worker took the run over: {j:#}\n{}", env.logs());
    let slow_log = env.workers[0].log();
    assert!(
        slow_log.contains("LEASE_EXPIRED") || slow_log.contains("LEASE_STALE") || slow_log.contains("lease lost"),
        "the slow worker was told its lease was gone:\n{slow_log}"
    );

    env.wait_idle(&slow_conn, Duration::from_secs(120)).await;
    // Runs back to back on both connectors, served by whichever worker takes them.
    let mut served_by = BTreeMap::<String, usize>::new();
    for round in 0..6 {
        let (c, dir) = if round % 2 == 0 { (&quick_conn, "quick") } else { (&slow_conn, "slow") };
        env.write(&format!("{dir}/round-{round}.txt"), format!("round {round}").as_bytes());
        env.chown_all();
        let j = env.sync_ok(c).await;
        *served_by.entry(j["worker"].as_str().unwrap_or("?").to_string()).or_default() += 1;
    }
    for (c, base) in [(&slow_conn, "slow"), (&quick_conn, "quick")] {
        env.assert_mirrored(c, base, no_skip).await;
        for j in env.jobs(c).await {
            assert!(TERMINAL.contains(&j["status"].as_str().unwrap()), "{j:#}");
        }
    }
    let (rows, takeovers) = lease_history(&env).await;
    let slow_taken_over =
        rows.windows(2).any(|w| w[0].0 == w[1].0 && w[0].5 == "w-slow" && w[0].4 == 0 && w[1].5 != "w-slow");
    println!("skewed clocks: {} leases, {takeovers} takeovers, later runs served by {served_by:?}", rows.len());
    assert!(slow_taken_over, "the slow worker's lapsed lease was taken over: {rows:#?}");
    assert!(
        served_by.keys().any(|w| w == "w-ahead" || w == "w-behind"),
        "a wall-clock-skewed worker ran jobs: {served_by:?}"
    );
    env.finish().await;
}

#[derive(Clone)]
struct Auth(String);

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut r: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        r.metadata_mut().insert("authorization", format!("Bearer {}", self.0).parse().unwrap());
        Ok(r)
    }
}

type Cp = ControlPlaneClient<InterceptedService<Channel, Auth>>;
type Fs = FileServiceClient<InterceptedService<Channel, Auth>>;

async fn control_plane(url: &str, token: &str) -> Cp {
    let ch = Channel::from_shared(url.to_string()).unwrap().connect().await.unwrap();
    ControlPlaneClient::with_interceptor(ch, Auth(token.into()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_acquirers_on_two_replicas_get_one_lease_at_a_time() {
    let rounds: u64 = std::env::var("LEASE_RACE_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(40);
    let mut env = Env::start(Setup::Distributed).await;
    drop(std::mem::take(&mut env.workers));
    let c = env.connector(json!({})).await;
    let mut replica = env.srv.api_process("api-race");
    replica.start().await;
    let token = env.srv.worker_token();
    let cps = [control_plane(&env.srv.grpc_url, &token).await, control_plane(&replica.grpc_url, &token).await];

    let mut last_token = 0u64;
    let mut previous: Option<v1::LeaseToken> = None;
    for round in 0..rounds {
        // Eight acquirers at once, four through each replica.
        let attempts = (0..8).map(|i| {
            let mut cp = cps[i % 2].clone();
            let connector_id = c.id.clone();
            async move {
                cp.acquire_lease(v1::AcquireLeaseRequest {
                    connector_id,
                    worker_id: format!("racer-{i}"),
                    ttl: Some(prost_types::Duration { seconds: 10, nanos: 0 }),
                })
                .await
            }
        });
        let results = futures::future::join_all(attempts).await;
        let winners: Vec<&v1::AcquireLeaseResponse> =
            results.iter().filter_map(|r| r.as_ref().ok().map(|r| r.get_ref())).collect();
        assert_eq!(winners.len(), 1, "round {round}: {results:?}");
        for r in results.iter().filter_map(|r| r.as_ref().err()) {
            let code = proto::error_detail(r).map(|d| d.code).unwrap_or_default();
            assert_eq!(code, "LEASE_HELD", "round {round}: {r:?}");
        }
        let w = winners[0];
        assert!(w.fencing_token > last_token, "round {round}: token {} after {last_token}", w.fencing_token);
        last_token = w.fencing_token;
        let lease = v1::LeaseToken { lease_id: w.lease_id.clone(), fencing_token: w.fencing_token };
        // The loser of the round before cannot come back through either replica.
        if let Some(old) = previous.take() {
            for cp in &cps {
                let e = cp
                    .clone()
                    .renew_lease(v1::RenewLeaseRequest {
                        lease_id: old.lease_id.clone(),
                        fencing_token: old.fencing_token,
                        ttl: None,
                    })
                    .await
                    .unwrap_err();
                let code = proto::error_detail(&e).map(|d| d.code).unwrap_or_default();
                assert!(code.starts_with("LEASE_"), "round {round}: a stale lease renewed: {e:?}");
            }
        }
        // Every other round the holder releases; otherwise its lease is made to lapse (as
        // if its worker froze), through the database, and the next round takes over.
        if round % 2 == 0 {
            let r = cps[(round as usize) % 2]
                .clone()
                .release_lease(v1::ReleaseLeaseRequest {
                    lease_id: lease.lease_id.clone(),
                    fencing_token: lease.fencing_token,
                })
                .await
                .unwrap()
                .into_inner();
            assert!(r.released);
        } else {
            sqlx::query("UPDATE leases SET expires_at = expires_at - 60000 WHERE id = $1")
                .bind(&lease.lease_id)
                .execute(&env.srv.state.db.pool)
                .await
                .unwrap();
        }
        previous = Some(lease);
    }
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM leases WHERE connector_id = $1")
        .bind(&c.id)
        .fetch_one(&env.srv.state.db.pool)
        .await
        .unwrap();
    assert_eq!(n as u64, rounds, "one lease row per round, the refused attempts left none");
    drop(replica);
    env.finish().await;
}

async fn acquire(cp: &mut Cp, connector: &str, worker: &str) -> v1::LeaseToken {
    let r = cp
        .acquire_lease(v1::AcquireLeaseRequest {
            connector_id: connector.into(),
            worker_id: worker.into(),
            ttl: Some(prost_types::Duration { seconds: 30, nanos: 0 }),
        })
        .await
        .unwrap()
        .into_inner();
    v1::LeaseToken { lease_id: r.lease_id, fencing_token: r.fencing_token }
}

async fn upload(fs: &mut Fs, lease: &v1::LeaseToken, share: &str, data: &[u8], base: &str) -> v1::UploadResponse {
    let header = v1::UploadHeader {
        lease: Some(lease.clone()),
        share_id: share.into(),
        parent: Some(v1::NodeRef { r#ref: Some(v1::node_ref::Ref::Path(crate::driver::TARGET.into())) }),
        name: "report.txt".into(),
        size: data.len() as u64,
        sha256: crate::driver::sha256(data),
        base_version_id: base.into(),
        create_parents: true,
        modified_at: Some(prost_types::Timestamp { seconds: 1_700_000_000, nanos: 0 }),
        ..Default::default()
    };
    let msgs = vec![
        v1::UploadRequest { part: Some(v1::upload_request::Part::Header(header)) },
        v1::UploadRequest { part: Some(v1::upload_request::Part::Chunk(data.to_vec())) },
    ];
    fs.upload(futures::stream::iter(msgs)).await.unwrap().into_inner()
}

/// The case the frozen-worker stress found, step by step: a run commits a new version and
/// freezes before recording it; the run that takes over sees ScaiDrive changed (by the frozen
/// run) and SMB changed since the last recorded state, so SMB wins and it uploads the same
/// bytes with the current version as base. That must be `unchanged`, not a second version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_resending_what_the_frozen_run_committed_stores_it_once() {
    let mut env = Env::start(Setup::Distributed).await;
    drop(std::mem::take(&mut env.workers));
    let c = env.connector(json!({})).await;
    let token = env.srv.worker_token();
    let mut cp = control_plane(&env.srv.grpc_url, &token).await;
    let ch = Channel::from_shared(env.srv.grpc_url.clone()).unwrap().connect().await.unwrap();
    let mut fs: Fs = FileServiceClient::with_interceptor(ch, Auth(token.clone()));

    let a = acquire(&mut cp, &c.id, "w1").await;
    let v1 = upload(&mut fs, &a, &c.share, b"first", "").await;
    let base = v1.node.as_ref().unwrap().current_version_id.clone();
    let v2 = upload(&mut fs, &a, &c.share, b"second", &base).await;
    assert!(!v2.unchanged);
    let node = v2.node.unwrap();
    // w1 freezes past its lease; w2 takes over and re-sends "second" on the current version.
    sqlx::query("UPDATE leases SET expires_at = 0 WHERE id = $1")
        .bind(&a.lease_id)
        .execute(&env.srv.state.db.pool)
        .await
        .unwrap();
    let b = acquire(&mut cp, &c.id, "w2").await;
    let again = upload(&mut fs, &b, &c.share, b"second", &node.current_version_id).await;
    assert!(again.unchanged, "identical content on its own current version is stored once: {again:?}");
    assert_eq!(again.node.unwrap().current_version_id, node.current_version_id);
    // With the base the takeover's state named (the version before): unchanged as well.
    let stale = upload(&mut fs, &b, &c.share, b"second", &base).await;
    assert!(stale.unchanged, "{stale:?}");
    let versions = env.versions(&node.id).await;
    assert_eq!(versions.len(), 2, "{versions:#?}");
    env.finish().await;
}
