//! `airlock approvals list|show|approve|deny`: the approval queue from the command line,
//! against the store directly, acting as a named human.
//!
//! Exit codes: 0 done; 1 refused (not pending, expired, not allowed, already voted, unknown
//! id); 2 bad usage, config or credential.

use std::path::PathBuf;

use airlock_approval::{Approval, ApprovalStore, ErrorKind, ListFilter, State, Verdict};
use anyhow::{anyhow, Context};
use clap::{Args, Subcommand};

use crate::control_cmd::{authenticate, durability, fmt_time, HumanArgs, TOKEN_ENV};
use crate::load::{load, Loaded};
use crate::Failure;

#[derive(Subcommand, Debug)]
pub(crate) enum ApprovalsCommand {
    /// Pending requests (or every request with --all), newest first.
    List(ListArgs),
    /// One request: the call, its arguments, the policy's reason, the votes.
    Show(ShowArgs),
    /// Approve a pending request (as a named human).
    Approve(DecideArgs),
    /// Deny a pending request (as a named human).
    Deny(DecideArgs),
}

#[derive(Args, Debug)]
pub(crate) struct ListArgs {
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Every request, decided ones too.
    #[arg(long)]
    all: bool,
    /// Only this agent's requests.
    #[arg(long, value_name = "ID")]
    agent: Option<String>,
    /// At most this many.
    #[arg(long, value_name = "N", default_value_t = 100)]
    limit: usize,
    /// JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub(crate) struct ShowArgs {
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// The request id (`apr-…`).
    id: String,
    #[arg(long)]
    json: bool,
    /// Show secret values too, to this human if they may approve the request (token in
    /// $AIRLOCK_TOKEN or --token-file).
    #[arg(long = "as", value_name = "NAME")]
    as_human: Option<String>,
    /// Read the token from this file instead of $AIRLOCK_TOKEN (with --as).
    #[arg(long, value_name = "FILE", requires = "as_human")]
    token_file: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub(crate) struct DecideArgs {
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// The request id (`apr-…`).
    id: String,
    /// Kept with the vote in the audit trail and shown to the agent on a denial.
    #[arg(long, value_name = "TEXT")]
    comment: Option<String>,
    #[command(flatten)]
    human: HumanArgs,
}

pub(crate) fn approvals(command: ApprovalsCommand) -> Result<u8, Failure> {
    match command {
        ApprovalsCommand::List(args) => list(args),
        ApprovalsCommand::Show(args) => show(args),
        ApprovalsCommand::Approve(args) => decide(args, Verdict::Approve),
        ApprovalsCommand::Deny(args) => decide(args, Verdict::Deny),
    }
}

fn open(config: &airlock_config::Config) -> Result<ApprovalStore, Failure> {
    ApprovalStore::open_with(&config.audit.path, durability(config))
        .with_context(|| format!("cannot open {}", config.audit.path.display()))
        .map_err(Failure::failed)
}

fn list(args: ListArgs) -> Result<u8, Failure> {
    let config = airlock_config::load(&args.config).map_err(Failure::usage)?;
    let store = open(&config)?;
    let filter = ListFilter {
        states: if args.all {
            vec![]
        } else {
            vec![State::Pending]
        },
        agent: args.agent,
        session: None,
        limit: args.limit,
    };
    let all = store.list(&filter).context("cannot list approvals")?;
    if args.json {
        print_json(&all)?;
        return Ok(0);
    }
    if all.is_empty() {
        println!(
            "no {}approval requests",
            if args.all { "" } else { "pending " }
        );
        return Ok(0);
    }
    println!(
        "{:<20}  {:<9}  {:<14}  {:<12}  {:<28}  {:<19}  waiting for",
        "id", "state", "agent", "for", "call", "expires (UTC)"
    );
    for a in &all {
        println!(
            "{:<20}  {:<9}  {:<14}  {:<12}  {:<28}  {:<19}  {}",
            a.id,
            a.state.as_str(),
            a.agent,
            a.on_behalf_of,
            format!("{}/{}", a.server, a.target),
            fmt_time(a.expires_ns),
            a.missing().unwrap_or_default()
        );
    }
    Ok(0)
}

fn show(args: ShowArgs) -> Result<u8, Failure> {
    let config = airlock_config::load(&args.config).map_err(Failure::usage)?;
    let human = match args.as_human {
        Some(as_human) => Some(authenticate(
            &config,
            &HumanArgs {
                as_human,
                token_file: args.token_file,
            },
            std::env::var(TOKEN_ENV).ok(),
        )?),
        None => None,
    };
    let store = open(&config)?;
    let Some(a) = store.get(&args.id).context("cannot read the approval")? else {
        return Err(Failure::failed(anyhow!("no approval request {}", args.id)));
    };
    let shown = if a.hides_values() {
        let kept = store
            .reveal(&a.id)
            .context("cannot read the approval's arguments")?;
        match (kept, human.as_deref()) {
            (None, _) => Shown::CannotShow,
            (Some(r), Some(h)) if airlock_approval::may_approve(&config, &a, h).is_ok() => {
                Shown::Revealed(r)
            }
            (Some(_), Some(_)) => Shown::NotAnApprover,
            (Some(_), None) => Shown::AskAs,
        }
    } else {
        Shown::Plain
    };
    if args.json {
        let mut v = serde_json::to_value(&a).context("cannot encode JSON")?;
        if let (Some(o), Shown::Revealed(r)) = (v.as_object_mut(), &shown) {
            o.insert(
                "revealed".into(),
                serde_json::to_value(r).context("cannot encode JSON")?,
            );
        }
        if let (Some(o), Some(note)) = (v.as_object_mut(), shown.note()) {
            o.insert("hidden".into(), note.into());
        }
        print_json(&v)?;
        return Ok(0);
    }
    print!("{}", describe(&a, &shown));
    Ok(0)
}

/// What `show` may print of a request's arguments.
enum Shown {
    /// Nothing hidden.
    Plain,
    /// Hidden values, shown to this approver.
    Revealed(airlock_approval::Revealed),
    /// Hidden values that were not kept: nobody can read them, nobody may approve.
    CannotShow,
    /// Hidden values this human may not see.
    NotAnApprover,
    /// Hidden values, shown with `--as NAME` to a human who may approve.
    AskAs,
}

impl Shown {
    fn note(&self) -> Option<&'static str> {
        match self {
            Shown::Plain | Shown::Revealed(_) => None,
            Shown::CannotShow => Some(
                "some values are secrets Airlock redacted and did not keep: they cannot be \
                 shown, so this request cannot be approved; deny it, or review the call out \
                 of band",
            ),
            Shown::NotAnApprover => {
                Some("some values are secrets: only a human who may approve this request sees them")
            }
            Shown::AskAs => Some(
                "some values are secrets: run again with --as NAME (token in $AIRLOCK_TOKEN) \
                 to see them as an approver",
            ),
        }
    }
}

