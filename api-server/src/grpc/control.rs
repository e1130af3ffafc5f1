//! `ControlPlane`: health, leases and the job lifecycle for the worker fleet.

use proto::v1;
use tonic::{Code, Request, Response, Status, Streaming};

use super::{fence_of, from_api, from_ts, from_ts_ns, invalid, refusal, scope, status, ts, ts_ns};
use crate::store::file_states::{self, FileState};
use crate::store::jobs::{self, ClaimRefusal, Counts};
use crate::store::watch::{self, Scope, ScopeFolder, WatchFence};
use crate::store::{connectors, leases, permissions};
use crate::AppState;

pub struct Control {
    state: AppState,
}

impl Control {
    pub fn new(state: AppState) -> Self {
        Self { state }
    }
}

fn duration_ms(d: Option<&prost_types::Duration>) -> Option<i64> {
    d.map(|d| d.seconds * 1000 + (d.nanos as i64) / 1_000_000)
}

fn counts(c: Option<&v1::JobCounts>) -> Counts {
    let c = c.cloned().unwrap_or_default();
    Counts {
        files_scanned: c.files_scanned as i64,
        files_synced: c.files_synced as i64,
        files_failed: c.files_failed as i64,
        files_skipped: c.files_skipped as i64,
        files_deleted: c.files_deleted as i64,
        conflicts: c.conflicts as i64,
        bytes_transferred: c.bytes_transferred as i64,
    }
}

fn phase_name(p: i32) -> &'static str {
    match v1::JobPhase::try_from(p).unwrap_or(v1::JobPhase::Unspecified) {
        v1::JobPhase::Connecting => "connecting",
        v1::JobPhase::Scanning => "scanning",
        v1::JobPhase::Planning => "planning",
        v1::JobPhase::Transferring => "transferring",
        v1::JobPhase::Finalizing => "finalizing",
        v1::JobPhase::Permissions => "permissions",
        v1::JobPhase::Unspecified => "running",
    }
}

fn filter_msg(f: Option<&connectors::Filter>) -> Option<v1::PathFilter> {
    f.map(|f| v1::PathFilter { extensions: f.extensions.clone(), patterns: f.patterns.clone() })
}

fn state_status(s: &str) -> v1::FileSyncStatus {
    match s {
        "synced" => v1::FileSyncStatus::Synced,
        "conflict_resolved" => v1::FileSyncStatus::ConflictResolved,
        "error" => v1::FileSyncStatus::Error,
        "excluded" => v1::FileSyncStatus::Skipped,
        _ => v1::FileSyncStatus::Unspecified,
    }
}

pub fn state_msg(s: &FileState) -> v1::FileState {
    v1::FileState {
        path: s.path.clone(),
        kind: if s.kind == "folder" { v1::NodeKind::Folder } else { v1::NodeKind::File } as i32,
        status: state_status(&s.status) as i32,
        smb: s.smb_size.map(|size| v1::SmbItemState {
            size: size as u64,
            modified_at: s.smb_modified_at.map(ts_ns),
            changed_at: s.smb_changed_at.map(ts_ns),
            created_at: s.smb_created_at.map(ts_ns),
            file_id: s.smb_file_id.as_deref().and_then(|f| f.parse().ok()).unwrap_or(0),
            sha256: s.smb_sha256.clone().unwrap_or_default(),
        }),
        scaidrive: s.drive_node_id.as_ref().map(|node| v1::ScaiDriveItemState {
            node_id: node.clone(),
            version_id: s.drive_version_id.clone().unwrap_or_default(),
            size: s.drive_size.unwrap_or(0) as u64,
            modified_at: s.drive_modified_at.map(ts),
            sha256: s.drive_sha256.clone().unwrap_or_default(),
        }),
        error: s.error_code.as_ref().map(|c| v1::ErrorDetail {
            code: c.clone(),
            message: s.error_message.clone().unwrap_or_default(),
            ..Default::default()
        }),
        synced_at: s.last_synced_at.map(ts),
    }
}

