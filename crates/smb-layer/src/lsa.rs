//! An LSA client: SIDs to names and names to SIDs ([MS-LSAT]), over `\pipe\lsarpc` on `IPC$`.
//!
//! The `smb` library's RPC layer binds only with the NDR64 transfer syntax, which Samba
//! rejects, so this module carries its own minimal DCE/RPC binding: connection-oriented PDUs
//! (bind, request, response, fault; [C706] chapter 12, [MS-RPCE] 2.2.2) encoded here, NDR20
//! stubs encoded by `ndr.rs`, each PDU sent with FSCTL_PIPE_TRANSCEIVE through the library's
//! public `fsctl_with_options`. Calls: LsarOpenPolicy2 (44), LsarLookupNames (14),
//! LsarLookupSids (15), LsarClose (0).
//!
//! Each lookup opens its own short-lived SMB connection to `IPC$` with the client's server and
//! credentials (the client's file connection does not expose its session), binds, opens the
//! policy, looks up in batches that each fit one request fragment, closes the policy and drops
//! the connection. Every step has a timeout.
//!
//! Must never: log or print the password, panic on a garbled or hostile response (every read
//! is bounds-checked in `ndr.rs` and here), or treat "not mapped" as an error.

use std::time::Duration;

use smb::{
    Connection, ConnectionConfig, FileCreateArgs, Guid, IoctlBuffer, Pipe, PipeTransceiveRequest, Resource, UncPath,
};
use tracing::debug;

use crate::client::SmbClient;
use crate::config::SmbConfig;
use crate::error::{classify, classify_connect, NtStatus, Result, SmbError};
use crate::ndr::{Decoder, Encoder, NdrError, NdrResult, Sid};

/// What LSA says a SID is (`SID_NAME_USE`, [MS-LSAT] 2.2.13).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SidKind {
    /// A user account.
    User,
    /// A domain group (on Samba also a Unix group mapped to a domain group).
    Group,
    /// A domain itself.
    Domain,
    /// A local group (e.g. `BUILTIN\Administrators`).
    Alias,
    /// A well-known group (e.g. `Everyone`, `NT AUTHORITY\SYSTEM`).
    WellKnownGroup,
    /// An account that was deleted.
    DeletedAccount,
    /// Not a valid SID.
    Invalid,
    /// The server does not know it.
    Unknown,
    /// A computer account.
    Computer,
    /// A mandatory integrity label.
    Label,
}

impl SidKind {
    fn from_wire(v: u16) -> SidKind {
        match v {
            1 => SidKind::User,
            2 => SidKind::Group,
            3 => SidKind::Domain,
            4 => SidKind::Alias,
            5 => SidKind::WellKnownGroup,
            6 => SidKind::DeletedAccount,
            7 => SidKind::Invalid,
            9 => SidKind::Computer,
            10 => SidKind::Label,
            _ => SidKind::Unknown,
        }
    }

    /// Whether a lookup found something (anything but `Unknown` and `Invalid`).
    fn is_mapped(self) -> bool {
        !matches!(self, SidKind::Unknown | SidKind::Invalid)
    }
}

/// A security principal as the server's LSA names it.
///
/// ```
/// # use smb_layer::{Principal, SidKind};
/// let p = Principal { sid: "S-1-5-21-1-2-3-1001".into(), domain: "CORP".into(), name: "alice".into(), kind: SidKind::User };
/// assert_eq!(p.qualified_name(), "CORP\\alice");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Principal {
    /// The SID, e.g. `S-1-5-21-...-1001` (same format as [`crate::Ace::sid`]).
    pub sid: String,
    /// The domain name (NetBIOS form, e.g. `CORP`, `BUILTIN`, `NT AUTHORITY`); empty for
    /// principals without one (e.g. `Everyone`).
    pub domain: String,
    /// The account name within the domain, as the server spells it.
    pub name: String,
    /// What kind of principal it is.
    pub kind: SidKind,
}

impl Principal {
    /// `DOMAIN\name`, or the name alone when the domain is empty (or the name is, for a domain).
    pub fn qualified_name(&self) -> String {
        match (self.domain.is_empty(), self.name.is_empty()) {
            (true, _) => self.name.clone(),
            (false, true) => self.domain.clone(),
            (false, false) => format!("{}\\{}", self.domain, self.name),
        }
    }
}

/// Most names or SIDs sent in one lookup call (requests must also fit one fragment).
pub(crate) const MAX_BATCH: usize = 20;
/// The fragment size we propose at bind time (what Windows uses).
const PROPOSED_FRAG: u16 = 4280;
/// The pipe, relative to `IPC$`.
const PIPE_NAME: &str = "lsarpc";
/// For error messages.
const PIPE_PATH: &str = "IPC$\\lsarpc";

// ---------------------------------------------------------------------------------------------
// DCE/RPC connection-oriented PDUs.

const PTYPE_REQUEST: u8 = 0;
const PTYPE_RESPONSE: u8 = 2;
const PTYPE_FAULT: u8 = 3;
const PTYPE_BIND: u8 = 11;
const PTYPE_BIND_ACK: u8 = 12;
const PTYPE_BIND_NAK: u8 = 13;
const PFC_FIRST_FRAG: u8 = 0x01;
const PFC_LAST_FRAG: u8 = 0x02;
/// Little-endian integers, ASCII characters, IEEE floats.
const PACKED_DREP: [u8; 4] = [0x10, 0, 0, 0];
const COMMON_HEADER: usize = 16;
/// Common header + alloc_hint + context id + opnum (or cancel count) fields.
const REQUEST_HEADER: usize = 24;
const CONTEXT_ID: u16 = 0;
/// A response stub larger than this is refused (a lookup batch needs a few KiB).
const MAX_STUB: usize = 1 << 20;
/// Most fragments after the first of one response (a hostile server could send empty ones).
const MAX_CONTINUATIONS: u32 = 1024;

/// LSA's abstract syntax 12345778-1234-abcd-ef00-0123456789ab, version 0.0 (UUID fields in
/// little-endian order).
const LSA_SYNTAX: [u8; 20] =
    [0x78, 0x57, 0x34, 0x12, 0x34, 0x12, 0xcd, 0xab, 0xef, 0x00, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0, 0, 0, 0];
/// NDR20 8a885d04-1ceb-11c9-9fe8-08002b104860, version 2.
const NDR20_SYNTAX: [u8; 20] =
    [0x04, 0x5d, 0x88, 0x8a, 0xeb, 0x1c, 0xc9, 0x11, 0x9f, 0xe8, 0x08, 0x00, 0x2b, 0x10, 0x48, 0x60, 2, 0, 0, 0];

fn header(ptype: u8, flags: u8, frag_len: usize, call_id: u32) -> Vec<u8> {
    let mut h = Vec::with_capacity(frag_len);
    h.extend_from_slice(&[5, 0, ptype, flags]);
    h.extend_from_slice(&PACKED_DREP);
    h.extend_from_slice(&(frag_len as u16).to_le_bytes());
    h.extend_from_slice(&0u16.to_le_bytes()); // auth_length
    h.extend_from_slice(&call_id.to_le_bytes());
    h
}

