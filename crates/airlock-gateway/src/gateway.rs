//! The stdio gateway: agent ⇄ Airlock ⇄ upstream server.
//!
//! Two threads move frames, one per direction, so that a slow reader on one side never stalls
//! the other (two full pipes waiting on each other would deadlock). They read and write with
//! blocking system calls, as a plain relay does (see [`crate::stdio`] for why). The
//! agent→upstream thread is the call path: frame → route → policy → audit (durable) → upstream.
//! It judges every frame already buffered before it commits, so a burst of calls shares one
//! audit write (group commit). The upstream→agent thread matches answers to requests, filters
//! lists, and queues result records, which an async task commits off the hot path. Timeouts,
//! kills and shutdown are async tasks on the runtime.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use airlock_audit::{now_unix_ns, AuditWriter, NewRecord, Submission, Ticket};
use airlock_control::{BreakerSet, ControlStore, Kill, Verdict};
use airlock_protocol::{
    error_response, parse_frame, parse_outline, Frame, FrameKind, Id, Limits, Outline,
    INVALID_REQUEST,
};
use serde_json::json;
use tokio::sync::{oneshot, Notify};

use crate::codes;
use crate::filter::{filter_list, Filtered};
use crate::judge::{base_record, judge_request, Expect, Judgement};
use crate::lines::{Line, LineReader};
use crate::route::notification_allowed;
use crate::stdio::{AgentIo, Outlet, Sink, Source};
use crate::upstream::{shut_down, Upstream};
use crate::{GatewayError, GatewayOptions, Identity, Outcome, PolicyHandle};

/// The most frames judged before one audit commit.
const MAX_BATCH: usize = 256;
/// How long a result record may wait for a decision commit to ride along with.
const RESULT_FLUSH_DELAY: Duration = Duration::from_millis(20);
/// How long the upstream gets to exit after its stdin closes, before SIGTERM, then SIGKILL.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

struct ControlParts {
    db: std::path::PathBuf,
    listener: airlock_control::Listener,
}

/// One request forwarded upstream and not yet answered.
pub(crate) struct InFlight {
    pub(crate) expect: Expect,
    /// The call's audit record, for its result record to point at.
    pub(crate) call: Option<Ticket>,
    pub(crate) started: Instant,
    pub(crate) method: String,
    /// The call's arguments, kept only when a flow rule could label its result.
    pub(crate) flow_args: Option<serde_json::Value>,
}

/// State both directions share. Locks are held for microseconds and never across an await.
pub(crate) struct Shared {
    pub(crate) who: Identity,
    opts: GatewayOptions,
    pub(crate) policy: PolicyHandle,
    pub(crate) audit: Arc<AuditWriter>,
    /// Agent requests in flight upstream, by id.
    pub(crate) in_flight: Mutex<HashMap<Id, InFlight>>,
    /// Agent requests held for a human's approval, by id (never upstream yet).
    pub(crate) held: crate::hold::HeldCalls,
    /// The store of approval requests (the audit database); `None` without a control store.
    pub(crate) approvals: Option<Mutex<airlock_approval::ApprovalStore>>,
    /// Woken when the store may hold news for held calls (a decision, a kill).
    pub(crate) approvals_changed: Notify,
    /// The database whose control sockets announce changes (`notify_all`).
    control_db: Option<std::path::PathBuf>,
    /// Information-flow labels (`None` without a control store).
    pub(crate) flow: Option<crate::flow::FlowState>,
    /// Server→agent requests (sampling, elicitation, roots) awaiting the agent's answer.
    server_requests: Mutex<HashSet<Id>>,
    /// Result records waiting for the background commit.
    results: Mutex<Vec<Submission>>,
    results_ready: Notify,
    agent_out: Outlet,
    /// The upstream's stdin; closed when the agent goes away.
    upstream_in: Outlet,
    /// Set once the gateway is winding down after the upstream went away: the frame threads
    /// (which cannot be aborted like a task) stop at their next frame.
    finished: AtomicBool,
    pub(crate) upstream_pid: Option<u32>,
    /// Kills in force (all scopes), as last read from the store.
    kills: std::sync::RwLock<Arc<Vec<Kill>>>,
    /// The kill that stopped this gateway, once one has.
    stopped: Mutex<Option<Kill>>,
    /// Budgets per action class, and the store that counts them.
    pub(crate) breakers: Option<Mutex<Breakers>>,
}

pub(crate) struct Breakers {
    pub(crate) set: BreakerSet,
    pub(crate) store: ControlStore,
    pub(crate) db: std::path::PathBuf,
    /// Calls in flight whose result counts items of a class (see `crate::breaker`).
    pub(crate) results: HashMap<Id, Vec<airlock_control::Matched>>,
}

// === impl Shared ===

