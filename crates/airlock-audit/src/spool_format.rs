//! The spool's on-disk encoding: a header, then length-prefixed, checksummed binary entries.
//!
//! ```text
//! file   = MAGIC version:u16 entry*
//! entry  = len:u32 crc:u32 body[len]        crc = CRC-32 (IEEE) of len ‖ body
//! body   = key:u64 present:u32 time:i64 kind:str
//!          [refers_to:u64] [agent:str] [on_behalf_of:str] [task:str] [session:str]
//!          [server:str] [method:str] [target:str] [request_id:str] [ref_seq:u64]
//!          [args_digest:str] [args_redacted:json] [decision:str] reasons
//!          [policy_digest:str] [status:str] [duration_us:u64] [detail:json]
//! reasons = count:u32 str*
//! str    = len:u32 UTF-8 bytes;  json = str holding JSON text
//! ```
//!
//! Integers are little-endian; bit `i` of `present` says whether the `i`-th bracketed field
//! is there. Encoding is a few copies into a reused buffer (the gateway pays it on every
//! call), where JSON text cost a formatter pass per field and an escape scan per string.
//!
//! Decoding is for recovery, of files a dead process left: it trusts nothing. An entry whose
//! frame runs past the end of the file is a torn last write (its `write(2)` never returned,
//! so nothing acted on it) and ends the spool quietly; a complete frame with a bad checksum,
//! a malformed body or a record the store would refuse is damage, and ends it too (nothing
//! after it can be framed with confidence). Spools of the previous build, one JSON object per
//! line and no header, are still read.

use serde_json::Value;

use crate::{AuditError, Decision, NewRecord, RecordKind, ResultStatus};

/// The first bytes of every binary spool.
pub(crate) const MAGIC: &[u8; 14] = b"AIRLOCK-SPOOL\0";
/// The encoding this build writes and reads.
pub(crate) const VERSION: u16 = 2;
/// `MAGIC` and `VERSION`: what a freshly created or cleared spool holds.
pub(crate) const HEADER_LEN: usize = MAGIC.len() + 2;

/// The header of a spool in this build's encoding.
pub(crate) fn header() -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..MAGIC.len()].copy_from_slice(MAGIC);
    h[MAGIC.len()..].copy_from_slice(&VERSION.to_le_bytes());
    h
}

/// One spooled record: its key in the spool, the key of the record it refers to (a result's
/// call, resolved to a `seq` when folded), and the record.
#[derive(Debug, Clone, PartialEq)]
pub struct SpooledRecord {
    pub key: u64,
    pub refers_to: Option<u64>,
    pub record: NewRecord,
}

/// How the readable part of a spool ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpoolEnd {
    /// Every byte belonged to a whole, valid entry.
    Complete,
    /// The last entry, from `offset`, is cut short: its write never finished.
    Torn { offset: usize },
    /// The entry at `offset` is whole but invalid; it and everything after it are dropped.
    Damaged { offset: usize, reason: &'static str },
    /// A header of an encoding this build does not know; nothing was read.
    Unsupported { version: u16 },
}

/// What [`decode_spool`] read.
#[derive(Debug, Clone, PartialEq)]
pub struct SpoolContents {
    /// The valid entries, in spool order.
    pub records: Vec<SpooledRecord>,
    pub end: SpoolEnd,
}

// Bits of `present`, in body order.
const REFERS_TO: u32 = 1 << 0;
const AGENT: u32 = 1 << 1;
const ON_BEHALF_OF: u32 = 1 << 2;
const TASK: u32 = 1 << 3;
const SESSION: u32 = 1 << 4;
const SERVER: u32 = 1 << 5;
const METHOD: u32 = 1 << 6;
const TARGET: u32 = 1 << 7;
const REQUEST_ID: u32 = 1 << 8;
const REF_SEQ: u32 = 1 << 9;
const ARGS_DIGEST: u32 = 1 << 10;
const ARGS_REDACTED: u32 = 1 << 11;
const DECISION: u32 = 1 << 12;
const POLICY_DIGEST: u32 = 1 << 13;
const STATUS: u32 = 1 << 14;
const DURATION_US: u32 = 1 << 15;
const DETAIL: u32 = 1 << 16;
const KNOWN: u32 = (1 << 17) - 1;

