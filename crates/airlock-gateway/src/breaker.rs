//! Breakers as one gateway applies them, beyond the pre-call check in `check_breakers`: the
//! pause a trip causes, and item caps read from the upstream's result.
//!
//! A class with `items = "result:<pointer>"` learns how many items a call touched only when the
//! answer arrives, after the call has happened. The gateway remembers, per request id, which
//! such classes a call was counted in; when the answer comes, it counts the items, and a count
//! that crosses `max_items` pauses the agent (a kill with reason `breaker:<class>`) so that the
//! next call is refused. Counting that fails pauses the agent too: an uncounted result never
//! leaves budget behind.

use airlock_audit::{now_unix_ns, NewRecord};
use airlock_control::{ControlStore, Matched, Trip};
use airlock_protocol::{Frame, Id};

use crate::gateway::{Breakers, Shared};

/// The pause of this gateway's agent after `trip`: the kill is committed, taken into this
/// gateway's kill state at once (so its next request is refused without waiting for the
/// notification) and announced to every other gateway. Returns the audit records to write.
pub(crate) fn pause(
    shared: &Shared,
    store: &mut ControlStore,
    db: &std::path::Path,
    trip: &Trip,
    tool: &str,
) -> Vec<NewRecord> {
    let who = &shared.who;
    tracing::warn!(agent = %who.agent, class = %trip.class, budget = %trip.budget, "breaker tripped");
    let mut records = vec![airlock_control::trip_record(
        &who.agent,
        trip,
        &who.server,
        tool,
    )];
    // The pause is a kill with reason breaker:<class>: it survives restarts and stops every
    // gateway of the agent, this one included (through the notification).
    match store.pause(&who.agent, trip) {
        Ok(kill) => {
            records.push(airlock_control::kill_record(&kill));
            // Like any kill, the pause denies the agent's pending approval requests.
            if let Some(approvals) = shared.approvals.as_ref() {
                match crate::gateway::lock(approvals).deny_for_kill(
                    &kill.target,
                    &kill.by,
                    &kill.reason,
                ) {
                    Ok(denied) => records.extend(airlock_approval::kill_denial_records(&denied)),
                    Err(e) => {
                        tracing::error!(error = %e, "cannot deny the paused agent's approval requests")
                    }
                }
            }
            let mut kills = (*shared.kills()).clone();
            kills.push(kill);
            shared.set_kills(kills);
            if let Err(e) = airlock_control::notify_all(db) {
                tracing::warn!(error = %e, "cannot notify gateways of the pause");
            }
        }
        Err(e) => tracing::error!(error = %e, "cannot record the breaker pause"),
    }
    records
}

/// Remembers the classes of a forwarded call that count items from its result.
pub(crate) fn expect_result(breakers: &mut Breakers, frame: &Frame, matched: Vec<Matched>) {
    let counted: Vec<Matched> = matched
        .into_iter()
        .filter(|m| breakers.set.counts_result(&m.class))
        .collect();
    if counted.is_empty() {
        return;
    }
    if let airlock_protocol::FrameKind::Request { id, .. } = frame.kind() {
        breakers.results.insert(id.clone(), counted);
    }
}

/// Counts the items the answer `frame` to call `id` reports, for every class that reads them
/// from the result; returns the audit records of a pause if a count crossed its cap.
pub(crate) fn count_result(shared: &Shared, id: &Id, frame: &Frame, tool: &str) -> Vec<NewRecord> {
    let Some(breakers) = shared.breakers.as_ref() else {
        return Vec::new();
    };
    let mut guard = crate::gateway::lock(breakers);
    let Some(matched) = guard.results.remove(id) else {
        return Vec::new();
    };
    let Breakers { set, store, db, .. } = &mut *guard;
    // An error answer carries no result: nothing was counted as done.
    let Some(result) = frame.result() else {
        return Vec::new();
    };
    let agent = &shared.who.agent;
    for (class, n) in set.result_items(&matched, result) {
        let trip = match set.record_items(store, agent, &class, n, now_unix_ns()) {
            Ok(None) => continue,
            Ok(Some(trip)) => trip,
            Err(e) => {
                // Fail closed: items that cannot be counted might have used up the budget.
                tracing::error!(error = %e, %class, "cannot count the items of a result; pausing the agent");
                Trip {
                    budget: format!("items could not be counted ({e})"),
                    resets_at_ns: now_unix_ns(),
                    class,
                }
            }
        };
        return pause(shared, store, db, &trip, tool);
    }
    Vec::new()
}

/// Whether the answer to `id` has items a breaker counts (see [`count_result`]).
pub(crate) fn counts_result(shared: &Shared, id: &Id) -> bool {
    shared
        .breakers
        .as_ref()
        .is_some_and(|b| crate::gateway::lock(b).results.contains_key(id))
}

/// Forgets a call whose answer will never be counted (cancelled, timed out, upstream gone).
pub(crate) fn forget(shared: &Shared, id: &Id) {
    if let Some(breakers) = shared.breakers.as_ref() {
        let mut guard = crate::gateway::lock(breakers);
        if !guard.results.is_empty() {
            guard.results.remove(id);
        }
    }
}
