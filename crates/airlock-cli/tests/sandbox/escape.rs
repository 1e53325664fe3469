//! Issue 15, "Close the ways out": no host Unix socket is reachable from inside (a socket in
//! `/tmp`, D-Bus, a gateway's control socket), Airlock's audit database can be neither
//! truncated nor written, and the command never starts in Airlock's working directory. As
//! whoever runs the tests (root: the command runs as `nobody`) and with Airlock itself as
//! `nobody`. Every socket here is world-writable on purpose: only the sandbox stands between.

use std::os::unix::net::{UnixDatagram, UnixListener};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

/// `setpriv` prefix that runs Airlock as `nobody`.
pub(super) const AS_NOBODY: [&str; 5] = [
    "setpriv",
    "--reuid=nobody",
    "--regid=nogroup",
    "--clear-groups",
    "--",
];

/// A stream listener and a datagram socket at `path` (+ `.dgram`), world-writable; removed
/// on drop.
pub(super) struct HostSockets {
    pub(super) stream_path: PathBuf,
    pub(super) dgram_path: PathBuf,
    stream: UnixListener,
    dgram: UnixDatagram,
}

impl HostSockets {
    pub(super) fn bind(path: PathBuf) -> HostSockets {
        let dgram_path = path.with_extension("dgram");
        for p in [&path, &dgram_path] {
            let _ = fs::remove_file(p);
        }
        let stream = UnixListener::bind(&path).unwrap();
        stream.set_nonblocking(true).unwrap();
        let dgram = UnixDatagram::bind(&dgram_path).unwrap();
        dgram.set_nonblocking(true).unwrap();
        for p in [&path, &dgram_path] {
            fs::set_permissions(p, fs::Permissions::from_mode(0o777)).unwrap();
        }
        HostSockets {
            stream_path: path,
            dgram_path,
            stream,
            dgram,
        }
    }

    /// Nothing connected, nothing received.
    pub(super) fn assert_untouched(&self) {
        match self.stream.accept() {
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            other => panic!(
                "{} was reached from the sandbox: {other:?}",
                self.stream_path.display()
            ),
        }
        let mut buf = [0u8; 16];
        match self.dgram.recv(&mut buf) {
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            other => panic!(
                "{} got a datagram from the sandbox: {other:?}",
                self.dgram_path.display()
            ),
        }
    }
}

impl Drop for HostSockets {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.stream_path);
        let _ = fs::remove_file(&self.dgram_path);
    }
}

