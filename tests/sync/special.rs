//! Items the sync must not follow or cannot reach: a symbolic link leading out of the share,
//! names that differ only in Unicode normalisation, files another SMB client holds open with
//! no sharing (held by a second, independent SMB client: Debian's python3-impacket).

use serde_json::json;

use crate::driver::{Conn, Env, Setup, TARGET};

on_both_setups!(a_symlink_out_of_the_share_is_never_followed);

async fn a_symlink_out_of_the_share_is_never_followed(setup: Setup) {
    let env = Env::start(setup).await;
    let secret = env.samba.root_dir().join("outside.txt");
    std::fs::write(&secret, b"outside the share").unwrap();
    env.write("plain.txt", b"plain");
    std::os::unix::fs::symlink(&secret, env.disk().join("link.txt")).unwrap();
    env.chown_all();
    let c = env.connector(json!({})).await;
    let job = env.sync_and_wait(&c).await;
    assert_eq!(job["status"], "completed", "the run goes on: {job:#}\n{}", env.logs());
    assert_eq!(env.download(env.must(&c, "plain.txt").await["id"].as_str().unwrap()).await, b"plain");
    if let Some(link) = env.target_item(&c, "link.txt").await {
        let body = env.download(link["id"].as_str().unwrap()).await;
        assert_ne!(body, b"outside the share", "the link was followed out of the share");
    }
    let tree = env.drive_tree(&c).await;
    assert!(tree.keys().all(|k| k == "plain.txt" || k == "link.txt"), "{tree:?}");
    env.finish().await;
}

on_both_setups!(names_that_differ_only_in_normalisation_never_mix);

/// Two names of one folder that differ only in Unicode normalisation (precomposed `é` and
/// `e` + combining accent, as a Mac writes it) are one name in ScaiDrive: the NFC spelling
/// syncs, the other is left alone on the file server with everything inside it, the job log
/// says so, and writes coming from ScaiDrive reach the synced twin only — every run alike.
async fn names_that_differ_only_in_normalisation_never_mix(setup: Setup) {
    let env = Env::start(setup).await;
    let (nfc_file, nfd_file) = ("caf\u{e9}.txt", "cafe\u{301}.txt");
    let (nfc_dir, nfd_dir) = ("R\u{e9}sum\u{e9}", "Re\u{301}sume\u{301}");
    env.write(nfc_file, b"precomposed");
    env.write(nfd_file, b"decomposed");
    env.write(&format!("{nfc_dir}/a.txt"), b"precomposed a");
    env.write(&format!("{nfd_dir}/a.txt"), b"decomposed a");
    env.write(&format!("{nfd_dir}/b.txt"), b"decomposed b");
    env.chown_all();
    let on_disk = |rel: &str| std::fs::read(env.disk().join(rel)).unwrap();
    let c = env.connector(json!({"sync_direction": "bidirectional"})).await;
    for run in 0..2 {
        let job = env.sync_ok(&c).await;
        let twins: Vec<&serde_json::Value> =
            job["events"].as_array().unwrap().iter().filter(|e| e["code"] == "NAME_NORMALIZATION_CONFLICT").collect();
        assert_eq!(twins.len(), 2, "run {run}: one warning per twin left alone: {job:#}");
        assert!(twins.iter().all(|e| e["level"] == "warning"), "{twins:#?}");
        assert_eq!(job["error_count"], 0, "a twin left alone is not a failure: {job:#}");
        let tree = env.drive_tree(&c).await;
        let names: Vec<&String> = tree.keys().collect();
        assert_eq!(
            names,
            [nfc_dir.to_string(), format!("{nfc_dir}/a.txt"), nfc_file.to_string()].iter().collect::<Vec<_>>(),
            "run {run}: the NFC twins only, nothing of the other folder"
        );
        assert_eq!(env.download(env.must(&c, nfc_file).await["id"].as_str().unwrap()).await, b"precomposed");
        let a = env.must(&c, &format!("{nfc_dir}/a.txt")).await;
        assert_eq!(env.download(a["id"].as_str().unwrap()).await, b"precomposed a");
    }
    // A new version written in ScaiDrive goes to the synced twin on the file server only.
    let (st, v) = env.api.upload(&c.share, &format!("{TARGET}/{nfc_file}"), b"edited in ScaiDrive".to_vec()).await;
    assert!(st.is_success(), "{v}");
    env.sync_ok(&c).await;
    assert_eq!(on_disk(nfc_file), b"edited in ScaiDrive");
    assert_eq!(on_disk(nfd_file), b"decomposed", "the other twin was written");
    assert_eq!(on_disk(&format!("{nfd_dir}/a.txt")), b"decomposed a");
    assert_eq!(on_disk(&format!("{nfd_dir}/b.txt")), b"decomposed b");
    assert_eq!(on_disk(&format!("{nfc_dir}/a.txt")), b"precomposed a");
    env.finish().await;
}

