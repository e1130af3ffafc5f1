//! The control plane's side of the worker fleet, driven like a worker would: leases with
//! fencing tokens, the FileService, the job lifecycle over gRPC and REST, the scheduler.
//! Real api-server, real database (SQLite and PostgreSQL), the in-process queue.

use e2e_tests::{on_both_backends, Api, Backend, TestServer};
use proto::v1;
use proto::v1::control_plane_client::ControlPlaneClient;
use proto::v1::file_service_client::FileServiceClient;
use reqwest::StatusCode;
use serde_json::json;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

#[derive(Clone)]
struct Auth(String);

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut r: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        r.metadata_mut().insert("authorization", format!("Bearer {}", self.0).parse().unwrap());
        Ok(r)
    }
}

type Cp = ControlPlaneClient<InterceptedService<Channel, Auth>>;
type Fs = FileServiceClient<InterceptedService<Channel, Auth>>;

async fn clients(srv: &TestServer, token: &str) -> (Cp, Fs) {
    let ch = Channel::from_shared(srv.grpc_url.clone()).unwrap().connect().await.unwrap();
    (
        ControlPlaneClient::with_interceptor(ch.clone(), Auth(token.into())),
        FileServiceClient::with_interceptor(ch, Auth(token.into())),
    )
}

fn code_of(s: &tonic::Status) -> String {
    proto::error_detail(s).map(|d| d.code).unwrap_or_default()
}

