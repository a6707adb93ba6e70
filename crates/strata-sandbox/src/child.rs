//! The helper process: a fresh, single-threaded copy of the executable started by
//! [`crate::Sandbox::run`] with [`CHILD_ARG`]. It enters the namespaces and forks the pid-1
//! child, which sets up the container and execs the step (`setup.rs`); the helper waits and
//! reports the status.
//!
//! ```text
//! strata (any threads) ──spawn──► helper: setsid, [user ns + maps], unshare(mnt pid ipc uts [net])
//!                                  └─fork─► pid 1 of the new pid ns: mounts, pivot_root,
//!                                           setuid, exec ──► the step is pid 1
//! ```
//!
//! Teardown: when pid 1 (the step) exits, the kernel kills every other process of its pid
//! namespace; when the helper exits too, the mount namespace and every mount in it go away.
//! The helper gets SIGTERM from the parent ([`crate::interrupt_all`]) or as its parent-death
//! signal, and answers by SIGKILLing pid 1 through a pidfd (never a stale pid). Pid 1 has
//! SIGKILL as its own parent-death signal in case the helper is killed outright.

use std::ffi::OsStr;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use rustix::process::{Pid, PidfdFlags, Signal, WaitOptions};
use rustix::thread::UnshareFlags;

use crate::error::WireError;
use crate::fsutil;
use crate::protocol::{
    CHILD_ARG, IdMode, MAP_OK, Report, Request, Task, read_message, write_message,
};
use crate::setup;
use crate::spec::{Network, StepStatus};
use crate::sys;

/// pidfd of the pid-1 child, for the SIGTERM handler (-1 before it exists).
static CHILD_PIDFD: AtomicI32 = AtomicI32::new(-1);
static STOP_REQUESTED: AtomicBool = AtomicBool::new(false);
/// Exit code of the helper when it is stopped before the step started (128 + SIGTERM).
const STOPPED_EXIT: i32 = 143;

extern "C" fn on_stop(_sig: libc::c_int) {
    STOP_REQUESTED.store(true, Ordering::SeqCst);
    let fd = CHILD_PIDFD.load(Ordering::SeqCst);
    if fd >= 0 {
        sys::pidfd_signal_raw(fd, libc::SIGKILL);
    } else {
        sys::exit_now(STOPPED_EXIT);
    }
}

/// If this process was started as the sandbox helper, do the helper's work and exit;
/// otherwise return at once. Call it first thing in `main`, before any thread exists (the
/// strata binary and the test helper do): the helper must be single-threaded to enter a user
/// namespace and to fork safely.
pub fn init_if_requested() {
    if std::env::args_os().nth(1).as_deref() != Some(OsStr::new(CHILD_ARG)) {
        return;
    }
    sys::exit_now(helper_main());
}

fn single_threaded() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:").map(|v| v.trim() == "1"))
        })
        .unwrap_or(false)
}

