//! Limits (issue 9, part 8): request bodies are bounded on every JSON endpoint and uploads by
//! `--max-file-size`; a worker never runs more than `SCAIDRIVE_MAX_JOBS` jobs at once (and
//! one connector never more than one); every SMB, database and queue call is bounded in time,
//! so one hung file server (or broker) cannot stall the other connectors.

use std::time::{Duration, Instant};

use e2e_tests::Api;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::driver::no_skip;
use crate::failures::bulk_tree;
use crate::proxy::{Faulty, Proxy, WorkerOpts};

/// Every JSON endpoint of the OpenAPI document with a body refuses one over the limit with
/// 413 `PAYLOAD_TOO_LARGE` (never a 5xx), and uploads over `--max-file-size` are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_and_uploads_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = api_server::Config::for_dir(dir.path().to_path_buf(), None);
    config.max_file_size = Some(1 << 20);
    let state = api_server::AppState::open(config).await.unwrap();
    let token = api_server::cli::bootstrap(&state).await.unwrap().unwrap();
    let running = api_server::start(state, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let api = Api { http: reqwest::Client::new(), base: format!("http://{}", running.addr), token: Some(token) };
    let share = api.share("S").await;

    let (_, doc) = api.get("/api/v1/openapi.json").await;
    let huge = format!(r#"{{"name":"{}"}}"#, "x".repeat(3 << 20));
    let mut checked = 0;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            let json_body = op["requestBody"]["content"].get("application/json").is_some();
            if !json_body {
                continue;
            }
            let url = path
                .replace("{share_id}", &share)
                .replace("{id}", "x")
                .replace("{connector_id}", "cnn_x")
                .replace("{resource_type}", "share")
                .replace("{resource_id}", &share);
            let url = regex_free_fill(&url);
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let rb = api.request(m.clone(), &url).header("Content-Type", "application/json").body(huge.clone());
            let (st, v) = Api::send(rb).await;
            assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE, "{m} {url}: {v}");
            assert_eq!(v["error"]["code"], "PAYLOAD_TOO_LARGE", "{m} {url}: {v}");
            checked += 1;
        }
    }
    assert!(checked >= 15, "only {checked} JSON endpoints found");

    let (st, v) = api.upload(&share, "/ok.bin", vec![7u8; 1 << 20]).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let (st, v) = api.upload(&share, "/big.bin", vec![7u8; (1 << 20) + 1]).await;
    assert_eq!((st, v["error"]["code"].as_str()), (StatusCode::PAYLOAD_TOO_LARGE, Some("PAYLOAD_TOO_LARGE")), "{v}");
    let (st, v) = api.get(&format!("/api/v1/shares/{share}/items?path=/big.bin")).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "a refused upload leaves nothing: {v}");
    running.stop().await.unwrap();
}

/// Any `{param}` left in a path template becomes a syntactically valid id.
fn regex_free_fill(path: &str) -> String {
    let mut out = String::new();
    let mut rest = path;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        let j = rest[i..].find('}').unwrap() + i;
        out.push('x');
        rest = &rest[j + 1..];
    }
    out.push_str(rest);
    out
}

/// The most jobs that overlap in time, from their `started_at` / `finished_at`.
fn max_overlap(jobs: &[Value]) -> usize {
    let mut edges: Vec<(String, i32)> = Vec::new();
    for j in jobs {
        if let (Some(s), Some(f)) = (j["started_at"].as_str(), j["finished_at"].as_str()) {
            edges.push((s.to_string(), 1));
            edges.push((f.to_string(), -1));
        }
    }
    // Ends sort before starts at the same instant (-1 < 1).
    edges.sort();
    let (mut cur, mut max) = (0i32, 0i32);
    for (_, d) in edges {
        cur += d;
        max = max.max(cur);
    }
    max as usize
}

