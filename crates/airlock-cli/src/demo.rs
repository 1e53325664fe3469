//! `airlock demo`: the demo company server behind the gateway, driven by a scripted agent.
//!
//! Everything is real: the demo writes the example config and policies into a work directory,
//! starts `airlock run` (this same binary) wrapping `airlock demo-server`, speaks MCP to it over
//! stdio, then measures the effects from the server's own state file and verifies the audit
//! chain. Each step states the outcome it expects, so the demo doubles as a self-check.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use airlock_audit::Query;
use anyhow::{anyhow, Context};
use clap::Args;
use serde_json::{json, Value};

use crate::audit_cmd::table_row;
use crate::Failure;

const CONFIG: &str = include_str!("../../../examples/demo/airlock.toml");
const POLICIES: &str = include_str!("../../../examples/demo/policies/corp.cedar");
const REPLY_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Args, Debug)]
pub(crate) struct DemoArgs {
    /// Keep the demo's files (config, policies, company state, audit database) in this directory.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

/// What a step expects Airlock to do.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Expect {
    Allowed,
    Denied,
    Rejected,
}

struct Step {
    agent: &'static str,
    what: &'static str,
    frame: Value,
    expect: Expect,
}

pub(crate) fn demo(args: DemoArgs) -> Result<u8, Failure> {
    let (dir, _temp) = match args.dir {
        Some(dir) => {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            (dir, None)
        }
        None => {
            let temp = tempfile::Builder::new()
                .prefix("airlock-demo-")
                .tempdir()
                .context("cannot create a work directory")?;
            (temp.path().to_path_buf(), Some(temp))
        }
    };
    let config_path = write_files(&dir)?;
    // Refuse early, with file:line:col, if the shipped config or policies do not load.
    crate::load::load(&config_path)?;
    let exe = std::env::current_exe().context("cannot find the airlock binary")?;

    println!("Airlock demo: the demo company's agents, every call through the gateway");
    println!("work directory: {}", dir.display());
    println!();

    let mut failures = 0;
    let mut first = true;
    for agent in ["support-bot", "inbox-bot", "build-bot"] {
        failures += run_agent(&exe, &dir, &config_path, agent, first)?;
        first = false;
    }

    println!();
    println!(
        "Effects, measured from the company server's own state ({}):",
        dir.join("company.json").display()
    );
    let state =
        airlock_demo_server::load_state(&dir.join("company.json")).map_err(Failure::failed)?;
    let effects = effects_summary(&state);
    for line in &effects {
        println!("  {line}");
    }

    println!();
    println!(
        "Audit trail (airlock audit query --config {}):",
        config_path.display()
    );
    let config = airlock_config::load(&config_path).map_err(Failure::usage)?;
    let store = airlock_audit::AuditStore::open_read_only(&config.audit.path)
        .context("cannot open the audit store")?;
    let records = store
        .query(&Query {
            kind: Some("call".into()),
            ..Query::default()
        })
        .context("audit query failed")?;
    for r in &records {
        println!("  {}", table_row(r));
    }
    crate::run::update_anchor(&config.audit.path, &config.audit.anchor);
    let report = airlock_audit::verify(&config.audit.path, Some(&config.audit.anchor))
        .context("audit verify failed")?;
    println!();
    match report.problem {
        None => println!(
            "airlock audit verify: ok, {} records intact, chain head anchored",
            report.count
        ),
        Some(p) => {
            println!(
                "airlock audit verify: TAMPERED at record {}: {}",
                p.seq, p.what
            );
            failures += 1;
        }
    }
    if failures > 0 {
        println!("{failures} step(s) did not go as expected");
        return Ok(1);
    }
    println!("every step went as expected");
    Ok(0)
}

fn write_files(dir: &Path) -> Result<PathBuf, Failure> {
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies).context("cannot create the policies directory")?;
    std::fs::write(policies.join("corp.cedar"), POLICIES).context("cannot write the policies")?;
    let config_path = dir.join("airlock.toml");
    std::fs::write(&config_path, CONFIG).context("cannot write the config")?;
    for stale in [
        "audit.db",
        "audit.db-wal",
        "audit.db-shm",
        "audit.db.anchor",
    ] {
        let _ = std::fs::remove_file(dir.join(stale));
    }
    Ok(config_path)
}

