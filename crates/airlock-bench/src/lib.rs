//! airlock-bench: the pieces shared by the hot-path benchmark binaries.
//!
//! * [`Conn`] — a minimal blocking MCP client over a child process's stdio, built to add as
//!   little noise as possible to what it measures: one `write` per request, blocking reads on
//!   the calling thread (no thread hand-off), timestamps taken as soon as a line arrives.
//! * [`Stats`] — percentiles over a set of round-trip samples.
//! * [`split_command`] — turn `"CMD ARGS"` into an argv; [`Flags`] — `--name value` flags.
//! * [`SseParser`] — the messages of a `text/event-stream` body (the HTTP bench).
//! * [`read_memory`], [`cpu_time`] — a process's memory and CPU time from `/proc`.
//!
//! The binaries are `bare-relay` (the peer Airlock is compared against), `airlock-bench`
//! (the `latency` and `rss` subcommands of `airlock run`) and `http-bench` (throughput and
//! memory of `airlock serve`'s Streamable HTTP gateway).

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

/// The MCP protocol version the bench client offers.
pub const PROTOCOL_VERSION: &str = "2025-11-25";

/// Split a command line on whitespace; double or single quotes group words
/// (no escapes — enough for bench command lines, not a shell).
pub fn split_command(line: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    for c in line.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => cur.push(c),
            None if c == '"' || c == '\'' => {
                quote = Some(c);
                in_word = true;
            }
            None if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            None => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        bail!("unbalanced quote in command {line:?}");
    }
    if in_word {
        out.push(cur);
    }
    if out.is_empty() {
        bail!("empty command");
    }
    Ok(out)
}

/// `--name value` pairs, in order; every flag takes exactly one value.
pub struct Flags {
    pairs: Vec<(String, String)>,
    usage: &'static str,
}

impl Flags {
    /// Parse `args` (after the subcommand); `usage` goes into every error message.
    pub fn parse(args: impl Iterator<Item = String>, usage: &'static str) -> Result<Flags> {
        let mut pairs = Vec::new();
        let mut args = args;
        while let Some(a) = args.next() {
            if a == "-h" || a == "--help" {
                bail!("{usage}");
            }
            let Some(name) = a.strip_prefix("--") else {
                bail!("unexpected argument {a:?}\n{usage}");
            };
            let value = args
                .next()
                .ok_or_else(|| anyhow!("--{name} needs a value"))?;
            pairs.push((name.to_owned(), value));
        }
        Ok(Flags { pairs, usage })
    }

    /// The last value given for `--name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value of a required flag.
    pub fn req(&self, name: &str) -> Result<&str> {
        self.get(name)
            .ok_or_else(|| anyhow!("--{name} is required\n{}", self.usage))
    }

    /// A non-negative integer flag.
    pub fn num(&self, name: &str, default: usize) -> Result<usize> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .with_context(|| format!("--{name}: not a number: {v:?}")),
        }
    }

    /// A number of seconds (fractions allowed).
    pub fn secs(&self, name: &str, default: f64) -> Result<Duration> {
        let s = match self.get(name) {
            None => default,
            Some(v) => v
                .parse::<f64>()
                .with_context(|| format!("--{name}: not a number of seconds: {v:?}"))?,
        };
        Duration::try_from_secs_f64(s).with_context(|| format!("--{name}: bad duration {s}"))
    }

    /// A comma-separated list of integers (`1,16,64`).
    pub fn list(&self, name: &str, default: &str) -> Result<Vec<usize>> {
        self.get(name)
            .unwrap_or(default)
            .split(',')
            .map(|p| {
                p.trim()
                    .parse()
                    .with_context(|| format!("--{name}: not a list of numbers: {p:?}"))
            })
            .collect()
    }

    /// Fails on a flag not in `known`.
    pub fn check_known(&self, known: &[&str]) -> Result<()> {
        for (n, _) in &self.pairs {
            if !known.contains(&n.as_str()) {
                bail!("unknown flag --{n}\n{}", self.usage);
            }
        }
        Ok(())
    }
}

/// The `data` of the events of a `text/event-stream` body, fed in chunks as they arrive.
///
/// Lines end with LF, CRLF or CR; a blank line ends an event; its `data:` lines, joined by
/// LF, are its data (one JSON-RPC message for MCP). Comments, `event:`, `id:` and `retry:`
/// lines are skipped; an event without data is not reported.
#[derive(Default)]
pub struct SseParser {
    /// The unfinished line.
    line: Vec<u8>,
    /// The data of the unfinished event.
    data: Vec<u8>,
    has_data: bool,
    /// The last byte fed was a CR (a following LF belongs to it).
    after_cr: bool,
}

