//! The spool: a per-process, append-only file that makes a record durable with one `write`.
//!
//! A SQLite commit costs a dozen syscalls (WAL frames, locks); on the call path that is most of
//! a gateway's added latency. So the gateway writes each batch of records to its spool with a
//! single `write(2)` — once it returns, the record survives a `kill -9` of the process, exactly
//! like a WAL commit with `synchronous=NORMAL` — and a background thread ([`crate::AuditWriter`])
//! folds the spool into the hash chain in large transactions.
//!
//! Each spool lives at `<db>.spool/<pid>-<start ns>.spool` and is locked (`flock`) by its
//! process while it runs; it gets that name only once it is locked (it is made as
//! `….spool.new`, which recovery never reads), so an unlocked `.spool` is always a dead one. A spool that nobody holds belongs to a gateway that died before
//! folding it; [`recover`] folds it into the chain (skipping what was already folded) and
//! removes it. Every reader of the trail recovers first, so a crash never hides a record.
//!
//! The file's encoding (a header, then checksummed binary entries) is in
//! [`crate::spool_format`].

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::spool_format::{decode_spool, encode_entry, header, SpoolEnd, HEADER_LEN};
use crate::{AuditError, AuditStore, NewRecord, SpooledRecord};

/// The directory holding the spools of the trail at `db`.
pub fn spool_dir(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".spool");
    PathBuf::from(name)
}

/// One record to write, borrowed from the caller's batch.
pub(crate) struct EntryRef<'a> {
    pub(crate) key: u64,
    pub(crate) refers_to: Option<u64>,
    pub(crate) record: &'a NewRecord,
}

/// This process's spool, locked for as long as it is open.
#[derive(Debug)]
pub(crate) struct Spool {
    file: File,
    path: PathBuf,
    /// Bytes in the file: the header and every entry written since it was last cleared.
    len: u64,
    /// A failed write may have left part of a batch behind; it is cut off before the next.
    torn: bool,
    buf: Vec<u8>,
}

impl Spool {
    /// Creates this process's spool. With `sync` (durability `power-loss`) its name is on disk
    /// before this returns: an fdatasync of its entries would not bring back a file whose
    /// directory entry was never written.
    pub(crate) fn create(db: &Path, sync: bool) -> Result<Spool, AuditError> {
        Spool::create_with(db, sync, || {})
    }

