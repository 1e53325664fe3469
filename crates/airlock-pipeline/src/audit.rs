//! The audit stage: every decision is durable (one `write(2)` to the spool) before anything it
//! allowed moves on; results, labels and other after-the-fact records queue and ride along with
//! the next decision commit, or are committed by the transport's flush off the call path.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use airlock_audit::{
    now_unix_ns, AuditWriter, NewRecord, RecordKind, ResultStatus, Submission, Ticket,
};
use airlock_policy::PolicyEngine;
use airlock_protocol::Id;

use crate::Identity;

/// The audit record's common part: who, what, when, under which policy set.
pub fn base_record(
    who: &Identity,
    policy: &PolicyEngine,
    method: &str,
    target: Option<&str>,
    id: Option<&Id>,
) -> NewRecord {
    NewRecord {
        time_unix_ns: now_unix_ns(),
        kind: RecordKind::Call,
        agent: Some(who.agent.clone()),
        on_behalf_of: Some(who.on_behalf_of.clone()),
        task: Some(who.task.clone()),
        session: Some(who.session.clone()),
        server: Some(who.server.clone()),
        method: Some(method.to_string()),
        target: target.map(str::to_string),
        request_id: id.map(|i| i.to_json().to_string()),
        policy_digest: Some(policy.digest().to_string()),
        ..NewRecord::at(RecordKind::Call, now_unix_ns())
    }
}

/// A result record: the outcome of the call whose decision record is `refers_to`.
pub fn result_record(
    who: &Identity,
    policy: &PolicyEngine,
    method: &str,
    target: Option<&str>,
    id: &Id,
    status: ResultStatus,
    started: Instant,
) -> NewRecord {
    let mut record = base_record(who, policy, method, target, Some(id));
    record.kind = RecordKind::Result;
    record.status = Some(status);
    record.duration_us = Some(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX));
    record
}

/// The audit trail as the pipeline writes it: decisions now, other records soon.
pub struct Audit {
    writer: Arc<AuditWriter>,
    queued: Mutex<Vec<Submission>>,
    /// Woken when a record is queued (the transport's flush waits on it).
    pub queued_ready: tokio::sync::Notify,
}

impl Audit {
    pub fn new(writer: Arc<AuditWriter>) -> Audit {
        Audit {
            writer,
            queued: Mutex::new(Vec::new()),
            queued_ready: tokio::sync::Notify::new(),
        }
    }

    /// The writer under this trail.
    pub fn writer(&self) -> &Arc<AuditWriter> {
        &self.writer
    }

    /// Makes a batch's decision records durable, with the queued records riding along; returns
    /// each decision's ticket, or why the commit failed (then nothing they allowed may move).
    pub fn commit(&self, records: &mut Vec<NewRecord>) -> Result<Vec<Ticket>, String> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let mut queued = crate::lock(&self.queued);
        let n = records.len();
        // Sized once: a record is large, and growing the batch would copy them all.
        let mut batch: Vec<Submission> = Vec::with_capacity(n + queued.len());
        batch.extend(records.drain(..).map(Submission::from));
        batch.append(&mut queued);
        drop(queued);
        match self.writer.submit(batch) {
            Ok(tickets) => Ok(tickets.into_iter().take(n).collect()),
            Err(e) => {
                tracing::error!(error = %e, "audit write failed; refusing the batch");
                Err(e.to_string())
            }
        }
    }

    /// Commits records that must be durable now (an approved call about to move), returning
    /// their tickets.
    pub fn commit_now(&self, batch: Vec<Submission>) -> Result<Vec<Ticket>, String> {
        self.writer.submit(batch).map_err(|e| {
            tracing::error!(error = %e, "audit write failed");
            e.to_string()
        })
    }

    /// Queues a record for a later commit (off the call path).
    pub fn queue(&self, record: NewRecord, refers_to: Option<Ticket>) {
        crate::lock(&self.queued).push(Submission { record, refers_to });
        self.queued_ready.notify_one();
    }

    /// Commits what is queued. Blocking file I/O: call it from a blocking thread.
    pub fn flush(&self) {
        let records: Vec<Submission> = std::mem::take(&mut *crate::lock(&self.queued));
        if records.is_empty() {
            return;
        }
        let count = records.len();
        if let Err(e) = self.writer.submit(records) {
            tracing::error!(error = %e, count, "audit append of queued records failed");
        }
    }

    /// Whether records are waiting for a commit.
    pub fn has_queued(&self) -> bool {
        !crate::lock(&self.queued).is_empty()
    }
}
