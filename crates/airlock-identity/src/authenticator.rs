//! `Authenticator`: an in-memory snapshot of every agent credential, answering "who presents
//! this bearer?" without touching the disk.
//!
//! Built from the config's `[agents.*]` (with their `token_sha256`), the registry's rows and,
//! with `[identity.jwt]`, the issuer's keys. [`Authenticator::reload`] re-reads only the
//! registry (one small query), for a gateway woken by `airlock agents revoke`.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use airlock_config::Config;

use crate::error::IdentityError;
use crate::jwt::JwtVerifier;
use crate::registry;
use crate::token::{digest, parse_digest};

/// Longest bearer looked at: a JWT with generous claims fits; anything longer is refused
/// before any parsing.
pub const MAX_BEARER_BYTES: usize = 16 * 1024;

/// Who presented a credential, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentIdentity {
    /// The agent (`Agent::"agent"` in policy).
    pub agent: String,
    /// The human it acts for, from the agent's record (never from the credential).
    pub on_behalf_of: String,
    /// Its task, from the agent's record.
    pub task: String,
    /// Its groups.
    pub groups: Vec<String>,
    /// The credential it presented.
    pub method: AuthMethod,
}

/// The kind of credential an agent presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthMethod {
    /// Its own bearer token (config `token_sha256` or a registered agent's).
    Token,
    /// A JWT from the `[identity.jwt]` issuer.
    Jwt {
        /// Its `sub` (the agent claim's value when it has none).
        subject: String,
        /// Its `exp`: the session should not outlive it.
        expires_at: SystemTime,
    },
}

/// Where an agent is declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentOrigin {
    /// `[agents.<name>]` in the config.
    Config,
    /// `airlock agents add` (the registry).
    Registry,
}

/// One agent the snapshot knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentRecord {
    /// The human it acts for.
    pub on_behalf_of: String,
    /// Its task.
    pub task: String,
    /// Its groups.
    pub groups: Vec<String>,
    /// Where it is declared.
    pub origin: AgentOrigin,
    /// Whether it has a token of its own (every registered agent has).
    pub has_token: bool,
}

/// The snapshot. Cheap to share (`Arc` it); replace it with [`Authenticator::reload`]'s.
#[derive(Debug, Clone)]
pub struct Authenticator {
    db: PathBuf,
    require_token: bool,
    /// The config's agents and their token digests: fixed for the snapshot's life.
    configured: Arc<BTreeMap<String, AgentRecord>>,
    configured_tokens: Arc<Vec<([u8; 32], String)>>,
    /// The config's humans and tasks: a registered agent naming one that is gone is not live.
    humans: Arc<Vec<String>>,
    tasks: Arc<Vec<String>>,
    jwt: Option<Arc<JwtVerifier>>,
    /// The configured agents with the live registered ones.
    agents: HashMap<String, AgentRecord>,
    /// Token digest → agent. A lookup by digest leaks nothing useful through timing: the
    /// digest of a guess says nothing about the digests stored, so learning how far a probe
    /// got reveals nothing about any token.
    by_digest: HashMap<[u8; 32], String>,
    /// Digests of revoked registrations → the agent, to say "revoked" rather than "unknown".
    revoked: HashMap<[u8; 32], String>,
    /// Registered agents left out, with why (shown by the CLI, logged by gateways).
    skipped: Vec<String>,
}

impl Authenticator {
    /// The snapshot for `config`: its agents, the registry in its `[audit] path` database,
    /// and the `[identity.jwt]` keys.
    pub fn new(config: &Config) -> Result<Authenticator, IdentityError> {
        let jwt = match &config.identity.jwt {
            Some(j) => Some(Arc::new(JwtVerifier::load(j)?)),
            None => None,
        };
        Authenticator::with_jwt(config, jwt)
    }

    fn with_jwt(
        config: &Config,
        jwt: Option<Arc<JwtVerifier>>,
    ) -> Result<Authenticator, IdentityError> {
        let configured = config
            .agents
            .iter()
            .map(|(name, a)| {
                let record = AgentRecord {
                    on_behalf_of: a.on_behalf_of.clone(),
                    task: a.task.clone(),
                    groups: a.groups.clone(),
                    origin: AgentOrigin::Config,
                    has_token: a.token_sha256.is_some(),
                };
                (name.clone(), record)
            })
            .collect();
        // Validated by the config; an unreadable digest is simply no credential.
        let tokens = config
            .agents
            .iter()
            .filter_map(|(name, a)| Some((parse_digest(a.token_sha256.as_deref()?)?, name.clone())))
            .collect();
        let mut auth = Authenticator {
            db: config.audit.path.clone(),
            require_token: config.identity.require_token,
            configured: Arc::new(configured),
            configured_tokens: Arc::new(tokens),
            humans: Arc::new(config.humans.keys().cloned().collect()),
            tasks: Arc::new(config.tasks.keys().cloned().collect()),
            jwt,
            agents: HashMap::new(),
            by_digest: HashMap::new(),
            revoked: HashMap::new(),
            skipped: Vec::new(),
        };
        auth.fill(registry::credentials(&auth.db)?);
        Ok(auth)
    }

