//! Permission replication end to end (issue 6): ACLs set over SMB on the real Samba (as a
//! Windows admin would, with the harness's users alice and bob and the group finance), a
//! connector with `sync_permissions` and identity mappings, and the proof read through
//! ScaiDrive's effective-permissions endpoint and the job log.

use reqwest::StatusCode;
use serde_json::{json, Value};
use smb_layer::{access, Ace, AceFlags, AceKind, SdControl, SecurityDescriptor, SmbClient, SmbConfig};

use crate::driver::{Conn, Env, Setup};

const READ: i64 = 1;
const WRITE: i64 = 2;
const DELETE: i64 = 4;
const CREATE: i64 = 8;
const MANAGE: i64 = 32;
const OI_CI: AceFlags = AceFlags(0x03);

/// The test's world: Samba accounts' SIDs and their ScaiDrive counterparts.
struct World {
    env: Env,
    smb: SmbClient,
    conn: Conn,
    alice_sid: String,
    bob_sid: String,
    finance_sid: String,
    svc_sid: String,
    alice: String,
    bob: String,
    finance: String,
}

fn allow(sid: &str, mask: u32, flags: AceFlags) -> Ace {
    Ace { kind: AceKind::Allow, flags, access_mask: mask, sid: sid.into() }
}
fn deny(sid: &str, mask: u32, flags: AceFlags) -> Ace {
    Ace { kind: AceKind::Deny, flags, access_mask: mask, sid: sid.into() }
}

impl World {
    async fn start(setup: Setup) -> World {
        let env = Env::start(setup).await;
        env.chown_all();
        let (d, u, p) = env.samba.service_account();
        let smb = SmbClient::connect(SmbConfig::new(
            "127.0.0.1",
            env.samba.port(),
            &d,
            &u,
            p.as_str(),
            env.samba.share_name(),
        ))
        .await
        .expect("connect as the service account");
        let sid = |n: &str| env.samba.sid_of(n).unwrap_or_else(|e| panic!("sid of {n}: {e}"));
        let (alice_sid, bob_sid, finance_sid, svc_sid) = (sid("alice"), sid("bob"), sid("finance"), sid(&u));
        let (alice, _) = env.srv.user("alice").await;
        let (bob, _) = env.srv.user("bob").await;
        let (_, g) = env.api.post("/api/v1/groups", json!({"name": "finance"})).await;
        let finance = g["id"].as_str().unwrap().to_string();
        let (st, _) = env.api.post(&format!("/api/v1/groups/{finance}/members"), json!({"user_id": alice})).await;
        assert!(st.is_success(), "{st}");
        let conn = env.connector(json!({"sync_permissions": true})).await;
        World { env, smb, conn, alice_sid, bob_sid, finance_sid, svc_sid, alice, bob, finance }
    }

    async fn set_dacl(&self, path: &str, protected: bool, aces: Vec<Ace>) {
        let sd = SecurityDescriptor {
            owner: None,
            group: None,
            dacl: Some(aces),
            control: SdControl { dacl_protected: protected, dacl_auto_inherited: true, dacl_present: true },
        };
        self.smb.write_security_descriptor(path, &sd).await.unwrap_or_else(|e| panic!("set the DACL of {path}: {e}"));
    }

    async fn map(&self, identity_type: &str, principal: &str, to: &str) -> String {
        let (st, m) = self
            .env
            .api
            .post(
                &self.conn.url("/identity-mappings"),
                json!({"identity_type": identity_type, "smb_principal": principal, "scaidrive_principal_id": to}),
            )
            .await;
        assert_eq!(st, StatusCode::CREATED, "{m}");
        m["id"].as_str().unwrap().to_string()
    }

    async fn node(&self, rel: &str) -> Value {
        self.env.must(&self.conn, rel).await
    }

    /// Effective ScaiDrive permissions of `user` on the item at `rel`.
    async fn eff(&self, user: &str, rel: &str) -> i64 {
        let n = self.node(rel).await;
        let kind = if n["type"] == "folder" { "folder" } else { "file" };
        let (st, e) = self
            .env
            .api
            .get(&format!(
                "/api/v1/permissions/effective?resource_type={kind}&resource_id={}&user_id={user}",
                n["id"].as_str().unwrap()
            ))
            .await;
        assert_eq!(st, StatusCode::OK, "{e} for {n}");
        e["permissions"].as_i64().unwrap()
    }

    async fn sync(&self) -> Value {
        let j = self.env.sync_ok(&self.conn).await;
        assert_eq!(j["status"], "completed", "{j:#}");
        j
    }

    async fn finish(self) {
        self.smb.close().await;
        self.env.finish().await;
    }
}

