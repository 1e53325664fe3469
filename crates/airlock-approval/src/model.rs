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

/// The text every redaction marker starts with (`airlock_audit::redact`).
const REDACTION_MARKER: &str = "[redacted sha256:";

impl Approval {
    /// Whether the stored arguments hide a value (a secret redacted to a marker): a human
    /// cannot read what they would approve, unless the arguments were kept for approvers
    /// ([`crate::ApprovalStore::reveal`]).
    pub fn hides_values(&self) -> bool {
        has_marker(&self.args_redacted)
    }
}

/// Whether `v` holds a redaction marker anywhere.
pub(crate) fn has_marker(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains(REDACTION_MARKER),
        Value::Array(items) => items.iter().any(has_marker),
        Value::Object(map) => map
            .iter()
            .any(|(k, v)| k.contains(REDACTION_MARKER) || has_marker(v)),
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

/// A request's arguments as they are, secrets included: for a human who may approve it, on
/// the show paths only (`airlock approvals show --as`, the API's and the page's request view).
/// Never listed, logged, audited or sent by the webhook; kept only while the request is
/// pending or approved and unused.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Revealed {
    /// The call's arguments, unredacted (bound to the request's digest).
    pub args: Value,
    /// JSON pointers (RFC 6901) of the values redaction hides, so a page or a terminal can
    /// mark them as secrets.
    pub secrets: Vec<String>,
}

/// JSON pointers of the values `airlock_audit::redact` would hide in `args`: every non-null
/// value under a key that names a secret, and every string with a secret-looking span.
pub fn secret_paths(args: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk_secrets(args, &mut String::new(), &mut out);
    out
}

fn walk_secrets(v: &Value, path: &mut String, out: &mut Vec<String>) {
    let len = path.len();
    match v {
        Value::Object(map) => {
            for (k, item) in map {
                path.push('/');
                path.push_str(&k.replace('~', "~0").replace('/', "~1"));
                if airlock_audit::is_secret_key(k) && !item.is_null() {
                    out.push(path.clone());
                } else {
                    walk_secrets(item, path, out);
                }
                path.truncate(len);
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                path.push('/');
                path.push_str(&i.to_string());
                walk_secrets(item, path, out);
                path.truncate(len);
            }
        }
        Value::String(_) => {
            if airlock_audit::redact(v) != *v {
                out.push(path.clone());
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
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
    fn secret_paths_name_what_redaction_hides() {
        let args = json!({
            "channel": "public",
            "api_key": "k-123",
            "headers": {"Authorization": "Bearer abcdefghijklmnopqrstuvwxyz", "a/b~": {"password": 7}},
            "cmd": ["ls", "curl -u me:hunter2@x https://user:pw1234@example.com/"],
            "cookie": null,
        });
        let mut paths = secret_paths(&args);
        paths.sort_unstable();
        assert_eq!(
            paths,
            [
                "/api_key",
                "/cmd/1",
                "/headers/Authorization",
                "/headers/a~1b~0/password"
            ]
        );
        assert!(secret_paths(&json!({"channel": "public", "n": 1})).is_empty());
    }

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
