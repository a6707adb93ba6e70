//! The system calls rustix does not wrap (fork, execve, signal dispositions, mount_setattr,
//! close_range, an interface ioctl), each behind a small safe function. All `unsafe` of the
//! crate lives here.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use rustix::io::Errno;

fn errno() -> Errno {
    Errno::from_io_error(&io::Error::last_os_error()).unwrap_or(Errno::IO)
}

/// `fork()`: `Ok(None)` in the child, `Ok(Some(pid))` in the parent.
///
/// Only called from the helper process, which is single-threaded (checked at start), so the
/// child is a complete copy and may run any code.
pub(crate) fn fork() -> Result<Option<i32>, Errno> {
    // SAFETY: the helper is single-threaded (init_if_requested checks /proc/self/status before
    // doing anything), so no lock can be held by another thread at the fork and the child may
    // allocate and run arbitrary Rust code.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(errno()),
        0 => Ok(None),
        pid => Ok(Some(pid)),
    }
}

/// `execve(path, argv, envp)`; returns only on failure.
pub(crate) fn execve(path: &CStr, argv: &[CString], envp: &[CString]) -> Errno {
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let mut envp_ptrs: Vec<*const libc::c_char> = envp.iter().map(|e| e.as_ptr()).collect();
    envp_ptrs.push(std::ptr::null());
    // SAFETY: `path` and every element are NUL-terminated C strings that outlive the call;
    // both pointer arrays are NULL-terminated as execve requires.
    unsafe { libc::execve(path.as_ptr(), argv_ptrs.as_ptr(), envp_ptrs.as_ptr()) };
    errno()
}

/// `_exit(code)`: leave without running destructors or atexit handlers (a forked child must
/// not flush the parent's buffers twice).
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: _exit has no preconditions and never returns.
    unsafe { libc::_exit(code) }
}

/// Install `handler` for `sig` (no SA_RESTART: a blocking wait returns EINTR so the caller
/// can look at what the handler recorded).
pub(crate) fn set_handler(sig: i32, handler: extern "C" fn(libc::c_int)) -> Result<(), Errno> {
    // SAFETY: sigaction is plain old data; zeroed is a valid initial value.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = handler as *const () as libc::sighandler_t;
    // SAFETY: `action.sa_mask` is a valid sigset_t to initialise.
    unsafe { libc::sigemptyset(&mut action.sa_mask) };
    // SAFETY: `action` is fully initialised; the handler only performs async-signal-safe
    // operations (atomics, pidfd_send_signal, _exit) — see child.rs.
    if unsafe { libc::sigaction(sig, &action, std::ptr::null_mut()) } == -1 {
        return Err(errno());
    }
    Ok(())
}

/// Reset `sig` to its default disposition.
pub(crate) fn set_default(sig: i32) {
    // SAFETY: SIG_DFL is always a valid disposition; the return value (the old handler) is
    // not needed.
    unsafe { libc::signal(sig, libc::SIG_DFL) };
}

/// A signal mask saved by [`block`], restored with [`restore`].
pub(crate) struct SavedMask(libc::sigset_t);

/// Block `signals` for the (single) thread, returning the previous mask.
pub(crate) fn block(signals: &[i32]) -> SavedMask {
    // SAFETY: sigset_t is plain old data; sigemptyset initialises it.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, exclusively borrowed sigset_t.
    unsafe { libc::sigemptyset(&mut set) };
    for &s in signals {
        // SAFETY: `set` is initialised; an invalid signal number only makes this fail.
        unsafe { libc::sigaddset(&mut set, s) };
    }
    // SAFETY: both pointers are valid sigset_t; SIG_BLOCK with a valid set cannot fail.
    unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, &mut old) };
    SavedMask(old)
}

pub(crate) fn restore(mask: &SavedMask) {
    // SAFETY: `mask.0` was filled by sigprocmask in `block`.
    unsafe { libc::sigprocmask(libc::SIG_SETMASK, &mask.0, std::ptr::null_mut()) };
}

