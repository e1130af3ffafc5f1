//! The gRPC service the sync-worker fleet talks to (`proto/v1`): the control plane (leases,
//! jobs, progress, file states) and the ScaiDrive file operations a sync needs.
//!
//! Every call needs the fleet's worker token (`authorization: Bearer …`); what it may touch is
//! scoped by the lease it carries: the lease's connector, that connector's target share.
//! Every write runs as the connector (the change log's actor) and is fenced: the lease is
//! checked inside the write's own transaction, so a worker that lost its lease commits
//! nothing. This module maps store errors to statuses carrying a machine code; it never logs
//! or returns a secret.

pub mod control;
pub mod files;

use proto::v1;
use tonic::{Code, Status};

use crate::error::ApiError;
use crate::ids::TenantId;
use crate::store::changes::Actor;
use crate::store::leases::{self, Fence, Lease, Refusal};
use crate::AppState;

/// Builds a status with an `ErrorDetail` (code, message, field).
pub fn status(code: Code, machine: &str, message: impl Into<String>) -> Status {
    proto::error_status(
        code,
        &v1::ErrorDetail { code: machine.to_string(), message: message.into(), ..Default::default() },
    )
}

pub fn invalid(field: &str, message: impl Into<String>) -> Status {
    proto::error_status(
        Code::InvalidArgument,
        &v1::ErrorDetail {
            code: proto::codes::VALIDATION_FAILED.to_string(),
            message: message.into(),
            field: field.to_string(),
            ..Default::default()
        },
    )
}

/// The gRPC form of a store or API error.
pub fn from_api(e: ApiError) -> Status {
    let (code, machine) = match (e.status.as_u16(), e.code) {
        (_, "LEASE_HELD" | "LEASE_STALE" | "LEASE_EXPIRED" | "LEASE_NOT_FOUND") => (Code::FailedPrecondition, e.code),
        (_, "VERSION_CONFLICT") => (Code::Aborted, proto::codes::VERSION_CONFLICT),
        (_, "NAME_TAKEN" | "ALREADY_EXISTS") => (Code::AlreadyExists, proto::codes::NAME_CONFLICT),
        (_, "NOT_A_FOLDER") => (Code::FailedPrecondition, proto::codes::NODE_KIND_MISMATCH),
        (_, "INVALID_NAME" | "NAME_TOO_LONG" | "INVALID_PATH") => (Code::InvalidArgument, proto::codes::INVALID_NAME),
        (404, _) => (Code::NotFound, proto::codes::NODE_NOT_FOUND),
        (409, c) => (Code::FailedPrecondition, c),
        (422 | 400, c) => (Code::InvalidArgument, c),
        (403, _) => (Code::PermissionDenied, proto::codes::OUTSIDE_SCOPE),
        (503, c) => (Code::Unavailable, c),
        (507, c) => (Code::ResourceExhausted, c),
        _ => (Code::Internal, proto::codes::INTERNAL),
    };
    let mut metadata = std::collections::HashMap::new();
    if let Some(serde_json::Value::Object(d)) = &e.details {
        for (k, v) in d {
            metadata.insert(k.clone(), v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()));
        }
    }
    proto::error_status(
        code,
        &v1::ErrorDetail {
            code: machine.to_string(),
            message: e.message,
            field: e.field.unwrap_or_default(),
            metadata,
        },
    )
}

pub fn refusal(r: Refusal) -> Status {
    from_api(r.into_error())
}

pub fn ts(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: ms.div_euclid(1000), nanos: (ms.rem_euclid(1000) * 1_000_000) as i32 }
}

/// Saturates: a worker's out-of-range time must not overflow (and panic) the call.
pub fn from_ts(t: &prost_types::Timestamp) -> i64 {
    t.seconds.saturating_mul(1000).saturating_add((t.nanos as i64) / 1_000_000)
}

/// Full precision (unix nanoseconds) for SMB times, which have 100 ns ticks: a state read
/// back must compare equal to what the worker sees on SMB, or every run would re-sync.
pub fn ts_ns(ns: i64) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: ns.div_euclid(1_000_000_000), nanos: ns.rem_euclid(1_000_000_000) as i32 }
}

pub fn from_ts_ns(t: &prost_types::Timestamp) -> i64 {
    t.seconds.saturating_mul(1_000_000_000).saturating_add(t.nanos as i64)
}

/// The connector behind a live lease, and what a call under it may touch.
pub struct Scope {
    pub lease: Lease,
    pub tenant: TenantId,
    pub connector_id: String,
    pub share_id: String,
    pub actor: Actor,
}

pub fn fence_of(t: Option<&v1::LeaseToken>) -> Result<Fence, Status> {
    let t = t.ok_or_else(|| invalid("lease", "a lease token is required"))?;
    if t.lease_id.is_empty() {
        return Err(invalid("lease.lease_id", "a lease id is required"));
    }
    Ok(Fence { lease_id: t.lease_id.clone(), token: t.fencing_token as i64 })
}

/// Checks the lease and returns its scope; `share_id`, when given, must be the connector's
/// target share.
pub async fn scope(state: &AppState, token: Option<&v1::LeaseToken>, share_id: Option<&str>) -> Result<Scope, Status> {
    let fence = fence_of(token)?;
    let (lease, connector) = leases::validate_scoped(&state.db, &fence).await.map_err(from_api)?.map_err(refusal)?;
    let (tenant, target) = connector.ok_or_else(|| {
        status(Code::NotFound, proto::codes::CONNECTOR_NOT_FOUND, "the lease's connector no longer exists")
    })?;
    if let Some(s) = share_id {
        if s != target {
            return Err(status(
                Code::PermissionDenied,
                proto::codes::OUTSIDE_SCOPE,
                "the share is not this connector's target share",
            ));
        }
    }
    Ok(Scope {
        actor: Actor::fenced_connector(&lease.connector_id, fence),
        connector_id: lease.connector_id.clone(),
        lease,
        tenant: TenantId::from_db(tenant),
        share_id: target,
    })
}

/// Checks the fleet's worker token on every call.
#[derive(Clone)]
pub struct WorkerAuth {
    token: std::sync::Arc<String>,
}

impl WorkerAuth {
    pub fn new(token: String) -> Self {
        Self { token: std::sync::Arc::new(token) }
    }
}

impl tonic::service::Interceptor for WorkerAuth {
    fn call(&mut self, req: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        let presented = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        // Compare digests, so timing says nothing about the token.
        use sha2::{Digest, Sha256};
        if !presented.is_empty() && Sha256::digest(presented.as_bytes()) == Sha256::digest(self.token.as_bytes()) {
            Ok(req)
        } else {
            Err(status(Code::Unauthenticated, proto::codes::WORKER_UNAUTHENTICATED, "a valid worker token is required"))
        }
    }
}

/// The gRPC services, behind the worker-token check.
pub fn router(state: AppState, worker_token: String) -> tonic::service::Routes {
    let auth = WorkerAuth::new(worker_token);
    let control = v1::control_plane_server::ControlPlaneServer::with_interceptor(
        control::Control::new(state.clone()),
        auth.clone(),
    );
    let files = tonic::service::interceptor::InterceptedService::new(
        v1::file_service_server::FileServiceServer::new(files::Files::new(state))
            .max_decoding_message_size(4 * 1024 * 1024),
        auth,
    );
    tonic::service::Routes::new(control).add_service(files)
}
