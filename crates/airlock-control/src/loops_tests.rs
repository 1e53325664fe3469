//! Loop-detection counters in the journals: shared by stores, surviving
//! restarts and compactions, carried over from older builds, and safe from
//! forged rows; and a journal read that fails half way.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

const LOOPS: &str = r#"
[breakers.acl]
tools = ["corp/acl_set"]
max_calls = 1000
window_secs = 600
[breakers.defaults]
rate_min_calls = 6
rate_factor = 1
fanout_distinct = 3
"#;

#[test]
fn loop_counters_are_shared_by_stores_and_survive_restarts() {
    let (_d, db, set, mut a) = setup(LOOPS);
    let mut b = ControlStore::open(&db).unwrap();
    // Inside a budget class, each call reads the other store's rows under the lock: the
    // rate floor of 6 holds exactly across both.
    for i in 0..6 {
        let s = if i % 2 == 0 { &mut a } else { &mut b };
        let v = admit(&set, s, "bot", "acl_set", json!({}), T0 + i);
        assert!(is_pass(&v), "call {i}: {v:?}");
    }
    assert_eq!(
        trip(admit(&set, &mut a, "bot", "acl_set", json!({}), T0 + 7)).class,
        LOOP_RATE
    );
    assert_eq!(
        trip(admit(&set, &mut b, "bot", "acl_set", json!({}), T0 + 7)).class,
        LOOP_RATE
    );
    // Outside every class, rows are appended behind and read within LOOP_REFRESH: here
    // forced. "other" fans out over three targets in store a.
    for (i, repo) in ["r0", "r1", "r2"].iter().enumerate() {
        let v = admit(
            &set,
            &mut a,
            "other",
            "repo_get",
            json!({"repo": repo}),
            T0 + i as i64,
        );
        assert!(is_pass(&v));
    }
    assert!(a.pending_len() > 0);
    a.flush().unwrap();
    assert_eq!(a.pending_len(), 0);
    b.refresh("other", true).unwrap();
    let fourth = json!({"repo": "r3"});
    assert_eq!(
        trip(admit(
            &set,
            &mut b,
            "other",
            "repo_get",
            fourth.clone(),
            T0 + 9
        ))
        .class,
        LOOP_FANOUT
    );
    // A target already seen is no new fan-out.
    assert!(is_pass(&admit(
        &set,
        &mut b,
        "other",
        "repo_get",
        json!({"repo": "r1"}),
        T0 + 9
    )));
    // Restarts: a store opened afterwards reads every counter back.
    drop(a);
    drop(b);
    let mut c = ControlStore::open(&db).unwrap();
    assert_eq!(
        trip(admit(&set, &mut c, "bot", "acl_set", json!({}), T0 + 9)).class,
        LOOP_RATE
    );
    assert_eq!(
        trip(admit(&set, &mut c, "other", "repo_get", fourth, T0 + 9)).class,
        LOOP_FANOUT
    );
}

#[test]
fn pending_loop_rows_ride_along_with_the_next_budget_row() {
    let (_d, db, set, mut s) = setup(LOOPS);
    assert!(is_pass(&admit(
        &set,
        &mut s,
        "bot",
        "mail_list",
        json!({"repo": "r0"}),
        T0
    )));
    assert!(s.pending_len() > 0);
    let before = std::fs::metadata(journal_of(&db, "bot")).unwrap().len();
    assert_eq!(before, 0);
    assert!(is_pass(&admit(
        &set,
        &mut s,
        "bot",
        "acl_set",
        json!({}),
        T0 + 1
    )));
    assert_eq!(s.pending_len(), 0);
    let text = std::fs::read_to_string(journal_of(&db, "bot")).unwrap();
    let classes: Vec<&str> = text.lines().map(|l| l.split(' ').nth(3).unwrap()).collect();
    // The pending rate bucket and fan-out target, then the call's own rows; the two
    // calls' rate rows are one bucket apart in the file, merged in the cache.
    assert_eq!(
        classes,
        ["!rate", "!fanout:corp/mail_list", "acl", "!rate"],
        "{text}"
    );
}

