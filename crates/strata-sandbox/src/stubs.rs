//! The stub layer without a mount, for the common cases.
//!
//! Mount targets missing from the image must exist for the step but must not reach its upper
//! dir, so they live in a "stub layer" on top of the image's layers (see `setup.rs`). The
//! general way to make it is a first overlay mount whose upper dir becomes that layer; but
//! unmounting it costs an RCU grace period (measured 8-15 ms on a loaded 2-core machine, most
//! of a step's overhead). So this module reads the lower dirs the way overlayfs merges them
//! (top-most entry wins, char 0:0 whiteouts, opaque directories) and writes the stub layer
//! directly: missing targets, and above them copies of the image's parent directories with
//! the same mode, owner, times and xattrs (overlayfs copies the top-most layer's directory
//! up, which is then the stub's). Whenever the lower dirs hold anything it does not model
//! (a symlink or a non-directory on the way, a wrong type, unreadable metadata, ids the
//! namespace cannot map) it answers "unsure" and the caller uses the overlay way, which lets
//! the kernel resolve everything.
//!
//! The lower dirs are image content: they are walked one component at a time with
//! `O_NOFOLLOW`, never through a symlink.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat, Timestamps, XattrFlags};
use rustix::io::Errno;

use crate::fsutil::Kind;

/// Largest xattr value copied (the VFS limit, XATTR_SIZE_MAX).
const MAX_XATTR_BYTES: usize = 64 * 1024;
/// Largest xattr name list read.
const MAX_XATTR_LIST_BYTES: usize = 64 * 1024;

/// Extended attributes: (name, value).
type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// A directory of the merged view, as its top-most layer has it.
#[derive(Clone)]
struct DirMeta {
    stat: Stat,
    xattrs: Xattrs,
}

enum TargetState {
    /// Present with the right type: nothing to create.
    Exists,
    /// `comps[..present]` exist as directories (with these metas); the rest must be created.
    Missing { present: usize, metas: Vec<DirMeta> },
}

/// Outcome of [`build`].
pub(crate) enum StubLayer {
    /// No target was missing: no stub layer needed.
    Empty,
    /// The stub layer was written.
    Written,
    /// The lower dirs hold something not modelled here: use the overlay way.
    Unsure,
}

fn opaque_name(rootless: bool) -> &'static str {
    if rootless {
        "user.overlay.opaque"
    } else {
        "trusted.overlay.opaque"
    }
}

/// `Ok(true)` opaque, `Ok(false)` not, `Err(())` something we do not model.
fn is_opaque(dir: BorrowedFd<'_>, rootless: bool) -> Result<bool, ()> {
    let mut value = [0u8; 8];
    match rustix::fs::fgetxattr(dir, opaque_name(rootless), &mut value) {
        Ok(1) if value[0] == b'y' => Ok(true),
        Ok(_) => Err(()), // "x" (xwhiteouts) and other values: not modelled
        Err(Errno::NODATA) | Err(Errno::NOTSUP) => Ok(false),
        Err(_) => Err(()),
    }
}

fn read_xattrs(dir: BorrowedFd<'_>) -> Result<Xattrs, ()> {
    let mut names = vec![0u8; 4096];
    let n = match rustix::fs::flistxattr(dir, &mut names) {
        Ok(n) => n,
        Err(Errno::RANGE) => {
            names = vec![0u8; MAX_XATTR_LIST_BYTES];
            rustix::fs::flistxattr(dir, &mut names).map_err(|_| ())?
        }
        Err(Errno::NOTSUP) => 0,
        Err(_) => return Err(()),
    };
    let mut out = Vec::new();
    for name in names[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        if name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay.") {
            continue;
        }
        let cname = std::ffi::CString::new(name).map_err(|_| ())?;
        let mut value = vec![0u8; 256];
        let len = match rustix::fs::fgetxattr(dir, cname.as_c_str(), &mut value) {
            Ok(len) => len,
            Err(Errno::RANGE) => {
                value = vec![0u8; MAX_XATTR_BYTES];
                rustix::fs::fgetxattr(dir, cname.as_c_str(), &mut value).map_err(|_| ())?
            }
            // Not readable by us (trusted.* rootless): overlayfs' copy-up would skip it too.
            Err(Errno::PERM) | Err(Errno::ACCESS) | Err(Errno::NODATA) => continue,
            Err(_) => return Err(()),
        };
        value.truncate(len);
        out.push((name.to_vec(), value));
    }
    Ok(out)
}