impl SseParser {
    pub fn new() -> SseParser {
        SseParser::default()
    }

    /// Feed a chunk; the data of every event it completes is pushed to `out`.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<Vec<u8>>) {
        for &b in chunk {
            if self.after_cr {
                self.after_cr = false;
                if b == b'\n' {
                    continue;
                }
            }
            match b {
                b'\n' | b'\r' => {
                    self.after_cr = b == b'\r';
                    self.end_line(out);
                }
                _ => self.line.push(b),
            }
        }
    }

    fn end_line(&mut self, out: &mut Vec<Vec<u8>>) {
        if self.line.is_empty() {
            if self.has_data {
                out.push(std::mem::take(&mut self.data));
                self.has_data = false;
            }
            return;
        }
        let line = std::mem::take(&mut self.line);
        let (field, value) = match line.iter().position(|&c| c == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (&line[..], &[][..]),
        };
        if field == b"data" {
            if self.has_data {
                self.data.push(b'\n');
            }
            self.data.extend_from_slice(value);
            self.has_data = true;
        }
        self.line = line;
        self.line.clear();
    }
}

/// CPU time (user + system, all threads) `pid` has used so far, from `/proc/<pid>/stat`.
/// Linux reports it in clock ticks of 1/100 s (`USER_HZ` is 100 on every Linux port that
/// matters here), so differences are good to 10 ms.
pub fn cpu_time(pid: u32) -> Result<Duration> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    parse_stat_cpu(&text).with_context(|| format!("{path}: not a Linux stat file"))
}

/// CPU time the whole machine has spent busy so far (every core: user, nice, system, irq,
/// softirq, steal), from the `cpu` line of `/proc/stat`, in the same 10 ms ticks.
pub fn machine_busy() -> Result<Duration> {
    let text = std::fs::read_to_string("/proc/stat").context("cannot read /proc/stat")?;
    parse_machine_busy(&text).context("/proc/stat: no cpu line")
}

fn parse_machine_busy(text: &str) -> Option<Duration> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice, inside user/nice]
    let busy = [0, 1, 2, 5, 6, 7]
        .iter()
        .map(|&i| f.get(i).copied().unwrap_or(0))
        .sum::<u64>();
    Some(Duration::from_millis(busy * 10))
}

