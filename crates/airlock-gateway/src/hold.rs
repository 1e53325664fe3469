//! Held calls: a call that only a human's approval can unblock waits here, its request open,
//! while the approval request sits in the store for humans to decide (`airlock approvals`,
//! `airlock serve`).
//!
//! - On arrival ([`admit`]): an approved, unused approval for the exact action (same digest)
//!   lets the call through once — the agent's retry after a restart. Otherwise the request is
//!   stored (or the pending one for the same digest joined) and the call is held.
//! - While held ([`watch`]): every wake-up of the control socket (a decision, a kill) and a
//!   tick re-read the held requests. Approved: used once, the call is judged again with
//!   `approval.granted = true`, the kill switch and the breakers, recorded, then forwarded.
//!   Denied or expired: the agent gets an error. A progress notification goes out now and
//!   then where the agent gave a progress token, so its client does not time out.
//! - The agent cancelling the call or going away withdraws the request ([`withdraw`]).
//!
//! Every store error is a denial: a held call never goes through because something failed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use airlock_approval::{
    action_digest, approval_record, Approval, HoldReason, NewApproval, Requirements, State,
};
use airlock_audit::{now_unix_ns, NewRecord, Submission, Ticket};
use airlock_policy::{CallRequest, Decision};
use airlock_protocol::{Frame, Id};
use serde_json::{json, Value};

use crate::codes;
use crate::gateway::{error_line, lock, with_newline, InFlight, Shared};
use crate::judge::{Expect, HoldRequest};
use crate::route::ActKind;

/// How often a waiting agent hears that its call is still held.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);
/// How often held requests are re-read without a wake-up (expiry, a lost datagram).
const REREAD_EVERY: Duration = Duration::from_millis(500);

/// One call held for a human.
pub(crate) struct Held {
    frame: Frame,
    approval_id: String,
    kind: ActKind,
    method: String,
    target: String,
    progress_token: Option<Value>,
    progress: u64,
    last_progress: Instant,
    /// The `hold` decision record, for the outcome to point at.
    call: Option<Ticket>,
}

/// What becomes of a call policy holds.
pub(crate) enum Admit {
    /// An earlier approval of this exact action covers it: forward it (once).
    Approved {
        record: NewRecord,
        extra: Vec<NewRecord>,
    },
    /// Hold it: `records` are the `hold` call record (first) and, for a new request, its
    /// `approval` record.
    Hold {
        held: Box<Held>,
        records: Vec<NewRecord>,
    },
    /// Refuse it (the store failed, an annotation is malformed, re-evaluation denied).
    Refuse {
        code: i32,
        message: String,
        record: NewRecord,
    },
}

