//! The validated model: what every Airlock command works from.
//!
//! Every value here has passed validation: names are well formed, references
//! resolve, paths are joined onto the config file's directory.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// Default `[gateway] max_frame_bytes`: 4 MiB.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 4 * 1024 * 1024;
/// Smallest allowed `max_frame_bytes`: 1 KiB.
pub const MIN_MAX_FRAME_BYTES: usize = 1024;
/// Largest allowed `max_frame_bytes`: 256 MiB.
pub const MAX_MAX_FRAME_BYTES: usize = 256 * 1024 * 1024;
/// Default `[gateway] call_timeout_secs`.
pub const DEFAULT_CALL_TIMEOUT_SECS: u64 = 300;
/// Largest allowed `call_timeout_secs`: one day.
pub const MAX_CALL_TIMEOUT_SECS: u64 = 24 * 60 * 60;
/// Default `[audit] path`, relative to the config file's directory.
pub const DEFAULT_AUDIT_PATH: &str = "airlock-audit.db";

/// A validated `airlock.toml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The config path as given to [`crate::load`] or [`crate::parse`].
    pub path: PathBuf,
    /// The directory relative paths in the file were resolved against.
    pub base_dir: PathBuf,
    /// SHA-256 (lowercase hex) of the file's bytes: records which config made a decision.
    pub digest: String,
    /// `[gateway]`
    pub gateway: GatewayConfig,
    /// `[policy]`
    pub policy: PolicyConfig,
    /// `[audit]`
    pub audit: AuditConfig,
    /// `[humans.<id>]`
    pub humans: BTreeMap<String, Human>,
    /// `[tasks.<id>]`
    pub tasks: BTreeMap<String, Task>,
    /// `[agents.<id>]`
    pub agents: BTreeMap<String, Agent>,
    /// `[servers.<id>]`
    pub servers: BTreeMap<String, Server>,
    /// `[breakers]`: budgets per agent × action class, and loop detection.
    pub breakers: crate::control::BreakersConfig,
    /// `[sandbox]`: sandbox profiles, always including `default`.
    pub sandbox: crate::sandbox::SandboxConfig,
    /// `[serve]`: the control plane of `airlock serve`.
    pub serve: crate::serve::ServeConfig,
    /// `[flow]`: information-flow labels.
    pub flow: crate::flow::FlowConfig,
    /// `[identity]`: the credentials agents present.
    pub identity: crate::identity::IdentityConfig,
    /// `[secrets]`: where `${secret:NAME}` values come from.
    pub secrets: crate::credentials::SecretsConfig,
}

/// `[gateway]`: limits of the stdio gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayConfig {
    /// Largest JSON-RPC frame accepted from either side, in bytes.
    pub max_frame_bytes: usize,
    /// Extra request methods passed to the server without a policy decision.
    pub allow_methods: Vec<String>,
    /// How long one call to the server may take.
    pub call_timeout: Duration,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            allow_methods: Vec::new(),
            call_timeout: Duration::from_secs(DEFAULT_CALL_TIMEOUT_SECS),
        }
    }
}

/// `[policy]`: where the Cedar policies live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyConfig {
    /// A Cedar schema file; `None` means the schema embedded in Airlock.
    pub schema: Option<PathBuf>,
    /// Policy files, or directories of `*.cedar` files; never empty.
    pub files: Vec<PathBuf>,
}

/// `[audit]`: where the audit chain is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditConfig {
    /// The SQLite database.
    pub path: PathBuf,
    /// The chain-head anchor file.
    pub anchor: PathBuf,
    /// What a committed record survives.
    pub durability: Durability,
}

/// What a committed audit record survives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `"process"`: survives the Airlock process dying (even `kill -9`), not a power loss.
    #[default]
    Process,
    /// `"power-loss"`: fsync on every commit; survives a power loss.
    PowerLoss,
}

impl Durability {
    /// The spelling used in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            Durability::Process => "process",
            Durability::PowerLoss => "power-loss",
        }
    }

    /// The value for a config spelling, if it is one.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "process" => Some(Durability::Process),
            "power-loss" => Some(Durability::PowerLoss),
            _ => None,
        }
    }
}

