//! Stand-alone entry point: `airlock-demo-server --state FILE [--reset]`. The `airlock` CLI offers
//! the same as `airlock demo-server`; this binary exists so tests can spawn the server directly.

use std::path::PathBuf;
use std::process::ExitCode;

use airlock_demo_server::{serve_stdio, DemoOptions};

const USAGE: &str = "usage: airlock-demo-server --state FILE [--reset]";

fn parse_args(args: impl Iterator<Item = String>) -> Result<DemoOptions, String> {
    let mut state_path = None;
    let mut reset = false;
    let mut args = args;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--state" => {
                let v = args.next().ok_or("--state needs a file")?;
                state_path = Some(PathBuf::from(v));
            }
            "--reset" => reset = true,
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    let state_path = state_path.ok_or_else(|| format!("--state is required\n{USAGE}"))?;
    Ok(DemoOptions { state_path, reset })
}

fn main() -> ExitCode {
    let opts = match parse_args(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("airlock-demo-server: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve_stdio(opts)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("airlock-demo-server: {e:#}");
            ExitCode::FAILURE
        }
    }
}
