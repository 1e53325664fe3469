//! Kill targets, kill rows, and the pure "is this call killed?" match.

use std::fmt;

use serde::Serialize;

use crate::error::ControlError;

/// Who or what issued a kill: what a kill *is*, whatever its reason says. Stored in the kill
/// file's `origin` column; serializes as `{"kind": "human"}`, `{"kind": "airlock"}` or
/// `{"kind": "breaker", "class": "acl-changes"}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum KillOrigin {
    /// A human's kill (`airlock kill`, `airlock serve`).
    Human,
    /// A breaker's pause of an agent whose budget of `class` is used up.
    Breaker {
        /// The breaker class.
        class: String,
    },
    /// Airlock's own stop when it cannot tell what is killed (the kill state cannot be read).
    Airlock,
}

const BREAKER_ORIGIN: &str = "breaker:";

impl KillOrigin {
    /// The `origin` column: `human`, `airlock` or `breaker:<class>`.
    pub fn to_column(&self) -> String {
        match self {
            KillOrigin::Human => "human".to_owned(),
            KillOrigin::Airlock => "airlock".to_owned(),
            KillOrigin::Breaker { class } => format!("{BREAKER_ORIGIN}{class}"),
        }
    }

    /// The inverse of [`KillOrigin::to_column`]; `None` for text no build writes.
    pub fn from_column(text: &str) -> Option<KillOrigin> {
        match text {
            "human" => Some(KillOrigin::Human),
            "airlock" => Some(KillOrigin::Airlock),
            _ => text
                .strip_prefix(BREAKER_ORIGIN)
                .filter(|class| !class.is_empty())
                .map(|class| KillOrigin::Breaker {
                    class: class.to_owned(),
                }),
        }
    }
}

/// What a kill stops. Serializes as `{"scope": "agent", "target": "bot"}`,
/// the same two values as the store's columns.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KillTarget {
    /// Every call of one agent, in every session.
    Agent(String),
    /// Every call of one session (`airlock run --session`).
    Session(String),
    /// One tool, for every agent (hidden from `tools/list` and refused).
    Tool {
        /// Server name.
        server: String,
        /// Tool name.
        tool: String,
    },
    /// Everything done on behalf of one human, by any agent (their access revoked).
    Human(String),
    /// Everything.
    All,
}

impl KillTarget {
    /// The `scope` column: `agent`, `session`, `tool`, `human` or `all`.
    pub fn scope(&self) -> &'static str {
        match self {
            KillTarget::Agent(_) => "agent",
            KillTarget::Human(_) => "human",
            KillTarget::Session(_) => "session",
            KillTarget::Tool { .. } => "tool",
            KillTarget::All => "all",
        }
    }

    /// The `target` column: the id, `server/tool`, or `*` for all.
    pub fn target(&self) -> String {
        match self {
            KillTarget::Agent(id) | KillTarget::Session(id) | KillTarget::Human(id) => id.clone(),
            KillTarget::Tool { server, tool } => format!("{server}/{tool}"),
            KillTarget::All => "*".to_owned(),
        }
    }

    /// The inverse of [`KillTarget::scope`] and [`KillTarget::target`].
    pub fn from_columns(scope: &str, target: &str) -> Result<KillTarget, ControlError> {
        let t = match scope {
            "agent" => KillTarget::Agent(target.to_owned()),
            "session" => KillTarget::Session(target.to_owned()),
            "human" => KillTarget::Human(target.to_owned()),
            "tool" => KillTarget::tool(target)?,
            "all" => KillTarget::All,
            other => {
                return Err(ControlError::BadTarget(format!(
                    "unknown scope \"{other}\""
                )))
            }
        };
        Ok(t)
    }

    /// `SERVER/TOOL` as typed on the command line.
    pub fn tool(spec: &str) -> Result<KillTarget, ControlError> {
        match spec.split_once('/') {
            Some((server, tool)) if !server.is_empty() && !tool.is_empty() => {
                Ok(KillTarget::Tool {
                    server: server.to_owned(),
                    tool: tool.to_owned(),
                })
            }
            _ => Err(ControlError::BadTarget(format!(
                "\"{spec}\" is not SERVER/TOOL"
            ))),
        }
    }
}

