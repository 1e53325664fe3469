//! A link: one session's way to one upstream, through a pipeline of its own.
//!
//! The agent's messages go into the pipeline ([`Link::from_agent`]); what it forwards goes to
//! the upstream — one POST per message for a remote server, a line on stdin for a process
//! Airlock started — and every message the upstream sends back goes through the pipeline's
//! response stages ([`Link::from_upstream`]) before the session routes it to the agent. The
//! pipeline's calls block on the audit store, so they run with `block_in_place`: the runtime
//! moves its other tasks to another worker meanwhile.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use airlock_pipeline::{Counters, Line, Output, Pipeline};
use airlock_protocol::{FrameKind, Id};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::era::Era;
use crate::session::Session;
use crate::upstream_http::{HttpUpstream, Reply, UpstreamError};
use crate::Shared;

/// How often a POST stream that ended early is resumed (`GET` with `Last-Event-ID`).
const MAX_RESUMES: usize = 5;
/// How long a stdio upstream gets to exit when its session ends.
const STDIO_GRACE: Duration = Duration::from_secs(2);

type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// How a link reaches its upstream.
pub(crate) enum Conn {
    Http(Box<HttpUpstream>),
    Stdio(Box<StdioConn>),
}

/// A process Airlock started for this session.
pub(crate) struct StdioConn {
    pub(crate) stdin: tokio::sync::Mutex<Option<tokio::process::ChildStdin>>,
    pub(crate) process: std::sync::Mutex<Option<airlock_gateway::UpstreamProcess>>,
}

pub(crate) struct Link {
    server: String,
    pub(crate) pipeline: Arc<Pipeline>,
    conn: Conn,
    session: Weak<Session>,
    shared: Arc<Shared>,
    closed: AtomicBool,
    /// The upstream's GET stream is open.
    listening: AtomicBool,
    /// The upstream ended its session (404): the agent's session ends too, so it initializes
    /// again rather than talk to an upstream that no longer knows it.
    pub(crate) lost: AtomicBool,
    /// The era the upstream speaks.
    pub(crate) era: Era,
    /// What the upstream declared: its `server/discover` result (modern) or its `initialize`
    /// result (legacy, once Airlock initialized it for a modern agent).
    pub(crate) declared: std::sync::Mutex<Option<serde_json::Value>>,
    /// Airlock has initialized a legacy upstream for a modern agent.
    handshaken: tokio::sync::OnceCell<()>,
    /// POSTs in flight to a modern upstream, by request id: closing one cancels it.
    posts: std::sync::Mutex<std::collections::HashMap<Id, tokio::task::AbortHandle>>,
    /// Its place among the upstream's `max_sessions`.
    _slot: crate::LinkSlot,
    /// The link's own tasks (stdio readers, the audit flush), ended with it.
    tasks: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// What a link is made of.
pub(crate) struct LinkParts {
    pub(crate) server: String,
    pub(crate) pipeline: Arc<Pipeline>,
    pub(crate) conn: Conn,
    pub(crate) era: Era,
    pub(crate) declared: Option<serde_json::Value>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) slot: crate::LinkSlot,
}

impl Link {
    pub(crate) fn new(parts: LinkParts, session: &Arc<Session>) -> Arc<Link> {
        let LinkParts {
            server,
            pipeline,
            conn,
            era,
            declared,
            shared,
            slot,
        } = parts;
        Arc::new(Link {
            server,
            pipeline,
            conn,
            session: Arc::downgrade(session),
            shared,
            closed: AtomicBool::new(false),
            listening: AtomicBool::new(false),
            lost: AtomicBool::new(false),
            era,
            declared: std::sync::Mutex::new(declared),
            handshaken: tokio::sync::OnceCell::new(),
            posts: std::sync::Mutex::new(std::collections::HashMap::new()),
            _slot: slot,
            tasks: std::sync::Mutex::new(Vec::new()),
        })
    }

    pub(crate) fn server(&self) -> &str {
        &self.server
    }

    pub(crate) fn add_task(&self, task: tokio::task::JoinHandle<()>) {
        crate::lock(&self.tasks).push(task);
    }

    /// Judges the agent's messages and acts on the verdicts.
    pub(crate) async fn from_agent(self: &Arc<Self>, lines: Vec<Line>) {
        let out = self.blocking(|p, c| p.agent_batch(c, lines));
        self.dispatch(out, None).await;
    }

    /// Runs a pipeline step that may block on the store, with a breaker counter store.
    pub(crate) fn blocking<R>(&self, step: impl FnOnce(&Arc<Pipeline>, &mut Counters) -> R) -> R {
        tokio::task::block_in_place(|| {
            let mut counters = self.shared.take_counters();
            let r = step(&self.pipeline, &mut counters);
            self.shared.return_counters(counters);
            r
        })
    }

