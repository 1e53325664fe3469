//! `[identity.jwt]`: JWTs an identity provider signs, checked against the public keys of a JWKS
//! file. `jsonwebtoken` does the cryptography and the standard claim checks; Airlock chooses
//! which keys and algorithms are acceptable:
//!
//! - only asymmetric keys: an HMAC key (`kty: oct`, HS*) in a JWKS would be a shared secret in a
//!   file, and anyone who can read it could mint tokens; `none` is no algorithm at all;
//! - every token names its key (`kid`), and its `alg` must be the one that key is for, so a
//!   token cannot pick the algorithm its key is checked with;
//! - `iss`, `aud` and `exp` are required, `nbf` is checked when present, with [`LEEWAY_SECS`].
//!
//! The keys of the token's own header (`jwk`, `jku`, `x5u`) are never used.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use airlock_config::JwtConfig;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use crate::error::IdentityError;

/// Clock skew allowed on `exp` and `nbf`.
pub const LEEWAY_SECS: u64 = 30;

/// The issuer's keys and what a token must carry.
pub(crate) struct JwtVerifier {
    keys: HashMap<String, Key>,
    validation_base: Validation,
    agent_claim: String,
}

struct Key {
    alg: Algorithm,
    decoding: DecodingKey,
}

/// What a verified JWT says.
#[derive(Debug)]
pub(crate) struct Verified {
    /// The value of the agent claim.
    pub(crate) agent: String,
    /// `sub`, else the agent.
    pub(crate) subject: String,
    /// `exp`.
    pub(crate) expires_at: SystemTime,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut kids: Vec<&String> = self.keys.keys().collect();
        kids.sort();
        f.debug_struct("JwtVerifier")
            .field("kids", &kids)
            .field("agent_claim", &self.agent_claim)
            .finish_non_exhaustive()
    }
}

impl JwtVerifier {
    /// Reads the JWKS file `config` names.
    pub(crate) fn load(config: &JwtConfig) -> Result<JwtVerifier, IdentityError> {
        let path = &config.jwks_file;
        let text = std::fs::read_to_string(path).map_err(|e| IdentityError::Jwks {
            path: path.clone(),
            message: format!("cannot read the JWKS file: {e}"),
        })?;
        JwtVerifier::from_jwks(config, &text)
    }

    /// Builds from the JWKS `text` (errors name `config.jwks_file`).
    pub(crate) fn from_jwks(config: &JwtConfig, text: &str) -> Result<JwtVerifier, IdentityError> {
        let path = config.jwks_file.as_path();
        let set: JwkSet = serde_json::from_str(text).map_err(|e| {
            jwks_error(
                path,
                format!("not a JWKS (a JSON {{\"keys\": [...]}}): {e}"),
            )
        })?;
        let mut keys = HashMap::new();
        for (i, jwk) in set.keys.iter().enumerate() {
            let Some((kid, key)) = key(jwk, i, path)? else {
                continue;
            };
            if keys.insert(kid.clone(), key).is_some() {
                return Err(jwks_error(path, format!("two keys have kid {kid:?}")));
            }
        }
        if keys.is_empty() {
            return Err(jwks_error(path, "no signing key in the JWKS".to_owned()));
        }
        // The pure-Rust backend unless the process chose one: without this, a build that
        // enabled two backends would panic on the first token instead of checking it.
        if jsonwebtoken::crypto::CryptoProvider::try_get_default().is_none() {
            let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
        }
        let mut v = Validation::new(Algorithm::RS256);
        v.leeway = LEEWAY_SECS;
        v.validate_exp = true;
        v.validate_nbf = true;
        v.validate_aud = true;
        v.set_issuer(&[&config.issuer]);
        v.set_audience(&[&config.audience]);
        v.set_required_spec_claims(&["exp", "iss", "aud"]);
        Ok(JwtVerifier {
            keys,
            validation_base: v,
            agent_claim: config.agent_claim.clone(),
        })
    }

    /// Checks `token` and reads the agent it names.
    pub(crate) fn verify(&self, token: &str) -> Result<Verified, IdentityError> {
        let header = jsonwebtoken::decode_header(token).map_err(malformed)?;
        let kid = header.kid.ok_or(IdentityError::NoKeyId)?;
        let Some(key) = self.keys.get(&kid) else {
            return Err(IdentityError::UnknownKeyId { kid });
        };
        if header.alg != key.alg {
            return Err(IdentityError::WrongAlgorithm {
                kid,
                alg: format!("{:?}", header.alg),
                expected: format!("{:?}", key.alg),
            });
        }
        let mut validation = self.validation_base.clone();
        validation.algorithms = vec![key.alg];
        let data = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
            token,
            &key.decoding,
            &validation,
        )
        .map_err(refusal)?;
        let claims = data.claims;
        let agent = claims
            .get(&self.agent_claim)
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| IdentityError::MissingClaim {
                claim: self.agent_claim.clone(),
            })?
            .to_owned();
        let subject = claims
            .get("sub")
            .and_then(serde_json::Value::as_str)
            .map_or_else(|| agent.clone(), str::to_owned);
        // Required and checked above; a missing one still fails closed.
        let exp = claims
            .get("exp")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| IdentityError::MissingClaim {
                claim: "exp".to_owned(),
            })?;
        Ok(Verified {
            agent,
            subject,
            expires_at: UNIX_EPOCH + Duration::from_secs(exp),
        })
    }
}

