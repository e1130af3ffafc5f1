//! Permission replication, the pure part: an NT security descriptor (owner and DACL, as the
//! file server holds it) becomes a ScaiDrive ACL and owner, through the identity mappings.
//!
//! The rule everywhere: **grant less, and say so**. Whatever cannot be expressed exactly in
//! ScaiDrive's model is either dropped from an allow (less access) or widened in a deny (less
//! access), and counted in a [`PermReport`] for the job log. The translation table is in this
//! crate's `README.md` ("Permissions") and in [`allow_bits`] / [`deny_bits`].
//!
//! Inheritance: ScaiDrive resolves an item's access from its own entries plus, while it
//! inherits, the `inherit_to_children` entries of its ancestors. [`translate`] keeps an item
//! inheriting only when the access ScaiDrive would pass down from the parent ([`Reach`]) equals
//! what the item's *inherited* ACEs say; otherwise it breaks inheritance and copies every ACE
//! that applies to the item as an explicit entry. Either way the item's ScaiDrive access is the
//! one its own DACL gives, whatever the parent's DACL says (NTFS does not re-propagate by
//! itself, and an item's DACL is the truth for that item).
//!
//! No I/O, no clock: the same inputs give the same ACL.

use std::collections::{BTreeMap, BTreeSet, HashMap};

/// ScaiDrive permission bits (the platform's flags).
pub mod bits {
    /// View contents, list folder entries, read metadata.
    pub const READ: u32 = 1;
    /// Modify contents, rename, update metadata.
    pub const WRITE: u32 = 2;
    /// Move to trash.
    pub const DELETE: u32 = 4;
    /// Create new items inside a folder.
    pub const CREATE: u32 = 8;
    /// Create external share links (never granted from NTFS rights: no equivalent).
    pub const SHARE: u32 = 16;
    /// Modify the ACL, transfer ownership.
    pub const MANAGE_PERMISSIONS: u32 = 32;
    /// What a file can use (CREATE means nothing on a file).
    pub const FILE_MEANINGFUL: u32 = READ | WRITE | DELETE | SHARE | MANAGE_PERMISSIONS;
    /// Everything NTFS full control maps to.
    pub const FULL: u32 = READ | WRITE | DELETE | CREATE | MANAGE_PERMISSIONS;
}

/// NT access-mask bits ([MS-DTYP] 2.4.3, file and directory specific rights).
pub mod nt {
    /// FILE_READ_DATA / FILE_LIST_DIRECTORY.
    pub const READ_DATA: u32 = 0x0000_0001;
    /// FILE_WRITE_DATA / FILE_ADD_FILE.
    pub const WRITE_DATA: u32 = 0x0000_0002;
    /// FILE_APPEND_DATA / FILE_ADD_SUBDIRECTORY.
    pub const APPEND_DATA: u32 = 0x0000_0004;
    /// FILE_READ_EA.
    pub const READ_EA: u32 = 0x0000_0008;
    /// FILE_WRITE_EA.
    pub const WRITE_EA: u32 = 0x0000_0010;
    /// FILE_EXECUTE / FILE_TRAVERSE.
    pub const EXECUTE: u32 = 0x0000_0020;
    /// FILE_DELETE_CHILD.
    pub const DELETE_CHILD: u32 = 0x0000_0040;
    /// FILE_READ_ATTRIBUTES.
    pub const READ_ATTRIBUTES: u32 = 0x0000_0080;
    /// FILE_WRITE_ATTRIBUTES.
    pub const WRITE_ATTRIBUTES: u32 = 0x0000_0100;
    /// DELETE.
    pub const DELETE: u32 = 0x0001_0000;
    /// READ_CONTROL.
    pub const READ_CONTROL: u32 = 0x0002_0000;
    /// WRITE_DAC.
    pub const WRITE_DAC: u32 = 0x0004_0000;
    /// WRITE_OWNER.
    pub const WRITE_OWNER: u32 = 0x0008_0000;
    /// SYNCHRONIZE.
    pub const SYNCHRONIZE: u32 = 0x0010_0000;
    /// GENERIC_ALL.
    pub const GENERIC_ALL: u32 = 0x1000_0000;
    /// GENERIC_EXECUTE.
    pub const GENERIC_EXECUTE: u32 = 0x2000_0000;
    /// GENERIC_WRITE.
    pub const GENERIC_WRITE: u32 = 0x4000_0000;
    /// GENERIC_READ.
    pub const GENERIC_READ: u32 = 0x8000_0000;
    /// FILE_ALL_ACCESS.
    pub const FILE_ALL_ACCESS: u32 = 0x001F_01FF;
    /// FILE_GENERIC_READ.
    pub const FILE_GENERIC_READ: u32 = 0x0012_0089;
    /// FILE_GENERIC_WRITE.
    pub const FILE_GENERIC_WRITE: u32 = 0x0012_0116;
    /// FILE_GENERIC_EXECUTE.
    pub const FILE_GENERIC_EXECUTE: u32 = 0x0012_00A0;

    /// ACE types ([MS-DTYP] 2.4.4.1).
    pub const ACCESS_ALLOWED: u8 = 0x00;
    /// ACCESS_DENIED_ACE_TYPE.
    pub const ACCESS_DENIED: u8 = 0x01;
    /// ACCESS_ALLOWED_OBJECT_ACE_TYPE.
    pub const ACCESS_ALLOWED_OBJECT: u8 = 0x05;
    /// ACCESS_DENIED_OBJECT_ACE_TYPE.
    pub const ACCESS_DENIED_OBJECT: u8 = 0x06;
    /// ACCESS_ALLOWED_CALLBACK_ACE_TYPE (conditional).
    pub const ACCESS_ALLOWED_CALLBACK: u8 = 0x09;
    /// ACCESS_DENIED_CALLBACK_ACE_TYPE (conditional).
    pub const ACCESS_DENIED_CALLBACK: u8 = 0x0A;
    /// ACCESS_ALLOWED_CALLBACK_OBJECT_ACE_TYPE.
    pub const ACCESS_ALLOWED_CALLBACK_OBJECT: u8 = 0x0B;
    /// ACCESS_DENIED_CALLBACK_OBJECT_ACE_TYPE.
    pub const ACCESS_DENIED_CALLBACK_OBJECT: u8 = 0x0C;

