//! What the caller asks for ([`RunSpec`]) and what it gets back ([`RunOutcome`]).

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Lines of output kept for error messages when the caller does not choose.
pub const DEFAULT_TAIL_LINES: usize = 20;
/// Longest line kept in the output tail; longer lines are cut (a step printing megabytes
/// without a newline must not grow memory).
pub const MAX_TAIL_LINE_BYTES: usize = 4096;

/// The root filesystem of the step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rootfs {
    /// overlayfs over read-only image layers. After the run, `upper` holds exactly the
    /// step's changes, in overlayfs form: deleted paths are character devices 0:0, replaced
    /// directories carry `trusted.overlay.opaque=y` (as root) or `user.overlay.opaque=y`
    /// (rootless, `userxattr`). `strata_archive::write_overlay_diff(upper)` turns it into a
    /// layer.
    ///
    /// `upper` and `work` must be empty directories on the same filesystem, used for one
    /// run only (the mount is `volatile` when the kernel allows it, which marks `work` as
    /// used). Neither may be inside a lower dir or vice versa.
    Overlay {
        /// Layer directories, top-most first (the order of `lowerdir=`).
        lower: Vec<PathBuf>,
        upper: PathBuf,
        work: PathBuf,
    },
    /// A plain directory holding the whole root filesystem, modified in place (the fallback
    /// when overlayfs is unavailable, see [`crate::Sandbox::probe_overlay`]). The caller
    /// computes the diff itself by comparing the directory with the tree it started from
    /// (see the crate docs).
    Dir(PathBuf),
}

/// The step's network.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Network {
    /// The host's network namespace (Docker's default for `RUN`).
    #[default]
    Host,
    /// A new, empty network namespace with only `lo`, brought up (`RUN --network=none`).
    None,
}

/// Whether a bind mount may be written through.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Access {
    #[default]
    ReadOnly,
    ReadWrite,
}

/// An extra mount for the step (`RUN --mount`). Targets are absolute paths inside the
/// container, cleaned lexically (`..` cannot climb above `/`); symlinks on the way are
/// resolved *inside* the root filesystem, never on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MountSpec {
    /// A host file or directory the caller prepared (cache dir, stage dir, secret file).
    /// Directories are bound recursively; `ReadOnly` applies to every submount too.
    Bind {
        source: PathBuf,
        target: String,
        access: Access,
    },
    /// A fresh tmpfs, gone after the step.
    Tmpfs {
        target: String,
        /// `size=` in bytes; `None` = the kernel default (half of RAM).
        size_bytes: Option<u64>,
        /// Permission bits of the tmpfs root; `None` = 01777 (Docker's tmpfs default).
        mode: Option<u32>,
    },
}

impl MountSpec {
    pub fn target(&self) -> &str {
        match self {
            MountSpec::Bind { target, .. } | MountSpec::Tmpfs { target, .. } => target,
        }
    }
}

type Callback = Arc<dyn Fn(&[u8]) + Send + Sync>;

/// Where the step's output (stdout and stderr, interleaved as written) goes while it runs.
/// The last lines are always kept for [`RunOutcome::output_tail`].
#[derive(Clone)]
pub struct OutputSink {
    callback: Option<Callback>,
    tail_lines: usize,
}

impl OutputSink {
    /// Keep only the tail.
    pub fn discard() -> Self {
        OutputSink {
            callback: None,
            tail_lines: DEFAULT_TAIL_LINES,
        }
    }

    /// Call `f` with each chunk of output as it arrives (on a thread of the sandbox; chunks
    /// are not aligned to lines).
    pub fn callback(f: impl Fn(&[u8]) + Send + Sync + 'static) -> Self {
        OutputSink {
            callback: Some(Arc::new(f)),
            tail_lines: DEFAULT_TAIL_LINES,
        }
    }

    /// How many of the last lines to keep (default [`DEFAULT_TAIL_LINES`]).
    pub fn with_tail_lines(mut self, lines: usize) -> Self {
        self.tail_lines = lines;
        self
    }

