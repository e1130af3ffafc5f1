//! Telemetry flows (issue 7): a real OTLP receiver (the collector's own gRPC services) on
//! 127.0.0.1, the product exporting to it through the standard `OTEL_*` variables, and a sync
//! run that must show up as the catalogue's metrics and as one connected trace: the REST call,
//! the job on the worker (through the queue's message headers), its phases, and the worker's
//! gRPC calls served by the api-server. Standalone (in-process workers) and distributed (a
//! `sync-worker` process over RabbitMQ: the trace crosses processes).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use e2e_tests::{Backend, Options, TestServer};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{ExportMetricsServiceRequest, ExportMetricsServiceResponse};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use reqwest::StatusCode;
use samba_harness::SambaServer;
use serde_json::json;

/// One exported span, flattened.
#[derive(Clone, Debug)]
struct Span {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent: String,
    attrs: BTreeMap<String, String>,
}

#[derive(Default)]
struct Received {
    spans: Vec<Span>,
    /// Metric name → the attribute sets of its data points.
    metrics: BTreeMap<String, Vec<BTreeMap<String, String>>>,
}

#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Received>>);

fn attrs(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter()
        .map(|kv| {
            let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(AnyValue::StringValue(s)) => s.clone(),
                Some(AnyValue::IntValue(i)) => i.to_string(),
                Some(AnyValue::BoolValue(b)) => b.to_string(),
                Some(AnyValue::DoubleValue(d)) => d.to_string(),
                _ => String::new(),
            };
            (kv.key.clone(), v)
        })
        .collect()
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut r = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for rs in req.into_inner().resource_spans {
            let res = rs.resource.map(|r| attrs(&r.attributes)).unwrap_or_default();
            let service = res.get("service.name").cloned().unwrap_or_default();
            for ss in rs.scope_spans {
                for s in ss.spans {
                    r.spans.push(Span {
                        service: service.clone(),
                        name: s.name.clone(),
                        trace_id: hex::encode(&s.trace_id),
                        span_id: hex::encode(&s.span_id),
                        parent: hex::encode(&s.parent_span_id),
                        attrs: attrs(&s.attributes),
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

#[tonic::async_trait]
impl MetricsService for Receiver {
    async fn export(
        &self,
        req: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        use opentelemetry_proto::tonic::metrics::v1::metric::Data;
        let mut r = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for rm in req.into_inner().resource_metrics {
            for sm in rm.scope_metrics {
                for m in sm.metrics {
                    let points: Vec<BTreeMap<String, String>> = match &m.data {
                        Some(Data::Sum(s)) => s.data_points.iter().map(|p| attrs(&p.attributes)).collect(),
                        Some(Data::Gauge(g)) => g.data_points.iter().map(|p| attrs(&p.attributes)).collect(),
                        Some(Data::Histogram(h)) => h.data_points.iter().map(|p| attrs(&p.attributes)).collect(),
                        _ => vec![],
                    };
                    r.metrics.entry(m.name.clone()).or_default().extend(points);
                }
            }
        }
        Ok(tonic::Response::new(ExportMetricsServiceResponse { partial_success: None }))
    }
}

/// The receiver, the runtime it runs on, and the process-wide telemetry set-up (once per test
/// binary: the exporters are global).
fn receiver() -> &'static (Receiver, String, tokio::runtime::Handle) {
    static R: OnceLock<(Receiver, String, tokio::runtime::Handle)> = OnceLock::new();
    R.get_or_init(|| {
        let rx = Receiver::default();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let svc = rx.clone();
        let (htx, hrx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
            htx.send(rt.handle().clone()).unwrap();
            rt.block_on(async move {
                let l = tokio::net::TcpListener::from_std(listener).unwrap();
                tonic::transport::Server::builder()
                    .add_service(TraceServiceServer::new(svc.clone()))
                    .add_service(MetricsServiceServer::new(svc))
                    .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(l))
                    .await
                    .unwrap();
            });
        });
        let endpoint = format!("http://{addr}");
        // The standard variables, as an operator sets them; worker processes inherit them.
        std::env::set_var("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint);
        std::env::set_var("OTEL_METRIC_EXPORT_INTERVAL", "500");
        std::env::set_var("OTEL_BSP_SCHEDULE_DELAY", "200");
        (rx, endpoint, hrx.recv().unwrap())
    })
}

fn init_telemetry() {
    static G: OnceLock<()> = OnceLock::new();
    G.get_or_init(|| {
        // The OTLP exporters' gRPC channels run their connection tasks on the runtime they are
        // built in. Each #[tokio::test] has its own runtime, dropped when that test ends, so the
        // exporters are built on the receiver's runtime, which lives as long as the binary:
        // otherwise whatever the in-process api-server records after the first test to finish
        // is never exported.
        let _rt = receiver().2.enter();
        std::mem::forget(telemetry::init("api-server").expect("telemetry"));
    });
}

async fn wait_for<T>(what: &str, mut f: impl FnMut(&Received) -> Option<T>) -> T {
    let (rx, _, _) = receiver();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f(&rx.0.lock().unwrap_or_else(|e| e.into_inner())) {
            return v;
        }
        if Instant::now() > deadline {
            let msg = {
                let r = rx.0.lock().unwrap_or_else(|e| e.into_inner());
                let names: BTreeSet<&String> = r.spans.iter().map(|s| &s.name).collect();
                format!("{what} not received within 30 s; metrics: {:?}; span names: {names:?}", r.metrics.keys())
            };
            panic!("{msg}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn a_sync_run_is_one_trace_and_counted(distributed: bool) {
    init_telemetry();
    let samba = tokio::task::spawn_blocking(SambaServer::start).await.unwrap().expect("samba");
    std::fs::create_dir_all(samba.share_dir().join("docs")).unwrap();
    for i in 0..5 {
        std::fs::write(samba.share_dir().join(format!("docs/f{i}.txt")), format!("file {i}")).unwrap();
    }
    samba.give_to_service_account(samba.share_dir()).unwrap();
    let (backend, opts) = if distributed {
        (Backend::Postgres, Options { embedded_workers: 0, rabbitmq: true, scheduler_tick_ms: None, watch: false })
    } else {
        (Backend::Sqlite, Options { embedded_workers: 2, rabbitmq: false, scheduler_tick_ms: None, watch: false })
    };
    let srv = TestServer::start_with(backend, opts).await;
    let _worker = distributed.then(|| srv.spawn_worker("otel-w1"));
    let api = srv.admin();
    let share = api.share(&format!("T{}", ulid::Ulid::new())).await;
    let (d, u, p) = samba.service_account();
    let (st, c) = api
        .post(
            "/api/v1/smb-connectors",
            json!({"name": "otel", "server_host": "127.0.0.1", "server_port": samba.port(),
                   "share_name": samba.share_name(), "domain": d, "username": u, "password": p,
                   "target_share_id": share, "target_path": "/m", "sync_interval_minutes": 0}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{c}");
    let cnn = c["id"].as_str().unwrap().to_string();
    let (st, j) = api.post(&format!("/api/v1/smb-connectors/{cnn}/sync"), json!({})).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{j}");
    let job = j["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (_, j) = api.get(&format!("/api/v1/smb-connectors/{cnn}/jobs/{job}")).await;
        if j["status"] == "completed" {
            assert_eq!(j["files_synced"].as_i64().unwrap() >= 5, true, "{j}");
            break;
        }
        assert!(!["failed", "cancelled"].contains(&j["status"].as_str().unwrap_or("")), "{j}");
        assert!(Instant::now() < deadline, "job did not complete: {j}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Metrics of the catalogue, with this connector's attributes where they have one.
    let has = |r: &Received, name: &str, k: &str, v: &str| {
        r.metrics.get(name).map(|pts| pts.iter().any(|a| a.get(k).map(String::as_str) == Some(v))).unwrap_or(false)
    };
    let wanted: Vec<(&str, &str, String)> = vec![
        ("scaidrive.jobs", "outcome", "completed".into()),
        ("scaidrive.jobs", "connector_id", cnn.clone()),
        ("scaidrive.job.duration", "connector_id", cnn.clone()),
        ("scaidrive.files", "connector_id", cnn.clone()),
        ("scaidrive.files", "result", "synced".into()),
        ("scaidrive.bytes", "direction", "smb_to_scaidrive".into()),
        ("scaidrive.lease.events", "event", "acquired".into()),
        ("scaidrive.queue.depth", "queue", "scaidrive.sync-jobs.default".into()),
        ("http.server.request.duration", "http.route", "/api/v1/smb-connectors/{id}/sync".into()),
        ("rpc.server.duration", "rpc.method", "ClaimJob".into()),
        ("scaidrive.smb.request.duration", "status", "ok".into()),
        ("scaidrive.worker.jobs.active", "pool", "default".into()),
    ];
    let missing = std::sync::Mutex::new(Vec::new());
    wait_for("the job metrics (see the last missing list above)", |r| {
        let m: Vec<String> =
            wanted.iter().filter(|(n, k, v)| !has(r, n, k, v)).map(|(n, k, v)| format!("{n}{{{k}={v}}}")).collect();
        let done = m.is_empty();
        if !done && *missing.lock().unwrap() != m {
            eprintln!("still missing: {m:?}");
            *missing.lock().unwrap() = m;
        }
        done.then_some(())
    })
    .await;
    // No per-file attribute anywhere.
    {
        let r = receiver().0 .0.lock().unwrap_or_else(|e| e.into_inner());
        for (name, pts) in &r.metrics {
            for a in pts {
                assert!(
                    !a.keys().any(|k| k.contains("path") || k.contains("file")),
                    "{name} carries a per-file attribute: {a:?}"
                );
            }
        }
    }

    // One trace: the REST call → the job (via the queue) → its phases and gRPC calls.
    let (trace, spans) = wait_for("the job's trace", |r| {
        let job_span = r.spans.iter().find(|s| s.name == "job" && s.attrs.get("job.id") == Some(&job))?;
        let t = job_span.trace_id.clone();
        let in_trace: Vec<Span> = r.spans.iter().filter(|s| s.trace_id == t).cloned().collect();
        let names: BTreeSet<&str> = in_trace.iter().map(|s| s.name.as_str()).collect();
        ["http.request", "job", "job.walk", "job.plan", "job.transfer", "job.commit", "grpc.request"]
            .iter()
            .all(|n| names.contains(n))
            .then(|| (t, in_trace))
    })
    .await;
    let by_id: BTreeMap<&str, &Span> = spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
    let job_span = spans.iter().find(|s| s.name == "job").unwrap();
    // The job span's ancestry reaches the REST call that queued it.
    let mut cur = job_span;
    let mut hops = 0;
    while let Some(p) = by_id.get(cur.parent.as_str()) {
        cur = p;
        hops += 1;
        assert!(hops < 20);
    }
    assert_eq!(cur.name, "http.request", "the trace's root is the REST call: {spans:#?}");
    assert_eq!(cur.attrs.get("http.route").map(String::as_str), Some("/api/v1/smb-connectors/{id}/sync"));
    // gRPC calls served for this job belong to it.
    let served: Vec<&Span> = spans.iter().filter(|s| s.name == "grpc.request").collect();
    assert!(served.iter().any(|s| s.attrs.get("rpc.method").map(String::as_str) == Some("CompleteJob")), "{served:#?}");
    if distributed {
        let services: BTreeSet<&str> = spans.iter().map(|s| s.service.as_str()).collect();
        assert!(services.contains("sync-worker") && services.contains("api-server"), "{services:?} in trace {trace}");
        // The worker's log lines of this job name the trace.
        let log = _worker.as_ref().unwrap().log();
        assert!(
            log.lines().any(|l| l.contains("trace_id") && l.contains(&trace)),
            "no log line names trace {trace}:\n{log}"
        );
    }
    // The password is in no span attribute.
    let r = receiver().0 .0.lock().unwrap_or_else(|e| e.into_inner());
    for s in &r.spans {
        assert!(!s.attrs.values().any(|v| v.contains(p.as_str())), "a span carries the password: {s:?}");
    }
    drop(r);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_run_is_one_trace_and_counted() {
    a_sync_run_is_one_trace_and_counted(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distributed_run_crosses_processes_in_one_trace() {
    a_sync_run_is_one_trace_and_counted(true).await;
}
