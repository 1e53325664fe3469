//! The stdio transport around the call pipeline: agent ⇄ Airlock ⇄ upstream server.
//!
//! Two threads move frames, one per direction, so that a slow reader on one side never stalls
//! the other (two full pipes waiting on each other would deadlock). They read and write with
//! blocking system calls, as a plain relay does (see [`crate::stdio`] for why), and hand each
//! frame to the pipeline ([`airlock_pipeline::Pipeline`]), which judges it and says what to
//! write. The agent→upstream thread hands over every frame already buffered at once, so a burst
//! of calls shares one audit commit. Timeouts, kills, held calls and the flush of queued
//! records are async tasks; their store work runs on the store thread or the blocking pool,
//! never on the runtime.

use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use airlock_audit::{AuditWriter, Durability};
use airlock_control::{KillStore, Listener};
use airlock_pipeline::{
    ControlParts, Counters, KillEffect, Line, Output, Pipeline, PipelineParts, Stores,
};
use tokio::sync::oneshot;

use crate::lines::LineReader;
use crate::stdio::{AgentIo, Outlet, Sink, Source};
use crate::upstream::{shut_down, signal_group, Upstream};
use crate::{GatewayError, GatewayOptions, Outcome, PolicyHandle};

/// The most frames judged before one audit commit.
const MAX_BATCH: usize = 256;
/// How long a queued record may wait for a decision commit to ride along with.
const RESULT_FLUSH_DELAY: Duration = Duration::from_millis(20);
/// How long the upstream gets to exit after its stdin closes, before SIGTERM, then SIGKILL.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// How long a kill waits on a peer that does not read before it moves on.
const WRITE_GRACE: Duration = Duration::from_millis(20);
/// How often the kill state is re-read even without a notification.
const KILL_REREAD: Duration = Duration::from_secs(1);
/// How often held calls are re-read without a wake-up (expiry, a lost datagram).
const HELD_REREAD: Duration = Duration::from_millis(500);

/// The kill switch, the breakers and the flow rules, as this gateway takes part in them.
pub struct Control {
    /// The store file (the audit database) that holds kills and breaker counters.
    pub db: PathBuf,
    pub durability: Durability,
    /// Bound before the kill state was read, so no kill is missed in between.
    pub listener: Listener,
}

/// The transport's half of a session: the pipeline, and where its output goes.
struct Transport {
    pipeline: Arc<Pipeline>,
    agent_out: Outlet,
    /// The upstream's stdin; closed when the agent goes away.
    upstream_in: Outlet,
    /// Set once the gateway is winding down after the upstream went away: the frame threads
    /// (which cannot be aborted like a task) stop at their next frame.
    finished: AtomicBool,
    upstream_pid: Option<u32>,
    counters: Option<(PathBuf, Durability)>,
}

impl Transport {
    fn counters(&self) -> Counters {
        match &self.counters {
            Some((db, durability)) => Counters::new(db, *durability),
            None => Counters::none(),
        }
    }

    /// Writes an output from a frame thread: upstream first (a write that fails answers what it
    /// carried), then the agent.
    fn write_blocking(&self, mut out: Output) -> std::io::Result<()> {
        if out.announce {
            self.pipeline.announce();
        }
        if !out.upstream.is_empty() {
            if let Err(e) = self.upstream_in.write_blocking(&out.upstream) {
                // The upstream is gone (killed, crashed): answer what this output forwarded and
                // keep reading, so every later request still gets its refusal.
                out.agent
                    .extend(self.pipeline.unforwarded(&out.forwarded, &e).agent);
            }
        }
        if !out.agent.is_empty() {
            self.agent_out.write_blocking(&out.agent)?;
        }
        Ok(())
    }

    /// Writes an output from an async task.
    async fn write(&self, mut out: Output) -> std::io::Result<()> {
        if out.announce {
            self.pipeline.announce();
        }
        if !out.upstream.is_empty() {
            if let Err(e) = self.upstream_in.write(&out.upstream).await {
                out.agent
                    .extend(self.pipeline.unforwarded(&out.forwarded, &e).agent);
            }
        }
        if !out.agent.is_empty() {
            self.agent_out.write(&out.agent).await?;
        }
        Ok(())
    }
}

