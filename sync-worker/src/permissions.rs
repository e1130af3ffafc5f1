//! The PERMISSIONS phase (connectors with `sync_permissions`): SMB security descriptors →
//! ScaiDrive ACLs and owners, through the identity mappings.
//!
//! A descriptor is read only when needed: no replicated state yet, the item's SMB change time
//! moved (an ACL change moves it without touching the last-write time), the mappings changed,
//! the ACL was edited in ScaiDrive since (drift: SMB is the system of record), or a folder
//! above it got a new ACL. Principals are resolved SID ↔ name through the file server's own
//! LSA service, once per run. The translation is `sync_engine::permissions` (pure); the
//! control plane writes only what differs (`ApplyPermissions`, fenced by the lease).
//!
//! What cannot be replicated exactly is reported in the job log, one event per principal or
//! reason per run with counts, and never turned into more access.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

use futures::StreamExt;
use proto::v1;
use smb_layer::{AceKind, SecurityDescriptor, SmbClient};
use sync_engine::permissions::{
    self as perm, DriveAcl, DriveEntry, Identities, NtAce, NtDescriptor, PermReport, Principal, Reach, SidClass,
};
use sync_engine::{FileTime, ItemKind, RelPath};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::convert::SmbRoot;
use crate::rpc::{call_retrying, ControlPlane, RpcError};

/// Stable job-log codes of this phase (besides the translation's own, in
/// `sync_engine::permissions::codes`).
pub mod codes {
    /// Summary of the phase.
    pub const REPLICATED: &str = "PERMISSIONS_REPLICATED";
    /// The phase could not run (LSA unreachable…); nothing was changed, the next run retries.
    pub const NOT_REPLICATED: &str = "PERMISSIONS_NOT_REPLICATED";
    /// A mapping names an account the file server does not know.
    pub const MAPPING_UNRESOLVED: &str = "PERMISSIONS_MAPPING_UNRESOLVED";
    /// An item's security descriptor could not be read; its last replicated ACL stays.
    pub const READ_FAILED: &str = "PERMISSIONS_READ_FAILED";
}

/// One synced item the phase looks at.
#[derive(Clone, Debug)]
pub struct Item {
    /// Relative to the sync root.
    pub path: RelPath,
    /// Folder or file.
    pub kind: ItemKind,
    /// The ScaiDrive node.
    pub node_id: String,
    /// The SMB change time seen by this run's walk (or the synced one).
    pub change_time: FileTime,
    /// The SMB last-write time, likewise.
    pub last_write: FileTime,
}

/// Whether the server's ChangeTime can tell an ACL change: NTFS moves it on any metadata
/// change, but Samba reports the last-write time as ChangeTime (it has no NTFS change time),
/// so an ACL change there is invisible without reading the descriptor. A server on which no
/// item's change time differs from its last-write time gives no evidence either way: every
/// descriptor is read (correct, only slower).
pub fn change_time_tracks_acls(items: &[Item]) -> bool {
    items.iter().any(|i| i.change_time != i.last_write)
}

/// Where the phase runs.
pub struct PermContext<'a> {
    /// The job's SMB connection.
    pub client: &'a SmbClient,
    /// The sync root on SMB.
    pub root: &'a SmbRoot,
    /// The control plane.
    pub rpc: &'a ControlPlane,
    /// The job.
    pub job_id: &'a str,
    /// The lease every write carries.
    pub lease: &'a v1::LeaseToken,
    /// Stops the phase.
    pub stop: &'a CancellationToken,
    /// Descriptor reads in flight.
    pub concurrency: usize,
}

/// What the phase did.
#[derive(Debug, Default)]
pub struct PermOutcome {
    /// Job-log lines.
    pub events: Vec<v1::JobEvent>,
    /// Descriptors read.
    pub read: u64,
    /// Nodes whose ACL or owner was rewritten.
    pub written: u64,
    /// Items whose descriptor could not be read.
    pub failed: u64,
    /// Why the phase could not replicate at all (the job fails with `PERMISSIONS_NOT_REPLICATED`).
    pub fatal: Option<String>,
}

