//! The closed vocabularies of a record: its kind, the decision, the status and the reasons.
//!
//! Each is stored (and hashed) as the text it had when these were plain strings, so a trail
//! written before these types, or by a later build, verifies the same. Writing uses the types:
//! a record cannot be built with a misspelt kind. Reading back keeps the stored text
//! ([`crate::StoredRecord`]) because a newer build may write a kind this one does not know;
//! `from_name` reads it into the type when it is one this build knows.

use std::fmt;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A fieldless enum stored as fixed text: `as_str`, `from_name`, `ALL`, `Display` and serde
/// as that text.
macro_rules! named {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident => $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            const NAMES: &'static [&'static str] = &[$($text),+];

            /// The stored text.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $text, )+
                }
            }

            /// The value stored as `name`; `None` for text this build does not know.
            pub fn from_name(name: &str) -> Option<$name> {
                match name {
                    $( $text => Some($name::$variant), )+
                    _ => None,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<$name, D::Error> {
                let text = std::borrow::Cow::<'de, str>::deserialize(d)?;
                $name::from_name(&text).ok_or_else(|| {
                    D::Error::unknown_variant(&text, $name::NAMES)
                })
            }
        }
    };
}

named! {
    /// What a record is about (the `kind` column). Every kind any Airlock crate writes.
    pub enum RecordKind {
        /// An acting request and the decision taken on it.
        Call => "call",
        /// The outcome of a call; its `ref_seq` names the call record.
        Result => "result",
        /// The configuration and policies a gateway started with.
        ConfigLoad => "config_load",
        /// Policies reloaded (SIGHUP).
        ConfigReload => "config_reload",
        /// A reload that failed; the policies in force were kept.
        ConfigReloadFailed => "config_reload_failed",
        /// An approval request's event: requested, a vote, approved, denied, expired, ….
        Approval => "approval",
        /// A kill (a human's, or a breaker's pause).
        Kill => "kill",
        /// Kills ended by a human.
        Resume => "resume",
        /// A circuit breaker tripped.
        Breaker => "breaker",
        /// An outbound connection of a sandboxed process, allowed or refused.
        Egress => "egress",
        /// The upstream server's process exited; in-flight calls failed.
        UpstreamExit => "upstream_exit",
        /// An information-flow label given to an agent or session.
        Flow => "flow",
        /// A command run by `airlock exec` in a sandbox.
        Exec => "exec",
        /// A sandboxed upstream hit a cap (memory, processes, CPU, wall clock) and was stopped.
        SandboxBreach => "sandbox_breach",
        /// A notification from the agent that Airlock refused (a cancellation of no request of
        /// the agent's in flight).
        Notification => "notification",
        /// A request of the server's (sampling, elicitation, roots) and the agent's answer.
        ServerRequest => "server_request",
        /// An agent registered (`airlock agents add`) or its registration revoked.
        Agent => "agent",
    }
}

named! {
    /// The `decision` column.
    pub enum Decision {
        /// Let through.
        Allow => "allow",
        /// Refused.
        Deny => "deny",
        /// Held for a human's approval.
        Hold => "hold",
        /// A human's approving vote (on an `approval` record; a refusing vote is `Deny`).
        Approve => "approve",
    }
}

named! {
    /// The `status` column: how something ended, or the state it is in.
    pub enum ResultStatus {
        // The outcome of a call (`result` records), of `airlock exec` (`exec`) and of an
        // upstream (`upstream_exit`, `sandbox_breach`).
        /// Answered.
        Ok => "ok",
        /// A JSON-RPC error, an unreadable answer, or a command that exited non-zero.
        Error => "error",
        /// A tool result with `isError: true`.
        IsError => "is_error",
        /// Cancelled before an answer (written by earlier builds).
        Cancelled => "cancelled",
        /// The upstream went away before answering.
        UpstreamDied => "upstream_died",
        /// The upstream did not answer in time.
        Timeout => "timeout",
        /// Stopped by a kill, a breaker pause or a sandbox cap.
        Killed => "killed",
        /// Answered, but the result was kept from the agent (its flow label was not recorded).
        Withheld => "withheld",
        /// A held call whose approval request was denied.
        ApprovalDenied => "approval_denied",
        /// A held call whose approval request expired.
        ApprovalExpired => "approval_expired",
        /// A held call whose approval request could not be read.
        ApprovalError => "approval_error",
        /// `airlock exec` could not set the sandbox up.
        SandboxError => "sandbox_error",
        // The state of an approval request after the event (`approval` records).
        /// Waiting for votes.
        Pending => "pending",
        /// Approved, not yet used.
        Approved => "approved",
        /// Denied.
        Denied => "denied",
        /// Expired without a decision.
        Expired => "expired",
        /// Withdrawn (the agent cancelled, or the gateway ended).
        Withdrawn => "withdrawn",
        /// Approved and used once.
        Used => "used",
        // The phase of an outbound connection (`egress` records).
        /// Refused by the egress rules.
        Refused => "refused",
        /// Allowed and opened.
        Open => "open",
        /// Allowed, and now closed.
        Closed => "closed",
    }
}

