//! `airlock kill`, `airlock resume`, `airlock status` and `airlock token new`: the
//! kill switch from the command line, acting as a named human.
//!
//! A kill is committed to the store first (so it holds whatever happens next), then
//! recorded in the audit chain, then announced to every running gateway.

use std::path::{Path, PathBuf};

use airlock_control::{BreakerSet, ControlStore, Kill, KillStore, KillTarget};
use anyhow::{anyhow, Context};
use clap::{ArgGroup, Args, Subcommand};

use crate::Failure;

/// Environment variable holding the acting human's token.
pub(crate) const TOKEN_ENV: &str = "AIRLOCK_TOKEN";

/// Exactly one of `--agent`, `--session`, `--human`, `--tool`, `--all`.
#[derive(Args, Debug)]
#[command(group(ArgGroup::new("target").required(true).args(["agent", "session", "human", "tool", "all"])))]
pub(crate) struct TargetArgs {
    /// One agent, in every session.
    #[arg(long, value_name = "ID")]
    agent: Option<String>,
    /// One session (`airlock run --session`).
    #[arg(long, value_name = "ID")]
    session: Option<String>,
    /// Everything any agent does on behalf of one human (their access revoked).
    #[arg(long, value_name = "ID")]
    human: Option<String>,
    /// One tool, for every agent.
    #[arg(long, value_name = "SERVER/TOOL")]
    tool: Option<String>,
    /// Everything.
    #[arg(long)]
    all: bool,
}

