#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::json;

use super::*;
use crate::{action_digest, Requirements};

pub(crate) fn new_request(args: serde_json::Value, requirements: Requirements) -> NewApproval {
    NewApproval {
        digest: action_digest("bot", "alice", "corp", "tools/call", "forum_post", &args),
        agent: "bot".into(),
        on_behalf_of: "alice".into(),
        task: "support".into(),
        session: "s1".into(),
        server: "corp".into(),
        method: "tools/call".into(),
        target: "forum_post".into(),
        args_redacted: args,
        reasons: vec![HoldReason {
            policy: "public-posts".into(),
            why: "public posts need a sign-off".into(),
        }],
        requirements,
        now_ns: airlock_audit::now_unix_ns(),
    }
}

fn vote(human: &str, verdict: Verdict) -> Vote {
    Vote {
        human: human.into(),
        verdict,
        channel: "cli".into(),
        comment: None,
        time_ns: airlock_audit::now_unix_ns(),
    }
}

fn ok(_: &Approval) -> Result<(), ApprovalError> {
    Ok(())
}

#[test]
fn a_request_is_joined_by_the_same_digest_and_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("a.db");
    let mut s = ApprovalStore::open(&db).unwrap();
    let (a, created) = s
        .request(&new_request(
            json!({"channel": "public"}),
            Requirements::default(),
        ))
        .unwrap();
    assert!(created && a.id.starts_with("apr-") && a.id.len() == 20);
    assert_eq!(a.state, State::Pending);
    let (b, created) = s
        .request(&new_request(
            json!({"channel": "public"}),
            Requirements::default(),
        ))
        .unwrap();
    assert!(!created);
    assert_eq!(a.id, b.id);
    let (c, created) = s
        .request(&new_request(
            json!({"channel": "public!"}),
            Requirements::default(),
        ))
        .unwrap();
    assert!(created && c.id != a.id && c.digest != a.digest);
    drop(s);
    let s = ApprovalStore::open(&db).unwrap();
    let got = s.get(&a.id).unwrap().unwrap();
    assert_eq!(got, a);
    let pending = s
        .list(&ListFilter {
            states: vec![State::Pending],
            ..ListFilter::default()
        })
        .unwrap();
    assert_eq!(pending.len(), 2);
    assert_eq!(pending[0].id, c.id, "newest first");
}

#[test]
fn quorum_and_four_eyes_decide_when_a_request_is_approved() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = ApprovalStore::open(&dir.path().join("a.db")).unwrap();
    let req = Requirements {
        quorum: 2,
        ..Requirements::default()
    };
    let (a, _) = s.request(&new_request(json!({}), req)).unwrap();
    // The on-behalf-of human's vote counts toward the quorum, never alone.
    let a1 = s.vote(&a.id, &vote("alice", Verdict::Approve), ok).unwrap();
    assert_eq!(a1.state, State::Pending);
    assert!(matches!(
        s.vote(&a.id, &vote("alice", Verdict::Approve), ok),
        Err(ApprovalError::AlreadyVoted { .. })
    ));
    let a2 = s.vote(&a.id, &vote("bob", Verdict::Approve), ok).unwrap();
    assert_eq!(a2.state, State::Approved);
    assert_eq!(a2.approvers_so_far(), ["alice", "bob"]);
    assert!(matches!(
        s.vote(&a.id, &vote("carol", Verdict::Deny), ok),
        Err(ApprovalError::NotPending { .. })
    ));
    // Single use.
    assert_eq!(s.consume(&a.id).unwrap().unwrap().state, State::Used);
    assert!(s.consume(&a.id).unwrap().is_none());
    assert!(s.take_approved(&a.digest).unwrap().is_none());

    // Quorum 1, four eyes: the on-behalf-of human alone is not enough.
    let (b, _) = s
        .request(&new_request(json!({"x": 1}), Requirements::default()))
        .unwrap();
    let b1 = s.vote(&b.id, &vote("alice", Verdict::Approve), ok).unwrap();
    assert_eq!(b1.state, State::Pending);
    assert!(b1.missing().unwrap().contains("four eyes"));
    let b2 = s.vote(&b.id, &vote("bob", Verdict::Approve), ok).unwrap();
    assert_eq!(b2.state, State::Approved);
    // Approved but not held by anyone: the agent's identical retry takes it once.
    assert_eq!(s.take_approved(&b.digest).unwrap().unwrap().id, b.id);
    assert!(s.take_approved(&b.digest).unwrap().is_none());

    // Without four eyes the on-behalf-of human may approve alone; a deny ends it at once.
    let solo = Requirements {
        four_eyes: false,
        ..Requirements::default()
    };
    let (c, _) = s
        .request(&new_request(json!({"x": 2}), solo.clone()))
        .unwrap();
    assert_eq!(
        s.vote(&c.id, &vote("alice", Verdict::Approve), ok)
            .unwrap()
            .state,
        State::Approved
    );
    let (d, _) = s.request(&new_request(json!({"x": 3}), solo)).unwrap();
    assert_eq!(
        s.vote(&d.id, &vote("bob", Verdict::Deny), ok)
            .unwrap()
            .state,
        State::Denied
    );
    assert!(s.consume(&d.id).unwrap().is_none());
}

