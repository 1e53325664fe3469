#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{json, Value};

use super::*;
use crate::{AgentEntity, HumanEntity};

pub(crate) fn model() -> EntityModel {
    EntityModel {
        agents: vec![
            AgentEntity {
                id: "bot".into(),
                on_behalf_of: "alice".into(),
                task: "triage".into(),
                groups: vec!["writers".into()],
            },
            AgentEntity {
                id: "intern".into(),
                on_behalf_of: "bob".into(),
                task: "triage".into(),
                groups: vec![],
            },
        ],
        humans: vec![
            HumanEntity {
                id: "alice".into(),
                groups: vec!["eng".into()],
            },
            HumanEntity {
                id: "bob".into(),
                groups: vec![],
            },
        ],
        tasks: vec!["triage".into()],
        servers: vec!["corp".into(), "everything".into()],
    }
}

pub(crate) fn engine(policies: &[&str]) -> PolicyEngine {
    let files: Vec<(String, String)> = policies
        .iter()
        .enumerate()
        .map(|(i, p)| (format!("p{i}.cedar"), (*p).to_owned()))
        .collect();
    PolicyEngine::from_texts(SHIPPED_SCHEMA, &files, &model()).unwrap()
}

pub(crate) fn call<'a>(agent: &'a str, name: &'a str, args: Option<&'a Value>) -> CallRequest<'a> {
    CallRequest {
        agent,
        session: "s1",
        action: Action::CallTool,
        server: "corp",
        name,
        args,
        approval_granted: false,
        labels: &[],
    }
}

fn ids(d: &Decision) -> Vec<&str> {
    d.reasons().iter().map(|r| r.id.as_str()).collect()
}

const PERMIT_ALL: &str = r#"@id("all") permit(principal, action, resource);"#;

#[test]
fn no_permit_is_a_default_deny() {
    let e = engine(&[r#"permit(principal, action, resource == Tool::"corp/other");"#]);
    assert_eq!(
        e.decide(&call("bot", "forum_post", None)),
        Decision::Deny {
            reasons: vec![],
            errors: vec![NO_PERMIT.to_owned()]
        }
    );
    let empty = engine(&[]);
    assert_eq!(
        empty.decide(&call("bot", "forum_post", None)),
        Decision::Deny {
            reasons: vec![],
            errors: vec![NO_PERMIT.to_owned()]
        }
    );
}

#[test]
fn a_permit_allows_and_names_itself() {
    let e = engine(&[
        "// first file\n\n  @id(\"read\")\n  @reason(\"reading is fine\")\n  permit(principal, action == Action::\"call_tool\", resource == Tool::\"corp/forum_read\");",
    ]);
    assert_eq!(
        e.decide(&call("bot", "forum_read", None)),
        Decision::Allow {
            reasons: vec![PolicyRef {
                id: "read".into(),
                reason: Some("reading is fine".into()),
                approval: None,
                location: "p0.cedar:3:3".into(),
            }]
        }
    );
    // the same tool on another server, and another action, are not covered
    let mut other = call("bot", "forum_read", None);
    other.server = "everything";
    assert!(!e.decide(&other).is_allow());
    let mut read = call("bot", "forum_read", None);
    read.action = Action::ReadResource;
    assert!(!e.decide(&read).is_allow());
}

#[test]
fn a_forbid_overrides_a_permit() {
    let e = engine(&[
        PERMIT_ALL,
        r#"@id("no-acl") @reason("ACLs are for humans")
           forbid(principal, action, resource == Tool::"corp/acl_set");"#,
    ]);
    let d = e.decide(&call("bot", "acl_set", None));
    assert_eq!(
        d,
        Decision::Deny {
            reasons: vec![PolicyRef {
                id: "no-acl".into(),
                reason: Some("ACLs are for humans".into()),
                approval: None,
                location: "p1.cedar:1:1".into(),
            }],
            errors: vec![]
        }
    );
    assert_eq!(ids(&e.decide(&call("bot", "forum_read", None))), ["all"]);
}

#[test]
fn unknown_agents_are_denied_and_see_nothing() {
    let e = engine(&[PERMIT_ALL]);
    assert_eq!(
        e.decide(&call("mallory", "forum_read", None)),
        Decision::Deny {
            reasons: vec![],
            errors: vec![UNKNOWN_AGENT.to_owned()]
        }
    );
    assert!(!e.visible("mallory", Action::CallTool, "corp", "forum_read"));
    assert!(e.visible("bot", Action::CallTool, "corp", "forum_read"));
}

/// DESIGN.md's trap: Cedar skips a forbid whose condition errors, so plain
/// Cedar says Allow. Strict validation rules out unguarded reads of optional
/// attributes, but reading an entity the store lacks, or overflowing, still
/// errors at run time — and must deny.
#[test]
fn an_erroring_forbid_denies_instead_of_being_skipped() {
    let ghost = r#"@id("ghost") forbid(principal, action, resource)
        when { Agent::"ghost".task == Task::"triage" };"#;
    let overflow = r#"@id("overflow") forbid(principal, action, resource)
        when { context.args has cpus && context.args.cpus * 4611686018427387904 > 0 };"#;
    for (forbid, args) in [(ghost, json!({})), (overflow, json!({"cpus": 4}))] {
        let e = engine(&[PERMIT_ALL, forbid]);
        // What Cedar alone answers, on the same policies and entities:
        let req = call("bot", "forum_post", Some(&args));
        let slice = e
            .slice_for("bot", Action::CallTool, "corp", "forum_post")
            .unwrap();
        let raw = e.evaluate(&slice, &req, false).unwrap();
        assert_eq!(raw.decision(), CedarDecision::Allow, "the trap is real");
        assert_eq!(raw.diagnostics().errors().count(), 1);

        let Decision::Deny { reasons, errors } = e.decide(&req) else {
            panic!("must deny");
        };
        let id = if forbid == ghost { "ghost" } else { "overflow" };
        assert_eq!(
            reasons.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            [id]
        );
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].starts_with(&format!("policy {id}: ")),
            "{errors:?}"
        );
    }
}

