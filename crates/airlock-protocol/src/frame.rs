//! One newline-delimited JSON-RPC 2.0 frame: strict parsing and a read-only
//! view over the original bytes.

use serde_json::{Map, Value};

use crate::error::{FrameError, INVALID_REQUEST, PARSE_ERROR};
use crate::id::Id;
use crate::strict::{parse_strict_to, StrictError};

/// The default largest frame Airlock reads: 4 MiB.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 4 * 1024 * 1024;

/// Limits applied before a frame is parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest accepted frame, in bytes, without the line ending.
    pub max_frame_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
        }
    }
}

/// What a frame is, by the JSON-RPC 2.0 rules.
#[derive(Clone, Debug, PartialEq)]
pub enum FrameKind {
    /// `method` and `id`: the peer expects an answer.
    Request { id: Id, method: String },
    /// `method` without `id`.
    Notification { method: String },
    /// `id` and `result`.
    Response { id: Id },
    /// `error`, with the id of the request it answers, if the peer could
    /// read it (`null` or absent otherwise).
    ErrorResponse { id: Option<Id> },
}

/// A parsed frame: the bytes as received and the one meaning every
/// JSON parser agrees on.
#[derive(Clone, Debug)]
pub struct Frame {
    raw: Vec<u8>,
    kind: FrameKind,
    value: Value,
}

impl Frame {
    /// The line exactly as received, without its `\n` or `\r\n`.
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    /// The raw bytes, for forwarding without a copy.
    pub fn into_raw(self) -> Vec<u8> {
        self.raw
    }

    /// What kind of message this is.
    pub fn kind(&self) -> &FrameKind {
        &self.kind
    }

    /// The whole parsed frame.
    pub fn value(&self) -> &Value {
        &self.value
    }

    /// `params` of a request or notification (an object or an array).
    pub fn params(&self) -> Option<&Value> {
        self.value.get("params")
    }

    /// `method` of a request or notification.
    pub fn method(&self) -> Option<&str> {
        match &self.kind {
            FrameKind::Request { method, .. } | FrameKind::Notification { method } => Some(method),
            FrameKind::Response { .. } | FrameKind::ErrorResponse { .. } => None,
        }
    }

    /// The id of a request or response, if it has a readable one.
    pub fn id(&self) -> Option<&Id> {
        match &self.kind {
            FrameKind::Request { id, .. } | FrameKind::Response { id } => Some(id),
            FrameKind::ErrorResponse { id } => id.as_ref(),
            FrameKind::Notification { .. } => None,
        }
    }

    /// `result` of a successful response.
    pub fn result(&self) -> Option<&Value> {
        self.value.get("result")
    }

    /// Whether this is a result whose `isError` is `true` (a tool that failed).
    pub fn result_is_error(&self) -> bool {
        result_is_error(&self.value)
    }

    /// `error` of an error response (an object with `code` and `message`).
    pub fn error(&self) -> Option<&Value> {
        self.value.get("error")
    }

    /// `params._meta.progressToken`, when it is a string or an integer.
    pub fn progress_token(&self) -> Option<&Value> {
        let token = self.params()?.get("_meta")?.get("progressToken")?;
        (token.is_string() || token.is_i64() || token.is_u64()).then_some(token)
    }
}

/// Members a JSON-RPC 2.0 message may have; anything else is refused so that
/// no peer can read an extra member as one of these (see `strict`).
const MEMBERS: [&str; 6] = ["jsonrpc", "id", "method", "params", "result", "error"];

/// Parses one line (with or without its trailing `\n` / `\r\n`) into a
/// [`Frame`], refusing anything a peer could read differently.
///
/// Codes: `-32700` for bytes that are not one strict JSON text (not UTF-8,
/// BOM, syntax, duplicate or case-colliding keys, unsafe integers, depth),
/// `-32600` for JSON that is not one valid JSON-RPC 2.0 message (too long,
/// batch, wrong members). The error carries the request id when it can be
/// read without doubt.
pub fn parse_frame(line: &[u8], limits: &Limits) -> Result<Frame, FrameError> {
    let (raw, kind, value) = parse_to(line, limits, u32::MAX)?;
    Ok(Frame { raw, kind, value })
}

