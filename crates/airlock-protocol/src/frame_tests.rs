#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::error::{error_response, PARSE_ERROR};
use serde_json::json;

fn parse(line: &str) -> Result<Frame, FrameError> {
    parse_frame(line.as_bytes(), &Limits::default())
}

fn ok(line: &str) -> Frame {
    parse(line).unwrap_or_else(|e| panic!("{line} was refused: {e}"))
}

/// Asserts a refusal with `code`, a message containing `needle`, and `id`.
fn refused(line: impl AsRef<[u8]>, code: i32, needle: &str, id: Option<Id>) {
    let line = line.as_ref();
    let shown = String::from_utf8_lossy(line);
    match parse_frame(line, &Limits::default()) {
        Ok(frame) => panic!("{shown} was accepted as {:?}", frame.kind()),
        Err(e) => {
            assert_eq!(e.code, code, "{shown}: {}", e.message);
            assert!(
                e.message.contains(needle),
                "{shown}: {:?} lacks {needle:?}",
                e.message
            );
            assert_eq!(e.id, id, "{shown}");
        }
    }
}

const CALL: &str = r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"forum_post","arguments":{"channel":"public","text":"hello"},"_meta":{"progressToken":"p-7"}}}"#;

// === kinds ===

#[test]
fn typical_tools_call_is_a_request_with_every_accessor() {
    let frame = ok(CALL);
    assert_eq!(
        frame.kind(),
        &FrameKind::Request {
            id: Id::Int(7),
            method: "tools/call".into()
        }
    );
    assert_eq!(frame.raw(), CALL.as_bytes());
    assert_eq!(frame.method(), Some("tools/call"));
    assert_eq!(frame.id(), Some(&Id::Int(7)));
    assert_eq!(frame.params().unwrap()["name"], json!("forum_post"));
    assert_eq!(frame.progress_token(), Some(&json!("p-7")));
    assert_eq!(frame.result(), None);
    assert_eq!(frame.value(), &serde_json::from_str::<Value>(CALL).unwrap());
    assert_eq!(frame.clone().into_raw(), CALL.as_bytes());
}

