//! The egress proxy: the only way out of a sandbox's network namespace.
//!
//! Inside, the namespace has `lo` and nothing else. Its supervisor listens on
//! `127.0.0.1:`[`PROXY_PORT`] there and hands the listening socket to Airlock (a socket keeps
//! the namespace it was made in), so Airlock accepts connections from inside while it dials
//! out from the host's network. Each connection is one HTTP request head:
//! `CONNECT host:port` (a tunnel, for HTTPS) or an absolute-form `GET http://host/…`
//! (forwarded as is). The host and port must match one of the profile's `egress` patterns;
//! Airlock resolves the name (the sandbox has no DNS) and dials only public addresses, unless
//! the pattern itself is the address (or `localhost`, for loopback): see [`vet`]. An IPv4
//! address spelled other than as four decimal parts is refused. Every connection, allowed or refused,
//! goes to the [`EgressLog`] — for `airlock run` and `airlock exec`, the audit chain — and an
//! allowed one is dialled only once its opening is recorded.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{
    IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs,
};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use airlock_config::EgressRule;

/// The port the proxy has inside every sandbox (the namespace is private, so it never clashes).
pub const PROXY_PORT: u16 = 3128;
/// A request head larger than this is refused.
const MAX_HEAD: usize = 16 * 1024;
/// Time for the client to send its request head, and for the dial out.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections open at once per sandbox; more are refused (503).
const MAX_CONNECTIONS: u64 = 64;
/// When the sandbox ends, how long its connections get to record their end.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// One connection through the proxy, as the log sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressEvent {
    /// Numbered per sandbox, so an `open` and its `closed` pair up.
    pub conn: u64,
    /// The host the sandboxed process asked for (a name or an address).
    pub host: String,
    pub port: u16,
    pub phase: EgressPhase,
    /// Bytes from the sandbox out, and back in (`closed` only).
    pub bytes_out: u64,
    pub bytes_in: u64,
    /// From the request to this event.
    pub duration: Duration,
    /// Why it was refused or failed; the pattern that allowed it otherwise.
    pub reason: String,
}

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EgressPhase {
    /// Not in the allowlist (or unparseable, or the log failed): nothing was dialled.
    Refused,
    /// Allowed; about to be dialled.
    Open,
    /// Finished (or the dial failed: `reason` says so).
    Closed,
}

impl EgressPhase {
    /// `refused`, `open`, `closed`.
    pub fn as_str(self) -> &'static str {
        match self {
            EgressPhase::Refused => "refused",
            EgressPhase::Open => "open",
            EgressPhase::Closed => "closed",
        }
    }
}

/// Records egress events. An error on an `Open` event refuses the connection (fail closed).
pub trait EgressLog: Send + Sync {
    fn record(&self, event: &EgressEvent) -> Result<(), String>;
}

/// The running proxy of one sandbox; dropping it stops accepting (open tunnels end with the
/// sandbox's side of them).
#[derive(Debug)]
pub(crate) struct Proxy {
    listener: Arc<TcpListener>,
    thread: Option<JoinHandle<()>>,
    open: Arc<Open>,
}

/// The connections in progress: their sockets (to end them when the sandbox ends) and
/// how many have not written their last record yet.
#[derive(Debug, Default)]
struct Open {
    sockets: Mutex<HashMap<u64, Vec<TcpStream>>>,
    ended: Condvar,
}

impl Open {
    fn add(&self, conn: u64, s: &TcpStream) {
        if let Ok(clone) = s.try_clone() {
            lock(&self.sockets).entry(conn).or_default().push(clone);
        }
    }

    fn count(&self) -> usize {
        lock(&self.sockets).len()
    }

    fn done(&self, conn: u64) {
        lock(&self.sockets).remove(&conn);
        self.ended.notify_all();
    }

