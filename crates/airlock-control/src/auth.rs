//! Human credentials: `[humans.<id>] token_sha256` and the bearer token that hashes to it.
//!
//! Tokens are 256 random bits, so a fast unsalted hash is enough: nobody can
//! guess a preimage of a SHA-256 digest of a high-entropy secret, and a slow
//! password hash would only add latency. The comparison is constant-time over
//! the digest so a timing side channel cannot leak how many bytes matched.

use std::io::Read;
use std::path::Path;

use airlock_config::Config;
use sha2::{Digest, Sha256};

use crate::error::ControlError;

/// Random bytes in a fresh token.
const TOKEN_BYTES: usize = 32;

/// Checks that `token` is the credential of human `name` in `config`.
pub fn verify_human(config: &Config, name: &str, token: &str) -> Result<(), ControlError> {
    let human = config
        .humans
        .get(name)
        .ok_or_else(|| ControlError::UnknownHuman {
            name: name.to_owned(),
        })?;
    let Some(stored) = &human.token_sha256 else {
        return Err(ControlError::NoCredential {
            name: name.to_owned(),
        });
    };
    let mut expected = [0u8; 32];
    // The config validated the hex; a failure here still must not let anyone in.
    if hex::decode_to_slice(stored, &mut expected).is_err() {
        return Err(ControlError::NoCredential {
            name: name.to_owned(),
        });
    }
    let actual: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    if constant_time_eq(&expected, &actual) {
        Ok(())
    } else {
        Err(ControlError::BadToken {
            name: name.to_owned(),
        })
    }
}

/// `token_sha256` for a token: lowercase hex SHA-256 of its UTF-8 bytes.
pub fn token_digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A fresh token: `alt_` and 64 hex digits of 256 bits from the OS random source.
pub fn new_token() -> Result<String, ControlError> {
    let mut bytes = [0u8; TOKEN_BYTES];
    random_bytes(&mut bytes)?;
    Ok(format!("alt_{}", hex::encode(bytes)))
}

/// Fills `buf` from `/dev/urandom` (never blocks after boot, never short on Linux).
pub(crate) fn random_bytes(buf: &mut [u8]) -> Result<(), ControlError> {
    let path = Path::new("/dev/urandom");
    let io = |source| ControlError::Io {
        context: "cannot read random bytes from",
        path: path.to_owned(),
        source,
    };
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(buf))
        .map_err(io)
}

/// Equality whose time does not depend on where the inputs differ.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a
        .iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | std::hint::black_box(x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::path::Path;

    use super::*;

    fn config(digest: Option<&str>) -> Config {
        let line = digest.map_or(String::new(), |d| format!("token_sha256 = \"{d}\"\n"));
        let text = format!("[policy]\nfiles = [\"p\"]\n[humans.alice]\n{line}[humans.bob]\n");
        airlock_config::parse(&text, Path::new("a.toml")).unwrap()
    }

    #[test]
    fn a_fresh_token_verifies_and_others_do_not() {
        let token = new_token().unwrap();
        assert!(token.starts_with("alt_") && token.len() == 68);
        assert_ne!(token, new_token().unwrap());
        let c = config(Some(&token_digest(&token)));
        verify_human(&c, "alice", &token).unwrap();
        assert!(matches!(
            verify_human(&c, "alice", "alt_wrong"),
            Err(ControlError::BadToken { .. })
        ));
        assert!(matches!(
            verify_human(&c, "alice", ""),
            Err(ControlError::BadToken { .. })
        ));
        assert!(matches!(
            verify_human(&c, "bob", &token),
            Err(ControlError::NoCredential { .. })
        ));
        assert!(matches!(
            verify_human(&c, "carol", &token),
            Err(ControlError::UnknownHuman { .. })
        ));
    }

    #[test]
    fn uppercase_digest_in_config_still_verifies() {
        let d = token_digest("t").to_ascii_uppercase();
        verify_human(&config(Some(&d)), "alice", "t").unwrap();
    }

    #[test]
    fn constant_time_eq_is_eq() {
        let a = [7u8; 32];
        let mut b = a;
        assert!(constant_time_eq(&a, &b));
        b[31] ^= 1;
        assert!(!constant_time_eq(&a, &b));
    }
}
