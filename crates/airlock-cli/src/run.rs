//! `airlock run`: one agent's MCP server behind the gateway, over stdio.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use airlock_audit::{
    now_unix_ns, AuditStore, AuditWriter, Durability, NewRecord, RecordKind, Submission,
};
use airlock_gateway::{
    AgentIo, GatewayOptions, Identity, Outcome, PolicyHandle, Rules, Upstream, UpstreamSandbox,
};
use airlock_identity::{AgentIdentity, AgentOrigin, AuthMethod, Authenticator, RegisteredAgent};
use airlock_policy::AgentEntity;
use anyhow::Context;
use clap::Args;
use serde_json::json;

use crate::load::{load, Loaded};
use crate::Failure;

/// How often the chain head is copied to the anchor file while the gateway runs.
const ANCHOR_EVERY: Duration = Duration::from_secs(2);

/// The environment variable holding the agent's credential (its token, or a JWT). Airlock's
/// own (`AIRLOCK_` prefix): it never reaches the upstream, sandboxed or not.
pub(crate) const AGENT_TOKEN_ENV: &str = "AIRLOCK_AGENT_TOKEN";

#[derive(Args, Debug)]
pub(crate) struct RunArgs {
    /// The Airlock config (TOML).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// The agent this session acts as: declared in the config, or registered
    /// (`airlock agents add`). With a credential, it must be in $AIRLOCK_AGENT_TOKEN.
    #[arg(long, value_name = "ID")]
    agent: String,
    /// A name for this session in the audit trail (default: generated).
    #[arg(long, value_name = "NAME")]
    session: Option<String>,
    /// The server name the upstream has in policy (default: the agent's `server`, or the
    /// config's only server).
    #[arg(long, value_name = "NAME")]
    server: Option<String>,
    /// The upstream MCP server command and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<String>,
}

