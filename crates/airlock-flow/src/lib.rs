//! `airlock-flow`: information-flow control by labels.
//!
//! A `[flow.labels.<label>]` rule names calls (server/tool globs, argument predicates, and
//! optionally a JSON pointer that must be `true` in the result) whose success gives the agent
//! (or just the session) a label. The gateway asks [`FlowRules::labels_for`] about every
//! successful result *before* the result reaches the agent, records new labels in the
//! [`LabelStore`] (the audit database file, so they survive restarts) and an audit record
//! ([`label_record`]), and passes the labels to policy as `context.session.labels`. So an
//! agent never holds data that a label marks without carrying the label, and a `forbid` on
//! public sinks for labelled sessions stops exfiltration.

use std::path::Path;

use airlock_audit::{NewRecord, RecordKind};
use airlock_config::{Config, LabelRule, LabelScope};
use airlock_sqlite::Durability;
use rusqlite::{params, Connection};
use serde_json::{json, Value};

/// A store failure. On the call path it means deny.
#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    #[error("label store {0}")]
    Open(#[from] airlock_sqlite::OpenError),
    #[error("label store {path}: cannot {what}: {source}")]
    Sqlite {
        path: String,
        what: &'static str,
        #[source]
        source: rusqlite::Error,
    },
}

/// What a rule's pattern names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Tool,
    Resource,
    Prompt,
}

/// The config's label rules.
#[derive(Debug, Clone, Default)]
pub struct FlowRules {
    rules: Vec<(String, LabelRule)>,
}

impl FlowRules {
    pub fn from_config(config: &Config) -> FlowRules {
        FlowRules {
            rules: config
                .flow
                .labels
                .iter()
                .map(|(n, r)| (n.clone(), r.clone()))
                .collect(),
        }
    }

    /// No rules: nothing is ever labelled.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether some rule could label an answer about `server/name` (so the call's arguments
    /// are worth keeping until the answer comes back).
    pub fn may_label(&self, target: Target, server: &str, name: &str) -> bool {
        self.rules
            .iter()
            .any(|(_, r)| names(r, target).iter().any(|p| p.matches(server, name)))
    }

    /// The labels an answer about `server/name`, called with `args`, gives. `data` is the
    /// answer's result, or an error answer's `data` (`is_error`): a rule's `result` pointer
    /// cannot be read on an error, so there the rule holds (fail closed).
    pub fn labels_for(
        &self,
        target: Target,
        server: &str,
        name: &str,
        args: &Value,
        data: &Value,
        is_error: bool,
    ) -> Vec<(String, LabelScope)> {
        self.rules
            .iter()
            .filter(|(_, r)| {
                names(r, target).iter().any(|p| p.matches(server, name))
                    && r.when
                        .iter()
                        .all(|(k, v)| args.get(k).is_some_and(|a| v.matches(a)))
                    && (is_error
                        || r.result
                            .as_ref()
                            .is_none_or(|p| data.pointer(p) == Some(&Value::Bool(true))))
            })
            .map(|(name, r)| (name.clone(), r.scope))
            .collect()
    }
}

fn names(rule: &LabelRule, target: Target) -> &[airlock_config::ToolPattern] {
    match target {
        Target::Tool => &rule.tools,
        Target::Resource => &rule.resources,
        Target::Prompt => &rule.prompts,
    }
}

/// Labels per agent (and per session) in the audit database file.
#[derive(Debug)]
pub struct LabelStore {
    conn: Connection,
    path: String,
}

impl LabelStore {
    pub fn open(db: &Path) -> Result<LabelStore, FlowError> {
        let path = db.display().to_string();
        let err = |what| {
            let path = path.clone();
            move |source| FlowError::Sqlite { path, what, source }
        };
        // FULL, as ever: a label lost to a power loss would let the agent read what it forbids,
        // and labels are written rarely.
        let conn = airlock_sqlite::open_wal(db, Durability::PowerLoss)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS flow_labels (
                agent TEXT NOT NULL,
                session TEXT NOT NULL,
                label TEXT NOT NULL,
                time_ns INTEGER NOT NULL,
                PRIMARY KEY (agent, session, label)
            );",
        )
        .map_err(err("create the label table"))?;
        Ok(LabelStore { conn, path })
    }

    /// The labels `agent` carries in `session`: its agent-wide ones and the session's own.
    pub fn labels(&self, agent: &str, session: &str) -> Result<Vec<String>, FlowError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT DISTINCT label FROM flow_labels WHERE agent = ?1 \
                 AND (session = '' OR session = ?2) ORDER BY label",
            )
            .map_err(self.err("prepare the label query"))?;
        let rows = stmt
            .query_map(params![agent, session], |r| r.get::<_, String>(0))
            .map_err(self.err("read labels"))?;
        rows.collect::<Result<_, _>>()
            .map_err(self.err("read a label"))
    }

    /// Gives `agent` (or only its `session`, by `scope`) `label`; returns whether it is new.
    pub fn add(
        &mut self,
        agent: &str,
        session: &str,
        label: &str,
        scope: LabelScope,
    ) -> Result<bool, FlowError> {
        let session = match scope {
            LabelScope::Agent => "",
            LabelScope::Session => session,
        };
        let n = self
            .conn
            .execute(
                "INSERT OR IGNORE INTO flow_labels (agent, session, label, time_ns) \
                 VALUES (?1, ?2, ?3, ?4)",
                params![agent, session, label, airlock_audit::now_unix_ns()],
            )
            .map_err(self.err("add a label"))?;
        Ok(n == 1)
    }

    fn err(&self, what: &'static str) -> impl FnOnce(rusqlite::Error) -> FlowError {
        let path = self.path.clone();
        move |source| FlowError::Sqlite { path, what, source }
    }
}

