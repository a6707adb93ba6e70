//! The slot where `RUN` plugs in: a step gets the stage's filesystem and leaves its changes
//! in an overlay upper directory, which becomes the step's layer.

use std::path::PathBuf;

use async_trait::async_trait;
use strata_containerfile::{Heredoc, Mount};
use strata_spec::Platform;

use crate::Location;

/// Everything a RUN step needs.
#[derive(Debug, Clone)]
pub struct RunRequest {
    pub platform: Platform,
    /// The stage's complete filesystem before the step. Read-only: use it as the overlay's
    /// lower directory.
    pub rootfs: PathBuf,
    /// An empty directory that must receive the step's changes in overlayfs format (the
    /// overlay upper dir: whiteouts as 0:0 character devices, opaque directories marked with
    /// `trusted.overlay.opaque` / `user.overlay.opaque`).
    pub upper: PathBuf,
    /// An empty overlay work directory on the same filesystem as `upper`.
    pub work: PathBuf,
    /// The command (shell form already wrapped in the stage's shell).
    pub args: Vec<String>,
    /// `KEY=VALUE`: the stage's ENV plus declared ARGs not shadowed by ENV.
    pub env: Vec<String>,
    /// `USER` (name or id, `user[:group]`), resolved by the executor in `rootfs`.
    pub user: Option<String>,
    /// `WORKDIR` (absolute).
    pub workdir: String,
    /// Parsed `--mount` values.
    pub mounts: Vec<Mount>,
    /// `--network`.
    pub network: Option<String>,
    /// `--security`.
    pub security: Option<String>,
    /// Heredocs the command refers to.
    pub heredocs: Vec<Heredoc>,
    /// The instruction, for messages.
    pub location: Location,
    pub instruction: String,
}

/// Why a RUN step failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct RunFailure {
    pub message: String,
    /// The command's exit status, when it ran and exited non-zero.
    pub exit_code: Option<i32>,
}

/// Executes `RUN` steps (the sandbox crate provides the real one).
///
/// Contract: the executor runs `args` with `rootfs` as the root filesystem (through an overlay
/// whose upper directory is `upper`), and returns once the command has exited and nothing
/// holds `upper` any more. `Ok` means exit status 0. The build turns `upper` into the layer
/// (`write_overlay_diff`) and caches it under a key of the command, env, user, workdir and
/// mounts, so the executor never needs to hash anything.
#[async_trait]
pub trait RunExecutor: Send + Sync {
    async fn run(&self, request: &RunRequest) -> Result<(), RunFailure>;
}
