//! Breaker counters: one append-only journal per agent, next to the audit
//! database in `<db>.breakers/`, guarded by the agent's lock file. It holds
//! the agent's budget rows and its loop-detection rows (rate buckets, fan-out
//! targets); see `crate::row` for the line format.
//!
//! A budget decision takes the agent's lock (`flock`), reads what other
//! processes appended since this one last looked, decides, appends its own
//! rows with one `write(2)`, and lets go: four system calls, no SQLite commit.
//! The call's loop-detection rows, and any this process still had pending for
//! the agent, go into that same write.
//!
//! - **Exact across processes**: every process of the agent appends under the
//!   same lock after reading every row before its own, so two gateways cannot
//!   both take the last unit of a budget.
//! - **Durable**: the row is in the kernel's page cache before the call moves,
//!   so a `kill -9` loses nothing; with `durability = "power-loss"` each append
//!   is followed by `fdatasync`. Journals are read back in full on open.
//! - **Fail closed**: a journal that cannot be opened, locked, read or parsed
//!   is an error, and the caller denies.
//! - **Loop detection written behind**: a call outside every budget class
//!   takes no lock. Its rows are cached at once and merged into the agent's
//!   pending rows (`crate::pending`), appended under the lock within
//!   [`FLUSH_AFTER`] (or at [`FLUSH_ROWS`], or on drop) in one write; other
//!   processes' rows are read at most every [`LOOP_REFRESH`] (a budget
//!   decision reads them anyway). Loop detection is a heuristic over windows
//!   of minutes: 100 ms late is what it always allowed.
//!
//! A journal that grew past [`COMPACT_BYTES`] and twice its live size is
//! rewritten with only the rows still inside a window (budget, rate and
//! fan-out alike) and renamed over the old one; other processes notice the
//! rename (the file they hold has no link left) and read the new one from its
//! start.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use airlock_audit::Durability;
use hashbrown::hash_map::EntryRef;
use hashbrown::HashMap;

use crate::cache::{EventCache, RESET_CLASS};
use crate::error::ControlError;
use crate::pending::Pending;
use crate::row::{decode, encode, Row};

/// A journal is compacted once it is this large (and twice its live size).
#[cfg(not(test))]
pub(crate) const COMPACT_BYTES: u64 = 1 << 20;
#[cfg(test)]
pub(crate) const COMPACT_BYTES: u64 = 2048;
const READ_CHUNK: usize = 64 * 1024;
/// Loop-detection rows are appended behind, at most this late (and on drop).
pub(crate) const FLUSH_AFTER: Duration = Duration::from_millis(100);
/// Or once this many are pending.
const FLUSH_ROWS: usize = 512;
/// A call outside every budget class re-reads other processes' rows of its
/// agent at most this often.
pub(crate) const LOOP_REFRESH: Duration = Duration::from_millis(100);

/// The journals of every agent this process has counted.
#[derive(Debug)]
pub(crate) struct Journals {
    dir: PathBuf,
    open: HashMap<String, Journal>,
    io: Io,
}

/// What every journal's step shares.
#[derive(Debug)]
struct Io {
    durability: Durability,
    /// Reused for appends.
    line: Vec<u8>,
    /// Reused for reads.
    buf: Vec<u8>,
    /// Pending loop-detection rows over every agent, and since when the oldest waits.
    pending_rows: usize,
    pending_since: Option<Instant>,
    /// The newest cutoff a caller named: a flush's compaction keeps rows after it.
    cutoff_ns: i64,
}

/// One agent's journal as this process sees it.
#[derive(Debug)]
struct Journal {
    /// Never replaced, so every process locks the same file.
    lock: File,
    state: State,
    /// This process's loop-detection rows not yet appended (already cached).
    pending: Pending,
    /// When the journal was last read to its end.
    synced: Option<Instant>,
}

/// The journal file itself (replaced on compaction).
#[derive(Debug)]
struct State {
    path: PathBuf,
    file: File,
    /// Bytes read (and applied to the cache) so far.
    pos: u64,
    /// Size after the last compaction (or when opened).
    base: u64,
    /// The agent's counters were forgotten and read afresh since the last step.
    fresh: bool,
}

/// The directory of the journals of database `db`.
pub(crate) fn journal_dir(db: &Path) -> PathBuf {
    let name = db
        .file_name()
        .map_or_else(|| "audit.db".into(), |n| n.to_string_lossy().into_owned());
    db.with_file_name(format!("{name}.breakers"))
}

