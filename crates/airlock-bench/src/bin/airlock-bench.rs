//! `airlock-bench`: the hot-path benchmark of `airlock run`.
//!
//! * `latency` — the same MCP server reached three ways in one run: direct, through
//!   `bare-relay`, and through `airlock run` with policy and audit on. Sequential `tools/call`
//!   round trips, interleaved in rounds so drift (thermal, neighbours on the machine) hits
//!   every path alike; p50/p90/p99/mean per path, the latency each adds over direct, and the
//!   verdict against the targets (added p50 within 25 µs of the relay's, added p99 ≤ 2× the
//!   relay's).
//!   A fourth path, `baseline`, runs a second `airlock` binary (`--baseline PATH`) with the
//!   same config, to compare two builds in one run.
//! * `rss` — memory of an idle `airlock run` (the gateway process, not the server), after
//!   start-up and again after a burst of calls, over several runs: private memory (`RssAnon`,
//!   the target) with VmRSS beside it, and what the sandbox's helper processes add.
//!
//! A bench binary, never a timed test: run it from `scripts/bench.sh` or by hand.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use airlock_bench::{
    read_memory, split_command, unexeced_forks, Conn, Flags, Memory, Spread, Stats,
};
use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

/// Airlock's added p50 may exceed the relay's by at most this much (µs).
const P50_BUDGET_US: f64 = 25.0;
/// Airlock's added p99 may be at most this multiple of the relay's.
const P99_FACTOR: f64 = 2.0;
/// The target of `airlock run`'s private memory (`RssAnon`), idle and after the calls (KiB).
/// VmRSS is reported beside it, not targeted: the rest of it is clean pages of the binary
/// and the libraries, which the kernel shares between processes and drops at will.
const RSS_ANON_TARGET_KIB: u64 = 4 * 1024;

const USAGE: &str = "\
usage:
  airlock-bench latency --server \"CMD ARGS\" --tool NAME [--args JSON]
                        [--calls N=2000] [--warmup W=200] [--rounds R=4]
                        [--paths direct,relay,airlock[,baseline]] [--relay PATH]
                        [--airlock PATH --config FILE --agent ID [--server-name NAME]]
                        [--baseline PATH] [--json OUT]
  airlock-bench rss --airlock PATH --config FILE --agent ID --server \"CMD ARGS\"
                    [--server-name NAME] [--tool NAME [--args JSON] [--calls N=500]]
                    [--runs N=5] [--json OUT]";

fn main() -> std::process::ExitCode {
    match real_main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("airlock-bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn real_main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let sub = args.next().ok_or_else(|| anyhow!("{USAGE}"))?;
    let flags = Flags::parse(args, USAGE)?;
    match sub.as_str() {
        "latency" => latency(&flags),
        "rss" => rss(&flags),
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            Ok(())
        }
        other => bail!("unknown subcommand {other:?}\n{USAGE}"),
    }
}

/// The argv of `airlock run … -- server`, for the binary given by flag `which`.
fn airlock_argv(flags: &Flags, which: &str, server: &[String]) -> Result<Vec<String>> {
    let airlock = flags.req(which)?;
    if !std::path::Path::new(airlock).exists() {
        bail!("--airlock {airlock}: no such file (build it, or pass --paths direct,relay)");
    }
    let mut argv = vec![
        airlock.to_owned(),
        "run".to_owned(),
        "--config".to_owned(),
        flags.req("config")?.to_owned(),
        "--agent".to_owned(),
        flags.req("agent")?.to_owned(),
    ];
    if let Some(name) = flags.get("server-name") {
        argv.extend(["--server".to_owned(), name.to_owned()]);
    }
    argv.push("--".to_owned());
    argv.extend(server.iter().cloned());
    Ok(argv)
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum PathKind {
    Direct,
    Relay,
    Airlock,
    Baseline,
}

impl PathKind {
    fn name(self) -> &'static str {
        match self {
            PathKind::Direct => "direct",
            PathKind::Relay => "relay",
            PathKind::Airlock => "airlock",
            PathKind::Baseline => "baseline",
        }
    }
}

