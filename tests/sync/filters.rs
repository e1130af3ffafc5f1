//! Filters: include extensions and patterns (a whitelist for files), exclude patterns (a
//! blacklist; an excluded folder is not descended), hidden and system attributes.

use serde_json::json;

use crate::driver::{Env, Setup};

on_both_setups!(include_and_exclude_filters_choose_what_is_mirrored, hidden_and_system_files_need_their_setting);

async fn include_and_exclude_filters_choose_what_is_mirrored(setup: Setup) {
    let env = Env::start(setup).await;
    for (p, d) in [
        ("report.pdf", "pdf"),
        ("Letter.DOCX", "docx, any case"),
        ("notes.txt", "not included"),
        ("keep-me.txt", "included by pattern"),
        ("~$Letter.docx", "office lock file"),
        ("pics/photo.PDF", "pdf"),
        ("pics/Thumbs.db", "excluded"),
        ("pics/~$draft.pdf", "excluded in a subfolder"),
        ("tmp/a.pdf", "under an excluded folder"),
        ("tmp/inner/b.pdf", "under an excluded folder"),
        ("sub/deeper/x.pdf", "pdf"),
    ] {
        env.write(p, d.as_bytes());
    }
    let c = env
        .connector(json!({
            "include_patterns": {"extensions": ["pdf", ".docx"], "patterns": ["keep-*"]},
            "exclude_patterns": {"patterns": ["~$*", "Thumbs.db", "tmp"]},
        }))
        .await;
    env.sync_ok(&c).await;
    env.assert_mirrored(&c, "", |p| {
        ["notes.txt", "~$Letter.docx", "pics/Thumbs.db", "pics/~$draft.pdf", "tmp"].contains(&p)
    })
    .await;
    // The excluded folder was not descended: nothing under it is tracked.
    let states = env.file_states(&c, "").await;
    let under_tmp: Vec<_> =
        states.iter().filter(|f| f["path"].as_str().unwrap().trim_matches('/').starts_with("tmp/")).collect();
    assert!(under_tmp.is_empty(), "{under_tmp:#?}");
    for f in &states {
        let p = f["path"].as_str().unwrap().trim_matches('/');
        if ["notes.txt", "~$Letter.docx", "pics/Thumbs.db", "tmp"].contains(&p) {
            assert!(f["status"] == "excluded", "an out-of-scope item tracked as {f}");
        }
    }
    env.finish().await;
}

async fn hidden_and_system_files_need_their_setting(setup: Setup) {
    let env = Env::start(setup).await;
    env.write("visible.txt", b"visible");
    env.write("hidden.txt", b"hidden");
    env.write("system.txt", b"system");
    env.write("hiddendir/inner.txt", b"inside a hidden folder");
    env.setmode("hidden.txt", "+h");
    env.setmode("system.txt", "+s");
    env.setmode("hiddendir", "+h");
    let c = env.connector(json!({})).await;
    env.sync_ok(&c).await;
    env.assert_mirrored(&c, "", |p| ["hidden.txt", "system.txt", "hiddendir"].contains(&p)).await;

    env.patch(&c, json!({"sync_hidden_files": true})).await;
    env.sync_ok(&c).await;
    env.assert_mirrored(&c, "", |p| p == "system.txt").await;

    env.patch(&c, json!({"sync_system_files": true})).await;
    env.sync_ok(&c).await;
    env.assert_mirrored(&c, "", |_| false).await;
    env.finish().await;
}
