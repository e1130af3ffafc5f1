//! The control plane's telemetry: REST and gRPC request metrics, the trace context taken
//! from incoming gRPC calls, job outcomes, lease events, queue depth and live workers (the
//! catalogue is in `docs/OPERATIONS.md`; instruments in `telemetry::metrics`). Attributes
//! never carry a path, a file name or a secret.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use telemetry::metrics::{get as m, kv};
use tokio_util::sync::CancellationToken;

use crate::store::jobs::Job;
use crate::time::now_ms;
use crate::AppState;

/// Axum middleware: `http.server.request.duration` by method, route template and status.
pub async fn http_metrics(req: Request, next: Next) -> Response {
    let method = req.method().as_str().to_string();
    let route =
        req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string()).unwrap_or_else(|| "unmatched".into());
    let start = Instant::now();
    let res = next.run(req).await;
    m().http_duration.record(
        start.elapsed().as_secs_f64(),
        &[
            kv("http.request.method", method),
            kv("http.route", route),
            kv("http.response.status_code", res.status().as_u16().to_string()),
        ],
    );
    res
}

/// Tower layer around the gRPC server: a span per call (a child of the caller's trace when
/// the call carries `traceparent`) and `rpc.server.duration`.
#[derive(Clone, Copy, Default)]
pub struct GrpcLayer;

impl<S> tower::Layer<S> for GrpcLayer {
    type Service = GrpcService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        GrpcService { inner }
    }
}

/// See [`GrpcLayer`].
#[derive(Clone)]
pub struct GrpcService<S> {
    inner: S,
}

impl<S, B, RB> tower::Service<http::Request<B>> for GrpcService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>> + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let path = req.uri().path().trim_start_matches('/').to_string();
        let (service, method) = match path.rsplit_once('/') {
            Some((s, m)) => (s.to_string(), m.to_string()),
            None => (path.clone(), String::new()),
        };
        let span = tracing::info_span!(
            "grpc.request",
            otel.kind = "server",
            rpc.service = %service,
            rpc.method = %method,
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty
        );
        telemetry::propagation::adopt_http(&span, req.headers());
        telemetry::propagation::record_ids(&span);
        let start = Instant::now();
        let fut = {
            let _e = span.enter();
            self.inner.call(req)
        };
        Box::pin(tracing::Instrument::instrument(
            async move {
                let res = fut.await;
                let code = match &res {
                    Ok(r) => r.headers().get("grpc-status").and_then(|v| v.to_str().ok()).unwrap_or("0").to_string(),
                    Err(_) => "14".to_string(),
                };
                m().rpc_duration.record(
                    start.elapsed().as_secs_f64(),
                    &[kv("rpc.service", service), kv("rpc.method", method), kv("rpc.grpc.status_code", code)],
                );
                res
            },
            span,
        ))
    }
}

static WORKERS: Mutex<Option<HashMap<String, (String, Instant)>>> = Mutex::new(None);

/// A worker pinged (per api-server replica; `scaidrive.workers.alive` counts those seen in
/// the last minute).
pub fn worker_seen(worker_id: &str, pool: &str) {
    let mut w = WORKERS.lock().unwrap_or_else(|e| e.into_inner());
    w.get_or_insert_with(HashMap::new).insert(worker_id.to_string(), (pool.to_string(), Instant::now()));
}

fn workers_alive() -> HashMap<String, u64> {
    let mut w = WORKERS.lock().unwrap_or_else(|e| e.into_inner());
    let map = w.get_or_insert_with(HashMap::new);
    map.retain(|_, (_, t)| t.elapsed() < Duration::from_secs(300));
    let mut out: HashMap<String, u64> = HashMap::new();
    out.insert("default".into(), 0);
    for (pool, t) in map.values() {
        let n = out.entry(pool.clone()).or_default();
        if t.elapsed() < Duration::from_secs(60) {
            *n += 1;
        }
    }
    out
}