#[test]
fn a_compacted_journal_keeps_the_loop_rows_inside_their_windows() {
    let (_d, db, set, mut a) = setup(&LOOPS.replace("fanout_distinct = 3", "fanout_distinct = 2"));
    let mut b = ControlStore::open(&db).unwrap();
    // One target early in the fan-out window (600 s), then many budget calls far
    // apart (one rate bucket each) until the journal has been compacted.
    assert!(is_pass(&admit(
        &set,
        &mut a,
        "bot",
        "repo_get",
        json!({"repo": "r0"}),
        T0
    )));
    a.flush().unwrap();
    let inode = || {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(journal_of(&db, "bot")).unwrap().ino()
    };
    let first = inode();
    let mut t = T0;
    for i in 0..60 {
        t += 15 * S;
        let s = if i % 2 == 0 { &mut a } else { &mut b };
        assert!(is_pass(&admit(&set, s, "bot", "acl_set", json!({}), t)));
    }
    // Compaction renames a new file over the old one.
    assert_ne!(inode(), first, "never compacted");
    // r0 (900 s ago) has left the fan-out window; two new targets fit, a third
    // trips, in both stores and in a fresh one.
    assert_eq!(t - T0, 900 * S);
    for repo in ["r1", "r2"] {
        assert!(is_pass(&admit(
            &set,
            &mut a,
            "bot",
            "repo_get",
            json!({"repo": repo}),
            t
        )));
    }
    a.flush().unwrap();
    for s in [&mut a, &mut b, &mut ControlStore::open(&db).unwrap()] {
        s.refresh("bot", true).unwrap();
        let v = admit(&set, s, "bot", "repo_get", json!({"repo": "r3"}), t + 1);
        assert_eq!(trip(v).class, LOOP_FANOUT);
    }
    // The rate rows of the last 60 s survived the compaction too: 4 budget calls (15 s
    // apart) and 2 fan-out calls in the last minute, so with the floor of 6 the next trips.
    let mut c = ControlStore::open(&db).unwrap();
    assert_eq!(
        trip(admit(&set, &mut c, "bot", "mail_list", json!({}), t + 2)).class,
        LOOP_RATE
    );
}

#[test]
fn an_older_builds_loop_rows_are_carried_into_the_journal_once() {
    let (_d, db, set, s) = setup(LOOPS);
    let key = |repo: &str| {
        fanout_key(
            &json!({"repo": repo}),
            &config(LOOPS).breakers.defaults.fanout_keys,
        )
        .unwrap()
    };
    // The table as older builds made it, with a reset of everyone at T0 - 100 s.
    s.conn()
        .execute_batch(
            "CREATE TABLE breaker_events (id INTEGER PRIMARY KEY, agent TEXT NOT NULL, \
             class TEXT NOT NULL, time_ns INTEGER NOT NULL, calls INTEGER NOT NULL, \
             items INTEGER NOT NULL, key TEXT NULL, origin TEXT NOT NULL)",
        )
        .unwrap();
    let put = |agent: &str, class: &str, t: i64, calls: i64, key: Option<String>| {
        s.conn()
            .execute(
                "INSERT INTO breaker_events (agent, class, time_ns, calls, items, key, origin) \
                 VALUES (?1, ?2, ?3, ?4, 0, ?5, 'old')",
                rusqlite::params![agent, class, t, calls, key],
            )
            .unwrap();
    };
    put("bot", "!rate", T0 - 200 * S, 50, None); // before the reset: no longer counts
    put("*", "!reset", T0 - 100 * S, 0, None);
    put("bot", "!rate", T0 - 20 * S, 5, None);
    put("bot", "acl", T0 - 20 * S, 1, None); // budget rows were never read from here
    for repo in ["a", "b"] {
        put(
            "eve",
            "!fanout:corp/repo_get",
            T0 - 10 * S,
            1,
            Some(key(repo)),
        );
    }
    put(
        "eve",
        "!fanout:corp/repo_get",
        T0 - 500 * S,
        1,
        Some(key("c")),
    );
    drop(s);

    let mut a = ControlStore::open(&db).unwrap();
    let mut b = ControlStore::open(&db).unwrap();
    // 5 old calls in the last minute: one more fits the floor of 6, then it trips.
    assert!(is_pass(&admit(
        &set,
        &mut a,
        "bot",
        "acl_set",
        json!({}),
        T0
    )));
    assert_eq!(
        trip(admit(&set, &mut b, "bot", "acl_set", json!({}), T0 + 1)).class,
        LOOP_RATE
    );
    // eve's two old targets: one new one fits (fanout_distinct = 3), a fourth does not,
    // and "c" (before the reset) is not among them.
    assert!(is_pass(&admit(
        &set,
        &mut b,
        "eve",
        "repo_get",
        json!({"repo": "c"}),
        T0
    )));
    b.flush().unwrap();
    assert_eq!(
        trip(admit(
            &set,
            &mut a,
            "eve",
            "repo_get",
            json!({"repo": "d"}),
            T0 + 1
        ))
        .class,
        LOOP_FANOUT
    );
    let tables: i64 = a
        .conn()
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name = 'breaker_events'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(tables, 0);
    // Carried once: the journal holds the two live rate calls' bucket once.
    let text = std::fs::read_to_string(journal_of(&db, "bot")).unwrap();
    let old: Vec<&str> = text.lines().filter(|l| l.contains(" 5 0 !rate")).collect();
    assert_eq!(old.len(), 1, "{text}");
}

