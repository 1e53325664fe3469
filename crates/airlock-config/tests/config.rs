//! The `airlock.toml` contract: the validated model, defaults, and the exact
//! `path:line:col: message` of every kind of error.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use airlock_config::{
    load, parse, Agent, AuditConfig, Config, ConfigError, Durability, GatewayConfig, Human,
    IdentityConfig, JwtConfig, PolicyConfig, Server, Task,
};
use sha2::{Digest, Sha256};

const PATH: &str = "/etc/airlock/airlock.toml";

/// The smallest valid config; error cases append to it so their line numbers
/// start at 3.
const MINIMAL: &str = "[policy]\nfiles = [\"p.cedar\"]\n";

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The error message for `text`, which must fail.
fn error(text: &str) -> String {
    parse(text, Path::new(PATH)).unwrap_err().to_string()
}

/// Like [`error`], with `extra` after [`MINIMAL`].
fn error_after_minimal(extra: &str) -> String {
    error(&format!("{MINIMAL}{extra}"))
}

const FULL: &str = r#"# A complete config.
[gateway]
max_frame_bytes = 65536
allow_methods = ["logging/setLevel", "completion/complete"]
call_timeout_secs = 30

[policy]
schema = "policies/airlock.cedarschema"
files = ["policies/demo.cedar", "/opt/shared/policies"]

[audit]
path = "state/audit.db"
anchor = "/var/lib/airlock/audit.anchor"
durability = "power-loss"

[humans.alice]
display_name = "Alice Ng"
groups = ["sre", "support"]

[humans.bob]

[tasks.support-triage]
description = "Answer support questions in the forum"

[tasks.deploy]

[agents.support-bot]
on_behalf_of = "alice"
task = "support-triage"
server = "corp"
groups = ["bots"]

[agents.deployer]
on_behalf_of = "bob"
task = "deploy"
token_sha256 = "C892F40DB4A28BF32432A0ED53DAAB3B62E9DC400401E54C509039CC6A94631A"

[servers.corp]
command = ["airlock", "demo-server"]
description = "The demo company"
tools = ["forum_post", "acl_set"]

[servers.github]

[identity]
require_token = true

[identity.jwt]
issuer = "https://idp.example.com"
audience = "airlock"
jwks_file = "keys/jwks.json"
"#;

#[test]
fn full_config_builds_the_whole_model() {
    let config = parse(FULL, Path::new(PATH)).unwrap();
    let expected = Config {
        path: PathBuf::from(PATH),
        base_dir: PathBuf::from("/etc/airlock"),
        digest: sha256_hex(FULL.as_bytes()),
        gateway: GatewayConfig {
            max_frame_bytes: 65536,
            allow_methods: vec!["logging/setLevel".into(), "completion/complete".into()],
            call_timeout: Duration::from_secs(30),
        },
        policy: PolicyConfig {
            schema: Some("/etc/airlock/policies/airlock.cedarschema".into()),
            files: vec![
                "/etc/airlock/policies/demo.cedar".into(),
                "/opt/shared/policies".into(),
            ],
        },
        audit: AuditConfig {
            path: "/etc/airlock/state/audit.db".into(),
            anchor: "/var/lib/airlock/audit.anchor".into(),
            durability: Durability::PowerLoss,
        },
        humans: BTreeMap::from([
            (
                "alice".into(),
                Human {
                    display_name: Some("Alice Ng".into()),
                    groups: vec!["sre".into(), "support".into()],
                    token_sha256: None,
                },
            ),
            ("bob".into(), Human::default()),
        ]),
        tasks: BTreeMap::from([
            (
                "support-triage".into(),
                Task {
                    description: Some("Answer support questions in the forum".into()),
                },
            ),
            ("deploy".into(), Task::default()),
        ]),
        agents: BTreeMap::from([
            (
                "support-bot".into(),
                Agent {
                    on_behalf_of: "alice".into(),
                    task: "support-triage".into(),
                    server: Some("corp".into()),
                    groups: vec!["bots".into()],
                    token_sha256: None,
                },
            ),
            (
                "deployer".into(),
                Agent {
                    on_behalf_of: "bob".into(),
                    task: "deploy".into(),
                    server: None,
                    groups: vec![],
                    token_sha256: Some(
                        "c892f40db4a28bf32432a0ed53daab3b62e9dc400401e54c509039cc6a94631a".into(),
                    ),
                },
            ),
        ]),
        servers: BTreeMap::from([
            (
                "corp".into(),
                Server {
                    command: Some(vec!["airlock".into(), "demo-server".into()]),
                    description: Some("The demo company".into()),
                    tools: Some(vec!["forum_post".into(), "acl_set".into()]),
                    sandbox: Default::default(),
                    env: Vec::new(),
                    url: None,
                    timeout: None,
                    max_sessions: None,
                    credentials: Default::default(),
                },
            ),
            ("github".into(), Server::default()),
        ]),
        breakers: Default::default(),
        sandbox: Default::default(),
        serve: Default::default(),
        flow: Default::default(),
        identity: IdentityConfig {
            require_token: true,
            jwt: Some(JwtConfig {
                issuer: "https://idp.example.com".into(),
                audience: "airlock".into(),
                jwks_file: "/etc/airlock/keys/jwks.json".into(),
                agent_claim: "sub".into(),
            }),
        },
        secrets: Default::default(),
    };
    assert_eq!(config, expected);
    assert_eq!(config.digest.len(), 64);
}