fn parse_stat_cpu(text: &str) -> Option<Duration> {
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After the name: state (3), ppid … cmajflt (4–12), utime (14), stime (15).
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

/// One MCP session with a child process over its stdin/stdout.
pub struct Conn {
    /// A label for messages ("direct", "relay", "airlock").
    pub name: String,
    child: Child,
    /// `None` once closed (on drop).
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    /// The child's stderr goes here, so a failure can show its tail.
    stderr_log: std::fs::File,
    next_id: i64,
    line: Vec<u8>,
    req: Vec<u8>,
}

impl Conn {
    /// Spawn `argv` with piped stdin/stdout; its stderr goes to an anonymous temp file.
    pub fn spawn(name: &str, argv: &[String]) -> Result<Conn> {
        let (prog, args) = argv
            .split_first()
            .ok_or_else(|| anyhow!("{name}: empty command"))?;
        let stderr_log = tempfile::tempfile().context("cannot create a temp file for stderr")?;
        let mut child = Command::new(prog)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr_log.try_clone()?)
            .spawn()
            .with_context(|| format!("{name}: cannot spawn {argv:?}"))?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| anyhow!("{name}: no stdin pipe"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("{name}: no stdout pipe"))?;
        Ok(Conn {
            name: name.to_owned(),
            child,
            stdin: Some(stdin),
            stdout: BufReader::with_capacity(1 << 16, stdout),
            stderr_log,
            next_id: 1,
            line: Vec::with_capacity(4096),
            req: Vec::with_capacity(4096),
        })
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `initialize` + `notifications/initialized`.
    pub fn initialize(&mut self) -> Result<Value> {
        let (_, result) = self.request(
            "initialize",
            json!({
                "protocolVersion": PROTOCOL_VERSION,
                "capabilities": {},
                "clientInfo": {"name": "airlock-bench", "version": env!("CARGO_PKG_VERSION")},
            }),
        )?;
        self.notify("notifications/initialized", json!({}))?;
        Ok(result)
    }

    /// Send a notification (no response expected).
    pub fn notify(&mut self, method: &str, params: Value) -> Result<()> {
        let mut buf = serde_json::to_vec(&json!({
            "jsonrpc": "2.0", "method": method, "params": params,
        }))?;
        buf.push(b'\n');
        self.write_frame(&buf)
    }

    /// `tools/call` of `tool` with `arguments`; returns the round trip and the result.
    /// A JSON-RPC error or a result with `isError: true` is an error: a denied or failed call
    /// would make the timings meaningless.
    pub fn call_tool(&mut self, tool: &str, arguments: &Value) -> Result<(Duration, Value)> {
        let (rtt, result) =
            self.request("tools/call", json!({"name": tool, "arguments": arguments}))?;
        if result.get("isError").and_then(Value::as_bool) == Some(true) {
            bail!(
                "{}: tools/call {tool} returned a tool error: {}",
                self.name,
                truncate(&result.to_string(), 600)
            );
        }
        Ok((rtt, result))
    }

    /// Send one request and block until the response with its id arrives.
    /// The clock covers the write and the read of the response line only: the request is
    /// serialised before the clock starts and the response is parsed after it stops.
    pub fn request(&mut self, method: &str, params: Value) -> Result<(Duration, Value)> {
        let id = self.next_id;
        self.next_id += 1;
        self.req.clear();
        serde_json::to_writer(
            &mut self.req,
            &json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}),
        )?;
        self.req.push(b'\n');
        let start = Instant::now();
        // One write syscall for the whole frame; ChildStdin is unbuffered.
        let req = std::mem::take(&mut self.req);
        let written = self.write_frame(&req);
        self.req = req;
        written?;
        loop {
            self.line.clear();
            let n = self
                .stdout
                .read_until(b'\n', &mut self.line)
                .with_context(|| format!("{}: reading stdout", self.name))?;
            let end = Instant::now();
            if n == 0 {
                bail!(
                    "{}: the process closed its stdout while waiting for `{method}` (id {id}){}",
                    self.name,
                    self.stderr_tail()
                );
            }
            let text = trim_line(&self.line);
            if text.is_empty() {
                continue;
            }
            let v: Value = serde_json::from_slice(text).with_context(|| {
                format!(
                    "{}: not JSON: {}",
                    self.name,
                    truncate(&String::from_utf8_lossy(text), 300)
                )
            })?;
            let has_method = v.get("method").is_some();
            let msg_id = v.get("id");
            if has_method {
                if let Some(req_id) = msg_id {
                    // A server-to-client request: refuse it so the server does not wait on us.
                    self.reply_method_not_found(req_id.clone())?;
                }
                continue; // notifications (logging, progress) are skipped
            }
            if msg_id.and_then(Value::as_i64) != Some(id) {
                continue; // a stale or foreign response
            }
            if let Some(err) = v.get("error") {
                bail!(
                    "{}: `{method}` (id {id}) got a JSON-RPC error: {}{}",
                    self.name,
                    truncate(&err.to_string(), 600),
                    self.stderr_tail()
                );
            }
            let result = v
                .get("result")
                .cloned()
                .ok_or_else(|| anyhow!("{}: response without result: {v}", self.name))?;
            return Ok((end.duration_since(start), result));
        }
    }

    fn reply_method_not_found(&mut self, id: Value) -> Result<()> {
        let mut buf = serde_json::to_vec(&json!({
            "jsonrpc": "2.0", "id": id,
            "error": {"code": -32601, "message": "the bench client does not serve requests"},
        }))?;
        buf.push(b'\n');
        self.write_frame(&buf)
    }

    fn write_frame(&mut self, buf: &[u8]) -> Result<()> {
        let Some(stdin) = self.stdin.as_mut() else {
            bail!("{}: stdin is closed", self.name);
        };
        if let Err(e) = stdin.write_all(buf) {
            let tail = self.stderr_tail();
            return Err(anyhow!(e).context(format!("{}: writing to the process{tail}", self.name)));
        }
        Ok(())
    }

    /// The last lines the child wrote to stderr, formatted for an error message.
    pub fn stderr_tail(&self) -> String {
        let mut text = String::new();
        let mut f = &self.stderr_log;
        if f.seek(SeekFrom::Start(0)).is_err() || f.read_to_string(&mut text).is_err() {
            return String::new();
        }
        let lines: Vec<&str> = text.lines().collect();
        if lines.is_empty() {
            return String::new();
        }
        let start = lines.len().saturating_sub(15);
        format!(
            "\n--- {} stderr (tail) ---\n{}",
            self.name,
            lines[start..].join("\n")
        )
    }

    /// Close stdin, give the child a moment to exit, then kill it (same as dropping).
    pub fn shutdown(self) {
        drop(self);
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        // EOF on stdin ends most servers; a bench that aborts must not leave children behind.
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) if Instant::now() >= deadline => break,
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn trim_line(line: &[u8]) -> &[u8] {
    let mut end = line.len();
    while end > 0 && (line[end - 1] == b'\n' || line[end - 1] == b'\r') {
        end -= 1;
    }
    &line[..end]
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

/// Summary statistics of round-trip samples, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    pub n: usize,
    pub min: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

impl Stats {
    /// Compute from samples (nearest-rank percentiles). `None` when empty.
    pub fn from_samples(samples: &[Duration]) -> Option<Stats> {
        if samples.is_empty() {
            return None;
        }
        let mut us: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e6).collect();
        us.sort_by(f64::total_cmp);
        let mean = us.iter().sum::<f64>() / us.len() as f64;
        Some(Stats {
            n: us.len(),
            min: us[0],
            p50: percentile(&us, 50.0),
            p90: percentile(&us, 90.0),
            p99: percentile(&us, 99.0),
            max: us[us.len() - 1],
            mean,
        })
    }
}

