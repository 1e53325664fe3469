//! `ApprovalStore`: approval requests and votes in the audit database file (tables of their
//! own, WAL), so a pending request survives a restart of any Airlock process.

use std::path::{Path, PathBuf};

use airlock_audit::Durability;
use airlock_control::KillTarget;
use rusqlite::{params, Connection, OptionalExtension, Row, Transaction, TransactionBehavior};

use crate::error::ApprovalError;
use crate::model::{
    action_digest, has_marker, secret_paths, Approval, HoldReason, ListFilter, NewApproval,
    Revealed, State, Verdict, Vote,
};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS approvals (
    id TEXT PRIMARY KEY,
    digest TEXT NOT NULL,
    agent TEXT NOT NULL,
    on_behalf_of TEXT NOT NULL,
    task TEXT NOT NULL,
    session TEXT NOT NULL,
    server TEXT NOT NULL,
    method TEXT NOT NULL,
    target TEXT NOT NULL,
    args_redacted TEXT NOT NULL,
    reasons TEXT NOT NULL,
    approvers TEXT NOT NULL,
    quorum INTEGER NOT NULL,
    four_eyes INTEGER NOT NULL,
    created_ns INTEGER NOT NULL,
    expires_ns INTEGER NOT NULL,
    state TEXT NOT NULL,
    decided_ns INTEGER NULL
);
CREATE INDEX IF NOT EXISTS approvals_digest ON approvals(digest, state);
CREATE INDEX IF NOT EXISTS approvals_created ON approvals(created_ns);
CREATE INDEX IF NOT EXISTS approvals_pending ON approvals(state, created_ns) WHERE state = 'pending';
-- The arguments of a request whose stored arguments hide secrets, as they are, for the show
-- paths of humans who may approve it (never listed, logged, audited or sent by the webhook);
-- deleted when the request is decided against, expires, is withdrawn or used.
CREATE TABLE IF NOT EXISTS approval_args (
    approval_id TEXT PRIMARY KEY,
    args TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS approval_votes (
    approval_id TEXT NOT NULL,
    human TEXT NOT NULL,
    verdict TEXT NOT NULL,
    channel TEXT NOT NULL,
    comment TEXT NULL,
    time_ns INTEGER NOT NULL,
    PRIMARY KEY (approval_id, human)
);
";

const COLUMNS: &str = "id, digest, agent, on_behalf_of, task, session, server, method, target, \
     args_redacted, reasons, approvers, quorum, four_eyes, created_ns, expires_ns, state, decided_ns";

/// Approval requests and votes. One per process (or thread); many processes share one file.
#[derive(Debug)]
pub struct ApprovalStore {
    conn: Connection,
    path: PathBuf,
}

impl ApprovalStore {
    /// Opens (creating if needed) the approval tables in `db` with process-crash durability.
    pub fn open(db: &Path) -> Result<ApprovalStore, ApprovalError> {
        ApprovalStore::open_with(db, Durability::Process)
    }

    /// Opens with the given durability (use the config's `[audit] durability`).
    pub fn open_with(db: &Path, durability: Durability) -> Result<ApprovalStore, ApprovalError> {
        let conn = airlock_sqlite::open_wal(db, durability)?;
        conn.execute_batch(&format!("BEGIN IMMEDIATE;{SCHEMA}COMMIT;"))
            .map_err(ApprovalError::sqlite("create approval tables"))?;
        Ok(ApprovalStore {
            conn,
            path: db.to_owned(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stores a request for a held call, or joins the pending request for the same digest
    /// (the agent asked again, say after a restart). Returns it and whether it is new.
    ///
    /// Only the redacted arguments are kept: where they hide a secret, no human can read it,
    /// so the request cannot be approved (see [`ApprovalStore::request_with_args`]).
    pub fn request(&mut self, new: &NewApproval) -> Result<(Approval, bool), ApprovalError> {
        self.request_inner(new, None)
    }

    /// As [`ApprovalStore::request`], also keeping `args`, the call's arguments as they are,
    /// when the redacted ones hide a value: then a human who may approve the request can read
    /// what they approve ([`ApprovalStore::reveal`]). `args` must be the arguments the
    /// request's digest binds, or nothing is stored.
    pub fn request_with_args(
        &mut self,
        new: &NewApproval,
        args: &serde_json::Value,
    ) -> Result<(Approval, bool), ApprovalError> {
        let digest = action_digest(
            &new.agent,
            &new.on_behalf_of,
            &new.server,
            &new.method,
            &new.target,
            args,
        );
        if digest != new.digest {
            return Err(ApprovalError::Invalid(
                "the arguments given are not the ones the request's digest binds".into(),
            ));
        }
        // Kept whenever the stored form hides something (a literal marker the agent sent
        // included), so the approver reads exactly what the digest binds.
        let hides = !secret_paths(args).is_empty() || has_marker(&new.args_redacted);
        let keep = hides.then_some(args);
        self.request_inner(new, keep)
    }

    fn request_inner(
        &mut self,
        new: &NewApproval,
        args: Option<&serde_json::Value>,
    ) -> Result<(Approval, bool), ApprovalError> {
        let tx = self.begin("begin request")?;
        // Arguments kept for approvers go as soon as nobody can approve their request.
        tx.execute(
            "DELETE FROM approval_args WHERE approval_id IN (SELECT id FROM approvals \
             WHERE state NOT IN ('pending', 'approved') OR expires_ns <= ?1)",
            params![new.now_ns],
        )
        .map_err(ApprovalError::sqlite("forget arguments of ended requests"))?;
        let existing: Option<String> = tx
            .query_row(
                "SELECT id FROM approvals WHERE digest = ?1 AND state = 'pending' \
                 AND expires_ns > ?2 ORDER BY created_ns DESC LIMIT 1",
                params![new.digest, new.now_ns],
                |r| r.get(0),
            )
            .optional()
            .map_err(ApprovalError::sqlite("look up a pending request"))?;
        if let Some(id) = existing {
            if let Some(args) = args {
                keep_args(&tx, &id, args)?;
            }
            let found = load(&tx, &id, new.now_ns)?;
            tx.commit().map_err(ApprovalError::sqlite("commit"))?;
            return found
                .map(|a| (a, false))
                .ok_or_else(|| ApprovalError::Corrupt(format!("request {id} vanished")));
        }
        let id = new_id()?;
        let expiry_ns = i64::try_from(new.requirements.expiry.as_nanos()).unwrap_or(i64::MAX);
        tx.execute(
            &format!(
                "INSERT INTO approvals ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, \
                 ?10, ?11, ?12, ?13, ?14, ?15, ?16, 'pending', NULL)"
            ),
            params![
                id,
                new.digest,
                new.agent,
                new.on_behalf_of,
                new.task,
                new.session,
                new.server,
                new.method,
                new.target,
                json(&new.args_redacted)?,
                json(&new.reasons)?,
                json(&new.requirements.approvers)?,
                new.requirements.quorum,
                new.requirements.four_eyes,
                new.now_ns,
                new.now_ns.saturating_add(expiry_ns),
            ],
        )
        .map_err(ApprovalError::sqlite("insert a request"))?;
        if let Some(args) = args {
            keep_args(&tx, &id, args)?;
        }
        let stored = load(&tx, &id, new.now_ns)?;
        tx.commit()
            .map_err(ApprovalError::sqlite("commit a request"))?;
        stored
            .map(|a| (a, true))
            .ok_or_else(|| ApprovalError::Corrupt(format!("request {id} vanished")))
    }

    /// One request, with its votes.
    pub fn get(&self, id: &str) -> Result<Option<Approval>, ApprovalError> {
        load(&self.conn, id, airlock_audit::now_unix_ns())
    }

    /// The arguments of request `id` as they are, with the pointers of its secret values:
    /// `None` unless they were kept ([`ApprovalStore::request_with_args`]) and the request is
    /// still pending or approved and unused. For the show paths of a human who may approve
    /// it (the caller checks that): never for lists, logs, audit records or the webhook.
    pub fn reveal(&self, id: &str) -> Result<Option<Revealed>, ApprovalError> {
        let text: Option<String> = self
            .conn
            .query_row(
                "SELECT x.args FROM approval_args x JOIN approvals a ON a.id = x.approval_id \
                 WHERE x.approval_id = ?1 AND a.state IN ('pending', 'approved') \
                 AND a.expires_ns > ?2",
                params![id, airlock_audit::now_unix_ns()],
                |r| r.get(0),
            )
            .optional()
            .map_err(ApprovalError::sqlite("read a request's arguments"))?;
        let Some(text) = text else {
            return Ok(None);
        };
        let args: serde_json::Value = serde_json::from_str(&text)
            .map_err(|_| ApprovalError::Corrupt(format!("request {id}: kept arguments")))?;
        Ok(Some(Revealed {
            secrets: secret_paths(&args),
            args,
        }))
    }

    /// Requests matching `filter`, newest first.
    pub fn list(&self, filter: &ListFilter) -> Result<Vec<Approval>, ApprovalError> {
        let now = airlock_audit::now_unix_ns();
        let mut sql = format!("SELECT {COLUMNS} FROM approvals WHERE 1 = 1");
        let mut args: Vec<rusqlite::types::Value> = Vec::new();
        if !filter.states.is_empty() {
            // A pending request past its expiry reads as expired: select on the effective state.
            let mut parts = Vec::new();
            for s in &filter.states {
                match s {
                    State::Pending => {
                        parts.push("(state = 'pending' AND expires_ns > ?)".to_owned());
                        args.push(now.into());
                    }
                    State::Expired => {
                        parts.push(
                            "(state = 'expired' OR (state = 'pending' AND expires_ns <= ?))"
                                .to_owned(),
                        );
                        args.push(now.into());
                    }
                    other => {
                        parts.push("state = ?".to_owned());
                        args.push(other.as_str().to_owned().into());
                    }
                }
            }
            sql.push_str(&format!(" AND ({})", parts.join(" OR ")));
        }
        if let Some(a) = &filter.agent {
            sql.push_str(" AND agent = ?");
            args.push(a.clone().into());
        }
        if let Some(s) = &filter.session {
            sql.push_str(" AND session = ?");
            args.push(s.clone().into());
        }
        sql.push_str(" ORDER BY created_ns DESC, id DESC LIMIT ?");
        args.push(i64::try_from(filter.limit).unwrap_or(i64::MAX).into());
        let mut stmt = self
            .conn
            .prepare(&sql)
            .map_err(ApprovalError::sqlite("prepare the list"))?;
        let rows = stmt
            .query_map(rusqlite::params_from_iter(args), row_parts)
            .map_err(ApprovalError::sqlite("list requests"))?;
        let mut out = Vec::new();
        for row in rows {
            let parts = row.map_err(ApprovalError::sqlite("read a request"))?;
            out.push(parts.into_approval(now)?);
        }
        // One query for every vote of the listed requests.
        attach_votes(&self.conn, &mut out)?;
        Ok(out)
    }

    /// Records `vote` on pending request `id`, then moves it to `Approved` once the votes
    /// meet its quorum and four eyes, or to `Denied` on a deny. `check` sees the request
    /// first and may refuse the vote (authorization). Returns the request as it now is.
    pub fn vote(
        &mut self,
        id: &str,
        vote: &Vote,
        check: impl FnOnce(&Approval) -> Result<(), ApprovalError>,
    ) -> Result<Approval, ApprovalError> {
        let tx = self.begin("begin vote")?;
        let Some(approval) = load(&tx, id, vote.time_ns)? else {
            return Err(ApprovalError::NotFound { id: id.to_owned() });
        };
        match approval.state {
            State::Pending => {}
            State::Expired => {
                set_state(&tx, id, State::Expired, vote.time_ns)?;
                tx.commit()
                    .map_err(ApprovalError::sqlite("commit expiry"))?;
                return Err(ApprovalError::Expired { id: id.to_owned() });
            }
            other => {
                return Err(ApprovalError::NotPending {
                    id: id.to_owned(),
                    state: other.as_str().to_owned(),
                })
            }
        }
        if approval.votes.iter().any(|v| v.human == vote.human) {
            return Err(ApprovalError::AlreadyVoted {
                id: id.to_owned(),
                human: vote.human.clone(),
            });
        }
        check(&approval)?;
        if vote.verdict == Verdict::Approve && approval.hides_values() && !has_args(&tx, id)? {
            // Never ask a human to approve what they cannot read.
            return Err(ApprovalError::CannotShow { id: id.to_owned() });
        }
        insert_vote(&tx, id, vote)?;
        let mut after = approval;
        after.votes.push(vote.clone());
        let next = match vote.verdict {
            Verdict::Deny => Some(State::Denied),
            Verdict::Approve if after.quorum_met() => Some(State::Approved),
            Verdict::Approve => None,
        };
        if let Some(state) = next {
            set_state(&tx, id, state, vote.time_ns)?;
            after.state = state;
            after.decided_ns = Some(vote.time_ns);
        }
        tx.commit()
            .map_err(ApprovalError::sqlite("commit a vote"))?;
        Ok(after)
    }

    /// Uses an approved request once: `Approved` → `Used`. `None` if it is not approved (any
    /// more), so a second use finds nothing.
    pub fn consume(&mut self, id: &str) -> Result<Option<Approval>, ApprovalError> {
        let now = airlock_audit::now_unix_ns();
        let tx = self.begin("begin consume")?;
        let n = tx
            .execute(
                "UPDATE approvals SET state = 'used' WHERE id = ?1 AND state = 'approved' \
                 AND expires_ns > ?2",
                params![id, now],
            )
            .map_err(ApprovalError::sqlite("consume an approval"))?;
        let out = if n == 1 {
            forget_args(&tx, id)?;
            load(&tx, id, now)?
        } else {
            None
        };
        tx.commit()
            .map_err(ApprovalError::sqlite("commit consume"))?;
        Ok(out)
    }

    /// Uses the approved, unexpired request for `digest`, if any: the agent's retry of a call
    /// that was approved while no gateway held it (after a restart) goes through once.
    pub fn take_approved(&mut self, digest: &str) -> Result<Option<Approval>, ApprovalError> {
        let now = airlock_audit::now_unix_ns();
        let id: Option<String> = self
            .conn
            .query_row(
                "SELECT id FROM approvals WHERE digest = ?1 AND state = 'approved' \
                 AND expires_ns > ?2 ORDER BY created_ns LIMIT 1",
                params![digest, now],
                |r| r.get(0),
            )
            .optional()
            .map_err(ApprovalError::sqlite("look up an approval"))?;
        match id {
            Some(id) => self.consume(&id),
            None => Ok(None),
        }
    }

    /// Ends a pending request without a human decision (`Withdrawn` or `Expired`). Returns
    /// whether it was pending.
    pub fn close(&mut self, id: &str, state: State) -> Result<bool, ApprovalError> {
        let now = airlock_audit::now_unix_ns();
        let tx = self.begin("begin close")?;
        let n = tx
            .execute(
                "UPDATE approvals SET state = ?1, decided_ns = ?2 WHERE id = ?3 AND state = 'pending'",
                params![state.as_str(), now, id],
            )
            .map_err(ApprovalError::sqlite("close a request"))?;
        if n == 1 {
            forget_args(&tx, id)?;
        }
        tx.commit().map_err(ApprovalError::sqlite("commit close"))?;
        Ok(n == 1)
    }

    /// Denies every pending request the kill `target` covers, and voids every approved one
    /// not used yet, as human `by` (the kill's vote, channel `kill`, with its reason); returns
    /// them. Kills outrank approvals: an approval granted before a kill can never be used
    /// after it, and a resume does not revive it (the agent's retry asks anew).
    pub fn deny_for_kill(
        &mut self,
        target: &KillTarget,
        by: &str,
        reason: &str,
    ) -> Result<Vec<Approval>, ApprovalError> {
        let now = airlock_audit::now_unix_ns();
        let tx = self.begin("begin kill denial")?;
        let (clause, value): (&str, String) = match target {
            KillTarget::All => ("?2 = ''", String::new()),
            KillTarget::Agent(a) => ("agent = ?2", a.clone()),
            KillTarget::Session(s) => ("session = ?2", s.clone()),
            KillTarget::Human(h) => ("on_behalf_of = ?2", h.clone()),
            KillTarget::Tool { server, tool } => (
                "server || '/' || target = ?2 AND method = 'tools/call'",
                format!("{server}/{tool}"),
            ),
        };
        let sql = format!(
            "SELECT id FROM approvals WHERE state IN ('pending', 'approved') \
             AND expires_ns > ?1 AND {clause}"
        );
        let ids: Vec<String> = {
            let mut stmt = tx
                .prepare(&sql)
                .map_err(ApprovalError::sqlite("prepare the kill denial"))?;
            let rows = stmt
                .query_map(params![now, value], |r| r.get::<_, String>(0))
                .map_err(ApprovalError::sqlite("find requests to deny"))?;
            rows.collect::<Result<_, _>>()
                .map_err(ApprovalError::sqlite("read requests to deny"))?
        };
        let vote = Vote {
            human: by.to_owned(),
            verdict: Verdict::Deny,
            channel: "kill".to_owned(),
            comment: Some(reason.to_owned()),
            time_ns: now,
        };
        let mut out = Vec::new();
        for id in ids {
            tx.execute(
                "DELETE FROM approval_votes WHERE approval_id = ?1 AND human = ?2",
                params![id, by],
            )
            .map_err(ApprovalError::sqlite("replace a vote"))?;
            insert_vote(&tx, &id, &vote)?;
            set_state(&tx, &id, State::Denied, now)?;
            if let Some(a) = load(&tx, &id, now)? {
                out.push(a);
            }
        }
        tx.commit()
            .map_err(ApprovalError::sqlite("commit kill denial"))?;
        Ok(out)
    }

    fn begin(&mut self, what: &'static str) -> Result<Transaction<'_>, ApprovalError> {
        self.conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(ApprovalError::sqlite(what))
    }
}

fn json<T: serde::Serialize>(value: &T) -> Result<String, ApprovalError> {
    serde_json::to_string(value).map_err(|e| ApprovalError::Corrupt(e.to_string()))
}

fn new_id() -> Result<String, ApprovalError> {
    let token = airlock_control::auth::new_token()
        .map_err(|e| ApprovalError::Corrupt(format!("no random id: {e}")))?;
    // `alt_` + 64 hex digits; 16 of them (64 bits) name a request.
    let hex = token.get(4..20).unwrap_or_default();
    Ok(format!("apr-{hex}"))
}

fn set_state(conn: &Connection, id: &str, state: State, now: i64) -> Result<(), ApprovalError> {
    conn.execute(
        "UPDATE approvals SET state = ?1, decided_ns = ?2 WHERE id = ?3",
        params![state.as_str(), now, id],
    )
    .map_err(ApprovalError::sqlite("update a request"))?;
    if !matches!(state, State::Pending | State::Approved) {
        forget_args(conn, id)?;
    }
    Ok(())
}

/// Keeps the arguments of request `id` for its approvers (the first copy stays: the digest
/// binds them, so any copy is the same).
fn keep_args(conn: &Connection, id: &str, args: &serde_json::Value) -> Result<(), ApprovalError> {
    conn.execute(
        "INSERT OR IGNORE INTO approval_args (approval_id, args) VALUES (?1, ?2)",
        params![id, json(args)?],
    )
    .map_err(ApprovalError::sqlite("keep a request's arguments"))?;
    Ok(())
}

fn has_args(conn: &Connection, id: &str) -> Result<bool, ApprovalError> {
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM approval_args WHERE approval_id = ?1)",
        params![id],
        |r| r.get(0),
    )
    .map_err(ApprovalError::sqlite("look up a request's arguments"))
}

/// Forgets the arguments kept for a request nobody can approve any more.
fn forget_args(conn: &Connection, id: &str) -> Result<(), ApprovalError> {
    conn.execute(
        "DELETE FROM approval_args WHERE approval_id = ?1",
        params![id],
    )
    .map_err(ApprovalError::sqlite("forget a request's arguments"))?;
    Ok(())
}

fn insert_vote(conn: &Connection, id: &str, vote: &Vote) -> Result<(), ApprovalError> {
    conn.execute(
        "INSERT INTO approval_votes (approval_id, human, verdict, channel, comment, time_ns) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            id,
            vote.human,
            vote.verdict.as_str(),
            vote.channel,
            vote.comment,
            vote.time_ns
        ],
    )
    .map_err(ApprovalError::sqlite("insert a vote"))?;
    Ok(())
}

/// A request row before its JSON columns are decoded.
struct RowParts {
    id: String,
    digest: String,
    agent: String,
    on_behalf_of: String,
    task: String,
    session: String,
    server: String,
    method: String,
    target: String,
    args_redacted: String,
    reasons: String,
    approvers: String,
    quorum: i64,
    four_eyes: bool,
    created_ns: i64,
    expires_ns: i64,
    state: String,
    decided_ns: Option<i64>,
}

fn row_parts(r: &Row<'_>) -> rusqlite::Result<RowParts> {
    Ok(RowParts {
        id: r.get(0)?,
        digest: r.get(1)?,
        agent: r.get(2)?,
        on_behalf_of: r.get(3)?,
        task: r.get(4)?,
        session: r.get(5)?,
        server: r.get(6)?,
        method: r.get(7)?,
        target: r.get(8)?,
        args_redacted: r.get(9)?,
        reasons: r.get(10)?,
        approvers: r.get(11)?,
        quorum: r.get(12)?,
        four_eyes: r.get(13)?,
        created_ns: r.get(14)?,
        expires_ns: r.get(15)?,
        state: r.get(16)?,
        decided_ns: r.get(17)?,
    })
}

impl RowParts {
    fn into_approval(self, now: i64) -> Result<Approval, ApprovalError> {
        let corrupt = |what: &str| ApprovalError::Corrupt(format!("request {}: {what}", self.id));
        let stored = State::from_name(&self.state).ok_or_else(|| corrupt("unknown state"))?;
        let state = if stored == State::Pending && now >= self.expires_ns {
            State::Expired
        } else {
            stored
        };
        let args_redacted =
            serde_json::from_str(&self.args_redacted).map_err(|_| corrupt("arguments"))?;
        let reasons: Vec<HoldReason> =
            serde_json::from_str(&self.reasons).map_err(|_| corrupt("reasons"))?;
        let approvers: Vec<String> =
            serde_json::from_str(&self.approvers).map_err(|_| corrupt("approvers"))?;
        let quorum = u32::try_from(self.quorum).map_err(|_| corrupt("quorum"))?;
        Ok(Approval {
            id: self.id,
            digest: self.digest,
            agent: self.agent,
            on_behalf_of: self.on_behalf_of,
            task: self.task,
            session: self.session,
            server: self.server,
            method: self.method,
            target: self.target,
            args_redacted,
            reasons,
            approvers,
            quorum,
            four_eyes: self.four_eyes,
            created_ns: self.created_ns,
            expires_ns: self.expires_ns,
            state,
            decided_ns: self.decided_ns,
            votes: Vec::new(),
        })
    }
}

fn load(conn: &Connection, id: &str, now: i64) -> Result<Option<Approval>, ApprovalError> {
    let parts = conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM approvals WHERE id = ?1"),
            params![id],
            row_parts,
        )
        .optional()
        .map_err(ApprovalError::sqlite("read a request"))?;
    let Some(parts) = parts else {
        return Ok(None);
    };
    let mut one = vec![parts.into_approval(now)?];
    attach_votes(conn, &mut one)?;
    Ok(one.pop())
}

fn attach_votes(conn: &Connection, approvals: &mut [Approval]) -> Result<(), ApprovalError> {
    if approvals.is_empty() {
        return Ok(());
    }
    let mut stmt = conn
        .prepare_cached(
            "SELECT human, verdict, channel, comment, time_ns FROM approval_votes \
             WHERE approval_id = ?1 ORDER BY time_ns, human",
        )
        .map_err(ApprovalError::sqlite("prepare the votes"))?;
    for a in approvals.iter_mut() {
        let rows = stmt
            .query_map(params![a.id], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, i64>(4)?,
                ))
            })
            .map_err(ApprovalError::sqlite("read votes"))?;
        for row in rows {
            let (human, verdict, channel, comment, time_ns) =
                row.map_err(ApprovalError::sqlite("read a vote"))?;
            let verdict = Verdict::from_name(&verdict)
                .ok_or_else(|| ApprovalError::Corrupt(format!("request {}: a vote", a.id)))?;
            a.votes.push(Vote {
                human,
                verdict,
                channel,
                comment,
                time_ns,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "store_tests.rs"]
pub(crate) mod tests;
