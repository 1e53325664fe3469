//! The two protocol eras, and the bridge between them.
//!
//! - **Legacy** (`2024-11-05` … `2025-11-25`): `initialize`, then a session (`Mcp-Session-Id`).
//! - **Modern** (`2026-07-28`): no handshake and no session; every request carries `_meta`
//!   (`io.modelcontextprotocol/protocolVersion`, `…/clientCapabilities`), the HTTP headers
//!   `MCP-Protocol-Version`, `Mcp-Method` and `Mcp-Name` must say what the body says, results
//!   carry `resultType`, and closing a response stream cancels its request.
//!
//! Same era on both sides: frames pass as they are. Otherwise Airlock terminates the protocol:
//! - modern agent → legacy upstream: Airlock initializes the upstream itself (with the agent's
//!   capabilities), answers `server/discover` from what the upstream declared, adds
//!   `resultType` to results, and turns a closed stream into `notifications/cancelled`;
//! - legacy agent → modern upstream: Airlock answers `initialize` and `ping` from the
//!   upstream's `server/discover`, and adds the `_meta` fields to every request.
//!
//! Headers are checked against the body before anything is judged, and the decision is made
//! on the body: a header naming an allowed tool cannot carry a forbidden one through.

use base64::Engine as _;
use serde_json::{json, Value};

use crate::Message;

pub(crate) const MODERN: &str = "2026-07-28";
/// The session-based versions Airlock speaks with an agent, newest first.
pub(crate) const LEGACY_VERSIONS: [&str; 4] =
    ["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];
const META_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
const META_CAPS: &str = "io.modelcontextprotocol/clientCapabilities";
const META_INFO: &str = "io.modelcontextprotocol/clientInfo";

/// The spec's codes for a refused modern request (all HTTP 400).
pub(crate) const HEADER_MISMATCH: i32 = -32020;
pub(crate) const UNSUPPORTED_VERSION: i32 = -32022;
const INVALID_PARAMS: i32 = -32602;

/// Which era a peer speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Era {
    Legacy,
    Modern,
}

/// A modern request Airlock refuses before judging it.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub(crate) code: i32,
    pub(crate) message: String,
    pub(crate) data: Option<Value>,
}

fn refuse(code: i32, message: impl Into<String>) -> Refusal {
    Refusal {
        code,
        message: message.into(),
        data: None,
    }
}

/// The version Airlock answers an agent's `initialize` with: the one it asked for if Airlock
/// speaks it, else Airlock's newest (the lifecycle's rule).
pub(crate) fn negotiate(asked: Option<&str>) -> &'static str {
    LEGACY_VERSIONS
        .iter()
        .find(|v| Some(**v) == asked)
        .copied()
        .unwrap_or(LEGACY_VERSIONS[0])
}

/// Whether a POST speaks the modern era: its body's `_meta` names a version, or its
/// `MCP-Protocol-Version` header names one no legacy client sends.
pub(crate) fn is_modern(header_version: Option<&str>, messages: &[Message]) -> bool {
    let in_body = messages.iter().any(|m| {
        m.value
            .pointer("/params/_meta")
            .and_then(|meta| meta.get(META_VERSION))
            .is_some()
    });
    let in_header = header_version.is_some_and(|v| !LEGACY_VERSIONS.contains(&v));
    in_body || in_header
}

