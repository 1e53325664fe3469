//! Agent identity end to end: `airlock agents add/list/revoke`, and `airlock run` starting only
//! for the agent its `AIRLOCK_AGENT_TOKEN` authenticates (issue 16). Part of the `cli` test
//! binary (its harness is `super::`).

use std::collections::HashMap;

use super::*;

/// `[agents.bot]`'s token once the config gives it a `token_sha256`.
const BOT_TOKEN: &str = "alt_agent_token_of_bot";
const BOT_DIGEST: &str = "a0d81a05746f66e451351c01fa047cba99b8167fd15df969008da39420507964";

/// The harness policy, and echo for the registered agent `reg`.
fn policy() -> String {
    format!(
        "{POLICY}\n@id(\"reg-echo\")\npermit (principal == Agent::\"reg\", action == \
         Action::\"call_tool\", resource == Tool::\"rec/echo\");\n"
    )
}

/// `airlock agents ARGS --config …`.
fn agents(env: &Env, args: &[&str]) -> Output {
    Command::new(AIRLOCK)
        .arg("agents")
        .args(args)
        .arg("--config")
        .arg(env.config())
        .env("AIRLOCK_LOG", "warn")
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `airlock agents add NAME --on-behalf-of alice --task t1`; returns the token.
fn add(env: &Env, name: &str) -> String {
    let out = agents(
        env,
        &["add", name, "--on-behalf-of", "alice", "--task", "t1"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// `airlock run --agent AGENT` with `token` in `AIRLOCK_AGENT_TOKEN` (unless `None`).
fn spawn_as(env: &Env, agent: &str, token: Option<&str>) -> Child {
    let mut cmd = Command::new(AIRLOCK);
    cmd.args(["run", "--config"])
        .arg(env.config())
        .args(["--agent", agent, "--session", "test", "--", "python3"])
        .arg(recorder())
        .env("RECORDER_LOG", env.log())
        .env("AIRLOCK_LOG", "warn")
        .env_remove("AIRLOCK_AGENT_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(t) = token {
        cmd.env("AIRLOCK_AGENT_TOKEN", t);
    }
    cmd.spawn().unwrap()
}

/// The config with `[agents.bot]` holding a credential.
fn bot_with_token(env: Env) -> Env {
    let text = std::fs::read_to_string(env.config()).unwrap();
    let text = text.replace(
        "[agents.bot]\n",
        &format!("[agents.bot]\ntoken_sha256 = \"{BOT_DIGEST}\"\n"),
    );
    std::fs::write(env.config(), text).unwrap();
    env
}

fn listed(env: &Env) -> Vec<Value> {
    let out = agents(env, &["list", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn agents_are_added_listed_and_revoked_with_the_token_shown_once() {
    let env = Env::new(&policy());
    let out = agents(
        &env,
        &[
            "add",
            "reg",
            "--on-behalf-of",
            "alice",
            "--task",
            "t1",
            "--group",
            "g1",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let token = String::from_utf8(out.stdout.clone()).unwrap();
    assert_eq!(token.lines().count(), 1, "{}", text(&out));
    assert!(
        token.starts_with("alk_") && token.trim().len() == 68,
        "{token}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("will not be shown again"),
        "{}",
        text(&out)
    );

    // Refusals: a live name, a configured one, an unknown human or task, a bad name.
    for (args, needle) in [
        (
            vec!["add", "reg", "--on-behalf-of", "alice", "--task", "t1"],
            "already registered",
        ),
        (
            vec!["add", "bot", "--on-behalf-of", "alice", "--task", "t1"],
            "[agents.bot]",
        ),
        (
            vec!["add", "x", "--on-behalf-of", "mallory", "--task", "t1"],
            "unknown human",
        ),
        (
            vec!["add", "x", "--on-behalf-of", "alice", "--task", "t9"],
            "unknown task",
        ),
        (
            vec!["add", "a b", "--on-behalf-of", "alice", "--task", "t1"],
            "invalid agent name",
        ),
        (vec!["revoke", "ghost"], "not registered"),
        (vec!["revoke", "bot"], "declared in [agents.bot]"),
    ] {
        let out = agents(&env, &args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(needle),
            "{args:?}: {}",
            text(&out)
        );
    }

    let rows = listed(&env);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["name"], "reg");
    assert_eq!(rows[0]["groups"], json!(["g1"]));
    assert_eq!(rows[0]["live"], true);
    let table = agents(&env, &["list"]);
    assert!(
        String::from_utf8_lossy(&table.stdout).contains("reg"),
        "{}",
        text(&table)
    );
    assert!(
        !String::from_utf8_lossy(&table.stdout).contains(token.trim()),
        "the token is never listed"
    );

    let out = agents(&env, &["revoke", "reg"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(listed(&env)[0]["live"], false);
    let out = agents(&env, &["revoke", "reg"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    // Revoked, the name is free again.
    let again = add(&env, "reg");
    assert_ne!(again, token.trim());
    assert_eq!(listed(&env).len(), 2);

    let actions: Vec<Value> = env
        .audit()
        .into_iter()
        .filter(|r| r["kind"] == "agent")
        .map(|r| r["detail"]["action"].clone())
        .collect();
    assert_eq!(actions, [json!("add"), json!("revoke"), json!("add")]);
    let trail = serde_json::to_string(&env.audit()).unwrap();
    assert!(!trail.contains(token.trim()), "the token is never audited");
}

#[test]
fn run_refuses_a_missing_or_wrong_agent_token_and_starts_nothing() {
    let env = bot_with_token(Env::new(&policy()).unsandboxed());
    let other = add(&env, "reg");
    for (token, needle) in [
        (None, "must present its credential: set AIRLOCK_AGENT_TOKEN"),
        (
            Some("alt_wrong"),
            "AIRLOCK_AGENT_TOKEN does not authenticate agent `bot`",
        ),
        (
            Some(other.as_str()),
            "the credential of agent `reg`, not of `bot`",
        ),
    ] {
        let out = spawn_as(&env, "bot", token).wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(needle), "{token:?}: {stderr}");
        assert!(!stderr.contains("alt_wrong"), "{stderr}");
        assert!(
            !env.dir.path().join("out/recorder.log.env").exists(),
            "the upstream was started"
        );
    }
    // A registered agent always needs its token.
    let out = spawn_as(&env, "reg", None).wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));

    // The right token: the session runs, and the upstream never sees the credential.
    let mut s = Session::new(spawn_as(&env, "bot", Some(BOT_TOKEN)));
    assert!(s.tool(1, "echo", json!({})).get("result").is_some());
    assert!(s.finish().success());
    let seen: HashMap<String, String> = serde_json::from_str(
        &std::fs::read_to_string(env.dir.path().join("out/recorder.log.env")).unwrap(),
    )
    .unwrap();
    assert!(!seen.contains_key("AIRLOCK_AGENT_TOKEN"), "{seen:?}");
    let load = env
        .audit()
        .into_iter()
        .find(|r| r["kind"] == "config_load")
        .unwrap();
    assert_eq!(load["detail"]["credential"], json!({"method": "token"}));
}

#[test]
fn a_registered_agent_acts_under_policy_until_revoked() {
    let env = Env::new(&policy());
    let token = add(&env, "reg");
    let mut s = Session::new(spawn_as(&env, "reg", Some(&token)));
    let reply = s.tool(1, "echo", json!({"m": 1}));
    assert!(reply.get("result").is_some(), "{reply}");
    // Policy names it like any agent: what it does not permit is refused.
    assert_eq!(
        error_code(&s.tool(2, "write", json!({"channel": "internal"}))),
        -31001
    );
    let call = env.call_record("echo");
    assert_eq!(call["agent"], "reg");
    assert_eq!(call["on_behalf_of"], "alice");

    // A second registered agent can be killed and resumed like a declared one.
    add(&env, "reg2");
    let out = env.as_alice(&["kill", "--agent", "reg2"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = env.as_alice(&["resume", "--agent", "reg2"]);
    assert!(out.status.success(), "{}", text(&out));

    let out = agents(&env, &["revoke", "reg"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let mut id = 3;
    eventually("the revoked agent kept its rights", || {
        id += 1;
        s.tool(id, "echo", json!({})).get("error").is_some()
    });
    assert_eq!(error_code(&s.tool(100, "echo", json!({}))), -31001);
    s.finish();
    let reload = env
        .audit()
        .into_iter()
        .find(|r| r["kind"] == "config_reload")
        .unwrap();
    assert_eq!(reload["detail"]["agent_declared"], false);
}