/// The key of JWKS entry `i` and its `kid`; `None` for an encryption key (not ours to use).
fn key(jwk: &Jwk, i: usize, path: &Path) -> Result<Option<(String, Key)>, IdentityError> {
    let at = |m: String| jwks_error(path, format!("key {i}: {m}"));
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return Ok(None);
    }
    let by_type = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => Algorithm::ES256,
            EllipticCurve::P384 => Algorithm::ES384,
            ref other => return Err(at(format!("curve {other:?} is not supported"))),
        },
        AlgorithmParameters::OctetKeyPair(p) => match p.curve {
            EllipticCurve::Ed25519 => Algorithm::EdDSA,
            ref other => return Err(at(format!("curve {other:?} is not supported"))),
        },
        AlgorithmParameters::OctetKey(_) => {
            return Err(at(
                "a symmetric key (kty \"oct\") is refused: anyone who can read the JWKS could \
                 sign tokens with it"
                    .to_owned(),
            ))
        }
        _ => return Err(at("unsupported key type (kty)".to_owned())),
    };
    let alg = match jwk.common.key_algorithm {
        None => by_type,
        Some(KeyAlgorithm::HS256 | KeyAlgorithm::HS384 | KeyAlgorithm::HS512) => {
            return Err(at(
                "HMAC algorithms (HS*) are refused: the key would be a shared secret".to_owned(),
            ))
        }
        Some(KeyAlgorithm::RSA1_5 | KeyAlgorithm::RSA_OAEP | KeyAlgorithm::RSA_OAEP_256) => {
            return Ok(None)
        }
        Some(declared) => {
            let alg = signing_alg(declared)
                .ok_or_else(|| at(format!("algorithm {declared:?} is not supported")))?;
            let same_family = matches!(
                (alg, by_type),
                (
                    Algorithm::RS256
                        | Algorithm::RS384
                        | Algorithm::RS512
                        | Algorithm::PS256
                        | Algorithm::PS384
                        | Algorithm::PS512,
                    Algorithm::RS256
                ) | (Algorithm::ES256, Algorithm::ES256)
                    | (Algorithm::ES384, Algorithm::ES384)
                    | (Algorithm::EdDSA, Algorithm::EdDSA)
            );
            if !same_family {
                return Err(at(format!(
                    "algorithm {alg:?} does not fit the key's type (that takes {by_type:?})"
                )));
            }
            alg
        }
    };
    let kid = jwk
        .common
        .key_id
        .clone()
        .filter(|k| !k.is_empty())
        .ok_or_else(|| at("a signing key needs a kid: tokens name their key by it".to_owned()))?;
    let decoding = DecodingKey::from_jwk(jwk).map_err(|e| at(format!("unusable key: {e}")))?;
    Ok(Some((kid, Key { alg, decoding })))
}

fn signing_alg(k: KeyAlgorithm) -> Option<Algorithm> {
    Some(match k {
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

fn jwks_error(path: &Path, message: String) -> IdentityError {
    IdentityError::Jwks {
        path: path.to_owned(),
        message,
    }
}

fn malformed(e: jsonwebtoken::errors::Error) -> IdentityError {
    IdentityError::MalformedJwt {
        reason: e.to_string(),
    }
}

/// The library's verdict in our terms; whatever it does not name is a malformed token.
fn refusal(e: jsonwebtoken::errors::Error) -> IdentityError {
    match e.kind() {
        ErrorKind::InvalidSignature => IdentityError::BadSignature,
        ErrorKind::ExpiredSignature => IdentityError::Expired,
        ErrorKind::ImmatureSignature => IdentityError::NotYetValid,
        ErrorKind::InvalidIssuer => IdentityError::WrongIssuer,
        ErrorKind::InvalidAudience => IdentityError::WrongAudience,
        ErrorKind::MissingRequiredClaim(c) => IdentityError::MissingClaim { claim: c.clone() },
        _ => malformed(e),
    }
}

#[cfg(test)]
#[path = "jwt_tests.rs"]
pub(crate) mod tests;