fn latency(flags: &Flags) -> Result<()> {
    flags.check_known(&[
        "calls",
        "warmup",
        "rounds",
        "server",
        "tool",
        "args",
        "airlock",
        "config",
        "agent",
        "server-name",
        "relay",
        "json",
        "paths",
        "baseline",
    ])?;
    let calls = flags.num("calls", 2000)?;
    let warmup = flags.num("warmup", 200)?;
    let rounds = flags.num("rounds", 4)?.max(1);
    if calls == 0 {
        bail!("--calls must be at least 1");
    }
    let server = split_command(flags.req("server")?)?;
    let tool = flags.req("tool")?.to_owned();
    let tool_args: Value =
        serde_json::from_str(flags.get("args").unwrap_or("{}")).context("--args is not JSON")?;
    let mut paths = Vec::new();
    for p in flags
        .get("paths")
        .unwrap_or("direct,relay,airlock")
        .split(',')
    {
        let kind = match p.trim() {
            "direct" => PathKind::Direct,
            "relay" => PathKind::Relay,
            "airlock" => PathKind::Airlock,
            "baseline" => PathKind::Baseline,
            other => bail!("--paths: unknown path {other:?} (direct, relay, airlock, baseline)"),
        };
        if !paths.contains(&kind) {
            paths.push(kind);
        }
    }

    // Every path spawns the same server; the wrappers differ. All argvs are checked before
    // anything is spawned, so a bad flag fails fast.
    let mut argvs = Vec::new();
    for &kind in &paths {
        let argv = match kind {
            PathKind::Direct => server.clone(),
            PathKind::Relay => {
                let relay = match flags.get("relay") {
                    Some(r) => PathBuf::from(r),
                    None => sibling_exe("bare-relay")?,
                };
                if !relay.exists() {
                    bail!("relay {} does not exist (pass --relay)", relay.display());
                }
                let mut v = vec![relay.display().to_string(), "--".to_owned()];
                v.extend(server.iter().cloned());
                v
            }
            PathKind::Airlock => airlock_argv(flags, "airlock", &server)?,
            PathKind::Baseline => airlock_argv(flags, "baseline", &server)?,
        };
        argvs.push((kind, argv));
    }
    let mut conns: Vec<(PathKind, Conn)> = Vec::new();
    for (kind, argv) in argvs {
        let mut conn = Conn::spawn(kind.name(), &argv)?;
        conn.initialize()
            .with_context(|| format!("{}: initialize failed", kind.name()))?;
        conns.push((kind, conn));
    }

    eprintln!(
        "latency: {} calls of `{tool}` per path ({} rounds, {} warm-up), paths: {}",
        calls,
        rounds,
        warmup,
        paths
            .iter()
            .map(|p| p.name())
            .collect::<Vec<_>>()
            .join(", ")
    );
    for (_, conn) in conns.iter_mut() {
        for _ in 0..warmup {
            conn.call_tool(&tool, &tool_args)?;
        }
    }

    let started = Instant::now();
    let mut samples: Vec<Vec<Duration>> = vec![Vec::with_capacity(calls); conns.len()];
    for round in 0..rounds {
        // Spread the remainder over the first rounds so the total is exactly `calls`.
        let n = calls / rounds + usize::from(round < calls % rounds);
        // Rotate the starting path each round so no path always follows the same one.
        for k in 0..conns.len() {
            let i = (round + k) % conns.len();
            let (_, conn) = &mut conns[i];
            for _ in 0..n {
                let (rtt, _) = conn.call_tool(&tool, &tool_args)?;
                samples[i].push(rtt);
            }
        }
    }
    let wall = started.elapsed();
    for (_, conn) in conns {
        conn.shutdown();
    }

    let mut stats = Vec::new();
    for (i, &kind) in paths.iter().enumerate() {
        let s = Stats::from_samples(&samples[i]).ok_or_else(|| anyhow!("no samples"))?;
        stats.push((kind, s));
    }
    let find = |k: PathKind| stats.iter().find(|(p, _)| *p == k).map(|(_, s)| *s);
    let direct = find(PathKind::Direct);
    let added = |s: &Stats| direct.map(|d| (s.p50 - d.p50, s.p99 - d.p99));

    println!();
    println!(
        "server: `{}`, tool `{tool}`, {calls} calls per path in {rounds} interleaved rounds, {:.1} s",
        server.join(" "),
        wall.as_secs_f64()
    );
    println!();
    println!("| path | calls | p50 µs | p90 µs | p99 µs | mean µs | added p50 µs | added p99 µs |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (kind, s) in &stats {
        let (a50, a99) = match added(s) {
            Some((a, b)) if *kind != PathKind::Direct => (format!("{a:+.1}"), format!("{b:+.1}")),
            _ => ("—".to_owned(), "—".to_owned()),
        };
        println!(
            "| {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {a50} | {a99} |",
            kind.name(),
            s.n,
            s.p50,
            s.p90,
            s.p99,
            s.mean
        );
    }

    let verdict = match (find(PathKind::Relay), find(PathKind::Airlock), direct) {
        (Some(relay), Some(airlock), Some(_)) => {
            let (r50, r99) = added(&relay).unwrap_or_default();
            let (a50, a99) = added(&airlock).unwrap_or_default();
            let p50_gap = a50 - r50;
            let p50_ok = p50_gap <= P50_BUDGET_US;
            let p99_limit = P99_FACTOR * r99;
            let p99_ok = a99 <= p99_limit;
            println!();
            println!(
                "- p50: airlock adds {a50:.1} µs, the relay {r50:.1} µs: gap {p50_gap:+.1} µs \
                 (target ≤ {P50_BUDGET_US} µs) — {}",
                pass(p50_ok)
            );
            // Tails are dominated by the server's own pauses (GC, scheduler); when the relay
            // seems to add nothing at p99 the ratio means little, so say so.
            let p99_noisy = r99 <= 0.0;
            println!(
                "- p99: airlock adds {a99:.1} µs, the relay {r99:.1} µs: limit {p99_limit:.1} µs \
                 (≤ {P99_FACTOR}× relay) — {}{}",
                pass(p99_ok),
                if p99_noisy {
                    " (noisy: the relay's added p99 is not positive; rerun with more --calls)"
                } else {
                    ""
                }
            );
            Some(json!({
                "p50_gap_us": p50_gap, "p50_budget_us": P50_BUDGET_US, "p50_pass": p50_ok,
                "p99_added_us": a99, "p99_limit_us": p99_limit, "p99_pass": p99_ok,
                "p99_noisy": p99_noisy,
            }))
        }
        _ => {
            println!();
            println!("- verdict needs the direct, relay and airlock paths; not all were run");
            None
        }
    };
    if let (Some(relay), Some(base), Some(_)) =
        (find(PathKind::Relay), find(PathKind::Baseline), direct)
    {
        let (r50, _) = added(&relay).unwrap_or_default();
        let (b50, _) = added(&base).unwrap_or_default();
        println!(
            "- baseline: adds {b50:.1} µs at p50, gap to the relay {:+.1} µs",
            b50 - r50
        );
    }

    if let Some(out) = flags.get("json") {
        let mut per_path = serde_json::Map::new();
        for (kind, s) in &stats {
            let mut o = json!({
                "calls": s.n, "min_us": s.min, "p50_us": s.p50, "p90_us": s.p90,
                "p99_us": s.p99, "max_us": s.max, "mean_us": s.mean,
            });
            if let (Some((a50, a99)), true) = (added(s), *kind != PathKind::Direct) {
                o["added_p50_us"] = json!(a50);
                o["added_p99_us"] = json!(a99);
            }
            per_path.insert(kind.name().to_owned(), o);
        }
        let doc = json!({
            "server": server, "tool": tool, "args": tool_args,
            "calls": calls, "warmup": warmup, "rounds": rounds,
            "wall_s": wall.as_secs_f64(),
            "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "paths": per_path, "verdict": verdict,
        });
        std::fs::write(out, serde_json::to_vec_pretty(&doc)?)
            .with_context(|| format!("cannot write {out}"))?;
        eprintln!("wrote {out}");
    }
    Ok(())
}

