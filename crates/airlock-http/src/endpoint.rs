//! The HTTP edge: `POST`, `GET` and `DELETE` on `/mcp` and `/mcp/<server>`.
//!
//! In order, before anything reaches a pipeline: `Host` must be one of the gateway's names and
//! a browser's `Origin` one it allows (DNS rebinding: 403); the bearer token must name an agent
//! (401, with `WWW-Authenticate`); a POST must be JSON (415), accept JSON and event streams
//! (406), fit the frame limit (413) and parse (400 with a JSON-RPC parse error); a session id
//! must name an open session of the same agent (404 otherwise — the same answer as an unknown
//! id, so one agent learns nothing about another's sessions).
//!
//! A POST with requests is answered with one JSON message when its only request's answer is
//! the first message for it, and with an event stream otherwise (progress, requests from the
//! server, several answers).

// A refusal is the HTTP answer itself; it is built once per refused request, so its size is
// no cost worth an allocation.
#![allow(clippy::result_large_err)]

use std::collections::HashSet;
use std::sync::Arc;

use airlock_pipeline::Line;
use airlock_protocol::{Id, INVALID_REQUEST, PARSE_ERROR};
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::era::{self, Era};
use crate::link::Link;
use crate::session::{Delivery, Scope, Session, STREAM_BUFFER};
use crate::upstream_http::SESSION_HEADER;
use crate::{lock, McpGateway, Message, Principal};

/// `/mcp` and `/mcp/{server}` over the gateway.
pub(crate) fn routes(gw: Arc<McpGateway>) -> Router {
    Router::new()
        .route("/mcp", post(post_all).get(get_all).delete(delete_all))
        .route(
            "/mcp/{server}",
            post(post_one).get(get_one).delete(delete_one),
        )
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(gw)
}

async fn post_all(State(gw): State<Arc<McpGateway>>, headers: HeaderMap, body: Body) -> Response {
    handle_post(gw, Scope::All, headers, body).await
}

async fn post_one(
    State(gw): State<Arc<McpGateway>>,
    Path(server): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if !gw.is_upstream(&server) {
        return plain(StatusCode::NOT_FOUND, "no such MCP server on this gateway");
    }
    handle_post(gw, Scope::One(server), headers, body).await
}

async fn get_all(State(gw): State<Arc<McpGateway>>, headers: HeaderMap) -> Response {
    handle_get(gw, Scope::All, headers).await
}

async fn get_one(
    State(gw): State<Arc<McpGateway>>,
    Path(server): Path<String>,
    headers: HeaderMap,
) -> Response {
    handle_get(gw, Scope::One(server), headers).await
}

async fn delete_all(State(gw): State<Arc<McpGateway>>, headers: HeaderMap) -> Response {
    handle_delete(gw, Scope::All, headers).await
}

async fn delete_one(
    State(gw): State<Arc<McpGateway>>,
    Path(server): Path<String>,
    headers: HeaderMap,
) -> Response {
    handle_delete(gw, Scope::One(server), headers).await
}

// === the checks every request passes ===

/// `Host` and `Origin`, then the agent's token.
fn admit(gw: &McpGateway, headers: &HeaderMap) -> Result<Principal, Response> {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_ascii_lowercase);
    match host {
        Some(h) if gw.parts.hosts.contains(&h) => {}
        _ => {
            gw.metrics.refused("host");
            return Err(plain(
                StatusCode::FORBIDDEN,
                "this Host is not one of the gateway's names",
            ));
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let allowed = origin
            .to_str()
            .is_ok_and(|o| gw.parts.origins.iter().any(|k| k == o));
        if !allowed {
            gw.metrics.refused("origin");
            return Err(plain(
                StatusCode::FORBIDDEN,
                "cross-origin request refused: this Origin may not call the gateway",
            ));
        }
    }
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    let Some(bearer) = bearer.filter(|t| !t.is_empty()) else {
        gw.metrics.refused("unauthenticated");
        return Err(unauthorized(
            "an agent token is required: Authorization: Bearer <token>",
        ));
    };
    gw.parts.auth.authenticate(bearer).map_err(|why| {
        gw.metrics.refused("unauthenticated");
        tracing::info!(reason = %why, "an agent token was refused");
        unauthorized("the agent token is not valid")
    })
}

