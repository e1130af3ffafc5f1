//! Hostile input over HTTP: arbitrary JSON bodies (wrong types, huge numbers, deep nesting,
//! long strings, unicode, NUL, invalid UTF-8) on every JSON endpoint, arbitrary query strings,
//! `Range` headers and CSV, answered without a 5xx, without a panic, always as a JSON error
//! with a code; and hostile paths (`..`, absolute, backslashes, NUL, 10k-character names,
//! NFC/NFD and case twins) in the file APIs and in a connector's `base_path` / `target_path`,
//! which never reach outside their share or folder (checked by listing what exists after).
//!
//! The proptests run a fixed number of cases from a fixed seed, so a run is reproducible and
//! short (CI has two cores).

use std::collections::BTreeMap;

use e2e_tests::{encode, on_both_backends, Api, Backend, TestServer};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

on_both_backends!(
    json_bodies_get_clean_answers,
    query_strings_ranges_and_csv_get_clean_answers,
    hostile_paths_never_escape_the_share_or_folder,
    twins_by_normalisation_and_case_are_handled_consistently,
    connector_paths_never_escape,
);

/// Cases per endpoint: 64 in CI; `HOSTILE_CASES=5000` for a long campaign.
static CASES: std::sync::LazyLock<u32> =
    std::sync::LazyLock::new(|| std::env::var("HOSTILE_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64));

/// The random stream: a fixed one in CI (every run the same cases), another with
/// `HOSTILE_SEED=<number>` (printed with a failure, to replay it).
fn rng() -> TestRng {
    match std::env::var("HOSTILE_SEED").ok().and_then(|v| v.parse::<u64>().ok()) {
        None => TestRng::deterministic_rng(RngAlgorithm::ChaCha),
        Some(seed) => {
            let mut bytes = [0u8; 32];
            for (i, b) in seed.to_le_bytes().iter().cycle().take(32).enumerate() {
                bytes[i] = b.wrapping_add(i as u8);
            }
            TestRng::from_seed(RngAlgorithm::ChaCha, &bytes)
        }
    }
}

/// Runs `test` on `cases` values of `strategy` from the seed of [`rng`], on the current
/// (multi-thread) runtime; a failure is shrunk and reported with the minimal input.
fn fuzz<S: Strategy>(label: &str, cases: u32, strategy: S, test: impl Fn(S::Value) -> Result<(), String>)
where
    S::Value: std::fmt::Debug,
{
    let mut runner = TestRunner::new_with_rng(
        Config { cases, failure_persistence: None, max_shrink_iters: 256, ..Config::default() },
        rng(),
    );
    let result = tokio::task::block_in_place(|| runner.run(&strategy, |v| test(v).map_err(TestCaseError::fail)));
    if let Err(e) = result {
        let seed = std::env::var("HOSTILE_SEED").unwrap_or_else(|_| "the fixed CI seed".into());
        panic!("{label} ({seed}): {e}");
    }
}

/// At most 600 characters of a long text, for messages.
fn short(s: &str) -> String {
    if s.chars().count() <= 600 {
        s.to_string()
    } else {
        format!("{}… ({} characters)", s.chars().take(600).collect::<String>(), s.chars().count())
    }
}

/// A clean answer: no 5xx; an error is `{"error": {"code": "...", ...}}`; a success is JSON.
async fn clean(resp: Result<reqwest::Response, reqwest::Error>) -> Result<(StatusCode, Value), String> {
    let resp = resp.map_err(|e| short(&format!("no answer (a panic or a reset?): {e}")))?;
    let st = resp.status();
    let bytes = resp.bytes().await.map_err(|e| format!("{st}: the body broke off: {e}"))?;
    if st.is_server_error() {
        return Err(format!("{st}: {}", short(&String::from_utf8_lossy(&bytes))));
    }
    let v: Value = if bytes.is_empty() && st == StatusCode::NO_CONTENT {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .map_err(|_| format!("{st}: not JSON: {}", short(&String::from_utf8_lossy(&bytes))))?
    };
    if st.is_client_error() {
        let code = v["error"]["code"].as_str().unwrap_or("");
        if code.is_empty() || !v["error"]["message"].is_string() || v.as_object().map(|o| o.len()) != Some(1) {
            return Err(format!("{st}: not an error with a code: {}", short(&v.to_string())));
        }
    }
    Ok((st, v))
}

// ---- strategies --------------------------------------------------------------------------

fn hostile_string() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => ".{0,24}",
        2 => "[\\x00-\\x1f\\x7f]{1,4}",
        1 => Just(String::new()),
        1 => Just("\0".to_string()),
        1 => Just("a\0b".to_string()),
        1 => Just("../../etc/passwd".to_string()),
        1 => Just("x".repeat(70_000)),
        1 => Just("é".repeat(300)),
        1 => Just("Cafe\u{301}".to_string()),
        1 => Just("\u{202e}gpj.exe".to_string()),
        1 => Just("\u{feff}".to_string()),
        1 => Just("🦀".repeat(100)),
        1 => Just("\\\\server\\share".to_string()),
        1 => Just("shr_01J3H".to_string()),
        1 => Just("usr_".to_string()),
        1 => prop_oneof![Just("READ"), Just("allow"), Just("deny"), Just("user"), Just("group"), Just("everyone"),
            Just("reader"), Just("owner"), Just("bidirectional"), Just("KEEP_BOTH"), Just("share"), Just("file")]
            .prop_map(str::to_string),
    ]
}

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        prop_oneof![Just(i64::MIN), Just(i64::MAX), Just(-1), Just(0), Just(65536), Just(44641)].prop_map(Value::from),
        any::<f64>().prop_filter("JSON numbers are finite", |f| f.is_finite()).prop_map(Value::from),
        hostile_string().prop_map(Value::from),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(hostile_string(), inner, 0..6)
                .prop_map(|m: BTreeMap<String, Value>| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// JSON text serde_json cannot hold or refuses: numbers out of range, deep nesting, broken
/// UTF-8, surrogates, trailing garbage, too large.
fn raw_hostile() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(Vec::new()),
        Just(b"   ".to_vec()),
        Just(b"null".to_vec()),
        Just(b"[]".to_vec()),
        Just(b"\"x\"".to_vec()),
        Just(b"{}".to_vec()),
        Just(b"{} {}".to_vec()),
        Just(b"{\"name\":\"x\"}garbage".to_vec()),
        Just(b"{\"name\":\"a\",\"name\":\"b\"}".to_vec()),
        Just(b"{\"name\":\"\xff\xfe\"}".to_vec()),
        Just(b"\xef\xbb\xbf{\"name\":\"bom\"}".to_vec()),
        Just(b"{\"name\":\"\\ud800\"}".to_vec()),
        Just(b"{\"name\":\"\\u0000\"}".to_vec()),
        Just(b"{\"name\":1e999999}".to_vec()),
        Just(b"{\"name\":".to_vec()),
        Just("[".repeat(100_000).into_bytes()),
        Just(format!("{}1{}", "{\"a\":".repeat(5_000), "}".repeat(5_000)).into_bytes()),
        Just(format!("{{\"name\":\"{}\"}}", "x".repeat(1_100_000)).into_bytes()),
        Just(
            format!("{{{}}}", (0..20_000).map(|i| format!("\"k{i}\":{i}")).collect::<Vec<_>>().join(",")).into_bytes()
        ),
    ]
}

