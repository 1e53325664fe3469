#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, VecDeque};
use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use super::*;
use crate::Broker;

const KEY: &str = "0123456789abcdef0123456789abcdef";
const CLIENT_SECRET: &str = "cs/secret:0123";

/// What the token endpoint was sent.
#[derive(Debug, Clone)]
struct Seen {
    authorization: Option<String>,
    content_type: Option<String>,
    form: BTreeMap<String, String>,
}

/// A token service on 127.0.0.1: records every request, answers from a queue (or with a
/// fresh hour-long token when it is empty).
#[derive(Default)]
struct TokenService {
    seen: Mutex<Vec<Seen>>,
    answers: Mutex<VecDeque<(u16, String)>>,
    issued: Mutex<u32>,
}

impl TokenService {
    fn answer(&self, status: u16, body: Value) {
        self.answers
            .lock()
            .unwrap()
            .push_back((status, body.to_string()));
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn token(
    State(s): State<Arc<TokenService>>,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, String) {
    let header = |n: &str| headers.get(n).map(|v| v.to_str().unwrap().to_owned());
    s.seen.lock().unwrap().push(Seen {
        authorization: header("authorization"),
        content_type: header("content-type"),
        form: url::form_urlencoded::parse(body.as_bytes())
            .into_owned()
            .collect(),
    });
    if let Some((status, body)) = s.answers.lock().unwrap().pop_front() {
        return (StatusCode::from_u16(status).unwrap(), body);
    }
    let mut n = s.issued.lock().unwrap();
    *n += 1;
    let body = json!({
        "access_token": format!("access-{n}-abcdefgh"),
        "issued_token_type": ACCESS_TOKEN_TYPE,
        "token_type": "Bearer",
        "expires_in": 3600,
    });
    (StatusCode::OK, body.to_string())
}

/// Starts the service; returns it and its token URL.
async fn start() -> (Arc<TokenService>, String) {
    let service = Arc::new(TokenService::default());
    let app = axum::Router::new()
        .route("/token", axum::routing::post(token))
        .with_state(service.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (service, format!("http://{addr}/token"))
}

fn client(url: &str) -> OAuthClient {
    OAuthClient {
        token_url: url.to_owned(),
        client_id: "airlock".into(),
        client_secret: Secret::new(CLIENT_SECRET),
        signing_key: Secret::new(KEY),
        audience: Some("forum".into()),
        scope: Some("forum.write".into()),
    }
}

fn broker(url: &str) -> (TokenBroker, Arc<Redactor>) {
    let redactor = Arc::new(Redactor::default());
    let clients = BTreeMap::from([("forum".to_owned(), client(url))]);
    let b = TokenBroker::new(clients, redactor.clone(), TokenSettings::default()).unwrap();
    (b, redactor)
}

/// The claims of a subject token, after checking its HS256 signature with `KEY`.
fn verified_claims(jwt: &str) -> Value {
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3);
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    assert_eq!(header, json!({"alg": "HS256", "typ": "JWT"}));
    let mut mac = Hmac::<Sha256>::new_from_slice(KEY.as_bytes()).unwrap();
    mac.update(format!("{}.{}", parts[0], parts[1]).as_bytes());
    mac.verify_slice(&URL_SAFE_NO_PAD.decode(parts[2]).unwrap())
        .expect("the signature verifies with the shared key");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap()
}

#[tokio::test]
async fn an_exchange_sends_the_form_basic_auth_and_a_signed_subject_token() {
    let (service, url) = start().await;
    let (b, redactor) = broker(&url);
    let token = b.access_token("forum", "alice", "bot").await.unwrap();
    assert_eq!(token.expose(), "access-1-abcdefgh");

    let seen = service.seen();
    assert_eq!(seen.len(), 1);
    let s = &seen[0];
    assert_eq!(
        s.content_type.as_deref(),
        Some("application/x-www-form-urlencoded")
    );
    // RFC 6749 §2.3.1: both halves form-urlencoded before Basic.
    let expected = format!("Basic {}", STANDARD.encode("airlock:cs%2Fsecret%3A0123"));
    assert_eq!(s.authorization.as_deref(), Some(expected.as_str()));
    assert_eq!(s.form["grant_type"], GRANT_TYPE_TOKEN_EXCHANGE);
    assert_eq!(s.form["subject_token_type"], jwt::SUBJECT_TOKEN_TYPE);
    assert_eq!(s.form["requested_token_type"], ACCESS_TOKEN_TYPE);
    assert_eq!(s.form["audience"], "forum");
    assert_eq!(s.form["scope"], "forum.write");
    assert!(!s.form.contains_key("client_secret"));

    let claims = verified_claims(&s.form["subject_token"]);
    assert_eq!(claims["iss"], "airlock");
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["act"], json!({"sub": "bot"}));
    assert_eq!(claims["aud"], url.as_str());
    let (iat, exp) = (
        claims["iat"].as_u64().unwrap(),
        claims["exp"].as_u64().unwrap(),
    );
    assert!(exp > iat && exp - iat <= 300, "{claims}");
    assert_eq!(claims["jti"].as_str().unwrap().len(), 32);

    // The token is a secret from now on.
    assert_eq!(
        redactor.redact_str("got access-1-abcdefgh"),
        "got [REDACTED:oauth:forum]"
    );
}

#[tokio::test]
async fn tokens_are_cached_per_server_human_and_agent() {
    let (service, url) = start().await;
    let (b, _) = broker(&url);
    let first = b.access_token("forum", "alice", "bot").await.unwrap();
    let again = b.access_token("forum", "alice", "bot").await.unwrap();
    assert_eq!(first.expose(), again.expose());
    assert_eq!(service.seen().len(), 1, "one exchange for two calls");
    let other = b.access_token("forum", "alice", "bot2").await.unwrap();
    assert_ne!(other.expose(), first.expose());
    assert_eq!(service.seen().len(), 2);
    assert_eq!(b.cached(), 2);
    assert!(matches!(
        b.access_token("nope", "alice", "bot").await,
        Err(BrokerError::UnknownServer(_))
    ));
}

#[tokio::test]
async fn a_token_near_expiry_is_refreshed_with_its_refresh_token() {
    let (service, url) = start().await;
    let (b, redactor) = broker(&url);
    service.answer(
        200,
        json!({"access_token": "access-short-lived", "token_type": "bearer",
               "expires_in": 10, "refresh_token": "refresh-1-abcdefgh"}),
    );
    service.answer(
        200,
        json!({"access_token": "access-refreshed-1", "token_type": "Bearer",
               "expires_in": "3600"}),
    );
    assert_eq!(
        b.access_token("forum", "alice", "bot")
            .await
            .unwrap()
            .expose(),
        "access-short-lived"
    );
    // 10 s left is under the 30 s margin: refreshed at once.
    assert_eq!(
        b.access_token("forum", "alice", "bot")
            .await
            .unwrap()
            .expose(),
        "access-refreshed-1"
    );
    assert_eq!(
        b.access_token("forum", "alice", "bot")
            .await
            .unwrap()
            .expose(),
        "access-refreshed-1"
    );
    let seen = service.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].form["grant_type"], "refresh_token");
    assert_eq!(seen[1].form["refresh_token"], "refresh-1-abcdefgh");
    assert!(seen[1]
        .authorization
        .as_deref()
        .unwrap()
        .starts_with("Basic "));
    assert_eq!(
        redactor.redact_str("refresh-1-abcdefgh"),
        "[REDACTED:oauth-refresh:forum]"
    );
}

