//! JSON-RPC error codes, the crate's error type, and the lines Airlock
//! writes back itself (error and result responses).

use serde::Serialize;
use serde_json::Value;

use crate::id::Id;

/// Invalid JSON was received (not UTF-8, syntax, or JSON peers read differently).
pub const PARSE_ERROR: i32 = -32700;
/// The JSON is not a valid JSON-RPC 2.0 message.
pub const INVALID_REQUEST: i32 = -32600;
/// The method does not exist or is not available.
pub const METHOD_NOT_FOUND: i32 = -32601;
/// Invalid method parameters.
pub const INVALID_PARAMS: i32 = -32602;
/// Internal JSON-RPC error.
pub const INTERNAL_ERROR: i32 = -32603;

/// Why a frame was refused: a JSON-RPC error code, a message for the peer,
/// and the request id when it could be read without doubt.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct FrameError {
    /// [`PARSE_ERROR`] or [`INVALID_REQUEST`].
    pub code: i32,
    /// What was wrong, for humans.
    pub message: String,
    /// The id of the refused request, so the answer can carry it.
    pub id: Option<Id>,
}

impl FrameError {
    pub(crate) fn new(code: i32, message: String, id: Option<Id>) -> Self {
        FrameError { code, message, id }
    }

    /// The JSON-RPC error response for this error (one line, no `\n`).
    pub fn to_response(&self) -> Vec<u8> {
        error_response(self.id.as_ref(), self.code, &self.message, None)
    }
}

#[derive(Serialize)]
struct ErrorLine<'a> {
    jsonrpc: &'static str,
    id: Option<&'a Id>,
    error: ErrorBody<'a>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: i32,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a Value>,
}

#[derive(Serialize)]
struct ResultLine<'a> {
    jsonrpc: &'static str,
    id: &'a Id,
    result: &'a Value,
}

/// Written if serialisation ever failed; it cannot for these types (all
/// keys are strings, `Value` holds no non-finite numbers).
const FALLBACK: &[u8] =
    br#"{"jsonrpc":"2.0","id":null,"error":{"code":-32603,"message":"internal error"}}"#;

/// A JSON-RPC error response: one JSON line without the trailing newline;
/// `"id": null` when `id` is `None`.
pub fn error_response(id: Option<&Id>, code: i32, message: &str, data: Option<Value>) -> Vec<u8> {
    let line = ErrorLine {
        jsonrpc: "2.0",
        id,
        error: ErrorBody {
            code,
            message,
            data: data.as_ref(),
        },
    };
    serde_json::to_vec(&line).unwrap_or_else(|_| FALLBACK.to_vec())
}

/// The id of a refused frame as its own bytes, where they can be echoed exactly: an integer
/// literal (one beyond ±2^53−1, say, which a JSON reader would round), read leniently from a
/// frame the strict parser refused. `None` when the frame has no single, plain id to echo
/// (no JSON object, a duplicate `id`, anything but an integer or a plain string).
pub fn raw_id_of_refused(line: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct IdOnly<'a> {
        #[serde(borrow)]
        id: Option<&'a serde_json::value::RawValue>,
    }
    let parsed: IdOnly<'_> = serde_json::from_slice(line).ok()?;
    let raw = parsed.id?.get();
    let integer = {
        let digits = raw.strip_prefix('-').unwrap_or(raw);
        !digits.is_empty()
            && digits.bytes().all(|b| b.is_ascii_digit())
            && (digits == "0" || !digits.starts_with('0'))
    };
    // A plain string: printable ASCII without escapes, so it reads the same everywhere.
    let plain_string = raw.len() >= 2
        && raw.starts_with('"')
        && raw.ends_with('"')
        && raw[1..raw.len() - 1]
            .bytes()
            .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\');
    (integer || plain_string).then(|| raw.to_owned())
}

