//! A minimal NDR20 (DCE/RPC transfer syntax 8a885d04-1ceb-11c9-9fe8-08002b104860 v2) encoder and
//! decoder: just the shapes the LSA client needs (little-endian integers, unique pointers,
//! conformant and conformant-varying arrays, `RPC_UNICODE_STRING`, `RPC_SID`, context handles).
//!
//! Alignment is relative to the start of the stub, which DCE/RPC places at an 8-byte boundary
//! of its PDU. Must never panic on input from the wire: every read is bounds-checked and every
//! count is checked against the bytes left before anything is allocated.

use std::fmt;

/// A wire value we cannot decode; becomes a [`crate::SmbError::Rpc`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NdrError(pub(crate) String);

impl fmt::Display for NdrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub(crate) type NdrResult<T> = std::result::Result<T, NdrError>;

fn err<T>(what: impl Into<String>) -> NdrResult<T> {
    Err(NdrError(what.into()))
}

/// A security identifier in binary form ([MS-DTYP] 2.4.2), convertible to and from `S-1-...`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Sid {
    pub(crate) authority: u64,
    pub(crate) sub: Vec<u32>,
}

/// [MS-DTYP]: a SID has at most 15 sub-authorities.
pub(crate) const SID_MAX_SUB_AUTHORITIES: usize = 15;

impl Sid {
    /// Parses `S-1-<authority>-<sub>...`; the authority in decimal, or `0x` hex above 2^32.
    pub(crate) fn parse(s: &str) -> Option<Sid> {
        let mut parts = s.trim().split('-');
        if !parts.next()?.eq_ignore_ascii_case("S") || parts.next()? != "1" {
            return None;
        }
        let auth = parts.next()?;
        let authority = match auth.strip_prefix("0x").or_else(|| auth.strip_prefix("0X")) {
            Some(hex) => u64::from_str_radix(hex, 16).ok()?,
            None => auth.parse::<u64>().ok()?,
        };
        if authority >> 48 != 0 {
            return None;
        }
        let sub = parts.map(|p| p.parse::<u32>().ok()).collect::<Option<Vec<u32>>>()?;
        if sub.len() > SID_MAX_SUB_AUTHORITIES {
            return None;
        }
        Some(Sid { authority, sub })
    }

    /// This SID with one more sub-authority (a domain SID + a relative ID).
    pub(crate) fn with_rid(&self, rid: u32) -> Option<Sid> {
        if self.sub.len() >= SID_MAX_SUB_AUTHORITIES {
            return None;
        }
        let mut sub = self.sub.clone();
        sub.push(rid);
        Some(Sid { authority: self.authority, sub })
    }

    /// Encoded size of the `RPC_SID` (with its conformance count) in bytes.
    pub(crate) fn wire_size(&self) -> usize {
        4 + 8 + 4 * self.sub.len()
    }
}

/// Same format as the `smb` library's SID strings (so they compare equal to ACL trustees).
impl fmt::Display for Sid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.authority >> 32 == 0 {
            write!(f, "S-1-{}", self.authority)?;
        } else {
            write!(f, "S-1-0x{:x}", self.authority)?;
        }
        for s in &self.sub {
            write!(f, "-{s}")?;
        }
        Ok(())
    }
}

/// An NDR20 stub being built.
pub(crate) struct Encoder {
    buf: Vec<u8>,
    next_referent: u32,
}

impl Encoder {
    pub(crate) fn new() -> Self {
        // Referent IDs only need to be non-zero and distinct; 0x20000 is what Windows starts at.
        Encoder { buf: Vec::with_capacity(256), next_referent: 0x0002_0000 }
    }

    pub(crate) fn finish(self) -> Vec<u8> {
        self.buf
    }

    pub(crate) fn align(&mut self, n: usize) {
        while !self.buf.len().is_multiple_of(n) {
            self.buf.push(0);
        }
    }

