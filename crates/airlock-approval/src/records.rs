//! The audit record of every approval event: requested, vote, approved, denied, expired,
//! withdrawn, used. One shape, so `airlock audit query --kind approval` reads them all.

use airlock_audit::{kinds, NewRecord};
use serde_json::json;

use crate::model::{Approval, Vote};

/// The `approval` record for `event` on `approval`; `vote` is the vote that caused it, if any.
pub fn approval_record(approval: &Approval, event: &str, vote: Option<&Vote>) -> NewRecord {
    let mut r = NewRecord::at(
        kinds::APPROVAL,
        vote.map_or_else(airlock_audit::now_unix_ns, |v| v.time_ns),
    );
    r.agent = Some(approval.agent.clone());
    r.on_behalf_of = Some(approval.on_behalf_of.clone());
    r.task = Some(approval.task.clone());
    r.session = Some(approval.session.clone());
    r.server = Some(approval.server.clone());
    r.method = Some(approval.method.clone());
    r.target = Some(approval.target.clone());
    r.args_digest = Some(approval.digest.clone());
    r.decision = vote.map(|v| v.verdict.as_str().to_owned());
    r.reasons = approval.reasons.iter().map(|h| h.policy.clone()).collect();
    r.status = Some(approval.state.as_str().to_owned());
    r.detail = Some(json!({
        "event": event,
        "approval_id": approval.id,
        "human": vote.map(|v| v.human.as_str()),
        "channel": vote.map(|v| v.channel.as_str()),
        "comment": vote.and_then(|v| v.comment.as_deref()),
        "approved_by": approval.approvers_so_far(),
        "quorum": approval.quorum,
        "four_eyes": approval.four_eyes,
    }));
    r
}

/// The `approval` records of requests a kill denied (each carries the kill's vote).
pub fn kill_denial_records(denied: &[Approval]) -> Vec<NewRecord> {
    denied
        .iter()
        .map(|a| {
            let vote = a.votes.iter().rev().find(|v| v.channel == "kill");
            approval_record(a, "denied", vote)
        })
        .collect()
}
