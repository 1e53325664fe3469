//! `Registry`: agents added with `airlock agents add`, in the audit database file (a table of
//! their own, WAL), so every gateway on the host sees an addition or a revocation.
//!
//! A row keeps the token's SHA-256, never the token. Revoking keeps the row (who it was, for
//! the audit trail's readers) and sets `revoked_ns`; the name may then be added again, with a
//! new token. At most one live row per name is a unique index, so two processes adding the
//! same name at once cannot both succeed.

use std::path::{Path, PathBuf};

use airlock_sqlite::Durability;
use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};
use serde::Serialize;

use crate::error::IdentityError;
use crate::token::AgentToken;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS registered_agents (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    on_behalf_of TEXT NOT NULL,
    task TEXT NOT NULL,
    groups TEXT NOT NULL,
    token_sha256 TEXT NOT NULL UNIQUE,
    created_ns INTEGER NOT NULL,
    created_by TEXT NULL,
    revoked_ns INTEGER NULL,
    revoked_by TEXT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS registered_agents_live
    ON registered_agents(name) WHERE revoked_ns IS NULL;
";

const TABLE: &str = "registered_agents";

const COLUMNS: &str =
    "id, name, on_behalf_of, task, groups, created_ns, created_by, revoked_ns, revoked_by";

/// An agent to register. Names follow the config's id rules.
#[derive(Debug, Clone, Copy)]
pub struct NewAgent<'a> {
    /// The agent's name (its `Agent::"name"` in policy).
    pub name: &'a str,
    /// The human it acts for.
    pub on_behalf_of: &'a str,
    /// The task it is given.
    pub task: &'a str,
    /// Its groups (`AgentGroup` parents in policy).
    pub groups: &'a [String],
    /// Who registered it, when known.
    pub created_by: Option<&'a str>,
}

/// One registration, live or revoked. Never holds the token or its digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RegisteredAgent {
    /// Row id: distinguishes registrations of one name over time.
    pub id: i64,
    /// The agent's name.
    pub name: String,
    /// The human it acts for.
    pub on_behalf_of: String,
    /// Its task.
    pub task: String,
    /// Its groups.
    pub groups: Vec<String>,
    /// When it was added (Unix ns).
    pub created_ns: i64,
    /// Who added it.
    pub created_by: Option<String>,
    /// When it was revoked (Unix ns); `None` while live.
    pub revoked_ns: Option<i64>,
    /// Who revoked it.
    pub revoked_by: Option<String>,
}

impl RegisteredAgent {
    /// Not revoked.
    pub fn is_live(&self) -> bool {
        self.revoked_ns.is_none()
    }
}

/// The registry, read-write. One per process (or thread); many processes share one file.
#[derive(Debug)]
pub struct Registry {
    conn: Connection,
    path: PathBuf,
}

