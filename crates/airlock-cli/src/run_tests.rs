#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

const CI_TOKEN: &str = "alt_token_of_ci";

fn auth(extra: &str) -> (tempfile::TempDir, Authenticator) {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[policy]\nfiles = [\"p\"]\n[audit]\npath = \"audit.db\"\n[humans.alice]\n[tasks.t]\n\
         [agents.ci]\non_behalf_of = \"alice\"\ntask = \"t\"\ntoken_sha256 = \"{}\"\n\
         [agents.plain]\non_behalf_of = \"alice\"\ntask = \"t\"\n{extra}",
        airlock_identity::AgentToken::digest_of(CI_TOKEN)
    );
    let config = airlock_config::parse(&text, &dir.path().join("airlock.toml")).unwrap();
    let auth = Authenticator::new(&config).unwrap();
    (dir, auth)
}

#[test]
fn an_agent_with_a_credential_must_present_exactly_its_own() {
    let (_dir, auth) = auth("");
    let who = check_credential(&auth, "ci", Some(CI_TOKEN))
        .unwrap()
        .unwrap();
    assert_eq!(who.agent, "ci");
    for missing in [None, Some("")] {
        let e = check_credential(&auth, "ci", missing).unwrap_err();
        assert!(
            e.starts_with("agent `ci` must present its credential: set AIRLOCK_AGENT_TOKEN"),
            "{e}"
        );
    }
    let e = check_credential(&auth, "ci", Some("alt_wrong")).unwrap_err();
    assert!(
        e.starts_with("AIRLOCK_AGENT_TOKEN does not authenticate agent `ci`: the token is not"),
        "{e}"
    );
    assert!(!e.contains("alt_wrong"), "{e}");
    // Another agent's credential is refused even where none is needed.
    let e = check_credential(&auth, "plain", Some(CI_TOKEN)).unwrap_err();
    assert!(
        e.starts_with("AIRLOCK_AGENT_TOKEN is the credential of agent `ci`, not of `plain`"),
        "{e}"
    );
    assert_eq!(check_credential(&auth, "plain", None).unwrap(), None);
}

#[test]
fn require_token_refuses_an_agent_without_one() {
    let (_dir, auth) = auth("[identity]\nrequire_token = true\n");
    assert!(check_credential(&auth, "plain", None).is_err());
    assert!(check_credential(&auth, "ci", Some(CI_TOKEN)).is_ok());
}

#[test]
fn the_record_names_the_method_never_the_credential() {
    let (_dir, auth) = auth("");
    let who = check_credential(&auth, "ci", Some(CI_TOKEN)).unwrap();
    let detail = credential_detail(who.as_ref()).to_string();
    assert_eq!(detail, r#"{"method":"token"}"#);
    assert_eq!(credential_detail(None), json!(null));
}