    /// Ends every connection and waits (bounded) for each to record how it ended.
    fn close_all(&self) {
        let mut sockets = lock(&self.sockets);
        for s in sockets.values().flatten() {
            let _ = s.shutdown(Shutdown::Both);
        }
        let deadline = Instant::now() + CLOSE_GRACE;
        while !sockets.is_empty() {
            let now = Instant::now();
            if now >= deadline {
                tracing::warn!(open = sockets.len(), "egress connections still closing");
                return;
            }
            sockets = self
                .ended
                .wait_timeout(sockets, deadline - now)
                .map_or_else(|p| p.into_inner().0, |(g, _)| g);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Proxy {
    /// Serves `listener` (made inside the sandbox's namespace) with `rules`.
    pub(crate) fn start(
        listener: OwnedFd,
        rules: Vec<EgressRule>,
        log: Arc<dyn EgressLog>,
    ) -> io::Result<Proxy> {
        let listener = Arc::new(TcpListener::from(listener));
        let accept = Arc::clone(&listener);
        let rules = Arc::new(rules);
        let open = Arc::new(Open::default());
        let conns = Arc::clone(&open);
        let thread = std::thread::Builder::new()
            .name("airlock-egress".into())
            .spawn(move || serve(&accept, &rules, &log, &conns))?;
        Ok(Proxy {
            listener,
            thread: Some(thread),
            open,
        })
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // shutdown(2) on a listening socket wakes a blocked accept(2) on Linux.
        // SAFETY: a plain syscall on a socket we own.
        unsafe {
            libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        // The sandbox is over: what it had open ends now, each with its record.
        self.open.close_all();
    }
}

fn serve(
    listener: &TcpListener,
    rules: &Arc<Vec<EgressRule>>,
    log: &Arc<dyn EgressLog>,
    open: &Arc<Open>,
) {
    let next = AtomicU64::new(1);
    for stream in listener.incoming() {
        let Ok(stream) = stream else {
            // The listener was shut down (the sandbox is over), or accept failed for good.
            return;
        };
        if open.count() as u64 >= MAX_CONNECTIONS {
            let _ = respond(
                &stream,
                503,
                "too many egress connections from this sandbox",
            );
            continue;
        }
        let conn = next.fetch_add(1, Ordering::Relaxed);
        open.add(conn, &stream);
        let (rules, log, conns) = (Arc::clone(rules), Arc::clone(log), Arc::clone(open));
        let spawned = std::thread::Builder::new()
            .name("airlock-egress-conn".into())
            .spawn(move || {
                handle(conn, stream, &rules, log.as_ref(), &conns);
                conns.done(conn);
            });
        if spawned.is_err() {
            open.done(conn);
            tracing::warn!("cannot start an egress connection thread; connection dropped");
        }
    }
}

/// A parsed request head.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) host: String,
    pub(crate) port: u16,
    /// `CONNECT`: a tunnel. Otherwise the head to send on, in origin form.
    pub(crate) forward: Option<Vec<u8>>,
}

/// Parses `CONNECT host:port HTTP/1.x` or `METHOD http://host[:port]/path HTTP/1.x` and
/// the headers after it (`head` is everything up to and including the blank line).
pub(crate) fn parse_head(head: &[u8]) -> Result<Target, String> {
    let text = std::str::from_utf8(head).map_err(|_| "the request head is not UTF-8")?;
    let (line, rest) = text.split_once("\r\n").ok_or("no request line")?;
    let mut parts = line.split(' ');
    let (Some(method), Some(uri), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("a malformed request line".into());
    };
    if !version.starts_with("HTTP/1.") {
        return Err(format!("unsupported version {version}"));
    }
    if method.eq_ignore_ascii_case("CONNECT") {
        let (host, port) = split_host_port(uri, None)?;
        return Ok(Target {
            host,
            port,
            forward: None,
        });
    }
    let after = uri
        .strip_prefix("http://")
        .ok_or("only CONNECT (for https) and http:// URLs go through the proxy")?;
    let (authority, path) = match after.find('/') {
        Some(i) => (&after[..i], &after[i..]),
        None => (after, "/"),
    };
    if authority.contains('@') {
        return Err("credentials in the URL are refused".into());
    }
    let (host, port) = split_host_port(authority, Some(80))?;
    let mut forward = format!("{method} {path} {version}\r\n").into_bytes();
    forward.extend_from_slice(rest.as_bytes());
    Ok(Target {
        host,
        port,
        forward: Some(forward),
    })
}

fn split_host_port(authority: &str, default: Option<u16>) -> Result<(String, u16), String> {
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') || (h.starts_with('[') && h.ends_with(']')) => {
            (h, Some(p))
        }
        _ => (authority, None),
    };
    let port = match (port, default) {
        (Some(p), _) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("\"{p}\" is not a port"))?,
        (None, Some(d)) => d,
        (None, None) => return Err("CONNECT needs host:port".into()),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty()
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':'))
    {
        return Err(format!("\"{}\" is not a host", host.escape_debug()));
    }
    let host = host.to_ascii_lowercase();
    if odd_ipv4_spelling(&host) {
        return Err(format!(
            "\"{host}\" spells an IPv4 address unusually (write it as four decimal parts)"
        ));
    }
    Ok((host, port))
}

