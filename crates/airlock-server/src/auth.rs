//! Who is asking: bearer credentials for the API, login sessions and CSRF tokens for the page,
//! and the limiter that slows down guessing.
//!
//! - API: `Authorization: Bearer NAME:TOKEN`, checked with
//!   [`airlock_control::auth::verify_human`] on every request.
//! - Page: the login form takes the same name and token and creates a session: a random
//!   256-bit id in an `HttpOnly`, `SameSite=Strict` cookie, looked up by its SHA-256 (so the
//!   table holds no usable id), expiring after `[serve] session_minutes`. Each session's CSRF
//!   token is an HMAC of its id under a per-process key: bound to the session, never stored,
//!   checked in constant time.
//! - Failures: the credential is checked first (in constant time), and a correct one is never
//!   refused, whatever failed before it: throttling applies to failures only, so nobody who can
//!   reach the port can lock a human (or the kill path) out. A failure waits [`FAILURE_DELAY`]
//!   before answering 401; past [`MAX_FAILURES_PER_NAME`] failures naming one human, or
//!   [`MAX_FAILURES_PER_SOURCE`] from one source address (an IPv6 address counts by its /64),
//!   within [`FAILURE_WINDOW`], further failures are answered 429 at once (no task waits for
//!   them, so a flood holds no resources). Sources are kept in a table of at most
//!   [`MAX_SOURCES`], the least recently seen dropped first. There is no global lockout.
//!   The source is the TCP peer: behind a reverse proxy every request shares the proxy's.
//!
//! Tokens never reach a log: only the human's name and the kind of failure do.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::cookie::CookieJar;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::error::Refusal;
use crate::state::{lock, AppState};

/// How long a failed login or bearer check waits before answering.
pub(crate) const FAILURE_DELAY: Duration = Duration::from_millis(750);
/// The window failures are counted in.
pub(crate) const FAILURE_WINDOW: Duration = Duration::from_secs(15 * 60);
/// Failures naming one human within the window before further failures for it answer 429.
pub(crate) const MAX_FAILURES_PER_NAME: usize = 5;
/// Failures from one source within the window before further failures from it answer 429.
pub(crate) const MAX_FAILURES_PER_SOURCE: usize = 20;
/// Sources whose failures are remembered at once; the least recently seen goes first.
pub(crate) const MAX_SOURCES: usize = 4096;
/// Logins kept at once; past this, expired ones are dropped, then new logins refused.
const MAX_SESSIONS: usize = 10_000;
/// Failures of names the config does not have share one counter, so a spray of random
/// names cannot grow the table.
const UNKNOWN_NAME: &str = "\u{0}unknown";

type HmacSha256 = Hmac<Sha256>;

/// Fresh random bytes from the OS.
pub(crate) fn random<const N: usize>() -> Result<[u8; N], Refusal> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| Refusal::internal("no randomness from the OS", &e))?;
    Ok(b)
}

// === sessions ===

/// Logged-in pages, by the SHA-256 of their cookie's id.
pub(crate) struct Sessions {
    ttl: Duration,
    by_digest: HashMap<[u8; 32], Session>,
    /// Key of the CSRF HMAC; new each process, so a restart logs everyone out.
    csrf_key: [u8; 32],
}

struct Session {
    human: String,
    expires: Instant,
}

impl Sessions {
    /// An empty table whose logins last `ttl`.
    pub(crate) fn new(ttl: Duration) -> Sessions {
        let mut csrf_key = [0u8; 32];
        if getrandom::fill(&mut csrf_key).is_err() {
            // Without randomness no session can be created either (see `create`), so a
            // zero key never protects a real session.
            tracing::error!("no randomness from the OS: web logins will fail");
        }
        Sessions {
            ttl,
            by_digest: HashMap::new(),
            csrf_key,
        }
    }

