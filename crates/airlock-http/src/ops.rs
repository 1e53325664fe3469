//! What operators watch: `/healthz` (the process serves), `/readyz` (it takes sessions and can
//! read the kill state: a gateway that cannot honour a kill is not ready), and `/metrics` in
//! the Prometheus text format.
//!
//! Metrics use `prometheus-client` (the Prometheus project's own Rust client: typed families,
//! histograms, the exposition format) rather than a hand-written encoder. What the gateway
//! counts itself (requests, answers by outcome, latency, refusals, kills applied) is kept in
//! memory; what lives in the store (pending approvals) is read at scrape time.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use airlock_pipeline::codes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::McpGateway;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: &'static str,
}

/// The gateway's metrics.
pub(crate) struct Metrics {
    registry: Registry,
    requests: Counter,
    answers: Family<Outcome, Counter>,
    latency: Histogram,
    refused: Family<Reason, Counter>,
    kills_applied: Counter,
    sessions: Gauge,
    pending_approvals: Gauge,
    active_kills: Gauge,
    /// The kill state was read on the last try.
    pub(crate) store_ok: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("airlock");
        let requests = Counter::default();
        let answers = Family::<Outcome, Counter>::default();
        // 100 µs to ~100 s: a gateway hop at the bottom, a human's approval at the top.
        let latency = Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
            0.0001, 4.0, 11,
        ));
        let refused = Family::<Reason, Counter>::default();
        let kills_applied = Counter::default();
        let sessions = Gauge::default();
        let pending_approvals = Gauge::default();
        let active_kills = Gauge::default();
        registry.register(
            "mcp_requests",
            "MCP requests agents sent through the gateway",
            requests.clone(),
        );
        registry.register(
            "mcp_answers",
            "Answers to agents' requests, by outcome (ok, error, denied, killed, approval_denied, approval_expired, upstream_unavailable, upstream_timeout)",
            answers.clone(),
        );
        registry.register(
            "mcp_request_duration_seconds",
            "Time from a request's arrival to its answer, approvals included",
            latency.clone(),
        );
        registry.register(
            "http_refused",
            "HTTP requests refused before any MCP handling, by reason",
            refused.clone(),
        );
        registry.register(
            "kills_applied",
            "Kills that stopped an open session's link",
            kills_applied.clone(),
        );
        registry.register("mcp_sessions", "Open MCP sessions", sessions.clone());
        registry.register(
            "approvals_pending",
            "Approval requests waiting for a human",
            pending_approvals.clone(),
        );
        registry.register("kills_active", "Kills in force", active_kills.clone());
        Metrics {
            registry,
            requests,
            answers,
            latency,
            refused,
            kills_applied,
            sessions,
            pending_approvals,
            active_kills,
            store_ok: AtomicBool::new(true),
        }
    }
}

impl Metrics {
    pub(crate) fn calls(&self, n: usize) {
        self.requests.inc_by(n as u64);
    }

    pub(crate) fn refused(&self, why: &'static str) {
        self.refused.get_or_create(&Reason { reason: why }).inc();
    }

    pub(crate) fn kill_applied(&self) {
        self.kills_applied.inc();
    }

    /// One request answered, `since` its arrival; the outcome is read from the answer.
    pub(crate) fn answered(&self, answer: &[u8], since: Instant) {
        self.latency.observe(since.elapsed().as_secs_f64());
        self.answers
            .get_or_create(&Outcome {
                outcome: outcome(answer),
            })
            .inc();
    }
}

/// An answer's outcome, from its error code (Airlock's own codes name what stopped a call).
fn outcome(answer: &[u8]) -> &'static str {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(answer) else {
        return "error";
    };
    let Some(code) = v.pointer("/error/code").and_then(serde_json::Value::as_i64) else {
        return "ok";
    };
    match i32::try_from(code).unwrap_or(0) {
        codes::DENIED | codes::METHOD_NOT_ALLOWED => "denied",
        codes::KILLED => "killed",
        codes::APPROVAL_DENIED => "approval_denied",
        codes::APPROVAL_EXPIRED => "approval_expired",
        codes::UPSTREAM_UNAVAILABLE => "upstream_unavailable",
        codes::UPSTREAM_TIMEOUT => "upstream_timeout",
        _ => "error",
    }
}

/// `/healthz`, `/readyz`, `/metrics`.
pub(crate) fn routes(gw: Arc<McpGateway>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .with_state(gw)
}

async fn ready(State(gw): State<Arc<McpGateway>>) -> Response {
    if gw.is_draining() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "draining: the gateway is shutting down\n",
        )
            .into_response();
    }
    if !gw.metrics.store_ok.load(Ordering::Relaxed) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "the kill state cannot be read: every call is refused\n",
        )
            .into_response();
    }
    "ready\n".into_response()
}

async fn metrics(State(gw): State<Arc<McpGateway>>) -> Response {
    let m = &gw.metrics;
    m.sessions.set(gw.sessions().len() as i64);
    m.active_kills.set(crate::lock(&gw.kills).len() as i64);
    let pending = gw
        .stores
        .run(|s| {
            s.approvals
                .list(&airlock_approval::ListFilter {
                    states: vec![airlock_approval::State::Pending],
                    limit: 100_000,
                    ..Default::default()
                })
                .map(|l| l.len())
        })
        .await;
    if let Ok(Ok(n)) = pending {
        m.pending_approvals.set(n as i64);
    }
    let mut text = String::new();
    if prometheus_client::encoding::text::encode(&mut text, &m.registry).is_err() {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot encode the metrics\n",
        )
            .into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_come_from_airlocks_codes() {
        assert_eq!(outcome(br#"{"jsonrpc":"2.0","id":1,"result":{}}"#), "ok");
        assert_eq!(
            outcome(br#"{"jsonrpc":"2.0","id":1,"error":{"code":-31001,"message":"x"}}"#),
            "denied"
        );
        assert_eq!(
            outcome(br#"{"jsonrpc":"2.0","id":1,"error":{"code":-31007,"message":"x"}}"#),
            "killed"
        );
        assert_eq!(
            outcome(br#"{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"x"}}"#),
            "error"
        );
    }

    #[test]
    fn the_registry_encodes() {
        let m = Metrics::default();
        m.calls(2);
        m.refused("origin");
        m.answered(br#"{"jsonrpc":"2.0","id":1,"result":{}}"#, Instant::now());
        let mut text = String::new();
        assert!(prometheus_client::encoding::text::encode(&mut text, &m.registry).is_ok());
        assert!(text.contains("airlock_mcp_requests_total 2"), "{text}");
        assert!(
            text.contains("airlock_http_refused_total{reason=\"origin\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("airlock_mcp_answers_total{outcome=\"ok\"} 1"),
            "{text}"
        );
    }
}
