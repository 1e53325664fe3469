//! The running totals the breakers read equal a recount of the stored rows,
//! whatever mix of stores (as processes), restarts and rate-bucket roll-overs
//! produced them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::store::LOOP_REFRESH;

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
    /// Store 0 or 1 admits a call `dt` seconds later, inside the budget class or not.
    Call { store: usize, dt: i64, budget: bool },
    /// Store 0 or 1 restarts (pending rows are flushed, as on drop).
    Reopen(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0usize..2, 0i64..25, any::<bool>())
            .prop_map(|(store, dt, budget)| Op::Call { store, dt, budget }),
        1 => (0usize..2).prop_map(Op::Reopen),
    ]
}

/// (time, calls) of stored rows.
type Rows = Vec<(i64, u64)>;

/// Every budget row in the journal and every rate row in the database.
fn stored(db: &Path, store: &ControlStore) -> (Rows, Rows) {
    let journal = crate::journal::journal_dir(db).join(format!("{}.journal", hex::encode("bot")));
    // No journal yet if no call was inside the class.
    let budget = std::fs::read_to_string(journal)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            assert_eq!(f[3], "acl");
            (f[0].parse().unwrap(), f[1].parse().unwrap())
        })
        .collect();
    let mut stmt = store
        .conn()
        .prepare(
            "SELECT time_ns, calls FROM breaker_events WHERE class = '!rate' AND agent = 'bot'",
        )
        .unwrap();
    let rate = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    (budget, rate)
}

fn recount(rows: &[(i64, u64)], from: i64) -> u64 {
    rows.iter().filter(|r| r.0 > from).map(|r| r.1).sum()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn running_totals_equal_a_recount_of_the_stored_rows(ops in proptest::collection::vec(op(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("audit.db");
        let config = airlock_config::parse(CONFIG, Path::new("a.toml")).unwrap();
        let set = BreakerSet::from_config(&config);
        let mut stores = [ControlStore::open(&db).unwrap(), ControlStore::open(&db).unwrap()];
        let mut now = T0;
        for op in ops {
            match op {
                Op::Call { store, dt, budget } => {
                    now += dt * S;
                    let (tool, args) = if budget {
                        ("acl_set", json!({}))
                    } else {
                        ("mail_list", json!({}))
                    };
                    let v = set.admit(&mut stores[store], "bot", "corp", tool, &args, now).unwrap();
                    prop_assert!(matches!(v, Verdict::Pass { .. }), "{:?}", v);
                }
                Op::Reopen(i) => {
                    stores[i].flush().unwrap();
                    stores[i] = ControlStore::open(&db).unwrap();
                }
            }
        }
        for s in &mut stores {
            s.flush().unwrap();
        }
        let (budget_rows, rate_rows) = stored(&db, &stores[0]);
        // Rows older than the longest window may have been pruned or compacted away.
        let oldest = now - 600 * S;
        for s in &stores {
            s.refresh(true, LOOP_REFRESH).unwrap();
            s.sync_budgets("bot").unwrap();
            let cache = s.cache().unwrap();
            for back in [0, 1, 9, 10, 11, 59, 60, 61, 300, 599, 600] {
                let from = (now - back * S).max(oldest);
                prop_assert_eq!(cache.budget_usage("bot", "acl", from).calls, recount(&budget_rows, from));
                let rate = cache.rate_series("bot").map_or(0, |q| q.usage_after(from).calls);
                prop_assert_eq!(rate, recount(&rate_rows, from));
            }
        }
    }
}
