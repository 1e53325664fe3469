#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use airlock_sqlite::Durability;
use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::jwt::tests::{claims, jwks, TestKey};
use crate::{NewAgent, Registry};

/// The config token of `[agents.ci]`.
const CI_TOKEN: &str = "alt_config_token_of_ci";

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        Env {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn db(&self) -> std::path::PathBuf {
        self.dir.path().join("audit.db")
    }

    /// A config with humans alice and bob, tasks triage and deploy, `[agents.ci]` with a
    /// token, `[agents.plain]` without one, and `extra` at the end.
    fn config(&self, extra: &str) -> Config {
        let text = format!(
            "[policy]\nfiles = [\"p\"]\n[audit]\npath = \"audit.db\"\n[humans.alice]\n\
             [humans.bob]\n[tasks.triage]\n[tasks.deploy]\n\
             [agents.ci]\non_behalf_of = \"bob\"\ntask = \"deploy\"\ngroups = [\"builders\"]\n\
             token_sha256 = \"{}\"\n[agents.plain]\non_behalf_of = \"alice\"\ntask = \"triage\"\n\
             {extra}",
            hex::encode(crate::digest(CI_TOKEN))
        );
        airlock_config::parse(&text, &self.dir.path().join("airlock.toml")).unwrap()
    }

    fn registry(&self) -> Registry {
        Registry::open(&self.db(), Durability::Process).unwrap()
    }

    fn register(&self, name: &str) -> String {
        let groups = ["writers".to_owned()];
        let (_, token) = self
            .registry()
            .add(&NewAgent {
                name,
                on_behalf_of: "alice",
                task: "triage",
                groups: &groups,
                created_by: None,
            })
            .unwrap();
        token.expose().to_owned()
    }

    /// `[identity.jwt]` trusting `keys`.
    fn jwt(&self, keys: &[&TestKey]) -> String {
        std::fs::write(self.dir.path().join("jwks.json"), jwks(keys)).unwrap();
        format!(
            "[identity.jwt]\nissuer = \"{}\"\naudience = \"{}\"\njwks_file = \"jwks.json\"\n",
            crate::jwt::tests::ISSUER,
            crate::jwt::tests::AUDIENCE
        )
    }
}

#[test]
fn a_config_token_authenticates_its_agent_and_nothing_else_does() {
    let env = Env::new();
    let auth = Authenticator::new(&env.config("")).unwrap();
    assert_eq!(
        auth.authenticate(CI_TOKEN).unwrap(),
        AgentIdentity {
            agent: "ci".into(),
            on_behalf_of: "bob".into(),
            task: "deploy".into(),
            groups: vec!["builders".into()],
            method: AuthMethod::Token,
        }
    );
    for wrong in [
        "alt_config_token_of_cj",
        "alt_config_token_of_ci ",
        "ci",
        "x.y.z",
    ] {
        assert!(
            matches!(auth.authenticate(wrong), Err(IdentityError::UnknownToken)),
            "{wrong:?}"
        );
    }
    assert!(matches!(auth.authenticate(""), Err(IdentityError::Missing)));
    let huge = "a".repeat(MAX_BEARER_BYTES + 1);
    assert!(matches!(
        auth.authenticate(&huge),
        Err(IdentityError::UnknownToken)
    ));
    assert!(auth.is_active("ci") && auth.is_active("plain"));
    assert!(!auth.is_active("ghost"));
    assert!(auth.needs_credential("ci"));
    assert!(!auth.needs_credential("plain"));
    assert!(!auth.accepts_jwt());
}

#[test]
fn require_token_makes_every_agent_need_a_credential() {
    let env = Env::new();
    let auth = Authenticator::new(&env.config("[identity]\nrequire_token = true\n")).unwrap();
    assert!(auth.needs_credential("plain"));
    assert!(auth.needs_credential("ghost"));
}

#[test]
fn a_registered_agent_authenticates_until_revoked() {
    let env = Env::new();
    let token = env.register("bot");
    let auth = Authenticator::new(&env.config("")).unwrap();
    let who = auth.authenticate(&token).unwrap();
    assert_eq!(
        (
            who.agent.as_str(),
            who.on_behalf_of.as_str(),
            who.task.as_str()
        ),
        ("bot", "alice", "triage")
    );
    assert_eq!(who.groups, ["writers"]);
    assert!(auth.is_active("bot") && auth.needs_credential("bot"));
    assert_eq!(
        auth.registered().map(|(n, _)| n).collect::<Vec<_>>(),
        ["bot"]
    );

    env.registry().revoke("bot", None).unwrap();
    // The old snapshot is a snapshot; the reload sees the revocation.
    assert!(auth.is_active("bot"));
    let auth = auth.reload().unwrap();
    assert!(!auth.is_active("bot"));
    assert!(matches!(
        auth.authenticate(&token),
        Err(IdentityError::Revoked { agent }) if agent == "bot"
    ));
    // Config credentials survive the reload.
    assert_eq!(auth.authenticate(CI_TOKEN).unwrap().agent, "ci");

    // Added again: a new token works, the old one stays revoked.
    let fresh = env.register("bot");
    let auth = auth.reload().unwrap();
    assert_eq!(auth.authenticate(&fresh).unwrap().agent, "bot");
    assert!(matches!(
        auth.authenticate(&token),
        Err(IdentityError::Revoked { .. })
    ));
}

