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

use std::path::{Path, PathBuf};

use airlock_audit::Durability;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};

use crate::error::ControlError;
use crate::kill::{Kill, KillTarget};

const SCHEMA: &str = "
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
        let mut conn = crate::sqlite::open_wal(&path, durability)?;
        // A read first: once the table exists (every open but the first), opening takes no
        // write lock, so a kill never waits for another process's open.
        if !has_kills_table(&conn)? {
            create(&mut conn, db)?;
        }
        Ok(KillStore { conn, path })
    }

    /// The kill file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records a kill and returns it once COMMIT has returned: a crash after this call cannot
    /// lose it. Notify gateways afterwards ([`crate::notify_all`]).
    pub fn kill(
        &mut self,
        target: KillTarget,
        reason: &str,
        by: &str,
    ) -> Result<Kill, ControlError> {
        let now = airlock_audit::now_unix_ns();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(ControlError::sqlite("begin kill"))?;
        tx.execute(
            "INSERT INTO kills (scope, target, reason, by_human, created_ns) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![target.scope(), target.target(), reason, by, now],
        )
        .map_err(ControlError::sqlite("insert kill"))?;
        let id = tx.last_insert_rowid();
        tx.commit().map_err(ControlError::sqlite("commit kill"))?;
        Ok(Kill {
            id,
            target,
            reason: reason.to_owned(),
            by: by.to_owned(),
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
        kills_where(&self.conn, "WHERE resumed_ns IS NULL ORDER BY id", [])
    }

    /// The newest `limit` kills, resumed or not, newest first (for `status`).
    pub fn recent(&self, limit: usize) -> Result<Vec<Kill>, ControlError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        kills_where(&self.conn, "ORDER BY id DESC LIMIT ?1", [limit])
    }

    /// A lock held elsewhere fails at once rather than after [`crate::sqlite::BUSY_TIMEOUT`].
    #[cfg(test)]
    fn busy_timeout_for_tests(&mut self, t: std::time::Duration) {
        self.conn.busy_timeout(t).unwrap_or_default();
    }
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
fn create(conn: &mut Connection, db: &Path) -> Result<(), ControlError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(ControlError::sqlite("begin creating the kill table"))?;
    // Another process may have created it while this one waited for the lock.
    if has_kills_table(&tx)? {
        return Ok(());
    }
    tx.execute_batch(SCHEMA)
        .map_err(ControlError::sqlite("create the kill table"))?;
    let old = legacy_kills(db)?;
    {
        let mut insert = tx
            .prepare(&format!(
                "INSERT INTO kills ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
            ))
            .map_err(ControlError::sqlite("prepare the kill import"))?;
        for k in &old {
            insert
                .execute(params![
                    k.id,
                    k.target.scope(),
                    k.target.target(),
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
    if let Err(e) = mark_legacy(db, &kill_db_path(db)) {
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
/// when the database or the table does not exist.
fn legacy_kills(db: &Path) -> Result<Vec<Kill>, ControlError> {
    if !db.exists() {
        return Ok(Vec::new());
    }
    let conn = crate::sqlite::open(db, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    if !has_kills_table(&conn)? {
        return Ok(Vec::new());
    }
    kills_where(
        &conn,
        &format!("WHERE scope != '{MOVED_SCOPE}' ORDER BY id"),
        [],
    )
}

/// Leaves the marker row in the audit database's old `kills` table (creating it as older builds
/// would), once. Only when the audit database exists: this never creates it.
fn mark_legacy(db: &Path, moved_to: &Path) -> Result<(), ControlError> {
    if !db.exists() {
        return Ok(());
    }
    let conn = crate::sqlite::open(db, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
    let legacy_schema = SCHEMA
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

fn kills_where<P: rusqlite::Params>(
    conn: &Connection,
    tail: &str,
    p: P,
) -> Result<Vec<Kill>, ControlError> {
    let sql = format!("SELECT {COLUMNS} FROM kills {tail}");
    let mut stmt = conn
        .prepare_cached(&sql)
        .map_err(ControlError::sqlite("prepare kills query"))?;
    let rows = stmt
        .query_map(p, |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, i64>(5)?,
                r.get::<_, Option<i64>>(6)?,
                r.get::<_, Option<String>>(7)?,
            ))
        })
        .map_err(ControlError::sqlite("query kills"))?;
    let mut out = Vec::new();
    for row in rows {
        let (id, scope, target, reason, by, created_ns, resumed_ns, resumed_by) =
            row.map_err(ControlError::sqlite("read kill"))?;
        out.push(Kill {
            id,
            target: KillTarget::from_columns(&scope, &target)
                .map_err(|e| ControlError::Corrupt(format!("kill {id}: {e}")))?,
            reason,
            by,
            created_ns,
            resumed_ns,
            resumed_by,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn the_kill_file_sits_beside_the_audit_database() {
        assert_eq!(
            kill_db_path(Path::new("/var/lib/airlock/audit.db")),
            Path::new("/var/lib/airlock/audit.db.kills")
        );
    }

    #[test]
    fn kills_of_an_older_build_are_copied_in_once() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("audit.db");
        // The audit database as an older build left it: kills in its own `kills` table.
        let old = Connection::open(&db).unwrap();
        old.execute_batch(SCHEMA).unwrap();
        old.execute_batch(
            "INSERT INTO kills VALUES (3, 'agent', 'bot', 'runaway', 'alice', 10, NULL, NULL);
             INSERT INTO kills VALUES (7, 'tool', 'corp/acl_set', 'bug', 'bob', 20, 30, 'bob');",
        )
        .unwrap();
        let mut s = KillStore::open(&db).unwrap();
        let active = s.active().unwrap();
        assert_eq!(active.len(), 1);
        assert_eq!(
            (active[0].id, &active[0].target, active[0].by.as_str()),
            (3, &KillTarget::Agent("bot".into()), "alice")
        );
        let recent = s.recent(10).unwrap();
        assert_eq!(recent.len(), 2);
        assert_eq!(recent[0].resumed_by.as_deref(), Some("bob"));
        // New ids continue after the old ones; a second open copies nothing again.
        let k = s.kill(KillTarget::All, "stop", "alice").unwrap();
        assert_eq!(k.id, 8);
        old.execute(
            "INSERT INTO kills VALUES (9, 'all', '*', 'late', 'x', 40, NULL, NULL)",
            [],
        )
        .unwrap();
        drop(s);
        let again = KillStore::open(&db).unwrap();
        assert_eq!(again.recent(10).unwrap().len(), 3);
        // The old table now holds the marker, which an older build's reader refuses.
        let marker: (String, String) = old
            .query_row(
                "SELECT scope, reason FROM kills WHERE resumed_ns IS NULL AND scope = ?1",
                [MOVED_SCOPE],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert!(marker.1.contains("audit.db.kills"), "{}", marker.1);
        assert!(KillTarget::from_columns(&marker.0, "*").is_err());
        // A kill file made again (deleted by hand) copies the old kills, never the marker.
        drop(again);
        for suffix in ["", "-wal", "-shm"] {
            let mut p = kill_db_path(&db).into_os_string();
            p.push(suffix);
            let _ = std::fs::remove_file(p);
        }
        let remade = KillStore::open(&db).unwrap();
        assert!(remade
            .recent(10)
            .unwrap()
            .iter()
            .all(|k| k.target != KillTarget::All || k.reason == "late"));
        assert_eq!(remade.recent(10).unwrap().len(), 3);
    }

    #[test]
    fn a_fresh_audit_database_gets_the_marker_too() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("audit.db");
        drop(Connection::open(&db).unwrap());
        drop(KillStore::open(&db).unwrap());
        let old = Connection::open(&db).unwrap();
        let n: i64 = old
            .query_row(
                "SELECT count(*) FROM kills WHERE scope = ?1",
                [MOVED_SCOPE],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 1);
    }

    #[test]
    fn a_corrupt_legacy_row_fails_the_open() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("audit.db");
        let old = Connection::open(&db).unwrap();
        old.execute_batch(SCHEMA).unwrap();
        old.execute(
            "INSERT INTO kills VALUES (1, 'planet', 'x', 'r', 'a', 1, NULL, NULL)",
            [],
        )
        .unwrap();
        let err = KillStore::open(&db).unwrap_err().to_string();
        assert!(err.contains("kill 1"), "{err}");
        // Nothing was created half-way: the next open tries the import again.
        assert!(KillStore::open(&db).is_err());
    }

    #[test]
    fn a_kill_does_not_wait_for_the_audit_databases_write_lock() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("audit.db");
        let mut busy = crate::ControlStore::open(&db).unwrap();
        drop(busy.kill_store().kill(KillTarget::All, "x", "a").unwrap());
        busy.kill_store().resume(&KillTarget::All, "a", 1).unwrap();
        // Another process folding audit records holds the audit database's write lock.
        let writer = Connection::open(&db).unwrap();
        writer.execute_batch("BEGIN IMMEDIATE").unwrap();
        let mut s = KillStore::open(&db).unwrap();
        s.busy_timeout_for_tests(std::time::Duration::ZERO);
        let k = s
            .kill(KillTarget::Agent("bot".into()), "r", "alice")
            .unwrap();
        assert_eq!(busy.active().unwrap(), vec![k]);
        writer.execute_batch("ROLLBACK").unwrap();
    }

    #[test]
    fn a_store_that_cannot_be_read_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        // A directory is not a database.
        std::fs::create_dir(kill_db_path(&dir.path().join("d.db"))).unwrap();
        assert!(KillStore::open(&dir.path().join("d.db")).is_err());
        let s = KillStore::open(&dir.path().join("audit.db")).unwrap();
        s.conn.execute_batch("DROP TABLE kills").unwrap();
        assert!(s.active().is_err());
        assert!(s.recent(5).is_err());
    }

    #[test]
    fn a_corrupt_kill_row_is_an_error_not_a_skip() {
        let dir = tempfile::tempdir().unwrap();
        let s = KillStore::open(&dir.path().join("audit.db")).unwrap();
        s.conn
            .execute_batch(
                "INSERT INTO kills (scope, target, reason, by_human, created_ns) \
                 VALUES ('planet', 'x', 'r', 'a', 1)",
            )
            .unwrap();
        assert!(matches!(s.active(), Err(ControlError::Corrupt(_))));
    }

    #[test]
    fn no_audit_database_means_nothing_to_copy() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("audit.db");
        let s = KillStore::open(&db).unwrap();
        assert!(s.active().unwrap().is_empty());
        assert!(
            !db.exists(),
            "opening the kill file does not create the audit database"
        );
    }
}
