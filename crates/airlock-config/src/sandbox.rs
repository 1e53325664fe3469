//! `[sandbox.profiles.<name>]` and `[servers.<id>] sandbox`: how each process Airlock
//! starts is boxed in. Raw types, model and validation live together here so the section
//! is one unit; `validate.rs` only calls in.
//!
//! A profile named `default` always exists (the built-in one unless the file defines it);
//! a server with no `sandbox` key uses it. `sandbox = "off"` and a profile's
//! `off = [...]` are the only ways to run without a layer; [`crate::Config::sandbox_warnings`]
//! lists them for `airlock check`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_spanned::Spanned;

use crate::raw::{RawServer, SpStr};

/// The profile a server without a `sandbox` key runs in.
pub const DEFAULT_SANDBOX_PROFILE: &str = "default";
/// The `sandbox` value that runs a server with no sandbox at all.
pub const SANDBOX_OFF: &str = "off";
/// System paths readable in the default profile.
pub const SYSTEM_READ_PATHS: &[&str] = &["/usr", "/lib", "/lib64", "/bin", "/sbin", "/etc"];
/// Default CPU-seconds cap per process: a long-lived server stays well below it, a miner
/// reaches it in minutes.
pub const DEFAULT_CPU_SECONDS: u64 = 600;
/// Default memory cap per process: 1 GiB.
pub const DEFAULT_MEMORY_BYTES: u64 = 1024 * 1024 * 1024;
/// Default cap on processes in one sandbox.
pub const DEFAULT_MAX_PROCESSES: u64 = 128;
/// Environment variables passed by default; all others are cleared.
pub const DEFAULT_ENV: &[&str] = &["PATH", "LANG", "LC_ALL", "TERM", "TZ"];
/// Environment a server with `sandbox = "off"` always gets (when Airlock has it): where
/// programs are (`PATH`), whose files (`HOME`, `USER`, `LOGNAME`, `TMPDIR`: caches and
/// temp files land where the operator's would), and how to format text and time (`LANG`,
/// `LC_ALL`, `TERM`, `TZ`). None of them is a credential. Everything else — Airlock's own
/// `AIRLOCK_TOKEN` first — is cleared unless the server's `env` lists it.
pub const OFF_BASE_ENV: &[&str] = &[
    "PATH", "HOME", "USER", "LOGNAME", "TMPDIR", "LANG", "LC_ALL", "TERM", "TZ",
];
/// Variables with this prefix are Airlock's own (a human's `AIRLOCK_TOKEN`, a webhook
/// secret): no `env` list may pass one to a process Airlock starts.
pub const AIRLOCK_ENV_PREFIX: &str = "AIRLOCK_";
/// Smallest `memory_mb`: below this nothing starts, and the failure would look like a bug.
pub const MIN_MEMORY_MB: u64 = 16;
/// Ports an egress pattern without a port allows: HTTPS and HTTP.
pub const DEFAULT_EGRESS_PORTS: &[u16] = &[443, 80];

// === model ===

/// `[sandbox]`: the profiles, always including `default`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxConfig {
    /// By name.
    pub profiles: BTreeMap<String, SandboxProfile>,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            profiles: BTreeMap::from([(
                DEFAULT_SANDBOX_PROFILE.to_owned(),
                SandboxProfile::default(),
            )]),
        }
    }
}