    /// Writes what a pipeline step produced: the agent's part to the session, the upstream's
    /// part to the upstream. `origin`: the request whose upstream stream this came from.
    pub(crate) async fn dispatch(self: &Arc<Self>, out: Output, origin: Option<&Id>) {
        if out.announce {
            let p = self.pipeline.clone();
            tokio::task::block_in_place(move || p.announce());
        }
        if !out.agent.is_empty() {
            if let Some(s) = self.session.upgrade() {
                s.deliver(&self.server, &out.agent, origin).await;
            }
        }
        if !out.upstream.is_empty() {
            self.to_upstream(out.upstream).await;
        }
    }

    async fn to_upstream(self: &Arc<Self>, bytes: Vec<u8>) {
        match &self.conn {
            Conn::Stdio(stdio) => {
                let written = {
                    let mut stdin = stdio.stdin.lock().await;
                    match stdin.as_mut() {
                        Some(w) => w.write_all(&bytes).await.and(w.flush().await),
                        None => Err(std::io::Error::other(
                            "the upstream server's input is closed",
                        )),
                    }
                };
                if let Err(e) = written {
                    let ids = request_ids(&bytes);
                    let out = self.blocking(|p, _| p.unforwarded(&ids, &e));
                    Box::pin(self.dispatch(out, None)).await;
                }
            }
            Conn::Http(_) => {
                for line in bytes.split_inclusive(|b| *b == b'\n') {
                    let frame = line.strip_suffix(b"\n").unwrap_or(line).to_vec();
                    if frame.is_empty() {
                        continue;
                    }
                    let link = self.clone();
                    let request = request_of(&frame).0;
                    let task = tokio::spawn(link.post(frame));
                    if let (Era::Modern, Some(id)) = (self.era, request) {
                        crate::lock(&self.posts).insert(id, task.abort_handle());
                    }
                }
            }
        }
    }

    /// One message to a remote upstream, and every message it answers with.
    fn post(self: Arc<Self>, frame: Vec<u8>) -> BoxFuture {
        Box::pin(async move {
            let Conn::Http(http) = &self.conn else {
                return;
            };
            let (request, is_init) = request_of(&frame);
            let extra = match self.era {
                Era::Modern => crate::era::headers_for(&frame),
                Era::Legacy => Vec::new(),
            };
            let reply = http.post(frame, &extra).await;
            let mut answered = false;
            let result: Result<(), UpstreamError> = async {
                match reply? {
                    Reply::Accepted => {}
                    Reply::One(body) => {
                        for msg in split_messages(&body).into_iter().map(crate::one_line) {
                            answered |= self.note_answer(&msg, request.as_ref(), is_init);
                            self.clone().from_upstream(msg, request.clone()).await;
                        }
                    }
                    Reply::Stream(mut stream) => {
                        let mut resumes = 0;
                        loop {
                            match stream.next().await? {
                                Some(events) => {
                                    for e in events.into_iter().filter(|e| e.is_message()) {
                                        let msg = crate::one_line(e.data);
                                        answered |=
                                            self.note_answer(&msg, request.as_ref(), is_init);
                                        self.clone().from_upstream(msg, request.clone()).await;
                                    }
                                }
                                None => {
                                    // A stream that ends before the answer may be resumed
                                    // where the upstream left off, if it numbered its events.
                                    let last = stream.last_id().map(str::to_string);
                                    if answered || request.is_none() || resumes >= MAX_RESUMES {
                                        break;
                                    }
                                    let Some(last) = last else { break };
                                    resumes += 1;
                                    match http.listen(Some(&last)).await? {
                                        Some(next) => stream = next,
                                        None => break,
                                    }
                                }
                            }
                        }
                    }
                }
                Ok(())
            }
            .await;
            let failure = match result {
                Err(UpstreamError::SessionGone) => {
                    self.lost.store(true, Ordering::SeqCst);
                    Some(UpstreamError::SessionGone)
                }
                Err(e) => Some(e),
                Ok(()) if request.is_some() && !answered => Some(UpstreamError::Unreachable(
                    "the upstream server ended its answer without a response".into(),
                )),
                Ok(()) => None,
            };
            if let Some(id) = &request {
                crate::lock(&self.posts).remove(id);
            }
            if let (Some(e), Some(id)) = (failure, request) {
                if !answered {
                    tracing::warn!(server = %self.server, error = %e, "an upstream request failed");
                    let out = self.blocking(|p, _| p.unforwarded(&[id], &e.io()));
                    self.dispatch(out, None).await;
                }
            }
        })
    }

