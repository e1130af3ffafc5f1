//! Share-relative path conversion: our `/`-separated paths to SMB's `\`-separated names.
//!
//! Must never let a path escape the share (`..`) or carry a separator inside a name.

use crate::error::{Result, SmbError};

/// `"a/b/c.txt"` → `"a\\b\\c.txt"`; `""` or `"/"` → `""` (the share root).
/// Rejects `.`/`..` components and backslashes inside names.
pub fn to_smb_path(path: &str) -> Result<String> {
    let mut out = String::with_capacity(path.len());
    for part in path.split('/').filter(|p| !p.is_empty()) {
        if part == "." || part == ".." || part.contains('\\') || part.contains('\0') {
            return Err(SmbError::Other { detail: format!("invalid path component in {path:?}"), status: None });
        }
        if !out.is_empty() {
            out.push('\\');
        }
        out.push_str(part);
    }
    Ok(out)
}

/// Joins a share-relative directory path and a name with `/`.
pub fn join(dir: &str, name: &str) -> String {
    let dir = dir.trim_matches('/');
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// The last component of a path (`""` for the root).
pub fn file_name(path: &str) -> &str {
    path.trim_end_matches('/').rsplit('/').next().unwrap_or("")
}

/// Normalises a path: no leading/trailing or doubled `/`.
pub fn normalize(path: &str) -> String {
    path.split('/').filter(|p| !p.is_empty()).collect::<Vec<_>>().join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_separators_and_rejects_escapes() {
        assert_eq!(to_smb_path("a/b/c.txt").unwrap(), "a\\b\\c.txt");
        assert_eq!(to_smb_path("/a//b/").unwrap(), "a\\b");
        assert_eq!(to_smb_path("").unwrap(), "");
        assert!(to_smb_path("a/../b").is_err());
        assert!(to_smb_path("a\\b").is_err());
        assert_eq!(join("", "x"), "x");
        assert_eq!(join("a/", "x"), "a/x");
        assert_eq!(file_name("a/b/c"), "c");
        assert_eq!(normalize("/a//b/"), "a/b");
    }
}