/// Who is acting: `--as NAME`, with the token from `$AIRLOCK_TOKEN` or `--token-file`.
#[derive(Args, Debug)]
pub(crate) struct HumanArgs {
    /// The human acting (a `[humans.NAME]` with `token_sha256`).
    #[arg(long = "as", value_name = "NAME")]
    pub(crate) as_human: String,
    /// Read the token from this file instead of $AIRLOCK_TOKEN.
    #[arg(long, value_name = "FILE")]
    pub(crate) token_file: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub(crate) struct KillArgs {
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    #[command(flatten)]
    target: TargetArgs,
    /// Why: shown to the agent and kept in the audit trail.
    #[arg(long, value_name = "TEXT")]
    reason: Option<String>,
    #[command(flatten)]
    human: HumanArgs,
}

#[derive(Args, Debug)]
pub(crate) struct ResumeArgs {
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    #[command(flatten)]
    target: TargetArgs,
    #[command(flatten)]
    human: HumanArgs,
}

#[derive(Args, Debug)]
pub(crate) struct StatusArgs {
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// One JSON object instead of tables.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand, Debug)]
pub(crate) enum TokenCommand {
    /// Print a fresh random token and the `token_sha256` line for the config.
    New,
}

// === kill / resume ===

pub(crate) fn kill(args: KillArgs) -> Result<u8, Failure> {
    let config = airlock_config::load(&args.config).map_err(Failure::usage)?;
    let human = authenticate(&config, &args.human, std::env::var(TOKEN_ENV).ok())?;
    let target = target(&args.target)?;
    // A registered agent is as real as a declared one; the check knows only the config's.
    let registered = matches!(&target, KillTarget::Agent(a)
        if airlock_identity::is_registered(&config.audit.path, a));
    if !registered {
        for warning in airlock_control::check_target(&config, &target).map_err(Failure::usage)? {
            eprintln!("airlock: warning: {warning}");
        }
    }
    let reason = args.reason.unwrap_or_else(|| format!("killed by {human}"));
    let db = &config.audit.path;
    // The kill file alone: a kill waits for nobody's audit or breaker writes.
    let mut store = KillStore::open_with(db, durability(&config))
        .with_context(|| format!("cannot open the kill store of {}", db.display()))
        .map_err(Failure::failed)?;
    let mut denials: anyhow::Result<usize> = Ok(0);
    let done =
        airlock_control::kill_and_announce(&config, &mut store, target, &reason, &human, |k| {
            // After the gateways were woken: they end the held calls a kill covers themselves.
            match airlock_approval::deny_for_kill(&config, k) {
                Ok(records) => {
                    denials = Ok(records.len());
                    records
                }
                Err(e) => {
                    denials = Err(anyhow::Error::new(e));
                    Vec::new()
                }
            }
        })
        .with_context(|| format!("cannot record the kill in {}", db.display()))?;
    let k = done.value;
    let audited = done.audited;
    let notified = done.notified.context("cannot notify gateways")?;
    let denied = denials.as_ref().map_or(0, |n| *n);
    println!(
        "killed {} (kill #{}, by {human}: {reason}); notified {notified} running gateway{}",
        k.target,
        k.id,
        plural(notified)
    );
    if denied > 0 {
        println!("denied {denied} pending approval request{}", plural(denied));
    }
    denials.map_err(|e| {
        Failure::failed(
            e.context("the kill is in force, but its pending approvals were not denied"),
        )
    })?;
    audited.map_err(|e| {
        Failure::failed(
            anyhow::Error::new(e).context("the kill is in force, but its audit record failed"),
        )
    })?;
    Ok(0)
}

pub(crate) fn resume(args: ResumeArgs) -> Result<u8, Failure> {
    let config = airlock_config::load(&args.config).map_err(Failure::usage)?;
    let human = authenticate(&config, &args.human, std::env::var(TOKEN_ENV).ok())?;
    let target = target(&args.target)?;
    let db = &config.audit.path;
    let mut store = open_store(&config)?;
    // Kills outrank approvals: what the kill covered and was approved but not used stays void.
    // Should that fail, nothing is resumed.
    let killed = store
        .active()
        .with_context(|| format!("cannot read the kills in {}", db.display()))?
        .iter()
        .any(|k| k.target == target);
    let voided = if killed {
        airlock_approval::void_before_resume(&config, &target, &human)
    } else {
        Ok(0)
    };
    match voided {
        Ok(_) => {}
        Err(e @ airlock_approval::ApprovalError::Audit(_)) => eprintln!("airlock: warning: {e}"),
        Err(e) => {
            return Err(Failure::failed(anyhow::Error::new(e).context(
                "cannot void the approvals the kill covered: nothing resumed",
            )))
        }
    }
    let done = airlock_control::resume_and_announce(&config, &mut store, &target, &human)
        .with_context(|| format!("cannot record the resume in {}", db.display()))?;
    let n = done.value;
    if n == 0 {
        println!("no active kill of {target}: nothing resumed");
        return Ok(1);
    }
    let notified = done.notified.context("cannot notify gateways")?;
    println!(
        "resumed {target} ({n} kill{}, by {human}); notified {notified} running gateway{}",
        plural(n),
        plural(notified)
    );
    done.audited.map_err(|e| {
        Failure::failed(anyhow::Error::new(e).context("resumed, but the audit record failed"))
    })?;
    Ok(0)
}

/// Verifies `--as` against the token; every failure is exit 2 with the reason.
pub(crate) fn authenticate(
    config: &airlock_config::Config,
    args: &HumanArgs,
    env_token: Option<String>,
) -> Result<String, Failure> {
    let token = read_token(args.token_file.as_deref(), env_token)?;
    airlock_control::auth::verify_human(config, &args.as_human, &token).map_err(Failure::usage)?;
    Ok(args.as_human.clone())
}

/// The token from `--token-file` (first line), else from the environment.
fn read_token(file: Option<&Path>, env_token: Option<String>) -> Result<String, Failure> {
    let token = match file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read token file {}", path.display()))
            .map_err(Failure::usage)?,
        None => env_token.ok_or_else(|| {
            Failure::usage(anyhow!(
                "no token: set {TOKEN_ENV} or pass --token-file (`airlock token new` makes one)"
            ))
        })?,
    };
    let token = token.lines().next().unwrap_or("").trim().to_owned();
    if token.is_empty() {
        return Err(Failure::usage(anyhow!("the token is empty")));
    }
    Ok(token)
}

fn target(args: &TargetArgs) -> Result<KillTarget, Failure> {
    let t = match (
        &args.agent,
        &args.session,
        &args.human,
        &args.tool,
        args.all,
    ) {
        (Some(a), None, None, None, false) => KillTarget::Agent(a.clone()),
        (None, Some(s), None, None, false) if !s.is_empty() => KillTarget::Session(s.clone()),
        (None, None, Some(h), None, false) if !h.is_empty() => KillTarget::Human(h.clone()),
        (None, None, None, Some(t), false) => KillTarget::tool(t).map_err(Failure::usage)?,
        (None, None, None, None, true) => KillTarget::All,
        _ => {
            return Err(Failure::usage(anyhow!(
                "give exactly one of --agent, --session, --human, --tool, --all"
            )))
        }
    };
    Ok(t)
}

fn open_store(config: &airlock_config::Config) -> Result<ControlStore, Failure> {
    let db = &config.audit.path;
    ControlStore::open_with(db, durability(config))
        .with_context(|| format!("cannot open {}", db.display()))
        .map_err(Failure::failed)
}

pub(crate) fn durability(config: &airlock_config::Config) -> airlock_audit::Durability {
    airlock_control::durability(config)
}

// === status ===

pub(crate) fn status(args: StatusArgs) -> Result<u8, Failure> {
    let config = airlock_config::load(&args.config).map_err(Failure::usage)?;
    let store = open_store(&config)?;
    let kills = store.active().context("cannot read the kill state")?;
    let breakers = BreakerSet::from_config(&config);
    let now = airlock_audit::now_unix_ns();
    let levels = breakers
        .levels(&store, now)
        .context("cannot read the breaker counters")?;
    if args.json {
        let v = serde_json::json!({ "kills": kills, "breakers": levels });
        let text = serde_json::to_string_pretty(&v).context("cannot encode status")?;
        println!("{text}");
        return Ok(0);
    }
    if kills.is_empty() {
        println!("kills: none in force");
    } else {
        println!("kills ({}):", kills.len());
        println!(
            "  {:>4}  {:<8}  {:<24}  {:<10}  {:<20}  reason",
            "id", "scope", "target", "by", "since (UTC)"
        );
        for k in &kills {
            println!("  {}", kill_row(k));
        }
    }
    if levels.is_empty() {
        println!("breakers: no calls counted in any window");
    } else {
        println!("breakers:");
        println!(
            "  {:<16}  {:<16}  {:>15}  {:>15}  resets at (UTC)",
            "agent", "class", "calls", "items"
        );
        for l in &levels {
            let items = l
                .max_items
                .map_or_else(|| "-".to_owned(), |m| format!("{}/{m}", l.items));
            println!(
                "  {:<16}  {:<16}  {:>15}  {:>15}  {}",
                l.agent,
                l.class,
                format!("{}/{}", l.calls, l.max_calls),
                items,
                l.resets_at_ns.map(fmt_time).unwrap_or_default()
            );
        }
    }
    Ok(0)
}

fn kill_row(k: &Kill) -> String {
    let kind = if k.breaker_class().is_some() {
        "paused"
    } else {
        k.target.scope()
    };
    format!(
        "{:>4}  {:<8}  {:<24}  {:<10}  {:<20}  {}",
        k.id,
        kind,
        k.target.target(),
        k.by,
        fmt_time(k.created_ns),
        k.reason
    )
}

// === token ===

pub(crate) fn token(command: TokenCommand) -> Result<u8, Failure> {
    match command {
        TokenCommand::New => {
            let token = airlock_control::auth::new_token().map_err(Failure::failed)?;
            println!("token (give it to the human; it is not stored anywhere):");
            println!("  {token}");
            println!("config line for their [humans.<name>] section:");
            println!(
                "  token_sha256 = \"{}\"",
                airlock_control::auth::token_digest(&token)
            );
            Ok(0)
        }
    }
}

// === helpers ===

pub(crate) fn fmt_time(ns: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns))
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .map(|t| t.chars().take(19).collect())
        .unwrap_or_default()
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn token_comes_from_file_or_env_and_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("tok");
        std::fs::write(&f, "alt_abc\n").unwrap();
        assert_eq!(read_token(Some(&f), Some("env".into())).unwrap(), "alt_abc");
        assert_eq!(read_token(None, Some(" env \n".into())).unwrap(), "env");
        let none = read_token(None, None).unwrap_err();
        assert_eq!(none.code, 2);
        assert!(format!("{:#}", none.error).contains("AIRLOCK_TOKEN"));
        assert_eq!(read_token(None, Some("\n".into())).unwrap_err().code, 2);
    }

    #[test]
    fn targets_from_flags() {
        let t = |agent: Option<&str>, tool: Option<&str>, all| TargetArgs {
            agent: agent.map(Into::into),
            session: None,
            human: None,
            tool: tool.map(Into::into),
            all,
        };
        assert_eq!(
            target(&t(Some("bot"), None, false)).unwrap(),
            KillTarget::Agent("bot".into())
        );
        assert_eq!(target(&t(None, None, true)).unwrap(), KillTarget::All);
        assert!(target(&t(None, Some("corp"), false)).is_err());
        assert!(target(&t(Some("a"), None, true)).is_err());
    }

    /// Issue 14: a human's kill whose reason reads `breaker: …` was listed as a pause.
    #[test]
    fn status_lists_a_kill_as_a_kill_and_a_pause_as_a_pause() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = ControlStore::open(&dir.path().join("audit.db")).unwrap();
        store
            .kill(
                KillTarget::Agent("bot".into()),
                "breaker: acl-changes",
                "alice",
            )
            .unwrap();
        let trip = airlock_control::Trip {
            class: "acl-changes".into(),
            budget: "5 calls per 600 s".into(),
            resets_at_ns: 0,
        };
        store.pause("bot", &trip).unwrap();
        let kills = store.active().unwrap();
        let rows: Vec<Vec<String>> = kills
            .iter()
            .map(|k| {
                kill_row(k)
                    .split_whitespace()
                    .take(4)
                    .map(str::to_owned)
                    .collect()
            })
            .collect();
        assert_eq!(
            rows,
            [
                ["1", "agent", "bot", "alice"],
                ["2", "paused", "bot", "airlock"]
            ]
        );
        let json = serde_json::json!({ "kills": kills });
        assert_eq!(
            json["kills"][0]["origin"],
            serde_json::json!({"kind": "human"})
        );
        assert_eq!(
            json["kills"][1]["origin"],
            serde_json::json!({"kind": "breaker", "class": "acl-changes"})
        );
    }
}
