//! The hold stage: a call that only a human's approval can unblock waits, its request open,
//! while the approval request sits in the store for humans to decide (`airlock approvals`,
//! `airlock serve`).
//!
//! - On arrival ([`admit`]): an approved, unused approval for the exact action (same digest)
//!   lets the call through once (the agent's retry after a restart): the call is judged again
//!   with the approval granted. Otherwise the request is stored (or the pending one for the
//!   same digest joined) and the call is held.
//! - While held ([`crate::Pipeline::review_held`]): every wake-up (a decision, a kill) and a
//!   tick re-read the held requests. Approved: used once, and the call re-enters the request
//!   stages at the kill stage with `approval.granted = true`. Denied or expired: the agent gets
//!   an error. A progress notification goes out now and then where the agent gave a progress
//!   token, so its client does not time out.
//! - The agent cancelling the call or going away withdraws the request.
//!
//! Every store error is a denial: a held call never goes through because something failed.
//! Store work runs on the store thread.

use std::sync::Arc;
use std::time::{Duration, Instant};

use airlock_approval::{
    action_digest, approval_record, Approval, HoldReason, NewApproval, Requirements, State,
};
use airlock_audit::{
    now_unix_ns, AirlockReason, Decision, NewRecord, Reason, RecordKind, ResultStatus, Submission,
    Ticket,
};
use airlock_protocol::{Frame, Id};
use serde_json::{json, Value};

use crate::calls::{Phase, Side};
use crate::codes;
use crate::lock;
use crate::pipeline::{error_line, with_newline, Output, Pipeline};
use crate::policy::HoldRequest;
use crate::request::{Records, Step};
use crate::route::route_request;
use crate::store::StoreSet;

/// How often a waiting agent hears that its call is still held.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// One call held for a human.
#[derive(Debug)]
pub struct Held {
    pub(crate) frame: Frame,
    pub(crate) approval_id: String,
    pub(crate) method: String,
    pub(crate) target: String,
    progress_token: Option<Value>,
    progress: u64,
    last_progress: Instant,
    /// The `hold` decision record, for the outcome to point at.
    pub(crate) call: Option<Ticket>,
}

/// What becomes of a call policy holds.
pub(crate) enum Admit {
    /// An earlier approval of this exact action covers it: judge it again with it granted.
    Approved {
        approval: Approval,
        extra: Vec<NewRecord>,
    },
    /// Hold it: `records` are the `hold` call record (first) and, for a new request, its
    /// `approval` record.
    Hold {
        held: Box<Held>,
        records: Vec<NewRecord>,
    },
    /// Refuse it (the store failed, an annotation is malformed).
    Refuse {
        code: i32,
        message: String,
        record: NewRecord,
    },
}

/// What the store said about a held call's action.
enum Stored {
    Approved(Approval),
    Requested(Approval, bool),
}