#[test]
fn the_config_outranks_a_registration_and_a_gone_human_disables_one() {
    let env = Env::new();
    let shadow = env.register("plain");
    let orphan = env.register("orphan");
    // The registrations were made under a config where both made sense; this one has
    // [agents.plain] itself, and no longer has alice's task.
    let text = "[policy]\nfiles = [\"p\"]\n[audit]\npath = \"audit.db\"\n[humans.alice]\n\
                [tasks.other]\n[agents.plain]\non_behalf_of = \"alice\"\ntask = \"other\"\n";
    let config = airlock_config::parse(text, &env.dir.path().join("airlock.toml")).unwrap();
    let auth = Authenticator::new(&config).unwrap();
    assert!(matches!(
        auth.authenticate(&shadow),
        Err(IdentityError::UnknownToken)
    ));
    assert_eq!(auth.agent("plain").unwrap().origin, AgentOrigin::Config);
    assert!(matches!(
        auth.authenticate(&orphan),
        Err(IdentityError::UnknownToken)
    ));
    assert!(!auth.is_active("orphan"));
    assert_eq!(auth.skipped().len(), 2, "{:?}", auth.skipped());
}

#[test]
fn a_jwt_names_a_declared_or_registered_agent_whose_record_decides() {
    let env = Env::new();
    let key = TestKey::ed25519("k1");
    let jwt = env.jwt(&[&key]);
    env.register("bot");
    let auth = Authenticator::new(&env.config(&jwt)).unwrap();
    assert!(auth.accepts_jwt());

    let mut c = claims("bot");
    // A claim cannot choose the human: the agent's record does.
    c["on_behalf_of"] = json!("bob");
    let who = auth.authenticate(&key.sign(&c)).unwrap();
    assert_eq!(who.agent, "bot");
    assert_eq!(who.on_behalf_of, "alice");
    assert!(matches!(
        who.method,
        AuthMethod::Jwt { ref subject, expires_at } if subject == "bot" && expires_at > SystemTime::now()
    ));
    assert_eq!(
        auth.authenticate(&key.sign(&claims("ci")))
            .unwrap()
            .on_behalf_of,
        "bob"
    );
    assert!(matches!(
        auth.authenticate(&key.sign(&claims("ghost"))),
        Err(IdentityError::UnknownAgent { agent }) if agent == "ghost"
    ));
    // Revoked: the agent no longer exists for JWTs either.
    env.registry().revoke("bot", None).unwrap();
    let auth = auth.reload().unwrap();
    assert!(matches!(
        auth.authenticate(&key.sign(&claims("bot"))),
        Err(IdentityError::UnknownAgent { .. })
    ));
    // Unknown kid through the authenticator.
    let other = TestKey::ed25519("k2");
    assert!(matches!(
        auth.authenticate(&other.sign(&claims("ci"))),
        Err(IdentityError::UnknownKeyId { .. })
    ));
}

#[test]
fn a_bad_jwks_file_is_a_load_error_not_a_refusal() {
    let env = Env::new();
    std::fs::write(env.dir.path().join("jwks.json"), "{\"keys\": []}").unwrap();
    let config =
        env.config("[identity.jwt]\nissuer = \"i\"\naudience = \"a\"\njwks_file = \"jwks.json\"\n");
    let e = Authenticator::new(&config).unwrap_err();
    assert!(!e.is_refusal());
    assert!(e.to_string().contains("jwks.json"), "{e}");
}

#[test]
fn error_messages_never_carry_the_token() {
    let env = Env::new();
    let token = env.register("bot");
    env.registry().revoke("bot", None).unwrap();
    let auth = Authenticator::new(&env.config("")).unwrap();
    for bearer in [token.as_str(), "alk_deadbeef", "alk_x.y.z"] {
        let e = auth.authenticate(bearer).unwrap_err();
        assert!(e.is_refusal());
        let text = format!("{e} {e:?}");
        assert!(!text.contains(bearer), "{text}");
    }
}

fn fuzz_auth() -> &'static (Env, Authenticator, TestKey) {
    static AUTH: std::sync::OnceLock<(Env, Authenticator, TestKey)> = std::sync::OnceLock::new();
    AUTH.get_or_init(|| {
        let env = Env::new();
        let key = TestKey::p256("k1");
        let jwt = env.jwt(&[&key]);
        env.register("bot");
        let auth = Authenticator::new(&env.config(&jwt)).unwrap();
        (env, auth, key)
    })
}

proptest! {
    #[test]
    fn authenticate_never_panics(bearer in any::<String>()) {
        let (_, auth, _) = fuzz_auth();
        let _ = auth.authenticate(&bearer);
    }

    #[test]
    fn authenticate_never_panics_on_jwt_shaped_input(
        parts in proptest::collection::vec("[A-Za-z0-9_=+/-]{0,64}", 3),
        tamper in any::<(usize, u8)>(),
    ) {
        let (_, auth, key) = fuzz_auth();
        let _ = auth.authenticate(&parts.join("."));
        // A real token with one byte changed never authenticates as anyone but its agent.
        let mut token = key.sign(&claims("bot")).into_bytes();
        let i = tamper.0 % token.len();
        token[i] = tamper.1;
        if let Ok(text) = String::from_utf8(token) {
            if let Ok(who) = auth.authenticate(&text) {
                prop_assert_eq!(who.agent, "bot");
            }
        }
    }
}

#[test]
fn paths_of_the_snapshot_come_from_the_config() {
    let env = Env::new();
    let auth = Authenticator::new(&env.config("")).unwrap();
    assert_eq!(auth.db, env.db());
    assert!(Path::new(&auth.db).is_absolute());
}
