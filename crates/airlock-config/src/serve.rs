//! `[serve]` and `[serve.webhook]`: the control plane `airlock serve` runs (HTTP API, web page,
//! webhook). Raw types, model and validation live together here so the section is one unit;
//! `validate.rs` only calls in.
//!
//! The webhook's HMAC secret never appears in the file: `secret_env` names the environment
//! variable that holds it, and a `secret` key is refused with that advice.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use serde_spanned::Spanned;

use crate::raw::SpStr;

/// Where `airlock serve` listens unless told otherwise.
pub const DEFAULT_SERVE_LISTEN: &str = "127.0.0.1:7700";
/// Default lifetime of a web login, in minutes (8 hours).
pub const DEFAULT_SESSION_MINUTES: u64 = 480;
/// Longest allowed web login: one week.
pub const MAX_SESSION_MINUTES: u64 = 7 * 24 * 60;
/// Default time one webhook POST may take.
pub const DEFAULT_WEBHOOK_TIMEOUT_SECS: u64 = 10;

// === model ===

/// `[serve]`: the control plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeConfig {
    /// Address and port to listen on.
    pub listen: SocketAddr,
    /// The base URL people reach the page at (no trailing `/`), used in webhook links;
    /// `None`: `http://<listen>`.
    pub public_url: Option<String>,
    /// Whether a non-loopback `listen` is allowed.
    pub allow_remote: bool,
    /// How long a web login lasts.
    pub session_ttl: Duration,
    /// `[serve.webhook]`, if configured.
    pub webhook: Option<WebhookConfig>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            public_url: None,
            allow_remote: false,
            session_ttl: Duration::from_secs(DEFAULT_SESSION_MINUTES * 60),
            webhook: None,
        }
    }
}

impl ServeConfig {
    /// The base URL for links: `public_url`, else `http://<listen>`.
    pub fn base_url(&self, listen: SocketAddr) -> String {
        self.public_url
            .clone()
            .unwrap_or_else(|| format!("http://{listen}"))
    }
}

/// `[serve.webhook]`: where each new approval request, decision, kill, resume and breaker
/// trip is POSTed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    /// The receiver (`http://` or `https://`).
    pub url: String,
    /// The environment variable holding the HMAC-SHA256 secret.
    pub secret_env: String,
    /// How long one POST may take.
    pub timeout: Duration,
}

/// Refuses a non-loopback address unless the config allows it explicitly. The message is a
/// sentence for the operator.
pub fn check_listen(listen: SocketAddr, allow_remote: bool) -> Result<(), String> {
    if listen.ip().is_loopback() || allow_remote {
        Ok(())
    } else {
        Err(format!(
            "listen address {listen} is not a loopback address: the control plane decides \
             approvals and kills, so it serves only this host unless [serve] says \
             allow_remote = true (then put TLS in front of it and set public_url)"
        ))
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7700))
}

// === raw ===

/// `[serve]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [serve] table")]
pub(crate) struct RawServe {
    listen: Option<SpStr>,
    public_url: Option<SpStr>,
    allow_remote: Option<bool>,
    session_minutes: Option<Spanned<u64>>,
    webhook: Option<RawWebhook>,
}

/// `[serve.webhook]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [serve.webhook] table")]
struct RawWebhook {
    url: SpStr,
    /// Required; optional here so its absence (or a `secret`) gets our own message.
    secret_env: Option<SpStr>,
    /// Never accepted: only here to explain why.
    secret: Option<SpStr>,
    timeout_secs: Option<Spanned<u64>>,
}

// === validation ===

/// Where complaints go: `(span, message)`, the earliest in the file wins.
pub(crate) type Report<'a> = dyn FnMut(std::ops::Range<usize>, String) + 'a;