impl Journals {
    pub(crate) fn new(db: &Path, durability: Durability) -> Journals {
        Journals {
            dir: journal_dir(db),
            open: HashMap::new(),
            io: Io {
                durability,
                line: Vec::with_capacity(256),
                buf: Vec::new(),
                pending_rows: 0,
                pending_since: None,
                cutoff_ns: i64::MIN,
            },
        }
    }

    /// Under `agent`'s lock: reads every row appended since the last look into
    /// `cache`, runs `decide`, and appends the rows `rows` names for its
    /// outcome together with the agent's pending loop-detection rows, in one
    /// write. `rows` is called twice (to encode, then, once written, to apply
    /// to the cache), so nothing is counted that did not reach the file. Rows
    /// older than `cutoff_ns` may be dropped if the journal is compacted.
    pub(crate) fn step<T>(
        &mut self,
        agent: &str,
        cache: &mut EventCache,
        cutoff_ns: i64,
        decide: impl FnOnce(&EventCache) -> T,
        rows: impl Fn(&T, &mut dyn FnMut(&Row<'_>)),
    ) -> Result<T, ControlError> {
        let j = journal(&mut self.open, &self.dir, agent)?;
        self.io.step(j, agent, cache, cutoff_ns, decide, rows)
    }

    /// Reads `agent`'s new rows into `cache` (and appends its pending ones), under its lock.
    pub(crate) fn sync(&mut self, agent: &str, cache: &mut EventCache) -> Result<(), ControlError> {
        self.step(agent, cache, i64::MIN, |_| (), |_, _| {})
    }

    /// [`Journals::sync`] if `agent`'s journal was last read more than `max_age` ago.
    pub(crate) fn refresh(
        &mut self,
        agent: &str,
        cache: &mut EventCache,
        max_age: Duration,
    ) -> Result<(), ControlError> {
        let j = journal(&mut self.open, &self.dir, agent)?;
        let now = Instant::now();
        if j.synced.is_some_and(|t| now.duration_since(t) < max_age) {
            return Ok(());
        }
        self.io.step(j, agent, cache, i64::MIN, |_| (), |_, _| {})?;
        j.synced = Some(now);
        Ok(())
    }

    /// Caches `agent`'s loop-detection rows now and appends them within
    /// [`FLUSH_AFTER`] (or at [`FLUSH_ROWS`] pending rows, or on drop).
    pub(crate) fn write_later(
        &mut self,
        agent: &str,
        cache: &mut EventCache,
        rows: &[Row<'_>],
    ) -> Result<(), ControlError> {
        let j = journal(&mut self.open, &self.dir, agent)?;
        let before = j.pending.len();
        for r in rows {
            cache.apply(agent, r);
            j.pending.push(r, cache.rate_bucket_ns);
        }
        let io = &mut self.io;
        io.pending_rows += j.pending.len() - before;
        if io.pending_rows == 0 {
            return Ok(());
        }
        let since = *io.pending_since.get_or_insert_with(Instant::now);
        if io.pending_rows >= FLUSH_ROWS || since.elapsed() >= FLUSH_AFTER {
            self.flush(cache)?;
        }
        Ok(())
    }

    /// Appends every agent's pending loop-detection rows now.
    pub(crate) fn flush(&mut self, cache: &mut EventCache) -> Result<(), ControlError> {
        if self.io.pending_rows == 0 {
            return Ok(());
        }
        let agents: Vec<String> = self
            .open
            .iter()
            .filter(|(_, j)| !j.pending.is_empty())
            .map(|(a, _)| a.clone())
            .collect();
        for agent in agents {
            self.sync(&agent, cache)?;
        }
        Ok(())
    }

    /// Pending loop-detection rows over every agent.
    #[cfg(test)]
    pub(crate) fn pending_len(&self) -> usize {
        self.io.pending_rows
    }

    /// Appends `rows` of `agent` now (rows carried over from an older store).
    pub(crate) fn append(
        &mut self,
        agent: &str,
        cache: &mut EventCache,
        rows: &[Row<'_>],
    ) -> Result<(), ControlError> {
        self.step(
            agent,
            cache,
            i64::MIN,
            |_| (),
            |_, put| rows.iter().for_each(&mut *put),
        )
    }

    /// Reads every agent's journal into `cache` (for `airlock status`).
    pub(crate) fn sync_all(&mut self, cache: &mut EventCache) -> Result<(), ControlError> {
        for agent in self.agents()? {
            self.sync(&agent, cache)?;
        }
        Ok(())
    }

    /// Appends a reset marker at `time_ns` to `agent`'s journal, or with
    /// `None` to every journal there is.
    pub(crate) fn reset(
        &mut self,
        agent: Option<&str>,
        time_ns: i64,
        cache: &mut EventCache,
    ) -> Result<(), ControlError> {
        let agents = match agent {
            Some(a) => vec![a.to_owned()],
            None => self.agents()?,
        };
        let row = Row {
            class: RESET_CLASS,
            key: None,
            time_ns,
            calls: 0,
            items: 0,
        };
        for a in agents {
            self.append(&a, cache, &[row])?;
        }
        Ok(())
    }

    /// Agents with a journal, from the file names.
    fn agents(&self) -> Result<Vec<String>, ControlError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(io("read the breaker journals", &self.dir, source)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| io("read the breaker journals", &self.dir, e))?;
            let name = entry.file_name();
            let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".journal")) else {
                continue;
            };
            let agent = hex::decode(stem)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| {
                    ControlError::Corrupt(format!("breaker journal with a bad name: {stem}"))
                })?;
            out.push(agent);
        }
        out.sort_unstable();
        Ok(out)
    }
}

