//! Credential brokering: upstream credentials live in Airlock, never in an agent's hands.
//!
//! A gateway builds one [`Broker`] from the config when it starts. The broker resolves each
//! server's `[servers.<id>.credentials]` templates (`${secret:NAME}` from the secrets file,
//! `${env:NAME}` from Airlock's environment) into [`Secret`]s, and gives the gateway
//!
//! - [`Broker::headers_for`]: the headers of a request to a remote server, with the access
//!   token of an RFC 8693 token exchange per human where the server wants one
//!   ([`TokenBroker`], the `oauth` feature);
//! - [`Broker::env_for`]: the environment variables of a server Airlock starts;
//! - [`Broker::redactor`]: the [`Redactor`] that cuts every one of those values (and every
//!   access token as it is obtained) out of the frames agents receive and out of log and
//!   audit text.
//!
//! ```
//! use std::sync::Arc;
//! use airlock_broker::{Redactor, Secret};
//!
//! let redactor = Redactor::new(vec![("forum_token".into(), Secret::new("tok-0123456789"))]);
//! let frame = br#"{"jsonrpc":"2.0","id":1,"result":{"text":"key: tok-0123456789"}}"#;
//! let out = redactor.redact_frame(frame).unwrap();
//! assert_eq!(
//!     String::from_utf8(out).unwrap(),
//!     r#"{"jsonrpc":"2.0","id":1,"result":{"text":"key: [REDACTED:forum_token]"}}"#
//! );
//! assert!(redactor.redact_frame(br#"{"id":2,"result":{}}"#).is_none());
//! assert_eq!(format!("{:?}", Secret::new("tok-0123456789")), "Secret([REDACTED])");
//! ```

mod error;
mod json;
#[cfg(feature = "oauth")]
pub mod jwt;
#[cfg(feature = "oauth")]
mod oauth;
mod redact;
mod resolve;
mod secret;

use std::collections::BTreeMap;
use std::sync::Arc;

use airlock_config::Config;

pub use error::BrokerError;
#[cfg(feature = "oauth")]
pub use oauth::{
    install_crypto_provider, TokenBroker, TokenSettings, ACCESS_TOKEN_TYPE,
    GRANT_TYPE_TOKEN_EXCHANGE,
};
pub use redact::Redactor;
pub use resolve::{
    EnvSource, OAuthClient, ProcessEnv, ResolvedCredentials, MIN_SECRET_BYTES,
    MIN_SIGNING_KEY_BYTES,
};
pub use secret::Secret;

use resolve::ResolvedServer;

#[cfg(feature = "oauth")]
type Settings = TokenSettings;
/// Without the token exchange there is nothing to set.
#[cfg(not(feature = "oauth"))]
#[derive(Default)]
struct Settings;

/// Every server's credentials, resolved, with the redactor and the token exchange.
pub struct Broker {
    servers: BTreeMap<String, ResolvedServer>,
    redactor: Arc<Redactor>,
    #[cfg(feature = "oauth")]
    tokens: Option<TokenBroker>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("servers", &self.servers.keys().collect::<Vec<_>>())
            .field("redactor", &self.redactor)
            .finish()
    }
}

// === impl Broker ===

impl Broker {
    /// Resolves every server's credentials; `env` answers `${env:NAME}`. Fails on the first
    /// value that cannot be made (a missing variable, a secrets file that changed), naming
    /// the server, the value and the placeholder.
    pub fn from_config(config: &Config, env: &dyn EnvSource) -> Result<Broker, BrokerError> {
        Broker::build(config, env, None, Default::default())
    }

    /// [`Broker::from_config`] for one server only (`airlock run`): the other servers'
    /// secrets are not read at all. An unknown server gets a broker with no credentials.
    pub fn for_server(
        config: &Config,
        server: &str,
        env: &dyn EnvSource,
    ) -> Result<Broker, BrokerError> {
        Broker::build(config, env, Some(server), Default::default())
    }