fn pass(ok: bool) -> &'static str {
    if ok {
        "PASS"
    } else {
        "FAIL"
    }
}

/// A binary next to this one (cargo puts all of a crate's binaries in one directory).
fn sibling_exe(name: &str) -> Result<PathBuf> {
    let me = std::env::current_exe().context("cannot locate this executable")?;
    let dir = me
        .parent()
        .ok_or_else(|| anyhow!("{} has no parent directory", me.display()))?;
    Ok(dir.join(name))
}

/// One run of `rss`: the figures idle, and after the calls (if any).
struct RssRun {
    tools: usize,
    idle: RssFigures,
    after_calls: Option<RssFigures>,
}

/// The gateway's memory, and what its sandbox helpers add.
struct RssFigures {
    gateway: Memory,
    /// How many forks of the gateway that never exec'd run (a sandboxed server's supervisor
    /// and init).
    helpers: usize,
    /// Pss_Anon of the gateway and its helpers summed: the distinct anonymous pages of all
    /// of them, each page they still share counted once.
    pss_anon_with_helpers_kib: Option<u64>,
}

fn rss_figures(pid: u32) -> Result<RssFigures> {
    let gateway = read_memory(pid)?;
    let helpers = unexeced_forks(pid);
    let mut total = gateway.pss_anon_kib;
    for h in &helpers {
        // A helper that ended in between counts nothing.
        let pss = read_memory(*h)
            .ok()
            .and_then(|m| m.pss_anon_kib)
            .unwrap_or(0);
        total = total.map(|t| t + pss);
    }
    Ok(RssFigures {
        gateway,
        helpers: helpers.len(),
        pss_anon_with_helpers_kib: total,
    })
}