/// Decides what happens to a call policy holds (see the module docs).
pub(crate) fn admit(shared: &Shared, frame: &Frame, method: &str, req: HoldRequest) -> Admit {
    let HoldRequest {
        kind,
        target,
        args,
        reasons,
        mut record,
    } = req;
    let refuse = |mut record: NewRecord, reason: &str, message: String| {
        record.decision = Some(airlock_audit::Decision::Deny);
        record.reasons = vec![reason.to_owned()];
        Admit::Refuse {
            code: codes::DENIED,
            message,
            record,
        }
    };
    let Some(store) = shared.approvals.as_ref() else {
        return refuse(
            record,
            "airlock:no-approval-store",
            "denied by Airlock: this call needs a human approval, and this gateway has no \
             approval store"
                .into(),
        );
    };
    let policy = shared.policy.current();
    let requirements = match Requirements::from_policies(&policy, &reasons) {
        Ok(r) => r,
        Err(e) => {
            return refuse(
                record,
                "airlock:bad-approval-policy",
                format!("denied by Airlock: {e}"),
            )
        }
    };
    let who = &shared.who;
    let digest = action_digest(
        &who.agent,
        &who.on_behalf_of,
        &who.server,
        method,
        &target,
        &args,
    );
    let labels = crate::flow::labels(shared);
    let mut store = lock(store);
    // An approval given while no gateway held the call (say across a restart) is used once.
    match store.take_approved(&digest) {
        Ok(Some(approval)) => {
            let call = CallRequest {
                agent: &who.agent,
                session: &who.session,
                action: kind.action(),
                server: &who.server,
                name: &target,
                args: Some(&args),
                approval_granted: true,
                labels: &labels,
            };
            return match policy.decide(&call) {
                Decision::Allow { reasons: permits } => {
                    approved_record(&mut record, &approval, &permits);
                    Admit::Approved {
                        record,
                        extra: vec![approval_record(&approval, "used", None)],
                    }
                }
                other => refuse(
                    record,
                    "airlock:denied-after-approval",
                    format!(
                        "denied by Airlock: approval {} was given, but the policy in force \
                         no longer allows the call ({})",
                        approval.id,
                        summary(&other)
                    ),
                ),
            };
        }
        Ok(None) => {}
        Err(e) => {
            tracing::error!(error = %e, "approval store failed; refusing the held call");
            return refuse(
                record,
                "airlock:approval-store-error",
                format!("denied by Airlock: the approval store failed ({e})"),
            );
        }
    }
    let new = NewApproval {
        digest,
        agent: who.agent.clone(),
        on_behalf_of: who.on_behalf_of.clone(),
        task: who.task.clone(),
        session: who.session.clone(),
        server: who.server.clone(),
        method: method.to_owned(),
        target: target.clone(),
        args_redacted: record.args_redacted.clone().unwrap_or_else(|| json!({})),
        reasons: reasons
            .iter()
            .map(|r| HoldReason {
                policy: r.id.clone(),
                why: r.approval.clone().unwrap_or_default(),
            })
            .collect(),
        requirements,
        now_ns: now_unix_ns(),
    };
    let (approval, created) = match store.request(&new) {
        Ok(x) => x,
        Err(e) => {
            tracing::error!(error = %e, "approval store failed; refusing the held call");
            return refuse(
                record,
                "airlock:approval-store-error",
                format!("denied by Airlock: the approval store failed ({e})"),
            );
        }
    };
    if let Some(detail) = record.detail.as_mut().and_then(Value::as_object_mut) {
        detail.insert("approval_id".into(), json!(approval.id));
        detail.insert("expires_ns".into(), json!(approval.expires_ns));
    }
    let mut records = vec![record];
    if created {
        records.push(approval_record(&approval, "requested", None));
    }
    tracing::info!(approval = %approval.id, %method, %target, "call held for a human approval");
    Admit::Hold {
        held: Box::new(Held {
            frame: frame.clone(),
            approval_id: approval.id,
            kind,
            method: method.to_owned(),
            target,
            progress_token: frame.progress_token().cloned(),
            progress: 0,
            last_progress: Instant::now(),
            call: None,
        }),
        records,
    }
}

/// Starts waiting on a held call whose `hold` record is durable (ticket `call`). Returns the
/// first progress notification, if the agent asked for progress.
pub(crate) fn start(shared: &Shared, id: Id, mut held: Held, call: Option<Ticket>) -> Vec<u8> {
    held.call = call;
    let first = progress_line(&mut held);
    lock(&shared.held).insert(id, held);
    shared.approvals_changed.notify_one();
    first
}

/// Whether a request with this id is held.
pub(crate) fn is_held(shared: &Shared, id: &Id) -> bool {
    lock(&shared.held).contains_key(id)
}

/// The agent cancelled request `id` (or went away): a held call is withdrawn. Returns whether
/// `id` was held.
pub(crate) fn withdraw(shared: &Shared, id: &Id, why: &str) -> bool {
    let Some(held) = lock(&shared.held).remove(id) else {
        return false;
    };
    close(shared, &held, State::Withdrawn, why);
    true
}

/// Withdraws every held call (the agent went away).
pub(crate) fn withdraw_all(shared: &Shared, why: &str) {
    let all: Vec<(Id, Held)> = lock(&shared.held).drain().collect();
    for (_, held) in all {
        close(shared, &held, State::Withdrawn, why);
    }
}

/// Answers every held call with `code`/`message` (a kill stopped the gateway): returns the
/// bytes for the agent and the calls, whose requests [`end_for_kill`] ends once the agent has
/// its answer (a store write may wait for the audit database's lock).
pub(crate) fn take_all(shared: &Shared, code: i32, message: &str) -> (Vec<u8>, Vec<Held>) {
    let all: Vec<(Id, Held)> = lock(&shared.held).drain().collect();
    let mut out = Vec::new();
    let mut held = Vec::with_capacity(all.len());
    for (id, h) in all {
        out.extend(error_line(Some(&id), code, message));
        held.push(h);
    }
    (out, held)
}