/// The hold stage (see the module docs). Runs on the request's thread; the store work on the
/// store thread.
pub(crate) fn admit(p: &Pipeline, frame: &Frame, method: &str, req: HoldRequest) -> Admit {
    let HoldRequest {
        kind: _,
        target,
        args,
        reasons,
        mut record,
    } = req;
    let refuse = |mut record: NewRecord, reason: &str, message: String| {
        record.decision = Some(Decision::Deny);
        record.reasons = vec![reason.to_owned()];
        Admit::Refuse {
            code: codes::DENIED,
            message,
            record,
        }
    };
    let Some(stores) = p.stores.as_ref() else {
        return refuse(
            record,
            &Reason::Airlock(AirlockReason::NoApprovalStore).to_string(),
            "denied by Airlock: this call needs a human approval, and this gateway has no \
             approval store"
                .into(),
        );
    };
    let policy = p.policy.current();
    let requirements = match Requirements::from_policies(&policy, &reasons) {
        Ok(r) => r,
        Err(e) => {
            return refuse(
                record,
                &Reason::Airlock(AirlockReason::BadApprovalPolicy).to_string(),
                format!("denied by Airlock: {e}"),
            )
        }
    };
    let who = &p.who;
    let digest = action_digest(
        &who.agent,
        &who.on_behalf_of,
        &who.server,
        method,
        &target,
        &args,
    );
    let new = NewApproval {
        digest: digest.clone(),
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
    // An approval given while no gateway held the call (say across a restart) is used once.
    // The real arguments are kept beside the request for the humans who may approve it: they
    // read exactly what the digest binds (never in lists, logs, the audit trail or the webhook).
    let stored = stores.call(move |s| -> Result<Stored, String> {
        match s.approvals.take_approved(&digest) {
            Ok(Some(approval)) => Ok(Stored::Approved(approval)),
            Ok(None) => s
                .approvals
                .request_with_args(&new, &args)
                .map(|(a, created)| Stored::Requested(a, created))
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        }
    });
    let (approval, created) = match stored {
        Ok(Ok(Stored::Approved(approval))) => {
            let extra = vec![approval_record(&approval, "used", None)];
            return Admit::Approved { approval, extra };
        }
        Ok(Ok(Stored::Requested(a, created))) => (a, created),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "approval store failed; refusing the held call");
            return refuse(
                record,
                &Reason::Airlock(AirlockReason::ApprovalStoreError).to_string(),
                format!("denied by Airlock: the approval store failed ({e})"),
            );
        }
        Err(e) => {
            return refuse(
                record,
                &Reason::Airlock(AirlockReason::ApprovalStoreError).to_string(),
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

/// Marks `record` as allowed on `approval`'s strength.
pub(crate) fn approved_record(record: &mut NewRecord, approval: &Approval) {
    record
        .reasons
        .push(Reason::Approval(approval.id.clone()).to_string());
    record.detail = Some(json!({
        "approval_id": approval.id,
        "approved_by": approval.approvers_so_far(),
    }));
}

impl Pipeline {
    /// Re-reads the held calls' requests and acts on what humans decided: approved calls
    /// re-enter the request stages, denied and expired ones are answered, waiting ones get a
    /// progress notification now and then. Runs on the store thread.
    pub fn review_held(self: &Arc<Self>, set: &mut StoreSet) -> Output {
        let mut out = Output::default();
        if self.kills.is_stopped() {
            return out;
        }
        let held: Vec<(Id, String)> = {
            let calls = lock(&self.calls);
            calls
                .held_ids()
                .into_iter()
                .filter_map(|id| match &calls.get(Side::Agent, &id)?.phase {
                    Phase::Held(h) => Some((id, h.approval_id.clone())),
                    _ => None,
                })
                .collect()
        };
        for (id, approval_id) in held {
            let state = match set.approvals.get(&approval_id) {
                Ok(Some(a)) => Ok(a),
                Ok(None) => Err(format!("approval request {approval_id} is gone")),
                Err(e) => Err(format!("the approval store failed ({e})")),
            };
            match state {
                Ok(a) if a.state == State::Pending => {
                    let mut calls = lock(&self.calls);
                    if let Some(Phase::Held(h)) =
                        calls.get_mut(Side::Agent, &id).map(|c| &mut c.phase)
                    {
                        if h.last_progress.elapsed() >= PROGRESS_EVERY {
                            out.agent.extend(progress_line(h));
                        }
                    }
                }
                Ok(a) if a.state == State::Approved => out.append(self.release(set, &id)),
                outcome => out.agent.extend(self.refuse_held(set, &id, outcome)),
            }
        }
        out
    }

    /// An approved held call: the approval is used once, and the call re-enters the request
    /// stages with it granted; what they allow is durable before it moves.
    fn release(self: &Arc<Self>, set: &mut StoreSet, id: &Id) -> Output {
        let held = {
            let mut calls = lock(&self.calls);
            match calls.get_mut(Side::Agent, id) {
                Some(call) => match std::mem::replace(&mut call.phase, Phase::Judging) {
                    Phase::Held(h) => h,
                    other => {
                        call.phase = other;
                        return Output::default();
                    }
                },
                None => return Output::default(),
            }
        };
        let consumed = match set.approvals.consume(&held.approval_id) {
            Ok(Some(a)) => a,
            Ok(None) => {
                let why = format!("approval {} was already used", held.approval_id);
                return self.answer_held(id, &held, Err(why), set);
            }
            Err(e) => {
                let why = format!("the approval store failed ({e})");
                return self.answer_held(id, &held, Err(why), set);
            }
        };
        let route = route_request(&held.method, &self.policy.rules().allow_methods);
        let Some(expect) = lock(&self.calls)
            .get(Side::Agent, id)
            .map(|c| c.expect.clone())
        else {
            return Output::default();
        };
        let mut records = Records::default();
        let step = self.judge(
            &mut set.counters,
            &held.frame,
            id,
            &held.method,
            &route,
            &expect,
            Some(&consumed),
            &mut records,
        );
        // The approval is used whatever the stages said; the decision record comes first.
        records.push(approval_record(&consumed, "used", None));
        // The decision record points at the `hold` record.
        let batch: Vec<Submission> = records
            .0
            .into_iter()
            .map(|record| Submission {
                record,
                refers_to: held.call,
            })
            .collect();
        match step {
            Step::Forward { record, .. } => {
                let ticket = match self.audit.commit_now(batch) {
                    Ok(tickets) => record.and_then(|i| tickets.get(i).copied()),
                    Err(e) => {
                        lock(&self.calls).end(Side::Agent, id);
                        let message = format!(
                            "Airlock refused the call: the audit store could not record it ({e})"
                        );
                        return Output {
                            agent: error_line(Some(id), codes::AUDIT_UNAVAILABLE, &message),
                            ..Output::default()
                        };
                    }
                };
                let mut calls = lock(&self.calls);
                if let Some(kill) = self.kills.stopped() {
                    // A kill landed while the call was judged: it ends here, answered.
                    calls.end(Side::Agent, id);
                    return Output {
                        agent: error_line(Some(id), codes::KILLED, &crate::kill::refusal(&kill)),
                        ..Output::default()
                    };
                }
                if let Some(call) = calls.get_mut(Side::Agent, id) {
                    call.phase = Phase::Upstream;
                    call.ticket = ticket;
                    call.started = Instant::now();
                }
                tracing::info!(approval = %consumed.id, target = %held.target, "approved call forwarded");
                Output {
                    upstream: with_newline(held.frame.raw()),
                    forwarded: vec![id.clone()],
                    ..Output::default()
                }
            }
            Step::Answer(bytes) => {
                lock(&self.calls).end(Side::Agent, id);
                for s in batch {
                    self.audit.queue(s.record, s.refers_to);
                }
                Output {
                    agent: bytes,
                    ..Output::default()
                }
            }
            Step::Hold { .. } | Step::Drop => {
                lock(&self.calls).end(Side::Agent, id);
                Output::default()
            }
        }
    }

    /// A held call whose request was denied, expired, withdrawn elsewhere, or could not be read.
    fn refuse_held(
        &self,
        set: &mut StoreSet,
        id: &Id,
        outcome: Result<Approval, String>,
    ) -> Vec<u8> {
        let held = match lock(&self.calls).end(Side::Agent, id) {
            Some(crate::calls::Call {
                phase: Phase::Held(h),
                ..
            }) => h,
            _ => return Vec::new(),
        };
        self.answer_held(id, &held, outcome, set).agent
    }

    /// The agent's answer for a held call that will not go through, with the outcome on the
    /// record.
    fn answer_held(
        &self,
        id: &Id,
        held: &Held,
        outcome: Result<Approval, String>,
        set: &mut StoreSet,
    ) -> Output {
        lock(&self.calls).end(Side::Agent, id);
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
                    ResultStatus::ApprovalDenied,
                    format!(
                        "denied by Airlock: approval request {} for `{}` was denied by {}",
                        a.id,
                        held.target,
                        by.join(", ")
                    ),
                )
            }
            Ok(a) if a.state == State::Expired => {
                close(self, set, held, State::Expired, "no decision in time");
                (
                    codes::APPROVAL_EXPIRED,
                    ResultStatus::ApprovalExpired,
                    format!(
                        "denied by Airlock: approval request {} for `{}` expired before a human \
                         decided it",
                        a.id, held.target
                    ),
                )
            }
            Ok(a) => (
                codes::APPROVAL_DENIED,
                ResultStatus::ApprovalDenied,
                format!(
                    "denied by Airlock: approval request {} is {}",
                    a.id, a.state
                ),
            ),
            Err(why) => (
                codes::DENIED,
                ResultStatus::ApprovalError,
                format!("denied by Airlock: {why}"),
            ),
        };
        tracing::info!(approval = %held.approval_id, %status, "held call refused");
        let mut r = crate::audit::base_record(
            &self.who,
            &self.policy.current(),
            &held.method,
            Some(&held.target),
            Some(id),
        );
        r.kind = RecordKind::Result;
        r.status = Some(status);
        r.detail = Some(json!({ "approval_id": held.approval_id }));
        self.audit.queue(r, held.call);
        Output {
            agent: error_line(Some(id), code, &message),
            ..Output::default()
        }
    }
}