fn handle(conn: u64, client: TcpStream, rules: &[EgressRule], log: &dyn EgressLog, open: &Open) {
    let start = Instant::now();
    let mut event = EgressEvent {
        conn,
        host: String::new(),
        port: 0,
        phase: EgressPhase::Refused,
        bytes_out: 0,
        bytes_in: 0,
        duration: Duration::ZERO,
        reason: String::new(),
    };
    let refuse = |event: &mut EgressEvent, status: u16, why: String| {
        event.phase = EgressPhase::Refused;
        event.duration = start.elapsed();
        event.reason = why;
        let _ = respond(&client, status, &event.reason);
        if let Err(e) = log.record(event) {
            tracing::error!(error = %e, "cannot record a refused egress connection");
        }
    };
    let _ = client.set_read_timeout(Some(HEAD_TIMEOUT));
    let mut reader = BufReader::new(match client.try_clone() {
        Ok(c) => c,
        Err(e) => return refuse(&mut event, 500, format!("proxy error: {e}")),
    });
    let head = match read_head(&mut reader) {
        Ok(h) => h,
        Err(e) => return refuse(&mut event, 400, format!("bad request: {e}")),
    };
    let target = match parse_head(&head) {
        Ok(t) => t,
        Err(e) => return refuse(&mut event, 400, format!("bad request: {e}")),
    };
    event.host.clone_from(&target.host);
    event.port = target.port;
    let Some(rule) = rules.iter().find(|r| r.matches(&target.host, target.port)) else {
        let why = format!(
            "{}:{} is not in the sandbox's egress allowlist",
            target.host, target.port
        );
        return refuse(&mut event, 403, why);
    };
    let addrs = match resolve(&target.host, target.port, rule) {
        Ok(a) => a,
        Err(why) => return refuse(&mut event, 403, why),
    };
    event.phase = EgressPhase::Open;
    event.reason = format!("allowed by {rule}");
    event.duration = start.elapsed();
    if let Err(e) = log.record(&event) {
        // Fail closed: a connection that cannot be recorded is not made.
        return refuse(
            &mut event,
            503,
            format!("egress not recorded ({e}); refused"),
        );
    }
    event.phase = EgressPhase::Closed;
    match dial(&addrs) {
        Err(e) => {
            event.reason = format!("dial failed: {e}");
            let _ = respond(&client, 502, &event.reason);
        }
        Ok(server) => {
            open.add(conn, &server);
            let _ = client.set_read_timeout(None);
            let first = match &target.forward {
                None => b"HTTP/1.1 200 Connection established\r\n\r\n".as_slice(),
                Some(_) => &[],
            };
            let (out, back) = tunnel(reader, client, server, target.forward.as_deref(), first);
            event.bytes_out = out;
            event.bytes_in = back;
        }
    }
    event.duration = start.elapsed();
    if let Err(e) = log.record(&event) {
        tracing::error!(error = %e, "cannot record the end of an egress connection");
    }
}

/// Reads up to the blank line that ends the head (bounded).
fn read_head(reader: &mut BufReader<TcpStream>) -> io::Result<Vec<u8>> {
    let mut head = Vec::new();
    loop {
        let before = head.len();
        let n = reader
            .by_ref()
            .take((MAX_HEAD - head.len()) as u64)
            .read_until(b'\n', &mut head)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the head ended early or is too long",
            ));
        }
        let line = &head[before..];
        if line == b"\r\n" || line == b"\n" {
            return Ok(head);
        }
    }
}

/// Resolves `host` here, outside the sandbox, and keeps only the addresses it may reach
/// (see [`vet`]).
fn resolve(host: &str, port: u16, rule: &EgressRule) -> Result<Vec<SocketAddr>, String> {
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .collect();
    vet(host, addrs, rule)
}

