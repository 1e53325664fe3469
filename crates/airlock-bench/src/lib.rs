//! airlock-bench: the pieces shared by the hot-path benchmark binaries.
//!
//! * [`Conn`] — a minimal blocking MCP client over a child process's stdio, built to add as
//!   little noise as possible to what it measures: one `write` per request, blocking reads on
//!   the calling thread (no thread hand-off), timestamps taken as soon as a line arrives.
//! * [`Stats`] — percentiles over a set of round-trip samples.
//! * [`split_command`] — turn `"CMD ARGS"` into an argv.
//!
//! The binaries are `bare-relay` (the peer Airlock is compared against) and `airlock-bench`
//! (the `latency` and `rss` subcommands).

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
