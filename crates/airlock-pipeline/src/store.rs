//! The store thread: the one owner of the pipeline's SQLite connections (approval requests,
//! information-flow labels, and the breaker counters used off the request thread).
//!
//! Store work never runs on the async runtime and never under a lock: a frame thread hands it
//! a job and waits for the answer (it is a blocking thread anyway), an async task awaits it.
//! One thread owns the connections, so nothing else can be in the middle of a transaction on
//! them. If the thread is gone, every job fails, and every caller treats that as a denial.

use std::path::{Path, PathBuf};
use std::sync::mpsc;

use airlock_approval::ApprovalStore;
use airlock_audit::Durability;
use airlock_control::{ControlError, ControlStore};
use airlock_flow::LabelStore;

/// The connections the store thread owns.
pub struct StoreSet {
    pub approvals: ApprovalStore,
    pub labels: LabelStore,
    /// Breaker counters for the work done here (item counts, approved calls).
    pub counters: Counters,
}

/// Breaker counters: one store per thread that counts, opened on first use (a gateway whose
/// config has no breakers never opens one). Several in one process are exact, as several
/// processes are (see `airlock_control::journal`).
pub struct Counters {
    db: Option<PathBuf>,
    durability: Durability,
    store: Option<ControlStore>,
}

impl Counters {
    pub fn new(db: &Path, durability: Durability) -> Counters {
        Counters {
            db: Some(db.to_owned()),
            durability,
            store: None,
        }
    }

    /// No store: a pipeline without a control plane (it has no breakers to count).
    pub fn none() -> Counters {
        Counters {
            db: None,
            durability: Durability::Process,
            store: None,
        }
    }

    /// The counter store, opened now if needed.
    pub fn store(&mut self) -> Result<&mut ControlStore, ControlError> {
        let Some(db) = &self.db else {
            return Err(ControlError::Corrupt(
                "no breaker store in this gateway".into(),
            ));
        };
        match &mut self.store {
            Some(store) => Ok(store),
            slot @ None => Ok(slot.insert(ControlStore::open_with(db, self.durability)?)),
        }
    }
}

type Job = Box<dyn FnOnce(&mut StoreSet) + Send>;

/// Why a store job did not run.
#[derive(Debug, thiserror::Error)]
#[error("the store thread is gone")]
pub struct StoreGone;

/// A handle to the store thread; cloning it shares the thread.
#[derive(Clone)]
pub struct Stores {
    jobs: mpsc::Sender<Job>,
}

impl Stores {
    /// Opens the stores of the audit database `db` on a thread of their own.
    pub fn start(db: &Path, durability: Durability) -> Result<Stores, String> {
        let approvals = ApprovalStore::open_with(db, durability)
            .map_err(|e| format!("cannot open the approval store: {e}"))?;
        let labels = LabelStore::open(db)
            .map_err(|e| format!("cannot open the information-flow label store: {e}"))?;
        let set = StoreSet {
            approvals,
            labels,
            counters: Counters::new(db, durability),
        };
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("airlock-store".into())
            .spawn(move || {
                let mut set = set;
                while let Ok(job) = queue.recv() {
                    job(&mut set);
                }
            })
            .map_err(|e| format!("cannot start the store thread: {e}"))?;
        Ok(Stores { jobs })
    }

    /// Runs `job` on the store thread and waits for its answer, blocking this thread. For
    /// threads that may block (the frame threads, blocking-pool tasks), never a runtime worker.
    pub fn call<R: Send + 'static>(
        &self,
        job: impl FnOnce(&mut StoreSet) -> R + Send + 'static,
    ) -> Result<R, StoreGone> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.jobs
            .send(Box::new(move |set| {
                let _ = tx.send(job(set));
            }))
            .map_err(|_| StoreGone)?;
        rx.recv().map_err(|_| StoreGone)
    }

    /// Runs `job` on the store thread; the runtime goes on meanwhile.
    pub async fn run<R: Send + 'static>(
        &self,
        job: impl FnOnce(&mut StoreSet) -> R + Send + 'static,
    ) -> Result<R, StoreGone> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(move |set| {
                let _ = tx.send(job(set));
            }))
            .map_err(|_| StoreGone)?;
        rx.await.map_err(|_| StoreGone)
    }

    /// Queues `job` without waiting for it (work whose outcome nobody waits on).
    pub fn spawn(&self, job: impl FnOnce(&mut StoreSet) + Send + 'static) {
        if self.jobs.send(Box::new(job)).is_err() {
            tracing::error!("the store thread is gone; a store job was dropped");
        }
    }
}
