//! Boxes in every process Airlock starts, with the kernel and no container runtime.
//!
//! [`apply`] prepares a [`std::process::Command`] so that, between `fork` and `exec`, the
//! new process enters its sandbox: new user, mount, PID and network namespaces, with a
//! filesystem view that hides `/tmp`, `/run`, `/dev/shm` and home directories but for the
//! granted paths ([`HIDDEN_PATHS`]); resource limits; `no_new_privs`; a Landlock filesystem
//! allowlist; a seccomp filter (no Unix socket but connected pairs). It starts in its
//! private directory, or `/`. Each layer is enforced or the command does not start (the
//! error names the layer); only a layer the [`Profile`] turns `off` is skipped. Where the
//! kernel's Landlock lacks a right a guarantee needs, another layer gives it or the command
//! does not start either (`airlock sandbox probe` says which). Everything that can be is
//! prepared before `fork` (the Landlock ruleset, the BPF program, the id maps, the mount
//! plan), so the child only makes syscalls.
//!
//! When Airlock runs as root the command runs as `nobody`; otherwise as Airlock's own user.
//! Either way it has no capabilities after `exec` and sees only its own processes.
//!
//! ```no_run
//! use std::process::Command;
//!
//! let profile = airlock_sandbox::Profile::default();
//! let mut cmd = Command::new("python3");
//! cmd.arg("-c").arg("print('boxed')");
//! let mut guard = airlock_sandbox::apply(&profile, &mut cmd)?;
//! let mut child = cmd.spawn().map_err(|e| guard.explain(e))?;
//! guard.started(child.id())?;
//! let status = child.wait().map_err(airlock_sandbox::SandboxError::Spawn)?;
//! drop(guard); // kills anything left in the sandbox, removes its temp dir
//! # let _ = status;
//! # Ok::<(), airlock_sandbox::SandboxError>(())
//! ```
//!
//! `airlock sandbox probe` prints what this machine supports: see [`probe`].

// The pre-exec hook is raw syscalls by necessity (async-signal-safety); each unsafe
// block says why it is sound.
#![allow(unsafe_code)]

mod cgroup;
mod child;
mod egress;
mod error;
mod fs_rules;
mod guarantee;
mod guard;
mod probe;
mod profile;
mod run;
mod syscalls;
mod view;

use std::ffi::CString;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

pub use cgroup::{detect as detect_cgroups, Mechanism as CgroupMechanism};
pub use child::end_with_parent;
pub use egress::{EgressEvent, EgressLog, EgressPhase, PROXY_PORT};
pub use error::SandboxError;
pub use fs_rules::kernel_abi as landlock_abi;
pub use guard::{Breach, SandboxGuard};
pub use probe::{probe, Check, ProbeReport};
pub use profile::{
    Layer, Network, Profile, DEFAULT_CPU_SECONDS, DEFAULT_ENV, DEFAULT_MAX_PROCESSES,
    DEFAULT_MEMORY_BYTES, SYSTEM_READ_PATHS,
};
pub use run::{absolute_args, resolve_program, run, Outcome};
pub use syscalls::denied_names as seccomp_denied;
pub use view::HIDDEN as HIDDEN_PATHS;

use child::{Limits, Plan};

/// `PATH` inside when the profile passes none.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";
/// Processes the sandbox itself adds (supervisor and init), counted by `RLIMIT_NPROC`.
pub(crate) const HELPER_PROCESSES: u64 = 2;
/// The proxy inside, for every client that reads the usual variables.
const PROXY_URL: &str = "http://127.0.0.1:3128";
const PROXY_ENV: &[&str] = &[
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
];

