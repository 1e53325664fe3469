//! Everything that can go wrong with an approval, and how each maps to an answer.

use std::path::PathBuf;

/// What kind of failure, for mapping to an HTTP status or an exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// No such request (404).
    NotFound,
    /// The request cannot take this decision now: decided, expired, already voted (409).
    Conflict,
    /// This human may not decide this request (403).
    Forbidden,
    /// Bad input: an unusable annotation, an empty name (400).
    Invalid,
    /// The store failed (500). The decision did not happen unless the message says so.
    Internal,
}

/// One approval failure; the message is a sentence for the human.
#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    #[error("no approval request {id}")]
    NotFound { id: String },
    #[error("approval request {id} is {state}, not pending: nothing changed")]
    NotPending { id: String, state: String },
    #[error("approval request {id} expired: nothing changed")]
    Expired { id: String },
    #[error("{human} already voted on approval request {id}")]
    AlreadyVoted { id: String, human: String },
    #[error("{human} may not decide approval request {id}: {why}")]
    NotAllowed {
        id: String,
        human: String,
        why: String,
    },
    #[error(
        "approval request {id} holds values that cannot be shown (secrets redacted, the call's \
         arguments not kept), and no human approves what they cannot read: deny it, or review \
         the call out of band"
    )]
    CannotShow { id: String },
    #[error("invalid approval policy: {0}")]
    Invalid(String),
    #[error("cannot open the approval store {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("approval store: cannot {what}: {source}")]
    Sqlite {
        what: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error("approval store holds a malformed row: {0}")]
    Corrupt(String),
    #[error("{0}")]
    Audit(String),
}

/// The common opener's errors, as this crate has always reported them.
impl From<airlock_sqlite::OpenError> for ApprovalError {
    fn from(e: airlock_sqlite::OpenError) -> ApprovalError {
        use airlock_sqlite::OpenError;
        match e {
            OpenError::Open { path, source } => ApprovalError::Open { path, source },
            OpenError::Setting { what, source, .. } => ApprovalError::Sqlite { what, source },
            OpenError::NotWal { mode, .. } => {
                ApprovalError::Corrupt(format!("journal_mode is {mode}, not wal"))
            }
        }
    }
}

impl ApprovalError {
    /// Which kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ApprovalError::NotFound { .. } => ErrorKind::NotFound,
            ApprovalError::NotPending { .. }
            | ApprovalError::Expired { .. }
            | ApprovalError::AlreadyVoted { .. } => ErrorKind::Conflict,
            ApprovalError::NotAllowed { .. } | ApprovalError::CannotShow { .. } => {
                ErrorKind::Forbidden
            }
            ApprovalError::Invalid(_) => ErrorKind::Invalid,
            ApprovalError::Open { .. }
            | ApprovalError::Sqlite { .. }
            | ApprovalError::Corrupt(_)
            | ApprovalError::Audit(_) => ErrorKind::Internal,
        }
    }

    pub(crate) fn sqlite(what: &'static str) -> impl FnOnce(rusqlite::Error) -> ApprovalError {
        move |source| ApprovalError::Sqlite { what, source }
    }
}
