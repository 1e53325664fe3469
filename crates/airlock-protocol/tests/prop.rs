//! Property tests for the frame parser and canonical JSON.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use airlock_protocol::{
    canonical_json, digest_json, error_response, error_response_raw_id, parse_frame, parse_outline,
    raw_id_of_refused, sha256_hex, Limits, INVALID_REQUEST, PARSE_ERROR,
};
use proptest::prelude::*;
use serde_json::{Map, Value};

const MAX_SAFE: i64 = (1 << 53) - 1;

/// Keys with no upper case and nothing that folds, so that distinct keys
/// never collide under the parser's case rule.
fn key() -> impl Strategy<Value = String> {
    "[a-z0-9_é😀\u{e000}/ $.-]{0,6}"
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-MAX_SAFE..=MAX_SAFE).prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |x| x.is_finite())
            .prop_map(Value::from),
        any::<String>().prop_map(Value::String),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn json_object() -> impl Strategy<Value = Value> {
    prop::collection::btree_map(key(), json_value(), 0..8)
        .prop_map(|m| Value::Object(m.into_iter().collect()))
}

fn id() -> impl Strategy<Value = Value> {
    prop_oneof![
        (-MAX_SAFE..=MAX_SAFE).prop_map(Value::from),
        any::<String>().prop_map(Value::String),
    ]
}

/// Any valid JSON-RPC message: request, notification, response, error.
fn frame_value() -> impl Strategy<Value = Value> {
    (
        0..4u8,
        id(),
        any::<String>(),
        json_object(),
        json_value(),
        any::<bool>(),
    )
        .prop_map(|(kind, id, method, params, result, with_params)| {
            let mut m = Map::new();
            m.insert("jsonrpc".into(), "2.0".into());
            match kind {
                0 | 1 => {
                    if kind == 0 {
                        m.insert("id".into(), id);
                    }
                    m.insert("method".into(), method.into());
                    if with_params {
                        m.insert("params".into(), params);
                    }
                }
                2 => {
                    m.insert("id".into(), id);
                    m.insert("result".into(), result);
                }
                _ => {
                    m.insert("id".into(), if with_params { id } else { Value::Null });
                    let mut e = Map::new();
                    e.insert("code".into(), (-32601).into());
                    e.insert("message".into(), method.into());
                    e.insert("data".into(), result);
                    m.insert("error".into(), Value::Object(e));
                }
            }
            Value::Object(m)
        })
}

/// A JSON string literal for `s` with every character as a `\u` escape.
fn escaped_everywhere(s: &str) -> String {
    let mut out = String::from("\"");
    for unit in s.encode_utf16() {
        out.push_str(&format!("\\u{unit:04x}"));
    }
    out.push('"');
    out
}

fn object_text(entries: &[(String, String)]) -> String {
    let body: Vec<String> = entries.iter().map(|(k, v)| format!("{k}:{v}")).collect();
    format!("{{{}}}", body.join(","))
}

