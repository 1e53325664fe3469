use serde_json::json;

use super::*;
use crate::demo::scripts::SCENARIOS;

fn rec(
    kind: &str,
    agent: &str,
    session: Option<&str>,
    decision: Option<&str>,
    reasons: &[&str],
    detail: Value,
) -> StoredRecord {
    StoredRecord {
        seq: 1,
        prev_hash: String::new(),
        hash: String::new(),
        time_unix_ns: 100,
        kind: kind.to_owned(),
        agent: Some(agent.to_owned()),
        on_behalf_of: (kind == "call").then(|| "bob".to_owned()),
        task: None,
        session: session.map(str::to_owned),
        server: None,
        method: None,
        target: None,
        request_id: None,
        ref_seq: None,
        args_digest: None,
        args_redacted: None,
        decision: decision.map(str::to_owned),
        reasons: reasons.iter().map(|r| (*r).to_owned()).collect(),
        policy_digest: None,
        status: None,
        duration_us: None,
        detail: Some(detail),
        result_status: None,
        result_duration_us: None,
    }
}

fn scenario(name: &str) -> &'static Scenario {
    SCENARIOS
        .iter()
        .find(|s| s.name == name)
        .unwrap_or(&SCENARIOS[0])
}

fn figures(exposed: u64, minutes: u64) -> Figures {
    Figures {
        public_posts_without_sign_off: 0,
        restricted_repos_exposed: exposed,
        exposed_repo_minutes: minutes,
        mails_deleted_after_stop: None,
        over_quota_cpu_seconds: 0,
        confidential_bytes_published: 0,
    }
}

#[test]
fn controls_and_actors_come_from_the_scenarios_records_only() {
    let s = scenario("acl-widening");
    let sessions = vec!["demo-acl-widening-access-bot".to_owned()];
    let records = vec![
        rec(
            "call",
            "access-bot",
            Some(&sessions[0]),
            Some("deny"),
            &["no-recursive-acl-changes"],
            Value::Null,
        ),
        rec(
            "call",
            "access-bot",
            Some(&sessions[0]),
            Some("allow"),
            &["access-acl"],
            Value::Null,
        ),
        rec(
            "breaker",
            "access-bot",
            None,
            Some("deny"),
            &["budget"],
            json!({"class": "acl-changes", "by": "airlock"}),
        ),
        rec(
            "call",
            "access-bot",
            Some(&sessions[0]),
            Some("deny"),
            &["kill:3"],
            Value::Null,
        ),
        // Another scenario's session, and a kill by Airlock itself, are not this one's.
        rec(
            "call",
            "build-bot",
            Some("demo-miner-build-bot"),
            Some("deny"),
            &["compute-within-quota"],
            Value::Null,
        ),
        rec(
            "kill",
            "access-bot",
            None,
            Some("deny"),
            &["breaker:acl-changes"],
            json!({"by": "airlock"}),
        ),
    ];
    let a = summarise(&records, s, &sessions, 0, "/x/airlock.toml");
    assert_eq!(
        a.controls,
        vec!["policy no-recursive-acl-changes", "breaker acl-changes"]
    );
    assert_eq!(a.agents, vec!["access-bot"]);
    assert_eq!(a.on_behalf_of, vec!["bob"]);
    assert!(a.approvers.is_empty());
    assert_eq!(
        a.queries,
        vec!["airlock audit query --config /x/airlock.toml --agent access-bot"]
    );
    assert_eq!(a.records, 5);
    // Records from before the scenario started are not its kills or trips.
    let later = summarise(&records, s, &sessions, 1_000, "/x/airlock.toml");
    assert_eq!(later.controls, vec!["policy no-recursive-acl-changes"]);
}

#[test]
fn humans_who_decided_are_named() {
    let s = scenario("forum-advice");
    let sessions = vec!["demo-forum-advice-support-bot".to_owned()];
    let records = vec![
        rec(
            "approval",
            "support-bot",
            Some(&sessions[0]),
            None,
            &[],
            json!({"event": "requested", "human": null}),
        ),
        rec(
            "approval",
            "support-bot",
            Some(&sessions[0]),
            Some("deny"),
            &[],
            json!({"event": "denied", "human": "carol"}),
        ),
        rec(
            "kill",
            "support-bot",
            None,
            Some("deny"),
            &["stop"],
            json!({"by": "priya"}),
        ),
    ];
    let a = summarise(&records, s, &sessions, 0, "c");
    assert_eq!(
        a.controls,
        vec!["approval hold", "approval denied by carol", "kill by priya"]
    );
    assert_eq!(a.approvers, vec!["carol", "priya"]);
}

#[test]
fn verdicts() {
    let audit = |controls: &[&str]| AuditSummary {
        controls: controls.iter().map(|c| (*c).to_owned()).collect(),
        ..AuditSummary::default()
    };
    let m = Metric::ExposedRepoMinutes;
    let acted = audit(&["breaker acl-changes"]);
    assert_eq!(
        verdict(m, &figures(57, 3000), &figures(0, 0), &acted, 5),
        "protected"
    );
    assert_eq!(
        verdict(m, &figures(57, 3000), &figures(5, 280), &acted, 5),
        "bounded"
    );
    assert_eq!(
        verdict(m, &figures(57, 3000), &figures(6, 300), &acted, 5),
        "unexpected"
    );
    // No control acted: said so, whatever the figures.
    assert_eq!(
        verdict(m, &figures(57, 3000), &figures(0, 0), &audit(&[]), 5),
        "not protected yet"
    );
    // The incident did not reproduce without Airlock.
    assert_eq!(
        verdict(m, &figures(0, 0), &figures(0, 0), &acted, 5),
        "unexpected"
    );
}
