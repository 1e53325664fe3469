//! The config side of Airlock's control plane: `[breakers.<class>]` budgets,
//! `[breakers.defaults]` loop and fan-out detection, and the `token_sha256`
//! credential of `[humans.<id>]`. Raw types, model and validation live
//! together here so the section is one unit; `validate.rs` only calls in.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_spanned::Spanned;

use crate::raw::{RawAgent, RawServer, SpStr};

/// The reserved `[breakers.<name>]` that holds loop and fan-out detection.
pub const BREAKER_DEFAULTS_KEY: &str = "defaults";
/// Largest `window_secs` and loop-detection window: one week.
pub const MAX_BREAKER_WINDOW_SECS: u64 = 7 * 24 * 60 * 60;
/// Largest `max_calls`, `max_items` and loop-detection count.
pub const MAX_BREAKER_COUNT: u64 = 1_000_000_000;

// === model ===

/// `[breakers]`: budgets per agent × action class, and loop detection.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BreakersConfig {
    /// `[breakers.<class>]`, by class name.
    pub classes: BTreeMap<String, BreakerClass>,
    /// `[breakers.defaults]`.
    pub defaults: LoopDefaults,
}

/// `[breakers.<class>]`: one action class and its budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerClass {
    /// `server/tool` glob patterns; a call matches if any pattern does.
    pub tools: Vec<ToolPattern>,
    /// Top-level argument equality predicates; all must hold (empty: always).
    pub when: BTreeMap<String, ArgValue>,
    /// Agents the budget applies to; `None` means every agent.
    pub agents: Option<Vec<String>>,
    /// Calls allowed per sliding window (the next one trips).
    pub max_calls: u64,
    /// The sliding window, in seconds.
    pub window_secs: u64,
    /// Affected items allowed per window, if capped.
    pub max_items: Option<u64>,
    /// Where the number of affected items of one call is read; set iff `max_items` is.
    pub items: Option<ItemsSource>,
}

/// A `server/tool` pattern; `*` in either half matches any run of characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolPattern {
    /// Server-name glob.
    pub server: String,
    /// Tool-name glob.
    pub tool: String,
}

/// A value a `when` predicate compares a top-level argument with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgValue {
    /// `true` / `false`
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A string.
    Str(String),
}

impl ArgValue {
    /// Whether the JSON value `v` equals this one (same type, same value).
    pub fn matches(&self, v: &serde_json::Value) -> bool {
        match (self, v) {
            (ArgValue::Bool(x), serde_json::Value::Bool(y)) => x == y,
            (ArgValue::Int(x), serde_json::Value::Number(n)) => n.as_i64() == Some(*x),
            (ArgValue::Str(x), serde_json::Value::String(y)) => x == y,
            _ => false,
        }
    }
}

/// Where the number of items one call affects is read: a JSON pointer into the
/// call's arguments or its result. An array counts its elements, a
/// non-negative integer counts as itself, anything else (or nothing) as 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemsSource {
    /// `items = "args:/ids"`: known before the call, so checked before it.
    Args(String),
    /// `items = "result:/structuredContent/changed"`: known after the call.
    Result(String),
}

/// `[breakers.defaults]`: loop and fan-out detection, on unless disabled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoopDefaults {
    /// Whether the two default breakers run.
    pub enabled: bool,
    /// Distinct targets one agent may hit with one tool per fan-out window.
    pub fanout_distinct: u64,
    /// The fan-out window, in seconds.
    pub fanout_window_secs: u64,
    /// Top-level argument names whose values identify a call's target.
    pub fanout_keys: Vec<String>,
    /// How many times its own baseline rate an agent may reach.
    pub rate_factor: u64,
    /// The short window the current rate is measured over, in seconds.
    pub rate_window_secs: u64,
    /// The long window the baseline is measured over, in seconds (includes the short one).
    pub rate_baseline_secs: u64,
    /// Calls per short window that never trip, whatever the baseline.
    pub rate_min_calls: u64,
}

impl Default for LoopDefaults {
    fn default() -> Self {
        Self {
            enabled: true,
            fanout_distinct: 25,
            fanout_window_secs: 600,
            fanout_keys: ["id", "path", "repo", "target", "uri", "url"]
                .map(String::from)
                .to_vec(),
            rate_factor: 10,
            rate_window_secs: 60,
            rate_baseline_secs: 3600,
            rate_min_calls: 120,
        }
    }
}

// === impl ToolPattern ===

impl ToolPattern {
    /// Whether `server/tool` matches.
    pub fn matches(&self, server: &str, tool: &str) -> bool {
        glob(&self.server, server) && glob(&self.tool, tool)
    }
}