/// A bind for LSA with NDR20 as the only transfer syntax.
fn bind_pdu(call_id: u32, frag: u16) -> Vec<u8> {
    let len = COMMON_HEADER + 8 + 4 + 4 + 20 + 20;
    let mut p = header(PTYPE_BIND, PFC_FIRST_FRAG | PFC_LAST_FRAG, len, call_id);
    p.extend_from_slice(&frag.to_le_bytes()); // max_xmit_frag
    p.extend_from_slice(&frag.to_le_bytes()); // max_recv_frag
    p.extend_from_slice(&0u32.to_le_bytes()); // assoc_group_id: a new association
    p.extend_from_slice(&[1, 0, 0, 0]); // one context element
    p.extend_from_slice(&CONTEXT_ID.to_le_bytes());
    p.extend_from_slice(&[1, 0]); // one transfer syntax
    p.extend_from_slice(&LSA_SYNTAX);
    p.extend_from_slice(&NDR20_SYNTAX);
    debug_assert_eq!(p.len(), len);
    p
}

/// A single-fragment request.
fn request_pdu(call_id: u32, opnum: u16, stub: &[u8]) -> Vec<u8> {
    let len = REQUEST_HEADER + stub.len();
    let mut p = header(PTYPE_REQUEST, PFC_FIRST_FRAG | PFC_LAST_FRAG, len, call_id);
    p.extend_from_slice(&(stub.len() as u32).to_le_bytes()); // alloc_hint
    p.extend_from_slice(&CONTEXT_ID.to_le_bytes());
    p.extend_from_slice(&opnum.to_le_bytes());
    p.extend_from_slice(stub);
    p
}

struct Header {
    ptype: u8,
    flags: u8,
    frag_len: usize,
    auth_len: usize,
    call_id: u32,
}

fn parse_header(b: &[u8]) -> NdrResult<Header> {
    if b.len() < COMMON_HEADER {
        return Err(NdrError(format!("{} bytes are not a PDU header", b.len())));
    }
    if b[0] != 5 || b[1] != 0 {
        return Err(NdrError(format!("RPC version {}.{}, expected 5.0", b[0], b[1])));
    }
    if b[4] & 0xf0 != 0x10 {
        return Err(NdrError(format!("unsupported data representation {:02x?} (only little-endian)", &b[4..8])));
    }
    let frag_len = u16::from_le_bytes([b[8], b[9]]) as usize;
    let auth_len = u16::from_le_bytes([b[10], b[11]]) as usize;
    if frag_len < COMMON_HEADER || frag_len > b.len() {
        return Err(NdrError(format!("fragment length {frag_len} with {} bytes received", b.len())));
    }
    Ok(Header {
        ptype: b[2],
        flags: b[3],
        frag_len,
        auth_len,
        call_id: u32::from_le_bytes([b[12], b[13], b[14], b[15]]),
    })
}

/// The bind acknowledgement: the largest fragment the server accepts from us.
fn parse_bind_ack(b: &[u8], call_id: u32) -> Result<u16> {
    let h = parse_header(b).map_err(malformed)?;
    if h.call_id != call_id {
        return Err(SmbError::rpc(format!("bind answered for call {} instead of {call_id}", h.call_id)));
    }
    let pdu = &b[..h.frag_len];
    match h.ptype {
        PTYPE_BIND_ACK => {}
        PTYPE_BIND_NAK => {
            let reason = pdu.get(16..18).map(|r| u16::from_le_bytes([r[0], r[1]])).unwrap_or(0);
            return Err(SmbError::rpc(format!("LSA bind refused (reason {reason})")));
        }
        PTYPE_FAULT => return Err(fault(pdu)),
        t => return Err(SmbError::rpc(format!("unexpected PDU type {t} in answer to bind"))),
    }
    let mut d = Decoder::new(pdu);
    d.bytes(COMMON_HEADER).map_err(malformed)?;
    let _max_xmit = d.u16().map_err(malformed)?;
    let max_recv = d.u16().map_err(malformed)?;
    let _assoc_group = d.u32().map_err(malformed)?;
    let port_len = d.u16().map_err(malformed)? as usize;
    d.bytes(port_len).map_err(malformed)?;
    d.align(4).map_err(malformed)?;
    let results = d.u8().map_err(malformed)?;
    d.bytes(3).map_err(malformed)?;
    if results == 0 {
        return Err(SmbError::rpc("LSA bind acknowledged without a result"));
    }
    let result = d.u16().map_err(malformed)?;
    let reason = d.u16().map_err(malformed)?;
    let syntax = d.bytes(20).map_err(malformed)?;
    if result != 0 {
        return Err(SmbError::rpc(format!(
            "LSA bind: NDR20 transfer syntax not accepted (result {result}, reason {reason})"
        )));
    }
    if syntax != NDR20_SYNTAX {
        return Err(SmbError::rpc("LSA bind accepted a transfer syntax we did not offer"));
    }
    if (max_recv as usize) < REQUEST_HEADER + 256 {
        return Err(SmbError::rpc(format!("server accepts fragments of only {max_recv} bytes")));
    }
    Ok(max_recv)
}

fn fault(pdu: &[u8]) -> SmbError {
    match pdu.get(24..28) {
        Some(s) => SmbError::rpc(format!("RPC fault 0x{:08x}", u32::from_le_bytes([s[0], s[1], s[2], s[3]]))),
        None => SmbError::rpc("RPC fault (truncated)"),
    }
}

fn malformed(e: NdrError) -> SmbError {
    SmbError::rpc(format!("malformed LSA response: {e}"))
}

/// The stub of one call's response, put together from its fragments.
#[derive(Default)]
struct Reassembly {
    stub: Vec<u8>,
    started: bool,
    done: bool,
}