/// Ends the requests of held calls `kill` stopped. A stored kill denies them, as the channel
/// that issued it does too (whichever comes first records the denial, with the kill as the
/// vote); without a stored kill (the kill state could not be read) they are withdrawn.
pub(crate) fn end_for_kill(shared: &Shared, kill: &airlock_control::Kill, held: Vec<Held>) {
    if held.is_empty() {
        return;
    }
    let Some(store) = shared.approvals.as_ref().filter(|_| kill.id != 0) else {
        for h in &held {
            close(shared, h, State::Withdrawn, "stopped by a kill");
        }
        return;
    };
    let denied = lock(store).deny_for_kill(&kill.target, &kill.by, &kill.reason);
    match denied {
        Ok(denied) => {
            let records = airlock_approval::kill_denial_records(&denied);
            for (a, r) in denied.iter().zip(records) {
                let call = held
                    .iter()
                    .find(|h| h.approval_id == a.id)
                    .and_then(|h| h.call);
                shared.queue_record(r, call);
            }
        }
        Err(e) => tracing::error!(
            error = %e,
            kill = kill.id,
            "cannot deny the approval requests of calls the kill stopped"
        ),
    }
}

/// Ends a held call's request without a decision, on the record.
fn close(shared: &Shared, held: &Held, state: State, why: &str) {
    let Some(store) = shared.approvals.as_ref() else {
        return;
    };
    let mut store = lock(store);
    match store.close(&held.approval_id, state) {
        Ok(true) => {
            if let Ok(Some(a)) = store.get(&held.approval_id) {
                let mut r = approval_record(&a, state.as_str(), None);
                if let Some(d) = r.detail.as_mut().and_then(Value::as_object_mut) {
                    d.insert("why".into(), json!(why));
                }
                shared.queue_record(r, held.call);
            }
        }
        Ok(false) => {}
        Err(e) => {
            tracing::warn!(error = %e, approval = %held.approval_id, "cannot close the approval request")
        }
    }
}

/// Keeps held calls moving: on every wake-up and tick, re-reads each held request and acts on
/// a decision; sends progress notifications.
pub(crate) async fn watch(shared: Arc<Shared>) {
    loop {
        let _ = tokio::time::timeout(REREAD_EVERY, shared.approvals_changed.notified()).await;
        if shared.stopped().is_some() {
            continue;
        }
        let ids: Vec<Id> = lock(&shared.held).keys().cloned().collect();
        if ids.is_empty() {
            continue;
        }
        let states = read_states(&shared, &ids);
        let mut agent = Vec::new();
        for (id, state) in states {
            match state {
                Ok(a) if a.state == State::Pending => {
                    if let Some(h) = lock(&shared.held).get_mut(&id) {
                        if h.last_progress.elapsed() >= PROGRESS_EVERY {
                            agent.extend(progress_line(h));
                        }
                    }
                }
                Ok(a) if a.state == State::Approved => {
                    let Some(held) = lock(&shared.held).remove(&id) else {
                        continue;
                    };
                    agent.extend(release(&shared, &id, held).await);
                }
                outcome => {
                    let Some(held) = lock(&shared.held).remove(&id) else {
                        continue;
                    };
                    agent.extend(refuse_held(&shared, &id, &held, outcome));
                }
            }
        }
        if !agent.is_empty() && shared.write_agent(&agent).await.is_err() {
            return;
        }
    }
}

fn read_states(shared: &Shared, ids: &[Id]) -> Vec<(Id, Result<Approval, String>)> {
    let Some(store) = shared.approvals.as_ref() else {
        return Vec::new();
    };
    let store = lock(store);
    let held = lock(&shared.held);
    ids.iter()
        .filter_map(|id| {
            let h = held.get(id)?;
            let state = match store.get(&h.approval_id) {
                Ok(Some(a)) => Ok(a),
                Ok(None) => Err(format!("approval request {} is gone", h.approval_id)),
                Err(e) => Err(format!("the approval store failed ({e})")),
            };
            Some((id.clone(), state))
        })
        .collect()
}

