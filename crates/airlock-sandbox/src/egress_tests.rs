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

// === issue 15, item 3: no way to this machine, the link or a private network ===

#[test]
fn every_form_of_a_non_public_address_is_classified() {
    use Class::*;
    let cases: &[(&str, Option<Class>)] = &[
        ("0.0.0.0", Some(Unspecified)),
        ("0.1.2.3", Some(Unspecified)),
        ("::", Some(Unspecified)),
        ("127.0.0.1", Some(Loopback)),
        ("127.255.1.2", Some(Loopback)),
        ("::1", Some(Loopback)),
        ("::ffff:127.0.0.1", Some(Loopback)),
        ("::127.0.0.1", Some(Loopback)),
        ("64:ff9b::7f00:1", Some(Loopback)),
        ("2002:7f00:1::1", Some(Loopback)),
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", Some(Loopback)), // Teredo, client 127.0.0.1
        ("169.254.169.254", Some(LinkLocal)),
        ("::ffff:169.254.169.254", Some(LinkLocal)),
        ("64:ff9b::a9fe:a9fe", Some(LinkLocal)),
        ("fe80::1", Some(LinkLocal)),
        ("febf::1", Some(LinkLocal)),
        ("10.0.0.1", Some(Private)),
        ("172.16.0.1", Some(Private)),
        ("172.31.255.255", Some(Private)),
        ("192.168.1.1", Some(Private)),
        ("100.64.0.1", Some(Private)),
        ("::ffff:10.1.2.3", Some(Private)),
        ("fc00::1", Some(Private)),
        ("fd12:3456::1", Some(Private)),
        ("fec0::1", Some(Private)),
        ("224.0.0.1", Some(Multicast)),
        ("255.255.255.255", Some(Multicast)),
        ("ff02::1", Some(Multicast)),
        ("240.0.0.1", Some(Reserved)),
        ("192.0.2.1", Some(Reserved)),
        ("2001:db8::1", Some(Reserved)),
        ("::8.8.8.8", Some(Reserved)),
        ("64:ff9b:1::1", Some(Reserved)),
        // Public, in each form.
        ("8.8.8.8", None),
        ("172.32.0.1", None),
        ("100.128.0.1", None),
        ("169.255.0.1", None),
        ("::ffff:8.8.8.8", None),
        ("64:ff9b::808:808", None),
        ("2606:4700::1111", None),
    ];
    for (text, class) in cases {
        let ip: IpAddr = text.parse().unwrap();
        assert_eq!(not_public(ip), *class, "{text}");
    }
}

fn addrs(list: &[&str]) -> Vec<SocketAddr> {
    list.iter()
        .map(|a| SocketAddr::new(a.parse().unwrap(), 443))
        .collect()
}

#[test]
fn a_name_resolving_to_a_non_public_address_is_refused() {
    // A name in the allowlist whose DNS answer points inside: loopback in every form, the
    // metadata service, the LAN.
    let rule = EgressRule::parse("api.example.com").unwrap();
    for inside in [
        "127.0.0.1",
        "::1",
        "::ffff:127.0.0.1",
        "0.0.0.0",
        "::",
        "169.254.169.254",
        "fe80::1",
        "10.0.0.5",
        "172.20.1.1",
        "192.168.0.10",
        "100.100.100.200",
        "fd00::5",
        "64:ff9b::a00:5",
    ] {
        let why = vet("api.example.com", addrs(&[inside]), &rule).unwrap_err();
        assert!(
            why.contains("only a rule naming that address"),
            "{inside}: {why}"
        );
    }
    // A public answer passes; a mixed answer keeps only the public addresses.
    assert_eq!(
        vet(
            "api.example.com",
            addrs(&["8.8.8.8", "10.0.0.1", "::1"]),
            &rule
        )
        .unwrap(),
        addrs(&["8.8.8.8"])
    );
}

#[test]
fn only_a_rule_naming_the_address_reaches_it() {
    let ok = |rule: &str, host: &str, ip: &str| {
        vet(host, addrs(&[ip]), &EgressRule::parse(rule).unwrap()).is_ok()
    };
    assert!(ok("10.0.0.5:443", "10.0.0.5", "10.0.0.5"));
    assert!(ok("[fd00::1]:443", "fd00::1", "fd00::1"));
    assert!(ok(
        "169.254.169.254:443",
        "169.254.169.254",
        "169.254.169.254"
    ));
    assert!(ok("localhost:443", "localhost", "127.0.0.1"));
    assert!(ok("localhost:443", "localhost", "::1"));
    // `localhost` names loopback, nothing else; a wildcard names no address.
    assert!(!ok("localhost:443", "localhost", "10.0.0.1"));
    assert!(!ok("*.1:*", "127.0.0.1", "127.0.0.1"));
    assert!(!ok("*.5:*", "10.0.0.5", "10.0.0.5"));
    assert!(!ok("*.localhost:443", "a.localhost", "127.0.0.1"));
    // Another address of the same kind is not named by the rule.
    assert!(!ok("10.0.0.5:443", "10.0.0.5", "10.0.0.6"));
    // The unspecified address is never dialled, named or not.
    assert!(!ok("0.0.0.0:443", "0.0.0.0", "0.0.0.0"));
    // The real resolver: `localhost` is loopback, reachable only through a rule naming it.
    assert!(resolve("localhost", 9, &EgressRule::parse("localhost:9").unwrap()).is_ok());
    assert!(resolve("localhost", 9, &EgressRule::parse("example.com:9").unwrap()).is_err());
}

#[test]
fn unusual_spellings_of_an_ipv4_address_are_refused() {
    for host in [
        "2130706433",
        "0x7f000001",
        "127.1",
        "0177.0.0.1",
        "127.0.1",
        "0x7f.0.0.1",
        "a.b.0x10",
        "10.1.2.3.4",
    ] {
        let head = format!("CONNECT {host}:443 HTTP/1.1\r\n\r\n");
        let e = parse_head(head.as_bytes()).unwrap_err();
        assert!(e.contains("spells an IPv4 address"), "{host}: {e}");
    }
    for host in [
        "127.0.0.1",
        "127.0.0.1.",
        "example.com",
        "1password.com",
        "x.123abc",
    ] {
        let head = format!("CONNECT {host}:443 HTTP/1.1\r\n\r\n");
        assert!(parse_head(head.as_bytes()).is_ok(), "{host}");
    }
}

#[test]
fn a_wildcard_never_opens_loopback_and_the_refusal_is_logged() {
    let target = echo_server();
    let log = Arc::new(Log::default());
    // `*.1` matches the text "127.0.0.1"; it names no address.
    let (_proxy, port) = proxy(&["*.1:*"], log.clone());
    for host in ["127.0.0.1".to_owned(), "[::ffff:127.0.0.1]".to_owned()] {
        let (_c, head) = connect(port, &format!("{host}:{target}"));
        assert!(head.starts_with("HTTP/1.1 403"), "{host}: {head}");
    }
    let (_c, head) = connect(port, &format!("2130706433:{target}"));
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    // Each refusal is answered, then recorded.
    let start = std::time::Instant::now();
    while log.0.lock().unwrap().len() < 3 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "refusals not logged"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let events = log.0.lock().unwrap().clone();
    assert_eq!(events.len(), 3, "{events:?}");
    assert!(events.iter().all(|e| e.phase == EgressPhase::Refused));
    let loopback = events.iter().filter(|e| e.reason.contains("loopback"));
    assert_eq!(loopback.count(), 2, "{events:?}");
}
