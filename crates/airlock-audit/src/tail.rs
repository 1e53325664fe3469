//! Following the trail: records after a known seq (a webhook's cursor), and a session's
//! recent calls (what an approver sees beside a held call).

use rusqlite::ToSql;

use crate::error::AuditError;
use crate::query::{decode, QUERY_HEAD};
use crate::record::StoredRecord;
use crate::store::AuditStore;
use crate::vocab::RecordKind;

impl AuditStore {
    /// Up to `limit` records with seq greater than `after_seq` whose kind is one of `kinds`
    /// (all kinds when empty), oldest first, so a follower can keep `seq` of the last one
    /// handled as its cursor.
    pub fn records_after(
        &self,
        after_seq: u64,
        kinds: &[RecordKind],
        limit: usize,
    ) -> Result<Vec<StoredRecord>, AuditError> {
        let after = i64::try_from(after_seq).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut sql = String::from(QUERY_HEAD);
        sql.push_str(" AND r.seq > ?");
        let names: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
        let mut params: Vec<&dyn ToSql> = vec![&after];
        if !names.is_empty() {
            sql.push_str(" AND r.kind IN (");
            sql.push_str(&vec!["?"; names.len()].join(", "));
            sql.push(')');
            params.extend(names.iter().map(|k| k as &dyn ToSql));
        }
        sql.push_str(" ORDER BY r.seq LIMIT ?");
        params.push(&limit);
        self.run(&sql, &params)
    }

    /// The newest `limit` `call` records of `session` (with their results), oldest first.
    pub fn session_calls(
        &self,
        session: &str,
        limit: usize,
    ) -> Result<Vec<StoredRecord>, AuditError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let sql =
            format!("{QUERY_HEAD} AND r.session = ? AND r.kind = ? ORDER BY r.seq DESC LIMIT ?");
        let mut out = self.run(&sql, &[&session, &RecordKind::Call.as_str(), &limit])?;
        out.reverse();
        Ok(out)
    }

    fn run(&self, sql: &str, params: &[&dyn ToSql]) -> Result<Vec<StoredRecord>, AuditError> {
        let mut stmt = self
            .conn
            .prepare_cached(sql)
            .map_err(AuditError::sqlite("prepare query"))?;
        stmt.query_map(params, decode)
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(AuditError::sqlite("run query"))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use crate::{AuditStore, Durability, NewRecord, RecordKind};

    #[test]
    fn records_after_a_cursor_by_kind_and_a_sessions_calls() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = AuditStore::open(&dir.path().join("a.db"), Durability::Process).unwrap();
        let recs = [
            NewRecord::now(RecordKind::Call).session("s1").target("a"),
            NewRecord::now(RecordKind::Kill),
            NewRecord::now(RecordKind::Call).session("s2").target("b"),
            NewRecord::now(RecordKind::Approval),
            NewRecord::now(RecordKind::Call).session("s1").target("c"),
        ];
        store.append(&recs).unwrap();
        let seqs = |after, k: &[RecordKind], limit| {
            store
                .records_after(after, k, limit)
                .unwrap()
                .into_iter()
                .map(|r| r.seq)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            seqs(0, &[RecordKind::Kill, RecordKind::Approval], 10),
            [2, 4]
        );
        assert_eq!(seqs(2, &[RecordKind::Kill, RecordKind::Approval], 10), [4]);
        assert_eq!(seqs(0, &[], 2), [1, 2]);
        assert_eq!(seqs(5, &[], 10), Vec::<u64>::new());
        let targets: Vec<_> = store
            .session_calls("s1", 10)
            .unwrap()
            .into_iter()
            .map(|r| r.target.unwrap())
            .collect();
        assert_eq!(targets, ["a", "c"]);
        assert_eq!(store.session_calls("s1", 1).unwrap()[0].seq, 5);
    }
}
