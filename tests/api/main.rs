//! The ScaiDrive side of the api-server, end to end over HTTP, on SQLite and on PostgreSQL.

mod authz;
mod connectors;
mod files;
mod hostile;
mod input;
mod listings;
mod security;

use e2e_tests::{on_both_backends, Backend, TestServer};
use reqwest::StatusCode;
use serde_json::json;

on_both_backends!(
    readme_walkthrough_works,
    change_log_pages_by_cursor,
    concurrent_writers_leave_a_gapless_change_log_no_reader_skips,
    openapi_and_probes_answer
);

/// The README's curl walk-through, step by step: token → share → upload → list → download →
/// versions → ACL → changes.
async fn readme_walkthrough_works(backend: Backend) {
    let srv = TestServer::start(backend).await;
    let admin = srv.admin();
    let (st, me) = admin.get("/api/v1/users/me").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(me["username"], "admin");

    let share = admin.share("Finance").await;
    let (st, up) = admin.upload(&share, "/Reports/q1.txt", "first draft").await;
    assert_eq!(st, StatusCode::CREATED, "{up}");
    let file_id = up["file"]["id"].as_str().unwrap().to_string();
    assert_eq!(up["file"]["path"], "/Reports/q1.txt");
    assert_eq!(up["version"]["number"], 1);

    let (st, up2) = admin.upload(&share, "/Reports/q1.txt", "final text").await;
    assert_eq!(st, StatusCode::OK, "a second upload is a new version: {up2}");
    assert_eq!(up2["file"]["id"], file_id.as_str());
    assert_eq!(up2["version"]["number"], 2);

    let (st, root) = admin.get(&format!("/api/v1/shares/{share}/children")).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(root["items"][0]["name"], "Reports");
    assert_eq!(root["items"][0]["type"], "folder");
    let folder = root["items"][0]["id"].as_str().unwrap().to_string();
    let (_, inside) = admin.get(&format!("/api/v1/folders/{folder}/children")).await;
    assert_eq!(inside["items"][0]["name"], "q1.txt");
    let (_, by_path) = admin.get(&format!("/api/v1/shares/{share}/items?path=/Reports/q1.txt")).await;
    assert_eq!(by_path["id"], file_id.as_str());

    let (st, body) = admin.download(&file_id).await;
    assert_eq!((st, body.as_slice()), (StatusCode::OK, b"final text".as_slice()));

    let (_, versions) = admin.get(&format!("/api/v1/files/{file_id}/versions")).await;
    let versions = versions["versions"].as_array().unwrap().clone();
    assert_eq!(versions.len(), 2);
    let v1 = versions[1]["id"].as_str().unwrap();
    let resp = admin
        .request(reqwest::Method::GET, &format!("/api/v1/files/{file_id}/versions/{v1}/content"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.bytes().await.unwrap().as_ref(), b"first draft");
    let (st, restored) = admin.post(&format!("/api/v1/files/{file_id}/versions/{v1}/restore"), json!({})).await;
    assert_eq!(st, StatusCode::OK, "{restored}");
    assert_eq!(restored["version"]["number"], 3);
    assert_eq!(admin.download(&file_id).await.1, b"first draft");

    let (bob_id, bob) = srv.user("bob").await;
    let (st, _) = admin
        .post(
            &format!("/api/v1/shares/{share}/members"),
            json!({"principal_type": "user", "principal_id": bob_id, "role": "reader"}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED);
    assert_eq!(bob.download(&file_id).await.0, StatusCode::OK);
    let (st, ace) = admin
        .post(
            &format!("/api/v1/permissions/acl/folder/{folder}"),
            json!({"principal_type": "user", "principal_id": bob_id, "permissions": ["READ"], "ace_type": "deny"}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{ace}");
    let (st, err) = bob.get(&format!("/api/v1/files/{file_id}/content")).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{err}");
    assert_eq!(err["error"]["code"], "PERMISSION_DENIED");
    let (_, eff) = admin
        .get(&format!("/api/v1/permissions/effective?resource_type=file&resource_id={file_id}&user_id={bob_id}"))
        .await;
    assert_eq!(eff["permissions"], 0);

    let (st, changes) = admin.get(&format!("/api/v1/sync/changes?share_id={share}")).await;
    assert_eq!(st, StatusCode::OK);
    let kinds: Vec<&str> = changes["changes"].as_array().unwrap().iter().map(|c| c["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, vec!["created", "created", "updated", "updated"]);
    assert_eq!(changes["has_more"], false);
    srv.stop().await;
}

async fn change_log_pages_by_cursor(backend: Backend) {
    let srv = TestServer::start(backend).await;
    let admin = srv.admin();
    let share = admin.share("Pages").await;
    for i in 0..7 {
        let (st, _) = admin.upload(&share, &format!("/f{i}.txt"), format!("{i}")).await;
        assert_eq!(st, StatusCode::CREATED);
    }
    let mut cursor = json!(0);
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let (st, page) = admin.get(&format!("/api/v1/sync/changes?share_id={share}&limit=3&cursor={cursor}")).await;
        assert_eq!(st, StatusCode::OK, "{page}");
        pages += 1;
        for c in page["changes"].as_array().unwrap() {
            seen.push(c["name"].as_str().unwrap().to_string());
        }
        cursor = page["cursor"].clone();
        if page["has_more"] == false {
            break;
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, (0..7).map(|i| format!("f{i}.txt")).collect::<Vec<_>>());
    // Nothing new: an empty page at the same cursor.
    let (_, page) = admin.get(&format!("/api/v1/sync/changes?share_id={share}&cursor={cursor}")).await;
    assert_eq!(page["changes"].as_array().unwrap().len(), 0);
    assert_eq!(page["cursor"], cursor);
    // A later change continues from there.
    admin.upload(&share, "/f0.txt", "again").await;
    let (_, page) = admin.get(&format!("/api/v1/sync/changes?share_id={share}&cursor={cursor}")).await;
    assert_eq!(page["changes"][0]["type"], "updated");
    assert_eq!(page["changes"][0]["actor"]["type"], "user");
    let (st, bad) = admin.get("/api/v1/sync/changes?limit=0").await;
    assert_eq!((st, bad["error"]["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("limit")));
    srv.stop().await;
}

/// Writers commit concurrently (each takes its change position just before its commit)
/// while a reader pages the log: positions are gapless and in commit order, so the reader,
/// following its cursor, sees every change exactly once, none after a later one.
async fn concurrent_writers_leave_a_gapless_change_log_no_reader_skips(backend: Backend) {
    let srv = TestServer::start(backend).await;
    let admin = srv.admin();
    let share = admin.share("Concurrent").await;
    let (_, first) = admin.get(&format!("/api/v1/sync/changes?share_id={share}&cursor=0")).await;
    let start = first["cursor"].clone();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (admin, share, done, mut cursor) = (admin.clone(), share.clone(), done.clone(), start.clone());
        tokio::spawn(async move {
            let mut seen: Vec<(i64, String)> = Vec::new();
            loop {
                let finished = done.load(std::sync::atomic::Ordering::SeqCst);
                let (st, page) =
                    admin.get(&format!("/api/v1/sync/changes?share_id={share}&limit=7&cursor={cursor}")).await;
                assert_eq!(st, StatusCode::OK, "{page}");
                for c in page["changes"].as_array().unwrap() {
                    seen.push((c["position"].as_i64().unwrap(), c["name"].as_str().unwrap().to_string()));
                }
                cursor = page["cursor"].clone();
                if finished && page["has_more"] == false {
                    return seen;
                }
            }
        })
    };
    let writes = (0..8).map(|w| {
        let (admin, share) = (admin.clone(), share.clone());
        async move {
            for i in 0..12 {
                let (st, body) = admin.upload(&share, &format!("/w{w}/f{i}.txt"), format!("{w}-{i}")).await;
                assert_eq!(st, StatusCode::CREATED, "{body}");
            }
        }
    });
    futures::future::join_all(writes).await;
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let seen = reader.await.unwrap();
    // 8 folders and 96 files, each created once.
    assert_eq!(seen.len(), 8 + 96, "{seen:?}");
    let first_pos = seen[0].0;
    let positions: Vec<i64> = seen.iter().map(|(p, _)| *p).collect();
    assert_eq!(positions, (first_pos..first_pos + seen.len() as i64).collect::<Vec<_>>(), "gapless, in order");
    let names: std::collections::BTreeSet<&str> = seen.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(names.len(), 8 + 12, "w0..w7 and f0..f11: {names:?}");
    srv.stop().await;
}

async fn openapi_and_probes_answer(backend: Backend) {
    let srv = TestServer::start(backend).await;
    let anon = srv.client(None);
    assert_eq!(anon.get("/api/v1/openapi.json").await.0, StatusCode::UNAUTHORIZED);
    let (st, doc) = srv.admin().get("/api/v1/openapi.json").await;
    assert_eq!(st, StatusCode::OK);
    assert!(doc["paths"]["/api/v1/shares"].is_object());
    assert!(doc["paths"]["/api/v1/permissions/acl/{resource_type}/{resource_id}"].is_object());
    assert_eq!(anon.get("/healthz").await.0, StatusCode::OK);
    assert_eq!(anon.get("/readyz").await.0, StatusCode::OK);
    let (st, e) = anon.get("/api/v1/nope").await;
    assert_eq!((st, e["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("NOT_FOUND")));
    srv.stop().await;
}
