//! Airlock's own stdin/stdout as async streams.
//!
//! `tokio::io::stdin()` hands every read to the blocking thread pool, which costs about 100 µs a
//! frame. When stdin/stdout are pipes (how MCP clients spawn servers) Airlock registers them with
//! epoll instead; anything else (a terminal, a file) falls back to tokio's portable streams.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::unix::pipe;

/// The agent's side of the conversation.
pub struct AgentIo {
    pub(crate) reader: Box<dyn AsyncRead + Unpin + Send>,
    pub(crate) writer: Box<dyn AsyncWrite + Unpin + Send>,
}

impl AgentIo {
    /// Airlock's own stdin and stdout.
    pub fn stdio() -> io::Result<Self> {
        let reader: Box<dyn AsyncRead + Unpin + Send> = match stdin_pipe() {
            Some(rx) => Box::new(rx),
            None => Box::new(tokio::io::stdin()),
        };
        let writer: Box<dyn AsyncWrite + Unpin + Send> = match stdout_pipe() {
            Some(tx) => Box::new(tx),
            None => Box::new(tokio::io::stdout()),
        };
        Ok(Self { reader, writer })
    }

    /// Any pair of streams, for tests and embedding.
    pub fn new(
        reader: impl AsyncRead + Unpin + Send + 'static,
        writer: impl AsyncWrite + Unpin + Send + 'static,
    ) -> Self {
        Self {
            reader: Box::new(reader),
            writer: Box::new(writer),
        }
    }
}

fn stdin_pipe() -> Option<pipe::Receiver> {
    let fd = io::stdin().as_fd().try_clone_to_owned().ok()?;
    // `from_file` checks that the descriptor is a FIFO opened for reading.
    pipe::Receiver::from_file(File::from(fd)).ok()
}

fn stdout_pipe() -> Option<pipe::Sender> {
    let fd = io::stdout().as_fd().try_clone_to_owned().ok()?;
    pipe::Sender::from_file(File::from(fd)).ok()
}
