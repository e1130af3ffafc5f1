//! The authorization matrix of the workers' gRPC contract: every method of `ControlPlane` and
//! `FileService` (proto/v1) called without the worker token, with a wrong one, with the right
//! token but no lease, an unknown, forged, released, expired or superseded lease, a live lease
//! of another connector, and properly. Each refusal has the documented status and machine code,
//! carries nothing but its ErrorDetail (no secret, no id or name of the first connector's
//! share), and commits nothing (a fingerprint of the database is the same after it). A
//! proptest then throws arbitrary field values at the messages: no INTERNAL, no panic, every
//! error with a code, nothing written outside the connector's target share.
//!
//! Real api-server and database (SQLite and PostgreSQL), no workers: the test is the worker.

use std::collections::BTreeSet;

use e2e_tests::{on_both_backends, Api, Backend, TestServer};
use proto::v1;
use proto::v1::control_plane_client::ControlPlaneClient;
use proto::v1::file_service_client::FileServiceClient;
use reqwest::StatusCode;
use serde_json::json;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::Code;

on_both_backends!(
    every_rpc_answers_every_kind_of_caller_as_the_matrix_says,
    hostile_messages_get_clean_answers,
    what_a_replicating_connector_creates_starts_closed,
    an_upload_commits_only_what_its_trailer_vouches_for,
    an_uploads_reply_is_the_node_as_stored,
    a_states_version_names_the_states_until_one_is_written
);

/// Puts `authorization` metadata on every call (nothing for `None`).
#[derive(Clone)]
struct Auth(Option<String>);

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut r: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            r.metadata_mut().insert("authorization", v.parse().unwrap());
        }
        Ok(r)
    }
}

type Cp = ControlPlaneClient<InterceptedService<Channel, Auth>>;
type Fs = FileServiceClient<InterceptedService<Channel, Auth>>;

struct Clients {
    cp: Cp,
    fs: Fs,
}

async fn clients(srv: &TestServer, authorization: Option<String>) -> Clients {
    let ch = Channel::from_shared(srv.grpc_url.clone()).unwrap().connect().await.unwrap();
    Clients {
        cp: ControlPlaneClient::with_interceptor(ch.clone(), Auth(authorization.clone())),
        fs: FileServiceClient::with_interceptor(ch, Auth(authorization)).max_decoding_message_size(8 << 20),
    }
}

const PASSWORD: &str = "Grpc-matrix-pw-41d2";
const CONTENT: &[u8] = b"the connector's confidential figures";

/// Every RPC of the contract, in the order the matrix calls them (proper calls change state:
/// the claim comes before the job's reports, the outcome and the release come last).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rpc {
    FetchConnectionTest,
    Ping,
    AcquireLease,
    RenewLease,
    ClaimJob,
    ReportProgress,
    ReportFileStates,
    ListFileStates,
    ReportJobEvents,
    CheckCancel,
    ListPermissionStates,
    ApplyPermissions,
    ListChanges,
    Stat,
    List,
    Upload,
    Download,
    CreateFolder,
    Move,
    Delete,
    Restore,
    SetTimes,
    CompleteJob,
    ReleaseLease,
    AcquireWatch,
    RenewWatch,
    RequestSync,
    ReleaseWatch,
}

const ALL: [Rpc; 28] = [
    Rpc::FetchConnectionTest,
    Rpc::Ping,
    Rpc::AcquireLease,
    Rpc::RenewLease,
    Rpc::ClaimJob,
    Rpc::ReportProgress,
    Rpc::ReportFileStates,
    Rpc::ListFileStates,
    Rpc::ReportJobEvents,
    Rpc::CheckCancel,
    Rpc::ListPermissionStates,
    Rpc::ApplyPermissions,
    Rpc::ListChanges,
    Rpc::Stat,
    Rpc::List,
    Rpc::Upload,
    Rpc::Download,
    Rpc::CreateFolder,
    Rpc::Move,
    Rpc::Delete,
    Rpc::Restore,
    Rpc::SetTimes,
    Rpc::CompleteJob,
    Rpc::ReleaseLease,
    Rpc::AcquireWatch,
    Rpc::RenewWatch,
    Rpc::RequestSync,
    Rpc::ReleaseWatch,
];

impl Rpc {
    fn is_file_service(self) -> bool {
        matches!(
            self,
            Rpc::ListChanges
                | Rpc::Stat
                | Rpc::List
                | Rpc::Upload
                | Rpc::Download
                | Rpc::CreateFolder
                | Rpc::Move
                | Rpc::Delete
                | Rpc::Restore
                | Rpc::SetTimes
        )
    }
    /// Methods that need no lease at all.
    fn leaseless(self) -> bool {
        matches!(self, Rpc::Ping | Rpc::AcquireLease | Rpc::FetchConnectionTest)
    }
}

/// The lease (or what stands for one) a call carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lease {
    /// No lease at all.
    Missing,
    /// A lease id the server never issued.
    Unknown,
    /// The live lease's id with a token it never had.
    Forged,
    /// A lease its holder released.
    Released,
    /// A lease past its expiry that nobody took over.
    Expired,
    /// A lease that expired and was taken over by a newer one.
    Superseded,
    /// A live lease of another connector, naming the first connector's share and job.
    OtherConnector,
    /// A live lease of another connector, on its own share, naming the first one's nodes.
    OtherNodes,
    /// The first connector's live lease.
    Proper,
}

const LEASES: [Lease; 9] = [
    Lease::Missing,
    Lease::Unknown,
    Lease::Forged,
    Lease::Released,
    Lease::Expired,
    Lease::Superseded,
    Lease::OtherConnector,
    Lease::OtherNodes,
    Lease::Proper,
];

