//! Our own value types for entries, times, attributes, ACLs and change events.
//!
//! These are the types the sync worker sees; they must never expose the `smb` library's types.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A Windows FILETIME: 100-nanosecond intervals since 1601-01-01 UTC (0 = not set).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct FileTime(pub u64);

impl FileTime {
    /// FILETIME of the Unix epoch.
    const UNIX_EPOCH_FT: u64 = 116_444_736_000_000_000;

    /// Whether the value is 0 ("not set" / "do not change" in set calls).
    pub fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// Converts to `SystemTime` (times before 1970 clamp to the Unix epoch).
    pub fn to_system_time(self) -> SystemTime {
        let since_unix = self.0.saturating_sub(Self::UNIX_EPOCH_FT);
        UNIX_EPOCH + Duration::from_nanos(since_unix.saturating_mul(100))
    }

    /// Converts from `SystemTime` (truncated to 100 ns).
    pub fn from_system_time(t: SystemTime) -> Self {
        let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        FileTime(Self::UNIX_EPOCH_FT + (d.as_nanos() / 100) as u64)
    }
}

impl fmt::Debug for FileTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FileTime({})", self.0)
    }
}

/// DOS/NT file attributes (MS-FSCC 2.6) as a bit set.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FileAttributes(pub u32);

impl FileAttributes {
    /// FILE_ATTRIBUTE_READONLY.
    pub const READONLY: FileAttributes = FileAttributes(0x1);
    /// FILE_ATTRIBUTE_HIDDEN.
    pub const HIDDEN: FileAttributes = FileAttributes(0x2);
    /// FILE_ATTRIBUTE_SYSTEM.
    pub const SYSTEM: FileAttributes = FileAttributes(0x4);
    /// FILE_ATTRIBUTE_DIRECTORY.
    pub const DIRECTORY: FileAttributes = FileAttributes(0x10);
    /// FILE_ATTRIBUTE_ARCHIVE.
    pub const ARCHIVE: FileAttributes = FileAttributes(0x20);
    /// FILE_ATTRIBUTE_NORMAL (only valid alone).
    pub const NORMAL: FileAttributes = FileAttributes(0x80);
    /// FILE_ATTRIBUTE_TEMPORARY.
    pub const TEMPORARY: FileAttributes = FileAttributes(0x100);
    /// FILE_ATTRIBUTE_SPARSE_FILE.
    pub const SPARSE_FILE: FileAttributes = FileAttributes(0x200);
    /// FILE_ATTRIBUTE_REPARSE_POINT (symlinks, junctions, cloud placeholders).
    pub const REPARSE_POINT: FileAttributes = FileAttributes(0x400);
    /// FILE_ATTRIBUTE_COMPRESSED.
    pub const COMPRESSED: FileAttributes = FileAttributes(0x800);
    /// FILE_ATTRIBUTE_OFFLINE.
    pub const OFFLINE: FileAttributes = FileAttributes(0x1000);
    /// FILE_ATTRIBUTE_NOT_CONTENT_INDEXED.
    pub const NOT_CONTENT_INDEXED: FileAttributes = FileAttributes(0x2000);
    /// FILE_ATTRIBUTE_ENCRYPTED.
    pub const ENCRYPTED: FileAttributes = FileAttributes(0x4000);

    /// No bits.
    pub const fn empty() -> Self {
        FileAttributes(0)
    }
    /// The raw bits.
    pub const fn bits(self) -> u32 {
        self.0
    }
    /// Whether all bits of `other` are set.
    pub const fn contains(self, other: FileAttributes) -> bool {
        self.0 & other.0 == other.0
    }
    /// `self` with the bits of `other` set or cleared.
    pub const fn with(self, other: FileAttributes, on: bool) -> Self {
        if on {
            FileAttributes(self.0 | other.0)
        } else {
            FileAttributes(self.0 & !other.0)
        }
    }
    /// Hidden bit.
    pub fn is_hidden(self) -> bool {
        self.contains(Self::HIDDEN)
    }
    /// System bit.
    pub fn is_system(self) -> bool {
        self.contains(Self::SYSTEM)
    }
    /// Read-only bit.
    pub fn is_readonly(self) -> bool {
        self.contains(Self::READONLY)
    }
    /// Directory bit.
    pub fn is_directory(self) -> bool {
        self.contains(Self::DIRECTORY)
    }
    /// Reparse-point bit.
    pub fn is_reparse_point(self) -> bool {
        self.contains(Self::REPARSE_POINT)
    }
}

impl std::ops::BitOr for FileAttributes {
    type Output = FileAttributes;
    fn bitor(self, rhs: Self) -> Self {
        FileAttributes(self.0 | rhs.0)
    }
}

