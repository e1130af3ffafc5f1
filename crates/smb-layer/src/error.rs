//! The one error type of the SMB layer, with a stable machine code per kind.
//!
//! Every error the `smb` library returns is classified here, and only here, into
//! [`SmbError`]. Must never carry the password or raw library types to callers.

use std::fmt;

/// An NT status code as returned by the server (e.g. `0xC000006D` for a logon failure).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct NtStatus(pub u32);

impl NtStatus {
    /// STATUS_LOGON_FAILURE.
    pub const LOGON_FAILURE: NtStatus = NtStatus(0xC000_006D);
    /// STATUS_BAD_NETWORK_NAME (unknown share).
    pub const BAD_NETWORK_NAME: NtStatus = NtStatus(0xC000_00CC);
    /// STATUS_OBJECT_NAME_NOT_FOUND.
    pub const OBJECT_NAME_NOT_FOUND: NtStatus = NtStatus(0xC000_0034);
    /// STATUS_OBJECT_PATH_NOT_FOUND.
    pub const OBJECT_PATH_NOT_FOUND: NtStatus = NtStatus(0xC000_003A);
    /// STATUS_ACCESS_DENIED.
    pub const ACCESS_DENIED: NtStatus = NtStatus(0xC000_0022);
    /// STATUS_SHARING_VIOLATION.
    pub const SHARING_VIOLATION: NtStatus = NtStatus(0xC000_0043);
    /// STATUS_OBJECT_NAME_COLLISION.
    pub const OBJECT_NAME_COLLISION: NtStatus = NtStatus(0xC000_0035);
    /// STATUS_NOT_A_DIRECTORY.
    pub const NOT_A_DIRECTORY: NtStatus = NtStatus(0xC000_0103);
    /// STATUS_DIRECTORY_NOT_EMPTY.
    pub const DIRECTORY_NOT_EMPTY: NtStatus = NtStatus(0xC000_0101);
}

impl fmt::Display for NtStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:08X}", self.0)
    }
}

impl fmt::Debug for NtStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NtStatus(0x{:08X})", self.0)
    }
}

/// Formats an optional status as ` (NT status 0x...)` or nothing.
struct St<'a>(&'a Option<NtStatus>);

impl fmt::Display for St<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(s) => write!(f, " (NT status {s})"),
            None => Ok(()),
        }
    }
}

/// Everything that can go wrong talking to an SMB server.
///
/// [`code`](SmbError::code) gives a stable machine code per kind;
/// [`nt_status`](SmbError::nt_status) the server's NT status when there was one.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SmbError {
    /// Wrong user name or password, or the account cannot log on.
    #[error("authentication failed{}", St(.status))]
    AuthFailed {
        /// NT status, e.g. 0xC000006D.
        status: Option<NtStatus>,
    },
    /// The server cannot be reached: DNS failure, connection refused, connect timeout.
    #[error("server unreachable: {detail}{}", St(.status))]
    Unreachable {
        /// What failed.
        detail: String,
        /// NT status, if any.
        status: Option<NtStatus>,
    },
    /// The share does not exist on the server.
    #[error("share not found: {share}{}", St(.status))]
    ShareNotFound {
        /// The share name.
        share: String,
        /// NT status, e.g. 0xC00000CC.
        status: Option<NtStatus>,
    },
    /// The path (or one of its parents) does not exist.
    #[error("path not found: {path}{}", St(.status))]
    PathNotFound {
        /// The share-relative path.
        path: String,
        /// NT status.
        status: Option<NtStatus>,
    },
    /// The server refused access (ACL, read-only share, read-only attribute).
    #[error("access denied: {path}{}", St(.status))]
    AccessDenied {
        /// The share-relative path.
        path: String,
        /// NT status.
        status: Option<NtStatus>,
    },
    /// The file is open or locked by someone else in a conflicting way.
    #[error("sharing violation (file in use or locked): {path}{}", St(.status))]
    SharingViolation {
        /// The share-relative path.
        path: String,
        /// NT status.
        status: Option<NtStatus>,
    },
    /// A directory was expected (or a path component is a file).
    #[error("not a directory: {path}{}", St(.status))]
    NotADirectory {
        /// The share-relative path.
        path: String,
        /// NT status.
        status: Option<NtStatus>,
    },
    /// The target name already exists.
    #[error("already exists: {path}{}", St(.status))]
    AlreadyExists {
        /// The share-relative path.
        path: String,
        /// NT status.
        status: Option<NtStatus>,
    },
    /// A directory to delete still has entries.
    #[error("directory not empty: {path}{}", St(.status))]
    DirectoryNotEmpty {
        /// The share-relative path.
        path: String,
        /// NT status.
        status: Option<NtStatus>,
    },
    /// The connection broke (server stopped, network cut, request timed out). The next
    /// operation on the same [`crate::SmbClient`] builds a new connection.
    #[error("connection lost: {detail}{}", St(.status))]
    ConnectionLost {
        /// What happened.
        detail: String,
        /// NT status, if any.
        status: Option<NtStatus>,
    },
    /// A DCE/RPC call (the LSA client, `lsa.rs`) failed: the server refused the bind, answered
    /// with a fault or an unexpected status, or sent a response that does not decode.
    /// Code `SMB_RPC_FAILED`.
    #[error("RPC failed: {detail}{}", St(.status))]
    Rpc {
        /// What happened.
        detail: String,
        /// NT status returned by the call, if any.
        status: Option<NtStatus>,
    },
    /// The file's size, times or id on the open handle after the last byte of a
    /// [`read_checked`](crate::SmbClient::read_checked) differ from those at open: what was
    /// read may mix old and new content.
    #[error("changed while being read: {path}")]
    ChangedWhileReading {
        /// The share-relative path.
        path: String,
    },
    /// Anything else.
    #[error("SMB error: {detail}{}", St(.status))]
    Other {
        /// What happened.
        detail: String,
        /// NT status, if any.
        status: Option<NtStatus>,
    },
}

