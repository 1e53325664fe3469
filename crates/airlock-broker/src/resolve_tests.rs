#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;

use super::*;
use crate::{Broker, BrokerError};

const SECRETS: &str = "forum_token = \"tok-0123456789\"\nforum_key = \"key-abcdefghij\"\n";

/// A loaded config in a directory with a private secrets file; the directory lives as long
/// as the returned guard.
pub(crate) fn config_with(secrets: &str, extra: &str) -> (tempfile::TempDir, Config) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secrets.toml");
    std::fs::write(&path, secrets).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let text =
        format!("[policy]\nfiles = [\"p.cedar\"]\n[secrets]\nfile = \"secrets.toml\"\n{extra}");
    let config = airlock_config::parse(&text, &dir.path().join("airlock.toml")).unwrap();
    (dir, config)
}

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

const FORUM: &str = "[servers.forum.credentials]\n\
    headers = { Authorization = \"Bearer ${secret:forum_token}\", \"X-Api-Key\" = \"${env:FORUM_KEY}\" }\n\
    env = { FORUM_API_KEY = \"${secret:forum_key}\" }\n\
    [servers.plain]\n";

#[test]
fn templates_resolve_from_the_file_and_the_environment() {
    let (_dir, config) = config_with(SECRETS, FORUM);
    let resolved = resolve(&config, &env(&[("FORUM_KEY", "env-key-12345")]), None).unwrap();
    let forum = &resolved.servers["forum"].credentials;
    let headers: Vec<(&str, &str)> = forum
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.expose()))
        .collect();
    assert_eq!(
        headers,
        [
            ("Authorization", "Bearer tok-0123456789"),
            ("X-Api-Key", "env-key-12345")
        ]
    );
    assert_eq!(forum.env[0].0, "FORUM_API_KEY");
    assert_eq!(forum.env[0].1.expose(), "key-abcdefghij");
    assert!(resolved.servers["plain"].credentials.headers.is_empty());
    // Each placeholder's value is a secret to redact, under its placeholder's name.
    let named: Vec<(&str, &str)> = resolved
        .named
        .iter()
        .map(|(n, v)| (n.as_str(), v.expose()))
        .collect();
    assert_eq!(
        named,
        [
            ("forum_token", "tok-0123456789"),
            ("env:FORUM_KEY", "env-key-12345"),
            ("forum_key", "key-abcdefghij")
        ]
    );
    // Nothing prints a value.
    let shown = format!("{resolved:?}");
    assert!(
        !shown.contains("tok-0123456789") && !shown.contains("env-key"),
        "{shown}"
    );
}

#[test]
fn a_missing_or_short_environment_value_is_refused() {
    let (_dir, config) = config_with(SECRETS, FORUM);
    let e = resolve(&config, &env(&[]), None).unwrap_err().to_string();
    assert_eq!(
        e,
        "server \"forum\": header X-Api-Key: ${env:FORUM_KEY} is not set in Airlock's environment"
    );
    let e = resolve(&config, &env(&[("FORUM_KEY", "short")]), None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("the value of ${env:FORUM_KEY} is shorter than 8 bytes"),
        "{e}"
    );
    assert!(!e.contains("short\""), "{e}");
    let e = resolve(
        &config,
        &env(&[("FORUM_KEY", "a-long-value\r\nX: y")]),
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("characters a header may not carry"), "{e}");
}

#[test]
fn a_secrets_file_changed_since_loading_is_checked_again() {
    let (dir, config) = config_with(SECRETS, FORUM);
    let path = dir.path().join("secrets.toml");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = resolve(&config, &env(&[("FORUM_KEY", "env-key-12345")]), None).unwrap_err();
    assert!(matches!(e, BrokerError::Secrets(_)), "{e}");
    assert!(e.to_string().contains("chmod 600"), "{e}");
    std::fs::write(&path, "forum_token = \"tok-0123456789\"\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let e = resolve(&config, &env(&[("FORUM_KEY", "env-key-12345")]), None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("${secret:forum_key}: the secrets file has no \"forum_key\""),
        "{e}"
    );
}

#[test]
fn literal_values_are_redacted_whole_and_by_last_word() {
    let (_dir, config) = config_with(
        SECRETS,
        "[servers.f.credentials]\nheaders = { Authorization = \"Bearer sk-literal-9876\", \
         Accept-Language = \"en\" }\n",
    );
    let resolved = resolve(&config, &env(&[]), None).unwrap();
    let named: Vec<(&str, &str)> = resolved
        .named
        .iter()
        .map(|(n, v)| (n.as_str(), v.expose()))
        .collect();
    assert_eq!(
        named,
        [
            ("literal:f/header.Authorization", "sk-literal-9876"),
            ("literal:f/header.Authorization", "Bearer sk-literal-9876"),
        ]
    );
}

#[test]
fn the_broker_hands_out_env_and_headers_and_redacts_them() {
    let (_dir, config) = config_with(SECRETS, FORUM);
    let broker = Broker::from_config(&config, &env(&[("FORUM_KEY", "env-key-12345")])).unwrap();
    let env_vars = broker.env_for("forum");
    assert_eq!(env_vars.len(), 1);
    assert_eq!(env_vars[0].1.expose(), "key-abcdefghij");
    assert!(broker.env_for("plain").is_empty());
    assert!(broker.env_for("nope").is_empty());
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let headers = rt
        .block_on(broker.headers_for("forum", "alice", "bot"))
        .unwrap();
    assert_eq!(headers.len(), 2);
    assert!(matches!(
        rt.block_on(broker.headers_for("nope", "alice", "bot")),
        Err(BrokerError::UnknownServer(_))
    ));
    let r = broker.redactor();
    assert_eq!(r.len(), 3);
    assert_eq!(
        r.redact_str("sent key-abcdefghij and env-key-12345"),
        "sent [REDACTED:forum_key] and [REDACTED:env:FORUM_KEY]"
    );
    assert!(!format!("{broker:?}").contains("key-abcdefghij"));
    assert_eq!(broker.revoke_human("alice"), 0);
}

#[test]
fn a_broker_for_one_server_reads_only_its_secrets() {
    let (dir, config) = config_with(SECRETS, FORUM);
    // Another server's missing variable and a secrets file gone are no concern of `plain`.
    std::fs::remove_file(dir.path().join("secrets.toml")).unwrap();
    let broker = Broker::for_server(&config, "plain", &env(&[])).unwrap();
    assert!(broker.redactor().is_empty());
    assert!(broker.env_for("plain").is_empty());
    assert!(Broker::for_server(&config, "forum", &env(&[])).is_err());
}
