//! A human's kill and resume, whole: the one sequence `airlock kill`/`resume` and
//! `airlock serve` both run, so the store, the audit trail and the running gateways see the
//! same thing whichever channel a human used.
//!
//! Order matters: the store first (the kill is in force from its COMMIT, whatever happens
//! next), then the wake-up of every gateway, then what may wait for the audit database's write
//! lock (denying held approvals, the audit record). An audit or notify failure after the commit
//! is reported to the caller, never a reason to undo the kill.

use airlock_audit::{AuditError, AuditStore, Durability, NewRecord};
use airlock_config::Config;

use crate::error::ControlError;
use crate::kill::{Kill, KillTarget};
use crate::kill_store::KillStore;
use crate::store::ControlStore;

/// What happened after the store committed: the audit record's and the fan-out's outcomes.
#[derive(Debug)]
pub struct Announced<T> {
    /// The committed change: the kill, or how many kills a resume ended.
    pub value: T,
    /// Whether the audit record was written (`Ok(())` also when nothing needed recording).
    pub audited: Result<(), AuditError>,
    /// How many running gateways were woken.
    pub notified: Result<usize, ControlError>,
}

/// Kills `target` as `by` (already authenticated) and announces it. `Err` only when the store
/// could not record the kill: then nothing changed.
///
/// `also` runs after the gateways were woken and returns further records to append after the
/// kill's own (the caller denies the approval requests the kill covers there: the approvals
/// crate sits above this one). A gateway does not wait for that: it ends the held calls a kill
/// covers itself. When `also` returned records, the gateways are woken once more, so every
/// screen re-reads the denied requests.
pub fn kill_and_announce(
    config: &Config,
    store: &mut KillStore,
    target: KillTarget,
    reason: &str,
    by: &str,
    also: impl FnOnce(&Kill) -> Vec<NewRecord>,
) -> Result<Announced<Kill>, ControlError> {
    let kill = store.kill(target, reason, by)?;
    // The kill is in force from here: the gateways first, as nothing below touches the kill
    // file, while denying approvals and the audit append may wait for the audit database.
    let mut notified = crate::notify_all(&config.audit.path);
    let mut records = vec![crate::records::kill_record(&kill)];
    let denials = also(&kill);
    if !denials.is_empty() {
        let again = crate::notify_all(&config.audit.path);
        notified = notified.and_then(|n| again.map(|m| n.max(m)));
    }
    records.extend(denials);
    let audited = audit(config, &records);
    Ok(Announced {
        value: kill,
        audited,
        notified,
    })
}

/// Ends every active kill of exactly `target` as `by` and announces it; returns how many
/// ended. When none did, nothing is recorded and nobody is woken.
pub fn resume_and_announce(
    config: &Config,
    store: &mut ControlStore,
    target: &KillTarget,
    by: &str,
) -> Result<Announced<usize>, ControlError> {
    let n = store.resume(target, by)?;
    if n == 0 {
        return Ok(Announced {
            value: 0,
            audited: Ok(()),
            notified: Ok(0),
        });
    }
    let audited = audit(config, &[crate::records::resume_record(target, by, n)]);
    let notified = crate::notify_all(&config.audit.path);
    Ok(Announced {
        value: n,
        audited,
        notified,
    })
}

/// A kill of something the config does not declare is an error, not a silent success;
/// returns warnings for what cannot be checked. The error is a sentence naming the file.
pub fn check_target(config: &Config, t: &KillTarget) -> Result<Vec<String>, ControlError> {
    let path = config.path.display();
    let unknown = |m: String| Err(ControlError::UnknownTarget(m));
    match t {
        KillTarget::Agent(a) if !config.agents.contains_key(a) => unknown(format!(
            "{path}: unknown agent \"{a}\" (known: {})",
            join(config.agents.keys())
        )),
        KillTarget::Human(h) if !config.humans.contains_key(h) => unknown(format!(
            "{path}: unknown human \"{h}\" (known: {})",
            join(config.humans.keys())
        )),
        KillTarget::Tool { server, tool } => match config.servers.get(server) {
            None => unknown(format!(
                "{path}: unknown server \"{server}\" (known: {})",
                join(config.servers.keys())
            )),
            Some(s) => match &s.tools {
                Some(tools) if !tools.iter().any(|x| x == tool) => unknown(format!(
                    "{path}: server \"{server}\" has no tool \"{tool}\" (its tools: {})",
                    join(tools.iter())
                )),
                Some(_) => Ok(vec![]),
                None => Ok(vec![format!(
                    "[servers.{server}] has no `tools` list, so \"{tool}\" cannot be checked; \
                     the kill applies to that name"
                )]),
            },
        },
        _ => Ok(vec![]),
    }
}

