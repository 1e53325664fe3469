//! The stages, driven through the pipeline with frames in memory (see `testkit`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use airlock_approval::Verdict;
use airlock_control::{Kill, KillTarget};
use serde_json::json;

use crate::codes;
use crate::testkit::{call, error_code, frames, ok, Kit};

fn kill_of(target: KillTarget) -> Kill {
    Kill {
        id: 7,
        target,
        reason: "enough".into(),
        by: "priya".into(),
        origin: airlock_control::KillOrigin::Human,
        created_ns: 0,
        resumed_ns: None,
        resumed_by: None,
    }
}

// === request stages ===

#[test]
fn an_allowed_call_is_recorded_then_forwarded_byte_for_byte() {
    let mut k = Kit::new();
    let frame = call(1, "echo", json!({"text": "hi"}));
    let out = k.agent(std::slice::from_ref(&frame));
    assert_eq!(frames(&out.upstream), vec![frame]);
    assert!(out.agent.is_empty());
    let records = k.records();
    let decision = records.iter().find(|r| r.kind == "call").unwrap();
    assert_eq!(decision.decision.as_deref(), Some("allow"));
    // The answer ends the call and closes its record.
    let out = k.upstream(ok(1, json!({"content": []})));
    assert_eq!(frames(&out.agent)[0]["id"], 1);
    assert_eq!(k.pipeline.calls_known(), 0);
    let records = k.records();
    let result = records.iter().find(|r| r.kind == "result").unwrap();
    assert_eq!(result.status.as_deref(), Some("ok"));
    assert_eq!(result.ref_seq, Some(decision.seq));
}

#[test]
fn policy_denies_with_a_reason_and_nothing_moves() {
    let mut k = Kit::new();
    let out = k.agent(&[call(1, "forbidden", json!({}))]);
    assert!(out.upstream.is_empty());
    assert_eq!(
        error_code(&frames(&out.agent)[0]),
        Some(codes::DENIED as i64)
    );
    assert_eq!(
        k.pipeline.calls_known(),
        0,
        "a refused call leaves nothing behind"
    );
}

#[test]
fn the_kill_stage_refuses_a_killed_tool_and_a_stopped_pipeline_refuses_all() {
    let mut k = Kit::new();
    k.pipeline.set_kills(vec![kill_of(KillTarget::Tool {
        server: "corp".into(),
        tool: "echo".into(),
    })]);
    let out = k.agent(&[call(1, "echo", json!({})), call(2, "secret", json!({}))]);
    let answers = frames(&out.agent);
    assert_eq!(error_code(&answers[0]), Some(codes::KILLED as i64));
    assert_eq!(frames(&out.upstream)[0]["id"], 2, "another tool goes on");
    // A kill of the agent stops everything: in flight cancelled upstream and answered.
    let effect = k
        .pipeline
        .set_kills(vec![kill_of(KillTarget::Agent("bot".into()))])
        .expect("the pipeline stops");
    assert_eq!(
        frames(&effect.output.upstream)[0]["method"],
        "notifications/cancelled"
    );
    assert_eq!(
        error_code(&frames(&effect.output.agent)[0]),
        Some(codes::KILLED as i64)
    );
    assert_eq!(k.pipeline.calls_known(), 0);
    let out = k.agent(&[json!({"jsonrpc":"2.0","id":3,"method":"ping"})]);
    assert_eq!(
        error_code(&frames(&out.agent)[0]),
        Some(codes::KILLED as i64)
    );
    assert!(
        k.pipeline.set_kills(vec![]).is_none(),
        "a kill applies once"
    );
}

#[test]
fn the_breaker_stage_pauses_the_agent_at_its_budget() {
    let mut k = Kit::new();
    let out = k.agent(&[call(1, "delete", json!({}))]);
    assert_eq!(frames(&out.upstream).len(), 1);
    let out = k.agent(&[call(2, "delete", json!({}))]);
    assert!(out.upstream.is_empty());
    assert_eq!(
        error_code(&frames(&out.agent)[0]),
        Some(codes::KILLED as i64)
    );
    // The pause is in force at once, for every call.
    let out = k.agent(&[call(3, "echo", json!({}))]);
    assert_eq!(
        error_code(&frames(&out.agent)[0]),
        Some(codes::KILLED as i64)
    );
}