/// Keeps the addresses `rule` lets the sandbox reach. A public address is reachable through
/// any rule that matched the host; an address that is not public ([`not_public`]: this
/// machine, the link, a private network, in any spelling) only when the rule names it: the
/// rule is that very address (`10.0.0.5:5432`, `[fd00::1]:443`), or, for loopback only,
/// `localhost`. Neither a wildcard nor a DNS answer ever turns an allowed name into Airlock's
/// own local services, the cloud metadata address or the LAN. The unspecified and multicast
/// addresses are never dialled.
pub(crate) fn vet(
    host: &str,
    addrs: Vec<SocketAddr>,
    rule: &EgressRule,
) -> Result<Vec<SocketAddr>, String> {
    let named = if rule.subdomains {
        None
    } else {
        rule.host.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
    };
    let mut refused = None;
    let usable: Vec<SocketAddr> = addrs
        .into_iter()
        .filter(|a| {
            let Some(class) = not_public(a.ip()) else {
                return true;
            };
            let ok = match class {
                Class::Unspecified | Class::Multicast => false,
                Class::Loopback if !rule.subdomains && rule.host == "localhost" => true,
                _ => named == Some(a.ip().to_canonical()),
            };
            if !ok && refused.is_none() {
                refused = Some((a.ip(), class));
            }
            ok
        })
        .collect();
    if usable.is_empty() {
        return Err(match refused {
            Some((ip, class)) => format!(
                "{host} is {ip}, {}: only a rule naming that address reaches it",
                class.describe()
            ),
            None => format!("{host} resolves to no address"),
        });
    }
    Ok(usable)
}

/// What kind of address the sandbox may not reach on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// `0.0.0.0/8`, `::`: connecting to it reaches this machine.
    Unspecified,
    /// `127.0.0.0/8`, `::1`: this machine (Airlock's own services).
    Loopback,
    /// `169.254.0.0/16` (the cloud metadata address), `fe80::/10`.
    LinkLocal,
    /// `10/8`, `172.16/12`, `192.168/16`, `100.64/10` (carrier-grade NAT), `fc00::/7`
    /// (unique local), `fec0::/10` (the old site-local).
    Private,
    /// Multicast and broadcast.
    Multicast,
    /// Not routable on the internet: `192.0.0.0/24`, benchmarking, documentation,
    /// `240.0.0.0/4`, the IPv6 discard and documentation prefixes, local NAT64.
    Reserved,
}

impl Class {
    fn describe(self) -> &'static str {
        match self {
            Class::Unspecified => "the unspecified address (this machine)",
            Class::Loopback => "a loopback address (this machine)",
            Class::LinkLocal => "a link-local address (the cloud metadata service lives here)",
            Class::Private => "a private-network address",
            Class::Multicast => "a multicast or broadcast address",
            Class::Reserved => "a reserved address",
        }
    }
}

/// The class of an address that is not on the public internet, `None` for a public one. An
/// IPv6 address that carries an IPv4 one (mapped `::ffff:a.b.c.d`, compatible `::a.b.c.d`,
/// NAT64 `64:ff9b::/96`, 6to4 `2002::/16`, Teredo `2001::/32`) is judged by that IPv4
/// address: the kernel or a translator on the way may deliver it there.
pub(crate) fn not_public(ip: IpAddr) -> Option<Class> {
    match ip {
        IpAddr::V4(v4) => v4_class(v4),
        IpAddr::V6(v6) => v6_class(v6),
    }
}

fn v4_class(ip: Ipv4Addr) -> Option<Class> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        (0, _, _) => Class::Unspecified,
        (127, _, _) => Class::Loopback,
        (169, 254, _) => Class::LinkLocal,
        (10, _, _) | (192, 168, _) => Class::Private,
        (172, 16..=31, _) | (100, 64..=127, _) => Class::Private,
        (224..=239, _, _) | (255, 255, 255) => Class::Multicast,
        (240..=255, _, _) | (192, 0, 0) | (192, 0, 2) | (198, 18..=19, _) => Class::Reserved,
        (198, 51, 100) | (203, 0, 113) => Class::Reserved,
        _ => return None,
    })
}

