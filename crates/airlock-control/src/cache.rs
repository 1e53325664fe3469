//! The in-memory view of an agent's journal rows that every check reads.
//!
//! Rows reach it in two ways: this process's own rows are applied as they are
//! made (loop-detection rows before they are appended, see `crate::pending`),
//! and every process's rows are read back from the agent's journal (see
//! `crate::journal`): up to its end under the agent's lock before every budget
//! decision, so budget counters include every counted call of every process,
//! and at most every [`crate::journal::LOOP_REFRESH`] for a call outside every
//! budget class, which reads only loop-detection counters. Sums over a window
//! come from each series' running totals (see `crate::series`).

// hashbrown for `entry_ref`: a lookup by `&str` that allocates the key only
// when it inserts, so a call's rows allocate nothing for names already seen.
use hashbrown::HashMap;

pub(crate) use crate::row::Row;
pub(crate) use crate::series::{Event, Series, Usage};

/// `class` of a rate event (one row per agent per flush bucket).
pub(crate) const RATE_CLASS: &str = "!rate";
/// `class` of a reset marker: counters of `agent` (or `*`) before it are ignored.
pub(crate) const RESET_CLASS: &str = "!reset";
/// `class` prefix of a fan-out event: `!fanout:server/tool`, keyed by target digest.
pub(crate) const FANOUT_PREFIX: &str = "!fanout:";
#[derive(Debug, Default)]
pub(crate) struct EventCache {
    /// Width of a rate bucket: rate events closer than this are merged.
    pub(crate) rate_bucket_ns: i64,
    budgets: HashMap<String, HashMap<String, Series>>,
    rate: HashMap<String, Series>,
    fanout: HashMap<String, HashMap<String, HashMap<String, i64>>>,
    resets: HashMap<String, i64>,
}

impl EventCache {
    pub(crate) fn apply(&mut self, agent: &str, row: &Row<'_>) {
        self.apply_parts(agent, row.class, row.key, row.time_ns, row.calls, row.items);
    }

    /// [`EventCache::apply`] from borrowed parts; allocates only for an agent,
    /// class or key it has not seen before.
    pub(crate) fn apply_parts(
        &mut self,
        agent: &str,
        class: &str,
        key: Option<&str>,
        time_ns: i64,
        calls: u64,
        items: u64,
    ) {
        if class == RESET_CLASS {
            let r = entry(&mut self.resets, agent, || i64::MIN);
            *r = (*r).max(time_ns);
        } else if class == RATE_CLASS {
            // Kept per bucket (its start time), so few entries however many
            // calls there were, and late rows merge in place.
            let width = self.rate_bucket_ns.max(1);
            let start = time_ns - time_ns.rem_euclid(width);
            entry(&mut self.rate, agent, Series::default).add_to(start, calls);
        } else if class.starts_with(FANOUT_PREFIX) {
            if let Some(key) = key {
                let classes = entry(&mut self.fanout, agent, HashMap::new);
                let keys = entry(classes, class, HashMap::new);
                let last = entry(keys, key, || i64::MIN);
                *last = (*last).max(time_ns);
            }
        } else {
            let classes = entry(&mut self.budgets, agent, HashMap::new);
            entry(classes, class, Series::default).insert(time_ns, calls, items);
        }
    }

    /// Events before this time do not count for `agent` (a human resumed it).
    pub(crate) fn reset_ns(&self, agent: &str) -> i64 {
        self.resets.get(agent).copied().unwrap_or(i64::MIN)
    }

    /// Budget events of `agent` × `class` after `from_ns` (exclusive), oldest first.
    pub(crate) fn budget_events(
        &self,
        agent: &str,
        class: &str,
        from_ns: i64,
    ) -> impl Iterator<Item = &Event> {
        self.budget_series(agent, class)
            .into_iter()
            .flat_map(move |q| q.after(from_ns))
    }

    /// Calls and items of `agent` × `class` after `from_ns` (exclusive).
    pub(crate) fn budget_usage(&self, agent: &str, class: &str, from_ns: i64) -> Usage {
        self.budget_series(agent, class)
            .map_or_else(Usage::default, |q| q.usage_after(from_ns))
    }

    fn budget_series(&self, agent: &str, class: &str) -> Option<&Series> {
        self.budgets.get(agent).and_then(|m| m.get(class))
    }

    /// Forgets `agent`'s counters (its journal is about to be read afresh);
    /// its reset marker stays, it only ever moves forward.
    pub(crate) fn forget(&mut self, agent: &str) {
        self.budgets.remove(agent);
        self.rate.remove(agent);
        self.fanout.remove(agent);
    }

    /// Calls `f` with `agent`'s counters after `from_ns` as rows (to rewrite
    /// its journal): budget events, rate buckets and fan-out targets.
    pub(crate) fn for_each_row(&self, agent: &str, from_ns: i64, mut f: impl FnMut(&Row<'_>)) {
        for (class, q) in self.budgets.get(agent).into_iter().flatten() {
            for e in q.after(from_ns) {
                f(&Row {
                    class,
                    key: None,
                    time_ns: e.time_ns,
                    calls: e.calls,
                    items: e.items,
                });
            }
        }
        for e in self
            .rate
            .get(agent)
            .into_iter()
            .flat_map(|q| q.after(from_ns))
        {
            f(&Row {
                class: RATE_CLASS,
                key: None,
                time_ns: e.time_ns,
                calls: e.calls,
                items: 0,
            });
        }
        for (class, keys) in self.fanout.get(agent).into_iter().flatten() {
            for (key, &time_ns) in keys.iter().filter(|(_, &t)| t > from_ns) {
                f(&Row {
                    class,
                    key: Some(key),
                    time_ns,
                    calls: 1,
                    items: 0,
                });
            }
        }
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

    /// `agent`'s rate buckets.
    pub(crate) fn rate_series(&self, agent: &str) -> Option<&Series> {
        self.rate.get(agent)
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

    /// Forgets events at or before `cutoff_ns` (they are outside every
    /// window) and returns how many.
    pub(crate) fn prune(&mut self, cutoff_ns: i64) -> usize {
        let mut n = 0;
        for m in self.budgets.values_mut() {
            for q in m.values_mut() {
                n += q.drop_through(cutoff_ns);
            }
            m.retain(|_, q| !q.is_empty());
        }
        self.budgets.retain(|_, m| !m.is_empty());
        for q in self.rate.values_mut() {
            n += q.drop_through(cutoff_ns);
        }
        self.rate.retain(|_, q| !q.is_empty());
        for m in self.fanout.values_mut() {
            for keys in m.values_mut() {
                let before = keys.len();
                keys.retain(|_, t| *t > cutoff_ns);
                n += before - keys.len();
            }
            m.retain(|_, k| !k.is_empty());
        }
        self.fanout.retain(|_, m| !m.is_empty());
        n
    }
}

/// `map[key]`, inserting `new()` first if absent; allocates the key only then.
fn entry<'m, V>(map: &'m mut HashMap<String, V>, key: &str, new: impl FnOnce() -> V) -> &'m mut V {
    map.entry_ref(key).or_insert_with(new)
}
