//! The chain against an attacker with write access to the database file:
//! every kind of tampering is detected and the first bad record is named.
//! Also: many writers (stores, threads, processes) on one file keep one chain.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use airlock_audit::{
    read_anchor, verify, write_anchor, AuditError, AuditStore, Decision, Durability, Head,
    NewRecord, Problem, Query, RecordKind,
};
use rusqlite::Connection;
use serde_json::json;

struct Trail {
    _dir: tempfile::TempDir,
    db: PathBuf,
    anchor: PathBuf,
}

fn record(i: u64) -> NewRecord {
    let agent = if i.is_multiple_of(2) { "alice" } else { "bob" };
    NewRecord::at(
        RecordKind::Call,
        1_700_000_000_000_000_000 + i64::try_from(i).unwrap(),
    )
    .agent(agent)
    .session("s1")
    .server("forum")
    .method("tools/call")
    .target(format!("tool_{i}"))
    .args(format!("{i:064x}"), &json!({"n": i, "password": "pw"}))
    .decision(Decision::Allow)
    .reasons(["p.read"])
}

/// A trail of `n` records (appended in two batches) with the anchor at its head.
fn trail(n: u64) -> Trail {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("audit.db");
    let anchor = dir.path().join("audit.anchor");
    let mut store = AuditStore::open(&db, Durability::Process).unwrap();
    let half = n / 2;
    store
        .append(&(1..=half).map(record).collect::<Vec<_>>())
        .unwrap();
    store
        .append(&(half + 1..=n).map(record).collect::<Vec<_>>())
        .unwrap();
    write_anchor(&store.head().unwrap().unwrap(), &anchor).unwrap();
    Trail {
        _dir: dir,
        db,
        anchor,
    }
}

/// What an attacker does first: open the file directly and drop the guards.
fn attacker(db: &Path) -> Connection {
    let c = Connection::open(db).unwrap();
    c.execute_batch("DROP TRIGGER records_no_update; DROP TRIGGER records_no_delete;")
        .unwrap();
    c
}

fn problem(t: &Trail) -> Problem {
    let report = verify(&t.db, Some(&t.anchor)).unwrap();
    report.problem.expect("tampering went undetected")
}

#[test]
fn an_intact_trail_verifies() {
    let t = trail(10);
    let head = AuditStore::open_read_only(&t.db).unwrap().head().unwrap();
    let report = verify(&t.db, Some(&t.anchor)).unwrap();
    assert_eq!(report.problem, None);
    assert_eq!(report.count, 10);
    assert_eq!(report.head, head);
    assert_eq!(report.anchor, head);
    // No anchor given: same verdict.
    assert_eq!(verify(&t.db, None).unwrap().problem, None);
}

#[test]
fn an_empty_trail_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("a.db");
    AuditStore::open(&db, Durability::Process).unwrap();
    let report = verify(&db, Some(&dir.path().join("none"))).unwrap();
    assert_eq!(
        (report.count, report.head, report.anchor, report.problem),
        (0, None, None, None)
    );
}

#[test]
fn an_edited_field_is_detected() {
    let t = trail(10);
    attacker(&t.db)
        .execute("UPDATE records SET decision = 'deny' WHERE seq = 5", [])
        .unwrap();
    assert_eq!(
        problem(&t),
        Problem {
            seq: 5,
            what: "record 5: hash mismatch (row edited or moved)".into()
        }
    );
}

#[test]
fn a_reformatted_json_column_is_detected() {
    // Same JSON meaning, different text: still an edit.
    let t = trail(10);
    attacker(&t.db)
        .execute(
            "UPDATE records SET reasons = '[ \"p.read\" ]' WHERE seq = 3",
            [],
        )
        .unwrap();
    assert_eq!(problem(&t).seq, 3);
}

#[test]
fn a_changed_column_type_is_detected() {
    let t = trail(10);
    attacker(&t.db)
        .execute("UPDATE records SET time_ns = 1.5 WHERE seq = 4", [])
        .unwrap();
    assert_eq!(
        problem(&t),
        Problem {
            seq: 4,
            what: "record 4: column time_ns has a type this store never writes (row edited)".into()
        }
    );
}

#[test]
fn a_deleted_middle_row_is_detected() {
    let t = trail(10);
    attacker(&t.db)
        .execute("DELETE FROM records WHERE seq = 5", [])
        .unwrap();
    assert_eq!(
        problem(&t),
        Problem {
            seq: 5,
            what: "record 5: missing (gap after 4)".into()
        }
    );
}

#[test]
fn a_deleted_first_row_is_detected() {
    let t = trail(10);
    attacker(&t.db)
        .execute("DELETE FROM records WHERE seq = 1", [])
        .unwrap();
    assert_eq!(
        problem(&t),
        Problem {
            seq: 1,
            what: "record 1: missing (the table starts at 2)".into()
        }
    );
}

