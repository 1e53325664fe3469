//! The spool: a per-process, append-only file that makes a record durable with one `write`.
//!
//! A SQLite commit costs a dozen syscalls (WAL frames, locks); on the call path that is most of
//! a gateway's added latency. So the gateway writes each batch of records to its spool with a
//! single `write(2)` — once it returns, the record survives a `kill -9` of the process, exactly
//! like a WAL commit with `synchronous=NORMAL` — and a background thread ([`crate::AuditWriter`])
//! folds the spool into the hash chain in large transactions.
//!
//! Each spool lives at `<db>.spool/<pid>-<start ns>.spool` and is locked (`flock`) by its
//! process while it runs. A spool that nobody holds belongs to a gateway that died before
//! folding it; [`recover`] folds it into the chain (skipping what was already folded) and
//! removes it. Every reader of the trail recovers first, so a crash never hides a record.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{AuditError, AuditStore, NewRecord};

/// One line of a spool: a record, its key in this spool, and the key of the record it refers
/// to (a result's call), resolved to a `seq` when folded.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Entry {
    pub(crate) k: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) refers_to: Option<u64>,
    pub(crate) r: NewRecord,
}

/// The directory holding the spools of the trail at `db`.
pub fn spool_dir(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".spool");
    PathBuf::from(name)
}

/// This process's spool, locked for as long as it is open.
#[derive(Debug)]
pub(crate) struct Spool {
    file: File,
    path: PathBuf,
    /// Bytes written since the spool was last cleared.
    len: u64,
    buf: Vec<u8>,
}

impl Spool {
    pub(crate) fn create(db: &Path) -> Result<Spool, AuditError> {
        let dir = spool_dir(db);
        std::fs::create_dir_all(&dir).map_err(|e| spool_io(&dir, e))?;
        let path = dir.join(format!(
            "{}-{}.spool",
            std::process::id(),
            crate::now_unix_ns()
        ));
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(|e| spool_io(&path, e))?;
        // The lock tells recovery this spool's writer is alive.
        file.try_lock().map_err(|e| {
            spool_io(
                &path,
                std::io::Error::other(format!("cannot lock a new spool: {e}")),
            )
        })?;
        Ok(Spool {
            file,
            path,
            len: 0,
            buf: Vec::with_capacity(4096),
        })
    }

    /// Writes the entries with one `write(2)`: durable against a crash of this process when it
    /// returns. `sync` adds an fdatasync, for power-loss durability.
    pub(crate) fn write(&mut self, entries: &[Entry], sync: bool) -> Result<(), AuditError> {
        self.buf.clear();
        for e in entries {
            serde_json::to_writer(&mut self.buf, e).map_err(|err| AuditError::InvalidRecord {
                index: 0,
                reason: format!("cannot encode for the spool: {err}"),
            })?;
            self.buf.push(b'\n');
        }
        self.file
            .write_all(&self.buf)
            .map_err(|e| spool_io(&self.path, e))?;
        if sync {
            self.file.sync_data().map_err(|e| spool_io(&self.path, e))?;
        }
        self.len += self.buf.len() as u64;
        Ok(())
    }

    /// Forgets everything written so far: called once all of it is in the chain.
    pub(crate) fn clear(&mut self) -> Result<(), AuditError> {
        if self.len > 0 {
            self.file.set_len(0).map_err(|e| spool_io(&self.path, e))?;
            self.len = 0;
        }
        Ok(())
    }

    /// Removes the spool file; only when everything in it is in the chain.
    pub(crate) fn remove(self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn spool_io(path: &Path, source: std::io::Error) -> AuditError {
    AuditError::Spool {
        path: path.to_owned(),
        source,
    }
}

/// Folds the spools of dead gateways into the chain and removes them. Returns how many records
/// were added. Spools of running gateways (locked) are left alone.
pub fn recover(db: &Path, store: &mut AuditStore) -> Result<usize, AuditError> {
    let dir = spool_dir(db);
    let Ok(listing) = std::fs::read_dir(&dir) else {
        return Ok(0);
    };
    let mut paths: Vec<PathBuf> = listing
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "spool"))
        .collect();
    paths.sort();
    let mut added = 0;
    for path in paths {
        let Ok(file) = OpenOptions::new().read(true).write(true).open(&path) else {
            continue;
        };
        if file.try_lock().is_err() {
            continue; // a live gateway's spool
        }
        let entries = read_entries(&file);
        added += fold_missing(store, &entries)?;
        std::fs::remove_file(&path).map_err(|e| spool_io(&path, e))?;
    }
    Ok(added)
}

/// The entries of a spool; a torn last line (the process died mid-write) is dropped: the
/// write it belonged to never returned, so nothing acted on it.
fn read_entries(file: &File) -> Vec<Entry> {
    BufReader::new(file)
        .split(b'\n')
        .map_while(Result::ok)
        .filter_map(|line| serde_json::from_slice::<Entry>(&line).ok())
        .collect()
}

/// Appends, in spool order, the entries the chain does not hold yet.
fn fold_missing(store: &mut AuditStore, entries: &[Entry]) -> Result<usize, AuditError> {
    let mut seq_of = std::collections::HashMap::new();
    let mut missing = Vec::new();
    for e in entries {
        match store.find_seq(&e.r)? {
            Some(seq) => {
                seq_of.insert(e.k, seq);
            }
            None => missing.push(e),
        }
    }
    let mut added = 0;
    // One at a time: a later entry may refer to an earlier one folded just before it.
    for e in missing {
        let mut record = e.r.clone();
        if let Some(seq) = e.refers_to.and_then(|k| seq_of.get(&k)) {
            record.ref_seq = Some(*seq);
        }
        let appended = store.append(std::slice::from_ref(&record))?;
        if let Some(a) = appended.first() {
            seq_of.insert(e.k, a.seq);
        }
        added += 1;
    }
    Ok(added)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::{kinds, verify, Durability, Query};

    fn entry(k: u64, kind: &str, refers_to: Option<u64>) -> Entry {
        Entry {
            k,
            refers_to,
            r: NewRecord::at(kind, 1_000 + i64::try_from(k).unwrap())
                .agent("bot")
                .session("s1")
                .request_id(format!("{k}")),
        }
    }

    #[test]
    fn a_dead_gateways_spool_is_folded_once_with_references_resolved() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("audit.db");
        let mut store = AuditStore::open(&db, Durability::Process).unwrap();
        // Entry 0 made it into the chain before the crash; 1 and its result 2 did not.
        store.append(&[entry(0, kinds::CALL, None).r]).unwrap();
        let mut spool = Spool::create(&db).unwrap();
        spool
            .write(
                &[
                    entry(0, kinds::CALL, None),
                    entry(1, kinds::CALL, None),
                    entry(2, kinds::RESULT, Some(1)),
                ],
                false,
            )
            .unwrap();
        // A torn last line: the write it belonged to never returned.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&spool.path)
            .unwrap()
            .write_all(b"{\"k\":3,\"r\":{\"time_unix")
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
        let result = all.iter().find(|r| r.kind == kinds::RESULT).unwrap();
        assert_eq!(result.ref_seq, Some(call.seq));
        assert!(verify(&db, None).unwrap().problem.is_none());
        assert_eq!(std::fs::read_dir(spool_dir(&db)).unwrap().count(), 0);
    }
}
