//! Breakers: budgets per agent × action class, and the default loop and
//! fan-out detection. The decision is a pure function of the config, the call
//! and the cached counters ([`BreakerSet::evaluate`]); the store calls around
//! it are thin.
//!
//! A budget of `max_calls = N` lets exactly N calls through per sliding window:
//! the call that would be the N+1th trips and is not counted. Loop detection
//! (`[breakers.defaults]`, on unless disabled) adds two classes:
//! - `loop.fanout`: one agent calling one tool with more than `fanout_distinct`
//!   distinct targets (the values of the `fanout_keys` arguments it passes)
//!   in `fanout_window_secs`; repeating a target does not count again.
//! - `loop.rate`: an agent's calls in the last `rate_window_secs` above
//!   `max(rate_min_calls, rate_factor × its own average per rate window over
//!   the rest of rate_baseline_secs)`.

use airlock_audit::Reason;
use airlock_config::{BreakerClass, Config, ItemsSource, LoopDefaults};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::cache::{EventCache, Row, FANOUT_PREFIX, RATE_CLASS};
use crate::error::ControlError;
use crate::store::ControlStore;

/// Trip class of the default fan-out breaker.
pub const LOOP_FANOUT: &str = "loop.fanout";
/// Trip class of the default rate breaker.
pub const LOOP_RATE: &str = "loop.rate";
/// Rate events are kept in buckets of this fraction of `rate_window_secs`.
const RATE_BUCKETS_PER_WINDOW: i64 = 6;
const NS_PER_SEC: i64 = 1_000_000_000;

/// What the breakers say about one call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Verdict {
    /// Within every budget; `matched` is what [`BreakerSet::record_call`] counts.
    Pass {
        /// Budget classes (by name) and loop-detection counters the call hits.
        matched: Vec<Matched>,
    },
    /// The call would cross a budget: deny it and pause the agent.
    Trip(Trip),
}

/// A crossed budget.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Trip {
    /// The class name (`loop.fanout` / `loop.rate` for the defaults).
    pub class: String,
    /// The budget in words, e.g. `5 calls per 600 s`.
    pub budget: String,
    /// When enough of the window has passed for the call to fit again (ns since the epoch).
    pub resets_at_ns: i64,
}

impl Trip {
    /// The reason of the pause this trip causes (`breaker:<class>`).
    pub fn reason(&self) -> Reason {
        Reason::Breaker(self.class.clone())
    }
}

/// One counter a passing call increments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Matched {
    /// A budget class name, or an internal loop-detection counter (starts with `!`).
    pub class: String,
    /// Items counted from the arguments (`items = "args:…"`), else 0.
    pub items: u64,
    #[serde(skip)]
    key: Option<String>,
}

impl Matched {
    /// Whether this is a configured budget class (not loop detection).
    pub fn is_budget(&self) -> bool {
        !self.class.starts_with('!')
    }
}

/// How full one agent × class budget is, for `airlock status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Level {
    /// The agent.
    pub agent: String,
    /// The class.
    pub class: String,
    /// Calls in the window.
    pub calls: u64,
    /// The budget's `max_calls`.
    pub max_calls: u64,
    /// Items in the window.
    pub items: u64,
    /// The budget's `max_items`.
    pub max_items: Option<u64>,
    /// The window.
    pub window_secs: u64,
    /// When the oldest counted call leaves the window.
    pub resets_at_ns: Option<i64>,
}

/// The configured breakers, built once from the config.
#[derive(Debug, Clone)]
pub struct BreakerSet {
    classes: Vec<(String, BreakerClass)>,
    defaults: LoopDefaults,
    max_window_ns: i64,
    rate_bucket_ns: i64,
}

// === impl BreakerSet ===

impl BreakerSet {
    /// The breakers of `config`'s `[breakers]` section.
    pub fn from_config(config: &Config) -> BreakerSet {
        let b = &config.breakers;
        let d = &b.defaults;
        let max_window_secs = b
            .classes
            .values()
            .map(|c| c.window_secs)
            .chain(
                d.enabled
                    .then_some([d.fanout_window_secs, d.rate_baseline_secs])
                    .into_iter()
                    .flatten(),
            )
            .max()
            .unwrap_or(0);
        BreakerSet {
            classes: b
                .classes
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            defaults: d.clone(),
            max_window_ns: secs_ns(max_window_secs),
            rate_bucket_ns: (secs_ns(d.rate_window_secs) / RATE_BUCKETS_PER_WINDOW).max(1),
        }
    }

