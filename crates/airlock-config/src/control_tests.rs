#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use super::*;

const BASE: &str = r#"
[policy]
files = ["p"]

[humans.alice]
token_sha256 = "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855"
[tasks.t]
[agents.bot]
on_behalf_of = "alice"
task = "t"
[agents.other]
on_behalf_of = "alice"
task = "t"

[servers.corp]
tools = ["acl_set", "mail_delete", "mail_list"]
[servers.open]
"#;

fn parse(extra: &str) -> Result<crate::Config, String> {
    crate::parse(&format!("{BASE}{extra}"), Path::new("a.toml")).map_err(|e| e.to_string())
}

/// The 1-based line of the first line of `extra` containing `needle`.
fn line_of(extra: &str, needle: &str) -> usize {
    let base_lines = BASE.matches('\n').count();
    base_lines + 1 + extra.lines().position(|l| l.contains(needle)).unwrap()
}

#[test]
fn glob_matches_star_anywhere() {
    for (p, t, want) in [
        ("mail_*", "mail_delete", true),
        ("mail_*", "mail_", true),
        ("mail_*", "mai", false),
        ("*", "", true),
        ("*_set", "acl_set", true),
        ("a*b*c", "aXbYc", true),
        ("a*b*c", "aXbY", false),
        ("acl_set", "acl_set", true),
        ("acl_set", "acl_sets", false),
    ] {
        assert_eq!(glob(p, t), want, "{p} vs {t}");
    }
}

