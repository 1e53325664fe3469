//! The edge of every request: the `Host` must be one of this server's names (a rebound DNS
//! name pointing a browser at loopback gets nothing), a state-changing request from a browser
//! must come from this server's own origin, and every answer carries headers that keep the
//! page from being framed, sniffed, cached or given other scripts.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::Refusal;
use crate::state::AppState;

/// Only this server's own script and style; no inline code, no frames, forms post home.
pub(crate) const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
     base-uri 'none'";

/// Refuses a foreign `Host`, and a browser's state-changing request from another origin.
pub(crate) async fn host_and_origin(
    State(state): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    match check(&state, &req) {
        Ok(()) => next.run(req).await,
        Err(r) => r.into_response(),
    }
}

fn check(state: &AppState, req: &Request) -> Result<(), Refusal> {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_ascii_lowercase)
        .or_else(|| {
            req.uri()
                .authority()
                .map(|a| a.as_str().to_ascii_lowercase())
        });
    match host {
        Some(h) if state.hosts.contains(&h) => {}
        Some(h) => {
            return Err(Refusal::bad_request(format!(
                "Host \"{}\" is not this server's (set [serve] public_url to the name people use)",
                h.escape_debug()
            )))
        }
        None => return Err(Refusal::bad_request("missing Host header")),
    }
    if matches!(*req.method(), Method::GET | Method::HEAD) {
        return Ok(());
    }
    let origin = req.headers().get(header::ORIGIN).map(HeaderValue::as_bytes);
    let bearer = req.headers().contains_key(header::AUTHORIZATION);
    match origin {
        Some(o) if std::str::from_utf8(o).is_ok_and(|o| state.origins.contains(o)) => Ok(()),
        // A script or CLI with a bearer token is no browser riding on a cookie.
        None if bearer => Ok(()),
        Some(_) => Err(Refusal::forbidden(
            "cross-origin request refused: this form or call did not come from the Airlock page",
        )),
        None => Err(Refusal::forbidden(
            "a form post without an Origin header is refused (it may come from another site)",
        )),
    }
}

/// Security headers on every answer.
pub(crate) async fn security_headers(req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        // `same-origin`, not `no-referrer`: with no referrer Chromium sends `Origin: null` on
        // form posts, and the Origin check would refuse the page's own forms.
        (header::REFERRER_POLICY, "same-origin"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
    res
}