    /// A new session for `human`; returns its id (the cookie value).
    pub(crate) fn create(&mut self, human: &str, now: Instant) -> Result<String, Refusal> {
        if self.by_digest.len() >= MAX_SESSIONS {
            self.by_digest.retain(|_, s| s.expires > now);
            if self.by_digest.len() >= MAX_SESSIONS {
                return Err(Refusal::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too many open logins; try again later",
                ));
            }
        }
        let id = hex::encode(random::<32>()?);
        self.by_digest.insert(
            digest(&id),
            Session {
                human: human.to_owned(),
                expires: now + self.ttl,
            },
        );
        Ok(id)
    }

    /// The human logged in with cookie `id`, if the session exists and has not expired.
    pub(crate) fn human(&mut self, id: &str, now: Instant) -> Option<String> {
        let d = digest(id);
        match self.by_digest.get(&d) {
            Some(s) if s.expires > now => Some(s.human.clone()),
            Some(_) => {
                self.by_digest.remove(&d);
                None
            }
            None => None,
        }
    }

    /// Ends the session with cookie `id`.
    pub(crate) fn remove(&mut self, id: &str) {
        self.by_digest.remove(&digest(id));
    }

    /// The CSRF token of session `id`.
    pub(crate) fn csrf_token(&self, id: &str) -> String {
        hex::encode(self.csrf_mac(id).finalize().into_bytes())
    }

    /// Whether `token` is the CSRF token of session `id` (constant-time).
    pub(crate) fn check_csrf(&self, id: &str, token: &str) -> bool {
        match hex::decode(token) {
            Ok(bytes) => self.csrf_mac(id).verify_slice(&bytes).is_ok(),
            Err(_) => false,
        }
    }

    fn csrf_mac(&self, id: &str) -> HmacSha256 {
        // HMAC takes a key of any length; 32 bytes never fails.
        let mut mac = match HmacSha256::new_from_slice(&self.csrf_key) {
            Ok(m) => m,
            Err(_) => unreachable_hmac(),
        };
        mac.update(b"airlock-csrf\0");
        mac.update(id.as_bytes());
        mac
    }
}

#[cold]
fn unreachable_hmac() -> ! {
    // `Hmac::new_from_slice` accepts every key length; there is no failing input.
    std::process::abort()
}

fn digest(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

// === failed-login limiter ===

/// Where a request came from, for throttling: the peer's IP address (an IPv6 address by its
/// /64, which one host usually owns whole), or `None` when unknown.
pub(crate) type SourceKey = Option<IpAddr>;

/// The throttling key of a peer address.
pub(crate) fn source_key(ip: Option<IpAddr>) -> SourceKey {
    ip.map(|ip| match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut o = v6.octets();
                o[8..].fill(0);
                IpAddr::V6(Ipv6Addr::from(o))
            }
        },
    })
}

/// Recent failures of one name or source: at most `cap` instants, oldest first.
#[derive(Default)]
struct Failures {
    times: VecDeque<Instant>,
    last_seen: Option<Instant>,
    /// Past the limit at the last failure (so crossing it is logged once, not per failure).
    over: bool,
}

impl Failures {
    /// Records one at `now` against limit `max`: (past the limit, just crossed it, retry after).
    fn count(&mut self, now: Instant, max: usize) -> (bool, bool, Duration) {
        let over = self.push(now, max + 1) > max;
        let first = over && !self.over;
        self.over = over;
        (over, first, self.retry_after(now))
    }

    /// Records one at `now`; returns how many are within the window (capped).
    fn push(&mut self, now: Instant, cap: usize) -> usize {
        self.expire(now);
        self.times.push_back(now);
        while self.times.len() > cap {
            self.times.pop_front();
        }
        self.last_seen = Some(now);
        self.times.len()
    }

    fn expire(&mut self, now: Instant) {
        while self
            .times
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= FAILURE_WINDOW)
        {
            self.times.pop_front();
        }
    }

    /// How long until the oldest failure kept leaves the window.
    fn retry_after(&self, now: Instant) -> Duration {
        self.times.front().map_or(FAILURE_WINDOW, |t| {
            (*t + FAILURE_WINDOW).saturating_duration_since(now)
        })
    }
}

/// What a failure leads to.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Throttle {
    /// Within the limits: answer 401 after [`FAILURE_DELAY`].
    Delay,
    /// Past a limit: answer 429 at once; `first` when this failure crossed it (log it once).
    Refuse { retry_after: Duration, first: bool },
}

