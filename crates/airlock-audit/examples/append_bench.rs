//! Append, verify and redaction throughput of the audit store.
//!
//! `cargo run --release -p airlock-audit --example append_bench`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use airlock_audit::{kinds, redact, verify, AuditStore, Durability, NewRecord};
use serde_json::json;

fn sample(i: u64) -> NewRecord {
    NewRecord::at(kinds::CALL, 1_700_000_000_000_000_000 + i64::try_from(i).unwrap())
        .agent("build-bot")
        .on_behalf_of("alice@example.com")
        .session("7f3c2a")
        .server("forum")
        .method("tools/call")
        .target("post_message")
        .request_id(i.to_string())
        .args(
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            &json!({"channel": "general", "text": format!("status update {i}"), "notify": true}),
        )
        .decision("allow")
        .reasons(["policy.forum.post"])
        .policy_digest("2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae")
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx].as_secs_f64() * 1e6
}

fn bench(durability: Durability, label: &str) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bench.db");
    let mut store = AuditStore::open(&db, durability).unwrap();
    let (singles, groups100, groups1000) = match durability {
        Durability::Process => (5_000, 300, 60),
        Durability::PowerLoss => (1_000, 100, 30),
    };

    let one: Vec<NewRecord> = vec![sample(0)];
    let mut times = Vec::with_capacity(singles);
    for _ in 0..singles {
        let t = Instant::now();
        store.append(&one).unwrap();
        times.push(t.elapsed());
    }
    times.sort();
    let total: f64 = times.iter().map(Duration::as_secs_f64).sum();
    println!(
        "{label}: single-record append: p50 {:.1} µs, p99 {:.1} µs, {:.0} commits/s",
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        singles as f64 / total
    );

    for (size, rounds) in [(100usize, groups100), (1000, groups1000)] {
        let batch: Vec<NewRecord> = (0..size as u64).map(sample).collect();
        let t = Instant::now();
        for _ in 0..rounds {
            store.append(&batch).unwrap();
        }
        let secs = t.elapsed().as_secs_f64();
        println!(
            "{label}: group commit of {size:>4}: {:.0} records/s ({:.2} ms per commit)",
            (size * rounds) as f64 / secs,
            secs * 1e3 / rounds as f64
        );
    }

    let count = store.count().unwrap();
    let t = Instant::now();
    let report = verify(&db, None).unwrap();
    let secs = t.elapsed().as_secs_f64();
    assert!(report.problem.is_none());
    println!(
        "{label}: verify: {count} records in {:.0} ms ({:.0} records/s); file {} KiB",
        secs * 1e3,
        count as f64 / secs,
        std::fs::metadata(&db).unwrap().len() / 1024
    );
}

fn bench_redact() {
    let plain = json!({"channel": "general", "text": "status update 42", "notify": true,
                       "meta": {"path": "/srv/app", "max_tokens": 100}});
    let secret = json!({"url": "https://api.example.com", "headers": {"Authorization": "Bearer abcdef0123456789abcdef"},
                        "cmd": "deploy --password=hunter22 --region eu", "key": "AKIAIOSFODNN7EXAMPLE"});
    for (name, v) in [("plain", &plain), ("with secrets", &secret)] {
        let n = 20_000;
        let t = Instant::now();
        for _ in 0..n {
            std::hint::black_box(redact(std::hint::black_box(v)));
        }
        println!(
            "redact ({name} args): {:.2} µs per call",
            t.elapsed().as_secs_f64() * 1e6 / n as f64
        );
    }
}

fn main() {
    bench(Durability::Process, "NORMAL (Process)");
    bench(Durability::PowerLoss, "FULL (PowerLoss)");
    bench_redact();
}
