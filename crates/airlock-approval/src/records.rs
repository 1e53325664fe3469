//! The audit record of every approval event: requested, vote, approved, denied, expired,
//! withdrawn, used. One shape, so `airlock audit query --kind approval` reads them all.

use airlock_audit::{Decision, NewRecord, Reason, RecordKind, ResultStatus};
use serde_json::json;

use crate::model::{Approval, State, Verdict, Vote};

/// The `approval` record for `event` on `approval`; `vote` is the vote that caused it, if any.
pub fn approval_record(approval: &Approval, event: &str, vote: Option<&Vote>) -> NewRecord {
    let mut r = NewRecord::at(
        RecordKind::Approval,
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
    r.decision = vote.map(|v| decision(v.verdict));
    r.reasons = approval
        .reasons
        .iter()
        .map(|h| Reason::Policy(h.policy.clone()).into())
        .collect();
    r.status = Some(status(approval.state));
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

/// A vote as the record's decision.
fn decision(verdict: Verdict) -> Decision {
    match verdict {
        Verdict::Approve => Decision::Approve,
        Verdict::Deny => Decision::Deny,
    }
}

/// A request's state as the record's status.
fn status(state: State) -> ResultStatus {
    match state {
        State::Pending => ResultStatus::Pending,
        State::Approved => ResultStatus::Approved,
        State::Denied => ResultStatus::Denied,
        State::Expired => ResultStatus::Expired,
        State::Withdrawn => ResultStatus::Withdrawn,
        State::Used => ResultStatus::Used,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The record keeps the text these always had: the vote's and the state's own names.
    #[test]
    fn votes_and_states_are_recorded_by_their_names() {
        for v in [Verdict::Approve, Verdict::Deny] {
            assert_eq!(decision(v).as_str(), v.as_str());
        }
        for s in State::ALL {
            assert_eq!(status(s).as_str(), s.as_str());
        }
    }
}
