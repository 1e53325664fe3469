//! The crate's one error type. No message ever holds a token: only names, key ids and reasons.

use std::path::PathBuf;

/// Why an identity operation failed, or why a presented credential was refused.
///
/// [`IdentityError::is_refusal`] tells the two apart: a refusal is about the bearer (answer
/// 401), anything else about Airlock's own state (the registry or the JWKS file).
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    // --- the credential is refused ---
    /// Nothing was presented.
    #[error("no agent credential was presented")]
    Missing,
    /// Neither a known agent token nor (with `[identity.jwt]`) a JWT.
    #[error("the token is not an agent credential Airlock knows")]
    UnknownToken,
    /// The registered agent this token was issued to was revoked.
    #[error("the token of agent {agent:?} was revoked")]
    Revoked {
        /// The agent's name.
        agent: String,
    },
    /// Not a JWT that can be read (structure, base64, JSON, header).
    #[error("the JWT cannot be read: {reason}")]
    MalformedJwt {
        /// What is wrong.
        reason: String,
    },
    /// The JWT's header has no `kid`.
    #[error("the JWT does not name its signing key (no `kid` in its header)")]
    NoKeyId,
    /// The JWT names a key the JWKS does not have.
    #[error("the JWT is signed with key {kid:?}, which is not in the JWKS")]
    UnknownKeyId {
        /// The `kid` of the JWT's header.
        kid: String,
    },
    /// The JWT's `alg` is not the one its key is for.
    #[error("the JWT's algorithm {alg} is not the algorithm of key {kid:?} ({expected})")]
    WrongAlgorithm {
        /// The `kid`.
        kid: String,
        /// The JWT's `alg`.
        alg: String,
        /// The key's.
        expected: String,
    },
    /// The signature does not verify with the named key.
    #[error("the JWT's signature does not verify")]
    BadSignature,
    /// `exp` is past (beyond the leeway).
    #[error("the JWT has expired")]
    Expired,
    /// `nbf` is ahead (beyond the leeway).
    #[error("the JWT is not valid yet (nbf)")]
    NotYetValid,
    /// `iss` is not the configured issuer.
    #[error("the JWT's issuer is not the configured [identity.jwt] issuer")]
    WrongIssuer,
    /// `aud` does not hold the configured audience.
    #[error("the JWT's audience does not include the configured [identity.jwt] audience")]
    WrongAudience,
    /// A claim Airlock needs is absent, or not a string.
    #[error("the JWT has no {claim:?} claim (or it is not a string)")]
    MissingClaim {
        /// The claim.
        claim: String,
    },
    /// The JWT names an agent that is neither declared nor registered (or was revoked).
    #[error("the JWT names agent {agent:?}, which is neither in [agents.*] nor registered")]
    UnknownAgent {
        /// The name the JWT carries.
        agent: String,
    },

    // --- the registry ---
    /// A name that is not a valid id.
    #[error(
        "invalid {what} name {name:?}: use 1 to 64 of A-Z a-z 0-9 _ . - starting with a letter \
         or digit"
    )]
    InvalidName {
        /// `agent`, `human`, `task` or `group`.
        what: &'static str,
        /// The name given.
        name: String,
    },
    /// `add` of a name that is registered and not revoked.
    #[error("agent {name:?} is already registered; revoke it first or choose another name")]
    AlreadyRegistered {
        /// The name.
        name: String,
    },
    /// `revoke` of a name with no live registration.
    #[error("agent {name:?} is not registered (or was already revoked)")]
    NotRegistered {
        /// The name.
        name: String,
    },
    /// The database could not be opened.
    #[error(transparent)]
    Open(#[from] airlock_sqlite::OpenError),
    /// A statement on the registry failed.
    #[error("{}: cannot {what}: {source}", path.display())]
    Store {
        /// The database file.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// Why.
        #[source]
        source: rusqlite::Error,
    },
    /// The OS would not give random bytes for a token.
    #[error("no randomness from the OS for a new token: {0}")]
    Random(String),

    // --- [identity.jwt] ---
    /// The JWKS file cannot be read, or holds a key Airlock refuses.
    #[error("{}: {message}", path.display())]
    Jwks {
        /// The JWKS file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

impl IdentityError {
    /// True when the presented credential was refused; false when Airlock itself failed.
    pub fn is_refusal(&self) -> bool {
        match self {
            IdentityError::Missing
            | IdentityError::UnknownToken
            | IdentityError::Revoked { .. }
            | IdentityError::MalformedJwt { .. }
            | IdentityError::NoKeyId
            | IdentityError::UnknownKeyId { .. }
            | IdentityError::WrongAlgorithm { .. }
            | IdentityError::BadSignature
            | IdentityError::Expired
            | IdentityError::NotYetValid
            | IdentityError::WrongIssuer
            | IdentityError::WrongAudience
            | IdentityError::MissingClaim { .. }
            | IdentityError::UnknownAgent { .. } => true,
            IdentityError::InvalidName { .. }
            | IdentityError::AlreadyRegistered { .. }
            | IdentityError::NotRegistered { .. }
            | IdentityError::Open(_)
            | IdentityError::Store { .. }
            | IdentityError::Random(_)
            | IdentityError::Jwks { .. } => false,
        }
    }

    /// A store error maker for `map_err`.
    pub(crate) fn store(
        path: &std::path::Path,
        what: &'static str,
    ) -> impl FnOnce(rusqlite::Error) -> IdentityError {
        let path = path.to_owned();
        move |source| IdentityError::Store { path, what, source }
    }
}

/// What [`crate::Authenticator::authenticate`] returns on refusal: the crate's one error type,
/// always with [`IdentityError::is_refusal`] true.
pub type AuthError = IdentityError;
