#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::*;
use crate::{parse, Config};

const MINIMAL: &str = "[policy]\nfiles = [\"p.cedar\"]\n";

const SECRETS: &str = "forum_token = \"tok-0123456789\"\nforum_key = \"key-abcdefghij\"\n\
                       forum_client_secret = \"cs-0123456789\"\n\
                       signing = \"0123456789abcdef0123456789abcdef\"\nshort = \"abc\"\n\
                       crlf = \"abc\\r\\ndefghij\"\n";

/// A config directory with a private secrets file.
fn dir_with_secrets(secrets: &str, mode: u32) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secrets.toml");
    std::fs::write(&path, secrets).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    dir
}

fn parse_in(dir: &Path, extra: &str) -> Result<Config, String> {
    parse(&format!("{MINIMAL}{extra}"), &dir.join("airlock.toml")).map_err(|e| e.to_string())
}

fn with_secrets(extra: &str) -> Result<Config, String> {
    let dir = dir_with_secrets(SECRETS, 0o600);
    parse_in(
        dir.path(),
        &format!("[secrets]\nfile = \"secrets.toml\"\n{extra}"),
    )
    .map_err(|e| e.replace(&dir.path().display().to_string(), "DIR"))
}

fn lit(s: &str) -> Part {
    Part::Literal(s.into())
}

#[test]
fn templates_parse_into_literals_and_placeholders() {
    let t = Template::parse("Bearer ${secret:forum_token}").unwrap();
    assert_eq!(
        t.parts(),
        [lit("Bearer "), Part::Secret("forum_token".into())]
    );
    assert!(!t.is_literal());
    let t = Template::parse("${env:A}-${secret:b.c}x").unwrap();
    assert_eq!(
        t.parts(),
        [
            Part::Env("A".into()),
            lit("-"),
            Part::Secret("b.c".into()),
            lit("x")
        ]
    );
    let t = Template::parse("cost $5 and $${not} ${").err().unwrap();
    assert_eq!(t.offset, 20);
    let t = Template::parse("cost $5 and $${not}").unwrap();
    assert_eq!(t.parts(), [lit("cost $5 and ${not}")]);
    assert!(t.is_literal());
    assert!(Template::parse("").unwrap().parts().is_empty());
}

#[test]
fn malformed_templates_say_why() {
    for (text, needle) in [
        ("${secret:x", "not closed"),
        ("${token}", "has no kind"),
        ("${vault:x}", "unknown placeholder kind \"vault\""),
        ("${secret:}", "a secret name is"),
        ("${secret:a b}", "a secret name is"),
        ("${env:1X}", "environment variable name"),
        ("${env:AIRLOCK_TOKEN}", "Airlock's own"),
    ] {
        let e = Template::parse(text).unwrap_err();
        assert!(e.message.contains(needle), "{text}: {e}");
    }
}

#[test]
fn template_debug_never_shows_literal_text() {
    let t = Template::parse("Bearer sk-live-123456${env:X}").unwrap();
    let shown = format!("{t:?}");
    assert!(!shown.contains("sk-live"), "{shown}");
    assert!(shown.contains("${env:X}"), "{shown}");
}

#[test]
fn a_full_credentials_section_is_read() {
    let c = with_secrets(
        "[servers.forum.credentials]\n\
         headers = { Authorization = \"Bearer ${secret:forum_token}\", \"X-Api-Key\" = \"${env:FORUM_KEY}\" }\n\
         env = { FORUM_API_KEY = \"${secret:forum_key}\" }\n",
    )
    .unwrap();
    let cred = &c.servers["forum"].credentials;
    assert_eq!(cred.headers.len(), 2);
    assert_eq!(cred.headers[0].0, "Authorization");
    assert_eq!(
        cred.headers[0].1.parts(),
        [lit("Bearer "), Part::Secret("forum_token".into())]
    );
    assert_eq!(cred.env[0].0, "FORUM_API_KEY");
    assert!(cred.oauth.is_none());
    assert!(c.secrets.file.as_ref().unwrap().ends_with("secrets.toml"));
    assert!(c.credential_warnings().is_empty());
    // The model never holds a value read from the file.
    let shown = format!("{c:?}");
    assert!(!shown.contains("tok-0123456789"), "{shown}");
}