fn event(level: &str, path: &str, code: &str, message: String) -> v1::JobEvent {
    v1::JobEvent { level: level.into(), path: path.into(), code: code.into(), message }
}

fn is_sid(s: &str) -> bool {
    s.len() > 4 && s[..4].eq_ignore_ascii_case("S-1-")
}

fn class_of(kind: smb_layer::SidKind) -> SidClass {
    match kind {
        smb_layer::SidKind::User | smb_layer::SidKind::Computer => SidClass::Single,
        _ => SidClass::Group,
    }
}

/// The descriptor in the translation's terms.
pub fn nt_descriptor(sd: &SecurityDescriptor) -> NtDescriptor {
    NtDescriptor {
        owner: sd.owner.clone(),
        dacl: sd.dacl.as_ref().map(|aces| {
            aces.iter()
                .map(|a| NtAce {
                    ace_type: match a.kind {
                        AceKind::Allow => perm::nt::ACCESS_ALLOWED,
                        AceKind::Deny => perm::nt::ACCESS_DENIED,
                        AceKind::Other(t) => t,
                    },
                    flags: a.flags.0,
                    mask: a.access_mask,
                    sid: a.sid.clone(),
                })
                .collect()
        }),
        protected: sd.control.dacl_protected,
    }
}

/// A replicated ACL as the control plane carries it.
pub fn acl_msg(acl: &DriveAcl) -> v1::ReplicatedAcl {
    v1::ReplicatedAcl {
        inherit_from_parent: acl.inherit_from_parent,
        entries: acl
            .entries
            .iter()
            .map(|e| {
                let (t, id) = match &e.principal {
                    Principal::Everyone => (v1::PrincipalType::Everyone, String::new()),
                    Principal::User(u) => (v1::PrincipalType::User, u.clone()),
                    Principal::Group(g) => (v1::PrincipalType::Group, g.clone()),
                };
                v1::AclEntry {
                    principal_type: t as i32,
                    principal_id: id,
                    deny: e.deny,
                    permissions: e.permissions,
                    inherit_to_children: e.inherit_to_children,
                }
            })
            .collect(),
        owner_user_id: acl.owner.clone().unwrap_or_default(),
    }
}

/// The control plane's record back in the translation's terms.
pub fn acl_of(m: &v1::ReplicatedAcl) -> DriveAcl {
    let mut entries: Vec<DriveEntry> = m
        .entries
        .iter()
        .map(|e| DriveEntry {
            principal: match v1::PrincipalType::try_from(e.principal_type).unwrap_or(v1::PrincipalType::Unspecified) {
                v1::PrincipalType::User => Principal::User(e.principal_id.clone()),
                v1::PrincipalType::Group => Principal::Group(e.principal_id.clone()),
                _ => Principal::Everyone,
            },
            deny: e.deny,
            permissions: e.permissions,
            inherit_to_children: e.inherit_to_children,
        })
        .collect();
    entries.sort();
    DriveAcl {
        inherit_from_parent: m.inherit_from_parent,
        entries,
        owner: (!m.owner_user_id.is_empty()).then(|| m.owner_user_id.clone()),
    }
}

fn ft_ns(t: FileTime) -> i64 {
    let (s, n) = t.to_unix();
    s.saturating_mul(1_000_000_000).saturating_add(n as i64)
}

