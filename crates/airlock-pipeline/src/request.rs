//! The request path: frame → route → kill → policy (+ flow labels) → hold → breakers → audit →
//! forward. Each stage either passes the call on, answers it now, or holds it.
//!
//! A batch of frames is judged first, then its decisions are made durable in one commit (the
//! audit stage), then what they allowed moves on (forward). A call a human approved re-enters
//! at the kill stage with the approval granted ([`Pipeline::rejudge`]), through the same code.

use std::sync::Arc;

use airlock_approval::Approval;
use airlock_audit::{
    now_unix_ns, AirlockReason, Decision, NewRecord, Reason, RecordKind, ResultStatus,
};
use airlock_protocol::{
    error_response, parse_frame, raw_id_of_refused, Frame, FrameKind, Id, INVALID_REQUEST,
};
use serde_json::{json, Value};

use crate::audit::base_record;
use crate::calls::{Call, Expect, Phase, Side};
use crate::codes;
use crate::pipeline::{error_line, Output, Pipeline};
use crate::policy::{judge_request, Judgement};
use crate::route::{notification_allowed, route_request, RequestRoute, TaskOp};
use crate::store::Counters;
use crate::{lock, Line};

/// What becomes of one frame from the agent once its batch's audit commit is done.
pub(crate) enum Step {
    /// Forward the frame (`None` from the judging stages: the caller holds it); `record`
    /// indexes the batch's records (the decision, if any).
    Forward {
        frame: Option<Frame>,
        id: Option<Id>,
        record: Option<usize>,
    },
    /// Answer the agent now (its record, if any, is in the batch).
    Answer(Vec<u8>),
    /// Hold the call for a human; `record` indexes its `hold` record.
    Hold {
        id: Id,
        held: Box<crate::hold::Held>,
        record: usize,
    },
    /// Nothing to send (its record, if any, is in the batch).
    Drop,
}

/// The audit records a batch makes, indexed by the steps.
#[derive(Default)]
pub(crate) struct Records(pub(crate) Vec<NewRecord>);

impl Records {
    pub(crate) fn push(&mut self, record: NewRecord) -> usize {
        self.0.push(record);
        self.0.len() - 1
    }
}

impl Pipeline {
    /// Judges a batch of frames from the agent, makes their decisions durable in one commit,
    /// and returns what to write. `counters` are the calling thread's breaker counters.
    pub fn agent_batch(self: &Arc<Self>, counters: &mut Counters, lines: Vec<Line>) -> Output {
        let mut records = Records::default();
        let steps: Vec<Step> = lines
            .into_iter()
            .map(|line| self.judge_line(counters, line, &mut records))
            .collect();
        // audit: the decisions are durable before anything they allowed moves on.
        let tickets = self.audit.commit(&mut records.0);
        self.forward(steps, &tickets)
    }

