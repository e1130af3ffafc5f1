//! The connectivity test against a real, throwaway Samba (samba-harness; needs root and smbd).

use proto::v1;
use samba_harness::SambaServer;
use sync_worker::conntest::{codes, test_connection};

fn endpoint(s: &SambaServer, share: &str, base: &str) -> v1::SmbEndpoint {
    v1::SmbEndpoint {
        server_host: s.host().into(),
        server_port: s.port() as u32,
        share_name: share.into(),
        base_path: base.into(),
    }
}

fn creds(s: &SambaServer, password: Option<&str>) -> v1::SmbCredentials {
    let (domain, username, pw) = s.service_account();
    v1::SmbCredentials { domain, username, password: password.map(str::to_string).unwrap_or(pw) }
}

fn timeouts() -> smb_layer::Timeouts {
    smb_layer::Timeouts {
        connect: std::time::Duration::from_secs(10),
        request: std::time::Duration::from_secs(20),
        list_dir: std::time::Duration::from_secs(60),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connectivity_test_answers_each_failure_with_its_code() {
    let s = tokio::task::spawn_blocking(|| SambaServer::start().expect("starting samba")).await.unwrap();
    std::fs::create_dir_all(s.share_dir().join("Finance/2026")).unwrap();
    std::fs::write(s.share_dir().join("Finance/file.txt"), b"x").unwrap();
    s.give_to_service_account(s.share_dir()).unwrap();
    let share = s.share_name().to_string();

    // OK, with the write check (a probe file is created and removed).
    let ok = test_connection(&endpoint(&s, &share, "Finance/2026"), &creds(&s, None), true, &timeouts()).await;
    assert!(ok.success, "{ok:?}");
    assert_eq!(ok.message, format!("Connected to 127.0.0.1\\{share} as CORP\\scaidrive-svc"));
    assert!(ok.error.is_none());
    assert_eq!(std::fs::read_dir(s.share_dir().join("Finance/2026")).unwrap().count(), 0, "probe file left behind");

    // Wrong password.
    let r = test_connection(&endpoint(&s, &share, ""), &creds(&s, Some("not-the-password")), false, &timeouts()).await;
    let e = r.error.expect("an error");
    assert!(!r.success);
    assert_eq!((e.code.as_str(), e.nt_status), (codes::AUTH_FAILED, Some(0xC000_006D)));
    assert!(!r.message.contains("not-the-password") && !e.message.contains("not-the-password"));

    // Unknown share.
    let e =
        test_connection(&endpoint(&s, "NoSuchShare", ""), &creds(&s, None), false, &timeouts()).await.error.unwrap();
    assert_eq!(e.code, codes::SHARE_NOT_FOUND, "{e:?}");
    assert_eq!(e.nt_status, Some(0xC000_00CC));

    // Missing base path, and a base path that is a file.
    let e = test_connection(&endpoint(&s, &share, "Finance/missing"), &creds(&s, None), false, &timeouts())
        .await
        .error
        .unwrap();
    assert_eq!(e.code, codes::PATH_NOT_FOUND, "{e:?}");
    let e = test_connection(&endpoint(&s, &share, "Finance/file.txt"), &creds(&s, None), false, &timeouts())
        .await
        .error
        .unwrap();
    assert_eq!(e.code, codes::PATH_NOT_FOUND, "{e:?}");

    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut ep = endpoint(&s, &share, "");
    ep.server_port = port as u32;
    let e = test_connection(&ep, &creds(&s, None), false, &timeouts()).await.error.unwrap();
    assert_eq!((e.code.as_str(), e.nt_status), (codes::UNREACHABLE, None), "{e:?}");
}
