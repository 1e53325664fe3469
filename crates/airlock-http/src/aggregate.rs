//! `/mcp`: every upstream behind one MCP session, names namespaced `<server>__<name>`.
//!
//! Airlock is the server here: it answers `initialize` and `ping` itself, sends the agent's
//! `initialize` to each upstream (each through its own pipeline, so each is judged and audited
//! as `/mcp/<server>` would be), and merges the lists. A tool, prompt or resource template is
//! reached by its namespace only — never by the order of the upstreams — so two servers with a
//! tool of the same name are two tools. Requests an upstream sends to the agent get the id
//! `"<server>/<id>"`, and the agent's answer goes back to that server under the original id.
//!
//! Lists are filtered by each link's pipeline before they are merged: an agent sees only what
//! policy may allow it.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use airlock_protocol::{Id, INVALID_PARAMS, METHOD_NOT_FOUND};
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use crate::session::{Delivery, Outbox, Session};
use crate::{McpGateway, Message};

/// Between a server name and a tool or prompt name.
pub const SEPARATOR: &str = "__";

/// Splits `<server>__<name>`.
pub fn split_name(name: &str) -> Option<(&str, &str)> {
    name.split_once(SEPARATOR)
        .filter(|(s, n)| !s.is_empty() && !n.is_empty())
}

/// A message for the agent from `server`, as the aggregated session shows it.
pub(crate) fn outgoing(server: &str, frame: &[u8]) -> Vec<u8> {
    let Ok(mut v) = serde_json::from_slice::<Value>(frame) else {
        return frame.to_vec();
    };
    let is_request = v.get("method").is_some() && v.get("id").is_some_and(|i| !i.is_null());
    if !is_request {
        return frame.to_vec();
    }
    let id = v.get("id").map(Value::to_string).unwrap_or_default();
    v["id"] = Value::String(format!("{server}/{id}"));
    serde_json::to_vec(&v).unwrap_or_else(|_| frame.to_vec())
}

/// Handles one POST's messages on an aggregated session. Every request gets exactly one answer
/// on `outbox`; `pending` receives the ids to wait for.
pub(crate) async fn handle(
    gw: &Arc<McpGateway>,
    session: &Arc<Session>,
    messages: Vec<Message>,
    outbox: Outbox,
    pending: &mut HashSet<Id>,
) {
    for m in messages {
        match (&m.id, m.method.as_deref()) {
            (Some(id), Some(method)) => {
                pending.insert(id.clone());
                let answer = request(gw, session, &m, id, method, outbox.clone()).await;
                if let Some(answer) = answer {
                    let _ = outbox
                        .send(Delivery {
                            bytes: answer,
                            answers: Some(id.clone()),
                            from: String::new(),
                        })
                        .await;
                }
            }
            (None, Some(method)) => notification(gw, session, &m, method).await,
            (Some(id), None) => answer_to_server(session, &m, id).await,
            (None, None) => {}
        }
    }
}

