//! `airlock audit`: verify the hash chain, query the trail, and keep the anchor.

use std::path::{Path, PathBuf};

use airlock_audit::{Query, StoredRecord};
use anyhow::Context;
use clap::Subcommand;

use crate::Failure;

#[derive(Subcommand, Debug)]
pub(crate) enum AuditCommand {
    /// Check every record's hash and the chain head against the anchor.
    Verify {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// An anchor file kept elsewhere (default: the config's audit anchor).
        #[arg(long, value_name = "FILE")]
        anchor: Option<PathBuf>,
    },
    /// What did an agent do, and why was it allowed?
    Query {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        #[arg(long, value_name = "ID")]
        agent: Option<String>,
        /// A tool (or resource/prompt) name.
        #[arg(long, value_name = "T")]
        tool: Option<String>,
        /// RFC 3339 time (2026-11-25T10:00:00Z) or a duration ago (10m, 2h, 1d).
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        #[arg(long, value_name = "allow|deny", value_parser = ["allow", "deny", "hold"])]
        decision: Option<String>,
        /// Record kind (call, result, config_load, ...); default: all.
        #[arg(long, value_name = "KIND")]
        kind: Option<String>,
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Write the current chain head to the anchor file (or print it), for an operator to keep
    /// somewhere the audit database's writers cannot reach.
    Anchor {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Where to write it (default: the config's audit anchor); `-` prints it.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
}

pub(crate) fn audit(command: AuditCommand) -> Result<u8, Failure> {
    match command {
        AuditCommand::Verify { config, anchor } => verify(&config, anchor),
        AuditCommand::Query {
            config,
            agent,
            tool,
            since,
            decision,
            kind,
            limit,
            json,
        } => {
            let since_unix_ns = since.as_deref().map(parse_since).transpose()?;
            let query = Query {
                agent,
                target: tool,
                since_unix_ns,
                decision,
                kind,
                limit,
            };
            query_cmd(&config, &query, json)
        }
        AuditCommand::Anchor { config, out } => anchor(&config, out),
    }
}

/// Folds what crashed gateways left in their spools into the chain, so every reader sees
/// every record a gateway acted on.
pub(crate) fn recover_spools(config: &airlock_config::Config) -> Result<(), Failure> {
    if !airlock_audit::spool_dir(&config.audit.path).exists() {
        return Ok(());
    }
    let mut store =
        airlock_audit::AuditStore::open(&config.audit.path, airlock_audit::Durability::Process)
            .with_context(|| format!("cannot open {}", config.audit.path.display()))?;
    let added = airlock_audit::recover(&config.audit.path, &mut store)
        .context("cannot recover spooled records")?;
    if added > 0 {
        eprintln!("airlock: recovered {added} record(s) a stopped gateway had not yet chained");
    }
    Ok(())
}

fn verify(config: &Path, anchor: Option<PathBuf>) -> Result<u8, Failure> {
    let config = airlock_config::load(config).map_err(Failure::usage)?;
    recover_spools(&config)?;
    let anchor = anchor.unwrap_or_else(|| config.audit.anchor.clone());
    let anchor_opt = anchor.exists().then_some(anchor.as_path());
    let report = airlock_audit::verify(&config.audit.path, anchor_opt)
        .with_context(|| format!("cannot read {}", config.audit.path.display()))?;
    match report.problem {
        None => {
            let head = report.head.map_or_else(
                || "empty".to_string(),
                |h| format!("head {} {}", h.seq, h.hash),
            );
            let anchored = if anchor_opt.is_some() {
                format!("anchor {} matches", anchor.display())
            } else {
                "no anchor file: tail truncation cannot be ruled out".to_string()
            };
            println!("ok: {} records intact; {head}; {anchored}", report.count);
            Ok(0)
        }
        Some(problem) => {
            println!("TAMPERED: {}", problem.what);
            println!("first bad record: {}", problem.seq);
            Ok(1)
        }
    }
}

fn query_cmd(config: &Path, query: &Query, json: bool) -> Result<u8, Failure> {
    let config = airlock_config::load(config).map_err(Failure::usage)?;
    recover_spools(&config)?;
    let store = airlock_audit::AuditStore::open_read_only(&config.audit.path)
        .with_context(|| format!("cannot open {}", config.audit.path.display()))?;
    let records = store.query(query).context("audit query failed")?;
    if json {
        let text = serde_json::to_string_pretty(&records).context("cannot encode records")?;
        println!("{text}");
        return Ok(0);
    }
    println!(
        "{:>6}  {:<23}  {:<11}  {:<14}  {:<10}  {:<18}  {:<6}  {:<9}  why",
        "seq", "time (UTC)", "kind", "agent", "for", "target", "dec.", "result"
    );
    for r in &records {
        println!("{}", table_row(r));
    }
    Ok(0)
}

pub(crate) fn table_row(r: &StoredRecord) -> String {
    let time = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(r.time_unix_ns))
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .map(|t| t.chars().take(23).collect::<String>())
        .unwrap_or_default();
    let result = match (&r.result_status, r.result_duration_us) {
        (Some(s), Some(d)) => format!("{s} {d}µs"),
        (Some(s), None) => s.clone(),
        _ => r.status.clone().unwrap_or_default(),
    };
    format!(
        "{:>6}  {:<23}  {:<11}  {:<14}  {:<10}  {:<18}  {:<6}  {:<9}  {}",
        r.seq,
        time,
        r.kind,
        r.agent.as_deref().unwrap_or("-"),
        r.on_behalf_of.as_deref().unwrap_or("-"),
        r.target.as_deref().or(r.method.as_deref()).unwrap_or("-"),
        r.decision.as_deref().unwrap_or("-"),
        result,
        r.reasons.join(", ")
    )
}

fn anchor(config: &Path, out: Option<PathBuf>) -> Result<u8, Failure> {
    let config = airlock_config::load(config).map_err(Failure::usage)?;
    let store = airlock_audit::AuditStore::open_read_only(&config.audit.path)
        .with_context(|| format!("cannot open {}", config.audit.path.display()))?;
    let Some(head) = store.head().context("cannot read the chain head")? else {
        println!("the audit trail is empty; nothing to anchor");
        return Ok(0);
    };
    match out {
        Some(p) if p.as_os_str() == "-" => {
            println!(
                "{}",
                serde_json::json!({ "seq": head.seq, "hash": head.hash })
            );
        }
        other => {
            let path = other.unwrap_or_else(|| config.audit.anchor.clone());
            airlock_audit::write_anchor(&head, &path).context("cannot write the anchor")?;
            println!(
                "anchored record {} ({}) in {}",
                head.seq,
                head.hash,
                path.display()
            );
        }
    }
    Ok(0)
}

/// `--since`: an RFC 3339 time, or a duration before now.
fn parse_since(text: &str) -> Result<i64, Failure> {
    if let Ok(t) = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
    {
        return i64::try_from(t.unix_timestamp_nanos())
            .map_err(|_| Failure::usage(anyhow::anyhow!("--since {text}: out of range")));
    }
    let ago = humantime::parse_duration(text).map_err(|e| {
        Failure::usage(anyhow::anyhow!(
            "--since {text}: not an RFC 3339 time or a duration like 10m ({e})"
        ))
    })?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
    i64::try_from(now - i128::try_from(ago.as_nanos()).unwrap_or(i128::MAX))
        .map_err(|_| Failure::usage(anyhow::anyhow!("--since {text}: out of range")))
}
