//! Connectivity tests: resolve, connect, negotiate, authenticate, connect to the share, check
//! that `base_path` is a folder and, when asked, that the service account may write there
//! (create and delete a temporary file). The answer is a `v1::TestConnectionResult`.
//!
//! Must never put the password in a message.

use proto::v1;
use smb_layer::{SmbClient, SmbConfig, SmbError};

/// Codes of a failed test (`TestConnectionError.code`).
pub mod codes {
    /// Credentials refused, account locked or disabled.
    pub const AUTH_FAILED: &str = "CONNECTOR_AUTH_FAILED";
    /// DNS, TCP, firewall.
    pub const UNREACHABLE: &str = "CONNECTOR_UNREACHABLE";
    /// No such share.
    pub const SHARE_NOT_FOUND: &str = "CONNECTOR_SHARE_NOT_FOUND";
    /// `base_path` missing or not a folder.
    pub const PATH_NOT_FOUND: &str = "CONNECTOR_PATH_NOT_FOUND";
    /// The account may not read or write where it must.
    pub const ACCESS_DENIED: &str = "CONNECTOR_ACCESS_DENIED";
    /// The server stopped answering.
    pub const TIMEOUT: &str = "CONNECTOR_TIMEOUT";
    /// Anything else the server or the protocol did.
    pub const PROTOCOL_ERROR: &str = "CONNECTOR_PROTOCOL_ERROR";
}

/// `DOMAIN\user`, or `user` when the domain is empty.
pub fn account(domain: &str, username: &str) -> String {
    if domain.is_empty() {
        username.to_string()
    } else {
        format!("{domain}\\{username}")
    }
}

/// `Connected to <host>\<Share> as <DOMAIN>\<user>`.
pub fn success_message(host: &str, share: &str, domain: &str, username: &str) -> String {
    format!("Connected to {host}\\{share} as {}", account(domain, username))
}

/// Which step failed; decides the code of a "not found" or "access denied".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Connect, negotiate, authenticate, tree-connect.
    Connect,
    /// Stat of `base_path`.
    BasePath,
    /// Writing the probe file.
    Write,
}

/// The test error for an SMB failure at `step`.
pub fn error_for(err: &SmbError, step: Step, endpoint: &v1::SmbEndpoint, who: &str) -> v1::TestConnectionError {
    let host = &endpoint.server_host;
    let share = &endpoint.share_name;
    let base = if endpoint.base_path.is_empty() { "/".to_string() } else { endpoint.base_path.clone() };
    let (code, message) = match err {
        SmbError::AuthFailed { .. } => {
            (codes::AUTH_FAILED, format!("The server {host} refused the credentials of {who}"))
        }
        SmbError::Unreachable { detail, .. } => {
            (codes::UNREACHABLE, format!("Cannot reach {host}:{}: {detail}", endpoint.server_port))
        }
        SmbError::ShareNotFound { .. } => {
            (codes::SHARE_NOT_FOUND, format!("The share {share} does not exist on {host}"))
        }
        SmbError::PathNotFound { .. } | SmbError::NotADirectory { .. } if step != Step::Write => {
            (codes::PATH_NOT_FOUND, format!("The base path {base} does not exist in {host}\\{share}"))
        }
        SmbError::AccessDenied { .. } if step == Step::Write => {
            (codes::ACCESS_DENIED, format!("{who} may not write under {base} in {host}\\{share}"))
        }
        SmbError::AccessDenied { .. } => {
            (codes::ACCESS_DENIED, format!("{who} may not access {base} in {host}\\{share}"))
        }
        SmbError::ConnectionLost { detail, .. } if step == Step::Connect => {
            (codes::UNREACHABLE, format!("The connection to {host}:{} failed: {detail}", endpoint.server_port))
        }
        SmbError::ConnectionLost { detail, .. } => (codes::TIMEOUT, format!("{host} stopped answering: {detail}")),
        other => (codes::PROTOCOL_ERROR, format!("SMB error talking to {host}\\{share}: {other}")),
    };
    v1::TestConnectionError { code: code.to_string(), nt_status: err.nt_status().map(|s| s.0), message }
}

fn failed(error: v1::TestConnectionError) -> v1::TestConnectionResult {
    v1::TestConnectionResult { success: false, message: error.message.clone(), error: Some(error) }
}

/// The SMB configuration of an endpoint and credentials.
pub fn smb_config(endpoint: &v1::SmbEndpoint, creds: &v1::SmbCredentials, timeouts: &smb_layer::Timeouts) -> SmbConfig {
    let port = if endpoint.server_port == 0 { 445 } else { endpoint.server_port.min(65535) as u16 };
    let mut cfg = SmbConfig::new(
        endpoint.server_host.clone(),
        port,
        creds.domain.clone(),
        creds.username.clone(),
        creds.password.clone(),
        endpoint.share_name.clone(),
    );
    cfg.timeouts = timeouts.clone();
    cfg
}

