//! The pure stages alone, on values in memory: kill, policy, filter.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use airlock_control::{Kill, KillTarget};
use airlock_policy::{PolicyEngine, SHIPPED_SCHEMA};
use airlock_protocol::{parse_frame, Id, Limits};
use serde_json::json;

use crate::calls::Expect;
use crate::filter::{filter_list, filter_tasks, Filtered};
use crate::kill::{check, KillState};
use crate::policy::{judge_request, Judgement};
use crate::route::{ActKind, ListKind};
use crate::testkit::{call, POLICY};
use crate::Identity;

fn who() -> Identity {
    Identity {
        agent: "bot".into(),
        on_behalf_of: "alice".into(),
        task: "triage".into(),
        session: "s1".into(),
        server: "corp".into(),
    }
}

fn kill(target: KillTarget) -> Kill {
    Kill {
        id: 1,
        target,
        reason: "r".into(),
        by: "priya".into(),
        origin: airlock_control::KillOrigin::Human,
        created_ns: 0,
        resumed_ns: None,
        resumed_by: None,
    }
}

fn tool(name: &str) -> Expect {
    Expect::Act {
        kind: ActKind::CallTool,
        target: name.into(),
    }
}

#[test]
fn kill_stage_matches_tool_agent_session_and_everything() {
    let state = KillState::default();
    assert!(check(&state, &who(), &tool("echo")).is_none());
    state.set(vec![kill(KillTarget::Tool {
        server: "corp".into(),
        tool: "echo".into(),
    })]);
    assert!(check(&state, &who(), &tool("echo")).is_some());
    assert!(check(&state, &who(), &tool("other")).is_none());
    assert!(
        check(&state, &who(), &Expect::Plain).is_none(),
        "a tool kill is not a stop"
    );
    for target in [
        KillTarget::Session("s1".into()),
        KillTarget::Agent("bot".into()),
        KillTarget::All,
    ] {
        let state = KillState::default();
        state.set(vec![kill(target)]);
        assert!(check(&state, &who(), &Expect::Plain).is_some());
    }
    let state = KillState::default();
    state.set(vec![kill(KillTarget::Agent("other".into()))]);
    assert!(check(&state, &who(), &tool("echo")).is_none());
    // Once stopped, everything is refused whatever the kills say now.
    assert!(state.mark_stopped(&kill(KillTarget::All)));
    assert!(!state.mark_stopped(&kill(KillTarget::All)));
    state.set(vec![]);
    assert!(check(&state, &who(), &Expect::Plain).is_some());
}

fn engine() -> PolicyEngine {
    let model = airlock_policy::EntityModel {
        agents: vec![airlock_policy::AgentEntity {
            id: "bot".into(),
            on_behalf_of: "alice".into(),
            task: "triage".into(),
            groups: vec![],
        }],
        humans: vec![airlock_policy::HumanEntity {
            id: "alice".into(),
            groups: vec![],
        }],
        tasks: vec!["triage".into()],
        servers: vec!["corp".into()],
    };
    PolicyEngine::from_texts(SHIPPED_SCHEMA, &[("p".into(), POLICY.into())], &model).unwrap()
}

fn judge(frame: serde_json::Value, labels: &[String], granted: bool) -> Judgement {
    let frame = parse_frame(
        frame.to_string().as_bytes(),
        &Limits {
            max_frame_bytes: 1 << 20,
        },
    )
    .unwrap();
    let method = frame.method().unwrap().to_owned();
    judge_request(
        &engine(),
        &who(),
        &[],
        labels,
        &frame,
        &Id::Int(1),
        &method,
        granted,
    )
}

#[test]
fn policy_stage_allows_denies_and_holds_and_reads_labels_and_approval() {
    assert!(matches!(
        judge(call(1, "echo", json!({})), &[], false),
        Judgement::Forward {
            expect: Expect::Act { .. },
            record: Some(_)
        }
    ));
    assert!(matches!(
        judge(call(1, "forbidden", json!({})), &[], false),
        Judgement::Refuse {
            code: crate::codes::DENIED,
            ..
        }
    ));
    let post = call(1, "post", json!({"channel": "public"}));
    assert!(matches!(
        judge(post.clone(), &[], false),
        Judgement::Hold(_)
    ));
    assert!(matches!(
        judge(post.clone(), &[], true),
        Judgement::Forward { .. }
    ));
    let labelled = ["confidential".to_string()];
    assert!(matches!(
        judge(post, &labelled, true),
        Judgement::Refuse { .. }
    ));
    // Malformed params are refused before policy, on the record.
    assert!(matches!(
        judge(
            json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":3}}),
            &[],
            false
        ),
        Judgement::Refuse {
            code: airlock_protocol::INVALID_PARAMS,
            record: Some(_),
            ..
        }
    ));
    assert!(matches!(
        judge(
            json!({"jsonrpc":"2.0","id":1,"method":"admin/reset"}),
            &[],
            false
        ),
        Judgement::Refuse {
            code: crate::codes::METHOD_NOT_ALLOWED,
            ..
        }
    ));
}

#[test]
fn filter_stage_hides_what_the_agent_can_never_use_and_others_tasks() {
    let list = json!({"jsonrpc":"2.0","id":1,"result":{"tools":[
        {"name":"echo"},{"name":"forbidden"},{"name":"gone"}]}});
    let engine = engine();
    let out = filter_list(&engine, &who(), ListKind::Tools, &list, &|name| {
        name == "gone"
    });
    let Filtered::Rewritten(bytes) = out else {
        panic!("not rewritten")
    };
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let names: Vec<&str> = v["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["echo"]);
    let tasks =
        json!({"jsonrpc":"2.0","id":1,"result":{"tasks":[{"taskId":"mine"},{"taskId":"theirs"}]}});
    let Filtered::Rewritten(bytes) = filter_tasks(&tasks, &|t| t == "mine") else {
        panic!("not rewritten")
    };
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(v["result"]["tasks"], json!([{"taskId":"mine"}]));
    assert!(matches!(
        filter_tasks(&json!({"result":{}}), &|_| true),
        Filtered::Malformed(_)
    ));
}
