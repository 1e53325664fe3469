//! The JSON API under `/api/v1`, authenticated with `Authorization: Bearer NAME:TOKEN`.
//!
//! | method | path | body | answer |
//! |---|---|---|---|
//! | GET | `/api/v1/approvals?state=pending\|decided\|all&limit=N` | | `{"approvals": [...]}` |
//! | GET | `/api/v1/approvals/{id}` | | `{"approval", "missing", "recent_calls", "approvable", "revealed"?, "hidden"?}` |
//! | POST | `/api/v1/approvals/{id}/approve` | `{"comment"?, "digest"?}` | `{"approval"}` |
//! | POST | `/api/v1/approvals/{id}/deny` | `{"comment"?, "digest"?}` | `{"approval"}` |
//! | GET | `/api/v1/status` | | `{"kills", "breakers"}` |
//! | POST | `/api/v1/kill` | `{"scope", "target"?, "reason"?}` | `{"kill", "notified"}` |
//! | POST | `/api/v1/resume` | `{"scope", "target"?}` | `{"resumed"}` |
//!
//! Errors are `{"error": {"status", "message"}}`: 400 a malformed body, 401 no or wrong
//! credentials, 403 not allowed, 404 unknown, 409 not pending / expired / already voted /
//! nothing to resume, 429 too many failures.

use std::sync::Arc;

use airlock_approval::Verdict;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::approvals::{self, Which};
use crate::auth::ApiHuman;
use crate::control;
use crate::error::Refusal;
use crate::state::AppState;

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/approvals", get(list))
        .route("/api/v1/approvals/{id}", get(show))
        .route("/api/v1/approvals/{id}/approve", post(approve))
        .route("/api/v1/approvals/{id}/deny", post(deny))
        .route("/api/v1/status", get(status))
        .route("/api/v1/kill", post(kill))
        .route("/api/v1/resume", post(resume))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    state: Option<String>,
    limit: Option<usize>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DecideBody {
    comment: Option<String>,
    digest: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KillBody {
    scope: String,
    target: Option<String>,
    reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResumeBody {
    scope: String,
    target: Option<String>,
}

async fn list(
    State(state): State<Arc<AppState>>,
    _who: ApiHuman,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, Refusal> {
    let Query(q) = query.map_err(|e| Refusal::bad_request(e.body_text()))?;
    let which = Which::from_name(q.state.as_deref().unwrap_or("pending"))?;
    let limit = q.limit.unwrap_or(approvals::MAX_LIST);
    let list = approvals::list(&state, which, limit).await?;
    Ok(Json(json!({ "approvals": list })))
}

async fn show(
    State(state): State<Arc<AppState>>,
    ApiHuman(human): ApiHuman,
    Path(id): Path<String>,
) -> Result<Json<Value>, Refusal> {
    let d = approvals::detail(&state, id, Some(human)).await?;
    Ok(Json(json!(d)))
}

async fn approve(
    State(state): State<Arc<AppState>>,
    ApiHuman(human): ApiHuman,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, Refusal> {
    decide(state, human, id, Verdict::Approve, &headers, &body).await
}

async fn deny(
    State(state): State<Arc<AppState>>,
    ApiHuman(human): ApiHuman,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, Refusal> {
    decide(state, human, id, Verdict::Deny, &headers, &body).await
}

async fn decide(
    state: Arc<AppState>,
    human: String,
    id: String,
    verdict: Verdict,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Json<Value>, Refusal> {
    // An empty body is a decision without a comment.
    let b: DecideBody = if body.iter().all(u8::is_ascii_whitespace) {
        DecideBody::default()
    } else {
        json_body(headers, body)?
    };
    let a = approvals::decide(&state, id, human, verdict, "api", b.comment, b.digest).await?;
    Ok(Json(json!({ "approval": a, "missing": a.missing() })))
}

async fn status(
    State(state): State<Arc<AppState>>,
    _who: ApiHuman,
) -> Result<Json<Value>, Refusal> {
    let s = control::status(&state).await?;
    Ok(Json(json!(s)))
}

async fn kill(
    State(state): State<Arc<AppState>>,
    ApiHuman(human): ApiHuman,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, Refusal> {
    let b: KillBody = json_body(&headers, &body)?;
    let target = control::target(&b.scope, b.target.as_deref())?;
    let reason = control::reason(b.reason.as_deref(), &human)?;
    let k = control::kill(&state, target, reason, human).await?;
    Ok(Json(json!(k)))
}

async fn resume(
    State(state): State<Arc<AppState>>,
    ApiHuman(human): ApiHuman,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, Refusal> {
    let b: ResumeBody = json_body(&headers, &body)?;
    let target = control::target(&b.scope, b.target.as_deref())?;
    let n = control::resume(&state, target, human).await?;
    Ok(Json(json!({ "resumed": n })))
}

/// A JSON body of exactly the expected shape; anything else is a 400 saying what is wrong.
fn json_body<T: DeserializeOwned>(headers: &HeaderMap, body: &[u8]) -> Result<T, Refusal> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(Refusal::new(
            axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the body as Content-Type: application/json",
        ));
    }
    serde_json::from_slice(body).map_err(|e| Refusal::bad_request(format!("malformed body: {e}")))
}
