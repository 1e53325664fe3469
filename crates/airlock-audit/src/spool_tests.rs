#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;

use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;
use crate::spool_format::{encode_spool, MAGIC};
use crate::{verify, Decision, Durability, Query, RecordKind, ResultStatus, SpoolContents};

fn entry(key: u64, kind: RecordKind, refers_to: Option<u64>) -> SpooledRecord {
    SpooledRecord {
        key,
        refers_to,
        record: NewRecord::at(kind, 1_000 + i64::try_from(key).unwrap())
            .agent("bot")
            .session("s1")
            .request_id(format!("{key}")),
    }
}

/// A record with every field set, JSON and non-ASCII text included.
fn full(key: u64) -> SpooledRecord {
    SpooledRecord {
        key,
        refers_to: Some(key.wrapping_sub(1)),
        record: NewRecord::at(RecordKind::Call, -5)
            .agent("build-bot")
            .on_behalf_of("alice@example.com")
            .task("release")
            .session("7f3c2a")
            .server("forum")
            .method("tools/call")
            .target("post_message")
            .request_id("\"42\"\n")
            .ref_seq(u64::try_from(i64::MAX).unwrap())
            .args(
                "d1g3st",
                &json!({"text": "héllo 😀", "n": [1, -2.5, null, true]}),
            )
            .decision(Decision::Allow)
            .reasons(["policy.a", "", "policy.ü"])
            .policy_digest("p")
            .status(ResultStatus::Ok)
            .duration_us(17)
            .detail(&json!({"paths": ["/etc/airlock.toml"]})),
    }
}

fn write_spool(spool: &mut Spool, entries: &[SpooledRecord]) {
    spool
        .write(
            entries.iter().map(|e| EntryRef {
                key: e.key,
                refers_to: e.refers_to,
                record: &e.record,
            }),
            false,
        )
        .unwrap();
}

/// The previous build's encoding: one JSON object per line.
fn legacy_line(e: &SpooledRecord) -> String {
    let mut v = json!({"k": e.key, "r": e.record});
    if let Some(k) = e.refers_to {
        v["refers_to"] = json!(k);
    }
    format!("{v}\n")
}

fn complete(records: Vec<SpooledRecord>) -> SpoolContents {
    SpoolContents {
        records,
        end: SpoolEnd::Complete,
    }
}

#[test]
fn entries_read_back_as_written() {
    let entries = vec![full(7), entry(8, RecordKind::Result, Some(7)), full(0)];
    let bytes = encode_spool(&entries).unwrap();
    assert!(bytes.starts_with(b"AIRLOCK-SPOOL\0\x02\x00"));
    assert_eq!(decode_spool(&bytes), complete(entries));
    // Created, and nothing (or part of the header) written yet.
    for cut in 0..=HEADER_LEN {
        assert_eq!(decode_spool(&bytes[..cut]), complete(Vec::new()), "{cut}");
    }
}

/// The encoding is a file format: a spool left by this build must read the same in the next.
#[test]
fn the_encoding_matches_the_golden_file() {
    let golden = include_bytes!("../../../fuzz/seeds/spool/call_and_result.spool");
    let call = NewRecord::at(RecordKind::Call, 1_764_624_000_000_000_000)
        .agent("bench")
        .session("s1")
        .server("everything")
        .method("tools/call")
        .target("echo")
        .request_id("7")
        .args(
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            &json!({"message": "hi"}),
        )
        .decision(Decision::Allow)
        .reasons(["policy0"])
        .policy_digest("2c26b46b");
    let result = NewRecord::at(RecordKind::Result, 1_764_624_000_000_100_000)
        .agent("bench")
        .session("s1")
        .request_id("7")
        .status(ResultStatus::Ok);
    let entries = vec![
        SpooledRecord {
            key: 0,
            refers_to: None,
            record: call,
        },
        SpooledRecord {
            key: 1,
            refers_to: Some(0),
            record: result,
        },
    ];
    assert_eq!(encode_spool(&entries).unwrap(), golden);
    assert_eq!(decode_spool(golden), complete(entries));
}

#[test]
fn a_torn_last_entry_is_dropped_at_every_byte_and_the_earlier_ones_kept() {
    let entries = vec![full(1), entry(2, RecordKind::Call, None), full(3)];
    let first_two = encode_spool(&entries[..2]).unwrap();
    let bytes = encode_spool(&entries).unwrap();
    let last = first_two.len();
    for cut in last + 1..bytes.len() {
        assert_eq!(
            decode_spool(&bytes[..cut]),
            SpoolContents {
                records: entries[..2].to_vec(),
                end: SpoolEnd::Torn { offset: last },
            },
            "cut at {cut}"
        );
    }
    assert_eq!(
        decode_spool(&bytes[..last]),
        complete(entries[..2].to_vec())
    );
}