    /// [`Spool::create`], calling `opened` once the file exists and before it is locked (a
    /// test runs a recovery there).
    ///
    /// The file is made under a name recovery does not read (`.spool.new`), locked, given its
    /// header, and only then renamed to its `.spool` name: recovery never sees a spool that is
    /// not locked by a live writer or left by a dead one (it would fold and remove a fresh one,
    /// and this process would write its records into a file nobody reads).
    pub(crate) fn create_with(
        db: &Path,
        sync: bool,
        opened: impl FnOnce(),
    ) -> Result<Spool, AuditError> {
        let dir = spool_dir(db);
        std::fs::create_dir_all(&dir).map_err(|e| spool_io(&dir, e))?;
        let name = format!("{}-{}.spool", std::process::id(), crate::now_unix_ns());
        let path = dir.join(&name);
        let fresh = dir.join(format!("{name}.new"));
        let mut file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&fresh)
            .map_err(|e| spool_io(&fresh, e))?;
        opened();
        // The lock tells recovery this spool's writer is alive.
        let made = file
            .try_lock()
            .map_err(|e| std::io::Error::other(format!("cannot lock a new spool: {e}")))
            .and_then(|()| file.write_all(&header()))
            .and_then(|()| std::fs::rename(&fresh, &path));
        if let Err(e) = made {
            let _ = std::fs::remove_file(&fresh);
            return Err(spool_io(&path, e));
        }
        if sync {
            // The spool's name, and the spool directory's in its parent (it may be new).
            for d in [Some(dir.as_path()), dir.parent()].into_iter().flatten() {
                File::open(d)
                    .and_then(|d| d.sync_all())
                    .map_err(|e| spool_io(d, e))?;
            }
        }
        Ok(Spool {
            file,
            path,
            len: HEADER_LEN as u64,
            torn: false,
            buf: Vec::with_capacity(4096),
        })
    }

    /// Writes the entries with one `write(2)`: durable against a crash of this process when it
    /// returns. `sync` adds an fdatasync, for power-loss durability.
    pub(crate) fn write<'a>(
        &mut self,
        entries: impl IntoIterator<Item = EntryRef<'a>>,
        sync: bool,
    ) -> Result<(), AuditError> {
        self.buf.clear();
        for e in entries {
            encode_entry(&mut self.buf, e.key, e.refers_to, e.record)?;
        }
        if self.torn {
            // Entries are framed back to back: a fragment would hide everything after it.
            self.file
                .set_len(self.len)
                .map_err(|e| spool_io(&self.path, e))?;
            self.torn = false;
        }
        if let Err(e) = self.file.write_all(&self.buf) {
            self.torn = true;
            return Err(spool_io(&self.path, e));
        }
        if sync {
            if let Err(e) = self.file.sync_data() {
                // The batch counts as not written: cut it off so it is not recovered either.
                self.torn = true;
                return Err(spool_io(&self.path, e));
            }
        }
        self.len += self.buf.len() as u64;
        // A rare huge batch should not pin its buffer for the life of the process.
        if self.buf.capacity() > 1 << 20 {
            self.buf = Vec::with_capacity(4096);
        }
        Ok(())
    }

    /// Forgets everything written so far: called once all of it is in the chain.
    pub(crate) fn clear(&mut self) -> Result<(), AuditError> {
        if self.len > HEADER_LEN as u64 || self.torn {
            self.file
                .set_len(HEADER_LEN as u64)
                .map_err(|e| spool_io(&self.path, e))?;
            self.len = HEADER_LEN as u64;
            self.torn = false;
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
///
/// A spool whose entries stop at damage (not just a torn last write) is renamed to
/// `<name>.damaged` once its readable entries are folded: kept for a human, never read again.
/// A spool of an unknown (newer) encoding is an error: its records cannot be read, and
/// skipping it would hide them.
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
        let Ok(mut file) = OpenOptions::new().read(true).write(true).open(&path) else {
            continue;
        };
        if file.try_lock().is_err() {
            continue; // a live gateway's spool
        }
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|e| spool_io(&path, e))?;
        let contents = decode_spool(&bytes);
        if let SpoolEnd::Unsupported { version } = contents.end {
            return Err(spool_io(
                &path,
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("spool encoding version {version} is not supported by this build"),
                ),
            ));
        }
        added += fold_missing(store, &contents.records)?;
        if let SpoolEnd::Damaged { .. } = contents.end {
            let mut kept = path.clone().into_os_string();
            kept.push(".damaged");
            std::fs::rename(&path, &kept).map_err(|e| spool_io(&path, e))?;
        } else {
            std::fs::remove_file(&path).map_err(|e| spool_io(&path, e))?;
        }
    }
    Ok(added)
}

/// Appends, in spool order, the entries the chain does not hold yet.
fn fold_missing(store: &mut AuditStore, entries: &[SpooledRecord]) -> Result<usize, AuditError> {
    let mut seq_of = std::collections::HashMap::new();
    let mut missing = Vec::new();
    for e in entries {
        match store.find_seq(&e.record)? {
            Some(seq) => {
                seq_of.insert(e.key, seq);
            }
            None => missing.push(e),
        }
    }
    let mut added = 0;
    // One at a time: a later entry may refer to an earlier one folded just before it.
    for e in missing {
        let mut record = e.record.clone();
        if let Some(seq) = e.refers_to.and_then(|k| seq_of.get(&k)) {
            record.ref_seq = Some(*seq);
        }
        let appended = store.append(std::slice::from_ref(&record))?;
        if let Some(a) = appended.first() {
            seq_of.insert(e.key, a.seq);
        }
        added += 1;
    }
    Ok(added)
}

#[cfg(test)]
#[path = "spool_tests.rs"]
mod tests;
