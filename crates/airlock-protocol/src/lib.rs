//! JSON-RPC 2.0 / MCP framing for Airlock: the parser at the trust boundary.
//!
//! Airlock reads newline-delimited JSON-RPC frames (the MCP stdio transport)
//! from an untrusted agent and a semi-trusted server, decides on them, and
//! forwards the *original bytes*. That is only safe if Airlock and the peer's
//! JSON parser (Node, Python, Go, Rust) read every frame the same way, so
//! [`parse_frame`] refuses anything they could read differently: duplicate
//! or case-colliding keys, lone surrogates, integers beyond ±(2^53−1),
//! `__proto__` keys, raw line breaks inside a frame, batches, members a
//! JSON-RPC message does not have, and messages that are both a request and
//! a response.
//!
//! The crate also writes Airlock's own answers ([`error_response`],
//! [`result_response`]) and canonicalises JSON per RFC 8785
//! ([`canonical_json`], [`digest_json`]) so that approvals and audit records
//! can name a value by its digest.
//!
//! ```
//! use airlock_protocol::{parse_frame, FrameKind, Id, Limits};
//!
//! let line = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}"#;
//! let frame = parse_frame(line, &Limits::default()).unwrap();
//! assert_eq!(frame.kind(), &FrameKind::Request { id: Id::Int(1), method: "tools/call".into() });
//! assert_eq!(frame.raw(), line);
//!
//! let dup = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","name":"b"}}"#;
//! let err = parse_frame(dup, &Limits::default()).unwrap_err();
//! assert_eq!(err.code, airlock_protocol::PARSE_ERROR);
//! assert_eq!(err.id, Some(Id::Int(1)));
//! ```

mod canonical;
mod error;
mod es_number;
mod frame;
mod id;
mod strict;

pub use canonical::{canonical_json, digest_json, sha256_hex};
pub use error::{
    error_response, error_response_raw_id, raw_id_of_refused, result_response, FrameError,
    INTERNAL_ERROR, INVALID_PARAMS, INVALID_REQUEST, METHOD_NOT_FOUND, PARSE_ERROR,
};
pub use frame::{
    parse_frame, parse_outline, Frame, FrameKind, Limits, Outline, DEFAULT_MAX_FRAME_BYTES,
};
pub use id::Id;