impl Registry {
    /// Opens (creating if needed) the registry table in `db`.
    pub fn open(db: &Path, durability: Durability) -> Result<Registry, IdentityError> {
        let conn = airlock_sqlite::open_wal(db, durability)?;
        conn.execute_batch(&format!("BEGIN IMMEDIATE;{SCHEMA}COMMIT;"))
            .map_err(IdentityError::store(db, "create the agent registry"))?;
        Ok(Registry {
            conn,
            path: db.to_owned(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Registers `new` and returns the row and its token, which exists nowhere else: hand it to
    /// the agent now. Refuses a name (or human, task, group) that is not a valid id, and a name
    /// with a live registration.
    pub fn add(
        &mut self,
        new: &NewAgent<'_>,
    ) -> Result<(RegisteredAgent, AgentToken), IdentityError> {
        check_name("agent", new.name)?;
        check_name("human", new.on_behalf_of)?;
        check_name("task", new.task)?;
        for g in new.groups {
            check_name("group", g)?;
        }
        let mut groups = new.groups.to_vec();
        groups.sort();
        groups.dedup();
        let token = AgentToken::generate()?;
        let path = self.path.clone();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(IdentityError::store(&path, "begin adding an agent"))?;
        if live_row(&tx, new.name, &path)?.is_some() {
            return Err(IdentityError::AlreadyRegistered {
                name: new.name.to_owned(),
            });
        }
        let groups_json = serde_json::to_string(&groups).unwrap_or_else(|_| "[]".to_owned());
        tx.execute(
            "INSERT INTO registered_agents \
             (name, on_behalf_of, task, groups, token_sha256, created_ns, created_by) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                new.name,
                new.on_behalf_of,
                new.task,
                groups_json,
                token.digest_hex(),
                now_ns(),
                new.created_by,
            ],
        )
        .map_err(IdentityError::store(&path, "add an agent"))?;
        let row = live_row(&tx, new.name, &path)?.ok_or_else(|| IdentityError::NotRegistered {
            name: new.name.to_owned(),
        })?;
        tx.commit()
            .map_err(IdentityError::store(&path, "commit the new agent"))?;
        Ok((row, token))
    }

    /// Revokes the live registration of `name`: its token stops authenticating at every
    /// gateway's next reload. Returns the revoked row.
    pub fn revoke(
        &mut self,
        name: &str,
        by: Option<&str>,
    ) -> Result<RegisteredAgent, IdentityError> {
        let path = self.path.clone();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(IdentityError::store(&path, "begin revoking an agent"))?;
        let Some(live) = live_row(&tx, name, &path)? else {
            return Err(IdentityError::NotRegistered {
                name: name.to_owned(),
            });
        };
        let now = now_ns();
        tx.execute(
            "UPDATE registered_agents SET revoked_ns = ?1, revoked_by = ?2 WHERE id = ?3",
            params![now, by, live.id],
        )
        .map_err(IdentityError::store(&path, "revoke an agent"))?;
        tx.commit()
            .map_err(IdentityError::store(&path, "commit the revocation"))?;
        Ok(RegisteredAgent {
            revoked_ns: Some(now),
            revoked_by: by.map(str::to_owned),
            ..live
        })
    }

    /// Every registration, live and revoked, oldest first.
    pub fn list(&self) -> Result<Vec<RegisteredAgent>, IdentityError> {
        all_rows(&self.conn, &self.path)
    }

    /// The live registration of `name`, if any.
    pub fn live(&self, name: &str) -> Result<Option<RegisteredAgent>, IdentityError> {
        live_row(&self.conn, name, &self.path)
    }
}

/// Every registration in `db`, read without creating anything: none when the file or the
/// table does not exist yet.
pub fn list_registered(db: &Path) -> Result<Vec<RegisteredAgent>, IdentityError> {
    match reader(db)? {
        Some(conn) => all_rows(&conn, db),
        None => Ok(Vec::new()),
    }
}

/// Whether `name` is a live registered agent in `db` (false when it cannot be read: the caller
/// then checks it against the config, which refuses an unknown name).
pub fn is_registered(db: &Path, name: &str) -> bool {
    list_registered(db).is_ok_and(|rows| rows.iter().any(|r| r.name == name && r.is_live()))
}

/// A registration's row with its digest, for the authenticator's snapshot.
pub(crate) struct Credential {
    pub(crate) agent: RegisteredAgent,
    pub(crate) token_sha256: String,
}

/// Every registration with its digest (read-only; none when nothing was ever registered).
pub(crate) fn credentials(db: &Path) -> Result<Vec<Credential>, IdentityError> {
    let Some(conn) = reader(db)? else {
        return Ok(Vec::new());
    };
    let mut stmt = conn
        .prepare(&format!(
            "SELECT {COLUMNS}, token_sha256 FROM registered_agents ORDER BY id"
        ))
        .map_err(IdentityError::store(db, "read the agent registry"))?;
    let rows = stmt
        .query_map([], |r| {
            Ok(Credential {
                agent: from_row(r)?,
                token_sha256: r.get(9)?,
            })
        })
        .map_err(IdentityError::store(db, "read the agent registry"))?;
    rows.collect::<Result<Vec<_>, _>>()
        .map_err(IdentityError::store(db, "read the agent registry"))
}

/// A read-only connection when the file and the table exist.
fn reader(db: &Path) -> Result<Option<Connection>, IdentityError> {
    if !db.exists() {
        return Ok(None);
    }
    let conn = airlock_sqlite::open_read_only(db)?;
    let exists: bool = conn
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1)",
            [TABLE],
            |r| r.get(0),
        )
        .map_err(IdentityError::store(db, "look for the agent registry"))?;
    Ok(exists.then_some(conn))
}

fn all_rows(conn: &Connection, path: &Path) -> Result<Vec<RegisteredAgent>, IdentityError> {
    let mut stmt = conn
        .prepare(&format!(
            "SELECT {COLUMNS} FROM registered_agents ORDER BY id"
        ))
        .map_err(IdentityError::store(path, "list registered agents"))?;
    let rows = stmt
        .query_map([], from_row)
        .map_err(IdentityError::store(path, "list registered agents"))?;
    rows.collect::<Result<Vec<_>, _>>()
        .map_err(IdentityError::store(path, "list registered agents"))
}

fn live_row(
    conn: &Connection,
    name: &str,
    path: &Path,
) -> Result<Option<RegisteredAgent>, IdentityError> {
    conn.query_row(
        &format!("SELECT {COLUMNS} FROM registered_agents WHERE name = ?1 AND revoked_ns IS NULL"),
        [name],
        from_row,
    )
    .optional()
    .map_err(IdentityError::store(path, "read a registered agent"))
}

fn from_row(r: &Row<'_>) -> rusqlite::Result<RegisteredAgent> {
    let groups: String = r.get(4)?;
    Ok(RegisteredAgent {
        id: r.get(0)?,
        name: r.get(1)?,
        on_behalf_of: r.get(2)?,
        task: r.get(3)?,
        // Written by `add` as a JSON array of names; anything else grants no group.
        groups: serde_json::from_str(&groups).unwrap_or_default(),
        created_ns: r.get(5)?,
        created_by: r.get(6)?,
        revoked_ns: r.get(7)?,
        revoked_by: r.get(8)?,
    })
}

fn check_name(what: &'static str, name: &str) -> Result<(), IdentityError> {
    if airlock_config::is_valid_name(name) {
        Ok(())
    } else {
        Err(IdentityError::InvalidName {
            what,
            name: name.to_owned(),
        })
    }
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

#[cfg(test)]
#[path = "registry_tests.rs"]
mod tests;
