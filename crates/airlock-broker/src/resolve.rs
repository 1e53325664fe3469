//! Templates → values: each `${secret:NAME}` from the secrets file, each `${env:NAME}` from
//! Airlock's environment, once, when a gateway starts.
//!
//! Every value a placeholder yields is also a secret the [`crate::Redactor`] looks for, named
//! after its placeholder (`forum_token`, `env:FORUM_KEY`). A value written out in the config
//! (no placeholder at all; `airlock check` warns about it) is redacted too, as
//! `literal:<server>/<key>`, and so is its last word (the token of `Bearer <token>`), when
//! each is at least [`MIN_SECRET_BYTES`] long: shorter literal text is taken for what it
//! most likely is, not a credential. A placeholder value shorter than that is refused: it
//! could not be redacted without redacting innocent text.

use std::collections::{BTreeMap, HashMap};

use airlock_config::{Config, OAuthConfig, Part, SecretValues, Template};

use crate::{BrokerError, Secret};

pub use airlock_config::{MIN_SECRET_BYTES, MIN_SIGNING_KEY_BYTES};

/// Where `${env:NAME}` values come from: Airlock's environment ([`ProcessEnv`]), or a map in
/// tests.
pub trait EnvSource {
    /// The variable's value, if set (and valid UTF-8).
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl EnvSource for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl EnvSource for BTreeMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

impl EnvSource for HashMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

/// One server's credentials, resolved: what goes into its requests or its environment.
#[derive(Debug, Clone, Default)]
pub struct ResolvedCredentials {
    /// Header name and whole value (`Bearer …`), in config order.
    pub headers: Vec<(String, Secret)>,
    /// Environment variable name and value, for a server Airlock starts.
    pub env: Vec<(String, Secret)>,
}

/// One server's token exchange settings, resolved.
#[derive(Debug, Clone)]
pub struct OAuthClient {
    /// The token endpoint.
    pub token_url: String,
    /// Airlock's client id.
    pub client_id: String,
    /// Airlock's client secret.
    pub client_secret: Secret,
    /// The HS256 key the subject token is signed with.
    pub signing_key: Secret,
    /// The `audience` parameter.
    pub audience: Option<String>,
    /// The `scope` parameter.
    pub scope: Option<String>,
}

/// A server's resolved credentials and token exchange.
#[derive(Debug, Clone, Default)]
pub(crate) struct ResolvedServer {
    pub(crate) credentials: ResolvedCredentials,
    pub(crate) oauth: Option<OAuthClient>,
}

/// Every server's credentials, and every secret value with its redaction name.
#[derive(Debug, Default)]
pub(crate) struct Resolved {
    pub(crate) servers: BTreeMap<String, ResolvedServer>,
    pub(crate) named: Vec<(String, Secret)>,
}

/// Resolves the credentials of every server in `config`. Reads the secrets file (checked
/// again: it may have changed since the config was loaded) only when a server uses it.
pub(crate) fn resolve(
    config: &Config,
    env: &dyn EnvSource,
    only: Option<&str>,
) -> Result<Resolved, BrokerError> {
    let servers = || {
        config
            .servers
            .iter()
            .filter(move |(name, _)| only.is_none_or(|o| o == name.as_str()))
    };
    let uses_file = servers().any(|(_, s)| {
        let c = &s.credentials;
        c.headers
            .iter()
            .chain(&c.env)
            .map(|(_, t)| t)
            .chain(
                c.oauth
                    .iter()
                    .flat_map(|o| [&o.client_secret, &o.subject_signing_key]),
            )
            .any(|t| t.secret_names().next().is_some())
    });
    let file = match (&config.secrets.file, uses_file) {
        (Some(path), true) => Some(airlock_config::read_secrets(path)?),
        _ => None,
    };
    let mut out = Resolved::default();
    for (server, s) in servers() {
        let mut r = Resolver {
            server,
            file: file.as_ref(),
            env,
            named: &mut out.named,
        };
        let c = &s.credentials;
        let mut resolved = ResolvedServer::default();
        for (name, t) in &c.headers {
            let what = format!("header {name}");
            let value = r.value(t, &what)?;
            if !airlock_config::is_header_value(value.expose()) {
                return Err(r.error(
                    &what,
                    "the value has characters a header may not carry (CR, LF, NUL, …)",
                ));
            }
            resolved.credentials.headers.push((name.clone(), value));
        }
        for (name, t) in &c.env {
            let what = format!("env {name}");
            let value = r.value(t, &what)?;
            if value.expose().contains('\0') {
                return Err(r.error(&what, "the value contains a NUL character"));
            }
            resolved.credentials.env.push((name.clone(), value));
        }
        if let Some(o) = &c.oauth {
            resolved.oauth = Some(r.oauth(o)?);
        }
        out.servers.insert(server.clone(), resolved);
    }
    Ok(out)
}

struct Resolver<'a> {
    server: &'a str,
    file: Option<&'a SecretValues>,
    env: &'a dyn EnvSource,
    named: &'a mut Vec<(String, Secret)>,
}