/// Withdraws a held call's request (the agent cancelled it or went away). Queued on the store
/// thread: nothing waits for it.
pub(crate) fn withdraw_held(p: &Pipeline, held: &Held, why: &str) {
    let Some(stores) = p.stores.as_ref() else {
        return;
    };
    // Two held calls of the same action share one request: it stays while another waits on it.
    if shared_with_another(p, &held.approval_id) {
        return;
    }
    let approval_id = held.approval_id.clone();
    let call = held.call;
    let why = why.to_owned();
    let record = stores.call(move |s| close_request(s, &approval_id, State::Withdrawn, &why));
    if let Ok(Some(r)) = record {
        p.audit.queue(r, call);
    }
}

/// Whether another held call of this pipeline waits on the request `approval_id`.
fn shared_with_another(p: &Pipeline, approval_id: &str) -> bool {
    let calls = lock(&p.calls);
    calls.held_ids().iter().any(|id| {
        matches!(calls.get(Side::Agent, id).map(|c| &c.phase),
            Some(Phase::Held(h)) if h.approval_id == approval_id)
    })
}

/// Ends a held call's request without a decision, on the record.
fn close(p: &Pipeline, set: &mut StoreSet, held: &Held, state: State, why: &str) {
    if let Some(r) = close_request(set, &held.approval_id, state, why) {
        p.audit.queue(r, held.call);
    }
}

