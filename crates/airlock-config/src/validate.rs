//! Raw file types → the validated model, with every complaint positioned.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_spanned::Spanned;

use crate::error::{ConfigError, Source};
use crate::model::{
    Agent, AuditConfig, Config, Durability, GatewayConfig, Human, PolicyConfig, Server, Task,
    DEFAULT_AUDIT_PATH, DEFAULT_CALL_TIMEOUT_SECS, DEFAULT_MAX_FRAME_BYTES, MAX_CALL_TIMEOUT_SECS,
    MAX_MAX_FRAME_BYTES, MIN_MAX_FRAME_BYTES,
};
use crate::raw::{
    RawAgent, RawAudit, RawConfig, RawGateway, RawHuman, RawPolicy, RawServer, RawTask, SpStr,
};

/// Methods that always go through policy (or list filtering): allowing them
/// by name would let an agent bypass the decision, so the config may not.
const POLICY_METHODS: &[&str] = &["tools/call", "tools/list", "resources/read", "prompts/get"];

/// Longest tool name accepted in `[servers.*] tools` (the MCP spec's limit).
const MAX_TOOL_NAME_CHARS: usize = 128;

/// What the validated model is built from besides the raw file.
pub(crate) struct Origin<'a> {
    pub(crate) source: &'a Source<'a>,
    pub(crate) path: &'a Path,
    pub(crate) base_dir: &'a Path,
    pub(crate) digest: String,
}

/// Complaints collected while building; the one earliest in the file wins, so
/// the reported error does not depend on map order.
#[derive(Default)]
struct Problems {
    first: Option<(usize, String)>,
}

impl Problems {
    fn at(&mut self, span: Range<usize>, message: String) {
        if self.first.as_ref().is_none_or(|(o, _)| span.start < *o) {
            self.first = Some((span.start, message));
        }
    }
}

/// Checks `raw` and builds the model, or returns the first problem in the file.
pub(crate) fn build(raw: RawConfig, origin: Origin<'_>) -> Result<Config, ConfigError> {
    let mut p = Problems::default();
    let base = origin.base_dir;

    let gateway = gateway(raw.gateway, &mut p);
    let policy = match raw.policy {
        Some(policy) => policy_section(policy, base, &mut p),
        None => {
            p.at(
                0..0,
                "missing [policy] section: it must list at least one policy file in `files`".into(),
            );
            None
        }
    };
    let audit = audit(raw.audit, base, &mut p);

    let humans = named(&raw.humans, "human", &mut p, |h: &RawHuman, p| Human {
        display_name: h.display_name.clone(),
        groups: groups(&h.groups, p),
        token_sha256: crate::control::token_sha256(h.token_sha256.as_ref(), &mut |s, m| p.at(s, m)),
    });
    let tasks = named(&raw.tasks, "task", &mut p, |t, _| Task {
        description: t.description.clone(),
    });
    let sandbox = crate::sandbox::sandbox(&raw.sandbox, base, &mut |s, m| p.at(s, m));
    for name in raw.servers.keys() {
        if name.get_ref().contains("__") {
            p.at(
                name.span(),
                format!(
                    "server name \"{}\" contains `__`, which `airlock serve` uses between a \
                     server and a tool name (`<server>__<tool>`)",
                    name.get_ref().escape_debug()
                ),
            );
        }
    }
    let (secrets, secret_values) =
        crate::credentials::secrets(raw.secrets.as_ref(), base, &mut |s, m| p.at(s, m));
    let servers = named(&raw.servers, "server", &mut p, |s: &RawServer, p| {
        let mut built = server(s, p);
        built.sandbox =
            crate::sandbox::server_sandbox(s, &raw.sandbox.profiles, &mut |sp, m| p.at(sp, m));
        built.env = crate::sandbox::server_env(s, &built.sandbox, &mut |sp, m| p.at(sp, m));
        built.credentials = crate::credentials::credentials(
            s.credentials.as_ref(),
            &secret_values,
            &mut |sp, m| p.at(sp, m),
        );
        built
    });
    // Checked; the model keeps no secret value.
    drop(secret_values);
    let agents = named(&raw.agents, "agent", &mut p, |a: &RawAgent, p| {
        agent(a, &raw.humans, &raw.tasks, &raw.servers, p)
    });
    let breakers =
        crate::control::breakers(&raw.breakers, &raw.agents, &raw.servers, &mut |s, m| {
            p.at(s, m)
        });
    let serve = crate::serve::serve(&raw.serve, &mut |s, m| p.at(s, m));
    let flow = crate::flow::flow(&raw.flow, &raw.servers, &mut |s, m| p.at(s, m));
    let identity = crate::identity::identity(&raw.identity, base, &mut |s, m| p.at(s, m));
    crate::identity::unique_credentials(&raw.agents, &raw.humans, &mut |s, m| p.at(s, m));

    if let Some((offset, message)) = p.first {
        return Err(origin.source.error_at(offset, message));
    }
    let Some(policy) = policy else {
        // Unreachable: a missing or bad [policy] always records a problem.
        return Err(origin.source.error_at(0, "invalid [policy] section"));
    };
    Ok(Config {
        path: origin.path.to_path_buf(),
        base_dir: base.to_path_buf(),
        digest: origin.digest,
        gateway,
        policy,
        audit,
        humans,
        tasks,
        agents,
        servers,
        breakers,
        sandbox,
        serve,
        flow,
        identity,
        secrets,
    })
}