/// Number literals that are valid JSON syntax (or nearly) but no Rust integer holds.
fn raw_number() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just("1e999"),
        Just("-1e999"),
        Just("-0"),
        Just("1.0"),
        Just("123456789012345678901234567890"),
        Just("-9223372036854775809"),
        Just("18446744073709551616"),
        Just("1.7976931348623157e309"),
        Just("NaN"),
        Just("Infinity"),
        Just("0x10"),
        Just("00"),
    ]
}

/// A body for an endpoint whose valid body is `base`: arbitrary JSON, one field replaced, one
/// added or removed, a raw number spliced into a field, or raw hostile text.
fn body(base: Value) -> impl Strategy<Value = Vec<u8>> {
    let keys: Vec<String> = base.as_object().expect("an object").keys().cloned().collect();
    let n = keys.len();
    let (b1, b2, b3, b4, k1, k2, k4) =
        (base.clone(), base.clone(), base.clone(), base.clone(), keys.clone(), keys.clone(), keys.clone());
    let (b5, k5) = (base, keys);
    let int = prop_oneof![Just(i64::MIN), Just(i64::MAX), Just(-1i64), Just(0), Just(65536), any::<i64>()];
    prop_oneof![
        // The right type with a hostile value: past the parser, into validation and storage.
        5 => (0..n, hostile_string(), int).prop_map(move |(i, text, number)| {
            let mut b = b5.clone();
            let v = &mut b[&k5[i]];
            *v = match v {
                Value::Number(_) => json!(number),
                Value::Bool(_) => json!(number % 2 == 0),
                Value::Array(_) => json!([text]),
                Value::Object(o) => Value::Object(o.keys().map(|k| (k.clone(), json!([text.clone()]))).collect()),
                _ => json!(text),
            };
            b.to_string().into_bytes()
        }),
        2 => json_value().prop_map(|v| v.to_string().into_bytes()),
        5 => (0..n, json_value()).prop_map(move |(i, v)| {
            let mut b = b1.clone();
            b[&k1[i]] = v;
            b.to_string().into_bytes()
        }),
        1 => (hostile_string(), json_value()).prop_map(move |(k, v)| {
            let mut b = b2.clone();
            b[&k] = v;
            b.to_string().into_bytes()
        }),
        1 => (0..n).prop_map(move |i| {
            let mut b = b3.clone();
            b.as_object_mut().unwrap().remove(&k2[i]);
            b.to_string().into_bytes()
        }),
        1 => (0..n, raw_number()).prop_map(move |(i, raw)| {
            let mut b = b4.clone();
            b[&k4[i]] = json!("__RAW__");
            b.to_string().replace("\"__RAW__\"", raw).into_bytes()
        }),
        2 => raw_hostile(),
    ]
}

