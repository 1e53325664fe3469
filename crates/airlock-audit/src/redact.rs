//! Secret redaction for arguments and details before they are stored.
//!
//! A secret is replaced by `[redacted sha256:<12 hex>]`, the first 12 hex digits
//! of the SHA-256 of the secret itself, so two records that carried the same
//! secret can still be correlated without storing it. Two rules:
//!
//! - every value under a key that *names* a secret (`password`, `api_key`,
//!   `Authorization`, `client_secret`, `x-auth-token`, …) is replaced whole,
//!   whatever its type (`null` stays `null`: it carries nothing);
//! - inside every other string, spans that *look* like a secret (PEM private
//!   keys, AWS key ids, GitHub/Slack/OpenAI-style tokens, JWTs, `Bearer …`,
//!   `user:password@` in URLs, `password=…` pairs) are replaced in place, so
//!   the rest of a command line or document stays readable.
//!
//! Redaction is idempotent: markers are never redacted again.

use std::borrow::Cow;
use std::sync::LazyLock;

use regex::Regex;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::chain::write_canonical;

const MARKER_PREFIX: &str = "[redacted sha256:";
const MARKER_HEX: usize = 12;

/// Substrings of a key (lowercased, separators removed) that name a secret.
const SECRET_KEY_PARTS: &[&str] = &[
    "password",
    "passwd",
    "passphrase",
    "secret",
    "apikey",
    "accesskey",
    "privatekey",
    "privkey",
    "sessionkey",
    "credential",
    "authorization",
    "cookie",
];

/// Each alternative has exactly one capture group: the span to redact.
const SECRET_PATTERNS: &[&str] = &[
    // PEM private key block; an unterminated one is redacted to the end.
    r"(-----BEGIN[ A-Z0-9]*PRIVATE KEY-----[\s\S]*?(?:-----END[ A-Z0-9]*PRIVATE KEY-----|\z))",
    // AWS access key ids.
    r"\b((?:AKIA|ASIA)[0-9A-Z]{16})\b",
    // GitHub tokens (classic and fine-grained).
    r"\b(gh[pousr]_[A-Za-z0-9]{30,255}|github_pat_[A-Za-z0-9_]{20,255})",
    // Slack tokens.
    r"\b(xox[baprs]-[A-Za-z0-9-]{10,})",
    // OpenAI/Anthropic-style keys.
    r"\b(sk-[A-Za-z0-9_-]{20,})",
    // JWTs.
    r"\b(eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*)",
    // Bearer credentials (the scheme name stays readable).
    r"(?i:\bbearer)\s+([A-Za-z0-9._~+/=-]{16,})",
    // The password of `scheme://user:password@host`.
    r"[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]+:([^/\s@]+)@",
    // `password=…`, `api-key: …` pairs inside command lines and text.
    r#"(?i:password|passwd|secret|token|api[_-]?key)\s*[=:]\s*["']?([^\s"'&,;]{4,})"#,
];

// ASCII word boundaries (`\b` would be Unicode-aware: a larger automaton for
// no gain, since every pattern here is ASCII).
static SECRET_RE: LazyLock<Option<Regex>> = LazyLock::new(|| {
    let joined = SECRET_PATTERNS.join("|").replace(r"\b", r"(?-u:\b)");
    Regex::new(&joined).ok()
});