#[test]
fn a_tool_name_cannot_forge_a_journal_row() {
    let (_d, db, set, mut s) = setup(LOOPS);
    let tool = "x y\n0 0 0 !reset\n1 1 0 acl";
    for i in 0..3 {
        let v = set
            .admit(&mut s, "bot", "corp", tool, &json!({"repo": "r0"}), T0 + i)
            .unwrap();
        assert!(is_pass(&v));
    }
    s.flush().unwrap();
    let text = std::fs::read_to_string(journal_of(&db, "bot")).unwrap();
    // One rate row and one fan-out row, the tool name escaped inside the fan-out class.
    assert_eq!(text.lines().count(), 2, "{text}");
    let classes: Vec<&str> = text.lines().map(|l| l.split(' ').nth(3).unwrap()).collect();
    assert_eq!(classes[0], "!rate");
    assert!(
        classes[1].starts_with("!fanout:corp/x%20y%0a0%200%200%20!reset"),
        "{text}"
    );
    let mut fresh = ControlStore::open(&db).unwrap();
    fresh.refresh("bot", true).unwrap();
    // No reset and no budget row came of it: the rate counter still holds the 3 calls.
    let v = admit(&set, &mut fresh, "bot", "acl_set", json!({}), T0 + 5);
    assert!(is_pass(&v));
    let cache = fresh.cache().unwrap();
    assert_eq!(cache.reset_ns("bot"), i64::MIN);
    assert_eq!(cache.budget_usage("bot", "acl", T0 - 1).calls, 1);
    assert_eq!(
        cache.rate_series("bot").unwrap().usage_after(T0 - S).calls,
        4
    );
}

#[test]
fn a_read_that_failed_half_way_counts_nothing_twice() {
    let (_d, db, set, mut s) = setup(ACL);
    let rec = json!({"recursive": true});
    for i in 0..3 {
        assert!(is_pass(&admit(
            &set,
            &mut s,
            "bot",
            "acl_set",
            rec.clone(),
            T0 + i
        )));
    }
    // Another process's row, then damage: the read applies the row, then fails.
    let path = journal_of(&db, "bot");
    let good = std::fs::read_to_string(&path).unwrap() + "1800000000000000005 1 0 acl\n";
    std::fs::write(&path, format!("{good}garbage\n")).unwrap();
    assert!(set
        .admit(&mut s, "bot", "corp", "acl_set", &rec, T0 + 6)
        .is_err());
    // Repaired: 4 calls are counted, so exactly one more fits.
    std::fs::write(&path, good).unwrap();
    assert!(is_pass(&admit(
        &set,
        &mut s,
        "bot",
        "acl_set",
        rec.clone(),
        T0 + 7
    )));
    assert!(!is_pass(&admit(
        &set,
        &mut s,
        "bot",
        "acl_set",
        rec,
        T0 + 8
    )));
}