#[test]
fn an_oauth_section_is_read() {
    let c = with_secrets(
        "[servers.forum.credentials.oauth]\n\
         token_url = \"http://127.0.0.1:9000/token\"\n\
         client_id = \"airlock\"\n\
         client_secret = \"${secret:forum_client_secret}\"\n\
         subject_signing_key = \"${secret:signing}\"\n\
         audience = \"forum\"\nscope = \"forum.write\"\n",
    )
    .unwrap();
    let o = c.servers["forum"].credentials.oauth.clone().unwrap();
    assert_eq!(o.token_url, "http://127.0.0.1:9000/token");
    assert_eq!(o.client_id, "airlock");
    assert_eq!(o.audience.as_deref(), Some("forum"));
    assert_eq!(o.scope.as_deref(), Some("forum.write"));
    assert_eq!(
        o.client_secret.secret_names().collect::<Vec<_>>(),
        ["forum_client_secret"]
    );
}

#[test]
fn bad_credentials_point_at_themselves() {
    let oauth = "[servers.f.credentials.oauth]\nclient_id = \"a\"\n\
                 client_secret = \"${secret:forum_client_secret}\"\n";
    let cases = [
        (
            "[servers.f.credentials]\nheaders = { \"Bad Name\" = \"x\" }\n",
            "6:13",
            "not an HTTP header name",
        ),
        (
            "[servers.f.credentials]\nheaders = { Host = \"x\" }\n",
            "6:13",
            "set by the gateway",
        ),
        (
            "[servers.f.credentials]\nheaders = { A = \"x\", a = \"y\" }\n",
            "6:22",
            "given twice",
        ),
        (
            "[servers.f.credentials]\nheaders = { A = \"x\\r\\ny\" }\n",
            "6:17",
            "control characters",
        ),
        (
            "[servers.f.credentials]\nheaders = { A = \"${secret:crlf}\" }\n",
            "6:17",
            "not allowed here",
        ),
        (
            "[servers.f.credentials]\nheaders = { A = \"${secret:nope}\" }\n",
            "6:17",
            "the secrets file has no \"nope\"",
        ),
        (
            "[servers.f.credentials]\nheaders = { A = \"${secret:short}\" }\n",
            "6:17",
            "shorter than 8 bytes",
        ),
        (
            "[servers.f.credentials]\nheaders = { A = \"${vault:x}\" }\n",
            "6:17",
            "unknown placeholder kind",
        ),
        (
            "[servers.f.credentials]\nenv = { AIRLOCK_TOKEN = \"${secret:forum_key}\" }\n",
            "6:9",
            "Airlock's own",
        ),
        (
            "[servers.f.credentials]\nenv = { PATH = \"${secret:forum_key}\" }\n",
            "6:9",
            "set by Airlock",
        ),
        (
            "[servers.f.credentials]\nenv = { \"A-B\" = \"x\" }\n",
            "6:9",
            "not an environment variable name",
        ),
        (
            "[servers.f.credentials]\nnope = 1\n",
            "6:1",
            "unknown field `nope`",
        ),
        (
            &format!("{oauth}token_url = \"http://127.0.0.1/t\"\n"),
            "5:1",
            "needs `subject_signing_key`",
        ),
        (
            &format!(
                "{oauth}token_url = \"http://auth.example/t\"\n\
                 subject_signing_key = \"${{secret:signing}}\"\n"
            ),
            "8:13",
            "must use https://",
        ),
        (
            &format!(
                "{oauth}token_url = \"https://auth.example/t\"\n\
                 subject_signing_key = \"${{secret:forum_key}}\"\n"
            ),
            "9:23",
            "at least 32 bytes",
        ),
        (
            &format!(
                "{oauth}token_url = \"https://auth.example/t\"\n\
                 subject_signing_key = \"${{secret:signing}}\"\n\
                 [servers.f.credentials.headers]\nAuthorization = \"x\"\n"
            ),
            "11:1",
            "comes from the OAuth token exchange",
        ),
    ];
    for (text, pos, needle) in cases {
        let e = with_secrets(text).unwrap_err();
        assert!(
            e.starts_with(&format!("DIR/airlock.toml:{pos}: ")) && e.contains(needle),
            "{text:?} gave {e}"
        );
        for value in ["tok-0123456789", "key-abcdefghij", "abc\r\ndef"] {
            assert!(!e.contains(value), "a secret value is never echoed: {e}");
        }
    }
}

