//! `[secrets]` and `[servers.<id>.credentials]`: the upstream credentials Airlock holds for
//! the agents, which never see them. Raw types, model and validation live together here so
//! the section is one unit; `validate.rs` only calls in.
//!
//! Every credential value is a [`Template`]: literal text with `${secret:NAME}` (a value from
//! the `[secrets] file`) and `${env:NAME}` (Airlock's environment when it starts)
//! placeholders. The model keeps templates unresolved, so neither it nor its `Debug` ever
//! holds a secret read from elsewhere; `airlock-broker` resolves them when a gateway starts.
//! Validation still reads the secrets file once, to check that it is private, that every
//! name used exists and that every value can be used (long enough to be redacted, valid in a
//! header); the values are dropped afterwards.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_spanned::Spanned;

use crate::error::{ConfigError, Source};
use crate::raw::SpStr;

/// Shortest secret value accepted: a shorter one would be redacted out of innocent text (and
/// stays recognisable by guessing when it is not).
pub const MIN_SECRET_BYTES: usize = 8;
/// Shortest HS256 subject-token signing key (RFC 7518 §3.2: at least the hash's size).
pub const MIN_SIGNING_KEY_BYTES: usize = 32;
/// Largest secrets file read.
const MAX_SECRETS_FILE_BYTES: u64 = 1024 * 1024;
/// Headers a gateway sets itself (framing, routing, the MCP session): a credential may not.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "accept",
    "mcp-session-id",
    "mcp-protocol-version",
    "last-event-id",
];
/// Variables the sandbox or the process start sets itself: a credential may not replace them.
const RESERVED_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "TMPDIR",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "NODE_USE_ENV_PROXY",
];

// === model ===

/// `[secrets]`: where `${secret:NAME}` values come from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SecretsConfig {
    /// The secrets file (TOML `name = "value"` pairs, mode 0600 or stricter), joined onto the
    /// config's directory; `None`: no `${secret:…}` may be used.
    pub file: Option<PathBuf>,
}

/// `[servers.<id>.credentials]`: what Airlock adds to the requests it makes for the server.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Credentials {
    /// HTTP headers on every request to a remote server, in file order (by name).
    pub headers: Vec<(String, Template)>,
    /// Environment variables of a server Airlock starts.
    pub env: Vec<(String, Template)>,
    /// An RFC 8693 token exchange per human; its access token is the `Authorization` header.
    pub oauth: Option<OAuthConfig>,
}

impl Credentials {
    /// Whether the server has no credentials at all.
    pub fn is_empty(&self) -> bool {
        self.headers.is_empty() && self.env.is_empty() && self.oauth.is_none()
    }
}

/// `[servers.<id>.credentials.oauth]`: OAuth 2.0 Token Exchange (RFC 8693).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthConfig {
    /// The token endpoint (`https://`, or `http://` on a loopback host).
    pub token_url: String,
    /// Airlock's client id at the token service (HTTP Basic user).
    pub client_id: String,
    /// Airlock's client secret (HTTP Basic password).
    pub client_secret: Template,
    /// The HS256 key Airlock signs the subject token with, shared with the token service.
    pub subject_signing_key: Template,
    /// The `audience` parameter, if any.
    pub audience: Option<String>,
    /// The `scope` parameter, if any.
    pub scope: Option<String>,
}

/// A credential value as written: literal text and placeholders, never resolved here.
/// Its `Debug` shows placeholders and only the length of literal text (which may itself be
/// a credential written in the file).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Template {
    parts: Vec<Part>,
}

/// One piece of a [`Template`].
#[derive(Clone, PartialEq, Eq)]
pub enum Part {
    /// Text used as written.
    Literal(String),
    /// `${secret:NAME}`: the value of `NAME` in the secrets file.
    Secret(String),
    /// `${env:NAME}`: Airlock's environment variable `NAME` when it starts.
    Env(String),
}

/// Why a template does not parse; the message quotes only the placeholder at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TemplateError {
    /// Byte offset in the template text.
    pub offset: usize,
    /// What is wrong.
    pub message: String,
}

