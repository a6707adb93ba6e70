//! Inside the namespaces: build the container's mount tree, switch to it, become the step's
//! user and exec. Runs in the pid-1 child (a procfs must be mounted from inside its pid
//! namespace) and ends in `execve`: no strata code stays in the container (CVE-2019-5736:
//! `/proc/1/exe` is the step's own program, never the strata binary).
//!
//! Mount tree, built with the new mount API so that nothing is looked up by host path after
//! the start: every target is resolved with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`
//! below the new root and mounted with `move_mount` onto that fd (CVE-2025-31133 class: a base
//! image with `/dev -> /tmp/probe` cannot redirect a mount to the host).
//!
//! ```text
//! scratch tmpfs (attached over the caller's `work` dir in our private mount namespace;
//! that dir is still reachable by fd)
//! ├── stub-static/ or stub-upper/  the stub layer (see below)
//! ├── hosts, resolv.conf   contents from the spec
//! └── root/  ← overlay(lower = stub layer + image layers, upper, work) = the new /
//!     ├── proc  procfs of the new pid namespace (sys, sysrq-trigger, irq, bus, fs read-only;
//!     │         kcore, keys, timer_list, sched_debug masked)
//!     ├── dev   tmpfs: null zero full random urandom tty (mknod as root, bind-mounted host
//!     │         nodes rootless), pts (devpts newinstance), ptmx, shm, fd/stdin/stdout/stderr
//!     ├── sys   sysfs read-only (rootless with host network: host /sys bound read-only)
//!     ├── etc/hosts, etc/resolv.conf  bound from scratch when the spec gives them
//!     └── caller mounts, parents before children
//! ```
//!
//! The stub layer (Docker's "init layer"): mount targets missing from the image live in a
//! layer of their own on top of the image's, so the step's upper dir never contains mount
//! stubs and nothing needs cleaning after the run (BuildKit's stub cleanup followed symlinks:
//! CVE-2024-23652). `stubs.rs` writes it directly when the layers are simple; otherwise a
//! first overlay (upper dir `stub-upper`) is mounted, the targets are created through it
//! (symlinked system targets replaced, caller targets followed inside the root), and it is
//! unmounted. Either way the parents copied into the stub layer keep the image's metadata.

use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;

use rustix::fs::{FileType, Mode, OFlags};
use rustix::io::Errno;
use rustix::mount::{
    FsMountFlags, FsOpenFlags, MountAttrFlags, MountPropagationFlags, MoveMountFlags,
    OpenTreeFlags, UnmountFlags,
};

use crate::error::WireError;
use crate::fsutil::{self, Create, Kind, Policy};
use crate::protocol::{IdMode, Report, write_message};
use crate::spec::{Access, MountSpec, Network, Rootfs, RunSpec};
use crate::stubs::{self, StubLayer};
use crate::sys;

type R<T> = Result<T, WireError>;

/// Size of the `/dev` tmpfs (Docker's: device nodes and symlinks only).
const DEV_TMPFS_SIZE: &str = "65536k";
/// Size of `/dev/shm` (Docker's default shm size).
const SHM_TMPFS_SIZE: &str = "64m";
/// Size of the scratch tmpfs: stub layer entries and the hosts/resolv.conf files.
const SCRATCH_TMPFS_SIZE: &str = "16m";
/// Largest `/etc/passwd` or `/etc/group` read (CVE-2024-9676: a symlink to `/dev/zero` or a
/// huge file must not exhaust memory).
const MAX_ID_FILE_BYTES: u64 = 4 << 20;
/// The standard PATH Docker and BuildKit use when the image sets none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Exit code of the pid-1 child when setup fails (after reporting the error).
pub(crate) const SETUP_FAILED: i32 = 125;
/// Exit code when the program cannot be executed (shells use 126/127 likewise).
const EXEC_FAILED: i32 = 127;

/// Docker's default capability set for containers (and thus for `RUN`).
const DEFAULT_CAPS: rustix::thread::CapabilitySet = rustix::thread::CapabilitySet::CHOWN
    .union(rustix::thread::CapabilitySet::DAC_OVERRIDE)
    .union(rustix::thread::CapabilitySet::FOWNER)
    .union(rustix::thread::CapabilitySet::FSETID)
    .union(rustix::thread::CapabilitySet::KILL)
    .union(rustix::thread::CapabilitySet::SETGID)
    .union(rustix::thread::CapabilitySet::SETUID)
    .union(rustix::thread::CapabilitySet::SETPCAP)
    .union(rustix::thread::CapabilitySet::NET_BIND_SERVICE)
    .union(rustix::thread::CapabilitySet::NET_RAW)
    .union(rustix::thread::CapabilitySet::SYS_CHROOT)
    .union(rustix::thread::CapabilitySet::MKNOD)
    .union(rustix::thread::CapabilitySet::AUDIT_WRITE)
    .union(rustix::thread::CapabilitySet::SETFCAP);

fn err(stage: &str, syscall: &str, path: &str) -> impl FnOnce(Errno) -> WireError {
    let (stage, syscall, path) = (stage.to_string(), syscall.to_string(), path.to_string());
    move |e| WireError::setup(stage, syscall, path, e)
}

fn target_err(target: &str) -> impl FnOnce(fsutil::TargetError) -> WireError {
    let target = target.to_string();
    move |e| WireError::MountTarget {
        target,
        reason: e.reason,
    }
}

/// Messages the kernel logged on an fs context (`e overlay: …`), for error details.
fn fs_log(fs: &OwnedFd) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 512];
    for _ in 0..16 {
        match rustix::io::read(fs, &mut buf) {
            Ok(n) if n > 0 => out.push(String::from_utf8_lossy(&buf[..n]).trim().to_string()),
            _ => break,
        }
    }
    out.join("; ")
}

