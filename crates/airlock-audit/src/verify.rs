//! Walking the chain: recompute every hash and name the first broken record.

use std::path::Path;

use rusqlite::types::ValueRef;
use serde::Serialize;

use crate::anchor::read_anchor;
use crate::chain::{chain_hash, Field, GENESIS};
use crate::error::AuditError;
use crate::record::Head;
use crate::store::{AuditStore, COLUMNS, HASHED, SELECT_COLUMNS};

/// The outcome of [`verify`]. `problem` is `None` when the chain is intact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Rows in the table.
    pub count: u64,
    /// The table's last row.
    pub head: Option<Head>,
    /// The anchor that was checked against, if one was given and exists.
    pub anchor: Option<Head>,
    /// The first thing wrong, in seq order.
    pub problem: Option<Problem>,
}

/// The first broken record and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub seq: u64,
    pub what: String,
}

/// Verifies the trail at `db`: every row's hash, its link to the row before,
/// seq continuity from 1, and — with an anchor — that the table still reaches
/// the anchored head with the anchored hash (tail truncation or rewrite).
///
/// Without an anchor, removing records from the *end* cannot be detected.
/// The walk reads one consistent snapshot, so it may run while others append.
pub fn verify(db: &Path, anchor: Option<&Path>) -> Result<VerifyReport, AuditError> {
    // Read the anchor first: anything anchored was committed before our snapshot.
    let anchor = match anchor {
        Some(p) => read_anchor(p)?,
        None => None,
    };
    let store = AuditStore::open_read_only(db)?;
    walk(&store, anchor)
}

fn walk(store: &AuditStore, anchor: Option<Head>) -> Result<VerifyReport, AuditError> {
    let sql = format!("SELECT {SELECT_COLUMNS} FROM records ORDER BY seq");
    let mut stmt = store
        .conn
        .prepare(&sql)
        .map_err(AuditError::sqlite("prepare verify"))?;
    let mut rows = stmt.query([]).map_err(AuditError::sqlite("run verify"))?;

    let mut count: u64 = 0;
    let mut expected: i64 = 1;
    let mut prev: Vec<u8> = GENESIS.as_bytes().to_vec();
    let mut problem: Option<Problem> = None;
    let mut last_seq: i64 = 0;

    while let Some(row) = rows.next().map_err(AuditError::sqlite("read row"))? {
        count += 1;
        let mut fields = [Field::Null; 22];
        let mut malformed: Option<&str> = None;
        for (i, f) in fields.iter_mut().enumerate() {
            let v = row.get_ref(i).map_err(AuditError::sqlite("read column"))?;
            *f = match v {
                ValueRef::Null => Field::Null,
                ValueRef::Integer(n) => Field::Int(n),
                ValueRef::Text(t) => Field::Text(t),
                ValueRef::Real(_) | ValueRef::Blob(_) => {
                    malformed.get_or_insert(COLUMNS[i]);
                    Field::Null
                }
            };
        }
        // `seq` is the rowid: always an integer.
        let seq = match fields[0] {
            Field::Int(n) => n,
            _ => expected,
        };
        let stored_prev = text_of(fields[20]);
        let stored_hash = text_of(fields[21]);

        if problem.is_none() {
            problem = check_row(RowCheck {
                seq,
                expected,
                malformed,
                fields: &fields,
                prev: &prev,
                stored_prev,
                stored_hash,
                anchor: anchor.as_ref(),
            });
        }
        prev.clear();
        prev.extend_from_slice(stored_hash);
        expected = seq.saturating_add(1);
        last_seq = seq;
    }

    let last = u64::try_from(last_seq).unwrap_or(0);
    if problem.is_none() {
        if let Some(a) = &anchor {
            if a.seq > last {
                problem = Some(Problem {
                    seq: last + 1,
                    what: format!(
                        "chain truncated: anchor names record {} but the table ends at {last}",
                        a.seq
                    ),
                });
            }
        }
    }
    let head = (count > 0).then(|| Head {
        seq: last,
        hash: String::from_utf8_lossy(&prev).into_owned(),
    });
    Ok(VerifyReport {
        count,
        head,
        anchor,
        problem,
    })
}

struct RowCheck<'a> {
    seq: i64,
    expected: i64,
    malformed: Option<&'a str>,
    fields: &'a [Field<'a>; 22],
    prev: &'a [u8],
    stored_prev: &'a [u8],
    stored_hash: &'a [u8],
    anchor: Option<&'a Head>,
}

/// The first thing wrong with one row, checked in the order that names the
/// cause best: position, readability, own hash, link, anchor.
fn check_row(c: RowCheck<'_>) -> Option<Problem> {
    let seq_u = u64::try_from(c.seq).unwrap_or(0);
    if c.seq < c.expected {
        return Some(Problem {
            seq: seq_u,
            what: format!(
                "record {}: before the start of the chain (seq must start at 1)",
                c.seq
            ),
        });
    }
    if c.seq > c.expected {
        let missing = u64::try_from(c.expected).unwrap_or(0);
        let what = if missing == 1 {
            format!("record 1: missing (the table starts at {})", c.seq)
        } else {
            format!("record {missing}: missing (gap after {})", missing - 1)
        };
        return Some(Problem { seq: missing, what });
    }
    if let Some(col) = c.malformed {
        return Some(Problem {
            seq: seq_u,
            what: format!(
                "record {seq_u}: column {col} has a type this store never writes (row edited)"
            ),
        });
    }
    let recomputed = chain_hash(c.stored_prev, &c.fields[..HASHED]);
    if recomputed.as_bytes() != c.stored_hash {
        return Some(Problem {
            seq: seq_u,
            what: format!("record {seq_u}: hash mismatch (row edited or moved)"),
        });
    }
    if c.stored_prev != c.prev {
        let what = if seq_u == 1 {
            String::from("record 1: prev_hash is not the genesis value (records removed or inserted before it)")
        } else {
            format!(
                "record {seq_u}: prev_hash does not match record {} (a record before it was inserted, removed or rewritten)",
                seq_u - 1
            )
        };
        return Some(Problem { seq: seq_u, what });
    }
    match c.anchor {
        Some(a) if a.seq == seq_u && a.hash.as_bytes() != c.stored_hash => Some(Problem {
            seq: seq_u,
            what: format!(
                "record {seq_u}: hash differs from the anchor (the chain was rewritten at or before this record)"
            ),
        }),
        _ => None,
    }
}

fn text_of(f: Field<'_>) -> &[u8] {
    match f {
        Field::Text(t) => t,
        Field::Null | Field::Int(_) => &[],
    }
}
