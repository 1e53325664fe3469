//! The sandbox's filesystem view: in its own mount namespace, the directories where the
//! host keeps its sockets and its users' files (`/tmp`, `/run`, `/dev/shm`, home
//! directories, …) are covered with an empty read-only tmpfs, and only the paths the
//! profile grants beneath them are shown again (bind mounts, cloned before the cover).
//!
//! Landlock governs reading and writing files but not `connect(2)` to a socket file, so
//! what the mount namespace does not show is the second wall around the host's Unix sockets
//! (the seccomp filter, refusing `socket(AF_UNIX)`, is the first). The plan is computed here
//! in the parent; the child only mounts (see `child::show_view`).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::error::SandboxError;
use crate::profile::Layer;

/// Directories hidden unless the profile grants them (or something above them).
pub const HIDDEN: &[&str] = &[
    "/tmp", "/var/tmp", "/run", "/var/run", "/dev/shm", "/home", "/root",
];

/// Granted paths beneath hidden directories the child can show again (a stack array there).
pub(crate) const MAX_SHOWN: usize = 64;

/// One granted path shown again beneath a hidden directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Shown {
    pub(crate) path: PathBuf,
    pub(crate) dir: bool,
    /// Directories to create in the tmpfs first, outermost first.
    pub(crate) parents: Vec<PathBuf>,
}

/// The pure plan: which directories to cover, which granted paths to show again.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct ViewPlan {
    pub(crate) hide: Vec<PathBuf>,
    pub(crate) show: Vec<Shown>,
}

/// `hidden` and `granted` are canonical paths, `granted` with whether each is a directory.
/// A hidden directory that is granted, or lies beneath a granted path, stays; one beneath
/// another hidden directory is covered by it already. A granted path beneath a hidden
/// directory is shown, unless it lies beneath another shown path (the clone is recursive).
pub(crate) fn plan(hidden: &[PathBuf], granted: &[(PathBuf, bool)]) -> ViewPlan {
    let mut hide: Vec<PathBuf> = Vec::new();
    for h in hidden {
        let kept_by_grant = granted.iter().any(|(g, _)| h.starts_with(g));
        let inside_other = hidden.iter().any(|o| o != h && h.starts_with(o));
        if !kept_by_grant && !inside_other && !hide.contains(h) {
            hide.push(h.clone());
        }
    }
    let mut show: Vec<Shown> = Vec::new();
    for (g, dir) in granted {
        let Some(cover) = hide.iter().find(|h| g.starts_with(h) && g != *h) else {
            continue;
        };
        let beneath_other = granted
            .iter()
            .any(|(o, _)| o != g && g.starts_with(o) && o.starts_with(cover) && o != cover);
        if beneath_other || show.iter().any(|s| s.path == *g) {
            continue;
        }
        let mut parents: Vec<PathBuf> = g
            .ancestors()
            .skip(1)
            .take_while(|a| a != cover)
            .map(Path::to_path_buf)
            .collect();
        parents.reverse();
        show.push(Shown {
            path: g.clone(),
            dir: *dir,
            parents,
        });
    }
    ViewPlan { hide, show }
}

/// The plan as the child takes it: C strings, prepared before `fork`.
#[derive(Debug)]
pub(crate) struct View {
    pub(crate) hide: Vec<CString>,
    pub(crate) show: Vec<ShownC>,
}

/// [`Shown`] as C strings.
#[derive(Debug)]
pub(crate) struct ShownC {
    pub(crate) path: CString,
    pub(crate) dir: bool,
    pub(crate) parents: Vec<CString>,
}

/// The view for these granted paths on this host: [`HIDDEN`] as it resolves here (missing
/// ones skipped, `/var/run` usually being `/run`), the granted paths that exist.
pub(crate) fn prepare(granted: &[&Path]) -> Result<View, SandboxError> {
    let hidden: Vec<PathBuf> = HIDDEN
        .iter()
        .filter_map(|h| Path::new(h).canonicalize().ok())
        .filter(|h| h.is_dir())
        .collect();
    let granted: Vec<(PathBuf, bool)> = granted
        .iter()
        .filter_map(|g| g.canonicalize().ok())
        .map(|g| {
            let dir = g.is_dir();
            (g, dir)
        })
        .collect();
    let plan = plan(&hidden, &granted);
    if plan.show.len() > MAX_SHOWN {
        return Err(SandboxError::Unsupported {
            layer: Layer::Namespaces,
            reason: format!(
                "the profile grants {} paths beneath {}; at most {MAX_SHOWN} can be shown in \
                 the sandbox's filesystem view (grant a common parent instead)",
                plan.show.len(),
                HIDDEN.join(", ")
            ),
        });
    }
    let c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes()).map_err(|e| SandboxError::Prepare {
            layer: Layer::Namespaces,
            what: format!("the path {}", p.display()),
            source: Box::new(e),
        })
    };
    Ok(View {
        hide: plan
            .hide
            .iter()
            .map(|h| c(h.as_path()))
            .collect::<Result<_, _>>()?,
        show: plan
            .show
            .iter()
            .map(|s| {
                Ok(ShownC {
                    path: c(&s.path)?,
                    dir: s.dir,
                    parents: s
                        .parents
                        .iter()
                        .map(|p| c(p.as_path()))
                        .collect::<Result<_, _>>()?,
                })
            })
            .collect::<Result<_, SandboxError>>()?,
    })
}

#[cfg(test)]
#[path = "view_tests.rs"]
mod tests;