fn open_dir(parent: BorrowedFd<'_>, name: &str) -> Result<OwnedFd, Errno> {
    rustix::fs::openat(
        parent,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

fn is_whiteout(st: &Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::CharacterDevice && st.st_rdev == 0
}

/// The merged state of one target. `None` = unsure.
fn analyse(
    lowers: &[OwnedFd],
    comps: &[String],
    kind: Kind,
    rootless: bool,
) -> Option<TargetState> {
    // Layers contributing to the current prefix: (their dir fd at that prefix), top-most first.
    let mut contributing: Vec<OwnedFd> = Vec::new();
    for l in lowers {
        contributing.push(open_dir(l.as_fd(), ".").ok()?);
    }
    let mut metas = Vec::new();
    for (k, name) in comps.iter().enumerate() {
        let last = k + 1 == comps.len();
        let mut next: Vec<OwnedFd> = Vec::new();
        let mut top_dir: Option<DirMeta> = None;
        let mut non_dir: Option<Stat> = None;
        for dir in &contributing {
            let st = match rustix::fs::statat(dir, name.as_str(), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(Errno::NOENT) => continue,
                Err(_) => return None,
            };
            if is_whiteout(&st) {
                break; // deleted: nothing below counts
            }
            if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
                if top_dir.is_none() {
                    non_dir = Some(st);
                }
                break; // a non-directory hides everything below it
            }
            let child = open_dir(dir.as_fd(), name).ok()?;
            if top_dir.is_none() {
                let stat = rustix::fs::fstat(&child).ok()?;
                let xattrs = read_xattrs(child.as_fd()).ok()?;
                top_dir = Some(DirMeta { stat, xattrs });
            }
            let opaque = is_opaque(child.as_fd(), rootless).ok()?;
            next.push(child);
            if opaque {
                break;
            }
        }
        match (top_dir, non_dir) {
            (Some(meta), _) => {
                if last {
                    return (kind == Kind::Dir).then_some(TargetState::Exists);
                }
                metas.push(meta);
                contributing = next;
            }
            (None, Some(st)) => {
                let ft = FileType::from_raw_mode(st.st_mode);
                // A symlink (resolved by the kernel inside the root) or a file in the way:
                // let the overlay way handle and report it.
                return (last && kind == Kind::File && ft != FileType::Symlink)
                    .then_some(TargetState::Exists);
            }
            (None, None) => {
                return Some(TargetState::Missing { present: k, metas });
            }
        }
    }
    // comps is never empty for a target; an empty one is "the root": exists.
    Some(TargetState::Exists)
}

/// Create `name` in `parent` as a copy of `meta` (or reuse it if an earlier target made it).
fn copy_dir(parent: BorrowedFd<'_>, name: &str, meta: &DirMeta) -> Result<OwnedFd, Errno> {
    match rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(0o700)) {
        Ok(()) | Err(Errno::EXIST) => {}
        Err(e) => return Err(e),
    }
    let fd = open_dir(parent, name)?;
    rustix::fs::fchown(
        &fd,
        Some(rustix::fs::Uid::from_raw(meta.stat.st_uid)),
        Some(rustix::fs::Gid::from_raw(meta.stat.st_gid)),
    )?;
    rustix::fs::fchmod(&fd, Mode::from_raw_mode(meta.stat.st_mode & 0o7777))?;
    for (key, value) in &meta.xattrs {
        let key = std::ffi::CString::new(key.as_slice()).map_err(|_| Errno::INVAL)?;
        rustix::fs::fsetxattr(&fd, key.as_c_str(), value, XattrFlags::empty())?;
    }
    Ok(fd)
}

/// Try to write the stub layer for `targets` into `stub` (an empty directory) from the lower
/// dirs (fds, top-most first), without mounting anything.
pub(crate) fn build(
    lowers: &[OwnedFd],
    targets: &[(&[String], Kind)],
    rootless: bool,
    stub: BorrowedFd<'_>,
) -> StubLayer {
    let mut plan = Vec::new();
    for (comps, kind) in targets {
        match analyse(lowers, comps, *kind, rootless) {
            Some(TargetState::Exists) => {}
            Some(TargetState::Missing { present, metas }) => {
                plan.push((*comps, *kind, present, metas))
            }
            None => return StubLayer::Unsure,
        }
    }
    if plan.is_empty() {
        return StubLayer::Empty;
    }
    // Directories copied from the image get their times back once all children exist.
    let mut copied: Vec<(OwnedFd, Timestamps)> = Vec::new();
    for (comps, kind, present, metas) in plan {
        let mut dir: OwnedFd = match open_dir(stub, ".") {
            Ok(fd) => fd,
            Err(_) => return StubLayer::Unsure,
        };
        for (i, name) in comps.iter().enumerate() {
            let last = i + 1 == comps.len();
            let next = if i < present {
                let meta = &metas[i];
                match copy_dir(dir.as_fd(), name, meta) {
                    Ok(fd) => {
                        let times = crate::fsutil::times_of(&meta.stat);
                        if let Ok(again) = rustix::io::dup(&fd) {
                            copied.push((again, times));
                        }
                        fd
                    }
                    Err(_) => return StubLayer::Unsure,
                }
            } else if last && kind == Kind::File {
                let made = rustix::fs::openat(
                    &dir,
                    name.as_str(),
                    OFlags::CREATE | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o644),
                );
                if made.is_err() {
                    return StubLayer::Unsure;
                }
                break;
            } else {
                match rustix::fs::mkdirat(&dir, name.as_str(), Mode::from_raw_mode(0o755)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(_) => return StubLayer::Unsure,
                }
                match open_dir(dir.as_fd(), name) {
                    Ok(fd) => {
                        let _ = rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o755));
                        fd
                    }
                    Err(_) => return StubLayer::Unsure,
                }
            };
            dir = next;
        }
    }
    for (fd, times) in copied.iter().rev() {
        let _ = rustix::fs::futimens(fd, times);
    }
    StubLayer::Written
}
