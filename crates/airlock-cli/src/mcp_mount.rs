//! The MCP gateway `airlock serve` mounts at `/mcp`: glue between the config, the identity
//! snapshot, the credentials and [`airlock_http::McpGateway`].

use std::sync::{Arc, RwLock};
use std::time::Duration;

use airlock_audit::{AuditWriter, Durability, NewRecord, RecordKind, Submission};
use airlock_config::Config;
use airlock_gateway::PolicyHandle;
use airlock_http::{Authenticate, GatewayParts, McpGateway, Principal};
use airlock_identity::Authenticator;
use serde_json::json;

/// How long in-flight calls get to finish when the server stops.
const DRAIN_GRACE: Duration = Duration::from_secs(10);

/// The identity snapshot, replaced on every store notification (a revocation reaches every
/// open session within the notification's delay, a second at most). Registered agents are
/// Cedar entities too: when the set changes, the rules are rebuilt with them.
struct Agents {
    current: RwLock<Arc<Authenticator>>,
    config: Arc<Config>,
    /// The config's policies and entities, without registered agents.
    base: Arc<airlock_policy::PolicyEngine>,
    rules: PolicyHandle,
    /// The registered agents the rules in force were built with.
    in_rules: std::sync::Mutex<Vec<airlock_policy::AgentEntity>>,
}

impl Agents {
    fn now(&self) -> Arc<Authenticator> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }
}

impl Authenticate for Agents {
    fn authenticate(&self, bearer: &str) -> Result<Principal, String> {
        let who = self.now().authenticate(bearer).map_err(|e| e.to_string())?;
        Ok(Principal {
            agent: who.agent,
            on_behalf_of: who.on_behalf_of,
            task: who.task,
        })
    }

    fn still_valid(&self, principal: &Principal) -> bool {
        self.now().is_active(&principal.agent)
    }

    fn reload(&self) {
        match self.now().reload() {
            Ok(next) => {
                self.refresh_rules(&next);
                match self.current.write() {
                    Ok(mut g) => *g = Arc::new(next),
                    Err(p) => *p.into_inner() = Arc::new(next),
                }
            }
            // Fail closed would end every session on a transient read error; the old
            // snapshot stays, and the next notification or second tries again.
            Err(e) => tracing::error!(error = %e, "cannot re-read the agent registry"),
        }
    }
}

impl Agents {
    /// Puts rules in force whose entities include exactly the live registered agents.
    fn refresh_rules(&self, auth: &Authenticator) {
        let mut live: Vec<airlock_policy::AgentEntity> = auth
            .registered()
            .map(|(name, r)| airlock_policy::AgentEntity {
                id: name.to_string(),
                on_behalf_of: r.on_behalf_of.clone(),
                task: r.task.clone(),
                groups: r.groups.clone(),
            })
            .collect();
        live.sort_by(|a, b| a.id.cmp(&b.id));
        let mut in_rules = crate::lock_std(&self.in_rules);
        if *in_rules == live {
            return;
        }
        match self.base.with_agents(&live) {
            Ok(engine) => {
                self.rules.replace(crate::run::rules(&self.config, engine));
                *in_rules = live;
            }
            Err(e) => {
                tracing::error!(error = %e, "the registered agents do not fit the policies; the rules in force stay")
            }
        }
    }
}

/// The mount for `airlock_server::Options`: the gateway starts once the server knows its names.
pub(crate) fn mount(
    config: Arc<Config>,
    policy: Arc<airlock_policy::PolicyEngine>,
) -> Result<airlock_server::Mount, anyhow::Error> {
    let agents = Authenticator::new(&config)
        .map_err(|e| anyhow::anyhow!("cannot read the agents' credentials: {e}"))?;
    for skipped in agents.skipped() {
        tracing::warn!("{skipped}");
    }
    // Every upstream's credentials are resolved now: a missing one refuses to start.
    let broker = airlock_broker::Broker::from_config(&config, &airlock_broker::ProcessEnv)
        .map_err(|e| anyhow::anyhow!("{}: {e}", config.path.display()))?;
    let durability = match config.audit.durability {
        airlock_config::Durability::Process => Durability::Process,
        airlock_config::Durability::PowerLoss => Durability::PowerLoss,
    };
    let audit = AuditWriter::start(&config.audit.path, durability).map_err(|e| {
        anyhow::anyhow!(
            "cannot open the audit store {}: {e}",
            config.audit.path.display()
        )
    })?;
    let mut record = NewRecord::now(RecordKind::ConfigLoad);
    record.policy_digest = Some(policy.digest().to_string());
    record.detail = Some(json!({
        "config": config.path.display().to_string(),
        "config_digest": config.digest,
        "policies": policy.policies().len(),
        "gateway": "http",
    }));
    audit
        .submit(vec![Submission::from(record)])
        .map_err(|e| anyhow::anyhow!("cannot write to the audit store: {e}"))?;
    // The rules in force are a copy of the config's policies (registered agents join it).
    let base_rules = airlock_policy::PolicyEngine::with_agents(&policy, &[])
        .map_err(|e| anyhow::anyhow!("cannot build the policy set: {e}"))?;
    let rules = PolicyHandle::new(crate::run::rules(&config, base_rules));
    let registry = Agents {
        current: RwLock::new(Arc::new(agents)),
        config: config.clone(),
        base: policy,
        rules: rules.clone(),
        in_rules: std::sync::Mutex::new(Vec::new()),
    };
    registry.refresh_rules(&registry.now());
    let auth: Arc<dyn Authenticate> = Arc::new(registry);
    Ok(Box::new(move |hosts: Vec<String>, origins: Vec<String>| {
        let gw = McpGateway::start(
            GatewayParts {
                config,
                policy: rules,
                audit: Arc::new(audit),
                durability,
                auth,
                broker: Arc::new(broker),
                hosts,
                origins,
            },
            airlock_http::Limits::default(),
        )?;
        let drain = gw.clone();
        Ok(airlock_server::Mounted {
            router: airlock_http::routes(gw),
            on_shutdown: Box::pin(async move { drain.drain(DRAIN_GRACE).await }),
        })
    }))
}
