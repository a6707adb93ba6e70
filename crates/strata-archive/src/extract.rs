//! Safe layer extraction beneath a root directory.
//!
//! Every filesystem operation is relative to a directory fd obtained with
//! `openat2(root, parent, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`; the leaf is then a single
//! path component used with `*at` calls that never follow it (`O_NOFOLLOW`,
//! `AT_SYMLINK_NOFOLLOW`). Symlinks *inside* the parent path are followed, but resolved with
//! the root as `/`, so they can never leave it; symlink targets themselves are never judged.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, Timespec, Timestamps, XattrFlags};
use rustix::io::Errno;

use crate::error::{ArchiveError, Result};

/// Copy buffer for regular file contents (large: fewer read/write syscalls).
const COPY_BUFFER_BYTES: usize = 1 << 20;
/// Warnings kept in [`ExtractStats`]; more are only counted (bounded memory).
const MAX_WARNINGS: usize = 100;
/// Longest extended attribute value we apply (Linux VFS limit XATTR_SIZE_MAX = 64 KiB).
const MAX_XATTR_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Ownership {
    /// chown to the header ids, create devices, apply `security.*` xattrs.
    #[default]
    Preserve,
    /// No chown (ownership recorded in `user.rootlesscontainers` like umoci), devices
    /// become empty files (counted), EPERM on `security.*` xattrs ignored (counted).
    Rootless,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WhiteoutMode {
    /// Delete whited-out lower paths and empty opaque directories.
    #[default]
    Apply,
    /// Write overlayfs whiteouts (char 0:0, `trusted.overlay.opaque=y`) for overlay lower dirs.
    OverlayConvert,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TargetPolicy {
    /// The root may already hold earlier layers.
    #[default]
    MayExist,
    /// Refuse a non-empty root (first layer of a fresh unpack without `--force`).
    MustBeEmpty,
}

#[derive(Debug, Clone, Default)]
pub struct ExtractOptions {
    pub ownership: Ownership,
    pub whiteouts: WhiteoutMode,
    pub target: TargetPolicy,
    /// Cap on the uncompressed tar bytes read (gzip bombs); `None` = unlimited.
    pub max_uncompressed: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtractStats {
    pub entries: u64,
    pub file_bytes: u64,
    /// Bytes of the tar stream, including anything after the end-of-archive blocks.
    pub tar_bytes: u64,
    pub devices_skipped: u64,
    pub xattrs_ignored: u64,
    pub warning_count: u64,
    pub warnings: Vec<String>,
}

impl ExtractStats {
    fn warn(&mut self, msg: String) {
        self.warning_count += 1;
        if self.warnings.len() < MAX_WARNINGS {
            self.warnings.push(msg);
        }
    }
}

struct Limited<R> {
    inner: R,
    read: u64,
    limit: Option<u64>,
}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        if let Some(limit) = self.limit
            && self.read > limit
        {
            return Err(io::Error::other(LimitHit));
        }
        Ok(n)
    }
}

#[derive(Debug)]
struct LimitHit;
impl std::fmt::Display for LimitHit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("uncompressed size limit reached")
    }
}
impl std::error::Error for LimitHit {}

fn is_limit(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<LimitHit>())
}

fn os(b: &[u8]) -> &OsStr {
    OsStr::from_bytes(b)
}

fn errno_io(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e.raw_os_error())
}

/// Split an entry name into clean components: leading `/` and `.` dropped (rooted), `..`
/// refused (an entry never climbs, even if it would stay inside).
fn components(path: &[u8]) -> std::result::Result<Vec<&[u8]>, &'static str> {
    let mut out = Vec::new();
    for c in path.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err("path contains '..'"),
            _ if c.contains(&0) => return Err("path contains NUL"),
            _ => out.push(c),
        }
    }
    Ok(out)
}

fn join(parts: &[&[u8]]) -> Vec<u8> {
    parts.join(&b'/')
}

const DIR_FLAGS: OFlags = OFlags::DIRECTORY
    .union(OFlags::RDONLY)
    .union(OFlags::CLOEXEC);

