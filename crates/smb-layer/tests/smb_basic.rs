//! The SMB layer against a real Samba: connect errors, listings, content, metadata, ACLs,
//! change notify, reconnect.

mod common;

use std::time::Duration;

use common::*;
use futures::StreamExt;
use samba_harness::TestUser;
use smb_layer::{
    access, Ace, AceFlags, AceKind, ChangeKind, FileAttributes, FileTime, NtStatus, SecurityDescriptor, SetTimes,
    SmbClient, SmbError, WalkOptions,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connects_and_lists_files_prepared_on_disk() {
    let s = samba();
    std::fs::create_dir_all(s.share_dir().join("docs")).unwrap();
    std::fs::write(s.share_dir().join("docs/a.txt"), b"hello").unwrap();
    let c = client(&s).await;
    let root = c.list_dir("").await.unwrap();
    assert_eq!(root.len(), 1);
    assert!(root[0].is_dir && root[0].name == "docs");
    let docs = c.list_dir("/docs/").await.unwrap();
    assert_eq!(docs.len(), 1);
    assert_eq!((docs[0].name.as_str(), docs[0].path.as_str(), docs[0].size), ("a.txt", "docs/a.txt", 5));
    assert!(docs[0].file_id != 0 && !docs[0].last_write_time.is_zero());
    assert!(!format!("{c:?}").contains(s.user(TestUser::ServiceAccount).password.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_auth_failed_with_logon_failure_status() {
    let s = samba();
    let mut cfg = config(&s);
    cfg.password = "definitely-wrong-pw".into();
    assert_eq!(format!("{:?}", cfg.password), "***");
    assert!(!format!("{cfg:?}").contains("definitely-wrong-pw"));
    let err = SmbClient::connect(cfg).await.unwrap_err();
    assert!(matches!(err, SmbError::AuthFailed { .. }), "{err:?}");
    assert_eq!(err.code(), "CONNECTOR_AUTH_FAILED");
    assert_eq!(err.nt_status(), Some(NtStatus::LOGON_FAILURE));
    assert!(!err.to_string().contains("definitely-wrong-pw"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_port_is_unreachable() {
    let s = samba();
    let mut cfg = config(&s);
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    cfg.port = l.local_addr().unwrap().port();
    drop(l);
    let err = SmbClient::connect(cfg).await.unwrap_err();
    assert!(matches!(err, SmbError::Unreachable { .. }), "{err:?}");
    assert_eq!(err.code(), "CONNECTOR_UNREACHABLE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_share_is_share_not_found() {
    let s = samba();
    let mut cfg = config(&s);
    cfg.share = "NoSuchShare".into();
    let err = SmbClient::connect(cfg).await.unwrap_err();
    assert!(matches!(err, SmbError::ShareNotFound { .. }), "{err:?}");
    assert_eq!(err.nt_status(), Some(NtStatus::BAD_NETWORK_NAME));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_ids_survive_rename_and_move() {
    let s = samba();
    let c = client(&s).await;
    c.mkdir("a").await.unwrap();
    c.mkdir("b").await.unwrap();
    c.write_all("a/f.txt", &b"content"[..]).await.unwrap();
    let id = c.stat("a/f.txt").await.unwrap().file_id;
    let listed = c.list_dir("a").await.unwrap();
    assert_eq!(listed[0].file_id, id);
    c.rename("a/f.txt", "a/g.txt", false).await.unwrap();
    assert_eq!(c.stat("a/g.txt").await.unwrap().file_id, id);
    c.rename("a/g.txt", "b/h.txt", false).await.unwrap();
    let moved = c.list_dir("b").await.unwrap();
    assert_eq!((moved[0].name.as_str(), moved[0].file_id), ("h.txt", id));
    let dir_id = c.stat("b").await.unwrap().file_id;
    c.rename("b", "a/b2", false).await.unwrap();
    assert_eq!(c.stat("a/b2").await.unwrap().file_id, dir_id);
    assert_eq!(c.stat("a/b2/h.txt").await.unwrap().file_id, id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn times_and_attributes_set_through_smb_read_back() {
    let s = samba();
    let c = client(&s).await;
    c.write_all("t.txt", &b"x"[..]).await.unwrap();
    // 2021-03-04 05:06:07.1234567 UTC as FILETIME: 100 ns precision must survive.
    let t = FileTime(132_593_487_671_234_567);
    let created = FileTime(132_000_000_000_000_001);
    c.set_times("t.txt", SetTimes { last_write: Some(t), creation: Some(created), ..Default::default() })
        .await
        .unwrap();
    let st = c.stat("t.txt").await.unwrap();
    assert_eq!(st.last_write_time, t);
    assert_eq!(st.creation_time, created);
    let listed = c.list_dir("").await.unwrap();
    assert_eq!(listed[0].last_write_time, t);

    c.set_attributes("t.txt", FileAttributes::HIDDEN | FileAttributes::SYSTEM).await.unwrap();
    let a = c.stat("t.txt").await.unwrap().attributes;
    assert!(a.is_hidden() && a.is_system() && !a.is_readonly(), "{a:?}");
    let listed = c.list_dir("").await.unwrap();
    assert!(listed[0].attributes.is_hidden() && listed[0].attributes.is_system());

    c.set_attributes("t.txt", FileAttributes::READONLY).await.unwrap();
    let a = c.stat("t.txt").await.unwrap().attributes;
    assert!(a.is_readonly() && !a.is_hidden(), "{a:?}");
    let err = c.delete_file("t.txt").await.unwrap_err();
    assert!(matches!(err, SmbError::AccessDenied { .. }), "{err:?}");
    c.set_attributes("t.txt", FileAttributes::empty()).await.unwrap();
    c.delete_file("t.txt").await.unwrap();
    // Setting one time leaves the others alone.
    c.mkdir("d").await.unwrap();
    c.set_times("d", SetTimes { last_write: Some(t), ..Default::default() }).await.unwrap();
    let d = c.stat("d").await.unwrap();
    assert!(d.is_dir && d.last_write_time == t && d.creation_time != t);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_round_trips_including_empty_unicode_deep_and_multi_chunk() {
    let s = samba();
    let c = client(&s).await;
    // empty
    assert_eq!(c.write_all("empty.bin", Vec::new()).await.unwrap(), 0);
    assert_eq!(c.stat("empty.bin").await.unwrap().size, 0);
    assert!(c.read_to_vec("empty.bin").await.unwrap().is_empty());
    // unicode name
    let name = "Ünïcödé 日本語 😀 ß.txt";
    c.write_all(name, "grüße".as_bytes().to_vec()).await.unwrap();
    assert_eq!(c.read_to_vec(name).await.unwrap(), "grüße".as_bytes());
    assert!(s.share_dir().join(name).exists());
    assert!(c.list_dir("").await.unwrap().iter().any(|e| e.name == name));
    // deep path
    let deep: String = (0..25).map(|i| format!("level{i}")).collect::<Vec<_>>().join("/");
    c.mkdir_all(&deep).await.unwrap();
    let deep_file = format!("{deep}/leaf.txt");
    c.write_all(&deep_file, &b"deep"[..]).await.unwrap();
    assert_eq!(c.read_to_vec(&deep_file).await.unwrap(), b"deep");
    // several chunks, not a multiple of the chunk size, with writes in flight
    let data = pseudo_random(7, 9 * 1024 * 1024 + 12345);
    assert_eq!(c.write_all("big.bin", data.clone()).await.unwrap(), data.len() as u64);
    assert_eq!(std::fs::read(s.share_dir().join("big.bin")).unwrap(), data);
    assert_eq!(c.read_to_vec("big.bin").await.unwrap(), data);
    // overwrite with something shorter truncates
    c.write_all("big.bin", &b"short"[..]).await.unwrap();
    assert_eq!(c.read_to_vec("big.bin").await.unwrap(), b"short");
    // from an AsyncRead
    let src = pseudo_random(8, 3 * 1024 * 1024 + 1);
    let n = c.write_from_reader("reader.bin", std::io::Cursor::new(src.clone())).await.unwrap();
    assert_eq!(n, src.len() as u64);
    assert_eq!(c.read_to_vec("reader.bin").await.unwrap(), src);
    // a file changed on disk after a first read is read at its new size
    std::fs::write(s.share_dir().join("reader.bin"), b"changed on disk").unwrap();
    assert_eq!(c.read_to_vec("reader.bin").await.unwrap(), b"changed on disk");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rename_delete_mkdir_report_clear_errors() {
    let s = samba();
    let c = client(&s).await;
    c.mkdir("dir").await.unwrap();
    assert!(matches!(c.mkdir("dir").await.unwrap_err(), SmbError::AlreadyExists { .. }));
    assert!(matches!(c.mkdir("missing/child").await.unwrap_err(), SmbError::PathNotFound { .. }));
    c.write_all("dir/one.txt", &b"1"[..]).await.unwrap();
    c.write_all("dir/two.txt", &b"2"[..]).await.unwrap();
    let e = c.rename("dir/one.txt", "dir/two.txt", false).await.unwrap_err();
    assert!(matches!(e, SmbError::AlreadyExists { .. }), "{e:?}");
    c.rename("dir/one.txt", "dir/two.txt", true).await.unwrap();
    assert_eq!(c.read_to_vec("dir/two.txt").await.unwrap(), b"1");
    assert!(!c.exists("dir/one.txt").await.unwrap());
    let e = c.delete_dir("dir").await.unwrap_err();
    assert!(matches!(e, SmbError::DirectoryNotEmpty { .. }), "{e:?}");
    let e = c.list_dir("dir/two.txt").await.unwrap_err();
    assert!(matches!(e, SmbError::NotADirectory { .. }), "{e:?}");
    let e = c.delete_file("dir/nothing.txt").await.unwrap_err();
    assert!(matches!(e, SmbError::PathNotFound { .. }), "{e:?}");
    assert_eq!(e.code(), "SMB_PATH_NOT_FOUND");
    c.delete_file("dir/two.txt").await.unwrap();
    c.delete_dir("dir").await.unwrap();
    assert!(c.list_dir("").await.unwrap().is_empty());
    assert!(!s.share_dir().join("dir").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_descriptor_round_trips_and_is_enforced() {
    let s = samba();
    let c = client(&s).await;
    c.mkdir("secret").await.unwrap();
    let before = c.read_security_descriptor("secret").await.unwrap();
    let owner = before.owner.clone().expect("owner");
    assert!(owner.starts_with("S-1-5-21-") || owner.starts_with("S-1-22-"), "{owner}");
    assert!(before.dacl.as_ref().is_some_and(|d| !d.is_empty()), "{before:?}");

    let inherit = AceFlags::OBJECT_INHERIT | AceFlags::CONTAINER_INHERIT;
    let wanted = vec![
        Ace { kind: AceKind::Allow, flags: inherit, access_mask: access::FULL_CONTROL, sid: owner.clone() },
        Ace { kind: AceKind::Deny, flags: AceFlags(0), access_mask: 0x0000_0002, sid: "S-1-5-32-546".into() },
        Ace { kind: AceKind::Allow, flags: inherit, access_mask: access::READ_EXECUTE, sid: "S-1-1-0".into() },
    ];
    let sd = SecurityDescriptor {
        owner: None,
        group: None,
        dacl: Some(wanted.clone()),
        control: smb_layer::SdControl { dacl_protected: true, dacl_present: true, ..Default::default() },
    };
    c.write_security_descriptor("secret", &sd).await.unwrap();
    let after = c.read_security_descriptor("secret").await.unwrap();
    assert!(after.control.dacl_protected, "{after:?}");
    assert_eq!(after.owner.as_deref(), Some(owner.as_str()));
    let dacl = after.dacl.clone().unwrap();
    for w in &wanted {
        assert!(
            dacl.iter().any(|a| a.kind == w.kind
                && a.sid == w.sid
                && a.access_mask == w.access_mask
                && a.flags.0 & 0x0f == w.flags.0),
            "missing {w:?} in {dacl:?}"
        );
    }
    // A new file inherits the Everyone read ACE (Samba marks it inherited only when the
    // parent's DACL is auto-inherited, so the flag is not asserted).
    c.write_all("secret/f.txt", &b"x"[..]).await.unwrap();
    let child = c.read_security_descriptor("secret/f.txt").await.unwrap();
    let everyone = child.dacl.unwrap().into_iter().find(|a| a.sid == "S-1-1-0").expect("inherited ACE");
    assert_eq!(everyone.access_mask, access::READ_EXECUTE, "{everyone:?}");
    assert!(!everyone.flags.contains(AceFlags::INHERIT_ONLY));

    // Enforced: bob (only in Everyone) can read but not write.
    let bob = SmbClient::connect(config_for(&s, TestUser::Bob)).await.unwrap();
    assert_eq!(bob.read_to_vec("secret/f.txt").await.unwrap(), b"x");
    let e = bob.write_all("secret/new.txt", &b"y"[..]).await.unwrap_err();
    assert!(matches!(e, SmbError::AccessDenied { .. }), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_notify_sees_a_file_created_through_smb() {
    let s = samba();
    let c = client(&s).await;
    c.mkdir("watched").await.unwrap();
    c.mkdir("watched/sub").await.unwrap();
    let mut events = Box::pin(c.watch("", true).await.unwrap());
    // Let the first notify request reach the server.
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.write_all("watched/sub/new.txt", &b"n"[..]).await.unwrap();
    let found = tokio::time::timeout(Duration::from_secs(15), async {
        while let Some(ev) = events.next().await {
            let ev = ev.unwrap();
            if ev.path == "watched/sub/new.txt" && ev.kind == ChangeKind::Added {
                return true;
            }
        }
        false
    })
    .await
    .expect("no change event within 15 s");
    assert!(found);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_samba_mid_session_reconnects_on_the_next_operation() {
    let mut s = samba();
    let c = client(&s).await;
    c.write_all("keep.txt", &b"kept"[..]).await.unwrap();
    let before = c.connections_made();
    s.stop();
    // While the server is down: a clear error, no hang.
    let e = tokio::time::timeout(Duration::from_secs(60), c.stat("keep.txt")).await.expect("hung").unwrap_err();
    assert!(matches!(e, SmbError::ConnectionLost { .. } | SmbError::Unreachable { .. }), "{e:?}");
    s.restart().unwrap();
    // Idempotent operations reconnect transparently.
    assert_eq!(c.stat("keep.txt").await.unwrap().size, 4);
    assert_eq!(c.read_to_vec("keep.txt").await.unwrap(), b"kept");
    c.mkdir("after-restart").await.unwrap();
    assert!(c.connections_made() > before);
    // Restart again without an operation in between: the stale connection is detected.
    s.restart().unwrap();
    assert_eq!(c.list_dir("").await.unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn walk_yields_every_entry_and_skips_excluded_folders() {
    let s = samba();
    let root = s.share_dir();
    for d in 0..5 {
        for sd in 0..4 {
            let p = root.join(format!("d{d}/s{sd}"));
            std::fs::create_dir_all(&p).unwrap();
            for f in 0..10 {
                std::fs::write(p.join(format!("f{f}")), b"").unwrap();
            }
        }
    }
    std::fs::create_dir_all(root.join("node_modules/x")).unwrap();
    std::fs::write(root.join("node_modules/x/y"), b"").unwrap();
    let c = client(&s).await;
    let opts = WalkOptions {
        concurrency: 4,
        exclude: Some(std::sync::Arc::new(|e: &smb_layer::DirEntry| e.name == "node_modules")),
        ..Default::default()
    };
    let entries: Vec<_> = c.walk("", opts).collect().await;
    let entries: Vec<_> = entries.into_iter().map(|e| e.unwrap()).collect();
    assert_eq!(entries.len(), 5 + 5 * 4 + 5 * 4 * 10);
    assert!(entries.iter().all(|e| !e.path.starts_with("node_modules")));
    let mut ids: Vec<u64> = entries.iter().map(|e| e.file_id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), entries.len(), "file ids are unique");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_server_times_out_instead_of_hanging() {
    // Accepts TCP, never answers.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let _hold = tokio::spawn(async move {
        let mut keep = Vec::new();
        while let Ok((sock, _)) = l.accept().await {
            keep.push(sock);
        }
    });
    let s = samba();
    let mut cfg = config(&s);
    cfg.port = port;
    cfg.timeouts.connect = Duration::from_secs(2);
    let t = std::time::Instant::now();
    let err = SmbClient::connect(cfg).await.unwrap_err();
    assert!(matches!(err, SmbError::Unreachable { .. }), "{err:?}");
    assert!(t.elapsed() < Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_server_mid_session_fails_the_call_then_recovers() {
    let s = samba();
    let mut cfg = config(&s);
    cfg.timeouts.request = Duration::from_secs(2);
    cfg.timeouts.connect = Duration::from_secs(3);
    let c = SmbClient::connect(cfg).await.unwrap();
    c.write_all("x.txt", &b"x"[..]).await.unwrap();
    s.pause().unwrap();
    let t = std::time::Instant::now();
    let e = c.stat("x.txt").await.unwrap_err();
    assert!(matches!(e, SmbError::ConnectionLost { .. } | SmbError::Unreachable { .. }), "{e:?}");
    assert!(t.elapsed() < Duration::from_secs(15), "took {:?}", t.elapsed());
    s.resume().unwrap();
    assert_eq!(c.stat("x.txt").await.unwrap().size, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checked_read_gives_the_stat_of_its_handle_and_fails_if_the_file_changes_while_read() {
    let s = samba();
    let c = client(&s).await;
    let data = pseudo_random(11, 6 * 1024 * 1024 + 7);
    c.write_all("f.bin", data.clone()).await.unwrap();
    // Unchanged: the stat on the handle is the path's stat, and the stream ends cleanly.
    let (entry, stream) = c.read_checked("f.bin").await.unwrap();
    let stat = c.stat("f.bin").await.unwrap();
    assert_eq!(
        (entry.size, entry.file_id, entry.last_write_time, entry.change_time),
        (stat.size, stat.file_id, stat.last_write_time, stat.change_time)
    );
    let mut got = Vec::new();
    let mut stream = std::pin::pin!(stream);
    while let Some(b) = stream.next().await {
        got.extend_from_slice(&b.unwrap());
    }
    assert_eq!(got, data);
    // Written (same size) by someone else after the first chunk: the stream does not end
    // cleanly, whatever bytes it gave.
    let (_, stream) = c.read_checked("f.bin").await.unwrap();
    let mut stream = std::pin::pin!(stream);
    let first = stream.next().await.unwrap().unwrap();
    assert!(!first.is_empty());
    let other = client(&s).await;
    other.write_all("f.bin", pseudo_random(12, data.len())).await.unwrap();
    let mut last = Ok(());
    while let Some(b) = stream.next().await {
        if let Err(e) = b {
            last = Err(e);
        }
    }
    let e = last.expect_err("a file written while read must fail the stream");
    assert!(matches!(e, SmbError::ChangedWhileReading { .. }), "{e:?}");
    assert_eq!(e.code(), "SMB_CHANGED_DURING_READ");
    // Missing file: PathNotFound at open.
    assert!(matches!(c.read_checked("nope.bin").await, Err(SmbError::PathNotFound { .. })));
}

/// A TCP forwarder to `upstream` that resets its first connection once `cut_after` bytes
/// went from the client to the server; later connections pass untouched.
async fn resetting_proxy(upstream: u16, cut_after: u64) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut first = true;
        while let Ok((client, _)) = l.accept().await {
            let server = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await.unwrap();
            let limit = if first { Some(cut_after) } else { None };
            first = false;
            // Closing with linger 0 sends a reset instead of an orderly end (deprecated because a
            // non-zero linger blocks the thread on drop; zero does not).
            #[allow(deprecated)]
            client.set_linger(Some(Duration::ZERO)).unwrap();
            tokio::spawn(async move {
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let down = tokio::spawn(async move { tokio::io::copy(&mut sr, &mut cw).await });
                let mut sent = 0u64;
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = match cr.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if sw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    sent += n as u64;
                    if limit.is_some_and(|l| sent >= l) {
                        break; // the client sees its connection reset mid-transfer
                    }
                }
                down.abort();
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_whose_connection_is_reset_finishes_on_a_fresh_one() {
    let s = samba();
    let port = resetting_proxy(s.port(), 8 << 20).await;
    let mut cfg = config(&s);
    cfg.port = port;
    cfg.limits.connections = 1;
    let c = SmbClient::connect(cfg).await.unwrap();
    let data = pseudo_random(11, 48 << 20);
    let n = tokio::time::timeout(Duration::from_secs(120), c.write_all("reset.bin", data.clone()))
        .await
        .expect("the upload hung")
        .expect("the upload survives its connection's reset");
    assert_eq!(n, data.len() as u64);
    assert!(c.connections_made() > 1, "the reset connection was replaced");
    assert!(std::fs::read(s.share_dir().join("reset.bin")).unwrap() == data, "the file is whole and right");
}
