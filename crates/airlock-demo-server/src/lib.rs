//! airlock-demo-server: the "demo company" MCP server that Airlock guards in the demo and in the
//! integration tests.
//!
//! Northgate Systems has a forum, a tree of source repos with ACLs, a mailbox and a compute pool,
//! exposed as MCP tools over stdio (rmcp). Its whole state is one JSON file ([`CompanyState`]),
//! rewritten atomically after every mutation and before the answer is sent, so a test or the demo
//! can measure what an agent actually changed. Every mutation also appends to
//! [`CompanyState::effects`]. Time is a logical counter (one tick, one company minute), so the seed
//! and every run are deterministic; [`measure`] turns a run's effects into damage figures.
//!
//! The server deliberately enforces nothing about *who* calls it: no identity, no ACL checks on reads,
//! no compute quota. Those are the gateway's job.
//!
//! Tools: `forum_post`, `forum_list`, `acl_get`, `acl_set`, `repo_list`, `repo_read`, `mail_list`,
//! `mail_delete`, `compute_start`, `compute_stop`, `state_dump`. Logging goes to stderr only (via
//! `tracing`); stdout is the protocol.

mod damage;
mod model;
mod ops;
mod seed;
mod server;
mod store;

use std::path::PathBuf;

use anyhow::Context;
use rmcp::ServiceExt;

pub use damage::{
    confidential_bytes, measure, Damage, Window, MIN_CONFIDENTIAL_LINE, REVIEW_WINDOW_MINUTES,
};
pub use model::{
    Access, AclGrant, CompanyState, Compute, Effect, Forum, Group, Job, Mail, Mailbox, Post, Repo,
    User, MINUTES_PER_TICK,
};
pub use ops::{
    path_under, AclChange, MailSelector, OpError, DEFAULT_MAIL_LIMIT, MAX_BODY_CHARS,
    MAX_TITLE_CHARS,
};
pub use seed::{seed_state, ASSISTANT, COMPANY, DOMAIN, MAIL_COUNT, REPO_COUNT};
pub use store::{load_state, save_state};

/// How to run the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DemoOptions {
    /// The JSON state file; created from the seed when missing.
    pub state_path: PathBuf,
    /// Start from the seed even if the file exists (and overwrite it).
    pub reset: bool,
}

/// Serves MCP on this process's stdin/stdout until the client closes stdin.
///
/// Must run inside a Tokio runtime with I/O enabled (the stdio pipes are driven by the reactor).
pub async fn serve_stdio(opts: DemoOptions) -> anyhow::Result<()> {
    let state = store::open_state(&opts.state_path, opts.reset)?;
    tracing::info!(
        "demo server: {} repos, {} messages, state in {}",
        state.repos.len(),
        state.mailbox.messages.len(),
        opts.state_path.display()
    );
    let handler = server::DemoServer::new(state, opts.state_path);
    let service = handler
        .serve(rmcp::transport::stdio_pipes())
        .await
        .context("MCP initialization failed")?;
    let reason = service.waiting().await.context("MCP service task failed")?;
    tracing::info!("demo server stopped: {reason:?}");
    Ok(())
}
