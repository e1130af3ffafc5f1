//! The metric catalogue (`docs/OPERATIONS.md`, `deploy/observability/metrics.yaml`) as
//! OpenTelemetry instruments. Every process records into the global meter provider, which
//! [`crate::init`] installs when OTLP export is configured; otherwise every instrument is a
//! no-op. Attributes are bounded: connector ids, pools, queues, outcomes, routes and
//! methods — never a path or a file name.

use std::sync::OnceLock;

use opentelemetry::metrics::{Counter, Gauge, Histogram, UpDownCounter};
use opentelemetry::KeyValue;

/// Every instrument of the catalogue.
pub struct Instruments {
    /// `scaidrive.jobs` {connector_id, trigger, outcome}.
    pub jobs: Counter<u64>,
    /// `scaidrive.job.duration` (s) {connector_id, outcome}.
    pub job_duration: Histogram<f64>,
    /// `scaidrive.files` {connector_id, result}.
    pub files: Counter<u64>,
    /// `scaidrive.bytes` (By) {connector_id, direction}.
    pub bytes: Counter<u64>,
    /// `scaidrive.conflicts` {connector_id, strategy}.
    pub conflicts: Counter<u64>,
    /// `scaidrive.delete_guard.stops` {connector_id}.
    pub delete_guard_stops: Counter<u64>,
    /// `scaidrive.connector.consecutive_failures` {connector_id}.
    pub consecutive_failures: Gauge<u64>,
    /// `scaidrive.queue.depth` {queue}.
    pub queue_depth: Gauge<u64>,
    /// `scaidrive.queue.oldest_age` (s) {queue}.
    pub queue_oldest_age: Gauge<f64>,
    /// `scaidrive.lease.events` {event}.
    pub lease_events: Counter<u64>,
    /// `scaidrive.workers.alive` {pool}.
    pub workers_alive: Gauge<u64>,
    /// `scaidrive.worker.jobs.active` {pool}.
    pub worker_jobs_active: UpDownCounter<i64>,
    /// `http.server.request.duration` (s) {http.request.method, http.route, http.response.status_code}.
    pub http_duration: Histogram<f64>,
    /// `rpc.server.duration` (s) {rpc.service, rpc.method, rpc.grpc.status_code}.
    pub rpc_duration: Histogram<f64>,
    /// `scaidrive.smb.request.duration` (s) {operation, status}.
    pub smb_duration: Histogram<f64>,
    /// `scaidrive.permissions.lossy` {connector_id, reason}.
    pub permissions_lossy: Counter<u64>,
}

static INSTRUMENTS: OnceLock<Instruments> = OnceLock::new();

/// The instruments (created on first use from the global meter provider: call
/// [`crate::init`] first).
pub fn get() -> &'static Instruments {
    INSTRUMENTS.get_or_init(|| {
        let m = opentelemetry::global::meter("scaidrive");
        Instruments {
            jobs: m.u64_counter("scaidrive.jobs").with_description("Sync jobs by outcome").build(),
            job_duration: m
                .f64_histogram("scaidrive.job.duration")
                .with_unit("s")
                .with_description("Sync job run time, claim to outcome")
                .build(),
            files: m.u64_counter("scaidrive.files").with_description("Files scanned, synced and failed").build(),
            bytes: m
                .u64_counter("scaidrive.bytes")
                .with_unit("By")
                .with_description("Content bytes transferred")
                .build(),
            conflicts: m.u64_counter("scaidrive.conflicts").with_description("Conflicts resolved, by strategy").build(),
            delete_guard_stops: m
                .u64_counter("scaidrive.delete_guard.stops")
                .with_description("Runs stopped by the delete guard")
                .build(),
            consecutive_failures: m
                .u64_gauge("scaidrive.connector.consecutive_failures")
                .with_description("Failed runs in a row, per connector")
                .build(),
            queue_depth: m
                .u64_gauge("scaidrive.queue.depth")
                .with_description("Jobs queued and not yet claimed")
                .build(),
            queue_oldest_age: m
                .f64_gauge("scaidrive.queue.oldest_age")
                .with_unit("s")
                .with_description("Age of the oldest queued job")
                .build(),
            lease_events: m.u64_counter("scaidrive.lease.events").with_description("Connector lease events").build(),
            workers_alive: m
                .u64_gauge("scaidrive.workers.alive")
                .with_description("Workers that pinged in the last minute, per pool")
                .build(),
            worker_jobs_active: m
                .i64_up_down_counter("scaidrive.worker.jobs.active")
                .with_description("Jobs a worker is running")
                .build(),
            http_duration: m
                .f64_histogram("http.server.request.duration")
                .with_unit("s")
                .with_description("REST request latency")
                .build(),
            rpc_duration: m
                .f64_histogram("rpc.server.duration")
                .with_unit("s")
                .with_description("gRPC latency")
                .build(),
            smb_duration: m
                .f64_histogram("scaidrive.smb.request.duration")
                .with_unit("s")
                .with_description("SMB operation latency")
                .build(),
            permissions_lossy: m
                .u64_counter("scaidrive.permissions.lossy")
                .with_description("ACEs or items not replicated exactly, by reason")
                .build(),
        }
    })
}

/// Shorthand for an attribute.
pub fn kv(k: &'static str, v: impl Into<String>) -> KeyValue {
    KeyValue::new(k, v.into())
}
