//! RFC 8785 vectors produced by ECMAScript itself (`data/gen_vectors.js`):
//! the RFC defines number and string output by what `JSON.stringify` does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use airlock_protocol::canonical_json;
use serde_json::Value;

#[test]
fn every_double_prints_like_number_to_string() {
    let mut checked = 0;
    for line in include_str!("data/es_numbers.txt").lines() {
        let (bits, want) = line.split_once(' ').unwrap();
        let x = f64::from_bits(u64::from_str_radix(bits, 16).unwrap());
        let got = canonical_json(&Value::from(x));
        assert_eq!(std::str::from_utf8(&got).unwrap(), want, "bits {bits}");
        checked += 1;
    }
    assert!(checked >= 4000, "only {checked} vectors");
}

#[test]
fn random_values_canonicalise_like_the_reference() {
    let mut checked = 0;
    for line in include_str!("data/jcs_vectors.jsonl").lines() {
        let (input, want): (String, String) = serde_json::from_str(line).unwrap();
        let value: Value = serde_json::from_str(&input).unwrap();
        let got = canonical_json(&value);
        assert_eq!(std::str::from_utf8(&got).unwrap(), want, "input {input}");
        checked += 1;
    }
    assert_eq!(checked, 500);
}