impl SmbError {
    /// A stable machine code for the kind of error, e.g. `CONNECTOR_AUTH_FAILED`.
    pub fn code(&self) -> &'static str {
        match self {
            SmbError::AuthFailed { .. } => "CONNECTOR_AUTH_FAILED",
            SmbError::Unreachable { .. } => "CONNECTOR_UNREACHABLE",
            SmbError::ShareNotFound { .. } => "CONNECTOR_SHARE_NOT_FOUND",
            SmbError::PathNotFound { .. } => "SMB_PATH_NOT_FOUND",
            SmbError::AccessDenied { .. } => "SMB_ACCESS_DENIED",
            SmbError::SharingViolation { .. } => "SMB_SHARING_VIOLATION",
            SmbError::NotADirectory { .. } => "SMB_NOT_A_DIRECTORY",
            SmbError::AlreadyExists { .. } => "SMB_ALREADY_EXISTS",
            SmbError::DirectoryNotEmpty { .. } => "SMB_DIRECTORY_NOT_EMPTY",
            SmbError::ConnectionLost { .. } => "SMB_CONNECTION_LOST",
            SmbError::Rpc { .. } => "SMB_RPC_FAILED",
            SmbError::ChangedWhileReading { .. } => "SMB_CHANGED_DURING_READ",
            SmbError::Other { .. } => "SMB_ERROR",
        }
    }

    /// The NT status code the server returned, if the error came from one.
    pub fn nt_status(&self) -> Option<NtStatus> {
        match self {
            SmbError::AuthFailed { status }
            | SmbError::Unreachable { status, .. }
            | SmbError::ShareNotFound { status, .. }
            | SmbError::PathNotFound { status, .. }
            | SmbError::AccessDenied { status, .. }
            | SmbError::SharingViolation { status, .. }
            | SmbError::NotADirectory { status, .. }
            | SmbError::AlreadyExists { status, .. }
            | SmbError::DirectoryNotEmpty { status, .. }
            | SmbError::ConnectionLost { status, .. }
            | SmbError::Rpc { status, .. }
            | SmbError::Other { status, .. } => *status,
            SmbError::ChangedWhileReading { .. } => None,
        }
    }

    /// Whether the connection this error came from should be thrown away.
    pub fn is_connection_lost(&self) -> bool {
        matches!(self, SmbError::ConnectionLost { .. })
    }

    pub(crate) fn other(detail: impl Into<String>) -> Self {
        SmbError::Other { detail: detail.into(), status: None }
    }

    pub(crate) fn rpc(detail: impl Into<String>) -> Self {
        SmbError::Rpc { detail: detail.into(), status: None }
    }

    pub(crate) fn lost(detail: impl Into<String>) -> Self {
        SmbError::ConnectionLost { detail: detail.into(), status: None }
    }
}

/// Result type of the SMB layer.
pub type Result<T> = std::result::Result<T, SmbError>;