impl Reassembly {
    /// Takes the fragments in `buf` (one transceive's output holds one or more whole fragments).
    fn feed(&mut self, mut buf: &[u8], call_id: u32) -> Result<()> {
        while !buf.is_empty() {
            if self.done {
                return Err(SmbError::rpc("data after the last fragment of a response"));
            }
            let h = parse_header(buf).map_err(malformed)?;
            let pdu = &buf[..h.frag_len];
            if h.call_id != call_id {
                return Err(SmbError::rpc(format!("response to call {} while waiting for {call_id}", h.call_id)));
            }
            match h.ptype {
                PTYPE_RESPONSE => {}
                PTYPE_FAULT => return Err(fault(pdu)),
                t => return Err(SmbError::rpc(format!("unexpected PDU type {t} in a response"))),
            }
            if h.auth_len != 0 {
                return Err(SmbError::rpc("unexpected authentication trailer on an unauthenticated binding"));
            }
            if (h.flags & PFC_FIRST_FRAG != 0) == self.started {
                return Err(SmbError::rpc("response fragments out of order"));
            }
            if pdu.len() < REQUEST_HEADER {
                return Err(SmbError::rpc("response fragment shorter than its header"));
            }
            let context = u16::from_le_bytes([pdu[20], pdu[21]]);
            if context != CONTEXT_ID {
                return Err(SmbError::rpc(format!("response for presentation context {context}")));
            }
            if self.stub.len() + pdu.len() - REQUEST_HEADER > MAX_STUB {
                return Err(SmbError::rpc("response larger than 1 MiB"));
            }
            self.stub.extend_from_slice(&pdu[REQUEST_HEADER..]);
            self.started = true;
            self.done = h.flags & PFC_LAST_FRAG != 0;
            buf = &buf[h.frag_len..];
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// LSA stubs ([MS-LSAT] 3.1.4, [MS-LSAD] 3.1.4.4.1, NDR20).

const OP_CLOSE: u16 = 0;
const OP_LOOKUP_NAMES: u16 = 14;
const OP_LOOKUP_SIDS: u16 = 15;
const OP_OPEN_POLICY2: u16 = 44;
/// POLICY_LOOKUP_NAMES: all that lookups need.
const POLICY_LOOKUP_NAMES: u32 = 0x0000_0800;
/// LsapLookupWksta: look up in all domains the server knows.
const LOOKUP_LEVEL_WKSTA: u16 = 1;
const STATUS_SUCCESS: u32 = 0;
const STATUS_SOME_NOT_MAPPED: u32 = 0x0000_0107;
const STATUS_NONE_MAPPED: u32 = 0xC000_0073;
const STATUS_ACCESS_DENIED: u32 = 0xC000_0022;

/// An LSA policy handle (an RPC context handle).
type PolicyHandle = [u8; 20];

fn open_policy2_stub(access: u32) -> Vec<u8> {
    let mut e = Encoder::new();
    e.pointer(false); // SystemName: NULL (the server we are talking to)
                      // ObjectAttributes (a reference pointer: inline), all fields zero as [MS-LSAD] requires.
    e.u32(24); // Length
    e.pointer(false); // RootDirectory
    e.pointer(false); // ObjectName
    e.u32(0); // Attributes
    e.pointer(false); // SecurityDescriptor
    e.pointer(false); // SecurityQualityOfService
    e.u32(access);
    e.finish()
}

fn handle_stub(h: &PolicyHandle) -> Vec<u8> {
    let mut e = Encoder::new();
    e.bytes(h);
    e.finish()
}

fn status_error(call: &str, status: u32) -> SmbError {
    let detail = format!("{call} returned NT status 0x{status:08X}");
    match status {
        STATUS_ACCESS_DENIED => SmbError::AccessDenied { path: PIPE_PATH.to_string(), status: Some(NtStatus(status)) },
        _ => SmbError::Rpc { detail, status: Some(NtStatus(status)) },
    }
}

fn parse_handle_and_status(stub: &[u8], call: &str) -> Result<PolicyHandle> {
    let mut d = Decoder::new(stub);
    let h: PolicyHandle = d.bytes(20).map_err(malformed)?.try_into().expect("20 bytes");
    let status = d.u32().map_err(malformed)?;
    if status != STATUS_SUCCESS {
        return Err(status_error(call, status));
    }
    Ok(h)
}

/// `LsarLookupSids(PolicyHandle, SidEnumBuffer, [out] ReferencedDomains, TranslatedNames,
/// LookupLevel, MappedCount)`.
fn lookup_sids_stub(h: &PolicyHandle, sids: &[Sid]) -> Vec<u8> {
    let mut e = Encoder::new();
    e.bytes(h);
    // LSAPR_SID_ENUM_BUFFER { Entries, [size_is(Entries)] PLSAPR_SID_INFORMATION SidInfo }
    e.u32(sids.len() as u32);
    e.pointer(!sids.is_empty());
    e.u32(sids.len() as u32); // conformance of SidInfo
    for _ in sids {
        e.pointer(true); // LSAPR_SID_INFORMATION { PRPC_SID Sid }
    }
    for s in sids {
        e.sid(s);
    }
    // TranslatedNames (in): empty.
    e.u32(0);
    e.pointer(false);
    e.u16(LOOKUP_LEVEL_WKSTA);
    e.u32(0); // MappedCount
    e.finish()
}

/// `LsarLookupNames(PolicyHandle, Count, Names, [out] ReferencedDomains, TranslatedSids,
/// LookupLevel, MappedCount)`.
fn lookup_names_stub(h: &PolicyHandle, names: &[Vec<u16>]) -> Vec<u8> {
    let mut e = Encoder::new();
    e.bytes(h);
    e.u32(names.len() as u32); // Count
    e.u32(names.len() as u32); // conformance of Names (a reference pointer: inline)
    for n in names {
        e.unicode_string_header(n);
    }
    for n in names {
        e.unicode_chars(n);
    }
    // TranslatedSids (in): empty.
    e.u32(0);
    e.pointer(false);
    e.u16(LOOKUP_LEVEL_WKSTA);
    e.u32(0); // MappedCount
    e.finish()
}

/// Encoded size of one name in a LookupNames request.
fn name_wire_size(n: &[u16]) -> usize {
    8 + 12 + (n.len() * 2).next_multiple_of(4)
}

/// Encoded size of one SID in a LookupSids request.
fn sid_wire_size(s: &Sid) -> usize {
    4 + s.wire_size()
}

/// A domain of an `LSAPR_REFERENCED_DOMAIN_LIST`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RefDomain {
    name: String,
    sid: Option<Sid>,
}

/// `[out] PLSAPR_REFERENCED_DOMAIN_LIST*`.
fn referenced_domains(d: &mut Decoder) -> NdrResult<Vec<RefDomain>> {
    if !d.pointer()? {
        return Ok(Vec::new());
    }
    let entries = d.u32()? as usize;
    let present = d.pointer()?;
    let _max_entries = d.u32()?;
    if !present {
        return if entries == 0 {
            Ok(Vec::new())
        } else {
            Err(NdrError(format!("{entries} domains without an array")))
        };
    }
    let n = d.count(12)?;
    if n != entries {
        return Err(NdrError(format!("domain array of {n} for {entries} entries")));
    }
    let mut heads = Vec::with_capacity(n);
    for _ in 0..n {
        let name = d.unicode_string_header()?;
        let sid = d.pointer()?;
        heads.push((name, sid));
    }
    let mut out = Vec::with_capacity(n);
    for (name, sid) in heads {
        let name = d.unicode_chars(&name)?;
        let sid = if sid { Some(d.sid()?) } else { None };
        out.push(RefDomain { name, sid });
    }
    Ok(out)
}

fn domain_at(domains: &[RefDomain], index: u32) -> NdrResult<Option<&RefDomain>> {
    if index as i32 == -1 {
        return Ok(None);
    }
    domains.get(index as usize).map(Some).ok_or_else(|| NdrError(format!("domain index {index} out of range")))
}

/// The result of a LookupSids call: one entry per SID asked, `None` when not mapped.
fn parse_lookup_sids(stub: &[u8], sids: &[Sid]) -> Result<Vec<Option<Principal>>> {
    let mut d = Decoder::new(stub);
    let (names, status) = decode_lookup_sids(&mut d, sids.len()).map_err(malformed)?;
    match status {
        STATUS_SUCCESS | STATUS_SOME_NOT_MAPPED => Ok(names
            .into_iter()
            .zip(sids)
            .map(|(n, sid)| n.map(|(kind, domain, name)| Principal { sid: sid.to_string(), domain, name, kind }))
            .collect()),
        STATUS_NONE_MAPPED => Ok(vec![None; sids.len()]),
        s => Err(status_error("LsarLookupSids", s)),
    }
}

type NameHit = (SidKind, String, String);

fn decode_lookup_sids(d: &mut Decoder, asked: usize) -> NdrResult<(Vec<Option<NameHit>>, u32)> {
    let domains = referenced_domains(d)?;
    // LSAPR_TRANSLATED_NAMES { Entries, [size_is(Entries)] PLSAPR_TRANSLATED_NAME Names }
    let entries = d.u32()? as usize;
    let present = d.pointer()?;
    let mut raw = Vec::new();
    if present {
        let n = d.count(16)?;
        if n != entries {
            return Err(NdrError(format!("name array of {n} for {entries} entries")));
        }
        for _ in 0..n {
            let kind = SidKind::from_wire(d.u16()?);
            let name = d.unicode_string_header()?;
            let index = d.u32()?;
            raw.push((kind, name, index));
        }
    } else if entries != 0 {
        return Err(NdrError(format!("{entries} names without an array")));
    }
    let mut names = Vec::with_capacity(raw.len());
    for (kind, name, index) in raw {
        let name = d.unicode_chars(&name)?;
        let domain = domain_at(&domains, index)?.map(|dom| dom.name.clone()).unwrap_or_default();
        names.push(kind.is_mapped().then_some((kind, domain, name)));
    }
    let _mapped = d.u32()?;
    let status = d.u32()?;
    if names.is_empty() {
        names = vec![None; asked];
    } else if names.len() != asked {
        return Err(NdrError(format!("{} names for {asked} SIDs", names.len())));
    }
    Ok((names, status))
}

/// A name resolved by LookupNames: its SID and kind, and its domain's name.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NameLookup {
    sid: Sid,
    kind: SidKind,
    domain: String,
}

/// The result of a LookupNames call: one entry per name asked, `None` when not mapped.
fn parse_lookup_names(stub: &[u8], asked: usize) -> Result<Vec<Option<NameLookup>>> {
    let mut d = Decoder::new(stub);
    let (found, status) = decode_lookup_names(&mut d, asked).map_err(malformed)?;
    match status {
        STATUS_SUCCESS | STATUS_SOME_NOT_MAPPED => Ok(found),
        STATUS_NONE_MAPPED => Ok(vec![None; asked]),
        s => Err(status_error("LsarLookupNames", s)),
    }
}

fn decode_lookup_names(d: &mut Decoder, asked: usize) -> NdrResult<(Vec<Option<NameLookup>>, u32)> {
    let domains = referenced_domains(d)?;
    // LSAPR_TRANSLATED_SIDS { Entries, [size_is(Entries)] PLSA_TRANSLATED_SID Sids }
    let entries = d.u32()? as usize;
    let present = d.pointer()?;
    let mut raw = Vec::new();
    if present {
        let n = d.count(12)?;
        if n != entries {
            return Err(NdrError(format!("SID array of {n} for {entries} entries")));
        }
        for _ in 0..n {
            let kind = SidKind::from_wire(d.u16()?);
            let rid = d.u32()?;
            let index = d.u32()?;
            raw.push((kind, rid, index));
        }
    } else if entries != 0 {
        return Err(NdrError(format!("{entries} SIDs without an array")));
    }
    let _mapped = d.u32()?;
    let status = d.u32()?;
    let mut out = Vec::with_capacity(raw.len());
    for (kind, rid, index) in raw {
        if !kind.is_mapped() {
            out.push(None);
            continue;
        }
        let domain = domain_at(&domains, index)?.ok_or_else(|| NdrError("a mapped name without a domain".into()))?;
        let domain_sid = domain.sid.as_ref().ok_or_else(|| NdrError("a referenced domain without a SID".into()))?;
        // A domain's own name maps to the domain SID; anything else is the domain SID + RID.
        let sid = if kind == SidKind::Domain {
            domain_sid.clone()
        } else {
            domain_sid.with_rid(rid).ok_or_else(|| NdrError("domain SID too long for a RID".into()))?
        };
        out.push(Some(NameLookup { sid, kind, domain: domain.name.clone() }));
    }
    if out.is_empty() {
        out = vec![None; asked];
    } else if out.len() != asked {
        return Err(NdrError(format!("{} SIDs for {asked} names", out.len())));
    }
    Ok((out, status))
}

/// Splits `sizes` into consecutive batches of at most [`MAX_BATCH`] items whose encoded sizes
/// add up to at most `budget` bytes. An item larger than the budget on its own is an error.
fn batches(sizes: &[usize], budget: usize) -> Result<Vec<std::ops::Range<usize>>> {
    let mut out = Vec::new();
    let (mut start, mut used) = (0, 0);
    for (i, &size) in sizes.iter().enumerate() {
        if size > budget {
            return Err(SmbError::other(format!("lookup item {i} is too long for one LSA request ({size} bytes)")));
        }
        if i - start == MAX_BATCH || used + size > budget {
            out.push(start..i);
            start = i;
            used = 0;
        }
        used += size;
    }
    if start < sizes.len() {
        out.push(start..sizes.len());
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// The pipe.

/// One bound `\pipe\lsarpc` on its own connection.
pub(crate) struct LsaPipe {
    // Field order matters for Drop: pipe, tree, session, then connection.
    pipe: Pipe,
    _tree: smb::Tree,
    _session: smb::Session,
    connection: Connection,
    call_id: u32,
    /// Fragments fetched after the first of a response, over the pipe's life (for tests).
    continuations: u32,
    /// Largest stub we may send in one fragment.
    max_stub: usize,
    /// Largest transceive output we ask for.
    max_out: u32,
    timeout: Duration,
}

impl LsaPipe {
    /// Connects to `IPC$` of the server of `cfg`, opens `lsarpc` and binds with NDR20,
    /// proposing fragments of `frag` bytes.
    pub(crate) async fn open(cfg: &SmbConfig, frag: u16) -> Result<LsaPipe> {
        let t = cfg.timeouts.connect;
        let mut pipe = match tokio::time::timeout(t, Self::connect(cfg)).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(SmbError::Unreachable {
                    detail: format!("connecting to {}:{} for LSA timed out after {t:?}", cfg.host, cfg.port),
                    status: None,
                })
            }
        };
        pipe.bind(frag).await?;
        Ok(pipe)
    }

    async fn connect(cfg: &SmbConfig) -> Result<LsaPipe> {
        let (transport, _credits) = crate::client::connect_transport(cfg).await?;
        let conn_cfg = ConnectionConfig {
            port: Some(cfg.port),
            timeout: Some(cfg.timeouts.request),
            smb2_only_negotiate: true,
            compression_enabled: false,
            ..Default::default()
        };
        let connection = Connection::from_transport(Box::new(transport), &cfg.host, Guid::generate(), conn_cfg)
            .await
            .map_err(|e| classify_connect(e, PIPE_PATH))?;
        let username = sspi::Username::new_down_level_logon_name(&cfg.username, &cfg.domain)
            .map_err(|e| SmbError::other(format!("invalid user name: {e}")))?;
        let identity = sspi::AuthIdentity { username, password: cfg.password.expose().to_string().into() };
        let session = connection.authenticate(identity).await.map_err(|e| match classify_connect(e, PIPE_PATH) {
            SmbError::Other { status: None, .. } => SmbError::AuthFailed { status: None },
            other => other,
        })?;
        let unc = UncPath::ipc_share(&cfg.host).map_err(|e| SmbError::other(format!("invalid host name: {e}")))?;
        let tree = session.tree_connect(&unc).await.map_err(|e| classify_connect(e, "IPC$"))?;
        let max_transact =
            connection.conn_info().map(|c| c.negotiation.max_transact_size).unwrap_or(65536).clamp(4096, 65536);
        let pipe = match tree.create(PIPE_NAME, &FileCreateArgs::make_pipe()).await {
            Ok(Resource::Pipe(p)) => p,
            Ok(_) => return Err(SmbError::rpc("lsarpc did not open as a named pipe")),
            Err(e) => return Err(classify(e, PIPE_PATH)),
        };
        Ok(LsaPipe {
            pipe,
            _tree: tree,
            _session: session,
            connection,
            call_id: 1,
            continuations: 0,
            max_stub: 0,
            max_out: max_transact,
            timeout: cfg.timeouts.request,
        })
    }

    /// One FSCTL_PIPE_TRANSCEIVE: writes `pdu`, returns what the server answered.
    async fn transceive(&self, pdu: Vec<u8>) -> Result<Vec<u8>> {
        let req = PipeTransceiveRequest::from(IoctlBuffer::from(pdu));
        match tokio::time::timeout(self.timeout, self.pipe.fsctl_with_options(req, self.max_out)).await {
            Ok(Ok(res)) => Ok(res.0.to_vec()),
            Ok(Err(e)) => Err(classify(e, PIPE_PATH)),
            Err(_) => Err(SmbError::lost(format!("LSA call timed out after {:?}", self.timeout))),
        }
    }

    async fn bind(&mut self, frag: u16) -> Result<()> {
        let call_id = self.next_call_id();
        let ack = self.transceive(bind_pdu(call_id, frag)).await?;
        let max_recv = parse_bind_ack(&ack, call_id)?.min(frag);
        self.max_stub = max_recv as usize - REQUEST_HEADER;
        debug!(smb.pipe = PIPE_PATH, max_recv, "LSA bound with NDR20");
        Ok(())
    }

    fn next_call_id(&mut self) -> u32 {
        self.call_id = self.call_id.wrapping_add(1).max(1);
        self.call_id
    }

    /// One call: request `opnum` with `stub`, returns the response stub.
    ///
    /// A response larger than the negotiated fragment size comes in several fragments. Samba
    /// answers a transceive with the first one only and keeps the rest queued on the pipe; a
    /// transceive with empty input then returns the next. (The library offers no plain READ on
    /// a pipe.) A server that refuses that (Windows may answer STATUS_PIPE_BUSY) fails the call
    /// with [`SmbError::Rpc`].
    async fn call(&mut self, opnum: u16, stub: &[u8]) -> Result<Vec<u8>> {
        if stub.len() > self.max_stub {
            return Err(SmbError::rpc(format!("request of {} bytes exceeds one fragment", stub.len())));
        }
        let call_id = self.next_call_id();
        let out = self.transceive(request_pdu(call_id, opnum, stub)).await?;
        let mut r = Reassembly::default();
        r.feed(&out, call_id)?;
        let mut rounds = 0;
        while !r.done {
            rounds += 1;
            if rounds > MAX_CONTINUATIONS {
                return Err(SmbError::rpc(format!("response still incomplete after {rounds} fragments")));
            }
            let more = match self.transceive(Vec::new()).await {
                Ok(more) if !more.is_empty() => more,
                Ok(_) => return Err(SmbError::rpc("response ended before its last fragment")),
                Err(e) if e.is_connection_lost() => return Err(e),
                Err(e) => {
                    return Err(SmbError::Rpc {
                        detail: format!("the server would not return the next fragment of a response: {e}"),
                        status: e.nt_status(),
                    })
                }
            };
            self.continuations += 1;
            r.feed(&more, call_id)?;
        }
        Ok(r.stub)
    }

    pub(crate) async fn open_policy(&mut self) -> Result<PolicyHandle> {
        let stub = self.call(OP_OPEN_POLICY2, &open_policy2_stub(POLICY_LOOKUP_NAMES)).await?;
        parse_handle_and_status(&stub, "LsarOpenPolicy2")
    }

    pub(crate) async fn close_policy(&mut self, h: &PolicyHandle) -> Result<()> {
        let stub = self.call(OP_CLOSE, &handle_stub(h)).await?;
        parse_handle_and_status(&stub, "LsarClose").map(|_| ())
    }

    /// Looks up `sids` in as many calls as needed.
    pub(crate) async fn lookup_sids(&mut self, h: &PolicyHandle, sids: &[Sid]) -> Result<Vec<Option<Principal>>> {
        let sizes: Vec<usize> = sids.iter().map(sid_wire_size).collect();
        let mut out = Vec::with_capacity(sids.len());
        for range in batches(&sizes, self.max_stub.saturating_sub(64))? {
            let batch = &sids[range];
            let stub = self.call(OP_LOOKUP_SIDS, &lookup_sids_stub(h, batch)).await?;
            out.extend(parse_lookup_sids(&stub, batch)?);
        }
        Ok(out)
    }

    /// Looks up `names` in as many calls as needed.
    async fn lookup_names(&mut self, h: &PolicyHandle, names: &[Vec<u16>]) -> Result<Vec<Option<NameLookup>>> {
        let sizes: Vec<usize> = names.iter().map(|n| name_wire_size(n)).collect();
        let mut out = Vec::with_capacity(names.len());
        for range in batches(&sizes, self.max_stub.saturating_sub(64))? {
            let batch = &names[range];
            let stub = self.call(OP_LOOKUP_NAMES, &lookup_names_stub(h, batch)).await?;
            out.extend(parse_lookup_names(&stub, batch.len())?);
        }
        Ok(out)
    }

    /// Opens a bound pipe and a policy handle for lookups.
    pub(crate) async fn open_with_policy(cfg: &SmbConfig, frag: u16) -> Result<(LsaPipe, PolicyHandle)> {
        let mut lsa = LsaPipe::open(cfg, frag).await?;
        let h = lsa.open_policy().await?;
        Ok((lsa, h))
    }

    /// Closes the policy handle (when the pipe is still usable), then the pipe and the
    /// connection in the background: the caller has its answer.
    pub(crate) async fn finish(mut self, h: &PolicyHandle, usable: bool) {
        if usable {
            if let Err(e) = self.close_policy(h).await {
                debug!(error = %e, "LsarClose failed (the handle goes with the connection)");
            }
        }
        let LsaPipe { pipe, _tree, _session, connection, .. } = self;
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(5), async {
                    let _ = pipe.close().await;
                    drop((_tree, _session));
                    let _ = connection.close().await;
                })
                .await;
            });
        }
    }
}

