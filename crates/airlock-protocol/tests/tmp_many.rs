#![allow(clippy::unwrap_used)]
#[test]
fn many() {
    let text = std::fs::read_to_string("/tmp/es_many.txt").unwrap();
    let mut bad = 0;
    for line in text.lines() {
        let (bits, want) = line.split_once(' ').unwrap();
        let x = f64::from_bits(u64::from_str_radix(bits, 16).unwrap());
        let got = airlock_protocol::canonical_json(&serde_json::Value::from(x));
        if std::str::from_utf8(&got).unwrap() != want { bad += 1; if bad < 10 { eprintln!("{bits} {want} {}", String::from_utf8_lossy(&got)); } }
    }
    assert_eq!(bad, 0);
}
