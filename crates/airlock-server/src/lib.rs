//! `airlock-server`: the control plane `airlock serve` runs — an HTTP API, a phone-sized web
//! page and a webhook through which humans approve or deny held calls and stop or resume
//! agents.
//!
//! - **Who may act**: a `[humans.NAME]` with `token_sha256`. The API takes
//!   `Authorization: Bearer NAME:TOKEN`; the page takes the same pair in a login form and gives
//!   an `HttpOnly`, `SameSite=Strict` session cookie (random id, kept server-side, expiring).
//!   Every form the page posts carries a CSRF token bound to that session, and every request
//!   must name one of the server's own hosts (`Host`) and, when it changes state, come from its
//!   own origin (`Origin`). Failed logins are slowed and throttled by name and by source, and a
//!   correct credential is never refused (`auth` module).
//! - **Nothing changes on a GET**: opening a page or a link only reads; approve, deny, kill and
//!   resume are POSTs by an authenticated human.
//! - **Live**: the server binds an [`airlock_control::Listener`] on the audit database, so every
//!   kill, resume, new request and decision (each followed by `notify_all`) wakes it at once; it
//!   then pushes a Server-Sent Event to every open page (`events` module), which re-renders.
//! - **Webhook**: a follower of the audit chain POSTs each `approval`, `kill`, `resume` and
//!   `breaker` record, signed with HMAC-SHA256, with a link to its page; its cursor lives in the
//!   store so a restart neither loses nor repeats one ([`webhook`]).
//!
//! Every answer carries a strict Content-Security-Policy; the page is server-rendered with
//! maud (every value escaped unless marked otherwise) plus one small script.

mod api;
mod approvals;
mod auth;
mod control;
mod error;
mod events;
mod guard;
mod html;
mod state;
mod views;
mod web;
pub mod webhook;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;

pub use error::ServerError;
pub use state::{AppState, Mount, Mounted, Options};

/// The largest request body accepted (a login, a comment, a kill): 64 KiB.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// The whole HTTP surface, with its guards, over `state`.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .merge(api::routes())
        .merge(web::routes())
        .route("/events", axum::routing::get(events::sse))
        // Runs before every handler: a foreign Host or Origin never reaches one.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::host_and_origin,
        ))
        // Outermost: every answer, errors included, gets the security headers.
        .layer(axum::middleware::from_fn(guard::security_headers))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// Runs the control plane until `shutdown` resolves: binds `listen`, wakes on the store's
/// notifications, follows the audit chain for the webhook, and serves. `on_bound` is told the
/// bound address (the port when `listen` asked for port 0).
pub async fn serve(
    options: Options,
    on_bound: impl FnOnce(SocketAddr),
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|source| ServerError::Bind {
            addr: options.listen,
            source,
        })?;
    let bound = listener.local_addr().map_err(|source| ServerError::Bind {
        addr: options.listen,
        source,
    })?;
    let mut options = options;
    let mount = options.mount.take();
    let state = Arc::new(AppState::new(options, bound)?);
    let mounted = match mount {
        Some(m) => Some(
            m(
                state.hosts.iter().cloned().collect(),
                state.origins.iter().cloned().collect(),
            )
            .map_err(ServerError::Mount)?,
        ),
        None => None,
    };
    events::spawn_listener(state.clone())?;
    let follower = match state.webhook.clone() {
        Some(hook) => Some((hook.timeout, webhook::spawn(state.clone(), hook)?)),
        None => None,
    };
    on_bound(bound);
    tracing::info!(%bound, base_url = %state.base_url, "airlock serve is listening");
    let stopper = state.clone();
    let (extra, drain) = match mounted {
        Some(m) => (Some(m.router), Some(m.on_shutdown)),
        None => (None, None),
    };
    let shutdown = async move {
        shutdown.await;
        // In-flight MCP calls are answered (or time out) before the listener closes.
        if let Some(drain) = drain {
            drain.await;
        }
        // Event streams never end on their own; end them so the graceful shutdown can finish.
        stopper.stop();
    };
    // The peer's address is kept with each request: failed logins are throttled by source.
    let mut app = router(state);
    if let Some(extra) = extra {
        // Merged after the page's layers: the mounted routes keep their own guards.
        app = app.merge(extra);
    }
    let app = app.into_make_service_with_connect_info::<SocketAddr>();
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(ServerError::Serve);
    // Let the webhook finish the POST in hand and save its cursor, so a restart does not
    // repeat it (bounded by the POST's own timeout).
    if let Some((timeout, task)) = follower {
        let _ = tokio::time::timeout(timeout + std::time::Duration::from_secs(1), task).await;
    }
    served
}
