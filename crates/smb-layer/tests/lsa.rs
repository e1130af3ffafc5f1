//! The LSA client (SID ↔ name) against a real Samba, cross-checked with `rpcclient`
//! (`SambaServer::sid_of`), which shares no code with ours.

mod common;

use common::*;
use samba_harness::{SambaServer, FINANCE_GROUP};
use std::time::{Duration, Instant};

use smb_layer::{Principal, SidKind, SmbClient, SmbError};

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// `(qualified name, kind)` of each answer, `None` where nothing was found.
fn named(found: &[Option<Principal>]) -> Vec<Option<(String, SidKind)>> {
    found.iter().map(|p| p.as_ref().map(|p| (p.qualified_name(), p.kind))).collect()
}

fn sid_of(s: &SambaServer, name: &str) -> String {
    s.sid_of(name).unwrap_or_else(|e| panic!("rpcclient lookupnames {name}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_resolve_to_the_sids_rpcclient_reports() {
    let s = samba();
    let c = client(&s).await;
    let names = strings(&["CORP\\alice", "alice", "bob", FINANCE_GROUP, "CORP\\finance", "ALICE", "no-such-user"]);
    let found = c.lookup_names(&names).await.unwrap();
    assert_eq!(found.len(), names.len());
    let alice = sid_of(&s, "alice");
    assert!(alice.starts_with("S-1-5-21-"), "{alice}");
    let sids: Vec<Option<&str>> = found.iter().map(|p| p.as_ref().map(|p| p.sid.as_str())).collect();
    let finance = sid_of(&s, "CORP\\finance");
    assert_eq!(
        sids,
        vec![
            Some(alice.as_str()),
            Some(alice.as_str()),
            Some(sid_of(&s, "bob").as_str()),
            Some(finance.as_str()),
            Some(finance.as_str()),
            Some(alice.as_str()),
            None
        ]
    );
    assert_eq!(
        named(&found),
        vec![
            Some(("CORP\\alice".to_string(), SidKind::User)),
            Some(("CORP\\alice".to_string(), SidKind::User)),
            Some(("CORP\\bob".to_string(), SidKind::User)),
            Some(("CORP\\finance".to_string(), SidKind::Group)),
            Some(("CORP\\finance".to_string(), SidKind::Group)),
            Some(("CORP\\alice".to_string(), SidKind::User)),
            None
        ]
    );
    // The group and the users live in the same domain: one domain SID, different RIDs.
    let domain_of = |sid: &str| sid.rsplit_once('-').unwrap().0.to_string();
    assert_eq!(domain_of(&finance), domain_of(&alice));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sids_resolve_to_names_and_back() {
    let s = samba();
    let c = client(&s).await;
    let sids = vec![sid_of(&s, "alice"), sid_of(&s, "bob"), sid_of(&s, "scaidrive-svc"), sid_of(&s, FINANCE_GROUP)];
    let found = c.lookup_sids(&sids).await.unwrap();
    assert_eq!(
        named(&found),
        vec![
            Some(("CORP\\alice".to_string(), SidKind::User)),
            Some(("CORP\\bob".to_string(), SidKind::User)),
            Some(("CORP\\scaidrive-svc".to_string(), SidKind::User)),
            Some(("CORP\\finance".to_string(), SidKind::Group)),
        ]
    );
    for (p, sid) in found.iter().zip(&sids) {
        assert_eq!(&p.as_ref().unwrap().sid, sid);
    }
    let names: Vec<String> = found.iter().map(|p| p.as_ref().unwrap().qualified_name()).collect();
    let back = c.lookup_names(&names).await.unwrap();
    assert_eq!(back, found);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn well_known_sids_and_unknown_ones_mixed() {
    let s = samba();
    let c = client(&s).await;
    let unknown = "S-1-5-21-1-2-3-4".to_string();
    let sids = vec![
        "S-1-1-0".to_string(),
        unknown.clone(),
        "S-1-5-18".to_string(),
        "S-1-5-32-544".to_string(),
        sid_of(&s, "alice"),
        "S-1-5-21-999999999-1-1-500".to_string(),
    ];
    let found = c.lookup_sids(&sids).await.unwrap();
    let everyone = found[0].as_ref().unwrap();
    assert_eq!(
        (everyone.name.as_str(), everyone.domain.as_str(), everyone.kind),
        ("Everyone", "", SidKind::WellKnownGroup)
    );
    assert_eq!(everyone.qualified_name(), "Everyone");
    assert_eq!(found[1], None);
    let system = found[2].as_ref().unwrap();
    assert_eq!(system.name, "SYSTEM");
    assert!(system.domain.eq_ignore_ascii_case("NT AUTHORITY"), "{system:?}");
    assert_eq!(system.kind, SidKind::WellKnownGroup);
    let admins = found[3].as_ref().unwrap();
    assert_eq!((admins.qualified_name().as_str(), admins.kind), ("BUILTIN\\Administrators", SidKind::Alias));
    assert_eq!(found[4].as_ref().unwrap().qualified_name(), "CORP\\alice");
    assert_eq!(found[5], None);

    // Nothing mapped at all (STATUS_NONE_MAPPED) is not an error either.
    assert_eq!(c.lookup_sids(&[unknown]).await.unwrap(), vec![None]);
    assert_eq!(c.lookup_names(&strings(&["nobody-here", "CORP\\nobody"])).await.unwrap(), vec![None, None]);
    // Names of well-known principals resolve too.
    let wk = c.lookup_names(&strings(&["Everyone", "BUILTIN\\Administrators"])).await.unwrap();
    assert_eq!(wk[0].as_ref().unwrap().sid, "S-1-1-0");
    assert_eq!(wk[1].as_ref().unwrap().sid, "S-1-5-32-544");
    assert!(c.lookup_sids(&[]).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_larger_than_one_call_keep_their_order() {
    let s = samba();
    let c = client(&s).await;
    let alice = sid_of(&s, "alice");
    let bob = sid_of(&s, "bob");
    // 65 SIDs (4 calls of at most 20): a pattern of known, unknown and well-known ones.
    let sids: Vec<String> = (0..65)
        .map(|i| match i % 5 {
            0 => alice.clone(),
            1 => bob.clone(),
            2 => format!("S-1-5-21-1-2-3-{}", 5000 + i),
            3 => "S-1-1-0".to_string(),
            _ => "S-1-5-32-545".to_string(),
        })
        .collect();
    let found = c.lookup_sids(&sids).await.unwrap();
    assert_eq!(found.len(), 65);
    for (i, p) in found.iter().enumerate() {
        let expected = match i % 5 {
            0 => Some("CORP\\alice"),
            1 => Some("CORP\\bob"),
            2 => None,
            3 => Some("Everyone"),
            _ => Some("BUILTIN\\Users"),
        };
        assert_eq!(p.as_ref().map(|p| p.qualified_name()).as_deref(), expected, "entry {i}");
        if let Some(p) = p {
            assert_eq!(p.sid, sids[i]);
        }
    }
    let names: Vec<String> = (0..45)
        .map(|i| if i % 3 == 0 { format!("unknown-{i}") } else { ["alice", "bob"][i % 2].to_string() })
        .collect();
    let found = c.lookup_names(&names).await.unwrap();
    for (i, p) in found.iter().enumerate() {
        let expected = if i % 3 == 0 { None } else { Some([alice.as_str(), bob.as_str()][i % 2]) };
        assert_eq!(p.as_ref().map(|p| p.sid.as_str()), expected, "entry {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_sid_strings_are_refused_before_any_call() {
    let s = samba();
    let c = client(&s).await;
    for bad in ["alice", "S-1-5-x", "S-1-5-21-1-2-3-4-5-6-7-8-9-10-11-12-13-14-15-16"] {
        let err = c.lookup_sids(&[bad.to_string()]).await.unwrap_err();
        assert!(matches!(err, SmbError::Other { .. }), "{bad}: {err:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_work_after_a_server_restart() {
    let mut s = samba();
    let c = client(&s).await;
    assert!(c.lookup_names(&strings(&["bob"])).await.unwrap()[0].is_some());
    s.restart().unwrap();
    let found = c.lookup_names(&strings(&["bob"])).await.unwrap();
    assert_eq!(found[0].as_ref().unwrap().sid, sid_of(&s, "bob"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_server_fails_the_lookup_within_the_timeouts() {
    let s = samba();
    let mut cfg = config(&s);
    cfg.timeouts.connect = Duration::from_secs(2);
    cfg.timeouts.request = Duration::from_secs(2);
    let c = SmbClient::connect(cfg).await.unwrap();
    s.pause().unwrap();
    let started = Instant::now();
    let res = c.lookup_sids(&strings(&["S-1-1-0"])).await;
    s.resume().unwrap();
    let err = res.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    assert!(matches!(err, SmbError::Unreachable { .. } | SmbError::ConnectionLost { .. }), "{err:?}");
}
