//! Talks raw JSON-RPC lines to the server binary over stdio and checks the effects in its state file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::Duration;

use airlock_demo_server::{load_state, seed_state, CompanyState};
use serde_json::{json, Value};

const TIMEOUT: Duration = Duration::from_secs(20);

const TOOLS: [&str; 11] = [
    "acl_get",
    "acl_set",
    "compute_start",
    "compute_stop",
    "forum_list",
    "forum_post",
    "mail_delete",
    "mail_list",
    "repo_list",
    "repo_read",
    "state_dump",
];

/// One server process and a line-by-line view of its stdout.
struct Server {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    next_id: i64,
    state_path: PathBuf,
}

impl Server {
    fn start(state_path: &Path, reset: bool) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_airlock-demo-server"));
        cmd.arg("--state").arg(state_path);
        if reset {
            cmd.arg("--reset");
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the server");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        Server {
            child,
            stdin,
            lines,
            next_id: 1,
            state_path: state_path.to_owned(),
        }
    }

    /// Starts a server and runs the `initialize` handshake with `version`; returns the result.
    fn initialized(state_path: &Path, reset: bool, version: &str) -> (Server, Value) {
        let mut s = Server::start(state_path, reset);
        let init = s.request(
            "initialize",
            json!({
                "protocolVersion": version,
                "capabilities": {},
                "clientInfo": { "name": "stdio-test", "version": "0" }
            }),
        );
        s.send(&json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }));
        (s, init)
    }

    fn send(&mut self, frame: &Value) {
        let stdin = self.stdin.as_mut().unwrap();
        let mut line = serde_json::to_vec(frame).unwrap();
        line.push(b'\n');
        stdin.write_all(&line).unwrap();
        stdin.flush().unwrap();
    }

    /// Sends a request and returns the whole response frame with the same id.
    fn request_frame(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params }));
        loop {
            let line = self
                .lines
                .recv_timeout(TIMEOUT)
                .unwrap_or_else(|e| panic!("no answer to {method}: {e}"));
            let frame: Value = serde_json::from_str(&line).unwrap();
            if frame.get("id") == Some(&json!(id)) {
                return frame;
            }
        }
    }

    fn request(&mut self, method: &str, params: Value) -> Value {
        let frame = self.request_frame(method, params);
        assert!(frame.get("error").is_none(), "{method} failed: {frame}");
        frame["result"].clone()
    }

    fn call(&mut self, tool: &str, arguments: Value) -> Value {
        self.request(
            "tools/call",
            json!({ "name": tool, "arguments": arguments }),
        )
    }

    fn state(&self) -> CompanyState {
        load_state(&self.state_path).unwrap()
    }

    /// Closes stdin and waits for a clean exit.
    fn finish(mut self) {
        drop(self.stdin.take());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "server exited with {status}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Only reached with the child still running when a test failed.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn is_error(result: &Value) -> bool {
    result["isError"] == json!(true)
}

fn text(result: &Value) -> String {
    result["content"][0]["text"].as_str().unwrap().to_owned()
}

#[test]
fn forum_post_over_stdio_changes_the_state_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    let (mut s, init) = Server::initialized(&path, false, "2025-11-25");

    assert_eq!(init["protocolVersion"], "2025-11-25");
    assert_eq!(init["serverInfo"]["name"], "airlock-demo-server");
    assert!(init["capabilities"]["tools"].is_object());
    assert!(init["instructions"]
        .as_str()
        .unwrap()
        .contains("Northgate Systems"));
    // The seed is on disk before any call.
    assert_eq!(s.state(), seed_state());

    let tools = s.request("tools/list", json!({}));
    let tools = tools["tools"].as_array().unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, TOOLS);
    for t in tools {
        let schema = &t["inputSchema"];
        assert_eq!(schema["type"], "object", "{t}");
        assert!(!t["description"].as_str().unwrap().is_empty());
        if t["name"] != "state_dump" {
            assert_eq!(schema["additionalProperties"], false, "{t}");
        }
    }
    let acl_set = tools.iter().find(|t| t["name"] == "acl_set").unwrap();
    assert_eq!(
        acl_set["inputSchema"]["required"],
        json!(["repo", "principal", "access"])
    );

    let result = s.call(
        "forum_post",
        json!({ "channel": "public", "title": "Status", "body": "All good." }),
    );
    assert!(!is_error(&result), "{result}");
    let id = result["structuredContent"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let from_text: Value = serde_json::from_str(&text(&result)).unwrap();
    assert_eq!(from_text, result["structuredContent"]);

    // Written before the answer: the file already holds the post and the effect.
    let state = s.state();
    let post = state.forum.channels["public"].last().unwrap();
    assert_eq!(
        (post.id.as_str(), post.title.as_str(), post.body.as_str()),
        (id.as_str(), "Status", "All good.")
    );
    assert_eq!(post.author, "assistant");
    assert_eq!(state.effects.len(), 1);
    assert_eq!(state.effects[0].tool, "forum_post");
    assert_eq!(state.effects[0].items, vec![id]);
    s.finish();
}