    /// The forward stage: what the batch allowed goes upstream, the rest to the agent.
    fn forward(
        &self,
        steps: Vec<Step>,
        tickets: &Result<Vec<airlock_audit::Ticket>, String>,
    ) -> Output {
        let mut out = Output::default();
        let refused = |id: Option<&Id>| {
            let message = format!(
                "Airlock refused the call: the audit store could not record it ({})",
                tickets.as_ref().err().map_or("", String::as_str)
            );
            error_line(id, codes::AUDIT_UNAVAILABLE, &message)
        };
        let ticket = |i: usize| tickets.as_ref().ok().and_then(|t| t.get(i).copied());
        for step in steps {
            match step {
                Step::Answer(bytes) => out.agent.extend(bytes),
                Step::Drop => {}
                Step::Hold {
                    id,
                    mut held,
                    record,
                } => {
                    let mut calls = lock(&self.calls);
                    match ticket(record) {
                        Some(t) => {
                            held.call = Some(t);
                            out.agent.extend(crate::hold::progress_line(&mut held));
                            if let Some(call) = calls.get_mut(Side::Agent, &id) {
                                call.ticket = Some(t);
                                call.phase = Phase::Held(held);
                            }
                            out.announce = true;
                        }
                        None => {
                            // Fail closed: the hold could not be recorded, so nobody may approve
                            // it: the call ends, and its request with it.
                            calls.end(Side::Agent, &id);
                            drop(calls);
                            crate::hold::withdraw_held(
                                self,
                                &held,
                                "the hold could not be recorded",
                            );
                            out.agent.extend(refused(Some(&id)));
                        }
                    }
                }
                Step::Forward { frame, id, record } => {
                    let Some(frame) = frame else {
                        // The judging stages' Forward is completed by their caller; one that is
                        // not would leave its call waiting: end and refuse it (fail closed).
                        if let Some(id) = &id {
                            lock(&self.calls).end(Side::Agent, id);
                            out.agent.extend(error_line(
                                Some(id),
                                codes::DENIED,
                                "Airlock refused the call: it reached the forward stage without \
                                 its frame",
                            ));
                        }
                        continue;
                    };
                    let t = record.and_then(ticket);
                    if let Some(id) = &id {
                        let mut calls = lock(&self.calls);
                        if record.is_some() && t.is_none() {
                            // Fail closed: the decision could not be recorded.
                            calls.end(Side::Agent, id);
                            out.agent.extend(refused(Some(id)));
                            continue;
                        }
                        if let Some(kill) = self.kills.stopped() {
                            // A kill landed while the batch was judged: nothing more goes up.
                            calls.end(Side::Agent, id);
                            out.agent.extend(error_line(
                                Some(id),
                                codes::KILLED,
                                &crate::kill::refusal(&kill),
                            ));
                            continue;
                        }
                        if let Some(call) = calls.get_mut(Side::Agent, id) {
                            call.ticket = t;
                            call.phase = Phase::Upstream;
                        }
                        out.forwarded.push(id.clone());
                    } else if record.is_some() && t.is_none() {
                        continue;
                    }
                    out.upstream.extend_from_slice(frame.raw());
                    out.upstream.push(b'\n');
                }
            }
        }
        if out.announce {
            self.held_changed.notify_one();
        }
        out
    }