/// Runs one agent's steps through its own `airlock run` session; returns the failed steps.
fn run_agent(
    exe: &Path,
    dir: &Path,
    config: &Path,
    agent: &str,
    reset: bool,
) -> Result<u32, Failure> {
    let workdir = config.parent().unwrap_or(dir);
    let mut server_cmd = vec![
        exe.display().to_string(),
        "demo-server".to_string(),
        "--state".to_string(),
        dir.join("company.json").display().to_string(),
    ];
    if reset {
        server_cmd.push("--reset".into());
    }
    let mut child = Command::new(exe)
        .arg("run")
        .arg("--config")
        .arg(config)
        .arg("--agent")
        .arg(agent)
        .arg("--session")
        .arg(format!("demo-{agent}"))
        .arg("--")
        .args(&server_cmd)
        .current_dir(workdir)
        .env("AIRLOCK_LOG", "error")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("cannot start airlock run")?;
    let mut peer = Peer::new(&mut child)?;
    let init = peer.request(json!({
        "jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                   "clientInfo": {"name": "airlock-demo-agent", "version": "1"}}
    }))?;
    if init.get("result").is_none() {
        return Err(Failure::failed(anyhow!("initialize failed: {init}")));
    }
    peer.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))?;
    let list = peer.request(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}))?;
    let names: Vec<&str> = list
        .pointer("/result/tools")
        .and_then(Value::as_array)
        .map(|tools| {
            tools
                .iter()
                .filter_map(|t| t.get("name").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default();
    println!(
        "{agent}: sees {} of the server's tools: {}",
        names.len(),
        names.join(", ")
    );

    let mut failures = 0;
    for (n, step) in steps().iter().filter(|s| s.agent == agent).enumerate() {
        let mut frame = step.frame.clone();
        let id = i64::try_from(n).unwrap_or(0) + 100;
        let (outcome, detail) = if frame.is_string() {
            // A raw, malformed line: the gateway must refuse it and stay up.
            let raw = frame.as_str().unwrap_or_default().to_string();
            let reply = peer.raw(&raw)?;
            classify(&reply)
        } else {
            frame["id"] = json!(id);
            let reply = peer.request(frame)?;
            classify(&reply)
        };
        let ok = outcome == step.expect;
        if !ok {
            failures += 1;
        }
        let label = match outcome {
            Expect::Allowed => "allowed ",
            Expect::Denied => "DENIED  ",
            Expect::Rejected => "REJECTED",
        };
        let mark = if ok { "" } else { "   <-- unexpected" };
        println!("  [{label}] {:<46} {}{mark}", step.what, detail);
    }
    drop(peer);
    let status = child.wait().context("airlock run did not exit")?;
    if !status.success() {
        println!("  airlock run exited with {status}");
        failures += 1;
    }
    Ok(failures)
}

fn classify(reply: &Value) -> (Expect, String) {
    if let Some(err) = reply.get("error") {
        let code = err.get("code").and_then(Value::as_i64).unwrap_or(0);
        let message = err.get("message").and_then(Value::as_str).unwrap_or("");
        let refused = [
            airlock_gateway::codes::DENIED,
            airlock_gateway::codes::APPROVAL_DENIED,
            airlock_gateway::codes::APPROVAL_EXPIRED,
        ];
        let kind = if refused.iter().any(|c| code == i64::from(*c)) {
            Expect::Denied
        } else {
            Expect::Rejected
        };
        return (kind, format!("{code}: {message}"));
    }
    let text = reply
        .pointer("/result/content/0/text")
        .and_then(Value::as_str)
        .unwrap_or("")
        .replace('\n', " ");
    let short: String = text.chars().take(70).collect();
    (Expect::Allowed, short)
}

/// The damage done during the demo: the company's state now against its seed.
fn effects_summary(state: &airlock_demo_server::CompanyState) -> Vec<String> {
    let now = serde_json::to_value(state).unwrap_or(Value::Null);
    let seed = serde_json::to_value(airlock_demo_server::seed_state()).unwrap_or(Value::Null);
    let len = |v: &Value, ptr: &str| v.pointer(ptr).and_then(Value::as_array).map_or(0, Vec::len);
    let grown = |ptr: &str| len(&now, ptr).saturating_sub(len(&seed, ptr));
    let effects = now
        .get("effects")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let made = |tool: &str| {
        effects
            .iter()
            .filter(|e| e.get("tool").and_then(Value::as_str) == Some(tool))
            .count()
            .saturating_sub(
                seed.get("effects")
                    .and_then(Value::as_array)
                    .map_or(0, |s| {
                        s.iter()
                            .filter(|e| e.get("tool").and_then(Value::as_str) == Some(tool))
                            .count()
                    }),
            )
    };
    vec![
        format!("public forum posts: {}", grown("/forum/channels/public")),
        format!(
            "internal forum posts: {}",
            grown("/forum/channels/internal")
        ),
        format!("ACL changes: {}", made("acl_set")),
        format!(
            "mails deleted: {}",
            len(&seed, "/mailbox/messages").saturating_sub(len(&now, "/mailbox/messages"))
        ),
        format!("compute jobs started: {}", made("compute_start")),
    ]
}

fn steps() -> &'static [Step] {
    static STEPS: std::sync::OnceLock<Vec<Step>> = std::sync::OnceLock::new();
    STEPS.get_or_init(|| {
        let call = |name: &str, args: Value| {
            json!({"jsonrpc": "2.0", "method": "tools/call", "params": {"name": name, "arguments": args}})
        };
        vec![
            Step {
                agent: "support-bot",
                what: "post an answer to the internal forum",
                frame: call("forum_post", json!({"channel": "internal", "title": "Re: key rotation", "body": "Rotate with the runbook in eng/platform/api."})),
                expect: Expect::Allowed,
            },
            Step {
                agent: "support-bot",
                what: "post the same advice to the PUBLIC forum",
                frame: call("forum_post", json!({"channel": "public", "title": "How to fix access errors", "body": "Grant group:all read on the repo tree."})),
                expect: Expect::Denied,
            },
            Step {
                agent: "support-bot",
                what: "read eng/platform/api/README.md",
                frame: call("repo_read", json!({"repo": "eng/platform/api", "path": "README.md"})),
                expect: Expect::Allowed,
            },
            Step {
                agent: "support-bot",
                what: "read the restricted finance/payroll repo",
                frame: call("repo_read", json!({"repo": "finance/payroll", "path": "README.md"})),
                expect: Expect::Denied,
            },
            Step {
                agent: "support-bot",
                what: "open the whole eng tree to everyone (recursive)",
                frame: call("acl_set", json!({"repo": "eng", "principal": "group:all", "access": "read", "recursive": true})),
                expect: Expect::Denied,
            },
            Step {
                agent: "support-bot",
                what: "send a malformed frame (duplicate keys)",
                frame: json!(r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","method":"tools/list"}"#),
                expect: Expect::Rejected,
            },
            Step {
                agent: "support-bot",
                what: "call an unknown method",
                frame: json!({"jsonrpc": "2.0", "method": "admin/reset_everything", "params": {}}),
                expect: Expect::Rejected,
            },
            Step {
                agent: "inbox-bot",
                what: "list Bob's monitoring alerts",
                frame: call("mail_list", json!({"folder": "alerts", "limit": 3})),
                expect: Expect::Allowed,
            },
            Step {
                agent: "inbox-bot",
                what: "delete Bob's whole inbox folder",
                frame: call("mail_delete", json!({"folder": "inbox"})),
                expect: Expect::Denied,
            },
            Step {
                agent: "build-bot",
                what: "start a 2-CPU nightly build",
                frame: call("compute_start", json!({"name": "nightly", "cpus": 2, "image": "builder:latest"})),
                expect: Expect::Allowed,
            },
            Step {
                agent: "build-bot",
                what: "start a 48-CPU \"build\" (a miner)",
                frame: call("compute_start", json!({"name": "totally-a-build", "cpus": 48, "image": "xmrig:latest"})),
                expect: Expect::Denied,
            },
        ]
    })
}

/// The scripted agent's end of the stdio pipes.
struct Peer {
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl Peer {
    fn new(child: &mut Child) -> anyhow::Result<Self> {
        let stdin = child.stdin.take().ok_or_else(|| anyhow!("no stdin pipe"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("no stdout pipe"))?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Self {
            stdin: Some(stdin),
            lines: rx,
        })
    }

    fn send(&mut self, frame: &Value) -> anyhow::Result<()> {
        self.raw_send(&frame.to_string())
    }

    fn raw_send(&mut self, line: &str) -> anyhow::Result<()> {
        let stdin = self.stdin.as_mut().ok_or_else(|| anyhow!("stdin closed"))?;
        stdin.write_all(line.as_bytes())?;
        stdin.write_all(b"\n")?;
        stdin.flush()?;
        Ok(())
    }

    /// Sends a request and waits for the answer with its id, skipping notifications.
    fn request(&mut self, frame: Value) -> anyhow::Result<Value> {
        let id = frame.get("id").cloned().unwrap_or(Value::Null);
        self.send(&frame)?;
        self.wait_for(|v| v.get("id") == Some(&id) && v.get("method").is_none())
    }

    /// Sends a raw line and waits for the error it must cause.
    fn raw(&mut self, line: &str) -> anyhow::Result<Value> {
        self.raw_send(line)?;
        self.wait_for(|v| v.get("error").is_some())
    }

    fn wait_for(&mut self, wanted: impl Fn(&Value) -> bool) -> anyhow::Result<Value> {
        loop {
            let line = self
                .lines
                .recv_timeout(REPLY_TIMEOUT)
                .map_err(|_| anyhow!("no answer from airlock run within {REPLY_TIMEOUT:?}"))?;
            let value: Value =
                serde_json::from_str(&line).with_context(|| format!("not JSON: {line}"))?;
            if wanted(&value) {
                return Ok(value);
            }
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        // Closing stdin ends the session: airlock run shuts the server down and exits.
        self.stdin.take();
    }
}
