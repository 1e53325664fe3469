//! What each guarantee of a profile rests on, on this kernel: a pure decision from the
//! kernel's features to the layers that give it, or an error when none can.
//!
//! Landlock is built best-effort (an older kernel gets the access rights it knows), so a
//! right the kernel lacks is never silently dropped: here it is either given by another
//! layer (the seccomp filter refuses `truncate(2)` where Landlock before ABI 3 does not;
//! the network namespace keeps TCP in where Landlock before ABI 4 has no TCP rules), or the
//! sandbox does not start. `airlock sandbox probe` prints the decision for this machine.

use crate::error::SandboxError;
use crate::profile::{Layer, Profile};

/// Landlock ABI that restricts truncation (`LANDLOCK_ACCESS_FS_TRUNCATE`, Linux 6.2).
pub(crate) const ABI_TRUNCATE: i64 = 3;
/// Landlock ABI with TCP bind and connect rules (Linux 6.7).
pub(crate) const ABI_TCP: i64 = 4;
/// Landlock ABI that scopes signals and abstract Unix sockets (Linux 6.12).
pub(crate) const ABI_SCOPE: i64 = 6;

/// What the kernel offers, as far as the decision needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Kernel {
    /// `landlock_create_ruleset(…VERSION)`: the ABI, or a negative errno without Landlock.
    pub(crate) landlock_abi: i64,
    /// Whether Airlock can make a cgroup for the sandbox here (v2 or v1).
    pub(crate) cgroup: bool,
}

/// The layers that give each guarantee, strongest first; empty: not enforced, because the
/// profile turned off every layer that would give it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Enforcement {
    /// The kernel's Landlock ABI, when Landlock is used.
    pub(crate) landlock_abi: Option<i64>,
    /// Files are read and written only beneath the granted paths.
    pub(crate) files: Vec<Layer>,
    /// A file is truncated only beneath the `write` paths (`truncate(2)`, `O_TRUNC`).
    pub(crate) truncate: Vec<Layer>,
    /// No TCP connection leaves the sandbox, no listener is reachable from outside.
    pub(crate) tcp: Vec<Layer>,
    /// No Unix socket of the host (D-Bus, ssh-agent, Airlock's control sockets) is reachable.
    pub(crate) unix_sockets: Vec<Layer>,
    /// Signals and abstract Unix sockets stay inside the sandbox.
    pub(crate) scope: Vec<Layer>,
    /// The seccomp filter must refuse truncation in Landlock's place.
    pub(crate) seccomp_truncate: bool,
}

