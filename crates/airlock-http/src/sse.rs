//! Server-Sent Events: the parser for what an upstream streams (untrusted bytes, bounded), and
//! the encoder for what Airlock streams to the agent.
//!
//! Follows the WHATWG event-stream rules that matter for MCP: lines end in `\n`, `\r\n` or `\r`
//! (a `\r\n` may be split across reads); `data:` lines of one event join with `\n`; a blank
//! line ends the event; `id` persists until changed (the last event id, for resumption); a
//! line starting with `:` is a comment (keep-alive); one space after the colon is dropped.

/// One event from an upstream stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The event type (`None`: the default, `message`).
    pub event: Option<String>,
    /// The last event id seen on the stream, as of this event.
    pub id: Option<String>,
    /// The joined `data:` lines.
    pub data: Vec<u8>,
}

impl SseEvent {
    /// Whether this event carries a JSON-RPC message (type `message` or none).
    pub fn is_message(&self) -> bool {
        matches!(self.event.as_deref(), None | Some("message"))
    }
}

/// Why a stream was given up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    #[error("an event of more than {0} bytes")]
    TooLong(usize),
}

/// An incremental event-stream parser. Memory is bounded by `max_event` (plus one line).
#[derive(Debug)]
pub struct SseParser {
    max_event: usize,
    line: Vec<u8>,
    data: Vec<u8>,
    has_data: bool,
    event: Option<String>,
    last_id: Option<String>,
    /// The previous read ended in `\r`: a `\n` starting the next one belongs to it.
    skip_lf: bool,
}

impl SseParser {
    pub fn new(max_event: usize) -> Self {
        SseParser {
            max_event,
            line: Vec::new(),
            data: Vec::new(),
            has_data: false,
            event: None,
            last_id: None,
            skip_lf: false,
        }
    }

    /// The last event id seen.
    pub fn last_id(&self) -> Option<&str> {
        self.last_id.as_deref()
    }

    /// Feeds bytes; complete events are appended to `out`.
    pub fn push(&mut self, mut chunk: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        if self.skip_lf && !chunk.is_empty() {
            if chunk[0] == b'\n' {
                chunk = &chunk[1..];
            }
            self.skip_lf = false;
        }
        while let Some(i) = chunk.iter().position(|b| *b == b'\n' || *b == b'\r') {
            self.line.extend_from_slice(&chunk[..i]);
            let cr = chunk[i] == b'\r';
            chunk = &chunk[i + 1..];
            if cr {
                match chunk.first() {
                    Some(b'\n') => chunk = &chunk[1..],
                    Some(_) => {}
                    None => self.skip_lf = true,
                }
            }
            let line = std::mem::take(&mut self.line);
            self.field(&line, out)?;
        }
        self.line.extend_from_slice(chunk);
        // A line longer than any event may be is refused before it is complete.
        if self.line.len() > self.max_event.saturating_add(16) {
            return Err(SseError::TooLong(self.max_event));
        }
        Ok(())
    }

    fn field(&mut self, line: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        if line.is_empty() {
            let event = self.event.take();
            if self.has_data {
                self.has_data = false;
                out.push(SseEvent {
                    event,
                    id: self.last_id.clone(),
                    data: std::mem::take(&mut self.data),
                });
            }
            return Ok(());
        }
        if line[0] == b':' {
            return Ok(());
        }
        let (name, value) = match line.iter().position(|b| *b == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match name {
            b"data" => {
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
                if self.data.len() > self.max_event {
                    return Err(SseError::TooLong(self.max_event));
                }
            }
            b"event" => self.event = Some(String::from_utf8_lossy(value).into_owned()),
            // An id with NUL is ignored, as the standard says.
            b"id" if !value.contains(&0) => {
                self.last_id = Some(String::from_utf8_lossy(value).into_owned());
            }
            _ => {}
        }
        Ok(())
    }
}

/// One `message` event for the agent. `data` may hold newlines (a pretty-printed frame): each
/// line becomes a `data:` line of its own, which the reader joins back with `\n`.
pub fn encode_event(id: Option<&str>, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 48);
    out.extend_from_slice(b"event: message\n");
    if let Some(id) = id {
        out.extend_from_slice(b"id: ");
        out.extend_from_slice(id.as_bytes());
        out.push(b'\n');
    }
    let data = data.strip_suffix(b"\n").unwrap_or(data);
    for line in data.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out.push(b'\n');
    out
}

#[cfg(test)]
#[path = "sse_tests.rs"]
mod tests;