impl Serialize for KillTarget {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("KillTarget", 2)?;
        st.serialize_field("scope", self.scope())?;
        st.serialize_field("target", &self.target())?;
        st.end()
    }
}

impl fmt::Display for KillTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KillTarget::All => f.write_str("everything"),
            other => write!(f, "{} {}", other.scope(), other.target()),
        }
    }
}

/// One row of the `kills` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Kill {
    /// Row id: increases with every kill.
    pub id: i64,
    /// What is stopped.
    pub target: KillTarget,
    /// Why, for the agent's error and the audit trail (`breaker:<class>` for a pause). Words:
    /// what the kill is, is [`Kill::origin`].
    pub reason: String,
    /// The human who killed (or `airlock` for a breaker pause).
    pub by: String,
    /// Who or what issued it.
    pub origin: KillOrigin,
    /// When, in ns since the Unix epoch.
    pub created_ns: i64,
    /// When it was resumed; `None` while in force.
    pub resumed_ns: Option<i64>,
    /// Who resumed it.
    pub resumed_by: Option<String>,
}

impl Kill {
    /// The breaker class if this kill is a breaker pause.
    pub fn breaker_class(&self) -> Option<&str> {
        match &self.origin {
            KillOrigin::Breaker { class } => Some(class),
            KillOrigin::Human | KillOrigin::Airlock => None,
        }
    }

    /// Whether this kill is a breaker's pause (not a human's kill).
    pub fn is_pause(&self) -> bool {
        self.breaker_class().is_some()
    }
}

/// The first (oldest) kill in `kills` that stops a call of `agent` in
/// `session` to `server`/`tool`. Pass `None` for what the message does not
/// have (a `tools/list` has no tool; a session-less gateway has no session).
/// A tool kill matches only when both `server` and `tool` are given.
pub fn matching<'a>(
    kills: &'a [Kill],
    agent: &str,
    session: Option<&str>,
    server: Option<&str>,
    tool: Option<&str>,
) -> Option<&'a Kill> {
    kills.iter().find(|k| {
        k.resumed_ns.is_none()
            && match &k.target {
                KillTarget::All => true,
                KillTarget::Agent(a) => a == agent,
                KillTarget::Session(s) => session == Some(s.as_str()),
                // Matched by [`matching_human`]: this function does not know the human.
                KillTarget::Human(_) => false,
                KillTarget::Tool {
                    server: ks,
                    tool: kt,
                } => server == Some(ks.as_str()) && tool == Some(kt.as_str()),
            }
    })
}