/// The open session the request names, if it belongs to this agent and endpoint.
fn find_session(
    gw: &Arc<McpGateway>,
    headers: &HeaderMap,
    principal: &Principal,
    scope: &Scope,
) -> Result<Arc<Session>, Response> {
    let Some(id) = headers.get(SESSION_HEADER).and_then(|v| v.to_str().ok()) else {
        return Err(plain(
            StatusCode::BAD_REQUEST,
            "Mcp-Session-Id is required after initialize",
        ));
    };
    match gw.session(id) {
        Some(s) if s.principal == *principal && s.scope == *scope && !s.is_ended() => {
            if s.links()
                .iter()
                .any(|l| l.lost.load(std::sync::atomic::Ordering::SeqCst))
            {
                let gw = gw.clone();
                tokio::spawn(
                    async move { gw.end_session(&s, "the upstream ended its session").await },
                );
                return Err(plain(
                    StatusCode::NOT_FOUND,
                    "the upstream server ended this session: initialize again",
                ));
            }
            Ok(s)
        }
        _ => Err(plain(
            StatusCode::NOT_FOUND,
            "no such session (it ended, or never existed): initialize again",
        )),
    }
}

// === POST ===

async fn handle_post(
    gw: Arc<McpGateway>,
    scope: Scope,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let since = std::time::Instant::now();
    let principal = match admit(&gw, &headers) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("application/json"));
    if !is_json {
        return plain(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "a POST to /mcp carries Content-Type: application/json",
        );
    }
    if !accepts(&headers, "application/json") || !accepts(&headers, "text/event-stream") {
        return plain(
            StatusCode::NOT_ACCEPTABLE,
            "Accept must list application/json and text/event-stream",
        );
    }
    let max = gw.parts.config.gateway.max_frame_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return too_large(max);
    }
    let body = match read_body(body, max).await {
        Some(b) => b,
        None => return too_large(max),
    };
    let messages = match parse_body(&body) {
        Ok(m) => m,
        Err(r) => return r,
    };
    let header = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let header_version = header("mcp-protocol-version");
    if era::is_modern(header_version.as_deref(), &messages) {
        let checked = era::check(&header, &messages);
        return handle_modern(gw, principal, scope, checked, messages, since).await;
    }
    let init = messages
        .iter()
        .any(|m| m.method.as_deref() == Some("initialize"));
    let session = if init {
        if messages.len() != 1 || messages[0].id.is_none() {
            return rpc_error(
                StatusCode::BAD_REQUEST,
                INVALID_REQUEST,
                "initialize must be sent alone, as a request",
            );
        }
        match gw.new_session(principal, scope.clone()) {
            Some(s) => s,
            None => {
                return plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the gateway takes no new sessions now (full, or shutting down)",
                )
            }
        }
    } else {
        match find_session(&gw, &headers, &principal, &scope) {
            Ok(s) => s,
            Err(r) => return r,
        }
    };
    session.touch();
    let (outbox, inbox) = mpsc::channel(STREAM_BUFFER);
    let mut pending = HashSet::new();
    match &session.scope {
        Scope::One(server) => {
            if init {
                *lock(&session.version) = messages[0]
                    .value
                    .pointer("/params/protocolVersion")
                    .and_then(Value::as_str)
                    .map(str::to_string);
            }
            let link = match gw.open_link(&session, server).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(server = %server, error = %e, "cannot open a link to an upstream");
                    if init {
                        gw.end_session(&session, "the upstream could not be reached")
                            .await;
                    }
                    return link_refused(&e);
                }
            };
            let messages = if link.era == Era::Modern {
                bridge_to_modern(&session, &link, messages, &outbox, &mut pending).await
            } else {
                messages
            };
            for m in &messages {
                if let (Some(id), Some(_)) = (&m.id, &m.method) {
                    session.expect(server, id.clone(), m.progress_token(), outbox.clone());
                    pending.insert(id.clone());
                }
            }
            let lines = messages.into_iter().map(|m| Line::Frame(m.raw)).collect();
            gw.metrics.calls(pending.len());
            link.from_agent(lines).await;
        }
        Scope::All => {
            let n = messages
                .iter()
                .filter(|m| m.id.is_some() && m.method.is_some())
                .count();
            gw.metrics.calls(n);
            crate::aggregate::handle(&gw, &session, messages, outbox.clone(), &mut pending).await;
        }
    }
    let route = outbox.downgrade();
    drop(outbox);
    let session_header = init.then(|| session.id.clone());
    if pending.is_empty() {
        let mut r = StatusCode::ACCEPTED.into_response();
        add_session_header(&mut r, session_header.as_deref());
        return r;
    }
    let answering = Answering {
        gw: gw.clone(),
        since,
        session_header,
        rename: None,
        cancel: None,
        route,
    };
    answer(session, inbox, pending, answering).await
}

