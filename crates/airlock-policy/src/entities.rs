//! The entity model (from the config) → Cedar entities.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use cedar_policy::{Entities, Entity, EntityId, EntityTypeName, EntityUid, RestrictedExpression};

use crate::{Action, AgentEntity, EntityModel, PolicyError};

/// Where entity-model problems are reported (the model has no file of its own).
pub(crate) const MODEL_FILE: &str = "<entity model>";

/// The schema's entity types (and `Action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Agent,
    AgentGroup,
    Human,
    Group,
    Task,
    Server,
    Tool,
    Resource,
    Prompt,
    Action,
}

impl Kind {
    const ALL: [Kind; 10] = [
        Kind::Agent,
        Kind::AgentGroup,
        Kind::Human,
        Kind::Group,
        Kind::Task,
        Kind::Server,
        Kind::Tool,
        Kind::Resource,
        Kind::Prompt,
        Kind::Action,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Agent => "Agent",
            Kind::AgentGroup => "AgentGroup",
            Kind::Human => "Human",
            Kind::Group => "Group",
            Kind::Task => "Task",
            Kind::Server => "Server",
            Kind::Tool => "Tool",
            Kind::Resource => "Resource",
            Kind::Prompt => "Prompt",
            Kind::Action => "Action",
        }
    }

    /// The kind of a Cedar type name, if it is one of ours.
    pub(crate) fn of(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The resource type an action applies to.
    pub(crate) fn target_of(action: Action) -> Kind {
        match action {
            Action::CallTool => Kind::Tool,
            Action::ReadResource => Kind::Resource,
            Action::GetPrompt => Kind::Prompt,
        }
    }
}

/// The entity type names, parsed once so that building a uid cannot fail later.
#[derive(Debug, Clone)]
pub(crate) struct Types {
    names: [EntityTypeName; 10],
}

impl Types {
    pub(crate) fn new() -> Result<Self, PolicyError> {
        let parse = |k: Kind| -> Result<EntityTypeName, PolicyError> {
            k.name().parse().map_err(|e: cedar_policy::ParseErrors| {
                PolicyError::whole(MODEL_FILE, format!("entity type {}: {e}", k.name()))
            })
        };
        let mut names = Vec::with_capacity(Kind::ALL.len());
        for k in Kind::ALL {
            names.push(parse(k)?);
        }
        let names = names
            .try_into()
            .map_err(|_| PolicyError::whole(MODEL_FILE, "entity type table"))?;
        Ok(Self { names })
    }

    /// `Kind::"id"`.
    pub(crate) fn uid(&self, kind: Kind, id: &str) -> EntityUid {
        // `Kind::ALL` lists the variants in declaration order.
        let name = self.names[kind as usize].clone();
        EntityUid::from_type_name_and_id(name, EntityId::new(id))
    }

    /// `Action::"call_tool"` etc.
    pub(crate) fn action(&self, action: Action) -> EntityUid {
        self.uid(Kind::Action, action.as_str())
    }

    /// The target entity of a call (`Tool::"s/t"` etc.) with its server as
    /// parent, and that server.
    pub(crate) fn target(
        &self,
        action: Action,
        server: &str,
        name: &str,
    ) -> (EntityUid, [Entity; 2]) {
        let server_uid = self.uid(Kind::Server, server);
        let target = self.uid(Kind::target_of(action), &format!("{server}/{name}"));
        let entities = [
            Entity::new_no_attrs(target.clone(), HashSet::from([server_uid.clone()])),
            Entity::new_no_attrs(server_uid, HashSet::new()),
        ];
        (target, entities)
    }
}