impl SmbClient {
    /// Resolves SIDs (`"S-1-5-21-..."`) to principals, in the same order; `None` for a SID the
    /// server cannot map (STATUS_SOME_NOT_MAPPED / STATUS_NONE_MAPPED are not errors).
    ///
    /// Asks the server's LSA (`\pipe\lsarpc`) over a short-lived connection of its own, at most
    /// 20 SIDs per RPC request, retried once on a fresh connection if that one broke. Errors: a
    /// string that is not a SID is [`SmbError::Other`] (nothing is sent); an account that may
    /// not open the LSA policy is [`SmbError::AccessDenied`]; a refused bind, an RPC fault, an
    /// unexpected status or a garbled response is [`SmbError::Rpc`] (`SMB_RPC_FAILED`);
    /// connecting fails as [`SmbClient::connect`] does.
    ///
    /// ```no_run
    /// # async fn demo(client: smb_layer::SmbClient) -> smb_layer::Result<()> {
    /// let found = client.lookup_sids(&["S-1-1-0".to_string()]).await?;
    /// assert_eq!(found[0].as_ref().map(|p| p.qualified_name()), Some("Everyone".to_string()));
    /// # Ok(()) }
    /// ```
    pub async fn lookup_sids(&self, sids: &[String]) -> Result<Vec<Option<Principal>>> {
        if sids.is_empty() {
            return Ok(Vec::new());
        }
        let parsed = sids
            .iter()
            .map(|s| Sid::parse(s).ok_or_else(|| SmbError::other(format!("not a SID: {s:?}"))))
            .collect::<Result<Vec<Sid>>>()?;
        self.retrying(|| self.lookup_sids_once(&parsed)).await
    }

