//! Connection settings for [`crate::SmbClient`]; the password lives in a [`Secret`].
//!
//! Must never print, log or serialise the password: [`Secret`]'s `Debug` and `Display`
//! print `***`, and the only way to read it is [`Secret::expose`].

use std::fmt;
use std::time::Duration;

/// A string that never shows up in `Debug`/`Display` output (prints `***`).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret value. Call only where it is handed to the authenticator.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret(s.to_string())
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret(s)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Time limits. Every SMB call is bounded: a hung server yields an error, never a hang.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP connect + negotiate + session setup + tree connect.
    pub connect: Duration,
    /// One request/response exchange (open, stat, one read/write chunk, one listing page...).
    pub request: Duration,
    /// A whole listing of one directory.
    pub list_dir: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(15),
            request: Duration::from_secs(60),
            list_dir: Duration::from_secs(300),
        }
    }
}

/// Concurrency limits per client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Read or write requests in flight per streamed transfer.
    pub io_depth: usize,
    /// Largest single read/write request in bytes (further capped by the server's maximum).
    /// 512 KiB by default: Samba answers a read or write it cannot finish within half a
    /// millisecond with an interim response, whose credits the library loses (see
    /// `transport.rs`); small requests rarely need one, so a connection lasts for gigabytes
    /// instead of tens of megabytes (`tests/smb_measure.rs`, `measure_request_sizes`).
    pub io_chunk: u32,
    /// Operations (of any kind) in flight on the client at once.
    pub max_ops_in_flight: usize,
    /// SMB connections the client spreads its operations over (at least 1). Samba serves each
    /// connection from one single-threaded `smbd`, so one connection caps the client at one
    /// server core; a transfer stays on the connection it opened its file on.
    pub connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { io_depth: 8, io_chunk: 512 * 1024, max_ops_in_flight: 64, connections: 4 }
    }
}

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct SmbConfig {
    /// Server host name or IP address.
    pub host: String,
    /// TCP port (445 for a normal server).
    pub port: u16,
    /// NTLM domain (workgroup), e.g. `CORP`.
    pub domain: String,
    /// User name without domain.
    pub username: String,
    /// Password (never printed).
    pub password: Secret,
    /// Share name, e.g. `Share`.
    pub share: String,
    /// Time limits.
    pub timeouts: Timeouts,
    /// Concurrency limits.
    pub limits: Limits,
    /// Set TCP_NODELAY on the socket (default true). Turning it off costs ~40 ms per small
    /// request (delayed ACK + Nagle); it exists only to measure that.
    pub tcp_nodelay: bool,
}

impl SmbConfig {
    /// A config with default timeouts and limits.
    pub fn new(
        host: impl Into<String>,
        port: u16,
        domain: impl Into<String>,
        username: impl Into<String>,
        password: impl Into<Secret>,
        share: impl Into<String>,
    ) -> Self {
        SmbConfig {
            host: host.into(),
            port,
            domain: domain.into(),
            username: username.into(),
            password: password.into(),
            share: share.into(),
            timeouts: Timeouts::default(),
            limits: Limits::default(),
            tcp_nodelay: true,
        }
    }
}
