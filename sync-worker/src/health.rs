//! `/healthz` (the process is alive) and `/readyz` (the control plane answers `Ping` and the
//! jobs consumer is running), for orchestrators.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use proto::v1;
use tokio_util::sync::CancellationToken;

use crate::rpc::{call, ControlPlane};

/// Shared readiness of a worker. Cheap to clone.
#[derive(Clone, Default)]
pub struct Readiness {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    consuming: AtomicBool,
    control: Mutex<Option<(ControlPlane, String, String)>>,
}

impl Readiness {
    /// Whether the jobs consumer runs.
    pub fn consuming(&self) -> bool {
        self.inner.consuming.load(Ordering::SeqCst)
    }

    pub(crate) fn set_consuming(&self, on: bool) {
        self.inner.consuming.store(on, Ordering::SeqCst);
    }

    pub(crate) fn set_control_plane(&self, rpc: ControlPlane, worker_id: String, version: String) {
        *self.inner.control.lock().unwrap() = Some((rpc, worker_id, version));
    }

    /// Whether the control plane answers a `Ping` within 2 s.
    pub async fn control_plane_ok(&self) -> bool {
        let Some((rpc, worker_id, worker_version)) = self.inner.control.lock().unwrap().clone() else {
            return false;
        };
        let mut cp = rpc.cp.clone();
        let req = v1::PingRequest { worker_id, worker_version, worker_pool: String::new() };
        call(&CancellationToken::new(), Duration::from_secs(2), cp.ping(req)).await.is_ok()
    }
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(r): State<Readiness>) -> (StatusCode, String) {
    let consuming = r.consuming();
    let control = r.control_plane_ok().await;
    let body = format!(
        "control_plane={} consumer={}",
        if control { "ok" } else { "down" },
        if consuming { "running" } else { "stopped" }
    );
    if consuming && control {
        (StatusCode::OK, body)
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, body)
    }
}

/// The health routes.
pub fn router(readiness: Readiness) -> Router {
    Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz)).with_state(readiness)
}

/// Serves the health routes on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    readiness: Readiness,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(readiness)).with_graceful_shutdown(async move { shutdown.cancelled().await }).await
}
