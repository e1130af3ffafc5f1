//! Prefixed, sortable identifiers in ScaiDrive's shape: `shr_01J3H…` (a three-letter type
//! prefix, an underscore and a ULID). Newtypes keep a share id from being passed where a
//! user id is expected.

use std::fmt;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            /// A new, unique id.
            pub fn generate() -> Self {
                Self(format!("{}_{}", $prefix, ulid::Ulid::new()))
            }

            /// Accepts a string only if it carries this type's prefix and a ULID.
            pub fn parse(s: &str) -> Option<Self> {
                let rest = s.strip_prefix($prefix)?.strip_prefix('_')?;
                ulid::Ulid::from_string(rest).ok()?;
                Some(Self(s.to_string()))
            }

            /// Wraps a value read back from our own database.
            pub fn from_db(s: String) -> Self {
                Self(s)
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(TenantId, "tnt");
id_type!(UserId, "usr");
id_type!(GroupId, "grp");
id_type!(TokenId, "tok");
id_type!(ShareId, "shr");
id_type!(FolderId, "fld");
id_type!(FileId, "fil");
id_type!(VersionId, "ver");
id_type!(AceId, "ace");
id_type!(ChangeId, "chg");
id_type!(UploadId, "upl");
id_type!(ConnectorId, "cnn");
id_type!(MappingId, "map");
id_type!(JobId, "job");

/// The kind an id's prefix names, for endpoints that take "any resource".
pub fn prefix_of(id: &str) -> Option<&str> {
    let (p, rest) = id.split_once('_')?;
    ulid::Ulid::from_string(rest).ok()?;
    Some(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_carry_their_prefix_and_parse_back() {
        let id = ShareId::generate();
        assert!(id.as_str().starts_with("shr_"));
        assert_eq!(ShareId::parse(id.as_str()), Some(id.clone()));
        assert_eq!(FileId::parse(id.as_str()), None);
        assert_eq!(ShareId::parse("shr_nope"), None);
        assert_eq!(prefix_of(id.as_str()), Some("shr"));
    }
}
