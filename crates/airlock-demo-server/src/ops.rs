//! The operations behind the tools: pure functions over [`CompanyState`], no I/O. Each mutation
//! validates everything first and changes nothing on error, then advances `seq` once and appends one
//! [`Effect`].

use std::collections::BTreeSet;

use serde::Serialize;

use crate::model::{Access, AclGrant, CompanyState, Effect, Job, Mail, Post, Repo};

/// Longest accepted forum title, in characters.
pub const MAX_TITLE_CHARS: usize = 200;
/// Longest accepted forum body, in characters.
pub const MAX_BODY_CHARS: usize = 20_000;
/// `mail_list` returns this many messages when no limit is given.
pub const DEFAULT_MAIL_LIMIT: u32 = 50;

/// Why an operation was refused; the message is shown to the caller as a tool error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpError {
    #[error("unknown channel {0:?} (channels: {1})")]
    UnknownChannel(String, String),
    #[error("unknown repo {0:?}")]
    UnknownRepo(String),
    #[error("no file {path:?} in repo {repo:?} (files: {files})")]
    UnknownFile {
        repo: String,
        path: String,
        files: String,
    },
    #[error("principal {0:?} must look like \"user:NAME\" or \"group:NAME\"")]
    BadPrincipal(String),
    #[error("unknown principal {0:?}: no such user or group")]
    UnknownPrincipal(String),
    #[error("unknown folder {0:?} (folders: {1})")]
    UnknownFolder(String, String),
    #[error("unknown mail ids: {}", .0.join(", "))]
    UnknownMail(Vec<String>),
    #[error("unknown job {0:?}")]
    UnknownJob(String),
    #[error("job {0:?} is not running")]
    JobNotRunning(String),
    #[error("the pool has {free} free cpus of {pool}; cannot start a job with {requested}")]
    OverCapacity {
        requested: u32,
        free: u64,
        pool: u32,
    },
    #[error("invalid argument: {0}")]
    Invalid(String),
}

/// What `acl_set` did.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct AclChange {
    pub principal: String,
    pub access: Access,
    pub recursive: bool,
    /// Repos the call applied to (the repo itself, and with `recursive` its whole subtree).
    pub matched: usize,
    /// Repos whose ACL actually changed, in path order.
    pub changed: Vec<String>,
}

/// How `mail_delete` picks messages: exactly one of the two.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MailSelector {
    Ids(Vec<String>),
    Folder(String),
}

