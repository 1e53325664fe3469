//! Budget counters on the call path: one append-only journal per agent, next
//! to the audit database in `<db>.breakers/`, guarded by the agent's lock file.
//!
//! A budget decision takes the agent's lock (`flock`), reads what other
//! processes appended since this one last looked, decides, appends its own
//! row with one `write(2)`, and lets go: four system calls, no SQLite commit.
//!
//! - **Exact across processes**: every process of the agent appends under the
//!   same lock after reading every row before its own, so two gateways cannot
//!   both take the last unit of a budget.
//! - **Durable**: the row is in the kernel's page cache before the call moves,
//!   so a `kill -9` loses nothing; with `durability = "power-loss"` each append
//!   is followed by `fdatasync`. Journals are read back in full on open.
//! - **Fail closed**: a journal that cannot be opened, locked, read or parsed
//!   is an error, and the caller denies.
//!
//! A line is `<time_ns> <calls> <items> <class>`; a resume appends
//! `<time_ns> 0 0 !reset`. A journal that grew past [`COMPACT_BYTES`] and
//! twice its live size is rewritten with only the rows still inside a window
//! and renamed over the old one; other processes notice the rename (the file
//! they hold has no link left) and read the new one from its start.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use airlock_audit::Durability;

use crate::cache::{EventCache, EventRow, RESET_CLASS};
use crate::error::ControlError;

/// A journal is compacted once it is this large (and twice its live size).
#[cfg(not(test))]
pub(crate) const COMPACT_BYTES: u64 = 1 << 20;
#[cfg(test)]
pub(crate) const COMPACT_BYTES: u64 = 2048;
const READ_CHUNK: usize = 64 * 1024;

/// The journals of every agent this process has counted.
#[derive(Debug)]
pub(crate) struct Journals {
    dir: PathBuf,
    durability: Durability,
    open: HashMap<String, Journal>,
    /// Reused for appends.
    line: Vec<u8>,
}

/// One agent's journal as this process sees it.
#[derive(Debug)]
struct Journal {
    /// Never replaced, so every process locks the same file.
    lock: File,
    state: State,
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
            durability,
            open: HashMap::new(),
            line: Vec::with_capacity(256),
        }
    }

    /// Under `agent`'s lock: reads every row appended since the last look into
    /// `cache`, runs `f`, and appends the rows it returns. Rows older than
    /// `cutoff_ns` may be dropped if the journal is compacted.
    pub(crate) fn with_agent<T>(
        &mut self,
        agent: &str,
        cache: &mut EventCache,
        cutoff_ns: i64,
        f: impl FnOnce(&EventCache) -> (T, Vec<EventRow>),
    ) -> Result<T, ControlError> {
        let j = journal(&mut self.open, &self.dir, agent)?;
        let _guard = Locked::new(&j.lock, &j.state.path)?;
        let state = &mut j.state;
        state.sync(agent, cache)?;
        let (out, rows) = f(cache);
        if !rows.is_empty() {
            self.line.clear();
            for r in &rows {
                encode(&mut self.line, r);
            }
            state.append(&self.line, self.durability)?;
            for r in &rows {
                cache.apply(r);
            }
            if state.pos > COMPACT_BYTES && state.pos > 2 * state.base {
                state.compact(agent, cache, cutoff_ns)?;
            }
        }
        Ok(out)
    }

    /// Reads `agent`'s new rows into `cache`, under its lock.
    pub(crate) fn sync(&mut self, agent: &str, cache: &mut EventCache) -> Result<(), ControlError> {
        self.with_agent(agent, cache, i64::MIN, |_| ((), Vec::new()))
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
        for a in agents {
            let row = EventRow {
                agent: a.clone(),
                class: RESET_CLASS.to_owned(),
                time_ns,
                calls: 0,
                items: 0,
                key: None,
            };
            self.with_agent(&a, cache, i64::MIN, |_| ((), vec![row]))?;
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

/// `agent`'s journal, opened on first use.
fn journal<'a>(
    open: &'a mut HashMap<String, Journal>,
    dir: &Path,
    agent: &str,
) -> Result<&'a mut Journal, ControlError> {
    if !open.contains_key(agent) {
        let j = Journal::open(dir, agent)?;
        open.insert(agent.to_owned(), j);
    }
    open.get_mut(agent)
        .ok_or_else(|| ControlError::Corrupt("breaker journal vanished".into()))
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
            },
        })
    }
}

impl State {
    /// Applies what was appended since `pos`; follows a compaction to the new file.
    fn sync(&mut self, agent: &str, cache: &mut EventCache) -> Result<(), ControlError> {
        let mut meta = self
            .file
            .metadata()
            .map_err(|e| io("stat the breaker journal", &self.path, e))?;
        if meta.nlink() == 0 {
            // Compacted by another process: the rows are all in the new file.
            self.file = open_journal(&self.path)?;
            self.pos = 0;
            cache.forget_budgets(agent);
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
        let mut buf = vec![0u8; want.clamp(1, READ_CHUNK)];
        let mut tail: Vec<u8> = Vec::new();
        let mut at = self.pos;
        while at < len {
            let n = self
                .file
                .read_at(&mut buf, at)
                .map_err(|e| io("read the breaker journal", &self.path, e))?;
            if n == 0 {
                break;
            }
            at += n as u64;
            tail.extend_from_slice(&buf[..n]);
            // Apply whole lines as they come, keep a partial one for the next chunk.
            let whole = tail.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            for line in tail[..whole]
                .split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
            {
                cache.apply(&decode(agent, line, &self.path)?);
            }
            tail.drain(..whole);
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
    /// (which holds every row of the file: it was just synced under the lock).
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
                &EventRow {
                    agent: agent.to_owned(),
                    class: RESET_CLASS.to_owned(),
                    time_ns: reset,
                    calls: 0,
                    items: 0,
                    key: None,
                },
            );
        }
        for row in cache.budget_rows(agent, cutoff_ns.max(reset)) {
            encode(&mut text, &row);
        }
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

fn encode(out: &mut Vec<u8>, r: &EventRow) {
    // Writing into a Vec cannot fail.
    let _ = writeln!(out, "{} {} {} {}", r.time_ns, r.calls, r.items, r.class);
}

fn decode(agent: &str, line: &[u8], path: &Path) -> Result<EventRow, ControlError> {
    let bad = || {
        ControlError::Corrupt(format!(
            "breaker journal {}: bad line {:?}",
            path.display(),
            String::from_utf8_lossy(line)
        ))
    };
    let text = std::str::from_utf8(line).map_err(|_| bad())?;
    let mut parts = text.splitn(4, ' ');
    let mut next = || parts.next().ok_or_else(bad);
    let time_ns: i64 = next()?.parse().map_err(|_| bad())?;
    let calls: u64 = next()?.parse().map_err(|_| bad())?;
    let items: u64 = next()?.parse().map_err(|_| bad())?;
    let class = next()?;
    if class.is_empty() || class.contains(' ') || (class.starts_with('!') && class != RESET_CLASS) {
        return Err(bad());
    }
    Ok(EventRow {
        agent: agent.to_owned(),
        class: class.to_owned(),
        time_ns,
        calls,
        items,
        key: None,
    })
}

fn io(context: &'static str, path: &Path, source: std::io::Error) -> ControlError {
    ControlError::Io {
        context,
        path: path.to_owned(),
        source,
    }
}
