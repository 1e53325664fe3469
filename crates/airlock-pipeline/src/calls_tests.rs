#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

fn call() -> Call {
    Call::new("tools/call", Expect::Plain)
}

#[test]
fn an_id_is_reserved_until_its_call_ends_and_the_two_sides_are_apart() {
    let mut t = CallTable::default();
    let id = Id::Int(1);
    assert!(t.reserve(Side::Agent, &id, call()));
    assert!(
        !t.reserve(Side::Agent, &id, call()),
        "a known id is refused"
    );
    assert!(
        t.reserve(Side::Server, &id, call()),
        "the server's ids are its own"
    );
    assert!(t.end(Side::Agent, &id).is_some());
    assert!(t.reserve(Side::Agent, &id, call()), "free again once ended");
    assert_eq!(t.len(), 2);
}

#[test]
fn end_if_ends_only_a_call_in_the_phase_asked_for() {
    let mut t = CallTable::default();
    let id = Id::Str("a".into());
    t.reserve(Side::Agent, &id, call());
    assert!(t
        .end_if(Side::Agent, &id, |p| matches!(p, Phase::Upstream))
        .is_none());
    assert!(t.contains(Side::Agent, &id));
    t.get_mut(Side::Agent, &id).unwrap().phase = Phase::Upstream;
    assert!(t
        .end_if(Side::Agent, &id, |p| matches!(p, Phase::Upstream))
        .is_some());
    assert!(t.is_empty());
}

#[test]
fn abandoned_calls_are_forgotten_after_the_grace_and_not_before() {
    let mut t = CallTable::default();
    let mut old = call();
    old.phase = Phase::Abandoned {
        since: Instant::now() - Duration::from_secs(10),
    };
    let mut fresh = call();
    fresh.phase = Phase::Abandoned {
        since: Instant::now(),
    };
    t.reserve(Side::Agent, &Id::Int(1), old);
    t.reserve(Side::Agent, &Id::Int(2), fresh);
    t.reserve(Side::Agent, &Id::Int(3), call());
    t.forget_abandoned(Duration::from_secs(5));
    assert!(!t.contains(Side::Agent, &Id::Int(1)));
    assert!(t.contains(Side::Agent, &Id::Int(2)));
    assert!(t.contains(Side::Agent, &Id::Int(3)));
}

#[test]
fn tasks_are_bounded_and_the_oldest_goes_first() {
    let mut t = CallTable::default();
    let origin = TaskOrigin {
        kind: ActKind::CallTool,
        target: "x".into(),
        args: None,
        items: vec![],
        ticket: None,
    };
    for i in 0..MAX_TASKS + 1 {
        t.add_task(format!("t{i}"), origin.clone());
    }
    assert!(!t.has_task("t0"), "the oldest task is forgotten");
    assert!(t.has_task("t1"));
    assert!(t.has_task(&format!("t{MAX_TASKS}")));
    assert_eq!(t.task("t1").unwrap().target, "x");
}
