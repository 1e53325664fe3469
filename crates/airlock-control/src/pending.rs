//! One agent's loop-detection rows waiting to be appended to its journal,
//! merged as they arrive: one row per rate bucket (calls summed, at the
//! bucket's start) and one per fan-out class × target (the latest time). A
//! busy agent then appends a few rows per flush, not one per call, and a call
//! whose row merges into a pending one allocates nothing.

use hashbrown::HashMap;

use crate::cache::{EventCache, FANOUT_PREFIX, RATE_CLASS};
use crate::row::{encode, Row};

#[derive(Debug, Default)]
pub(crate) struct Pending {
    /// (bucket start, calls), oldest first as calls come.
    rate: Vec<(i64, u64)>,
    /// Fan-out class → target digest → latest time.
    fanout: HashMap<String, HashMap<String, i64>>,
    /// Rows a flush would write.
    rows: usize,
}

impl Pending {
    /// Rows a flush would write.
    pub(crate) fn len(&self) -> usize {
        self.rows
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Adds a loop-detection row, merged into a pending one where it can be;
    /// `rate_bucket_ns` is the width of a rate bucket. Other rows are not
    /// written behind and are ignored.
    pub(crate) fn push(&mut self, row: &Row<'_>, rate_bucket_ns: i64) {
        if row.class == RATE_CLASS {
            let width = rate_bucket_ns.max(1);
            let start = row.time_ns - row.time_ns.rem_euclid(width);
            // The current bucket is almost always the last one.
            match self.rate.iter_mut().rev().find(|b| b.0 == start) {
                Some(b) => b.1 = b.1.saturating_add(row.calls),
                None => {
                    self.rate.push((start, row.calls));
                    self.rows += 1;
                }
            }
        } else if let (true, Some(key)) = (row.class.starts_with(FANOUT_PREFIX), row.key) {
            let keys = self.fanout.entry_ref(row.class).or_default();
            match keys.get_mut(key) {
                Some(t) => *t = (*t).max(row.time_ns),
                None => {
                    keys.insert(key.to_owned(), row.time_ns);
                    self.rows += 1;
                }
            }
        }
    }

    /// Calls `f` with every pending row.
    pub(crate) fn for_each(&self, mut f: impl FnMut(&Row<'_>)) {
        for &(start, calls) in &self.rate {
            f(&Row {
                class: RATE_CLASS,
                key: None,
                time_ns: start,
                calls,
                items: 0,
            });
        }
        for (class, keys) in &self.fanout {
            for (key, &time_ns) in keys {
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

    /// Appends every pending row to `out` as journal lines.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        self.for_each(|r| encode(out, r));
    }

    /// Applies every pending row to `cache` again (after `agent`'s journal was
    /// read afresh, which forgot them).
    pub(crate) fn apply(&self, agent: &str, cache: &mut EventCache) {
        self.for_each(|r| cache.apply(agent, r));
    }

    pub(crate) fn clear(&mut self) {
        self.rate.clear();
        self.fanout.clear();
        self.rows = 0;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn row<'a>(class: &'a str, time_ns: i64, key: Option<&'a str>) -> Row<'a> {
        Row {
            class,
            key,
            time_ns,
            calls: 1,
            items: 0,
        }
    }

    #[test]
    fn rows_merge_per_bucket_and_per_target() {
        let mut p = Pending::default();
        for t in [0, 3, 9, 10, 25, 4] {
            p.push(&row(RATE_CLASS, t, None), 10);
        }
        for (t, k) in [(5, "a"), (2, "a"), (7, "b")] {
            p.push(&row("!fanout:corp/get", t, Some(k)), 10);
        }
        // Not a loop row, and a fan-out row without a target: nothing to write behind.
        p.push(&row("acl", 8, None), 10);
        p.push(&row("!fanout:corp/get", 8, None), 10);
        assert_eq!(p.len(), 5);
        let mut out = Vec::new();
        p.encode(&mut out);
        let mut lines: Vec<&str> = std::str::from_utf8(&out).unwrap().lines().collect();
        lines.sort_unstable();
        assert_eq!(
            lines,
            [
                "0 4 0 !rate",
                "10 1 0 !rate",
                "20 1 0 !rate",
                "5 1 0 !fanout:corp/get a",
                "7 1 0 !fanout:corp/get b",
            ]
        );
        p.clear();
        assert!(p.is_empty());
        let mut out = Vec::new();
        p.encode(&mut out);
        assert!(out.is_empty());
    }
}
