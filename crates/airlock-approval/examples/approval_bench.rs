//! Approval benchmarks (release build; see BENCHMARKS.md):
//!
//! 1. **Decision latency across processes**: a real `airlock run` holds a call; the bench runs
//!    the real `airlock approvals approve` command and measures from just before that command
//!    starts until the agent has the call's answer (the upstream received it and answered; an
//!    upper bound of "approve → upstream"). ROUNDS rounds, p50/p99/max.
//! 2. **Queue capacity**: PENDING pending requests in the store, listed by
//!    `airlock approvals list --json` (the whole command) and by `ApprovalStore::list` alone.
//!
//! `cargo run --release -p airlock-approval --example approval_bench -- \
//!     --airlock target/release/airlock [--rounds 100] [--pending 10000]`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use airlock_approval::{ApprovalStore, HoldReason, ListFilter, NewApproval, Requirements, State};
use serde_json::{json, Value};

const TOKEN: &str = "alt_bench_token";

fn main() {
    let mut airlock = PathBuf::from("target/release/airlock");
    let mut rounds = 100usize;
    let mut pending = 10_000usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--airlock" => airlock = PathBuf::from(args.next().expect("--airlock PATH")),
            "--rounds" => {
                rounds = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--rounds N")
            }
            "--pending" => {
                pending = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--pending N")
            }
            other => panic!("unknown argument {other}"),
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    decision_latency(&airlock, &config, dir.path(), rounds);
    queue_capacity(&airlock, dir.path(), pending);
}

fn write_config(dir: &Path) -> PathBuf {
    let digest = airlock_control::auth::token_digest(TOKEN);
    std::fs::write(
        dir.join("policy.cedar"),
        r#"
@id("allow-echo")
permit (principal == Agent::"bot", action == Action::"call_tool", resource == Tool::"rec/echo");
@id("hold-echo")
@approval("bench")
forbid (principal, action == Action::"call_tool", resource == Tool::"rec/echo")
unless { context.approval.granted };
"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("airlock.toml"),
        format!(
            "[policy]\nfiles = [\"policy.cedar\"]\n[audit]\npath = \"audit.db\"\n\
             [humans.alice]\n[humans.bob]\ntoken_sha256 = \"{digest}\"\n[tasks.t]\n\
             [agents.bot]\non_behalf_of = \"alice\"\ntask = \"t\"\n[servers.rec]\nsandbox = \"off\"\n\
             [breakers.defaults]\nenabled = false\n"
        ),
    )
    .unwrap();
    dir.join("airlock.toml")
}

