//! `[flow.labels.<label>]`: information-flow labels. A call that matches a label's rule and
//! succeeds gives its session (or its agent) that label; policies read the labels as
//! `context.session.labels`, so "an agent that has read confidential data cannot post in
//! public" is one `forbid`.
//!
//! ```toml
//! [flow.labels.confidential]
//! tools = ["corp/repo_read"]                  # server/tool globs
//! resources = ["corp/file:///restricted/*"]   # server/URI globs (optional)
//! prompts = ["corp/incident-*"]              # server/prompt globs (optional)
//! when = { }                                  # optional argument predicates
//! result = "/structuredContent/restricted"    # optional: only if this is true in the result
//! scope = "agent"                             # "agent" (default: every later session) or "session"
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_spanned::Spanned;

use crate::control::{tool_patterns, when_predicates, ArgValue, Report, ToolPattern};
use crate::raw::{RawServer, SpStr};

/// `[flow]`: label rules by label name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FlowConfig {
    pub labels: BTreeMap<String, LabelRule>,
}

/// How long a label sticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelScope {
    /// Every later call of the agent, in any session (survives restarts).
    Agent,
    /// The rest of this session only.
    Session,
}

/// When a call gives its session a label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelRule {
    pub tools: Vec<ToolPattern>,
    /// `resources`: server/URI globs (the URI half may hold `/`).
    pub resources: Vec<ToolPattern>,
    /// `prompts`: server/prompt-name globs.
    pub prompts: Vec<ToolPattern>,
    pub when: BTreeMap<String, ArgValue>,
    /// A JSON pointer into the result that must be `true`; `None`: every successful result.
    pub result: Option<String>,
    pub scope: LabelScope,
}

/// `[flow]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [flow] table")]
pub(crate) struct RawFlow {
    #[serde(default)]
    pub(crate) labels: BTreeMap<SpStr, Spanned<RawLabel>>,
}

/// `[flow.labels.<label>]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [flow.labels.<label>] table")]
pub(crate) struct RawLabel {
    pub(crate) tools: Option<Spanned<Vec<SpStr>>>,
    pub(crate) resources: Option<Spanned<Vec<SpStr>>>,
    pub(crate) prompts: Option<Spanned<Vec<SpStr>>>,
    pub(crate) when: Option<BTreeMap<SpStr, Spanned<toml::Value>>>,
    pub(crate) result: Option<SpStr>,
    pub(crate) scope: Option<SpStr>,
}

/// Checks `[flow]` and builds its model.
pub(crate) fn flow(
    raw: &RawFlow,
    servers: &BTreeMap<SpStr, RawServer>,
    report: &mut Report<'_>,
) -> FlowConfig {
    let mut labels = BTreeMap::new();
    for (name, rule) in &raw.labels {
        if !crate::validate::is_valid_name(name.get_ref()) {
            report(
                name.span(),
                format!(
                    "invalid label name \"{}\": use 1 to 64 of A-Z a-z 0-9 _ . - starting with a \
                     letter or digit",
                    name.get_ref().escape_debug()
                ),
            );
            continue;
        }
        let section = rule.span();
        let rule = rule.get_ref();
        let resources = name_patterns(rule.resources.as_ref(), "resources", servers, report);
        let prompts = name_patterns(rule.prompts.as_ref(), "prompts", servers, report);
        // `tools` is required unless the rule names resources or prompts instead.
        let tools = if rule.tools.is_none() && (!resources.is_empty() || !prompts.is_empty()) {
            Vec::new()
        } else {
            let Some(tools) =
                tool_patterns(rule.tools.as_ref(), section, "a label", servers, report)
            else {
                continue;
            };
            tools
        };
        let when = when_predicates(rule.when.as_ref(), report);
        let result = rule.result.as_ref().and_then(|r| {
            let text = r.get_ref();
            if text.starts_with('/') {
                Some(text.clone())
            } else {
                report(
                    r.span(),
                    "result must be a JSON pointer into the result, e.g. \
                     \"/structuredContent/restricted\""
                        .into(),
                );
                None
            }
        });
        let scope = match rule.scope.as_ref().map(|s| (s, s.get_ref().as_str())) {
            None | Some((_, "agent")) => LabelScope::Agent,
            Some((_, "session")) => LabelScope::Session,
            Some((s, other)) => {
                report(
                    s.span(),
                    format!("scope must be \"agent\" or \"session\", not \"{other}\""),
                );
                LabelScope::Agent
            }
        };
        labels.insert(
            name.get_ref().clone(),
            LabelRule {
                tools,
                resources,
                prompts,
                when,
                result,
                scope,
            },
        );
    }
    FlowConfig { labels }
}

/// `resources = [...]` / `prompts = [...]`: "server/name" globs, where the name (a URI, say) may
/// itself hold `/`. A literal server must be declared.
fn name_patterns(
    raw: Option<&Spanned<Vec<SpStr>>>,
    key: &str,
    servers: &BTreeMap<SpStr, RawServer>,
    report: &mut Report<'_>,
) -> Vec<ToolPattern> {
    raw.map(|r| r.get_ref().iter())
        .into_iter()
        .flatten()
        .filter_map(|t| {
            let text = t.get_ref();
            let Some((server, name)) = text
                .split_once('/')
                .filter(|(s, n)| !s.is_empty() && !n.is_empty())
            else {
                report(
                    t.span(),
                    format!("{key}: \"{text}\" is not a \"server/name\" pattern"),
                );
                return None;
            };
            if !server.contains('*') && !servers.contains_key(server) {
                report(
                    t.span(),
                    format!("{key}: unknown server \"{server}\" (no [servers.{server}] section)"),
                );
                return None;
            }
            Some(ToolPattern {
                server: server.to_owned(),
                tool: name.to_owned(),
            })
        })
        .collect()
}
