//! [`TokenBroker`]: OAuth 2.0 Token Exchange (RFC 8693) for the upstream servers that want an
//! access token per human.
//!
//! For (server, human, agent) Airlock POSTs to the server's `token_url`
//! (`application/x-www-form-urlencoded`, client authentication by HTTP Basic with the
//! url-encoded `client_id` and `client_secret`, RFC 6749 §2.3.1):
//! `grant_type=urn:ietf:params:oauth:grant-type:token-exchange`, a `subject_token` Airlock
//! signs for the human with the agent as actor ([`crate::jwt`]), its `subject_token_type`,
//! `requested_token_type=…:access_token`, and `audience`/`scope` when configured.
//!
//! Tokens are cached per (server, human, agent), not per (server, human): the subject token
//! names the agent as actor, so a token obtained for one agent is not handed to another
//! acting for the same human. Each cached token is refreshed when less than
//! [`TokenSettings::refresh_margin`] of its life is left: with its refresh token if it came
//! with one, else (or if the refresh fails) by a new exchange. A token whose answer gave no
//! `expires_in` is kept for [`TokenSettings::default_lifetime`]. One exchange runs at a time
//! per cache entry; callers for the same entry wait for it.
//!
//! Every access and refresh token obtained is added to the [`Redactor`] before it is used.
//! [`TokenBroker::revoke_human`] and [`TokenBroker::revoke_agent`] drop cached tokens, so the
//! next call exchanges again (and is judged again by the token service); a call already
//! exchanging finishes with its token. Errors never carry a token: what the token service
//! says is redacted and cut short.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use serde_json::Value;
use url::form_urlencoded;

use crate::jwt::{self, Subject, SUBJECT_TOKEN_TYPE};
use crate::{BrokerError, OAuthClient, Redactor, Secret};

/// The token exchange grant type.
pub const GRANT_TYPE_TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// The token type asked for.
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// Limits and lifetimes of the token exchange.
#[derive(Debug, Clone)]
pub struct TokenSettings {
    /// How long one token request may take.
    pub timeout: Duration,
    /// A token with less life left than this is refreshed before use.
    pub refresh_margin: Duration,
    /// How long a subject token is valid (at most [`jwt::MAX_SUBJECT_TTL`]).
    pub subject_ttl: Duration,
    /// How long a token without `expires_in` is used.
    pub default_lifetime: Duration,
    /// The largest token response read.
    pub max_response_bytes: usize,
}

impl Default for TokenSettings {
    fn default() -> Self {
        TokenSettings {
            timeout: Duration::from_secs(10),
            refresh_margin: Duration::from_secs(30),
            subject_ttl: Duration::from_secs(120),
            default_lifetime: Duration::from_secs(60),
            max_response_bytes: 64 * 1024,
        }
    }
}

/// Access tokens per (server, human, agent), obtained by token exchange and cached.
pub struct TokenBroker {
    http: reqwest::Client,
    clients: BTreeMap<String, OAuthClient>,
    redactor: Arc<Redactor>,
    cache: Mutex<HashMap<Key, Slot>>,
    settings: TokenSettings,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    server: String,
    human: String,
    agent: String,
}

/// One cache entry; its lock is held while its token is being obtained.
type Slot = Arc<tokio::sync::Mutex<Option<Cached>>>;

struct Cached {
    access: Secret,
    refresh: Option<Secret>,
    expires_at: Instant,
}

/// A usable answer of the token endpoint.
struct Issued {
    access: Secret,
    refresh: Option<Secret>,
    lifetime: Duration,
}

impl std::fmt::Debug for TokenBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenBroker")
            .field("servers", &self.clients.keys().collect::<Vec<_>>())
            .field("cached", &self.cached())
            .finish()
    }
}