impl Template {
    /// Parses `text`: `${secret:NAME}` and `${env:NAME}` are placeholders, `$${` is a literal
    /// `${`, everything else is literal.
    pub fn parse(text: &str) -> Result<Template, TemplateError> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(at) = rest.find("${") {
            let offset = text.len() - rest.len() + at;
            if rest[..at].ends_with('$') {
                literal.push_str(&rest[..at - 1]);
                literal.push_str("${");
                rest = &rest[at + 2..];
                continue;
            }
            literal.push_str(&rest[..at]);
            let body_and_more = &rest[at + 2..];
            let Some(close) = body_and_more.find('}') else {
                return Err(TemplateError {
                    offset,
                    message: "a `${` placeholder is not closed with `}` (write `$${` for a \
                              literal `${`)"
                        .into(),
                });
            };
            let body = &body_and_more[..close];
            let part = placeholder(body).map_err(|message| TemplateError { offset, message })?;
            if !literal.is_empty() {
                parts.push(Part::Literal(std::mem::take(&mut literal)));
            }
            parts.push(part);
            rest = &body_and_more[close + 1..];
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        Ok(Template { parts })
    }

    /// The pieces, in order.
    pub fn parts(&self) -> &[Part] {
        &self.parts
    }

    /// Whether the value is written out in the file, with no placeholder at all.
    pub fn is_literal(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Literal(_)))
    }

    /// The `${secret:…}` names used.
    pub fn secret_names(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Secret(n) => Some(n.as_str()),
            _ => None,
        })
    }
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Template").field(&self.parts).finish()
    }
}

impl fmt::Debug for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Part::Literal(text) => write!(f, "<{} literal bytes>", text.len()),
            Part::Secret(name) => write!(f, "${{secret:{name}}}"),
            Part::Env(name) => write!(f, "${{env:{name}}}"),
        }
    }
}

/// The inside of `${…}`.
fn placeholder(body: &str) -> Result<Part, String> {
    let shown = format!("${{{}}}", body.escape_debug());
    let Some((kind, name)) = body.split_once(':') else {
        return Err(format!(
            "{shown} has no kind: write ${{secret:NAME}} or ${{env:NAME}}"
        ));
    };
    match kind {
        "secret" => {
            if crate::validate::is_valid_name(name) {
                Ok(Part::Secret(name.to_owned()))
            } else {
                Err(format!(
                    "{shown}: a secret name is 1 to 64 of A-Z a-z 0-9 _ . - starting with a \
                     letter or digit"
                ))
            }
        }
        "env" => {
            if !is_env_name(name) {
                Err(format!(
                    "{shown}: an environment variable name is letters, digits and _, not \
                     starting with a digit"
                ))
            } else if is_airlock_env(name) {
                Err(format!(
                    "{shown}: variables starting with {} are Airlock's own (a human's token) \
                     and never leave it",
                    crate::AIRLOCK_ENV_PREFIX
                ))
            } else {
                Ok(Part::Env(name.to_owned()))
            }
        }
        other => Err(format!(
            "unknown placeholder kind \"{}\" in {shown}: use ${{secret:NAME}} or ${{env:NAME}}",
            other.escape_debug()
        )),
    }
}

fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 128
}

fn is_airlock_env(name: &str) -> bool {
    name.to_ascii_uppercase()
        .starts_with(crate::AIRLOCK_ENV_PREFIX)
}

/// Whether `name` is an HTTP header name (an RFC 9110 token).
pub fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Whether `value` may be (part of) an HTTP header value: visible ASCII, space, tab and
/// bytes from 0x80 up; no CR, LF, NUL or other control characters.
pub fn is_header_value(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80)
}

// === the secrets file ===

/// The values of a secrets file. `Debug` shows the names only.
pub struct SecretValues {
    values: BTreeMap<String, String>,
}

