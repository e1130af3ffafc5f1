//! gRPC clients for the control plane (`ControlPlane`, `FileService`) with the worker token on
//! every call, and the one error type of a call as the worker sees it.
//!
//! Must never log or put in an error the worker token.

use std::future::Future;
use std::time::Duration;

use proto::v1;
use tokio_util::sync::CancellationToken;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::config::Secret;

/// Adds `authorization: Bearer <worker token>` to every request.
#[derive(Clone)]
pub struct Auth {
    header: MetadataValue<Ascii>,
}

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.header.clone());
        // The caller's trace continues on the server.
        for (k, v) in telemetry::propagation::current_headers() {
            if let (Ok(k), Ok(v)) = (
                tonic::metadata::MetadataKey::from_bytes(k.as_bytes()),
                tonic::metadata::MetadataValue::try_from(v.as_str()),
            ) {
                req.metadata_mut().insert(k, v);
            }
        }
        Ok(req)
    }
}

/// The `ControlPlane` client type.
pub type CpClient = v1::control_plane_client::ControlPlaneClient<InterceptedService<Channel, Auth>>;
/// The `FileService` client type.
pub type FsClient = v1::file_service_client::FileServiceClient<InterceptedService<Channel, Auth>>;

/// Both services over one HTTP/2 channel. Cheap to clone.
#[derive(Clone)]
pub struct ControlPlane {
    /// Leases, jobs, progress, file states.
    pub cp: CpClient,
    /// ScaiDrive reads and writes.
    pub fs: FsClient,
    /// Bound on one unary call.
    pub timeout: Duration,
}

impl ControlPlane {
    /// A client that connects on first use (and reconnects after failures).
    pub fn connect_lazy(url: &str, token: &Secret, timeout: Duration) -> anyhow::Result<Self> {
        let endpoint = Endpoint::from_shared(url.to_string())
            .map_err(|e| anyhow::anyhow!("invalid control plane URL {url:?}: {e}"))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(10))
            .keep_alive_while_idle(true);
        let channel = endpoint.connect_lazy();
        let header: MetadataValue<Ascii> = format!("Bearer {}", token.expose())
            .parse()
            .map_err(|_| anyhow::anyhow!("the worker token contains characters not allowed in a header"))?;
        let auth = Auth { header };
        let limit = 16 * 1024 * 1024;
        Ok(ControlPlane {
            cp: v1::control_plane_client::ControlPlaneClient::with_interceptor(channel.clone(), auth.clone())
                .max_decoding_message_size(limit),
            fs: v1::file_service_client::FileServiceClient::with_interceptor(channel, auth)
                .max_decoding_message_size(limit),
            timeout,
        })
    }
}

/// A failed call.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RpcError {
    /// The server answered with a status and a machine code.
    #[error("{}: {}", detail.code, detail.message)]
    Refused {
        /// The gRPC status code.
        status: tonic::Code,
        /// The server's error detail (or one made from the status).
        detail: v1::ErrorDetail,
    },
    /// The control plane could not be reached or did not answer in time (retry later).
    #[error("control plane unavailable: {0}")]
    Unavailable(String),
    /// The run was cancelled while the call was in flight.
    #[error("cancelled")]
    Cancelled,
}

impl RpcError {
    /// Classifies a status.
    pub fn from_status(s: tonic::Status) -> Self {
        let transient =
            matches!(s.code(), tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled);
        // UNAVAILABLE is retryable whatever its detail says (the control plane's database or
        // queue is down): retried, and a lease survives it until its expiry.
        if s.code() == tonic::Code::Unavailable {
            let msg = proto::error_detail(&s).map(|d| format!("{}: {}", d.code, d.message));
            return RpcError::Unavailable(msg.unwrap_or_else(|| s.message().to_string()));
        }
        match proto::error_detail(&s) {
            Some(detail) if !(transient && detail.code.is_empty()) => RpcError::Refused { status: s.code(), detail },
            _ if transient || s.code() == tonic::Code::Unknown => RpcError::Unavailable(s.message().to_string()),
            _ => RpcError::Refused {
                status: s.code(),
                detail: v1::ErrorDetail {
                    code: format!("GRPC_{:?}", s.code()).to_uppercase(),
                    message: s.message().to_string(),
                    ..Default::default()
                },
            },
        }
    }

