//! Loop-detection rows waiting to be written behind, merged as they arrive:
//! one row per agent × rate bucket (calls summed, at the bucket's start) and
//! one per agent × fan-out class × target (the latest time). A busy agent
//! then writes a few rows per flush, not one per call, and a call whose row
//! merges into a pending one allocates nothing.

use hashbrown::HashMap;
use rusqlite::{params, Connection};

use crate::cache::{EventRow, FANOUT_PREFIX, RATE_CLASS};
use crate::error::ControlError;

pub(crate) const INSERT_EVENT: &str = "INSERT INTO breaker_events (agent, class, time_ns, calls, \
     items, key, origin) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";
/// Rate rows per INSERT statement: the agent and origin are bound once, each
/// row binds two integers.
const RATE_CHUNK: usize = 32;

#[derive(Debug, Default)]
pub(crate) struct Pending {
    /// Agent → (bucket start, calls), oldest first as calls come.
    rate: HashMap<String, Vec<(i64, u64)>>,
    /// Agent → fan-out class → target digest → latest time.
    fanout: HashMap<String, HashMap<String, HashMap<String, i64>>>,
    /// Any other row, as it came.
    other: Vec<EventRow>,
    /// Rows a flush would write.
    rows: usize,
}

impl Pending {
    /// Rows a flush would write.
    pub(crate) fn len(&self) -> usize {
        self.rows
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Adds `row`, merged into a pending one where it can be; `rate_bucket_ns`
    /// is the width of a rate bucket.
    pub(crate) fn push(&mut self, row: EventRow, rate_bucket_ns: i64) {
        if row.class == RATE_CLASS {
            let width = rate_bucket_ns.max(1);
            let start = row.time_ns - row.time_ns.rem_euclid(width);
            let buckets = self.rate.entry_ref(row.agent.as_str()).or_default();
            // The current bucket is almost always the last one.
            match buckets.iter_mut().rev().find(|b| b.0 == start) {
                Some(b) => b.1 = b.1.saturating_add(row.calls),
                None => {
                    buckets.push((start, row.calls));
                    self.rows += 1;
                }
            }
        } else if let (true, Some(key)) = (row.class.starts_with(FANOUT_PREFIX), &row.key) {
            let keys = self
                .fanout
                .entry_ref(row.agent.as_str())
                .or_default()
                .entry_ref(row.class.as_str())
                .or_default();
            match keys.get_mut(key.as_str()) {
                Some(t) => *t = (*t).max(row.time_ns),
                None => {
                    keys.insert(key.clone(), row.time_ns);
                    self.rows += 1;
                }
            }
        } else {
            self.other.push(row);
            self.rows += 1;
        }
    }

    /// Inserts every pending row with `origin` (inside the caller's transaction).
    pub(crate) fn insert(&self, conn: &Connection, origin: &str) -> Result<(), ControlError> {
        if self.is_empty() {
            return Ok(());
        }
        let mut stmt = conn
            .prepare_cached(INSERT_EVENT)
            .map_err(ControlError::sqlite("prepare breaker insert"))?;
        let mut put =
            |agent: &str, class: &str, time_ns: i64, calls: u64, items: u64, key: Option<&str>| {
                stmt.execute(params![
                    agent,
                    class,
                    time_ns,
                    i64::try_from(calls).unwrap_or(i64::MAX),
                    i64::try_from(items).unwrap_or(i64::MAX),
                    key,
                    origin
                ])
                .map(drop)
                .map_err(ControlError::sqlite("insert breaker event"))
            };
        for (agent, buckets) in &self.rate {
            insert_rate(conn, origin, agent, buckets)?;
        }
        for (agent, classes) in &self.fanout {
            for (class, keys) in classes {
                for (key, &time_ns) in keys {
                    put(agent, class, time_ns, 1, 0, Some(key))?;
                }
            }
        }
        for r in &self.other {
            put(
                &r.agent,
                &r.class,
                r.time_ns,
                r.calls,
                r.items,
                r.key.as_deref(),
            )?;
        }
        Ok(())
    }

    pub(crate) fn clear(&mut self) {
        self.rate.clear();
        self.fanout.clear();
        self.other.clear();
        self.rows = 0;
    }
}

/// One agent's rate buckets: [`RATE_CHUNK`] rows per statement, the rest one
/// by one, the agent and origin bound once per statement. A flush of a busy
/// gateway writes few rows, but one whose calls each start a bucket (calls
/// far apart, or simulated time) writes one per call, so the row must be cheap.
fn insert_rate(
    conn: &Connection,
    origin: &str,
    agent: &str,
    buckets: &[(i64, u64)],
) -> Result<(), ControlError> {
    let sql = |n: usize| {
        let mut sql = String::from(
            "INSERT INTO breaker_events (agent, class, time_ns, calls, items, key, origin) VALUES ",
        );
        for i in 0..n {
            let sep = if i == 0 { "" } else { "," };
            sql.push_str(&format!(
                "{sep}(?1, '!rate', ?{}, ?{}, 0, NULL, ?2)",
                3 + 2 * i,
                4 + 2 * i
            ));
        }
        sql
    };
    let run = |n: usize, rows: &[(i64, u64)]| -> rusqlite::Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut stmt = conn.prepare_cached(&sql(n))?;
        stmt.raw_bind_parameter(1, agent)?;
        stmt.raw_bind_parameter(2, origin)?;
        for chunk in rows.chunks(n) {
            for (i, &(start, calls)) in chunk.iter().enumerate() {
                stmt.raw_bind_parameter(3 + 2 * i, start)?;
                stmt.raw_bind_parameter(4 + 2 * i, i64::try_from(calls).unwrap_or(i64::MAX))?;
            }
            stmt.raw_execute()?;
        }
        Ok(())
    };
    let whole = buckets.len() - buckets.len() % RATE_CHUNK;
    run(RATE_CHUNK, &buckets[..whole])
        .and_then(|()| run(1, &buckets[whole..]))
        .map_err(ControlError::sqlite("insert breaker rate events"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn row(agent: &str, class: &str, time_ns: i64, key: Option<&str>) -> EventRow {
        EventRow {
            agent: agent.into(),
            class: class.into(),
            time_ns,
            calls: 1,
            items: 0,
            key: key.map(Into::into),
        }
    }

    #[test]
    fn rows_merge_per_bucket_and_per_target() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE breaker_events (id INTEGER PRIMARY KEY, agent TEXT, class TEXT, \
             time_ns INTEGER, calls INTEGER, items INTEGER, key TEXT, origin TEXT)",
        )
        .unwrap();
        let mut p = Pending::default();
        for t in [0, 3, 9, 10, 25, 4] {
            p.push(row("bot", RATE_CLASS, t, None), 10);
        }
        p.push(row("eve", RATE_CLASS, 1, None), 10);
        for (t, k) in [(5, "a"), (2, "a"), (7, "b")] {
            p.push(row("bot", "!fanout:corp/get", t, Some(k)), 10);
        }
        p.push(row("bot", "!reset", 8, None), 10);
        assert_eq!(p.len(), 7);
        p.insert(&conn, "me").unwrap();
        let mut stmt = conn
            .prepare("SELECT agent, class, time_ns, calls, key FROM breaker_events ORDER BY agent, class, time_ns")
            .unwrap();
        let got: Vec<(String, String, i64, i64, Option<String>)> = stmt
            .query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let want = [
            ("bot", "!fanout:corp/get", 5, 1, Some("a")),
            ("bot", "!fanout:corp/get", 7, 1, Some("b")),
            ("bot", "!rate", 0, 4, None),
            ("bot", "!rate", 10, 1, None),
            ("bot", "!rate", 20, 1, None),
            ("bot", "!reset", 8, 1, None),
            ("eve", "!rate", 0, 1, None),
        ];
        let want: Vec<(String, String, i64, i64, Option<String>)> = want
            .iter()
            .map(|w| (w.0.into(), w.1.into(), w.2, w.3, w.4.map(Into::into)))
            .collect();
        assert_eq!(got, want);
        p.clear();
        assert!(p.is_empty());

        // More buckets than one statement takes: whole chunks, then the rest.
        for t in 0..(2 * RATE_CHUNK as i64 + 5) {
            p.push(row("many", RATE_CLASS, t * 10 + 1, None), 10);
            p.push(row("many", RATE_CLASS, t * 10 + 2, None), 10);
        }
        p.insert(&conn, "me").unwrap();
        let (n, calls, first, last): (i64, i64, i64, i64) = conn
            .query_row(
                "SELECT count(*), sum(calls), min(time_ns), max(time_ns) FROM breaker_events \
                 WHERE agent = 'many' AND class = '!rate' AND origin = 'me' AND items = 0 AND key IS NULL",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .unwrap();
        assert_eq!((n, calls, first, last), (69, 138, 0, 680));
    }
}