#[test]
fn breakers_build_the_model() {
    let extra = r#"
[breakers.acl]
tools = ["corp/acl_set", "open/*"]
when = { recursive = true, depth = 3, mode = "all" }
agents = ["bot"]
max_calls = 5
window_secs = 600
max_items = 20
items = "result:/structuredContent/changed"

[breakers.mail]
tools = ["corp/mail_*"]
max_calls = 100
window_secs = 3600

[breakers.defaults]
fanout_distinct = 10
rate_min_calls = 30
"#;
    let c = parse(extra).unwrap();
    let acl = &c.breakers.classes["acl"];
    assert_eq!(acl.tools.len(), 2);
    assert!(acl.tools[0].matches("corp", "acl_set"));
    assert!(acl.tools[1].matches("open", "anything"));
    assert_eq!(acl.when["recursive"], ArgValue::Bool(true));
    assert_eq!(acl.when["depth"], ArgValue::Int(3));
    assert_eq!(acl.when["mode"], ArgValue::Str("all".into()));
    assert_eq!(acl.agents, Some(vec!["bot".to_string()]));
    assert_eq!((acl.max_calls, acl.window_secs), (5, 600));
    assert_eq!(acl.max_items, Some(20));
    assert_eq!(
        acl.items,
        Some(ItemsSource::Result("/structuredContent/changed".into()))
    );
    let mail = &c.breakers.classes["mail"];
    assert_eq!(mail.agents, None);
    assert!(mail.when.is_empty());
    assert_eq!(c.breakers.defaults.fanout_distinct, 10);
    assert_eq!(c.breakers.defaults.rate_min_calls, 30);
    assert!(c.breakers.defaults.enabled);
    assert_eq!(c.breakers.defaults.rate_factor, 10);
    assert_eq!(
        c.humans["alice"].token_sha256.as_deref(),
        Some("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    );
}

#[test]
fn no_breakers_section_means_defaults_on() {
    let c = parse("").unwrap();
    assert!(c.breakers.classes.is_empty());
    assert_eq!(c.breakers.defaults, LoopDefaults::default());
    let off = parse("[breakers.defaults]\nenabled = false\n").unwrap();
    assert!(!off.breakers.defaults.enabled);
}

#[test]
fn bad_breakers_are_positioned_errors() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "[breakers.x]\ntools = [\"corp\"]\nmax_calls = 1\nwindow_secs = 1\n",
            "tools =",
            "is not a \"server/tool\" pattern",
        ),
        (
            "[breakers.x]\ntools = [\"nope/a\"]\nmax_calls = 1\nwindow_secs = 1\n",
            "tools =",
            "unknown server \"nope\"",
        ),
        (
            "[breakers.x]\ntools = [\"corp/acl_sett\"]\nmax_calls = 1\nwindow_secs = 1\n",
            "tools =",
            "lists no tool \"acl_sett\"",
        ),
        (
            "[breakers.x]\ntools = [\"corp/*\"]\nagents = [\"ghost\"]\nmax_calls = 1\nwindow_secs = 1\n",
            "agents =",
            "unknown agent \"ghost\"",
        ),
        (
            "[breakers.x]\ntools = [\"corp/*\"]\nmax_calls = 0\nwindow_secs = 1\n",
            "max_calls",
            "max_calls = 0 is out of range",
        ),
        (
            "[breakers.x]\ntools = [\"corp/*\"]\nmax_calls = 1\nwindow_secs = 99999999\n",
            "window_secs",
            "out of range",
        ),
        (
            "[breakers.x]\ntools = [\"corp/*\"]\nmax_calls = 1\nwindow_secs = 1\nmax_items = 3\n",
            "max_items",
            "max_items needs `items`",
        ),
        (
            "[breakers.x]\ntools = [\"corp/*\"]\nmax_calls = 1\nwindow_secs = 1\nmax_items = 3\nitems = \"body:/x\"\n",
            "items = \"",
            "must be \"args:<JSON pointer>\"",
        ),
        (
            "[breakers.x]\ntools = [\"corp/*\"]\nwhen = { ratio = 1.5 }\nmax_calls = 1\nwindow_secs = 1\n",
            "when",
            "only a boolean, an integer or a string",
        ),
        (
            "[breakers.x]\ntools = [\"corp/*\"]\nmax_calls = 1\nwindow_secs = 1\nmax_cals = 2\n",
            "max_cals",
            "unknown field `max_cals`",
        ),
        (
            "[breakers.defaults]\nrate_facter = 2\n",
            "rate_facter",
            "unknown field `rate_facter`",
        ),
        (
            "[breakers.defaults]\nrate_window_secs = 60\nrate_baseline_secs = 60\n",
            "rate_baseline_secs",
            "must be longer than",
        ),
        (
            "[breakers.\"bad name\"]\ntools = [\"corp/*\"]\nmax_calls = 1\nwindow_secs = 1\n",
            "bad name",
            "invalid breaker name",
        ),
    ];
    for (extra, needle, message) in cases {
        let err = parse(extra).unwrap_err();
        let line = line_of(extra, needle);
        assert!(
            err.starts_with(&format!("a.toml:{line}:")) && err.contains(message),
            "{extra}\n→ {err}\n(wanted line {line}, {message:?})"
        );
    }
}

#[test]
fn missing_required_keys_point_at_the_table() {
    for (extra, message) in [
        (
            "[breakers.x]\nmax_calls = 1\nwindow_secs = 1\n",
            "needs `tools`",
        ),
        (
            "[breakers.x]\ntools = [\"corp/*\"]\nwindow_secs = 1\n",
            "needs `max_calls`",
        ),
        (
            "[breakers.x]\ntools = [\"corp/*\"]\nmax_calls = 1\n",
            "needs `window_secs`",
        ),
    ] {
        let err = parse(extra).unwrap_err();
        assert!(err.contains(message), "{err}");
        let line = line_of(extra, "[breakers.x]");
        // The span of a table may start at its header or its first key.
        assert!(
            err.starts_with(&format!("a.toml:{line}:"))
                || err.starts_with(&format!("a.toml:{}:", line + 1)),
            "{err}"
        );
    }
}

#[test]
fn bad_token_digest_is_an_error() {
    let text = BASE.replace("token_sha256 = \"E3B0", "token_sha256 = \"zz\"\n#\"E3B0");
    let err = crate::parse(&text, Path::new("a.toml"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("token_sha256 must be 64 hexadecimal"), "{err}");
    assert!(err.starts_with("a.toml:6:"), "{err}");
}
