//! The kill switch, as one gateway applies it.
//!
//! Kills live in the store (`airlock kill` writes them there first, so they survive restarts)
//! and reach this process through a datagram socket ([`airlock_control::Listener`]), with a
//! once-a-second re-read as the fallback for a lost notification. A kill of this agent, this
//! session or everything cancels what is in flight (a `notifications/cancelled` upstream and an
//! error to the agent), kills the upstream's whole process group, and from then on every
//! request is refused. A kill of one tool hides and refuses that tool only.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use airlock_control::{matching, Kill, KillStore, KillTarget, Listener};

use crate::codes;
use crate::gateway::{cancel_line, error_line, Shared};

/// How long a kill waits on a peer that does not read before it moves on.
const WRITE_GRACE: Duration = Duration::from_millis(20);
/// How often the kill state is re-read even without a notification.
const FALLBACK_REREAD: Duration = Duration::from_secs(1);

/// The message an agent gets for a refused request.
pub(crate) fn refusal(kill: &Kill) -> String {
    let what = match &kill.target {
        KillTarget::All => "every agent is stopped".to_string(),
        KillTarget::Agent(a) => format!("agent {a} is stopped"),
        KillTarget::Session(s) => format!("session {s} is stopped"),
        KillTarget::Tool { server, tool } => format!("tool {server}/{tool} is stopped"),
    };
    format!(
        "Airlock refused the request: {what} by {} ({}); a human must resume it",
        kill.by, kill.reason
    )
}

/// The kill that stops this whole gateway (agent, session or everything), if any.
pub(crate) fn gateway_kill<'a>(kills: &'a [Kill], shared: &Shared) -> Option<&'a Kill> {
    matching(
        kills,
        &shared.who.agent,
        Some(&shared.who.session),
        None,
        None,
    )
}

/// The kill that stops one tool (or the whole gateway) for this agent, if any.
pub(crate) fn tool_kill<'a>(kills: &'a [Kill], shared: &Shared, tool: &str) -> Option<&'a Kill> {
    matching(
        kills,
        &shared.who.agent,
        Some(&shared.who.session),
        Some(&shared.who.server),
        Some(tool),
    )
}

/// Keeps the shared kill state current and applies a kill that stops this gateway.
pub(crate) async fn watch(shared: Arc<Shared>, db: PathBuf, mut listener: Listener) {
    let store = match KillStore::open(&db) {
        Ok(store) => store,
        Err(e) => {
            // Fail closed: without the kill state, this gateway cannot honour a kill.
            tracing::error!(error = %e, "cannot read the kill state; stopping the gateway");
            apply(&shared, &emergency_kill(&e.to_string())).await;
            return;
        }
    };
    loop {
        match store.active() {
            Ok(kills) => {
                let stop = gateway_kill(&kills, &shared).cloned();
                shared.set_kills(kills);
                if let Some(kill) = stop {
                    apply(&shared, &kill).await;
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot read the kill state; stopping the gateway");
                apply(&shared, &emergency_kill(&e.to_string())).await;
            }
        }
        let _ = tokio::time::timeout(FALLBACK_REREAD, listener.recv()).await;
        // A wake-up may also be a human's decision on a held call.
        shared.approvals_changed.notify_one();
    }
}

/// A kill that no human issued: the kill state could not be read.
fn emergency_kill(why: &str) -> Kill {
    Kill {
        id: 0,
        target: KillTarget::All,
        reason: format!("the kill state could not be read ({why})"),
        by: "airlock".into(),
        origin: airlock_control::KillOrigin::Airlock,
        created_ns: airlock_audit::now_unix_ns(),
        resumed_ns: None,
        resumed_by: None,
    }
}

/// Stops this gateway: cancels what is in flight and kills the upstream's process tree. Runs
/// once; later calls find the gateway already stopped.
pub(crate) async fn apply(shared: &Shared, kill: &Kill) {
    if !shared.mark_stopped(kill) {
        return;
    }
    tracing::warn!(kill = kill.id, reason = %kill.reason, by = %kill.by, "kill received: stopping");
    let in_flight = shared.take_in_flight();
    let message = refusal(kill);
    let mut upstream = Vec::new();
    let mut agent = Vec::new();
    for (id, entry) in &in_flight {
        upstream.extend(cancel_line(id, "stopped by Airlock"));
        agent.extend(error_line(Some(id), codes::KILLED, &message));
        shared.queue_result(id, entry, airlock_audit::ResultStatus::Killed);
    }
    // Calls held for a human end too; the server never saw them.
    let (held_errors, held) = crate::hold::take_all(shared, codes::KILLED, &message);
    agent.extend(held_errors);
    // Tell the server to stop, then make sure it does: its whole process group goes. A server
    // (or agent) that stopped reading cannot hold the kill up: each write gets a short grace.
    let _ = tokio::time::timeout(WRITE_GRACE, shared.write_upstream(&upstream)).await;
    crate::upstream::signal_group(shared.upstream_pid, nix::sys::signal::Signal::SIGKILL);
    shared.commit_results();
    if !agent.is_empty() {
        let _ = tokio::time::timeout(WRITE_GRACE, shared.write_agent(&agent)).await;
    }
    // Last: the held calls' requests, in the audit database (whose lock may be busy).
    if !held.is_empty() {
        crate::hold::end_for_kill(shared, kill, held);
        shared.commit_results();
    }
}
