//! The Airlock stdio gateway: it sits between an agent and the MCP server it uses, speaks MCP
//! with the agent on one side and with the server (a child process) on the other, and drives
//! every frame through the call pipeline ([`airlock_pipeline`]): a frame moves on only when
//! policy allows it and the audit trail has recorded the decision.
//!
//! This crate is the transport: line framing (`lines`), the byte streams (`stdio`), the
//! upstream process in its sandbox (`upstream`), and the threads and tasks that feed the
//! pipeline and write what it answers (`gateway`).

mod gateway;
mod lines;
mod stdio;
mod upstream;

use std::sync::Arc;

use airlock_audit::AuditWriter;

pub use airlock_pipeline::codes;
pub use airlock_pipeline::{Identity, Options as GatewayOptions, PolicyHandle, Rules};
pub use gateway::Control;
pub use stdio::AgentIo;
pub use upstream::{
    egress_record, SpawnError, Upstream, UpstreamParts, UpstreamProcess, UpstreamSandbox,
    SANDBOX_BREACH,
};

/// Why the gateway stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The agent closed its input; the upstream was shut down in order.
    AgentClosed,
    /// The upstream exited or closed its output first; in-flight calls were answered with errors.
    UpstreamExited { status: String },
    /// A kill stopped this gateway; it refused every request until the agent went away.
    Killed { reason: String },
}

/// Errors that stop the gateway itself (not a single call).
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// Runs the gateway between `agent` and `upstream` until one of them goes away.
pub async fn run(
    opts: GatewayOptions,
    policy: PolicyHandle,
    audit: Arc<AuditWriter>,
    agent: AgentIo,
    upstream: Upstream,
    control: Option<Control>,
) -> Result<Outcome, GatewayError> {
    gateway::run(opts, policy, audit, agent, upstream, control).await
}
