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
//!
//! **Write order.** The writes go in batches that commit one by one, and a run may stop
//! between any two. The invariant: *at every commit, every item's ScaiDrive access is either
//! still what it was before the run or at most what it is once the run is done* — no moment
//! grants anyone more than the file server says, however the run ends. How ([`write_order`]):
//! - deepest first: an item is written before its parent, so a folder never opens while a
//!   child that must stay closed below it still has its old ACL (parents first would do that);
//! - an item that inherits is written while its parent still passes down its *old* entries;
//!   when that could give more than the parent's new entries will (an allow the parent loses,
//!   a deny it gains, or the old state is unknown), the item is first written *detached*
//!   (not inheriting, carrying the parent's new entries as its own: the same access, whatever
//!   the parent says meanwhile) and attached again in a second pass, once every parent is
//!   written. Items that do not inherit never depend on their parent's state;
//! - what is recorded is exactly what was written: a detached state is recorded with change
//!   time 0, so a run that stops before re-attaching reads the item again next time; a state
//!   that was not written is not recorded, and since parents come after their children, a
//!   failed batch leaves every ancestor still to be written unrecorded, so the next run reads
//!   and writes them again (and, as their ACL differs from the record, everything below).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
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

/// The file server, as the phase uses it (the job's SMB connection; a fake in unit tests).
#[async_trait]
pub trait SmbSide: Clone + Send + Sync + 'static {
    /// The security descriptor of the item at `path` (relative to the sync root); the error
    /// as the job log shows it.
    async fn descriptor(&self, path: &RelPath) -> Result<NtDescriptor, String>;
    /// LSA LookupNames: one answer per name, `None` for an unknown one.
    async fn lookup_names(&self, names: &[String]) -> Result<Vec<Option<smb_layer::Principal>>, String>;
    /// LSA LookupSids: one answer per SID, `None` for an unknown one.
    async fn lookup_sids(&self, sids: &[String]) -> Result<Vec<Option<smb_layer::Principal>>, String>;
}

/// The control plane, as the phase uses it (fenced by the job's lease).
#[async_trait]
pub trait ServerSide: Send + Sync {
    /// Every recorded state of the connector, by path, with drift detected.
    async fn list_states(&self) -> Result<BTreeMap<String, v1::PermissionState>, RpcError>;
    /// One `ApplyPermissions` call: one transaction on the server.
    async fn apply(
        &self,
        states: Vec<v1::PermissionState>,
        forget: Vec<String>,
    ) -> Result<v1::ApplyPermissionsResponse, RpcError>;
}

#[derive(Clone)]
struct LiveSmb {
    client: SmbClient,
    root: SmbRoot,
}

#[async_trait]
impl SmbSide for LiveSmb {
    async fn descriptor(&self, path: &RelPath) -> Result<NtDescriptor, String> {
        self.client
            .read_security_descriptor(&self.root.abs(path))
            .await
            .map(|sd| nt_descriptor(&sd))
            .map_err(|e| format!("{} ({})", e, e.code()))
    }
    async fn lookup_names(&self, names: &[String]) -> Result<Vec<Option<smb_layer::Principal>>, String> {
        self.client.lookup_names(names).await.map_err(|e| e.to_string())
    }
    async fn lookup_sids(&self, sids: &[String]) -> Result<Vec<Option<smb_layer::Principal>>, String> {
        self.client.lookup_sids(sids).await.map_err(|e| e.to_string())
    }
}

struct LiveServer<'a> {
    cx: &'a PermContext<'a>,
}

#[async_trait]
impl ServerSide for LiveServer<'_> {
    async fn list_states(&self) -> Result<BTreeMap<String, v1::PermissionState>, RpcError> {
        list_states(self.cx).await
    }
    async fn apply(
        &self,
        states: Vec<v1::PermissionState>,
        forget: Vec<String>,
    ) -> Result<v1::ApplyPermissionsResponse, RpcError> {
        let cx = self.cx;
        let req = v1::ApplyPermissionsRequest {
            job_id: cx.job_id.to_string(),
            lease: Some(cx.lease.clone()),
            states,
            forget_paths: forget,
        };
        let cp = cx.rpc.cp.clone();
        call_retrying(cx.stop, cx.rpc.timeout.max(Duration::from_secs(30)), 3, || {
            let (mut c, r) = (cp.clone(), req.clone());
            async move { c.apply_permissions(r).await }
        })
        .await
    }
}