    /// ACE flags.
    pub const OBJECT_INHERIT: u8 = 0x01;
    /// CONTAINER_INHERIT_ACE.
    pub const CONTAINER_INHERIT: u8 = 0x02;
    /// NO_PROPAGATE_INHERIT_ACE.
    pub const NO_PROPAGATE_INHERIT: u8 = 0x04;
    /// INHERIT_ONLY_ACE.
    pub const INHERIT_ONLY: u8 = 0x08;
    /// INHERITED_ACE.
    pub const INHERITED: u8 = 0x10;
}

/// Stable codes of what a run reports about permissions (job log events and the
/// `reason` of the lossy-translation counts).
pub mod codes {
    /// An ACE or owner names a principal without an identity mapping.
    pub const UNMAPPED_PRINCIPAL: &str = "PERMISSIONS_UNMAPPED_PRINCIPAL";
    /// A well-known principal without a ScaiDrive meaning (SYSTEM, CREATOR OWNER, BUILTIN\…).
    pub const WELL_KNOWN_SKIPPED: &str = "PERMISSIONS_WELL_KNOWN_SKIPPED";
    /// Rights that ScaiDrive cannot express were left out of an allow (e.g. delete child
    /// without delete, execute/traverse alone).
    pub const RIGHTS_WITHOUT_EQUIVALENT: &str = "RIGHTS_WITHOUT_EQUIVALENT";
    /// An object or conditional (callback) allow ACE was left out; such denies are kept as
    /// plain denies.
    pub const OBJECT_OR_CONDITIONAL_ACE: &str = "OBJECT_OR_CONDITIONAL_ACE";
    /// A deny for an unmapped principal became a deny for everyone: an unmapped account may
    /// still reach the item in ScaiDrive through a mapped group or everyone, and an unmapped
    /// group may contain mapped users.
    pub const UNMAPPED_DENY_TO_EVERYONE: &str = "UNMAPPED_DENY_APPLIED_TO_EVERYONE";
    /// The item has no DACL at all (NTFS: everyone has full control); replicated as an allow
    /// for everyone.
    pub const NULL_DACL: &str = "NULL_DACL";
    /// The owner maps to a ScaiDrive group; owners are users, so the connector owns it.
    pub const OWNER_IS_GROUP: &str = "OWNER_MAPPED_TO_GROUP";
}

/// An access control entry as read from the file server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NtAce {
    /// The ACE type byte (see [`nt`]).
    pub ace_type: u8,
    /// The ACE flags byte.
    pub flags: u8,
    /// The access mask.
    pub mask: u32,
    /// The trustee, `S-1-…`.
    pub sid: String,
}

/// The parts of a security descriptor that matter here.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NtDescriptor {
    /// The owner SID.
    pub owner: Option<String>,
    /// The DACL in order; `None` = no DACL (everyone has full access).
    pub dacl: Option<Vec<NtAce>>,
    /// SE_DACL_PROTECTED: the item does not inherit from its parent.
    pub protected: bool,
}

/// A ScaiDrive principal.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Principal {
    /// Everyone (ScaiDrive's `everyone` principal type).
    Everyone,
    /// A user (`usr_…`).
    User(String),
    /// A group (`grp_…`).
    Group(String),
}

/// One ScaiDrive ACL entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DriveEntry {
    /// Who.
    pub principal: Principal,
    /// A deny entry (else allow).
    pub deny: bool,
    /// Permission bits ([`bits`]).
    pub permissions: u32,
    /// Whether the entry also applies below this item.
    pub inherit_to_children: bool,
}

/// A ScaiDrive ACL and owner for one item, as replication wants it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DriveAcl {
    /// Whether the item also takes its ancestors' inheritable entries.
    pub inherit_from_parent: bool,
    /// The item's own entries, sorted (by [`DriveEntry`]'s order).
    pub entries: Vec<DriveEntry>,
    /// The owner (`usr_…`); `None` = the connector (its service account) owns it.
    pub owner: Option<String>,
}

/// Access that ScaiDrive passes from an item down to its children:
/// `(principal, deny) → bits`.
pub type Reach = BTreeMap<(Principal, bool), u32>;

/// What LSA says a SID names, as far as denies are concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SidClass {
    /// One account: a deny for it concerns only that account.
    Single,
    /// A group, alias or well-known group: it may contain mapped users.
    Group,
}

/// The identity mappings, resolved to SIDs, and what is known of other SIDs.
#[derive(Clone, Debug, Default)]
pub struct Identities {
    by_sid: HashMap<String, Principal>,
    classes: HashMap<String, SidClass>,
}

impl Identities {
    /// Empty: nothing mapped.
    pub fn new() -> Self {
        Self::default()
    }
    /// Maps `sid` to a ScaiDrive principal.
    pub fn map(&mut self, sid: &str, to: Principal) {
        self.by_sid.insert(sid.to_ascii_uppercase(), to);
    }
    /// Records what kind of account `sid` is (from LSA).
    pub fn classify(&mut self, sid: &str, class: SidClass) {
        self.classes.insert(sid.to_ascii_uppercase(), class);
    }
    /// The mapped principal of `sid`.
    pub fn mapped(&self, sid: &str) -> Option<&Principal> {
        self.by_sid.get(&sid.to_ascii_uppercase())
    }
    fn class(&self, sid: &str) -> Option<SidClass> {
        self.classes.get(&sid.to_ascii_uppercase()).copied()
    }
}

/// What one run saw that the job log must say: per principal, on how many items; per lossy
/// reason, how many ACEs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PermReport {
    /// Unmapped principals (SID → items naming it in an ACE or as owner).
    pub unmapped: BTreeMap<String, u64>,
    /// Well-known principals skipped (SID → items).
    pub well_known: BTreeMap<String, u64>,
    /// Lossy translations ([`codes`] reason → ACEs or items).
    pub lossy: BTreeMap<&'static str, u64>,
}

impl PermReport {
    fn lossy(&mut self, reason: &'static str) {
        *self.lossy.entry(reason).or_default() += 1;
    }
}

/// How a SID is handled when no mapping names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Unmapped {
    /// Everyone or Authenticated Users.
    Everyone,
    /// A well-known principal without a ScaiDrive meaning.
    WellKnown(SidClass),
    /// An ordinary account or group nobody mapped.
    Ordinary,
}

