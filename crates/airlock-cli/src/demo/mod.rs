//! `airlock demo`: the incidents Airlock exists for, replayed twice each — straight against the
//! demo company server, then through Airlock with the shipped policies — with the damage
//! measured from the server's own state file, never from what an agent claims.
//!
//! Everything is real: the demo writes the example config and policies into a work directory,
//! starts `airlock demo-server` (directly, or under `airlock run`, this same binary), speaks MCP
//! to it over stdio from deterministic scripted agents, acts as the human through the real CLI
//! (`airlock kill`, `airlock approvals`), and verifies the audit chain at the end.

mod agent;
mod report;
mod run;
mod scripts;

use std::path::{Path, PathBuf};
use std::time::Instant;

use airlock_audit::Query;
use anyhow::{anyhow, Context};
use clap::Args;
use serde_json::json;

use crate::Failure;
use report::{Figures, ScenarioReport};
use run::{Ctx, Env, Mode};
use scripts::SCENARIOS;

const CONFIG: &str = include_str!("../../../../examples/demo/airlock.toml");
const POLICIES: &str = include_str!("../../../../examples/demo/policies/corp.cedar");
/// Humans in the demo config who act through the CLI; each gets the run's token.
const HUMANS: &[&str] = &["alice", "bob", "carol", "priya"];
/// The breaker class that bounds the ACL incident.
const ACL_BREAKER: &str = "acl-changes";

#[derive(Args, Debug)]
pub(crate) struct DemoArgs {
    /// Keep the demo's files (config, policies, company states, audit database) in this directory.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// One JSON object instead of the table (schema in docs/demo.md).
    #[arg(long)]
    json: bool,
    /// Run only this scenario (forum-advice, acl-widening, inbox-stop, miner, exfiltration, relay).
    #[arg(long, value_name = "NAME")]
    scenario: Option<String>,
    /// Wait for a real human's decisions (approvals, the kill) from the web page or the CLI.
    #[arg(long)]
    interactive: bool,
}

pub(crate) fn demo(args: DemoArgs) -> Result<u8, Failure> {
    let started = Instant::now();
    let selected: Vec<&scripts::Scenario> = match &args.scenario {
        None => SCENARIOS.iter().collect(),
        Some(name) => {
            let s = SCENARIOS.iter().find(|s| s.name == name).ok_or_else(|| {
                let names: Vec<&str> = SCENARIOS.iter().map(|s| s.name).collect();
                Failure::usage(anyhow!(
                    "unknown scenario {name:?} (scenarios: {})",
                    names.join(", ")
                ))
            })?;
            vec![s]
        }
    };
    let (dir, _temp) = work_dir(args.dir.as_deref())?;
    let token = airlock_control::auth::new_token().map_err(Failure::failed)?;
    let config_path = write_files(&dir, &airlock_control::auth::token_digest(&token))?;
    // Refuse early, with file:line:col, if the shipped config or policies do not load.
    crate::load::load(&config_path)?;
    let config = airlock_config::load(&config_path).map_err(Failure::usage)?;
    let budget = config
        .breakers
        .classes
        .get(ACL_BREAKER)
        .map_or(0, |c| c.max_calls);
    let env = Env {
        exe: demo_exe(&dir)?,
        dir: dir.clone(),
        config: config_path.clone(),
        token,
        interactive: args.interactive,
    };
    if !args.json {
        println!("Airlock demo: each incident replayed without Airlock, then through it");
        println!("work directory: {}", dir.display());
        println!();
    }

    let mut runs = Vec::new();
    for s in &selected {
        if !args.json {
            println!("running {} …", s.name);
        }
        let without = run::run_once(&env, Mode::Without, s.name, s.script)?;
        let since_ns = airlock_audit::now_unix_ns();
        let with = run::run_once(&env, Mode::With, s.name, s.script)?;
        runs.push((*s, without, with, since_ns));
    }

    crate::audit_cmd::recover_spools(&config)?;
    let store = airlock_audit::AuditStore::open_read_only(&config.audit.path)
        .context("cannot open the audit store")?;
    let records = store
        .query(&Query::default())
        .context("audit query failed")?;
    let shown_config = config_path.display().to_string();
    let reports: Vec<ScenarioReport> = runs
        .into_iter()
        .map(|(s, without, with, since_ns)| {
            let sessions: Vec<String> = s
                .agents
                .iter()
                .map(|a| Ctx::session_name(s.name, a))
                .collect();
            let audit = report::summarise(&records, s, &sessions, since_ns, &shown_config);
            let (fw, fa) = (Figures::of(&without), Figures::of(&with));
            let verdict = report::verdict(s.metric, &fw, &fa, &audit, budget).to_owned();
            ScenarioReport {
                name: s.name,
                title: s.title,
                metric: s.metric,
                without: fw,
                with: fa,
                verdict,
                audit,
                runs: [without, with],
            }
        })
        .collect();

    crate::run::update_anchor(&config.audit.path, &config.audit.anchor);
    let verified = airlock_audit::verify(&config.audit.path, Some(&config.audit.anchor))
        .context("audit verify failed")?;
    let unexpected = reports.iter().filter(|r| r.verdict == "unexpected").count();
    let chain_ok = verified.problem.is_none();
    let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);

    if args.json {
        let out = json!({
            "work_dir": dir,
            "config": config_path,
            "review_window_minutes": airlock_demo_server::REVIEW_WINDOW_MINUTES,
            "acl_breaker_budget": budget,
            "scenarios": reports,
            "audit": {
                "records": verified.count,
                "verified": chain_ok,
                "problem": verified.problem.as_ref().map(|p| json!({"seq": p.seq, "what": p.what})),
            },
            "elapsed_ms": elapsed_ms,
        });
        let text = serde_json::to_string_pretty(&out).context("cannot encode the report")?;
        println!("{text}");
    } else {
        println!();
        report::print_table(&reports);
        println!();
        println!(
            "Damage is measured from each run's company state ({}/company/<scenario>-with[out]-airlock.json)",
            dir.display()
        );
        println!(
            "over a {}-minute review window of company time (one minute per change the server makes).",
            airlock_demo_server::REVIEW_WINDOW_MINUTES
        );
        match &verified.problem {
            None => println!(
                "airlock audit verify: ok, {} records intact, chain head anchored",
                verified.count
            ),
            Some(p) => println!(
                "airlock audit verify: TAMPERED at record {}: {}",
                p.seq, p.what
            ),
        }
        println!("finished in {:.1} s", started.elapsed().as_secs_f64());
        if args.dir.is_none() {
            println!("(the work directory is removed now; run with --dir DIR to keep it for the queries above)");
        }
    }
    if unexpected > 0 || !chain_ok {
        if !args.json {
            println!("{unexpected} scenario(s) did not go as expected");
        }
        return Ok(1);
    }
    Ok(0)
}