/// A request: answered here (`Some`), or sent on with its answer routed to `outbox` (`None`).
async fn request(
    gw: &Arc<McpGateway>,
    session: &Arc<Session>,
    m: &Message,
    id: &Id,
    method: &str,
    outbox: Outbox,
) -> Option<Vec<u8>> {
    match method {
        "initialize" => Some(initialize(gw, session, m, id).await),
        "ping" => Some(result(id, json!({}))),
        "tools/list" => Some(list(gw, session, m, id, "tools", Some("name")).await),
        "prompts/list" => Some(list(gw, session, m, id, "prompts", Some("name")).await),
        "resources/list" => Some(list(gw, session, m, id, "resources", None).await),
        "resources/templates/list" => {
            Some(list(gw, session, m, id, "resourceTemplates", None).await)
        }
        "logging/setLevel" => {
            broadcast(session, m).await;
            Some(result(id, json!({})))
        }
        "tools/call" | "prompts/get" => {
            let name = m.value.pointer("/params/name").and_then(Value::as_str);
            let Some((server, name)) = name.and_then(split_name) else {
                return Some(error(
                    id,
                    INVALID_PARAMS,
                    "unknown name: on /mcp every tool and prompt is named <server>__<name>",
                ));
            };
            let Some(link) = session.link(server) else {
                return Some(error(
                    id,
                    INVALID_PARAMS,
                    &format!("unknown server \"{server}\" in this session"),
                ));
            };
            let mut v = m.value.clone();
            v["params"]["name"] = Value::String(name.to_string());
            let frame = crate::one_line(serde_json::to_vec(&v).unwrap_or_default());
            session.expect(server, id.clone(), m.progress_token(), outbox);
            link.from_agent(vec![airlock_pipeline::Line::Frame(frame)])
                .await;
            None
        }
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
            let uri = m
                .value
                .pointer("/params/uri")
                .and_then(Value::as_str)
                .unwrap_or("");
            let Some(server) = gw.resource_owner(session, uri) else {
                return Some(error(
                    id,
                    INVALID_PARAMS,
                    "unknown resource: list resources on /mcp first, or use /mcp/<server>",
                ));
            };
            let Some(link) = session.link(&server) else {
                return Some(error(id, INVALID_PARAMS, "unknown resource"));
            };
            session.expect(&server, id.clone(), m.progress_token(), outbox);
            link.from_agent(vec![airlock_pipeline::Line::Frame(m.raw.clone())])
                .await;
            None
        }
        _ => Some(error(
            id,
            METHOD_NOT_FOUND,
            &format!(
                "{method} is not available on /mcp (the aggregated endpoint); use /mcp/<server>"
            ),
        )),
    }
}

/// `initialize`: each upstream is initialized with the agent's own request; the answer is
/// Airlock's, with the capabilities the upstreams have between them.
async fn initialize(gw: &Arc<McpGateway>, session: &Arc<Session>, m: &Message, id: &Id) -> Vec<u8> {
    let asked = m
        .value
        .pointer("/params/protocolVersion")
        .and_then(Value::as_str);
    let version = crate::era::negotiate(asked);
    *crate::lock(&session.version) = Some(version.to_string());
    *crate::lock(&session.init_params) = m.value.get("params").cloned();
    let servers: Vec<String> = gw.upstream_names();
    let mut links = Vec::new();
    for server in &servers {
        match gw.open_link(session, server).await {
            Ok(link) => links.push(link),
            Err(e) => {
                tracing::warn!(server = %server, error = %e, "an upstream could not be reached; it is left out of this session")
            }
        }
    }
    let answers = fan_out(session, &links, m, id).await;
    let mut caps = Map::new();
    for (_, answer) in &answers {
        if let Some(c) = answer
            .pointer("/result/capabilities")
            .and_then(Value::as_object)
        {
            for key in ["tools", "prompts", "resources", "logging", "completions"] {
                if c.contains_key(key) {
                    caps.insert(key.to_string(), json!({}));
                }
            }
        }
    }
    caps.insert("tools".into(), json!({ "listChanged": true }));
    result(
        id,
        json!({
            "protocolVersion": version,
            "capabilities": caps,
            "serverInfo": { "name": "airlock", "title": "Airlock gateway", "version": env!("CARGO_PKG_VERSION") },
            "instructions": format!(
                "Tools of several servers, each named <server>__<tool>. Servers: {}.",
                answers.iter().map(|(s, _)| s.as_str()).collect::<Vec<_>>().join(", ")
            ),
        }),
    )
}

/// A list from every upstream, merged; names namespaced where `name_key` says.
async fn list(
    gw: &Arc<McpGateway>,
    session: &Arc<Session>,
    m: &Message,
    id: &Id,
    member: &str,
    name_key: Option<&str>,
) -> Vec<u8> {
    let links = session.links();
    let answers = fan_out(session, &links, m, id).await;
    let mut items = Vec::new();
    for (server, answer) in answers {
        let Some(list) = answer
            .pointer(&format!("/result/{member}"))
            .and_then(Value::as_array)
        else {
            continue;
        };
        for item in list {
            let mut item = item.clone();
            if let Some(key) = name_key {
                if let Some(name) = item.get(key).and_then(Value::as_str) {
                    item[key] = Value::String(format!("{server}{SEPARATOR}{name}"));
                }
            }
            if member == "resources" {
                if let Some(uri) = item.get("uri").and_then(Value::as_str) {
                    gw.note_resource(session, uri, &server);
                }
            }
            items.push(item);
        }
    }
    result(id, json!({ member: items }))
}

