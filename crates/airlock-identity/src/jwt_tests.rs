#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use jsonwebtoken::{EncodingKey, Header};
use serde_json::{json, Value};

use super::*;

pub(crate) const ISSUER: &str = "https://idp.test";
pub(crate) const AUDIENCE: &str = "airlock";

/// A signing key made for the test, and its public JWK.
pub(crate) struct TestKey {
    pub(crate) kid: String,
    pub(crate) alg: Algorithm,
    key: EncodingKey,
    pub(crate) jwk: Value,
}

impl TestKey {
    /// A fresh Ed25519 key: PKCS#8 is a fixed prefix and the 32-byte seed.
    pub(crate) fn ed25519(kid: &str) -> TestKey {
        let mut der = hex::decode("302e020100300506032b657004220420").unwrap();
        der.extend(random::<32>());
        TestKey::new(kid, Algorithm::EdDSA, EncodingKey::from_ed_der(&der))
    }

    /// A fresh P-256 key: PKCS#8 around a SEC1 key of a random scalar (top bit cleared, so
    /// below the group order).
    pub(crate) fn p256(kid: &str) -> TestKey {
        let mut der =
            hex::decode("3041020100301306072a8648ce3d020106082a8648ce3d030107042730250201010420")
                .unwrap();
        let mut scalar = random::<32>();
        scalar[0] &= 0x7f;
        scalar[31] |= 1;
        der.extend(scalar);
        TestKey::new(kid, Algorithm::ES256, EncodingKey::from_ec_der(&der))
    }

    /// The fixed RSA test key (testdata/rsa-test-key.pem).
    pub(crate) fn rsa(kid: &str) -> TestKey {
        let pem = include_bytes!("../testdata/rsa-test-key.pem");
        TestKey::new(
            kid,
            Algorithm::RS256,
            EncodingKey::from_rsa_pem(pem).unwrap(),
        )
    }

    fn new(kid: &str, alg: Algorithm, key: EncodingKey) -> TestKey {
        let mut jwk = serde_json::to_value(Jwk::from_encoding_key(&key, alg).unwrap()).unwrap();
        jwk["kid"] = json!(kid);
        jwk["use"] = json!("sig");
        TestKey {
            kid: kid.to_owned(),
            alg,
            key,
            jwk,
        }
    }

    /// A token with this key's `kid` and `alg`.
    pub(crate) fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.key).unwrap()
    }
}

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).unwrap();
    b
}

pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Claims that pass, for agent `sub`, expiring in ten minutes.
pub(crate) fn claims(sub: &str) -> Value {
    json!({ "iss": ISSUER, "aud": AUDIENCE, "sub": sub, "exp": now() + 600, "iat": now() })
}

pub(crate) fn jwks(keys: &[&TestKey]) -> String {
    json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() }).to_string()
}

pub(crate) fn config(jwks_file: PathBuf) -> JwtConfig {
    JwtConfig {
        issuer: ISSUER.into(),
        audience: AUDIENCE.into(),
        jwks_file,
        agent_claim: "sub".into(),
    }
}

fn verifier(keys: &[&TestKey]) -> JwtVerifier {
    JwtVerifier::from_jwks(&config("jwks.json".into()), &jwks(keys)).unwrap()
}

fn b64url(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

fn unsigned(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}.",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    )
}

#[test]
fn good_tokens_of_each_key_type_verify() {
    let (ed, ec, rsa) = (
        TestKey::ed25519("ed"),
        TestKey::p256("ec"),
        TestKey::rsa("rsa"),
    );
    let v = verifier(&[&ed, &ec, &rsa]);
    for key in [&ed, &ec, &rsa] {
        let got = v.verify(&key.sign(&claims("bot"))).unwrap();
        assert_eq!(got.agent, "bot", "{:?}", key.alg);
        assert_eq!(got.subject, "bot");
        assert!(got.expires_at > SystemTime::now());
    }
}

#[test]
fn time_claims_are_checked_with_a_small_leeway() {
    let k = TestKey::p256("k");
    let v = verifier(&[&k]);
    let with = |key: &str, value: u64| {
        let mut c = claims("bot");
        c[key] = json!(value);
        v.verify(&k.sign(&c))
    };
    assert!(matches!(
        with("exp", now() - 120),
        Err(IdentityError::Expired)
    ));
    with("exp", now() - 5).unwrap();
    assert!(matches!(
        with("nbf", now() + 120),
        Err(IdentityError::NotYetValid)
    ));
    with("nbf", now() + 5).unwrap();
    let mut no_exp = claims("bot");
    no_exp.as_object_mut().unwrap().remove("exp");
    assert!(matches!(
        v.verify(&k.sign(&no_exp)),
        Err(IdentityError::MissingClaim { claim }) if claim == "exp"
    ));
}

#[test]
fn issuer_and_audience_must_be_the_configured_ones() {
    let k = TestKey::ed25519("k");
    let v = verifier(&[&k]);
    let with = |key: &str, value: Value| {
        let mut c = claims("bot");
        c[key] = value;
        v.verify(&k.sign(&c))
    };
    assert!(matches!(
        with("aud", json!("someone-else")),
        Err(IdentityError::WrongAudience)
    ));
    with("aud", json!(["someone-else", AUDIENCE])).unwrap();
    assert!(matches!(
        with("iss", json!("https://evil.test")),
        Err(IdentityError::WrongIssuer)
    ));
    for claim in ["iss", "aud"] {
        let mut c = claims("bot");
        c.as_object_mut().unwrap().remove(claim);
        assert!(
            matches!(
                v.verify(&k.sign(&c)),
                Err(IdentityError::MissingClaim { .. })
            ),
            "{claim}"
        );
    }
    let mut c = claims("bot");
    c["sub"] = json!(7);
    assert!(matches!(
        v.verify(&k.sign(&c)),
        Err(IdentityError::MissingClaim { claim }) if claim == "sub"
    ));
}