fn state_from_msg(m: &v1::FileState) -> Result<FileState, Status> {
    let status = match v1::FileSyncStatus::try_from(m.status).unwrap_or(v1::FileSyncStatus::Unspecified) {
        v1::FileSyncStatus::Synced => "synced",
        v1::FileSyncStatus::ConflictResolved => "conflict_resolved",
        v1::FileSyncStatus::Error => "error",
        v1::FileSyncStatus::Skipped => "excluded",
        v1::FileSyncStatus::Removed => "removed",
        v1::FileSyncStatus::Unspecified => return Err(invalid("states.status", "a status is required")),
    };
    if m.path.is_empty() || m.path.starts_with('/') || m.path.split('/').any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err(invalid("states.path", "a relative path without empty, '.' or '..' parts is required"));
    }
    Ok(FileState {
        path: m.path.clone(),
        kind: if m.kind == v1::NodeKind::Folder as i32 { "folder" } else { "file" }.to_string(),
        status: status.to_string(),
        smb_size: m.smb.as_ref().map(|s| s.size as i64),
        smb_modified_at: m.smb.as_ref().and_then(|s| s.modified_at.as_ref()).map(from_ts_ns),
        smb_changed_at: m.smb.as_ref().and_then(|s| s.changed_at.as_ref()).map(from_ts_ns),
        smb_created_at: m.smb.as_ref().and_then(|s| s.created_at.as_ref()).map(from_ts_ns),
        smb_file_id: m.smb.as_ref().filter(|s| s.file_id != 0).map(|s| s.file_id.to_string()),
        smb_sha256: m.smb.as_ref().map(|s| s.sha256.clone()).filter(|s| !s.is_empty()),
        drive_node_id: m.scaidrive.as_ref().map(|d| d.node_id.clone()).filter(|s| !s.is_empty()),
        drive_version_id: m.scaidrive.as_ref().map(|d| d.version_id.clone()).filter(|s| !s.is_empty()),
        drive_size: m.scaidrive.as_ref().map(|d| d.size as i64),
        drive_modified_at: m.scaidrive.as_ref().and_then(|d| d.modified_at.as_ref()).map(from_ts),
        drive_sha256: m.scaidrive.as_ref().map(|d| d.sha256.clone()).filter(|s| !s.is_empty()),
        last_synced_at: m.synced_at.as_ref().map(from_ts),
        error_code: m.error.as_ref().map(|e| e.code.clone()),
        error_message: m.error.as_ref().map(|e| e.message.clone()),
        updated_at: 0,
    })
}

#[tonic::async_trait]
impl v1::control_plane_server::ControlPlane for Control {
    async fn ping(&self, req: Request<v1::PingRequest>) -> Result<Response<v1::PingResponse>, Status> {
        let r = req.into_inner();
        if !r.worker_id.is_empty() {
            crate::observe::worker_seen(
                &r.worker_id,
                if r.worker_pool.is_empty() { "default" } else { &r.worker_pool },
            );
        }
        Ok(Response::new(v1::PingResponse {
            server_version: env!("CARGO_PKG_VERSION").to_string(),
            contract_version: proto::CONTRACT_VERSION.to_string(),
            server_time: Some(ts(crate::time::now_ms())),
        }))
    }

    async fn acquire_lease(
        &self,
        req: Request<v1::AcquireLeaseRequest>,
    ) -> Result<Response<v1::AcquireLeaseResponse>, Status> {
        let r = req.into_inner();
        if r.worker_id.is_empty() {
            return Err(invalid("worker_id", "a worker id is required"));
        }
        let exists: Option<(i64,)> = sqlx::query_as("SELECT 1 FROM connectors WHERE id = $1")
            .bind(&r.connector_id)
            .fetch_optional(&self.state.db.pool)
            .await
            .map_err(|e| from_api(e.into()))?;
        if exists.is_none() {
            return Err(status(Code::NotFound, proto::codes::CONNECTOR_NOT_FOUND, "no such connector"));
        }
        let ttl = duration_ms(r.ttl.as_ref()).unwrap_or(30_000);
        // A lease left to lapse by another worker (crashed, frozen, partitioned) is taken over.
        let lapsed: (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM leases WHERE connector_id = $1 AND released = 0 AND expires_at < $2 AND worker_id <> $3",
        )
        .bind(&r.connector_id)
        .bind(crate::time::now_ms())
        .bind(&r.worker_id)
        .fetch_one(&self.state.db.pool)
        .await
        .map_err(|e| from_api(e.into()))?;
        let lease = leases::acquire(&self.state.db, &r.connector_id, &r.worker_id, ttl)
            .await
            .map_err(from_api)?
            .map_err(refusal)?;
        tracing::info!(connector.id = %r.connector_id, worker.id = %r.worker_id, lease.token = lease.fencing_token, "lease acquired");
        crate::observe::lease_event("acquired");
        if lapsed.0 > 0 {
            crate::observe::lease_event("taken_over");
        }
        Ok(Response::new(v1::AcquireLeaseResponse {
            lease_id: lease.lease_id,
            fencing_token: lease.fencing_token as u64,
            expires_at: Some(ts(lease.expires_at)),
        }))
    }

    async fn renew_lease(
        &self,
        req: Request<v1::RenewLeaseRequest>,
    ) -> Result<Response<v1::RenewLeaseResponse>, Status> {
        let r = req.into_inner();
        let fence = leases::Fence { lease_id: r.lease_id, token: r.fencing_token as i64 };
        let lease = leases::renew(&self.state.db, &fence, duration_ms(r.ttl.as_ref()))
            .await
            .map_err(from_api)?
            .map_err(|r| {
                crate::observe::lease_event("lost");
                refusal(r)
            })?;
        crate::observe::lease_event("renewed");
        Ok(Response::new(v1::RenewLeaseResponse { expires_at: Some(ts(lease.expires_at)) }))
    }

