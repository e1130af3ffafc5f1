//! Authentication, tenancy and permissions.

use e2e_tests::{on_both_backends, Backend, TestServer};
use reqwest::StatusCode;
use serde_json::json;

on_both_backends!(
    every_endpoint_needs_a_valid_token,
    another_tenants_objects_are_404,
    acl_deny_gives_403_and_roles_and_groups_count,
);

async fn every_endpoint_needs_a_valid_token(backend: Backend) {
    let srv = TestServer::start(backend).await;
    let share = srv.admin().share("S").await;
    let paths = [
        "/api/v1/users/me".to_string(),
        "/api/v1/shares".into(),
        format!("/api/v1/shares/{share}"),
        format!("/api/v1/shares/{share}/children"),
        "/api/v1/sync/changes".into(),
        format!("/api/v1/permissions/acl/share/{share}"),
    ];
    let (_, t) = srv.admin().post("/api/v1/tokens", json!({"name": "short-lived"})).await;
    let revoked = srv.client(Some(t["token"].as_str().unwrap()));
    assert_eq!(revoked.get("/api/v1/users/me").await.0, StatusCode::OK);
    let (st, _) = srv.admin().delete(&format!("/api/v1/tokens/{}", t["id"].as_str().unwrap())).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    for p in &paths {
        for client in [srv.client(None), srv.client(Some("sdt_0000")), srv.client(Some("garbage")), revoked.clone()] {
            let (st, body) = client.get(p).await;
            assert_eq!(st, StatusCode::UNAUTHORIZED, "{p}");
            assert_eq!(body["error"]["code"], "UNAUTHENTICATED");
            assert!(body.get("shares").is_none() && body.get("items").is_none());
        }
    }
    // The token list never shows tokens.
    let (_, list) = srv.admin().get("/api/v1/tokens").await;
    assert!(list["tokens"].as_array().unwrap().iter().all(|t| t.get("token").is_none()));
    srv.stop().await;
}

async fn another_tenants_objects_are_404(backend: Backend) {
    let srv = TestServer::start(backend).await;
    let admin = srv.admin();
    let share = admin.share("Mine").await;
    let (_, f) = admin.upload(&share, "/secret.txt", "s3cret").await;
    let file = f["file"]["id"].as_str().unwrap().to_string();

    // A second tenant with its own admin, made through the store as the CLI does.
    let eve = srv.client(Some(&srv.other_tenant_token("other", "tenant_admin").await));
    for p in [
        format!("/api/v1/shares/{share}"),
        format!("/api/v1/shares/{share}/children"),
        format!("/api/v1/files/{file}"),
        format!("/api/v1/files/{file}/content"),
        format!("/api/v1/files/{file}/versions"),
        format!("/api/v1/permissions/acl/file/{file}"),
        format!("/api/v1/permissions/effective?resource_type=share&resource_id={share}"),
        format!("/api/v1/sync/changes?share_id={share}"),
    ] {
        let (st, body) = eve.get(&p).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{p}: {body}");
        assert!(!body.to_string().contains("s3cret") && !body.to_string().contains("secret.txt"));
    }
    let (st, _) = eve.delete(&format!("/api/v1/files/{file}")).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _) = eve.upload(&share, "/x.txt", "x").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (_, shares) = eve.get("/api/v1/shares").await;
    assert_eq!(shares["shares"].as_array().unwrap().len(), 0);
    let (_, ch) = eve.get("/api/v1/sync/changes").await;
    assert_eq!(ch["changes"].as_array().unwrap().len(), 0);
    assert_eq!(admin.download(&file).await.1, b"s3cret");
    srv.stop().await;
}