#[test]
fn the_redact_stage_cuts_upstream_credentials_out_of_every_server_frame() {
    let token = "tok-0123456789";
    let mut k = Kit::redacting(airlock_broker::Redactor::new(vec![(
        "forum_token".into(),
        airlock_broker::Secret::new(token),
    )]));
    // A relayed answer, an answer whose content labels the session, a notification.
    k.agent(&[call(1, "echo", json!({})), call(2, "secret", json!({}))]);
    let relayed = k.upstream(ok(1, json!({"text": format!("key {token}")})));
    let labelled = k.upstream(ok(2, json!({"content": [{"text": token}]})));
    let note = k.upstream(json!({"jsonrpc": "2.0", "method": "notifications/message",
                                 "params": {"data": format!("Bearer {token}")}}));
    for out in [&relayed, &labelled, &note] {
        let text = String::from_utf8(out.agent.clone()).unwrap();
        assert!(text.contains("[REDACTED:forum_token]"), "{text}");
        assert!(!text.contains(token), "{text}");
        frames(&out.agent);
    }
    assert_eq!(
        frames(&relayed.agent)[0]["result"]["text"],
        "key [REDACTED:forum_token]"
    );
    let records = format!("{:?}", k.records());
    assert!(!records.contains(token));
}

// === hold: one path for approved calls ===

fn public_post(id: i64) -> serde_json::Value {
    call(id, "post", json!({"channel": "public", "text": "hello"}))
}

#[test]
fn an_approved_call_reenters_the_stages_and_goes_through_once() {
    let mut k = Kit::new();
    let out = k.agent(&[public_post(1)]);
    assert!(out.upstream.is_empty(), "held, not forwarded");
    assert!(out.announce);
    assert_eq!(k.pipeline.calls_known(), 1);
    assert!(k.review().is_empty(), "still pending");
    k.vote("bob", Verdict::Approve);
    let out = k.review();
    assert_eq!(frames(&out.upstream), vec![public_post(1)]);
    assert_eq!(out.forwarded.len(), 1);
    let out = k.upstream(ok(1, json!({"content": []})));
    assert_eq!(frames(&out.agent)[0]["id"], 1);
    assert_eq!(k.pipeline.calls_known(), 0);
    let records = k.records();
    let allow = records
        .iter()
        .find(|r| r.kind == "call" && r.decision.as_deref() == Some("allow"))
        .unwrap();
    assert!(allow.reasons.iter().any(|r| r.starts_with("approval:")));
}

#[test]
fn an_approved_call_meets_the_kill_stage_again() {
    let mut k = Kit::new();
    k.agent(&[public_post(1)]);
    k.vote("bob", Verdict::Approve);
    k.pipeline.set_kills(vec![kill_of(KillTarget::Tool {
        server: "corp".into(),
        tool: "post".into(),
    })]);
    let out = k.review();
    assert!(out.upstream.is_empty());
    assert_eq!(
        error_code(&frames(&out.agent)[0]),
        Some(codes::KILLED as i64)
    );
    assert_eq!(k.pipeline.calls_known(), 0);
}

#[test]
fn a_denied_hold_is_answered_and_ends() {
    let mut k = Kit::new();
    k.agent(&[public_post(1)]);
    k.vote("bob", Verdict::Deny);
    let out = k.review();
    assert_eq!(
        error_code(&frames(&out.agent)[0]),
        Some(codes::APPROVAL_DENIED as i64)
    );
    assert_eq!(k.pipeline.calls_known(), 0);
}

// === the defects ===

