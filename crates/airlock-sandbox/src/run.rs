//! Run one command to completion in a sandbox: what `airlock exec` needs.

use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::error::SandboxError;
use crate::profile::{Layer, Profile};

/// How a sandboxed command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The shell's convention: the exit code, or 128 + the signal that killed it.
    pub code: i32,
    /// The wall-clock cap ran out and the sandbox was killed.
    pub wall_clock_exceeded: bool,
    /// Why it ended, when a cap is the likely cause (for people and the audit trail).
    pub cap_hit: Option<&'static str>,
    /// What enforced the caps: `cgroup v2`, `cgroup v1` or `rlimits`.
    pub caps: &'static str,
    /// The layers that were in force.
    pub layers: Vec<Layer>,
    /// From spawn to exit.
    pub duration: Duration,
}

/// Starts `cmd` in `profile`'s sandbox and waits for it. Interrupts from the terminal
/// (SIGINT, SIGQUIT) reach the command and are ignored here meanwhile, as `system(3)`
/// does, so the outcome is always collected. `egress_log` records the proxy's connections
/// (required when the profile lists `egress` hosts).
pub fn run(
    profile: &Profile,
    cmd: &mut Command,
    egress_log: Option<std::sync::Arc<dyn crate::EgressLog>>,
) -> Result<Outcome, SandboxError> {
    let mut guard = crate::apply(profile, cmd)?;
    if let Some(log) = egress_log {
        guard.set_egress_log(log);
    }
    let start = Instant::now();
    let mut child = cmd.spawn().map_err(|e| guard.explain(e))?;
    // After spawn: an ignored signal would stay ignored in the command across exec.
    let _ignore = IgnoreInterrupts::new();
    if let Err(e) = guard.started(child.id()) {
        let _ = child.kill();
        let _ = child.wait();
        return Err(e);
    }
    let status = child.wait().map_err(SandboxError::Spawn)?;
    let duration = start.elapsed();
    let code = match (status.code(), status.signal()) {
        (Some(c), _) => c,
        (None, Some(sig)) => 128 + sig,
        (None, None) => 1,
    };
    let wall_clock_exceeded = guard.wall_clock_exceeded();
    let cap_hit = guard.breach(Some(code)).map(crate::Breach::describe);
    let layers = guard.layers().to_vec();
    let caps = guard.caps_mechanism();
    drop(guard);
    Ok(Outcome {
        code,
        wall_clock_exceeded,
        cap_hit,
        caps,
        layers,
        duration,
    })
}

/// SIGINT and SIGQUIT ignored while alive, the previous dispositions restored after.
struct IgnoreInterrupts {
    saved: [(libc::c_int, libc::sighandler_t); 2],
}

impl IgnoreInterrupts {
    fn new() -> Self {
        let mut saved = [
            (libc::SIGINT, libc::SIG_DFL),
            (libc::SIGQUIT, libc::SIG_DFL),
        ];
        for (sig, old) in &mut saved {
            // SAFETY: installing SIG_IGN has no handler code to be unsafe in.
            *old = unsafe { libc::signal(*sig, libc::SIG_IGN) };
        }
        Self { saved }
    }
}

impl Drop for IgnoreInterrupts {
    fn drop(&mut self) {
        for (sig, old) in self.saved {
            if old != libc::SIG_ERR {
                // SAFETY: restores the disposition `signal` returned above.
                unsafe {
                    libc::signal(sig, old);
                }
            }
        }
    }
}

/// Finds `program` (a bare name) on `PATH` as the sandbox will see it: the first match
/// beneath the profile's readable or writable paths, else the first match at all. Bare
/// names are otherwise resolved inside, where a `PATH` entry the sandbox may not read
/// turns "not found" into "permission denied".
///
/// A path (`./server`, `bin/server`, `/tmp/x/../server`) becomes its real path: the command
/// starts in a directory of its own, and the view shows granted paths at their real paths.
pub fn resolve_program(profile: &Profile, program: &str) -> Option<std::path::PathBuf> {
    if program.contains('/') {
        let path = std::path::Path::new(program);
        return path
            .canonicalize()
            .ok()
            .or_else(|| std::path::absolute(path).ok());
    }
    let path = std::env::var_os("PATH")?;
    let found: Vec<_> = std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .filter(|p| p.is_file())
        .collect();
    let visible = |p: &&std::path::PathBuf| {
        !profile.wants(Layer::Landlock)
            || profile
                .read
                .iter()
                .chain(&profile.write)
                .any(|r| p.starts_with(r))
    };
    found.iter().find(visible).or(found.first()).cloned()
}

/// The command's arguments as the sandbox passes them: an argument that names an existing
/// file or directory (the ones [`Profile::read_command`] makes readable) becomes its real path.
/// The command starts in a directory of its own (its private directory, or `/`), never in
/// Airlock's, so a relative path would name nothing; and the sandbox's filesystem view shows a
/// granted path beneath a hidden directory (`/tmp`, a home) at its real path only, so a path
/// through `..` or a symlink there would name nothing either.
pub fn absolute_args(args: &[String]) -> Vec<String> {
    args.iter()
        .map(|a| {
            let p = std::path::Path::new(a);
            if a.is_empty() || !p.exists() {
                return a.clone();
            }
            p.canonicalize()
                .ok()
                .and_then(|real| real.into_os_string().into_string().ok())
                .unwrap_or_else(|| a.clone())
        })
        .collect()
}
