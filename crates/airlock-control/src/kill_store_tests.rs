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
    old.execute_batch(LEGACY_SCHEMA).unwrap();
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
    old.execute_batch(LEGACY_SCHEMA).unwrap();
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

fn trip(class: &str) -> Trip {
    Trip {
        class: class.into(),
        budget: "5 calls per 600 s".into(),
        resets_at_ns: 0,
    }
}

fn origins(s: &KillStore) -> Vec<(i64, KillOrigin)> {
    let mut all: Vec<(i64, KillOrigin)> = s
        .recent(100)
        .unwrap()
        .into_iter()
        .map(|k| (k.id, k.origin))
        .collect();
    all.sort_by_key(|(id, _)| *id);
    all
}

fn breaker(class: &str) -> KillOrigin {
    KillOrigin::Breaker {
        class: class.into(),
    }
}

/// Issue 14: a human's kill whose reason reads `breaker: …` was shown as a pause.
#[test]
fn a_humans_kill_that_reads_like_a_pause_is_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("audit.db");
    let mut s = KillStore::open(&db).unwrap();
    let human = s
        .kill(
            KillTarget::Agent("bot".into()),
            "breaker: acl-changes",
            "airlock",
        )
        .unwrap();
    let pause = s.pause("bot", &trip("acl-changes")).unwrap();
    assert_eq!(
        (pause.reason.as_str(), pause.by.as_str()),
        ("breaker:acl-changes", "airlock")
    );
    let active = KillStore::open(&db).unwrap().active().unwrap();
    assert_eq!(active, vec![human, pause]);
    assert_eq!(active[0].origin, KillOrigin::Human);
    assert!(!active[0].is_pause());
    assert_eq!(active[1].breaker_class(), Some("acl-changes"));
}

#[test]
fn a_kill_file_of_an_older_build_gets_origins_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("audit.db");
    // The kill file as a build before the origin column left it.
    let old = Connection::open(kill_db_path(&db)).unwrap();
    old.execute_batch("PRAGMA journal_mode=WAL").unwrap();
    old.execute_batch(LEGACY_SCHEMA).unwrap();
    old.execute_batch(
        "INSERT INTO kills VALUES (1, 'agent', 'bot', 'breaker:acl', 'airlock', 1, NULL, NULL);
         INSERT INTO kills VALUES (2, 'agent', 'bot', 'breaker: acl-changes', 'alice', 2, 3, 'bob');
         INSERT INTO kills VALUES (3, 'all', '*', 'breaker:acl', 'alice', 3, NULL, NULL);
         INSERT INTO kills VALUES (4, 'agent', 'bot', 'runaway', 'airlock', 4, NULL, NULL);
         INSERT INTO kills VALUES (5, 'agent', 'bot', 'breaker:', 'airlock', 5, NULL, NULL);
         INSERT INTO kills VALUES (6, 'agent', 'bot', 'Breaker:acl', 'airlock', 6, NULL, NULL);",
    )
    .unwrap();
    let mut s = KillStore::open(&db).unwrap();
    let human = KillOrigin::Human;
    assert_eq!(
        origins(&s),
        [
            (1, breaker("acl")),
            (2, human.clone()),
            (3, human.clone()),
            (4, human.clone()),
            (5, human.clone()),
            (6, human.clone()),
        ]
    );
    // An older build still running on the file writes no origin: its rows get theirs.
    old.execute_batch(
        "INSERT INTO kills (scope, target, reason, by_human, created_ns) \
         VALUES ('agent', 'bot', 'breaker:loop.rate', 'airlock', 7);
         INSERT INTO kills (scope, target, reason, by_human, created_ns) \
         VALUES ('agent', 'bot', 'stop', 'alice', 8);",
    )
    .unwrap();
    let k = s.kill(KillTarget::All, "breaker:acl", "airlock").unwrap();
    assert_eq!(k.origin, KillOrigin::Human);
    assert_eq!(
        origins(&s)[6..],
        [(7, breaker("loop.rate")), (8, human.clone()), (9, human)]
    );
    // A current file is opened without its write lock: a writer elsewhere does not delay it.
    old.execute_batch("BEGIN IMMEDIATE").unwrap();
    let started = std::time::Instant::now();
    let again = KillStore::open(&db).unwrap();
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    assert_eq!(again.recent(100).unwrap().len(), 9);
    old.execute_batch("ROLLBACK").unwrap();
}

#[test]
fn pauses_in_the_audit_databases_old_table_are_copied_in_as_pauses() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("audit.db");
    let old = Connection::open(&db).unwrap();
    old.execute_batch(LEGACY_SCHEMA).unwrap();
    old.execute_batch(
        "INSERT INTO kills VALUES (3, 'agent', 'bot', 'breaker:acl', 'airlock', 10, NULL, NULL);
         INSERT INTO kills VALUES (4, 'agent', 'bot', 'breaker:acl', 'alice', 11, NULL, NULL);",
    )
    .unwrap();
    let s = KillStore::open(&db).unwrap();
    assert_eq!(origins(&s), [(3, breaker("acl")), (4, KillOrigin::Human)]);
}

#[test]
fn an_origin_no_build_writes_is_an_error_not_a_skip() {
    let dir = tempfile::tempdir().unwrap();
    let s = KillStore::open(&dir.path().join("audit.db")).unwrap();
    s.conn
        .execute_batch(
            "INSERT INTO kills (scope, target, reason, by_human, created_ns, origin) \
             VALUES ('all', '*', 'r', 'a', 1, 'robot')",
        )
        .unwrap();
    let err = s.active().unwrap_err();
    assert!(
        matches!(&err, ControlError::Corrupt(m) if m.contains("robot")),
        "{err}"
    );
}