/// Maps an NT status to a kind, for an operation on `path`.
pub(crate) fn from_status(status: u32, path: &str, detail: String) -> SmbError {
    let st = Some(NtStatus(status));
    let path = path.to_string();
    match status {
        // LOGON_FAILURE, WRONG_PASSWORD, NO_SUCH_USER, ACCOUNT_RESTRICTION, INVALID_LOGON_HOURS,
        // INVALID_WORKSTATION, PASSWORD_EXPIRED, ACCOUNT_DISABLED, PASSWORD_MUST_CHANGE,
        // ACCOUNT_EXPIRED, ACCOUNT_LOCKED_OUT
        0xC000_006D | 0xC000_006A | 0xC000_0064 | 0xC000_006E | 0xC000_006F | 0xC000_0070 | 0xC000_0071
        | 0xC000_0072 | 0xC000_0224 | 0xC000_0193 | 0xC000_0234 => SmbError::AuthFailed { status: st },
        0xC000_00CC => SmbError::ShareNotFound { share: path, status: st },
        // OBJECT_NAME_NOT_FOUND, OBJECT_PATH_NOT_FOUND, NO_SUCH_FILE, DELETE_PENDING treated
        // as gone.
        0xC000_0034 | 0xC000_003A | 0xC000_000F => SmbError::PathNotFound { path, status: st },
        // ACCESS_DENIED, MEDIA_WRITE_PROTECTED, CANNOT_DELETE, PRIVILEGE_NOT_HELD
        0xC000_0022 | 0xC000_00A2 | 0xC000_0121 | 0xC000_0061 => SmbError::AccessDenied { path, status: st },
        // SHARING_VIOLATION, FILE_LOCK_CONFLICT, LOCK_NOT_GRANTED, DELETE_PENDING
        0xC000_0043 | 0xC000_0054 | 0xC000_0055 | 0xC000_0056 => SmbError::SharingViolation { path, status: st },
        0xC000_0103 => SmbError::NotADirectory { path, status: st },
        0xC000_0035 => SmbError::AlreadyExists { path, status: st },
        0xC000_0101 => SmbError::DirectoryNotEmpty { path, status: st },
        // NETWORK_NAME_DELETED, USER_SESSION_DELETED, NETWORK_SESSION_EXPIRED,
        // CONNECTION_DISCONNECTED, CONNECTION_RESET
        0xC000_00C9 | 0xC000_0203 | 0xC000_035C | 0xC000_020C | 0xC000_020D => {
            SmbError::ConnectionLost { detail, status: st }
        }
        _ => SmbError::Other { detail, status: st },
    }
}

/// Finds the last `0x` + hex number in a message (the library sometimes flattens errors into
/// strings, e.g. for reads and writes).
fn status_in_text(text: &str) -> Option<u32> {
    let mut found = None;
    let bytes = text.as_bytes();
    let mut i = 0;
    while i + 2 < bytes.len() {
        if bytes[i] == b'0' && (bytes[i + 1] == b'x' || bytes[i + 1] == b'X') {
            let start = i + 2;
            let mut end = start;
            while end < bytes.len() && bytes[end].is_ascii_hexdigit() {
                end += 1;
            }
            if end - start == 8 {
                found = u32::from_str_radix(&text[start..end], 16).ok();
            }
            i = end;
        } else {
            i += 1;
        }
    }
    found.filter(|s| *s & 0xC000_0000 == 0xC000_0000)
}

fn io_is_connection(kind: std::io::ErrorKind) -> bool {
    use std::io::ErrorKind::*;
    matches!(kind, ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof | NotConnected | TimedOut)
}

/// A library message fit for a job log line: the library's parse errors span many lines with a
/// backtrace in terminal colours; keep the first line, without escape sequences, at most 300
/// characters.
fn tidy(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters... final byte in @..~
            if chars.peek() == Some(&'[') {
                chars.next();
                for f in chars.by_ref() {
                    if ('@'..='~').contains(&f) {
                        break;
                    }
                }
            }
            continue;
        }
        if c == '\n' {
            break;
        }
        out.push(c);
    }
    let out = out.trim_end();
    match out.char_indices().nth(300) {
        Some((i, _)) => format!("{}…", &out[..i]),
        None => out.to_string(),
    }
}