/// Runs the gateway until the agent or the upstream goes away.
pub(crate) async fn run(
    opts: GatewayOptions,
    policy: PolicyHandle,
    audit: Arc<AuditWriter>,
    agent: AgentIo,
    upstream: Upstream,
    control: Option<Control>,
) -> Result<Outcome, GatewayError> {
    let Upstream {
        mut child,
        stdin,
        stdout,
        stderr,
        pid,
    } = upstream;
    let (parts, listener, counters) = match control {
        Some(c) => {
            let (parts, counters) = control_parts(&opts, &c).await?;
            (Some(parts), Some(c.listener), Some(counters))
        }
        None => (None, None, None),
    };
    let pipeline = Arc::new(Pipeline::new(PipelineParts {
        options: opts,
        policy,
        audit,
        control: parts,
    }));
    let handle = tokio::runtime::Handle::current();
    let to_upstream_sink = Sink::child_pipe(stdin.into_owned_fd()?)?;
    let from_upstream = Source::child_pipe(stdout.into_owned_fd()?);
    let upstream_log = Source::child_pipe(stderr.into_owned_fd()?);
    let t = Arc::new(Transport {
        pipeline: pipeline.clone(),
        agent_out: Outlet::new(agent.writer, handle.clone()),
        upstream_in: Outlet::new(to_upstream_sink, handle.clone()),
        finished: AtomicBool::new(false),
        upstream_pid: pid,
        counters,
    });
    let watcher = listener.map(|l| tokio::spawn(watch_kills(t.clone(), l)));

    let max = pipeline.options().max_frame_bytes;
    let agent_lines = LineReader::new(agent.reader.into_reader(handle.clone()), max);
    let upstream_lines = LineReader::new(from_upstream.into_reader(handle.clone()), max);
    let mut to_upstream = spawn_loop("airlock-agent-in", {
        let t = t.clone();
        move || agent_to_upstream(&t, agent_lines)
    })?;
    let mut to_agent = spawn_loop("airlock-upstream-in", {
        let t = t.clone();
        move || upstream_to_agent(&t, upstream_lines)
    })?;
    let stderr_lines = LineReader::new(upstream_log.into_reader(handle), 64 * 1024);
    let redactor = pipeline.options().redactor.clone();
    spawn_loop("airlock-upstream-log", move || {
        log_stderr(stderr_lines, redactor.as_deref());
        Ok(())
    })?;
    let flusher = tokio::spawn(flush_queued(pipeline.clone()));
    let sweeper = tokio::spawn(expire_calls(t.clone()));
    let holds = tokio::spawn(watch_held(t.clone()));

    // Who went first: the agent (an orderly end), or the upstream (its exit status).
    let upstream_status = tokio::select! {
        agent_done = &mut to_upstream => {
            // The agent closed its side: close the upstream's stdin, give the server time to
            // answer what is in flight and exit, then end it.
            if let Ok(Err(e)) = agent_done {
                tracing::warn!(error = %e, "reading from the agent failed");
            }
            t.upstream_in.close().await;
            // Its last answers are read until its stdout closes, or until it exits (a child it
            // forked may hold that stdout open; the group's SIGKILL below ends that child).
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, async {
                tokio::select! {
                    _ = &mut to_agent => {}
                    _ = child.wait() => {
                        let _ = tokio::time::timeout(Duration::from_millis(100), &mut to_agent).await;
                    }
                }
            })
            .await;
            let status = shut_down(&mut child, pid, SHUTDOWN_GRACE).await.ok();
            tracing::info!(?status, "agent closed the session; upstream stopped");
            None
        }
        exited = child.wait() => {
            // The server process itself is gone; a child it forked may still hold its stdout,
            // so do not wait for end-of-file. Let what it wrote drain, then end its group.
            let _ = tokio::time::timeout(Duration::from_millis(100), &mut to_agent).await;
            signal_group(pid, nix::sys::signal::Signal::SIGKILL);
            Some(exited.map_or_else(|e| e.to_string(), |s| s.to_string()))
        }
        _ = &mut to_agent => {
            let status = shut_down(&mut child, pid, Duration::from_millis(500)).await.ok();
            Some(status.map_or_else(|| "unknown status".to_string(), |s| s.to_string()))
        }
    };
    let outcome = match upstream_status {
        None => Outcome::AgentClosed,
        Some(_) if pipeline.stopped().is_some() => {
            // Killed: the upstream is gone on purpose, and every request is refused until the
            // agent goes away (`finish` reports the kill).
            let _ = (&mut to_upstream).await;
            Outcome::AgentClosed
        }
        Some(status) => {
            // The frame threads stop at their next frame; nothing more goes upstream. (A thread
            // stuck writing to a pipe that a stray process holds keeps the lock: do not wait.)
            t.finished.store(true, Ordering::SeqCst);
            let _ = tokio::time::timeout(Duration::from_millis(100), t.upstream_in.close()).await;
            let out = pipeline.upstream_gone(&format!("the upstream server exited ({status})"));
            let _ = t.write(out).await;
            Outcome::UpstreamExited { status }
        }
    };
    holds.abort();
    flusher.abort();
    sweeper.abort();
    if let Some(w) = watcher {
        w.abort();
    }
    // Nobody is left to answer: what the agent was waiting on is withdrawn.
    let ending = pipeline.clone();
    let _ = tokio::task::spawn_blocking(move || ending.end_session("the agent went away")).await;
    Ok(match pipeline.stopped() {
        Some(kill) => Outcome::Killed {
            reason: airlock_pipeline::kill::refusal(&kill),
        },
        None => outcome,
    })
}