fn gateway(raw: RawGateway, p: &mut Problems) -> GatewayConfig {
    let max_frame_bytes = match raw.max_frame_bytes {
        None => DEFAULT_MAX_FRAME_BYTES,
        Some(v) => match usize::try_from(*v.get_ref()) {
            Ok(n) if (MIN_MAX_FRAME_BYTES..=MAX_MAX_FRAME_BYTES).contains(&n) => n,
            _ => {
                p.at(
                    v.span(),
                    format!(
                        "max_frame_bytes = {} is out of range: allowed {MIN_MAX_FRAME_BYTES} ..= \
                         {MAX_MAX_FRAME_BYTES}",
                        v.get_ref()
                    ),
                );
                DEFAULT_MAX_FRAME_BYTES
            }
        },
    };

    let mut seen = BTreeSet::new();
    for m in &raw.allow_methods {
        let name = m.get_ref().as_str();
        if name.trim().is_empty() {
            p.at(
                m.span(),
                "allow_methods: a method name must not be empty".into(),
            );
        } else if POLICY_METHODS.contains(&name) {
            p.at(
                m.span(),
                format!("allow_methods: \"{name}\" is always decided by policy and cannot be allowed here"),
            );
        } else if !seen.insert(name) {
            p.at(
                m.span(),
                format!("allow_methods: \"{name}\" is listed twice"),
            );
        }
    }

    let secs = match raw.call_timeout_secs {
        None => DEFAULT_CALL_TIMEOUT_SECS,
        Some(v) if (1..=MAX_CALL_TIMEOUT_SECS).contains(v.get_ref()) => *v.get_ref(),
        Some(v) => {
            p.at(
                v.span(),
                format!(
                    "call_timeout_secs = {} is out of range: allowed 1 ..= {MAX_CALL_TIMEOUT_SECS}",
                    v.get_ref()
                ),
            );
            DEFAULT_CALL_TIMEOUT_SECS
        }
    };

    GatewayConfig {
        max_frame_bytes,
        allow_methods: raw
            .allow_methods
            .into_iter()
            .map(Spanned::into_inner)
            .collect(),
        call_timeout: Duration::from_secs(secs),
    }
}

fn policy_section(raw: Spanned<RawPolicy>, base: &Path, p: &mut Problems) -> Option<PolicyConfig> {
    let section = raw.span();
    let raw = raw.into_inner();
    let schema = raw
        .schema
        .as_ref()
        .map(|s| path_value(s, "schema", base, p));
    let Some(files) = raw.files else {
        p.at(
            section,
            "[policy] needs `files`: a list of at least one policy file or directory".into(),
        );
        return None;
    };
    if files.get_ref().is_empty() {
        p.at(
            files.span(),
            "policy files: at least one policy file or directory is required".into(),
        );
        return None;
    }
    unique(files.get_ref(), "policy files", p);
    let files = files
        .get_ref()
        .iter()
        .map(|f| path_value(f, "policy files", base, p))
        .collect();
    Some(PolicyConfig { schema, files })
}