    /// The machine code (`LEASE_HELD`, …); `CONTROL_PLANE_UNAVAILABLE` or `CANCELLED` otherwise.
    pub fn code(&self) -> &str {
        match self {
            RpcError::Refused { detail, .. } => &detail.code,
            RpcError::Unavailable(_) => "CONTROL_PLANE_UNAVAILABLE",
            RpcError::Cancelled => "CANCELLED",
        }
    }

    /// Whether the lease this call carried is no longer ours: stop writing at once.
    pub fn is_lease_lost(&self) -> bool {
        matches!(self.code(), proto::codes::LEASE_STALE | proto::codes::LEASE_EXPIRED | proto::codes::LEASE_NOT_FOUND)
    }

    /// The error as data (for a job's final error or a file state).
    pub fn to_detail(&self) -> v1::ErrorDetail {
        match self {
            RpcError::Refused { detail, .. } => detail.clone(),
            other => {
                v1::ErrorDetail { code: other.code().to_string(), message: other.to_string(), ..Default::default() }
            }
        }
    }
}

/// One unary call: bounded by `timeout`, abandoned when `cancel` fires.
pub async fn call<T, F>(cancel: &CancellationToken, timeout: Duration, fut: F) -> Result<T, RpcError>
where
    F: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    tokio::select! {
        _ = cancel.cancelled() => Err(RpcError::Cancelled),
        r = tokio::time::timeout(timeout, fut) => match r {
            Err(_) => Err(RpcError::Unavailable(format!("no answer within {timeout:?}"))),
            Ok(Err(s)) => Err(RpcError::from_status(s)),
            Ok(Ok(resp)) => Ok(resp.into_inner()),
        },
    }
}

/// Like [`call`], retried (with a short backoff) while the control plane is unavailable, at
/// most `attempts` times. Every RPC of the contract is safe to retry.
pub async fn call_retrying<T, F, Fut>(
    cancel: &CancellationToken,
    timeout: Duration,
    attempts: u32,
    mut make: F,
) -> Result<T, RpcError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let mut delay = Duration::from_millis(200);
    let mut n = 0;
    loop {
        n += 1;
        match call(cancel, timeout, make()).await {
            Err(RpcError::Unavailable(m)) if n < attempts => {
                tracing::debug!(error = %m, attempt = n, "control plane unavailable; retrying");
                tokio::select! {
                    _ = cancel.cancelled() => return Err(RpcError::Cancelled),
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(3));
            }
            other => return other,
        }
    }
}

/// `google.protobuf.Duration` of a std duration.
pub fn duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration { seconds: d.as_secs() as i64, nanos: d.subsec_nanos() as i32 }
}

/// `google.protobuf.Timestamp` of now.
pub fn now_ts() -> prost_types::Timestamp {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    prost_types::Timestamp { seconds: d.as_secs() as i64, nanos: d.subsec_nanos() as i32 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified_by_machine_code() {
        let s = proto::error_status(
            tonic::Code::FailedPrecondition,
            &v1::ErrorDetail { code: "LEASE_STALE".into(), message: "superseded".into(), ..Default::default() },
        );
        let e = RpcError::from_status(s);
        assert!(e.is_lease_lost());
        assert_eq!(e.code(), "LEASE_STALE");
        let e = RpcError::from_status(tonic::Status::unavailable("connection refused"));
        assert!(matches!(e, RpcError::Unavailable(_)));
        let s = proto::error_status(
            tonic::Code::Unavailable,
            &v1::ErrorDetail {
                code: "UNAVAILABLE".into(),
                message: "the database is unavailable".into(),
                ..Default::default()
            },
        );
        assert!(matches!(RpcError::from_status(s), RpcError::Unavailable(_)));
        let e = RpcError::from_status(tonic::Status::internal("boom"));
        assert_eq!(e.code(), "GRPC_INTERNAL");
    }
}