fn classify_unmapped(sid: &str) -> Unmapped {
    let s = sid.to_ascii_uppercase();
    match s.as_str() {
        "S-1-1-0" | "S-1-5-11" => return Unmapped::Everyone,
        // SYSTEM, LOCAL SERVICE, NETWORK SERVICE, CREATOR OWNER, OWNER RIGHTS, ANONYMOUS
        // LOGON, BUILTIN\Guests: no ScaiDrive user is one of them (a deny for them is dropped).
        "S-1-5-18" | "S-1-5-19" | "S-1-5-20" | "S-1-3-0" | "S-1-3-4" | "S-1-5-7" | "S-1-5-32-546" => {
            return Unmapped::WellKnown(SidClass::Single)
        }
        _ => {}
    }
    let parts: Vec<&str> = s.split('-').collect();
    // S-1-<authority>-<sub>...
    match (parts.get(2).copied(), parts.get(3).copied()) {
        // NT AUTHORITY: domain accounts (21) and Unix accounts mapped by Samba (S-1-22) are
        // ordinary; BUILTIN (32) and the rest are well-known groups.
        (Some("5"), Some("21")) => Unmapped::Ordinary,
        (Some("22"), _) => Unmapped::Ordinary,
        (Some("5"), _) | (Some("2"), _) | (Some("3"), _) | (Some("15"), _) | (Some("16"), _) | (Some("1"), _) => {
            Unmapped::WellKnown(SidClass::Group)
        }
        _ => Unmapped::Ordinary,
    }
}

/// Expands the generic rights into file rights.
pub fn expand_generic(mask: u32) -> u32 {
    let mut m = mask & !(nt::GENERIC_ALL | nt::GENERIC_READ | nt::GENERIC_WRITE | nt::GENERIC_EXECUTE);
    if mask & nt::GENERIC_ALL != 0 {
        m |= nt::FILE_ALL_ACCESS;
    }
    if mask & nt::GENERIC_READ != 0 {
        m |= nt::FILE_GENERIC_READ;
    }
    if mask & nt::GENERIC_WRITE != 0 {
        m |= nt::FILE_GENERIC_WRITE;
    }
    if mask & nt::GENERIC_EXECUTE != 0 {
        m |= nt::FILE_GENERIC_EXECUTE;
    }
    m
}

/// The write rights ScaiDrive's `WRITE` stands for, all three needed: write data (overwrite),
/// append data (extend) and write attributes (metadata). On a folder the first two are "add
/// file" and "add subfolder".
const WRITE_SET: u32 = nt::WRITE_DATA | nt::APPEND_DATA | nt::WRITE_ATTRIBUTES;
/// What ScaiDrive's `CREATE` (new files *and* folders inside a folder) needs on a folder:
/// add file and add subfolder.
const CREATE_SET: u32 = nt::WRITE_DATA | nt::APPEND_DATA;

/// What an allow ACE grants in ScaiDrive on an item of this kind (conservative: a right only
/// when NTFS grants all of it), and whether rights were left out.
///
/// The same bits mean different things on files and folders (0x2 is write data on a file, add
/// file on a folder; 0x4 append data / add subfolder): `WRITE` needs the whole [`WRITE_SET`]
/// on either kind, `CREATE` needs both "add" rights on a folder and means nothing on a file.
pub fn allow_bits(mask: u32, is_dir: bool) -> (u32, bool) {
    let m = expand_generic(mask);
    let mut b = 0;
    if m & nt::READ_DATA != 0 {
        b |= bits::READ;
    }
    if is_dir && m & CREATE_SET == CREATE_SET {
        b |= bits::CREATE;
    }
    // Files: overwrite, extend and touch metadata. Folders: rename and change metadata, which
    // ScaiDrive ties to the standard "Write" set there too.
    if m & WRITE_SET == WRITE_SET {
        b |= bits::WRITE;
    }
    if m & nt::DELETE != 0 {
        b |= bits::DELETE;
    }
    if m & (nt::WRITE_DAC | nt::WRITE_OWNER) != 0 {
        b |= bits::MANAGE_PERMISSIONS;
    }
    // Left out: delete-child without delete (ScaiDrive cannot grant "delete what is inside"
    // without "delete this folder"); part of the write set on a file (append only, overwrite
    // without metadata…); one of the two "add" rights on a folder (files only or folders
    // only); execute/traverse, extended attributes and attributes alone.
    let partial_write = !is_dir && m & CREATE_SET != 0 && b & bits::WRITE == 0;
    let partial_create = is_dir && m & CREATE_SET != 0 && b & bits::CREATE == 0;
    let left_out = (m & nt::DELETE_CHILD != 0 && m & nt::DELETE == 0)
        || partial_write
        || partial_create
        || (b == 0 && m & !(nt::SYNCHRONIZE | nt::READ_CONTROL | nt::READ_ATTRIBUTES | nt::READ_EA) != 0);
    (b, left_out)
}

/// What a folder's allow ACE may pass down as one ScaiDrive `inherit_to_children` entry.
///
/// Such an entry reaches every file and folder below, at any depth, while NTFS passes an ACE
/// to files only (object inherit), to folders only (container inherit), or to the direct
/// children only (no-propagate). The entry therefore carries only the rights every item it
/// reaches would get from NTFS: with both flags, what the ACE means on a folder and on a file
/// (`CREATE` is meaningless on a file, so it may stay); folders only, `CREATE` alone (the one
/// right that means nothing on the files it also reaches); files only or no-propagate,
/// nothing. The items that NTFS does give more carry their own copy (they stop inheriting, see
/// [`translate`]), so nothing is lost on existing items; only items made in ScaiDrive before
/// the next run start with less.
pub fn inheritable_allow_bits(mask: u32, flags: u8) -> u32 {
    let (oi, ci) = (flags & nt::OBJECT_INHERIT != 0, flags & nt::CONTAINER_INHERIT != 0);
    if flags & nt::NO_PROPAGATE_INHERIT != 0 || !ci {
        return 0;
    }
    let on_dir = allow_bits(mask, true).0;
    if oi {
        on_dir & (allow_bits(mask, false).0 | !bits::FILE_MEANINGFUL)
    } else {
        on_dir & !bits::FILE_MEANINGFUL
    }
}