    async fn lookup_sids_once(&self, sids: &[Sid]) -> Result<Vec<Option<Principal>>> {
        let _permit = self.inner.ops.acquire().await.map_err(|_| SmbError::other("client closed"))?;
        let (mut lsa, h) = LsaPipe::open_with_policy(&self.inner.cfg, PROPOSED_FRAG).await?;
        let res = lsa.lookup_sids(&h, sids).await;
        lsa.finish(&h, res.is_ok()).await;
        res
    }

    /// Resolves names (`"CORP\\alice"`, `"alice"`, `"finance"`) to principals, in the same order;
    /// `None` when the server does not know the name. The returned names are the server's
    /// spelling (a second lookup of the SIDs found), so `"ALICE"` comes back as `CORP\alice`.
    /// Errors as for [`SmbClient::lookup_sids`].
    pub async fn lookup_names(&self, names: &[String]) -> Result<Vec<Option<Principal>>> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let wire: Vec<Vec<u16>> = names.iter().map(|n| n.encode_utf16().collect()).collect();
        let found = self.retrying(|| self.lookup_names_once(&wire)).await?;
        Ok(found
            .into_iter()
            .zip(names)
            .map(|(f, asked)| {
                f.map(|(f, canonical)| match canonical {
                    Some(p) => Principal { kind: f.kind, ..p },
                    // Not mapped back (should not happen): keep what the name said.
                    None => Principal {
                        sid: f.sid.to_string(),
                        domain: f.domain,
                        name: asked.rsplit('\\').next().unwrap_or(asked).to_string(),
                        kind: f.kind,
                    },
                })
            })
            .collect())
    }

    /// LookupNames, then LookupSids of what was found (for the server's spelling of the names).
    async fn lookup_names_once(&self, names: &[Vec<u16>]) -> Result<Vec<Option<(NameLookup, Option<Principal>)>>> {
        let _permit = self.inner.ops.acquire().await.map_err(|_| SmbError::other("client closed"))?;
        let (mut lsa, h) = LsaPipe::open_with_policy(&self.inner.cfg, PROPOSED_FRAG).await?;
        let res = async {
            let found = lsa.lookup_names(&h, names).await?;
            let sids: Vec<Sid> = found.iter().flatten().map(|f| f.sid.clone()).collect();
            let mut canonical = lsa.lookup_sids(&h, &sids).await?.into_iter();
            Ok(found.into_iter().map(|f| f.map(|f| (f, canonical.next().flatten()))).collect())
        }
        .await;
        lsa.finish(&h, res.is_ok()).await;
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_offers_lsa_with_ndr20_only() {
        let p = bind_pdu(2, 4280);
        let expected: Vec<u8> = [
            &[5, 0, 11, 3, 0x10, 0, 0, 0, 72, 0, 0, 0, 2, 0, 0, 0][..],
            &[0xb8, 0x10, 0xb8, 0x10, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0],
            &LSA_SYNTAX,
            &NDR20_SYNTAX,
        ]
        .concat();
        assert_eq!(p, expected);
    }

    #[test]
    fn batches_respect_count_and_size() {
        assert_eq!(batches(&[10; 45], 10_000).unwrap(), vec![0..20, 20..40, 40..45]);
        assert_eq!(batches(&[40, 40, 40, 30], 100).unwrap(), vec![0..2, 2..4]);
        assert!(batches(&[10, 200], 100).is_err());
        assert!(batches(&[], 100).unwrap().is_empty());
    }

    /// A policy handle Samba 4.17 returned.
    const HANDLE: PolicyHandle = [
        0x01, 0x00, 0x00, 0x00, 0x37, 0x69, 0x74, 0xdd, 0xf4, 0x75, 0x10, 0x40, 0xba, 0x27, 0x4c, 0x64, 0x8d, 0xf5,
        0x3e, 0x58,
    ];
    const ALICE: &str = "S-1-5-21-2709805971-2538437169-3570642216-1001";

    fn sids(v: &[&str]) -> Vec<Sid> {
        v.iter().map(|s| Sid::parse(s).unwrap()).collect()
    }

    #[test]
    fn lookup_sids_request_encodes_byte_exactly() {
        let stub = lookup_sids_stub(&HANDLE, &sids(&["S-1-1-0", ALICE, "S-1-5-21-1-2-3-4"]));
        #[rustfmt::skip]
        let expected: Vec<u8> = [
            &HANDLE[..],
            &[3, 0, 0, 0, 0x00, 0x00, 0x02, 0x00], // Entries, SidInfo pointer
            &[3, 0, 0, 0], // conformance
            &[0x04, 0x00, 0x02, 0x00, 0x08, 0x00, 0x02, 0x00, 0x0c, 0x00, 0x02, 0x00], // three Sid pointers
            &[1, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0], // S-1-1-0
            &[5, 0, 0, 0, 1, 5, 0, 0, 0, 0, 0, 5, 0x15, 0, 0, 0, 0x93, 0x5b, 0x84, 0xa1, 0x31, 0x7a, 0x4d, 0x97,
              0x28, 0xad, 0xd3, 0xd4, 0xe9, 0x03, 0, 0], // alice
            &[5, 0, 0, 0, 1, 5, 0, 0, 0, 0, 0, 5, 0x15, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0],
            &[0, 0, 0, 0, 0, 0, 0, 0], // TranslatedNames: 0 entries, NULL
            &[1, 0, 0, 0], // LookupLevel (16 bits) + padding
            &[0, 0, 0, 0], // MappedCount
        ]
        .concat();
        assert_eq!(stub, expected);
        let pdu = request_pdu(5, OP_LOOKUP_SIDS, &stub);
        assert_eq!(pdu[..24], [5, 0, 0, 3, 0x10, 0, 0, 0, 0xa4, 0, 0, 0, 5, 0, 0, 0, 0x8c, 0, 0, 0, 0, 0, 15, 0]);
    }

    #[test]
    fn lookup_names_request_encodes_byte_exactly() {
        let names: Vec<Vec<u16>> = ["CORP\\bob", ""].iter().map(|n| n.encode_utf16().collect()).collect();
        let stub = lookup_names_stub(&HANDLE, &names);
        #[rustfmt::skip]
        let expected: Vec<u8> = [
            &HANDLE[..],
            &[2, 0, 0, 0, 2, 0, 0, 0], // Count, conformance
            &[16, 0, 16, 0, 0x00, 0x00, 0x02, 0x00, 0, 0, 0, 0, 0x04, 0x00, 0x02, 0x00], // two RPC_UNICODE_STRINGs
            &[8, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0],
            &[b'C', 0, b'O', 0, b'R', 0, b'P', 0, b'\\', 0, b'b', 0, b'o', 0, b'b', 0],
            &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], // the empty name's array
            &[0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0],
        ]
        .concat();
        assert_eq!(stub, expected);
    }

    /// Samba 4.17's answer to [`lookup_sids_request_encodes_byte_exactly`]'s request.
    #[rustfmt::skip]
    const LOOKUP_SIDS_RESPONSE: [u8; 332] = [
        0x10, 0x00, 0x02, 0x00, 0x03, 0x00, 0x00, 0x00, 0x14, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00, 0x00,
        0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x18, 0x00, 0x02, 0x00, 0x1c, 0x00, 0x02, 0x00,
        0x08, 0x00, 0x0a, 0x00, 0x20, 0x00, 0x02, 0x00, 0x24, 0x00, 0x02, 0x00, 0x00, 0x00, 0x02, 0x00,
        0x28, 0x00, 0x02, 0x00, 0x2c, 0x00, 0x02, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,
        0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x43, 0x00, 0x4f, 0x00,
        0x52, 0x00, 0x50, 0x00, 0x04, 0x00, 0x00, 0x00, 0x01, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x05,
        0x15, 0x00, 0x00, 0x00, 0x93, 0x5b, 0x84, 0xa1, 0x31, 0x7a, 0x4d, 0x97, 0x28, 0xad, 0xd3, 0xd4,
        0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00,
        0x01, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x05, 0x15, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00,
        0x02, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x30, 0x00, 0x02, 0x00,
        0x03, 0x00, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00, 0x10, 0x00, 0x10, 0x00, 0x34, 0x00, 0x02, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x0a, 0x00, 0x0a, 0x00, 0x38, 0x00, 0x02, 0x00,
        0x01, 0x00, 0x00, 0x00, 0x08, 0x00, 0x00, 0x00, 0x20, 0x00, 0x20, 0x00, 0x3c, 0x00, 0x02, 0x00,
        0xff, 0xff, 0xff, 0xff, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x08, 0x00, 0x00, 0x00,
        0x45, 0x00, 0x76, 0x00, 0x65, 0x00, 0x72, 0x00, 0x79, 0x00, 0x6f, 0x00, 0x6e, 0x00, 0x65, 0x00,
        0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00, 0x61, 0x00, 0x6c, 0x00,
        0x69, 0x00, 0x63, 0x00, 0x65, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x10, 0x00, 0x00, 0x00, 0x53, 0x00, 0x2d, 0x00, 0x31, 0x00, 0x2d, 0x00, 0x35, 0x00, 0x2d, 0x00,
        0x32, 0x00, 0x31, 0x00, 0x2d, 0x00, 0x31, 0x00, 0x2d, 0x00, 0x32, 0x00, 0x2d, 0x00, 0x33, 0x00,
        0x2d, 0x00, 0x34, 0x00, 0x02, 0x00, 0x00, 0x00, 0x07, 0x01, 0x00, 0x00,
    ];

    /// Samba 4.17's answer to LookupNames of `CORP\finance`, `nobody` (a Unix account outside
    /// passdb) and `Everyone`.
    #[rustfmt::skip]
    const LOOKUP_NAMES_RESPONSE: [u8; 232] = [
        0x0c, 0x00, 0x02, 0x00, 0x03, 0x00, 0x00, 0x00, 0x10, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00, 0x00,
        0x03, 0x00, 0x00, 0x00, 0x08, 0x00, 0x0a, 0x00, 0x14, 0x00, 0x02, 0x00, 0x18, 0x00, 0x02, 0x00,
        0x12, 0x00, 0x14, 0x00, 0x1c, 0x00, 0x02, 0x00, 0x20, 0x00, 0x02, 0x00, 0x00, 0x00, 0x02, 0x00,
        0x24, 0x00, 0x02, 0x00, 0x28, 0x00, 0x02, 0x00, 0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x04, 0x00, 0x00, 0x00, 0x43, 0x00, 0x4f, 0x00, 0x52, 0x00, 0x50, 0x00, 0x04, 0x00, 0x00, 0x00,
        0x01, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x05, 0x15, 0x00, 0x00, 0x00, 0x93, 0x5b, 0x84, 0xa1,
        0x31, 0x7a, 0x4d, 0x97, 0x28, 0xad, 0xd3, 0xd4, 0x0a, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x09, 0x00, 0x00, 0x00, 0x55, 0x00, 0x4e, 0x00, 0x49, 0x00, 0x58, 0x00, 0x20, 0x00, 0x55, 0x00,
        0x53, 0x00, 0x45, 0x00, 0x52, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x01, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x16, 0x01, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,
        0x03, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x02, 0x00, 0x03, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00,
        0xeb, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0xfe, 0xff, 0x00, 0x00,
        0x01, 0x00, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00,
        0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    ];

    #[test]
    fn captured_lookup_sids_response_decodes_exactly() {
        let asked = sids(&["S-1-1-0", ALICE, "S-1-5-21-1-2-3-4"]);
        let found = parse_lookup_sids(&LOOKUP_SIDS_RESPONSE, &asked).unwrap();
        let p = |sid: &str, domain: &str, name: &str, kind| {
            Some(Principal { sid: sid.into(), domain: domain.into(), name: name.into(), kind })
        };
        assert_eq!(
            found,
            vec![p("S-1-1-0", "", "Everyone", SidKind::WellKnownGroup), p(ALICE, "CORP", "alice", SidKind::User), None]
        );
        // The raw view: Samba names the unknown SID after itself, in a nameless domain.
        let mut d = Decoder::new(&LOOKUP_SIDS_RESPONSE);
        let domains = referenced_domains(&mut d).unwrap();
        assert_eq!(
            domains,
            vec![
                RefDomain { name: "".into(), sid: Sid::parse("S-1-1") },
                RefDomain { name: "CORP".into(), sid: Sid::parse("S-1-5-21-2709805971-2538437169-3570642216") },
                RefDomain { name: "".into(), sid: Sid::parse("S-1-5-21-1-2-3") },
            ]
        );
        let (names, status) = decode_lookup_sids(&mut Decoder::new(&LOOKUP_SIDS_RESPONSE), 3).unwrap();
        assert_eq!(status, STATUS_SOME_NOT_MAPPED);
        assert_eq!(names[2], None);
    }

    #[test]
    fn captured_lookup_names_response_decodes_exactly() {
        let found = parse_lookup_names(&LOOKUP_NAMES_RESPONSE, 3).unwrap();
        let hit = |sid: &str, kind, domain: &str| {
            Some(NameLookup { sid: Sid::parse(sid).unwrap(), kind, domain: domain.into() })
        };
        assert_eq!(
            found,
            vec![
                hit("S-1-5-21-2709805971-2538437169-3570642216-1003", SidKind::Group, "CORP"),
                hit("S-1-22-1-65534", SidKind::User, "UNIX USER"),
                hit("S-1-1-0", SidKind::WellKnownGroup, ""),
            ]
        );
    }

    #[test]
    fn garbled_responses_are_errors_never_panics() {
        let asked = sids(&["S-1-1-0", ALICE, "S-1-5-21-1-2-3-4"]);
        for len in 0..LOOKUP_SIDS_RESPONSE.len() - 4 {
            assert!(parse_lookup_sids(&LOOKUP_SIDS_RESPONSE[..len], &asked).is_err(), "truncated to {len}");
        }
        for len in 0..LOOKUP_NAMES_RESPONSE.len() - 4 {
            assert!(parse_lookup_names(&LOOKUP_NAMES_RESPONSE[..len], 3).is_err(), "truncated to {len}");
        }
        // Every single-byte corruption: an error or some answer, but no panic.
        for i in 0..LOOKUP_SIDS_RESPONSE.len() {
            for v in [0x00, 0x01, 0x7f, 0x80, 0xff] {
                let mut b = LOOKUP_SIDS_RESPONSE;
                b[i] = v;
                let _ = parse_lookup_sids(&b, &asked);
                let mut b = LOOKUP_NAMES_RESPONSE;
                b[i % LOOKUP_NAMES_RESPONSE.len()] = v;
                let _ = parse_lookup_names(&b, 3);
            }
        }
        // An answer for a different number of SIDs than asked.
        assert!(parse_lookup_sids(&LOOKUP_SIDS_RESPONSE, &asked[..2]).is_err());
        // An error status is an error, NONE_MAPPED is not.
        let mut denied = LOOKUP_SIDS_RESPONSE;
        denied[328..].copy_from_slice(&STATUS_ACCESS_DENIED.to_le_bytes());
        assert!(matches!(parse_lookup_sids(&denied, &asked), Err(SmbError::AccessDenied { .. })));
        let mut none = LOOKUP_SIDS_RESPONSE;
        none[328..].copy_from_slice(&STATUS_NONE_MAPPED.to_le_bytes());
        assert_eq!(parse_lookup_sids(&none, &asked).unwrap(), vec![None, None, None]);
    }

    #[test]
    fn fragments_are_reassembled_and_checked() {
        let frag = |flags: u8, call_id: u32, stub: &[u8]| {
            let mut p = header(PTYPE_RESPONSE, flags, REQUEST_HEADER + stub.len(), call_id);
            p.extend_from_slice(&(stub.len() as u32).to_le_bytes());
            p.extend_from_slice(&[0, 0, 0, 0]);
            p.extend_from_slice(stub);
            p
        };
        let mut r = Reassembly::default();
        r.feed(&frag(PFC_FIRST_FRAG, 7, b"abcd"), 7).unwrap();
        assert!(!r.done);
        r.feed(&[frag(0, 7, b"efgh"), frag(PFC_LAST_FRAG, 7, b"ij")].concat(), 7).unwrap();
        assert!(r.done);
        assert_eq!(r.stub, b"abcdefghij");
        // Wrong call, missing first fragment, data after the last, truncated, a fault.
        assert!(Reassembly::default().feed(&frag(3, 8, b"x"), 7).is_err());
        assert!(Reassembly::default().feed(&frag(PFC_LAST_FRAG, 7, b"x"), 7).is_err());
        assert!(Reassembly::default().feed(&[frag(3, 7, b"x"), frag(3, 7, b"y")].concat(), 7).is_err());
        let whole = frag(3, 7, b"xyz");
        for len in 1..whole.len() {
            assert!(Reassembly::default().feed(&whole[..len], 7).is_err(), "{len}");
        }
        let mut fault = header(PTYPE_FAULT, 3, 32, 7);
        fault.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0x02, 0x00, 0x01, 0x1c, 0, 0, 0, 0]);
        let err = Reassembly::default().feed(&fault, 7).unwrap_err();
        assert_eq!(err.code(), "SMB_RPC_FAILED");
        assert!(err.to_string().contains("0x1c010002"), "{err}");
    }

    #[test]
    fn bind_ack_from_samba_is_understood_and_a_nak_is_refused() {
        // Samba 4.17's bind_ack to bind_pdu(2, 4280): port "\\pipe\\lsass", NDR20 accepted.
        #[rustfmt::skip]
        let ack: [u8; 68] = [
            0x05, 0x00, 0x0c, 0x03, 0x10, 0x00, 0x00, 0x00, 0x44, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00,
            0xb8, 0x10, 0xb8, 0x10, 0xc6, 0x41, 0x00, 0x00, 0x0c, 0x00, 0x5c, 0x70, 0x69, 0x70, 0x65, 0x5c,
            0x6c, 0x73, 0x61, 0x73, 0x73, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x04, 0x5d, 0x88, 0x8a, 0xeb, 0x1c, 0xc9, 0x11, 0x9f, 0xe8, 0x08, 0x00, 0x2b, 0x10, 0x48, 0x60,
            0x02, 0x00, 0x00, 0x00,
        ];
        assert_eq!(parse_bind_ack(&ack, 2).unwrap(), 4280);
        assert!(parse_bind_ack(&ack, 3).is_err());
        let mut refused = ack;
        refused[44..46].copy_from_slice(&2u16.to_le_bytes()); // provider rejection
        assert!(parse_bind_ack(&refused, 2).is_err());
        let mut nak = header(PTYPE_BIND_NAK, 3, 18, 2);
        nak.extend_from_slice(&[4, 0]);
        assert_eq!(parse_bind_ack(&nak, 2).unwrap_err().code(), "SMB_RPC_FAILED");
        for len in 0..ack.len() {
            assert!(parse_bind_ack(&ack[..len], 2).is_err());
        }
    }

    #[test]
    fn qualified_name_omits_an_empty_domain() {
        let p =
            |d: &str, n: &str| Principal { sid: String::new(), domain: d.into(), name: n.into(), kind: SidKind::User };
        assert_eq!(p("CORP", "alice").qualified_name(), "CORP\\alice");
        assert_eq!(p("", "Everyone").qualified_name(), "Everyone");
        assert_eq!(p("CORP", "").qualified_name(), "CORP");
    }
}

