//! Benchmarks of `airlock serve`, across real processes:
//!
//! 1. **Approve → upstream**: an agent (this process, speaking JSON-RPC to `airlock run` over
//!    stdio) calls a tool that policy holds; once the request is pending, this process POSTs
//!    the approval to a running `airlock serve`; the upstream server (this same binary in
//!    `upstream` mode, started by `airlock run`) writes the wall-clock time it receives the call.
//!    Measured: upstream receipt − the moment before the POST.
//! 2. **Pending-queue capacity**: 10,000 pending requests in the store, listed through
//!    `GET /api/v1/approvals?state=pending` (auth, store read, JSON encoding, HTTP).
//!
//! ```sh
//! cargo build --release -p airlock-cli
//! cargo run --release -p airlock-server --example serve_bench            # 200 approvals, 10,000 listed
//! AIRLOCK_BIN=target/release/airlock cargo run --release -p airlock-server --example serve_bench -- 50
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("upstream") {
        upstream(Path::new(&args[2]));
        return;
    }
    let rounds: usize = args.get(1).and_then(|n| n.parse().ok()).unwrap_or(200);
    let airlock = std::env::var("AIRLOCK_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("target/release/airlock"));
    assert!(
        airlock.is_file(),
        "build it first: cargo build --release -p airlock-cli ({})",
        airlock.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let bench = Bench::new(dir.path(), &airlock);
    approve_to_upstream(&bench, rounds);
    list_capacity(&bench, 10_000);
}

struct Bench {
    serve: std::process::Child,
    port: u16,
    token: String,
    config: PathBuf,
    db: PathBuf,
    stamps: PathBuf,
    airlock: PathBuf,
}

impl Drop for Bench {
    fn drop(&mut self) {
        let _ = self.serve.kill();
        let _ = self.serve.wait();
    }
}

impl Bench {
    fn new(dir: &Path, airlock: &Path) -> Bench {
        let alice = airlock_control::auth::new_token().unwrap();
        let bob = airlock_control::auth::new_token().unwrap();
        let policy = dir.join("p.cedar");
        std::fs::write(
            &policy,
            "permit(principal, action == Action::\"call_tool\", resource);\n\
             @id(\"held\") @approval(\"bench: every post needs a human\")\n\
             forbid(principal, action == Action::\"call_tool\", resource == Tool::\"bench/post\")\n\
             unless { context.approval.granted };\n",
        )
        .unwrap();
        let db = dir.join("audit.db");
        let config = dir.join("airlock.toml");
        std::fs::write(
            &config,
            format!(
                "[policy]\nfiles = [{policy:?}]\n[audit]\npath = {db:?}\n\
                 [humans.alice]\ntoken_sha256 = \"{}\"\n[humans.bob]\ntoken_sha256 = \"{}\"\n\
                 [tasks.t]\n[agents.bot]\non_behalf_of = \"alice\"\ntask = \"t\"\n\
                 [servers.bench]\nsandbox = \"off\"\n[breakers.defaults]\nenabled = false\n",
                airlock_control::auth::token_digest(&alice),
                airlock_control::auth::token_digest(&bob),
            ),
        )
        .unwrap();
        let mut serve = Command::new(airlock)
            .args(["serve", "--config"])
            .arg(&config)
            .args(["--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(serve.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .split("127.0.0.1:")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|p| p.parse().ok())
            .expect("airlock serve printed its port");
        Bench {
            serve,
            port,
            token: bob,
            config,
            db,
            stamps: dir.join("stamps"),
            airlock: airlock.to_owned(),
        }
    }

    fn agent(&self) -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into()
    }
}

fn approve_to_upstream(b: &Bench, rounds: usize) {
    let exe = std::env::current_exe().unwrap();
    let mut run = Command::new(&b.airlock)
        .args(["run", "--config"])
        .arg(&b.config)
        .args(["--agent", "bot", "--server", "bench", "--"])
        .arg(&exe)
        .arg("upstream")
        .arg(&b.stamps)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut to = run.stdin.take().unwrap();
    let mut from = BufReader::new(run.stdout.take().unwrap());
    let mut send = |v: Value| {
        writeln!(to, "{v}").unwrap();
        to.flush().unwrap();
    };
    let mut answer = |id: u64| loop {
        let mut line = String::new();
        assert!(
            from.read_line(&mut line).unwrap() > 0,
            "airlock run closed stdout"
        );
        let v: Value = serde_json::from_str(&line).unwrap();
        if v["id"] == json!(id) {
            return v;
        }
    };
    send(
        json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "bench", "version": "0"}}}),
    );
    answer(0);
    send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
    let store = airlock_approval::ApprovalStore::open(&b.db).unwrap();
    let http = b.agent();
    let mut upstream_ms = Vec::new();
    let mut client_ms = Vec::new();
    let mut post_ms = Vec::new();
    for i in 1..=rounds as u64 {
        send(json!({"jsonrpc": "2.0", "id": i, "method": "tools/call",
                    "params": {"name": "post", "arguments": {"n": i}}}));
        let id = loop {
            let pending = store
                .list(&airlock_approval::ListFilter {
                    states: vec![airlock_approval::State::Pending],
                    ..Default::default()
                })
                .unwrap();
            if let Some(a) = pending.first() {
                break a.id.clone();
            }
            std::thread::sleep(Duration::from_micros(200));
        };
        let t0 = airlock_audit::now_unix_ns();
        let start = Instant::now();
        let r = http
            .post(&format!(
                "http://127.0.0.1:{}/api/v1/approvals/{id}/approve",
                b.port
            ))
            .header("Authorization", &format!("Bearer bob:{}", b.token))
            .send_empty()
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        post_ms.push(start.elapsed().as_secs_f64() * 1e3);
        let done = answer(i);
        assert!(done.get("result").is_some(), "{done}");
        client_ms.push(start.elapsed().as_secs_f64() * 1e3);
        let stamps = std::fs::read_to_string(&b.stamps).unwrap();
        let t1: i64 = stamps.lines().last().unwrap().parse().unwrap();
        upstream_ms.push((t1 - t0) as f64 / 1e6);
    }
    drop(to); // end of input: `airlock run` shuts down
    let _ = run.kill();
    let _ = run.wait();
    report(
        &format!("approve POST -> upstream receives the call ({rounds} rounds)"),
        &mut upstream_ms,
    );
    report("approve POST -> agent has the result", &mut client_ms);
    report(
        "approve POST round trip (decide, audit record, notify)",
        &mut post_ms,
    );
}

