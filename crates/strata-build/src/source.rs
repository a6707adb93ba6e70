//! Reading COPY/ADD sources from a directory tree that must never be left: the build context,
//! a stage's materialised rootfs, an unpacked ADD archive.
//!
//! Every access starts at the root's directory fd: paths are opened with
//! `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)` (a symlink in the middle of a path is
//! resolved with the root as `/`, so it can never lead out), the last component is never
//! followed (`O_NOFOLLOW`, `AT_SYMLINK_NOFOLLOW`), and walks go from directory fd to directory
//! fd. A symlink in the context is copied as a symlink, never dereferenced (RELIABILITY B2).

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use strata_containerfile::IgnoreMatcher;

use crate::glob;
use crate::tree::Name;

const DIR_FLAGS: OFlags = OFlags::DIRECTORY
    .union(OFlags::RDONLY)
    .union(OFlags::CLOEXEC);

fn in_root() -> ResolveFlags {
    ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS
}

fn os(b: &[u8]) -> &std::ffi::OsStr {
    std::ffi::OsStr::from_bytes(b)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileKind {
    Dir,
    File,
    Symlink,
    Fifo,
    CharDevice,
    BlockDevice,
    Socket,
}

/// The `lstat` facts a build uses. `mtime`/`ctime` keep nanoseconds for the hash cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileStat {
    pub kind: FileKind,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub size: u64,
    pub mtime: i64,
    pub mtime_nsec: i64,
    pub ctime: i64,
    pub ctime_nsec: i64,
    pub dev: u64,
    pub ino: u64,
    pub nlink: u64,
    pub rdev: u64,
}

impl FileStat {
    // `stat` field types differ between architectures (st_nlink is u32 on arm64): the casts
    // are identities only on some.
    #[allow(clippy::unnecessary_cast)]
    pub(crate) fn from_raw(st: &rustix::fs::Stat) -> FileStat {
        let kind = match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory => FileKind::Dir,
            FileType::Symlink => FileKind::Symlink,
            FileType::Fifo => FileKind::Fifo,
            FileType::CharacterDevice => FileKind::CharDevice,
            FileType::BlockDevice => FileKind::BlockDevice,
            FileType::Socket => FileKind::Socket,
            _ => FileKind::File,
        };
        FileStat {
            kind,
            mode: st.st_mode & 0o7777,
            uid: st.st_uid as u64,
            gid: st.st_gid as u64,
            size: st.st_size as u64,
            mtime: st.st_mtime as i64,
            mtime_nsec: st.st_mtime_nsec as i64,
            ctime: st.st_ctime as i64,
            ctime_nsec: st.st_ctime_nsec as i64,
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
            nlink: st.st_nlink as u64,
            rdev: st.st_rdev as u64,
        }
    }
    /// mtime in whole seconds as written into tar headers (negative times become 0).
    pub(crate) fn mtime_secs(&self) -> u64 {
        self.mtime.max(0) as u64
    }
}

/// How ownership is read from a root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OwnerSource {
    /// The inode's uid/gid.
    Inode,
    /// umoci's `user.rootlesscontainers` xattr when present (rootless extraction), else 0:0.
    RootlessXattr,
}

/// A directory tree sources are read from.
#[derive(Debug)]
pub(crate) struct SourceRoot {
    path: PathBuf,
    fd: OwnedFd,
    owners: OwnerSource,
    /// Directories (device, inode) walks skip: the output layout when it lies inside the
    /// build context (a build never copies what it is writing).
    skip: Vec<(u64, u64)>,
    // Keeps a temporary root (staging dir, materialised rootfs) alive while it is read.
    _temp: Option<tempfile::TempDir>,
}

/// One entry found by a walk, relative to the walk's start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WalkEntry {
    /// Relative path (`a/b/c`), components joined by `/`.
    pub rel: Vec<u8>,
    pub stat: FileStat,
    /// Symlink target, as stored.
    pub link: Option<Vec<u8>>,
}

/// Filters applied while walking a source.
pub(crate) struct WalkFilter<'a> {
    /// `.dockerignore`, matched against root-relative paths.
    pub ignore: Option<&'a IgnoreMatcher>,
    /// `--exclude`, matched against paths relative to the source.
    pub exclude: Option<&'a IgnoreMatcher>,
}

fn join_rel(a: &[u8], b: &[u8]) -> Vec<u8> {
    if a.is_empty() {
        return b.to_vec();
    }
    if b.is_empty() {
        return a.to_vec();
    }
    let mut v = Vec::with_capacity(a.len() + b.len() + 1);
    v.extend_from_slice(a);
    v.push(b'/');
    v.extend_from_slice(b);
    v
}