/// The first kill in force that stops everything done on behalf of `human`.
pub fn matching_human<'a>(kills: &'a [Kill], human: &str) -> Option<&'a Kill> {
    kills
        .iter()
        .find(|k| k.resumed_ns.is_none() && matches!(&k.target, KillTarget::Human(h) if h == human))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn kill(id: i64, target: KillTarget) -> Kill {
        Kill {
            id,
            target,
            reason: "r".into(),
            by: "alice".into(),
            origin: KillOrigin::Human,
            created_ns: id,
            resumed_ns: None,
            resumed_by: None,
        }
    }

    #[test]
    fn a_human_kill_matches_by_the_human_only() {
        let kills = vec![kill(1, KillTarget::Human("alice".into()))];
        assert_eq!(matching_human(&kills, "alice").map(|k| k.id), Some(1));
        assert!(matching_human(&kills, "bob").is_none());
        // Agent-side matching knows no human: it never takes a human kill for its own.
        assert!(matching(&kills, "alice", Some("alice"), None, None).is_none());
        let mut resumed = kills.clone();
        resumed[0].resumed_ns = Some(5);
        assert!(matching_human(&resumed, "alice").is_none());
    }

    #[test]
    fn columns_round_trip() {
        for t in [
            KillTarget::Human("alice".into()),
            KillTarget::Agent("bot".into()),
            KillTarget::Session("s-1".into()),
            KillTarget::tool("corp/acl_set").unwrap(),
            KillTarget::All,
        ] {
            assert_eq!(KillTarget::from_columns(t.scope(), &t.target()).unwrap(), t);
        }
        assert!(KillTarget::tool("corp").is_err());
        assert!(KillTarget::tool("/x").is_err());
        assert!(KillTarget::from_columns("planet", "x").is_err());
    }

    #[test]
    fn serializes_as_scope_and_target() {
        let v = serde_json::to_value(KillTarget::tool("corp/acl_set").unwrap()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"scope": "tool", "target": "corp/acl_set"})
        );
        let v = serde_json::to_value(KillTarget::Agent("bot".into())).unwrap();
        assert_eq!(v, serde_json::json!({"scope": "agent", "target": "bot"}));
    }

    #[test]
    fn matching_by_each_scope() {
        let kills = vec![
            kill(1, KillTarget::Agent("bot".into())),
            kill(2, KillTarget::Session("s1".into())),
            kill(3, KillTarget::tool("corp/acl_set").unwrap()),
        ];
        let m = |a, s, sv, t| matching(&kills, a, s, sv, t).map(|k| k.id);
        assert_eq!(m("bot", None, None, None), Some(1));
        assert_eq!(m("other", Some("s1"), None, None), Some(2));
        assert_eq!(m("other", Some("s2"), None, None), None);
        assert_eq!(m("other", None, Some("corp"), Some("acl_set")), Some(3));
        assert_eq!(m("other", None, Some("corp"), Some("forum_post")), None);
        assert_eq!(m("other", None, None, Some("acl_set")), None);
        assert_eq!(m("other", None, Some("other"), Some("acl_set")), None);
    }

    #[test]
    fn all_matches_everything_and_resumed_kills_do_not() {
        let mut kills = vec![kill(1, KillTarget::All)];
        assert_eq!(
            matching(&kills, "x", None, None, None).map(|k| k.id),
            Some(1)
        );
        kills[0].resumed_ns = Some(5);
        assert!(matching(&kills, "x", None, None, None).is_none());
    }

    #[test]
    fn a_pause_is_told_by_its_origin_not_its_reason() {
        let mut k = kill(1, KillTarget::Agent("bot".into()));
        k.reason = "breaker:acl".into();
        assert_eq!((k.breaker_class(), k.is_pause()), (None, false));
        k.origin = KillOrigin::Breaker {
            class: "acl".into(),
        };
        k.reason = "anything".into();
        assert_eq!((k.breaker_class(), k.is_pause()), (Some("acl"), true));
    }

    #[test]
    fn origins_round_trip_through_their_column_and_serialize_tagged() {
        for (origin, column, json) in [
            (
                KillOrigin::Human,
                "human",
                serde_json::json!({"kind": "human"}),
            ),
            (
                KillOrigin::Airlock,
                "airlock",
                serde_json::json!({"kind": "airlock"}),
            ),
            (
                KillOrigin::Breaker {
                    class: "loop.fanout".into(),
                },
                "breaker:loop.fanout",
                serde_json::json!({"kind": "breaker", "class": "loop.fanout"}),
            ),
        ] {
            assert_eq!(origin.to_column(), column);
            assert_eq!(KillOrigin::from_column(column), Some(origin.clone()));
            assert_eq!(serde_json::to_value(&origin).unwrap(), json);
        }
        for bad in ["", "Human", "breaker:", "robot"] {
            assert_eq!(KillOrigin::from_column(bad), None, "{bad:?}");
        }
    }
}
