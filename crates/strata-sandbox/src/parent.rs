//! The caller's side: validate the spec, start the helper, answer its id-map request, stream
//! the output, collect the result. Safe to call from any thread of a multi-threaded process
//! (only `posix_spawn`-style process creation happens here); it blocks until the step ends,
//! so async callers use `spawn_blocking`.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rustix::fs::{AtFlags, FileType, OFlags};

use crate::error::SandboxError;
use crate::fsutil;
use crate::idmap;
use crate::protocol::{
    CHILD_ARG, IdMode, MAP_FAILED, MAP_OK, Report, Request, Task, read_message, write_message,
};
use crate::spec::{MountSpec, OutputSink, Rootfs, RunOutcome, RunSpec};

/// Longest hostname the kernel accepts (HOST_NAME_MAX).
const MAX_HOSTNAME_BYTES: usize = 64;
/// statfs f_type of overlayfs, which cannot be an upper dir's filesystem.
const OVERLAYFS_SUPER_MAGIC: i64 = 0x794c_7630;
/// Read size for the output pipe.
const OUTPUT_CHUNK_BYTES: usize = 64 * 1024;

/// Helpers currently running, for [`interrupt_all`].
struct Live {
    pid: u32,
    stopped: Arc<AtomicBool>,
}
static LIVE: Mutex<Vec<Live>> = Mutex::new(Vec::new());
static SHUTTING_DOWN: AtomicBool = AtomicBool::new(false);

