//! What the sandbox costs: `airlock run` with its upstream in the sandbox profile against the
//! same `airlock run` with `sandbox = "off"`, in one run, interleaved.
//!
//! - **start-up**: spawn of `airlock run` to the answer of `initialize` (the server is up and
//!   speaking), `--starts` times per variant, alternating;
//! - **call latency**: `--calls` round trips of one tool per variant, both sessions open at
//!   once, in `--rounds` interleaved rounds;
//! - **sandbox set-up alone**: `airlock exec -- /bin/true` in the default profile against a
//!   profile with every layer off.
//!
//! ```text
//! sandbox-bench --airlock target/release/airlock --server "node …/index.js stdio" \
//!     --read tests/node/node_modules [--tool echo --args '{"message":"hi"}'] \
//!     [--starts 20 --calls 1000 --rounds 4]
//! ```

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use airlock_bench::{split_command, Conn, Stats};
use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

fn main() -> std::process::ExitCode {
    match real_main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sandbox-bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

struct Args {
    airlock: PathBuf,
    server: Vec<String>,
    read: Vec<String>,
    tool: String,
    args: Value,
    starts: usize,
    calls: usize,
    rounds: usize,
}

fn parse() -> Result<Args> {
    let mut a = Args {
        airlock: PathBuf::from("target/release/airlock"),
        server: Vec::new(),
        read: Vec::new(),
        tool: "echo".into(),
        args: serde_json::json!({"message": "hi"}),
        starts: 20,
        calls: 1000,
        rounds: 4,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| anyhow!("{flag} needs a value"))?;
        match flag.as_str() {
            "--airlock" => a.airlock = value.into(),
            "--server" => a.server = split_command(&value)?,
            "--read" => a.read.push(value),
            "--tool" => a.tool = value,
            "--args" => a.args = serde_json::from_str(&value).context("--args")?,
            "--starts" => a.starts = value.parse().context("--starts")?,
            "--calls" => a.calls = value.parse().context("--calls")?,
            "--rounds" => a.rounds = value.parse().context("--rounds")?,
            other => bail!("unknown flag {other}"),
        }
    }
    if a.server.is_empty() {
        bail!("--server CMD is required");
    }
    a.rounds = a.rounds.max(1);
    Ok(a)
}

/// Writes the config: one agent, two servers (the same command), one sandboxed in the
/// default profile, one with `sandbox = "off"`.
fn write_config(dir: &Path, tool: &str, read: &[String]) -> Result<PathBuf> {
    let read: Vec<String> = read
        .iter()
        .map(|r| std::fs::canonicalize(r).map(|p| format!("{:?}", p.display().to_string())))
        .collect::<Result<_, _>>()
        .context("--read")?;
    let config = dir.join("airlock.toml");
    std::fs::write(
        &config,
        format!(
            "[policy]\nfiles = [\"policy.cedar\"]\n[audit]\npath = \"audit.db\"\n\
             [humans.alice]\n[tasks.bench]\ndescription = \"bench\"\n\
             [agents.bench]\non_behalf_of = \"alice\"\ntask = \"bench\"\n\
             [servers.boxed]\n[servers.bare]\nsandbox = \"off\"\n\
             [sandbox.profiles.default]\nread = [{}]\n\
             [sandbox.profiles.none]\n\
             off = [\"namespaces\", \"network\", \"landlock\", \"seccomp\", \"rlimits\"]\n\
             [breakers.defaults]\nenabled = false\n",
            read.join(", ")
        ),
    )?;
    std::fs::write(
        dir.join("policy.cedar"),
        format!(
            "permit(principal, action == Action::\"call_tool\", resource == Tool::\"boxed/{tool}\");\n\
             permit(principal, action == Action::\"call_tool\", resource == Tool::\"bare/{tool}\");\n"
        ),
    )?;
    Ok(config)
}