    /// Judges one call against the counters in `store` (this process's and,
    /// for budget classes, every other process's counted calls). Does not
    /// count the call: use [`BreakerSet::record_call`], or [`BreakerSet::admit`]
    /// for both at once without a gap another process could use.
    pub fn check(
        &self,
        store: &ControlStore,
        agent: &str,
        server: &str,
        tool: &str,
        args: &Value,
        now_ns: i64,
    ) -> Result<Verdict, ControlError> {
        let first = self.first_budget(agent, server, tool, args);
        self.check_from(store, first, agent, server, tool, args, now_ns)
    }

    /// [`BreakerSet::check`], `first` the first budget class that applies.
    #[allow(clippy::too_many_arguments)]
    fn check_from(
        &self,
        store: &ControlStore,
        first: Option<usize>,
        agent: &str,
        server: &str,
        tool: &str,
        args: &Value,
        now_ns: i64,
    ) -> Result<Verdict, ControlError> {
        store.cache()?.rate_bucket_ns = self.rate_bucket_ns;
        if first.is_some() {
            store.sync(agent)?;
        } else if self.defaults.enabled {
            store.refresh(agent, false)?;
        }
        let cache = store.cache()?;
        Ok(self.evaluate(&cache, first, agent, server, tool, args, now_ns))
    }

    /// Counts a call that passed [`BreakerSet::check`]. With a budget class
    /// among `matched`, every counter is in the agent's journal before this
    /// returns (one append); otherwise the loop-detection counters are
    /// appended within 100 ms.
    pub fn record_call(
        &self,
        store: &mut ControlStore,
        agent: &str,
        matched: &[Matched],
        now_ns: i64,
    ) -> Result<(), ControlError> {
        store.cache()?.rate_bucket_ns = self.rate_bucket_ns;
        let cutoff = now_ns.saturating_sub(self.max_window_ns);
        store.maybe_prune(cutoff)?;
        if matched.iter().any(Matched::is_budget) {
            return store.step(
                agent,
                cutoff,
                |_| (),
                |(), put| matched.iter().for_each(|m| put(&self.row(m, now_ns))),
            );
        }
        let rows: Vec<Row<'_>> = matched.iter().map(|m| self.row(m, now_ns)).collect();
        store.write_later(agent, &rows)
    }

    /// [`BreakerSet::check`] and [`BreakerSet::record_call`] in one step. When
    /// a budget class applies, both happen under the agent's journal lock, so
    /// two processes cannot both take the last call of a budget.
    pub fn admit(
        &self,
        store: &mut ControlStore,
        agent: &str,
        server: &str,
        tool: &str,
        args: &Value,
        now_ns: i64,
    ) -> Result<Verdict, ControlError> {
        let first = self.first_budget(agent, server, tool, args);
        if first.is_none() {
            let verdict = self.check_from(store, None, agent, server, tool, args, now_ns)?;
            if let Verdict::Pass { matched } = &verdict {
                if !matched.is_empty() {
                    self.record_call(store, agent, matched, now_ns)?;
                }
            }
            return Ok(verdict);
        }
        // The journal step reads every process's rows of the agent, loop
        // detection's included: no separate refresh.
        store.cache()?.rate_bucket_ns = self.rate_bucket_ns;
        let cutoff = now_ns.saturating_sub(self.max_window_ns);
        store.maybe_prune(cutoff)?;
        store.step(
            agent,
            cutoff,
            |cache| self.evaluate(cache, first, agent, server, tool, args, now_ns),
            |verdict, put| {
                if let Verdict::Pass { matched } = verdict {
                    matched.iter().for_each(|m| put(&self.row(m, now_ns)));
                }
            },
        )
    }