/// One sandbox profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxProfile {
    /// Paths readable and executable beneath: the system paths (unless `system_paths =
    /// false`) followed by the profile's own `read` list.
    pub read: Vec<PathBuf>,
    /// Paths readable and writable beneath (default: none).
    pub write: Vec<PathBuf>,
    /// Unix socket files the server may connect to (default: none, and then no Unix socket
    /// can be made at all).
    pub unix_sockets: Vec<PathBuf>,
    /// A fresh writable directory as `HOME` and `TMPDIR` (default: yes).
    pub private_tmp: bool,
    /// Hosts the sandbox may reach through Airlock's egress proxy; empty: no network at all.
    pub egress: Vec<EgressRule>,
    /// Caps; `None` only when the file cannot express one (see docs/config.md).
    pub cpu_seconds: Option<u64>,
    /// CPU rate cap in percent of one core for the whole sandbox (cgroups only; default
    /// none: a CPU group is scheduled as one process, which slows a server on a busy host).
    pub cpu_percent: Option<u64>,
    /// Memory cap per process, in bytes.
    pub memory_bytes: Option<u64>,
    /// Processes in the sandbox.
    pub max_processes: Option<u64>,
    /// Wall-clock cap for the whole sandbox (default: none).
    pub wall_clock: Option<Duration>,
    /// Environment variable names passed through.
    pub env: Vec<String>,
    /// Layers explicitly turned off.
    pub off: BTreeSet<SandboxLayer>,
}

impl Default for SandboxProfile {
    /// The built-in default: no network, read-only system paths, a private temp dir,
    /// modest caps, every layer on.
    fn default() -> Self {
        Self {
            read: SYSTEM_READ_PATHS.iter().map(PathBuf::from).collect(),
            write: Vec::new(),
            unix_sockets: Vec::new(),
            private_tmp: true,
            egress: Vec::new(),
            cpu_seconds: Some(DEFAULT_CPU_SECONDS),
            cpu_percent: None,
            memory_bytes: Some(DEFAULT_MEMORY_BYTES),
            max_processes: Some(DEFAULT_MAX_PROCESSES),
            wall_clock: None,
            env: DEFAULT_ENV.iter().map(|s| (*s).to_owned()).collect(),
            off: BTreeSet::new(),
        }
    }
}

/// A layer a profile can turn off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SandboxLayer {
    /// User, mount and PID namespaces.
    Namespaces,
    /// The network namespace (off: the host's network).
    Network,
    /// The Landlock filesystem allowlist.
    Landlock,
    /// The seccomp syscall filter.
    Seccomp,
    /// CPU, memory and process limits.
    Rlimits,
}

impl SandboxLayer {
    /// Every layer.
    pub const ALL: [SandboxLayer; 5] = [
        SandboxLayer::Namespaces,
        SandboxLayer::Network,
        SandboxLayer::Landlock,
        SandboxLayer::Seccomp,
        SandboxLayer::Rlimits,
    ];

    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SandboxLayer::Namespaces => "namespaces",
            SandboxLayer::Network => "network",
            SandboxLayer::Landlock => "landlock",
            SandboxLayer::Seccomp => "seccomp",
            SandboxLayer::Rlimits => "rlimits",
        }
    }

    /// The layer for a config spelling.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|l| l.as_str() == name)
    }
}

/// One `egress` pattern: `host`, `*.domain`, `host:port` or `host:*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressRule {
    /// The host, lower case; for `*.domain` the `domain` part (subdomains match, the
    /// domain itself does not).
    pub host: String,
    /// `*.domain`: any subdomain of `host`.
    pub subdomains: bool,
    /// The ports allowed: `None` is any port (`:*`); no port given is 443 and 80.
    pub ports: Option<Vec<u16>>,
}