/// A share and a connector on it (the SMB side is never contacted here).
async fn connector(api: &Api, interval: i64) -> (String, String) {
    let share = api.share(&format!("S{}", ulid_suffix())).await;
    let (st, c) = api
        .post(
            "/api/v1/smb-connectors",
            json!({"name": "fs", "server_host": "127.0.0.1", "server_port": 1445, "share_name": "Share",
                   "username": "svc", "password": "pw-secret-1", "target_share_id": share,
                   "target_path": "/From Fileserver", "sync_interval_minutes": interval}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{c}");
    (share, c["id"].as_str().unwrap().to_string())
}

fn ulid_suffix() -> String {
    let u = format!("{}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos());
    u[u.len() - 6..].to_string()
}

async fn lease(cp: &mut Cp, connector: &str, worker: &str) -> Result<v1::LeaseToken, tonic::Status> {
    let r = cp
        .acquire_lease(v1::AcquireLeaseRequest {
            connector_id: connector.into(),
            worker_id: worker.into(),
            ttl: Some(prost_types::Duration { seconds: 30, nanos: 0 }),
        })
        .await?
        .into_inner();
    Ok(v1::LeaseToken { lease_id: r.lease_id, fencing_token: r.fencing_token })
}

fn upload_msgs(
    lease: &v1::LeaseToken,
    share: &str,
    parent: &str,
    name: &str,
    data: &[u8],
    base: &str,
) -> Vec<v1::UploadRequest> {
    use sha2::Digest;
    let mut v = vec![v1::UploadRequest {
        part: Some(v1::upload_request::Part::Header(v1::UploadHeader {
            lease: Some(lease.clone()),
            share_id: share.into(),
            parent: Some(v1::NodeRef { r#ref: Some(v1::node_ref::Ref::Path(parent.into())) }),
            name: name.into(),
            size: data.len() as u64,
            sha256: hex::encode(sha2::Sha256::digest(data)),
            base_version_id: base.into(),
            create_parents: true,
            modified_at: Some(prost_types::Timestamp { seconds: 1_700_000_000, nanos: 0 }),
            ..Default::default()
        })),
    }];
    for c in data.chunks(1 << 20) {
        v.push(v1::UploadRequest { part: Some(v1::upload_request::Part::Chunk(c.to_vec())) });
    }
    v
}

on_both_backends!(
    leases_fence_every_write,
    file_service_is_scoped_to_the_target_share,
    job_lifecycle_over_grpc_and_rest,
    scheduled_runs_happen_once_and_skip_when_busy,
);

async fn leases_fence_every_write(backend: Backend) {
    let srv = TestServer::start(backend).await;
    let api = srv.admin();
    let (share, cnn) = connector(&api, 0).await;
    let (mut cp, mut fs) = clients(&srv, &srv.worker_token()).await;

    // Wrong worker token: refused before anything else.
    let (mut bad, _) = clients(&srv, "swt_wrong").await;
    let e = bad.ping(v1::PingRequest::default()).await.unwrap_err();
    assert_eq!((e.code(), code_of(&e).as_str()), (tonic::Code::Unauthenticated, "WORKER_UNAUTHENTICATED"));

    let a = lease(&mut cp, &cnn, "w1").await.unwrap();
    let e = lease(&mut cp, &cnn, "w2").await.unwrap_err();
    assert_eq!((e.code(), code_of(&e).as_str()), (tonic::Code::FailedPrecondition, "LEASE_HELD"));

    let ok = fs
        .upload(futures::stream::iter(upload_msgs(&a, &share, "/From Fileserver", "a.txt", b"one", "")))
        .await
        .unwrap()
        .into_inner();
    let node = ok.node.unwrap();
    assert_eq!(node.path, "/From Fileserver/a.txt");

    // w1 pauses past its lease; w2 takes over with a greater token.
    sqlx::query("UPDATE leases SET expires_at = 0 WHERE id = $1")
        .bind(&a.lease_id)
        .execute(&srv.state.db.pool)
        .await
        .unwrap();
    let e = cp
        .renew_lease(v1::RenewLeaseRequest { lease_id: a.lease_id.clone(), fencing_token: a.fencing_token, ttl: None })
        .await
        .unwrap_err();
    assert_eq!(code_of(&e), "LEASE_EXPIRED");
    let b = lease(&mut cp, &cnn, "w2").await.unwrap();
    assert!(b.fencing_token > a.fencing_token);

    // Everything w1 still tries is refused and commits nothing.
    let e = fs
        .upload(futures::stream::iter(upload_msgs(&a, &share, "/From Fileserver", "late.txt", b"late", "")))
        .await
        .unwrap_err();
    assert_eq!(code_of(&e), "LEASE_STALE");
    let e = fs
        .delete(v1::DeleteRequest {
            lease: Some(a.clone()),
            share_id: share.clone(),
            node_id: node.id.clone(),
            precondition: None,
        })
        .await
        .unwrap_err();
    assert_eq!(code_of(&e), "LEASE_STALE");
    let forged = v1::LeaseToken { lease_id: b.lease_id.clone(), fencing_token: b.fencing_token + 1 };
    let e = fs
        .delete(v1::DeleteRequest {
            lease: Some(forged),
            share_id: share.clone(),
            node_id: node.id.clone(),
            precondition: None,
        })
        .await
        .unwrap_err();
    assert_eq!(code_of(&e), "LEASE_STALE");
    let (st, _) = api.get(&format!("/api/v1/shares/{share}/items?path=/From Fileserver/late.txt")).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (_, item) = api.get(&format!("/api/v1/files/{}", node.id)).await;
    assert_eq!(item["deleted"], false);

    // The holder's release frees the connector for the next token.
    let r = cp
        .release_lease(v1::ReleaseLeaseRequest { lease_id: b.lease_id.clone(), fencing_token: b.fencing_token })
        .await
        .unwrap()
        .into_inner();
    assert!(r.released);
    let c = lease(&mut cp, &cnn, "w3").await.unwrap();
    assert_eq!(c.fencing_token, b.fencing_token + 1);
    srv.stop().await;
}

async fn file_service_is_scoped_to_the_target_share(backend: Backend) {
    let srv = TestServer::start(backend).await;
    let api = srv.admin();
    let (share, cnn) = connector(&api, 0).await;
    let other = api.share("Elsewhere").await;
    let (_, secret) = api.upload(&other, "/secret.txt", "no").await;
    let (mut cp, mut fs) = clients(&srv, &srv.worker_token()).await;
    let l = lease(&mut cp, &cnn, "w1").await.unwrap();

    // Outside the target share: refused.
    let e = fs
        .stat(v1::StatRequest {
            lease: Some(l.clone()),
            share_id: other.clone(),
            node: Some(v1::NodeRef { r#ref: Some(v1::node_ref::Ref::Path("/secret.txt".into())) }),
        })
        .await
        .unwrap_err();
    assert_eq!(code_of(&e), "OUTSIDE_SCOPE");
    let e = fs
        .delete(v1::DeleteRequest {
            lease: Some(l.clone()),
            share_id: share.clone(),
            node_id: secret["file"]["id"].as_str().unwrap().into(),
            precondition: None,
        })
        .await
        .unwrap_err();
    assert_eq!(code_of(&e), "OUTSIDE_SCOPE");

    // Upload: checksum verified before anything commits; idempotent on retry.
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 241) as u8).collect();
    let mut msgs = upload_msgs(&l, &share, "/From Fileserver/deep/er", "big.bin", &data, "");
    if let Some(v1::UploadRequest { part: Some(v1::upload_request::Part::Chunk(c)) }) = msgs.last_mut() {
        c[0] ^= 1;
    }
    let e = fs.upload(futures::stream::iter(msgs)).await.unwrap_err();
    assert_eq!(code_of(&e), "CHECKSUM_MISMATCH");
    let up = fs
        .upload(futures::stream::iter(upload_msgs(&l, &share, "/From Fileserver/deep/er", "big.bin", &data, "")))
        .await
        .unwrap()
        .into_inner();
    assert!(!up.unchanged);
    let again = fs
        .upload(futures::stream::iter(upload_msgs(&l, &share, "/From Fileserver/deep/er", "big.bin", &data, "")))
        .await
        .unwrap()
        .into_inner();
    assert!(again.unchanged, "a retried upload stores nothing new");
    let node = up.node.unwrap();
    assert_eq!(node.modified_at.unwrap().seconds, 1_700_000_000);

    // Download a range across the 1 MiB message boundary.
    let mut s = fs
        .download(v1::DownloadRequest {
            lease: Some(l.clone()),
            share_id: share.clone(),
            node: Some(v1::NodeRef { r#ref: Some(v1::node_ref::Ref::NodeId(node.id.clone())) }),
            version_id: String::new(),
            offset: 1_000_000,
            length: 1_500_000,
        })
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    let mut header = None;
    while let Some(m) = s.message().await.unwrap() {
        match m.part.unwrap() {
            v1::download_response::Part::Header(h) => header = Some(h),
            v1::download_response::Part::Chunk(c) => got.extend_from_slice(&c),
        }
    }
    assert_eq!(header.unwrap().size, data.len() as u64);
    assert_eq!(got, &data[1_000_000..2_500_000]);

    // List recursively, then move, delete, restore, set times.
    let list = fs
        .list(v1::ListRequest {
            lease: Some(l.clone()),
            share_id: share.clone(),
            folder: Some(v1::NodeRef { r#ref: Some(v1::node_ref::Ref::Path("/From Fileserver".into())) }),
            recursive: true,
            page_size: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let paths: Vec<&str> = list.nodes.iter().map(|n| n.path.as_str()).collect();
    assert_eq!(paths, vec!["/From Fileserver/deep", "/From Fileserver/deep/er"]);
    let page2 = fs
        .list(v1::ListRequest {
            lease: Some(l.clone()),
            share_id: share.clone(),
            folder: Some(v1::NodeRef { r#ref: Some(v1::node_ref::Ref::Path("/From Fileserver".into())) }),
            recursive: true,
            page_size: 2,
            page_token: list.next_page_token.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page2.nodes[0].path, "/From Fileserver/deep/er/big.bin");

    let moved = fs
        .r#move(v1::MoveRequest {
            lease: Some(l.clone()),
            share_id: share.clone(),
            node_id: node.id.clone(),
            new_parent: Some(v1::NodeRef { r#ref: Some(v1::node_ref::Ref::Path("/From Fileserver/deep".into())) }),
            new_name: "renamed.bin".into(),
            precondition: Some(v1::Precondition {
                base_version_id: node.current_version_id.clone(),
                etag: String::new(),
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(moved.path, "/From Fileserver/deep/renamed.bin");
    let stale = fs
        .delete(v1::DeleteRequest {
            lease: Some(l.clone()),
            share_id: share.clone(),
            node_id: node.id.clone(),
            precondition: Some(v1::Precondition { base_version_id: String::new(), etag: node.etag.clone() }),
        })
        .await
        .unwrap_err();
    assert_eq!((stale.code(), code_of(&stale).as_str()), (tonic::Code::Aborted, "VERSION_CONFLICT"));
    let folder = fs
        .stat(v1::StatRequest {
            lease: Some(l.clone()),
            share_id: share.clone(),
            node: Some(v1::NodeRef { r#ref: Some(v1::node_ref::Ref::Path("/From Fileserver/deep".into())) }),
        })
        .await
        .unwrap()
        .into_inner();
    // Deleting twice is harmless: both calls answer with the node in trash.
    for attempt in 0..2 {
        let del = fs
            .delete(v1::DeleteRequest {
                lease: Some(l.clone()),
                share_id: share.clone(),
                node_id: folder.id.clone(),
                precondition: None,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(del.deleted, "attempt {attempt}");
    }
    // Restoring the file brings its trashed folder back with it.
    let back = fs
        .restore(v1::RestoreRequest {
            lease: Some(l.clone()),
            share_id: share.clone(),
            node_id: node.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!back.deleted);
    assert_eq!(back.path, "/From Fileserver/deep/renamed.bin");
    let t = fs
        .set_times(v1::SetTimesRequest {
            lease: Some(l.clone()),
            share_id: share.clone(),
            node_id: node.id.clone(),
            modified_at: Some(prost_types::Timestamp { seconds: 1_600_000_000, nanos: 0 }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(t.modified_at.unwrap().seconds, 1_600_000_000);
    assert_eq!(t.current_version_id, node.current_version_id, "set times makes no version");

    // The change log shows the connector as the actor of its writes.
    let ch = fs
        .list_changes(v1::ListChangesRequest {
            lease: Some(l.clone()),
            share_id: share.clone(),
            cursor: String::new(),
            limit: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(ch.changes.iter().any(|c| c.actor_id == cnn && c.node.as_ref().unwrap().name == "big.bin"));
    assert!(ch
        .changes
        .iter()
        .any(|c| c.r#type == v1::ChangeType::Moved as i32 && c.previous_path == "/From Fileserver/deep/er/big.bin"));
    srv.stop().await;
}

async fn job_lifecycle_over_grpc_and_rest(backend: Backend) {
    let srv = TestServer::start(backend).await;
    let api = srv.admin();
    let (_share, cnn) = connector(&api, 0).await;
    // Simulate a worker on the in-process queue.
    let mut consumer = srv.state.queue.consume("scaidrive.sync-jobs.default", 1).await.unwrap();

    let (st, job) = api.post(&format!("/api/v1/smb-connectors/{cnn}/sync"), json!({})).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{job}");
    let job_id = job["id"].as_str().unwrap().to_string();
    assert!(job_id.starts_with("job_"));
    assert_eq!(job["status"], "queued");
    let (st, e) = api.post(&format!("/api/v1/smb-connectors/{cnn}/sync"), json!({})).await;
    assert_eq!(st, StatusCode::CONFLICT);
    assert_eq!(e["error"]["code"], "SYNC_ALREADY_RUNNING");
    assert!(e["error"]["message"].as_str().unwrap().contains(&job_id));

    let d = tokio::time::timeout(std::time::Duration::from_secs(5), consumer.next()).await.unwrap().unwrap().unwrap();
    let msg: serde_json::Value = serde_json::from_slice(&d.body).unwrap();
    assert_eq!(msg, json!({"job_id": job_id, "connector_id": cnn}));
    assert!(!String::from_utf8_lossy(&d.body).contains("pw-secret-1"));

    let (mut cp, _) = clients(&srv, &srv.worker_token()).await;
    let l = lease(&mut cp, &cnn, "worker-a").await.unwrap();
    let spec = cp
        .claim_job(v1::ClaimJobRequest { job_id: job_id.clone(), lease: Some(l.clone()) })
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    let creds = spec.connector.as_ref().unwrap().credentials.as_ref().unwrap();
    assert_eq!(creds.password, "pw-secret-1", "the lease holder gets the decrypted password");
    assert!(!format!("{spec:?}").contains("pw-secret-1"), "and Debug never shows it");
    assert_eq!(spec.attempt, 1);
    assert_eq!(spec.connector.as_ref().unwrap().target_path, "/From Fileserver");

    // A claim without the lease: refused, and the job is untouched.
    let e = cp
        .claim_job(v1::ClaimJobRequest {
            job_id: job_id.clone(),
            lease: Some(v1::LeaseToken { lease_id: l.lease_id.clone(), fencing_token: 99 }),
        })
        .await
        .unwrap_err();
    assert_eq!(code_of(&e), "LEASE_STALE");

    let progress = v1::ProgressUpdate {
        job_id: job_id.clone(),
        lease: Some(l.clone()),
        phase: v1::JobPhase::Transferring as i32,
        counts: Some(v1::JobCounts {
            files_scanned: 10,
            files_synced: 3,
            bytes_transferred: 300,
            ..Default::default()
        }),
        current_path: "a/b.txt".into(),
        bytes_per_second: 100,
        ..Default::default()
    };
    let r = cp.report_progress(futures::stream::iter(vec![progress.clone()])).await.unwrap().into_inner();
    assert_eq!((r.accepted, r.cancel_requested), (1, false));
    let (_, live) = api.get(&format!("/api/v1/smb-connectors/{cnn}/jobs/{job_id}")).await;
    assert_eq!(live["status"], "running");
    assert_eq!(live["worker"], "worker-a");
    assert_eq!(live["progress"]["phase"], "transferring");
    assert_eq!(live["progress"]["current_path"], "a/b.txt");
    let (_, c) = api.get(&format!("/api/v1/smb-connectors/{cnn}")).await;
    assert_eq!(c["status"], "syncing");

    let states = vec![
        v1::FileState {
            path: "a/b.txt".into(),
            kind: v1::NodeKind::File as i32,
            status: v1::FileSyncStatus::Synced as i32,
            smb: Some(v1::SmbItemState { size: 3, file_id: 77, sha256: "ab".repeat(32), ..Default::default() }),
            scaidrive: Some(v1::ScaiDriveItemState {
                node_id: "fil_x".into(),
                version_id: "ver_x".into(),
                size: 3,
                ..Default::default()
            }),
            synced_at: Some(prost_types::Timestamp { seconds: 1_700_000_000, nanos: 0 }),
            ..Default::default()
        },
        v1::FileState {
            path: "locked.docx".into(),
            kind: v1::NodeKind::File as i32,
            status: v1::FileSyncStatus::Error as i32,
            error: Some(v1::ErrorDetail {
                code: "SMB_SHARING_VIOLATION".into(),
                message: "the file is open elsewhere".into(),
                ..Default::default()
            }),
            ..Default::default()
        },
    ];
    cp.report_file_states(v1::ReportFileStatesRequest { job_id: job_id.clone(), lease: Some(l.clone()), states })
        .await
        .unwrap();
    let page = cp
        .list_file_states(v1::ListFileStatesRequest {
            job_id: job_id.clone(),
            lease: Some(l.clone()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.states.len(), 2);
    assert_eq!(page.states[0].smb.as_ref().unwrap().file_id, 77);

    // Cancel from REST: the next progress report says so.
    let (st, _) = api.post(&format!("/api/v1/smb-connectors/{cnn}/jobs/{job_id}/cancel"), json!({})).await;
    assert_eq!(st, StatusCode::ACCEPTED);
    let r = cp.report_progress(futures::stream::iter(vec![progress])).await.unwrap().into_inner();
    assert!(r.cancel_requested);
    let done = cp
        .complete_job(v1::CompleteJobRequest {
            job_id: job_id.clone(),
            lease: Some(l.clone()),
            outcome: v1::JobOutcome::Cancelled as i32,
            counts: Some(v1::JobCounts {
                files_scanned: 10,
                files_synced: 3,
                files_failed: 1,
                bytes_transferred: 300,
                ..Default::default()
            }),
            scaidrive_cursor: "17".into(),
            error: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!done.already_recorded);
    let again = cp
        .complete_job(v1::CompleteJobRequest {
            job_id: job_id.clone(),
            lease: Some(l.clone()),
            outcome: v1::JobOutcome::Cancelled as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(again.already_recorded);
    d.ack().await.unwrap();

    let (_, jobs) = api.get(&format!("/api/v1/smb-connectors/{cnn}/jobs")).await;
    let j = &jobs["jobs"][0];
    assert_eq!((j["id"].as_str(), j["status"].as_str()), (Some(job_id.as_str()), Some("cancelled")));
    assert_eq!(
        (j["files_scanned"].as_i64(), j["files_synced"].as_i64(), j["error_count"].as_i64()),
        (Some(10), Some(3), Some(1))
    );
    let (_, detail) = api.get(&format!("/api/v1/smb-connectors/{cnn}/jobs/{job_id}")).await;
    assert_eq!(detail["events"][0]["code"], "SMB_SHARING_VIOLATION");
    assert_eq!(detail["events"][0]["path"], "locked.docx");
    let (_, fs) = api.get(&format!("/api/v1/smb-connectors/{cnn}/file-states?status=error")).await;
    assert_eq!(fs["file_states"].as_array().unwrap().len(), 1);
    assert_eq!(fs["file_states"][0]["last_error"]["code"], "SMB_SHARING_VIOLATION");
    let (_, fs) = api.get(&format!("/api/v1/smb-connectors/{cnn}/file-states?path_prefix=a")).await;
    assert_eq!(fs["file_states"][0]["smb"]["file_id"], "77");
    let (_, c) = api.get(&format!("/api/v1/smb-connectors/{cnn}")).await;
    assert_eq!(
        (c["status"].as_str(), c["total_files_synced"].as_i64(), c["total_bytes_synced"].as_i64()),
        (Some("idle"), Some(3), Some(300))
    );
    assert!(c["last_sync_at"].is_string());

    // The finished job can no longer be claimed; the next claim starts a new job.
    let e = cp.claim_job(v1::ClaimJobRequest { job_id: job_id.clone(), lease: Some(l.clone()) }).await.unwrap_err();
    assert_eq!(code_of(&e), "JOB_FINISHED");
    let (st, _) = api.post(&format!("/api/v1/smb-connectors/{cnn}/sync"), json!({})).await;
    assert_eq!(st, StatusCode::ACCEPTED);
    srv.stop().await;
}

async fn scheduled_runs_happen_once_and_skip_when_busy(backend: Backend) {
    let srv = TestServer::start(backend).await;
    let api = srv.admin();
    let (_share, cnn) = connector(&api, 15).await;
    let (_, c) = api.get(&format!("/api/v1/smb-connectors/{cnn}")).await;
    assert!(c["next_sync_at"].is_string());
    let due = api_server::time::now_ms() - 1000;
    sqlx::query("UPDATE connectors SET next_sync_at = $1 WHERE id = $2")
        .bind(due)
        .bind(&cnn)
        .execute(&srv.state.db.pool)
        .await
        .unwrap();
    // Two replicas' scheduler passes at once: one run.
    let (a, b) =
        tokio::join!(api_server::fleet::schedule_once(&srv.state), api_server::fleet::schedule_once(&srv.state));
    assert_eq!(a.unwrap() + b.unwrap(), 1);
    let (_, jobs) = api.get(&format!("/api/v1/smb-connectors/{cnn}/jobs")).await;
    assert_eq!(jobs["jobs"].as_array().unwrap().len(), 1);
    assert_eq!(
        (jobs["jobs"][0]["trigger"].as_str(), jobs["jobs"][0]["status"].as_str()),
        (Some("scheduled"), Some("queued"))
    );
    let (_, c) = api.get(&format!("/api/v1/smb-connectors/{cnn}")).await;
    let next = api_server::time::parse_rfc3339(c["next_sync_at"].as_str().unwrap()).unwrap();
    assert_eq!(next, due + 15 * 60_000, "next_sync_at moves one interval on");

    // Due again while the first is still queued: recorded as skipped, with the reason.
    sqlx::query("UPDATE connectors SET next_sync_at = $1 WHERE id = $2")
        .bind(due + 1)
        .bind(&cnn)
        .execute(&srv.state.db.pool)
        .await
        .unwrap();
    assert_eq!(api_server::fleet::schedule_once(&srv.state).await.unwrap(), 1);
    let (_, jobs) = api.get(&format!("/api/v1/smb-connectors/{cnn}/jobs")).await;
    let skipped = &jobs["jobs"][0];
    assert_eq!(skipped["status"], "skipped");
    assert!(skipped["reason"].as_str().unwrap().contains("still"), "{skipped}");
    assert_eq!(jobs["jobs"][1]["status"], "queued");
    srv.stop().await;
}

on_both_backends!(deleting_a_connector_cancels_its_job_and_fences_its_worker);

async fn deleting_a_connector_cancels_its_job_and_fences_its_worker(backend: Backend) {
    let srv = TestServer::start(backend).await;
    let api = srv.admin();
    let (share, cnn) = connector(&api, 0).await;
    let (_, job) = api.post(&format!("/api/v1/smb-connectors/{cnn}/sync"), json!({})).await;
    let job_id = job["id"].as_str().unwrap().to_string();
    let (mut cp, mut fs) = clients(&srv, &srv.worker_token()).await;
    let l = lease(&mut cp, &cnn, "w").await.unwrap();
    cp.claim_job(v1::ClaimJobRequest { job_id: job_id.clone(), lease: Some(l.clone()) }).await.unwrap();
    let up = fs
        .upload(futures::stream::iter(upload_msgs(&l, &share, "/From Fileserver", "kept.txt", b"kept", "")))
        .await
        .unwrap()
        .into_inner();

    let (st, _) = api.delete(&format!("/api/v1/smb-connectors/{cnn}")).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let status: (String,) = sqlx::query_as("SELECT status FROM jobs WHERE id = $1")
        .bind(&job_id)
        .fetch_one(&srv.state.db.pool)
        .await
        .unwrap();
    assert_eq!(status.0, "cancelled");
    // The worker can no longer write anything.
    let e = fs
        .upload(futures::stream::iter(upload_msgs(&l, &share, "/From Fileserver", "after.txt", b"x", "")))
        .await
        .unwrap_err();
    assert!(["LEASE_STALE", "CONNECTOR_NOT_FOUND"].contains(&code_of(&e).as_str()), "{e:?}");
    let e = cp
        .complete_job(v1::CompleteJobRequest {
            job_id,
            lease: Some(l),
            outcome: v1::JobOutcome::Completed as i32,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(code_of(&e), "LEASE_STALE");
    // What was synced stays in ScaiDrive.
    assert_eq!(api.download(&up.node.unwrap().id).await.1, b"kept");
    srv.stop().await;
}

on_both_backends!(a_dead_lettered_job_message_fails_its_job_with_the_reason);

async fn a_dead_lettered_job_message_fails_its_job_with_the_reason(backend: Backend) {
    let srv = TestServer::start(backend).await;
    let api = srv.admin();
    let (_share, cnn) = connector(&api, 0).await;
    let mut consumer = srv.state.queue.consume("scaidrive.sync-jobs.default", 1).await.unwrap();
    let (_, job) = api.post(&format!("/api/v1/smb-connectors/{cnn}/sync"), json!({})).await;
    let job_id = job["id"].as_str().unwrap().to_string();
    // A worker that cannot process the message rejects it: it goes to the dead-letter queue.
    let d = tokio::time::timeout(std::time::Duration::from_secs(5), consumer.next()).await.unwrap().unwrap().unwrap();
    d.reject("JOB_LEASE_MISMATCH: the job belongs to another connector").await.unwrap();
    // The control plane records the reason on the job.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (_, j) = api.get(&format!("/api/v1/smb-connectors/{cnn}/jobs/{job_id}")).await;
        if j["status"] == "failed" {
            assert_eq!(j["error"]["code"], "POISON_MESSAGE");
            assert!(j["error"]["message"].as_str().unwrap().contains("JOB_LEASE_MISMATCH"), "{j}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the job was not failed: {j}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    srv.stop().await;
}

/// Two api-server replicas (two processes' worth of state: own pools, own schedulers) on one
/// PostgreSQL database queue each due run exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_queue_each_due_run_once() {
    let srv = TestServer::start(Backend::Postgres).await;
    let api = srv.admin();
    let (_share, cnn) = connector(&api, 1).await;
    let dir2 = tempfile::tempdir().unwrap();
    std::fs::copy(srv.data_dir.join("secret.key"), dir2.path().join("secret.key")).unwrap();
    let cfg2 = api_server::Config::for_dir(dir2.path().to_path_buf(), srv.state.config.database_url.clone());
    let replica2 = api_server::AppState::open(cfg2).await.unwrap();
    // The second replica has its own queue here; count the jobs in the database instead.
    let base = api_server::time::now_ms() - 10_000;
    for round in 0..5 {
        // A distinct due time per round (each is a separate scheduled run).
        let due = base + round * 1000;
        sqlx::query("UPDATE connectors SET next_sync_at = $1 WHERE id = $2")
            .bind(due)
            .bind(&cnn)
            .execute(&srv.state.db.pool)
            .await
            .unwrap();
        let (a, b) =
            tokio::join!(api_server::fleet::schedule_once(&srv.state), api_server::fleet::schedule_once(&replica2));
        assert_eq!(a.unwrap() + b.unwrap(), 1, "round {round}");
    }
    // A due time set again to one already scheduled adds nothing and is no error.
    sqlx::query("UPDATE connectors SET next_sync_at = $1 WHERE id = $2")
        .bind(base)
        .bind(&cnn)
        .execute(&srv.state.db.pool)
        .await
        .unwrap();
    let (a, b) =
        tokio::join!(api_server::fleet::schedule_once(&srv.state), api_server::fleet::schedule_once(&replica2));
    assert_eq!(a.unwrap() + b.unwrap(), 0);
    let (n,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM jobs WHERE connector_id = $1 AND trigger_kind = 'scheduled'")
            .bind(&cnn)
            .fetch_one(&srv.state.db.pool)
            .await
            .unwrap();
    assert_eq!(n, 5, "one job (queued or skipped) per due time");
    srv.stop().await;
}