impl fmt::Debug for SecretValues {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretValues")
            .field("names", &self.values.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl SecretValues {
    /// The value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// Every name in the file.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.values.keys().map(String::as_str)
    }
}

/// Reads a secrets file: TOML `name = "value"` pairs. Refuses a file that anyone but its
/// owner may read or write (mode & 0o077), a name that is not a valid name, and a value that
/// is not a string; errors never quote a value.
pub fn read_secrets(path: &Path) -> Result<SecretValues, ConfigError> {
    use std::os::unix::fs::PermissionsExt;

    let file_error = |message: String| ConfigError::File {
        path: path.to_path_buf(),
        message,
    };
    let mut file =
        std::fs::File::open(path).map_err(|e| file_error(format!("cannot read: {e}")))?;
    // The open file's own metadata: the checked file is the read one.
    let meta = file
        .metadata()
        .map_err(|e| file_error(format!("cannot read: {e}")))?;
    if !meta.is_file() {
        return Err(file_error("not a regular file".into()));
    }
    let mode = meta.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(file_error(format!(
            "the secrets file is open to group or others (mode {:04o}); make it private with \
             `chmod 600 {}`",
            mode & 0o7777,
            path.display()
        )));
    }
    let mut text = String::new();
    file.by_ref()
        .take(MAX_SECRETS_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| file_error(format!("cannot read: {e}")))?;
    if text.len() as u64 > MAX_SECRETS_FILE_BYTES {
        return Err(file_error(format!(
            "larger than {MAX_SECRETS_FILE_BYTES} bytes"
        )));
    }
    let source = Source::new(&text, path);
    let raw: BTreeMap<SpStr, Spanned<toml::Value>> = toml::from_str(&text)
        .map_err(|e| source.error(e.span().unwrap_or(0..0), e.message().trim_end()))?;
    let mut values = BTreeMap::new();
    for (name, value) in raw {
        if !crate::validate::is_valid_name(name.get_ref()) {
            return Err(source.error(
                name.span(),
                format!(
                    "invalid secret name \"{}\": use 1 to 64 of A-Z a-z 0-9 _ . - starting \
                     with a letter or digit",
                    name.get_ref().escape_debug()
                ),
            ));
        }
        let span = value.span();
        match value.into_inner() {
            toml::Value::String(s) => {
                values.insert(name.into_inner(), s);
            }
            other => {
                return Err(source.error(
                    span,
                    format!(
                        "secret \"{}\" must be a string, not {} {}",
                        name.get_ref(),
                        article(other.type_str()),
                        other.type_str()
                    ),
                ))
            }
        }
    }
    Ok(SecretValues { values })
}

fn article(word: &str) -> &'static str {
    if word.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

// === raw ===

/// `[secrets]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [secrets] table")]
pub(crate) struct RawSecrets {
    file: Option<SpStr>,
}

/// `[servers.<id>.credentials]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [servers.<id>.credentials] table")]
pub(crate) struct RawCredentials {
    #[serde(default)]
    headers: BTreeMap<SpStr, SpStr>,
    #[serde(default)]
    env: BTreeMap<SpStr, SpStr>,
    oauth: Option<Spanned<RawOAuth>>,
}

/// `[servers.<id>.credentials.oauth]` as written.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a [servers.<id>.credentials.oauth] table"
)]
struct RawOAuth {
    token_url: SpStr,
    client_id: SpStr,
    client_secret: SpStr,
    /// Required; optional here so its absence gets our own message.
    subject_signing_key: Option<SpStr>,
    audience: Option<SpStr>,
    scope: Option<SpStr>,
}

// === validation ===

/// Where complaints go: `(span, message)`, the earliest in the file wins.
pub(crate) type Report<'a> = dyn FnMut(std::ops::Range<usize>, String) + 'a;

/// What templates are checked against: the secrets file as validation read it.
pub(crate) enum SecretsCheck {
    /// No `[secrets] file`: no `${secret:…}` may be used.
    None,
    /// The file could not be used; that is reported already, and names are not checked.
    Broken,
    /// The file's values, dropped with the check.
    Loaded(SecretValues),
}

/// Builds `[secrets]` and reads its file for the credential checks.
pub(crate) fn secrets(
    raw: Option<&RawSecrets>,
    base: &Path,
    p: &mut Report<'_>,
) -> (SecretsConfig, SecretsCheck) {
    let Some(file) = raw.and_then(|r| r.file.as_ref()) else {
        return (SecretsConfig::default(), SecretsCheck::None);
    };
    if file.get_ref().is_empty() {
        p(file.span(), "secrets file: a path must not be empty".into());
        return (SecretsConfig::default(), SecretsCheck::Broken);
    }
    let path = base.join(file.get_ref());
    let check = match read_secrets(&path) {
        Ok(values) => SecretsCheck::Loaded(values),
        Err(e) => {
            p(file.span(), format!("secrets file {e}"));
            SecretsCheck::Broken
        }
    };
    (SecretsConfig { file: Some(path) }, check)
}

