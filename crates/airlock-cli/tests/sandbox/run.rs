//! Through `airlock run`, with a real MCP server upstream: escapes are contained, a cap breach
//! is answered and audited, a kill ends the whole sandboxed tree, as root and as `nobody`.

use super::*;

/// A stdio MCP server whose tools try the ways out: read a path, connect to a port, fork
/// a child that ignores SIGTERM and leaves the process group, burn CPU.
const ESCAPER: &str = r#"
import json, os, signal, socket, sys, time
def answer(id, result):
    print(json.dumps({"jsonrpc": "2.0", "id": id, "result": result}), flush=True)
for line in sys.stdin:
    msg = json.loads(line)
    if "id" not in msg:
        continue
    method, id = msg["method"], msg["id"]
    if method == "initialize":
        answer(id, {"protocolVersion": msg["params"]["protocolVersion"], "capabilities": {"tools": {}},
                    "serverInfo": {"name": "escaper", "version": "0"}})
        continue
    if method != "tools/call":
        answer(id, {})
        continue
    name, args = msg["params"]["name"], msg["params"].get("arguments", {})
    try:
        if name == "echo":
            text = args["text"]
        elif name == "read":
            text = "READ " + open(args["path"]).read()
        elif name == "connect":
            socket.create_connection(("127.0.0.1", args["port"]), timeout=2)
            text = "CONNECTED"
        elif name == "fork":
            if os.fork() == 0:
                os.setsid()
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                time.sleep(300)
                os._exit(0)
            text = "forked"
        elif name == "cwd":
            text = os.getcwd() + (" DB-HERE" if os.path.exists("audit.db") else "")
        elif name == "unix":
            out = []
            for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                try:
                    s = socket.socket(socket.AF_UNIX, kind)
                    s.settimeout(2)
                    s.connect(args["path"]) if kind == socket.SOCK_STREAM else s.sendto(b"x", args["path"])
                    out.append("REACHED")
                except OSError as e:
                    out.append(f"refused {e.errno}")
            text = " ".join(out)
        elif name == "truncate":
            os.truncate(args["path"], 0)
            text = "TRUNCATED"
        elif name == "spin":
            while True:
                pass
        answer(id, {"content": [{"type": "text", "text": text}]})
    except Exception as e:
        answer(id, {"content": [{"type": "text", "text": f"{type(e).__name__}: {e}"}], "isError": True})
"#;

/// Alice's credential for `airlock kill` (the config holds its SHA-256).
const ALICE_TOKEN: &str = "alt_sandbox_test_token";

/// `airlock run` in front of the escaper, in profile `p`, driven frame by frame.
struct Gateway {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Gateway {
    fn start(case: &Case, mark: &str) -> Gateway {
        Gateway::start_as(case, mark, &[])
    }

    /// With `prefix` before the `airlock` command line (e.g. `setpriv … --`).
    fn start_as(case: &Case, mark: &str, prefix: &[&str]) -> Gateway {
        let server = case.path("escaper.py");
        fs::write(&server, ESCAPER).unwrap();
        fs::write(
            case.path("p.cedar"),
            "permit(principal, action, resource);\n",
        )
        .unwrap();
        let (program, before) = match prefix.split_first() {
            Some((p, rest)) => (*p, rest.to_vec()),
            None => (env!("CARGO_BIN_EXE_airlock"), Vec::new()),
        };
        let mut cmd = Command::new(program);
        cmd.args(&before);
        if !prefix.is_empty() {
            cmd.arg(env!("CARGO_BIN_EXE_airlock"));
        }
        // Started where its audit database is, as an operator would.
        let mut child = cmd
            .current_dir(case.dir.path())
            .arg("run")
            .arg("--config")
            .arg(case.path("airlock.toml"))
            .args(["--agent", "coder", "--session", "esc", "--", PYTHON])
            .arg(&server)
            .env("ESCAPER_MARK", mark)
            .env("AIRLOCK_LOG", "warn")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut g = Gateway {
            stdin: child.stdin.take(),
            child,
            lines: rx,
        };
        let init = g.request(serde_json::json!({"jsonrpc":"2.0","id":0,"method":"initialize",
            "params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}));
        assert!(init.get("result").is_some(), "{init}");
        g.send(&serde_json::json!({"jsonrpc":"2.0","method":"notifications/initialized"}));
        g
    }

    fn send(&mut self, frame: &serde_json::Value) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{frame}").unwrap();
        stdin.flush().unwrap();
    }

    fn next(&mut self) -> serde_json::Value {
        let line = self
            .lines
            .recv_timeout(Duration::from_secs(30))
            .expect("no answer from the gateway");
        serde_json::from_str(&line).unwrap()
    }

    fn request(&mut self, frame: serde_json::Value) -> serde_json::Value {
        self.send(&frame);
        self.next()
    }

    /// A tool call's text (or the whole error frame).
    fn tool(&mut self, id: i64, name: &str, args: serde_json::Value) -> String {
        let reply = self.request(
            serde_json::json!({"jsonrpc":"2.0","id":id,"method":"tools/call",
            "params":{"name":name,"arguments":args}}),
        );
        assert_eq!(reply["id"], id, "{reply}");
        match reply["result"]["content"][0]["text"].as_str() {
            Some(t) => t.to_owned(),
            None => reply.to_string(),
        }
    }
}

/// A read the sandbox refused: Landlock's `EACCES`, or `ENOENT` where the path lies in a
/// directory the sandbox's filesystem view hides.
fn refused(reply: &str) -> bool {
    reply.starts_with("PermissionError") || reply.starts_with("FileNotFoundError")
}

fn gateway_case(profile: &str) -> Case {
    Case::new(&format!(
        "[servers.esc]\nsandbox = \"p\"\n[sandbox.profiles.p]\n\
         env = [\"PATH\", \"ESCAPER_MARK\"]\n{profile}"
    ))
}

#[test]
fn through_airlock_run_escapes_are_contained_and_the_gateway_answers() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let case = gateway_case("cpu_seconds = 1\n");
    let secret = open_dir(&case.path("home/.ssh")).join("id_rsa");
    fs::write(&secret, "-----BEGIN OPENSSH PRIVATE KEY-----").unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o644)).unwrap();
    let mut g = Gateway::start(&case, "contained");

