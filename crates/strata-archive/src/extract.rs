//! Safe layer extraction beneath a root directory.
//!
//! # How paths are resolved
//!
//! Nothing is ever joined to the root path and checked afterwards. Every operation is
//! relative to a directory fd:
//! - an entry's parent directory is opened with `openat2(root, parent,
//!   RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`: symlinks on the way are followed, but
//!   resolved with the root as `/`, so `l -> /tmp/probe` then `l/pwn` lands in
//!   `<root>/tmp/probe/pwn`, and `..` never climbs above the root;
//! - missing parents are created one component at a time with `mkdirat` on a held fd,
//!   descending with `openat(O_NOFOLLOW)`; a symlink met on the way is resolved again by
//!   `openat2(RESOLVE_IN_ROOT)`, and a dangling one is followed textually (its target
//!   created inside the root, as containerd does);
//! - the leaf is a single name used with `*at` calls that never follow it (`O_NOFOLLOW |
//!   O_CREAT | O_EXCL`, `AT_SYMLINK_NOFOLLOW`, `mknodat`, `symlinkat`, `linkat` without
//!   `AT_SYMLINK_FOLLOW`); metadata goes through the fd the entry was created with.
//!
//! So a tree that changes under us (RELIABILITY A25) can make extraction fail, never write
//! outside the root. Symlink *targets* are stored as they are: they may point anywhere.
//!
//! # Layer semantics
//!
//! - Entry names are rooted (`/etc/x` → `<root>/etc/x`); a `..` component is an error.
//! - A later entry replaces what is there (a file, a symlink, a whole directory tree),
//!   except that a directory entry over a directory keeps its contents and updates its
//!   metadata. A non-directory in the way of a path becomes a directory (A14).
//! - Whiteouts (`.wh.name`) and opaque markers (`.wh..wh..opq`) hide *lower* layers only:
//!   whatever this layer writes survives them, in any order (A12, A13). Duplicate entries:
//!   the last one wins. A bare `.wh.`, `.wh..` or `.wh...` is an error (A11). Other
//!   `.wh..wh.*` names (AUFS bookkeeping) are skipped.
//! - [`WhiteoutMode::OverlayConvert`] writes overlayfs whiteouts instead (char 0:0 devices,
//!   `trusted.overlay.opaque=y`, or `user.overlay.opaque=y` when rootless), for lower
//!   directories of an overlay mount.
//! - Hard link targets are archive paths resolved inside the root; a target that does not
//!   exist there is an error.
//! - Ownership ([`Ownership::Preserve`]): chown to the header ids, then chmod (keeping
//!   setuid/setgid), then xattrs (`security.capability` survives), then times.
//!   [`Ownership::Rootless`]: no chown (ids recorded in `user.rootlesscontainers` like
//!   umoci), devices become empty files with a warning, FIFOs are kept, xattrs that cannot
//!   be set are warnings; read-only directories are made writable while needed.
//! - `trusted.overlay.*` / `user.overlay.*` xattrs from the layer are never applied.
//! - The unpack root itself is never replaced or chmod'ed; a root that is a symlink is
//!   refused ([`TargetPolicy`]).
//!
//! On error the root holds a partial tree; the caller removes it (or marks it unusable).

use std::collections::HashSet;
use std::collections::VecDeque;
use std::collections::hash_map::RandomState;
use std::ffi::OsStr;
use std::fs::File;
use std::hash::{BuildHasher, Hasher};
use std::io::{self, BufReader, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::rc::Rc;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, Timespec, Timestamps, XattrFlags};
use rustix::io::Errno;

use crate::error::{ArchiveError, Result};
use crate::tarread::{EntryKind, TarEntry, TarReader};

/// Copy buffer for regular file contents (large: fewer read/write syscalls).
const COPY_BUFFER_BYTES: usize = 1 << 20;
/// Buffer in front of the tar reader (headers are 512-byte reads).
const INPUT_BUFFER_BYTES: usize = 256 * 1024;
/// Warnings kept in [`ExtractStats`]; more are only counted (bounded memory).
const MAX_WARNINGS: usize = 100;
/// Longest extended attribute value applied (Linux VFS limit XATTR_SIZE_MAX = 64 KiB).
const MAX_XATTR_BYTES: usize = 64 * 1024;
/// Symlinks followed while creating one path (the kernel's own limit is 40).
const MAX_SYMLINK_JUMPS: usize = 40;

/// How ownership and privileged file types are handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Ownership {
    /// chown to the header ids, create devices, apply `security.*`/`trusted.*` xattrs
    /// (needs root or a user namespace mapping the ids).
    #[default]
    Preserve,
    /// No chown (ownership recorded in `user.rootlesscontainers` like umoci), devices
    /// become empty files (warning), xattrs that cannot be set are warnings.
    Rootless,
}

/// What whiteout entries do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WhiteoutMode {
    /// Delete whited-out lower paths and the lower contents of opaque directories.
    #[default]
    Apply,
    /// Write overlayfs whiteouts (char 0:0, `*.overlay.opaque=y`), for overlay lower dirs.
    OverlayConvert,
}

/// What the unpack root may already hold. A root that is a symlink or not a directory is
/// always refused (never followed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TargetPolicy {
    /// The root must be empty (a fresh unpack; `--force` maps to `MayExist`).
    #[default]
    MustBeEmpty,
    /// The root may hold earlier layers.
    MayExist,
}

/// Smallest default cap on uncompressed layer content ([`UncompressedLimit::Default`]):
/// real images rarely hold more, and a decompression bomb stops here at the latest.
pub const DEFAULT_MIN_UNCOMPRESSED: u64 = 8 << 30;
/// Default cap as a multiple of the compressed size ([`UncompressedLimit::Default`]).
/// Real layers compress 2-10x (20-50x for logs or zero-filled files); gzip's ceiling is
/// about 1,000x and zstd's has none, which is what bombs use (RELIABILITY A19).
pub const DEFAULT_UNCOMPRESSED_RATIO: u64 = 100;

/// Cap on the uncompressed bytes decompressed from layers (decompression bombs, A19).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UncompressedLimit {
    /// The larger of [`DEFAULT_MIN_UNCOMPRESSED`] and [`DEFAULT_UNCOMPRESSED_RATIO`] × the
    /// compressed size.
    #[default]
    Default,
    /// At most this many bytes.
    Bytes(u64),
    /// No cap.
    Unlimited,
}

