//! Cedar authorization for every MCP action an agent takes.
//!
//! The gateway turns its config into an [`EntityModel`] and loads a
//! [`PolicyEngine`] from a schema and `.cedar` files ([`PolicySources`]). Each
//! `tools/call`, `resources/read` and `prompts/get` becomes a [`CallRequest`]
//! and gets a [`Decision`]; `tools/list` is filtered with
//! [`PolicyEngine::visible`]. The entity model, actions and context that
//! policies see are described in `policies/README.md`.
//!
//! The engine fails closed:
//! - **Strict validation at load.** Every policy is validated against the
//!   schema in strict mode; a parse or validation error (or a duplicate `@id`)
//!   is a [`PolicyError`] naming `file:line:col`, and nothing loads.
//! - **Default deny.** When no `permit` applies the answer is
//!   `Deny { reasons: [], errors: [NO_PERMIT] }`.
//! - **Any evaluation error is a deny.** Cedar skips a policy whose condition
//!   errors, so a skipped `forbid` would turn into an allow; Airlock denies
//!   whenever the diagnostics hold an error, naming the policies.
//! - **Approval as policy.** A call is first evaluated with
//!   `context.approval.granted == false`; if it is denied only by `forbid`s
//!   annotated `@approval("why")`, and evaluating it with `granted == true`
//!   would allow it, the answer is [`Decision::NeedsApproval`]. After a human
//!   approves, the gateway asks again with `approval_granted: true`.
//!
//! `context.args`: cedar-policy 4.14 accepts open records
//! (`additionalAttributes`) only behind its experimental `partial-validate`
//! feature (a test pins this), so the shipped schema declares `args` as a
//! closed record of optional attributes (the arguments of the shipped tools).
//! Policies must guard reads with `has`, and a misspelt argument is a
//! validation error. At evaluation, undeclared arguments are dropped (no
//! validated policy can read them) and the ones policies read must have their
//! schema type, or the call is denied: `"cpus": "64"` cannot slip past a
//! policy that compares `cpus` as a Long. Conversion rules: `policies/README.md`.
//!
//! Speed: policies are bucketed by resource scope (`Tool::"s/t"`,
//! `Server::"s"`, or global) and a decision evaluates only the buckets that
//! can apply; the slice for each target is built once and cached (up to 1,024
//! targets). Only the parts of `context` the slice's policies read are built.
//! `examples/decide_bench.rs` measures it.
//!
//! ```
//! use airlock_policy::{Action, AgentEntity, CallRequest, Decision, EntityModel, PolicyEngine};
//!
//! let model = EntityModel {
//!     agents: vec![AgentEntity {
//!         id: "bot".into(),
//!         on_behalf_of: "alice".into(),
//!         task: "triage".into(),
//!         groups: vec![],
//!     }],
//!     humans: vec![],
//!     tasks: vec![],
//!     servers: vec!["corp".into()],
//! };
//! let policy = r#"@id("read-forum")
//! permit(principal, action == Action::"call_tool", resource == Tool::"corp/forum_read");"#;
//! let engine = PolicyEngine::from_texts(
//!     airlock_policy::SHIPPED_SCHEMA,
//!     &[("base.cedar".into(), policy.into())],
//!     &model,
//! )?;
//! let call = |name| CallRequest {
//!     agent: "bot",
//!     session: "s1",
//!     action: Action::CallTool,
//!     server: "corp",
//!     name,
//!     args: None,
//!     approval_granted: false,
//!     labels: &[],
//! };
//! assert!(matches!(engine.decide(&call("forum_read")), Decision::Allow { .. }));
//! assert!(matches!(engine.decide(&call("forum_post")), Decision::Deny { .. }));
//! assert!(!engine.visible("bot", Action::CallTool, "corp", "forum_post"));
//! # Ok::<(), airlock_policy::PolicyError>(())
//! ```

mod args;
mod engine;
mod entities;
mod error;
mod load;
mod reads;
mod slice;
mod warnings;

use std::collections::BTreeMap;
use std::path::PathBuf;

pub use engine::PolicyEngine;
pub use error::PolicyError;

/// The shipped schema (`policies/airlock.cedarschema`), used when
/// [`PolicySources::schema`] is `None`.
pub const SHIPPED_SCHEMA: &str = include_str!("../../../policies/airlock.cedarschema");

/// The error text of a default deny: no `permit` applied.
pub const NO_PERMIT: &str = "no policy permits this";
/// The error text of a call by an agent the entity model does not have.
pub const UNKNOWN_AGENT: &str = "unknown agent";

