//! `airlock-sqlite`: the one way every Airlock store opens its SQLite file.
//!
//! The audit trail, the kill file (`<db>.kills`), the control store, the approval store, the
//! label store and the webhook's cursor each opened their file themselves, with settings that
//! had drifted apart. They now all call [`open_wal`] (or [`open_read_only`] to read). Every
//! one had the same 5 s busy wait ([`BUSY_TIMEOUT`]) and no SQLite mutex (one connection per
//! thread); the rest differed:
//!
//! | store | opened | WAL before | `synchronous` before | now |
//! |---|---|---|---|---|
//! | audit (`AuditStore::open`) | read-write, create | set, checked | by durability | `open_wal(durability)` |
//! | audit (`AuditStore::open_read_only`) | read-only | as found | — | `open_read_only` |
//! | approvals (`ApprovalStore::open_with`) | read-write, create | set, checked | by durability | `open_wal(durability)` |
//! | kills and breakers (`KillStore`, `ControlStore`) | read-write, create | set, checked | by durability | `open_wal(durability)` |
//! | the audit database's old kill table (import, marker) | read-only / read-write | as found | SQLite's default, `FULL` | `open_read_only` / `open_wal(durability)` |
//! | labels (`LabelStore::open`) | read-write, create | set, **not checked** | SQLite's default, `FULL` | `open_wal(PowerLoss)`: `FULL` |
//! | webhook cursor (`airlock serve`) | rusqlite's defaults (the same, plus URIs) | **not set** | SQLite's default, `FULL` | `open_wal(PowerLoss)`: `FULL` |
//!
//! Why: every one of these files is the audit database or sits beside it, and the audit store
//! has always required WAL (readers never wait for the writer; a commit is one append). So
//! WAL is set and checked everywhere, which costs nothing and refuses a file that cannot be in
//! WAL mode, or that another tool switched back to a rollback journal, where one reader would
//! hold up every gateway's commits. Where stores differed on `synchronous`, each keeps the
//! stricter it had: those given a [`Durability`] (the config's `[audit] durability`) follow it,
//! as before; the label store and the webhook cursor had none and ran with SQLite's `FULL`, and
//! keep it ([`Durability::PowerLoss`]): they are written rarely, so the `fsync` is cheap, and a
//! label lost to a power loss would let an agent read what the label forbids.
//!
//! Left to each store: its page cache and WAL size limit (the audit store keeps its cache
//! small, as the gateway must stay small when idle) and its schema. No store declares foreign
//! keys, so they are neither switched on nor off here (the bundled SQLite has them on). The
//! audit store's checkpoint thread keeps its own connection: it only runs `PASSIVE`
//! checkpoints, which never wait for a lock and commit nothing, so neither the busy wait nor
//! `synchronous` applies to it.
//!
//! ```
//! use airlock_sqlite::{open_read_only, open_wal, Durability};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let db = dir.path().join("audit.db");
//! let conn = open_wal(&db, Durability::Process)?;
//! conn.execute_batch("CREATE TABLE t (x INTEGER)")?;
//! let reader = open_read_only(&db)?;
//! assert!(reader.execute("INSERT INTO t VALUES (1)", []).is_err());
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

/// How long a connection waits for another process's lock before failing.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// What a committed write must survive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `synchronous=NORMAL`: survives the process being killed (`kill -9`),
    /// not a power loss or kernel crash (the last commits may be lost then).
    #[default]
    Process,
    /// `synchronous=FULL`: every commit is fsynced; survives a power loss.
    PowerLoss,
}

impl Durability {
    /// The `synchronous` setting: `NORMAL` or `FULL`.
    pub fn synchronous(self) -> &'static str {
        match self {
            Durability::Process => "NORMAL",
            Durability::PowerLoss => "FULL",
        }
    }
}

/// Why a file could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// SQLite could not open the file as a database.
    #[error("{}: cannot open: {source}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: rusqlite::Error,
    },
    /// A setting could not be made; `what` says which.
    #[error("{}: cannot {what}: {source}", path.display())]
    Setting {
        /// The file.
        path: PathBuf,
        /// `set busy_timeout`, `set journal_mode=WAL` or `set synchronous`.
        what: &'static str,
        /// Why.
        #[source]
        source: rusqlite::Error,
    },
    /// SQLite would not put the file in WAL mode (an in-memory or network path, say).
    #[error("{}: journal_mode is {mode:?}, but WAL is required", path.display())]
    NotWal {
        /// The file.
        path: PathBuf,
        /// The journal mode SQLite kept.
        mode: String,
    },
}

/// Opens (creating if needed) `path` for reading and writing, in WAL mode (checked), waiting
/// up to [`BUSY_TIMEOUT`] for other processes' locks, with `synchronous` set for
/// `durability`. One connection per thread: SQLite's own mutex is off.
pub fn open_wal(path: &Path, durability: Durability) -> Result<Connection, OpenError> {
    let conn = open(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
    )?;
    let setting = |what| {
        move |source| OpenError::Setting {
            path: path.to_owned(),
            what,
            source,
        }
    };
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
        .map_err(setting("set journal_mode=WAL"))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(OpenError::NotWal {
            path: path.to_owned(),
            mode,
        });
    }
    conn.pragma_update(None, "synchronous", durability.synchronous())
        .map_err(setting("set synchronous"))?;
    Ok(conn)
}

/// Opens the existing file `path` for reading only (it is never created), waiting up to
/// [`BUSY_TIMEOUT`] for other processes' locks. The journal mode is read as it is: a copy of
/// a database may be checked whatever its mode.
pub fn open_read_only(path: &Path) -> Result<Connection, OpenError> {
    open(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
}

fn open(path: &Path, flags: OpenFlags) -> Result<Connection, OpenError> {
    let conn = Connection::open_with_flags(path, flags | OpenFlags::SQLITE_OPEN_NO_MUTEX).map_err(
        |source| OpenError::Open {
            path: path.to_owned(),
            source,
        },
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|source| OpenError::Setting {
            path: path.to_owned(),
            what: "set busy_timeout",
            source,
        })?;
    Ok(conn)
}

#[cfg(test)]
#[path = "lib_tests.rs"]
mod tests;
