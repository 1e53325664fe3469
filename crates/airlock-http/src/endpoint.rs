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

use std::collections::HashSet;
use std::sync::Arc;

use airlock_pipeline::Line;
use airlock_protocol::{Id, PARSE_ERROR, INVALID_REQUEST};
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::session::{Delivery, Scope, Session, STREAM_BUFFER};
use crate::upstream_http::SESSION_HEADER;
use crate::{lock, McpGateway, Message, Principal};

/// `/mcp` and `/mcp/{server}` over the gateway.
pub fn routes(gw: Arc<McpGateway>) -> Router {
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
        Some(h) if gw.parts.hosts.iter().any(|k| *k == h) => {}
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
        return Err(unauthorized("an agent token is required: Authorization: Bearer <token>"));
    };
    gw.parts.auth.authenticate(bearer).map_err(|why| {
        gw.metrics.refused("unauthenticated");
        tracing::info!(reason = %why, "an agent token was refused");
        unauthorized("the agent token is not valid")
    })
}

/// The open session the request names, if it belongs to this agent and endpoint.
fn find_session(
    gw: &McpGateway,
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
        Some(s) if s.principal == *principal && s.scope == *scope && !s.is_ended() => Ok(s),
        _ => Err(plain(
            StatusCode::NOT_FOUND,
            "no such session (it ended, or never existed): initialize again",
        )),
    }
}

// === POST ===

async fn handle_post(gw: Arc<McpGateway>, scope: Scope, headers: HeaderMap, body: Body) -> Response {
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
    let body = match axum::body::to_bytes(body, max).await {
        Ok(b) => b,
        Err(_) => return too_large(max),
    };
    let messages = match parse_body(&body) {
        Ok(m) => m,
        Err(r) => return r,
    };
    let init = messages.iter().any(|m| m.method.as_deref() == Some("initialize"));
    let session = if init {
        if messages.len() != 1 || messages[0].id.is_none() {
            return rpc_error(StatusCode::BAD_REQUEST, INVALID_REQUEST, "initialize must be sent alone, as a request");
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
                    tracing::warn!(server = %server, error = %e, "cannot reach an upstream");
                    if init {
                        gw.end_session(&session, "the upstream could not be reached").await;
                    }
                    return plain(StatusCode::BAD_GATEWAY, "the upstream server cannot be reached");
                }
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
            let n = messages.iter().filter(|m| m.id.is_some() && m.method.is_some()).count();
            gw.metrics.calls(n);
            crate::aggregate::handle(&gw, &session, messages, outbox.clone(), &mut pending).await;
        }
    }
    drop(outbox);
    let session_header = init.then(|| session.id.clone());
    if pending.is_empty() {
        let mut r = StatusCode::ACCEPTED.into_response();
        add_session_header(&mut r, session_header.as_deref());
        return r;
    }
    answer(session, inbox, pending, session_header).await
}

/// Waits for the first message: a lone answer goes back as JSON, anything else as a stream.
async fn answer(
    session: Arc<Session>,
    mut inbox: mpsc::Receiver<Delivery>,
    mut pending: HashSet<Id>,
    session_header: Option<String>,
) -> Response {
    let first = tokio::select! {
        d = inbox.recv() => d,
        _ = session.end_signal.notified() => None,
    };
    let Some(first) = first else {
        return plain(StatusCode::NOT_FOUND, "the session ended");
    };
    if let Some(id) = &first.answers {
        pending.remove(id);
        if pending.is_empty() {
            let mut r = (
                [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
                first.bytes,
            )
                .into_response();
            add_session_header(&mut r, session_header.as_deref());
            return r;
        }
    }
    let state = (Some(first), inbox, pending, session);
    let stream = futures_util::stream::unfold(state, |(first, mut inbox, mut pending, session)| async move {
        let next = match first {
            Some(d) => Some(d),
            None if pending.is_empty() => return None,
            None => tokio::select! {
                d = inbox.recv() => d,
                _ = session.end_signal.notified() => None,
            },
        };
        let d = next?;
        if let Some(id) = &d.answers {
            pending.remove(id);
        }
        let event = crate::sse::encode_event(None, &d.bytes);
        Some((Ok::<_, std::convert::Infallible>(Bytes::from(event)), (None, inbox, pending, session)))
    });
    let mut r = (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        Body::from_stream(stream),
    )
        .into_response();
    r.headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    add_session_header(&mut r, session_header.as_deref());
    r
}

/// The messages of a body: one JSON object, or a batch of them (2025-03-26).
fn parse_body(body: &Bytes) -> Result<Vec<Message>, Response> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        rpc_error(StatusCode::BAD_REQUEST, PARSE_ERROR, &format!("the body is not JSON: {e}"))
    })?;
    let raws: Vec<Vec<u8>> = match &value {
        Value::Object(_) => vec![body.to_vec()],
        Value::Array(items) if !items.is_empty() => {
            let parts: Vec<Box<serde_json::value::RawValue>> = serde_json::from_slice(body)
                .map_err(|e| rpc_error(StatusCode::BAD_REQUEST, PARSE_ERROR, &e.to_string()))?;
            parts.into_iter().map(|r| r.get().as_bytes().to_vec()).collect()
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
        let method = value.get("method").and_then(Value::as_str).map(str::to_string);
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
        return plain(StatusCode::NOT_ACCEPTABLE, "a GET stream needs Accept: text/event-stream");
    }
    let session = match find_session(&gw, &headers, &principal, &scope) {
        Ok(s) => s,
        Err(r) => return r,
    };
    session.touch();
    let (outbox, inbox) = mpsc::channel(STREAM_BUFFER);
    session.listen(outbox);
    let last_event = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    for link in session.links() {
        link.listen_upstream(last_event.clone());
    }
    let stream = futures_util::stream::unfold((inbox, session), |(mut inbox, session)| async move {
        let d = tokio::select! {
            d = inbox.recv() => d,
            _ = session.end_signal.notified() => None,
        }?;
        let event = crate::sse::encode_event(None, &d.bytes);
        Some((Ok::<_, std::convert::Infallible>(Bytes::from(event)), (inbox, session)))
    });
    let mut r = (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        Body::from_stream(stream),
    )
        .into_response();
    r.headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    r
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
    gw.end_session(&session, "the agent ended the session").await;
    StatusCode::NO_CONTENT.into_response()
}

// === answers ===

fn accepts(headers: &HeaderMap, kind: &str) -> bool {
    headers.get_all(header::ACCEPT).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',').any(|part| {
                let t = part.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
                t == kind || t == "*/*" || (t.ends_with("/*") && kind.starts_with(&t[..t.len() - 1]))
            })
        })
    })
}

fn add_session_header(r: &mut Response, id: Option<&str>) {
    if let Some(v) = id.and_then(|i| HeaderValue::from_str(i).ok()) {
        r.headers_mut().insert(SESSION_HEADER, v);
    }
}

fn plain(status: StatusCode, message: &str) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], format!("{message}\n")).into_response()
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
    let body = airlock_protocol::error_response(None, code, message, None);
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}
