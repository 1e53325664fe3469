//! `airlock sandbox probe` and `airlock exec`: the sandbox from the command line.
//!
//! `airlock exec` exit codes: the command's own code (128 + the signal that killed it);
//! 2 bad usage or config; 1 the audit store cannot be written (the command does not run);
//! 125 the sandbox could not be set up (the message names the layer); 126 the command
//! could not be executed; 127 it was not found.

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};

use airlock_audit::{
    AuditStore, Decision, Durability, NewRecord, Reason, RecordKind, ResultStatus,
};
use airlock_sandbox::{Profile, SandboxError};
use anyhow::{anyhow, Context};
use clap::{Args, Subcommand};
use serde_json::json;

use crate::Failure;

/// Exit code when the sandbox cannot be set up (as container runtimes use it).
pub(crate) const EXIT_SANDBOX: u8 = 125;

#[derive(Subcommand, Debug)]
pub(crate) enum SandboxCommand {
    /// Print which sandbox layers this machine supports, tried for real.
    Probe,
}

#[derive(Args, Debug)]
pub(crate) struct ExecArgs {
    /// The Airlock config (TOML): its `[sandbox.profiles.*]` and `[audit]`.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// The sandbox profile (default: `default`).
    #[arg(long, value_name = "NAME", default_value = airlock_config::DEFAULT_SANDBOX_PROFILE)]
    profile: String,
    /// The agent the command runs for, recorded in the audit trail (must be in the config).
    #[arg(long, value_name = "ID")]
    agent: Option<String>,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<String>,
}

pub(crate) fn sandbox(command: SandboxCommand) -> Result<u8, Failure> {
    match command {
        SandboxCommand::Probe => {
            let report = airlock_sandbox::probe();
            print!("{report}");
            Ok(if report.all_ok() { 0 } else { 1 })
        }
    }
}

pub(crate) fn exec(args: ExecArgs) -> Result<u8, Failure> {
    let config = airlock_config::load(&args.config).map_err(Failure::usage)?;
    let Some(settings) = config.sandbox.profiles.get(&args.profile) else {
        let known: Vec<&str> = config.sandbox.profiles.keys().map(String::as_str).collect();
        return Err(Failure::usage(anyhow!(
            "unknown sandbox profile \"{}\" (known: {})",
            args.profile,
            known.join(", ")
        )));
    };
    let profile = Profile::from_config(&args.profile, settings);
    let agent = match &args.agent {
        None => None,
        Some(id) => Some((
            id,
            config.agent(id).ok_or_else(|| {
                Failure::usage(anyhow!("unknown agent \"{id}\": no [agents.{id}] section"))
            })?,
        )),
    };
    let (program, rest) = args
        .command
        .split_first()
        .ok_or_else(|| Failure::usage(anyhow!("no command given")))?;

    // Fail closed on the audit: a command whose outcome cannot be recorded does not run.
    let durability = match config.audit.durability {
        airlock_config::Durability::Process => Durability::Process,
        airlock_config::Durability::PowerLoss => Durability::PowerLoss,
    };
    let audit = AuditStore::open(&config.audit.path, durability)
        .with_context(|| {
            format!(
                "cannot open the audit store {}",
                config.audit.path.display()
            )
        })
        .map_err(Failure::failed)?;

    let argv = json!({ "argv": args.command });
    let mut record = NewRecord::now(RecordKind::Exec)
        .method("exec")
        .target(program.clone())
        .args(airlock_protocol::digest_json(&argv), &argv);
    if let Some((id, a)) = agent {
        record = record
            .agent(id.clone())
            .on_behalf_of(a.on_behalf_of.clone())
            .task(a.task.clone());
    }

    // Egress connections go into the same store as they happen, as this agent's.
    let audit = Arc::new(Mutex::new(audit));
    let egress = Arc::new(StoreEgress {
        store: Arc::clone(&audit),
        agent: agent.map(|(id, a)| (id.clone(), a.on_behalf_of.clone(), a.task.clone())),
        profile: profile.name.clone(),
    });
    let mut profile = profile;
    let result = match airlock_sandbox::resolve_program(&profile, program) {
        Some(path) => {
            profile.read_command(&path, rest);
            let mut cmd = Command::new(path);
            // It starts in its own directory: paths on its command line made absolute.
            cmd.args(airlock_sandbox::absolute_args(rest));
            airlock_sandbox::run(&profile, &mut cmd, Some(egress))
        }
        None => Err(SandboxError::Spawn(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("`{program}` is not on PATH"),
        ))),
    };
    let (record, code, failure) = match result {
        Ok(outcome) => {
            let status = match (outcome.cap_hit, outcome.code) {
                (Some(_), _) => ResultStatus::Killed,
                (None, 0) => ResultStatus::Ok,
                (None, _) => ResultStatus::Error,
            };
            let layers: Vec<&str> = outcome.layers.iter().map(|l| l.as_str()).collect();
            let record = record
                .decision(Decision::Allow)
                .status(status)
                .duration_us(u64::try_from(outcome.duration.as_micros()).unwrap_or(u64::MAX))
                .detail(&json!({
                    "profile": profile.name,
                    "layers": layers,
                    "exit_code": outcome.code,
                    "cap_hit": outcome.cap_hit,
                    "caps": outcome.caps,
                    "wall_clock_exceeded": outcome.wall_clock_exceeded,
                }));
            if let Some(cap) = outcome.cap_hit {
                eprintln!("airlock: the sandboxed command was killed: {cap} exceeded");
            }
            (record, u8::try_from(outcome.code & 0xff).unwrap_or(1), None)
        }
        Err(e) => {
            let code = match &e {
                SandboxError::Spawn(io) if io.kind() == std::io::ErrorKind::NotFound => 127,
                SandboxError::Spawn(_) => 126,
                _ => EXIT_SANDBOX,
            };
            let record = record
                .decision(Decision::Deny)
                .status(ResultStatus::SandboxError)
                .reasons([Reason::Text(e.to_string())])
                .detail(&json!({ "profile": profile.name, "error": chain(&e) }));
            (record, code, Some(e))
        }
    };
    audit
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .append(&[record])
        .context("cannot write the exec record to the audit store")
        .map_err(Failure::failed)?;
    match failure {
        None => Ok(code),
        Some(e) => Err(Failure {
            code,
            error: anyhow::Error::new(e),
        }),
    }
}

/// `airlock exec`'s egress log: each event appended to the audit store at once (an `open`
/// that cannot be appended refuses the connection).
struct StoreEgress {
    store: Arc<Mutex<AuditStore>>,
    /// Agent, on-behalf-of, task.
    agent: Option<(String, String, String)>,
    profile: String,
}

impl airlock_sandbox::EgressLog for StoreEgress {
    fn record(&self, event: &airlock_sandbox::EgressEvent) -> Result<(), String> {
        let mut record = airlock_gateway::egress_record(event, &self.profile);
        if let Some((agent, on_behalf_of, task)) = &self.agent {
            record.agent = Some(agent.clone());
            record.on_behalf_of = Some(on_behalf_of.clone());
            record.task = Some(task.clone());
        }
        self.store
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .append(&[record])
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// An error and its causes on one line, for the audit record.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