/// What a call gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Want {
    /// Success; the summary of the answer contains this.
    Ok(&'static str),
    /// Success, showing nothing of the first connector's share, job or states.
    Own,
    /// Refused with this status and machine code.
    No(Code, &'static str),
    /// The combination makes no sense for this method.
    Skip,
}

const STALE: Want = Want::No(Code::FailedPrecondition, "LEASE_STALE");
const OUTSIDE: Want = Want::No(Code::PermissionDenied, "OUTSIDE_SCOPE");
const MISMATCH: Want = Want::No(Code::FailedPrecondition, "JOB_LEASE_MISMATCH");
const NOT_CLAIMED: Want = Want::No(Code::FailedPrecondition, "JOB_NOT_CLAIMED");

/// The matrix: what `rpc` answers when called with `lease` (and the right worker token).
fn want(rpc: Rpc, lease: Lease) -> Want {
    use Lease::*;
    if rpc.leaseless() {
        return if lease == Proper { Want::Ok("") } else { Want::Skip };
    }
    // The watch methods carry a watch token, not a run lease: called once each, with a
    // configuration version or a watch the server never issued.
    match (rpc, lease) {
        (Rpc::AcquireWatch, Proper) => return Want::No(Code::FailedPrecondition, "WATCH_CONFIG_CHANGED"),
        (Rpc::RenewWatch | Rpc::RequestSync, Proper) => return Want::No(Code::FailedPrecondition, "WATCH_STALE"),
        (Rpc::ReleaseWatch, Proper) => return Want::Ok("released: false"),
        (Rpc::AcquireWatch | Rpc::RenewWatch | Rpc::RequestSync | Rpc::ReleaseWatch, _) => return Want::Skip,
        _ => {}
    }
    match (rpc, lease) {
        (_, Proper) => Want::Ok(""),
        // Renew and release name a lease in their fields; "another connector's" lease is
        // just a lease, so those columns do not apply.
        (Rpc::RenewLease, Missing | Unknown) => Want::No(Code::FailedPrecondition, "LEASE_NOT_FOUND"),
        (Rpc::RenewLease, Expired) => Want::No(Code::FailedPrecondition, "LEASE_EXPIRED"),
        (Rpc::RenewLease, Forged | Released | Superseded) => STALE,
        // Releasing is idempotent: a lease that is already over is reported as such.
        (Rpc::ReleaseLease, Missing | Unknown | Forged | Released | Expired | Superseded) => {
            Want::Ok("released: false")
        }
        (Rpc::RenewLease | Rpc::ReleaseLease, OtherConnector | OtherNodes) => Want::Skip,
        (_, Missing) => Want::No(Code::InvalidArgument, "VALIDATION_FAILED"),
        (_, Unknown) => Want::No(Code::FailedPrecondition, "LEASE_NOT_FOUND"),
        (_, Forged | Released | Superseded) => STALE,
        (_, Expired) => Want::No(Code::FailedPrecondition, "LEASE_EXPIRED"),
        (Rpc::ListChanges, OtherNodes) => Want::Own,
        (r, OtherConnector | OtherNodes) if r.is_file_service() => OUTSIDE,
        (_, OtherNodes) => Want::Skip,
        (
            Rpc::ClaimJob | Rpc::ReportFileStates | Rpc::ReportJobEvents | Rpc::CheckCancel | Rpc::CompleteJob,
            OtherConnector,
        ) => MISMATCH,
        (Rpc::ReportProgress, OtherConnector) => NOT_CLAIMED,
        (Rpc::ListFileStates | Rpc::ListPermissionStates, OtherConnector) => Want::Own,
        // Nodes outside the lease's share are skipped, never written.
        (Rpc::ApplyPermissions, OtherConnector) => Want::Ok("written: 0, unchanged: 0, skipped: 1"),
        (r, l) => panic!("no expectation for {r:?} with {l:?}"),
    }
}

/// The fixture: connector A (the one under attack) and B (the other connector), their shares,
/// A's job, nodes and leases.
struct Fx {
    srv: TestServer,
    api: Api,
    share_a: String,
    share_b: String,
    cnn_a: String,
    cnn_free: String,
    job_a: String,
    root_a: String,
    keep: String,
    move_me: String,
    delete_me: String,
    trashed: String,
    test_id: String,
    proper: v1::LeaseToken,
    forged: v1::LeaseToken,
    released: v1::LeaseToken,
    expired: v1::LeaseToken,
    superseded: v1::LeaseToken,
    other: v1::LeaseToken,
    /// What no refusal may show.
    secrets: Vec<String>,
    _tests: jobqueue::Consumer,
}

async fn connector(api: &Api, share: &str, name: &str) -> String {
    let (st, c) = api
        .post(
            "/api/v1/smb-connectors",
            json!({"name": name, "server_host": "127.0.0.1", "server_port": 1445, "share_name": "Share",
                   "username": "svc", "password": PASSWORD, "target_share_id": share,
                   "target_path": "/From FS", "sync_interval_minutes": 0}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{c}");
    c["id"].as_str().unwrap().to_string()
}

async fn acquire(cp: &mut Cp, connector: &str, worker: &str) -> v1::LeaseToken {
    let r = cp
        .acquire_lease(v1::AcquireLeaseRequest {
            connector_id: connector.into(),
            worker_id: worker.into(),
            ttl: Some(prost_types::Duration { seconds: 300, nanos: 0 }),
        })
        .await
        .unwrap_or_else(|e| panic!("acquire {connector}: {e}"))
        .into_inner();
    v1::LeaseToken { lease_id: r.lease_id, fencing_token: r.fencing_token }
}

/// Makes a lease lapse, as if its holder had been paused past its expiry.
async fn expire(srv: &TestServer, l: &v1::LeaseToken) {
    sqlx::query("UPDATE leases SET expires_at = 0 WHERE id = $1")
        .bind(&l.lease_id)
        .execute(&srv.state.db.pool)
        .await
        .unwrap();
}

async fn fixture(
    backend: Backend,
) -> (Fx, jobqueue::Delivery, tokio::task::JoinHandle<(StatusCode, serde_json::Value)>) {
    let srv = TestServer::start(backend).await;
    let api = srv.admin();
    let share_a = api.share("Grpc-Share-A").await;
    let share_b = api.share("Grpc-Share-B").await;
    let cnn_a = connector(&api, &share_a, "A").await;
    let cnn_b = connector(&api, &share_b, "B").await;
    let cnn_expired = connector(&api, &share_a, "A-expired").await;
    let cnn_released = connector(&api, &share_a, "A-released").await;
    let cnn_free = connector(&api, &share_a, "A-free").await;
    let up = |path: &'static str| {
        let api = api.clone();
        let share = share_a.clone();
        async move {
            let (st, f) = api.upload(&share, path, CONTENT).await;
            assert!(st.is_success(), "{f}");
            f["file"]["id"].as_str().unwrap().to_string()
        }
    };
    let keep = up("/From FS/keep.txt").await;
    let move_me = up("/From FS/move-me.txt").await;
    let delete_me = up("/From FS/delete-me.txt").await;
    let trashed = up("/From FS/trashed.txt").await;
    assert_eq!(api.delete(&format!("/api/v1/files/{trashed}")).await.0, StatusCode::NO_CONTENT);
    let (_, root) = api.get(&format!("/api/v1/shares/{share_a}/items?path=/From FS")).await;
    let root_a = root["id"].as_str().unwrap().to_string();
    let (st, j) = api.post(&format!("/api/v1/smb-connectors/{cnn_a}/sync"), json!({})).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{j}");
    let job_a = j["id"].as_str().unwrap().to_string();

    let mut c = clients(&srv, Some(format!("Bearer {}", srv.worker_token()))).await;
    let superseded = acquire(&mut c.cp, &cnn_a, "w-old").await;
    expire(&srv, &superseded).await;
    let proper = acquire(&mut c.cp, &cnn_a, "w-new").await;
    assert!(proper.fencing_token > superseded.fencing_token);
    let forged = v1::LeaseToken { lease_id: proper.lease_id.clone(), fencing_token: proper.fencing_token + 7 };
    let expired = acquire(&mut c.cp, &cnn_expired, "w-paused").await;
    expire(&srv, &expired).await;
    let released = acquire(&mut c.cp, &cnn_released, "w-done").await;
    let r =
        c.cp.release_lease(v1::ReleaseLeaseRequest {
            lease_id: released.lease_id.clone(),
            fencing_token: released.fencing_token,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.released);
    let other = acquire(&mut c.cp, &cnn_b, "w-b").await;

    // A pending connectivity test: its REST caller waits while the matrix fetches it.
    let mut tests = srv.state.queue.consume(api_server::fleet::TESTS_QUEUE, 1).await.unwrap();
    let tester = srv.admin();
    let path = format!("/api/v1/smb-connectors/{cnn_a}/test");
    let waiting = tokio::spawn(async move { tester.post(&path, json!({})).await });
    let d = tokio::time::timeout(std::time::Duration::from_secs(10), tests.next()).await.unwrap().unwrap().unwrap();
    let msg: serde_json::Value = serde_json::from_slice(&d.body).unwrap();
    let test_id = msg["test_id"].as_str().unwrap().to_string();

    let secrets = vec![
        PASSWORD.to_string(),
        String::from_utf8_lossy(CONTENT).into_owned(),
        "keep.txt".into(),
        "move-me.txt".into(),
        "Grpc-Share-A".into(),
        root_a.clone(),
        keep.clone(),
        move_me.clone(),
        delete_me.clone(),
        trashed.clone(),
        proper.lease_id.clone(),
    ];
    let fx = Fx {
        srv,
        api,
        share_a,
        share_b,
        cnn_a,
        cnn_free,
        job_a,
        root_a,
        keep,
        move_me,
        delete_me,
        trashed,
        test_id,
        proper,
        forged,
        released,
        expired,
        superseded,
        other,
        secrets,
        _tests: tests,
    };
    (fx, d, waiting)
}

fn by_id(id: &str) -> Option<v1::NodeRef> {
    Some(v1::NodeRef { r#ref: Some(v1::node_ref::Ref::NodeId(id.into())) })
}

fn by_path(p: &str) -> Option<v1::NodeRef> {
    Some(v1::NodeRef { r#ref: Some(v1::node_ref::Ref::Path(p.into())) })
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// The answer's summary for a success; the status for a refusal.
type Outcome = Result<String, tonic::Status>;

impl Fx {
    fn lease(&self, l: Lease) -> Option<v1::LeaseToken> {
        match l {
            Lease::Missing => None,
            Lease::Unknown => Some(v1::LeaseToken { lease_id: format!("lse_{}", ulid::Ulid::new()), fencing_token: 1 }),
            Lease::Forged => Some(self.forged.clone()),
            Lease::Released => Some(self.released.clone()),
            Lease::Expired => Some(self.expired.clone()),
            Lease::Superseded => Some(self.superseded.clone()),
            Lease::OtherConnector | Lease::OtherNodes => Some(self.other.clone()),
            Lease::Proper => Some(self.proper.clone()),
        }
    }

    /// The share a call names: the other connector's own share for `OtherNodes`.
    fn share(&self, l: Lease) -> String {
        if l == Lease::OtherNodes {
            self.share_b.clone()
        } else {
            self.share_a.clone()
        }
    }

    /// A folder of A's share: by id when the call names another share, by path otherwise.
    fn folder(&self, l: Lease) -> Option<v1::NodeRef> {
        if l == Lease::OtherNodes {
            by_id(&self.root_a)
        } else {
            by_path("/From FS")
        }
    }

    async fn call(&self, c: &mut Clients, rpc: Rpc, l: Lease) -> Outcome {
        let lease = self.lease(l);
        let (lease_id, fencing_token) =
            lease.as_ref().map(|t| (t.lease_id.clone(), t.fencing_token)).unwrap_or_default();
        let share_id = self.share(l);
        let job_id = self.job_a.clone();
        let s = |x: &dyn std::fmt::Debug| format!("{x:?}");
        Ok(match rpc {
            Rpc::FetchConnectionTest => s(&c
                .cp
                .fetch_connection_test(v1::FetchConnectionTestRequest {
                    test_id: self.test_id.clone(),
                    worker_id: "w-new".into(),
                })
                .await?
                .into_inner()
                .test_id),
            Rpc::Ping => {
                s(&c.cp.ping(v1::PingRequest { worker_id: "w-new".into(), ..Default::default() }).await?.into_inner())
            }
            Rpc::AcquireLease => s(&c
                .cp
                .acquire_lease(v1::AcquireLeaseRequest {
                    connector_id: self.cnn_free.clone(),
                    worker_id: "w-free".into(),
                    ttl: None,
                })
                .await?
                .into_inner()
                .fencing_token),
            Rpc::RenewLease => s(&c
                .cp
                .renew_lease(v1::RenewLeaseRequest {
                    lease_id,
                    fencing_token,
                    ttl: Some(prost_types::Duration { seconds: 300, nanos: 0 }),
                })
                .await?
                .into_inner()),
            Rpc::ReleaseLease => {
                s(&c.cp.release_lease(v1::ReleaseLeaseRequest { lease_id, fencing_token }).await?.into_inner())
            }
            Rpc::AcquireWatch => s(&c
                .cp
                .acquire_watch(v1::AcquireWatchRequest {
                    connector_id: self.cnn_free.clone(),
                    worker_id: "w-free".into(),
                    ttl: None,
                    config_version: "cv1-not-this-configuration".into(),
                })
                .await?
                .into_inner()),
            Rpc::RenewWatch => s(&c
                .cp
                .renew_watch(v1::RenewWatchRequest { watch: Some(never_issued_watch()), ttl: None })
                .await?
                .into_inner()),
            Rpc::RequestSync => s(&c
                .cp
                .request_sync(v1::RequestSyncRequest {
                    watch: Some(never_issued_watch()),
                    scope: Some(v1::SyncScope { full: true, folders: vec![] }),
                })
                .await?
                .into_inner()),
            Rpc::ReleaseWatch => s(&c
                .cp
                .release_watch(v1::ReleaseWatchRequest { watch: Some(never_issued_watch()) })
                .await?
                .into_inner()),
            Rpc::ClaimJob => {
                let spec = c.cp.claim_job(v1::ClaimJobRequest { job_id, lease }).await?.into_inner().job.unwrap();
                let creds = spec.connector.as_ref().and_then(|c| c.credentials.as_ref()).unwrap();
                assert_eq!(creds.password, PASSWORD, "the lease holder gets the credentials");
                format!("claimed {} attempt {}", spec.job_id, spec.attempt)
            }
            Rpc::ReportProgress => {
                let u = v1::ProgressUpdate {
                    job_id,
                    lease,
                    phase: v1::JobPhase::Transferring as i32,
                    counts: Some(v1::JobCounts { files_scanned: 5, ..Default::default() }),
                    current_path: "keep.txt".into(),
                    ..Default::default()
                };
                s(&c.cp.report_progress(futures::stream::iter(vec![u])).await?.into_inner())
            }
            Rpc::ReportFileStates => {
                let states = vec![
                    v1::FileState {
                        path: "keep.txt".into(),
                        kind: v1::NodeKind::File as i32,
                        status: v1::FileSyncStatus::Synced as i32,
                        ..Default::default()
                    },
                    v1::FileState {
                        path: "locked.txt".into(),
                        kind: v1::NodeKind::File as i32,
                        status: v1::FileSyncStatus::Error as i32,
                        error: Some(v1::ErrorDetail {
                            code: "SMB_SHARING_VIOLATION".into(),
                            message: "open elsewhere".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                ];
                s(&c.cp.report_file_states(v1::ReportFileStatesRequest { job_id, lease, states }).await?.into_inner())
            }
            Rpc::ListFileStates => s(&c
                .cp
                .list_file_states(v1::ListFileStatesRequest { job_id, lease, ..Default::default() })
                .await?
                .into_inner()),
            Rpc::ReportJobEvents => {
                let events = vec![v1::JobEvent {
                    level: "warning".into(),
                    path: "keep.txt".into(),
                    code: "CONFLICT_RESOLVED".into(),
                    message: "kept both".into(),
                }];
                s(&c.cp.report_job_events(v1::ReportJobEventsRequest { job_id, lease, events }).await?.into_inner())
            }
            Rpc::CheckCancel => s(&c.cp.check_cancel(v1::CheckCancelRequest { job_id, lease }).await?.into_inner()),
            Rpc::ListPermissionStates => s(&c
                .cp
                .list_permission_states(v1::ListPermissionStatesRequest { job_id, lease, ..Default::default() })
                .await?
                .into_inner()),
            Rpc::ApplyPermissions => {
                let states = vec![v1::PermissionState {
                    path: "keep.txt".into(),
                    node_id: self.keep.clone(),
                    sd_changed_at_ns: 1,
                    mappings_version: 0,
                    acl: Some(v1::ReplicatedAcl {
                        inherit_from_parent: false,
                        entries: vec![v1::AclEntry {
                            principal_type: v1::PrincipalType::Everyone as i32,
                            principal_id: String::new(),
                            deny: false,
                            permissions: 1,
                            inherit_to_children: true,
                        }],
                        owner_user_id: String::new(),
                    }),
                    drifted: false,
                }];
                let r =
                    c.cp.apply_permissions(v1::ApplyPermissionsRequest { job_id, lease, states, forget_paths: vec![] })
                        .await?
                        .into_inner();
                format!("written: {}, unchanged: {}, skipped: {}", r.written, r.unchanged, r.skipped)
            }
            Rpc::CompleteJob => s(&c
                .cp
                .complete_job(v1::CompleteJobRequest {
                    job_id,
                    lease,
                    outcome: v1::JobOutcome::Completed as i32,
                    counts: Some(v1::JobCounts { files_scanned: 5, files_synced: 1, ..Default::default() }),
                    error: None,
                    scaidrive_cursor: String::new(),
                })
                .await?
                .into_inner()),
            Rpc::ListChanges => s(&c
                .fs
                .list_changes(v1::ListChangesRequest { lease, share_id, cursor: String::new(), limit: 0 })
                .await?
                .into_inner()),
            Rpc::Stat => {
                s(&c.fs.stat(v1::StatRequest { lease, share_id, node: by_id(&self.keep) }).await?.into_inner())
            }
            Rpc::List => s(&c
                .fs
                .list(v1::ListRequest { lease, share_id, folder: self.folder(l), ..Default::default() })
                .await?
                .into_inner()),
            Rpc::Upload => {
                let data = b"new from the worker".to_vec();
                let msgs = vec![
                    v1::UploadRequest {
                        part: Some(v1::upload_request::Part::Header(v1::UploadHeader {
                            lease,
                            share_id,
                            parent: self.folder(l),
                            name: "uploaded.txt".into(),
                            size: data.len() as u64,
                            sha256: sha256_hex(&data),
                            ..Default::default()
                        })),
                    },
                    v1::UploadRequest { part: Some(v1::upload_request::Part::Chunk(data)) },
                ];
                s(&c.fs.upload(futures::stream::iter(msgs)).await?.into_inner())
            }
            Rpc::Download => {
                let mut st = c
                    .fs
                    .download(v1::DownloadRequest { lease, share_id, node: by_id(&self.keep), ..Default::default() })
                    .await?
                    .into_inner();
                let mut got = Vec::new();
                while let Some(m) = st.message().await? {
                    if let Some(v1::download_response::Part::Chunk(b)) = m.part {
                        got.extend(b);
                    }
                }
                assert_eq!(got, CONTENT);
                format!("{} bytes", got.len())
            }
            Rpc::CreateFolder => s(&c
                .fs
                .create_folder(v1::CreateFolderRequest {
                    lease,
                    share_id,
                    parent: self.folder(l),
                    name: "made-by-worker".into(),
                    ..Default::default()
                })
                .await?
                .into_inner()),
            Rpc::Move => s(&c
                .fs
                .r#move(v1::MoveRequest {
                    lease,
                    share_id,
                    node_id: self.move_me.clone(),
                    new_name: "moved.txt".into(),
                    ..Default::default()
                })
                .await?
                .into_inner()),
            Rpc::Delete => s(&c
                .fs
                .delete(v1::DeleteRequest { lease, share_id, node_id: self.delete_me.clone(), precondition: None })
                .await?
                .into_inner()),
            Rpc::Restore => s(&c
                .fs
                .restore(v1::RestoreRequest { lease, share_id, node_id: self.trashed.clone(), ..Default::default() })
                .await?
                .into_inner()),
            Rpc::SetTimes => s(&c
                .fs
                .set_times(v1::SetTimesRequest {
                    lease,
                    share_id,
                    node_id: self.keep.clone(),
                    modified_at: Some(prost_types::Timestamp { seconds: 1_600_000_000, nanos: 0 }),
                    ..Default::default()
                })
                .await?
                .into_inner()),
        })
    }
}

/// A summary of everything a call could change: equal before and after a refused call.
async fn fingerprint(srv: &TestServer) -> String {
    let parts = [
        "SELECT COUNT(*) FROM nodes",
        "SELECT COUNT(*) FROM nodes WHERE deleted_at IS NOT NULL",
        "SELECT COALESCE(SUM(updated_at), 0) FROM nodes",
        "SELECT COALESCE(SUM(modified_at), 0) FROM nodes",
        "SELECT COUNT(*) FROM versions",
        "SELECT COUNT(*) FROM changes",
        "SELECT COUNT(*) FROM acls",
        "SELECT COUNT(*) FROM acl_entries",
        "SELECT COUNT(*) FROM file_states",
        "SELECT COUNT(*) FROM permission_states",
        "SELECT COUNT(*) FROM job_events",
        "SELECT COALESCE(SUM(attempt), 0) FROM jobs",
        "SELECT COUNT(*) FROM jobs WHERE status = 'running'",
        "SELECT COALESCE(SUM(files_scanned), 0) FROM jobs",
        "SELECT COUNT(*) FROM jobs WHERE status NOT IN ('queued', 'running')",
        "SELECT COUNT(*) FROM leases",
        "SELECT COALESCE(SUM(released), 0) FROM leases",
        "SELECT COALESCE(SUM(expires_at), 0) FROM leases",
        "SELECT COALESCE(SUM(last_token), 0) FROM lease_counters",
        "SELECT COALESCE(SUM(updated_at), 0) FROM connectors",
    ];
    let sql = format!(
        "SELECT {}",
        parts.iter().map(|p| format!("CAST(({p}) AS TEXT)")).collect::<Vec<_>>().join(" || ',' || ")
    );
    let (fp,): (String,) = sqlx::query_as(&sql).fetch_one(&srv.state.db.pool).await.expect("fingerprint");
    fp
}

/// A refusal: the wanted status and code, an ErrorDetail and nothing else of value.
fn assert_refusal(ctx: &str, e: &tonic::Status, code: Code, machine: &str, secrets: &[String]) {
    assert_eq!(e.code(), code, "{ctx}: {e:?}");
    let d = proto::error_detail(e).unwrap_or_else(|| panic!("{ctx}: no ErrorDetail in {e:?}"));
    assert_eq!(d.code, machine, "{ctx}: {e:?}");
    assert!(d.metadata.is_empty(), "{ctx}: a refusal carries no metadata: {d:?}");
    assert!(e.message().starts_with(&format!("{machine}: ")), "{ctx}: {e:?}");
    let text = format!("{} {:?}", e.message(), d);
    for s in secrets {
        assert!(!text.contains(s.as_str()), "{ctx}: the refusal shows '{s}': {text}");
    }
}

fn never_issued_watch() -> v1::WatchToken {
    v1::WatchToken { watch_id: "wch_never_issued".into(), fencing_token: 1 }
}

/// The RPC names the contract declares.
fn declared_rpcs() -> BTreeSet<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../proto/v1");
    let mut out = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for line in text.lines() {
            if let Some(rest) = line.trim().strip_prefix("rpc ") {
                out.insert(rest.split('(').next().unwrap().trim().to_string());
            }
        }
    }
    out
}

async fn every_rpc_answers_every_kind_of_caller_as_the_matrix_says(backend: Backend) {
    let covered: BTreeSet<String> = ALL.iter().map(|r| format!("{r:?}")).collect();
    assert_eq!(declared_rpcs(), covered, "every RPC of proto/v1 has a row, and only those");

    let (fx, pending_test, waiting) = fixture(backend).await;
    let mut waiting = Some(waiting);
    let srv = &fx.srv;
    let mut proper = clients(srv, Some(format!("Bearer {}", srv.worker_token()))).await;
    let mut unauthenticated = [
        ("no worker token", clients(srv, None).await),
        ("a wrong worker token", clients(srv, Some("Bearer swt_wrong".into())).await),
        ("an empty bearer", clients(srv, Some("Bearer ".into())).await),
        ("the token without its scheme", clients(srv, Some(srv.worker_token())).await),
        ("a user's API token", clients(srv, Some(format!("Bearer {}", srv.admin_token))).await),
        ("a longer token", clients(srv, Some(format!("Bearer {}x", srv.worker_token()))).await),
    ];
    let mut pending_test = Some(pending_test);
    let mut calls = 0usize;
    let mut refusals = 0usize;
    for rpc in ALL {
        // Without the worker token: refused before anything, with the proper lease at hand.
        for (label, c) in unauthenticated.iter_mut() {
            let before = fingerprint(srv).await;
            let e = fx.call(c, rpc, Lease::Proper).await.expect_err(&format!("{rpc:?} with {label}"));
            calls += 1;
            refusals += 1;
            assert_refusal(
                &format!("{rpc:?} with {label}"),
                &e,
                Code::Unauthenticated,
                "WORKER_UNAUTHENTICATED",
                &fx.secrets,
            );
            assert_eq!(fingerprint(srv).await, before, "{rpc:?} with {label} changed something");
        }
        for l in LEASES {
            let w = want(rpc, l);
            let ctx = format!("{rpc:?} with lease {l:?}");
            let before = fingerprint(srv).await;
            match w {
                Want::Skip => continue,
                Want::No(code, machine) => {
                    let e = fx.call(&mut proper, rpc, l).await.expect_err(&format!("{ctx} must be refused"));
                    assert_refusal(&ctx, &e, code, machine, &fx.secrets);
                    assert_eq!(fingerprint(srv).await, before, "{ctx}: a refused call changed something");
                    refusals += 1;
                }
                Want::Ok(summary) => {
                    let got = fx.call(&mut proper, rpc, l).await.unwrap_or_else(|e| panic!("{ctx}: {e:?}"));
                    assert!(got.contains(summary), "{ctx}: {got}");
                    if l != Lease::Proper {
                        assert_eq!(fingerprint(srv).await, before, "{ctx}: changed something");
                    }
                }
                Want::Own => {
                    let got = fx.call(&mut proper, rpc, l).await.unwrap_or_else(|e| panic!("{ctx}: {e:?}"));
                    for s in &fx.secrets {
                        assert!(!got.contains(s.as_str()), "{ctx}: shows '{s}': {got}");
                    }
                    assert!(!got.contains("keep.txt") && !got.contains(&fx.job_a), "{ctx}: {got}");
                }
            }
            calls += 1;
        }
        if rpc == Rpc::FetchConnectionTest {
            // Answer the waiting REST caller; the test is then gone.
            let d = pending_test.take().unwrap();
            let answer = v1::TestConnectionResult { success: true, message: "connected".into(), error: None };
            srv.state.queue.reply(&d, jobqueue::Message::new(prost::Message::encode_to_vec(&answer))).await.unwrap();
            d.ack().await.unwrap();
            let (st, t) = waiting.take().unwrap().await.unwrap();
            assert_eq!((st, t["success"].as_bool()), (StatusCode::OK, Some(true)), "{t}");
            let e = fx.call(&mut proper, rpc, Lease::Proper).await.expect_err("an answered test is gone");
            assert_refusal("FetchConnectionTest after the answer", &e, Code::NotFound, "TEST_NOT_FOUND", &fx.secrets);
        }
    }

    // The job has an outcome now: another connector's lease still learns nothing of it and
    // changes nothing.
    for rpc in [Rpc::CompleteJob, Rpc::CheckCancel, Rpc::ClaimJob, Rpc::ReportFileStates, Rpc::ReportJobEvents] {
        let ctx = format!("{rpc:?} on the finished job with another connector's lease");
        let before = fingerprint(srv).await;
        let e = fx.call(&mut proper, rpc, Lease::OtherConnector).await.expect_err(&ctx);
        assert_refusal(&ctx, &e, Code::FailedPrecondition, "JOB_LEASE_MISMATCH", &fx.secrets);
        assert_eq!(fingerprint(srv).await, before, "{ctx}: changed something");
        calls += 1;
        refusals += 1;
    }

    // What the proper calls did, and only that: the share holds exactly the fixture plus the
    // worker's writes; B's share is untouched; A's job log has exactly the proper reports.
    let (_, list) = fx.api.get(&format!("/api/v1/folders/{}/children", fx.root_a)).await;
    let mut names: Vec<&str> = list["items"].as_array().unwrap().iter().map(|i| i["name"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["keep.txt", "made-by-worker", "moved.txt", "trashed.txt", "uploaded.txt"], "{list}");
    let (_, b) = fx.api.get(&format!("/api/v1/shares/{}/children", fx.share_b)).await;
    assert_eq!(b["items"].as_array().unwrap().len(), 1, "only B's target folder: {b}");
    let (_, job) = fx.api.get(&format!("/api/v1/smb-connectors/{}/jobs/{}", fx.cnn_a, fx.job_a)).await;
    assert_eq!((job["status"].as_str(), job["attempt"].as_i64()), (Some("completed"), Some(1)), "{job}");
    let events: Vec<&str> = job["events"].as_array().unwrap().iter().map(|e| e["code"].as_str().unwrap()).collect();
    assert_eq!(events, ["SMB_SHARING_VIOLATION", "CONFLICT_RESOLVED"], "{job}");
    eprintln!("gRPC matrix: {} RPCs, {calls} calls, {refusals} refusals", ALL.len());
    fx.srv.stop().await;
}

/// One hostile message, with the fields the fuzzer chose.
#[derive(Debug, Clone)]
enum Msg {
    CreateFolder(Option<v1::NodeRef>, String, bool, String, Option<prost_types::Timestamp>),
    Upload(Option<v1::NodeRef>, String, bool, String, u64, Option<prost_types::Timestamp>),
    Move(String, Option<v1::NodeRef>, String),
    Stat(Option<v1::NodeRef>, String),
    List(Option<v1::NodeRef>, String, u32, bool),
    ListChanges(String, u32, String),
    Download(String, u64, u64, String),
    SetTimes(String, Option<prost_types::Timestamp>),
    Restore(String, String),
    FileStates(String, i32, String, u64),
    ListFileStates(String, u32),
    Events(String, String, String, String),
    Permissions(String, String, i32, u32, String),
}

/// A clean answer: success, or a refusal with its machine code, never a server fault or a
/// dropped stream (a panic in a handler resets the stream).
fn judge(m: &Msg, out: &Result<(), tonic::Status>) -> Result<(), String> {
    let Err(e) = out else { return Ok(()) };
    if matches!(e.code(), Code::Internal | Code::Unknown | Code::Unavailable | Code::DataLoss | Code::Cancelled) {
        return Err(format!("{m:?} → {e:?}"));
    }
    if proto::error_detail(e).is_none_or(|d| d.code.is_empty()) {
        return Err(format!("{m:?} → an error without a machine code: {e:?}"));
    }
    Ok(())
}

/// Sends one hostile message with the proper lease; `Ok` if the server accepted it.
async fn send(
    mut c: Clients,
    lease: Option<v1::LeaseToken>,
    job_id: String,
    share_a: String,
    m: Msg,
) -> Result<(), tonic::Status> {
    match m {
        Msg::CreateFolder(parent, name, create_parents, share_id, modified_at) => {
            c.fs.create_folder(v1::CreateFolderRequest {
                lease,
                share_id,
                parent,
                name,
                create_parents,
                modified_at,
                created_at: None,
            })
            .await
            .map(|_| ())
        }
        Msg::Upload(parent, name, create_parents, share_id, size, modified_at) => {
            let data = b"fuzz".to_vec();
            let header = v1::UploadHeader {
                lease,
                share_id,
                parent,
                name,
                size: if size % 2 == 0 { data.len() as u64 } else { size },
                sha256: sha256_hex(&data),
                create_parents,
                modified_at,
                ..Default::default()
            };
            let msgs = vec![
                v1::UploadRequest { part: Some(v1::upload_request::Part::Header(header)) },
                v1::UploadRequest { part: Some(v1::upload_request::Part::Chunk(data)) },
            ];
            c.fs.upload(futures::stream::iter(msgs)).await.map(|_| ())
        }
        Msg::Move(node_id, new_parent, new_name) => {
            c.fs.r#move(v1::MoveRequest { lease, share_id: share_a, node_id, new_parent, new_name, precondition: None })
                .await
                .map(|_| ())
        }
        Msg::Stat(node, share_id) => c.fs.stat(v1::StatRequest { lease, share_id, node }).await.map(|_| ()),
        Msg::List(folder, page_token, page_size, recursive) => {
            c.fs.list(v1::ListRequest {
                lease,
                share_id: share_a,
                folder,
                recursive,
                include_deleted: recursive,
                page_size,
                page_token,
            })
            .await
            .map(|_| ())
        }
        Msg::ListChanges(cursor, limit, share_id) => {
            c.fs.list_changes(v1::ListChangesRequest { lease, share_id, cursor, limit }).await.map(|_| ())
        }
        Msg::Download(node, offset, length, version_id) => {
            let r =
                c.fs.download(v1::DownloadRequest {
                    lease,
                    share_id: share_a,
                    node: by_id(&node),
                    version_id,
                    offset,
                    length,
                })
                .await;
            match r {
                Ok(s) => {
                    let mut s = s.into_inner();
                    while s.message().await?.is_some() {}
                    Ok(())
                }
                Err(e) => Err(e),
            }
        }
        Msg::SetTimes(node_id, modified_at) => {
            c.fs.set_times(v1::SetTimesRequest { lease, share_id: share_a, node_id, modified_at, ..Default::default() })
                .await
                .map(|_| ())
        }
        Msg::Restore(node_id, version_id) => {
            c.fs.restore(v1::RestoreRequest { lease, share_id: share_a, node_id, version_id, precondition: None })
                .await
                .map(|_| ())
        }
        Msg::FileStates(path, status, code, size) => {
            let state = v1::FileState {
                path,
                kind: v1::NodeKind::File as i32,
                status,
                smb: Some(v1::SmbItemState {
                    size,
                    file_id: size,
                    modified_at: Some(prost_types::Timestamp { seconds: size as i64, nanos: 0 }),
                    ..Default::default()
                }),
                scaidrive: Some(v1::ScaiDriveItemState { size, ..Default::default() }),
                error: (!code.is_empty()).then(|| v1::ErrorDetail { code, message: "m".into(), ..Default::default() }),
                ..Default::default()
            };
            c.cp.report_file_states(v1::ReportFileStatesRequest { job_id, lease, states: vec![state] })
                .await
                .map(|_| ())
        }
        Msg::ListFileStates(page_token, page_size) => {
            // The same hostile text as the known version too.
            let known_version = page_token.clone();
            c.cp.list_file_states(v1::ListFileStatesRequest { job_id, lease, page_token, page_size, known_version })
                .await
                .map(|_| ())
        }
        Msg::Events(level, path, code, message) => {
            c.cp.report_job_events(v1::ReportJobEventsRequest {
                job_id,
                lease,
                events: vec![v1::JobEvent { level, path, code, message }],
            })
            .await
            .map(|_| ())
        }
        Msg::Permissions(path, node_id, principal_type, permissions, principal_id) => {
            let state = v1::PermissionState {
                path,
                node_id,
                sd_changed_at_ns: permissions as i64,
                mappings_version: u64::MAX,
                acl: Some(v1::ReplicatedAcl {
                    inherit_from_parent: permissions % 2 == 0,
                    entries: vec![v1::AclEntry {
                        principal_type,
                        principal_id: principal_id.clone(),
                        deny: permissions % 3 == 0,
                        permissions,
                        inherit_to_children: true,
                    }],
                    owner_user_id: principal_id,
                }),
                drifted: false,
            };
            c.cp.apply_permissions(v1::ApplyPermissionsRequest {
                job_id,
                lease,
                states: vec![state],
                forget_paths: vec![],
            })
            .await
            .map(|_| ())
        }
    }
}

/// Arbitrary values in the fields a worker fills: never INTERNAL, never a dropped connection,
/// every error with a machine code, and nothing outside the connector's target share.
async fn hostile_messages_get_clean_answers(backend: Backend) {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};

    let (fx, pending_test, waiting) = fixture(backend).await;
    let srv = &fx.srv;
    let answer = v1::TestConnectionResult { success: true, message: "connected".into(), error: None };
    srv.state.queue.reply(&pending_test, jobqueue::Message::new(prost::Message::encode_to_vec(&answer))).await.unwrap();
    pending_test.ack().await.unwrap();
    assert_eq!(waiting.await.unwrap().0, StatusCode::OK);
    let mut c = clients(srv, Some(format!("Bearer {}", srv.worker_token()))).await;
    c.cp.claim_job(v1::ClaimJobRequest { job_id: fx.job_a.clone(), lease: Some(fx.proper.clone()) }).await.unwrap();
    let (_, before_b) = fx.api.get(&format!("/api/v1/shares/{}/children", fx.share_b)).await;
    let other_shares: (i64,) = sqlx::query_as("SELECT COUNT(*) FROM nodes WHERE share_id <> $1")
        .bind(&fx.share_a)
        .fetch_one(&srv.state.db.pool)
        .await
        .unwrap();

    let text = prop_oneof![
        Just(String::new()),
        Just("..".to_string()),
        Just("../../etc/passwd".to_string()),
        Just("/From FS/../..".to_string()),
        Just("a\\..\\..\\b".to_string()),
        Just("C:\\Windows\\system32".to_string()),
        Just("nul\u{0}byte".to_string()),
        Just("x".repeat(5000)),
        Just("/".repeat(3000)),
        Just("Cafe\u{301}".to_string()),
        Just("\u{202e}txt.exe".to_string()),
        Just(fx.share_b.clone()),
        Just(fx.root_a.clone()),
        Just(fx.keep.clone()),
        ".{0,40}",
        "[a-z/.]{0,30}",
    ];
    let nodes = prop_oneof![
        Just(fx.keep.clone()),
        Just(fx.root_a.clone()),
        Just(fx.share_a.clone()),
        Just(fx.share_b.clone()),
        text.clone()
    ];
    let reference =
        prop_oneof![Just(None), text.clone().prop_map(|p| by_path(&p)), nodes.clone().prop_map(|n| by_id(&n)),];
    let share = prop_oneof![Just(fx.share_a.clone()), Just(fx.share_b.clone()), text.clone()];
    let number = prop_oneof![Just(0u64), Just(u64::MAX), Just(i64::MAX as u64 + 1), any::<u64>(), 0u64..10];
    let small = prop_oneof![Just(0u32), Just(u32::MAX), Just(5001u32), any::<u32>()];
    let stamp = prop_oneof![
        Just(None),
        Just(Some(prost_types::Timestamp { seconds: i64::MAX, nanos: 0 })),
        Just(Some(prost_types::Timestamp { seconds: i64::MIN, nanos: -1 })),
        (any::<i64>(), any::<i32>()).prop_map(|(seconds, nanos)| Some(prost_types::Timestamp { seconds, nanos })),
    ];
    let msg = prop_oneof![
        (reference.clone(), text.clone(), any::<bool>(), share.clone(), stamp.clone())
            .prop_map(|(p, n, cp, s, t)| Msg::CreateFolder(p, n, cp, s, t)),
        (reference.clone(), text.clone(), any::<bool>(), share.clone(), number.clone(), stamp.clone())
            .prop_map(|(p, n, cp, s, size, t)| Msg::Upload(p, n, cp, s, size, t)),
        (nodes.clone(), reference.clone(), text.clone()).prop_map(|(n, p, name)| Msg::Move(n, p, name)),
        (reference.clone(), share.clone()).prop_map(|(r, s)| Msg::Stat(r, s)),
        (reference.clone(), text.clone(), small.clone(), any::<bool>())
            .prop_map(|(r, t, n, rec)| Msg::List(r, t, n, rec)),
        (text.clone(), small.clone(), share.clone()).prop_map(|(c, n, s)| Msg::ListChanges(c, n, s)),
        (nodes.clone(), number.clone(), number.clone(), text.clone())
            .prop_map(|(n, o, l, v)| Msg::Download(n, o, l, v)),
        (nodes.clone(), stamp.clone()).prop_map(|(n, t)| Msg::SetTimes(n, t)),
        (nodes.clone(), text.clone()).prop_map(|(n, v)| Msg::Restore(n, v)),
        (text.clone(), -3i32..8, text.clone(), number.clone())
            .prop_map(|(p, st, code, size)| Msg::FileStates(p, st, code, size)),
        (text.clone(), small.clone()).prop_map(|(t, n)| Msg::ListFileStates(t, n)),
        (text.clone(), text.clone(), text.clone(), text.clone()).prop_map(|(l, p, c, m)| Msg::Events(l, p, c, m)),
        (text.clone(), nodes.clone(), -2i32..5, any::<u32>(), text.clone())
            .prop_map(|(p, n, t, bits, id)| Msg::Permissions(p, n, t, bits, id)),
    ];

    let lease = Some(fx.proper.clone());
    let job_id = fx.job_a.clone();
    // The edges first, every time: the largest numbers and times, NUL, dot names.
    let huge = Some(prost_types::Timestamp { seconds: i64::MAX, nanos: 999_999_999 });
    let tiny = Some(prost_types::Timestamp { seconds: i64::MIN, nanos: -999_999_999 });
    let size = CONTENT.len() as u64;
    let edges = vec![
        Msg::Download(fx.keep.clone(), 1, u64::MAX, String::new()),
        Msg::Download(fx.keep.clone(), 0, u64::MAX, String::new()),
        Msg::Download(fx.keep.clone(), size, 1, String::new()),
        Msg::Download(fx.keep.clone(), size, 0, String::new()),
        Msg::Download(fx.keep.clone(), u64::MAX, u64::MAX, String::new()),
        Msg::Download(fx.keep.clone(), 0, 0, "\0".into()),
        Msg::SetTimes(fx.keep.clone(), huge),
        Msg::SetTimes(fx.keep.clone(), tiny),
        Msg::CreateFolder(by_path("/From FS"), "edge-huge".into(), false, fx.share_a.clone(), huge),
        Msg::CreateFolder(by_path("/From FS"), "edge-tiny".into(), false, fx.share_a.clone(), tiny),
        Msg::Upload(by_path("/From FS"), "edge.txt".into(), false, fx.share_a.clone(), 0, huge),
        Msg::CreateFolder(by_path("/From FS/../.."), "x".into(), true, fx.share_a.clone(), None),
        Msg::CreateFolder(by_path("/From FS"), "..".into(), false, fx.share_a.clone(), None),
        Msg::CreateFolder(by_path("/From FS"), "a/../../b".into(), false, fx.share_a.clone(), None),
        Msg::CreateFolder(by_path("\\0"), "x".into(), true, fx.share_a.clone(), None),
        Msg::Upload(by_id(&fx.share_b), "x.txt".into(), false, fx.share_a.clone(), 0, None),
        Msg::Move(fx.keep.clone(), by_id(&fx.share_b), String::new()),
        Msg::Move(fx.keep.clone(), None, "../escaped.txt".into()),
        Msg::Stat(by_id("\0"), fx.share_a.clone()),
        Msg::Restore("\0".into(), "\0".into()),
        Msg::ListChanges("-1".into(), 0, fx.share_a.clone()),
        Msg::ListChanges("99999999999999999999".into(), 0, fx.share_a.clone()),
        Msg::FileStates("../../x".into(), 1, String::new(), u64::MAX),
        Msg::FileStates("a\0b".into(), 1, String::new(), 1),
        Msg::ListFileStates("\0".into(), 0),
        Msg::Events("error".into(), "\0".into(), "\0".into(), "\0".into()),
        Msg::Permissions("p".into(), fx.keep.clone(), 4, u32::MAX, "\0".into()),
        Msg::Permissions("p".into(), fx.keep.clone(), 1, 1, "usr_unknown".into()),
    ];
    for m in edges {
        let c = Clients { cp: c.cp.clone(), fs: c.fs.clone() };
        let out = send(c, lease.clone(), job_id.clone(), fx.share_a.clone(), m.clone()).await;
        if let Err(e) = judge(&m, &out) {
            panic!("{e}");
        }
    }
    let handle = tokio::runtime::Handle::current();
    let mut runner = TestRunner::new_with_rng(
        // 256 cases in CI; `HOSTILE_CASES=<n>` for a long campaign.
        Config {
            cases: std::env::var("HOSTILE_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256),
            failure_persistence: None,
            ..Config::default()
        },
        TestRng::deterministic_rng(RngAlgorithm::ChaCha),
    );
    let counts = std::sync::Mutex::new((0usize, 0usize));
    let result = tokio::task::block_in_place(|| {
        runner
            .run(&msg, |m| {
                let c = Clients { cp: c.cp.clone(), fs: c.fs.clone() };
                let out = handle.block_on(send(c, lease.clone(), job_id.clone(), fx.share_a.clone(), m.clone()));
                let mut n = counts.lock().unwrap();
                if out.is_ok() {
                    n.0 += 1;
                } else {
                    n.1 += 1;
                }
                judge(&m, &out).map_err(TestCaseError::fail)?;
                Ok(())
            })
            .map_err(|e| e.to_string())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let (ok, refused) = *counts.lock().unwrap();
    eprintln!("gRPC hostile messages: {ok} accepted, {refused} refused");

    // Whatever was accepted stayed inside the target share.
    let (_, after_b) = fx.api.get(&format!("/api/v1/shares/{}/children", fx.share_b)).await;
    assert_eq!(before_b, after_b, "B's share is untouched");
    let now: (i64,) = sqlx::query_as("SELECT COUNT(*) FROM nodes WHERE share_id <> $1")
        .bind(&fx.share_a)
        .fetch_one(&srv.state.db.pool)
        .await
        .unwrap();
    assert_eq!(now, other_shares, "nothing was created outside the target share");
    let bad: (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM nodes WHERE share_id = $1 AND (name = '' OR name = '.' OR name = '..' OR name LIKE '%/%')",
    )
    .bind(&fx.share_a)
    .fetch_one(&srv.state.db.pool)
    .await
    .unwrap();
    assert_eq!(bad.0, 0, "no empty, dot or slashed names");
    // The server still serves.
    c.cp.ping(v1::PingRequest::default()).await.unwrap();
    fx.srv.stop().await;
}

/// Issue 6: while a connector replicates permissions, the folders and files it creates start
/// with a closed ACL (no entries, no inheritance) until its PERMISSIONS phase opens them; a
/// connector that does not replicate creates ordinary, inheriting nodes.
async fn what_a_replicating_connector_creates_starts_closed(backend: Backend) {
    let srv = TestServer::start(backend).await;
    let api = srv.admin();
    let share = api.share("Closed").await;
    let replicating = connector(&api, &share, "replicating").await;
    let (st, v) = api.patch(&format!("/api/v1/smb-connectors/{replicating}"), json!({"sync_permissions": true})).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let plain = connector(&api, &share, "plain").await;
    let mut c = clients(&srv, Some(format!("Bearer {}", srv.worker_token()))).await;
    for (cnn, dir, closed) in [(&replicating, "r", true), (&plain, "p", false)] {
        let lease = acquire(&mut c.cp, cnn, "w").await;
        let folder =
            c.fs.create_folder(v1::CreateFolderRequest {
                lease: Some(lease.clone()),
                share_id: share.clone(),
                parent: by_path("/From FS"),
                name: dir.into(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("create folder: {e}"))
            .into_inner();
        let folder_id = folder.node.as_ref().map(|n| n.id.clone()).unwrap();
        let data = b"figures".to_vec();
        let msgs = vec![
            v1::UploadRequest {
                part: Some(v1::upload_request::Part::Header(v1::UploadHeader {
                    lease: Some(lease.clone()),
                    share_id: share.clone(),
                    parent: by_id(&folder_id),
                    name: "f.txt".into(),
                    size: data.len() as u64,
                    sha256: sha256_hex(&data),
                    ..Default::default()
                })),
            },
            v1::UploadRequest { part: Some(v1::upload_request::Part::Chunk(data)) },
        ];
        let file = c.fs.upload(futures::stream::iter(msgs)).await.unwrap().into_inner();
        let file_id = file.node.map(|n| n.id).unwrap();
        for (kind, id) in [("folder", &folder_id), ("file", &file_id)] {
            let (st, acl) = api.get(&format!("/api/v1/permissions/acl/{kind}/{id}")).await;
            assert_eq!(st, StatusCode::OK, "{acl}");
            assert_eq!(acl["inherit_from_parent"], !closed, "{cnn} {kind}: {acl}");
            assert_eq!(acl["entries"].as_array().map(Vec::len), Some(0), "{acl}");
        }
    }
}

/// Issue 8: a sender may hash while it streams and announce the SHA-256 in a trailer after the
/// last chunk (header sha256 empty). The server commits only content whose digest is the
/// trailer's: a wrong trailer, a missing one (the sender stopped vouching: its source changed
/// while being read), or anything after the trailer commits nothing.
async fn an_upload_commits_only_what_its_trailer_vouches_for(backend: Backend) {
    use v1::upload_request::Part;
    let srv = TestServer::start(backend).await;
    let api = srv.admin();
    let share = api.share("Trailers").await;
    let cnn = connector(&api, &share, "trailers").await;
    let mut c = clients(&srv, Some(format!("Bearer {}", srv.worker_token()))).await;
    let lease = acquire(&mut c.cp, &cnn, "w").await;
    let header = |size: usize| v1::UploadRequest {
        part: Some(Part::Header(v1::UploadHeader {
            lease: Some(lease.clone()),
            share_id: share.clone(),
            parent: by_path("/From FS"),
            name: "t.bin".into(),
            size: size as u64,
            sha256: String::new(),
            ..Default::default()
        })),
    };
    let chunk = |b: &[u8]| v1::UploadRequest { part: Some(Part::Chunk(b.to_vec())) };
    let trailer =
        |d: &[u8]| v1::UploadRequest { part: Some(Part::Trailer(v1::UploadTrailer { sha256: sha256_hex(d) })) };

    let first = vec![header(6), chunk(b"abc"), chunk(b"def"), trailer(b"abcdef")];
    let ok = c.fs.upload(futures::stream::iter(first)).await.unwrap_or_else(|e| panic!("{e}")).into_inner();
    let file_id = ok.node.map(|n| n.id).unwrap();
    let versions = |api: &e2e_tests::Api| {
        let path = format!("/api/v1/files/{file_id}/versions");
        let api = api.clone();
        async move {
            let (st, v) = api.get(&path).await;
            assert_eq!(st, StatusCode::OK, "{v}");
            v["versions"].as_array().unwrap().len()
        }
    };
    assert_eq!(versions(&api).await, 1);

    let refused: [(&str, Vec<v1::UploadRequest>); 4] = [
        ("a trailer naming other content", vec![header(6), chunk(b"xyzxyz"), trailer(b"abcdef")]),
        ("no trailer", vec![header(6), chunk(b"xyzxyz")]),
        ("a chunk after the trailer", vec![header(6), chunk(b"xyz"), trailer(b"xyzxyz"), chunk(b"xyz")]),
        ("a malformed trailer", {
            let bad = v1::UploadRequest { part: Some(Part::Trailer(v1::UploadTrailer { sha256: "zz".into() })) };
            vec![header(6), chunk(b"xyzxyz"), bad]
        }),
    ];
    for (what, msgs) in refused {
        let r = c.fs.upload(futures::stream::iter(msgs)).await;
        let e = r.err().unwrap_or_else(|| panic!("{what}: accepted"));
        assert_eq!(e.code(), Code::InvalidArgument, "{what}: the sender's error: {e:?}");
        assert_eq!(versions(&api).await, 1, "{what}: nothing committed");
        let (st, body) = api.download(&file_id).await;
        assert_eq!((st, body.as_slice()), (StatusCode::OK, &b"abcdef"[..]), "{what}");
    }
    srv.stop().await;
}

/// Issue 8: an upload's reply (and its change-log entry) is the node as ScaiDrive then stores
/// it, for a new file in folders the upload creates and for a new version of it. The server
/// builds both from what it wrote instead of reading the node back inside the write, so this
/// holds them against what a later read returns.
async fn an_uploads_reply_is_the_node_as_stored(backend: Backend) {
    use v1::upload_request::Part;
    let srv = TestServer::start(backend).await;
    let api = srv.admin();
    let share = api.share("Replies").await;
    let cnn = connector(&api, &share, "replies").await;
    let mut c = clients(&srv, Some(format!("Bearer {}", srv.worker_token()))).await;
    let lease = acquire(&mut c.cp, &cnn, "w").await;
    let upload = |data: &'static [u8], base: &str, secs: i64| {
        vec![
            v1::UploadRequest {
                part: Some(Part::Header(v1::UploadHeader {
                    lease: Some(lease.clone()),
                    share_id: share.clone(),
                    parent: by_path("/From FS/deep/er"),
                    name: "x.txt".into(),
                    size: data.len() as u64,
                    sha256: sha256_hex(data),
                    modified_at: Some(prost_types::Timestamp { seconds: secs, nanos: 0 }),
                    base_version_id: base.into(),
                    create_parents: true,
                    ..Default::default()
                })),
            },
            v1::UploadRequest { part: Some(Part::Chunk(data.to_vec())) },
        ]
    };
    let mut cursor = String::new();
    let mut base = String::new();
    let mut file_id = String::new();
    for (round, (data, secs)) in
        [(&b"first"[..], 1_700_000_000), (&b"second!"[..], 1_700_000_100)].into_iter().enumerate()
    {
        let reply = c.fs.upload(futures::stream::iter(upload(data, &base, secs))).await;
        let reply = reply.unwrap_or_else(|e| panic!("round {round}: {e}")).into_inner();
        assert!(!reply.unchanged);
        let node = reply.node.expect("a node");
        let stored =
            c.fs.stat(v1::StatRequest { lease: Some(lease.clone()), share_id: share.clone(), node: by_id(&node.id) })
                .await
                .unwrap_or_else(|e| panic!("stat: {e}"))
                .into_inner();
        assert_eq!(node, stored, "round {round}: the reply is the stored node");
        assert_eq!(node.path, "/From FS/deep/er/x.txt");
        assert_eq!((node.size, node.sha256.as_str()), (data.len() as u64, sha256_hex(data).as_str()));
        assert_eq!(node.modified_at.as_ref().map(|t| t.seconds), Some(secs));
        assert_ne!(node.current_version_id, base, "round {round}: a new version");
        if round == 1 {
            assert_eq!(node.id, file_id, "the same file");
        }
        let changes =
            c.fs.list_changes(v1::ListChangesRequest {
                lease: Some(lease.clone()),
                share_id: share.clone(),
                cursor: cursor.clone(),
                limit: 0,
            })
            .await
            .unwrap_or_else(|e| panic!("changes: {e}"))
            .into_inner();
        let last = changes.changes.last().expect("the upload's change");
        let kind = if round == 0 { v1::ChangeType::Created } else { v1::ChangeType::Updated };
        assert_eq!(last.r#type, kind as i32, "round {round}");
        let logged = last.node.as_ref().expect("the change's node");
        assert_eq!(
            (&logged.id, &logged.path, logged.size, &logged.sha256, &logged.current_version_id, &logged.parent_id),
            (&node.id, &node.path, node.size, &node.sha256, &node.current_version_id, &node.parent_id),
            "round {round}: the change log names the node as written"
        );
        cursor = changes.cursor;
        base = node.current_version_id.clone();
        file_id = node.id.clone();
    }
    let (st, v) = api.get(&format!("/api/v1/files/{file_id}/versions")).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let numbers: Vec<i64> = v["versions"].as_array().unwrap().iter().map(|v| v["number"].as_i64().unwrap()).collect();
    assert_eq!(numbers, [2, 1], "{v}");
    let (st, body) = api.download(&file_id).await;
    assert_eq!((st, body.as_slice()), (StatusCode::OK, &b"second!"[..]));
    srv.stop().await;
}

/// Issue 8: `ListFileStates` names the states with a version; asked with the version it gave,
/// it answers `unchanged` (no states) until a state is written or removed, and a new lease
/// holder (another worker) sees the same version for the same states.
async fn a_states_version_names_the_states_until_one_is_written(backend: Backend) {
    let srv = TestServer::start(backend).await;
    let api = srv.admin();
    let share = api.share("Versions").await;
    let cnn = connector(&api, &share, "versions").await;
    let (st, j) = api.post(&format!("/api/v1/smb-connectors/{cnn}/sync"), json!({})).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{j}");
    let job_id = j["id"].as_str().unwrap().to_string();
    let mut c = clients(&srv, Some(format!("Bearer {}", srv.worker_token()))).await;
    let lease = acquire(&mut c.cp, &cnn, "w1").await;
    let list = |c: &mut Clients, lease: &v1::LeaseToken, known: &str, page_token: &str| {
        let req = v1::ListFileStatesRequest {
            job_id: job_id.clone(),
            lease: Some(lease.clone()),
            page_token: page_token.into(),
            page_size: 1,
            known_version: known.into(),
        };
        let mut cp = c.cp.clone();
        async move { cp.list_file_states(req).await.unwrap().into_inner() }
    };
    let state = |path: &str, status: v1::FileSyncStatus| v1::FileState {
        path: path.into(),
        kind: v1::NodeKind::File as i32,
        status: status as i32,
        ..Default::default()
    };
    let report = |c: &mut Clients, lease: &v1::LeaseToken, states: Vec<v1::FileState>| {
        let req = v1::ReportFileStatesRequest { job_id: job_id.clone(), lease: Some(lease.clone()), states };
        let mut cp = c.cp.clone();
        async move { cp.report_file_states(req).await.unwrap().into_inner() }
    };

    // No states yet: no version, so nothing can be reused.
    let r = list(&mut c, &lease, "", "").await;
    assert!(r.states_version.is_empty() && !r.unchanged && r.states.is_empty(), "{r:?}");
    report(
        &mut c,
        &lease,
        vec![state("a.txt", v1::FileSyncStatus::Synced), state("b.txt", v1::FileSyncStatus::Synced)],
    )
    .await;
    let first = list(&mut c, &lease, "", "").await;
    let v1_ = first.states_version.clone();
    assert!(!v1_.is_empty() && !first.unchanged, "{first:?}");
    assert_eq!(first.states.len(), 1, "pages as asked");
    assert!(!first.next_page_token.is_empty());
    // The version is named on the first page only; later pages list as before.
    let second = list(&mut c, &lease, &v1_, &first.next_page_token).await;
    assert!(!second.unchanged && second.states_version.is_empty(), "{second:?}");
    assert_eq!(second.states.iter().map(|s| s.path.as_str()).collect::<Vec<_>>(), ["b.txt"]);

    // Asked with the version it gave: unchanged, no states.
    let same = list(&mut c, &lease, &v1_, "").await;
    assert!(same.unchanged && same.states.is_empty() && same.states_version == v1_, "{same:?}");
    // Another version (a copy of other states): listed.
    let other = list(&mut c, &lease, "01JDNOTTHEVERSION", "").await;
    assert!(!other.unchanged && other.states.len() == 1 && other.states_version == v1_, "{other:?}");

    // A write gives a new version, even one that leaves the listed fields as they were.
    report(&mut c, &lease, vec![state("a.txt", v1::FileSyncStatus::Synced)]).await;
    let after_write = list(&mut c, &lease, &v1_, "").await;
    assert!(!after_write.unchanged && !after_write.states.is_empty(), "{after_write:?}");
    let v2 = after_write.states_version.clone();
    assert_ne!(v2, v1_);
    // So does a removal.
    report(&mut c, &lease, vec![state("b.txt", v1::FileSyncStatus::Removed)]).await;
    let after_removal = list(&mut c, &lease, &v2, "").await;
    assert!(!after_removal.unchanged, "{after_removal:?}");
    let v3 = after_removal.states_version.clone();
    assert_ne!(v3, v2);
    // An empty report writes nothing: the version stays.
    report(&mut c, &lease, vec![]).await;
    assert!(list(&mut c, &lease, &v3, "").await.unchanged);

    // The next lease holder (another worker) gets the same answer for the same states.
    let r = c
        .cp
        .release_lease(v1::ReleaseLeaseRequest { lease_id: lease.lease_id.clone(), fencing_token: lease.fencing_token })
        .await
        .unwrap()
        .into_inner();
    assert!(r.released);
    let next = acquire(&mut c.cp, &cnn, "w2").await;
    assert!(list(&mut c, &next, &v3, "").await.unchanged);
    let all = list(&mut c, &next, "", "").await;
    assert_eq!(all.states.iter().map(|s| s.path.as_str()).collect::<Vec<_>>(), ["a.txt"]);
    srv.stop().await;
}