/// Runs the phase over `items` (every synced item of the connector).
pub async fn replicate(
    cx: &PermContext<'_>,
    conn: &v1::ConnectorConfig,
    mut items: Vec<Item>,
) -> Result<PermOutcome, RpcError> {
    let mut out = PermOutcome::default();
    items.sort_by(|a, b| a.path.cmp(&b.path));

    // 1. The mappings, resolved to SIDs through LSA.
    let mut ids = Identities::new();
    let names: Vec<&v1::IdentityMapping> =
        conn.identity_mappings.iter().filter(|m| !is_sid(&m.smb_principal)).collect();
    let resolved = if names.is_empty() {
        Vec::new()
    } else {
        let list: Vec<String> = names.iter().map(|m| m.smb_principal.clone()).collect();
        match cx.client.lookup_names(&list).await {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "LSA name lookup failed: permissions not replicated this run");
                let msg = format!(
                    "permissions were not replicated: the file server's LSA service could not resolve the identity mappings ({e}); the run fails so that nothing stays unreplicated unnoticed, and the next run tries again"
                );
                out.events.push(event("error", "", codes::NOT_REPLICATED, msg.clone()));
                out.fatal = Some(msg);
                return Ok(out);
            }
        }
    };
    let target = |m: &v1::IdentityMapping| {
        if m.identity_type == "group" {
            Principal::Group(m.scaidrive_principal_id.clone())
        } else {
            Principal::User(m.scaidrive_principal_id.clone())
        }
    };
    for m in conn.identity_mappings.iter().filter(|m| is_sid(&m.smb_principal)) {
        ids.map(&m.smb_principal, target(m));
    }
    for (m, p) in names.iter().zip(resolved.iter()) {
        match p {
            Some(p) => {
                ids.map(&p.sid, target(m));
                ids.classify(&p.sid, class_of(p.kind));
            }
            None => out.events.push(event(
                "warning",
                "",
                codes::MAPPING_UNRESOLVED,
                format!(
                    "the identity mapping of '{}' names no account the file server knows; it maps nobody",
                    m.smb_principal
                ),
            )),
        }
    }

    // 2. What was replicated before.
    let states = list_states(cx).await?;
    let version = conn.mappings_version;
    let reliable = change_time_tracks_acls(&items);
    let stale = |it: &Item| match states.get(it.path.as_str()) {
        None => true,
        Some(s) => {
            s.node_id != it.node_id
                || s.sd_changed_at_ns != ft_ns(it.change_time)
                || s.mappings_version != version
                || s.drifted
        }
    };
    let needs_read = |it: &Item| !reliable || stale(it);

    // 3. Descriptors known to be needed, read concurrently.
    let wanted: Vec<&Item> = items.iter().filter(|it| needs_read(it)).collect();
    let mut sds: HashMap<String, Result<NtDescriptor, String>> = HashMap::new();
    {
        // Owned futures (no borrow of the context), so the job's future stays `Send`.
        let jobs: Vec<(String, String)> =
            wanted.iter().map(|it| (it.path.as_str().to_string(), cx.root.abs(&it.path))).collect();
        let client = cx.client.clone();
        let mut reads = futures::stream::iter(jobs.into_iter().map(move |(key, path)| {
            let client = client.clone();
            async move {
                let r = client.read_security_descriptor(&path).await;
                (key, r)
            }
        }))
        .buffer_unordered(cx.concurrency.max(1));
        while let Some((key, r)) = tokio::select! {
            _ = cx.stop.cancelled() => return Err(RpcError::Cancelled),
            n = reads.next() => n,
        } {
            sds.insert(key, r.map(|sd| nt_descriptor(&sd)).map_err(|e| format!("{} ({})", e, e.code())));
        }
    }
    // Unmapped SIDs: names for the report, kinds for the deny rule.
    let mut unknown: BTreeSet<String> = BTreeSet::new();
    for sd in sds.values().flatten() {
        for sid in sd.owner.iter().chain(sd.dacl.iter().flatten().map(|a| &a.sid)) {
            if ids.mapped(sid).is_none() {
                unknown.insert(sid.to_ascii_uppercase());
            }
        }
    }
    let mut names_of: HashMap<String, String> = HashMap::new();
    let mut looked_up: HashSet<String> = unknown.iter().cloned().collect();
    lookup_sids(cx.client, &unknown, &mut ids, &mut names_of).await;

    // 4. Translate in path order (parents first), re-reading below folders whose ACL changed.
    let mut report = PermReport::default();
    let mut reaches: HashMap<String, Reach> = HashMap::new();
    let mut reread_dirs: HashSet<String> = HashSet::new();
    let mut updates: Vec<v1::PermissionState> = Vec::new();
    for it in &items {
        if cx.stop.is_cancelled() {
            return Err(RpcError::Cancelled);
        }
        let parent = it.path.parent().map(|p| p.as_str().to_string());
        let parent_reach = parent.as_ref().and_then(|p| reaches.get(p)).cloned();
        let below_changed = parent.as_ref().map(|p| reread_dirs.contains(p)).unwrap_or(false);
        let key = it.path.as_str().to_string();
        let stored = states.get(&key);
        let fresh = if needs_read(it) || below_changed {
            let sd = match sds.remove(&key) {
                Some(r) => r,
                None => cx
                    .client
                    .read_security_descriptor(&cx.root.abs(&it.path))
                    .await
                    .map(|sd| nt_descriptor(&sd))
                    .map_err(|e| format!("{} ({})", e, e.code())),
            };
            out.read += 1;
            match sd {
                Ok(sd) => {
                    // Read late (below a folder whose ACL changed): its SIDs need kinds too.
                    let new: BTreeSet<String> = sd
                        .owner
                        .iter()
                        .chain(sd.dacl.iter().flatten().map(|a| &a.sid))
                        .map(|s| s.to_ascii_uppercase())
                        .filter(|s| ids.mapped(s).is_none() && !names_of.contains_key(s) && !looked_up.contains(s))
                        .collect();
                    looked_up.extend(new.iter().cloned());
                    lookup_sids(cx.client, &new, &mut ids, &mut names_of).await;
                    Some(perm::translate(&sd, it.kind == ItemKind::Dir, parent_reach.as_ref(), &ids, &mut report))
                }
                Err(e) => {
                    out.failed += 1;
                    // The last replicated ACL stays only if it still describes this node and
                    // nothing above it changed; otherwise the item is closed (no access but
                    // the share role) until its descriptor can be read: never more access.
                    let trusted =
                        !below_changed && stored.map(|s| s.node_id == it.node_id && !s.drifted).unwrap_or(false);
                    let what = if trusted {
                        "the last replicated permissions stay"
                    } else {
                        "the item is closed (no ACL entries, no inheritance) until it can be read"
                    };
                    out.events.push(event(
                        "warning",
                        &key,
                        codes::READ_FAILED,
                        format!("the security descriptor could not be read: {e}; {what}"),
                    ));
                    if trusted {
                        None
                    } else {
                        let closed = DriveAcl { inherit_from_parent: false, entries: Vec::new(), owner: None };
                        updates.push(v1::PermissionState {
                            path: key.clone(),
                            node_id: it.node_id.clone(),
                            // Never a real change time: the next run reads it again.
                            sd_changed_at_ns: 0,
                            mappings_version: version,
                            acl: Some(acl_msg(&closed)),
                            drifted: false,
                        });
                        if it.kind == ItemKind::Dir {
                            reread_dirs.insert(key.clone());
                            reaches.insert(key, Reach::new());
                        }
                        continue;
                    }
                }
            }
        } else {
            None
        };
        let acl = match (&fresh, stored) {
            (Some(a), _) => a.clone(),
            (None, Some(s)) => acl_of(&s.acl.clone().unwrap_or_default()),
            // Never read and not readable now: handled above (closed).
            (None, None) => continue,
        };
        if let Some(a) = &fresh {
            let changed = stored.map(|s| acl_of(&s.acl.clone().unwrap_or_default()) != *a || s.drifted).unwrap_or(true);
            if it.kind == ItemKind::Dir && (changed || below_changed) {
                reread_dirs.insert(key.clone());
            }
            if !changed && !stale(it) {
                // Read (the server's change time could not tell) and found as replicated.
                if it.kind == ItemKind::Dir {
                    reaches.insert(key, perm::reach_of(&acl, parent_reach.as_ref()));
                }
                continue;
            }
            updates.push(v1::PermissionState {
                path: key.clone(),
                node_id: it.node_id.clone(),
                sd_changed_at_ns: ft_ns(it.change_time),
                mappings_version: version,
                acl: Some(acl_msg(a)),
                drifted: false,
            });
        }
        if it.kind == ItemKind::Dir {
            reaches.insert(key, perm::reach_of(&acl, parent_reach.as_ref()));
        }
    }

    // 5. Write, and forget what is no longer synced.
    let present: HashSet<&str> = items.iter().map(|i| i.path.as_str()).collect();
    let forget: Vec<String> = states.keys().filter(|p| !present.contains(p.as_str())).cloned().collect();
    let (mut unchanged, mut dropped) = (0u64, 0u64);
    let mut forget_iter = forget.chunks(500);
    let mut update_iter = updates.chunks(500);
    loop {
        let (u, f) = (update_iter.next(), forget_iter.next());
        if u.is_none() && f.is_none() {
            break;
        }
        let req = v1::ApplyPermissionsRequest {
            job_id: cx.job_id.to_string(),
            lease: Some(cx.lease.clone()),
            states: u.map(|u| u.to_vec()).unwrap_or_default(),
            forget_paths: f.map(|f| f.to_vec()).unwrap_or_default(),
        };
        let cp = cx.rpc.cp.clone();
        let r = call_retrying(cx.stop, cx.rpc.timeout.max(Duration::from_secs(30)), 3, || {
            let (mut c, r) = (cp.clone(), req.clone());
            async move { c.apply_permissions(r).await }
        })
        .await?;
        out.written += r.written as u64;
        unchanged += r.unchanged as u64;
        dropped += r.entries_dropped as u64;
    }

    // 6. The job log.
    let more: BTreeSet<String> = report
        .unmapped
        .keys()
        .chain(report.well_known.keys())
        .filter(|s| !names_of.contains_key(*s))
        .cloned()
        .collect();
    lookup_sids(cx.client, &more, &mut ids, &mut names_of).await;
    let who = |sid: &str| match names_of.get(sid) {
        Some(n) => format!("{n} ({sid})"),
        None => sid.to_string(),
    };
    for (sid, n) in &report.unmapped {
        out.events.push(event(
            "warning",
            "",
            perm::codes::UNMAPPED_PRINCIPAL,
            format!(
                "{} appears on {n} item(s) without an identity mapping: its allows were not replicated, its denies apply to everyone, and items it owns are owned by the connector",
                who(sid)
            ),
        ));
    }
    for (sid, n) in &report.well_known {
        out.events.push(event(
            "info",
            "",
            perm::codes::WELL_KNOWN_SKIPPED,
            format!("{} on {n} item(s) has no ScaiDrive meaning and was skipped", who(sid)),
        ));
    }
    for (reason, n) in &report.lossy {
        telemetry::metrics::get().permissions_lossy.add(
            *n,
            &[
                telemetry::metrics::kv("connector_id", conn.connector_id.clone()),
                telemetry::metrics::kv("reason", *reason),
            ],
        );
        let what = match *reason {
            perm::codes::RIGHTS_WITHOUT_EQUIVALENT => "carried rights ScaiDrive cannot express (delete-child without delete, traverse or attributes alone); those rights were left out",
            perm::codes::OBJECT_OR_CONDITIONAL_ACE => "were object or conditional ACEs; allows were left out, denies kept unconditionally",
            perm::codes::UNMAPPED_DENY_TO_EVERYONE => "denied access to an unmapped principal; the deny was applied to everyone (map the principal to lift it)",
            perm::codes::NULL_DACL => "had no DACL at all (everyone full control on the file server) and were replicated as such",
            perm::codes::OWNER_IS_GROUP => "are owned by a principal mapped to a ScaiDrive group; the connector owns them",
            _ => "could not be translated exactly",
        };
        out.events.push(event(
            "warning",
            "",
            reason,
            format!("{n} ACE(s) or item(s) {what} (less access, never more)"),
        ));
    }
    let mut summary = format!(
        "security descriptors read: {}; ACLs written: {}; unchanged: {}; unreadable: {}",
        out.read,
        out.written,
        unchanged + (out.read - out.failed).saturating_sub(updates.len() as u64),
        out.failed
    );
    if !reliable {
        summary.push_str(
            "; every descriptor was read because this server's change time does not move on ACL changes (Samba reports the last-write time)",
        );
    }
    if dropped > 0 {
        summary.push_str(&format!("; entries dropped for users or groups no longer in ScaiDrive: {dropped}"));
    }
    info!(read = out.read, written = out.written, unchanged, failed = out.failed, "permissions replicated");
    out.events.push(event("info", "", codes::REPLICATED, summary));
    Ok(out)
}