/// Runs a connectivity test. Never fails: every problem is an answer.
pub async fn test_connection(
    endpoint: &v1::SmbEndpoint,
    creds: &v1::SmbCredentials,
    check_write: bool,
    timeouts: &smb_layer::Timeouts,
) -> v1::TestConnectionResult {
    let who = account(&creds.domain, &creds.username);
    let client = match SmbClient::connect(smb_config(endpoint, creds, timeouts)).await {
        Ok(c) => c,
        Err(e) => return failed(error_for(&e, Step::Connect, endpoint, &who)),
    };
    let result = probe(&client, endpoint, check_write, &who).await;
    client.close().await;
    match result {
        Ok(()) => v1::TestConnectionResult {
            success: true,
            message: success_message(&endpoint.server_host, &endpoint.share_name, &creds.domain, &creds.username),
            error: None,
        },
        Err(e) => failed(e),
    }
}

async fn probe(
    client: &SmbClient,
    endpoint: &v1::SmbEndpoint,
    check_write: bool,
    who: &str,
) -> Result<(), v1::TestConnectionError> {
    let base = crate::convert::SmbRoot::new(&endpoint.base_path);
    let st = client.stat(base.as_str()).await.map_err(|e| error_for(&e, Step::BasePath, endpoint, who))?;
    if !st.is_dir {
        let e = SmbError::NotADirectory { path: base.as_str().to_string(), status: None };
        let mut err = error_for(&e, Step::BasePath, endpoint, who);
        err.message = format!(
            "The base path {} in {}\\{} is a file, not a folder",
            endpoint.base_path, endpoint.server_host, endpoint.share_name
        );
        return Err(err);
    }
    if check_write {
        let name = format!(".scaidrive-write-test-{}.tmp", ulid::Ulid::new().to_string().to_lowercase());
        let path = smb_layer::path::join(base.as_str(), &name);
        client
            .write_all(&path, &b"scaidrive connectivity test"[..])
            .await
            .map_err(|e| error_for(&e, Step::Write, endpoint, who))?;
        client.delete_file(&path).await.map_err(|e| error_for(&e, Step::Write, endpoint, who))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use smb_layer::NtStatus;

    fn ep() -> v1::SmbEndpoint {
        v1::SmbEndpoint {
            server_host: "fs01".into(),
            server_port: 445,
            share_name: "Finance".into(),
            base_path: "2026/Q1".into(),
        }
    }

    #[test]
    fn success_message_names_host_share_and_account() {
        assert_eq!(
            success_message("fs01.corp.example.com", "Finance", "CORP", "scaidrive-svc"),
            "Connected to fs01.corp.example.com\\Finance as CORP\\scaidrive-svc"
        );
        assert_eq!(success_message("10.0.0.5", "Share", "", "svc"), "Connected to 10.0.0.5\\Share as svc");
    }

    #[test]
    fn smb_errors_map_to_stable_codes_with_their_nt_status() {
        let who = "CORP\\svc";
        let auth =
            error_for(&SmbError::AuthFailed { status: Some(NtStatus::LOGON_FAILURE) }, Step::Connect, &ep(), who);
        assert_eq!((auth.code.as_str(), auth.nt_status), (codes::AUTH_FAILED, Some(0xC000_006D)));
        assert!(auth.message.contains("CORP\\svc"));
        let un = error_for(
            &SmbError::Unreachable { detail: "connection refused".into(), status: None },
            Step::Connect,
            &ep(),
            who,
        );
        assert_eq!((un.code.as_str(), un.nt_status), (codes::UNREACHABLE, None));
        let share = error_for(
            &SmbError::ShareNotFound { share: "Finance".into(), status: Some(NtStatus::BAD_NETWORK_NAME) },
            Step::Connect,
            &ep(),
            who,
        );
        assert_eq!((share.code.as_str(), share.nt_status), (codes::SHARE_NOT_FOUND, Some(0xC000_00CC)));
        let path = error_for(
            &SmbError::PathNotFound { path: "2026/Q1".into(), status: Some(NtStatus::OBJECT_NAME_NOT_FOUND) },
            Step::BasePath,
            &ep(),
            who,
        );
        assert_eq!(path.code, codes::PATH_NOT_FOUND);
        assert!(path.message.contains("2026/Q1"));
        let denied = error_for(
            &SmbError::AccessDenied { path: "x".into(), status: Some(NtStatus::ACCESS_DENIED) },
            Step::Write,
            &ep(),
            who,
        );
        assert_eq!((denied.code.as_str(), denied.nt_status), (codes::ACCESS_DENIED, Some(0xC000_0022)));
        let lost = error_for(
            &SmbError::ConnectionLost { detail: "timed out".into(), status: None },
            Step::BasePath,
            &ep(),
            who,
        );
        assert_eq!(lost.code, codes::TIMEOUT);
    }
}