named! {
    /// Airlock's own reasons, written as `airlock:<name>`.
    pub enum AirlockReason {
        /// No policy permits the call.
        DefaultDeny => "default-deny",
        /// A policy could not be evaluated (fail closed).
        EvaluationError => "evaluation-error",
        /// The request's params are not what the method takes.
        MalformedParams => "malformed-params",
        /// A method Airlock cannot judge and the config does not let through.
        UnknownMethod => "unknown-method",
        /// Approved, but the policy in force no longer allows the call.
        DeniedAfterApproval => "denied-after-approval",
        /// The call needs an approval and the gateway has no approval store.
        NoApprovalStore => "no-approval-store",
        /// The policy asking for an approval is malformed.
        BadApprovalPolicy => "bad-approval-policy",
        /// The approval store failed.
        ApprovalStoreError => "approval-store-error",
        /// The breaker counters could not be read or written.
        BreakerStoreError => "breaker-store-error",
        /// A cancellation that names no request of the agent's in flight.
        CancelNotInFlight => "cancel-not-in-flight",
        /// A `tasks/*` request about a task this session created.
        OwnTask => "own-task",
        /// `tasks/list`, answered with this session's tasks only.
        OwnTasks => "own-tasks",
        /// A `tasks/*` request about a task this session did not create.
        UnknownTask => "unknown-task",
        /// The agent's answer to a request the server sent and waits on.
        AnswerToServerRequest => "answer-to-server-request",
        /// An agent's answer to no request the server is waiting on.
        NoSuchServerRequest => "no-such-server-request",
        /// The gateway was stopped by a kill.
        Stopped => "stopped",
    }
}

/// One reason behind a decision (an element of the `reasons` column). Stored as text:
///
/// | variant | text |
/// |---|---|
/// | `Policy(id)` | `id` |
/// | `Airlock(r)` | `airlock:<r>` |
/// | `Kill(id)` | `kill:<id>` |
/// | `Approval(id)` | `approval:<id>` |
/// | `Breaker(class)` | `breaker:<class>` |
/// | `Config(key)` | `config:<key>` |
/// | `Text(words)` | `words` |
///
/// `Text` is what no rule makes: a human's kill reason, an egress rule, a sandbox cap or
/// error. It prints as given, so [`Reason::parse`] cannot tell it from a policy id (or, for a
/// human's words such as `breaker: acl`, from a prefixed reason): the reasons of a `kill`
/// record are the human's text, and what a kill *is* is in the kill store's origin column.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Reason {
    /// A policy's id.
    Policy(String),
    /// One of Airlock's own reasons.
    Airlock(AirlockReason),
    /// The kill in force, by id.
    Kill(i64),
    /// The approval request that let a held call through, by id.
    Approval(String),
    /// The breaker class whose budget is used up.
    Breaker(String),
    /// The config setting that decided (`gateway.allow_methods`).
    Config(String),
    /// Words, as given.
    Text(String),
}

const AIRLOCK: &str = "airlock:";
const KILL: &str = "kill:";
const APPROVAL: &str = "approval:";
const BREAKER: &str = "breaker:";
const CONFIG: &str = "config:";

impl Reason {
    /// The reason whose text is `text`. Total and lossless: `parse(t).to_string() == t` for
    /// every `t`. Text with no known prefix reads as `Policy`; a prefixed text that is not
    /// what Airlock writes (an unknown `airlock:` name, a `kill:` without a number) reads as
    /// `Text`.
    pub fn parse(text: &str) -> Reason {
        let prefixed = |prefix: &str| text.strip_prefix(prefix).map(str::to_owned);
        if let Some(name) = text.strip_prefix(AIRLOCK) {
            return AirlockReason::from_name(name)
                .map_or_else(|| Reason::Text(text.to_owned()), Reason::Airlock);
        }
        if let Some(id) = text.strip_prefix(KILL) {
            return match id.parse::<i64>() {
                Ok(n) if n.to_string() == id => Reason::Kill(n),
                _ => Reason::Text(text.to_owned()),
            };
        }
        if let Some(id) = prefixed(APPROVAL) {
            return Reason::Approval(id);
        }
        if let Some(class) = prefixed(BREAKER) {
            return Reason::Breaker(class);
        }
        if let Some(key) = prefixed(CONFIG) {
            return Reason::Config(key);
        }
        Reason::Policy(text.to_owned())
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Policy(s) | Reason::Text(s) => f.write_str(s),
            Reason::Airlock(r) => write!(f, "{AIRLOCK}{r}"),
            Reason::Kill(id) => write!(f, "{KILL}{id}"),
            Reason::Approval(id) => write!(f, "{APPROVAL}{id}"),
            Reason::Breaker(class) => write!(f, "{BREAKER}{class}"),
            Reason::Config(key) => write!(f, "{CONFIG}{key}"),
        }
    }
}

impl From<Reason> for String {
    fn from(r: Reason) -> String {
        match r {
            Reason::Policy(s) | Reason::Text(s) => s,
            other => other.to_string(),
        }
    }
}

impl From<AirlockReason> for Reason {
    fn from(r: AirlockReason) -> Reason {
        Reason::Airlock(r)
    }
}

impl Serialize for Reason {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Reason {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Reason, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(d)?;
        Ok(Reason::parse(&text))
    }
}

#[cfg(test)]
#[path = "vocab_tests.rs"]
pub(crate) mod tests;