/// Counts failed logins per name and per source. Only failures are counted and throttled: a
/// correct credential is checked before the limiter is asked and always passes.
#[derive(Default)]
pub(crate) struct LoginLimiter {
    per_name: HashMap<String, Failures>,
    per_source: HashMap<SourceKey, Failures>,
}

impl LoginLimiter {
    /// Records a failure naming `name` from `source` at `now`, and says how to answer it.
    pub(crate) fn failed(&mut self, name: &str, source: SourceKey, now: Instant) -> Throttle {
        // Names are the config's humans plus one shared bucket for unknown names: bounded.
        self.per_name.retain(|_, f| {
            f.expire(now);
            !f.times.is_empty()
        });
        let (over_name, first_name, name_wait) = self
            .per_name
            .entry(name.to_owned())
            .or_default()
            .count(now, MAX_FAILURES_PER_NAME);
        if !self.per_source.contains_key(&source) && self.per_source.len() >= MAX_SOURCES {
            self.per_source.retain(|_, f| {
                f.expire(now);
                !f.times.is_empty()
            });
            if self.per_source.len() >= MAX_SOURCES {
                let oldest = self
                    .per_source
                    .iter()
                    .min_by_key(|(_, f)| f.last_seen)
                    .map(|(k, _)| *k);
                if let Some(k) = oldest {
                    self.per_source.remove(&k);
                }
            }
        }
        let (over_source, first_source, source_wait) = self
            .per_source
            .entry(source)
            .or_default()
            .count(now, MAX_FAILURES_PER_SOURCE);
        if !over_name && !over_source {
            return Throttle::Delay;
        }
        let mut retry_after = Duration::ZERO;
        if over_name {
            retry_after = retry_after.max(name_wait);
        }
        if over_source {
            retry_after = retry_after.max(source_wait);
        }
        let first = first_name || first_source;
        Throttle::Refuse { retry_after, first }
    }

    /// A good login clears that name's failures (not its source's: one valid human does not
    /// vouch for everything else from the same address).
    pub(crate) fn succeeded(&mut self, name: &str) {
        self.per_name.remove(name);
    }
}

/// Checks `name`/`token` against the config: the credential first, in constant time, so a
/// correct one always passes; a failure is counted by name and by `source`, then answered
/// 401 after [`FAILURE_DELAY`], or 429 at once past a limit. Says only that the pair is wrong.
pub(crate) async fn verify(
    state: &AppState,
    source: SourceKey,
    name: &str,
    token: &str,
) -> Result<(), Refusal> {
    let key = if state.config.humans.contains_key(name) {
        name
    } else {
        UNKNOWN_NAME
    };
    let e = match airlock_control::auth::verify_human(&state.config, name, token) {
        Ok(()) => {
            lock(&state.limiter).succeeded(key);
            return Ok(());
        }
        Err(e) => e,
    };
    let throttle = lock(&state.limiter).failed(key, source, Instant::now());
    match throttle {
        Throttle::Delay => {
            // The error names the human and the kind of failure, never the token.
            tracing::warn!(error = %e, source = ?source, "authentication failed");
            tokio::time::sleep(FAILURE_DELAY).await;
            Err(Refusal::new(
                StatusCode::UNAUTHORIZED,
                "wrong name or token (a [humans.NAME] with token_sha256, and its token)",
            ))
        }
        Throttle::Refuse { retry_after, first } => {
            if first {
                tracing::warn!(human = %name.escape_debug(), source = ?source,
                    "too many failed logins: further failures are refused at once (a correct token still passes)");
            }
            Err(Refusal::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "too many failed logins; try again in {} s",
                    retry_after.as_secs().max(1)
                ),
            ))
        }
    }
}

/// The peer of a request, for throttling failures (never for deciding who someone is).
pub(crate) struct Source(pub(crate) SourceKey);

impl<S: Send + Sync> FromRequestParts<S> for Source {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Source(source_of(parts)))
    }
}

fn source_of(parts: &Parts) -> SourceKey {
    source_key(
        parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip()),
    )
}

// === extractors ===

/// The human behind an API request (`Authorization: Bearer NAME:TOKEN`).
pub(crate) struct ApiHuman(pub(crate) String);

