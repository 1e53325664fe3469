#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::query::Query;
use crate::record::StoredRecord;
use crate::{Decision, RecordKind, ResultStatus};
use serde_json::json;
use std::time::Duration;

fn temp_db() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("audit.db");
    (dir, db)
}

fn call(i: i64, agent: &str, tool: &str, decision: Decision) -> NewRecord {
    NewRecord::at(RecordKind::Call, 1_000 + i)
        .agent(agent)
        .target(tool)
        .decision(decision)
        .reasons([format!("policy-{i}")])
}

/// The NewRecord part of a stored record, for whole-object comparison.
fn as_new(r: &StoredRecord) -> NewRecord {
    NewRecord {
        time_unix_ns: r.time_unix_ns,
        kind: r.known_kind().unwrap(),
        agent: r.agent.clone(),
        on_behalf_of: r.on_behalf_of.clone(),
        task: r.task.clone(),
        session: r.session.clone(),
        server: r.server.clone(),
        method: r.method.clone(),
        target: r.target.clone(),
        request_id: r.request_id.clone(),
        ref_seq: r.ref_seq,
        args_digest: r.args_digest.clone(),
        args_redacted: r.args_redacted.clone(),
        decision: r.known_decision(),
        reasons: r.reasons.clone(),
        policy_digest: r.policy_digest.clone(),
        status: r.known_status(),
        duration_us: r.duration_us,
        detail: r.detail.clone(),
    }
}

#[test]
fn open_sets_wal_durability_and_small_cache() {
    let (_d, db) = temp_db();
    for (durability, want) in [(Durability::Process, 1), (Durability::PowerLoss, 2)] {
        let s = AuditStore::open(&db, durability).unwrap();
        let mode: String = s
            .conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        let sync: i64 = s
            .conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        let cache: i64 = s
            .conn
            .query_row("PRAGMA cache_size", [], |r| r.get(0))
            .unwrap();
        let version: i64 = s
            .conn
            .query_row("SELECT version FROM schema_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(
            (mode.as_str(), sync, cache, version),
            ("wal", want, -256, SCHEMA_VERSION)
        );
    }
}

#[test]
fn append_chains_records_from_genesis() {
    let (_d, db) = temp_db();
    let mut s = AuditStore::open(&db, Durability::Process).unwrap();
    assert_eq!(s.head().unwrap(), None);
    assert!(s.append(&[]).unwrap().is_empty());
    let first = s.append(&[call(1, "a", "t", Decision::Allow)]).unwrap();
    let batch: Vec<NewRecord> = (2..=5)
        .map(|i| call(i, "a", "t", Decision::Allow))
        .collect();
    let rest = s.append(&batch).unwrap();
    let seqs: Vec<u64> = first.iter().chain(&rest).map(|a| a.seq).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5]);

    let all = s.query(&Query::default()).unwrap();
    assert_eq!(all.len(), 5);
    assert_eq!(all[0].prev_hash, GENESIS);
    for pair in all.windows(2) {
        assert_eq!(pair[1].prev_hash, pair[0].hash);
    }
    let appended: Vec<&String> = first.iter().chain(&rest).map(|a| &a.hash).collect();
    let stored: Vec<&String> = all.iter().map(|r| &r.hash).collect();
    assert_eq!(appended, stored);
    assert_eq!(
        s.head().unwrap(),
        Some(Head {
            seq: 5,
            hash: all[4].hash.clone()
        })
    );
    assert_eq!(s.count().unwrap(), 5);
}