fn rss_run(flags: &Flags, argv: &[String]) -> Result<RssRun> {
    let mut conn = Conn::spawn("airlock", argv)?;
    conn.initialize().context("airlock: initialize failed")?;
    let (_, list) = conn.request("tools/list", json!({}))?;
    let tools = list
        .get("tools")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    // Let start-up transients (allocator trims, lazy loads) settle before reading.
    std::thread::sleep(Duration::from_millis(500));
    let idle = rss_figures(conn.pid())?;
    // Then serve a burst of calls and read again: what the call path needs is resident then.
    let after_calls = match flags.get("tool") {
        Some(tool) => {
            let args: Value = serde_json::from_str(flags.get("args").unwrap_or("{}"))
                .context("--args is not JSON")?;
            for _ in 0..flags.num("calls", 500)? {
                conn.call_tool(tool, &args)?;
            }
            std::thread::sleep(Duration::from_millis(500));
            Some(rss_figures(conn.pid())?)
        }
        None => None,
    };
    conn.shutdown();
    Ok(RssRun {
        tools,
        idle,
        after_calls,
    })
}

fn rss(flags: &Flags) -> Result<()> {
    flags.check_known(&[
        "airlock",
        "config",
        "agent",
        "server",
        "server-name",
        "json",
        "tool",
        "args",
        "calls",
        "runs",
    ])?;
    let server = split_command(flags.req("server")?)?;
    let argv = airlock_argv(flags, "airlock", &server)?;
    let runs = flags.num("runs", 5)?.max(1);
    let calls = flags.num("calls", 500)?;
    let mut done = Vec::with_capacity(runs);
    for _ in 0..runs {
        done.push(rss_run(flags, &argv)?);
    }
    let tools = done.first().map_or(0, |r| r.tools);

    println!();
    println!(
        "`airlock run`, idle after initialize + tools/list ({tools} tools visible); KiB, median \
         (range) over {runs} runs:"
    );
    let idle: Vec<&RssFigures> = done.iter().map(|r| &r.idle).collect();
    let mut doc = json!({
        "runs": runs,
        "tools_visible": tools,
        "target": "rss_anon_kib",
        "target_kib": RSS_ANON_TARGET_KIB,
        "idle": report_rss(&idle),
    });
    let after: Vec<&RssFigures> = done.iter().filter_map(|r| r.after_calls.as_ref()).collect();
    if !after.is_empty() {
        println!("after {calls} calls, idle again:");
        doc["after_calls"] = report_rss(&after);
        doc["after_calls"]["calls"] = json!(calls);
    }
    if let Some(out) = flags.get("json") {
        std::fs::write(out, serde_json::to_vec_pretty(&doc)?)
            .with_context(|| format!("cannot write {out}"))?;
        eprintln!("wrote {out}");
    }
    Ok(())
}

