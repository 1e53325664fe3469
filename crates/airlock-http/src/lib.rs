//! `airlock-http`: the Streamable HTTP gateway `airlock serve` runs at `/mcp`.
//!
//! Many agents, each with its own token, reach remote MCP servers (and servers Airlock starts
//! over stdio) through one gateway. Each agent session has one link per upstream, and each link
//! drives the same call pipeline as `airlock run` ([`airlock_pipeline`]): policy, approvals,
//! kills, breakers, flow labels and the audit trail are not re-implemented here. This crate is
//! the transport: HTTP in (`endpoint`), sessions and routing (`session`), links (`link`), the
//! upstream client (`upstream_http`), the aggregated endpoint (`aggregate`), event streams
//! (`sse`) and the tasks that keep every link current (`background`).

mod aggregate;
mod background;
mod endpoint;
mod era;
mod link;
mod ops;
mod session;
pub mod sse;
mod upstream_http;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use airlock_audit::{AuditWriter, Durability};
use airlock_config::Config;
use airlock_control::Kill;
use airlock_gateway::{Identity, PolicyHandle, Upstream, UpstreamSandbox};
use airlock_pipeline::{ControlParts, Counters, Options, Pipeline, PipelineParts, Stores};
use airlock_protocol::Id;
use serde_json::Value;

pub use aggregate::{split_name, SEPARATOR};

/// `/mcp`, `/mcp/<server>`, `/healthz`, `/readyz` and `/metrics` over the gateway.
pub fn routes(gw: Arc<McpGateway>) -> axum::Router {
    endpoint::routes(gw.clone()).merge(ops::routes(gw))
}

use crate::link::{Conn, Link, StdioConn};
use crate::session::Session;
use crate::upstream_http::HttpUpstream;

/// Who is calling: the agent a token names, and for whom and on what it acts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub agent: String,
    pub on_behalf_of: String,
    pub task: String,
}

/// Checks agent credentials. Implementations hold digests, never tokens.
pub trait Authenticate: Send + Sync + 'static {
    /// The agent a bearer token belongs to; the error is a sentence that names no secret.
    fn authenticate(&self, bearer: &str) -> Result<Principal, String>;
    /// Whether the agent may still act (false once revoked).
    fn still_valid(&self, principal: &Principal) -> bool;
    /// Re-reads revocations and new agents (called when the store announces a change).
    fn reload(&self) {}
}

/// What the gateway is built from.
pub struct GatewayParts {
    pub config: Arc<Config>,
    pub policy: PolicyHandle,
    pub audit: Arc<AuditWriter>,
    pub durability: Durability,
    pub auth: Arc<dyn Authenticate>,
    /// Upstream credentials: injected into requests (headers, a stdio server's environment)
    /// and redacted from everything the agent receives.
    pub broker: Arc<airlock_broker::Broker>,
    /// The names the gateway answers to (`Host`), lowercase `host:port`.
    pub hosts: Vec<String>,
    /// The browser origins allowed to call `/mcp` (none by default: agents are no browsers).
    pub origins: Vec<String>,
}

/// Limits of the HTTP gateway.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Most open sessions; a new one beyond it gets 503.
    pub max_sessions: usize,
    /// A session unused this long ends.
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_sessions: 10_000,
            idle_timeout: Duration::from_secs(30 * 60),
        }
    }
}

/// What links share: the breaker counter stores (one per thread that counts at a time).
pub(crate) struct Shared {
    counters: Mutex<Vec<Counters>>,
    db: PathBuf,
    durability: Durability,
}

impl Shared {
    pub(crate) fn take_counters(&self) -> Counters {
        lock(&self.counters)
            .pop()
            .unwrap_or_else(|| Counters::new(&self.db, self.durability))
    }

    pub(crate) fn return_counters(&self, c: Counters) {
        let mut pool = lock(&self.counters);
        if pool.len() < 8 {
            pool.push(c);
        }
    }
}

