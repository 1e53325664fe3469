//! The in-memory view of `breaker_events` that every check reads.
//!
//! Rows reach it in two ways: this process's own writes are applied as they
//! are made, and other processes' rows are read back. Budget rows come from
//! the agent's journal, read up to its end under the agent's lock before every
//! budget decision (see `crate::journal`), so they include every counted call
//! of every process; loop-detection rows come from `breaker_events` by a delta
//! query (`id > last_id AND origin != me`, see `ControlStore::refresh`) at most
//! every [`crate::store::LOOP_REFRESH`].

use std::collections::{HashMap, VecDeque};

/// `class` of a rate event (one row per agent per flush bucket).
pub(crate) const RATE_CLASS: &str = "!rate";
/// `class` of a reset marker: counters of `agent` (or `*`) before it are ignored.
pub(crate) const RESET_CLASS: &str = "!reset";
/// `class` prefix of a fan-out event: `!fanout:server/tool`, keyed by target digest.
pub(crate) const FANOUT_PREFIX: &str = "!fanout:";
/// `agent` of a reset that applies to every agent.
pub(crate) const ALL_AGENTS: &str = "*";

/// One `breaker_events` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EventRow {
    pub(crate) agent: String,
    pub(crate) class: String,
    pub(crate) time_ns: i64,
    pub(crate) calls: u64,
    pub(crate) items: u64,
    pub(crate) key: Option<String>,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Event {
    pub(crate) time_ns: i64,
    pub(crate) calls: u64,
    pub(crate) items: u64,
}

/// Calls and items of one agent × class inside a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Usage {
    pub(crate) calls: u64,
    pub(crate) items: u64,
}

#[derive(Debug, Default)]
pub(crate) struct EventCache {
    /// Highest `id` of another process's row applied.
    pub(crate) last_id: i64,
    /// When the delta query last ran.
    pub(crate) refreshed: Option<std::time::Instant>,
    /// Width of a rate bucket: rate events closer than this are merged.
    pub(crate) rate_bucket_ns: i64,
    budgets: HashMap<String, HashMap<String, VecDeque<Event>>>,
    rate: HashMap<String, VecDeque<Event>>,
    fanout: HashMap<String, HashMap<String, HashMap<String, i64>>>,
    resets: HashMap<String, i64>,
}

impl EventCache {
    pub(crate) fn apply(&mut self, row: &EventRow) {
        let agent = row.agent.as_str();
        let ev = Event {
            time_ns: row.time_ns,
            calls: row.calls,
            items: row.items,
        };
        if row.class == RESET_CLASS {
            let r = self.resets.entry(row.agent.clone()).or_insert(i64::MIN);
            *r = (*r).max(row.time_ns);
        } else if row.class == RATE_CLASS {
            // Kept per bucket (its start time), so the rate check sums few entries
            // however many calls there were, and late rows merge in place.
            let q = self.rate.entry(row.agent.clone()).or_default();
            let width = self.rate_bucket_ns.max(1);
            let start = ev.time_ns - ev.time_ns.rem_euclid(width);
            let at = q.partition_point(|e| e.time_ns < start);
            match q.get_mut(at) {
                Some(b) if b.time_ns == start => b.calls += ev.calls,
                _ => q.insert(
                    at,
                    Event {
                        time_ns: start,
                        ..ev
                    },
                ),
            }
        } else if row.class.starts_with(FANOUT_PREFIX) {
            if let Some(key) = &row.key {
                let last = self
                    .fanout
                    .entry(row.agent.clone())
                    .or_default()
                    .entry(row.class.clone())
                    .or_default()
                    .entry(key.clone())
                    .or_insert(i64::MIN);
                *last = (*last).max(row.time_ns);
            }
        } else {
            let q = self
                .budgets
                .entry(agent.to_owned())
                .or_default()
                .entry(row.class.clone())
                .or_default();
            insert_sorted(q, ev);
        }
    }

    /// Events before this time do not count for `agent` (a human resumed it).
    pub(crate) fn reset_ns(&self, agent: &str) -> i64 {
        let own = self.resets.get(agent).copied().unwrap_or(i64::MIN);
        let all = self.resets.get(ALL_AGENTS).copied().unwrap_or(i64::MIN);
        own.max(all)
    }

