#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::*;
use crate::KillTarget;

const S: i64 = 1_000_000_000;
/// A fixed "now" far from the epoch, so windows never reach below 0.
const T0: i64 = 1_800_000_000 * S;

fn config(breakers: &str) -> Config {
    let text = format!(
        r#"
[policy]
files = ["p"]
[humans.alice]
[tasks.t]
[agents.bot]
on_behalf_of = "alice"
task = "t"
[agents.other]
on_behalf_of = "alice"
task = "t"
[servers.corp]
tools = ["acl_set", "mail_delete", "mail_list", "repo_get"]
{breakers}
"#
    );
    airlock_config::parse(&text, Path::new("a.toml")).unwrap()
}

const ACL: &str = r#"
[breakers.acl]
tools = ["corp/acl_set"]
when = { recursive = true }
max_calls = 5
window_secs = 600
[breakers.defaults]
enabled = false
"#;

fn setup(breakers: &str) -> (tempfile::TempDir, PathBuf, BreakerSet, ControlStore) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("audit.db");
    let set = BreakerSet::from_config(&config(breakers));
    let store = ControlStore::open(&db).unwrap();
    (dir, db, set, store)
}

fn admit(
    set: &BreakerSet,
    s: &mut ControlStore,
    agent: &str,
    tool: &str,
    args: Value,
    t: i64,
) -> Verdict {
    set.admit(s, agent, "corp", tool, &args, t).unwrap()
}

fn is_pass(v: &Verdict) -> bool {
    matches!(v, Verdict::Pass { .. })
}

fn trip(v: Verdict) -> Trip {
    match v {
        Verdict::Trip(t) => t,
        other => panic!("expected a trip, got {other:?}"),
    }
}

#[test]
fn budget_lets_exactly_max_calls_through_and_trips_the_next() {
    let (_d, _db, set, mut s) = setup(ACL);
    let rec = json!({"recursive": true, "repo": "r"});
    for i in 0..5 {
        let v = admit(&set, &mut s, "bot", "acl_set", rec.clone(), T0 + i * S);
        assert!(is_pass(&v), "call {} should pass: {v:?}", i + 1);
    }
    let t = trip(admit(
        &set,
        &mut s,
        "bot",
        "acl_set",
        rec.clone(),
        T0 + 10 * S,
    ));
    assert_eq!(t.class, "acl");
    assert_eq!(t.budget, "5 calls per 600 s");
    assert_eq!(t.reason().to_string(), "breaker:acl");
    // The first call leaves the window 600 s after it was made.
    assert_eq!(t.resets_at_ns, T0 + 600 * S);
    // A tripped call is not counted: still tripped, same reset time.
    let again = trip(admit(
        &set,
        &mut s,
        "bot",
        "acl_set",
        rec.clone(),
        T0 + 11 * S,
    ));
    assert_eq!(again.resets_at_ns, T0 + 600 * S);
    // Other agents, non-recursive calls and other tools have their own budgets.
    assert!(is_pass(&admit(
        &set,
        &mut s,
        "other",
        "acl_set",
        rec.clone(),
        T0 + 12 * S
    )));
    assert!(is_pass(&admit(
        &set,
        &mut s,
        "bot",
        "acl_set",
        json!({"recursive": false}),
        T0 + 12 * S
    )));
    assert!(is_pass(&admit(
        &set,
        &mut s,
        "bot",
        "acl_set",
        json!({}),
        T0 + 12 * S
    )));
    assert!(is_pass(&admit(
        &set,
        &mut s,
        "bot",
        "mail_list",
        rec.clone(),
        T0 + 12 * S
    )));
    // The window slides: once the first call is 600 s old, one more fits.
    assert!(is_pass(&admit(
        &set,
        &mut s,
        "bot",
        "acl_set",
        rec.clone(),
        T0 + 600 * S
    )));
    assert!(!is_pass(&admit(
        &set,
        &mut s,
        "bot",
        "acl_set",
        rec,
        T0 + 600 * S + 1
    )));
}

#[test]
fn check_then_record_call_counts_the_same() {
    let (_d, _db, set, mut s) = setup(ACL);
    let rec = json!({"recursive": true});
    for i in 0..5 {
        let v = set
            .check(&s, "bot", "corp", "acl_set", &rec, T0 + i)
            .unwrap();
        let Verdict::Pass { matched } = v else {
            panic!("call {i} tripped")
        };
        assert_eq!(matched.len(), 1);
        assert!(matched[0].is_budget());
        set.record_call(&mut s, "bot", &matched, T0 + i).unwrap();
    }
    assert!(!is_pass(
        &set.check(&s, "bot", "corp", "acl_set", &rec, T0 + 9)
            .unwrap()
    ));
}

