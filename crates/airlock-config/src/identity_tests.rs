#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use super::*;

const PEOPLE: &str = "[humans.alice]\n[tasks.t]\n";
const DIGEST: &str = "c892f40db4a28bf32432a0ed53daab3b62e9dc400401e54c509039cc6a94631a";

fn parse(extra: &str) -> Result<crate::Config, String> {
    let text = format!("[policy]\nfiles = [\"p\"]\n{PEOPLE}{extra}");
    crate::parse(&text, Path::new("/etc/airlock/a.toml")).map_err(|e| e.to_string())
}

fn agent(name: &str, digest: &str) -> String {
    format!(
        "[agents.{name}]\non_behalf_of = \"alice\"\ntask = \"t\"\ntoken_sha256 = \"{digest}\"\n"
    )
}

#[test]
fn defaults_require_nothing_and_trust_no_issuer() {
    let c = parse("").unwrap();
    assert_eq!(c.identity, IdentityConfig::default());
    assert!(!c.identity.require_token);
    assert!(c.identity.jwt.is_none());
}

#[test]
fn a_full_section_is_read_with_paths_resolved() {
    let c = parse(
        "[identity]\nrequire_token = true\n[identity.jwt]\nissuer = \"https://idp.example\"\n\
         audience = \"airlock\"\njwks_file = \"keys/jwks.json\"\nagent_claim = \"agent\"\n",
    )
    .unwrap();
    assert_eq!(
        c.identity,
        IdentityConfig {
            require_token: true,
            jwt: Some(JwtConfig {
                issuer: "https://idp.example".into(),
                audience: "airlock".into(),
                jwks_file: "/etc/airlock/keys/jwks.json".into(),
                agent_claim: "agent".into(),
            }),
        }
    );
    let c = parse("[identity.jwt]\nissuer = \"i\"\naudience = \"a\"\njwks_file = \"/k.json\"\n")
        .unwrap();
    let jwt = c.identity.jwt.unwrap();
    assert_eq!(jwt.agent_claim, DEFAULT_AGENT_CLAIM);
    assert_eq!(jwt.jwks_file, Path::new("/k.json"));
}

#[test]
fn an_agent_token_digest_is_kept_lowercase() {
    let c = parse(&agent("bot", &DIGEST.to_ascii_uppercase())).unwrap();
    assert_eq!(c.agents["bot"].token_sha256.as_deref(), Some(DIGEST));
    let c = parse("[agents.bot]\non_behalf_of = \"alice\"\ntask = \"t\"\n").unwrap();
    assert_eq!(c.agents["bot"].token_sha256, None);
}

#[test]
fn bad_values_point_at_themselves() {
    let cases = [
        (agent("bot", "abc"), "8:16", "64 hexadecimal characters"),
        (
            "[identity]\nrequire = true\n".to_owned(),
            "6:1",
            "unknown field `require`",
        ),
        (
            "[identity.jwt]\nissuer = \"\"\naudience = \"a\"\njwks_file = \"k\"\n".to_owned(),
            "6:10",
            "issuer must not be empty",
        ),
        (
            "[identity.jwt]\nissuer = \"i\"\naudience = \"a\"\n".to_owned(),
            "5:1",
            "missing field `jwks_file`",
        ),
        (
            "[identity.jwt]\nissuer = \"i\"\naudience = \"a\"\njwks_file = \"k\"\n\
             agent_claim = \"\"\n"
                .to_owned(),
            "9:15",
            "agent_claim must name a claim",
        ),
        (
            "[identity.jwt]\nissuer = \"i\"\naudience = \"a\"\njwks_file = \"k\"\nkey = \"x\"\n"
                .to_owned(),
            "9:1",
            "unknown field `key`",
        ),
    ];
    for (text, pos, needle) in cases {
        let e = parse(&text).unwrap_err();
        assert!(
            e.starts_with(&format!("/etc/airlock/a.toml:{pos}: ")) && e.contains(needle),
            "{text:?} gave {e}"
        );
    }
}

#[test]
fn one_token_belongs_to_one_principal() {
    let two_agents = format!("{}{}", agent("a", DIGEST), agent("b", DIGEST));
    let e = parse(&two_agents).unwrap_err();
    assert!(
        e.ends_with(
            "token_sha256 of [agents.b] is also [agents.a]'s: each agent needs a token of \
             its own"
        ),
        "{e}"
    );
    let text = format!(
        "[policy]\nfiles = [\"p\"]\n[humans.alice]\ntoken_sha256 = \"{DIGEST}\"\n[tasks.t]\n{}",
        agent("bot", &DIGEST.to_ascii_uppercase())
    );
    let e = crate::parse(&text, Path::new("a.toml"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("[agents.bot] is also [humans.alice]'s"), "{e}");
    // Humans may share one (they name themselves with --as).
    let text = format!(
        "[policy]\nfiles = [\"p\"]\n[humans.a]\ntoken_sha256 = \"{DIGEST}\"\n[humans.b]\n\
         token_sha256 = \"{DIGEST}\"\n"
    );
    crate::parse(&text, Path::new("a.toml")).unwrap();
}
