//! The harness starts a real smbd that smbclient can use, side by side and across restarts.

use std::process::Command;

use samba_harness::{SambaServer, TestUser};

fn smbclient_ls(s: &SambaServer, user: TestUser) -> std::process::Output {
    let c = s.user(user);
    Command::new("smbclient")
        .arg("-p")
        .arg(s.port().to_string())
        .arg(format!("//{}/{}", s.host(), s.share_name()))
        .arg("-U")
        .arg(format!("{}\\{}%{}", c.domain, c.user, c.password))
        .args(["-c", "ls"])
        .output()
        .unwrap()
}

#[test]
fn starts_and_smbclient_lists_files_prepared_on_disk() {
    let s = SambaServer::start().unwrap();
    std::fs::write(s.share_dir().join("hello.txt"), b"hi").unwrap();
    for u in TestUser::ALL {
        let out = smbclient_ls(&s, u);
        assert!(out.status.success(), "{u:?}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).contains("hello.txt"));
    }
    let (domain, user, _) = s.service_account();
    assert_eq!((domain.as_str(), user.as_str()), ("CORP", "scaidrive-svc"));
    assert!(!format!("{:?}", s.user(TestUser::Alice)).contains(TestUser::Alice.password()));
}

#[test]
fn two_instances_run_side_by_side_with_custom_share_names() {
    let a = SambaServer::builder().share_name("Alpha").start().unwrap();
    let b = SambaServer::builder().share_name("Beta").start().unwrap();
    assert_ne!(a.port(), b.port());
    assert_ne!(a.share_dir(), b.share_dir());
    assert!(smbclient_ls(&a, TestUser::Bob).status.success());
    assert!(smbclient_ls(&b, TestUser::Bob).status.success());
}

#[test]
fn stop_refuses_connections_and_restart_keeps_the_port() {
    let mut s = SambaServer::start().unwrap();
    let port = s.port();
    s.stop();
    assert!(!s.is_running());
    assert!(std::net::TcpStream::connect(s.addr()).is_err());
    s.restart().unwrap();
    assert_eq!(s.port(), port);
    assert!(smbclient_ls(&s, TestUser::ServiceAccount).status.success());
}

#[test]
fn read_only_share_refuses_writes() {
    let mut s = SambaServer::start().unwrap();
    s.set_read_only(true).unwrap();
    let c = s.user(TestUser::ServiceAccount);
    let out = Command::new("smbclient")
        .arg("-p")
        .arg(s.port().to_string())
        .arg(format!("//127.0.0.1/{}", s.share_name()))
        .arg("-U")
        .arg(format!("{}\\{}%{}", c.domain, c.user, c.password))
        .args(["-c", "mkdir newdir"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("NT_STATUS_ACCESS_DENIED") || text.contains("NT_STATUS_MEDIA_WRITE_PROTECTED"), "{text}");
    assert!(!s.share_dir().join("newdir").exists());
}

#[test]
fn paused_server_accepts_tcp_but_does_not_answer_until_resumed() {
    let s = SambaServer::start().unwrap();
    s.pause().unwrap();
    let c = s.user(TestUser::Bob);
    let out = Command::new("smbclient")
        .arg("-p")
        .arg(s.port().to_string())
        .arg(format!("//127.0.0.1/{}", s.share_name()))
        .arg("-U")
        .arg(format!("{}\\{}%{}", c.domain, c.user, c.password))
        .args(["-t", "2", "-c", "ls"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    s.resume().unwrap();
    assert!(smbclient_ls(&s, TestUser::Bob).status.success());
}
