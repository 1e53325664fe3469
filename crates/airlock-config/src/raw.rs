//! The file as written: one serde struct per section, every value that
//! validation may complain about kept with its span.
//!
//! Nothing here is checked beyond TOML types and known keys; [`crate::validate`]
//! turns it into the model. A new section is a new `Raw*` struct plus a field
//! on [`RawConfig`].

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_spanned::Spanned;

/// A string with the byte range it came from.
pub(crate) type SpStr = Spanned<String>;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a TOML document of Airlock sections")]
pub(crate) struct RawConfig {
    #[serde(default)]
    pub(crate) gateway: RawGateway,
    /// Required, but optional here so its absence gets our own message.
    pub(crate) policy: Option<Spanned<RawPolicy>>,
    #[serde(default)]
    pub(crate) audit: RawAudit,
    #[serde(default)]
    pub(crate) humans: BTreeMap<SpStr, RawHuman>,
    #[serde(default)]
    pub(crate) tasks: BTreeMap<SpStr, RawTask>,
    #[serde(default)]
    pub(crate) agents: BTreeMap<SpStr, RawAgent>,
    #[serde(default)]
    pub(crate) servers: BTreeMap<SpStr, RawServer>,
    #[serde(default)]
    pub(crate) breakers: crate::control::RawBreakers,
    #[serde(default)]
    pub(crate) sandbox: crate::sandbox::RawSandbox,
    #[serde(default)]
    pub(crate) serve: crate::serve::RawServe,
    #[serde(default)]
    pub(crate) flow: crate::flow::RawFlow,
    #[serde(default)]
    pub(crate) identity: crate::identity::RawIdentity,
    pub(crate) secrets: Option<crate::credentials::RawSecrets>,
}

/// `[gateway]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [gateway] table")]
pub(crate) struct RawGateway {
    pub(crate) max_frame_bytes: Option<Spanned<u64>>,
    #[serde(default)]
    pub(crate) allow_methods: Vec<SpStr>,
    pub(crate) call_timeout_secs: Option<Spanned<u64>>,
}

/// `[policy]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [policy] table")]
pub(crate) struct RawPolicy {
    pub(crate) schema: Option<SpStr>,
    /// Required; optional here so its absence gets our own message.
    pub(crate) files: Option<Spanned<Vec<SpStr>>>,
}

/// `[audit]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "an [audit] table")]
pub(crate) struct RawAudit {
    pub(crate) path: Option<SpStr>,
    pub(crate) anchor: Option<SpStr>,
    pub(crate) durability: Option<SpStr>,
}

/// `[humans.<name>]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [humans.<id>] table")]
pub(crate) struct RawHuman {
    pub(crate) display_name: Option<String>,
    #[serde(default)]
    pub(crate) groups: Vec<SpStr>,
    /// SHA-256 (hex) of the human's bearer token.
    pub(crate) token_sha256: Option<SpStr>,
}

/// `[tasks.<name>]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [tasks.<id>] table")]
pub(crate) struct RawTask {
    pub(crate) description: Option<String>,
}

/// `[agents.<name>]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "an [agents.<id>] table")]
pub(crate) struct RawAgent {
    pub(crate) on_behalf_of: SpStr,
    pub(crate) task: SpStr,
    pub(crate) server: Option<SpStr>,
    #[serde(default)]
    pub(crate) groups: Vec<SpStr>,
    /// SHA-256 (hex) of the agent's bearer token.
    pub(crate) token_sha256: Option<SpStr>,
}

/// `[servers.<name>]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [servers.<id>] table")]
pub(crate) struct RawServer {
    pub(crate) command: Option<Spanned<Vec<SpStr>>>,
    pub(crate) description: Option<String>,
    pub(crate) tools: Option<Vec<SpStr>>,
    /// A `[sandbox.profiles.*]` name, or `"off"`.
    pub(crate) sandbox: Option<SpStr>,
    /// With `sandbox = "off"`: variables passed through beyond the basics.
    pub(crate) env: Option<Vec<SpStr>>,
    /// A remote Streamable HTTP server instead of a command.
    pub(crate) url: Option<SpStr>,
    /// How long one call to this server may take (default: `[gateway] call_timeout_secs`).
    pub(crate) timeout_secs: Option<Spanned<u64>>,
    /// How many agent sessions `airlock serve` holds open to this server at once.
    pub(crate) max_sessions: Option<Spanned<u64>>,
    pub(crate) credentials: Option<crate::credentials::RawCredentials>,
}
