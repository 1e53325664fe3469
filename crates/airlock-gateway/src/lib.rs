//! The Airlock stdio gateway: it sits between an agent and the MCP server it uses, speaks MCP
//! with the agent on one side and with the server (a child process) on the other, and lets a
//! frame through only when policy allows it and the audit trail has recorded the decision.
//!
//! The call path, in order: framing (`lines`), a strict parse (`airlock_protocol`), routing by
//! method (`route`), the policy decision (`judge`), a durable audit commit, then the upstream.
//! Answers come back through list filtering (`filter`) and close their audit records.

mod breaker;
pub mod codes;
mod filter;
mod flow;
mod gateway;
mod hold;
mod judge;
mod kill;
mod lines;
mod route;
mod stdio;
mod upstream;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use airlock_audit::AuditWriter;
use airlock_policy::PolicyEngine;

pub use stdio::AgentIo;
pub use upstream::Upstream;

/// Who is acting: the principal of every decision and the "who" of every audit record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub agent: String,
    pub on_behalf_of: String,
    pub task: String,
    pub session: String,
    /// The server name the upstream is known by in policy (`Tool::"<server>/<tool>"`).
    pub server: String,
}

/// How the gateway behaves.
#[derive(Clone, Debug)]
pub struct GatewayOptions {
    pub identity: Identity,
    pub max_frame_bytes: usize,
    /// Request methods passed to the server without a decision (the config's `allow_methods`).
    pub allow_methods: Vec<String>,
    pub call_timeout: Duration,
}

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

/// The policy set in force, replaceable while the gateway runs (a reload): each call is judged
/// against the set current when it arrives.
#[derive(Clone)]
pub struct PolicyHandle(Arc<RwLock<Arc<PolicyEngine>>>);

impl PolicyHandle {
    pub fn new(engine: PolicyEngine) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(engine))))
    }

    /// The policy set in force now.
    pub fn current(&self) -> Arc<PolicyEngine> {
        match self.0.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Puts a new policy set in force for every call judged from now on.
    pub fn replace(&self, engine: PolicyEngine) {
        let engine = Arc::new(engine);
        match self.0.write() {
            Ok(mut guard) => *guard = engine,
            Err(poisoned) => *poisoned.into_inner() = engine,
        }
    }
}

/// The kill switch and the breakers, as this gateway takes part in them.
pub struct Control {
    /// The store file (the audit database) that holds kills and breaker counters.
    pub db: std::path::PathBuf,
    /// Bound before the kill state was read, so no kill is missed in between.
    pub listener: airlock_control::Listener,
    pub breakers: airlock_control::BreakerSet,
    /// `[flow.labels.*]`: which results label the session.
    pub flow: airlock_flow::FlowRules,
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
