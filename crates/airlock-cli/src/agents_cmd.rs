//! `airlock agents add|revoke|list`: agents registered in the audit database, each with a token
//! of its own that is printed once. A registered agent is usable in policy exactly like an
//! `[agents.*]` one; revoking it ends its rights in every running gateway (they are woken, as
//! for a kill, and re-read the registry).

use std::path::PathBuf;

use airlock_audit::{AuditStore, NewRecord, RecordKind};
use airlock_config::Config;
use airlock_identity::{IdentityError, NewAgent, RegisteredAgent, Registry};
use anyhow::{anyhow, Context};
use clap::{Args, Subcommand};
use serde_json::json;

use crate::control_cmd::{durability, fmt_time};
use crate::Failure;

#[derive(Subcommand, Debug)]
pub(crate) enum AgentsCommand {
    /// Register an agent and print its token, once.
    Add(AddArgs),
    /// Revoke a registered agent: its token stops working in every running gateway.
    Revoke(RevokeArgs),
    /// Registered agents, live and revoked.
    List(ListArgs),
}

#[derive(Args, Debug)]
pub(crate) struct AddArgs {
    /// The agent's name (its `Agent::"NAME"` in policy).
    #[arg(value_name = "NAME")]
    name: String,
    /// The human it acts for (a `[humans.*]` entry).
    #[arg(long, value_name = "HUMAN")]
    on_behalf_of: String,
    /// Its task (a `[tasks.*]` entry).
    #[arg(long, value_name = "TASK")]
    task: String,
    /// A group it belongs to (`AgentGroup::"G"` in policy); repeat for several.
    #[arg(long = "group", value_name = "G")]
    groups: Vec<String>,
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
}

#[derive(Args, Debug)]
pub(crate) struct RevokeArgs {
    /// The registered agent.
    #[arg(value_name = "NAME")]
    name: String,
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
}

#[derive(Args, Debug)]
pub(crate) struct ListArgs {
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// One JSON array instead of a table.
    #[arg(long)]
    json: bool,
}

pub(crate) fn agents(command: AgentsCommand) -> Result<u8, Failure> {
    match command {
        AgentsCommand::Add(args) => add(args),
        AgentsCommand::Revoke(args) => revoke(args),
        AgentsCommand::List(args) => list(args),
    }
}

fn add(args: AddArgs) -> Result<u8, Failure> {
    let config = airlock_config::load(&args.config).map_err(Failure::usage)?;
    check_new(&config, &args)?;
    let mut registry = open(&config)?;
    let new = NewAgent {
        name: &args.name,
        on_behalf_of: &args.on_behalf_of,
        task: &args.task,
        groups: &args.groups,
        created_by: None,
    };
    let (row, token) = registry.add(&new).map_err(refusal)?;
    // The token first: whatever fails below, the registration stands and the token is its.
    println!("{}", token.expose());
    eprintln!(
        "airlock: registered agent {} (on behalf of {}, task {}); the token above is shown once \
         and will not be shown again: give it to the agent as AIRLOCK_AGENT_TOKEN",
        row.name, row.on_behalf_of, row.task
    );
    announce(&config, &row, "add")
}

fn revoke(args: RevokeArgs) -> Result<u8, Failure> {
    let config = airlock_config::load(&args.config).map_err(Failure::usage)?;
    let mut registry = open(&config)?;
    let row = match registry.revoke(&args.name, None) {
        Ok(row) => row,
        Err(IdentityError::NotRegistered { name }) if config.agents.contains_key(&name) => {
            return Err(Failure::usage(anyhow!(
                "agent {name:?} is declared in [agents.{name}] of {}, not registered: remove it \
                 (or its token_sha256) there to take its rights away",
                config.path.display()
            )))
        }
        Err(e) => return Err(refusal(e)),
    };
    println!(
        "revoked agent {} (registered {} UTC); its token no longer authenticates",
        row.name,
        fmt_time(row.created_ns)
    );
    announce(&config, &row, "revoke")
}

