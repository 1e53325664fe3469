//! `KillStore`: the kill rows, in a SQLite file of their own beside the audit database
//! (`<db>.kills`, WAL).
//!
//! Why a file of its own: every gateway folds its audit spool into the audit database and
//! keeps its breaker rows there, so that file's single write lock is busy, and a commit there
//! can also be the one that runs a WAL checkpoint (an `fsync`). A kill queued behind those
//! reached the gateways up to ~180 ms late. Here the only writers are kills, resumes and
//! breaker pauses, so a kill commits at once and every gateway reads it without waiting.
//!
//! Kills written by older builds (the `kills` table of the audit database) are copied in, once,
//! in the same transaction that creates this file's table: no kill in force is lost by an
//! upgrade. Then that old table gets a kill row of scope [`MOVED_SCOPE`], which older builds
//! cannot read: an older gateway left running on the same database fails closed (it stops
//! everything) instead of missing the kills written here.
//!
//! Each row says who issued it in its `origin` column ([`KillOrigin`]): a breaker's pause is
//! told from a human's kill by that, never by the reason's words. Files of builds before the
//! column get it on open, in one write transaction: their rows by `airlock` whose reason starts
//! with `breaker:` were pauses, every other row a human's kill. A trigger applies the same rule
//! to rows an older build still running on the file inserts afterwards (it leaves `origin`
//! NULL). Opening a file already migrated only reads, like opening any current file.

use std::path::{Path, PathBuf};

use airlock_audit::Durability;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use crate::breakers::Trip;
use crate::error::ControlError;
use crate::kill::{Kill, KillOrigin, KillTarget};

/// The table as builds before the `origin` column made it; still the shape of the audit
/// database's old `kills` table.
const LEGACY_SCHEMA: &str = "
CREATE TABLE kills (
    id INTEGER PRIMARY KEY,
    scope TEXT NOT NULL,
    target TEXT NOT NULL,
    reason TEXT NOT NULL,
    by_human TEXT NOT NULL,
    created_ns INTEGER NOT NULL,
    resumed_ns INTEGER NULL,
    resumed_by TEXT NULL
);
CREATE INDEX kills_active ON kills(scope, target) WHERE resumed_ns IS NULL;
";

/// The origin of a row written without one (by a build before the column): `by` airlock with
/// a `breaker:<class>` reason was a pause, anything else a human's kill. `substr`, not `LIKE`,
/// which ignores case.
const LEGACY_ORIGIN: &str = "CASE WHEN by_human = 'airlock' AND substr(reason, 1, 8) = 'breaker:' \
     AND length(reason) > 8 THEN reason ELSE 'human' END";

/// What the `origin` column adds to [`LEGACY_SCHEMA`]: the column, the origin of the rows
/// already there, and the trigger that gives one to rows an older build inserts later.
fn origin_migration() -> String {
    format!(
        "ALTER TABLE kills ADD COLUMN origin TEXT NULL;
         UPDATE kills SET origin = {LEGACY_ORIGIN};
         CREATE TRIGGER kills_origin_of_older_builds AFTER INSERT ON kills
             WHEN NEW.origin IS NULL
             BEGIN UPDATE kills SET origin = {LEGACY_ORIGIN} WHERE id = NEW.id; END;"
    )
}

/// The scope of the marker row left in the audit database's old `kills` table.
pub(crate) const MOVED_SCOPE: &str = "moved";

const COLUMNS: &str = "id, scope, target, reason, by_human, created_ns, resumed_ns, resumed_by";

/// The kill file of the audit database `db`: `<db>.kills`.
pub fn kill_db_path(db: &Path) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push(".kills");
    PathBuf::from(s)
}

/// Kills in force and past ones. One per process (or thread); many processes can share the
/// file.
#[derive(Debug)]
pub struct KillStore {
    conn: Connection,
    path: PathBuf,
}

impl KillStore {
    /// Opens (creating if needed) the kill file of the audit database `db` with
    /// process-crash durability.
    pub fn open(db: &Path) -> Result<KillStore, ControlError> {
        KillStore::open_with(db, Durability::Process)
    }

