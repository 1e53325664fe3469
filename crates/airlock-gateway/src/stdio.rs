//! The byte streams the gateway moves frames over: the agent's side (Airlock's own stdin and
//! stdout) and the upstream's pipes.
//!
//! The two frame loops run on threads of their own and read with a blocking `read(2)`, as a
//! plain relay does: one system call per frame and a direct wake-up of the reading thread. An
//! async reader costs an `epoll_wait` on top of every `read` and a hop through the runtime's
//! scheduler, which is most of what the gateway used to add over a relay.
//!
//! Writes come from both sides: the frame threads (answers, forwarded calls) write blocking,
//! the async tasks (timeouts, kills, shutdown) write through the runtime so that a peer that
//! stopped reading can hold them up no longer than their own timeouts. One [`Outlet`] per
//! destination serializes the two, a frame at a time.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::runtime::Handle;

/// The agent's side of the conversation.
pub struct AgentIo {
    pub(crate) reader: Source,
    pub(crate) writer: Sink,
}

impl AgentIo {
    /// Airlock's own stdin and stdout. Must be called inside the gateway's runtime.
    pub fn stdio() -> io::Result<Self> {
        // Any descriptor can be read blocking; nothing about stdin's flags is changed.
        let reader = Source::Fd(File::from(io::stdin().as_fd().try_clone_to_owned()?));
        // A pipe (how MCP clients spawn servers) is made non-blocking and registered with the
        // runtime. Anything else (a terminal, a file) is left as it is, since its flags are
        // shared with whoever else holds it (a shell, say), and is written through tokio's
        // portable stdout.
        let stdout = File::from(io::stdout().as_fd().try_clone_to_owned()?);
        let writer = match pipe::Sender::from_file(stdout) {
            Ok(tx) => Sink::Pipe(tx),
            Err(_) => Sink::Stream(Box::new(tokio::io::stdout())),
        };
        Ok(Self { reader, writer })
    }

    /// Any pair of streams, for tests and embedding. The frame threads reach them through the
    /// runtime (`Handle::block_on`), which is slower than a descriptor but behaves the same.
    pub fn new(
        reader: impl AsyncRead + Unpin + Send + 'static,
        writer: impl AsyncWrite + Unpin + Send + 'static,
    ) -> Self {
        Self {
            reader: Source::Stream(Box::new(reader)),
            writer: Sink::Stream(Box::new(writer)),
        }
    }
}

/// What a frame loop reads from.
pub(crate) enum Source {
    /// A descriptor, read with a blocking `read(2)` on the loop's own thread.
    Fd(File),
    /// An async stream, read through the runtime.
    Stream(Box<dyn AsyncRead + Unpin + Send>),
}

impl Source {
    /// The read end of a child's pipe (tokio made it non-blocking; this end is ours alone).
    pub(crate) fn child_pipe(fd: OwnedFd) -> Source {
        let file = File::from(fd);
        // Blocking reads are the point; if the flag cannot be cleared, `read_fd` still works,
        // with a `poll` more per frame.
        if let Ok(flags) = fcntl(&file, FcntlArg::F_GETFL) {
            let flags = OFlag::from_bits_truncate(flags) - OFlag::O_NONBLOCK;
            let _ = fcntl(&file, FcntlArg::F_SETFL(flags));
        }
        Source::Fd(file)
    }

    /// A blocking reader over this source, for a frame thread.
    pub(crate) fn into_reader(self, handle: Handle) -> SourceReader {
        SourceReader {
            source: self,
            handle,
        }
    }
}

/// A [`Source`] as a blocking [`Read`].
pub(crate) struct SourceReader {
    source: Source,
    handle: Handle,
}

impl Read for SourceReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.source {
            Source::Fd(file) => read_fd(file, buf),
            Source::Stream(stream) => self.handle.block_on(stream.read(buf)),
        }
    }
}

