//! `airlock-control`: the kill switch and the blast-radius breakers.
//!
//! - **Kills** ([`KillStore`], [`ControlStore::resume`], [`matching`]) live in
//!   a SQLite file of their own beside the audit database (`<db>.kills`), so a
//!   kill never queues behind the audit trail's writers; each is committed
//!   before the call returns, so it survives a restart of any process.
//!   [`notify_all`] then wakes every gateway bound with [`Listener::bind`]
//!   (Unix datagram sockets in `<db>.control/`), which re-reads the active kills.
//!   Each kill carries its [`KillOrigin`]: a human's kill ([`KillStore::kill`]) or a
//!   breaker's pause ([`KillStore::pause`]), whatever its reason's words.
//! - **Breakers** ([`BreakerSet`]) keep budgets per agent × action class from
//!   `[breakers.<class>]`, plus default loop and fan-out detection
//!   (`[breakers.defaults]`). Every counter is a row of a per-agent journal
//!   beside the database, appended under the agent's lock file, so counters
//!   survive restarts and budgets are exact across every process on the file
//!   (see the `journal` module). A call inside a budget class appends its
//!   budget and loop-detection rows in one write under the lock; a call
//!   outside every class appends its loop-detection rows behind, within
//!   100 ms. An in-memory cache in front of the journals is what decisions
//!   read (see the `cache` module).
//! - **Humans** act with a bearer token whose SHA-256 is in the config
//!   ([`auth::verify_human`]).
//!
//! - **Acting as a human** ([`kill_and_announce`], [`resume_and_announce`]): the store
//!   first, then the fan-out and the audit record; the CLI and `airlock serve` both call
//!   these.
//!
//! Every error is a [`ControlError`]; on the call path, every error means deny.
//!
//! ```
//! use airlock_control::{matching, notify_all, ControlStore, KillTarget};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let db = dir.path().join("audit.db");
//! let mut store = ControlStore::open(&db)?;
//! store.kill(KillTarget::Agent("bot".into()), "runaway", "alice")?;
//! let woken = notify_all(&db)?; // no gateway is listening here
//! assert_eq!(woken, 0);
//! let active = store.active()?;
//! assert!(matching(&active, "bot", None, Some("corp"), Some("acl_set")).is_some());
//! assert!(matching(&active, "other", None, None, None).is_none());
//! assert_eq!(store.resume(&KillTarget::Agent("bot".into()), "alice")?, 1);
//! assert!(store.active()?.is_empty());
//! # Ok(()) }
//! ```

mod act;
pub mod auth;
mod breakers;
mod cache;
mod error;
mod journal;
mod kill;
mod kill_store;
mod notify;
mod pending;
mod records;
mod row;
mod series;
mod store;

pub use act::{check_target, durability, kill_and_announce, resume_and_announce, Announced};
pub use breakers::{
    count_items, BreakerSet, Level, Matched, Trip, Verdict, LOOP_FANOUT, LOOP_RATE,
};
pub use error::ControlError;
pub use kill::{matching, matching_human, Kill, KillOrigin, KillTarget};
pub use kill_store::{kill_db_path, KillStore};
pub use notify::{notify_all, socket_dir, Listener};
pub use records::{kill_record, resume_record, trip_record};
pub use store::ControlStore;
