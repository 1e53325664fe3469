//! The pipeline's state and the events that are not one message: a kill, the sweep of calls the
//! upstream sits on, the upstream going away, the session ending.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use airlock_audit::{now_unix_ns, AuditWriter, RecordKind, ResultStatus};
use airlock_control::Kill;
use airlock_protocol::{error_response, Id, Limits};
use serde_json::json;

use crate::audit::{base_record, result_record, Audit};
use crate::calls::{Call, CallTable, Expect, Phase, Side};
use crate::codes;
use crate::flow::FlowState;
use crate::kill::KillState;
use crate::store::Stores;
use crate::{lock, Identity, Options, PolicyHandle};

/// What the transport writes after a pipeline step.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Output {
    /// Bytes for the upstream (whole frames, each ending in `\n`).
    pub upstream: Vec<u8>,
    /// Bytes for the agent (whole frames, each ending in `\n`).
    pub agent: Vec<u8>,
    /// Agent requests in `upstream`: if writing it fails, [`Pipeline::unforwarded`] answers them.
    pub forwarded: Vec<Id>,
    /// Other processes should look at the store (a new approval request).
    pub announce: bool,
}

impl Output {
    pub fn is_empty(&self) -> bool {
        self.upstream.is_empty() && self.agent.is_empty()
    }

    pub(crate) fn append(&mut self, other: Output) {
        self.upstream.extend(other.upstream);
        self.agent.extend(other.agent);
        self.forwarded.extend(other.forwarded);
        self.announce |= other.announce;
    }
}

/// What a pipeline is built from.
pub struct PipelineParts {
    pub options: Options,
    pub policy: PolicyHandle,
    pub audit: Arc<AuditWriter>,
    /// The store (the audit database) and its thread; `None` runs without approvals, labels,
    /// breakers or kills (tests of the bare path).
    pub control: Option<ControlParts>,
}

/// The stores a pipeline with a control plane uses.
pub struct ControlParts {
    pub db: PathBuf,
    pub stores: Stores,
    /// The labels the agent (and this session) carry already.
    pub labels: Vec<String>,
}

/// The call pipeline of one session.
pub struct Pipeline {
    pub(crate) who: Identity,
    pub(crate) opts: Options,
    pub(crate) limits: Limits,
    pub(crate) policy: PolicyHandle,
    pub(crate) audit: Arc<Audit>,
    /// Every call the pipeline knows (the one owner of per-call state).
    pub(crate) calls: Mutex<CallTable>,
    pub(crate) kills: KillState,
    pub(crate) flow: Option<FlowState>,
    pub(crate) stores: Option<Stores>,
    pub(crate) db: Option<PathBuf>,
    /// Woken when held calls may have news (a new hold, a store change).
    pub held_changed: tokio::sync::Notify,
}

/// What a kill did to this pipeline.
pub struct KillEffect {
    pub output: Output,
    /// Held calls that ended: their approval requests are denied on the store thread.
    pub held: Vec<crate::hold::Held>,
}

impl Pipeline {
    pub fn new(parts: PipelineParts) -> Pipeline {
        let PipelineParts {
            options,
            policy,
            audit,
            control,
        } = parts;
        let (flow, stores, db) = match control {
            Some(c) => (Some(FlowState::new(c.labels)), Some(c.stores), Some(c.db)),
            None => (None, None, None),
        };
        Pipeline {
            who: options.identity.clone(),
            limits: Limits {
                max_frame_bytes: options.max_frame_bytes,
            },
            opts: options,
            policy,
            audit: Arc::new(Audit::new(audit)),
            calls: Mutex::new(CallTable::default()),
            kills: KillState::default(),
            flow,
            stores,
            db,
            held_changed: tokio::sync::Notify::new(),
        }
    }

    pub fn identity(&self) -> &Identity {
        &self.who
    }

    pub fn options(&self) -> &Options {
        &self.opts
    }

    /// The audit trail, for the transport's flush of queued records.
    pub fn audit(&self) -> &Audit {
        &self.audit
    }

    /// The audit trail, shared (for store jobs that queue records).
    pub(crate) fn audit_handle(&self) -> Arc<Audit> {
        self.audit.clone()
    }

