//! `http-bench`: throughput and memory of `airlock serve`'s Streamable HTTP gateway.
//!
//! * `throughput` — the same upstream reached two ways in one run: directly (`--direct`, e.g.
//!   server-everything's `/mcp`) and through the gateway (`--gateway`, `/mcp/<server>`, with
//!   `--token`). For each session count (`--sessions 1,16,64`) and each path, N MCP sessions
//!   are opened (`initialize` + `notifications/initialized`, then `Mcp-Session-Id` and
//!   `MCP-Protocol-Version` on every request), warmed up, and each loops `tools/call` for
//!   `--seconds` with one request in flight; calls/s, p50 and p99 per path, and the gateway's
//!   share of the direct throughput. The paths alternate, and so does which goes first, over
//!   `--rounds`, so drift hits both alike. With `--gateway-pid` / `--upstream-pid`, the CPU
//!   time each process spent per call is reported too (and always the client's own).
//! * `rss` — memory of the gateway process (`--pid`): idle, then with N idle sessions open
//!   (initialized, never deleted), and the private memory each idle session costs:
//!   `(RssAnon(N) − RssAnon(0)) / N`.
//!
//! The client runs on a small tokio runtime (`--threads`, default 1: a current-thread
//! runtime), since it shares the machine's cores with what it measures. A bench binary, never
//! a timed test: run it from `scripts/http-bench.sh` or by hand.

use std::sync::Arc;
use std::time::{Duration, Instant};

use airlock_bench::{
    cpu_time, machine_busy, read_memory, Flags, Memory, SseParser, Stats, PROTOCOL_VERSION,
};
use anyhow::{anyhow, bail, Context, Result};
use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// The gateway's throughput at 64 sessions should be at least this share of direct.
const THROUGHPUT_TARGET: f64 = 0.70;
/// The session count the throughput target is stated for.
const TARGET_SESSIONS: usize = 64;
/// Memory of the idle gateway (KiB).
const IDLE_TARGET_KIB: u64 = 30 * 1024;
/// Private memory per idle session (KiB).
const PER_SESSION_TARGET_KIB: f64 = 64.0;

const SESSION_HEADER: &str = "mcp-session-id";
const VERSION_HEADER: &str = "mcp-protocol-version";