#[test]
fn a_refused_check_records_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = ApprovalStore::open(&dir.path().join("a.db")).unwrap();
    let (a, _) = s
        .request(&new_request(json!({}), Requirements::default()))
        .unwrap();
    let refuse = |a: &Approval| {
        Err(ApprovalError::NotAllowed {
            id: a.id.clone(),
            human: "bob".into(),
            why: "no".into(),
        })
    };
    assert!(s
        .vote(&a.id, &vote("bob", Verdict::Approve), refuse)
        .is_err());
    assert!(s.get(&a.id).unwrap().unwrap().votes.is_empty());
    assert!(matches!(
        s.vote("apr-0000000000000000", &vote("bob", Verdict::Approve), ok),
        Err(ApprovalError::NotFound { .. })
    ));
}

#[test]
fn expiry_withdrawal_and_kills_end_pending_requests() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = ApprovalStore::open(&dir.path().join("a.db")).unwrap();
    let short = Requirements {
        expiry: std::time::Duration::from_millis(1),
        ..Requirements::default()
    };
    let (a, _) = s.request(&new_request(json!({"e": 1}), short)).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(5));
    assert_eq!(s.get(&a.id).unwrap().unwrap().state, State::Expired);
    assert!(matches!(
        s.vote(&a.id, &vote("bob", Verdict::Approve), ok),
        Err(ApprovalError::Expired { .. })
    ));
    // An expired request is not joined: the same call asks anew.
    let (again, created) = s
        .request(&new_request(json!({"e": 1}), Requirements::default()))
        .unwrap();
    assert!(created && again.id != a.id);
    assert!(s.close(&again.id, State::Withdrawn).unwrap());
    assert!(!s.close(&again.id, State::Withdrawn).unwrap());
    assert_eq!(s.get(&again.id).unwrap().unwrap().state, State::Withdrawn);

    let (k1, _) = s
        .request(&new_request(json!({"k": 1}), Requirements::default()))
        .unwrap();
    let denied = s
        .deny_for_kill(&KillTarget::Agent("other".into()), "carol", "stop")
        .unwrap();
    assert!(denied.is_empty());
    let denied = s
        .deny_for_kill(
            &KillTarget::tool("corp/forum_post").unwrap(),
            "carol",
            "stop",
        )
        .unwrap();
    assert_eq!(denied.len(), 1);
    assert_eq!(denied[0].id, k1.id);
    assert_eq!(denied[0].state, State::Denied);
    assert_eq!(denied[0].votes[0].channel, "kill");
    let (k2, _) = s
        .request(&new_request(json!({"k": 2}), Requirements::default()))
        .unwrap();
    let denied = s.deny_for_kill(&KillTarget::All, "carol", "stop").unwrap();
    assert_eq!(denied.iter().map(|a| &a.id).collect::<Vec<_>>(), [&k2.id]);
}

/// Issue 15, item 7: kills outrank approvals. An approval granted but not used before a kill
/// is void after it: neither `take_approved` nor `consume` finds it, ever.
#[test]
fn a_kill_voids_approved_requests_not_yet_used() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = ApprovalStore::open(&dir.path().join("a.db")).unwrap();
    let approve = |s: &mut ApprovalStore, args: serde_json::Value| {
        let (a, _) = s
            .request(&new_request(args, Requirements::default()))
            .unwrap();
        s.vote(&a.id, &vote("bob", Verdict::Approve), ok).unwrap();
        assert_eq!(s.get(&a.id).unwrap().unwrap().state, State::Approved);
        a
    };
    let unused = approve(&mut s, json!({"v": 1}));
    let held = approve(&mut s, json!({"v": 2}));
    let used = approve(&mut s, json!({"v": 3}));
    assert!(s.consume(&used.id).unwrap().is_some());

    // A kill of another agent leaves them alone.
    assert!(s
        .deny_for_kill(&KillTarget::Agent("other".into()), "carol", "stop")
        .unwrap()
        .is_empty());
    let voided = s
        .deny_for_kill(&KillTarget::Agent("bot".into()), "carol", "incident")
        .unwrap();
    let mut ids: Vec<&str> = voided.iter().map(|a| a.id.as_str()).collect();
    ids.sort_unstable();
    let mut want = [unused.id.as_str(), held.id.as_str()];
    want.sort_unstable();
    assert_eq!(ids, want);
    for a in &voided {
        assert_eq!(a.state, State::Denied);
        let kill = a.votes.iter().find(|v| v.channel == "kill").unwrap();
        assert_eq!(
            (kill.human.as_str(), kill.verdict, kill.comment.as_deref()),
            ("carol", Verdict::Deny, Some("incident"))
        );
        // Its earlier approval is still on record beside the kill's vote.
        assert!(a.votes.iter().any(|v| v.human == "bob"));
    }
    // Neither path can use them, now or after a resume (a resume does not touch the store).
    assert!(s.take_approved(&unused.digest).unwrap().is_none());
    assert!(s.consume(&held.id).unwrap().is_none());
    assert_eq!(s.get(&used.id).unwrap().unwrap().state, State::Used);
    // The agent's retry is a new request, pending for a human.
    let (again, created) = s
        .request(&new_request(json!({"v": 1}), Requirements::default()))
        .unwrap();
    assert!(created && again.id != unused.id && again.state == State::Pending);
    // Records say denied, with the kill's vote.
    let records = crate::kill_denial_records(&voided);
    assert!(records
        .iter()
        .all(|r| r.detail.as_ref().unwrap()["channel"] == "kill"));
}

