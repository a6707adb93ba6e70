//! strata-sandbox: run one Containerfile `RUN` step, isolated, over a root filesystem made of
//! image layers, and hand back the directory holding exactly the step's filesystem changes.
//! Like buildah's `--isolation chroot`/`oci`, in-process and without a runtime.
//!
//! # Contract
//!
//! - [`RunSpec`] describes the step; [`Sandbox::run`] (or [`run`]) executes it and blocks until
//!   every process of it is gone. A step that ran gives `Ok(`[`RunOutcome`]`)` whatever its
//!   exit status (with the last output lines for the error message); a step that could not
//!   be started gives a [`SandboxError`] naming the setup stage, the path and the system call.
//! - With [`Rootfs::Overlay`], after the run `upper` holds exactly the changes, in overlayfs
//!   form (whiteouts are char 0:0 devices, opaque dirs carry `trusted.overlay.opaque=y`, or
//!   `user.overlay.opaque=y` rootless): `strata_archive::write_overlay_diff(upper, …)` makes the
//!   layer. Mount targets missing from the image (`/proc`, `/etc/hosts`, `RUN --mount`
//!   targets) live in a separate stub layer and never appear in `upper`. [`StepDirs`] creates
//!   an upper/work pair; [`Sandbox::remove`] removes it afterwards (also rootless, where
//!   files of other ids can only be removed from inside the user namespace). An upper dir can
//!   serve as a lower dir of the next step as it is (its whiteouts and opaque markers are
//!   overlayfs's own), so steps stack without extracting the layers just written. An
//!   upper/work pair may be reused after a clean run (the `volatile` marker is cleared), but
//!   then `upper` accumulates the changes of both runs.
//! - With [`Rootfs::Dir`] (the fallback when [`Sandbox::probe_overlay`] fails) the directory
//!   is modified in place. The caller keeps the tree it started from (the layers it extracted,
//!   or a snapshot of mtimes/sizes/modes/owners/xattrs/link targets per path) and computes
//!   the diff by walking both: entries added or changed go into the layer, entries gone
//!   become `.wh.` whiteouts (a directory replaced by a non-directory, or vice versa, is a
//!   delete plus an add). Mount targets the run created in the directory are removed again
//!   if still empty.
//! - Output: stdout and stderr of the step go, interleaved, to [`OutputSink`]; stdin is
//!   `/dev/null`.
//!
//! # Process model
//!
//! strata is multi-threaded (tokio), and a multi-threaded process must not fork and then do
//! real work, nor can it enter a user namespace. So [`Sandbox::run`] spawns a fresh copy of
//! the executable (`/proc/self/exe`) with a hidden argument; `main` calls
//! [`init_if_requested`] first thing, which turns that process into the helper. The spec
//! travels over a socket as JSON. The helper (single-threaded) enters a user namespace when
//! not root (ids mapped with newuidmap/newgidmap when `/etc/subuid` has a range for the user,
//! else container root = the caller only), unshares mount, pid, ipc, uts, cgroup (and net
//! for [`Network::None`]) namespaces and forks; the child is pid 1 of the new pid namespace.
//! It mounts the overlay and the system filesystems by file descriptor (see `setup.rs`),
//! `pivot_root`s, drops to the user, marks every descriptor above 2 close-on-exec and
//! execs the step, which is therefore pid 1 itself, with no strata code in the container.
//! There is no init reaping orphans: like `docker run` without `--init`, orphaned processes
//! are reparented to the step's program; when it exits the kernel kills every remaining
//! process of the step, and the mounts disappear with the mount namespace when the helper
//! exits. [`interrupt_all`] kills running steps (strata calls it on SIGINT/SIGTERM); if
//! strata dies outright, the helper gets SIGTERM as its parent-death signal and kills the
//! step. No temporary directory is created outside the caller's.
//!
//! # Security
//!
//! Steps run with Docker's default capabilities (as root) or none (other users), in their
//! own namespaces, without seccomp filtering. Targets are resolved with
//! `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)` and mounted onto the resolved fd, so a
//! base image's `/dev -> /host/path` symlink or a `WORKDIR /proc/self/fd/7` cannot reach the
//! host (RELIABILITY B4, B6, B7; CVE-2024-21626, CVE-2025-31133). `/proc/1/exe` is the step's
//! own program (B5, CVE-2019-5736). `/etc/passwd` and `/etc/group` are opened inside the root,
//! regular files only, size-capped (CVE-2024-9676). /proc is masked like Docker's.
//!
//! # Requirements and limits
//!
//! Linux 5.12 or later (new mount API, `mount_setattr`, `openat2`, `close_range`, overlayfs in
//! user namespaces); `lowerdir+` (6.8) lifts the layer count from about 90 to overlayfs's 500.
//! Rootless: unprivileged user namespaces enabled; `newuidmap`/`newgidmap` for more than one
//! id; layers extracted as the caller (`strata_archive::Ownership::Rootless`) or with ids the
//! namespace maps — overlayfs cannot copy up a file whose owner is unmapped (EOVERFLOW). Not provided: seccomp filtering, cgroup limits, `/dev/mqueue`, an init that reaps
//! orphans, a terminal.
//!
//! # Example
//!
//! ```no_run
//! use strata_sandbox::{OutputSink, RunSpec, Sandbox, StepDirs};
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     strata_sandbox::init_if_requested(); // first thing: the helper process stops here
//!     let dirs = StepDirs::create("/var/tmp".as_ref())?;
//!     let mut spec = RunSpec::shell(dirs.overlay(vec!["/layers/2".into(), "/layers/1".into()]), "echo hi > /hello");
//!     spec.output = OutputSink::callback(|chunk| eprint!("{}", String::from_utf8_lossy(chunk)));
//!     let sandbox = Sandbox::new();
//!     let outcome = sandbox.run(&spec)?;
//!     assert!(outcome.success(), "{:?}", outcome.output_tail);
//!     // … strata_archive::write_overlay_diff(dirs.upper(), &mut tar) …
//!     sandbox.remove(dirs.base())?;
//!     Ok(())
//! }
//! ```

mod arch;
mod child;
mod error;
mod fsutil;
mod idmap;
mod parent;
mod protocol;
mod setup;
mod spec;
mod stubs;
mod sys;

pub use child::init_if_requested;
pub use error::SandboxError;
pub use parent::{Sandbox, StepDirs, interrupt_all, run};
pub use spec::{
    Access, DEFAULT_TAIL_LINES, MAX_TAIL_LINE_BYTES, MountSpec, Network, OutputSink, Rootfs,
    RunOutcome, RunSpec, StepStatus,
};

/// The host architecture in OCI spelling (`amd64`, `arm64`, …), to compare with an image's.
pub fn host_arch() -> String {
    arch::host_arch()
}