    /// Opens with the given durability (use the config's `[audit] durability`): with
    /// `PowerLoss`, a kill's commit is synced to disk before it returns.
    pub fn open_with(db: &Path, durability: Durability) -> Result<KillStore, ControlError> {
        let path = kill_db_path(db);
        let mut conn = airlock_sqlite::open_wal(&path, durability)?;
        // A read first: once the table is current (every open but the first), opening takes
        // no write lock, so a kill never waits for another process's open.
        match table_shape(&conn)? {
            Shape::Current => {}
            Shape::Missing => create(&mut conn, db, durability)?,
            Shape::WithoutOrigin => add_origin(&mut conn)?,
        }
        Ok(KillStore { conn, path })
    }

    /// The kill file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records a human's kill and returns it once COMMIT has returned: a crash after this
    /// call cannot lose it. Notify gateways afterwards ([`crate::notify_all`]).
    pub fn kill(
        &mut self,
        target: KillTarget,
        reason: &str,
        by: &str,
    ) -> Result<Kill, ControlError> {
        self.insert(target, reason, by, KillOrigin::Human)
    }

    /// Records the pause of `agent` that `trip` causes (by `airlock`, reason
    /// `breaker:<class>`), committed like [`KillStore::kill`].
    pub fn pause(&mut self, agent: &str, trip: &Trip) -> Result<Kill, ControlError> {
        self.insert(
            KillTarget::Agent(agent.to_owned()),
            &trip.reason().to_string(),
            "airlock",
            KillOrigin::Breaker {
                class: trip.class.clone(),
            },
        )
    }

    fn insert(
        &mut self,
        target: KillTarget,
        reason: &str,
        by: &str,
        origin: KillOrigin,
    ) -> Result<Kill, ControlError> {
        let now = airlock_audit::now_unix_ns();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(ControlError::sqlite("begin kill"))?;
        tx.execute(
            "INSERT INTO kills (scope, target, reason, by_human, created_ns, origin) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                target.scope(),
                target.target(),
                reason,
                by,
                now,
                origin.to_column()
            ],
        )
        .map_err(ControlError::sqlite("insert kill"))?;
        let id = tx.last_insert_rowid();
        tx.commit().map_err(ControlError::sqlite("commit kill"))?;
        Ok(Kill {
            id,
            target,
            reason: reason.to_owned(),
            by: by.to_owned(),
            origin,
            created_ns: now,
            resumed_ns: None,
            resumed_by: None,
        })
    }

    /// Ends every active kill of exactly `target` (`All` ends only kills of everything) at
    /// `now_ns`, committed before it returns; returns how many ended. Breaker counters are
    /// not touched here ([`crate::ControlStore::resume`] starts them afresh).
    pub fn resume(
        &mut self,
        target: &KillTarget,
        by: &str,
        now_ns: i64,
    ) -> Result<usize, ControlError> {
        self.conn
            .execute(
                "UPDATE kills SET resumed_ns = ?1, resumed_by = ?2 \
                 WHERE scope = ?3 AND target = ?4 AND resumed_ns IS NULL",
                params![now_ns, by, target.scope(), target.target()],
            )
            .map_err(ControlError::sqlite("resume kills"))
    }

    /// Kills in force, oldest first. An error here means "deny everything".
    pub fn active(&self) -> Result<Vec<Kill>, ControlError> {
        kills_where(&self.conn, "WHERE resumed_ns IS NULL ORDER BY id", [])?
            .into_iter()
            .map(Row::into_kill)
            .collect()
    }

    /// The newest `limit` kills, resumed or not, newest first (for `status`).
    pub fn recent(&self, limit: usize) -> Result<Vec<Kill>, ControlError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        kills_where(&self.conn, "ORDER BY id DESC LIMIT ?1", [limit])?
            .into_iter()
            .map(Row::into_kill)
            .collect()
    }

    /// A lock held elsewhere fails at once rather than after [`airlock_sqlite::BUSY_TIMEOUT`].
    #[cfg(test)]
    fn busy_timeout_for_tests(&mut self, t: std::time::Duration) {
        self.conn.busy_timeout(t).unwrap_or_default();
    }
}