const USAGE: &str = "\
usage:
  http-bench throughput --direct URL --gateway URL --token TOKEN
                        [--sessions 1,16,64] [--seconds S=5] [--warmup S=1] [--rounds R=3]
                        [--tool NAME=echo] [--args JSON={\"message\":\"hi\"}]
                        [--gateway-pid PID] [--upstream-pid PID] [--threads N=1] [--json OUT]
  http-bench rss --gateway URL --token TOKEN --pid PID [--sessions 0,100,1000]
                 [--settle S=1] [--concurrency N=16] [--upstream-pid PID] [--threads N=1]
                 [--json OUT]
  http-bench free-port      (prints a free TCP port on 127.0.0.1)";

fn main() -> std::process::ExitCode {
    match real_main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("http-bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn real_main() -> Result<()> {
    // reqwest is built without a TLS provider (the workspace's choice): ring's, as the gateway.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut args = std::env::args().skip(1);
    let sub = args.next().ok_or_else(|| anyhow!("{USAGE}"))?;
    let flags = Flags::parse(args, USAGE)?;
    match sub.as_str() {
        "throughput" => runtime(&flags)?.block_on(throughput(&flags)),
        "rss" => runtime(&flags)?.block_on(rss(&flags)),
        "free-port" => {
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            println!("{}", l.local_addr()?.port());
            Ok(())
        }
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            Ok(())
        }
        other => bail!("unknown subcommand {other:?}\n{USAGE}"),
    }
}

/// The client's runtime: one thread unless `--threads` says otherwise.
fn runtime(flags: &Flags) -> Result<tokio::runtime::Runtime> {
    let threads = flags.num("threads", 1)?.max(1);
    let mut b = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    b.enable_all()
        .build()
        .context("cannot start the async runtime")
}

// === an MCP client over Streamable HTTP ===

/// One MCP endpoint: its URL, the agent's token (gateway only), and a connection pool.
struct Endpoint {
    name: &'static str,
    url: reqwest::Url,
    bearer: Option<HeaderValue>,
    client: reqwest::Client,
}

impl Endpoint {
    fn new(name: &'static str, url: &str, token: Option<&str>) -> Result<Arc<Endpoint>> {
        let url = reqwest::Url::parse(url).with_context(|| format!("--{name}: bad URL {url}"))?;
        let bearer = match token {
            Some(t) => {
                Some(HeaderValue::from_str(&format!("Bearer {t}")).context("--token: bad header")?)
            }
            None => None,
        };
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Arc::new(Endpoint {
            name,
            url,
            bearer,
            client,
        }))
    }

    /// POSTs one message. Returns the `Mcp-Session-Id` the answer set, and — when `want` is a
    /// request id — the message answering it and the instant it was read. The rest of an event
    /// stream is read to its end, so the connection goes back to the pool.
    async fn post(
        &self,
        session: Option<&HeaderValue>,
        body: Vec<u8>,
        want: Option<i64>,
    ) -> Result<(Option<HeaderValue>, Option<(Value, Instant)>)> {
        let mut req = self
            .client
            .post(self.url.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "application/json, text/event-stream");
        if let Some(b) = &self.bearer {
            req = req.header(AUTHORIZATION, b.clone());
        }
        if let Some(s) = session {
            req = req
                .header(SESSION_HEADER, s.clone())
                .header(VERSION_HEADER, PROTOCOL_VERSION);
        }
        let mut resp = req
            .body(body)
            .send()
            .await
            .with_context(|| format!("{}: POST {}", self.name, self.url))?;
        let status = resp.status();
        let sid = resp.headers().get(SESSION_HEADER).cloned();
        let kind = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        if status == StatusCode::ACCEPTED {
            return Ok((sid, None));
        }
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            bail!("{}: HTTP {status}: {}", self.name, truncate(&text, 400));
        }
        let Some(want) = want else {
            // A notification answered with something other than 202: read and drop it.
            while resp.chunk().await?.is_some() {}
            return Ok((sid, None));
        };
        let mut answer = None;
        if kind.starts_with("text/event-stream") {
            let mut parser = SseParser::new();
            let mut events = Vec::new();
            while let Some(chunk) = resp
                .chunk()
                .await
                .with_context(|| format!("{}: reading the event stream", self.name))?
            {
                if answer.is_some() {
                    continue;
                }
                parser.push(&chunk, &mut events);
                for data in events.drain(..) {
                    if answer.is_none() {
                        answer = answering(&data, want).map(|v| (v, Instant::now()));
                    }
                }
            }
        } else if kind.starts_with("application/json") {
            let body = resp.bytes().await?;
            let at = Instant::now();
            answer = answering(&body, want).map(|v| (v, at));
        } else {
            bail!("{}: answered with content type {kind:?}", self.name);
        }
        match answer {
            Some(a) => Ok((sid, Some(a))),
            None => bail!("{}: no answer to request {want}", self.name),
        }
    }

    /// Ends a session (`DELETE`), best effort.
    async fn delete(&self, session: &HeaderValue) {
        let mut req = self
            .client
            .delete(self.url.clone())
            .header(SESSION_HEADER, session.clone())
            .header(VERSION_HEADER, PROTOCOL_VERSION);
        if let Some(b) = &self.bearer {
            req = req.header(AUTHORIZATION, b.clone());
        }
        if let Ok(resp) = req.send().await {
            let _ = resp.bytes().await;
        }
    }
}

/// The message (or the element of a batch) that answers request `id`.
fn answering(text: &[u8], id: i64) -> Option<Value> {
    let v: Value = serde_json::from_slice(text).ok()?;
    let is_it = |m: &Value| {
        m.get("id").and_then(Value::as_i64) == Some(id)
            && (m.get("result").is_some() || m.get("error").is_some())
    };
    match v {
        Value::Array(items) => items.into_iter().find(is_it),
        m if is_it(&m) => Some(m),
        _ => None,
    }
}

/// One MCP session of the bench.
struct Session {
    ep: Arc<Endpoint>,
    id: HeaderValue,
    next_id: i64,
    /// The `tools/call` request with a placeholder id, serialized once.
    call: Value,
}