    pub fn stores(&self) -> Option<&Stores> {
        self.stores.as_ref()
    }

    /// The kill state, for the transport's kill watcher.
    pub fn kill_state(&self) -> &KillState {
        &self.kills
    }

    /// The kill that stopped this pipeline, if one has.
    pub fn stopped(&self) -> Option<Kill> {
        self.kills.stopped()
    }

    /// How many calls the pipeline still knows (every phase).
    pub fn calls_known(&self) -> usize {
        lock(&self.calls).len()
    }

    /// How many calls wait for a human.
    pub fn held_count(&self) -> usize {
        lock(&self.calls).held_ids().len()
    }

    /// Wakes every process watching the store (other gateways, `airlock serve`).
    pub fn announce(&self) {
        if let Some(db) = &self.db {
            if let Err(e) = airlock_control::notify_all(db) {
                tracing::warn!(error = %e, "cannot announce a store change");
            }
        }
    }

    /// Takes the kills in force; a kill of this agent, session or everything stops the
    /// pipeline (see [`Pipeline::apply_kill`]), whose effect is returned once.
    pub fn set_kills(&self, kills: Vec<Kill>) -> Option<KillEffect> {
        let stop = crate::kill::gateway_kill(&kills, &self.who).cloned();
        self.kills.set(kills);
        stop.and_then(|kill| self.apply_kill(&kill))
    }

    /// Stops the pipeline: calls upstream are cancelled there and answered, held calls end, and
    /// every later request is refused. Runs once; `None` if the pipeline was stopped already.
    /// The transport then ends the upstream and writes the output with a short grace.
    pub fn apply_kill(&self, kill: &Kill) -> Option<KillEffect> {
        if !self.kills.mark_stopped(kill) {
            return None;
        }
        tracing::warn!(kill = kill.id, reason = %kill.reason, by = %kill.by, "kill received: stopping");
        let message = crate::kill::refusal(kill);
        let ended = lock(&self.calls).drain_where(|side, c| {
            *side == Side::Agent && matches!(c.phase, Phase::Upstream | Phase::Held(_))
        });
        let mut output = Output::default();
        let mut held = Vec::new();
        for (_, id, call) in ended {
            output
                .agent
                .extend(error_line(Some(&id), codes::KILLED, &message));
            match call.phase {
                Phase::Held(h) => held.push(*h),
                _ => {
                    output
                        .upstream
                        .extend(cancel_line(&id, "stopped by Airlock"));
                    self.queue_result(&id, &call, ResultStatus::Killed);
                }
            }
        }
        Some(KillEffect { output, held })
    }

    /// Ends the approval requests of held calls a kill stopped (store work: call it from a
    /// blocking thread). A stored kill denies them, as the channel that issued it does too
    /// (whichever comes first records the denial); an emergency kill withdraws them.
    pub fn end_held_for_kill(&self, kill: &Kill, effect_held: Vec<crate::hold::Held>) {
        crate::hold::end_for_kill(self, kill, effect_held);
    }

    /// Answers calls the upstream has sat on for longer than the call timeout and cancels them
    /// upstream; their ids stay reserved until the late answer or a grace period.
    pub fn expire(&self) -> Output {
        let timeout = self.opts.call_timeout;
        let mut out = Output::default();
        let mut calls = lock(&self.calls);
        calls.forget_abandoned(timeout.max(Duration::from_secs(1)) * 2);
        // A server request the agent never answers is forgotten after the call timeout: the
        // table stays bounded whatever the server sends, and a late answer is refused.
        let unanswered = calls.drain_where(|side, c| {
            *side == Side::Server
                && matches!(c.phase, Phase::AskedAgent)
                && c.started.elapsed() >= timeout
        });
        if !unanswered.is_empty() {
            tracing::warn!(
                count = unanswered.len(),
                "server requests the agent did not answer in time forgotten"
            );
        }
        for (side, id, call) in calls.drain_where(|side, c| {
            *side == Side::Agent
                && matches!(c.phase, Phase::Upstream)
                && c.started.elapsed() >= timeout
        }) {
            self.queue_result(&id, &call, ResultStatus::Timeout);
            out.upstream
                .extend(cancel_line(&id, "timed out in Airlock"));
            let message = format!(
                "the upstream server did not answer `{}` within {} s; the call was cancelled",
                call.method,
                timeout.as_secs()
            );
            out.agent
                .extend(error_line(Some(&id), codes::UPSTREAM_TIMEOUT, &message));
            let mut abandoned = Call::new(&call.method, Expect::Plain);
            abandoned.phase = Phase::Abandoned {
                since: std::time::Instant::now(),
            };
            calls.reserve(side, &id, abandoned);
        }
        out
    }

