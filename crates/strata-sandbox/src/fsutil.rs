//! File operations beneath an untrusted root, all through directory fds:
//! `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)` for lookups (symlinks are resolved with
//! the root as `/`, `/proc/self/fd/N`-style magic links refused), `*at` calls on a single
//! final component that are never followed.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, Stat, Timestamps};
use rustix::io::Errno;

/// Retries of `openat2` when the kernel reports a concurrent rename (EAGAIN).
const OPENAT2_RETRIES: usize = 16;

pub(crate) fn in_root(root: BorrowedFd<'_>, rel: &str, flags: OFlags) -> Result<OwnedFd, Errno> {
    let rel = if rel.is_empty() { "." } else { rel };
    let mut last = Errno::AGAIN;
    for _ in 0..OPENAT2_RETRIES {
        match rustix::fs::openat2(
            root,
            rel,
            flags | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        ) {
            Err(Errno::AGAIN) => last = Errno::AGAIN,
            other => return other,
        }
    }
    Err(last)
}

/// Split an absolute container path into clean components (`.` dropped, `..` climbs but never
/// above `/`), as BuildKit cleans mount targets.
pub(crate) fn clean_components(path: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c.to_string()),
        }
    }
    out
}

pub(crate) fn is_dir(st: &Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::Directory
}

pub(crate) fn type_name(st: &Stat) -> &'static str {
    match FileType::from_raw_mode(st.st_mode) {
        FileType::Directory => "a directory",
        FileType::RegularFile => "a regular file",
        FileType::Symlink => "a symlink",
        FileType::CharacterDevice => "a character device",
        FileType::BlockDevice => "a block device",
        FileType::Fifo => "a fifo",
        FileType::Socket => "a socket",
        FileType::Unknown => "of unknown type",
    }
}

/// Kind of mount target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Dir,
    File,
}

/// What to do when the target (last component) is a symlink or has the wrong type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Policy {
    /// Replace it (system mounts in the stub layer: the image's `/dev -> /somewhere` is hidden
    /// for the run, never followed).
    Replace,
    /// Follow symlinks inside the root (caller mounts, as BuildKit does).
    FollowInRoot,
    /// Refuse (system mounts in a plain directory root, which we must not rewrite).
    Refuse,
}

/// Options for creating missing targets.
pub(crate) struct Create<'a> {
    /// Restore the parent's atime/mtime after creating an entry in it (stub layer: the parent
    /// copied up by overlayfs then keeps the image's times).
    pub restore_parent_times: bool,
    /// Paths created (relative to the root), for removal after the run.
    pub created: &'a mut Vec<String>,
}

pub(crate) fn times_of(st: &Stat) -> Timestamps {
    Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: st.st_atime as _,
            tv_nsec: st.st_atime_nsec as _,
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: st.st_mtime as _,
            tv_nsec: st.st_mtime_nsec as _,
        },
    }
}

/// Error of a target operation: a human reason plus the errno when there is one.
#[derive(Debug)]
pub(crate) struct TargetError {
    pub reason: String,
}

fn terr(reason: impl Into<String>) -> TargetError {
    TargetError {
        reason: reason.into(),
    }
}

/// `mkdir -p` of `comps` beneath `root`; returns an `O_PATH` fd of the last directory.
/// Missing directories get `mode` and, when given, `owner`.
pub(crate) fn mkdir_p(
    root: BorrowedFd<'_>,
    comps: &[String],
    mode: Mode,
    owner: Option<(u32, u32)>,
    create: &mut Create<'_>,
) -> Result<OwnedFd, TargetError> {
    let mut dir = in_root(root, ".", OFlags::PATH | OFlags::DIRECTORY)
        .map_err(|e| terr(format!("opening the root: {e}")))?;
    let mut rel = String::new();
    for c in comps {
        if !rel.is_empty() {
            rel.push('/');
        }
        rel.push_str(c);
        match in_root(root, &rel, OFlags::PATH | OFlags::DIRECTORY) {
            Ok(fd) => dir = fd,
            Err(Errno::NOENT) => {
                let parent_times = if create.restore_parent_times {
                    rustix::fs::fstat(&dir).ok().map(|st| times_of(&st))
                } else {
                    None
                };
                match rustix::fs::mkdirat(&dir, c.as_str(), mode) {
                    Ok(()) => {
                        if let Some((uid, gid)) = owner {
                            rustix::fs::chownat(
                                &dir,
                                c.as_str(),
                                Some(rustix::fs::Uid::from_raw(uid)),
                                Some(rustix::fs::Gid::from_raw(gid)),
                                AtFlags::SYMLINK_NOFOLLOW,
                            )
                            .map_err(|e| terr(format!("chown /{rel}: {e}")))?;
                        }
                        // mkdirat applies the umask; set the exact mode.
                        let _ = rustix::fs::chmodat(&dir, c.as_str(), mode, AtFlags::empty());
                        create.created.push(rel.clone());
                        if let Some(t) = parent_times {
                            let _ = rustix::fs::utimensat(&dir, "", &t, AtFlags::EMPTY_PATH);
                        }
                    }
                    Err(Errno::EXIST) => {}
                    Err(e) => return Err(terr(format!("mkdir /{rel}: {e}"))),
                }
                dir = match in_root(root, &rel, OFlags::PATH | OFlags::DIRECTORY) {
                    Ok(fd) => fd,
                    Err(Errno::NOENT) => {
                        return Err(terr(format!("/{rel} is a symlink to a missing directory")));
                    }
                    Err(e) => return Err(terr(format!("/{rel}: {e}"))),
                };
            }
            Err(Errno::NOTDIR) => return Err(terr(format!("/{rel} is not a directory"))),
            Err(Errno::LOOP) => {
                return Err(terr(format!(
                    "/{rel}: too many symlinks, or a magic link (refused)"
                )));
            }
            Err(e) => return Err(terr(format!("/{rel}: {e}"))),
        }
    }
    Ok(dir)
}