    async fn release_lease(
        &self,
        req: Request<v1::ReleaseLeaseRequest>,
    ) -> Result<Response<v1::ReleaseLeaseResponse>, Status> {
        let r = req.into_inner();
        let fence = leases::Fence { lease_id: r.lease_id, token: r.fencing_token as i64 };
        let released = leases::release(&self.state.db, &fence).await.map_err(from_api)?;
        Ok(Response::new(v1::ReleaseLeaseResponse { released }))
    }

    async fn claim_job(&self, req: Request<v1::ClaimJobRequest>) -> Result<Response<v1::ClaimJobResponse>, Status> {
        let r = req.into_inner();
        let fence = fence_of(r.lease.as_ref())?;
        let job = match jobs::claim(&self.state.db, &r.job_id, &fence, None).await.map_err(from_api)? {
            Ok(j) => j,
            Err(ClaimRefusal::NotFound) => {
                return Err(status(Code::NotFound, proto::codes::JOB_NOT_FOUND, "no such job"))
            }
            Err(ClaimRefusal::Finished(outcome)) => {
                let mut metadata = std::collections::HashMap::new();
                metadata.insert("outcome".to_string(), outcome.clone());
                return Err(proto::error_status(
                    Code::FailedPrecondition,
                    &v1::ErrorDetail {
                        code: proto::codes::JOB_FINISHED.into(),
                        message: format!("the job already ended as {outcome}"),
                        field: String::new(),
                        metadata,
                    },
                ));
            }
            Err(ClaimRefusal::WrongConnector) => {
                return Err(status(
                    Code::FailedPrecondition,
                    proto::codes::JOB_LEASE_MISMATCH,
                    "the job belongs to another connector",
                ))
            }
            Err(ClaimRefusal::Lease(r)) => return Err(refusal(r)),
        };
        let tenant = crate::ids::TenantId::from_db(job.tenant_id.clone());
        let c = connectors::get(&self.state.db, &tenant, &job.connector_id).await.map_err(from_api)?;
        let creds =
            connectors::decrypted_credentials(&self.state.db, &self.state.secrets, &c.id).await.map_err(from_api)?;
        let cursor = jobs::cursor(&self.state.db, &job.connector_id).await.map_err(from_api)?;
        let st = &c.settings;
        let mut identity_mappings = Vec::new();
        if st.sync_permissions {
            let mut after = String::new();
            loop {
                let page =
                    crate::store::mappings::list(&self.state.db, &c.id, Some(&after), 1000).await.map_err(from_api)?;
                let last = page.last().map(|m| m.id.to_string());
                identity_mappings.extend(page.into_iter().map(|m| v1::IdentityMapping {
                    identity_type: m.identity_type,
                    smb_principal: m.smb_principal,
                    scaidrive_principal_id: m.scaidrive_principal_id,
                }));
                match last {
                    Some(l) => after = l,
                    None => break,
                }
            }
        }
        if st.sync_permissions && job.attempt <= 1 {
            warn_share_roles(&self.state, &job.connector_id, &job.id, &fence, &c.target_share_id).await?;
        }
        let spec = v1::JobSpec {
            job_id: job.id.clone(),
            connector_id: job.connector_id.clone(),
            tenant_id: job.tenant_id.clone(),
            attempt: job.attempt as u32,
            trigger: match job.trigger.as_str() {
                "scheduled" => v1::JobTrigger::Scheduled,
                "change_notify" => v1::JobTrigger::ChangeNotify,
                _ => v1::JobTrigger::Manual,
            } as i32,
            requested_at: Some(ts(job.requested_at)),
            connector: Some(v1::ConnectorConfig {
                connector_id: c.id.to_string(),
                name: st.name.clone(),
                smb: Some(v1::SmbEndpoint {
                    server_host: st.server_host.clone(),
                    server_port: st.server_port as u32,
                    share_name: st.share_name.clone(),
                    base_path: st.base_path.clone().unwrap_or_default(),
                }),
                credentials: Some(v1::SmbCredentials {
                    domain: creds.domain.clone().unwrap_or_default(),
                    username: creds.username.clone(),
                    password: creds.password.expose().to_string(),
                }),
                target_share_id: c.target_share_id.to_string(),
                target_path: st.target_path.clone(),
                direction: match st.sync_direction {
                    connectors::SyncDirection::Bidirectional => v1::SyncDirection::Bidirectional,
                    connectors::SyncDirection::SmbToScaidrive => v1::SyncDirection::SmbToScaidrive,
                    connectors::SyncDirection::ScaidriveToSmb => v1::SyncDirection::ScaidriveToSmb,
                } as i32,
                conflict_resolution: match st.conflict_resolution {
                    connectors::ConflictResolution::LastWriterWins => v1::ConflictResolution::LastWriterWins,
                    connectors::ConflictResolution::KeepBoth => v1::ConflictResolution::KeepBoth,
                    connectors::ConflictResolution::ScaidriveWins => v1::ConflictResolution::ScaidriveWins,
                    connectors::ConflictResolution::SmbWins => v1::ConflictResolution::SmbWins,
                } as i32,
                include: filter_msg(st.include_patterns.as_ref()),
                exclude: filter_msg(st.exclude_patterns.as_ref()),
                sync_hidden_files: st.sync_hidden_files,
                sync_system_files: st.sync_system_files,
                sync_permissions: st.sync_permissions,
                max_delete_percent: Some(st.max_delete_percent.clamp(0, 100) as u32),
                identity_mappings,
                mappings_version: c.mappings_version.max(0) as u64,
            }),
            scaidrive_cursor: cursor.unwrap_or_default(),
            scope: job.scope.as_deref().map(|j| scope_msg(&Scope::parse(j))),
            config_version: watch::config_version(&self.state.db, &job.connector_id)
                .await
                .map_err(from_api)?
                .unwrap_or_default(),
        };
        tracing::info!(job.id = %job.id, connector.id = %job.connector_id, job.attempt = job.attempt, "job claimed");
        crate::observe::job_started(&job);
        Ok(Response::new(v1::ClaimJobResponse { job: Some(spec) }))
    }