/// The whole request, for a human deciding it.
fn describe(a: &Approval, shown: &Shown) -> String {
    let mut out = String::new();
    let mut line = |k: &str, v: &str| out.push_str(&format!("{k:<13} {v}\n"));
    line("request", &a.id);
    line("state", a.state.as_str());
    line("agent", &a.agent);
    line("on behalf of", &a.on_behalf_of);
    line("task", &a.task);
    line("session", &a.session);
    line("call", &format!("{} {}/{}", a.method, a.server, a.target));
    for r in &a.reasons {
        line("held by", &format!("{} ({})", r.policy, r.why));
    }
    let mut needs = format!(
        "{} approval{}",
        a.quorum,
        if a.quorum == 1 { "" } else { "s" }
    );
    if !a.approvers.is_empty() {
        needs.push_str(&format!(" from group {}", a.approvers.join(" + ")));
    }
    if a.four_eyes {
        needs.push_str(&format!(", not {} alone (four eyes)", a.on_behalf_of));
    }
    line("needs", &needs);
    line("created", &fmt_time(a.created_ns));
    line("expires", &fmt_time(a.expires_ns));
    for v in &a.votes {
        let comment = v
            .comment
            .as_deref()
            .map(|c| format!(": {c}"))
            .unwrap_or_default();
        line(
            "vote",
            &format!(
                "{} {} via {} at {}{comment}",
                v.human,
                v.verdict.as_str(),
                v.channel,
                fmt_time(v.time_ns)
            ),
        );
    }
    let (value, header) = match shown {
        Shown::Revealed(r) => (
            &r.args,
            format!(
                "arguments (secret values at {} shown to you as an approver: never logged or \
                 audited):\n",
                r.secrets.join(", ")
            ),
        ),
        Shown::Plain => (&a.args_redacted, "arguments:\n".to_owned()),
        other => (
            &a.args_redacted,
            format!(
                "arguments (secret values redacted: {}):\n",
                other.note().unwrap_or_default()
            ),
        ),
    };
    let args = serde_json::to_string_pretty(value).unwrap_or_default();
    out.push_str(&header);
    for l in args.lines() {
        out.push_str("  ");
        out.push_str(l);
        out.push('\n');
    }
    out
}

fn decide(args: DecideArgs, verdict: Verdict) -> Result<u8, Failure> {
    let Loaded { config, policy } = load(&args.config)?;
    let human = authenticate(&config, &args.human, std::env::var(TOKEN_ENV).ok())?;
    match airlock_approval::decide(
        &config,
        &policy,
        &args.id,
        &human,
        verdict,
        "cli",
        args.comment.as_deref(),
    ) {
        Ok(a) => {
            let done = match a.state {
                State::Approved => "approved: the held call goes through once".to_owned(),
                State::Denied => "denied: the agent gets an error".to_owned(),
                _ => format!(
                    "vote recorded; still pending, waiting for {}",
                    a.missing().unwrap_or_else(|| "more votes".into())
                ),
            };
            println!("{} {}/{} by {human}: {done}", a.id, a.server, a.target);
            Ok(0)
        }
        Err(e) => match e.kind() {
            ErrorKind::Invalid => Err(Failure::usage(e)),
            _ => Err(Failure::failed(e)),
        },
    }
}

fn print_json<T: serde::Serialize>(v: &T) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(v).context("cannot encode JSON")?;
    println!("{text}");
    Ok(())
}