impl FromRequestParts<Arc<AppState>> for ApiHuman {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let unauthorized = |m: &str| {
            (
                [(header::WWW_AUTHENTICATE, "Bearer realm=\"airlock\"")],
                Refusal::new(StatusCode::UNAUTHORIZED, m),
            )
                .into_response()
        };
        let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
            return Err(unauthorized(
                "missing credentials: send Authorization: Bearer NAME:TOKEN",
            ));
        };
        let Some((name, token)) = parse_bearer(value.as_bytes()) else {
            return Err(unauthorized(
                "malformed credentials: send Authorization: Bearer NAME:TOKEN",
            ));
        };
        match verify(state, source_of(parts), name, token).await {
            Ok(()) => Ok(ApiHuman(name.to_owned())),
            Err(r) if r.status == StatusCode::UNAUTHORIZED => Err(unauthorized(&r.message)),
            Err(r) => Err(r.into_response()),
        }
    }
}

/// `Bearer NAME:TOKEN` → `(NAME, TOKEN)`; names never contain `:`.
pub(crate) fn parse_bearer(value: &[u8]) -> Option<(&str, &str)> {
    let text = std::str::from_utf8(value).ok()?;
    let (scheme, rest) = text.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let (name, token) = rest.trim().split_once(':')?;
    (!name.is_empty() && !token.is_empty()).then_some((name, token))
}

/// The name of the session cookie (`__Host-` needs `Secure`, so only behind https).
pub(crate) fn cookie_name(state: &AppState) -> &'static str {
    if state.secure_cookies {
        "__Host-airlock_session"
    } else {
        "airlock_session"
    }
}

/// The human behind a page request, with the session's id (for CSRF checks).
pub(crate) struct PageHuman {
    pub(crate) human: String,
    pub(crate) session: String,
}

impl PageHuman {
    /// The session's CSRF token, for forms.
    pub(crate) fn csrf(&self, state: &AppState) -> String {
        lock(&state.sessions).csrf_token(&self.session)
    }

    /// Refuses a form whose CSRF token is not this session's.
    pub(crate) fn check_csrf(&self, state: &AppState, token: &str) -> Result<(), Refusal> {
        if lock(&state.sessions).check_csrf(&self.session, token) {
            Ok(())
        } else {
            tracing::warn!(human = %self.human, "form refused: bad or missing CSRF token");
            Err(Refusal::forbidden(
                "this form is stale or was not sent by the Airlock page (CSRF token mismatch); \
                 reload the page and try again",
            ))
        }
    }
}