/// Classifies a library error raised while operating on `path` of an established connection.
pub(crate) fn classify(err: smb::Error, path: &str) -> SmbError {
    use smb::Error as E;
    let raw = err.to_string();
    let detail = tidy(&raw);
    match err {
        E::ReceivedErrorMessage(status, _) | E::UnexpectedMessageStatus(status) => from_status(status, path, detail),
        E::ConnectionStopped | E::OperationTimeout(..) | E::TransportError(_) => {
            SmbError::ConnectionLost { detail, status: None }
        }
        E::IoError(e) => classify_io(e, path),
        E::MissingPermissions(_) => SmbError::AccessDenied { path: path.to_string(), status: None },
        E::SspiError(_) => SmbError::AuthFailed { status: None },
        E::TranformFailed(_) | E::SignatureVerificationFailed => SmbError::ConnectionLost { detail, status: None },
        E::AcquireError(_) | E::LockError | E::JoinError(_) | E::MessageProcessingError(_) => {
            SmbError::ConnectionLost { detail, status: None }
        }
        _ => match status_in_text(&raw) {
            Some(s) => from_status(s, path, detail),
            None => SmbError::Other { detail, status: None },
        },
    }
}

/// Classifies an `std::io::Error` from the library's read/write calls.
pub(crate) fn classify_io(e: std::io::Error, path: &str) -> SmbError {
    let raw = e.to_string();
    let detail = tidy(&raw);
    if let Some(s) = status_in_text(&raw) {
        return from_status(s, path, detail);
    }
    if io_is_connection(e.kind())
        || raw.contains("stopped")
        || raw.contains("Not connected")
        || raw.contains("Transport error")
        || raw.contains("timed out")
        // The library's connection worker is gone (reset, closed), or a response could not be
        // decrypted or failed its signature check: this connection is not to be trusted.
        || raw.contains("Message processing failed")
        || raw.contains("Unable to transform message")
    {
        return SmbError::ConnectionLost { detail, status: None };
    }
    if e.kind() == std::io::ErrorKind::PermissionDenied {
        return SmbError::AccessDenied { path: path.to_string(), status: None };
    }
    SmbError::Other { detail, status: None }
}

/// Classifies a failure while connecting (before any share operation): transport failures
/// there mean the server is unreachable.
pub(crate) fn classify_connect(err: smb::Error, share: &str) -> SmbError {
    match err {
        smb::Error::TransportError(t) => SmbError::Unreachable { detail: t.to_string(), status: None },
        smb::Error::IoError(e) => SmbError::Unreachable { detail: e.to_string(), status: None },
        smb::Error::OperationTimeout(..) => {
            SmbError::Unreachable { detail: "timed out during negotiation".into(), status: None }
        }
        other => classify(other, share),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_status_in_flattened_library_messages() {
        assert_eq!(
            status_in_text("Server returned an error message with status: Access Denied (0xc0000022)."),
            Some(0xC000_0022)
        );
        assert_eq!(status_in_text("no status 0x12"), None);
    }

    #[test]
    fn a_dead_connection_worker_or_a_bad_signature_in_a_flattened_io_error_is_a_lost_connection() {
        for text in [
            "Message processing failed. Failed to send message to worker!",
            "Unable to transform message: Failed to transform incoming message: SignVerify - Failed to verify incoming message!",
        ] {
            let e = classify_io(std::io::Error::other(text), "a.bin");
            assert!(e.is_connection_lost(), "{text}: {e:?}");
        }
        assert!(!classify_io(std::io::Error::other("disk quota"), "a.bin").is_connection_lost());
    }

    #[test]
    fn codes_are_stable() {
        assert_eq!(from_status(0xC000_006D, "", String::new()).code(), "CONNECTOR_AUTH_FAILED");
        assert_eq!(SmbError::Unreachable { detail: String::new(), status: None }.code(), "CONNECTOR_UNREACHABLE");
        let e = from_status(0xC000_0043, "a/b", String::new());
        assert!(matches!(e, SmbError::SharingViolation { .. }));
        assert_eq!(e.nt_status(), Some(NtStatus::SHARING_VIOLATION));
        assert!(e.to_string().contains("0xC0000043"));
    }

    #[test]
    fn library_details_are_one_clean_line() {
        let raw = "\u{1b}[1mError\u{1b}[0m: bad revision 3 at 0x14\n  at smb_dtyp::ACL\n\u{1b}[31m backtrace\u{1b}[0m";
        assert_eq!(tidy(raw), "Error: bad revision 3 at 0x14");
        assert_eq!(tidy(&"x".repeat(400)).chars().count(), 301);
        assert_eq!(tidy("plain"), "plain");
        assert_eq!(SmbError::rpc("bind refused").code(), "SMB_RPC_FAILED");
    }
}