/// Nearest-rank percentile of sorted, non-empty data.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    let n = sorted.len();
    let rank = ((p / 100.0) * n as f64).ceil() as usize;
    sorted[rank.clamp(1, n) - 1]
}

/// The memory of a process in KiB.
///
/// From `/proc/<pid>/status`: `RssAnon` is the figure that matters, the process's private
/// memory (heap, stacks, the loader's relocated data: pages only swap could take away);
/// `RssFile` is clean pages of the binary and the shared libraries, shared by every process
/// that maps them and dropped by the kernel when it needs the memory; `VmRSS` is the two (and
/// `RssShmem`) together.
///
/// From `/proc/<pid>/smaps_rollup`: `Pss_Anon`, the anonymous pages with each one shared with
/// another process (a fork that has not written it yet) split between them. The smaps
/// `Private_Clean`/`Private_Dirty` totals are not used: they count file pages too (the
/// binary's pages no other process maps, the SQLite WAL index's shared mapping).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Memory {
    pub vm_rss_kib: u64,
    pub vm_hwm_kib: u64,
    pub rss_anon_kib: u64,
    pub rss_file_kib: u64,
    /// `None` where the kernel has no `Pss_Anon` (before Linux 5.9) or no smaps_rollup.
    pub pss_anon_kib: Option<u64>,
}

/// Read the memory figures of `pid` (Linux only).
pub fn read_memory(pid: u32) -> Result<Memory> {
    let path = format!("/proc/{pid}/status");
    let text =
        std::fs::read_to_string(Path::new(&path)).with_context(|| format!("cannot read {path}"))?;
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let mut mem =
        parse_status(&text).with_context(|| format!("{path}: not a Linux status file"))?;
    mem.pss_anon_kib = kib_field(&rollup, "Pss_Anon:");
    Ok(mem)
}

fn parse_status(text: &str) -> Option<Memory> {
    Some(Memory {
        vm_rss_kib: kib_field(text, "VmRSS:")?,
        vm_hwm_kib: kib_field(text, "VmHWM:")?,
        rss_anon_kib: kib_field(text, "RssAnon:")?,
        rss_file_kib: kib_field(text, "RssFile:")?,
        pss_anon_kib: None,
    })
}

/// `Name:   1234 kB` in a `/proc` text.
fn kib_field(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .and_then(|n| n.trim().parse().ok())
}

/// The processes `pid` forked that still run its program without having exec'd another: the
/// same executable and the same command line (for `airlock run`, a sandboxed server's
/// supervisor and its init; a server that is itself `airlock demo-server` has another command
/// line). Depth-first over the whole tree below `pid`.
pub fn unexeced_forks(pid: u32) -> Vec<u32> {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok();
    let mut out = Vec::new();
    let mut todo = children(pid);
    while let Some(child) = todo.pop() {
        let same = exe.is_some()
            && std::fs::read_link(format!("/proc/{child}/exe")).ok() == exe
            && std::fs::read(format!("/proc/{child}/cmdline")).ok() == cmdline;
        if same {
            out.push(child);
        }
        todo.extend(children(child));
    }
    out.sort_unstable();
    out
}