#[test]
fn every_field_round_trips() {
    let (_d, db) = temp_db();
    let mut s = AuditStore::open(&db, Durability::Process).unwrap();
    let rec = NewRecord::at(RecordKind::Call, -5)
        .agent("agent-1")
        .on_behalf_of("alice@example.com")
        .task("T-42")
        .session("s-1")
        .server("forum")
        .method("tools/call")
        .target("post_message")
        .request_id("7")
        .args(
            "ab".repeat(32),
            &json!({"text": "hi \"there\"\n", "n": [1, 2.5, null]}),
        )
        .decision(Decision::Hold)
        .reasons(["p1", "p2"])
        .policy_digest("cd".repeat(32))
        .status(ResultStatus::Ok)
        .duration_us(u64::try_from(i64::MAX).unwrap())
        .detail(&json!({"z": 1, "a": {"b": true}}));
    let rec = NewRecord {
        ref_seq: Some(9),
        ..rec
    };
    s.append(std::slice::from_ref(&rec)).unwrap();
    let got = s.query(&Query::default()).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(as_new(&got[0]), rec);
    assert_eq!(
        (got[0].result_status.clone(), got[0].result_duration_us),
        (None, None)
    );
}

#[test]
fn a_bad_record_rejects_the_whole_batch() {
    let (_d, db) = temp_db();
    let mut s = AuditStore::open(&db, Durability::Process).unwrap();
    let bad = NewRecord::at(RecordKind::Result, 1).duration_us(u64::MAX);
    let err = s
        .append(&[call(1, "a", "t", Decision::Allow), bad])
        .unwrap_err();
    assert!(
        matches!(err, AuditError::InvalidRecord { index: 1, .. }),
        "{err}"
    );
    let huge = NewRecord::at(RecordKind::Result, 1).ref_seq(u64::MAX);
    let err = s.append(&[huge]).unwrap_err();
    assert!(
        matches!(err, AuditError::InvalidRecord { index: 0, .. }),
        "{err}"
    );
    assert_eq!(s.count().unwrap(), 0);
}

#[test]
fn query_filters_limits_and_joins_results() {
    let (_d, db) = temp_db();
    let mut s = AuditStore::open(&db, Durability::Process).unwrap();
    let calls = s
        .append(&[
            call(1, "alice", "read", Decision::Allow),
            call(2, "bob", "delete", Decision::Deny),
            call(3, "alice", "delete", Decision::Allow),
            NewRecord::at(RecordKind::ConfigLoad, 1_004).detail(&json!({"path": "airlock.toml"})),
        ])
        .unwrap();
    s.append(&[
        NewRecord::at(RecordKind::Result, 1_005)
            .ref_seq(calls[2].seq)
            .status(ResultStatus::IsError)
            .duration_us(70),
        NewRecord::at(RecordKind::Result, 1_006)
            .ref_seq(calls[0].seq)
            .status(ResultStatus::Ok)
            .duration_us(12),
        // A second result for the same call must not duplicate the call row.
        NewRecord::at(RecordKind::Result, 1_007)
            .ref_seq(calls[0].seq)
            .status(ResultStatus::Cancelled),
    ])
    .unwrap();

    let seqs = |q: Query| -> Vec<u64> { s.query(&q).unwrap().iter().map(|r| r.seq).collect() };
    assert_eq!(
        seqs(Query {
            agent: Some("alice".into()),
            ..Query::default()
        }),
        vec![1, 3]
    );
    assert_eq!(
        seqs(Query {
            target: Some("delete".into()),
            ..Query::default()
        }),
        vec![2, 3]
    );
    assert_eq!(
        seqs(Query {
            decision: Some("deny".into()),
            ..Query::default()
        }),
        vec![2]
    );
    assert_eq!(
        seqs(Query {
            kind: Some("result".into()),
            ..Query::default()
        }),
        vec![5, 6, 7]
    );
    assert_eq!(
        seqs(Query {
            since_unix_ns: Some(1_003),
            ..Query::default()
        }),
        vec![3, 4, 5, 6, 7]
    );
    assert_eq!(
        seqs(Query {
            limit: Some(2),
            ..Query::default()
        }),
        vec![6, 7]
    );
    assert_eq!(
        seqs(Query {
            agent: Some("alice".into()),
            target: Some("delete".into()),
            ..Query::default()
        }),
        vec![3]
    );
    assert!(seqs(Query {
        agent: Some("nobody".into()),
        ..Query::default()
    })
    .is_empty());

    let calls = s
        .query(&Query {
            kind: Some("call".into()),
            ..Query::default()
        })
        .unwrap();
    let joined: Vec<(u64, Option<&str>, Option<u64>)> = calls
        .iter()
        .map(|r| (r.seq, r.result_status.as_deref(), r.result_duration_us))
        .collect();
    assert_eq!(
        joined,
        vec![
            (1, Some("ok"), Some(12)),
            (2, None, None),
            (3, Some("is_error"), Some(70))
        ]
    );
    // Results themselves carry no joined result.
    let results = s
        .query(&Query {
            kind: Some("result".into()),
            ..Query::default()
        })
        .unwrap();
    assert!(results.iter().all(|r| r.result_status.is_none()));
}