fn resolve() -> ResolveFlags {
    ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS
}

struct Extractor<'a> {
    root: OwnedFd,
    options: &'a ExtractOptions,
    stats: ExtractStats,
    /// Paths (and their ancestors) written by this layer: whiteouts never touch them.
    added: HashSet<Vec<u8>>,
    parent_cache: Option<(Vec<u8>, OwnedFd)>,
    dir_times: Vec<(Vec<u8>, u64)>,
    buffer: Vec<u8>,
}

struct Meta {
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    xattrs: Vec<(String, Vec<u8>)>,
}

fn ts(mtime: u64) -> Timestamps {
    let t = Timespec {
        tv_sec: mtime.min(i64::MAX as u64) as i64,
        tv_nsec: 0,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

/// Encode umoci's `user.rootlesscontainers` protobuf (`uint32 uid = 1; uint32 gid = 2;`).
fn rootless_record(uid: u64, gid: u64) -> Vec<u8> {
    fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    let mut out = Vec::new();
    if uid != 0 {
        out.push(0x08);
        varint(&mut out, uid);
    }
    if gid != 0 {
        out.push(0x10);
        varint(&mut out, gid);
    }
    out
}

impl Extractor<'_> {
    fn open_in_root(&self, rel: &[u8]) -> rustix::io::Result<OwnedFd> {
        let p: &[u8] = if rel.is_empty() { b"." } else { rel };
        rustix::fs::openat2(&self.root, os(p), DIR_FLAGS, Mode::empty(), resolve())
    }

    /// Parent directory fd for `parts`, creating missing directories (0755) and replacing
    /// non-directories in the way (A14).
    fn parent(&mut self, parts: &[&[u8]], create: bool) -> io::Result<Option<OwnedFd>> {
        let rel = join(parts);
        if let Some((p, fd)) = &self.parent_cache
            && *p == rel
        {
            return Ok(Some(fd.try_clone()?));
        }
        let fd = match self.open_in_root(&rel) {
            Ok(fd) => fd,
            Err(Errno::NOENT | Errno::NOTDIR) if !create => return Ok(None),
            Err(Errno::NOENT | Errno::NOTDIR) => self.create_dirs(parts)?,
            Err(e) => return Err(errno_io(e)),
        };
        self.parent_cache = Some((rel, fd.try_clone()?));
        Ok(Some(fd))
    }

    fn create_dirs(&mut self, parts: &[&[u8]]) -> io::Result<OwnedFd> {
        let mut current = self.open_in_root(b"").map_err(errno_io)?;
        for i in 0..parts.len() {
            let prefix = join(&parts[..=i]);
            match self.open_in_root(&prefix) {
                Ok(fd) => {
                    current = fd;
                    continue;
                }
                Err(Errno::NOENT | Errno::NOTDIR) => {}
                Err(e) => return Err(errno_io(e)),
            }
            let name = os(parts[i]);
            match rustix::fs::statat(&current, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {}
                Ok(_) => {
                    // A file or dangling symlink where a directory must be: replace it.
                    rustix::fs::unlinkat(&current, name, AtFlags::empty()).map_err(errno_io)?;
                    self.parent_cache = None;
                    rustix::fs::mkdirat(&current, name, Mode::from_raw_mode(0o755))
                        .map_err(errno_io)?;
                }
                Err(Errno::NOENT) => {
                    rustix::fs::mkdirat(&current, name, Mode::from_raw_mode(0o755))
                        .map_err(errno_io)?;
                }
                Err(e) => return Err(errno_io(e)),
            }
            current =
                rustix::fs::openat(&current, name, DIR_FLAGS | OFlags::NOFOLLOW, Mode::empty())
                    .map_err(errno_io)?;
        }
        Ok(current)
    }

    fn remove_all(&mut self, dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
        self.parent_cache = None;
        match rustix::fs::statat(dir, os(name), AtFlags::SYMLINK_NOFOLLOW) {
            Err(Errno::NOENT) => return Ok(()),
            Err(e) => return Err(errno_io(e)),
            Ok(st) if FileType::from_raw_mode(st.st_mode) != FileType::Directory => {
                return rustix::fs::unlinkat(dir, os(name), AtFlags::empty()).map_err(errno_io);
            }
            Ok(_) => {}
        }
        let fd = rustix::fs::openat(dir, os(name), DIR_FLAGS | OFlags::NOFOLLOW, Mode::empty())
            .map_err(errno_io)?;
        self.prune(fd.as_fd(), None)?;
        rustix::fs::unlinkat(dir, os(name), AtFlags::REMOVEDIR).map_err(errno_io)
    }

    /// Remove the children of `dir`; with `keep = Some(prefix)`, children this layer added
    /// (prefix/child in `added`) are kept and descended into instead.
    fn prune(&mut self, dir: BorrowedFd<'_>, keep: Option<&[u8]>) -> io::Result<()> {
        let names: Vec<(Vec<u8>, FileType)> = {
            let mut d = rustix::fs::Dir::read_from(dir).map_err(errno_io)?;
            let mut v = Vec::new();
            for e in d.by_ref() {
                let e = e.map_err(errno_io)?;
                let n = e.file_name().to_bytes();
                if n != b"." && n != b".." {
                    v.push((n.to_vec(), e.file_type()));
                }
            }
            v
        };
        for (name, _ft) in names {
            match keep {
                Some(prefix) => {
                    let full = if prefix.is_empty() {
                        name.clone()
                    } else {
                        join(&[prefix, &name])
                    };
                    if self.added.contains(&full) {
                        if let Ok(sub) = rustix::fs::openat(
                            dir,
                            os(&name),
                            DIR_FLAGS | OFlags::NOFOLLOW,
                            Mode::empty(),
                        ) {
                            self.prune(sub.as_fd(), Some(&full))?;
                        }
                    } else {
                        self.remove_all(dir, &name)?;
                    }
                }
                None => self.remove_all(dir, &name)?,
            }
        }
        Ok(())
    }

    fn mark_added(&mut self, parts: &[&[u8]]) {
        for i in 1..=parts.len() {
            let p = join(&parts[..i]);
            if !self.added.contains(&p) {
                self.added.insert(p);
            }
        }
    }

    fn apply_xattrs(&mut self, fd: BorrowedFd<'_>, entry: &[u8], xattrs: &[(String, Vec<u8>)]) {
        for (name, value) in xattrs {
            if name.starts_with("trusted.overlay.") || name.starts_with("user.overlay.") {
                // Overlay internals are never applied raw (CVE-2021-41103 class).
                self.stats.xattrs_ignored += 1;
                continue;
            }
            if value.len() > MAX_XATTR_BYTES {
                self.stats.xattrs_ignored += 1;
                continue;
            }
            match rustix::fs::fsetxattr(fd, name.as_str(), value, XattrFlags::empty()) {
                Ok(()) => {}
                Err(e) => {
                    self.stats.xattrs_ignored += 1;
                    let rootless_eperm = self.options.ownership == Ownership::Rootless
                        && matches!(e, Errno::PERM | Errno::ACCESS);
                    if !rootless_eperm {
                        self.stats.warn(format!(
                            "{}: xattr {name} not applied: {e}",
                            String::from_utf8_lossy(entry)
                        ));
                    }
                }
            }
        }
    }

    fn apply_fd_meta(
        &mut self,
        fd: BorrowedFd<'_>,
        entry: &[u8],
        meta: &Meta,
        times: bool,
    ) -> io::Result<()> {
        match self.options.ownership {
            Ownership::Preserve => {
                rustix::fs::fchown(
                    fd,
                    Some(rustix::fs::Uid::from_raw(meta.uid as u32)),
                    Some(rustix::fs::Gid::from_raw(meta.gid as u32)),
                )
                .map_err(errno_io)?;
            }
            Ownership::Rootless => {
                if meta.uid != 0 || meta.gid != 0 {
                    let rec = rootless_record(meta.uid, meta.gid);
                    let _ = rustix::fs::fsetxattr(
                        fd,
                        "user.rootlesscontainers",
                        &rec,
                        XattrFlags::empty(),
                    );
                }
            }
        }
        // chmod after chown: chown clears setuid/setgid.
        rustix::fs::fchmod(fd, Mode::from_raw_mode(meta.mode & 0o7777)).map_err(errno_io)?;
        self.apply_xattrs(fd, entry, &meta.xattrs);
        if times {
            rustix::fs::futimens(fd, &ts(meta.mtime)).map_err(errno_io)?;
        }
        Ok(())
    }

    fn apply_at_meta(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &[u8],
        meta: &Meta,
        chmod: bool,
    ) -> io::Result<()> {
        if self.options.ownership == Ownership::Preserve {
            rustix::fs::chownat(
                dir,
                os(name),
                Some(rustix::fs::Uid::from_raw(meta.uid as u32)),
                Some(rustix::fs::Gid::from_raw(meta.gid as u32)),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(errno_io)?;
        }
        if chmod {
            rustix::fs::chmodat(
                dir,
                os(name),
                Mode::from_raw_mode(meta.mode & 0o7777),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(errno_io)?;
        }
        rustix::fs::utimensat(dir, os(name), &ts(meta.mtime), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(errno_io)
    }

    /// Remove whatever is at `name` unless it is a directory and `keep_dir`.
    fn clear_leaf(&mut self, dir: BorrowedFd<'_>, name: &[u8], keep_dir: bool) -> io::Result<bool> {
        match rustix::fs::statat(dir, os(name), AtFlags::SYMLINK_NOFOLLOW) {
            Err(Errno::NOENT) => Ok(false),
            Err(e) => Err(errno_io(e)),
            Ok(st) => {
                let is_dir = FileType::from_raw_mode(st.st_mode) == FileType::Directory;
                if is_dir && keep_dir {
                    return Ok(true);
                }
                if is_dir {
                    self.remove_all(dir, name)?;
                } else {
                    rustix::fs::unlinkat(dir, os(name), AtFlags::empty()).map_err(errno_io)?;
                }
                Ok(false)
            }
        }
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<()> {
        let raw_path = entry.path_bytes().into_owned();
        let fail = |reason: &str, e: Option<io::Error>| ArchiveError::entry(&raw_path, reason, e);
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            tar::EntryType::XGlobalHeader
                | tar::EntryType::XHeader
                | tar::EntryType::GNULongName
                | tar::EntryType::GNULongLink
        ) {
            return Ok(());
        }
        let parts = components(&raw_path).map_err(|r| fail(r, None))?;
        self.stats.entries += 1;
        let Some((&leaf, parent_parts)) = parts.split_last() else {
            if kind.is_dir() {
                // "./" — the root itself: never replaced, its metadata left to the caller.
                return Ok(());
            }
            return Err(fail("entry would replace the extraction root", None));
        };
        let header = entry.header().clone();
        let mut meta = Meta {
            mode: header.mode().map_err(|e| fail("bad mode", Some(e)))? & 0o7777,
            uid: header.uid().map_err(|e| fail("bad uid", Some(e)))?,
            gid: header.gid().map_err(|e| fail("bad gid", Some(e)))?,
            mtime: header.mtime().unwrap_or(0),
            xattrs: Vec::new(),
        };
        if let Ok(Some(exts)) = entry.pax_extensions() {
            for ext in exts {
                let ext = ext.map_err(|e| fail("bad PAX record", Some(e)))?;
                let key = ext.key_bytes();
                let value = ext.value_bytes();
                let num = || {
                    std::str::from_utf8(value)
                        .ok()
                        .and_then(|s| s.split('.').next()?.parse::<u64>().ok())
                };
                if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                    if let Ok(name) = std::str::from_utf8(name) {
                        meta.xattrs.push((name.to_string(), value.to_vec()));
                    }
                } else if key == b"uid" {
                    meta.uid = num().unwrap_or(meta.uid);
                } else if key == b"gid" {
                    meta.gid = num().unwrap_or(meta.gid);
                } else if key == b"mtime" {
                    meta.mtime = num().unwrap_or(meta.mtime);
                }
            }
        }

        // Whiteouts.
        if let Some(target) = leaf.strip_prefix(b".wh.") {
            return self
                .whiteout(parent_parts, target)
                .map_err(|e| fail("applying whiteout", Some(e)));
        }

        let full = join(&parts);
        let parent = self
            .parent(parent_parts, true)
            .map_err(|e| fail("opening parent directory", Some(e)))?
            .ok_or_else(|| fail("parent directory missing", None))?;
        let p = parent.as_fd();
        self.mark_added(&parts);
        match kind {
            tar::EntryType::Directory => {
                let exists = self
                    .clear_leaf(p, leaf, true)
                    .map_err(|e| fail("replacing", Some(e)))?;
                if !exists {
                    rustix::fs::mkdirat(p, os(leaf), Mode::from_raw_mode(0o700))
                        .map_err(|e| fail("mkdir", Some(errno_io(e))))?;
                }
                let fd =
                    rustix::fs::openat(p, os(leaf), DIR_FLAGS | OFlags::NOFOLLOW, Mode::empty())
                        .map_err(|e| fail("opening directory", Some(errno_io(e))))?;
                self.apply_fd_meta(fd.as_fd(), &raw_path, &meta, false)
                    .map_err(|e| fail("setting metadata", Some(e)))?;
                self.dir_times.push((full, meta.mtime));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                if kind == tar::EntryType::GNUSparse {
                    return Err(fail("GNU sparse entries are not supported", None));
                }
                self.clear_leaf(p, leaf, false)
                    .map_err(|e| fail("replacing", Some(e)))?;
                let fd = rustix::fs::openat(
                    p,
                    os(leaf),
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(|e| fail("creating file", Some(errno_io(e))))?;
                let mut file = File::from(fd);
                if self.buffer.is_empty() {
                    self.buffer = vec![0u8; COPY_BUFFER_BYTES];
                }
                loop {
                    let n = match entry.read(&mut self.buffer) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) if is_limit(&e) => return Err(limit_err(self.options)),
                        Err(e) => return Err(fail("reading contents", Some(e))),
                    };
                    file.write_all(&self.buffer[..n])
                        .map_err(|e| fail("writing file", Some(e)))?;
                    self.stats.file_bytes += n as u64;
                }
                self.apply_fd_meta(file.as_fd(), &raw_path, &meta, true)
                    .map_err(|e| fail("setting metadata", Some(e)))?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| fail("symlink without target", None))?
                    .into_owned();
                if target.contains(&0) {
                    return Err(fail("symlink target contains NUL", None));
                }
                self.clear_leaf(p, leaf, false)
                    .map_err(|e| fail("replacing", Some(e)))?;
                rustix::fs::symlinkat(os(&target), p, os(leaf))
                    .map_err(|e| fail("symlink", Some(errno_io(e))))?;
                self.apply_at_meta(p, leaf, &meta, false)
                    .map_err(|e| fail("setting metadata", Some(e)))?;
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| fail("hardlink without target", None))?
                    .into_owned();
                let tparts = components(&target)
                    .map_err(|r| fail(&format!("hardlink target: {r}"), None))?;
                let Some((&tleaf, tparent)) = tparts.split_last() else {
                    return Err(fail("hardlink to the root", None));
                };
                let tdir = self
                    .parent(tparent, false)
                    .map_err(|e| fail("opening hardlink target", Some(e)))?
                    .ok_or_else(|| fail("hardlink target not inside the root", None))?;
                let tst = rustix::fs::statat(&tdir, os(tleaf), AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| fail("hardlink target not inside the root", Some(errno_io(e))))?;
                if let Ok(cur) = rustix::fs::statat(p, os(leaf), AtFlags::SYMLINK_NOFOLLOW)
                    && cur.st_ino == tst.st_ino
                    && cur.st_dev == tst.st_dev
                {
                    return Ok(());
                }
                // Re-open the parent: clearing may have invalidated the cached fds.
                self.clear_leaf(p, leaf, false)
                    .map_err(|e| fail("replacing", Some(e)))?;
                rustix::fs::linkat(&tdir, os(tleaf), p, os(leaf), AtFlags::empty())
                    .map_err(|e| fail("hardlink", Some(errno_io(e))))?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                self.clear_leaf(p, leaf, false)
                    .map_err(|e| fail("replacing", Some(e)))?;
                let fifo = kind == tar::EntryType::Fifo;
                if !fifo && self.options.ownership == Ownership::Rootless {
                    self.stats.devices_skipped += 1;
                    self.stats.warn(format!(
                        "{}: device replaced by an empty file (rootless)",
                        String::from_utf8_lossy(&raw_path)
                    ));
                    let fd = rustix::fs::openat(
                        p,
                        os(leaf),
                        OFlags::WRONLY
                            | OFlags::CREATE
                            | OFlags::EXCL
                            | OFlags::NOFOLLOW
                            | OFlags::CLOEXEC,
                        Mode::from_raw_mode(0o600),
                    )
                    .map_err(|e| fail("creating file", Some(errno_io(e))))?;
                    self.apply_fd_meta(fd.as_fd(), &raw_path, &meta, true)
                        .map_err(|e| fail("setting metadata", Some(e)))?;
                    return Ok(());
                }
                let (ft, dev) = match kind {
                    tar::EntryType::Fifo => (FileType::Fifo, 0),
                    _ => {
                        let major = header.device_major().ok().flatten().unwrap_or(0);
                        let minor = header.device_minor().ok().flatten().unwrap_or(0);
                        let ft = if kind == tar::EntryType::Char {
                            FileType::CharacterDevice
                        } else {
                            FileType::BlockDevice
                        };
                        (ft, rustix::fs::makedev(major, minor))
                    }
                };
                rustix::fs::mknodat(p, os(leaf), ft, Mode::from_raw_mode(meta.mode & 0o777), dev)
                    .map_err(|e| fail("mknod", Some(errno_io(e))))?;
                self.apply_at_meta(p, leaf, &meta, true)
                    .map_err(|e| fail("setting metadata", Some(e)))?;
            }
            other => {
                self.stats.warn(format!(
                    "{}: unsupported entry type {other:?} skipped",
                    String::from_utf8_lossy(&raw_path)
                ));
            }
        }
        Ok(())
    }

    fn whiteout(&mut self, parent_parts: &[&[u8]], target: &[u8]) -> io::Result<()> {
        if target == b".wh..opq" {
            return self.opaque(parent_parts);
        }
        if target.is_empty() || target == b"." || target == b".." {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "bare whiteout names nothing",
            ));
        }
        if target.starts_with(b".wh.") {
            // AUFS metadata (.wh..wh.plnk, .wh..wh.aufs): not content.
            return Ok(());
        }
        let mut full_parts = parent_parts.to_vec();
        full_parts.push(target);
        let full = join(&full_parts);
        match self.options.whiteouts {
            WhiteoutMode::Apply => {
                if self.added.contains(&full) {
                    // Whiteouts only hide lower layers, never this layer's own entries.
                    return Ok(());
                }
                let Some(dir) = self.parent(parent_parts, false)? else {
                    return Ok(());
                };
                self.clear_leaf(dir.as_fd(), target, false)?;
            }
            WhiteoutMode::OverlayConvert => {
                let dir = self
                    .parent(parent_parts, true)?
                    .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
                self.clear_leaf(dir.as_fd(), target, false)?;
                rustix::fs::mknodat(
                    dir.as_fd(),
                    os(target),
                    FileType::CharacterDevice,
                    Mode::empty(),
                    rustix::fs::makedev(0, 0),
                )
                .map_err(errno_io)?;
                self.mark_added(&full_parts);
            }
        }
        Ok(())
    }

    fn opaque(&mut self, parent_parts: &[&[u8]]) -> io::Result<()> {
        match self.options.whiteouts {
            WhiteoutMode::Apply => {
                let Some(dir) = self.parent(parent_parts, false)? else {
                    return Ok(());
                };
                let prefix = join(parent_parts);
                self.prune(dir.as_fd(), Some(&prefix))?;
            }
            WhiteoutMode::OverlayConvert => {
                let dir = self
                    .parent(parent_parts, true)?
                    .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
                let name = match self.options.ownership {
                    Ownership::Preserve => "trusted.overlay.opaque",
                    Ownership::Rootless => "user.overlay.opaque",
                };
                rustix::fs::fsetxattr(&dir, name, b"y", XattrFlags::empty()).map_err(errno_io)?;
                self.mark_added(parent_parts);
            }
        }
        Ok(())
    }
}

