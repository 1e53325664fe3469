//! The crate's one error type.

use std::io;
use std::path::PathBuf;

use crate::profile::Layer;

/// Why a sandbox could not be set up. Every variant names the layer at fault, so
/// an operator knows which one to fix or, knowingly, to turn `off`.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The kernel or environment cannot enforce a layer the profile asks for.
    #[error("sandbox layer `{layer}` cannot be enforced: {reason}")]
    Unsupported {
        /// The layer.
        layer: Layer,
        /// Why, for the operator.
        reason: String,
    },
    /// Preparing a layer failed before the process was started.
    #[error("sandbox layer `{layer}`: {what}")]
    Prepare {
        /// The layer.
        layer: Layer,
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A step inside the new process failed; it never ran the command.
    #[error("sandbox layer `{layer}`: {step} failed in the new process")]
    Enforce {
        /// The layer.
        layer: Layer,
        /// The step that failed (e.g. `unshare`, `write uid_map`).
        step: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A path in the profile is unusable.
    #[error("sandbox path {path}: {message}", path = path.display())]
    Path {
        /// The path.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The private temp dir could not be created.
    #[error("cannot create the sandbox's private temp dir")]
    TempDir(#[source] io::Error),
    /// The command could not be started for a reason outside the sandbox (e.g. not found).
    #[error("cannot start the command")]
    Spawn(#[source] io::Error),
}