#[tokio::test]
async fn a_token_near_expiry_without_refresh_token_is_exchanged_anew() {
    let (service, url) = start().await;
    let (b, _) = broker(&url);
    service.answer(
        200,
        json!({"access_token": "access-short-lived", "token_type": "Bearer", "expires_in": 5}),
    );
    b.access_token("forum", "alice", "bot").await.unwrap();
    let next = b.access_token("forum", "alice", "bot").await.unwrap();
    assert_eq!(next.expose(), "access-1-abcdefgh");
    let seen = service.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].form["grant_type"], GRANT_TYPE_TOKEN_EXCHANGE);
}

#[tokio::test]
async fn revoking_drops_cached_tokens() {
    let (service, url) = start().await;
    let (b, _) = broker(&url);
    b.access_token("forum", "alice", "bot").await.unwrap();
    b.access_token("forum", "alice", "bot2").await.unwrap();
    b.access_token("forum", "bob", "bot").await.unwrap();
    assert_eq!(b.revoke_agent("bot2"), 1);
    assert_eq!(b.revoke_human("alice"), 1);
    assert_eq!(b.cached(), 1);
    let before = service.seen().len();
    b.access_token("forum", "alice", "bot").await.unwrap();
    assert_eq!(service.seen().len(), before + 1, "exchanged again");
    b.access_token("forum", "bob", "bot").await.unwrap();
    assert_eq!(
        service.seen().len(),
        before + 1,
        "bob's token is still cached"
    );
}

