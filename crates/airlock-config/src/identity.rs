//! `[identity]`, `[identity.jwt]` and the `token_sha256` credential of `[agents.<id>]`: how an
//! agent proves who it is. Raw types, model and validation live together here so the section is
//! one unit; `validate.rs` only calls in.
//!
//! Agents added with `airlock agents add` live in the audit database, not here; the
//! `airlock-identity` crate joins both.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::raw::{RawAgent, RawHuman, SpStr};

/// The JWT claim that names the agent unless `agent_claim` says otherwise.
pub const DEFAULT_AGENT_CLAIM: &str = "sub";

// === model ===

/// `[identity]`: what an agent must present.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IdentityConfig {
    /// Whether `airlock run` refuses every agent that does not present its credential in
    /// `AIRLOCK_AGENT_TOKEN` (an agent with a credential must present it either way).
    pub require_token: bool,
    /// `[identity.jwt]`: agents may also present a JWT from this issuer.
    pub jwt: Option<JwtConfig>,
}

/// `[identity.jwt]`: JWTs an identity provider signs, checked against its published keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtConfig {
    /// The `iss` a token must carry.
    pub issuer: String,
    /// The `aud` a token must carry (one of its audiences).
    pub audience: String,
    /// The JWKS file with the issuer's public keys, resolved against the config's directory.
    pub jwks_file: PathBuf,
    /// The claim that names the agent (an `[agents.*]` entry or a registered agent).
    pub agent_claim: String,
}

// === raw ===

/// `[identity]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "an [identity] table")]
pub(crate) struct RawIdentity {
    require_token: Option<bool>,
    jwt: Option<RawJwt>,
}

/// `[identity.jwt]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "an [identity.jwt] table")]
struct RawJwt {
    issuer: SpStr,
    audience: SpStr,
    jwks_file: SpStr,
    agent_claim: Option<SpStr>,
}

// === validation ===

/// Where complaints go: `(span, message)`, the earliest in the file wins.
pub(crate) type Report<'a> = dyn FnMut(std::ops::Range<usize>, String) + 'a;

/// Builds `[identity]`; relative paths are joined onto `base`.
pub(crate) fn identity(raw: &RawIdentity, base: &Path, p: &mut Report<'_>) -> IdentityConfig {
    IdentityConfig {
        require_token: raw.require_token.unwrap_or(false),
        jwt: raw.jwt.as_ref().map(|j| jwt(j, base, p)),
    }
}

fn jwt(raw: &RawJwt, base: &Path, p: &mut Report<'_>) -> JwtConfig {
    for (v, key) in [
        (&raw.issuer, "issuer"),
        (&raw.audience, "audience"),
        (&raw.jwks_file, "jwks_file"),
    ] {
        if v.get_ref().trim().is_empty() {
            p(v.span(), format!("[identity.jwt] {key} must not be empty"));
        }
    }
    let agent_claim = match &raw.agent_claim {
        None => DEFAULT_AGENT_CLAIM.to_owned(),
        Some(c) => {
            if c.get_ref().is_empty() {
                p(
                    c.span(),
                    "[identity.jwt] agent_claim must name a claim, e.g. \"sub\"".into(),
                );
            }
            c.get_ref().clone()
        }
    };
    JwtConfig {
        issuer: raw.issuer.get_ref().clone(),
        audience: raw.audience.get_ref().clone(),
        jwks_file: base.join(raw.jwks_file.get_ref()),
        agent_claim,
    }
}

/// `[agents.<id>] token_sha256`: 64 hex digits, stored lowercase.
pub(crate) fn agent_token_sha256(raw: &RawAgent, p: &mut Report<'_>) -> Option<String> {
    crate::control::digest_of(raw.token_sha256.as_ref(), "agent", p)
}

/// An agent is known by its token alone, so one token is one agent's: a digest shared by two
/// agents would make them one, and an agent holding a human's token could act as that human.
/// (Humans name themselves with `--as`; the config does not ask their tokens to differ.)
pub(crate) fn unique_credentials(
    agents: &BTreeMap<SpStr, RawAgent>,
    humans: &BTreeMap<SpStr, RawHuman>,
    p: &mut Report<'_>,
) {
    let mut seen: BTreeMap<String, String> = humans
        .iter()
        .filter_map(|(n, h)| {
            let d = h.token_sha256.as_ref()?.get_ref().to_ascii_lowercase();
            Some((d, format!("[humans.{}]", n.get_ref())))
        })
        .collect();
    for (name, a) in agents {
        let Some(digest) = &a.token_sha256 else {
            continue;
        };
        let owner = format!("[agents.{}]", name.get_ref());
        let key = digest.get_ref().to_ascii_lowercase();
        if let Some(first) = seen.get(&key) {
            p(
                digest.span(),
                format!(
                    "token_sha256 of {owner} is also {first}'s: each agent needs a token of its \
                     own"
                ),
            );
        } else {
            seen.insert(key, owner);
        }
    }
}

#[cfg(test)]
#[path = "identity_tests.rs"]
mod tests;
