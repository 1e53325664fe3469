//! Redaction inside one JSON value, token by token, for a frame the quick check flagged.
//!
//! The frame is split into string tokens and what lies between them (numbers, literals,
//! structure). A string without escapes is searched as it is and its secrets replaced in
//! place (a marker needs no escaping); a string with escapes is decoded, searched, and
//! rewritten as a whole, re-escaped by serde_json, only if it held a secret. Between
//! strings, every number or literal that a match touches becomes the marker as a string.
//! Nothing else changes, so valid JSON stays valid; invalid input never panics.

use aho_corasick::AhoCorasick;

use crate::redact::{widen, Automata};

/// The frame with every secret replaced, or `None` if it held none.
pub(crate) fn redact(a: &Automata, frame: &[u8]) -> Option<Vec<u8>> {
    let plain = a.plain.as_ref()?;
    let mut out = Out::new(frame);
    let mut seg = 0;
    while let Some(q) = memchr::memchr(b'"', &frame[seg..]).map(|k| seg + k) {
        outside(a, plain, frame, seg, q, &mut out);
        let (end, escaped, terminated) = string_end(frame, q);
        let content_end = if terminated { end - 1 } else { end };
        if escaped {
            escaped_string(a, plain, frame, q, content_end, end, &mut out);
        } else {
            plain_string(a, plain, frame, q + 1, content_end, &mut out);
        }
        seg = end;
    }
    outside(a, plain, frame, seg, frame.len(), &mut out);
    out.finish()
}

/// Where the string opening at `q` ends (after its closing quote), whether it has escapes,
/// and whether it is closed at all.
fn string_end(frame: &[u8], q: usize) -> (usize, bool, bool) {
    let mut j = q + 1;
    let mut escaped = false;
    while j < frame.len() {
        match memchr::memchr2(b'"', b'\\', &frame[j..]) {
            None => break,
            Some(k) if frame[j + k] == b'"' => return (j + k + 1, escaped, true),
            Some(k) => {
                escaped = true;
                j += k + 2;
            }
        }
    }
    (frame.len(), escaped, false)
}

/// A string's content without escapes: markers go in place.
fn plain_string(
    a: &Automata,
    plain: &AhoCorasick,
    frame: &[u8],
    start: usize,
    end: usize,
    out: &mut Out<'_>,
) {
    let mut done = start;
    for m in plain.find_iter(&frame[start..end]) {
        let form = a.plain_forms[m.pattern().as_usize()];
        let (s, e) = widen(frame, start + m.start(), start + m.end(), form, done, end);
        out.replace(s, e, a.markers[form.secret].as_bytes());
        done = e;
    }
}

/// A string with escapes (`q` its opening quote, `token_end` past its closing one): decoded,
/// searched, and rewritten whole if it holds a secret.
fn escaped_string(
    a: &Automata,
    plain: &AhoCorasick,
    frame: &[u8],
    q: usize,
    content_end: usize,
    token_end: usize,
    out: &mut Out<'_>,
) {
    let decoded = unescape(&frame[q + 1..content_end]);
    let bytes = decoded.as_bytes();
    let mut replaced: Option<String> = None;
    let mut copied = 0;
    for m in plain.find_iter(bytes) {
        let form = a.plain_forms[m.pattern().as_usize()];
        let (s, e) = widen(bytes, m.start(), m.end(), form, copied, bytes.len());
        let buf = replaced.get_or_insert_with(|| String::with_capacity(decoded.len()));
        // Matches are whole UTF-8 sequences and widening adds ASCII: these are boundaries.
        buf.push_str(decoded.get(copied..s).unwrap_or_default());
        buf.push_str(&a.markers[form.secret]);
        copied = e;
    }
    if let Some(mut buf) = replaced {
        buf.push_str(decoded.get(copied..).unwrap_or_default());
        let token = serde_json::to_string(&buf).unwrap_or_else(|_| "\"\"".into());
        out.replace(q, token_end, token.as_bytes());
    }
}