/// One `read(2)`; a descriptor that someone made non-blocking is waited on with `poll`.
fn read_fd(file: &File, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match (&*file).read(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                wait_for(file.as_fd(), PollFlags::POLLIN)?;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

/// Blocks the calling thread until `file` is ready for `events` (or hung up).
fn wait_for(fd: BorrowedFd<'_>, events: PollFlags) -> io::Result<()> {
    let mut fds = [PollFd::new(fd, events)];
    match poll(&mut fds, PollTimeout::NONE) {
        Ok(_) | Err(Errno::EINTR) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Where an [`Outlet`] writes.
pub(crate) enum Sink {
    /// A non-blocking pipe, registered with the runtime for the async writers; the frame
    /// threads write to its descriptor directly.
    Pipe(pipe::Sender),
    /// An async stream, written through the runtime.
    Stream(Box<dyn AsyncWrite + Unpin + Send>),
}

impl Sink {
    /// The write end of a child's pipe.
    pub(crate) fn child_pipe(fd: OwnedFd) -> io::Result<Sink> {
        Ok(Sink::Pipe(pipe::Sender::from_owned_fd(fd)?))
    }
}

/// A destination written by the frame threads and by async tasks, one whole frame at a time.
/// `None` inside once closed.
pub(crate) struct Outlet {
    sink: tokio::sync::Mutex<Option<Sink>>,
    handle: Handle,
}

impl Outlet {
    pub(crate) fn new(sink: Sink, handle: Handle) -> Outlet {
        Outlet {
            sink: tokio::sync::Mutex::new(Some(sink)),
            handle,
        }
    }

    /// Writes all of `bytes`, blocking the calling thread. Only for the frame threads (never a
    /// runtime thread: it would stall every task).
    pub(crate) fn write_blocking(&self, bytes: &[u8]) -> io::Result<()> {
        let mut guard = self.sink.blocking_lock();
        match guard.as_mut() {
            None => Err(closed()),
            Some(Sink::Pipe(tx)) => write_fd(tx.as_fd(), bytes),
            Some(Sink::Stream(stream)) => self.handle.block_on(async {
                stream.write_all(bytes).await?;
                stream.flush().await
            }),
        }
    }

    /// Writes all of `bytes` without blocking the runtime; cancel-safe up to a partial frame,
    /// as any async write.
    pub(crate) async fn write(&self, bytes: &[u8]) -> io::Result<()> {
        let mut guard = self.sink.lock().await;
        match guard.as_mut() {
            None => Err(closed()),
            Some(Sink::Pipe(tx)) => tx.write_all(bytes).await,
            Some(Sink::Stream(stream)) => {
                stream.write_all(bytes).await?;
                stream.flush().await
            }
        }
    }

    /// Closes the destination (the peer sees end-of-file); later writes fail.
    pub(crate) async fn close(&self) {
        self.sink.lock().await.take();
    }
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "output closed")
}

/// `write(2)` on a non-blocking descriptor until all is written; a full pipe is waited on with
/// `poll`. The runtime's cached readiness for the pipe is bypassed, which is safe: a full pipe
/// it has not seen only costs its next async write one `EAGAIN`.
fn write_fd(fd: BorrowedFd<'_>, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        match nix::unistd::write(fd, bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(Errno::EAGAIN) => wait_for(fd, PollFlags::POLLOUT)?,
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::io::Write;

    use super::*;

    fn pipe() -> (File, File) {
        let (r, w) = nix::unistd::pipe().unwrap();
        (File::from(r), File::from(w))
    }

    #[tokio::test]
    async fn blocking_and_async_writes_share_one_pipe_and_a_full_pipe_is_waited_on() {
        let (r, w) = pipe();
        let sink = Sink::child_pipe(OwnedFd::from(w)).unwrap();
        let outlet = std::sync::Arc::new(Outlet::new(sink, Handle::current()));
        // More than a pipe holds (64 KiB): the blocking writer must wait for the reader.
        let big = vec![b'x'; 200_000];
        let writer = {
            let outlet = outlet.clone();
            let big = big.clone();
            std::thread::spawn(move || outlet.write_blocking(&big))
        };
        let handle = Handle::current();
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut source = Source::Fd(r).into_reader(handle);
            let mut buf = [0u8; 4096];
            while got.len() < 200_003 {
                let n = source.read(&mut buf).unwrap();
                assert!(n > 0);
                got.extend_from_slice(&buf[..n]);
            }
            got
        });
        tokio::task::spawn_blocking(move || writer.join().unwrap().unwrap())
            .await
            .unwrap();
        outlet.write(b"end").await.unwrap();
        let got = tokio::task::spawn_blocking(move || reader.join().unwrap())
            .await
            .unwrap();
        assert_eq!(&got[..200_000], &big[..]);
        assert_eq!(&got[200_000..], b"end");
        outlet.close().await;
        assert_eq!(
            outlet.write(b"x").await.unwrap_err().kind(),
            io::ErrorKind::BrokenPipe
        );
    }

    #[test]
    fn a_non_blocking_read_end_is_made_blocking() {
        let (r, mut w) = pipe();
        let flags = OFlag::from_bits_truncate(fcntl(&r, FcntlArg::F_GETFL).unwrap());
        fcntl(&r, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK)).unwrap();
        let Source::Fd(r) = Source::child_pipe(OwnedFd::from(r)) else {
            panic!("not a descriptor");
        };
        let flags = OFlag::from_bits_truncate(fcntl(&r, FcntlArg::F_GETFL).unwrap());
        assert!(!flags.contains(OFlag::O_NONBLOCK));
        w.write_all(b"hi").unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(read_fd(&r, &mut buf).unwrap(), 2);
    }
}