/// Builds `[serve]`. `section` is the span reported for a missing key.
pub(crate) fn serve(raw: &RawServe, p: &mut Report<'_>) -> ServeConfig {
    let allow_remote = raw.allow_remote.unwrap_or(false);
    let listen = match &raw.listen {
        None => default_listen(),
        Some(v) => match v.get_ref().parse::<SocketAddr>() {
            Ok(addr) => {
                if let Err(m) = check_listen(addr, allow_remote) {
                    p(v.span(), m);
                }
                addr
            }
            Err(_) => {
                p(
                    v.span(),
                    format!(
                        "listen = \"{}\" is not ADDRESS:PORT (for example \"{DEFAULT_SERVE_LISTEN}\")",
                        v.get_ref().escape_debug()
                    ),
                );
                default_listen()
            }
        },
    };
    let public_url = raw
        .public_url
        .as_ref()
        .and_then(|v| http_url(v, "public_url", false, p));
    let minutes = match &raw.session_minutes {
        None => DEFAULT_SESSION_MINUTES,
        Some(v) if (1..=MAX_SESSION_MINUTES).contains(v.get_ref()) => *v.get_ref(),
        Some(v) => {
            p(
                v.span(),
                format!(
                    "session_minutes = {} is out of range: allowed 1 ..= {MAX_SESSION_MINUTES}",
                    v.get_ref()
                ),
            );
            DEFAULT_SESSION_MINUTES
        }
    };
    ServeConfig {
        listen,
        public_url,
        allow_remote,
        session_ttl: Duration::from_secs(minutes * 60),
        webhook: raw.webhook.as_ref().and_then(|w| webhook(w, p)),
    }
}

fn webhook(raw: &RawWebhook, p: &mut Report<'_>) -> Option<WebhookConfig> {
    if let Some(s) = &raw.secret {
        p(
            s.span(),
            "[serve.webhook] secret: never put the secret in the file; name the environment \
             variable that holds it in `secret_env`"
                .into(),
        );
        return None;
    }
    let url = http_url(&raw.url, "webhook url", true, p);
    let Some(env) = &raw.secret_env else {
        p(
            raw.url.span(),
            "[serve.webhook] needs `secret_env`: the environment variable holding the HMAC \
             secret the POSTs are signed with"
                .into(),
        );
        return None;
    };
    let name = env.get_ref();
    let mut chars = name.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 128;
    if !ok {
        p(
            env.span(),
            format!(
                "secret_env = \"{}\" is not an environment variable name (letters, digits and _, \
                 not starting with a digit)",
                name.escape_debug()
            ),
        );
    }
    let secs = match &raw.timeout_secs {
        None => DEFAULT_WEBHOOK_TIMEOUT_SECS,
        Some(v) if (1..=300).contains(v.get_ref()) => *v.get_ref(),
        Some(v) => {
            p(
                v.span(),
                format!(
                    "timeout_secs = {} is out of range: allowed 1 ..= 300",
                    v.get_ref()
                ),
            );
            DEFAULT_WEBHOOK_TIMEOUT_SECS
        }
    };
    Some(WebhookConfig {
        url: url?,
        secret_env: name.clone(),
        timeout: Duration::from_secs(secs),
    })
}