    /// The upstream is gone: every call waiting on it is answered with an error.
    pub fn upstream_gone(&self, why: &str) -> Output {
        let ended = lock(&self.calls).drain_where(|side, c| {
            *side == Side::Agent && matches!(c.phase, Phase::Upstream | Phase::Judging)
        });
        let mut out = Output::default();
        for (_, id, call) in &ended {
            self.queue_result(id, call, ResultStatus::UpstreamDied);
            out.agent.extend(error_line(
                Some(id),
                codes::UPSTREAM_UNAVAILABLE,
                &format!("Airlock could not complete `{}`: {why}", call.method),
            ));
        }
        let mut record = base_record(
            &self.who,
            &self.policy.current(),
            "upstream/exit",
            None,
            None,
        );
        record.kind = RecordKind::UpstreamExit;
        record.status = Some(ResultStatus::UpstreamDied);
        record.time_unix_ns = now_unix_ns();
        record.detail = Some(json!({ "why": why, "failed_requests": ended.len() }));
        self.audit.queue(record, None);
        out
    }

    /// Answers the requests of an output whose write to the upstream failed.
    pub fn unforwarded(&self, ids: &[Id], error: &std::io::Error) -> Output {
        let mut out = Output::default();
        for id in ids {
            let Some(call) =
                lock(&self.calls).end_if(Side::Agent, id, |p| matches!(p, Phase::Upstream))
            else {
                continue; // a kill already answered it
            };
            let (code, status, message) = match self.kills.stopped() {
                Some(kill) => (
                    codes::KILLED,
                    ResultStatus::Killed,
                    crate::kill::refusal(&kill),
                ),
                None => (
                    codes::UPSTREAM_UNAVAILABLE,
                    ResultStatus::UpstreamDied,
                    format!("Airlock could not forward `{}`: {error}", call.method),
                ),
            };
            self.queue_result(id, &call, status);
            out.agent.extend(error_line(Some(id), code, &message));
        }
        out
    }

    /// The session is over (the agent went away): held calls are withdrawn, and nothing about
    /// any call is kept. Store work: call it from a blocking thread.
    pub fn end_session(&self, why: &str) {
        let ended = lock(&self.calls).drain_where(|_, _| true);
        for (side, id, call) in ended {
            match call.phase {
                Phase::Held(held) => crate::hold::withdraw_held(self, &held, why),
                Phase::Upstream if side == Side::Agent => {
                    self.queue_result(&id, &call, ResultStatus::Cancelled)
                }
                _ => {}
            }
        }
        self.audit.flush();
    }

    /// Queues the result record of an acting call that ended.
    pub(crate) fn queue_result(&self, id: &Id, call: &Call, status: ResultStatus) {
        let Expect::Act { target, .. } = &call.expect else {
            return;
        };
        let record = result_record(
            &self.who,
            &self.policy.current(),
            &call.method,
            Some(target),
            id,
            status,
            call.started,
        );
        self.audit.queue(record, call.ticket);
    }
}

/// An error answer as one line.
pub(crate) fn error_line(id: Option<&Id>, code: i32, message: &str) -> Vec<u8> {
    let mut out = error_response(id, code, message, None);
    out.push(b'\n');
    out
}

pub(crate) fn with_newline(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + 1);
    out.extend_from_slice(raw);
    out.push(b'\n');
    out
}

/// A `notifications/cancelled` for the upstream, as one line.
pub(crate) fn cancel_line(id: &Id, reason: &str) -> Vec<u8> {
    let cancel = json!({
        "jsonrpc": "2.0",
        "method": "notifications/cancelled",
        "params": { "requestId": id.to_json(), "reason": reason },
    });
    with_newline(cancel.to_string().as_bytes())
}
