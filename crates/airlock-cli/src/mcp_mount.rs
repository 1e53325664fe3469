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
    /// The last re-read of the registry failed: a revocation may be unseen, so registered
    /// agents are refused (and their sessions end) until a read succeeds again.
    registry_unreadable: std::sync::atomic::AtomicBool,
}

impl Agents {
    fn now(&self) -> Arc<Authenticator> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Whether `agent` comes from the registry while the registry cannot be read.
    fn unconfirmed(&self, auth: &Authenticator, agent: &str) -> bool {
        self.registry_unreadable
            .load(std::sync::atomic::Ordering::SeqCst)
            && auth
                .agent(agent)
                .is_some_and(|r| r.origin == airlock_identity::AgentOrigin::Registry)
    }
}

impl Authenticate for Agents {
    fn authenticate(&self, bearer: &str) -> Result<Principal, String> {
        let auth = self.now();
        let who = auth.authenticate(bearer).map_err(|e| e.to_string())?;
        if self.unconfirmed(&auth, &who.agent) {
            return Err("the agent registry cannot be read, so a registered agent's credential cannot be confirmed".into());
        }
        Ok(Principal {
            agent: who.agent,
            on_behalf_of: who.on_behalf_of,
            task: who.task,
        })
    }

    fn still_valid(&self, principal: &Principal) -> bool {
        let auth = self.now();
        auth.is_active(&principal.agent) && !self.unconfirmed(&auth, &principal.agent)
    }

    fn reload(&self) {
        match self.now().reload() {
            Ok(next) => {
                self.registry_unreadable
                    .store(false, std::sync::atomic::Ordering::SeqCst);
                self.refresh_rules(&next);
                match self.current.write() {
                    Ok(mut g) => *g = Arc::new(next),
                    Err(p) => *p.into_inner() = Arc::new(next),
                }
            }
            // Fail closed for what the registry vouches for: registered agents are refused
            // until it can be read again (configured agents do not depend on it).
            Err(e) => {
                self.registry_unreadable
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                tracing::error!(error = %e, "cannot re-read the agent registry; registered agents are refused until it can be");
            }
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
        registry_unreadable: std::sync::atomic::AtomicBool::new(false),
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use airlock_identity::{NewAgent, Registry};

    /// A registered agent is refused, and its open sessions are no longer valid, while the
    /// registry cannot be read; a configured agent is not affected.
    #[test]
    fn an_unreadable_registry_refuses_registered_agents_only() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("audit.db");
        let digest = airlock_identity::AgentToken::digest_of("configured-token");
        let text = format!(
            "[policy]\nfiles = [\"p\"]\n[audit]\npath = {:?}\n[humans.alice]\n[tasks.t]\n\
             [agents.conf]\non_behalf_of = \"alice\"\ntask = \"t\"\ntoken_sha256 = \"{}\"\n",
            db.display().to_string(),
            digest
        );
        std::fs::create_dir(dir.path().join("p")).unwrap();
        std::fs::write(
            dir.path().join("p/a.cedar"),
            "permit(principal, action, resource);\n",
        )
        .unwrap();
        let path = dir.path().join("airlock.toml");
        std::fs::write(&path, &text).unwrap();
        let config = Arc::new(airlock_config::parse(&text, path.as_path()).unwrap());
        let mut registry = Registry::open(&db, Default::default()).unwrap();
        let new = NewAgent {
            name: "reg",
            on_behalf_of: "alice",
            task: "t",
            groups: &[],
            created_by: None,
        };
        let (_, token) = registry.add(&new).unwrap();
        let policy = Arc::new(crate::load::load(&config.path).unwrap().policy);
        let agents = Agents {
            current: RwLock::new(Arc::new(Authenticator::new(&config).unwrap())),
            config: config.clone(),
            base: policy.clone(),
            rules: PolicyHandle::new(crate::run::rules(
                &config,
                airlock_policy::PolicyEngine::with_agents(&policy, &[]).unwrap(),
            )),
            in_rules: std::sync::Mutex::new(Vec::new()),
            registry_unreadable: std::sync::atomic::AtomicBool::new(false),
        };
        let reg = agents.authenticate(token.expose()).unwrap();
        let conf = agents.authenticate("configured-token").unwrap();
        agents
            .registry_unreadable
            .store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(agents.authenticate(token.expose()).is_err());
        assert!(!agents.still_valid(&reg));
        assert_eq!(agents.authenticate("configured-token").unwrap(), conf);
        assert!(agents.still_valid(&conf));
    }
}
