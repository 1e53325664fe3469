//! Audit records for control events, so the CLI, `serve` and the gateway
//! write the same shape: kind `kill`, `resume` or `breaker`, with `detail`
//! holding scope, target, reason and who.

use airlock_audit::{Decision, NewRecord, Reason, RecordKind};
use serde_json::json;

use crate::breakers::Trip;
use crate::kill::{Kill, KillTarget};

/// The record of a committed kill.
pub fn kill_record(kill: &Kill) -> NewRecord {
    let r = NewRecord::at(RecordKind::Kill, kill.created_ns)
        .decision(Decision::Deny)
        .reasons([Reason::Text(kill.reason.clone())])
        .detail(&json!({
            "kill_id": kill.id,
            "scope": kill.target.scope(),
            "target": kill.target.target(),
            "reason": kill.reason,
            "by": kill.by,
        }));
    with_subject(r, &kill.target)
}

/// The record of a resume of `target` by `by` that ended `resumed` kills.
pub fn resume_record(target: &KillTarget, by: &str, resumed: usize) -> NewRecord {
    let r = NewRecord::now(RecordKind::Resume).detail(&json!({
        "scope": target.scope(),
        "target": target.target(),
        "by": by,
        "resumed": resumed,
    }));
    with_subject(r, target)
}

/// The record of a breaker trip that paused `agent`.
pub fn trip_record(agent: &str, trip: &Trip, server: &str, tool: &str) -> NewRecord {
    NewRecord::now(RecordKind::Breaker)
        .agent(agent)
        .server(server)
        .target(tool)
        .decision(Decision::Deny)
        .reasons([trip.reason()])
        .detail(&json!({
            "class": trip.class,
            "budget": trip.budget,
            "resets_at_ns": trip.resets_at_ns,
            "by": "airlock",
        }))
}

/// Fills the columns `audit query --agent/--tool` filter on.
fn with_subject(r: NewRecord, target: &KillTarget) -> NewRecord {
    match target {
        KillTarget::Agent(a) => r.agent(a.clone()),
        KillTarget::Session(s) => r.session(s.clone()),
        KillTarget::Tool { server, tool } => r.server(server.clone()).target(tool.clone()),
        KillTarget::Human(h) => r.on_behalf_of(h.clone()),
        KillTarget::All => r,
    }
}
