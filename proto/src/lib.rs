//! The versioned gRPC contract between the api-server (control plane and ScaiDrive file
//! service) and the sync-worker fleet, and its generated code.
//!
//! The contract itself is `proto/v1/*.proto`; read the comments there for every message,
//! field and RPC. This crate adds only what the wire format cannot say: the list of machine
//! error codes, helpers that put an [`v1::ErrorDetail`] into a [`tonic::Status`] and read it
//! back, and a `Debug` for [`v1::SmbCredentials`] that never prints the password.
//!
//! It must never hold business logic: both sides depend on it, and it changes only when the
//! contract does.

use prost::Message;

/// Package `scaidrive.connector.v1`: messages, `control_plane_{client,server}` and
/// `file_service_{client,server}`.
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("scaidrive.connector.v1");
}

/// The contract version this crate speaks, as answered in `PingResponse.contract_version`.
pub const CONTRACT_VERSION: &str = "v1";

impl std::fmt::Debug for v1::SmbCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmbCredentials")
            .field("domain", &self.domain)
            .field("username", &self.username)
            .field("password", &"***")
            .finish()
    }
}

/// Machine codes carried in [`v1::ErrorDetail::code`], with the gRPC status code each one
/// goes with. Clients must tolerate codes not listed here.
pub mod codes {
    /// UNAUTHENTICATED: missing or invalid `authorization: Bearer` worker token.
    pub const WORKER_UNAUTHENTICATED: &str = "WORKER_UNAUTHENTICATED";
    /// FAILED_PRECONDITION: another lease on the connector is live.
    pub const LEASE_HELD: &str = "LEASE_HELD";
    /// FAILED_PRECONDITION: the fencing token is not the connector's current one.
    pub const LEASE_STALE: &str = "LEASE_STALE";
    /// FAILED_PRECONDITION: the lease has expired.
    pub const LEASE_EXPIRED: &str = "LEASE_EXPIRED";
    /// FAILED_PRECONDITION: no such lease.
    pub const LEASE_NOT_FOUND: &str = "LEASE_NOT_FOUND";
    /// NOT_FOUND: no such connector.
    pub const CONNECTOR_NOT_FOUND: &str = "CONNECTOR_NOT_FOUND";
    /// NOT_FOUND: no such job.
    pub const JOB_NOT_FOUND: &str = "JOB_NOT_FOUND";
    /// FAILED_PRECONDITION: the job already has an outcome (metadata `outcome`).
    pub const JOB_FINISHED: &str = "JOB_FINISHED";
    /// FAILED_PRECONDITION: the job belongs to another connector than the lease.
    pub const JOB_LEASE_MISMATCH: &str = "JOB_LEASE_MISMATCH";
    /// PERMISSION_DENIED: the share or node is outside the lease's connector's target share.
    pub const OUTSIDE_SCOPE: &str = "OUTSIDE_SCOPE";
    /// NOT_FOUND: no such node (or parent).
    pub const NODE_NOT_FOUND: &str = "NODE_NOT_FOUND";
    /// ALREADY_EXISTS: the name is taken in the target folder.
    pub const NAME_CONFLICT: &str = "NAME_CONFLICT";
    /// ABORTED: a base version or etag precondition is stale (metadata `current_version_id`,
    /// `current_etag`).
    pub const VERSION_CONFLICT: &str = "VERSION_CONFLICT";
    /// FAILED_PRECONDITION: a file where a folder is needed, or the reverse.
    pub const NODE_KIND_MISMATCH: &str = "NODE_KIND_MISMATCH";
    /// INVALID_ARGUMENT: uploaded bytes do not match the header's size or sha256.
    pub const CHECKSUM_MISMATCH: &str = "CHECKSUM_MISMATCH";
    /// INVALID_ARGUMENT: a name that is empty, contains "/", or is otherwise not allowed.
    pub const INVALID_NAME: &str = "INVALID_NAME";
    /// INVALID_ARGUMENT: any other malformed request (`field` names the culprit).
    pub const VALIDATION_FAILED: &str = "VALIDATION_FAILED";
    /// OUT_OF_RANGE: a download range beyond the end of the file.
    pub const RANGE_NOT_SATISFIABLE: &str = "RANGE_NOT_SATISFIABLE";
    /// INTERNAL: a server fault; details are logged server-side, never sent.
    pub const INTERNAL: &str = "INTERNAL";
    /// Job and file errors (data, not statuses): SMB refused the credentials.
    pub const CONNECTOR_AUTH_FAILED: &str = "CONNECTOR_AUTH_FAILED";
    /// Job and file errors (data, not statuses): the SMB server could not be reached.
    pub const CONNECTOR_UNREACHABLE: &str = "CONNECTOR_UNREACHABLE";
}

/// Builds a status carrying `detail`: its message is `"<code>: <message>"` and its details are
/// the prost encoding of `detail`. Servers build every non-OK status with this.
pub fn error_status(grpc_code: tonic::Code, detail: &v1::ErrorDetail) -> tonic::Status {
    tonic::Status::with_details(
        grpc_code,
        format!("{}: {}", detail.code, detail.message),
        detail.encode_to_vec().into(),
    )
}

