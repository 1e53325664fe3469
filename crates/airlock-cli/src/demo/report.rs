//! The demo's result: per scenario the damage without and with Airlock, which control acted
//! and what the audit trail says about who did it, as a table for people or JSON for
//! machines (the schema is in docs/demo.md).

use std::collections::BTreeSet;

use airlock_audit::{Reason, StoredRecord};
use serde::Serialize;
use serde_json::Value;

use super::run::RunResult;
use super::scripts::{Metric, Scenario};

/// What the audit trail says about one scenario's run through Airlock.
#[derive(Serialize, Clone, Debug, Default)]
pub(crate) struct AuditSummary {
    /// The commands that show the records, one per agent.
    pub(crate) queries: Vec<String>,
    pub(crate) agents: Vec<String>,
    pub(crate) on_behalf_of: Vec<String>,
    /// Humans who decided: approvals, denials, kills.
    pub(crate) approvers: Vec<String>,
    /// The controls that acted: `policy <id>`, `breaker <class>`, `kill by <human>`,
    /// `approval approved by <human>`…
    pub(crate) controls: Vec<String>,
    pub(crate) records: usize,
}

/// One scenario's outcome.
#[derive(Serialize, Clone, Debug)]
pub(crate) struct ScenarioReport {
    pub(crate) name: &'static str,
    pub(crate) title: &'static str,
    pub(crate) metric: Metric,
    pub(crate) without: Figures,
    pub(crate) with: Figures,
    /// `protected`, `bounded` (within the configured budget), `not protected yet` (no control
    /// acted) or `unexpected` (the incident did not reproduce, or a control let damage through).
    pub(crate) verdict: String,
    pub(crate) audit: AuditSummary,
    pub(crate) runs: [RunResult; 2],
}

/// The five damage figures of the table, for one run.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub(crate) struct Figures {
    pub(crate) public_posts_without_sign_off: u64,
    pub(crate) restricted_repos_exposed: u64,
    pub(crate) exposed_repo_minutes: u64,
    pub(crate) mails_deleted_after_stop: Option<u64>,
    pub(crate) over_quota_cpu_seconds: u64,
    pub(crate) confidential_bytes_published: u64,
}

impl Figures {
    pub(crate) fn of(run: &RunResult) -> Figures {
        let d = &run.damage;
        Figures {
            public_posts_without_sign_off: run.public_posts_without_sign_off(),
            restricted_repos_exposed: d.repos_exposed,
            exposed_repo_minutes: d.exposed_repo_minutes,
            mails_deleted_after_stop: d.mails_deleted_after_stop,
            over_quota_cpu_seconds: d.over_quota_cpu_seconds,
            confidential_bytes_published: d.confidential_bytes_published,
        }
    }

    pub(crate) fn metric(&self, m: Metric) -> u64 {
        match m {
            Metric::PublicPostsWithoutSignOff => self.public_posts_without_sign_off,
            Metric::ExposedRepoMinutes => self.exposed_repo_minutes,
            Metric::MailsDeletedAfterStop => self.mails_deleted_after_stop.unwrap_or(0),
            Metric::OverQuotaCpuSeconds => self.over_quota_cpu_seconds,
            Metric::ConfidentialBytesPublished => self.confidential_bytes_published,
        }
    }
}

/// The verdict for a scenario; `budget` is how many repos the ACL breaker lets through.
pub(crate) fn verdict(
    metric: Metric,
    without: &Figures,
    with: &Figures,
    audit: &AuditSummary,
    budget: u64,
) -> &'static str {
    let (w, a) = (without.metric(metric), with.metric(metric));
    if w == 0 {
        return "unexpected";
    }
    if audit.controls.is_empty() {
        return "not protected yet";
    }
    if a == 0 {
        return "protected";
    }
    if metric == Metric::ExposedRepoMinutes && with.restricted_repos_exposed <= budget {
        return "bounded";
    }
    "unexpected"
}