/// The frame before each body: `len` and `crc`.
const FRAME_LEN: usize = 8;

fn bit(on: bool, b: u32) -> u32 {
    if on {
        b
    } else {
        0
    }
}

fn present(refers_to: Option<u64>, r: &NewRecord) -> u32 {
    bit(refers_to.is_some(), REFERS_TO)
        | bit(r.agent.is_some(), AGENT)
        | bit(r.on_behalf_of.is_some(), ON_BEHALF_OF)
        | bit(r.task.is_some(), TASK)
        | bit(r.session.is_some(), SESSION)
        | bit(r.server.is_some(), SERVER)
        | bit(r.method.is_some(), METHOD)
        | bit(r.target.is_some(), TARGET)
        | bit(r.request_id.is_some(), REQUEST_ID)
        | bit(r.ref_seq.is_some(), REF_SEQ)
        | bit(r.args_digest.is_some(), ARGS_DIGEST)
        | bit(r.args_redacted.is_some(), ARGS_REDACTED)
        | bit(r.decision.is_some(), DECISION)
        | bit(r.policy_digest.is_some(), POLICY_DIGEST)
        | bit(r.status.is_some(), STATUS)
        | bit(r.duration_us.is_some(), DURATION_US)
        | bit(r.detail.is_some(), DETAIL)
}

/// Appends one framed entry to `buf`. On error `buf` is left as it was.
pub(crate) fn encode_entry(
    buf: &mut Vec<u8>,
    key: u64,
    refers_to: Option<u64>,
    r: &NewRecord,
) -> Result<(), AuditError> {
    let start = buf.len();
    let result = encode_body(buf, start, key, refers_to, r);
    if result.is_err() {
        buf.truncate(start);
    }
    result
}

