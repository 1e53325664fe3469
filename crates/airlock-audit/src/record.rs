//! The record types: what callers append, what `append` returns, what `query` reads back.

use serde::Serialize;
use serde_json::Value;

use crate::redact::redact;
use crate::vocab::{Decision, RecordKind, ResultStatus};

/// One record to append. `seq`, `prev_hash` and `hash` are assigned by the store.
///
/// `args_redacted` must already be redacted: the store keeps what it is given.
/// [`NewRecord::args`] does both the redaction and the digest bookkeeping.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct NewRecord {
    pub time_unix_ns: i64,
    pub kind: RecordKind,
    pub agent: Option<String>,
    pub on_behalf_of: Option<String>,
    pub task: Option<String>,
    pub session: Option<String>,
    pub server: Option<String>,
    pub method: Option<String>,
    /// Tool name, resource URI or prompt name.
    pub target: Option<String>,
    pub request_id: Option<String>,
    /// A result record points at its call record.
    pub ref_seq: Option<u64>,
    /// SHA-256 (hex) of the canonical, unredacted arguments.
    pub args_digest: Option<String>,
    pub args_redacted: Option<Value>,
    pub decision: Option<Decision>,
    /// Why: each the text of a [`crate::Reason`] (a policy id, `kill:<id>`, …).
    pub reasons: Vec<String>,
    /// Digest of the policy set in force.
    pub policy_digest: Option<String>,
    pub status: Option<ResultStatus>,
    pub duration_us: Option<u64>,
    /// Anything kind-specific (config paths, approver, breaker name, …).
    pub detail: Option<Value>,
}

impl NewRecord {
    /// A record of `kind` stamped with the current wall-clock time.
    pub fn now(kind: RecordKind) -> NewRecord {
        NewRecord::at(kind, now_unix_ns())
    }

    /// A record of `kind` at an explicit time (nanoseconds since the Unix epoch).
    pub fn at(kind: RecordKind, time_unix_ns: i64) -> NewRecord {
        NewRecord {
            time_unix_ns,
            kind,
            agent: None,
            on_behalf_of: None,
            task: None,
            session: None,
            server: None,
            method: None,
            target: None,
            request_id: None,
            ref_seq: None,
            args_digest: None,
            args_redacted: None,
            decision: None,
            reasons: Vec::new(),
            policy_digest: None,
            status: None,
            duration_us: None,
            detail: None,
        }
    }

    pub fn agent(mut self, v: impl Into<String>) -> Self {
        self.agent = Some(v.into());
        self
    }
    pub fn on_behalf_of(mut self, v: impl Into<String>) -> Self {
        self.on_behalf_of = Some(v.into());
        self
    }
    pub fn task(mut self, v: impl Into<String>) -> Self {
        self.task = Some(v.into());
        self
    }
    pub fn session(mut self, v: impl Into<String>) -> Self {
        self.session = Some(v.into());
        self
    }
    pub fn server(mut self, v: impl Into<String>) -> Self {
        self.server = Some(v.into());
        self
    }
    pub fn method(mut self, v: impl Into<String>) -> Self {
        self.method = Some(v.into());
        self
    }
    pub fn target(mut self, v: impl Into<String>) -> Self {
        self.target = Some(v.into());
        self
    }
    pub fn request_id(mut self, v: impl Into<String>) -> Self {
        self.request_id = Some(v.into());
        self
    }
    pub fn ref_seq(mut self, seq: u64) -> Self {
        self.ref_seq = Some(seq);
        self
    }
    /// Records the digest of the raw arguments and a redacted copy of them.
    /// The digest is computed by the caller (over the canonical form it already has).
    pub fn args(mut self, digest: impl Into<String>, raw: &Value) -> Self {
        self.args_digest = Some(digest.into());
        self.args_redacted = Some(redact(raw));
        self
    }
    pub fn decision(mut self, v: Decision) -> Self {
        self.decision = Some(v);
        self
    }
    /// The reasons, as [`crate::Reason`]s or their text.
    pub fn reasons<I, S>(mut self, reasons: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.reasons = reasons.into_iter().map(Into::into).collect();
        self
    }
    pub fn policy_digest(mut self, v: impl Into<String>) -> Self {
        self.policy_digest = Some(v.into());
        self
    }
    pub fn status(mut self, v: ResultStatus) -> Self {
        self.status = Some(v);
        self
    }
    pub fn duration_us(mut self, us: u64) -> Self {
        self.duration_us = Some(us);
        self
    }
    /// Kind-specific detail; redacted here because it may echo configuration.
    pub fn detail(mut self, v: &Value) -> Self {
        self.detail = Some(redact(v));
        self
    }
}

/// Nanoseconds since the Unix epoch; saturates instead of failing on absurd clocks.
pub fn now_unix_ns() -> i64 {
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(_) => 0,
    }
}

/// The position and hash of one record in the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Head {
    pub seq: u64,
    pub hash: String,
}

/// What `append` assigned to one record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Appended {
    pub seq: u64,
    pub hash: String,
}

/// A record as stored, with its place in the chain. `kind`, `decision` and `status` are the
/// stored text, as a later build may write values this one does not know; `known_*` read them
/// into their types.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredRecord {
    pub seq: u64,
    pub prev_hash: String,
    pub hash: String,
    pub time_unix_ns: i64,
    pub kind: String,
    pub agent: Option<String>,
    pub on_behalf_of: Option<String>,
    pub task: Option<String>,
    pub session: Option<String>,
    pub server: Option<String>,
    pub method: Option<String>,
    pub target: Option<String>,
    pub request_id: Option<String>,
    pub ref_seq: Option<u64>,
    pub args_digest: Option<String>,
    pub args_redacted: Option<Value>,
    pub decision: Option<String>,
    pub reasons: Vec<String>,
    pub policy_digest: Option<String>,
    pub status: Option<String>,
    pub duration_us: Option<u64>,
    pub detail: Option<Value>,
    /// For a `call` record: the status of its first `result` record, if any.
    pub result_status: Option<String>,
    /// For a `call` record: the duration of its first `result` record, if any.
    pub result_duration_us: Option<u64>,
}

impl StoredRecord {
    /// The kind, if this build knows it.
    pub fn known_kind(&self) -> Option<RecordKind> {
        RecordKind::from_name(&self.kind)
    }

    /// The decision, if there is one this build knows.
    pub fn known_decision(&self) -> Option<Decision> {
        self.decision.as_deref().and_then(Decision::from_name)
    }

    /// The status, if there is one this build knows.
    pub fn known_status(&self) -> Option<ResultStatus> {
        self.status.as_deref().and_then(ResultStatus::from_name)
    }
}
