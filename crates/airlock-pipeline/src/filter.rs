//! Filtering list answers so the agent sees only what it could ever use.
//!
//! An agent that is never allowed a tool should not learn of it: its description alone can be a
//! prompt-injection vector, and a hidden tool is one the model will not try.

use airlock_policy::PolicyEngine;
use serde_json::Value;

use crate::route::ListKind;
use crate::Identity;

/// What to send the agent for a list answer.
pub enum Filtered {
    /// Nothing was hidden: forward the original bytes.
    Unchanged,
    /// Some entries were hidden: send this re-serialised frame instead.
    Rewritten(Vec<u8>),
    /// The answer is not a list of the expected shape.
    Malformed(&'static str),
}

/// Keeps the entries of a list result that the agent could ever use.
pub fn filter_list(
    policy: &PolicyEngine,
    who: &Identity,
    kind: ListKind,
    frame: &Value,
    killed: &dyn Fn(&str) -> bool,
) -> Filtered {
    let (member, name_key) = kind.members();
    let Some(result) = frame.get("result") else {
        // An error answer: nothing to filter.
        return Filtered::Unchanged;
    };
    let Some(list) = result.get(member) else {
        return Filtered::Malformed("the list result has no list member");
    };
    let Some(entries) = list.as_array() else {
        return Filtered::Malformed("the list member is not an array");
    };
    let keep = |entry: &Value| {
        entry
            .get(name_key)
            .and_then(Value::as_str)
            .is_some_and(|name| {
                !killed(name) && policy.visible(&who.agent, kind.action(), &who.server, name)
            })
    };
    if entries.iter().all(keep) {
        return Filtered::Unchanged;
    }
    let mut rewritten = frame.clone();
    if let Some(Value::Array(entries)) = rewritten.get_mut("result").and_then(|r| r.get_mut(member))
    {
        entries.retain(keep);
    }
    match serde_json::to_vec(&rewritten) {
        Ok(bytes) => Filtered::Rewritten(bytes),
        Err(_) => Filtered::Malformed("the filtered list could not be serialised"),
    }
}

/// Keeps the tasks of a `tasks/list` result that this session created (`known`): another
/// session's tasks are none of this agent's business.
pub fn filter_tasks(frame: &Value, known: &dyn Fn(&str) -> bool) -> Filtered {
    let Some(result) = frame.get("result") else {
        return Filtered::Unchanged;
    };
    let Some(entries) = result.get("tasks").and_then(Value::as_array) else {
        return Filtered::Malformed("the tasks/list result has no tasks array");
    };
    let keep = |entry: &Value| {
        entry
            .get("taskId")
            .and_then(Value::as_str)
            .is_some_and(known)
    };
    if entries.iter().all(keep) {
        return Filtered::Unchanged;
    }
    let mut rewritten = frame.clone();
    if let Some(Value::Array(entries)) =
        rewritten.get_mut("result").and_then(|r| r.get_mut("tasks"))
    {
        entries.retain(keep);
    }
    match serde_json::to_vec(&rewritten) {
        Ok(bytes) => Filtered::Rewritten(bytes),
        Err(_) => Filtered::Malformed("the filtered list could not be serialised"),
    }
}
