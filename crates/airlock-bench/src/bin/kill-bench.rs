//! `kill-bench`: kill latency of `airlock kill` with many agents active.
//!
//! Starts `--agents` `airlock run` gateways (default 50), each wrapping a real upstream (the
//! test recorder, which forks a SIGTERM-ignoring child, so the upstream is a process tree) with
//! one call in flight that the server sits on. Then `--kills` times (default 100), round-robin
//! over the agents: runs `airlock kill --agent <a>` as a subprocess and measures, from the
//! moment it is started, until (1) the agent has received the in-flight call's error and (2)
//! every process of the upstream's tree is gone (polled in /proc). Then it resumes the agent,
//! restarts its gateway with a new call in flight, and goes on. Prints p50/p99/max and writes
//! the samples as JSON with `--out`.
//!
//! By default the recorder runs with `sandbox = "off"` and reports its tree's host pids itself.
//! With `--sandboxed` it runs in Airlock's default sandbox, as real deployments do (as `nobody`
//! when the bench runs as root): its own pids are those of its PID namespace, so the bench takes
//! the upstream's tree to be every descendant of the gateway process (from
//! `/proc/<pid>/task/*/children`, once the call reached the server), sandbox helpers included.
//!
//! Meanwhile `--busy` more agents (default 10, never killed) keep calling the recorder's `echo`,
//! each at `--busy-rate` calls a second (default 50), so the audit database is being written to
//! (decisions folded into the chain, results) while the kills happen, as on a working host. The
//! calls they completed are reported.
//!
//! `kill-bench --airlock target/release/airlock [--sandboxed] [--agents 50] [--kills 100]
//! [--busy 10] [--busy-rate 50] [--out k.json]`

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const TOKEN: &str = "alt_kill_bench_token";
/// The longest any one step may take before the bench gives up (it is bounded, never a hang).
const STEP_LIMIT: Duration = Duration::from_secs(20);

struct Args {
    airlock: PathBuf,
    recorder: PathBuf,
    agents: usize,
    kills: usize,
    out: Option<PathBuf>,
    /// The recorder in the default sandbox rather than `sandbox = "off"`.
    sandboxed: bool,
    /// Agents calling `echo` throughout, never killed.
    busy: usize,
    /// Calls a second of each busy agent.
    busy_rate: u32,
}

/// The busy agents' drivers: a flag to stop them and the calls they completed.
struct Busy {
    stop: Arc<AtomicBool>,
    calls: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
    started: Instant,
}

/// One running gateway of agent `bench-<n>` and what the bench knows about it.
struct Gateway {
    child: Child,
    stdin: Option<ChildStdin>,
    /// Lines from the gateway's stdout, with the time each arrived.
    lines: mpsc::Receiver<(Instant, String)>,
    /// The upstream's host pids: the server and the child it forked (and, sandboxed, the
    /// sandbox's own processes).
    pids: Vec<i32>,
}

/// Reads one measurement of a sample.
type Metric = fn(&Sample) -> f64;

/// One kill, in ms from the start of `airlock kill`.
struct Sample {
    error_ms: f64,
    tree_ms: f64,
    command_ms: f64,
    total_ms: f64,
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let dir = tempfile::tempdir()?;
    let config = write_config(dir.path(), args.agents, args.busy, args.sandboxed)?;
    eprintln!("kill-bench: starting {} gateways", args.agents);
    let mut gateways = Vec::new();
    for n in 0..args.agents {
        gateways.push(start(&args, dir.path(), &config, n, 0)?);
    }
    if let Some(g) = gateways.first() {
        eprintln!(
            "kill-bench: an upstream tree is {} host processes",
            g.pids.len()
        );
    }
    let busy = start_busy(&args, dir.path(), &config)?;
    let mut samples = Vec::new();
    // Seconds spent between kills: resuming, starting the next gateway, stopping the old one.
    let mut between = [0.0f64; 3];
    for k in 0..args.kills {
        let n = k % args.agents;
        samples.push(kill_one(&args, &config, &mut gateways[n], n)?);
        let t = Instant::now();
        resume(&args, &config, n)?;
        between[0] += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let next = start(&args, dir.path(), &config, n, k + 1)?;
        between[1] += t.elapsed().as_secs_f64();
        let t = Instant::now();
        stop(std::mem::replace(&mut gateways[n], next));
        between[2] += t.elapsed().as_secs_f64();
    }
    let per = |s: f64| s * 1e3 / args.kills.max(1) as f64;
    eprintln!(
        "kill-bench: between kills, ms each: resume {:.0}, start the next gateway {:.0}, \
         stop the killed one {:.0}",
        per(between[0]),
        per(between[1]),
        per(between[2])
    );
    let busy_calls = stop_busy(busy);
    // The floor: an `airlock kill` that starts, loads the config and is refused at the token.
    let mut floor = Vec::new();
    for _ in 0..20 {
        let t0 = Instant::now();
        let out = control(&args, &config, &["kill", "--agent", "bench-0"])
            .env("AIRLOCK_TOKEN", "alt_wrong")
            .output()?;
        if out.status.code() != Some(2) {
            bail!("a kill with a wrong token did not fail as expected");
        }
        floor.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    // All at once: each waits out the MCP shutdown sequence for an upstream that sits on a call.
    for g in &mut gateways {
        g.stdin.take();
    }
    for g in gateways {
        stop(g);
    }
    report(&args, &samples, &mut floor, busy_calls)
}

fn parse_args() -> Result<Args> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut a = Args {
        airlock: std::env::current_exe()?.with_file_name("airlock"),
        recorder: root.join("tests/fixtures/recorder.py"),
        agents: 50,
        kills: 100,
        out: None,
        sandboxed: false,
        busy: 10,
        busy_rate: 50,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--airlock" => a.airlock = value()?.into(),
            "--recorder" => a.recorder = value()?.into(),
            "--agents" => a.agents = value()?.parse()?,
            "--kills" => a.kills = value()?.parse()?,
            "--out" => a.out = Some(value()?.into()),
            "--sandboxed" => a.sandboxed = true,
            "--busy" => a.busy = value()?.parse()?,
            "--busy-rate" => a.busy_rate = value()?.parse()?,
            other => bail!("unknown argument {other}"),
        }
    }
    if a.agents == 0 || a.agents > 200 || a.kills > 1000 || a.busy > 50 || a.busy_rate > 1000 {
        bail!(
            "--agents must be 1..=200, --kills at most 1000, --busy at most 50 and \
             --busy-rate at most 1000 (the bench is bounded)"
        );
    }
    Ok(a)
}

