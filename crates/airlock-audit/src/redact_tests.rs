#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use proptest::prelude::*;
use serde_json::json;

fn m(secret: &str) -> String {
    marker(secret.as_bytes())
}

#[test]
fn patterns_compile() {
    assert!(SECRET_RE.is_some());
}

#[test]
fn secret_keys_are_recognised() {
    for k in [
        "password",
        "PASSWORD",
        "db_password",
        "passwd",
        "secret",
        "client_secret",
        "clientSecret",
        "token",
        "access_token",
        "x-auth-token",
        "githubToken",
        "api_key",
        "apiKey",
        "X-API-KEY",
        "apikey",
        "access_key",
        "aws_secret_access_key",
        "private_key",
        "privateKey",
        "Authorization",
        "proxy-authorization",
        "auth",
        "basic_auth",
        "auth_header",
        "cookie",
        "Set-Cookie",
        "session_key",
        "sessionKey",
        "credential",
        "credentials",
        "passphrase",
    ] {
        assert!(is_secret_key(k), "{k} should be secret");
    }
    for k in [
        "path",
        "max_tokens",
        "tokens",
        "token_count",
        "author",
        "authority",
        "session",
        "session_id",
        "key",
        "query",
        "name",
        "body",
    ] {
        assert!(!is_secret_key(k), "{k} should not be secret");
    }
}

#[test]
fn values_under_secret_keys_are_replaced_whole() {
    let v = json!({
        "user": "bob",
        "password": "hunter2",
        "headers": {"Authorization": "Basic Ym9iOmh1bnRlcjI=", "Accept": "text/plain"},
        "credentials": {"user": "bob", "pin": 1234},
        "api_key": 42,
        "token": null,
    });
    let r = redact(&v);
    let mut creds = String::new();
    write_canonical(&json!({"user": "bob", "pin": 1234}), &mut creds);
    assert_eq!(
        r,
        json!({
            "user": "bob",
            "password": m("hunter2"),
            "headers": {"Authorization": m("Basic Ym9iOmh1bnRlcjI="), "Accept": "text/plain"},
            "credentials": m(&creds),
            "api_key": m("42"),
            "token": null,
        })
    );
}

#[test]
fn equal_secrets_get_equal_markers() {
    let r = redact(&json!({"password": "s3cr3t!", "note": "x", "other": {"passwd": "s3cr3t!"}}));
    assert_eq!(r["password"], r["other"]["passwd"]);
    assert_ne!(r["password"], json!(m("different")));
    let s = r["password"].as_str().unwrap();
    assert!(is_marker(s), "{s}");
    assert_eq!(
        s,
        format!(
            "[redacted sha256:{}]",
            &hex::encode(Sha256::digest(b"s3cr3t!"))[..12]
        )
    );
}

#[test]
fn secret_looking_strings_are_redacted_in_place() {
    let pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7\n-----END RSA PRIVATE KEY-----";
    let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJlX2hlcmU";
    let ghp = format!("ghp_{}", "a1B2".repeat(9));
    let pat = format!("github_pat_{}", "x_Y9".repeat(10));
    let cases: Vec<(String, String)> = vec![
        (
            format!("key:\n{pem}\nend"),
            format!("key:\n{}\nend", m(pem)),
        ),
        (
            "id AKIAIOSFODNN7EXAMPLE here".into(),
            format!("id {} here", m("AKIAIOSFODNN7EXAMPLE")),
        ),
        (
            format!("git clone https://{ghp}@github.com/x"),
            format!("git clone https://{}@github.com/x", m(&ghp)),
        ),
        (format!("PAT={pat}"), format!("PAT={}", m(&pat))),
        (
            "xoxb-123456789012-abcdefABCDEF".into(),
            m("xoxb-123456789012-abcdefABCDEF"),
        ),
        (
            "OPENAI_API_KEY sk-proj-abcdefghijklmnopqrstuvwx".into(),
            format!("OPENAI_API_KEY {}", m("sk-proj-abcdefghijklmnopqrstuvwx")),
        ),
        (format!("token {jwt} ok"), format!("token {} ok", m(jwt))),
        (
            "Authorization: Bearer abcdef0123456789XYZ".into(),
            format!("Authorization: Bearer {}", m("abcdef0123456789XYZ")),
        ),
        (
            "psql postgres://admin:pa55word@db:5432/x".into(),
            format!("psql postgres://admin:{}@db:5432/x", m("pa55word")),
        ),
        (
            "mysql --password=hunter22 -u root".into(),
            format!("mysql --password={} -u root", m("hunter22")),
        ),
        (
            "client_secret: 'abcd1234'".into(),
            format!("client_secret: '{}'", m("abcd1234")),
        ),
    ];
    for (input, want) in cases {
        assert_eq!(redact(&json!(input)), json!(want), "input: {input}");
    }
    // Unterminated PEM: everything from BEGIN on goes.
    let cut = "x -----BEGIN PRIVATE KEY-----\nMIIE";
    assert_eq!(
        redact(&json!(cut)),
        json!(format!("x {}", m("-----BEGIN PRIVATE KEY-----\nMIIE")))
    );
}