/// Sends `m` (with the agent's id) to each link and collects the answers that succeeded.
async fn fan_out(
    session: &Arc<Session>,
    links: &[Arc<crate::link::Link>],
    m: &Message,
    id: &Id,
) -> Vec<(String, Value)> {
    let (tx, mut rx) = mpsc::channel(links.len().max(1) * 4);
    for link in links {
        session.expect(link.server(), id.clone(), None, tx.clone());
    }
    drop(tx);
    let sends = links.iter().map(|link| {
        let frame = m.raw.clone();
        async move {
            link.from_agent(vec![airlock_pipeline::Line::Frame(frame)])
                .await
        }
    });
    futures_util::future::join_all(sends).await;
    let mut answers = Vec::new();
    let deadline = tokio::time::Instant::now() + FAN_OUT_TIMEOUT;
    let mut left = links.len();
    while left > 0 {
        let Ok(Some(d)) = tokio::time::timeout_at(deadline, rx.recv()).await else {
            break;
        };
        if d.answers.is_none() {
            continue;
        }
        left -= 1;
        let Ok(v) = serde_json::from_slice::<Value>(&d.bytes) else {
            continue;
        };
        if v.get("result").is_some() {
            answers.push((d.from, v));
        }
    }
    for link in links {
        session.forget(link.server(), id);
    }
    answers
}

/// How long a fan-out waits for the slowest upstream.
const FAN_OUT_TIMEOUT: Duration = Duration::from_secs(30);

async fn broadcast(session: &Arc<Session>, m: &Message) {
    for link in session.links() {
        link.from_agent(vec![airlock_pipeline::Line::Frame(m.raw.clone())])
            .await;
    }
}

async fn notification(_gw: &Arc<McpGateway>, session: &Arc<Session>, m: &Message, method: &str) {
    if method == "notifications/cancelled" {
        let Some(request) = m.value.pointer("/params/requestId").and_then(Id::from_json) else {
            return;
        };
        for link in session.links() {
            if session.outbox_of(link.server(), &request).is_some() {
                link.from_agent(vec![airlock_pipeline::Line::Frame(m.raw.clone())])
                    .await;
            }
        }
        return;
    }
    broadcast(session, m).await;
}

/// The agent's answer to a request an upstream sent: back to that upstream, original id.
async fn answer_to_server(session: &Arc<Session>, m: &Message, id: &Id) {
    let Id::Str(tagged) = id else { return };
    let Some((server, original)) = tagged.split_once('/') else {
        return;
    };
    let Ok(original) = serde_json::from_str::<Value>(original) else {
        return;
    };
    let Some(link) = session.link(server) else {
        return;
    };
    let mut v = m.value.clone();
    v["id"] = original;
    let frame = crate::one_line(serde_json::to_vec(&v).unwrap_or_default());
    link.from_agent(vec![airlock_pipeline::Line::Frame(frame)])
        .await;
}

fn result(id: &Id, result: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({ "jsonrpc": "2.0", "id": id.to_json(), "result": result }))
        .unwrap_or_default()
}

fn error(id: &Id, code: i32, message: &str) -> Vec<u8> {
    airlock_protocol::error_response(Some(id), code, message, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_split_at_the_first_separator() {
        assert_eq!(split_name("corp__acl_set"), Some(("corp", "acl_set")));
        assert_eq!(split_name("corp__a__b"), Some(("corp", "a__b")));
        assert_eq!(split_name("__x"), None);
        assert_eq!(split_name("x__"), None);
        assert_eq!(split_name("plain"), None);
    }

    #[test]
    fn server_requests_are_tagged_with_their_server() {
        let out = outgoing(
            "corp",
            br#"{"jsonrpc":"2.0","id":7,"method":"sampling/createMessage"}"#,
        );
        let v: Value = serde_json::from_slice(&out).unwrap_or_default();
        assert_eq!(v["id"], "corp/7");
        let resp = br#"{"jsonrpc":"2.0","id":7,"result":{}}"#;
        assert_eq!(outgoing("corp", resp), resp.to_vec());
    }
}
