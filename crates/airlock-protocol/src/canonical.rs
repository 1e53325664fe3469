//! Canonical JSON (RFC 8785, JSON Canonicalization Scheme) and SHA-256
//! digests over it, so that a digest names a value, not one spelling of it.

use std::fmt::Write as _;

use serde_json::{Map, Number, Value};
use sha2::{Digest, Sha256};

use crate::es_number::write_es_double;

/// The RFC 8785 form of `v`: no whitespace, object keys sorted by their
/// UTF-16 code units, strings with the minimal escaping of ECMAScript's
/// `JSON.stringify`, numbers as ECMAScript's `Number.prototype.toString`.
///
/// One deliberate extension: integers held as `i64`/`u64` print exactly,
/// also beyond 2^53 (RFC 8785 would first round them to a double). Values
/// from [`parse_frame`](crate::parse_frame) never hold such integers.
pub fn canonical_json(v: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    write_value(&mut out, v);
    out
}

/// Lowercase hexadecimal SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// `sha256_hex(canonical_json(v))`.
pub fn digest_json(v: &Value) -> String {
    sha256_hex(&canonical_json(v))
}

fn write_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => write_number(out, n),
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, item);
            }
            out.push(b']');
        }
        Value::Object(map) => write_object(out, map),
    }
}

fn write_object(out: &mut Vec<u8>, map: &Map<String, Value>) {
    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
    // Map order is UTF-8 byte order (or insertion order with serde_json's
    // `preserve_order`); RFC 8785 wants UTF-16 code unit order, which differs
    // for characters above U+FFFF against U+E000..U+FFFF.
    entries.sort_by(|(a, _), (b, _)| {
        if a.is_ascii() && b.is_ascii() {
            a.as_bytes().cmp(b.as_bytes())
        } else {
            a.encode_utf16().cmp(b.encode_utf16())
        }
    });
    out.push(b'{');
    for (i, (key, value)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_string(out, key);
        out.push(b':');
        write_value(out, value);
    }
    out.push(b'}');
}

/// `JSON.stringify` string escaping: `"`, `\` and control characters only.
fn write_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\x08' => b"\\b",
            b'\t' => b"\\t",
            b'\n' => b"\\n",
            b'\x0c' => b"\\f",
            b'\r' => b"\\r",
            0x00..=0x1f => {
                out.extend_from_slice(&bytes[start..i]);
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
                start = i + 1;
                continue;
            }
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(escape);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

fn write_number(out: &mut Vec<u8>, n: &Number) {
    let mut buf = String::with_capacity(32);
    // Writing into a String cannot fail.
    let _ = if let Some(i) = n.as_i64() {
        write!(buf, "{i}")
    } else if let Some(u) = n.as_u64() {
        write!(buf, "{u}")
    } else {
        // A serde_json Number is an i64, a u64 or a finite f64.
        write_es_double(&mut buf, n.as_f64().unwrap_or(0.0));
        Ok(())
    };
    out.extend_from_slice(buf.as_bytes());
}

#[cfg(test)]
#[path = "canonical_tests.rs"]
mod tests;
