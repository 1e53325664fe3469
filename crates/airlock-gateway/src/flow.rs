//! Information-flow labels, as one gateway applies them: the labels the session carries go
//! into every decision (`context.session.labels`), and a successful result that a
//! `[flow.labels.*]` rule names labels the session before the result reaches the agent.

use std::sync::{Arc, Mutex, RwLock};

use airlock_flow::{label_record, FlowRules, LabelStore};
use airlock_protocol::Frame;
use serde_json::Value;

use crate::gateway::{lock, Shared};
use crate::Identity;

/// The flow rules, the label store, and the labels in force for this session.
pub(crate) struct FlowState {
    rules: FlowRules,
    store: Mutex<LabelStore>,
    labels: RwLock<Arc<Vec<String>>>,
}

impl FlowState {
    /// Opens the label store and reads the labels the agent (and this session) already carry.
    pub(crate) fn open(
        rules: FlowRules,
        db: &std::path::Path,
        who: &Identity,
    ) -> Result<FlowState, airlock_flow::FlowError> {
        let store = LabelStore::open(db)?;
        let labels = store.labels(&who.agent, &who.session)?;
        if !labels.is_empty() {
            tracing::info!(?labels, "the session starts with information-flow labels");
        }
        Ok(FlowState {
            rules,
            store: Mutex::new(store),
            labels: RwLock::new(Arc::new(labels)),
        })
    }

    /// The labels in force now.
    pub(crate) fn labels(&self) -> Arc<Vec<String>> {
        match self.labels.read() {
            Ok(l) => l.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Whether a call of `tool` could label the session (its arguments are then kept).
    pub(crate) fn may_label(&self, server: &str, tool: &str) -> bool {
        !self.rules.is_empty() && self.rules.may_label(server, tool)
    }
}

/// The labels in force for `shared`'s session (none without flow rules).
pub(crate) fn labels(shared: &Shared) -> Arc<Vec<String>> {
    shared
        .flow
        .as_ref()
        .map_or_else(|| Arc::new(Vec::new()), FlowState::labels)
}

/// A successful result of `tool` called with `args`: gives the session the labels its rules
/// name, durably, before the result moves on. An error means the result must not reach the
/// agent (it could carry data whose label was not recorded).
pub(crate) fn observe(
    shared: &Shared,
    tool: &str,
    args: &Value,
    frame: &Frame,
) -> Result<(), String> {
    let Some(flow) = shared.flow.as_ref() else {
        return Ok(());
    };
    let result = frame.result().unwrap_or(&Value::Null);
    let who = &shared.who;
    let found = flow.rules.labels_for(&who.server, tool, args, result);
    if found.is_empty() {
        return Ok(());
    }
    let mut store = lock(&flow.store);
    let mut added = Vec::new();
    for (label, scope) in found {
        match store.add(&who.agent, &who.session, &label, scope) {
            Ok(new) => {
                if new {
                    shared.queue_record(
                        label_record(&who.agent, &who.session, &who.server, tool, &label, scope),
                        None,
                    );
                }
                added.push(label);
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    let mut labels = (*flow.labels()).clone();
    for label in added {
        if !labels.contains(&label) {
            tracing::info!(%label, %tool, "the session carries a new information-flow label");
            labels.push(label);
        }
    }
    labels.sort();
    match flow.labels.write() {
        Ok(mut l) => *l = Arc::new(labels),
        Err(p) => *p.into_inner() = Arc::new(labels),
    }
    Ok(())
}
