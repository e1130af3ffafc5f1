//! Items the sync must not follow: a symbolic link leading out of the share.
//! (A locked file is not covered here: the harness has no way yet to hold an SMB share-mode
//! lock from a second client for the length of a run.)

use serde_json::json;

use crate::driver::{Env, Setup, TARGET};

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