// ---- the fixture ------------------------------------------------------------------------

struct Fx {
    srv: TestServer,
    api: Api,
    share: String,
    folder: String,
    file: String,
    user: String,
    group: String,
    cnn: String,
    job: String,
}

async fn fx(backend: Backend) -> Fx {
    let srv = TestServer::start(backend).await;
    let api = srv.admin();
    let share = api.share("Fuzzed").await;
    let (_, f) = api.upload(&share, "/Docs/report.txt", "0123456789").await;
    let file = f["file"]["id"].as_str().unwrap().to_string();
    let folder = f["file"]["parent_id"].as_str().unwrap().to_string();
    let (user, _) = srv.user("fuzz-target").await;
    let (_, g) = api.post("/api/v1/groups", json!({"name": "fuzz-group"})).await;
    let group = g["id"].as_str().unwrap().to_string();
    let (st, c) = api.post("/api/v1/smb-connectors", connector_body(&share, "/From FS", None)).await;
    assert_eq!(st, StatusCode::CREATED, "{c}");
    let cnn = c["id"].as_str().unwrap().to_string();
    let (_, j) = api.post(&format!("/api/v1/smb-connectors/{cnn}/sync"), json!({})).await;
    let job = j["id"].as_str().unwrap().to_string();
    Fx { srv, api, share, folder, file, user, group, cnn, job }
}

fn connector_body(share: &str, target_path: &str, base_path: Option<&str>) -> Value {
    json!({"name": "Fuzz FS", "description": "d", "server_host": "10.1.2.3", "server_port": 445,
           "share_name": "Data", "base_path": base_path, "domain": "CORP", "username": "svc",
           "password": "Fuzz-pw-1", "target_share_id": share, "target_path": target_path,
           "sync_direction": "bidirectional", "sync_permissions": false, "sync_hidden_files": false,
           "sync_system_files": false, "include_patterns": {"extensions": ["pdf"], "patterns": ["*.x"]},
           "exclude_patterns": {"patterns": ["~$*"]}, "conflict_resolution": "KEEP_BOTH",
           "sync_interval_minutes": 0, "max_delete_percent": 50})
}

impl Fx {
    async fn send(&self, method: Method, path: &str, ct: &str, body: Vec<u8>) -> Result<(StatusCode, Value), String> {
        clean(self.api.request(method, path).header("Content-Type", ct).body(body).send().await).await
    }
}

// ---- the tests ---------------------------------------------------------------------------

async fn json_bodies_get_clean_answers(backend: Backend) {
    let fx = fx(backend).await;
    let _tests = super::authz::answer_connection_tests(&fx.srv).await;
    let (share, file, folder, user, group, cnn) = (&fx.share, &fx.file, &fx.folder, &fx.user, &fx.group, &fx.cnn);
    let entry = json!({"principal_type": "user", "principal_id": user, "permissions": ["READ"], "ace_type": "allow",
                       "inherit_to_children": true});
    let endpoints: Vec<(Method, String, Value)> = vec![
        (
            Method::POST,
            "/api/v1/users".into(),
            json!({"username": "fz", "display_name": "F", "email": "f@x", "global_role": null}),
        ),
        (Method::POST, "/api/v1/groups".into(), json!({"name": "fz"})),
        (Method::POST, format!("/api/v1/groups/{group}/members"), json!({"user_id": user})),
        (Method::POST, "/api/v1/tokens".into(), json!({"name": "fz", "user_id": user})),
        (Method::POST, "/api/v1/shares".into(), json!({"name": "fz", "description": "d"})),
        (
            Method::POST,
            format!("/api/v1/shares/{share}/members"),
            json!({"principal_type": "user", "principal_id": user, "role": "reader"}),
        ),
        (
            Method::POST,
            "/api/v1/folders".into(),
            json!({"share_id": share, "parent_id": folder, "name": "fz", "path": null, "create_parents": false}),
        ),
        (
            Method::PATCH,
            format!("/api/v1/files/{file}"),
            json!({"name": "r.txt", "parent_id": folder, "base_version_id": null}),
        ),
        (Method::PATCH, format!("/api/v1/folders/{folder}"), json!({"name": "Docs", "parent_id": share})),
        (
            Method::POST,
            "/api/v1/uploads".into(),
            json!({"share_id": share, "path": "/Docs/u.bin", "size": 3, "base_version_id": null, "modified_at": "2024-01-01T00:00:00Z"}),
        ),
        (Method::POST, format!("/api/v1/permissions/acl/file/{file}"), entry.clone()),
        (
            Method::PUT,
            format!("/api/v1/permissions/acl/folder/{folder}"),
            json!({"inherit_from_parent": true, "entries": [entry]}),
        ),
        (
            Method::POST,
            "/api/v1/permissions/check".into(),
            json!({"resource_type": "file", "resource_id": file, "permissions": ["READ"], "user_id": user}),
        ),
        (Method::POST, "/api/v1/smb-connectors".into(), connector_body(share, "/From FS", Some("2026"))),
        (Method::PATCH, format!("/api/v1/smb-connectors/{cnn}"), {
            let mut b = connector_body(share, "/From FS", Some("2026"));
            b.as_object_mut().unwrap().remove("password");
            b
        }),
        (
            Method::POST,
            format!("/api/v1/smb-connectors/{cnn}/identity-mappings"),
            json!({"identity_type": "user", "smb_principal": "CORP\\fz", "scaidrive_principal_id": user}),
        ),
        (
            Method::POST,
            "/api/v1/smb-connectors/test".into(),
            json!({"server_host": "10.1.2.3", "server_port": 445, "share_name": "Data", "base_path": "x", "domain": "CORP",
                   "username": "svc", "password": "Fuzz-pw-1", "target_share_id": share, "sync_direction": "smb_to_scaidrive"}),
        ),
    ];
    let handle = tokio::runtime::Handle::current();
    let mut answers = BTreeMap::<u16, usize>::new();
    for (method, path, base) in endpoints {
        let label = format!("{method} {path}");
        let seen = std::sync::Mutex::new(BTreeMap::<u16, usize>::new());
        fuzz(&label, *CASES, body(base), |b| {
            let (st, _) = handle.block_on(fx.send(method.clone(), &path, "application/json", b))?;
            *seen.lock().unwrap().entry(st.as_u16()).or_default() += 1;
            Ok(())
        });
        for (k, v) in seen.into_inner().unwrap() {
            *answers.entry(k).or_default() += v;
        }
    }
    eprintln!("hostile JSON bodies: answers by status {answers:?}");
    // Still serving, still whole.
    assert_eq!(fx.api.download(&fx.file).await.0, StatusCode::OK);
    fx.srv.stop().await;
}

