//! What a held call needs before it may go through, read from the annotations of the policies
//! that held it.

use std::time::Duration;

use airlock_policy::{PolicyEngine, PolicyRef};
use serde::{Deserialize, Serialize};

use crate::error::ApprovalError;

/// How long a request waits for humans when no policy says (`@expires`).
pub const DEFAULT_EXPIRY: Duration = Duration::from_secs(15 * 60);
/// The longest `@expires` accepted: a week.
pub const MAX_EXPIRY: Duration = Duration::from_secs(7 * 24 * 60 * 60);
/// The largest `@quorum` accepted.
pub const MAX_QUORUM: u32 = 16;

/// The combined requirement of every policy that held a call: the strictest of each.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Requirements {
    /// Every approving human must belong to all of these groups.
    pub approvers: Vec<String>,
    pub quorum: u32,
    pub four_eyes: bool,
    pub expiry: Duration,
}

impl Default for Requirements {
    fn default() -> Self {
        Self {
            approvers: Vec::new(),
            quorum: 1,
            four_eyes: true,
            expiry: DEFAULT_EXPIRY,
        }
    }
}

impl Requirements {
    /// Reads `@approvers`, `@quorum`, `@four_eyes` and `@expires` from each holding policy and
    /// keeps the strictest: all groups, the largest quorum, four eyes if any asks, the
    /// shortest expiry. A malformed value is an error: the call is then refused, not held.
    pub fn from_policies(
        policy: &PolicyEngine,
        holding: &[PolicyRef],
    ) -> Result<Requirements, ApprovalError> {
        let mut r = Requirements {
            expiry: MAX_EXPIRY,
            ..Requirements::default()
        };
        let mut any_expiry = false;
        let mut four_eyes = holding.is_empty();
        for p in holding {
            let get = |key| policy.annotation(&p.id, key);
            if let Some(groups) = get("approvers") {
                for g in groups.split(',').map(str::trim) {
                    if g.is_empty() {
                        return Err(invalid(&p.id, "@approvers", groups));
                    }
                    if !r.approvers.iter().any(|x| x == g) {
                        r.approvers.push(g.to_owned());
                    }
                }
            }
            if let Some(q) = get("quorum") {
                let n: u32 = q
                    .trim()
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_QUORUM).contains(n))
                    .ok_or_else(|| invalid(&p.id, "@quorum", q))?;
                r.quorum = r.quorum.max(n);
            }
            // Four eyes stays on unless every holding policy turns it off.
            match get("four_eyes").map(str::trim) {
                None | Some("true") => four_eyes = true,
                Some("false") => {}
                Some(other) => return Err(invalid(&p.id, "@four_eyes", other)),
            }
            if let Some(e) = get("expires") {
                let d = humantime::parse_duration(e.trim())
                    .ok()
                    .filter(|d| !d.is_zero() && *d <= MAX_EXPIRY)
                    .ok_or_else(|| invalid(&p.id, "@expires", e))?;
                r.expiry = r.expiry.min(d);
                any_expiry = true;
            }
        }
        r.four_eyes = four_eyes;
        if !any_expiry {
            r.expiry = DEFAULT_EXPIRY;
        }
        Ok(r)
    }
}

fn invalid(policy: &str, key: &str, value: &str) -> ApprovalError {
    let expected = match key {
        "@quorum" => format!("a whole number from 1 to {MAX_QUORUM}"),
        "@four_eyes" => "\"true\" or \"false\"".to_owned(),
        "@expires" => "a duration such as \"15m\" or \"2h\", at most 7 days".to_owned(),
        _ => "a comma-separated list of group ids".to_owned(),
    };
    ApprovalError::Invalid(format!(
        "policy {policy}: {key}({value:?}) must be {expected}"
    ))
}

/// What `airlock check` (and every command that loads the config) says about approval policies:
/// malformed annotations are errors (`file:line:col: …`), approvals nobody can give are warnings.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PolicyCheck {
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
}

/// Checks every `@approval` policy's annotations against the config's humans.
pub fn check_policies(policy: &PolicyEngine, config: &airlock_config::Config) -> PolicyCheck {
    let mut out = PolicyCheck::default();
    let deciders: Vec<(&String, &airlock_config::Human)> = config
        .humans
        .iter()
        .filter(|(name, h)| h.token_sha256.is_some() && !config.agents.contains_key(*name))
        .collect();
    for info in policy
        .policies()
        .into_iter()
        .filter(|p| p.approval.is_some())
    {
        let holding = [PolicyRef {
            id: info.id.clone(),
            reason: info.reason.clone(),
            approval: info.approval.clone(),
            location: info.location.clone(),
        }];
        let r = match Requirements::from_policies(policy, &holding) {
            Ok(r) => r,
            Err(e) => {
                out.errors.push(format!("{}: {e}", info.location));
                continue;
            }
        };
        let able: Vec<&&String> = deciders
            .iter()
            .filter(|(_, h)| r.approvers.iter().all(|g| h.groups.contains(g)))
            .map(|(name, _)| name)
            .collect();
        if able.len() < r.quorum as usize {
            let group = if r.approvers.is_empty() {
                String::new()
            } else {
                format!(" in group {}", r.approvers.join(" + "))
            };
            out.warnings.push(format!(
                "{}: policy {} needs {} approval{} but only {} human{} with a credential{group} \
                 can give one: its held calls can only expire",
                info.location,
                info.id,
                r.quorum,
                if r.quorum == 1 { "" } else { "s" },
                able.len(),
                if able.len() == 1 { "" } else { "s" },
            ));
        }
    }
    out
}