/// The directory to work in: `--dir`, or a temporary one removed at the end.
fn work_dir(dir: Option<&Path>) -> Result<(PathBuf, Option<tempfile::TempDir>), Failure> {
    match dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            Ok((dir.to_path_buf(), None))
        }
        None => {
            let temp = tempfile::Builder::new()
                .prefix("airlock-demo-")
                .tempdir()
                .context("cannot create a work directory")?;
            Ok((temp.path().to_path_buf(), Some(temp)))
        }
    }
}

/// Writes the example config (with this run's token digest for each human) and the policies;
/// removes what a previous run left, so every run starts from a fresh audit trail.
fn write_files(dir: &Path, digest: &str) -> Result<PathBuf, Failure> {
    // The sandboxed company server writes only `company/` (the config's `demo` profile).
    // As root it runs as `nobody`: the directory must be reachable, and its own writable.
    let company = dir.join("company");
    std::fs::create_dir_all(&company).context("cannot create the company directory")?;
    if airlock_sandbox::runs_as_nobody() {
        use std::os::unix::fs::PermissionsExt;
        let perms = |mode| std::fs::Permissions::from_mode(mode);
        let mode = std::fs::metadata(dir)
            .map(|m| m.permissions().mode())
            .unwrap_or(0o700);
        std::fs::set_permissions(dir, perms(mode | 0o011))
            .and_then(|()| std::fs::set_permissions(&company, perms(0o777)))
            .context("cannot open the company directory to the sandboxed server")?;
    }
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies).context("cannot create the policies directory")?;
    std::fs::write(policies.join("corp.cedar"), POLICIES).context("cannot write the policies")?;
    let mut config = CONFIG.to_owned();
    for human in HUMANS {
        let header = format!("[humans.{human}]\n");
        if !config.contains(&header) {
            return Err(Failure::failed(anyhow!(
                "the demo config has no [humans.{human}]"
            )));
        }
        config = config.replace(&header, &format!("{header}token_sha256 = \"{digest}\"\n"));
    }
    let config_path = dir.join("airlock.toml");
    std::fs::write(&config_path, config).context("cannot write the config")?;
    for stale in [
        "audit.db",
        "audit.db-wal",
        "audit.db-shm",
        "audit.db.anchor",
    ] {
        let _ = std::fs::remove_file(dir.join(stale));
    }
    let _ = std::fs::remove_dir_all(airlock_audit::spool_dir(&dir.join("audit.db")));
    for s in SCENARIOS {
        let _ = std::fs::remove_file(dir.join(format!("{}.log", s.name)));
    }
    Ok(config_path)
}

/// The `airlock` binary the demo starts its servers and gateways with. As root the sandboxed
/// demo server runs as `nobody`, who may not reach a binary inside the checkout (a clone in a
/// `mktemp -d` folder is mode 0700): then a link or copy in the work directory serves.
fn demo_exe(dir: &Path) -> Result<PathBuf, Failure> {
    let exe = std::env::current_exe().context("cannot find the airlock binary")?;
    if !airlock_sandbox::runs_as_nobody() {
        return Ok(exe);
    }
    let placed = dir.join("airlock");
    if std::fs::hard_link(&exe, &placed).is_err() {
        std::fs::copy(&exe, &placed)
            .with_context(|| format!("cannot place the airlock binary in {}", dir.display()))?;
    }
    Ok(placed)
}
