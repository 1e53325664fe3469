//! Newline framing over an async byte stream, with a hard size limit.
//!
//! MCP over stdio is one JSON-RPC message per line. A peer that never sends a newline must not
//! make Airlock buffer without bound, so a line past the limit is discarded as it streams in and
//! reported once, as [`Line::TooLong`], when its newline finally arrives.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt};

const READ_CHUNK: usize = 64 * 1024;

/// One framed item read from the stream.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Line {
    /// A complete line, without its `\n`.
    Frame(Vec<u8>),
    /// A line longer than the limit; its bytes were dropped. Carries the length seen.
    TooLong(usize),
}

/// Splits a byte stream into lines of at most `max` bytes.
pub(crate) struct LineReader<R> {
    inner: R,
    buf: Vec<u8>,
    /// Start of the unconsumed part of `buf`.
    start: usize,
    max: usize,
    /// Bytes of an over-long line dropped so far; `Some` while discarding.
    discarding: Option<usize>,
    eof: bool,
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    pub(crate) fn new(inner: R, max: usize) -> Self {
        Self {
            inner,
            buf: Vec::with_capacity(READ_CHUNK),
            start: 0,
            max,
            discarding: None,
            eof: false,
        }
    }

    /// Returns the next line, or `None` at end of stream. A final line without a newline is
    /// still returned: a peer that exits right after writing should not lose its last frame.
    pub(crate) async fn next_line(&mut self) -> io::Result<Option<Line>> {
        loop {
            if let Some(line) = self.take_buffered() {
                return Ok(Some(line));
            }
            if self.eof {
                return Ok(self.take_rest());
            }
            self.fill().await?;
        }
    }

    /// True when a complete line is already buffered, so a caller can batch work (one audit
    /// commit for several frames) without waiting on the stream.
    pub(crate) fn has_buffered_line(&self) -> bool {
        memchr::memchr(b'\n', &self.buf[self.start..]).is_some()
    }

    fn take_buffered(&mut self) -> Option<Line> {
        let pending = &self.buf[self.start..];
        match memchr::memchr(b'\n', pending) {
            Some(pos) => {
                let line_start = self.start;
                self.start += pos + 1;
                if let Some(dropped) = self.discarding.take() {
                    return Some(Line::TooLong(dropped + pos));
                }
                if pos > self.max {
                    return Some(Line::TooLong(pos));
                }
                Some(Line::Frame(self.buf[line_start..line_start + pos].to_vec()))
            }
            None => {
                if pending.len() > self.max || self.discarding.is_some() {
                    // Drop what we hold of an over-long line and keep counting.
                    let dropped = self.discarding.unwrap_or(0) + pending.len();
                    self.discarding = Some(dropped);
                    self.buf.clear();
                    self.start = 0;
                }
                None
            }
        }
    }

    fn take_rest(&mut self) -> Option<Line> {
        if let Some(dropped) = self.discarding.take() {
            let total = dropped + self.buf.len() - self.start;
            self.buf.clear();
            self.start = 0;
            return Some(Line::TooLong(total));
        }
        if self.start >= self.buf.len() {
            return None;
        }
        let rest = self.buf[self.start..].to_vec();
        self.buf.clear();
        self.start = 0;
        Some(Line::Frame(rest))
    }

    async fn fill(&mut self) -> io::Result<()> {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        // `read_buf` fills the spare capacity without zeroing it first.
        self.buf.reserve(READ_CHUNK);
        if self.inner.read_buf(&mut self.buf).await? == 0 {
            self.eof = true;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    async fn collect(input: &[u8], max: usize) -> Vec<Line> {
        let mut r = LineReader::new(input, max);
        let mut out = Vec::new();
        while let Some(l) = r.next_line().await.unwrap() {
            out.push(l);
        }
        out
    }

    #[tokio::test]
    async fn splits_lines_and_keeps_a_final_unterminated_one() {
        let got = collect(b"{\"a\":1}\n{\"b\":2}\nlast", 100).await;
        assert_eq!(
            got,
            vec![
                Line::Frame(b"{\"a\":1}".to_vec()),
                Line::Frame(b"{\"b\":2}".to_vec()),
                Line::Frame(b"last".to_vec()),
            ]
        );
    }

    #[tokio::test]
    async fn an_over_long_line_is_reported_once_and_the_next_line_survives() {
        let mut input = vec![b'x'; 300_000];
        input.extend_from_slice(b"\nok\n");
        let got = collect(&input, 1000).await;
        assert_eq!(
            got,
            vec![Line::TooLong(300_000), Line::Frame(b"ok".to_vec())]
        );
    }

    #[tokio::test]
    async fn a_line_of_exactly_the_limit_passes() {
        let mut input = vec![b'y'; 10];
        input.push(b'\n');
        let got = collect(&input, 10).await;
        assert_eq!(got, vec![Line::Frame(vec![b'y'; 10])]);
        let mut input = vec![b'y'; 11];
        input.push(b'\n');
        assert_eq!(collect(&input, 10).await, vec![Line::TooLong(11)]);
    }
}