impl std::fmt::Display for Durability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[humans.<id>]`: a person agents act for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Human {
    /// A name for people to read.
    pub display_name: Option<String>,
    /// Group ids (Cedar parents).
    pub groups: Vec<String>,
    /// SHA-256 (lowercase hex) of the human's bearer token; `None`: cannot act on Airlock.
    pub token_sha256: Option<String>,
}

/// `[tasks.<id>]`: a job an agent is given.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Task {
    /// What the task is, for people.
    pub description: Option<String>,
}

/// `[agents.<id>]`: an agent identity; references are checked to exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    /// The id of a `[humans.*]` entry.
    pub on_behalf_of: String,
    /// The id of a `[tasks.*]` entry.
    pub task: String,
    /// The id of a `[servers.*]` entry: the default server for `airlock run`.
    pub server: Option<String>,
    /// Group ids (Cedar parents).
    pub groups: Vec<String>,
    /// SHA-256 (lowercase hex) of the agent's bearer token; `None`: it presents none.
    pub token_sha256: Option<String>,
}

/// `[servers.<id>]`: an upstream MCP server.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Server {
    /// Program and arguments Airlock can start; never empty when present.
    pub command: Option<Vec<String>>,
    /// What the server is, for people.
    pub description: Option<String>,
    /// Tool names the server is expected to have (for `airlock check` warnings).
    pub tools: Option<Vec<String>>,
    /// The sandbox the server runs in (default: the `default` profile).
    pub sandbox: crate::sandbox::ServerSandbox,
    /// With `sandbox = "off"`: the environment variables passed through on top of
    /// [`crate::OFF_BASE_ENV`]; every other one is cleared. (A sandboxed server gets its
    /// profile's `env`.)
    pub env: Vec<String>,
    /// A remote Streamable HTTP server (`http://` or `https://`), reached by `airlock serve`;
    /// never together with `command`.
    pub url: Option<String>,
    /// How long one call to this server may take; `None`: `[gateway] call_timeout`.
    pub timeout: Option<Duration>,
    /// How many agent sessions `airlock serve` holds open to this server at once; `None`: no
    /// limit of its own (the gateway's session limit still holds).
    pub max_sessions: Option<usize>,
    /// `[servers.<id>.credentials]`: what Airlock adds to its requests for the server.
    pub credentials: crate::credentials::Credentials,
}

// === impl Config ===

impl Config {
    /// The sandbox profile `server` runs in: `None` for `sandbox = "off"` or an unknown
    /// server. The name is the profile's.
    pub fn sandbox_for_server(
        &self,
        server: &str,
    ) -> Option<(&str, &crate::sandbox::SandboxProfile)> {
        match &self.servers.get(server)?.sandbox {
            crate::sandbox::ServerSandbox::Off => None,
            crate::sandbox::ServerSandbox::Profile(name) => self
                .sandbox
                .profiles
                .get_key_value(name)
                .map(|(n, p)| (n.as_str(), p)),
        }
    }

    /// Sandbox settings `airlock check` reports as warnings: servers with
    /// `sandbox = "off"`, profiles that turn layers off.
    pub fn sandbox_warnings(&self) -> Vec<String> {
        crate::sandbox::warnings(self)
    }

    /// Credentials `airlock check` reports as warnings: values written in the config file.
    pub fn credential_warnings(&self) -> Vec<String> {
        crate::credentials::warnings(self)
    }

    /// The agent with this id.
    pub fn agent(&self, id: &str) -> Option<&Agent> {
        self.agents.get(id)
    }

    /// The server `airlock run` uses for `agent`: its `server`, else the only
    /// configured server. The error is a sentence for the operator.
    pub fn server_for_agent(&self, agent: &str) -> Result<&str, String> {
        let Some(a) = self.agent(agent) else {
            return Err(format!(
                "unknown agent \"{agent}\": it has no [agents.{agent}] section in {}",
                self.path.display()
            ));
        };
        if let Some(server) = &a.server {
            return Ok(server);
        }
        let mut names = self.servers.keys();
        match (names.next(), names.next()) {
            (Some(only), None) => Ok(only),
            (None, _) => Err(format!(
                "agent \"{agent}\" has no server: {} defines no [servers.*] section",
                self.path.display()
            )),
            (Some(_), Some(_)) => {
                let all: Vec<&str> = self.servers.keys().map(String::as_str).collect();
                Err(format!(
                    "agent \"{agent}\" has no default server and {} defines several ({}); \
                     set `server` in [agents.{agent}]",
                    self.path.display(),
                    all.join(", ")
                ))
            }
        }
    }
}
