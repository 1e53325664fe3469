//! Approval requests for the API and the page: listing, one request with its session's recent
//! calls, and a human's decision through [`airlock_approval::decide`] (which checks who may
//! decide, records the vote, appends the audit record and wakes the waiting gateway).

use std::sync::Arc;

use airlock_approval::{
    Approval, ApprovalError, ApprovalStore, ErrorKind, ListFilter, Revealed, State, Verdict,
};
use airlock_audit::StoredRecord;
use axum::http::StatusCode;
use serde::Serialize;

use crate::error::{blocking, Refusal};
use crate::state::{lock, AppState};

/// The most requests one list returns.
pub(crate) const MAX_LIST: usize = 10_000;
/// Recent calls of the session shown beside a request.
const RECENT_CALLS: usize = 20;

/// Which requests to list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Which {
    Pending,
    Decided,
    All,
}

impl Which {
    pub(crate) fn from_name(name: &str) -> Result<Which, Refusal> {
        match name {
            "pending" => Ok(Which::Pending),
            "decided" => Ok(Which::Decided),
            "all" => Ok(Which::All),
            other => Err(Refusal::bad_request(format!(
                "unknown state \"{}\": expected pending, decided or all",
                other.escape_debug()
            ))),
        }
    }

    fn states(self) -> Vec<State> {
        match self {
            Which::Pending => vec![State::Pending],
            Which::Decided => State::ALL
                .into_iter()
                .filter(|s| *s != State::Pending)
                .collect(),
            Which::All => Vec::new(),
        }
    }
}

/// One request and what an approver should see beside it.
#[derive(Debug, Serialize)]
pub(crate) struct Detail {
    pub(crate) approval: Approval,
    /// "1 more approval", "an approval by someone other than alice", or none.
    pub(crate) missing: Option<String>,
    /// The session's most recent calls from the audit trail, oldest first.
    pub(crate) recent_calls: Vec<StoredRecord>,
    /// The arguments as they are, secrets included, when the stored ones hide a value and this
    /// human may approve the request: an approver reads what they approve. Only here (the
    /// request's own view), never in a list, a log, the audit trail or the webhook.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) revealed: Option<Revealed>,
    /// Why hidden values are not shown, when the arguments hide some and `revealed` is none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) hidden: Option<String>,
    /// Whether an approval can be given at all: not when values are hidden from everyone.
    pub(crate) approvable: bool,
}

/// Shown when redacted values were not kept: nobody can read them, so nobody may approve.
pub(crate) const CANNOT_SHOW: &str = "Some values are secrets that Airlock redacted and did not \
     keep, so they cannot be shown to anyone: this request cannot be approved. Deny it, or \
     review the call out of band.";
/// Shown to a human who may not approve the request.
const APPROVERS_ONLY: &str =
    "Some values are secrets: only a human who may approve this request sees them.";

fn store(state: &AppState) -> Result<ApprovalStore, Refusal> {
    ApprovalStore::open_with(
        &state.config.audit.path,
        airlock_control::durability(&state.config),
    )
    .map_err(|e| Refusal::internal("cannot open the approval store", &e))
}

/// Requests, newest first.
pub(crate) async fn list(
    state: &Arc<AppState>,
    which: Which,
    limit: usize,
) -> Result<Vec<Approval>, Refusal> {
    let state = state.clone();
    blocking(move || {
        let filter = ListFilter {
            states: which.states(),
            limit: limit.min(MAX_LIST),
            ..ListFilter::default()
        };
        store(&state)?
            .list(&filter)
            .map_err(|e| Refusal::internal("cannot list approval requests", &e))
    })
    .await
}