pub(crate) fn run(args: RunArgs) -> Result<u8, Failure> {
    crate::init_logging("info");
    let Loaded { config, policy } = load(&args.config)?;
    // Who may act is settled before anything starts: a refused credential starts nothing.
    let auth = Authenticator::new(&config).map_err(|e| {
        if matches!(e, airlock_identity::IdentityError::Jwks { .. }) {
            Failure::usage(e)
        } else {
            Failure::failed(e)
        }
    })?;
    for skipped in auth.skipped() {
        tracing::warn!("{skipped}");
    }
    let Some(agent) = auth.agent(&args.agent).cloned() else {
        let mut known: Vec<String> = config.agents.keys().cloned().collect();
        known.extend(auth.registered().map(|(n, _)| n.to_owned()));
        return Err(Failure::usage(anyhow::anyhow!(
            "{}: agent `{}` is neither declared nor registered (known agents: {})",
            config.path.display(),
            args.agent,
            known.join(", ")
        )));
    };
    let presented = std::env::var(AGENT_TOKEN_ENV).ok();
    let credential = check_credential(&auth, &args.agent, presented.as_deref())
        .map_err(|m| Failure::usage(anyhow::anyhow!("{m}")))?;
    let registration = match agent.origin {
        AgentOrigin::Config => None,
        AgentOrigin::Registry => Some(live_registration(&config, &args.agent)?),
    };
    let policy = match &registration {
        None => policy,
        Some(row) => policy
            .with_agents(&[registered_entity(row)])
            .map_err(Failure::usage)?,
    };
    let server = match &args.server {
        Some(s) if config.servers.contains_key(s) => s.clone(),
        Some(s) => {
            return Err(Failure::usage(anyhow::anyhow!(
                "{}: server `{s}` is not declared",
                config.path.display()
            )))
        }
        None if registration.is_some() => only_server(&config, &args.agent)?,
        None => config
            .server_for_agent(&args.agent)
            .map_err(|e| Failure::usage(anyhow::anyhow!("{}: {e}", config.path.display())))?
            .to_string(),
    };
    // The server's credentials, resolved before anything starts: a missing one is a refusal
    // to start, not a failed call. Its values are also what every answer is redacted of.
    let broker = airlock_broker::Broker::for_server(&config, &server, &airlock_broker::ProcessEnv)
        .map_err(|e| Failure::usage(anyhow::anyhow!("{}: {e}", config.path.display())))?;
    let session = args.session.clone().unwrap_or_else(default_session);
    let identity = Identity {
        agent: args.agent.clone(),
        on_behalf_of: agent.on_behalf_of.clone(),
        task: agent.task.clone(),
        session,
        server,
    };
    let durability = match config.audit.durability {
        airlock_config::Durability::Process => Durability::Process,
        airlock_config::Durability::PowerLoss => Durability::PowerLoss,
    };
    // Opening the writer also folds in what crashed gateways left in their spools.
    let audit = AuditWriter::start(&config.audit.path, durability).with_context(|| {
        format!(
            "cannot open the audit store {}",
            config.audit.path.display()
        )
    })?;

    // Loading the config and policies is itself on the record, before any call is judged.
    let mut record = NewRecord {
        agent: Some(identity.agent.clone()),
        on_behalf_of: Some(identity.on_behalf_of.clone()),
        task: Some(identity.task.clone()),
        session: Some(identity.session.clone()),
        server: Some(identity.server.clone()),
        policy_digest: Some(policy.digest().to_string()),
        ..NewRecord::now(RecordKind::ConfigLoad)
    };
    record.detail = Some(json!({
        "config": config.path.display().to_string(),
        "config_digest": config.digest,
        "policies": policy.policies().len(),
        "upstream": args.command,
        "credential": credential_detail(credential.as_ref()),
        "registration": registration.as_ref().map(|r| r.id),
    }));
    audit
        .submit(vec![Submission::from(record)])
        .context("cannot write to the audit store")?;
    let audit = Arc::new(audit);
    let writer = audit.clone();

    let agent_id = identity.agent.clone();
    let on_behalf_of = identity.on_behalf_of.clone();
    let session_id = identity.session.clone();
    let options = GatewayOptions {
        identity,
        max_frame_bytes: config.gateway.max_frame_bytes,
        call_timeout: config.gateway.call_timeout,
        redactor: (!broker.redactor().is_empty()).then(|| broker.redactor().clone()),
    };
    let credentials = broker.env_for(&options.identity.server);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Failure::failed)?;
    let audit_path = config.audit.path.clone();
    let anchor_path = config.audit.anchor.clone();
    let policy = PolicyHandle::new(rules(&config, policy));
    let reload = Arc::new(Reload {
        config_path: args.config.clone(),
        identity: options.identity.clone(),
        audit_path: audit_path.clone(),
        durability,
        policy: policy.clone(),
        registration: registration.as_ref().map(|r| r.id),
    });
    let db = config.audit.path.clone();
    // The server's profile (`sandbox = "name"`, `default` when unset), or none for "off".
    // Only an explicit "off" runs it bare; anything unresolvable refuses to start.
    let off = config
        .servers
        .get(&options.identity.server)
        .is_some_and(|s| s.sandbox == airlock_config::ServerSandbox::Off);
    let sandbox = match config.sandbox_for_server(&options.identity.server) {
        Some((name, settings)) => UpstreamSandbox::Profile {
            profile: Box::new(airlock_sandbox::Profile::from_config(name, settings)),
            audit: audit.clone(),
            identity: options.identity.clone(),
        },
        None if off => UpstreamSandbox::Off {
            env: config
                .servers
                .get(&options.identity.server)
                .map(|s| s.env.clone())
                .unwrap_or_default(),
        },
        None => {
            return Err(Failure::usage(anyhow::anyhow!(
                "{}: no sandbox profile for server `{}`",
                config.path.display(),
                options.identity.server
            )))
        }
    };
    let outcome = runtime.block_on(async move {
        // Listen for kills before reading them, so one issued in between is not missed.
        let listener = airlock_control::Listener::bind(&db).map_err(|e| {
            Failure::failed(anyhow::anyhow!(
                "cannot listen for kills next to {}: {e}",
                db.display()
            ))
        })?;
        let kills = airlock_control::KillStore::open(&db)
            .and_then(|s| s.active())
            .map_err(|e| Failure::failed(anyhow::anyhow!("cannot read the kill state: {e}")))?;
        if let Some(kill) =
            airlock_control::matching(&kills, &agent_id, Some(&session_id), None, None)
                .or_else(|| airlock_control::matching_human(&kills, &on_behalf_of))
        {
            return Err(Failure {
                code: 4,
                error: anyhow::anyhow!(
                    "agent {agent_id} (session {session_id}) is stopped by {} ({}); \
                     `airlock resume` lifts it",
                    kill.by,
                    kill.reason
                ),
            });
        }
        // Start-up is over: its freed heap goes back (see `memory`), before the spawn, whose
        // sandbox helpers would otherwise keep a copy of it.
        crate::memory::trim_heap();
        let upstream = Upstream::spawn_with_env(&args.command, sandbox, &credentials).map_err(
            |e| match e {
                // Fail closed: a layer that cannot be enforced means no server (exit 125).
                airlock_gateway::SpawnError::Sandbox(_) => Failure {
                    code: crate::sandbox_cmd::EXIT_SANDBOX,
                    error: anyhow::Error::new(e),
                },
                airlock_gateway::SpawnError::Io(_) => Failure::usage(anyhow::anyhow!(e)),
            },
        )?;
        let agent_io = AgentIo::stdio().map_err(Failure::failed)?;
        let anchor = tokio::spawn(keep_anchor(audit_path.clone(), anchor_path.clone()));
        let reloader = tokio::spawn(reload_on_sighup(reload.clone()));
        let revocation = tokio::spawn(reload_on_revocation(reload));
        let control = airlock_gateway::Control {
            db,
            durability,
            listener,
        };
        let outcome =
            airlock_gateway::run(options, policy, audit, agent_io, upstream, Some(control))
                .await
                .map_err(Failure::failed);
        anchor.abort();
        reloader.abort();
        revocation.abort();
        outcome
    })?;
    // Everything into the chain before the anchor moves and the process exits.
    match Arc::try_unwrap(writer) {
        Ok(writer) => writer.close(),
        Err(writer) => {
            if !writer.flush(Duration::from_secs(5)) {
                tracing::error!(
                    "audit records are still in the spool; the next reader recovers them"
                );
            }
        }
    }
    update_anchor(&config.audit.path, &config.audit.anchor);
    match outcome {
        Outcome::AgentClosed => Ok(0),
        Outcome::Killed { reason } => {
            eprintln!("airlock: {reason}");
            Ok(4)
        }
        Outcome::UpstreamExited { status } => {
            eprintln!("airlock: the upstream server exited ({status}); in-flight calls were answered with errors");
            Ok(3)
        }
    }
}

