use serde_json::json;

use super::*;

fn message(v: Value) -> Message {
    Message {
        raw: serde_json::to_vec(&v).unwrap_or_default(),
        id: v.get("id").and_then(airlock_protocol::Id::from_json),
        method: v.get("method").and_then(Value::as_str).map(str::to_string),
        value: v,
    }
}

fn call(name: &str, version: &str) -> Message {
    message(
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": name, "arguments": {},
        "_meta": {META_VERSION: version, META_CAPS: {}}}}),
    )
}

fn headers(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let owned: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name| {
        owned
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }
}

#[test]
fn matching_headers_pass_and_base64_names_are_decoded() {
    let h = headers(&[
        ("mcp-protocol-version", MODERN),
        ("mcp-method", "tools/call"),
        ("mcp-name", "say"),
    ]);
    assert!(check(&h, &[call("say", MODERN)]).is_ok());
    let h = headers(&[
        ("mcp-protocol-version", MODERN),
        ("mcp-method", "tools/call"),
        ("mcp-name", "=?base64?c2F5?="),
    ]);
    assert!(check(&h, &[call("say", MODERN)]).is_ok());
}

#[test]
fn a_header_that_differs_from_the_body_is_a_mismatch() {
    for h in [
        headers(&[
            ("mcp-protocol-version", MODERN),
            ("mcp-method", "tools/call"),
            ("mcp-name", "say"),
        ]),
        headers(&[
            ("mcp-protocol-version", MODERN),
            ("mcp-method", "tools/list"),
            ("mcp-name", "echo_headers"),
        ]),
        headers(&[
            ("mcp-protocol-version", MODERN),
            ("mcp-method", "tools/call"),
        ]),
        headers(&[("mcp-method", "tools/call"), ("mcp-name", "echo_headers")]),
    ] {
        let r = check(&h, &[call("echo_headers", MODERN)]);
        assert_eq!(r.map_err(|e| e.code).err(), Some(HEADER_MISMATCH));
    }
}

#[test]
fn versions_and_meta_are_checked_first() {
    let h = headers(&[
        ("mcp-protocol-version", "2099-01-01"),
        ("mcp-method", "tools/call"),
        ("mcp-name", "say"),
    ]);
    let err = check(&h, &[call("say", "2099-01-01")]).err();
    assert_eq!(err.as_ref().map(|e| e.code), Some(UNSUPPORTED_VERSION));
    assert_eq!(
        err.and_then(|e| e.data).map(|d| d["supported"][0].clone()),
        Some(json!(MODERN))
    );
    let bare = message(json!({"jsonrpc": "2.0", "id": 5, "method": "tools/list", "params": {}}));
    let h = headers(&[
        ("mcp-protocol-version", MODERN),
        ("mcp-method", "tools/list"),
    ]);
    assert_eq!(check(&h, &[bare]).err().map(|e| e.code), Some(-32602));
}

#[test]
fn modern_requests_are_told_from_legacy_ones() {
    assert!(is_modern(None, &[call("say", MODERN)]));
    assert!(is_modern(Some("2099-01-01"), &[]));
    assert!(!is_modern(
        Some("2025-11-25"),
        &[message(
            json!({"jsonrpc": "2.0", "id": 1, "method": "ping"})
        )]
    ));
}

#[test]
fn upstream_headers_come_from_the_frame() {
    let frame =
        br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"d\u00e9j\u00e0"}}"#;
    let h = headers_for(frame);
    assert_eq!(h[0], ("mcp-protocol-version", MODERN.to_string()));
    assert_eq!(h[1], ("mcp-method", "tools/call".to_string()));
    assert!(h[2].1.starts_with("=?base64?"));
    assert_eq!(decode_header(&h[2].1), "déjà");
}

#[test]
fn bridged_answers_carry_what_each_era_needs() {
    let out = to_modern(br#"{"jsonrpc":"2.0","id":1,"result":{"content":[]}}"#);
    let v: Value = serde_json::from_slice(&out).unwrap_or_default();
    assert_eq!(v["result"]["resultType"], "complete");
    let init = json!({"capabilities": {"sampling": {}}, "clientInfo": {"name": "c"}});
    let with = add_meta(
        &json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}),
        Some(&init),
    );
    assert_eq!(with["params"]["_meta"][META_VERSION], MODERN);
    assert_eq!(with["params"]["_meta"][META_CAPS], json!({"sampling": {}}));
    let d = discover_result(Some(
        &json!({"capabilities": {"tools": {}}, "serverInfo": {"name": "s"}}),
    ));
    assert_eq!(d["supportedVersions"], json!([MODERN]));
    let i = initialize_result(Some("2025-06-18"), Some(&d));
    assert_eq!(i["protocolVersion"], "2025-06-18");
    assert_eq!(i["serverInfo"]["name"], "s");
}

#[test]
fn input_required_becomes_an_error_for_a_legacy_agent() {
    let frame = br#"{"jsonrpc":"2.0","id":3,"result":{"resultType":"input_required","inputRequests":{"a":{"method":"elicitation/create","params":{}}}}}"#;
    let out = input_required_to_error(frame).unwrap_or_default();
    let v: Value = serde_json::from_slice(&out).unwrap_or_default();
    assert_eq!(v["id"], 3);
    assert_eq!(v["error"]["code"], -31010);
    assert!(v["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("elicitation/create"));
    assert!(input_required_to_error(
        br#"{"jsonrpc":"2.0","id":3,"result":{"resultType":"complete"}}"#
    )
    .is_none());
}
