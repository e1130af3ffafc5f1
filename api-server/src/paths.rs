//! Names and paths inside a share. Names are stored in Unicode NFC, so the NFC and NFD
//! spellings of a name are the same name. A path is `/`-separated; `.` and `..` segments,
//! NUL and control characters are refused, never interpreted, so no path escapes its share.

use unicode_normalization::UnicodeNormalization;

use crate::error::{ApiError, ApiResult};

/// Longest name, in characters.
pub const MAX_NAME_CHARS: usize = 255;
/// Longest path, in bytes.
pub const MAX_PATH_BYTES: usize = 4096;

/// Validates one item name and returns its NFC form.
pub fn name(field: &str, raw: &str) -> ApiResult<String> {
    let n: String = raw.nfc().collect();
    if n.is_empty() {
        return Err(ApiError::validation(field, "a name must not be empty").with_code("INVALID_NAME"));
    }
    if n == "." || n == ".." {
        return Err(ApiError::validation(field, "'.' and '..' are not names").with_code("INVALID_NAME"));
    }
    if n.contains('/') {
        return Err(ApiError::validation(field, "a name must not contain '/'").with_code("INVALID_NAME"));
    }
    if n.chars().any(|c| c == '\0' || c.is_control()) {
        return Err(
            ApiError::validation(field, "a name must not contain NUL or control characters").with_code("INVALID_NAME")
        );
    }
    if n.chars().count() > MAX_NAME_CHARS {
        return Err(ApiError::validation(field, format!("a name must be at most {MAX_NAME_CHARS} characters"))
            .with_code("NAME_TOO_LONG"));
    }
    Ok(n)
}

/// Splits a share-relative path (`/a/b`, `a/b`, `/` for the root) into validated NFC names.
/// Repeated slashes collapse; `.` and `..` are refused.
pub fn segments(field: &str, raw: &str) -> ApiResult<Vec<String>> {
    if raw.len() > MAX_PATH_BYTES {
        return Err(ApiError::validation(field, format!("a path must be at most {MAX_PATH_BYTES} bytes"))
            .with_code("PATH_TOO_LONG"));
    }
    let mut out = Vec::new();
    for seg in raw.split('/') {
        if seg.is_empty() {
            continue;
        }
        if seg == "." || seg == ".." {
            return Err(ApiError::validation(field, "'.' and '..' are not allowed in paths").with_code("INVALID_PATH"));
        }
        out.push(name(field, seg).map_err(|e| {
            let code = if e.code == "NAME_TOO_LONG" { "NAME_TOO_LONG" } else { "INVALID_PATH" };
            e.with_code(code)
        })?);
    }
    Ok(out)
}

/// The canonical form of a path: `/` + names joined by `/`.
pub fn join(segs: &[String]) -> String {
    format!("/{}", segs.join("/"))
}

impl ApiError {
    /// Replaces the code, keeping status, message and field.
    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = code;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_normalise_and_refuse_escapes() {
        assert_eq!(segments("p", "//a/b/").unwrap(), vec!["a", "b"]);
        assert!(segments("p", "/").unwrap().is_empty());
        for bad in ["../x", "/a/../b", "a/./b", "a/\0b", "a/\u{7}b"] {
            let e = segments("p", bad).unwrap_err();
            assert_eq!(e.field.as_deref(), Some("p"), "{bad}");
            assert_eq!(e.status, 422);
        }
        assert_eq!(segments("p", &"x".repeat(300)).unwrap_err().code, "NAME_TOO_LONG");
    }

    #[test]
    fn nfc_and_nfd_spellings_are_one_name() {
        assert_eq!(name("n", "Cafe\u{301}").unwrap(), name("n", "Caf\u{e9}").unwrap());
    }
}