/// The gateway: sessions, their links, and what they share.
pub struct McpGateway {
    parts: GatewayParts,
    limits: Limits,
    stores: Stores,
    shared: Arc<Shared>,
    client: reqwest::Client,
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    /// The kills in force, as last read: a new link starts with them.
    kills: Mutex<Arc<Vec<Kill>>>,
    /// Where each resource URI listed on an aggregated session lives: (session, uri) → server.
    resources: Mutex<HashMap<(String, String), String>>,
    draining: AtomicBool,
    requests: std::sync::atomic::AtomicU64,
    /// Open links per upstream, for `[servers.X] max_sessions`.
    links_open: Mutex<HashMap<String, usize>>,
    /// The era each remote upstream speaks, once asked.
    eras: Mutex<HashMap<String, (era::Era, Option<Value>)>>,
    /// Woken when held calls may have news (a store notification).
    pub(crate) held_changed: tokio::sync::Notify,
    pub(crate) metrics: ops::Metrics,
}

/// One message of a POST body, one line, checked to be JSON.
pub(crate) struct Message {
    pub(crate) raw: Vec<u8>,
    pub(crate) value: Value,
    pub(crate) id: Option<Id>,
    pub(crate) method: Option<String>,
}

impl Message {
    pub(crate) fn progress_token(&self) -> Option<&Value> {
        self.value.pointer("/params/_meta/progressToken")
    }
}

