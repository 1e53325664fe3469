//! Kill, resume and status for the API and the page: the same sequence as `airlock kill` /
//! `airlock resume` ([`airlock_control::kill_and_announce`]), run as the authenticated human.

use std::sync::Arc;

use airlock_control::{BreakerSet, ControlError, Kill, KillTarget, Level};
use serde::Serialize;

use crate::error::{blocking, Refusal};
use crate::state::{lock, AppState};

/// Longest kill reason accepted (it is shown to agents and kept in the audit trail).
const MAX_REASON_CHARS: usize = 500;

/// Kills in force and breaker levels.
#[derive(Debug, Serialize)]
pub(crate) struct Status {
    pub(crate) kills: Vec<Kill>,
    pub(crate) breakers: Vec<Level>,
}

/// A committed kill and what followed it.
#[derive(Debug, Serialize)]
pub(crate) struct Killed {
    pub(crate) kill: Kill,
    pub(crate) notified: usize,
}

/// `scope` + `target` (as in `airlock status --json`) → a kill target.
pub(crate) fn target(scope: &str, target: Option<&str>) -> Result<KillTarget, Refusal> {
    let need = |what: &str| {
        target
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| {
                Refusal::bad_request(format!("scope \"{scope}\" needs a {what} in `target`"))
            })
    };
    match scope {
        "agent" => Ok(KillTarget::Agent(need("agent id")?)),
        "session" => Ok(KillTarget::Session(need("session id")?)),
        "human" => Ok(KillTarget::Human(need("human id")?)),
        "tool" => {
            KillTarget::tool(&need("SERVER/TOOL")?).map_err(|e| Refusal::bad_request(e.to_string()))
        }
        "all" if target.is_none_or(|t| t.is_empty() || t == "*") => Ok(KillTarget::All),
        "all" => Err(Refusal::bad_request("scope \"all\" takes no target")),
        other => Err(Refusal::bad_request(format!(
            "unknown scope \"{}\": expected agent, session, human, tool or all",
            other.escape_debug()
        ))),
    }
}

/// Checks a human-written reason: bounded, one line of printable text.
pub(crate) fn reason(reason: Option<&str>, human: &str) -> Result<String, Refusal> {
    match reason.map(str::trim).filter(|r| !r.is_empty()) {
        None => Ok(format!("killed by {human}")),
        Some(r) if r.chars().count() > MAX_REASON_CHARS => Err(Refusal::bad_request(format!(
            "the reason is longer than {MAX_REASON_CHARS} characters"
        ))),
        Some(r) if r.chars().any(char::is_control) => Err(Refusal::bad_request(
            "the reason must be one line without control characters",
        )),
        Some(r) => Ok(r.to_owned()),
    }
}

/// Kills `target` as `human`: store, audit record, fan-out.
pub(crate) async fn kill(
    state: &Arc<AppState>,
    target: KillTarget,
    reason: String,
    human: String,
) -> Result<Killed, Refusal> {
    let state = state.clone();
    blocking(move || {
        let config = &state.config;
        // A registered agent (`airlock agents add`) is as real as a declared one; the check
        // knows only the config's.
        let registered = matches!(&target, KillTarget::Agent(a)
            if airlock_identity::is_registered(&config.audit.path, a));
        if !registered {
            for warning in airlock_control::check_target(config, &target).map_err(unknown)? {
                tracing::warn!("{warning}");
            }
        }
        let mut store = lock(&state.control);
        let done =
            airlock_control::kill_and_announce(config, store.kill_store(), target, &reason, &human, |k| {
                airlock_approval::deny_for_kill(config, k).unwrap_or_else(|e| {
                    tracing::error!(error = %e, "the kill is in force, but pending approvals could not be denied");
                    Vec::new()
                })
            })
            .map_err(|e| Refusal::internal("cannot record the kill", &e))?;
        tracing::info!(kill = done.value.id, target = %done.value.target, by = %human, "killed");
        let notified = announced(done.audited, done.notified, "kill");
        Ok(Killed {
            kill: done.value,
            notified,
        })
    })
    .await
}

