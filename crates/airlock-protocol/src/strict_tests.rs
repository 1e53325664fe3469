#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use serde_json::json;

fn ambiguous(text: &str) -> (String, Value, bool) {
    match parse_strict(text) {
        Err(StrictError::Ambiguous {
            reason,
            value,
            top_level,
        }) => (reason, value, top_level),
        other => panic!("expected an ambiguity for {text}, got {other:?}"),
    }
}

fn syntax(text: &str) -> String {
    match parse_strict(text) {
        Err(StrictError::Syntax(e)) => e.to_string(),
        other => panic!("expected a syntax error for {text}, got {other:?}"),
    }
}

#[test]
fn accepts_plain_json_and_builds_the_same_value_as_serde_json() {
    let text = r#"{"a":[1,-2,3.5,"x\u00e9\ud83d\ude00",true,null,{}],"b":{"c":-0.0,"d":1e300}}"#;
    let ours = parse_strict(text).unwrap();
    let theirs: Value = serde_json::from_str(text).unwrap();
    assert_eq!(ours, theirs);
}

#[test]
fn duplicate_keys_are_found_at_any_depth_and_after_unescaping() {
    let (reason, _, top) = ambiguous(r#"{"a":1,"a":2}"#);
    assert_eq!(reason, r#"duplicate key "a""#);
    assert!(top);

    let (reason, value, top) = ambiguous(r#"{"id":1,"p":{"q":[{"x":1,"\u0078":2}]}}"#);
    assert_eq!(reason, r#"duplicate key "x""#);
    assert!(!top, "a nested duplicate leaves the outer keys readable");
    assert_eq!(value["id"], json!(1));
}

#[test]
fn case_colliding_keys_are_refused() {
    for text in [
        r#"{"name":1,"Name":2}"#,
        r#"{"NAME":1,"nAmE":2}"#,
        // Kelvin sign and long s fold to ASCII in Go's EqualFold.
        "{\"kind\":1,\"\u{212a}ind\":2}",
        "{\"session\":1,\"\u{17f}ession\":2}",
    ] {
        let (reason, _, _) = ambiguous(text);
        assert!(
            reason.contains("differ only in letter case"),
            "{text}: {reason}"
        );
    }
    // Different words with the same letters in other cases are fine.
    assert!(parse_strict(r#"{"name":1,"names":2,"progressToken":3}"#).is_ok());
}

#[test]
fn fold_case_follows_simple_folding() {
    assert_eq!(fold_case("already_lower-1"), None);
    assert_eq!(fold_case("progressToken").as_deref(), Some("progresstoken"));
    assert_eq!(fold_case("\u{212a}").as_deref(), Some("k"));
    assert_eq!(fold_case("\u{17f}").as_deref(), Some("s"));
    assert_eq!(fold_case("\u{c9}t\u{c9}").as_deref(), Some("\u{e9}t\u{e9}"));
    // ß has no one-character uppercase; ẞ folds to ß.
    assert_eq!(fold_case("\u{df}"), None);
    assert_eq!(fold_case("\u{1e9e}").as_deref(), Some("\u{df}"));
}

#[test]
fn proto_key_is_refused() {
    let (reason, _, top) = ambiguous(r#"{"a":{"__proto__":{"admin":true}}}"#);
    assert!(reason.contains("__proto__"), "{reason}");
    assert!(!top);
}

#[test]
fn unsafe_integers_are_refused_and_replaced_by_null() {
    let max = MAX_SAFE_INTEGER;
    assert_eq!(
        parse_strict(&format!("[{max},-{max}]")).unwrap(),
        json!([max, -(max as i64)])
    );
    // Within i64/u64: seen by the visitor, replaced by null.
    for text in [
        format!("[{}]", max + 1),
        format!("[-{}]", max + 1),
        "[18446744073709551615]".to_owned(),
        "[-9223372036854775808]".to_owned(),
    ] {
        let (reason, value, top) = ambiguous(&text);
        assert!(reason.contains("outside ±(2^53−1)"), "{text}: {reason}");
        assert_eq!(value, json!([null]), "{text}");
        assert!(!top);
    }
    // Beyond: serde_json gives a float, the text scan finds the literal.
    for (text, literal) in [
        ("[18446744073709551616]", "18446744073709551616"),
        ("[-9223372036854775809]", "-9223372036854775809"),
        (
            r#"{"a":"1e5","b":[1e30,123456789012345678901234567890]}"#,
            "123456789012345678901234567890",
        ),
    ] {
        let (reason, _, top) = ambiguous(text);
        assert_eq!(
            reason,
            format!("integer {literal:?} is outside ±(2^53−1): JavaScript would round it")
        );
        assert!(!top);
    }
}

#[test]
fn large_floats_are_not_mistaken_for_integers() {
    let value = parse_strict(
        r#"{"s":"12345678901234567890","f":[1e20,1.5e300,-1E+19,123456789012345678901.5]}"#,
    )
    .unwrap();
    assert_eq!(value["f"][0], json!(1e20));
    assert_eq!(value["f"][3], json!(123456789012345678901.5));
}

#[test]
fn long_integer_literal_skips_strings_and_floats() {
    assert_eq!(
        long_integer_literal(r#"["12345678901234567890",1.2345678901234567890]"#),
        None
    );
    assert_eq!(long_integer_literal(r#"["\"",1e99999999999999999]"#), None);
    assert_eq!(
        long_integer_literal(r#"{"a\\":"\"x",  "b":[-12345678901234567]}"#),
        Some("-12345678901234567")
    );
}

#[test]
fn serde_json_refusals_are_syntax_errors() {
    assert!(syntax(r#"["\ud800"]"#).contains("hex escape"));
    assert!(syntax(r#"["\udc00"]"#).contains("surrogate"));
    assert!(syntax(r#"{"\ud800x":1}"#).contains("hex escape"));
    assert!(syntax(r#"["\ud800\u0041"]"#).contains("surrogate"));
    assert!(syntax("[1e400]").contains("out of range"));
    assert!(syntax("[-1e400]").contains("out of range"));
    assert!(syntax("[NaN]").contains("expected value"));
    assert!(syntax("{} {}").contains("trailing characters"));
    assert!(syntax("[1,]").contains("trailing comma"));
    assert!(syntax(&format!("{}{}", "[".repeat(200), "]".repeat(200))).contains("recursion limit"));
    // 127 levels of nesting are fine.
    assert!(parse_strict(&format!("{}{}", "[".repeat(127), "]".repeat(127))).is_ok());
}

#[test]
fn first_problem_wins() {
    let (reason, _, _) = ambiguous(r#"{"a":{"b":1,"b":2},"a":3}"#);
    assert_eq!(reason, r#"duplicate key "b""#);
}

#[test]
fn long_keys_are_cut_short_in_messages() {
    let key = "k".repeat(500);
    let (reason, _, _) = ambiguous(&format!(r#"{{"{key}":1,"{key}":2}}"#));
    assert!(reason.len() < 100, "{reason}");
    assert!(reason.ends_with('…'));
}