    let read = g.tool(1, "read", serde_json::json!({"path": secret}));
    assert!(refused(&read), "{read}");
    // The server's own script is readable (it is on its command line); the config is not.
    let own = g.tool(
        2,
        "read",
        serde_json::json!({"path": case.path("escaper.py")}),
    );
    assert!(own.starts_with("READ "), "{own}");
    let config = g.tool(
        3,
        "read",
        serde_json::json!({"path": case.path("airlock.toml")}),
    );
    assert!(refused(&config), "{config}");
    let connect = g.tool(4, "connect", serde_json::json!({"port": port}));
    assert!(!connect.contains("CONNECTED"), "{connect}");
    match listener.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("the listener outside was reached: {other:?}"),
    }
    // Contained, and the session goes on.
    assert_eq!(
        g.tool(5, "echo", serde_json::json!({"text": "still here"})),
        "still here"
    );

    // A miner: the CPU-seconds cap ends the server; the pending call gets a clear error.
    let reply = g.request(
        serde_json::json!({"jsonrpc":"2.0","id":6,"method":"tools/call",
        "params":{"name":"spin","arguments":{}}}),
    );
    assert_eq!(reply["error"]["code"], -31003, "{reply}");
    let message = reply["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("killed by Airlock's sandbox at its CPU-seconds cap"),
        "{message}"
    );
    drop(g.stdin.take());
    let status = g.child.wait().unwrap();
    assert_eq!(status.code(), Some(3));

    let records = case.records();
    let breach = records
        .iter()
        .find(|r| r.0 == "sandbox_breach")
        .unwrap_or_else(|| panic!("no breach record: {records:?}"));
    assert!(breach.3.contains("\"cap\":\"cpu_seconds\""), "{breach:?}");
    let exit = records.iter().find(|r| r.0 == "upstream_exit").unwrap();
    assert!(exit.3.contains("CPU-seconds cap"), "{exit:?}");
}

/// Host pids of the live processes carrying `ESCAPER_MARK=<mark>` in their environment,
/// but for `gateway` (Airlock itself has it: it passes it on).
fn marked(mark: &str, gateway: u32) -> Vec<i32> {
    let needle = format!("ESCAPER_MARK={mark}");
    fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| i64::from(*pid) != i64::from(gateway))
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/environ"))
                .map(|env| env.split(|b| *b == 0).any(|v| v == needle.as_bytes()))
                .unwrap_or(false)
        })
        .filter(|pid| {
            // Zombies are dead already.
            fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| {
                    s.rsplit(')')
                        .next()
                        .is_some_and(|r| !r.trim_start().starts_with('Z'))
                })
                .unwrap_or(false)
        })
        .collect()
}

#[test]
fn a_kill_ends_the_whole_sandboxed_tree_and_the_gateway_answers() {
    let case = gateway_case("");
    // alice, with a credential, may stop agents.
    let hash = {
        let out = Command::new("sha256sum")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                c.stdin.take().unwrap().write_all(ALICE_TOKEN.as_bytes())?;
                c.wait_with_output()
            })
            .unwrap();
        String::from_utf8(out.stdout).unwrap()[..64].to_owned()
    };
    let config = fs::read_to_string(case.path("airlock.toml"))
        .unwrap()
        .replace(
            "[humans.alice]\n",
            &format!("[humans.alice]\ntoken_sha256 = \"{hash}\"\n"),
        );
    fs::write(case.path("airlock.toml"), config).unwrap();
    let mark = format!("kill-{}", std::process::id());
    let mut g = Gateway::start(&case, &mark);
    // A child that leaves the process group and ignores SIGTERM.
    assert_eq!(g.tool(1, "fork", serde_json::json!({})), "forked");
    let start = Instant::now();
    let gw = g.child.id();
    // Supervisor, init, the server and its child.
    while marked(&mark, gw).len() < 4 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no marked processes"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let pids = marked(&mark, gw);

    let out = Command::new(env!("CARGO_BIN_EXE_airlock"))
        .args([
            "kill",
            "--agent",
            "coder",
            "--reason",
            "escape drill",
            "--config",
        ])
        .arg(case.path("airlock.toml"))
        .args(["--as", "alice"])
        .env("AIRLOCK_TOKEN", ALICE_TOKEN)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let start = Instant::now();
    while !marked(&mark, gw).is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the sandboxed tree survived the kill: {pids:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The gateway is up and says why nothing runs.
    let refused = g.tool(2, "echo", serde_json::json!({"text": "x"}));
    assert!(
        refused.contains("-31007") && refused.contains("escape drill"),
        "{refused}"
    );
    drop(g.stdin.take());
    assert_eq!(g.child.wait().unwrap().code(), Some(4));
}

