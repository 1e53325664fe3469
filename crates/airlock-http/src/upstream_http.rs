//! A remote upstream over Streamable HTTP: Airlock is its client.
//!
//! Each message the pipeline forwards is one POST. The reply is `202` (a notification or a
//! response), one JSON message, or an event stream of messages; all are read with a size
//! bound. The upstream's session id (set on its `initialize` answer) and the negotiated
//! protocol version go on every later request, with the brokered credentials. Nothing the
//! agent sent in its own HTTP headers reaches the upstream: the agent's token stays here.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use airlock_broker::Broker;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, ACCEPT, CONTENT_TYPE};
use reqwest::StatusCode;

use crate::sse::{SseEvent, SseParser};

pub(crate) const SESSION_HEADER: &str = "mcp-session-id";
pub(crate) const VERSION_HEADER: &str = "mcp-protocol-version";
const LAST_EVENT_HEADER: &str = "last-event-id";
/// How long connecting to an upstream may take.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a POST to the upstream gave no messages.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    #[error("the upstream server cannot be reached: {0}")]
    Unreachable(String),
    #[error("the upstream server answered HTTP {0}")]
    Status(u16),
    #[error("the upstream server ended its session (HTTP 404)")]
    SessionGone,
    #[error("the upstream server sent a message of more than {0} bytes")]
    TooLong(usize),
    #[error("the upstream server answered with content type \"{0}\", not JSON or an event stream")]
    ContentType(String),
    #[error("the upstream credentials are not available: {0}")]
    Credentials(String),
}

impl UpstreamError {
    pub(crate) fn io(&self) -> std::io::Error {
        std::io::Error::other(self.to_string())
    }
}

/// What a POST returned.
pub(crate) enum Reply {
    /// `202 Accepted`: nothing to read.
    Accepted,
    /// One message (a JSON body).
    One(Vec<u8>),
    /// An event stream to read with [`HttpUpstream::next_events`].
    Stream(Box<EventStream>),
}

/// An open event stream from the upstream.
pub(crate) struct EventStream {
    response: reqwest::Response,
    parser: SseParser,
    max: usize,
}

impl EventStream {
    /// The next batch of complete events; `Ok(None)` at the end of the stream.
    pub(crate) async fn next(&mut self) -> Result<Option<Vec<SseEvent>>, UpstreamError> {
        loop {
            let chunk = self
                .response
                .chunk()
                .await
                .map_err(|e| UpstreamError::Unreachable(e.to_string()))?;
            let Some(chunk) = chunk else {
                return Ok(None);
            };
            let mut events = Vec::new();
            self.parser
                .push(&chunk, &mut events)
                .map_err(|_| UpstreamError::TooLong(self.max))?;
            if !events.is_empty() {
                return Ok(Some(events));
            }
        }
    }

    pub(crate) fn last_id(&self) -> Option<&str> {
        self.parser.last_id()
    }
}

/// Whose credentials go on a request: the broker's, for this server, human and agent.
pub(crate) struct Credentials {
    pub(crate) broker: Arc<Broker>,
    pub(crate) server: String,
    pub(crate) human: String,
    pub(crate) agent: String,
}

/// One upstream session over HTTP.
pub(crate) struct HttpUpstream {
    client: reqwest::Client,
    url: reqwest::Url,
    /// Brokered credentials, asked for on every request (an exchanged token is refreshed).
    credentials: Credentials,
    max_message: usize,
    /// The upstream's `Mcp-Session-Id`, once its `initialize` answer set one.
    session: Mutex<Option<HeaderValue>>,
    /// The negotiated protocol version, once known.
    version: Mutex<Option<HeaderValue>>,
}

impl HttpUpstream {
    pub(crate) fn new(
        client: reqwest::Client,
        url: reqwest::Url,
        credentials: Credentials,
        max_message: usize,
    ) -> Self {
        HttpUpstream {
            client,
            url,
            credentials,
            max_message,
            session: Mutex::new(None),
            version: Mutex::new(None),
        }
    }

    /// Sets the protocol version sent from now on (learnt from the `initialize` answer).
    pub(crate) fn set_version(&self, version: &str) {
        if let Ok(v) = HeaderValue::from_str(version) {
            *crate::lock(&self.version) = Some(v);
        }
    }