fn lit(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// The digest streamed into SHA-256 is the digest of the canonical bytes.
    #[test]
    fn streamed_digest_is_sha256_of_canonical_json(v in json_value(), n in any::<i64>(), u in any::<u64>()) {
        for v in [v, Value::from(n), Value::from(u)] {
            prop_assert_eq!(digest_json(&v), sha256_hex(&canonical_json(&v)));
        }
    }

    /// (1) Every valid frame serde_json writes is read back as the same value.
    #[test]
    fn valid_frames_round_trip(v in frame_value(), crlf in any::<bool>()) {
        let mut bytes = serde_json::to_vec(&v).unwrap();
        let raw_len = bytes.len();
        bytes.extend_from_slice(if crlf { b"\r\n" } else { b"\n" });
        let frame = parse_frame(&bytes, &Limits::default())
            .unwrap_or_else(|e| panic!("refused {}: {e}", String::from_utf8_lossy(&bytes)));
        prop_assert_eq!(frame.value(), &v);
        prop_assert_eq!(frame.raw(), &bytes[..raw_len]);
        outline_agrees(&bytes);
    }

    /// (5) The outline of a frame refuses exactly what the full parse refuses, with the same
    /// error, wherever the ambiguity is nested: it skips building deep values, not checking
    /// them.
    #[test]
    fn the_outline_judges_every_depth_like_the_full_parse(
        v in frame_value(),
        trap in prop_oneof![
            Just(r#"{"a":1,"a":2}"#.to_owned()),
            Just(r#"{"Name":1,"name":2}"#.to_owned()),
            Just(r#"{"\u212a":1,"k":2}"#.to_owned()),
            Just(r#"{"__proto__":{}}"#.to_owned()),
            Just("[9007199254740993]".to_owned()),
            Just("[-9007199254740992]".to_owned()),
            Just("[123456789012345678901234]".to_owned()),
            Just(r#"{"x":"\ud800"}"#.to_owned()),
            Just(r#"{"a":1,"b":{"a":1,"a":1}}"#.to_owned()),
            Just(r#"{"isError":true}"#.to_owned()),
        ],
        depth in 0..5usize,
        at in any::<prop::sample::Index>(),
    ) {
        let mut text = serde_json::to_string(&v).unwrap();
        // Wrap the trap `depth` levels deep and put it in place of one of the frame's values.
        let mut nested = trap;
        for level in 0..depth {
            nested = if level % 2 == 0 { format!("[{nested}]") } else { format!(r#"{{"k":{nested}}}"#) };
        }
        let colons: Vec<usize> = text.match_indices("\":").map(|(i, _)| i + 2).collect();
        if colons.is_empty() {
            return Ok(());
        }
        let cut = colons[at.index(colons.len())];
        // Replace the value after that colon, up to the next ',' or '}' at its level, by the trap:
        // cheaper to just insert it as a new member right after the colon's object opens.
        let open = text[..cut].rfind('{').unwrap_or(0);
        text.insert_str(open + 1, &format!(r#""zz":{nested},"#));
        outline_agrees(text.as_bytes());
    }

    /// (2) Arbitrary bytes never panic and only give the two parse codes.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        check_any(&bytes);
    }

    /// (2b) Nor do small corruptions of valid frames, which reach deeper.
    #[test]
    fn corrupted_frames_never_panic(
        v in frame_value(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..3u8), 1..4),
    ) {
        let mut bytes = serde_json::to_vec(&v).unwrap();
        for (at, byte, op) in edits {
            let i = at.index(bytes.len() + 1);
            match op {
                0 if i < bytes.len() => bytes[i] = byte,
                1 => bytes.insert(i, byte),
                _ if i < bytes.len() => { bytes.remove(i); }
                _ => {}
            }
        }
        check_any(&bytes);
    }

    /// (3) Canonical JSON is a fixed point: reading it back and writing it
    /// again gives the same bytes.
    #[test]
    fn canonical_json_is_idempotent(v in json_value()) {
        let once = canonical_json(&v);
        let back: Value = serde_json::from_slice(&once).unwrap();
        prop_assert_eq!(canonical_json(&back), once);
    }

    /// (3b) The order in which keys were written does not change the digest.
    #[test]
    fn key_order_does_not_change_the_digest(
        (entries, shuffled) in prop::collection::btree_map(key(), json_value(), 1..10)
            .prop_map(|m| m.into_iter().map(|(k, v)| (lit(&k), lit(&v))).collect::<Vec<_>>())
            .prop_flat_map(|e| (Just(e.clone()), Just(e).prop_shuffle())),
    ) {
        let a: Value = serde_json::from_str(&object_text(&entries)).unwrap();
        let b: Value = serde_json::from_str(&object_text(&shuffled)).unwrap();
        prop_assert_eq!(digest_json(&a), digest_json(&b));
        prop_assert_eq!(canonical_json(&a), canonical_json(&b));
    }

    /// (4) A repeated key is refused wherever it is and however it is spelled.
    #[test]
    fn duplicate_keys_are_always_refused(
        params in prop::collection::btree_map(key(), json_value(), 1..6),
        which in any::<prop::sample::Index>(),
        at in any::<prop::sample::Index>(),
        dup_value in json_value(),
        top_level in any::<bool>(),
        escape in any::<bool>(),
    ) {
        let mut inner: Vec<(String, String)> =
            params.iter().map(|(k, v)| (lit(k), lit(v))).collect();
        let mut outer: Vec<(String, String)> = vec![
            (lit(&"jsonrpc"), lit(&"2.0")),
            (lit(&"id"), lit(&1)),
            (lit(&"method"), lit(&"tools/call")),
        ];
        let target = if top_level { &mut outer } else { &mut inner };
        let name: String = serde_json::from_str(&target[which.index(target.len())].0).unwrap();
        let spelled = if escape { escaped_everywhere(&name) } else { lit(&name) };
        let pos = at.index(target.len() + 1);
        target.insert(pos, (spelled, lit(&dup_value)));
        outer.push((lit(&"params"), object_text(&inner)));
        let line = object_text(&outer);

        let err = parse_frame(line.as_bytes(), &Limits::default()).unwrap_err();
        prop_assert_eq!(err.code, PARSE_ERROR, "{}", err.message);
        prop_assert!(err.message.contains("duplicate key"), "{}", err.message);
    }
}

/// `parse_outline` and `parse_frame` agree on `bytes`: the same kind and bytes, or the same error;
/// and the outline's `result_is_error` is what the full frame says.
fn outline_agrees(bytes: &[u8]) {
    let limits = Limits::default();
    match (parse_frame(bytes, &limits), parse_outline(bytes, &limits)) {
        (Ok(frame), Ok(outline)) => {
            assert_eq!(frame.kind(), outline.kind());
            assert_eq!(frame.raw(), outline.raw());
            let is_error = frame
                .result()
                .and_then(|r| r.get("isError"))
                .and_then(Value::as_bool)
                == Some(true);
            assert_eq!(outline.result_is_error(), is_error);
            assert_eq!(outline.frame(&limits).unwrap().value(), frame.value());
        }
        (Err(a), Err(b)) => {
            assert_eq!((a.code, &a.message, &a.id), (b.code, &b.message, &b.id));
        }
        (a, b) => panic!(
            "parse_frame and parse_outline disagree on {}: {:?} vs {:?}",
            String::from_utf8_lossy(bytes),
            a.map(|f| f.kind().clone()),
            b.map(|o| o.kind().clone())
        ),
    }
}

fn check_any(bytes: &[u8]) {
    outline_agrees(bytes);
    match parse_frame(bytes, &Limits::default()) {
        Ok(frame) => {
            let c = canonical_json(frame.value());
            let back: Value = serde_json::from_slice(&c).unwrap();
            assert_eq!(canonical_json(&back), c);
        }
        Err(e) => {
            assert!(e.code == PARSE_ERROR || e.code == INVALID_REQUEST, "{e:?}");
            let line = error_response(e.id.as_ref(), e.code, &e.message, None);
            let _: Value = serde_json::from_slice(&line).unwrap();
        }
    }
}

proptest! {
    /// A request refused for an id JSON would round is answered with that id, byte for byte.
    #[test]
    fn an_unsafe_integer_id_is_echoed_byte_for_byte(
        digits in "[1-9][0-9]{16,30}",
        minus in any::<bool>(),
        method in "[a-z/]{1,12}",
    ) {
        let raw = format!("{}{digits}", if minus { "-" } else { "" });
        let frame = format!(r#"{{"jsonrpc":"2.0","id":{raw},"method":"{method}"}}"#);
        let err = parse_frame(frame.as_bytes(), &Limits::default()).unwrap_err();
        let id = raw_id_of_refused(frame.as_bytes());
        // 17 digits or more: beyond 2^53 - 1.
        prop_assert!(err.id.is_none());
        prop_assert_eq!(id.as_deref(), Some(raw.as_str()));
        let line = error_response_raw_id(&raw, err.code, &err.message);
        let text = String::from_utf8(line).unwrap();
        let expected = format!(r#"{{"jsonrpc":"2.0","id":{raw},"#);
        prop_assert!(text.starts_with(&expected), "{}", text);
    }
}