/// How a POST is answered beyond its messages.
struct Answering {
    gw: Arc<McpGateway>,
    /// When the POST arrived (for the latency metric).
    since: std::time::Instant,
    /// The new session's id (the answer to `initialize`).
    session_header: Option<String>,
    /// Airlock's id for the request, and the agent's (a modern agent's request is renamed).
    rename: Option<(Id, Value)>,
    /// A modern agent: a stream it closes cancels what it still waits for, on this link.
    cancel: Option<Arc<Link>>,
    /// The sender the session's routes hold for this POST.
    route: mpsc::WeakSender<Delivery>,
}

/// What a POST still waits for. If the agent goes away first: a modern agent's requests are
/// cancelled (closing the stream is its cancel); a legacy agent's go on, and what they send is
/// kept for the agent to resume the stream (`GET` with `Last-Event-ID`).
struct Waiting {
    pending: HashSet<Id>,
    cancel: Option<Arc<Link>>,
    inbox: mpsc::Receiver<Delivery>,
    /// The sending side the routes hold (weak: the stream ends when nothing can answer).
    route: mpsc::WeakSender<Delivery>,
    session: Arc<Session>,
    /// This stream's number, once it is an event stream.
    stream: Option<u64>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if let Some(link) = self.cancel.take() {
            let ids: Vec<Id> = self.pending.drain().collect();
            rt.spawn(async move {
                for id in ids {
                    link.cancel(id, "the agent closed the stream").await;
                }
            });
            return;
        }
        let Some(stream) = self.stream else { return };
        // What is still on its way to this stream goes to the session's replay instead.
        let (keep, mut kept) = mpsc::channel(STREAM_BUFFER);
        if let Some(dead) = self.route.upgrade() {
            self.session.redirect(&dead, &keep);
        }
        drop(keep);
        let mut left = Vec::new();
        while let Ok(d) = self.inbox.try_recv() {
            left.push(d);
        }
        let session = self.session.clone();
        rt.spawn(async move {
            for d in left {
                session.stash(stream, d).await;
            }
            while let Some(d) = kept.recv().await {
                session.stash(stream, d).await;
            }
        });
    }
}

/// Waits for the first message: a lone answer goes back as JSON, anything else as a stream.
async fn answer(
    session: Arc<Session>,
    inbox: mpsc::Receiver<Delivery>,
    pending: HashSet<Id>,
    how: Answering,
) -> Response {
    let mut waiting = Waiting {
        pending,
        cancel: how.cancel,
        inbox,
        route: how.route,
        session: session.clone(),
        stream: None,
    };
    let rename = how.rename;
    let (gw, since) = (how.gw, how.since);
    let first = tokio::select! {
        d = waiting.inbox.recv() => d,
        _ = session.end_signal.notified() => None,
    };
    let Some(mut first) = first else {
        waiting.cancel = None;
        waiting.pending.clear();
        return plain(StatusCode::NOT_FOUND, "the session ended");
    };
    renamed(&mut first, rename.as_ref());
    if let Some(id) = &first.answers {
        waiting.pending.remove(id);
        gw.metrics.answered(&first.bytes, since);
        if waiting.pending.is_empty() {
            // An `initialize` that failed (the upstream cannot be reached, or refused) opens no
            // session: the agent gets the error and no session id to hold on to.
            let failed_init = how.session_header.is_some() && is_error(&first.bytes);
            if failed_init {
                gw.end_session(&session, "initialize failed").await;
            }
            let mut r = (
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )],
                first.bytes,
            )
                .into_response();
            if !failed_init {
                add_session_header(&mut r, how.session_header.as_deref());
            }
            return r;
        }
    }
    let stream_id = session.open_stream();
    waiting.stream = Some(stream_id);
    let state = (Some(first), waiting, rename, gw);
    let stream =
        futures_util::stream::unfold(state, move |(first, mut waiting, rename, gw)| async move {
            let is_first = first.is_some();
            let next = match first {
                Some(d) => Some(d),
                None if waiting.pending.is_empty() => return None,
                None => tokio::select! {
                    d = waiting.inbox.recv() => d,
                    _ = waiting.session.end_signal.notified() => None,
                },
            };
            let mut d = next?;
            renamed(&mut d, rename.as_ref());
            if let Some(id) = &d.answers {
                if waiting.pending.remove(id) && !is_first {
                    gw.metrics.answered(&d.bytes, since);
                }
            }
            let id = waiting.session.record(stream_id, &d.bytes);
            let event = crate::sse::encode_event(Some(&id), &d.bytes);
            Some((
                Ok::<_, std::convert::Infallible>(Bytes::from(event)),
                (None, waiting, rename, gw),
            ))
        });
    let mut r = event_stream(Body::from_stream(stream));
    add_session_header(&mut r, how.session_header.as_deref());
    r
}

