//! `Redactor::redact_frame` on arbitrary bytes with a secret taken from the input: it must
//! never panic; a frame that is JSON stays JSON, and no string in it (keys included, after
//! decoding every escape) still holds a secret. `redact_str` must never panic either.
#![no_main]

use airlock_broker::{Redactor, Secret};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const FIXED: &str = "tok-0123456789";
/// Secret characters: no JSON structure in them, so a secret can only be inside a token.
const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.";

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let len = usize::from(first % 24) + 8;
    if rest.len() < len {
        return;
    }
    let (raw, frame) = rest.split_at(len);
    let secret: String = raw
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect();
    let redactor = Redactor::new(vec![
        ("fixed".into(), Secret::new(FIXED)),
        ("fuzz".into(), Secret::new(secret.clone())),
    ]);
    let _ = redactor.redact_str(&String::from_utf8_lossy(frame));
    let out = redactor.redact_frame(frame);
    if serde_json::from_slice::<Value>(frame).is_err() {
        return;
    }
    let out = out.as_deref().unwrap_or(frame);
    let value: Value = serde_json::from_slice(out).expect("valid JSON stays valid JSON");
    let mut strings = Vec::new();
    collect(&value, &mut strings);
    for s in strings {
        for secret in [FIXED, secret.as_str()] {
            assert!(!s.contains(secret), "{secret:?} left in {s:?}");
        }
    }
});

/// Every string of `v`, keys included.
fn collect<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::String(s) => out.push(s),
        Value::Array(items) => items.iter().for_each(|i| collect(i, out)),
        Value::Object(map) => {
            for (k, v) in map {
                out.push(k);
                collect(v, out);
            }
        }
        _ => {}
    }
}