    pub(crate) fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    pub(crate) fn u16(&mut self, v: u16) {
        self.align(2);
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub(crate) fn u32(&mut self, v: u32) {
        self.align(4);
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub(crate) fn bytes(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }

    /// A unique (or full) pointer: a fresh referent ID, or 0 for NULL.
    pub(crate) fn pointer(&mut self, present: bool) {
        if present {
            let r = self.next_referent;
            self.next_referent += 4;
            self.u32(r);
        } else {
            self.u32(0);
        }
    }

    /// The inline part of an `RPC_UNICODE_STRING` (Length, MaximumLength, Buffer pointer); the
    /// characters follow later with [`Encoder::unicode_chars`], after the enclosing structure.
    pub(crate) fn unicode_string_header(&mut self, s: &[u16]) {
        self.align(4);
        let bytes = (s.len() * 2) as u16;
        self.u16(bytes);
        self.u16(bytes);
        self.pointer(true);
    }

    /// The deferred buffer of an `RPC_UNICODE_STRING`: a conformant varying array of `u16`
    /// (maximum count, offset 0, actual count), no terminating NUL.
    pub(crate) fn unicode_chars(&mut self, s: &[u16]) {
        self.u32(s.len() as u32);
        self.u32(0);
        self.u32(s.len() as u32);
        for c in s {
            self.buf.extend_from_slice(&c.to_le_bytes());
        }
    }

    /// An `RPC_SID` (a conformant structure: the sub-authority count comes first).
    pub(crate) fn sid(&mut self, sid: &Sid) {
        self.u32(sid.sub.len() as u32);
        self.u8(1);
        self.u8(sid.sub.len() as u8);
        self.bytes(&sid.authority.to_be_bytes()[2..]);
        for s in &sid.sub {
            self.u32(*s);
        }
    }
}

/// Reads an NDR20 stub from the wire.
pub(crate) struct Decoder<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Decoder<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Decoder { buf, pos: 0 }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(crate) fn align(&mut self, n: usize) -> NdrResult<()> {
        let pad = (n - self.pos % n) % n;
        self.take(pad).map(|_| ())
    }

    fn take(&mut self, n: usize) -> NdrResult<&'a [u8]> {
        if n > self.remaining() {
            return err(format!("truncated: {n} bytes needed at offset {}, {} left", self.pos, self.remaining()));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub(crate) fn u8(&mut self) -> NdrResult<u8> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u16(&mut self) -> NdrResult<u16> {
        self.align(2)?;
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    pub(crate) fn u32(&mut self) -> NdrResult<u32> {
        self.align(4)?;
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn bytes(&mut self, n: usize) -> NdrResult<&'a [u8]> {
        self.take(n)
    }

    /// A unique pointer's referent ID: `true` when the referent follows (deferred).
    pub(crate) fn pointer(&mut self) -> NdrResult<bool> {
        Ok(self.u32()? != 0)
    }

    /// The conformance (maximum count) of an array whose elements take at least `min_elem`
    /// bytes each; refused when the stub cannot hold that many.
    pub(crate) fn count(&mut self, min_elem: usize) -> NdrResult<usize> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_elem) > self.remaining() {
            return err(format!("array of {n} elements does not fit in the {} bytes left", self.remaining()));
        }
        Ok(n)
    }

    /// The inline part of an `RPC_UNICODE_STRING`: `(Length in bytes, buffer present)`.
    pub(crate) fn unicode_string_header(&mut self) -> NdrResult<UnicodeHeader> {
        self.align(4)?;
        let length = self.u16()?;
        let maximum = self.u16()?;
        let present = self.pointer()?;
        if length % 2 != 0 || length > maximum {
            return err(format!("bad RPC_UNICODE_STRING lengths {length}/{maximum}"));
        }
        Ok(UnicodeHeader { length, maximum, present })
    }

    /// The deferred characters of an `RPC_UNICODE_STRING` whose header was `h`.
    pub(crate) fn unicode_chars(&mut self, h: &UnicodeHeader) -> NdrResult<String> {
        if !h.present {
            return Ok(String::new());
        }
        let max = self.u32()? as usize;
        let offset = self.u32()? as usize;
        let actual = self.u32()? as usize;
        if offset != 0 || actual > max || actual != h.length as usize / 2 {
            return err(format!(
                "RPC_UNICODE_STRING array ({max}, {offset}, {actual}) does not match its lengths {}/{}",
                h.length, h.maximum
            ));
        }
        let raw = self.take(actual * 2)?;
        let units: Vec<u16> = raw.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
        Ok(String::from_utf16_lossy(&units))
    }

    /// An `RPC_SID`.
    pub(crate) fn sid(&mut self) -> NdrResult<Sid> {
        let conformance = self.u32()? as usize;
        let revision = self.u8()?;
        let count = self.u8()? as usize;
        if revision != 1 || count != conformance || count > SID_MAX_SUB_AUTHORITIES {
            return err(format!(
                "bad RPC_SID (revision {revision}, {count} sub-authorities, conformance {conformance})"
            ));
        }
        let a = self.take(6)?;
        let authority = a.iter().fold(0u64, |acc, b| (acc << 8) | *b as u64);
        let mut sub = Vec::with_capacity(count);
        for _ in 0..count {
            sub.push(self.u32()?);
        }
        Ok(Sid { authority, sub })
    }
}

/// The inline part of an `RPC_UNICODE_STRING` read from the wire.
pub(crate) struct UnicodeHeader {
    length: u16,
    maximum: u16,
    present: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sid_strings_round_trip_and_bad_ones_are_refused() {
        for s in ["S-1-1-0", "S-1-5-18", "S-1-5-21-569807262-3148748984-4044723189-1001", "S-1-22-2-1001", "S-1-5"] {
            assert_eq!(Sid::parse(s).unwrap().to_string(), s);
        }
        assert_eq!(Sid::parse("S-1-0x123456789abc-1").unwrap().to_string(), "S-1-0x123456789abc-1");
        assert_eq!(Sid::parse("s-1-5-32-544").unwrap().to_string(), "S-1-5-32-544");
        for bad in ["", "S-1", "S-2-5-18", "S-1-5-x", "S-1-5--18", "alice", "S-1-0x1000000000000-1", "S-1-5-4294967296"]
        {
            assert_eq!(Sid::parse(bad), None, "{bad}");
        }
        let sixteen = format!("S-1-5{}", "-1".repeat(16));
        assert_eq!(Sid::parse(&sixteen), None);
    }