/// What a gateway judges with, from a loaded config: the policies, `allow_methods`, the
/// breakers and the flow rules, replaced together on a reload.
pub(crate) fn rules(
    config: &airlock_config::Config,
    engine: airlock_policy::PolicyEngine,
) -> Rules {
    Rules {
        engine: Arc::new(engine),
        allow_methods: config.gateway.allow_methods.clone(),
        breakers: airlock_control::BreakerSet::from_config(config),
        flow: airlock_flow::FlowRules::from_config(config),
    }
}

fn default_session() -> String {
    format!("s-{}-{}", std::process::id(), now_unix_ns() / 1_000_000)
}

/// Copies the chain head to the anchor file now and then, off the call path.
async fn keep_anchor(db: PathBuf, anchor: PathBuf) {
    let mut tick = tokio::time::interval(ANCHOR_EVERY);
    loop {
        tick.tick().await;
        update_anchor(&db, &anchor);
    }
}

/// Moves the anchor forward to the current head; never backwards (several gateways share it).
pub(crate) fn update_anchor(db: &Path, anchor: &Path) {
    let head = match AuditStore::open_read_only(db).and_then(|s| s.head()) {
        Ok(Some(head)) => head,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the audit head for the anchor");
            return;
        }
    };
    if let Ok(Some(old)) = airlock_audit::read_anchor(anchor) {
        if old.seq >= head.seq {
            return;
        }
    }
    if let Err(e) = airlock_audit::write_anchor(&head, anchor) {
        tracing::warn!(error = %e, "cannot write the audit anchor");
    }
}

