//! One agent's MCP session over HTTP, and where each message for the agent goes.
//!
//! A session belongs to the agent whose token opened it: a request carrying its id with
//! another agent's token is answered 404, exactly as an unknown id is. It holds one link per
//! upstream it has used (each with its own pipeline), and the routes of messages for the agent:
//! - a response goes to the POST that carried its request (by id);
//! - a progress notification goes where its request's answer goes (by progress token);
//! - anything else the upstream sends while answering a POST goes on that POST's stream, and
//!   the rest on the session's GET stream, if one is open.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use airlock_protocol::{FrameKind, Id};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::link::Link;
use crate::{lock, now_secs, Principal};

/// How many messages may wait for a slow reader of one stream before the sender waits.
pub(crate) const STREAM_BUFFER: usize = 64;
/// Events a session keeps for an agent that reconnects (`Last-Event-ID`): at most this many,
/// and at most `REPLAY_BYTES` of them.
const REPLAY_EVENTS: usize = 256;
const REPLAY_BYTES: usize = 4 * 1024 * 1024;

/// The events a session sent (or could not send) on its streams, for resumption: an agent whose
/// stream broke reconnects with `GET` and `Last-Event-ID: <stream>-<seq>` and gets what followed
/// on that stream, then the rest of it as it comes.
#[derive(Default)]
struct Replay {
    events: VecDeque<Stored>,
    bytes: usize,
    next_stream: u64,
    next_seq: u64,
    /// Streams an agent resumed: what would have gone on them goes here now.
    resumed: HashMap<u64, Outbox>,
}

struct Stored {
    stream: u64,
    seq: u64,
    data: Vec<u8>,
}

impl Replay {
    fn keep(&mut self, stream: u64, data: &[u8]) -> String {
        self.next_seq += 1;
        let seq = self.next_seq;
        self.bytes += data.len();
        self.events.push_back(Stored {
            stream,
            seq,
            data: data.to_vec(),
        });
        while self.events.len() > REPLAY_EVENTS || self.bytes > REPLAY_BYTES {
            match self.events.pop_front() {
                Some(old) => self.bytes -= old.data.len(),
                None => break,
            }
        }
        format!("{stream}-{seq}")
    }
}

/// `<stream>-<seq>`, as Airlock numbers events.
fn parse_event_id(id: &str) -> Option<(u64, u64)> {
    let (stream, seq) = id.split_once('-')?;
    Some((stream.parse().ok()?, seq.parse().ok()?))
}

/// Which upstreams a session reaches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Scope {
    /// `/mcp/<server>`: one upstream, names unchanged.
    One(String),
    /// `/mcp`: every upstream, names namespaced `<server>__<name>`.
    All,
}

/// A message for the agent.
#[derive(Debug)]
pub(crate) struct Delivery {
    pub(crate) bytes: Vec<u8>,
    /// The request this message answers, if it is a response.
    pub(crate) answers: Option<Id>,
    /// The upstream it came from (empty: Airlock itself).
    pub(crate) from: String,
}

/// Where the messages of one POST (or the GET stream) go.
pub(crate) type Outbox = mpsc::Sender<Delivery>;

/// A request of the agent that waits for its answer.
struct Waiter {
    outbox: Outbox,
    progress: Option<ProgressKey>,
}

fn is_request(frame: &[u8]) -> bool {
    matches!(crate::kind_of(frame), Some(FrameKind::Request { .. }))
}

/// A progress token as its JSON text (tokens are strings or integers).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct ProgressKey(String);

impl ProgressKey {
    fn of(token: &Value) -> Option<ProgressKey> {
        match token {
            Value::String(_) | Value::Number(_) => Some(ProgressKey(token.to_string())),
            _ => None,
        }
    }
}

#[derive(Default)]
struct Routes {
    /// Requests waiting for an answer: (upstream, id) → where it goes.
    waiting: HashMap<(String, Id), Waiter>,
    progress: HashMap<ProgressKey, Outbox>,
    /// The session's GET stream.
    listen: Option<Outbox>,
}

/// One agent session.
pub(crate) struct Session {
    pub(crate) id: String,
    pub(crate) principal: Principal,
    pub(crate) scope: Scope,
    /// A 2026-07-28 agent: no session of its own (this one is Airlock's, per agent and
    /// upstream), results carry `resultType`, and no request can be sent to it.
    pub(crate) modern: bool,
    /// The protocol version agreed with the agent.
    pub(crate) version: Mutex<Option<String>>,
    /// The agent's `initialize` params: upstreams reached later are initialized with them.
    pub(crate) init_params: Mutex<Option<Value>>,
    links: Mutex<HashMap<String, Arc<Link>>>,
    routes: Mutex<Routes>,
    replay: Mutex<Replay>,
    last_active: AtomicU64,
    ended: AtomicBool,
    /// Woken when the session ends, so open streams close.
    pub(crate) end_signal: tokio::sync::Notify,
}

