//! Append, verify and redaction throughput of the audit store.
//!
//! `cargo run --release -p airlock-audit --example append_bench` (`-- spool`: only the
//! gateway's path, `AuditWriter::submit`, in both durability modes)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use airlock_audit::{
    now_unix_ns, redact, verify, AuditStore, AuditWriter, Decision, Durability, NewRecord,
    RecordKind, Submission,
};
use serde_json::json;

/// Stamps a batch with the current time, as the gateway would (the time index
/// then grows at its right edge, as in real use).
fn stamp(batch: &mut [NewRecord]) {
    let now = now_unix_ns();
    for (i, r) in batch.iter_mut().enumerate() {
        r.time_unix_ns = now + i64::try_from(i).unwrap();
    }
}

fn sample(i: u64) -> NewRecord {
    NewRecord::at(RecordKind::Call, 0)
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
        .decision(Decision::Allow)
        .reasons(["policy.forum.post"])
        .policy_digest("2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae")
}

/// Time this thread has spent on a CPU (user + system), from the scheduler's
/// own accounting: on a shared machine, wall time also counts other people's work.
fn cpu_time() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(Duration::ZERO, Duration::from_nanos)
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

    let mut one: Vec<NewRecord> = vec![sample(0)];
    let mut times = Vec::with_capacity(singles);
    for _ in 0..singles {
        stamp(&mut one);
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
        let mut batch: Vec<NewRecord> = (0..size as u64).map(sample).collect();
        let t = Instant::now();
        let cpu = cpu_time();
        for _ in 0..rounds {
            stamp(&mut batch);
            store.append(&batch).unwrap();
        }
        let secs = t.elapsed().as_secs_f64();
        let cpu_secs = (cpu_time() - cpu).as_secs_f64();
        let n = (size * rounds) as f64;
        println!(
            "{label}: group commit of {size:>4}: {:.0} records/s wall ({:.2} ms per commit); \
             {:.2} µs CPU per record = {:.0} records/s per busy core",
            n / secs,
            secs * 1e3 / rounds as f64,
            cpu_secs * 1e6 / n,
            n / cpu_secs
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

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

/// What one idle writer costs in memory: open, a few appends, then nothing.
fn bench_memory() {
    let dir = tempfile::tempdir().unwrap();
    let start = rss_kib();
    for i in 0..200 {
        std::hint::black_box(sample(i));
    }
    let before = rss_kib();
    println!(
        "memory: redaction patterns compiled and used: +{} KiB",
        before - start
    );
    let mut store = AuditStore::open(&dir.path().join("mem.db"), Durability::Process).unwrap();
    for i in 0..200 {
        store.append(&[sample(i)]).unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    println!(
        "memory: an open store after 200 appends: +{} KiB (process RSS {} KiB)",
        rss_kib() - before,
        rss_kib()
    );
}

/// The gateway's path: `AuditWriter::submit` (durable in the spool when it returns) and the
/// background fold into the chain.
fn bench_writer(durability: Durability) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bench.db");
    let writer = AuditWriter::start(&db, durability).unwrap();
    let (singles, batches) = match durability {
        Durability::Process => (20_000u64, 2_000u64),
        Durability::PowerLoss => (3_000, 300),
    };
    let label = match durability {
        Durability::Process => "durable vs kill -9: write(2)",
        Durability::PowerLoss => "durable vs power loss: write(2) + fdatasync",
    };
    // One record per submit: the call path of one sequential agent.
    let mut lat = Vec::new();
    for i in 0..singles {
        let mut r = sample(i);
        r.time_unix_ns = now_unix_ns();
        let t = Instant::now();
        writer.submit(vec![Submission::from(r)]).unwrap();
        lat.push(t.elapsed());
    }
    lat.sort();
    assert!(writer.flush(Duration::from_secs(60)));
    println!(
        "spool ({label}), one record per submit: p50 {:.1} µs, p99 {:.1} µs",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99)
    );
    // Batches of 100 (a burst of calls judged together), then until all are chained.
    let start = Instant::now();
    for b in 0..batches {
        let batch: Vec<Submission> = (0..100)
            .map(|i| {
                let mut r = sample(b * 100 + i);
                r.time_unix_ns = now_unix_ns() + i64::try_from(i).unwrap();
                Submission::from(r)
            })
            .collect();
        writer.submit(batch).unwrap();
    }
    let durable = start.elapsed();
    assert!(writer.flush(Duration::from_secs(120)));
    let chained = start.elapsed();
    let n = (batches * 100) as f64;
    println!(
        "spool ({label}), batches of 100: {:.0} records/s durable; {:.0} records/s into the hash chain (group commits by the folding thread)",
        n / durable.as_secs_f64(),
        n / chained.as_secs_f64()
    );
    writer.close();
    let report = verify(&db, None).unwrap();
    assert!(report.problem.is_none());
    assert_eq!(report.count, singles + batches * 100);
}

fn main() {
    bench_writer(Durability::Process);
    bench_writer(Durability::PowerLoss);
    if std::env::args().nth(1).as_deref() == Some("spool") {
        return;
    }
    bench_memory();
    bench(Durability::Process, "NORMAL (Process)");
    bench(Durability::PowerLoss, "FULL (PowerLoss)");
    bench_redact();
}
