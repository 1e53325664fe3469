//! cgroups: caps on the whole sandbox (memory, processes, CPU rate), not per process.
//!
//! What the host offers decides the mechanism, detected once per call of [`detect`]:
//! - **v2** where the unified hierarchy has the `memory`, `pids` and `cpu` controllers and
//!   Airlock may enable them for a child group (delegated, or Airlock is root of it);
//! - **v1** where only the legacy per-controller hierarchies are writable (root on a hybrid
//!   host);
//! - else none: the per-process rlimits are the caps (an unprivileged Airlock).
//!
//! The parent creates one group per sandbox and opens its `cgroup.procs`; the new process
//! writes `0` (itself) there first thing, before it forks, so nothing escapes the group.

use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::SandboxError;
use crate::profile::{Layer, Profile};

/// The controllers Airlock uses.
const CONTROLLERS: [&str; 3] = ["memory", "pids", "cpu"];
/// `cpu.max` / `cfs_period_us` period: 100 ms.
const CPU_PERIOD_US: u64 = 100_000;

/// Which cgroup mechanism is in force on this host for this Airlock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mechanism {
    /// The unified hierarchy: one group, `memory.max`, `pids.max`, `cpu.max`.
    V2 {
        /// The group new sandbox groups are created in.
        parent: PathBuf,
    },
    /// Legacy hierarchies: a group in each of memory, pids and cpu.
    V1 {
        /// The memory, pids and cpu parent groups, in [`CONTROLLERS`] order.
        parents: [PathBuf; 3],
    },
    /// No cgroup can be created: the rlimits are the caps.
    None {
        /// Why, for `airlock sandbox probe`.
        why: String,
    },
}

impl Mechanism {
    /// `v2`, `v1` or `rlimits`: what `airlock sandbox probe` and the audit trail say.
    pub fn name(&self) -> &'static str {
        match self {
            Mechanism::V2 { .. } => "cgroup v2",
            Mechanism::V1 { .. } => "cgroup v1",
            Mechanism::None { .. } => "rlimits",
        }
    }
}

/// Finds what this host lets this process use.
pub fn detect() -> Mechanism {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let mut why = Vec::new();
    match v2_parent(&mountinfo, &own) {
        Ok(parent) => return Mechanism::V2 { parent },
        Err(e) => why.push(format!("v2: {e}")),
    }
    match v1_parents(&mountinfo, &own) {
        Ok(parents) => return Mechanism::V1 { parents },
        Err(e) => why.push(format!("v1: {e}")),
    }
    Mechanism::None {
        why: why.join("; "),
    }
}

/// The v2 group Airlock may create children with all three controllers in.
fn v2_parent(mountinfo: &str, own: &str) -> Result<PathBuf, String> {
    let mount = mounts(mountinfo)
        .find(|m| m.fstype == "cgroup2")
        .ok_or("no cgroup2 mount")?;
    let path = own
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or("this process is in no v2 group")?;
    let dir = mount.join(path);
    let available = fs::read_to_string(dir.join("cgroup.controllers"))
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let missing: Vec<&str> = CONTROLLERS
        .into_iter()
        .filter(|c| !available.split_whitespace().any(|a| a == *c))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "{} lacks the {} controller(s)",
            dir.display(),
            missing.join(", ")
        ));
    }
    let enabled = fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap_or_default();
    if CONTROLLERS
        .iter()
        .all(|c| enabled.split_whitespace().any(|e| e == *c))
    {
        return Ok(dir);
    }
    // Enabling them works where the group holds no process (or is the root).
    fs::write(dir.join("cgroup.subtree_control"), "+memory +pids +cpu")
        .map_err(|e| format!("cannot enable controllers in {}: {e}", dir.display()))?;
    Ok(dir)
}

/// The v1 groups (memory, pids, cpu) this process is in, if each is writable.
fn v1_parents(mountinfo: &str, own: &str) -> Result<[PathBuf; 3], String> {
    let mut found = Vec::new();
    for controller in CONTROLLERS {
        let mount = mounts(mountinfo)
            .find(|m| m.fstype == "cgroup" && m.options.split(',').any(|o| o == controller))
            .ok_or_else(|| format!("no {controller} hierarchy"))?;
        let path = own
            .lines()
            .filter_map(|l| l.split_once(':').and_then(|(_, rest)| rest.split_once(':')))
            .find(|(list, _)| list.split(',').any(|c| c == controller))
            .map(|(_, path)| path)
            .ok_or_else(|| format!("this process is in no {controller} group"))?;
        let dir = mount.join(path);
        if !writable(&dir) {
            return Err(format!("{} is not writable", dir.display()));
        }
        found.push(dir);
    }
    let [m, p, c]: [PathBuf; 3] = found.try_into().map_err(|_| "controller list".to_owned())?;
    Ok([m, p, c])
}