#[test]
fn an_erroring_permit_also_denies() {
    let e = engine(&[
        PERMIT_ALL,
        r#"@id("p") permit(principal, action, resource) when { Agent::"ghost".task == Task::"triage" };"#,
    ]);
    let d = e.decide(&call("bot", "forum_read", None));
    assert!(
        matches!(&d, Decision::Deny { errors, .. } if errors.len() == 1),
        "{d:?}"
    );
    assert_eq!(ids(&d), ["p"]);
}

const PUBLIC_POST_APPROVAL: &str = r#"
@id("public-post")
@approval("public posts need a human sign-off")
forbid(principal, action == Action::"call_tool", resource == Tool::"corp/forum_post")
when { context.args has channel && context.args.channel == "public" }
unless { context.approval.granted };
"#;

#[test]
fn approval_holds_then_allows() {
    let e = engine(&[PERMIT_ALL, PUBLIC_POST_APPROVAL]);
    let public = json!({"channel": "public", "title": "hi", "body": "x"});
    let first = e.decide(&call("bot", "forum_post", Some(&public)));
    assert_eq!(
        first,
        Decision::NeedsApproval {
            reasons: vec![PolicyRef {
                id: "public-post".into(),
                reason: None,
                approval: Some("public posts need a human sign-off".into()),
                location: "p1.cedar:2:1".into(),
            }]
        }
    );
    let mut approved = call("bot", "forum_post", Some(&public));
    approved.approval_granted = true;
    assert_eq!(ids(&e.decide(&approved)), ["all"]);
    assert!(e.decide(&approved).is_allow());

    let general = json!({"channel": "general"});
    assert!(e
        .decide(&call("bot", "forum_post", Some(&general)))
        .is_allow());
    assert!(e.visible("bot", Action::CallTool, "corp", "forum_post"));
}

#[test]
fn approval_is_not_offered_when_it_could_not_help() {
    let public = json!({"channel": "public"});
    // No permit: approving would still end in a deny.
    let e = engine(&[PUBLIC_POST_APPROVAL]);
    assert_eq!(
        e.decide(&call("bot", "forum_post", Some(&public))),
        Decision::Deny {
            reasons: vec![],
            errors: vec![NO_PERMIT.to_owned()]
        }
    );
    // A plain forbid applies too: not every determining policy is @approval.
    let e = engine(&[
        PERMIT_ALL,
        PUBLIC_POST_APPROVAL,
        r#"@id("no-posts") forbid(principal, action, resource == Tool::"corp/forum_post");"#,
    ]);
    let d = e.decide(&call("bot", "forum_post", Some(&public)));
    assert!(matches!(d, Decision::Deny { .. }));
    let mut got = ids(&d);
    got.sort_unstable();
    assert_eq!(got, ["no-posts", "public-post"]);
    // An @approval forbid that ignores `approval.granted` denies after approval too.
    let e = engine(&[
        PERMIT_ALL,
        r#"@id("stuck") @approval("never") forbid(principal, action, resource == Tool::"corp/forum_post");"#,
    ]);
    let d = e.decide(&call("bot", "forum_post", None));
    assert_eq!(
        d,
        Decision::Deny {
            reasons: vec![PolicyRef {
                id: "stuck".into(),
                reason: None,
                approval: Some("never".into()),
                location: "p1.cedar:1:1".into(),
            }],
            errors: vec![]
        }
    );
}

