//! The SQLite store: schema, pragmas, and the append path.

use std::path::Path;

use airlock_sqlite::Durability;
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OptionalExtension, ToSql, TransactionBehavior};

use crate::chain::{chain_hash, write_canonical, write_str_array, Field, GENESIS};
use crate::checkpoint::Checkpointer;
use crate::error::AuditError;
use crate::record::{Appended, Head, NewRecord};

/// The schema this build writes and reads.
pub(crate) const SCHEMA_VERSION: i64 = 1;

/// The hashed columns, in hash order (see [`crate::chain`]), then the chain links.
pub(crate) const COLUMNS: [&str; 22] = [
    "seq",
    "time_ns",
    "kind",
    "agent",
    "on_behalf_of",
    "task",
    "session",
    "server",
    "method",
    "target",
    "request_id",
    "ref_seq",
    "args_digest",
    "args_redacted",
    "decision",
    "reasons",
    "policy_digest",
    "status",
    "duration_us",
    "detail",
    "prev_hash",
    "hash",
];
pub(crate) const HASHED: usize = 20;
pub(crate) const SELECT_COLUMNS: &str = "seq, time_ns, kind, agent, on_behalf_of, task, session, \
     server, method, target, request_id, ref_seq, args_digest, args_redacted, decision, reasons, \
     policy_digest, status, duration_us, detail, prev_hash, hash";

const INSERT_SQL: &str = "INSERT INTO records (seq, time_ns, kind, agent, on_behalf_of, task, \
     session, server, method, target, request_id, ref_seq, args_digest, args_redacted, decision, \
     reasons, policy_digest, status, duration_us, detail, prev_hash, hash) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, \
     ?20, ?21, ?22)";

const HEAD_SQL: &str = "SELECT seq, hash FROM records ORDER BY seq DESC LIMIT 1";

// `seq` is an explicit INTEGER PRIMARY KEY (the rowid): the writer assigns
// head+1 inside its transaction, so the chain order is the key order.
// The triggers stop accidental edits through SQLite; they are no defence
// against someone with the file, which is what `verify` is for.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY,
    time_ns INTEGER NOT NULL,
    kind TEXT NOT NULL,
    agent TEXT,
    on_behalf_of TEXT,
    task TEXT,
    session TEXT,
    server TEXT,
    method TEXT,
    target TEXT,
    request_id TEXT,
    ref_seq INTEGER,
    args_digest TEXT,
    args_redacted TEXT,
    decision TEXT,
    reasons TEXT,
    policy_digest TEXT,
    status TEXT,
    duration_us INTEGER,
    detail TEXT,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS records_agent ON records(agent);
CREATE INDEX IF NOT EXISTS records_target ON records(target);
CREATE INDEX IF NOT EXISTS records_time ON records(time_ns);
CREATE INDEX IF NOT EXISTS records_ref ON records(ref_seq) WHERE ref_seq IS NOT NULL;
CREATE TRIGGER IF NOT EXISTS records_no_update BEFORE UPDATE ON records
    BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;
CREATE TRIGGER IF NOT EXISTS records_no_delete BEFORE DELETE ON records
    BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;
";

/// One audit trail in one SQLite file. Not `Sync`: give each thread (or
/// process) its own store; the chain stays single and valid across them.
#[derive(Debug)]
pub struct AuditStore {
    pub(crate) conn: Connection,
    read_only: bool,
    /// Writers only; `None` also when it could not start (SQLite then checkpoints inline).
    checkpointer: Option<Checkpointer>,
    /// Reused text buffers for the JSON columns, so appends do not allocate them per record.
    bufs: Buffers,
}

#[derive(Debug, Default)]
struct Buffers {
    args: String,
    reasons: String,
    detail: String,
}

impl AuditStore {
    /// Opens (creating if needed) the trail at `path`: WAL, the given
    /// durability (see `airlock_sqlite::open_wal`), a small page cache, and the schema.
    pub fn open(path: &Path, durability: Durability) -> Result<AuditStore, AuditError> {
        let conn = airlock_sqlite::open_wal(path, durability)?;
        configure_common(&conn)?;
        // Bounds the WAL file left behind after a checkpoint.
        conn.pragma_update(None, "journal_size_limit", 8 * 1024 * 1024)
            .map_err(AuditError::sqlite("set journal_size_limit"))?;
        let mut store = AuditStore {
            conn,
            read_only: false,
            checkpointer: None,
            bufs: Buffers::default(),
        };
        store.init_schema(path)?;
        store.checkpointer = Checkpointer::start(path);
        if store.checkpointer.is_some() {
            store
                .conn
                .pragma_update(None, "wal_autocheckpoint", 0)
                .map_err(AuditError::sqlite("set wal_autocheckpoint"))?;
        }
        Ok(store)
    }

    /// Opens an existing trail for reading only (query, head, verify).
    pub fn open_read_only(path: &Path) -> Result<AuditStore, AuditError> {
        let conn = airlock_sqlite::open_read_only(path)?;
        configure_common(&conn)?;
        check_schema_version(&conn, path)?;
        Ok(AuditStore {
            conn,
            read_only: true,
            checkpointer: None,
            bufs: Buffers::default(),
        })
    }

