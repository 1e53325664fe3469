//! [`Redactor`]: every credential Airlock holds, cut out of what agents receive and of what
//! logs and the audit trail keep.
//!
//! Each secret is looked for in the forms it can take in a JSON frame or a log line: as is,
//! JSON-escaped the way serde_json writes it, in base64 (standard and URL-safe alphabets, at
//! the three alignments it can have inside a longer encoded text, with or without padding)
//! and in hex (lower and upper case). Every occurrence becomes `[REDACTED:<name>]`, the name
//! being the secret's placeholder name (`forum_token`, `env:FORUM_KEY`, `oauth:forum`).
//!
//! A frame is handled in two steps (see [`crate::json`]): one Aho-Corasick pass over its
//! bytes and a scan for `\u` and `\/` decide whether anything can be there; almost every
//! frame stops here, with no allocation. Otherwise the frame is walked token by token: each
//! string is searched in its decoded form, so any escaping is seen through, and rewritten
//! (re-escaped) only where it holds a secret; a number or literal holding one becomes a
//! string. The output is valid JSON whenever the input is, and bytes without secrets are
//! kept as they came.
//!
//! Secrets can be added while gateways run (OAuth access tokens as they are obtained): the
//! automata are rebuilt and swapped in; readers never wait on a rebuild.

use std::borrow::Cow;
use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, RwLock};

use aho_corasick::{AhoCorasick, MatchKind};
use base64::Engine;

use crate::Secret;

/// Secrets added at run time that are kept at most; the oldest go first (expired tokens).
const MAX_RUNTIME_SECRETS: usize = 1024;

/// Looks for every known secret in frames and text.
pub struct Redactor {
    current: RwLock<Arc<Automata>>,
    entries: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    fixed: Vec<(String, Secret)>,
    runtime: VecDeque<(String, Secret)>,
}

/// The searchers for one set of secrets.
pub(crate) struct Automata {
    /// Every form as it can appear in raw frame bytes or text: raw, JSON-escaped, base64, hex.
    pub(crate) frame: Option<AhoCorasick>,
    /// The forms in decoded text (a JSON string's value): raw, base64, hex.
    pub(crate) plain: Option<AhoCorasick>,
    pub(crate) frame_forms: Vec<Form>,
    pub(crate) plain_forms: Vec<Form>,
    /// `[REDACTED:<name>]` per secret.
    pub(crate) markers: Vec<String>,
}

/// What one pattern is: whose, and in which encoding.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Form {
    pub(crate) secret: usize,
    pub(crate) base64: bool,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.automata().markers.len();
        f.debug_struct("Redactor").field("secrets", &count).finish()
    }
}

impl Default for Redactor {
    fn default() -> Self {
        Redactor::new(Vec::new())
    }
}

// === impl Redactor ===

impl Redactor {
    /// A redactor for `secrets`, each with the name its marker shows. Values shorter than
    /// [`crate::MIN_SECRET_BYTES`] are skipped with a warning (resolution refuses them
    /// earlier); a value given twice keeps its first name.
    pub fn new(secrets: Vec<(String, Secret)>) -> Redactor {
        let secrets = secrets
            .into_iter()
            .filter(|(name, v)| {
                let ok = v.len() >= crate::MIN_SECRET_BYTES;
                if !ok {
                    tracing::warn!(
                        name,
                        "a secret shorter than {} bytes cannot be redacted reliably; not redacted",
                        crate::MIN_SECRET_BYTES
                    );
                }
                ok
            })
            .collect();
        let entries = Entries {
            fixed: secrets,
            runtime: VecDeque::new(),
        };
        let automata = Automata::build(&entries);
        Redactor {
            current: RwLock::new(Arc::new(automata)),
            entries: Mutex::new(entries),
        }
    }

    /// Adds a secret learnt at run time (an access token). A value already known is not
    /// added again. Rebuilds the automata: meant for a few additions a minute.
    pub fn add(&self, name: &str, value: &Secret) {
        if value.len() < crate::MIN_SECRET_BYTES {
            tracing::warn!(
                name,
                "a secret shorter than {} bytes cannot be redacted reliably; not redacted",
                crate::MIN_SECRET_BYTES
            );
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let known = entries
            .fixed
            .iter()
            .chain(&entries.runtime)
            .any(|(_, v)| v.expose() == value.expose());
        if known {
            return;
        }
        if entries.runtime.len() >= MAX_RUNTIME_SECRETS {
            entries.runtime.pop_front();
        }
        entries.runtime.push_back((name.to_owned(), value.clone()));
        let automata = Arc::new(Automata::build(&entries));
        // Swapped while the entries are locked: two additions cannot swap in reverse order.
        match self.current.write() {
            Ok(mut g) => *g = automata,
            Err(p) => *p.into_inner() = automata,
        }
    }

    /// How many secrets are looked for.
    pub fn len(&self) -> usize {
        self.automata().markers.len()
    }

    /// Whether no secret is looked for.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// One JSON-RPC frame (one JSON value, as raw bytes): `None` when it holds no secret
    /// (the common case, without allocating), else the frame with every occurrence replaced
    /// by `[REDACTED:<name>]`. Valid JSON stays valid JSON.
    pub fn redact_frame(&self, frame: &[u8]) -> Option<Vec<u8>> {
        let automata = self.automata();
        let ac = automata.frame.as_ref()?;
        if !ac.is_match(frame) && !has_odd_escape(frame) {
            return None;
        }
        crate::json::redact(&automata, frame)
    }

    /// A log line or audit text: every occurrence of a secret, in any of its forms as bytes
    /// (escaped forms included, `\u` escapes not decoded), replaced by its marker.
    pub fn redact_str<'a>(&self, s: &'a str) -> Cow<'a, str> {
        let automata = self.automata();
        let Some(ac) = &automata.frame else {
            return Cow::Borrowed(s);
        };
        let bytes = s.as_bytes();
        let mut out: Option<String> = None;
        let mut copied = 0;
        for m in ac.find_iter(bytes) {
            let form = automata.frame_forms[m.pattern().as_usize()];
            let (start, end) = widen(bytes, m.start(), m.end(), form, copied, bytes.len());
            let buf = out.get_or_insert_with(|| String::with_capacity(s.len()));
            buf.push_str(&String::from_utf8_lossy(&bytes[copied..start]));
            buf.push_str(&automata.markers[form.secret]);
            copied = end;
        }
        match out {
            None => Cow::Borrowed(s),
            Some(mut buf) => {
                buf.push_str(&String::from_utf8_lossy(&bytes[copied..]));
                Cow::Owned(buf)
            }
        }
    }

    fn automata(&self) -> Arc<Automata> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }
}