#[test]
fn as_nobody_airlock_run_sandboxes_its_upstream_too() {
    let nobody = [
        "setpriv",
        "--reuid=nobody",
        "--regid=nogroup",
        "--clear-groups",
        "--",
    ];
    let probe = Command::new(nobody[0])
        .args(&nobody[1..])
        .args([env!("CARGO_BIN_EXE_airlock"), "sandbox", "probe"])
        .output()
        .unwrap();
    let report = stdout(&probe);
    assert!(probe.status.success(), "{}", text(&probe));
    // Unprivileged: no cgroup can be made, the rlimits are the caps, and probe says so.
    assert!(report.contains("in force: rlimits"), "{report}");
    let case = gateway_case("");
    let secret = case.path("id_rsa");
    fs::write(&secret, "secret").unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o644)).unwrap();
    let host = super::escape::HostSockets::bind(super::escape::tmp_socket("nobody-run"));
    let mut g = Gateway::start_as(&case, "nobody", &nobody);
    let read = g.tool(1, "read", serde_json::json!({"path": secret}));
    assert!(refused(&read), "{read}");
    assert_eq!(g.tool(2, "echo", serde_json::json!({"text": "ok"})), "ok");
    // The gateway's own control socket is this very user's (mode 0700 grants the sandbox,
    // which runs as nobody too, everything): only the sandbox keeps it out of reach.
    let own = own_control_socket(&case);
    for (id, path) in [(3, &own), (4, &host.stream_path), (5, &host.dgram_path)] {
        let r = g.tool(id, "unix", serde_json::json!({ "path": path }));
        assert!(!r.contains("REACHED"), "{} reached: {r}", path.display());
    }
    host.assert_untouched();
    drop(g.stdin.take());
    assert_eq!(g.child.wait().unwrap().code(), Some(0));
}

/// The one control socket the gateway of `case` bound beside its audit database.
fn own_control_socket(case: &Case) -> PathBuf {
    let dir = airlock_control::socket_dir(&case.path("audit.db"));
    let socks: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sock"))
        .collect();
    assert_eq!(socks.len(), 1, "{socks:?}");
    socks[0].clone()
}

#[test]
fn issue15_through_airlock_run_no_host_socket_no_control_socket_no_audit_write() {
    let case = gateway_case("");
    let host = super::escape::HostSockets::bind(super::escape::tmp_socket("run"));
    let mut g = Gateway::start(&case, "issue15");
    // The gateway's own control socket, reachable by mode (as it is to a sandbox running as
    // the gateway's own user): only the sandbox keeps it out of reach.
    let own = own_control_socket(&case);
    for p in [own.parent().unwrap(), own.as_path()] {
        fs::set_permissions(p, fs::Permissions::from_mode(0o777)).unwrap();
    }
    let db = case.path("audit.db");
    for (id, path) in [(1, &own), (2, &host.stream_path), (3, &host.dgram_path)] {
        let r = g.tool(id, "unix", serde_json::json!({ "path": path }));
        assert!(r.starts_with("refused"), "{} reached: {r}", path.display());
        assert!(!r.contains("REACHED"), "{} reached: {r}", path.display());
    }
    host.assert_untouched();
    // It did not start in the gateway's working directory, where the database is.
    let cwd = g.tool(4, "cwd", serde_json::json!({}));
    assert!(!cwd.contains("DB-HERE"), "{cwd}");
    assert_ne!(Path::new(&cwd), case.dir.path(), "{cwd}");
    let t = g.tool(5, "truncate", serde_json::json!({ "path": db }));
    assert!(!t.contains("TRUNCATED"), "{t}");
    assert_eq!(
        g.tool(6, "echo", serde_json::json!({"text": "still here"})),
        "still here"
    );
    drop(g.stdin.take());
    assert_eq!(g.child.wait().unwrap().code(), Some(0));
    assert!(fs::metadata(&db).unwrap().len() > 0);
    // The chain is whole: nothing was truncated or overwritten.
    let verify = Command::new(env!("CARGO_BIN_EXE_airlock"))
        .args(["audit", "verify", "--config"])
        .arg(case.path("airlock.toml"))
        .output()
        .unwrap();
    assert!(verify.status.success(), "{}", text(&verify));
}