/// Builds `[servers.<id>.credentials]`.
pub(crate) fn credentials(
    raw: Option<&RawCredentials>,
    secrets: &SecretsCheck,
    p: &mut Report<'_>,
) -> Credentials {
    let Some(raw) = raw else {
        return Credentials::default();
    };
    let oauth = raw.oauth.as_ref().and_then(|o| oauth(o, secrets, p));
    let mut seen = BTreeSet::new();
    let mut headers = Vec::new();
    for (name, value) in &raw.headers {
        let n = name.get_ref();
        let lower = n.to_ascii_lowercase();
        if !is_header_name(n) {
            p(
                name.span(),
                format!(
                    "credentials header \"{}\" is not an HTTP header name",
                    n.escape_debug()
                ),
            );
        } else if RESERVED_HEADERS.contains(&lower.as_str()) {
            p(
                name.span(),
                format!("credentials header \"{n}\" is set by the gateway itself"),
            );
        } else if lower == "authorization" && raw.oauth.is_some() {
            p(
                name.span(),
                "credentials header \"Authorization\" comes from the OAuth token exchange; \
                 leave it out or drop [credentials.oauth]"
                    .into(),
            );
        } else if !seen.insert(lower) {
            p(
                name.span(),
                format!("credentials header \"{n}\" is given twice (names ignore case)"),
            );
        }
        if let Some(t) = template(value, secrets, Use::Header, p) {
            headers.push((n.clone(), t));
        }
    }
    let mut env = Vec::new();
    for (name, value) in &raw.env {
        let n = name.get_ref();
        if !is_env_name(n) {
            p(
                name.span(),
                format!(
                    "credentials env \"{}\" is not an environment variable name (letters, \
                     digits and _, not starting with a digit)",
                    n.escape_debug()
                ),
            );
        } else if is_airlock_env(n) {
            p(
                name.span(),
                format!(
                    "credentials env \"{n}\": variables starting with {} are Airlock's own",
                    crate::AIRLOCK_ENV_PREFIX
                ),
            );
        } else if RESERVED_ENV.contains(&n.to_ascii_uppercase().as_str()) {
            p(
                name.span(),
                format!("credentials env \"{n}\" is set by Airlock when it starts the server"),
            );
        }
        if let Some(t) = template(value, secrets, Use::Env, p) {
            env.push((n.clone(), t));
        }
    }
    Credentials {
        headers,
        env,
        oauth,
    }
}

fn oauth(
    raw: &Spanned<RawOAuth>,
    secrets: &SecretsCheck,
    p: &mut Report<'_>,
) -> Option<OAuthConfig> {
    let section = raw.span();
    let raw = raw.get_ref();
    let token_url = crate::serve::http_url(&raw.token_url, "token_url", true, p);
    if let Some(url) = token_url.as_deref().and_then(|u| url::Url::parse(u).ok()) {
        let loopback = match url.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            Some(url::Host::Domain(d)) => d == "localhost",
            None => false,
        };
        if url.scheme() != "https" && !loopback {
            p(
                raw.token_url.span(),
                "token_url must use https:// (the client secret is sent to it); plain http:// \
                 only to a token service on this host"
                    .into(),
            );
        }
    }
    let client_id = raw.client_id.get_ref();
    if client_id.is_empty() || client_id.chars().any(char::is_control) {
        p(
            raw.client_id.span(),
            "client_id must be non-empty text without control characters".into(),
        );
    }
    let client_secret = template(&raw.client_secret, secrets, Use::Secret, p);
    let Some(key) = &raw.subject_signing_key else {
        p(
            section,
            "[credentials.oauth] needs `subject_signing_key`: the HS256 key (shared with the \
             token service) Airlock signs the subject token with, e.g. \
             \"${secret:forum_subject_key}\""
                .into(),
        );
        return None;
    };
    let subject_signing_key = template(key, secrets, Use::SigningKey, p);
    let text = |v: &Option<SpStr>, what: &str, p: &mut Report<'_>| {
        v.as_ref().map(|v| {
            let s = v.get_ref();
            if s.trim().is_empty() || s.chars().any(char::is_control) {
                p(
                    v.span(),
                    format!("{what} must be non-empty text without control characters"),
                );
            }
            s.clone()
        })
    };
    let audience = text(&raw.audience, "audience", p);
    let scope = text(&raw.scope, "scope", p);
    Some(OAuthConfig {
        token_url: token_url?,
        client_id: client_id.clone(),
        client_secret: client_secret?,
        subject_signing_key: subject_signing_key?,
        audience,
        scope,
    })
}