impl Resolver<'_> {
    fn error(&self, what: &str, message: impl Into<String>) -> BrokerError {
        BrokerError::Resolve {
            server: self.server.to_owned(),
            what: what.to_owned(),
            message: message.into(),
        }
    }

    fn oauth(&mut self, o: &OAuthConfig) -> Result<OAuthClient, BrokerError> {
        let client_secret = self.value(&o.client_secret, "oauth client_secret")?;
        let what = "oauth subject_signing_key";
        let signing_key = self.value(&o.subject_signing_key, what)?;
        if signing_key.len() < MIN_SIGNING_KEY_BYTES {
            return Err(self.error(
                what,
                format!("an HS256 key needs at least {MIN_SIGNING_KEY_BYTES} bytes"),
            ));
        }
        Ok(OAuthClient {
            token_url: o.token_url.clone(),
            client_id: o.client_id.clone(),
            client_secret,
            signing_key,
            audience: o.audience.clone(),
            scope: o.scope.clone(),
        })
    }

    /// The template's value; each placeholder's value is recorded for redaction.
    fn value(&mut self, t: &Template, what: &str) -> Result<Secret, BrokerError> {
        let mut value = String::new();
        for part in t.parts() {
            let (name, piece) = match part {
                Part::Literal(text) => {
                    value.push_str(text);
                    continue;
                }
                Part::Secret(name) => {
                    let Some(file) = self.file else {
                        return Err(
                            self.error(what, format!("${{secret:{name}}} needs a [secrets] file"))
                        );
                    };
                    let Some(v) = file.get(name) else {
                        return Err(self.error(
                            what,
                            format!("${{secret:{name}}}: the secrets file has no \"{name}\""),
                        ));
                    };
                    (name.clone(), v.to_owned())
                }
                Part::Env(name) => {
                    let Some(v) = self.env.var(name) else {
                        return Err(self.error(
                            what,
                            format!("${{env:{name}}} is not set in Airlock's environment"),
                        ));
                    };
                    (format!("env:{name}"), v)
                }
            };
            if piece.len() < MIN_SECRET_BYTES {
                return Err(self.error(
                    what,
                    format!(
                        "the value of {} is shorter than {MIN_SECRET_BYTES} bytes, too short to \
                         be redacted reliably from what agents receive",
                        placeholder(part)
                    ),
                ));
            }
            value.push_str(&piece);
            self.named.push((name, Secret::new(piece)));
        }
        if t.is_literal() {
            let name = format!("literal:{}/{}", self.server, what.replace(' ', "."));
            let last = value.rsplit(' ').next().unwrap_or_default();
            if last.len() >= MIN_SECRET_BYTES && last.len() < value.len() {
                self.named.push((name.clone(), Secret::new(last)));
            }
            if value.len() >= MIN_SECRET_BYTES {
                self.named.push((name, Secret::new(value.clone())));
            }
        }
        Ok(Secret::new(value))
    }
}

fn placeholder(part: &Part) -> String {
    match part {
        Part::Secret(n) => format!("${{secret:{n}}}"),
        Part::Env(n) => format!("${{env:{n}}}"),
        Part::Literal(_) => "the text".into(),
    }
}

#[cfg(test)]
#[path = "resolve_tests.rs"]
mod tests;