/// Stop every running step and refuse new ones: each step's processes are killed (its pid
/// namespace torn down), its mounts vanish with its mount namespace, and the pending
/// [`Sandbox::run`] calls return [`SandboxError::Interrupted`]. strata calls this from its
/// SIGINT/SIGTERM handling (e.g. a `tokio::signal::ctrl_c()` task), then waits for the build
/// to unwind and remove its directories.
pub fn interrupt_all() {
    SHUTTING_DOWN.store(true, Ordering::SeqCst);
    let live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    for l in live.iter() {
        l.stopped.store(true, Ordering::SeqCst);
        // The helper's pid cannot have been reused: it is removed from LIVE before it is
        // reaped.
        if let Some(pid) = rustix::process::Pid::from_raw(l.pid as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
    }
}

/// Runs steps by re-executing a helper binary: by default the current executable
/// (`/proc/self/exe`), whose `main` must call [`crate::init_if_requested`] first.
#[derive(Debug, Clone)]
pub struct Sandbox {
    helper: PathBuf,
    legacy_overlay: bool,
}

impl Default for Sandbox {
    fn default() -> Self {
        Sandbox::new()
    }
}

/// Run one step with the current executable as helper. See [`Sandbox::run`].
pub fn run(spec: &RunSpec) -> Result<RunOutcome, SandboxError> {
    Sandbox::new().run(spec)
}

impl Sandbox {
    /// Use the current executable as helper.
    pub fn new() -> Self {
        Sandbox {
            helper: PathBuf::from("/proc/self/exe"),
            legacy_overlay: false,
        }
    }

    /// Use another executable as helper (tests, benchmarks); its `main` must call
    /// [`crate::init_if_requested`] first.
    pub fn with_helper(helper: impl Into<PathBuf>) -> Self {
        Sandbox {
            helper: helper.into(),
            legacy_overlay: false,
        }
    }

    /// Mount overlayfs the way kernels before 6.8 require (one `lowerdir=` string), to test
    /// that path on newer kernels. Not for production use.
    #[doc(hidden)]
    pub fn force_legacy_overlay_syntax(mut self) -> Self {
        self.legacy_overlay = true;
        self
    }

    /// Run one step; blocks until it ended and every process of it is gone.
    ///
    /// `Ok` whenever the program ran, whatever its exit status; `Err` when the sandbox could
    /// not be set up, the program could not be executed, or the run was interrupted.
    /// After the return the overlay is unmounted everywhere and `upper` can be read.
    pub fn run(&self, spec: &RunSpec) -> Result<RunOutcome, SandboxError> {
        validate(spec)?;
        if let Some(arch) = &spec.platform_arch {
            crate::arch::check(arch, Path::new(crate::arch::BINFMT_DIR))?;
        }
        let result = self.call(Task::Run(Box::new(spec.clone())), &spec.output);
        if let Rootfs::Overlay { work, .. } = &spec.rootfs {
            // The helper is gone, so the overlay was unmounted cleanly: the marker of the
            // `volatile` mount (which makes overlayfs refuse the work dir until removed, in
            // case the machine crashed) can go, and the pair stays usable. overlayfs leaves
            // work/work with mode 000; an unprivileged caller needs search permission to
            // reach the marker (overlayfs recreates that dir at each mount).
            let inner = work.join("work");
            if inner.join("incompat").symlink_metadata().is_ok()
                || rustix::fs::access(&inner, rustix::fs::Access::EXEC_OK).is_err()
            {
                let _ = rustix::fs::chmod(&inner, rustix::fs::Mode::from_raw_mode(0o700));
            }
            let _ = fsutil::remove_tree(&inner.join("incompat"));
        }
        let result = result?;
        if let (Rootfs::Dir(dir), Some(created)) = (&spec.rootfs, &result.created) {
            remove_created_targets(dir, created);
        }
        if let Some(e) = result.error {
            return Err(e);
        }
        match result.status {
            Some(status) => Ok(RunOutcome {
                status,
                output_tail: result.tail,
            }),
            None => Err(result.died()),
        }
    }

    /// Check that overlayfs works for upper dirs on the filesystem of `dir` with this
    /// process's privileges (mount, whiteout creation); `Err(OverlayUnavailable)` tells the
    /// caller to use [`Rootfs::Dir`] instead. A scratch directory is created in `dir` and
    /// removed.
    pub fn probe_overlay(&self, dir: &Path) -> Result<(), SandboxError> {
        if !dir.is_absolute() || !dir.is_dir() {
            return Err(invalid(
                "dir",
                format!("{} is not an absolute path to a directory", dir.display()),
            ));
        }
        let result = self.call(
            Task::ProbeOverlay {
                dir: dir.to_path_buf(),
            },
            &OutputSink::discard(),
        )?;
        result.finish()
    }

    /// Remove a directory tree the sandbox wrote to (an upper/work pair, a `Rootfs::Dir`),
    /// without following symlinks. Rootless with subordinate ids the tree holds files of ids
    /// the caller cannot touch, so the removal runs in the same user namespace mapping.
    pub fn remove(&self, path: &Path) -> Result<(), SandboxError> {
        let mapping = idmap::decide()?;
        if !matches!(mapping.mode, IdMode::Subordinate { .. }) {
            return fsutil::remove_tree(path).map_err(|e| SandboxError::Remove {
                path: path.to_path_buf(),
                source: e.into(),
            });
        }
        let result = self.call(
            Task::Remove {
                path: path.to_path_buf(),
            },
            &OutputSink::discard(),
        )?;
        result.finish()
    }

    fn call(&self, task: Task, sink: &OutputSink) -> Result<CallResult, SandboxError> {
        // After interrupt_all no step starts; removals still run (the build unwinds).
        let is_step = matches!(task, Task::Run(_));
        if is_step && SHUTTING_DOWN.load(Ordering::SeqCst) {
            return Err(SandboxError::Interrupted);
        }
        let mapping = idmap::decide()?;
        let io = |op: &'static str| move |source| SandboxError::Io { op, source };
        let (mut control, child_end) =
            UnixStream::pair().map_err(io("creating the control socket"))?;
        let (output_reader, output_writer) =
            std::io::pipe().map_err(io("creating the output pipe"))?;
        let output_writer2 = output_writer
            .try_clone()
            .map_err(io("creating the output pipe"))?;

        let mut cmd = Command::new(&self.helper);
        cmd.arg(CHILD_ARG)
            .env_clear()
            .current_dir("/")
            .stdin(Stdio::from(OwnedFd::from(child_end)))
            .stdout(Stdio::from(output_writer))
            .stderr(Stdio::from(output_writer2));
        let stopped = Arc::new(AtomicBool::new(false));
        let mut child = {
            // Steps register under the lock so that interrupt_all sees every one it could
            // miss. Removals and probes are short and not interrupted: the build unwinds
            // through them.
            let mut live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
            let child = cmd.spawn().map_err(|source| SandboxError::Spawn {
                helper: self.helper.clone(),
                source,
            })?;
            if is_step {
                live.push(Live {
                    pid: child.id(),
                    stopped: stopped.clone(),
                });
            }
            child
        };
        // The child's ends of the pipes live in `cmd`; close them here so EOF can come.
        drop(cmd);
        let pid = child.id();

        let tail_lines = sink.tail_lines();
        let sink = sink.clone();
        let output = std::thread::Builder::new()
            .name("strata-sandbox-output".into())
            .spawn(move || pump_output(output_reader, &sink, tail_lines));
        let output = match output {
            Ok(handle) => handle,
            Err(source) => {
                unregister(pid);
                let _ = child.kill();
                let _ = child.wait();
                return Err(SandboxError::Io {
                    op: "starting the output thread",
                    source,
                });
            }
        };

        let mut result = CallResult::default();
        let request = Request {
            parent_pid: std::process::id() as i32,
            ids: mapping.mode,
            legacy_overlay: self.legacy_overlay,
            task,
        };
        if let Err(e) = write_message(&mut control, &request) {
            result.protocol = Some(format!("sending the request: {e}"));
        }
        if is_step && SHUTTING_DOWN.load(Ordering::SeqCst) {
            // interrupt_all ran between the check above and our registration.
            stopped.store(true, Ordering::SeqCst);
            let _ = child.kill();
        }
        let mut buf = Vec::new();
        while result.protocol.is_none() {
            match read_message::<Report>(&mut control, &mut buf) {
                Ok(None) => break,
                Ok(Some(report)) => match report {
                    Report::MapRequest => {
                        let answer = match idmap::apply(&mapping, pid as i32) {
                            Ok(()) => MAP_OK,
                            Err(e) => {
                                result.error.get_or_insert(e);
                                MAP_FAILED
                            }
                        };
                        let _ = control.write_all(&[answer]);
                    }
                    Report::Error(e) => {
                        result.error.get_or_insert(e.into());
                    }
                    Report::CreatedTargets(paths) => result.created = Some(paths),
                    Report::Status(s) => result.status = Some(s),
                    Report::Interrupted => stopped.store(true, Ordering::SeqCst),
                    Report::Done => result.done = true,
                },
                Err(e) => result.protocol = Some(format!("reading reports: {e}")),
            }
        }
        drop(control);
        if result.protocol.is_some() {
            let _ = child.kill();
        }
        // Out of LIVE before reaping: interrupt_all must never signal a recycled pid. (The
        // helper is done with the step by now: the control socket closed.)
        unregister(pid);
        let exit = child.wait();
        result.tail = output.join().unwrap_or_default();
        result.exit = exit.ok().map(|s| s.to_string());
        if stopped.load(Ordering::SeqCst) {
            return Err(SandboxError::Interrupted);
        }
        Ok(result)
    }
}

fn unregister(pid: u32) {
    let mut live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    live.retain(|l| l.pid != pid);
}

#[derive(Default)]
struct CallResult {
    error: Option<SandboxError>,
    status: Option<crate::spec::StepStatus>,
    created: Option<Vec<String>>,
    done: bool,
    protocol: Option<String>,
    tail: Vec<String>,
    exit: Option<String>,
}

impl CallResult {
    fn died(self) -> SandboxError {
        if let Some(detail) = self.protocol {
            return SandboxError::Protocol { detail };
        }
        let mut detail = format!(
            "helper {}",
            self.exit.unwrap_or_else(|| "status unknown".into())
        );
        if !self.tail.is_empty() {
            detail.push_str("; its last output: ");
            detail.push_str(&self.tail.join(" | "));
        }
        SandboxError::HelperDied { detail }
    }

    fn finish(mut self) -> Result<(), SandboxError> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        if self.done { Ok(()) } else { Err(self.died()) }
    }
}