/// A detached mount of a new `fstype` filesystem with `options` (`None` value = flag).
fn new_fs(
    stage: &str,
    fstype: &str,
    options: &[(&str, Option<&str>)],
    attrs: MountAttrFlags,
) -> R<OwnedFd> {
    let fs = rustix::mount::fsopen(fstype, FsOpenFlags::FSOPEN_CLOEXEC)
        .map_err(err(stage, "fsopen", fstype))?;
    // What /proc/mounts shows as the source (the new mount API leaves "none").
    let _ = rustix::mount::fsconfig_set_string(&fs, "source", fstype);
    for (key, value) in options {
        let r = match value {
            Some(v) => rustix::mount::fsconfig_set_string(&fs, *key, *v),
            None => rustix::mount::fsconfig_set_flag(&fs, *key),
        };
        r.map_err(|e| {
            let what = match value {
                Some(v) => format!("{key}={v}"),
                None => key.to_string(),
            };
            WireError::setup(stage, "fsconfig", format!("{fstype} {what}"), e)
                .with_detail(fs_log(&fs))
        })?;
    }
    rustix::mount::fsconfig_create(&fs).map_err(|e| {
        WireError::setup(stage, "fsconfig(CREATE)", fstype, e).with_detail(fs_log(&fs))
    })?;
    rustix::mount::fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, attrs)
        .map_err(|e| WireError::setup(stage, "fsmount", fstype, e).with_detail(fs_log(&fs)))
}

fn attach(stage: &str, what: &str, mount: &OwnedFd, target: BorrowedFd<'_>) -> R<()> {
    rustix::mount::move_mount(
        mount,
        "",
        target,
        "",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )
    .map_err(err(stage, "move_mount", what))
}

fn fd_path(fd: &impl AsRawFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

fn open_host_dir(stage: &str, path: &std::path::Path) -> R<OwnedFd> {
    rustix::fs::open(
        path,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(err(stage, "open", &path.display().to_string()))
}

/// How `lowerdir` is passed to overlayfs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LowerSyntax {
    /// One `lowerdir+` per layer (Linux 6.8+): no length limit, no escaping.
    Plus,
    /// One `lowerdir=a:b:…` string, which fsconfig caps at 256 bytes. The layers are reached
    /// through one- or two-character symlinks in the scratch tmpfs (the current directory
    /// during the mount), so about 90 layers fit.
    Joined,
}

fn base36(mut i: usize) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[i % 36]);
        i /= 36;
        if i == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