/// Summarises the records of one scenario: those of its sessions, and the kills, breaker trips
/// and approvals about its agents made while it ran.
pub(crate) fn summarise(
    records: &[StoredRecord],
    scenario: &Scenario,
    sessions: &[String],
    since_ns: i64,
    config: &str,
) -> AuditSummary {
    let mine: Vec<&StoredRecord> = records
        .iter()
        .filter(|r| {
            let in_session = r.session.as_ref().is_some_and(|s| sessions.contains(s));
            let about_agent = r.time_unix_ns >= since_ns
                && r.agent
                    .as_deref()
                    .is_some_and(|a| scenario.agents.contains(&a))
                && matches!(r.kind.as_str(), "kill" | "breaker" | "approval");
            in_session || about_agent
        })
        .collect();
    let mut agents = BTreeSet::new();
    let mut humans = BTreeSet::new();
    let mut approvers = BTreeSet::new();
    let mut controls: Vec<String> = Vec::new();
    let mut add = |c: String| {
        if !controls.contains(&c) {
            controls.push(c);
        }
    };
    for r in &mine {
        if let Some(a) = &r.agent {
            agents.insert(a.clone());
        }
        if let Some(h) = &r.on_behalf_of {
            humans.insert(h.clone());
        }
        let detail = r.detail.clone().unwrap_or(Value::Null);
        let text = |k: &str| detail.get(k).and_then(Value::as_str).map(str::to_owned);
        match r.kind.as_str() {
            "call" if r.decision.as_deref() == Some("deny") => {
                for reason in &r.reasons {
                    // A kill or a pause is a control of its own (its `kill` or `breaker` record).
                    if !matches!(Reason::parse(reason), Reason::Kill(_) | Reason::Breaker(_)) {
                        add(format!("policy {reason}"));
                    }
                }
            }
            "flow" => add(format!(
                "information-flow label {}",
                text("label").unwrap_or_else(|| "?".into())
            )),
            "breaker" => add(format!(
                "breaker {}",
                text("class").unwrap_or_else(|| "?".into())
            )),
            "kill" => {
                let by = text("by").unwrap_or_else(|| "?".into());
                if by != "airlock" {
                    approvers.insert(by.clone());
                    add(format!("kill by {by}"));
                }
            }
            "approval" => {
                let event = text("event").unwrap_or_default();
                let by = text("human").or_else(|| text("by"));
                if let Some(by) = &by {
                    approvers.insert(by.clone());
                }
                match event.as_str() {
                    "requested" => add("approval hold".to_owned()),
                    "approved" | "denied" | "expired" => add(format!(
                        "approval {event}{}",
                        by.map(|b| format!(" by {b}")).unwrap_or_default()
                    )),
                    _ => {}
                }
            }
            _ => {}
        }
    }
    let queries = scenario
        .agents
        .iter()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .map(|a| format!("airlock audit query --config {config} --agent {a}"))
        .collect();
    AuditSummary {
        queries,
        agents: agents.into_iter().collect(),
        on_behalf_of: humans.into_iter().collect(),
        approvers: approvers.into_iter().collect(),
        controls,
        records: mine.len(),
    }
}

fn cell(without: u64, with: u64) -> String {
    format!("{without} → {with}")
}

/// The table for people.
pub(crate) fn print_table(reports: &[ScenarioReport]) {
    println!(
        "{:<14} {:>14} {:>22} {:>14} {:>20} {:>14}  verdict",
        "scenario",
        "public posts",
        "repos exposed × min",
        "mails deleted",
        "CPU-s over quota",
        "secret bytes",
    );
    println!(
        "{:<14} {:>14} {:>22} {:>14} {:>20} {:>14}",
        "", "w/o sign-off", "(restricted)", "after stop", "(unauthorized)", "made public"
    );
    for r in reports {
        let (w, a) = (&r.without, &r.with);
        let mails = match (w.mails_deleted_after_stop, a.mails_deleted_after_stop) {
            (None, None) => "-".to_owned(),
            (x, y) => cell(x.unwrap_or(0), y.unwrap_or(0)),
        };
        let exposed = zero_or(cell(w.exposed_repo_minutes, a.exposed_repo_minutes));
        println!(
            "{:<14} {:>14} {:>22} {:>14} {:>20} {:>14}  {}",
            r.name,
            zero_or(cell(
                w.public_posts_without_sign_off,
                a.public_posts_without_sign_off
            )),
            exposed,
            mails,
            zero_or(cell(w.over_quota_cpu_seconds, a.over_quota_cpu_seconds)),
            zero_or(cell(
                w.confidential_bytes_published,
                a.confidential_bytes_published
            )),
            r.verdict
        );
    }
    println!("(each cell: without Airlock → with Airlock)");
    println!();
    for r in reports {
        let a = &r.audit;
        let controls = if a.controls.is_empty() {
            "none: not protected yet".to_owned()
        } else {
            a.controls.join("; ")
        };
        println!("{} — {}", r.name, r.title);
        println!("  control:  {controls}");
        let [without, with] = &r.runs;
        if without.damage.public_posts > 0 {
            println!(
                "  posted:   {} public posts, {} of them signed off by a human",
                cell(without.damage.public_posts, with.damage.public_posts),
                with.signed_off_posts
            );
        }
        if r.without.restricted_repos_exposed > 0 {
            println!(
                "  exposed:  {} restricted repos readable by everyone",
                cell(
                    r.without.restricted_repos_exposed,
                    r.with.restricted_repos_exposed
                )
            );
        }
        println!(
            "  audit:    agent {} · on behalf of {} · human decision {}",
            list_or_dash(&a.agents),
            list_or_dash(&a.on_behalf_of),
            list_or_dash(&a.approvers)
        );
        for q in &a.queries {
            println!("            {q}");
        }
    }
}

fn zero_or(cell: String) -> String {
    if cell == "0 → 0" {
        "0".to_owned()
    } else {
        cell
    }
}

fn list_or_dash(v: &[String]) -> String {
    if v.is_empty() {
        "-".to_owned()
    } else {
        v.join(", ")
    }
}

#[cfg(test)]
#[path = "report_tests.rs"]
mod tests;