    async fn report_progress(
        &self,
        req: Request<Streaming<v1::ProgressUpdate>>,
    ) -> Result<Response<v1::ReportProgressResponse>, Status> {
        let mut stream = req.into_inner();
        let mut accepted = 0u64;
        while let Some(u) = stream.message().await? {
            let fence = fence_of(u.lease.as_ref())?;
            let (cancel, _) = jobs::report_progress(
                &self.state.db,
                &u.job_id,
                &fence,
                jobs::Progress {
                    phase: phase_name(u.phase),
                    current_path: &u.current_path,
                    files_total: u.files_total as i64,
                    bytes_total: u.bytes_total as i64,
                    bytes_per_second: u.bytes_per_second as i64,
                    counts: counts(u.counts.as_ref()),
                },
            )
            .await
            .map_err(from_api)?;
            accepted += 1;
            if cancel {
                return Ok(Response::new(v1::ReportProgressResponse { accepted, cancel_requested: true }));
            }
        }
        Ok(Response::new(v1::ReportProgressResponse { accepted, cancel_requested: false }))
    }

    async fn report_file_states(
        &self,
        req: Request<v1::ReportFileStatesRequest>,
    ) -> Result<Response<v1::ReportFileStatesResponse>, Status> {
        let r = req.into_inner();
        if r.states.len() > 1000 {
            return Err(invalid("states", "at most 1000 states per call"));
        }
        let sc = scope(&self.state, r.lease.as_ref(), None).await?;
        let fence = fence_of(r.lease.as_ref())?;
        let states = r.states.iter().map(state_from_msg).collect::<Result<Vec<_>, _>>()?;
        let accepted = file_states::report(&self.state.db, &sc.connector_id, &r.job_id, &fence, &states)
            .await
            .map_err(from_api)?;
        Ok(Response::new(v1::ReportFileStatesResponse { accepted }))
    }

    async fn complete_job(
        &self,
        req: Request<v1::CompleteJobRequest>,
    ) -> Result<Response<v1::CompleteJobResponse>, Status> {
        let r = req.into_inner();
        let fence = fence_of(r.lease.as_ref())?;
        let outcome = match v1::JobOutcome::try_from(r.outcome).unwrap_or(v1::JobOutcome::Unspecified) {
            v1::JobOutcome::Completed => "completed",
            v1::JobOutcome::Failed => "failed",
            v1::JobOutcome::Cancelled => "cancelled",
            v1::JobOutcome::Interrupted => "interrupted",
            v1::JobOutcome::Unspecified => return Err(invalid("outcome", "an outcome is required")),
        };
        let (already, follow_up) = jobs::complete_with_follow_up(
            &self.state.db,
            &r.job_id,
            &fence,
            jobs::Outcome {
                status: outcome,
                counts: counts(r.counts.as_ref()),
                error_code: r.error.as_ref().map(|e| e.code.as_str()),
                error_message: r.error.as_ref().map(|e| e.message.as_str()),
                cursor: Some(r.scaidrive_cursor.as_str()),
            },
        )
        .await
        .map_err(from_api)?;
        tracing::info!(job.id = %r.job_id, job.outcome = outcome, "job completed");
        if let Some(next) = follow_up {
            tracing::info!(job.id = %next, after = %r.job_id, "changes were reported during the run: follow-up queued");
            self.publish(&next).await;
        }
        if !already {
            let c: Option<(String, String)> = sqlx::query_as(
                "SELECT c.conflict_resolution, c.sync_direction FROM jobs j JOIN connectors c ON c.id = j.connector_id WHERE j.id = $1",
            )
            .bind(&r.job_id)
            .fetch_optional(&self.state.db.pool)
            .await
            .ok()
            .flatten();
            let (strategy, direction) = c.unwrap_or_default();
            crate::observe::job_finished(&self.state, &r.job_id, &strategy, direction == "scaidrive_to_smb").await;
        }
        Ok(Response::new(v1::CompleteJobResponse { already_recorded: already }))
    }