fn argv(a: &Args, config: &Path, server: &str) -> Vec<String> {
    let mut v = vec![
        a.airlock.display().to_string(),
        "run".into(),
        "--config".into(),
        config.display().to_string(),
        "--agent".into(),
        "bench".into(),
        "--server".into(),
        server.into(),
        "--".into(),
    ];
    v.extend(a.server.iter().cloned());
    v
}

fn real_main() -> Result<()> {
    let a = parse()?;
    if !a.airlock.exists() {
        bail!("--airlock {}: no such file", a.airlock.display());
    }
    let work = tempfile::tempdir()?;
    let config = write_config(work.path(), &a.tool, &a.read)?;
    let variants = ["bare", "boxed"];

    // Start-up, alternating so drift hits both alike.
    let mut starts: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    for i in 0..a.starts * 2 {
        let v = i % 2;
        let t = Instant::now();
        let mut conn = Conn::spawn(variants[v], &argv(&a, &config, variants[v]))?;
        conn.initialize()
            .with_context(|| format!("{}: {}", variants[v], conn.stderr_tail()))?;
        starts[v].push(t.elapsed());
        conn.shutdown();
    }

    // Call latency: both sessions open, interleaved rounds.
    let mut conns = Vec::new();
    for v in variants {
        let mut c = Conn::spawn(v, &argv(&a, &config, v))?;
        c.initialize()?;
        for _ in 0..a.calls.min(200) {
            c.call_tool(&a.tool, &a.args)?;
        }
        conns.push(c);
    }
    let mut calls: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    for round in 0..a.rounds {
        for k in 0..2 {
            let v = (round + k) % 2;
            for _ in 0..a.calls / a.rounds {
                let (rtt, _) = conns[v].call_tool(&a.tool, &a.args)?;
                calls[v].push(rtt);
            }
        }
    }
    for c in conns {
        c.shutdown();
    }

    // The sandbox's own set-up: a process that does nothing, with and without it.
    let exec_config = work.path().join("airlock.toml");
    let mut exec: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    for i in 0..a.starts * 2 {
        let v = i % 2;
        let mut cmd = Command::new(&a.airlock);
        cmd.arg("exec")
            .arg("--config")
            .arg(&exec_config)
            .args(["--profile", if v == 0 { "none" } else { "default" }])
            .args(["--", "/bin/true"]);
        let t = Instant::now();
        let status = cmd.stdout(Stdio::null()).stderr(Stdio::null()).status()?;
        exec[v].push(t.elapsed());
        if !status.success() {
            bail!("{cmd:?} failed: {status}");
        }
    }

    let stats = |s: &[Duration]| Stats::from_samples(s).ok_or_else(|| anyhow!("no samples"));
    let probe = Command::new(&a.airlock)
        .args(["sandbox", "probe"])
        .output()?;
    let caps = String::from_utf8_lossy(&probe.stdout)
        .lines()
        .find(|l| l.contains("cgroups"))
        .and_then(|l| l.split("in force: ").nth(1))
        .unwrap_or("?")
        .to_owned();
    println!(
        "server: `{}`; sandbox caps in force: {caps}",
        a.server.join(" ")
    );
    println!();
    println!(
        "| measure | n | sandbox off p50 | sandboxed p50 | added p50 | off p90 | sandboxed p90 |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (name, unit, pair) in [
        ("start-up to `initialize` answered", "ms", &starts),
        (
            "`airlock exec -- /bin/true`, default profile vs every layer off",
            "ms",
            &exec,
        ),
        ("call round trip", "µs", &calls),
    ] {
        let (off, on) = (stats(&pair[0])?, stats(&pair[1])?);
        let scale = if unit == "ms" { 1e-3 } else { 1.0 };
        println!(
            "| {name} | {} | {:.2} {unit} | {:.2} {unit} | {:+.2} {unit} | {:.2} {unit} | {:.2} {unit} |",
            off.n,
            off.p50 * scale,
            on.p50 * scale,
            (on.p50 - off.p50) * scale,
            off.p90 * scale,
            on.p90 * scale
        );
    }
    Ok(())
}
