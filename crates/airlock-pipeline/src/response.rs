//! The response path: redact → match → count → labels → caps → filter → deliver.
//!
//! - redact: the upstream credentials Airlock holds are cut out of the frame first, so
//!   nothing after (labels, filters, the audit trail, the agent) ever sees one.
//! - match: the answer is paired with the call it ends, which must be forwarded upstream and
//!   waiting; an answer to a call Airlock already answered (timed out, cancelled) ends it
//!   quietly, and an answer to no known call is dropped.
//! - count: items a breaker class reads from the result are counted (the call has happened,
//!   whatever becomes of its answer).
//! - labels: an answer that carries data gives the session the labels its rules name, before
//!   the agent sees it; if that cannot be recorded, the answer is withheld.
//! - caps: a count that crossed its cap pauses the agent (the answer still goes: the call is
//!   done; the next call is refused).
//! - filter: list answers keep only what the agent could ever use.
//! - deliver: the bytes go to the agent, then the result record is queued.
//!
//! Requests from the server (sampling, elicitation, roots) are remembered so that only an
//! answer to one of them goes back; notifications pass.

use std::sync::Arc;

use airlock_audit::ResultStatus;
use airlock_protocol::{parse_outline, Frame, FrameKind, Id, Outline};

use crate::calls::{Call, Expect, Phase, Side, TaskOrigin};
use crate::codes;
use crate::filter::{filter_list, filter_tasks, Filtered};
use crate::pipeline::{error_line, with_newline, Output, Pipeline};
use crate::store::Counters;
use crate::{lock, Line};

/// The result record's status of an acting call's answer.
fn act_status(kind: &FrameKind, result_is_error: bool) -> ResultStatus {
    match kind {
        FrameKind::ErrorResponse { .. } => ResultStatus::Error,
        _ if result_is_error => ResultStatus::IsError,
        _ => ResultStatus::Ok,
    }
}