#[test]
fn ordinary_text_is_untouched() {
    for s in [
        "hello world",
        "max tokens: 10",
        "the bearer of bad news",
        "task-abcdefghijklmnopqrstuvwxyz",
        "https://example.com/path?q=1",
        "ask-me-anything-about-everything",
        "AKIA",
        "",
    ] {
        assert_eq!(redact(&json!(s)), json!(s), "{s}");
    }
    let v = json!({"path": "/etc/hosts", "n": 3, "ok": true, "list": [1, "a", null]});
    assert_eq!(redact(&v), v);
}

#[test]
fn markers_are_not_redacted_again() {
    let once = redact(
        &json!({"password": "x", "cmd": "mysql --password=hunter22", "url": "https://u:p4ss@h/"}),
    );
    assert_eq!(redact(&once), once);
}

/// Keys drawn from both worlds, so generated objects hit the secret-key rule often.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("password".to_string()),
        Just("X-Api-Key".to_string()),
        Just("accessToken".to_string()),
        Just("auth".to_string()),
        Just("Cookie".to_string()),
        Just("client_secret".to_string()),
        Just("path".to_string()),
        Just("max_tokens".to_string()),
        Just("author".to_string()),
        "[a-zA-Z_-]{1,12}",
    ]
}

/// Strings built from fragments that are, almost are, or surround secrets.
fn text() -> impl Strategy<Value = String> {
    let frag = prop_oneof![
        Just("AKIAIOSFODNN7EXAMPLE".to_string()),
        Just("sk-abcdefghijklmnopqrstuvwxyz012".to_string()),
        Just("Bearer ".to_string()),
        Just("password=".to_string()),
        Just("token: ".to_string()),
        Just("https://".to_string()),
        Just("user:".to_string()),
        Just("@".to_string()),
        Just("-----BEGIN PRIVATE KEY-----\n".to_string()),
        Just("-----END PRIVATE KEY-----".to_string()),
        Just("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.".to_string()),
        Just("[redacted sha256:0123456789ab]".to_string()),
        Just(" ".to_string()),
        "[A-Za-z0-9_=:/.-]{0,24}",
    ];
    prop::collection::vec(frag, 0..8).prop_map(|v| v.concat())
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn no_value_under_secret_key(v: &Value) -> bool {
    match v {
        Value::Object(map) => map.iter().all(|(k, item)| {
            if is_secret_key(k) {
                item.is_null() || item.as_str().is_some_and(is_marker)
            } else {
                no_value_under_secret_key(item)
            }
        }),
        Value::Array(items) => items.iter().all(no_value_under_secret_key),
        _ => true,
    }
}

proptest! {
    #[test]
    fn redaction_leaves_no_value_under_a_secret_key(v in json_value()) {
        prop_assert!(no_value_under_secret_key(&redact(&v)));
    }

    #[test]
    fn redaction_is_idempotent(v in json_value()) {
        let once = redact(&v);
        prop_assert_eq!(redact(&once), once);
    }

    #[test]
    fn embedded_secrets_never_survive(prefix in "[a-z ]{0,10}", suffix in "[ ,;][a-z ]{0,10}",
                                      body in "[A-Za-z0-9]{30,40}") {
        for secret in [format!("sk-{body}"), format!("ghp_{body}"), format!("xoxp-{body}")] {
            let s = format!("{prefix} {secret}{suffix}");
            let r = redact(&Value::String(s));
            let r = r.as_str().unwrap_or_default();
            prop_assert!(!r.contains(&secret), "{} kept {}", r, secret);
            prop_assert!(r.contains(&m(&secret)));
        }
    }
}
