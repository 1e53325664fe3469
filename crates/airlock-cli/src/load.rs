//! Loading a config and the policies it names: the one path every command takes, so `check`
//! accepts exactly what `run` accepts.

use std::path::Path;

use airlock_config::Config;
use airlock_policy::{
    AgentEntity, EntityModel, HumanEntity, KnownTargets, PolicyEngine, PolicySources,
};

use crate::Failure;

/// A config with its policy engine, both validated.
pub(crate) struct Loaded {
    pub(crate) config: Config,
    pub(crate) policy: PolicyEngine,
}

/// Loads and validates; every error is `file:line:col: message` and exit code 2.
pub(crate) fn load(path: &Path) -> Result<Loaded, Failure> {
    let config = airlock_config::load(path).map_err(Failure::usage)?;
    let sources = PolicySources {
        schema: config.policy.schema.clone(),
        files: config.policy.files.clone(),
    };
    let policy = PolicyEngine::load(&sources, &entity_model(&config)).map_err(Failure::usage)?;
    // A malformed approval annotation would refuse every call it holds: refuse to start instead.
    let approvals = airlock_approval::check_policies(&policy, &config);
    if let Some(first) = approvals.errors.first() {
        return Err(Failure::usage(anyhow::anyhow!("{first}")));
    }
    Ok(Loaded { config, policy })
}

/// The Cedar entities the config declares.
pub(crate) fn entity_model(config: &Config) -> EntityModel {
    EntityModel {
        agents: config
            .agents
            .iter()
            .map(|(id, a)| AgentEntity {
                id: id.clone(),
                on_behalf_of: a.on_behalf_of.clone(),
                task: a.task.clone(),
                groups: a.groups.clone(),
            })
            .collect(),
        humans: config
            .humans
            .iter()
            .map(|(id, h)| HumanEntity {
                id: id.clone(),
                groups: h.groups.clone(),
            })
            .collect(),
        tasks: config.tasks.keys().cloned().collect(),
        servers: config.servers.keys().cloned().collect(),
    }
}

/// What the config says exists, for warnings about policies that can never apply.
pub(crate) fn known_targets(config: &Config) -> KnownTargets {
    KnownTargets {
        servers: config.servers.keys().cloned().collect(),
        tools: config
            .servers
            .iter()
            .map(|(name, s)| (name.clone(), s.tools.clone().unwrap_or_default()))
            .collect(),
    }
}