/// Unsandboxed, the recorder reports its tree's host pids itself and is killed as a process
/// group. Sandboxed (the default profile, as `nobody` when the bench runs as root), it may write
/// only `out/`, which everyone may write, in a directory everyone may cross but not list.
fn write_config(dir: &Path, agents: usize, busy: usize, sandboxed: bool) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(
        dir.join("policy.cedar"),
        "permit (principal, action == Action::\"call_tool\", resource == Tool::\"rec/slow\");\n\
         permit (principal, action == Action::\"call_tool\", resource == Tool::\"rec/echo\");\n",
    )?;
    let out = dir.join("out");
    std::fs::create_dir_all(&out)?;
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o777))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))?;
    let hash = hex::encode(Sha256::digest(TOKEN.as_bytes()));
    let server = if sandboxed {
        "[servers.rec]\n\n[sandbox.profiles.default]\nwrite = [\"out\"]\n\
         env = [\"PATH\", \"RECORDER_LOG\", \"RECORDER_PIDS\", \"RECORDER_FORK\", \"RECORDER_SLOW\"]\n"
    } else {
        "[servers.rec]\nsandbox = \"off\"\n\
         env = [\"RECORDER_LOG\", \"RECORDER_PIDS\", \"RECORDER_FORK\", \"RECORDER_SLOW\"]\n"
    };
    let mut text = format!(
        "[policy]\nfiles = [\"policy.cedar\"]\n\n[audit]\npath = \"audit.db\"\n\n\
         [humans.alice]\ntoken_sha256 = \"{hash}\"\n\n[tasks.bench]\ndescription = \"kill bench\"\n\n\
         {server}\n[breakers.defaults]\nenabled = false\n"
    );
    for n in 0..agents {
        text.push_str(&format!(
            "\n[agents.bench-{n}]\non_behalf_of = \"alice\"\ntask = \"bench\"\n"
        ));
    }
    for n in 0..busy {
        text.push_str(&format!(
            "\n[agents.busy-{n}]\non_behalf_of = \"alice\"\ntask = \"bench\"\n"
        ));
    }
    let path = dir.join("airlock.toml");
    std::fs::write(&path, text)?;
    Ok(path)
}

/// `airlock run` of `agent` in `session` around the recorder, its stdin and stdout piped.
fn gateway(args: &Args, config: &Path, agent: &str, session: &str) -> Command {
    let mut c = Command::new(&args.airlock);
    c.args(["run", "--config"])
        .arg(config)
        .args(["--agent", agent, "--session", session, "--", "python3"])
        .arg(&args.recorder)
        .env("AIRLOCK_LOG", "error")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    c
}