fn encode_body(
    buf: &mut Vec<u8>,
    start: usize,
    key: u64,
    refers_to: Option<u64>,
    r: &NewRecord,
) -> Result<(), AuditError> {
    buf.extend_from_slice(&[0u8; FRAME_LEN]); // len and crc, filled in below
    buf.extend_from_slice(&key.to_le_bytes());
    buf.extend_from_slice(&present(refers_to, r).to_le_bytes());
    buf.extend_from_slice(&r.time_unix_ns.to_le_bytes());
    put_str(buf, r.kind.as_str())?;
    if let Some(k) = refers_to {
        buf.extend_from_slice(&k.to_le_bytes());
    }
    for s in [
        &r.agent,
        &r.on_behalf_of,
        &r.task,
        &r.session,
        &r.server,
        &r.method,
        &r.target,
        &r.request_id,
    ]
    .into_iter()
    .flatten()
    {
        put_str(buf, s)?;
    }
    if let Some(v) = r.ref_seq {
        buf.extend_from_slice(&v.to_le_bytes());
    }
    if let Some(s) = &r.args_digest {
        put_str(buf, s)?;
    }
    if let Some(v) = &r.args_redacted {
        put_json(buf, v)?;
    }
    if let Some(d) = r.decision {
        put_str(buf, d.as_str())?;
    }
    put_len(buf, r.reasons.len())?;
    for s in &r.reasons {
        put_str(buf, s)?;
    }
    if let Some(s) = &r.policy_digest {
        put_str(buf, s)?;
    }
    if let Some(s) = r.status {
        put_str(buf, s.as_str())?;
    }
    if let Some(v) = r.duration_us {
        buf.extend_from_slice(&v.to_le_bytes());
    }
    if let Some(v) = &r.detail {
        put_json(buf, v)?;
    }
    let body_len = buf.len() - start - FRAME_LEN;
    let len = u32::try_from(body_len).map_err(|_| too_long("the record"))?;
    let crc = entry_crc(len, &buf[start + FRAME_LEN..]);
    buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    buf[start + 4..start + FRAME_LEN].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// An entry's checksum: CRC-32 of its length and body, so a damaged length is caught too.
fn entry_crc(len: u32, body: &[u8]) -> u32 {
    let mut crc = crc32fast::Hasher::new();
    crc.update(&len.to_le_bytes());
    crc.update(body);
    crc.finalize()
}

fn too_long(what: &str) -> AuditError {
    AuditError::InvalidRecord {
        index: 0,
        reason: format!("{what} is too long for the spool (over 4 GiB)"),
    }
}

#[inline]
fn put_len(buf: &mut Vec<u8>, len: usize) -> Result<(), AuditError> {
    let len = u32::try_from(len).map_err(|_| too_long("a field"))?;
    buf.extend_from_slice(&len.to_le_bytes());
    Ok(())
}

#[inline]
fn put_str(buf: &mut Vec<u8>, s: &str) -> Result<(), AuditError> {
    put_len(buf, s.len())?;
    buf.extend_from_slice(s.as_bytes());
    Ok(())
}

/// JSON text, written in place behind a length patched in afterwards.
fn put_json(buf: &mut Vec<u8>, v: &Value) -> Result<(), AuditError> {
    let at = buf.len();
    buf.extend_from_slice(&[0u8; 4]);
    serde_json::to_writer(&mut *buf, v).map_err(|e| AuditError::InvalidRecord {
        index: 0,
        reason: format!("cannot encode for the spool: {e}"),
    })?;
    let len = u32::try_from(buf.len() - at - 4).map_err(|_| too_long("a JSON field"))?;
    buf[at..at + 4].copy_from_slice(&len.to_le_bytes());
    Ok(())
}

/// A whole spool as it would be on disk: the header and `records` in order.
pub fn encode_spool(records: &[SpooledRecord]) -> Result<Vec<u8>, AuditError> {
    let mut buf = header().to_vec();
    for e in records {
        encode_entry(&mut buf, e.key, e.refers_to, &e.record)?;
    }
    Ok(buf)
}

/// Reads the entries of a spool file's bytes, in either encoding; never fails, never panics:
/// what cannot be read ends the result and [`SpoolContents::end`] says why.
pub fn decode_spool(bytes: &[u8]) -> SpoolContents {
    let empty = |end| SpoolContents {
        records: Vec::new(),
        end,
    };
    let magic_part = bytes.len().min(MAGIC.len());
    if bytes.len() < HEADER_LEN && bytes[..magic_part] == MAGIC[..magic_part] {
        // Created, and the process died before or while writing the header.
        return empty(SpoolEnd::Complete);
    }
    let Some(rest) = bytes.strip_prefix(MAGIC.as_slice()) else {
        return decode_legacy(bytes);
    };
    let &[v0, v1, ..] = rest else {
        return empty(SpoolEnd::Complete); // unreachable: shorter files returned above
    };
    let version = u16::from_le_bytes([v0, v1]);
    if version != VERSION {
        return empty(SpoolEnd::Unsupported { version });
    }
    let mut records = Vec::new();
    let mut at = HEADER_LEN;
    let end = loop {
        let rest = &bytes[at..];
        if rest.is_empty() {
            break SpoolEnd::Complete;
        }
        let Some((len, crc)) = rest.get(..FRAME_LEN).map(|f| (u32_at(f, 0), u32_at(f, 4))) else {
            break SpoolEnd::Torn { offset: at };
        };
        let Some(body) = usize::try_from(len)
            .ok()
            .and_then(|len| rest.get(FRAME_LEN..FRAME_LEN.checked_add(len)?))
        else {
            break SpoolEnd::Torn { offset: at };
        };
        if entry_crc(len, body) != crc {
            break SpoolEnd::Damaged {
                offset: at,
                reason: "checksum mismatch",
            };
        }
        match decode_body(body) {
            Ok(e) => records.push(e),
            Err(reason) => break SpoolEnd::Damaged { offset: at, reason },
        }
        at += FRAME_LEN + body.len();
    };
    SpoolContents { records, end }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// A bounds-checked cursor over one entry's body.
struct Reader<'a> {
    bytes: &'a [u8],
}

type Parse<T> = Result<T, &'static str>;

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Parse<&'a [u8]> {
        if n > self.bytes.len() {
            return Err("a field runs past the end of its entry");
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }
    fn u32(&mut self) -> Parse<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Parse<u64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    /// A length-prefixed field's bytes.
    fn field(&mut self) -> Parse<&'a [u8]> {
        let len = usize::try_from(self.u32()?).map_err(|_| "a field is too long")?;
        self.take(len)
    }
    fn str(&mut self) -> Parse<String> {
        let b = self.field()?;
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| "a text field is not UTF-8")
    }
    fn opt_str(&mut self, present: u32, b: u32) -> Parse<Option<String>> {
        (present & b != 0).then(|| self.str()).transpose()
    }
    fn opt_u64(&mut self, present: u32, b: u32) -> Parse<Option<u64>> {
        (present & b != 0).then(|| self.u64()).transpose()
    }
    fn opt_json(&mut self, present: u32, b: u32) -> Parse<Option<Value>> {
        if present & b == 0 {
            return Ok(None);
        }
        let text = self.field()?;
        serde_json::from_slice(text)
            .map(Some)
            .map_err(|_| "a JSON field does not parse")
    }
}

