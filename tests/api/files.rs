//! Folders, files, uploads, ranges, versions, trash.

use e2e_tests::{on_both_backends, Backend, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::json;

on_both_backends!(
    stale_base_version_is_409_and_changes_nothing,
    rename_move_trash_and_restore,
    range_requests_return_exact_slices,
    resumable_upload_survives_a_resend,
    folders_by_path_and_conflicts,
);

async fn stale_base_version_is_409_and_changes_nothing(backend: Backend) {
    let srv = TestServer::start(backend).await;
    let api = srv.admin();
    let share = api.share("S").await;
    let (_, v1) = api.upload(&share, "/a.txt", "one").await;
    let file = v1["file"]["id"].as_str().unwrap().to_string();
    let base1 = v1["version"]["id"].as_str().unwrap().to_string();
    let rb = api.request(Method::PUT, &format!("/api/v1/files/{file}/content?base_version_id={base1}")).body("two");
    let (st, v2) = e2e_tests::Api::send(rb).await;
    assert_eq!(st, StatusCode::OK, "{v2}");
    // Based on the old version: refused.
    let rb = api
        .request(Method::PUT, &format!("/api/v1/files/{file}/content"))
        .header("If-Match", format!("\"{base1}\""))
        .body("three");
    let (st, err) = e2e_tests::Api::send(rb).await;
    assert_eq!(st, StatusCode::CONFLICT);
    assert_eq!(err["error"]["code"], "VERSION_CONFLICT");
    assert_eq!(err["error"]["details"]["current_version_id"], v2["version"]["id"]);
    assert_eq!(api.download(&file).await.1, b"two");
    let (_, vs) = api.get(&format!("/api/v1/files/{file}/versions")).await;
    assert_eq!(vs["versions"].as_array().unwrap().len(), 2);
    srv.stop().await;
}

async fn rename_move_trash_and_restore(backend: Backend) {
    let srv = TestServer::start(backend).await;
    let api = srv.admin();
    let share = api.share("S").await;
    let (_, f) = api.upload(&share, "/A/doc.txt", "x").await;
    let file = f["file"]["id"].as_str().unwrap().to_string();
    let folder_a = f["file"]["parent_id"].as_str().unwrap().to_string();
    let (st, b) = api.post("/api/v1/folders", json!({"share_id": share, "name": "B"})).await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
    let folder_b = b["id"].as_str().unwrap().to_string();

    let (st, r) = api.patch(&format!("/api/v1/files/{file}"), json!({"name": "renamed.txt"})).await;
    assert_eq!((st, r["path"].as_str()), (StatusCode::OK, Some("/A/renamed.txt")));
    let (st, m) = api.patch(&format!("/api/v1/files/{file}"), json!({"parent_id": folder_b})).await;
    assert_eq!((st, m["path"].as_str()), (StatusCode::OK, Some("/B/renamed.txt")));
    // A folder cannot go into itself.
    let (st, e) = api.patch(&format!("/api/v1/folders/{folder_b}"), json!({"parent_id": folder_b})).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    // Move folder A into B, then the whole of B to trash.
    let (st, _) = api.patch(&format!("/api/v1/folders/{folder_a}"), json!({"parent_id": folder_b})).await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = api.delete(&format!("/api/v1/folders/{folder_b}")).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (_, item) = api.get(&format!("/api/v1/files/{file}")).await;
    assert_eq!(item["deleted"], true, "inside a trashed folder: {item}");
    let (_, trash) = api.get(&format!("/api/v1/shares/{share}/trash")).await;
    assert_eq!(trash["items"].as_array().unwrap().len(), 1);
    assert_eq!(api.get(&format!("/api/v1/shares/{share}/children")).await.1["items"].as_array().unwrap().len(), 0);
    // The file cannot come back alone, its folder can.
    let (st, e) = api.post(&format!("/api/v1/files/{file}/restore"), json!({})).await;
    assert_eq!((st, e["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("NOT_IN_TRASH")));
    let (st, back) = api.post(&format!("/api/v1/folders/{folder_b}/restore"), json!({})).await;
    assert_eq!((st, back["deleted"].as_bool()), (StatusCode::OK, Some(false)));
    assert_eq!(api.download(&file).await.1, b"x");
    // Same name taken while in trash: restore is refused, nothing changes.
    let (_, t) = api.upload(&share, "/t.txt", "old").await;
    let t_id = t["file"]["id"].as_str().unwrap().to_string();
    api.delete(&format!("/api/v1/files/{t_id}")).await;
    api.upload(&share, "/t.txt", "new").await;
    let (st, e) = api.post(&format!("/api/v1/files/{t_id}/restore"), json!({})).await;
    assert_eq!((st, e["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("NAME_TAKEN")));

    let (_, ch) = api.get(&format!("/api/v1/sync/changes?share_id={share}")).await;
    let kinds: Vec<&str> = ch["changes"].as_array().unwrap().iter().map(|c| c["type"].as_str().unwrap()).collect();
    assert_eq!(&kinds[..7], &["created", "created", "created", "renamed", "moved", "moved", "deleted"]);
    let moved = &ch["changes"][4];
    assert_eq!((moved["old_path"].as_str(), moved["path"].as_str()), (Some("/A/renamed.txt"), Some("/B/renamed.txt")));
    srv.stop().await;
}

async fn range_requests_return_exact_slices(backend: Backend) {
    let srv = TestServer::start(backend).await;
    let api = srv.admin();
    let share = api.share("S").await;
    // Over two chunks, so ranges cross a chunk boundary.
    let data: Vec<u8> = (0..(4 * 1024 * 1024 + 1000)).map(|i| (i * 7 % 256) as u8).collect();
    let (_, f) = api.upload(&share, "/big.bin", data.clone()).await;
    let file = f["file"]["id"].as_str().unwrap().to_string();
    let boundary = 4 * 1024 * 1024;
    for (range, from, to) in [
        (format!("bytes={}-{}", boundary - 5, boundary + 4), boundary - 5, boundary + 5),
        ("bytes=-10".to_string(), data.len() - 10, data.len()),
        ("bytes=100-".to_string(), 100, data.len()),
    ] {
        let resp = api
            .request(Method::GET, &format!("/api/v1/files/{file}/content"))
            .header("Range", &range)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT, "{range}");
        let cr = resp.headers()["content-range"].to_str().unwrap().to_string();
        assert_eq!(cr, format!("bytes {}-{}/{}", from, to - 1, data.len()));
        assert_eq!(resp.bytes().await.unwrap().as_ref(), &data[from..to], "{range}");
    }
    let resp = api
        .request(Method::GET, &format!("/api/v1/files/{file}/content"))
        .header("Range", "bytes=999999999-")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    srv.stop().await;
}

async fn resumable_upload_survives_a_resend(backend: Backend) {
    let srv = TestServer::start(backend).await;
    let api = srv.admin();
    let share = api.share("S").await;
    let part = 4 * 1024 * 1024;
    let data: Vec<u8> = (0..(part * 2 + 12345)).map(|i| (i % 253) as u8).collect();
    let (st, up) = api.post("/api/v1/uploads", json!({"share_id": share, "path": "/r.bin", "size": data.len()})).await;
    assert_eq!(st, StatusCode::CREATED, "{up}");
    let id = up["id"].as_str().unwrap().to_string();
    let send = |off: usize, bytes: Vec<u8>| {
        let rb = api
            .request(Method::PUT, &format!("/api/v1/uploads/{id}"))
            .header("Upload-Offset", off.to_string())
            .body(bytes);
        e2e_tests::Api::send(rb)
    };
    let (st, s1) = send(0, data[..part].to_vec()).await;
    assert_eq!((st, s1["offset"].as_u64()), (StatusCode::OK, Some(part as u64)));
    // A client that lost the answer resends the same part: refused with the real offset.
    let (st, e) = send(0, data[..part].to_vec()).await;
    assert_eq!(st, StatusCode::CONFLICT);
    assert_eq!(e["error"]["details"]["offset"].as_u64(), Some(part as u64));
    // Completing early is refused.
    let (st, e) = api.post(&format!("/api/v1/uploads/{id}/complete"), json!({})).await;
    assert_eq!((st, e["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("UPLOAD_INCOMPLETE")));
    let (st, _) = send(part, data[part..].to_vec()).await;
    assert_eq!(st, StatusCode::OK);
    let (_, status) = api.get(&format!("/api/v1/uploads/{id}")).await;
    assert_eq!(status["offset"].as_u64(), Some(data.len() as u64));
    let (st, done) = api.post(&format!("/api/v1/uploads/{id}/complete"), json!({})).await;
    assert_eq!(st, StatusCode::CREATED, "{done}");
    use sha2::Digest;
    assert_eq!(done["version"]["sha256"].as_str().unwrap(), hex::encode(sha2::Sha256::digest(&data)));
    assert_eq!(api.download(done["file"]["id"].as_str().unwrap()).await.1, data);
    assert_eq!(api.get(&format!("/api/v1/uploads/{id}")).await.0, StatusCode::NOT_FOUND);
    srv.stop().await;
}

async fn folders_by_path_and_conflicts(backend: Backend) {
    let srv = TestServer::start(backend).await;
    let api = srv.admin();
    let share = api.share("S").await;
    let (st, f) =
        api.post("/api/v1/folders", json!({"share_id": share, "path": "/x/y/z", "create_parents": true})).await;
    assert_eq!((st, f["path"].as_str()), (StatusCode::CREATED, Some("/x/y/z")));
    let (st, e) = api.post("/api/v1/folders", json!({"share_id": share, "path": "/x/y/z"})).await;
    assert_eq!((st, e["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("NAME_TAKEN")));
    // NFD and NFC spellings are one name.
    api.upload(&share, "/Caf\u{e9}.txt", "a").await;
    let (st, _) = api.upload(&share, "/Cafe\u{301}.txt", "b").await;
    assert_eq!(st, StatusCode::OK, "the NFD spelling updates the NFC file");
    // A file where a folder is expected.
    let (st, _) = api.upload(&share, "/x", "oops").await;
    assert_eq!(st, StatusCode::CONFLICT);
    srv.stop().await;
}
