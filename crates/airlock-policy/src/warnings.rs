//! Load-time warnings: policies that name things the config does not have.

use std::collections::HashSet;

use cedar_policy::Effect;

use crate::entities::Kind;
use crate::{KnownTargets, PolicyEngine};

/// See [`PolicyEngine::warnings`].
pub(crate) fn warnings(engine: &PolicyEngine, known: &KnownTargets) -> Vec<String> {
    let mut out = Vec::new();
    if engine.loaded.is_empty() {
        out.push("no policies: every call will be denied".to_owned());
        return out;
    }
    if !engine
        .loaded
        .iter()
        .any(|l| l.meta.effect == Effect::Permit)
    {
        out.push("no permit policies: every call will be denied".to_owned());
    }

    let model = &engine.model;
    let agents: HashSet<&str> = model.agents.iter().map(|a| a.id.as_str()).collect();
    let humans: HashSet<&str> = model
        .humans
        .iter()
        .map(|h| h.id.as_str())
        .chain(model.agents.iter().map(|a| a.on_behalf_of.as_str()))
        .collect();
    let tasks: HashSet<&str> = model
        .tasks
        .iter()
        .map(String::as_str)
        .chain(model.agents.iter().map(|a| a.task.as_str()))
        .collect();
    let groups: HashSet<&str> = model
        .humans
        .iter()
        .flat_map(|h| h.groups.iter().map(String::as_str))
        .collect();
    let agent_groups: HashSet<&str> = model
        .agents
        .iter()
        .flat_map(|a| a.groups.iter().map(String::as_str))
        .collect();
    let servers: HashSet<&str> = known.servers.iter().map(String::as_str).collect();

    // Per policy, sorted: Cedar returns a policy's literals in no fixed order.
    let mut current: Option<&str> = None;
    let mut batch: Vec<String> = Vec::new();
    let flush = |batch: &mut Vec<String>, out: &mut Vec<String>| {
        batch.sort();
        batch.dedup();
        out.append(batch);
    };
    for (loaded, kind, id) in engine.kinds_of_literals() {
        if current != Some(loaded.meta.id.as_str()) {
            flush(&mut batch, &mut out);
            current = Some(loaded.meta.id.as_str());
        }
        let problem = match kind {
            Kind::Agent if !agents.contains(id.as_str()) => Some(format!("there is no agent {id}")),
            Kind::Human if !humans.contains(id.as_str()) => Some(format!("there is no human {id}")),
            Kind::Task if !tasks.contains(id.as_str()) => Some(format!("there is no task {id}")),
            Kind::Group if !groups.contains(id.as_str()) => {
                Some(format!("no human is in group {id}"))
            }
            Kind::AgentGroup if !agent_groups.contains(id.as_str()) => {
                Some(format!("no agent is in agent group {id}"))
            }
            Kind::Server if !servers.contains(id.as_str()) => {
                Some(format!("there is no server {id}"))
            }
            Kind::Tool | Kind::Resource | Kind::Prompt => {
                target_problem(kind, &id, &servers, known)
            }
            _ => None,
        };
        if let Some(problem) = problem {
            batch.push(format!(
                "{}: policy {} names {}::{:?} but {problem}",
                loaded.meta.location,
                loaded.meta.id,
                kind.name(),
                id
            ));
        }
    }
    flush(&mut batch, &mut out);

    for (loaded, reads) in engine.loaded.iter().zip(&engine.policy_reads) {
        let m = &loaded.meta;
        if m.approval.is_none() {
            continue;
        }
        if m.effect == Effect::Permit {
            out.push(format!(
                "{}: policy {} is a permit with @approval: only forbids hold calls for approval",
                m.location, m.id
            ));
        } else if !reads.covers("approval") {
            out.push(format!(
                "{}: policy {} has @approval but never reads context.approval.granted: approving cannot unblock it",
                m.location, m.id
            ));
        }
    }
    out.extend(engine.validation_warnings.iter().cloned());
    out
}

/// `Tool::"s/t"`: is there a server `s`, and (when its tool list is known) a tool `t`?
fn target_problem(
    kind: Kind,
    id: &str,
    servers: &HashSet<&str>,
    known: &KnownTargets,
) -> Option<String> {
    let Some((server, name)) = id.split_once('/') else {
        return Some("it has no \"<server>/\" prefix".to_owned());
    };
    if !servers.contains(server) {
        return Some(format!("there is no server {server}"));
    }
    if kind == Kind::Tool {
        let tools = known
            .tools
            .get(server)
            .map(Vec::as_slice)
            .unwrap_or_default();
        if !tools.is_empty() && !tools.iter().any(|t| t == name) {
            return Some(format!("server {server} has no tool {name}"));
        }
    }
    None
}