/// Moves every row after `after` one seq up, opening a slot at `after + 1`.
fn open_slot(c: &Connection, after: i64) {
    c.execute(
        "UPDATE records SET seq = seq + 1000000 WHERE seq > ?1",
        [after],
    )
    .unwrap();
    c.execute(
        "UPDATE records SET seq = seq - 999999 WHERE seq > 1000000",
        [],
    )
    .unwrap();
}

#[test]
fn an_inserted_row_with_a_made_up_hash_is_detected() {
    let t = trail(10);
    let c = attacker(&t.db);
    open_slot(&c, 5);
    let prev: String = c
        .query_row("SELECT hash FROM records WHERE seq = 5", [], |r| r.get(0))
        .unwrap();
    c.execute(
        "INSERT INTO records (seq, time_ns, kind, agent, target, decision, prev_hash, hash) \
         VALUES (6, 1, 'call', 'mallory', 'wire_money', 'allow', ?1, ?2)",
        [&prev, &"ab".repeat(32)],
    )
    .unwrap();
    assert_eq!(
        problem(&t),
        Problem {
            seq: 6,
            what: "record 6: hash mismatch (row edited or moved)".into()
        }
    );
}

#[test]
fn an_inserted_row_with_a_correctly_recomputed_hash_is_caught_at_the_next_row() {
    // The forger builds a perfect row 6 on a copy of the first five records;
    // the original record 6, now at seq 7, no longer hashes.
    let t = trail(10);
    let scratch = t.db.with_file_name("scratch.db");
    let mut s = AuditStore::open(&scratch, Durability::Process).unwrap();
    s.append(&(1..=5).map(record).collect::<Vec<_>>()).unwrap();
    s.append(&[record(6).agent("mallory").target("wire_money")])
        .unwrap();
    let c = attacker(&t.db);
    c.execute("ATTACH DATABASE ?1 AS scratch", [scratch.to_str().unwrap()])
        .unwrap();
    open_slot(&c, 5);
    c.execute(
        "INSERT INTO records SELECT * FROM scratch.records WHERE seq = 6",
        [],
    )
    .unwrap();
    let p = problem(&t);
    assert_eq!(p.seq, 7, "{}", p.what);
}

#[test]
fn an_appended_forged_row_is_detected() {
    let t = trail(10);
    let c = attacker(&t.db);
    c.execute(
        "INSERT INTO records (seq, time_ns, kind, agent, prev_hash, hash) \
         VALUES (11, 1, 'call', 'mallory', ?1, ?1)",
        [&"0".repeat(64)],
    )
    .unwrap();
    assert_eq!(problem(&t).seq, 11);
}

#[test]
fn reordered_rows_are_detected() {
    let t = trail(10);
    let c = attacker(&t.db);
    // Swap every column but seq between rows 3 and 4.
    c.execute_batch(
        "UPDATE records SET seq = 1000 WHERE seq = 3;
         UPDATE records SET seq = 3 WHERE seq = 4;
         UPDATE records SET seq = 4 WHERE seq = 1000;",
    )
    .unwrap();
    assert_eq!(
        problem(&t),
        Problem {
            seq: 3,
            what: "record 3: hash mismatch (row edited or moved)".into()
        }
    );
}

#[test]
fn tail_truncation_is_detected_with_the_anchor_only() {
    let t = trail(10);
    attacker(&t.db)
        .execute("DELETE FROM records WHERE seq > 7", [])
        .unwrap();
    assert_eq!(
        problem(&t),
        Problem {
            seq: 8,
            what: "chain truncated: anchor names record 10 but the table ends at 7".into()
        }
    );
    // The limit of a keyless chain: without the anchor a clean cut is invisible.
    assert_eq!(verify(&t.db, None).unwrap().problem, None);
}

#[test]
fn an_emptied_table_is_detected_with_the_anchor() {
    let t = trail(10);
    attacker(&t.db).execute("DELETE FROM records", []).unwrap();
    assert_eq!(
        problem(&t),
        Problem {
            seq: 1,
            what: "chain truncated: anchor names record 10 but the table ends at 0".into()
        }
    );
}

#[test]
fn a_rewritten_tail_is_detected_with_the_anchor() {
    // Cut the tail, then append a valid-looking replacement through the API.
    let t = trail(10);
    attacker(&t.db)
        .execute("DELETE FROM records WHERE seq > 7", [])
        .unwrap();
    let mut s = AuditStore::open(&t.db, Durability::Process).unwrap();
    s.append(&[record(8), record(9), record(10).decision(Decision::Deny)])
        .unwrap();
    assert_eq!(verify(&t.db, None).unwrap().problem, None);
    assert_eq!(
        problem(&t),
        Problem {
            seq: 10,
            what: "record 10: hash differs from the anchor (the chain was rewritten at or before this record)"
                .into()
        }
    );
}