fn limit_err(options: &ExtractOptions) -> ArchiveError {
    ArchiveError::Limit {
        what: "uncompressed layer",
        limit: options.max_uncompressed.unwrap_or(u64::MAX),
    }
}

/// Extract one layer tar stream (already decompressed) beneath `root`, entry by entry.
/// The whole stream is read to EOF (also after the end-of-archive blocks) so a digest
/// computed by the caller's reader covers every byte. On error the root may hold a
/// partial tree: the caller removes it.
pub fn extract_layer<R: Read>(
    reader: R,
    root: &Path,
    options: &ExtractOptions,
) -> Result<ExtractStats> {
    let target_err = |reason: &str| ArchiveError::Target {
        path: root.to_path_buf(),
        reason: reason.to_string(),
    };
    let root_fd = rustix::fs::openat(
        rustix::fs::CWD,
        root,
        DIR_FLAGS | OFlags::NOFOLLOW,
        Mode::empty(),
    )
    .map_err(|e| match e {
        Errno::LOOP => target_err("is a symlink"),
        Errno::NOTDIR => target_err("not a directory"),
        e => ArchiveError::Path {
            op: "opening unpack root",
            path: root.to_path_buf(),
            source: errno_io(e),
        },
    })?;
    if options.target == TargetPolicy::MustBeEmpty {
        let mut d = rustix::fs::Dir::read_from(&root_fd).map_err(|e| ArchiveError::Path {
            op: "reading unpack root",
            path: root.to_path_buf(),
            source: errno_io(e),
        })?;
        let non_empty = d
            .by_ref()
            .any(|e| e.is_ok_and(|e| !matches!(e.file_name().to_bytes(), b"." | b"..")));
        if non_empty {
            return Err(target_err("not empty"));
        }
    }
    let mut ex = Extractor {
        root: root_fd,
        options,
        stats: ExtractStats::default(),
        added: HashSet::new(),
        parent_cache: None,
        dir_times: Vec::new(),
        buffer: Vec::new(),
    };
    let limited = Limited {
        inner: reader,
        read: 0,
        limit: options.max_uncompressed,
    };
    let mut archive = tar::Archive::new(limited);
    let entries = archive
        .entries()
        .map_err(|e| ArchiveError::io("reading layer tar", e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| {
            if is_limit(&e) {
                limit_err(options)
            } else {
                ArchiveError::io("reading layer tar", e)
            }
        })?;
        ex.entry(&mut entry)?;
    }
    // Directory times last: creating children changed them.
    let dir_times = std::mem::take(&mut ex.dir_times);
    for (path, mtime) in dir_times.iter().rev() {
        if let Ok(fd) = rustix::fs::openat2(
            &ex.root,
            os(path),
            DIR_FLAGS | OFlags::NOFOLLOW,
            Mode::empty(),
            resolve(),
        ) {
            let _ = rustix::fs::futimens(&fd, &ts(*mtime));
        }
    }
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(|e| {
        if is_limit(&e) {
            limit_err(options)
        } else {
            ArchiveError::io("draining layer stream", e)
        }
    })?;
    ex.stats.tar_bytes = rest.read;
    Ok(ex.stats)
}
