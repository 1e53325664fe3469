//! The parent's handle on a sandbox: owns the private temp dir and the prepared plan,
//! enforces the wall-clock cap, and kills the whole tree.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::child::{Plan, Step};
use crate::error::SandboxError;
use crate::profile::Layer;

/// Returned by [`crate::apply`]. Keep it as long as the process runs: dropping it kills
/// the sandbox (every process in it) and removes the private temp dir.
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

    /// Whether the wall-clock cap ran out and the sandbox was killed for it.
    pub fn wall_clock_exceeded(&self) -> bool {
        self.timed_out.load(Ordering::SeqCst)
    }

    /// Kills every process in the sandbox. With namespaces on, SIGKILL to the supervisor
    /// takes init with it (its parent-death signal), and the kernel then kills the rest of
    /// the PID namespace. Without them only the direct child is reached.
    pub fn kill(&self) -> io::Result<()> {
        match &self.pidfd {
            Some(fd) => send_kill(fd),
            None => Ok(()),
        }
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