#[test]
fn counters_survive_reopening_the_store() {
    let (_d, db, set, mut s) = setup(ACL);
    let rec = json!({"recursive": true});
    for i in 0..5 {
        assert!(is_pass(&admit(
            &set,
            &mut s,
            "bot",
            "acl_set",
            rec.clone(),
            T0 + i
        )));
    }
    drop(s);
    let mut s = ControlStore::open(&db).unwrap();
    assert!(!is_pass(&admit(
        &set,
        &mut s,
        "bot",
        "acl_set",
        rec,
        T0 + 9
    )));
}

#[test]
fn budgets_are_shared_by_processes_on_one_file() {
    let (_d, db, set, mut a) = setup(ACL);
    let mut b = ControlStore::open(&db).unwrap();
    let rec = json!({"recursive": true});
    for i in 0..3 {
        assert!(is_pass(&admit(
            &set,
            &mut a,
            "bot",
            "acl_set",
            rec.clone(),
            T0 + i
        )));
    }
    for i in 3..5 {
        assert!(is_pass(&admit(
            &set,
            &mut b,
            "bot",
            "acl_set",
            rec.clone(),
            T0 + i
        )));
    }
    assert!(!is_pass(&admit(
        &set,
        &mut a,
        "bot",
        "acl_set",
        rec.clone(),
        T0 + 9
    )));
    assert!(!is_pass(&admit(
        &set,
        &mut b,
        "bot",
        "acl_set",
        rec,
        T0 + 9
    )));
}

#[test]
fn resuming_the_agent_starts_its_counters_afresh() {
    let (_d, _db, set, mut s) = setup(ACL);
    let rec = json!({"recursive": true});
    let now = airlock_audit::now_unix_ns() - 100 * S;
    for i in 0..5 {
        assert!(is_pass(&admit(
            &set,
            &mut s,
            "bot",
            "acl_set",
            rec.clone(),
            now + i
        )));
    }
    let t = trip(admit(&set, &mut s, "bot", "acl_set", rec.clone(), now + 9));
    let pause = s.pause("bot", &t).unwrap();
    assert_eq!(pause.breaker_class(), Some("acl"));
    assert_eq!(
        s.resume(&KillTarget::Agent("bot".into()), "alice").unwrap(),
        1
    );
    let later = airlock_audit::now_unix_ns() + 1;
    for i in 0..5 {
        assert!(is_pass(&admit(
            &set,
            &mut s,
            "bot",
            "acl_set",
            rec.clone(),
            later + i
        )));
    }
    assert!(!is_pass(&admit(
        &set,
        &mut s,
        "bot",
        "acl_set",
        rec,
        later + 9
    )));
}

#[test]
fn items_from_arguments_are_capped_before_the_call() {
    let (_d, _db, set, mut s) = setup(
        r#"
[breakers.acl]
tools = ["corp/acl_*"]
max_calls = 100
window_secs = 600
max_items = 20
items = "args:/repos"
[breakers.defaults]
enabled = false
"#,
    );
    let repos = |n: usize| json!({ "repos": vec!["r"; n] });
    assert!(is_pass(&admit(
        &set,
        &mut s,
        "bot",
        "acl_set",
        repos(15),
        T0
    )));
    let t = trip(admit(&set, &mut s, "bot", "acl_set", repos(6), T0 + 1));
    assert_eq!(t.budget, "20 items per 600 s");
    assert_eq!(t.resets_at_ns, T0 + 600 * S);
    assert!(is_pass(&admit(
        &set,
        &mut s,
        "bot",
        "acl_set",
        repos(5),
        T0 + 2
    )));
    assert!(!is_pass(&admit(
        &set,
        &mut s,
        "bot",
        "acl_set",
        repos(1),
        T0 + 3
    )));
    assert!(is_pass(&admit(
        &set,
        &mut s,
        "bot",
        "acl_set",
        repos(0),
        T0 + 4
    )));
}