/// Whether a message is an error response.
fn is_error(frame: &[u8]) -> bool {
    matches!(
        crate::kind_of(frame),
        Some(airlock_protocol::FrameKind::ErrorResponse { .. })
    )
}

/// Gives a response the agent's own id back (and keeps the answered id Airlock's, for the
/// bookkeeping of what is still pending).
fn renamed(d: &mut Delivery, rename: Option<&(Id, Value)>) {
    let Some((ours, theirs)) = rename else { return };
    if d.answers.as_ref() != Some(ours) {
        return;
    }
    if let Ok(mut v) = serde_json::from_slice::<Value>(&d.bytes) {
        v["id"] = theirs.clone();
        if let Ok(bytes) = serde_json::to_vec(&v) {
            d.bytes = bytes;
        }
    }
}

// === 2026-07-28 ===

/// A modern agent's POST: checked against its headers, then judged and sent on like any other,
/// with the bridge to a legacy upstream where needed.
async fn handle_modern(
    gw: Arc<McpGateway>,
    principal: Principal,
    scope: Scope,
    checked: Result<(), era::Refusal>,
    mut messages: Vec<Message>,
    since: std::time::Instant,
) -> Response {
    if let Err(r) = checked {
        let id = messages.first().and_then(|m| m.id.clone());
        return rpc_error_for(
            StatusCode::BAD_REQUEST,
            id.as_ref(),
            r.code,
            &r.message,
            r.data,
        );
    }
    let Scope::One(server) = scope else {
        return rpc_error(
            StatusCode::BAD_REQUEST,
            INVALID_REQUEST,
            "2026-07-28 agents use /mcp/<server>: the aggregated /mcp speaks the session-based versions",
        );
    };
    let m = messages.remove(0);
    let Some(session) = gw.modern_session(principal, &server) else {
        return plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "the gateway takes no new sessions now (full, or shutting down)",
        );
    };
    session.touch();
    let link = match gw.open_link(&session, &server).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(server = %server, error = %e, "cannot open a link to an upstream");
            return link_refused(&e);
        }
    };
    if link.era == Era::Legacy {
        if let Err(e) = link.handshake(era::initialize_params(&m)).await {
            tracing::warn!(server = %server, error = %e, "cannot initialize a legacy upstream");
            return plain(
                StatusCode::BAD_GATEWAY,
                "the upstream server cannot be reached",
            );
        }
        if let (Some(id), Some("server/discover")) = (&m.id, m.method.as_deref()) {
            let declared = lock(&link.declared).clone();
            let body = serde_json::to_vec(&serde_json::json!({
                "jsonrpc": "2.0", "id": id.to_json(),
                "result": era::discover_result(declared.as_ref()),
            }))
            .unwrap_or_default();
            return ([(header::CONTENT_TYPE, "application/json")], body).into_response();
        }
    }
    gw.metrics.calls(usize::from(m.id.is_some()));
    let Some(theirs) = m.id.clone() else {
        link.from_agent(vec![Line::Frame(m.raw)]).await;
        return StatusCode::ACCEPTED.into_response();
    };
    // Several processes of one agent share this session; their ids may collide, so the
    // request travels under an id of Airlock's and the answer gets the agent's back.
    let ours = Id::Str(format!("airlock-{}", gw.next_request()));
    let mut v = m.value.clone();
    v["id"] = ours.to_json();
    let frame = crate::one_line(serde_json::to_vec(&v).unwrap_or_default());
    let (outbox, inbox) = mpsc::channel(STREAM_BUFFER);
    let route = outbox.downgrade();
    session.expect(&server, ours.clone(), m.progress_token(), outbox);
    link.from_agent(vec![Line::Frame(frame)]).await;
    let answering = Answering {
        gw: gw.clone(),
        since,
        session_header: None,
        rename: Some((ours.clone(), theirs.to_json())),
        cancel: Some(link),
        route,
    };
    answer(session, inbox, HashSet::from([ours]), answering).await
}