fn decode_body(body: &[u8]) -> Parse<SpooledRecord> {
    let mut r = Reader { bytes: body };
    let key = r.u64()?;
    let p = r.u32()?;
    if p & !KNOWN != 0 {
        return Err("unknown fields");
    }
    // Two's complement, as written.
    let time_unix_ns = i64::from_le_bytes(r.u64()?.to_le_bytes());
    // A kind, decision or status this build does not know is a record it cannot write.
    let kind = RecordKind::from_name(&r.str()?).ok_or("an unknown record kind")?;
    let refers_to = r.opt_u64(p, REFERS_TO)?;
    let mut record = NewRecord::at(kind, time_unix_ns);
    record.agent = r.opt_str(p, AGENT)?;
    record.on_behalf_of = r.opt_str(p, ON_BEHALF_OF)?;
    record.task = r.opt_str(p, TASK)?;
    record.session = r.opt_str(p, SESSION)?;
    record.server = r.opt_str(p, SERVER)?;
    record.method = r.opt_str(p, METHOD)?;
    record.target = r.opt_str(p, TARGET)?;
    record.request_id = r.opt_str(p, REQUEST_ID)?;
    record.ref_seq = r.opt_u64(p, REF_SEQ)?;
    record.args_digest = r.opt_str(p, ARGS_DIGEST)?;
    record.args_redacted = r.opt_json(p, ARGS_REDACTED)?;
    record.decision = r
        .opt_str(p, DECISION)?
        .map(|d| Decision::from_name(&d).ok_or("an unknown decision"))
        .transpose()?;
    // Each reason takes at least its 4-byte length, so a huge count fails, not allocates.
    let count = r.u32()?;
    for _ in 0..count {
        let s = r.str()?;
        record.reasons.push(s);
    }
    record.policy_digest = r.opt_str(p, POLICY_DIGEST)?;
    record.status = r
        .opt_str(p, STATUS)?
        .map(|s| ResultStatus::from_name(&s).ok_or("an unknown status"))
        .transpose()?;
    record.duration_us = r.opt_u64(p, DURATION_US)?;
    record.detail = r.opt_json(p, DETAIL)?;
    if !r.bytes.is_empty() {
        return Err("bytes left over after the record");
    }
    // The writer validated it before spooling; one the store would refuse is damage.
    crate::store::validate(0, &record).map_err(|_| "the record breaks a store rule")?;
    Ok(SpooledRecord {
        key,
        refers_to,
        record,
    })
}

/// A spool of the previous build: one JSON entry per line. A line that does not parse (a torn
/// last line) is skipped, as that build did.
fn decode_legacy(bytes: &[u8]) -> SpoolContents {
    #[derive(serde::Deserialize)]
    struct Line {
        k: u64,
        #[serde(default)]
        refers_to: Option<u64>,
        r: NewRecord,
    }
    let records = bytes
        .split(|b| *b == b'\n')
        .filter_map(|line| serde_json::from_slice::<Line>(line).ok())
        .filter(|l| crate::store::validate(0, &l.r).is_ok())
        .map(|l| SpooledRecord {
            key: l.k,
            refers_to: l.refers_to,
            record: l.r,
        })
        .collect();
    SpoolContents {
        records,
        end: SpoolEnd::Complete,
    }
}
