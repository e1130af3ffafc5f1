//! Listings that span a share (the change log, the trash) show only what the caller may read:
//! READ on the share does not open a folder closed to the caller, nor the names and metadata
//! of what is (or was) inside it.

use e2e_tests::{on_both_backends, Backend, TestServer};
use reqwest::StatusCode;
use serde_json::{json, Value};

on_both_backends!(a_closed_folder_stays_closed_in_the_change_log_and_the_trash);

fn names(list: &Value, key: &str, field: &str) -> Vec<String> {
    list[key].as_array().unwrap().iter().map(|c| c[field].as_str().unwrap().to_string()).collect()
}

async fn a_closed_folder_stays_closed_in_the_change_log_and_the_trash(backend: Backend) {
    let srv = TestServer::start(backend).await;
    let admin = srv.admin();
    let share = admin.share("Team").await;
    let (bob_id, bob) = srv.user("bob").await;
    let (st, _) = admin
        .post(
            &format!("/api/v1/shares/{share}/members"),
            json!({"principal_type": "user", "principal_id": bob_id, "role": "reader"}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED);
    let (_, a) = admin.upload(&share, "/Open/a.txt", "a").await;
    let open = a["file"]["parent_id"].as_str().unwrap().to_string();
    let (_, p) = admin.upload(&share, "/Secret/plan-2027.txt", "p").await;
    let secret = p["file"]["parent_id"].as_str().unwrap().to_string();
    let (_, m) = admin.upload(&share, "/Secret/memo-x.txt", "m").await;
    let (_, o) = admin.upload(&share, "/Secret/old-salaries.txt", "o").await;
    let (_, t) = admin.upload(&share, "/Open/tmp.txt", "t").await;
    // Secret/ is closed to bob (the way a replicated protected folder is: no inheritance,
    // nothing for him); his share role still reads the rest.
    let (st, v) = admin
        .put(
            &format!("/api/v1/permissions/acl/folder/{secret}"),
            json!({"inherit_from_parent": true, "entries": [
                {"principal_type": "user", "principal_id": bob_id, "permissions": ["READ"], "ace_type": "deny",
                 "inherit_to_children": true}]}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    for f in [&o, &t] {
        let (st, _) = admin.delete(&format!("/api/v1/files/{}", f["file"]["id"].as_str().unwrap())).await;
        assert_eq!(st, StatusCode::NO_CONTENT);
    }
    // A move out of Secret/: bob may read the memo now, not where it came from.
    let memo = m["file"]["id"].as_str().unwrap();
    let (st, v) = admin.patch(&format!("/api/v1/files/{memo}"), json!({"parent_id": open})).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(bob.get(&format!("/api/v1/folders/{secret}/children")).await.0, StatusCode::FORBIDDEN);

    for q in [format!("/api/v1/sync/changes?share_id={share}"), "/api/v1/sync/changes".to_string()] {
        let (st, ch) = bob.get(&q).await;
        assert_eq!(st, StatusCode::OK, "{ch}");
        let paths = names(&ch, "changes", "path");
        assert!(!paths.is_empty(), "{q}: {ch}");
        let text = ch.to_string();
        for hidden in ["Secret", "plan-2027", "old-salaries"] {
            assert!(!text.contains(hidden), "{q} shows {hidden}: {ch:#}");
        }
        assert!(paths.contains(&"/Open/a.txt".to_string()) && paths.contains(&"/Open/tmp.txt".to_string()), "{ch:#}");
        let moved: Vec<&Value> = ch["changes"].as_array().unwrap().iter().filter(|c| c["type"] == "moved").collect();
        assert_eq!(moved.len(), 1, "{ch:#}");
        assert_eq!(moved[0]["path"], "/Open/memo-x.txt");
        assert!(moved[0]["old_path"].is_null() && moved[0]["old_parent_id"].is_null(), "{ch:#}");
    }
    let (st, tr) = bob.get(&format!("/api/v1/shares/{share}/trash")).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(names(&tr, "items", "name"), vec!["tmp.txt"], "{tr:#}");

    // The admin still sees everything, and so does bob once the folder opens to him.
    let (_, ch) = admin.get(&format!("/api/v1/sync/changes?share_id={share}")).await;
    assert!(ch.to_string().contains("plan-2027") && ch.to_string().contains("/Secret/memo-x.txt"));
    assert_eq!(admin.get(&format!("/api/v1/shares/{share}/trash")).await.1["items"].as_array().unwrap().len(), 2);
    let (st, _) = admin.delete(&format!("/api/v1/permissions/acl/folder/{secret}")).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (_, tr) = bob.get(&format!("/api/v1/shares/{share}/trash")).await;
    assert_eq!(tr["items"].as_array().unwrap().len(), 2, "{tr:#}");
    let (_, ch) = bob.get(&format!("/api/v1/sync/changes?share_id={share}")).await;
    assert!(ch.to_string().contains("plan-2027"), "{ch:#}");
    srv.stop().await;
}
