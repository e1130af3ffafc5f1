//! The connector's password never leaves the server: not in a REST answer, a job, an event,
//! a worker's log, nor in clear in the database or anything else under the data directory.

use serde_json::{json, Value};

use crate::driver::{Env, Setup, PASSWORD};

on_both_setups!(the_password_never_appears_outside_the_secret_store);

const WRONG: &str = "Wr0ng-Secret-Pw.99";

async fn the_password_never_appears_outside_the_secret_store(setup: Setup) {
    let env = Env::start(setup).await;
    assert_eq!(env.samba.service_account().2, PASSWORD);
    env.write("a.txt", b"a");
    let mut answers: Vec<Value> = Vec::new();
    let c = env.connector(json!({})).await;
    answers.push(env.connector_json(&c).await);
    answers.push(env.sync_ok(&c).await);
    answers.push(env.api.post(&c.url("/test"), json!({})).await.1);
    let (d, u, _) = env.samba.service_account();
    for pw in [PASSWORD, WRONG] {
        let body = json!({"server_host": "127.0.0.1", "server_port": env.samba.port(), "share_name": "Share",
                          "domain": d, "username": u, "password": pw, "target_share_id": c.share});
        answers.push(env.api.post("/api/v1/smb-connectors/test", body).await.1);
    }
    // A failing run with the wrong password (its events and status message too).
    answers.push(env.api.patch(&c.url(""), json!({"password": WRONG})).await.1);
    let failed = env.sync_and_wait(&c).await;
    assert_eq!(failed["status"], "failed", "{failed:#}");
    answers.push(failed);
    answers.push(env.connector_json(&c).await);
    answers.push(env.api.get("/api/v1/smb-connectors").await.1);
    answers.push(env.api.get(&c.url("/jobs")).await.1);
    answers.push(env.api.get(&c.url("/file-states")).await.1);
    for a in &answers {
        let s = a.to_string();
        assert!(!s.contains(PASSWORD) && !s.contains(WRONG), "a REST answer holds a password: {s}");
    }
    for w in &env.workers {
        let log = w.log();
        assert!(!log.is_empty(), "worker log {} is empty", w.log.display());
        assert!(!log.contains(PASSWORD) && !log.contains(WRONG), "worker log {} holds a password", w.log.display());
    }

    // The database, row by row (PostgreSQL), or every file under the data directory
    // (SQLite and its WAL, content store, key file...).
    match setup {
        Setup::Distributed => {
            let pool = &env.srv.state.db.pool;
            let tables: Vec<(String,)> = sqlx::query_as(
                "SELECT CAST(table_name AS TEXT) FROM information_schema.tables WHERE table_schema = 'public'",
            )
            .fetch_all(pool)
            .await
            .unwrap();
            assert!(tables.len() > 5, "{tables:?}");
            for (t,) in tables {
                let rows: Vec<(String,)> =
                    sqlx::query_as(&format!("SELECT CAST(t AS TEXT) FROM \"{t}\" t")).fetch_all(pool).await.unwrap();
                for (r,) in rows {
                    assert!(!r.contains(PASSWORD) && !r.contains(WRONG), "table {t} holds a password: {r}");
                }
            }
        }
        Setup::Standalone => {
            let mut stack = vec![env.srv.data_dir.clone()];
            let mut files = 0;
            while let Some(d) = stack.pop() {
                for e in std::fs::read_dir(&d).unwrap() {
                    let p = e.unwrap().path();
                    if p.is_dir() {
                        stack.push(p);
                    } else if let Ok(b) = std::fs::read(&p) {
                        files += 1;
                        for pw in [PASSWORD, WRONG] {
                            assert!(
                                !b.windows(pw.len()).any(|w| w == pw.as_bytes()),
                                "{} holds a password",
                                p.display()
                            );
                        }
                    }
                }
            }
            assert!(files > 1);
        }
    }
    env.finish().await;
}