impl Io {
    /// [`Journals::step`] on journal `j` of `agent`.
    fn step<T>(
        &mut self,
        j: &mut Journal,
        agent: &str,
        cache: &mut EventCache,
        cutoff_ns: i64,
        decide: impl FnOnce(&EventCache) -> T,
        rows: impl Fn(&T, &mut dyn FnMut(&Row<'_>)),
    ) -> Result<T, ControlError> {
        self.cutoff_ns = self.cutoff_ns.max(cutoff_ns);
        let _guard = Locked::new(&j.lock, &j.state.path)?;
        let state = &mut j.state;
        state.sync(agent, cache, &mut self.buf)?;
        if std::mem::take(&mut state.fresh) {
            // Read afresh: put back what this process has not appended yet.
            j.pending.apply(agent, cache);
        }
        let out = decide(cache);
        let line = &mut self.line;
        line.clear();
        j.pending.encode(line);
        rows(&out, &mut |r| encode(line, r));
        if !line.is_empty() {
            state.append(line, self.durability)?;
            rows(&out, &mut |r| cache.apply(agent, r));
            self.pending_rows -= j.pending.len();
            j.pending.clear();
            if self.pending_rows == 0 {
                self.pending_since = None;
            }
            if state.pos > COMPACT_BYTES && state.pos > 2 * state.base {
                state.compact(agent, cache, self.cutoff_ns)?;
            }
        }
        Ok(out)
    }
}

/// `agent`'s journal, opened on first use.
fn journal<'a>(
    open: &'a mut HashMap<String, Journal>,
    dir: &Path,
    agent: &str,
) -> Result<&'a mut Journal, ControlError> {
    match open.entry_ref(agent) {
        EntryRef::Occupied(e) => Ok(e.into_mut()),
        EntryRef::Vacant(e) => Ok(e.insert(Journal::open(dir, agent)?)),
    }
}

impl Journal {
    fn open(dir: &Path, agent: &str) -> Result<Journal, ControlError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| io("create the breaker journal directory", dir, e))?;
        // Hex names: any agent name is a safe file name, and the name round-trips.
        let stem = hex::encode(agent.as_bytes());
        let lock_path = dir.join(format!("{stem}.lock"));
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|e| io("open the breaker lock", &lock_path, e))?;
        let path = dir.join(format!("{stem}.journal"));
        let file = open_journal(&path)?;
        Ok(Journal {
            lock,
            state: State {
                path,
                file,
                pos: 0,
                base: 0,
                fresh: false,
            },
            pending: Pending::default(),
            synced: None,
        })
    }
}

impl State {
    /// Applies what was appended since `pos`; follows a compaction to the new
    /// file. After an error the agent's counters are forgotten and the next
    /// sync reads the file from its start, so rows applied before the error
    /// are not counted twice.
    fn sync(
        &mut self,
        agent: &str,
        cache: &mut EventCache,
        buf: &mut Vec<u8>,
    ) -> Result<(), ControlError> {
        let read = self.read_new(agent, cache, buf);
        if read.is_err() {
            cache.forget(agent);
            self.pos = 0;
            self.fresh = true;
        }
        read
    }

