//! `airlock-audit`: Airlock's tamper-evident, append-only audit trail in one
//! SQLite file (WAL mode).
//!
//! - Every record carries `hash = SHA-256(prev_hash ‖ canonical(record))`; the
//!   encoding is defined in one place (the `chain` module) and covers every
//!   stored column including `seq` and `kind`. The first record's `prev_hash`
//!   is 64 zeros.
//! - [`AuditStore::append`] writes a batch in one `BEGIN IMMEDIATE`
//!   transaction (a group commit), reading the chain head inside it, so many
//!   processes can append to one file and still form one chain. It returns
//!   only after COMMIT.
//! - A record's kind, decision, status and reasons are types ([`RecordKind`],
//!   [`Decision`], [`ResultStatus`], [`Reason`]), stored as the text they always were.
//! - [`verify`] recomputes the chain and names the first broken record: an
//!   edited, deleted, inserted or moved row; with an anchor file
//!   ([`write_anchor`]) also a truncated or rewritten tail.
//! - [`redact`] replaces secrets in arguments with correlatable markers
//!   before they are stored.
//! - [`AuditWriter`] makes records durable on the call path with one
//!   `write(2)` to a per-process spool (checksummed binary entries, read back
//!   by [`decode_spool`] when a dead gateway's spool is [`recover`]ed) and
//!   folds them into the chain in the background.
//!
//! ```
//! use airlock_audit::{verify, AuditStore, Decision, Durability, NewRecord, Query, Reason};
//! use airlock_audit::{RecordKind, ResultStatus};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let db = dir.path().join("audit.db");
//! let mut store = AuditStore::open(&db, Durability::Process)?;
//! let call = NewRecord::now(RecordKind::Call)
//!     .agent("build-bot")
//!     .target("repo.delete")
//!     .args("d1g3st", &serde_json::json!({"repo": "x", "token": "ghp_not_stored"}))
//!     .decision(Decision::Deny)
//!     .reasons([Reason::Policy("policy.no-delete".into())]);
//! let done = store.append(&[call])?;
//! store.append(&[NewRecord::now(RecordKind::Result).ref_seq(done[0].seq).status(ResultStatus::Ok)])?;
//!
//! let denied = store.query(&Query { decision: Some("deny".into()), ..Query::default() })?;
//! assert_eq!(denied[0].result_status.as_deref(), Some("ok"));
//! assert!(!serde_json::to_string(&denied[0].args_redacted)?.contains("ghp_not_stored"));
//! assert!(verify(&db, None)?.problem.is_none());
//! # Ok(()) }
//! ```

mod anchor;
mod chain;
mod checkpoint;
mod error;
mod query;
mod record;
mod redact;
mod spool;
mod spool_format;
mod store;
mod tail;
mod verify;
mod vocab;
mod writer;

pub use airlock_sqlite::Durability;
pub use anchor::{read_anchor, write_anchor};
pub use error::AuditError;
pub use query::Query;
pub use record::{now_unix_ns, Appended, Head, NewRecord, StoredRecord};
pub use redact::{is_marker, is_secret_key, redact};
pub use spool::{recover, spool_dir};
pub use spool_format::{decode_spool, encode_spool, SpoolContents, SpoolEnd, SpooledRecord};
pub use store::AuditStore;
pub use verify::{verify, Problem, VerifyReport};
pub use vocab::{AirlockReason, Decision, Reason, RecordKind, ResultStatus};
pub use writer::{AuditWriter, Submission, Ticket};
