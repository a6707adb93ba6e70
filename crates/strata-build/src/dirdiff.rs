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
use crate::source::{FileKind, FileStat, list_fd};
use crate::tree::Name;

const READ_DIR: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// What identifies a path's state. Directories are compared by what a layer can say about
/// them (mode, owner, xattrs, the names they hold), not by times: a directory whose mtime
/// moved only because a mount target was created and removed in it is not a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ident {
    Dir {
        dev: u64,
        ino: u64,
        mode: u32,
        uid: u64,
        gid: u64,
        /// Hash of the sorted child names and of the xattrs.
        content: u64,
    },
    Other {
        dev: u64,
        ino: u64,
        ctime: (i64, i64),
        mtime: (i64, i64),
    },
}

impl Ident {
    fn of(st: &FileStat, dir_content: Option<u64>) -> Ident {
        match dir_content {
            Some(content) => Ident::Dir {
                dev: st.dev,
                ino: st.ino,
                mode: st.mode,
                uid: st.uid,
                gid: st.gid,
                content,
            },
            None => Ident::Other {
                dev: st.dev,
                ino: st.ino,
                ctime: (st.ctime, st.ctime_nsec),
                mtime: (st.mtime, st.mtime_nsec),
            },
        }
    }
}

/// Every path below a root (root-relative, `/`-joined) with its identity, and the names
/// each directory held.
pub(crate) struct Snapshot {
    entries: HashMap<Vec<u8>, Ident>,
    children: HashMap<Vec<u8>, Vec<Name>>,
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
    rustix::fs::open(root, READ_DIR, Mode::empty()).map_err(io::Error::from)
}

fn dir_content(children: &[Name], xattrs: &[(String, Vec<u8>)]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    children.hash(&mut h);
    xattrs.hash(&mut h);
    h.finish()
}

fn stat_at(dir: &OwnedFd, name: &[u8]) -> io::Result<FileStat> {
    let st = rustix::fs::statat(dir, OsStr::from_bytes(name), AtFlags::SYMLINK_NOFOLLOW)
        .map_err(io::Error::from)?;
    Ok(FileStat::from_raw(&st))
}

fn open_dir_at(dir: &OwnedFd, name: &[u8]) -> io::Result<OwnedFd> {
    rustix::fs::openat(dir, OsStr::from_bytes(name), READ_DIR, Mode::empty())
        .map_err(io::Error::from)
}

impl Snapshot {
    pub(crate) fn take(root: &Path) -> Result<Snapshot, BuildError> {
        let mut snap = Snapshot {
            entries: HashMap::new(),
            children: HashMap::new(),
        };
        let fd = open_root(root).map_err(|e| BuildError::io(root, "cannot open the rootfs", e))?;
        snap.dir(&fd, b"")
            .map_err(|e| BuildError::io(root, "cannot read the rootfs before the step", e))?;
        Ok(snap)
    }

    fn dir(&mut self, fd: &OwnedFd, rel: &[u8]) -> io::Result<()> {
        let names = list_fd(fd)?;
        for name in &names {
            let child = join(rel, name);
            let st = stat_at(fd, name)?;
            if st.kind == FileKind::Dir {
                let sub = open_dir_at(fd, name)?;
                let content = dir_content(&list_fd(&sub)?, &xattrs(sub.as_fd())?);
                self.entries
                    .insert(child.clone(), Ident::of(&st, Some(content)));
                self.dir(&sub, &child)?;
            } else {
                self.entries.insert(child, Ident::of(&st, None));
            }
        }
        self.children.insert(rel.to_vec(), names);
        Ok(())
    }
}

