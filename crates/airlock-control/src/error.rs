//! The crate's one error type.

use std::path::PathBuf;

/// Everything that can go wrong in the control plane. Callers on the call
/// path treat every variant as "deny": a kill or breaker state that cannot be
/// read is never taken as "no kill, budget left".
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The database file could not be opened.
    #[error("control store {}: cannot open: {source}", path.display())]
    Open {
        /// The SQLite file (the audit database).
        path: PathBuf,
        /// Why.
        #[source]
        source: rusqlite::Error,
    },
    /// SQLite refused an operation; `context` says which one.
    #[error("control store: {context}: {source}")]
    Sqlite {
        /// What was being done.
        context: &'static str,
        /// Why it failed.
        #[source]
        source: rusqlite::Error,
    },
    /// The store holds a row this build cannot read (a bad scope, a bad number).
    #[error("control store: corrupt row: {0}")]
    Corrupt(String),
    /// The in-memory breaker cache was in use (a re-entrant call): fail closed.
    #[error("control store: breaker cache is busy")]
    Busy,
    /// A file-system or socket operation failed.
    #[error("{context} {}: {source}", path.display())]
    Io {
        /// What was being done.
        context: &'static str,
        /// The path involved.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// `--as NAME` names no `[humans.NAME]`.
    #[error("unknown human \"{name}\": no [humans.{name}] section in the config")]
    UnknownHuman {
        /// The name given.
        name: String,
    },
    /// The human has no `token_sha256`, so nobody can act as them.
    #[error(
        "human \"{name}\" has no token_sha256 in the config, so nobody can act as them \
         (`airlock token new` prints one)"
    )]
    NoCredential {
        /// The human.
        name: String,
    },
    /// The token does not hash to the human's `token_sha256`.
    #[error("wrong token for human \"{name}\"")]
    BadToken {
        /// The human.
        name: String,
    },
    /// A kill target that cannot be parsed or does not exist.
    #[error("invalid kill target: {0}")]
    BadTarget(String),
    /// A kill target the config does not declare; the message names the file.
    #[error("{0}")]
    UnknownTarget(String),
}

/// The common opener's errors, as this crate has always reported them.
impl From<airlock_sqlite::OpenError> for ControlError {
    fn from(e: airlock_sqlite::OpenError) -> ControlError {
        use airlock_sqlite::OpenError;
        match e {
            OpenError::Open { path, source } => ControlError::Open { path, source },
            OpenError::Setting { what, source, .. } => ControlError::Sqlite {
                context: what,
                source,
            },
            OpenError::NotWal { path, mode } => ControlError::Corrupt(format!(
                "{}: journal_mode is {mode}, not wal",
                path.display()
            )),
        }
    }
}

impl ControlError {
    pub(crate) fn sqlite(context: &'static str) -> impl FnOnce(rusqlite::Error) -> ControlError {
        move |source| ControlError::Sqlite { context, source }
    }
}