/// What a deny ACE denies in ScaiDrive (liberal: a right as soon as NTFS denies part of it).
pub fn deny_bits(mask: u32, is_dir: bool) -> u32 {
    let m = expand_generic(mask);
    let mut b = 0;
    if m & (nt::READ_DATA | nt::READ_EA | nt::READ_ATTRIBUTES) != 0 {
        b |= bits::READ;
    }
    if m & (nt::WRITE_DATA | nt::APPEND_DATA | nt::WRITE_EA | nt::WRITE_ATTRIBUTES) != 0 {
        b |= bits::WRITE;
    }
    if is_dir && m & (nt::WRITE_DATA | nt::APPEND_DATA) != 0 {
        b |= bits::CREATE;
    }
    if m & (nt::DELETE | nt::DELETE_CHILD) != 0 {
        b |= bits::DELETE;
    }
    if m & (nt::WRITE_DAC | nt::WRITE_OWNER) != 0 {
        b |= bits::MANAGE_PERMISSIONS;
    }
    b
}

fn meaningful(is_dir: bool) -> u32 {
    if is_dir {
        u32::MAX
    } else {
        bits::FILE_MEANINGFUL
    }
}

/// `reach` restricted to what matters on an item of this kind, without empty entries.
fn restrict(reach: &Reach, is_dir: bool) -> Reach {
    reach
        .iter()
        .filter_map(|(k, b)| {
            let b = b & meaningful(is_dir);
            (b != 0).then(|| (k.clone(), b))
        })
        .collect()
}

/// One translated ACE before merging.
struct Translated {
    principal: Principal,
    deny: bool,
    permissions: u32,
    inheritable: bool,
    inherited: bool,
}

/// Translates one item's descriptor. `parent_reach` is what ScaiDrive passes down from the
/// item's parent (`None` for the top of the sync root: nothing from above the connector's
/// root may leak in, so the top level never inherits).
pub fn translate(
    sd: &NtDescriptor,
    is_dir: bool,
    parent_reach: Option<&Reach>,
    ids: &Identities,
    report: &mut PermReport,
) -> DriveAcl {
    let mut unmapped_here: BTreeSet<String> = BTreeSet::new();
    let mut well_known_here: BTreeSet<String> = BTreeSet::new();

    let owner = match &sd.owner {
        None => None,
        Some(sid) => match ids.mapped(sid) {
            Some(Principal::User(u)) => Some(u.clone()),
            Some(_) => {
                report.lossy(codes::OWNER_IS_GROUP);
                None
            }
            None => {
                match classify_unmapped(sid) {
                    Unmapped::WellKnown(_) | Unmapped::Everyone => well_known_here.insert(sid.to_ascii_uppercase()),
                    Unmapped::Ordinary => unmapped_here.insert(sid.to_ascii_uppercase()),
                };
                None
            }
        },
    };

    let Some(dacl) = &sd.dacl else {
        report.lossy(codes::NULL_DACL);
        count(report, unmapped_here, well_known_here);
        return DriveAcl {
            inherit_from_parent: false,
            entries: vec![DriveEntry {
                principal: Principal::Everyone,
                deny: false,
                permissions: bits::FULL,
                inherit_to_children: is_dir,
            }],
            owner,
        };
    };

    let mut out: Vec<Translated> = Vec::new();
    for ace in dacl {
        let deny = match ace.ace_type {
            nt::ACCESS_ALLOWED => false,
            nt::ACCESS_DENIED => true,
            nt::ACCESS_DENIED_OBJECT | nt::ACCESS_DENIED_CALLBACK | nt::ACCESS_DENIED_CALLBACK_OBJECT => {
                // A conditional or object deny, kept unconditional: less access.
                report.lossy(codes::OBJECT_OR_CONDITIONAL_ACE);
                true
            }
            nt::ACCESS_ALLOWED_OBJECT | nt::ACCESS_ALLOWED_CALLBACK | nt::ACCESS_ALLOWED_CALLBACK_OBJECT => {
                report.lossy(codes::OBJECT_OR_CONDITIONAL_ACE);
                continue;
            }
            // Audit, alarm and label ACEs say nothing about access.
            _ => continue,
        };
        let applies = ace.flags & nt::INHERIT_ONLY == 0;
        let inheritable = is_dir && ace.flags & (nt::OBJECT_INHERIT | nt::CONTAINER_INHERIT) != 0;
        if !applies {
            // Only for the children, which carry their own inherited copy: nothing here.
            continue;
        }
        // What passes down as an inheritable entry: a deny as it is (a deny reaching more
        // items than NTFS says is less access, and those items stop inheriting anyway); an
        // allow only as far as every item it reaches would get it.
        let (permissions, passed_down) = if deny {
            let b = deny_bits(ace.mask, is_dir);
            (b, if inheritable { b } else { 0 })
        } else {
            let (b, left_out) = allow_bits(ace.mask, is_dir);
            if left_out {
                report.lossy(codes::RIGHTS_WITHOUT_EQUIVALENT);
            }
            (b, if inheritable { b & inheritable_allow_bits(ace.mask, ace.flags) } else { 0 })
        };
        if permissions == 0 {
            continue;
        }
        let sid = ace.sid.to_ascii_uppercase();
        let principal = match ids.mapped(&sid) {
            Some(p) => p.clone(),
            None => {
                let how = classify_unmapped(&sid);
                match how {
                    Unmapped::Everyone => Principal::Everyone,
                    Unmapped::WellKnown(_) | Unmapped::Ordinary => {
                        // Who a deny may concern in ScaiDrive: an unmapped account may still be
                        // a ScaiDrive user through a mapped group or everyone, and an unmapped
                        // group may contain mapped users; only well-known principals that are
                        // never a ScaiDrive user (SYSTEM, CREATOR OWNER, Guests…) concern nobody.
                        let concerns_nobody = match how {
                            Unmapped::WellKnown(c) => ids.class(&sid).unwrap_or(c) == SidClass::Single,
                            _ => false,
                        };
                        if matches!(how, Unmapped::WellKnown(_)) {
                            well_known_here.insert(sid.clone());
                        } else {
                            unmapped_here.insert(sid.clone());
                        }
                        if deny && !concerns_nobody {
                            report.lossy(codes::UNMAPPED_DENY_TO_EVERYONE);
                            Principal::Everyone
                        } else {
                            continue;
                        }
                    }
                }
            }
        };
        let inherited = ace.flags & nt::INHERITED != 0;
        if passed_down != 0 {
            out.push(Translated {
                principal: principal.clone(),
                deny,
                permissions: passed_down,
                inheritable: true,
                inherited,
            });
        }
        if permissions & !passed_down != 0 {
            out.push(Translated {
                principal,
                deny,
                permissions: permissions & !passed_down,
                inheritable: false,
                inherited,
            });
        }
    }
    count(report, unmapped_here, well_known_here);

    // Does ScaiDrive's inheritance from the parent give exactly what the inherited ACEs say?
    let keep_inheritance = match parent_reach {
        Some(parent) if !sd.protected => {
            let mut inherited: Reach = BTreeMap::new();
            for t in out.iter().filter(|t| t.inherited) {
                *inherited.entry((t.principal.clone(), t.deny)).or_default() |= t.permissions;
            }
            restrict(&inherited, is_dir) == restrict(parent, is_dir)
        }
        _ => false,
    };

    let mut merged: BTreeMap<(Principal, bool, bool), u32> = BTreeMap::new();
    for t in out.into_iter().filter(|t| !(keep_inheritance && t.inherited)) {
        *merged.entry((t.principal, t.deny, t.inheritable)).or_default() |= t.permissions;
    }
    let mut entries: Vec<DriveEntry> = merged
        .into_iter()
        .map(|((principal, deny, inherit_to_children), permissions)| DriveEntry {
            principal,
            deny,
            permissions,
            inherit_to_children,
        })
        .collect();
    entries.sort();
    DriveAcl { inherit_from_parent: keep_inheritance, entries, owner }
}