/// Against a real Samba (needs root, like the integration tests): what only the internals can
/// show.
#[cfg(test)]
mod live {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_response_in_several_fragments_is_reassembled() {
        let s = samba_harness::SambaServer::start().unwrap();
        let (domain, user, password) = s.service_account();
        let cfg = SmbConfig::new(s.host(), s.port(), domain, user, password, s.share_name());
        let wk = ["S-1-5-32-544", "S-1-5-32-545", "S-1-5-32-546", "S-1-5-11", "S-1-3-0", "S-1-5-2", "S-1-1-0"];
        let sids: Vec<Sid> = (0..40).map(|i| Sid::parse(wk[i % wk.len()]).unwrap()).collect();

        // Fragments of 2048 bytes (Samba's minimum): 40 names need two or more.
        let (mut small, h) = LsaPipe::open_with_policy(&cfg, 2048).await.unwrap();
        assert_eq!(small.max_stub, 2048 - REQUEST_HEADER);
        let stub = small.call(OP_LOOKUP_SIDS, &lookup_sids_stub(&h, &sids)).await.unwrap();
        assert!(small.continuations >= 1, "the response was not fragmented");
        assert!(stub.len() > 2048, "{}", stub.len());
        let fragmented = parse_lookup_sids(&stub, &sids).unwrap();
        // The pipe is still in step: the next call works.
        let again = small.lookup_sids(&h, &sids[..3]).await.unwrap();
        small.finish(&h, true).await;

        let (mut large, h) = LsaPipe::open_with_policy(&cfg, PROPOSED_FRAG).await.unwrap();
        let whole = large.lookup_sids(&h, &sids).await.unwrap();
        assert_eq!(large.continuations, 0);
        large.finish(&h, true).await;
        assert_eq!(fragmented, whole);
        assert_eq!(again[..], whole[..3]);
        assert_eq!(whole[0].as_ref().unwrap().qualified_name(), "BUILTIN\\Administrators");
    }
}