/// How far the kill file's table is.
enum Shape {
    /// No table yet.
    Missing,
    /// A table of a build before the `origin` column.
    WithoutOrigin,
    Current,
}

fn table_shape(conn: &Connection) -> Result<Shape, ControlError> {
    let (columns, origin): (i64, i64) = conn
        .query_row(
            "SELECT count(*), count(*) FILTER (WHERE name = 'origin') \
             FROM pragma_table_info('kills')",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(ControlError::sqlite("read the kill table's columns"))?;
    Ok(match (columns, origin) {
        (0, _) => Shape::Missing,
        (_, 0) => Shape::WithoutOrigin,
        _ => Shape::Current,
    })
}

/// Adds the `origin` column to a table of an older build (see the module docs), once.
fn add_origin(conn: &mut Connection) -> Result<(), ControlError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(ControlError::sqlite("begin adding the kill origin"))?;
    // Another process may have done it while this one waited for the lock.
    if !matches!(table_shape(&tx)?, Shape::WithoutOrigin) {
        return Ok(());
    }
    tx.execute_batch(&origin_migration())
        .map_err(ControlError::sqlite("add the kill origin"))?;
    tx.commit()
        .map_err(ControlError::sqlite("commit the kill origin"))?;
    tracing::info!("kill file: the origin of each kill is now a column of its own");
    Ok(())
}

fn has_kills_table(conn: &Connection) -> Result<bool, ControlError> {
    conn.query_row(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'kills'",
        [],
        |_| Ok(()),
    )
    .optional()
    .map(|found| found.is_some())
    .map_err(ControlError::sqlite("look for the kills table"))
}

/// Creates the table and copies in the kills an older build kept in the audit database, in
/// one transaction: a process that sees the table sees every old kill too.
fn create(conn: &mut Connection, db: &Path, durability: Durability) -> Result<(), ControlError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(ControlError::sqlite("begin creating the kill table"))?;
    // Another process may have created it while this one waited for the lock.
    if !matches!(table_shape(&tx)?, Shape::Missing) {
        return Ok(());
    }
    tx.execute_batch(LEGACY_SCHEMA)
        .and_then(|()| tx.execute_batch(&origin_migration()))
        .map_err(ControlError::sqlite("create the kill table"))?;
    let old = legacy_kills(db)?;
    {
        let mut insert = tx
            .prepare(&format!(
                "INSERT INTO kills ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
            ))
            .map_err(ControlError::sqlite("prepare the kill import"))?;
        // Without an origin: the trigger gives each the one its build meant.
        for k in &old {
            insert
                .execute(params![
                    k.id,
                    k.scope,
                    k.target,
                    k.reason,
                    k.by,
                    k.created_ns,
                    k.resumed_ns,
                    k.resumed_by
                ])
                .map_err(ControlError::sqlite(
                    "import a kill from the audit database",
                ))?;
        }
    }
    tx.commit()
        .map_err(ControlError::sqlite("commit the kill table"))?;
    if let Err(e) = mark_legacy(db, &kill_db_path(db), durability) {
        tracing::warn!(
            error = %e,
            db = %db.display(),
            "cannot mark the old kill table; an older Airlock on this database would not see new kills"
        );
    }
    if !old.is_empty() {
        tracing::info!(
            kills = old.len(),
            from = %db.display(),
            "copied the kills of an older build into the kill file"
        );
    }
    Ok(())
}

/// The `kills` table of the audit database, where builds before the kill file kept them; none
/// when the database or the table does not exist. Each row's target is checked: a row that
/// cannot be read fails the import.
fn legacy_kills(db: &Path) -> Result<Vec<Row>, ControlError> {
    if !db.exists() {
        return Ok(Vec::new());
    }
    let conn = airlock_sqlite::open_read_only(db)?;
    if !has_kills_table(&conn)? {
        return Ok(Vec::new());
    }
    let rows = legacy_rows(
        &conn,
        &format!("WHERE scope != '{MOVED_SCOPE}' ORDER BY id"),
    )?;
    for r in &rows {
        r.target()?;
    }
    Ok(rows)
}

