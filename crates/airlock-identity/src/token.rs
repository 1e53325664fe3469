//! Agent tokens: 256 random bits, shown once, stored only as their SHA-256.
//!
//! A fast unsalted hash is enough for a token of 256 random bits: nobody can find a preimage of
//! its digest, and a slow password hash would only add latency to every session.

use std::fmt;

use sha2::{Digest, Sha256};

use crate::error::IdentityError;

/// What every token `airlock agents add` issues starts with (humans' tokens start `alt_`).
pub const TOKEN_PREFIX: &str = "alk_";

/// Random bytes in a fresh token.
const TOKEN_BYTES: usize = 32;

/// A freshly issued agent token: the only time it exists outside the agent. `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct AgentToken(String);

impl AgentToken {
    /// A new token: [`TOKEN_PREFIX`] and 64 hex digits from the OS random source.
    pub(crate) fn generate() -> Result<AgentToken, IdentityError> {
        let mut bytes = [0u8; TOKEN_BYTES];
        getrandom::fill(&mut bytes).map_err(|e| IdentityError::Random(e.to_string()))?;
        Ok(AgentToken(format!("{TOKEN_PREFIX}{}", hex::encode(bytes))))
    }

    /// The token itself, to hand to the agent once.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Its `token_sha256` (lowercase hex), the form that is stored.
    pub fn digest_hex(&self) -> String {
        AgentToken::digest_of(&self.0)
    }

    /// The `token_sha256` (lowercase hex) of any token, e.g. for an `[agents.*]` line.
    pub fn digest_of(token: &str) -> String {
        hex::encode(digest(token))
    }
}

impl fmt::Debug for AgentToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AgentToken(<redacted>)")
    }
}

/// SHA-256 of a bearer's UTF-8 bytes.
pub fn digest(bearer: &str) -> [u8; 32] {
    Sha256::digest(bearer.as_bytes()).into()
}

/// The 32 bytes of a `token_sha256` (hex, either case); `None` if it is not one.
pub(crate) fn parse_digest(hex_digest: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_digest, &mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn tokens_are_fresh_prefixed_and_hidden_from_debug() {
        let a = AgentToken::generate().unwrap();
        let b = AgentToken::generate().unwrap();
        assert_ne!(a, b);
        assert!(a.expose().starts_with(TOKEN_PREFIX));
        assert_eq!(a.expose().len(), TOKEN_PREFIX.len() + 64);
        assert_eq!(format!("{a:?}"), "AgentToken(<redacted>)");
        assert_eq!(parse_digest(&a.digest_hex()), Some(digest(a.expose())));
        assert_eq!(
            parse_digest(&a.digest_hex().to_ascii_uppercase()),
            Some(digest(a.expose()))
        );
        assert_eq!(parse_digest("zz"), None);
    }
}