fn query_value() -> impl Strategy<Value = String> {
    prop_oneof![
        // A URI holds at most 64 KiB (the client refuses longer ones).
        hostile_string().prop_map(|s| s.chars().take(8000).collect()),
        any::<i64>().prop_map(|n| n.to_string()),
        Just("18446744073709551616".to_string()),
        Just("-1".to_string()),
        Just("0".to_string()),
    ]
}

/// `k=v&...` with known and unknown keys, every byte percent-encoded where needed.
fn query(keys: &'static [&'static str]) -> impl Strategy<Value = String> {
    let key = prop_oneof![
        4 => prop::sample::select(keys).prop_map(str::to_string),
        1 => hostile_string().prop_map(|s| s.chars().take(100).collect()),
    ];
    prop_oneof![
        8 => prop::collection::vec((key, query_value()), 0..4).prop_map(|kv| {
            kv.iter().map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect::<Vec<_>>().join("&")
        }),
        1 => Just("%".to_string()),
        1 => Just("a=%ZZ&&&=&==".to_string()),
        1 => Just("path=%C0%AF%2e%2e".to_string()),
        1 => Just(format!("cursor={}", "9".repeat(5000))),
    ]
}

async fn query_strings_ranges_and_csv_get_clean_answers(backend: Backend) {
    let fx = fx(backend).await;
    let (share, file, folder, cnn, job) = (&fx.share, &fx.file, &fx.folder, &fx.cnn, &fx.job);
    let targets: Vec<(String, &'static [&'static str])> = vec![
        (format!("/api/v1/shares/{share}/children"), &["limit", "cursor"]),
        (format!("/api/v1/shares/{share}/items"), &["path"]),
        (format!("/api/v1/folders/{folder}/children"), &["limit", "cursor"]),
        ("/api/v1/sync/changes".into(), &["share_id", "cursor", "limit"]),
        ("/api/v1/permissions/effective".into(), &["resource_type", "resource_id", "user_id"]),
        ("/api/v1/smb-connectors".into(), &["limit", "cursor"]),
        (format!("/api/v1/smb-connectors/{cnn}/jobs"), &["limit", "cursor"]),
        (format!("/api/v1/smb-connectors/{cnn}/jobs/{job}"), &["events_cursor", "events_limit"]),
        (format!("/api/v1/smb-connectors/{cnn}/file-states"), &["status", "path_prefix", "limit", "cursor"]),
        (format!("/api/v1/smb-connectors/{cnn}/identity-mappings"), &["limit", "cursor"]),
        (format!("/api/v1/files/{file}"), &["x"]),
    ];
    let handle = tokio::runtime::Handle::current();
    for (path, keys) in targets {
        fuzz(&format!("GET {path}?…"), *CASES, query(keys), |q| {
            handle.block_on(clean(handle.block_on(fx.api.request(Method::GET, &format!("{path}?{q}")).send())))?;
            Ok(())
        });
    }
    // Writes with hostile query strings.
    fuzz("PUT files?…", *CASES, query(&["path", "create_parents", "base_version_id", "modified_at"]), |q| {
        let rb = fx.api.request(Method::PUT, &format!("/api/v1/shares/{share}/files?{q}")).body("q");
        handle.block_on(clean(handle.block_on(rb.send())))?;
        Ok(())
    });
    fuzz("DELETE folders?…", *CASES, query(&["base_version_id"]), |q| {
        let (_, f) = handle.block_on(fx.api.upload(share, "/Trash me/x.txt", "x"));
        let id = f["file"]["id"].as_str().unwrap_or_default().to_string();
        let rb = fx.api.request(Method::DELETE, &format!("/api/v1/files/{id}?{q}"));
        handle.block_on(clean(handle.block_on(rb.send())))?;
        Ok(())
    });
    // Range and If-Match headers on downloads and writes.
    let header = prop_oneof![
        "[ -~]{0,30}",
        "bytes=[0-9-]{0,25}",
        "bytes=-?[0-9]{1,22}-[0-9]{0,22}",
        Just("bytes=0-0,1-1,2-2".to_string()),
        Just("bytes=18446744073709551615-".to_string()),
        Just("bytes=-18446744073709551615".to_string()),
        Just("bytes=5-18446744073709551615".to_string()),
    ];
    fuzz("GET content with Range", *CASES, header.clone(), |r| {
        let resp = handle
            .block_on(fx.api.request(Method::GET, &format!("/api/v1/files/{file}/content")).header("Range", &r).send());
        let resp = resp.map_err(|e| format!("{r}: {e}"))?;
        let st = resp.status();
        if st.is_server_error() {
            return Err(format!("Range {r:?}: {st}"));
        }
        if st == StatusCode::RANGE_NOT_SATISFIABLE {
            handle.block_on(clean(Ok(resp)))?;
        } else {
            let len = handle.block_on(resp.bytes()).map_err(|e| format!("{r}: {e}"))?.len();
            if len > 10 {
                return Err(format!("Range {r:?}: {len} bytes of a 10-byte file"));
            }
        }
        Ok(())
    });
    fuzz("PUT content with If-Match", *CASES, header, |m| {
        let rb = fx.api.request(Method::PUT, &format!("/api/v1/files/{file}/content")).header("If-Match", &m).body("v");
        handle.block_on(clean(handle.block_on(rb.send())))?;
        Ok(())
    });
    // Resumable-upload offsets.
    let (_, u) = fx.api.post("/api/v1/uploads", json!({"share_id": share, "path": "/Docs/resume.bin"})).await;
    let upload = u["id"].as_str().unwrap().to_string();
    let offset =
        prop_oneof!["[ -~]{0,24}", any::<i64>().prop_map(|n| n.to_string()), Just("18446744073709551616".into())];
    fuzz("PUT uploads/{id} with Upload-Offset", *CASES, offset, |o| {
        let rb =
            fx.api.request(Method::PUT, &format!("/api/v1/uploads/{upload}")).header("Upload-Offset", &o).body("p");
        handle.block_on(clean(handle.block_on(rb.send())))?;
        Ok(())
    });
    // CSV imports.
    let user = fx.user.clone();
    let csv = prop_oneof![
        "(.{0,20}[,\n\"\r]){0,12}",
        prop::collection::vec((hostile_string(), prop_oneof![Just(user), hostile_string()], hostile_string()), 0..6)
            .prop_map(|rows| rows.iter().map(|(a, b, c)| format!("{a},{b},{c}\n")).collect::<String>()),
        Just("\"unterminated,".to_string()),
        Just(format!("{}\n", "a,".repeat(50_000))),
    ];
    fuzz("POST identity-mappings/import", *CASES, csv, |body| {
        handle.block_on(fx.send(
            Method::POST,
            &format!("/api/v1/smb-connectors/{cnn}/identity-mappings/import"),
            "text/csv",
            body.into_bytes(),
        ))?;
        Ok(())
    });
    fx.srv.stop().await;
}