fn create_leaf(parent: BorrowedFd<'_>, leaf: &str, kind: Kind) -> Result<(), Errno> {
    match kind {
        Kind::Dir => {
            rustix::fs::mkdirat(parent, leaf, Mode::from_raw_mode(0o755))?;
            let _ = rustix::fs::chmodat(parent, leaf, Mode::from_raw_mode(0o755), AtFlags::empty());
            Ok(())
        }
        Kind::File => rustix::fs::openat(
            parent,
            leaf,
            OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        )
        .map(drop),
    }
}

/// Make sure `comps` exists beneath `root` as `kind`, creating it (and its parents) when
/// missing, handling a symlink or wrong type per `policy`.
pub(crate) fn ensure_target(
    root: BorrowedFd<'_>,
    comps: &[String],
    kind: Kind,
    policy: Policy,
    create: &mut Create<'_>,
) -> Result<(), TargetError> {
    ensure_target_hops(root, comps, kind, policy, create, 0)
}

/// Symlinks followed to reach a missing target (the kernel's own limit is 40).
const MAX_SYMLINK_HOPS: usize = 40;

fn ensure_target_hops(
    root: BorrowedFd<'_>,
    comps: &[String],
    kind: Kind,
    policy: Policy,
    create: &mut Create<'_>,
    hops: usize,
) -> Result<(), TargetError> {
    let Some((leaf, parents)) = comps.split_last() else {
        return Err(terr("the root itself cannot be a mount target"));
    };
    let parent = mkdir_p(root, parents, Mode::from_raw_mode(0o755), None, create)?;
    let full = comps.join("/");
    let parent_times = if create.restore_parent_times {
        rustix::fs::fstat(&parent).ok().map(|st| times_of(&st))
    } else {
        None
    };
    let want = |st: &Stat| match kind {
        Kind::Dir => is_dir(st),
        Kind::File => !is_dir(st) && FileType::from_raw_mode(st.st_mode) != FileType::Symlink,
    };
    let wanted = match kind {
        Kind::Dir => "a directory",
        Kind::File => "a file",
    };
    let mut created_now = false;
    match rustix::fs::statat(&parent, leaf.as_str(), AtFlags::SYMLINK_NOFOLLOW) {
        Err(Errno::NOENT) => {
            create_leaf(parent.as_fd(), leaf, kind)
                .map_err(|e| terr(format!("creating /{full}: {e}")))?;
            created_now = true;
        }
        Err(e) => return Err(terr(format!("stat /{full}: {e}"))),
        Ok(st) if want(&st) => {}
        Ok(st) => {
            let symlink = FileType::from_raw_mode(st.st_mode) == FileType::Symlink;
            match policy {
                Policy::Replace if !is_dir(&st) => {
                    rustix::fs::unlinkat(&parent, leaf.as_str(), AtFlags::empty())
                        .map_err(|e| terr(format!("replacing /{full}: {e}")))?;
                    create_leaf(parent.as_fd(), leaf, kind)
                        .map_err(|e| terr(format!("creating /{full}: {e}")))?;
                    created_now = true;
                }
                Policy::FollowInRoot if symlink => {
                    let flags = match kind {
                        Kind::Dir => OFlags::PATH | OFlags::DIRECTORY,
                        Kind::File => OFlags::PATH,
                    };
                    match in_root(root, &full, flags) {
                        Ok(fd) => {
                            let st = rustix::fs::fstat(&fd)
                                .map_err(|e| terr(format!("stat /{full}: {e}")))?;
                            if !want(&st) {
                                return Err(terr(format!(
                                    "/{full} is a symlink to {}, not {wanted}",
                                    type_name(&st)
                                )));
                            }
                        }
                        Err(Errno::NOENT) if hops < MAX_SYMLINK_HOPS => {
                            // A dangling symlink: create its target, inside the root (an
                            // absolute target is relative to the root, `..` stops there).
                            let link = rustix::fs::readlinkat(&parent, leaf.as_str(), Vec::new())
                                .map_err(|e| terr(format!("readlink /{full}: {e}")))?;
                            let link = link.to_string_lossy();
                            let joined = if link.starts_with('/') {
                                link.into_owned()
                            } else {
                                format!("/{}/{link}", parents.join("/"))
                            };
                            let next = clean_components(&joined);
                            return ensure_target_hops(root, &next, kind, policy, create, hops + 1);
                        }
                        Err(Errno::NOENT) => {
                            return Err(terr(format!("/{full}: too many levels of symlinks")));
                        }
                        Err(Errno::NOTDIR) => {
                            return Err(terr(format!(
                                "/{full} is a symlink to a file, not {wanted}"
                            )));
                        }
                        Err(e) => return Err(terr(format!("/{full}: {e}"))),
                    }
                }
                _ => {
                    return Err(terr(format!(
                        "/{full} is {}, expected {wanted}",
                        type_name(&st)
                    )));
                }
            }
        }
    }
    if created_now {
        create.created.push(full);
        if let Some(t) = parent_times {
            let _ = rustix::fs::utimensat(&parent, "", &t, AtFlags::EMPTY_PATH);
        }
    }
    Ok(())
}