#[test]
fn a_damaged_entry_ends_the_spool_there() {
    let entries = vec![full(1), full(2), full(3)];
    let bytes = encode_spool(&entries).unwrap();
    let second = encode_spool(&entries[..1]).unwrap().len();
    let third = encode_spool(&entries[..2]).unwrap().len();
    // Any flipped bit of the second entry's checksum or body is caught by the checksum.
    for at in second + 4..third {
        let mut damaged = bytes.clone();
        damaged[at] ^= 0x10;
        assert_eq!(
            decode_spool(&damaged),
            SpoolContents {
                records: entries[..1].to_vec(),
                end: SpoolEnd::Damaged {
                    offset: second,
                    reason: "checksum mismatch",
                },
            },
            "flipped byte {at}"
        );
    }
}

#[test]
fn a_well_framed_entry_the_store_would_refuse_is_damage() {
    let mut bad = full(1);
    bad.record.duration_us = Some(u64::MAX);
    let mut bytes = encode_spool(&[full(0)]).unwrap();
    encode_entry(&mut bytes, bad.key, bad.refers_to, &bad.record).unwrap();
    let contents = decode_spool(&bytes);
    assert_eq!(contents.records, vec![full(0)]);
    assert!(matches!(
        contents.end,
        SpoolEnd::Damaged {
            reason: "the record breaks a store rule",
            ..
        }
    ));
}

#[test]
fn a_kind_decision_or_status_this_build_does_not_know_is_damage() {
    // An entry of kind `exec`, decision `deny`, status `killed`, with each word in turn
    // replaced by one of the same length this build does not know, checksum made right.
    let odd = NewRecord::at(RecordKind::Exec, 1)
        .decision(Decision::Deny)
        .status(ResultStatus::Killed);
    let mut good = Vec::new();
    encode_entry(&mut good, 1, None, &odd).unwrap();
    for (word, other, reason) in [
        (&b"exec"[..], &b"exek"[..], "an unknown record kind"),
        (b"deny", b"dent", "an unknown decision"),
        (b"killed", b"kilted", "an unknown status"),
    ] {
        let mut entry = good.clone();
        let at = entry.windows(word.len()).position(|w| w == word).unwrap();
        entry[at..at + word.len()].copy_from_slice(other);
        let mut crc = crc32fast::Hasher::new();
        crc.update(&entry[..4]);
        crc.update(&entry[8..]);
        entry[4..8].copy_from_slice(&crc.finalize().to_le_bytes());
        let mut bytes = encode_spool(&[full(0)]).unwrap();
        bytes.extend_from_slice(&entry);
        let contents = decode_spool(&bytes);
        assert_eq!(contents.records, vec![full(0)]);
        assert!(
            matches!(contents.end, SpoolEnd::Damaged { reason: r, .. } if r == reason),
            "{:?}",
            contents.end
        );
    }
}

#[test]
fn a_dead_gateways_spool_is_folded_once_with_references_resolved() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("audit.db");
    let mut store = AuditStore::open(&db, Durability::Process).unwrap();
    // Entry 0 made it into the chain before the crash; 1 and its result 2 did not.
    store
        .append(&[entry(0, RecordKind::Call, None).record])
        .unwrap();
    let mut spool = Spool::create(&db, false).unwrap();
    write_spool(
        &mut spool,
        &[
            entry(0, RecordKind::Call, None),
            entry(1, RecordKind::Call, None),
        ],
    );
    write_spool(&mut spool, &[entry(2, RecordKind::Result, Some(1))]);
    // A torn last entry: the write it belonged to never returned.
    let torn = encode_spool(&[entry(3, RecordKind::Call, None)]).unwrap();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&spool.path)
        .unwrap()
        .write_all(&torn[HEADER_LEN..torn.len() - 3])
        .unwrap();
    // While its gateway holds the lock, the spool is left alone.
    assert_eq!(recover(&db, &mut store).unwrap(), 0);
    drop(spool); // the gateway dies: the lock goes with it
    assert_eq!(recover(&db, &mut store).unwrap(), 2);
    assert_eq!(recover(&db, &mut store).unwrap(), 0);
    let all = store.query(&Query::default()).unwrap();
    assert_eq!(all.len(), 3);
    let call = all
        .iter()
        .find(|r| r.request_id.as_deref() == Some("1"))
        .unwrap();
    let result = all
        .iter()
        .find(|r| r.known_kind() == Some(RecordKind::Result))
        .unwrap();
    assert_eq!(result.ref_seq, Some(call.seq));
    assert!(verify(&db, None).unwrap().problem.is_none());
    assert_eq!(std::fs::read_dir(spool_dir(&db)).unwrap().count(), 0);
}

