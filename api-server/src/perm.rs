//! Permissions as ScaiDrive defines them: bit flags, share roles, and the NTFS-shaped
//! resolution of an ACL chain. Pure logic: no I/O, so it is tested exhaustively here and the
//! store only gathers the inputs.
//!
//! Resolution: a global admin gets everything. Otherwise the baseline is the union of the
//! share roles of the user and the user's groups; then the ACL entries that match the user,
//! one of the user's groups or Everyone are collected from the resource and, while a level
//! inherits from its parent, from each parent's inheritable entries. Deny entries override:
//! effective = (role ∪ allows) − denies.

pub const READ: i64 = 1;
pub const WRITE: i64 = 2;
pub const DELETE: i64 = 4;
pub const CREATE: i64 = 8;
pub const SHARE: i64 = 16;
pub const MANAGE_PERMISSIONS: i64 = 32;
pub const ALL: i64 = 63;

const NAMES: [(&str, i64); 6] = [
    ("READ", READ),
    ("WRITE", WRITE),
    ("DELETE", DELETE),
    ("CREATE", CREATE),
    ("SHARE", SHARE),
    ("MANAGE_PERMISSIONS", MANAGE_PERMISSIONS),
];

/// Bits from names (`["READ","WRITE"]`); the first unknown name is the error.
pub fn from_names(names: &[String]) -> Result<i64, String> {
    let mut bits = 0;
    for n in names {
        match NAMES.iter().find(|(name, _)| *name == n.as_str()) {
            Some((_, b)) => bits |= b,
            None => return Err(n.clone()),
        }
    }
    Ok(bits)
}

/// Names of the bits set, in ScaiDrive's order.
pub fn names(bits: i64) -> Vec<String> {
    NAMES.iter().filter(|(_, b)| bits & b != 0).map(|(n, _)| n.to_string()).collect()
}

pub fn name_of(bit: i64) -> &'static str {
    NAMES.iter().find(|(_, b)| *b == bit).map(|(n, _)| *n).unwrap_or("?")
}

/// A share member's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Owner,
    Admin,
    Contributor,
    Reader,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "owner" => Role::Owner,
            "admin" => Role::Admin,
            "contributor" => Role::Contributor,
            "reader" => Role::Reader,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Contributor => "contributor",
            Role::Reader => "reader",
        }
    }

    pub fn bits(self) -> i64 {
        match self {
            Role::Owner | Role::Admin => ALL,
            Role::Contributor => READ | WRITE | DELETE | CREATE,
            Role::Reader => READ,
        }
    }
}

/// Who an ACL entry is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    User(String),
    Group(String),
    Everyone,
}

#[derive(Clone, Debug)]
pub struct Entry {
    pub principal: Principal,
    pub permissions: i64,
    pub deny: bool,
    pub inherit_to_children: bool,
}

/// One resource's ACL on the way from the resource up to its share.
#[derive(Clone, Debug, Default)]
pub struct Level {
    pub inherit_from_parent: bool,
    pub entries: Vec<Entry>,
}

/// The identity being checked.
pub struct Subject<'a> {
    pub user_id: &'a str,
    pub group_ids: &'a [String],
}

impl Subject<'_> {
    fn matches(&self, p: &Principal) -> bool {
        match p {
            Principal::User(u) => u == self.user_id,
            Principal::Group(g) => self.group_ids.iter().any(|x| x == g),
            Principal::Everyone => true,
        }
    }
}

/// Effective permissions. `chain[0]` is the resource itself, the last element its share.
pub fn resolve(role_bits: i64, chain: &[Level], who: &Subject<'_>) -> i64 {
    let mut allows = 0;
    let mut denies = 0;
    for (depth, level) in chain.iter().enumerate() {
        for e in &level.entries {
            if depth > 0 && !e.inherit_to_children {
                continue;
            }
            if who.matches(&e.principal) {
                if e.deny {
                    denies |= e.permissions;
                } else {
                    allows |= e.permissions;
                }
            }
        }
        if !level.inherit_from_parent {
            break;
        }
    }
    (role_bits | allows) & !denies
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(p: Principal, bits: i64, deny: bool, inherit: bool) -> Entry {
        Entry { principal: p, permissions: bits, deny, inherit_to_children: inherit }
    }
    fn lvl(inherit: bool, entries: Vec<Entry>) -> Level {
        Level { inherit_from_parent: inherit, entries }
    }
    const ALICE: Subject<'static> = Subject { user_id: "usr_a", group_ids: &[] };

    #[test]
    fn names_round_trip_and_unknown_names_are_named() {
        let bits = from_names(&["READ".into(), "MANAGE_PERMISSIONS".into()]).unwrap();
        assert_eq!(bits, 33);
        assert_eq!(names(bits), vec!["READ", "MANAGE_PERMISSIONS"]);
        assert_eq!(from_names(&["READ".into(), "FLY".into()]), Err("FLY".to_string()));
    }

    #[test]
    fn roles_give_their_documented_bits() {
        assert_eq!(Role::Owner.bits(), 63);
        assert_eq!(Role::Admin.bits(), 63);
        assert_eq!(Role::Contributor.bits(), 15);
        assert_eq!(Role::Reader.bits(), 1);
    }

    #[test]
    fn deny_overrides_role_and_allow() {
        let chain = [lvl(
            true,
            vec![
                e(Principal::Everyone, READ | WRITE, false, true),
                e(Principal::User("usr_a".into()), WRITE, true, true),
            ],
        )];
        assert_eq!(resolve(Role::Contributor.bits(), &chain, &ALICE), READ | DELETE | CREATE);
    }

    #[test]
    fn inherited_entries_count_only_when_inheritable_and_inheriting() {
        let parent = lvl(
            true,
            vec![
                e(Principal::User("usr_a".into()), SHARE, false, true),
                e(Principal::User("usr_a".into()), MANAGE_PERMISSIONS, false, false),
            ],
        );
        let child_inherits = [lvl(true, vec![]), parent.clone()];
        assert_eq!(resolve(0, &child_inherits, &ALICE), SHARE);
        let child_protected = [lvl(false, vec![]), parent];
        assert_eq!(resolve(0, &child_protected, &ALICE), 0);
    }

    #[test]
    fn group_entries_match_members_only() {
        let chain = [lvl(true, vec![e(Principal::Group("grp_f".into()), READ, false, true)])];
        let member = Subject { user_id: "usr_b", group_ids: &["grp_f".to_string()] };
        assert_eq!(resolve(0, &chain, &member), READ);
        assert_eq!(resolve(0, &chain, &ALICE), 0);
    }

    #[test]
    fn a_deny_inherited_from_a_grandparent_still_applies() {
        let chain = [
            lvl(true, vec![e(Principal::User("usr_a".into()), READ, false, false)]),
            lvl(true, vec![]),
            lvl(true, vec![e(Principal::Everyone, READ, true, true)]),
        ];
        assert_eq!(resolve(Role::Owner.bits(), &chain, &ALICE), ALL & !READ);
    }
}