/// Remove `path` and everything below it without following symlinks, making directories
/// writable as needed (overlayfs leaves `work/work` with mode 000; steps create read-only
/// directories). The caller must own the files or be root in their user namespace.
pub(crate) fn remove_tree(path: &Path) -> Result<(), Errno> {
    let st = match rustix::fs::statat(rustix::fs::CWD, path, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e),
    };
    if !is_dir(&st) {
        return rustix::fs::unlinkat(rustix::fs::CWD, path, AtFlags::empty());
    }
    let dir = open_dir_writable(rustix::fs::CWD, path)?;
    remove_contents(dir)?;
    rustix::fs::unlinkat(rustix::fs::CWD, path, AtFlags::REMOVEDIR)
}

fn open_dir_writable<P: rustix::path::Arg + Copy>(
    parent: BorrowedFd<'_>,
    name: P,
) -> Result<OwnedFd, Errno> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match rustix::fs::openat(parent, name, flags, Mode::empty()) {
        Err(Errno::ACCESS) => {
            rustix::fs::chmodat(parent, name, Mode::from_raw_mode(0o700), AtFlags::empty())?;
            rustix::fs::openat(parent, name, flags, Mode::empty())
        }
        other => other,
    }
}

fn remove_contents(dir: OwnedFd) -> Result<(), Errno> {
    // Make sure entries can be unlinked (write + search on the directory).
    if let Ok(st) = rustix::fs::fstat(&dir)
        && st.st_mode & 0o300 != 0o300
    {
        let _ = rustix::fs::fchmod(&dir, Mode::from_raw_mode(0o700));
    }
    let mut names = Vec::new();
    {
        let mut reader = rustix::fs::Dir::read_from(&dir)?;
        while let Some(entry) = reader.read() {
            let entry = entry?;
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            names.push((entry.file_name().to_owned(), entry.file_type()));
        }
    }
    for (name, ft) in names {
        let is_dir = match ft {
            FileType::Directory => true,
            FileType::Unknown => {
                rustix::fs::statat(&dir, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW)
                    .map(|st| is_dir(&st))
                    .unwrap_or(false)
            }
            _ => false,
        };
        if is_dir {
            let child = open_dir_writable(dir.as_fd(), name.as_c_str())?;
            remove_contents(child)?;
            rustix::fs::unlinkat(&dir, name.as_c_str(), AtFlags::REMOVEDIR)?;
        } else {
            match rustix::fs::unlinkat(&dir, name.as_c_str(), AtFlags::empty()) {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleaning() {
        assert_eq!(clean_components("/a/./b//c/"), ["a", "b", "c"]);
        assert_eq!(clean_components("/../../etc/x"), ["etc", "x"]);
        assert_eq!(clean_components("/a/b/../c"), ["a", "c"]);
        assert!(clean_components("/").is_empty());
    }

    #[test]
    fn remove_tree_handles_unwritable_dirs_and_symlinks() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("keep"), "x").unwrap();
        let d = tempfile::tempdir().unwrap();
        let t = d.path().join("t");
        std::fs::create_dir_all(t.join("a/b")).unwrap();
        std::fs::write(t.join("a/b/f"), "x").unwrap();
        std::os::unix::fs::symlink(outside.path(), t.join("a/link")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(t.join("a/b"), std::fs::Permissions::from_mode(0o555)).unwrap();
        std::fs::set_permissions(t.join("a"), std::fs::Permissions::from_mode(0o000)).unwrap();
        remove_tree(&t).unwrap();
        assert!(!t.exists());
        assert!(outside.path().join("keep").exists());
    }
}