#[test]
fn items_from_results_trip_when_they_cross_the_cap() {
    let (_d, _db, set, mut s) = setup(
        r#"
[breakers.acl]
tools = ["corp/acl_set"]
max_calls = 100
window_secs = 600
max_items = 10
items = "result:/structuredContent/changed"
[breakers.defaults]
enabled = false
"#,
    );
    let result = |n: usize| json!({"structuredContent": {"changed": vec!["x"; n]}});
    let Verdict::Pass { matched } = admit(&set, &mut s, "bot", "acl_set", json!({}), T0) else {
        panic!()
    };
    let items = set.result_items(&matched, &result(7));
    assert_eq!(items, vec![("acl".to_string(), 7)]);
    assert_eq!(
        set.record_items(&mut s, "bot", "acl", 7, T0 + 1).unwrap(),
        None
    );
    assert!(is_pass(&admit(
        &set,
        &mut s,
        "bot",
        "acl_set",
        json!({}),
        T0 + 2
    )));
    let t = set
        .record_items(&mut s, "bot", "acl", 4, T0 + 3)
        .unwrap()
        .unwrap();
    assert_eq!(t.class, "acl");
    assert_eq!(t.budget, "10 items per 600 s");
    // Full: the next call is refused before it can change more.
    assert!(!is_pass(&admit(
        &set,
        &mut s,
        "bot",
        "acl_set",
        json!({}),
        T0 + 4
    )));
}

#[test]
fn agents_list_limits_a_class() {
    let (_d, _db, set, mut s) = setup(
        r#"
[breakers.mail]
tools = ["corp/mail_*"]
agents = ["bot"]
max_calls = 1
window_secs = 60
[breakers.defaults]
enabled = false
"#,
    );
    assert!(is_pass(&admit(
        &set,
        &mut s,
        "bot",
        "mail_delete",
        json!({}),
        T0
    )));
    assert!(!is_pass(&admit(
        &set,
        &mut s,
        "bot",
        "mail_list",
        json!({}),
        T0 + 1
    )));
    for i in 0..5 {
        assert!(is_pass(&admit(
            &set,
            &mut s,
            "other",
            "mail_delete",
            json!({}),
            T0 + i
        )));
    }
}

fn journal_of(db: &Path, agent: &str) -> PathBuf {
    crate::journal::journal_dir(db).join(format!("{}.journal", hex::encode(agent)))
}

#[test]
fn a_store_error_is_an_error() {
    // Loop counters in the journal: a damaged loop row denies a call outside every budget class.
    for damage in [
        "1800000000000000000 1 0 !rate ab\n",
        "1 1 0 !fanout:corp/repo_get\n",
    ] {
        let (_d, db, set, mut s) = setup("[breakers.defaults]\nrate_min_calls = 100\n");
        assert!(is_pass(&admit(
            &set,
            &mut s,
            "bot",
            "mail_list",
            json!({}),
            T0
        )));
        s.flush().unwrap();
        let path = journal_of(&db, "bot");
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str(damage);
        std::fs::write(&path, text).unwrap();
        assert!(s.refresh("bot", true).is_err());
        let mut fresh = ControlStore::open(&db).unwrap();
        assert!(set
            .admit(&mut fresh, "bot", "corp", "mail_list", &json!({}), T0 + 1)
            .is_err());
    }
    // Budget counters in the journal: a damaged line or a torn last line is an error, not a skip.
    for damage in ["garbage\n", "1800000000000000000 1 0 acl\n180000"] {
        let (_d, db, set, mut s) = setup(ACL);
        let rec = json!({"recursive": true});
        assert!(is_pass(&admit(
            &set,
            &mut s,
            "bot",
            "acl_set",
            rec.clone(),
            T0
        )));
        let path = journal_of(&db, "bot");
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str(damage);
        std::fs::write(&path, text).unwrap();
        assert!(set
            .admit(&mut s, "bot", "corp", "acl_set", &rec, T0 + 1)
            .is_err());
        assert!(set
            .check(&s, "bot", "corp", "acl_set", &rec, T0 + 1)
            .is_err());
        let fresh = ControlStore::open(&db).unwrap();
        assert!(set.levels(&fresh, T0 + 1).is_err());
    }
    // A journal directory that cannot be created.
    let (_d, db, set, mut s) = setup(ACL);
    std::fs::write(crate::journal::journal_dir(&db), "not a directory").unwrap();
    assert!(set
        .admit(
            &mut s,
            "bot",
            "corp",
            "acl_set",
            &json!({"recursive": true}),
            T0
        )
        .is_err());
}