/// Forward output to the sink and keep the last `tail_lines` lines (each capped).
fn pump_output(
    mut reader: std::io::PipeReader,
    sink: &OutputSink,
    tail_lines: usize,
) -> Vec<String> {
    let mut lines: VecDeque<Vec<u8>> = VecDeque::new();
    let mut current: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; OUTPUT_CHUNK_BYTES];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let chunk = &buf[..n];
        sink.emit(chunk);
        if tail_lines == 0 {
            continue;
        }
        for part in chunk.split_inclusive(|&b| b == b'\n') {
            let (body, ends) = match part.split_last() {
                Some((b'\n', body)) => (body, true),
                _ => (part, false),
            };
            let room = crate::spec::MAX_TAIL_LINE_BYTES.saturating_sub(current.len());
            current.extend_from_slice(&body[..body.len().min(room)]);
            if ends {
                lines.push_back(std::mem::take(&mut current));
                if lines.len() > tail_lines {
                    lines.pop_front();
                }
            }
        }
    }
    if !current.is_empty() && tail_lines > 0 {
        lines.push_back(current);
        if lines.len() > tail_lines {
            lines.pop_front();
        }
    }
    lines
        .into_iter()
        .map(|l| {
            String::from_utf8_lossy(&l)
                .trim_end_matches('\r')
                .to_string()
        })
        .collect()
}