    async fn check_cancel(
        &self,
        req: Request<v1::CheckCancelRequest>,
    ) -> Result<Response<v1::CheckCancelResponse>, Status> {
        let r = req.into_inner();
        let sc = scope(&self.state, r.lease.as_ref(), None).await?;
        if jobs::get(&self.state.db, &r.job_id)
            .await
            .map_err(from_api)?
            .is_some_and(|j| j.connector_id != sc.connector_id)
        {
            return Err(status(
                Code::FailedPrecondition,
                proto::codes::JOB_LEASE_MISMATCH,
                "the job belongs to another connector",
            ));
        }
        let (cancel, reason) = jobs::cancel_state(&self.state.db, &r.job_id).await.map_err(from_api)?;
        Ok(Response::new(v1::CheckCancelResponse { cancel_requested: cancel, reason: reason.unwrap_or_default() }))
    }

    async fn list_file_states(
        &self,
        req: Request<v1::ListFileStatesRequest>,
    ) -> Result<Response<v1::ListFileStatesResponse>, Status> {
        let r = req.into_inner();
        let sc = scope(&self.state, r.lease.as_ref(), None).await?;
        let limit = page_limit(r.page_size, 5000)?;
        // Only the lease holder writes states, and the caller holds the lease: the version
        // read before the first page still names the states of the last one.
        let mut states_version = String::new();
        if r.page_token.is_empty() {
            states_version =
                file_states::version(&self.state.db, &sc.connector_id).await.map_err(from_api)?.unwrap_or_default();
            if !states_version.is_empty() && r.known_version == states_version {
                return Ok(Response::new(v1::ListFileStatesResponse {
                    states: Vec::new(),
                    next_page_token: String::new(),
                    states_version,
                    unchanged: true,
                }));
            }
        }
        let page = file_states::list(&self.state.db, &sc.connector_id, None, None, Some(&r.page_token), limit)
            .await
            .map_err(from_api)?;
        let next = next_token(&page, limit, |s| &s.path);
        Ok(Response::new(v1::ListFileStatesResponse {
            states: page.iter().map(state_msg).collect(),
            next_page_token: next,
            states_version,
            unchanged: false,
        }))
    }

    async fn fetch_connection_test(
        &self,
        req: Request<v1::FetchConnectionTestRequest>,
    ) -> Result<Response<v1::FetchConnectionTestResponse>, Status> {
        let r = req.into_inner();
        let t = crate::store::conn_tests::fetch(&self.state.db, &self.state.secrets, &r.test_id)
            .await
            .map_err(from_api)?
            .ok_or_else(|| {
                status(Code::NotFound, "TEST_NOT_FOUND", "no such pending test (answered, or its caller gave up)")
            })?;
        tracing::info!(test.id = %t.id, worker.id = %r.worker_id, "connection test fetched");
        Ok(Response::new(v1::FetchConnectionTestResponse {
            test_id: t.id,
            smb: Some(v1::SmbEndpoint {
                server_host: t.server_host,
                server_port: t.server_port as u32,
                share_name: t.share_name,
                base_path: t.base_path.unwrap_or_default(),
            }),
            credentials: Some(v1::SmbCredentials {
                domain: t.domain.unwrap_or_default(),
                username: t.username,
                password: t.password.expose().to_string(),
            }),
            check_write: t.check_write,
        }))
    }