/// A legacy agent in front of a modern upstream: `initialize`, `initialized` and `ping` are
/// Airlock's to answer; every other request gets the `_meta` the upstream requires.
async fn bridge_to_modern(
    session: &Arc<Session>,
    link: &Arc<Link>,
    messages: Vec<Message>,
    outbox: &crate::session::Outbox,
    pending: &mut HashSet<Id>,
) -> Vec<Message> {
    let mut forward = Vec::new();
    for m in messages {
        let local = match (&m.id, m.method.as_deref()) {
            (Some(id), Some("initialize")) => {
                *lock(&session.init_params) = m.value.get("params").cloned();
                let asked = m
                    .value
                    .pointer("/params/protocolVersion")
                    .and_then(Value::as_str);
                let declared = lock(&link.declared).clone();
                Some((id.clone(), era::initialize_result(asked, declared.as_ref())))
            }
            (Some(id), Some("ping")) => Some((id.clone(), serde_json::json!({}))),
            (None, Some("notifications/initialized")) => continue,
            (None, Some("notifications/cancelled")) => {
                if let Some(id) = m.value.pointer("/params/requestId").and_then(Id::from_json) {
                    link.cancel(id, "the agent cancelled the request").await;
                }
                continue;
            }
            _ => None,
        };
        if let Some((id, result)) = local {
            pending.insert(id.clone());
            let bytes = serde_json::to_vec(
                &serde_json::json!({"jsonrpc": "2.0", "id": id.to_json(), "result": result}),
            )
            .unwrap_or_default();
            let _ = outbox
                .send(Delivery {
                    bytes,
                    answers: Some(id),
                    from: String::new(),
                })
                .await;
            continue;
        }
        if m.id.is_some() {
            let init = lock(&session.init_params).clone();
            let value = era::add_meta(&m.value, init.as_ref());
            let raw = crate::one_line(serde_json::to_vec(&value).unwrap_or_default());
            forward.push(Message {
                raw,
                value,
                id: m.id,
                method: m.method,
            });
        } else {
            forward.push(m);
        }
    }
    forward
}

/// The body, if it fits in `max` bytes. A longer one is read on (and dropped) for a bounded
/// while, so a client still sending hears the 413 instead of a reset connection.
async fn read_body(body: Body, max: usize) -> Option<Bytes> {
    use futures_util::StreamExt;
    let mut stream = body.into_data_stream();
    let mut buf = bytes::BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.ok()?;
        if buf.len() + chunk.len() > max {
            let drain_limit = max.saturating_mul(4);
            let mut drained = buf.len() + chunk.len();
            let _ = tokio::time::timeout(std::time::Duration::from_secs(1), async {
                while let Some(Ok(c)) = stream.next().await {
                    drained += c.len();
                    if drained > drain_limit {
                        break;
                    }
                }
            })
            .await;
            return None;
        }
        buf.extend_from_slice(&chunk);
    }
    Some(buf.freeze())
}

/// The messages of a body: one JSON object, or a batch of them (2025-03-26).
fn parse_body(body: &Bytes) -> Result<Vec<Message>, Response> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        rpc_error(
            StatusCode::BAD_REQUEST,
            PARSE_ERROR,
            &format!("the body is not JSON: {e}"),
        )
    })?;
    let raws: Vec<Vec<u8>> = match &value {
        Value::Object(_) => vec![body.to_vec()],
        Value::Array(items) if !items.is_empty() => {
            let parts: Vec<Box<serde_json::value::RawValue>> = serde_json::from_slice(body)
                .map_err(|e| rpc_error(StatusCode::BAD_REQUEST, PARSE_ERROR, &e.to_string()))?;
            parts
                .into_iter()
                .map(|r| r.get().as_bytes().to_vec())
                .collect()
        }
        _ => {
            return Err(rpc_error(
                StatusCode::BAD_REQUEST,
                INVALID_REQUEST,
                "the body must be a JSON-RPC message (an object) or a batch of them",
            ))
        }
    };
    let values: Vec<Value> = match value {
        Value::Array(items) => items,
        v => vec![v],
    };
    let mut out = Vec::with_capacity(raws.len());
    for (raw, value) in raws.into_iter().zip(values) {
        let id = value.get("id").and_then(Id::from_json);
        let method = value
            .get("method")
            .and_then(Value::as_str)
            .map(str::to_string);
        out.push(Message {
            raw: crate::one_line(raw),
            value,
            id,
            method,
        });
    }
    Ok(out)
}

// === GET: the server→client stream ===

