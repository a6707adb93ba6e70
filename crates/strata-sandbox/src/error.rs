use std::io;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Every failure to run a step. A step that runs and exits non-zero is not an error: it is
/// a [`crate::RunOutcome`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SandboxError {
    /// The spec is unusable as given.
    #[error("invalid RUN spec: {field}: {reason}")]
    InvalidSpec { field: &'static str, reason: String },
    /// The helper process could not be started.
    #[error("starting the sandbox helper {helper}")]
    Spawn {
        helper: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A system call setting up the sandbox failed: `stage` says what was being done, `path`
    /// what it was done to, `detail` adds the kernel's mount log when there is one.
    #[error("sandbox setup: {stage}: {syscall} {path}{}", detail_suffix(.detail))]
    Setup {
        stage: String,
        syscall: String,
        path: String,
        detail: String,
        #[source]
        source: io::Error,
    },
    /// overlayfs could not be mounted with these directories (kernel without overlay in user
    /// namespaces, an upper filesystem that cannot hold overlay xattrs or whiteouts, nested
    /// overlay…). The caller may fall back to [`crate::Rootfs::Dir`].
    #[error("overlayfs unavailable (upper dir {upper}){}", detail_suffix(.detail))]
    OverlayUnavailable {
        upper: PathBuf,
        detail: String,
        #[source]
        source: io::Error,
    },
    /// `USER` could not be resolved in the root filesystem.
    #[error("USER {user:?}: {reason}")]
    User { user: String, reason: String },
    /// `USER` resolved to an id the user namespace does not map.
    #[error(
        "USER {user:?}: {kind} {id} is not mapped in the rootless user namespace (ids 0..{mapped}); \
         hint: give your user subordinate ids in /etc/subuid and /etc/subgid (e.g. `usermod \
         --add-subuids 100000-165535 --add-subgids 100000-165535 $USER`) and install newuidmap \
         (Debian package uidmap)"
    )]
    UserNotMapped {
        user: String,
        kind: String,
        id: u32,
        mapped: u32,
    },
    /// The working directory could not be resolved or created inside the root.
    #[error("WORKDIR {workdir}: cannot resolve or create it inside the root filesystem")]
    Workdir {
        workdir: String,
        #[source]
        source: io::Error,
    },
    /// A mount target is unusable (wrong type, dangling symlink, read-only parent…).
    #[error("mount target {target}: {reason}")]
    MountTarget { target: String, reason: String },
    /// The step's program could not be executed.
    #[error("cannot execute {program:?} in the container")]
    Exec {
        program: String,
        #[source]
        source: io::Error,
    },
    /// The step is for another architecture and the host cannot run it.
    #[error(
        "RUN for linux/{arch} on a linux/{host_arch} host needs qemu-user emulation: {problem}\nfix: {fix}"
    )]
    ForeignArch {
        arch: String,
        host_arch: String,
        problem: String,
        fix: String,
    },
    /// newuidmap/newgidmap failed.
    #[error("setting up the user namespace with {tool}: {detail}")]
    IdMap { tool: String, detail: String },
    /// [`crate::interrupt_all`] was called: the step was killed (or never started).
    #[error("the RUN step was interrupted")]
    Interrupted,
    /// The helper ended without reporting a result (killed from outside, crashed).
    #[error("the sandbox helper ended without a report: {detail}")]
    HelperDied { detail: String },
    /// Talking to the helper failed.
    #[error("sandbox helper protocol: {detail}")]
    Protocol { detail: String },
    /// Removing a directory the sandbox was asked to remove failed.
    #[error("removing {path}")]
    Remove {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// An I/O error of the parent side (pipes, threads).
    #[error("{op}")]
    Io {
        op: &'static str,
        #[source]
        source: io::Error,
    },
}

fn detail_suffix(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(" ({detail})")
    }
}

/// The errors the helper reports over its control socket (errno instead of `io::Error`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) enum WireError {
    Setup {
        stage: String,
        syscall: String,
        path: String,
        detail: String,
        errno: i32,
    },
    OverlayUnavailable {
        upper: PathBuf,
        detail: String,
        errno: i32,
    },
    User {
        user: String,
        reason: String,
    },
    UserNotMapped {
        user: String,
        kind: String,
        id: u32,
        mapped: u32,
    },
    Workdir {
        workdir: String,
        errno: i32,
    },
    MountTarget {
        target: String,
        reason: String,
    },
    Exec {
        program: String,
        errno: i32,
    },
    Remove {
        path: PathBuf,
        errno: i32,
    },
}

impl WireError {
    pub(crate) fn setup(
        stage: impl Into<String>,
        syscall: impl Into<String>,
        path: impl Into<String>,
        err: rustix::io::Errno,
    ) -> Self {
        WireError::Setup {
            stage: stage.into(),
            syscall: syscall.into(),
            path: path.into(),
            detail: String::new(),
            errno: err.raw_os_error(),
        }
    }

    pub(crate) fn with_detail(mut self, text: String) -> Self {
        if let WireError::Setup { detail, .. } | WireError::OverlayUnavailable { detail, .. } =
            &mut self
        {
            *detail = text;
        }
        self
    }
}

impl From<WireError> for SandboxError {
    fn from(e: WireError) -> Self {
        let os = io::Error::from_raw_os_error;
        match e {
            WireError::Setup {
                stage,
                syscall,
                path,
                detail,
                errno,
            } => SandboxError::Setup {
                stage,
                syscall,
                path,
                detail,
                source: os(errno),
            },
            WireError::OverlayUnavailable {
                upper,
                detail,
                errno,
            } => SandboxError::OverlayUnavailable {
                upper,
                detail,
                source: os(errno),
            },
            WireError::User { user, reason } => SandboxError::User { user, reason },
            WireError::UserNotMapped {
                user,
                kind,
                id,
                mapped,
            } => SandboxError::UserNotMapped {
                user,
                kind,
                id,
                mapped,
            },
            WireError::Workdir { workdir, errno } => SandboxError::Workdir {
                workdir,
                source: os(errno),
            },
            WireError::MountTarget { target, reason } => {
                SandboxError::MountTarget { target, reason }
            }
            WireError::Exec { program, errno } => SandboxError::Exec {
                program,
                source: os(errno),
            },
            WireError::Remove { path, errno } => SandboxError::Remove {
                path,
                source: os(errno),
            },
        }
    }
}