    fn init_schema(&mut self, path: &Path) -> Result<(), AuditError> {
        // IMMEDIATE: two processes opening a fresh file at once take turns.
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(AuditError::sqlite("begin schema transaction"))?;
        tx.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);")
            .map_err(AuditError::sqlite("create schema_version"))?;
        let found: Option<i64> = tx
            .query_row("SELECT max(version) FROM schema_version", [], |r| r.get(0))
            .map_err(AuditError::sqlite("read schema_version"))?;
        match found {
            None => {
                tx.execute_batch(SCHEMA)
                    .map_err(AuditError::sqlite("create schema"))?;
                tx.execute(
                    "INSERT INTO schema_version (version) VALUES (?1)",
                    [SCHEMA_VERSION],
                )
                .map_err(AuditError::sqlite("write schema_version"))?;
            }
            Some(SCHEMA_VERSION) => {}
            Some(other) => {
                return Err(AuditError::UnsupportedSchema {
                    found: other,
                    supported: SCHEMA_VERSION,
                })
            }
        }
        tx.commit().map_err(AuditError::sqlite("commit schema"))?;
        check_schema_version(&self.conn, path)
    }

    /// Appends `records` in ONE transaction (a group commit) and returns the
    /// seq and hash given to each, in order. Returns only after COMMIT; on any
    /// error nothing of the batch is stored.
    ///
    /// The chain head is read inside `BEGIN IMMEDIATE`, so several processes
    /// appending to one file continue one chain.
    pub fn append(&mut self, records: &[NewRecord]) -> Result<Vec<Appended>, AuditError> {
        let refs: Vec<&NewRecord> = records.iter().collect();
        self.append_refs(&refs, &[])
    }

    /// [`AuditStore::append`] over borrowed records (the spool's folding thread owns them).
    /// `links[j] = Some(i)` sets record `j`'s `ref_seq` to the seq record `i` (earlier in the
    /// same batch) gets: a result folded in the same commit as its call.
    pub(crate) fn append_refs(
        &mut self,
        records: &[&NewRecord],
        links: &[Option<usize>],
    ) -> Result<Vec<Appended>, AuditError> {
        if self.read_only {
            return Err(AuditError::ReadOnly);
        }
        if records.is_empty() {
            return Ok(Vec::new());
        }
        for (index, r) in records.iter().enumerate() {
            validate(index, r)?;
        }
        let bufs = &mut self.bufs;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(AuditError::sqlite("begin append"))?;
        let (mut seq, mut prev) = match read_head(&tx)? {
            Some(h) => (h.seq, h.hash),
            None => (0, GENESIS.to_owned()),
        };
        let mut out: Vec<Appended> = Vec::with_capacity(records.len());
        {
            let mut insert = tx
                .prepare_cached(INSERT_SQL)
                .map_err(AuditError::sqlite("prepare insert"))?;
            for (index, r) in records.iter().enumerate() {
                seq += 1;
                let seq_i = to_i64(index, "seq", seq)?;
                let linked;
                let r: &NewRecord =
                    match links.get(index).copied().flatten().and_then(|i| out.get(i)) {
                        Some(target) => {
                            let mut copy = (*r).clone();
                            copy.ref_seq = Some(target.seq);
                            linked = copy;
                            &linked
                        }
                        None => r,
                    };
                let mut row = [Field::Null; 22];
                fill_fields(&mut row, seq_i, r, bufs, index)?;
                let hash = chain_hash(prev.as_bytes(), &row[..HASHED]);
                row[20] = Field::Text(prev.as_bytes());
                row[21] = Field::Text(hash.as_bytes());
                insert
                    .execute(rusqlite::params_from_iter(row.iter()))
                    .map_err(AuditError::sqlite("insert record"))?;
                out.push(Appended {
                    seq,
                    hash: hash.clone(),
                });
                prev = hash;
            }
        }
        tx.commit().map_err(AuditError::sqlite("commit append"))?;
        if let Some(c) = &self.checkpointer {
            c.poke();
        }
        Ok(out)
    }

    /// The seq of a record already in the chain that `r` describes (same time, kind, session
    /// and request id), if any: how spool recovery tells folded records from lost ones.
    pub fn find_seq(&self, r: &NewRecord) -> Result<Option<u64>, AuditError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT seq FROM records WHERE time_ns = ?1 AND kind = ?2 \
                 AND session IS ?3 AND request_id IS ?4 AND agent IS ?5 LIMIT 1",
            )
            .map_err(AuditError::sqlite("prepare find"))?;
        let found: Option<i64> = stmt
            .query_row(
                rusqlite::params![
                    r.time_unix_ns,
                    r.kind.as_str(),
                    r.session,
                    r.request_id,
                    r.agent
                ],
                |row| row.get(0),
            )
            .optional()
            .map_err(AuditError::sqlite("find record"))?;
        Ok(found.and_then(|s| u64::try_from(s).ok()))
    }

    /// The last record's seq and hash; `None` for an empty trail.
    pub fn head(&self) -> Result<Option<Head>, AuditError> {
        read_head(&self.conn)
    }

    /// How many records the trail holds.
    pub fn count(&self) -> Result<u64, AuditError> {
        let n: i64 = self
            .conn
            .prepare_cached("SELECT count(*) FROM records")
            .and_then(|mut s| s.query_row([], |r| r.get(0)))
            .map_err(AuditError::sqlite("count records"))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

/// What every connection, reader or writer, adds to the common opener's settings.
fn configure_common(conn: &Connection) -> Result<(), AuditError> {
    // 256 KiB page cache: the gateway must stay small when idle.
    conn.pragma_update(None, "cache_size", -256)
        .map_err(AuditError::sqlite("set cache_size"))?;
    Ok(())
}

fn check_schema_version(conn: &Connection, path: &Path) -> Result<(), AuditError> {
    let has_table: bool = conn
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version')",
            [],
            |r| r.get(0),
        )
        .map_err(AuditError::sqlite("read schema"))?;
    let found: Option<i64> = if has_table {
        conn.query_row("SELECT max(version) FROM schema_version", [], |r| r.get(0))
            .map_err(AuditError::sqlite("read schema_version"))?
    } else {
        None
    };
    match found {
        Some(SCHEMA_VERSION) => Ok(()),
        Some(other) => Err(AuditError::UnsupportedSchema {
            found: other,
            supported: SCHEMA_VERSION,
        }),
        None => Err(AuditError::NotAnAuditStore {
            path: path.to_owned(),
        }),
    }
}

