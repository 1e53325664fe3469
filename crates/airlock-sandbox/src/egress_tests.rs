#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use super::*;

#[derive(Default)]
struct Log(Mutex<Vec<EgressEvent>>);

impl EgressLog for Log {
    fn record(&self, e: &EgressEvent) -> Result<(), String> {
        self.0.lock().unwrap().push(e.clone());
        Ok(())
    }
}

struct Broken;

impl EgressLog for Broken {
    fn record(&self, _: &EgressEvent) -> Result<(), String> {
        Err("store is down".into())
    }
}

#[test]
fn request_heads_parse_into_a_target() {
    let t = parse_head(b"CONNECT API.Example.com:443 HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!(
        (t.host.as_str(), t.port, t.forward),
        ("api.example.com", 443, None)
    );
    let t = parse_head(b"GET http://h.example/a?b HTTP/1.1\r\nHost: h.example\r\n\r\n").unwrap();
    assert_eq!((t.host.as_str(), t.port), ("h.example", 80));
    assert_eq!(
        t.forward.unwrap(),
        b"GET /a?b HTTP/1.1\r\nHost: h.example\r\n\r\n".to_vec()
    );
    let t = parse_head(b"CONNECT [::1]:8443 HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!((t.host.as_str(), t.port), ("::1", 8443));
    for bad in [
        &b"CONNECT host HTTP/1.1\r\n\r\n"[..],
        b"GET https://h/ HTTP/1.1\r\n\r\n",
        b"GET http://u:p@h/ HTTP/1.1\r\n\r\n",
        b"CONNECT h:0 HTTP/1.1\r\n\r\n",
        b"CONNECT h:1 HTTP/2\r\n\r\n",
        b"CONNECT a b:1 HTTP/1.1\r\n\r\n",
    ] {
        assert!(parse_head(bad).is_err(), "{}", String::from_utf8_lossy(bad));
    }
}

/// A proxy on a loopback listener (standing in for the one made inside a namespace).
fn proxy(rules: &[&str], log: Arc<dyn EgressLog>) -> (Proxy, u16) {
    let inner = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = inner.local_addr().unwrap().port();
    let rules = rules
        .iter()
        .map(|r| EgressRule::parse(r).unwrap())
        .collect();
    (
        Proxy::start(OwnedFd::from(inner), rules, log).unwrap(),
        port,
    )
}

fn echo_server() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let mut s = s.unwrap();
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf).unwrap();
            s.write_all(&buf).unwrap();
        }
    });
    port
}

fn connect(proxy_port: u16, target: &str) -> (TcpStream, String) {
    let mut c = TcpStream::connect(("127.0.0.1", proxy_port)).unwrap();
    write!(c, "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        c.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    (c, String::from_utf8(head).unwrap())
}

#[test]
fn an_allowed_tunnel_works_and_both_ends_are_logged() {
    let target = echo_server();
    let log = Arc::new(Log::default());
    let (proxy, port) = proxy(&[&format!("127.0.0.1:{target}")], log.clone());
    let (mut c, head) = connect(port, &format!("127.0.0.1:{target}"));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    c.write_all(b"hello").unwrap();
    let mut back = [0u8; 5];
    c.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"hello");
    drop(c);

    let (mut c, head) = connect(port, &format!("127.0.0.1:{}", target + 1));
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    let mut body = String::new();
    c.read_to_string(&mut body).unwrap();
    assert!(
        body.contains("not in the sandbox's egress allowlist"),
        "{body}"
    );
    drop(proxy);

    // The tunnel's end is recorded once both directions have finished.
    let start = std::time::Instant::now();
    while !log
        .0
        .lock()
        .unwrap()
        .iter()
        .any(|e| e.phase == EgressPhase::Closed)
    {
        assert!(start.elapsed() < Duration::from_secs(10), "no closed event");
        std::thread::sleep(Duration::from_millis(5));
    }
    let events = log.0.lock().unwrap().clone();
    let phases: Vec<(&str, u16)> = events.iter().map(|e| (e.phase.as_str(), e.port)).collect();
    assert!(phases.contains(&("open", target)), "{events:?}");
    assert!(phases.contains(&("refused", target + 1)), "{events:?}");
    let closed = events
        .iter()
        .find(|e| e.phase == EgressPhase::Closed)
        .unwrap();
    assert_eq!((closed.bytes_out, closed.bytes_in), (5, 5));
    assert_eq!(closed.host, "127.0.0.1");
}

#[test]
fn a_connection_that_cannot_be_logged_is_not_made() {
    let target = echo_server();
    let (_proxy, port) = proxy(&[&format!("127.0.0.1:{target}")], Arc::new(Broken));
    let (_c, head) = connect(port, &format!("127.0.0.1:{target}"));
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
}

#[test]
fn a_name_that_resolves_to_loopback_needs_a_rule_naming_it() {
    let rule = EgressRule::parse("localhost:9").unwrap();
    assert!(resolve("localhost", 9, &rule).is_ok());
    let rule = EgressRule::parse("*.localhost:9").unwrap();
    assert!(resolve("x.localhost", 9, &rule).is_err());
}