    /// Counts `n` items a call of `class` affected (read from its result) and
    /// returns the trip if that crossed the class's `max_items`: the call has
    /// happened, so the caller pauses the agent to stop the next one.
    pub fn record_items(
        &self,
        store: &mut ControlStore,
        agent: &str,
        class: &str,
        n: u64,
        now_ns: i64,
    ) -> Result<Option<Trip>, ControlError> {
        let Some((_, c)) = self.classes.iter().find(|(name, _)| name == class) else {
            return Ok(None);
        };
        let window_ns = secs_ns(c.window_secs);
        store.cache()?.rate_bucket_ns = self.rate_bucket_ns;
        let cutoff = now_ns.saturating_sub(self.max_window_ns);
        store.step(
            agent,
            cutoff,
            |cache| {
                let from = now_ns.saturating_sub(window_ns).max(cache.reset_ns(agent));
                let used = cache.budget_usage(agent, class, from).items + n;
                c.max_items.filter(|&max| used > max).map(|max| Trip {
                    class: class.to_owned(),
                    budget: format!("{max} items per {} s", c.window_secs),
                    resets_at_ns: now_ns.saturating_add(window_ns),
                })
            },
            |_, put| {
                put(&Row {
                    class,
                    key: None,
                    time_ns: now_ns,
                    calls: 0,
                    items: n,
                })
            },
        )
    }

    /// Whether `class` reads its items from the call's result (`items = "result:…"`).
    pub fn counts_result(&self, class: &str) -> bool {
        self.classes
            .iter()
            .any(|(n, c)| n == class && matches!(c.items, Some(ItemsSource::Result(_))))
    }

    /// For each matched class that counts items from the result: `(class, n)`.
    pub fn result_items(&self, matched: &[Matched], result: &Value) -> Vec<(String, u64)> {
        matched
            .iter()
            .filter_map(|m| {
                let (_, c) = self.classes.iter().find(|(n, _)| *n == m.class)?;
                match &c.items {
                    Some(ItemsSource::Result(p)) => Some((m.class.clone(), count_items(result, p))),
                    _ => None,
                }
            })
            .collect()
    }

    /// Budget levels per agent × class with any call in the window.
    pub fn levels(&self, store: &ControlStore, now_ns: i64) -> Result<Vec<Level>, ControlError> {
        store.cache()?.rate_bucket_ns = self.rate_bucket_ns;
        store.sync_all()?;
        let cache = store.cache()?;
        let mut out = Vec::new();
        for (name, c) in &self.classes {
            let window_ns = secs_ns(c.window_secs);
            for agent in cache.budget_agents(name) {
                let from = now_ns.saturating_sub(window_ns).max(cache.reset_ns(agent));
                let used = cache.budget_usage(agent, name, from);
                if used.calls == 0 && used.items == 0 {
                    continue;
                }
                let oldest = cache
                    .budget_events(agent, name, from)
                    .next()
                    .map(|e| e.time_ns);
                out.push(Level {
                    agent: agent.to_owned(),
                    class: name.clone(),
                    calls: used.calls,
                    max_calls: c.max_calls,
                    items: used.items,
                    max_items: c.max_items,
                    window_secs: c.window_secs,
                    resets_at_ns: oldest.map(|t| t.saturating_add(window_ns)),
                });
            }
        }
        Ok(out)
    }

    /// Forgets cached counters older than the longest window (journals drop
    /// them when compacted); returns how many.
    pub fn prune(&self, store: &mut ControlStore, now_ns: i64) -> Result<usize, ControlError> {
        store.prune(now_ns.saturating_sub(self.max_window_ns))
    }

    /// The index of the first budget class that covers the call, if any.
    fn first_budget(&self, agent: &str, server: &str, tool: &str, args: &Value) -> Option<usize> {
        self.classes
            .iter()
            .position(|(_, c)| applies(c, agent, server, tool, args))
    }

    /// The decision, from the cached counters alone; `first` is
    /// [`BreakerSet::first_budget`] (so no class is matched twice).
    #[allow(clippy::too_many_arguments)]
    fn evaluate(
        &self,
        cache: &EventCache,
        first: Option<usize>,
        agent: &str,
        server: &str,
        tool: &str,
        args: &Value,
        now_ns: i64,
    ) -> Verdict {
        let reset = cache.reset_ns(agent);
        let mut matched = Vec::new();
        let classes = first.map_or(&[][..], |i| self.classes.get(i..).unwrap_or_default());
        for (i, (name, c)) in classes.iter().enumerate() {
            if i > 0 && !applies(c, agent, server, tool, args) {
                continue;
            }
            match budget(cache, name, c, agent, args, now_ns, reset) {
                Ok(m) => matched.push(m),
                Err(trip) => return Verdict::Trip(trip),
            }
        }
        if self.defaults.enabled {
            match self.fanout(cache, agent, server, tool, args, now_ns, reset) {
                Ok(Some(m)) => matched.push(m),
                Ok(None) => {}
                Err(trip) => return Verdict::Trip(trip),
            }
            match self.rate(cache, agent, now_ns, reset) {
                Ok(m) => matched.push(m),
                Err(trip) => return Verdict::Trip(trip),
            }
        }
        Verdict::Pass { matched }
    }