fn count(report: &mut PermReport, unmapped: BTreeSet<String>, well_known: BTreeSet<String>) {
    for sid in unmapped {
        *report.unmapped.entry(sid).or_default() += 1;
    }
    for sid in well_known {
        *report.well_known.entry(sid).or_default() += 1;
    }
}

/// What ScaiDrive passes from an item with `acl` down to its children.
pub fn reach_of(acl: &DriveAcl, parent_reach: Option<&Reach>) -> Reach {
    let mut r: Reach = match (acl.inherit_from_parent, parent_reach) {
        (true, Some(p)) => p.clone(),
        _ => BTreeMap::new(),
    };
    for e in acl.entries.iter().filter(|e| e.inherit_to_children) {
        *r.entry((e.principal.clone(), e.deny)).or_default() |= e.permissions;
    }
    r
}

/// Effective ScaiDrive permissions of a user (with groups) on an item, given the chain of
/// ACLs from the item up to the top of the sync root. The same resolution the platform
/// documents (deny wins; allows OR'd; ancestors count while inheriting) — for tests and for
/// checking a translation without a server.
pub fn effective(chain: &[&DriveAcl], user: &str, groups: &[&str]) -> u32 {
    let (mut allow, mut deny) = (0, 0);
    for (depth, acl) in chain.iter().enumerate() {
        for e in &acl.entries {
            if depth > 0 && !e.inherit_to_children {
                continue;
            }
            let hit = match &e.principal {
                Principal::Everyone => true,
                Principal::User(u) => u == user,
                Principal::Group(g) => groups.contains(&g.as_str()),
            };
            if hit {
                if e.deny {
                    deny |= e.permissions;
                } else {
                    allow |= e.permissions;
                }
            }
        }
        if !acl.inherit_from_parent {
            break;
        }
    }
    allow & !deny
}

#[cfg(test)]
mod tests {
    use super::bits::*;
    use super::*;

    const ALICE: &str = "S-1-5-21-1-2-3-1001";
    const BOB: &str = "S-1-5-21-1-2-3-1002";
    const CAROL: &str = "S-1-5-21-1-2-3-1003";
    const FINANCE: &str = "S-1-5-21-1-2-3-2001";
    const INTERNS: &str = "S-1-5-21-1-2-3-2002";
    const SYSTEM: &str = "S-1-5-18";
    const ADMINS: &str = "S-1-5-32-544";
    const EVERYONE: &str = "S-1-1-0";
    const OI_CI: u8 = nt::OBJECT_INHERIT | nt::CONTAINER_INHERIT;

    fn ids() -> Identities {
        let mut i = Identities::new();
        i.map(ALICE, Principal::User("usr_alice".into()));
        i.map(BOB, Principal::User("usr_bob".into()));
        i.map(FINANCE, Principal::Group("grp_finance".into()));
        i.classify(CAROL, SidClass::Single);
        i.classify(INTERNS, SidClass::Group);
        i
    }
    fn allow(sid: &str, mask: u32, flags: u8) -> NtAce {
        NtAce { ace_type: nt::ACCESS_ALLOWED, flags, mask, sid: sid.into() }
    }
    fn deny(sid: &str, mask: u32, flags: u8) -> NtAce {
        NtAce { ace_type: nt::ACCESS_DENIED, flags, mask, sid: sid.into() }
    }
    fn sd(owner: &str, aces: Vec<NtAce>) -> NtDescriptor {
        NtDescriptor { owner: Some(owner.into()), dacl: Some(aces), protected: false }
    }
    fn inherited(mut a: NtAce, keep_flags: u8) -> NtAce {
        a.flags = keep_flags | nt::INHERITED;
        a
    }
    const READ_EXECUTE: u32 = 0x0012_00A9;
    const MODIFY: u32 = 0x0013_01BF;

    #[test]
    fn the_table_maps_standard_rights() {
        assert_eq!(allow_bits(nt::FILE_ALL_ACCESS, true), (FULL, false));
        assert_eq!(allow_bits(nt::FILE_ALL_ACCESS, false), (READ | WRITE | DELETE | MANAGE_PERMISSIONS, false));
        assert_eq!(allow_bits(MODIFY, true), (READ | WRITE | CREATE | DELETE, false));
        assert_eq!(allow_bits(MODIFY, false), (READ | WRITE | DELETE, false));
        assert_eq!(allow_bits(READ_EXECUTE, true), (READ, false));
        assert_eq!(allow_bits(nt::GENERIC_ALL, true), (FULL, false));
        assert_eq!(allow_bits(nt::GENERIC_READ, false), (READ, false));
        assert_eq!(allow_bits(nt::GENERIC_WRITE, false), (WRITE, false));
        // "Create files" and "create folders" together on a folder: CREATE, not WRITE.
        assert_eq!(allow_bits(nt::WRITE_DATA | nt::APPEND_DATA | nt::SYNCHRONIZE, true), (CREATE, false));
        assert_eq!(allow_bits(nt::WRITE_DAC, false), (MANAGE_PERMISSIONS, false));
        assert_eq!(allow_bits(nt::WRITE_OWNER, false), (MANAGE_PERMISSIONS, false));
        // Lossy: delete child without delete; traverse alone.
        assert_eq!(allow_bits(nt::READ_DATA | nt::DELETE_CHILD, true), (READ, true));
        assert_eq!(allow_bits(nt::EXECUTE | nt::SYNCHRONIZE, true), (0, true));
        assert_eq!(allow_bits(nt::READ_CONTROL | nt::SYNCHRONIZE, true), (0, false));
    }

