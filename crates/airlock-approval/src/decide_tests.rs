#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use airlock_policy::{AgentEntity, EntityModel, HumanEntity, SHIPPED_SCHEMA};
use serde_json::json;

use super::*;
use crate::store::tests::new_request;
use crate::{ErrorKind, Requirements};

const CONFIG: &str = r#"
[policy]
files = ["p"]
[audit]
path = "audit.db"
[humans.alice]
groups = ["eng"]
token_sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
[humans.bob]
groups = ["comms"]
token_sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
[humans.carol]
groups = ["comms"]
token_sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
[humans.dave]
[humans.bot]
token_sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
[tasks.support]
[agents.bot]
on_behalf_of = "alice"
task = "support"
[servers.corp]
"#;

const POLICIES: &str = r#"
@id("all") permit(principal, action == Action::"call_tool", resource in Server::"corp");
"#;

fn setup(dir: &Path) -> (Config, PolicyEngine) {
    let config = airlock_config::parse(CONFIG, &dir.join("airlock.toml")).unwrap();
    let model = EntityModel {
        agents: vec![AgentEntity {
            id: "bot".into(),
            on_behalf_of: "alice".into(),
            task: "support".into(),
            groups: vec![],
        }],
        humans: config
            .humans
            .iter()
            .map(|(id, h)| HumanEntity {
                id: id.clone(),
                groups: h.groups.clone(),
            })
            .collect(),
        tasks: vec!["support".into()],
        servers: vec!["corp".into()],
    };
    let policy = PolicyEngine::from_texts(
        SHIPPED_SCHEMA,
        &[("p.cedar".into(), POLICIES.into())],
        &model,
    )
    .unwrap();
    (config, policy)
}

#[test]
fn a_decision_checks_the_human_records_the_vote_and_audits_it() {
    let dir = tempfile::tempdir().unwrap();
    let (config, policy) = setup(dir.path());
    let mut store = ApprovalStore::open(&config.audit.path).unwrap();
    let req = Requirements {
        approvers: vec!["comms".into()],
        quorum: 2,
        ..Requirements::default()
    };
    let (a, _) = store
        .request(&new_request(json!({"channel": "public"}), req))
        .unwrap();
    let go = |human, verdict| decide(&config, &policy, &a.id, human, verdict, "cli", Some("ok"));
    // Not in the @approvers group.
    let e = go("alice", Verdict::Approve).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Forbidden);
    assert!(e.to_string().contains("group comms"), "{e}");
    // A human that shares the agent's name never decides.
    assert_eq!(
        go("bot", Verdict::Approve).unwrap_err().kind(),
        ErrorKind::Forbidden
    );
    assert_eq!(
        go("mallory", Verdict::Approve).unwrap_err().kind(),
        ErrorKind::Forbidden
    );
    assert_eq!(go("bob", Verdict::Approve).unwrap().state, State::Pending);
    assert_eq!(
        go("bob", Verdict::Approve).unwrap_err().kind(),
        ErrorKind::Conflict
    );
    let done = go("carol", Verdict::Approve).unwrap();
    assert_eq!(done.state, State::Approved);
    assert_eq!(done.votes.len(), 2);
    let e = decide(
        &config,
        &policy,
        "apr-nope",
        "bob",
        Verdict::Deny,
        "cli",
        None,
    )
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);

    let audit = airlock_audit::AuditStore::open_read_only(&config.audit.path).unwrap();
    let records = audit
        .query(&airlock_audit::Query {
            kind: Some("approval".into()),
            ..Default::default()
        })
        .unwrap();
    let events: Vec<String> = records
        .iter()
        .map(|r| {
            r.detail.as_ref().unwrap()["event"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(events, ["vote", "approved"]);
    assert_eq!(records[1].detail.as_ref().unwrap()["human"], "carol");
}

#[test]
fn a_human_without_a_credential_cannot_decide() {
    let dir = tempfile::tempdir().unwrap();
    let (config, policy) = setup(dir.path());
    let mut store = ApprovalStore::open(&config.audit.path).unwrap();
    let (a, _) = store
        .request(&new_request(json!({}), Requirements::default()))
        .unwrap();
    let e = decide(
        &config,
        &policy,
        &a.id,
        "dave",
        Verdict::Approve,
        "api",
        None,
    )
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Forbidden);
    assert!(e.to_string().contains("no credential"), "{e}");
    assert!(store.get(&a.id).unwrap().unwrap().votes.is_empty());
    // Anyone else with a credential may, when no @approvers group is named.
    assert_eq!(
        decide(
            &config,
            &policy,
            &a.id,
            "bob",
            Verdict::Deny,
            "api",
            Some("no")
        )
        .unwrap()
        .state,
        State::Denied
    );
}