async fn handle_get(gw: Arc<McpGateway>, scope: Scope, headers: HeaderMap) -> Response {
    let principal = match admit(&gw, &headers) {
        Ok(p) => p,
        Err(r) => return r,
    };
    if !accepts(&headers, "text/event-stream") {
        return plain(
            StatusCode::NOT_ACCEPTABLE,
            "a GET stream needs Accept: text/event-stream",
        );
    }
    let session = match find_session(&gw, &headers, &principal, &scope) {
        Ok(s) => s,
        Err(r) => return r,
    };
    session.touch();
    let (outbox, inbox) = mpsc::channel(STREAM_BUFFER);
    let last_event = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    // An id of Airlock's: resume that stream from the session's replay. Another: the
    // upstream numbered it, so the upstream resumes it.
    let replayed = last_event
        .as_deref()
        .and_then(|last| session.resume(last, outbox.clone()));
    let resumed = replayed.is_some();
    if !resumed {
        session.listen(outbox);
        for link in session.links() {
            link.listen_upstream(last_event.clone());
        }
    } else {
        drop(outbox);
    }
    let stream_id = session.open_stream();
    let backlog: std::collections::VecDeque<(String, Vec<u8>)> =
        replayed.unwrap_or_default().into();
    let state = (backlog, inbox, session);
    let stream =
        futures_util::stream::unfold(state, move |(mut backlog, mut inbox, session)| async move {
            let event = match backlog.pop_front() {
                Some((id, data)) => crate::sse::encode_event(Some(&id), &data),
                None => {
                    let d = tokio::select! {
                        d = inbox.recv() => d,
                        _ = session.end_signal.notified() => None,
                    }?;
                    // On a resumed stream the ids go on from the stream resumed, so a second
                    // break resumes where this one stopped.
                    let id = session.record(stream_id, &d.bytes);
                    crate::sse::encode_event(Some(&id), &d.bytes)
                }
            };
            Some((
                Ok::<_, std::convert::Infallible>(Bytes::from(event)),
                (backlog, inbox, session),
            ))
        });
    event_stream(Body::from_stream(stream))
}

// === DELETE: the agent ends its session ===

async fn handle_delete(gw: Arc<McpGateway>, scope: Scope, headers: HeaderMap) -> Response {
    let principal = match admit(&gw, &headers) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let session = match find_session(&gw, &headers, &principal, &scope) {
        Ok(s) => s,
        Err(r) => return r,
    };
    gw.end_session(&session, "the agent ended the session")
        .await;
    StatusCode::NO_CONTENT.into_response()
}

// === answers ===

fn accepts(headers: &HeaderMap, kind: &str) -> bool {
    headers.get_all(header::ACCEPT).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',').any(|part| {
                let t = part
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase();
                t == kind
                    || t == "*/*"
                    || (t.ends_with("/*") && kind.starts_with(&t[..t.len() - 1]))
            })
        })
    })
}

/// A link that could not be opened: 503 when the upstream is at its session limit (try
/// later), 502 when it cannot be reached or started.
fn link_refused(e: &crate::OpenError) -> Response {
    match e {
        crate::OpenError::Full(why) => plain(StatusCode::SERVICE_UNAVAILABLE, why),
        crate::OpenError::Failed(_) => plain(
            StatusCode::BAD_GATEWAY,
            "the upstream server cannot be reached",
        ),
    }
}

/// An event-stream answer; proxies are asked not to buffer it.
fn event_stream(body: Body) -> Response {
    let mut r = (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response();
    r.headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    r
}

fn add_session_header(r: &mut Response, id: Option<&str>) {
    if let Some(v) = id.and_then(|i| HeaderValue::from_str(i).ok()) {
        r.headers_mut().insert(SESSION_HEADER, v);
    }
}

fn plain(status: StatusCode, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{message}\n"),
    )
        .into_response()
}

fn unauthorized(message: &str) -> Response {
    let mut r = plain(StatusCode::UNAUTHORIZED, message);
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"airlock\""),
    );
    r
}

fn too_large(max: usize) -> Response {
    plain(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!("the body is larger than the gateway's limit of {max} bytes ([gateway] max_frame_bytes)"),
    )
}

fn rpc_error(status: StatusCode, code: i32, message: &str) -> Response {
    rpc_error_for(status, None, code, message, None)
}

fn rpc_error_for(
    status: StatusCode,
    id: Option<&Id>,
    code: i32,
    message: &str,
    data: Option<Value>,
) -> Response {
    let body = airlock_protocol::error_response(id, code, message, data);
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}