    #[test]
    fn partial_write_and_create_rights_grant_nothing_of_them_and_are_reported() {
        // A folder: "create files" alone (0x2) or "create folders" alone (0x4). ScaiDrive's
        // CREATE makes both, so neither alone grants it; neither ever means WRITE.
        assert_eq!(allow_bits(nt::WRITE_DATA | nt::SYNCHRONIZE, true), (0, true));
        assert_eq!(allow_bits(nt::APPEND_DATA | nt::SYNCHRONIZE, true), (0, true));
        assert_eq!(allow_bits(nt::READ_DATA | nt::APPEND_DATA, true), (READ, true));
        assert_eq!(allow_bits(CREATE_SET | nt::READ_DATA, true), (READ | CREATE, false));
        // A file: append only, overwrite only, or data without metadata is not WRITE.
        assert_eq!(allow_bits(nt::APPEND_DATA, false), (0, true));
        assert_eq!(allow_bits(nt::WRITE_DATA | nt::READ_DATA, false), (READ, true));
        assert_eq!(allow_bits(nt::WRITE_DATA | nt::APPEND_DATA, false), (0, true));
        assert_eq!(allow_bits(WRITE_SET, false), (WRITE, false));
        // Attributes alone stay unreported noise only when reading.
        assert_eq!(allow_bits(nt::READ_DATA | nt::READ_ATTRIBUTES, false), (READ, false));
    }

    #[test]
    fn what_a_folder_passes_down_depends_on_its_inheritance_flags() {
        let ci = nt::CONTAINER_INHERIT;
        assert_eq!(inheritable_allow_bits(MODIFY, OI_CI), READ | WRITE | CREATE | DELETE);
        assert_eq!(inheritable_allow_bits(nt::FILE_ALL_ACCESS, OI_CI), FULL);
        // Folders only: the files below would get it too in ScaiDrive; only CREATE (nothing on
        // a file) may pass.
        assert_eq!(inheritable_allow_bits(MODIFY, ci), CREATE);
        assert_eq!(inheritable_allow_bits(READ_EXECUTE, ci), 0);
        // Files only, or the direct children only: nothing passes.
        assert_eq!(inheritable_allow_bits(MODIFY, nt::OBJECT_INHERIT), 0);
        assert_eq!(inheritable_allow_bits(MODIFY, OI_CI | nt::NO_PROPAGATE_INHERIT), 0);
        // "Create folders" (0x4) for the folder and its subfolders: it is "append data" on the
        // files, never WRITE there.
        assert_eq!(inheritable_allow_bits(nt::APPEND_DATA | READ_EXECUTE, OI_CI) & WRITE, 0);
    }

    #[test]
    fn a_create_folders_ace_never_lets_anyone_write_the_files_below() {
        let mut r = PermReport::default();
        // Finance may list the folder and create subfolders (0x4), for this folder, subfolders
        // and files: on the files below, 0x4 is "append data".
        let folder_sd = sd(ALICE, vec![allow(FINANCE, READ_EXECUTE | nt::APPEND_DATA, OI_CI)]);
        let folder = translate(&folder_sd, true, None, &ids(), &mut r);
        let reach = reach_of(&folder, None);
        let file_sd = sd(ALICE, vec![inherited(allow(FINANCE, READ_EXECUTE | nt::APPEND_DATA, OI_CI), 0)]);
        let file = translate(&file_sd, false, Some(&reach), &ids(), &mut r);
        assert_eq!(effective(&[&folder], "usr_alice", &["grp_finance"]), READ);
        assert_eq!(effective(&[&file, &folder], "usr_alice", &["grp_finance"]), READ);
        // A file made in ScaiDrive below it, before the next run, gets no more.
        let fresh = DriveAcl { inherit_from_parent: true, entries: vec![], owner: None };
        assert_eq!(effective(&[&fresh, &folder], "usr_alice", &["grp_finance"]), READ);
        assert_eq!(r.lossy.get(codes::RIGHTS_WITHOUT_EQUIVALENT), Some(&2), "folder and file each say so");
    }

    #[test]
    fn folder_only_file_only_and_one_level_aces_reach_exactly_what_ntfs_gives() {
        let mut r = PermReport::default();
        let ci = nt::CONTAINER_INHERIT;
        let oi = nt::OBJECT_INHERIT;
        // Top: finance may modify the folder and its subfolders (CI), alice may modify the files
        // (OI), bob may read the folder and its direct children (OI|CI|NP).
        let top_sd = sd(
            ALICE,
            vec![
                allow(FINANCE, MODIFY, ci),
                allow(ALICE, MODIFY, oi),
                allow(BOB, READ_EXECUTE, OI_CI | nt::NO_PROPAGATE_INHERIT),
            ],
        );
        let top = translate(&top_sd, true, None, &ids(), &mut r);
        let top_reach = reach_of(&top, None);
        // What NTFS gives the children: the subfolder gets finance's ACE (CI, applies), alice's
        // as inherit-only (for its files), bob's without inherit flags; a file gets alice's
        // and bob's.
        let sub_sd = sd(
            ALICE,
            vec![
                inherited(allow(FINANCE, MODIFY, ci), ci),
                inherited(allow(ALICE, MODIFY, oi), oi | nt::INHERIT_ONLY),
                inherited(allow(BOB, READ_EXECUTE, 0), 0),
            ],
        );
        let sub = translate(&sub_sd, true, Some(&top_reach), &ids(), &mut r);
        let sub_reach = reach_of(&sub, Some(&top_reach));
        let file_sd =
            sd(ALICE, vec![inherited(allow(ALICE, MODIFY, oi), 0), inherited(allow(BOB, READ_EXECUTE, 0), 0)]);
        let file = translate(&file_sd, false, Some(&top_reach), &ids(), &mut r);
        // A file two levels down: alice's ACE only (bob's stopped one level up).
        let deep_sd = sd(ALICE, vec![inherited(allow(ALICE, MODIFY, oi), 0)]);
        let deep = translate(&deep_sd, false, Some(&sub_reach), &ids(), &mut r);

        let fin = ["grp_finance"];
        assert_eq!(effective(&[&sub, &top], "usr_carol", &fin), READ | WRITE | CREATE | DELETE);
        assert_eq!(effective(&[&file, &top], "usr_carol", &fin) & FILE_MEANINGFUL, 0, "CI: not the files");
        assert_eq!(effective(&[&deep, &sub, &top], "usr_carol", &fin) & FILE_MEANINGFUL, 0);
        assert_eq!(effective(&[&file, &top], "usr_alice", &[]), READ | WRITE | DELETE);
        assert_eq!(effective(&[&deep, &sub, &top], "usr_alice", &[]), READ | WRITE | DELETE);
        assert_eq!(effective(&[&sub, &top], "usr_alice", &[]), 0, "OI: not the subfolders");
        assert_eq!(effective(&[&file, &top], "usr_bob", &[]), READ);
        assert_eq!(effective(&[&sub, &top], "usr_bob", &[]), READ);
        assert_eq!(effective(&[&deep, &sub, &top], "usr_bob", &[]), 0, "NP: one level only");
        // Items made in ScaiDrive (inheriting, no entries of their own) get no more than NTFS
        // would give a new item there, whatever their kind.
        let fresh = DriveAcl { inherit_from_parent: true, entries: vec![], owner: None };
        for who in ["usr_alice", "usr_bob"] {
            assert_eq!(effective(&[&fresh, &sub, &top], who, &[]) & FILE_MEANINGFUL, 0, "{who}");
        }
        assert_eq!(effective(&[&fresh, &top], "usr_carol", &fin) & FILE_MEANINGFUL, 0);
    }