#[test]
fn the_key_is_the_one_the_kid_names_with_its_own_algorithm() {
    let (a, b) = (TestKey::p256("a"), TestKey::ed25519("b"));
    let v = verifier(&[&a, &b]);
    // Unknown kid.
    let stranger = TestKey::p256("c");
    assert!(matches!(
        v.verify(&stranger.sign(&claims("bot"))),
        Err(IdentityError::UnknownKeyId { kid }) if kid == "c"
    ));
    // A known kid, signed by another key.
    let impostor = TestKey::p256("a");
    assert!(matches!(
        v.verify(&impostor.sign(&claims("bot"))),
        Err(IdentityError::BadSignature)
    ));
    // No kid.
    let mut header = Header::new(Algorithm::ES256);
    header.kid = None;
    let token = jsonwebtoken::encode(&header, &claims("bot"), &a.key).unwrap();
    assert!(matches!(v.verify(&token), Err(IdentityError::NoKeyId)));
    // Key a's kid with another algorithm: b's EdDSA signature under a's name.
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some("a".into());
    let token = jsonwebtoken::encode(&header, &claims("bot"), &b.key).unwrap();
    assert!(matches!(
        v.verify(&token),
        Err(IdentityError::WrongAlgorithm { .. })
    ));
    // HS256 keyed with the public key's bytes: the classic confusion.
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("b".into());
    let secret = EncodingKey::from_secret(b.jwk["x"].as_str().unwrap().as_bytes()).unwrap();
    let token = jsonwebtoken::encode(&header, &claims("bot"), &secret).unwrap();
    assert!(matches!(
        v.verify(&token),
        Err(IdentityError::WrongAlgorithm { .. })
    ));
}

#[test]
fn alg_none_and_garbage_are_malformed() {
    let k = TestKey::ed25519("k");
    let v = verifier(&[&k]);
    for alg in ["none", "None", "NONE"] {
        let token = unsigned(
            &json!({"alg": alg, "kid": "k", "typ": "JWT"}),
            &claims("bot"),
        );
        assert!(
            matches!(v.verify(&token), Err(IdentityError::MalformedJwt { .. })),
            "{alg}"
        );
    }
    // A valid token with its signature dropped.
    let good = k.sign(&claims("bot"));
    let stripped = &good[..=good.rfind('.').unwrap()];
    assert!(v.verify(stripped).is_err());
    for junk in ["a.b.c", "..", "x", "e30.e30.e30"] {
        let e = v.verify(junk).unwrap_err();
        assert!(e.is_refusal(), "{junk}: {e}");
    }
}

#[test]
fn the_agent_claim_can_be_another_claim() {
    let k = TestKey::ed25519("k");
    let mut cfg = config("jwks.json".into());
    cfg.agent_claim = "agent".into();
    let v = JwtVerifier::from_jwks(&cfg, &jwks(&[&k])).unwrap();
    let mut c = claims("user-123");
    c["agent"] = json!("bot");
    let got = v.verify(&k.sign(&c)).unwrap();
    assert_eq!(
        (got.agent.as_str(), got.subject.as_str()),
        ("bot", "user-123")
    );
    assert!(matches!(
        v.verify(&k.sign(&claims("bot"))),
        Err(IdentityError::MissingClaim { claim }) if claim == "agent"
    ));
}

#[test]
fn a_jwks_with_keys_airlock_refuses_does_not_load() {
    let ec = TestKey::p256("ec");
    let load = |keys: Value| {
        JwtVerifier::from_jwks(
            &config("/k/jwks.json".into()),
            &json!({ "keys": keys }).to_string(),
        )
        .map(|_| ())
        .map_err(|e| e.to_string())
    };
    let with = |edit: &dyn Fn(&mut Value)| {
        let mut jwk = ec.jwk.clone();
        edit(&mut jwk);
        load(json!([jwk]))
    };
    let cases: [(&str, Result<(), String>); 6] = [
        (
            "symmetric",
            load(json!([{"kty": "oct", "k": "c2VjcmV0", "kid": "h", "alg": "HS256"}])),
        ),
        ("hs alg", with(&|j| j["alg"] = json!("HS256"))),
        (
            "no kid",
            with(&|j| {
                j.as_object_mut().unwrap().remove("kid");
            }),
        ),
        (
            "alg of another key type",
            with(&|j| j["alg"] = json!("RS256")),
        ),
        ("unknown alg", with(&|j| j["alg"] = json!("XX999"))),
        (
            "duplicate kid",
            load(json!([ec.jwk.clone(), ec.jwk.clone()])),
        ),
    ];
    for (what, got) in cases {
        let e = got.expect_err(what);
        assert!(e.starts_with("/k/jwks.json: "), "{what}: {e}");
    }
    // An encryption key is not ours to use: skipped, and alone it leaves no key.
    let enc = with(&|j| j["use"] = json!("enc")).unwrap_err();
    assert!(enc.contains("no signing key"), "{enc}");
    load(json!([ec.jwk.clone(), {"kty": "RSA", "use": "enc", "n": "AQAB", "e": "AQAB"}])).unwrap();
    assert!(load(json!([])).unwrap_err().contains("no signing key"));
    let not_json = JwtVerifier::from_jwks(&config("/k/jwks.json".into()), "{").unwrap_err();
    assert!(not_json.to_string().contains("not a JWKS"), "{not_json}");
    let missing = JwtVerifier::load(&config("/nonexistent/jwks.json".into())).unwrap_err();
    assert!(missing.to_string().contains("cannot read"), "{missing}");
}