impl Pipeline {
    /// One frame from the upstream: what to write to the agent. `counters` are the calling
    /// thread's breaker counters.
    pub fn upstream_line(self: &Arc<Self>, counters: &mut Counters, line: Line) -> Output {
        let bytes = match line {
            Line::Frame(bytes) => bytes,
            Line::TooLong(len) => {
                tracing::warn!(len, "upstream frame over the size limit dropped");
                return Output::default();
            }
        };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Output::default();
        }
        let bytes = self.redact(bytes);
        // Most answers are only relayed: read their kind, id and outcome, checked as strictly
        // as a full parse; the content is read only where a list, a label or a cap needs it.
        let outline = match parse_outline(&bytes, &self.limits) {
            Ok(outline) => outline,
            Err(e) => {
                tracing::warn!(error = %e.message, "malformed frame from the upstream dropped");
                let Some(id) = &e.id else {
                    return Output::default();
                };
                let Some(call) = self.match_answer(id) else {
                    return Output::default();
                };
                self.queue_result(id, &call, ResultStatus::Error);
                return Output {
                    agent: malformed_answer(id, &e.message),
                    ..Output::default()
                };
            }
        };
        match outline.kind() {
            FrameKind::Response { id } | FrameKind::ErrorResponse { id: Some(id) } => {
                let id = id.clone();
                // match
                let Some(call) = self.match_answer(&id) else {
                    return Output::default();
                };
                let (agent, status) = if self.needs_content(&call) {
                    match outline.frame(&self.limits) {
                        Ok(frame) => self.answer_stages(counters, &frame, &id, &call),
                        // The outline accepted it, so this cannot happen; fail closed anyway.
                        Err(e) => (malformed_answer(&id, &e.message), Some(ResultStatus::Error)),
                    }
                } else {
                    relayed_answer(&outline, &call)
                };
                if let Some(status) = status {
                    self.queue_result(&id, &call, status);
                }
                Output {
                    agent,
                    ..Output::default()
                }
            }
            FrameKind::Request { id, method } => {
                // A server request: the agent's answer may go back only to this id.
                let mut asked = Call::new(method, Expect::Plain);
                asked.phase = Phase::AskedAgent;
                if !lock(&self.calls).reserve(Side::Server, id, asked) {
                    tracing::warn!(%id, "server request reusing a pending id dropped");
                    return Output::default();
                }
                Output {
                    agent: with_newline(outline.raw()),
                    ..Output::default()
                }
            }
            FrameKind::Notification { .. } | FrameKind::ErrorResponse { id: None } => Output {
                agent: with_newline(outline.raw()),
                ..Output::default()
            },
        }
    }

    /// The redact stage: the frame without the upstream credentials it may echo.
    fn redact(&self, bytes: Vec<u8>) -> Vec<u8> {
        match &self.opts.redactor {
            Some(r) => r.redact_frame(&bytes).unwrap_or(bytes),
            None => bytes,
        }
    }

    /// The match stage: ends the call `id` answers. Only a call forwarded upstream can be
    /// answered; one Airlock already answered ends here, its answer dropped.
    fn match_answer(&self, id: &Id) -> Option<Call> {
        let mut calls = lock(&self.calls);
        let call = calls.end_if(Side::Agent, id, |p| {
            matches!(p, Phase::Upstream | Phase::Abandoned { .. })
        });
        match call {
            Some(call) if matches!(call.phase, Phase::Upstream) => Some(call),
            Some(_) => {
                tracing::info!(%id, "late answer to a call Airlock already answered dropped");
                None
            }
            None => {
                tracing::warn!(%id, "upstream answered no request in flight; dropped");
                None
            }
        }
    }

    /// Whether the pipeline must read an answer's content: a list it filters, a result that
    /// may label the session, whose items a breaker counts, or that creates a task.
    fn needs_content(&self, call: &Call) -> bool {
        match &call.expect {
            Expect::List(_) | Expect::TaskList => true,
            Expect::Plain => false,
            Expect::Act { .. } => call.args.is_some() || !call.items.is_empty() || call.task,
        }
    }

    /// count → labels → caps → filter, for an answer whose content is read. Returns the bytes
    /// for the agent and the result status of an acting call.
    fn answer_stages(
        &self,
        counters: &mut Counters,
        frame: &Frame,
        id: &Id,
        call: &Call,
    ) -> (Vec<u8>, Option<ResultStatus>) {
        match &call.expect {
            Expect::Act { kind, target } => {
                let status = act_status(frame.kind(), frame.result_is_error());
                if call.task {
                    if let Some(task_id) = created_task(frame) {
                        // The handle carries no data: the task's result, fetched with
                        // `tasks/result`, passes these stages as this call's.
                        lock(&self.calls).add_task(
                            task_id,
                            TaskOrigin {
                                kind: *kind,
                                target: target.clone(),
                                args: call.args.clone(),
                                items: call.items.clone(),
                                ticket: call.ticket,
                            },
                        );
                        return (with_newline(frame.raw()), Some(status));
                    }
                }
                // count: the call has happened upstream, whether or not its answer is withheld.
                let trip = match frame.result() {
                    Some(result) if !call.items.is_empty() => {
                        crate::breakers::count(self, counters, &call.items, result)
                    }
                    _ => None,
                };
                // labels: before the agent sees any data.
                let labelled = match &call.args {
                    Some(args) => crate::flow::observe(self, *kind, target, args, frame),
                    None => Ok(()),
                };
                // caps: a crossed cap pauses the agent.
                if let Some(trip) = trip {
                    for r in crate::breakers::cap(self, counters, &trip, target) {
                        self.audit.queue(r, None);
                    }
                }
                if let Err(e) = labelled {
                    // Fail closed: the answer may carry what the label marks.
                    tracing::error!(error = %e, "cannot record an information-flow label");
                    let out = error_line(
                        Some(id),
                        codes::DENIED,
                        &format!("Airlock withheld the result: its information-flow label could not be recorded ({e})"),
                    );
                    return (out, Some(ResultStatus::Withheld));
                }
                (with_newline(frame.raw()), Some(status))
            }
            Expect::List(kind) => {
                let kills = self.kills.kills();
                let filtered = filter_list(
                    &self.policy.current(),
                    &self.who,
                    *kind,
                    frame.value(),
                    &|name| {
                        *kind == crate::route::ListKind::Tools
                            && crate::kill::tool_kill(&kills, &self.who, name).is_some()
                    },
                );
                (self.filtered(id, frame, filtered), None)
            }
            Expect::TaskList => {
                let calls = lock(&self.calls);
                let filtered = filter_tasks(frame.value(), &|task_id| calls.has_task(task_id));
                drop(calls);
                (self.filtered(id, frame, filtered), None)
            }
            Expect::Plain => (with_newline(frame.raw()), None),
        }
    }

    fn filtered(&self, id: &Id, frame: &Frame, filtered: Filtered) -> Vec<u8> {
        match filtered {
            Filtered::Unchanged => with_newline(frame.raw()),
            Filtered::Rewritten(mut bytes) => {
                bytes.push(b'\n');
                bytes
            }
            Filtered::Malformed(why) => {
                tracing::warn!(why, "malformed list answer from the upstream");
                error_line(
                    Some(id),
                    codes::UPSTREAM_UNAVAILABLE,
                    &format!("the upstream server sent a malformed list: {why}"),
                )
            }
        }
    }
}

/// The task id of a `CreateTaskResult` (`result.task.taskId`), if the answer is one.
fn created_task(frame: &Frame) -> Option<String> {
    frame
        .result()?
        .get("task")?
        .get("taskId")?
        .as_str()
        .map(str::to_owned)
}

/// An answer nothing reads but its outcome: relayed as it came, with its result status.
fn relayed_answer(outline: &Outline, call: &Call) -> (Vec<u8>, Option<ResultStatus>) {
    let status = matches!(call.expect, Expect::Act { .. })
        .then(|| act_status(outline.kind(), outline.result_is_error()));
    (with_newline(outline.raw()), status)
}

/// What the agent gets for an answer from the upstream that is not valid JSON-RPC.
fn malformed_answer(id: &Id, why: &str) -> Vec<u8> {
    let message = format!("the upstream server sent a malformed answer: {why}");
    error_line(Some(id), codes::UPSTREAM_UNAVAILABLE, &message)
}
