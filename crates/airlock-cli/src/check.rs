//! `airlock check`: validate a config and its policies, and say what they contain.

use std::path::Path;

use crate::load::{known_targets, load, Loaded};
use crate::Failure;

pub(crate) fn check(path: &Path) -> Result<u8, Failure> {
    let Loaded { config, policy } = load(path)?;
    println!("{}: ok", config.path.display());
    println!("agents ({}):", config.agents.len());
    for (id, agent) in &config.agents {
        let server = agent.server.as_deref().unwrap_or("-");
        println!(
            "  {id:<20} on behalf of {:<12} task {:<20} server {server}",
            agent.on_behalf_of, agent.task
        );
    }
    println!(
        "humans ({}): {}",
        config.humans.len(),
        join(config.humans.keys())
    );
    println!(
        "tasks ({}): {}",
        config.tasks.len(),
        join(config.tasks.keys())
    );
    println!("servers ({}):", config.servers.len());
    for (name, server) in &config.servers {
        let tools = server.tools.as_ref().map_or_else(
            || "tools not listed".to_string(),
            |t| format!("{} tools", t.len()),
        );
        println!("  {name:<20} {tools}");
    }
    let policies = policy.policies();
    println!(
        "policies ({}), digest {}:",
        policies.len(),
        short(policy.digest())
    );
    for p in &policies {
        let note = p
            .approval
            .as_ref()
            .map(|a| format!(" [approval: {a}]"))
            .or_else(|| p.reason.as_ref().map(|r| format!(" — {r}")))
            .unwrap_or_default();
        println!("  {:<7} {:<32} {}{note}", p.effect, p.id, p.location);
    }
    let warnings = policy.warnings(&known_targets(&config));
    for w in &warnings {
        println!("warning: {w}");
    }
    for w in airlock_approval::check_policies(&policy, &config).warnings {
        println!("warning: {w}");
    }
    for w in config.sandbox_warnings() {
        println!("warning: {w}");
    }
    for w in config.credential_warnings() {
        println!("warning: {w}");
    }
    println!(
        "audit: {} (anchor {})",
        config.audit.path.display(),
        config.audit.anchor.display()
    );
    Ok(0)
}

fn join<'a>(names: impl Iterator<Item = &'a String>) -> String {
    names.cloned().collect::<Vec<_>>().join(", ")
}

fn short(digest: &str) -> &str {
    digest.get(..16).unwrap_or(digest)
}
