//! The approval request and its parts, as the store, the CLI, the API and the page see them.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Where a request stands.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Waiting for humans.
    Pending,
    /// The quorum approved; not used yet.
    Approved,
    /// A human (or a kill) denied it.
    Denied,
    /// Nobody decided in time: a denial.
    Expired,
    /// The agent cancelled the call or went away.
    Withdrawn,
    /// Approved, and the call went through (single use).
    Used,
}

impl State {
    /// Every state, in the order a request can reach them.
    pub const ALL: [State; 6] = [
        State::Pending,
        State::Approved,
        State::Denied,
        State::Expired,
        State::Withdrawn,
        State::Used,
    ];

    /// The lowercase name (also the stored value).
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Approved => "approved",
            State::Denied => "denied",
            State::Expired => "expired",
            State::Withdrawn => "withdrawn",
            State::Used => "used",
        }
    }

    /// The state with this name.
    pub fn from_name(name: &str) -> Option<State> {
        State::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A human's answer.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Approve,
    Deny,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Approve => "approve",
            Verdict::Deny => "deny",
        }
    }

    pub fn from_name(name: &str) -> Option<Verdict> {
        match name {
            "approve" => Some(Verdict::Approve),
            "deny" => Some(Verdict::Deny),
            _ => None,
        }
    }
}

/// One human's vote on one request.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Vote {
    pub human: String,
    pub verdict: Verdict,
    /// `cli`, `api`, `web`, or `kill` (a kill denied the request).
    pub channel: String,
    pub comment: Option<String>,
    pub time_ns: i64,
}

/// The policy that held the call, and why.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct HoldReason {
    /// The policy's `@id` (or `file:line`).
    pub policy: String,
    /// Its `@approval("…")` text.
    pub why: String,
}

/// One held call waiting for (or past) a human decision.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Approval {
    /// `apr-` and 16 hex digits.
    pub id: String,
    /// [`action_digest`] of the call: what an approval is bound to.
    pub digest: String,
    pub agent: String,
    pub on_behalf_of: String,
    pub task: String,
    pub session: String,
    pub server: String,
    /// `tools/call`, `resources/read` or `prompts/get`.
    pub method: String,
    /// Tool name, resource URI or prompt name.
    pub target: String,
    /// The call's arguments, secret-looking values redacted.
    pub args_redacted: Value,
    pub reasons: Vec<HoldReason>,
    /// Groups every approving human must belong to (`@approvers`); empty: any permitted human.
    pub approvers: Vec<String>,
    /// Distinct approving humans needed.
    pub quorum: u32,
    /// The on-behalf-of human's approval alone is not enough.
    pub four_eyes: bool,
    pub created_ns: i64,
    pub expires_ns: i64,
    /// As stored, except that a pending request past `expires_ns` reads as `Expired`.
    pub state: State,
    pub decided_ns: Option<i64>,
    pub votes: Vec<Vote>,
}

impl Approval {
    /// Humans who voted to approve, in vote order.
    pub fn approvers_so_far(&self) -> Vec<&str> {
        self.votes
            .iter()
            .filter(|v| v.verdict == Verdict::Approve)
            .map(|v| v.human.as_str())
            .collect()
    }

    /// Approving votes so far, and how many of them are not the on-behalf-of human's.
    fn tally(&self) -> (usize, usize) {
        let approving = self.approvers_so_far();
        let others = approving
            .iter()
            .filter(|h| **h != self.on_behalf_of)
            .count();
        (approving.len(), others)
    }

    /// Whether the approving votes meet the quorum and four eyes.
    pub fn quorum_met(&self) -> bool {
        let (approving, others) = self.tally();
        approving >= self.quorum as usize && (!self.four_eyes || others >= 1)
    }

    /// What is still missing, for people: "1 more approval", "an approval by someone other than alice".
    pub fn missing(&self) -> Option<String> {
        if self.state != State::Pending {
            return None;
        }
        let (approving, others) = self.tally();
        let more = (self.quorum as usize).saturating_sub(approving);
        if more > 0 {
            Some(format!(
                "{more} more approval{}",
                if more == 1 { "" } else { "s" }
            ))
        } else if self.four_eyes && others == 0 {
            Some(format!(
                "an approval by someone other than {} (four eyes)",
                self.on_behalf_of
            ))
        } else {
            None
        }
    }
}

/// What a gateway knows when it holds a call.
#[derive(Clone, Debug)]
pub struct NewApproval {
    pub digest: String,
    pub agent: String,
    pub on_behalf_of: String,
    pub task: String,
    pub session: String,
    pub server: String,
    pub method: String,
    pub target: String,
    pub args_redacted: Value,
    pub reasons: Vec<HoldReason>,
    pub requirements: crate::Requirements,
    pub now_ns: i64,
}

/// Which requests to list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListFilter {
    /// Empty: every state.
    pub states: Vec<State>,
    pub agent: Option<String>,
    pub session: Option<String>,
    /// At most this many, newest first.
    pub limit: usize,
}

impl Default for ListFilter {
    fn default() -> Self {
        Self {
            states: Vec::new(),
            agent: None,
            session: None,
            limit: 1000,
        }
    }
}

/// SHA-256 (hex) of the canonical JSON (RFC 8785) of the exact action: who asks, for whom,
/// which server, which method and target, with which arguments. An approval is bound to it.
pub fn action_digest(
    agent: &str,
    on_behalf_of: &str,
    server: &str,
    method: &str,
    target: &str,
    args: &Value,
) -> String {
    airlock_protocol::digest_json(&json!({
        "agent": agent,
        "on_behalf_of": on_behalf_of,
        "server": server,
        "method": method,
        "target": target,
        "args": args,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_changes_with_every_part_and_not_with_key_order() {
        let args = json!({ "channel": "public", "body": "hi" });
        let base = action_digest("bot", "alice", "corp", "tools/call", "forum_post", &args);
        let reordered = serde_json::from_str::<Value>(r#"{"body":"hi","channel":"public"}"#)
            .unwrap_or(Value::Null);
        assert_eq!(
            base,
            action_digest(
                "bot",
                "alice",
                "corp",
                "tools/call",
                "forum_post",
                &reordered
            )
        );
        let others = [
            action_digest("bot2", "alice", "corp", "tools/call", "forum_post", &args),
            action_digest("bot", "bob", "corp", "tools/call", "forum_post", &args),
            action_digest("bot", "alice", "corp2", "tools/call", "forum_post", &args),
            action_digest("bot", "alice", "corp", "prompts/get", "forum_post", &args),
            action_digest("bot", "alice", "corp", "tools/call", "forum_list", &args),
            action_digest(
                "bot",
                "alice",
                "corp",
                "tools/call",
                "forum_post",
                &json!({ "channel": "public", "body": "hi!" }),
            ),
        ];
        for d in others {
            assert_ne!(base, d);
        }
    }
}
