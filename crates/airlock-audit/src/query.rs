//! Reading records back: filters, and the result of each call joined in.

use rusqlite::types::{Type, ValueRef};
use rusqlite::{Row, ToSql};
use serde_json::Value;

use crate::error::AuditError;
use crate::record::StoredRecord;
use crate::store::AuditStore;

/// Which records to read. Every filter is an exact match; unset filters match all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    pub agent: Option<String>,
    /// Tool name, resource URI or prompt name.
    pub target: Option<String>,
    /// Records at or after this time.
    pub since_unix_ns: Option<i64>,
    pub decision: Option<String>,
    pub kind: Option<String>,
    /// At most this many records: the most recent ones (still returned in seq order).
    pub limit: Option<usize>,
}

// The first `result` record pointing at a call is that call's outcome; a
// subquery (not a plain join) so a duplicate result never duplicates the call.
pub(crate) const QUERY_HEAD: &str =
    "SELECT r.seq, r.time_ns, r.kind, r.agent, r.on_behalf_of, r.task, \
     r.session, r.server, r.method, r.target, r.request_id, r.ref_seq, r.args_digest, \
     r.args_redacted, r.decision, r.reasons, r.policy_digest, r.status, r.duration_us, r.detail, \
     r.prev_hash, r.hash, res.status, res.duration_us \
     FROM records r LEFT JOIN records res ON r.kind = 'call' AND res.seq = \
     (SELECT min(x.seq) FROM records x WHERE x.ref_seq = r.seq AND x.kind = 'result') \
     WHERE 1 = 1";

impl AuditStore {
    /// Records matching `q`, ordered by seq; `call` records carry their result.
    pub fn query(&self, q: &Query) -> Result<Vec<StoredRecord>, AuditError> {
        let mut sql = String::from(QUERY_HEAD);
        let mut params: Vec<&dyn ToSql> = Vec::new();
        let filters: [(&str, Option<&dyn ToSql>); 5] = [
            (
                " AND r.agent = ?",
                q.agent.as_ref().map(|v| v as &dyn ToSql),
            ),
            (
                " AND r.target = ?",
                q.target.as_ref().map(|v| v as &dyn ToSql),
            ),
            (
                " AND r.time_ns >= ?",
                q.since_unix_ns.as_ref().map(|v| v as &dyn ToSql),
            ),
            (
                " AND r.decision = ?",
                q.decision.as_ref().map(|v| v as &dyn ToSql),
            ),
            (" AND r.kind = ?", q.kind.as_ref().map(|v| v as &dyn ToSql)),
        ];
        for (clause, value) in filters {
            if let Some(v) = value {
                sql.push_str(clause);
                params.push(v);
            }
        }
        // Newest first so LIMIT keeps the most recent; reversed below.
        sql.push_str(" ORDER BY r.seq DESC LIMIT ?");
        let limit: i64 = q.limit.map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX));
        params.push(&limit);

        let mut stmt = self
            .conn
            .prepare_cached(&sql)
            .map_err(AuditError::sqlite("prepare query"))?;
        let mut out = stmt
            .query_map(params.as_slice(), decode)
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(AuditError::sqlite("run query"))?;
        out.reverse();
        Ok(out)
    }
}

pub(crate) fn decode(row: &Row<'_>) -> rusqlite::Result<StoredRecord> {
    Ok(StoredRecord {
        seq: get_u64(row, 0)?.unwrap_or(0),
        time_unix_ns: row.get(1)?,
        kind: row.get(2)?,
        agent: row.get(3)?,
        on_behalf_of: row.get(4)?,
        task: row.get(5)?,
        session: row.get(6)?,
        server: row.get(7)?,
        method: row.get(8)?,
        target: row.get(9)?,
        request_id: row.get(10)?,
        ref_seq: get_u64(row, 11)?,
        args_digest: row.get(12)?,
        args_redacted: get_json(row, 13)?,
        decision: row.get(14)?,
        reasons: get_json::<Vec<String>>(row, 15)?.unwrap_or_default(),
        policy_digest: row.get(16)?,
        status: row.get(17)?,
        duration_us: get_u64(row, 18)?,
        detail: get_json::<Value>(row, 19)?,
        prev_hash: row.get(20)?,
        hash: row.get(21)?,
        result_status: row.get(22)?,
        result_duration_us: get_u64(row, 23)?,
    })
}

fn get_u64(row: &Row<'_>, idx: usize) -> rusqlite::Result<Option<u64>> {
    let v: Option<i64> = row.get(idx)?;
    v.map(|n| u64::try_from(n).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(idx, n)))
        .transpose()
}

fn get_json<T: serde::de::DeserializeOwned>(
    row: &Row<'_>,
    idx: usize,
) -> rusqlite::Result<Option<T>> {
    match row.get_ref(idx)? {
        ValueRef::Null => Ok(None),
        ValueRef::Text(t) => serde_json::from_slice(t)
            .map(Some)
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(idx, Type::Text, Box::new(e))),
        other => Err(rusqlite::Error::InvalidColumnType(
            idx,
            String::from("json"),
            other.data_type(),
        )),
    }
}