    async fn report_job_events(
        &self,
        req: Request<v1::ReportJobEventsRequest>,
    ) -> Result<Response<v1::ReportJobEventsResponse>, Status> {
        let r = req.into_inner();
        if r.events.len() > 1000 {
            return Err(invalid("events", "at most 1000 events per call"));
        }
        for e in &r.events {
            if !["info", "warning", "error"].contains(&e.level.as_str()) {
                return Err(invalid("events.level", "must be info, warning or error"));
            }
            if e.code.is_empty() || e.message.is_empty() {
                return Err(invalid("events", "every event needs a code and a message"));
            }
        }
        let sc = scope(&self.state, r.lease.as_ref(), None).await?;
        let fence = fence_of(r.lease.as_ref())?;
        let events: Vec<jobs::NewEvent<'_>> = r
            .events
            .iter()
            .map(|e| jobs::NewEvent {
                level: &e.level,
                path: (!e.path.is_empty()).then_some(e.path.as_str()),
                code: Some(&e.code),
                nt_status: None,
                message: &e.message,
            })
            .collect();
        jobs::report_events(&self.state.db, &sc.connector_id, &r.job_id, &fence, &events).await.map_err(from_api)?;
        Ok(Response::new(v1::ReportJobEventsResponse { accepted: r.events.len() as u32 }))
    }

    async fn list_permission_states(
        &self,
        req: Request<v1::ListPermissionStatesRequest>,
    ) -> Result<Response<v1::ListPermissionStatesResponse>, Status> {
        let r = req.into_inner();
        let sc = scope(&self.state, r.lease.as_ref(), None).await?;
        let limit = page_limit(r.page_size, 1000)?;
        let page = permissions::list(&self.state.db, &sc.connector_id, &sc.share_id, &r.page_token, limit)
            .await
            .map_err(from_api)?;
        let next = next_token(&page, limit, |s| &s.path);
        Ok(Response::new(v1::ListPermissionStatesResponse {
            states: page.iter().map(permission_state_msg).collect(),
            next_page_token: next,
        }))
    }

    async fn acquire_watch(
        &self,
        req: Request<v1::AcquireWatchRequest>,
    ) -> Result<Response<v1::AcquireWatchResponse>, Status> {
        self.do_acquire_watch(req.into_inner()).await.map(Response::new)
    }

    async fn renew_watch(
        &self,
        req: Request<v1::RenewWatchRequest>,
    ) -> Result<Response<v1::RenewWatchResponse>, Status> {
        let r = req.into_inner();
        let fence = watch_fence(r.watch.as_ref())?;
        let w = watch::renew(&self.state.db, &fence, duration_ms(r.ttl.as_ref()))
            .await
            .map_err(from_api)?
            .map_err(watch_refusal)?;
        Ok(Response::new(v1::RenewWatchResponse { expires_at: Some(ts(w.expires_at)) }))
    }

    async fn release_watch(
        &self,
        req: Request<v1::ReleaseWatchRequest>,
    ) -> Result<Response<v1::ReleaseWatchResponse>, Status> {
        let fence = watch_fence(req.into_inner().watch.as_ref())?;
        let released = watch::release(&self.state.db, &fence).await.map_err(from_api)?;
        Ok(Response::new(v1::ReleaseWatchResponse { released }))
    }

    async fn request_sync(
        &self,
        req: Request<v1::RequestSyncRequest>,
    ) -> Result<Response<v1::RequestSyncResponse>, Status> {
        self.do_request_sync(req.into_inner()).await.map(Response::new)
    }

    async fn apply_permissions(
        &self,
        req: Request<v1::ApplyPermissionsRequest>,
    ) -> Result<Response<v1::ApplyPermissionsResponse>, Status> {
        let r = req.into_inner();
        if r.states.len() > 1000 || r.forget_paths.len() > 1000 {
            return Err(invalid("states", "at most 1000 states and 1000 forgotten paths per call"));
        }
        let sc = scope(&self.state, r.lease.as_ref(), None).await?;
        let fence = fence_of(r.lease.as_ref())?;
        let mut states = Vec::with_capacity(r.states.len());
        for (i, s) in r.states.iter().enumerate() {
            states.push(permission_state_of(s).map_err(|(field, msg)| invalid(&format!("states[{i}].{field}"), msg))?);
        }
        let out = permissions::apply(
            &self.state.db,
            &sc.tenant,
            &sc.connector_id,
            &sc.share_id,
            &fence,
            &states,
            &r.forget_paths,
        )
        .await
        .map_err(from_api)?;
        tracing::info!(
            connector.id = %sc.connector_id,
            written = out.written,
            unchanged = out.unchanged,
            skipped = out.skipped,
            "permissions applied"
        );
        Ok(Response::new(v1::ApplyPermissionsResponse {
            written: out.written,
            unchanged: out.unchanged,
            skipped: out.skipped,
            entries_dropped: out.entries_dropped,
        }))
    }
}

fn scope_msg(s: &Scope) -> v1::SyncScope {
    v1::SyncScope {
        full: s.full,
        folders: s.folders.iter().map(|f| v1::ScopeFolder { path: f.path.clone(), recursive: f.recursive }).collect(),
    }
}