/// Makes ring the process's TLS crypto provider, once (reqwest is built without one, see
/// the workspace manifest). Harmless when a provider is installed already.
pub fn install_crypto_provider() {
    // An error means one is installed already: it is used.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

// === impl TokenBroker ===

impl TokenBroker {
    /// A broker for the servers in `clients`; every token it obtains goes to `redactor`.
    pub fn new(
        clients: BTreeMap<String, OAuthClient>,
        redactor: Arc<Redactor>,
        settings: TokenSettings,
    ) -> Result<TokenBroker, BrokerError> {
        install_crypto_provider();
        // Known already when they came from a config; a token service may echo them.
        for (server, c) in &clients {
            redactor.add(&format!("oauth-client:{server}"), &c.client_secret);
            redactor.add(&format!("oauth-key:{server}"), &c.signing_key);
        }
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            // A token endpoint does not redirect; following one would resend the credentials.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| BrokerError::Client(chain(&e)))?;
        Ok(TokenBroker {
            http,
            clients,
            redactor,
            cache: Mutex::new(HashMap::new()),
            settings,
        })
    }

    /// Whether `server` uses the token exchange.
    pub fn has(&self, server: &str) -> bool {
        self.clients.contains_key(server)
    }

    /// The access token for `agent` acting for `human` at `server`: cached, refreshed, or
    /// newly exchanged.
    pub async fn access_token(
        &self,
        server: &str,
        human: &str,
        agent: &str,
    ) -> Result<Secret, BrokerError> {
        let Some(client) = self.clients.get(server) else {
            return Err(BrokerError::UnknownServer(server.to_owned()));
        };
        let key = Key {
            server: server.to_owned(),
            human: human.to_owned(),
            agent: agent.to_owned(),
        };
        let slot = self.lock_cache().entry(key).or_default().clone();
        let mut entry = slot.lock().await;
        let now = Instant::now();
        if let Some(c) = entry.as_ref() {
            if c.expires_at > now + self.settings.refresh_margin {
                return Ok(c.access.clone());
            }
        }
        let mut issued = None;
        if let Some(refresh) = entry.as_ref().and_then(|c| c.refresh.clone()) {
            match self.refresh(client, server, &refresh).await {
                Ok(mut i) => {
                    // A refresh answer may leave the refresh token out: the old one stays.
                    i.refresh = i.refresh.or(Some(refresh));
                    issued = Some(i);
                }
                Err(e) => {
                    tracing::warn!(error = %e, server, human, "token refresh failed; exchanging anew");
                }
            }
        }
        let issued = match issued {
            Some(i) => i,
            None => match self.exchange(client, server, human, agent).await {
                Ok(i) => i,
                // A token still valid serves until it is not.
                Err(e) => match entry.as_ref() {
                    Some(c) if c.expires_at > Instant::now() => {
                        tracing::warn!(error = %e, server, human, "token exchange failed; using the current token until it expires");
                        return Ok(c.access.clone());
                    }
                    _ => return Err(e),
                },
            },
        };
        // Redacted before anything can echo it.
        self.redactor
            .add(&format!("oauth:{server}"), &issued.access);
        if let Some(r) = &issued.refresh {
            self.redactor.add(&format!("oauth-refresh:{server}"), r);
        }
        let access = issued.access.clone();
        *entry = Some(Cached {
            access: issued.access,
            refresh: issued.refresh,
            expires_at: Instant::now() + issued.lifetime,
        });
        Ok(access)
    }

    /// Drops every cached token of `human`. Returns how many were dropped.
    pub fn revoke_human(&self, human: &str) -> usize {
        self.drop_where(|k| k.human == human)
    }

    /// Drops every cached token obtained for `agent`. Returns how many were dropped.
    pub fn revoke_agent(&self, agent: &str) -> usize {
        self.drop_where(|k| k.agent == agent)
    }

    /// How many tokens are cached.
    pub fn cached(&self) -> usize {
        self.lock_cache().len()
    }

    fn drop_where(&self, f: impl Fn(&Key) -> bool) -> usize {
        let mut cache = self.lock_cache();
        let before = cache.len();
        cache.retain(|k, _| !f(k));
        before - cache.len()
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Slot>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn exchange(
        &self,
        client: &OAuthClient,
        server: &str,
        human: &str,
        agent: &str,
    ) -> Result<Issued, BrokerError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let subject = jwt::mint(
            client.signing_key.expose().as_bytes(),
            &Subject {
                issuer: &client.client_id,
                human,
                agent,
                audience: &client.token_url,
                ttl: self.settings.subject_ttl,
            },
            now,
        )
        .map_err(|message| BrokerError::TokenRequest {
            server: server.to_owned(),
            url: client.token_url.clone(),
            message,
        })?;
        let subject = Secret::new(subject);
        let mut form = vec![
            ("grant_type", GRANT_TYPE_TOKEN_EXCHANGE),
            ("subject_token", subject.expose()),
            ("subject_token_type", SUBJECT_TOKEN_TYPE),
            ("requested_token_type", ACCESS_TOKEN_TYPE),
        ];
        if let Some(a) = &client.audience {
            form.push(("audience", a));
        }
        if let Some(s) = &client.scope {
            form.push(("scope", s));
        }
        self.request(client, server, &form, Some(&subject)).await
    }

    async fn refresh(
        &self,
        client: &OAuthClient,
        server: &str,
        refresh: &Secret,
    ) -> Result<Issued, BrokerError> {
        let form = [
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh.expose()),
        ];
        self.request(client, server, &form, None).await
    }

    /// One POST to the token endpoint. `subject` is scrubbed from what the service says.
    async fn request(
        &self,
        client: &OAuthClient,
        server: &str,
        form: &[(&str, &str)],
        subject: Option<&Secret>,
    ) -> Result<Issued, BrokerError> {
        let transport = |message: String| BrokerError::TokenRequest {
            server: server.to_owned(),
            url: client.token_url.clone(),
            message,
        };
        let body = Secret::new(
            form_urlencoded::Serializer::new(String::new())
                .extend_pairs(form)
                .finish(),
        );
        let response = self
            .http
            .post(&client.token_url)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(ACCEPT, "application/json")
            .header(AUTHORIZATION, basic_auth(client)?)
            .body(body.expose().to_owned())
            .send()
            .await
            .map_err(|e| transport(chain(&e)))?;
        let status = response.status();
        let bytes = read_limited(response, self.settings.max_response_bytes)
            .await
            .map_err(transport)?;
        if !status.is_success() {
            return Err(BrokerError::TokenRefused {
                server: server.to_owned(),
                url: client.token_url.clone(),
                status: status.as_u16(),
                error: self.refusal(&bytes, subject),
            });
        }
        self.issued(&bytes)
            .map_err(|message| BrokerError::TokenResponse {
                server: server.to_owned(),
                url: client.token_url.clone(),
                message,
            })
    }

    /// The OAuth error of a refusal: its `error` code and a redacted, short description.
    fn refusal(&self, body: &[u8], subject: Option<&Secret>) -> String {
        let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let code = v
            .get("error")
            .and_then(Value::as_str)
            .filter(|c| c.len() <= 64 && c.bytes().all(|b| (b' '..=b'~').contains(&b)))
            .unwrap_or("(no OAuth error code)");
        let Some(description) = v.get("error_description").and_then(Value::as_str) else {
            return code.to_owned();
        };
        let mut text = self.redactor.redact_str(description).into_owned();
        if let Some(s) = subject {
            text = text.replace(s.expose(), "[REDACTED:subject_token]");
        }
        let short: String = text.chars().filter(|c| !c.is_control()).take(200).collect();
        format!("{code}: {short}")
    }

    /// Reads a success answer. Messages name fields, never their values.
    fn issued(&self, body: &[u8]) -> Result<Issued, String> {
        let v: Value =
            serde_json::from_slice(body).map_err(|_| "the answer is not JSON".to_owned())?;
        let access = v
            .get("access_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or("no `access_token` string")?;
        let token_type = v
            .get("token_type")
            .and_then(Value::as_str)
            .ok_or("no `token_type` string")?;
        if !token_type.eq_ignore_ascii_case("bearer") {
            return Err(format!(
                "token_type \"{}\" is not Bearer",
                token_type
                    .chars()
                    .take(32)
                    .collect::<String>()
                    .escape_debug()
            ));
        }
        if !airlock_config::is_header_value(access) {
            return Err("the access token has characters a header may not carry".into());
        }
        let lifetime = match v.get("expires_in") {
            None | Some(Value::Null) => self.settings.default_lifetime,
            Some(Value::Number(n)) => n
                .as_u64()
                .map(Duration::from_secs)
                .ok_or("`expires_in` is not a whole number of seconds")?,
            Some(Value::String(s)) => s
                .parse()
                .map(Duration::from_secs)
                .map_err(|_| "`expires_in` is not a whole number of seconds")?,
            Some(_) => return Err("`expires_in` is not a whole number of seconds".into()),
        };
        let refresh = v
            .get("refresh_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .map(Secret::new);
        Ok(Issued {
            access: Secret::new(access),
            refresh,
            lifetime,
        })
    }
}

/// `Basic base64(urlencode(client_id):urlencode(client_secret))` (RFC 6749 §2.3.1), marked
/// sensitive so the HTTP stack never logs it.
fn basic_auth(client: &OAuthClient) -> Result<HeaderValue, BrokerError> {
    let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let pair = Secret::new(format!(
        "{}:{}",
        enc(&client.client_id),
        enc(client.client_secret.expose())
    ));
    let mut value = HeaderValue::from_str(&format!("Basic {}", STANDARD.encode(pair.expose())))
        .map_err(|_| BrokerError::Client("the client credentials make no header".into()))?;
    value.set_sensitive(true);
    Ok(value)
}

/// The body, refused past `max` bytes.
async fn read_limited(mut response: reqwest::Response, max: usize) -> Result<Vec<u8>, String> {
    if response.content_length().is_some_and(|n| n > max as u64) {
        return Err(format!("the answer is larger than {max} bytes"));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| chain(&e))? {
        if body.len() + chunk.len() > max {
            return Err(format!("the answer is larger than {max} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// An error and its causes, one line (reqwest's own message omits the causes).
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
#[path = "oauth_tests.rs"]
mod tests;