fn audit(raw: RawAudit, base: &Path, p: &mut Problems) -> AuditConfig {
    let path = match &raw.path {
        Some(v) => path_value(v, "audit path", base, p),
        None => base.join(DEFAULT_AUDIT_PATH),
    };
    let anchor = match &raw.anchor {
        Some(v) => {
            let anchor = path_value(v, "audit anchor", base, p);
            if anchor == path {
                p.at(
                    v.span(),
                    "audit anchor must not be the audit database itself".into(),
                );
            }
            anchor
        }
        None => {
            let mut s = path.clone().into_os_string();
            s.push(".anchor");
            PathBuf::from(s)
        }
    };
    let durability = match &raw.durability {
        None => Durability::default(),
        Some(v) => Durability::from_name(v.get_ref()).unwrap_or_else(|| {
            p.at(
                v.span(),
                format!(
                    "unknown durability \"{}\": expected \"process\" or \"power-loss\"",
                    v.get_ref()
                ),
            );
            Durability::default()
        }),
    };
    AuditConfig {
        path,
        anchor,
        durability,
    }
}

fn agent(
    raw: &RawAgent,
    humans: &BTreeMap<SpStr, RawHuman>,
    tasks: &BTreeMap<SpStr, RawTask>,
    servers: &BTreeMap<SpStr, RawServer>,
    p: &mut Problems,
) -> Agent {
    reference(
        &raw.on_behalf_of,
        "on_behalf_of",
        "human",
        "humans",
        humans,
        p,
    );
    reference(&raw.task, "task", "task", "tasks", tasks, p);
    if let Some(server) = &raw.server {
        reference(server, "server", "server", "servers", servers, p);
    }
    Agent {
        on_behalf_of: raw.on_behalf_of.get_ref().clone(),
        task: raw.task.get_ref().clone(),
        server: raw.server.as_ref().map(|s| s.get_ref().clone()),
        groups: groups(&raw.groups, p),
        token_sha256: crate::identity::agent_token_sha256(raw, &mut |s, m| p.at(s, m)),
    }
}

fn server(raw: &RawServer, p: &mut Problems) -> Server {
    let command = raw.command.as_ref().map(|c| {
        match c.get_ref().first() {
            None => p.at(
                c.span(),
                "command must not be empty: give the program and its arguments, or leave \
                 `command` out"
                    .into(),
            ),
            Some(program) if program.get_ref().is_empty() => {
                p.at(
                    program.span(),
                    "command: the program must not be empty".into(),
                );
            }
            Some(_) => {}
        }
        c.get_ref().iter().map(|a| a.get_ref().clone()).collect()
    });
    let tools = raw.tools.as_ref().map(|tools| {
        for t in tools {
            let name = t.get_ref();
            if name.is_empty()
                || name.chars().count() > MAX_TOOL_NAME_CHARS
                || name.chars().any(char::is_control)
            {
                p.at(
                    t.span(),
                    format!(
                        "invalid tool name \"{}\": 1 to {MAX_TOOL_NAME_CHARS} characters, no \
                         control characters",
                        name.escape_debug()
                    ),
                );
            }
        }
        unique(tools, "tools", p);
        tools.iter().map(|t| t.get_ref().clone()).collect()
    });
    let url = raw.url.as_ref().and_then(|u| {
        if raw.command.is_some() {
            p.at(
                u.span(),
                "a server has either `command` (Airlock starts it) or `url` (a remote \
                 Streamable HTTP server), not both"
                    .into(),
            );
        }
        match url::Url::parse(u.get_ref()) {
            Ok(parsed)
                if matches!(parsed.scheme(), "http" | "https") && parsed.host().is_some() =>
            {
                Some(u.get_ref().clone())
            }
            _ => {
                p.at(
                    u.span(),
                    format!(
                        "url \"{}\" is not an http:// or https:// URL with a host",
                        u.get_ref().escape_debug()
                    ),
                );
                None
            }
        }
    });
    let timeout = raw.timeout_secs.as_ref().and_then(|t| {
        let secs = *t.get_ref();
        if secs == 0 || secs > MAX_CALL_TIMEOUT_SECS {
            p.at(
                t.span(),
                format!("timeout_secs must be 1 to {MAX_CALL_TIMEOUT_SECS} seconds"),
            );
            None
        } else {
            Some(Duration::from_secs(secs))
        }
    });
    let max_sessions = raw.max_sessions.as_ref().and_then(|m| {
        let n = *m.get_ref();
        if n == 0 || n > 1_000_000 {
            p.at(m.span(), "max_sessions must be 1 to 1000000".into());
            None
        } else {
            usize::try_from(n).ok()
        }
    });
    Server {
        command,
        description: raw.description.clone(),
        tools,
        sandbox: Default::default(),
        env: Vec::new(),
        url,
        timeout,
        max_sessions,
        credentials: Default::default(),
    }
}

