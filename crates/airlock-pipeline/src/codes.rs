//! The JSON-RPC error codes Airlock itself answers with.
//!
//! JSON-RPC reserves -32768..=-32000 for the protocol (and MCP uses parts of it, including the
//! spec-reserved -32020..=-32099), so Airlock's own codes live in -31099..=-31000, a range no MCP
//! version assigns. Each is documented in docs/errors.md; keep the two in step.

/// A policy (or the default deny) refused the call.
pub const DENIED: i32 = -31001;
/// The method is not one Airlock knows how to judge, and the config does not allow it.
pub const METHOD_NOT_ALLOWED: i32 = -31002;
/// The upstream server exited or closed its output before answering.
pub const UPSTREAM_UNAVAILABLE: i32 = -31003;
/// The audit store could not record the decision, so the call was not forwarded (fail closed).
pub const AUDIT_UNAVAILABLE: i32 = -31004;
/// The request id is already in flight in this session; forwarding it would make responses ambiguous.
pub const DUPLICATE_ID: i32 = -31005;
/// The upstream did not answer within the configured call timeout.
pub const UPSTREAM_TIMEOUT: i32 = -31006;
/// A kill (of this agent, session, tool, or everything) or a breaker pause is in force.
pub const KILLED: i32 = -31007;
/// A human denied the held call (or a kill denied its approval request).
pub const APPROVAL_DENIED: i32 = -31008;
/// Nobody decided the held call before its approval request expired.
pub const APPROVAL_EXPIRED: i32 = -31009;
/// (HTTP gateway) A 2026-07-28 server asked a 2025 agent for input (`input_required`), which is
/// not bridged.
pub const INPUT_REQUIRED: i32 = -31010;
