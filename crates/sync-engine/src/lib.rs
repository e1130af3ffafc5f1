//! The sync engine of the SMB connector: a pure **planner** and an **executor**.
//!
//! - [`plan()`] takes the SMB snapshot, the ScaiDrive snapshot, the last synced state and the
//!   settings, and returns a [`Plan`]: no I/O, no clock, deterministic.
//! - [`execute()`] applies a plan through three traits ([`SmbReplica`], [`DriveReplica`],
//!   [`StateSink`]) that the sync-worker implements over `smb-layer` and gRPC, and
//!   [`testing`] implements in memory.
//!
//! This crate must never depend on SMB, gRPC or the api-server. See `README.md` for the
//! classification table, the actions, the conflict rules and the invariants.

pub mod exec;
pub mod model;
pub mod permissions;
pub mod plan;
pub mod replica;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod tracked;

pub use exec::{execute, ExecOptions, ExecReport};
pub use model::*;
pub use plan::{plan, Action, DeleteGuard, Phase, Plan, Resolution};
pub use replica::*;
pub use tracked::{plan_tracked, DriveOverlay, KnownStates, SmbWalk, Tracked, TrackedBuilder};
