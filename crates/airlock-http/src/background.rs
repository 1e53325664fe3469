//! What keeps every link current between requests: kills and revocations (read on every store
//! notification and every second), held calls (re-read on a wake-up and twice a second),
//! calls the upstream sits on past their timeout, idle sessions, and the audit records queued
//! for the next commit. One task of each for the whole gateway, not one per session: an idle
//! session costs memory, never a timer.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use airlock_control::{Kill, KillStore, Listener};
use airlock_pipeline::{KillEffect, Pipeline};

use crate::link::Link;
use crate::McpGateway;

const KILL_REREAD: Duration = Duration::from_secs(1);
const HELD_REREAD: Duration = Duration::from_millis(500);
const EXPIRE_EVERY: Duration = Duration::from_millis(250);
const IDLE_CHECK: Duration = Duration::from_secs(10);
/// How long a queued record may wait for a decision commit to ride along with.
const RESULT_FLUSH_DELAY: Duration = Duration::from_millis(20);

/// Starts the gateway's tasks.
pub(crate) fn spawn(gw: &Arc<McpGateway>) -> Result<(), String> {
    let db = gw.parts.config.audit.path.clone();
    // Bound before the kill state is first read, so no kill is missed in between.
    let listener = Listener::bind(&db)
        .map_err(|e| format!("cannot listen for kills next to {}: {e}", db.display()))?;
    let kills = KillStore::open(&db)
        .and_then(|s| s.active())
        .map_err(|e| format!("cannot read the kill state: {e}"))?;
    *crate::lock(&gw.kills) = Arc::new(kills);
    tokio::spawn(watch_store(gw.clone(), listener));
    tokio::spawn(review_held(gw.clone()));
    tokio::spawn(expire(gw.clone()));
    tokio::spawn(end_idle(gw.clone()));
    Ok(())
}

fn links(gw: &McpGateway) -> Vec<Arc<Link>> {
    gw.sessions().iter().flat_map(|s| s.links()).collect()
}

/// Kills and revocations: the store says something changed (or a second passed).
async fn watch_store(gw: Arc<McpGateway>, mut listener: Listener) {
    let db = gw.parts.config.audit.path.clone();
    let mut store = match tokio::task::spawn_blocking(move || KillStore::open(&db)).await {
        Ok(Ok(s)) => Some(s),
        _ => None,
    };
    loop {
        let read = match store.take() {
            Some(s) => tokio::task::spawn_blocking(move || {
                let kills = s.active();
                (s, kills)
            })
            .await
            .ok(),
            None => None,
        };
        let kills = match read {
            Some((s, Ok(kills))) => {
                store = Some(s);
                gw.metrics.store_ok.store(true, Ordering::Relaxed);
                kills
            }
            other => {
                if let Some((s, _)) = other {
                    store = Some(s);
                }
                // Fail closed: without the kill state no call may pass.
                gw.metrics.store_ok.store(false, Ordering::Relaxed);
                tracing::error!("cannot read the kill state; every session is stopped");
                vec![airlock_pipeline::kill::emergency_kill(
                    "the kill state cannot be read",
                )]
            }
        };
        *crate::lock(&gw.kills) = Arc::new(kills.clone());
        // A stopped human or agent keeps no upstream token: after a resume, it is exchanged
        // anew (and the token service may refuse it by then).
        for k in kills.iter().filter(|k| k.resumed_ns.is_none()) {
            match &k.target {
                airlock_control::KillTarget::Human(h) => {
                    gw.parts.broker.revoke_human(h);
                }
                airlock_control::KillTarget::Agent(a) => {
                    gw.parts.broker.revoke_agent(a);
                }
                _ => {}
            }
        }
        for link in links(&gw) {
            if let Some(effect) = link.pipeline.set_kills(kills.clone()) {
                if let Some(kill) = link.pipeline.stopped() {
                    finish_kill(&gw, &link, kill, effect).await;
                }
            }
        }
        // Revoked agents: their sessions end now, whatever they are doing.
        let auth = gw.parts.auth.clone();
        let _ = tokio::task::spawn_blocking(move || auth.reload()).await;
        for s in gw.sessions() {
            if !gw.parts.auth.still_valid(&s.principal) {
                tracing::info!(agent = %s.principal.agent, session = %s.id, "the agent's credential was revoked; its session ends");
                revoke(&gw, &s).await;
            }
        }
        let _ = tokio::time::timeout(KILL_REREAD, listener.recv()).await;
        // A wake-up may also be a human's decision on a held call.
        gw.held_changed.notify_one();
    }
}