impl UncompressedLimit {
    /// The cap in bytes for content whose compressed size is `compressed`.
    pub fn for_compressed(self, compressed: u64) -> Option<u64> {
        match self {
            UncompressedLimit::Default => Some(
                compressed
                    .saturating_mul(DEFAULT_UNCOMPRESSED_RATIO)
                    .max(DEFAULT_MIN_UNCOMPRESSED),
            ),
            UncompressedLimit::Bytes(n) => Some(n),
            UncompressedLimit::Unlimited => None,
        }
    }
}

/// How to extract a layer.
#[derive(Debug, Clone, Default)]
pub struct ExtractOptions {
    pub ownership: Ownership,
    pub whiteouts: WhiteoutMode,
    pub target: TargetPolicy,
    /// Cap on the uncompressed tar bytes read (decompression bombs, A19); `None` means no
    /// cap. Exceeding it is [`ArchiveError::Limit`].
    pub max_uncompressed: Option<u64>,
}

/// What an extraction did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtractStats {
    /// Entries processed (whiteouts included, extension headers not).
    pub entries: u64,
    /// Bytes of regular file contents written.
    pub file_bytes: u64,
    /// Bytes of the uncompressed stream read, including anything after the end blocks.
    pub tar_bytes: u64,
    /// Bytes after the end-of-archive marker (ignored; a warning when not all zero).
    pub trailing_bytes: u64,
    /// Devices written as empty files (rootless).
    pub devices_skipped: u64,
    /// Extended attributes not applied (overlay internals, too large, refused).
    pub xattrs_ignored: u64,
    /// [`WhiteoutMode::OverlayConvert`]: whiteouts and opaque markers under a directory
    /// this layer does not itself declare. In an overlay such a directory masks whatever
    /// the lower layers have there (a symlink to another directory, typically), where
    /// applying the layer onto its lower layers resolves through it: the layer cannot
    /// serve as an overlay lower directory of its own.
    pub whiteouts_under_undeclared_dirs: u64,
    pub warning_count: u64,
    /// The first warnings (at most 100), each naming the entry.
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

fn os(b: &[u8]) -> &OsStr {
    OsStr::from_bytes(b)
}

/// Split an entry name into components: leading `/` and `.` dropped (rooted), `..`
/// refused (an entry never climbs, even if it would stay inside).
pub(crate) fn components(path: &[u8]) -> std::result::Result<Vec<&[u8]>, &'static str> {
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
const DIR_NOFOLLOW: OFlags = DIR_FLAGS.union(OFlags::NOFOLLOW);
const CREATE_FILE: OFlags = OFlags::WRONLY
    .union(OFlags::CREATE)
    .union(OFlags::EXCL)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

fn resolve() -> ResolveFlags {
    ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS
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
fn rootless_record(uid: u32, gid: u32) -> Vec<u8> {
    fn varint(out: &mut Vec<u8>, mut v: u32) {
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

/// Paths written by the current layer (and their ancestors), as 128-bit keyed hashes:
/// flat memory (16 bytes a path) and, with per-run random keys, no crafted collisions.
struct PathSet {
    set: HashSet<u128>,
    keys: (RandomState, RandomState),
}

impl PathSet {
    fn new() -> Self {
        PathSet {
            set: HashSet::new(),
            keys: (RandomState::new(), RandomState::new()),
        }
    }

    /// Keys of every prefix of `parts` (`a`, `a/b`, `a/b/c`).
    fn prefix_keys(&self, parts: &[&[u8]]) -> Vec<u128> {
        let mut h1 = self.keys.0.build_hasher();
        let mut h2 = self.keys.1.build_hasher();
        let mut out = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                h1.write_u8(b'/');
                h2.write_u8(b'/');
            }
            h1.write(part);
            h2.write(part);
            out.push((u128::from(h1.clone().finish()) << 64) | u128::from(h2.clone().finish()));
        }
        out
    }

    fn contains(&self, parts: &[&[u8]]) -> bool {
        self.prefix_keys(parts)
            .last()
            .is_some_and(|k| self.set.contains(k))
    }

    /// Every prefix of `parts` (`a`, `a/b`, `a/b/c`) is in the set.
    fn contains_every_prefix(&self, parts: &[&[u8]]) -> bool {
        self.prefix_keys(parts).iter().all(|k| self.set.contains(k))
    }

    /// Insert `parts` alone (not its ancestors).
    fn insert_exact(&mut self, parts: &[&[u8]]) {
        if let Some(key) = self.prefix_keys(parts).last() {
            self.set.insert(*key);
        }
    }

    /// Insert `parts` and all its ancestors.
    fn insert(&mut self, parts: &[&[u8]]) {
        for key in self.prefix_keys(parts).into_iter().rev() {
            if !self.set.insert(key) {
                // Present: its ancestors were inserted with it.
                break;
            }
        }
    }
}

/// Metadata of an entry, in the types syscalls take.
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: u64,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// A directory whose final mode and time are set after all entries (creating children
/// changes a directory's mtime; rootless also needs it writable until then).
struct DirFixup {
    path: Vec<u8>,
    mtime: u64,
    mode: Option<u32>,
}

/// A lower-layer directory made writable for a rootless extraction, restored at the end.
struct WritableFixup {
    fd: OwnedFd,
    mode: u32,
    mtime: Timestamps,
}

struct Extractor<'a> {
    root: Rc<OwnedFd>,
    options: &'a ExtractOptions,
    stats: ExtractStats,
    added: PathSet,
    /// Directories this layer has entries for (not the ones made as parents).
    declared: PathSet,
    cache: Option<(Vec<u8>, Rc<OwnedFd>)>,
    dirs: Vec<DirFixup>,
    writable: Vec<WritableFixup>,
    buffer: Vec<u8>,
}

/// Access and modification times of `st`, to be set back later.
fn times_of(st: &rustix::fs::Stat) -> Timestamps {
    Timestamps {
        last_access: Timespec {
            tv_sec: st.st_atime,
            tv_nsec: st.st_atime_nsec as _,
        },
        last_modification: Timespec {
            tv_sec: st.st_mtime,
            tv_nsec: st.st_mtime_nsec as _,
        },
    }
}