    #[test]
    fn rpc_sid_encodes_as_conformant_structure() {
        let mut e = Encoder::new();
        e.sid(&Sid::parse("S-1-5-32-544").unwrap());
        let bytes = e.finish();
        assert_eq!(bytes, [2, 0, 0, 0, 1, 2, 0, 0, 0, 0, 0, 5, 32, 0, 0, 0, 0x20, 2, 0, 0]);
        assert_eq!(Decoder::new(&bytes).sid().unwrap().to_string(), "S-1-5-32-544");
    }

    #[test]
    fn decoder_refuses_truncated_and_oversized_input() {
        assert!(Decoder::new(&[1, 0, 0]).u32().is_err());
        let mut d = Decoder::new(&[0xff, 0xff, 0xff, 0x7f, 0, 0]);
        assert!(d.count(1).is_err());
        // A SID claiming 2 sub-authorities with a conformance of 3.
        assert!(Decoder::new(&[3, 0, 0, 0, 1, 2, 0, 0, 0, 0, 0, 5, 1, 0, 0, 0, 2, 0, 0, 0]).sid().is_err());
        // A string whose array disagrees with its header.
        let mut d = Decoder::new(&[4, 0, 4, 0, 0, 0, 2, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, b'a', 0]);
        let h = d.unicode_string_header().unwrap();
        assert!(d.unicode_chars(&h).is_err());
    }
}