    #[allow(clippy::too_many_arguments)]
    fn fanout(
        &self,
        cache: &EventCache,
        agent: &str,
        server: &str,
        tool: &str,
        args: &Value,
        now_ns: i64,
        reset: i64,
    ) -> Result<Option<Matched>, Trip> {
        let d = &self.defaults;
        let Some(key) = fanout_key(args, &d.fanout_keys) else {
            return Ok(None);
        };
        let class = fanout_class(server, tool);
        let window_ns = secs_ns(d.fanout_window_secs);
        let from = now_ns.saturating_sub(window_ns).max(reset);
        let (distinct, seen, oldest) = cache.fanout_state(agent, &class, from, &key);
        if !seen && distinct + 1 > d.fanout_distinct {
            return Err(Trip {
                class: LOOP_FANOUT.to_owned(),
                budget: format!(
                    "{} distinct targets of {server}/{tool} per {} s",
                    d.fanout_distinct, d.fanout_window_secs
                ),
                resets_at_ns: oldest.unwrap_or(now_ns).saturating_add(window_ns),
            });
        }
        Ok(Some(Matched {
            class,
            items: 0,
            key: Some(key),
        }))
    }

    fn rate(
        &self,
        cache: &EventCache,
        agent: &str,
        now_ns: i64,
        reset: i64,
    ) -> Result<Matched, Trip> {
        let d = &self.defaults;
        let short = secs_ns(d.rate_window_secs);
        let long = secs_ns(d.rate_baseline_secs);
        let long_from = now_ns.saturating_sub(long).max(reset);
        let recent_from = now_ns.saturating_sub(short).max(long_from);
        // Two running-total lookups, not a walk over the baseline's buckets.
        let (recent, before, oldest_recent) = match cache.rate_series(agent) {
            Some(q) => {
                let recent = q.usage_after(recent_from).calls;
                let all = q.usage_after(long_from).calls;
                let oldest = q.after(recent_from).next().map(|e| e.time_ns);
                (recent, all.saturating_sub(recent), oldest)
            }
            None => (0, 0, None),
        };
        // The agent's own average per short window over the rest of the long one.
        let span = u64::try_from(long - short).unwrap_or(1).max(1);
        let per_window = (u128::from(before) * u128::from(d.rate_window_secs) * 1_000_000_000)
            .div_ceil(u128::from(span));
        let per_window = u64::try_from(per_window).unwrap_or(u64::MAX);
        let limit = d
            .rate_min_calls
            .max(d.rate_factor.saturating_mul(per_window));
        if recent + 1 > limit {
            return Err(Trip {
                class: LOOP_RATE.to_owned(),
                budget: format!(
                    "{limit} calls per {} s ({}× this agent's usual rate, at least {})",
                    d.rate_window_secs, d.rate_factor, d.rate_min_calls
                ),
                resets_at_ns: oldest_recent
                    .unwrap_or(now_ns)
                    .saturating_add(short + self.rate_bucket_ns),
            });
        }
        Ok(Matched {
            class: RATE_CLASS.to_owned(),
            items: 0,
            key: None,
        })
    }
}