/// What a policy reload needs.
struct Reload {
    config_path: PathBuf,
    identity: Identity,
    audit_path: PathBuf,
    durability: Durability,
    policy: PolicyHandle,
    /// The registration a registered agent started under: its rights last as long as it does
    /// (a revoked name added again is a new registration, with a new token).
    registration: Option<i64>,
}

/// `kill -HUP` reloads the config's policies and entities. A reload that fails to load keeps
/// the policy set in force; either way the attempt is an audit record.
async fn reload_on_sighup(reload: Arc<Reload>) {
    let Ok(mut hangups) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
    else {
        tracing::warn!("cannot listen for SIGHUP; policy reload is off");
        return;
    };
    while hangups.recv().await.is_some() {
        reload_rules(&reload);
    }
}

/// A registered agent's session loses its rights once its registration is revoked: woken like
/// for a kill (`airlock agents revoke` notifies every gateway), it reloads, and the reloaded
/// rules no longer know the agent, so every call of it is refused from then on.
async fn reload_on_revocation(reload: Arc<Reload>) {
    let Some(id) = reload.registration else {
        return;
    };
    let mut listener = match airlock_control::Listener::bind(&reload.audit_path) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for revocations; a revocation ends this session's rights at the next reload");
            return;
        }
    };
    while listener.recv().await.is_ok() {
        if !registration_is_live(&reload.audit_path, &reload.identity.agent, id) {
            tracing::error!(agent = %reload.identity.agent, "the agent's registration was revoked; every call of it is refused from now on");
            reload_rules(&reload);
            return;
        }
    }
}

/// Reloads the config's policies and entities (and this session's registered agent, while its
/// registration is live) into the running rules, and records the attempt.
fn reload_rules(reload: &Reload) {
    let mut record = NewRecord {
        agent: Some(reload.identity.agent.clone()),
        session: Some(reload.identity.session.clone()),
        server: Some(reload.identity.server.clone()),
        ..NewRecord::now(RecordKind::ConfigReloadFailed)
    };
    match load(&reload.config_path) {
        Ok(Loaded { config, policy }) => {
            // The new rules take over whatever they say, all at once. An agent no longer
            // declared (or registered) is unknown to them, so every call of it is refused from
            // now on (fail closed): its rights do not outlive what granted them.
            let (policy, declared) = with_registered(&config, policy, reload);
            if declared {
                tracing::info!(digest = policy.digest(), "config reloaded");
            } else {
                tracing::error!(agent = %reload.identity.agent, "reload: the agent is no longer declared; every call of it is refused from now on");
            }
            record.kind = RecordKind::ConfigReload;
            record.policy_digest = Some(policy.digest().to_string());
            record.detail = Some(json!({
                "config": config.path.display().to_string(),
                "config_digest": config.digest,
                "policies": policy.policies().len(),
                "agent_declared": declared,
                "allow_methods": config.gateway.allow_methods,
                "breakers": config.breakers.classes.keys().collect::<Vec<_>>(),
                "flow_labels": config.flow.labels.keys().collect::<Vec<_>>(),
            }));
            reload.policy.replace(rules(&config, policy));
            crate::memory::trim_heap();
        }
        Err(failure) => {
            tracing::error!(error = %failure.error, "reload failed; keeping the policies in force");
            record.kind = RecordKind::ConfigReloadFailed;
            record.detail = Some(json!({ "error": format!("{:#}", failure.error) }));
        }
    }
    let appended = AuditStore::open(&reload.audit_path, reload.durability)
        .and_then(|mut s| s.append(&[record]));
    if let Err(e) = appended {
        tracing::error!(error = %e, "cannot record the reload in the audit trail");
    }
}