/// Unblock every signal (a process started by a parent that blocked some inherits its mask).
pub(crate) fn unblock_all() {
    // SAFETY: as in `block`.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t.
    unsafe { libc::sigemptyset(&mut set) };
    // SAFETY: valid set pointer, old mask not requested.
    unsafe { libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut()) };
}

/// `mount_setattr(fd, "", AT_EMPTY_PATH [| AT_RECURSIVE], set, clear)` on a mount fd.
pub(crate) fn mount_setattr(
    fd: BorrowedFd<'_>,
    recursive: Recursive,
    attr_set: u64,
    attr_clr: u64,
) -> Result<(), Errno> {
    let mut attr = libc::mount_attr {
        attr_set,
        attr_clr,
        propagation: 0,
        userns_fd: 0,
    };
    let mut flags = libc::AT_EMPTY_PATH as libc::c_uint;
    if recursive == Recursive::Yes {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    // SAFETY: the path is a valid empty C string, `attr` is a valid mount_attr whose size is
    // passed, and `fd` is an open descriptor for the duration of the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            flags,
            &mut attr as *mut libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if r == -1 { Err(errno()) } else { Ok(()) }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Recursive {
    No,
    Yes,
}

/// Mark every descriptor from `first` up as close-on-exec (`close_range(first, ~0,
/// CLOSE_RANGE_CLOEXEC)`, Linux 5.11): none reaches the step (CVE-2024-21626), yet the control
/// socket stays usable to report an execve failure.
pub(crate) fn cloexec_from(first: u32) -> Result<(), Errno> {
    // SAFETY: close_range only changes descriptor flags; no memory is involved.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if r == -1 { Err(errno()) } else { Ok(()) }
}

/// Bring `lo` up in the current network namespace (`SIOCSIFFLAGS`), as `ip link set lo up`.
pub(crate) fn loopback_up() -> Result<(), Errno> {
    let sock = inet_dgram_socket()?;
    // SAFETY: ifreq is plain old data; zeroed is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: `sock` is an open socket, `req` a valid ifreq with a NUL-terminated name.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } == -1 {
        return Err(errno());
    }
    // SAFETY: reading the union field the kernel just filled (ifru_flags).
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    req.ifr_ifru.ifru_flags = flags | (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    // SAFETY: as above.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } == -1 {
        return Err(errno());
    }
    Ok(())
}

/// An `AF_INET` datagram socket, the handle `SIOC[GS]IFFLAGS` need (made with libc: the
/// workspace's rustix is built without its `net` feature).
fn inet_dgram_socket() -> Result<std::os::fd::OwnedFd, Errno> {
    use std::os::fd::FromRawFd;
    // SAFETY: socket() has no memory arguments.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd == -1 {
        return Err(errno());
    }
    // SAFETY: `fd` was just returned by socket() and is owned by nobody else.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// Send `sig` through a pidfd held in a raw integer (for signal handlers, which cannot hold
/// an `OwnedFd`). Async-signal-safe: a single system call.
pub(crate) fn pidfd_signal_raw(pidfd: i32, sig: i32) {
    // SAFETY: pidfd_send_signal with a NULL siginfo and no flags touches no memory; a stale or
    // invalid descriptor only makes it fail.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd,
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
}

/// `unshare(flags)`.
pub(crate) fn unshare(flags: rustix::thread::UnshareFlags) -> Result<(), Errno> {
    debug_assert!(!flags.contains(rustix::thread::UnshareFlags::FILES));
    // SAFETY: rustix marks unshare unsafe because of CLONE_FILES, which would let threads see
    // different descriptor tables; it is never passed here, and the helper is
    // single-threaded anyway.
    unsafe { rustix::thread::unshare_unsafe(flags) }
}

/// Join a new anonymous session keyring (`keyctl(KEYCTL_JOIN_SESSION_KEYRING, NULL)`), as
/// runc does: the step must not see the keys of strata's login session.
pub(crate) fn new_session_keyring() -> Result<(), Errno> {
    /// From linux/keyctl.h.
    const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
    // SAFETY: a NULL name asks for an anonymous keyring; no memory is passed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_JOIN_SESSION_KEYRING,
            std::ptr::null::<libc::c_char>(),
        )
    };
    if r == -1 { Err(errno()) } else { Ok(()) }
}