fn read_head(conn: &Connection) -> Result<Option<Head>, AuditError> {
    let row: Option<(i64, String)> = conn
        .prepare_cached(HEAD_SQL)
        .and_then(|mut s| s.query_row([], |r| Ok((r.get(0)?, r.get(1)?))).optional())
        .map_err(AuditError::sqlite("read head"))?;
    row.map(|(seq, hash)| {
        let seq = u64::try_from(seq).map_err(|_| AuditError::Sqlite {
            context: "read head",
            source: rusqlite::Error::IntegralValueOutOfRange(0, seq),
        })?;
        Ok(Head { seq, hash })
    })
    .transpose()
}

pub(crate) fn validate(index: usize, r: &NewRecord) -> Result<(), AuditError> {
    if let Some(v) = r.ref_seq {
        to_i64(index, "ref_seq", v)?;
    }
    if let Some(v) = r.duration_us {
        to_i64(index, "duration_us", v)?;
    }
    Ok(())
}

fn to_i64(index: usize, field: &str, v: u64) -> Result<i64, AuditError> {
    i64::try_from(v).map_err(|_| AuditError::InvalidRecord {
        index,
        reason: format!("{field} {v} does not fit a signed 64-bit integer"),
    })
}

/// Fills the 20 hashed fields of `row` from `r`, in [`COLUMNS`] order.
fn fill_fields<'a>(
    row: &mut [Field<'a>; 22],
    seq: i64,
    r: &'a NewRecord,
    bufs: &'a mut Buffers,
    index: usize,
) -> Result<(), AuditError> {
    let Buffers {
        args,
        reasons,
        detail,
    } = bufs;
    let args = json_column(r.args_redacted.as_ref(), args);
    let detail = json_column(r.detail.as_ref(), detail);
    reasons.clear();
    let reasons = if r.reasons.is_empty() {
        None
    } else {
        write_str_array(&r.reasons, reasons);
        Some(reasons.as_str())
    };
    let ref_seq = r.ref_seq.map(|v| to_i64(index, "ref_seq", v)).transpose()?;
    let duration = r
        .duration_us
        .map(|v| to_i64(index, "duration_us", v))
        .transpose()?;
    *row = [
        Field::Int(seq),
        Field::Int(r.time_unix_ns),
        Field::Text(r.kind.as_str().as_bytes()),
        Field::opt_str(r.agent.as_deref()),
        Field::opt_str(r.on_behalf_of.as_deref()),
        Field::opt_str(r.task.as_deref()),
        Field::opt_str(r.session.as_deref()),
        Field::opt_str(r.server.as_deref()),
        Field::opt_str(r.method.as_deref()),
        Field::opt_str(r.target.as_deref()),
        Field::opt_str(r.request_id.as_deref()),
        Field::opt_int(ref_seq),
        Field::opt_str(r.args_digest.as_deref()),
        Field::opt_str(args),
        Field::opt_str(r.decision.map(|d| d.as_str())),
        Field::opt_str(reasons),
        Field::opt_str(r.policy_digest.as_deref()),
        Field::opt_str(r.status.map(|s| s.as_str())),
        Field::opt_int(duration),
        Field::opt_str(detail),
        Field::Null,
        Field::Null,
    ];
    Ok(())
}

fn json_column<'a>(v: Option<&serde_json::Value>, buf: &'a mut String) -> Option<&'a str> {
    buf.clear();
    let v = v?;
    write_canonical(v, buf);
    Some(buf.as_str())
}

impl ToSql for Field<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match *self {
            Field::Null => ValueRef::Null,
            Field::Int(i) => ValueRef::Integer(i),
            Field::Text(t) => ValueRef::Text(t),
        }))
    }
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