/// Checks a modern POST: one message, `_meta` complete and supported, headers equal to the
/// body (after `=?base64?…?=` decoding).
pub(crate) fn check(
    header: &dyn Fn(&str) -> Option<String>,
    messages: &[Message],
) -> Result<(), Refusal> {
    let [m] = messages else {
        return Err(refuse(
            -32600,
            "a 2026-07-28 POST carries exactly one message",
        ));
    };
    let Some(method) = m.method.as_deref() else {
        return Err(refuse(
            -32600,
            "a 2026-07-28 POST carries a request or a notification",
        ));
    };
    let meta = m.value.pointer("/params/_meta");
    let version = meta
        .and_then(|x| x.get(META_VERSION))
        .and_then(Value::as_str);
    let Some(version) = version else {
        return Err(refuse(
            INVALID_PARAMS,
            format!("params._meta[\"{META_VERSION}\"] is required"),
        ));
    };
    if version != MODERN {
        return Err(Refusal {
            code: UNSUPPORTED_VERSION,
            message: format!("protocol version {version} is not supported"),
            data: Some(json!({ "supported": [MODERN], "requested": version })),
        });
    }
    if m.id.is_some() && meta.and_then(|x| x.get(META_CAPS)).is_none() {
        return Err(refuse(
            INVALID_PARAMS,
            format!("params._meta[\"{META_CAPS}\"] is required"),
        ));
    }
    let same =
        |name: &str, want: &str| header(name).map(|h| decode_header(&h)).as_deref() == Some(want);
    if !same("mcp-protocol-version", version) {
        return Err(refuse(
            HEADER_MISMATCH,
            "MCP-Protocol-Version does not match the body",
        ));
    }
    if !same("mcp-method", method) {
        return Err(refuse(
            HEADER_MISMATCH,
            "Mcp-Method does not match the body",
        ));
    }
    let named = match method {
        "tools/call" | "prompts/get" => m.value.pointer("/params/name").and_then(Value::as_str),
        "resources/read" => m.value.pointer("/params/uri").and_then(Value::as_str),
        _ => None,
    };
    if let Some(name) = named {
        if !same("mcp-name", name) {
            return Err(refuse(HEADER_MISMATCH, "Mcp-Name does not match the body"));
        }
    }
    Ok(())
}

/// A header value as text: `=?base64?…?=` decoded.
fn decode_header(v: &str) -> String {
    if let Some(inner) = v
        .strip_prefix("=?base64?")
        .and_then(|r| r.strip_suffix("?="))
    {
        if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(inner) {
            if let Ok(text) = String::from_utf8(bytes) {
                return text;
            }
        }
    }
    v.to_string()
}

/// The headers a modern upstream gets for a frame (from the frame: the body is the truth).
pub(crate) fn headers_for(frame: &[u8]) -> Vec<(&'static str, String)> {
    let Ok(v) = serde_json::from_slice::<Value>(frame) else {
        return Vec::new();
    };
    let mut out = vec![("mcp-protocol-version", MODERN.to_string())];
    let Some(method) = v.get("method").and_then(Value::as_str) else {
        return out;
    };
    out.push(("mcp-method", header_safe(method)));
    let name = match method {
        "tools/call" | "prompts/get" => v.pointer("/params/name").and_then(Value::as_str),
        "resources/read" => v.pointer("/params/uri").and_then(Value::as_str),
        _ => None,
    };
    if let Some(name) = name {
        out.push(("mcp-name", header_safe(name)));
    }
    out
}

fn header_safe(v: &str) -> String {
    if v.bytes().all(|b| (0x21..0x7f).contains(&b) || b == b' ') && !v.starts_with("=?") {
        v.to_string()
    } else {
        format!(
            "=?base64?{}?=",
            base64::engine::general_purpose::STANDARD.encode(v)
        )
    }
}

/// The `_meta` a legacy agent's request needs for a modern upstream.
pub(crate) fn add_meta(frame: &Value, init: Option<&Value>) -> Value {
    let mut v = frame.clone();
    let caps = init
        .and_then(|i| i.get("capabilities"))
        .cloned()
        .unwrap_or_else(|| json!({}));
    let info = init.and_then(|i| i.get("clientInfo")).cloned();
    if !v.get("params").is_some_and(Value::is_object) {
        v["params"] = json!({});
    }
    if !v["params"].get("_meta").is_some_and(Value::is_object) {
        v["params"]["_meta"] = json!({});
    }
    v["params"]["_meta"][META_VERSION] = json!(MODERN);
    v["params"]["_meta"][META_CAPS] = caps;
    if let Some(info) = info {
        v["params"]["_meta"][META_INFO] = info;
    }
    v
}

/// The modern agent's capabilities and name, as a legacy `initialize` carries them.
pub(crate) fn initialize_params(m: &Message) -> Value {
    let meta = m.value.pointer("/params/_meta");
    json!({
        "protocolVersion": LEGACY_VERSIONS[0],
        "capabilities": meta.and_then(|x| x.get(META_CAPS)).cloned().unwrap_or_else(|| json!({})),
        "clientInfo": meta.and_then(|x| x.get(META_INFO)).cloned()
            .unwrap_or_else(|| json!({ "name": "airlock", "version": env!("CARGO_PKG_VERSION") })),
    })
}