#[test]
fn a_spool_of_the_previous_build_is_still_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("audit.db");
    let mut store = AuditStore::open(&db, Durability::Process).unwrap();
    store
        .append(&[entry(0, RecordKind::Call, None).record])
        .unwrap();
    let lines: String = [
        entry(0, RecordKind::Call, None),
        entry(1, RecordKind::Call, None),
        entry(2, RecordKind::Result, Some(1)),
        full(3),
    ]
    .iter()
    .map(legacy_line)
    .collect();
    std::fs::create_dir_all(spool_dir(&db)).unwrap();
    let path = spool_dir(&db).join("123-456.spool");
    std::fs::write(&path, format!("{lines}{{\"k\":4,\"r\":{{\"time_unix")).unwrap();
    assert_eq!(recover(&db, &mut store).unwrap(), 3);
    let all = store.query(&Query::default()).unwrap();
    assert_eq!(all.len(), 4);
    let result = all
        .iter()
        .find(|r| r.known_kind() == Some(RecordKind::Result))
        .unwrap();
    assert_eq!(result.ref_seq, Some(all[1].seq));
    assert_eq!(all[3].args_redacted, full(3).record.args_redacted);
    assert_eq!(all[3].reasons, full(3).record.reasons);
    assert!(!path.exists());
    assert!(verify(&db, None).unwrap().problem.is_none());
}

#[test]
fn a_damaged_spool_is_folded_up_to_the_damage_and_kept_aside() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("audit.db");
    let mut store = AuditStore::open(&db, Durability::Process).unwrap();
    let entries = [
        entry(0, RecordKind::Call, None),
        entry(1, RecordKind::Call, None),
    ];
    let mut bytes = encode_spool(&entries).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::create_dir_all(spool_dir(&db)).unwrap();
    let path = spool_dir(&db).join("1-2.spool");
    std::fs::write(&path, &bytes).unwrap();
    assert_eq!(recover(&db, &mut store).unwrap(), 1);
    assert_eq!(store.count().unwrap(), 1);
    assert!(!path.exists());
    assert_eq!(
        std::fs::read(spool_dir(&db).join("1-2.spool.damaged")).unwrap(),
        bytes
    );
    assert_eq!(recover(&db, &mut store).unwrap(), 0);
}

#[test]
fn a_spool_of_an_unknown_encoding_is_an_error_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("audit.db");
    let mut store = AuditStore::open(&db, Durability::Process).unwrap();
    let mut bytes = encode_spool(&[full(1)]).unwrap();
    bytes[MAGIC.len()] = 9;
    assert_eq!(
        decode_spool(&bytes).end,
        SpoolEnd::Unsupported { version: 9 }
    );
    std::fs::create_dir_all(spool_dir(&db)).unwrap();
    let path = spool_dir(&db).join("1-2.spool");
    std::fs::write(&path, &bytes).unwrap();
    let err = recover(&db, &mut store).unwrap_err();
    assert!(err.to_string().contains("version 9"), "{err}");
    assert!(path.exists());
    assert_eq!(store.count().unwrap(), 0);
}

#[test]
fn a_fragment_left_by_a_failed_write_is_cut_off_before_the_next_one() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("audit.db");
    let mut spool = Spool::create(&db, false).unwrap();
    write_spool(&mut spool, &[full(0)]);
    // What a write that failed half way (ENOSPC) leaves behind.
    let fragment = encode_spool(&[full(1)]).unwrap();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&spool.path)
        .unwrap()
        .write_all(&fragment[HEADER_LEN..HEADER_LEN + 20])
        .unwrap();
    spool.torn = true;
    write_spool(&mut spool, &[full(2)]);
    let bytes = std::fs::read(&spool.path).unwrap();
    assert_eq!(decode_spool(&bytes), complete(vec![full(0), full(2)]));
    // Clearing keeps the header, and the spool goes on from there.
    spool.clear().unwrap();
    write_spool(&mut spool, &[full(3)]);
    let bytes = std::fs::read(&spool.path).unwrap();
    assert_eq!(decode_spool(&bytes), complete(vec![full(3)]));
}

