//! The running totals the breakers read (budgets, rate buckets, fan-out
//! targets) equal a recount of the journal's rows, in every store, whatever
//! mix of stores (as processes), restarts, compactions and rate-bucket
//! roll-overs produced them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use proptest::prelude::*;
use serde_json::json;

use super::*;

const S: i64 = 1_000_000_000;
const T0: i64 = 1_800_000_000 * S;

const CONFIG: &str = r#"
[policy]
files = ["p"]
[humans.alice]
[tasks.t]
[agents.bot]
on_behalf_of = "alice"
task = "t"
[servers.corp]
[breakers.acl]
tools = ["corp/acl_set"]
max_calls = 1000000
window_secs = 600
[breakers.defaults]
rate_window_secs = 60
rate_baseline_secs = 600
rate_min_calls = 1000000
fanout_distinct = 1000000
"#;

#[derive(Debug, Clone)]
enum Op {
    /// Store 0 or 1 admits a call `dt` seconds later, inside the budget class
    /// or not, naming one of a few targets or none.
    Call {
        store: usize,
        dt: i64,
        budget: bool,
        target: Option<u8>,
    },
    /// Store 0 or 1 restarts (pending rows are appended on drop).
    Reopen(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0usize..2, 0i64..25, any::<bool>(), proptest::option::of(0u8..4))
            .prop_map(|(store, dt, budget, target)| Op::Call { store, dt, budget, target }),
        1 => (0usize..2).prop_map(Op::Reopen),
    ]
}

/// What the journal holds: budget rows and rate rows as (time, calls), and
/// the latest time of each fan-out class × target.
#[derive(Default)]
struct Stored {
    budget: Vec<(i64, u64)>,
    rate: Vec<(i64, u64)>,
    fanout: std::collections::BTreeMap<(String, String), i64>,
}

fn stored(db: &Path) -> Stored {
    let journal = crate::journal::journal_dir(db).join(format!("{}.journal", hex::encode("bot")));
    let mut out = Stored::default();
    // No journal yet if no call was counted.
    for l in std::fs::read_to_string(journal).unwrap_or_default().lines() {
        let f: Vec<&str> = l.split(' ').collect();
        let (t, calls): (i64, u64) = (f[0].parse().unwrap(), f[1].parse().unwrap());
        match f[3] {
            "acl" => out.budget.push((t, calls)),
            "!rate" => out.rate.push((t, calls)),
            class => {
                assert!(class.starts_with("!fanout:corp/"), "{l}");
                let last = out.fanout.entry((class.into(), f[4].into())).or_insert(t);
                *last = (*last).max(t);
            }
        }
    }
    out
}

fn recount(rows: &[(i64, u64)], from: i64) -> u64 {
    rows.iter().filter(|r| r.0 > from).map(|r| r.1).sum()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn running_totals_equal_a_recount_of_the_stored_rows(ops in proptest::collection::vec(op(), 1..120)) {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("audit.db");
        let config = airlock_config::parse(CONFIG, Path::new("a.toml")).unwrap();
        let set = BreakerSet::from_config(&config);
        let mut stores = [ControlStore::open(&db).unwrap(), ControlStore::open(&db).unwrap()];
        let mut now = T0;
        for op in ops {
            match op {
                Op::Call { store, dt, budget, target } => {
                    now += dt * S;
                    let tool = if budget { "acl_set" } else { "mail_list" };
                    let args = match target {
                        Some(t) => json!({"repo": format!("r{t}")}),
                        None => json!({}),
                    };
                    let v = set.admit(&mut stores[store], "bot", "corp", tool, &args, now).unwrap();
                    prop_assert!(matches!(v, Verdict::Pass { .. }), "{:?}", v);
                }
                Op::Reopen(i) => {
                    stores[i] = ControlStore::open(&db).unwrap();
                }
            }
        }
        for s in &mut stores {
            s.flush().unwrap();
        }
        let rows = stored(&db);
        // Rows older than the longest window may have been pruned or compacted away.
        let oldest = now - 600 * S;
        let third = ControlStore::open(&db).unwrap();
        for s in stores.iter().chain([&third]) {
            s.refresh("bot", true).unwrap();
            let cache = s.cache().unwrap();
            for back in [0, 1, 9, 10, 11, 59, 60, 61, 300, 599, 600] {
                let from = (now - back * S).max(oldest);
                prop_assert_eq!(cache.budget_usage("bot", "acl", from).calls, recount(&rows.budget, from));
                let rate = cache.rate_series("bot").map_or(0, |q| q.usage_after(from).calls);
                prop_assert_eq!(rate, recount(&rows.rate, from));
                for tool in ["acl_set", "mail_list"] {
                    let class = fanout_class("corp", tool);
                    let live: Vec<(&str, i64)> = rows
                        .fanout
                        .iter()
                        .filter(|((c, _), &t)| *c == class && t > from)
                        .map(|((_, k), &t)| (k.as_str(), t))
                        .collect();
                    for t in 0..4 {
                        let key = fanout_key(&json!({"repo": format!("r{t}")}), &config.breakers.defaults.fanout_keys).unwrap();
                        let (distinct, seen, first) = cache.fanout_state("bot", &class, from, &key);
                        prop_assert_eq!(distinct, live.len() as u64);
                        prop_assert_eq!(seen, live.iter().any(|(k, _)| *k == key));
                        prop_assert_eq!(first, live.iter().map(|(_, t)| *t).min());
                    }
                }
            }
        }
    }
}