/// Starts agent `n`'s gateway and puts one call in flight that the server sits on.
fn start(args: &Args, dir: &Path, config: &Path, n: usize, round: usize) -> Result<Gateway> {
    let pids_file = dir.join(format!("out/pids-{n}-{round}"));
    let log = dir.join(format!("out/log-{n}-{round}"));
    let mut child = gateway(
        args,
        config,
        &format!("bench-{n}"),
        &format!("s-{n}-{round}"),
    )
    .env("RECORDER_LOG", &log)
    .env("RECORDER_PIDS", &pids_file)
    .env("RECORDER_FORK", "1")
    .env("RECORDER_SLOW", "3600")
    .spawn()
    .with_context(|| format!("cannot start {}", args.airlock.display()))?;
    let stdin = child.stdin.take();
    let stdout = child.stdout.take().context("no stdout")?;
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });
    let mut g = Gateway {
        child,
        stdin,
        lines,
        pids: Vec::new(),
    };
    let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                      "params": {"name": "slow", "arguments": {}}});
    let stdin = g.stdin.as_mut().context("no stdin")?;
    writeln!(stdin, "{call}")?;
    stdin.flush()?;
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(&pids_file).unwrap_or_default();
        g.pids = text
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        let received = std::fs::read_to_string(&log).unwrap_or_default();
        if g.pids.len() == 2 && received.contains("\"slow\"") {
            if args.sandboxed {
                // Namespace pids: the host's are the gateway's descendants.
                g.pids = descendants(g.child.id());
                if g.pids.len() < 2 {
                    bail!(
                        "gateway {n}: its sandboxed upstream has {} processes",
                        g.pids.len()
                    );
                }
            }
            return Ok(g);
        }
        if started.elapsed() > STEP_LIMIT {
            bail!("gateway {n} did not get its call to the server");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Starts the busy agents: a gateway each, driven by a thread that calls `echo`, waits for its
/// answer and paces itself to `--busy-rate`.
fn start_busy(args: &Args, dir: &Path, config: &Path) -> Result<Busy> {
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicU64::new(0));
    // Busy agents that have had a call answered.
    let up = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    let pause = Duration::from_secs(1) / args.busy_rate.max(1);
    for n in 0..args.busy {
        let agent = format!("busy-{n}");
        let mut child = gateway(args, config, &agent, &agent)
            .env("RECORDER_LOG", dir.join(format!("out/{agent}")))
            .spawn()
            .with_context(|| format!("cannot start {}", args.airlock.display()))?;
        let mut stdin = child.stdin.take().context("no stdin")?;
        let mut lines = BufReader::new(child.stdout.take().context("no stdout")?).lines();
        let (stop, calls, up) = (stop.clone(), calls.clone(), up.clone());
        threads.push(std::thread::spawn(move || {
            let mut id = 0u64;
            while !stop.load(Ordering::Relaxed) {
                id += 1;
                let call = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                                  "params": {"name": "echo", "arguments": {"n": id}}});
                if writeln!(stdin, "{call}")
                    .and_then(|()| stdin.flush())
                    .is_err()
                {
                    break;
                }
                match lines.next() {
                    Some(Ok(line)) if line.contains("\"result\"") => {
                        calls.fetch_add(1, Ordering::Relaxed);
                        if id == 1 {
                            up.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    _ => break,
                }
                std::thread::sleep(pause);
            }
            drop(stdin);
            let _ = child.wait();
        }));
    }
    // The kills start once every busy agent is up and calling, not while they start.
    let started = Instant::now();
    while up.load(Ordering::Relaxed) < args.busy as u64 {
        if started.elapsed() > STEP_LIMIT {
            bail!("the busy agents did not all answer a call");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(Busy {
        stop,
        calls,
        threads,
        started: Instant::now(),
    })
}

/// Stops the busy agents (their gateways exit when their stdin closes); returns the calls they
/// had answered and the seconds they ran.
fn stop_busy(busy: Busy) -> (u64, f64) {
    let secs = busy.started.elapsed().as_secs_f64();
    busy.stop.store(true, Ordering::Relaxed);
    for t in busy.threads {
        let _ = t.join();
    }
    (busy.calls.load(Ordering::Relaxed), secs)
}

fn kill_one(args: &Args, config: &Path, g: &mut Gateway, n: usize) -> Result<Sample> {
    let t0 = Instant::now();
    let mut cmd = control(args, config, &["kill", "--agent", &format!("bench-{n}")])
        .args(["--reason", "kill-bench"])
        .spawn()?;
    let (mut error_at, mut tree_at, mut command_at) = (None, None, None);
    while error_at.is_none() || tree_at.is_none() || command_at.is_none() {
        if t0.elapsed() > STEP_LIMIT {
            bail!("kill {n}: not done in {STEP_LIMIT:?}");
        }
        if command_at.is_none() {
            if let Some(status) = cmd.try_wait()? {
                if !status.success() {
                    bail!("airlock kill failed: {status}");
                }
                command_at = Some(t0.elapsed());
            }
        }
        if error_at.is_none() {
            if let Ok((at, line)) = g.lines.try_recv() {
                let v: Value = serde_json::from_str(&line)?;
                if v["id"] == json!(1) && v.get("error").is_some() {
                    error_at = Some(at.duration_since(t0));
                }
            }
        }
        if tree_at.is_none() && g.pids.iter().all(|p| !running(*p)) {
            tree_at = Some(t0.elapsed());
        }
        // The error's time is stamped by the reader thread; the poll's resolution only
        // bounds the tree's, and a short sleep leaves the cores to the gateways.
        std::thread::sleep(Duration::from_micros(200));
    }
    let ms = |d: Option<Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64() * 1e3);
    let (error_ms, tree_ms) = (ms(error_at), ms(tree_at));
    Ok(Sample {
        error_ms,
        tree_ms,
        command_ms: ms(command_at),
        total_ms: error_ms.max(tree_ms),
    })
}

fn resume(args: &Args, config: &Path, n: usize) -> Result<()> {
    let out = control(args, config, &["resume", "--agent", &format!("bench-{n}")]).output()?;
    if !out.status.success() {
        bail!(
            "airlock resume failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn control(args: &Args, config: &Path, what: &[&str]) -> Command {
    let mut c = Command::new(&args.airlock);
    c.args(what)
        .arg("--config")
        .arg(config)
        .args(["--as", "alice"])
        .env("AIRLOCK_TOKEN", TOKEN)
        .env("AIRLOCK_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

/// Closes the agent's side and waits (bounded) for the gateway to exit.
fn stop(mut g: Gateway) {
    g.stdin.take();
    let started = Instant::now();
    while started.elapsed() < STEP_LIMIT {
        if let Ok(Some(_)) = g.child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = g.child.kill();
    let _ = g.child.wait();
}

/// Every descendant of `pid`, from `/proc/<pid>/task/*/children` (children of every thread),
/// recursively.
fn descendants(pid: u32) -> Vec<i32> {
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let children =
                std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            for c in children
                .split_whitespace()
                .filter_map(|c| c.parse::<u32>().ok())
            {
                if let Ok(c32) = i32::try_from(c) {
                    if !out.contains(&c32) {
                        out.push(c32);
                        todo.push(c);
                    }
                }
            }
        }
    }
    out
}

/// A process that is gone or a zombie no longer runs anything.
fn running(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses, which may contain spaces.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_none_or(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

fn report(
    args: &Args,
    samples: &[Sample],
    floor: &mut [f64],
    (busy_calls, busy_secs): (u64, f64),
) -> Result<()> {
    let cols: [(&str, Metric); 4] = [
        ("error at the agent", |s| s.error_ms),
        ("upstream tree gone", |s| s.tree_ms),
        ("`airlock kill` exited", |s| s.command_ms),
        ("both (the kill latency)", |s| s.total_ms),
    ];
    println!(
        "{} kills, {} agents active with a call in flight, upstream {}; ms from the start of \
         `airlock kill`",
        samples.len(),
        args.agents,
        if args.sandboxed {
            "in the default sandbox"
        } else {
            "unsandboxed (sandbox = \"off\")"
        }
    );
    println!(
        "meanwhile {} more agents called `echo`: {busy_calls} calls answered in {busy_secs:.1} s \
         ({:.0} a second)",
        args.busy,
        busy_calls as f64 / busy_secs.max(1e-9)
    );
    println!("| measured until | p50 ms | p90 ms | p99 ms | max ms |");
    println!("|---|---:|---:|---:|---:|");
    let mut out = serde_json::Map::new();
    for (name, f) in cols {
        let mut v: Vec<f64> = samples.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        let p = |q: f64| percentile(&v, q);
        println!(
            "| {name} | {:.1} | {:.1} | {:.1} | {:.1} |",
            p(0.5),
            p(0.9),
            p(0.99),
            v.last().copied().unwrap_or(f64::NAN)
        );
        out.insert(name.to_owned(), json!(v));
    }
    floor.sort_by(f64::total_cmp);
    println!(
        "floor: `airlock kill` refused at the token (start, config, exit), {} runs: \
         p50 {:.1} ms, max {:.1} ms",
        floor.len(),
        percentile(floor, 0.5),
        floor.last().copied().unwrap_or(f64::NAN)
    );
    out.insert("floor".to_owned(), json!(floor));
    // In the order the kills ran, to tell where a slow one's time went.
    let each: Vec<Value> = samples
        .iter()
        .map(|s| json!({"error_ms": s.error_ms, "tree_ms": s.tree_ms, "command_ms": s.command_ms}))
        .collect();
    out.insert("kills".to_owned(), json!(each));
    out.insert("busy_calls".to_owned(), json!(busy_calls));
    out.insert("busy_secs".to_owned(), json!(busy_secs));
    if let Some(path) = &args.out {
        std::fs::write(path, serde_json::to_vec_pretty(&Value::Object(out))?)?;
    }
    Ok(())
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}
