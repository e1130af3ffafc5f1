//! The connector's password never leaves the server: not in a REST answer, a job, an event,
//! a log line of the api-server or a worker at any level, an exported trace, a queue message,
//! nor in clear in the database or anything else under the data directory.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use e2e_tests::{PgDatabase, WorkerProcess};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use reqwest::StatusCode;
use samba_harness::SambaServer;
use serde_json::{json, Value};

use crate::driver::{Env, Setup, PASSWORD};
use crate::proxy::{addr_of, url_via, Proxy};

on_both_setups!(the_password_never_appears_outside_the_secret_store);

const WRONG: &str = "Wr0ng-Secret-Pw.99";

async fn the_password_never_appears_outside_the_secret_store(setup: Setup) {
    let env = Env::start(setup).await;
    assert_eq!(env.samba.service_account().2, PASSWORD);
    env.write("a.txt", b"a");
    let mut answers: Vec<Value> = Vec::new();
    let c = env.connector(json!({})).await;
    answers.push(env.connector_json(&c).await);
    answers.push(env.sync_ok(&c).await);
    answers.push(env.api.post(&c.url("/test"), json!({})).await.1);
    let (d, u, _) = env.samba.service_account();
    for pw in [PASSWORD, WRONG] {
        let body = json!({"server_host": "127.0.0.1", "server_port": env.samba.port(), "share_name": "Share",
                          "domain": d, "username": u, "password": pw, "target_share_id": c.share});
        answers.push(env.api.post("/api/v1/smb-connectors/test", body).await.1);
    }
    // A failing run with the wrong password (its events and status message too).
    answers.push(env.api.patch(&c.url(""), json!({"password": WRONG})).await.1);
    let failed = env.sync_and_wait(&c).await;
    assert_eq!(failed["status"], "failed", "{failed:#}");
    answers.push(failed);
    answers.push(env.connector_json(&c).await);
    answers.push(env.api.get("/api/v1/smb-connectors").await.1);
    answers.push(env.api.get(&c.url("/jobs")).await.1);
    answers.push(env.api.get(&c.url("/file-states")).await.1);
    for a in &answers {
        let s = a.to_string();
        assert!(!s.contains(PASSWORD) && !s.contains(WRONG), "a REST answer holds a password: {s}");
    }
    for w in &env.workers {
        let log = w.log();
        assert!(!log.is_empty(), "worker log {} is empty", w.log.display());
        assert!(!log.contains(PASSWORD) && !log.contains(WRONG), "worker log {} holds a password", w.log.display());
    }

    // The database, row by row (PostgreSQL), or every file under the data directory
    // (SQLite and its WAL, content store, key file...).
    match setup {
        Setup::Distributed => {
            let pool = &env.srv.state.db.pool;
            let tables: Vec<(String,)> = sqlx::query_as(
                "SELECT CAST(table_name AS TEXT) FROM information_schema.tables WHERE table_schema = 'public'",
            )
            .fetch_all(pool)
            .await
            .unwrap();
            assert!(tables.len() > 5, "{tables:?}");
            for (t,) in tables {
                let rows: Vec<(String,)> =
                    sqlx::query_as(&format!("SELECT CAST(t AS TEXT) FROM \"{t}\" t")).fetch_all(pool).await.unwrap();
                for (r,) in rows {
                    assert!(!r.contains(PASSWORD) && !r.contains(WRONG), "table {t} holds a password: {r}");
                }
            }
        }
        Setup::Standalone => {
            let mut stack = vec![env.srv.data_dir.clone()];
            let mut files = 0;
            while let Some(d) = stack.pop() {
                for e in std::fs::read_dir(&d).unwrap() {
                    let p = e.unwrap().path();
                    if p.is_dir() {
                        stack.push(p);
                    } else if let Ok(b) = std::fs::read(&p) {
                        files += 1;
                        for pw in [PASSWORD, WRONG] {
                            assert!(
                                !b.windows(pw.len()).any(|w| w == pw.as_bytes()),
                                "{} holds a password",
                                p.display()
                            );
                        }
                    }
                }
            }
            assert!(files > 1);
        }
    }
    env.finish().await;
}

