#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;
use crate::{parse, Config};

const MINIMAL: &str = "[policy]\nfiles = [\"p.cedar\"]\n";

fn config(extra: &str) -> Config {
    parse(
        &format!("{MINIMAL}{extra}"),
        Path::new("/etc/airlock/airlock.toml"),
    )
    .unwrap()
}

fn error(extra: &str) -> String {
    parse(&format!("{MINIMAL}{extra}"), Path::new("airlock.toml"))
        .unwrap_err()
        .to_string()
}

#[test]
fn servers_default_to_the_built_in_default_profile() {
    let c = config("[servers.corp]\n");
    assert_eq!(c.servers["corp"].sandbox, ServerSandbox::default());
    let (name, profile) = c.sandbox_for_server("corp").unwrap();
    assert_eq!(name, "default");
    assert_eq!(*profile, SandboxProfile::default());
    assert!(profile.off.is_empty());
    assert!(profile.private_tmp);
    assert_eq!(profile.read.len(), SYSTEM_READ_PATHS.len());
    assert!(c.sandbox_warnings().is_empty());
}

#[test]
fn a_profile_overrides_only_the_keys_it_sets() {
    let c = config(
        r#"
[sandbox.profiles.tight]
read = ["/usr", "data"]
write = ["/var/tmp/x"]
private_tmp = false
network = "none"
cpu_seconds = 5
memory_mb = 64
max_processes = 8
wall_clock_secs = 30
env = ["PATH"]

[servers.corp]
sandbox = "tight"
"#,
    );
    let (name, p) = c.sandbox_for_server("corp").unwrap();
    assert_eq!(name, "tight");
    assert_eq!(
        *p,
        SandboxProfile {
            read: vec![PathBuf::from("/usr"), PathBuf::from("/etc/airlock/data")],
            write: vec![PathBuf::from("/var/tmp/x")],
            private_tmp: false,
            cpu_seconds: Some(5),
            memory_bytes: Some(64 * 1024 * 1024),
            max_processes: Some(8),
            wall_clock: Some(Duration::from_secs(30)),
            env: vec!["PATH".into()],
            off: Default::default(),
        }
    );
    let c = config("[sandbox.profiles.loose]\ncpu_seconds = 9\n");
    let p = &c.sandbox.profiles["loose"];
    assert_eq!(p.cpu_seconds, Some(9));
    assert_eq!(p.read, SandboxProfile::default().read);
    // The built-in default is always there.
    assert!(c.sandbox.profiles.contains_key("default"));
}

#[test]
fn off_is_reported_as_a_warning() {
    let c = config(
        r#"
[sandbox.profiles.nonet]
off = ["network", "seccomp"]

[servers.a]
sandbox = "off"

[servers.b]
sandbox = "nonet"
"#,
    );
    assert_eq!(c.sandbox_for_server("a"), None);
    assert_eq!(
        c.sandbox_warnings(),
        [
            "server \"a\" runs with sandbox = \"off\": no namespaces, Landlock, seccomp or \
             resource caps",
            "sandbox profile \"nonet\" turns off network, seccomp (used by b)",
        ]
    );
}

#[test]
fn bad_values_point_at_the_value() {
    assert_eq!(
        error("[servers.a]\nsandbox = \"nope\"\n"),
        "airlock.toml:4:11: sandbox: unknown profile \"nope\" (no [sandbox.profiles.nope] \
         section; use \"off\" for no sandbox)"
    );
    assert_eq!(
        error("[sandbox.profiles.x]\noff = [\"landlock\", \"selinux\"]\n"),
        "airlock.toml:4:20: off: unknown sandbox layer \"selinux\": expected one of \
         namespaces, network, landlock, seccomp, rlimits"
    );
    assert_eq!(
        error("[sandbox.profiles.x]\nmemory_mb = 1\n"),
        "airlock.toml:4:13: memory_mb = 1 is too small: at least 16"
    );
    assert_eq!(
        error("[sandbox.profiles.x]\nnetwork = \"example.com\"\n"),
        "airlock.toml:4:11: network = \"example.com\": only \"none\" is supported (an egress \
         allowlist is not implemented yet; `off = [\"network\"]` gives the host's network)"
    );
    assert_eq!(
        error("[sandbox.profiles.off]\n"),
        "airlock.toml:3:19: a sandbox profile cannot be named \"off\": that value turns the \
         sandbox off"
    );
    assert_eq!(
        error("[sandbox.profiles.x]\nshell = true\n"),
        "airlock.toml:4:1: unknown field `shell`, expected one of `read`, `write`, \
         `private_tmp`, `network`, `cpu_seconds`, `memory_mb`, `max_processes`, \
         `wall_clock_secs`, `env`, `off`"
    );
}