fn helper_main() -> i32 {
    sys::unblock_all();
    // fd 0 is the control socket; move it out of the way (close-on-exec) and give the step
    // /dev/null as stdin for now (pid 1 replaces it with the container's own node).
    let control = match rustix::io::fcntl_dupfd_cloexec(rustix::stdio::stdin(), 3) {
        Ok(fd) => fd,
        Err(_) => return 1,
    };
    if let Ok(null) = rustix::fs::open("/dev/null", OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
    {
        let _ = rustix::stdio::dup2_stdin(&null);
    }
    let mut control = UnixStream::from(control);
    let mut buf = Vec::new();
    let request: Request = match read_message(&mut control, &mut buf) {
        Ok(Some(r)) => r,
        _ => return 1,
    };
    // Die with the parent; if it already died, stop now.
    let _ = rustix::process::set_parent_process_death_signal(Some(Signal::TERM));
    if rustix::process::getppid().map(|p| p.as_raw_nonzero().get()) != Some(request.parent_pid) {
        return 1;
    }
    // Own session: terminal signals (Ctrl-C) reach strata, which decides what to stop.
    let _ = rustix::process::setsid();
    for sig in [libc::SIGTERM, libc::SIGHUP, libc::SIGINT] {
        let _ = sys::set_handler(sig, on_stop);
    }
    let report = |control: &mut UnixStream, r: &Report| {
        let _ = write_message(control, r);
    };
    if !single_threaded() {
        report(
            &mut control,
            &Report::Error(WireError::setup(
                "helper start",
                "init_if_requested",
                "must be called before any thread is started",
                Errno::INVAL,
            )),
        );
        return 1;
    }
    if let Err(e) = enter_user_namespace(request.ids, &mut control) {
        report(&mut control, &Report::Error(e));
        return 1;
    }
    let result = match request.task {
        Task::Run(spec) => run_step(&spec, request.ids, request.legacy_overlay, &mut control),
        Task::ProbeOverlay { dir } => probe_overlay(&dir, request.ids).map(|()| Report::Done),
        Task::Remove { path } => fsutil::remove_tree(&path)
            .map(|()| Report::Done)
            .map_err(|e| WireError::Remove {
                path,
                errno: e.raw_os_error(),
            }),
    };
    match result {
        Ok(r) => {
            report(&mut control, &r);
            0
        }
        Err(e) => {
            report(&mut control, &Report::Error(e));
            1
        }
    }
}

fn write_proc(path: &str, contents: &str) -> Result<(), WireError> {
    std::fs::write(path, contents).map_err(|e| {
        WireError::setup(
            "user namespace",
            "write",
            path,
            Errno::from_io_error(&e).unwrap_or(Errno::IO),
        )
    })
}

fn enter_user_namespace(ids: IdMode, control: &mut UnixStream) -> Result<(), WireError> {
    if ids == IdMode::Root {
        return Ok(());
    }
    sys::unshare(UnshareFlags::NEWUSER)
        .map_err(|e| WireError::setup("user namespace", "unshare(CLONE_NEWUSER)", "", e))?;
    match ids {
        IdMode::Root => {}
        IdMode::Single { uid, gid } => {
            write_proc("/proc/self/setgroups", "deny")?;
            write_proc("/proc/self/uid_map", &format!("0 {uid} 1\n"))?;
            write_proc("/proc/self/gid_map", &format!("0 {gid} 1\n"))?;
        }
        IdMode::Subordinate { .. } => {
            write_message(&mut *control, &Report::MapRequest).map_err(|e| {
                WireError::setup(
                    "user namespace",
                    "write",
                    "control socket",
                    Errno::from_io_error(&e).unwrap_or(Errno::IO),
                )
            })?;
            let mut answer = [0u8; 1];
            let ok = matches!(control.read(&mut answer), Ok(1)) && answer[0] == MAP_OK;
            if !ok {
                // The parent reports the newuidmap error itself.
                sys::exit_now(1);
            }
        }
    }
    // We are root of the new namespace now (our uid is mapped to 0).
    if rustix::process::geteuid().as_raw() != 0 {
        return Err(WireError::setup(
            "user namespace",
            "geteuid",
            "uid 0 not mapped after uid_map was written",
            Errno::PERM,
        ));
    }
    Ok(())
}

fn run_step(
    spec: &crate::RunSpec,
    ids: IdMode,
    legacy_overlay: bool,
    control: &mut UnixStream,
) -> Result<Report, WireError> {
    let mut flags = UnshareFlags::NEWNS
        | UnshareFlags::NEWPID
        | UnshareFlags::NEWIPC
        | UnshareFlags::NEWUTS
        | UnshareFlags::NEWCGROUP;
    if spec.network == Network::None {
        flags |= UnshareFlags::NEWNET;
    }
    sys::unshare(flags).map_err(|e| {
        WireError::setup(
            "namespaces",
            "unshare(CLONE_NEWNS|NEWPID|NEWIPC|NEWUTS|NEWCGROUP[|NEWNET])",
            "",
            e,
        )
    })?;

    // No stop signal between fork and storing the pidfd: the handler must see either no
    // child (and just exit) or a pidfd it can kill.
    let mask = sys::block(&[libc::SIGTERM, libc::SIGHUP, libc::SIGINT]);
    let pid = sys::fork().map_err(|e| WireError::setup("pid namespace", "fork", "", e))?;
    let Some(pid) = pid else {
        // pid 1 of the new pid namespace.
        let _ = rustix::process::set_parent_process_death_signal(Some(Signal::KILL));
        for sig in [libc::SIGTERM, libc::SIGHUP, libc::SIGINT] {
            sys::set_default(sig);
        }
        sys::restore(&mask);
        let mut created = Vec::new();
        let e = setup::setup_and_exec(spec, ids, legacy_overlay, control, &mut created);
        if matches!(spec.rootfs, crate::Rootfs::Dir(_)) && !created.is_empty() {
            let _ = write_message(&mut *control, &Report::CreatedTargets(created));
        }
        let code = if matches!(e, WireError::Exec { .. }) {
            setup::exec_failed_code()
        } else {
            setup::SETUP_FAILED
        };
        let _ = write_message(&mut *control, &Report::Error(e));
        sys::exit_now(code);
    };
    let child = Pid::from_raw(pid)
        .ok_or_else(|| WireError::setup("pid namespace", "fork", "returned pid 0", Errno::INVAL))?;
    let pidfd: Option<OwnedFd> = rustix::process::pidfd_open(child, PidfdFlags::empty()).ok();
    if let Some(fd) = &pidfd {
        use std::os::fd::AsRawFd;
        CHILD_PIDFD.store(fd.as_fd().as_raw_fd(), Ordering::SeqCst);
    }
    sys::restore(&mask);
    if STOP_REQUESTED.load(Ordering::SeqCst) {
        let _ = rustix::process::kill_process(child, Signal::KILL);
    }
    let status = loop {
        match rustix::process::waitpid(Some(child), WaitOptions::empty()) {
            Ok(Some((_, status))) => break status,
            Ok(None) => continue,
            Err(Errno::INTR) => continue,
            Err(e) => {
                return Err(WireError::setup("pid namespace", "waitpid", "", e));
            }
        }
    };
    CHILD_PIDFD.store(-1, Ordering::SeqCst);
    drop(pidfd);
    if STOP_REQUESTED.load(Ordering::SeqCst) {
        return Ok(Report::Interrupted);
    }
    Ok(Report::Status(
        match (status.exit_status(), status.terminating_signal()) {
            (Some(code), _) => StepStatus::Exited(code),
            (None, Some(sig)) => StepStatus::Signaled(sig),
            _ => StepStatus::Exited(-1),
        },
    ))
}

/// Mount an overlay like a real run would (same privileges and options) over dirs created
/// under `dir`, delete a lower file through it (a whiteout must be creatable), then remove
/// the dirs.
fn probe_overlay(dir: &std::path::Path, ids: IdMode) -> Result<(), WireError> {
    sys::unshare(UnshareFlags::NEWNS)
        .map_err(|e| WireError::setup("overlay probe", "unshare(CLONE_NEWNS)", "", e))?;
    rustix::mount::mount_change(
        "/",
        rustix::mount::MountPropagationFlags::PRIVATE | rustix::mount::MountPropagationFlags::REC,
    )
    .map_err(|e| WireError::setup("overlay probe", "mount(MS_PRIVATE)", "/", e))?;
    let base = dir.join(format!(".strata-overlay-probe-{}", std::process::id()));
    let result = probe_in(&base, ids);
    let _ = fsutil::remove_tree(&base);
    result
}

fn probe_in(base: &std::path::Path, ids: IdMode) -> Result<(), WireError> {
    let io = |what: &str| {
        let what = what.to_string();
        move |e: std::io::Error| {
            WireError::setup(
                "overlay probe",
                "mkdir/write",
                what,
                Errno::from_io_error(&e).unwrap_or(Errno::IO),
            )
        }
    };
    std::fs::create_dir(base).map_err(io(&base.display().to_string()))?;
    for d in ["lower", "upper", "work"] {
        std::fs::create_dir(base.join(d)).map_err(io(&base.join(d).display().to_string()))?;
    }
    std::fs::write(base.join("lower/f"), b"x").map_err(io("lower/f"))?;
    let (lower, upper, work) = (base.join("lower"), base.join("upper"), base.join("work"));
    let unavailable = |e: Errno| WireError::OverlayUnavailable {
        upper: upper.to_path_buf(),
        detail: String::new(),
        errno: e.raw_os_error(),
    };
    let base_fd = rustix::fs::open(
        base,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(unavailable)?;
    let s = |p: &std::path::Path| p.display().to_string();
    // The same options and fallbacks as a real run.
    let mnt = setup::mount_overlay(
        base_fd.as_fd(),
        &[s(&lower)],
        &s(&upper),
        &s(&work),
        ids != IdMode::Root,
        false,
        &upper,
    )?;
    rustix::fs::unlinkat(&mnt, "f", rustix::fs::AtFlags::empty()).map_err(unavailable)?;
    drop(mnt);
    let st = rustix::fs::statat(
        rustix::fs::CWD,
        upper.join("f").as_path(),
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(unavailable)?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::CharacterDevice {
        return Err(unavailable(Errno::NOTSUP));
    }
    Ok(())
}