/// Ends every active kill of exactly `target` as `human`; none is a 409.
pub(crate) async fn resume(
    state: &Arc<AppState>,
    target: KillTarget,
    human: String,
) -> Result<usize, Refusal> {
    let state = state.clone();
    blocking(move || {
        // Kills outrank approvals: what the kill covered and was approved but not used stays
        // void. Should that fail, nothing is resumed.
        let killed = lock(&state.control)
            .active()
            .map_err(|e| Refusal::internal("cannot read the kill state", &e))?
            .iter()
            .any(|k| k.target == target);
        let voided = if killed {
            airlock_approval::void_before_resume(&state.config, &target, &human)
        } else {
            Ok(0)
        };
        match voided {
            Ok(_) => {}
            Err(e @ airlock_approval::ApprovalError::Audit(_)) => {
                tracing::error!(error = %e, "approvals voided before the resume; their audit records failed");
            }
            Err(e) => {
                return Err(Refusal::internal(
                    "cannot void the approvals the kill covered: nothing resumed",
                    &e,
                ))
            }
        }
        let mut store = lock(&state.control);
        let done = airlock_control::resume_and_announce(&state.config, &mut store, &target, &human)
            .map_err(|e| Refusal::internal("cannot record the resume", &e))?;
        if done.value == 0 {
            return Err(Refusal::conflict(format!(
                "no active kill of {target}: nothing resumed"
            )));
        }
        tracing::info!(target = %target, by = %human, resumed = done.value, "resumed");
        announced(done.audited, done.notified, "resume");
        Ok(done.value)
    })
    .await
}

/// Kills in force and breaker levels, as `airlock status` shows them.
pub(crate) async fn status(state: &Arc<AppState>) -> Result<Status, Refusal> {
    let state = state.clone();
    blocking(move || {
        let store = lock(&state.control);
        let kills = store
            .active()
            .map_err(|e| Refusal::internal("cannot read the kill state", &e))?;
        let breakers = BreakerSet::from_config(&state.config)
            .levels(&store, airlock_audit::now_unix_ns())
            .map_err(|e| Refusal::internal("cannot read the breaker counters", &e))?;
        Ok(Status { kills, breakers })
    })
    .await
}

/// Logs what failed after the commit (the change stands either way); returns gateways woken.
fn announced(
    audited: Result<(), airlock_audit::AuditError>,
    notified: Result<usize, ControlError>,
    what: &str,
) -> usize {
    if let Err(e) = audited {
        tracing::error!(error = %e, "the {what} is in force, but its audit record failed");
    }
    notified.unwrap_or_else(|e| {
        tracing::error!(error = %e, "the {what} is in force, but gateways could not be notified");
        0
    })
}

fn unknown(e: ControlError) -> Refusal {
    match e {
        ControlError::UnknownTarget(m) => Refusal::not_found(m),
        other => Refusal::bad_request(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn targets_from_scope_and_target() {
        assert_eq!(
            target("agent", Some("bot")).unwrap(),
            KillTarget::Agent("bot".into())
        );
        assert_eq!(target("all", None).unwrap(), KillTarget::All);
        assert_eq!(target("all", Some("*")).unwrap(), KillTarget::All);
        assert_eq!(
            target("tool", Some("corp/acl_set")).unwrap(),
            KillTarget::tool("corp/acl_set").unwrap()
        );
        for (scope, t) in [
            ("agent", None),
            ("agent", Some("")),
            ("tool", Some("corp")),
            ("all", Some("bot")),
            ("planet", Some("x")),
        ] {
            assert_eq!(target(scope, t).unwrap_err().status, 400, "{scope} {t:?}");
        }
    }

    #[test]
    fn reasons_are_bounded_single_lines() {
        assert_eq!(reason(None, "alice").unwrap(), "killed by alice");
        assert_eq!(reason(Some("  "), "alice").unwrap(), "killed by alice");
        assert_eq!(reason(Some(" runaway "), "alice").unwrap(), "runaway");
        assert!(reason(Some("a\nb"), "alice").is_err());
        assert!(reason(Some(&"x".repeat(501)), "alice").is_err());
    }
}