#[test]
fn arguments_of_the_wrong_type_are_denied_not_misread() {
    let e = engine(&[
        PERMIT_ALL,
        r#"@id("public") forbid(principal, action, resource)
           when { context.args has channel && context.args.channel == "public" };"#,
        r#"@id("big") forbid(principal, action, resource)
           when { context.args has cpus && context.args.cpus > 8 };"#,
    ]);
    // As Cedar values these would compare unequal (or error); the schema
    // check denies them up front with a clear reason.
    for (args, why) in [
        (
            json!({"channel": ["public"]}),
            "argument channel must be a String, not an array",
        ),
        (
            json!({"channel": 5}),
            "argument channel must be a String, not an integer",
        ),
        (
            json!({"cpus": "64"}),
            "argument cpus must be a Long (integer), not a string",
        ),
        (
            json!({"cpus": 64.5}),
            "argument cpus must be a Long (integer), not a fractional number",
        ),
    ] {
        assert_eq!(
            e.decide(&call("bot", "job_run", Some(&args))),
            Decision::Deny {
                reasons: vec![],
                errors: vec![why.to_owned()]
            },
            "{args}"
        );
    }
    // No policy reads `recursive`: its type does not matter.
    assert!(e
        .decide(&call("bot", "job_run", Some(&json!({"recursive": "yes"}))))
        .is_allow());
    for args in [
        json!({"cpus": 4}),
        json!({"cpus": 4.0}),
        json!({"channel": "general"}),
    ] {
        assert!(
            e.decide(&call("bot", "job_run", Some(&args))).is_allow(),
            "{args}"
        );
    }
    assert_eq!(
        ids(&e.decide(&call("bot", "job_run", Some(&json!({"cpus": 9.0}))))),
        ["big"]
    );
}

#[test]
fn undeclared_arguments_are_ignored_and_non_objects_denied() {
    let e = engine(&[
        r#"permit(principal, action, resource) when { context.args has channel && context.args.channel == "general" };"#,
    ]);
    let args = json!({"channel": "general", "whatever": {"deep": [1, 2.5, null]}, "n": null});
    assert!(e.decide(&call("bot", "forum_post", Some(&args))).is_allow());
    let d = e.decide(&call("bot", "forum_post", Some(&json!(["general"]))));
    assert_eq!(
        d,
        Decision::Deny {
            reasons: vec![],
            errors: vec!["the call's arguments are not a JSON object".into()]
        }
    );
}

#[test]
fn groups_hierarchy_session_and_other_actions() {
    let e = engine(&[
        r#"@id("writers") permit(principal in AgentGroup::"writers", action == Action::"call_tool", resource in Server::"corp");"#,
        r#"@id("eng") permit(principal, action == Action::"read_resource", resource in Server::"corp")
           when { principal.on_behalf_of in Group::"eng" && principal.task == Task::"triage" };"#,
        r#"@id("prompt") permit(principal == Agent::"intern", action == Action::"get_prompt", resource == Prompt::"corp/summary")
           when { context.session.id == "s1" };"#,
    ]);
    assert_eq!(
        ids(&e.decide(&call("bot", "forum_post", None))),
        ["writers"]
    );
    assert!(!e.decide(&call("intern", "forum_post", None)).is_allow());

    let read = |agent| CallRequest {
        action: Action::ReadResource,
        name: "file:///etc/motd",
        ..call(agent, "", None)
    };
    assert_eq!(ids(&e.decide(&read("bot"))), ["eng"]);
    assert!(!e.decide(&read("intern")).is_allow());

    let prompt = |session| CallRequest {
        action: Action::GetPrompt,
        session,
        ..call("intern", "summary", None)
    };
    assert_eq!(ids(&e.decide(&prompt("s1"))), ["prompt"]);
    assert!(!e.decide(&prompt("s2")).is_allow());
}

