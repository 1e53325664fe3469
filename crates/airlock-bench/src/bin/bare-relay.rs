//! `bare-relay -- CMD ARGS…`: the peer that Airlock is measured against.
//!
//! Spawns CMD with piped stdin/stdout (stderr inherited) and forwards newline-delimited frames
//! both ways, one std thread per direction with blocking I/O and a flush per line. Each frame is
//! parsed with serde_json and hashed with SHA-256 before its original bytes are forwarded: the
//! minimum work any inspecting proxy must do, and nothing more. Exits when either side closes.

use std::hint::black_box;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::process::{Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use sha2::{Digest, Sha256};

/// Which direction finished first.
enum Closed {
    /// The agent closed our stdin.
    Agent,
    /// The server closed its stdout.
    Server,
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("bare-relay: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<ExitCode> {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("--") => {}
        _ => bail!("usage: bare-relay -- CMD ARGS…"),
    }
    let prog = args
        .next()
        .ok_or_else(|| anyhow!("usage: bare-relay -- CMD ARGS…"))?;
    let mut child = Command::new(&prog)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("cannot spawn {prog}"))?;
    let child_in = child
        .stdin
        .take()
        .ok_or_else(|| anyhow!("no child stdin"))?;
    let child_out = child
        .stdout
        .take()
        .ok_or_else(|| anyhow!("no child stdout"))?;

    let (tx, rx) = mpsc::channel();
    let up_tx = tx.clone();
    thread::Builder::new()
        .name("agent->server".into())
        .spawn(move || {
            // StdinLock is already buffered; the child's stdin is dropped (EOF) when this ends.
            let r = pump(std::io::stdin().lock(), child_in);
            let _ = up_tx.send((Closed::Agent, r));
        })?;
    thread::Builder::new()
        .name("server->agent".into())
        .spawn(move || {
            let r = pump(
                BufReader::with_capacity(1 << 16, child_out),
                std::io::stdout().lock(),
            );
            let _ = tx.send((Closed::Server, r));
        })?;

    let (first, result) = rx.recv().context("relay threads vanished")?;
    if let Err(e) = result {
        eprintln!("bare-relay: {e:#}");
    }
    if let Closed::Agent = first {
        // The agent is gone and the server has seen EOF: let it finish its output and exit.
        let _ = rx.recv_timeout(Duration::from_secs(2));
    }
    let status = match child.try_wait()? {
        Some(s) => s,
        None => {
            let _ = child.kill();
            child.wait()?
        }
    };
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(c) => ExitCode::from(u8::try_from(c).unwrap_or(1)),
        None => ExitCode::FAILURE,
    })
}

/// Forward lines from `from` to `to` until EOF, parsing and hashing each one on the way.
fn pump(mut from: impl BufRead, to: impl Write) -> Result<()> {
    let mut to = BufWriter::with_capacity(1 << 16, to);
    let mut line = Vec::with_capacity(4096);
    loop {
        line.clear();
        if from.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        inspect(&line);
        to.write_all(&line)?;
        to.flush()?;
    }
    to.flush()?;
    Ok(())
}

/// The work an inspecting proxy cannot avoid: parse the frame and digest it.
/// The outcome is discarded (black_box keeps the optimiser from dropping the work).
fn inspect(line: &[u8]) {
    let body = line.strip_suffix(b"\n").unwrap_or(line);
    let parsed = serde_json::from_slice::<serde_json::Value>(body);
    black_box(&parsed);
    // Hex, as an audit record would carry it.
    let digest = hex::encode(Sha256::digest(body));
    black_box(&digest);
}
