//! The breaker stage (requests) and the count and caps stages (answers).
//!
//! Before a call moves, it is counted against the budgets of every class it falls in; a call
//! that would cross one pauses the agent and is refused. A class with
//! `items = "result:<pointer>"` learns how many items a call touched only when the answer
//! arrives, after the call has happened: the count stage reads them, and the caps stage pauses
//! the agent when a count crossed `max_items`, so that the next call is refused. Counting that
//! fails pauses the agent too: an uncounted result never leaves budget behind.
//!
//! A pause is a kill whose origin is the breaker: it survives restarts and stops every gateway
//! of the agent, this one at once.

use airlock_audit::{now_unix_ns, AirlockReason, NewRecord, Reason};
use airlock_control::{ControlStore, Matched, Trip, Verdict};
use airlock_protocol::Frame;
use serde_json::Value;

use crate::codes;
use crate::store::Counters;
use crate::Pipeline;

/// A call a breaker (or its store) refused.
pub(crate) struct Refusal {
    pub(crate) code: i32,
    pub(crate) message: String,
    pub(crate) reason: String,
    pub(crate) records: Vec<NewRecord>,
}

/// The breaker stage: counts the call against its budgets. Returns the classes that count
/// items from its result, or the refusal.
pub(crate) fn admit(
    p: &Pipeline,
    counters: &mut Counters,
    frame: &Frame,
    tool: &str,
) -> Result<Vec<Matched>, Refusal> {
    if p.stores.is_none() {
        return Ok(Vec::new());
    }
    let rules = p.policy.rules();
    let set = &rules.breakers;
    let fail = |e: String| {
        tracing::error!(error = %e, "breaker accounting failed; refusing the call");
        Refusal {
            code: codes::DENIED,
            message: format!("denied by Airlock: the breaker counters cannot be read ({e})"),
            reason: Reason::Airlock(AirlockReason::BreakerStoreError).to_string(),
            records: Vec::new(),
        }
    };
    let store = counters.store().map_err(|e| fail(e.to_string()))?;
    let empty = Value::Object(serde_json::Map::new());
    let args = frame
        .params()
        .and_then(|p| p.get("arguments"))
        .unwrap_or(&empty);
    let who = &p.who;
    let trip = match set.admit(store, &who.agent, &who.server, tool, args, now_unix_ns()) {
        Ok(Verdict::Pass { matched }) => {
            return Ok(matched
                .into_iter()
                .filter(|m| set.counts_result(&m.class))
                .collect())
        }
        Ok(Verdict::Trip(trip)) => trip,
        Err(e) => return Err(fail(e.to_string())),
    };
    let message = format!(
        "Airlock paused agent {}: the `{}` budget ({}) is used up (it resets at {}); \
         the call was refused and a human must resume the agent",
        who.agent,
        trip.class,
        trip.budget,
        time_text(trip.resets_at_ns)
    );
    let records = pause(p, store, &trip, tool);
    Err(Refusal {
        code: codes::KILLED,
        message,
        reason: trip.reason().to_string(),
        records,
    })
}

/// The count stage: the items the answer `result` of a call of `tool` reports, for every class
/// in `matched` that reads them; a count that crossed its cap is the trip the caps stage acts
/// on.
pub(crate) fn count(
    p: &Pipeline,
    counters: &mut Counters,
    matched: &[Matched],
    result: &Value,
) -> Option<Trip> {
    p.stores.as_ref()?;
    let rules = p.policy.rules();
    let set = &rules.breakers;
    let store = match counters.store() {
        Ok(store) => store,
        Err(e) => return Some(uncounted(matched.first()?.class.clone(), &e.to_string())),
    };
    for (class, n) in set.result_items(matched, result) {
        match set.record_items(store, &p.who.agent, &class, n, now_unix_ns()) {
            Ok(None) => continue,
            Ok(Some(trip)) => return Some(trip),
            Err(e) => return Some(uncounted(class, &e.to_string())),
        }
    }
    None
}

/// A count that failed: fail closed, as if the cap was crossed.
fn uncounted(class: String, why: &str) -> Trip {
    tracing::error!(error = %why, %class, "cannot count the items of a result; pausing the agent");
    Trip {
        budget: format!("items could not be counted ({why})"),
        resets_at_ns: now_unix_ns(),
        class,
    }
}

/// The caps stage: a count that crossed its cap pauses the agent.
pub(crate) fn cap(
    p: &Pipeline,
    counters: &mut Counters,
    trip: &Trip,
    tool: &str,
) -> Vec<NewRecord> {
    match counters.store() {
        Ok(store) => pause(p, store, trip, tool),
        Err(e) => {
            tracing::error!(error = %e, "cannot record the breaker pause");
            Vec::new()
        }
    }
}

/// The pause of the pipeline's agent after `trip`: the kill is committed, taken into this
/// pipeline's kill state at once (so its next request is refused without waiting for the
/// notification) and announced to every other gateway. Returns the audit records to write.
fn pause(p: &Pipeline, store: &mut ControlStore, trip: &Trip, tool: &str) -> Vec<NewRecord> {
    let who = &p.who;
    tracing::warn!(agent = %who.agent, class = %trip.class, budget = %trip.budget, "breaker tripped");
    let mut records = vec![airlock_control::trip_record(
        &who.agent,
        trip,
        &who.server,
        tool,
    )];
    match store.pause(&who.agent, trip) {
        Ok(kill) => {
            records.push(airlock_control::kill_record(&kill));
            // Like any kill, the pause denies the agent's pending approval requests; that is
            // store work nobody here waits for.
            if let Some(stores) = p.stores.as_ref() {
                let target = kill.target.clone();
                let by = kill.by.clone();
                let reason = kill.reason.clone();
                let audit = p.audit_handle();
                stores.spawn(move |s| match s.approvals.deny_for_kill(&target, &by, &reason) {
                    Ok(denied) => {
                        for r in airlock_approval::kill_denial_records(&denied) {
                            audit.queue(r, None);
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot deny the paused agent's approval requests")
                    }
                });
            }
            p.kills.add(kill);
            p.announce();
        }
        Err(e) => tracing::error!(error = %e, "cannot record the breaker pause"),
    }
    records
}

fn time_text(unix_ns: i64) -> String {
    let secs = unix_ns / 1_000_000_000;
    let now = now_unix_ns() / 1_000_000_000;
    format!("unix time {secs} (in {} s)", (secs - now).max(0))
}