fn v6_class(ip: Ipv6Addr) -> Option<Class> {
    let s = ip.segments();
    let embedded = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    if ip.is_unspecified() {
        return Some(Class::Unspecified);
    }
    if ip.is_loopback() {
        return Some(Class::Loopback);
    }
    // ::ffff:a.b.c.d (mapped) and ::a.b.c.d (compatible, deprecated).
    if s[..5] == [0; 5] && (s[5] == 0xffff || s[5] == 0) {
        return match (s[5], v4_class(embedded(s[6], s[7]))) {
            (_, Some(class)) => Some(class),
            // A mapped public address is that public address.
            (0xffff, None) => None,
            // Compatible addresses are deprecated: nothing to dial.
            _ => Some(Class::Reserved),
        };
    }
    // NAT64 (well-known prefix), judged by the IPv4 address it translates to.
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return v4_class(embedded(s[6], s[7]));
    }
    // 6to4: 2002:AABB:CCDD::/48 carries AA.BB.CC.DD.
    if s[0] == 0x2002 {
        return v4_class(embedded(s[1], s[2]));
    }
    // Teredo: the client's IPv4 address, inverted, in the last 32 bits.
    if s[0] == 0x2001 && s[1] == 0 {
        return v4_class(embedded(!s[6], !s[7]));
    }
    Some(match s[0] {
        0xfe80..=0xfebf => Class::LinkLocal,
        0xfec0..=0xfeff | 0xfc00..=0xfdff => Class::Private,
        0xff00..=0xffff => Class::Multicast,
        // 64:ff9b:1::/48 (local-use NAT64), 100::/64 (discard), 2001:db8::/32 (documentation).
        0x64 if s[1] == 0xff9b => Class::Reserved,
        0x100 if s[1..4] == [0, 0, 0] => Class::Reserved,
        0x2001 if s[1] == 0xdb8 => Class::Reserved,
        _ => return None,
    })
}

/// An IPv4 address in a spelling other than four decimal parts (`2130706433`, `0x7f000001`,
/// `127.1`, `0177.0.0.1`): the resolver reads these as addresses, and no real host name
/// ends in a numeric label. Refused outright, whatever a rule says: a spelling is not a
/// name for the allowlist to match.
pub(crate) fn odd_ipv4_spelling(host: &str) -> bool {
    let host = host.trim_end_matches('.');
    if host.contains(':') || host.parse::<Ipv4Addr>().is_ok() {
        return false;
    }
    let last = host.rsplit('.').next().unwrap_or(host);
    let hex = last
        .strip_prefix("0x")
        .is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit()));
    hex || (!last.is_empty() && last.bytes().all(|b| b.is_ascii_digit()))
}

fn dial(addrs: &[SocketAddr]) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    for a in addrs {
        match TcpStream::connect_timeout(a, DIAL_TIMEOUT) {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Copies both ways until each side has closed; returns the bytes (out, in).
fn tunnel(
    mut reader: BufReader<TcpStream>,
    mut client: TcpStream,
    server: TcpStream,
    forward: Option<&[u8]>,
    first: &[u8],
) -> (u64, u64) {
    let Ok(mut server_w) = server.try_clone() else {
        return (0, 0);
    };
    let mut out = 0u64;
    if let Some(head) = forward {
        if server_w.write_all(head).is_err() {
            return (0, 0);
        }
        out += head.len() as u64;
    }
    if client.write_all(first).is_err() {
        return (out, 0);
    }
    let back = std::thread::Builder::new()
        .name("airlock-egress-in".into())
        .spawn(move || {
            let mut server = server;
            let n = io::copy(&mut server, &mut client).unwrap_or(0);
            let _ = client.shutdown(Shutdown::Write);
            n
        });
    // What the client sent after its head is already buffered in `reader`.
    out += io::copy(&mut reader, &mut server_w).unwrap_or(0);
    let _ = server_w.shutdown(Shutdown::Write);
    let back = back.map_or(0, |t| t.join().unwrap_or(0));
    (out, back)
}

fn respond(mut stream: &TcpStream, status: u16, why: &str) -> io::Result<()> {
    let reason = match status {
        400 => "Bad Request",
        403 => "Forbidden",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let body = format!("Airlock egress: {why}\n");
    write!(
        stream,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

#[cfg(test)]
#[path = "egress_tests.rs"]
mod tests;
