//! The webhook: a follower of the audit chain that POSTs every `approval`, `kill`, `resume`
//! and `breaker` record to `[serve.webhook] url`, so a chat bot or pager can announce it.
//!
//! - **Body**: JSON `{"type", "seq", "time", "text", "url", "record"}`; `type` is
//!   `approval.requested|vote|approved|denied|expired|withdrawn`, `kill`, `resume` or `breaker`;
//!   `url` links to the request's page (or the home page); `text` is one line for people.
//! - **Signature**: `X-Airlock-Signature: sha256=<hex HMAC-SHA256 of the exact body>` under the
//!   secret from the environment variable `secret_env` names. `X-Airlock-Delivery` is the
//!   record's seq, so a receiver can drop a repeat.
//! - **Order and retries**: one record at a time, in chain order. A network error, a 408, a
//!   429 or a 5xx is retried with doubling waits (1 s … 60 s) until it lands; any other answer
//!   outside 2xx is a refusal by the receiver, logged and skipped. Redirects are not followed.
//! - **Cursor**: the seq of the last record handled, in table `serve_webhook_cursor` of the
//!   audit database, keyed by the URL's SHA-256, written after each delivery. A restart
//!   continues after it (nothing lost); only a crash between a delivery and its cursor write
//!   repeats one record (same `X-Airlock-Delivery`). A URL seen for the first time starts at
//!   the current head: history is not replayed.
//!
//! The client is `ureq` (blocking, run off the async threads): small, rustls with ring, no
//! cookie jar or redirects to switch off by accident — a webhook needs one POST, not a
//! browser-like client.

use std::sync::Arc;
use std::time::Duration;

use airlock_audit::{RecordKind, StoredRecord};
use hmac::{Hmac, Mac};
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::error::ServerError;
use crate::state::{lock, AppState, Webhook};

/// Record kinds the webhook announces.
pub const KINDS: [RecordKind; 4] = [
    RecordKind::Approval,
    RecordKind::Kill,
    RecordKind::Resume,
    RecordKind::Breaker,
];
/// Records read per batch.
const BATCH: usize = 100;
/// Re-read the chain this often even without a notification.
const POLL: Duration = Duration::from_secs(2);
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(60);

/// The signature header's value for `body`: `sha256=<hex>`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(m) => m,
        // HMAC accepts keys of every length.
        Err(_) => return String::new(),
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// What one record announces, or `None` for records not worth a message (an approval used).
pub fn payload(base_url: &str, r: &StoredRecord) -> Option<Value> {
    let detail = r.detail.clone().unwrap_or(Value::Null);
    let s = |k: &str| {
        detail
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
    let call = format!("{}/{}", opt(&r.server), opt(&r.target));
    let (kind, text, url) = match r.known_kind()? {
        RecordKind::Approval => {
            let event = s("event");
            let id = s("approval_id");
            let text = match event.as_str() {
                "requested" => format!(
                    "{} (for {}) asks to call {call}: held by {}",
                    opt(&r.agent),
                    opt(&r.on_behalf_of),
                    r.reasons.join(", ")
                ),
                "vote" => format!(
                    "{} voted {} on {id} ({call} by {})",
                    s("human"),
                    opt(&r.decision),
                    opt(&r.agent)
                ),
                "approved" | "denied" => format!(
                    "{id} {event} by {}: {call} by {}",
                    s("human"),
                    opt(&r.agent)
                ),
                "expired" | "withdrawn" => format!("{id} {event}: {call} by {}", opt(&r.agent)),
                _ => return None,
            };
            (
                format!("approval.{event}"),
                text,
                format!("{base_url}/approvals/{id}"),
            )
        }
        RecordKind::Kill => (
            "kill".to_owned(),
            format!(
                "{} stopped {} {}: {}",
                s("by"),
                s("scope"),
                s("target"),
                s("reason")
            ),
            format!("{base_url}/"),
        ),
        RecordKind::Resume => (
            "resume".to_owned(),
            format!("{} resumed {} {}", s("by"), s("scope"), s("target")),
            format!("{base_url}/"),
        ),
        RecordKind::Breaker => (
            "breaker".to_owned(),
            format!(
                "breaker {} tripped: agent {} paused ({})",
                s("class"),
                opt(&r.agent),
                r.reasons.join("; ")
            ),
            format!("{base_url}/"),
        ),
        _ => return None,
    };
    Some(json!({
        "type": kind,
        "seq": r.seq,
        "time": rfc3339(r.time_unix_ns),
        "text": text,
        "url": url,
        "record": {
            "kind": r.kind, "agent": r.agent, "on_behalf_of": r.on_behalf_of, "task": r.task,
            "session": r.session, "server": r.server, "method": r.method, "target": r.target,
            "decision": r.decision, "status": r.status, "reasons": r.reasons, "detail": r.detail,
        },
    }))
}

fn rfc3339(ns: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns))
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