on_both_setups!(a_file_locked_by_another_client_fails_alone_and_syncs_once_released);

/// Holds `path` of the harness share open with no sharing (as an editor holding a document
/// does) through a second SMB client, until dropped.
struct ExclusiveOpen(std::process::Child);

const HOLD_OPEN: &str = r#"
import sys
from impacket.smbconnection import SMBConnection
port, share, domain, user, password, path = sys.argv[1:7]
c = SMBConnection("127.0.0.1", "127.0.0.1", sess_port=int(port))
c.login(user, password, domain)
tid = c.connectTree(share)
fid = c.openFile(tid, path.replace("/", "\\"), desiredAccess=0x80000000 | 0x40000000, shareMode=0)
print("held", flush=True)
sys.stdin.read()
c.closeFile(tid, fid)
"#;

impl ExclusiveOpen {
    fn hold(env: &Env, path: &str) -> ExclusiveOpen {
        use std::io::BufRead;
        let (domain, user, password) = env.samba.service_account();
        let mut child = std::process::Command::new("/usr/bin/python3")
            .args(["-c", HOLD_OPEN, &env.samba.port().to_string(), env.samba.share_name()])
            .args([&domain, &user, &password, path])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 with impacket (.ci/run installs python3-impacket)");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "held", "the second client could not open {path} exclusively");
        ExclusiveOpen(child)
    }
}

impl Drop for ExclusiveOpen {
    fn drop(&mut self) {
        drop(self.0.stdin.take());
        let _ = self.0.wait();
    }
}

/// A file changed on SMB that another client holds open with no sharing cannot be read, and one
/// changed in ScaiDrive cannot be replaced on SMB: each fails alone (`SMB_SHARING_VIOLATION` in
/// its file state), the rest of the run goes through, nothing is lost on either side, and the
/// next run once the files are released brings both over.
async fn a_file_locked_by_another_client_fails_alone_and_syncs_once_released(setup: Setup) {
    let env = Env::start(setup).await;
    env.write("free.txt", b"free v1");
    env.write("read-locked.docx", b"smb v1");
    env.write("write-locked.docx", b"both v1");
    env.chown_all();
    let c = env.connector(json!({"sync_direction": "bidirectional"})).await;
    env.sync_ok(&c).await;

    env.write("free.txt", b"free v2");
    env.write("read-locked.docx", b"smb v2, still open in an editor");
    let (st, v) = env.api.upload(&c.share, &format!("{TARGET}/write-locked.docx"), b"drive v2".to_vec()).await;
    assert!(st.is_success(), "{v}");
    let held = [ExclusiveOpen::hold(&env, "read-locked.docx"), ExclusiveOpen::hold(&env, "write-locked.docx")];

    let job = env.sync_and_wait(&c).await;
    assert_eq!(job["status"], "completed", "a locked file does not fail the run: {job:#}\n{}", env.logs());
    assert_eq!(job["error_count"], 2, "{job:#}");
    assert_eq!(content(&env, &c, "free.txt").await, b"free v2", "the rest of the run went through");
    assert_eq!(content(&env, &c, "read-locked.docx").await, b"smb v1", "ScaiDrive keeps the last good copy");
    assert_eq!(std::fs::read(env.disk().join("write-locked.docx")).unwrap(), b"both v1", "SMB untouched");
    assert_eq!(content(&env, &c, "write-locked.docx").await, b"drive v2", "the ScaiDrive edit is kept");
    for path in ["read-locked.docx", "write-locked.docx"] {
        let states = env.file_states(&c, &format!("&path_prefix={path}")).await;
        assert_eq!(states.len(), 1, "{states:#?}");
        assert_eq!(states[0]["status"], "error", "{states:#?}");
        assert_eq!(states[0]["last_error"]["code"], "SMB_SHARING_VIOLATION", "{states:#?}");
    }
    let tree = env.disk_tree("", no_temp).await;
    assert!(tree.keys().all(|k| !k.contains(".~scaidrive-")), "no temporary file left: {tree:?}");

    drop(held);
    env.sync_ok(&c).await;
    assert_eq!(content(&env, &c, "read-locked.docx").await, b"smb v2, still open in an editor");
    assert_eq!(std::fs::read(env.disk().join("write-locked.docx")).unwrap(), b"drive v2");
    let errors = env.file_states(&c, "&status=error").await;
    assert!(errors.is_empty(), "{errors:#?}");
    env.finish().await;
}

fn no_temp(_: &str) -> bool {
    false
}

/// The current content of `rel` in ScaiDrive.
async fn content(env: &Env, c: &Conn, rel: &str) -> Vec<u8> {
    env.download(env.must(c, rel).await["id"].as_str().unwrap()).await
}