    #[test]
    fn denies_are_widened_not_narrowed() {
        assert_eq!(deny_bits(nt::WRITE_DATA, false), WRITE);
        assert_eq!(deny_bits(nt::WRITE_DATA, true), WRITE | CREATE);
        assert_eq!(deny_bits(nt::DELETE_CHILD, true), DELETE);
        assert_eq!(deny_bits(nt::READ_ATTRIBUTES, false), READ);
        assert_eq!(deny_bits(nt::GENERIC_ALL, true), FULL);
        assert_eq!(deny_bits(nt::SYNCHRONIZE, true), 0);
    }

    #[test]
    fn a_top_level_folder_never_inherits_and_keeps_its_inheritable_entries() {
        let mut r = PermReport::default();
        let acl = translate(
            &sd(ALICE, vec![allow(FINANCE, READ_EXECUTE, OI_CI), allow(ALICE, MODIFY, 0)]),
            true,
            None,
            &ids(),
            &mut r,
        );
        assert!(!acl.inherit_from_parent);
        assert_eq!(acl.owner.as_deref(), Some("usr_alice"));
        assert_eq!(
            acl.entries,
            vec![
                DriveEntry {
                    principal: Principal::User("usr_alice".into()),
                    deny: false,
                    permissions: READ | WRITE | CREATE | DELETE,
                    inherit_to_children: false
                },
                DriveEntry {
                    principal: Principal::Group("grp_finance".into()),
                    deny: false,
                    permissions: READ,
                    inherit_to_children: true
                },
            ]
        );
        assert_eq!(r, PermReport::default());
    }

    #[test]
    fn a_child_whose_inherited_aces_match_the_parent_inherits_and_copies_nothing() {
        let mut r = PermReport::default();
        let parent = translate(&sd(ALICE, vec![allow(FINANCE, MODIFY, OI_CI)]), true, None, &ids(), &mut r);
        let reach = reach_of(&parent, None);
        // The file's inherited copy (no inherit flags on a file) plus an explicit deny for bob.
        let child_sd = sd(ALICE, vec![deny(BOB, nt::WRITE_DATA, 0), inherited(allow(FINANCE, MODIFY, OI_CI), 0)]);
        let child = translate(&child_sd, false, Some(&reach), &ids(), &mut r);
        assert!(child.inherit_from_parent);
        assert_eq!(
            child.entries,
            vec![DriveEntry {
                principal: Principal::User("usr_bob".into()),
                deny: true,
                permissions: WRITE,
                inherit_to_children: false
            }]
        );
        // A folder child keeps inheriting too (its copy carries the inherit flags).
        let sub = translate(
            &sd(ALICE, vec![inherited(allow(FINANCE, MODIFY, OI_CI), OI_CI)]),
            true,
            Some(&reach),
            &ids(),
            &mut r,
        );
        assert!(sub.inherit_from_parent);
        assert!(sub.entries.is_empty());
    }

    #[test]
    fn a_child_whose_inherited_aces_differ_breaks_inheritance_and_copies_them() {
        let mut r = PermReport::default();
        let parent = translate(&sd(ALICE, vec![allow(FINANCE, MODIFY, OI_CI)]), true, None, &ids(), &mut r);
        let reach = reach_of(&parent, None);
        // The parent changed after the child was created (NTFS did not re-propagate): the child
        // still carries an inherited READ for bob.
        let child_sd = sd(ALICE, vec![inherited(allow(BOB, READ_EXECUTE, 0), 0)]);
        let child = translate(&child_sd, false, Some(&reach), &ids(), &mut r);
        assert!(!child.inherit_from_parent);
        assert_eq!(child.entries.len(), 1);
        assert_eq!(child.entries[0].principal, Principal::User("usr_bob".into()));
        let chain = [&child, &parent];
        assert_eq!(effective(&chain, "usr_bob", &[]), READ);
        assert_eq!(effective(&chain, "usr_alice", &["grp_finance"]), 0);
    }

    #[test]
    fn a_protected_dacl_does_not_inherit() {
        let mut r = PermReport::default();
        let parent = translate(&sd(ALICE, vec![allow(EVERYONE, READ_EXECUTE, OI_CI)]), true, None, &ids(), &mut r);
        let reach = reach_of(&parent, None);
        let mut child_sd = sd(ALICE, vec![allow(FINANCE, READ_EXECUTE, OI_CI)]);
        child_sd.protected = true;
        let child = translate(&child_sd, true, Some(&reach), &ids(), &mut r);
        assert!(!child.inherit_from_parent);
        let chain = [&child, &parent];
        assert_eq!(effective(&chain, "usr_bob", &[]), 0);
        assert_eq!(effective(&chain, "usr_alice", &["grp_finance"]), READ);
    }