impl SourceRoot {
    pub(crate) fn open(path: &Path, owners: OwnerSource) -> io::Result<SourceRoot> {
        let fd = rustix::fs::open(path, DIR_FLAGS, Mode::empty()).map_err(io::Error::from)?;
        Ok(SourceRoot {
            path: path.to_path_buf(),
            fd,
            owners,
            skip: Vec::new(),
            _temp: None,
        })
    }

    /// Make walks skip the directory at `path` (if it exists).
    pub(crate) fn skip_dir(&mut self, path: &Path) {
        if let Ok(st) = rustix::fs::stat(path) {
            let st = FileStat::from_raw(&st);
            self.skip.push((st.dev, st.ino));
        }
    }

    /// A root over a temporary directory, which lives as long as the root.
    pub(crate) fn temporary(dir: tempfile::TempDir, owners: OwnerSource) -> io::Result<SourceRoot> {
        let mut root = SourceRoot::open(dir.path(), owners)?;
        root._temp = Some(dir);
        Ok(root)
    }

    /// A root at `sub` inside a temporary directory, which lives as long as the root.
    pub(crate) fn temporary_at(
        dir: tempfile::TempDir,
        sub: &Path,
        owners: OwnerSource,
    ) -> io::Result<SourceRoot> {
        let mut root = SourceRoot::open(&dir.path().join(sub), owners)?;
        root._temp = Some(dir);
        Ok(root)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// `lstat` of `rel` (its parents resolved inside the root). `None` when it does not exist.
    pub(crate) fn lstat(&self, rel: &[u8]) -> io::Result<Option<FileStat>> {
        let parts: Vec<&[u8]> = rel
            .split(|&b| b == b'/')
            .filter(|c| !c.is_empty())
            .collect();
        let Some((leaf, parents)) = parts.split_last() else {
            let st = rustix::fs::fstat(&self.fd).map_err(io::Error::from)?;
            return Ok(Some(self.with_owner(&self.fd, FileStat::from_raw(&st))));
        };
        let parent = match self.open_dir(&parents.join(&b'/')) {
            Ok(fd) => fd,
            Err(e)
                if e.raw_os_error() == Some(Errno::NOENT.raw_os_error())
                    || e.raw_os_error() == Some(Errno::NOTDIR.raw_os_error()) =>
            {
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        match rustix::fs::statat(&parent, os(leaf), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(self.owner_at(&parent, leaf, FileStat::from_raw(&st)))),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(io::Error::from(e)),
        }
    }

    /// Open the directory `rel` (symlinks in it resolved inside the root).
    pub(crate) fn open_dir(&self, rel: &[u8]) -> io::Result<OwnedFd> {
        let p: &[u8] = if rel.is_empty() { b"." } else { rel };
        rustix::fs::openat2(&self.fd, os(p), DIR_FLAGS, Mode::empty(), in_root())
            .map_err(io::Error::from)
    }

    /// Open the regular file `rel` for reading; the last component is never followed.
    pub(crate) fn open_file(&self, rel: &[u8]) -> io::Result<File> {
        let fd = rustix::fs::openat2(
            &self.fd,
            os(rel),
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY,
            Mode::empty(),
            in_root(),
        )
        .map_err(io::Error::from)?;
        Ok(File::from(fd))
    }

    /// Resolve `rel` inside the root, following symlinks in every component (the last one
    /// too), with the root as `/`: the root-relative path of what it names, `None` when that
    /// does not exist.
    pub(crate) fn resolve(&self, rel: &[u8]) -> io::Result<Option<Vec<u8>>> {
        use std::os::fd::AsRawFd;
        let p: &[u8] = if rel.is_empty() { b"." } else { rel };
        let fd = match rustix::fs::openat2(
            &self.fd,
            os(p),
            OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
            in_root(),
        ) {
            Ok(fd) => fd,
            Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP) => return Ok(None),
            Err(e) => return Err(io::Error::from(e)),
        };
        let target = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
        let root = std::fs::read_link(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))?;
        let inside = target
            .strip_prefix(&root)
            .map_err(|_| io::Error::other("resolved outside the root"))?;
        Ok(Some(inside.as_os_str().as_bytes().to_vec()))
    }