/// A held call whose request was denied, expired, withdrawn elsewhere, or could not be read:
/// the agent's answer, with the outcome on the record.
fn refuse_held(
    shared: &Shared,
    id: &Id,
    held: &Held,
    outcome: Result<Approval, String>,
) -> Vec<u8> {
    let (code, status, message) = match &outcome {
        Ok(a) if a.state == State::Denied => {
            let by: Vec<String> = a
                .votes
                .iter()
                .filter(|v| v.verdict == airlock_approval::Verdict::Deny)
                .map(|v| match &v.comment {
                    Some(c) => format!("{} ({c})", v.human),
                    None => v.human.clone(),
                })
                .collect();
            (
                codes::APPROVAL_DENIED,
                airlock_audit::ResultStatus::ApprovalDenied,
                format!(
                    "denied by Airlock: approval request {} for `{}` was denied by {}",
                    a.id,
                    held.target,
                    by.join(", ")
                ),
            )
        }
        Ok(a) if a.state == State::Expired => {
            close(shared, held, State::Expired, "no decision in time");
            (
                codes::APPROVAL_EXPIRED,
                airlock_audit::ResultStatus::ApprovalExpired,
                format!(
                    "denied by Airlock: approval request {} for `{}` expired before a human \
                     decided it",
                    a.id, held.target
                ),
            )
        }
        Ok(a) => (
            codes::APPROVAL_DENIED,
            airlock_audit::ResultStatus::ApprovalDenied,
            format!(
                "denied by Airlock: approval request {} is {}",
                a.id, a.state
            ),
        ),
        Err(why) => (
            codes::DENIED,
            airlock_audit::ResultStatus::ApprovalError,
            format!("denied by Airlock: {why}"),
        ),
    };
    tracing::info!(approval = %held.approval_id, %status, "held call refused");
    let mut r = outcome_record(shared, held, id, status);
    r.detail = Some(json!({ "approval_id": held.approval_id }));
    shared.queue_record(r, held.call);
    error_line(Some(id), code, &message)
}

/// An approved held call: use the approval once, judge the call again with the approval
/// granted (and the kill switch and breakers), record it, forward it.
async fn release(shared: &Shared, id: &Id, held: Held) -> Vec<u8> {
    let consumed = match shared
        .approvals
        .as_ref()
        .map(|s| lock(s).consume(&held.approval_id))
    {
        Some(Ok(Some(a))) => a,
        Some(Ok(None)) => {
            return refuse_held(
                shared,
                id,
                &held,
                Err(format!("approval {} was already used", held.approval_id)),
            )
        }
        Some(Err(e)) => {
            return refuse_held(
                shared,
                id,
                &held,
                Err(format!("the approval store failed ({e})")),
            )
        }
        None => return Vec::new(),
    };
    let policy = shared.policy.current();
    let args = held
        .kind
        .args_key()
        .and_then(|key| held.frame.params().and_then(|p| p.get(key)))
        .cloned()
        .unwrap_or_else(|| json!({}));
    let labels = crate::flow::labels(shared);
    let decision = policy.decide(&CallRequest {
        agent: &shared.who.agent,
        session: &shared.who.session,
        action: held.kind.action(),
        server: &shared.who.server,
        name: &held.target,
        args: Some(&args),
        approval_granted: true,
        labels: &labels,
    });
    let mut record = crate::judge::base_record(
        &shared.who,
        &policy,
        &held.method,
        Some(&held.target),
        Some(id),
    );
    record.args_digest = Some(airlock_protocol::digest_json(&args));
    record.args_redacted = Some(airlock_audit::redact(&args));
    let permits = match decision {
        Decision::Allow { reasons } => reasons,
        other => {
            record.decision = Some(airlock_audit::Decision::Deny);
            record.reasons = vec!["airlock:denied-after-approval".into()];
            shared.queue_record(record, held.call);
            let message = format!(
                "denied by Airlock: approval {} was given, but the policy in force no longer \
                 allows the call ({})",
                consumed.id,
                summary(&other)
            );
            return error_line(Some(id), codes::DENIED, &message);
        }
    };
    let kills = shared.kills();
    if let Some(kill) = crate::kill::tool_kill(&kills, shared, &held.target) {
        record.decision = Some(airlock_audit::Decision::Deny);
        record.reasons = vec![format!("kill:{}", kill.id)];
        shared.queue_record(record, held.call);
        return error_line(Some(id), codes::KILLED, &crate::kill::refusal(kill));
    }
    if held.kind == ActKind::CallTool {
        if let Some(refusal) = crate::gateway::check_breakers(shared, &held.frame, &held.target) {
            record.decision = Some(airlock_audit::Decision::Deny);
            record.reasons = vec![refusal.reason.clone()];
            shared.queue_record(record, held.call);
            for extra in refusal.records {
                shared.queue_record(extra, None);
            }
            shared.commit_results();
            return error_line(Some(id), refusal.code, &refusal.message);
        }
    }
    approved_record(&mut record, &consumed, &permits);
    // The allow is durable before the call moves, like every other decision.
    let batch = vec![
        Submission {
            record,
            refers_to: held.call,
        },
        Submission::from(approval_record(&consumed, "used", None)),
    ];
    let ticket = match shared.audit.submit(batch) {
        Ok(tickets) => tickets.first().copied(),
        Err(e) => {
            tracing::error!(error = %e, "audit write failed; refusing the approved call");
            let message =
                format!("Airlock refused the call: the audit store could not record it ({e})");
            return error_line(Some(id), codes::AUDIT_UNAVAILABLE, &message);
        }
    };
    lock(&shared.in_flight).insert(
        id.clone(),
        InFlight {
            expect: Expect::Act {
                target: held.target.clone(),
            },
            call: ticket,
            started: Instant::now(),
            method: held.method.clone(),
            flow_args: Some(args.clone()),
        },
    );
    tracing::info!(approval = %consumed.id, target = %held.target, "approved call forwarded");
    if let Err(e) = shared.write_upstream(&with_newline(held.frame.raw())).await {
        lock(&shared.in_flight).remove(id);
        return error_line(
            Some(id),
            codes::UPSTREAM_UNAVAILABLE,
            &format!("Airlock could not forward the approved call: {e}"),
        );
    }
    Vec::new()
}

