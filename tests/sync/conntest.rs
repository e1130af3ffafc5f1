//! The connectivity test, carried out by a worker: success, each failure with its code and
//! SMB status, an unsaved configuration, and no worker answering.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::driver::{Conn, Env, Setup};

on_both_setups!(connectivity_test_reports_success_and_each_failure);

async fn test(env: &Env, c: &Conn) -> Value {
    let (st, r) = env.api.post(&c.url("/test"), json!({})).await;
    assert_eq!(st, StatusCode::OK, "{r}\n{}", env.logs());
    r
}

fn assert_failure(r: &Value, code: &str) {
    assert_eq!(r["success"], false, "{r}");
    assert_eq!(r["error"]["code"], code, "{r}");
    assert!(!r["message"].as_str().unwrap_or("").is_empty(), "a human message: {r}");
}

async fn connectivity_test_reports_success_and_each_failure(setup: Setup) {
    let env = Env::start(setup).await;
    env.mkdir("2026");
    let c = env.connector(json!({"base_path": "2026"})).await;
    let r = test(&env, &c).await;
    assert_eq!(
        r,
        json!({"success": true, "message": "Connected to 127.0.0.1\\Share as CORP\\scaidrive-svc", "error": null})
    );

    env.patch(&c, json!({"password": "not-the-password-42"})).await;
    let r = test(&env, &c).await;
    assert_failure(&r, "CONNECTOR_AUTH_FAILED");
    assert_eq!(r["error"]["nt_status"], "0xC000006D", "{r}");

    let (_, _, pw) = env.samba.service_account();
    env.patch(&c, json!({"password": pw, "share_name": "NoSuchShare"})).await;
    let r = test(&env, &c).await;
    assert_failure(&r, "CONNECTOR_SHARE_NOT_FOUND");

    env.patch(&c, json!({"share_name": "Share", "base_path": "2026/missing"})).await;
    let r = test(&env, &c).await;
    assert_failure(&r, "CONNECTOR_PATH_NOT_FOUND");

    // An unsaved configuration.
    let (d, u, p) = env.samba.service_account();
    let body = |pw: &str| {
        json!({"server_host": "127.0.0.1", "server_port": env.samba.port(), "share_name": "Share", "base_path": "2026",
               "domain": d, "username": u, "password": pw, "target_share_id": c.share})
    };
    let (st, r) = env.api.post("/api/v1/smb-connectors/test", body(&p)).await;
    assert_eq!(st, StatusCode::OK, "{r}");
    assert_eq!(r["success"], true, "{r}");
    assert_eq!(r["message"], "Connected to 127.0.0.1\\Share as CORP\\scaidrive-svc");
    let (st, r) = env.api.post("/api/v1/smb-connectors/test", body("wrong-one-77")).await;
    assert_eq!(st, StatusCode::OK, "{r}");
    assert_failure(&r, "CONNECTOR_AUTH_FAILED");
    env.finish().await;
}

/// No worker to carry the test out: the caller waits (30 s, bounded) and gets its own code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connectivity_test_without_a_worker_times_out() {
    let srv = e2e_tests::TestServer::start_with(
        e2e_tests::Backend::Sqlite,
        e2e_tests::Options { embedded_workers: 0, ..Default::default() },
    )
    .await;
    let api = srv.admin();
    let share = api.share("T").await;
    let t0 = std::time::Instant::now();
    let (st, r) = api
        .post(
            "/api/v1/smb-connectors/test",
            json!({"server_host": "127.0.0.1", "server_port": 1, "share_name": "Share", "username": "u", "password": "p-secret-1",
                   "target_share_id": share}),
        )
        .await;
    assert_eq!(st, StatusCode::GATEWAY_TIMEOUT, "{r}");
    assert_eq!(r["success"], false, "{r}");
    assert_eq!(r["error"]["code"], "CONNECTOR_TEST_TIMEOUT", "{r}");
    assert!(t0.elapsed() < std::time::Duration::from_secs(45));
    srv.stop().await;
}