/// A fresh socket path in /tmp (the shared temp dir, where such sockets live).
pub(super) fn tmp_socket(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    PathBuf::from(format!(
        "/tmp/airlock-escape-{tag}-{}-{}.sock",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

/// The D-Bus sockets of this machine that exist: the system bus and the session bus.
fn dbus_sockets() -> Vec<PathBuf> {
    let mut found = vec![PathBuf::from("/run/dbus/system_bus_socket")];
    if let Ok(addr) = std::env::var("DBUS_SESSION_BUS_ADDRESS") {
        if let Some(p) = addr
            .strip_prefix("unix:path=")
            .and_then(|p| p.split(',').next())
        {
            found.push(PathBuf::from(p));
        }
    }
    found.retain(|p| p.exists());
    found
}

/// Python that tries every way to a Unix socket at each path in `PATHS`, and every way to
/// shorten or overwrite `DB`; prints `REACHED …`, `TRUNCATED …`, `WROTE …` on success.
pub(super) const PROBE: &str = r#"
import os, socket, sys
paths, db = PATHS, DB
def attempt(what, path, f):
    try:
        f()
        print("REACHED", what, path)
    except OSError as e:
        print("refused", what, path, e.errno)
for p in paths:
    print("VISIBLE" if os.path.exists(p) else "hidden", p)
    def stream():
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.settimeout(2); s.connect(p)
    def dgram():
        socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b"x", p)
    def dgram_pair():
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM); a.sendto(b"x", p)
    def stream_pair():
        a, b = socket.socketpair(); a.connect(p)
    for what, f in [("stream", stream), ("dgram", dgram), ("dgram-pair", dgram_pair),
                    ("stream-pair", stream_pair)]:
        attempt(what, p, f)
def trunc(how, f):
    try:
        f()
        print("TRUNCATED", how) if os.path.getsize(db) == 0 else print("kept", how)
    except OSError as e:
        print("refused", how, e.errno)
trunc("truncate", lambda: os.truncate(db, 0))
trunc("O_RDONLY|O_TRUNC", lambda: os.close(os.open(db, os.O_RDONLY | os.O_TRUNC)))
trunc("O_WRONLY|O_TRUNC", lambda: os.close(os.open(db, os.O_WRONLY | os.O_TRUNC)))
try:
    with open(db, "r+b") as f:
        f.write(b"ESCAPED-BY-" + b"SANDBOX")  # split: the exec record holds this code
    print("WROTE", db)
except OSError as e:
    print("refused write", e.errno)
# What a server legitimately uses still works: a connected pair between its own processes.
a, b = socket.socketpair()
a.sendall(b"ok"); print("pair", b.recv(2).decode())
"#;

/// `PROBE` for these socket paths and database.
pub(super) fn probe(paths: &[&Path], db: &Path) -> String {
    let list: Vec<String> = paths
        .iter()
        .map(|p| format!("{:?}", p.display().to_string()))
        .collect();
    format!(
        "PATHS = [{}]\nDB = {:?}\n{PROBE}",
        list.join(", "),
        db.display().to_string()
    )
}

/// What `PROBE` printed shows no way out; `paths` beneath a hidden directory are not seen.
pub(super) fn assert_contained(out: &str, paths: &[&Path]) {
    for bad in ["REACHED", "TRUNCATED", "WROTE"] {
        assert!(!out.contains(bad), "{bad} in:\n{out}");
    }
    for p in paths {
        assert!(
            out.contains(&format!("refused stream {} ", p.display())),
            "{out}"
        );
        let hidden = ["/tmp", "/run"].iter().any(|h| p.starts_with(h));
        if hidden {
            assert!(out.contains(&format!("hidden {}\n", p.display())), "{out}");
        }
    }
    assert!(out.contains("pair ok"), "{out}");
}

/// Runs `cmd` (an `airlock` command line) in `dir`, behind `prefix` if any.
pub(super) fn output_in(prefix: &[&str], cmd: &Command, dir: &Path) -> Output {
    let mut run = match prefix.split_first() {
        Some((first, rest)) => {
            let mut outer = Command::new(first);
            outer.args(rest).arg(cmd.get_program());
            outer
        }
        None => Command::new(cmd.get_program()),
    };
    run.args(cmd.get_args()).current_dir(dir);
    run.output().unwrap()
}

fn exec_escape(prefix: &[&str]) {
    let case = Case::new("");
    // The audit database exists, with records in it (made by the same user as below).
    let o = output_in(
        prefix,
        &case.exec_cmd("default", &["/usr/bin/true"]),
        case.dir.path(),
    );
    assert!(o.status.success(), "{}", text(&o));
    let db = case.path("audit.db");
    let before = fs::read(&db).unwrap();
    assert!(!before.is_empty());
    let host = HostSockets::bind(tmp_socket("host"));
    // A gateway's control sockets, where `airlock_control` puts them, made reachable by mode.
    let control_dir = airlock_control::socket_dir(&db);
    fs::create_dir_all(&control_dir).unwrap();
    fs::set_permissions(&control_dir, fs::Permissions::from_mode(0o777)).unwrap();
    let control = HostSockets::bind(control_dir.join("1-escape.sock"));
    let dbus = dbus_sockets();
    let mut paths: Vec<&Path> = vec![
        &host.stream_path,
        &host.dgram_path,
        &control.stream_path,
        &control.dgram_path,
    ];
    paths.extend(dbus.iter().map(PathBuf::as_path));
    let code = probe(&paths, &db);

    // Started where the database is: the command must not start there.
    let cmd = case.exec_cmd("default", &[PYTHON, "-c", &code]);
    let o = output_in(prefix, &cmd, case.dir.path());
    assert!(o.status.success(), "{}", text(&o));
    let out = stdout(&o);
    assert_contained(&out, &paths);
    host.assert_untouched();
    control.assert_untouched();
    // Only the exec record was added: nothing inside touched the file.
    let after = fs::read(&db).unwrap();
    assert!(after.len() >= before.len(), "the audit database shrank");
    assert!(!after.windows(18).any(|w| w == b"ESCAPED-BY-SANDBOX"));
    let _ = fs::remove_dir_all(&control_dir);
}

#[test]
fn issue15_no_host_unix_socket_and_no_audit_write_from_exec() {
    exec_escape(&[]);
}

#[test]
fn issue15_as_nobody_no_host_unix_socket_and_no_audit_write_from_exec() {
    exec_escape(&AS_NOBODY);
}

#[test]
fn issue15_the_command_starts_in_its_own_directory_not_airlocks() {
    let case = Case::new("[sandbox.profiles.bare]\nprivate_tmp = false\n");
    let code = r#"
import os
print("cwd", os.getcwd(), os.environ.get("HOME", "-"))
print("db here" if os.path.exists("audit.db") else "no db here")
"#;
    for (profile, own_home) in [("default", true), ("bare", false)] {
        let mut cmd = case.exec_cmd(profile, &[PYTHON, "-c", code]);
        cmd.current_dir(case.dir.path());
        let o = cmd.output().unwrap();
        assert!(o.status.success(), "{}", text(&o));
        let out = stdout(&o);
        let line = out.lines().next().unwrap();
        let mut words = line.split(' ').skip(1);
        let (cwd, home) = (words.next().unwrap(), words.next().unwrap());
        if own_home {
            assert_eq!(cwd, home, "{out}");
            assert!(cwd.contains("airlock-sandbox-"), "{out}");
        } else {
            assert_eq!(cwd, "/", "{out}");
        }
        assert!(out.contains("no db here"), "{out}");
    }
}

#[test]
fn issue15_relative_paths_on_the_command_line_still_name_airlocks_files() {
    let case = Case::new("");
    fs::write(case.path("script.py"), "print('script ran')\n").unwrap();
    let mut cmd = case.exec_cmd("default", &[PYTHON, "script.py"]);
    cmd.current_dir(case.dir.path());
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(stdout(&o), "script ran\n");
}

#[test]
fn issue15_probe_says_what_gives_each_guarantee() {
    let o = Command::new(env!("CARGO_BIN_EXE_airlock"))
        .args(["sandbox", "probe"])
        .output()
        .unwrap();
    let out = stdout(&o);
    assert!(o.status.success(), "{}", text(&o));
    for line in [
        "guarantee: host unix sockets",
        "seccomp refuses socket(AF_UNIX) and datagram pairs",
        "mount namespace hides /tmp, /run, /dev/shm, homes",
        "guarantee: truncate",
        "guarantee: tcp",
        "network namespace (no route out)",
    ] {
        assert!(out.contains(line), "missing {line:?} in {out}");
    }
}

#[test]
fn issue15_as_nobody_cpu_percent_without_a_cgroup_stops_the_command() {
    // Unprivileged, Airlock can make no cgroup here (see `as_nobody_airlock_run_…`): a CPU
    // rate cap has nothing to enforce it, so nothing starts.
    let case = Case::new("[sandbox.profiles.p]\ncpu_percent = 50\n");
    let o = output_in(
        &AS_NOBODY,
        &case.exec_cmd("p", &["/usr/bin/true"]),
        case.dir.path(),
    );
    assert_eq!(o.status.code(), Some(125), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("sandbox layer `rlimits` cannot be enforced: `cpu_percent` needs a cgroup"),
        "{err}"
    );
}
