//! The real [`RunExecutor`]: strata-sandbox (namespaces, overlayfs, qemu-user for foreign
//! architectures), one helper process per step.

use std::path::Path;

use async_trait::async_trait;
use strata_sandbox::{RunSpec, Sandbox, SandboxError, StepStatus};

use crate::error::error_chain;
use crate::run::{RunExecutor, RunFailure, RunFailureKind, RunRequest};

/// Which root filesystems the executor offers the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RootfsMode {
    /// overlayfs when [`Sandbox::probe_overlay`] says it works, else a plain directory.
    #[default]
    Auto,
    /// Always a plain directory changed in place (the copying fallback), e.g. to test it.
    Copy,
}

/// Runs `RUN` steps with [`strata_sandbox`].
///
/// The process must call [`strata_sandbox::init_if_requested`] first thing in `main` (the
/// sandbox re-executes the current binary), or name another helper binary that does with
/// [`SandboxExecutor::with_sandbox`].
#[derive(Debug, Clone, Default)]
pub struct SandboxExecutor {
    sandbox: Sandbox,
    mode: RootfsMode,
}

impl SandboxExecutor {
    /// The current executable as sandbox helper, overlayfs where it works.
    pub fn new() -> Self {
        SandboxExecutor::default()
    }

    /// Use this sandbox (e.g. [`Sandbox::with_helper`] in tests).
    pub fn with_sandbox(sandbox: Sandbox) -> Self {
        SandboxExecutor {
            sandbox,
            mode: RootfsMode::Auto,
        }
    }

    pub fn rootfs_mode(mut self, mode: RootfsMode) -> Self {
        self.mode = mode;
        self
    }
}

#[async_trait]
impl RunExecutor for SandboxExecutor {
    async fn overlay_available(&self, dir: &Path) -> Result<(), String> {
        if self.mode == RootfsMode::Copy {
            return Err("the copying root filesystem was requested".into());
        }
        let sandbox = self.sandbox.clone();
        let dir = dir.to_path_buf();
        tokio::task::spawn_blocking(move || sandbox.probe_overlay(&dir))
            .await
            .map_err(|e| format!("overlay probe task failed: {e}"))?
            .map_err(|e| error_chain(&e))
    }

    async fn run(&self, request: &RunRequest) -> Result<(), RunFailure> {
        let mut spec = RunSpec::new(request.rootfs.clone(), request.args.clone());
        spec.env = request.env.clone();
        spec.cwd = request.workdir.clone();
        spec.user = request.user.clone();
        spec.network = request.network;
        spec.mounts = request.mounts.clone();
        spec.hosts = request.hosts.clone();
        spec.resolv_conf = request.resolv_conf.clone();
        spec.platform_arch = Some(request.platform.normalised().architecture.clone());
        spec.output = request.output.clone();
        let sandbox = self.sandbox.clone();
        let platform = request.platform.clone();
        let outcome = tokio::task::spawn_blocking(move || sandbox.run(&spec))
            .await
            .map_err(|e| RunFailure::setup(format!("sandbox task failed: {e}")))?;
        match outcome {
            Ok(o) if o.success() => Ok(()),
            Ok(o) => Err(RunFailure {
                kind: match o.status {
                    StepStatus::Exited(c) => RunFailureKind::Exited(c),
                    StepStatus::Signaled(s) => RunFailureKind::Signaled(s),
                },
                message: o.status.to_string(),
                output_tail: o.output_tail,
            }),
            Err(SandboxError::Interrupted) => Err(RunFailure {
                kind: RunFailureKind::Interrupted,
                message: "interrupted".into(),
                output_tail: Vec::new(),
            }),
            Err(e @ SandboxError::ForeignArch { .. }) => Err(RunFailure::setup(format!(
                "cannot run for platform {platform}: {}",
                error_chain(&e)
            ))),
            Err(e) => Err(RunFailure::setup(error_chain(&e))),
        }
    }
}