/// Prepares `cmd` to start inside the sandbox `profile` describes: clears its environment
/// (keeping the profile's `env` names), and installs the pre-exec hook. Call
/// [`SandboxGuard::explain`] on a `spawn` error and [`SandboxGuard::started`] with the pid.
///
/// The command starts in its private directory (or `/` without one), whatever `cmd`'s
/// `current_dir`: never in a directory holding Airlock's own state.
///
/// Errors here are layers that cannot be prepared (no Landlock in the kernel, a writable
/// path that does not exist, a guarantee no layer can give here, `cpu_percent` without a
/// cgroup, …); the command is not started.
pub fn apply(profile: &Profile, cmd: &mut Command) -> Result<SandboxGuard, SandboxError> {
    let euid = nix::unistd::geteuid().as_raw();
    let egid = nix::unistd::getegid().as_raw();
    // Root is never kept: the command runs as nobody, so file ownership grants it nothing.
    let (uid, gid, drop_to) = if euid == 0 {
        let (u, g) = nobody();
        (u, g, Some((u, g)))
    } else {
        (euid, egid, None)
    };

    let tmp = if profile.private_tmp {
        Some(private_dir(drop_to)?)
    } else {
        None
    };

    cmd.env_clear();
    for name in &profile.env {
        if let Some(v) = std::env::var_os(name) {
            cmd.env(name, v);
        }
    }
    if !profile.env.iter().any(|n| n == "PATH") {
        cmd.env("PATH", DEFAULT_PATH);
    }
    if let Some(dir) = &tmp {
        cmd.env("HOME", dir.path()).env("TMPDIR", dir.path());
    }

    let namespaces = profile.wants(Layer::Namespaces);
    let new_net = profile.wants(Layer::Network);
    let egress = !profile.egress.is_empty();
    if egress && !(new_net && namespaces) {
        return Err(SandboxError::Unsupported {
            layer: Layer::Network,
            reason: "`egress` needs the network and namespaces layers: the proxy listens \
                     inside the sandbox's own network namespace"
                .into(),
        });
    }
    if egress {
        for name in PROXY_ENV {
            cmd.env(name, PROXY_URL);
        }
        // Node's fetch reads the variables only when asked to.
        cmd.env("NODE_USE_ENV_PROXY", "1").env("NO_PROXY", "");
    }
    if new_net && !namespaces && euid != 0 {
        return Err(SandboxError::Unsupported {
            layer: Layer::Network,
            reason: "a network namespace without a user namespace needs root; turn \
                     `namespaces` back on"
                .into(),
        });
    }

    let mut layers = Vec::new();
    for layer in Layer::ALL {
        if profile.wants(layer) {
            layers.push(layer);
        }
    }

    // The whole tree's caps, where this host lets Airlock make a cgroup; else rlimits alone.
    let mechanism = if profile.wants(Layer::Rlimits) {
        cgroup::detect()
    } else {
        cgroup::Mechanism::None {
            why: "rlimits are off".into(),
        }
    };
    // Which layer gives each guarantee on this kernel; none can: nothing starts.
    let kernel = guarantee::Kernel {
        landlock_abi: fs_rules::kernel_abi(),
        cgroup: !matches!(mechanism, cgroup::Mechanism::None { .. }),
    };
    let enforcement = guarantee::decide(&kernel, profile)?;

    let mut write: Vec<&Path> = profile.write.iter().map(PathBuf::as_path).collect();
    if let Some(dir) = &tmp {
        write.push(dir.path());
    }
    let landlock = if profile.wants(Layer::Landlock) {
        let proxy_port = egress.then_some(egress::PROXY_PORT);
        Some(fs_rules::prepare(&profile.read, &write, new_net, proxy_port)?.fd)
    } else {
        None
    };
    let view = if namespaces {
        let granted: Vec<&Path> = profile
            .read
            .iter()
            .map(PathBuf::as_path)
            .chain(write.iter().copied())
            .chain(profile.unix_sockets.iter().map(PathBuf::as_path))
            .collect();
        Some(view::prepare(&granted)?)
    } else {
        None
    };
    // The command starts in its own directory, never in Airlock's (where the audit
    // database may be): a working directory beneath a hidden one would see through it.
    let cwd = match &tmp {
        Some(dir) => dir.path(),
        None => Path::new("/"),
    };
    let cwd =
        CString::new(cwd.as_os_str().as_encoded_bytes()).map_err(|e| SandboxError::Prepare {
            layer: Layer::Namespaces,
            what: "the working directory".into(),
            source: Box::new(e),
        })?;
    let seccomp = if profile.wants(Layer::Seccomp) {
        syscalls::programs(
            enforcement.seccomp_truncate,
            !profile.unix_sockets.is_empty(),
        )?
    } else {
        Vec::new()
    };
    let limits = profile.wants(Layer::Rlimits).then(|| limits(profile));
    let (groups, cgroup_procs) = match cgroup::create(&mechanism, profile)? {
        Some((g, fds)) => (Some(g), fds),
        None => (None, Vec::new()),
    };
    let (proxy_parent, proxy_child) = if egress {
        let (a, b) = proxy_pair()?;
        (Some(a), Some(b))
    } else {
        (None, None)
    };

    let (report, report_w) = report_pipe()?;
    let plan = Arc::new(Plan {
        parent: nix::unistd::getpid().as_raw(),
        drop_to,
        namespaces,
        new_net: new_net && namespaces,
        // Without a user namespace, a lone net namespace is what root can still have.
        net_only: new_net && !namespaces,
        uid_map: id_map(uid)?,
        gid_map: id_map(gid)?,
        limits,
        landlock,
        seccomp,
        report: report_w,
        cgroup_procs,
        proxy: proxy_child,
        view,
        cwd,
    });
    let hook = Arc::clone(&plan);
    // SAFETY: the hook only makes async-signal-safe syscalls on data prepared above
    // (see `child`), as `pre_exec` requires.
    unsafe {
        cmd.pre_exec(move || child::run(&hook));
    }
    Ok(SandboxGuard {
        plan,
        report,
        tmp,
        layers,
        namespaces,
        wall_clock: profile.wall_clock,
        pidfd: None,
        watchdog: None,
        timed_out: Arc::new(AtomicBool::new(false)),
        groups,
        caps: mechanism.name(),
        rlimits: profile.wants(Layer::Rlimits),
        proxy_sock: proxy_parent,
        proxy: None,
        egress: profile.egress.clone(),
        egress_log: None,
    })
}