/// Prints one state's figures over the runs; returns them as JSON (every run's too).
fn report_rss(runs: &[&RssFigures]) -> Value {
    let spread = |f: &dyn Fn(&RssFigures) -> Option<u64>| {
        let samples: Vec<u64> = runs.iter().filter_map(|r| f(r)).collect();
        (samples.len() == runs.len())
            .then(|| (Spread::of(samples.iter().map(|&k| k as f64)), samples))
    };
    let show = |s: &Spread| format!("{:>6.0} ({:>6.0} … {:>6.0})", s.median, s.min, s.max);
    let mut doc = json!({});
    let mut line = |key: &str, label: &str, note: &str, f: &dyn Fn(&RssFigures) -> Option<u64>| {
        if let Some((s, samples)) = spread(f) {
            println!("  {label:<9} {}  {note}", show(&s));
            doc[key] = json!({ "median": s.median, "min": s.min, "max": s.max, "runs": samples });
        }
    };
    let mib = |k: u64| k as f64 / 1024.0;
    let worst = runs
        .iter()
        .map(|r| r.gateway.rss_anon_kib)
        .max()
        .unwrap_or(0);
    let pass = worst <= RSS_ANON_TARGET_KIB;
    line(
        "rss_anon_kib",
        "RssAnon",
        &format!(
            "<- THE TARGET: private memory <= {:.0} MiB in every run: {} (worst {:.2} MiB)",
            mib(RSS_ANON_TARGET_KIB),
            self::pass(pass),
            mib(worst)
        ),
        &|r| Some(r.gateway.rss_anon_kib),
    );
    line(
        "vm_rss_kib",
        "VmRSS",
        "beside it, not a target: RssAnon + RssFile",
        &|r| Some(r.gateway.vm_rss_kib),
    );
    line(
        "rss_file_kib",
        "RssFile",
        "clean pages of the binary and libraries: shared, dropped by the kernel at will",
        &|r| Some(r.gateway.rss_file_kib),
    );
    line(
        "pss_anon_kib",
        "Pss_Anon",
        "RssAnon with the pages a fork still shares split between them",
        &|r| r.gateway.pss_anon_kib,
    );
    let helpers = runs.iter().map(|r| r.helpers).max().unwrap_or(0);
    if helpers > 0 {
        line(
            "pss_anon_with_helpers_kib",
            "+helpers",
            &format!(
                "Pss_Anon of the gateway and its {helpers} sandbox helpers (forks that never \
                 exec) summed: private memory of all of them"
            ),
            &|r| r.pss_anon_with_helpers_kib,
        );
    }
    line("vm_hwm_kib", "VmHWM", "peak VmRSS", &|r| {
        Some(r.gateway.vm_hwm_kib)
    });
    doc["helpers"] = json!(helpers);
    doc["pass"] = json!(pass);
    doc
}