#[test]
fn server_names_with_a_slash_are_refused() {
    let e = engine(&[PERMIT_ALL]);
    let mut req = call("bot", "c", None);
    req.server = "corp/b";
    let d = e.decide(&req);
    assert!(
        matches!(&d, Decision::Deny { errors, .. } if errors[0].contains("may not contain '/'")),
        "{d:?}"
    );
    assert!(!e.visible("bot", Action::CallTool, "corp/b", "c"));

    let mut m = model();
    m.servers.push("a/b".into());
    let err = PolicyEngine::from_texts(SHIPPED_SCHEMA, &[], &m).unwrap_err();
    assert_eq!(
        err.to_string(),
        "<entity model>: server name \"a/b\" may not contain '/'"
    );
}

#[test]
fn visibility_over_approximates_conditions() {
    let e = engine(&[
        // conditional permit → visible (arguments might satisfy it)
        r#"permit(principal, action, resource == Tool::"corp/forum_post") when { context.args has channel && context.args.channel == "general" };"#,
        // unconditional forbid → hidden even though a permit covers it
        r#"permit(principal, action, resource in Server::"corp");"#,
        r#"forbid(principal == Agent::"intern", action, resource == Tool::"corp/acl_set");"#,
        // conditional forbid → still visible
        r#"forbid(principal, action, resource == Tool::"corp/repo_delete") when { context.args has recursive && context.args.recursive };"#,
        // a permit for one agent only
        r#"permit(principal == Agent::"bot", action, resource == Tool::"everything/echo");"#,
        PUBLIC_POST_APPROVAL,
    ]);
    let vis = |agent, server, name| e.visible(agent, Action::CallTool, server, name);
    assert!(vis("intern", "corp", "forum_post"));
    assert!(vis("bot", "corp", "acl_set"));
    assert!(!vis("intern", "corp", "acl_set"));
    assert!(vis("intern", "corp", "repo_delete"));
    assert!(vis("bot", "everything", "echo"));
    assert!(
        !vis("intern", "everything", "echo"),
        "no permit names it for intern"
    );
    assert!(!vis("bot", "everything", "add"), "no permit names it");
    assert!(!e.visible("bot", Action::GetPrompt, "everything", "echo"));
}

