//! Cost of breaker accounting per call: `admit` (check + record) for a call no
//! budget class matches (loop detection on and off) and for one that matches
//! a budget (a row appended to the agent's journal under its lock), alone and
//! with two stores on one file taking turns (each call reads the other's row).
//!
//! `cargo run --release -p airlock-control --example breaker_bench [DIR]`
//! (DIR: where the database goes; default a temporary directory). With
//! `BREAKER_BENCH_LOOPS=on` (or `off`) only that half runs. Each case is its
//! own function (`case_*`), so `valgrind --tool=callgrind` followed by
//! `callgrind_annotate --inclusive=yes` gives its instructions; divide by the
//! calls it prints.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Instant;

use airlock_control::{BreakerSet, ControlStore, Verdict};
use serde_json::json;

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
when = { recursive = true }
max_calls = 100
window_secs = 600
[breakers.mail]
tools = ["corp/mail_*"]
max_calls = 1000000000
window_secs = 3600
[breakers.defaults]
enabled = LOOPS
rate_min_calls = 1000000000
fanout_distinct = 1000000000
"#;

fn main() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = std::env::args()
        .nth(1)
        .map_or_else(|| tmp.path().to_owned(), Into::into);
    let only = std::env::var("BREAKER_BENCH_LOOPS").ok();
    println!("database in {}", dir.display());
    for loops in [false, true] {
        if only
            .as_deref()
            .is_some_and(|o| o != if loops { "on" } else { "off" })
        {
            continue;
        }
        let text = CONFIG.replace("LOOPS", if loops { "true" } else { "false" });
        let config = airlock_config::parse(&text, Path::new("bench.toml")).unwrap();
        let set = BreakerSet::from_config(&config);
        let db = dir.join(format!("bench-{loops}.db"));
        let mut store = ControlStore::open(&db).unwrap();
        let label = if loops {
            "loop detection on "
        } else {
            "loop detection off"
        };
        let (per, n) = case_plain(&set, &mut store);
        println!("{label}: non-matching call          admit {per:>8.2} µs/call ({n} calls)");
        let (per, n) = case_target(&set, &mut store);
        println!("{label}: non-matching, with target  admit {per:>8.2} µs/call ({n} calls)");
        let (per, n) = case_budget(&set, &mut store);
        println!(
            "{label}: matching a budget class    admit {per:>8.2} µs/call ({n} calls; journal append)"
        );
        let mut other = ControlStore::open(&db).unwrap();
        let (per, n) = case_two_stores(&set, &mut store, &mut other);
        println!("{label}: matching, two stores in turn   admit {per:>8.2} µs/call ({n} calls)");
        let (per, n) = case_check(&set, &store);
        println!(
            "{label}: matching a budget class    check {per:>8.2} µs/call ({n} calls; no record)"
        );
    }
}

const PLAIN_CALLS: i64 = 200_000;
const BUDGET_CALLS: i64 = 20_000;
const CHECK_CALLS: i64 = 100_000;
/// Warm-up calls [`run`] makes before it starts the clock.
const WARM_UP: i64 = 100;

/// A call no budget class matches, no target argument; 1 ms apart.
#[inline(never)]
fn case_plain(set: &BreakerSet, store: &mut ControlStore) -> (f64, i64) {
    let plain = json!({"text": "hello"});
    let per = run(set, store, "echo", &plain, PLAIN_CALLS, MS);
    (per, PLAIN_CALLS + WARM_UP)
}

/// A call no budget class matches, with a fan-out target; 1 ms apart.
#[inline(never)]
fn case_target(set: &BreakerSet, store: &mut ControlStore) -> (f64, i64) {
    let target = json!({"repo": "r1", "text": "hello"});
    let per = run(set, store, "repo_get", &target, PLAIN_CALLS, MS);
    (per, PLAIN_CALLS + WARM_UP)
}

/// A call inside the `acl` budget; 10 s apart, so each is in a rate bucket of its own.
#[inline(never)]
fn case_budget(set: &BreakerSet, store: &mut ControlStore) -> (f64, i64) {
    let per = run(set, store, "acl_set", &acl_args(), BUDGET_CALLS, 10 * SEC);
    (per, BUDGET_CALLS + WARM_UP)
}

/// Two stores (as two processes) taking turns: each call first reads the other's row.
#[inline(never)]
fn case_two_stores(
    set: &BreakerSet,
    store: &mut ControlStore,
    other: &mut ControlStore,
) -> (f64, i64) {
    let rec = acl_args();
    let start = Instant::now();
    for i in 0..BUDGET_CALLS {
        let s = if i % 2 == 0 { &mut *store } else { &mut *other };
        let v = set
            .admit(s, "bot", "corp", "acl_set", &rec, clock(10 * SEC))
            .unwrap();
        assert!(matches!(v, Verdict::Pass { .. }), "{v:?}");
    }
    (per_call(start, BUDGET_CALLS), BUDGET_CALLS)
}

/// Right after the matching runs (their last 60 calls are in the window): `check` alone.
#[inline(never)]
fn case_check(set: &BreakerSet, store: &ControlStore) -> (f64, i64) {
    let rec = acl_args();
    let now = clock(0);
    let start = Instant::now();
    for i in 0..CHECK_CALLS {
        let v = set
            .check(store, "bot", "corp", "acl_set", &rec, now + i * MS)
            .unwrap();
        assert!(matches!(v, Verdict::Pass { .. }));
    }
    (per_call(start, CHECK_CALLS), CHECK_CALLS)
}

fn acl_args() -> serde_json::Value {
    json!({"recursive": true, "repo": "r1"})
}

fn per_call(start: Instant, n: i64) -> f64 {
    start.elapsed().as_secs_f64() * 1e6 / n as f64
}

/// Simulated time: moves forward only, `step` ns per call.
fn clock(step: i64) -> i64 {
    use std::sync::atomic::{AtomicI64, Ordering};
    static NOW: AtomicI64 = AtomicI64::new(0);
    let _ = NOW.compare_exchange(
        0,
        airlock_audit::now_unix_ns(),
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    NOW.fetch_add(step, Ordering::SeqCst) + step
}

const MS: i64 = 1_000_000;
const SEC: i64 = 1_000_000_000;

/// `n` calls, `step` ns apart (simulated time), after a warm-up; µs per call.
fn run(
    set: &BreakerSet,
    store: &mut ControlStore,
    tool: &str,
    args: &serde_json::Value,
    n: i64,
    step: i64,
) -> f64 {
    // Warm up statements and caches.
    for _ in 0..WARM_UP {
        set.admit(store, "bot", "corp", tool, args, clock(step))
            .unwrap();
    }
    let start = Instant::now();
    for _ in 0..n {
        let v = set
            .admit(store, "bot", "corp", tool, args, clock(step))
            .unwrap();
        assert!(matches!(v, Verdict::Pass { .. }), "{v:?}");
    }
    per_call(start, n)
}
