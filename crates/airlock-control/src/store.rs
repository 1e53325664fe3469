//! `ControlStore`: the kill store (its own file, see the `kill_store` module),
//! loop-detection counters in the audit database file (own table, WAL), budget
//! counters in the per-agent journals beside it (see the `journal` module), and
//! the in-memory breaker cache in front of both.

use std::cell::{RefCell, RefMut};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use airlock_audit::Durability;
use rusqlite::{params, Connection, OpenFlags, TransactionBehavior};

use crate::cache::{EventCache, EventRow, ALL_AGENTS, RESET_CLASS};
use crate::error::ControlError;
use crate::journal::Journals;
use crate::kill::{Kill, KillTarget};
use crate::kill_store::KillStore;
use crate::pending::{Pending, INSERT_EVENT};

/// How long a writer waits for another process's transaction before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Loop-detection rows are written behind, at most this late (and on drop).
pub(crate) const FLUSH_AFTER: Duration = Duration::from_millis(100);
/// Or once this many are pending.
const FLUSH_ROWS: usize = 512;
/// Old counter rows are deleted at most this often.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// Loop detection re-reads other processes' rows at most this often.
pub(crate) const LOOP_REFRESH: Duration = Duration::from_millis(100);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS breaker_events (
    id INTEGER PRIMARY KEY,
    agent TEXT NOT NULL,
    class TEXT NOT NULL,
    time_ns INTEGER NOT NULL,
    calls INTEGER NOT NULL,
    items INTEGER NOT NULL,
    key TEXT NULL,
    origin TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS breaker_events_time ON breaker_events(time_ns);
";

/// Kill state and breaker counters. One per process (or thread); many
/// processes can share one file.
#[derive(Debug)]
pub struct ControlStore {
    /// Kills, in a file of their own so a kill never queues behind the audit trail's writers.
    kills: KillStore,
    conn: Connection,
    path: PathBuf,
    /// Tags this store's rows so the delta query skips what is already cached.
    origin: String,
    cache: RefCell<EventCache>,
    /// Budget counters (exact across processes; see `crate::journal`).
    journals: RefCell<Journals>,
    pending: Pending,
    pending_since: Option<Instant>,
    last_prune: Option<Instant>,
}

impl ControlStore {
    /// Opens (creating if needed) the control tables in `db` with
    /// process-crash durability (`synchronous=NORMAL`).
    pub fn open(db: &Path) -> Result<ControlStore, ControlError> {
        ControlStore::open_with(db, Durability::Process)
    }

    /// Opens with the given durability (use the config's `[audit] durability`).
    pub fn open_with(db: &Path, durability: Durability) -> Result<ControlStore, ControlError> {
        let conn = Connection::open_with_flags(
            db,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|source| ControlError::Open {
            path: db.to_owned(),
            source,
        })?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(ControlError::sqlite("set busy_timeout"))?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .map_err(ControlError::sqlite("set journal_mode=WAL"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(ControlError::Corrupt(format!(
                "journal_mode is {mode}, not wal"
            )));
        }
        let sync = match durability {
            Durability::Process => "NORMAL",
            Durability::PowerLoss => "FULL",
        };
        conn.pragma_update(None, "synchronous", sync)
            .map_err(ControlError::sqlite("set synchronous"))?;
        conn.execute_batch(&format!("BEGIN IMMEDIATE;{SCHEMA}COMMIT;"))
            .map_err(ControlError::sqlite("create control tables"))?;
        let mut r = [0u8; 8];
        crate::auth::random_bytes(&mut r)?;
        Ok(ControlStore {
            kills: KillStore::open_with(db, durability)?,
            conn,
            path: db.to_owned(),
            origin: format!("{}-{}", std::process::id(), hex::encode(r)),
            cache: RefCell::new(EventCache::default()),
            journals: RefCell::new(Journals::new(db, durability)),
            pending: Pending::default(),
            pending_since: None,
            last_prune: None,
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

    /// Records a kill (see [`KillStore::kill`]).
    pub fn kill(
        &mut self,
        target: KillTarget,
        reason: &str,
        by: &str,
    ) -> Result<Kill, ControlError> {
        self.kills.kill(target, reason, by)
    }

    /// Ends every active kill of exactly `target` (`All` ends only kills of
    /// everything) and returns how many. Resuming an agent (or everything)
    /// also starts its breaker counters afresh, so a paused agent is not
    /// paused again by the calls that tripped it.
    pub fn resume(&mut self, target: &KillTarget, by: &str) -> Result<usize, ControlError> {
        let now = airlock_audit::now_unix_ns();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(ControlError::sqlite("begin resume"))?;
        let reset_agent = match target {
            KillTarget::Agent(a) => Some(a.as_str()),
            KillTarget::All => Some(ALL_AGENTS),
            _ => None,
        };
        let reset = reset_agent.map(|agent| EventRow {
            agent: agent.to_owned(),
            class: RESET_CLASS.to_owned(),
            time_ns: now,
            calls: 0,
            items: 0,
            key: None,
        });
        let cache = self.cache.get_mut();
        // The counters first, the kill last: if the resume then fails, the counters start
        // afresh early while the agent is still stopped, which lets nothing through.
        if reset_agent.is_some() {
            let agent = reset_agent.filter(|a| *a != ALL_AGENTS);
            self.journals.get_mut().reset(agent, now, cache)?;
        }
        let rows: Vec<EventRow> = reset.into_iter().collect();
        write_rows(&tx, &rows, None, &self.origin, cache)?;
        tx.commit().map_err(ControlError::sqlite("commit resume"))?;
        for r in &rows {
            cache.apply(r);
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

    // === breaker events ===

    /// Reads other processes' new rows into the cache; without `force`, only
    /// if the last read is older than `max_age`.
    pub(crate) fn refresh(&self, force: bool, max_age: Duration) -> Result<(), ControlError> {
        let mut cache = self
            .cache
            .try_borrow_mut()
            .map_err(|_| ControlError::Busy)?;
        if !force && cache.refreshed.is_some_and(|t| t.elapsed() < max_age) {
            return Ok(());
        }
        load_delta(&self.conn, &self.origin, &mut cache)
    }

    /// The cache, for reading after a refresh.
    pub(crate) fn cache(&self) -> Result<RefMut<'_, EventCache>, ControlError> {
        self.cache.try_borrow_mut().map_err(|_| ControlError::Busy)
    }

    /// Writes `rows` durably now (with anything pending), then caches them.
    pub(crate) fn write_now(&mut self, rows: &[EventRow]) -> Result<(), ControlError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(ControlError::sqlite("begin breaker write"))?;
        let cache = self.cache.get_mut();
        write_rows(&tx, rows, Some(&self.pending), &self.origin, cache)?;
        tx.commit()
            .map_err(ControlError::sqlite("commit breaker write"))?;
        self.pending.clear();
        self.pending_since = None;
        for r in rows {
            cache.apply(r);
        }
        Ok(())
    }

    /// Caches `rows` now and writes them within [`FLUSH_AFTER`].
    pub(crate) fn write_later(&mut self, rows: Vec<EventRow>) -> Result<(), ControlError> {
        let cache = self.cache.get_mut();
        let width = cache.rate_bucket_ns;
        for r in rows {
            cache.apply(&r);
            self.pending.push(r, width);
        }
        let since = *self.pending_since.get_or_insert_with(Instant::now);
        if self.pending.len() >= FLUSH_ROWS || since.elapsed() >= FLUSH_AFTER {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes pending loop-detection rows now.
    pub fn flush(&mut self) -> Result<(), ControlError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.write_now(&[])
    }

    /// Runs `f` under `agent`'s journal lock, after reading every other
    /// process's budget rows of the agent: the budget rows `f` returns are
    /// appended before the lock is let go, so no other process can slip a call
    /// in between the check and the count and budgets hold across processes.
    /// Loop-detection rows `f` returns are written behind. Journal rows older
    /// than `cutoff_ns` (outside every window) may be dropped.
    pub(crate) fn budget_step<T>(
        &mut self,
        agent: &str,
        cutoff_ns: i64,
        f: impl FnOnce(&EventCache) -> (T, Vec<EventRow>),
    ) -> Result<T, ControlError> {
        let cache = self.cache.get_mut();
        let (out, loops) = self
            .journals
            .get_mut()
            .with_agent(agent, cache, cutoff_ns, |c| {
                let (out, rows) = f(c);
                let (budget, loops): (Vec<EventRow>, Vec<EventRow>) =
                    rows.into_iter().partition(|r| !r.class.starts_with('!'));
                ((out, loops), budget)
            })?;
        if !loops.is_empty() {
            self.write_later(loops)?;
        }
        Ok(out)
    }

    /// Reads `agent`'s budget rows that other processes appended into the cache.
    pub(crate) fn sync_budgets(&self, agent: &str) -> Result<(), ControlError> {
        let mut cache = self.cache()?;
        let mut journals = self
            .journals
            .try_borrow_mut()
            .map_err(|_| ControlError::Busy)?;
        journals.sync(agent, &mut cache)
    }

    /// Reads every agent's budget rows into the cache (for `airlock status`).
    pub(crate) fn sync_all_budgets(&self) -> Result<(), ControlError> {
        let mut cache = self.cache()?;
        let mut journals = self
            .journals
            .try_borrow_mut()
            .map_err(|_| ControlError::Busy)?;
        journals.sync_all(&mut cache)
    }

    /// Deletes counter rows older than `cutoff_ns` (outside every window) and
    /// forgets them in memory.
    pub fn prune(&mut self, cutoff_ns: i64) -> Result<usize, ControlError> {
        let n = self
            .conn
            .execute(
                // The newest row is kept so ids never go back: delta queries rely on it.
                "DELETE FROM breaker_events WHERE time_ns <= ?1 \
                 AND id < (SELECT max(id) FROM breaker_events)",
                [cutoff_ns],
            )
            .map_err(ControlError::sqlite("prune breaker events"))?;
        self.cache.get_mut().prune(cutoff_ns);
        Ok(n)
    }

    /// [`ControlStore::prune`] at most once per [`PRUNE_EVERY`].
    pub(crate) fn maybe_prune(&mut self, cutoff_ns: i64) -> Result<(), ControlError> {
        if self.last_prune.is_some_and(|t| t.elapsed() < PRUNE_EVERY) {
            return Ok(());
        }
        self.last_prune = Some(Instant::now());
        self.prune(cutoff_ns).map(drop)
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
        self.pending.len()
    }
}

impl Drop for ControlStore {
    fn drop(&mut self) {
        if let Err(e) = self.flush() {
            tracing::warn!(error = %e, "could not write pending breaker counters");
        }
    }
}

/// Inside a write transaction: reads other processes' rows, inserts ours, and
/// moves `last_id` past them all. Nobody else can write in between, so every
/// id up to ours has been seen and the next delta query starts after it.
fn write_rows(
    tx: &Connection,
    rows: &[EventRow],
    pending: Option<&Pending>,
    origin: &str,
    cache: &mut EventCache,
) -> Result<(), ControlError> {
    load_delta(tx, origin, cache)?;
    insert_rows(tx, rows, origin)?;
    if let Some(p) = pending {
        p.insert(tx, origin)?;
    }
    if !(rows.is_empty() && pending.is_none_or(Pending::is_empty)) {
        cache.last_id = cache.last_id.max(tx.last_insert_rowid());
    }
    Ok(())
}

fn insert_rows(conn: &Connection, rows: &[EventRow], origin: &str) -> Result<(), ControlError> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut stmt = conn
        .prepare_cached(INSERT_EVENT)
        .map_err(ControlError::sqlite("prepare breaker insert"))?;
    for r in rows {
        stmt.execute(params![
            r.agent,
            r.class,
            r.time_ns,
            i64::try_from(r.calls).unwrap_or(i64::MAX),
            i64::try_from(r.items).unwrap_or(i64::MAX),
            r.key,
            origin
        ])
        .map_err(ControlError::sqlite("insert breaker event"))?;
    }
    Ok(())
}

/// Applies rows other processes committed since the last read.
fn load_delta(conn: &Connection, origin: &str, cache: &mut EventCache) -> Result<(), ControlError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT id, agent, class, time_ns, calls, items, key FROM breaker_events \
             WHERE id > ?1 AND origin != ?2 ORDER BY id",
        )
        .map_err(ControlError::sqlite("prepare breaker delta"))?;
    let mut rows = stmt
        .query(params![cache.last_id, origin])
        .map_err(ControlError::sqlite("query breaker delta"))?;
    while let Some(r) = rows
        .next()
        .map_err(ControlError::sqlite("read breaker delta"))?
    {
        let id: i64 = r.get(0).map_err(ControlError::sqlite("read breaker id"))?;
        cache.last_id = cache.last_id.max(id);
        // Borrowed from the row: a delta of many rows allocates nothing for names seen before.
        let read = |e| ControlError::sqlite("read breaker event")(e);
        let text = |i: usize| -> Result<Option<&str>, ControlError> {
            r.get_ref(i)
                .map_err(read)?
                .as_str_or_null()
                .map_err(|e| ControlError::Corrupt(format!("breaker event {id}: {e}")))
        };
        let missing = || ControlError::Corrupt(format!("breaker event {id}: a NULL name"));
        let class = text(2)?.ok_or_else(missing)?;
        if !class.starts_with('!') {
            // Budget rows live in the journals; a row here is from an older build.
            continue;
        }
        let calls: i64 = r.get(4).map_err(read)?;
        let items: i64 = r.get(5).map_err(read)?;
        cache.apply_parts(
            text(1)?.ok_or_else(missing)?,
            class,
            text(6)?,
            r.get(3).map_err(read)?,
            u64::try_from(calls)
                .map_err(|_| ControlError::Corrupt(format!("breaker event {id}: calls {calls}")))?,
            u64::try_from(items)
                .map_err(|_| ControlError::Corrupt(format!("breaker event {id}: items {items}")))?,
        );
    }
    cache.refreshed = Some(Instant::now());
    Ok(())
}
