//! The hash chain: how one record's hash is computed from its stored columns.
//!
//! `hash = SHA-256(prev_hash ‖ "airlock-audit/v1\0" ‖ enc(field₁) ‖ … ‖ enc(field₂₀))`
//! where `prev_hash` is the previous record's hash as 64 lowercase hex bytes
//! (64 `0`s for the first record) and each field, in [`crate::store`] column
//! order starting with `seq` and `kind`, is encoded as
//!
//! - NULL: `0x00`
//! - integer: `0x01` ‖ 8-byte big-endian two's complement
//! - text: `0x02` ‖ 8-byte big-endian byte length ‖ the bytes
//!
//! A tagged, length-prefixed encoding is unambiguous (no two rows encode the
//! same), needs no allocation, and is computed from the *stored* column values,
//! so the verifier never has to re-serialize JSON to check a row: JSON columns
//! are hashed as the exact text stored.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// `prev_hash` of the first record.
pub(crate) const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Domain separation: a future encoding changes this string.
const DOMAIN: &[u8] = b"airlock-audit/v1\0";

/// One column value as it enters the hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Field<'a> {
    Null,
    Int(i64),
    Text(&'a [u8]),
}

impl<'a> Field<'a> {
    pub(crate) fn opt_str(v: Option<&'a str>) -> Field<'a> {
        v.map_or(Field::Null, |s| Field::Text(s.as_bytes()))
    }
    pub(crate) fn opt_int(v: Option<i64>) -> Field<'a> {
        v.map_or(Field::Null, Field::Int)
    }
}

/// The chain hash of one record, as 64 lowercase hex characters.
pub(crate) fn chain_hash(prev_hash: &[u8], fields: &[Field<'_>]) -> String {
    let mut h = Sha256::new();
    h.update(prev_hash);
    h.update(DOMAIN);
    for f in fields {
        match f {
            Field::Null => h.update([0u8]),
            Field::Int(i) => {
                h.update([1u8]);
                h.update(i.to_be_bytes());
            }
            Field::Text(t) => {
                h.update([2u8]);
                h.update((t.len() as u64).to_be_bytes());
                h.update(t);
            }
        }
    }
    hex::encode(h.finalize())
}

/// A deterministic JSON text for `v`: object keys sorted by byte order, no
/// whitespace. Used for the stored JSON columns and for hashing non-string
/// secrets. (RFC 8785 canonical form lives in `airlock-protocol`; the chain does
/// not depend on it because it hashes the stored text.)
pub(crate) fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => write_json_str(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (k, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json_str(k, out);
                out.push(':');
                write_canonical(item, out);
            }
            out.push('}');
        }
    }
}

/// A JSON array of strings (the `reasons` column).
pub(crate) fn write_str_array(items: &[String], out: &mut String) {
    out.push('[');
    for (i, s) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_json_str(s, out);
    }
    out.push(']');
}

/// JSON string escaping: `"`, `\` and control characters; everything else verbatim.
pub(crate) fn write_json_str(s: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let esc: Option<&str> = match b {
            b'"' => Some("\\\""),
            b'\\' => Some("\\\\"),
            b'\n' => Some("\\n"),
            b'\r' => Some("\\r"),
            b'\t' => Some("\\t"),
            0x08 => Some("\\b"),
            0x0c => Some("\\f"),
            0x00..=0x1f => None,
            _ => continue,
        };
        out.push_str(&s[start..i]);
        match esc {
            Some(e) => out.push_str(e),
            None => {
                out.push_str("\\u00");
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 0xf)]));
            }
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

#[cfg(test)]
#[path = "chain_tests.rs"]
mod tests;
