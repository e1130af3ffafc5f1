//! Secrets at rest: connector credentials are sealed with XChaCha20-Poly1305 before they
//! reach the database, and opened only for the worker holding the connector's lease.
//!
//! Sealed text is `v1:<key-id>:<hex(nonce || ciphertext)>`: a random 24-byte nonce per write,
//! the owning object's id (the connector id) as associated data, so a ciphertext copied to
//! another row does not open. `<key-id>` names the key (16 hex digits of a SHA-256 of it), so
//! keys can be rotated (`api-server secrets rotate-key`) and a server started with the wrong
//! key refuses to run instead of failing later.
//!
//! The key (32 bytes) comes from `SCAIDRIVE_SECRET_KEY` (64 hex digits or standard base64),
//! else from the key file (`<data-dir>/secret.key` by default, 64 hex digits), which is
//! created with mode 0600 on first start.
//!
//! Never: log, format or return a [`Secret`]'s value; its `Debug` and `Display` print `***`,
//! and no error of this module carries plaintext.

use std::fmt;
use std::path::Path;

use anyhow::Context;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};

const VERSION: &str = "v1";
const NONCE_LEN: usize = 24;

/// A secret value (a password). Its `Debug` and `Display` print `***`; the value is only
/// reachable through [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The plaintext. Call it only where the value is used (encryption, the SMB login).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_string()))
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        // Best effort: overwrite the bytes before the allocation is freed.
        // SAFETY: zero bytes are valid UTF-8.
        unsafe { self.0.as_bytes_mut() }.iter_mut().for_each(|b| *b = 0);
    }
}

/// Deserializes from a JSON string only. Serde's own type errors quote the offending value
/// ("invalid type: integer `5`"); these never do.
impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        fn refuse<E: serde::de::Error>() -> Result<Secret, E> {
            Err(E::custom("invalid type: expected a string (the value is not shown)"))
        }
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Secret;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Secret, E> {
                Ok(Secret(v.to_string()))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Secret, E> {
                Ok(Secret(v))
            }
            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Secret, E> {
                refuse()
            }
            fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Secret, E> {
                refuse()
            }
            fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Secret, E> {
                refuse()
            }
            fn visit_i128<E: serde::de::Error>(self, _: i128) -> Result<Secret, E> {
                refuse()
            }
            fn visit_u128<E: serde::de::Error>(self, _: u128) -> Result<Secret, E> {
                refuse()
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Secret, E> {
                refuse()
            }
            fn visit_char<E: serde::de::Error>(self, _: char) -> Result<Secret, E> {
                refuse()
            }
            fn visit_bytes<E: serde::de::Error>(self, _: &[u8]) -> Result<Secret, E> {
                refuse()
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<Secret, E> {
                refuse()
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, _: A) -> Result<Secret, A::Error> {
                refuse()
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, _: A) -> Result<Secret, A::Error> {
                refuse()
            }
        }
        // `deserialize_any`, not `deserialize_string`: serde_json reports a non-string given to
        // `deserialize_string` itself, quoting the value.
        d.deserialize_any(V)
    }
}

/// Why a sealed secret did not open. Carries no plaintext and no key material.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    #[error("the sealed secret is malformed")]
    Malformed,
    #[error("the secret was sealed with key {found}, but the configured key is {configured}")]
    WrongKey { found: String, configured: String },
    #[error("the secret does not open with this key and associated data")]
    Tampered,
}

/// The server's secret key and the AEAD over it. Its `Debug` shows the key id only.
pub struct SecretBox {
    cipher: XChaCha20Poly1305,
    key_id: String,
}

impl fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretBox").field("key_id", &self.key_id).finish_non_exhaustive()
    }
}

/// Where a loaded key came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySource {
    Env,
    File(std::path::PathBuf),
}

impl SecretBox {
    pub fn new(key: &[u8; 32]) -> SecretBox {
        let mut h = Sha256::new();
        h.update(b"scaidrive secret key id\0");
        h.update(key);
        let key_id = hex::encode(&h.finalize()[..8]);
        SecretBox { cipher: XChaCha20Poly1305::new(key.into()), key_id }
    }

