//! `airlock-identity`: who an agent is.
//!
//! Many agents share one gateway; each proves its identity with a credential of its own:
//!
//! - **a bearer token**: an `[agents.<id>] token_sha256` in the config, or the token
//!   `airlock agents add` issued to a **registered agent** ([`Registry`], a table in the audit
//!   database, so every process on the host sees an addition or a revocation). Only the token's
//!   SHA-256 is stored; the token is shown once ([`AgentToken`]).
//! - **a JWT** from the `[identity.jwt]` issuer, signed by a key of its JWKS file, naming a
//!   declared or registered agent in its agent claim.
//!
//! [`Authenticator`] is an in-memory snapshot of all of them: [`Authenticator::authenticate`]
//! answers with the [`AgentIdentity`] (the human and task always from the agent's record, never
//! from the credential), and [`Authenticator::reload`] re-reads the registry when a gateway is
//! told it changed; [`Authenticator::is_active`] re-checks an open session's agent.
//!
//! ```
//! use airlock_identity::{Authenticator, AuthMethod, NewAgent, Registry};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let db = dir.path().join("audit.db");
//! let text = format!(
//!     "[policy]\nfiles = [\"p\"]\n[audit]\npath = {:?}\n[humans.alice]\n[tasks.triage]\n",
//!     db.display().to_string()
//! );
//! let config = airlock_config::parse(&text, dir.path().join("airlock.toml").as_path())?;
//!
//! let mut registry = Registry::open(&db, Default::default())?;
//! let new = NewAgent { name: "bot", on_behalf_of: "alice", task: "triage", groups: &[], created_by: None };
//! let (_, token) = registry.add(&new)?;
//!
//! let auth = Authenticator::new(&config)?;
//! let who = auth.authenticate(token.expose())?;
//! assert_eq!((who.agent.as_str(), who.on_behalf_of.as_str()), ("bot", "alice"));
//! assert_eq!(who.method, AuthMethod::Token);
//!
//! registry.revoke("bot", Some("alice"))?;
//! let auth = auth.reload()?;
//! assert!(!auth.is_active("bot"));
//! assert!(auth.authenticate(token.expose()).is_err());
//! # Ok(()) }
//! ```

mod authenticator;
mod error;
mod jwt;
mod registry;
mod token;

pub use authenticator::{
    AgentIdentity, AgentOrigin, AgentRecord, AuthMethod, Authenticator, MAX_BEARER_BYTES,
};
pub use error::{AuthError, IdentityError};
pub use jwt::LEEWAY_SECS;
pub use registry::{is_registered, list_registered, NewAgent, RegisteredAgent, Registry};
pub use token::{digest, AgentToken, TOKEN_PREFIX};