/// Between strings: every number or literal a match touches becomes the marker, quoted.
fn outside(
    a: &Automata,
    plain: &AhoCorasick,
    frame: &[u8],
    start: usize,
    end: usize,
    out: &mut Out<'_>,
) {
    let scalar = |b: u8| {
        !(b.is_ascii_whitespace() || matches!(b, b'{' | b'}' | b'[' | b']' | b',' | b':' | b'"'))
    };
    let mut done = start;
    for m in plain.find_iter(&frame[start..end]) {
        let secret = a.plain_forms[m.pattern().as_usize()].secret;
        let mut p = (start + m.start()).max(done);
        while p < start + m.end() {
            if !scalar(frame[p]) {
                p += 1;
                continue;
            }
            let mut s = p;
            while s > done && scalar(frame[s - 1]) {
                s -= 1;
            }
            let mut e = p;
            while e < end && scalar(frame[e]) {
                e += 1;
            }
            let quoted = format!("\"{}\"", a.markers[secret]);
            out.replace(s, e, quoted.as_bytes());
            done = e;
            p = e;
        }
    }
}

/// A JSON string's content decoded. Malformed escapes are kept as written and lone
/// surrogates become U+FFFD: whatever a lenient reader could make of them is searched too.
pub(crate) fn unescape(content: &[u8]) -> String {
    let mut out = Vec::with_capacity(content.len());
    let mut i = 0;
    while i < content.len() {
        let b = content[i];
        if b != b'\\' {
            out.push(b);
            i += 1;
            continue;
        }
        let simple = match content.get(i + 1) {
            Some(b'"') => Some(b'"'),
            Some(b'\\') => Some(b'\\'),
            Some(b'/') => Some(b'/'),
            Some(b'b') => Some(0x08),
            Some(b'f') => Some(0x0c),
            Some(b'n') => Some(b'\n'),
            Some(b'r') => Some(b'\r'),
            Some(b't') => Some(b'\t'),
            _ => None,
        };
        if let Some(c) = simple {
            out.push(c);
            i += 2;
            continue;
        }
        let Some(unit) = hex4(content, i + 2).filter(|_| content.get(i + 1) == Some(&b'u')) else {
            out.push(b'\\');
            i += 1;
            continue;
        };
        i += 6;
        let c = if (0xD800..0xDC00).contains(&unit) {
            let low = hex4(content, i + 2).filter(|l| {
                content.get(i) == Some(&b'\\')
                    && content.get(i + 1) == Some(&b'u')
                    && (0xDC00..0xE000).contains(l)
            });
            match low {
                Some(low) => {
                    i += 6;
                    char::from_u32(0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00))
                }
                None => None,
            }
        } else {
            char::from_u32(unit)
        };
        let c = c.unwrap_or(char::REPLACEMENT_CHARACTER);
        let mut buf = [0u8; 4];
        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
    }
    match String::from_utf8(out) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

/// The four hex digits at `at`, as a number.
fn hex4(s: &[u8], at: usize) -> Option<u32> {
    let digits = s.get(at..at + 4)?;
    let text = std::str::from_utf8(digits).ok()?;
    if !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(text, 16).ok()
}

/// The output, allocated at the first replacement.
struct Out<'a> {
    src: &'a [u8],
    buf: Option<Vec<u8>>,
    copied: usize,
}

impl<'a> Out<'a> {
    fn new(src: &'a [u8]) -> Self {
        Out {
            src,
            buf: None,
            copied: 0,
        }
    }

    /// Replaces `start..end` (after everything replaced so far) with `with`.
    fn replace(&mut self, start: usize, end: usize, with: &[u8]) {
        let start = start.max(self.copied);
        let end = end.max(start);
        let src = self.src;
        let buf = self
            .buf
            .get_or_insert_with(|| Vec::with_capacity(src.len() + 64));
        buf.extend_from_slice(&src[self.copied..start]);
        buf.extend_from_slice(with);
        self.copied = end;
    }

    fn finish(self) -> Option<Vec<u8>> {
        let mut buf = self.buf?;
        buf.extend_from_slice(&self.src[self.copied..]);
        Some(buf)
    }
}
