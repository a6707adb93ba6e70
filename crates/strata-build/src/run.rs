//! The slot where `RUN` plugs in. The engine prepares everything a step needs (the root
//! filesystem as overlay lower dirs or a plain directory, the command after SHELL and heredoc
//! rules, the environment, resolved `--mount`s as host paths) and hands it to a
//! [`RunExecutor`]; the step's changes come back in the overlay upper dir (or in the
//! directory itself), and the engine turns them into the layer.
//!
//! [`crate::SandboxExecutor`] is the real executor (strata-sandbox: namespaces, overlayfs,
//! qemu-user for foreign architectures); tests may plug in their own.

use std::path::Path;

use async_trait::async_trait;
pub use strata_sandbox::{Access, MountSpec, Network, OutputSink, Rootfs};
use strata_spec::Platform;

use crate::Location;

/// Everything a RUN step needs, resolved.
#[derive(Debug, Clone)]
pub struct RunRequest {
    pub platform: Platform,
    /// [`Rootfs::Overlay`]: the stage's layers as overlay lower dirs (top-most first: the
    /// layers of earlier steps, then the base image's), read-only, and an empty upper/work
    /// pair that must receive the step's changes in overlayfs form. [`Rootfs::Dir`]: the
    /// whole filesystem in one directory, changed in place (the engine diffs it).
    pub rootfs: Rootfs,
    /// The command: shell form already wrapped in the stage's SHELL, heredocs applied.
    pub args: Vec<String>,
    /// `KEY=VALUE`: the image config env and ENV, declared ARGs not shadowed by ENV, and
    /// `--mount=type=secret,env=…` values (which appear nowhere else).
    pub env: Vec<String>,
    /// `USER` as written (`""` = root, `name`, `uid`, `name:group`), resolved by the
    /// executor in the step's own `/etc/passwd` and `/etc/group`.
    pub user: String,
    /// `WORKDIR` (absolute); created if missing.
    pub workdir: String,
    /// `--mount`s as host paths (cache dirs, bind sources, secret files) and tmpfs mounts.
    pub mounts: Vec<MountSpec>,
    pub network: Network,
    /// `/etc/hosts` and `/etc/resolv.conf` for the step (bind-mounted, never in the layer).
    pub hosts: Option<String>,
    pub resolv_conf: Option<String>,
    /// Where the step's output goes while it runs (the engine turns it into
    /// [`crate::BuildEvent::RunOutput`] lines).
    pub output: OutputSink,
    /// The instruction, for messages.
    pub location: Location,
    pub instruction: String,
}

/// How a RUN step failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RunFailureKind {
    /// The command ran and exited with this non-zero code.
    Exited(i32),
    /// The command was killed by this signal.
    Signaled(i32),
    /// The step could not be started (sandbox setup, unknown USER, missing program, a
    /// foreign architecture without emulation…).
    Setup,
    /// The build was interrupted (Ctrl-C): the step was killed.
    Interrupted,
}

/// Why a RUN step failed: what happened, a message, and the last lines of its output.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct RunFailure {
    pub kind: RunFailureKind,
    pub message: String,
    pub output_tail: Vec<String>,
}

impl RunFailure {
    pub fn setup(message: impl Into<String>) -> Self {
        RunFailure {
            kind: RunFailureKind::Setup,
            message: message.into(),
            output_tail: Vec::new(),
        }
    }
}

/// Executes `RUN` steps.
///
/// Contract: [`RunExecutor::run`] runs `args` over `rootfs` and returns once every process
/// of the step is gone and nothing holds the upper (or plain) directory any more. `Ok` means
/// exit status 0. The engine writes the layer from the changes and caches it under a key of
/// the command, env, user, workdir, mounts and network, so executors never hash anything.
/// Mount targets missing from the image must not appear among the changes.
#[async_trait]
pub trait RunExecutor: Send + Sync {
    /// Whether overlayfs roots work with upper dirs under `dir` (asked once per build;
    /// `Err` says why not, and the engine falls back to [`Rootfs::Dir`]).
    async fn overlay_available(&self, dir: &Path) -> Result<(), String>;

    async fn run(&self, request: &RunRequest) -> Result<(), RunFailure>;
}