/// Where a template's value goes: what it must be.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Use {
    Header,
    Env,
    Secret,
    SigningKey,
}

/// Parses a template and checks what validation can: literal text, and the secrets it names
/// (present in the file, long enough, usable where they go).
fn template(
    value: &SpStr,
    secrets: &SecretsCheck,
    use_: Use,
    p: &mut Report<'_>,
) -> Option<Template> {
    let span = value.span();
    let t = match Template::parse(value.get_ref()) {
        Ok(t) => t,
        Err(e) => {
            p(span, e.message);
            return None;
        }
    };
    let usable = |v: &str| match use_ {
        Use::Header => is_header_value(v),
        Use::Env | Use::Secret | Use::SigningKey => !v.contains('\0'),
    };
    for part in t.parts() {
        match part {
            Part::Literal(text) if !usable(text) => {
                p(
                    span.clone(),
                    match use_ {
                        Use::Header => "a header value may not contain control characters \
                                        (CR, LF, NUL, …)"
                            .into(),
                        _ => "the value may not contain a NUL character".into(),
                    },
                );
            }
            Part::Literal(_) | Part::Env(_) => {}
            Part::Secret(name) => match secrets {
                SecretsCheck::None => p(
                    span.clone(),
                    format!("${{secret:{name}}} needs a secrets file: add [secrets] file = \"…\""),
                ),
                SecretsCheck::Broken => {}
                SecretsCheck::Loaded(values) => match values.get(name) {
                    None => p(
                        span.clone(),
                        format!("${{secret:{name}}}: the secrets file has no \"{name}\""),
                    ),
                    Some(v) if v.len() < MIN_SECRET_BYTES => p(
                        span.clone(),
                        format!(
                            "${{secret:{name}}}: the value is shorter than {MIN_SECRET_BYTES} \
                             bytes, too short to be redacted reliably from what agents receive"
                        ),
                    ),
                    Some(v) if use_ == Use::SigningKey && v.len() < MIN_SIGNING_KEY_BYTES => p(
                        span.clone(),
                        format!(
                            "${{secret:{name}}}: an HS256 signing key needs at least \
                             {MIN_SIGNING_KEY_BYTES} bytes"
                        ),
                    ),
                    Some(v) if !usable(v) => p(
                        span.clone(),
                        format!(
                            "${{secret:{name}}}: the value has characters not allowed here \
                             (control characters in a header, NUL anywhere)"
                        ),
                    ),
                    Some(_) => {}
                },
            },
        }
    }
    Some(t)
}

/// What `airlock check` warns about: credentials written out in the config file.
pub(crate) fn warnings(config: &crate::Config) -> Vec<String> {
    let mut out = Vec::new();
    let advice = "keep credentials in the [secrets] file and write ${secret:NAME}";
    for (server, s) in &config.servers {
        let c = &s.credentials;
        for (name, t) in &c.headers {
            if t.is_literal() {
                out.push(format!(
                    "server \"{server}\": credentials header \"{name}\" is written in the \
                     config file; {advice}"
                ));
            }
        }
        for (name, t) in &c.env {
            if t.is_literal() {
                out.push(format!(
                    "server \"{server}\": credentials env \"{name}\" is written in the config \
                     file; {advice}"
                ));
            }
        }
        if let Some(o) = &c.oauth {
            for (what, t) in [
                ("client_secret", &o.client_secret),
                ("subject_signing_key", &o.subject_signing_key),
            ] {
                if t.is_literal() {
                    out.push(format!(
                        "server \"{server}\": oauth {what} is written in the config file; \
                         {advice}"
                    ));
                }
            }
        }
    }
    out
}

#[cfg(test)]
#[path = "credentials_tests.rs"]
mod tests;