/// A JSON-RPC error response whose id is `raw_id`'s bytes as they are (see
/// [`raw_id_of_refused`]): one line without the trailing newline.
pub fn error_response_raw_id(raw_id: &str, code: i32, message: &str) -> Vec<u8> {
    let body = ErrorBody {
        code,
        message,
        data: None,
    };
    let Ok(body) = serde_json::to_vec(&body) else {
        return FALLBACK.to_vec();
    };
    let mut out = Vec::with_capacity(raw_id.len() + body.len() + 40);
    out.extend_from_slice(b"{\"jsonrpc\":\"2.0\",\"id\":");
    out.extend_from_slice(raw_id.as_bytes());
    out.extend_from_slice(b",\"error\":");
    out.extend_from_slice(&body);
    out.push(b'}');
    out
}

/// A JSON-RPC success response: one JSON line without the trailing newline.
pub fn result_response(id: &Id, result: &Value) -> Vec<u8> {
    let line = ResultLine {
        jsonrpc: "2.0",
        id,
        result,
    };
    serde_json::to_vec(&line).unwrap_or_else(|_| FALLBACK.to_vec())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use serde_json::json;

    fn as_json(line: &[u8]) -> Value {
        assert!(!line.contains(&b'\n'), "a response is one line");
        serde_json::from_slice(line).unwrap()
    }

    #[test]
    fn a_refused_frames_id_is_echoed_byte_for_byte_where_it_can_be() {
        let big = br#"{"jsonrpc":"2.0","id":9007199254740993,"method":"ping"}"#;
        let raw = raw_id_of_refused(big).unwrap();
        assert_eq!(raw, "9007199254740993");
        let line = error_response_raw_id(&raw, -32600, "bad");
        assert_eq!(
            std::str::from_utf8(&line).unwrap(),
            r#"{"jsonrpc":"2.0","id":9007199254740993,"error":{"code":-32600,"message":"bad"}}"#
        );
        assert_eq!(
            raw_id_of_refused(br#"{"id":"a-1","params":{"a":1,"a":2}}"#).as_deref(),
            Some("\"a-1\"")
        );
        // Nothing to echo: not JSON, two ids, an escaped or non-scalar id, a float.
        for line in [
            &b"not json"[..],
            br#"{"id":1,"id":2}"#,
            br#"{"id":"\u0041"}"#,
            br#"{"id":[1]}"#,
            br#"{"id":1.5}"#,
            br#"{"id":01}"#,
            br#"{"id":null}"#,
        ] {
            assert_eq!(
                raw_id_of_refused(line),
                None,
                "{}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn error_response_with_id_and_data() {
        let line = error_response(
            Some(&Id::Int(3)),
            METHOD_NOT_FOUND,
            "no such method",
            Some(json!({"method": "x/y"})),
        );
        assert_eq!(
            as_json(&line),
            json!({"jsonrpc": "2.0", "id": 3,
                   "error": {"code": -32601, "message": "no such method", "data": {"method": "x/y"}}})
        );
    }

    #[test]
    fn error_response_without_id_has_null_id_and_no_data() {
        let line = error_response(None, PARSE_ERROR, "bad\nline \"quoted\"", None);
        assert_eq!(
            line,
            br#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"bad\nline \"quoted\""}}"#
        );
    }

    #[test]
    fn result_response_carries_string_id() {
        let line = result_response(&Id::Str("a".into()), &json!({"tools": []}));
        assert_eq!(line, br#"{"jsonrpc":"2.0","id":"a","result":{"tools":[]}}"#);
    }

    #[test]
    fn frame_error_to_response_uses_its_fields() {
        let e = FrameError::new(INVALID_REQUEST, "nope".into(), Some(Id::Str("r1".into())));
        assert_eq!(e.to_string(), "nope");
        assert_eq!(
            as_json(&e.to_response()),
            json!({"jsonrpc": "2.0", "id": "r1", "error": {"code": -32600, "message": "nope"}})
        );
    }
}