/// The config's `[audit] durability` in the audit crate's terms.
pub fn durability(config: &Config) -> Durability {
    match config.audit.durability {
        airlock_config::Durability::Process => Durability::Process,
        airlock_config::Durability::PowerLoss => Durability::PowerLoss,
    }
}

fn audit(config: &Config, records: &[NewRecord]) -> Result<(), AuditError> {
    let mut store = AuditStore::open(&config.audit.path, durability(config))?;
    store.append(records)?;
    Ok(())
}

fn join<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let v: Vec<&str> = names.map(String::as_str).collect();
    if v.is_empty() {
        "none".to_owned()
    } else {
        v.join(", ")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::path::Path;

    use super::*;

    fn config(db: &Path) -> Config {
        let text = format!(
            "[policy]\nfiles = [\"p\"]\n[audit]\npath = {:?}\n[humans.alice]\n[tasks.t]\n\
             [agents.bot]\non_behalf_of = \"alice\"\ntask = \"t\"\n[servers.corp]\n\
             tools = [\"acl_set\"]\n[servers.open]\n",
            db.display().to_string()
        );
        airlock_config::parse(&text, Path::new("a.toml")).unwrap()
    }

    #[test]
    fn unknown_targets_are_errors() {
        let c = config(Path::new("/nonexistent/x.db"));
        let ok = |t: KillTarget| check_target(&c, &t).unwrap();
        assert!(ok(KillTarget::Agent("bot".into())).is_empty());
        assert!(ok(KillTarget::tool("corp/acl_set").unwrap()).is_empty());
        assert_eq!(ok(KillTarget::tool("open/x").unwrap()).len(), 1);
        assert!(ok(KillTarget::All).is_empty());
        let err = |t: KillTarget| check_target(&c, &t).unwrap_err().to_string();
        assert_eq!(
            err(KillTarget::Agent("ghost".into())),
            "a.toml: unknown agent \"ghost\" (known: bot)"
        );
        assert!(err(KillTarget::tool("corp/nope").unwrap()).contains("has no tool \"nope\""));
        assert!(err(KillTarget::tool("nope/x").unwrap()).contains("unknown server \"nope\""));
    }

    #[test]
    fn kill_then_resume_records_both_and_resuming_nothing_records_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("audit.db");
        let c = config(&db);
        let mut store = ControlStore::open(&db).unwrap();
        let k = kill_and_announce(
            &c,
            store.kill_store(),
            KillTarget::Agent("bot".into()),
            "r",
            "alice",
            |_| vec![NewRecord::now(airlock_audit::RecordKind::Approval)],
        )
        .unwrap();
        k.audited.unwrap();
        assert_eq!(k.notified.unwrap(), 0);
        assert_eq!(store.active().unwrap(), vec![k.value.clone()]);
        let none = resume_and_announce(&c, &mut store, &KillTarget::All, "alice").unwrap();
        assert_eq!(none.value, 0);
        let r =
            resume_and_announce(&c, &mut store, &KillTarget::Agent("bot".into()), "alice").unwrap();
        assert_eq!(r.value, 1);
        r.audited.unwrap();
        let audit = AuditStore::open_read_only(&db).unwrap();
        let kinds: Vec<String> = audit
            .query(&airlock_audit::Query::default())
            .unwrap()
            .into_iter()
            .map(|r| r.kind)
            .collect();
        assert_eq!(kinds, ["kill", "approval", "resume"]);
    }
}