// === the cursor ===

/// The follower's position, in the audit database.
struct Cursor {
    conn: Connection,
    key: String,
}

impl Cursor {
    /// `synchronous=FULL`, as ever: a cursor write lost to a power loss repeats a delivery.
    fn open(db: &std::path::Path, url: &str) -> Result<Cursor, airlock_control::ControlError> {
        let conn = airlock_sqlite::open_wal(db, airlock_sqlite::Durability::PowerLoss)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS serve_webhook_cursor (\
               url_sha256 TEXT PRIMARY KEY, last_seq INTEGER NOT NULL, updated_ns INTEGER NOT NULL)",
        )
        .map_err(|source| airlock_control::ControlError::Sqlite {
            context: "create the webhook cursor table",
            source,
        })?;
        Ok(Cursor {
            conn,
            key: hex::encode(Sha256::digest(url.as_bytes())),
        })
    }

    fn get(&self) -> rusqlite::Result<Option<u64>> {
        self.conn
            .query_row(
                "SELECT last_seq FROM serve_webhook_cursor WHERE url_sha256 = ?1",
                [&self.key],
                |r| r.get::<_, i64>(0),
            )
            .optional()
            .map(|v| v.map(|n| u64::try_from(n).unwrap_or(0)))
    }

    fn set(&self, seq: u64) -> rusqlite::Result<()> {
        self.conn.execute(
            "INSERT INTO serve_webhook_cursor (url_sha256, last_seq, updated_ns) VALUES (?1, ?2, ?3) \
             ON CONFLICT(url_sha256) DO UPDATE SET last_seq = excluded.last_seq, updated_ns = excluded.updated_ns",
            params![self.key, i64::try_from(seq).unwrap_or(i64::MAX), airlock_audit::now_unix_ns()],
        )?;
        Ok(())
    }
}

// === the follower ===

/// Starts following the chain; the first run starts at the current head. The task ends after
/// a shutdown is signalled, once the record in hand is delivered and its cursor saved.
pub(crate) fn spawn(
    state: Arc<AppState>,
    hook: Webhook,
) -> Result<tokio::task::JoinHandle<()>, ServerError> {
    let db = state.config.audit.path.clone();
    let open = |e: &dyn std::fmt::Display| ServerError::Control {
        path: db.clone(),
        source: airlock_control::ControlError::Corrupt(format!("webhook cursor: {e}")),
    };
    let cursor = Cursor::open(&db, &hook.url).map_err(|e| open(&e))?;
    let start = match cursor.get().map_err(|e| open(&e))? {
        Some(seq) => seq,
        None => {
            let head = lock(&state.audit)
                .head()
                .map_err(|source| ServerError::Audit {
                    path: db.clone(),
                    source,
                })?
                .map_or(0, |h| h.seq);
            cursor.set(head).map_err(|e| open(&e))?;
            head
        }
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(hook.timeout))
        .max_redirects(0)
        .http_status_as_error(false)
        .user_agent(concat!("airlock/", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    let cursor = Arc::new(std::sync::Mutex::new(cursor));
    Ok(tokio::spawn(follow(state, hook, agent, cursor, start)))
}

async fn follow(
    state: Arc<AppState>,
    hook: Webhook,
    agent: ureq::Agent,
    cursor: Arc<std::sync::Mutex<Cursor>>,
    mut at: u64,
) {
    let mut stop = state.stopping.subscribe();
    let wake = state.webhook_wake.clone();
    loop {
        let s = state.clone();
        let batch =
            tokio::task::spawn_blocking(move || lock(&s.audit).records_after(at, &KINDS, BATCH))
                .await;
        let batch = match batch {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "webhook: cannot read the audit chain");
                Vec::new()
            }
            Err(e) => {
                tracing::error!(error = %e, "webhook: reader task failed");
                Vec::new()
            }
        };
        let idle = batch.is_empty();
        for r in batch {
            if let Some(body) = payload(&state.base_url, &r) {
                if !deliver(&hook, &agent, &body, r.seq, &mut stop).await {
                    return; // stopping
                }
            }
            at = r.seq;
            let c = cursor.clone();
            let saved = tokio::task::spawn_blocking(move || lock(&c).set(at)).await;
            if !matches!(saved, Ok(Ok(()))) {
                tracing::error!(
                    seq = at,
                    "webhook: cannot save the cursor; a restart may repeat this record"
                );
            }
        }
        if idle {
            tokio::select! {
                _ = async { match &wake { Some(w) => w.notified().await, None => std::future::pending().await } } => {}
                _ = tokio::time::sleep(POLL) => {}
                _ = stop.changed() => return,
            }
        }
    }
}