/// Whether `frame` has an escape serde_json never writes (`\uXXXX` for a printable
/// character, `\/`): a secret could hide behind one, so the frame is decoded.
fn has_odd_escape(frame: &[u8]) -> bool {
    memchr::memchr_iter(b'\\', frame).any(|i| matches!(frame.get(i + 1), Some(b'u') | Some(b'/')))
}

/// A base64 match covers only the characters wholly made of the secret's bits: the one
/// character on each side that holds some of them, and the padding, go too. Stays within
/// `lo..hi`.
pub(crate) fn widen(
    text: &[u8],
    start: usize,
    end: usize,
    form: Form,
    lo: usize,
    hi: usize,
) -> (usize, usize) {
    if !form.base64 {
        let start = start.max(lo);
        return (start, end.max(start));
    }
    let b64 = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'-' | b'_');
    let mut start = start.max(lo);
    if start > lo && b64(text[start - 1]) {
        start -= 1;
    }
    let mut end = end.max(start);
    if end < hi && b64(text[end]) {
        end += 1;
    }
    let mut pads = 0;
    while end < hi && pads < 2 && text[end] == b'=' {
        end += 1;
        pads += 1;
    }
    (start, end)
}

// === impl Automata ===

impl Automata {
    fn build(entries: &Entries) -> Automata {
        let mut seen = HashSet::new();
        let mut markers = Vec::new();
        let mut frame_pats: Vec<Vec<u8>> = Vec::new();
        let mut frame_forms = Vec::new();
        let mut plain_pats: Vec<Vec<u8>> = Vec::new();
        let mut plain_forms = Vec::new();
        for (name, value) in entries.fixed.iter().chain(&entries.runtime) {
            let v = value.expose();
            if !seen.insert(v.to_owned()) {
                continue;
            }
            let secret = markers.len();
            markers.push(format!("[REDACTED:{}]", marker_name(name)));
            let mut forms: Vec<(Vec<u8>, bool)> = vec![(v.as_bytes().to_vec(), false)];
            forms.push((hex::encode(v).into_bytes(), false));
            forms.push((hex::encode_upper(v).into_bytes(), false));
            for core in base64_cores(v.as_bytes()) {
                forms.push((core, true));
            }
            let mut own = HashSet::new();
            for (pat, base64) in forms {
                if own.insert(pat.clone()) {
                    plain_pats.push(pat.clone());
                    plain_forms.push(Form { secret, base64 });
                    frame_pats.push(pat);
                    frame_forms.push(Form { secret, base64 });
                }
            }
            let escaped = json_escaped(v);
            if escaped.as_bytes() != v.as_bytes() && own.insert(escaped.clone().into_bytes()) {
                frame_pats.push(escaped.into_bytes());
                frame_forms.push(Form {
                    secret,
                    base64: false,
                });
            }
        }
        let build = |pats: &[Vec<u8>]| {
            if pats.is_empty() {
                return None;
            }
            match AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostLongest)
                .build(pats)
            {
                Ok(ac) => Some(ac),
                Err(e) => {
                    // Only a pattern set beyond the automaton's size limits gets here.
                    tracing::error!(error = %e, "cannot build the secret redactor");
                    None
                }
            }
        };
        Automata {
            frame: build(&frame_pats),
            plain: build(&plain_pats),
            frame_forms,
            plain_forms,
            markers,
        }
    }
}

/// The name shown in a marker: kept inside a JSON string without escaping.
fn marker_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' && c != ']' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The secret as serde_json writes it inside a string, without the quotes.
fn json_escaped(v: &str) -> String {
    let quoted = serde_json::to_string(v).unwrap_or_default();
    quoted
        .get(1..quoted.len().saturating_sub(1))
        .unwrap_or_default()
        .to_owned()
}

/// The base64 characters made only of the secret's bits, when it starts at each of the
/// three byte offsets modulo 3 of an encoded text, in both alphabets.
pub(crate) fn base64_cores(v: &[u8]) -> Vec<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
    let mut out = Vec::new();
    for pad in 0..3usize {
        let mut bytes = vec![0u8; pad];
        bytes.extend_from_slice(v);
        // Characters before `skip` hold bits of the padding bytes; from `keep` on, bits of
        // whatever follows the secret.
        let skip = (pad * 8).div_ceil(6);
        let keep = bytes.len() * 8 / 6;
        for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
            let encoded = engine.encode(&bytes);
            if let Some(core) = encoded.as_bytes().get(skip..keep) {
                if !out.iter().any(|c: &Vec<u8>| c.as_slice() == core) {
                    out.push(core.to_vec());
                }
            }
        }
    }
    out
}

#[cfg(test)]
#[path = "redact_tests.rs"]
mod tests;
