//! The kill stage: is a kill in force for this call?
//!
//! Kills live in their own store (`airlock kill` writes them there first, so they survive
//! restarts); the transport keeps [`KillState`] current from it. A kill of this agent, this
//! session or everything stops the whole pipeline ([`crate::Pipeline::apply_kill`]): calls in
//! flight are cancelled and answered, held calls end, and every later request is refused. A
//! kill of one tool refuses (and hides) that tool only.

use std::sync::{Arc, Mutex, RwLock};

use airlock_control::{matching, Kill, KillTarget};

use crate::calls::Expect;
use crate::Identity;

/// The kills in force, as last read from the store, and the one that stopped this pipeline.
#[derive(Default)]
pub struct KillState {
    kills: RwLock<Arc<Vec<Kill>>>,
    stopped: Mutex<Option<Kill>>,
}

impl KillState {
    pub fn kills(&self) -> Arc<Vec<Kill>> {
        match self.kills.read() {
            Ok(k) => k.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    pub fn set(&self, kills: Vec<Kill>) {
        let kills = Arc::new(kills);
        match self.kills.write() {
            Ok(mut k) => *k = kills,
            Err(p) => *p.into_inner() = kills,
        }
    }

    /// Adds one kill (a breaker pause this pipeline made), before the store is read again.
    pub fn add(&self, kill: Kill) {
        let mut kills = (*self.kills()).clone();
        kills.push(kill);
        self.set(kills);
    }

    /// Records that `kill` stopped this pipeline; false if it was already stopped.
    pub fn mark_stopped(&self, kill: &Kill) -> bool {
        let mut stopped = crate::lock(&self.stopped);
        if stopped.is_some() {
            return false;
        }
        *stopped = Some(kill.clone());
        true
    }

    pub fn stopped(&self) -> Option<Kill> {
        crate::lock(&self.stopped).clone()
    }

    pub fn is_stopped(&self) -> bool {
        crate::lock(&self.stopped).is_some()
    }
}

/// The kill stage: the kill that refuses a request expecting `expect`, if any. A stopped
/// pipeline refuses everything; a tool kill refuses calls of that tool (and results of its
/// tasks).
pub fn check(state: &KillState, who: &Identity, expect: &Expect) -> Option<Kill> {
    if let Some(kill) = state.stopped() {
        return Some(kill);
    }
    let kills = state.kills();
    match expect {
        Expect::Act {
            kind: crate::route::ActKind::CallTool,
            target,
        } => tool_kill(&kills, who, target).cloned(),
        _ => gateway_kill(&kills, who).cloned(),
    }
}

/// The message an agent gets for a refused request.
pub fn refusal(kill: &Kill) -> String {
    let what = match &kill.target {
        KillTarget::All => "every agent is stopped".to_string(),
        KillTarget::Agent(a) => format!("agent {a} is stopped"),
        KillTarget::Session(s) => format!("session {s} is stopped"),
        KillTarget::Human(h) => format!("everything done on behalf of {h} is stopped"),
        KillTarget::Tool { server, tool } => format!("tool {server}/{tool} is stopped"),
    };
    format!(
        "Airlock refused the request: {what} by {} ({}); a human must resume it",
        kill.by, kill.reason
    )
}

/// The kill that stops this whole pipeline (agent, session or everything), if any.
pub fn gateway_kill<'a>(kills: &'a [Kill], who: &Identity) -> Option<&'a Kill> {
    matching(kills, &who.agent, Some(&who.session), None, None)
        .or_else(|| airlock_control::matching_human(kills, &who.on_behalf_of))
}

/// The kill that stops one tool (or the whole pipeline) for this agent, if any.
pub fn tool_kill<'a>(kills: &'a [Kill], who: &Identity, tool: &str) -> Option<&'a Kill> {
    matching(
        kills,
        &who.agent,
        Some(&who.session),
        Some(&who.server),
        Some(tool),
    )
    .or_else(|| airlock_control::matching_human(kills, &who.on_behalf_of))
}

/// A kill that no human issued: the kill state could not be read.
pub fn emergency_kill(why: &str) -> Kill {
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