    pub fn tail_lines(&self) -> usize {
        self.tail_lines
    }

    pub(crate) fn emit(&self, chunk: &[u8]) {
        if let Some(cb) = &self.callback {
            cb(chunk);
        }
    }
}

impl Default for OutputSink {
    fn default() -> Self {
        OutputSink::discard()
    }
}

impl fmt::Debug for OutputSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutputSink")
            .field("callback", &self.callback.is_some())
            .field("tail_lines", &self.tail_lines)
            .finish()
    }
}

/// One `RUN` step.
///
/// Serializable (without `output`) so that it can travel to the helper process; the
/// test/bench helper also reads it from a file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunSpec {
    pub rootfs: Rootfs,
    /// The program and its arguments, already wrapped by the caller for shell form
    /// (`["/bin/sh", "-c", cmd]`). A program without `/` is looked up in the step's `PATH`.
    pub args: Vec<String>,
    /// `KEY=VALUE`, passed as is; `PATH` and `HOME` are added when missing (the Docker
    /// defaults: the standard PATH, the user's home from `/etc/passwd` or `/`).
    pub env: Vec<String>,
    /// Working directory (WORKDIR), absolute. Created if missing, owned by the step's user,
    /// mode 0755, like BuildKit; resolved inside the root, magic links (`/proc/self/fd/N`)
    /// refused.
    pub cwd: String,
    /// `""` (root), `name`, `uid`, `name:group`, `uid:gid`, resolved through the root
    /// filesystem's `/etc/passwd` and `/etc/group` (opened inside the root, regular files
    /// only, size-capped). Supplementary groups are the `/etc/group` entries listing the user,
    /// unless a group is given explicitly (runc's rules).
    pub user: String,
    pub network: Network,
    pub mounts: Vec<MountSpec>,
    pub hostname: String,
    /// Contents of `/etc/hosts` for the step (a bind-mounted file: never written into the
    /// layer). `None` leaves the image's file.
    pub hosts: Option<String>,
    /// Contents of `/etc/resolv.conf`, as `hosts`.
    pub resolv_conf: Option<String>,
    /// The image's architecture (`amd64`, `arm64`, …). When it differs from the host's, the
    /// step needs a qemu-user binfmt_misc handler with the `F` flag; checked before starting.
    pub platform_arch: Option<String>,
    #[serde(skip)]
    pub output: OutputSink,
}

impl RunSpec {
    /// A spec with the defaults: no env, cwd `/`, user root, host network, no mounts,
    /// hostname `strata`, the image's `/etc/hosts` and `/etc/resolv.conf`, host arch.
    pub fn new(rootfs: Rootfs, args: Vec<String>) -> Self {
        RunSpec {
            rootfs,
            args,
            env: Vec::new(),
            cwd: "/".to_string(),
            user: String::new(),
            network: Network::Host,
            mounts: Vec::new(),
            hostname: "strata".to_string(),
            hosts: None,
            resolv_conf: None,
            platform_arch: None,
            output: OutputSink::discard(),
        }
    }

    /// Shell form: `["/bin/sh", "-c", command]`.
    pub fn shell(rootfs: Rootfs, command: &str) -> Self {
        RunSpec::new(
            rootfs,
            vec!["/bin/sh".to_string(), "-c".to_string(), command.to_string()],
        )
    }
}

/// How the step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StepStatus {
    /// It exited with this code.
    Exited(i32),
    /// It was killed by this signal.
    Signaled(i32),
}

impl fmt::Display for StepStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StepStatus::Exited(code) => write!(f, "exit code {code}"),
            StepStatus::Signaled(sig) => write!(f, "killed by signal {sig}"),
        }
    }
}

/// The result of a step that started: its status and the last lines of its output (for the
/// build engine's error message). A non-zero exit is an outcome, not an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunOutcome {
    pub status: StepStatus,
    pub output_tail: Vec<String>,
}

impl RunOutcome {
    pub fn success(&self) -> bool {
        self.status == StepStatus::Exited(0)
    }
}