/// A scope from a worker: relative paths without empty, `.` or `..` parts (`""` is the root).
fn scope_of(m: Option<&v1::SyncScope>) -> Result<Scope, Status> {
    let Some(m) = m.filter(|m| !m.full) else { return Ok(Scope::full()) };
    let mut folders = Vec::with_capacity(m.folders.len());
    for f in &m.folders {
        let p = f.path.as_str();
        if !p.is_empty()
            && (p.starts_with('/') || p.contains('\\') || p.split('/').any(|s| s.is_empty() || s == "." || s == ".."))
        {
            return Err(invalid(
                "scope.folders.path",
                "a path relative to the sync root without empty, '.' or '..' parts",
            ));
        }
        folders.push(ScopeFolder { path: p.to_string(), recursive: f.recursive });
    }
    Ok(Scope { full: false, folders }.merge(&Scope::default()))
}

fn watch_fence(w: Option<&v1::WatchToken>) -> Result<WatchFence, Status> {
    let w = w.ok_or_else(|| invalid("watch", "a watch token is required"))?;
    Ok(WatchFence { watch_id: w.watch_id.clone(), token: w.fencing_token.min(i64::MAX as u64) as i64 })
}

fn watch_refusal(r: watch::Refusal) -> Status {
    match r {
        watch::Refusal::ConnectorGone => status(Code::NotFound, proto::codes::CONNECTOR_NOT_FOUND, r.message()),
        watch::Refusal::Held { expires_at } => {
            let mut metadata = std::collections::HashMap::new();
            metadata.insert("expires_at".to_string(), crate::time::rfc3339(expires_at));
            proto::error_status(
                Code::FailedPrecondition,
                &v1::ErrorDetail { code: r.code().into(), message: r.message().into(), field: String::new(), metadata },
            )
        }
        _ => status(Code::FailedPrecondition, r.code(), r.message()),
    }
}

