//! The sandbox escape suite: each case runs a real process inside `airlock exec` that tries
//! one way out, and checks it is contained while the allowed paths still work.
//!
//! The probes are Python (`/usr/bin/python3`, so no interpreter shim outside the readable
//! paths is involved). Most cases run as whoever runs the tests (root in CI: the command
//! then runs as `nobody`); `as_nobody_*` starts Airlock itself as `nobody` via `setpriv`.
//! `egress` covers the proxy; `run` drives `airlock run` with a real MCP upstream. One test
//! binary: the modules are files beside it, not test crates of their own.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

#[path = "sandbox/egress.rs"]
mod egress;
#[path = "sandbox/escape.rs"]
mod escape;
#[path = "sandbox/run.rs"]
mod run;

const PYTHON: &str = "/usr/bin/python3";

/// A config dir with `airlock.toml` (profiles appended by the case) and an audit db.
struct Case {
    dir: tempfile::TempDir,
}

impl Case {
    fn new(profiles: &str) -> Case {
        let profiles = profiles.to_owned();
        Case::with(move |_| profiles)
    }

    /// `profiles` gets the case directory, for paths inside it.
    fn with(profiles: impl FnOnce(&Path) -> String) -> Case {
        let dir = tempfile::tempdir().unwrap();
        // The dir must be reachable by `nobody` for the cases that run Airlock as nobody;
        // the sandbox keeps it unreadable from inside by Landlock, not by mode bits.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
        fs::write(dir.path().join("p.cedar"), "").unwrap();
        let profiles = profiles(dir.path());
        let text = format!(
            "[policy]\nfiles = [\"p.cedar\"]\n[audit]\npath = \"audit.db\"\n\n\
             [agents.coder]\non_behalf_of = \"alice\"\ntask = \"build\"\n\
             [humans.alice]\n[tasks.build]\n\n{profiles}"
        );
        fs::write(dir.path().join("airlock.toml"), text).unwrap();
        Case { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn open_dir(&self, name: &str) -> PathBuf {
        open_dir(&self.path(name))
    }

    fn exec_cmd(&self, profile: &str, argv: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_airlock"));
        cmd.arg("exec")
            .arg("--config")
            .arg(self.path("airlock.toml"))
            .args(["--profile", profile, "--agent", "coder", "--"])
            .args(argv);
        cmd
    }

    fn exec(&self, profile: &str, argv: &[&str]) -> Output {
        self.exec_cmd(profile, argv).output().unwrap()
    }

    fn python(&self, profile: &str, code: &str) -> Output {
        self.exec(profile, &[PYTHON, "-c", code])
    }

    /// `(kind, decision, status, detail)` of every audit record, oldest first.
    fn records(&self) -> Vec<(String, String, String, String)> {
        let db = rusqlite::Connection::open(self.path("audit.db")).unwrap();
        let mut stmt = db
            .prepare(
                "SELECT kind, coalesce(decision,''), coalesce(status,''), coalesce(detail,'') \
                 FROM records ORDER BY seq",
            )
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }
}

/// A directory anyone may write (so the sandbox's `nobody` can, where Landlock allows).
fn open_dir(p: &Path) -> PathBuf {
    fs::create_dir_all(p).unwrap();
    fs::set_permissions(p, fs::Permissions::from_mode(0o777)).unwrap();
    p.to_path_buf()
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn allowed_paths_work_and_the_exit_code_is_propagated() {
    let case = Case::new("");
    let o = case.python(
        "default",
        r#"
import os, sys
print(open("/etc/passwd").read().count("root"))      # a readable system path
home = os.environ["HOME"]
open(home + "/note", "w").write("ok")                 # the private temp dir
print(open(home + "/note").read())
print("pid", os.getpid(), "uid", os.getuid())
print(sorted(e for e in os.listdir("/proc") if e.isdigit()))
sys.exit(7)
"#,
    );
    assert_eq!(o.status.code(), Some(7), "{}", text(&o));
    let out = stdout(&o);
    assert!(out.contains("ok\n"), "{out}");
    // PID 2 of its own namespace (init is 1), and it sees only the sandbox's processes.
    assert!(out.contains("pid 2 "), "{out}");
    assert!(out.contains("['1', '2']"), "{out}");
    assert!(!out.contains("uid 0"), "{out}");
    let records = case.records();
    let last = records.last().unwrap();
    assert_eq!(
        (last.0.as_str(), last.1.as_str(), last.2.as_str()),
        ("exec", "allow", "error")
    );
    assert!(last.3.contains("\"exit_code\":7"), "{}", last.3);
    assert!(last.3.contains("\"seccomp\""), "{}", last.3);
}

#[test]
fn writing_outside_the_writable_paths_is_denied() {
    let case2 = Case::with(|d| {
        let allowed = open_dir(&d.join("out"));
        format!(
            "[sandbox.profiles.w]\nwrite = [\"{}\"]\n",
            allowed.display()
        )
    });
    let allowed = case2.path("out");
    let victim = case2.open_dir("victim");
    let code = format!(
        r#"
import os
for p in ["{victim}/x", "/etc/airlock-escape", "/usr/airlock-escape", "/tmp/airlock-escape"]:
    try:
        open(p, "w").write("escaped")
        print("WROTE", p)
    except OSError as e:
        print("denied", p, e.errno)
open("{allowed}/ok", "w").write("fine")
print("allowed ok")
"#,
        victim = victim.display(),
        allowed = allowed.display()
    );
    let o = case2.python("w", &code);
    assert!(o.status.success(), "{}", text(&o));
    let out = stdout(&o);
    assert!(!out.contains("WROTE"), "{out}");
    assert!(out.contains("allowed ok"), "{out}");
    assert_eq!(fs::read_to_string(allowed.join("ok")).unwrap(), "fine");
    assert!(!victim.join("x").exists());
    assert!(!Path::new("/tmp/airlock-escape").exists());
}

#[test]
fn a_planted_secret_cannot_be_read() {
    let case = Case::new("");
    let home = case.path("home");
    fs::create_dir_all(home.join(".ssh")).unwrap();
    let key = home.join(".ssh/id_rsa");
    fs::write(&key, "-----BEGIN OPENSSH PRIVATE KEY-----\nsecret\n").unwrap();
    // World-readable on purpose: only the sandbox stands between the key and the command.
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
    for d in [case.dir.path(), &home, &home.join(".ssh")] {
        fs::set_permissions(d, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let code = format!(
        r#"
import os
for p in ["{key}", "{dir}", "/root", "/proc/1/root/etc/shadow"]:
    try:
        print("READ", p, open(p).read() if os.path.isfile(p) else os.listdir(p))
    except OSError as e:
        print("denied", p, e.errno)
print(len(open("/etc/hostname").read()) >= 0)
"#,
        key = key.display(),
        dir = home.join(".ssh").display()
    );
    let o = case.python("default", &code);
    assert!(o.status.success(), "{}", text(&o));
    let out = stdout(&o);
    assert!(!out.contains("READ"), "{out}");
    assert!(!out.contains("secret"), "{out}");
    assert!(out.contains("True"), "{out}");
}

#[test]
fn tcp_to_a_loopback_port_outside_is_refused() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let case = Case::new("");
    let code = format!(
        r#"
import socket
for host in ["127.0.0.1", "::1"]:
    try:
        socket.create_connection((host, {port}), timeout=2)
        print("CONNECTED", host)
    except OSError as e:
        print("refused", host, e.errno)
"#
    );
    let o = case.python("default", &code);
    assert!(o.status.success(), "{}", text(&o));
    let out = stdout(&o);
    assert!(!out.contains("CONNECTED"), "{out}");
    assert!(out.contains("refused 127.0.0.1"), "{out}");
    match listener.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("the listener outside was reached: {other:?}"),
    }
}

#[test]
fn ptrace_is_denied() {
    let case = Case::new("");
    let o = case.python(
        "default",
        r#"
import ctypes, os, time
libc = ctypes.CDLL(None, use_errno=True)
child = os.fork()
if child == 0:
    time.sleep(5); os._exit(0)
PTRACE_ATTACH, PTRACE_TRACEME = 16, 0
r = libc.ptrace(PTRACE_ATTACH, child, 0, 0)
print("attach", r, ctypes.get_errno())
r = libc.ptrace(PTRACE_TRACEME, 0, 0, 0)
print("traceme", r, ctypes.get_errno())
try:
    open(f"/proc/{child}/mem", "rb").read(1)
    print("MEM READ")
except OSError as e:
    print("mem denied", e.errno)
os.kill(child, 9)
"#,
    );
    assert!(o.status.success(), "{}", text(&o));
    let out = stdout(&o);
    assert!(out.contains("attach -1 1\n"), "{out}"); // EPERM
    assert!(out.contains("traceme -1 1\n"), "{out}");
    assert!(!out.contains("MEM READ"), "{out}");
}

#[test]
fn a_fork_bomb_is_capped() {
    let case = Case::new("[sandbox.profiles.p]\nmax_processes = 16\nwall_clock_secs = 60\n");
    let start = Instant::now();
    let o = case.python(
        "p",
        r#"
import os, time
n = 0
try:
    while True:
        if os.fork() == 0:
            time.sleep(2); os._exit(0)
        n += 1
except OSError as e:
    print("stopped", n, e.errno)
"#,
    );
    assert!(o.status.success(), "{}", text(&o));
    let out = stdout(&o);
    let n: u32 = out
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    assert!(n <= 16, "{n} processes started: {out}");
    assert!(out.ends_with(" 11\n"), "{out}"); // EAGAIN
    assert!(start.elapsed() < Duration::from_secs(30));
}

#[test]
fn a_memory_bomb_is_capped() {
    let case = Case::new("[sandbox.profiles.p]\nmemory_mb = 128\n");
    let o = case.python(
        "p",
        r#"
small = bytearray(16 << 20)
print("small ok")
try:
    big = bytearray(1 << 30)
    print("BIG ALLOCATED")
except MemoryError:
    print("big refused")
"#,
    );
    assert!(o.status.success(), "{}", text(&o));
    let out = stdout(&o);
    assert!(out.contains("small ok"), "{out}");
    assert!(out.contains("big refused"), "{out}");
}

#[test]
fn a_cpu_miner_is_killed_at_its_cpu_seconds_cap() {
    let case = Case::new("[sandbox.profiles.p]\ncpu_seconds = 1\n");
    let start = Instant::now();
    let o = case.python("p", "while True: pass");
    // SIGXCPU at the cap (128 + 24), or SIGKILL a second later if it were caught.
    assert!(
        matches!(o.status.code(), Some(152) | Some(137)),
        "{}",
        text(&o)
    );
    assert!(start.elapsed() < Duration::from_secs(20));
    let last = case.records().pop().unwrap();
    assert_eq!(last.2, "killed", "{last:?}");
    assert!(last.3.contains("CPU-seconds cap"), "{last:?}");
}

#[test]
fn the_wall_clock_cap_kills_the_whole_tree() {
    let case = Case::with(|d| {
        let beat = open_dir(&d.join("beat"));
        format!(
            "[sandbox.profiles.p]\nwall_clock_secs = 2\nwrite = [\"{}\"]\n",
            beat.display()
        )
    });
    let beat = case.path("beat");
    let code = format!(
        r#"
import os, time
if os.fork() == 0:
    os.setsid()                      # a grandchild trying to outlive its parent
    while True:
        open("{beat}/beat", "a").write("x"); time.sleep(0.05)
while True:
    time.sleep(1)
"#,
        beat = beat.display()
    );
    let start = Instant::now();
    let o = case.python("p", &code);
    assert_eq!(o.status.code(), Some(137), "{}", text(&o));
    assert!(start.elapsed() < Duration::from_secs(15));
    std::thread::sleep(Duration::from_millis(300));
    let len = fs::metadata(beat.join("beat")).unwrap().len();
    assert!(len > 0);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        fs::metadata(beat.join("beat")).unwrap().len(),
        len,
        "something survived"
    );
    let last = case.records().pop().unwrap();
    assert!(last.3.contains("\"wall_clock_exceeded\":true"), "{last:?}");
}

#[test]
fn unshare_and_mount_are_denied() {
    let case = Case::new("");
    let o = case.python(
        "default",
        r#"
import ctypes, os, socket
libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWUSER, CLONE_NEWNS, CLONE_NEWNET = 0x10000000, 0x00020000, 0x40000000
for name, flags in [("user", CLONE_NEWUSER), ("mount", CLONE_NEWNS), ("net", CLONE_NEWNET)]:
    print("unshare", name, libc.unshare(flags), ctypes.get_errno())
print("mount", libc.mount(b"none", b"/tmp", b"tmpfs", 0, None), ctypes.get_errno())
print("umount", libc.umount2(b"/proc", 2), ctypes.get_errno())
try:
    socket.socket(16, socket.SOCK_RAW, 0)        # AF_NETLINK
    print("NETLINK OPEN")
except OSError as e:
    print("netlink", e.errno)
"#,
    );
    assert!(o.status.success(), "{}", text(&o));
    let out = stdout(&o);
    for line in [
        "unshare user -1 1",
        "unshare mount -1 1",
        "unshare net -1 1",
        "mount -1 1",
        "umount -1 1",
        "netlink 1",
    ] {
        assert!(out.contains(line), "missing {line:?} in {out}");
    }
    let o = case.exec("default", &["/usr/bin/unshare", "-r", "/usr/bin/id"]);
    assert!(!o.status.success(), "{}", text(&o));
}

#[test]
fn a_setuid_binary_gains_nothing() {
    let case = Case::with(|d| {
        let bin = open_dir(&d.join("bin"));
        format!(
            "[sandbox.profiles.p]\nread = [\"/usr\", \"/lib\", \"/lib64\", \"/bin\", \"/etc\", \"{}\"]\n",
            bin.display()
        )
    });
    // A setuid-root copy of python: run as root it would report euid 0.
    let suid = case.path("bin/python-suid");
    fs::copy(fs::canonicalize(PYTHON).unwrap(), &suid).unwrap();
    fs::set_permissions(&suid, fs::Permissions::from_mode(0o4755)).unwrap();
    let o = case.exec(
        "p",
        &[
            suid.to_str().unwrap(),
            "-c",
            "import os; print('euid', os.geteuid())",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(!stdout(&o).contains("euid 0"), "{}", text(&o));
    let o = case.exec("p", &["/usr/bin/su", "-c", "id"]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(!stdout(&o).contains("uid=0"), "{}", text(&o));
}

#[test]
fn a_layer_that_cannot_be_enforced_stops_the_command() {
    // Airlock inside Airlock: the outer seccomp filter forbids unshare, so the inner
    // sandbox cannot create its namespaces and must refuse to run, naming the layer.
    // The outer sandbox runs as `nobody`, and the checkout may sit in a directory `nobody`
    // cannot enter: run a copy of the binary from the case's own (reachable) directory.
    let mut airlock_copy = PathBuf::new();
    let case = Case::with(|d| {
        let bin_dir = open_dir(&d.join("bin"));
        airlock_copy = bin_dir.join("airlock");
        fs::copy(env!("CARGO_BIN_EXE_airlock"), &airlock_copy).unwrap();
        fs::set_permissions(&airlock_copy, fs::Permissions::from_mode(0o755)).unwrap();
        let work = open_dir(&d.join("inner"));
        format!(
            "[sandbox.profiles.outer]\nread = [\"/usr\", \"/lib\", \"/lib64\", \"/etc\", \"{}\"]\n\
             write = [\"{}\"]\n",
            bin_dir.display(),
            work.display()
        )
    });
    let airlock = airlock_copy.as_path();
    let work = case.path("inner");
    let inner_cfg = work.join("airlock.toml");
    fs::write(work.join("p.cedar"), "").unwrap();
    fs::write(&inner_cfg, "[policy]\nfiles = [\"p.cedar\"]\n").unwrap();
    let o = case.exec(
        "outer",
        &[
            airlock.to_str().unwrap(),
            "exec",
            "--config",
            inner_cfg.to_str().unwrap(),
            "--",
            "/usr/bin/true",
        ],
    );
    assert_eq!(o.status.code(), Some(125), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("sandbox layer `namespaces`"), "{err}");
    assert!(err.contains("unshare"), "{err}");
}

#[test]
fn as_nobody_the_sandbox_holds_too() {
    let case = Case::new("");
    let secret = case.path("id_rsa");
    fs::write(&secret, "secret").unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o644)).unwrap();
    let code = format!(
        r#"
import os, ctypes, socket
libc = ctypes.CDLL(None, use_errno=True)
open(os.environ["HOME"] + "/ok", "w").write("ok"); print("home ok", os.getuid())
for p in ["{secret}"]:
    try: print("READ", open(p).read())
    except OSError as e: print("denied", e.errno)
try: open("{dir}/x", "w"); print("WROTE")
except OSError as e: print("write denied", e.errno)
print("ptrace", libc.ptrace(0, 0, 0, 0), ctypes.get_errno())
"#,
        secret = secret.display(),
        dir = case.dir.path().display()
    );
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"]);
    let inner = case.exec_cmd("default", &[PYTHON, "-c", &code]);
    cmd.arg(inner.get_program()).args(inner.get_args());
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let out = stdout(&o);
    assert!(out.contains("home ok 65534"), "{out}");
    assert!(!out.contains("READ"), "{out}");
    assert!(!out.contains("WROTE"), "{out}");
    assert!(out.contains("ptrace -1 1"), "{out}");
    let last = case.records().pop().unwrap();
    assert_eq!(last.0, "exec");
}

// === whole-tree caps (cgroups) ===

#[test]
fn a_memory_bomb_split_across_processes_meets_the_whole_sandbox_cap() {
    let probe = Command::new(env!("CARGO_BIN_EXE_airlock"))
        .args(["sandbox", "probe"])
        .output()
        .unwrap();
    let probe = stdout(&probe);
    if probe.contains("in force: rlimits") {
        // No cgroup here (an unprivileged run): per-process caps only, tested above.
        return;
    }
    assert!(probe.contains("in force: cgroup v"), "{probe}");
    // 6 processes of 40 MiB each: every one is under its own 96 MiB rlimit, the tree is not.
    let case = Case::new("[sandbox.profiles.p]\nmemory_mb = 96\n");
    let o = case.python(
        "p",
        r#"
import os, time
kids = []
for i in range(6):
    pid = os.fork()
    if pid == 0:
        block = bytearray(40 << 20)
        for j in range(0, len(block), 4096): block[j] = 1
        time.sleep(2)
        os._exit(0)
    kids.append(pid)
killed = 0
for pid in kids:
    _, status = os.waitpid(pid, 0)
    killed += os.WIFSIGNALED(status) and os.WTERMSIG(status) == 9
print("killed", killed)
"#,
    );
    let out = stdout(&o);
    // The kernel's OOM killer acted inside the sandbox's group (on children, or the parent).
    assert!(
        !out.contains("killed 0") || o.status.code() == Some(137),
        "{}",
        text(&o)
    );
    let last = case.records().pop().unwrap();
    assert!(last.3.contains("\"cap_hit\":\"memory cap\""), "{last:?}");
    assert!(last.3.contains("\"caps\":\"cgroup v"), "{last:?}");
}