/// Leaves the marker row in the audit database's old `kills` table (creating it as older builds
/// would), once. Only when the audit database exists: this never creates it.
fn mark_legacy(db: &Path, moved_to: &Path, durability: Durability) -> Result<(), ControlError> {
    if !db.exists() {
        return Ok(());
    }
    let conn = airlock_sqlite::open_wal(db, durability)?;
    let legacy_schema = LEGACY_SCHEMA
        .replace("CREATE TABLE", "CREATE TABLE IF NOT EXISTS")
        .replace("CREATE INDEX", "CREATE INDEX IF NOT EXISTS");
    conn.execute_batch(&format!("BEGIN IMMEDIATE;{legacy_schema}"))
        .map_err(ControlError::sqlite("create the old kill table"))?;
    let reason = format!(
        "kills moved to {}; this Airlock is older than the database",
        moved_to.display()
    );
    let marked = conn
        .execute(
            "INSERT INTO kills (scope, target, reason, by_human, created_ns) \
             SELECT ?1, '*', ?2, 'airlock', ?3 \
             WHERE NOT EXISTS (SELECT 1 FROM kills WHERE scope = ?1)",
            params![MOVED_SCOPE, reason, airlock_audit::now_unix_ns()],
        )
        .and_then(|_| conn.execute_batch("COMMIT"));
    if let Err(e) = marked {
        let _ = conn.execute_batch("ROLLBACK");
        return Err(ControlError::sqlite("mark the old kill table")(e));
    }
    Ok(())
}

/// One row as stored. `origin` is `None` only in the audit database's old table.
struct Row {
    id: i64,
    scope: String,
    target: String,
    reason: String,
    by: String,
    created_ns: i64,
    resumed_ns: Option<i64>,
    resumed_by: Option<String>,
    origin: Option<String>,
}

impl Row {
    fn target(&self) -> Result<KillTarget, ControlError> {
        KillTarget::from_columns(&self.scope, &self.target)
            .map_err(|e| ControlError::Corrupt(format!("kill {}: {e}", self.id)))
    }

    /// The kill; a row this build cannot read is an error, never skipped (it may stop
    /// something).
    fn into_kill(self) -> Result<Kill, ControlError> {
        let target = self.target()?;
        let origin = self
            .origin
            .as_deref()
            .and_then(KillOrigin::from_column)
            .ok_or_else(|| {
                ControlError::Corrupt(format!(
                    "kill {}: unknown origin {:?}",
                    self.id, self.origin
                ))
            })?;
        Ok(Kill {
            id: self.id,
            target,
            reason: self.reason,
            by: self.by,
            origin,
            created_ns: self.created_ns,
            resumed_ns: self.resumed_ns,
            resumed_by: self.resumed_by,
        })
    }
}

fn kills_where<P: rusqlite::Params>(
    conn: &Connection,
    tail: &str,
    p: P,
) -> Result<Vec<Row>, ControlError> {
    rows(
        conn,
        &format!("SELECT {COLUMNS}, origin FROM kills {tail}"),
        p,
    )
}

/// Rows of the audit database's old table, which has no `origin`.
fn legacy_rows(conn: &Connection, tail: &str) -> Result<Vec<Row>, ControlError> {
    rows(
        conn,
        &format!("SELECT {COLUMNS}, NULL FROM kills {tail}"),
        [],
    )
}

fn rows<P: rusqlite::Params>(conn: &Connection, sql: &str, p: P) -> Result<Vec<Row>, ControlError> {
    let mut stmt = conn
        .prepare_cached(sql)
        .map_err(ControlError::sqlite("prepare kills query"))?;
    let rows = stmt
        .query_map(p, |r| {
            Ok(Row {
                id: r.get(0)?,
                scope: r.get(1)?,
                target: r.get(2)?,
                reason: r.get(3)?,
                by: r.get(4)?,
                created_ns: r.get(5)?,
                resumed_ns: r.get(6)?,
                resumed_by: r.get(7)?,
                origin: r.get(8)?,
            })
        })
        .map_err(ControlError::sqlite("query kills"))?;
    rows.collect::<Result<Vec<Row>, _>>()
        .map_err(ControlError::sqlite("read kill"))
}

#[cfg(test)]
#[path = "kill_store_tests.rs"]
mod tests;