async fn lookup_sids(
    client: &SmbClient,
    sids: &BTreeSet<String>,
    ids: &mut Identities,
    names_of: &mut HashMap<String, String>,
) {
    if sids.is_empty() {
        return;
    }
    let list: Vec<String> = sids.iter().cloned().collect();
    match client.lookup_sids(&list).await {
        Ok(found) => {
            for (sid, p) in list.iter().zip(found) {
                if let Some(p) = p {
                    ids.classify(sid, class_of(p.kind));
                    names_of.insert(sid.clone(), p.qualified_name());
                }
            }
        }
        // Names are for the log; unknown kinds are treated as groups (the safe side).
        Err(e) => warn!(error = %e, "LSA SID lookup failed"),
    }
}

async fn list_states(cx: &PermContext<'_>) -> Result<BTreeMap<String, v1::PermissionState>, RpcError> {
    let mut out = BTreeMap::new();
    let mut page_token = String::new();
    loop {
        let req = v1::ListPermissionStatesRequest {
            job_id: cx.job_id.to_string(),
            lease: Some(cx.lease.clone()),
            page_token: page_token.clone(),
            page_size: 1000,
        };
        let cp = cx.rpc.cp.clone();
        let resp = call_retrying(cx.stop, cx.rpc.timeout, 3, || {
            let (mut c, r) = (cp.clone(), req.clone());
            async move { c.list_permission_states(r).await }
        })
        .await?;
        for s in resp.states {
            out.insert(s.path.clone(), s);
        }
        if resp.next_page_token.is_empty() {
            return Ok(out);
        }
        page_token = resp.next_page_token;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smb_layer::{Ace, AceFlags, SdControl};

    fn item(ct: u64, lw: u64) -> Item {
        Item {
            path: RelPath::new("a").unwrap(),
            kind: ItemKind::File,
            node_id: "fil_1".into(),
            change_time: FileTime(ct),
            last_write: FileTime(lw),
        }
    }

    #[test]
    fn change_times_count_only_when_some_differ_from_last_write() {
        assert!(!change_time_tracks_acls(&[]));
        assert!(!change_time_tracks_acls(&[item(5, 5), item(7, 7)]), "Samba: ChangeTime is the last-write time");
        assert!(change_time_tracks_acls(&[item(5, 5), item(9, 7)]), "NTFS: metadata changes move it");
    }

    #[test]
    fn descriptors_and_acls_convert_both_ways() {
        let sd = SecurityDescriptor {
            owner: Some("S-1-5-21-1-2-3-1001".into()),
            group: None,
            dacl: Some(vec![
                Ace { kind: AceKind::Deny, flags: AceFlags(0x10), access_mask: 2, sid: "S-1-1-0".into() },
                Ace { kind: AceKind::Other(9), flags: AceFlags(3), access_mask: 1, sid: "S-1-5-18".into() },
            ]),
            control: SdControl { dacl_protected: true, dacl_auto_inherited: false, dacl_present: true },
        };
        let nt = nt_descriptor(&sd);
        assert!(nt.protected);
        let aces = nt.dacl.unwrap();
        assert_eq!((aces[0].ace_type, aces[0].flags, aces[0].mask), (perm::nt::ACCESS_DENIED, 0x10, 2));
        assert_eq!(aces[1].ace_type, 9);
        let acl = DriveAcl {
            inherit_from_parent: true,
            entries: vec![
                DriveEntry { principal: Principal::Everyone, deny: true, permissions: 2, inherit_to_children: true },
                DriveEntry {
                    principal: Principal::Group("grp_1".into()),
                    deny: false,
                    permissions: 1,
                    inherit_to_children: false,
                },
            ],
            owner: Some("usr_1".into()),
        };
        assert_eq!(acl_of(&acl_msg(&acl)), acl);
        let no_owner = DriveAcl { owner: None, ..acl };
        assert_eq!(acl_of(&acl_msg(&no_owner)), no_owner);
    }
}