    /// The brokered headers, marked sensitive (never printed by the HTTP stack).
    async fn credential_headers(&self) -> Result<HeaderMap, UpstreamError> {
        let c = &self.credentials;
        let pairs = c
            .broker
            .headers_for(&c.server, &c.human, &c.agent)
            .await
            .map_err(|e| UpstreamError::Credentials(e.to_string()))?;
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| UpstreamError::Credentials("a header name is not valid".into()))?;
            let mut value = HeaderValue::from_str(value.expose()).map_err(|_| {
                UpstreamError::Credentials(format!("the value of {name} is not a valid header"))
            })?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        Ok(headers)
    }

    async fn request(
        &self,
        method: reqwest::Method,
    ) -> Result<reqwest::RequestBuilder, UpstreamError> {
        let mut req = self
            .client
            .request(method, self.url.clone())
            .headers(self.credential_headers().await?);
        if let Some(s) = crate::lock(&self.session).clone() {
            req = req.header(HeaderName::from_static(SESSION_HEADER), s);
        }
        if let Some(v) = crate::lock(&self.version).clone() {
            req = req.header(HeaderName::from_static(VERSION_HEADER), v);
        }
        Ok(req)
    }

    /// POSTs one message, with `extra` headers (a modern upstream's `Mcp-*`).
    pub(crate) async fn post(
        &self,
        frame: Vec<u8>,
        extra: &[(&'static str, String)],
    ) -> Result<Reply, UpstreamError> {
        let mut headers = HeaderMap::new();
        for (name, value) in extra {
            if let Ok(v) = HeaderValue::from_str(value) {
                headers.insert(HeaderName::from_static(name), v);
            }
        }
        // Replaces what `request` set (the version): one value per header.
        let req = self.request(reqwest::Method::POST).await?.headers(headers);
        let response = req
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "application/json, text/event-stream")
            .body(frame)
            .send()
            .await
            .map_err(|e| UpstreamError::Unreachable(without_url(&e)))?;
        if let Some(id) = response.headers().get(SESSION_HEADER) {
            let mut session = crate::lock(&self.session);
            if session.is_none() {
                *session = Some(id.clone());
            }
        }
        self.read_reply(response).await
    }

    /// Opens the upstream's server→client stream (`GET`); `None` if it offers none (405).
    pub(crate) async fn listen(
        &self,
        last_event: Option<&str>,
    ) -> Result<Option<Box<EventStream>>, UpstreamError> {
        let mut req = self
            .request(reqwest::Method::GET)
            .await?
            .header(ACCEPT, "text/event-stream");
        if let Some(id) = last_event.and_then(|i| HeaderValue::from_str(i).ok()) {
            req = req.header(HeaderName::from_static(LAST_EVENT_HEADER), id);
        }
        let response = req
            .send()
            .await
            .map_err(|e| UpstreamError::Unreachable(without_url(&e)))?;
        if response.status() == StatusCode::METHOD_NOT_ALLOWED {
            return Ok(None);
        }
        match self.read_reply(response).await? {
            Reply::Stream(s) => Ok(Some(s)),
            _ => Ok(None),
        }
    }

    /// Ends the upstream session (`DELETE`), best effort: a server may refuse (405).
    pub(crate) async fn terminate(&self) {
        if crate::lock(&self.session).is_none() {
            return;
        }
        let Ok(req) = self.request(reqwest::Method::DELETE).await else {
            return;
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), req.send()).await;
    }

    async fn read_reply(&self, response: reqwest::Response) -> Result<Reply, UpstreamError> {
        let status = response.status();
        if status == StatusCode::ACCEPTED {
            return Ok(Reply::Accepted);
        }
        if status == StatusCode::NOT_FOUND && crate::lock(&self.session).is_some() {
            return Err(UpstreamError::SessionGone);
        }
        let kind = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        if kind.starts_with("text/event-stream") && status.is_success() {
            return Ok(Reply::Stream(Box::new(EventStream {
                response,
                parser: SseParser::new(self.max_message),
                max: self.max_message,
            })));
        }
        if kind.starts_with("application/json") {
            // An error status with a JSON-RPC body still answers the request it names.
            let body = read_limited(response, self.max_message).await?;
            if body.iter().all(u8::is_ascii_whitespace) {
                return if status.is_success() {
                    Ok(Reply::Accepted)
                } else {
                    Err(UpstreamError::Status(status.as_u16()))
                };
            }
            return Ok(Reply::One(body));
        }
        if !status.is_success() {
            return Err(UpstreamError::Status(status.as_u16()));
        }
        if response.content_length() == Some(0) || kind.is_empty() {
            return Ok(Reply::Accepted);
        }
        Err(UpstreamError::ContentType(kind))
    }
}

/// Reads a body of at most `max` bytes.
async fn read_limited(
    mut response: reqwest::Response,
    max: usize,
) -> Result<Vec<u8>, UpstreamError> {
    if response.content_length().is_some_and(|n| n > max as u64) {
        return Err(UpstreamError::TooLong(max));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| UpstreamError::Unreachable(without_url(&e)))?
    {
        if body.len() + chunk.len() > max {
            return Err(UpstreamError::TooLong(max));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A client error without its URL (a URL may carry a credential in its query): what failed,
/// and the innermost cause.
fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_connect() {
        "connection failed"
    } else if e.is_timeout() {
        "timed out"
    } else if e.is_body() || e.is_decode() {
        "the body could not be read"
    } else if e.is_request() {
        "the request failed"
    } else {
        "an HTTP error"
    };
    let mut source = std::error::Error::source(e);
    let mut detail = None;
    while let Some(s) = source {
        detail = Some(s.to_string());
        source = s.source();
    }
    match detail {
        Some(d) => format!("{kind}: {d}"),
        None => kind.to_string(),
    }
}
