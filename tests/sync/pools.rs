//! Worker pools (issue 7): a connector naming a pool has its jobs and connectivity tests run
//! only by that pool's workers; connectors naming none use `default`.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::driver::{Env, Setup};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connector_runs_only_on_its_pool() {
    let mut env = Env::start(Setup::Distributed).await;
    env.write("a.txt", b"site a");
    env.chown_all();
    env.workers.push(env.srv.spawn_worker_in_pool("site-a-1", "site-a"));

    let site = env.connector(json!({"worker_pool": "site-a"})).await;
    let home = env.connector(json!({})).await;
    assert_eq!(env.connector_json(&site).await["worker_pool"], "site-a");
    assert_eq!(env.connector_json(&home).await["worker_pool"], "default");

    for _ in 0..2 {
        let j = env.sync_ok(&site).await;
        assert_eq!(j["worker"], "site-a-1", "{j:#}");
        let j = env.sync_ok(&home).await;
        assert!(["w1", "w2"].contains(&j["worker"].as_str().unwrap()), "{j:#}");
    }
    // Connectivity tests go to the pool too.
    let (st, t) = env.api.post(&site.url("/test"), json!({})).await;
    assert_eq!(st, StatusCode::OK, "{t}");
    assert_eq!(t["success"], true, "{t}");

    // A pool without workers: the job waits in its queue, no other pool's worker takes it,
    // and a connectivity test answers 504.
    env.patch(&site, json!({"worker_pool": "nowhere"})).await;
    let job = env.trigger(&site).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(env.job(&site, &job).await["status"], "queued");
    let (st, _) = env.api.post(&site.url(&format!("/jobs/{job}/cancel")), json!({})).await;
    assert!(st.is_success(), "{st}");

    // Names are checked: they become queue names.
    for bad in ["Site-A", "-a", "a_b", "", &"a".repeat(64)] {
        let (st, e) = env.api.patch(&home.url(""), json!({"worker_pool": bad})).await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{bad:?}: {e}");
        assert_eq!(e["error"]["field"], "worker_pool", "{e}");
    }
    env.finish().await;
}