/// Issue 15, item 6: approvers see what they approve. The call's arguments, kept beside the
/// request when redaction hides a value, are read only by `reveal`; lists, the request as
/// stored and its audit records carry the redacted form.
#[test]
fn secret_values_are_kept_for_approvers_and_nowhere_else() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = ApprovalStore::open(&dir.path().join("a.db")).unwrap();
    let secret = "hunter2-the-real-value";
    let args = json!({"channel": "public", "api_key": secret, "body": "hi"});
    let mut new = new_request(args.clone(), Requirements::default());
    new.args_redacted = airlock_audit::redact(&args);
    // Arguments the digest does not bind are refused, and nothing is stored.
    let forged = json!({"channel": "public", "api_key": "other", "body": "hi"});
    assert!(matches!(
        s.request_with_args(&new, &forged),
        Err(ApprovalError::Invalid(_))
    ));
    assert!(s.list(&ListFilter::default()).unwrap().is_empty());

    let (a, created) = s.request_with_args(&new, &args).unwrap();
    assert!(created && a.hides_values());
    let shown = s.reveal(&a.id).unwrap().unwrap();
    assert_eq!(shown.args, args);
    assert_eq!(shown.secrets, ["/api_key"]);
    // Everything else sees the redacted form only.
    let listed = serde_json::to_string(&s.list(&ListFilter::default()).unwrap()).unwrap();
    let got = serde_json::to_string(&s.get(&a.id).unwrap().unwrap()).unwrap();
    let record = serde_json::to_string(&crate::approval_record(&a, "requested", None)).unwrap();
    for text in [&listed, &got, &record] {
        assert!(!text.contains(secret), "{text}");
    }
    assert!(listed.contains("[redacted sha256:"));

    // Approved: still readable until used; used: gone from the store.
    s.vote(&a.id, &vote("bob", Verdict::Approve), ok).unwrap();
    assert!(s.reveal(&a.id).unwrap().is_some());
    assert!(s.take_approved(&a.digest).unwrap().is_some());
    assert!(s.reveal(&a.id).unwrap().is_none());
    let kept: i64 = s
        .conn
        .query_row("SELECT COUNT(*) FROM approval_args", [], |r| r.get(0))
        .unwrap();
    assert_eq!(kept, 0, "the secret leaves the store with the request");

    // Arguments without secrets are not kept at all.
    let plain = json!({"channel": "public", "body": "no secrets"});
    let (p, _) = s
        .request_with_args(&new_request(plain.clone(), Requirements::default()), &plain)
        .unwrap();
    assert!(!p.hides_values() && s.reveal(&p.id).unwrap().is_none());
}

/// Issue 15, item 6, failing closed: a request whose redacted values were not kept cannot be
/// approved (nobody can read them); it can be denied.
#[test]
fn a_request_hiding_values_nobody_can_read_cannot_be_approved() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = ApprovalStore::open(&dir.path().join("a.db")).unwrap();
    let args = json!({"channel": "public", "authorization": "Bearer abcdefghijklmnopqrstuvwx"});
    let mut new = new_request(args.clone(), Requirements::default());
    new.args_redacted = airlock_audit::redact(&args);
    let (a, _) = s.request(&new).unwrap();
    assert!(a.hides_values() && s.reveal(&a.id).unwrap().is_none());
    let err = s
        .vote(&a.id, &vote("bob", Verdict::Approve), ok)
        .unwrap_err();
    assert!(matches!(err, ApprovalError::CannotShow { .. }), "{err}");
    assert_eq!(err.kind(), crate::ErrorKind::Forbidden);
    assert!(err.to_string().contains("out of band"), "{err}");
    assert!(s.get(&a.id).unwrap().unwrap().votes.is_empty());
    assert_eq!(
        s.vote(&a.id, &vote("bob", Verdict::Deny), ok)
            .unwrap()
            .state,
        State::Denied
    );
    // The same call asked again with its arguments kept can be approved.
    let (b, created) = s.request_with_args(&new, &args).unwrap();
    assert!(created && b.id != a.id);
    assert_eq!(
        s.vote(&b.id, &vote("bob", Verdict::Approve), ok)
            .unwrap()
            .state,
        State::Approved
    );
}