/// A copy of `v` with every secret replaced by a correlatable marker.
pub fn redact(v: &Value) -> Value {
    match v {
        Value::Object(map) => {
            let mut out = Map::with_capacity(map.len());
            for (k, item) in map {
                let redacted = if is_secret_key(k) {
                    redact_whole(item)
                } else {
                    redact(item)
                };
                out.insert(k.clone(), redacted);
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(redact).collect()),
        Value::String(s) => Value::String(redact_str(s).into_owned()),
        Value::Null | Value::Bool(_) | Value::Number(_) => v.clone(),
    }
}

/// Whether a key names a secret (`api_key`, `X-Api-Key`, `githubToken`, `basic_auth`, …).
pub fn is_secret_key(key: &str) -> bool {
    // Flattened: lowercase ASCII alphanumerics only, so `-`, `_`, `.` and case
    // vanish. Keys are short: flatten on the stack, the heap only for long ones.
    let mut stack = [0u8; 64];
    let heap: Vec<u8>;
    let flat: &[u8] = if key.len() <= stack.len() {
        let mut n = 0;
        for b in key.bytes().filter(u8::is_ascii_alphanumeric) {
            stack[n] = b.to_ascii_lowercase();
            n += 1;
        }
        &stack[..n]
    } else {
        heap = key
            .bytes()
            .filter(u8::is_ascii_alphanumeric)
            .map(|b| b.to_ascii_lowercase())
            .collect();
        &heap
    };
    let contains = |needle: &[u8]| flat.windows(needle.len()).any(|w| w == needle);
    if SECRET_KEY_PARTS.iter().any(|p| contains(p.as_bytes())) {
        return true;
    }
    // `token` and `auth` are too short to match as substrings (`max_tokens`,
    // `author`), so they count as a final word or a word of their own.
    if flat.ends_with(b"token") || flat.ends_with(b"auth") {
        return true;
    }
    contains(b"auth") && words(key).any(|w| w.eq_ignore_ascii_case("auth"))
}

/// Words of a key: split at non-alphanumerics and lower→upper case changes.
fn words(key: &str) -> impl Iterator<Item = &str> {
    key.split(|c: char| !c.is_ascii_alphanumeric())
        .flat_map(|part| {
            let mut cuts = Vec::new();
            let b = part.as_bytes();
            for i in 1..b.len() {
                if b[i - 1].is_ascii_lowercase() && b[i].is_ascii_uppercase() {
                    cuts.push(i);
                }
            }
            let mut pieces = Vec::with_capacity(cuts.len() + 1);
            let mut start = 0;
            for c in cuts {
                pieces.push(&part[start..c]);
                start = c;
            }
            pieces.push(&part[start..]);
            pieces
        })
        .filter(|w| !w.is_empty())
}

/// Replaces a whole value found under a secret key.
fn redact_whole(v: &Value) -> Value {
    match v {
        Value::Null => Value::Null,
        Value::String(s) if is_marker(s) => v.clone(),
        Value::String(s) => Value::String(marker(s.as_bytes())),
        other => {
            let mut text = String::new();
            write_canonical(other, &mut text);
            Value::String(marker(text.as_bytes()))
        }
    }
}

/// Redacts secret-looking spans inside one string, until nothing changes.
fn redact_str(s: &str) -> Cow<'_, str> {
    let mut current = Cow::Borrowed(s);
    // One pass normally suffices; a second catches a span that an earlier,
    // overlapping match hid. The bound keeps a pathological input cheap.
    for _ in 0..4 {
        match redact_once(&current) {
            None => return current,
            Some(next) => current = Cow::Owned(next),
        }
    }
    current
}

/// One pass; `None` when nothing was redacted.
fn redact_once(s: &str) -> Option<String> {
    // Shortest possible secret span with its context is longer than this.
    if s.len() < 8 {
        return None;
    }
    let Some(re) = SECRET_RE.as_ref() else {
        // The patterns are constant and tested; should they ever fail to
        // compile, redact everything rather than store a secret.
        return Some(marker(s.as_bytes())).filter(|m| m != s);
    };
    let mut out: Option<String> = None;
    let mut last = 0;
    for caps in re.captures_iter(s) {
        let Some(span) = caps.iter().skip(1).flatten().next() else {
            continue;
        };
        if s[span.start()..].starts_with(MARKER_PREFIX) {
            continue;
        }
        let o = out.get_or_insert_with(|| String::with_capacity(s.len()));
        o.push_str(&s[last..span.start()]);
        o.push_str(&marker(span.as_str().as_bytes()));
        last = span.end();
    }
    let mut o = out?;
    o.push_str(&s[last..]);
    Some(o)
}

fn marker(secret: &[u8]) -> String {
    let digest = Sha256::digest(secret);
    let hex = hex::encode(&digest[..MARKER_HEX / 2]);
    format!("{MARKER_PREFIX}{hex}]")
}

/// Whether `s` is exactly one redaction marker.
pub fn is_marker(s: &str) -> bool {
    s.len() == MARKER_PREFIX.len() + MARKER_HEX + 1
        && s.starts_with(MARKER_PREFIX)
        && s.ends_with(']')
        && s[MARKER_PREFIX.len()..s.len() - 1]
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
#[path = "redact_tests.rs"]
mod tests;
