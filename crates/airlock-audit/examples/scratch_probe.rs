#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::time::Instant;
use rusqlite::Connection;
fn main() {
    let variant = std::env::args().nth(1).unwrap_or_default();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("x.db");
    let c = Connection::open(&db).unwrap();
    c.pragma_update(None, "journal_mode", "WAL").unwrap();
    c.pragma_update(None, "synchronous", "NORMAL").unwrap();
    if variant.contains("smallcache") { c.pragma_update(None, "cache_size", -256).unwrap(); }
    c.execute_batch("CREATE TABLE r (seq INTEGER PRIMARY KEY, a TEXT, b TEXT, c TEXT, d INTEGER)").unwrap();
    if variant.contains("idx") {
        c.execute_batch("CREATE INDEX ia ON r(a); CREATE INDEX ib ON r(b); CREATE INDEX id ON r(d);").unwrap();
    }
    let payload = "x".repeat(300);
    let mut seq = 0i64;
    for size in [1usize, 100, 1000] {
        let rounds = 20_000 / size.max(10);
        let t = Instant::now();
        for _ in 0..rounds {
            let tx = c.unchecked_transaction().unwrap();
            {
                let mut st = tx.prepare_cached("INSERT INTO r VALUES (?1, ?2, ?3, ?4, ?5)").unwrap();
                for _ in 0..size {
                    seq += 1;
                    st.execute(rusqlite::params![seq, "agent", "target", payload, seq]).unwrap();
                }
            }
            tx.commit().unwrap();
        }
        let s = t.elapsed().as_secs_f64();
        println!("{variant} size {size}: {:.1} µs/commit, {:.0} rec/s", s * 1e6 / rounds as f64, (rounds * size) as f64 / s);
    }
}