impl Session {
    pub(crate) fn new(id: String, principal: Principal, scope: Scope, modern: bool) -> Session {
        Session {
            id,
            principal,
            scope,
            modern,
            version: Mutex::new(None),
            init_params: Mutex::new(None),
            links: Mutex::new(HashMap::new()),
            routes: Mutex::new(Routes::default()),
            replay: Mutex::new(Replay::default()),
            last_active: AtomicU64::new(now_secs()),
            ended: AtomicBool::new(false),
            end_signal: tokio::sync::Notify::new(),
        }
    }

    pub(crate) fn touch(&self) {
        self.last_active.store(now_secs(), Ordering::Relaxed);
    }

    pub(crate) fn idle_secs(&self) -> u64 {
        now_secs().saturating_sub(self.last_active.load(Ordering::Relaxed))
    }

    pub(crate) fn is_ended(&self) -> bool {
        self.ended.load(Ordering::SeqCst)
    }

    /// Marks the session ended and hands back its links (for the caller to close).
    pub(crate) fn end(&self) -> Vec<Arc<Link>> {
        self.ended.store(true, Ordering::SeqCst);
        let links: Vec<Arc<Link>> = lock(&self.links).drain().map(|(_, l)| l).collect();
        *lock(&self.routes) = Routes::default();
        self.end_signal.notify_waiters();
        links
    }

    pub(crate) fn link(&self, server: &str) -> Option<Arc<Link>> {
        lock(&self.links).get(server).cloned()
    }

    pub(crate) fn links(&self) -> Vec<Arc<Link>> {
        lock(&self.links).values().cloned().collect()
    }

    /// Adds a link unless the session ended or one exists; returns the link in force.
    pub(crate) fn add_link(&self, link: Arc<Link>) -> Option<Arc<Link>> {
        if self.is_ended() {
            return None;
        }
        Some(
            lock(&self.links)
                .entry(link.server().to_string())
                .or_insert(link)
                .clone(),
        )
    }

    /// Sends the answer to `id` (asked of `server`) and the messages about it to `outbox`.
    pub(crate) fn expect(&self, server: &str, id: Id, progress: Option<&Value>, outbox: Outbox) {
        let progress = progress.and_then(ProgressKey::of);
        let mut routes = lock(&self.routes);
        if let Some(p) = &progress {
            routes.progress.insert(p.clone(), outbox.clone());
        }
        routes
            .waiting
            .insert((server.to_string(), id), Waiter { outbox, progress });
    }

    /// Forgets a request nobody will answer through this session any more.
    pub(crate) fn forget(&self, server: &str, id: &Id) {
        let mut routes = lock(&self.routes);
        if let Some(w) = routes.waiting.remove(&(server.to_string(), id.clone())) {
            if let Some(p) = w.progress {
                routes.progress.remove(&p);
            }
        }
    }

    /// A new event stream's number.
    pub(crate) fn open_stream(&self) -> u64 {
        let mut r = lock(&self.replay);
        r.next_stream += 1;
        r.next_stream
    }

    /// Keeps an event sent on `stream` for a reconnecting agent; returns its id.
    pub(crate) fn record(&self, stream: u64, data: &[u8]) -> String {
        lock(&self.replay).keep(stream, data)
    }

    /// A message for a stream the agent dropped: to the stream that resumed it, if one has,
    /// else kept until one does.
    pub(crate) async fn stash(&self, stream: u64, d: Delivery) {
        let resumed = lock(&self.replay).resumed.get(&stream).cloned();
        let d = match resumed {
            Some(outbox) => match outbox.send(d).await {
                Ok(()) => return,
                Err(back) => back.0,
            },
            None => d,
        };
        lock(&self.replay).keep(stream, &d.bytes);
    }

    /// Resumes the stream `last_event` was sent on, onto `outbox`: the events after it, in
    /// order; later ones follow as they come. `None`: not an event id of this session's.
    pub(crate) fn resume(
        &self,
        last_event: &str,
        outbox: Outbox,
    ) -> Option<Vec<(String, Vec<u8>)>> {
        let (stream, after) = parse_event_id(last_event)?;
        let mut r = lock(&self.replay);
        if stream == 0 || stream > r.next_stream {
            return None;
        }
        let events = r
            .events
            .iter()
            .filter(|e| e.stream == stream && e.seq > after)
            .map(|e| (format!("{}-{}", e.stream, e.seq), e.data.clone()))
            .collect();
        r.resumed.insert(stream, outbox);
        Some(events)
    }

