//! `Series`: the counted events of one agent × class (or one agent's rate
//! buckets), oldest first, each carrying the running totals up to and
//! including itself. The calls and items after any time are then a binary
//! search and a subtraction, whatever the window holds: a breaker check costs
//! the same with 5 events in its window or 5,000.
//!
//! The totals start wherever the series started and are never reset:
//! dropping events from the front leaves the others' totals valid, and an
//! event inserted out of order (another process's late row) adds itself to
//! the totals of the events after it. `u128` totals cannot overflow from
//! `u64` counts, so a difference is always exact.

use std::collections::VecDeque;

/// One counted event (a call, a result's items, or a rate bucket's calls).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Event {
    pub(crate) time_ns: i64,
    pub(crate) calls: u64,
    pub(crate) items: u64,
    /// Calls of this event and of every event before it, dropped ones included.
    run_calls: u128,
    /// The same for items.
    run_items: u128,
}

/// Calls and items inside a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Usage {
    pub(crate) calls: u64,
    pub(crate) items: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Series {
    events: VecDeque<Event>,
}

impl Series {
    pub(crate) fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Adds an event, after any of the same time.
    pub(crate) fn insert(&mut self, time_ns: i64, calls: u64, items: u64) {
        let at = if self.events.back().is_none_or(|b| b.time_ns <= time_ns) {
            self.events.len()
        } else {
            self.events.partition_point(|e| e.time_ns <= time_ns)
        };
        self.insert_at(at, time_ns, calls, items);
    }

    /// Adds `calls` to the event at exactly `time_ns` (a rate bucket's start),
    /// creating it if there is none.
    pub(crate) fn add_to(&mut self, time_ns: i64, calls: u64) {
        let at = match self.events.back() {
            Some(b) if b.time_ns < time_ns => self.events.len(),
            _ => self.events.partition_point(|e| e.time_ns < time_ns),
        };
        match self.events.get_mut(at) {
            Some(e) if e.time_ns == time_ns => {
                let before = e.calls;
                e.calls = e.calls.saturating_add(calls);
                let added = u128::from(e.calls - before);
                for e in self.events.range_mut(at..) {
                    e.run_calls += added;
                }
            }
            _ => self.insert_at(at, time_ns, calls, 0),
        }
    }

    fn insert_at(&mut self, at: usize, time_ns: i64, calls: u64, items: u64) {
        // The totals of everything before `at`, dropped events included.
        let (base_calls, base_items) = match at.checked_sub(1).and_then(|i| self.events.get(i)) {
            Some(p) => (p.run_calls, p.run_items),
            None => self.events.front().map_or((0, 0), |f| {
                (
                    f.run_calls - u128::from(f.calls),
                    f.run_items - u128::from(f.items),
                )
            }),
        };
        self.events.insert(
            at,
            Event {
                time_ns,
                calls,
                items,
                run_calls: base_calls + u128::from(calls),
                run_items: base_items + u128::from(items),
            },
        );
        for e in self.events.range_mut(at + 1..) {
            e.run_calls += u128::from(calls);
            e.run_items += u128::from(items);
        }
    }

    /// Index of the first event after `from_ns` (exclusive).
    fn first_after(&self, from_ns: i64) -> usize {
        self.events.partition_point(|e| e.time_ns <= from_ns)
    }

    /// Calls and items of the events after `from_ns` (exclusive); a sum past
    /// `u64::MAX` is `u64::MAX`.
    pub(crate) fn usage_after(&self, from_ns: i64) -> Usage {
        let (Some(first), Some(last)) = (
            self.events.get(self.first_after(from_ns)),
            self.events.back(),
        ) else {
            return Usage::default();
        };
        let calls = last.run_calls - (first.run_calls - u128::from(first.calls));
        let items = last.run_items - (first.run_items - u128::from(first.items));
        Usage {
            calls: u64::try_from(calls).unwrap_or(u64::MAX),
            items: u64::try_from(items).unwrap_or(u64::MAX),
        }
    }

    /// The events after `from_ns` (exclusive), oldest first.
    pub(crate) fn after(&self, from_ns: i64) -> impl Iterator<Item = &Event> {
        self.events.range(self.first_after(from_ns)..)
    }

    /// Every event, oldest first.
    #[cfg(test)]
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Event> {
        self.events.iter()
    }

    /// Forgets the events at or before `cutoff_ns`; returns how many.
    pub(crate) fn drop_through(&mut self, cutoff_ns: i64) -> usize {
        let n = self.first_after(cutoff_ns);
        self.events.drain(..n);
        n
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Insert(i64, u64, u64),
        AddTo(i64, u64),
        Drop(i64),
    }

    fn op() -> impl Strategy<Value = Op> {
        // Small times so events collide, out-of-order inserts and merges are common.
        prop_oneof![
            4 => (0i64..60, 0u64..5, 0u64..5).prop_map(|(t, c, i)| Op::Insert(t, c, i)),
            4 => (0i64..12, 0u64..5).prop_map(|(b, c)| Op::AddTo(b * 5, c)),
            1 => (0i64..60).prop_map(Op::Drop),
        ]
    }

    /// The plain model: a list of events, summed by walking it.
    fn naive(events: &[(i64, u64, u64)], from: i64) -> Usage {
        events
            .iter()
            .filter(|e| e.0 > from)
            .fold(Usage::default(), |u, e| Usage {
                calls: u.calls + e.1,
                items: u.items + e.2,
            })
    }

    proptest! {
        #[test]
        fn running_totals_equal_a_recount(ops in proptest::collection::vec(op(), 0..80), froms in proptest::collection::vec(-1i64..62, 1..8)) {
            let mut s = Series::default();
            let mut model: Vec<(i64, u64, u64)> = Vec::new();
            for op in ops {
                match op {
                    Op::Insert(t, c, i) => {
                        s.insert(t, c, i);
                        let at = model.partition_point(|e| e.0 <= t);
                        model.insert(at, (t, c, i));
                    }
                    Op::AddTo(t, c) => {
                        s.add_to(t, c);
                        match model.iter_mut().find(|e| e.0 == t) {
                            Some(e) => e.1 += c,
                            None => {
                                let at = model.partition_point(|e| e.0 < t);
                                model.insert(at, (t, c, 0));
                            }
                        }
                    }
                    Op::Drop(t) => {
                        s.drop_through(t);
                        model.retain(|e| e.0 > t);
                    }
                }
                let listed: Vec<(i64, u64, u64)> = s.iter().map(|e| (e.time_ns, e.calls, e.items)).collect();
                prop_assert_eq!(&listed, &model);
                for &from in &froms {
                    prop_assert_eq!(s.usage_after(from), naive(&model, from));
                    prop_assert_eq!(s.after(from).count(), model.iter().filter(|e| e.0 > from).count());
                }
            }
        }
    }

    #[test]
    fn a_sum_past_u64_saturates() {
        let mut s = Series::default();
        s.insert(1, u64::MAX, 0);
        s.insert(2, u64::MAX, 7);
        assert_eq!(
            s.usage_after(0),
            Usage {
                calls: u64::MAX,
                items: 7
            }
        );
        assert_eq!(s.usage_after(1).calls, u64::MAX);
        s.add_to(2, 5);
        assert_eq!(s.usage_after(1).calls, u64::MAX);
        assert_eq!(s.usage_after(2), Usage::default());
    }
}