/// The [`v1::ErrorDetail`] of a status built by [`error_status`]. Falls back to the
/// `"<code>: "` prefix of the message when the details are missing or unreadable, and to
/// `None` when neither names a code.
pub fn error_detail(status: &tonic::Status) -> Option<v1::ErrorDetail> {
    if let Ok(detail) = v1::ErrorDetail::decode(status.details()) {
        if !detail.code.is_empty() {
            return Some(detail);
        }
    }
    let (code, message) = status.message().split_once(": ")?;
    let is_code = !code.is_empty() && code.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
    is_code.then(|| v1::ErrorDetail { code: code.to_owned(), message: message.to_owned(), ..Default::default() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn messages_round_trip_through_prost() {
        let spec = v1::ClaimJobResponse {
            job: Some(v1::JobSpec {
                job_id: "job_01J6A".into(),
                connector_id: "cnn_01J5X".into(),
                attempt: 1,
                trigger: v1::JobTrigger::Manual as i32,
                requested_at: Some(prost_types::Timestamp { seconds: 1_776_938_400, nanos: 0 }),
                connector: Some(v1::ConnectorConfig {
                    connector_id: "cnn_01J5X".into(),
                    credentials: Some(v1::SmbCredentials {
                        domain: "CORP".into(),
                        username: "scaidrive-svc".into(),
                        password: "hunter2".into(),
                    }),
                    direction: v1::SyncDirection::Bidirectional as i32,
                    conflict_resolution: v1::ConflictResolution::KeepBoth as i32,
                    exclude: Some(v1::PathFilter {
                        extensions: vec![],
                        patterns: vec!["~$*".into(), "Thumbs.db".into()],
                    }),
                    ..Default::default()
                }),
                scaidrive_cursor: "42".into(),
                ..Default::default()
            }),
        };
        let decoded = v1::ClaimJobResponse::decode(spec.encode_to_vec().as_slice()).unwrap();
        assert_eq!(decoded, spec);

        let chunk = v1::UploadRequest { part: Some(v1::upload_request::Part::Chunk(vec![0, 1, 2, 255])) };
        assert_eq!(v1::UploadRequest::decode(&*chunk.encode_to_vec()).unwrap(), chunk);

        let result = v1::TestConnectionResult {
            success: false,
            message: "logon failed".into(),
            error: Some(v1::TestConnectionError {
                code: codes::CONNECTOR_AUTH_FAILED.into(),
                nt_status: Some(0xC000_006D),
                message: "STATUS_LOGON_FAILURE".into(),
            }),
        };
        assert_eq!(v1::TestConnectionResult::decode(&*result.encode_to_vec()).unwrap(), result);
    }

    #[test]
    fn debug_never_prints_the_password() {
        let creds = v1::SmbCredentials { domain: "CORP".into(), username: "svc".into(), password: "hunter2".into() };
        let config = v1::ConnectorConfig { credentials: Some(creds), ..Default::default() };
        let printed = format!("{config:?}");
        assert!(printed.contains("svc") && printed.contains("***"));
        assert!(!printed.contains("hunter2"));
    }

    #[test]
    fn error_detail_survives_a_status() {
        let detail = v1::ErrorDetail {
            code: codes::LEASE_STALE.into(),
            message: "token 7 superseded by 8".into(),
            ..Default::default()
        };
        let status = error_status(tonic::Code::FailedPrecondition, &detail);
        assert_eq!(status.message(), "LEASE_STALE: token 7 superseded by 8");
        assert_eq!(error_detail(&status), Some(detail));

        let bare = tonic::Status::failed_precondition("LEASE_EXPIRED: lease lse_1 expired");
        assert_eq!(error_detail(&bare).unwrap().code, codes::LEASE_EXPIRED);
        assert_eq!(error_detail(&tonic::Status::internal("boom")), None);
    }

    #[test]
    fn service_traits_and_clients_exist() {
        // These compile only if the generated traits and their tonic servers exist.
        #[allow(dead_code)]
        fn control_plane<S: v1::control_plane_server::ControlPlane>(
            svc: S,
        ) -> v1::control_plane_server::ControlPlaneServer<S> {
            v1::control_plane_server::ControlPlaneServer::new(svc)
        }
        #[allow(dead_code)]
        fn file_service<S: v1::file_service_server::FileService>(
            svc: S,
        ) -> v1::file_service_server::FileServiceServer<S> {
            v1::file_service_server::FileServiceServer::new(svc)
        }
        let _ = v1::control_plane_client::ControlPlaneClient::<tonic::transport::Channel>::new;
        let _ = v1::file_service_client::FileServiceClient::<tonic::transport::Channel>::new;

        use tonic::server::NamedService;
        assert_eq!(v1::control_plane_server::ControlPlaneServer::<()>::NAME, "scaidrive.connector.v1.ControlPlane");
        assert_eq!(v1::file_service_server::FileServiceServer::<()>::NAME, "scaidrive.connector.v1.FileService");
    }
}
