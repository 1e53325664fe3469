//! Issue 15, item 6: approvers see what they approve. Through the real router: the request's
//! view shows a secret-keyed argument's real value to a human who may approve it, and to nobody
//! else; lists, audit records and webhook payloads never carry it; a request whose hidden
//! values were not kept cannot be approved.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Instant;

use airlock_approval::{action_digest, HoldReason, NewApproval, Requirements};
use airlock_policy::{AgentEntity, EntityModel, HumanEntity, PolicyEngine, SHIPPED_SCHEMA};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{json, Value};
use tower::ServiceExt;

use super::*;
use crate::state::Options;

/// sha256("alt_test_token_for_kill_tests"), the token every human here shares.
const TOKEN: &str = "alt_test_token_for_kill_tests";
const TOKEN_SHA: &str = "c892f40db4a28bf32432a0ed53daab3b62e9dc400401e54c509039cc6a94631a";
const SECRET: &str = "hunter2-the-real-api-key";

fn app(dir: &std::path::Path) -> Arc<AppState> {
    let text = format!(
        "[policy]\nfiles = [\"p\"]\n[audit]\npath = \"audit.db\"\n\
         [humans.alice]\ntoken_sha256 = \"{TOKEN_SHA}\"\n\
         [humans.bob]\ngroups = [\"comms\"]\ntoken_sha256 = \"{TOKEN_SHA}\"\n\
         [humans.carol]\ntoken_sha256 = \"{TOKEN_SHA}\"\n\
         [tasks.t1]\n[agents.bot]\non_behalf_of = \"alice\"\ntask = \"t1\"\n[servers.corp]\n"
    );
    let config = airlock_config::parse(&text, &dir.join("airlock.toml")).unwrap();
    let model = EntityModel {
        agents: vec![AgentEntity {
            id: "bot".into(),
            on_behalf_of: "alice".into(),
            task: "t1".into(),
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
        tasks: vec!["t1".into()],
        servers: vec!["corp".into()],
    };
    let policy = PolicyEngine::from_texts(
        SHIPPED_SCHEMA,
        &[(
            "p.cedar".into(),
            "permit(principal, action == Action::\"call_tool\", resource);".into(),
        )],
        &model,
    )
    .unwrap();
    let options = Options {
        config: Arc::new(config),
        policy: Arc::new(policy),
        listen: "127.0.0.1:7700".parse().unwrap(),
        webhook_secret: None,
        mount: None,
    };
    Arc::new(AppState::new(options, "127.0.0.1:7700".parse().unwrap()).unwrap())
}

/// A held call of bot's whose arguments carry a secret under `api_key`; only comms approves.
fn held(state: &AppState, body: &str, keep: bool) -> Approval {
    let args = json!({"channel": "public", "body": body, "api_key": SECRET});
    let new = NewApproval {
        digest: action_digest("bot", "alice", "corp", "tools/call", "forum_post", &args),
        agent: "bot".into(),
        on_behalf_of: "alice".into(),
        task: "t1".into(),
        session: "s1".into(),
        server: "corp".into(),
        method: "tools/call".into(),
        target: "forum_post".into(),
        args_redacted: airlock_audit::redact(&args),
        reasons: vec![HoldReason {
            policy: "public-posts".into(),
            why: "public posts need a sign-off".into(),
        }],
        requirements: Requirements {
            approvers: vec!["comms".into()],
            ..Requirements::default()
        },
        now_ns: airlock_audit::now_unix_ns(),
    };
    let mut s = store(state).unwrap();
    let (a, _) = if keep {
        s.request_with_args(&new, &args).unwrap()
    } else {
        s.request(&new).unwrap()
    };
    a
}

async fn call(state: &Arc<AppState>, req: Request<Body>) -> (StatusCode, String) {
    let resp = crate::router(state.clone()).oneshot(req).await.unwrap();
    let status = resp.status();
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

fn api(method: &str, path: &str, human: &str) -> Request<Body> {
    let mut b = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "127.0.0.1:7700")
        .header("authorization", format!("Bearer {human}:{TOKEN}"));
    if method == "POST" {
        b = b
            .header("origin", "http://127.0.0.1:7700")
            .header("content-type", "application/json");
    }
    b.body(Body::from(if method == "POST" { "{}" } else { "" }))
        .unwrap()
}

#[tokio::test]
async fn an_approver_reads_the_secret_and_nothing_else_carries_it() {
    let dir = tempfile::tempdir().unwrap();
    let state = app(dir.path());
    let a = held(&state, "kept", true);
    assert!(a.hides_values());

    // Bob may approve it (comms): the API shows him the real value, marked as a secret.
    let (status, body) = call(
        &state,
        api("GET", &format!("/api/v1/approvals/{}", a.id), "bob"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["revealed"]["args"]["api_key"], SECRET);
    assert_eq!(v["revealed"]["secrets"], json!(["/api_key"]));
    assert_eq!(v["approvable"], true);
    assert_ne!(v["approval"]["args_redacted"]["api_key"], SECRET);

    // So does the page, with the secret marked.
    let session = lock(&state.sessions).create("bob", Instant::now()).unwrap();
    let page = Request::builder()
        .uri(format!("/approvals/{}", a.id))
        .header("host", "127.0.0.1:7700")
        .header("cookie", format!("airlock_session={session}"))
        .body(Body::empty())
        .unwrap();
    let (status, html) = call(&state, page).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains(SECRET), "{html}");
    assert!(html.contains("shown to you as an approver") && html.contains("/api_key"));
    assert!(html.contains("value=\"approve\""));

    // Carol may not approve it (not in comms): hashes only, and a sentence why.
    let (status, body) = call(
        &state,
        api("GET", &format!("/api/v1/approvals/{}", a.id), "carol"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(!body.contains(SECRET), "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert!(v.get("revealed").is_none());
    assert!(v["hidden"]
        .as_str()
        .unwrap()
        .contains("only a human who may approve"));

    // Bob approves; the list, the audit trail and every webhook payload lack the secret.
    let (status, body) = call(
        &state,
        api(
            "POST",
            &format!("/api/v1/approvals/{}/approve", a.id),
            "bob",
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        !body.contains(SECRET),
        "the decision's answer is a list-like view: {body}"
    );
    let (status, body) = call(&state, api("GET", "/api/v1/approvals?state=all", "bob")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains(&a.id) && !body.contains(SECRET), "{body}");
    let records = lock(&state.audit)
        .query(&airlock_audit::Query::default())
        .unwrap();
    assert!(records.iter().any(|r| r.kind == "approval"));
    for r in &records {
        let text = serde_json::to_string(r).unwrap();
        assert!(!text.contains(SECRET), "{text}");
        if let Some(p) = crate::webhook::payload("https://airlock.example", r) {
            assert!(!p.to_string().contains(SECRET), "{p}");
        }
    }
}

#[tokio::test]
async fn hidden_values_nobody_can_read_make_a_request_deny_only() {
    let dir = tempfile::tempdir().unwrap();
    let state = app(dir.path());
    let a = held(&state, "not kept", false);
    let (status, body) = call(
        &state,
        api("GET", &format!("/api/v1/approvals/{}", a.id), "bob"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(!body.contains(SECRET));
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["approvable"], false);
    assert!(v["hidden"].as_str().unwrap().contains("cannot be approved"));

    let session = lock(&state.sessions).create("bob", Instant::now()).unwrap();
    let page = Request::builder()
        .uri(format!("/approvals/{}", a.id))
        .header("host", "127.0.0.1:7700")
        .header("cookie", format!("airlock_session={session}"))
        .body(Body::empty())
        .unwrap();
    let (_, html) = call(&state, page).await;
    assert!(
        !html.contains("value=\"approve\"") && html.contains("value=\"deny\""),
        "{html}"
    );
    assert!(html.contains("out of band"));

    let (status, body) = call(
        &state,
        api(
            "POST",
            &format!("/api/v1/approvals/{}/approve", a.id),
            "bob",
        ),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("out of band"), "{body}");
    let (status, body) = call(
        &state,
        api("POST", &format!("/api/v1/approvals/{}/deny", a.id), "bob"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}