fn events<'a>(job: &'a Value, code: &str) -> Vec<&'a Value> {
    job["events"].as_array().unwrap().iter().filter(|e| e["code"] == code).collect()
}

fn summary(job: &Value) -> String {
    let s = events(job, "PERMISSIONS_REPLICATED");
    assert_eq!(s.len(), 1, "one summary per run: {:#}", job["events"]);
    s[0]["message"].as_str().unwrap().to_string()
}

/// The whole story of one connector: a group-only folder, an explicit deny inside an allowed
/// folder, a protected folder, an unmapped owner, mappings by name and by SID, an ACL change
/// without a content change, a mapping added later, and a ScaiDrive-side edit replaced.
async fn ntfs_rights_become_scaidrive_rights(setup: Setup) {
    let w = World::start(setup).await;
    let svc_full = allow(&w.svc_sid, access::FULL_CONTROL, OI_CI);

    // Finance/: only the finance group may read (protected: nothing from above).
    w.smb.mkdir("Finance").await.unwrap();
    w.set_dacl("Finance", true, vec![svc_full.clone(), allow(&w.finance_sid, access::READ_EXECUTE, OI_CI)]).await;
    w.smb.write_all("Finance/budget.xlsx", &b"numbers"[..]).await.unwrap();
    // Team/: alice and bob may modify; Team/plan.txt denies bob reading; Team/Private/ is
    // protected and alice's alone.
    w.smb.mkdir("Team").await.unwrap();
    w.set_dacl(
        "Team",
        true,
        vec![svc_full.clone(), allow(&w.alice_sid, access::MODIFY, OI_CI), allow(&w.bob_sid, access::MODIFY, OI_CI)],
    )
    .await;
    w.smb.write_all("Team/plan.txt", &b"the plan"[..]).await.unwrap();
    w.smb.write_all("Team/notes.txt", &b"notes"[..]).await.unwrap();
    let plan_sd = w.smb.read_security_descriptor("Team/plan.txt").await.unwrap();
    let inherited = plan_sd.dacl.clone().unwrap();
    assert!(
        inherited.iter().any(|a| a.sid == w.bob_sid && a.flags.contains(AceFlags::INHERITED)),
        "Samba gives new files the inherited ACEs: {plan_sd:?}"
    );
    let mut with_deny = vec![deny(&w.bob_sid, 0x0012_0089 & !0x0010_0000, AceFlags(0))];
    with_deny.extend(inherited.iter().cloned());
    w.set_dacl("Team/plan.txt", false, with_deny).await;
    w.smb.mkdir("Team/Private").await.unwrap();
    w.set_dacl("Team/Private", true, vec![svc_full.clone(), allow(&w.alice_sid, access::FULL_CONTROL, OI_CI)]).await;
    w.smb.write_all("Team/Private/diary.txt", &b"dear diary"[..]).await.unwrap();

    // Mappings: alice by name, finance by name, bob not yet.
    w.map("user", "CORP\\alice", &w.alice).await;
    w.map("group", "CORP\\finance", &w.finance).await;

    // Run 1.
    let j1 = w.sync().await;
    assert_eq!(w.eff(&w.alice, "Finance").await, READ, "finance members read Finance/");
    assert_eq!(w.eff(&w.alice, "Finance/budget.xlsx").await, READ);
    assert_eq!(w.eff(&w.bob, "Finance").await, 0, "bob is not in finance");
    assert_eq!(w.eff(&w.bob, "Finance/budget.xlsx").await, 0);
    assert_eq!(w.eff(&w.alice, "Team").await, READ | WRITE | CREATE | DELETE);
    // Files inherit their folder's entries as they are, CREATE included (it means nothing on a
    // file): the file keeps inheriting instead of carrying a copy.
    // bob's deny of READ on plan.txt: bob is not mapped yet, and an unmapped account may
    // still be a ScaiDrive user through a group, so the deny applies to everyone (and says so).
    assert_eq!(w.eff(&w.alice, "Team/plan.txt").await, WRITE | DELETE | CREATE);
    assert_eq!(events(&j1, "UNMAPPED_DENY_APPLIED_TO_EVERYONE").len(), 1, "{:#}", j1["events"]);
    assert_eq!(w.eff(&w.alice, "Team/notes.txt").await, READ | WRITE | DELETE | CREATE);
    assert_eq!(w.eff(&w.alice, "Team/Private").await, READ | WRITE | CREATE | DELETE | MANAGE);
    assert_eq!(w.eff(&w.alice, "Team/Private/diary.txt").await, READ | WRITE | DELETE | CREATE | MANAGE);
    // bob is unmapped: nothing anywhere, and the job log says so once, with a count.
    for p in ["Team", "Team/plan.txt", "Team/notes.txt", "Team/Private"] {
        assert_eq!(w.eff(&w.bob, p).await, 0, "{p}");
    }
    let unmapped = events(&j1, "PERMISSIONS_UNMAPPED_PRINCIPAL");
    let bob_lines: Vec<_> = unmapped.iter().filter(|e| e["message"].as_str().unwrap().contains(&w.bob_sid)).collect();
    assert_eq!(bob_lines.len(), 1, "one warning per principal per run: {unmapped:#?}");
    assert!(bob_lines[0]["message"].as_str().unwrap().contains("bob"), "named through LSA: {bob_lines:#?}");
    assert_eq!(bob_lines[0]["level"], "warning");
    // The owner (the service account, unmapped) falls back to the connector.
    assert_eq!(w.node("Team/plan.txt").await["owner_id"], json!(w.conn.id));
    assert!(
        unmapped.iter().any(|e| e["message"].as_str().unwrap().contains(&w.svc_sid)),
        "the unmapped owner is reported: {unmapped:#?}"
    );
    let s1 = summary(&j1);
    assert!(s1.contains("security descriptors read: 7"), "{s1}");

    // A file alice owns (an owner set on the server) becomes hers in ScaiDrive.
    // (Samba refuses to give a file away without privileges: alice writes it herself.)
    let a = w.env.samba.user(samba_harness::TestUser::Alice);
    std::fs::set_permissions(w.env.disk().join("Team"), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let as_alice = SmbClient::connect(SmbConfig::new(
        "127.0.0.1",
        w.env.samba.port(),
        &a.domain,
        &a.user,
        a.password.as_str(),
        w.env.samba.share_name(),
    ))
    .await
    .expect("connect as alice");
    as_alice.write_all("Team/alice.txt", &b"mine"[..]).await.expect("alice may write in Team");
    as_alice.close().await;
    let sd = w.smb.read_security_descriptor("Team/alice.txt").await.unwrap();
    assert_eq!(sd.owner.as_deref(), Some(w.alice_sid.as_str()), "{sd:?}");
    // bob mapped by SID, added later.
    w.map("user", &w.bob_sid, &w.bob).await;

    // Run 2: the new mapping re-translates everything.
    let j2 = w.sync().await;
    assert_eq!(w.node("Team/alice.txt").await["owner_id"], json!(w.alice));
    assert_eq!(w.eff(&w.alice, "Team/plan.txt").await, READ | WRITE | DELETE | CREATE, "bob's deny is bob's alone now");
    assert_eq!(w.eff(&w.bob, "Team").await, READ | WRITE | CREATE | DELETE);
    assert_eq!(w.eff(&w.bob, "Team/notes.txt").await, READ | WRITE | DELETE | CREATE);
    assert_eq!(w.eff(&w.bob, "Team/plan.txt").await, WRITE | DELETE | CREATE, "the explicit deny takes READ away");
    assert_eq!(w.eff(&w.bob, "Team/Private").await, 0, "the protected folder breaks inheritance");
    assert_eq!(w.eff(&w.bob, "Team/Private/diary.txt").await, 0);
    assert_eq!(w.eff(&w.bob, "Finance").await, 0);
    assert!(
        !events(&j2, "PERMISSIONS_UNMAPPED_PRINCIPAL")
            .iter()
            .any(|e| e["message"].as_str().unwrap().contains(&w.bob_sid)),
        "bob is mapped now"
    );

    // Run 3: nothing changed, nothing written. (Samba's change time does not move on ACL
    // changes, so the worker reads every descriptor and says so.)
    let j3 = w.sync().await;
    assert!(summary(&j3).contains("ACLs written: 0"), "{}", summary(&j3));
    assert!(summary(&j3).contains("does not move on ACL changes"), "{}", summary(&j3));

    // Run 4: an ACL-only change on the server (the deny removed) moves no content.
    w.set_dacl("Team/plan.txt", false, inherited.clone()).await;
    let j4 = w.sync().await;
    assert_eq!(j4["bytes_transferred"], 0, "{j4:#}");
    assert!(summary(&j4).contains("ACLs written: 1"), "{}", summary(&j4));
    assert_eq!(w.eff(&w.bob, "Team/plan.txt").await, READ | WRITE | DELETE | CREATE);

    // Run 5: an edit made in ScaiDrive on a replicated item is replaced (SMB is the system of
    // record for permissions).
    let fin = w.node("Finance").await["id"].as_str().unwrap().to_string();
    let (st, v) = w
        .env
        .api
        .post(
            &format!("/api/v1/permissions/acl/folder/{fin}"),
            json!({"principal_type": "user", "principal_id": w.bob, "permissions": ["READ"], "ace_type": "allow"}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert_eq!(w.eff(&w.bob, "Finance").await, READ, "the edit took effect in ScaiDrive");
    let j5 = w.sync().await;
    assert_eq!(w.eff(&w.bob, "Finance").await, 0, "the next run restored the file server's rights");
    assert!(summary(&j5).contains("ACLs written: 1"), "{}", summary(&j5));
    w.finish().await;
}

on_both_setups!(ntfs_rights_become_scaidrive_rights);

/// A deny for an account whose ScaiDrive user was deleted after it was mapped (the server can
/// no longer name them) denies everyone instead of vanishing, and what the server records is
/// what it wrote: the next run finds nothing to write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deny_for_a_user_deleted_in_scaidrive_denies_everyone() {
    let w = World::start(Setup::Standalone).await;
    w.smb.mkdir("Team").await.unwrap();
    w.set_dacl(
        "Team",
        true,
        vec![allow(&w.svc_sid, access::FULL_CONTROL, OI_CI), allow(&w.alice_sid, access::MODIFY, OI_CI)],
    )
    .await;
    w.smb.write_all("Team/plan.txt", &b"the plan"[..]).await.unwrap();
    let inherited = w.smb.read_security_descriptor("Team/plan.txt").await.unwrap().dacl.unwrap();
    let mut with_deny = vec![deny(&w.bob_sid, 0x0012_0089 & !0x0010_0000, AceFlags(0))];
    with_deny.extend(inherited);
    w.set_dacl("Team/plan.txt", false, with_deny).await;
    w.map("user", "CORP\\alice", &w.alice).await;
    let (st, u) = w.env.api.post("/api/v1/users", json!({"username": "leaver"})).await;
    assert_eq!(st, StatusCode::CREATED, "{u}");
    let leaver = u["id"].as_str().unwrap().to_string();
    w.map("user", &w.bob_sid, &leaver).await;
    // Deleted between mapping and the run (the API has no user deletion: as an operator would).
    sqlx::query("DELETE FROM users WHERE id = $1").bind(&leaver).execute(&w.env.srv.state.db.pool).await.unwrap();

    let j1 = w.sync().await;
    assert_eq!(w.eff(&w.alice, "Team").await, READ | WRITE | CREATE | DELETE);
    assert_eq!(w.eff(&w.alice, "Team/plan.txt").await, WRITE | DELETE | CREATE, "bob's deny of READ denies everyone");
    assert!(summary(&j1).contains("no longer in ScaiDrive: 1"), "{}", summary(&j1));
    let j2 = w.sync().await;
    assert!(summary(&j2).contains("ACLs written: 0"), "recorded as written: {}", summary(&j2));
    assert_eq!(w.eff(&w.alice, "Team/plan.txt").await, WRITE | DELETE | CREATE);
    w.finish().await;
}

/// A member of the target share with a role (which applies on top of ACLs) is warned about in
/// the job log. Turning `sync_permissions` off leaves the last replicated ACLs in place; a
/// connector without it writes no ACL at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turning_replication_off_keeps_the_last_acls() {
    let w = World::start(Setup::Standalone).await;
    w.smb.mkdir("Finance").await.unwrap();
    w.set_dacl(
        "Finance",
        true,
        vec![allow(&w.svc_sid, access::FULL_CONTROL, OI_CI), allow(&w.finance_sid, access::READ_EXECUTE, OI_CI)],
    )
    .await;
    w.map("group", &w.finance_sid, &w.finance).await;
    let j = w.sync().await;
    assert_eq!(w.eff(&w.alice, "Finance").await, READ);
    assert!(events(&j, "PERMISSIONS_SHARE_ROLES").is_empty(), "no member with a role yet");
    // A share role is a baseline on top of the replicated ACLs: the run says so.
    let body = json!({"principal_type": "user", "principal_id": w.bob, "role": "reader"});
    let (st, m) = w.env.api.post(&format!("/api/v1/shares/{}/members", w.conn.share), body).await;
    assert!(st.is_success(), "{m}");
    let j = w.sync().await;
    let warned = events(&j, "PERMISSIONS_SHARE_ROLES");
    assert_eq!(warned.len(), 1, "{:#}", j["events"]);
    assert_eq!(warned[0]["level"], "warning");
    assert!(warned[0]["message"].as_str().unwrap().contains("reader: 1"), "{}", warned[0]);
    w.env.patch(&w.conn, json!({"sync_permissions": false})).await;
    w.set_dacl("Finance", true, vec![allow(&w.svc_sid, access::FULL_CONTROL, OI_CI)]).await;
    let j = w.sync().await;
    assert!(events(&j, "PERMISSIONS_REPLICATED").is_empty(), "no permission phase when off");
    assert_eq!(w.eff(&w.alice, "Finance").await, READ, "the last replicated ACL stays");
    w.finish().await;
}