impl fmt::Display for ToolPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.server, self.tool)
    }
}

/// `*`-only glob, iterative with one backtrack point, over bytes: `*` is
/// ASCII, so byte matching equals character matching for UTF-8 names.
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if p.get(pi) == Some(&b'*') {
            star = Some((pi, ti));
            pi += 1;
        } else if p.get(pi) == t.get(ti) {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

// === raw ===

/// `[breakers]`: `defaults` is read as [`RawLoopDefaults`], every other key as
/// a class; a custom visitor keeps both strict (`deny_unknown_fields`) and spanned.
#[derive(Debug, Default)]
pub(crate) struct RawBreakers {
    pub(crate) defaults: Option<RawLoopDefaults>,
    pub(crate) classes: BTreeMap<SpStr, Spanned<RawBreaker>>,
}

impl<'de> Deserialize<'de> for RawBreakers {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawBreakers;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a [breakers] table of [breakers.<class>] tables")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawBreakers, A::Error> {
                let mut out = RawBreakers::default();
                while let Some(key) = map.next_key::<SpStr>()? {
                    if key.get_ref() == BREAKER_DEFAULTS_KEY {
                        out.defaults = Some(map.next_value()?);
                    } else {
                        let class = map.next_value()?;
                        out.classes.insert(key, class);
                    }
                }
                Ok(out)
            }
        }
        d.deserialize_map(V)
    }
}

/// `[breakers.<class>]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [breakers.<class>] table")]
pub(crate) struct RawBreaker {
    pub(crate) tools: Option<Spanned<Vec<SpStr>>>,
    pub(crate) when: Option<BTreeMap<SpStr, Spanned<toml::Value>>>,
    pub(crate) agents: Option<Vec<SpStr>>,
    pub(crate) max_calls: Option<Spanned<u64>>,
    pub(crate) window_secs: Option<Spanned<u64>>,
    pub(crate) max_items: Option<Spanned<u64>>,
    pub(crate) items: Option<SpStr>,
}

/// `[breakers.defaults]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [breakers.defaults] table")]
pub(crate) struct RawLoopDefaults {
    pub(crate) enabled: Option<bool>,
    pub(crate) fanout_distinct: Option<Spanned<u64>>,
    pub(crate) fanout_window_secs: Option<Spanned<u64>>,
    pub(crate) fanout_keys: Option<Vec<SpStr>>,
    pub(crate) rate_factor: Option<Spanned<u64>>,
    pub(crate) rate_window_secs: Option<Spanned<u64>>,
    pub(crate) rate_baseline_secs: Option<Spanned<u64>>,
    pub(crate) rate_min_calls: Option<Spanned<u64>>,
}

// === validation ===

/// Where complaints go: a byte span and a message (validate.rs's `Problems::at`).
pub(crate) type Report<'a> = dyn FnMut(Range<usize>, String) + 'a;

/// A human's `token_sha256`: 64 hex digits, stored lowercase.
pub(crate) fn token_sha256(raw: Option<&SpStr>, report: &mut Report<'_>) -> Option<String> {
    digest_of(raw, "human", report)
}

/// `token_sha256` of a human or an agent (`whose`): 64 hex digits, stored lowercase.
pub(crate) fn digest_of(
    raw: Option<&SpStr>,
    whose: &str,
    report: &mut Report<'_>,
) -> Option<String> {
    let v = raw?;
    let text = v.get_ref();
    if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        report(
            v.span(),
            format!(
                "token_sha256 must be 64 hexadecimal characters: the SHA-256 of the {whose}'s \
                 token (`airlock token new` prints a token and its line)"
            ),
        );
    }
    Some(text.to_ascii_lowercase())
}

/// Checks `[breakers]` and builds its model.
pub(crate) fn breakers(
    raw: &RawBreakers,
    agents: &BTreeMap<SpStr, RawAgent>,
    servers: &BTreeMap<SpStr, RawServer>,
    report: &mut Report<'_>,
) -> BreakersConfig {
    let classes = raw
        .classes
        .iter()
        .filter_map(|(name, class)| {
            if !crate::validate::is_valid_name(name.get_ref()) {
                report(
                    name.span(),
                    format!(
                        "invalid breaker name \"{}\": use 1 to 64 of A-Z a-z 0-9 _ . - starting \
                         with a letter or digit",
                        name.get_ref().escape_debug()
                    ),
                );
            }
            if name.get_ref().starts_with("loop.") {
                report(
                    name.span(),
                    "breaker names starting with \"loop.\" are reserved for [breakers.defaults]"
                        .into(),
                );
            }
            let built = breaker(class, agents, servers, report)?;
            Some((name.get_ref().clone(), built))
        })
        .collect();
    let defaults = raw
        .defaults
        .as_ref()
        .map(|d| loop_defaults(d, report))
        .unwrap_or_default();
    BreakersConfig { classes, defaults }
}