fn xattrs(fd: BorrowedFd<'_>) -> io::Result<Vec<(String, Vec<u8>)>> {
    let names = strata_archive::xattr::list(fd)?;
    let mut out = Vec::new();
    for raw in names.split(|&b| b == 0) {
        let Ok(name) = std::str::from_utf8(raw) else {
            continue;
        };
        if !strata_archive::xattr::is_content(name) {
            continue;
        }
        if let Some(value) = strata_archive::xattr::get(fd, name)? {
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

/// Write the changes of `root` since `before` into `tar`, in the order the overlay diff
/// writer uses (names sorted per directory, a whiteout where the gone name sorts), so both
/// roots give the same layer for the same changes.
pub(crate) fn write_diff<W: Write>(
    root: &Path,
    before: &Snapshot,
    tar: &mut TarBuilder<W>,
) -> Result<(), BuildError> {
    let fd = open_root(root).map_err(|e| BuildError::io(root, "cannot open the rootfs", e))?;
    let mut w = DiffWriter {
        root,
        before,
        tar,
        links: HashMap::new(),
    };
    w.dir(&fd, b"")
}

struct DiffWriter<'a, W: Write> {
    root: &'a Path,
    before: &'a Snapshot,
    tar: &'a mut TarBuilder<W>,
    links: HashMap<(u64, u64), Vec<u8>>,
}

enum Item<'n> {
    Present(&'n Name),
    Gone(&'n Name),
}

impl<W: Write> DiffWriter<'_, W> {
    fn io(&self, rel: &[u8], e: io::Error) -> BuildError {
        BuildError::io(
            self.root.join(OsStr::from_bytes(rel)),
            "cannot read the rootfs after the step",
            e,
        )
    }

    fn archive(&self, rel: &[u8], r: strata_archive::Result<()>) -> Result<(), BuildError> {
        r.map_err(|e| {
            BuildError::archive(
                format!(
                    "writing the RUN layer entry {}",
                    String::from_utf8_lossy(rel)
                ),
                e,
            )
        })
    }

    fn dir(&mut self, fd: &OwnedFd, rel: &[u8]) -> Result<(), BuildError> {
        let names = list_fd(fd).map_err(|e| self.io(rel, e))?;
        // Names this directory held before and lost (its own whiteouts; below a gone name
        // nothing more is needed).
        let present: HashSet<&Name> = names.iter().collect();
        let old = self.before.children.get(rel);
        let mut items: Vec<Item<'_>> = names.iter().map(Item::Present).collect();
        if let Some(old) = old {
            items.extend(old.iter().filter(|n| !present.contains(n)).map(Item::Gone));
        }
        items.sort_by(|a, b| {
            let key = |i: &Item<'_>| match i {
                Item::Present(n) | Item::Gone(n) => (*n).clone(),
            };
            key(a).cmp(&key(b))
        });
        for item in items {
            match item {
                Item::Gone(name) => {
                    let child = join(rel, name);
                    let r = self.tar.append_whiteout(&child);
                    self.archive(&child, r)?;
                }
                Item::Present(name) => self.entry(fd, rel, name)?,
            }
        }
        Ok(())
    }

    fn entry(&mut self, dir: &OwnedFd, parent: &[u8], name: &Name) -> Result<(), BuildError> {
        let rel = join(parent, name);
        let st = stat_at(dir, name).map_err(|e| self.io(&rel, e))?;
        let os_name = OsStr::from_bytes(name);
        let mut meta = meta_of(&st);
        if st.kind == FileKind::Dir {
            let sub = open_dir_at(dir, name).map_err(|e| self.io(&rel, e))?;
            let children = list_fd(&sub).map_err(|e| self.io(&rel, e))?;
            meta.xattrs = xattrs(sub.as_fd()).map_err(|e| self.io(&rel, e))?;
            let ident = Ident::of(&st, Some(dir_content(&children, &meta.xattrs)));
            if self.before.entries.get(&rel) != Some(&ident) {
                let r = self.tar.append_dir(&rel, &meta);
                self.archive(&rel, r)?;
            }
            return self.dir(&sub, &rel);
        }
        if self.before.entries.get(&rel) == Some(&Ident::of(&st, None)) {
            return Ok(());
        }
        let r = match st.kind {
            FileKind::File => {
                if st.nlink > 1 {
                    if let Some(first) = self.links.get(&(st.dev, st.ino)) {
                        let first = first.clone();
                        let r = self.tar.append_hardlink(&rel, &meta, first);
                        return self.archive(&rel, r);
                    }
                    self.links.insert((st.dev, st.ino), rel.clone());
                }
                let file = rustix::fs::openat(
                    dir,
                    os_name,
                    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| self.io(&rel, io::Error::from(e)))?;
                let now = FileStat::from_raw(
                    &rustix::fs::fstat(&file).map_err(|e| self.io(&rel, io::Error::from(e)))?,
                );
                if (now.dev, now.ino) != (st.dev, st.ino) || now.kind != FileKind::File {
                    return Err(self.io(
                        &rel,
                        io::Error::other("replaced while the layer was written"),
                    ));
                }
                meta.xattrs = xattrs(file.as_fd()).map_err(|e| self.io(&rel, e))?;
                self.tar
                    .append_file(&rel, &meta, now.size, std::fs::File::from(file))
            }
            FileKind::Symlink => {
                let target = rustix::fs::readlinkat(dir, os_name, Vec::new())
                    .map_err(|e| self.io(&rel, io::Error::from(e)))?;
                self.tar.append_symlink(&rel, &meta, target.as_bytes())
            }
            FileKind::Fifo => self.tar.append_fifo(&rel, &meta),
            FileKind::CharDevice | FileKind::BlockDevice => {
                let kind = if st.kind == FileKind::CharDevice {
                    DeviceKind::Char
                } else {
                    DeviceKind::Block
                };
                self.tar.append_device(
                    &rel,
                    &meta,
                    kind,
                    rustix::fs::major(st.rdev),
                    rustix::fs::minor(st.rdev),
                )
            }
            // Sockets cannot be stored in tar.
            FileKind::Socket | FileKind::Dir => Ok(()),
        };
        self.archive(&rel, r)
    }
}
