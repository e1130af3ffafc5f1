//! The SMB layer: the only crate of the project that knows the SMB library (`smb` 0.12.1).
//!
//! It gives the sync worker a small API over one share ([`SmbClient`]) with our own types
//! ([`DirEntry`], [`SecurityDescriptor`], [`ChangeEvent`], [`SmbError`] with stable codes),
//! SID ↔ name lookups through the server's LSA ([`SmbClient::lookup_sids`],
//! [`SmbClient::lookup_names`], [`Principal`]; our own NDR20 binding, see `lsa.rs`),
//! share-relative `/` paths, bounded concurrency and a timeout on every call, and works around
//! the library's known defects through its public API (see `README.md` of this crate):
//! TCP_NODELAY transport, credit starvation, lost listing wake-ups, dead connections, cached
//! file sizes and unsplit writes.
//!
//! It must never: expose a library type, log or print a password, hang on a silent server,
//! or hold a file's content in memory.
//!
//! ```no_run
//! # async fn demo() -> smb_layer::Result<()> {
//! use smb_layer::{SmbClient, SmbConfig};
//! let client = SmbClient::connect(SmbConfig::new("fileserver", 445, "CORP", "svc", "secret", "Share")).await?;
//! for e in client.list_dir("projects").await? {
//!     println!("{} {} bytes id={}", e.path, e.size, e.file_id);
//! }
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod client;
mod config;
mod error;
mod io;
mod listing;
mod lsa;
mod ndr;
mod ops;
pub mod path;
mod transport;
mod types;
mod watch;

pub use client::{ConnectionStats, SmbClient};
pub use config::{Limits, Secret, SmbConfig, Timeouts};
pub use error::{NtStatus, Result, SmbError};
pub use listing::{ExcludeFn, WalkOptions};
pub use lsa::{Principal, SidKind};
pub use ops::SetTimes;
pub use types::{
    access, Ace, AceFlags, AceKind, ChangeEvent, ChangeKind, DirEntry, FileAttributes, FileTime, SdControl,
    SecurityDescriptor,
};