#[test]
fn the_first_of_several_problems_is_named() {
    let t = trail(10);
    let c = attacker(&t.db);
    c.execute("UPDATE records SET agent = 'x' WHERE seq = 8", [])
        .unwrap();
    c.execute("DELETE FROM records WHERE seq = 4", []).unwrap();
    let report = verify(&t.db, Some(&t.anchor)).unwrap();
    assert_eq!(report.problem.map(|p| p.seq), Some(4));
    assert_eq!(report.count, 9);
}

#[test]
fn anchor_round_trips_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("head.anchor");
    assert_eq!(read_anchor(&path).unwrap(), None);
    let head = Head {
        seq: 42,
        hash: "0f".repeat(32),
    };
    write_anchor(&head, &path).unwrap();
    write_anchor(
        &Head {
            seq: 43,
            ..head.clone()
        },
        &path,
    )
    .unwrap();
    assert_eq!(
        read_anchor(&path).unwrap(),
        Some(Head {
            seq: 43,
            hash: head.hash.clone()
        })
    );
    let text: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(
        (text["seq"].clone(), text["hash"].clone()),
        (json!(43), json!(head.hash))
    );
    assert!(text["written_at"].as_str().unwrap().ends_with('Z'));
    // Only the anchor itself is left behind: no temp files.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("head.anchor")]);

    let bad = Head {
        seq: 1,
        hash: "not a hash".into(),
    };
    assert!(matches!(
        write_anchor(&bad, &path),
        Err(AuditError::AnchorMalformed { .. })
    ));
    std::fs::write(&path, b"{\"seq\": 1}").unwrap();
    assert!(matches!(
        read_anchor(&path),
        Err(AuditError::AnchorMalformed { .. })
    ));
    assert!(matches!(
        verify(&path, Some(&path)),
        Err(AuditError::AnchorMalformed { .. })
    ));
}

fn assert_one_chain(db: &Path, expected: u64) {
    let report = verify(db, None).unwrap();
    assert_eq!((report.count, report.problem), (expected, None));
    let seqs: Vec<u64> = AuditStore::open_read_only(db)
        .unwrap()
        .query(&Query::default())
        .unwrap()
        .iter()
        .map(|r| r.seq)
        .collect();
    assert_eq!(seqs, (1..=expected).collect::<Vec<_>>());
}

#[test]
fn two_stores_appending_alternately_keep_one_chain() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("shared.db");
    let mut a = AuditStore::open(&db, Durability::Process).unwrap();
    let mut b = AuditStore::open(&db, Durability::Process).unwrap();
    for i in 0..20u64 {
        let (store, agent) = if i.is_multiple_of(2) {
            (&mut a, "a")
        } else {
            (&mut b, "b")
        };
        let got = store
            .append(&[record(i).agent(agent), record(i).agent(agent)])
            .unwrap();
        assert_eq!(
            got.iter().map(|g| g.seq).collect::<Vec<_>>(),
            vec![2 * i + 1, 2 * i + 2]
        );
    }
    assert_eq!(a.head().unwrap(), b.head().unwrap());
    assert_one_chain(&db, 40);
}

#[test]
fn concurrent_threads_keep_one_chain() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("threads.db");
    AuditStore::open(&db, Durability::Process).unwrap();
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let db = db.clone();
            std::thread::spawn(move || {
                let mut s = AuditStore::open(&db, Durability::Process).unwrap();
                for i in 0..25 {
                    s.append(
                        &(0..10)
                            .map(|j| record(t * 1000 + i * 10 + j))
                            .collect::<Vec<_>>(),
                    )
                    .unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_one_chain(&db, 1000);
}

const CHILD_ENV: &str = "AIRLOCK_AUDIT_TEST_CHILD_DB";

/// Run only as a child of `concurrent_processes_keep_one_chain`.
#[test]
#[ignore = "helper process for concurrent_processes_keep_one_chain"]
fn child_appender() {
    let Some(db) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let mut s = AuditStore::open(Path::new(&db), Durability::Process).unwrap();
    for i in 0..50 {
        s.append(&(0..5).map(|j| record(i * 5 + j)).collect::<Vec<_>>())
            .unwrap();
    }
}

#[test]
fn concurrent_processes_keep_one_chain() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("procs.db");
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..3)
        .map(|_| {
            Command::new(&exe)
                .args([
                    "--ignored",
                    "--exact",
                    "child_appender",
                    "--test-threads=1",
                    "--quiet",
                ])
                .env(CHILD_ENV, &db)
                .stdout(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    assert_one_chain(&db, 750);
}