fn invalid(field: &'static str, reason: impl Into<String>) -> SandboxError {
    SandboxError::InvalidSpec {
        field,
        reason: reason.into(),
    }
}

fn validate(spec: &RunSpec) -> Result<(), SandboxError> {
    let nul = |s: &str| s.contains('\0');
    if spec.args.is_empty() || spec.args[0].is_empty() {
        return Err(invalid("args", "no program to run"));
    }
    if spec.args.iter().any(|a| nul(a)) {
        return Err(invalid("args", "an argument contains a NUL byte"));
    }
    if let Some(e) = spec
        .env
        .iter()
        .find(|e| nul(e) || !e.contains('=') || e.starts_with('='))
    {
        return Err(invalid("env", format!("{e:?} is not KEY=VALUE")));
    }
    if !spec.cwd.starts_with('/') || nul(&spec.cwd) {
        return Err(invalid(
            "cwd",
            format!("{:?} is not an absolute path", spec.cwd),
        ));
    }
    if nul(&spec.user) {
        return Err(invalid("user", "contains a NUL byte"));
    }
    if spec.hostname.len() > MAX_HOSTNAME_BYTES || nul(&spec.hostname) {
        return Err(invalid(
            "hostname",
            format!(
                "{:?} is longer than {MAX_HOSTNAME_BYTES} bytes or has a NUL",
                spec.hostname
            ),
        ));
    }
    let dir = |field: &'static str, p: &Path| -> Result<(), SandboxError> {
        if !p.is_absolute() {
            return Err(invalid(field, format!("{} is not absolute", p.display())));
        }
        if !p.is_dir() {
            return Err(invalid(
                field,
                format!("{} is not a directory", p.display()),
            ));
        }
        Ok(())
    };
    match &spec.rootfs {
        Rootfs::Overlay { lower, upper, work } => {
            if lower.is_empty() {
                return Err(invalid(
                    "rootfs.lower",
                    "overlayfs needs at least one lower dir (an empty one for FROM scratch)",
                ));
            }
            for l in lower {
                dir("rootfs.lower", l)?;
            }
            dir("rootfs.upper", upper)?;
            dir("rootfs.work", work)?;
            if upper == work {
                return Err(invalid("rootfs.work", "must differ from upper"));
            }
            let dev = |p: &Path| {
                std::fs::metadata(p)
                    .map(|m| std::os::unix::fs::MetadataExt::dev(&m))
                    .ok()
            };
            if dev(upper) != dev(work) {
                return Err(invalid(
                    "rootfs.work",
                    format!(
                        "{} and {} must be on the same filesystem",
                        upper.display(),
                        work.display()
                    ),
                ));
            }
            // f_type is i64 here but i32/u32 on other architectures.
            #[allow(clippy::unnecessary_cast)]
            let on_overlay = rustix::fs::statfs(upper.as_path())
                .is_ok_and(|fs| fs.f_type as i64 == OVERLAYFS_SUPER_MAGIC);
            if on_overlay {
                return Err(SandboxError::OverlayUnavailable {
                    upper: upper.clone(),
                    detail:
                        "the upper dir is itself on overlayfs (strata running in a container?): \
                             put it on another filesystem (a volume, tmpfs) or use Rootfs::Dir"
                            .into(),
                    source: std::io::Error::from_raw_os_error(libc::EINVAL),
                });
            }
        }
        Rootfs::Dir(d) => dir("rootfs", d)?,
    }
    for m in &spec.mounts {
        let t = m.target();
        if !t.starts_with('/') || nul(t) || fsutil::clean_components(t).is_empty() {
            return Err(invalid(
                "mounts",
                format!("target {t:?} must be an absolute path below /"),
            ));
        }
        if let MountSpec::Bind { source, .. } = m
            && (!source.is_absolute() || !source.exists())
        {
            return Err(invalid(
                "mounts",
                format!(
                    "bind source {} does not exist or is not absolute",
                    source.display()
                ),
            ));
        }
    }
    Ok(())
}