/// overlayfs shows the upper dir's own mode and owner for `/`: give it those of the image's
/// root (the top-most layer's), or a caller's 0700 scratch dir would lock other users out of
/// the whole filesystem (containers/storage does the same for its diff dirs).
fn match_root_dir(top_lower: &OwnedFd, upper: &std::path::Path) -> R<()> {
    let shown = upper.display().to_string();
    let want =
        rustix::fs::fstat(top_lower).map_err(err("overlay upper dir", "fstat", "top lower dir"))?;
    let dir = rustix::fs::open(
        upper,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(err("overlay upper dir", "open", &shown))?;
    let have = rustix::fs::fstat(&dir).map_err(err("overlay upper dir", "fstat", &shown))?;
    if (have.st_uid, have.st_gid) != (want.st_uid, want.st_gid) {
        match rustix::fs::fchown(
            &dir,
            Some(rustix::fs::Uid::from_raw(want.st_uid)),
            Some(rustix::fs::Gid::from_raw(want.st_gid)),
        ) {
            // EINVAL: the image root's owner is not mapped in this user namespace (it shows
            // as the overflow id); keep the caller's.
            Ok(()) | Err(Errno::INVAL) => {}
            Err(e) => return Err(err("overlay upper dir", "fchown", &shown)(e)),
        }
    }
    if have.st_mode & 0o7777 != want.st_mode & 0o7777 {
        rustix::fs::fchmod(&dir, Mode::from_raw_mode(want.st_mode & 0o7777)).map_err(err(
            "overlay upper dir",
            "fchmod",
            &shown,
        ))?;
    }
    Ok(())
}

/// Mount overlayfs over `lowers` (paths, top-most first), returning the detached mount.
/// Tries the modern syntax and every option first, then falls back step by step for older
/// kernels (`lowerdir+` since 6.8, `volatile` since 5.10).
pub(crate) fn mount_overlay(
    scratch: BorrowedFd<'_>,
    lowers: &[String],
    upper: &str,
    work: &str,
    rootless: bool,
    legacy_only: bool,
    upper_for_errors: &std::path::Path,
) -> R<OwnedFd> {
    let syntaxes: &[LowerSyntax] = if legacy_only {
        &[LowerSyntax::Joined]
    } else {
        &[LowerSyntax::Plus, LowerSyntax::Joined]
    };
    let mut first_error = None;
    for &syntax in syntaxes {
        for optional in [true, false] {
            match try_overlay(
                scratch,
                lowers,
                upper,
                work,
                rootless,
                syntax,
                optional,
                upper_for_errors,
            ) {
                Ok(fd) => return Ok(fd),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
    }
    Err(
        first_error.unwrap_or_else(|| WireError::OverlayUnavailable {
            upper: upper_for_errors.to_path_buf(),
            detail: String::new(),
            errno: Errno::INVAL.raw_os_error(),
        }),
    )
}

#[allow(clippy::too_many_arguments)]
fn try_overlay(
    scratch: BorrowedFd<'_>,
    lowers: &[String],
    upper: &str,
    work: &str,
    rootless: bool,
    syntax: LowerSyntax,
    optional: bool,
    upper_for_errors: &std::path::Path,
) -> R<OwnedFd> {
    let unavailable = |e: Errno, fs: Option<&OwnedFd>| {
        let mut detail = fs.map(fs_log).unwrap_or_default();
        if detail.is_empty() {
            // overlayfs reports most reasons with printk, not in the fs context log.
            detail = "the kernel log has overlayfs's reason: dmesg | grep overlayfs".into();
        }
        WireError::OverlayUnavailable {
            upper: upper_for_errors.to_path_buf(),
            detail,
            errno: e.raw_os_error(),
        }
    };
    let fs = rustix::mount::fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)
        .map_err(|e| unavailable(e, None))?;
    let _ = rustix::mount::fsconfig_set_string(&fs, "source", "overlay");
    let mut links = Vec::new();
    match syntax {
        LowerSyntax::Plus => {
            for lower in lowers {
                rustix::mount::fsconfig_set_string(&fs, "lowerdir+", lower.as_str())
                    .map_err(|e| unavailable(e, Some(&fs)))?;
            }
        }
        LowerSyntax::Joined => {
            for (i, lower) in lowers.iter().enumerate() {
                let name = base36(i);
                let _ = rustix::fs::unlinkat(scratch, name.as_str(), rustix::fs::AtFlags::empty());
                rustix::fs::symlinkat(lower.as_str(), scratch, name.as_str()).map_err(err(
                    "overlay",
                    "symlinkat",
                    &name,
                ))?;
                links.push(name);
            }
            // Relative names resolve against the current directory, at fsconfig time (new
            // API) or at create time (legacy mount data): stay in the scratch dir until then.
            rustix::process::fchdir(scratch).map_err(err("overlay", "fchdir", "scratch"))?;
            rustix::mount::fsconfig_set_string(&fs, "lowerdir", links.join(":").as_str())
                .map_err(|e| unavailable(e, Some(&fs)))?;
        }
    }
    rustix::mount::fsconfig_set_string(&fs, "upperdir", upper)
        .map_err(|e| unavailable(e, Some(&fs)))?;
    rustix::mount::fsconfig_set_string(&fs, "workdir", work)
        .map_err(|e| unavailable(e, Some(&fs)))?;
    if rootless {
        // user.overlay.* xattrs; overlayfs then also turns off redirect_dir and metacopy.
        rustix::mount::fsconfig_set_flag(&fs, "userxattr")
            .map_err(|e| unavailable(e, Some(&fs)))?;
    } else if optional {
        // The upper dir must hold complete copies: no metadata-only copy-up, no directory
        // rename redirects (a layer tar has no way to express either). These are the
        // defaults of most kernels; older ones may not know the options.
        for (k, v) in [
            ("redirect_dir", "off"),
            ("metacopy", "off"),
            ("index", "off"),
        ] {
            let _ = rustix::mount::fsconfig_set_string(&fs, k, v);
        }
    }
    if optional {
        // The upper dir is transient (turned into a layer, then removed): skip syncs. A
        // clean unmount of a non-volatile overlay syncs the whole upper filesystem.
        let _ = rustix::mount::fsconfig_set_flag(&fs, "volatile");
    }
    let created = rustix::mount::fsconfig_create(&fs).map_err(|e| unavailable(e, Some(&fs)));
    for name in &links {
        let _ = rustix::fs::unlinkat(scratch, name.as_str(), rustix::fs::AtFlags::empty());
    }
    created?;
    rustix::mount::fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, MountAttrFlags::empty())
        .map_err(|e| unavailable(e, Some(&fs)))
}

struct Target {
    /// Clean components below the root.
    comps: Vec<String>,
    kind: Kind,
    /// Index in `spec.mounts` for caller mounts; `None` for the system mounts (proc, dev,
    /// sys, hosts, resolv.conf).
    mount: Option<usize>,
}

impl Target {
    /// A system mount target (`comps` below the root).
    fn system(comps: &[&str], kind: Kind) -> Target {
        Target {
            comps: comps.iter().map(|c| c.to_string()).collect(),
            kind,
            mount: None,
        }
    }

    fn is_system(&self) -> bool {
        self.mount.is_none()
    }

    fn display(&self) -> String {
        format!("/{}", self.comps.join("/"))
    }
}

/// The mount targets of `spec` that live on the root filesystem itself.
fn targets(spec: &RunSpec, sources: &[Option<OwnedFd>]) -> R<Vec<Target>> {
    let mut out = vec![
        Target::system(&["proc"], Kind::Dir),
        Target::system(&["dev"], Kind::Dir),
        Target::system(&["sys"], Kind::Dir),
    ];
    if spec.hosts.is_some() {
        out.push(Target::system(&["etc", "hosts"], Kind::File));
    }
    if spec.resolv_conf.is_some() {
        out.push(Target::system(&["etc", "resolv.conf"], Kind::File));
    }
    for (index, (m, source)) in spec.mounts.iter().zip(sources).enumerate() {
        let kind = match (m, source) {
            (MountSpec::Bind { source: path, .. }, Some(fd)) => {
                let st = rustix::fs::fstat(fd).map_err(err(
                    "bind source",
                    "fstat",
                    &path.display().to_string(),
                ))?;
                if fsutil::is_dir(&st) {
                    Kind::Dir
                } else {
                    Kind::File
                }
            }
            _ => Kind::Dir,
        };
        out.push(Target {
            comps: fsutil::clean_components(m.target()),
            kind,
            mount: Some(index),
        });
    }
    Ok(out)
}

/// Phase 1 / plain-dir preparation: make every target exist on the root filesystem.
fn prepare_targets(
    root: BorrowedFd<'_>,
    targets: &[Target],
    stub_layer: bool,
    created: &mut Vec<String>,
) -> R<()> {
    for t in targets {
        let policy = match (t.is_system(), stub_layer) {
            (false, _) => Policy::FollowInRoot,
            (true, true) => Policy::Replace,
            (true, false) => Policy::Refuse,
        };
        let mut create = Create {
            restore_parent_times: stub_layer,
            created,
        };
        fsutil::ensure_target(root, &t.comps, t.kind, policy, &mut create)
            .map_err(target_err(&t.display()))?;
    }
    Ok(())
}

/// Resolve a target below `root` for mounting (creating it when it lies on a mount made in
/// this phase, e.g. below a caller tmpfs) and check its type.
fn target_fd(root: BorrowedFd<'_>, t: &Target, created: &mut Vec<String>) -> R<OwnedFd> {
    let rel = t.comps.join("/");
    let flags = if t.is_system() {
        OFlags::PATH | OFlags::NOFOLLOW
    } else {
        OFlags::PATH
    };
    let fd = match fsutil::in_root(root, &rel, flags) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => {
            let mut create = Create {
                restore_parent_times: false,
                created,
            };
            let policy = if t.is_system() {
                Policy::Refuse
            } else {
                Policy::FollowInRoot
            };
            fsutil::ensure_target(root, &t.comps, t.kind, policy, &mut create)
                .map_err(target_err(&t.display()))?;
            fsutil::in_root(root, &rel, flags).map_err(err(
                "mount target",
                "openat2",
                &t.display(),
            ))?
        }
        Err(e) => {
            return Err(WireError::MountTarget {
                target: t.display(),
                reason: format!("cannot resolve it inside the root: {e}"),
            });
        }
    };
    let st = rustix::fs::fstat(&fd).map_err(err("mount target", "fstat", &t.display()))?;
    let ok = match t.kind {
        Kind::Dir => fsutil::is_dir(&st),
        Kind::File => {
            !fsutil::is_dir(&st) && FileType::from_raw_mode(st.st_mode) != FileType::Symlink
        }
    };
    if !ok {
        return Err(WireError::MountTarget {
            target: t.display(),
            reason: format!("is {} inside the root", fsutil::type_name(&st)),
        });
    }
    Ok(fd)
}

