//! What the page shows: the login form, the home page (Stop buttons, kills in force, the
//! pending list, recent decisions), one request's page, and the kill confirmation.
//! The parts that change live (`*_live`) are also served alone for the script to swap in.

use std::sync::Arc;

use airlock_approval::{Approval, State};
use airlock_control::{Kill, KillTarget};
use maud::{html, Markup};

use crate::approvals::{self, Detail};
use crate::control;
use crate::error::Refusal;
use crate::html::{json, page, relative, time};
use crate::state::AppState;
use crate::web::HOME_LISTS;

pub(crate) fn login(error: Option<&str>) -> Markup {
    let body = html! {
        section.card.login {
            h1 { "Log in" }
            p.hint { "Your name in the Airlock config and your token (" code { "airlock token new" } ")." }
            @if let Some(e) = error { p.message.error role="alert" { (e) } }
            form method="post" action="/login" {
                label for="name" { "Name" }
                input #name type="text" name="name" autocomplete="username" autocapitalize="none"
                    spellcheck="false" required;
                label for="token" { "Token" }
                input #token type="password" name="token" autocomplete="current-password" required;
                button.btn.primary type="submit" { "Log in" }
            }
        }
    };
    page("Log in", None, None, body)
}

/// The home page around its live part.
pub(crate) fn home(state: &AppState, human: &str, csrf: &str, live: Markup) -> Markup {
    let _ = state;
    page(
        "Approvals",
        Some((human, csrf)),
        Some("/live/home"),
        html! { div #live { (live) } },
    )
}

/// Stop buttons, kills in force, pending requests, recent decisions.
pub(crate) async fn home_live(state: &Arc<AppState>, csrf: &str) -> Result<Markup, Refusal> {
    let status = control::status(state).await?;
    let [(p_which, p_limit), (d_which, d_limit)] = HOME_LISTS;
    let pending = approvals::list(state, p_which, p_limit).await?;
    let decided = approvals::list(state, d_which, d_limit).await?;
    let now = airlock_audit::now_unix_ns();
    let all_stopped = status.kills.iter().any(|k| k.target == KillTarget::All);
    Ok(html! {
        section.card.pending {
            h2 { "Waiting for you " span.count #pending-count { (pending.len()) } }
            @if pending.is_empty() {
                p.empty { "No call is waiting for a decision." }
            }
            ul.requests {
                @for a in &pending { li { (request_link(a, now)) } }
            }
        }
        section.card.stops {
            h2 { "Stop" }
            @if !all_stopped {
                (stop_form(csrf, "all", "", "Stop everything", "Tap again to stop every agent", true))
            }
            ul.agents {
                @for id in state.config.agents.keys() {
                    @let stopped = status.kills.iter().any(|k| k.target == KillTarget::Agent(id.clone()));
                    li {
                        span.agent { (id) }
                        @if stopped { span.badge.denied { "stopped" } }
                        @else { (stop_form(csrf, "agent", id, &format!("Stop {id}"), &format!("Tap again to stop {id}"), false)) }
                    }
                }
            }
        }
        @if !status.kills.is_empty() {
            section.card.kills {
                h2 { "In force" }
                ul.kills {
                    @for k in &status.kills { li { (kill_row(k, csrf, now)) } }
                }
            }
        }
        @if !decided.is_empty() {
            section.card.decided {
                h2 { "Recently decided" }
                ul.requests {
                    @for a in &decided { li { (request_link(a, now)) } }
                }
            }
        }
    })
}

fn request_link(a: &Approval, now: i64) -> Markup {
    html! {
        a.request href={ "/approvals/" (a.id) } data-id=(a.id) {
            span.tool { (a.server) "/" (a.target) }
            span.badge.(a.state.as_str()) { (a.state.as_str()) }
            span.line { (a.agent) " for " (a.on_behalf_of) }
            @if let Some(r) = a.reasons.first() { span.line.why { (r.why) } }
            span.line.when {
                @if a.state == State::Pending { "expires " (relative(a.expires_ns, now)) }
                @else { (relative(a.decided_ns.unwrap_or(a.created_ns), now)) }
            }
        }
    }
}

fn stop_form(
    csrf: &str,
    scope: &str,
    target: &str,
    label: &str,
    confirm: &str,
    big: bool,
) -> Markup {
    html! {
        form.stop method="post" action="/kill" data-confirm=(confirm) {
            input type="hidden" name="csrf" value=(csrf);
            input type="hidden" name="scope" value=(scope);
            input type="hidden" name="target" value=(target);
            input type="hidden" name="confirm" value="";
            button.btn.danger.big[big] type="submit" { (label) }
        }
    }
}

fn kill_row(k: &Kill, csrf: &str, now: i64) -> Markup {
    let what = match k.breaker_class() {
        Some(class) => format!("{} paused by breaker {class}", k.target),
        None => format!("{} stopped", k.target),
    };
    html! {
        div.kill {
            span.line { strong { (what) } }
            span.line { "by " (k.by) ", " (relative(k.created_ns, now)) ": " (k.reason) }
            form method="post" action="/resume" {
                input type="hidden" name="csrf" value=(csrf);
                input type="hidden" name="scope" value=(k.target.scope());
                input type="hidden" name="target" value=(k.target.target());
                button.btn type="submit" { "Resume " (k.target) }
            }
        }
    }
}

/// The page for one request: what will happen, why it was held, the session's recent calls,
/// and the decision form while it is pending.
pub(crate) fn detail(state: &AppState, human: &str, csrf: &str, d: &Detail) -> Markup {
    let a = &d.approval;
    let task = state
        .config
        .tasks
        .get(&a.task)
        .and_then(|t| t.description.clone());
    let live_url = format!("/live/approvals/{}", a.id);
    let body = html! {
        p.back { a href="/" { "← All requests" } }
        div #live { (detail_live(d)) }
        section.card.what {
            h2 { "What will happen" }
            dl {
                dt { "Tool" } dd.tool { (a.server) "/" (a.target) " " span.meta { "(" (a.method) ")" } }
                dt { "Agent" } dd { (a.agent) }
                dt { "On behalf of" } dd { (a.on_behalf_of) }
                dt { "Task" } dd { (a.task) @if let Some(t) = &task { span.meta { " — " (t) } } }
                dt { "Session" } dd { code { (a.session) } }
            }
            h3 { "Arguments" }
            @if let Some(r) = &d.revealed {
                (json(&r.args))
                p.secrets {
                    strong { "Secret values, shown to you as an approver: " }
                    @for (i, ptr) in r.secrets.iter().enumerate() {
                        @if i > 0 { ", " }
                        code.secret { (ptr) }
                    }
                    ". They are never logged, audited or sent by the webhook."
                }
            } @else {
                (json(&a.args_redacted))
                @if let Some(h) = &d.hidden { p.message.error.hidden { (h) } }
            }
            p.meta { "Action digest " code.digest { (a.digest) } }
        }
        section.card.why {
            h2 { "Why it was held" }
            ul {
                @for r in &a.reasons { li { strong { (r.policy) } ": " (r.why) } }
            }
            p {
                "Needs " (a.quorum) " approval" @if a.quorum != 1 { "s" }
                @if !a.approvers.is_empty() { " from group " (a.approvers.join(", ")) }
                @if a.four_eyes { ", not by " (a.on_behalf_of) " alone (four eyes)" }
                "."
            }
        }
        @if a.state == State::Pending {
            section.card.decide #decide {
                h2 { "Your decision" }
                form method="post" action={ "/approvals/" (a.id) "/decide" } {
                    input type="hidden" name="csrf" value=(csrf);
                    input type="hidden" name="digest" value=(a.digest);
                    label for="comment" { "Comment (optional)" }
                    textarea #comment name="comment" rows="2" maxlength="2000" {}
                    div.buttons {
                        @if d.approvable {
                            button.btn.approve type="submit" name="verdict" value="approve" { "Approve" }
                        }
                        button.btn.danger type="submit" name="verdict" value="deny" { "Deny" }
                    }
                }
            }
        }
        section.card.recent {
            h2 { "Recent calls in this session" }
            @if d.recent_calls.is_empty() { p.empty { "None recorded." } }
            ol.calls {
                @for r in &d.recent_calls {
                    li {
                        span.tool { (r.server.as_deref().unwrap_or("")) "/" (r.target.as_deref().unwrap_or("")) }
                        span.badge.(r.decision.as_deref().unwrap_or("none")) { (r.decision.as_deref().unwrap_or("?")) }
                        @if let Some(s) = &r.result_status { span.meta { " → " (s) } }
                        span.line.when { (time(r.time_unix_ns)) }
                    }
                }
            }
        }
    };
    page(
        &format!("Request {}", a.id),
        Some((human, csrf)),
        Some(&live_url),
        body,
    )
}

/// The request's state, votes and what is still missing.
pub(crate) fn detail_live(d: &Detail) -> Markup {
    let a = &d.approval;
    let now = airlock_audit::now_unix_ns();
    html! {
        section.card.status data-state=(a.state.as_str()) {
            h1 { span.tool { (a.server) "/" (a.target) } " " span.badge.(a.state.as_str()) #state { (a.state.as_str()) } }
            p.meta { "Request " code { (a.id) } ", asked " (relative(a.created_ns, now)) }
            @if a.state == State::Pending {
                p { "Expires " (relative(a.expires_ns, now)) " (" (time(a.expires_ns)) ")." }
            }
            @if let Some(m) = &d.missing { p.missing { "Still needed: " (m) "." } }
            @if !a.votes.is_empty() {
                ul.votes {
                    @for v in &a.votes {
                        li {
                            strong { (v.human) } " " (v.verdict.as_str()) "d via " (v.channel)
                            @if let Some(c) = &v.comment { ": " q { (c) } }
                        }
                    }
                }
            }
        }
    }
}

/// Asked when a Stop form arrives without the script's second tap.
pub(crate) fn confirm_kill(csrf: &str, scope: &str, target: &str, t: &KillTarget) -> Markup {
    html! {
        section.card.confirm {
            h1 { "Stop " (t) "?" }
            p { "New calls are refused at once, calls in flight are cancelled, and pending approvals are denied. Resuming needs a human." }
            form method="post" action="/kill" {
                input type="hidden" name="csrf" value=(csrf);
                input type="hidden" name="scope" value=(scope);
                input type="hidden" name="target" value=(target);
                input type="hidden" name="confirm" value="yes";
                label for="reason" { "Reason (optional)" }
                input #reason type="text" name="reason" maxlength="500";
                button.btn.danger.big type="submit" { "Stop " (t) " now" }
            }
            p { a.btn href="/" { "Cancel" } }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use airlock_control::KillOrigin;
    use serde_json::json;

    use super::*;

    fn kill(id: i64, reason: &str, by: &str, origin: KillOrigin) -> Kill {
        Kill {
            id,
            target: KillTarget::Agent("bot".into()),
            reason: reason.into(),
            by: by.into(),
            origin,
            created_ns: 0,
            resumed_ns: None,
            resumed_by: None,
        }
    }

    /// Issue 14: a human's kill whose reason reads `breaker: …` was shown as a pause.
    #[test]
    fn a_kill_is_shown_as_a_kill_and_a_pause_as_a_pause_whatever_the_reason() {
        let human = kill(1, "breaker: acl-changes", "alice", KillOrigin::Human);
        let pause = kill(
            2,
            "breaker:acl-changes",
            "airlock",
            KillOrigin::Breaker {
                class: "acl-changes".into(),
            },
        );
        let row = kill_row(&human, "c", 0).into_string();
        assert!(row.contains("agent bot stopped"), "{row}");
        assert!(!row.contains("paused"), "{row}");
        let row = kill_row(&pause, "c", 0).into_string();
        assert!(
            row.contains("agent bot paused by breaker acl-changes"),
            "{row}"
        );

        let status = control::Status {
            kills: vec![human, pause],
            breakers: Vec::new(),
        };
        let v = serde_json::to_value(&status).unwrap();
        assert_eq!(
            v["kills"][0],
            json!({
                "id": 1, "target": {"scope": "agent", "target": "bot"},
                "reason": "breaker: acl-changes", "by": "alice", "origin": {"kind": "human"},
                "created_ns": 0, "resumed_ns": null, "resumed_by": null,
            })
        );
        assert_eq!(
            v["kills"][1]["origin"],
            json!({"kind": "breaker", "class": "acl-changes"})
        );
    }
}