/// The entities policies can name, built by the gateway from its config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntityModel {
    pub agents: Vec<AgentEntity>,
    pub humans: Vec<HumanEntity>,
    pub tasks: Vec<String>,
    pub servers: Vec<String>,
}

/// `Agent::"<id>"` with `on_behalf_of`, `task`, and `AgentGroup` parents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentEntity {
    pub id: String,
    pub on_behalf_of: String,
    pub task: String,
    pub groups: Vec<String>,
}

/// `Human::"<id>"` with `Group` parents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HumanEntity {
    pub id: String,
    pub groups: Vec<String>,
}

/// Where the schema and policies come from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicySources {
    /// A Cedar schema file; `None` means [`SHIPPED_SCHEMA`].
    pub schema: Option<PathBuf>,
    /// `.cedar` files; a directory means every `*.cedar` in it, sorted by name.
    pub files: Vec<PathBuf>,
}

/// The MCP actions that go through policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// `tools/call`, resource `Tool::"<server>/<tool>"`.
    CallTool,
    /// `resources/read`, resource `Resource::"<server>/<uri>"`.
    ReadResource,
    /// `prompts/get`, resource `Prompt::"<server>/<name>"`.
    GetPrompt,
}

impl Action {
    /// The Cedar action id: `call_tool`, `read_resource`, `get_prompt`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::CallTool => "call_tool",
            Action::ReadResource => "read_resource",
            Action::GetPrompt => "get_prompt",
        }
    }

    /// 0, 1, 2: for per-action tables.
    pub(crate) fn index(self) -> usize {
        match self {
            Action::CallTool => 0,
            Action::ReadResource => 1,
            Action::GetPrompt => 2,
        }
    }
}

/// One call to authorize.
#[derive(Debug, Clone, Copy)]
pub struct CallRequest<'a> {
    pub agent: &'a str,
    pub session: &'a str,
    pub action: Action,
    /// The upstream server's name (may not contain `/`).
    pub server: &'a str,
    /// Tool name, resource URI or prompt name.
    pub name: &'a str,
    /// The call's arguments (a JSON object), if any.
    pub args: Option<&'a serde_json::Value>,
    /// Whether a human approved this exact call.
    pub approval_granted: bool,
    /// Information-flow labels the session carries (`context.session.labels`).
    pub labels: &'a [String],
}

/// The answer for one call. A denial is a value, not an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Permitted; `reasons` are the permits that applied.
    Allow { reasons: Vec<PolicyRef> },
    /// Refused. `reasons` are the determining forbids, or the policies whose
    /// evaluation errored; `errors` explain denials no forbid caused:
    /// [`NO_PERMIT`], [`UNKNOWN_AGENT`], evaluation errors, arguments that do
    /// not fit the schema.
    Deny {
        reasons: Vec<PolicyRef>,
        errors: Vec<String>,
    },
    /// Only `@approval` forbids stand in the way, and with approval granted
    /// the call would be allowed: hold it for a human.
    NeedsApproval { reasons: Vec<PolicyRef> },
}

impl Decision {
    /// True for [`Decision::Allow`].
    pub fn is_allow(&self) -> bool {
        matches!(self, Decision::Allow { .. })
    }

    /// The policies behind this decision.
    pub fn reasons(&self) -> &[PolicyRef] {
        match self {
            Decision::Allow { reasons }
            | Decision::Deny { reasons, .. }
            | Decision::NeedsApproval { reasons } => reasons,
        }
    }
}

/// A policy named in a decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRef {
    /// `@id`, else `<file>:<line>` (`<file>:<line>:<col>` if a line holds two).
    pub id: String,
    /// `@reason("...")`.
    pub reason: Option<String>,
    /// `@approval("...")`.
    pub approval: Option<String>,
    /// `file:line:col` where the policy starts.
    pub location: String,
}

/// A loaded policy, for `airlock policy list` and audit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyInfo {
    pub id: String,
    /// `"permit"` or `"forbid"`.
    pub effect: &'static str,
    pub location: String,
    pub reason: Option<String>,
    pub approval: Option<String>,
}

/// What the gateway knows exists, for [`PolicyEngine::warnings`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KnownTargets {
    pub servers: Vec<String>,
    /// Tools per server; an empty list means "unknown", so no tool warnings.
    pub tools: BTreeMap<String, Vec<String>>,
}