// === property: encode → decode is the identity ===

fn text() -> impl Strategy<Value = String> {
    prop_oneof![any::<String>(), "[a-z0-9_./-]{0,12}"]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |x| x.is_finite())
            .prop_map(Value::from),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn small_u64() -> impl Strategy<Value = u64> {
    0..=u64::try_from(i64::MAX).unwrap()
}

fn new_record() -> impl Strategy<Value = NewRecord> {
    let who = (
        any::<i64>(),
        prop::sample::select(RecordKind::ALL),
        prop::option::of(text()),
        prop::option::of(text()),
        prop::option::of(text()),
        prop::option::of(text()),
        prop::option::of(text()),
        prop::option::of(text()),
        prop::option::of(text()),
        prop::option::of(text()),
    );
    let what = (
        prop::option::of(small_u64()),
        prop::option::of(text()),
        prop::option::of(json_value()),
        prop::option::of(prop::sample::select(Decision::ALL)),
        prop::collection::vec(text(), 0..4),
        prop::option::of(text()),
        prop::option::of(prop::sample::select(ResultStatus::ALL)),
        prop::option::of(small_u64()),
        prop::option::of(json_value()),
    );
    (who, what).prop_map(
        |(
            (
                time_unix_ns,
                kind,
                agent,
                on_behalf_of,
                task,
                session,
                server,
                method,
                target,
                request_id,
            ),
            (
                ref_seq,
                args_digest,
                args_redacted,
                decision,
                reasons,
                policy_digest,
                status,
                duration_us,
                detail,
            ),
        )| NewRecord {
            time_unix_ns,
            kind,
            agent,
            on_behalf_of,
            task,
            session,
            server,
            method,
            target,
            request_id,
            ref_seq,
            args_digest,
            args_redacted,
            decision,
            reasons,
            policy_digest,
            status,
            duration_us,
            detail,
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn any_record_reads_back_as_written(
        records in prop::collection::vec((any::<u64>(), prop::option::of(any::<u64>()), new_record()), 1..4)
    ) {
        let entries: Vec<SpooledRecord> = records
            .into_iter()
            .map(|(key, refers_to, record)| SpooledRecord { key, refers_to, record })
            .collect();
        let bytes = encode_spool(&entries).unwrap();
        prop_assert_eq!(decode_spool(&bytes), complete(entries));
    }
}

// === issue 15, item 10: a spool is created under its lock ===

#[test]
fn a_recovery_while_a_spool_is_created_leaves_it_alone() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("audit.db");
    let mut store = AuditStore::open(&db, Durability::Process).unwrap();
    // Another process recovers at the worst moment: the file exists, its lock is not taken.
    let mut spool = Spool::create_with(&db, false, || {
        assert_eq!(recover(&db, &mut store).unwrap(), 0);
    })
    .unwrap();
    assert!(spool.path.exists(), "recovery took a spool being created");
    write_spool(&mut spool, &[entry(1, RecordKind::Call, None)]);
    assert_eq!(
        recover(&db, &mut store).unwrap(),
        0,
        "a live spool was read"
    );
    drop(spool); // its gateway dies: what it wrote is recovered
    assert_eq!(recover(&db, &mut store).unwrap(), 1);
    assert_eq!(store.query(&Query::default()).unwrap().len(), 1);
}

#[test]
fn spools_created_while_recovery_runs_lose_no_record() {
    use std::sync::atomic::{AtomicBool, Ordering};
    const SPOOLS: u64 = 300;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("audit.db");
    drop(AuditStore::open(&db, Durability::Process).unwrap());
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let recoverer = {
        let (db, stop) = (db.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut store = AuditStore::open(&db, Durability::Process).unwrap();
            while !stop.load(Ordering::Relaxed) {
                recover(&db, &mut store).unwrap();
            }
        })
    };
    for key in 0..SPOOLS {
        let mut spool = Spool::create(&db, false).unwrap();
        assert!(
            spool.path.exists(),
            "spool {key} was taken while being created"
        );
        write_spool(&mut spool, &[entry(key, RecordKind::Call, None)]);
        drop(spool); // a gateway that died: its record is the recoverer's to fold
    }
    stop.store(true, Ordering::Relaxed);
    recoverer.join().unwrap();
    let mut store = AuditStore::open(&db, Durability::Process).unwrap();
    recover(&db, &mut store).unwrap();
    assert_eq!(
        store.query(&Query::default()).unwrap().len() as u64,
        SPOOLS,
        "records written to a spool were lost"
    );
}
