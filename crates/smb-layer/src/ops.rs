//! Metadata operations: stat, mkdir, rename, delete, times, attributes, security descriptors.
//!
//! Each opens a handle for just what it needs, does one thing, and closes it. Must never keep
//! handles open between calls (they would block the share's users with sharing violations).

use smb::{CreateDisposition, CreateOptions, Resource, ResourceHandle};

use crate::client::{am, Conn, SmbClient};
use crate::error::{classify, Result, SmbError};
use crate::path::{file_name, normalize, to_smb_path};
use crate::types::{Ace, AceFlags, AceKind, DirEntry, FileAttributes, FileTime, SdControl, SecurityDescriptor};

/// Which times to set; `None` leaves a time unchanged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SetTimes {
    /// Creation time.
    pub creation: Option<FileTime>,
    /// Last access time.
    pub last_access: Option<FileTime>,
    /// Last write time.
    pub last_write: Option<FileTime>,
    /// Change time.
    pub change: Option<FileTime>,
}

pub(crate) fn handle_of(r: &Resource) -> Result<&ResourceHandle> {
    match r {
        Resource::File(f) => Ok(f),
        Resource::Directory(d) => Ok(&d.handle),
        Resource::Pipe(_) => Err(SmbError::other("unexpected pipe resource")),
    }
}

/// Closes a resource explicitly (surfacing errors instead of a background close on drop).
pub(crate) async fn close(r: &Resource, path: &str) -> Result<()> {
    handle_of(r)?.close().await.map_err(|e| classify(e, path))
}

pub(crate) fn attrs_to_smb(a: FileAttributes) -> smb::FileAttributes {
    smb::FileAttributes::from_bytes(a.0.to_le_bytes())
}

pub(crate) fn attrs_from_smb(a: smb::FileAttributes) -> FileAttributes {
    FileAttributes(u32::from_le_bytes(a.into_bytes()))
}

fn ft(t: Option<FileTime>) -> smb::binrw_util::prelude::FileTime {
    smb::binrw_util::prelude::FileTime::from(t.map(|t| t.0).unwrap_or(0))
}

impl SmbClient {
    async fn open_meta(conn: &Conn, path: &str, access: u32) -> Result<Resource> {
        SmbClient::open_on(
            conn,
            path,
            CreateDisposition::Open,
            CreateOptions::new(),
            access,
            smb::FileAttributes::new(),
        )
        .await
    }

    /// Metadata of one file or directory (the root is `""`).
    pub async fn stat(&self, path: &str) -> Result<DirEntry> {
        self.retrying(|| self.stat_once(path)).await
    }

    async fn stat_once(&self, path: &str) -> Result<DirEntry> {
        let path = normalize(path);
        let p2 = path.clone();
        self.run_op("stat", &p2, |conn| async move {
            let r = Self::open_meta(&conn, &path, am::READ_ATTRIBUTES).await?;
            let h = handle_of(&r)?;
            // One FileAllInformation query (times, attributes, size and file id) instead of
            // FileNetworkOpenInformation + FileInternalInformation: 3 requests per stat, not 4.
            let info: smb::FileAllInformation = h.query_info().await.map_err(|e| classify(e, &path))?;
            close(&r, &path).await?;
            Ok(entry_of_all(&path, &info))
        })
        .await
    }