impl McpGateway {
    /// Opens the stores and starts the gateway's background tasks (on the current runtime).
    pub fn start(parts: GatewayParts, limits: Limits) -> Result<Arc<McpGateway>, String> {
        let db = parts.config.audit.path.clone();
        let stores = Stores::start(&db, parts.durability)?;
        // reqwest is built without a TLS provider of its own: rustls on ring, as ureq uses.
        airlock_broker::install_crypto_provider();
        let client = reqwest::Client::builder()
            .connect_timeout(upstream_http::CONNECT_TIMEOUT)
            .pool_idle_timeout(Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let gw = Arc::new(McpGateway {
            shared: Arc::new(Shared {
                counters: Mutex::new(Vec::new()),
                db,
                durability: parts.durability,
            }),
            parts,
            limits,
            stores,
            client,
            sessions: Mutex::new(HashMap::new()),
            kills: Mutex::new(Arc::new(Vec::new())),
            resources: Mutex::new(HashMap::new()),
            draining: AtomicBool::new(false),
            requests: std::sync::atomic::AtomicU64::new(1),
            eras: Mutex::new(HashMap::new()),
            links_open: Mutex::new(HashMap::new()),
            held_changed: tokio::sync::Notify::new(),
            metrics: ops::Metrics::default(),
        });
        background::spawn(&gw)?;
        Ok(gw)
    }

    /// The upstreams `/mcp` aggregates: servers with a `url` or a `command`.
    pub(crate) fn upstream_names(&self) -> Vec<String> {
        self.parts
            .config
            .servers
            .iter()
            .filter(|(_, s)| s.url.is_some() || s.command.is_some())
            .map(|(n, _)| n.clone())
            .collect()
    }

    pub(crate) fn is_upstream(&self, server: &str) -> bool {
        self.parts
            .config
            .servers
            .get(server)
            .is_some_and(|s| s.url.is_some() || s.command.is_some())
    }

    pub(crate) fn session(&self, id: &str) -> Option<Arc<Session>> {
        lock(&self.sessions).get(id).cloned()
    }

    pub(crate) fn sessions(&self) -> Vec<Arc<Session>> {
        lock(&self.sessions).values().cloned().collect()
    }

    /// A new session, unless the gateway is full or draining.
    pub(crate) fn new_session(
        &self,
        principal: Principal,
        scope: session::Scope,
    ) -> Option<Arc<Session>> {
        if self.draining.load(Ordering::SeqCst) {
            return None;
        }
        let mut sessions = lock(&self.sessions);
        if sessions.len() >= self.limits.max_sessions {
            return None;
        }
        let s = Arc::new(Session::new(new_session_id(), principal, scope, false));
        sessions.insert(s.id.clone(), s.clone());
        Some(s)
    }

    /// The session Airlock keeps for a 2026-07-28 agent on `server` (the agent has none): one
    /// per agent and upstream, so a legacy upstream is initialized once, not per request.
    pub(crate) fn modern_session(
        &self,
        principal: Principal,
        server: &str,
    ) -> Option<Arc<Session>> {
        if self.draining.load(Ordering::SeqCst) {
            return None;
        }
        let key = format!("2026:{}:{server}", principal.agent);
        let mut sessions = lock(&self.sessions);
        if let Some(s) = sessions.get(&key) {
            if s.principal == principal && !s.is_ended() {
                return Some(s.clone());
            }
        }
        if sessions.len() >= self.limits.max_sessions {
            return None;
        }
        let scope = session::Scope::One(server.to_string());
        let s = Arc::new(Session::new(key.clone(), principal, scope, true));
        sessions.insert(key, s.clone());
        Some(s)
    }

    /// Which era `server` speaks, and what it declared: asked once with `server/discover`.
    async fn era_of(&self, server: &str, http: &HttpUpstream) -> (era::Era, Option<Value>) {
        if let Some(known) = lock(&self.eras).get(server) {
            return known.clone();
        }
        let probe = era::discover_request();
        let headers = era::headers_for(&probe);
        let answer = match http.post(probe, &headers).await {
            Ok(upstream_http::Reply::One(body)) => Some(body),
            Ok(upstream_http::Reply::Stream(mut s)) => match s.next().await {
                Ok(Some(events)) => events
                    .into_iter()
                    .find(|e| e.is_message() && !e.data.is_empty())
                    .map(|e| e.data),
                _ => None,
            },
            _ => None,
        };
        let result = answer
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .and_then(|v| v.get("result").cloned())
            .filter(|r| {
                r.get("supportedVersions")
                    .and_then(Value::as_array)
                    .is_some_and(|v| v.iter().any(|x| x == era::MODERN))
            });
        let known = match result {
            Some(r) => (era::Era::Modern, Some(r)),
            None => (era::Era::Legacy, None),
        };
        lock(&self.eras).insert(server.to_string(), known.clone());
        known
    }

    /// Ends a session: every link closes, its upstream sessions end.
    pub(crate) async fn end_session(&self, session: &Arc<Session>, why: &str) {
        lock(&self.sessions).remove(&session.id);
        if !self.parts.auth.still_valid(&session.principal) {
            // A revoked agent's exchanged upstream tokens go with it.
            self.parts.broker.revoke_agent(&session.principal.agent);
        }
        lock(&self.resources).retain(|(s, _), _| *s != session.id);
        for link in session.end() {
            link.close(why).await;
        }
    }

    pub(crate) fn note_resource(&self, session: &Session, uri: &str, server: &str) {
        let mut map = lock(&self.resources);
        // Bounded: a server listing millions of resources cannot grow the map without end.
        if map.len() < 100_000 {
            map.insert((session.id.clone(), uri.to_string()), server.to_string());
        }
    }

    pub(crate) fn resource_owner(&self, session: &Session, uri: &str) -> Option<String> {
        lock(&self.resources)
            .get(&(session.id.clone(), uri.to_string()))
            .cloned()
    }

    /// The link of `session` to `server`, opened now if it has none.
    pub(crate) async fn open_link(
        self: &Arc<Self>,
        session: &Arc<Session>,
        server: &str,
    ) -> Result<Arc<Link>, OpenError> {
        if let Some(link) = session.link(server) {
            return Ok(link);
        }
        let config = &self.parts.config;
        let Some(settings) = config.servers.get(server) else {
            return Err(format!("no server \"{server}\" in the config").into());
        };
        let slot = LinkSlot::take(self, server, settings.max_sessions)?;
        let identity = Identity {
            agent: session.principal.agent.clone(),
            on_behalf_of: session.principal.on_behalf_of.clone(),
            task: session.principal.task.clone(),
            session: session.id.clone(),
            server: server.to_string(),
        };
        let (agent, sid) = (identity.agent.clone(), identity.session.clone());
        let labels = self
            .stores
            .run(move |s| s.labels.labels(&agent, &sid))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("cannot read the information-flow labels: {e}"))?;
        let pipeline = Arc::new(Pipeline::new(PipelineParts {
            options: Options {
                identity: identity.clone(),
                max_frame_bytes: config.gateway.max_frame_bytes,
                call_timeout: settings.timeout.unwrap_or(config.gateway.call_timeout),
                // Always set: tokens obtained by an exchange join it while the link runs.
                redactor: Some(self.parts.broker.redactor().clone()),
            },
            policy: self.parts.policy.clone(),
            audit: self.parts.audit.clone(),
            control: Some(ControlParts {
                db: config.audit.path.clone(),
                stores: self.stores.clone(),
                labels,
            }),
        }));
        let kills = lock(&self.kills).as_ref().clone();
        // A session of a stopped agent starts stopped: every call is refused.
        let _ = pipeline.set_kills(kills);
        let max = config.gateway.max_frame_bytes;
        let mut era = era::Era::Legacy;
        let mut declared = None;
        let (conn, stdio) = if let Some(url) = &settings.url {
            let url = reqwest::Url::parse(url).map_err(|e| format!("bad url for {server}: {e}"))?;
            let credentials = upstream_http::Credentials {
                broker: self.parts.broker.clone(),
                server: server.to_string(),
                human: session.principal.on_behalf_of.clone(),
                agent: session.principal.agent.clone(),
            };
            let http = HttpUpstream::new(self.client.clone(), url, credentials, max);
            (era, declared) = self.era_of(server, &http).await;
            if era == era::Era::Modern {
                http.set_version(era::MODERN);
            }
            (Conn::Http(Box::new(http)), None)
        } else if let Some(command) = &settings.command {
            let sandbox = self.sandbox_for(server, &identity)?;
            let command = command.clone();
            let env = self.parts.broker.env_for(server);
            let upstream = tokio::task::spawn_blocking(move || {
                Upstream::spawn_with_env(&command, sandbox, &env)
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("cannot start {server}: {e}"))?;
            let parts = upstream.into_parts();
            (
                Conn::Stdio(Box::new(StdioConn {
                    stdin: tokio::sync::Mutex::new(Some(parts.stdin)),
                    process: Mutex::new(Some(parts.process)),
                })),
                Some((parts.stdout, parts.stderr)),
            )
        } else {
            return Err(format!("server \"{server}\" has neither url nor command").into());
        };
        let link = Link::new(
            link::LinkParts {
                server: server.to_string(),
                pipeline: pipeline.clone(),
                conn,
                era,
                declared,
                shared: self.shared.clone(),
                slot,
            },
            session,
        );
        let Some(link) = session.add_link(link.clone()) else {
            link.close("the session ended").await;
            return Err(OpenError::Failed("the session ended".into()));
        };
        if let Some((stdout, stderr)) = stdio {
            link.add_task(tokio::spawn(link::read_stdio(
                Arc::downgrade(&link),
                stdout,
                max,
            )));
            let redactor = self.parts.broker.redactor().clone();
            link.add_task(tokio::spawn(link::log_stderr(
                server.to_string(),
                stderr,
                redactor,
            )));
        }
        link.add_task(tokio::spawn(background::flush_queued(pipeline)));
        Ok(link)
    }

    fn sandbox_for(&self, server: &str, identity: &Identity) -> Result<UpstreamSandbox, String> {
        let config = &self.parts.config;
        let off = config
            .servers
            .get(server)
            .is_some_and(|s| s.sandbox == airlock_config::ServerSandbox::Off);
        match config.sandbox_for_server(server) {
            Some((name, settings)) => Ok(UpstreamSandbox::Profile {
                profile: Box::new(airlock_sandbox::Profile::from_config(name, settings)),
                audit: self.parts.audit.clone(),
                identity: identity.clone(),
            }),
            None if off => Ok(UpstreamSandbox::Off {
                env: config
                    .servers
                    .get(server)
                    .map(|s| s.env.clone())
                    .unwrap_or_default(),
            }),
            None => Err(format!("no sandbox profile for server `{server}`")),
        }
    }

    /// Stops taking new sessions and ends the open ones once their calls are answered (or
    /// `grace` has passed).
    pub async fn drain(&self, grace: Duration) {
        self.draining.store(true, Ordering::SeqCst);
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let busy = self
                .sessions()
                .iter()
                .flat_map(|s| s.links())
                .any(|l| l.pipeline.calls_known() > 0);
            if !busy || tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for s in self.sessions() {
            self.end_session(&s, "the gateway is shutting down").await;
        }
    }

    /// A fresh number for an id of Airlock's own.
    pub(crate) fn next_request(&self) -> u64 {
        self.requests.fetch_add(1, Ordering::Relaxed)
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}

/// Why a link could not be opened.
#[derive(Debug)]
pub(crate) enum OpenError {
    /// The upstream has all the sessions its `max_sessions` allows.
    Full(String),
    /// It could not be reached or started.
    Failed(String),
}

impl From<String> for OpenError {
    fn from(s: String) -> Self {
        OpenError::Failed(s)
    }
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::Full(s) | OpenError::Failed(s) => f.write_str(s),
        }
    }
}