    /// A fresh random key, as the key file holds it (64 hex digits).
    pub fn generate_key_text() -> String {
        use rand::RngCore;
        let mut k = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut k);
        hex::encode(k)
    }

    /// Parses a key: 64 hex digits or standard base64 of 32 bytes (surrounding whitespace ignored).
    pub fn parse_key(text: &str) -> anyhow::Result<SecretBox> {
        let t = text.trim();
        let bytes = if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode(t).context("hex key")?
        } else {
            base64_decode(t).context("the key must be 64 hex digits or the base64 of 32 bytes")?
        };
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| anyhow::anyhow!("the key must be exactly 32 bytes (64 hex digits or 44 base64 characters)"))?;
        Ok(SecretBox::new(&key))
    }

    /// Loads the key from `SCAIDRIVE_SECRET_KEY` (already in `config`), else from the key file,
    /// creating the file (mode 0600) when it does not exist yet.
    pub fn load(config: &crate::Config) -> anyhow::Result<(SecretBox, KeySource)> {
        if let Some(k) = &config.secret_key {
            let b = SecretBox::parse_key(k.expose()).context("SCAIDRIVE_SECRET_KEY")?;
            return Ok((b, KeySource::Env));
        }
        let path = config.secret_key_file();
        if !path.exists() {
            create_key_file(&path)?;
            if !config.is_standalone() {
                tracing::warn!(
                    path = %path.display(),
                    "generated a new secret key file; every api-server replica must use the same key \
                     (set SCAIDRIVE_SECRET_KEY on all of them)"
                );
            }
        }
        let text =
            std::fs::read_to_string(&path).with_context(|| format!("reading the key file {}", path.display()))?;
        let b = SecretBox::parse_key(&text).with_context(|| format!("the key file {}", path.display()))?;
        Ok((b, KeySource::File(path)))
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Seals `secret` for the object `aad` (e.g. the connector id).
    pub fn seal(&self, aad: &str, secret: &Secret) -> String {
        use rand::RngCore;
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let ct = self
            .cipher
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: secret.expose().as_bytes(), aad: aad.as_bytes() })
            .expect("XChaCha20-Poly1305 encryption does not fail for in-memory buffers");
        let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        format!("{VERSION}:{}:{}", self.key_id, hex::encode(out))
    }

    /// The key id a sealed text names, if it is well-formed.
    pub fn key_id_of(sealed: &str) -> Option<&str> {
        let mut parts = sealed.splitn(3, ':');
        (parts.next()? == VERSION).then_some(())?;
        let id = parts.next()?;
        parts.next()?;
        Some(id)
    }

    /// Opens a text sealed for the object `aad`.
    pub fn open(&self, aad: &str, sealed: &str) -> Result<Secret, SecretError> {
        let mut parts = sealed.splitn(3, ':');
        let (Some(VERSION), Some(key_id), Some(body)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(SecretError::Malformed);
        };
        if key_id != self.key_id {
            return Err(SecretError::WrongKey { found: key_id.to_string(), configured: self.key_id.clone() });
        }
        let raw = hex::decode(body).map_err(|_| SecretError::Malformed)?;
        if raw.len() < NONCE_LEN + 16 {
            return Err(SecretError::Malformed);
        }
        let (nonce, ct) = raw.split_at(NONCE_LEN);
        let pt = self
            .cipher
            .decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad: aad.as_bytes() })
            .map_err(|_| SecretError::Tampered)?;
        String::from_utf8(pt).map(Secret).map_err(|_| SecretError::Tampered)
    }
}

/// Creates the key file with a new key, without ever replacing an existing one (two
/// processes starting at once agree on the first file written).
fn create_key_file(path: &Path) -> anyhow::Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", ulid::Ulid::new()));
    crate::cli::write_secret_file(&tmp, &format!("{}\n", SecretBox::generate_key_text()))
        .with_context(|| format!("writing {}", tmp.display()))?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            tracing::info!(path = %path.display(), "created a new secret key file");
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e).with_context(|| format!("creating the key file {}", path.display())),
    }
}

/// Replaces the key file's content atomically (write a private temporary file, rename).
pub fn replace_key_file(path: &Path, key_text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", ulid::Ulid::new()));
    crate::cli::write_secret_file(&tmp, &format!("{}\n", key_text.trim()))
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    fn val(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        } as u32)
    }
    let s = s.trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes() {
        acc = (acc << 6) | val(c)?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_only_with_their_key_and_object() {
        let b = SecretBox::new(&[7u8; 32]);
        let s = b.seal("cnn_a", &Secret::new("hunter2"));
        assert!(s.starts_with(&format!("v1:{}:", b.key_id())));
        assert!(!s.contains("hunter2"));
        assert_eq!(b.open("cnn_a", &s).unwrap().expose(), "hunter2");
        assert_eq!(b.open("cnn_b", &s), Err(SecretError::Tampered));
        let other = SecretBox::new(&[8u8; 32]);
        assert!(matches!(other.open("cnn_a", &s), Err(SecretError::WrongKey { .. })));
        // A forged key id does not help either.
        let forged = s.replacen(b.key_id(), other.key_id(), 1);
        assert_eq!(other.open("cnn_a", &forged), Err(SecretError::Tampered));
        assert_ne!(b.seal("cnn_a", &Secret::new("hunter2")), s, "a fresh nonce per write");
        assert_eq!(SecretBox::key_id_of(&s), Some(b.key_id()));
    }

    #[test]
    fn keys_parse_from_hex_and_base64() {
        let hexk = "07".repeat(32);
        let b64 = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";
        assert_eq!(SecretBox::parse_key(&hexk).unwrap().key_id(), SecretBox::new(&[7u8; 32]).key_id());
        assert_eq!(SecretBox::parse_key(b64).unwrap().key_id(), SecretBox::new(&[7u8; 32]).key_id());
        assert!(SecretBox::parse_key("abcd").is_err());
    }

    #[test]
    fn secrets_never_print_and_wrong_types_are_not_echoed() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "*** ***");
        let e = serde_json::from_str::<Secret>("12345").unwrap_err().to_string();
        assert!(!e.contains("12345"), "{e}");
    }
}
