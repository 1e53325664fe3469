//! End-to-end tests of the real `airlock` binary: raw frames on its stdin, a recording upstream
//! (tests/fixtures/recorder.py) or the bundled demo server behind it, and the audit trail it
//! leaves. One test binary on purpose: each links separately.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const AIRLOCK: &str = env!("CARGO_BIN_EXE_airlock");
const WAIT: Duration = Duration::from_secs(20);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn recorder() -> String {
    repo_root()
        .join("tests/fixtures/recorder.py")
        .display()
        .to_string()
}

const POLICY: &str = r#"
@id("allow-echo")
permit (principal == Agent::"bot", action == Action::"call_tool", resource == Tool::"rec/echo");

@id("allow-die")
permit (principal == Agent::"bot", action == Action::"call_tool", resource == Tool::"rec/die");

@id("allow-slow")
permit (principal == Agent::"bot", action == Action::"call_tool", resource == Tool::"rec/slow");

@id("write-internal-only")
@reason("writes go to the internal channel only")
permit (principal == Agent::"bot", action == Action::"call_tool", resource == Tool::"rec/write")
when { context.args has channel && context.args.channel == "internal" };
"#;

/// A temp dir with a config, a policy and (later) an audit database.
struct Env {
    dir: tempfile::TempDir,
    /// Extra environment for `airlock run` (RECORDER_FORK, RECORDER_SLOW, …).
    recorder_env: Vec<(&'static str, &'static str)>,
}

impl Env {
    fn new(policy: &str) -> Env {
        Env::with_gateway(policy, "")
    }

    /// With extra lines in the `[gateway]` table.
    fn with_gateway(policy: &str, gateway: &str) -> Env {
        Env::with_config(policy, gateway, "")
    }