/// States per `ApplyPermissions` call (the server takes at most 1000).
pub const BATCH: usize = 500;

/// Runs the phase over `items` (every synced item of the connector).
pub async fn replicate(
    cx: &PermContext<'_>,
    conn: &v1::ConnectorConfig,
    items: Vec<Item>,
) -> Result<PermOutcome, RpcError> {
    let smb = LiveSmb { client: cx.client.clone(), root: cx.root.clone() };
    run(&smb, &LiveServer { cx }, cx.stop, cx.concurrency, BATCH, conn, items).await
}

/// The phase itself, over any file server and control plane (see [`replicate`]).
pub async fn run<S: SmbSide, C: ServerSide>(
    smb: &S,
    server: &C,
    stop: &CancellationToken,
    concurrency: usize,
    batch: usize,
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
        match smb.lookup_names(&list).await {
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
    let states = server.list_states().await?;
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
        // Owned futures (no borrow of the caller's state), so the job's future stays `Send`.
        let jobs: Vec<(String, RelPath)> =
            wanted.iter().map(|it| (it.path.as_str().to_string(), it.path.clone())).collect();
        let side = smb.clone();
        let mut reads = futures::stream::iter(jobs.into_iter().map(move |(key, path)| {
            let side = side.clone();
            async move {
                let r = side.descriptor(&path).await;
                (key, r)
            }
        }))
        .buffer_unordered(concurrency.max(1));
        while let Some((key, r)) = tokio::select! {
            _ = stop.cancelled() => return Err(RpcError::Cancelled),
            n = reads.next() => n,
        } {
            sds.insert(key, r);
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
    lookup_sids(smb, &unknown, &mut ids, &mut names_of).await;

    // 4. Translate in path order (parents first), re-reading below folders whose ACL changed.
    // Beside what ScaiDrive will pass down from each folder (`reaches`), what it passes down
    // now, as far as the recorded states tell (`old_reaches`, `None`: unknown), for the
    // write order below.
    let mut report = PermReport::default();
    let mut reaches: HashMap<String, Reach> = HashMap::new();
    let mut old_reaches: HashMap<String, Option<Reach>> = HashMap::new();
    let mut reread_dirs: HashSet<String> = HashSet::new();
    let mut updates: Vec<v1::PermissionState> = Vec::new();
    for it in &items {
        if stop.is_cancelled() {
            return Err(RpcError::Cancelled);
        }
        let parent = it.path.parent().map(|p| p.as_str().to_string());
        let parent_reach = parent.as_ref().and_then(|p| reaches.get(p)).cloned();
        let below_changed = parent.as_ref().map(|p| reread_dirs.contains(p)).unwrap_or(false);
        let key = it.path.as_str().to_string();
        let stored = states.get(&key);
        if it.kind == ItemKind::Dir {
            let now = stored.filter(|s| s.node_id == it.node_id && !s.drifted).and_then(|s| {
                let acl = acl_of(&s.acl.clone().unwrap_or_default());
                match (&parent, acl.inherit_from_parent) {
                    (Some(p), true) => old_reaches.get(p).cloned().flatten().map(|r| perm::reach_of(&acl, Some(&r))),
                    _ => Some(perm::reach_of(&acl, None)),
                }
            });
            old_reaches.insert(key.clone(), now);
        }
        let fresh = if needs_read(it) || below_changed {
            let sd = match sds.remove(&key) {
                Some(r) => r,
                None => smb.descriptor(&it.path).await,
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
                    lookup_sids(smb, &new, &mut ids, &mut names_of).await;
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

    // 5. Write in the safe order (see the module doc), and forget what is no longer synced.
    let present: HashSet<&str> = items.iter().map(|i| i.path.as_str()).collect();
    let forget: Vec<String> = states.keys().filter(|p| !present.contains(p.as_str())).cloned().collect();
    let n_updates = updates.len() as u64;
    let (first, reattach) = write_order(updates, &reaches, &old_reaches);
    let batch = batch.max(1);
    let (mut unchanged, mut dropped) = (0u64, 0u64);
    let first_calls = first.len().div_ceil(batch);
    let mut calls: Vec<(Vec<v1::PermissionState>, Vec<String>)> =
        first.chunks(batch).chain(reattach.chunks(batch)).map(|c| (c.to_vec(), Vec::new())).collect();
    calls.extend(forget.chunks(batch).map(|f| (Vec::new(), f.to_vec())));
    for (i, (states, forget)) in calls.into_iter().enumerate() {
        if stop.is_cancelled() {
            return Err(RpcError::Cancelled);
        }
        let r = server.apply(states, forget).await?;
        // A re-attachment rewrites a node already counted in the first pass.
        if i < first_calls {
            out.written += r.written as u64;
            unchanged += r.unchanged as u64;
            dropped += r.entries_dropped as u64;
        }
    }

    // 6. The job log.
    let more: BTreeSet<String> = report
        .unmapped
        .keys()
        .chain(report.well_known.keys())
        .filter(|s| !names_of.contains_key(*s))
        .cloned()
        .collect();
    lookup_sids(smb, &more, &mut ids, &mut names_of).await;
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
            perm::codes::RIGHTS_WITHOUT_EQUIVALENT => "carried rights ScaiDrive cannot express (part of the write set, one of create-files/create-folders, delete-child without delete, traverse or attributes alone); those rights were left out",
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
        unchanged + (out.read - out.failed).saturating_sub(n_updates),
        out.failed
    );
    if !reliable {
        summary.push_str(
            "; every descriptor was read because this server's change time does not move on ACL changes (Samba reports the last-write time)",
        );
    }
    if dropped > 0 {
        summary.push_str(&format!(
            "; entries naming users or groups no longer in ScaiDrive: {dropped} (their allows dropped, their denies applied to everyone)"
        ));
    }
    info!(read = out.read, written = out.written, unchanged, failed = out.failed, "permissions replicated");
    out.events.push(event("info", "", codes::REPLICATED, summary));
    Ok(out)
}

fn depth(path: &str) -> usize {
    path.bytes().filter(|b| *b == b'/').count()
}

/// Whether an item that inherits, written while its parent still passes down `old`, gets no
/// more than it will once the parent passes down `new`: every allow of `old` is in `new` (or
/// in the item's own inheritable entries, which apply below it too), and every deny of `new`
/// is in `old` (or the item's own). Checked per principal, which is enough: a user's access is
/// the union over the principals that match them, allows minus denies.
fn covered(old: &Reach, new: &Reach, own: &DriveAcl) -> bool {
    let mut mine = Reach::new();
    for e in own.entries.iter().filter(|e| e.inherit_to_children) {
        *mine.entry((e.principal.clone(), e.deny)).or_default() |= e.permissions;
    }
    let get = |r: &Reach, k: &(Principal, bool)| r.get(k).copied().unwrap_or(0);
    old.iter().filter(|((_, deny), _)| !deny).all(|(k, b)| b & !(get(new, k) | get(&mine, k)) == 0)
        && new.iter().filter(|((_, deny), _)| *deny).all(|(k, b)| b & !(get(old, k) | get(&mine, k)) == 0)
}

/// `acl` made independent of its parent: it stops inheriting and carries what the parent will
/// pass down (`reach`) as its own inheritable entries. The same access, for the item and
/// everything below it, whatever the parent says meanwhile.
fn detached(acl: &DriveAcl, reach: &Reach) -> DriveAcl {
    let mut merged: BTreeMap<(Principal, bool, bool), u32> = BTreeMap::new();
    for e in &acl.entries {
        *merged.entry((e.principal.clone(), e.deny, e.inherit_to_children)).or_default() |= e.permissions;
    }
    for ((p, deny), b) in reach {
        *merged.entry((p.clone(), *deny, true)).or_default() |= b;
    }
    let mut entries: Vec<DriveEntry> = merged
        .into_iter()
        .filter(|(_, b)| *b != 0)
        .map(|((principal, deny, inherit_to_children), permissions)| DriveEntry {
            principal,
            deny,
            permissions,
            inherit_to_children,
        })
        .collect();
    entries.sort();
    DriveAcl { inherit_from_parent: false, entries, owner: acl.owner.clone() }
}

/// The order the run's writes go in, as two passes (each sent in batches that commit on their
/// own): first every update, deepest first, an inheriting item *detached* (see [`detached`],
/// recorded with change time 0) when what its parent passes down now is not [`covered`] by
/// what it will pass down; then the detached items again, as they really are.
/// `reaches`: what each folder passes down once everything is written; `old_reaches`: what it
/// passes down now (`None`: unknown, e.g. never replicated or edited in ScaiDrive).
pub fn write_order(
    updates: Vec<v1::PermissionState>,
    reaches: &HashMap<String, Reach>,
    old_reaches: &HashMap<String, Option<Reach>>,
) -> (Vec<v1::PermissionState>, Vec<v1::PermissionState>) {
    let mut first = Vec::with_capacity(updates.len());
    let mut reattach = Vec::new();
    for u in updates {
        let acl = acl_of(&u.acl.clone().unwrap_or_default());
        let parent = u.path.rsplit_once('/').map(|(p, _)| p.to_string());
        let detach_with = match &parent {
            Some(p) if acl.inherit_from_parent => {
                let new = reaches.get(p).cloned().unwrap_or_default();
                match old_reaches.get(p) {
                    Some(Some(old)) if covered(old, &new, &acl) => None,
                    _ => Some(new),
                }
            }
            _ => None,
        };
        match detach_with {
            Some(new) => {
                let mut d = u.clone();
                d.acl = Some(acl_msg(&detached(&acl, &new)));
                d.sd_changed_at_ns = 0;
                first.push(d);
                reattach.push(u);
            }
            None => first.push(u),
        }
    }
    first.sort_by(|a, b| depth(&b.path).cmp(&depth(&a.path)).then_with(|| a.path.cmp(&b.path)));
    (first, reattach)
}

async fn lookup_sids<S: SmbSide>(
    smb: &S,
    sids: &BTreeSet<String>,
    ids: &mut Identities,
    names_of: &mut HashMap<String, String>,
) {
    if sids.is_empty() {
        return;
    }
    let list: Vec<String> = sids.iter().cloned().collect();
    match smb.lookup_sids(&list).await {
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

    // The phase against in-memory stand-ins for the file server and the control plane (pure
    // logic only; the end-to-end tests run it against Samba and the real server).
    mod phase {
        use super::*;
        use perm::bits::{READ, WRITE};
        use perm::nt;
        use std::sync::{Arc, Mutex};

        const ALICE: &str = "S-1-5-21-7-7-7-1001";
        const BOB: &str = "S-1-5-21-7-7-7-1002";
        const FULL: u32 = nt::FILE_ALL_ACCESS;
        const READ_EXECUTE: u32 = 0x0012_00A9;
        const OI_CI: u8 = nt::OBJECT_INHERIT | nt::CONTAINER_INHERIT;

        #[derive(Clone, Default)]
        struct FakeSmb {
            sds: Arc<Mutex<HashMap<String, NtDescriptor>>>,
        }

        #[async_trait]
        impl SmbSide for FakeSmb {
            async fn descriptor(&self, path: &RelPath) -> Result<NtDescriptor, String> {
                self.sds.lock().unwrap().get(path.as_str()).cloned().ok_or_else(|| "no such file".to_string())
            }
            async fn lookup_names(&self, names: &[String]) -> Result<Vec<Option<smb_layer::Principal>>, String> {
                Ok(names.iter().map(|n| account(n.as_str().trim_start_matches("CORP\\"))).collect())
            }
            async fn lookup_sids(&self, sids: &[String]) -> Result<Vec<Option<smb_layer::Principal>>, String> {
                let name = |s: &str| match s {
                    ALICE => Some("alice"),
                    BOB => Some("bob"),
                    _ => None,
                };
                Ok(sids.iter().map(|s| name(s).and_then(account)).collect())
            }
        }

        fn account(name: &str) -> Option<smb_layer::Principal> {
            let sid = match name {
                "alice" => ALICE,
                "bob" => BOB,
                _ => return None,
            };
            Some(smb_layer::Principal {
                sid: sid.into(),
                domain: "CORP".into(),
                name: name.into(),
                kind: smb_layer::SidKind::User,
            })
        }

        /// The server's side: recorded states, the nodes' current ACLs (a node starts closed,
        /// as the connector creates it), every commit's snapshot, and a call that fails.
        #[derive(Default)]
        struct Db {
            recorded: BTreeMap<String, v1::PermissionState>,
            current: BTreeMap<String, DriveAcl>,
            snapshots: Vec<BTreeMap<String, DriveAcl>>,
            calls: usize,
            fail_call: Option<usize>,
        }

        #[derive(Default)]
        struct FakeServer(Mutex<Db>);

        #[async_trait]
        impl ServerSide for FakeServer {
            async fn list_states(&self) -> Result<BTreeMap<String, v1::PermissionState>, RpcError> {
                let db = self.0.lock().unwrap();
                Ok(db
                    .recorded
                    .iter()
                    .map(|(p, s)| {
                        let mut s = s.clone();
                        s.drifted = db.current.get(p) != Some(&acl_of(&s.acl.clone().unwrap_or_default()));
                        (p.clone(), s)
                    })
                    .collect())
            }
            async fn apply(
                &self,
                states: Vec<v1::PermissionState>,
                forget: Vec<String>,
            ) -> Result<v1::ApplyPermissionsResponse, RpcError> {
                let mut db = self.0.lock().unwrap();
                db.calls += 1;
                if db.fail_call == Some(db.calls) {
                    return Err(RpcError::Unavailable("injected failure".into()));
                }
                let mut r = v1::ApplyPermissionsResponse::default();
                for s in states {
                    let acl = acl_of(&s.acl.clone().unwrap_or_default());
                    if db.current.get(&s.path) == Some(&acl) {
                        r.unchanged += 1;
                    } else {
                        r.written += 1;
                    }
                    db.current.insert(s.path.clone(), acl);
                    db.recorded.insert(s.path.clone(), s);
                }
                for p in forget {
                    db.recorded.remove(&p);
                }
                let snap = db.current.clone();
                db.snapshots.push(snap);
                Ok(r)
            }
        }

        impl Db {
            /// `user`'s effective rights on `path` in `acls`, the way ScaiDrive resolves them.
            fn eff(acls: &BTreeMap<String, DriveAcl>, path: &str, user: &str) -> u32 {
                let closed = DriveAcl::default();
                let mut chain = vec![acls.get(path).unwrap_or(&closed)];
                let mut at = path;
                while let Some((p, _)) = at.rsplit_once('/') {
                    chain.push(acls.get(p).unwrap_or(&closed));
                    at = p;
                }
                perm::effective(&chain, user, &[])
            }
        }

        fn allow(sid: &str, mask: u32, flags: u8) -> NtAce {
            NtAce { ace_type: nt::ACCESS_ALLOWED, flags, mask, sid: sid.into() }
        }
        fn sd(protected: bool, aces: Vec<NtAce>) -> NtDescriptor {
            NtDescriptor { owner: Some(ALICE.into()), dacl: Some(aces), protected }
        }
        fn inherited(sid: &str, mask: u32) -> NtAce {
            allow(sid, mask, nt::INHERITED)
        }

        const PATHS: [(&str, ItemKind); 4] =
            [("A", ItemKind::Dir), ("A/c.txt", ItemKind::File), ("B", ItemKind::Dir), ("B/c.txt", ItemKind::File)];

        fn items(generation: u64) -> Vec<Item> {
            PATHS
                .iter()
                .enumerate()
                .map(|(i, (p, kind))| Item {
                    path: RelPath::new(p).unwrap(),
                    kind: *kind,
                    node_id: format!("n{i}"),
                    // NTFS-like: the change time moves with every ACL change.
                    change_time: FileTime(1000 + generation),
                    last_write: FileTime(1),
                })
                .collect()
        }

        fn conn() -> v1::ConnectorConfig {
            let m = |p: &str, to: &str| v1::IdentityMapping {
                identity_type: "user".into(),
                smb_principal: p.into(),
                scaidrive_principal_id: to.into(),
            };
            v1::ConnectorConfig {
                connector_id: "cnn_1".into(),
                identity_mappings: vec![m("CORP\\alice", "usr_alice"), m(BOB, "usr_bob")],
                mappings_version: 1,
                ..Default::default()
            }
        }

        async fn run_once(smb: &FakeSmb, server: &FakeServer, generation: u64) -> Result<PermOutcome, RpcError> {
            run(smb, server, &CancellationToken::new(), 4, 1, &conn(), items(generation)).await
        }

        fn set(smb: &FakeSmb, sds: Vec<(&str, NtDescriptor)>) {
            let mut m = smb.sds.lock().unwrap();
            for (p, d) in sds {
                m.insert(p.into(), d);
            }
        }

        /// bob may never read a child the file server closes to him, at any commit of any
        /// run: not when the folder above opens to him while the child closes (parents first
        /// would open it), nor when the child starts inheriting from a folder that drops him
        /// (children first, attached, would open it), nor when a run fails halfway.
        #[tokio::test]
        async fn no_commit_ever_opens_a_closed_child_and_a_failed_run_is_finished_next_time() {
            let (smb, server) = (FakeSmb::default(), FakeServer::default());
            let gen1 = vec![
                ("A", sd(true, vec![allow(ALICE, FULL, OI_CI)])),
                ("A/c.txt", sd(false, vec![inherited(ALICE, FULL)])),
                ("B", sd(true, vec![allow(ALICE, FULL, OI_CI), allow(BOB, READ_EXECUTE, OI_CI)])),
                ("B/c.txt", sd(true, vec![allow(ALICE, FULL, 0)])),
            ];
            // Generation 2: A opens to bob but its child closes; B drops bob and its child
            // starts inheriting from it.
            let gen2 = vec![
                ("A", sd(true, vec![allow(ALICE, FULL, OI_CI), allow(BOB, READ_EXECUTE, OI_CI)])),
                ("A/c.txt", sd(true, vec![allow(ALICE, FULL, 0)])),
                ("B", sd(true, vec![allow(ALICE, FULL, OI_CI)])),
                ("B/c.txt", sd(false, vec![inherited(ALICE, FULL)])),
            ];
            let bob_never_reads_a_child = |server: &FakeServer| {
                let db = server.0.lock().unwrap();
                for (i, snap) in db.snapshots.iter().enumerate() {
                    for child in ["A/c.txt", "B/c.txt"] {
                        assert_eq!(
                            Db::eff(snap, child, "usr_bob") & READ,
                            0,
                            "commit {i}: bob reads {child}: {snap:#?}"
                        );
                    }
                }
            };

            set(&smb, gen1.clone());
            let o = run_once(&smb, &server, 1).await.unwrap();
            assert!(o.fatal.is_none(), "{:?}", o.events);
            bob_never_reads_a_child(&server);
            {
                let db = server.0.lock().unwrap();
                assert_eq!(Db::eff(&db.current, "B", "usr_bob"), READ);
                assert_eq!(Db::eff(&db.current, "A/c.txt", "usr_alice") & (READ | WRITE), READ | WRITE);
                assert!(db.current["A/c.txt"].inherit_from_parent, "attached again after its parent");
            }

            set(&smb, gen2.clone());
            run_once(&smb, &server, 2).await.unwrap();
            bob_never_reads_a_child(&server);
            {
                let db = server.0.lock().unwrap();
                assert_eq!(Db::eff(&db.current, "A", "usr_bob"), READ);
                assert_eq!(Db::eff(&db.current, "B", "usr_bob"), 0);
                assert!(db.current["B/c.txt"].inherit_from_parent);
                assert!(db.recorded.values().all(|s| s.sd_changed_at_ns != 0), "everything recorded as read");
            }

            // Generation 3 (back to 1), and the second commit fails: the run fails, nothing
            // unwritten is recorded as done, and the next run finishes the job.
            set(&smb, gen1);
            {
                let mut db = server.0.lock().unwrap();
                db.fail_call = Some(db.calls + 2);
            }
            assert!(run_once(&smb, &server, 3).await.is_err());
            bob_never_reads_a_child(&server);
            {
                let db = server.0.lock().unwrap();
                for dir in ["A", "B"] {
                    assert_eq!(db.recorded[dir].sd_changed_at_ns, ft_ns(FileTime(1002)), "{dir} was not written");
                }
            }
            let o = run_once(&smb, &server, 3).await.unwrap();
            bob_never_reads_a_child(&server);
            {
                let db = server.0.lock().unwrap();
                assert_eq!(Db::eff(&db.current, "A", "usr_bob"), 0);
                assert_eq!(Db::eff(&db.current, "B", "usr_bob"), READ);
                let when = ft_ns(FileTime(1003));
                assert!(db.recorded.values().all(|s| s.sd_changed_at_ns == when), "{:#?}", db.recorded);
                assert!(db.recorded.iter().all(|(p, s)| db.current[p] == acl_of(s.acl.as_ref().unwrap())), "no drift");
            }
            assert!(o.written > 0);
            // Nothing changed since: nothing is written.
            let o = run_once(&smb, &server, 3).await.unwrap();
            assert_eq!((o.read, o.written), (0, 0));
        }

        #[test]
        fn detaching_only_where_the_old_parent_could_give_more() {
            let alice = || Principal::User("usr_alice".into());
            let bob = || Principal::User("usr_bob".into());
            let reach =
                |v: Vec<(Principal, bool, u32)>| -> Reach { v.into_iter().map(|(p, d, b)| ((p, d), b)).collect() };
            let attached = DriveAcl { inherit_from_parent: true, entries: vec![], owner: None };
            let state = |path: &str| v1::PermissionState {
                path: path.into(),
                node_id: "n".into(),
                sd_changed_at_ns: 5,
                mappings_version: 1,
                acl: Some(acl_msg(&attached)),
                drifted: false,
            };
            let new = reach(vec![(alice(), false, READ)]);
            let reaches: HashMap<String, Reach> = [("D".to_string(), new.clone())].into();
            // The old parent gave less (or the same): written as is.
            for old in [reach(vec![]), new.clone()] {
                let olds: HashMap<String, Option<Reach>> = [("D".to_string(), Some(old))].into();
                let (first, again) = write_order(vec![state("D/x")], &reaches, &olds);
                assert_eq!((first.len(), again.len()), (1, 0));
            }
            // It gave bob something, lacked a deny the new one has, or is unknown: detached.
            for old in [Some(reach(vec![(alice(), false, READ), (bob(), false, READ)])), None] {
                let olds: HashMap<String, Option<Reach>> = [("D".to_string(), old)].into();
                let (first, again) = write_order(vec![state("D/x")], &reaches, &olds);
                assert_eq!(again.len(), 1);
                let d = acl_of(first[0].acl.as_ref().unwrap());
                assert!(!d.inherit_from_parent);
                assert_eq!(perm::effective(&[&d], "usr_alice", &[]), READ);
                assert_eq!(first[0].sd_changed_at_ns, 0, "recorded as not read, until attached");
                assert_eq!(again[0].sd_changed_at_ns, 5);
            }
            let with_deny = reach(vec![(alice(), false, READ), (bob(), true, READ)]);
            let reaches: HashMap<String, Reach> = [("D".to_string(), with_deny)].into();
            let olds: HashMap<String, Option<Reach>> = [("D".to_string(), Some(new))].into();
            assert_eq!(write_order(vec![state("D/x")], &reaches, &olds).1.len(), 1);
            // Deepest first.
            let (first, _) =
                write_order(vec![state("D"), state("D/x/y"), state("D/x")], &HashMap::new(), &HashMap::new());
            let order: Vec<&str> = first.iter().map(|s| s.path.as_str()).collect();
            assert_eq!(order, ["D/x/y", "D/x", "D"]);
        }
    }
}