/// Names and paths that try to leave their folder or share, or confuse it. Each holds the
/// marker `evil`, so anything that lands on disk under that name can be found.
fn hostile_paths() -> Vec<String> {
    let mut v: Vec<String> = [
        "..",
        "../evil",
        "../../evil",
        "/../evil",
        "evil/..",
        "evil/../..",
        "evil/../../Outside/evil",
        "./evil",
        "evil/./x",
        ".",
        "...",
        "/Sandbox/../Outside/evil",
        "\\..\\evil",
        "..\\..\\evil",
        "evil\\..\\..\\x",
        "C:\\evil",
        "\\\\server\\share\\evil",
        "//server/share/evil",
        "evil\0x",
        "\0",
        "evil\u{1}",
        "evil\n",
        "evil\r\nx",
        "evil\u{7f}",
        "%2e%2e/evil",
        "..%2fevil",
        "%00evil",
        "evil\u{2215}slash",
        "evil\u{ff0f}x",
        "\u{2024}\u{2024}/evil",
        "\u{202e}evil",
        "evil. ",
        " evil",
        "evil ",
        "~evil",
        "CON",
        "evil:stream",
        "evil*?<>|\"",
        "evil/",
        "evil//x",
        "\u{feff}evil",
    ]
    .map(String::from)
    .to_vec();
    v.push(format!("evil{}", "n".repeat(10_000)));
    v.push(format!("evil{}", "é".repeat(252)));
    v.push(format!("evil{}", "é".repeat(256)));
    v.push(format!("{}evil", "a/".repeat(100)));
    v.push(format!("{}evil", "a/".repeat(3000)));
    v
}

