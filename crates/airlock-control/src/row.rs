//! One line of a breaker journal: `<time_ns> <calls> <items> <class>[ <key>]`.
//!
//! - A budget row: `<time> 1 <items> <class>` (a call) or `<time> 0 <n> <class>` (a result's
//!   items), `<class>` a `[breakers.<class>]` name.
//! - A reset marker: `<time> 0 0 !reset` (a resume: counters before it do not count).
//! - A rate row: `<bucket start> <calls> 0 !rate`, the agent's calls in that rate bucket.
//! - A fan-out row: `<time> 1 0 !fanout:<server>/<tool> <key>`, `<key>` the digest of the
//!   target arguments; the latest time of a key is the one that counts.
//!
//! A class is written with bytes up to the space, DEL and `%` as `%XX`: a tool name is the
//! agent's text, and a space or line break in it must not split a row or start a new one.
//! Budget class names never hold such bytes, so rows written before the escaping read the same.

use std::borrow::Cow;

use crate::cache::{FANOUT_PREFIX, RATE_CLASS, RESET_CLASS};

/// A row to append or apply, borrowed from whoever made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Row<'a> {
    pub(crate) class: &'a str,
    pub(crate) key: Option<&'a str>,
    pub(crate) time_ns: i64,
    pub(crate) calls: u64,
    pub(crate) items: u64,
}

/// A row read from a journal; the class is unescaped (borrowed unless it held an escape).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Parsed<'a> {
    pub(crate) class: Cow<'a, str>,
    pub(crate) key: Option<&'a str>,
    pub(crate) time_ns: i64,
    pub(crate) calls: u64,
    pub(crate) items: u64,
}

/// Appends `r` as one line.
pub(crate) fn encode(out: &mut Vec<u8>, r: &Row<'_>) {
    let mut num = itoa::Buffer::new();
    out.extend_from_slice(num.format(r.time_ns).as_bytes());
    out.push(b' ');
    out.extend_from_slice(num.format(r.calls).as_bytes());
    out.push(b' ');
    out.extend_from_slice(num.format(r.items).as_bytes());
    out.push(b' ');
    let class = r.class.as_bytes();
    if class.iter().any(|&b| needs_escape(b)) {
        for &b in class {
            if needs_escape(b) {
                out.push(b'%');
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
            } else {
                out.push(b);
            }
        }
    } else {
        out.extend_from_slice(class);
    }
    if let Some(key) = r.key {
        out.push(b' ');
        out.extend_from_slice(key.as_bytes());
    }
    out.push(b'\n');
}

/// Reads one line (without its `\n`); `None` if it is not a row this build writes.
/// One pass over the bytes: journals are read back in full on open.
pub(crate) fn decode(line: &[u8]) -> Option<Parsed<'_>> {
    let mut at = 0;
    let time_ns = if line.first() == Some(&b'-') {
        at = 1;
        i64::try_from(number(line, &mut at)?).ok()?.checked_neg()?
    } else {
        i64::try_from(number(line, &mut at)?).ok()?
    };
    let calls = number(line, &mut at)?;
    let items = number(line, &mut at)?;
    let class_bytes = field(line, &mut at)?;
    // `None` past the end: the class was the last field.
    let key = match line.get(at..) {
        None => None,
        Some(rest) => {
            // A key is hex digits: no space, so no field after it.
            if rest.is_empty() || !rest.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            // Hex digits are ASCII: always valid UTF-8.
            Some(std::str::from_utf8(rest).ok()?)
        }
    };
    let class = unescape(std::str::from_utf8(class_bytes).ok()?)?;
    let fanout = class.starts_with(FANOUT_PREFIX);
    let ok = match key {
        // Fan-out rows, and only they, name a target.
        Some(_) => fanout,
        None => {
            !fanout
                && (!class.starts_with('!')
                    || class == RATE_CLASS
                    || (class == RESET_CLASS && calls == 0 && items == 0))
        }
    };
    ok.then_some(Parsed {
        class,
        key,
        time_ns,
        calls,
        items,
    })
}