/// Add `bits` to the mode of the directory `name` in `parent`, without following a symlink
/// and without any permission on the directory itself: an `O_PATH` fd pins it (a chmod
/// cannot land on something swapped in meanwhile) and `/proc/self/fd/N` reaches exactly
/// it. Returns its stat from before, or `None` when it had the bits already. For owners
/// opening up directories of mode 000 (rootless unpacks, their walks).
pub fn add_dir_mode_bits(
    parent: BorrowedFd<'_>,
    name: &[u8],
    bits: u32,
) -> io::Result<Option<rustix::fs::Stat>> {
    let pinned = rustix::fs::openat(
        parent,
        os(name),
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(io::Error::from)?;
    let st = rustix::fs::fstat(&pinned).map_err(io::Error::from)?;
    let mode = st.st_mode & 0o7777;
    if mode & bits == bits {
        return Ok(None);
    }
    let proc_path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&pinned));
    rustix::fs::chmodat(
        rustix::fs::CWD,
        proc_path.as_str(),
        Mode::from_raw_mode(mode | bits),
        AtFlags::empty(),
    )
    .map_err(io::Error::from)?;
    Ok(Some(st))
}

fn type_of(st: &rustix::fs::Stat) -> FileType {
    FileType::from_raw_mode(st.st_mode)
}

fn is_whiteout_device(st: &rustix::fs::Stat) -> bool {
    type_of(st) == FileType::CharacterDevice && st.st_rdev == 0
}

