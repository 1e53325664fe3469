//! The company state: plain serde data with public fields, so tests and the demo can measure damage
//! by reading the state file. Collections are ordered (`Vec` kept sorted, `BTreeMap`) so the same
//! operations always give byte-identical JSON.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Company minutes per tick of [`CompanyState::seq`]: every change the server makes takes one
/// minute of company time, a human-scale pace for an agent that thinks between steps.
pub const MINUTES_PER_TICK: u64 = 1;

/// Everything the demo company's server knows. Serialized as JSON to the state file.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct CompanyState {
    /// Version of this file's layout; bumped when a field changes meaning.
    pub format: u32,
    /// The company's name.
    pub company: String,
    /// Logical clock: incremented by every mutation and by every seeded timed item. No wall clock, so
    /// the state is deterministic. It is also the company's clock: one tick is one minute
    /// ([`MINUTES_PER_TICK`]), which is how long exposures and jobs last is measured.
    pub seq: u64,
    pub users: Vec<User>,
    pub groups: Vec<Group>,
    pub forum: Forum,
    /// Sorted by path; the tree is implied by `/`-separated path prefixes.
    pub repos: Vec<Repo>,
    pub mailbox: Mailbox,
    pub compute: Compute,
    /// Append-only log of every mutation made through a tool.
    pub effects: Vec<Effect>,
}

/// A person (or the AI assistant) with an account.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct User {
    /// Login name; the principal is `user:<name>`.
    pub name: String,
    pub display_name: String,
    pub email: String,
    pub title: String,
}

/// A named set of users; the principal is `group:<name>`. `all` contains every user.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Group {
    pub name: String,
    pub description: String,
    pub members: Vec<String>,
}

/// The company forum: channel name → posts, oldest first.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Forum {
    pub channels: BTreeMap<String, Vec<Post>>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Post {
    pub id: String,
    pub channel: String,
    pub author: String,
    pub title: String,
    pub body: String,
    /// The logical time (`seq`) at which the post was made.
    pub time_seq: u64,
}

/// A source repository. `path` is `/`-separated; a repo may sit under another (`eng/platform` and
/// `eng/platform/api`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Repo {
    pub path: String,
    /// Holds confidential material (payroll, keys, reviews…); only a few people should read it.
    pub restricted: bool,
    /// File path → file content.
    pub content: BTreeMap<String, String>,
    /// Principal (`group:eng`, `user:bob`) → access. A principal without an entry has no access.
    pub acl: BTreeMap<String, Access>,
}

/// Access level on a repo, ordered from weakest to strongest.
#[derive(
    Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    None,
    Read,
    Write,
    Admin,
}

impl Access {
    /// The wire name (`"none"`, `"read"`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Access::None => "none",
            Access::Read => "read",
            Access::Write => "write",
            Access::Admin => "admin",
        }
    }
}

/// One person's mailbox (the assistant reads it on the owner's behalf).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Mailbox {
    /// User name of the mailbox owner.
    pub owner: String,
    /// Every folder that exists, even when empty.
    pub folders: Vec<String>,
    /// Oldest first.
    pub messages: Vec<Mail>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Mail {
    pub id: String,
    pub from: String,
    pub to: String,
    pub subject: String,
    pub folder: String,
    pub body: String,
}

/// The shared compute pool. `quota_cpus` is an organisational rule the server does not enforce; only
/// `pool_cpus` (the hardware) is a hard limit.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Compute {
    pub pool_cpus: u32,
    pub quota_cpus: u32,
    /// Every job ever started, running or not, oldest first.
    pub jobs: Vec<Job>,
}

impl Compute {
    /// CPUs held by running jobs.
    pub fn running_cpus(&self) -> u64 {
        self.jobs
            .iter()
            .filter(|j| j.running)
            .map(|j| u64::from(j.cpus))
            .sum()
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Job {
    pub id: String,
    pub name: String,
    pub cpus: u32,
    pub image: String,
    pub started_seq: u64,
    pub running: bool,
    /// When the job was stopped, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_seq: Option<u64>,
}

/// One mutation, as recorded in `CompanyState::effects`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Effect {
    pub seq: u64,
    /// The tool that made the change.
    pub tool: String,
    /// One human-readable line.
    pub summary: String,
    /// The items changed (post id, repo paths, mail ids, job id), so damage can be counted.
    pub items: Vec<String>,
    /// For `acl_set`: the entry written on every repo in `items`, so exposure intervals can be
    /// replayed from the log alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acl: Option<AclGrant>,
}

/// One ACL entry as `acl_set` wrote it (`Access::None` means the entry was removed).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct AclGrant {
    pub principal: String,
    pub access: Access,
}