fn list(args: ListArgs) -> Result<u8, Failure> {
    let config = airlock_config::load(&args.config).map_err(Failure::usage)?;
    let db = &config.audit.path;
    let rows = airlock_identity::list_registered(db)
        .with_context(|| format!("cannot read the agent registry in {}", db.display()))?;
    if args.json {
        let v: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                let mut v = json!(r);
                v["live"] = json!(r.is_live());
                v
            })
            .collect();
        let text = serde_json::to_string_pretty(&v).context("cannot encode the agents")?;
        println!("{text}");
        return Ok(0);
    }
    if rows.is_empty() {
        println!("no registered agents");
        return Ok(0);
    }
    println!(
        "{:<24}  {:<16}  {:<20}  {:<20}  {:<20}  revoked (UTC)",
        "name", "on behalf of", "task", "groups", "added (UTC)"
    );
    for r in &rows {
        println!(
            "{:<24}  {:<16}  {:<20}  {:<20}  {:<20}  {}",
            r.name,
            r.on_behalf_of,
            r.task,
            if r.groups.is_empty() {
                "-".to_owned()
            } else {
                r.groups.join(",")
            },
            fmt_time(r.created_ns),
            r.revoked_ns.map_or_else(|| "-".to_owned(), fmt_time)
        );
    }
    Ok(0)
}

/// A registered agent acts for a declared human on a declared task, and has a name no
/// `[agents.*]` entry has (the config would win, and the registration would be dead).
fn check_new(config: &Config, args: &AddArgs) -> Result<(), Failure> {
    let path = config.path.display();
    let refuse = |m: String| Err(Failure::usage(anyhow!(m)));
    if config.agents.contains_key(&args.name) {
        return refuse(format!(
            "agent {:?} is declared in [agents.{}] of {path}; a registered agent needs a name of \
             its own",
            args.name, args.name
        ));
    }
    if !config.humans.contains_key(&args.on_behalf_of) {
        return refuse(format!(
            "unknown human {:?}: {path} has no [humans.{}] (known: {})",
            args.on_behalf_of,
            args.on_behalf_of,
            join(config.humans.keys())
        ));
    }
    if !config.tasks.contains_key(&args.task) {
        return refuse(format!(
            "unknown task {:?}: {path} has no [tasks.{}] (known: {})",
            args.task,
            args.task,
            join(config.tasks.keys())
        ));
    }
    Ok(())
}

fn open(config: &Config) -> Result<Registry, Failure> {
    let db = &config.audit.path;
    Registry::open(db, durability(config))
        .with_context(|| format!("cannot open the agent registry in {}", db.display()))
        .map_err(Failure::failed)
}

/// A refused name is a usage error; the store failing is not.
fn refusal(e: IdentityError) -> Failure {
    match e {
        IdentityError::InvalidName { .. }
        | IdentityError::AlreadyRegistered { .. }
        | IdentityError::NotRegistered { .. } => Failure::usage(e),
        other => Failure::failed(other),
    }
}

/// The audit record, then the wake-up of every running gateway (which re-reads the registry).
/// The change is committed already: a failure here is reported, never undone.
fn announce(config: &Config, row: &RegisteredAgent, action: &str) -> Result<u8, Failure> {
    let record = NewRecord::now(RecordKind::Agent)
        .agent(row.name.clone())
        .on_behalf_of(row.on_behalf_of.clone())
        .task(row.task.clone())
        .detail(&json!({
            "action": action,
            "registration": row.id,
            "groups": row.groups,
        }));
    let db = &config.audit.path;
    let audited = AuditStore::open(db, durability(config)).and_then(|mut s| s.append(&[record]));
    let notified = airlock_control::notify_all(db);
    match notified {
        Ok(n) if n > 0 => eprintln!(
            "airlock: notified {n} running gateway{}",
            if n == 1 { "" } else { "s" }
        ),
        Ok(_) => {}
        Err(e) => eprintln!("airlock: warning: cannot notify running gateways: {e}"),
    }
    audited.map_err(|e| {
        Failure::failed(anyhow::Error::new(e).context(format!(
            "the agent's {action} is in force, but its audit record failed"
        )))
    })?;
    Ok(0)
}

fn join<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let v: Vec<&str> = names.map(String::as_str).collect();
    if v.is_empty() {
        "none".to_owned()
    } else {
        v.join(", ")
    }
}
