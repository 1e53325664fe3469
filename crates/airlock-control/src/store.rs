//! `ControlStore`: the kill store (a file of its own, see the `kill_store`
//! module), breaker counters (budgets and loop detection) in the per-agent
//! journals beside the audit database (see the `journal` module), and the
//! in-memory breaker cache in front of them.
//!
//! Builds before the journals held loop detection kept its rows in a
//! `breaker_events` table. The first breaker step of a store on such a file
//! carries the rows still counting (after the agent's last reset) into the
//! journals and drops the table, in one write transaction, so no process
//! carries them twice; an older build opening the file again creates an empty
//! table, carried over the same way next time.

use std::cell::{Cell, RefCell, RefMut};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use airlock_audit::Durability;
use rusqlite::{params, Connection, Transaction, TransactionBehavior};

use crate::breakers::Trip;
use crate::cache::{EventCache, Row, FANOUT_PREFIX, RATE_CLASS, RESET_CLASS};
use crate::error::ControlError;
use crate::journal::{Journals, LOOP_REFRESH};
use crate::kill::{Kill, KillTarget};
use crate::kill_store::KillStore;

/// Cached counters outside every window are forgotten at most this often.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// [`PRUNE_EVERY`] is checked once per this many calls.
const PRUNE_CHECK_CALLS: u32 = 64;
/// The `agent` of a reset row of `breaker_events` that applied to every agent.
const LEGACY_ALL_AGENTS: &str = "*";

/// Kill state and breaker counters. One per process (or thread); many
/// processes can share one file.
#[derive(Debug)]
pub struct ControlStore {
    /// Kills, in a file of their own so a kill never queues behind the audit trail's writers.
    kills: KillStore,
    /// The audit database, used only to carry an older build's loop rows over.
    conn: Connection,
    path: PathBuf,
    cache: RefCell<EventCache>,
    /// Breaker counters (exact across processes; see `crate::journal`).
    journals: RefCell<Journals>,
    /// Whether rows of an older build's `breaker_events` were looked for.
    carried_over: Cell<bool>,
    last_prune: Option<Instant>,
    /// Calls since the store opened, for [`ControlStore::maybe_prune`].
    prune_calls: u32,
}

impl ControlStore {
    /// Opens the control state of the audit database `db` (creating the kill
    /// file if needed) with process-crash durability (`synchronous=NORMAL`).
    pub fn open(db: &Path) -> Result<ControlStore, ControlError> {
        ControlStore::open_with(db, Durability::Process)
    }