impl EgressRule {
    /// Parses one pattern; the error says what is wrong with it.
    pub fn parse(pattern: &str) -> Result<EgressRule, String> {
        let (host, port) = match pattern.rsplit_once(':') {
            // An IPv6 literal is bracketed: `[::1]:8080`.
            Some((h, p)) if !h.contains(':') || h.ends_with(']') => (h, Some(p)),
            _ => (pattern, None),
        };
        let ports = match port {
            None => Some(DEFAULT_EGRESS_PORTS.to_vec()),
            Some("*") => None,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 => Some(vec![n]),
                _ => return Err(format!("\"{p}\" is not a port (1-65535 or *)")),
            },
        };
        let (subdomains, host) = match host.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, host),
        };
        let host = host.to_ascii_lowercase();
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let ipv6 = host.starts_with('[')
            && host.ends_with(']')
            && bare.parse::<std::net::Ipv6Addr>().is_ok();
        let name_ok = !host.is_empty()
            && host.len() <= 253
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !(ipv6 || name_ok) || (subdomains && ipv6) {
            return Err(
                "expected a host name, an IP address, or *.domain, with an optional \
                 :port or :*"
                    .into(),
            );
        }
        Ok(EgressRule {
            host: bare.to_owned(),
            subdomains,
            ports,
        })
    }

    /// Whether a connection to `host:port` is allowed by this rule (`host` as the client
    /// named it; compared without case and without a trailing dot).
    pub fn matches(&self, host: &str, port: u16) -> bool {
        let host = host
            .trim_end_matches('.')
            .trim_start_matches('[')
            .trim_end_matches(']');
        let host = host.to_ascii_lowercase();
        let host_ok = if self.subdomains {
            host.strip_suffix(self.host.as_str())
                .is_some_and(|rest| rest.len() > 1 && rest.ends_with('.'))
        } else {
            host == self.host
        };
        host_ok && self.ports.as_ref().is_none_or(|ps| ps.contains(&port))
    }
}

impl std::fmt::Display for EgressRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.subdomains {
            f.write_str("*.")?;
        }
        if self.host.contains(':') {
            write!(f, "[{}]", self.host)?;
        } else {
            f.write_str(&self.host)?;
        }
        match &self.ports {
            None => f.write_str(":*"),
            Some(ps) if ps.as_slice() == DEFAULT_EGRESS_PORTS => Ok(()),
            Some(ps) => write!(f, ":{}", ps.first().copied().unwrap_or(0)),
        }
    }
}

/// `[servers.<id>] sandbox`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerSandbox {
    /// Run in this profile (it exists in [`SandboxConfig::profiles`]).
    Profile(String),
    /// `sandbox = "off"`: no sandbox at all.
    Off,
}

impl Default for ServerSandbox {
    fn default() -> Self {
        ServerSandbox::Profile(DEFAULT_SANDBOX_PROFILE.to_owned())
    }
}

// === raw ===

/// `[sandbox]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [sandbox] table")]
pub(crate) struct RawSandbox {
    #[serde(default)]
    pub(crate) profiles: BTreeMap<SpStr, RawSandboxProfile>,
}

/// `[sandbox.profiles.<name>]`: every key optional; a missing one takes the default's value.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [sandbox.profiles.<name>] table")]
pub(crate) struct RawSandboxProfile {
    pub(crate) read: Option<Vec<SpStr>>,
    pub(crate) system_paths: Option<bool>,
    pub(crate) write: Option<Vec<SpStr>>,
    pub(crate) unix_sockets: Option<Vec<SpStr>>,
    pub(crate) private_tmp: Option<bool>,
    pub(crate) network: Option<SpStr>,
    pub(crate) egress: Option<Vec<SpStr>>,
    pub(crate) cpu_seconds: Option<Spanned<u64>>,
    pub(crate) cpu_percent: Option<Spanned<u64>>,
    pub(crate) memory_mb: Option<Spanned<u64>>,
    pub(crate) max_processes: Option<Spanned<u64>>,
    pub(crate) wall_clock_secs: Option<Spanned<u64>>,
    pub(crate) env: Option<Vec<SpStr>>,
    pub(crate) off: Option<Vec<SpStr>>,
}

// === validation ===

/// Where complaints go: `(span, message)`, the earliest in the file wins.
pub(crate) type Report<'a> = dyn FnMut(std::ops::Range<usize>, String) + 'a;

/// Builds `[sandbox]`; `base` resolves relative paths.
pub(crate) fn sandbox(raw: &RawSandbox, base: &Path, p: &mut Report<'_>) -> SandboxConfig {
    let mut config = SandboxConfig::default();
    for (name, raw) in &raw.profiles {
        if name.get_ref() == SANDBOX_OFF {
            p(
                name.span(),
                "a sandbox profile cannot be named \"off\": that value turns the sandbox off"
                    .into(),
            );
        } else if !crate::validate::is_valid_name(name.get_ref()) {
            p(
                name.span(),
                format!(
                    "invalid sandbox profile name \"{}\": use 1 to 64 of A-Z a-z 0-9 _ . - \
                     starting with a letter or digit",
                    name.get_ref().escape_debug()
                ),
            );
        }
        config
            .profiles
            .insert(name.get_ref().clone(), profile(raw, base, p));
    }
    config
}

