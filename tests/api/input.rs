//! Bad input gets a clear 4xx with a machine-readable code and the field at fault.

use e2e_tests::{on_both_backends, Api, Backend, TestServer};
use reqwest::{Method, StatusCode};

on_both_backends!(bad_input_is_answered_with_clear_4xx);

/// (method, path, raw body) → (status, code, field)
async fn check(api: &Api, method: Method, path: &str, body: &str, want: (u16, &str, Option<&str>)) {
    let rb = api.request(method.clone(), path).header("Content-Type", "application/json").body(body.to_string());
    let (st, v) = Api::send(rb).await;
    let got = (st.as_u16(), v["error"]["code"].as_str().unwrap_or(""), v["error"]["field"].as_str());
    assert_eq!(got, want, "{method} {path} {body} → {v}");
}

async fn bad_input_is_answered_with_clear_4xx(backend: Backend) {
    let srv = TestServer::start(backend).await;
    let api = srv.admin();
    let share = api.share("S").await;
    let long = "n".repeat(300);
    let cases: Vec<(Method, String, String, (u16, &str, Option<&str>))> = vec![
        (Method::POST, "/api/v1/shares".into(), "{\"name\":".into(), (400, "MALFORMED_JSON", None)),
        (Method::POST, "/api/v1/shares".into(), "[1,2]".into(), (422, "VALIDATION_FAILED", Some("body"))),
        (Method::POST, "/api/v1/shares".into(), r#"{"name":"x","colour":"red"}"#.into(), (422, "VALIDATION_FAILED", Some("colour"))),
        (Method::POST, "/api/v1/shares".into(), r#"{"description":"no name"}"#.into(), (422, "VALIDATION_FAILED", Some("name"))),
        (Method::POST, "/api/v1/shares".into(), r#"{"name":42}"#.into(), (422, "VALIDATION_FAILED", Some("name"))),
        (Method::POST, "/api/v1/shares".into(), r#"{"name":"  "}"#.into(), (422, "VALIDATION_FAILED", Some("name"))),
        (Method::POST, "/api/v1/shares".into(), format!(r#"{{"name":"{}"}}"#, "s".repeat(300)), (422, "VALIDATION_FAILED", Some("name"))),
        (Method::POST, "/api/v1/folders".into(), format!(r#"{{"share_id":"{share}","path":"/a/../b"}}"#), (422, "INVALID_PATH", Some("path"))),
        (Method::POST, "/api/v1/folders".into(), format!(r#"{{"share_id":"{share}","name":"{long}"}}"#), (422, "NAME_TOO_LONG", Some("name"))),
        (Method::POST, "/api/v1/folders".into(), format!(r#"{{"share_id":"{share}","name":"a/b"}}"#), (422, "INVALID_NAME", Some("name"))),
        (Method::POST, "/api/v1/folders".into(), format!(r#"{{"share_id":"{share}","name":"a\u0000b"}}"#), (422, "INVALID_NAME", Some("name"))),
        (Method::POST, "/api/v1/folders".into(), r#"{"share_id":"shr_01J3H","name":"x"}"#.into(), (404, "NOT_FOUND", Some("share_id"))),
        (Method::POST, format!("/api/v1/permissions/acl/share/{share}"), r#"{"principal_type":"everyone","permissions":["FLY"],"ace_type":"allow"}"#.into(), (422, "VALIDATION_FAILED", Some("permissions"))),
        (Method::POST, format!("/api/v1/permissions/acl/share/{share}"), r#"{"principal_type":"user","principal_id":"usr_nope","permissions":["READ"],"ace_type":"allow"}"#.into(), (422, "VALIDATION_FAILED", Some("principal_id"))),
        (Method::POST, format!("/api/v1/permissions/acl/share/{share}"), r#"{"principal_type":"everyone","permissions":["READ"],"ace_type":"maybe"}"#.into(), (422, "VALIDATION_FAILED", Some("ace_type"))),
        (Method::POST, format!("/api/v1/permissions/acl/disk/{share}"), r#"{"principal_type":"everyone","permissions":["READ"],"ace_type":"allow"}"#.into(), (422, "VALIDATION_FAILED", Some("resource_type"))),
        (Method::PUT, format!("/api/v1/permissions/acl/share/{share}"), r#"{"entries":[{"principal_type":"everyone","permissions":["READ"],"ace_type":"allow"},{"principal_type":"x","permissions":["READ"],"ace_type":"allow"}]}"#.into(), (422, "VALIDATION_FAILED", Some("entries[1].principal_type"))),
        (Method::POST, format!("/api/v1/shares/{share}/members"), r#"{"principal_type":"user","principal_id":"usr_x","role":"god"}"#.into(), (422, "VALIDATION_FAILED", Some("role"))),
        (Method::POST, "/api/v1/users".into(), r#"{"username":"bad name"}"#.into(), (422, "VALIDATION_FAILED", Some("username"))),
        (Method::POST, "/api/v1/uploads".into(), format!(r#"{{"share_id":"{share}","path":"/x","size":-1}}"#), (422, "VALIDATION_FAILED", Some("size"))),
    ];
    for (m, p, b, want) in cases {
        check(&api, m, &p, &b, want).await;
    }

    // Not JSON at all.
    let rb = api.request(Method::POST, "/api/v1/shares").header("Content-Type", "text/plain").body("name=x");
    assert_eq!(Api::send(rb).await.0, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // Oversized JSON body.
    let huge = format!(r#"{{"name":"{}"}}"#, "x".repeat(2 * 1024 * 1024));
    let rb = api.request(Method::POST, "/api/v1/shares").header("Content-Type", "application/json").body(huge);
    assert_eq!(Api::send(rb).await.0, StatusCode::PAYLOAD_TOO_LARGE);
    // Hostile paths on the content endpoints never escape.
    for p in ["/../../etc/passwd", "a/./b", "/x/\u{0}y", "/x/\u{1b}[31m"] {
        let (st, v) = api.upload(&share, p, "x").await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{p}: {v}");
        assert_eq!(v["error"]["field"], "path");
    }
    let (st, v) = api.get(&format!("/api/v1/shares/{share}/items?path=/..")).await;
    assert_eq!((st, v["error"]["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("path")));
    let (st, v) = api.get(&format!("/api/v1/shares/{share}/items?nope=1")).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (st, v) = api.get("/api/v1/sync/changes?cursor=abc").await;
    assert_eq!((st, v["error"]["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("cursor")));
    srv.stop().await;
}