/// Remove the mount targets a run created in a plain-directory root, if they are still the
/// empty directory or file we made. Resolved inside the root, leaves never followed: a step
/// that replaced a stub with a symlink gets its symlink kept, never followed (CVE-2024-23652).
fn remove_created_targets(root: &Path, created: &[String]) {
    let Ok(root_fd) = rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    ) else {
        return;
    };
    for rel in created.iter().rev() {
        let comps = fsutil::clean_components(rel);
        let Some((leaf, parents)) = comps.split_last() else {
            continue;
        };
        let Ok(parent) = fsutil::in_root(
            root_fd.as_fd(),
            &parents.join("/"),
            OFlags::PATH | OFlags::DIRECTORY,
        ) else {
            continue;
        };
        let Ok(st) = rustix::fs::statat(&parent, leaf.as_str(), AtFlags::SYMLINK_NOFOLLOW) else {
            continue;
        };
        match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory => {
                let _ = rustix::fs::unlinkat(&parent, leaf.as_str(), AtFlags::REMOVEDIR);
            }
            FileType::RegularFile if st.st_size == 0 => {
                let _ = rustix::fs::unlinkat(&parent, leaf.as_str(), AtFlags::empty());
            }
            _ => {}
        }
    }
}

/// A fresh upper/work pair for one overlay run, in a new directory under a parent the caller
/// chooses (it must be on a filesystem that can hold an overlay upper: not overlayfs itself,
/// and with user xattrs when rootless). Remove it with [`Sandbox::remove`] once the diff was
/// turned into a layer (or on failure).
#[derive(Debug, Clone)]
pub struct StepDirs {
    base: PathBuf,
    upper: PathBuf,
    work: PathBuf,
}

static STEP_DIR_COUNTER: AtomicU64 = AtomicU64::new(0);

impl StepDirs {
    pub fn create(parent: &Path) -> std::io::Result<StepDirs> {
        use std::os::unix::fs::DirBuilderExt;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let base = loop {
            let n = STEP_DIR_COUNTER.fetch_add(1, Ordering::Relaxed);
            let candidate = parent.join(format!(
                "strata-step-{}-{n}-{nanos:08x}",
                std::process::id()
            ));
            match std::fs::DirBuilder::new().mode(0o700).create(&candidate) {
                Ok(()) => break candidate,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        };
        let upper = base.join("upper");
        let work = base.join("work");
        std::fs::DirBuilder::new().mode(0o755).create(&upper)?;
        std::fs::DirBuilder::new().mode(0o700).create(&work)?;
        Ok(StepDirs { base, upper, work })
    }

    /// The directory holding `upper` and `work` (what to remove).
    pub fn base(&self) -> &Path {
        &self.base
    }

    /// After a run: exactly the step's changes, in overlayfs form.
    pub fn upper(&self) -> &Path {
        &self.upper
    }

    pub fn work(&self) -> &Path {
        &self.work
    }

    /// The rootfs for a run over `lower` (top-most first).
    pub fn overlay(&self, lower: Vec<PathBuf>) -> Rootfs {
        Rootfs::Overlay {
            lower,
            upper: self.upper.clone(),
            work: self.work.clone(),
        }
    }
}