    pub(crate) fn read_link(&self, rel: &[u8]) -> io::Result<Vec<u8>> {
        let parts: Vec<&[u8]> = rel
            .split(|&b| b == b'/')
            .filter(|c| !c.is_empty())
            .collect();
        let Some((leaf, parents)) = parts.split_last() else {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        };
        let parent = self.open_dir(&parents.join(&b'/'))?;
        rustix::fs::readlinkat(&parent, os(leaf), Vec::new())
            .map(|c| c.into_bytes())
            .map_err(io::Error::from)
    }

    /// Names in directory `rel`, sorted by bytes.
    pub(crate) fn list_dir(&self, rel: &[u8]) -> io::Result<Vec<Name>> {
        let fd = self.open_dir(rel)?;
        list_fd(&fd)
    }

    fn with_owner(&self, fd: &OwnedFd, mut st: FileStat) -> FileStat {
        if self.owners == OwnerSource::RootlessXattr {
            let mut buf = [0u8; 64];
            let rec = rustix::fs::fgetxattr(fd, "user.rootlesscontainers", &mut buf)
                .ok()
                .map(|n| buf[..n].to_vec());
            (st.uid, st.gid) = rootless_owner(rec);
        }
        st
    }

    fn owner_at(&self, dir: &OwnedFd, name: &[u8], mut st: FileStat) -> FileStat {
        if self.owners == OwnerSource::RootlessXattr {
            // Symlinks cannot carry user.* xattrs; a path through /proc/self/fd keeps this fd-relative.
            let path = format!("/proc/self/fd/{}/", rustix::fd::AsRawFd::as_raw_fd(dir));
            let mut full = path.into_bytes();
            full.extend_from_slice(name);
            let mut buf = [0u8; 64];
            let rec = rustix::fs::lgetxattr(os(&full), "user.rootlesscontainers", &mut buf)
                .ok()
                .map(|n| buf[..n].to_vec());
            let (u, g) = rootless_owner(rec);
            st.uid = u;
            st.gid = g;
        }
        st
    }

    /// Walk the tree under `start` (not included), sorted, depth first, parents before
    /// children. Symlinks are entries, never followed. `start_rel_in_root` is `start` as a
    /// root-relative path (for the ignore matcher).
    ///
    /// A failure names the directory or entry it happened on: the error's payload is a
    /// [`WalkFailure`] (an unreadable sub-directory is not blamed on `start`).
    pub(crate) fn walk(&self, start: &[u8], filter: &WalkFilter<'_>) -> io::Result<Vec<WalkEntry>> {
        let fd = self
            .open_dir(start)
            .map_err(|e| WalkFailure::wrap(start, "cannot open directory", e))?;
        let mut out = Vec::new();
        self.walk_fd(&fd, start, b"", filter, &mut out)?;
        Ok(out)
    }

    fn walk_fd(
        &self,
        dir: &OwnedFd,
        root_rel: &[u8],
        src_rel: &[u8],
        filter: &WalkFilter<'_>,
        out: &mut Vec<WalkEntry>,
    ) -> io::Result<()> {
        let names =
            list_fd(dir).map_err(|e| WalkFailure::wrap(root_rel, "cannot read directory", e))?;
        for name in names {
            let in_root = join_rel(root_rel, &name);
            let in_src = join_rel(src_rel, &name);
            let st =
                rustix::fs::statat(dir, os(&name), AtFlags::SYMLINK_NOFOLLOW).map_err(|e| {
                    io::Error::new(
                        io::Error::from(e).kind(),
                        format!(
                            "stat {}: {}",
                            String::from_utf8_lossy(&in_root),
                            io::Error::from(e)
                        ),
                    )
                })?;
            let st = self.owner_at(dir, &name, FileStat::from_raw(&st));
            let is_dir = st.kind == FileKind::Dir;
            if is_dir && self.skip.contains(&(st.dev, st.ino)) {
                continue;
            }
            let in_root_str = String::from_utf8_lossy(&in_root);
            let in_src_str = String::from_utf8_lossy(&in_src);
            let ignored = filter.ignore.is_some_and(|m| m.is_excluded(&in_root_str))
                || filter.exclude.is_some_and(|m| m.is_excluded(&in_src_str));
            if ignored {
                let descend = is_dir
                    && (filter.ignore.is_some_and(|m| {
                        m.is_excluded(&in_root_str) && m.may_include_below(&in_root_str)
                    }) || filter.exclude.is_some_and(|m| {
                        m.is_excluded(&in_src_str) && m.may_include_below(&in_src_str)
                    }));
                if descend {
                    // Excluded itself, but a `!` pattern may bring back something below:
                    // children are walked; the directory is recreated as a parent if needed.
                    let sub = rustix::fs::openat(
                        dir,
                        os(&name),
                        DIR_FLAGS | OFlags::NOFOLLOW,
                        Mode::empty(),
                    )
                    .map_err(|e| WalkFailure::wrap(&in_root, "cannot open directory", e.into()))?;
                    self.walk_fd(&sub, &in_root, &in_src, filter, out)?;
                }
                continue;
            }
            let link = if st.kind == FileKind::Symlink {
                Some(
                    rustix::fs::readlinkat(dir, os(&name), Vec::new())
                        .map_err(|e| WalkFailure::wrap(&in_root, "cannot read link", e.into()))?
                        .into_bytes(),
                )
            } else {
                None
            };
            out.push(WalkEntry {
                rel: in_src.clone(),
                stat: st,
                link,
            });
            if is_dir {
                let sub =
                    rustix::fs::openat(dir, os(&name), DIR_FLAGS | OFlags::NOFOLLOW, Mode::empty())
                        .map_err(|e| {
                            WalkFailure::wrap(&in_root, "cannot open directory", e.into())
                        })?;
                self.walk_fd(&sub, &in_root, &in_src, filter, out)?;
            }
        }
        Ok(())
    }