/// Checks the model and builds its entities (agents, humans, groups, tasks,
/// servers, plus the schema's action entities), validated against the schema.
pub(crate) fn base_entities(
    types: &Types,
    model: &EntityModel,
    schema: &cedar_policy::Schema,
) -> Result<Entities, PolicyError> {
    let dup = |what: &str, id: &str| {
        PolicyError::whole(MODEL_FILE, format!("{what} {id:?} is declared twice"))
    };
    let mut out: Vec<Entity> = Vec::new();

    let mut humans: BTreeMap<&str, &[String]> = BTreeMap::new();
    for h in &model.humans {
        if humans.insert(&h.id, &h.groups).is_some() {
            return Err(dup("human", &h.id));
        }
    }
    // Agents may name humans and tasks the lists leave out: they still exist.
    let mut tasks: BTreeSet<&str> = model.tasks.iter().map(String::as_str).collect();
    for a in &model.agents {
        humans.entry(&a.on_behalf_of).or_insert(&[]);
        tasks.insert(&a.task);
    }
    let mut groups: BTreeSet<&str> = BTreeSet::new();
    for (id, hg) in &humans {
        groups.extend(hg.iter().map(String::as_str));
        let parents = hg.iter().map(|g| types.uid(Kind::Group, g)).collect();
        out.push(Entity::new_no_attrs(types.uid(Kind::Human, id), parents));
    }
    for g in groups {
        out.push(Entity::new_no_attrs(
            types.uid(Kind::Group, g),
            HashSet::new(),
        ));
    }
    for t in tasks {
        out.push(Entity::new_no_attrs(
            types.uid(Kind::Task, t),
            HashSet::new(),
        ));
    }

    let mut agents: HashSet<&str> = HashSet::new();
    let mut agent_groups: BTreeSet<&str> = BTreeSet::new();
    for a in &model.agents {
        if !agents.insert(&a.id) {
            return Err(dup("agent", &a.id));
        }
        agent_groups.extend(a.groups.iter().map(String::as_str));
        let attrs = HashMap::from([
            (
                "on_behalf_of".to_owned(),
                RestrictedExpression::new_entity_uid(types.uid(Kind::Human, &a.on_behalf_of)),
            ),
            (
                "task".to_owned(),
                RestrictedExpression::new_entity_uid(types.uid(Kind::Task, &a.task)),
            ),
        ]);
        let parents = a
            .groups
            .iter()
            .map(|g| types.uid(Kind::AgentGroup, g))
            .collect();
        let entity = Entity::new(types.uid(Kind::Agent, &a.id), attrs, parents)
            .map_err(|e| PolicyError::whole(MODEL_FILE, format!("agent {:?}: {e}", a.id)))?;
        out.push(entity);
    }
    for g in agent_groups {
        out.push(Entity::new_no_attrs(
            types.uid(Kind::AgentGroup, g),
            HashSet::new(),
        ));
    }

    let mut servers: HashSet<&str> = HashSet::new();
    for s in &model.servers {
        check_server_name(s).map_err(|m| PolicyError::whole(MODEL_FILE, m))?;
        if !servers.insert(s) {
            return Err(dup("server", s));
        }
        out.push(Entity::new_no_attrs(
            types.uid(Kind::Server, s),
            HashSet::new(),
        ));
    }

    Entities::from_entities(out, Some(schema)).map_err(|e| {
        PolicyError::whole(
            MODEL_FILE,
            format!(
                "the entities do not fit the schema: {}",
                crate::error::describe(&e)
            ),
        )
    })
}

/// `model` with `extra` agents, each acting for a human and on a task the model has (declared,
/// or named by one of its agents) and with a name no agent of the model has.
pub(crate) fn with_agents(
    model: &EntityModel,
    extra: &[AgentEntity],
) -> Result<EntityModel, PolicyError> {
    let humans: BTreeSet<&str> = model
        .humans
        .iter()
        .map(|h| h.id.as_str())
        .chain(model.agents.iter().map(|a| a.on_behalf_of.as_str()))
        .collect();
    let tasks: BTreeSet<&str> = model
        .tasks
        .iter()
        .map(String::as_str)
        .chain(model.agents.iter().map(|a| a.task.as_str()))
        .collect();
    let mut out = model.clone();
    for a in extra {
        let refuse = |m: String| Err(PolicyError::whole(MODEL_FILE, m));
        if !humans.contains(a.on_behalf_of.as_str()) {
            return refuse(format!(
                "agent {:?} acts for human {:?}, which is not declared ([humans.{}])",
                a.id, a.on_behalf_of, a.on_behalf_of
            ));
        }
        if !tasks.contains(a.task.as_str()) {
            return refuse(format!(
                "agent {:?} has task {:?}, which is not declared ([tasks.{}])",
                a.id, a.task, a.task
            ));
        }
        if out.agents.iter().any(|x| x.id == a.id) {
            return refuse(format!("agent {:?} is already declared", a.id));
        }
        out.agents.push(a.clone());
    }
    Ok(out)
}

/// Server names may not contain `/`: `Tool::"a/b/c"` must name exactly one
/// (server, tool) pair, split at the first `/`.
pub(crate) fn check_server_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        Err("a server name may not be empty".to_owned())
    } else if name.contains('/') {
        Err(format!("server name {name:?} may not contain '/'"))
    } else {
        Ok(())
    }
}