    /// A fresh snapshot: the same config agents and keys, the registry as it is now.
    pub fn reload(&self) -> Result<Authenticator, IdentityError> {
        let mut next = Authenticator {
            agents: HashMap::new(),
            by_digest: HashMap::new(),
            revoked: HashMap::new(),
            skipped: Vec::new(),
            ..self.clone()
        };
        next.fill(registry::credentials(&next.db)?);
        Ok(next)
    }

    /// Adds the configured agents and the registry's rows to an empty snapshot.
    fn fill(&mut self, rows: Vec<registry::Credential>) {
        for (name, record) in self.configured.iter() {
            self.agents.insert(name.clone(), record.clone());
        }
        for (d, name) in self.configured_tokens.iter() {
            self.by_digest.insert(*d, name.clone());
        }
        for row in rows {
            let a = row.agent;
            let Some(d) = parse_digest(&row.token_sha256) else {
                self.skipped.push(format!(
                    "registered agent {:?}: its token digest is unreadable",
                    a.name
                ));
                continue;
            };
            if !a.is_live() {
                self.revoked.insert(d, a.name);
                continue;
            }
            // The config is the authority on its own names: a registration of the same name
            // (made before the config gained it) must not act as that agent.
            if self.configured.contains_key(&a.name) {
                self.skipped.push(format!(
                    "registered agent {:?} is ignored: [agents.{}] in the config has that name",
                    a.name, a.name
                ));
                continue;
            }
            if !self.humans.contains(&a.on_behalf_of) || !self.tasks.contains(&a.task) {
                self.skipped.push(format!(
                    "registered agent {:?} is inactive: human {:?} or task {:?} is no longer in \
                     the config",
                    a.name, a.on_behalf_of, a.task
                ));
                continue;
            }
            self.by_digest.insert(d, a.name.clone());
            self.agents.insert(
                a.name,
                AgentRecord {
                    on_behalf_of: a.on_behalf_of,
                    task: a.task,
                    groups: a.groups,
                    origin: AgentOrigin::Registry,
                    has_token: true,
                },
            );
        }
    }

    /// Who presents `bearer` (the credential without `Bearer `): a token whose SHA-256 is an
    /// agent's, or, with `[identity.jwt]`, a JWT naming a known agent.
    pub fn authenticate(&self, bearer: &str) -> Result<AgentIdentity, IdentityError> {
        if bearer.is_empty() {
            return Err(IdentityError::Missing);
        }
        if bearer.len() > MAX_BEARER_BYTES {
            return Err(IdentityError::UnknownToken);
        }
        let d = digest(bearer);
        if let Some(name) = self.by_digest.get(&d) {
            return self.identity(name, AuthMethod::Token);
        }
        if let Some(name) = self.revoked.get(&d) {
            return Err(IdentityError::Revoked {
                agent: name.clone(),
            });
        }
        match &self.jwt {
            Some(jwt) if bearer.bytes().filter(|b| *b == b'.').count() == 2 => {
                let v = jwt.verify(bearer)?;
                let method = AuthMethod::Jwt {
                    subject: v.subject,
                    expires_at: v.expires_at,
                };
                self.identity(&v.agent, method)
            }
            _ => Err(IdentityError::UnknownToken),
        }
    }

    fn identity(&self, name: &str, method: AuthMethod) -> Result<AgentIdentity, IdentityError> {
        let Some(r) = self.agents.get(name) else {
            return Err(IdentityError::UnknownAgent {
                agent: name.to_owned(),
            });
        };
        Ok(AgentIdentity {
            agent: name.to_owned(),
            on_behalf_of: r.on_behalf_of.clone(),
            task: r.task.clone(),
            groups: r.groups.clone(),
            method,
        })
    }

    /// Whether `agent` may act: declared in the config, or registered and not revoked. An open
    /// session re-checks this after each reload.
    pub fn is_active(&self, agent: &str) -> bool {
        self.agents.contains_key(agent)
    }

    /// The record of an active agent.
    pub fn agent(&self, name: &str) -> Option<&AgentRecord> {
        self.agents.get(name)
    }

    /// The live registered agents (not the config's), by name: the extra `Agent` entities
    /// policy needs.
    pub fn registered(&self) -> impl Iterator<Item = (&str, &AgentRecord)> {
        let mut v: Vec<(&str, &AgentRecord)> = self
            .agents
            .iter()
            .filter(|(_, r)| r.origin == AgentOrigin::Registry)
            .map(|(n, r)| (n.as_str(), r))
            .collect();
        v.sort_by(|a, b| a.0.cmp(b.0));
        v.into_iter()
    }

    /// Whether `agent` must present a credential to act: `[identity] require_token`, or it has
    /// a token of its own.
    pub fn needs_credential(&self, agent: &str) -> bool {
        self.require_token || self.agents.get(agent).is_some_and(|r| r.has_token)
    }

    /// Whether JWTs are accepted.
    pub fn accepts_jwt(&self) -> bool {
        self.jwt.is_some()
    }

    /// Registered agents this snapshot leaves out, with why.
    pub fn skipped(&self) -> &[String] {
        &self.skipped
    }
}

#[cfg(test)]
#[path = "authenticator_tests.rs"]
mod tests;