#[test]
fn protocol_2025_03_26_initializes_and_calls() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    let (mut s, init) = Server::initialized(&path, false, "2025-03-26");
    assert_eq!(init["protocolVersion"], "2025-03-26");
    let result = s.call("repo_list", json!({ "prefix": "security" }));
    assert!(!is_error(&result), "{result}");
    assert_eq!(result["structuredContent"]["count"], 5);
    // No arguments at all is fine for a tool whose arguments are all optional.
    let all = s.request("tools/call", json!({ "name": "repo_list" }));
    assert_eq!(
        all["structuredContent"]["count"],
        airlock_demo_server::REPO_COUNT
    );
    s.finish();
}

#[test]
fn bad_input_is_a_tool_error_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    let (mut s, _) = Server::initialized(&path, false, "2025-11-25");
    let before = std::fs::read(&path).unwrap();

    let cases = [
        ("acl_get", json!({ "repo": "eng/nope" }), "unknown repo"),
        (
            "mail_delete",
            json!({ "ids": ["m-0001", "m-9999"] }),
            "m-9999",
        ),
        (
            "mail_delete",
            json!({ "ids": ["m-0001"], "folder": "inbox" }),
            "exactly one",
        ),
        ("mail_delete", json!({}), "exactly one"),
        (
            "forum_post",
            json!({ "channel": "public", "title": "t", "body": "b", "as": "ceo" }),
            "unknown field",
        ),
        (
            "forum_post",
            json!({ "channel": "random", "title": "t", "body": "b" }),
            "unknown channel",
        ),
        (
            "acl_set",
            json!({ "repo": "eng", "principal": "group:all", "access": "admin" }),
            "unknown repo",
        ),
        (
            "acl_set",
            json!({ "repo": "eng/docs", "principal": "group:all", "access": "owner" }),
            "owner",
        ),
        (
            "compute_start",
            json!({ "name": "x", "cpus": 65, "image": "i" }),
            "free cpus",
        ),
        ("compute_stop", json!({ "job_id": "job-0" }), "unknown job"),
        (
            "repo_read",
            json!({ "repo": "eng/docs", "path": "nope.md" }),
            "README.md",
        ),
    ];
    for (tool, args, needle) in cases {
        let result = s.call(tool, args.clone());
        assert!(is_error(&result), "{tool} {args}: {result}");
        assert!(text(&result).contains(needle), "{tool} {args}: {result}");
    }
    let unknown = s.request_frame("tools/call", json!({ "name": "rm_rf", "arguments": {} }));
    assert!(unknown["error"].is_object(), "{unknown}");

    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "no failed call touched the file"
    );
    s.finish();
}

#[test]
fn mass_changes_are_countable_in_the_state_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    let (mut s, _) = Server::initialized(&path, false, "2025-11-25");

    let acl = s.call(
        "acl_set",
        json!({ "repo": "security", "principal": "group:all", "access": "admin", "recursive": true }),
    );
    assert_eq!(acl["structuredContent"]["matched"], 5);
    assert_eq!(
        acl["structuredContent"]["changed"]
            .as_array()
            .unwrap()
            .len(),
        5
    );
    let keys = s.call("acl_get", json!({ "repo": "security/keys" }));
    assert_eq!(keys["structuredContent"]["acl"]["group:all"], "admin");

    let deleted = s.call("mail_delete", json!({ "folder": "inbox" }));
    let count = deleted["structuredContent"]["deleted"].as_u64().unwrap();
    assert!(count > 50);

    let job = s.call(
        "compute_start",
        json!({ "name": "scan", "cpus": 48, "image": "x:1" }),
    );
    assert!(
        !is_error(&job),
        "over quota is not the server's business: {job}"
    );
    let job_id = job["structuredContent"]["job_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let state = s.state();
    assert_eq!(
        state.effective_access("security/keys", "judy"),
        airlock_demo_server::Access::Admin
    );
    assert!(state.mailbox.messages.iter().all(|m| m.folder != "inbox"));
    assert_eq!(state.compute.running_cpus(), 58);
    let tools: Vec<&str> = state.effects.iter().map(|e| e.tool.as_str()).collect();
    assert_eq!(tools, ["acl_set", "mail_delete", "compute_start"]);
    assert_eq!(state.effects[1].items.len() as u64, count);

    let stop = s.call("compute_stop", json!({ "job_id": job_id }));
    assert_eq!(stop["structuredContent"]["running"], false);

    // state_dump answers with exactly what is on disk.
    let dump = s.call("state_dump", json!({}));
    let on_disk: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(dump["structuredContent"], on_disk);
    s.finish();
}

#[test]
fn state_survives_a_restart_and_reset_restores_the_seed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");

    let (mut s, _) = Server::initialized(&path, false, "2025-11-25");
    s.call(
        "forum_post",
        json!({ "channel": "internal", "title": "keep me", "body": "" }),
    );
    s.finish();

    let (mut s, _) = Server::initialized(&path, false, "2025-11-25");
    let posts = s.call("forum_list", json!({ "channel": "internal" }));
    let last = posts["structuredContent"]["posts"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["title"], "keep me");
    s.finish();

    let (s, _) = Server::initialized(&path, true, "2025-11-25");
    assert_eq!(s.state(), seed_state());
    s.finish();
}