/// One worker with `SCAIDRIVE_MAX_JOBS=2` and four connectors due at once: never more than two
/// runs at a time (polled, and from the jobs' own times), all four complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_runs_at_most_max_jobs_at_once() {
    let f = Faulty::start(WorkerOpts { count: 1, max_jobs: 2, ..Default::default() }).await;
    let env = &f.env;
    bulk_tree(env, "bulk", 8, 8);
    env.chown_all();
    let mut conns = Vec::new();
    for _ in 0..4 {
        conns.push(env.connector(json!({})).await);
    }
    let mut jobs = Vec::new();
    for c in &conns {
        jobs.push(env.trigger(c).await);
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seen_max = 0;
    loop {
        let mut running = 0;
        let mut done = 0;
        for (c, j) in conns.iter().zip(&jobs) {
            let s = env.job(c, j).await;
            match s["status"].as_str().unwrap() {
                "running" => running += 1,
                st if crate::driver::TERMINAL.contains(&st) => done += 1,
                _ => {}
            }
        }
        assert!(running <= 2, "{running} jobs running on one worker with SCAIDRIVE_MAX_JOBS=2");
        seen_max = seen_max.max(running);
        if done == 4 {
            break;
        }
        assert!(Instant::now() < deadline, "the jobs did not finish\n{}", env.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(seen_max, 2, "the worker should use both of its slots");
    let mut all = Vec::new();
    for (c, j) in conns.iter().zip(&jobs) {
        let s = env.job(c, j).await;
        assert_eq!(s["status"], "completed", "{s:#}");
        all.push(s);
    }
    assert!(max_overlap(&all) <= 2, "job times overlap more than SCAIDRIVE_MAX_JOBS: {all:#?}");
    f.finish().await;
}

/// A listener that accepts TCP connections and never answers: a hung file server.
async fn black_hole() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let h = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    (addr, h)
}

/// One connector's file server accepts connections and never answers; another's hangs in the
/// middle of a transfer. Their connection test and jobs fail with their codes within the SMB
/// timeouts, while a third connector on a healthy server keeps syncing on the same worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_file_server_times_out_without_stalling_other_connectors() {
    let timeouts = vec![
        ("SCAIDRIVE_SMB_CONNECT_TIMEOUT_SECS".to_string(), "3".to_string()),
        ("SCAIDRIVE_SMB_REQUEST_TIMEOUT_SECS".to_string(), "4".to_string()),
    ];
    let f = Faulty::start(WorkerOpts { count: 1, max_jobs: 3, env: timeouts, ..Default::default() }).await;
    let env = &f.env;
    let (hole, _h) = black_hole().await;
    let stall = Proxy::start(env.samba.addr()).await;
    bulk_tree(env, "bulk", 16, 8);
    env.write("healthy/a.txt", b"a");
    env.chown_all();
    let hung = env.connector(json!({"server_port": hole.port()})).await;
    let slow = env.connector(json!({"server_port": stall.port(), "base_path": "bulk"})).await;
    let healthy = env.connector(json!({"base_path": "healthy"})).await;

    // The connection test of the silent server: a clear failure, bounded by the connect timeout.
    let t0 = Instant::now();
    let (st, r) = env.api.post(&hung.url("/test"), json!({})).await;
    assert_eq!(st, StatusCode::OK, "{r}");
    assert_eq!((&r["success"], r["error"]["code"].as_str()), (&json!(false), Some("CONNECTOR_UNREACHABLE")), "{r}");
    assert!(r["message"].as_str().unwrap_or("").contains("timed out"), "{r}");
    assert!(t0.elapsed() < Duration::from_secs(15), "{:?}", t0.elapsed());

    // Its job, and a job whose server hangs mid-transfer, while the healthy one syncs.
    let hung_job = env.trigger(&hung).await;
    // The slow server hangs once 72 MiB of its 128 MiB went through: mid-transfer, however
    // fast the transfer goes.
    stall.stall_after(72 << 20);
    let slow_job = env.trigger(&slow).await;
    env.wait_job_until(&slow, &slow_job, Duration::from_secs(60), "transferring", |j| {
        j["bytes_transferred"].as_i64().unwrap_or(0) > 0
    })
    .await;
    stall.stall();
    let t0 = Instant::now();
    for i in 0..2 {
        env.write(&format!("healthy/b{i}.txt"), format!("b{i}").as_bytes());
        env.chown_all();
        let j = env.sync_ok(&healthy).await;
        assert!(j["files_synced"].as_i64().unwrap() >= 1, "{j:#}");
    }
    let healthy_took = t0.elapsed();
    let j = env.wait_job(&hung, &hung_job, Duration::from_secs(30)).await;
    assert_eq!((&j["status"], j["error"]["code"].as_str()), (&json!("failed"), Some("CONNECTOR_UNREACHABLE")), "{j:#}");
    let j = env.wait_job(&slow, &slow_job, Duration::from_secs(60)).await;
    assert!(j["status"] == "failed" || j["error_count"].as_i64().unwrap() > 0, "the hung transfer must fail: {j:#}");
    eprintln!("slow job: {} {} errors, healthy runs took {healthy_took:?}", j["status"], j["error_count"]);
    assert!(healthy_took < Duration::from_secs(20), "the healthy connector was held up: {healthy_took:?}");

    stall.restore();
    let j = env.sync_and_wait(&slow).await;
    let j = if j["error_count"] == 0 && j["status"] == "completed" { j } else { env.sync_and_wait(&slow).await };
    assert_eq!((&j["status"], &j["error_count"]), (&json!("completed"), &json!(0)), "{j:#}");
    env.assert_mirrored(&healthy, "healthy", no_skip).await;
    drop(stall);
    f.finish().await;
}

/// A broker that stops answering (connections kept open, no byte moves) does not hang the
/// REST API: a manual run is still recorded within the queue's operation timeout and runs once
/// the broker answers again. Standalone has no broker: distributed only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_broker_does_not_hang_the_api() {
    let f = Faulty::start(WorkerOpts { count: 1, ..Default::default() }).await;
    let env = &f.env;
    env.write("a.txt", b"a");
    env.chown_all();
    let c = env.connector(json!({})).await;
    f.amqp.stall();
    let t0 = Instant::now();
    let job = env.trigger(&c).await;
    assert!(t0.elapsed() < Duration::from_secs(30), "POST /sync took {:?}", t0.elapsed());
    let (st, _) = env.api.get(&c.url("")).await;
    assert_eq!(st, StatusCode::OK);
    f.amqp.restore();
    f.amqp.cut();
    let j = env.wait_job(&c, &job, Duration::from_secs(90)).await;
    assert_eq!(j["status"], "completed", "{j:#}\n{}", env.logs());
    env.assert_mirrored(&c, "", no_skip).await;
    f.finish().await;
}
