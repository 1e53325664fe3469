//! `airlock.toml`: the one config file every Airlock command reads.
//!
//! The file is deserialized into raw serde types that reject unknown keys and
//! keep the span of every value, then checked and turned into the
//! validated [`Config`] once. Every problem — TOML syntax,
//! unknown key, wrong type, bad value, dangling reference — comes back as a
//! [`ConfigError`] that prints as `path:line:col: message` (1-based), which
//! `airlock check` and `airlock run` print before exiting with status 2.
//!
//! Relative paths in the file are resolved against the config file's directory.
//! The format is documented in `docs/config.md`.
//!
//! ```
//! use std::path::Path;
//!
//! let text = r#"
//! [policy]
//! files = ["policies"]
//!
//! [humans.alice]
//! [tasks.triage]
//! [agents.bot]
//! on_behalf_of = "alice"
//! task = "triage"
//!
//! [servers.corp]
//! command = ["airlock", "demo-server"]
//! "#;
//! let config = airlock_config::parse(text, Path::new("/etc/airlock/airlock.toml"))?;
//! assert_eq!(config.policy.files, [Path::new("/etc/airlock/policies")]);
//! assert_eq!(config.server_for_agent("bot"), Ok("corp"));
//!
//! let err = airlock_config::parse("[policy]\nfiles = 3\n", Path::new("airlock.toml")).unwrap_err();
//! assert_eq!(err.to_string(), "airlock.toml:2:9: invalid type: integer `3`, expected a sequence");
//! # Ok::<(), airlock_config::ConfigError>(())
//! ```

mod control;
mod credentials;
mod error;
mod flow;
mod identity;
mod model;
mod raw;
mod sandbox;
mod serve;
mod validate;

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

pub use control::{
    ArgValue, BreakerClass, BreakersConfig, ItemsSource, LoopDefaults, ToolPattern,
    BREAKER_DEFAULTS_KEY, MAX_BREAKER_COUNT, MAX_BREAKER_WINDOW_SECS,
};
pub use credentials::{
    is_header_name, is_header_value, read_secrets, Credentials, OAuthConfig, Part, SecretValues,
    SecretsConfig, Template, TemplateError, MIN_SECRET_BYTES, MIN_SIGNING_KEY_BYTES,
};
pub use error::ConfigError;
pub use flow::{FlowConfig, LabelRule, LabelScope};
pub use identity::{IdentityConfig, JwtConfig, DEFAULT_AGENT_CLAIM};
pub use model::{
    Agent, AuditConfig, Config, Durability, GatewayConfig, Human, PolicyConfig, Server, Task,
    DEFAULT_AUDIT_PATH, DEFAULT_CALL_TIMEOUT_SECS, DEFAULT_MAX_FRAME_BYTES, MAX_CALL_TIMEOUT_SECS,
    MAX_MAX_FRAME_BYTES, MIN_MAX_FRAME_BYTES,
};
pub use sandbox::{
    EgressRule, SandboxConfig, SandboxLayer, SandboxProfile, ServerSandbox, AIRLOCK_ENV_PREFIX,
    DEFAULT_CPU_SECONDS, DEFAULT_EGRESS_PORTS, DEFAULT_ENV, DEFAULT_MAX_PROCESSES,
    DEFAULT_MEMORY_BYTES, DEFAULT_SANDBOX_PROFILE, MIN_MEMORY_MB, OFF_BASE_ENV, SANDBOX_OFF,
    SYSTEM_READ_PATHS,
};

pub use serve::{
    check_listen, ServeConfig, WebhookConfig, DEFAULT_SERVE_LISTEN, DEFAULT_SESSION_MINUTES,
    DEFAULT_WEBHOOK_TIMEOUT_SECS, MAX_SESSION_MINUTES,
};

pub use validate::is_valid_name;

use error::Source;

/// Reads and validates the config file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let bytes = std::fs::read(path).map_err(|e| ConfigError::File {
        path: path.to_path_buf(),
        message: format!("cannot read: {e}"),
    })?;
    match std::str::from_utf8(&bytes) {
        Ok(text) => parse(text, path),
        Err(e) => {
            // Point at the first bad byte: the valid prefix is text we can count in.
            let valid = String::from_utf8_lossy(&bytes[..e.valid_up_to()]);
            Err(Source::new(&valid, path).error_at(e.valid_up_to(), "file is not valid UTF-8"))
        }
    }
}

/// Validates config `text`. `path` is used in error messages, and its parent
/// directory is the base for relative paths in the file.
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let source = Source::new(text, path);
    let raw: raw::RawConfig = toml::from_str(text).map_err(|e| {
        // Errors without a span are about the document as a whole: report line 1.
        let span = e.span().unwrap_or(0..0);
        source.error(span, e.message().trim_end())
    })?;
    let base_dir = base_dir(path);
    validate::build(
        raw,
        validate::Origin {
            source: &source,
            path,
            base_dir: &base_dir,
            digest: hex::encode(Sha256::digest(text.as_bytes())),
        },
    )
}

/// The config file's directory, made absolute so resolved paths survive a
/// change of working directory.
fn base_dir(path: &Path) -> PathBuf {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::path::absolute(parent).unwrap_or_else(|_| parent.to_path_buf())
}