impl Extractor<'_> {
    fn rootless(&self) -> bool {
        self.options.ownership == Ownership::Rootless
    }

    /// Run `op` on directory `dir`; rootless, a permission error makes the directory
    /// writable (restored at the end) and retries once.
    fn in_dir<T>(
        &mut self,
        dir: BorrowedFd<'_>,
        mut op: impl FnMut() -> rustix::io::Result<T>,
    ) -> rustix::io::Result<T> {
        match op() {
            Err(e @ (Errno::ACCESS | Errno::PERM)) if self.rootless() => {
                let st = rustix::fs::fstat(dir)?;
                let mode = st.st_mode & 0o7777;
                if mode & 0o300 == 0o300 {
                    // Not the directory's permissions: nothing to fix.
                    return Err(e);
                }
                let fd = rustix::io::fcntl_dupfd_cloexec(dir, 0)?;
                rustix::fs::fchmod(dir, Mode::from_raw_mode(mode | 0o300))?;
                self.writable.push(WritableFixup {
                    fd,
                    mode,
                    mtime: times_of(&st),
                });
                op()
            }
            other => other,
        }
    }

    /// Rootless: a directory we may not enter or list (a mode without u+rwx, e.g. 000 from
    /// the image) is opened up to u+rwx until the end of the layer, as umoci does; its own
    /// mode and times come back in [`Extractor::finish_dirs`]. Returns whether it did.
    fn open_up(&mut self, parent: BorrowedFd<'_>, name: &[u8]) -> io::Result<bool> {
        if !self.rootless() {
            return Ok(false);
        }
        let Some(st) = add_dir_mode_bits(parent, name, 0o700)? else {
            return Ok(false);
        };
        let fd = rustix::fs::openat(parent, os(name), DIR_NOFOLLOW, Mode::empty())
            .map_err(io::Error::from)?;
        self.writable.push(WritableFixup {
            fd,
            mode: st.st_mode & 0o7777,
            mtime: times_of(&st),
        });
        Ok(true)
    }

    /// Open (and with `create`, make) the directory `parts` beneath the root.
    fn dir(&mut self, parts: &[&[u8]], create: bool) -> io::Result<Option<Rc<OwnedFd>>> {
        if parts.is_empty() {
            return Ok(Some(Rc::clone(&self.root)));
        }
        let rel = join(parts);
        if let Some((path, fd)) = &self.cache
            && *path == rel
        {
            return Ok(Some(Rc::clone(fd)));
        }
        // Errors name the directory: the entry alone does not say which ancestor failed.
        let named = |e: io::Error| {
            io::Error::new(
                e.kind(),
                format!("directory {}: {e}", String::from_utf8_lossy(&rel)),
            )
        };
        let fd =
            match rustix::fs::openat2(&*self.root, os(&rel), DIR_FLAGS, Mode::empty(), resolve()) {
                Ok(fd) => fd,
                Err(Errno::NOENT | Errno::NOTDIR) if !create => return Ok(None),
                Err(Errno::NOENT | Errno::NOTDIR) => self.make_dirs(parts, true).map_err(named)?,
                // A directory on the way we may not enter (rootless): walked one by one.
                Err(Errno::ACCESS) if self.rootless() => match self.make_dirs(parts, create) {
                    Ok(fd) => fd,
                    Err(e) if !create && e.kind() == io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(named(e)),
                },
                Err(e) => return Err(named(io::Error::from(e))),
            };
        let fd = Rc::new(fd);
        self.cache = Some((rel, Rc::clone(&fd)));
        Ok(Some(fd))
    }

    /// `mkdir -p` beneath the root (see the module docs): plain directories are descended
    /// with `O_NOFOLLOW`, symlinks resolved again in the root, dangling symlinks followed
    /// textually, non-directories in the way replaced by directories, directories we may not
    /// enter opened up (rootless). Without `create`, a missing directory is `NotFound`.
    fn make_dirs(&mut self, parts: &[&[u8]], create: bool) -> io::Result<OwnedFd> {
        let mut pending: VecDeque<Vec<u8>> = parts.iter().map(|p| p.to_vec()).collect();
        let mut walked: Vec<Vec<u8>> = Vec::new();
        let mut current =
            rustix::io::fcntl_dupfd_cloexec(&*self.root, 0).map_err(io::Error::from)?;
        let mut jumps = 0usize;
        let mut retries = 0usize;
        let in_root = |root: &OwnedFd, walked: &[Vec<u8>]| {
            let refs: Vec<&[u8]> = walked.iter().map(Vec::as_slice).collect();
            let p = join(&refs);
            let p: &[u8] = if p.is_empty() { b"." } else { &p };
            rustix::fs::openat2(root, os(p), DIR_FLAGS, Mode::empty(), resolve())
        };
        while let Some(c) = pending.pop_front() {
            if c.is_empty() || c == b"." {
                continue;
            }
            if c == b".." {
                walked.push(c);
                current = in_root(&self.root, &walked).map_err(io::Error::from)?;
                continue;
            }
            if retries > MAX_SYMLINK_JUMPS {
                return Err(io::Error::other(
                    "directory keeps changing while being created",
                ));
            }
            match rustix::fs::openat(&current, os(&c), DIR_NOFOLLOW, Mode::empty()) {
                Ok(fd) => {
                    current = fd;
                    walked.push(c);
                }
                Err(Errno::ACCESS) if retries <= MAX_SYMLINK_JUMPS => {
                    retries += 1;
                    if !self.open_up(current.as_fd(), &c)? {
                        return Err(io::Error::from(Errno::ACCESS));
                    }
                    pending.push_front(c);
                }
                Err(Errno::NOENT) if !create => {
                    return Err(io::Error::from(io::ErrorKind::NotFound));
                }
                Err(Errno::NOENT) => {
                    let made = self.in_dir(current.as_fd(), || {
                        rustix::fs::mkdirat(&current, os(&c), Mode::from_raw_mode(0o755))
                    });
                    match made {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(io::Error::from(e)),
                    }
                    retries += 1;
                    pending.push_front(c);
                }
                Err(Errno::LOOP | Errno::NOTDIR) => {
                    let st = rustix::fs::statat(&current, os(&c), AtFlags::SYMLINK_NOFOLLOW)
                        .map_err(io::Error::from)?;
                    match type_of(&st) {
                        FileType::Symlink => {
                            jumps += 1;
                            if jumps > MAX_SYMLINK_JUMPS {
                                return Err(io::Error::from(Errno::LOOP));
                            }
                            let mut through = walked.clone();
                            through.push(c.clone());
                            match in_root(&self.root, &through) {
                                Ok(fd) => {
                                    current = fd;
                                    walked = through;
                                }
                                Err(Errno::NOENT) => {
                                    // Dangling: create what it points to, inside the root.
                                    let target =
                                        rustix::fs::readlinkat(&current, os(&c), Vec::new())
                                            .map_err(io::Error::from)?;
                                    let target = target.as_bytes();
                                    if target.starts_with(b"/") {
                                        walked.clear();
                                        current = rustix::io::fcntl_dupfd_cloexec(&*self.root, 0)
                                            .map_err(io::Error::from)?;
                                    }
                                    for part in target.split(|&b| b == b'/').rev() {
                                        pending.push_front(part.to_vec());
                                    }
                                }
                                Err(Errno::NOTDIR) => {
                                    // Points at a non-directory: replaced like one (A14).
                                    self.replace_with_dir(current.as_fd(), &c)?;
                                    pending.push_front(c);
                                }
                                Err(e) => return Err(io::Error::from(e)),
                            }
                        }
                        FileType::Directory => {
                            retries += 1;
                            pending.push_front(c);
                        }
                        _ => {
                            self.replace_with_dir(current.as_fd(), &c)?;
                            pending.push_front(c);
                        }
                    }
                }
                Err(e) => return Err(io::Error::from(e)),
            }
        }
        Ok(current)
    }

    /// A non-directory stands where a directory must be: remove it, make the directory
    /// (opaque when it replaces an overlay whiteout: lower contents stay hidden).
    fn replace_with_dir(&mut self, dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
        self.cache = None;
        let st = rustix::fs::statat(dir, os(name), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(io::Error::from)?;
        let whiteout = is_whiteout_device(&st);
        self.in_dir(dir, || {
            rustix::fs::unlinkat(dir, os(name), AtFlags::empty())
        })
        .map_err(io::Error::from)?;
        self.in_dir(dir, || {
            rustix::fs::mkdirat(dir, os(name), Mode::from_raw_mode(0o755))
        })
        .map_err(io::Error::from)?;
        if whiteout && self.options.whiteouts == WhiteoutMode::OverlayConvert {
            let fd = rustix::fs::openat(dir, os(name), DIR_NOFOLLOW, Mode::empty())
                .map_err(io::Error::from)?;
            self.set_opaque(fd.as_fd())?;
        }
        Ok(())
    }

    fn set_opaque(&mut self, dir: BorrowedFd<'_>) -> io::Result<()> {
        let name = match self.options.ownership {
            Ownership::Preserve => "trusted.overlay.opaque",
            Ownership::Rootless => "user.overlay.opaque",
        };
        rustix::fs::fsetxattr(dir, name, b"y", XattrFlags::empty()).map_err(io::Error::from)
    }

    /// Remove `name` in `dir` whatever it is (a directory with all its contents).
    fn remove_all(&mut self, dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
        self.cache = None;
        let st = match rustix::fs::statat(dir, os(name), AtFlags::SYMLINK_NOFOLLOW) {
            Err(Errno::NOENT) => return Ok(()),
            Err(e) => return Err(io::Error::from(e)),
            Ok(st) => st,
        };
        if type_of(&st) != FileType::Directory {
            return self
                .in_dir(dir, || {
                    rustix::fs::unlinkat(dir, os(name), AtFlags::empty())
                })
                .map_err(io::Error::from);
        }
        let fd = rustix::fs::openat(dir, os(name), DIR_NOFOLLOW, Mode::empty())
            .map_err(io::Error::from)?;
        self.prune(fd.as_fd(), None)?;
        self.in_dir(dir, || {
            rustix::fs::unlinkat(dir, os(name), AtFlags::REMOVEDIR)
        })
        .map_err(io::Error::from)
    }

    /// Remove the children of `dir`; with `keep = Some(path)`, children this layer wrote
    /// are kept and pruned recursively instead (opaque directories, A12).
    fn prune(&mut self, dir: BorrowedFd<'_>, keep: Option<&[&[u8]]>) -> io::Result<()> {
        let mut names = Vec::new();
        {
            let mut d = rustix::fs::Dir::read_from(dir).map_err(io::Error::from)?;
            for e in d.by_ref() {
                let e = e.map_err(io::Error::from)?;
                let n = e.file_name().to_bytes();
                if n != b"." && n != b".." {
                    names.push(n.to_vec());
                }
            }
        }
        for name in names {
            match keep {
                Some(prefix) => {
                    let mut child: Vec<&[u8]> = prefix.to_vec();
                    child.push(&name);
                    if self.added.contains(&child) {
                        if let Ok(sub) =
                            rustix::fs::openat(dir, os(&name), DIR_NOFOLLOW, Mode::empty())
                        {
                            self.prune(sub.as_fd(), Some(&child))?;
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

    fn apply_xattrs(&mut self, fd: BorrowedFd<'_>, entry: &[u8], xattrs: &[(Vec<u8>, Vec<u8>)]) {
        for (name, value) in xattrs {
            let shown = String::from_utf8_lossy(name);
            if name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay.") {
                // Overlay internals are never applied raw: they would redirect or hide
                // files once the tree is an overlay layer (CVE-2021-41103 class).
                self.stats.xattrs_ignored += 1;
                self.stats.warn(format!(
                    "{}: overlay xattr {shown} not applied",
                    String::from_utf8_lossy(entry)
                ));
                continue;
            }
            if value.len() > MAX_XATTR_BYTES || name.contains(&0) {
                self.stats.xattrs_ignored += 1;
                self.stats.warn(format!(
                    "{}: xattr {shown} too large or malformed",
                    String::from_utf8_lossy(entry)
                ));
                continue;
            }
            if let Err(e) = rustix::fs::fsetxattr(fd, os(name), value, XattrFlags::empty()) {
                self.stats.xattrs_ignored += 1;
                self.stats.warn(format!(
                    "{}: xattr {shown} not applied: {e}",
                    String::from_utf8_lossy(entry)
                ));
            }
        }
    }

    /// Ownership, mode, xattrs and (optionally) times of something open as `fd`.
    fn apply_fd_meta(
        &mut self,
        fd: BorrowedFd<'_>,
        entry: &[u8],
        meta: &Meta,
        mode: u32,
        times: bool,
    ) -> io::Result<()> {
        match self.options.ownership {
            Ownership::Preserve => rustix::fs::fchown(
                fd,
                Some(rustix::fs::Uid::from_raw(meta.uid)),
                Some(rustix::fs::Gid::from_raw(meta.gid)),
            )
            .map_err(io::Error::from)?,
            Ownership::Rootless => {
                if meta.uid != 0 || meta.gid != 0 {
                    let rec = rootless_record(meta.uid, meta.gid);
                    if let Err(e) = rustix::fs::fsetxattr(
                        fd,
                        "user.rootlesscontainers",
                        &rec,
                        XattrFlags::empty(),
                    ) {
                        self.stats.warn(format!(
                            "{}: owner {}:{} not recorded: {e}",
                            String::from_utf8_lossy(entry),
                            meta.uid,
                            meta.gid
                        ));
                    }
                }
            }
        }
        // chmod after chown: chown clears setuid/setgid.
        rustix::fs::fchmod(fd, Mode::from_raw_mode(mode)).map_err(io::Error::from)?;
        self.apply_xattrs(fd, entry, &meta.xattrs);
        if times {
            rustix::fs::futimens(fd, &ts(meta.mtime)).map_err(io::Error::from)?;
        }
        Ok(())
    }

    /// Ownership and times of a symlink or node that cannot be opened for writing.
    fn apply_at_meta(&mut self, dir: BorrowedFd<'_>, name: &[u8], meta: &Meta) -> io::Result<()> {
        if self.options.ownership == Ownership::Preserve {
            rustix::fs::chownat(
                dir,
                os(name),
                Some(rustix::fs::Uid::from_raw(meta.uid)),
                Some(rustix::fs::Gid::from_raw(meta.gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(io::Error::from)?;
        }
        rustix::fs::utimensat(dir, os(name), &ts(meta.mtime), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(io::Error::from)
    }

    /// chmod a device or FIFO without following a symlink and without opening it (opening
    /// a device can have side effects): an `O_PATH` fd pins the inode and
    /// `/proc/self/fd/N` reaches exactly it.
    fn chmod_node(&mut self, dir: BorrowedFd<'_>, name: &[u8], mode: u32) -> io::Result<()> {
        let fd = rustix::fs::openat(
            dir,
            os(name),
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(io::Error::from)?;
        let st = rustix::fs::fstat(&fd).map_err(io::Error::from)?;
        if !matches!(
            type_of(&st),
            FileType::Fifo
                | FileType::CharacterDevice
                | FileType::BlockDevice
                | FileType::RegularFile
        ) {
            return Err(io::Error::other("node was replaced while being extracted"));
        }
        if st.st_mode & 0o7777 == mode {
            return Ok(());
        }
        let proc_path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd));
        rustix::fs::chmodat(
            rustix::fs::CWD,
            proc_path.as_str(),
            Mode::from_raw_mode(mode),
            AtFlags::empty(),
        )
        .map_err(io::Error::from)
    }

    /// Whatever is at `name` goes (a directory with its contents).
    fn clear(&mut self, dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
        self.remove_all(dir, name)
    }

    fn entry<R: Read>(&mut self, tar: &mut TarReader<R>, entry: TarEntry) -> Result<()> {
        let raw_path = entry.path.clone();
        let fail = |reason: &str, e: Option<io::Error>| ArchiveError::entry(&raw_path, reason, e);
        let parts = components(&raw_path).map_err(|r| fail(r, None))?;
        self.stats.entries += 1;
        let Some((&leaf, parent_parts)) = parts.split_last() else {
            if entry.kind == EntryKind::Directory {
                // "./": the root itself is never replaced; its metadata is the caller's.
                return Ok(());
            }
            return Err(fail("entry would replace the extraction root", None));
        };

        if let Some(target) = leaf.strip_prefix(b".wh.") {
            return self
                .whiteout(parent_parts, target)
                .map_err(|e| fail("applying whiteout", Some(e)));
        }

        let id = |v: u64, what: &str| {
            u32::try_from(v)
                .ok()
                .filter(|&v| v != u32::MAX)
                .ok_or_else(|| fail(&format!("{what} {v} cannot be represented"), None))
        };
        let meta = Meta {
            mode: entry.mode & 0o7777,
            uid: id(entry.uid, "uid")?,
            gid: id(entry.gid, "gid")?,
            mtime: entry.mtime,
            xattrs: entry.xattrs.clone(),
        };

        let parent = self
            .dir(parent_parts, true)
            .map_err(|e| fail("creating parent directory", Some(e)))?
            .ok_or_else(|| fail("parent directory missing", None))?;
        let p = parent.as_fd();
        self.added.insert(&parts);
        match entry.kind {
            EntryKind::Directory => {
                self.declared.insert_exact(&parts);
                let made = self.in_dir(p, || {
                    rustix::fs::mkdirat(p, os(leaf), Mode::from_raw_mode(0o700))
                });
                match made {
                    Ok(()) => {}
                    Err(Errno::EXIST) => {
                        let st = rustix::fs::statat(p, os(leaf), AtFlags::SYMLINK_NOFOLLOW)
                            .map_err(|e| fail("stat", Some(io::Error::from(e))))?;
                        if type_of(&st) != FileType::Directory {
                            self.replace_with_dir(p, leaf)
                                .map_err(|e| fail("replacing with a directory", Some(e)))?;
                        }
                    }
                    Err(e) => return Err(fail("mkdir", Some(io::Error::from(e)))),
                }
                let fd = match rustix::fs::openat(p, os(leaf), DIR_NOFOLLOW, Mode::empty()) {
                    // A lower layer's directory we may not enter (rootless, mode 000).
                    Err(Errno::ACCESS) if self.open_up(p, leaf).unwrap_or(false) => {
                        rustix::fs::openat(p, os(leaf), DIR_NOFOLLOW, Mode::empty())
                    }
                    other => other,
                }
                .map_err(|e| fail("opening directory", Some(io::Error::from(e))))?;
                // Rootless: keep it writable and searchable until the end.
                let (now, later) = match self.options.ownership {
                    Ownership::Preserve => (meta.mode, None),
                    Ownership::Rootless => (meta.mode | 0o700, Some(meta.mode)),
                };
                self.apply_fd_meta(fd.as_fd(), &raw_path, &meta, now, false)
                    .map_err(|e| fail("setting metadata", Some(e)))?;
                self.dirs.push(DirFixup {
                    path: join(&parts),
                    mtime: meta.mtime,
                    mode: later,
                });
            }
            EntryKind::Regular => {
                let fd = self
                    .create_file(p, leaf)
                    .map_err(|e| fail("creating file", Some(e)))?;
                let mut file = File::from(fd);
                if self.buffer.is_empty() {
                    self.buffer = vec![0u8; COPY_BUFFER_BYTES];
                }
                loop {
                    let n = tar.read_data(&mut self.buffer)?;
                    if n == 0 {
                        break;
                    }
                    file.write_all(&self.buffer[..n])
                        .map_err(|e| fail("writing file", Some(e)))?;
                    self.stats.file_bytes += n as u64;
                }
                self.apply_fd_meta(file.as_fd(), &raw_path, &meta, meta.mode, true)
                    .map_err(|e| fail("setting metadata", Some(e)))?;
            }
            EntryKind::Symlink => {
                let target = entry
                    .link_target
                    .as_deref()
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| fail("symlink without target", None))?;
                let mut made = self.in_dir(p, || rustix::fs::symlinkat(os(target), p, os(leaf)));
                if made == Err(Errno::EXIST) {
                    self.clear(p, leaf)
                        .map_err(|e| fail("replacing", Some(e)))?;
                    made = self.in_dir(p, || rustix::fs::symlinkat(os(target), p, os(leaf)));
                }
                made.map_err(|e| fail("symlink", Some(io::Error::from(e))))?;
                self.apply_at_meta(p, leaf, &meta)
                    .map_err(|e| fail("setting metadata", Some(e)))?;
                if !meta.xattrs.is_empty() {
                    self.stats.xattrs_ignored += meta.xattrs.len() as u64;
                    self.stats.warn(format!(
                        "{}: xattrs of symlinks are not applied",
                        String::from_utf8_lossy(&raw_path)
                    ));
                }
            }
            EntryKind::HardLink => {
                let target = entry.link_target.as_deref().unwrap_or_default();
                let tparts = components(target)
                    .map_err(|r| fail(&format!("hard link target: {r}"), None))?;
                let Some((&tleaf, tparent)) = tparts.split_last() else {
                    return Err(fail("hard link to the root", None));
                };
                let missing = || ArchiveError::HardLinkTarget {
                    entry: String::from_utf8_lossy(&raw_path).into_owned(),
                    target: String::from_utf8_lossy(target).into_owned(),
                };
                let tdir = self
                    .dir(tparent, false)
                    .map_err(|e| fail("opening hard link target", Some(e)))?
                    .ok_or_else(missing)?;
                let tst = match rustix::fs::statat(&*tdir, os(tleaf), AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st) => st,
                    Err(Errno::NOENT) => return Err(missing()),
                    Err(e) => {
                        return Err(fail("hard link target", Some(io::Error::from(e))));
                    }
                };
                if type_of(&tst) == FileType::Directory {
                    return Err(fail("hard link to a directory", None));
                }
                let link = |this: &mut Self| {
                    this.in_dir(p, || {
                        rustix::fs::linkat(&*tdir, os(tleaf), p, os(leaf), AtFlags::empty())
                    })
                };
                match link(self) {
                    Ok(()) => {}
                    Err(Errno::EXIST) => {
                        let same = rustix::fs::statat(p, os(leaf), AtFlags::SYMLINK_NOFOLLOW)
                            .is_ok_and(|cur| cur.st_ino == tst.st_ino && cur.st_dev == tst.st_dev);
                        if !same {
                            self.clear(p, leaf)
                                .map_err(|e| fail("replacing", Some(e)))?;
                            link(self).map_err(|e| fail("hard link", Some(io::Error::from(e))))?;
                        }
                    }
                    Err(e) => return Err(fail("hard link", Some(io::Error::from(e)))),
                }
            }
            EntryKind::CharDevice | EntryKind::BlockDevice | EntryKind::Fifo => {
                let fifo = entry.kind == EntryKind::Fifo;
                if !fifo && self.rootless() {
                    self.stats.devices_skipped += 1;
                    self.stats.warn(format!(
                        "{}: device replaced by an empty file (rootless)",
                        String::from_utf8_lossy(&raw_path)
                    ));
                    let fd = self
                        .create_file(p, leaf)
                        .map_err(|e| fail("creating file", Some(e)))?;
                    self.apply_fd_meta(fd.as_fd(), &raw_path, &meta, meta.mode, true)
                        .map_err(|e| fail("setting metadata", Some(e)))?;
                    return Ok(());
                }
                let (ft, dev) = match entry.kind {
                    EntryKind::Fifo => (FileType::Fifo, 0),
                    kind => {
                        let (major, minor) = entry.device.unwrap_or((0, 0));
                        let ft = if kind == EntryKind::CharDevice {
                            FileType::CharacterDevice
                        } else {
                            FileType::BlockDevice
                        };
                        (ft, rustix::fs::makedev(major, minor))
                    }
                };
                let perm = Mode::from_raw_mode(0o600);
                let mut made = self.in_dir(p, || rustix::fs::mknodat(p, os(leaf), ft, perm, dev));
                if made == Err(Errno::EXIST) {
                    self.clear(p, leaf)
                        .map_err(|e| fail("replacing", Some(e)))?;
                    made = self.in_dir(p, || rustix::fs::mknodat(p, os(leaf), ft, perm, dev));
                }
                made.map_err(|e| fail("mknod", Some(io::Error::from(e))))?;
                self.apply_at_meta(p, leaf, &meta)
                    .and_then(|_| self.chmod_node(p, leaf, meta.mode))
                    .map_err(|e| fail("setting metadata", Some(e)))?;
            }
            EntryKind::Other(flag) => {
                self.stats.warn(format!(
                    "{}: unsupported entry type {:?} skipped",
                    String::from_utf8_lossy(&raw_path),
                    char::from(flag)
                ));
            }
        }
        Ok(())
    }

    /// `O_CREAT | O_EXCL | O_NOFOLLOW`; whatever is in the way is removed first.
    fn create_file(&mut self, dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<OwnedFd> {
        let create = |this: &mut Self| {
            this.in_dir(dir, || {
                rustix::fs::openat(dir, os(name), CREATE_FILE, Mode::from_raw_mode(0o600))
            })
        };
        match create(self) {
            Ok(fd) => Ok(fd),
            Err(Errno::EXIST) => {
                self.clear(dir, name)?;
                create(self).map_err(io::Error::from)
            }
            Err(e) => Err(io::Error::from(e)),
        }
    }

    fn whiteout(&mut self, parent_parts: &[&[u8]], target: &[u8]) -> io::Result<()> {
        if self.options.whiteouts == WhiteoutMode::OverlayConvert
            && !self.declared.contains_every_prefix(parent_parts)
        {
            self.stats.whiteouts_under_undeclared_dirs += 1;
        }
        if target == b".wh..opq" {
            return self.opaque(parent_parts);
        }
        if target.is_empty() || target == b"." || target == b".." {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "whiteout names no file (bare .wh., .wh.. or .wh...)",
            ));
        }
        if target.starts_with(b".wh.") {
            // AUFS metadata (.wh..wh.plnk, .wh..wh.aufs): not content.
            self.stats.warn(format!(
                "{}: AUFS metadata skipped",
                String::from_utf8_lossy(&join(&[&join(parent_parts), target]))
            ));
            return Ok(());
        }
        let mut full: Vec<&[u8]> = parent_parts.to_vec();
        full.push(target);
        if self.added.contains(&full) {
            // This layer wrote the path: only lower contents below it are hidden.
            let Some(dir) = self.dir(parent_parts, false)? else {
                return Ok(());
            };
            if let Ok(fd) = rustix::fs::openat(&*dir, os(target), DIR_NOFOLLOW, Mode::empty()) {
                match self.options.whiteouts {
                    WhiteoutMode::Apply => self.prune(fd.as_fd(), Some(&full))?,
                    WhiteoutMode::OverlayConvert => self.set_opaque(fd.as_fd())?,
                }
            }
            return Ok(());
        }
        match self.options.whiteouts {
            WhiteoutMode::Apply => {
                if let Some(dir) = self.dir(parent_parts, false)? {
                    self.remove_all(dir.as_fd(), target)?;
                }
            }
            WhiteoutMode::OverlayConvert => {
                let dir = self
                    .dir(parent_parts, true)?
                    .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
                let d = dir.as_fd();
                self.remove_all(d, target)?;
                self.in_dir(d, || {
                    rustix::fs::mknodat(
                        d,
                        os(target),
                        FileType::CharacterDevice,
                        Mode::empty(),
                        rustix::fs::makedev(0, 0),
                    )
                })
                .map_err(io::Error::from)?;
            }
        }
        Ok(())
    }

    fn opaque(&mut self, parts: &[&[u8]]) -> io::Result<()> {
        match self.options.whiteouts {
            WhiteoutMode::Apply => {
                // Only lower contents of the directory go. It is resolved inside the root
                // like the parent of any entry, a symlink followed (containerd, umoci and
                // the build's tree index do the same: docs/architecture.md, Decisions).
                if let Some(dir) = self.dir(parts, false)? {
                    self.prune(dir.as_fd(), Some(parts))?;
                }
            }
            WhiteoutMode::OverlayConvert => {
                // The marker lives on the directory, which exists in this layer.
                let dir = self
                    .dir(parts, true)?
                    .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
                self.set_opaque(dir.as_fd())?;
                self.added.insert(parts);
            }
        }
        Ok(())
    }

    /// Final directory modes and times, then rootless writable fixups, in reverse order.
    fn finish_dirs(&mut self) {
        let dirs = std::mem::take(&mut self.dirs);
        // Directories this layer gave a mode: their old mode is not restored over it.
        let mut set_here = HashSet::new();
        for fix in dirs.iter().rev() {
            let fd = match rustix::fs::openat2(
                &*self.root,
                os(&fix.path),
                DIR_NOFOLLOW,
                Mode::empty(),
                resolve(),
            ) {
                Ok(fd) => fd,
                // Replaced or whited out later in the layer.
                Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP) => continue,
                Err(e) => {
                    self.stats.warn(format!(
                        "{}: final metadata not set: {e}",
                        String::from_utf8_lossy(&fix.path)
                    ));
                    continue;
                }
            };
            if let Ok(st) = rustix::fs::fstat(&fd) {
                set_here.insert((st.st_dev, st.st_ino));
            }
            let result = fix
                .mode
                .map_or(Ok(()), |m| rustix::fs::fchmod(&fd, Mode::from_raw_mode(m)))
                .and_then(|_| rustix::fs::futimens(&fd, &ts(fix.mtime)));
            if let Err(e) = result {
                self.stats.warn(format!(
                    "{}: final metadata not set: {e}",
                    String::from_utf8_lossy(&fix.path)
                ));
            }
        }
        for fix in std::mem::take(&mut self.writable).into_iter().rev() {
            if rustix::fs::fstat(&fix.fd).is_ok_and(|st| set_here.contains(&(st.st_dev, st.st_ino)))
            {
                continue;
            }
            let _ = rustix::fs::fchmod(&fix.fd, Mode::from_raw_mode(fix.mode));
            let _ = rustix::fs::futimens(&fix.fd, &fix.mtime);
        }
    }
}

fn open_root(root: &Path, policy: TargetPolicy) -> Result<OwnedFd> {
    let target_err = |reason: &str| ArchiveError::Target {
        path: root.to_path_buf(),
        reason: reason.to_string(),
    };
    let symlink = || {
        rustix::fs::statat(rustix::fs::CWD, root, AtFlags::SYMLINK_NOFOLLOW)
            .is_ok_and(|st| type_of(&st) == FileType::Symlink)
    };
    let fd = rustix::fs::openat(rustix::fs::CWD, root, DIR_NOFOLLOW, Mode::empty()).map_err(
        |e| match e {
            Errno::LOOP | Errno::NOTDIR if symlink() => {
                target_err("is a symlink (refused: the target is never followed)")
            }
            Errno::NOTDIR => target_err("not a directory"),
            e => ArchiveError::Path {
                op: "opening unpack root",
                path: root.to_path_buf(),
                source: io::Error::from(e),
            },
        },
    )?;
    if policy == TargetPolicy::MustBeEmpty {
        let mut d = rustix::fs::Dir::read_from(&fd).map_err(|e| ArchiveError::Path {
            op: "reading unpack root",
            path: root.to_path_buf(),
            source: io::Error::from(e),
        })?;
        let non_empty = d
            .by_ref()
            .any(|e| e.is_ok_and(|e| !matches!(e.file_name().to_bytes(), b"." | b"..")));
        if non_empty {
            return Err(target_err("not empty (TargetPolicy::MustBeEmpty)"));
        }
    }
    Ok(fd)
}

/// Extract one layer tar stream (already decompressed) beneath `root`, entry by entry
/// (see the module docs for the rules). The whole stream is read to its end (also after
/// the end-of-archive blocks), so a digest computed by the caller's reader covers every
/// byte. On error the root may hold a partial tree: the caller removes it.
pub fn extract_layer<R: Read>(
    reader: R,
    root: &Path,
    options: &ExtractOptions,
) -> Result<ExtractStats> {
    let root_fd = open_root(root, options.target)?;
    let mut ex = Extractor {
        root: Rc::new(root_fd),
        options,
        stats: ExtractStats::default(),
        added: PathSet::new(),
        declared: PathSet::new(),
        cache: None,
        dirs: Vec::new(),
        writable: Vec::new(),
        buffer: Vec::new(),
    };
    let mut tar = TarReader::with_limit(
        BufReader::with_capacity(INPUT_BUFFER_BYTES, reader),
        options.max_uncompressed,
    );
    let result = (|| {
        while let Some(entry) = tar.next_entry()? {
            ex.entry(&mut tar, entry)?;
        }
        Ok(())
    })();
    // Directory metadata also after a failure: rootless fixups must not leave lower
    // directories writable.
    ex.finish_dirs();
    result?;
    let position = tar.position();
    let (_, trailing) = tar.finish()?;
    ex.stats.tar_bytes = position + trailing.bytes;
    ex.stats.trailing_bytes = trailing.bytes;
    if trailing.non_zero {
        ex.stats.warn(format!(
            "{} bytes of data after the end of the archive ignored",
            trailing.bytes
        ));
    }
    Ok(ex.stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_are_rooted_and_never_climb() {
        assert_eq!(components(b"/etc/x").unwrap(), vec![&b"etc"[..], b"x"]);
        assert_eq!(components(b"./a//b/./").unwrap(), vec![&b"a"[..], b"b"]);
        assert!(components(b"./").unwrap().is_empty());
        assert!(components(b"a/../b").is_err());
        assert!(components(b"../../probe/x").is_err());
        assert!(components(b"a\0b").is_err());
    }

    #[test]
    fn path_set_tracks_ancestors() {
        let mut s = PathSet::new();
        s.insert(&[b"a", b"b", b"c"]);
        assert!(s.contains(&[b"a"]));
        assert!(s.contains(&[b"a", b"b"]));
        assert!(s.contains(&[b"a", b"b", b"c"]));
        assert!(!s.contains(&[b"a", b"c"]));
        assert!(!s.contains(&[b"ab"]));
        // "a/b" as one component is a different path than a + b only by bytes: the
        // separator is hashed between components, so they coincide (same path).
        assert!(s.contains(&[b"a/b"]));
    }

    #[test]
    fn rootless_record_matches_umoci_encoding() {
        assert_eq!(rootless_record(0, 0), Vec::<u8>::new());
        assert_eq!(rootless_record(1000, 0), vec![0x08, 0xe8, 0x07]);
        assert_eq!(rootless_record(0, 5), vec![0x10, 0x05]);
    }

    #[test]
    fn default_uncompressed_limit_scales_with_the_compressed_size() {
        let d = UncompressedLimit::Default;
        assert_eq!(d.for_compressed(10 << 20), Some(DEFAULT_MIN_UNCOMPRESSED));
        assert_eq!(d.for_compressed(1 << 30), Some(100 << 30));
        assert_eq!(d.for_compressed(u64::MAX), Some(u64::MAX));
        assert_eq!(UncompressedLimit::Bytes(5).for_compressed(1 << 30), Some(5));
        assert_eq!(UncompressedLimit::Unlimited.for_compressed(1), None);
    }
}
