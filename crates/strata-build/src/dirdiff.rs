//! The layer of a RUN step that ran in a plain directory (the fallback when overlayfs is
//! unavailable): a snapshot of every path's identity before the step, compared with the tree
//! after it.
//!
//! A path is unchanged when it is the same inode (device, inode number) with the same ctime
//! and mtime: the kernel updates ctime on every content, mode, owner, link count or xattr
//! change, and a process cannot set it. Changed and new entries are written with their
//! metadata and xattrs (hard links among them as links), paths gone become `.wh.` whiteouts
//! (only the top-most gone path; none below a path that is now a non-directory, which
//! replaces it anyway). Cost: one `lstat` per path of the root filesystem, plus the changes.
//! Nothing is followed: every directory is opened relative to its parent with `O_NOFOLLOW`.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{AtFlags, Mode, OFlags};
use strata_archive::{DeviceKind, EntryMeta, TarBuilder};

use crate::BuildError;
use crate::source::{FileKind, FileStat, errno_io, list_fd};
use crate::tree::Name;

/// First guess for an xattr name list or value (grown on ERANGE up to the VFS limit).
const XATTR_BUFFER_BYTES: usize = 1024;
/// Largest xattr name list or value (Linux XATTR_LIST_MAX / XATTR_SIZE_MAX).
const MAX_XATTR_BYTES: usize = 64 * 1024;

const READ_DIR: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// What identifies a path's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ident {
    dev: u64,
    ino: u64,
    ctime: (i64, i64),
    mtime: (i64, i64),
    is_dir: bool,
}

impl Ident {
    fn of(st: &FileStat) -> Ident {
        Ident {
            dev: st.dev,
            ino: st.ino,
            ctime: (st.ctime, st.ctime_nsec),
            mtime: (st.mtime, st.mtime_nsec),
            is_dir: st.kind == FileKind::Dir,
        }
    }
}

/// Every path below a root (root-relative, `/`-joined) with its identity.
pub(crate) struct Snapshot {
    entries: HashMap<Vec<u8>, Ident>,
}

fn join(prefix: &[u8], name: &[u8]) -> Vec<u8> {
    let mut v = prefix.to_vec();
    if !v.is_empty() {
        v.push(b'/');
    }
    v.extend_from_slice(name);
    v
}

fn open_root(root: &Path) -> io::Result<OwnedFd> {
    rustix::fs::open(root, READ_DIR, Mode::empty()).map_err(errno_io)
}

