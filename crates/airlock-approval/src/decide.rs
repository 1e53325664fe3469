//! A human's decision on a held call, whole: authorization, the vote, the state change, the
//! audit record and the wake-up of every gateway.

use airlock_config::Config;
use airlock_policy::PolicyEngine;

use crate::error::ApprovalError;
use crate::model::{Approval, State, Verdict, Vote};
use crate::records::approval_record;
use crate::store::ApprovalStore;

/// Denies every pending approval request a just-committed `kill` covers, and voids every
/// approved one not used yet (as its human, with its reason); returns their `approval` audit
/// records: every kill channel (`airlock kill`, the API and page, a breaker pause) ends held
/// calls and unused approvals the same way.
pub fn deny_for_kill(
    config: &Config,
    kill: &airlock_control::Kill,
) -> Result<Vec<airlock_audit::NewRecord>, ApprovalError> {
    let mut store =
        ApprovalStore::open_with(&config.audit.path, airlock_control::durability(config))?;
    let denied = store.deny_for_kill(&kill.target, &kill.by, &kill.reason)?;
    Ok(crate::records::kill_denial_records(&denied))
}

/// Before a resume of `target` by `by`: voids (denies) every request the kill covered that is
/// still pending or approved and unused, and appends their audit records. Normally the kill
/// already did this; should that have failed, the resume does it, and a resume whose voiding
/// fails must not go ahead (the caller refuses it): a resume never revives an approval
/// granted before the kill. Returns how many requests were voided.
pub fn void_before_resume(
    config: &Config,
    target: &airlock_control::KillTarget,
    by: &str,
) -> Result<usize, ApprovalError> {
    let durability = airlock_control::durability(config);
    let mut store = ApprovalStore::open_with(&config.audit.path, durability)?;
    let voided = store.deny_for_kill(
        target,
        by,
        "void: granted before a kill and not used; resuming does not revive it",
    )?;
    if voided.is_empty() {
        return Ok(0);
    }
    let records = crate::records::kill_denial_records(&voided);
    airlock_audit::AuditStore::open(&config.audit.path, durability)
        .and_then(|mut s| s.append(&records))
        .map_err(|e| {
            ApprovalError::Audit(format!(
                "{} approval request(s) were voided, but their audit records failed: {e}",
                voided.len()
            ))
        })?;
    Ok(voided.len())
}

/// The longest comment kept with a vote.
const MAX_COMMENT: usize = 2000;

/// Records `human`'s `verdict` on request `id`, from `channel` (`cli`, `api`, `web`).
///
/// The caller has verified the human's credential. This checks everything else: the human is
/// configured with a credential and is not an agent; to approve, they belong to every group
/// the holding policies name in `@approvers`; they have not voted already. Four eyes is
/// applied when counting: the on-behalf-of human's approval is recorded but alone does not
/// approve. Then the audit record, then every gateway (and `airlock serve`) is woken.
/// `policy` is the policy set in force; its digest goes on the audit record.
pub fn decide(
    config: &Config,
    policy: &PolicyEngine,
    id: &str,
    human: &str,
    verdict: Verdict,
    channel: &str,
    comment: Option<&str>,
) -> Result<Approval, ApprovalError> {
    let comment = comment.map(str::trim).filter(|c| !c.is_empty());
    if comment.is_some_and(|c| c.len() > MAX_COMMENT) {
        return Err(ApprovalError::Invalid(format!(
            "the comment is longer than {MAX_COMMENT} bytes"
        )));
    }
    let durability = airlock_control::durability(config);
    let db = &config.audit.path;
    let mut store = ApprovalStore::open_with(db, durability)?;
    let vote = Vote {
        human: human.to_owned(),
        verdict,
        channel: channel.to_owned(),
        comment: comment.map(str::to_owned),
        time_ns: airlock_audit::now_unix_ns(),
    };
    let after = store.vote(id, &vote, |a| authorize(config, a, human, verdict))?;
    let event = match after.state {
        State::Approved => "approved",
        State::Denied => "denied",
        _ => "vote",
    };
    let audited = airlock_audit::AuditStore::open(db, durability).and_then(|mut s| {
        let mut record = approval_record(&after, event, Some(&vote));
        record.policy_digest = Some(policy.digest().to_owned());
        s.append(&[record])
    });
    if let Err(e) = airlock_control::notify_all(db) {
        tracing::warn!(error = %e, "cannot wake the gateways after an approval decision");
    }
    if let Err(e) = audited {
        return Err(ApprovalError::Audit(format!(
            "the vote is recorded (request {id} is {}), but its audit record failed: {e}",
            after.state
        )));
    }
    Ok(after)
}

/// Whether `human` may approve `a` (configured with a credential, not an agent, in every
/// `@approvers` group): who may read the request's secret values on a show path
/// ([`crate::ApprovalStore::reveal`]). The caller has verified the human's credential.
pub fn may_approve(config: &Config, a: &Approval, human: &str) -> Result<(), ApprovalError> {
    authorize(config, a, human, Verdict::Approve)
}

/// May `human` cast `verdict` on `a`? Every refusal names why.
fn authorize(
    config: &Config,
    a: &Approval,
    human: &str,
    verdict: Verdict,
) -> Result<(), ApprovalError> {
    let refuse = |why: String| ApprovalError::NotAllowed {
        id: a.id.clone(),
        human: human.to_owned(),
        why,
    };
    let Some(h) = config.humans.get(human) else {
        return Err(refuse("not a human in the config".into()));
    };
    // An agent never decides, even one that shares a name with a human.
    if human == a.agent || config.agents.contains_key(human) {
        return Err(refuse("an agent cannot decide approvals".into()));
    }
    if verdict == Verdict::Approve {
        if let Some(g) = a.approvers.iter().find(|g| !h.groups.contains(g)) {
            return Err(refuse(format!(
                "the policy asks for approvers in group {g}, and {human} is not in it"
            )));
        }
    }
    if h.token_sha256.is_none() {
        return Err(refuse(
            "has no credential (token_sha256) in the config".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