/// One budget class against the cache: the counter to bump, or the trip.
fn budget(
    cache: &EventCache,
    name: &str,
    c: &BreakerClass,
    agent: &str,
    args: &Value,
    now_ns: i64,
    reset: i64,
) -> Result<Matched, Trip> {
    let window_ns = secs_ns(c.window_secs);
    let from = now_ns.saturating_sub(window_ns).max(reset);
    let used = cache.budget_usage(agent, name, from);
    // The time the `excess`-th oldest unit (by `unit`) leaves the window.
    let resets_at = |excess: u64, unit: fn(&crate::cache::Event) -> u64| {
        let mut acc = 0;
        for e in cache.budget_events(agent, name, from) {
            acc += unit(e);
            if acc >= excess {
                return e.time_ns.saturating_add(window_ns);
            }
        }
        now_ns.saturating_add(window_ns)
    };
    if used.calls + 1 > c.max_calls {
        return Err(Trip {
            class: name.to_owned(),
            budget: format!("{} calls per {} s", c.max_calls, c.window_secs),
            resets_at_ns: resets_at(used.calls + 1 - c.max_calls, |e| e.calls),
        });
    }
    let items = match &c.items {
        Some(ItemsSource::Args(p)) => count_items(args, p),
        _ => 0,
    };
    if let Some(max) = c.max_items {
        // Result-counted items are known only afterwards: a full budget stops the next call.
        let over = match &c.items {
            Some(ItemsSource::Result(_)) => used.items >= max,
            _ => used.items + items > max,
        };
        if over {
            let excess = (used.items + items.max(1)).saturating_sub(max);
            return Err(Trip {
                class: name.to_owned(),
                budget: format!("{max} items per {} s", c.window_secs),
                resets_at_ns: resets_at(excess, |e| e.items),
            });
        }
    }
    Ok(Matched {
        class: name.to_owned(),
        items,
        key: None,
    })
}

/// Whether a class covers this agent, tool and arguments.
fn applies(c: &BreakerClass, agent: &str, server: &str, tool: &str, args: &Value) -> bool {
    c.agents
        .as_ref()
        .is_none_or(|a| a.iter().any(|x| x == agent))
        && c.tools.iter().any(|p| p.matches(server, tool))
        && c.when
            .iter()
            .all(|(k, v)| args.get(k).is_some_and(|a| v.matches(a)))
}

/// Items at a JSON pointer: an array's length or a non-negative integer; else 0.
pub fn count_items(v: &Value, pointer: &str) -> u64 {
    match v.pointer(pointer) {
        Some(Value::Array(a)) => u64::try_from(a.len()).unwrap_or(u64::MAX),
        Some(Value::Number(n)) => n.as_u64().unwrap_or(0),
        _ => 0,
    }
}

/// A digest of the target arguments a call names, or `None` if it names none.
/// Hashed so the store keeps no argument values.
fn fanout_key(args: &Value, keys: &[String]) -> Option<String> {
    let obj = args.as_object()?;
    let mut h = Sha256::new();
    let mut any = false;
    for k in keys {
        if let Some(v) = obj.get(k) {
            any = true;
            h.update(k.as_bytes());
            h.update([0]);
            // The JSON text, as `to_string` gives it, without building the String
            // (writing to a hasher cannot fail; if it did, hash the String after all).
            if serde_json::to_writer(&mut h, v).is_err() {
                h.update(v.to_string().as_bytes());
            }
            h.update([0]);
        }
    }
    if !any {
        return None;
    }
    let mut text = [0u8; 32];
    hex::encode_to_slice(&h.finalize()[..16], &mut text).ok()?;
    std::str::from_utf8(&text).ok().map(str::to_owned)
}

/// `!fanout:<server>/<tool>`, without the formatting machinery (once per call).
fn fanout_class(server: &str, tool: &str) -> String {
    let mut class = String::with_capacity(FANOUT_PREFIX.len() + server.len() + 1 + tool.len());
    class.push_str(FANOUT_PREFIX);
    class.push_str(server);
    class.push('/');
    class.push_str(tool);
    class
}

impl BreakerSet {
    /// The journal row of one counter a passing call increments; a rate row
    /// is at its bucket's start, where the rows of many calls merge.
    fn row<'m>(&self, m: &'m Matched, now_ns: i64) -> Row<'m> {
        let time_ns = if m.class == RATE_CLASS {
            now_ns - now_ns.rem_euclid(self.rate_bucket_ns)
        } else {
            now_ns
        };
        Row {
            class: &m.class,
            key: m.key.as_deref(),
            time_ns,
            calls: 1,
            items: m.items,
        }
    }
}

fn secs_ns(secs: u64) -> i64 {
    i64::try_from(secs)
        .unwrap_or(i64::MAX)
        .saturating_mul(NS_PER_SEC)
}

#[cfg(test)]
#[path = "breakers_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "sums_tests.rs"]
mod sums_tests;