    fn read_new(
        &mut self,
        agent: &str,
        cache: &mut EventCache,
        buf: &mut Vec<u8>,
    ) -> Result<(), ControlError> {
        let mut meta = self
            .file
            .metadata()
            .map_err(|e| io("stat the breaker journal", &self.path, e))?;
        if meta.nlink() == 0 {
            // Compacted by another process: the rows are all in the new file.
            self.file = open_journal(&self.path)?;
            self.pos = 0;
            cache.forget(agent);
            self.fresh = true;
            meta = self
                .file
                .metadata()
                .map_err(|e| io("stat the breaker journal", &self.path, e))?;
            self.base = meta.len();
        }
        let len = meta.len();
        if len < self.pos {
            return Err(ControlError::Corrupt(format!(
                "breaker journal {} shrank from {} to {len} bytes",
                self.path.display(),
                self.pos
            )));
        }
        if len == self.pos {
            return Ok(());
        }
        let want = usize::try_from(len - self.pos)
            .map_err(|_| ControlError::Corrupt("breaker journal too large".into()))?;
        let want = want.clamp(1, READ_CHUNK);
        if buf.len() < want {
            buf.resize(want, 0);
        }
        let buf = &mut buf[..want];
        let mut tail: Vec<u8> = Vec::new();
        let mut at = self.pos;
        while at < len {
            let n = self
                .file
                .read_at(buf, at)
                .map_err(|e| io("read the breaker journal", &self.path, e))?;
            if n == 0 {
                break;
            }
            at += n as u64;
            // Apply whole lines as they come, keep a partial one for the next chunk.
            let chunk: &[u8] = if tail.is_empty() {
                &buf[..n]
            } else {
                tail.extend_from_slice(&buf[..n]);
                &tail
            };
            let whole = chunk.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            for line in chunk[..whole]
                .split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
            {
                let r = decode(line).ok_or_else(|| bad_line(&self.path, line))?;
                cache.apply_parts(agent, &r.class, r.key, r.time_ns, r.calls, r.items);
            }
            if whole == chunk.len() {
                tail.clear();
            } else {
                tail = chunk[whole..].to_vec();
            }
        }
        if !tail.is_empty() {
            // Every append is whole lines under the lock we hold: a partial line is damage.
            return Err(ControlError::Corrupt(format!(
                "breaker journal {} ends in a partial line",
                self.path.display()
            )));
        }
        self.pos = at;
        Ok(())
    }

    fn append(&mut self, bytes: &[u8], durability: Durability) -> Result<(), ControlError> {
        self.file
            .write_all(bytes)
            .map_err(|e| io("append to the breaker journal", &self.path, e))?;
        if durability == Durability::PowerLoss {
            self.file
                .sync_data()
                .map_err(|e| io("sync the breaker journal", &self.path, e))?;
        }
        self.pos += bytes.len() as u64;
        Ok(())
    }

    /// Rewrites the journal with the rows still in a window, from the cache
    /// (which holds every row of the file: it was just synced under the lock,
    /// and this process's pending rows were just appended).
    fn compact(
        &mut self,
        agent: &str,
        cache: &EventCache,
        cutoff_ns: i64,
    ) -> Result<(), ControlError> {
        let mut text = Vec::new();
        let reset = cache.reset_ns(agent);
        if reset > i64::MIN {
            encode(
                &mut text,
                &Row {
                    class: RESET_CLASS,
                    key: None,
                    time_ns: reset,
                    calls: 0,
                    items: 0,
                },
            );
        }
        cache.for_each_row(agent, cutoff_ns.max(reset), |r| encode(&mut text, r));
        let tmp = self.path.with_extension("journal.tmp");
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| io("write the compacted breaker journal", &tmp, e))?;
        f.write_all(&text)
            .and_then(|()| f.sync_all())
            .map_err(|e| io("write the compacted breaker journal", &tmp, e))?;
        std::fs::rename(&tmp, &self.path)
            .map_err(|e| io("replace the breaker journal", &self.path, e))?;
        self.file = open_journal(&self.path)?;
        self.pos = text.len() as u64;
        self.base = self.pos;
        tracing::debug!(agent, bytes = self.pos, "breaker journal compacted");
        Ok(())
    }
}

/// Holds a journal's lock; lets go on drop (and the kernel does if the process dies).
struct Locked<'a>(&'a File);

impl<'a> Locked<'a> {
    fn new(lock: &'a File, path: &Path) -> Result<Locked<'a>, ControlError> {
        lock.lock()
            .map_err(|e| io("lock the breaker journal", path, e))?;
        Ok(Locked(lock))
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.0.unlock() {
            tracing::warn!(error = %e, "cannot unlock a breaker journal");
        }
    }
}

fn open_journal(path: &Path) -> Result<File, ControlError> {
    OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| io("open the breaker journal", path, e))
}

fn bad_line(path: &Path, line: &[u8]) -> ControlError {
    ControlError::Corrupt(format!(
        "breaker journal {}: bad line {:?}",
        path.display(),
        String::from_utf8_lossy(line)
    ))
}

fn io(context: &'static str, path: &Path, source: std::io::Error) -> ControlError {
    ControlError::Io {
        context,
        path: path.to_owned(),
        source,
    }
}