/// `(status, answer)`, asserting it is clean.
async fn must_be_clean(ctx: &str, rb: reqwest::RequestBuilder) -> (StatusCode, Value) {
    clean(rb.send().await).await.unwrap_or_else(|e| panic!("{ctx}: {e}"))
}

/// A node's path as the API gives it must stay under `/Sandbox/` in the attacked share.
fn assert_inside(ctx: &str, node: &Value, share: &str) {
    assert_eq!(node["share_id"].as_str(), Some(share), "{ctx}: {node}");
    let path = node["path"].as_str().unwrap_or_else(|| panic!("{ctx}: {node}"));
    assert!(path.starts_with("/Sandbox/"), "{ctx}: landed at {path}");
    let name = node["name"].as_str().unwrap();
    assert!(!name.is_empty() && name != "." && name != ".." && !name.contains('/'), "{ctx}: named {name:?}");
    assert!(!name.chars().any(char::is_control), "{ctx}: named {name:?}");
    assert!(!path.split('/').skip(1).any(|s| s.is_empty() || s == "." || s == ".."), "{ctx}: {path}");
}

async fn names_in(api: &Api, list_path: &str) -> Vec<String> {
    let (st, v) = api.get(list_path).await;
    assert_eq!(st, StatusCode::OK, "{list_path}: {v}");
    let mut out: Vec<String> =
        v["items"].as_array().unwrap().iter().map(|i| i["name"].as_str().unwrap().to_string()).collect();
    out.sort();
    out
}

async fn hostile_paths_never_escape_the_share_or_folder(backend: Backend) {
    let srv = TestServer::start(backend).await;
    let api = srv.admin();
    let share = api.share("Attacked").await;
    let victim = api.share("Victim").await;
    let (_, s) = api.upload(&victim, "/Secret/secret.txt", "victim data").await;
    let victim_folder = s["file"]["parent_id"].as_str().unwrap().to_string();
    let (_, r) = api.upload(&share, "/Sandbox/rename-me.txt", "mine").await;
    let sandbox = r["file"]["parent_id"].as_str().unwrap().to_string();
    let renamed = r["file"]["id"].as_str().unwrap().to_string();
    let (st, o) = api.post("/api/v1/folders", json!({"share_id": share, "path": "/Outside"})).await;
    assert_eq!(st, StatusCode::CREATED, "{o}");
    let victim_before = names_in(&api, &format!("/api/v1/folders/{victim_folder}/children")).await;

    let mut accepted = 0usize;
    let mut refused = 0usize;
    let mut tally = |st: StatusCode| if st.is_success() { accepted += 1 } else { refused += 1 };
    for p in hostile_paths() {
        let full = format!("/Sandbox/{p}");
        // Upload by path, with parents.
        let q = format!("/api/v1/shares/{share}/files?path={}&create_parents=true", encode(&full));
        let (st, v) = must_be_clean(&format!("upload {p:?}"), api.request(Method::PUT, &q).body("evil content")).await;
        tally(st);
        if st.is_success() {
            assert_inside(&format!("upload {p:?}"), &v["file"], &share);
        }
        // Folder by path, with parents; and by parent and name.
        for body in [
            json!({"share_id": share, "path": full, "create_parents": true}),
            json!({"share_id": share, "parent_id": sandbox, "name": p}),
        ] {
            let ctx = format!("create folder {body}");
            let (st, v) = must_be_clean(&ctx, api.request(Method::POST, "/api/v1/folders").json(&body)).await;
            tally(st);
            if st.is_success() {
                assert_inside(&ctx, &v, &share);
            }
        }
        // Rename a file to it (a move within its folder).
        let ctx = format!("rename to {p:?}");
        let (st, v) = must_be_clean(
            &ctx,
            api.request(Method::PATCH, &format!("/api/v1/files/{renamed}")).json(&json!({"name": p})),
        )
        .await;
        tally(st);
        if st.is_success() {
            assert_inside(&ctx, &v, &share);
        }
        // A resumable upload, completed empty.
        let ctx = format!("resumable upload {p:?}");
        let (st, u) = must_be_clean(
            &ctx,
            api.request(Method::POST, "/api/v1/uploads").json(&json!({"share_id": share, "path": full})),
        )
        .await;
        tally(st);
        if st.is_success() {
            assert!(u["path"].as_str().unwrap().starts_with("/Sandbox/"), "{ctx}: {u}");
            let id = u["id"].as_str().unwrap();
            let (st, v) =
                must_be_clean(&ctx, api.request(Method::POST, &format!("/api/v1/uploads/{id}/complete"))).await;
            if st.is_success() {
                assert_inside(&ctx, &v["file"], &share);
            }
        }
        // Looking it up finds nothing outside.
        let ctx = format!("lookup {p:?}");
        let (st, v) = must_be_clean(
            &ctx,
            api.request(Method::GET, &format!("/api/v1/shares/{share}/items?path={}", encode(&full))),
        )
        .await;
        if st.is_success() {
            assert_inside(&ctx, &v, &share);
        }
    }
    // Moves into the other share are refused, whatever the id names.
    for target in [&victim, &victim_folder] {
        let (st, v) = api.patch(&format!("/api/v1/files/{renamed}"), json!({"parent_id": target})).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "a move into another share: {v}");
    }
    let (st, v) = api.patch(&format!("/api/v1/folders/{sandbox}"), json!({"parent_id": sandbox})).await;
    assert!(st.is_client_error(), "a folder into itself: {v}");
    eprintln!("hostile paths: {accepted} accepted (inside), {refused} refused");

    // Afterwards: the share's root and the sibling folder are as they were; the other share
    // is untouched; no node anywhere has an impossible name.
    assert_eq!(names_in(&api, &format!("/api/v1/shares/{share}/children")).await, ["Outside", "Sandbox"]);
    let outside = o["id"].as_str().unwrap();
    assert!(names_in(&api, &format!("/api/v1/folders/{outside}/children")).await.is_empty());
    assert_eq!(names_in(&api, &format!("/api/v1/shares/{victim}/children")).await, ["Secret"]);
    assert_eq!(names_in(&api, &format!("/api/v1/folders/{victim_folder}/children")).await, victim_before);
    assert_eq!(api.download(s["file"]["id"].as_str().unwrap()).await.1, b"victim data");
    let rows: Vec<(String, String, String)> =
        sqlx::query_as("SELECT share_id, parent_id, name FROM nodes").fetch_all(&srv.state.db.pool).await.unwrap();
    let ids: std::collections::HashMap<String, String> =
        sqlx::query_as::<_, (String, String)>("SELECT id, share_id FROM nodes")
            .fetch_all(&srv.state.db.pool)
            .await
            .unwrap()
            .into_iter()
            .collect();
    for (node_share, parent, name) in rows {
        assert!(!name.is_empty() && name != "." && name != ".." && !name.contains('/'), "{name:?}");
        assert!(!name.chars().any(|c| c.is_control()), "{name:?}");
        assert!(parent == node_share || ids.get(&parent) == Some(&node_share), "{name:?} hangs outside its share");
        if node_share == victim {
            assert!(!name.contains("evil"), "{name:?} in the other share");
        }
    }
    // Nothing named after the paths on disk: content is stored by hash.
    let mut stack = vec![srv.data_dir.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            assert!(!name.contains("evil") && !name.contains("Sandbox"), "{} on disk", e.path().display());
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                stack.push(e.path());
            }
        }
    }
    srv.stop().await;
}