    #[test]
    fn inherit_only_and_file_only_aces_reach_exactly_their_targets() {
        let mut r = PermReport::default();
        // Folder: finance may list it; files below (object inherit, inherit only) are writable.
        let folder_sd = sd(
            ALICE,
            vec![allow(FINANCE, READ_EXECUTE, 0), allow(FINANCE, MODIFY, nt::OBJECT_INHERIT | nt::INHERIT_ONLY)],
        );
        let folder = translate(&folder_sd, true, None, &ids(), &mut r);
        let reach = reach_of(&folder, None);
        assert!(reach.is_empty(), "nothing ScaiDrive could pass down matches an inherit-only ACE");
        let file_sd = sd(ALICE, vec![inherited(allow(FINANCE, MODIFY, 0), 0)]);
        let file = translate(&file_sd, false, Some(&reach), &ids(), &mut r);
        assert!(!file.inherit_from_parent);
        assert_eq!(effective(&[&folder], "usr_alice", &["grp_finance"]), READ);
        assert_eq!(effective(&[&file, &folder], "usr_alice", &["grp_finance"]), READ | WRITE | DELETE);
    }

    #[test]
    fn unmapped_and_well_known_principals_are_counted_once_per_item() {
        let mut r = PermReport::default();
        let item = sd(
            CAROL,
            vec![
                allow(CAROL, MODIFY, 0),
                allow(CAROL, nt::WRITE_DAC, 0),
                allow(SYSTEM, nt::FILE_ALL_ACCESS, 0),
                allow(ADMINS, nt::FILE_ALL_ACCESS, 0),
                allow(ALICE, READ_EXECUTE, 0),
            ],
        );
        let acl = translate(&item, false, None, &ids(), &mut r);
        let acl2 = translate(&item, false, None, &ids(), &mut r);
        assert_eq!(acl, acl2);
        assert_eq!(acl.owner, None, "an unmapped owner falls back to the connector");
        assert_eq!(acl.entries.len(), 1);
        assert_eq!(r.unmapped.get(CAROL), Some(&2));
        assert_eq!(r.well_known.get(SYSTEM), Some(&2));
        assert_eq!(r.well_known.get(ADMINS), Some(&2));
    }

    #[test]
    fn everyone_and_authenticated_users_become_everyone() {
        let mut r = PermReport::default();
        let acl = translate(
            &sd(ALICE, vec![allow(EVERYONE, READ_EXECUTE, 0), allow("S-1-5-11", MODIFY, 0)]),
            false,
            None,
            &ids(),
            &mut r,
        );
        assert_eq!(acl.entries.len(), 1);
        assert_eq!(acl.entries[0].principal, Principal::Everyone);
        assert_eq!(acl.entries[0].permissions, READ | WRITE | DELETE);
        assert!(r.well_known.is_empty());
    }

    #[test]
    fn a_deny_for_an_unmapped_principal_denies_everyone_but_one_for_system_is_dropped() {
        let mut r = PermReport::default();
        let acl = translate(
            &sd(ALICE, vec![deny(INTERNS, nt::WRITE_DATA, 0), deny(CAROL, nt::READ_DATA, 0), allow(ALICE, MODIFY, 0)]),
            false,
            None,
            &ids(),
            &mut r,
        );
        // carol (an unmapped account) may be a ScaiDrive user through a group: her deny of
        // READ denies everyone, like the interns' deny of WRITE.
        assert_eq!(effective(&[&acl], "usr_alice", &[]), DELETE);
        assert_eq!(r.lossy.get(codes::UNMAPPED_DENY_TO_EVERYONE), Some(&2));
        assert_eq!(r.unmapped.len(), 2);
        let mut r = PermReport::default();
        let acl = translate(
            &sd(ALICE, vec![deny(SYSTEM, nt::DELETE, 0), deny("S-1-5-32-546", MODIFY, 0), allow(ALICE, MODIFY, 0)]),
            false,
            None,
            &ids(),
            &mut r,
        );
        assert_eq!(effective(&[&acl], "usr_alice", &[]), READ | WRITE | DELETE, "SYSTEM and Guests are nobody here");
        assert!(r.lossy.is_empty());
        // A well-known group's deny (BUILTIN\Users here) is no different.
        let mut r = PermReport::default();
        let acl = translate(
            &sd(ALICE, vec![deny("S-1-5-32-545", nt::DELETE, 0), allow(ALICE, MODIFY, 0)]),
            false,
            None,
            &ids(),
            &mut r,
        );
        assert_eq!(effective(&[&acl], "usr_alice", &[]), READ | WRITE);
    }

    #[test]
    fn object_and_conditional_aces_never_grant() {
        let mut r = PermReport::default();
        let acl = translate(
            &sd(
                ALICE,
                vec![
                    NtAce { ace_type: nt::ACCESS_ALLOWED_CALLBACK, flags: 0, mask: MODIFY, sid: ALICE.into() },
                    NtAce { ace_type: nt::ACCESS_DENIED_CALLBACK, flags: 0, mask: nt::DELETE, sid: BOB.into() },
                    allow(BOB, MODIFY, 0),
                ],
            ),
            false,
            None,
            &ids(),
            &mut r,
        );
        assert_eq!(effective(&[&acl], "usr_alice", &[]), 0);
        assert_eq!(effective(&[&acl], "usr_bob", &[]), READ | WRITE);
        assert_eq!(r.lossy.get(codes::OBJECT_OR_CONDITIONAL_ACE), Some(&2));
    }

    #[test]
    fn no_dacl_is_everyone_full_control_and_is_reported() {
        let mut r = PermReport::default();
        let acl = translate(&NtDescriptor { owner: None, dacl: None, protected: false }, true, None, &ids(), &mut r);
        assert_eq!(effective(&[&acl], "usr_x", &[]), FULL);
        assert_eq!(r.lossy.get(codes::NULL_DACL), Some(&1));
    }

    #[test]
    fn an_owner_mapped_to_a_group_falls_back_to_the_connector() {
        let mut r = PermReport::default();
        let acl = translate(&sd(FINANCE, vec![]), false, None, &ids(), &mut r);
        assert_eq!(acl.owner, None);
        assert_eq!(r.lossy.get(codes::OWNER_IS_GROUP), Some(&1));
        assert!(acl.entries.is_empty(), "an empty DACL grants nothing");
    }
}