fn profile(raw: &RawSandboxProfile, base: &Path, p: &mut Report<'_>) -> SandboxProfile {
    let d = SandboxProfile::default();
    let paths = |list: &Option<Vec<SpStr>>, what: &str, p: &mut Report<'_>| {
        list.as_ref().map(|l| {
            l.iter()
                .map(|v| {
                    if v.get_ref().is_empty() {
                        p(v.span(), format!("{what}: a path must not be empty"));
                    }
                    base.join(v.get_ref())
                })
                .collect::<Vec<_>>()
        })
    };
    // `read` adds to the system paths, so a profile names only what its server needs.
    let mut read = if raw.system_paths.unwrap_or(true) {
        d.read
    } else {
        Vec::new()
    };
    read.extend(paths(&raw.read, "read", p).unwrap_or_default());
    let write = paths(&raw.write, "write", p).unwrap_or(d.write);
    let unix_sockets = paths(&raw.unix_sockets, "unix_sockets", p).unwrap_or_default();
    if let Some(n) = &raw.network {
        if n.get_ref() != "none" {
            p(
                n.span(),
                format!(
                    "network = \"{}\": only \"none\" is supported (list hosts in `egress` to \
                     reach them through Airlock's proxy; `off = [\"network\"]` gives the host's \
                     network)",
                    n.get_ref().escape_debug()
                ),
            );
        }
    }
    let mut egress = Vec::new();
    for e in raw.egress.iter().flatten() {
        match EgressRule::parse(e.get_ref()) {
            Ok(rule) => egress.push(rule),
            Err(why) => p(
                e.span(),
                format!("egress: \"{}\": {why}", e.get_ref().escape_debug()),
            ),
        }
    }
    let at_least = |v: &Option<Spanned<u64>>, key: &str, min: u64, p: &mut Report<'_>| {
        v.as_ref().map(|v| {
            if *v.get_ref() < min {
                p(
                    v.span(),
                    format!("{key} = {} is too small: at least {min}", v.get_ref()),
                );
            }
            *v.get_ref()
        })
    };
    let cpu_seconds = at_least(&raw.cpu_seconds, "cpu_seconds", 1, p).or(d.cpu_seconds);
    let cpu_percent = at_least(&raw.cpu_percent, "cpu_percent", 1, p).or(d.cpu_percent);
    let memory_bytes = at_least(&raw.memory_mb, "memory_mb", MIN_MEMORY_MB, p)
        .map(|mb| mb.saturating_mul(1024 * 1024))
        .or(d.memory_bytes);
    let max_processes = at_least(&raw.max_processes, "max_processes", 1, p).or(d.max_processes);
    let wall_clock = at_least(&raw.wall_clock_secs, "wall_clock_secs", 1, p)
        .map(Duration::from_secs)
        .or(d.wall_clock);
    let env = raw.env.as_ref().map_or(d.env, |names| env_names(names, p));
    let mut off = BTreeSet::new();
    for l in raw.off.iter().flatten() {
        match SandboxLayer::from_name(l.get_ref()) {
            Some(layer) => {
                if !off.insert(layer) {
                    p(
                        l.span(),
                        format!("off: \"{}\" is listed twice", l.get_ref()),
                    );
                }
            }
            None => p(
                l.span(),
                format!(
                    "off: unknown sandbox layer \"{}\": expected one of namespaces, network, \
                     landlock, seccomp, rlimits",
                    l.get_ref().escape_debug()
                ),
            ),
        }
    }
    if let (Some(first), true) = (
        raw.egress.as_ref().and_then(|e| e.first()),
        off.contains(&SandboxLayer::Network) || off.contains(&SandboxLayer::Namespaces),
    ) {
        p(
            first.span(),
            "egress needs the network and namespaces layers (the proxy listens inside the \
             sandbox's own network namespace); remove them from `off`"
                .into(),
        );
    }
    SandboxProfile {
        read,
        write,
        unix_sockets,
        private_tmp: raw.private_tmp.unwrap_or(d.private_tmp),
        egress,
        cpu_seconds,
        cpu_percent,
        memory_bytes,
        max_processes,
        wall_clock,
        env,
        off,
    }
}

