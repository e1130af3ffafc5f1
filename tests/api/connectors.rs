//! The SMB connector resource API: configuration, validation, permissions, encryption at
//! rest and identity mappings, over HTTP on SQLite and PostgreSQL.

use api_server::ids::ConnectorId;
use api_server::secrets::SecretBox;
use api_server::store::connectors;
use e2e_tests::{on_both_backends, Api, Backend, TestServer};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::Row;

on_both_backends!(
    the_spec_example_is_accepted_read_back_and_patched,
    defaults_apply_to_omitted_fields,
    every_field_is_validated_and_named,
    the_password_never_appears_in_errors,
    routes_answer_with_and_without_trailing_slash,
    lists_page_by_cursor,
    only_managers_of_the_target_share_see_connectors,
    another_tenants_connectors_are_404,
    patch_follows_the_rules,
    delete_removes_mappings_and_keeps_synced_content,
    credentials_are_encrypted_at_rest,
    identity_mappings_by_name_and_by_sid,
    csv_import_reports_every_row,
);

const BASE: &str = "/api/v1/smb-connectors";
const PASSWORD: &str = "Pa55-unique-7f3a9c";

/// The spec's curl body ("Creating a connector") with a real share id.
fn spec_body(share: &str) -> Value {
    json!({
        "name": "Finance Fileserver",
        "description": "Legacy Windows share — finance department",
        "server_host": "fs01.corp.example.com",
        "server_port": 445,
        "share_name": "Finance",
        "base_path": "2026",
        "domain": "CORP",
        "username": "scaidrive-svc",
        "password": PASSWORD,
        "target_share_id": share,
        "target_path": "/From Fileserver",
        "sync_direction": "bidirectional",
        "sync_permissions": true,
        "include_patterns": {"extensions": ["pdf", "docx", "xlsx"]},
        "exclude_patterns": {"patterns": ["~$*", ".DS_Store", "Thumbs.db"]},
        "conflict_resolution": "LAST_WRITER_WINS",
        "sync_interval_minutes": 15
    })
}

fn minimal(share: &str) -> Value {
    json!({"name": "Min", "server_host": "10.0.0.5", "share_name": "Data", "username": "svc",
           "password": PASSWORD, "target_share_id": share})
}

async fn create(api: &Api, body: Value) -> Value {
    let (st, c) = api.post(BASE, body).await;
    assert_eq!(st, StatusCode::CREATED, "{c}");
    assert!(!c.to_string().contains(PASSWORD));
    c
}

fn secs_until(rfc: &Value) -> i64 {
    let t = api_server::time::parse_rfc3339(rfc.as_str().unwrap()).unwrap();
    (t - api_server::time::now_ms()) / 1000
}

async fn sealed(srv: &TestServer, id: &str) -> String {
    sqlx::query("SELECT password_sealed FROM connectors WHERE id = $1")
        .bind(id)
        .fetch_one(&srv.state.db.pool)
        .await
        .unwrap()
        .get::<String, _>(0)
}

async fn password_of(srv: &TestServer, id: &str) -> String {
    let creds = connectors::decrypted_credentials(&srv.state.db, &srv.state.secrets, &ConnectorId::from_db(id.into()))
        .await
        .unwrap();
    creds.password.expose().to_string()
}

