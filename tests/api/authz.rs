//! The authorization matrix of the REST API. Every endpoint — every operation of the OpenAPI
//! document, the routes it does not list, and the public probes — is called by every kind of
//! caller: none, malformed credentials, a revoked token, a user of another tenant, a user of
//! the tenant without a role, a reader (no MANAGE_PERMISSIONS on the target share) and a
//! proper caller. Each answers as its row says, and:
//!
//! - a refused answer is `{"error": {...}}` only, with the code of its status, and names
//!   nothing of the resource (no ids, names, content);
//! - a refused call changes nothing (a fingerprint of the database is the same after it);
//! - another tenant's objects answer exactly as objects that do not exist;
//! - a caller's own view (lists, its own records) shows nothing of the fixture it may not see.
//!
//! The table must cover the OpenAPI document: an operation without a row fails the test.

use std::collections::{BTreeSet, HashMap};

use e2e_tests::{on_both_backends, Backend, TestServer};
use reqwest::header::HeaderValue;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

on_both_backends!(every_endpoint_answers_every_kind_of_caller_as_the_matrix_says);

/// What a caller gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Want {
    /// Success with this status; the caller may see the fixture.
    Ok(u16),
    /// Success with this status, but only the caller's own view: nothing of the fixture.
    Own(u16),
    /// Refused with this status.
    No(u16),
}

const NF: Want = Want::No(404);
const DENIED: Want = Want::No(403);

/// Who makes the proper call of a row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Proper {
    /// The share's owner: a user with the `owner` role, not a tenant admin.
    Owner,
    /// The tenant admin (for tenant-wide administration).
    Admin,
}

