#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::es_number::write_es_double;
use serde_json::json;

fn canon(v: &Value) -> String {
    String::from_utf8(canonical_json(v)).unwrap()
}

fn es(x: f64) -> String {
    let mut s = String::new();
    write_es_double(&mut s, x);
    s
}

#[test]
fn numbers_print_like_ecmascript() {
    // Values worked out by hand from ECMAScript's Number::toString rules.
    let cases: [(f64, &str); 18] = [
        (0.0, "0"),
        (-0.0, "0"),
        (1.0, "1"),
        (-1.5, "-1.5"),
        (0.1, "0.1"),
        (100.0, "100"),
        (1e20, "100000000000000000000"),
        (1e21, "1e+21"),
        (1.5e21, "1.5e+21"),
        (123456.789, "123456.789"),
        (1e-6, "0.000001"),
        (1.25e-6, "0.00000125"),
        (1e-7, "1e-7"),
        (-1.25e-7, "-1.25e-7"),
        (5e-324, "5e-324"),
        (f64::MAX, "1.7976931348623157e+308"),
        (9007199254740992.0, "9007199254740992"),
        (0.1 + 0.2, "0.30000000000000004"),
    ];
    for (x, want) in cases {
        assert_eq!(es(x), want, "{x:e}");
    }
}

#[test]
fn integers_print_exactly() {
    assert_eq!(
        canon(&json!([0, -7, 9007199254740991_i64, u64::MAX, i64::MIN])),
        "[0,-7,9007199254740991,18446744073709551615,-9223372036854775808]"
    );
    // A float that is integral prints without a fraction, as in ECMAScript.
    assert_eq!(canon(&json!([3.0, -0.0, 1e300])), "[3,0,1e+300]");
}

#[test]
fn strings_use_minimal_escaping() {
    let s = "\u{0}\u{8}\t\n\u{b}\u{c}\r\u{1f} \"\\/\u{7f}\u{80}é€\u{2028}😀";
    assert_eq!(
        canon(&json!(s)),
        "\"\\u0000\\b\\t\\n\\u000b\\f\\r\\u001f \\\"\\\\/\u{7f}\u{80}é€\u{2028}😀\""
    );
    assert_eq!(canon(&json!("")), "\"\"");
}

#[test]
fn keys_sort_by_utf16_code_units() {
    // U+FB33 is one UTF-16 unit above the surrogates that encode U+1F600, so
    // UTF-16 order puts the emoji first although UTF-8 order would not.
    let v: Value = serde_json::from_str(
        r#"{"\ufb33":1,"\ud83d\ude00":2,"\u20ac":3,"\u00f6":4,"\u0080":5,"1":6,"\r":7,"a":8,"A":9,"":10}"#,
    )
    .unwrap();
    assert_eq!(
        canon(&v),
        "{\"\":10,\"\\r\":7,\"1\":6,\"A\":9,\"a\":8,\"\u{80}\":5,\"ö\":4,\"€\":3,\"😀\":2,\"\u{fb33}\":1}"
    );
}

#[test]
fn whole_value_without_whitespace() {
    let v: Value = serde_json::from_str(
        r#"{ "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
             "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
             "literals": [null, true, false] }"#,
    )
    .unwrap();
    assert_eq!(
        canon(&v),
        "{\"literals\":[null,true,false],\"numbers\":[333333333.3333333,1e+30,4.5,0.002,1e-27],\
         \"string\":\"€$\\u000f\\nA'B\\\"\\\\\\\\\\\"/\"}"
    );
}

#[test]
fn nested_objects_are_sorted_at_every_level() {
    let a: Value = serde_json::from_str(r#"{"b":{"y":[{"q":1,"p":2}],"x":0},"a":null}"#).unwrap();
    assert_eq!(canon(&a), r#"{"a":null,"b":{"x":0,"y":[{"p":2,"q":1}]}}"#);
}

#[test]
fn digests_are_sha256_hex_of_the_canonical_form() {
    assert_eq!(
        sha256_hex(b""),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_eq!(
        sha256_hex(b"abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    let a: Value = serde_json::from_str(r#"{"b":1,"a":[1.0,"x"]}"#).unwrap();
    let b: Value = serde_json::from_str(r#"{ "a" : [ 1 , "\u0078" ] , "b" : 1.0 }"#).unwrap();
    assert_eq!(digest_json(&a), digest_json(&b));
    assert_eq!(digest_json(&a), sha256_hex(br#"{"a":[1,"x"],"b":1}"#));
    assert_ne!(
        digest_json(&a),
        digest_json(&json!({"a": [1, "x"], "b": 2}))
    );
}

#[test]
fn the_streamed_digest_is_the_digest_of_the_canonical_text() {
    // Long strings cross the hashing buffer; keys out of map order take the sorting path.
    let long = "x".repeat(300);
    let v: Value = serde_json::from_str(&format!(
        r#"{{"\ufb33":[1,-9223372036854775808,18446744073709551615,0.5],"\ud83d\ude00":"{long}","a\n":{{"b":"\u0001"}}}}"#
    ))
    .unwrap();
    for v in [v, json!(null), json!(""), json!({}), json!([]), json!(-0.0)] {
        assert_eq!(digest_json(&v), sha256_hex(&canonical_json(&v)), "{v}");
    }
}