/// Marks `record` as allowed by the permits, on `approval`'s strength.
fn approved_record(
    record: &mut NewRecord,
    approval: &Approval,
    permits: &[airlock_policy::PolicyRef],
) {
    record.decision = Some(airlock_audit::Decision::Allow);
    record.reasons = permits.iter().map(|r| r.id.clone()).collect();
    record.reasons.push(format!("approval:{}", approval.id));
    record.detail = Some(json!({
        "approval_id": approval.id,
        "approved_by": approval.approvers_so_far(),
    }));
}

/// The record of a held call's end without forwarding.
fn outcome_record(
    shared: &Shared,
    held: &Held,
    id: &Id,
    status: airlock_audit::ResultStatus,
) -> NewRecord {
    let mut r = crate::judge::base_record(
        &shared.who,
        &shared.policy.current(),
        &held.method,
        Some(&held.target),
        Some(id),
    );
    r.kind = airlock_audit::RecordKind::Result;
    r.status = Some(status);
    r
}

fn progress_line(held: &mut Held) -> Vec<u8> {
    let Some(token) = &held.progress_token else {
        return Vec::new();
    };
    held.progress += 1;
    held.last_progress = Instant::now();
    let n = json!({
        "jsonrpc": "2.0",
        "method": "notifications/progress",
        "params": {
            "progressToken": token,
            "progress": held.progress,
            "message": format!(
                "held by Airlock: waiting for a human to approve request {}",
                held.approval_id
            ),
        },
    });
    with_newline(n.to_string().as_bytes())
}

fn summary(d: &Decision) -> String {
    match d {
        Decision::Allow { .. } => "allowed".into(),
        Decision::NeedsApproval { .. } => "it still needs approval".into(),
        Decision::Deny { reasons, errors } => {
            let mut parts: Vec<String> =
                reasons.iter().map(|r| format!("policy {}", r.id)).collect();
            parts.extend(errors.iter().cloned());
            parts.join("; ")
        }
    }
}

/// Held calls by request id.
pub(crate) type HeldCalls = std::sync::Mutex<HashMap<Id, Held>>;
