#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Stdio};
use std::time::Duration;

use super::*;

fn sh(script: &str) -> Command {
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(script)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

#[test]
fn a_command_runs_in_the_default_profile_with_a_clean_environment() {
    let mut cmd = sh("echo \"$$ $HOME ${AIRLOCK_TEST_SECRET:-unset}\"; test -w \"$HOME\"");
    cmd.env("AIRLOCK_TEST_SECRET", "leaked");
    let mut guard = apply(&Profile::default(), &mut cmd).unwrap();
    let child = cmd.spawn().map_err(|e| guard.explain(e)).unwrap();
    guard.started(child.id()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let home = guard.private_dir().unwrap().display().to_string();
    assert_eq!(text, format!("2 {home} unset\n"));
    assert_eq!(guard.layers(), Layer::ALL);
    assert!(guard.kills_whole_tree());
    let dir = guard.private_dir().unwrap().to_path_buf();
    drop(guard);
    assert!(!dir.exists(), "the private dir is removed with the guard");
}

#[test]
fn a_missing_writable_path_is_refused_before_anything_starts() {
    let profile = Profile {
        write: vec!["/nonexistent/airlock-test".into()],
        ..Profile::default()
    };
    let err = apply(&profile, &mut sh("true")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "sandbox path /nonexistent/airlock-test: a writable path must exist"
    );
}

#[test]
fn the_wall_clock_cap_kills_and_is_reported() {
    let profile = Profile {
        wall_clock: Some(Duration::from_millis(300)),
        ..Profile::default()
    };
    let out = run(&profile, &mut sh("sleep 20"), None).unwrap();
    assert_eq!(out.code, 137);
    assert!(out.wall_clock_exceeded);
    assert_eq!(out.cap_hit, Some("wall-clock cap"));
    assert!(out.duration < Duration::from_secs(10));
}

#[test]
fn exit_codes_follow_the_shell_convention() {
    let out = run(&Profile::default(), &mut sh("exit 3"), None).unwrap();
    assert_eq!((out.code, out.cap_hit), (3, None));
    let out = run(&Profile::default(), &mut sh("kill -TERM $$"), None).unwrap();
    assert_eq!(out.code, 128 + libc::SIGTERM);
}

#[test]
fn limits_leave_room_for_the_two_helpers() {
    let profile = Profile {
        max_processes: Some(10),
        cpu_seconds: Some(5),
        ..Profile::default()
    };
    let l = limits(&profile);
    assert_eq!(l.nproc.map(|r| (r.rlim_cur, r.rlim_max)), Some((12, 12)));
    assert_eq!(l.cpu.map(|r| (r.rlim_cur, r.rlim_max)), Some((5, 6)));
}

#[test]
fn the_seccomp_programs_compile() {
    let programs = syscalls::programs(false, false).unwrap();
    assert!(programs.len() >= 2);
    // In Landlock's place on kernels before ABI 3: more rules, same number of programs.
    let with_truncate = syscalls::programs(true, false).unwrap();
    assert_eq!(with_truncate.len(), programs.len());
    assert!(with_truncate[0].len() > programs[0].len());
    assert!(seccomp_denied().contains(&"ptrace"));
}

#[test]
fn bare_names_resolve_to_a_visible_path() {
    let p = resolve_program(&Profile::default(), "sh").unwrap();
    assert!(SYSTEM_READ_PATHS.iter().any(|r| p.starts_with(r)), "{p:?}");
    assert_eq!(
        resolve_program(&Profile::default(), "no-such-airlock-cmd"),
        None
    );
}

#[test]
fn egress_without_its_own_network_namespace_is_refused() {
    let mut profile = Profile {
        egress: vec![airlock_config::EgressRule::parse("example.com").unwrap()],
        ..Profile::default()
    };
    profile.off.insert(Layer::Network);
    let err = apply(&profile, &mut sh("true")).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("sandbox layer `network` cannot be enforced: `egress` needs"),
        "{err}"
    );
}

#[test]
fn the_filesystem_view_shows_only_granted_paths_beneath_tmp() {
    use std::os::unix::fs::PermissionsExt;
    let outer = tempfile::tempdir().unwrap();
    // Reachable by `nobody` (the command's user when the tests run as root).
    std::fs::set_permissions(outer.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let granted = outer.path().join("granted");
    std::fs::create_dir(&granted).unwrap();
    let secret = outer.path().join("secret");
    std::fs::write(&secret, "x").unwrap();
    let profile = Profile {
        read: [Profile::default().read, vec![granted.clone()]].concat(),
        ..Profile::default()
    };
    // stat(2) is not Landlock's to refuse: only the view keeps `secret` unseen.
    let script = format!(
        "test -d {g} && echo granted; test -e {s} && echo VISIBLE; pwd",
        g = granted.display(),
        s = secret.display()
    );
    let mut cmd = sh(&script);
    let mut guard = apply(&profile, &mut cmd).unwrap();
    let child = cmd.spawn().map_err(|e| guard.explain(e)).unwrap();
    guard.started(child.id()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let private = guard.private_dir().unwrap().to_path_buf();
    if HIDDEN_PATHS.iter().any(|h| secret.starts_with(h)) {
        assert_eq!(text, format!("granted\n{}\n", private.display()));
    } else {
        assert!(text.starts_with("granted\nVISIBLE\n"), "{text}");
    }
}

#[test]
fn a_unix_socket_cannot_be_made_inside_but_a_connected_pair_can() {
    let code = r#"
import socket
for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
    try:
        socket.socket(socket.AF_UNIX, kind); print("MADE", kind)
    except OSError as e:
        print("refused", e.errno)
try:
    socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM); print("DGRAM PAIR")
except OSError as e:
    print("refused pair", e.errno)
a, b = socket.socketpair(); a.sendall(b"ok"); print(b.recv(2).decode())
"#;
    let mut cmd = Command::new("/usr/bin/python3");
    cmd.arg("-c")
        .arg(code)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = run_output(&Profile::default(), cmd);
    assert_eq!(out, "refused 1\nrefused 1\nrefused pair 1\nok\n");
}

#[test]
fn a_sandboxed_command_cannot_type_into_a_terminal() {
    // seccomp answers before the kernel looks at the descriptor: EPERM here, where an
    // unfiltered process would get ENOTTY (stdin is not a terminal in the test).
    let code = r#"
import fcntl, termios, errno
for req in (termios.TIOCSTI, 0x541C):
    try:
        fcntl.ioctl(0, req, b"x"); print("TYPED")
    except OSError as e:
        print("refused" if e.errno == errno.EPERM else "errno %d" % e.errno)
"#;
    let mut cmd = Command::new("/usr/bin/python3");
    cmd.arg("-c")
        .arg(code)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = run_output(&Profile::default(), cmd);
    assert_eq!(out, "refused\nrefused\n");
}

#[test]
fn paths_on_the_command_line_are_passed_as_their_real_paths() {
    // The view shows a granted path beneath /tmp at its real path only: `x/../f` would name
    // nothing inside.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("x")).unwrap();
    std::fs::write(dir.path().join("f"), "").unwrap();
    let through = format!("{}/x/../f", dir.path().display());
    let real = dir.path().join("f").canonicalize().unwrap();
    let args = crate::absolute_args(&[through.clone(), "stdio".into(), "/no/such".into()]);
    assert_eq!(
        args,
        [
            real.display().to_string(),
            "stdio".into(),
            "/no/such".into()
        ]
    );
    assert_eq!(
        crate::resolve_program(&Profile::default(), &through).unwrap(),
        real
    );
}

#[test]
fn a_named_unix_socket_is_reachable_and_its_neighbours_are_not() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let named = dir.path().join("named.sock");
    let other = dir.path().join("other.sock");
    let mut listeners = Vec::new();
    for path in [&named, &other] {
        listeners.push(std::os::unix::net::UnixListener::bind(path).unwrap());
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let code = format!(
        r#"
import socket
for path in ({named:?}, {other:?}):
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(path); print("reached")
    except OSError as e:
        print("refused", e.errno)
"#,
        named = named.display().to_string(),
        other = other.display().to_string(),
    );
    let profile = Profile {
        unix_sockets: vec![named.clone()],
        ..Profile::default()
    };
    let mut cmd = Command::new("/usr/bin/python3");
    cmd.arg("-c")
        .arg(code)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = run_output(&profile, cmd);
    // ENOENT: beneath /tmp the view shows the named socket only.
    assert_eq!(out, "reached\nrefused 2\n");
    drop(listeners);
}

fn run_output(profile: &Profile, mut cmd: Command) -> String {
    let mut guard = apply(profile, &mut cmd).unwrap();
    let child = cmd.spawn().map_err(|e| guard.explain(e)).unwrap();
    guard.started(child.id()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn where_landlock_cannot_the_filter_refuses_truncation_but_not_writing() {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("f");
    std::fs::write(&f, "data").unwrap();
    let code = format!(
        r#"
import os
f = {f:?}
for how, op in [("truncate", lambda: os.truncate(f, 0)),
                ("rdonly-trunc", lambda: os.close(os.open(f, os.O_RDONLY | os.O_TRUNC)))]:
    try:
        op(); print("DONE", how, os.path.getsize(f))
    except OSError as e:
        print("refused", how, e.errno)
open(f, "w").write("new")       # O_WRONLY|O_TRUNC: Landlock's to judge (write access)
os.ftruncate(os.open(f, os.O_WRONLY), 1)
print(open(f).read())
"#,
        f = f.display().to_string()
    );
    // Only the filter (as on a kernel before Landlock ABI 3, where it stands in).
    let programs = syscalls::programs(true, false).unwrap();
    let mut cmd = Command::new("/usr/bin/python3");
    cmd.arg("-c").arg(code).stdout(Stdio::piped());
    // SAFETY: the BPF programs were built above; the child only loads them (syscalls).
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            for prog in &programs {
                if syscalls::install(prog) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "refused truncate 1\nrefused rdonly-trunc 1\nn\n"
    );
}