/// The reloaded engine with this session's registered agent added while its registration is
/// live, and whether the agent is declared to it.
fn with_registered(
    config: &airlock_config::Config,
    policy: airlock_policy::PolicyEngine,
    reload: &Reload,
) -> (airlock_policy::PolicyEngine, bool) {
    let agent = &reload.identity.agent;
    if config.agent(agent).is_some() {
        return (policy, true);
    }
    let Some(id) = reload.registration else {
        return (policy, false);
    };
    let live = airlock_identity::list_registered(&config.audit.path)
        .ok()
        .and_then(|rows| rows.into_iter().find(|r| r.id == id && r.is_live()));
    match live.map(|row| policy.with_agents(&[registered_entity(&row)])) {
        Some(Ok(with)) => (with, true),
        Some(Err(e)) => {
            tracing::error!(error = %e, "reload: the registered agent no longer fits the config");
            (policy, false)
        }
        None => (policy, false),
    }
}

fn registration_is_live(db: &Path, agent: &str, id: i64) -> bool {
    match airlock_identity::list_registered(db) {
        Ok(rows) => rows
            .iter()
            .any(|r| r.id == id && r.name == agent && r.is_live()),
        // Unreadable now: keep the rights (the next wake-up or reload reads again) rather than
        // end a session on a busy database.
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the agent registry");
            true
        }
    }
}

/// Checks the credential in $AIRLOCK_AGENT_TOKEN (`presented`) before anything starts: needed
/// when the agent has one or `[identity] require_token` is set, checked whenever given, and it
/// must authenticate as exactly `agent`. The error is a sentence for the operator.
pub(crate) fn check_credential(
    auth: &Authenticator,
    agent: &str,
    presented: Option<&str>,
) -> Result<Option<AgentIdentity>, String> {
    let Some(token) = presented.filter(|t| !t.is_empty()) else {
        if auth.needs_credential(agent) {
            return Err(format!(
                "agent `{agent}` must present its credential: set {AGENT_TOKEN_ENV} to its token                  (or, with [identity.jwt], a JWT naming it); nothing was started"
            ));
        }
        return Ok(None);
    };
    let who = auth.authenticate(token).map_err(|e| {
        format!("{AGENT_TOKEN_ENV} does not authenticate agent `{agent}`: {e}; nothing was started")
    })?;
    if who.agent != agent {
        return Err(format!(
            "{AGENT_TOKEN_ENV} is the credential of agent `{}`, not of `{agent}`; nothing was              started",
            who.agent
        ));
    }
    Ok(Some(who))
}

/// How the session's agent proved itself, for its `config_load` record (never the credential).
fn credential_detail(who: Option<&AgentIdentity>) -> serde_json::Value {
    match who.map(|w| &w.method) {
        None => json!(null),
        Some(AuthMethod::Token) => json!({ "method": "token" }),
        Some(AuthMethod::Jwt {
            subject,
            expires_at,
        }) => json!({
            "method": "jwt",
            "subject": subject,
            "expires_at": expires_at
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }),
    }
}

/// The live registration of a registered agent.
fn live_registration(
    config: &airlock_config::Config,
    agent: &str,
) -> Result<RegisteredAgent, Failure> {
    airlock_identity::list_registered(&config.audit.path)
        .context("cannot read the agent registry")?
        .into_iter()
        .find(|r| r.name == agent && r.is_live())
        .ok_or_else(|| {
            Failure::usage(anyhow::anyhow!(
                "agent `{agent}` is not registered (it was revoked meanwhile)"
            ))
        })
}

fn registered_entity(row: &RegisteredAgent) -> AgentEntity {
    AgentEntity {
        id: row.name.clone(),
        on_behalf_of: row.on_behalf_of.clone(),
        task: row.task.clone(),
        groups: row.groups.clone(),
    }
}

/// A registered agent has no `server` of its own: the config's only server, else `--server`.
fn only_server(config: &airlock_config::Config, agent: &str) -> Result<String, Failure> {
    let mut names = config.servers.keys();
    match (names.next(), names.next()) {
        (Some(only), None) => Ok(only.clone()),
        _ => Err(Failure::usage(anyhow::anyhow!(
            "{}: registered agent `{agent}` has no default server and the config does not define              exactly one ({}); pass --server NAME",
            config.path.display(),
            config.servers.keys().cloned().collect::<Vec<_>>().join(", ")
        ))),
    }
}

#[cfg(test)]
#[path = "run_tests.rs"]
mod tests;
