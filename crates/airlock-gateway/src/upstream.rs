//! The upstream MCP server: a child process spoken to over its stdin/stdout.

use std::io;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};

/// A started upstream server, its three pipes taken out for the gateway's tasks.
pub struct Upstream {
    pub(crate) child: Child,
    pub(crate) stdin: ChildStdin,
    pub(crate) stdout: ChildStdout,
    pub(crate) stderr: ChildStderr,
    pub(crate) pid: Option<u32>,
}

impl Upstream {
    /// Starts `command` with piped stdio in a process group of its own, so that ending it
    /// ends whatever it forked too.
    pub fn spawn(command: &[String]) -> io::Result<Upstream> {
        let (program, args) = command.split_first().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "no upstream command given")
        })?;
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot start `{program}`: {e}")))?;
        let pid = child.id();
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(io::Error::other("upstream pipes were not created"));
        };
        Ok(Upstream {
            child,
            stdin,
            stdout,
            stderr,
            pid,
        })
    }
}

/// Waits for the child to exit on its own for `grace`, then ends its whole process group:
/// SIGTERM, a second grace period, SIGKILL. This is the MCP stdio shutdown sequence.
pub(crate) async fn shut_down(
    child: &mut Child,
    pid: Option<u32>,
    grace: Duration,
) -> io::Result<ExitStatus> {
    if let Ok(status) = tokio::time::timeout(grace, child.wait()).await {
        return status;
    }
    signal_group(pid, Signal::SIGTERM);
    if let Ok(status) = tokio::time::timeout(grace, child.wait()).await {
        signal_group(pid, Signal::SIGKILL);
        return status;
    }
    signal_group(pid, Signal::SIGKILL);
    child.wait().await
}

/// Signals the child's process group (its pid is the group id, see `process_group(0)`).
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
