//! Cost of breaker accounting per call: `admit` (check + record) for a call no
//! budget class matches (loop detection on and off) and for one that matches
//! a budget (a row appended to the agent's journal under its lock), alone and
//! with two stores on one file taking turns (each call reads the other's row).
//!
//! `cargo run --release -p airlock-control --example breaker_bench [DIR]`
//! (DIR: where the database goes; default a temporary directory).

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
    println!("database in {}", dir.display());
    for loops in [false, true] {
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

        let plain = json!({"text": "hello"});
        let per = run(&set, &mut store, "echo", &plain, 200_000, MS);
        println!("{label}: non-matching call          admit {per:>8.2} µs/call");

        let target = json!({"repo": "r1", "text": "hello"});
        let per = run(&set, &mut store, "repo_get", &target, 200_000, MS);
        println!("{label}: non-matching, with target  admit {per:>8.2} µs/call");

        let rec = json!({"recursive": true, "repo": "r1"});
        let per = run(&set, &mut store, "acl_set", &rec, 20_000, 10 * SEC);
        println!("{label}: matching a budget class    admit {per:>8.2} µs/call (journal append)");

        // Two stores (as two processes) taking turns: each call first reads the other's row.
        let mut other = ControlStore::open(&db).unwrap();
        let n = 20_000;
        let start = Instant::now();
        for i in 0..n {
            let s = if i % 2 == 0 { &mut store } else { &mut other };
            let v = set
                .admit(s, "bot", "corp", "acl_set", &rec, clock(10 * SEC))
                .unwrap();
            assert!(matches!(v, Verdict::Pass { .. }), "{v:?}");
        }
        let per = start.elapsed().as_secs_f64() * 1e6 / f64::from(n);
        println!("{label}: matching, two stores in turn   admit {per:>8.2} µs/call");

        // Right after the matching run: its last 60 calls are in the window.
        let now = clock(0);
        let n = 100_000;
        let start = Instant::now();
        for i in 0..n {
            let v = set
                .check(&store, "bot", "corp", "acl_set", &rec, now + i * MS)
                .unwrap();
            assert!(matches!(v, Verdict::Pass { .. }));
        }
        let per = start.elapsed().as_secs_f64() * 1e6 / n as f64;
        println!("{label}: matching a budget class    check {per:>8.2} µs/call (no record)");
    }
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
    for _ in 0..100 {
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
    start.elapsed().as_secs_f64() * 1e6 / n as f64
}