#[derive(Clone, Copy, Debug)]
enum Body {
    None,
    Json(&'static str),
    Raw(&'static str, &'static str),
}

/// One row: a request (templates with `{placeholders}` for fixture ids and `{caller}`) and
/// what each kind of caller gets.
#[derive(Clone, Debug)]
struct Case {
    method: Method,
    /// The OpenAPI path this row covers; `None` for routes the document does not list.
    op: Option<&'static str>,
    path: &'static str,
    body: Body,
    headers: &'static [(&'static str, &'static str)],
    /// No credentials needed: every caller gets `proper`.
    public: bool,
    other_tenant: Want,
    stranger: Want,
    reader: Want,
    proper: (Proper, u16),
}

fn case(method: Method, op: &'static str, path: &'static str) -> Case {
    Case {
        method,
        op: (!op.is_empty()).then_some(op),
        path,
        body: Body::None,
        headers: &[],
        public: false,
        other_tenant: NF,
        stranger: DENIED,
        reader: DENIED,
        proper: (Proper::Owner, 200),
    }
}

impl Case {
    fn json(mut self, body: &'static str) -> Self {
        self.body = Body::Json(body);
        self
    }
    fn raw(mut self, body: &'static str, content_type: &'static str) -> Self {
        self.body = Body::Raw(body, content_type);
        self
    }
    fn headers(mut self, h: &'static [(&'static str, &'static str)]) -> Self {
        self.headers = h;
        self
    }
    fn want(mut self, other_tenant: Want, stranger: Want, reader: Want, proper: u16) -> Self {
        (self.other_tenant, self.stranger, self.reader, self.proper.1) = (other_tenant, stranger, reader, proper);
        self
    }
    /// Needs READ on the share: the reader succeeds, the stranger is refused.
    fn read(self, ok: u16) -> Self {
        self.want(NF, DENIED, Want::Ok(ok), ok)
    }
    /// Needs more than READ (WRITE, CREATE, DELETE or MANAGE_PERMISSIONS on the share).
    fn write(self, ok: u16) -> Self {
        self.want(NF, DENIED, DENIED, ok)
    }
    /// Tenant-wide administration: tenant admins only; another tenant's admin acts in its own.
    fn admin_only(mut self, ok: u16) -> Self {
        self.proper.0 = Proper::Admin;
        self.want(Want::Own(ok), DENIED, DENIED, ok)
    }
    fn by_admin(mut self) -> Self {
        self.proper.0 = Proper::Admin;
        self
    }
    fn public(mut self) -> Self {
        self.public = true;
        self
    }
}

const OCTET: &str = "application/octet-stream";
const ACL: &str = "/api/v1/permissions/acl/{resource_type}/{resource_id}";
const CNN: &str = "/api/v1/smb-connectors/{id}";
const PASSWORD: &str = "Authz-pw-9c1e77";
const CONTENT: &str = "quarterly-secret-figures";

/// Every endpoint, with what each kind of caller gets.
fn table() -> Vec<Case> {
    use Want::{No, Ok, Own};
    let (get, post, put, patch, delete) = (Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE);
    vec![
        // Public probes.
        case(get.clone(), "", "/healthz").public(),
        case(get.clone(), "", "/readyz").public(),
        // The document itself: any authenticated caller.
        case(get.clone(), "", "/api/v1/openapi.json").want(Ok(200), Ok(200), Ok(200), 200),
        // Accounts.
        case(get.clone(), "/api/v1/users/me", "/api/v1/users/me").want(Own(200), Ok(200), Ok(200), 200),
        case(get.clone(), "/api/v1/users", "/api/v1/users").want(Own(200), Ok(200), Ok(200), 200),
        case(post.clone(), "/api/v1/users", "/api/v1/users").json(r#"{"username":"u-{caller}"}"#).admin_only(201),
        case(get.clone(), "/api/v1/groups", "/api/v1/groups").want(Own(200), Ok(200), Ok(200), 200),
        case(post.clone(), "/api/v1/groups", "/api/v1/groups").json(r#"{"name":"g-{caller}"}"#).admin_only(201),
        case(get.clone(), "/api/v1/groups/{id}/members", "/api/v1/groups/{group}/members")
            .want(NF, Ok(200), Ok(200), 200),
        case(post.clone(), "/api/v1/groups/{id}/members", "/api/v1/groups/{group}/members")
            .json(r#"{"user_id":"{bystander}"}"#)
            .write(204)
            .by_admin(),
        case(delete.clone(), "/api/v1/groups/{id}/members/{user_id}", "/api/v1/groups/{group2}/members/{bystander}")
            .write(204)
            .by_admin(),
        case(get.clone(), "/api/v1/tokens", "/api/v1/tokens").want(Own(200), Own(200), Own(200), 200),
        case(post.clone(), "/api/v1/tokens", "/api/v1/tokens")
            .json(r#"{"name":"t-{caller}"}"#)
            .want(Own(201), Own(201), Own(201), 201),
        // Someone else's token is not found, whoever asks (tenant admins aside).
        case(delete.clone(), "/api/v1/tokens/{id}", "/api/v1/tokens/{token_del}").want(NF, NF, NF, 204),
        // Shares.
        case(post.clone(), "/api/v1/shares", "/api/v1/shares")
            .json(r#"{"name":"s-{caller}"}"#)
            .want(Own(201), Ok(201), Ok(201), 201),
        case(get.clone(), "/api/v1/shares", "/api/v1/shares").want(Own(200), Own(200), Ok(200), 200),
        case(get.clone(), "/api/v1/shares/{id}", "/api/v1/shares/{share}").read(200),
        case(get.clone(), "/api/v1/shares/{id}/members", "/api/v1/shares/{share}/members").read(200),
        case(post.clone(), "/api/v1/shares/{id}/members", "/api/v1/shares/{share}/members")
            .json(r#"{"principal_type":"user","principal_id":"{bystander}","role":"reader"}"#)
            .write(201),
        case(delete.clone(), "/api/v1/shares/{id}/members/{principal_id}", "/api/v1/shares/{share}/members/{member2}")
            .write(204),
        // Folders and files.
        case(get.clone(), "/api/v1/shares/{id}/children", "/api/v1/shares/{share}/children").read(200),
        case(get.clone(), "/api/v1/shares/{id}/items", "/api/v1/shares/{share}/items?path=/Docs/report.txt").read(200),
        case(get.clone(), "/api/v1/shares/{id}/trash", "/api/v1/shares/{share}/trash").read(200),
        case(put.clone(), "/api/v1/shares/{share_id}/files", "/api/v1/shares/{share}/files?path=/Docs/up-{caller}.txt")
            .raw("new content", OCTET)
            .write(201),
        case(post.clone(), "/api/v1/folders", "/api/v1/folders")
            .json(r#"{"share_id":"{share}","name":"dir-{caller}"}"#)
            .write(201),
        case(get.clone(), "/api/v1/files/{id}", "/api/v1/files/{file}").read(200),
        case(patch.clone(), "/api/v1/files/{id}", "/api/v1/files/{file_patch}")
            .json(r#"{"name":"renamed-{caller}.txt"}"#)
            .write(200),
        case(delete.clone(), "/api/v1/files/{id}", "/api/v1/files/{file_del}").write(204),
        case(post.clone(), "/api/v1/files/{id}/restore", "/api/v1/files/{file_trashed}/restore").write(200),
        case(get.clone(), "/api/v1/files/{id}/content", "/api/v1/files/{file}/content").read(200),
        case(put.clone(), "/api/v1/files/{id}/content", "/api/v1/files/{file}/content").raw("v3", OCTET).write(200),
        case(get.clone(), "/api/v1/files/{id}/versions", "/api/v1/files/{file}/versions").read(200),
        case(
            get.clone(),
            "/api/v1/files/{id}/versions/{version_id}/content",
            "/api/v1/files/{file}/versions/{version}/content",
        )
        .read(200),
        case(
            post.clone(),
            "/api/v1/files/{id}/versions/{version_id}/restore",
            "/api/v1/files/{file}/versions/{version}/restore",
        )
        .write(200),
        case(get.clone(), "/api/v1/folders/{id}/children", "/api/v1/folders/{folder}/children").read(200),
        // The folder routes of the item handlers (the document lists them under /files).
        case(get.clone(), "", "/api/v1/folders/{folder}").read(200),
        case(patch.clone(), "", "/api/v1/folders/{folder_patch}").json(r#"{"name":"renamed-dir-{caller}"}"#).write(200),
        case(delete.clone(), "", "/api/v1/folders/{folder_del}").write(204),
        case(post.clone(), "", "/api/v1/folders/{folder_trashed}/restore").write(200),
        // Resumable uploads belong to the user who started them: anyone else gets 404.
        case(post.clone(), "/api/v1/uploads", "/api/v1/uploads")
            .json(r#"{"share_id":"{share}","path":"/Docs/res-{caller}.bin"}"#)
            .write(201),
        case(put.clone(), "/api/v1/uploads/{id}", "/api/v1/uploads/{upload}")
            .raw("part", OCTET)
            .headers(&[("Upload-Offset", "0")])
            .want(NF, NF, NF, 200),
        case(get.clone(), "/api/v1/uploads/{id}", "/api/v1/uploads/{upload}").want(NF, NF, NF, 200),
        case(post.clone(), "/api/v1/uploads/{id}/complete", "/api/v1/uploads/{upload_done}/complete")
            .want(NF, NF, NF, 201),
        case(delete.clone(), "/api/v1/uploads/{id}", "/api/v1/uploads/{upload_abort}").want(NF, NF, NF, 204),
        // ACLs and effective permissions.
        case(get.clone(), ACL, "/api/v1/permissions/acl/share/{share}").read(200),
        case(get.clone(), ACL, "/api/v1/permissions/acl/file/{file}").read(200),
        case(post.clone(), ACL, "/api/v1/permissions/acl/folder/{folder}")
            .json(r#"{"principal_type":"user","principal_id":"{bystander}","permissions":["WRITE"],"ace_type":"deny"}"#)
            .write(201),
        case(put.clone(), ACL, "/api/v1/permissions/acl/file/{file_acl}")
            .json(r#"{"inherit_from_parent":true,"entries":[{"principal_type":"user","principal_id":"{bystander}","permissions":["READ"],"ace_type":"allow"}]}"#)
            .write(200),
        case(delete.clone(), ACL, "/api/v1/permissions/acl/file/{file_acl}").write(204),
        case(
            delete.clone(),
            "/api/v1/permissions/acl/{resource_type}/{resource_id}/entries/{entry_id}",
            "/api/v1/permissions/acl/folder/{folder}/entries/{entry}",
        )
        .write(204),
        // One's own permissions are one's own business; someone else's need MANAGE_PERMISSIONS.
        case(
            get.clone(),
            "/api/v1/permissions/effective",
            "/api/v1/permissions/effective?resource_type=share&resource_id={share}",
        )
        .want(NF, Ok(200), Ok(200), 200),
        case(
            get.clone(),
            "/api/v1/permissions/effective",
            "/api/v1/permissions/effective?resource_type=file&resource_id={file}&user_id={bystander}",
        )
        .write(200),
        case(post.clone(), "/api/v1/permissions/check", "/api/v1/permissions/check")
            .json(r#"{"resource_type":"file","resource_id":"{file}","permissions":["READ"]}"#)
            .want(NF, Ok(200), Ok(200), 200),
        case(post.clone(), "/api/v1/permissions/check", "/api/v1/permissions/check")
            .json(r#"{"resource_type":"folder","resource_id":"{folder}","permissions":["READ"],"user_id":"{bystander}"}"#)
            .write(200),
        // The change log.
        case(get.clone(), "/api/v1/sync/changes", "/api/v1/sync/changes?share_id={share}").read(200),
        case(get.clone(), "/api/v1/sync/changes", "/api/v1/sync/changes").want(Own(200), Own(200), Ok(200), 200),
        // Connectors: MANAGE_PERMISSIONS on the target share. The target share of a new
        // connector is named in the body, so another tenant's is a 422 on that field, exactly
        // as for a share that does not exist.
        case(post.clone(), "/api/v1/smb-connectors", "/api/v1/smb-connectors")
            .json(r#"{"name":"c-{caller}","server_host":"10.0.0.9","share_name":"Data","username":"svc","password":"Authz-pw-9c1e77","target_share_id":"{share}","target_path":"/cn-{caller}","sync_interval_minutes":0}"#)
            .want(No(422), DENIED, DENIED, 201),
        case(get.clone(), "/api/v1/smb-connectors", "/api/v1/smb-connectors").want(Own(200), Own(200), Own(200), 200),
        case(get.clone(), CNN, "/api/v1/smb-connectors/{cnn}").write(200),
        case(patch.clone(), CNN, "/api/v1/smb-connectors/{cnn}").json(r#"{"description":"by {caller}"}"#).write(200),
        case(delete.clone(), CNN, "/api/v1/smb-connectors/{cnn_del}").write(204),
        case(post.clone(), "/api/v1/smb-connectors/test", "/api/v1/smb-connectors/test")
            .json(r#"{"server_host":"10.0.0.9","share_name":"Data","username":"svc","password":"Authz-pw-9c1e77","target_share_id":"{share}"}"#)
            .write(200),
        case(post.clone(), "/api/v1/smb-connectors/{id}/test", "/api/v1/smb-connectors/{cnn}/test").write(200),
        case(post.clone(), "/api/v1/smb-connectors/{id}/sync", "/api/v1/smb-connectors/{cnn_sync}/sync").write(202),
        case(get.clone(), "/api/v1/smb-connectors/{id}/jobs", "/api/v1/smb-connectors/{cnn}/jobs").write(200),
        case(get.clone(), "/api/v1/smb-connectors/{id}/jobs/{job_id}", "/api/v1/smb-connectors/{cnn}/jobs/{job}")
            .write(200),
        case(
            post.clone(),
            "/api/v1/smb-connectors/{id}/jobs/{job_id}/cancel",
            "/api/v1/smb-connectors/{cnn}/jobs/{job}/cancel",
        )
        .write(202),
        case(get.clone(), "/api/v1/smb-connectors/{id}/file-states", "/api/v1/smb-connectors/{cnn}/file-states")
            .write(200),
        case(
            post.clone(),
            "/api/v1/smb-connectors/{id}/identity-mappings",
            "/api/v1/smb-connectors/{cnn}/identity-mappings",
        )
        .json(r#"{"identity_type":"user","smb_principal":"CORP\\{caller}","scaidrive_principal_id":"{bystander}"}"#)
        .write(201),
        case(
            get.clone(),
            "/api/v1/smb-connectors/{id}/identity-mappings",
            "/api/v1/smb-connectors/{cnn}/identity-mappings",
        )
        .write(200),
        case(
            delete.clone(),
            "/api/v1/smb-connectors/{id}/identity-mappings/{map_id}",
            "/api/v1/smb-connectors/{cnn}/identity-mappings/{mapping}",
        )
        .write(204),
        case(
            post.clone(),
            "/api/v1/smb-connectors/{id}/identity-mappings/import",
            "/api/v1/smb-connectors/{cnn}/identity-mappings/import",
        )
        .raw("smb_principal,scaidrive_principal_id\nCORP\\imported,{bystander}\n", "text/csv")
        .write(200),
        // The trailing-slash spellings of the connector routes answer the same.
        case(get.clone(), "", "/api/v1/smb-connectors/{cnn}/").write(200),
        case(get.clone(), "", "/api/v1/smb-connectors/{cnn}/jobs/").write(200),
    ]
}

/// Answers every connectivity test like a worker that cannot reach the file server, so the
/// test endpoints answer at once (no worker runs here).
pub async fn answer_connection_tests(srv: &TestServer) -> tokio::task::JoinHandle<()> {
    let queue = srv.state.queue.clone();
    let mut consumer = queue.consume(api_server::fleet::TESTS_QUEUE, 8).await.expect("consume connection tests");
    tokio::spawn(async move {
        while let Some(Ok(d)) = consumer.next().await {
            let answer = proto::v1::TestConnectionResult {
                success: false,
                message: "the file server is unreachable".into(),
                error: Some(proto::v1::TestConnectionError {
                    code: "CONNECTOR_UNREACHABLE".into(),
                    nt_status: None,
                    message: "the file server is unreachable".into(),
                }),
            };
            let _ = queue.reply(&d, jobqueue::Message::new(prost::Message::encode_to_vec(&answer))).await;
            let _ = d.ack().await;
        }
    })
}

/// A well-formed id of the same kind as `id` that names nothing.
fn bogus(id: &str) -> String {
    let prefix = id.split_once('_').map(|(p, _)| p).unwrap_or("x");
    format!("{prefix}_{}", ulid::Ulid::new())
}

/// Fills `{key}` placeholders; unknown `{...}` (JSON braces) stay as they are.
fn fill(template: &str, ids: &HashMap<&'static str, String>, caller: &str) -> String {
    let mut out = template.replace("{caller}", caller);
    for (k, v) in ids {
        out = out.replace(&format!("{{{k}}}"), v);
    }
    out
}

/// A summary of everything a call could change: equal before and after a refused call.
async fn fingerprint(srv: &TestServer) -> String {
    let parts = [
        "SELECT COUNT(*) FROM users",
        "SELECT COUNT(*) FROM groups",
        "SELECT COUNT(*) FROM group_members",
        "SELECT COUNT(*) FROM api_tokens",
        "SELECT COUNT(*) FROM api_tokens WHERE revoked_at IS NOT NULL",
        "SELECT COUNT(*) FROM shares",
        "SELECT COALESCE(SUM(updated_at), 0) FROM shares",
        "SELECT COUNT(*) FROM share_members",
        "SELECT COUNT(*) FROM nodes",
        "SELECT COUNT(*) FROM nodes WHERE deleted_at IS NOT NULL",
        "SELECT COALESCE(SUM(updated_at), 0) FROM nodes",
        "SELECT COUNT(*) FROM versions",
        "SELECT COUNT(*) FROM acls",
        "SELECT COALESCE(SUM(inherit_from_parent), 0) FROM acls",
        "SELECT COUNT(*) FROM acl_entries",
        "SELECT COUNT(*) FROM changes",
        "SELECT COALESCE(SUM(change_seq), 0) FROM tenants",
        "SELECT COUNT(*) FROM upload_sessions",
        "SELECT COALESCE(SUM(received), 0) FROM upload_sessions",
        "SELECT COUNT(*) FROM connectors",
        "SELECT COALESCE(SUM(updated_at), 0) FROM connectors",
        "SELECT COUNT(*) FROM identity_mappings",
        "SELECT COUNT(*) FROM jobs",
        "SELECT COUNT(*) FROM jobs WHERE status = 'queued'",
        "SELECT COALESCE(SUM(cancel_requested), 0) FROM jobs",
        "SELECT COUNT(*) FROM job_events",
    ];
    let sql = format!(
        "SELECT {}",
        parts.iter().map(|p| format!("CAST(({p}) AS TEXT)")).collect::<Vec<_>>().join(" || ',' || ")
    );
    let (fp,): (String,) = sqlx::query_as(&sql).fetch_one(&srv.state.db.pool).await.expect("fingerprint");
    fp
}

/// The tenant's fixture and the callers.
struct World {
    srv: TestServer,
    http: reqwest::Client,
    ids: HashMap<&'static str, String>,
    /// What no refusal and no other tenant's view may show: every id, name and content of
    /// the fixture, and the tenant's user ids.
    tenant_secrets: Vec<String>,
    /// What the tenant's users without a role may not see in their own views.
    resource_secrets: Vec<String>,
    owner: String,
    admin: String,
    reader: String,
    stranger: String,
    other_tenant: String,
    revoked: String,
}

fn id_of(v: &Value, pointer: &str) -> String {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or_else(|| panic!("{pointer} in {v}")).to_string()
}

async fn world(backend: Backend) -> World {
    let srv = TestServer::start(backend).await;
    let admin = srv.admin();
    let (owner_id, owner) = srv.user("owner").await;
    let (reader_id, reader) = srv.user("reader").await;
    let (stranger_id, stranger) = srv.user("stranger").await;
    let (bystander_id, _) = srv.user("bystander").await;
    let (member2_id, _) = srv.user("member2").await;
    let mut ids: HashMap<&'static str, String> = HashMap::new();

    let share = owner.share("Authz-Main-Share").await;
    for (who, role) in [(&reader_id, "reader"), (&member2_id, "reader")] {
        let (st, m) = owner
            .post(
                &format!("/api/v1/shares/{share}/members"),
                json!({"principal_type": "user", "principal_id": who, "role": role}),
            )
            .await;
        assert_eq!(st, StatusCode::CREATED, "{m}");
    }
    let up = |path: &'static str, body: &'static str| {
        let owner = owner.clone();
        let share = share.clone();
        async move {
            let (st, f) = owner.upload(&share, path, body).await;
            assert!(st.is_success(), "{path}: {f}");
            f
        }
    };
    let first = up("/Docs/report.txt", "first quarterly-secret-figures").await;
    up("/Docs/report.txt", CONTENT).await;
    ids.insert("file", id_of(&first, "/file/id"));
    ids.insert("folder", id_of(&first, "/file/parent_id"));
    ids.insert("version", id_of(&first, "/version/id"));
    ids.insert("file_patch", id_of(&up("/Docs/patch-me.txt", "p").await, "/file/id"));
    ids.insert("file_del", id_of(&up("/Docs/delete-me.txt", "d").await, "/file/id"));
    ids.insert("file_acl", id_of(&up("/Docs/acl-me.txt", "a").await, "/file/id"));
    let trashed = id_of(&up("/Docs/trashed.txt", "t").await, "/file/id");
    assert_eq!(owner.delete(&format!("/api/v1/files/{trashed}")).await.0, StatusCode::NO_CONTENT);
    ids.insert("file_trashed", trashed);
    for (key, name) in [("folder_patch", "PatchDir"), ("folder_del", "DelDir"), ("folder_trashed", "TrashedDir")] {
        let (st, f) = owner.post("/api/v1/folders", json!({"share_id": share, "name": name})).await;
        assert_eq!(st, StatusCode::CREATED, "{f}");
        ids.insert(key, id_of(&f, "/id"));
    }
    assert_eq!(owner.delete(&format!("/api/v1/folders/{}", ids["folder_trashed"])).await.0, StatusCode::NO_CONTENT);
    let (st, e) = owner
        .post(
            &format!("/api/v1/permissions/acl/folder/{}", ids["folder"]),
            json!({"principal_type": "user", "principal_id": bystander_id, "permissions": ["READ"], "ace_type": "allow"}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{e}");
    ids.insert("entry", id_of(&e, "/id"));
    for (key, path) in
        [("upload", "/Docs/part.bin"), ("upload_done", "/Docs/done.bin"), ("upload_abort", "/Docs/x.bin")]
    {
        let (st, u) = owner.post("/api/v1/uploads", json!({"share_id": share, "path": path})).await;
        assert_eq!(st, StatusCode::CREATED, "{u}");
        ids.insert(key, id_of(&u, "/id"));
    }
    for (key, name) in [("group", "authz-g1"), ("group2", "authz-g2")] {
        let (st, g) = admin.post("/api/v1/groups", json!({"name": name})).await;
        assert_eq!(st, StatusCode::CREATED, "{g}");
        ids.insert(key, id_of(&g, "/id"));
    }
    let (st, _) =
        admin.post(&format!("/api/v1/groups/{}/members", ids["group2"]), json!({"user_id": bystander_id})).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (_, t) = owner.post("/api/v1/tokens", json!({"name": "to-revoke"})).await;
    ids.insert("token_del", id_of(&t, "/id"));
    let (_, t) = owner.post("/api/v1/tokens", json!({"name": "revoked"})).await;
    let revoked = id_of(&t, "/token");
    assert_eq!(owner.delete(&format!("/api/v1/tokens/{}", id_of(&t, "/id"))).await.0, StatusCode::NO_CONTENT);
    for (key, name) in [("cnn", "Main FS"), ("cnn_del", "Doomed FS"), ("cnn_sync", "Sync FS")] {
        let (st, c) = owner
            .post(
                "/api/v1/smb-connectors",
                json!({"name": name, "server_host": "10.0.0.9", "share_name": "Data", "username": "svc",
                       "password": PASSWORD, "target_share_id": share, "target_path": "/From FS",
                       "sync_interval_minutes": 0}),
            )
            .await;
        assert_eq!(st, StatusCode::CREATED, "{c}");
        ids.insert(key, id_of(&c, "/id"));
    }
    let (st, j) = owner.post(&format!("/api/v1/smb-connectors/{}/sync", ids["cnn"]), json!({})).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{j}");
    ids.insert("job", id_of(&j, "/id"));
    let (st, m) = owner
        .post(
            &format!("/api/v1/smb-connectors/{}/identity-mappings", ids["cnn"]),
            json!({"identity_type": "user", "smb_principal": "CORP\\alice", "scaidrive_principal_id": bystander_id}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{m}");
    ids.insert("mapping", id_of(&m, "/id"));
    ids.insert("share", share);
    ids.insert("bystander", bystander_id.clone());
    ids.insert("member2", member2_id.clone());

    // Another tenant, and its most powerful user.
    let other_tenant = srv.other_tenant_token("authz-other", "super_admin").await;

    let mut resource_secrets: Vec<String> =
        ids.iter().filter(|(k, _)| !["bystander", "member2"].contains(k)).map(|(_, v)| v.clone()).collect();
    resource_secrets.extend(
        ["Authz-Main-Share", "report.txt", "quarterly-secret", PASSWORD, "From FS", "Main FS"].map(String::from),
    );
    let mut tenant_secrets = resource_secrets.clone();
    let (_, me) = admin.get("/api/v1/users/me").await;
    tenant_secrets.extend([owner_id, reader_id, stranger_id, bystander_id, member2_id, id_of(&me, "/id")]);
    let token = |a: &e2e_tests::Api| a.token.clone().unwrap();
    World {
        http: reqwest::Client::new(),
        ids,
        tenant_secrets,
        resource_secrets,
        owner: token(&owner),
        admin: srv.admin_token.clone(),
        reader: token(&reader),
        stranger: token(&stranger),
        other_tenant,
        revoked,
        srv,
    }
}

impl World {
    async fn call(
        &self,
        c: &Case,
        auth: Option<&HeaderValue>,
        ids: &HashMap<&'static str, String>,
        caller: &str,
    ) -> (StatusCode, String) {
        let url = format!("{}{}", self.srv.url, fill(c.path, ids, caller));
        let mut rb = self.http.request(c.method.clone(), url);
        if let Some(a) = auth {
            rb = rb.header(reqwest::header::AUTHORIZATION, a.clone());
        }
        for (k, v) in c.headers {
            rb = rb.header(*k, *v);
        }
        rb = match c.body {
            Body::None => rb,
            Body::Json(b) => rb.header("Content-Type", "application/json").body(fill(b, ids, caller)),
            Body::Raw(b, ct) => rb.header("Content-Type", ct).body(fill(b, ids, caller)),
        };
        let resp = rb.send().await.unwrap_or_else(|e| panic!("{} {}: {e}", c.method, c.path));
        let st = resp.status();
        (st, String::from_utf8_lossy(&resp.bytes().await.expect("body")).into_owned())
    }
}

fn bearer(token: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("Bearer {token}")).unwrap()
}

/// A refusal: the error object only, with the code of its status, naming nothing secret.
fn assert_refusal(ctx: &str, status: StatusCode, text: &str, secrets: &[String]) -> (u16, String, Option<String>) {
    let body: Value = serde_json::from_str(text).unwrap_or_else(|_| panic!("{ctx}: not JSON: {text}"));
    let obj = body.as_object().unwrap_or_else(|| panic!("{ctx}: {text}"));
    assert_eq!(obj.keys().collect::<Vec<_>>(), vec!["error"], "{ctx}: only the error: {text}");
    let err = body["error"].as_object().unwrap_or_else(|| panic!("{ctx}: {text}"));
    for k in err.keys() {
        assert!(["code", "message", "field", "details"].contains(&k.as_str()), "{ctx}: unexpected '{k}' in {text}");
    }
    assert!(err.get("details").is_none(), "{ctx}: a refusal carries no details: {text}");
    let code = body["error"]["code"].as_str().unwrap_or_else(|| panic!("{ctx}: no code: {text}")).to_string();
    let want_code = match status.as_u16() {
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        422 => "VALIDATION_FAILED",
        other => panic!("{ctx}: {other} is not a refusal status: {text}"),
    };
    assert_eq!(code, want_code, "{ctx}: {text}");
    assert!(body["error"]["message"].is_string(), "{ctx}: {text}");
    for s in secrets {
        assert!(!text.contains(s.as_str()), "{ctx}: the refusal shows '{s}': {text}");
    }
    (status.as_u16(), code, body["error"]["field"].as_str().map(str::to_string))
}

fn assert_own_view(ctx: &str, text: &str, secrets: &[String]) {
    for s in secrets {
        assert!(!text.contains(s.as_str()), "{ctx}: the caller's own view shows '{s}': {text}");
    }
}

async fn every_endpoint_answers_every_kind_of_caller_as_the_matrix_says(backend: Backend) {
    let w = world(backend).await;
    let _tests = answer_connection_tests(&w.srv).await;
    let table = table();

    // The table covers the document, and names only operations it has.
    let (st, doc) = w.srv.client(Some(&w.owner)).get("/api/v1/openapi.json").await;
    assert_eq!(st, StatusCode::OK);
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for m in ["get", "post", "put", "patch", "delete", "head", "options", "trace"] {
            if item.get(m).is_some() {
                documented.insert((m.to_uppercase(), path.clone()));
            }
        }
    }
    let covered: BTreeSet<(String, String)> =
        table.iter().filter_map(|c| c.op.map(|op| (c.method.to_string(), op.to_string()))).collect();
    let missing: Vec<_> = documented.difference(&covered).collect();
    assert!(missing.is_empty(), "operations of the OpenAPI document without a row: {missing:?}");
    let unknown: Vec<_> = covered.difference(&documented).collect();
    assert!(unknown.is_empty(), "rows naming operations the document does not have: {unknown:?}");

    let unauthenticated: Vec<(&str, HeaderValue)> = vec![
        ("a garbage token", bearer("garbage")),
        ("an unknown token", bearer(&format!("sdt_{}", "0".repeat(64)))),
        ("a token with a tail", bearer(&format!("{}x", w.owner))),
        ("an empty bearer", HeaderValue::from_static("Bearer ")),
        ("another scheme", HeaderValue::from_static("Basic b3duZXI6cGFzc3dvcmQ=")),
        ("a bare token", HeaderValue::from_str(&w.owner).unwrap()),
        ("a non-UTF-8 header", HeaderValue::from_bytes(b"Bearer \xff\xfe\xfd").unwrap()),
        ("a huge token", bearer(&format!("sdt_{}", "a".repeat(8000)))),
        ("a revoked token", bearer(&w.revoked)),
    ];
    let bogus_ids: HashMap<&'static str, String> = w.ids.iter().map(|(k, v)| (*k, bogus(v))).collect();
    let mut calls = 0usize;
    for c in &table {
        let row = format!("{} {}", c.method, c.path);
        let proper_token = match c.proper.0 {
            Proper::Owner => &w.owner,
            Proper::Admin => &w.admin,
        };
        if c.public {
            for (label, auth) in [("anonymous", None), ("owner", Some(bearer(&w.owner)))] {
                let (st, text) = w.call(c, auth.as_ref(), &w.ids, label).await;
                calls += 1;
                assert_eq!(st.as_u16(), c.proper.1, "{row} as {label}: {text}");
            }
            continue;
        }

        // Without valid credentials: 401, the error only, nothing changed.
        let before = fingerprint(&w.srv).await;
        let (st, text) = w.call(c, None, &w.ids, "anonymous").await;
        assert_eq!(st, StatusCode::UNAUTHORIZED, "{row} without credentials: {text}");
        assert_refusal(&format!("{row} without credentials"), st, &text, &w.tenant_secrets);
        for (label, auth) in &unauthenticated {
            let (st, text) = w.call(c, Some(auth), &w.ids, "anonymous").await;
            assert_eq!(st, StatusCode::UNAUTHORIZED, "{row} with {label}: {text}");
            assert_refusal(&format!("{row} with {label}"), st, &text, &w.tenant_secrets);
        }
        calls += 1 + unauthenticated.len();
        assert_eq!(fingerprint(&w.srv).await, before, "{row}: an unauthenticated call changed something");

        for (caller, label, token, want) in [
            ("other", "another tenant's admin", &w.other_tenant, c.other_tenant),
            ("stranger", "a user without a role", &w.stranger, c.stranger),
            ("reader", "a reader of the share", &w.reader, c.reader),
        ] {
            let ctx = format!("{row} as {label}");
            let secrets = if caller == "other" { &w.tenant_secrets } else { &w.resource_secrets };
            let before = fingerprint(&w.srv).await;
            let (st, text) = w.call(c, Some(&bearer(token)), &w.ids, caller).await;
            calls += 1;
            match want {
                Want::Ok(s) => assert_eq!(st.as_u16(), s, "{ctx}: {text}"),
                Want::Own(s) => {
                    assert_eq!(st.as_u16(), s, "{ctx}: {text}");
                    assert_own_view(&ctx, &text, secrets);
                }
                Want::No(s) => {
                    assert_eq!(st.as_u16(), s, "{ctx}: {text}");
                    let got = assert_refusal(&ctx, st, &text, &w.tenant_secrets);
                    assert_eq!(fingerprint(&w.srv).await, before, "{ctx}: a refused call changed something");
                    if caller == "other" {
                        // Exactly what the proper caller gets for ids that do not exist.
                        let (st, text) = w.call(c, Some(&bearer(proper_token)), &bogus_ids, "bogus").await;
                        calls += 1;
                        let absent = assert_refusal(&format!("{row} with unknown ids"), st, &text, &w.tenant_secrets);
                        assert_eq!(got, absent, "{ctx}: another tenant's objects must look absent");
                        assert_eq!(
                            fingerprint(&w.srv).await,
                            before,
                            "{row}: a call with unknown ids changed something"
                        );
                    }
                }
            }
        }

        let (st, text) = w.call(c, Some(&bearer(proper_token)), &w.ids, "proper").await;
        calls += 1;
        assert_eq!(st.as_u16(), c.proper.1, "{row} as the proper caller ({:?}): {text}", c.proper.0);
    }
    eprintln!("authorization matrix: {} rows, {} calls", table.len(), calls);
    w.srv.stop().await;
}