fn walk(
    dir: &OwnedFd,
    prefix: &[u8],
    visit: &mut dyn FnMut(&OwnedFd, &[u8], &Name, &FileStat) -> io::Result<()>,
) -> io::Result<()> {
    for name in list_fd(dir)? {
        let rel = join(prefix, &name);
        let st = rustix::fs::statat(dir, OsStr::from_bytes(&name), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(errno_io)?;
        let st = FileStat::from_raw(&st);
        visit(dir, &rel, &name, &st)?;
        if st.kind == FileKind::Dir {
            let sub = rustix::fs::openat(dir, OsStr::from_bytes(&name), READ_DIR, Mode::empty())
                .map_err(errno_io)?;
            walk(&sub, &rel, visit)?;
        }
    }
    Ok(())
}

impl Snapshot {
    pub(crate) fn take(root: &Path) -> Result<Snapshot, BuildError> {
        let fd = open_root(root).map_err(|e| BuildError::io(root, "cannot open the rootfs", e))?;
        let mut entries = HashMap::new();
        walk(&fd, b"", &mut |_, rel, _, st| {
            entries.insert(rel.to_vec(), Ident::of(st));
            Ok(())
        })
        .map_err(|e| BuildError::io(root, "cannot read the rootfs before the step", e))?;
        Ok(Snapshot { entries })
    }
}

fn xattrs(fd: BorrowedFd<'_>) -> io::Result<Vec<(String, Vec<u8>)>> {
    let mut names = vec![0u8; XATTR_BUFFER_BYTES];
    let n = loop {
        match rustix::fs::flistxattr(fd, &mut names[..]) {
            Ok(n) => break n,
            Err(rustix::io::Errno::RANGE) if names.len() < MAX_XATTR_BYTES => {
                names = vec![0u8; MAX_XATTR_BYTES];
            }
            Err(rustix::io::Errno::NOTSUP) => return Ok(Vec::new()),
            Err(e) => return Err(errno_io(e)),
        }
    };
    let mut out = Vec::new();
    for raw in names[..n].split(|&b| b == 0) {
        let Ok(name) = std::str::from_utf8(raw) else {
            continue;
        };
        // Overlay internals and host policy are not content (as in strata-archive).
        if name.is_empty()
            || name.starts_with("trusted.overlay.")
            || name.starts_with("user.overlay.")
            || name == "security.selinux"
        {
            continue;
        }
        let mut value = vec![0u8; XATTR_BUFFER_BYTES];
        let len = loop {
            match rustix::fs::fgetxattr(fd, name, &mut value[..]) {
                Ok(len) => break Some(len),
                Err(rustix::io::Errno::RANGE) if value.len() < MAX_XATTR_BYTES => {
                    value = vec![0u8; MAX_XATTR_BYTES];
                }
                Err(rustix::io::Errno::NODATA) => break None,
                Err(e) => return Err(errno_io(e)),
            }
        };
        if let Some(len) = len {
            value.truncate(len);
            out.push((name.to_string(), value));
        }
    }
    out.sort();
    Ok(out)
}

fn meta_of(st: &FileStat) -> EntryMeta {
    EntryMeta {
        mode: st.mode,
        uid: st.uid,
        gid: st.gid,
        mtime: st.mtime_secs(),
        ..Default::default()
    }
}

/// Write the changes of `root` since `before` into `tar`.
pub(crate) fn write_diff<W: Write>(
    root: &Path,
    before: &Snapshot,
    tar: &mut TarBuilder<W>,
) -> Result<(), BuildError> {
    let fd = open_root(root).map_err(|e| BuildError::io(root, "cannot open the rootfs", e))?;
    // Present paths: are they directories now?
    let mut present: HashMap<Vec<u8>, bool> = HashMap::new();
    let mut links: HashMap<(u64, u64), Vec<u8>> = HashMap::new();
    let mut failure: Option<BuildError> = None;
    let shown = |rel: &[u8]| root.join(OsStr::from_bytes(rel));
    walk(&fd, b"", &mut |dir, rel, name, st| {
        present.insert(rel.to_vec(), st.kind == FileKind::Dir);
        if before.entries.get(rel) == Some(&Ident::of(st)) {
            return Ok(());
        }
        let archive = |r: strata_archive::Result<()>| {
            r.map_err(|e| {
                BuildError::archive(
                    format!(
                        "writing the RUN layer entry {}",
                        String::from_utf8_lossy(rel)
                    ),
                    e,
                )
            })
        };
        let mut meta = meta_of(st);
        let name = OsStr::from_bytes(name);
        let result = match st.kind {
            FileKind::Dir => {
                let sub =
                    rustix::fs::openat(dir, name, READ_DIR, Mode::empty()).map_err(errno_io)?;
                meta.xattrs = xattrs(sub.as_fd())?;
                archive(tar.append_dir(rel, &meta))
            }
            FileKind::File => {
                if st.nlink > 1 {
                    if let Some(first) = links.get(&(st.dev, st.ino)) {
                        return archive_io(
                            archive(tar.append_hardlink(rel, &meta, first)),
                            &mut failure,
                        );
                    }
                    links.insert((st.dev, st.ino), rel.to_vec());
                }
                let file = rustix::fs::openat(
                    dir,
                    name,
                    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(errno_io)?;
                let now = FileStat::from_raw(&rustix::fs::fstat(&file).map_err(errno_io)?);
                if (now.dev, now.ino) != (st.dev, st.ino) || now.kind != FileKind::File {
                    return Err(io::Error::other("replaced while the layer was written"));
                }
                meta.xattrs = xattrs(file.as_fd())?;
                archive(tar.append_file(rel, &meta, now.size, std::fs::File::from(file)))
            }
            FileKind::Symlink => {
                let target = rustix::fs::readlinkat(dir, name, Vec::new()).map_err(errno_io)?;
                archive(tar.append_symlink(rel, &meta, target.as_bytes()))
            }
            FileKind::Fifo => archive(tar.append_fifo(rel, &meta)),
            FileKind::CharDevice | FileKind::BlockDevice => {
                let kind = if st.kind == FileKind::CharDevice {
                    DeviceKind::Char
                } else {
                    DeviceKind::Block
                };
                archive(tar.append_device(
                    rel,
                    &meta,
                    kind,
                    rustix::fs::major(st.rdev),
                    rustix::fs::minor(st.rdev),
                ))
            }
            // Sockets cannot be stored in tar.
            FileKind::Socket => Ok(()),
        };
        archive_io(result, &mut failure)
    })
    .map_err(|e| match failure.take() {
        Some(f) => f,
        None => BuildError::io(shown(b""), "cannot read the rootfs after the step", e),
    })?;
    if let Some(f) = failure {
        return Err(f);
    }
    // Whiteouts: gone paths whose parent is still a directory (a gone parent has its own
    // whiteout; a parent that became a file replaced the whole tree).
    let gone: HashSet<&Vec<u8>> = before
        .entries
        .keys()
        .filter(|p| !present.contains_key(*p))
        .collect();
    let mut whiteouts: Vec<&Vec<u8>> = gone
        .iter()
        .copied()
        .filter(|p| match p.iter().rposition(|&b| b == b'/') {
            None => true,
            Some(i) => present.get(&p[..i]) == Some(&true),
        })
        .collect();
    whiteouts.sort();
    for p in whiteouts {
        tar.append_whiteout(p).map_err(|e| {
            BuildError::archive(
                format!("writing the whiteout of {}", String::from_utf8_lossy(p)),
                e,
            )
        })?;
    }
    Ok(())
}

/// Keep an archive error aside (the walk callback returns io errors only).
fn archive_io(r: Result<(), BuildError>, failure: &mut Option<BuildError>) -> io::Result<()> {
    r.map_err(|e| {
        *failure = Some(e);
        io::Error::other("archive error")
    })
}