/// The socket pair the supervisor hands the proxy's listening socket over.
fn proxy_pair() -> Result<(OwnedFd, OwnedFd), SandboxError> {
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    socketpair(
        AddressFamily::Unix,
        SockType::Datagram,
        None,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
    )
    .map_err(|e| SandboxError::Prepare {
        layer: Layer::Network,
        what: "the proxy socket pair".into(),
        source: Box::new(std::io::Error::from(e)),
    })
}

fn limits(profile: &Profile) -> Limits {
    let rl = |soft: u64, hard: u64| libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    Limits {
        // SIGXCPU at the cap, SIGKILL one second later if it is caught or ignored.
        cpu: profile.cpu_seconds.map(|s| rl(s, s.saturating_add(1))),
        data: profile.memory_bytes.map(|b| rl(b, b)),
        nproc: profile.max_processes.map(|n| {
            let n = n.saturating_add(HELPER_PROCESSES);
            rl(n, n)
        }),
    }
}

/// Whether sandboxed commands run as `nobody` (Airlock runs as root): files they need
/// must then be reachable by `nobody`, whatever Landlock allows.
pub fn runs_as_nobody() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The uid and gid of `nobody` (65534 when the system has no such user).
fn nobody() -> (libc::uid_t, libc::gid_t) {
    match nix::unistd::User::from_name("nobody") {
        Ok(Some(u)) => (u.uid.as_raw(), u.gid.as_raw()),
        _ => (65534, 65534),
    }
}

/// A fresh 0700 directory in the system temp dir, owned by the sandbox's user.
fn private_dir(
    owner: Option<(libc::uid_t, libc::gid_t)>,
) -> Result<tempfile::TempDir, SandboxError> {
    let dir = tempfile::Builder::new()
        .prefix("airlock-sandbox-")
        .tempdir()
        .map_err(SandboxError::TempDir)?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
            .map_err(SandboxError::TempDir)?;
    }
    Ok(dir)
}

/// One line mapping `id` to itself: the command keeps its id, and gets no other.
fn id_map(id: u32) -> Result<CString, SandboxError> {
    CString::new(format!("{id} {id} 1\n")).map_err(|e| SandboxError::Prepare {
        layer: Layer::Namespaces,
        what: "id map".into(),
        source: Box::new(e),
    })
}

/// The report pipe: non-blocking, close-on-exec.
fn report_pipe() -> Result<(OwnedFd, OwnedFd), SandboxError> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
        .map_err(|e| SandboxError::Prepare {
        layer: Layer::Namespaces,
        what: "report pipe".into(),
        source: Box::new(std::io::Error::from(e)),
    })?;
    Ok((r, w))
}

#[cfg(test)]
#[path = "lib_tests.rs"]
mod tests;