impl Session {
    /// `initialize`, then `notifications/initialized`.
    async fn open(ep: Arc<Endpoint>, tool: &str, args: &Value) -> Result<Session> {
        let init = json!({
            "jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {
                "protocolVersion": PROTOCOL_VERSION,
                "capabilities": {},
                "clientInfo": {"name": "http-bench", "version": env!("CARGO_PKG_VERSION")},
            },
        });
        let (sid, answer) = ep.post(None, serde_json::to_vec(&init)?, Some(0)).await?;
        let (answer, _) = answer.ok_or_else(|| anyhow!("{}: initialize: no answer", ep.name))?;
        if let Some(err) = answer.get("error") {
            bail!("{}: initialize failed: {err}", ep.name);
        }
        let id = sid.ok_or_else(|| anyhow!("{}: initialize set no Mcp-Session-Id", ep.name))?;
        let done = br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#.to_vec();
        ep.post(Some(&id), done, None).await?;
        Ok(Session {
            ep,
            id,
            next_id: 1,
            call: json!({
                "jsonrpc": "2.0", "id": 0, "method": "tools/call",
                "params": {"name": tool, "arguments": args},
            }),
        })
    }

    /// One `tools/call`; its round trip (request sent → answer read). An error answer or a
    /// result with `isError` fails the bench: timings of refused calls would mean nothing.
    async fn call(&mut self) -> Result<Duration> {
        let id = self.next_id;
        self.next_id += 1;
        self.call["id"] = json!(id);
        let body = serde_json::to_vec(&self.call)?;
        let start = Instant::now();
        let (_, answer) = self.ep.post(Some(&self.id), body, Some(id)).await?;
        let (answer, at) = answer.ok_or_else(|| anyhow!("{}: no answer", self.ep.name))?;
        if let Some(err) = answer.get("error") {
            bail!("{}: tools/call failed: {err}", self.ep.name);
        }
        if answer.pointer("/result/isError").and_then(Value::as_bool) == Some(true) {
            bail!(
                "{}: tools/call returned a tool error: {}",
                self.ep.name,
                truncate(&answer.to_string(), 400)
            );
        }
        Ok(at.duration_since(start))
    }

    async fn close(self) {
        self.ep.delete(&self.id).await;
    }
}

/// Opens `n` sessions, at most `concurrency` initializing at a time.
async fn open_sessions(
    ep: &Arc<Endpoint>,
    n: usize,
    concurrency: usize,
    tool: &str,
    args: &Value,
) -> Result<Vec<Session>> {
    let mut out = Vec::with_capacity(n);
    let mut set = tokio::task::JoinSet::new();
    let mut started = 0;
    while out.len() < n {
        while started < n && set.len() < concurrency.max(1) {
            let (ep, tool, args) = (ep.clone(), tool.to_owned(), args.clone());
            set.spawn(async move { Session::open(ep, &tool, &args).await });
            started += 1;
        }
        match set.join_next().await {
            Some(r) => out.push(r.context("a session task panicked")??),
            None => break,
        }
    }
    Ok(out)
}

async fn close_sessions(sessions: Vec<Session>) {
    let mut set = tokio::task::JoinSet::new();
    for s in sessions {
        set.spawn(s.close());
    }
    while set.join_next().await.is_some() {}
}

// === throughput ===

/// The processes whose CPU time is read around each measured window.
struct Watched {
    label: &'static str,
    pid: u32,
}

/// One measured window of one path at one session count.
struct Phase {
    calls: usize,
    window: Duration,
    samples: Vec<Duration>,
    /// CPU time per watched process during the window.
    cpu: Vec<Duration>,
    /// CPU time the whole machine was busy during the window.
    machine: Duration,
}

async fn phase(
    ep: &Arc<Endpoint>,
    n: usize,
    warmup: Duration,
    window: Duration,
    tool: &str,
    args: &Value,
    watched: &[Watched],
) -> Result<Phase> {
    let sessions = open_sessions(ep, n, 16, tool, args).await?;
    let measure_from = Instant::now() + warmup;
    let until = measure_from + window;
    let mut set = tokio::task::JoinSet::new();
    for mut s in sessions {
        set.spawn(async move {
            let mut samples = Vec::new();
            while Instant::now() < until {
                match s.call().await {
                    Ok(rtt) => {
                        let done = Instant::now();
                        if done >= measure_from && done <= until {
                            samples.push(rtt);
                        }
                    }
                    Err(e) => return (s, Err(e)),
                }
            }
            (s, Ok(samples))
        });
    }
    // This task reads the CPU clocks at the window's edges (it runs on the same runtime).
    tokio::time::sleep_until(measure_from.into()).await;
    let (before, busy_before) = (cpu_now(watched)?, machine_busy()?);
    tokio::time::sleep_until(until.into()).await;
    let (after, busy_after) = (cpu_now(watched)?, machine_busy()?);
    let mut samples = Vec::new();
    let mut sessions = Vec::new();
    let mut failure = None;
    while let Some(r) = set.join_next().await {
        let (s, r) = r.context("a session task panicked")?;
        sessions.push(s);
        match r {
            Ok(mut v) => samples.append(&mut v),
            Err(e) => failure = failure.or(Some(e)),
        }
    }
    close_sessions(sessions).await;
    if let Some(e) = failure {
        return Err(e);
    }
    Ok(Phase {
        calls: samples.len(),
        window,
        samples,
        cpu: after
            .iter()
            .zip(&before)
            .map(|(a, b)| a.saturating_sub(*b))
            .collect(),
        machine: busy_after.saturating_sub(busy_before),
    })
}