    /// With extra `[gateway]` lines and extra tables at the end of the config.
    fn with_config(policy: &str, gateway: &str, extra: &str) -> Env {
        let dir = tempfile::tempdir().unwrap();
        // The recorder runs in Airlock's default sandbox (as `nobody` when the tests run as
        // root): it may write only `out/`, and gets only the variables it reads.
        use std::os::unix::fs::PermissionsExt;
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o777)).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
        std::fs::write(dir.path().join("policy.cedar"), policy).unwrap();
        std::fs::write(
            dir.path().join("airlock.toml"),
            format!(
                r#"
[gateway]
max_frame_bytes = 65536
{gateway}

[policy]
files = ["policy.cedar"]

[audit]
path = "audit.db"

[humans.alice]
token_sha256 = "c892f40db4a28bf32432a0ed53daab3b62e9dc400401e54c509039cc6a94631a"

[tasks.t1]
description = "tests"

[agents.bot]
on_behalf_of = "alice"
task = "t1"

[servers.rec]

[sandbox.profiles.default]
write = ["out"]
env = ["PATH", "RECORDER_LOG", "RECORDER_PIDS", "RECORDER_FORK", "RECORDER_SLOW"]

{extra}
"#
            ),
        )
        .unwrap();
        Env {
            dir,
            recorder_env: Vec::new(),
        }
    }

    /// The (first) call record for `target`, with its result joined in.
    fn call_record(&self, target: &str) -> Value {
        self.audit()
            .into_iter()
            .find(|r| r["kind"] == "call" && r["target"] == target)
            .unwrap_or_else(|| panic!("no call record for {target}"))
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("airlock.toml")
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("out/recorder.log")
    }

    /// Runs the recorder with no sandbox (`sandbox = "off"`), for a test that watches its
    /// host pids (a sandboxed one sees only its own PID namespace).
    fn unsandboxed(self) -> Env {
        let config = self.config();
        let text = std::fs::read_to_string(&config).unwrap();
        let text = text.replace(
            "[servers.rec]\n",
            "[servers.rec]\nsandbox = \"off\"\n\
             env = [\"RECORDER_LOG\", \"RECORDER_PIDS\", \"RECORDER_FORK\", \"RECORDER_SLOW\"]\n",
        );
        std::fs::write(&config, text).unwrap();
        self
    }

    fn received(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }

    fn airlock(&self, args: &[&str]) -> Output {
        Command::new(AIRLOCK)
            .args(args)
            .env("AIRLOCK_LOG", "warn")
            .output()
            .unwrap()
    }

    fn audit(&self) -> Vec<Value> {
        let config = self.config();
        let out = self.airlock(&[
            "audit",
            "query",
            "--config",
            config.to_str().unwrap(),
            "--json",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn start(&self) -> Session {
        Session::new(self.spawn_run())
    }

    fn spawn_run(&self) -> Child {
        Command::new(AIRLOCK)
            .args(["run", "--config"])
            .arg(self.config())
            .args(["--agent", "bot", "--session", "test", "--", "python3"])
            .arg(recorder())
            .env("RECORDER_LOG", self.log())
            .env("RECORDER_PIDS", self.dir.path().join("out/pids"))
            .envs(self.recorder_env.iter().copied())
            .env("AIRLOCK_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// `airlock <cmd> --config … --as alice` with alice's token.
    fn as_alice(&self, args: &[&str]) -> Output {
        let config = self.config();
        Command::new(AIRLOCK)
            .args(args)
            .args(["--config", config.to_str().unwrap(), "--as", "alice"])
            .env("AIRLOCK_TOKEN", "alt_test_token_for_kill_tests")
            .env("AIRLOCK_LOG", "warn")
            .output()
            .unwrap()
    }

    /// The upstream's pids (the server and the child it forked).
    fn upstream_pids(&self) -> Vec<i32> {
        let start = Instant::now();
        loop {
            if let Ok(text) = std::fs::read_to_string(self.dir.path().join("out/pids")) {
                let pids: Vec<i32> = text
                    .split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect();
                if !pids.is_empty() {
                    return pids;
                }
            }
            assert!(start.elapsed() < WAIT, "the upstream never wrote its pids");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// The agent's end of a running `airlock run`.
struct Session {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl Session {
    fn new(mut child: Child) -> Session {
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut s = Session {
            child,
            stdin,
            lines: rx,
        };
        let init = s.call(json!({"jsonrpc":"2.0","id":"init","method":"initialize",
            "params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}));
        assert!(init.get("result").is_some(), "{init}");
        s.send_raw(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
        s
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(bytes).unwrap();
        stdin.write_all(b"\n").unwrap();
        stdin.flush().unwrap();
    }

    fn next(&mut self) -> Value {
        let line = self
            .lines
            .recv_timeout(WAIT)
            .expect("no frame from airlock");
        serde_json::from_str(&line).unwrap()
    }

    fn call(&mut self, frame: Value) -> Value {
        self.send_raw(frame.to_string().as_bytes());
        self.next()
    }

    fn tool(&mut self, id: i64, name: &str, args: Value) -> Value {
        self.call(json!({"jsonrpc":"2.0","id":id,"method":"tools/call",
            "params":{"name":name,"arguments":args}}))
    }

    /// Proves the gateway is still up and forwarding.
    fn ping(&mut self, id: i64) {
        let reply = self.call(json!({"jsonrpc":"2.0","id":id,"method":"ping"}));
        assert_eq!(reply["id"], json!(id), "{reply}");
        assert!(reply.get("result").is_some(), "{reply}");
    }

    fn finish(mut self) -> std::process::ExitStatus {
        self.stdin.take();
        wait_exit(&mut self.child)
    }
}

/// Waits (up to [`WAIT`]) for `cond`; fails with `what` if it never holds.
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < WAIT, "{what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(start.elapsed() < WAIT, "airlock did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn error_code(reply: &Value) -> i64 {
    reply["error"]["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("not an error: {reply}"))
}

#[test]
fn allowed_call_is_forwarded_and_answered_exactly() {
    let env = Env::new(POLICY);
    let mut s = env.start();
    let reply = s.tool(1, "echo", json!({"message": "hi"}));
    assert_eq!(
        reply["result"]["content"][0]["text"],
        json!("{\"message\": \"hi\"}")
    );
    assert!(env.received().contains(r#""name":"echo""#));
    assert!(s.finish().success());
}

#[test]
fn denied_call_gets_a_clear_error_and_the_session_goes_on() {
    let env = Env::new(POLICY);
    let mut s = env.start();
    let reply = s.tool(1, "write", json!({"channel": "public", "text": "x"}));
    assert_eq!(error_code(&reply), -31001);
    let message = reply["error"]["message"].as_str().unwrap();
    assert!(message.contains("denied by Airlock"), "{message}");
    assert!(
        !env.received().contains("public"),
        "a denied call reached the server"
    );
    // A call nothing permits names the default deny.
    let reply = s.tool(2, "secret", json!({}));
    assert_eq!(error_code(&reply), -31001);
    assert!(reply["error"]["message"]
        .as_str()
        .unwrap()
        .contains("no policy permits"));
    let reply = s.tool(3, "write", json!({"channel": "internal"}));
    assert!(reply.get("result").is_some(), "{reply}");
    assert!(s.finish().success());

    let records = env.audit();
    let calls: Vec<&Value> = records.iter().filter(|r| r["kind"] == "call").collect();
    assert_eq!(calls.len(), 3);
    assert_eq!(calls[0]["decision"], "deny");
    assert_eq!(calls[0]["target"], "write");
    assert_eq!(calls[0]["agent"], "bot");
    assert_eq!(calls[0]["on_behalf_of"], "alice");
    assert_eq!(calls[0]["task"], "t1");
    assert_eq!(calls[0]["session"], "test");
    assert_eq!(calls[2]["decision"], "allow");
    assert_eq!(calls[2]["reasons"], json!(["write-internal-only"]));
    assert_eq!(calls[2]["result_status"], "ok");
    assert!(records.iter().any(|r| r["kind"] == "config_load"));
}

#[test]
fn tools_list_shows_only_what_the_agent_could_call() {
    let env = Env::new(POLICY);
    let mut s = env.start();
    let reply = s.call(json!({"jsonrpc":"2.0","id":5,"method":"tools/list"}));
    let names: Vec<&str> = reply["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["echo", "write", "die", "slow"]);
    s.finish();
}

#[test]
fn malformed_frames_get_json_rpc_errors_and_are_never_forwarded() {
    let env = Env::new(POLICY);
    let mut s = env.start();
    let cases: Vec<(Vec<u8>, i64)> = vec![
        (b"{not json".to_vec(), -32700),
        (b"[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}]".to_vec(), -32600),
        (b"\xff\xfe{}".to_vec(), -32700),
        (
            br#"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"echo","name":"secret"}}"#.to_vec(),
            -32700,
        ),
        (
            br#"{"jsonrpc":"2.0","id":10,"method":"tools/call","method":"ping","params":{"name":"secret"}}"#.to_vec(),
            -32700,
        ),
        (br#"{"jsonrpc":"1.0","id":11,"method":"ping"}"#.to_vec(), -32600),
        (br#"{"jsonrpc":"2.0","id":12,"method":"ping","result":{}}"#.to_vec(), -32600),
        (
            br#"{"jsonrpc":"2.0","id":13,"method":"tools/call","params":{"name":"echo","arguments":{"n":9007199254740993}}}"#.to_vec(),
            -32700,
        ),
    ];
    for (i, (bytes, code)) in cases.iter().enumerate() {
        s.send_raw(bytes);
        let reply = s.next();
        assert_eq!(error_code(&reply), *code, "case {i}: {reply}");
        s.ping(1000 + i64::try_from(i).unwrap());
    }
    // An over-long frame (the config sets 64 KiB).
    let big = format!(
        r#"{{"jsonrpc":"2.0","id":20,"method":"tools/call","params":{{"name":"echo","arguments":{{"m":"{}"}}}}}}"#,
        "x".repeat(100_000)
    );
    s.send_raw(big.as_bytes());
    let reply = s.next();
    assert_eq!(error_code(&reply), -32600);
    assert!(reply["error"]["message"]
        .as_str()
        .unwrap()
        .contains("exceeds the limit"));
    s.ping(2000);
    // An unknown method and a case variant of a known one are refused.
    let reply =
        s.call(json!({"jsonrpc":"2.0","id":21,"method":"Tools/Call","params":{"name":"secret"}}));
    assert_eq!(error_code(&reply), -31002);
    assert!(s.finish().success());

    let received = env.received();
    assert!(!received.contains("secret"), "forwarded: {received}");
    assert!(
        !received.contains("xxxx"),
        "an over-long frame was forwarded"
    );
    assert!(!received.contains("9007199254740993"));
    assert!(!received.contains("\"1.0\""));
}

#[test]
fn upstream_death_fails_pending_calls_and_exits_non_zero() {
    let env = Env::new(POLICY);
    let mut s = env.start();
    let reply = s.tool(1, "die", json!({}));
    assert_eq!(error_code(&reply), -31003, "{reply}");
    assert!(reply["error"]["message"]
        .as_str()
        .unwrap()
        .contains("exited"));
    let status = wait_exit(&mut s.child);
    assert_eq!(status.code(), Some(3));
    let call = env.call_record("die");
    assert_eq!(call["result_status"], "upstream_died");
}

#[test]
fn kill_9_loses_no_decision_that_was_acted_on() {
    let env = Env::new(POLICY);
    let mut s = env.start();
    // "slow" holds the call at the server, so the gateway is killed with the call in flight.
    s.send_raw(
        json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"slow","arguments":{"marker":"m-4711"}}})
            .to_string()
            .as_bytes(),
    );
    eventually("the call never reached the server", || {
        env.received().contains("m-4711")
    });
    s.child.kill().unwrap(); // SIGKILL
    s.child.wait().unwrap();
    let call = env.call_record("slow");
    assert_eq!(call["decision"], "allow");
    let config = env.config();
    let out = env.airlock(&["audit", "verify", "--config", config.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn check_reports_errors_with_file_line_col_and_exit_2() {
    let env = Env::new(POLICY);
    let config = env.config();
    let ok = env.airlock(&["check", "--config", config.to_str().unwrap()]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let text = String::from_utf8_lossy(&ok.stdout);
    assert!(
        text.contains("allow-echo") && text.contains("bot"),
        "{text}"
    );

    // An unknown key in the config.
    let bad = env.dir.path().join("bad.toml");
    std::fs::write(&bad, "[policy]\nfiles = [\"policy.cedar\"]\nfilez = 1\n").unwrap();
    let out = env.airlock(&["check", "--config", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml:3:1"), "{err}");

    // A policy that does not validate against the schema (a typo in an attribute).
    std::fs::write(
        env.dir.path().join("policy.cedar"),
        "permit (principal, action == Action::\"call_tool\", resource)\nwhen { context.argz has x };\n",
    )
    .unwrap();
    let out = env.airlock(&["check", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("policy.cedar:2:"), "{err}");

    // `run` refuses to start on the same error.
    let out = Command::new(AIRLOCK)
        .args([
            "run",
            "--config",
            config.to_str().unwrap(),
            "--agent",
            "bot",
            "--",
            "true",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn audit_verify_detects_edits_and_truncation() {
    let env = Env::new(POLICY);
    let mut s = env.start();
    for i in 0..4 {
        s.tool(i, "echo", json!({"i": i}));
    }
    assert!(s.finish().success());
    let config = env.config();
    let verify = || env.airlock(&["audit", "verify", "--config", config.to_str().unwrap()]);
    let out = verify();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("records intact"));

    let db = rusqlite::Connection::open(env.dir.path().join("audit.db")).unwrap();
    let sql = |q: &str| db.execute(q, []).unwrap();
    // The store's append-only triggers are a speed bump, not a defence: an attacker with the
    // file drops them first, and the chain must catch what follows.
    let triggers: Vec<String> = db
        .prepare("select name from sqlite_master where type = 'trigger'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for t in triggers {
        sql(&format!("drop trigger {t}"));
    }
    // Truncate the tail: the anchor written at exit names a record that is gone.
    sql("delete from records where seq = (select max(seq) from records)");
    let out = verify();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("truncat"));
    // Edit a decision in the middle.
    sql("update records set decision = 'deny' where seq = 2");
    let out = verify();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("first bad record: 2"), "{text}");
}

#[test]
fn a_call_the_upstream_sits_on_times_out_and_is_cancelled_upstream() {
    let env = Env::with_gateway(POLICY, "call_timeout_secs = 1");
    let mut s = env.start();
    let reply = s.tool(1, "slow", json!({}));
    assert_eq!(error_code(&reply), -31006, "{reply}");
    eventually("no cancellation reached the upstream", || {
        env.received().contains("notifications/cancelled")
    });
    assert!(
        env.received().contains(r#""requestId": 1"#) || env.received().contains(r#""requestId":1"#)
    );
    s.ping(2);
    s.finish();
    let call = env.call_record("slow");
    assert_eq!(call["result_status"], "timeout");
}

#[test]
fn sighup_reloads_policies_and_a_bad_reload_keeps_the_old_set() {
    let env = Env::new(POLICY);
    let mut s = env.start();
    assert_eq!(error_code(&s.tool(1, "secret", json!({}))), -31001);
    let hup = |pid: u32| {
        let ok = Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    };
    // A broken policy file: the reload fails and the old set stays in force.
    std::fs::write(
        env.dir.path().join("policy.cedar"),
        "permit (principal, action, resource) when {",
    )
    .unwrap();
    hup(s.child.id());
    eventually("no failed reload recorded", || {
        env.audit()
            .iter()
            .any(|r| r["kind"] == "config_reload_failed")
    });
    assert!(s.tool(2, "echo", json!({})).get("result").is_some());
    assert_eq!(error_code(&s.tool(3, "secret", json!({}))), -31001);
    // A good one: the new set judges the next call.
    let widened = format!(
        "{POLICY}\n@id(\"allow-secret\")\npermit (principal == Agent::\"bot\", action == Action::\"call_tool\", resource == Tool::\"rec/secret\");\n"
    );
    std::fs::write(env.dir.path().join("policy.cedar"), widened).unwrap();
    hup(s.child.id());
    eventually("no reload recorded", || {
        env.audit().iter().any(|r| r["kind"] == "config_reload")
    });
    let reply = s.tool(4, "secret", json!({}));
    assert!(reply.get("result").is_some(), "{reply}");
    assert!(s.finish().success());
    let records = env.audit();
    let digests: Vec<&Value> = records
        .iter()
        .filter(|r| r["kind"] == "call")
        .map(|r| &r["policy_digest"])
        .collect();
    assert_ne!(
        digests.first(),
        digests.last(),
        "the last call was judged by the new set"
    );
}

/// A process that is gone or a zombie no longer runs anything.
fn running(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .split_whitespace()
            .nth(2)
            .is_none_or(|state| state != "Z"),
        Err(_) => false,
    }
}

#[test]
fn kill_cancels_in_flight_calls_ends_the_process_tree_and_holds_until_resumed() {
    // The kill of an unsandboxed tree (its process group); tests/sandbox.rs has the
    // sandboxed one (the PID namespace), whose pids this test could not see.
    let mut env = Env::new(POLICY).unsandboxed();
    env.recorder_env = vec![("RECORDER_FORK", "1"), ("RECORDER_SLOW", "30")];
    let mut s = env.start();
    let pids = env.upstream_pids();
    assert!(pids.iter().all(|p| running(*p)));
    assert_eq!(pids.len(), 2);
    // A call the server sits on.
    s.send_raw(
        json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"slow","arguments":{}}})
            .to_string()
            .as_bytes(),
    );
    eventually("the call never reached the server", || {
        env.received().contains(r#""name":"slow""#)
    });
    // Without the human's credential nothing happens.
    let config = env.config();
    let forged = Command::new(AIRLOCK)
        .args([
            "kill",
            "--agent",
            "bot",
            "--config",
            config.to_str().unwrap(),
            "--as",
            "alice",
        ])
        .env("AIRLOCK_TOKEN", "alt_wrong")
        .output()
        .unwrap();
    assert_eq!(forged.status.code(), Some(2));
    // An unknown agent is an error, not a silent success.
    let unknown = env.as_alice(&["kill", "--agent", "nobody-here"]);
    assert_eq!(unknown.status.code(), Some(2));

    let out = env.as_alice(&["kill", "--agent", "bot", "--reason", "runaway"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The in-flight call is answered with the kill, and cancelled upstream.
    let reply = s.next();
    assert_eq!(reply["id"], json!(1), "{reply}");
    assert_eq!(error_code(&reply), -31007, "{reply}");
    assert!(reply["error"]["message"]
        .as_str()
        .unwrap()
        .contains("runaway"));
    // (The cancellation goes upstream just before SIGKILL, so whether the server read it is a
    // race; the timeout test proves cancellations reach a live server.)
    // The whole tree is gone, the SIGTERM-ignoring child too.
    eventually("the upstream tree survived the kill", || {
        !(pids.iter().any(|p| running(*p)))
    });
    // New calls are refused; the gateway stays up to say so.
    assert_eq!(error_code(&s.tool(2, "echo", json!({}))), -31007);
    s.stdin.take();
    assert_eq!(wait_exit(&mut s.child).code(), Some(4));

    // The kill survives: a new session of the agent refuses to start.
    let mut again = env.spawn_run();
    drop(again.stdin.take());
    assert_eq!(wait_exit(&mut again).code(), Some(4));
    // Until a human resumes it.
    let out = env.as_alice(&["resume", "--agent", "bot"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut s = env.start();
    assert!(s.tool(3, "echo", json!({})).get("result").is_some());
    s.finish();

    let records = env.audit();
    assert!(records.iter().any(|r| r["kind"] == "kill"));
    assert!(records.iter().any(|r| r["kind"] == "resume"));
    let slow = records
        .iter()
        .find(|r| r["kind"] == "call" && r["target"] == "slow")
        .unwrap();
    assert_eq!(slow["result_status"], "killed");
}

#[test]
fn a_killed_tool_is_hidden_and_refused_for_the_agent() {
    let env = Env::new(POLICY);
    let mut s = env.start();
    let out = env.as_alice(&["kill", "--tool", "rec/echo", "--reason", "broken"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let start = Instant::now();
    loop {
        let reply = s.tool(10, "echo", json!({}));
        if reply.get("error").is_some() {
            assert_eq!(error_code(&reply), -31007);
            break;
        }
        assert!(start.elapsed() < WAIT, "the tool kill never arrived");
        std::thread::sleep(Duration::from_millis(20));
    }
    let list = s.call(json!({"jsonrpc":"2.0","id":11,"method":"tools/list"}));
    let names: Vec<&str> = list["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(!names.contains(&"echo"), "{names:?}");
    assert!(names.contains(&"write"));
    assert!(s
        .tool(12, "write", json!({"channel": "internal"}))
        .get("result")
        .is_some());
    s.finish();
}

#[test]
fn a_breaker_trips_at_exactly_its_budget_and_pauses_the_agent() {
    let env = Env::with_config(
        POLICY,
        "",
        "[breakers.writes]\ntools = [\"rec/write\"]\nwhen = { channel = \"internal\" }\nmax_calls = 3\nwindow_secs = 600\n",
    );
    let mut s = env.start();
    // Calls outside the class do not count.
    for i in 0..5 {
        assert!(s.tool(i, "echo", json!({})).get("result").is_some());
    }
    for i in 10..13 {
        let reply = s.tool(i, "write", json!({"channel": "internal"}));
        assert!(
            reply.get("result").is_some(),
            "call {i} within the budget: {reply}"
        );
    }
    let reply = s.tool(13, "write", json!({"channel": "internal"}));
    assert_eq!(error_code(&reply), -31007, "{reply}");
    let message = reply["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("writes") && message.contains("3 calls per 600 s"),
        "{message}"
    );
    assert!(message.contains("resets at"), "{message}");
    assert!(
        !env.received().contains(r#""id":13"#),
        "the call that crossed the budget was forwarded"
    );
    // The agent is paused: everything is refused now, and the pause is a kill that holds.
    let reply = s.tool(14, "echo", json!({}));
    assert_eq!(error_code(&reply), -31007, "{reply}");
    s.stdin.take();
    wait_exit(&mut s.child);
    let config = env.config();
    let status = env.airlock(&["status", "--config", config.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("breaker:writes"), "{text}");
    let records = env.audit();
    assert!(records.iter().any(|r| r["kind"] == "breaker"));
    // Counters survive a restart: after a human resumes, the budget starts afresh.
    let out = env.as_alice(&["resume", "--agent", "bot"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut s = env.start();
    assert!(s
        .tool(20, "write", json!({"channel": "internal"}))
        .get("result")
        .is_some());
    s.finish();
}

#[test]
fn items_read_from_the_result_pause_the_agent_once_they_cross_the_cap() {
    let policy = r#"
@id("allow-acl")
permit (principal == Agent::"bot", action == Action::"call_tool", resource == Tool::"rec/acl_set");
@id("allow-forum")
permit (principal == Agent::"bot", action == Action::"call_tool", resource == Tool::"rec/forum_list");
"#;
    let env = Env::with_config(
        policy,
        "",
        "[breakers.acl-recursive]\ntools = [\"rec/acl_set\"]\nwhen = { recursive = true }\n\
         max_calls = 100\nwindow_secs = 600\nmax_items = 10\n\
         items = \"result:/structuredContent/changed\"\n",
    );
    // `out/` is what the sandboxed server may write.
    let state = env.dir.path().join("out/company.json");
    let child = Command::new(AIRLOCK)
        .args(["run", "--config"])
        .arg(env.config())
        .args([
            "--agent",
            "bot",
            "--session",
            "acl",
            "--",
            AIRLOCK,
            "demo-server",
        ])
        .arg("--state")
        .arg(&state)
        .arg("--reset")
        .env("AIRLOCK_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut s = Session::new(child);
    s.call(
        json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{
        "protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"0"}}}),
    );
    s.send_raw(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
    let acl = |principal: &str| json!({"repo": "eng/platform", "principal": principal, "access": "admin", "recursive": true});
    // 7 repos: within the cap of 10.
    let first = s.tool(1, "acl_set", acl("group:all"));
    let changed = first["result"]["structuredContent"]["changed"]
        .as_array()
        .unwrap_or_else(|| panic!("{first}"))
        .len();
    assert_eq!(changed, 7, "{first}");
    assert!(s.tool(2, "forum_list", json!({})).get("result").is_some());
    // 7 more: the call has happened (its answer arrives), and the agent is paused.
    let second = s.tool(3, "acl_set", acl("user:bob"));
    assert!(second.get("result").is_some(), "{second}");
    let refused = s.tool(4, "acl_set", acl("user:carol"));
    assert_eq!(error_code(&refused), -31007, "{refused}");
    let next = s.tool(5, "forum_list", json!({}));
    assert_eq!(error_code(&next), -31007, "{next}");
    assert!(
        next["error"]["message"]
            .as_str()
            .unwrap()
            .contains("breaker:acl-recursive"),
        "{next}"
    );
    s.stdin.take();
    wait_exit(&mut s.child);
    // The third ACL change never reached the server.
    let saved = std::fs::read_to_string(&state).unwrap();
    assert!(
        !saved.contains("user:carol"),
        "a refused call changed state"
    );
    let config = env.config();
    let status = env.airlock(&["status", "--config", config.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("breaker:acl-recursive"), "{text}");
    assert!(text.contains("14/10"), "{text}");
    let records = env.audit();
    let trip = records
        .iter()
        .find(|r| r["kind"] == "breaker")
        .expect("a breaker record");
    assert_eq!(trip["target"], "acl_set", "{trip}");
}

#[test]
fn two_gateways_of_one_agent_share_a_budget_exactly() {
    let env = Env::with_config(
        POLICY,
        "",
        "[breakers.writes]\ntools = [\"rec/write\"]\nmax_calls = 15\nwindow_secs = 600\n\
         [breakers.defaults]\nenabled = false\n",
    );
    let mut sessions = [env.start(), env.start()];
    // Both gateways take calls at once, 15 each: together they may pass exactly 15.
    for s in &mut sessions {
        let burst: String = (100..115)
            .map(|id| {
                format!(
                    "{}\n",
                    json!({"jsonrpc":"2.0","id":id,"method":"tools/call",
                           "params":{"name":"write","arguments":{"channel":"internal"}}})
                )
            })
            .collect();
        s.send_raw(burst.trim_end().as_bytes());
    }
    let mut results = 0;
    for s in &mut sessions {
        // Every request gets one answer: a result, the trip, or the pause that followed it.
        for _ in 100..115 {
            let reply = s.next();
            if reply.get("result").is_some() {
                results += 1;
            } else {
                assert_eq!(error_code(&reply), -31007, "{reply}");
            }
        }
        s.stdin.take();
        wait_exit(&mut s.child);
    }
    assert!(results <= 15, "{results} results");
    let records = env.audit();
    let allowed = records
        .iter()
        .filter(|r| r["kind"] == "call" && r["target"] == "write" && r["decision"] == "allow")
        .count();
    assert_eq!(
        allowed, 15,
        "calls let through by the two gateways together"
    );
    assert!(records.iter().any(|r| r["kind"] == "breaker"));
}

// === approvals ===

const APPROVAL_POLICY: &str = r#"
@id("allow-write")
permit (principal == Agent::"bot", action == Action::"call_tool", resource == Tool::"rec/write");

@id("allow-echo")
permit (principal == Agent::"bot", action == Action::"call_tool", resource == Tool::"rec/echo");

@id("public-posts")
@approval("public posts need a human sign-off")
@approvers("comms")
forbid (principal, action == Action::"call_tool", resource == Tool::"rec/write")
when { context.args has channel && context.args.channel == "public" }
unless { context.approval.granted };

@id("quick")
@approval("echoes of `urgent` need a quick yes")
@expires("1s")
@four_eyes("false")
forbid (principal, action == Action::"call_tool", resource == Tool::"rec/echo")
when { context.args has message && context.args.message == "urgent" }
unless { context.approval.granted };
"#;

/// Bob and carol approve for comms; alice (the agent's human) is not in it.
const APPROVERS: &str = r#"
[humans.bob]
groups = ["comms"]
token_sha256 = "c892f40db4a28bf32432a0ed53daab3b62e9dc400401e54c509039cc6a94631a"

[humans.carol]
groups = ["comms"]
token_sha256 = "c892f40db4a28bf32432a0ed53daab3b62e9dc400401e54c509039cc6a94631a"
"#;

impl Env {
    /// `airlock approvals <args> --config …` as `human` (with the shared test token).
    fn approvals(&self, human: Option<&str>, args: &[&str]) -> Output {
        let config = self.config();
        let mut cmd = Command::new(AIRLOCK);
        cmd.arg("approvals")
            .args(args)
            .args(["--config", config.to_str().unwrap()])
            .env("AIRLOCK_TOKEN", "alt_test_token_for_kill_tests")
            .env("AIRLOCK_LOG", "warn");
        if let Some(h) = human {
            cmd.args(["--as", h]);
        }
        cmd.output().unwrap()
    }

    /// The approval requests in the store, newest first (`--all`).
    fn approval_list(&self) -> Vec<Value> {
        let out = self.approvals(None, &["list", "--all", "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Waits for a pending request and returns its id.
    fn pending_approval(&self) -> String {
        let mut id = String::new();
        eventually("no pending approval request appeared", || {
            let out = self.approvals(None, &["list", "--json"]);
            let list: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
            if let Some(first) = list.first() {
                id = first["id"].as_str().unwrap().to_owned();
            }
            !id.is_empty()
        });
        id
    }
}

fn post(id: i64, channel: &str, body: &str) -> Value {
    json!({"jsonrpc":"2.0","id":id,"method":"tools/call",
        "params":{"name":"write","arguments":{"channel":channel,"body":body},
                  "_meta":{"progressToken":format!("p{id}")}}})
}

/// The next frame that is not a progress notification for a held call.
fn next_answer(s: &mut Session) -> Value {
    loop {
        let f = s.next();
        if f["method"] != "notifications/progress" {
            return f;
        }
    }
}

#[test]
fn a_held_call_goes_through_once_after_two_eyes_and_a_denial_reaches_the_agent() {
    let env = Env::with_config(APPROVAL_POLICY, "", APPROVERS);
    let mut s = env.start();
    // Internal posts need nobody.
    assert!(s.call(post(1, "internal", "hi")).get("result").is_some());
    s.send_raw(post(2, "public", "advice").to_string().as_bytes());
    // The agent hears that its call is held (it gave a progress token).
    let progress = s.next();
    assert_eq!(progress["method"], "notifications/progress", "{progress}");
    assert_eq!(progress["params"]["progressToken"], "p2");
    let id = env.pending_approval();
    assert!(progress["params"]["message"]
        .as_str()
        .unwrap()
        .contains(&id));
    // Nothing reached the server while it is held.
    assert!(!env.received().contains("advice"));
    let shown = env.approvals(None, &["show", &id]);
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(
        text.contains("public posts need a human sign-off") && text.contains("advice"),
        "{text}"
    );

    // Alice is the agent's human and not in comms; "bot" is an agent, not a human.
    let alice = env.approvals(Some("alice"), &["approve", &id]);
    assert_eq!(
        alice.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&alice.stderr)
    );
    assert!(String::from_utf8_lossy(&alice.stderr).contains("group comms"));
    assert_eq!(
        env.approvals(Some("bot"), &["approve", &id]).status.code(),
        Some(2)
    );
    let forged = Command::new(AIRLOCK)
        .args([
            "approvals",
            "approve",
            &id,
            "--config",
            env.config().to_str().unwrap(),
            "--as",
            "bob",
        ])
        .env("AIRLOCK_TOKEN", "alt_wrong")
        .output()
        .unwrap();
    assert_eq!(forged.status.code(), Some(2));
    assert!(!env.received().contains("advice"));

    let bob = env.approvals(Some("bob"), &["approve", &id, "--comment", "checked"]);
    assert!(
        bob.status.success(),
        "{}",
        String::from_utf8_lossy(&bob.stderr)
    );
    let reply = next_answer(&mut s);
    assert_eq!(reply["id"], json!(2), "{reply}");
    assert!(reply.get("result").is_some(), "{reply}");
    assert!(env.received().contains("advice"));
    // Single use: the id cannot be approved again, and the same call again is a new request.
    assert_eq!(
        env.approvals(Some("carol"), &["approve", &id])
            .status
            .code(),
        Some(1)
    );
    s.send_raw(post(3, "public", "advice").to_string().as_bytes());
    let _ = s.next();
    let again = env.pending_approval();
    assert_ne!(again, id);
    let deny = env.approvals(Some("carol"), &["deny", &again, "--comment", "not today"]);
    assert!(
        deny.status.success(),
        "{}",
        String::from_utf8_lossy(&deny.stderr)
    );
    let reply = next_answer(&mut s);
    assert_eq!(reply["id"], json!(3));
    assert_eq!(error_code(&reply), -31008, "{reply}");
    assert!(reply["error"]["message"]
        .as_str()
        .unwrap()
        .contains("not today"));
    s.ping(4);
    s.finish();

    // The trail names who asked, for whom, and who let it through.
    let records = env.audit();
    let allowed = records
        .iter()
        .find(|r| r["kind"] == "call" && r["decision"] == "allow" && r["request_id"] == "2")
        .unwrap();
    assert_eq!(allowed["detail"]["approved_by"], json!(["bob"]));
    assert_eq!(allowed["result_status"], "ok");
    let events: Vec<&str> = records
        .iter()
        .filter(|r| r["kind"] == "approval")
        .map(|r| r["detail"]["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        events,
        ["requested", "approved", "used", "requested", "denied"]
    );
    assert_eq!(
        records.iter().filter(|r| r["decision"] == "hold").count(),
        2
    );
}

#[test]
fn a_changed_argument_is_a_new_request_and_an_expired_one_is_a_denial() {
    let env = Env::with_config(APPROVAL_POLICY, "", APPROVERS);
    let mut s = env.start();
    s.send_raw(post(1, "public", "one").to_string().as_bytes());
    let first = env.pending_approval();
    // The agent swaps the body: it is not covered by the first request.
    s.send_raw(post(2, "public", "two").to_string().as_bytes());
    eventually("the changed call was not a new request", || {
        env.approval_list().len() == 2
    });
    let list = env.approval_list();
    assert_ne!(list[0]["digest"], list[1]["digest"]);
    assert!(env
        .approvals(Some("bob"), &["approve", &first])
        .status
        .success());
    let reply = next_answer(&mut s);
    assert_eq!(reply["id"], json!(1), "{reply}");
    assert!(env.received().contains("one") && !env.received().contains("two"));

    // The agent cancels the other held call: it is withdrawn, never forwarded.
    s.send_raw(br#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":2}}"#);
    eventually("the cancelled call was not withdrawn", || {
        env.approval_list()
            .iter()
            .any(|a| a["state"] == "withdrawn")
    });
    // `quick` expires after a second without a decision: a clear error, nothing forwarded.
    // (Progress notifications of the held calls may still be in the pipe: skip them.)
    s.send_raw(
        json!({"jsonrpc":"2.0","id":3,"method":"tools/call",
            "params":{"name":"echo","arguments":{"message":"urgent"}}})
        .to_string()
        .as_bytes(),
    );
    let reply = next_answer(&mut s);
    assert_eq!(reply["id"], json!(3), "{reply}");
    assert_eq!(error_code(&reply), -31009, "{reply}");
    assert!(!env.received().contains("urgent"));
    let expired = env
        .approval_list()
        .into_iter()
        .find(|a| a["target"] == "echo")
        .unwrap();
    assert_eq!(expired["state"], "expired");
    let late = env.approvals(Some("bob"), &["approve", expired["id"].as_str().unwrap()]);
    assert_eq!(late.status.code(), Some(1));
    s.send_raw(br#"{"jsonrpc":"2.0","id":4,"method":"ping"}"#);
    assert_eq!(next_answer(&mut s)["id"], json!(4));
    s.finish();
    assert!(!env.received().contains("two"));
}

#[test]
fn a_pending_request_survives_a_crash_and_the_retry_goes_through_once() {
    let env = Env::with_config(APPROVAL_POLICY, "", APPROVERS);
    let mut s = env.start();
    s.send_raw(post(1, "public", "after-restart").to_string().as_bytes());
    let id = env.pending_approval();
    // The gateway dies without a goodbye; the request stays pending in the store.
    s.child.kill().unwrap();
    let _ = s.child.wait();
    assert_eq!(env.approval_list()[0]["state"], "pending");
    assert!(env
        .approvals(Some("bob"), &["approve", &id])
        .status
        .success());
    // The agent reconnects and retries the identical call: it goes through at once, once.
    let mut s = env.start();
    let reply = s.call(post(7, "public", "after-restart"));
    assert!(reply.get("result").is_some(), "{reply}");
    assert_eq!(env.approval_list()[0]["state"], "used");
    s.send_raw(post(8, "public", "after-restart").to_string().as_bytes());
    let progress = s.next();
    assert_eq!(progress["method"], "notifications/progress", "{progress}");
    // A kill of the agent denies its pending request and answers the held call.
    let out = env.as_alice(&["kill", "--agent", "bot", "--reason", "stop now"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reply = next_answer(&mut s);
    assert_eq!(reply["id"], json!(8), "{reply}");
    assert_eq!(error_code(&reply), -31007, "{reply}");
    let newest = &env.approval_list()[0];
    assert_eq!(newest["state"], "denied", "{newest}");
    assert_eq!(newest["votes"][0]["channel"], "kill");
    s.stdin.take();
    let _ = wait_exit(&mut s.child);
    assert_eq!(env.received().matches("after-restart").count(), 1);
}

/// Issue 15, item 6: approvers see what they approve. A held call whose arguments carry a
/// secret: `show` as a human who may approve it reads the real value (the gateway kept it beside
/// the request), without `--as` it stays hidden; the approval goes through with exactly those
/// arguments; the secret is in no list and no audit record.
#[test]
fn an_approver_reads_the_secret_it_approves_and_nothing_else_carries_it() {
    let env = Env::with_config(APPROVAL_POLICY, "", APPROVERS);
    let mut s = env.start();
    let secret = "hunter2-secret-value";
    s.send_raw(
        json!({"jsonrpc":"2.0","id":1,"method":"tools/call",
            "params":{"name":"write","arguments":{"channel":"public","body":"hello","api_key":secret}}})
        .to_string()
        .as_bytes(),
    );
    let id = env.pending_approval();
    let hidden = env.approvals(None, &["show", &id]);
    assert!(hidden.status.success());
    assert!(!String::from_utf8_lossy(&hidden.stdout).contains(secret));
    let shown = env.approvals(Some("bob"), &["show", &id]);
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.status.success(),
        "{}",
        String::from_utf8_lossy(&shown.stderr)
    );
    assert!(
        text.contains(secret),
        "the approver cannot read the secret: {text}"
    );
    let listed = serde_json::to_string(&env.approval_list()).unwrap();
    assert!(listed.contains(&id) && !listed.contains(secret), "{listed}");
    let approved = env.approvals(Some("bob"), &["approve", &id]);
    assert!(
        approved.status.success(),
        "{}",
        String::from_utf8_lossy(&approved.stderr)
    );
    let reply = next_answer(&mut s);
    assert!(reply.get("result").is_some(), "{reply}");
    assert!(
        env.received().contains(secret),
        "the approved call went through as shown"
    );
    s.finish();
    let audit = serde_json::to_string(&env.audit()).unwrap();
    assert!(!audit.contains(secret));
}

/// Issue 15, item 7: kills outrank approvals. An approval granted (while no gateway held the
/// call) and not used before a kill is void after it; a resume does not revive it: the agent's
/// identical retry is held anew and never forwarded.
#[test]
fn an_approval_granted_before_a_kill_is_void_after_it_even_after_a_resume() {
    let env = Env::with_config(APPROVAL_POLICY, "", APPROVERS);
    let mut s = env.start();
    s.send_raw(
        post(1, "public", "granted-then-killed")
            .to_string()
            .as_bytes(),
    );
    let id = env.pending_approval();
    s.child.kill().unwrap();
    let _ = s.child.wait();
    assert!(env
        .approvals(Some("bob"), &["approve", &id])
        .status
        .success());
    assert_eq!(env.approval_list()[0]["state"], "approved");

    let out = env.as_alice(&["kill", "--agent", "bot", "--reason", "incident"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let voided = env
        .approval_list()
        .into_iter()
        .find(|a| a["id"] == id.as_str())
        .unwrap();
    assert_eq!(voided["state"], "denied", "{voided}");
    let kill_vote = voided["votes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["channel"] == "kill")
        .cloned()
        .unwrap();
    assert_eq!(kill_vote["comment"], "incident");
    let out = env.as_alice(&["resume", "--agent", "bot"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The agent retries the identical call: held for a human again, not forwarded.
    let mut s = env.start();
    s.send_raw(
        post(2, "public", "granted-then-killed")
            .to_string()
            .as_bytes(),
    );
    let progress = s.next();
    assert_eq!(progress["method"], "notifications/progress", "{progress}");
    let again = env.pending_approval();
    assert_ne!(again, id);
    s.stdin.take();
    let _ = wait_exit(&mut s.child);
    assert!(!env.received().contains("granted-then-killed"));
    let events: Vec<String> = env
        .audit()
        .iter()
        .filter(|r| r["kind"] == "approval" && r["detail"]["approval_id"] == id.as_str())
        .map(|r| r["detail"]["event"].as_str().unwrap().to_owned())
        .filter(|e| e != "requested")
        .collect();
    // The "requested" record of the gateway killed with SIGKILL is folded from its spool by a
    // later process, so it may land anywhere; the decision and the voiding are in order.
    assert_eq!(events, ["approved", "denied"], "{events:?}");
}

#[test]
fn check_refuses_malformed_approval_annotations_and_warns_about_approvals_nobody_can_give() {
    let env = Env::new(APPROVAL_POLICY);
    let out = env.airlock(&["check", "--config", env.config().to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("policy public-posts needs 1 approval but only 0 humans with a credential in group comms"),
        "{text}"
    );
    assert!(!text.contains("policy quick needs"), "{text}");

    let bad = APPROVAL_POLICY.replace(r#"@expires("1s")"#, r#"@quorum("many")"#);
    let env = Env::new(&bad);
    let out = env.airlock(&["check", "--config", env.config().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("policy.cedar:") && err.contains("@quorum(\"many\") must be a whole number"),
        "{err}"
    );
    // `run` refuses to start the same way.
    let mut run = env.spawn_run();
    drop(run.stdin.take());
    assert_eq!(wait_exit(&mut run).code(), Some(2));
}

// === information flow ===

#[test]
fn an_agent_that_read_confidential_data_cannot_post_it_in_public() {
    let policy = r#"
@id("allow-write")
permit (principal == Agent::"bot", action == Action::"call_tool", resource == Tool::"rec/write");
@id("allow-secret")
permit (principal == Agent::"bot", action == Action::"call_tool", resource == Tool::"rec/secret");
@id("no-confidential-in-public")
@reason("this agent has read confidential data; it may not post in public")
forbid (principal, action == Action::"call_tool", resource == Tool::"rec/write")
when {
    context.session.labels.contains("confidential") &&
    context.args has channel && context.args.channel == "public"
};
"#;
    let flow = "[flow.labels.confidential]\ntools = [\"rec/secret\"]\n";
    let env = Env::with_config(policy, "", flow);
    let mut s = env.start();
    let public = |id| {
        json!({"jsonrpc":"2.0","id":id,"method":"tools/call",
        "params":{"name":"write","arguments":{"channel":"public","body":"hello"}}})
    };
    assert!(s.call(public(1)).get("result").is_some());
    assert!(s
        .tool(2, "secret", json!({"repo": "payroll"}))
        .get("result")
        .is_some());
    let reply = s.call(public(3));
    assert_eq!(error_code(&reply), -31001, "{reply}");
    assert!(reply["error"]["message"]
        .as_str()
        .unwrap()
        .contains("it may not post in public"));
    // Internal posts still work.
    let internal = s.tool(4, "write", json!({"channel": "internal", "body": "x"}));
    assert!(internal.get("result").is_some(), "{internal}");
    s.finish();
    // The label sticks to the agent across a restart.
    let mut s = env.start();
    assert_eq!(error_code(&s.call(public(5))), -31001);
    s.finish();
    // Only the post made before the confidential read reached the server.
    assert_eq!(env.received().matches(r#""channel":"public""#).count(), 1);
    let records = env.audit();
    let label = records.iter().find(|r| r["kind"] == "flow").unwrap();
    assert_eq!(label["detail"]["label"], "confidential");
    assert_eq!(label["target"], "secret");
    assert_eq!(records.iter().filter(|r| r["kind"] == "flow").count(), 1);
}

// === the request pipeline (cancellation, ids, tasks, labels, server requests) ===

#[path = "cli/pipeline.rs"]
mod pipeline;
#[path = "cli/reload.rs"]
mod reload;

// === what an upstream keeps when its session ends: no process, no credential ===

#[path = "cli/ends.rs"]
mod ends;

// === agent identity: registered agents and the credential `airlock run` requires ===

#[path = "cli/agents.rs"]
mod agents;