#[test]
fn a_second_line_with_a_held_calls_id_in_the_same_batch_is_refused() {
    let mut k = Kit::new();
    let out = k.agent(&[public_post(5), call(5, "echo", json!({}))]);
    assert!(out.upstream.is_empty(), "neither goes upstream");
    let answers = frames(&out.agent);
    assert_eq!(answers.len(), 1);
    assert_eq!(error_code(&answers[0]), Some(codes::DUPLICATE_ID as i64));
    // And while held, the id stays taken.
    let out = k.agent(&[call(5, "echo", json!({}))]);
    assert_eq!(
        error_code(&frames(&out.agent)[0]),
        Some(codes::DUPLICATE_ID as i64)
    );
    k.vote("bob", Verdict::Approve);
    assert_eq!(frames(&k.review().upstream), vec![public_post(5)]);
}

#[test]
fn a_timed_out_id_stays_taken_until_the_late_answer_which_is_dropped() {
    let mut k = Kit::with(crate::testkit::POLICY, Duration::from_millis(1));
    k.agent(&[call(1, "echo", json!({}))]);
    std::thread::sleep(Duration::from_millis(5));
    let out = k.pipeline.expire();
    assert_eq!(
        frames(&out.upstream)[0]["method"],
        "notifications/cancelled"
    );
    assert_eq!(
        error_code(&frames(&out.agent)[0]),
        Some(codes::UPSTREAM_TIMEOUT as i64)
    );
    let out = k.agent(&[call(1, "secret", json!({}))]);
    assert_eq!(
        error_code(&frames(&out.agent)[0]),
        Some(codes::DUPLICATE_ID as i64)
    );
    // The late answer goes nowhere and frees the id.
    assert!(k.upstream(ok(1, json!({"content": []}))).agent.is_empty());
    assert_eq!(k.pipeline.calls_known(), 0);
    assert_eq!(
        frames(&k.agent(&[call(1, "echo", json!({}))]).upstream).len(),
        1
    );
}