struct Devices {
    rootless: bool,
    gid5_mapped: bool,
}

const DEVICES: &[(&str, u32, u32)] = &[
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

fn setup_dev(dev: BorrowedFd<'_>, d: &Devices) -> R<()> {
    for &(name, major, minor) in DEVICES {
        let path = format!("/dev/{name}");
        if d.rootless {
            // mknod is not allowed in a user namespace: bind the host's node (owned by the
            // host's root, which is unmapped here, so the step cannot chmod it).
            rustix::fs::openat(
                dev,
                name,
                OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o666),
            )
            .map_err(err("/dev", "openat(O_CREAT)", &path))?;
            let node = rustix::mount::open_tree(
                rustix::fs::CWD,
                path.as_str(),
                OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC,
            )
            .map_err(err("/dev", "open_tree(host node)", &path))?;
            let target = rustix::fs::openat(
                dev,
                name,
                OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(err("/dev", "openat", &path))?;
            attach("/dev", &path, &node, target.as_fd())?;
        } else {
            // Our own node: a step running as root may chmod it without touching the host's.
            rustix::fs::mknodat(
                dev,
                name,
                FileType::CharacterDevice,
                Mode::from_raw_mode(0o666),
                rustix::fs::makedev(major, minor),
            )
            .map_err(err("/dev", "mknodat", &path))?;
        }
    }
    rustix::fs::mkdirat(dev, "pts", Mode::from_raw_mode(0o755))
        .map_err(err("/dev", "mkdirat", "/dev/pts"))?;
    let mut pts_opts: Vec<(&str, Option<&str>)> = vec![
        ("newinstance", None),
        ("ptmxmode", Some("0666")),
        ("mode", Some("0620")),
    ];
    if d.gid5_mapped {
        pts_opts.push(("gid", Some("5")));
    }
    let pts = new_fs(
        "/dev/pts",
        "devpts",
        &pts_opts,
        MountAttrFlags::MOUNT_ATTR_NOSUID | MountAttrFlags::MOUNT_ATTR_NOEXEC,
    )?;
    let pts_target = rustix::fs::openat(
        dev,
        "pts",
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(err("/dev/pts", "openat", "/dev/pts"))?;
    attach("/dev/pts", "/dev/pts", &pts, pts_target.as_fd())?;

    rustix::fs::mkdirat(dev, "shm", Mode::from_raw_mode(0o1777))
        .map_err(err("/dev", "mkdirat", "/dev/shm"))?;
    let shm = new_fs(
        "/dev/shm",
        "tmpfs",
        &[("mode", Some("1777")), ("size", Some(SHM_TMPFS_SIZE))],
        MountAttrFlags::MOUNT_ATTR_NOSUID
            | MountAttrFlags::MOUNT_ATTR_NODEV
            | MountAttrFlags::MOUNT_ATTR_NOEXEC,
    )?;
    let shm_target = rustix::fs::openat(
        dev,
        "shm",
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(err("/dev/shm", "openat", "/dev/shm"))?;
    attach("/dev/shm", "/dev/shm", &shm, shm_target.as_fd())?;

    for (name, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("core", "/proc/kcore"),
    ] {
        rustix::fs::symlinkat(target, dev, name).map_err(err(
            "/dev",
            "symlinkat",
            &format!("/dev/{name}"),
        ))?;
    }
    Ok(())
}

/// Docker's masked and read-only /proc paths (where they exist).
fn harden_proc(proc_dir: BorrowedFd<'_>, dev_null: BorrowedFd<'_>) -> R<()> {
    let ro = MountAttrFlags::MOUNT_ATTR_RDONLY
        | MountAttrFlags::MOUNT_ATTR_NOSUID
        | MountAttrFlags::MOUNT_ATTR_NODEV
        | MountAttrFlags::MOUNT_ATTR_NOEXEC;
    for name in ["bus", "fs", "irq", "sys", "sysrq-trigger"] {
        let path = format!("/proc/{name}");
        let clone = match rustix::mount::open_tree(
            proc_dir,
            name,
            OpenTreeFlags::OPEN_TREE_CLONE
                | OpenTreeFlags::OPEN_TREE_CLOEXEC
                | OpenTreeFlags::AT_SYMLINK_NOFOLLOW,
        ) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => continue,
            Err(e) => return Err(err("/proc", "open_tree", &path)(e)),
        };
        sys::mount_setattr(clone.as_fd(), sys::Recursive::No, u64::from(ro.bits()), 0)
            .map_err(err("/proc", "mount_setattr(RDONLY)", &path))?;
        let target = rustix::fs::openat(
            proc_dir,
            name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(err("/proc", "openat", &path))?;
        attach("/proc", &path, &clone, target.as_fd())?;
    }
    for name in [
        "kcore",
        "keys",
        "latency_stats",
        "timer_list",
        "timer_stats",
        "sched_debug",
    ] {
        let path = format!("/proc/{name}");
        let target = match rustix::fs::openat(
            proc_dir,
            name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => continue,
            Err(e) => return Err(err("/proc", "openat", &path)(e)),
        };
        let null = rustix::mount::open_tree(
            dev_null,
            "",
            OpenTreeFlags::OPEN_TREE_CLONE
                | OpenTreeFlags::OPEN_TREE_CLOEXEC
                | OpenTreeFlags::AT_EMPTY_PATH,
        )
        .map_err(err("/proc", "open_tree(/dev/null)", &path))?;
        attach("/proc", &path, &null, target.as_fd())?;
    }
    for name in ["acpi", "asound", "scsi"] {
        let path = format!("/proc/{name}");
        let target = match rustix::fs::openat(
            proc_dir,
            name,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::NOENT) | Err(Errno::NOTDIR) => continue,
            Err(e) => return Err(err("/proc", "openat", &path)(e)),
        };
        let empty = new_fs("/proc", "tmpfs", &[("size", Some("0"))], ro)?;
        attach("/proc", &path, &empty, target.as_fd())?;
    }
    Ok(())
}

/// Read `rel` (e.g. `etc/passwd`) inside the root: regular files only, size-capped;
/// `Ok(None)` when absent.
fn read_root_file(root: BorrowedFd<'_>, rel: &str, user: &str) -> R<Option<String>> {
    let user_err = |reason: String| WireError::User {
        user: user.to_string(),
        reason,
    };
    let fd = match fsutil::in_root(
        root,
        rel,
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY,
    ) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(None),
        Err(e) => {
            return Err(user_err(format!(
                "cannot open /{rel} inside the image: {e}"
            )));
        }
    };
    let st = rustix::fs::fstat(&fd).map_err(|e| user_err(format!("stat /{rel}: {e}")))?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(user_err(format!(
            "/{rel} is {}, not a regular file",
            fsutil::type_name(&st)
        )));
    }
    if st.st_size as u64 > MAX_ID_FILE_BYTES {
        return Err(user_err(format!(
            "/{rel} is larger than {MAX_ID_FILE_BYTES} bytes"
        )));
    }
    let mut text = Vec::new();
    std::fs::File::from(fd)
        .take(MAX_ID_FILE_BYTES + 1)
        .read_to_end(&mut text)
        .map_err(|e| user_err(format!("reading /{rel}: {e}")))?;
    if text.len() as u64 > MAX_ID_FILE_BYTES {
        return Err(user_err(format!(
            "/{rel} is larger than {MAX_ID_FILE_BYTES} bytes"
        )));
    }
    Ok(Some(String::from_utf8_lossy(&text).into_owned()))
}

