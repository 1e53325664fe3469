//! The crate's one error type.

use std::path::PathBuf;

/// Everything that can go wrong while writing, reading or verifying the audit trail.
///
/// A broken chain is *not* an error: [`crate::verify`] reports it as a
/// [`crate::Problem`] inside an `Ok` report, so callers can tell "the trail is
/// damaged" from "the trail could not be read".
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// SQLite refused an operation; `context` says which one.
    #[error("audit store: {context}: {source}")]
    Sqlite {
        context: &'static str,
        #[source]
        source: rusqlite::Error,
    },

    /// The file could not be opened as a database at all.
    #[error("audit store {}: cannot open: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },

    /// SQLite would not put the file in WAL mode (e.g. an in-memory or network path).
    #[error("audit store {}: journal_mode is {mode:?}, but WAL is required", path.display())]
    NotWal { path: PathBuf, mode: String },

    /// The file is a SQLite database but not one this crate created.
    #[error("audit store {}: not an Airlock audit store (no schema_version table)", path.display())]
    NotAnAuditStore { path: PathBuf },

    /// The file was written by a newer (or unknown) schema.
    #[error("audit store: schema version {found} is not supported (this build knows {supported})")]
    UnsupportedSchema { found: i64, supported: i64 },

    /// `append` on a store opened with [`crate::AuditStore::open_read_only`].
    #[error("audit store was opened read-only")]
    ReadOnly,

    /// A record handed to `append` breaks a rule; nothing of the batch was written.
    #[error("audit record {index} of the batch is invalid: {reason}")]
    InvalidRecord { index: usize, reason: String },

    /// Reading or writing the anchor file failed.
    #[error("audit anchor {}: {source}", path.display())]
    AnchorIo {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The spool (the per-process file that makes records durable before they are chained)
    /// could not be written or read.
    #[error("audit spool {}: {source}", path.display())]
    Spool {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// `submit` after the writer was closed.
    #[error("audit writer is closed")]
    Closed,

    /// The anchor file exists but does not hold a valid head.
    #[error("audit anchor {}: malformed: {reason}", path.display())]
    AnchorMalformed { path: PathBuf, reason: String },
}

/// The common opener's errors, as this crate has always reported them.
impl From<airlock_sqlite::OpenError> for AuditError {
    fn from(e: airlock_sqlite::OpenError) -> AuditError {
        use airlock_sqlite::OpenError;
        match e {
            OpenError::Open { path, source } => AuditError::Open { path, source },
            OpenError::Setting { what, source, .. } => AuditError::Sqlite {
                context: what,
                source,
            },
            OpenError::NotWal { path, mode } => AuditError::NotWal { path, mode },
        }
    }
}

impl AuditError {
    pub(crate) fn sqlite(context: &'static str) -> impl FnOnce(rusqlite::Error) -> AuditError {
        move |source| AuditError::Sqlite { context, source }
    }
}