    /// Opens with the given durability (use the config's `[audit] durability`).
    pub fn open_with(db: &Path, durability: Durability) -> Result<ControlStore, ControlError> {
        let conn = airlock_sqlite::open_wal(db, durability)?;
        Ok(ControlStore {
            kills: KillStore::open_with(db, durability)?,
            conn,
            path: db.to_owned(),
            cache: RefCell::new(EventCache::default()),
            journals: RefCell::new(Journals::new(db, durability)),
            carried_over: Cell::new(false),
            last_prune: None,
            prune_calls: 0,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    // === kills ===

    /// The kill store, for acting on kills alone ([`crate::kill_and_announce`]).
    pub fn kill_store(&mut self) -> &mut KillStore {
        &mut self.kills
    }

    /// Records a human's kill (see [`KillStore::kill`]).
    pub fn kill(
        &mut self,
        target: KillTarget,
        reason: &str,
        by: &str,
    ) -> Result<Kill, ControlError> {
        self.kills.kill(target, reason, by)
    }

    /// Records a breaker's pause of `agent` (see [`KillStore::pause`]).
    pub fn pause(&mut self, agent: &str, trip: &Trip) -> Result<Kill, ControlError> {
        self.kills.pause(agent, trip)
    }

    /// Ends every active kill of exactly `target` (`All` ends only kills of
    /// everything) and returns how many. Resuming an agent (or everything)
    /// also starts its breaker counters afresh, so a paused agent is not
    /// paused again by the calls that tripped it.
    pub fn resume(&mut self, target: &KillTarget, by: &str) -> Result<usize, ControlError> {
        let now = airlock_audit::now_unix_ns();
        // The counters first, the kill last: if the resume then fails, the counters start
        // afresh early while the agent is still stopped, which lets nothing through.
        let reset_agent = match target {
            KillTarget::Agent(a) => Some(Some(a.as_str())),
            KillTarget::All => Some(None),
            _ => None,
        };
        if let Some(agent) = reset_agent {
            self.carry_over()?;
            self.journals
                .get_mut()
                .reset(agent, now, self.cache.get_mut())?;
        }
        self.kills.resume(target, by, now)
    }

    /// Kills in force, oldest first. An error here means "deny everything".
    pub fn active(&self) -> Result<Vec<Kill>, ControlError> {
        self.kills.active()
    }

    /// The newest `limit` kills, resumed or not, newest first (for `status`).
    pub fn recent(&self, limit: usize) -> Result<Vec<Kill>, ControlError> {
        self.kills.recent(limit)
    }

    // === breaker counters ===

    /// Reads other processes' new rows of `agent` into the cache (and appends
    /// this one's pending rows of it); without `force`, only if the last read
    /// is older than [`LOOP_REFRESH`].
    pub(crate) fn refresh(&self, agent: &str, force: bool) -> Result<(), ControlError> {
        self.carry_over()?;
        let max_age = if force { Duration::ZERO } else { LOOP_REFRESH };
        let mut cache = self.cache()?;
        self.journals()?.refresh(agent, &mut cache, max_age)
    }

    /// The cache, for reading after a refresh.
    pub(crate) fn cache(&self) -> Result<RefMut<'_, EventCache>, ControlError> {
        self.cache.try_borrow_mut().map_err(|_| ControlError::Busy)
    }

    fn journals(&self) -> Result<RefMut<'_, Journals>, ControlError> {
        self.journals
            .try_borrow_mut()
            .map_err(|_| ControlError::Busy)
    }

    /// Caches `agent`'s loop-detection rows now and appends them to its
    /// journal behind (see `crate::journal`).
    pub(crate) fn write_later(
        &mut self,
        agent: &str,
        rows: &[Row<'_>],
    ) -> Result<(), ControlError> {
        self.carry_over()?;
        let cache = self.cache.get_mut();
        self.journals.get_mut().write_later(agent, cache, rows)
    }

    /// Appends pending loop-detection rows now.
    pub fn flush(&mut self) -> Result<(), ControlError> {
        let cache = self.cache.get_mut();
        self.journals.get_mut().flush(cache)
    }

    /// Runs `decide` under `agent`'s journal lock, after reading every other
    /// process's rows of the agent: the rows `rows` names for its outcome are
    /// appended (with the agent's pending loop-detection rows, in one write)
    /// before the lock is let go, so no other process can slip a call in
    /// between the check and the count and budgets hold across processes.
    /// Journal rows older than `cutoff_ns` (outside every window) may be dropped.
    pub(crate) fn step<T>(
        &mut self,
        agent: &str,
        cutoff_ns: i64,
        decide: impl FnOnce(&EventCache) -> T,
        rows: impl Fn(&T, &mut dyn FnMut(&Row<'_>)),
    ) -> Result<T, ControlError> {
        self.carry_over()?;
        let cache = self.cache.get_mut();
        self.journals
            .get_mut()
            .step(agent, cache, cutoff_ns, decide, rows)
    }

    /// Reads `agent`'s rows that other processes appended into the cache.
    pub(crate) fn sync(&self, agent: &str) -> Result<(), ControlError> {
        self.carry_over()?;
        let mut cache = self.cache()?;
        self.journals()?.sync(agent, &mut cache)
    }

    /// Reads every agent's rows into the cache (for `airlock status`).
    pub(crate) fn sync_all(&self) -> Result<(), ControlError> {
        self.carry_over()?;
        let mut cache = self.cache()?;
        self.journals()?.sync_all(&mut cache)
    }

    /// Forgets cached counters older than `cutoff_ns` (outside every window)
    /// and returns how many; the journals drop them when they are compacted.
    pub fn prune(&mut self, cutoff_ns: i64) -> Result<usize, ControlError> {
        Ok(self.cache.get_mut().prune(cutoff_ns))
    }

    /// [`ControlStore::prune`] at most once per [`PRUNE_EVERY`] (the clock is
    /// read every [`PRUNE_CHECK_CALLS`] calls).
    pub(crate) fn maybe_prune(&mut self, cutoff_ns: i64) -> Result<(), ControlError> {
        self.prune_calls = self.prune_calls.wrapping_add(1);
        if self.last_prune.is_some()
            && (!self.prune_calls.is_multiple_of(PRUNE_CHECK_CALLS)
                || self.last_prune.is_some_and(|t| t.elapsed() < PRUNE_EVERY))
        {
            return Ok(());
        }
        self.last_prune = Some(Instant::now());
        self.prune(cutoff_ns).map(drop)
    }

    /// Once per store: moves the loop-detection rows an older build left in
    /// `breaker_events` into the journals and drops the table (see the module
    /// docs). Rows before their agent's last reset no longer count and are
    /// left behind; so are budget rows, which older builds already kept in
    /// the journals.
    fn carry_over(&self) -> Result<(), ControlError> {
        if self.carried_over.get() {
            return Ok(());
        }
        if legacy_table(&self.conn)? {
            let tx = Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)
                .map_err(ControlError::sqlite("begin carrying breaker events over"))?;
            // Another process may have carried them over while this one waited.
            if legacy_table(&tx)? {
                let mut cache = self.cache()?;
                let mut journals = self.journals()?;
                for (agent, rows) in legacy_rows(&tx)? {
                    let rows: Vec<Row<'_>> = rows
                        .iter()
                        .map(|(class, key, time_ns, calls)| Row {
                            class,
                            key: key.as_deref(),
                            time_ns: *time_ns,
                            calls: *calls,
                            items: 0,
                        })
                        .collect();
                    journals.append(&agent, &mut cache, &rows)?;
                    tracing::info!(
                        agent,
                        rows = rows.len(),
                        "loop-detection rows carried over from breaker_events"
                    );
                }
                tx.execute_batch("DROP TABLE breaker_events")
                    .map_err(ControlError::sqlite("drop breaker_events"))?;
            }
            tx.commit()
                .map_err(ControlError::sqlite("commit carrying breaker events over"))?;
        }
        self.carried_over.set(true);
        Ok(())
    }

    #[cfg(test)]
    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;

impl ControlStore {
    /// Rows waiting to be written (loop detection), for tests.
    #[cfg(test)]
    pub(crate) fn pending_len(&self) -> usize {
        self.journals.borrow().pending_len()
    }
}

impl Drop for ControlStore {
    fn drop(&mut self) {
        if let Err(e) = self.flush() {
            tracing::warn!(error = %e, "could not write pending breaker counters");
        }
    }
}

/// Whether the file has a `breaker_events` table (from an older build).
fn legacy_table(conn: &Connection) -> Result<bool, ControlError> {
    conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'breaker_events'",
        [],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n > 0)
    .map_err(ControlError::sqlite("look for breaker_events"))
}

/// Loop-detection rows of `breaker_events` (class, key, time, calls) per
/// agent, those before the agent's (or everyone's) last reset left out.
type LegacyRows = BTreeMap<String, Vec<(String, Option<String>, i64, u64)>>;

fn legacy_rows(conn: &Connection) -> Result<LegacyRows, ControlError> {
    let mut resets: BTreeMap<String, i64> = BTreeMap::new();
    let mut stmt = conn
        .prepare("SELECT agent, max(time_ns) FROM breaker_events WHERE class = ?1 GROUP BY agent")
        .map_err(ControlError::sqlite("read breaker_events"))?;
    let rows = stmt
        .query_map([RESET_CLASS], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
        })
        .map_err(ControlError::sqlite("read breaker_events"))?;
    for row in rows {
        let (agent, t) = row.map_err(ControlError::sqlite("read breaker_events"))?;
        resets.insert(agent, t);
    }
    let all = resets.get(LEGACY_ALL_AGENTS).copied().unwrap_or(i64::MIN);
    let mut stmt = conn
        .prepare(
            "SELECT id, agent, class, time_ns, calls, key FROM breaker_events \
             WHERE class = ?1 OR substr(class, 1, ?2) = ?3 ORDER BY id",
        )
        .map_err(ControlError::sqlite("read breaker_events"))?;
    let rows = stmt
        .query_map(
            params![RATE_CLASS, FANOUT_PREFIX.len() as i64, FANOUT_PREFIX],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, Option<String>>(5)?,
                ))
            },
        )
        .map_err(ControlError::sqlite("read breaker_events"))?;
    let mut out = LegacyRows::new();
    for row in rows {
        let (id, agent, class, time_ns, calls, key) =
            row.map_err(ControlError::sqlite("read breaker_events"))?;
        let calls = u64::try_from(calls)
            .map_err(|_| ControlError::Corrupt(format!("breaker event {id}: calls {calls}")))?;
        let reset = resets.get(&agent).copied().unwrap_or(i64::MIN).max(all);
        let fanout = class != RATE_CLASS;
        // A fan-out row names its target by digest; anything else is not a row to carry.
        let keyed = key
            .as_deref()
            .is_some_and(|k| !k.is_empty() && k.bytes().all(|b| b.is_ascii_hexdigit()));
        if time_ns <= reset || fanout != keyed || agent == LEGACY_ALL_AGENTS {
            continue;
        }
        out.entry(agent)
            .or_default()
            .push((class, key, time_ns, calls));
    }
    Ok(out)
}