#[test]
fn minimal_config_gets_the_documented_defaults() {
    let config = parse(MINIMAL, Path::new(PATH)).unwrap();
    assert_eq!(
        config.gateway,
        GatewayConfig {
            max_frame_bytes: 4 * 1024 * 1024,
            allow_methods: vec![],
            call_timeout: Duration::from_secs(300),
        }
    );
    assert_eq!(
        config.policy,
        PolicyConfig {
            schema: None,
            files: vec!["/etc/airlock/p.cedar".into()],
        }
    );
    assert_eq!(
        config.audit,
        AuditConfig {
            path: "/etc/airlock/airlock-audit.db".into(),
            anchor: "/etc/airlock/airlock-audit.db.anchor".into(),
            durability: Durability::Process,
        }
    );
    assert!(config.humans.is_empty() && config.tasks.is_empty());
    assert!(config.agents.is_empty() && config.servers.is_empty());
}

#[test]
fn default_anchor_follows_a_configured_audit_path() {
    let config = parse(
        &format!("{MINIMAL}[audit]\npath = \"/data/a.db\"\ndurability = \"process\"\n"),
        Path::new(PATH),
    )
    .unwrap();
    assert_eq!(config.audit.anchor, Path::new("/data/a.db.anchor"));
    assert_eq!(config.audit.durability, Durability::Process);
}

#[test]
fn relative_config_path_resolves_against_the_working_directory() {
    let config = parse(MINIMAL, Path::new("airlock.toml")).unwrap();
    let cwd = std::env::current_dir().unwrap();
    assert_eq!(config.path, Path::new("airlock.toml"));
    assert_eq!(config.base_dir, cwd);
    assert_eq!(config.policy.files, [cwd.join("p.cedar")]);
}

// === errors: TOML syntax, keys, types ===

#[test]
fn toml_syntax_error_is_positioned() {
    assert_eq!(
        error("[policy\nfiles = []\n"),
        "/etc/airlock/airlock.toml:1:8: unclosed table, expected `]`"
    );
}

#[test]
fn duplicate_table_is_positioned() {
    assert_eq!(
        error_after_minimal("[humans.a]\n[humans.a]\n"),
        "/etc/airlock/airlock.toml:4:9: duplicate key"
    );
}

#[test]
fn unknown_key_points_at_the_key() {
    assert_eq!(
        error_after_minimal("bogus = 1\n"),
        "/etc/airlock/airlock.toml:3:1: unknown field `bogus`, expected `schema` or `files`"
    );
    assert_eq!(
        error_after_minimal("[agents.x]\non_behalf_of = \"h\"\ntask = \"t\"\n  colour = \"red\"\n"),
        "/etc/airlock/airlock.toml:6:3: unknown field `colour`, expected one of `on_behalf_of`, `task`, \
         `server`, `groups`, `token_sha256`"
    );
}