    /// Whether `path` exists.
    pub async fn exists(&self, path: &str) -> Result<bool> {
        match self.stat(path).await {
            Ok(_) => Ok(true),
            Err(SmbError::PathNotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Creates one directory (its parent must exist). Fails with
    /// [`SmbError::AlreadyExists`] if the name is taken.
    pub async fn mkdir(&self, path: &str) -> Result<()> {
        let path = normalize(path);
        let p2 = path.clone();
        self.run_op("mkdir", &p2, |conn| async move {
            let r = SmbClient::open_on(
                &conn,
                &path,
                CreateDisposition::Create,
                CreateOptions::new().with_directory_file(true),
                am::READ_ATTRIBUTES,
                smb::FileAttributes::new().with_directory(true),
            )
            .await?;
            close(&r, &path).await
        })
        .await
    }

    /// Creates a directory and any missing parents (like `mkdir -p`).
    pub async fn mkdir_all(&self, path: &str) -> Result<()> {
        let path = normalize(path);
        let mut cur = String::new();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            cur = crate::path::join(&cur, part);
            match self.mkdir(&cur).await {
                Ok(()) | Err(SmbError::AlreadyExists { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Renames or moves `from` to `to` (both share-relative). With `replace`, an existing file
    /// at `to` is replaced; otherwise that fails with [`SmbError::AlreadyExists`].
    pub async fn rename(&self, from: &str, to: &str, replace: bool) -> Result<()> {
        let from = normalize(from);
        let to = normalize(to);
        let target = to_smb_path(&to)?;
        let p2 = from.clone();
        self.run_op("rename", &p2, |conn| async move {
            if replace {
                // Windows refuses to replace a file another client holds open without delete
                // sharing; Samba checks only its own process's opens, so the editor's file
                // would be swapped under it. Asking for delete access on the target first
                // makes the server check every client's share modes.
                match Self::open_meta(&conn, &to, am::DELETE | am::READ_ATTRIBUTES).await {
                    Ok(t) => close(&t, &to).await?,
                    Err(SmbError::PathNotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            let r = Self::open_meta(&conn, &from, am::DELETE | am::READ_ATTRIBUTES).await?;
            let res = handle_of(&r)?
                .set_info(smb::FileRenameInformation {
                    replace_if_exists: replace.into(),
                    root_directory: 0,
                    file_name: target.as_str().into(),
                })
                .await
                .map_err(|e| classify(e, &from));
            let closed = close(&r, &from).await;
            res.and(closed)
        })
        .await
    }

    async fn delete(&self, path: &str, dir: bool) -> Result<()> {
        let path = normalize(path);
        if path.is_empty() {
            return Err(SmbError::AccessDenied { path, status: None });
        }
        let p2 = path.clone();
        self.run_op("delete", &p2, |conn| async move {
            let options = if dir {
                CreateOptions::new().with_directory_file(true)
            } else {
                CreateOptions::new().with_non_directory_file(true)
            };
            let r = SmbClient::open_on(
                &conn,
                &path,
                CreateDisposition::Open,
                options,
                am::DELETE | am::READ_ATTRIBUTES,
                smb::FileAttributes::new(),
            )
            .await?;
            let res = handle_of(&r)?
                .set_info(smb::FileDispositionInformation::default())
                .await
                .map_err(|e| classify(e, &path));
            let closed = close(&r, &path).await;
            res.and(closed)
        })
        .await
    }

    /// Deletes a file (not a directory).
    pub async fn delete_file(&self, path: &str) -> Result<()> {
        self.delete(path, false).await
    }

    /// Deletes an empty directory ([`SmbError::DirectoryNotEmpty`] otherwise).
    pub async fn delete_dir(&self, path: &str) -> Result<()> {
        self.delete(path, true).await
    }

    async fn set_basic(&self, path: &str, times: SetTimes, attrs: Option<FileAttributes>) -> Result<()> {
        let path = normalize(path);
        let p2 = path.clone();
        self.run_op("set_basic", &p2, |conn| async move {
            let r = Self::open_meta(&conn, &path, am::WRITE_ATTRIBUTES | am::READ_ATTRIBUTES).await?;
            let res = handle_of(&r)?
                .set_info(smb::FileBasicInformation {
                    creation_time: ft(times.creation),
                    last_access_time: ft(times.last_access),
                    last_write_time: ft(times.last_write),
                    change_time: ft(times.change),
                    file_attributes: attrs_to_smb(attrs.unwrap_or_default()),
                })
                .await
                .map_err(|e| classify(e, &path));
            let closed = close(&r, &path).await;
            res.and(closed)
        })
        .await
    }

    /// Sets the given times (others unchanged).
    pub async fn set_times(&self, path: &str, times: SetTimes) -> Result<()> {
        self.retrying(|| self.set_times_once(path, times)).await
    }

    async fn set_times_once(&self, path: &str, times: SetTimes) -> Result<()> {
        self.set_basic(path, times, None).await
    }

    /// Replaces the attributes (hidden, system, read-only, archive ...). The directory bit is
    /// kept by the server; an empty set clears everything (sent as NORMAL).
    pub async fn set_attributes(&self, path: &str, attributes: FileAttributes) -> Result<()> {
        self.retrying(|| self.set_attributes_once(path, attributes)).await
    }

    async fn set_attributes_once(&self, path: &str, attributes: FileAttributes) -> Result<()> {
        let a = if attributes.bits() & !FileAttributes::DIRECTORY.bits() == 0 {
            FileAttributes::NORMAL
        } else {
            attributes.with(FileAttributes::DIRECTORY, false)
        };
        self.set_basic(path, SetTimes::default(), Some(a)).await
    }

    /// Reads owner, group and DACL.
    pub async fn read_security_descriptor(&self, path: &str) -> Result<SecurityDescriptor> {
        self.retrying(|| self.read_security_descriptor_once(path)).await
    }

    async fn read_security_descriptor_once(&self, path: &str) -> Result<SecurityDescriptor> {
        let path = normalize(path);
        let p2 = path.clone();
        self.run_op("read_security_descriptor", &p2, |conn| async move {
            let r = Self::open_meta(&conn, &path, am::READ_CONTROL | am::READ_ATTRIBUTES).await?;
            let info = smb::AdditionalInfo::new()
                .with_owner_security_information(true)
                .with_group_security_information(true)
                .with_dacl_security_information(true);
            let res = handle_of(&r)?.query_security_info(info).await.map_err(|e| classify(e, &path));
            let closed = close(&r, &path).await;
            let sd = res?;
            closed?;
            Ok(sd_from_smb(&sd))
        })
        .await
    }

    /// Writes the DACL (always), and owner/group when set. Honours `control.dacl_protected`.
    /// ACEs of kind [`AceKind::Other`] cannot be written.
    pub async fn write_security_descriptor(&self, path: &str, sd: &SecurityDescriptor) -> Result<()> {
        self.retrying(|| self.write_security_descriptor_once(path, sd)).await
    }

    async fn write_security_descriptor_once(&self, path: &str, sd: &SecurityDescriptor) -> Result<()> {
        let path = normalize(path);
        let smb_sd = sd_to_smb(sd)?;
        let info = smb::AdditionalInfo::new()
            .with_owner_security_information(sd.owner.is_some())
            .with_group_security_information(sd.group.is_some())
            .with_dacl_security_information(true);
        let mut access = am::WRITE_DAC | am::READ_CONTROL;
        if sd.owner.is_some() || sd.group.is_some() {
            access |= am::WRITE_OWNER;
        }
        let p2 = path.clone();
        self.run_op("write_security_descriptor", &p2, |conn| async move {
            let r = Self::open_meta(&conn, &path, access).await?;
            let res = handle_of(&r)?.set_security_info(smb_sd, info).await.map_err(|e| classify(e, &path));
            let closed = close(&r, &path).await;
            res.and(closed)
        })
        .await
    }
}

fn mask_u32(m: smb::AccessMask) -> u32 {
    u32::from_le_bytes(m.into_bytes())
}

fn sd_from_smb(sd: &smb::SecurityDescriptor) -> SecurityDescriptor {
    let dacl = sd.dacl.as_ref().map(|acl| {
        acl.ace
            .iter()
            .map(|ace| {
                let flags = AceFlags(ace.ace_flags.into_bytes()[0]);
                let (kind, access_mask, sid) = match &ace.value {
                    smb::AceValue::AccessAllowed(a) => (AceKind::Allow, mask_u32(a.access_mask), a.sid.to_string()),
                    smb::AceValue::AccessDenied(a) => (AceKind::Deny, mask_u32(a.access_mask), a.sid.to_string()),
                    other => (AceKind::Other(other.get_type() as u8), 0, String::new()),
                };
                Ace { kind, flags, access_mask, sid }
            })
            .collect()
    });
    SecurityDescriptor {
        owner: sd.owner_sid.as_ref().map(|s| s.to_string()),
        group: sd.group_sid.as_ref().map(|s| s.to_string()),
        dacl,
        control: SdControl {
            dacl_protected: sd.control.dacl_protected(),
            dacl_auto_inherited: sd.control.dacl_auto_inherited(),
            dacl_present: sd.control.dacl_present(),
        },
    }
}

fn parse_sid(s: &str) -> Result<smb::SID> {
    s.parse::<smb::SID>().map_err(|e| SmbError::other(format!("invalid SID {s:?}: {e}")))
}

fn sd_to_smb(sd: &SecurityDescriptor) -> Result<smb::SecurityDescriptor> {
    let dacl = match &sd.dacl {
        None => None,
        Some(aces) => {
            let mut out = Vec::with_capacity(aces.len());
            for a in aces {
                let value = smb::AccessAce {
                    access_mask: smb::AccessMask::from_bytes(a.access_mask.to_le_bytes()),
                    sid: parse_sid(&a.sid)?,
                };
                let value = match a.kind {
                    AceKind::Allow => smb::AceValue::AccessAllowed(value),
                    AceKind::Deny => smb::AceValue::AccessDenied(value),
                    AceKind::Other(t) => {
                        return Err(SmbError::other(format!("cannot write ACE of type {t}")));
                    }
                };
                out.push(smb::ACE { ace_flags: smb::AceFlags::from_bytes([a.flags.0]), value });
            }
            Some(smb::ACL { acl_revision: smb::AclRevision::Nt4, ace: out })
        }
    };
    let control = smb::SecurityDescriptorControl::new()
        .with_self_relative(true)
        .with_dacl_present(dacl.is_some())
        .with_dacl_protected(sd.control.dacl_protected)
        .with_dacl_auto_inherited(sd.control.dacl_auto_inherited)
        // SE_DACL_AUTO_INHERIT_REQ (the library calls it `dacl_computed`): as Windows clients
        // do, ask the server to keep the DACL's inherited ACEs marked as such.
        .with_dacl_computed(sd.control.dacl_auto_inherited);
    Ok(smb::SecurityDescriptor {
        sbz1: 0,
        control,
        owner_sid: sd.owner.as_deref().map(parse_sid).transpose()?,
        group_sid: sd.group.as_deref().map(parse_sid).transpose()?,
        sacl: None,
        dacl,
    })
}

/// A [`DirEntry`] of `path` from a FileAllInformation query on an open handle.
pub(crate) fn entry_of_all(path: &str, info: &smb::FileAllInformation) -> DirEntry {
    let attributes = attrs_from_smb(info.basic.file_attributes);
    DirEntry {
        name: file_name(path).to_string(),
        path: path.to_string(),
        is_dir: attributes.is_directory(),
        size: if attributes.is_directory() { 0 } else { info.standard.end_of_file },
        file_id: info.internal.index_number,
        creation_time: FileTime(*info.basic.creation_time),
        last_write_time: FileTime(*info.basic.last_write_time),
        last_access_time: FileTime(*info.basic.last_access_time),
        change_time: FileTime(*info.basic.change_time),
        attributes,
    }
}