fn list_capacity(b: &Bench, n: usize) {
    let mut store = airlock_approval::ApprovalStore::open(&b.db).unwrap();
    let fill = Instant::now();
    for i in 0..n {
        let args = json!({"channel": "public", "body": format!("post number {i}")});
        store
            .request(&airlock_approval::NewApproval {
                digest: airlock_approval::action_digest(
                    "bot",
                    "alice",
                    "bench",
                    "tools/call",
                    "post",
                    &args,
                ),
                agent: "bot".into(),
                on_behalf_of: "alice".into(),
                task: "t".into(),
                session: format!("s-{}", i % 50),
                server: "bench".into(),
                method: "tools/call".into(),
                target: "post".into(),
                args_redacted: args,
                reasons: vec![airlock_approval::HoldReason {
                    policy: "held".into(),
                    why: "bench".into(),
                }],
                requirements: airlock_approval::Requirements::default(),
                now_ns: airlock_audit::now_unix_ns(),
            })
            .unwrap();
    }
    println!(
        "stored {n} pending requests in {:.1} s",
        fill.elapsed().as_secs_f64()
    );
    let http = b.agent();
    let mut ms = Vec::new();
    for _ in 0..10 {
        let start = Instant::now();
        let mut r = http
            .get(&format!(
                "http://127.0.0.1:{}/api/v1/approvals?state=pending",
                b.port
            ))
            .header("Authorization", &format!("Bearer bob:{}", b.token))
            .call()
            .unwrap();
        let body = r
            .body_mut()
            .with_config()
            .limit(1 << 30)
            .read_to_string()
            .unwrap();
        ms.push(start.elapsed().as_secs_f64() * 1e3);
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["approvals"].as_array().unwrap().len(), n);
    }
    report(
        &format!("GET /api/v1/approvals?state=pending with {n} pending (10 rounds)"),
        &mut ms,
    );
}

fn report(what: &str, ms: &mut [f64]) {
    ms.sort_by(|a, b| a.total_cmp(b));
    let q = |p: f64| ms[((ms.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "{what}: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        q(0.5),
        q(0.9),
        q(0.99),
        ms[ms.len() - 1]
    );
}

/// A minimal MCP server on stdio with one tool, `post`, that records when each call arrives.
fn upstream(stamps: &Path) {
    let stdin = std::io::stdin();
    let mut out = std::io::stdout().lock();
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(stamps)
        .unwrap();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { return };
        let Ok(v) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        let Some(id) = v.get("id").cloned() else {
            continue;
        };
        let result = match v["method"].as_str() {
            Some("initialize") => json!({"protocolVersion": v["params"]["protocolVersion"],
                "capabilities": {"tools": {}}, "serverInfo": {"name": "bench-upstream", "version": "0"}}),
            Some("tools/list") => {
                json!({"tools": [{"name": "post", "inputSchema": {"type": "object"}}]})
            }
            Some("tools/call") => {
                writeln!(log, "{}", airlock_audit::now_unix_ns()).unwrap();
                log.flush().unwrap();
                json!({"content": [{"type": "text", "text": "posted"}]})
            }
            _ => json!({}),
        };
        writeln!(
            out,
            "{}",
            json!({"jsonrpc": "2.0", "id": id, "result": result})
        )
        .unwrap();
        out.flush().unwrap();
    }
}
