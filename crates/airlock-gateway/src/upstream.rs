//! The upstream MCP server: a child process spoken to over its stdin/stdout, started inside
//! its sandbox profile (or, only when the config says `sandbox = "off"`, without one).
//!
//! Ending it ends everything it started: the child has a process group of its own, and in a
//! sandbox that child is the supervisor of a PID namespace (and a cgroup where the host
//! allows one), so a SIGKILL to the group takes the whole tree down, whatever it forked or
//! re-grouped. Without a sandbox the child is a keeper ([`airlock_sandbox::end_with_parent`])
//! leading the group the server runs in: the group is SIGKILLed whenever a session ends, and
//! the keeper SIGKILLs it if Airlock dies first. Either way the tree dies with Airlock, even a
//! `kill -9`ed one (parent-death signals). When a sandbox cap ends the server, its exit says
//! which cap, so the calls it leaves unanswered get that reason, and the breach is recorded
//! (`sandbox_breach`).
//!
//! An unsandboxed server gets a minimal environment plus what its `env` lists, never
//! Airlock's own credentials. Either way, the upstream credentials its config gives it
//! (`[servers.<id>.credentials] env`, resolved by `airlock-broker`) are added last.

use std::fmt;
use std::io;
use std::os::unix::process::CommandExt;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use airlock_audit::{AuditWriter, NewRecord, RecordKind, Submission};
use airlock_broker::Secret;
use airlock_sandbox::{Breach, EgressEvent, EgressLog, EgressPhase, Profile, SandboxGuard};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde_json::json;
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};

use crate::Identity;

/// The audit kind of a sandbox cap that ended an upstream.
pub const SANDBOX_BREACH: RecordKind = RecordKind::SandboxBreach;

/// A started upstream server, its three pipes taken out for the gateway's tasks.
pub struct Upstream {
    pub(crate) child: UpstreamChild,
    pub(crate) stdin: ChildStdin,
    pub(crate) stdout: ChildStdout,
    pub(crate) stderr: ChildStderr,
    pub(crate) pid: Option<u32>,
}

/// How the upstream is boxed in.
pub enum UpstreamSandbox {
    /// Inside `profile`; egress connections and cap breaches are audited as `identity`.
    Profile {
        profile: Box<Profile>,
        audit: Arc<AuditWriter>,
        identity: Identity,
    },
    /// `sandbox = "off"` in the config: no sandbox at all. The environment is still Airlock's
    /// choice: [`airlock_config::OFF_BASE_ENV`] and the server's `env` names, nothing else
    /// (never `AIRLOCK_TOKEN`: the server could act as the human with it).
    Off {
        /// The server's `env` list.
        env: Vec<String>,
    },
}

/// Why an upstream did not start.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// A sandbox layer could not be set up: fail closed, the server does not run.
    #[error("the upstream server was not started")]
    Sandbox(#[from] airlock_sandbox::SandboxError),
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// The child process and, when sandboxed, the guard that owns its sandbox (dropped with
/// it: the sandbox is killed and cleaned up).
pub(crate) struct UpstreamChild {
    child: Child,
    sandbox: Option<Sandboxed>,
}

struct Sandboxed {
    guard: SandboxGuard,
    /// The breach is recorded once, however often the exit is asked for.
    recorded: bool,
    profile: String,
    audit: Arc<AuditWriter>,
    identity: Identity,
}

/// How an upstream ended: its status and the sandbox cap that ended it, if one did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UpstreamExit {
    status: ExitStatus,
    breach: Option<Breach>,
}

impl fmt::Display for UpstreamExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.status)?;
        if let Some(b) = self.breach {
            write!(f, "; killed by Airlock's sandbox at its {}", b.describe())?;
        }
        Ok(())
    }
}

impl Upstream {
    /// Starts `command` with piped stdio in a process group of its own, inside `sandbox`.
    /// Every layer the profile asks for is enforced or the server does not start; the error
    /// names the layer.
    pub fn spawn(command: &[String], sandbox: UpstreamSandbox) -> Result<Upstream, SpawnError> {
        Upstream::spawn_with_env(command, sandbox, &[])
    }