    /// Whether `msg` answers `request`; the answer to `initialize` fixes the version.
    fn note_answer(&self, msg: &[u8], request: Option<&Id>, is_init: bool) -> bool {
        let Some(request) = request else { return false };
        let answers = matches!(crate::kind_of(msg), Some(FrameKind::Response { id }) | Some(FrameKind::ErrorResponse { id: Some(id) }) if id == *request);
        if answers && is_init {
            if let (Conn::Http(http), Ok(v)) =
                (&self.conn, serde_json::from_slice::<serde_json::Value>(msg))
            {
                if let Some(version) = v
                    .pointer("/result/protocolVersion")
                    .and_then(|v| v.as_str())
                {
                    http.set_version(version);
                }
            }
        }
        answers
    }

    /// One message from the upstream through the response stages, then on its way.
    pub(crate) fn from_upstream(self: Arc<Self>, frame: Vec<u8>, origin: Option<Id>) -> BoxFuture {
        Box::pin(async move {
            if self.closed.load(Ordering::SeqCst) {
                return;
            }
            let out = self.blocking(|p, c| p.upstream_line(c, Line::Frame(frame)));
            self.dispatch(out, origin.as_ref()).await;
        })
    }

    /// Ends the link: what the agent waited on is withdrawn, the upstream session ends.
    pub(crate) async fn close(&self, why: &str) {
        if self.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        for t in crate::lock(&self.tasks).drain(..) {
            t.abort();
        }
        let p = self.pipeline.clone();
        let why = why.to_string();
        let _ = tokio::task::spawn_blocking(move || {
            p.end_session(&why);
            p.audit().flush();
        })
        .await;
        match &self.conn {
            Conn::Http(http) => http.terminate().await,
            Conn::Stdio(stdio) => {
                // Closing stdin asks the server to exit; the group goes after the grace.
                stdio.stdin.lock().await.take();
                let process = crate::lock(&stdio.process).take();
                if let Some(process) = process {
                    tokio::spawn(process.shut_down(STDIO_GRACE));
                }
            }
        }
    }

    /// Opens the upstream's own server→client stream (once per link), for the session's GET.
    pub(crate) fn listen_upstream(self: &Arc<Self>, last_event: Option<String>) {
        if !matches!(self.conn, Conn::Http(_)) || self.listening.swap(true, Ordering::SeqCst) {
            return;
        }
        let link = self.clone();
        self.add_task(tokio::spawn(async move {
            let Conn::Http(http) = &link.conn else { return };
            let mut stream = match http.listen(last_event.as_deref()).await {
                Ok(Some(s)) => s,
                Ok(None) => return,
                Err(e) => {
                    tracing::info!(server = %link.server, error = %e, "the upstream offers no stream of its own");
                    return;
                }
            };
            while let Ok(Some(events)) = stream.next().await {
                for e in events.into_iter().filter(|e| e.is_message()) {
                    link.clone().from_upstream(crate::one_line(e.data), None).await;
                }
            }
            link.listening.store(false, Ordering::SeqCst);
        }));
    }

    /// Initializes a legacy upstream for a modern agent, once: `initialize` with the agent's
    /// capabilities and `notifications/initialized`, through the pipeline like any message.
    pub(crate) async fn handshake(
        self: &Arc<Self>,
        params: serde_json::Value,
    ) -> Result<(), String> {
        self.handshaken
            .get_or_try_init(|| async {
                let Some(session) = self.session.upgrade() else {
                    return Err("the session ended".to_string());
                };
                let id = Id::Str("airlock-initialize".into());
                let (tx, mut rx) = tokio::sync::mpsc::channel(8);
                session.expect(&self.server, id.clone(), None, tx);
                let init = serde_json::json!({"jsonrpc": "2.0", "id": id.to_json(), "method": "initialize", "params": params});
                self.from_agent(vec![Line::Frame(serde_json::to_vec(&init).unwrap_or_default())]).await;
                let answer = tokio::time::timeout(self.pipeline.options().call_timeout, async {
                    while let Some(d) = rx.recv().await {
                        if d.answers.is_some() {
                            return Some(d.bytes);
                        }
                    }
                    None
                })
                .await
                .ok()
                .flatten();
                session.forget(&self.server, &id);
                let result = answer
                    .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                    .and_then(|v| v.get("result").cloned())
                    .ok_or_else(|| "the upstream server did not accept initialize".to_string())?;
                *crate::lock(&self.declared) = Some(result);
                let done = br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#.to_vec();
                self.from_agent(vec![Line::Frame(done)]).await;
                Ok(())
            })
            .await
            .map(|_| ())
    }