impl fmt::Debug for FileAttributes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NAMES: [(u32, &str); 13] = [
            (0x1, "READONLY"),
            (0x2, "HIDDEN"),
            (0x4, "SYSTEM"),
            (0x10, "DIRECTORY"),
            (0x20, "ARCHIVE"),
            (0x80, "NORMAL"),
            (0x100, "TEMPORARY"),
            (0x200, "SPARSE"),
            (0x400, "REPARSE_POINT"),
            (0x800, "COMPRESSED"),
            (0x1000, "OFFLINE"),
            (0x2000, "NOT_CONTENT_INDEXED"),
            (0x4000, "ENCRYPTED"),
        ];
        let names: Vec<&str> = NAMES.iter().filter(|(b, _)| self.0 & b != 0).map(|(_, n)| *n).collect();
        write!(f, "FileAttributes({:#x}: {})", self.0, names.join("|"))
    }
}

/// One entry of a directory listing (or the result of a stat).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// The entry's name within its directory.
    pub name: String,
    /// Share-relative path with `/` separators (no leading `/`).
    pub path: String,
    /// Whether it is a directory.
    pub is_dir: bool,
    /// Size in bytes (end of file); 0 for directories.
    pub size: u64,
    /// The server's file ID (stable across rename and move on NTFS and Samba).
    pub file_id: u64,
    /// Creation time.
    pub creation_time: FileTime,
    /// Last data write.
    pub last_write_time: FileTime,
    /// Last access.
    pub last_access_time: FileTime,
    /// Last metadata or data change.
    pub change_time: FileTime,
    /// Attributes.
    pub attributes: FileAttributes,
}

/// What a change-notify event says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    /// Created (or moved in).
    Added,
    /// Deleted (or moved out).
    Removed,
    /// Data or metadata changed.
    Modified,
    /// Renamed: this is the old name.
    RenamedFrom,
    /// Renamed: this is the new name.
    RenamedTo,
    /// A stream or something else changed.
    Other,
    /// The server's buffer overflowed: changes were lost; rescan the watched tree.
    Overflow,
}

/// One change reported by [`crate::SmbClient::watch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeEvent {
    /// What happened.
    pub kind: ChangeKind,
    /// Share-relative path with `/` separators (empty for [`ChangeKind::Overflow`]).
    pub path: String,
}

/// The type of an access control entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AceKind {
    /// ACCESS_ALLOWED_ACE.
    Allow,
    /// ACCESS_DENIED_ACE.
    Deny,
    /// Any other ACE type (audit, object, callback, label ...), with its raw type number.
    /// Such ACEs are reported but cannot be written back.
    Other(u8),
}

/// ACE flags (MS-DTYP 2.4.4.1).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct AceFlags(pub u8);

impl AceFlags {
    /// OBJECT_INHERIT_ACE.
    pub const OBJECT_INHERIT: AceFlags = AceFlags(0x01);
    /// CONTAINER_INHERIT_ACE.
    pub const CONTAINER_INHERIT: AceFlags = AceFlags(0x02);
    /// NO_PROPAGATE_INHERIT_ACE.
    pub const NO_PROPAGATE_INHERIT: AceFlags = AceFlags(0x04);
    /// INHERIT_ONLY_ACE.
    pub const INHERIT_ONLY: AceFlags = AceFlags(0x08);
    /// INHERITED_ACE.
    pub const INHERITED: AceFlags = AceFlags(0x10);

    /// Whether all bits of `other` are set.
    pub const fn contains(self, other: AceFlags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for AceFlags {
    type Output = AceFlags;
    fn bitor(self, rhs: Self) -> Self {
        AceFlags(self.0 | rhs.0)
    }
}

impl fmt::Debug for AceFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AceFlags({:#04x})", self.0)
    }
}

/// Well-known access mask values.
pub mod access {
    /// FILE_GENERIC_READ | FILE_GENERIC_EXECUTE ("read & execute").
    pub const READ_EXECUTE: u32 = 0x0012_00A9;
    /// Modify (read, write, execute, delete).
    pub const MODIFY: u32 = 0x0013_01BF;
    /// FILE_ALL_ACCESS ("full control").
    pub const FULL_CONTROL: u32 = 0x001F_01FF;
    /// GENERIC_ALL.
    pub const GENERIC_ALL: u32 = 0x1000_0000;
}

/// One access control entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ace {
    /// Allow, deny or other.
    pub kind: AceKind,
    /// Inheritance flags.
    pub flags: AceFlags,
    /// Access mask bits.
    pub access_mask: u32,
    /// Trustee SID in string form, e.g. `S-1-5-21-...-1001`.
    pub sid: String,
}

/// Security descriptor control flags we care about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SdControl {
    /// SE_DACL_PROTECTED: inheritance from the parent is blocked.
    pub dacl_protected: bool,
    /// SE_DACL_AUTO_INHERITED.
    pub dacl_auto_inherited: bool,
    /// SE_DACL_PRESENT (false = no DACL = everyone has full access).
    pub dacl_present: bool,
}

/// An NT security descriptor: owner, group, DACL (no SACL).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SecurityDescriptor {
    /// Owner SID string.
    pub owner: Option<String>,
    /// Primary group SID string.
    pub group: Option<String>,
    /// The DACL's entries in order; `None` when the descriptor has no DACL.
    pub dacl: Option<Vec<Ace>>,
    /// Control flags.
    pub control: SdControl,
}