async fn the_spec_example_is_accepted_read_back_and_patched(backend: Backend) {
    let srv = TestServer::start(backend).await;
    let admin = srv.admin();
    let share = admin.share("Finance").await;
    let c = create(&admin, spec_body(&share)).await;
    let id = c["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("cnn_") && ConnectorId::parse(&id).is_some());

    let (st, got) = admin.get(&format!("{BASE}/{id}")).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(got, c, "read-back equals the creation answer");
    let mut expected = spec_body(&share);
    expected.as_object_mut().unwrap().remove("password");
    expected["include_patterns"] = json!({"extensions": ["pdf", "docx", "xlsx"], "patterns": []});
    expected["exclude_patterns"] = json!({"extensions": [], "patterns": ["~$*", ".DS_Store", "Thumbs.db"]});
    for (k, v) in expected.as_object().unwrap() {
        assert_eq!(&got[k], v, "field {k}");
    }
    assert_eq!(got["sync_hidden_files"], false);
    assert_eq!(got["sync_system_files"], false);
    assert_eq!(got["max_delete_percent"], 50);
    assert_eq!(got["status"], "idle");
    assert_eq!(got["status_message"], Value::Null);
    assert_eq!(got["error_count"], 0);
    assert_eq!(got["last_sync_at"], Value::Null);
    assert_eq!(got["total_files_synced"], 0);
    assert_eq!(got["total_bytes_synced"], 0);
    assert!((14 * 60..=15 * 60).contains(&secs_until(&got["next_sync_at"])), "{}", got["next_sync_at"]);
    assert!(got["created_at"].is_string() && got["updated_at"].is_string());
    assert!(got.get("password").is_none());
    // The target folder was created in the share.
    let (st, folder) = admin.get(&format!("/api/v1/shares/{share}/items?path=/From%20Fileserver")).await;
    assert_eq!((st, folder["type"].as_str()), (StatusCode::OK, Some("folder")), "{folder}");

    // The spec's PATCH examples.
    let (st, p) = admin.patch(&format!("{BASE}/{id}"), json!({"sync_interval_minutes": 60})).await;
    assert_eq!(st, StatusCode::OK, "{p}");
    assert_eq!(p["sync_interval_minutes"], 60);
    assert!((59 * 60..=60 * 60).contains(&secs_until(&p["next_sync_at"])));
    let before = sealed(&srv, &id).await;
    assert_eq!(password_of(&srv, &id).await, PASSWORD);
    let (st, p) =
        admin.patch(&format!("{BASE}/{id}"), json!({"username": "new-svc", "password": "<new-secret>"})).await;
    assert_eq!(st, StatusCode::OK, "{p}");
    assert_eq!(p["username"], "new-svc");
    assert!(!p.to_string().contains("<new-secret>"));
    let after = sealed(&srv, &id).await;
    assert_ne!(before, after, "rotating the password re-seals it");
    assert_eq!(password_of(&srv, &id).await, "<new-secret>");
    let (st, p) = admin.patch(&format!("{BASE}/{id}"), json!({"sync_interval_minutes": 0})).await;
    assert_eq!((st, &p["next_sync_at"]), (StatusCode::OK, &Value::Null));
    srv.stop().await;
}

async fn defaults_apply_to_omitted_fields(backend: Backend) {
    let srv = TestServer::start(backend).await;
    let admin = srv.admin();
    let share = admin.share("S").await;
    let c = create(&admin, minimal(&share)).await;
    let want = json!({
        "description": null, "server_port": 445, "base_path": null, "domain": null, "target_path": "/",
        "sync_direction": "smb_to_scaidrive", "sync_permissions": false, "sync_hidden_files": false,
        "sync_system_files": false, "include_patterns": null, "exclude_patterns": null,
        "conflict_resolution": "KEEP_BOTH", "sync_interval_minutes": 15, "max_delete_percent": 50, "status": "idle",
    });
    for (k, v) in want.as_object().unwrap() {
        assert_eq!(&c[k], v, "default of {k}");
    }
    // Normalisation: extensions lowercase without the dot; base_path with either separator.
    let mut b = minimal(&share);
    b["include_patterns"] = json!({"extensions": [".PDF", "Docx", "pdf"], "patterns": ["**/*.tmp"]});
    b["base_path"] = json!("\\2026\\Q1/");
    b["target_path"] = json!("//a//b/");
    b["sync_interval_minutes"] = json!(0);
    b["description"] = json!("");
    let c = create(&admin, b).await;
    assert_eq!(c["include_patterns"], json!({"extensions": ["pdf", "docx"], "patterns": ["**/*.tmp"]}));
    assert_eq!(c["base_path"], "2026/Q1");
    assert_eq!(c["target_path"], "/a/b");
    assert_eq!(c["next_sync_at"], Value::Null);
    assert_eq!(c["description"], Value::Null);
    srv.stop().await;
}

async fn every_field_is_validated_and_named(backend: Backend) {
    let srv = TestServer::start(backend).await;
    let admin = srv.admin();
    let share = admin.share("S").await;
    admin.upload(&share, "/afile", "x").await;
    let cases: Vec<(&str, Value, &str)> = vec![
        ("name", json!(""), "name"),
        ("name", json!(5), "name"),
        ("description", json!("x".repeat(2001)), "description"),
        ("server_host", json!("smb://fs01"), "server_host"),
        ("server_host", json!("fs01:445"), "server_host"),
        ("server_host", json!("\\\\fs01\\share"), "server_host"),
        ("server_host", json!("bad host"), "server_host"),
        ("server_host", json!(""), "server_host"),
        ("server_port", json!(0), "server_port"),
        ("server_port", json!(65536), "server_port"),
        ("server_port", json!("445"), "server_port"),
        ("share_name", json!("Fin/ance"), "share_name"),
        ("share_name", json!(""), "share_name"),
        ("base_path", json!("a/../b"), "base_path"),
        ("base_path", json!("a\u{0}b"), "base_path"),
        ("base_path", json!("a:b"), "base_path"),
        ("base_path", json!("x*"), "base_path"),
        ("domain", json!("CO/RP"), "domain"),
        ("username", json!(""), "username"),
        ("username", json!("CORP\\svc"), "username"),
        ("password", json!(""), "password"),
        ("target_share_id", json!("shr_01J3H"), "target_share_id"),
        ("target_share_id", json!(share.replace("shr_", "fld_")), "target_share_id"),
        ("target_path", json!("/a/../b"), "target_path"),
        ("target_path", json!("/afile/sub"), "target_path"),
        ("sync_direction", json!("both"), "sync_direction"),
        ("sync_permissions", json!("yes"), "sync_permissions"),
        ("sync_hidden_files", json!(1), "sync_hidden_files"),
        ("sync_system_files", json!("no"), "sync_system_files"),
        ("include_patterns", json!({"extensions": ["*.pdf"]}), "include_patterns.extensions[0]"),
        ("include_patterns", json!({"extensions": [""]}), "include_patterns.extensions[0]"),
        ("exclude_patterns", json!({"patterns": ["ok", "a[b"]}), "exclude_patterns.patterns[1]"),
        ("exclude_patterns", json!({"globs": []}), "exclude_patterns.globs"),
        ("exclude_patterns", json!(["*.tmp"]), "exclude_patterns"),
        ("conflict_resolution", json!("last_writer_wins"), "conflict_resolution"),
        ("sync_interval_minutes", json!(-1), "sync_interval_minutes"),
        ("sync_interval_minutes", json!(1_000_000), "sync_interval_minutes"),
        ("max_delete_percent", json!(101), "max_delete_percent"),
        ("max_delete_percent", json!(-5), "max_delete_percent"),
        ("colour", json!("blue"), "colour"),
    ];
    for (field, value, named) in cases {
        let mut b = minimal(&share);
        b[field] = value.clone();
        let (st, e) = admin.post(BASE, b).await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{field}={value}: {e}");
        assert!(e["error"]["field"].as_str().unwrap_or("").starts_with(named), "{field}={value}: {e}");
        assert!(!e.to_string().contains(PASSWORD));
    }
    for required in ["name", "server_host", "share_name", "username", "password", "target_share_id"] {
        let mut b = minimal(&share);
        b.as_object_mut().unwrap().remove(required);
        let (st, e) = admin.post(BASE, b).await;
        assert_eq!((st, e["error"]["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some(required)), "{e}");
    }
    // Nothing was created by the refused requests; the SMB server needs not exist at all.
    let (_, list) = admin.get(BASE).await;
    assert_eq!(list["connectors"].as_array().unwrap().len(), 0);
    let mut b = minimal(&share);
    b["server_host"] = json!("no-such-host.invalid");
    create(&admin, b).await;
    srv.stop().await;
}

async fn the_password_never_appears_in_errors(backend: Backend) {
    let srv = TestServer::start(backend).await;
    let admin = srv.admin();
    let share = admin.share("S").await;
    for (value, text) in [
        (json!(987654321), "987654321"),
        (json!(true), "true"),
        (json!(12.75), "12.75"),
        (json!(["hunter2x"]), "hunter2x"),
        (json!({"p": "hunter2y"}), "hunter2y"),
    ] {
        let mut b = minimal(&share);
        b["password"] = value;
        let (st, e) = admin.post(BASE, b).await;
        assert_eq!((st, e["error"]["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("password")), "{e}");
        assert!(!e.to_string().contains(text), "{e}");
    }
    let c = create(&admin, minimal(&share)).await;
    let id = c["id"].as_str().unwrap();
    let (st, e) = admin.patch(&format!("{BASE}/{id}"), json!({"password": 4242424242u64})).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(!e.to_string().contains("4242424242"), "{e}");
    // A different field's error with a valid password in the body does not echo it either.
    let mut b = minimal(&share);
    b["server_port"] = json!(-1);
    let (_, e) = admin.post(BASE, b).await;
    assert!(!e.to_string().contains(PASSWORD));
    // No answer of any endpoint carries it.
    for p in [BASE.to_string(), format!("{BASE}/{id}"), "/api/v1/openapi.json".into()] {
        let (_, v) = admin.get(&p).await;
        assert!(!v.to_string().contains(PASSWORD), "{p}");
    }
    srv.stop().await;
}

async fn routes_answer_with_and_without_trailing_slash(backend: Backend) {
    let srv = TestServer::start(backend).await;
    let admin = srv.admin();
    let share = admin.share("S").await;
    let (alice, _) = srv.user("alice").await;
    let a = create(&admin, minimal(&share)).await;
    let (st, b) = admin.post(&format!("{BASE}/"), minimal(&share)).await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
    for id in [a["id"].as_str().unwrap(), b["id"].as_str().unwrap()] {
        for slash in ["", "/"] {
            assert_eq!(admin.get(&format!("{BASE}{slash}")).await.0, StatusCode::OK);
            assert_eq!(admin.get(&format!("{BASE}/{id}{slash}")).await.0, StatusCode::OK);
            let (st, _) = admin.patch(&format!("{BASE}/{id}{slash}"), json!({"name": format!("n{slash}")})).await;
            assert_eq!(st, StatusCode::OK);
            let (st, m) = admin
                .post(
                    &format!("{BASE}/{id}/identity-mappings{slash}"),
                    json!({"identity_type": "user", "smb_principal": format!("CORP\\alice{}", slash.len()),
                           "scaidrive_principal_id": alice}),
                )
                .await;
            assert_eq!(st, StatusCode::CREATED, "{m}");
            assert!(m["id"].as_str().unwrap().starts_with("map_"));
            assert_eq!(admin.get(&format!("{BASE}/{id}/identity-mappings{slash}")).await.0, StatusCode::OK);
            let resp = admin
                .request(reqwest::Method::POST, &format!("{BASE}/{id}/identity-mappings/import{slash}"))
                .header("content-type", "text/csv")
                .body("")
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            let mid = m["id"].as_str().unwrap();
            assert_eq!(
                admin.delete(&format!("{BASE}/{id}/identity-mappings/{mid}{slash}")).await.0,
                StatusCode::NO_CONTENT
            );
        }
    }
    assert_eq!(admin.delete(&format!("{BASE}/{}", a["id"].as_str().unwrap())).await.0, StatusCode::NO_CONTENT);
    assert_eq!(admin.delete(&format!("{BASE}/{}/", b["id"].as_str().unwrap())).await.0, StatusCode::NO_CONTENT);
    let (st, e) = admin.get(&format!("{BASE}/{}", a["id"].as_str().unwrap())).await;
    assert_eq!((st, e["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("NOT_FOUND")));
    srv.stop().await;
}

async fn lists_page_by_cursor(backend: Backend) {
    let srv = TestServer::start(backend).await;
    let admin = srv.admin();
    let share = admin.share("S").await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let mut b = minimal(&share);
        b["name"] = json!(format!("c{i}"));
        ids.push(create(&admin, b).await["id"].as_str().unwrap().to_string());
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            Some(c) => format!("{BASE}?limit=2&cursor={c}"),
            None => format!("{BASE}?limit=2"),
        };
        let (st, page) = admin.get(&q).await;
        assert_eq!(st, StatusCode::OK, "{page}");
        let items = page["connectors"].as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(items.iter().map(|c| c["id"].as_str().unwrap().to_string()));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    ids.sort();
    assert_eq!(seen, ids);
    let (st, e) = admin.get(&format!("{BASE}?limit=0")).await;
    assert_eq!((st, e["error"]["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("limit")));
    let (st, e) = admin.get(&format!("{BASE}?page=2")).await;
    assert_eq!((st, e["error"]["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("page")));

    // Mappings page the same way.
    let (u, _) = srv.user("u").await;
    let id = &ids[0];
    for i in 0..3 {
        let (st, _) = admin
            .post(
                &format!("{BASE}/{id}/identity-mappings"),
                json!({"identity_type": "user", "smb_principal": format!("u{i}"), "scaidrive_principal_id": u}),
            )
            .await;
        assert_eq!(st, StatusCode::CREATED);
    }
    let (_, p1) = admin.get(&format!("{BASE}/{id}/identity-mappings?limit=2")).await;
    assert_eq!(p1["identity_mappings"].as_array().unwrap().len(), 2);
    let c = p1["next_cursor"].as_str().unwrap();
    let (_, p2) = admin.get(&format!("{BASE}/{id}/identity-mappings?limit=2&cursor={c}")).await;
    assert_eq!(p2["identity_mappings"].as_array().unwrap().len(), 1);
    assert_eq!(p2["next_cursor"], Value::Null);
    srv.stop().await;
}

async fn only_managers_of_the_target_share_see_connectors(backend: Backend) {
    let srv = TestServer::start(backend).await;
    let admin = srv.admin();
    let s1 = admin.share("One").await;
    let s2 = admin.share("Two").await;
    let (bob_id, bob) = srv.user("bob").await;
    for (s, role) in [(&s1, "contributor"), (&s2, "admin")] {
        let (st, _) = admin
            .post(
                &format!("/api/v1/shares/{s}/members"),
                json!({"principal_type": "user", "principal_id": bob_id, "role": role}),
            )
            .await;
        assert_eq!(st, StatusCode::CREATED);
    }
    let c1 = create(&admin, minimal(&s1)).await;
    let id1 = c1["id"].as_str().unwrap();
    // Bob contributes to One but may not manage it.
    let (st, e) = bob.post(BASE, minimal(&s1)).await;
    assert_eq!((st, e["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("PERMISSION_DENIED")), "{e}");
    for p in [format!("{BASE}/{id1}"), format!("{BASE}/{id1}/identity-mappings")] {
        assert_eq!(bob.get(&p).await.0, StatusCode::FORBIDDEN, "{p}");
    }
    assert_eq!(bob.patch(&format!("{BASE}/{id1}"), json!({"name": "x"})).await.0, StatusCode::FORBIDDEN);
    assert_eq!(bob.delete(&format!("{BASE}/{id1}")).await.0, StatusCode::FORBIDDEN);
    let (st, _) = bob
        .post(
            &format!("{BASE}/{id1}/identity-mappings"),
            json!({"identity_type": "user", "smb_principal": "x", "scaidrive_principal_id": bob_id}),
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    // Bob administers Two: he creates there and his list shows only that connector.
    let c2 = create(&bob, minimal(&s2)).await;
    let (_, list) = bob.get(BASE).await;
    let ids: Vec<&str> = list["connectors"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![c2["id"].as_str().unwrap()]);
    let (_, list) = bob.get(&format!("{BASE}?limit=1")).await;
    assert_eq!(list["connectors"].as_array().unwrap().len(), 1);
    let (_, all) = admin.get(BASE).await;
    assert_eq!(all["connectors"].as_array().unwrap().len(), 2);
    // A deny ACE for MANAGE_PERMISSIONS on the share takes it away again.
    let (st, _) = admin
        .post(&format!("/api/v1/permissions/acl/share/{s2}"),
            json!({"principal_type": "user", "principal_id": bob_id, "permissions": ["MANAGE_PERMISSIONS"], "ace_type": "deny"}))
        .await;
    assert_eq!(st, StatusCode::CREATED);
    assert_eq!(bob.get(&format!("{BASE}/{}", c2["id"].as_str().unwrap())).await.0, StatusCode::FORBIDDEN);
    let (_, list) = bob.get(BASE).await;
    assert_eq!(list["connectors"].as_array().unwrap().len(), 0);
    srv.stop().await;
}

async fn another_tenants_connectors_are_404(backend: Backend) {
    let srv = TestServer::start(backend).await;
    let admin = srv.admin();
    let share = admin.share("Mine").await;
    let c = create(&admin, minimal(&share)).await;
    let id = c["id"].as_str().unwrap();
    let (u, _) = srv.user("u").await;
    let (_, m) = admin
        .post(
            &format!("{BASE}/{id}/identity-mappings"),
            json!({"identity_type": "user", "smb_principal": "a", "scaidrive_principal_id": u}),
        )
        .await;
    let mid = m["id"].as_str().unwrap();

    let eve = srv.client(Some(&srv.other_tenant_token("other", "tenant_admin").await));
    for p in [format!("{BASE}/{id}"), format!("{BASE}/{id}/identity-mappings")] {
        let (st, body) = eve.get(&p).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{p}: {body}");
    }
    assert_eq!(eve.patch(&format!("{BASE}/{id}"), json!({"name": "x"})).await.0, StatusCode::NOT_FOUND);
    assert_eq!(eve.delete(&format!("{BASE}/{id}/identity-mappings/{mid}")).await.0, StatusCode::NOT_FOUND);
    assert_eq!(eve.delete(&format!("{BASE}/{id}")).await.0, StatusCode::NOT_FOUND);
    let (_, list) = eve.get(BASE).await;
    assert_eq!(list["connectors"].as_array().unwrap().len(), 0);
    // Eve cannot point a connector at our share either.
    let (st, e) = eve.post(BASE, minimal(&share)).await;
    assert_eq!((st, e["error"]["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("target_share_id")));
    assert_eq!(admin.get(&format!("{BASE}/{id}")).await.0, StatusCode::OK);
    assert_eq!(admin.get(&format!("{BASE}/cnn_nope")).await.0, StatusCode::NOT_FOUND);
    srv.stop().await;
}

async fn patch_follows_the_rules(backend: Backend) {
    let srv = TestServer::start(backend).await;
    let admin = srv.admin();
    let share = admin.share("S").await;
    let other = admin.share("Other").await;
    let c = create(&admin, spec_body(&share)).await;
    let id = c["id"].as_str().unwrap();
    let url = format!("{BASE}/{id}");

    let (st, e) = admin.patch(&url, json!({"target_share_id": other})).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        (e["error"]["code"].as_str(), e["error"]["field"].as_str()),
        (Some("FIELD_IMMUTABLE"), Some("target_share_id"))
    );
    let (st, e) = admin.patch(&url, json!({"target_share_id": null})).await;
    assert_eq!(e["error"]["code"], "FIELD_IMMUTABLE", "{st} {e}");
    let (st, _) = admin.patch(&url, json!({"target_share_id": share, "name": "Same share"})).await;
    assert_eq!(st, StatusCode::OK, "repeating the current share is allowed");

    // null clears the optional fields.
    let (st, p) = admin
        .patch(&url, json!({"description": null, "base_path": null, "domain": null, "include_patterns": null, "exclude_patterns": null}))
        .await;
    assert_eq!(st, StatusCode::OK, "{p}");
    for k in ["description", "base_path", "domain", "include_patterns", "exclude_patterns"] {
        assert_eq!(p[k], Value::Null, "{k}");
    }
    // Untouched fields keep their values.
    assert_eq!(p["sync_direction"], "bidirectional");
    assert_eq!(p["conflict_resolution"], "LAST_WRITER_WINS");
    assert_eq!(p["name"], "Same share");
    // Required fields cannot be nulled; validation is the same as on creation.
    for (k, v) in [
        ("name", json!(null)),
        ("password", json!(null)),
        ("server_port", json!(null)),
        ("server_port", json!(70000)),
        ("server_host", json!("smb://x")),
        ("base_path", json!("../x")),
        ("sync_direction", json!("sideways")),
        ("exclude_patterns", json!({"patterns": ["{a"]})),
        ("max_delete_percent", json!(150)),
        ("password", json!("")),
        ("unknown", json!(1)),
    ] {
        let (st, e) = admin.patch(&url, json!({k: v})).await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{k}={v}: {e}");
        assert!(e["error"]["field"].as_str().unwrap().starts_with(k), "{k}: {e}");
    }
    // A new target path is created in the share.
    let (st, p) = admin
        .patch(&url, json!({"target_path": "\u{2f}Moved/Here", "base_path": "x\\y", "include_patterns": {"extensions": ["TXT"]}}))
        .await;
    assert_eq!(st, StatusCode::OK, "{p}");
    assert_eq!((p["target_path"].as_str(), p["base_path"].as_str()), (Some("/Moved/Here"), Some("x/y")));
    assert_eq!(p["include_patterns"]["extensions"], json!(["txt"]));
    let (st, _) = admin.get(&format!("/api/v1/shares/{share}/items?path=/Moved/Here")).await;
    assert_eq!(st, StatusCode::OK);
    // An empty PATCH changes nothing.
    let (st, same) = admin.patch(&url, json!({})).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(same["target_path"], "/Moved/Here");
    assert_eq!(password_of(&srv, id).await, PASSWORD, "the password is untouched unless given");
    srv.stop().await;
}

async fn delete_removes_mappings_and_keeps_synced_content(backend: Backend) {
    let srv = TestServer::start(backend).await;
    let admin = srv.admin();
    let share = admin.share("S").await;
    let c = create(&admin, spec_body(&share)).await;
    let id = c["id"].as_str().unwrap();
    let (u, _) = srv.user("u").await;
    let (st, _) = admin
        .post(
            &format!("{BASE}/{id}/identity-mappings"),
            json!({"identity_type": "user", "smb_principal": "CORP\\u", "scaidrive_principal_id": u}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED);
    let (st, f) = admin.upload(&share, "/From Fileserver/report.pdf", "synced bytes").await;
    assert_eq!(st, StatusCode::CREATED);
    let file = f["file"]["id"].as_str().unwrap();

    assert_eq!(admin.delete(&format!("{BASE}/{id}")).await.0, StatusCode::NO_CONTENT);
    assert_eq!(admin.get(&format!("{BASE}/{id}")).await.0, StatusCode::NOT_FOUND);
    assert_eq!(admin.get(&format!("{BASE}/{id}/identity-mappings")).await.0, StatusCode::NOT_FOUND);
    assert_eq!(admin.delete(&format!("{BASE}/{id}")).await.0, StatusCode::NOT_FOUND);
    let n: i64 = sqlx::query("SELECT COUNT(*) FROM identity_mappings WHERE connector_id = $1")
        .bind(id)
        .fetch_one(&srv.state.db.pool)
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    let (st, body) = admin.download(file).await;
    assert_eq!((st, body.as_slice()), (StatusCode::OK, b"synced bytes".as_slice()));
    let (st, _) = admin.get(&format!("/api/v1/shares/{share}/items?path=/From%20Fileserver")).await;
    assert_eq!(st, StatusCode::OK);
    srv.stop().await;
}

async fn credentials_are_encrypted_at_rest(backend: Backend) {
    let srv = TestServer::start(backend).await;
    let admin = srv.admin();
    let share = admin.share("S").await;
    let c = create(&admin, spec_body(&share)).await;
    let id = c["id"].as_str().unwrap().to_string();
    let c2 = create(&admin, minimal(&share)).await;

    // No column of any connector row holds the password.
    let rows = sqlx::query("SELECT * FROM connectors").fetch_all(&srv.state.db.pool).await.unwrap();
    assert_eq!(rows.len(), 2);
    for r in &rows {
        for i in 0..r.len() {
            if let Ok(Some(s)) = r.try_get::<Option<String>, _>(i) {
                assert!(!s.contains(PASSWORD), "column {i}");
            }
        }
    }
    let s = sealed(&srv, &id).await;
    assert!(s.starts_with(&format!("v1:{}:", srv.state.secrets.key_id())), "{s}");
    assert_ne!(s, sealed(&srv, c2["id"].as_str().unwrap()).await, "same password, different ciphertext");
    // Nor do the database's files (SQLite: the file, its WAL and shared memory).
    if backend == Backend::Sqlite {
        let mut found = false;
        for f in std::fs::read_dir(&srv.data_dir).unwrap() {
            let p = f.unwrap().path();
            if p.file_name().unwrap().to_string_lossy().starts_with("scaidrive.db") {
                let bytes = std::fs::read(&p).unwrap();
                assert!(!bytes.windows(PASSWORD.len()).any(|w| w == PASSWORD.as_bytes()), "{}", p.display());
                let kid = srv.state.secrets.key_id().as_bytes();
                found |= bytes.windows(kid.len()).any(|w| w == kid);
            }
        }
        assert!(found, "the sealed value is in the files");
    }
    // The right key and connector id open it; another key or another connector id do not.
    assert_eq!(srv.state.secrets.open(&id, &s).unwrap().expose(), PASSWORD);
    assert!(SecretBox::new(&[9u8; 32]).open(&id, &s).is_err());
    assert!(srv.state.secrets.open(c2["id"].as_str().unwrap(), &s).is_err());
    let forged = s.replacen(srv.state.secrets.key_id(), SecretBox::new(&[9u8; 32]).key_id(), 1);
    assert!(SecretBox::new(&[9u8; 32]).open(&id, &forged).is_err());
    // The key file was created private.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(srv.data_dir.join("secret.key")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // Its Debug never shows the value.
    let creds = connectors::decrypted_credentials(&srv.state.db, &srv.state.secrets, &ConnectorId::from_db(id.clone()))
        .await
        .unwrap();
    assert!(!format!("{creds:?}").contains(PASSWORD));
    assert_eq!((creds.domain.as_deref(), creds.username.as_str()), (Some("CORP"), "scaidrive-svc"));
    srv.stop().await;
}

async fn identity_mappings_by_name_and_by_sid(backend: Backend) {
    let srv = TestServer::start(backend).await;
    let admin = srv.admin();
    let share = admin.share("S").await;
    let c = create(&admin, minimal(&share)).await;
    let id = c["id"].as_str().unwrap();
    assert_eq!(c["mappings_changed_at"], Value::Null);
    let url = format!("{BASE}/{id}/identity-mappings");
    let (alice, _) = srv.user("alice").await;
    let (_, g) = admin.post("/api/v1/groups", json!({"name": "finance"})).await;
    let grp = g["id"].as_str().unwrap().to_string();

    let (st, m) = admin
        .post(&url, json!({"identity_type": "user", "smb_principal": "CORP\\alice", "scaidrive_principal_id": alice}))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{m}");
    assert!(m["id"].as_str().unwrap().starts_with("map_"));
    assert_eq!((m["smb_principal"].as_str(), m["identity_type"].as_str()), (Some("CORP\\alice"), Some("user")));
    assert_eq!(m["connector_id"], id);
    let sid = "S-1-5-21-1004336348-1177238915-682003330-512";
    let (st, gm) = admin
        .post(
            &url,
            json!({"identity_type": "group", "smb_principal": sid.to_lowercase(), "scaidrive_principal_id": grp}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{gm}");
    assert_eq!(gm["smb_principal"], sid);
    let (st, _) = admin
        .post(&url, json!({"identity_type": "user", "smb_principal": "alice", "scaidrive_principal_id": alice}))
        .await;
    assert_eq!(st, StatusCode::CREATED, "a bare name is another principal than CORP\\alice");

    // Duplicates, case-insensitively, and a SID in either case.
    for dup in ["corp\\ALICE", " CORP\\alice "] {
        let (st, e) = admin
            .post(&url, json!({"identity_type": "user", "smb_principal": dup, "scaidrive_principal_id": alice}))
            .await;
        assert_eq!(st, StatusCode::CONFLICT, "{dup}: {e}");
        assert_eq!(e["error"]["details"]["mapping_id"], m["id"]);
    }
    let (st, _) =
        admin.post(&url, json!({"identity_type": "group", "smb_principal": sid, "scaidrive_principal_id": grp})).await;
    assert_eq!(st, StatusCode::CONFLICT);

    // Wrong principal type, unknown principal, bad SMB principal.
    for (body, field) in [
        (
            json!({"identity_type": "user", "smb_principal": "CORP\\bob", "scaidrive_principal_id": grp}),
            "scaidrive_principal_id",
        ),
        (
            json!({"identity_type": "group", "smb_principal": "CORP\\bob", "scaidrive_principal_id": alice}),
            "scaidrive_principal_id",
        ),
        (
            json!({"identity_type": "user", "smb_principal": "CORP\\bob", "scaidrive_principal_id": "usr_01J4M"}),
            "scaidrive_principal_id",
        ),
        (
            json!({"identity_type": "user", "smb_principal": "CORP\\bob", "scaidrive_principal_id": share}),
            "scaidrive_principal_id",
        ),
        (
            json!({"identity_type": "everyone", "smb_principal": "CORP\\bob", "scaidrive_principal_id": alice}),
            "identity_type",
        ),
        (json!({"identity_type": "user", "smb_principal": "S-1-5", "scaidrive_principal_id": alice}), "smb_principal"),
        (
            json!({"identity_type": "user", "smb_principal": "S-2-5-21-1", "scaidrive_principal_id": alice}),
            "smb_principal",
        ),
        (
            json!({"identity_type": "user", "smb_principal": "S-1-5-21-x", "scaidrive_principal_id": alice}),
            "smb_principal",
        ),
        (json!({"identity_type": "user", "smb_principal": "CORP\\", "scaidrive_principal_id": alice}), "smb_principal"),
        (json!({"identity_type": "user", "smb_principal": "", "scaidrive_principal_id": alice}), "smb_principal"),
        (json!({"identity_type": "user", "smb_principal": "a*b", "scaidrive_principal_id": alice}), "smb_principal"),
        (json!({"identity_type": "user", "smb_principal": "x", "scaidrive_principal_id": alice, "extra": 1}), "extra"),
    ] {
        let (st, e) = admin.post(&url, body.clone()).await;
        assert_eq!((st, e["error"]["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some(field)), "{body}: {e}");
    }

    let (_, list) = admin.get(&url).await;
    assert_eq!(list["identity_mappings"].as_array().unwrap().len(), 3);
    let (_, c) = admin.get(&format!("{BASE}/{id}")).await;
    let changed = c["mappings_changed_at"].as_str().unwrap().to_string();
    let mid = m["id"].as_str().unwrap();
    assert_eq!(admin.delete(&format!("{url}/{mid}")).await.0, StatusCode::NO_CONTENT);
    assert_eq!(admin.delete(&format!("{url}/{mid}")).await.0, StatusCode::NOT_FOUND);
    let (_, list) = admin.get(&url).await;
    assert_eq!(list["identity_mappings"].as_array().unwrap().len(), 2);
    let version: i64 = sqlx::query("SELECT mappings_version FROM connectors WHERE id = $1")
        .bind(id)
        .fetch_one(&srv.state.db.pool)
        .await
        .unwrap()
        .get(0);
    assert_eq!(version, 4, "three additions and one removal");
    let (_, c) = admin.get(&format!("{BASE}/{id}")).await;
    assert!(c["mappings_changed_at"].as_str().unwrap() >= changed.as_str());
    // Another connector's mapping id is not found under this connector.
    let other = create(&admin, minimal(&share)).await;
    let (st, _) = admin
        .delete(&format!("{BASE}/{}/identity-mappings/{}", other["id"].as_str().unwrap(), gm["id"].as_str().unwrap()))
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    srv.stop().await;
}

async fn import(api: &Api, id: &str, csv: &str, content_type: &str) -> (StatusCode, Value) {
    Api::send(
        api.request(reqwest::Method::POST, &format!("{BASE}/{id}/identity-mappings/import"))
            .header("content-type", content_type)
            .body(csv.to_string()),
    )
    .await
}

async fn csv_import_reports_every_row(backend: Backend) {
    let srv = TestServer::start(backend).await;
    let admin = srv.admin();
    let share = admin.share("S").await;
    let c = create(&admin, minimal(&share)).await;
    let id = c["id"].as_str().unwrap();
    let (alice, _) = srv.user("alice").await;
    let (bob, _) = srv.user("bob").await;
    let (_, g) = admin.post("/api/v1/groups", json!({"name": "finance"})).await;
    let grp = g["id"].as_str().unwrap();
    let (st, pre) = admin
        .post(
            &format!("{BASE}/{id}/identity-mappings"),
            json!({"identity_type": "user", "smb_principal": "CORP\\bob", "scaidrive_principal_id": bob}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED);

    let csv = format!(
        "smb_principal,scaidrive_principal_id,identity_type\r\n\
         CORP\\alice,{alice},user\r\n\
         S-1-5-21-1004336348-1177238915-682003330-512,{grp},group\r\n\
         \r\n\
         corp\\BOB,{bob},user\r\n\
         CORP\\ALICE,{alice}\r\n\
         S-1-5-21-x,{alice},user\r\n\
         CORP\\carol,{grp},user\r\n\
         \"CORP\\dave\",usr_01J4M0000000000000000000,user\r\n\
         just-one-column\r\n\
         S-1-5-32-544,{grp}\r\n"
    );
    let (st, r) = import(&admin, id, &csv, "text/csv; charset=utf-8").await;
    assert_eq!(st, StatusCode::OK, "{r}");
    assert_eq!(
        (r["created"].as_u64(), r["skipped"].as_u64(), r["rejected"].as_u64()),
        (Some(3), Some(2), Some(4)),
        "{r}"
    );
    let rows = r["rows"].as_array().unwrap();
    let summary: Vec<(u64, &str)> =
        rows.iter().map(|x| (x["line"].as_u64().unwrap(), x["status"].as_str().unwrap())).collect();
    assert_eq!(
        summary,
        vec![
            (2, "created"),
            (3, "created"),
            (5, "skipped"),
            (6, "skipped"),
            (7, "rejected"),
            (8, "rejected"),
            (9, "rejected"),
            (10, "rejected"),
            (11, "created"),
        ]
    );
    assert!(rows[0]["mapping_id"].as_str().unwrap().starts_with("map_"));
    assert_eq!(rows[2]["mapping_id"], pre["id"], "skipped rows name the existing mapping");
    assert_eq!(rows[2]["error"]["code"], "ALREADY_EXISTS");
    assert_eq!(rows[3]["mapping_id"], rows[0]["mapping_id"], "a duplicate within the file is skipped too");
    assert_eq!(rows[4]["error"]["field"], "smb_principal");
    assert_eq!(rows[5]["error"]["field"], "scaidrive_principal_id");
    assert_eq!(rows[6]["error"]["field"], "scaidrive_principal_id");
    assert_eq!(rows[7]["error"]["code"], "INVALID_ROW");
    assert!(rows[4].get("mapping_id").is_none());
    let (_, list) = admin.get(&format!("{BASE}/{id}/identity-mappings")).await;
    assert_eq!(list["identity_mappings"].as_array().unwrap().len(), 4);
    // Importing again changes nothing.
    let (_, r) = import(&admin, id, &csv, "text/csv").await;
    assert_eq!((r["created"].as_u64(), r["skipped"].as_u64()), (Some(0), Some(5)));

    // Bounds and format.
    let (st, e) = import(&admin, id, "a,b", "application/json").await;
    assert_eq!((st, e["error"]["code"].as_str()), (StatusCode::UNSUPPORTED_MEDIA_TYPE, Some("UNSUPPORTED_MEDIA_TYPE")));
    let many: String = (0..10_001).map(|i| format!("u{i},{alice},user\n")).collect();
    let (st, e) = import(&admin, id, &many, "text/csv").await;
    assert_eq!((st, e["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("TOO_MANY_ROWS")), "{e}");
    let huge = "x".repeat(2 * 1024 * 1024);
    let (st, _) = import(&admin, id, &huge, "text/csv").await;
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE);
    let (st, e) = import(&admin, id, "\"open,x\n", "text/csv").await;
    assert_eq!((st, e["error"]["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("body")));
    srv.stop().await;
}