#[test]
fn unknown_section_points_at_the_header() {
    assert_eq!(
        error_after_minimal("[approvalz]\n"),
        "/etc/airlock/airlock.toml:3:2: unknown field `approvalz`, expected one of `gateway`, \
         `policy`, `audit`, `humans`, `tasks`, `agents`, `servers`, `breakers`, `sandbox`, \
         `serve`, `flow`, `identity`, `secrets`"
    );
}

#[test]
fn wrong_type_points_at_the_value() {
    assert_eq!(
        error("[policy]\nfiles = 3\n"),
        "/etc/airlock/airlock.toml:2:9: invalid type: integer `3`, expected a sequence"
    );
    assert_eq!(
        error_after_minimal("[gateway]\nmax_frame_bytes = \"big\"\n"),
        "/etc/airlock/airlock.toml:4:19: invalid type: string \"big\", expected u64"
    );
    assert_eq!(
        error_after_minimal("[humans]\nalice = 3\n"),
        "/etc/airlock/airlock.toml:4:9: invalid type: integer `3`, expected a [humans.<id>] table"
    );
}

#[test]
fn missing_required_key_points_at_its_table() {
    assert_eq!(
        error_after_minimal("[humans.h]\n[agents.x]\ntask = \"t\"\n"),
        "/etc/airlock/airlock.toml:4:1: missing field `on_behalf_of`"
    );
}

// === errors: values ===

#[test]
fn missing_policy_section_or_files() {
    assert_eq!(
        error("[gateway]\n"),
        "/etc/airlock/airlock.toml:1:1: missing [policy] section: it must list at least one \
         policy file in `files`"
    );
    assert_eq!(
        error("\n[policy]\nschema = \"s\"\n"),
        "/etc/airlock/airlock.toml:2:1: [policy] needs `files`: a list of at least one policy \
         file or directory"
    );
    assert_eq!(
        error("[policy]\nfiles = []\n"),
        "/etc/airlock/airlock.toml:2:9: policy files: at least one policy file or directory is \
         required"
    );
    assert_eq!(
        error("[policy]\nfiles = [\"a\", \"\"]\n"),
        "/etc/airlock/airlock.toml:2:15: policy files: a path must not be empty"
    );
}

#[test]
fn max_frame_bytes_range() {
    assert_eq!(
        error_after_minimal("[gateway]\nmax_frame_bytes = 1023\n"),
        "/etc/airlock/airlock.toml:4:19: max_frame_bytes = 1023 is out of range: allowed 1024 ..= \
         268435456"
    );
    assert_eq!(
        error_after_minimal("[gateway]\nmax_frame_bytes = 268435457\n"),
        "/etc/airlock/airlock.toml:4:19: max_frame_bytes = 268435457 is out of range: allowed \
         1024 ..= 268435456"
    );
    for edge in [1024, 268435456] {
        let text = format!("{MINIMAL}[gateway]\nmax_frame_bytes = {edge}\n");
        let config = parse(&text, Path::new(PATH)).unwrap();
        assert_eq!(config.gateway.max_frame_bytes, edge);
    }
}

#[test]
fn call_timeout_must_be_positive() {
    assert_eq!(
        error_after_minimal("[gateway]\ncall_timeout_secs = 0\n"),
        "/etc/airlock/airlock.toml:4:21: call_timeout_secs = 0 is out of range: allowed 1 ..= 86400"
    );
}

#[test]
fn allow_methods_cannot_bypass_policy() {
    assert_eq!(
        error_after_minimal("[gateway]\nallow_methods = [\"ping2\", \"tools/call\"]\n"),
        "/etc/airlock/airlock.toml:4:27: allow_methods: \"tools/call\" is always decided by \
         policy and cannot be allowed here"
    );
    assert_eq!(
        error_after_minimal("[gateway]\nallow_methods = [\"x\", \"x\"]\n"),
        "/etc/airlock/airlock.toml:4:23: allow_methods: \"x\" is listed twice"
    );
}