fn close_request(
    set: &mut StoreSet,
    approval_id: &str,
    state: State,
    why: &str,
) -> Option<NewRecord> {
    match set.approvals.close(approval_id, state) {
        Ok(true) => match set.approvals.get(approval_id) {
            Ok(Some(a)) => {
                let mut r = approval_record(&a, state.as_str(), None);
                if let Some(d) = r.detail.as_mut().and_then(Value::as_object_mut) {
                    d.insert("why".into(), json!(why));
                }
                Some(r)
            }
            _ => None,
        },
        Ok(false) => None,
        Err(e) => {
            tracing::warn!(error = %e, approval = %approval_id, "cannot close the approval request");
            None
        }
    }
}

/// Ends the requests of held calls `kill` stopped (see [`Pipeline::end_held_for_kill`]).
pub(crate) fn end_for_kill(p: &Pipeline, kill: &airlock_control::Kill, held: Vec<Held>) {
    if held.is_empty() {
        return;
    }
    let Some(stores) = p.stores.as_ref() else {
        return;
    };
    if kill.id == 0 {
        for h in &held {
            withdraw_held(p, h, "stopped by a kill");
        }
        return;
    }
    let target = kill.target.clone();
    let by = kill.by.clone();
    let reason = kill.reason.clone();
    let denied = stores.call(move |s| s.approvals.deny_for_kill(&target, &by, &reason));
    match denied {
        Ok(Ok(denied)) => {
            let records = airlock_approval::kill_denial_records(&denied);
            for (a, r) in denied.iter().zip(records) {
                let call = held
                    .iter()
                    .find(|h| h.approval_id == a.id)
                    .and_then(|h| h.call);
                p.audit.queue(r, call);
            }
        }
        Ok(Err(e)) => tracing::error!(
            error = %e,
            kill = kill.id,
            "cannot deny the approval requests of calls the kill stopped"
        ),
        Err(e) => tracing::error!(error = %e, kill = kill.id, "cannot deny held requests"),
    }
}

/// A progress notification for a held call whose agent asked for progress.
pub(crate) fn progress_line(held: &mut Held) -> Vec<u8> {
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