    /// The frame stage, then the rest by the frame's kind.
    fn judge_line(
        self: &Arc<Self>,
        counters: &mut Counters,
        line: Line,
        records: &mut Records,
    ) -> Step {
        let bytes = match line {
            Line::Frame(bytes) => bytes,
            Line::TooLong(len) => {
                tracing::warn!(len, "agent frame over the size limit refused");
                let message = format!(
                    "frame of {len} bytes exceeds the limit of {} bytes",
                    self.limits.max_frame_bytes
                );
                return Step::Answer(error_line(None, INVALID_REQUEST, &message));
            }
        };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Step::Drop;
        }
        let frame = match parse_frame(&bytes, &self.limits) {
            Ok(frame) => frame,
            Err(e) => {
                tracing::warn!(code = e.code, error = %e.message, "malformed frame from the agent refused");
                // Every refused request is answered: with its id where it can be echoed byte for
                // byte (an integer JSON would round, say), else with a null id.
                let mut out = match (&e.id, raw_id_of_refused(&bytes)) {
                    (Some(id), _) => error_response(Some(id), e.code, &e.message, None),
                    (None, Some(raw)) => {
                        airlock_protocol::error_response_raw_id(&raw, e.code, &e.message)
                    }
                    (None, None) => error_response(None, e.code, &e.message, None),
                };
                out.push(b'\n');
                return Step::Answer(out);
            }
        };
        match frame.kind().clone() {
            FrameKind::Request { id, method } => {
                self.judge_new_request(counters, frame, id, method, records)
            }
            FrameKind::Notification { method } => self.judge_notification(frame, &method, records),
            FrameKind::Response { id } | FrameKind::ErrorResponse { id: Some(id) } => {
                self.judge_agent_answer(frame, id, records)
            }
            FrameKind::ErrorResponse { id: None } => {
                tracing::warn!("error without an id from the agent dropped");
                Step::Drop
            }
        }
    }

    /// A new request: reserve its id (frame), route it, then the judging stages.
    fn judge_new_request(
        self: &Arc<Self>,
        counters: &mut Counters,
        frame: Frame,
        id: Id,
        method: String,
        records: &mut Records,
    ) -> Step {
        // route: what the answer will need, decided by the method alone.
        let route = route_request(&method, &self.policy.rules().allow_methods);
        let expect = match self.expect_for(&route, &frame) {
            Ok(expect) => expect,
            Err(step) => return *step,
        };
        // frame: the id is this call's until nothing about it can come back.
        let mut call = Call::new(&method, expect.clone());
        call.task =
            method == "tools/call" && frame.params().is_some_and(|p| p.get("task").is_some());
        if matches!(route, RequestRoute::Task(TaskOp::Result)) {
            // A task's result is its creating call's: the same labels and item counts apply.
            if let Some(origin) = self.task_of(&frame) {
                call.args = origin.args;
                call.items = origin.items;
            }
        }
        if !lock(&self.calls).reserve(Side::Agent, &id, call) {
            return Step::Answer(error_line(
                Some(&id),
                codes::DUPLICATE_ID,
                "Airlock refused the request: a request with this id is still known to Airlock \
                 (in flight, held for approval, or abandoned and not yet answered upstream)",
            ));
        }
        let step = self.judge(
            counters, &frame, &id, &method, &route, &expect, None, records,
        );
        if !matches!(step, Step::Forward { .. } | Step::Hold { .. }) {
            lock(&self.calls).end(Side::Agent, &id);
        }
        match step {
            Step::Forward { record, .. } => Step::Forward {
                frame: Some(frame),
                id: Some(id),
                record,
            },
            other => other,
        }
    }

    /// What a routed request's answer will need. A `tasks/*` request names a task: it stands
    /// for the call that created it, which must be this session's.
    fn expect_for(&self, route: &RequestRoute, frame: &Frame) -> Result<Expect, Box<Step>> {
        Ok(match route {
            RequestRoute::Act(kind) => {
                let target = frame
                    .params()
                    .and_then(|p| p.get(kind.target_key()))
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                Expect::Act {
                    kind: *kind,
                    target: target.to_owned(),
                }
            }
            RequestRoute::List(kind) => Expect::List(*kind),
            RequestRoute::TaskList => Expect::TaskList,
            RequestRoute::Task(TaskOp::Result) => match self.task_of(frame) {
                Some(origin) => Expect::Act {
                    kind: origin.kind,
                    target: origin.target,
                },
                None => Expect::Plain,
            },
            _ => Expect::Plain,
        })
    }

    fn task_of(&self, frame: &Frame) -> Option<crate::calls::TaskOrigin> {
        let task_id = frame.params()?.get("taskId")?.as_str()?;
        lock(&self.calls).task(task_id).cloned()
    }

    /// kill → policy → hold → breakers, for a request whose id is reserved. `granted`: a human
    /// approved this exact action (the call re-enters here when released).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn judge(
        self: &Arc<Self>,
        counters: &mut Counters,
        frame: &Frame,
        id: &Id,
        method: &str,
        route: &RequestRoute,
        expect: &Expect,
        granted: Option<&Approval>,
        records: &mut Records,
    ) -> Step {
        let rules = self.policy.rules();
        let policy = rules.engine.clone();
        let target = match expect {
            Expect::Act { target, .. } => Some(target.as_str()),
            _ => None,
        };
        // kill: a kill in force refuses before anything else is looked at.
        if let Some(kill) = crate::kill::check(&self.kills, &self.who, expect) {
            let mut record = base_record(&self.who, &policy, method, target, Some(id));
            record.decision = Some(Decision::Deny);
            record.reasons = vec![Reason::Kill(kill.id).to_string()];
            records.push(record);
            return Step::Answer(error_line(
                Some(id),
                codes::KILLED,
                &crate::kill::refusal(&kill),
            ));
        }
        // policy: Cedar, with the session's labels (tasks: the session's own tasks only).
        let labels = self.labels();
        let judgement = match route {
            RequestRoute::Task(op) => self.judge_task(*op, frame, id, method),
            RequestRoute::TaskList => Judgement::Forward {
                expect: Expect::TaskList,
                record: Some(NewRecord {
                    decision: Some(Decision::Allow),
                    reasons: vec![Reason::Airlock(AirlockReason::OwnTasks).to_string()],
                    ..base_record(&self.who, &policy, method, None, Some(id))
                }),
            },
            _ => judge_request(
                &policy,
                &self.who,
                &rules.allow_methods,
                &labels,
                frame,
                id,
                method,
                granted.is_some(),
            ),
        };
        // hold: only a human's approval stands in the way.
        let judgement = match (judgement, granted) {
            (Judgement::Hold(req), None) => match crate::hold::admit(self, frame, method, *req) {
                crate::hold::Admit::Hold { held, records: r } => {
                    let mut first = None;
                    for record in r {
                        let i = records.push(record);
                        first = first.or(Some(i));
                    }
                    return match first {
                        Some(record) => Step::Hold {
                            id: id.clone(),
                            held,
                            record,
                        },
                        None => Step::Drop,
                    };
                }
                crate::hold::Admit::Approved { approval, extra } => {
                    for r in extra {
                        records.push(r);
                    }
                    // An earlier approval of this exact action: judged again with it granted.
                    return self.judge(
                        counters,
                        frame,
                        id,
                        method,
                        route,
                        expect,
                        Some(&approval),
                        records,
                    );
                }
                crate::hold::Admit::Refuse {
                    code,
                    message,
                    record,
                } => Judgement::Refuse {
                    code,
                    message,
                    data: None,
                    record: Some(record),
                },
            },
            (Judgement::Hold(req), Some(approval)) => {
                let mut record = req.record;
                record.decision = Some(Decision::Deny);
                record.reasons =
                    vec![Reason::Airlock(AirlockReason::DeniedAfterApproval).to_string()];
                Judgement::Refuse {
                    code: codes::DENIED,
                    message: format!(
                        "denied by Airlock: approval {} was given, but the policy in force still \
                         holds the call",
                        approval.id
                    ),
                    data: None,
                    record: Some(record),
                }
            }
            (
                Judgement::Refuse {
                    code,
                    message,
                    data,
                    record,
                },
                Some(approval),
            ) => {
                let record = record.map(|mut r| {
                    r.reasons =
                        vec![Reason::Airlock(AirlockReason::DeniedAfterApproval).to_string()];
                    r
                });
                Judgement::Refuse {
                    code,
                    message: format!(
                        "denied by Airlock: approval {} was given, but the policy in force no \
                         longer allows the call ({message})",
                        approval.id
                    ),
                    data,
                    record,
                }
            }
            (other, _) => other,
        };
        match judgement {
            Judgement::Hold(_) => Step::Drop,
            Judgement::Refuse {
                code,
                message,
                data,
                record,
            } => {
                tracing::info!(%method, %message, "request refused");
                if let Some(r) = record {
                    records.push(r);
                }
                let mut out = error_response(Some(id), code, &message, data);
                out.push(b'\n');
                Step::Answer(out)
            }
            Judgement::Forward { expect: _, record } => {
                let mut record = record;
                if let (Some(r), Some(approval)) = (record.as_mut(), granted) {
                    crate::hold::approved_record(r, approval);
                }
                // breakers: a call that would cross a budget pauses the agent and is refused.
                if let Expect::Act {
                    kind: crate::route::ActKind::CallTool,
                    target,
                } = expect
                {
                    if !matches!(route, RequestRoute::Task(_)) {
                        match crate::breakers::admit(self, counters, frame, target) {
                            Ok(items) if items.is_empty() => {}
                            Ok(items) => {
                                if let Some(call) = lock(&self.calls).get_mut(Side::Agent, id) {
                                    call.items = items;
                                }
                            }
                            Err(refusal) => {
                                if let Some(r) = record.as_mut() {
                                    r.decision = Some(Decision::Deny);
                                    r.reasons = vec![refusal.reason.clone()];
                                }
                                if let Some(r) = record {
                                    records.push(r);
                                }
                                for extra in refusal.records {
                                    records.push(extra);
                                }
                                return Step::Answer(error_line(
                                    Some(id),
                                    refusal.code,
                                    &refusal.message,
                                ));
                            }
                        }
                    }
                }
                self.keep_for_answer(frame, id, expect);
                Step::Forward {
                    frame: None,
                    id: Some(id.clone()),
                    record: record.map(|r| records.push(r)),
                }
            }
        }
    }

    /// Keeps what the answer's stages will need: the arguments where a flow rule may label the
    /// result.
    fn keep_for_answer(&self, frame: &Frame, id: &Id, expect: &Expect) {
        let Expect::Act { kind, target } = expect else {
            return;
        };
        if self.flow.is_none() {
            return;
        }
        if !crate::flow::may_label(&self.policy.rules().flow, *kind, &self.who.server, target) {
            return;
        }
        let args = kind
            .args_key()
            .and_then(|key| frame.params().and_then(|p| p.get(key)))
            .cloned();
        let mut calls = lock(&self.calls);
        if let Some(call) = calls.get_mut(Side::Agent, id) {
            if call.args.is_none() {
                call.args = Some(args.unwrap_or_else(|| json!({})));
            }
        }
    }

    /// `tasks/get`, `tasks/result`, `tasks/cancel`: only for a task this session created.
    fn judge_task(&self, op: TaskOp, frame: &Frame, id: &Id, method: &str) -> Judgement {
        let policy = self.policy.current();
        let task_id = frame
            .params()
            .and_then(|p| p.get("taskId"))
            .and_then(Value::as_str);
        let origin = task_id.and_then(|t| lock(&self.calls).task(t).cloned());
        let target = origin.as_ref().map(|o| o.target.as_str());
        let mut record = base_record(&self.who, &policy, method, target, Some(id));
        record.detail = Some(json!({ "task_id": task_id }));
        match origin {
            Some(_) => {
                record.decision = Some(Decision::Allow);
                record.reasons = vec![Reason::Airlock(AirlockReason::OwnTask).to_string()];
                let expect = match (op, origin) {
                    (TaskOp::Result, Some(o)) => Expect::Act {
                        kind: o.kind,
                        target: o.target,
                    },
                    _ => Expect::Plain,
                };
                Judgement::Forward {
                    expect,
                    record: Some(record),
                }
            }
            None => {
                record.decision = Some(Decision::Deny);
                record.reasons = vec![Reason::Airlock(AirlockReason::UnknownTask).to_string()];
                Judgement::Refuse {
                    code: codes::DENIED,
                    message: format!(
                        "denied by Airlock: `{method}` names a task this session did not create \
                         through Airlock ({})",
                        task_id.unwrap_or("no params.taskId")
                    ),
                    data: None,
                    record: Some(record),
                }
            }
        }
    }

    /// A notification from the agent: only those about its own requests or session pass, and a
    /// cancellation only for its own request in flight upstream.
    fn judge_notification(&self, frame: Frame, method: &str, records: &mut Records) -> Step {
        if self.kills.is_stopped() {
            return Step::Drop;
        }
        if !notification_allowed(method) {
            tracing::warn!(%method, "notification from the agent dropped: not one Airlock passes");
            return Step::Drop;
        }
        if method != "notifications/cancelled" {
            return Step::Forward {
                frame: Some(frame),
                id: None,
                record: None,
            };
        }
        let id = frame
            .params()
            .and_then(|p| p.get("requestId"))
            .and_then(Id::from_json);
        let mut calls = lock(&self.calls);
        let phase = id
            .as_ref()
            .and_then(|id| calls.get(Side::Agent, id))
            .map(|c| &c.phase);
        match (phase, &id) {
            (Some(Phase::Upstream), Some(id)) => {
                // The agent gives up on the call: its answer, if any, is dropped, and the id stays
                // reserved until it comes (or a grace period ends).
                if let Some(call) = calls.get_mut(Side::Agent, id) {
                    call.phase = Phase::Abandoned {
                        since: std::time::Instant::now(),
                    };
                    self.queue_result(id, call, ResultStatus::Cancelled);
                }
                Step::Forward {
                    frame: Some(frame),
                    id: None,
                    record: None,
                }
            }
            (Some(Phase::Held(_)), Some(id)) => {
                // The server never saw the held call: the cancellation ends here.
                let held = calls.end(Side::Agent, id);
                drop(calls);
                if let Some(Call {
                    phase: Phase::Held(held),
                    ..
                }) = held
                {
                    crate::hold::withdraw_held(self, &held, "the agent cancelled the call");
                }
                Step::Drop
            }
            _ => {
                drop(calls);
                tracing::warn!(request = ?id, "cancellation of no request of the agent's in flight dropped");
                let mut record =
                    base_record(&self.who, &self.policy.current(), method, None, id.as_ref());
                record.kind = RecordKind::Notification;
                record.decision = Some(Decision::Deny);
                record.reasons =
                    vec![Reason::Airlock(AirlockReason::CancelNotInFlight).to_string()];
                record.detail = Some(json!({
                    "request_id": frame.params().and_then(|p| p.get("requestId")).cloned(),
                }));
                records.push(record);
                Step::Drop
            }
        }
    }

    /// The agent's answer to a server request (sampling, elicitation, roots): forwarded only to a
    /// request the server really sent and is waiting on, and audited either way.
    fn judge_agent_answer(&self, frame: Frame, id: Id, records: &mut Records) -> Step {
        let asked = lock(&self.calls).end_if(Side::Server, &id, |p| matches!(p, Phase::AskedAgent));
        let policy = self.policy.current();
        match asked {
            Some(call) if !self.kills.is_stopped() => {
                let status = if matches!(frame.kind(), FrameKind::ErrorResponse { .. }) {
                    ResultStatus::Error
                } else {
                    ResultStatus::Ok
                };
                let mut record = crate::audit::result_record(
                    &self.who,
                    &policy,
                    &call.method,
                    None,
                    &id,
                    status,
                    call.started,
                );
                record.kind = RecordKind::ServerRequest;
                record.decision = Some(Decision::Allow);
                record.reasons =
                    vec![Reason::Airlock(AirlockReason::AnswerToServerRequest).to_string()];
                if let Some(result) = frame.result() {
                    record.args_digest = Some(airlock_protocol::digest_json(result));
                }
                let i = records.push(record);
                Step::Forward {
                    frame: Some(frame),
                    id: None,
                    record: Some(i),
                }
            }
            other => {
                tracing::warn!(%id, "answer from the agent to no pending server request dropped");
                let mut record = base_record(
                    &self.who,
                    &policy,
                    other.as_ref().map_or("(unknown)", |c| c.method.as_str()),
                    None,
                    Some(&id),
                );
                record.kind = RecordKind::ServerRequest;
                record.decision = Some(Decision::Deny);
                record.reasons = vec![if other.is_some() {
                    Reason::Airlock(AirlockReason::Stopped).to_string()
                } else {
                    Reason::Airlock(AirlockReason::NoSuchServerRequest).to_string()
                }];
                record.time_unix_ns = now_unix_ns();
                records.push(record);
                Step::Drop
            }
        }
    }

    /// The session's information-flow labels in force now.
    pub(crate) fn labels(&self) -> Arc<Vec<String>> {
        self.flow
            .as_ref()
            .map_or_else(|| Arc::new(Vec::new()), crate::flow::FlowState::labels)
    }
}