#[test]
fn only_the_agents_own_call_in_flight_can_be_cancelled_upstream() {
    let mut k = Kit::new();
    k.agent(&[call(1, "echo", json!({}))]);
    let cancel = |id: serde_json::Value| json!({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId": id}});
    let out = k.agent(&[cancel(json!(0)), cancel(json!(2)), cancel(json!("x"))]);
    assert!(out.upstream.is_empty(), "nothing the agent does not own");
    let out = k.agent(&[cancel(json!(1))]);
    assert_eq!(frames(&out.upstream)[0]["params"]["requestId"], 1);
    // Its answer, if it still comes, is dropped; the id is then free.
    assert!(k.upstream(ok(1, json!({}))).agent.is_empty());
    assert_eq!(k.pipeline.calls_known(), 0);
    let refused = k
        .records()
        .into_iter()
        .filter(|r| {
            r.method.as_deref() == Some("notifications/cancelled")
                && r.decision.as_deref() == Some("deny")
        })
        .count();
    assert_eq!(refused, 3);
}

#[test]
fn a_request_with_an_unsafe_integer_id_is_answered_with_that_id() {
    let mut k = Kit::new();
    let out = k.agent_raw(br#"{"jsonrpc":"2.0","id":9007199254740993,"method":"ping"}"#);
    let line = String::from_utf8(out.agent).unwrap();
    assert!(line.contains(r#""id":9007199254740993,"#), "{line}");
    let out = k.agent_raw(b"{not json");
    assert!(String::from_utf8(out.agent)
        .unwrap()
        .contains(r#""id":null"#));
}

#[test]
fn an_answer_to_a_held_call_from_the_upstream_is_not_taken_for_it() {
    let mut k = Kit::new();
    k.agent(&[public_post(1)]);
    assert!(k.upstream(ok(1, json!({"content": []}))).agent.is_empty());
    assert_eq!(k.pipeline.calls_known(), 1, "still held");
}

#[test]
fn a_task_result_passes_the_response_stages_as_its_call() {
    let mut k = Kit::new();
    let mut create = call(1, "secret", json!({}));
    create["params"]["task"] = json!({"ttl": 60000});
    assert_eq!(frames(&k.agent(&[create]).upstream).len(), 1);
    let handle = json!({"task": {"taskId": "t-1", "status": "working"}});
    k.upstream(ok(1, handle));
    assert!(k.pipeline.labels().is_empty(), "a handle carries no data");
    // A task this session did not create is refused and never reaches the upstream.
    let other = json!({"jsonrpc":"2.0","id":2,"method":"tasks/result","params":{"taskId":"t-9"}});
    let out = k.agent(&[other]);
    assert!(out.upstream.is_empty());
    assert_eq!(
        error_code(&frames(&out.agent)[0]),
        Some(codes::DENIED as i64)
    );
    let own = json!({"jsonrpc":"2.0","id":3,"method":"tasks/result","params":{"taskId":"t-1"}});
    assert_eq!(frames(&k.agent(&[own]).upstream).len(), 1);
    k.upstream(ok(3, json!({"content": [{"type":"text","text":"s3cret"}]})));
    assert_eq!(*k.pipeline.labels(), vec!["confidential".to_string()]);
    let out = k.agent(&[call(4, "post", json!({"channel": "internal"}))]);
    assert_eq!(
        error_code(&frames(&out.agent)[0]),
        Some(codes::DENIED as i64)
    );
}

#[test]
fn resources_and_error_answers_with_data_label_the_session() {
    let mut k = Kit::new();
    let read = json!({"jsonrpc":"2.0","id":1,"method":"resources/read",
                      "params":{"uri":"file:///restricted/plan.txt"}});
    k.agent(&[read]);
    k.upstream(json!({"jsonrpc":"2.0","id":1,"error":{"code":-32603,"message":"x","data":{"leak":"s3cret"}}}));
    assert_eq!(*k.pipeline.labels(), vec!["confidential".to_string()]);

    let mut k = Kit::new();
    k.agent(&[call(1, "secret", json!({}))]);
    k.upstream(ok(
        1,
        json!({"isError": true, "content": [{"type":"text","text":"s3cret"}]}),
    ));
    assert_eq!(*k.pipeline.labels(), vec!["confidential".to_string()]);

    // An error with no data carries nothing.
    let mut k = Kit::new();
    k.agent(&[call(1, "secret", json!({}))]);
    k.upstream(json!({"jsonrpc":"2.0","id":1,"error":{"code":-32603,"message":"down"}}));
    assert!(k.pipeline.labels().is_empty());
}

#[test]
fn server_requests_are_answered_only_once_and_audited() {
    let mut k = Kit::new();
    let ask = json!({"jsonrpc":"2.0","id":"s1","method":"sampling/createMessage","params":{}});
    assert_eq!(frames(&k.upstream(ask).agent).len(), 1);
    let answer = json!({"jsonrpc":"2.0","id":"s1","result":{"role":"assistant"}});
    assert_eq!(
        frames(&k.agent(std::slice::from_ref(&answer)).upstream),
        vec![answer.clone()]
    );
    assert!(
        k.agent(&[answer]).upstream.is_empty(),
        "a second answer goes nowhere"
    );
    let records = k.records();
    let methods: Vec<(&str, &str)> = records
        .iter()
        .filter(|r| r.kind == "server_request")
        .map(|r| {
            (
                r.method.as_deref().unwrap_or(""),
                r.decision.as_deref().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        methods,
        vec![("sampling/createMessage", "allow"), ("(unknown)", "deny")]
    );
}

// === every call ends, whatever happens ===

mod interleavings {
    use proptest::prelude::*;

    use super::*;

    #[derive(Clone, Debug)]
    enum Event {
        Call(i64),
        Hold(i64),
        Answer(i64),
        Cancel(i64),
        Approve,
        Deny,
        Expire,
        Kill,
    }

    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            4 => (0..4i64).prop_map(Event::Call),
            2 => (0..4i64).prop_map(Event::Hold),
            4 => (0..4i64).prop_map(Event::Answer),
            2 => (0..4i64).prop_map(Event::Cancel),
            1 => Just(Event::Approve),
            1 => Just(Event::Deny),
            1 => Just(Event::Expire),
            1 => Just(Event::Kill),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
        #[test]
        fn once_every_call_has_ended_nothing_is_left(events in proptest::collection::vec(event(), 1..24)) {
            let mut k = Kit::with(crate::testkit::POLICY, Duration::from_millis(2));
            for e in &events {
                match e {
                    Event::Call(id) => { k.agent(&[call(*id, "echo", json!({}))]); }
                    Event::Hold(id) => { k.agent(&[public_post(*id)]); }
                    Event::Answer(id) => { k.upstream(ok(*id, json!({}))); }
                    Event::Cancel(id) => {
                        k.agent(&[json!({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId": id}})]);
                    }
                    Event::Approve | Event::Deny => {
                        let verdict = if matches!(e, Event::Approve) { Verdict::Approve } else { Verdict::Deny };
                        if k.pipeline.calls_known() > 0 && pending(&k) { k.vote("bob", verdict); }
                        k.review();
                    }
                    Event::Expire => {
                        std::thread::sleep(Duration::from_millis(3));
                        k.pipeline.expire();
                    }
                    Event::Kill => {
                        k.pipeline.set_kills(vec![kill_of(KillTarget::Agent("bot".into()))]);
                    }
                }
            }
            // End every call: the upstream answers all it was sent, held calls are denied.
            for id in 0..4 {
                k.upstream(ok(id, json!({})));
            }
            while pending(&k) {
                k.vote("bob", Verdict::Deny);
            }
            k.review();
            for id in 0..4 {
                k.upstream(ok(id, json!({})));
            }
            prop_assert_eq!(k.pipeline.calls_known(), 0);
        }
    }

    fn pending(k: &Kit) -> bool {
        let store = airlock_approval::ApprovalStore::open(&k.db).unwrap();
        !store
            .list(&airlock_approval::ListFilter {
                states: vec![airlock_approval::State::Pending],
                agent: None,
                session: None,
                limit: 10,
            })
            .unwrap()
            .is_empty()
    }
}

#[test]
fn a_reload_replaces_flow_rules_and_breakers_with_the_policies() {
    let mut k = Kit::new();
    let old = k.pipeline.policy.rules();
    let text = crate::testkit::CONFIG
        .replace("tools = [\"corp/secret\"]", "tools = [\"corp/other\"]")
        .replace("max_calls = 1", "max_calls = 5");
    let config = airlock_config::parse(&text, std::path::Path::new("airlock.toml")).unwrap();
    k.pipeline.policy.replace(crate::Rules {
        engine: old.engine.clone(),
        allow_methods: vec![],
        breakers: airlock_control::BreakerSet::from_config(&config),
        flow: airlock_flow::FlowRules::from_config(&config),
    });
    k.agent(&[call(1, "secret", json!({}))]);
    k.upstream(ok(1, json!({"content": []})));
    assert!(k.pipeline.labels().is_empty(), "the old rule is gone");
    for id in 2..4 {
        assert_eq!(
            frames(&k.agent(&[call(id, "delete", json!({}))]).upstream).len(),
            1
        );
    }
}

#[test]
fn a_server_request_the_agent_never_answers_is_forgotten_after_the_timeout() {
    let mut k = Kit::with(crate::testkit::POLICY, Duration::from_millis(1));
    let ask = json!({"jsonrpc":"2.0","id":"s1","method":"roots/list"});
    k.upstream(ask);
    assert_eq!(k.pipeline.calls_known(), 1);
    std::thread::sleep(Duration::from_millis(5));
    k.pipeline.expire();
    assert_eq!(k.pipeline.calls_known(), 0);
    let late = json!({"jsonrpc":"2.0","id":"s1","result":{"roots":[]}});
    assert!(
        k.agent(&[late]).upstream.is_empty(),
        "a late answer is refused"
    );
}