#[test]
fn notification_has_a_method_and_no_id() {
    let frame = ok(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
    assert_eq!(
        frame.kind(),
        &FrameKind::Notification {
            method: "notifications/initialized".into()
        }
    );
    assert_eq!(frame.id(), None);
    assert_eq!(frame.params(), None);
    assert_eq!(frame.progress_token(), None);
}

#[test]
fn response_and_its_result() {
    let frame = ok(r#"{"jsonrpc":"2.0","id":"abc","result":{"content":[]}}"#);
    assert_eq!(
        frame.kind(),
        &FrameKind::Response {
            id: Id::Str("abc".into())
        }
    );
    assert_eq!(frame.result(), Some(&json!({"content": []})));
    assert_eq!(frame.method(), None);
    assert_eq!(frame.id(), Some(&Id::Str("abc".into())));
    // JSON-RPC allows any result value, null included.
    assert_eq!(
        ok(r#"{"jsonrpc":"2.0","id":1,"result":null}"#).kind(),
        &FrameKind::Response { id: Id::Int(1) }
    );
}

#[test]
fn error_response_with_id_null_or_absent() {
    let e = r#""error":{"code":-32601,"message":"no","data":[1]}"#;
    let with = ok(&format!(r#"{{"jsonrpc":"2.0","id":5,{e}}}"#));
    assert_eq!(
        with.kind(),
        &FrameKind::ErrorResponse {
            id: Some(Id::Int(5))
        }
    );
    assert_eq!(with.error().unwrap()["code"], json!(-32601));
    for line in [
        format!(r#"{{"jsonrpc":"2.0","id":null,{e}}}"#),
        format!(r#"{{"jsonrpc":"2.0",{e}}}"#),
    ] {
        let frame = ok(&line);
        assert_eq!(frame.kind(), &FrameKind::ErrorResponse { id: None });
        assert_eq!(frame.id(), None);
    }
}

#[test]
fn params_may_be_an_array_and_ids_may_be_negative_or_empty_strings() {
    let frame = ok(r#"{"jsonrpc":"2.0","id":-9007199254740991,"method":"m","params":[1,2]}"#);
    assert_eq!(frame.id(), Some(&Id::Int(-9007199254740991)));
    assert_eq!(frame.params(), Some(&json!([1, 2])));
    assert_eq!(
        ok(r#"{"jsonrpc":"2.0","id":"","method":"m"}"#).id(),
        Some(&Id::Str(String::new()))
    );
}

#[test]
fn progress_token_only_when_string_or_integer() {
    let with = |token: &str| {
        ok(&format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"_meta":{{"progressToken":{token}}}}}}}"#
        ))
    };
    assert_eq!(with("42").progress_token(), Some(&json!(42)));
    assert_eq!(with(r#""t""#).progress_token(), Some(&json!("t")));
    for bad in ["1.5", "null", "true", "{}", "[1]"] {
        assert_eq!(with(bad).progress_token(), None, "{bad}");
    }
}

// === line handling ===

#[test]
fn trailing_newline_and_crlf_are_stripped_from_raw() {
    let body = r#"{"jsonrpc":"2.0","method":"ping","id":1}"#;
    for line in [
        format!("{body}\n"),
        format!("{body}\r\n"),
        format!("{body}\r"),
        body.to_owned(),
    ] {
        assert_eq!(ok(&line).raw(), body.as_bytes(), "{line:?}");
    }
    // Spaces and tabs around the object are JSON whitespace and stay in raw.
    assert_eq!(
        ok(&format!(" \t{body} ")).raw(),
        format!(" \t{body} ").as_bytes()
    );
}

#[test]
fn raw_line_breaks_inside_the_frame_are_refused() {
    let inner_cr = "{\"jsonrpc\":\"2.0\",\r\"method\":\"ping\"}";
    refused(inner_cr, PARSE_ERROR, "raw line break", None);
    refused(
        "{\"jsonrpc\":\"2.0\",\n\"method\":\"ping\"}",
        PARSE_ERROR,
        "raw line break",
        None,
    );
    refused(
        "{\"jsonrpc\":\"2.0\",\"method\":\"ping\"}\r\r\n",
        PARSE_ERROR,
        "raw line break",
        None,
    );
    refused(
        "{\"jsonrpc\":\"2.0\",\"method\":\"ping\"}\n\n",
        PARSE_ERROR,
        "raw line break",
        None,
    );
}

#[test]
fn escaped_line_breaks_and_unicode_separators_in_strings_are_fine() {
    let frame = ok(
        "{\"jsonrpc\":\"2.0\",\"method\":\"m\",\"params\":{\"t\":\"a\\nb\\r\u{2028}\u{2029}\"}}",
    );
    assert_eq!(
        frame.params().unwrap()["t"],
        json!("a\nb\r\u{2028}\u{2029}")
    );
}

#[test]
fn empty_and_blank_lines_are_parse_errors() {
    for line in ["", "\n", "\r\n", "   ", " \t \r\n"] {
        refused(line, PARSE_ERROR, "empty frame", None);
    }
}

#[test]
fn size_limit_is_checked_before_parsing() {
    let limits = Limits {
        max_frame_bytes: 10,
    };
    // Not even JSON: the limit must fire first.
    let e = parse_frame(b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", &limits).unwrap_err();
    assert_eq!(e.code, INVALID_REQUEST);
    assert_eq!(e.message, "frame of 11 bytes exceeds the limit of 10 bytes");
    assert_eq!(e.id, None);
    // The line ending does not count.
    let line = br#"{"a":1234}"#;
    assert_eq!(parse_frame(&[&line[..], b"\r\n"].concat(), &limits).unwrap_err().message,
        "unexpected member \"a\"; a JSON-RPC 2.0 message has only jsonrpc, id, method, params, result, error");
    assert_eq!(Limits::default().max_frame_bytes, 4 * 1024 * 1024);
}

#[test]
fn invalid_utf8_and_bom_are_parse_errors() {
    refused(
        b"{\"jsonrpc\":\"2.0\",\"method\":\"\xff\"}",
        PARSE_ERROR,
        "not valid UTF-8 (at byte 27)",
        None,
    );
    // An overlong encoding of '"' and a UTF-8-encoded surrogate are not UTF-8 either.
    refused(
        b"{\"a\":\"\xc0\xa2\"}",
        PARSE_ERROR,
        "not valid UTF-8",
        None,
    );
    refused(
        b"{\"a\":\"\xed\xa0\x80\"}",
        PARSE_ERROR,
        "not valid UTF-8",
        None,
    );
    refused(
        "\u{feff}{\"jsonrpc\":\"2.0\",\"method\":\"ping\"}",
        PARSE_ERROR,
        "byte order mark",
        None,
    );
}

// === JSON-level ambiguity (-32700) ===

#[test]
fn syntax_errors_are_parse_errors_without_id() {
    for line in [
        "{",
        "not json",
        r#"{"jsonrpc":"2.0","id":1,"method":"m",}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"m"} {"x":1}"#,
        r#"{'jsonrpc':'2.0'}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"m","params":{"x":NaN}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"m"}/* c */"#,
    ] {
        refused(line, PARSE_ERROR, "invalid JSON", None);
    }
}

#[test]
fn duplicate_keys_are_refused_with_the_id_when_it_is_not_in_doubt() {
    // Nested duplicate: the id is unambiguous, so the error can answer it.
    refused(
        r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"safe","name":"rm"}}"#,
        PARSE_ERROR,
        "duplicate key \"name\"",
        Some(Id::Int(3)),
    );
    // Escaped spelling of the same key.
    refused(
        r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"safe","n\u0061me":"rm"}}"#,
        PARSE_ERROR,
        "duplicate key \"name\"",
        Some(Id::Int(3)),
    );
    // Top-level duplicates: nothing at the top level can be trusted.
    refused(
        r#"{"jsonrpc":"2.0","id":1,"id":2,"method":"m"}"#,
        PARSE_ERROR,
        "duplicate key \"id\"",
        None,
    );
    refused(
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","method":"tools/call"}"#,
        PARSE_ERROR,
        "duplicate key \"method\"",
        None,
    );
    refused(
        r#"{"jsonrpc":"2.0","id":1,"method":"m","params":{"a":[{"b":{"c":1,"c":1}}]}}"#,
        PARSE_ERROR,
        "duplicate key \"c\"",
        Some(Id::Int(1)),
    );
}

#[test]
fn case_colliding_keys_are_refused() {
    refused(
        r#"{"jsonrpc":"2.0","id":"x","method":"tools/call","params":{"name":"safe","Name":"rm"}}"#,
        PARSE_ERROR,
        "differ only in letter case",
        Some(Id::Str("x".into())),
    );
    refused(
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","METHOD":"tools/call"}"#,
        PARSE_ERROR,
        "differ only in letter case",
        None,
    );
}

#[test]
fn proto_keys_are_refused() {
    refused(
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"arguments":{"__proto__":{"admin":true}}}}"#,
        PARSE_ERROR,
        "__proto__",
        Some(Id::Int(1)),
    );
}

#[test]
fn lone_surrogates_are_refused_anywhere() {
    for line in [
        r#"{"jsonrpc":"2.0","id":1,"method":"m","params":{"t":"\ud800"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"m","params":{"t":"\udfff x"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"m","params":{"\ud83d":1}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"\ud800\ud800"}"#,
    ] {
        // serde_json says "lone leading surrogate in hex escape" or
        // "unexpected end of hex escape", by where the string ends.
        refused(line, PARSE_ERROR, "hex escape", None);
    }
    // A proper pair is one character.
    let frame = ok(r#"{"jsonrpc":"2.0","id":1,"method":"m","params":{"t":"\ud83d\ude00"}}"#);
    assert_eq!(frame.params().unwrap()["t"], json!("😀"));
}

#[test]
fn unsafe_integers_are_refused_anywhere() {
    refused(
        r#"{"jsonrpc":"2.0","id":1,"method":"m","params":{"n":9007199254740992}}"#,
        PARSE_ERROR,
        "integer \"9007199254740992\" is outside ±(2^53−1)",
        Some(Id::Int(1)),
    );
    refused(
        r#"{"jsonrpc":"2.0","id":1,"method":"m","params":{"n":[-100000000000000000000000]}}"#,
        PARSE_ERROR,
        "outside ±(2^53−1)",
        Some(Id::Int(1)),
    );
    // An unsafe id is no readable id.
    refused(
        r#"{"jsonrpc":"2.0","id":9007199254740993,"method":"m"}"#,
        PARSE_ERROR,
        "outside",
        None,
    );
    // Large floats are the same double everywhere, so they pass.
    let frame =
        ok(r#"{"jsonrpc":"2.0","id":1,"method":"m","params":{"n":1e300,"m":9007199254740991}}"#);
    assert_eq!(frame.params().unwrap()["n"], json!(1e300));
}

#[test]
fn numbers_overflowing_f64_and_deep_nesting_are_parse_errors() {
    refused(
        r#"{"jsonrpc":"2.0","id":1,"method":"m","params":{"n":1e309}}"#,
        PARSE_ERROR,
        "out of range",
        None,
    );
    let deep = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"m","params":{{"a":{}{}}}}}"#,
        "[".repeat(130),
        "]".repeat(130)
    );
    refused(deep, PARSE_ERROR, "recursion limit", None);
}