#[test]
fn budgets_hold_exactly_under_concurrent_stores() {
    // Separate handles lock like separate processes (flock is per open file).
    let (_d, db, set, _s) = setup(ACL.replace("max_calls = 5", "max_calls = 37").as_str());
    let passed: u64 = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let (db, set) = (&db, &set);
                scope.spawn(move || {
                    let mut s = ControlStore::open(db).unwrap();
                    let rec = json!({"recursive": true});
                    let mut passed = 0u64;
                    for i in 0..20 {
                        let v = set
                            .admit(&mut s, "bot", "corp", "acl_set", &rec, T0 + t * 100 + i)
                            .unwrap();
                        passed += u64::from(is_pass(&v));
                    }
                    passed
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(passed, 37);
}

#[test]
fn a_compacted_journal_keeps_counting_exactly_in_every_store() {
    let (_d, db, set, mut a) = setup(ACL);
    let mut b = ControlStore::open(&db).unwrap();
    let rec = json!({"recursive": true});
    // Far more rows than the compaction threshold, each window's worth outside the next.
    let mut t = T0;
    for round in 0..150 {
        t += 601 * S;
        let s = if round % 2 == 0 { &mut a } else { &mut b };
        assert!(is_pass(&admit(&set, s, "bot", "acl_set", rec.clone(), t)));
    }
    let len = std::fs::metadata(journal_of(&db, "bot")).unwrap().len();
    assert!(
        len < crate::journal::COMPACT_BYTES,
        "never compacted: {len} bytes"
    );
    // Both stores follow the new file: 5 calls fit in one window, across both, then it trips.
    t += 601 * S;
    for i in 0..5 {
        let s = if i % 2 == 0 { &mut a } else { &mut b };
        assert!(is_pass(&admit(
            &set,
            s,
            "bot",
            "acl_set",
            rec.clone(),
            t + i
        )));
    }
    assert!(!is_pass(&admit(
        &set,
        &mut a,
        "bot",
        "acl_set",
        rec.clone(),
        t + 9
    )));
    assert!(!is_pass(&admit(
        &set,
        &mut b,
        "bot",
        "acl_set",
        rec.clone(),
        t + 9
    )));
    // And a store opened afterwards reads the same.
    let mut c = ControlStore::open(&db).unwrap();
    assert!(!is_pass(&admit(&set, &mut c, "bot", "acl_set", rec, t + 9)));
}

#[test]
fn fanout_trips_on_the_first_target_past_the_limit() {
    let (_d, _db, set, mut s) = setup(
        r#"
[breakers.defaults]
fanout_distinct = 3
fanout_window_secs = 60
rate_min_calls = 1000
"#,
    );
    for (i, repo) in ["a", "b", "c", "a", "b", "c", "a"].iter().enumerate() {
        let v = admit(
            &set,
            &mut s,
            "bot",
            "repo_get",
            json!({"repo": repo}),
            T0 + i as i64,
        );
        assert!(is_pass(&v), "{repo} should pass");
    }
    // Calls without a target key are not fan-out.
    assert!(is_pass(&admit(
        &set,
        &mut s,
        "bot",
        "repo_get",
        json!({"q": 1}),
        T0 + 8
    )));
    let t = trip(admit(
        &set,
        &mut s,
        "bot",
        "repo_get",
        json!({"repo": "d"}),
        T0 + 9,
    ));
    assert_eq!(t.class, LOOP_FANOUT);
    assert_eq!(t.budget, "3 distinct targets of corp/repo_get per 60 s");
    // "b" was last seen at T0+4: the first of the three to leave the window.
    assert_eq!(t.resets_at_ns, T0 + 4 + 60 * S);
    // Another tool is another fan-out.
    assert!(is_pass(&admit(
        &set,
        &mut s,
        "bot",
        "mail_list",
        json!({"repo": "d"}),
        T0 + 9
    )));
    // After the window, new targets fit again.
    assert!(is_pass(&admit(
        &set,
        &mut s,
        "bot",
        "repo_get",
        json!({"repo": "d"}),
        T0 + 70 * S
    )));
}

#[test]
fn rate_trips_above_the_floor_and_above_the_baseline() {
    let (_d, _db, set, mut s) = setup(
        r#"
[breakers.defaults]
rate_min_calls = 10
rate_factor = 2
rate_window_secs = 60
rate_baseline_secs = 660
fanout_distinct = 1000
"#,
    );
    // A fresh agent: the floor of 10 per minute applies.
    for i in 0..10 {
        assert!(is_pass(&admit(
            &set,
            &mut s,
            "bot",
            "mail_list",
            json!({}),
            T0 + i * S
        )));
    }
    let t = trip(admit(
        &set,
        &mut s,
        "bot",
        "mail_list",
        json!({}),
        T0 + 11 * S,
    ));
    assert_eq!(t.class, LOOP_RATE);

    // "other" ran at 10 calls per minute for 10 minutes: 2 × 10 = 20 per minute is its limit.
    let start = T0 - 660 * S;
    for m in 0..10 {
        for c in 0..10 {
            let at = start + m * 60 * S + c * 5 * S;
            assert!(is_pass(&admit(
                &set,
                &mut s,
                "other",
                "mail_list",
                json!({}),
                at
            )));
        }
    }
    let now = start + 660 * S;
    for i in 0..20 {
        let v = admit(&set, &mut s, "other", "mail_list", json!({}), now + i);
        assert!(is_pass(&v), "call {i}: {v:?}");
    }
    assert_eq!(
        trip(admit(
            &set,
            &mut s,
            "other",
            "mail_list",
            json!({}),
            now + 30
        ))
        .class,
        LOOP_RATE
    );
}

#[test]
fn loop_rows_are_written_behind_and_flushed() {
    let (_d, db, set, mut s) = setup("[breakers.defaults]\nrate_min_calls = 3\n");
    for i in 0..3 {
        assert!(is_pass(&admit(
            &set,
            &mut s,
            "bot",
            "mail_list",
            json!({}),
            T0 + i
        )));
    }
    assert!(s.pending_len() > 0);
    drop(s); // flushes
    let mut s = ControlStore::open(&db).unwrap();
    assert!(!is_pass(&admit(
        &set,
        &mut s,
        "bot",
        "mail_list",
        json!({}),
        T0 + 9
    )));
}

#[test]
fn levels_show_used_and_budget() {
    let (_d, _db, set, mut s) = setup(ACL);
    let rec = json!({"recursive": true});
    for i in 0..2 {
        admit(&set, &mut s, "bot", "acl_set", rec.clone(), T0 + i * S);
    }
    let levels = set.levels(&s, T0 + 5 * S).unwrap();
    assert_eq!(
        levels,
        vec![Level {
            agent: "bot".into(),
            class: "acl".into(),
            calls: 2,
            max_calls: 5,
            items: 0,
            max_items: None,
            window_secs: 600,
            resets_at_ns: Some(T0 + 600 * S),
        }]
    );
}

#[test]
fn prune_drops_rows_outside_every_window() {
    let (_d, _db, set, mut s) = setup("[breakers.defaults]\nrate_min_calls = 100\n");
    admit(&set, &mut s, "bot", "mail_list", json!({}), T0);
    admit(&set, &mut s, "bot", "mail_list", json!({}), T0 + 1000 * S);
    assert_eq!(s.prune(T0 - S).unwrap(), 0);
    // One rate bucket is at T0 (rate buckets start at multiples of 10 s here).
    assert_eq!(s.prune(T0 + 999 * S).unwrap(), 1);
    assert_eq!(s.prune(T0 + 999 * S).unwrap(), 0);
}

#[test]
fn fanout_key_is_the_digest_stored_rows_already_hold() {
    // The digest of each key, NUL, the value's JSON text, NUL: rows from
    // earlier builds in the window must keep matching.
    let args = json!({"repo": "r1", "path": {"a": [1, "x\u{e9}"]}, "other": 1});
    let keys = vec!["path".to_string(), "repo".to_string(), "url".to_string()];
    let mut h = Sha256::new();
    for k in ["path", "repo"] {
        h.update(k.as_bytes());
        h.update([0]);
        h.update(args[k].to_string().as_bytes());
        h.update([0]);
    }
    let want = hex::encode(&h.finalize()[..16]);
    assert_eq!(fanout_key(&args, &keys), Some(want));
    assert_eq!(fanout_key(&json!({"q": 1}), &keys), None);
    assert_eq!(fanout_class("corp", "a/b"), "!fanout:corp/a/b");
}

#[path = "loops_tests.rs"]
mod loops;