fn breaker(
    raw: &Spanned<RawBreaker>,
    agents: &BTreeMap<SpStr, RawAgent>,
    servers: &BTreeMap<SpStr, RawServer>,
    report: &mut Report<'_>,
) -> Option<BreakerClass> {
    let section = raw.span();
    let raw = raw.get_ref();
    let tools = tool_patterns(
        raw.tools.as_ref(),
        section.clone(),
        "a breaker",
        servers,
        report,
    )?;

    let when = when_predicates(raw.when.as_ref(), report);

    let agents = raw.agents.as_ref().map(|list| {
        for a in list {
            if !agents.contains_key(a.get_ref().as_str()) {
                report(
                    a.span(),
                    format!(
                        "agents: unknown agent \"{}\" (no [agents.{}] section)",
                        a.get_ref(),
                        a.get_ref()
                    ),
                );
            }
        }
        list.iter().map(|a| a.get_ref().clone()).collect()
    });

    let Some(max_calls) = &raw.max_calls else {
        report(
            section,
            "a breaker needs `max_calls`: the calls allowed per window".into(),
        );
        return None;
    };
    let max_calls = count(max_calls, "max_calls", report);
    let Some(window) = &raw.window_secs else {
        report(
            section,
            "a breaker needs `window_secs`: the sliding window in seconds".into(),
        );
        return None;
    };
    let window_secs = window_value(window, "window_secs", report);
    let max_items = raw
        .max_items
        .as_ref()
        .map(|m| count(m, "max_items", report));
    let items = raw.items.as_ref().and_then(|i| items_source(i, report));
    match (&raw.max_items, &raw.items) {
        (Some(m), None) => report(
            m.span(),
            "max_items needs `items`: where to count them, e.g. \"args:/ids\" or \
             \"result:/structuredContent/changed\""
                .into(),
        ),
        (None, Some(i)) => report(i.span(), "items without max_items has no effect".into()),
        _ => {}
    }
    Some(BreakerClass {
        tools,
        when,
        agents,
        max_calls,
        window_secs,
        max_items,
        items,
    })
}

/// `tools = ["server/tool", …]`, required and non-empty, for `what` (e.g. "a breaker").
pub(crate) fn tool_patterns(
    raw: Option<&Spanned<Vec<SpStr>>>,
    section: Range<usize>,
    what: &str,
    servers: &BTreeMap<SpStr, RawServer>,
    report: &mut Report<'_>,
) -> Option<Vec<ToolPattern>> {
    let Some(tools) = raw else {
        report(
            section,
            format!("{what} needs `tools`: a list of \"server/tool\" patterns"),
        );
        return None;
    };
    if tools.get_ref().is_empty() {
        report(
            tools.span(),
            "tools: at least one \"server/tool\" pattern is required".into(),
        );
    }
    Some(
        tools
            .get_ref()
            .iter()
            .filter_map(|t| tool_pattern(t, servers, report))
            .collect(),
    )
}

/// `when = { arg = value, … }`: top-level argument equality predicates.
pub(crate) fn when_predicates(
    raw: Option<&BTreeMap<SpStr, Spanned<toml::Value>>>,
    report: &mut Report<'_>,
) -> BTreeMap<String, ArgValue> {
    raw.into_iter()
        .flatten()
        .filter_map(|(key, value)| {
            let v = match value.get_ref() {
                toml::Value::Boolean(b) => ArgValue::Bool(*b),
                toml::Value::Integer(i) => ArgValue::Int(*i),
                toml::Value::String(s) => ArgValue::Str(s.clone()),
                _ => {
                    report(
                        value.span(),
                        format!(
                            "when.{}: only a boolean, an integer or a string can be compared",
                            key.get_ref()
                        ),
                    );
                    return None;
                }
            };
            Some((key.get_ref().clone(), v))
        })
        .collect()
}