/// A decimal `u64` at `line[*at..]` up to a space or the end, in one pass;
/// `*at` moves as [`field`] moves it.
fn number(line: &[u8], at: &mut usize) -> Option<u64> {
    let rest = line.get(*at..)?;
    let mut n: u64 = 0;
    let mut len = 0;
    for &b in rest {
        if b == b' ' {
            break;
        }
        if !b.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
        len += 1;
    }
    if len == 0 {
        return None;
    }
    *at += len + 1;
    if len == rest.len() {
        *at += 1;
    }
    Some(n)
}

/// The non-empty bytes at `line[*at..]` up to a space or the end; `*at`
/// moves past the space (or to the end, or past it when there is none).
fn field<'a>(line: &'a [u8], at: &mut usize) -> Option<&'a [u8]> {
    let rest = line.get(*at..)?;
    let len = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
    if len == 0 {
        return None;
    }
    // Past the end when there is no space: a field after the last is then missing.
    *at += len + 1;
    if len == rest.len() {
        *at += 1;
    }
    rest.get(..len)
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn needs_escape(b: u8) -> bool {
    b <= b' ' || b == b'%' || b == 0x7f
}

fn unescape(s: &str) -> Option<Cow<'_, str>> {
    if !s.contains('%') {
        return Some(Cow::Borrowed(s));
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok().map(Cow::Owned)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn line(r: &Row<'_>) -> String {
        let mut out = Vec::new();
        encode(&mut out, r);
        String::from_utf8(out).unwrap()
    }

    fn row<'a>(class: &'a str, key: Option<&'a str>) -> Row<'a> {
        Row {
            class,
            key,
            time_ns: -5,
            calls: 1,
            items: 7,
        }
    }

    #[test]
    fn rows_round_trip_and_a_tool_name_cannot_add_a_line() {
        let sneaky = "!fanout:corp/x\n0 0 0 !reset %41";
        for r in [
            row("acl", None),
            row(RATE_CLASS, None),
            row("!fanout:corp/repo_get", Some("00ff")),
            row(sneaky, Some("ab")),
        ] {
            let text = line(&r);
            assert_eq!(text.matches('\n').count(), 1, "{text:?}");
            let p = decode(text.trim_end_matches('\n').as_bytes()).unwrap();
            assert_eq!(
                (p.class.as_ref(), p.key, p.time_ns, p.calls, p.items),
                (r.class, r.key, r.time_ns, r.calls, r.items)
            );
        }
        assert_eq!(
            line(&row(sneaky, Some("ab"))),
            "-5 1 7 !fanout:corp/x%0a0%200%200%20!reset%20%2541 ab\n"
        );
        // Lines from before the loop rows moved here read the same.
        let old = decode(b"1800000000000000000 1 0 acl").unwrap();
        assert_eq!((old.class.as_ref(), old.calls), ("acl", 1));
    }

    #[test]
    fn a_malformed_row_is_rejected() {
        for bad in [
            "",
            "garbage",
            "1 1 0",
            "1 1 0 ",
            "x 1 0 acl",
            "1 -1 0 acl",
            "1 1 0 acl extra",
            "1 1 0 acl  ",
            "1 1 0 acl ",
            "-",
            "- 1 0 acl",
            "1x 1 0 acl",
            "99999999999999999999 1 0 acl",
            "1 1 0 !fanout:corp/get",
            "1 1 0 !fanout:corp/get not-hex",
            "1 1 0 !rate ab",
            "1 1 0 !reset",
            "1 1 0 !other",
            "1 1 0 !fanout:%zz ab",
            "1 1 0 !fanout:%ff ab",
        ] {
            assert_eq!(decode(bad.as_bytes()), None, "{bad:?}");
        }
    }
}
