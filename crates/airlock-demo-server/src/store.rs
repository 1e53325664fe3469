//! Reading and writing the state file. Writes go to a temporary file in the same directory and are
//! renamed over the target, so an observer reading the file sees the old state or the new one, never
//! a torn one.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::model::CompanyState;
use crate::seed::seed_state;

/// Reads a state file written by this crate.
pub fn load_state(path: &Path) -> anyhow::Result<CompanyState> {
    let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))
}

/// Writes `state` to `path` atomically (temporary file + rename).
///
/// No fsync: the point is that an observer never sees a half-written file, not durability across a
/// power loss, and a sync per mutation would slow every test that mutates.
pub fn save_state(path: &Path, state: &CompanyState) -> anyhow::Result<()> {
    let json = serde_json::to_vec_pretty(state).context("serializing the state")?;
    let tmp = tmp_path(path);
    let result = (|| {
        let mut file =
            fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        file.write_all(&json)
            .and_then(|()| file.write_all(b"\n"))
            .with_context(|| format!("writing {}", tmp.display()))?;
        fs::rename(&tmp, path)
            .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
    })();
    if result.is_err() {
        // Best effort: do not leave a stray temporary file behind.
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// `dir/.name.tmp.PID`: same directory (so the rename stays on one file system), and unique per
/// process so two servers on one file cannot interleave their writes.
fn tmp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "state".to_owned());
    path.with_file_name(format!(".{name}.tmp.{}", std::process::id()))
}

/// The state to serve: the seed when `reset` is set or the file does not exist (written out at once,
/// so observers see it), else the file's content. A file that exists but does not parse is an error,
/// never silently replaced.
pub(crate) fn open_state(path: &Path, reset: bool) -> anyhow::Result<CompanyState> {
    if !reset && path.exists() {
        return load_state(path);
    }
    let state = seed_state();
    save_state(path, &state)?;
    Ok(state)
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