/// One of an upstream's `max_sessions` places, given back when its link is dropped.
pub(crate) struct LinkSlot {
    gw: std::sync::Weak<McpGateway>,
    server: String,
}

impl LinkSlot {
    fn take(gw: &Arc<McpGateway>, server: &str, max: Option<usize>) -> Result<LinkSlot, OpenError> {
        let mut open = lock(&gw.links_open);
        let n = open.entry(server.to_string()).or_insert(0);
        if max.is_some_and(|max| *n >= max) {
            return Err(OpenError::Full(format!(
                "server \"{server}\" has as many sessions as its max_sessions allows"
            )));
        }
        *n += 1;
        Ok(LinkSlot {
            gw: Arc::downgrade(gw),
            server: server.to_string(),
        })
    }
}

impl Drop for LinkSlot {
    fn drop(&mut self) {
        if let Some(gw) = self.gw.upgrade() {
            if let Some(n) = lock(&gw.links_open).get_mut(&self.server) {
                *n = n.saturating_sub(1);
            }
        }
    }
}

/// Locks `m`; a poisoned lock's data is plain and still usable.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// 128 random bits, hex: unguessable, and visible ASCII as the spec asks.
fn new_session_id() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // No randomness: a clock-and-counter id is still unique, though guessable; the
        // session is bound to the agent's token anyway.
        let n = airlock_audit::now_unix_ns();
        bytes[..8].copy_from_slice(&n.to_le_bytes());
    }
    hex::encode(bytes)
}

/// What kind of JSON-RPC message a frame is (`None`: not one). The frame was bounded where it
/// was read, so no second limit applies here.
pub(crate) fn kind_of(frame: &[u8]) -> Option<airlock_protocol::FrameKind> {
    let unbounded = airlock_protocol::Limits {
        max_frame_bytes: usize::MAX,
    };
    airlock_protocol::parse_outline(frame, &unbounded)
        .ok()
        .map(|o| o.kind().clone())
}

/// A JSON text on one line: raw line breaks in JSON are whitespace (strings cannot hold
/// them), so they become spaces, and frames stay one line for the pipeline and stdio.
pub(crate) fn one_line(mut frame: Vec<u8>) -> Vec<u8> {
    for b in frame.iter_mut() {
        if *b == b'\n' || *b == b'\r' {
            *b = b' ';
        }
    }
    frame
}