    /// [`Upstream::spawn`], with `credentials` added to the server's environment (after the
    /// sandbox or `sandbox = "off"` cleared it down to what they allow).
    pub fn spawn_with_env(
        command: &[String],
        sandbox: UpstreamSandbox,
        credentials: &[(String, Secret)],
    ) -> Result<Upstream, SpawnError> {
        let (program, args) = command.split_first().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "no upstream command given")
        })?;
        let (mut cmd, sandboxed) = match sandbox {
            UpstreamSandbox::Off { env } => {
                let mut cmd = std::process::Command::new(program);
                cmd.args(args);
                off_env(&mut cmd, &env);
                // No PID namespace holds the tree: a keeper ends it if Airlock dies.
                airlock_sandbox::end_with_parent(&mut cmd);
                (cmd, None)
            }
            UpstreamSandbox::Profile {
                profile,
                audit,
                identity,
            } => {
                let mut profile = *profile;
                let path = airlock_sandbox::resolve_program(&profile, program)
                    .ok_or_else(|| not_found(program))?;
                // The server's own program and the paths on its command line are readable.
                profile.read_command(&path, args);
                let mut cmd = std::process::Command::new(&path);
                // It starts in its own directory: paths on its command line made absolute.
                cmd.args(airlock_sandbox::absolute_args(args));
                let mut guard = airlock_sandbox::apply(&profile, &mut cmd)?;
                guard.set_egress_log(Arc::new(AuditedEgress {
                    audit: Arc::clone(&audit),
                    identity: identity.clone(),
                    profile: profile.name.clone(),
                }));
                let sandboxed = Sandboxed {
                    guard,
                    recorded: false,
                    profile: profile.name.clone(),
                    audit,
                    identity,
                };
                (cmd, Some(sandboxed))
            }
        };
        credential_env(&mut cmd, credentials);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut cmd = Command::from(cmd);
        cmd.kill_on_drop(true);
        let mut sandboxed = sandboxed;
        let mut child = cmd.spawn().map_err(|e| match &sandboxed {
            Some(s) => SpawnError::Sandbox(s.guard.explain(e)),
            None => SpawnError::Io(io::Error::new(
                e.kind(),
                format!("cannot start `{program}`: {e}"),
            )),
        })?;
        let pid = child.id();
        if let (Some(s), Some(id)) = (sandboxed.as_mut(), pid) {
            s.guard.started(id)?;
            tracing::info!(
                profile = %s.profile,
                layers = ?s.guard.layers(),
                caps = s.guard.caps_mechanism(),
                "upstream started in its sandbox"
            );
        }
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(io::Error::other("upstream pipes were not created").into());
        };
        Ok(Upstream {
            child: UpstreamChild {
                child,
                sandbox: sandboxed,
            },
            stdin,
            stdout,
            stderr,
            pid,
        })
    }
}

/// The environment of an unsandboxed server: the basics and what its `env` lists; everything
/// else Airlock has (its own `AIRLOCK_*` first) stays out.
fn off_env(cmd: &mut std::process::Command, listed: &[String]) {
    cmd.env_clear();
    let names = airlock_config::OFF_BASE_ENV
        .iter()
        .copied()
        .chain(listed.iter().map(String::as_str));
    for name in names {
        // The config refuses such a name; this is the last line.
        if name
            .to_ascii_uppercase()
            .starts_with(airlock_config::AIRLOCK_ENV_PREFIX)
        {
            continue;
        }
        if let Some(value) = std::env::var_os(name) {
            cmd.env(name, value);
        }
    }
}

/// The server's upstream credentials, on top of the environment it was left with.
fn credential_env(cmd: &mut std::process::Command, credentials: &[(String, Secret)]) {
    for (name, value) in credentials {
        // The config refuses these; this is the last line.
        let airlock_own = name
            .to_ascii_uppercase()
            .starts_with(airlock_config::AIRLOCK_ENV_PREFIX);
        if airlock_own || name.is_empty() || name.contains(['=', '\0']) {
            continue;
        }
        if value.expose().contains('\0') {
            continue;
        }
        cmd.env(name, value.expose());
    }
}

fn not_found(program: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("cannot start `{program}`: not found on PATH"),
    )
}

impl UpstreamChild {
    /// Waits for the server to exit; says which sandbox cap ended it, if one did, and
    /// records that breach. Cancel-safe (the gateway selects on it).
    pub(crate) async fn wait(&mut self) -> io::Result<UpstreamExit> {
        let status = self.child.wait().await?;
        let breach = self.sandbox.as_ref().and_then(|s| {
            let code = std::os::unix::process::ExitStatusExt::signal(&status)
                .map(|sig| 128 + sig)
                .or(status.code());
            s.guard.breach(code)
        });
        if let (Some(b), Some(s)) = (breach, self.sandbox.as_mut()) {
            if !s.recorded {
                s.recorded = true;
                s.record_breach(b, &status);
            }
        }
        Ok(UpstreamExit { status, breach })
    }
}

impl Sandboxed {
    fn record_breach(&self, breach: Breach, status: &ExitStatus) {
        tracing::warn!(profile = %self.profile, cap = breach.describe(), "the upstream hit a sandbox cap and was stopped");
        let mut record = identity_record(SANDBOX_BREACH, &self.identity);
        record.status = Some(airlock_audit::ResultStatus::Killed);
        record.reasons = vec![breach.as_str().to_owned()];
        record.detail = Some(json!({
            "profile": self.profile,
            "cap": breach.as_str(),
            "caps_mechanism": self.guard.caps_mechanism(),
            "exit": status.to_string(),
        }));
        if let Err(e) = self.audit.submit(vec![Submission::from(record)]) {
            tracing::error!(error = %e, "cannot record the sandbox breach");
        }
    }
}