fn writable(dir: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: access(2) reads the NUL-terminated path and nothing else.
    unsafe { libc::access(c.as_ptr(), libc::W_OK) == 0 }
}

/// One line of /proc/self/mountinfo, as far as cgroups need it.
struct Mount<'a> {
    root: &'a str,
    point: &'a str,
    fstype: &'a str,
    options: &'a str,
}

impl Mount<'_> {
    /// The directory of the hierarchy path `path` (as /proc/self/cgroup gives it).
    fn join(&self, path: &str) -> PathBuf {
        let rel = path.strip_prefix(self.root).unwrap_or(path);
        Path::new(self.point).join(rel.trim_start_matches('/'))
    }
}

fn mounts(mountinfo: &str) -> impl Iterator<Item = Mount<'_>> {
    mountinfo.lines().filter_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let mut l = left.split(' ');
        let root = l.nth(3)?;
        let point = l.next()?;
        let mut r = right.split(' ');
        let fstype = r.next()?;
        let options = r.nth(1)?;
        Some(Mount {
            root,
            point,
            fstype,
            options,
        })
    })
}

/// The groups of one sandbox; removed (after a kill) on drop.
#[derive(Debug)]
pub(crate) struct Groups {
    dirs: Vec<PathBuf>,
    v2: bool,
}

static NEXT: AtomicU64 = AtomicU64::new(0);
static SWEEP: std::sync::Once = std::sync::Once::new();

/// Removes the groups an Airlock that died without cleaning up (`kill -9`) left in `parent`:
/// `airlock-<pid>-<n>` of a pid no longer running, or of this process's own pid before it has
/// made any (a dead process had the pid first: its name would collide with ours). A group still
/// holding processes cannot be removed and stays.
fn sweep_stale(parent: &Path) {
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    let me = std::process::id();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("airlock-"))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        let stale = pid == me || !Path::new("/proc").join(pid.to_string()).exists();
        if stale && fs::remove_dir(entry.path()).is_ok() {
            tracing::debug!(group = %entry.path().display(), "removed a stale sandbox cgroup");
        }
    }
}

/// Creates the sandbox's groups with the profile's caps; returns them and the open
/// `cgroup.procs` files the new process joins through.
pub(crate) fn create(
    mechanism: &Mechanism,
    profile: &Profile,
) -> Result<Option<(Groups, Vec<OwnedFd>)>, SandboxError> {
    let name = format!(
        "airlock-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let memory = profile.memory_bytes;
    // The two helpers (supervisor, init) count as tasks too.
    let pids = profile
        .max_processes
        .map(|n| n.saturating_add(crate::HELPER_PROCESSES));
    let quota = profile
        .cpu_percent
        .map(|p| p.saturating_mul(CPU_PERIOD_US) / 100);
    // (directories, v2?, settings as (directory index, file, value)); no `Groups` yet: its
    // Drop removes what it names.
    type Settings<'a> = Vec<(usize, &'a str, Option<String>)>;
    let (dirs, v2, settings): (Vec<PathBuf>, bool, Settings<'_>) = match mechanism {
        Mechanism::None { .. } => return Ok(None),
        Mechanism::V2 { parent } => (
            vec![parent.join(&name)],
            true,
            vec![
                (0, "memory.max", memory.map(|b| b.to_string())),
                (0, "memory.swap.max", memory.map(|_| "0".to_owned())),
                (0, "pids.max", pids.map(|n| n.to_string())),
                (0, "cpu.max", quota.map(|q| format!("{q} {CPU_PERIOD_US}"))),
            ],
        ),
        // A v1 cpu group is made only for a rate cap: a group is scheduled as one entity
        // against every other process, which would slow the server on a busy host.
        Mechanism::V1 { parents } => (
            parents
                .iter()
                .take(if quota.is_some() { 3 } else { 2 })
                .map(|p| p.join(&name))
                .collect(),
            false,
            vec![
                (0, "memory.limit_in_bytes", memory.map(|b| b.to_string())),
                (
                    0,
                    "memory.memsw.limit_in_bytes",
                    memory.map(|b| b.to_string()),
                ),
                (1, "pids.max", pids.map(|n| n.to_string())),
                (
                    2,
                    "cpu.cfs_period_us",
                    quota.map(|_| CPU_PERIOD_US.to_string()),
                ),
                (2, "cpu.cfs_quota_us", quota.map(|q| q.to_string())),
            ],
        ),
    };
    let fail = |what: String, e: io::Error| SandboxError::Prepare {
        layer: Layer::Rlimits,
        what,
        source: Box::new(e),
    };
    SWEEP.call_once(|| {
        for parent in dirs.iter().filter_map(|d| d.parent()) {
            sweep_stale(parent);
        }
    });
    let mut made = Groups {
        dirs: Vec::new(),
        v2,
    };
    for dir in &dirs {
        fs::create_dir(dir).map_err(|e| fail(format!("creating cgroup {}", dir.display()), e))?;
        made.dirs.push(dir.clone());
    }
    for (i, file, value) in settings {
        let (Some(dir), Some(value)) = (made.dirs.get(i), value) else {
            continue;
        };
        let path = dir.join(file);
        // Swap accounting is optional in the kernel; its file may be absent.
        if file.contains("swap") || file.contains("memsw") {
            if path.exists() {
                let _ = fs::write(&path, &value);
            }
            continue;
        }
        fs::write(&path, &value)
            .map_err(|e| fail(format!("writing {value} to {}", path.display()), e))?;
    }
    let mut procs = Vec::new();
    for dir in &made.dirs {
        let path = dir.join("cgroup.procs");
        let f = fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| fail(format!("opening {}", path.display()), e))?;
        procs.push(OwnedFd::from(f));
    }
    Ok(Some((made, procs)))
}