/// A server's `sandbox` value; the profile must exist.
pub(crate) fn server_sandbox(
    raw: &RawServer,
    profiles: &BTreeMap<SpStr, RawSandboxProfile>,
    p: &mut Report<'_>,
) -> ServerSandbox {
    match &raw.sandbox {
        None => ServerSandbox::default(),
        Some(v) if v.get_ref() == SANDBOX_OFF => ServerSandbox::Off,
        Some(v) => {
            let name = v.get_ref();
            if name != DEFAULT_SANDBOX_PROFILE && !profiles.contains_key(name.as_str()) {
                p(
                    v.span(),
                    format!(
                        "sandbox: unknown profile \"{name}\" (no [sandbox.profiles.{name}] \
                         section; use \"off\" for no sandbox)"
                    ),
                );
            }
            ServerSandbox::Profile(name.clone())
        }
    }
}

/// An `env` list: each a variable name, none of Airlock's own.
fn env_names(names: &[SpStr], p: &mut Report<'_>) -> Vec<String> {
    for n in names {
        let name = n.get_ref();
        if name.is_empty() || name.contains('=') || name.contains('\0') {
            p(
                n.span(),
                format!("env: \"{}\" is not a variable name", name.escape_debug()),
            );
        } else if name.to_ascii_uppercase().starts_with(AIRLOCK_ENV_PREFIX) {
            p(
                n.span(),
                format!(
                    "env: \"{}\" is Airlock's own (a human's token, a secret): it never reaches \
                     a process Airlock starts",
                    name.escape_debug()
                ),
            );
        }
    }
    names.iter().map(|n| n.get_ref().clone()).collect()
}

/// A server's `env` list: only with `sandbox = "off"` (a sandboxed server gets its profile's).
pub(crate) fn server_env(
    raw: &RawServer,
    sandbox: &ServerSandbox,
    p: &mut Report<'_>,
) -> Vec<String> {
    let Some(names) = &raw.env else {
        return Vec::new();
    };
    if *sandbox != ServerSandbox::Off {
        if let Some(first) = names.first() {
            p(
                first.span(),
                "env: only a server with sandbox = \"off\" has its own `env`; a sandboxed \
                 server gets its profile's `env`"
                    .into(),
            );
        }
    }
    env_names(names, p)
}

/// What `airlock check` warns about: servers without a sandbox, profiles without layers.
pub(crate) fn warnings(config: &crate::Config) -> Vec<String> {
    let mut out = Vec::new();
    for (name, server) in &config.servers {
        if server.sandbox == ServerSandbox::Off {
            out.push(format!(
                "server \"{name}\" runs with sandbox = \"off\": no namespaces, Landlock, \
                 seccomp or resource caps"
            ));
        }
    }
    for (name, profile) in &config.sandbox.profiles {
        if profile.off.is_empty() {
            continue;
        }
        let users: Vec<&str> = config
            .servers
            .iter()
            .filter(|(_, s)| s.sandbox == ServerSandbox::Profile(name.clone()))
            .map(|(n, _)| n.as_str())
            .collect();
        let layers: Vec<&str> = profile.off.iter().map(|l| l.as_str()).collect();
        let used = if users.is_empty() {
            "no server uses it".to_owned()
        } else {
            format!("used by {}", users.join(", "))
        };
        out.push(format!(
            "sandbox profile \"{name}\" turns off {} ({used})",
            layers.join(", ")
        ));
    }
    out
}

#[cfg(test)]
#[path = "sandbox_tests.rs"]
mod tests;
