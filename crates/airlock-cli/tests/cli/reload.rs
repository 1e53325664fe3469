//! `kill -HUP` reloads everything a gateway judges with, at once, and fails closed: an agent the
//! new config no longer declares loses its rights at that moment, and `allow_methods`, breakers
//! and flow rules change with the policies (issue 15, item 5).

use super::*;

fn hup(pid: u32) {
    let ok = Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

/// Rewrites the config with `edit`, sends SIGHUP and waits for the reload's record.
fn reload(env: &Env, s: &Session, edit: impl FnOnce(String) -> String) {
    let before = env
        .audit()
        .iter()
        .filter(|r| r["kind"] == "config_reload")
        .count();
    let text = std::fs::read_to_string(env.config()).unwrap();
    std::fs::write(env.config(), edit(text)).unwrap();
    hup(s.child.id());
    eventually("no reload recorded", || {
        env.audit()
            .iter()
            .filter(|r| r["kind"] == "config_reload")
            .count()
            > before
    });
}

#[test]
fn an_agent_the_reloaded_config_no_longer_declares_loses_its_rights_at_once() {
    let env = Env::new(POLICY);
    let mut s = env.start();
    assert!(s.tool(1, "echo", json!({})).get("result").is_some());
    reload(&env, &s, |t| {
        t.replace("[agents.bot]", "[agents.someone-else]")
    });
    let reply = s.tool(2, "echo", json!({}));
    assert_eq!(error_code(&reply), -31001, "{reply}");
    let record = env
        .audit()
        .into_iter()
        .find(|r| r["kind"] == "config_reload")
        .unwrap();
    assert_eq!(record["detail"]["agent_declared"], false);
    assert!(
        !env.received().contains("\"id\":2"),
        "the call reached the upstream"
    );
    s.finish();
}

#[test]
fn allow_methods_and_breakers_reload_with_the_policies() {
    let env = Env::new(POLICY);
    let mut s = env.start();
    let admin = json!({"jsonrpc":"2.0","id":1,"method":"admin/reset"});
    assert_eq!(error_code(&s.call(admin)), -31002);
    reload(&env, &s, |t| {
        t.replace(
            "max_frame_bytes = 65536",
            "max_frame_bytes = 65536\nallow_methods = [\"admin/reset\"]",
        ) + "\n[breakers.echoes]\ntools = [\"rec/echo\"]\nmax_calls = 1\nwindow_secs = 3600\n"
    });
    let admin = json!({"jsonrpc":"2.0","id":2,"method":"admin/reset"});
    let reply = s.call(admin);
    assert!(reply.get("result").is_some(), "{reply}");
    assert!(s.tool(3, "echo", json!({})).get("result").is_some());
    // The breaker the reload brought trips at its budget and pauses the agent.
    assert_eq!(error_code(&s.tool(4, "echo", json!({}))), -31007);
    s.finish();
}