/// Ends a revoked agent's session the way a kill would: its calls in flight are cancelled
/// upstream and answered, its held calls' requests are denied, then the session ends.
async fn revoke(gw: &McpGateway, session: &Arc<crate::session::Session>) {
    let kill = Kill {
        id: 0,
        target: airlock_control::KillTarget::Agent(session.principal.agent.clone()),
        reason: "the agent's credential was revoked".into(),
        by: "airlock".into(),
        origin: airlock_control::KillOrigin::Airlock,
        created_ns: airlock_audit::now_unix_ns(),
        resumed_ns: None,
        resumed_by: None,
    };
    for link in session.links() {
        if let Some(effect) = link.pipeline.apply_kill(&kill) {
            finish_kill(gw, &link, kill.clone(), effect).await;
        }
    }
    gw.end_session(session, "the agent's credential was revoked")
        .await;
}

/// Answers what the kill ends, kills the upstream process, ends the held calls' requests.
async fn finish_kill(gw: &McpGateway, link: &Arc<Link>, kill: Kill, effect: KillEffect) {
    gw.metrics.kill_applied();
    let held = effect.held;
    link.dispatch(effect.output, None).await;
    link.kill_process();
    let p = link.pipeline.clone();
    let _ = tokio::task::spawn_blocking(move || {
        p.end_held_for_kill(&kill, held);
        p.audit().flush();
    })
    .await;
}

/// Held calls: approved ones go on, denied and expired ones are answered.
async fn review_held(gw: Arc<McpGateway>) {
    loop {
        let _ = tokio::time::timeout(HELD_REREAD, gw.held_changed.notified()).await;
        for link in links(&gw) {
            if link.pipeline.held_count() == 0 {
                continue;
            }
            let Some(stores) = link.pipeline.stores().cloned() else {
                continue;
            };
            let p = link.pipeline.clone();
            match stores.run(move |s| p.review_held(s)).await {
                Ok(out) if !out.is_empty() => link.dispatch(out, None).await,
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "cannot review held calls"),
            }
        }
    }
}

/// Calls past their timeout are answered with an error.
async fn expire(gw: Arc<McpGateway>) {
    let mut tick = tokio::time::interval(EXPIRE_EVERY);
    loop {
        tick.tick().await;
        for link in links(&gw) {
            let out = link.pipeline.expire();
            if !out.is_empty() {
                link.dispatch(out, None).await;
            }
        }
    }
}

/// Sessions nobody used for the idle timeout end.
async fn end_idle(gw: Arc<McpGateway>) {
    let mut tick = tokio::time::interval(IDLE_CHECK);
    loop {
        tick.tick().await;
        let limit = gw.limits.idle_timeout.as_secs();
        for s in gw.sessions() {
            let busy = s.links().iter().any(|l| l.pipeline.calls_known() > 0);
            if !busy && s.idle_secs() >= limit {
                gw.end_session(&s, "the session was idle too long").await;
            }
        }
    }
}

/// Commits a link's queued records (results, labels) that no decision commit took along.
pub(crate) async fn flush_queued(pipeline: Arc<Pipeline>) {
    loop {
        pipeline.audit().queued_ready.notified().await;
        tokio::time::sleep(RESULT_FLUSH_DELAY).await;
        let p = pipeline.clone();
        let _ = tokio::task::spawn_blocking(move || p.audit().flush()).await;
    }
}
