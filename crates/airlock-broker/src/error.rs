//! The crate's one error type. No message ever carries a secret or a token: values are
//! named by their placeholder, and what a token service says is redacted and cut short.

/// Why credentials could not be resolved or a token obtained.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The secrets file could not be read (its path, and a position in it, are in the error).
    #[error(transparent)]
    Secrets(#[from] airlock_config::ConfigError),
    /// A credential of `server` cannot be made from its template.
    #[error("server \"{server}\": {what}: {message}")]
    Resolve {
        /// The server whose credentials these are.
        server: String,
        /// Which value: `header X-Api-Key`, `env FORUM_KEY`, `oauth client_secret`.
        what: String,
        /// What is wrong, naming placeholders, never values.
        message: String,
    },
    /// The config has no such server.
    #[error("unknown server \"{0}\"")]
    UnknownServer(String),
    /// The server needs the token exchange and this build has none.
    #[error(
        "server \"{server}\" uses an OAuth token exchange, but this build of Airlock has no \
         OAuth support (the `oauth` feature of airlock-broker)"
    )]
    OAuthUnavailable {
        /// The server.
        server: String,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client for token exchange: {0}")]
    Client(String),
    /// The token endpoint could not be reached, or its answer read.
    #[error("server \"{server}\": token request to {url} failed: {message}")]
    TokenRequest {
        /// The server the token is for.
        server: String,
        /// The token endpoint.
        url: String,
        /// What went wrong (transport level).
        message: String,
    },
    /// The token endpoint answered with an error.
    #[error("server \"{server}\": the token service at {url} refused ({status}): {error}")]
    TokenRefused {
        /// The server the token is for.
        server: String,
        /// The token endpoint.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The OAuth `error` code and a redacted, shortened `error_description`.
        error: String,
    },
    /// The token endpoint's answer is not a usable token response.
    #[error("server \"{server}\": unusable token response from {url}: {message}")]
    TokenResponse {
        /// The server the token is for.
        server: String,
        /// The token endpoint.
        url: String,
        /// What is wrong with it.
        message: String,
    },
}
