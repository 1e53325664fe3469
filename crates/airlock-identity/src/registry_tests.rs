#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

fn new<'a>(name: &'a str, groups: &'a [String]) -> NewAgent<'a> {
    NewAgent {
        name,
        on_behalf_of: "alice",
        task: "triage",
        groups,
        created_by: Some("alice"),
    }
}

fn open() -> (tempfile::TempDir, Registry) {
    let dir = tempfile::tempdir().unwrap();
    let r = Registry::open(&dir.path().join("audit.db"), Durability::Process).unwrap();
    (dir, r)
}

#[test]
fn add_revoke_and_add_again_with_a_new_token() {
    let (_dir, mut r) = open();
    let groups = [
        "writers".to_owned(),
        "bots".to_owned(),
        "writers".to_owned(),
    ];
    let (row, first) = r.add(&new("bot", &groups)).unwrap();
    assert_eq!(row.name, "bot");
    assert_eq!(row.groups, ["bots", "writers"], "sorted, once each");
    assert_eq!(row.created_by.as_deref(), Some("alice"));
    assert!(row.is_live());

    let again = r.add(&new("bot", &[])).unwrap_err();
    assert!(
        matches!(again, IdentityError::AlreadyRegistered { .. }),
        "{again}"
    );

    let revoked = r.revoke("bot", Some("bob")).unwrap();
    assert_eq!(revoked.id, row.id);
    assert!(!revoked.is_live());
    assert_eq!(revoked.revoked_by.as_deref(), Some("bob"));
    assert!(matches!(
        r.revoke("bot", None),
        Err(IdentityError::NotRegistered { .. })
    ));
    assert!(r.live("bot").unwrap().is_none());

    let (row2, second) = r.add(&new("bot", &[])).unwrap();
    assert_ne!(row2.id, row.id);
    assert_ne!(first, second);
    assert_eq!(r.live("bot").unwrap(), Some(row2.clone()));

    let all = r.list().unwrap();
    assert_eq!(all, vec![revoked, row2]);
}

#[test]
fn only_the_digest_is_stored() {
    let (dir, mut r) = open();
    let (_, token) = r.add(&new("bot", &[])).unwrap();
    let conn = rusqlite::Connection::open(dir.path().join("audit.db")).unwrap();
    let mut stmt = conn.prepare("SELECT * FROM registered_agents").unwrap();
    let columns = stmt.column_count();
    let cells: Vec<String> = stmt
        .query_map([], |row| {
            Ok((0..columns)
                .map(|i| match row.get_ref(i).unwrap() {
                    rusqlite::types::ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                    other => format!("{other:?}"),
                })
                .collect::<Vec<_>>())
        })
        .unwrap()
        .flat_map(Result::unwrap)
        .collect();
    let secret = token.expose().trim_start_matches(crate::TOKEN_PREFIX);
    assert!(
        cells.iter().all(|c| !c.contains(secret)),
        "the token is in the table: {cells:?}"
    );
    assert!(cells.contains(&token.digest_hex()), "{cells:?}");
    // The listing carries no digest either.
    let listed = serde_json::to_string(&r.list().unwrap()).unwrap();
    assert!(!listed.contains(&token.digest_hex()), "{listed}");
}

#[test]
fn names_follow_the_config_rules() {
    let (_dir, mut r) = open();
    for (what, agent) in [
        (
            "agent",
            NewAgent {
                name: "a b",
                ..new("x", &[])
            },
        ),
        (
            "human",
            NewAgent {
                on_behalf_of: "",
                ..new("x", &[])
            },
        ),
        (
            "task",
            NewAgent {
                task: "t/1",
                ..new("x", &[])
            },
        ),
    ] {
        let e = r.add(&agent).unwrap_err();
        assert!(
            matches!(&e, IdentityError::InvalidName { what: w, .. } if *w == what),
            "{e}"
        );
    }
    let bad_group = ["-g".to_owned()];
    assert!(matches!(
        r.add(&new("x", &bad_group)),
        Err(IdentityError::InvalidName { what: "group", .. })
    ));
    assert!(r.list().unwrap().is_empty());
}

#[test]
fn reading_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("audit.db");
    assert!(list_registered(&db).unwrap().is_empty());
    assert!(!db.exists());
    // A database without the table (an audit trail from before registrations).
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("CREATE TABLE other (x INTEGER)")
        .unwrap();
    assert!(list_registered(&db).unwrap().is_empty());
    assert!(credentials(&db).unwrap().is_empty());
    let mut r = Registry::open(&db, Durability::Process).unwrap();
    r.add(&new("bot", &[])).unwrap();
    assert_eq!(list_registered(&db).unwrap().len(), 1);
}

#[test]
fn two_handles_cannot_both_register_a_name() {
    let (dir, mut a) = open();
    let mut b = Registry::open(&dir.path().join("audit.db"), Durability::Process).unwrap();
    a.add(&new("bot", &[])).unwrap();
    assert!(matches!(
        b.add(&new("bot", &[])),
        Err(IdentityError::AlreadyRegistered { .. })
    ));
    // And the index holds even against a raw insert.
    let conn = rusqlite::Connection::open(dir.path().join("audit.db")).unwrap();
    let raw = conn.execute(
        "INSERT INTO registered_agents (name, on_behalf_of, task, groups, token_sha256, \
         created_ns) VALUES ('bot', 'alice', 'triage', '[]', 'x', 1)",
        [],
    );
    assert!(raw.is_err());
}