fn identity_record(kind: RecordKind, who: &Identity) -> NewRecord {
    let mut record = NewRecord::now(kind);
    record.agent = Some(who.agent.clone());
    record.on_behalf_of = Some(who.on_behalf_of.clone());
    record.task = Some(who.task.clone());
    record.session = Some(who.session.clone());
    record.server = Some(who.server.clone());
    record
}

/// The audit record of one egress event (kind `egress`): `decision` allow or deny, `status`
/// `open`, `closed` or `refused`, the host and port as `target`, bytes and duration.
pub fn egress_record(event: &EgressEvent, profile: &str) -> NewRecord {
    let mut record = NewRecord::now(RecordKind::Egress);
    record.method = Some("egress/connect".into());
    record.target = Some(format!("{}:{}", event.host, event.port));
    record.decision = Some(match event.phase {
        EgressPhase::Refused => airlock_audit::Decision::Deny,
        EgressPhase::Open | EgressPhase::Closed => airlock_audit::Decision::Allow,
    });
    record.status = Some(match event.phase {
        EgressPhase::Refused => airlock_audit::ResultStatus::Refused,
        EgressPhase::Open => airlock_audit::ResultStatus::Open,
        EgressPhase::Closed => airlock_audit::ResultStatus::Closed,
    });
    record.reasons = vec![event.reason.clone()];
    record.duration_us = Some(u64::try_from(event.duration.as_micros()).unwrap_or(u64::MAX));
    record.detail = Some(json!({
        "profile": profile,
        "conn": event.conn,
        "host": event.host,
        "port": event.port,
        "bytes_out": event.bytes_out,
        "bytes_in": event.bytes_in,
    }));
    record
}

/// Egress events into the audit chain, as this session's.
struct AuditedEgress {
    audit: Arc<AuditWriter>,
    identity: Identity,
    profile: String,
}

impl EgressLog for AuditedEgress {
    fn record(&self, event: &EgressEvent) -> Result<(), String> {
        let mut record = egress_record(event, &self.profile);
        let who = identity_record(RecordKind::Egress, &self.identity);
        record.agent = who.agent;
        record.on_behalf_of = who.on_behalf_of;
        record.task = who.task;
        record.session = who.session;
        record.server = who.server;
        self.audit
            .submit(vec![Submission::from(record)])
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// Waits for the child to exit on its own for `grace`, then ends its whole process group:
/// SIGTERM, a second grace period, SIGKILL. This is the MCP stdio shutdown sequence. However
/// the child ended, its group gets a SIGKILL last: a process it forked outlives it otherwise
/// (one that ignores SIGTERM, or that the server never waited for), and the session's end is
/// the end of everything the server started.
pub(crate) async fn shut_down(
    child: &mut UpstreamChild,
    pid: Option<u32>,
    grace: Duration,
) -> io::Result<UpstreamExit> {
    let status = match tokio::time::timeout(grace, child.wait()).await {
        Ok(status) => status,
        Err(_) => {
            signal_group(pid, Signal::SIGTERM);
            match tokio::time::timeout(grace, child.wait()).await {
                Ok(status) => status,
                Err(_) => {
                    signal_group(pid, Signal::SIGKILL);
                    child.wait().await
                }
            }
        }
    };
    signal_group(pid, Signal::SIGKILL);
    status
}

/// Signals the child's process group (its pid is the group id, see `process_group(0)`).
/// In a sandbox the group leader is the supervisor: its death takes the PID namespace down.
pub(crate) fn signal_group(pid: Option<u32>, signal: Signal) {
    let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) else {
        return;
    };
    if pid <= 1 {
        return;
    }
    // The group may already be gone; there is nothing more to do then.
    let _ = killpg(Pid::from_raw(pid), signal);
}

/// A started upstream taken apart for a transport that drives its pipes itself (the HTTP
/// gateway's stdio upstreams): the three pipes and the process.
pub struct UpstreamParts {
    pub stdin: ChildStdin,
    pub stdout: ChildStdout,
    pub stderr: ChildStderr,
    pub process: UpstreamProcess,
}

/// The upstream process (and its sandbox, ended with it).
pub struct UpstreamProcess {
    child: UpstreamChild,
    pid: Option<u32>,
}

impl Upstream {
    /// The pipes and the process, for a transport of its own.
    pub fn into_parts(self) -> UpstreamParts {
        UpstreamParts {
            stdin: self.stdin,
            stdout: self.stdout,
            stderr: self.stderr,
            process: UpstreamProcess {
                child: self.child,
                pid: self.pid,
            },
        }
    }
}

impl UpstreamProcess {
    /// Waits for the process to exit; the text says how it ended.
    pub async fn wait(&mut self) -> String {
        match self.child.wait().await {
            Ok(exit) => exit.to_string(),
            Err(e) => e.to_string(),
        }
    }

    /// Ends the process group now (a kill, or the session's end after its grace).
    pub fn kill(&self) {
        signal_group(self.pid, Signal::SIGKILL);
    }

    /// SIGTERM, up to `grace` to exit, then SIGKILL; the whole group goes.
    pub async fn shut_down(mut self, grace: Duration) {
        let _ = shut_down(&mut self.child, self.pid, grace).await;
    }
}