    /// Sends what still goes to `dead` (a stream the agent dropped) to `to` instead.
    pub(crate) fn redirect(&self, dead: &Outbox, to: &Outbox) {
        let mut routes = lock(&self.routes);
        for w in routes.waiting.values_mut() {
            if w.outbox.same_channel(dead) {
                w.outbox = to.clone();
            }
        }
        for o in routes.progress.values_mut() {
            if o.same_channel(dead) {
                *o = to.clone();
            }
        }
    }

    /// Opens (or replaces) the session's GET stream.
    pub(crate) fn listen(&self, outbox: Outbox) {
        lock(&self.routes).listen = Some(outbox);
    }

    /// Where the answer to the request `id` of `server` goes, if anyone waits for it.
    pub(crate) fn outbox_of(&self, server: &str, id: &Id) -> Option<Outbox> {
        lock(&self.routes)
            .waiting
            .get(&(server.to_string(), id.clone()))
            .map(|w| w.outbox.clone())
    }

    /// Delivers what the pipeline of `server` wrote for the agent: whole frames, each ending
    /// in `\n`. `origin`: the request whose upstream stream carried them.
    pub(crate) async fn deliver(&self, server: &str, bytes: &[u8], origin: Option<&Id>) {
        for line in bytes.split_inclusive(|b| *b == b'\n') {
            let frame = line.strip_suffix(b"\n").unwrap_or(line);
            if frame.is_empty() {
                continue;
            }
            if self.modern && is_request(frame) {
                // A 2026-07-28 agent takes no requests: the upstream gets a refusal at once.
                self.refuse_server_request(server, frame).await;
                continue;
            }
            let (outbox, answers) = self.route(server, frame, origin);
            let Some(outbox) = outbox else {
                tracing::debug!(session = %self.id, server, "a message for the agent had no open stream; dropped");
                continue;
            };
            let bytes = match (&self.scope, self.modern) {
                (_, true) => crate::era::to_modern(frame),
                (Scope::All, false) => crate::aggregate::outgoing(server, frame),
                (Scope::One(_), false) => frame.to_vec(),
            };
            // A 2026 upstream asking a 2025 agent for input (MRTR) would be an answer the agent
            // cannot read: it gets an error that says so instead.
            let bytes = if self.modern {
                bytes
            } else {
                crate::era::input_required_to_error(&bytes).unwrap_or(bytes)
            };
            // A reader that went away is no error: legacy MCP says a dropped stream is not a
            // cancellation, and the call's result is on the audit trail either way.
            let _ = outbox
                .send(Delivery {
                    bytes,
                    answers,
                    from: server.to_string(),
                })
                .await;
        }
    }

    async fn refuse_server_request(&self, server: &str, frame: &[u8]) {
        let Some(link) = self.link(server) else {
            return;
        };
        let id = serde_json::from_slice::<Value>(frame)
            .ok()
            .and_then(|v| v.get("id").and_then(Id::from_json));
        let Some(id) = id else { return };
        let answer = airlock_protocol::error_response(
            Some(&id),
            airlock_protocol::METHOD_NOT_FOUND,
            "the agent speaks MCP 2026-07-28, which takes no requests from a server",
            None,
        );
        Box::pin(link.from_agent(vec![airlock_pipeline::Line::Frame(answer)])).await;
    }

    fn route(
        &self,
        server: &str,
        frame: &[u8],
        origin: Option<&Id>,
    ) -> (Option<Outbox>, Option<Id>) {
        let kind = crate::kind_of(frame);
        let mut routes = lock(&self.routes);
        match kind {
            Some(FrameKind::Response { id }) | Some(FrameKind::ErrorResponse { id: Some(id) }) => {
                let waiter = routes.waiting.remove(&(server.to_string(), id.clone()));
                match waiter {
                    Some(w) => {
                        if let Some(p) = w.progress {
                            routes.progress.remove(&p);
                        }
                        (Some(w.outbox), Some(id))
                    }
                    None => (None, None),
                }
            }
            Some(FrameKind::Notification { method }) if method == "notifications/progress" => {
                let token = serde_json::from_slice::<Value>(frame)
                    .ok()
                    .and_then(|v| v.pointer("/params/progressToken").and_then(ProgressKey::of));
                let by_token = token.and_then(|t| routes.progress.get(&t).cloned());
                (by_token.or_else(|| routes.listen.clone()), None)
            }
            _ => {
                let by_origin = origin.and_then(|id| {
                    routes
                        .waiting
                        .get(&(server.to_string(), id.clone()))
                        .map(|w| w.outbox.clone())
                });
                (by_origin.or_else(|| routes.listen.clone()), None)
            }
        }
    }
}