/// Opens the stores (on their own thread) and reads the labels the session starts with.
async fn control_parts(
    opts: &GatewayOptions,
    c: &Control,
) -> Result<(ControlParts, (PathBuf, Durability)), GatewayError> {
    let (db, durability) = (c.db.clone(), c.durability);
    let stores = tokio::task::spawn_blocking(move || Stores::start(&db, durability))
        .await
        .map_err(|e| GatewayError::Io(std::io::Error::other(e.to_string())))?
        .map_err(|e| GatewayError::Io(std::io::Error::other(e)))?;
    let (agent, session) = (opts.identity.agent.clone(), opts.identity.session.clone());
    let labels = stores
        .run(move |s| s.labels.labels(&agent, &session))
        .await
        .map_err(|e| GatewayError::Io(std::io::Error::other(e.to_string())))?
        .map_err(|e| {
            GatewayError::Io(std::io::Error::other(format!(
                "cannot read the information-flow labels: {e}"
            )))
        })?;
    Ok((
        ControlParts {
            db: c.db.clone(),
            stores,
            labels,
        },
        (c.db.clone(), c.durability),
    ))
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

/// agent → upstream: every frame already buffered goes to the pipeline as one batch.
fn agent_to_upstream<R: Read>(t: &Transport, mut lines: LineReader<R>) -> std::io::Result<()> {
    let mut counters = t.counters();
    while let Some(line) = lines.next_line()? {
        if t.finished.load(Ordering::SeqCst) {
            return Ok(());
        }
        let mut batch: Vec<Line> = vec![line];
        while batch.len() < MAX_BATCH && lines.has_buffered_line() {
            if let Some(line) = lines.next_line()? {
                batch.push(line);
            }
        }
        let out = t.pipeline.agent_batch(&mut counters, batch);
        t.write_blocking(out)?;
    }
    Ok(())
}

/// upstream → agent: each frame through the response stages.
fn upstream_to_agent<R: Read>(t: &Transport, mut lines: LineReader<R>) -> std::io::Result<()> {
    let mut counters = t.counters();
    while let Some(line) = lines.next_line()? {
        if t.finished.load(Ordering::SeqCst) {
            return Ok(());
        }
        let out = t.pipeline.upstream_line(&mut counters, line);
        t.write_blocking(out)?;
    }
    Ok(())
}

/// Commits queued records (results, labels) that no decision commit took along. They are not
/// what the gateway acts on, so they wait a moment: under load they ride along for free.
async fn flush_queued(pipeline: Arc<Pipeline>) {
    loop {
        pipeline.audit().queued_ready.notified().await;
        tokio::time::sleep(RESULT_FLUSH_DELAY).await;
        let p = pipeline.clone();
        let _ = tokio::task::spawn_blocking(move || p.audit().flush()).await;
    }
}

/// Answers calls the upstream has sat on for longer than the call timeout.
async fn expire_calls(t: Arc<Transport>) {
    let timeout = t.pipeline.options().call_timeout;
    let mut tick = tokio::time::interval(Duration::from_millis(250).min(timeout));
    loop {
        tick.tick().await;
        let out = t.pipeline.expire();
        if !out.is_empty() && t.write(out).await.is_err() {
            return;
        }
    }
}

/// Keeps held calls moving: on every wake-up and tick, the store thread re-reads them.
async fn watch_held(t: Arc<Transport>) {
    let Some(stores) = t.pipeline.stores().cloned() else {
        return;
    };
    loop {
        let _ = tokio::time::timeout(HELD_REREAD, t.pipeline.held_changed.notified()).await;
        let p = t.pipeline.clone();
        let out = match stores.run(move |s| p.review_held(s)).await {
            Ok(out) => out,
            Err(e) => {
                tracing::error!(error = %e, "cannot review held calls");
                continue;
            }
        };
        if !out.is_empty() && t.write(out).await.is_err() {
            return;
        }
    }
}

/// Keeps the kill state current from the store and applies a kill that stops this gateway.
async fn watch_kills(t: Arc<Transport>, mut listener: Listener) {
    let Some(db) = t.counters.as_ref().map(|(db, _)| db.clone()) else {
        return;
    };
    let mut store = match tokio::task::spawn_blocking(move || KillStore::open(&db)).await {
        Ok(Ok(store)) => Some(store),
        Ok(Err(e)) => {
            // Fail closed: without the kill state, this gateway cannot honour a kill.
            tracing::error!(error = %e, "cannot read the kill state; stopping the gateway");
            apply_kill(&t, airlock_pipeline::kill::emergency_kill(&e.to_string())).await;
            return;
        }
        Err(e) => {
            apply_kill(&t, airlock_pipeline::kill::emergency_kill(&e.to_string())).await;
            return;
        }
    };
    loop {
        let Some(s) = store.take() else { return };
        let read = tokio::task::spawn_blocking(move || {
            let kills = s.active();
            (s, kills)
        })
        .await;
        match read {
            Ok((s, Ok(kills))) => {
                store = Some(s);
                let stop =
                    airlock_pipeline::kill::gateway_kill(&kills, t.pipeline.identity()).cloned();
                if let Some(effect) = t.pipeline.set_kills(kills) {
                    if let Some(kill) = stop {
                        finish_kill(&t, kill, effect).await;
                    }
                }
            }
            Ok((s, Err(e))) => {
                store = Some(s);
                tracing::error!(error = %e, "cannot read the kill state; stopping the gateway");
                apply_kill(&t, airlock_pipeline::kill::emergency_kill(&e.to_string())).await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot read the kill state; stopping the gateway");
                apply_kill(&t, airlock_pipeline::kill::emergency_kill(&e.to_string())).await;
                return;
            }
        }
        let _ = tokio::time::timeout(KILL_REREAD, listener.recv()).await;
        // A wake-up may also be a human's decision on a held call.
        t.pipeline.held_changed.notify_one();
    }
}

/// Stops this gateway for `kill` (once).
async fn apply_kill(t: &Arc<Transport>, kill: airlock_control::Kill) {
    if let Some(effect) = t.pipeline.apply_kill(&kill) {
        finish_kill(t, kill, effect).await;
    }
}

/// Tells the server to stop, makes sure it does (its whole process group goes), answers the
/// agent, then ends the held calls' requests in the store. A peer that stopped reading cannot
/// hold the kill up: each write gets a short grace.
async fn finish_kill(t: &Arc<Transport>, kill: airlock_control::Kill, effect: KillEffect) {
    let out = effect.output;
    let _ = tokio::time::timeout(WRITE_GRACE, t.upstream_in.write(&out.upstream)).await;
    signal_group(t.upstream_pid, nix::sys::signal::Signal::SIGKILL);
    if !out.agent.is_empty() {
        let _ = tokio::time::timeout(WRITE_GRACE, t.agent_out.write(&out.agent)).await;
    }
    // Last: the held calls' requests and the queued records (the audit lock may be busy).
    let p = t.pipeline.clone();
    let held = effect.held;
    let _ = tokio::task::spawn_blocking(move || {
        p.end_held_for_kill(&kill, held);
        p.audit().flush();
    })
    .await;
}

/// The upstream's stderr is its log: it goes to Airlock's log (its credentials redacted),
/// never to the agent.
fn log_stderr<R: Read>(mut lines: LineReader<R>, redactor: Option<&airlock_broker::Redactor>) {
    while let Ok(Some(line)) = lines.next_line() {
        match line {
            Line::Frame(bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                let text = match redactor {
                    Some(r) => r.redact_str(&text),
                    None => std::borrow::Cow::Borrowed(&*text),
                };
                tracing::info!(target: "upstream", "{text}");
            }
            Line::TooLong(len) => tracing::info!(target: "upstream", "[{len} bytes of stderr]"),
        }
    }
}
