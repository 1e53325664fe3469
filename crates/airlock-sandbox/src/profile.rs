//! What a sandbox allows: paths, network, caps, environment, and which layers are on.

use std::collections::BTreeSet;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

pub use airlock_config::{
    DEFAULT_CPU_SECONDS, DEFAULT_ENV, DEFAULT_MAX_PROCESSES, DEFAULT_MEMORY_BYTES,
    SYSTEM_READ_PATHS,
};

/// One enforcement layer; each can be turned off explicitly and only explicitly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Layer {
    /// New user, mount and PID namespaces (the process sees only its own tree).
    Namespaces,
    /// A new network namespace with no interface up: no route anywhere.
    Network,
    /// Landlock: the filesystem allowlist (and TCP, and signal scoping where the ABI has them).
    Landlock,
    /// The seccomp filter denying dangerous syscalls.
    Seccomp,
    /// Resource limits: CPU seconds, memory, processes.
    Rlimits,
}

impl Layer {
    /// Every layer, in the order they are set up.
    pub const ALL: [Layer; 5] = [
        Layer::Namespaces,
        Layer::Network,
        Layer::Rlimits,
        Layer::Landlock,
        Layer::Seccomp,
    ];

    /// The spelling used in config files and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Layer::Namespaces => "namespaces",
            Layer::Network => "network",
            Layer::Landlock => "landlock",
            Layer::Seccomp => "seccomp",
            Layer::Rlimits => "rlimits",
        }
    }

    /// The layer for a config spelling, if it is one.
    pub fn from_name(name: &str) -> Option<Layer> {
        Layer::ALL.into_iter().find(|l| l.as_str() == name)
    }
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What network the sandbox has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Network {
    /// No interface, no route: every connection fails. (An egress allowlist through
    /// Airlock's proxy is the planned second value.)
    #[default]
    None,
}

/// A sandbox profile: everything [`crate::apply`] needs to box a process in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// A name for messages and the audit trail.
    pub name: String,
    /// Paths readable (and executable) beneath; missing paths are skipped.
    pub read: Vec<PathBuf>,
    /// Paths readable and writable beneath; they must exist.
    pub write: Vec<PathBuf>,
    /// Unix socket files the process may connect to. Empty (the default): seccomp refuses every
    /// `socket(AF_UNIX)`. Named: `AF_UNIX` sockets may be made, and the filesystem view is what
    /// keeps the host's other socket files out of sight (they are hidden beneath `/tmp`, `/run`,
    /// `/dev/shm` and homes; one elsewhere stays reachable, as the docs say).
    pub unix_sockets: Vec<PathBuf>,
    /// Give the process a fresh writable directory of its own as `HOME` and `TMPDIR`.
    pub private_tmp: bool,
    /// The network the process gets.
    pub network: Network,
    /// Hosts reachable through Airlock's egress proxy (needs the network and namespaces
    /// layers); empty: no way out at all.
    pub egress: Vec<airlock_config::EgressRule>,
    /// CPU-seconds cap per process (`RLIMIT_CPU`: SIGXCPU, then SIGKILL a second later).
    pub cpu_seconds: Option<u64>,
    /// CPU rate cap for the whole sandbox, in percent of one core (cgroups only).
    pub cpu_percent: Option<u64>,
    /// Memory cap in bytes: per process (`RLIMIT_DATA`), and for the whole sandbox where a
    /// cgroup can be made.
    pub memory_bytes: Option<u64>,
    /// Cap on processes in the sandbox (`RLIMIT_NPROC` inside its own user namespace, and
    /// `pids.max` where a cgroup can be made).
    pub max_processes: Option<u64>,
    /// Wall-clock cap: the whole sandbox is killed when it runs longer.
    pub wall_clock: Option<Duration>,
    /// Names of environment variables passed through; all others are cleared.
    pub env: Vec<String>,
    /// Layers explicitly turned off.
    pub off: BTreeSet<Layer>,
}

impl Default for Profile {
    /// The default profile (see [`airlock_config::SandboxProfile::default`]): no network,
    /// read-only system paths, a private writable temp dir, modest caps, every layer on.
    fn default() -> Self {
        Profile::from_config(
            airlock_config::DEFAULT_SANDBOX_PROFILE,
            &airlock_config::SandboxProfile::default(),
        )
    }
}

impl Profile {
    /// Whether `layer` is to be enforced.
    pub fn wants(&self, layer: Layer) -> bool {
        !self.off.contains(&layer)
    }

    /// Makes the command's own files readable: the program, and every argument that names
    /// an existing file or directory (a script, a served directory). Read only: writing
    /// needs the profile's `write` list. The command line is the operator's, never the
    /// agent's, so this grants only what the operator already named.
    pub fn read_command(&mut self, program: &std::path::Path, args: &[String]) {
        let named = std::iter::once(program.to_path_buf()).chain(args.iter().map(PathBuf::from));
        for path in named {
            let Ok(real) = path.canonicalize() else {
                continue;
            };
            if !self
                .read
                .iter()
                .chain(&self.write)
                .any(|r| real.starts_with(r))
            {
                self.read.push(real);
            }
        }
    }

    /// The profile a config section describes.
    pub fn from_config(name: &str, p: &airlock_config::SandboxProfile) -> Profile {
        use airlock_config::SandboxLayer as L;
        let off = p
            .off
            .iter()
            .map(|l| match l {
                L::Namespaces => Layer::Namespaces,
                L::Network => Layer::Network,
                L::Landlock => Layer::Landlock,
                L::Seccomp => Layer::Seccomp,
                L::Rlimits => Layer::Rlimits,
            })
            .collect();
        Profile {
            name: name.to_owned(),
            read: p.read.clone(),
            write: p.write.clone(),
            unix_sockets: p.unix_sockets.clone(),
            private_tmp: p.private_tmp,
            network: Network::None,
            egress: p.egress.clone(),
            cpu_seconds: p.cpu_seconds,
            cpu_percent: p.cpu_percent,
            memory_bytes: p.memory_bytes,
            max_processes: p.max_processes,
            wall_clock: p.wall_clock,
            env: p.env.clone(),
            off,
        }
    }
}

#[cfg(test)]
#[path = "profile_tests.rs"]
mod tests;