impl Shared {
    pub(crate) fn kills(&self) -> Arc<Vec<Kill>> {
        match self.kills.read() {
            Ok(k) => k.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    pub(crate) fn set_kills(&self, kills: Vec<Kill>) {
        let kills = Arc::new(kills);
        match self.kills.write() {
            Ok(mut k) => *k = kills,
            Err(p) => *p.into_inner() = kills,
        }
    }

    /// Records that `kill` stopped this gateway; false if it was already stopped.
    pub(crate) fn mark_stopped(&self, kill: &Kill) -> bool {
        let mut stopped = lock(&self.stopped);
        if stopped.is_some() {
            return false;
        }
        *stopped = Some(kill.clone());
        true
    }

    pub(crate) fn stopped(&self) -> Option<Kill> {
        lock(&self.stopped).clone()
    }

    pub(crate) fn take_in_flight(&self) -> Vec<(Id, InFlight)> {
        lock(&self.in_flight).drain().collect()
    }

    pub(crate) fn queue_result(
        &self,
        id: &Id,
        entry: &InFlight,
        status: airlock_audit::ResultStatus,
    ) {
        queue_result(self, id, entry, status);
    }

    pub(crate) fn commit_results(&self) {
        commit_results(self);
    }

    /// Queues an audit record for the background commit (off the hot path).
    pub(crate) fn queue_record(&self, record: NewRecord, refers_to: Option<Ticket>) {
        lock(&self.results).push(Submission { record, refers_to });
        self.results_ready.notify_one();
    }

    /// Wakes every process watching the store (other gateways, `airlock serve`).
    fn announce(&self) {
        if let Some(db) = &self.control_db {
            if let Err(e) = airlock_control::notify_all(db) {
                tracing::warn!(error = %e, "cannot announce a new approval request");
            }
        }
    }

    pub(crate) async fn write_agent(&self, bytes: &[u8]) -> std::io::Result<()> {
        write_agent(self, bytes).await
    }

    pub(crate) async fn write_upstream(&self, bytes: &[u8]) -> std::io::Result<()> {
        write_upstream(self, bytes).await
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind; keep going with it.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Runs the gateway until the agent or the upstream goes away.
pub(crate) async fn run(
    opts: GatewayOptions,
    policy: PolicyHandle,
    audit: Arc<AuditWriter>,
    agent: AgentIo,
    upstream: Upstream,
    control: Option<crate::Control>,
) -> Result<Outcome, GatewayError> {
    let Upstream {
        mut child,
        stdin,
        stdout,
        stderr,
        pid,
    } = upstream;
    let control_db = control.as_ref().map(|c| c.db.clone());
    let approvals = match &control_db {
        Some(db) => Some(Mutex::new(
            airlock_approval::ApprovalStore::open(db).map_err(|e| {
                GatewayError::Io(std::io::Error::other(format!(
                    "cannot open the approval store: {e}"
                )))
            })?,
        )),
        None => None,
    };
    let flow = match &control {
        Some(c) => Some(
            crate::flow::FlowState::open(c.flow.clone(), &c.db, &opts.identity).map_err(|e| {
                GatewayError::Io(std::io::Error::other(format!(
                    "cannot read the information-flow labels: {e}"
                )))
            })?,
        ),
        None => None,
    };
    let (control, breakers) = match control {
        Some(c) => {
            let store = ControlStore::open(&c.db).map_err(|e| {
                GatewayError::Io(std::io::Error::other(format!(
                    "cannot open the breaker store: {e}"
                )))
            })?;
            let breakers = Breakers {
                set: c.breakers,
                store,
                db: c.db.clone(),
                results: HashMap::new(),
            };
            (
                Some(ControlParts {
                    db: c.db,
                    listener: c.listener,
                }),
                Some(Mutex::new(breakers)),
            )
        }
        None => (None, None),
    };
    let handle = tokio::runtime::Handle::current();
    let to_upstream_sink = Sink::child_pipe(stdin.into_owned_fd()?)?;
    let from_upstream = Source::child_pipe(stdout.into_owned_fd()?);
    let upstream_log = Source::child_pipe(stderr.into_owned_fd()?);
    let shared = Arc::new(Shared {
        who: opts.identity.clone(),
        opts,
        policy,
        audit,
        in_flight: Mutex::new(HashMap::new()),
        held: Mutex::new(HashMap::new()),
        approvals,
        approvals_changed: Notify::new(),
        control_db,
        flow,
        server_requests: Mutex::new(HashSet::new()),
        results: Mutex::new(Vec::new()),
        results_ready: Notify::new(),
        agent_out: Outlet::new(agent.writer, handle.clone()),
        upstream_in: Outlet::new(to_upstream_sink, handle.clone()),
        finished: AtomicBool::new(false),
        upstream_pid: pid,
        kills: std::sync::RwLock::new(Arc::new(Vec::new())),
        stopped: Mutex::new(None),
        breakers,
    });
    let watcher =
        control.map(|c| tokio::spawn(crate::kill::watch(shared.clone(), c.db, c.listener)));

    let max = shared.opts.max_frame_bytes;
    let agent_lines = LineReader::new(agent.reader.into_reader(handle.clone()), max);
    let upstream_lines = LineReader::new(from_upstream.into_reader(handle.clone()), max);
    let mut to_upstream = spawn_loop("airlock-agent-in", {
        let shared = shared.clone();
        move || agent_to_upstream(&shared, agent_lines)
    })?;
    let mut to_agent = spawn_loop("airlock-upstream-in", {
        let shared = shared.clone();
        move || upstream_to_agent(&shared, upstream_lines)
    })?;
    let stderr_lines = LineReader::new(upstream_log.into_reader(handle), 64 * 1024);
    spawn_loop("airlock-upstream-log", move || {
        log_stderr(stderr_lines);
        Ok(())
    })?;
    let flusher = tokio::spawn(flush_results(shared.clone()));
    let sweeper = tokio::spawn(expire_calls(shared.clone()));
    let holds = tokio::spawn(crate::hold::watch(shared.clone()));

    // Who went first: the agent (an orderly end), or the upstream (its exit status).
    let upstream_status = tokio::select! {
        agent_done = &mut to_upstream => {
            // The agent closed its side: close the upstream's stdin, give the server time to
            // answer what is in flight and exit, then end it.
            if let Ok(Err(e)) = agent_done {
                tracing::warn!(error = %e, "reading from the agent failed");
            }
            shared.upstream_in.close().await;
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, &mut to_agent).await;
            let status = shut_down(&mut child, pid, SHUTDOWN_GRACE).await.ok();
            tracing::info!(?status, "agent closed the session; upstream stopped");
            None
        }
        exited = child.wait() => {
            // The server process itself is gone; a child it forked may still hold its stdout,
            // so do not wait for end-of-file. Let what it wrote drain, then end its group.
            let _ = tokio::time::timeout(Duration::from_millis(100), &mut to_agent).await;
            crate::upstream::signal_group(pid, nix::sys::signal::Signal::SIGKILL);
            Some(exited.map_or_else(|e| e.to_string(), |s| s.to_string()))
        }
        _ = &mut to_agent => {
            let status = shut_down(&mut child, pid, Duration::from_millis(500)).await.ok();
            Some(status.map_or_else(|| "unknown status".to_string(), |s| s.to_string()))
        }
    };
    let outcome = match upstream_status {
        None => Outcome::AgentClosed,
        Some(_) if shared.stopped().is_some() => {
            // Killed: the upstream is gone on purpose, and every request is refused until the
            // agent goes away (`finish` reports the kill).
            let _ = (&mut to_upstream).await;
            Outcome::AgentClosed
        }
        Some(status) => {
            // The frame threads stop at their next frame; nothing more goes upstream. (A thread
            // stuck writing to a pipe that a stray process holds keeps the lock: do not wait.)
            shared.finished.store(true, Ordering::SeqCst);
            let _ =
                tokio::time::timeout(Duration::from_millis(100), shared.upstream_in.close()).await;
            fail_in_flight(&shared, &format!("the upstream server exited ({status})")).await;
            Outcome::UpstreamExited { status }
        }
    };
    holds.abort();
    finish(&shared, flusher, sweeper, watcher, outcome)
}

/// Stops the helper tasks, writes what is queued, and says why the gateway stopped.
fn finish(
    shared: &Shared,
    flusher: tokio::task::JoinHandle<()>,
    sweeper: tokio::task::JoinHandle<()>,
    watcher: Option<tokio::task::JoinHandle<()>>,
    outcome: Outcome,
) -> Result<Outcome, GatewayError> {
    flusher.abort();
    sweeper.abort();
    if let Some(w) = watcher {
        w.abort();
    }
    // Nobody is left to answer: what the agent was waiting on is withdrawn.
    crate::hold::withdraw_all(shared, "the agent went away");
    commit_results(shared);
    Ok(match shared.stopped() {
        Some(kill) => Outcome::Killed {
            reason: crate::kill::refusal(&kill),
        },
        None => outcome,
    })
}

/// Runs a frame loop on a thread of its own; the receiver gets its result (or is dropped, if
/// the thread panicked). The thread is never joined: one blocked on a peer that went quiet
/// ends with the process.
fn spawn_loop(
    name: &str,
    body: impl FnOnce() -> std::io::Result<()> + Send + 'static,
) -> std::io::Result<oneshot::Receiver<std::io::Result<()>>> {
    let (done, finished) = oneshot::channel();
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            let _ = done.send(body());
        })?;
    Ok(finished)
}

// === agent → upstream: the call path ===

fn agent_to_upstream<R: Read>(shared: &Shared, mut lines: LineReader<R>) -> std::io::Result<()> {
    let limits = Limits {
        max_frame_bytes: shared.opts.max_frame_bytes,
    };
    let mut steps: Vec<Step> = Vec::new();
    let mut records: Vec<NewRecord> = Vec::new();
    while let Some(line) = lines.next_line()? {
        if shared.finished.load(Ordering::SeqCst) {
            return Ok(());
        }
        steps.clear();
        records.clear();
        steps.push(judge_line(shared, &limits, line, &mut records));
        while steps.len() < MAX_BATCH && lines.has_buffered_line() {
            if let Some(line) = lines.next_line()? {
                steps.push(judge_line(shared, &limits, line, &mut records));
            }
        }
        // The decisions are durable before anything they allowed moves on.
        let tickets = commit_decisions(shared, &mut records);
        let mut upstream_bytes = Vec::new();
        let mut agent_bytes = Vec::new();
        let mut held_any = false;
        let mut forwarded: Vec<Id> = Vec::new();
        for step in steps.drain(..) {
            match step {
                Step::Hold { id, held, record } => {
                    let ticket = tickets.as_ref().ok().and_then(|t| t.get(record).copied());
                    if ticket.is_none() {
                        // Fail closed: the hold could not be recorded, so nobody may approve it.
                        let message = format!(
                            "Airlock refused the call: the audit store could not record it ({})",
                            tickets.as_ref().err().map_or("", String::as_str)
                        );
                        agent_bytes.extend(error_line(
                            Some(&id),
                            codes::AUDIT_UNAVAILABLE,
                            &message,
                        ));
                        continue;
                    }
                    agent_bytes.extend(crate::hold::start(shared, id, *held, ticket));
                    held_any = true;
                }
                Step::Forward { frame, id, record } => {
                    let ticket =
                        record.and_then(|r| tickets.as_ref().ok().and_then(|s| s.get(r).copied()));
                    if record.is_some() && ticket.is_none() {
                        // Fail closed: the decision could not be recorded.
                        if let Some(id) = &id {
                            lock(&shared.in_flight).remove(id);
                        }
                        let message = format!(
                            "Airlock refused the call: the audit store could not record it ({})",
                            tickets.as_ref().err().map_or("", String::as_str)
                        );
                        agent_bytes.extend(error_response(
                            id.as_ref(),
                            codes::AUDIT_UNAVAILABLE,
                            &message,
                            None,
                        ));
                        agent_bytes.push(b'\n');
                        continue;
                    }
                    if let (Some(id), Some(ticket)) = (&id, ticket) {
                        if let Some(entry) = lock(&shared.in_flight).get_mut(id) {
                            entry.call = Some(ticket);
                        }
                    }
                    upstream_bytes.extend_from_slice(frame.raw());
                    upstream_bytes.push(b'\n');
                    forwarded.extend(id);
                }
                Step::Reply {
                    id,
                    code,
                    message,
                    data,
                } => {
                    agent_bytes.extend(error_response(id.as_ref(), code, &message, data));
                    agent_bytes.push(b'\n');
                }
                Step::Drop => {}
            }
        }
        if held_any {
            shared.announce();
        }
        if !upstream_bytes.is_empty() {
            if let Err(e) = shared.upstream_in.write_blocking(&upstream_bytes) {
                // The upstream is gone (killed, crashed): answer what this batch forwarded and
                // keep reading, so every later request still gets its refusal.
                agent_bytes.extend(unforwarded(shared, &forwarded, &e));
            }
        }
        if !agent_bytes.is_empty() {
            shared.agent_out.write_blocking(&agent_bytes)?;
        }
    }
    Ok(())
}

/// Answers the requests of a batch whose write to the upstream failed.
fn unforwarded(shared: &Shared, ids: &[Id], error: &std::io::Error) -> Vec<u8> {
    let mut out = Vec::new();
    for id in ids {
        let Some(entry) = lock(&shared.in_flight).remove(id) else {
            continue; // a kill already answered it
        };
        let (code, status, message) = match shared.stopped() {
            Some(kill) => (
                codes::KILLED,
                airlock_audit::ResultStatus::Killed,
                crate::kill::refusal(&kill),
            ),
            None => (
                codes::UPSTREAM_UNAVAILABLE,
                airlock_audit::ResultStatus::UpstreamDied,
                format!("Airlock could not forward `{}`: {error}", entry.method),
            ),
        };
        queue_result(shared, id, &entry, status);
        out.extend(error_line(Some(id), code, &message));
    }
    out
}

/// What to do with one line from the agent once the batch's audit commit is done.
enum Step {
    /// Forward the frame; `record` indexes the batch's audit records.
    Forward {
        frame: Frame,
        id: Option<Id>,
        record: Option<usize>,
    },
    /// Answer the agent with an error (its audit record, if any, is in the batch).
    Reply {
        id: Option<Id>,
        code: i32,
        message: String,
        data: Option<serde_json::Value>,
    },
    /// Hold the call for a human; `record` indexes its `hold` record in the batch.
    Hold {
        id: Id,
        held: Box<crate::hold::Held>,
        record: usize,
    },
    Drop,
}

fn judge_line(shared: &Shared, limits: &Limits, line: Line, records: &mut Vec<NewRecord>) -> Step {
    let bytes = match line {
        Line::Frame(bytes) => bytes,
        Line::TooLong(len) => {
            tracing::warn!(len, "agent frame over the size limit refused");
            return Step::Reply {
                id: None,
                code: INVALID_REQUEST,
                message: format!(
                    "frame of {len} bytes exceeds the limit of {} bytes",
                    limits.max_frame_bytes
                ),
                data: None,
            };
        }
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Step::Drop;
    }
    let frame = match parse_frame(&bytes, limits) {
        Ok(frame) => frame,
        Err(e) => {
            tracing::warn!(code = e.code, error = %e.message, "malformed frame from the agent refused");
            return Step::Reply {
                id: e.id.clone(),
                code: e.code,
                message: e.message,
                data: None,
            };
        }
    };
    let mut push = |r: Option<NewRecord>| {
        r.map(|r| {
            records.push(r);
            records.len() - 1
        })
    };
    match frame.kind().clone() {
        FrameKind::Request { id, method } => {
            let kills = shared.kills();
            let target = (method == "tools/call")
                .then(|| {
                    frame
                        .params()
                        .and_then(|p| p.get("name"))
                        .and_then(serde_json::Value::as_str)
                })
                .flatten();
            let kill = shared.stopped().or_else(|| match target {
                Some(tool) => crate::kill::tool_kill(&kills, shared, tool).cloned(),
                None => crate::kill::gateway_kill(&kills, shared).cloned(),
            });
            if let Some(kill) = kill {
                let policy = shared.policy.current();
                let mut record = base_record(&shared.who, &policy, &method, target, Some(&id));
                record.decision = Some(airlock_audit::Decision::Deny);
                record.reasons = vec![format!("kill:{}", kill.id)];
                push(Some(record));
                return Step::Reply {
                    id: Some(id),
                    code: codes::KILLED,
                    message: crate::kill::refusal(&kill),
                    data: None,
                };
            }
            if lock(&shared.in_flight).contains_key(&id) || crate::hold::is_held(shared, &id) {
                return Step::Reply {
                    id: Some(id),
                    code: codes::DUPLICATE_ID,
                    message:
                        "Airlock refused the request: a request with this id is already in flight"
                            .into(),
                    data: None,
                };
            }
            let judgement = judge_request(
                &shared.policy.current(),
                &shared.who,
                &shared.opts.allow_methods,
                &crate::flow::labels(shared),
                &frame,
                &id,
                &method,
            );
            // A call only a human can unblock: an earlier approval lets it through once,
            // else it is held.
            let judgement = match judgement {
                Judgement::Hold(req) => {
                    let target = req.target.clone();
                    match crate::hold::admit(shared, &frame, &method, *req) {
                        crate::hold::Admit::Approved { record, extra } => {
                            for r in extra {
                                push(Some(r));
                            }
                            Judgement::Forward {
                                expect: Expect::Act { target },
                                record: Some(record),
                            }
                        }
                        crate::hold::Admit::Hold { held, records } => {
                            let mut first = None;
                            for r in records {
                                let i = push(Some(r));
                                first = first.or(i);
                            }
                            return match first {
                                Some(record) => Step::Hold { id, held, record },
                                None => Step::Drop,
                            };
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
                    }
                }
                other => other,
            };
            match judgement {
                Judgement::Hold(_) => Step::Drop,
                Judgement::Forward { expect, record } => {
                    if let Expect::Act { target } = &expect {
                        if let Some(refusal) = check_breakers(shared, &frame, target) {
                            let mut record = record;
                            if let Some(r) = record.as_mut() {
                                r.decision = Some(airlock_audit::Decision::Deny);
                                r.reasons = vec![refusal.reason.clone()];
                            }
                            push(record);
                            for extra in refusal.records {
                                push(Some(extra));
                            }
                            return Step::Reply {
                                id: Some(id),
                                code: refusal.code,
                                message: refusal.message,
                                data: None,
                            };
                        }
                    }
                    let flow_args = match (&expect, &shared.flow) {
                        (Expect::Act { target }, Some(flow))
                            if method == "tools/call"
                                && flow.may_label(&shared.who.server, target) =>
                        {
                            frame.params().and_then(|p| p.get("arguments")).cloned()
                        }
                        _ => None,
                    };
                    lock(&shared.in_flight).insert(
                        id.clone(),
                        InFlight {
                            expect,
                            call: None,
                            started: Instant::now(),
                            method,
                            flow_args,
                        },
                    );
                    Step::Forward {
                        frame,
                        id: Some(id),
                        record: push(record),
                    }
                }
                Judgement::Refuse {
                    code,
                    message,
                    data,
                    record,
                } => {
                    tracing::info!(%method, %message, "request refused");
                    push(record);
                    Step::Reply {
                        id: Some(id),
                        code,
                        message,
                        data,
                    }
                }
            }
        }
        FrameKind::Notification { method } => {
            if shared.stopped().is_some() {
                Step::Drop
            } else if method == "notifications/cancelled" && cancels_held(shared, &frame) {
                // The server never saw the held call: the cancellation ends here.
                Step::Drop
            } else if notification_allowed(&method) {
                Step::Forward {
                    frame,
                    id: None,
                    record: None,
                }
            } else {
                tracing::warn!(%method, "notification from the agent dropped: not one Airlock passes");
                Step::Drop
            }
        }
        FrameKind::Response { id } | FrameKind::ErrorResponse { id: Some(id) } => {
            // Only answers to requests the server actually sent reach it.
            if lock(&shared.server_requests).remove(&id) && shared.stopped().is_none() {
                Step::Forward {
                    frame,
                    id: None,
                    record: None,
                }
            } else {
                tracing::warn!(%id, "answer from the agent to no pending server request dropped");
                Step::Drop
            }
        }
        FrameKind::ErrorResponse { id: None } => {
            tracing::warn!("error without an id from the agent dropped");
            Step::Drop
        }
    }
}

/// Whether `frame` (a `notifications/cancelled`) names a held call; if so it is withdrawn.
fn cancels_held(shared: &Shared, frame: &Frame) -> bool {
    let Some(raw) = frame.params().and_then(|p| p.get("requestId")) else {
        return false;
    };
    let id = match raw {
        serde_json::Value::String(s) => Id::Str(s.clone()),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Id::Int(i),
            None => return false,
        },
        _ => return false,
    };
    crate::hold::withdraw(shared, &id, "the agent cancelled the call")
}

/// A call a breaker (or its store) refused.
pub(crate) struct BreakerRefusal {
    pub(crate) code: i32,
    pub(crate) message: String,
    pub(crate) reason: String,
    pub(crate) records: Vec<NewRecord>,
}

/// Counts the call against its budgets; a call that would cross one pauses the agent and is
/// refused. Any error reading or writing the counters refuses the call (fail closed).
pub(crate) fn check_breakers(shared: &Shared, frame: &Frame, tool: &str) -> Option<BreakerRefusal> {
    let breakers = shared.breakers.as_ref()?;
    let mut guard = lock(breakers);
    let empty = serde_json::Value::Object(serde_json::Map::new());
    let args = frame
        .params()
        .and_then(|p| p.get("arguments"))
        .unwrap_or(&empty);
    let who = &shared.who;
    let Breakers { set, store, .. } = &mut *guard;
    let verdict = set.admit(store, &who.agent, &who.server, tool, args, now_unix_ns());
    let trip = match verdict {
        Ok(Verdict::Pass { matched }) => {
            crate::breaker::expect_result(&mut guard, frame, matched);
            return None;
        }
        Ok(Verdict::Trip(trip)) => trip,
        Err(e) => {
            tracing::error!(error = %e, "breaker accounting failed; refusing the call");
            return Some(BreakerRefusal {
                code: codes::DENIED,
                message: format!("denied by Airlock: the breaker counters cannot be read ({e})"),
                reason: "airlock:breaker-store-error".into(),
                records: Vec::new(),
            });
        }
    };
    let resets = time_text(trip.resets_at_ns);
    let message = format!(
        "Airlock paused agent {}: the `{}` budget ({}) is used up (it resets at {resets}); \
         the call was refused and a human must resume the agent",
        who.agent, trip.class, trip.budget
    );
    let Breakers { store, db, .. } = &mut *guard;
    let records = crate::breaker::pause(shared, store, db, &trip, tool);
    Some(BreakerRefusal {
        code: codes::KILLED,
        message,
        reason: trip.reason().to_string(),
        records,
    })
}

fn time_text(unix_ns: i64) -> String {
    let secs = unix_ns / 1_000_000_000;
    let now = now_unix_ns() / 1_000_000_000;
    format!("unix time {secs} (in {} s)", (secs - now).max(0))
}

/// Makes the batch's decision records durable; returns each record's ticket.
fn commit_decisions(shared: &Shared, records: &mut Vec<NewRecord>) -> Result<Vec<Ticket>, String> {
    if records.is_empty() {
        return Ok(Vec::new());
    }
    // Result records waiting for a write ride along with the decisions.
    let mut results = lock(&shared.results);
    let n = records.len();
    // Sized once: a record is large, and growing the batch would copy them all.
    let mut batch: Vec<Submission> = Vec::with_capacity(n + results.len());
    batch.extend(records.drain(..).map(Submission::from));
    batch.append(&mut results);
    drop(results);
    match shared.audit.submit(batch) {
        Ok(tickets) => Ok(tickets.into_iter().take(n).collect()),
        Err(e) => {
            tracing::error!(error = %e, "audit write failed; refusing the batch");
            Err(e.to_string())
        }
    }
}

// === upstream → agent ===

fn upstream_to_agent<R: Read>(shared: &Shared, mut lines: LineReader<R>) -> std::io::Result<()> {
    let limits = Limits {
        max_frame_bytes: shared.opts.max_frame_bytes,
    };
    while let Some(line) = lines.next_line()? {
        if shared.finished.load(Ordering::SeqCst) {
            return Ok(());
        }
        let bytes = match line {
            Line::Frame(bytes) => bytes,
            Line::TooLong(len) => {
                tracing::warn!(len, "upstream frame over the size limit dropped");
                continue;
            }
        };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        // Most answers are only relayed: read their kind, id and outcome, checked as strictly
        // as a full parse; the content is read only where a list, a label or a cap needs it.
        let outline = match parse_outline(&bytes, &limits) {
            Ok(outline) => outline,
            Err(e) => {
                tracing::warn!(error = %e.message, "malformed frame from the upstream dropped");
                if let Some(id) = &e.id {
                    let entry = lock(&shared.in_flight).remove(id);
                    if let Some(entry) = entry {
                        queue_result(shared, id, &entry, airlock_audit::ResultStatus::Error);
                        shared
                            .agent_out
                            .write_blocking(&malformed_answer(id, &e.message))?;
                    }
                }
                continue;
            }
        };
        let mut answered = None;
        let out = match outline.kind() {
            FrameKind::Response { id } | FrameKind::ErrorResponse { id: Some(id) } => {
                let Some(entry) = lock(&shared.in_flight).remove(id) else {
                    tracing::warn!(%id, "upstream answered no request in flight; dropped");
                    continue;
                };
                let (out, status) = if needs_content(shared, id, &entry) {
                    match outline.frame(&limits) {
                        Ok(frame) => answer_for_agent(shared, &frame, id, &entry),
                        // The outline accepted it, so this cannot happen; fail closed anyway.
                        Err(e) => (
                            malformed_answer(id, &e.message),
                            Some(airlock_audit::ResultStatus::Error),
                        ),
                    }
                } else {
                    relayed_answer(&outline, &entry)
                };
                answered = status.map(|status| (id, entry, status));
                out
            }
            FrameKind::Request { id, .. } => {
                lock(&shared.server_requests).insert(id.clone());
                with_newline(outline.raw())
            }
            FrameKind::Notification { .. } | FrameKind::ErrorResponse { id: None } => {
                with_newline(outline.raw())
            }
        };
        let written = shared.agent_out.write_blocking(&out);
        // The result record is built after the answer is on its way: it is not what the agent
        // waits for, and it is queued whether or not the write worked.
        if let Some((id, entry, status)) = answered {
            queue_result(shared, id, &entry, status);
        }
        written?;
    }
    Ok(())
}

/// Whether the gateway must read an answer's content: a list it filters, a result an
/// information-flow rule may label, or one whose items a breaker counts.
fn needs_content(shared: &Shared, id: &Id, entry: &InFlight) -> bool {
    match &entry.expect {
        Expect::List(_) => true,
        Expect::Plain => false,
        Expect::Act { target } => {
            let labels = shared.flow.as_ref().is_some_and(|flow| {
                entry.method == "tools/call" && flow.may_label(&shared.who.server, target)
            });
            labels || crate::breaker::counts_result(shared, id)
        }
    }
}

/// An answer nothing reads but its outcome: relayed as it came, with its result status.
fn relayed_answer(
    outline: &Outline,
    entry: &InFlight,
) -> (Vec<u8>, Option<airlock_audit::ResultStatus>) {
    let status = matches!(entry.expect, Expect::Act { .. })
        .then(|| act_status(outline.kind(), outline.result_is_error()));
    (with_newline(outline.raw()), status)
}

/// The result record's status of an acting call's answer.
fn act_status(kind: &FrameKind, result_is_error: bool) -> airlock_audit::ResultStatus {
    match kind {
        FrameKind::ErrorResponse { .. } => airlock_audit::ResultStatus::Error,
        _ if result_is_error => airlock_audit::ResultStatus::IsError,
        _ => airlock_audit::ResultStatus::Ok,
    }
}

/// What the agent gets for an answer from the upstream that is not valid JSON-RPC.
fn malformed_answer(id: &Id, why: &str) -> Vec<u8> {
    let message = format!("the upstream server sent a malformed answer: {why}");
    error_line(Some(id), codes::UPSTREAM_UNAVAILABLE, &message)
}

/// The bytes the agent gets for an answer to one of its requests, and the status its result
/// record gets (for a call that acts).
fn answer_for_agent(
    shared: &Shared,
    frame: &Frame,
    id: &Id,
    entry: &InFlight,
) -> (Vec<u8>, Option<airlock_audit::ResultStatus>) {
    match &entry.expect {
        Expect::Act { target } => {
            let status = act_status(frame.kind(), frame.result_is_error());
            // Counted first: the call has happened upstream, whether or not its result is withheld.
            let pause = crate::breaker::count_result(shared, id, frame, target);
            lock(&shared.results).extend(pause.into_iter().map(Submission::from));
            if status == airlock_audit::ResultStatus::Ok && entry.method == "tools/call" {
                let args = entry.flow_args.as_ref().unwrap_or(&serde_json::Value::Null);
                if let Err(e) = crate::flow::observe(shared, target, args, frame) {
                    // Fail closed: the result may carry what the label marks.
                    tracing::error!(error = %e, "cannot record an information-flow label");
                    let out = error_line(
                        Some(id),
                        codes::DENIED,
                        &format!("Airlock withheld the result: its information-flow label could not be recorded ({e})"),
                    );
                    return (out, Some(airlock_audit::ResultStatus::Withheld));
                }
            }
            (with_newline(frame.raw()), Some(status))
        }
        Expect::List(kind) => {
            let out = match filter_list(
                &shared.policy.current(),
                &shared.who,
                *kind,
                frame.value(),
                &|name| {
                    *kind == crate::route::ListKind::Tools
                        && crate::kill::tool_kill(&shared.kills(), shared, name).is_some()
                },
            ) {
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
            };
            (out, None)
        }
        Expect::Plain => (with_newline(frame.raw()), None),
    }
}

fn queue_result(shared: &Shared, id: &Id, entry: &InFlight, status: airlock_audit::ResultStatus) {
    let Expect::Act { target } = &entry.expect else {
        return;
    };
    crate::breaker::forget(shared, id);
    let mut record = base_record(
        &shared.who,
        &shared.policy.current(),
        &entry.method,
        Some(target),
        Some(id),
    );
    record.kind = airlock_audit::RecordKind::Result;
    record.status = Some(status);
    record.duration_us =
        Some(u64::try_from(entry.started.elapsed().as_micros()).unwrap_or(u64::MAX));
    lock(&shared.results).push(Submission {
        record,
        refers_to: entry.call,
    });
    shared.results_ready.notify_one();
}

/// Commits queued result records that no decision commit took along. Results are not what the
/// gateway acts on (the decision is, and it is durable before the call moves), so they wait a
/// moment: under load they ride along with the next decision's commit for free.
async fn flush_results(shared: Arc<Shared>) {
    loop {
        shared.results_ready.notified().await;
        tokio::time::sleep(RESULT_FLUSH_DELAY).await;
        commit_results(&shared);
    }
}

fn commit_results(shared: &Shared) {
    let records: Vec<Submission> = std::mem::take(&mut *lock(&shared.results));
    if records.is_empty() {
        return;
    }
    let count = records.len();
    if let Err(e) = shared.audit.submit(records) {
        tracing::error!(error = %e, count, "audit append of result records failed");
    }
}

/// Answers every request still in flight with an error: the upstream is gone.
async fn fail_in_flight(shared: &Shared, why: &str) {
    let entries: Vec<(Id, InFlight)> = lock(&shared.in_flight).drain().collect();
    let mut out = Vec::new();
    for (id, entry) in &entries {
        queue_result(shared, id, entry, airlock_audit::ResultStatus::UpstreamDied);
        out.extend(error_line(
            Some(id),
            codes::UPSTREAM_UNAVAILABLE,
            &format!("Airlock could not complete `{}`: {why}", entry.method),
        ));
    }
    if !out.is_empty() {
        let _ = write_agent(shared, &out).await;
    }
    let mut record = base_record(
        &shared.who,
        &shared.policy.current(),
        "upstream/exit",
        None,
        None,
    );
    record.kind = airlock_audit::RecordKind::UpstreamExit;
    record.status = Some(airlock_audit::ResultStatus::UpstreamDied);
    record.time_unix_ns = now_unix_ns();
    record.detail = Some(json!({ "why": why, "failed_requests": entries.len() }));
    lock(&shared.results).push(Submission::from(record));
}

/// Writes to the upstream from an async task (the frame thread writes blocking).
async fn write_upstream(shared: &Shared, bytes: &[u8]) -> std::io::Result<()> {
    shared.upstream_in.write(bytes).await
}

/// Answers calls the upstream has sat on for longer than the call timeout, and tells the
/// upstream to stop working on them.
async fn expire_calls(shared: Arc<Shared>) {
    let timeout = shared.opts.call_timeout;
    let mut tick = tokio::time::interval(Duration::from_millis(250).min(timeout));
    loop {
        tick.tick().await;
        let expired: Vec<(Id, InFlight)> = {
            let mut in_flight = lock(&shared.in_flight);
            let ids: Vec<Id> = in_flight
                .iter()
                .filter(|(_, e)| e.started.elapsed() >= timeout)
                .map(|(id, _)| id.clone())
                .collect();
            ids.into_iter()
                .filter_map(|id| in_flight.remove(&id).map(|e| (id, e)))
                .collect()
        };
        for (id, entry) in expired {
            queue_result(&shared, &id, &entry, airlock_audit::ResultStatus::Timeout);
            let line = cancel_line(&id, "timed out in Airlock");
            if let Err(e) = write_upstream(&shared, &line).await {
                tracing::warn!(error = %e, "cannot send the cancellation upstream");
            }
            let message = format!(
                "the upstream server did not answer `{}` within {} s; the call was cancelled",
                entry.method,
                timeout.as_secs()
            );
            let out = error_line(Some(&id), codes::UPSTREAM_TIMEOUT, &message);
            if write_agent(&shared, &out).await.is_err() {
                return;
            }
        }
    }
}

/// Writes to the agent from an async task (the frame thread writes blocking).
async fn write_agent(shared: &Shared, bytes: &[u8]) -> std::io::Result<()> {
    shared.agent_out.write(bytes).await
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

pub(crate) fn error_line(id: Option<&Id>, code: i32, message: &str) -> Vec<u8> {
    let mut out = error_response(id, code, message, None);
    out.push(b'\n');
    out
}

/// The upstream's stderr is its log: it goes to Airlock's log, never to the agent.
fn log_stderr<R: Read>(mut lines: LineReader<R>) {
    while let Ok(Some(line)) = lines.next_line() {
        match line {
            Line::Frame(bytes) => {
                tracing::info!(target: "upstream", "{}", String::from_utf8_lossy(&bytes));
            }
            Line::TooLong(len) => tracing::info!(target: "upstream", "[{len} bytes of stderr]"),
        }
    }
}