/// Every exported span, flattened to text (names, attributes, events, resource, status).
#[derive(Clone, Default)]
struct Traces(Arc<Mutex<Vec<String>>>);

#[tonic::async_trait]
impl TraceService for Traces {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.lock().unwrap().push(format!("{:?}", req.into_inner()));
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

async fn otlp_receiver() -> (Traces, String) {
    let traces = Traces::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let svc = traces.clone();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(svc))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
    });
    (traces, format!("http://{addr}"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn holds(hay: &[u8], pw: &str) -> bool {
    hay.windows(pw.len()).any(|w| w == pw.as_bytes())
}

/// An api-server process (so its log can be read), a worker process, both at `RUST_LOG=trace`
/// and exporting traces to our OTLP receiver, their RabbitMQ traffic through a recording
/// proxy: after a sync, a failing sync, stored and ad-hoc connection tests (right and wrong
/// passwords), neither password is in any log line, any span, or any byte on the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_password_is_in_no_log_line_trace_or_queue_message() {
    let samba = tokio::task::spawn_blocking(SambaServer::start).await.unwrap().expect("samba");
    assert_eq!(samba.service_account().2, PASSWORD);
    std::fs::write(samba.share_dir().join("a.txt"), b"a").unwrap();
    samba.give_to_service_account(samba.share_dir()).unwrap();
    let db = PgDatabase::create().await;
    let vhost = jobqueue::testing::TestVhost::create().await.expect("RabbitMQ");
    let amqp = Proxy::recording(addr_of(vhost.url())).await;
    let amqp_url = url_via(vhost.url(), amqp.addr);
    let (traces, otlp) = otlp_receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let (http, grpc) = (free_port(), free_port());
    let worker_token = format!("wt-{}", ulid::Ulid::new());
    let otel = [("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.as_str()), ("OTEL_BSP_SCHEDULE_DELAY", "200")];
    let server_log = dir.path().join("api-server.log");
    let server = std::process::Command::new(e2e_tests::bin_path("api-server"))
        .env("SCAIDRIVE_DATA_DIR", dir.path().join("data"))
        .env("DATABASE_URL", &db.url)
        .env("SCAIDRIVE_AMQP_URL", &amqp_url)
        .env("SCAIDRIVE_LISTEN", format!("127.0.0.1:{http}"))
        .env("SCAIDRIVE_GRPC_LISTEN", format!("127.0.0.1:{grpc}"))
        .env("SCAIDRIVE_WORKER_TOKEN", &worker_token)
        .env("SCAIDRIVE_SCHEDULER_TICK_MS", "500")
        .env("RUST_LOG", "trace")
        .envs(otel)
        .stdout(std::fs::File::create(dir.path().join("api-server.out")).unwrap())
        .stderr(std::fs::File::create(&server_log).unwrap())
        .spawn()
        .expect("the api-server binary (cargo build -p api-server)");
    let server = WorkerProcess { child: server, log: server_log };
    let base = format!("http://127.0.0.1:{http}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while reqwest::get(format!("{base}/healthz")).await.map(|r| !r.status().is_success()).unwrap_or(true) {
        assert!(Instant::now() < deadline, "the api-server did not start: {}", server.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let token = std::fs::read_to_string(dir.path().join("data/admin-token")).unwrap().trim().to_string();
    let api = e2e_tests::Api { http: reqwest::Client::new(), base, token: Some(token) };
    let worker_log = dir.path().join("w1.log");
    let worker = std::process::Command::new(e2e_tests::bin_path("sync-worker"))
        .env("SCAIDRIVE_CONTROL_PLANE_URL", format!("http://127.0.0.1:{grpc}"))
        .env("SCAIDRIVE_WORKER_TOKEN", &worker_token)
        .env("SCAIDRIVE_AMQP_URL", &amqp_url)
        .env("SCAIDRIVE_WORKER_ID", "w1")
        .env("SCAIDRIVE_WATCH", "0")
        .env("SCAIDRIVE_WORKER_LISTEN", format!("127.0.0.1:{}", free_port()))
        .env("RUST_LOG", "trace")
        .envs(otel)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&worker_log).unwrap())
        .spawn()
        .unwrap();
    let worker = WorkerProcess { child: worker, log: worker_log };

    let share = api.share("S").await;
    let (d, u, _) = samba.service_account();
    let body = json!({"name": "fs", "server_host": "127.0.0.1", "server_port": samba.port(), "share_name": samba.share_name(),
                      "domain": d, "username": u, "password": PASSWORD, "target_share_id": share, "target_path": "/M",
                      "sync_interval_minutes": 0});
    let (st, c) = api.post("/api/v1/smb-connectors", body).await;
    assert_eq!(st, StatusCode::CREATED, "{c}");
    let cnn = c["id"].as_str().unwrap().to_string();
    let run = |api: e2e_tests::Api, cnn: String| async move {
        let (st, j) = api.post(&format!("/api/v1/smb-connectors/{cnn}/sync"), json!({})).await;
        assert_eq!(st, StatusCode::ACCEPTED, "{j}");
        let id = j["id"].as_str().unwrap().to_string();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (_, j) = api.get(&format!("/api/v1/smb-connectors/{cnn}/jobs/{id}")).await;
            if crate::driver::TERMINAL.contains(&j["status"].as_str().unwrap_or("")) {
                return j;
            }
            assert!(Instant::now() < deadline, "{j}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let j = run(api.clone(), cnn.clone()).await;
    assert_eq!(j["status"], "completed", "{j:#}\n{}", worker.log());
    let (st, r) = api.post(&format!("/api/v1/smb-connectors/{cnn}/test"), json!({})).await;
    assert_eq!((st, &r["success"]), (StatusCode::OK, &json!(true)), "{r}");
    for pw in [PASSWORD, WRONG] {
        let body = json!({"server_host": "127.0.0.1", "server_port": samba.port(), "share_name": samba.share_name(),
                          "domain": d, "username": u, "password": pw, "target_share_id": share});
        let (st, r) = api.post("/api/v1/smb-connectors/test", body).await;
        assert_eq!((st, &r["success"]), (StatusCode::OK, &json!(pw == PASSWORD)), "{r}");
    }
    let (st, _) = api.patch(&format!("/api/v1/smb-connectors/{cnn}"), json!({"password": WRONG})).await;
    assert_eq!(st, StatusCode::OK);
    let j = run(api.clone(), cnn.clone()).await;
    assert_eq!(j["error"]["code"], "CONNECTOR_AUTH_FAILED", "{j:#}");
    // Let the batch exporters flush their last spans.
    tokio::time::sleep(Duration::from_secs(2)).await;

    for p in [&server, &worker] {
        let log = std::fs::read(&p.log).unwrap();
        assert!(log.len() > 10_000 && holds(&log, "TRACE"), "{} is not a trace-level log", p.log.display());
        for pw in [PASSWORD, WRONG] {
            assert!(!holds(&log, pw), "{} holds a password", p.log.display());
        }
    }
    let spans = traces.0.lock().unwrap().join("\n");
    assert!(spans.contains(&cnn) && spans.contains("sync_job"), "no spans of the run were exported");
    assert!(!spans.contains(PASSWORD) && !spans.contains(WRONG), "an exported span holds a password");
    let tapes = amqp.tapes();
    let all: Vec<u8> = tapes.concat();
    assert!(holds(&all, &cnn) && holds(&all, "test_id"), "the queue traffic was not captured");
    for t in &tapes {
        for pw in [PASSWORD, WRONG] {
            assert!(!holds(t, pw), "a queue message holds a password");
        }
    }
    drop(worker);
    drop(server);
    drop(amqp);
}