/// Checks every key of a `[<section>.<name>]` map and builds its values.
fn named<R, T>(
    raw: &BTreeMap<SpStr, R>,
    kind: &str,
    p: &mut Problems,
    mut build: impl FnMut(&R, &mut Problems) -> T,
) -> BTreeMap<String, T> {
    raw.iter()
        .map(|(name, value)| {
            check_name(name, kind, p);
            (name.get_ref().clone(), build(value, p))
        })
        .collect()
}

fn groups(raw: &[SpStr], p: &mut Problems) -> Vec<String> {
    for g in raw {
        check_name(g, "group", p);
    }
    unique(raw, "groups", p);
    raw.iter().map(|g| g.get_ref().clone()).collect()
}

/// A value that must name an entry of `[<section>.*]`; the error points at the value.
fn reference<R>(
    value: &SpStr,
    key: &str,
    kind: &str,
    section: &str,
    targets: &BTreeMap<SpStr, R>,
    p: &mut Problems,
) {
    let name = value.get_ref().as_str();
    if !targets.contains_key(name) {
        p.at(
            value.span(),
            format!("{key}: unknown {kind} \"{name}\" (no [{section}.{name}] section)"),
        );
    }
}

/// Whether `name` is a valid id for a human, task, agent, server or group: 1 to 64 of
/// `A-Z a-z 0-9 _ . -`, starting with a letter or digit. Ids become Cedar entity ids and
/// `server/tool` uids: no '/', quotes or spaces.
pub fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    let head_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    head_ok
        && name.len() <= 64
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn check_name(name: &SpStr, kind: &str, p: &mut Problems) {
    if !is_valid_name(name.get_ref()) {
        p.at(
            name.span(),
            format!(
                "invalid {kind} name \"{}\": use 1 to 64 of A-Z a-z 0-9 _ . - starting with a \
                 letter or digit",
                name.get_ref().escape_debug()
            ),
        );
    }
}

fn unique(values: &[SpStr], what: &str, p: &mut Problems) {
    let mut seen = BTreeSet::new();
    for v in values {
        if !seen.insert(v.get_ref().as_str()) {
            p.at(
                v.span(),
                format!("{what}: \"{}\" is listed twice", v.get_ref()),
            );
        }
    }
}

/// A path value, joined onto the config file's directory when relative.
fn path_value(value: &SpStr, what: &str, base: &Path, p: &mut Problems) -> PathBuf {
    if value.get_ref().is_empty() {
        p.at(value.span(), format!("{what}: a path must not be empty"));
    }
    base.join(value.get_ref())
}

#[cfg(test)]
mod tests {
    use super::is_valid_name;

    #[test]
    fn names_follow_the_documented_pattern() {
        for ok in ["a", "A9", "support-bot", "x_y.z", "0", &"a".repeat(64)] {
            assert!(is_valid_name(ok), "{ok:?} should be valid");
        }
        for bad in [
            "",
            "-a",
            ".a",
            "_a",
            "a b",
            "a/b",
            "a\"b",
            "é",
            &"a".repeat(65),
        ] {
            assert!(!is_valid_name(bad), "{bad:?} should be invalid");
        }
    }
}
