//! The call pipeline: how Airlock judges every MCP message between an agent and a server,
//! whatever transport carries it.
//!
//! A transport (stdio today, Streamable HTTP next) hands the pipeline whole frames and writes
//! what it gets back; everything between is here, as named stages in a fixed order.
//!
//! A request from the agent ([`Pipeline::agent_batch`], `request.rs`):
//!
//! ```text
//! frame ─▶ route ─▶ kill ─▶ policy (+ flow labels) ─▶ hold ─▶ breakers ─▶ audit ─▶ forward
//! parse,    by       (kill.rs) (policy.rs)           (hold.rs) (breakers.rs) one     original
//! reserve   method                                                          durable bytes
//! the id    (route.rs)                                                      commit  upstream
//! ```
//!
//! An answer from the server ([`Pipeline::upstream_line`], `response.rs`):
//!
//! ```text
//! redact ─▶ match ─▶ count ─▶ labels ─▶ caps ─▶    filter ─▶ deliver
//! upstream  the call result   flow      a crossed  lists     to the agent,
//! secrets   it ends  items    labels    cap pauses           result record
//! ```
//!
//! A held call that a human approves re-enters the same request stages with the approval
//! granted ([`Pipeline::review_held`]); there is no second path. Per-call state has one owner,
//! the [`calls::CallTable`]; store work runs on the store thread ([`store::Stores`]).

pub mod audit;
pub mod breakers;
pub mod calls;
pub mod codes;
pub mod filter;
pub mod flow;
pub mod hold;
pub mod kill;
mod pipeline;
#[cfg(test)]
mod pipeline_tests;
pub mod policy;
mod request;
mod response;
pub mod route;
#[cfg(test)]
mod stages_tests;
pub mod store;
#[cfg(test)]
mod testkit;

use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use airlock_policy::PolicyEngine;

pub use pipeline::{ControlParts, KillEffect, Output, Pipeline, PipelineParts};
pub use store::{Counters, Stores};

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

/// How the pipeline behaves.
#[derive(Clone, Debug)]
pub struct Options {
    pub identity: Identity,
    pub max_frame_bytes: usize,
    pub call_timeout: Duration,
    /// The upstream credentials to cut out of every frame from the server (`None`: it has
    /// none).
    pub redactor: Option<Arc<airlock_broker::Redactor>>,
}

/// One framed message from a transport.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A complete message (for stdio: a line without its `\n`).
    Frame(Vec<u8>),
    /// A message longer than the limit; its bytes were dropped. Carries the length seen.
    TooLong(usize),
}

/// What a reload replaces at once: the policy set, the methods passed without a decision, the
/// breaker classes and the flow rules. Each call is judged against one snapshot, taken when it
/// arrives, so it never sees new policies with old flow rules.
pub struct Rules {
    pub engine: Arc<PolicyEngine>,
    /// Request methods passed to the server without a decision (the config's `allow_methods`).
    pub allow_methods: Vec<String>,
    pub breakers: airlock_control::BreakerSet,
    /// `[flow.labels.*]`: which answers label the session.
    pub flow: airlock_flow::FlowRules,
}

/// The rules in force, replaceable while the pipeline runs (a reload).
#[derive(Clone)]
pub struct PolicyHandle(Arc<RwLock<Arc<Rules>>>);

impl PolicyHandle {
    pub fn new(rules: Rules) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(rules))))
    }

    /// The rules in force now (one snapshot).
    pub fn rules(&self) -> Arc<Rules> {
        match self.0.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The policy set in force now.
    pub fn current(&self) -> Arc<PolicyEngine> {
        self.rules().engine.clone()
    }

    /// Puts new rules in force for every call judged from now on.
    pub fn replace(&self, rules: Rules) {
        let rules = Arc::new(rules);
        match self.0.write() {
            Ok(mut guard) => *guard = rules,
            Err(poisoned) => *poisoned.into_inner() = rules,
        }
    }
}

/// Locks `m`. The pipeline's locks guard plain data for microseconds, never across I/O; a
/// panic while one was held leaves that data usable, so a poisoned lock is taken as it is.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