/// The audit record of `agent` gaining `label` from a call of `server/tool`.
pub fn label_record(
    agent: &str,
    session: &str,
    server: &str,
    tool: &str,
    label: &str,
    scope: LabelScope,
) -> NewRecord {
    let mut r = NewRecord::now(RecordKind::Flow);
    r.agent = Some(agent.to_owned());
    r.session = Some(session.to_owned());
    r.server = Some(server.to_owned());
    r.target = Some(tool.to_owned());
    r.detail = Some(json!({
        "label": label,
        "scope": match scope { LabelScope::Agent => "agent", LabelScope::Session => "session" },
    }));
    r
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn rules() -> FlowRules {
        let text = r#"
[policy]
files = ["p"]
[servers.corp]
[flow.labels.confidential]
tools = ["corp/repo_*"]
result = "/structuredContent/restricted"
[flow.labels.mail]
tools = ["corp/mail_read"]
when = { folder = "inbox" }
scope = "session"
"#;
        FlowRules::from_config(&airlock_config::parse(text, Path::new("a.toml")).unwrap())
    }

    #[test]
    fn rules_match_tools_arguments_and_the_result() {
        let r = rules();
        let restricted = json!({"structuredContent": {"restricted": true}});
        let open = json!({"structuredContent": {"restricted": false}});
        assert_eq!(
            r.labels_for(
                Target::Tool,
                "corp",
                "repo_read",
                &json!({}),
                &restricted,
                false
            ),
            [("confidential".to_owned(), LabelScope::Agent)]
        );
        assert!(r
            .labels_for(Target::Tool, "corp", "repo_read", &json!({}), &open, false)
            .is_empty());
        assert!(r
            .labels_for(
                Target::Tool,
                "corp",
                "repo_read",
                &json!({}),
                &json!({}),
                false
            )
            .is_empty());
        assert!(r
            .labels_for(
                Target::Tool,
                "other",
                "repo_read",
                &json!({}),
                &restricted,
                false
            )
            .is_empty());
        assert_eq!(
            r.labels_for(
                Target::Tool,
                "corp",
                "mail_read",
                &json!({"folder": "inbox"}),
                &json!({}),
                false
            ),
            [("mail".to_owned(), LabelScope::Session)]
        );
        assert!(r
            .labels_for(
                Target::Tool,
                "corp",
                "mail_read",
                &json!({"folder": "sent"}),
                &json!({}),
                false
            )
            .is_empty());
        assert!(
            r.may_label(Target::Tool, "corp", "repo_list")
                && !r.may_label(Target::Tool, "corp", "forum_post")
        );
        // An error answer's data cannot be read with a `result` pointer: the rule holds.
        assert_eq!(
            r.labels_for(
                Target::Tool,
                "corp",
                "repo_read",
                &json!({}),
                &json!("x"),
                true
            ),
            [("confidential".to_owned(), LabelScope::Agent)]
        );
        assert!(!r.may_label(Target::Resource, "corp", "repo_read"));
    }

    #[test]
    fn labels_stick_to_the_agent_or_the_session_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("a.db");
        let mut s = LabelStore::open(&db).unwrap();
        assert!(s
            .add("bot", "s1", "confidential", LabelScope::Agent)
            .unwrap());
        assert!(!s
            .add("bot", "s1", "confidential", LabelScope::Agent)
            .unwrap());
        assert!(s.add("bot", "s1", "mail", LabelScope::Session).unwrap());
        drop(s);
        let s = LabelStore::open(&db).unwrap();
        assert_eq!(s.labels("bot", "s1").unwrap(), ["confidential", "mail"]);
        assert_eq!(s.labels("bot", "s2").unwrap(), ["confidential"]);
        assert!(s.labels("other", "s1").unwrap().is_empty());
    }
}
