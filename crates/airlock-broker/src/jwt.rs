//! The subject token of a token exchange: a short-lived JWT Airlock signs for the human an
//! agent acts for.
//!
//! HS256 with the server's `subject_signing_key`, a key Airlock shares with the token
//! service (no key pair to publish and rotate for one verifier). Claims (RFC 7519; RFC 8693
//! §4.1 for `act`):
//!
//! - `iss`: the `client_id` (the token service knows Airlock by it);
//! - `sub`: the human's id; `act`: `{"sub": <agent id>}`, the agent acting for them;
//! - `aud`: the token endpoint URL (the token is meant for it alone);
//! - `iat`, `exp` (at most [`MAX_SUBJECT_TTL`] later), `jti` (128 random bits, hex).
//!
//! Sent as `subject_token_type=urn:ietf:params:oauth:token-type:jwt`.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

/// The subject token type sent with the exchange.
pub const SUBJECT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";
/// The longest a subject token lives.
pub const MAX_SUBJECT_TTL: Duration = Duration::from_secs(300);

/// Who a subject token speaks for.
pub(crate) struct Subject<'a> {
    pub(crate) issuer: &'a str,
    pub(crate) human: &'a str,
    pub(crate) agent: &'a str,
    pub(crate) audience: &'a str,
    pub(crate) ttl: Duration,
}

/// A signed, compact JWT for `s`, issued at `now` (seconds since the epoch).
pub(crate) fn mint(key: &[u8], s: &Subject<'_>, now: u64) -> Result<String, String> {
    let mut id = [0u8; 16];
    getrandom::fill(&mut id).map_err(|e| format!("no randomness for the token id: {e}"))?;
    let ttl = s.ttl.min(MAX_SUBJECT_TTL).as_secs().max(1);
    let header = json!({"alg": "HS256", "typ": "JWT"});
    let claims = json!({
        "iss": s.issuer,
        "sub": s.human,
        "act": {"sub": s.agent},
        "aud": s.audience,
        "iat": now,
        "exp": now + ttl,
        "jti": hex::encode(id),
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(key).map_err(|e| e.to_string())?;
    mac.update(signing_input.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    Ok(format!("{signing_input}.{signature}"))
}
