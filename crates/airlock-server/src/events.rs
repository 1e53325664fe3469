//! Wake-ups: the store's notifications in, Server-Sent Events out.
//!
//! The server binds an [`airlock_control::Listener`] on the audit database; every kill, resume,
//! new approval request and decision is followed by `notify_all`, which wakes it at once. Each
//! wake-up bumps a counter on a broadcast channel; every open page holds a `GET /events`
//! stream and, on a `changed` event, re-fetches the part of the page that shows live state.
//! The events carry no data beyond the counter: the page re-reads with its own session, so an
//! event stream can never leak more than "something changed".

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::Stream;
use tokio::sync::broadcast::error::RecvError;

use crate::auth::PageHuman;
use crate::error::ServerError;
use crate::state::AppState;

/// A safety net: pages are also told to re-read this often (an approval expiring sends no
/// notification).
const TICK: Duration = Duration::from_secs(15);

/// Starts the task that turns store notifications into broadcasts.
pub(crate) fn spawn_listener(state: Arc<AppState>) -> Result<(), ServerError> {
    let mut listener =
        airlock_control::Listener::bind(&state.config.audit.path).map_err(ServerError::Listen)?;
    tokio::spawn(async move {
        let mut n: u64 = 0;
        let mut tick = tokio::time::interval(TICK);
        tick.tick().await;
        loop {
            tokio::select! {
                r = listener.recv() => {
                    if let Err(e) = r {
                        tracing::warn!(error = %e, "store notification socket failed; relying on the periodic re-read");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
                _ = tick.tick() => {}
            }
            n += 1;
            // No receivers is fine: nobody has a page open.
            let _ = state.changes.send(n);
            if let Some(w) = &state.webhook_wake {
                w.notify_one();
            }
        }
    });
    Ok(())
}

/// `GET /events`: a `changed` event after every store notification, for a logged-in page.
pub(crate) async fn sse(
    State(state): State<Arc<AppState>>,
    _who: PageHuman,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let rx = state.changes.subscribe();
    let stop = state.stopping.subscribe();
    let stream = futures_util::stream::unfold((rx, stop), |(mut rx, mut stop)| async move {
        loop {
            if *stop.borrow() {
                return None;
            }
            tokio::select! {
                r = rx.recv() => match r {
                    Ok(n) => {
                        let e = Event::default().event("changed").data(n.to_string());
                        return Some((Ok(e), (rx, stop)));
                    }
                    // Missed some: one event says the same.
                    Err(RecvError::Lagged(_)) => {
                        let e = Event::default().event("changed").data("lagged");
                        return Some((Ok(e), (rx, stop)));
                    }
                    Err(RecvError::Closed) => return None,
                },
                r = stop.changed() => if r.is_err() { return None },
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}