impl Control {
    /// Publishes a queued job; on failure the sweeper publishes it later.
    async fn publish(&self, job_id: &str) {
        match jobs::get(&self.state.db, job_id).await {
            Ok(Some(job)) => {
                if let Err(e) = crate::fleet::publish_job(&self.state, &job).await {
                    tracing::warn!(job.id = %job_id, error = %e.message, "publishing a change-triggered job failed; the sweeper retries");
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(job.id = %job_id, error = %e.message, "reading a job to publish failed"),
        }
    }

    /// `AcquireWatch`.
    pub async fn do_acquire_watch(&self, r: v1::AcquireWatchRequest) -> Result<v1::AcquireWatchResponse, Status> {
        if r.worker_id.is_empty() {
            return Err(invalid("worker_id", "a worker id is required"));
        }
        let ttl = duration_ms(r.ttl.as_ref()).unwrap_or(30_000);
        let w = watch::acquire(&self.state.db, &r.connector_id, &r.worker_id, ttl, &r.config_version)
            .await
            .map_err(from_api)?
            .map_err(watch_refusal)?;
        tracing::info!(connector.id = %w.connector_id, worker.id = %w.worker_id, watch.token = w.fencing_token, "watch acquired");
        Ok(v1::AcquireWatchResponse {
            watch: Some(v1::WatchToken { watch_id: w.watch_id, fencing_token: w.fencing_token as u64 }),
            expires_at: Some(ts(w.expires_at)),
        })
    }

    /// `RequestSync`.
    pub async fn do_request_sync(&self, r: v1::RequestSyncRequest) -> Result<v1::RequestSyncResponse, Status> {
        let fence = watch_fence(r.watch.as_ref())?;
        let scope = scope_of(r.scope.as_ref())?;
        let w = watch::validate(&self.state.db, &fence).await.map_err(from_api)?.map_err(watch_refusal)?;
        let out = watch::request_sync(&self.state.db, &w, &scope).await.map_err(from_api)?;
        let (job, disposition) = match out {
            watch::Requested::Queued(job) => {
                tracing::info!(job.id = %job.id, connector.id = %job.connector_id, folders = scope.folders.len(), full = scope.full, "change-triggered sync queued");
                self.publish(&job.id).await;
                (job, v1::RequestSyncDisposition::Queued)
            }
            watch::Requested::Merged(job) => (job, v1::RequestSyncDisposition::Merged),
            watch::Requested::FollowUp(job) => {
                tracing::info!(job.id = %job.id, connector.id = %job.connector_id, "change reported during a run: follow-up recorded");
                (job, v1::RequestSyncDisposition::FollowUp)
            }
        };
        Ok(v1::RequestSyncResponse { job_id: job.id, disposition: disposition as i32 })
    }
}

/// A page size: 0 means 1000 (or `max` if smaller); 1..=`max`; else INVALID_ARGUMENT.
fn page_limit(page_size: u32, max: u32) -> Result<i64, Status> {
    match page_size {
        0 => Ok(1000.min(max) as i64),
        n if n <= max => Ok(n as i64),
        _ => Err(invalid("page_size", format!("must be between 1 and {max}"))),
    }
}

/// The next page's token (the last path) when the page is full; empty at the end.
fn next_token<T>(page: &[T], limit: i64, path: impl Fn(&T) -> &String) -> String {
    if page.len() as i64 == limit {
        page.last().map(|s| path(s).clone()).unwrap_or_default()
    } else {
        String::new()
    }
}

fn permission_state_msg(s: &permissions::State) -> v1::PermissionState {
    v1::PermissionState {
        path: s.path.clone(),
        node_id: s.node_id.clone(),
        sd_changed_at_ns: s.sd_changed_at,
        mappings_version: s.mappings_version.max(0) as u64,
        acl: Some(v1::ReplicatedAcl {
            inherit_from_parent: s.acl.inherit_from_parent,
            entries: s
                .acl
                .entries
                .iter()
                .map(|e| v1::AclEntry {
                    principal_type: match e.principal_type.as_str() {
                        "user" => v1::PrincipalType::User,
                        "group" => v1::PrincipalType::Group,
                        _ => v1::PrincipalType::Everyone,
                    } as i32,
                    principal_id: e.principal_id.clone(),
                    deny: e.deny,
                    permissions: e.permissions as u32,
                    inherit_to_children: e.inherit_to_children,
                })
                .collect(),
            owner_user_id: s.acl.owner.clone(),
        }),
        drifted: s.drifted,
    }
}

fn permission_state_of(s: &v1::PermissionState) -> Result<permissions::State, (&'static str, &'static str)> {
    if s.path.is_empty() {
        return Err(("path", "a path is required"));
    }
    if s.node_id.is_empty() {
        return Err(("node_id", "a node id is required"));
    }
    let acl = s.acl.clone().unwrap_or_default();
    let mut entries = Vec::with_capacity(acl.entries.len());
    for e in &acl.entries {
        let t = match v1::PrincipalType::try_from(e.principal_type).unwrap_or(v1::PrincipalType::Unspecified) {
            v1::PrincipalType::User => "user",
            v1::PrincipalType::Group => "group",
            v1::PrincipalType::Everyone => "everyone",
            v1::PrincipalType::Unspecified => {
                return Err(("acl.entries.principal_type", "must be user, group or everyone"))
            }
        };
        if t != "everyone" && e.principal_id.is_empty() {
            return Err(("acl.entries.principal_id", "a user or group entry needs its id"));
        }
        if e.permissions & !(crate::perm::ALL as u32) != 0 {
            return Err(("acl.entries.permissions", "unknown permission bits"));
        }
        entries.push(permissions::Entry {
            principal_type: t.to_string(),
            principal_id: if t == "everyone" { String::new() } else { e.principal_id.clone() },
            deny: e.deny,
            permissions: e.permissions as i64,
            inherit_to_children: e.inherit_to_children,
        });
    }
    Ok(permissions::State {
        path: s.path.clone(),
        node_id: s.node_id.clone(),
        sd_changed_at: s.sd_changed_at_ns,
        mappings_version: s.mappings_version.min(i64::MAX as u64) as i64,
        acl: permissions::Acl { inherit_from_parent: acl.inherit_from_parent, entries, owner: acl.owner_user_id },
        drifted: false,
    })
}

/// Share roles apply on top of ACLs, so on a share whose ACLs a connector replicates, a member
/// with a role reaches items the file server closes to them. Owners and admins are the share's
/// administrators; any other role is worth a warning in the job log, once per run.
async fn warn_share_roles(
    state: &AppState,
    connector_id: &str,
    job_id: &str,
    fence: &leases::Fence,
    share: &crate::ids::ShareId,
) -> Result<(), Status> {
    use crate::perm::Role;
    let members = crate::store::shares::members(&state.db, share).await.map_err(from_api)?;
    let mut by_role: std::collections::BTreeMap<&str, usize> = Default::default();
    for m in &members {
        if matches!(m.role, Role::Contributor | Role::Reader) {
            *by_role.entry(m.role.as_str()).or_default() += 1;
        }
    }
    if by_role.is_empty() {
        return Ok(());
    }
    let n: usize = by_role.values().sum();
    let roles = by_role.iter().map(|(r, k)| format!("{r}: {k}")).collect::<Vec<_>>().join(", ");
    let message = format!(
        "{n} member(s) of the target share have a share role ({roles}); share roles apply on top of the \
         replicated ACLs, so they reach items the file server closes to them. Give people access through \
         identity mappings instead, and keep share roles for the share's administrators"
    );
    let event = jobs::NewEvent {
        level: "warning",
        path: None,
        code: Some("PERMISSIONS_SHARE_ROLES"),
        nt_status: None,
        message: &message,
    };
    jobs::report_events(&state.db, connector_id, job_id, fence, &[event]).await.map_err(from_api)
}
