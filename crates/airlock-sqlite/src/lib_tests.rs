#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

fn pragma(conn: &Connection, name: &str) -> String {
    conn.query_row(&format!("PRAGMA {name}"), [], |r| {
        r.get::<_, rusqlite::types::Value>(0)
    })
    .map(|v| match v {
        rusqlite::types::Value::Integer(i) => i.to_string(),
        rusqlite::types::Value::Text(t) => t,
        other => format!("{other:?}"),
    })
    .unwrap()
}

#[test]
fn a_writer_is_in_wal_mode_and_waits_for_locks() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("a.db");
    let conn = open_wal(&db, Durability::Process).unwrap();
    assert!(db.exists(), "the file is created");
    assert_eq!(pragma(&conn, "journal_mode"), "wal");
    assert_eq!(pragma(&conn, "busy_timeout"), "5000");
    // A second writer on the file: same settings, WAL kept.
    let again = open_wal(&db, Durability::PowerLoss).unwrap();
    assert_eq!(pragma(&again, "journal_mode"), "wal");
}

#[test]
fn synchronous_follows_the_durability() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("a.db");
    assert_eq!(Durability::default(), Durability::Process);
    for (durability, want) in [(Durability::Process, "1"), (Durability::PowerLoss, "2")] {
        let conn = open_wal(&db, durability).unwrap();
        assert_eq!(pragma(&conn, "synchronous"), want, "{durability:?}");
    }
}

#[test]
fn a_file_that_cannot_be_in_wal_mode_is_refused() {
    let err = open_wal(Path::new(":memory:"), Durability::Process).unwrap_err();
    assert!(
        matches!(&err, OpenError::NotWal { mode, .. } if mode == "memory"),
        "{err}"
    );
    assert!(err.to_string().contains("WAL is required"), "{err}");
}

#[test]
fn a_rollback_journal_file_is_switched_to_wal() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("a.db");
    let old = Connection::open(&db).unwrap();
    old.execute_batch("PRAGMA journal_mode=DELETE; CREATE TABLE t (x INTEGER)")
        .unwrap();
    drop(old);
    let conn = open_wal(&db, Durability::Process).unwrap();
    assert_eq!(pragma(&conn, "journal_mode"), "wal");
}

#[test]
fn a_reader_cannot_write_nor_create() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("a.db");
    let w = open_wal(&db, Durability::Process).unwrap();
    w.execute_batch("CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1);")
        .unwrap();
    let r = open_read_only(&db).unwrap();
    assert_eq!(pragma(&r, "busy_timeout"), "5000");
    let n: i64 = r
        .query_row("SELECT count(*) FROM t", [], |x| x.get(0))
        .unwrap();
    assert_eq!(n, 1);
    let err = r.execute("INSERT INTO t VALUES (2)", []).unwrap_err();
    assert_eq!(
        err.sqlite_error_code(),
        Some(rusqlite::ErrorCode::ReadOnly),
        "{err}"
    );
    assert!(r.execute_batch("CREATE TABLE u (y)").is_err());

    let missing = dir.path().join("missing.db");
    assert!(matches!(
        open_read_only(&missing),
        Err(OpenError::Open { .. })
    ));
    assert!(!missing.exists(), "a reader never creates the file");
}

#[test]
fn a_directory_is_not_a_database() {
    let dir = tempfile::tempdir().unwrap();
    let err = open_wal(dir.path(), Durability::Process).unwrap_err();
    assert!(
        matches!(err, OpenError::Open { .. } | OpenError::Setting { .. }),
        "{err}"
    );
}