/// A frame read for its kind, id and outcome only: every check [`parse_frame`] makes, with the
/// same errors, but values nested below a member's own members (a result's `content`, a
/// request's `arguments`) are checked, not kept. What an answer the gateway only relays needs;
/// [`Outline::frame`] reads the whole frame when its content matters.
#[derive(Clone, Debug)]
pub struct Outline {
    raw: Vec<u8>,
    kind: FrameKind,
    /// The frame with containers below depth 2 emptied: never handed out, so nobody can
    /// mistake it for the content.
    value: Value,
}

impl Outline {
    /// The line exactly as received, without its `\n` or `\r\n`.
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    /// What kind of message this is.
    pub fn kind(&self) -> &FrameKind {
        &self.kind
    }

    /// Whether this is a result whose `isError` is `true` (a tool that failed).
    pub fn result_is_error(&self) -> bool {
        result_is_error(&self.value)
    }

    /// The whole frame, read from the same bytes.
    pub fn frame(&self, limits: &Limits) -> Result<Frame, FrameError> {
        parse_frame(&self.raw, limits)
    }
}

/// `result.isError` of a message is `true`: kept at depth 2 by the outline, so both views agree.
fn result_is_error(message: &Value) -> bool {
    message
        .get("result")
        .and_then(|r| r.get("isError"))
        .and_then(Value::as_bool)
        == Some(true)
}

/// Parses one line into an [`Outline`]: accepts and refuses exactly what [`parse_frame`] does.
pub fn parse_outline(line: &[u8], limits: &Limits) -> Result<Outline, FrameError> {
    // Depth 0 is the message, 1 its members' values, 2 their members: enough for the kind
    // (`params` an object or array, `error.code` and `error.message`) and `result.isError`.
    let (raw, kind, value) = parse_to(line, limits, 2)?;
    Ok(Outline { raw, kind, value })
}

fn parse_to(
    line: &[u8],
    limits: &Limits,
    build_below: u32,
) -> Result<(Vec<u8>, FrameKind, Value), FrameError> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.len() > limits.max_frame_bytes {
        return Err(FrameError::new(
            INVALID_REQUEST,
            format!(
                "frame of {} bytes exceeds the limit of {} bytes",
                line.len(),
                limits.max_frame_bytes
            ),
            None,
        ));
    }
    let text = std::str::from_utf8(line).map_err(|e| {
        parse_error(format!(
            "frame is not valid UTF-8 (at byte {})",
            e.valid_up_to()
        ))
    })?;
    check_text(text)?;
    let value = parse_strict_to(text, build_below).map_err(|e| match e {
        StrictError::Syntax(e) => parse_error(format!("invalid JSON: {e}")),
        StrictError::Ambiguous {
            reason,
            value,
            top_level,
        } => FrameError::new(
            PARSE_ERROR,
            format!("ambiguous JSON: {reason}"),
            if top_level { None } else { readable_id(&value) },
        ),
    })?;
    let kind = classify(&value)?;
    Ok((line.to_vec(), kind, value))
}

/// Checks on the text that JSON itself allows but line-based peers do not.
fn check_text(text: &str) -> Result<(), FrameError> {
    if text.trim_matches([' ', '\t', '\n', '\r']).is_empty() {
        return Err(parse_error("empty frame".into()));
    }
    if text.starts_with('\u{feff}') {
        return Err(parse_error(
            "frame starts with a UTF-8 byte order mark".into(),
        ));
    }
    // JSON allows CR and LF as whitespace between tokens (inside strings they
    // are invalid anyway), but a peer reading lines would split the frame
    // there: Python's universal newlines and Node's readline split on CR too.
    if text.bytes().any(|b| b == b'\n' || b == b'\r') {
        return Err(parse_error(
            "frame contains a raw line break (CR or LF) inside the line".into(),
        ));
    }
    Ok(())
}

fn parse_error(message: String) -> FrameError {
    FrameError::new(PARSE_ERROR, message, None)
}