/// The children of `pid`, from `/proc/<pid>/task/*/children`.
fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for task in tasks.flatten() {
        if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
            out.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
    }
    out
}

/// The median and range of some samples (empty: all zero).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    pub fn of(samples: impl IntoIterator<Item = f64>) -> Spread {
        let mut v: Vec<f64> = samples.into_iter().collect();
        if v.is_empty() {
            return Spread::default();
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Spread {
            median,
            min: v[0],
            max: v[n - 1],
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn split_quotes() {
        assert_eq!(
            split_command(r#"node "a b.js" stdio"#).unwrap(),
            vec!["node", "a b.js", "stdio"]
        );
        assert!(split_command("  ").is_err());
        assert!(split_command("a 'b").is_err());
    }

    #[test]
    fn status_and_rollup_fields() {
        let status = "Name:\tairlock\nVmHWM:\t   20000 kB\nVmRSS:\t   19000 kB\n\
                      RssAnon:\t    2900 kB\nRssFile:\t   16000 kB\nRssShmem:\t 100 kB\n";
        let m = parse_status(status).unwrap();
        assert_eq!(
            (m.vm_rss_kib, m.vm_hwm_kib, m.rss_anon_kib, m.rss_file_kib),
            (19000, 20000, 2900, 16000)
        );
        assert!(parse_status("VmRSS: 1 kB\n").is_none());
        let rollup = "Rss:  19000 kB\nPss_Anon:   2231 kB\nPss_File: 900 kB\n";
        assert_eq!(kib_field(rollup, "Pss_Anon:"), Some(2231));
        assert_eq!(kib_field(rollup, "Pss_Shmem:"), None);
    }

    #[test]
    fn median_and_range() {
        let s = Spread::of([3.0, 1.0, 2.0]);
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        assert_eq!(Spread::of([4.0, 1.0, 2.0, 3.0]).median, 2.5);
        assert_eq!(Spread::of([]), Spread::default());
    }

    #[test]
    fn this_process_has_no_unexeced_forks() {
        assert!(unexeced_forks(std::process::id()).is_empty());
        let m = read_memory(std::process::id()).unwrap();
        assert!(m.rss_anon_kib > 0 && m.vm_rss_kib >= m.rss_anon_kib);
    }

    #[test]
    fn sse_events_across_chunks() {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        let body = b"event: message\r\nid: 1\r\ndata: {\"a\":\r\ndata:1}\r\n\r\n: ping\n\nid: 2\ndata: x\n\n";
        for chunk in body.chunks(3) {
            p.push(chunk, &mut out);
        }
        assert_eq!(out, vec![b"{\"a\":\n1}".to_vec(), b"x".to_vec()]);
        let mut out = Vec::new();
        p.push(b"data: cr\r\rdata: only", &mut out);
        assert_eq!(out, vec![b"cr".to_vec()]);
    }

    #[test]
    fn stat_cpu_fields() {
        let stat = "1234 (a b) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 70 0 0 20 0 3 0";
        assert_eq!(parse_stat_cpu(stat), Some(Duration::from_millis(3200)));
        assert!(cpu_time(std::process::id()).is_ok());
        let stat = "cpu  100 5 50 9000 20 1 2 3 0 0\ncpu0 1 2 3 4\n";
        assert_eq!(parse_machine_busy(stat), Some(Duration::from_millis(1610)));
        assert!(machine_busy().is_ok());
    }

    #[test]
    fn flags_and_lists() {
        let args = ["--sessions", "1, 16,64", "--seconds", "0.5"].map(String::from);
        let f = Flags::parse(args.into_iter(), "usage").unwrap();
        assert_eq!(f.list("sessions", "1").unwrap(), vec![1, 16, 64]);
        assert_eq!(f.secs("seconds", 3.0).unwrap(), Duration::from_millis(500));
        assert!(f.check_known(&["sessions"]).is_err());
        assert!(Flags::parse(["--x"].map(String::from).into_iter(), "u").is_err());
    }

    #[test]
    fn nearest_rank() {
        let d: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&d, 50.0), 50.0);
        assert_eq!(percentile(&d, 99.0), 99.0);
        assert_eq!(percentile(&d, 0.0), 1.0);
        let s =
            Stats::from_samples(&[Duration::from_micros(10), Duration::from_micros(30)]).unwrap();
        assert_eq!(s.p50, 10.0);
        assert_eq!(s.mean, 20.0);
    }
}