pub(crate) fn tool_pattern(
    t: &SpStr,
    servers: &BTreeMap<SpStr, RawServer>,
    report: &mut Report<'_>,
) -> Option<ToolPattern> {
    let text = t.get_ref();
    let Some((server, tool)) = text.split_once('/') else {
        report(
            t.span(),
            format!("tools: \"{text}\" is not a \"server/tool\" pattern"),
        );
        return None;
    };
    if server.is_empty() || tool.is_empty() || tool.contains('/') {
        report(
            t.span(),
            format!("tools: \"{text}\" is not a \"server/tool\" pattern (one '/', both halves non-empty)"),
        );
        return None;
    }
    // A literal half must name something that exists: a typo would be a dead breaker.
    if !server.contains('*') {
        match servers.get(server) {
            None => {
                report(
                    t.span(),
                    format!("tools: unknown server \"{server}\" (no [servers.{server}] section)"),
                );
                return None;
            }
            Some(s) => {
                let known = s.tools.as_ref();
                if !tool.contains('*')
                    && known.is_some_and(|list| !list.iter().any(|k| k.get_ref() == tool))
                {
                    report(
                        t.span(),
                        format!(
                            "tools: server \"{server}\" lists no tool \"{tool}\" in its `tools`"
                        ),
                    );
                }
            }
        }
    }
    Some(ToolPattern {
        server: server.to_owned(),
        tool: tool.to_owned(),
    })
}

fn items_source(i: &SpStr, report: &mut Report<'_>) -> Option<ItemsSource> {
    let text = i.get_ref();
    let (source, pointer) = match text.split_once(':') {
        Some(("args", p)) => (ItemsSource::Args(p.to_owned()), p),
        Some(("result", p)) => (ItemsSource::Result(p.to_owned()), p),
        _ => {
            report(
                i.span(),
                format!("items: \"{text}\" must be \"args:<JSON pointer>\" or \"result:<JSON pointer>\""),
            );
            return None;
        }
    };
    if !(pointer.is_empty() || pointer.starts_with('/')) {
        report(
            i.span(),
            format!(
                "items: \"{pointer}\" is not a JSON pointer (it must be empty or start with '/')"
            ),
        );
        return None;
    }
    Some(source)
}

fn loop_defaults(raw: &RawLoopDefaults, report: &mut Report<'_>) -> LoopDefaults {
    let d = LoopDefaults::default();
    let fanout_keys = match &raw.fanout_keys {
        None => d.fanout_keys,
        Some(keys) => {
            for k in keys.iter().filter(|k| k.get_ref().is_empty()) {
                report(k.span(), "fanout_keys: a key must not be empty".into());
            }
            keys.iter().map(|k| k.get_ref().clone()).collect()
        }
    };
    let out = LoopDefaults {
        enabled: raw.enabled.unwrap_or(d.enabled),
        fanout_distinct: raw
            .fanout_distinct
            .as_ref()
            .map_or(d.fanout_distinct, |v| count(v, "fanout_distinct", report)),
        fanout_window_secs: raw
            .fanout_window_secs
            .as_ref()
            .map_or(d.fanout_window_secs, |v| {
                window_value(v, "fanout_window_secs", report)
            }),
        fanout_keys,
        rate_factor: raw
            .rate_factor
            .as_ref()
            .map_or(d.rate_factor, |v| count(v, "rate_factor", report)),
        rate_window_secs: raw
            .rate_window_secs
            .as_ref()
            .map_or(d.rate_window_secs, |v| {
                window_value(v, "rate_window_secs", report)
            }),
        rate_baseline_secs: raw
            .rate_baseline_secs
            .as_ref()
            .map_or(d.rate_baseline_secs, |v| {
                window_value(v, "rate_baseline_secs", report)
            }),
        rate_min_calls: raw
            .rate_min_calls
            .as_ref()
            .map_or(d.rate_min_calls, |v| count(v, "rate_min_calls", report)),
    };
    if out.rate_baseline_secs <= out.rate_window_secs {
        let span = raw
            .rate_baseline_secs
            .as_ref()
            .or(raw.rate_window_secs.as_ref())
            .map_or(0..0, Spanned::span);
        report(
            span,
            format!(
                "rate_baseline_secs ({}) must be longer than rate_window_secs ({})",
                out.rate_baseline_secs, out.rate_window_secs
            ),
        );
    }
    out
}

fn count(v: &Spanned<u64>, key: &str, report: &mut Report<'_>) -> u64 {
    let n = *v.get_ref();
    if !(1..=MAX_BREAKER_COUNT).contains(&n) {
        report(
            v.span(),
            format!("{key} = {n} is out of range: allowed 1 ..= {MAX_BREAKER_COUNT}"),
        );
    }
    n
}

fn window_value(v: &Spanned<u64>, key: &str, report: &mut Report<'_>) -> u64 {
    let n = *v.get_ref();
    if !(1..=MAX_BREAKER_WINDOW_SECS).contains(&n) {
        report(
            v.span(),
            format!(
                "{key} = {n} is out of range: allowed 1 ..= {MAX_BREAKER_WINDOW_SECS} (one week)"
            ),
        );
    }
    n
}

#[cfg(test)]
#[path = "control_tests.rs"]
mod tests;