    /// The agent gave up on `id` (a modern agent closed its stream): the pipeline forwards
    /// `notifications/cancelled` (a legacy upstream's cancel) and a modern upstream's POST is
    /// closed (its cancel).
    pub(crate) async fn cancel(self: &Arc<Self>, id: Id, why: &str) {
        if let Some(session) = self.session.upgrade() {
            session.forget(&self.server, &id);
        }
        let frame = serde_json::json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
            "params": {"requestId": id.to_json(), "reason": why}});
        if let Some(post) = crate::lock(&self.posts).remove(&id) {
            post.abort();
        }
        self.from_agent(vec![Line::Frame(
            serde_json::to_vec(&frame).unwrap_or_default(),
        )])
        .await;
    }

    /// Kills the upstream process now (a kill switch), if Airlock started one.
    pub(crate) fn kill_process(&self) {
        if let Conn::Stdio(stdio) = &self.conn {
            if let Some(p) = crate::lock(&stdio.process).as_ref() {
                p.kill();
            }
        }
    }
}

/// Reads a stdio upstream's output: each line through the link, until the process closes it.
pub(crate) async fn read_stdio(link: Weak<Link>, stdout: tokio::process::ChildStdout, max: usize) {
    let mut reader = BufReader::new(stdout);
    loop {
        let line = match read_line(&mut reader, max).await {
            Ok(Some(line)) => line,
            Ok(None) | Err(_) => break,
        };
        let Some(l) = link.upgrade() else { return };
        match line {
            Line::Frame(frame) => l.from_upstream(frame, None).await,
            Line::TooLong(n) => {
                let out = l.blocking(|p, c| p.upstream_line(c, Line::TooLong(n)));
                l.dispatch(out, None).await;
            }
        }
    }
    if let Some(l) = link.upgrade() {
        if !l.closed.load(Ordering::SeqCst) {
            let out = l.blocking(|p, _| p.upstream_gone("the upstream server closed its output"));
            l.dispatch(out, None).await;
        }
    }
}

/// The server's stderr is its log: it goes to Airlock's log, never to the agent.
pub(crate) async fn log_stderr(
    server: String,
    stderr: tokio::process::ChildStderr,
    redactor: Arc<airlock_broker::Redactor>,
) {
    let mut reader = BufReader::new(stderr);
    while let Ok(Some(line)) = read_line(&mut reader, 64 * 1024).await {
        if let Line::Frame(bytes) = line {
            // A server may log the credentials it was given: never in Airlock's log.
            let text = String::from_utf8_lossy(&bytes);
            tracing::info!(target: "upstream", server = %server, "{}", redactor.redact_str(&text));
        }
    }
}

/// One line of at most `max` bytes (a longer one is skipped whole and reported by length).
async fn read_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    max: usize,
) -> std::io::Result<Option<Line>> {
    let mut line = Vec::new();
    let mut seen = 0usize;
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            return Ok(match (seen, line.is_empty()) {
                (0, true) => None,
                _ if seen > max => Some(Line::TooLong(seen)),
                _ => Some(Line::Frame(line)),
            });
        }
        let (chunk, done) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (&buf[..i], Some(i + 1)),
            None => (buf, None),
        };
        seen += chunk.len();
        if seen <= max {
            line.extend_from_slice(chunk);
        } else {
            line.clear();
        }
        let used = done.unwrap_or(chunk.len());
        reader.consume(used);
        if done.is_some() {
            if seen > max {
                return Ok(Some(Line::TooLong(seen)));
            }
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            return Ok(Some(Line::Frame(line)));
        }
    }
}

/// The id of a request frame, and whether it is `initialize`.
fn request_of(frame: &[u8]) -> (Option<Id>, bool) {
    match crate::kind_of(frame) {
        Some(FrameKind::Request { id, method }) => (Some(id), method == "initialize"),
        _ => (None, false),
    }
}

/// The ids of the requests among newline-ended frames.
fn request_ids(bytes: &[u8]) -> Vec<Id> {
    bytes
        .split(|b| *b == b'\n')
        .filter(|f| !f.is_empty())
        .filter_map(|f| request_of(f).0)
        .collect()
}

/// A JSON body's messages: one object, or each element of a batch.
pub(crate) fn split_messages(body: &[u8]) -> Vec<Vec<u8>> {
    let trimmed = body.trim_ascii_start();
    if trimmed.first() == Some(&b'[') {
        if let Ok(items) = serde_json::from_slice::<Vec<Box<serde_json::value::RawValue>>>(body) {
            return items
                .into_iter()
                .map(|r| r.get().as_bytes().to_vec())
                .collect();
        }
    }
    vec![body.trim_ascii().to_vec()]
}
