//! Items the sync must not follow: a symbolic link leading out of the share.
//! (A locked file is not covered here: the harness has no way yet to hold an SMB share-mode
//! lock from a second client for the length of a run.)

use serde_json::json;

use crate::driver::{Env, Setup};

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