fn cpu_now(watched: &[Watched]) -> Result<Vec<Duration>> {
    watched.iter().map(|w| cpu_time(w.pid)).collect()
}

/// Every round's phase of one path at one session count.
#[derive(Default)]
struct Series {
    phases: Vec<Phase>,
}

impl Series {
    fn calls(&self) -> usize {
        self.phases.iter().map(|p| p.calls).sum()
    }
    fn seconds(&self) -> f64 {
        self.phases.iter().map(|p| p.window.as_secs_f64()).sum()
    }
    fn rate(&self) -> f64 {
        self.calls() as f64 / self.seconds().max(f64::MIN_POSITIVE)
    }
    fn stats(&self) -> Option<Stats> {
        let all: Vec<Duration> = self
            .phases
            .iter()
            .flat_map(|p| p.samples.iter().copied())
            .collect();
        Stats::from_samples(&all)
    }
    /// CPU time of watched process `i` per call, µs.
    fn cpu_per_call_us(&self, i: usize) -> f64 {
        let cpu: f64 = self.phases.iter().map(|p| p.cpu[i].as_secs_f64()).sum();
        cpu * 1e6 / self.calls().max(1) as f64
    }
    /// CPU time of watched process `i` as a share of one core.
    fn cpu_share(&self, i: usize) -> f64 {
        let cpu: f64 = self.phases.iter().map(|p| p.cpu[i].as_secs_f64()).sum();
        cpu / self.seconds().max(f64::MIN_POSITIVE)
    }
    /// CPU the rest of the machine used (busy minus the watched processes), in cores.
    fn others_cores(&self) -> f64 {
        let others: f64 = self
            .phases
            .iter()
            .map(|p| {
                let ours: Duration = p.cpu.iter().sum();
                p.machine.as_secs_f64() - ours.as_secs_f64()
            })
            .sum();
        (others / self.seconds().max(f64::MIN_POSITIVE)).max(0.0)
    }
    fn rates(&self) -> Vec<f64> {
        self.phases
            .iter()
            .map(|p| p.calls as f64 / p.window.as_secs_f64())
            .collect()
    }
}