/// An absolute `http(s)://` URL; `public_url` loses its trailing `/` and may not carry a query.
pub(crate) fn http_url(
    v: &SpStr,
    what: &str,
    query_ok: bool,
    p: &mut Report<'_>,
) -> Option<String> {
    let text = v.get_ref();
    let parsed = match url::Url::parse(text) {
        Ok(u) => u,
        Err(e) => {
            p(
                v.span(),
                format!("{what} \"{}\" is not a URL: {e}", text.escape_debug()),
            );
            return None;
        }
    };
    let problem = if !matches!(parsed.scheme(), "http" | "https") {
        Some("must start with http:// or https://")
    } else if parsed.host_str().is_none_or(str::is_empty) {
        Some("has no host")
    } else if !parsed.username().is_empty() || parsed.password().is_some() {
        Some("must not carry credentials")
    } else if parsed.fragment().is_some() || (!query_ok && parsed.query().is_some()) {
        Some("must not have a query or fragment")
    } else {
        None
    };
    if let Some(problem) = problem {
        p(
            v.span(),
            format!("{what} \"{}\" {problem}", text.escape_debug()),
        );
        return None;
    }
    Some(if query_ok {
        parsed.to_string()
    } else {
        parsed.as_str().trim_end_matches('/').to_owned()
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::path::Path;

    use super::*;

    fn parse(serve: &str) -> Result<crate::Config, String> {
        let text = format!("[policy]\nfiles = [\"p\"]\n{serve}");
        crate::parse(&text, Path::new("a.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_loopback_without_webhook() {
        let c = parse("").unwrap();
        assert_eq!(c.serve, ServeConfig::default());
        assert_eq!(c.serve.listen.to_string(), DEFAULT_SERVE_LISTEN);
        assert_eq!(
            c.serve.base_url(c.serve.listen),
            "http://127.0.0.1:7700".to_owned()
        );
    }

    #[test]
    fn a_full_section_is_read() {
        let c = parse(
            "[serve]\nlisten = \"127.0.0.1:9000\"\npublic_url = \"https://airlock.example/\"\n\
             session_minutes = 30\n[serve.webhook]\nurl = \"https://hooks.example/a?x=1\"\n\
             secret_env = \"HOOK_SECRET\"\ntimeout_secs = 3\n",
        )
        .unwrap();
        assert_eq!(c.serve.listen.port(), 9000);
        assert_eq!(
            c.serve.public_url.as_deref(),
            Some("https://airlock.example")
        );
        assert_eq!(c.serve.session_ttl, Duration::from_secs(1800));
        let w = c.serve.webhook.unwrap();
        assert_eq!(w.url, "https://hooks.example/a?x=1");
        assert_eq!(w.secret_env, "HOOK_SECRET");
        assert_eq!(w.timeout, Duration::from_secs(3));
    }

    #[test]
    fn remote_listen_needs_allow_remote() {
        let e = parse("[serve]\nlisten = \"0.0.0.0:7700\"\n").unwrap_err();
        assert!(
            e.starts_with("a.toml:4:10: listen address 0.0.0.0:7700 is not a loopback"),
            "{e}"
        );
        let c = parse("[serve]\nlisten = \"0.0.0.0:7700\"\nallow_remote = true\n").unwrap();
        assert!(c.serve.allow_remote);
        assert!(check_listen("[::1]:1".parse().unwrap(), false).is_ok());
        assert!(check_listen("10.0.0.1:1".parse().unwrap(), false).is_err());
    }

    #[test]
    fn bad_values_point_at_themselves() {
        let cases = [
            (
                "[serve]\nlisten = \"localhost\"\n",
                "4:10",
                "is not ADDRESS:PORT",
            ),
            (
                "[serve]\npublic_url = \"ftp://x\"\n",
                "4:14",
                "must start with http",
            ),
            (
                "[serve]\npublic_url = \"https://x/?a=1\"\n",
                "4:14",
                "query",
            ),
            ("[serve]\nsession_minutes = 0\n", "4:19", "out of range"),
            ("[serve]\nport = 1\n", "4:1", "unknown field `port`"),
            (
                "[serve.webhook]\nurl = \"https://h\"\nsecret = \"s3cr3t\"\n",
                "5:10",
                "never put the secret in the file",
            ),
            (
                "[serve.webhook]\nurl = \"https://h\"\n",
                "4:7",
                "needs `secret_env`",
            ),
            (
                "[serve.webhook]\nurl = \"https://h\"\nsecret_env = \"1X\"\n",
                "5:14",
                "not an environment variable name",
            ),
            (
                "[serve.webhook]\nurl = \"https://u:p@h\"\nsecret_env = \"X\"\n",
                "4:7",
                "credentials",
            ),
        ];
        for (text, pos, needle) in cases {
            let e = parse(text).unwrap_err();
            assert!(
                e.starts_with(&format!("a.toml:{pos}: ")) && e.contains(needle),
                "{text:?} gave {e}"
            );
            assert!(!e.contains("s3cr3t"), "the secret is never echoed: {e}");
        }
    }
}
