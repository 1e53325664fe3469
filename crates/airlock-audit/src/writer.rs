//! [`AuditWriter`]: durable on the call path, chained in the background.
//!
//! `submit` writes a batch to this process's spool (one `write(2)`, durable against a crash of
//! the process when it returns) and queues it; a background thread appends everything queued to
//! the hash chain in one transaction, resolving each result's reference to its call's `seq`,
//! and clears the spool once the chain holds all of it. If SQLite is unavailable the records
//! stay in the spool and the thread retries; if the process dies they are recovered by the next
//! reader of the trail (see [`crate::spool`]).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::spool::{recover, EntryRef, Spool};
use crate::spool_format::SpooledRecord as Entry;
use crate::{AuditError, AuditStore, Durability, NewRecord};

/// A submitted record's key, for a later record to refer to it (a result to its call).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ticket(u64);

/// One record to submit, and the earlier record it refers to.
#[derive(Debug, Clone)]
pub struct Submission {
    pub record: NewRecord,
    pub refers_to: Option<Ticket>,
}

impl From<NewRecord> for Submission {
    fn from(record: NewRecord) -> Self {
        Submission {
            record,
            refers_to: None,
        }
    }
}

/// How long the folding thread lets records gather before a commit: a SQLite commit costs the
/// same for one record as for hundreds, and the spool already made them durable.
const GATHER: Duration = Duration::from_millis(5);
/// Commit at once when this many records are waiting.
const GATHER_MAX: usize = 1024;
/// How long the folding thread waits before retrying after a store error.
const RETRY: Duration = Duration::from_millis(200);
/// The largest emptied queue kept for reuse (an idle gateway should not hold a burst's worth).
const SPARE_MAX: usize = 256;
/// How many call keys are remembered for results that arrive later.
const MAX_REMEMBERED: usize = 100_000;

struct State {
    spool: Option<Spool>,
    next_key: u64,
    /// Submitted batches not taken by the folding thread yet, as submitted: moving each
    /// record into a queue of its own would cost the call path a copy per record.
    queue: Vec<Batch>,
    /// How many records `queue` holds.
    queued: usize,
    /// An emptied queue handed back by the folding thread, so `submit` does not reallocate.
    spare: Vec<Batch>,
    closed: bool,
    /// Keys below this are in the chain.
    folded_below: u64,
    last_error: Option<String>,
}

/// One `submit`: its records got the keys `first..first + items.len()`.
struct Batch {
    first: u64,
    items: Vec<Submission>,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    sync: bool,
}