    /// Expand a source pattern (already split into clean components, wildcards in Go
    /// `filepath.Match` syntax) into the root-relative paths that exist.
    pub(crate) fn glob(&self, parts: &[String]) -> Result<Vec<Vec<u8>>, GlobError> {
        let mut out = Vec::new();
        self.glob_from(Vec::new(), parts, &mut out)?;
        Ok(out)
    }

    fn glob_from(
        &self,
        prefix: Vec<u8>,
        rest: &[String],
        out: &mut Vec<Vec<u8>>,
    ) -> Result<(), GlobError> {
        let Some(meta_at) = rest.iter().position(|c| glob::is_wild(c)) else {
            let mut path = prefix;
            for c in rest {
                path = join_rel(&path, glob::unescape(c).as_bytes());
            }
            if self.lstat(&path).map_err(GlobError::Io)?.is_some() {
                out.push(path);
            }
            return Ok(());
        };
        let mut dir = prefix;
        for c in &rest[..meta_at] {
            dir = join_rel(&dir, glob::unescape(c).as_bytes());
        }
        let names = match self.list_dir(&dir) {
            Ok(n) => n,
            Err(e)
                if e.raw_os_error() == Some(Errno::NOENT.raw_os_error())
                    || e.raw_os_error() == Some(Errno::NOTDIR.raw_os_error()) =>
            {
                return Ok(());
            }
            Err(e) => return Err(GlobError::Io(e)),
        };
        let pattern = &rest[meta_at];
        for name in names {
            let Ok(name_str) = std::str::from_utf8(&name) else {
                continue;
            };
            if glob::match_component(pattern, name_str).map_err(|_| GlobError::BadPattern)? {
                self.glob_from(join_rel(&dir, &name), &rest[meta_at + 1..], out)?;
            }
        }
        Ok(())
    }
}

#[derive(Debug)]
pub(crate) enum GlobError {
    BadPattern,
    Io(io::Error),
}

pub(crate) fn list_fd(fd: &OwnedFd) -> io::Result<Vec<Name>> {
    let mut d = rustix::fs::Dir::read_from(fd.as_fd()).map_err(io::Error::from)?;
    let mut names = Vec::new();
    for e in d.by_ref() {
        let e = e.map_err(io::Error::from)?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(n.to_vec());
        }
    }
    names.sort();
    Ok(names)
}

/// Where a [`SourceRoot::walk`] failed: carried inside the `io::Error` it returns.
#[derive(Debug)]
pub(crate) struct WalkFailure {
    /// Root-relative path of the directory or entry at fault.
    pub(crate) path: Vec<u8>,
    pub(crate) what: &'static str,
    pub(crate) source: io::Error,
}

impl WalkFailure {
    fn wrap(path: &[u8], what: &'static str, source: io::Error) -> io::Error {
        io::Error::new(
            source.kind(),
            WalkFailure {
                path: path.to_vec(),
                what,
                source,
            },
        )
    }
}

impl std::fmt::Display for WalkFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = String::from_utf8_lossy(&self.path);
        let path = if path.is_empty() { ".".into() } else { path };
        write!(f, "{path}: {}: {}", self.what, self.source)
    }
}

impl std::error::Error for WalkFailure {}

