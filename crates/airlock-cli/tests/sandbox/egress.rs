//! Egress: only through Airlock's proxy, only to allowlisted hosts, every connection audited.

use super::*;

/// A loopback HTTP server outside every namespace: answers each request with `hello`.
fn http_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { return };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                if s.read(&mut byte).unwrap_or(0) == 0 {
                    break;
                }
                head.push(byte[0]);
            }
            let _ = s.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
            );
        }
    });
    port
}

#[test]
fn egress_reaches_only_allowlisted_hosts_through_the_proxy_and_is_audited() {
    let port = http_server();
    // Not on the list: must never see a connection.
    let other = TcpListener::bind("127.0.0.1:0").unwrap();
    other.set_nonblocking(true).unwrap();
    let other_port = other.local_addr().unwrap().port();
    let case = Case::new(&format!(
        "[sandbox.profiles.net]\negress = [\"127.0.0.1:{port}\"]\n"
    ));
    let code = format!(
        r#"
import os, socket, urllib.request, urllib.error
print("proxy", os.environ["HTTPS_PROXY"])
# An ordinary client: http:// through HTTP_PROXY.
print("GET", urllib.request.urlopen("http://127.0.0.1:{port}/x", timeout=10).read())
# A tunnel, as HTTPS clients make them.
s = socket.create_connection(("127.0.0.1", 3128), timeout=10)
s.sendall(b"CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n")
print("CONNECT", s.recv(39).split(b"\r\n")[0])
s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
data = b""
while True:
    chunk = s.recv(4096)
    if not chunk: break
    data += chunk
print("TUNNEL", data.endswith(b"hello"))
for url in ["http://127.0.0.1:{other_port}/", "http://example.com/"]:
    try:
        urllib.request.urlopen(url, timeout=10)
        print("REACHED", url)
    except urllib.error.HTTPError as e:
        print("refused", e.code, e.read().decode().strip())
for p in [{port}, {other_port}]:
    try:
        socket.create_connection(("127.0.0.1", p), timeout=2)
        print("DIRECT", p)
    except OSError as e:
        print("direct refused", e.errno)
"#
    );
    let o = case.python("net", &code);
    assert!(o.status.success(), "{}", text(&o));
    let out = stdout(&o);
    assert!(out.contains("proxy http://127.0.0.1:3128"), "{out}");
    assert!(out.contains("GET b'hello'"), "{out}");
    assert!(
        out.contains("CONNECT b'HTTP/1.1 200 Connection established'"),
        "{out}"
    );
    assert!(out.contains("TUNNEL True"), "{out}");
    assert!(!out.contains("REACHED"), "{out}");
    assert!(
        out.contains(&format!(
            "refused 403 Airlock egress: 127.0.0.1:{other_port} is not in the sandbox's egress allowlist"
        )),
        "{out}"
    );
    assert!(
        out.contains("refused 403 Airlock egress: example.com:80 is not"),
        "{out}"
    );
    assert!(!out.contains("DIRECT"), "{out}");
    assert_eq!(out.matches("direct refused").count(), 2, "{out}");
    match other.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("the unlisted port was reached: {other:?}"),
    }

    // Every connection is in the audit chain: opened, closed with its bytes, or refused.
    let egress: Vec<_> = case
        .records()
        .into_iter()
        .filter(|r| r.0 == "egress")
        .collect();
    let with = |decision: &str, status: &str| {
        egress
            .iter()
            .filter(|r| r.1 == decision && r.2 == status)
            .map(|r| serde_json::from_str::<serde_json::Value>(&r.3).unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(with("allow", "open").len(), 2, "{egress:?}");
    let closed = with("allow", "closed");
    assert_eq!(closed.len(), 2, "{egress:?}");
    for c in &closed {
        assert_eq!(c["port"], port);
        assert!(c["bytes_in"].as_u64().unwrap() > 5, "{c}");
        assert!(c["bytes_out"].as_u64().unwrap() > 0, "{c}");
    }
    let refused = with("deny", "refused");
    let hosts: Vec<String> = refused
        .iter()
        .map(|r| format!("{}:{}", r["host"].as_str().unwrap(), r["port"]))
        .collect();
    assert_eq!(
        hosts,
        [
            format!("127.0.0.1:{other_port}"),
            "example.com:80".to_owned()
        ],
        "{egress:?}"
    );
}

#[test]
fn egress_without_the_network_layer_is_refused_before_anything_starts() {
    let case = Case::new("[sandbox.profiles.p]\negress = [\"example.com\"]\noff = [\"network\"]\n");
    let o = case.python("p", "print('RAN')");
    // Caught when the config loads: a usage error pointing at the line, nothing runs.
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(!stdout(&o).contains("RAN"));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("egress needs the network and namespaces layers"),
        "{err}"
    );
}

#[test]
fn as_nobody_egress_works_the_same() {
    let port = http_server();
    let case = Case::new(&format!(
        "[sandbox.profiles.net]\negress = [\"127.0.0.1:{port}\"]\n"
    ));
    let code = format!(
        r#"
import urllib.request, urllib.error
print("GET", urllib.request.urlopen("http://127.0.0.1:{port}/", timeout=10).read())
try:
    urllib.request.urlopen("http://127.0.0.1:{other}/", timeout=10)
    print("REACHED")
except urllib.error.HTTPError as e:
    print("refused", e.code)
"#,
        other = port.wrapping_add(1)
    );
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"]);
    let inner = case.exec_cmd("net", &[PYTHON, "-c", &code]);
    cmd.arg(inner.get_program()).args(inner.get_args());
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let out = stdout(&o);
    assert!(out.contains("GET b'hello'"), "{out}");
    assert!(out.contains("refused 403"), "{out}");
    assert!(!out.contains("REACHED"), "{out}");
    let mut statuses: Vec<String> = case
        .records()
        .into_iter()
        .filter(|r| r.0 == "egress")
        .map(|r| r.2)
        .collect();
    // A tunnel's end can be recorded after a later refusal.
    statuses.sort();
    assert_eq!(statuses, ["closed", "open", "refused"], "{statuses:?}");
}
