#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

fn open() -> (tempfile::TempDir, PathBuf, ControlStore) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("audit.db");
    let store = ControlStore::open(&db).unwrap();
    (dir, db, store)
}

#[test]
fn kill_resume_round_trip() {
    let (_d, _db, mut s) = open();
    let a = s
        .kill(KillTarget::Agent("bot".into()), "runaway", "alice")
        .unwrap();
    let t = s
        .kill(KillTarget::tool("corp/acl_set").unwrap(), "bug", "bob")
        .unwrap();
    let all = s.kill(KillTarget::All, "stop", "alice").unwrap();
    assert!(a.id < t.id && t.id < all.id);
    assert_eq!(s.active().unwrap(), vec![a.clone(), t.clone(), all.clone()]);

    // Resume is by exact target: an agent resume does not lift the global kill.
    assert_eq!(
        s.resume(&KillTarget::Agent("bot".into()), "bob").unwrap(),
        1
    );
    assert_eq!(
        s.resume(&KillTarget::Agent("bot".into()), "bob").unwrap(),
        0
    );
    assert_eq!(s.active().unwrap(), vec![t.clone(), all.clone()]);
    assert_eq!(s.resume(&KillTarget::All, "alice").unwrap(), 1);
    assert_eq!(s.active().unwrap(), vec![t]);

    let recent = s.recent(10).unwrap();
    assert_eq!(recent.len(), 3);
    assert_eq!(recent[2].id, a.id);
    assert_eq!(recent[2].resumed_by.as_deref(), Some("bob"));
    assert!(recent[2].resumed_ns.is_some());
}

#[test]
fn kills_survive_reopening_and_are_seen_by_other_handles() {
    let (_d, db, mut s) = open();
    let other = ControlStore::open(&db).unwrap();
    let k = s
        .kill(KillTarget::Session("s-9".into()), "why", "alice")
        .unwrap();
    // Committed before `kill` returned: another connection sees it at once.
    assert_eq!(other.active().unwrap(), vec![k.clone()]);
    drop(s);
    drop(other);
    let again = ControlStore::open(&db).unwrap();
    assert_eq!(again.active().unwrap(), vec![k]);
}

#[test]
fn the_audit_store_shares_the_file() {
    let (_d, db, mut s) = open();
    let mut audit = airlock_audit::AuditStore::open(&db, Durability::Process).unwrap();
    let k = s.kill(KillTarget::All, "test", "alice").unwrap();
    audit.append(&[crate::kill_record(&k)]).unwrap();
    audit
        .append(&[crate::resume_record(&KillTarget::All, "alice", 1)])
        .unwrap();
    assert!(airlock_audit::verify(&db, None).unwrap().problem.is_none());
    let kinds: Vec<String> = audit
        .query(&airlock_audit::Query::default())
        .unwrap()
        .into_iter()
        .map(|r| r.kind)
        .collect();
    assert!(kinds.contains(&"kill".to_string()) && kinds.contains(&"resume".to_string()));
}