/// The audit trail as the gateway writes it. See the module docs.
pub struct AuditWriter {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl AuditWriter {
    /// Opens the trail at `db`, folds the spools of dead gateways into it, and starts this
    /// process's spool and folding thread.
    pub fn start(db: &Path, durability: Durability) -> Result<AuditWriter, AuditError> {
        let mut store = AuditStore::open(db, durability)?;
        recover(db, &mut store)?;
        let spool = Spool::create(db, durability == Durability::PowerLoss)?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                spool: Some(spool),
                next_key: 0,
                queue: Vec::new(),
                queued: 0,
                spare: Vec::new(),
                closed: false,
                folded_below: 0,
                last_error: None,
            }),
            wake: Condvar::new(),
            sync: durability == Durability::PowerLoss,
        });
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("airlock-audit".into())
            .spawn(move || fold_loop(&thread_shared, store))
            .map_err(|e| AuditError::Spool {
                path: db.to_owned(),
                source: e,
            })?;
        Ok(AuditWriter {
            shared,
            thread: Some(thread),
        })
    }

    /// Makes the records durable (spool) and queues them for the chain. When this returns
    /// `Ok`, a crash of this process can no longer lose them.
    pub fn submit(&self, batch: Vec<Submission>) -> Result<Vec<Ticket>, AuditError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        for (index, s) in batch.iter().enumerate() {
            crate::store::validate(index, &s.record)?;
        }
        let mut state = lock(&self.shared.state);
        let first = state.next_key;
        let count = batch.len() as u64;
        let State {
            spool,
            queue,
            queued,
            next_key,
            ..
        } = &mut *state;
        let Some(spool) = spool.as_mut() else {
            return Err(AuditError::Closed);
        };
        spool.write(
            (first..).zip(&batch).map(|(key, s)| EntryRef {
                key,
                refers_to: s.refers_to.map(|t| t.0),
                record: &s.record,
            }),
            self.shared.sync,
        )?;
        *next_key += count;
        let was_empty = queue.is_empty();
        *queued += batch.len();
        queue.push(Batch {
            first,
            items: batch,
        });
        drop(state);
        if was_empty {
            self.shared.wake.notify_all();
        }
        Ok((first..first + count).map(Ticket).collect())
    }

    /// The last error the folding thread hit, if it has not recovered since.
    pub fn last_error(&self) -> Option<String> {
        lock(&self.shared.state).last_error.clone()
    }

    /// Blocks until everything submitted so far is in the chain (or `timeout` passes).
    pub fn flush(&self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        let mut state = lock(&self.shared.state);
        let target = state.next_key;
        while state.folded_below < target {
            let now = std::time::Instant::now();
            if now >= deadline {
                return false;
            }
            state = match self.shared.wake.wait_timeout(state, deadline - now) {
                Ok((s, _)) => s,
                Err(p) => p.into_inner().0,
            };
        }
        true
    }

    /// Folds everything into the chain, removes the spool and stops the thread. Records that
    /// could not be folded stay in the spool for recovery.
    pub fn close(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        lock(&self.shared.state).closed = true;
        self.shared.wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for AuditWriter {
    fn drop(&mut self) {
        self.stop();
    }
}

fn fold_loop(shared: &Shared, mut store: AuditStore) {
    let mut seq_of: HashMap<u64, u64> = HashMap::new();
    // Taken from the queue, not yet in the chain (kept across a failed append, for the retry).
    let mut pending: Vec<Entry> = Vec::new();
    loop {
        let (mut batches, closed) = {
            let mut state = lock(&shared.state);
            while state.queue.is_empty() && pending.is_empty() && !state.closed {
                state = match shared.wake.wait(state) {
                    Ok(s) => s,
                    Err(p) => p.into_inner(),
                };
            }
            if !state.closed && pending.is_empty() && state.queued < GATHER_MAX {
                // Let more records gather (submits keep waking the condvar, so sleep).
                drop(state);
                std::thread::sleep(GATHER);
                state = lock(&shared.state);
            }
            state.queued = 0;
            let spare = std::mem::take(&mut state.spare);
            (std::mem::replace(&mut state.queue, spare), state.closed)
        };
        for b in batches.drain(..) {
            pending.extend((b.first..).zip(b.items).map(|(key, s)| Entry {
                key,
                refers_to: s.refers_to.map(|t| t.0),
                record: s.record,
            }));
        }
        if pending.is_empty() && closed {
            let mut state = lock(&shared.state);
            if let Some(spool) = state.spool.take() {
                spool.remove();
            }
            return;
        }
        // A reference resolves to a record chained earlier, or to one in this very batch.
        let position: HashMap<u64, usize> = pending
            .iter()
            .enumerate()
            .map(|(i, e)| (e.key, i))
            .collect();
        let mut links = Vec::with_capacity(pending.len());
        for e in pending.iter_mut() {
            let earlier = e.refers_to.and_then(|k| seq_of.get(&k));
            if let Some(seq) = earlier {
                e.record.ref_seq = Some(*seq);
            }
            links.push(if earlier.is_none() {
                e.refers_to.and_then(|k| position.get(&k).copied())
            } else {
                None
            });
        }
        let records: Vec<&NewRecord> = pending.iter().map(|e| &e.record).collect();
        let appended = store.append_refs(&records, &links);
        drop(records);
        match appended {
            Ok(appended) => {
                for (e, a) in pending.iter().zip(&appended) {
                    if e.record.kind == crate::RecordKind::Call {
                        seq_of.insert(e.key, a.seq);
                    }
                    if let Some(k) = e.refers_to {
                        seq_of.remove(&k);
                    }
                }
                if seq_of.len() > MAX_REMEMBERED {
                    let oldest = pending
                        .first()
                        .map_or(0, |e| e.key)
                        .saturating_sub(MAX_REMEMBERED as u64);
                    seq_of.retain(|k, _| *k >= oldest);
                }
                let folded_below = pending.last().map(|e| e.key + 1);
                pending.clear();
                if pending.capacity() > 64 {
                    pending = Vec::new();
                }
                let mut state = lock(&shared.state);
                state.folded_below = folded_below.unwrap_or(state.folded_below);
                state.last_error = None;
                if batches.capacity() <= SPARE_MAX {
                    state.spare = batches;
                }
                if state.queue.is_empty() {
                    if let Some(spool) = state.spool.as_mut() {
                        if let Err(e) = spool.clear() {
                            state.last_error = Some(e.to_string());
                        }
                    }
                }
                drop(state);
                shared.wake.notify_all();
            }
            Err(e) => {
                let mut state = lock(&shared.state);
                state.last_error = Some(e.to_string());
                if state.closed {
                    // Give up: the spool keeps the records for the next reader to recover.
                    state.spool.take();
                    return;
                }
                drop(state);
                std::thread::sleep(RETRY);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::{verify, Query, RecordKind, ResultStatus};

    #[test]
    fn a_result_finds_its_call_whether_chained_in_the_same_commit_or_an_earlier_one() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("audit.db");
        let writer = AuditWriter::start(&db, Durability::Process).unwrap();
        let call = |id: &str| NewRecord::now(RecordKind::Call).agent("bot").request_id(id);
        // Same commit: the result is submitted within the gathering window of its call.
        let t1 = writer.submit(vec![call("1").into()]).unwrap();
        writer
            .submit(vec![Submission {
                record: NewRecord::now(RecordKind::Result).status(ResultStatus::Ok),
                refers_to: Some(t1[0]),
            }])
            .unwrap();
        assert!(writer.flush(Duration::from_secs(10)));
        // Earlier commit: the call is chained before its result arrives.
        let t2 = writer.submit(vec![call("2").into()]).unwrap();
        assert!(writer.flush(Duration::from_secs(10)));
        writer
            .submit(vec![Submission {
                record: NewRecord::now(RecordKind::Result).status(ResultStatus::IsError),
                refers_to: Some(t2[0]),
            }])
            .unwrap();
        writer.close();
        let store = AuditStore::open_read_only(&db).unwrap();
        let calls = store
            .query(&Query {
                kind: Some(RecordKind::Call.as_str().into()),
                ..Query::default()
            })
            .unwrap();
        let status: Vec<Option<&str>> = calls.iter().map(|c| c.result_status.as_deref()).collect();
        assert_eq!(status, vec![Some("ok"), Some("is_error")]);
        assert!(verify(&db, None).unwrap().problem.is_none());
        assert_eq!(std::fs::read_dir(crate::spool_dir(&db)).unwrap().count(), 0);
    }

    #[test]
    fn records_a_failed_commit_could_not_chain_are_retried_in_order_with_references() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("audit.db");
        let writer = AuditWriter::start(&db, Durability::Process).unwrap();
        // Another connection makes every insert fail until it lets go.
        let other = rusqlite::Connection::open(&db).unwrap();
        other
            .execute_batch(
                "CREATE TRIGGER refuse BEFORE INSERT ON records \
                 BEGIN SELECT RAISE(ABORT, 'refused for the test'); END;",
            )
            .unwrap();
        let call = writer
            .submit(vec![NewRecord::now(RecordKind::Call)
                .agent("bot")
                .request_id("1")
                .into()])
            .unwrap();
        writer
            .submit(vec![Submission {
                record: NewRecord::now(RecordKind::Result).status(ResultStatus::Ok),
                refers_to: Some(call[0]),
            }])
            .unwrap();
        let mut waited = 0;
        while writer.last_error().is_none() && waited < 1_000 {
            std::thread::sleep(Duration::from_millis(10));
            waited += 1;
        }
        let error = writer.last_error().unwrap();
        assert!(error.contains("refused for the test"), "{error}");
        // Submits go on while the chain is unavailable (the spool holds them).
        writer
            .submit(vec![NewRecord::now(RecordKind::Call)
                .agent("bot")
                .request_id("2")
                .into()])
            .unwrap();
        other.execute_batch("DROP TRIGGER refuse;").unwrap();
        assert!(writer.flush(Duration::from_secs(30)));
        assert_eq!(writer.last_error(), None);
        writer.close();
        let store = AuditStore::open_read_only(&db).unwrap();
        let all = store.query(&Query::default()).unwrap();
        let ids: Vec<Option<&str>> = all.iter().map(|r| r.request_id.as_deref()).collect();
        assert_eq!(ids, vec![Some("1"), None, Some("2")]);
        assert_eq!(all[1].ref_seq, Some(all[0].seq));
        assert!(verify(&db, None).unwrap().problem.is_none());
    }
}