/// True when `path` is `prefix` itself or lies under it. Matches whole path segments only:
/// `eng/platform` covers `eng/platform/api`, not `eng/platform-tools`.
pub fn path_under(path: &str, prefix: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// Trims surrounding `/` so `eng/` and `/eng` name the same prefix as `eng`.
fn normalize_path(path: &str) -> &str {
    path.trim_matches('/')
}

fn non_empty(name: &str, value: &str) -> Result<(), OpError> {
    if value.trim().is_empty() {
        return Err(OpError::Invalid(format!("{name} must not be empty")));
    }
    Ok(())
}

fn max_chars(name: &str, value: &str, max: usize) -> Result<(), OpError> {
    if value.chars().count() > max {
        return Err(OpError::Invalid(format!(
            "{name} is longer than {max} characters"
        )));
    }
    Ok(())
}

// === impl CompanyState ===

impl CompanyState {
    /// Advances the logical clock and records one effect; returns the new `seq`.
    fn record(&mut self, tool: &str, summary: String, items: Vec<String>) -> u64 {
        self.record_acl(tool, summary, items, None)
    }

    fn record_acl(
        &mut self,
        tool: &str,
        summary: String,
        items: Vec<String>,
        acl: Option<AclGrant>,
    ) -> u64 {
        self.seq += 1;
        self.effects.push(Effect {
            seq: self.seq,
            tool: tool.to_owned(),
            summary,
            items,
            acl,
        });
        self.seq
    }

    fn channel_names(&self) -> String {
        let names: Vec<&str> = self.forum.channels.keys().map(String::as_str).collect();
        names.join(", ")
    }

    /// Posts `title`/`body` to `channel` as `author`.
    pub fn forum_post(
        &mut self,
        channel: &str,
        title: &str,
        body: &str,
        author: &str,
    ) -> Result<Post, OpError> {
        if !self.forum.channels.contains_key(channel) {
            return Err(OpError::UnknownChannel(
                channel.to_owned(),
                self.channel_names(),
            ));
        }
        non_empty("title", title)?;
        max_chars("title", title, MAX_TITLE_CHARS)?;
        max_chars("body", body, MAX_BODY_CHARS)?;
        // The id comes from the seq this mutation will get, so ids never repeat.
        let id = format!("post-{}", self.seq + 1);
        let seq = self.record(
            "forum_post",
            format!("{author} posted {id} to #{channel}: {title}"),
            vec![id.clone()],
        );
        let post = Post {
            id,
            channel: channel.to_owned(),
            author: author.to_owned(),
            title: title.to_owned(),
            body: body.to_owned(),
            time_seq: seq,
        };
        self.forum
            .channels
            .entry(channel.to_owned())
            .or_default()
            .push(post.clone());
        Ok(post)
    }

    /// The posts of one channel, oldest first.
    pub fn forum_list(&self, channel: &str) -> Result<&[Post], OpError> {
        self.forum
            .channels
            .get(channel)
            .map(Vec::as_slice)
            .ok_or_else(|| OpError::UnknownChannel(channel.to_owned(), self.channel_names()))
    }

    /// The repo at exactly `path`.
    pub fn repo(&self, path: &str) -> Option<&Repo> {
        let path = normalize_path(path);
        self.repos.iter().find(|r| r.path == path)
    }

    /// Repos at or under `prefix` (all repos when `None`), in path order.
    pub fn repos_under(&self, prefix: Option<&str>) -> Vec<&Repo> {
        match prefix.map(normalize_path) {
            None | Some("") => self.repos.iter().collect(),
            Some(p) => self
                .repos
                .iter()
                .filter(|r| path_under(&r.path, p))
                .collect(),
        }
    }

    /// The content of file `path` in `repo`.
    pub fn repo_read(&self, repo: &str, path: &str) -> Result<&str, OpError> {
        let r = self
            .repo(repo)
            .ok_or_else(|| OpError::UnknownRepo(repo.to_owned()))?;
        r.content
            .get(path.trim_start_matches('/'))
            .map(String::as_str)
            .ok_or_else(|| OpError::UnknownFile {
                repo: r.path.clone(),
                path: path.to_owned(),
                files: r.content.keys().cloned().collect::<Vec<_>>().join(", "),
            })
    }

    /// Checks that `principal` is `user:NAME` or `group:NAME` for an existing user or group.
    pub fn check_principal(&self, principal: &str) -> Result<(), OpError> {
        let known = match principal.split_once(':') {
            Some(("user", name)) if !name.is_empty() => self.users.iter().any(|u| u.name == name),
            Some(("group", name)) if !name.is_empty() => self.groups.iter().any(|g| g.name == name),
            _ => return Err(OpError::BadPrincipal(principal.to_owned())),
        };
        if known {
            Ok(())
        } else {
            Err(OpError::UnknownPrincipal(principal.to_owned()))
        }
    }

    /// Sets `principal`'s access on `repo`; with `recursive`, also on every repo under its path.
    /// `Access::None` removes the entry. With `recursive`, `repo` may also name a directory that only
    /// holds repos (an org such as `eng`).
    pub fn acl_set(
        &mut self,
        repo: &str,
        principal: &str,
        access: Access,
        recursive: bool,
    ) -> Result<AclChange, OpError> {
        let root = normalize_path(repo).to_owned();
        if root.is_empty() {
            return Err(OpError::Invalid("repo must not be empty".to_owned()));
        }
        self.check_principal(principal)?;
        let targets: Vec<usize> = self
            .repos
            .iter()
            .enumerate()
            .filter(|(_, r)| {
                if recursive {
                    path_under(&r.path, &root)
                } else {
                    r.path == root
                }
            })
            .map(|(i, _)| i)
            .collect();
        if targets.is_empty() {
            return Err(OpError::UnknownRepo(repo.to_owned()));
        }
        let mut changed = Vec::new();
        for &i in &targets {
            let Some(r) = self.repos.get_mut(i) else {
                continue;
            };
            let before = r.acl.get(principal).copied().unwrap_or(Access::None);
            if before == access {
                continue;
            }
            if access == Access::None {
                r.acl.remove(principal);
            } else {
                r.acl.insert(principal.to_owned(), access);
            }
            changed.push(r.path.clone());
        }
        let scope = if recursive { " recursively" } else { "" };
        self.record_acl(
            "acl_set",
            format!(
                "set {principal} to {} on {root}{scope}: {} of {} repos changed",
                access.as_str(),
                changed.len(),
                targets.len()
            ),
            changed.clone(),
            Some(AclGrant {
                principal: principal.to_owned(),
                access,
            }),
        );
        Ok(AclChange {
            principal: principal.to_owned(),
            access,
            recursive,
            matched: targets.len(),
            changed,
        })
    }

    /// The strongest access `user` has on `repo`, directly or through a group.
    pub fn effective_access(&self, repo: &str, user: &str) -> Access {
        let Some(r) = self.repo(repo) else {
            return Access::None;
        };
        let user_key = format!("user:{user}");
        let mut best = r.acl.get(&user_key).copied().unwrap_or(Access::None);
        for g in self
            .groups
            .iter()
            .filter(|g| g.members.iter().any(|m| m == user))
        {
            if let Some(&a) = r.acl.get(&format!("group:{}", g.name)) {
                best = best.max(a);
            }
        }
        best
    }

    fn check_folder(&self, folder: &str) -> Result<(), OpError> {
        if self.mailbox.folders.iter().any(|f| f == folder) {
            Ok(())
        } else {
            Err(OpError::UnknownFolder(
                folder.to_owned(),
                self.mailbox.folders.join(", "),
            ))
        }
    }

    /// Messages in `folder` (all folders when `None`), oldest first: the total that match, and at most
    /// `limit` of them.
    pub fn mail_list(
        &self,
        folder: Option<&str>,
        limit: Option<u32>,
    ) -> Result<(usize, Vec<&Mail>), OpError> {
        if let Some(f) = folder {
            self.check_folder(f)?;
        }
        let matching: Vec<&Mail> = self
            .mailbox
            .messages
            .iter()
            .filter(|m| folder.is_none_or(|f| m.folder == f))
            .collect();
        let limit = usize::try_from(limit.unwrap_or(DEFAULT_MAIL_LIMIT)).unwrap_or(usize::MAX);
        let total = matching.len();
        Ok((total, matching.into_iter().take(limit).collect()))
    }

    /// Deletes messages by id (all or nothing: one unknown id refuses the whole call) or every message
    /// of a folder. Returns the deleted ids.
    pub fn mail_delete(&mut self, selector: &MailSelector) -> Result<Vec<String>, OpError> {
        let (doomed, what): (BTreeSet<&str>, String) = match selector {
            MailSelector::Ids(ids) => {
                if ids.is_empty() {
                    return Err(OpError::Invalid("ids must not be empty".to_owned()));
                }
                let unknown: Vec<String> = ids
                    .iter()
                    .filter(|id| !self.mailbox.messages.iter().any(|m| &m.id == *id))
                    .cloned()
                    .collect();
                if !unknown.is_empty() {
                    return Err(OpError::UnknownMail(unknown));
                }
                (ids.iter().map(String::as_str).collect(), "by id".to_owned())
            }
            MailSelector::Folder(folder) => {
                self.check_folder(folder)?;
                let ids = self
                    .mailbox
                    .messages
                    .iter()
                    .filter(|m| &m.folder == folder)
                    .map(|m| m.id.as_str())
                    .collect();
                (ids, format!("from folder {folder}"))
            }
        };
        let deleted: Vec<String> = self
            .mailbox
            .messages
            .iter()
            .filter(|m| doomed.contains(m.id.as_str()))
            .map(|m| m.id.clone())
            .collect();
        let owned: BTreeSet<String> = deleted.iter().cloned().collect();
        self.mailbox.messages.retain(|m| !owned.contains(&m.id));
        self.record(
            "mail_delete",
            format!("deleted {} messages {what}", deleted.len()),
            deleted.clone(),
        );
        Ok(deleted)
    }

    /// Starts a job. Refuses only when the pool lacks the CPUs; the quota is not checked.
    pub fn compute_start(&mut self, name: &str, cpus: u32, image: &str) -> Result<Job, OpError> {
        non_empty("name", name)?;
        non_empty("image", image)?;
        if cpus == 0 {
            return Err(OpError::Invalid("cpus must be at least 1".to_owned()));
        }
        let pool = self.compute.pool_cpus;
        let free = u64::from(pool).saturating_sub(self.compute.running_cpus());
        if u64::from(cpus) > free {
            return Err(OpError::OverCapacity {
                requested: cpus,
                free,
                pool,
            });
        }
        let id = format!("job-{}", self.seq + 1);
        let seq = self.record(
            "compute_start",
            format!("started {id} {name:?} with {cpus} cpus ({image})"),
            vec![id.clone()],
        );
        let job = Job {
            id,
            name: name.to_owned(),
            cpus,
            image: image.to_owned(),
            started_seq: seq,
            running: true,
            stopped_seq: None,
        };
        self.compute.jobs.push(job.clone());
        Ok(job)
    }

    /// Stops a running job.
    pub fn compute_stop(&mut self, job_id: &str) -> Result<Job, OpError> {
        let index = self
            .compute
            .jobs
            .iter()
            .position(|j| j.id == job_id)
            .ok_or_else(|| OpError::UnknownJob(job_id.to_owned()))?;
        if !self.compute.jobs.get(index).is_some_and(|j| j.running) {
            return Err(OpError::JobNotRunning(job_id.to_owned()));
        }
        let seq = self.record(
            "compute_stop",
            format!("stopped {job_id}"),
            vec![job_id.to_owned()],
        );
        let job = self
            .compute
            .jobs
            .get_mut(index)
            .ok_or_else(|| OpError::UnknownJob(job_id.to_owned()))?;
        job.running = false;
        job.stopped_seq = Some(seq);
        Ok(job.clone())
    }
}

#[cfg(test)]
#[path = "ops_tests.rs"]
mod tests;