#[test]
fn stored_records_serialize_for_json_output() {
    let (_d, db) = temp_db();
    let mut s = AuditStore::open(&db, Durability::Process).unwrap();
    s.append(&[call(1, "a", "t", Decision::Deny)]).unwrap();
    let r = &s.query(&Query::default()).unwrap()[0];
    let v = serde_json::to_value(r).unwrap();
    assert_eq!(
        (
            v["seq"].clone(),
            v["agent"].clone(),
            v["decision"].clone(),
            v["reasons"].clone(),
            v["hash"].clone()
        ),
        (
            json!(1),
            json!("a"),
            json!("deny"),
            json!(["policy-1"]),
            json!(r.hash)
        )
    );
}

#[test]
fn read_only_store_reads_but_never_writes() {
    let (_d, db) = temp_db();
    AuditStore::open(&db, Durability::Process)
        .unwrap()
        .append(&[call(1, "a", "t", Decision::Allow)])
        .unwrap();
    let mut ro = AuditStore::open_read_only(&db).unwrap();
    assert_eq!(ro.count().unwrap(), 1);
    assert!(matches!(
        ro.append(&[call(2, "a", "t", Decision::Allow)]),
        Err(AuditError::ReadOnly)
    ));
    assert_eq!(ro.count().unwrap(), 1);
}

#[test]
fn foreign_or_missing_files_are_refused() {
    let (dir, db) = temp_db();
    assert!(matches!(
        AuditStore::open_read_only(&db),
        Err(AuditError::Open { .. })
    ));
    let other = dir.path().join("other.db");
    Connection::open(&other)
        .unwrap()
        .execute_batch("CREATE TABLE t (x);")
        .unwrap();
    assert!(matches!(
        AuditStore::open_read_only(&other),
        Err(AuditError::NotAnAuditStore { .. })
    ));

    AuditStore::open(&db, Durability::Process).unwrap();
    Connection::open(&db)
        .unwrap()
        .execute("UPDATE schema_version SET version = 99", [])
        .unwrap();
    assert!(matches!(
        AuditStore::open(&db, Durability::Process),
        Err(AuditError::UnsupportedSchema {
            found: 99,
            supported: SCHEMA_VERSION
        })
    ));
    assert!(matches!(
        AuditStore::open_read_only(&db),
        Err(AuditError::UnsupportedSchema { found: 99, .. })
    ));
}

#[test]
fn triggers_refuse_update_and_delete() {
    let (_d, db) = temp_db();
    let mut s = AuditStore::open(&db, Durability::Process).unwrap();
    s.append(&[call(1, "a", "t", Decision::Allow)]).unwrap();
    let raw = Connection::open(&db).unwrap();
    let upd = raw
        .execute("UPDATE records SET agent = 'x'", [])
        .unwrap_err();
    let del = raw.execute("DELETE FROM records", []).unwrap_err();
    assert!(upd.to_string().contains("append-only"), "{upd}");
    assert!(del.to_string().contains("append-only"), "{del}");
    assert_eq!(
        s.query(&Query::default()).unwrap()[0].agent.as_deref(),
        Some("a")
    );
}

