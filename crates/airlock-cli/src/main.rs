//! `airlock`: the command-line front of the Airlock gateway. Glue only: each subcommand loads
//! what it needs from the library crates and maps their errors to exit codes.
//!
//! Exit codes: 0 success; 1 a failed check (a broken audit chain, a failed demo step);
//! 2 bad usage, config, policy or schema; 3 the upstream server exited under `airlock run`.

mod agents_cmd;
mod approvals_cmd;
mod audit_cmd;
mod check;
mod control_cmd;
mod demo;
mod load;
mod mcp_mount;
mod memory;
mod run;
mod sandbox_cmd;
mod serve_cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Airlock: a hard gateway for AI agents' tool calls.
#[derive(Parser, Debug)]
#[command(name = "airlock", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run an MCP server behind Airlock over stdio: the agent talks to this process.
    Run(run::RunArgs),
    /// Validate a config and its policies, and summarise them.
    Check {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Inspect the audit trail.
    Audit {
        #[command(subcommand)]
        command: audit_cmd::AuditCommand,
    },
    /// Inspect the sandbox Airlock puts around the processes it starts.
    Sandbox {
        #[command(subcommand)]
        command: sandbox_cmd::SandboxCommand,
    },
    /// Run a command inside a sandbox profile, with its outcome audited.
    Exec(sandbox_cmd::ExecArgs),
    /// Stop an agent, a session, a tool or everything at once (as a named human).
    Kill(control_cmd::KillArgs),
    /// Lift a kill or a breaker pause (as a named human).
    Resume(control_cmd::ResumeArgs),
    /// Kills and pauses in force, and breaker levels per agent and class.
    Status(control_cmd::StatusArgs),
    /// The approval queue: list, show, approve, deny held calls (as a named human).
    Approvals {
        #[command(subcommand)]
        command: approvals_cmd::ApprovalsCommand,
    },
    /// Agents registered in the audit database, each with a token of its own.
    Agents {
        #[command(subcommand)]
        command: agents_cmd::AgentsCommand,
    },
    /// Human credentials (`airlock token new`).
    Token {
        #[command(subcommand)]
        command: control_cmd::TokenCommand,
    },
    /// The control plane: HTTP API, web page and webhook for approvals and the kill switch.
    Serve(serve_cmd::ServeArgs),
    /// Replay the incidents Airlock exists for, without and with Airlock, and measure the damage.
    Demo(demo::DemoArgs),
    /// Run the bundled demo company MCP server on stdio.
    #[command(name = "demo-server", hide = true)]
    DemoServer {
        /// Where the company's state lives (JSON).
        #[arg(long, value_name = "FILE")]
        state: PathBuf,
        /// Start from the seed state even if the file exists.
        #[arg(long)]
        reset: bool,
    },
}

/// A failure with the exit code it maps to.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) code: u8,
    pub(crate) error: anyhow::Error,
}

impl Failure {
    pub(crate) fn usage(error: impl Into<anyhow::Error>) -> Self {
        Self {
            code: 2,
            error: error.into(),
        }
    }
    pub(crate) fn failed(error: impl Into<anyhow::Error>) -> Self {
        Self {
            code: 1,
            error: error.into(),
        }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        Self::failed(error)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run::run(args),
        Command::Check { config } => check::check(&config),
        Command::Audit { command } => audit_cmd::audit(command),
        Command::Demo(args) => demo::demo(args),
        Command::Sandbox { command } => sandbox_cmd::sandbox(command),
        Command::Kill(args) => control_cmd::kill(args),
        Command::Resume(args) => control_cmd::resume(args),
        Command::Status(args) => control_cmd::status(args),
        Command::Token { command } => control_cmd::token(command),
        Command::Agents { command } => agents_cmd::agents(command),
        Command::Approvals { command } => approvals_cmd::approvals(command),
        Command::Exec(args) => sandbox_cmd::exec(args),
        Command::Serve(args) => serve_cmd::serve(args),
        Command::DemoServer { state, reset } => demo_server(state, reset),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(Failure { code, error }) => {
            eprintln!("airlock: {error:#}");
            ExitCode::from(code)
        }
    }
}

fn demo_server(state: PathBuf, reset: bool) -> Result<u8, Failure> {
    init_logging("info");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Failure::failed)?;
    runtime
        .block_on(airlock_demo_server::serve_stdio(
            airlock_demo_server::DemoOptions {
                state_path: state,
                reset,
            },
        ))
        .map_err(Failure::failed)?;
    Ok(0)
}

/// Logs go to stderr (stdout may be the protocol); `AIRLOCK_LOG` overrides the level.
pub(crate) fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("AIRLOCK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(true);
    // `AIRLOCK_LOG_FORMAT=json`: one JSON object per line, fields as keys, for a log pipeline.
    let _ = if std::env::var("AIRLOCK_LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().try_init()
    } else {
        builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init()
    };
}

/// Locks `m`; a poisoned lock's data is plain and still usable.
pub(crate) fn lock_std<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