/// Decides how `profile` is enforced on `kernel`; an error names the guarantee no layer can
/// give (the sandbox then does not start: `airlock run` and `airlock exec` exit 125).
pub(crate) fn decide(kernel: &Kernel, profile: &Profile) -> Result<Enforcement, SandboxError> {
    let abi = kernel.landlock_abi;
    let landlock = profile.wants(Layer::Landlock);
    let seccomp = profile.wants(Layer::Seccomp);
    let namespaces = profile.wants(Layer::Namespaces);
    let network = profile.wants(Layer::Network);
    if landlock && abi < 1 {
        return Err(SandboxError::Unsupported {
            layer: Layer::Landlock,
            reason: format!(
                "this kernel has no Landlock (ABI query gave {abi}); it needs Linux 5.13+ \
                 with `landlock` in the `lsm=` boot list"
            ),
        });
    }
    if profile.cpu_percent.is_some() && profile.wants(Layer::Rlimits) && !kernel.cgroup {
        return Err(SandboxError::Unsupported {
            layer: Layer::Rlimits,
            reason: "`cpu_percent` needs a cgroup (v2 with the cpu controller, or v1), and \
                     Airlock can make none here; remove `cpu_percent` or run where one can \
                     be made (`airlock sandbox probe` says why not)"
                .into(),
        });
    }
    // Named Unix sockets let the process make AF_UNIX sockets: the filesystem view alone then
    // keeps the host's other socket files out of reach, so it must be there.
    if !profile.unix_sockets.is_empty() && !namespaces {
        return Err(SandboxError::Unsupported {
            layer: Layer::Namespaces,
            reason: "`unix_sockets` needs the namespaces layer: with Unix sockets allowed, the                      sandbox's filesystem view is what hides the host's other socket files"
                .into(),
        });
    }
    let with = |pairs: &[(bool, Layer)]| -> Vec<Layer> {
        pairs
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, l)| *l)
            .collect()
    };
    let mut seccomp_truncate = false;
    let truncate = if !landlock {
        Vec::new()
    } else if abi >= ABI_TRUNCATE {
        vec![Layer::Landlock]
    } else if seccomp {
        seccomp_truncate = true;
        vec![Layer::Seccomp]
    } else {
        return Err(SandboxError::Unsupported {
            layer: Layer::Landlock,
            reason: format!(
                "this kernel's Landlock (ABI {abi}) does not restrict truncate(2) (ABI \
                 {ABI_TRUNCATE}, Linux 6.2), and the seccomp layer that refuses it instead \
                 is off"
            ),
        });
    };
    Ok(Enforcement {
        landlock_abi: landlock.then_some(abi),
        files: with(&[(landlock, Layer::Landlock)]),
        truncate,
        // The network namespace has no way out; Landlock's TCP rules are a second wall.
        tcp: with(&[
            (network, Layer::Network),
            (network && landlock && abi >= ABI_TCP, Layer::Landlock),
        ]),
        // seccomp refuses the socket; the mount namespace hides the socket files.
        unix_sockets: with(&[
            (seccomp && profile.unix_sockets.is_empty(), Layer::Seccomp),
            (namespaces, Layer::Namespaces),
        ]),
        scope: with(&[
            (namespaces, Layer::Namespaces),
            (landlock && abi >= ABI_SCOPE, Layer::Landlock),
        ]),
        seccomp_truncate,
    })
}

// === impl Enforcement ===

impl Enforcement {
    /// One `(guarantee, how)` line each, for `airlock sandbox probe`.
    pub(crate) fn lines(&self) -> Vec<(&'static str, String)> {
        let abi = self.landlock_abi.unwrap_or(0);
        let how = |layers: &[Layer], say: &dyn Fn(Layer) -> String| -> String {
            if layers.is_empty() {
                return "NOT enforced (its layers are off)".into();
            }
            layers
                .iter()
                .map(|l| say(*l))
                .collect::<Vec<_>>()
                .join(" + ")
        };
        vec![
            (
                "files",
                how(&self.files, &|_| format!("Landlock ABI {abi}")),
            ),
            (
                "truncate",
                how(&self.truncate, &|l| match l {
                    Layer::Seccomp => format!(
                        "seccomp refuses truncate(2), read-only O_TRUNC, openat2 (Landlock \
                         ABI {abi} < {ABI_TRUNCATE})"
                    ),
                    _ => format!("Landlock ABI {abi}"),
                }),
            ),
            (
                "tcp",
                how(&self.tcp, &|l| match l {
                    Layer::Landlock => format!("Landlock ABI {abi} TCP rules"),
                    _ => "network namespace (no route out)".into(),
                }),
            ),
            (
                "host unix sockets",
                how(&self.unix_sockets, &|l| match l {
                    Layer::Seccomp => "seccomp refuses socket(AF_UNIX) and datagram pairs".into(),
                    _ => "mount namespace hides /tmp, /run, /dev/shm, homes".into(),
                }),
            ),
            (
                "signals/abstract",
                how(&self.scope, &|l| match l {
                    Layer::Landlock => format!("Landlock ABI {abi} scopes"),
                    _ => "PID and network namespaces".into(),
                }),
            ),
        ]
    }
}

#[cfg(test)]
#[path = "guarantee_tests.rs"]
mod tests;
