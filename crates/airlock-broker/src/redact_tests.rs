#![allow(clippy::unwrap_used, clippy::expect_used)]

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;

const TOKEN: &str = "tok-0123456789";

fn redactor() -> Redactor {
    Redactor::new(vec![
        ("forum_token".into(), Secret::new(TOKEN)),
        ("pw".into(), Secret::new("p\"ss/wörd\\x")),
    ])
}

fn redact(r: &Redactor, frame: &str) -> Option<String> {
    r.redact_frame(frame.as_bytes())
        .map(|b| String::from_utf8(b).unwrap())
}

/// Every form the secret can take in output: none may be left.
fn forms(secret: &str) -> Vec<String> {
    let mut out = vec![
        secret.to_owned(),
        hex::encode(secret),
        hex::encode_upper(secret),
        json_escaped(secret),
    ];
    for core in base64_cores(secret.as_bytes()) {
        out.push(String::from_utf8(core).unwrap());
    }
    out
}

fn assert_clean(out: &str, secret: &str) {
    for form in forms(secret) {
        assert!(!out.contains(&form), "{form:?} left in {out}");
    }
}

#[test]
fn nothing_to_redact_returns_none() {
    let r = redactor();
    assert!(redact(
        &r,
        r#"{"jsonrpc":"2.0","id":1,"result":{"text":"tok-012345678"}}"#
    )
    .is_none());
    assert!(redact(&r, r#"{"a":"\\n plain escapes"}"#).is_none());
    // An odd escape makes the frame decoded; it holds nothing, so still no output.
    assert!(redact(&r, r#"{"a":"caf\u00e9 \/ x"}"#).is_none());
    assert!(Redactor::default().redact_frame(b"{}").is_none());
    assert!(Redactor::default().is_empty());
}

#[test]
fn the_raw_form_is_replaced_in_place() {
    let r = redactor();
    let out = redact(
        &r,
        &format!(r#"{{"id":1,"result":{{"t":"a {TOKEN} b","n":[1, 2]}}}}"#),
    )
    .unwrap();
    assert_eq!(
        out,
        r#"{"id":1,"result":{"t":"a [REDACTED:forum_token] b","n":[1, 2]}}"#
    );
}

#[test]
fn keys_are_redacted_too() {
    let r = redactor();
    let out = redact(&r, &format!(r#"{{"{TOKEN}":1}}"#)).unwrap();
    assert_eq!(out, r#"{"[REDACTED:forum_token]":1}"#);
}

#[test]
fn escaped_forms_are_seen_through() {
    let r = redactor();
    // serde_json's own escaping of a secret with a quote and a backslash.
    let frame = json!({"t": "pw is p\"ss/wörd\\x!"}).to_string();
    let out = redact(&r, &frame).unwrap();
    assert_eq!(out, r#"{"t":"pw is [REDACTED:pw]!"}"#);
    // `\/` and `\u` escapes of any character.
    let frame = r#"{"t":"p\"ss\/w\u00f6rd\\x and tok\u002d0123456789"}"#;
    let out = redact(&r, frame).unwrap();
    assert_eq!(out, r#"{"t":"[REDACTED:pw] and [REDACTED:forum_token]"}"#);
    let frame = r#"{"t":"\u0074\u006f\u006b-0123456789"}"#;
    assert_eq!(
        redact(&r, frame).unwrap(),
        r#"{"t":"[REDACTED:forum_token]"}"#
    );
    // A string with escapes is rewritten only when it holds a secret; others stay as written.
    let frame = format!(r#"{{"a":"x\/y","b":"line\n{TOKEN}"}}"#);
    assert_eq!(
        redact(&r, &frame).unwrap(),
        r#"{"a":"x\/y","b":"line\n[REDACTED:forum_token]"}"#
    );
}

#[test]
fn base64_and_hex_forms_are_redacted() {
    let r = redactor();
    for encoded in [
        STANDARD.encode(TOKEN),
        STANDARD_NO_PAD.encode(TOKEN),
        URL_SAFE.encode(TOKEN),
        URL_SAFE_NO_PAD.encode(TOKEN),
        STANDARD.encode(format!("x{TOKEN}")),
        STANDARD.encode(format!("xy{TOKEN}yz")),
        URL_SAFE_NO_PAD.encode(format!("Authorization: Bearer {TOKEN}\n")),
        hex::encode(TOKEN),
        hex::encode_upper(format!("ab{TOKEN}")),
    ] {
        let frame = json!({"data": encoded}).to_string();
        let out = redact(&r, &frame).unwrap_or_else(|| panic!("{encoded} not found"));
        assert!(out.contains("[REDACTED:forum_token]"), "{out}");
        assert_clean(&out, TOKEN);
        serde_json::from_str::<Value>(&out).unwrap();
    }
}

#[test]
fn base64_padding_and_edge_characters_go_with_the_match() {
    let r = redactor();
    let encoded = STANDARD.encode(TOKEN);
    assert!(encoded.ends_with('='));
    let out = redact(&r, &json!({"d": encoded}).to_string()).unwrap();
    assert_eq!(out, r#"{"d":"[REDACTED:forum_token]"}"#);
}

#[test]
fn a_secret_outside_strings_becomes_a_string() {
    let r = Redactor::new(vec![("num".into(), Secret::new("12345678901"))]);
    let out = redact(&r, r#"{"a":12345678901,"b":[912345678901e3, 1]}"#).unwrap();
    assert_eq!(out, r#"{"a":"[REDACTED:num]","b":["[REDACTED:num]", 1]}"#);
}

#[test]
fn redact_str_handles_log_lines() {
    let r = redactor();
    assert!(matches!(r.redact_str("nothing here"), Cow::Borrowed(_)));
    assert_eq!(
        r.redact_str(&format!(
            "auth Bearer {TOKEN}, b64 {}",
            STANDARD.encode(TOKEN)
        )),
        "auth Bearer [REDACTED:forum_token], b64 [REDACTED:forum_token]"
    );
    assert_eq!(
        r.redact_str(r#"{"pw":"p\"ss/wörd\\x"}"#),
        r#"{"pw":"[REDACTED:pw]"}"#
    );
}

#[test]
fn secrets_added_at_run_time_are_redacted() {
    let r = redactor();
    assert_eq!(r.len(), 2);
    r.add("oauth:forum", &Secret::new("access-abcdef-123"));
    r.add("oauth:forum", &Secret::new("access-abcdef-123"));
    r.add("short", &Secret::new("abc"));
    assert_eq!(r.len(), 3);
    assert_eq!(
        redact(&r, r#"{"t":"access-abcdef-123"}"#).unwrap(),
        r#"{"t":"[REDACTED:oauth:forum]"}"#
    );
    assert_eq!(format!("{r:?}"), "Redactor { secrets: 3 }");
}

#[test]
fn short_secrets_are_skipped() {
    let r = Redactor::new(vec![("s".into(), Secret::new("1234567"))]);
    assert!(r.is_empty());
    assert!(redact(&r, r#"{"t":"1234567"}"#).is_none());
}

#[test]
fn unescape_decodes_json_strings_leniently() {
    assert_eq!(
        crate::json::unescape(br#"a\"b\\c\/d\n\u00e9\ud83d\ude00"#),
        "a\"b\\c/d\né😀"
    );
    assert_eq!(
        crate::json::unescape(br#"\ud800x\q\u12"#),
        "\u{fffd}x\\q\\u12"
    );
}

#[test]
fn invalid_frames_never_panic() {
    let r = redactor();
    for frame in [
        "\"tok-0123456789",
        "\"\\",
        "{\"a\":\"tok-0123456789\\",
        "tok-0123456789",
        "\\u",
        "\"\\u00",
    ] {
        let _ = r.redact_frame(frame.as_bytes());
    }
}

// === property: random JSON with secrets anywhere ===

const SECRETS: [&str; 3] = ["tok-0123456789", "Zx9/Qw+ab=cd", "näive-sécret"];

fn prop_redactor() -> Redactor {
    Redactor::new(
        SECRETS
            .iter()
            .enumerate()
            .map(|(i, s)| (format!("s{i}"), Secret::new(*s)))
            .collect(),
    )
}

/// A string that may hold a secret, raw or encoded, amid other text.
fn text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        "[ -~]{0,6}",
        "[\\u{0}-\\u{1f}\"\\\\é€😀]{0,3}",
        (0..SECRETS.len(), 0..5usize).prop_map(|(i, how)| {
            let s = SECRETS[i];
            match how {
                0 => s.to_owned(),
                1 => STANDARD.encode(format!("ab{s}")),
                2 => URL_SAFE_NO_PAD.encode(format!("c{s}")),
                3 => hex::encode(s),
                _ => s.to_uppercase(),
            }
        }),
    ];
    prop::collection::vec(piece, 0..4).prop_map(|v| v.concat())
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        text().prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map(text(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// How the frame is written: compact, pretty, or with every non-ASCII and `/` escaped.
fn spell(v: &Value, how: u8) -> String {
    match how {
        0 => v.to_string(),
        1 => serde_json::to_string_pretty(v).unwrap(),
        _ => {
            let mut out = String::new();
            for c in v.to_string().chars() {
                if c == '/' {
                    out.push_str("\\/");
                } else if !c.is_ascii() {
                    let mut units = [0u16; 2];
                    for u in c.encode_utf16(&mut units) {
                        out.push_str(&format!("\\u{u:04x}"));
                    }
                } else {
                    out.push(c);
                }
            }
            out
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn output_is_valid_json_without_any_form_of_a_secret(v in json_value(), how in 0u8..3) {
        let r = prop_redactor();
        let frame = spell(&v, how);
        let out = match r.redact_frame(frame.as_bytes()) {
            Some(out) => String::from_utf8(out).unwrap(),
            None => frame.clone(),
        };
        let back: Value = serde_json::from_str(&out).unwrap();
        // Searched in the decoded value: no escaping can hide a secret.
        let decoded = back.to_string();
        for s in SECRETS {
            for form in forms(s) {
                prop_assert!(!decoded.contains(&form), "{:?} in {}", form, decoded);
            }
        }
        if !SECRETS.iter().any(|s| forms(s).iter().any(|f| frame.contains(f.as_str())))
            && !frame.contains("\\u") && !frame.contains("\\/")
        {
            prop_assert!(r.redact_frame(frame.as_bytes()).is_none());
        }
    }
}