/// The upstream is the test recorder with the sandbox off: this measures the approval path,
/// not the sandbox (which has its own bench).
fn decision_latency(airlock: &Path, config: &Path, dir: &Path, rounds: usize) {
    let recorder = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/recorder.py");
    let mut run = Command::new(airlock)
        .args(["run", "--config"])
        .arg(config)
        .args(["--agent", "bot", "--session", "bench", "--", "python3"])
        .arg(&recorder)
        .env("RECORDER_LOG", dir.join("recorder.log"))
        .env("AIRLOCK_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = run.stdin.take().unwrap();
    let mut stdout = BufReader::new(run.stdout.take().unwrap());
    let mut send = |v: Value| {
        stdin.write_all(v.to_string().as_bytes()).unwrap();
        stdin.write_all(b"\n").unwrap();
        stdin.flush().unwrap();
    };
    let mut read = |want: i64| loop {
        let mut line = String::new();
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "airlock run exited"
        );
        let v: Value = serde_json::from_str(&line).unwrap();
        if v["id"] == json!(want) {
            return v;
        }
    };
    send(
        json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"bench","version":"1"}}}),
    );
    read(0);
    let store = ApprovalStore::open(&dir.join("audit.db")).unwrap();
    let mut samples = Vec::with_capacity(rounds);
    for i in 1..=rounds {
        let id = i64::try_from(i).unwrap();
        send(
            json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":"echo","arguments":{"n":id}}}),
        );
        let approval = loop {
            let list = store
                .list(&ListFilter {
                    states: vec![State::Pending],
                    ..ListFilter::default()
                })
                .unwrap();
            if let Some(a) = list.into_iter().next() {
                break a;
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        let start = Instant::now();
        let out = Command::new(airlock)
            .args(["approvals", "approve", &approval.id, "--config"])
            .arg(config)
            .args(["--as", "bob"])
            .env("AIRLOCK_TOKEN", TOKEN)
            .env("AIRLOCK_LOG", "warn")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let command_done = start.elapsed();
        let reply = read(id);
        let total = start.elapsed();
        assert!(reply.get("result").is_some(), "{reply}");
        samples.push((total, command_done));
    }
    drop(stdin);
    let _ = run.wait();
    let mut totals: Vec<Duration> = samples.iter().map(|s| s.0).collect();
    let mut commands: Vec<Duration> = samples.iter().map(|s| s.1).collect();
    let after: Vec<Duration> = samples.iter().map(|s| s.0.saturating_sub(s.1)).collect();
    let mut after = after;
    println!(
        "approve -> answer at the agent, {rounds} rounds (ms): {}",
        stats(&mut totals)
    );
    println!(
        "  of which the approve command itself (ms):        {}",
        stats(&mut commands)
    );
    println!(
        "  from the command's exit to the answer (ms):      {}",
        stats(&mut after)
    );
}

fn queue_capacity(airlock: &Path, dir: &Path, pending: usize) {
    let db = dir.join("capacity.db");
    let mut store = ApprovalStore::open(&db).unwrap();
    let t = Instant::now();
    for i in 0..pending {
        let args = json!({ "n": i });
        store
            .request(&NewApproval {
                digest: airlock_approval::action_digest(
                    "bot",
                    "alice",
                    "rec",
                    "tools/call",
                    "echo",
                    &args,
                ),
                agent: "bot".into(),
                on_behalf_of: "alice".into(),
                task: "t".into(),
                session: "bench".into(),
                server: "rec".into(),
                method: "tools/call".into(),
                target: "echo".into(),
                args_redacted: args,
                reasons: vec![HoldReason {
                    policy: "hold-echo".into(),
                    why: "bench".into(),
                }],
                requirements: Requirements::default(),
                now_ns: airlock_audit::now_unix_ns(),
            })
            .unwrap();
    }
    println!(
        "{pending} requests stored in {:.0} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    let filter = ListFilter {
        states: vec![State::Pending],
        limit: pending,
        ..ListFilter::default()
    };
    let mut lib = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        assert_eq!(store.list(&filter).unwrap().len(), pending);
        lib.push(t.elapsed());
    }
    let config = dir.join("capacity.toml");
    std::fs::write(
        &config,
        "[policy]\nfiles = [\"policy.cedar\"]\n[audit]\npath = \"capacity.db\"\n[humans.alice]\n\
         [tasks.t]\n[agents.bot]\non_behalf_of = \"alice\"\ntask = \"t\"\n[servers.rec]\n",
    )
    .unwrap();
    let mut cli = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let out = Command::new(airlock)
            .args([
                "approvals",
                "list",
                "--json",
                "--limit",
                &pending.to_string(),
                "--config",
            ])
            .arg(&config)
            .output()
            .unwrap();
        cli.push(t.elapsed());
        assert!(out.status.success());
        let listed: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(listed.len(), pending);
    }
    println!(
        "list {pending} pending, ApprovalStore::list (ms, 5 runs): {}",
        stats(&mut lib)
    );
    println!(
        "list {pending} pending, `airlock approvals list --json` (ms, 5 runs): {}",
        stats(&mut cli)
    );
}

fn stats(v: &mut [Duration]) -> String {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let at = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    format!(
        "p50 {:.1}  p99 {:.1}  max {:.1}",
        ms(at(0.5)),
        ms(at(0.99)),
        ms(at(1.0))
    )
}
