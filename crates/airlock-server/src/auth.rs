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
//! - Failures: each waits [`FAILURE_DELAY`] before answering, and more than
//!   [`MAX_FAILURES_PER_NAME`] for one name (or [`MAX_FAILURES_TOTAL`] overall) in
//!   [`FAILURE_WINDOW`] locks logins out until the window passes.
//!
//! Tokens never reach a log: only the human's name and the kind of failure do.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
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
/// Failures for one name within the window before that name is locked out.
pub(crate) const MAX_FAILURES_PER_NAME: usize = 5;
/// Failures overall within the window before every login is refused.
pub(crate) const MAX_FAILURES_TOTAL: usize = 50;
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

/// Counts failed logins per name and overall.
#[derive(Default)]
pub(crate) struct LoginLimiter {
    per_name: HashMap<String, VecDeque<Instant>>,
    total: VecDeque<Instant>,
}

impl LoginLimiter {
    /// `Err(retry_after)` when `name` (or everyone) is locked out at `now`.
    pub(crate) fn check(&mut self, name: &str, now: Instant) -> Result<(), Duration> {
        self.expire(now);
        let locked = |q: &VecDeque<Instant>, max: usize| {
            (q.len() >= max).then(|| {
                q.front().map_or(FAILURE_WINDOW, |t| {
                    (*t + FAILURE_WINDOW).saturating_duration_since(now)
                })
            })
        };
        if let Some(wait) = locked(&self.total, MAX_FAILURES_TOTAL) {
            return Err(wait);
        }
        match self
            .per_name
            .get(name)
            .and_then(|q| locked(q, MAX_FAILURES_PER_NAME))
        {
            Some(wait) => Err(wait),
            None => Ok(()),
        }
    }

    /// Records a failure for `name` at `now`.
    pub(crate) fn failed(&mut self, name: &str, now: Instant) {
        self.per_name
            .entry(name.to_owned())
            .or_default()
            .push_back(now);
        self.total.push_back(now);
    }

    /// A good login clears that name's failures.
    pub(crate) fn succeeded(&mut self, name: &str) {
        self.per_name.remove(name);
    }

    fn expire(&mut self, now: Instant) {
        let old = |t: &Instant| now.saturating_duration_since(*t) >= FAILURE_WINDOW;
        while self.total.front().is_some_and(old) {
            self.total.pop_front();
        }
        self.per_name.retain(|_, q| {
            while q.front().is_some_and(old) {
                q.pop_front();
            }
            !q.is_empty()
        });
    }
}

/// Checks `name`/`token` against the config, through the limiter. A failure waits
/// [`FAILURE_DELAY`] and says only that the pair is wrong.
pub(crate) async fn verify(state: &AppState, name: &str, token: &str) -> Result<(), Refusal> {
    let key = if state.config.humans.contains_key(name) {
        name
    } else {
        UNKNOWN_NAME
    };
    let now = Instant::now();
    if let Err(wait) = lock(&state.limiter).check(key, now) {
        tracing::warn!(human = %name.escape_debug(), "login refused: too many failures");
        return Err(Refusal::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "too many failed logins; try again in {} s",
                wait.as_secs().max(1)
            ),
        ));
    }
    match airlock_control::auth::verify_human(&state.config, name, token) {
        Ok(()) => {
            lock(&state.limiter).succeeded(key);
            Ok(())
        }
        Err(e) => {
            // The error names the human and the kind of failure, never the token.
            tracing::warn!(error = %e, "authentication failed");
            lock(&state.limiter).failed(key, now);
            tokio::time::sleep(FAILURE_DELAY).await;
            Err(Refusal::new(
                StatusCode::UNAUTHORIZED,
                "wrong name or token (a [humans.NAME] with token_sha256, and its token)",
            ))
        }
    }
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
        match verify(state, name, token).await {
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

    #[test]
    fn the_limiter_locks_a_name_out_and_lets_it_back_after_the_window() {
        let mut l = LoginLimiter::default();
        let t0 = Instant::now();
        for _ in 0..MAX_FAILURES_PER_NAME {
            assert!(l.check("alice", t0).is_ok());
            l.failed("alice", t0);
        }
        let wait = l.check("alice", t0).unwrap_err();
        assert_eq!(wait, FAILURE_WINDOW);
        assert!(l.check("bob", t0).is_ok(), "other names are not locked");
        assert!(l.check("alice", t0 + FAILURE_WINDOW).is_ok());
        l.failed("bob", t0);
        l.succeeded("bob");
        assert!(!l.per_name.contains_key("bob"));
    }

    #[test]
    fn the_limiter_locks_everyone_out_after_many_failures() {
        let mut l = LoginLimiter::default();
        let t0 = Instant::now();
        for i in 0..MAX_FAILURES_TOTAL {
            l.failed(&format!("n{}", i % 7), t0);
        }
        assert!(l.check("fresh", t0).is_err());
        assert!(l.check("fresh", t0 + FAILURE_WINDOW).is_ok());
    }
}
