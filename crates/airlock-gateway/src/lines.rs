//! Newline framing over a blocking byte stream, with a hard size limit.
//!
//! MCP over stdio is one JSON-RPC message per line. The reader runs on a frame loop's own
//! thread (see [`crate::stdio`]), so a read is one blocking `read(2)`. A peer that never sends a newline must not
//! make Airlock buffer without bound, so a line past the limit is discarded as it streams in and
//! reported once, as [`Line::TooLong`], when its newline finally arrives.

use std::io;

use std::io::Read;

const READ_CHUNK: usize = 64 * 1024;

pub(crate) use airlock_pipeline::Line;

/// Splits a byte stream into lines of at most `max` bytes.
pub(crate) struct LineReader<R> {
    inner: R,
    /// Read data lives in `buf[start..end]`; `buf` is zeroed once as it grows and then reused.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    max: usize,
    /// Bytes of an over-long line dropped so far; `Some` while discarding.
    discarding: Option<usize>,
    eof: bool,
}

impl<R: Read> LineReader<R> {
    pub(crate) fn new(inner: R, max: usize) -> Self {
        Self {
            inner,
            buf: vec![0; READ_CHUNK],
            start: 0,
            end: 0,
            max,
            discarding: None,
            eof: false,
        }
    }

    /// Returns the next line, or `None` at end of stream. A final line without a newline is
    /// still returned: a peer that exits right after writing should not lose its last frame.
    pub(crate) fn next_line(&mut self) -> io::Result<Option<Line>> {
        loop {
            if let Some(line) = self.take_buffered() {
                return Ok(Some(line));
            }
            if self.eof {
                return Ok(self.take_rest());
            }
            self.fill()?;
        }
    }

    /// True when a complete line is already buffered, so a caller can batch work (one audit
    /// commit for several frames) without waiting on the stream.
    pub(crate) fn has_buffered_line(&self) -> bool {
        memchr::memchr(b'\n', &self.buf[self.start..self.end]).is_some()
    }

    fn take_buffered(&mut self) -> Option<Line> {
        let pending = &self.buf[self.start..self.end];
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
                    self.start = 0;
                    self.end = 0;
                }
                None
            }
        }
    }

    fn take_rest(&mut self) -> Option<Line> {
        if let Some(dropped) = self.discarding.take() {
            let total = dropped + self.end - self.start;
            self.start = 0;
            self.end = 0;
            return Some(Line::TooLong(total));
        }
        if self.start >= self.end {
            return None;
        }
        let rest = self.buf[self.start..self.end].to_vec();
        self.start = 0;
        self.end = 0;
        Some(Line::Frame(rest))
    }

    fn fill(&mut self) -> io::Result<()> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        // Room for a whole chunk, so a long line costs few reads; the buffer only grows up to
        // the frame limit plus a chunk (beyond that, a line is discarded as it streams in).
        if self.buf.len() - self.end < READ_CHUNK {
            self.buf.resize(self.end + READ_CHUNK, 0);
        }
        let n = loop {
            match self.inner.read(&mut self.buf[self.end..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                read => break read?,
            }
        };
        if n == 0 {
            self.eof = true;
        }
        self.end += n;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn collect(input: &[u8], max: usize) -> Vec<Line> {
        let mut r = LineReader::new(input, max);
        let mut out = Vec::new();
        while let Some(l) = r.next_line().unwrap() {
            out.push(l);
        }
        out
    }

    #[test]
    fn splits_lines_and_keeps_a_final_unterminated_one() {
        let got = collect(b"{\"a\":1}\n{\"b\":2}\nlast", 100);
        assert_eq!(
            got,
            vec![
                Line::Frame(b"{\"a\":1}".to_vec()),
                Line::Frame(b"{\"b\":2}".to_vec()),
                Line::Frame(b"last".to_vec()),
            ]
        );
    }

    #[test]
    fn an_over_long_line_is_reported_once_and_the_next_line_survives() {
        let mut input = vec![b'x'; 300_000];
        input.extend_from_slice(b"\nok\n");
        let got = collect(&input, 1000);
        assert_eq!(
            got,
            vec![Line::TooLong(300_000), Line::Frame(b"ok".to_vec())]
        );
    }

    #[test]
    fn a_line_of_exactly_the_limit_passes() {
        let mut input = vec![b'y'; 10];
        input.push(b'\n');
        let got = collect(&input, 10);
        assert_eq!(got, vec![Line::Frame(vec![b'y'; 10])]);
        let mut input = vec![b'y'; 11];
        input.push(b'\n');
        assert_eq!(collect(&input, 10), vec![Line::TooLong(11)]);
    }
}