#[test]
fn writers_checkpoint_in_the_background() {
    let (_d, db) = temp_db();
    let mut s = AuditStore::open(&db, Durability::Process).unwrap();
    let auto: i64 = s
        .conn
        .query_row("PRAGMA wal_autocheckpoint", [], |r| r.get(0))
        .unwrap();
    assert_eq!(auto, 0, "appends must not checkpoint inline");
    s.append(
        &(0..500)
            .map(|i| call(i, "a", "t", Decision::Allow))
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let pages: i64 = s
        .conn
        .query_row("PRAGMA page_count", [], |r| r.get(0))
        .unwrap();
    let pages = u64::try_from(pages).unwrap();
    // The main file catches up with the WAL without anyone closing the store.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::fs::metadata(&db).unwrap().len() < pages * 4096 {
        assert!(
            std::time::Instant::now() < deadline,
            "no background checkpoint"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(s.count().unwrap(), 500);
}

#[test]
fn a_store_can_move_to_a_writer_thread() {
    fn assert_send<T: Send>() {}
    assert_send::<AuditStore>();
}

/// Records built with the types hash exactly as the same records built from text did: a
/// trail written before the types and one written after form one valid chain.
#[test]
fn typed_records_hash_as_their_legacy_text() {
    let typed = NewRecord::at(RecordKind::Call, 1_764_624_000_000_000_000)
        .agent("bot")
        .session("s1")
        .server("corp")
        .method("tools/call")
        .target("acl_set")
        .request_id("7")
        .decision(Decision::Deny)
        .reasons([
            crate::Reason::Airlock(crate::AirlockReason::DefaultDeny),
            crate::Reason::Kill(3),
            crate::Reason::Approval("a-1".into()),
            crate::Reason::Breaker("acl".into()),
            crate::Reason::Config("gateway.allow_methods".into()),
            crate::Reason::Policy("policy.x".into()),
        ])
        .policy_digest("2c26b46b")
        .status(ResultStatus::ApprovalDenied)
        .duration_us(42)
        .detail(&json!({"k": 1}));
    let mut bufs = Buffers::default();
    let mut row = [Field::Null; 22];
    fill_fields(&mut row, 1, &typed, &mut bufs, 0).unwrap();
    // Pinned before the types existed, from the same record built with strings
    // (`NewRecord::at("call", …).decision("deny").reasons(["airlock:default-deny", …])`).
    assert_eq!(
        chain_hash(GENESIS.as_bytes(), &row[..HASHED]),
        "d97d90d73b50e71b9bb083c1f83387a4896ac08b72c8dfef6d3637633243d2b5"
    );

    // Every kind, decision and status enters the hash as its legacy text, written out here.
    let legacy = |kind: &str, decision: Option<&str>, status: Option<&str>| {
        let mut fields = [Field::Null; HASHED];
        fields[0] = Field::Int(1);
        fields[1] = Field::Int(5);
        fields[2] = Field::Text(kind.as_bytes());
        fields[14] = Field::opt_str(decision);
        fields[17] = Field::opt_str(status);
        chain_hash(GENESIS.as_bytes(), &fields)
    };
    let hash = |r: &NewRecord| {
        let mut bufs = Buffers::default();
        let mut row = [Field::Null; 22];
        fill_fields(&mut row, 1, r, &mut bufs, 0).unwrap();
        chain_hash(GENESIS.as_bytes(), &row[..HASHED])
    };
    // The legacy texts, written out once, in the vocab tests.
    let kinds = crate::vocab::tests::KINDS;
    assert_eq!(kinds.len(), RecordKind::ALL.len());
    for &(kind, text) in kinds {
        assert_eq!(hash(&NewRecord::at(kind, 5)), legacy(text, None, None));
    }
    for &(decision, text) in crate::vocab::tests::DECISIONS {
        let r = NewRecord::at(RecordKind::Call, 5).decision(decision);
        assert_eq!(hash(&r), legacy("call", Some(text), None));
    }
    for status in ResultStatus::ALL {
        // The text itself is pinned in the vocab tests; here, that it is what gets hashed.
        let r = NewRecord::at(RecordKind::Result, 5).status(*status);
        assert_eq!(hash(&r), legacy("result", None, Some(status.as_str())));
    }
}
