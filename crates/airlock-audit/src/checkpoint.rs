//! Background WAL checkpoints.
//!
//! SQLite's automatic checkpoint runs inside the COMMIT that crosses the WAL
//! size threshold, so one append in a thousand pays for copying the WAL into
//! the database and two fsyncs (milliseconds). A writer store turns that off
//! and lets this thread, on its own connection, run PASSIVE checkpoints (which
//! never block writers) at most every [`INTERVAL`] while appends happen.

use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};

/// Longest a committed record stays only in the WAL while appends continue.
const INTERVAL: Duration = Duration::from_millis(200);

#[derive(Debug)]
pub(crate) struct Checkpointer {
    poke: Option<SyncSender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts the thread; `None` if its connection or thread cannot be made
    /// (the caller then keeps SQLite's automatic checkpoints).
    pub(crate) fn start(path: &Path) -> Option<Checkpointer> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .ok()?;
        conn.pragma_update(None, "cache_size", -64).ok()?;
        let (tx, rx) = sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("airlock-audit-checkpoint".into())
            .stack_size(256 * 1024)
            .spawn(move || run(&conn, &rx))
            .ok()?;
        Some(Checkpointer {
            poke: Some(tx),
            thread: Some(thread),
        })
    }

    /// Tells the thread that the WAL grew. Never blocks.
    pub(crate) fn poke(&self) {
        if let Some(tx) = &self.poke {
            match tx.try_send(()) {
                Ok(()) | Err(TrySendError::Full(())) | Err(TrySendError::Disconnected(())) => {}
            }
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        // Closing the channel asks for a last checkpoint and an exit.
        self.poke = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(conn: &Connection, rx: &Receiver<()>) {
    'idle: while rx.recv().is_ok() {
        loop {
            checkpoint(conn);
            // Pokes during the quiet period are coalesced into one more round.
            let deadline = Instant::now() + INTERVAL;
            let mut again = false;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                match rx.recv_timeout(left) {
                    Ok(()) => again = true,
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => break 'idle,
                }
            }
            if !again {
                continue 'idle;
            }
        }
    }
    checkpoint(conn);
}

fn checkpoint(conn: &Connection) {
    // Failure (e.g. another process is checkpointing) is harmless: the next
    // round, or any later writer, catches up.
    let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
}
