//! Canonical JSON (RFC 8785, JSON Canonicalization Scheme) and SHA-256
//! digests over it, so that a digest names a value, not one spelling of it.
//!
//! The writer is generic over where the bytes go: [`canonical_json`] fills a
//! `Vec`, [`digest_json`] streams the same bytes straight into SHA-256 (it is
//! on every call's path, and the canonical text itself is never needed there).

use std::cmp::Ordering;

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
    hex_lower(&Sha256::digest(bytes).into())
}

/// `sha256_hex(canonical_json(v))`, without building the canonical text.
pub fn digest_json(v: &Value) -> String {
    let mut sink = HashSink::new();
    write_value(&mut sink, v);
    hex_lower(&sink.finish())
}

/// Where canonical bytes go.
trait Sink {
    fn put(&mut self, bytes: &[u8]);
    fn byte(&mut self, b: u8) {
        self.put(&[b]);
    }
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
    fn byte(&mut self, b: u8) {
        self.push(b);
    }
}

/// Feeds SHA-256 through a small buffer: the writer emits many 1–10 byte
/// pieces, and one hasher update per piece costs more than the copy.
struct HashSink {
    hasher: Sha256,
    buf: [u8; 128],
    len: usize,
}

impl HashSink {
    fn new() -> HashSink {
        HashSink {
            hasher: Sha256::new(),
            buf: [0; 128],
            len: 0,
        }
    }

    fn finish(mut self) -> [u8; 32] {
        self.hasher.update(&self.buf[..self.len]);
        self.hasher.finalize().into()
    }
}

impl Sink for HashSink {
    fn put(&mut self, bytes: &[u8]) {
        let end = self.len + bytes.len();
        if let Some(room) = self.buf.get_mut(self.len..end) {
            room.copy_from_slice(bytes);
            self.len = end;
            return;
        }
        self.hasher.update(&self.buf[..self.len]);
        self.len = 0;
        if bytes.len() >= self.buf.len() {
            self.hasher.update(bytes);
        } else {
            self.buf[..bytes.len()].copy_from_slice(bytes);
            self.len = bytes.len();
        }
    }
    fn byte(&mut self, b: u8) {
        if self.len == self.buf.len() {
            self.hasher.update(self.buf);
            self.len = 0;
        }
        self.buf[self.len] = b;
        self.len += 1;
    }
}

fn hex_lower(digest: &[u8; 32]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 64];
    for (pair, &b) in out.chunks_exact_mut(2).zip(digest) {
        pair[0] = HEX[usize::from(b >> 4)];
        pair[1] = HEX[usize::from(b & 0xf)];
    }
    // Only ASCII hex digits were written: the check cannot fail.
    String::from_utf8(out.to_vec()).unwrap_or_default()
}

fn write_value(out: &mut impl Sink, v: &Value) {
    match v {
        Value::Null => out.put(b"null"),
        Value::Bool(true) => out.put(b"true"),
        Value::Bool(false) => out.put(b"false"),
        Value::Number(n) => write_number(out, n),
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.byte(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.byte(b',');
                }
                write_value(out, item);
            }
            out.byte(b']');
        }
        Value::Object(map) => write_object(out, map),
    }
}

/// RFC 8785 key order: UTF-16 code units. It equals UTF-8 byte order except
/// for characters above U+FFFF against U+E000..U+FFFF.
fn utf16_cmp(a: &str, b: &str) -> Ordering {
    if a.is_ascii() && b.is_ascii() {
        a.as_bytes().cmp(b.as_bytes())
    } else {
        a.encode_utf16().cmp(b.encode_utf16())
    }
}

fn write_object(out: &mut impl Sink, map: &Map<String, Value>) {
    out.byte(b'{');
    // Map order is UTF-8 byte order (or insertion order with serde_json's
    // `preserve_order`), which is nearly always already the RFC 8785 order:
    // check it instead of sorting a copy of the entries.
    let mut keys = map.keys();
    let in_order = keys.next().is_none_or(|first| {
        keys.try_fold(first, |prev, k| {
            (utf16_cmp(prev, k) == Ordering::Less).then_some(k)
        })
        .is_some()
    });
    if in_order {
        write_entries(out, map.iter());
    } else {
        let mut entries: Vec<(&String, &Value)> = map.iter().collect();
        entries.sort_by(|(a, _), (b, _)| utf16_cmp(a, b));
        write_entries(out, entries.into_iter());
    }
    out.byte(b'}');
}

fn write_entries<'a>(out: &mut impl Sink, entries: impl Iterator<Item = (&'a String, &'a Value)>) {
    for (i, (key, value)) in entries.enumerate() {
        if i > 0 {
            out.byte(b',');
        }
        write_string(out, key);
        out.byte(b':');
        write_value(out, value);
    }
}

/// `JSON.stringify` string escaping: `"`, `\` and control characters only.
fn write_string(out: &mut impl Sink, s: &str) {
    out.byte(b'"');
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
                out.put(&bytes[start..i]);
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.put(&[
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[usize::from(b >> 4)],
                    HEX[usize::from(b & 0xf)],
                ]);
                start = i + 1;
                continue;
            }
            _ => continue,
        };
        out.put(&bytes[start..i]);
        out.put(escape);
        start = i + 1;
    }
    out.put(&bytes[start..]);
    out.byte(b'"');
}

fn write_number(out: &mut impl Sink, n: &Number) {
    if let Some(i) = n.as_i64() {
        if i < 0 {
            out.byte(b'-');
        }
        write_u64(out, i.unsigned_abs());
    } else if let Some(u) = n.as_u64() {
        write_u64(out, u);
    } else {
        // A serde_json Number is an i64, a u64 or a finite f64.
        let mut buf = String::with_capacity(32);
        write_es_double(&mut buf, n.as_f64().unwrap_or(0.0));
        out.put(buf.as_bytes());
    }
}

/// Decimal digits of `n`, without a formatter or an allocation.
fn write_u64(out: &mut impl Sink, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut at = buf.len();
    loop {
        at -= 1;
        // n % 10 < 10, so the cast cannot truncate.
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.put(&buf[at..]);
}

#[cfg(test)]
#[path = "canonical_tests.rs"]
mod tests;