impl FromRequestParts<Arc<AppState>> for PageHuman {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let jar = CookieJar::from_headers(&parts.headers);
        let found = jar.get(cookie_name(state)).and_then(|c| {
            let id = c.value();
            lock(&state.sessions)
                .human(id, Instant::now())
                .map(|human| PageHuman {
                    human,
                    session: id.to_owned(),
                })
        });
        match found {
            Some(h) => Ok(h),
            // Scripts (live updates, event streams) get a status they can act on; a person
            // opening a page gets the login form.
            None if parts.uri.path().starts_with("/live/") || parts.uri.path() == "/events" => {
                Err(Refusal::new(StatusCode::UNAUTHORIZED, "not logged in").into_response())
            }
            None if parts.method == axum::http::Method::GET => {
                Err(Redirect::to("/login").into_response())
            }
            None => Err(Refusal::new(
                StatusCode::UNAUTHORIZED,
                "not logged in (or the login expired): log in again",
            )
            .into_response()),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn bearer_parsing() {
        assert_eq!(
            parse_bearer(b"Bearer alice:alt_1"),
            Some(("alice", "alt_1"))
        );
        assert_eq!(parse_bearer(b"bearer bob:x:y"), Some(("bob", "x:y")));
        for bad in [
            &b"Basic YWxpY2U6eA=="[..],
            b"Bearer alice",
            b"Bearer :tok",
            b"Bearer alice:",
            b"Bearer",
            b"\xff\xfe",
        ] {
            assert_eq!(parse_bearer(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn sessions_expire_and_are_found_only_by_their_id() {
        let mut s = Sessions::new(Duration::from_secs(60));
        let t0 = Instant::now();
        let id = s.create("alice", t0).unwrap();
        assert_eq!(id.len(), 64);
        assert_eq!(s.human(&id, t0).as_deref(), Some("alice"));
        assert_eq!(s.human("0".repeat(64).as_str(), t0), None);
        assert_eq!(s.human(&id, t0 + Duration::from_secs(61)), None);
        assert_eq!(s.human(&id, t0), None, "an expired session is gone");
        let id2 = s.create("bob", t0).unwrap();
        s.remove(&id2);
        assert_eq!(s.human(&id2, t0), None);
    }

    #[test]
    fn csrf_tokens_are_bound_to_their_session() {
        let mut s = Sessions::new(Duration::from_secs(60));
        let now = Instant::now();
        let a = s.create("alice", now).unwrap();
        let b = s.create("alice", now).unwrap();
        let ta = s.csrf_token(&a);
        assert!(s.check_csrf(&a, &ta));
        assert!(!s.check_csrf(&b, &ta));
        assert!(!s.check_csrf(&a, ""));
        assert!(!s.check_csrf(&a, "zz"));
        assert!(!s.check_csrf(&a, &ta[..62]));
        let other = Sessions::new(Duration::from_secs(60));
        assert!(!other.check_csrf(&a, &ta), "a restart invalidates tokens");
    }

    fn refused(t: &Throttle) -> bool {
        matches!(t, Throttle::Refuse { .. })
    }

    const HERE: SourceKey = Some(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));

    #[test]
    fn failures_naming_one_human_are_refused_past_the_limit_and_only_for_that_name() {
        let mut l = LoginLimiter::default();
        let t0 = Instant::now();
        for i in 0..MAX_FAILURES_PER_NAME {
            let src = Some(IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, i as u8)));
            assert_eq!(l.failed("alice", src, t0), Throttle::Delay);
        }
        let src = Some(IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 1, 1)));
        match l.failed("alice", src, t0) {
            Throttle::Refuse { retry_after, first } => {
                assert_eq!(retry_after, FAILURE_WINDOW);
                assert!(first);
            }
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(
                l.failed("alice", src, t0),
                Throttle::Refuse { first: false, .. }
            ),
            "the crossing is logged once"
        );
        assert!(
            !refused(&l.failed("bob", src, t0)),
            "other names are not throttled"
        );
        assert_eq!(
            l.failed("alice", src, t0 + FAILURE_WINDOW),
            Throttle::Delay,
            "the window passes"
        );
        l.succeeded("bob");
        assert!(!l.per_name.contains_key("bob"));
    }

    /// Issue 15, item 8: one source's flood throttles that source's failures, and nobody
    /// else's; there is no lockout of everyone.
    #[test]
    fn a_flood_from_one_source_throttles_that_source_only() {
        let mut l = LoginLimiter::default();
        let t0 = Instant::now();
        let mut throttled = 0;
        for i in 0..200 {
            if refused(&l.failed(&format!("n{}", i % 3), HERE, t0)) {
                throttled += 1;
            }
        }
        assert!(throttled >= 200 - MAX_FAILURES_PER_SOURCE);
        let elsewhere = Some(IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 7)));
        assert_eq!(l.failed("fresh", elsewhere, t0), Throttle::Delay);
        assert!(l.per_source.get(&HERE).unwrap().times.len() <= MAX_FAILURES_PER_SOURCE + 1);
    }

    #[test]
    fn the_source_table_is_bounded_and_drops_the_least_recently_seen() {
        let mut l = LoginLimiter::default();
        let t0 = Instant::now();
        for i in 0..(MAX_SOURCES as u32 + 10) {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            let _ = l.failed("x", Some(ip), t0 + Duration::from_millis(u64::from(i)));
        }
        assert_eq!(l.per_source.len(), MAX_SOURCES);
        assert!(!l
            .per_source
            .contains_key(&Some(IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000)))));
    }

    #[test]
    fn ipv6_sources_count_by_their_64_and_mapped_v4_as_v4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(source_key(Some(a)), source_key(Some(b)));
        assert_ne!(source_key(Some(a)), source_key(Some(c)));
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert_eq!(source_key(Some(mapped)), HERE);
    }
}