/// POSTs `body` until it lands or the receiver refuses it; `false` if the server is stopping.
async fn deliver(
    hook: &Webhook,
    agent: &ureq::Agent,
    body: &Value,
    seq: u64,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> bool {
    let bytes = body.to_string().into_bytes();
    let sig = signature(&hook.secret, &bytes);
    let kind = body["type"].as_str().unwrap_or("").to_owned();
    let mut wait = FIRST_RETRY;
    loop {
        let (a, url, b, s, k) = (
            agent.clone(),
            hook.url.clone(),
            bytes.clone(),
            sig.clone(),
            kind.clone(),
        );
        let sent = tokio::task::spawn_blocking(move || {
            a.post(&url)
                .header("Content-Type", "application/json")
                .header("X-Airlock-Signature", &s)
                .header("X-Airlock-Event", &k)
                .header("X-Airlock-Delivery", &seq.to_string())
                .send(&b[..])
                .map(|r| r.status().as_u16())
        })
        .await;
        match sent {
            Ok(Ok(status)) if (200..300).contains(&status) => {
                tracing::debug!(seq, kind = %kind, "webhook delivered");
                return true;
            }
            Ok(Ok(status)) if !matches!(status, 408 | 429 | 500..=599) => {
                tracing::error!(seq, kind = %kind, status, "webhook receiver refused the event; skipping it");
                return true;
            }
            Ok(Ok(status)) => {
                tracing::warn!(seq, status, retry_in = ?wait, "webhook receiver busy or failing; retrying")
            }
            Ok(Err(e)) => {
                tracing::warn!(seq, error = %e, retry_in = ?wait, "webhook POST failed; retrying")
            }
            Err(e) => {
                tracing::warn!(seq, error = %e, retry_in = ?wait, "webhook task failed; retrying")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return false,
        }
        wait = (wait * 2).min(MAX_RETRY);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn record(kind: &str, detail: Value) -> StoredRecord {
        StoredRecord {
            seq: 7,
            prev_hash: String::new(),
            hash: String::new(),
            time_unix_ns: 1_700_000_000_000_000_000,
            kind: kind.into(),
            agent: Some("bot".into()),
            on_behalf_of: Some("alice".into()),
            task: None,
            session: Some("s1".into()),
            server: Some("corp".into()),
            method: Some("tools/call".into()),
            target: Some("forum_post".into()),
            request_id: None,
            ref_seq: None,
            args_digest: None,
            args_redacted: None,
            decision: None,
            reasons: vec!["public-posts".into()],
            policy_digest: None,
            status: None,
            duration_us: None,
            detail: Some(detail),
            result_status: None,
            result_duration_us: None,
        }
    }

    #[test]
    fn the_signature_is_hmac_sha256_of_the_body() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn payloads_link_to_the_request_and_say_what_happened() {
        let r = record(
            "approval",
            json!({"event": "requested", "approval_id": "apr-0123456789abcdef"}),
        );
        let p = payload("https://a.example", &r).unwrap();
        assert_eq!(p["type"], "approval.requested");
        assert_eq!(p["url"], "https://a.example/approvals/apr-0123456789abcdef");
        assert_eq!(p["seq"], 7);
        assert_eq!(p["time"], "2023-11-14T22:13:20Z");
        assert_eq!(
            p["text"],
            "bot (for alice) asks to call corp/forum_post: held by public-posts"
        );
        let k = record(
            "kill",
            json!({"by": "alice", "scope": "agent", "target": "bot", "reason": "runaway"}),
        );
        let p = payload("http://127.0.0.1:7700", &k).unwrap();
        assert_eq!(p["type"], "kill");
        assert_eq!(p["text"], "alice stopped agent bot: runaway");
        assert_eq!(p["url"], "http://127.0.0.1:7700/");
        assert!(payload("x", &record("approval", json!({"event": "used"}))).is_none());
        assert!(payload("x", &record("call", json!({}))).is_none());
    }

    #[test]
    fn the_cursor_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("a.db");
        let c = Cursor::open(&db, "https://h/1").unwrap();
        assert_eq!(c.get().unwrap(), None);
        c.set(5).unwrap();
        c.set(9).unwrap();
        drop(c);
        assert_eq!(
            Cursor::open(&db, "https://h/1").unwrap().get().unwrap(),
            Some(9)
        );
        assert_eq!(
            Cursor::open(&db, "https://h/2").unwrap().get().unwrap(),
            None
        );
    }
}
