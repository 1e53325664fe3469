//! The crate's errors: [`ServerError`] for starting up, [`Refusal`] for one answered request
//! (a status and a sentence, as JSON for the API or as a page for the browser).

use std::net::SocketAddr;
use std::path::PathBuf;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// Why the control plane could not start or keep serving.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The mounted routes (the MCP gateway) could not start.
    #[error("cannot start the MCP gateway: {0}")]
    Mount(String),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The audit database could not be opened.
    #[error("cannot open the audit database {}: {source}", path.display())]
    Audit {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: airlock_audit::AuditError,
    },
    /// The control tables could not be opened.
    #[error("cannot open the control store {}: {source}", path.display())]
    Control {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: airlock_control::ControlError,
    },
    /// The wake-up socket could not be bound.
    #[error("cannot listen for store notifications: {0}")]
    Listen(#[source] std::io::Error),
    /// `[serve.webhook]` is configured but its secret is missing.
    #[error("[serve.webhook] is configured but ${0} is not set (or empty): the webhook's POSTs must be signed")]
    NoWebhookSecret(String),
    /// A background thread could not be started.
    #[error("cannot start the {0} thread: {1}")]
    Thread(&'static str, #[source] std::io::Error),
    /// The HTTP server failed.
    #[error("serving failed: {0}")]
    Serve(#[source] std::io::Error),
}

/// A request refused or failed: the status and a sentence for the human. The API answers
/// `{"error": {"status": 404, "message": "..."}}`; the page shows the sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
}

impl Refusal {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            message: message.into(),
        }
    }
    pub(crate) fn bad_request(message: impl Into<String>) -> Refusal {
        Refusal::new(StatusCode::BAD_REQUEST, message)
    }
    pub(crate) fn not_found(message: impl Into<String>) -> Refusal {
        Refusal::new(StatusCode::NOT_FOUND, message)
    }
    pub(crate) fn forbidden(message: impl Into<String>) -> Refusal {
        Refusal::new(StatusCode::FORBIDDEN, message)
    }
    pub(crate) fn conflict(message: impl Into<String>) -> Refusal {
        Refusal::new(StatusCode::CONFLICT, message)
    }
    /// A store or internal failure: logged in full, answered with a generic sentence.
    pub(crate) fn internal(what: &str, error: &dyn std::fmt::Display) -> Refusal {
        tracing::error!(error = %error, "{what}");
        Refusal::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{what}; nothing was decided (see the server log)"),
        )
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "error": { "status": self.status.as_u16(), "message": self.message }
        });
        (self.status, axum::Json(body)).into_response()
    }
}

/// Runs blocking store work off the async threads; a panic in it is an internal error.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Refusal> + Send + 'static,
) -> Result<T, Refusal> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(Refusal::internal("a store task failed", &e)),
    }
}
