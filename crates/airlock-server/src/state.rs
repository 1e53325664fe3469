//! What every handler shares: the config and policies, the stores, the logins, the wake-up
//! channel, and the hosts and origins this server answers for.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use airlock_audit::AuditStore;
use airlock_config::Config;
use airlock_control::ControlStore;
use airlock_policy::PolicyEngine;
use tokio::sync::{broadcast, watch};

use crate::auth::{LoginLimiter, Sessions};
use crate::error::ServerError;

/// What `airlock serve` starts with.
pub struct Options {
    /// The validated config.
    pub config: Arc<Config>,
    /// Its policies (who may approve what).
    pub policy: Arc<PolicyEngine>,
    /// Where to listen (the config's `[serve] listen` or `--listen`).
    pub listen: SocketAddr,
    /// The webhook's HMAC secret, read from the environment variable the config names;
    /// `Some` iff `[serve.webhook]` is configured.
    pub webhook_secret: Option<Vec<u8>>,
    /// More routes served beside the control plane (the MCP gateway), built once the server
    /// knows its names. They do their own checks: the page's guards and body limit are not
    /// theirs.
    pub mount: Option<Mount>,
}

/// Builds extra routes from the names (`Host` values) the server answers to and its own
/// origins (the page's).
pub type Mount = Box<dyn FnOnce(Vec<String>, Vec<String>) -> Result<Mounted, String> + Send>;

/// Routes, and what to do before the server stops (drain what they have in flight).
pub struct Mounted {
    pub router: axum::Router,
    pub on_shutdown: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
}

/// The webhook's settings, resolved.
#[derive(Clone)]
pub(crate) struct Webhook {
    pub(crate) url: String,
    pub(crate) secret: Arc<Vec<u8>>,
    pub(crate) timeout: std::time::Duration,
}

/// Shared by every request.
pub struct AppState {
    pub(crate) config: Arc<Config>,
    pub(crate) policy: Arc<PolicyEngine>,
    /// Kill state; one connection, used from blocking tasks.
    pub(crate) control: Mutex<ControlStore>,
    /// Read side of the audit chain (recent calls of a session).
    pub(crate) audit: Mutex<AuditStore>,
    pub(crate) sessions: Mutex<Sessions>,
    pub(crate) limiter: Mutex<LoginLimiter>,
    /// Bumped on every store notification; open pages listen.
    pub(crate) changes: broadcast::Sender<u64>,
    /// Set once on shutdown, so long-lived event streams end and the server can stop.
    pub(crate) stopping: watch::Sender<bool>,
    /// Base URL for links (`public_url`, else `http://<bound address>`), no trailing `/`.
    pub(crate) base_url: String,
    /// `Host` values this server answers (lowercase `host[:port]`).
    pub(crate) hosts: BTreeSet<String>,
    /// `Origin` values a state-changing request may come from.
    pub(crate) origins: BTreeSet<String>,
    /// Session cookies get `Secure` (and the `__Host-` name) behind https.
    pub(crate) secure_cookies: bool,
    pub(crate) webhook: Option<Webhook>,
    /// Wakes the webhook follower (`Some` iff a webhook is configured).
    pub(crate) webhook_wake: Option<Arc<tokio::sync::Notify>>,
}

impl AppState {
    /// Opens the stores and works out hosts and origins for the server bound at `bound`.
    pub fn new(options: Options, bound: SocketAddr) -> Result<AppState, ServerError> {
        let config = options.config;
        let db = &config.audit.path;
        let durability = airlock_control::durability(&config);
        // Opening for writing creates the audit schema if nobody has yet.
        let audit = AuditStore::open(db, durability).map_err(|source| ServerError::Audit {
            path: db.clone(),
            source,
        })?;
        let control =
            ControlStore::open_with(db, durability).map_err(|source| ServerError::Control {
                path: db.clone(),
                source,
            })?;
        let base_url = config.serve.base_url(bound);
        let (hosts, origins) = hosts_and_origins(bound, config.serve.public_url.as_deref());
        let webhook = match (&config.serve.webhook, options.webhook_secret) {
            (Some(w), Some(secret)) => Some(Webhook {
                url: w.url.clone(),
                secret: Arc::new(secret),
                timeout: w.timeout,
            }),
            (Some(w), None) => return Err(ServerError::NoWebhookSecret(w.secret_env.clone())),
            (None, _) => None,
        };
        let secure_cookies = base_url.starts_with("https://");
        Ok(AppState {
            sessions: Mutex::new(Sessions::new(config.serve.session_ttl)),
            limiter: Mutex::new(LoginLimiter::default()),
            config,
            policy: options.policy,
            control: Mutex::new(control),
            audit: Mutex::new(audit),
            changes: broadcast::channel(16).0,
            stopping: watch::channel(false).0,
            base_url,
            hosts,
            origins,
            secure_cookies,
            webhook_wake: webhook
                .as_ref()
                .map(|_| Arc::new(tokio::sync::Notify::new())),
            webhook,
        })
    }

    /// Ends every event stream (before a graceful shutdown waits for connections).
    pub fn stop(&self) {
        self.stopping.send_replace(true);
    }
}

/// Locks a mutex whose holder may have panicked: the data is a store handle or a table of
/// logins, both still usable (a store's transaction rolled back with the panic).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `Host` and `Origin` values for a server bound at `bound` and reached at `public_url`:
/// the bound address, its loopback names, and the public URL's authority.
fn hosts_and_origins(
    bound: SocketAddr,
    public_url: Option<&str>,
) -> (BTreeSet<String>, BTreeSet<String>) {
    let port = bound.port();
    let mut hosts = BTreeSet::new();
    if bound.ip().is_loopback() {
        hosts.extend([
            format!("127.0.0.1:{port}"),
            format!("localhost:{port}"),
            format!("[::1]:{port}"),
        ]);
    }
    if !bound.ip().is_unspecified() {
        hosts.insert(bound.to_string());
    }
    let mut origins: BTreeSet<String> = hosts.iter().map(|h| format!("http://{h}")).collect();
    if let Some(url) = public_url.and_then(|u| url::Url::parse(u).ok()) {
        if let Some(host) = url.host_str() {
            let host = host.to_ascii_lowercase();
            match url.port() {
                Some(p) => {
                    hosts.insert(format!("{host}:{p}"));
                }
                None => {
                    // The default port may or may not be spelt out.
                    hosts.insert(host.clone());
                    if let Some(p) = url.port_or_known_default() {
                        hosts.insert(format!("{host}:{p}"));
                    }
                }
            }
            origins.insert(url.origin().ascii_serialization());
        }
    }
    (hosts, origins)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn loopback_names_and_the_public_url_are_accepted() {
        let (hosts, origins) = hosts_and_origins(
            "127.0.0.1:7700".parse().unwrap(),
            Some("https://Airlock.example"),
        );
        let hosts: Vec<&str> = hosts.iter().map(String::as_str).collect();
        assert_eq!(
            hosts,
            [
                "127.0.0.1:7700",
                "[::1]:7700",
                "airlock.example",
                "airlock.example:443",
                "localhost:7700"
            ]
        );
        assert!(origins.contains("https://airlock.example"));
        assert!(origins.contains("http://localhost:7700"));
        assert!(!origins.contains("http://airlock.example"));
    }

    #[test]
    fn an_unspecified_bind_answers_only_its_public_name() {
        let (hosts, _) = hosts_and_origins(
            "0.0.0.0:80".parse().unwrap(),
            Some("http://ops.internal:8080"),
        );
        assert_eq!(hosts.into_iter().collect::<Vec<_>>(), ["ops.internal:8080"]);
    }
}
