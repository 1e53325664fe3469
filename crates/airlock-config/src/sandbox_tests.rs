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
read = ["/opt/tool", "data"]
system_paths = false
write = ["/var/tmp/x"]
unix_sockets = ["/run/pg.sock", "app.sock"]
private_tmp = false
network = "none"
egress = ["api.example.com", "*.github.com:*", "127.0.0.1:8080"]
cpu_seconds = 5
cpu_percent = 50
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
            read: vec![
                PathBuf::from("/opt/tool"),
                PathBuf::from("/etc/airlock/data")
            ],
            write: vec![PathBuf::from("/var/tmp/x")],
            unix_sockets: vec![
                PathBuf::from("/run/pg.sock"),
                PathBuf::from("/etc/airlock/app.sock")
            ],
            private_tmp: false,
            egress: vec![
                EgressRule::parse("api.example.com").unwrap(),
                EgressRule::parse("*.github.com:*").unwrap(),
                EgressRule::parse("127.0.0.1:8080").unwrap(),
            ],
            cpu_seconds: Some(5),
            cpu_percent: Some(50),
            memory_bytes: Some(64 * 1024 * 1024),
            max_processes: Some(8),
            wall_clock: Some(Duration::from_secs(30)),
            env: vec!["PATH".into()],
            off: Default::default(),
        }
    );
    let c = config("[sandbox.profiles.loose]\ncpu_seconds = 9\nread = [\"/opt/x\"]\n");
    let p = &c.sandbox.profiles["loose"];
    assert_eq!(p.cpu_seconds, Some(9));
    // `read` adds to the system paths.
    let mut read = SandboxProfile::default().read;
    read.push(PathBuf::from("/opt/x"));
    assert_eq!(p.read, read);
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
        "airlock.toml:4:11: network = \"example.com\": only \"none\" is supported (list hosts \
         in `egress` to reach them through Airlock's proxy; `off = [\"network\"]` gives the \
         host's network)"
    );
    assert_eq!(
        error("[sandbox.profiles.x]\negress = [\"ok.example\", \"*\"]\n"),
        "airlock.toml:4:25: egress: \"*\": expected a host name, an IP address, or *.domain, \
         with an optional :port or :*"
    );
    assert_eq!(
        error("[sandbox.profiles.x]\negress = [\"a.example\"]\noff = [\"network\"]\n"),
        "airlock.toml:4:11: egress needs the network and namespaces layers (the proxy listens \
         inside the sandbox's own network namespace); remove them from `off`"
    );
    assert_eq!(
        error("[sandbox.profiles.x]\negress = [\"a.example:0\"]\n"),
        "airlock.toml:4:11: egress: \"a.example:0\": \"0\" is not a port (1-65535 or *)"
    );
    assert_eq!(
        error("[sandbox.profiles.off]\n"),
        "airlock.toml:3:19: a sandbox profile cannot be named \"off\": that value turns the \
         sandbox off"
    );
    assert_eq!(
        error("[sandbox.profiles.x]\nshell = true\n"),
        "airlock.toml:4:1: unknown field `shell`, expected one of `read`, `system_paths`, \
         `write`, `unix_sockets`, `private_tmp`, `network`, `egress`, `cpu_seconds`, `cpu_percent`, \
         `memory_mb`, `max_processes`, `wall_clock_secs`, `env`, `off`"
    );
}

#[test]
fn egress_patterns_match_hosts_and_ports() {
    let rule = |p: &str| EgressRule::parse(p).unwrap();
    let api = rule("API.example.com");
    assert!(api.matches("api.example.com", 443));
    assert!(api.matches("Api.Example.Com.", 80));
    assert!(!api.matches("api.example.com", 22));
    assert!(!api.matches("evil-api.example.com", 443));
    let sub = rule("*.github.com:*");
    assert!(sub.matches("raw.github.com", 1));
    assert!(sub.matches("a.b.github.com", 443));
    assert!(!sub.matches("github.com", 443));
    assert!(!sub.matches("evilgithub.com", 443));
    let local = rule("127.0.0.1:8080");
    assert!(local.matches("127.0.0.1", 8080));
    assert!(!local.matches("127.0.0.1", 8081));
    let v6 = rule("[::1]:9");
    assert!(v6.matches("[::1]", 9) && v6.matches("::1", 9));
    for (p, shown) in [
        ("api.example.com", "api.example.com"),
        ("*.github.com:*", "*.github.com:*"),
        ("[::1]:9", "[::1]:9"),
    ] {
        assert_eq!(rule(p).to_string(), shown);
    }
    for bad in [
        "",
        "*",
        "*:443",
        "a..b",
        "a b",
        "host:http",
        "*.[::1]:1",
        "::1",
    ] {
        assert!(EgressRule::parse(bad).is_err(), "{bad} should be refused");
    }
}

#[test]
fn an_unsandboxed_server_lists_what_it_may_inherit() {
    let c = config("[servers.a]\nsandbox = \"off\"\nenv = [\"GITHUB_TOKEN\"]\n[servers.b]\n");
    assert_eq!(c.servers["a"].env, ["GITHUB_TOKEN"]);
    assert!(c.servers["b"].env.is_empty());
    // A sandboxed server's environment is its profile's: a second list would be ignored.
    assert_eq!(
        error("[servers.a]\nenv = [\"X\"]\n"),
        "airlock.toml:4:8: env: only a server with sandbox = \"off\" has its own `env`; a \
         sandboxed server gets its profile's `env`"
    );
}

#[test]
fn no_env_list_passes_airlocks_own_variables() {
    for extra in [
        "[servers.a]\nsandbox = \"off\"\nenv = [\"AIRLOCK_TOKEN\"]\n",
        "[servers.a]\nsandbox = \"off\"\nenv = [\"airlock_token\"]\n",
        "[sandbox.profiles.p]\nenv = [\"PATH\", \"AIRLOCK_WEBHOOK_SECRET\"]\n",
    ] {
        let e = error(extra);
        assert!(e.contains("is Airlock's own"), "{extra}: {e}");
    }
}