async fn throughput(flags: &Flags) -> Result<()> {
    flags.check_known(&[
        "direct",
        "gateway",
        "token",
        "sessions",
        "seconds",
        "warmup",
        "rounds",
        "tool",
        "args",
        "gateway-pid",
        "upstream-pid",
        "threads",
        "json",
    ])?;
    let direct = Endpoint::new("direct", flags.req("direct")?, None)?;
    let gateway = Endpoint::new("gateway", flags.req("gateway")?, Some(flags.req("token")?))?;
    let counts = flags.list("sessions", "1,16,64")?;
    if counts.contains(&0) {
        bail!("--sessions: every count must be at least 1");
    }
    let window = flags.secs("seconds", 5.0)?;
    let warmup = flags.secs("warmup", 1.0)?;
    let rounds = flags.num("rounds", 3)?.max(1);
    let tool = flags.get("tool").unwrap_or("echo").to_owned();
    let args: Value = serde_json::from_str(flags.get("args").unwrap_or(r#"{"message":"hi"}"#))
        .context("--args is not JSON")?;
    let mut watched = vec![Watched {
        label: "client",
        pid: std::process::id(),
    }];
    for (flag, label) in [("gateway-pid", "gateway"), ("upstream-pid", "upstream")] {
        if let Some(pid) = flags.get(flag) {
            let pid = pid
                .parse()
                .with_context(|| format!("--{flag}: not a pid"))?;
            cpu_time(pid)?;
            watched.push(Watched { label, pid });
        }
    }
    let paths = [direct, gateway];

    // One session per path first: fails fast on a bad URL, token or policy, and warms both.
    for ep in &paths {
        let mut s = Session::open(ep.clone(), &tool, &args)
            .await
            .with_context(|| format!("{}: cannot open a session", ep.name))?;
        for _ in 0..50 {
            s.call().await?;
        }
        s.close().await;
    }
    eprintln!(
        "throughput: `{tool}` at {counts:?} sessions, {:.1} s per window after {:.1} s of warm-up, \
         {rounds} rounds, paths direct and gateway interleaved",
        window.as_secs_f64(),
        warmup.as_secs_f64()
    );
    let started = Instant::now();
    let mut series: Vec<[Series; 2]> = counts.iter().map(|_| Default::default()).collect();
    for round in 0..rounds {
        for (c, &n) in counts.iter().enumerate() {
            // Which path goes first alternates from one window pair to the next.
            let order = if (round + c) % 2 == 0 { [0, 1] } else { [1, 0] };
            for i in order {
                let p = phase(&paths[i], n, warmup, window, &tool, &args, &watched)
                    .await
                    .with_context(|| format!("{} at {n} sessions", paths[i].name))?;
                eprintln!(
                    "  round {}: {:>7} {n:>3} sessions: {:>8.0} calls/s",
                    round + 1,
                    paths[i].name,
                    p.calls as f64 / p.window.as_secs_f64()
                );
                series[c][i].phases.push(p);
            }
        }
    }
    let wall = started.elapsed();

    println!();
    println!(
        "`tools/call {tool}`, {:.1} s windows, {rounds} rounds, {:.0} s in all; client on {} \
         runtime thread(s), machine: {} cores",
        window.as_secs_f64(),
        wall.as_secs_f64(),
        flags.num("threads", 1)?.max(1),
        cores()
    );
    println!();
    let cpu_cols: String = watched
        .iter()
        .map(|w| format!(" {} CPU µs/call |", w.label))
        .collect();
    println!(
        "| sessions | path | calls | calls/s | p50 ms | p99 ms |{cpu_cols} others' CPU (cores) |"
    );
    println!(
        "|---:|---|---:|---:|---:|---:|{}---:|",
        "---:|".repeat(watched.len())
    );
    let mut doc_rows = Vec::new();
    let mut verdicts = Vec::new();
    for (c, &n) in counts.iter().enumerate() {
        for (i, ep) in paths.iter().enumerate() {
            let s = &series[c][i];
            let st = s
                .stats()
                .ok_or_else(|| anyhow!("no calls at {n} sessions"))?;
            let cpu: String = (0..watched.len())
                .map(|w| format!(" {:.0} |", s.cpu_per_call_us(w)))
                .collect();
            println!(
                "| {n} | {} | {} | {:.0} | {:.2} | {:.2} |{cpu} {:.2} |",
                ep.name,
                s.calls(),
                s.rate(),
                st.p50 / 1e3,
                st.p99 / 1e3,
                s.others_cores(),
            );
            let mut row = json!({
                "sessions": n, "path": ep.name, "calls": s.calls(), "seconds": s.seconds(),
                "calls_per_s": s.rate(), "calls_per_s_by_round": s.rates(),
                "p50_us": st.p50, "p90_us": st.p90, "p99_us": st.p99,
                "mean_us": st.mean, "max_us": st.max, "others_cpu_cores": s.others_cores(),
            });
            for (w, watch) in watched.iter().enumerate() {
                row[format!("{}_cpu_us_per_call", watch.label)] = json!(s.cpu_per_call_us(w));
                row[format!("{}_cpu_cores", watch.label)] = json!(s.cpu_share(w));
            }
            doc_rows.push(row);
        }
    }
    println!();
    for (c, &n) in counts.iter().enumerate() {
        let [d, g] = &series[c];
        let ratio = g.rate() / d.rate().max(f64::MIN_POSITIVE);
        let per_round: Vec<f64> = d
            .rates()
            .iter()
            .zip(g.rates())
            .map(|(d, g)| g / d.max(f64::MIN_POSITIVE))
            .collect();
        let (dp, gp) = (d.stats(), g.stats());
        let p99 = match (dp, gp) {
            (Some(dp), Some(gp)) => format!(
                "p99 {:.2} ms vs {:.2} ms direct ({:+.2} ms)",
                gp.p99 / 1e3,
                dp.p99 / 1e3,
                (gp.p99 - dp.p99) / 1e3
            ),
            _ => String::new(),
        };
        let rounds_text: Vec<String> = per_round
            .iter()
            .map(|r| format!("{:.0} %", r * 100.0))
            .collect();
        let target = if n == TARGET_SESSIONS {
            let ok = ratio >= THROUGHPUT_TARGET;
            verdicts.push(
                json!({"sessions": n, "ratio": ratio, "target": THROUGHPUT_TARGET, "pass": ok}),
            );
            format!(
                " — target ≥ {:.0} %: {}",
                THROUGHPUT_TARGET * 100.0,
                pass(ok)
            )
        } else {
            String::new()
        };
        println!(
            "- {n} sessions: gateway/direct throughput {:.1} % (rounds: {}); {p99}{target}",
            ratio * 100.0,
            rounds_text.join(", ")
        );
        doc_rows.push(
            json!({"sessions": n, "ratio_gateway_direct": ratio, "ratio_by_round": per_round}),
        );
    }
    let client_share: Vec<f64> = series
        .iter()
        .flat_map(|s| s.iter().map(|p| p.cpu_share(0)))
        .collect();
    let max_client = client_share.iter().copied().fold(0.0, f64::max);
    println!(
        "- the client itself used at most {:.0} % of one core in any window ({:.0} % of the machine)",
        max_client * 100.0,
        max_client * 100.0 / cores() as f64
    );

    if let Some(out) = flags.get("json") {
        let doc = json!({
            "tool": tool, "args": args, "sessions": counts, "rounds": rounds,
            "window_s": window.as_secs_f64(), "warmup_s": warmup.as_secs_f64(),
            "wall_s": wall.as_secs_f64(), "cores": cores(),
            "client_threads": flags.num("threads", 1)?.max(1),
            "watched": watched.iter().map(|w| w.label).collect::<Vec<_>>(),
            "rows": doc_rows, "verdict": verdicts,
        });
        std::fs::write(out, serde_json::to_vec_pretty(&doc)?)
            .with_context(|| format!("cannot write {out}"))?;
        eprintln!("wrote {out}");
    }
    Ok(())
}

// === rss ===

async fn rss(flags: &Flags) -> Result<()> {
    flags.check_known(&[
        "gateway",
        "token",
        "pid",
        "sessions",
        "settle",
        "concurrency",
        "upstream-pid",
        "threads",
        "json",
    ])?;
    let gateway = Endpoint::new("gateway", flags.req("gateway")?, Some(flags.req("token")?))?;
    let pid: u32 = flags.req("pid")?.parse().context("--pid: not a pid")?;
    let upstream: Option<u32> = match flags.get("upstream-pid") {
        Some(p) => Some(p.parse().context("--upstream-pid: not a pid")?),
        None => None,
    };
    let mut counts = flags.list("sessions", "0,100,1000")?;
    counts.sort_unstable();
    counts.dedup();
    if counts.first() != Some(&0) {
        counts.insert(0, 0);
    }
    let settle = flags.secs("settle", 1.0)?;
    let concurrency = flags.num("concurrency", 16)?.max(1);
    let args = json!({});

    let mut open: Vec<Session> = Vec::new();
    let mut points: Vec<(usize, Memory, Option<Memory>)> = Vec::new();
    for &n in &counts {
        let more = n - open.len();
        let t = Instant::now();
        open.extend(open_sessions(&gateway, more, concurrency, "echo", &args).await?);
        if more > 0 {
            eprintln!(
                "rss: {n} sessions open ({more} opened in {:.1} s)",
                t.elapsed().as_secs_f64()
            );
        }
        tokio::time::sleep(settle).await;
        let mem = read_memory(pid)?;
        let up = match upstream {
            Some(p) => Some(read_memory(p)?),
            None => None,
        };
        points.push((n, mem, up));
    }
    let idle = points[0].1;
    println!();
    println!(
        "`airlock serve` (pid {pid}) with N idle sessions open (initialized, not deleted), \
         {:.1} s after the last opened; KiB:",
        settle.as_secs_f64()
    );
    println!();
    let up_col = if upstream.is_some() {
        " upstream VmRSS |"
    } else {
        ""
    };
    println!(
        "| sessions | VmRSS | RssAnon | RssFile | RssAnon per session | VmRSS per session |{up_col}"
    );
    println!(
        "|---:|---:|---:|---:|---:|---:|{}",
        if upstream.is_some() { "---:|" } else { "" }
    );
    let mut rows = Vec::new();
    for (n, m, up) in &points {
        let per = |now: u64, base: u64| (now as f64 - base as f64) / *n as f64;
        let (anon_per, rss_per) = if *n == 0 {
            ("—".to_owned(), "—".to_owned())
        } else {
            (
                format!("{:.1}", per(m.rss_anon_kib, idle.rss_anon_kib)),
                format!("{:.1}", per(m.vm_rss_kib, idle.vm_rss_kib)),
            )
        };
        let up_text = up.map_or(String::new(), |u| format!(" {} |", u.vm_rss_kib));
        println!(
            "| {n} | {} | {} | {} | {anon_per} | {rss_per} |{up_text}",
            m.vm_rss_kib, m.rss_anon_kib, m.rss_file_kib
        );
        let mut row = json!({
            "sessions": n, "vm_rss_kib": m.vm_rss_kib, "rss_anon_kib": m.rss_anon_kib,
            "rss_file_kib": m.rss_file_kib, "vm_hwm_kib": m.vm_hwm_kib,
        });
        if *n > 0 {
            row["rss_anon_kib_per_session"] = json!(per(m.rss_anon_kib, idle.rss_anon_kib));
            row["vm_rss_kib_per_session"] = json!(per(m.vm_rss_kib, idle.vm_rss_kib));
        }
        if let Some(u) = up {
            row["upstream_vm_rss_kib"] = json!(u.vm_rss_kib);
        }
        rows.push(row);
    }
    println!();
    let idle_ok = idle.vm_rss_kib <= IDLE_TARGET_KIB;
    println!(
        "- idle: VmRSS {:.1} MiB, RssAnon {:.1} MiB — target ≤ {} MiB: {}",
        idle.vm_rss_kib as f64 / 1024.0,
        idle.rss_anon_kib as f64 / 1024.0,
        IDLE_TARGET_KIB / 1024,
        pass(idle_ok)
    );
    let mut verdict = json!({"idle_vm_rss_kib": idle.vm_rss_kib, "idle_target_kib": IDLE_TARGET_KIB, "idle_pass": idle_ok});
    if let Some((n, m, _)) = points.last().filter(|(n, _, _)| *n > 0) {
        let per = (m.rss_anon_kib as f64 - idle.rss_anon_kib as f64) / *n as f64;
        let ok = per <= PER_SESSION_TARGET_KIB;
        println!(
            "- per idle session (at {n}): {per:.1} KiB of RssAnon — target ≤ {PER_SESSION_TARGET_KIB:.0} KiB: {}",
            pass(ok)
        );
        verdict["per_session_kib"] = json!(per);
        verdict["per_session_target_kib"] = json!(PER_SESSION_TARGET_KIB);
        verdict["per_session_pass"] = json!(ok);
    }
    if let Some(out) = flags.get("json") {
        let doc =
            json!({"pid": pid, "settle_s": settle.as_secs_f64(), "rows": rows, "verdict": verdict});
        std::fs::write(out, serde_json::to_vec_pretty(&doc)?)
            .with_context(|| format!("cannot write {out}"))?;
        eprintln!("wrote {out}");
    }
    // The sessions stay open: the gateway is stopped by whoever started it.
    drop(open);
    Ok(())
}

fn pass(ok: bool) -> &'static str {
    if ok {
        "PASS"
    } else {
        "FAIL"
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(0, |n| n.get())
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &s[..cut])
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_answer() {
        assert!(answering(br#"{"jsonrpc":"2.0","id":3,"result":{}}"#, 3).is_some());
        assert!(answering(br#"{"jsonrpc":"2.0","id":3,"result":{}}"#, 4).is_none());
        assert!(answering(br#"{"jsonrpc":"2.0","method":"notifications/progress"}"#, 3).is_none());
        let batch = br#"[{"jsonrpc":"2.0","method":"x"},{"jsonrpc":"2.0","id":5,"error":{}}]"#;
        assert!(answering(batch, 5).unwrap().get("error").is_some());
        assert!(answering(b"not json", 1).is_none());
    }
}