#[test]
fn a_secret_placeholder_needs_a_secrets_file() {
    let dir = tempfile::tempdir().unwrap();
    let e = parse_in(
        dir.path(),
        "[servers.f.credentials]\nenv = { A = \"${secret:x}\" }\n",
    )
    .unwrap_err();
    assert!(
        e.contains("airlock.toml:4:13: ${secret:x} needs a secrets file"),
        "{e}"
    );
}

#[test]
fn a_secrets_file_open_to_others_is_refused() {
    for mode in [0o640, 0o604, 0o620, 0o644] {
        let dir = dir_with_secrets(SECRETS, mode);
        let e = parse_in(dir.path(), "[secrets]\nfile = \"secrets.toml\"\n").unwrap_err();
        assert!(
            e.contains("airlock.toml:4:8: secrets file ") && e.contains("chmod 600"),
            "{mode:o}: {e}"
        );
        assert!(!e.contains("tok-0123456789"));
    }
    let dir = dir_with_secrets(SECRETS, 0o400);
    parse_in(dir.path(), "[secrets]\nfile = \"secrets.toml\"\n").unwrap();
}

#[test]
fn secrets_file_errors_point_into_it_without_values() {
    for (text, needle) in [
        (
            "a = 12345678\n",
            "secrets.toml:1:5: secret \"a\" must be a string, not an integer",
        ),
        ("\"a b\" = \"x\"\n", "secrets.toml:1:1: invalid secret name"),
        ("a = \"x\"\na = \"y\"\n", "secrets.toml:2:1:"),
    ] {
        let dir = dir_with_secrets(text, 0o600);
        let e = parse_in(dir.path(), "[secrets]\nfile = \"secrets.toml\"\n").unwrap_err();
        assert!(e.contains(needle), "{text:?}: {e}");
        assert!(!e.contains("12345678"), "{e}");
    }
    let dir = tempfile::tempdir().unwrap();
    let e = parse_in(dir.path(), "[secrets]\nfile = \"missing.toml\"\n").unwrap_err();
    assert!(e.contains("missing.toml: cannot read"), "{e}");
}

#[test]
fn read_secrets_gives_values_and_debug_gives_names() {
    let dir = dir_with_secrets(SECRETS, 0o600);
    let values = read_secrets(&dir.path().join("secrets.toml")).unwrap();
    assert_eq!(values.get("forum_token"), Some("tok-0123456789"));
    assert_eq!(values.get("nope"), None);
    assert!(values.names().any(|n| n == "signing"));
    let shown = format!("{values:?}");
    assert!(shown.contains("forum_token") && !shown.contains("tok-0123456789"));
}

#[test]
fn literal_credentials_are_warned_about() {
    let c = with_secrets(
        "[servers.f.credentials]\nheaders = { \"X-Api-Key\" = \"sk-literal-123456\" }\n\
         env = { TOKEN = \"literal-token-1\", OK = \"${secret:forum_key}\" }\n",
    )
    .unwrap();
    let w = c.credential_warnings();
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(w[0].contains("header \"X-Api-Key\" is written in the config file"));
    assert!(w[1].contains("env \"TOKEN\""));
    assert!(!w.iter().any(|w| w.contains("sk-literal")));
}

#[test]
fn header_names_and_values() {
    assert!(is_header_name("X-Api-Key"));
    assert!(!is_header_name("X Api"));
    assert!(!is_header_name(""));
    assert!(!is_header_name("a:b"));
    assert!(is_header_value("Bearer abc\tdef é"));
    assert!(!is_header_value("a\nb"));
    assert!(!is_header_value("a\u{7f}"));
}