    /// [`Broker::from_config`] with token exchange settings other than the defaults.
    #[cfg(feature = "oauth")]
    pub fn with_settings(
        config: &Config,
        env: &dyn EnvSource,
        settings: TokenSettings,
    ) -> Result<Broker, BrokerError> {
        Broker::build(config, env, None, settings)
    }

    fn build(
        config: &Config,
        env: &dyn EnvSource,
        only: Option<&str>,
        settings: Settings,
    ) -> Result<Broker, BrokerError> {
        #[cfg(not(feature = "oauth"))]
        let Settings = settings;
        let resolved = resolve::resolve(config, env, only)?;
        let redactor = Arc::new(Redactor::new(resolved.named));
        let oauth: BTreeMap<String, OAuthClient> = resolved
            .servers
            .iter()
            .filter_map(|(name, s)| Some((name.clone(), s.oauth.clone()?)))
            .collect();
        #[cfg(feature = "oauth")]
        let tokens = if oauth.is_empty() {
            None
        } else {
            Some(TokenBroker::new(oauth, redactor.clone(), settings)?)
        };
        // Without the feature, such a server's requests fail (`headers_for`); its env and
        // the redaction of its secrets still work.
        #[cfg(not(feature = "oauth"))]
        drop(oauth);
        Ok(Broker {
            servers: resolved.servers,
            redactor,
            #[cfg(feature = "oauth")]
            tokens,
        })
    }

    /// The redactor holding every resolved secret (and every access token obtained).
    pub fn redactor(&self) -> &Arc<Redactor> {
        &self.redactor
    }

    /// The resolved headers and environment of `server`.
    pub fn credentials(&self, server: &str) -> Option<&ResolvedCredentials> {
        self.servers.get(server).map(|s| &s.credentials)
    }

    /// The environment variables to add to `server`'s process (none for an unknown server).
    pub fn env_for(&self, server: &str) -> Vec<(String, Secret)> {
        self.credentials(server)
            .map(|c| c.env.clone())
            .unwrap_or_default()
    }

    /// The headers for a request to `server` by `agent` acting for `human`: the configured
    /// ones and, with a token exchange, `Authorization: Bearer <access token>`.
    pub async fn headers_for(
        &self,
        server: &str,
        human: &str,
        agent: &str,
    ) -> Result<Vec<(String, Secret)>, BrokerError> {
        let Some(s) = self.servers.get(server) else {
            return Err(BrokerError::UnknownServer(server.to_owned()));
        };
        #[cfg_attr(not(feature = "oauth"), allow(unused_mut))]
        let mut headers = s.credentials.headers.clone();
        #[cfg(feature = "oauth")]
        if let Some(tokens) = self.tokens.as_ref().filter(|t| t.has(server)) {
            let token = tokens.access_token(server, human, agent).await?;
            headers.push((
                "Authorization".into(),
                Secret::new(format!("Bearer {}", token.expose())),
            ));
        }
        #[cfg(not(feature = "oauth"))]
        if s.oauth.is_some() {
            let _ = (human, agent);
            return Err(BrokerError::OAuthUnavailable {
                server: server.to_owned(),
            });
        }
        Ok(headers)
    }

    /// The token exchange, if any server uses one.
    #[cfg(feature = "oauth")]
    pub fn tokens(&self) -> Option<&TokenBroker> {
        self.tokens.as_ref()
    }

    /// Drops `human`'s cached access tokens (their next request exchanges again).
    pub fn revoke_human(&self, human: &str) -> usize {
        #[cfg(feature = "oauth")]
        if let Some(t) = &self.tokens {
            return t.revoke_human(human);
        }
        let _ = human;
        0
    }

    /// Drops the access tokens obtained for `agent`.
    pub fn revoke_agent(&self, agent: &str) -> usize {
        #[cfg(feature = "oauth")]
        if let Some(t) = &self.tokens {
            return t.revoke_agent(agent);
        }
        let _ = agent;
        0
    }
}