fn write_scratch_file(scratch: BorrowedFd<'_>, name: &str, contents: &str) -> R<()> {
    let fd = rustix::fs::openat(
        scratch,
        name,
        OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )
    .map_err(err("scratch", "openat", name))?;
    std::fs::File::from(fd)
        .write_all(contents.as_bytes())
        .map_err(|e| {
            WireError::setup(
                "scratch",
                "write",
                name,
                Errno::from_io_error(&e).unwrap_or(Errno::IO),
            )
        })
}

/// Everything from namespaces-entered to exec. Returns only on failure.
pub(crate) fn setup_and_exec(
    spec: &RunSpec,
    ids: IdMode,
    legacy_overlay: bool,
    control: &mut UnixStream,
    created: &mut Vec<String>,
) -> WireError {
    match setup(spec, ids, legacy_overlay, control, created) {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

enum Never {}

fn setup(
    spec: &RunSpec,
    ids: IdMode,
    legacy_overlay: bool,
    control: &mut UnixStream,
    created: &mut Vec<String>,
) -> R<Never> {
    let rootless = ids != IdMode::Root;
    rustix::process::umask(Mode::empty());

    // Nothing we mount may propagate back to the host.
    rustix::mount::mount_change(
        "/",
        MountPropagationFlags::PRIVATE | MountPropagationFlags::REC,
    )
    .map_err(err("mount namespace", "mount(MS_REC|MS_PRIVATE)", "/"))?;
    // Keys of strata's session (e.g. a user's login keyring) stay out of reach. ENOSYS: no
    // keyring support in this kernel, nothing to hide.
    match sys::new_session_keyring() {
        Ok(()) | Err(Errno::NOSYS) => {}
        Err(e) => return Err(err("keyring", "keyctl(KEYCTL_JOIN_SESSION_KEYRING)", "")(e)),
    }
    rustix::system::sethostname(spec.hostname.as_bytes()).map_err(err(
        "hostname",
        "sethostname",
        &spec.hostname,
    ))?;
    if spec.network == Network::None {
        sys::loopback_up().map_err(err("network", "ioctl(SIOCSIFFLAGS)", "lo"))?;
    }

    // Host-side resources, opened while host paths are still visible.
    let mut sources: Vec<Option<OwnedFd>> = Vec::new();
    for m in &spec.mounts {
        sources.push(match m {
            MountSpec::Bind { source, access, .. } => {
                let fd = rustix::mount::open_tree(
                    rustix::fs::CWD,
                    source.as_path(),
                    OpenTreeFlags::OPEN_TREE_CLONE
                        | OpenTreeFlags::OPEN_TREE_CLOEXEC
                        | OpenTreeFlags::AT_RECURSIVE,
                )
                .map_err(err(
                    "bind mount source",
                    "open_tree",
                    &source.display().to_string(),
                ))?;
                if *access == Access::ReadOnly {
                    sys::mount_setattr(
                        fd.as_fd(),
                        sys::Recursive::Yes,
                        u64::from(MountAttrFlags::MOUNT_ATTR_RDONLY.bits()),
                        0,
                    )
                    .map_err(err(
                        "bind mount source",
                        "mount_setattr(RDONLY)",
                        &source.display().to_string(),
                    ))?;
                }
                Some(fd)
            }
            MountSpec::Tmpfs { .. } => None,
        });
    }
    let targets = targets(spec, &sources)?;

    let scratch = new_fs(
        "scratch tmpfs",
        "tmpfs",
        &[("mode", Some("0755")), ("size", Some(SCRATCH_TMPFS_SIZE))],
        MountAttrFlags::MOUNT_ATTR_NOSUID | MountAttrFlags::MOUNT_ATTR_NODEV,
    )?;
    let root_mount = match &spec.rootfs {
        Rootfs::Overlay { lower, upper, work } => {
            let lower_fds = lower
                .iter()
                .map(|p| open_host_dir("overlay lower dir", p))
                .collect::<R<Vec<_>>>()?;
            let upper_fd = open_host_dir("overlay upper dir", upper)?;
            let work_fd = open_host_dir("overlay work dir", work)?;
            match_root_dir(&lower_fds[0], upper)?;
            // Attach the scratch tmpfs over `work` (covered only in this mount namespace; the
            // overlay reaches it through work_fd): overlayfs wants its layers on attached mounts.
            attach(
                "scratch tmpfs",
                &work.display().to_string(),
                &scratch,
                work_fd.as_fd(),
            )?;
            for d in ["stub-static", "stub-upper", "stub-work", "root"] {
                rustix::fs::mkdirat(&scratch, d, Mode::from_raw_mode(0o755))
                    .map_err(err("scratch", "mkdirat", d))?;
            }
            let lowers: Vec<String> = lower_fds.iter().map(fd_path).collect();
            // The stub layer: written directly when the layers are simple enough (no mount,
            // no unmount), else through a first overlay whose upper dir it becomes.
            let static_dir = rustix::fs::openat(
                &scratch,
                "stub-static",
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(err("scratch", "openat", "stub-static"))?;
            let static_targets: Vec<(&[String], Kind)> = targets
                .iter()
                .map(|t| (t.comps.as_slice(), t.kind))
                .collect();
            let stub_layer =
                match stubs::build(&lower_fds, &static_targets, rootless, static_dir.as_fd()) {
                    StubLayer::Empty => None,
                    StubLayer::Written => Some(format!("{}/stub-static", fd_path(&scratch))),
                    StubLayer::Unsure => {
                        let stub_upper = format!("{}/stub-upper", fd_path(&scratch));
                        let stub_work = format!("{}/stub-work", fd_path(&scratch));
                        let stub_view = mount_overlay(
                            scratch.as_fd(),
                            &lowers,
                            &stub_upper,
                            &stub_work,
                            rootless,
                            legacy_overlay,
                            upper,
                        )?;
                        prepare_targets(stub_view.as_fd(), &targets, true, created)?;
                        // Dropping the fd unmounts the detached overlay before its upper dir
                        // becomes a lower dir.
                        drop(stub_view);
                        Some(stub_upper)
                    }
                };
            let all: Vec<String> = stub_layer.into_iter().chain(lowers).collect();
            let root = mount_overlay(
                scratch.as_fd(),
                &all,
                &fd_path(&upper_fd),
                &fd_path(&work_fd),
                rootless,
                legacy_overlay,
                upper,
            )?;
            created.clear(); // stubs live in the stub layer: nothing for the caller to remove
            root
        }
        Rootfs::Dir(dir) => {
            let clone = rustix::mount::open_tree(
                rustix::fs::CWD,
                dir.as_path(),
                OpenTreeFlags::OPEN_TREE_CLONE
                    | OpenTreeFlags::OPEN_TREE_CLOEXEC
                    | OpenTreeFlags::AT_RECURSIVE,
            )
            .map_err(err(
                "root directory",
                "open_tree",
                &dir.display().to_string(),
            ))?;
            let dir_fd = open_host_dir("root directory", dir)?;
            attach(
                "scratch tmpfs",
                &dir.display().to_string(),
                &scratch,
                dir_fd.as_fd(),
            )?;
            rustix::fs::mkdirat(&scratch, "root", Mode::from_raw_mode(0o755))
                .map_err(err("scratch", "mkdirat", "root"))?;
            prepare_targets(clone.as_fd(), &targets, false, created)?;
            clone
        }
    };
    if let Some(h) = &spec.hosts {
        write_scratch_file(scratch.as_fd(), "hosts", h)?;
    }
    if let Some(r) = &spec.resolv_conf {
        write_scratch_file(scratch.as_fd(), "resolv.conf", r)?;
    }
    let root_dir = rustix::fs::openat(
        &scratch,
        "root",
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(err("scratch", "openat", "root"))?;
    attach("root filesystem", "/", &root_mount, root_dir.as_fd())?;
    let root = root_mount;

    // /proc: a procfs of our pid namespace (we are its pid 1).
    let proc_fs = new_fs(
        "/proc",
        "proc",
        &[],
        MountAttrFlags::MOUNT_ATTR_NOSUID
            | MountAttrFlags::MOUNT_ATTR_NODEV
            | MountAttrFlags::MOUNT_ATTR_NOEXEC,
    )?;
    let proc_target = target_fd(root.as_fd(), &targets[0], created)?;
    attach("/proc", "/proc", &proc_fs, proc_target.as_fd())?;

    // /dev
    let dev_fs = new_fs(
        "/dev",
        "tmpfs",
        &[("mode", Some("0755")), ("size", Some(DEV_TMPFS_SIZE))],
        MountAttrFlags::MOUNT_ATTR_NOSUID | MountAttrFlags::MOUNT_ATTR_NOEXEC,
    )?;
    let dev_target = target_fd(root.as_fd(), &targets[1], created)?;
    attach("/dev", "/dev", &dev_fs, dev_target.as_fd())?;
    let (_, gid_count) = ids.mapped();
    setup_dev(
        dev_fs.as_fd(),
        &Devices {
            rootless,
            gid5_mapped: gid_count > 5,
        },
    )?;

    // /sys read-only. sysfs in a user namespace needs a network namespace it owns; with the
    // host network, bind the host's /sys read-only instead (as rootless podman does).
    let ro_flags = MountAttrFlags::MOUNT_ATTR_RDONLY
        | MountAttrFlags::MOUNT_ATTR_NOSUID
        | MountAttrFlags::MOUNT_ATTR_NODEV
        | MountAttrFlags::MOUNT_ATTR_NOEXEC;
    let sys_fs = match new_fs("/sys", "sysfs", &[], ro_flags) {
        Ok(fd) => fd,
        Err(_) if rootless => {
            let fd = rustix::mount::open_tree(
                rustix::fs::CWD,
                "/sys",
                OpenTreeFlags::OPEN_TREE_CLONE
                    | OpenTreeFlags::OPEN_TREE_CLOEXEC
                    | OpenTreeFlags::AT_RECURSIVE,
            )
            .map_err(err("/sys", "open_tree", "/sys"))?;
            sys::mount_setattr(
                fd.as_fd(),
                sys::Recursive::Yes,
                u64::from(ro_flags.bits()),
                0,
            )
            .map_err(err("/sys", "mount_setattr(RDONLY)", "/sys"))?;
            fd
        }
        Err(e) => return Err(e),
    };
    let sys_target = target_fd(root.as_fd(), &targets[2], created)?;
    attach("/sys", "/sys", &sys_fs, sys_target.as_fd())?;

    let dev_null = rustix::fs::openat(
        &dev_fs,
        "null",
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(err("/dev", "openat", "/dev/null"))?;
    harden_proc(proc_fs.as_fd(), dev_null.as_fd())?;
    if let Ok(fw) = rustix::fs::openat(
        &sys_fs,
        "firmware",
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        let empty = new_fs("/sys", "tmpfs", &[("size", Some("0"))], ro_flags)?;
        attach("/sys", "/sys/firmware", &empty, fw.as_fd())?;
    }

    // hosts, resolv.conf and the caller's mounts, parents before children.
    let mut rest: Vec<&Target> = targets.iter().skip(3).collect();
    rest.sort_by(|a, b| {
        a.comps
            .len()
            .cmp(&b.comps.len())
            .then_with(|| a.comps.cmp(&b.comps))
    });
    let mut sources = sources;
    for t in rest {
        let mount = if let Some(index) = t.mount {
            match (&spec.mounts[index], sources[index].take()) {
                (MountSpec::Bind { .. }, Some(fd)) => fd,
                (
                    MountSpec::Tmpfs {
                        size_bytes, mode, ..
                    },
                    _,
                ) => {
                    let size = size_bytes.map(|s| s.to_string());
                    let mode = format!("{:o}", mode.unwrap_or(0o1777) & 0o7777);
                    let mut opts: Vec<(&str, Option<&str>)> = vec![("mode", Some(mode.as_str()))];
                    if let Some(s) = &size {
                        opts.push(("size", Some(s.as_str())));
                    }
                    new_fs(
                        &t.display(),
                        "tmpfs",
                        &opts,
                        MountAttrFlags::MOUNT_ATTR_NOSUID | MountAttrFlags::MOUNT_ATTR_NODEV,
                    )?
                }
                (MountSpec::Bind { source, .. }, None) => {
                    return Err(WireError::MountTarget {
                        target: t.display(),
                        reason: format!("bind source {} was not opened", source.display()),
                    });
                }
            }
        } else {
            let name = t.comps.last().map(String::as_str).unwrap_or_default();
            rustix::mount::open_tree(
                &scratch,
                name,
                OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC,
            )
            .map_err(err(&t.display(), "open_tree", name))?
        };
        let fd = target_fd(root.as_fd(), t, created)?;
        attach("mount", &t.display(), &mount, fd.as_fd())?;
    }

    // USER, read inside the root before leaving the host's view.
    let passwd = read_root_file(root.as_fd(), "etc/passwd", &spec.user)?;
    let group = read_root_file(root.as_fd(), "etc/group", &spec.user)?;
    let user = strata_spec::resolve_user(&spec.user, passwd.as_deref(), group.as_deref()).map_err(
        |reason| WireError::User {
            user: spec.user.clone(),
            reason,
        },
    )?;
    let (uid_count, gid_count) = ids.mapped();
    let not_mapped = |kind: &str, id: u32, mapped: u32| WireError::UserNotMapped {
        user: spec.user.clone(),
        kind: kind.into(),
        id,
        mapped,
    };
    if user.uid >= uid_count {
        return Err(not_mapped("uid", user.uid, uid_count));
    }
    if user.gid >= gid_count {
        return Err(not_mapped("gid", user.gid, gid_count));
    }
    let groups: Vec<u32> = match ids {
        IdMode::Single { .. } => Vec::new(), // setgroups is denied with a single-id map
        _ => {
            if let Some(g) = user.additional_gids.iter().find(|g| **g >= gid_count) {
                return Err(not_mapped("supplementary gid", *g, gid_count));
            }
            user.additional_gids.clone()
        }
    };

    if matches!(spec.rootfs, Rootfs::Dir(_)) && !created.is_empty() {
        let _ = write_message(&mut *control, &Report::CreatedTargets(created.clone()));
    }

    // Enter the new root: pivot_root(".", ".") stacks the old root on top of the new one;
    // detaching it leaves no path to the host's tree.
    rustix::process::fchdir(&root).map_err(err("pivot_root", "fchdir", "new root"))?;
    rustix::process::pivot_root(".", ".").map_err(err("pivot_root", "pivot_root", "new root"))?;
    rustix::mount::unmount(".", UnmountFlags::DETACH).map_err(err(
        "pivot_root",
        "umount2(MNT_DETACH)",
        "old root",
    ))?;
    rustix::process::chdir("/").map_err(err("pivot_root", "chdir", "/"))?;
    drop((
        root,
        root_dir,
        scratch,
        proc_fs,
        dev_fs,
        sys_fs,
        dev_null,
        proc_target,
        dev_target,
        sys_target,
        sources,
    ));

    // stdin: the container's /dev/null (the host's node, opened by the helper, must not be
    // reachable: a root step could fchmod it through /proc/self/fd/0).
    let null = rustix::fs::open("/dev/null", OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
        .map_err(err("stdio", "open", "/dev/null"))?;
    rustix::stdio::dup2_stdin(&null).map_err(err("stdio", "dup2", "/dev/null"))?;
    drop(null);

    // WORKDIR: created as needed, owned by the user; magic links refused (CVE-2024-21626).
    let cwd_comps = fsutil::clean_components(&spec.cwd);
    let new_root = rustix::fs::open(
        "/",
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(err("WORKDIR", "open", "/"))?;
    let mut ignored = Vec::new();
    let mut create = Create {
        restore_parent_times: false,
        created: &mut ignored,
    };
    let cwd = fsutil::mkdir_p(
        new_root.as_fd(),
        &cwd_comps,
        Mode::from_raw_mode(0o755),
        Some((user.uid, user.gid)),
        &mut create,
    )
    .map_err(|e| WireError::Workdir {
        workdir: format!("{} ({})", spec.cwd, e.reason),
        errno: Errno::NOENT.raw_os_error(),
    })?;
    rustix::process::fchdir(&cwd).map_err(|e| WireError::Workdir {
        workdir: spec.cwd.clone(),
        errno: e.raw_os_error(),
    })?;
    drop((cwd, new_root));

    // Drop privileges: bounding set first (needs CAP_SETPCAP), then ids, then the capability
    // sets (a root step keeps Docker's default set; any other user has none).
    let last_cap = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .unwrap_or(40)
        .min(63);
    for cap in 0..=last_cap {
        let set = rustix::thread::CapabilitySet::from_bits_retain(1 << cap);
        if !DEFAULT_CAPS.contains(set) {
            match rustix::thread::remove_capability_from_bounding_set(set) {
                Ok(()) | Err(Errno::INVAL) => {}
                Err(e) => {
                    return Err(err(
                        "capabilities",
                        "prctl(PR_CAPBSET_DROP)",
                        &cap.to_string(),
                    )(e));
                }
            }
        }
    }
    let _ = rustix::thread::clear_ambient_capability_set();
    if !matches!(ids, IdMode::Single { .. }) {
        let gids: Vec<rustix::process::Gid> = groups
            .iter()
            .map(|g| rustix::process::Gid::from_raw(*g))
            .collect();
        rustix::thread::set_thread_groups(&gids).map_err(err("USER", "setgroups", &spec.user))?;
    }
    let gid = rustix::process::Gid::from_raw(user.gid);
    let uid = rustix::process::Uid::from_raw(user.uid);
    rustix::thread::set_thread_res_gid(gid, gid, gid).map_err(err(
        "USER",
        "setresgid",
        &user.gid.to_string(),
    ))?;
    rustix::thread::set_thread_res_uid(uid, uid, uid).map_err(err(
        "USER",
        "setresuid",
        &user.uid.to_string(),
    ))?;
    if user.uid == 0 {
        rustix::thread::set_capabilities(
            None,
            rustix::thread::CapabilitySets {
                effective: DEFAULT_CAPS,
                permitted: DEFAULT_CAPS,
                inheritable: rustix::thread::CapabilitySet::empty(),
            },
        )
        .map_err(err("capabilities", "capset", "default set"))?;
    }
    // Credential changes clear the parent-death signal: arm it again.
    let _ = rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL));
    rustix::process::umask(Mode::from_raw_mode(0o022));

    // Environment and program.
    let mut env: Vec<String> = spec.env.clone();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.push(format!("PATH={DEFAULT_PATH}"));
    }
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", user.home));
    }
    let path_var = env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH)
        .to_string();
    let cstr = |s: &str, what: &str| {
        CString::new(s).map_err(|_| WireError::Exec {
            program: format!("{what} contains a NUL byte"),
            errno: Errno::INVAL.raw_os_error(),
        })
    };
    let argv = spec
        .args
        .iter()
        .map(|a| cstr(a, "argument"))
        .collect::<R<Vec<_>>>()?;
    let envp = env
        .iter()
        .map(|e| cstr(e, "environment"))
        .collect::<R<Vec<_>>>()?;
    let program = &spec.args[0];

    // No descriptor but 0-2 may survive exec (CVE-2024-21626). CLOEXEC rather than close, so
    // that an exec failure can still be reported on the control socket.
    sys::cloexec_from(3).map_err(err("descriptors", "close_range(CLOEXEC)", "3.."))?;

    let candidates: Vec<String> = if program.contains('/') {
        vec![program.clone()]
    } else {
        path_var
            .split(':')
            .map(|d| if d.is_empty() { "." } else { d })
            .map(|d| format!("{d}/{program}"))
            .collect()
    };
    let mut first_error = Errno::NOENT;
    for c in candidates {
        let path = cstr(&c, "program")?;
        let e = sys::execve(&path, &argv, &envp);
        if e != Errno::NOENT && e != Errno::NOTDIR && first_error == Errno::NOENT {
            first_error = e;
        }
    }
    Err(WireError::Exec {
        program: program.clone(),
        errno: first_error.raw_os_error(),
    })
}

/// Exit code for an exec failure (reported separately as an error).
pub(crate) const fn exec_failed_code() -> i32 {
    EXEC_FAILED
}
