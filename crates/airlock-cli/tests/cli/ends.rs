//! What an upstream keeps when its session ends: no process (sandboxed or not, after an
//! orderly end or a `kill -9` of the gateway), and none of Airlock's own credentials in its
//! environment. Part of the `cli` test binary (its harness is `super::`).

use std::collections::HashMap;

use serde_json::json;

use super::{eventually, running, wait_exit, Env, POLICY};

/// SIGKILLs what a test started if it is still there when the test ends (pass or fail), so
/// the suite leaves nothing running.
struct Reap(Vec<i32>);

impl Drop for Reap {
    fn drop(&mut self) {
        for pid in &self.0 {
            if *pid > 1 && running(*pid) {
                let _ = std::process::Command::new("kill")
                    .args(["-9", &pid.to_string()])
                    .status();
            }
        }
    }
}

/// Every process under `root` on the host, by its parent pid in `/proc`.
fn descendants(root: i32) -> Vec<i32> {
    let mut parent_of: HashMap<i32, i32> = HashMap::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // `pid (comm) state ppid …`; comm may hold spaces and parentheses.
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        if let Some(ppid) = after.split_whitespace().nth(1).and_then(|p| p.parse().ok()) {
            parent_of.insert(pid, ppid);
        }
    }
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let p = found[i];
        found.extend(
            parent_of
                .iter()
                .filter(|(_, pp)| **pp == p)
                .map(|(c, _)| *c),
        );
        i += 1;
    }
    found.remove(0);
    found
}

fn unsandboxed_forking() -> Env {
    let mut env = Env::new(POLICY).unsandboxed();
    env.recorder_env = vec![("RECORDER_FORK", "1")];
    env
}

#[test]
fn the_end_of_a_session_ends_an_unsandboxed_upstream_tree() {
    // Issue 15, item 9: the forked child ignores SIGTERM and holds the server's stdout.
    let env = unsandboxed_forking();
    let mut s = env.start();
    let pids = env.upstream_pids();
    let _reap = Reap(descendants(s.child.id() as i32));
    assert_eq!(pids.len(), 2);
    assert!(s.tool(1, "echo", json!({})).get("result").is_some());
    assert!(s.finish().success());
    eventually("the upstream tree outlived its session", || {
        !pids.iter().any(|p| running(*p))
    });
}

#[test]
fn a_killed_gateway_leaves_nothing_of_an_unsandboxed_upstream() {
    let env = unsandboxed_forking();
    let mut s = env.start();
    let pids = env.upstream_pids();
    let _reap = Reap(descendants(s.child.id() as i32));
    s.child.kill().unwrap(); // SIGKILL: no clean-up code runs
    wait_exit(&mut s.child);
    eventually("the upstream tree outlived a SIGKILLed gateway", || {
        !pids.iter().any(|p| running(*p))
    });
}

#[test]
fn a_killed_gateway_leaves_nothing_of_a_sandboxed_upstream() {
    let mut env = Env::new(POLICY);
    env.recorder_env = vec![("RECORDER_FORK", "1")];
    let mut s = env.start();
    // Its pids are the sandbox's own; on the host, the tree is everything under airlock.
    let inside = env.upstream_pids();
    assert_eq!(inside.len(), 2);
    let tree = descendants(s.child.id() as i32);
    let _reap = Reap(tree.clone());
    assert!(tree.len() >= 2, "{tree:?}");
    s.child.kill().unwrap();
    wait_exit(&mut s.child);
    eventually("the sandboxed tree outlived a SIGKILLed gateway", || {
        !tree.iter().any(|p| running(*p))
    });
}

#[test]
fn an_unsandboxed_upstream_gets_no_airlock_credentials() {
    // Issue 15, item 4: the human's token in `airlock run`'s environment.
    let mut env = Env::new(POLICY).unsandboxed();
    env.recorder_env = vec![
        ("AIRLOCK_TOKEN", "alt_the_humans_token"),
        ("UNLISTED_SECRET", "s3cret"),
        ("LANG", "C.UTF-8"),
    ];
    let mut s = env.start();
    assert!(s.tool(1, "echo", json!({})).get("result").is_some());
    assert!(s.finish().success());
    let text = std::fs::read_to_string(env.dir.path().join("out/recorder.log.env")).unwrap();
    let seen: HashMap<String, String> = serde_json::from_str(&text).unwrap();
    let names: Vec<&str> = seen.keys().map(String::as_str).collect();
    assert!(
        !names.iter().any(|n| n.starts_with("AIRLOCK_")),
        "{names:?}"
    );
    assert!(!seen.contains_key("UNLISTED_SECRET"), "{names:?}");
    // What the config lists, and the basics.
    assert!(seen.contains_key("RECORDER_LOG"), "{names:?}");
    assert_eq!(seen.get("LANG").map(String::as_str), Some("C.UTF-8"));
    assert!(seen.contains_key("PATH"), "{names:?}");
}

#[test]
fn the_upstream_gets_its_credentials_and_the_agent_never_sees_them() {
    for sandboxed in [true, false] {
        let mut env = Env::with_config(
            POLICY,
            "",
            "[secrets]\nfile = \"secrets.toml\"\n\
             [servers.rec.credentials]\n\
             env = { REC_API_KEY = \"${secret:rec_key}\", REC_OTHER = \"x-${env:REC_FROM_ENV}\" }\n",
        );
        if !sandboxed {
            env = env.unsandboxed();
        }
        let secrets = env.dir.path().join("secrets.toml");
        std::fs::write(&secrets, "rec_key = \"rec-key-0123456789\"\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o600)).unwrap();
        env.recorder_env = vec![("REC_FROM_ENV", "from-env-123456")];
        let mut s = env.start();
        // The recorder echoes its arguments: whatever carries a credential comes back redacted.
        let reply = s.tool(
            1,
            "echo",
            json!({"text": "rec-key-0123456789 from-env-123456"}),
        );
        let text = reply.to_string();
        assert!(!text.contains("rec-key-0123456789"), "{text}");
        assert!(!text.contains("from-env-123456"), "{text}");
        assert!(
            text.contains("[REDACTED:rec_key] [REDACTED:env:REC_FROM_ENV]"),
            "{text}"
        );
        assert!(s.finish().success());
        let text = std::fs::read_to_string(env.dir.path().join("out/recorder.log.env")).unwrap();
        let seen: HashMap<String, String> = serde_json::from_str(&text).unwrap();
        assert_eq!(
            seen.get("REC_API_KEY").map(String::as_str),
            Some("rec-key-0123456789"),
            "sandboxed: {sandboxed}"
        );
        assert_eq!(
            seen.get("REC_OTHER").map(String::as_str),
            Some("x-from-env-123456")
        );
        // The variable a credential was read from is not passed on itself.
        assert!(!seen.contains_key("REC_FROM_ENV"));
    }
}