/// Every 10 s: queue depth and oldest queued job (from the database, so both queue
/// backends report the same), and live workers.
pub async fn gauges_loop(state: AppState, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let rows: Result<Vec<(String, i64, Option<i64>)>, _> = sqlx::query_as(
            "SELECT c.worker_pool, COUNT(*), MIN(j.requested_at) FROM jobs j JOIN connectors c ON c.id = j.connector_id
             WHERE j.status = 'queued' GROUP BY c.worker_pool",
        )
        .fetch_all(&state.db.pool)
        .await;
        if let (Ok(rows), Ok(pools)) = (rows, crate::fleet::known_pools(&state).await) {
            for pool in pools {
                let (n, oldest) =
                    rows.iter().find(|(p, _, _)| *p == pool).map(|(_, n, o)| (*n, *o)).unwrap_or((0, None));
                let q = [kv("queue", sync_worker::sync_jobs_queue(&pool))];
                m().queue_depth.record(n.max(0) as u64, &q);
                let age = oldest.map(|t| ((now_ms() - t).max(0) as f64) / 1000.0).unwrap_or(0.0);
                m().queue_oldest_age.record(age, &q);
            }
        }
        for (pool, n) in workers_alive() {
            m().workers_alive.record(n, &[kv("pool", pool)]);
        }
    }
}

/// A job was claimed by a worker.
pub fn job_started(job: &Job) {
    m().jobs.add(
        1,
        &[kv("connector_id", job.connector_id.clone()), kv("trigger", job.trigger.clone()), kv("outcome", "started")],
    );
}

/// A scheduled run was skipped (the previous one still going).
pub fn job_skipped(job: &Job) {
    m().jobs.add(
        1,
        &[kv("connector_id", job.connector_id.clone()), kv("trigger", job.trigger.clone()), kv("outcome", "skipped")],
    );
}

/// A job's outcome was recorded: outcome, duration, files, bytes, conflicts, the delete
/// guard and the connector's failure streak.
pub async fn job_finished(state: &AppState, job_id: &str, strategy: &str, direction_to_smb: bool) {
    let Ok(Some(job)) = crate::store::jobs::get(&state.db, job_id).await else { return };
    let c = kv("connector_id", job.connector_id.clone());
    let outcome = job.status.clone();
    m().jobs.add(1, &[c.clone(), kv("trigger", job.trigger.clone()), kv("outcome", outcome.clone())]);
    if let (Some(s), Some(f)) = (job.started_at, job.finished_at) {
        m().job_duration.record(((f - s).max(0) as f64) / 1000.0, &[c.clone(), kv("outcome", outcome.clone())]);
    }
    let k = &job.counts;
    for (result, n) in [("scanned", k.files_scanned), ("synced", k.files_synced), ("failed", k.files_failed)] {
        if n > 0 {
            m().files.add(n as u64, &[c.clone(), kv("result", result)]);
        }
    }
    if k.bytes_transferred > 0 {
        let dir = if direction_to_smb { "scaidrive_to_smb" } else { "smb_to_scaidrive" };
        m().bytes.add(k.bytes_transferred as u64, &[c.clone(), kv("direction", dir)]);
    }
    if k.conflicts > 0 {
        m().conflicts.add(k.conflicts as u64, &[c.clone(), kv("strategy", strategy.to_string())]);
    }
    if job.error_code.as_deref() == Some(sync_engine_codes::DELETE_GUARD) {
        m().delete_guard_stops.add(1, &[c.clone()]);
    }
    let recent: Result<Vec<(String,)>, _> = sqlx::query_as(
        "SELECT status FROM jobs WHERE connector_id = $1 AND status IN ('completed', 'failed')
         ORDER BY finished_at DESC LIMIT 50",
    )
    .bind(&job.connector_id)
    .fetch_all(&state.db.pool)
    .await;
    if let Ok(rows) = recent {
        let streak = rows.iter().take_while(|(s,)| s == "failed").count() as u64;
        m().consecutive_failures.record(streak, &[c]);
    }
}

/// The delete guard's job error code (the engine's, repeated here: the api-server does not
/// depend on the engine).
mod sync_engine_codes {
    pub const DELETE_GUARD: &str = "DELETE_GUARD_TRIGGERED";
}

/// A lease event (`acquired`, `renewed`, `lost`, `taken_over`).
pub fn lease_event(event: &'static str) {
    m().lease_events.add(1, &[kv("event", event)]);
}
