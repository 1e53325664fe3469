#![allow(clippy::unwrap_used, clippy::expect_used)]

//! Slicing is sound: on random policy sets and requests, deciding against the
//! slice gives exactly what deciding against the whole set gives. And
//! `visible` over-approximates: whatever can be allowed (or held) is visible,
//! and it lists nothing the scope-only check (its fallback) would hide.

use proptest::prelude::*;
use serde_json::json;

use crate::engine::tests::{engine, model};
use crate::{Action, CallRequest, Decision, PolicyEngine, SHIPPED_SCHEMA};

const SERVERS: [&str; 3] = ["corp", "everything", "other"];
const NAMES: [&str; 3] = ["t0", "t1", "t2"];

fn principal() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("principal".to_owned()),
        Just("principal == Agent::\"bot\"".to_owned()),
        Just("principal in AgentGroup::\"writers\"".to_owned()),
    ]
}

fn action() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("action".to_owned()),
        Just("action == Action::\"call_tool\"".to_owned()),
        Just("action == Action::\"read_resource\"".to_owned()),
        Just("action in [Action::\"call_tool\", Action::\"get_prompt\"]".to_owned()),
    ]
}

fn resource() -> impl Strategy<Value = String> {
    let s = prop::sample::select(SERVERS.to_vec());
    let n = prop::sample::select(NAMES.to_vec());
    let ty = prop::sample::select(vec!["Tool", "Resource", "Prompt"]);
    prop_oneof![
        Just("resource".to_owned()),
        (ty.clone(), s.clone(), n.clone())
            .prop_map(|(t, s, n)| format!("resource == {t}::\"{s}/{n}\"")),
        (ty.clone(), s.clone(), n).prop_map(|(t, s, n)| format!("resource in {t}::\"{s}/{n}\"")),
        s.clone()
            .prop_map(|s| format!("resource in Server::\"{s}\"")),
        ty.clone().prop_map(|t| format!("resource is {t}")),
        (ty, s).prop_map(|(t, s)| format!("resource is {t} in Server::\"{s}\"")),
    ]
}

fn condition() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        (0..3i64).prop_map(|k| format!(" when {{ context.args has a && context.args.a == {k} }}")),
        Just(" unless { context.approval.granted }".to_owned()),
        Just(" when { context.session.id == \"s1\" }".to_owned()),
        // errors at run time for a > 1: exercises the fail-closed path
        Just(" when { context.args has a && context.args.a * 4611686018427387904 > 0 }".to_owned()),
        // on entities only: known when `visible` evaluates with the context unknown
        Just(" when { resource in Server::\"corp\" }".to_owned()),
        Just(" unless { principal in AgentGroup::\"writers\" }".to_owned()),
        Just(" when { principal.on_behalf_of in Group::\"eng\" && context.args has a }".to_owned()),
    ]
}

fn policy() -> impl Strategy<Value = String> {
    // two permits for each forbid, so that allows are common too
    (
        0..3u8,
        any::<bool>(),
        principal(),
        action(),
        resource(),
        condition(),
    )
        .prop_map(|(effect, approval, p, a, r, c)| {
            let (effect, note) = if effect < 2 {
                ("permit", "")
            } else if approval {
                ("forbid", "@approval(\"ask\") ")
            } else {
                ("forbid", "")
            };
            format!("{note}{effect}({p}, {a}, {r}){c};")
        })
}

#[derive(Debug, Clone)]
struct Req {
    agent: &'static str,
    action: Action,
    server: &'static str,
    name: &'static str,
    a: Option<i64>,
    granted: bool,
}

fn request() -> impl Strategy<Value = Req> {
    (
        prop::sample::select(vec!["bot", "bot", "intern", "mallory"]),
        prop::sample::select(vec![
            Action::CallTool,
            Action::ReadResource,
            Action::GetPrompt,
        ]),
        prop::sample::select(SERVERS.to_vec()),
        prop::sample::select(NAMES.to_vec()),
        prop::option::of(0..3i64),
        any::<bool>(),
    )
        .prop_map(|(agent, action, server, name, a, granted)| Req {
            agent,
            action,
            server,
            name,
            a,
            granted,
        })
}

/// Cedar reports reasons and errors in no fixed order.
fn normalized(d: Decision) -> Decision {
    let sort = |mut v: Vec<crate::PolicyRef>| {
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    };
    match d {
        Decision::Allow { reasons } => Decision::Allow {
            reasons: sort(reasons),
        },
        Decision::NeedsApproval { reasons } => Decision::NeedsApproval {
            reasons: sort(reasons),
        },
        Decision::Deny {
            reasons,
            mut errors,
        } => {
            errors.sort();
            Decision::Deny {
                reasons: sort(reasons),
                errors,
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn sliced_decisions_equal_unsliced_and_allowed_means_visible(
        policies in prop::collection::vec(policy(), 0..14),
        requests in prop::collection::vec(request(), 1..24),
    ) {
        let files: Vec<(String, String)> =
            vec![("gen.cedar".to_owned(), policies.join("\n"))];
        let e = PolicyEngine::from_texts(SHIPPED_SCHEMA, &files, &model()).unwrap();
        for r in &requests {
            let args = r.a.map(|a| json!({ "a": a }));
            let req = CallRequest {
                agent: r.agent,
                session: "s1",
                action: r.action,
                server: r.server,
                name: r.name,
                args: args.as_ref(),
                approval_granted: r.granted,
                labels: &[],
            };
            let sliced = e.decide(&req);
            prop_assert_eq!(
                normalized(sliced.clone()),
                normalized(e.decide_unsliced(&req)),
                "{:?}\n{}", r, policies.join("\n")
            );
            let visible = e.visible(r.agent, r.action, r.server, r.name);
            if matches!(sliced, Decision::Allow { .. } | Decision::NeedsApproval { .. }) {
                prop_assert!(visible, "allowed but hidden: {:?}\n{}", r, policies.join("\n"));
            }
            // Partial evaluation only sharpens the scope-only check: it never lists more.
            if visible {
                prop_assert!(
                    e.visible_by_scope_only(r.agent, r.action, r.server, r.name),
                    "visible beyond the scope check: {:?}\n{}", r, policies.join("\n")
                );
            }
        }
    }
}

#[test]
fn the_cache_stops_growing_at_its_bound() {
    let e = engine(&["permit(principal, action, resource);"]);
    for i in 0..super::MAX_CACHED_SLICES + 10 {
        let name = format!("tool{i}");
        let req = CallRequest {
            agent: "bot",
            session: "s",
            action: Action::CallTool,
            server: "corp",
            name: &name,
            args: None,
            approval_granted: false,
            labels: &[],
        };
        assert!(e.decide(&req).is_allow());
    }
    assert_eq!(e.cached_slices(), super::MAX_CACHED_SLICES);
}
