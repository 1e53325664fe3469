//! The parent's handle on a sandbox: owns the private temp dir and the prepared plan,
//! enforces the wall-clock cap, and kills the whole tree.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use airlock_config::EgressRule;

use crate::cgroup::Groups;
use crate::child::{Plan, Step};
use crate::egress::{EgressLog, Proxy};
use crate::error::SandboxError;
use crate::profile::Layer;

/// A cap the sandbox hit, which likely ended it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Breach {
    /// The wall-clock cap ran out; the sandbox was killed.
    WallClock,
    /// The kernel's OOM killer acted inside the sandbox's memory cgroup.
    Memory,
    /// The sandbox reached its process cap (`pids.max`).
    Processes,
    /// A process was killed at its CPU-seconds cap (`RLIMIT_CPU`).
    CpuSeconds,
}

impl Breach {
    /// `wall_clock`, `memory`, `processes`, `cpu_seconds`: for the audit trail.
    pub fn as_str(self) -> &'static str {
        match self {
            Breach::WallClock => "wall_clock",
            Breach::Memory => "memory",
            Breach::Processes => "processes",
            Breach::CpuSeconds => "cpu_seconds",
        }
    }

    /// What an operator (or agent) reads.
    pub fn describe(self) -> &'static str {
        match self {
            Breach::WallClock => "wall-clock cap",
            Breach::Memory => "memory cap",
            Breach::Processes => "process cap",
            Breach::CpuSeconds => "CPU-seconds cap",
        }
    }
}

/// The egress log, shown without its contents.
pub(crate) struct LogHandle(pub(crate) Arc<dyn EgressLog>);

impl std::fmt::Debug for LogHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EgressLog")
    }
}

/// Returned by [`crate::apply`]. Keep it as long as the process runs: dropping it kills
/// the sandbox (every process in it) and removes the private temp dir and its cgroups.
#[derive(Debug)]
pub struct SandboxGuard {
    pub(crate) plan: Arc<Plan>,
    pub(crate) report: OwnedFd,
    pub(crate) tmp: Option<tempfile::TempDir>,
    pub(crate) layers: Vec<Layer>,
    pub(crate) namespaces: bool,
    pub(crate) wall_clock: Option<Duration>,
    pub(crate) pidfd: Option<Arc<OwnedFd>>,
    pub(crate) watchdog: Option<Watchdog>,
    pub(crate) timed_out: Arc<AtomicBool>,
    pub(crate) groups: Option<Groups>,
    /// `cgroup v2`, `cgroup v1` or `rlimits`: what enforces the caps.
    pub(crate) caps: &'static str,
    pub(crate) rlimits: bool,
    /// Egress: where the supervisor sends the proxy's listening socket.
    pub(crate) proxy_sock: Option<OwnedFd>,
    pub(crate) proxy: Option<Proxy>,
    pub(crate) egress: Vec<EgressRule>,
    pub(crate) egress_log: Option<LogHandle>,
}

#[derive(Debug)]
pub(crate) struct Watchdog {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl SandboxGuard {
    /// The layers in force, in set-up order.
    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    /// What enforces the caps: `cgroup v2`, `cgroup v1` or `rlimits`.
    pub fn caps_mechanism(&self) -> &'static str {
        self.caps
    }

    /// Where egress events go (call before [`SandboxGuard::started`]). A profile with
    /// `egress` and no log does not start: every connection must be recorded.
    pub fn set_egress_log(&mut self, log: Arc<dyn EgressLog>) {
        self.egress_log = Some(LogHandle(log));
    }

    /// The cap that most likely ended the sandbox, given the command's exit code in the
    /// shell's convention (128 + signal). `None`: it ended for its own reasons, or hit a
    /// per-process rlimit the kernel leaves no trace of (memory without a cgroup).
    pub fn breach(&self, code: Option<i32>) -> Option<Breach> {
        if self.wall_clock_exceeded() {
            return Some(Breach::WallClock);
        }
        match self.groups.as_ref().and_then(Groups::breach) {
            Some(crate::cgroup::Breach::Memory) => return Some(Breach::Memory),
            Some(crate::cgroup::Breach::Processes) => return Some(Breach::Processes),
            None => {}
        }
        if self.rlimits && code == Some(128 + libc::SIGXCPU) {
            return Some(Breach::CpuSeconds);
        }
        None
    }

    /// The private writable directory (`HOME` and `TMPDIR` inside), if the profile has one.
    pub fn private_dir(&self) -> Option<&Path> {
        self.tmp.as_ref().map(tempfile::TempDir::path)
    }

    /// Turns the error `spawn` returned into one naming the layer that failed, when a
    /// sandbox step failed (otherwise the command itself could not be started).
    pub fn explain(&self, err: io::Error) -> SandboxError {
        let mut byte = [0u8; 1];
        // SAFETY: reading one byte into a local buffer from our own non-blocking pipe.
        let n = unsafe { libc::read(self.report.as_raw_fd(), byte.as_mut_ptr().cast(), 1) };
        match (n, Step::from_byte(byte[0])) {
            (1, Some(step)) => {
                let (layer, step) = step.describe();
                SandboxError::Enforce {
                    layer,
                    step,
                    source: err,
                }
            }
            _ => SandboxError::Spawn(err),
        }
    }

