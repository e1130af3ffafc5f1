//! The sync-worker: a member of the ScaiDrive SMB connector's worker fleet.
//!
//! It consumes sync jobs and connectivity tests from the job queue, holds a connector's lease
//! while it runs a job, is the only process that talks SMB, and writes into ScaiDrive only
//! through the api-server's gRPC `FileService`, every write fenced by its lease token.
//!
//! - [`run`] is the whole worker (the binary and the api-server's standalone mode call it).
//! - [`job`] runs one sync job: lease, heartbeat, claim, scan, plan, execute, complete.
//! - [`conntest`] answers a connectivity test.
//! - [`smb_replica::SmbShare`], [`drive_replica::DriveTarget`] and [`state_sink::StateReporter`]
//!   implement the sync engine's replica traits over `smb-layer` and gRPC.
//! - [`permissions`] replicates SMB security descriptors as ScaiDrive ACLs (`sync_permissions`).
//! - [`changes`] rebuilds the ScaiDrive side from the last synced state and the change log.
//!
//! This crate must never log, trace or put in an error the SMB password or the worker token,
//! and must never acknowledge a job's queue message before the job's outcome is recorded.

pub mod changes;
pub mod config;
pub mod conntest;
pub mod convert;
pub mod crash;
pub mod drive_replica;
pub mod health;
pub mod job;
pub mod message;
pub mod permissions;
pub mod rpc;
pub mod scan;
pub mod scope;
pub mod smb_replica;
pub mod state_cache;
pub mod state_sink;
pub mod watch;
pub mod worker;

pub use config::{Secret, WorkerConfig};
pub use health::Readiness;
pub use worker::{
    connection_tests_queue, run, run_with_readiness, sync_jobs_queue, valid_pool_name, CONNECTION_TESTS_QUEUE,
    DEFAULT_POOL, SYNC_JOBS_QUEUE,
};