#[tokio::test]
async fn refusals_and_bad_answers_are_clear_and_carry_no_token() {
    let (service, url) = start().await;
    let (b, _) = broker(&url);
    service.answer(
        400,
        json!({"error": "invalid_grant",
        "error_description": format!("bad client {CLIENT_SECRET} for subject SUBJECT")}),
    );
    let e = b
        .access_token("forum", "alice", "bot")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("refused (400): invalid_grant: bad client"),
        "{e}"
    );
    assert!(!e.contains(CLIENT_SECRET), "{e}");

    service.answer(
        200,
        json!({"access_token": "access-mac-12345", "token_type": "mac"}),
    );
    let e = b
        .access_token("forum", "alice", "bot")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("token_type \"mac\" is not Bearer"), "{e}");
    assert!(!e.contains("access-mac-12345"), "{e}");

    service.answer(200, json!({"token_type": "Bearer"}));
    let e = b
        .access_token("forum", "alice", "bot")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("no `access_token`"), "{e}");

    service.answer(
        200,
        json!({"access_token": "x".repeat(100_000), "token_type": "Bearer"}),
    );
    let e = b
        .access_token("forum", "alice", "bot")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("larger than 65536 bytes"), "{e}");

    let (b, _) = broker("http://127.0.0.1:1/token");
    let e = b.access_token("forum", "alice", "bot").await.unwrap_err();
    assert!(matches!(e, BrokerError::TokenRequest { .. }), "{e}");
}

#[test]
fn the_subject_token_echoed_in_a_refusal_is_scrubbed() {
    let redactor = Arc::new(Redactor::new(vec![(
        "cs".into(),
        Secret::new(CLIENT_SECRET),
    )]));
    let clients = BTreeMap::from([("forum".to_owned(), client("http://127.0.0.1:1/t"))]);
    let b = TokenBroker::new(clients, redactor, TokenSettings::default()).unwrap();
    let subject = Secret::new("eyJhbGciOi.subject.token");
    let body = json!({"error": "invalid_request",
        "error_description": format!("bad {} from {CLIENT_SECRET}\n", subject.expose())});
    assert_eq!(
        b.refusal(body.to_string().as_bytes(), Some(&subject)),
        "invalid_request: bad [REDACTED:subject_token] from [REDACTED:cs]"
    );
    assert_eq!(b.refusal(b"not json", None), "(no OAuth error code)");
}

#[tokio::test]
async fn the_broker_adds_the_bearer_token_to_the_configured_headers() {
    let (service, url) = start().await;
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secrets.toml");
    std::fs::write(
        &secrets,
        format!("cs = \"{CLIENT_SECRET}\"\nkey = \"{KEY}\"\napi = \"api-key-123456\"\n"),
    )
    .unwrap();
    std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o600)).unwrap();
    let text = format!(
        "[policy]\nfiles = [\"p.cedar\"]\n[secrets]\nfile = \"secrets.toml\"\n\
         [servers.forum.credentials]\nheaders = {{ \"X-Api-Key\" = \"${{secret:api}}\" }}\n\
         [servers.forum.credentials.oauth]\ntoken_url = \"{url}\"\nclient_id = \"airlock\"\n\
         client_secret = \"${{secret:cs}}\"\nsubject_signing_key = \"${{secret:key}}\"\n"
    );
    let config = airlock_config::parse(&text, &dir.path().join("airlock.toml")).unwrap();
    let broker = Broker::from_config(&config, &BTreeMap::new()).unwrap();
    let headers = broker.headers_for("forum", "alice", "bot").await.unwrap();
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.expose()))
        .collect();
    assert_eq!(
        headers,
        [
            ("X-Api-Key", "api-key-123456"),
            ("Authorization", "Bearer access-1-abcdefgh")
        ]
    );
    let form = &service.seen()[0].form;
    assert!(!form.contains_key("audience") && !form.contains_key("scope"));
    // The client secret, the signing key and the token are all redacted.
    let line = format!("{CLIENT_SECRET} {KEY} access-1-abcdefgh");
    assert_eq!(
        broker.redactor().redact_str(&line),
        "[REDACTED:cs] [REDACTED:key] [REDACTED:oauth:forum]"
    );
    assert_eq!(broker.revoke_human("alice"), 1);
    assert!(broker.tokens().is_some());
}