    /// Call once the process is spawned with its pid: pins the process (a pidfd, so a
    /// later kill can never hit a recycled pid) and starts the wall-clock timer.
    pub fn started(&mut self, pid: u32) -> Result<(), SandboxError> {
        let raw = libc::pid_t::try_from(pid)
            .map_err(|_| SandboxError::Spawn(io::Error::other("pid out of range")))?;
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, raw, 0) };
        if fd < 0 {
            return Err(SandboxError::Prepare {
                layer: Layer::Namespaces,
                what: "pidfd_open on the sandbox".into(),
                source: Box::new(io::Error::last_os_error()),
            });
        }
        // SAFETY: the kernel just returned this fd to us; nothing else owns it.
        let pidfd = Arc::new(unsafe { OwnedFd::from_raw_fd(fd as i32) });
        self.pidfd = Some(Arc::clone(&pidfd));
        if let Some(sock) = self.proxy_sock.take() {
            self.start_proxy(&sock)?;
        }
        if let Some(limit) = self.wall_clock {
            let watchdog =
                Watchdog::start(limit, pidfd, Arc::clone(&self.timed_out)).map_err(|e| {
                    SandboxError::Prepare {
                        layer: Layer::Rlimits,
                        what: "starting the wall-clock timer".into(),
                        source: Box::new(e),
                    }
                })?;
            self.watchdog = Some(watchdog);
        }
        Ok(())
    }

    /// Takes the listening socket the supervisor made inside the namespace and serves it.
    fn start_proxy(&mut self, sock: &OwnedFd) -> Result<(), SandboxError> {
        let fail = |what: &str, e: io::Error| SandboxError::Prepare {
            layer: Layer::Network,
            what: what.into(),
            source: Box::new(e),
        };
        let log = self
            .egress_log
            .as_ref()
            .map(|l| Arc::clone(&l.0))
            .ok_or_else(|| SandboxError::Unsupported {
                layer: Layer::Network,
                reason: "the profile lists `egress` hosts but nothing records egress".into(),
            })?;
        let listener = receive_fd(sock).map_err(|e| fail("receiving the proxy socket", e))?;
        let proxy = Proxy::start(listener, self.egress.clone(), log)
            .map_err(|e| fail("starting the egress proxy", e))?;
        self.proxy = Some(proxy);
        Ok(())
    }

    /// Whether the wall-clock cap ran out and the sandbox was killed for it.
    pub fn wall_clock_exceeded(&self) -> bool {
        self.timed_out.load(Ordering::SeqCst)
    }

    /// Kills every process in the sandbox. With namespaces on, SIGKILL to the supervisor
    /// takes init with it (its parent-death signal), and the kernel then kills the rest of
    /// the PID namespace. Without them only the direct child is reached.
    pub fn kill(&self) -> io::Result<()> {
        let r = match &self.pidfd {
            Some(fd) => send_kill(fd),
            None => Ok(()),
        };
        if let Some(g) = &self.groups {
            g.kill();
        }
        r
    }

    /// Whether the whole tree dies with [`SandboxGuard::kill`] (PID namespace in force).
    pub fn kills_whole_tree(&self) -> bool {
        self.namespaces
    }
}

impl Drop for SandboxGuard {
    fn drop(&mut self) {
        if let Some(mut w) = self.watchdog.take() {
            w.stop();
        }
        // The process may be gone already; ESRCH is fine.
        let _ = self.kill();
        self.proxy.take();
        // The groups go after the kill (their Drop waits for them to empty).
        self.groups.take();
        let _ = &self.plan;
    }
}

fn send_kill(pidfd: &OwnedFd) -> io::Result<()> {
    // SAFETY: pidfd_send_signal on our own pidfd; no info struct.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ESRCH) {
            return Ok(());
        }
        return Err(e);
    }
    Ok(())
}

/// One fd passed with SCM_RIGHTS on `sock` (non-blocking: it is there already, sent
/// before the command was started).
fn receive_fd(sock: &OwnedFd) -> io::Result<OwnedFd> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut byte = [0u8; 1];
    let mut iov = [io::IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!(libc::c_int);
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(io::Error::from)?;
    for c in msg.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            if let Some(fd) = fds.first() {
                // SAFETY: the kernel installed this fd in our table for us.
                return Ok(unsafe { OwnedFd::from_raw_fd(*fd) });
            }
        }
    }
    Err(io::Error::other("the supervisor sent no socket"))
}

// === impl Watchdog ===

impl Watchdog {
    fn start(
        limit: Duration,
        pidfd: Arc<OwnedFd>,
        timed_out: Arc<AtomicBool>,
    ) -> io::Result<Watchdog> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let state = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("airlock-sandbox-wall-clock".into())
            .spawn(move || {
                let deadline = Instant::now() + limit;
                let (lock, cv) = &*state;
                let mut stopped = lock.lock().unwrap_or_else(PoisonError::into_inner);
                loop {
                    if *stopped {
                        return;
                    }
                    let now = Instant::now();
                    if now >= deadline {
                        timed_out.store(true, Ordering::SeqCst);
                        let _ = send_kill(&pidfd);
                        return;
                    }
                    stopped = cv
                        .wait_timeout(stopped, deadline - now)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
            })?;
        Ok(Watchdog {
            stop,
            thread: Some(thread),
        })
    }

    fn stop(&mut self) {
        let (lock, cv) = &*self.stop;
        *lock.lock().unwrap_or_else(PoisonError::into_inner) = true;
        cv.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