/// What a group's counters say ended the sandbox, if a cap did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Breach {
    Memory,
    Processes,
}

impl Groups {
    /// The cap the kernel enforced, read from the groups' event counters.
    pub(crate) fn breach(&self) -> Option<Breach> {
        let count = |file: &str, key: &str| -> u64 {
            self.dirs
                .iter()
                .filter_map(|d| fs::read_to_string(d.join(file)).ok())
                .flat_map(|text| {
                    text.lines()
                        .filter_map(|l| l.strip_prefix(key)?.trim().parse::<u64>().ok())
                        .collect::<Vec<_>>()
                })
                .sum()
        };
        let oom = if self.v2 {
            count("memory.events", "oom_kill ")
        } else {
            count("memory.oom_control", "oom_kill ")
        };
        if oom > 0 {
            return Some(Breach::Memory);
        }
        if count("pids.events", "max ") > 0 {
            return Some(Breach::Processes);
        }
        None
    }

    /// Kills every process in the groups (v2: `cgroup.kill`; v1: each listed pid).
    pub(crate) fn kill(&self) {
        for dir in &self.dirs {
            if self.v2 && fs::write(dir.join("cgroup.kill"), "1").is_ok() {
                continue;
            }
            let Ok(text) = fs::read_to_string(dir.join("cgroup.procs")) else {
                continue;
            };
            for pid in text.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                if pid > 1 {
                    // SAFETY: kill(2) with a pid read from our own group.
                    unsafe {
                        libc::kill(pid, libc::SIGKILL);
                    }
                }
            }
        }
    }
}

impl Drop for Groups {
    fn drop(&mut self) {
        self.kill();
        for dir in &self.dirs {
            // A group empties a moment after its last process is reaped.
            for _ in 0..100 {
                match fs::remove_dir(dir) {
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                        std::thread::sleep(std::time::Duration::from_millis(5));
                    }
                    _ => break,
                }
            }
        }
    }
}

/// Joins the calling process to each group (the pre-exec hook: plain syscalls only).
///
/// # Safety
/// Between fork and exec: no allocation; `fds` were opened by the parent.
pub(crate) unsafe fn join(fd: libc::c_int) -> libc::c_int {
    let zero = b"0";
    // SAFETY: writing two bytes from a static buffer to an fd the parent opened.
    let n = unsafe { libc::write(fd, zero.as_ptr().cast(), zero.len()) };
    if n == 1 {
        0
    } else {
        -1
    }
}

#[cfg(test)]
#[path = "cgroup_tests.rs"]
mod tests;