#[test]
fn durability_must_be_a_known_value() {
    assert_eq!(
        error_after_minimal("[audit]\ndurability = \"fsync\"\n"),
        "/etc/airlock/airlock.toml:4:14: unknown durability \"fsync\": expected \"process\" or \
         \"power-loss\""
    );
}

#[test]
fn anchor_cannot_be_the_database() {
    assert_eq!(
        error_after_minimal("[audit]\npath = \"a.db\"\nanchor = \"./a.db\"\n"),
        "/etc/airlock/airlock.toml:5:10: audit anchor must not be the audit database itself"
    );
}

#[test]
fn empty_command_is_an_error() {
    assert_eq!(
        error_after_minimal("[servers.s]\ncommand = []\n"),
        "/etc/airlock/airlock.toml:4:11: command must not be empty: give the program and its \
         arguments, or leave `command` out"
    );
    assert_eq!(
        error_after_minimal("[servers.s]\ncommand = [\"\", \"x\"]\n"),
        "/etc/airlock/airlock.toml:4:12: command: the program must not be empty"
    );
}

#[test]
fn bad_names_point_at_the_name() {
    assert_eq!(
        error_after_minimal("[humans.\"a b\"]\n"),
        "/etc/airlock/airlock.toml:3:9: invalid human name \"a b\": use 1 to 64 of A-Z a-z 0-9 _ \
         . - starting with a letter or digit"
    );
    assert_eq!(
        error_after_minimal("[servers]\n\"corp/x\" = {}\n"),
        "/etc/airlock/airlock.toml:4:1: invalid server name \"corp/x\": use 1 to 64 of A-Z a-z \
         0-9 _ . - starting with a letter or digit"
    );
    assert_eq!(
        error_after_minimal("[humans.h]\ngroups = [\"ok\", \"no\\\"quote\"]\n"),
        "/etc/airlock/airlock.toml:4:17: invalid group name \"no\\\"quote\": use 1 to 64 of A-Z \
         a-z 0-9 _ . - starting with a letter or digit"
    );
}

#[test]
fn bad_tool_names() {
    assert_eq!(
        error_after_minimal("[servers.s]\ntools = [\"a\", \"\"]\n"),
        "/etc/airlock/airlock.toml:4:15: invalid tool name \"\": 1 to 128 characters, no control \
         characters"
    );
    assert_eq!(
        error_after_minimal("[servers.s]\ntools = [\"a\", \"a\"]\n"),
        "/etc/airlock/airlock.toml:4:15: tools: \"a\" is listed twice"
    );
}

// === errors: references ===

const PEOPLE: &str = "[humans.alice]\n[tasks.triage]\n[servers.corp]\n";

#[test]
fn dangling_references_point_at_the_value() {
    let base = format!("{MINIMAL}{PEOPLE}[agents.bot]\n");
    let cases = [
        (
            "on_behalf_of = \"bob\"\ntask = \"triage\"\n",
            "7:16: on_behalf_of: unknown human \"bob\" (no [humans.bob] section)",
        ),
        (
            "on_behalf_of = \"alice\"\ntask = \"deploy\"\n",
            "8:8: task: unknown task \"deploy\" (no [tasks.deploy] section)",
        ),
        (
            "on_behalf_of = \"alice\"\ntask = \"triage\"\nserver = \"github\"\n",
            "9:10: server: unknown server \"github\" (no [servers.github] section)",
        ),
    ];
    for (agent, expected) in cases {
        assert_eq!(
            error(&format!("{base}{agent}")),
            format!("/etc/airlock/airlock.toml:{expected}")
        );
    }
}