/// The `id` of a parsed message when it is a valid id.
fn readable_id(value: &Value) -> Option<Id> {
    value.get("id").and_then(Id::from_json)
}

/// Decides what a strictly parsed JSON value is as a JSON-RPC message.
fn classify(value: &Value) -> Result<FrameKind, FrameError> {
    let obj = match value {
        Value::Object(obj) => obj,
        Value::Array(_) => return Err(invalid(None, "batches are not supported".into())),
        _ => {
            return Err(invalid(
                None,
                "a JSON-RPC message must be a JSON object".into(),
            ))
        }
    };
    let id = obj.get("id").and_then(Id::from_json);
    let fail = |message: String| invalid(id.clone(), message);

    if let Some(key) = obj.keys().find(|k| !MEMBERS.contains(&k.as_str())) {
        return Err(fail(format!(
            "unexpected member {:?}; a JSON-RPC 2.0 message has only {}",
            truncate(key),
            MEMBERS.join(", ")
        )));
    }
    match obj.get("jsonrpc") {
        Some(Value::String(v)) if v == "2.0" => {}
        Some(_) => return Err(fail("\"jsonrpc\" must be exactly \"2.0\"".into())),
        None => return Err(fail("missing \"jsonrpc\": \"2.0\"".into())),
    }
    let id_member = obj.get("id");
    if id_member.is_some_and(|v| !v.is_null()) && id.is_none() {
        return Err(fail("\"id\" must be a string or an integer".into()));
    }
    let has = |member: &str| obj.contains_key(member);

    if let Some(method) = obj.get("method") {
        if has("result") || has("error") {
            return Err(fail(
                "ambiguous message: it has \"method\" and also \"result\" or \"error\"".into(),
            ));
        }
        let Value::String(method) = method else {
            return Err(fail("\"method\" must be a string".into()));
        };
        check_params(obj).map_err(fail)?;
        return match (id_member, &id) {
            (None, _) => Ok(FrameKind::Notification {
                method: method.clone(),
            }),
            (Some(_), Some(id)) => Ok(FrameKind::Request {
                id: id.clone(),
                method: method.clone(),
            }),
            (Some(_), None) => Err(fail("a request id must not be null".into())),
        };
    }
    if has("params") {
        return Err(fail("\"params\" without \"method\"".into()));
    }
    match (obj.get("result"), obj.get("error")) {
        (Some(_), Some(_)) => Err(fail(
            "ambiguous response: it has both \"result\" and \"error\"".into(),
        )),
        (Some(_), None) => match &id {
            Some(id) => Ok(FrameKind::Response { id: id.clone() }),
            None => Err(fail("a response needs a string or integer \"id\"".into())),
        },
        (None, Some(error)) => {
            check_error_object(error).map_err(fail)?;
            Ok(FrameKind::ErrorResponse { id: id.clone() })
        }
        (None, None) => Err(fail(
            "message has neither \"method\" nor \"result\" nor \"error\"".into(),
        )),
    }
}

fn check_params(obj: &Map<String, Value>) -> Result<(), String> {
    match obj.get("params") {
        None | Some(Value::Object(_) | Value::Array(_)) => Ok(()),
        Some(_) => Err("\"params\" must be an object or an array".into()),
    }
}

/// `error` must be `{ "code": integer, "message": string, "data"?: any }`.
fn check_error_object(error: &Value) -> Result<(), String> {
    let ok = error.as_object().is_some_and(|e| {
        e.get("code").is_some_and(|c| c.is_i64() || c.is_u64())
            && e.get("message").is_some_and(Value::is_string)
    });
    if ok {
        Ok(())
    } else {
        Err("\"error\" must be an object with an integer \"code\" and a string \"message\"".into())
    }
}

fn invalid(id: Option<Id>, message: String) -> FrameError {
    FrameError::new(INVALID_REQUEST, message, id)
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((cut, _)) => &s[..cut],
        None => s,
    }
}

#[cfg(test)]
#[path = "frame_tests.rs"]
mod tests;
