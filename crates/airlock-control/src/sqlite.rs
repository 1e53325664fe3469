//! Opening the control plane's SQLite files, one way for every store: the same busy wait, the
//! same WAL check and the same `synchronous` for a durability.

use std::path::Path;
use std::time::Duration;

use airlock_audit::Durability;
use rusqlite::{Connection, OpenFlags};

use crate::error::ControlError;

/// How long a writer waits for another process's transaction before failing.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens (creating if needed) `path` in WAL mode, synced as `durability` asks.
pub(crate) fn open_wal(path: &Path, durability: Durability) -> Result<Connection, ControlError> {
    let conn = open(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
    )?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
        .map_err(ControlError::sqlite("set journal_mode=WAL"))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(ControlError::Corrupt(format!(
            "{}: journal_mode is {mode}, not wal",
            path.display()
        )));
    }
    let sync = match durability {
        Durability::Process => "NORMAL",
        Durability::PowerLoss => "FULL",
    };
    conn.pragma_update(None, "synchronous", sync)
        .map_err(ControlError::sqlite("set synchronous"))?;
    Ok(conn)
}

/// Opens `path` with `flags` (and no mutex: one connection per thread), waiting up to
/// [`BUSY_TIMEOUT`] for other processes' locks.
pub(crate) fn open(path: &Path, flags: OpenFlags) -> Result<Connection, ControlError> {
    let conn = Connection::open_with_flags(path, flags | OpenFlags::SQLITE_OPEN_NO_MUTEX).map_err(
        |source| ControlError::Open {
            path: path.to_owned(),
            source,
        },
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(ControlError::sqlite("set busy_timeout"))?;
    Ok(conn)
}