/// Decode umoci's `user.rootlesscontainers` protobuf (`uint32 uid = 1; uint32 gid = 2;`).
pub(crate) fn rootless_owner(record: Option<Vec<u8>>) -> (u64, u64) {
    let Some(rec) = record else {
        return (0, 0);
    };
    let (mut uid, mut gid) = (0u64, 0u64);
    let mut i = 0;
    while i < rec.len() {
        let tag = rec[i];
        i += 1;
        let mut v = 0u64;
        let mut shift = 0;
        while i < rec.len() {
            let b = rec[i];
            i += 1;
            v |= ((b & 0x7f) as u64) << shift;
            shift += 7;
            if b & 0x80 == 0 || shift > 63 {
                break;
            }
        }
        match tag {
            0x08 => uid = v,
            0x10 => gid = v,
            _ => break,
        }
    }
    (uid, gid)
}

/// Clean a source path written in a Containerfile into components relative to the root:
/// a leading `/` is the root, `.` is dropped, `..` pops. With `clamp`, `..` at the root stays
/// at the root (an image rootfs, like Docker); without it, climbing out is an error (`None`,
/// the build context: RELIABILITY B1). Also returns the `--parents` pivot: the index in the
/// result where a `/./` marker stood, if any.
pub(crate) fn clean_source(path: &str, clamp: bool) -> Option<(Vec<String>, Option<usize>)> {
    let mut out: Vec<String> = Vec::new();
    let mut pivot = None;
    for (i, c) in path.split('/').enumerate() {
        match c {
            "" => {}
            "." => {
                if i > 0 {
                    pivot = Some(out.len());
                }
            }
            ".." => {
                if out.pop().is_none() && !clamp {
                    return None;
                }
                if pivot.is_some_and(|p| p > out.len()) {
                    pivot = Some(out.len());
                }
            }
            _ => out.push(c.to_string()),
        }
    }
    Some((out, pivot))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn clean_source_rules() {
        let c = |p: &str| clean_source(p, false).map(|(v, piv)| (v.join("/"), piv));
        assert_eq!(c("a/b"), Some(("a/b".into(), None)));
        assert_eq!(c("/a/./b"), Some(("a/b".into(), Some(1))));
        assert_eq!(c("./a"), Some(("a".into(), None)));
        assert_eq!(c("a/../b"), Some(("b".into(), None)));
        assert_eq!(c("../x"), None);
        assert_eq!(c("a/../../x"), None);
        assert_eq!(
            clean_source("../../x", true).map(|(v, _)| v.join("/")),
            Some("x".into())
        );
        assert_eq!(c("."), Some(("".into(), None)));
    }

    #[test]
    fn walks_sorted_without_following_symlinks_and_globs() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        std::fs::create_dir_all(r.join("src/sub")).unwrap();
        std::fs::write(r.join("src/b.txt"), "b").unwrap();
        std::fs::write(r.join("src/a.go"), "a").unwrap();
        std::fs::write(r.join("src/sub/c.txt"), "c").unwrap();
        symlink("/etc", r.join("src/etc-link")).unwrap();
        symlink("/etc", r.join("esc")).unwrap();
        let root = SourceRoot::open(r, OwnerSource::Inode).unwrap();
        let walked: Vec<String> = root
            .walk(
                b"src",
                &WalkFilter {
                    ignore: None,
                    exclude: None,
                },
            )
            .unwrap()
            .iter()
            .map(|e| String::from_utf8(e.rel.clone()).unwrap())
            .collect();
        assert_eq!(walked, ["a.go", "b.txt", "etc-link", "sub", "sub/c.txt"]);
        let g = root
            .glob(&["src".into(), "*.txt".into()])
            .unwrap()
            .iter()
            .map(|p| String::from_utf8(p.clone()).unwrap())
            .collect::<Vec<_>>();
        assert_eq!(g, ["src/b.txt"]);
        let g = root.glob(&["*".into(), "*.txt".into()]).unwrap();
        assert_eq!(g, [b"src/b.txt".to_vec()]);
        // A symlink to /etc in the middle of a path resolves inside the root: no host files.
        assert!(root.lstat(b"esc/passwd").unwrap().is_none());
        assert!(root.open_file(b"esc/passwd").is_err());
        assert_eq!(root.lstat(b"esc").unwrap().unwrap().kind, FileKind::Symlink);
        assert!(matches!(
            root.glob(&["[".into()]),
            Err(GlobError::BadPattern)
        ));
    }

    #[test]
    fn rootless_record_decodes() {
        assert_eq!(
            rootless_owner(Some(vec![0x08, 0xe8, 0x07, 0x10, 0x05])),
            (1000, 5)
        );
        assert_eq!(rootless_owner(None), (0, 0));
    }
}