/// One request with its session's recent calls, as `human` may see it (`None`: no secret
/// values, for the live fragment); a malformed or unknown id is a 404.
pub(crate) async fn detail(
    state: &Arc<AppState>,
    id: String,
    human: Option<String>,
) -> Result<Detail, Refusal> {
    check_id(&id)?;
    let state = state.clone();
    blocking(move || {
        let store = store(&state)?;
        let Some(approval) = store
            .get(&id)
            .map_err(|e| Refusal::internal("cannot read the approval request", &e))?
        else {
            return Err(Refusal::not_found(format!("no approval request {id}")));
        };
        let (mut revealed, mut hidden, mut approvable) = (None, None, true);
        if approval.hides_values() {
            let kept = store
                .reveal(&id)
                .map_err(|e| Refusal::internal("cannot read the approval request", &e))?;
            let may = human.as_deref().is_some_and(|h| {
                airlock_approval::may_approve(&state.config, &approval, h).is_ok()
            });
            match kept {
                None => {
                    approvable = false;
                    hidden = Some(CANNOT_SHOW.to_owned());
                }
                Some(r) if may => revealed = Some(r),
                Some(_) => hidden = Some(APPROVERS_ONLY.to_owned()),
            }
        }
        let recent_calls = lock(&state.audit)
            .session_calls(&approval.session, RECENT_CALLS)
            .map_err(|e| Refusal::internal("cannot read the session's calls", &e))?;
        Ok(Detail {
            missing: approval.missing(),
            approval,
            recent_calls,
            revealed,
            hidden,
            approvable,
        })
    })
    .await
}

/// `human` decides request `id` from `channel`. When `digest` is given it must be the
/// request's: a page or script approving what it showed, not whatever the id now holds.
pub(crate) async fn decide(
    state: &Arc<AppState>,
    id: String,
    human: String,
    verdict: Verdict,
    channel: &'static str,
    comment: Option<String>,
    digest: Option<String>,
) -> Result<Approval, Refusal> {
    check_id(&id)?;
    let state = state.clone();
    blocking(move || {
        if let Some(d) = digest.filter(|d| !d.is_empty()) {
            let current = store(&state)?
                .get(&id)
                .map_err(|e| Refusal::internal("cannot read the approval request", &e))?
                .ok_or_else(|| Refusal::not_found(format!("no approval request {id}")))?;
            if current.digest != d {
                return Err(Refusal::conflict(format!(
                    "approval request {id} is not the action you saw (its digest differs): \
                     nothing changed"
                )));
            }
        }
        let result = airlock_approval::decide(
            &state.config,
            &state.policy,
            &id,
            &human,
            verdict,
            channel,
            comment.as_deref(),
        );
        match result {
            Ok(a) => {
                tracing::info!(id = %a.id, by = %human, verdict = verdict.as_str(), state = %a.state, channel, "decided");
                Ok(a)
            }
            Err(e) => Err(refusal(&e)),
        }
    })
    .await
}

/// An approval failure as an answer: its kind picks the status, its sentence is the message.
fn refusal(e: &ApprovalError) -> Refusal {
    let status = match e.kind() {
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::Forbidden => StatusCode::FORBIDDEN,
        ErrorKind::Invalid => StatusCode::BAD_REQUEST,
        ErrorKind::Internal => return Refusal::internal("the approval store failed", e),
    };
    Refusal::new(status, e.to_string())
}

/// Ids are `apr-` and 16 hex digits; anything else is unknown without asking the store.
fn check_id(id: &str) -> Result<(), Refusal> {
    let ok = id
        .strip_prefix("apr-")
        .is_some_and(|h| h.len() == 16 && h.bytes().all(|b| b.is_ascii_hexdigit()));
    if ok {
        Ok(())
    } else {
        Err(Refusal::not_found(format!(
            "no approval request {}",
            id.escape_debug()
        )))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn ids_are_checked_before_the_store_is_asked() {
        assert!(check_id("apr-0123456789abcdef").is_ok());
        for bad in [
            "",
            "apr-",
            "apr-0123",
            "apr-0123456789abcdeg",
            "x-0123456789abcdef",
            "apr-0123456789abcdef0",
        ] {
            assert_eq!(
                check_id(bad).unwrap_err().status,
                StatusCode::NOT_FOUND,
                "{bad}"
            );
        }
    }

    #[test]
    fn which_states() {
        assert_eq!(
            Which::from_name("pending").unwrap().states(),
            [State::Pending]
        );
        assert!(!Which::from_name("decided")
            .unwrap()
            .states()
            .contains(&State::Pending));
        assert!(Which::from_name("all").unwrap().states().is_empty());
        assert!(Which::from_name("everything").is_err());
    }
}

#[cfg(test)]
#[path = "approvals_tests.rs"]
mod secret_tests;
