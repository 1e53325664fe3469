//! `airlock-approval`: human approval that the agent cannot skip.
//!
//! A call that policy holds ([`airlock_policy::Decision::NeedsApproval`]) becomes an
//! [`Approval`] request in the store (tables of their own in the audit database file, so it
//! survives a restart of any process). The request is bound to one action: [`action_digest`] is
//! the SHA-256 of the canonical JSON of agent, on-behalf-of human, server, method, target and
//! arguments, so changing any argument is a new request. Humans decide with [`decide`], which
//! checks that this human may decide this request (a configured human with a credential, the policy's
//! `@approvers` group, four eyes, never the requesting agent), records the vote, moves the
//! state when the quorum is reached, appends an `approval` audit record and wakes every
//! gateway. A gateway then consumes the approval once ([`ApprovalStore::consume`] /
//! [`ApprovalStore::take_approved`]): an approval is single use.
//!
//! Requirements come from the annotations of the policies that held the call
//! ([`Requirements::from_policies`]): `@approvers("group")`, `@quorum("N")`,
//! `@four_eyes("false")` (default: on), `@expires("15m")` (default 15 minutes).

mod decide;
mod error;
mod model;
mod records;
mod requirements;
mod store;

pub use decide::{decide, deny_for_kill, may_approve, void_before_resume};
pub use error::{ApprovalError, ErrorKind};
pub use model::{
    action_digest, secret_paths, Approval, HoldReason, ListFilter, NewApproval, Revealed, State,
    Verdict, Vote,
};
pub use records::{approval_record, kill_denial_records};
pub use requirements::{
    check_policies, PolicyCheck, Requirements, DEFAULT_EXPIRY, MAX_EXPIRY, MAX_QUORUM,
};
pub use store::ApprovalStore;