#[test]
fn slices_hold_only_what_can_apply_and_are_cached() {
    let mut policies = vec![PERMIT_ALL.to_owned()];
    for i in 0..50 {
        policies.push(format!(
            r#"forbid(principal, action, resource == Tool::"corp/t{i}") when {{ context.args has a && context.args.a == {i} }};"#
        ));
    }
    policies.push(r#"forbid(principal, action, resource in Server::"everything") when { context.args has b };"#.into());
    policies.push(r#"permit(principal, action, resource is Tool in Server::"corp");"#.into());
    let refs: Vec<&str> = policies.iter().map(String::as_str).collect();
    let e = engine(&refs);
    // global (1) + that tool (1) + `is Tool in Server::"corp"` (server bucket)
    assert_eq!(e.slice_size(Action::CallTool, "corp", "t7"), 3);
    assert_eq!(e.slice_size(Action::CallTool, "everything", "echo"), 2);
    assert_eq!(e.slice_size(Action::CallTool, "other", "x"), 1);

    assert_eq!(e.cached_slices(), 0);
    let seven = json!({"a": 7});
    assert!(!e.decide(&call("bot", "t7", Some(&seven))).is_allow());
    assert!(e.decide(&call("bot", "t8", Some(&seven))).is_allow());
    assert!(e.decide(&call("bot", "t7", None)).is_allow());
    assert_eq!(e.cached_slices(), 2);
}

#[test]
fn policies_lists_every_policy_in_load_order() {
    let e = engine(&[
        "permit(principal, action, resource);\npermit(principal, action, resource); forbid(principal, action, resource);",
        PUBLIC_POST_APPROVAL,
    ]);
    let got = e.policies();
    let brief: Vec<(&str, &str, &str)> = got
        .iter()
        .map(|p| (p.id.as_str(), p.effect, p.location.as_str()))
        .collect();
    assert_eq!(
        brief,
        [
            ("p0.cedar:1", "permit", "p0.cedar:1:1"),
            ("p0.cedar:2", "permit", "p0.cedar:2:1"),
            ("p0.cedar:2:38", "forbid", "p0.cedar:2:38"),
            ("public-post", "forbid", "p1.cedar:2:1"),
        ]
    );
    assert_eq!(
        got[3].approval.as_deref(),
        Some("public posts need a human sign-off")
    );
}

#[test]
fn digest_covers_schema_names_and_texts_unambiguously() {
    let m = model();
    let d = |schema: &str, files: &[(&str, &str)]| {
        let files: Vec<(String, String)> = files
            .iter()
            .map(|(a, b)| ((*a).into(), (*b).into()))
            .collect();
        PolicyEngine::from_texts(schema, &files, &m)
            .unwrap()
            .digest()
            .to_owned()
    };
    let p = "permit(principal, action, resource);";
    let base = d(SHIPPED_SCHEMA, &[("a.cedar", p)]);
    assert_eq!(base.len(), 64);
    assert!(base.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(base, d(SHIPPED_SCHEMA, &[("a.cedar", p)]));
    assert_ne!(base, d(SHIPPED_SCHEMA, &[("b.cedar", p)]));
    assert_ne!(base, d(SHIPPED_SCHEMA, &[("a.cedar", &format!("{p}\n"))]));
    assert_ne!(base, d(&format!("{SHIPPED_SCHEMA}\n"), &[("a.cedar", p)]));
    assert_ne!(
        d(SHIPPED_SCHEMA, &[("a", ""), ("b", p)]),
        d(SHIPPED_SCHEMA, &[("b", p), ("a", "")])
    );
}

#[test]
fn the_engine_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<PolicyEngine>();
}

#[test]
fn warnings_name_what_the_config_lacks() {
    let e = engine(&[
        r#"@id("t") permit(principal == Agent::"bot", action, resource == Tool::"corp/forum_pst");"#,
        r#"@id("s") permit(principal == Agent::"robot", action, resource in Server::"crop");"#,
        r#"@id("h") permit(principal, action, resource == Tool::"nowhere/x") when { principal.on_behalf_of == Human::"carol" };"#,
        r#"@id("ok") permit(principal in AgentGroup::"writers", action, resource == Tool::"everything/echo");"#,
    ]);
    let known = KnownTargets {
        servers: vec!["corp".into(), "everything".into()],
        tools: [
            ("corp".to_owned(), vec!["forum_post".to_owned()]),
            ("everything".to_owned(), vec![]),
        ]
        .into(),
    };
    assert_eq!(
        e.warnings(&known),
        [
            r#"p0.cedar:1:1: policy t names Tool::"corp/forum_pst" but server corp has no tool forum_pst"#,
            r#"p1.cedar:1:1: policy s names Agent::"robot" but there is no agent robot"#,
            r#"p1.cedar:1:1: policy s names Server::"crop" but there is no server crop"#,
            r#"p2.cedar:1:1: policy h names Human::"carol" but there is no human carol"#,
            r#"p2.cedar:1:1: policy h names Tool::"nowhere/x" but there is no server nowhere"#,
        ]
    );
    assert_eq!(
        engine(&[]).warnings(&known),
        ["no policies: every call will be denied"]
    );
    assert_eq!(
        engine(&["forbid(principal, action, resource);"]).warnings(&known),
        ["no permit policies: every call will be denied"]
    );
}

#[test]
fn warnings_flag_approval_annotations_that_cannot_work() {
    let e = engine(&[
        PERMIT_ALL,
        PUBLIC_POST_APPROVAL,
        r#"@id("stuck") @approval("x") forbid(principal, action, resource == Tool::"corp/forum_post");"#,
        r#"@id("odd") @approval("x") permit(principal, action, resource == Tool::"corp/forum_post");"#,
    ]);
    let known = KnownTargets {
        servers: vec!["corp".into()],
        tools: Default::default(),
    };
    assert_eq!(
        e.warnings(&known),
        [
            "p2.cedar:1:1: policy stuck has @approval but never reads context.approval.granted: approving cannot unblock it",
            "p3.cedar:1:1: policy odd is a permit with @approval: only forbids hold calls for approval",
        ]
    );
}

#[test]
fn cedar_validation_warnings_are_passed_on() {
    let e = engine(&[
        PERMIT_ALL,
        "\n@id(\"never\") permit(principal, action == Action::\"read_resource\", resource == Tool::\"corp/x\");",
    ]);
    let known = KnownTargets {
        servers: vec!["corp".into()],
        tools: Default::default(),
    };
    let mut w = e.warnings(&known);
    w.sort();
    assert_eq!(
        w,
        [
            "p1.cedar:2:1: policy never: for policy `never`, policy is impossible: the policy expression evaluates to false for all valid requests",
            "p1.cedar:2:1: policy never: for policy `never`, unable to find an applicable action given the policy scope constraints",
        ]
    );
}

// === annotations ===

#[test]
fn annotations_are_read_by_policy_id() {
    let e = engine(&[
        r#"@approvers("eng") @quorum("2") @id("hold") forbid(principal, action == Action::"call_tool", resource)
           unless { context.approval.granted };"#,
    ]);
    assert_eq!(e.annotation("hold", "approvers"), Some("eng"));
    assert_eq!(e.annotation("hold", "quorum"), Some("2"));
    assert_eq!(e.annotation("hold", "four_eyes"), None);
    assert_eq!(e.annotation("nope", "quorum"), None);
}

#[test]
fn session_labels_reach_the_context() {
    let e = engine(&[
        r#"permit(principal, action == Action::"call_tool", resource);"#,
        r#"@id("no-leaks") forbid(principal, action == Action::"call_tool", resource == Tool::"corp/forum_post")
           when { context.session.labels.contains("confidential") };"#,
    ]);
    let clean = call("bot", "forum_post", None);
    assert!(e.decide(&clean).is_allow());
    let labels = ["confidential".to_owned()];
    let tainted = CallRequest {
        labels: &labels,
        ..clean
    };
    assert_eq!(ids(&e.decide(&tainted)), ["no-leaks"]);
    // Labels do not touch other tools.
    assert!(e
        .decide(&CallRequest {
            name: "forum_list",
            ..tainted
        })
        .is_allow());
}

#[test]
fn context_free_decisions_are_made_once_per_agent_and_stay_exact() {
    let e = engine(&[
        r#"permit(principal == Agent::"bot", action == Action::"call_tool", resource == Tool::"corp/forum_list");"#,
    ]);
    let args = json!({"channel": "internal"});
    for _ in 0..3 {
        assert!(e.decide(&call("bot", "forum_list", Some(&args))).is_allow());
        assert!(e.decide(&call("bot", "forum_list", None)).is_allow());
        // Another agent's decision is its own, memoized or not.
        assert!(!e
            .decide(&call("intern", "forum_list", Some(&args)))
            .is_allow());
        // Arguments that are not an object are refused whatever the memo holds.
        let bad = json!([1, 2]);
        assert!(!e.decide(&call("bot", "forum_list", Some(&bad))).is_allow());
        assert!(!e
            .decide(&call("ghost", "forum_list", Some(&args)))
            .is_allow());
    }
    let slice = e
        .slice_for("bot", Action::CallTool, "corp", "forum_list")
        .unwrap();
    assert!(e.context_free(&slice, Action::CallTool));
    assert!(slice.memo.get("bot").is_some_and(|d| d.is_allow()));
    assert!(slice.memo.get("intern").is_some_and(|d| !d.is_allow()));
}

#[test]
fn a_slice_reading_the_context_is_judged_per_call() {
    let e = engine(&[
        r#"permit(principal, action == Action::"call_tool", resource == Tool::"corp/forum_post")
           when { context.args has channel && context.args.channel == "internal" };"#,
    ]);
    let slice = e
        .slice_for("bot", Action::CallTool, "corp", "forum_post")
        .unwrap();
    assert!(!e.context_free(&slice, Action::CallTool));
    let internal = json!({"channel": "internal"});
    let public = json!({"channel": "public"});
    for _ in 0..2 {
        assert!(e
            .decide(&call("bot", "forum_post", Some(&internal)))
            .is_allow());
        assert!(!e
            .decide(&call("bot", "forum_post", Some(&public)))
            .is_allow());
    }
    assert!(slice.memo.get("bot").is_none());
}

#[test]
fn a_registered_agent_is_decided_for_exactly_like_a_declared_one() {
    let registered = AgentEntity {
        id: "reg".into(),
        on_behalf_of: "alice".into(),
        task: "triage".into(),
        groups: vec!["writers".into()],
    };
    let e = engine(&[
        r#"@id("reg-reads") permit(principal == Agent::"reg", action, resource == Tool::"corp/read");"#,
        r#"@id("writers") permit(principal in AgentGroup::"writers", action, resource == Tool::"corp/post");"#,
        r#"@id("alices") permit(principal, action, resource == Tool::"corp/ask") when { principal.on_behalf_of == Human::"alice" };"#,
    ]);
    // Before: unknown, so refused.
    assert_eq!(
        e.decide(&call("reg", "read", None)),
        Decision::Deny {
            reasons: vec![],
            errors: vec![UNKNOWN_AGENT.to_owned()]
        }
    );
    let with = e.with_agents(std::slice::from_ref(&registered)).unwrap();
    assert_eq!(ids(&with.decide(&call("reg", "read", None))), ["reg-reads"]);
    assert_eq!(ids(&with.decide(&call("reg", "post", None))), ["writers"]);
    assert_eq!(ids(&with.decide(&call("reg", "ask", None))), ["alices"]);
    assert!(!with.decide(&call("reg", "other", None)).is_allow());
    assert!(with.visible("reg", Action::CallTool, "corp", "read"));
    // The declared agents decide as before; the original engine is untouched.
    assert_eq!(ids(&with.decide(&call("bot", "post", None))), ["writers"]);
    assert!(!e.decide(&call("reg", "read", None)).is_allow());
    assert_eq!(with.digest(), e.digest());
}

#[test]
fn a_registered_agent_needs_a_declared_human_and_task_and_a_name_of_its_own() {
    let e = engine(&[PERMIT_ALL]);
    let agent = |id: &str, human: &str, task: &str| AgentEntity {
        id: id.into(),
        on_behalf_of: human.into(),
        task: task.into(),
        groups: vec![],
    };
    let err = |a: AgentEntity| e.with_agents(&[a]).unwrap_err().to_string();
    assert_eq!(
        err(agent("reg", "mallory", "triage")),
        "<entity model>: agent \"reg\" acts for human \"mallory\", which is not declared \
         ([humans.mallory])"
    );
    assert!(err(agent("reg", "alice", "nope")).contains("task \"nope\", which is not declared"));
    assert!(err(agent("bot", "alice", "triage")).contains("\"bot\" is already declared"));
}

/// `visible` with the context unknown, and what the scope-only check (the fallback) says.
fn vis_and_scope(e: &PolicyEngine, agent: &str, server: &str, name: &str) -> (bool, bool) {
    let slice = e.slice_for(agent, Action::CallTool, server, name).unwrap();
    (
        e.visible(agent, Action::CallTool, server, name),
        e.visible_by_scope(&slice, agent, Action::CallTool),
    )
}

#[test]
fn a_permit_whose_condition_names_other_tools_hides_this_one() {
    let e = engine(&[
        r#"permit(principal == Agent::"bot", action == Action::"call_tool", resource)
           when { [Tool::"everything/echo", Tool::"local/get-sum"].contains(resource) };"#,
    ]);
    assert_eq!(vis_and_scope(&e, "bot", "everything", "echo"), (true, true));
    // The scope matches, so the scope-only check listed it; no call can be allowed.
    assert_eq!(
        vis_and_scope(&e, "bot", "everything", "get-env"),
        (false, true)
    );
    assert!(!e
        .decide(&CallRequest {
            server: "everything",
            ..call("bot", "get-env", None)
        })
        .is_allow());
    assert!(!e.visible("intern", Action::CallTool, "everything", "echo"));
    assert!(!e.visible("bot", Action::GetPrompt, "everything", "echo"));
}

#[test]
fn a_permit_on_the_arguments_keeps_its_tool_visible() {
    let e = engine(&[
        r#"permit(principal, action == Action::"call_tool", resource == Tool::"corp/forum_post")
           when { context.args has channel && context.args.channel == "general" };"#,
        r#"permit(principal, action == Action::"call_tool", resource)
           when { resource == Tool::"corp/forum_read" && context.session.id == "s1" };"#,
    ]);
    assert!(e.visible("intern", Action::CallTool, "corp", "forum_post"));
    assert!(e.visible("intern", Action::CallTool, "corp", "forum_read"));
    // The second permit's `resource ==` is known: false for every other tool.
    assert!(!e.visible("intern", Action::CallTool, "corp", "acl_set"));
}

#[test]
fn a_forbid_that_holds_whatever_the_context_hides() {
    let e = engine(&[
        PERMIT_ALL,
        r#"forbid(principal == Agent::"intern", action, resource == Tool::"corp/acl_set");"#,
        // Conditioned, but only on entities: known at list time.
        r#"forbid(principal, action, resource) when { principal.on_behalf_of == Human::"bob" && resource in Server::"everything" };"#,
        // Conditioned on the arguments: some call may pass.
        r#"forbid(principal, action, resource == Tool::"corp/repo_delete") when { context.args has recursive && context.args.recursive };"#,
    ]);
    assert!(!e.visible("intern", Action::CallTool, "corp", "acl_set"));
    assert!(e.visible("bot", Action::CallTool, "corp", "acl_set"));
    assert_eq!(
        vis_and_scope(&e, "intern", "everything", "echo"),
        (false, true)
    );
    assert!(e.visible("bot", Action::CallTool, "everything", "echo"));
    assert!(e.visible("intern", Action::CallTool, "corp", "repo_delete"));
}

#[test]
fn an_approval_forbid_keeps_its_tool_visible() {
    let always = r#"@id("always-ask") @approval("every ACL change needs a human")
forbid(principal, action == Action::"call_tool", resource == Tool::"corp/acl_set")
unless { context.approval.granted };"#;
    let e = engine(&[PERMIT_ALL, PUBLIC_POST_APPROVAL, always]);
    assert!(e.visible("bot", Action::CallTool, "corp", "forum_post"));
    // Every call is held: still callable once a human approves.
    assert!(matches!(
        e.decide(&call("bot", "acl_set", None)),
        Decision::NeedsApproval { .. }
    ));
    assert!(e.visible("bot", Action::CallTool, "corp", "acl_set"));
}

#[test]
fn group_membership_comes_from_the_entities() {
    let e = engine(&[
        r#"permit(principal in AgentGroup::"writers", action == Action::"call_tool", resource)
           when { [Tool::"corp/forum_post"].contains(resource) };"#,
        r#"permit(principal, action == Action::"call_tool", resource == Tool::"corp/forum_read")
           when { principal.on_behalf_of in Group::"eng" };"#,
    ]);
    // bot is a writer, on behalf of alice (eng); intern is neither.
    assert!(e.visible("bot", Action::CallTool, "corp", "forum_post"));
    assert!(!e.visible("intern", Action::CallTool, "corp", "forum_post"));
    assert!(e.visible("bot", Action::CallTool, "corp", "forum_read"));
    assert_eq!(
        vis_and_scope(&e, "intern", "corp", "forum_read"),
        (false, true)
    );
    assert!(!e.visible("bot", Action::CallTool, "corp", "acl_set"));
}

#[test]
fn a_server_condition_shows_only_that_servers_tools() {
    for policy in [
        r#"permit(principal, action == Action::"call_tool", resource in Server::"everything");"#,
        r#"permit(principal, action == Action::"call_tool", resource) when { resource in Server::"everything" };"#,
    ] {
        let e = engine(&[policy]);
        assert!(
            e.visible("bot", Action::CallTool, "everything", "echo"),
            "{policy}"
        );
        assert!(
            e.visible("intern", Action::CallTool, "everything", "get-env"),
            "{policy}"
        );
        assert!(
            !e.visible("bot", Action::CallTool, "corp", "forum_read"),
            "{policy}"
        );
        assert!(
            !e.visible("bot", Action::CallTool, "other", "echo"),
            "{policy}"
        );
    }
}

#[test]
fn an_error_with_the_context_unknown_falls_back_to_the_scope_check() {
    // Overflows whatever the call: `decide` denies every call (an error is a deny), and partial
    // evaluation errors too, so `visible` answers as the scope-only check does.
    let e = engine(&[
        r#"permit(principal, action, resource == Tool::"corp/forum_read") when { 4611686018427387904 * 4 > 0 };"#,
        r#"permit(principal, action, resource == Tool::"corp/acl_set");"#,
        r#"forbid(principal == Agent::"intern", action, resource == Tool::"corp/acl_set") when { 4611686018427387904 * 4 > 0 };"#,
    ]);
    let slice = e
        .slice_for("bot", Action::CallTool, "corp", "forum_read")
        .unwrap();
    assert_eq!(e.could_allow(&slice, "bot", Action::CallTool), None);
    assert!(!e.decide(&call("bot", "forum_read", None)).is_allow());
    assert_eq!(vis_and_scope(&e, "bot", "corp", "forum_read"), (true, true));
    assert!(!e.decide(&call("intern", "acl_set", None)).is_allow());
    assert_eq!(vis_and_scope(&e, "intern", "corp", "acl_set"), (true, true));
    // Without the error the answer is precise.
    assert!(!e.visible("bot", Action::CallTool, "corp", "repo_delete"));
}

#[test]
fn visibility_is_memoized_per_agent_in_the_slice() {
    let e = engine(&[r#"permit(principal == Agent::"bot", action, resource);"#]);
    assert!(e.visible("bot", Action::CallTool, "corp", "forum_read"));
    assert!(!e.visible("intern", Action::CallTool, "corp", "forum_read"));
    let slice = e
        .slice_for("bot", Action::CallTool, "corp", "forum_read")
        .unwrap();
    assert_eq!(slice.visible_memo.get("bot"), Some(true));
    assert_eq!(slice.visible_memo.get("intern"), Some(false));
    assert!(e.visible("bot", Action::CallTool, "corp", "forum_read"));
    assert!(!e.visible("intern", Action::CallTool, "corp", "forum_read"));
}
