//! `airlock sandbox probe`: which layers this machine can enforce, each tried for real in
//! a short-lived child (`/bin/true` started with just that layer), not guessed from files.

use std::fmt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::profile::{Layer, Profile};

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What was tried, e.g. `user namespace`.
    pub name: String,
    /// Whether it works here.
    pub ok: bool,
    /// The detail: an ABI, a controller list, or why not.
    pub detail: String,
}

/// What `airlock sandbox probe` prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeReport {
    /// The effective uid the probe ran as.
    pub euid: u32,
    /// One check per layer or part of one.
    pub checks: Vec<Check>,
}

impl ProbeReport {
    /// Whether every check passed: the default profile can be enforced here.
    pub fn all_ok(&self) -> bool {
        self.checks.iter().all(|c| c.ok)
    }
}

impl fmt::Display for ProbeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let who = if self.euid == 0 {
            "root (the sandboxed command runs as nobody)".to_owned()
        } else {
            format!("uid {}", self.euid)
        };
        writeln!(f, "sandbox probe as {who}:")?;
        for c in &self.checks {
            let mark = if c.ok { "ok  " } else { "NO  " };
            writeln!(f, "  {mark} {:<28} {}", c.name, c.detail)?;
        }
        Ok(())
    }
}

/// Tries every layer on this machine.
pub fn probe() -> ProbeReport {
    let mut checks = Vec::new();
    for (name, flag) in [
        ("user namespace", libc::CLONE_NEWUSER),
        ("mount namespace", libc::CLONE_NEWUSER | libc::CLONE_NEWNS),
        ("pid namespace", libc::CLONE_NEWUSER | libc::CLONE_NEWPID),
        ("net namespace", libc::CLONE_NEWUSER | libc::CLONE_NEWNET),
    ] {
        checks.push(try_unshare(name, flag));
    }
    let abi = crate::fs_rules::kernel_abi();
    checks.push(Check {
        name: "landlock".into(),
        ok: abi >= 1,
        detail: if abi >= 1 {
            format!("kernel ABI {abi} (filesystem; TCP from ABI 4; signal scoping from ABI 6)")
        } else {
            format!("not available (errno {})", -abi)
        },
    });
    // What gives each guarantee of the default profile on this kernel (see `guarantee`).
    let kernel = crate::guarantee::Kernel {
        landlock_abi: abi,
        cgroup: !matches!(
            crate::cgroup::detect(),
            crate::cgroup::Mechanism::None { .. }
        ),
    };
    let decided = crate::guarantee::decide(&kernel, &Profile::default());
    checks.push(seccomp_check(
        decided.as_ref().is_ok_and(|e| e.seccomp_truncate),
    ));
    checks.push(Check {
        name: "rlimits".into(),
        ok: true,
        detail: "RLIMIT_CPU, RLIMIT_DATA, RLIMIT_NPROC (per process; NPROC counted in the \
                 sandbox's own user namespace)"
            .into(),
    });
    checks.push(cgroup_check());
    match decided {
        Ok(e) => checks.extend(e.lines().into_iter().map(|(name, how)| Check {
            name: format!("guarantee: {name}"),
            ok: !how.starts_with("NOT"),
            detail: how,
        })),
        Err(e) => checks.push(Check {
            name: "guarantees".into(),
            ok: false,
            detail: e.to_string(),
        }),
    }
    checks.push(whole_sandbox_check());
    ProbeReport {
        euid: nix::unistd::geteuid().as_raw(),
        checks,
    }
}

fn true_command() -> Command {
    let program = ["/usr/bin/true", "/bin/true"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("true");
    let mut cmd = Command::new(program);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

fn run(mut cmd: Command) -> Result<(), String> {
    match cmd.status() {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("the test process failed: {s}")),
        Err(e) => Err(e.to_string()),
    }
}

fn try_unshare(name: &str, flags: libc::c_int) -> Check {
    let mut cmd = true_command();
    // SAFETY: one raw syscall in the child, async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            if libc::unshare(flags) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    result(
        name,
        run(cmd),
        "works (unprivileged, inside a new user namespace)",
    )
}

fn seccomp_check(refuse_truncate: bool) -> Check {
    let programs = match crate::syscalls::programs(refuse_truncate, false) {
        Ok(p) => p,
        Err(e) => return result("seccomp", Err(e.to_string()), ""),
    };
    let mut cmd = true_command();
    // SAFETY: the BPF programs were built above; the child only loads them (syscalls).
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            for prog in &programs {
                let r = crate::syscalls::install(prog);
                if r < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let denied = crate::syscalls::denied_names().len();
    result(
        "seccomp",
        run(cmd),
        &format!("filter loads ({denied} syscalls or forms denied with EPERM)"),
    )
}

/// cgroups: which mechanism caps the whole sandbox here (the rlimits apply either way).
fn cgroup_check() -> Check {
    let v2 = [
        "/sys/fs/cgroup/cgroup.controllers",
        "/sys/fs/cgroup/unified/cgroup.controllers",
    ]
    .into_iter()
    .find_map(|p| std::fs::read_to_string(p).ok().map(|c| (p, c)));
    let v1: Vec<&str> = ["cpu", "memory", "pids"]
        .into_iter()
        .filter(|c| Path::new("/sys/fs/cgroup").join(c).join("tasks").exists())
        .collect();
    let v2_text = match &v2 {
        Some((p, c)) if !c.trim().is_empty() => format!("v2 at {p} with [{}]", c.trim()),
        Some((p, _)) => format!("v2 at {p} with no controllers"),
        None => "no v2 hierarchy".into(),
    };
    let v1_text = if v1.is_empty() {
        "no v1 controllers".to_owned()
    } else {
        format!("v1 controllers [{}]", v1.join(" "))
    };
    let mechanism = crate::cgroup::detect();
    let in_force = match &mechanism {
        crate::cgroup::Mechanism::V2 { parent } => format!(
            "cgroup v2 under {} (memory.max, pids.max, cpu.max)",
            parent.display()
        ),
        crate::cgroup::Mechanism::V1 { parents } => format!(
            "cgroup v1 under {} (memory.limit_in_bytes, pids.max, cpu.cfs_quota_us)",
            parents[0].display()
        ),
        crate::cgroup::Mechanism::None { why } => {
            format!("rlimits only, per process ({why})")
        }
    };
    Check {
        name: "cgroups".into(),
        ok: true,
        detail: format!("{v2_text}; {v1_text} — in force: {in_force}"),
    }
}

/// The default profile end to end: `true` inside every layer at once.
fn whole_sandbox_check() -> Check {
    let profile = Profile::default();
    let mut cmd = true_command();
    let outcome = match crate::apply(&profile, &mut cmd) {
        Err(e) => Err(e.to_string()),
        Ok(guard) => match cmd.status() {
            Ok(s) if s.success() => Ok(()),
            Ok(s) => Err(format!("the test process failed: {s}")),
            Err(e) => Err(guard.explain(e).to_string()),
        },
    };
    let layers: Vec<&str> = Layer::ALL.iter().map(|l| l.as_str()).collect();
    result(
        "default profile end to end",
        outcome,
        &format!("all layers in force: {}", layers.join(", ")),
    )
}

fn result(name: &str, r: Result<(), String>, ok_detail: &str) -> Check {
    match r {
        Ok(()) => Check {
            name: name.into(),
            ok: true,
            detail: ok_detail.into(),
        },
        Err(e) => Check {
            name: name.into(),
            ok: false,
            detail: e,
        },
    }
}
