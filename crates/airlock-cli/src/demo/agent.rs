//! The scripted agents' side of MCP: a child process spoken to over stdio, one JSON-RPC line at
//! a time. The child is either the demo company server itself ("without Airlock") or
//! `airlock run` wrapping it ("with Airlock"); the agent's script cannot tell them apart except
//! by the answers it gets.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use serde_json::{json, Value};

/// How long a call may go unanswered before the demo gives up on it (a held call is answered
/// as soon as the human decides, well within this).
pub(crate) const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

/// What a tool call came back with.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Reply {
    /// The tool ran: its structured result (or `{"text": …}`).
    Ok(Value),
    /// The tool ran and reported an error (`isError`).
    ToolError(String),
    /// Airlock (or the server) refused with a JSON-RPC error.
    Refused { code: i64, message: String },
    /// The session is over: the process closed its stdout (a kill ends the upstream, and the
    /// gateway may end the session).
    Gone,
}

impl Reply {
    pub(crate) fn is_ok(&self) -> bool {
        matches!(self, Reply::Ok(_))
    }

    /// True when Airlock stopped the agent (a kill or a breaker pause) or the session ended.
    pub(crate) fn is_stopped(&self) -> bool {
        match self {
            Reply::Refused { code, .. } => *code == i64::from(airlock_gateway::codes::KILLED),
            Reply::Gone => true,
            _ => false,
        }
    }

    /// One short line for the transcript.
    pub(crate) fn summary(&self) -> String {
        let text = match self {
            Reply::Ok(v) => format!("ok {v}"),
            Reply::ToolError(e) => format!("tool error: {e}"),
            Reply::Refused { code, message } => format!("{code}: {message}"),
            Reply::Gone => "session ended".to_owned(),
        };
        text.replace('\n', " ").chars().take(110).collect()
    }
}

/// A running MCP session with one child process.
pub(crate) struct Session {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    next_id: i64,
    /// Answers that arrived while waiting for another id (a held call answered late).
    pending: Vec<Value>,
}

impl Session {
    /// Starts `program args…` in `dir` and runs the MCP handshake; the child's errors go to
    /// `log` (appended), so they do not break the table but are there when something fails.
    pub(crate) fn start(
        program: &Path,
        args: &[String],
        dir: &Path,
        log: &Path,
    ) -> anyhow::Result<Session> {
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("cannot open {}", log.display()))?;
        let mut child = Command::new(program)
            .args(args)
            .current_dir(dir)
            .env("AIRLOCK_LOG", "error")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("cannot start {}", program.display()))?;
        let stdin = child.stdin.take().ok_or_else(|| anyhow!("no stdin pipe"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("no stdout pipe"))?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut s = Session {
            child,
            stdin: Some(stdin),
            lines,
            next_id: 1,
            pending: Vec::new(),
        };
        let id = s.send_request(
            "initialize",
            json!({"protocolVersion": "2025-11-25", "capabilities": {},
                   "clientInfo": {"name": "airlock-demo-agent", "version": "1"}}),
        )?;
        match s.wait(id, REPLY_TIMEOUT)? {
            Some(v) if v.get("result").is_some() => {}
            other => {
                return Err(anyhow!(
                    "initialize failed ({}; its errors are in {})",
                    other.map_or_else(|| "no answer".to_owned(), |v| v.to_string()),
                    log.display()
                ))
            }
        }
        s.write_line(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))?;
        Ok(s)
    }

    fn write_line(&mut self, frame: &Value) -> anyhow::Result<()> {
        let stdin = self.stdin.as_mut().ok_or_else(|| anyhow!("stdin closed"))?;
        let mut line = frame.to_string();
        line.push('\n');
        stdin.write_all(line.as_bytes())?;
        stdin.flush()?;
        Ok(())
    }

    /// Sends a request and returns its id; a write to a session that ended is not an error
    /// (the wait that follows reports it).
    pub(crate) fn send_request(&mut self, method: &str, params: Value) -> anyhow::Result<i64> {
        let id = self.next_id;
        self.next_id += 1;
        let frame = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        if self.write_line(&frame).is_err() {
            self.stdin = None;
        }
        Ok(id)
    }

    /// Waits up to `limit` for the answer to `id`: `Ok(None)` when it did not come in time,
    /// `Ok(Some(Value::Null))` when the session ended first.
    pub(crate) fn wait(&mut self, id: i64, limit: Duration) -> anyhow::Result<Option<Value>> {
        let wanted = json!(id);
        if let Some(i) = self
            .pending
            .iter()
            .position(|v| v.get("id") == Some(&wanted))
        {
            return Ok(Some(self.pending.swap_remove(i)));
        }
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match self.lines.recv_timeout(left) {
                Ok(line) => line,
                Err(RecvTimeoutError::Timeout) => return Ok(None),
                Err(RecvTimeoutError::Disconnected) => return Ok(Some(Value::Null)),
            };
            let Ok(value) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if value.get("method").is_some() {
                continue; // a notification or a server request: the scripted agent ignores it
            }
            if value.get("id") == Some(&wanted) {
                return Ok(Some(value));
            }
            self.pending.push(value);
        }
    }

    /// Calls a tool and waits for the answer.
    pub(crate) fn call(&mut self, tool: &str, args: Value) -> anyhow::Result<Reply> {
        let id = self.send_request("tools/call", json!({"name": tool, "arguments": args}))?;
        match self.wait(id, REPLY_TIMEOUT)? {
            Some(v) => Ok(classify(&v)),
            None => Err(anyhow!("{tool}: no answer within {REPLY_TIMEOUT:?}")),
        }
    }

    /// Closes stdin and waits for the process to exit.
    pub(crate) fn finish(mut self) -> anyhow::Result<()> {
        self.stdin.take();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return Err(anyhow!("the session did not end after its stdin closed"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.stdin.take();
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Turns a JSON-RPC answer into a [`Reply`].
pub(crate) fn classify(v: &Value) -> Reply {
    if v.is_null() {
        return Reply::Gone;
    }
    if let Some(err) = v.get("error") {
        return Reply::Refused {
            code: err.get("code").and_then(Value::as_i64).unwrap_or(0),
            message: err
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
        };
    }
    let result = v.get("result").cloned().unwrap_or(Value::Null);
    let text = result
        .pointer("/content/0/text")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    if result.get("isError").and_then(Value::as_bool) == Some(true) {
        return Reply::ToolError(text);
    }
    Reply::Ok(
        result
            .get("structuredContent")
            .cloned()
            .unwrap_or_else(|| json!({ "text": text })),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_classified() {
        assert_eq!(classify(&Value::Null), Reply::Gone);
        let stopped = classify(&json!({"id": 1, "error": {"code": -31007, "message": "stopped"}}));
        assert!(stopped.is_stopped());
        let denied = classify(&json!({"id": 1, "error": {"code": -31001, "message": "no"}}));
        assert!(!denied.is_stopped() && !denied.is_ok());
        let ok = classify(&json!({"id": 1, "result": {"structuredContent": {"n": 1}}}));
        assert_eq!(ok, Reply::Ok(json!({"n": 1})));
        let text =
            classify(&json!({"id": 1, "result": {"content": [{"type": "text", "text": "hi"}]}}));
        assert_eq!(text, Reply::Ok(json!({"text": "hi"})));
        let err = classify(&json!({"id": 1, "result": {"isError": true,
            "content": [{"type": "text", "text": "bad"}]}}));
        assert_eq!(err, Reply::ToolError("bad".into()));
    }
}