#[test]
fn the_earliest_problem_in_the_file_is_reported() {
    // Map order would check `aaa` first; the file has `zzz` first.
    let text = format!(
        "{MINIMAL}{PEOPLE}[agents.zzz]\non_behalf_of = \"nobody\"\ntask = \"triage\"\n\
         [agents.aaa]\non_behalf_of = \"alice\"\ntask = \"none\"\n"
    );
    assert_eq!(
        error(&text),
        "/etc/airlock/airlock.toml:7:16: on_behalf_of: unknown human \"nobody\" (no \
         [humans.nobody] section)"
    );
}

#[test]
fn error_is_structured() {
    let err = parse(&format!("{MINIMAL}bogus = 1\n"), Path::new("c.toml")).unwrap_err();
    match err {
        ConfigError::At {
            path,
            line,
            col,
            message,
        } => {
            assert_eq!((path.as_path(), line, col), (Path::new("c.toml"), 3, 1));
            assert!(message.starts_with("unknown field `bogus`"), "{message}");
        }
        other => panic!("expected At, got {other:?}"),
    }
}

// === server_for_agent ===

#[test]
fn server_for_agent_prefers_the_agents_server_then_the_only_one() {
    let two = parse(FULL, Path::new(PATH)).unwrap();
    assert_eq!(two.server_for_agent("support-bot"), Ok("corp"));
    let err = two.server_for_agent("deployer").unwrap_err();
    assert!(err.contains("several (corp, github)"), "{err}");
    assert!(err.contains("[agents.deployer]"), "{err}");
    let err = two.server_for_agent("ghost").unwrap_err();
    assert!(err.starts_with("unknown agent \"ghost\""), "{err}");
    assert_eq!(two.agent("ghost"), None);
    assert_eq!(
        two.agent("deployer").map(|a| a.task.as_str()),
        Some("deploy")
    );

    let agent = "[agents.bot]\non_behalf_of = \"alice\"\ntask = \"triage\"\n";
    let one = parse(&format!("{MINIMAL}{PEOPLE}{agent}"), Path::new(PATH)).unwrap();
    assert_eq!(one.server_for_agent("bot"), Ok("corp"));

    let none = format!("{MINIMAL}[humans.alice]\n[tasks.triage]\n{agent}");
    let none = parse(&none, Path::new(PATH)).unwrap();
    let err = none.server_for_agent("bot").unwrap_err();
    assert!(err.contains("no [servers.*] section"), "{err}");
}

// === load ===

#[test]
fn load_reads_the_file_and_digests_its_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("airlock.toml");
    std::fs::write(&path, FULL).unwrap();
    let config = load(&path).unwrap();
    assert_eq!(config.path, path);
    assert_eq!(config.base_dir, dir.path());
    assert_eq!(config.digest, sha256_hex(FULL.as_bytes()));
    assert_eq!(config.audit.path, dir.path().join("state/audit.db"));
}

#[test]
fn load_reports_unreadable_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing.toml");
    let err = load(&path).unwrap_err();
    assert!(matches!(err, ConfigError::File { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("{}: cannot read: ", path.display())),
        "{text}"
    );
}

#[test]
fn load_positions_invalid_utf8() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("airlock.toml");
    std::fs::write(&path, b"[policy]\nfiles = [\"\xff\"]\n").unwrap();
    assert_eq!(
        load(&path).unwrap_err().to_string(),
        format!("{}:2:11: file is not valid UTF-8", path.display())
    );
}

#[test]
fn the_shipped_example_parses() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/airlock.toml");
    if !path.exists() {
        eprintln!("skipped: {} does not exist yet", path.display());
        return;
    }
    let config = load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert!(!config.policy.files.is_empty());
}

#[test]
fn every_toml_example_in_the_docs_parses() {
    let doc = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/config.md");
    let doc = std::fs::read_to_string(doc).unwrap();
    let blocks: Vec<&str> = doc
        .split("```toml\n")
        .skip(1)
        .filter_map(|rest| rest.split("```").next())
        .collect();
    assert_eq!(
        blocks.len(),
        2,
        "docs/config.md should hold two whole-file toml examples (fragments use plain fences)"
    );
    for block in blocks {
        if let Err(e) = parse(block, Path::new(PATH)) {
            panic!("docs example fails: {e}\n{block}");
        }
    }
}