// === JSON-RPC shape (-32600) ===

#[test]
fn non_objects_and_batches_are_invalid_requests() {
    refused(
        r#"[{"jsonrpc":"2.0","method":"ping"}]"#,
        INVALID_REQUEST,
        "batches are not supported",
        None,
    );
    refused("[]", INVALID_REQUEST, "batches are not supported", None);
    for line in ["1", "\"x\"", "null", "true"] {
        refused(line, INVALID_REQUEST, "must be a JSON object", None);
    }
}

#[test]
fn jsonrpc_member_must_be_exactly_2_0() {
    refused(
        r#"{"id":1,"method":"m"}"#,
        INVALID_REQUEST,
        "missing \"jsonrpc\"",
        Some(Id::Int(1)),
    );
    for v in ["\"1.0\"", "\"2.0 \"", "2.0", "null", "\"2\""] {
        refused(
            format!(r#"{{"jsonrpc":{v},"id":1,"method":"m"}}"#),
            INVALID_REQUEST,
            "exactly \"2.0\"",
            Some(Id::Int(1)),
        );
    }
}

#[test]
fn ids_must_be_strings_or_integers() {
    for v in ["1.0", "1.5", "-0", "true", "{}", "[1]", "1e2"] {
        refused(
            format!(r#"{{"jsonrpc":"2.0","id":{v},"method":"m"}}"#),
            INVALID_REQUEST,
            "string or an integer",
            None,
        );
    }
    refused(
        r#"{"jsonrpc":"2.0","id":null,"method":"m"}"#,
        INVALID_REQUEST,
        "must not be null",
        None,
    );
    refused(
        r#"{"jsonrpc":"2.0","id":null,"result":{}}"#,
        INVALID_REQUEST,
        "needs a string or integer",
        None,
    );
    refused(
        r#"{"jsonrpc":"2.0","result":{}}"#,
        INVALID_REQUEST,
        "needs a string or integer",
        None,
    );
    refused(
        r#"{"jsonrpc":"2.0","id":1.5,"error":{"code":1,"message":"m"}}"#,
        INVALID_REQUEST,
        "string or an integer",
        None,
    );
}

#[test]
fn method_must_be_a_string() {
    for v in ["1", "null", "[\"m\"]", "{}"] {
        refused(
            format!(r#"{{"jsonrpc":"2.0","id":"q","method":{v}}}"#),
            INVALID_REQUEST,
            "\"method\" must be a string",
            Some(Id::Str("q".into())),
        );
    }
}

#[test]
fn params_must_be_object_or_array_and_only_with_a_method() {
    for v in ["1", "\"x\"", "null", "true"] {
        refused(
            format!(r#"{{"jsonrpc":"2.0","id":2,"method":"m","params":{v}}}"#),
            INVALID_REQUEST,
            "\"params\" must be an object or an array",
            Some(Id::Int(2)),
        );
    }
    refused(
        r#"{"jsonrpc":"2.0","id":2,"result":{},"params":{}}"#,
        INVALID_REQUEST,
        "\"params\" without \"method\"",
        Some(Id::Int(2)),
    );
}

#[test]
fn request_and_response_at_once_is_ambiguous() {
    for extra in [
        r#""result":{}"#,
        r#""error":{"code":1,"message":"x"}"#,
        r#""result":null"#,
    ] {
        refused(
            format!(r#"{{"jsonrpc":"2.0","id":4,"method":"tools/call",{extra}}}"#),
            INVALID_REQUEST,
            "ambiguous message",
            Some(Id::Int(4)),
        );
    }
    refused(
        r#"{"jsonrpc":"2.0","id":4,"result":{},"error":{"code":1,"message":"x"}}"#,
        INVALID_REQUEST,
        "both \"result\" and \"error\"",
        Some(Id::Int(4)),
    );
    refused(
        r#"{"jsonrpc":"2.0","id":4,"result":{},"error":null}"#,
        INVALID_REQUEST,
        "both",
        Some(Id::Int(4)),
    );
}

#[test]
fn a_message_needs_a_method_result_or_error() {
    refused(
        r#"{"jsonrpc":"2.0","id":4}"#,
        INVALID_REQUEST,
        "neither",
        Some(Id::Int(4)),
    );
    refused(r#"{"jsonrpc":"2.0"}"#, INVALID_REQUEST, "neither", None);
}

#[test]
fn error_member_must_have_code_and_message() {
    for e in [
        "null",
        "\"oops\"",
        "{}",
        r#"{"code":"1","message":"m"}"#,
        r#"{"code":1.5,"message":"m"}"#,
        r#"{"code":1}"#,
    ] {
        refused(
            format!(r#"{{"jsonrpc":"2.0","id":"e","error":{e}}}"#),
            INVALID_REQUEST,
            "integer \"code\" and a string \"message\"",
            Some(Id::Str("e".into())),
        );
    }
}

#[test]
fn unknown_members_are_refused() {
    refused(
        r#"{"jsonrpc":"2.0","id":1,"method":"m","extra":true}"#,
        INVALID_REQUEST,
        "unexpected member \"extra\"",
        Some(Id::Int(1)),
    );
    // A lone differently-cased member that a Go peer would read as "method".
    refused(
        r#"{"jsonrpc":"2.0","id":1,"result":{},"Method":"x"}"#,
        INVALID_REQUEST,
        "\"Method\"",
        Some(Id::Int(1)),
    );
}

// === answers ===

#[test]
fn every_refusal_turns_into_a_valid_error_line() {
    let e = parse(r#"{"jsonrpc":"2.0","id":"r","method":5}"#).unwrap_err();
    let line = e.to_response();
    let v: Value = serde_json::from_slice(&line).unwrap();
    assert_eq!(
        v,
        json!({"jsonrpc":"2.0","id":"r","error":{"code":-32600,"message":"\"method\" must be a string"}})
    );
    assert_eq!(
        line,
        error_response(Some(&Id::Str("r".into())), e.code, &e.message, None)
    );
    // And Airlock can parse its own error lines back.
    assert_eq!(
        ok(std::str::from_utf8(&line).unwrap()).kind(),
        &FrameKind::ErrorResponse {
            id: Some(Id::Str("r".into()))
        }
    );
}