async fn acl_deny_gives_403_and_roles_and_groups_count(backend: Backend) {
    let srv = TestServer::start(backend).await;
    let admin = srv.admin();
    let share = admin.share("Team").await;
    let (alice_id, alice) = srv.user("alice").await;
    let (bob_id, bob) = srv.user("bob").await;
    let (_, carol) = srv.user("carol").await;
    let (_, g) = admin.post("/api/v1/groups", json!({"name": "finance"})).await;
    let group = g["id"].as_str().unwrap().to_string();
    admin.post(&format!("/api/v1/groups/{group}/members"), json!({"user_id": alice_id})).await;
    admin.post(&format!("/api/v1/groups/{group}/members"), json!({"user_id": bob_id})).await;
    let (st, _) = admin
        .post(
            &format!("/api/v1/shares/{share}/members"),
            json!({"principal_type": "group", "principal_id": group, "role": "contributor"}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED);

    let (_, f) = admin.upload(&share, "/Private/pay.txt", "salaries").await;
    let file = f["file"]["id"].as_str().unwrap().to_string();
    let private = f["file"]["parent_id"].as_str().unwrap().to_string();

    // Group contributors read and write; carol (no role) sees nothing.
    assert_eq!(alice.download(&file).await.0, StatusCode::OK);
    assert_eq!(bob.upload(&share, "/Private/pay.txt", "bob was here").await.0, StatusCode::OK);
    let (st, e) = carol.get(&format!("/api/v1/files/{file}")).await;
    assert_eq!((st, e["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("PERMISSION_DENIED")));
    // Contributors cannot manage permissions.
    let (st, _) = alice
        .post(
            &format!("/api/v1/permissions/acl/folder/{private}"),
            json!({"principal_type": "everyone", "permissions": ["READ"], "ace_type": "allow"}),
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);

    // Deny bob on the folder: inherited by the file.
    let (st, _) = admin
        .post(&format!("/api/v1/permissions/acl/folder/{private}"), json!({"principal_type": "user", "principal_id": bob_id, "permissions": ["READ", "WRITE"], "ace_type": "deny"}))
        .await;
    assert_eq!(st, StatusCode::CREATED);
    assert_eq!(bob.download(&file).await.0, StatusCode::FORBIDDEN);
    assert_eq!(bob.upload(&share, "/Private/pay.txt", "again").await.0, StatusCode::FORBIDDEN);
    assert_eq!(alice.download(&file).await.0, StatusCode::OK);
    let (_, eff) = bob.get(&format!("/api/v1/permissions/effective?resource_type=file&resource_id={file}")).await;
    assert_eq!(eff["permissions"], 4 | 8, "contributor minus READ and WRITE: {eff}");
    let (_, chk) = alice
        .post(
            "/api/v1/permissions/check",
            json!({"resource_type": "file", "resource_id": file, "permissions": ["READ", "WRITE"]}),
        )
        .await;
    assert_eq!(chk["allowed"], true);
    // A user may not query someone else's permissions without MANAGE_PERMISSIONS.
    let (st, _) = alice
        .get(&format!("/api/v1/permissions/effective?resource_type=file&resource_id={file}&user_id={bob_id}"))
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);

    // Breaking inheritance on the file with an explicit allow for carol only.
    let (carol_me_st, carol_me) = carol.get("/api/v1/users/me").await;
    assert_eq!(carol_me_st, StatusCode::OK);
    let carol_id = carol_me["id"].as_str().unwrap();
    let (st, acl) = admin
        .put(
            &format!("/api/v1/permissions/acl/file/{file}"),
            json!({"inherit_from_parent": false, "entries": [
            {"principal_type": "user", "principal_id": carol_id, "permissions": ["READ"], "ace_type": "allow"}]}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{acl}");
    assert_eq!(acl["inherit_from_parent"], false);
    assert_eq!(acl["entries"][0]["permissions"], json!(["READ"]));
    assert_eq!(carol.download(&file).await.0, StatusCode::OK);
    assert_eq!(bob.download(&file).await.0, StatusCode::OK, "bob's deny on the folder no longer reaches the file");
    let (st, _) = admin.delete(&format!("/api/v1/permissions/acl/file/{file}")).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    assert_eq!(carol.download(&file).await.0, StatusCode::FORBIDDEN);
    assert_eq!(bob.download(&file).await.0, StatusCode::FORBIDDEN);
    srv.stop().await;
}