    /// Budget events of `agent` × `class` after `from_ns` (exclusive), oldest first.
    pub(crate) fn budget_events(
        &self,
        agent: &str,
        class: &str,
        from_ns: i64,
    ) -> impl Iterator<Item = &Event> {
        self.budgets
            .get(agent)
            .and_then(|m| m.get(class))
            .into_iter()
            .flat_map(move |q| {
                let start = q.partition_point(|e| e.time_ns <= from_ns);
                q.range(start..)
            })
    }

    pub(crate) fn budget_usage(&self, agent: &str, class: &str, from_ns: i64) -> Usage {
        self.budget_events(agent, class, from_ns)
            .fold(Usage::default(), |u, e| Usage {
                calls: u.calls + e.calls,
                items: u.items + e.items,
            })
    }

    /// Forgets `agent`'s budget events (its journal is about to be read afresh).
    pub(crate) fn forget_budgets(&mut self, agent: &str) {
        self.budgets.remove(agent);
    }

    /// `agent`'s budget events after `from_ns`, as rows (to rewrite its journal).
    pub(crate) fn budget_rows(&self, agent: &str, from_ns: i64) -> Vec<EventRow> {
        let mut rows: Vec<EventRow> = self
            .budgets
            .get(agent)
            .into_iter()
            .flat_map(|m| m.iter())
            .flat_map(|(class, q)| {
                q.iter()
                    .filter(move |e| e.time_ns > from_ns)
                    .map(|e| EventRow {
                        agent: agent.to_owned(),
                        class: class.clone(),
                        time_ns: e.time_ns,
                        calls: e.calls,
                        items: e.items,
                        key: None,
                    })
            })
            .collect();
        rows.sort_by_key(|r| r.time_ns);
        rows
    }

    /// Agents with any budget event for `class`.
    pub(crate) fn budget_agents(&self, class: &str) -> Vec<&str> {
        let mut v: Vec<&str> = self
            .budgets
            .iter()
            .filter(|(_, m)| m.get(class).is_some_and(|q| !q.is_empty()))
            .map(|(a, _)| a.as_str())
            .collect();
        v.sort_unstable();
        v
    }

    /// Rate events of `agent` after `from_ns` (exclusive), oldest first.
    pub(crate) fn rate_events(&self, agent: &str, from_ns: i64) -> impl Iterator<Item = &Event> {
        self.rate.get(agent).into_iter().flat_map(move |q| {
            let start = q.partition_point(|e| e.time_ns <= from_ns);
            q.range(start..)
        })
    }

    /// Distinct keys of `agent` × fan-out `class` seen after `from_ns`, whether
    /// `key` is one of them, and the oldest such sighting.
    pub(crate) fn fanout_state(
        &self,
        agent: &str,
        class: &str,
        from_ns: i64,
        key: &str,
    ) -> (u64, bool, Option<i64>) {
        let Some(keys) = self.fanout.get(agent).and_then(|m| m.get(class)) else {
            return (0, false, None);
        };
        let mut distinct = 0u64;
        let mut oldest: Option<i64> = None;
        let mut seen = false;
        for (k, &t) in keys {
            if t > from_ns {
                distinct += 1;
                oldest = Some(oldest.map_or(t, |o| o.min(t)));
                seen |= k == key;
            }
        }
        (distinct, seen, oldest)
    }

    /// Forgets events at or before `cutoff_ns`: they are outside every window.
    pub(crate) fn prune(&mut self, cutoff_ns: i64) {
        for m in self.budgets.values_mut() {
            for q in m.values_mut() {
                drop_front(q, cutoff_ns);
            }
            m.retain(|_, q| !q.is_empty());
        }
        self.budgets.retain(|_, m| !m.is_empty());
        for q in self.rate.values_mut() {
            drop_front(q, cutoff_ns);
        }
        self.rate.retain(|_, q| !q.is_empty());
        for m in self.fanout.values_mut() {
            for keys in m.values_mut() {
                keys.retain(|_, t| *t > cutoff_ns);
            }
            m.retain(|_, k| !k.is_empty());
        }
        self.fanout.retain(|_, m| !m.is_empty());
    }
}

/// Keeps the deque sorted by time; rows from other processes may arrive late.
fn insert_sorted(q: &mut VecDeque<Event>, ev: Event) {
    if q.back().is_none_or(|b| b.time_ns <= ev.time_ns) {
        q.push_back(ev);
    } else {
        let at = q.partition_point(|e| e.time_ns <= ev.time_ns);
        q.insert(at, ev);
    }
}

fn drop_front(q: &mut VecDeque<Event>, cutoff_ns: i64) {
    while q.front().is_some_and(|e| e.time_ns <= cutoff_ns) {
        q.pop_front();
    }
}
