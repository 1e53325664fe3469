//! The one owner of per-call state: every request the pipeline still knows, from either side,
//! keyed by who sent it and its id, with the phase it is in.
//!
//! An id stays reserved from the moment its request is judged until nothing about it can come
//! back: while it is judged, held for a human, forwarded, and after Airlock answered it itself
//! (a timeout, a cancellation) until the upstream's late answer arrives or a grace period ends.
//! So an answer is always paired with the call it belongs to, and a request reusing a known id
//! is refused. When a call ends, its entry goes, and with it everything the pipeline kept for
//! it (arguments for the flow rules, breaker classes counting its result, its audit ticket).

use std::time::{Duration, Instant};

use airlock_audit::Ticket;
// foldhash (hashbrown's default): the table is looked up several times per call, and its keys
// are the peers' own ids, so SipHash's cost buys nothing a bounded table needs.
use airlock_control::Matched;
use airlock_protocol::Id;
use hashbrown::HashMap;
use serde_json::Value;

use crate::hold::Held;
use crate::route::{ActKind, ListKind};

/// Who sent a request: the agent (to the server), or the server (to the agent: sampling,
/// elicitation, roots). The two id spaces are separate.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    Agent,
    Server,
}

/// What the pipeline does with the answer to a forwarded request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expect {
    /// An acting call (or a task result standing for one): the answer passes the response
    /// stages as that call's, and closes its audit record.
    Act { kind: ActKind, target: String },
    /// A list: the answer is filtered.
    List(ListKind),
    /// `tasks/list`: the answer is filtered to this session's tasks.
    TaskList,
    /// Anything else: the answer is forwarded as is.
    Plain,
}

/// Where a call is.
pub enum Phase {
    /// Judged in the current batch; not yet forwarded (waiting for the audit commit).
    Judging,
    /// Held for a human's approval; the server has not seen it.
    Held(Box<Held>),
    /// Forwarded upstream; waiting for the answer.
    Upstream,
    /// Answered by Airlock already (timed out, cancelled by the agent); the upstream's late
    /// answer is dropped. Forgotten after a grace period.
    Abandoned { since: Instant },
    /// A server request forwarded to the agent; waiting for the agent's answer.
    AskedAgent,
}

/// One call the pipeline knows.
pub struct Call {
    pub method: String,
    pub expect: Expect,
    pub phase: Phase,
    pub started: Instant,
    /// The call's decision record, for its result record to point at.
    pub ticket: Option<Ticket>,
    /// The arguments, kept only when a flow rule could label the result.
    pub args: Option<Value>,
    /// Breaker classes that count items from this call's result.
    pub items: Vec<Matched>,
    /// For a task-augmented call: its answer creates a task standing for this call.
    pub task: bool,
}

impl Call {
    pub fn new(method: &str, expect: Expect) -> Call {
        Call {
            method: method.to_owned(),
            expect,
            phase: Phase::Judging,
            started: Instant::now(),
            ticket: None,
            args: None,
            items: Vec::new(),
            task: false,
        }
    }
}

/// A task an agent's call created: `tasks/result` stands for that call.
#[derive(Clone, Debug)]
pub struct TaskOrigin {
    pub kind: ActKind,
    pub target: String,
    pub args: Option<Value>,
    pub items: Vec<Matched>,
    pub ticket: Option<Ticket>,
}

/// The most tasks remembered per session; the oldest is forgotten first (its results are then
/// refused: fail closed).
const MAX_TASKS: usize = 4096;

/// Every call the pipeline knows, and the tasks this session's calls created.
#[derive(Default)]
pub struct CallTable {
    calls: HashMap<(Side, Id), Call>,
    tasks: HashMap<String, (u64, TaskOrigin)>,
    task_seq: u64,
}

impl CallTable {
    /// Whether `id` from `side` is known in any phase.
    pub fn contains(&self, side: Side, id: &Id) -> bool {
        self.calls.contains_key(&(side, id.clone()))
    }

    /// Reserves `id` for a new call; false (and nothing changes) if the id is known.
    pub fn reserve(&mut self, side: Side, id: &Id, call: Call) -> bool {
        let key = (side, id.clone());
        if self.calls.contains_key(&key) {
            return false;
        }
        self.calls.insert(key, call);
        true
    }

    pub fn get(&self, side: Side, id: &Id) -> Option<&Call> {
        self.calls.get(&(side, id.clone()))
    }

    pub fn get_mut(&mut self, side: Side, id: &Id) -> Option<&mut Call> {
        self.calls.get_mut(&(side, id.clone()))
    }

    /// Ends a call: everything about it goes.
    pub fn end(&mut self, side: Side, id: &Id) -> Option<Call> {
        self.calls.remove(&(side, id.clone()))
    }

    /// Ends the agent's call `id` if it is in a phase `pick` accepts.
    pub fn end_if(&mut self, side: Side, id: &Id, pick: impl Fn(&Phase) -> bool) -> Option<Call> {
        let key = (side, id.clone());
        // One lookup on the common path (the call is there, in the phase asked for).
        let call = self.calls.remove(&key)?;
        if pick(&call.phase) {
            return Some(call);
        }
        self.calls.insert(key, call);
        None
    }

    /// Ends every call in a phase `pick` accepts, and returns them.
    pub fn drain_where(&mut self, pick: impl Fn(&Side, &Call) -> bool) -> Vec<(Side, Id, Call)> {
        let keys: Vec<(Side, Id)> = self
            .calls
            .iter()
            .filter(|((side, _), c)| pick(side, c))
            .map(|(k, _)| k.clone())
            .collect();
        keys.into_iter()
            .filter_map(|k| self.calls.remove(&k).map(|c| (k.0, k.1, c)))
            .collect()
    }

    /// The agent's calls held for a human, by id.
    pub fn held_ids(&self) -> Vec<Id> {
        self.calls
            .iter()
            .filter(|((side, _), c)| *side == Side::Agent && matches!(c.phase, Phase::Held(_)))
            .map(|((_, id), _)| id.clone())
            .collect()
    }

    /// Forgets abandoned calls older than `grace`: their late answers can no longer be told
    /// apart from nothing.
    pub fn forget_abandoned(&mut self, grace: Duration) {
        self.calls.retain(|_, c| match c.phase {
            Phase::Abandoned { since } => since.elapsed() < grace,
            _ => true,
        });
    }

    /// How many calls are known (every phase).
    pub fn len(&self) -> usize {
        self.calls.len()
    }

    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// Remembers a task one of this session's calls created.
    pub fn add_task(&mut self, task_id: String, origin: TaskOrigin) {
        if self.tasks.len() >= MAX_TASKS && !self.tasks.contains_key(&task_id) {
            if let Some(oldest) = self
                .tasks
                .iter()
                .min_by_key(|(_, (seq, _))| *seq)
                .map(|(k, _)| k.clone())
            {
                self.tasks.remove(&oldest);
            }
        }
        self.task_seq += 1;
        self.tasks.insert(task_id, (self.task_seq, origin));
    }

    /// The call a task stands for, if this session created it.
    pub fn task(&self, task_id: &str) -> Option<&TaskOrigin> {
        self.tasks.get(task_id).map(|(_, o)| o)
    }

    pub fn has_task(&self, task_id: &str) -> bool {
        self.tasks.contains_key(task_id)
    }
}

#[cfg(test)]
#[path = "calls_tests.rs"]
mod tests;
