//! Information-flow labels, as one pipeline applies them: the labels the session carries go
//! into every decision (`context.session.labels`), and every answer that carries data from a
//! call a `[flow.labels.*]` rule names labels the session before the answer reaches the agent
//! (the labels stage): results, `isError` results and error answers with data alike, for
//! tools, resources and prompts, and a task's result as the call that created it.

use std::sync::{Arc, RwLock};

use airlock_flow::{label_record, FlowRules, Target};
use airlock_protocol::Frame;
use serde_json::Value;

use crate::route::ActKind;
use crate::Pipeline;

/// The labels in force for this session (the rules are in the pipeline's `Rules`, the store on
/// the store thread).
pub struct FlowState {
    labels: RwLock<Arc<Vec<String>>>,
}

impl FlowState {
    pub fn new(labels: Vec<String>) -> FlowState {
        if !labels.is_empty() {
            tracing::info!(?labels, "the session starts with information-flow labels");
        }
        FlowState {
            labels: RwLock::new(Arc::new(labels)),
        }
    }

    /// The labels in force now.
    pub fn labels(&self) -> Arc<Vec<String>> {
        match self.labels.read() {
            Ok(l) => l.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn add(&self, added: Vec<String>, name: &str) {
        let mut labels = (*self.labels()).clone();
        for label in added {
            if !labels.contains(&label) {
                tracing::info!(%label, %name, "the session carries a new information-flow label");
                labels.push(label);
            }
        }
        labels.sort();
        match self.labels.write() {
            Ok(mut l) => *l = Arc::new(labels),
            Err(p) => *p.into_inner() = Arc::new(labels),
        }
    }
}

/// Whether an answer of this call could label the session (its arguments are then kept).
pub fn may_label(rules: &FlowRules, kind: ActKind, server: &str, name: &str) -> bool {
    !rules.is_empty() && rules.may_label(target(kind), server, name)
}

/// What kind of target a rule names for an acting method.
pub fn target(kind: ActKind) -> Target {
    match kind {
        ActKind::CallTool => Target::Tool,
        ActKind::ReadResource | ActKind::SubscribeResource => Target::Resource,
        ActKind::GetPrompt => Target::Prompt,
    }
}

/// The part of an answer a rule's `result` pointer reads: the result, or for an error answer
/// its `data` (an error with no data carries nothing, and labels nothing).
pub(crate) fn carried(frame: &Frame) -> Option<&Value> {
    match frame.result() {
        Some(result) => Some(result),
        None => frame.error().and_then(|e| e.get("data")),
    }
}

/// The labels stage: gives the session the labels its rules name for an answer of
/// `kind`/`name` called with `args`, durably, before the answer moves on. An error means the
/// answer must not reach the agent (it could carry data whose label was not recorded).
pub(crate) fn observe(
    p: &Pipeline,
    kind: ActKind,
    name: &str,
    args: &Value,
    frame: &Frame,
) -> Result<(), String> {
    let Some(flow) = p.flow.as_ref() else {
        return Ok(());
    };
    let Some(data) = carried(frame) else {
        return Ok(());
    };
    let who = &p.who;
    // An error's data is not a result: a `result` pointer cannot be checked on it, so the rule
    // holds (fail closed).
    let is_error = frame.result().is_none();
    let found =
        p.policy
            .rules()
            .flow
            .labels_for(target(kind), &who.server, name, args, data, is_error);
    if found.is_empty() {
        return Ok(());
    }
    let Some(stores) = p.stores.as_ref() else {
        return Err("no label store".into());
    };
    let (agent, session, server, tool) = (
        who.agent.clone(),
        who.session.clone(),
        who.server.clone(),
        name.to_owned(),
    );
    let added = stores
        .call(
            move |s| -> Result<(Vec<String>, Vec<airlock_audit::NewRecord>), String> {
                let mut added = Vec::new();
                let mut records = Vec::new();
                for (label, scope) in found {
                    let new = s
                        .labels
                        .add(&agent, &session, &label, scope)
                        .map_err(|e| e.to_string())?;
                    if new {
                        records.push(label_record(
                            &agent, &session, &server, &tool, &label, scope,
                        ));
                    }
                    added.push(label);
                }
                Ok((added, records))
            },
        )
        .map_err(|e| e.to_string())??;
    let (added, records) = added;
    for r in records {
        p.audit.queue(r, None);
    }
    flow.add(added, name);
    Ok(())
}