/// Airlock's `server/discover` answer for a legacy upstream, from its `initialize` result.
pub(crate) fn discover_result(init_result: Option<&Value>) -> Value {
    let caps = init_result
        .and_then(|r| r.get("capabilities"))
        .cloned()
        .unwrap_or_else(|| json!({}));
    let mut result = json!({
        "supportedVersions": [MODERN],
        "capabilities": caps,
        "ttlMs": 0,
        "cacheScope": "private",
        "resultType": "complete",
    });
    if let Some(info) = init_result.and_then(|r| r.get("serverInfo")) {
        result["_meta"] = json!({ "io.modelcontextprotocol/serverInfo": info });
    }
    if let Some(text) = init_result.and_then(|r| r.get("instructions")) {
        result["instructions"] = text.clone();
    }
    result
}

/// Airlock's `initialize` answer for a legacy agent in front of a modern upstream.
pub(crate) fn initialize_result(asked: Option<&str>, discovered: Option<&Value>) -> Value {
    let version = negotiate(asked);
    let caps = discovered
        .and_then(|d| d.get("capabilities"))
        .cloned()
        .unwrap_or_else(|| json!({}));
    let info = discovered
        .and_then(|d| d.pointer("/_meta/io.modelcontextprotocol~1serverInfo"))
        .cloned()
        .unwrap_or_else(|| json!({ "name": "airlock", "version": env!("CARGO_PKG_VERSION") }));
    let mut result =
        json!({ "protocolVersion": version, "capabilities": caps, "serverInfo": info });
    if let Some(text) = discovered.and_then(|d| d.get("instructions")) {
        result["instructions"] = text.clone();
    }
    result
}

/// A legacy upstream's answer as a modern agent reads it: results carry `resultType`.
pub(crate) fn to_modern(frame: &[u8]) -> Vec<u8> {
    let Ok(mut v) = serde_json::from_slice::<Value>(frame) else {
        return frame.to_vec();
    };
    let Some(result) = v.get_mut("result").and_then(Value::as_object_mut) else {
        return frame.to_vec();
    };
    let listing = [
        "tools",
        "prompts",
        "resources",
        "resourceTemplates",
        "contents",
    ]
    .iter()
    .any(|k| result.contains_key(*k));
    let missing_cache = listing && !result.contains_key("ttlMs");
    if result.contains_key("resultType") && !missing_cache {
        return frame.to_vec();
    }
    if !result.contains_key("resultType") {
        result.insert("resultType".into(), json!("complete"));
    }
    if missing_cache {
        // Lists and reads carry cache hints in 2026-07-28; a legacy upstream gave none, so
        // the safe ones: not cached, not shared.
        result.insert("ttlMs".into(), json!(0));
        result.entry("cacheScope").or_insert(json!("private"));
    }
    serde_json::to_vec(&v).unwrap_or_else(|_| frame.to_vec())
}

/// A 2026 `input_required` result, as a 2025 agent can read it: an error naming what the
/// server asked for. `None` for every other message.
pub(crate) fn input_required_to_error(frame: &[u8]) -> Option<Vec<u8>> {
    if !frame.windows(14).any(|w| w == b"input_required") {
        return None;
    }
    let v = serde_json::from_slice::<Value>(frame).ok()?;
    if v.pointer("/result/resultType").and_then(Value::as_str) != Some("input_required") {
        return None;
    }
    let id = v.get("id").and_then(airlock_protocol::Id::from_json);
    let asked: Vec<String> = v
        .pointer("/result/inputRequests")
        .and_then(Value::as_object)
        .map(|m| {
            m.values()
                .filter_map(|r| r.get("method").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    Some(airlock_protocol::error_response(
        id.as_ref(),
        airlock_pipeline::codes::INPUT_REQUIRED,
        &format!(
            "the server asks for input ({}) the 2026-07-28 way, which Airlock does not bridge to \
             a 2025 session; connect with 2026-07-28",
            if asked.is_empty() {
                "unspecified".to_string()
            } else {
                asked.join(", ")
            }
        ),
        None,
    ))
}

/// The probe that tells a modern upstream from a legacy one.
pub(crate) fn discover_request() -> Vec<u8> {
    let v = json!({
        "jsonrpc": "2.0",
        "id": "airlock-discover",
        "method": "server/discover",
        "params": { "_meta": {
            META_VERSION: MODERN,
            META_CAPS: {},
            META_INFO: { "name": "airlock", "version": env!("CARGO_PKG_VERSION") },
        }},
    });
    serde_json::to_vec(&v).unwrap_or_default()
}

#[cfg(test)]
#[path = "era_tests.rs"]
mod tests;