async fn twins_by_normalisation_and_case_are_handled_consistently(backend: Backend) {
    let srv = TestServer::start(backend).await;
    let api = srv.admin();
    let share = api.share("Twins").await;
    // NFC and NFD spell one name: the second upload is a new version of the same file.
    let (st, a) = api.upload(&share, "/T/Caf\u{e9}.txt", "composed").await;
    assert_eq!(st, StatusCode::CREATED, "{a}");
    let (st, b) = api.upload(&share, "/T/Cafe\u{301}.txt", "decomposed").await;
    assert_eq!(st, StatusCode::OK, "the NFD twin is the same file: {b}");
    assert_eq!(a["file"]["id"], b["file"]["id"]);
    assert_eq!(b["file"]["name"], "Caf\u{e9}.txt", "stored in NFC");
    assert_eq!(b["version"]["number"], 2);
    let folder = a["file"]["parent_id"].as_str().unwrap().to_string();
    assert_eq!(names_in(&api, &format!("/api/v1/folders/{folder}/children")).await, ["Caf\u{e9}.txt"]);
    let (st, found) = api.get(&format!("/api/v1/shares/{share}/items?path={}", encode("/T/Cafe\u{301}.txt"))).await;
    assert_eq!((st, &found["id"]), (StatusCode::OK, &a["file"]["id"]));
    let (st, e) =
        api.post("/api/v1/folders", json!({"share_id": share, "parent_id": folder, "name": "Cafe\u{301}.txt"})).await;
    assert_eq!((st, e["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("NAME_TAKEN")), "{e}");
    // A rename to the other spelling of a sibling's name is a conflict too.
    let (_, other) = api.upload(&share, "/T/other.txt", "o").await;
    let (st, e) = api
        .patch(&format!("/api/v1/files/{}", other["file"]["id"].as_str().unwrap()), json!({"name": "Cafe\u{301}.txt"}))
        .await;
    assert_eq!(st, StatusCode::CONFLICT, "{e}");
    assert!(e["error"]["code"].is_string());

    // Case twins are two items (ScaiDrive names are case-sensitive); neither overwrites the
    // other.
    let (st, lower) = api.upload(&share, "/T/report.txt", "lower").await;
    assert_eq!(st, StatusCode::CREATED, "{lower}");
    let (st, upper) = api.upload(&share, "/T/REPORT.TXT", "upper").await;
    assert_eq!(st, StatusCode::CREATED, "{upper}");
    assert_ne!(lower["file"]["id"], upper["file"]["id"]);
    assert_eq!(api.download(lower["file"]["id"].as_str().unwrap()).await.1, b"lower");
    assert_eq!(api.download(upper["file"]["id"].as_str().unwrap()).await.1, b"upper");
    // A folder and a file of one name: refused, nothing replaced.
    let (st, _) = api.post("/api/v1/folders", json!({"share_id": share, "path": "/T/dup"})).await;
    assert_eq!(st, StatusCode::CREATED);
    let (st, e) = api.upload(&share, "/T/dup", "file over a folder").await;
    assert_eq!((st, e["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("NAME_TAKEN")), "{e}");
    let (st, e) = api.upload(&share, "/T/report.txt/inner.txt", "under a file").await;
    assert!(st.is_client_error(), "{e}");
    assert_eq!(
        names_in(&api, &format!("/api/v1/folders/{folder}/children")).await,
        ["Caf\u{e9}.txt", "REPORT.TXT", "dup", "other.txt", "report.txt"]
    );
    srv.stop().await;
}

async fn connector_paths_never_escape(backend: Backend) {
    let srv = TestServer::start(backend).await;
    let api = srv.admin();
    let _tests = super::authz::answer_connection_tests(&srv).await;
    let share = api.share("Connected").await;
    let victim = api.share("Elsewhere").await;
    let (st, sb) = api.post("/api/v1/folders", json!({"share_id": share, "path": "/Sandbox"})).await;
    assert_eq!(st, StatusCode::CREATED, "{sb}");
    let sandbox = sb["id"].as_str().unwrap().to_string();
    let (st, c) = api.post("/api/v1/smb-connectors", connector_body(&share, "/Sandbox/base", None)).await;
    assert_eq!(st, StatusCode::CREATED, "{c}");
    let patched = c["id"].as_str().unwrap().to_string();
    let mut accepted = 0usize;
    for p in hostile_paths() {
        let target = format!("/Sandbox/{p}");
        for (what, body) in [
            ("create with target_path", connector_body(&share, &target, None)),
            ("create with base_path", connector_body(&share, "/Sandbox/b", Some(&p))),
        ] {
            let ctx = format!("{what} {p:?}");
            let (st, v) = must_be_clean(&ctx, api.request(Method::POST, "/api/v1/smb-connectors").json(&body)).await;
            if st.is_success() {
                accepted += 1;
                check_connector(&ctx, &api, &share, &v).await;
            } else {
                assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{ctx}: {v}");
            }
        }
        for (field, value) in [("target_path", target.as_str()), ("base_path", p.as_str())] {
            let ctx = format!("patch {field} {p:?}");
            let (st, v) = must_be_clean(
                &ctx,
                api.request(Method::PATCH, &format!("/api/v1/smb-connectors/{patched}")).json(&json!({field: value})),
            )
            .await;
            if st.is_success() {
                accepted += 1;
                check_connector(&ctx, &api, &share, &v).await;
            } else {
                assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{ctx}: {v}");
            }
        }
        let ctx = format!("test with base_path {p:?}");
        let body = json!({"server_host": "10.1.2.3", "share_name": "Data", "username": "svc", "password": "pw-1",
                          "base_path": p, "target_share_id": share});
        let (st, v) = must_be_clean(&ctx, api.request(Method::POST, "/api/v1/smb-connectors/test").json(&body)).await;
        assert!(st == StatusCode::OK || st == StatusCode::UNPROCESSABLE_ENTITY, "{ctx}: {v}");
    }
    eprintln!("hostile connector paths: {accepted} accepted (inside)");
    // The share's root holds the sandbox only; the other share nothing.
    assert_eq!(names_in(&api, &format!("/api/v1/shares/{share}/children")).await, ["Sandbox"]);
    assert!(names_in(&api, &format!("/api/v1/shares/{victim}/children")).await.is_empty());
    let _ = sandbox;
    srv.stop().await;
}

/// An accepted connector: its target is a folder under `/Sandbox/` of its share, its base path
/// a relative, `/`-separated path without dot segments.
async fn check_connector(ctx: &str, api: &Api, share: &str, c: &Value) {
    assert_eq!(c["target_share_id"].as_str(), Some(share), "{ctx}: {c}");
    let target = c["target_path"].as_str().unwrap();
    assert!(target.starts_with("/Sandbox/") || target == "/Sandbox", "{ctx}: target {target}");
    assert!(!target.split('/').skip(1).any(|s| s.is_empty() || s == "." || s == ".."), "{ctx}: {target}");
    let (st, node) = api.get(&format!("/api/v1/shares/{share}/items?path={}", encode(target))).await;
    assert_eq!((st, node["type"].as_str()), (StatusCode::OK, Some("folder")), "{ctx}: {node}");
    assert_inside(ctx, &node, share);
    if let Some(base) = c["base_path"].as_str() {
        assert!(!base.starts_with('/') && !base.ends_with('/') && !base.contains('\\'), "{ctx}: base {base:?}");
        assert!(base.split('/').all(|s| !s.is_empty() && s != "." && s != ".."), "{ctx}: base {base:?}");
        assert!(!base.chars().any(char::is_control), "{ctx}: base {base:?}");
    }
}
