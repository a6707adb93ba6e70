//! Walking an unpacked rootfs in a fixed order, and the per-path state recorded at unpack
//! time that `repack` compares against.
//!
//! The walk is depth-first with the children of every directory sorted by name bytes, so
//! the sequence of paths is ordered component by component ([`cmp_paths`]). The state file
//! is written in that same order, which lets repack compare a recorded tree with the
//! current one by merging two sorted streams: memory stays flat whatever the tree size
//! (one directory listing per level of depth).
//!
//! Every access is relative to a directory fd opened with `O_NOFOLLOW`: a symlink in the
//! tree is reported as a symlink, never followed.

use std::cmp::Ordering;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::rc::Rc;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};

/// First line of a state file (format version).
const STATE_MAGIC: &[u8] = b"strata-tree-state-v2\n";
/// Longest path accepted in a state file (PATH_MAX is 4096; a longer record is corruption).
const MAX_STATE_PATH: usize = 64 * 1024;
/// Buffer for the state file.
const STATE_BUFFER_BYTES: usize = 256 * 1024;

pub(crate) const DIR_FLAGS: OFlags = OFlags::DIRECTORY
    .union(OFlags::RDONLY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

pub(crate) fn os(b: &[u8]) -> &OsStr {
    OsStr::from_bytes(b)
}

/// The names in a directory (`.` and `..` left out), in the order the filesystem gives.
/// The fd's own read position is not used: the listing reads through a fresh open of `.`.
pub(crate) fn list_names(dir: BorrowedFd<'_>) -> io::Result<Vec<Vec<u8>>> {
    let mut d = rustix::fs::Dir::read_from(dir)?;
    let mut names = Vec::new();
    for e in d.by_ref() {
        let e = e?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(n.to_vec());
        }
    }
    Ok(names)
}

/// Compare two relative paths (`a/b`, empty for the root) component by component: the
/// order of a depth-first walk with sorted children.
pub fn cmp_paths(a: &[u8], b: &[u8]) -> Ordering {
    let mut ai = a.split(|&c| c == b'/').filter(|c| !c.is_empty());
    let mut bi = b.split(|&c| c == b'/').filter(|c| !c.is_empty());
    loop {
        match (ai.next(), bi.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => match x.cmp(y) {
                Ordering::Equal => continue,
                other => return other,
            },
        }
    }
}

/// Is `path` strictly below `dir`?
pub fn is_below(path: &[u8], dir: &[u8]) -> bool {
    if dir.is_empty() {
        return !path.is_empty();
    }
    path.len() > dir.len() && path.starts_with(dir) && path[dir.len()] == b'/'
}

/// The file type of a stat.
pub(crate) fn kind(st: &Stat) -> FileType {
    FileType::from_raw_mode(st.st_mode)
}

/// What the state file keeps of a path: enough to tell that it changed without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Relative to the rootfs, no leading `/`; empty for the rootfs itself.
    pub path: Vec<u8>,
    pub ino: u64,
    /// `st_mode` (type and permission bits).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: (i64, u32),
    /// ctime: any change to the inode (content, mode, owner, xattrs, links) moves it, and
    /// nobody can set it back.
    pub ctime: (i64, u32),
    /// Birth time of directories (`statx`), `(0, 0)` when unknown: a directory removed and
    /// made again may get the same inode number back, never the same birth time.
    pub btime: (i64, u32),
}

impl Record {
    pub fn from_stat(path: Vec<u8>, st: &Stat) -> Record {
        Record {
            path,
            ino: st.st_ino,
            mode: st.st_mode,
            uid: st.st_uid,
            gid: st.st_gid,
            size: st.st_size.max(0) as u64,
            mtime: (st.st_mtime, st.st_mtime_nsec as u32),
            ctime: (st.st_ctime, st.st_ctime_nsec as u32),
            btime: (0, 0),
        }
    }
    /// The same directory (not one removed and made again at the same path).
    pub fn same_directory(&self, other: &Record) -> bool {
        self.ino == other.ino
            && (self.btime == (0, 0) || other.btime == (0, 0) || self.btime == other.btime)
    }
    pub fn is_dir(&self) -> bool {
        FileType::from_raw_mode(self.mode) == FileType::Directory
    }
    pub fn file_type(&self) -> FileType {
        FileType::from_raw_mode(self.mode)
    }
    /// Same inode, untouched since recorded.
    pub fn unchanged(&self, other: &Record) -> bool {
        self.ino == other.ino
            && self.mode == other.mode
            && self.uid == other.uid
            && self.gid == other.gid
            && self.size == other.size
            && self.mtime == other.mtime
            && self.ctime == other.ctime
    }
}

/// Writes records, in walk order.
pub struct StateWriter<W: Write> {
    out: BufWriter<W>,
}

impl<W: Write> StateWriter<W> {
    pub fn new(inner: W) -> io::Result<Self> {
        let mut out = BufWriter::with_capacity(STATE_BUFFER_BYTES, inner);
        out.write_all(STATE_MAGIC)?;
        Ok(StateWriter { out })
    }
    pub fn write(&mut self, r: &Record) -> io::Result<()> {
        let o = &mut self.out;
        o.write_all(&(r.path.len() as u32).to_le_bytes())?;
        o.write_all(&r.path)?;
        o.write_all(&r.ino.to_le_bytes())?;
        o.write_all(&r.mode.to_le_bytes())?;
        o.write_all(&r.uid.to_le_bytes())?;
        o.write_all(&r.gid.to_le_bytes())?;
        o.write_all(&r.size.to_le_bytes())?;
        o.write_all(&r.mtime.0.to_le_bytes())?;
        o.write_all(&r.mtime.1.to_le_bytes())?;
        o.write_all(&r.ctime.0.to_le_bytes())?;
        o.write_all(&r.ctime.1.to_le_bytes())?;
        o.write_all(&r.btime.0.to_le_bytes())?;
        o.write_all(&r.btime.1.to_le_bytes())?;
        Ok(())
    }
    pub fn finish(self) -> io::Result<W> {
        self.out.into_inner().map_err(|e| e.into_error())
    }
}

/// Reads records back, in the order written.
pub struct StateReader<R: Read> {
    input: BufReader<R>,
}

impl<R: Read> StateReader<R> {
    pub fn new(inner: R) -> io::Result<Self> {
        let mut input = BufReader::with_capacity(STATE_BUFFER_BYTES, inner);
        let mut magic = vec![0u8; STATE_MAGIC.len()];
        input.read_exact(&mut magic)?;
        if magic != STATE_MAGIC {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not a strata tree state file (or another version)",
            ));
        }
        Ok(StateReader { input })
    }

    fn u32(&mut self) -> io::Result<u32> {
        let mut b = [0u8; 4];
        self.input.read_exact(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }
    fn u64(&mut self) -> io::Result<u64> {
        let mut b = [0u8; 8];
        self.input.read_exact(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// The next record, `None` at the end.
    pub fn next_record(&mut self) -> io::Result<Option<Record>> {
        let mut len = [0u8; 4];
        match self.input.read(&mut len[..1])? {
            0 => return Ok(None),
            _ => self.input.read_exact(&mut len[1..])?,
        }
        let len = u32::from_le_bytes(len) as usize;
        if len > MAX_STATE_PATH {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "corrupt state file (path too long)",
            ));
        }
        let mut path = vec![0u8; len];
        self.input.read_exact(&mut path)?;
        Ok(Some(Record {
            path,
            ino: self.u64()?,
            mode: self.u32()?,
            uid: self.u32()?,
            gid: self.u32()?,
            size: self.u64()?,
            mtime: (self.u64()? as i64, self.u32()?),
            ctime: (self.u64()? as i64, self.u32()?),
            btime: (self.u64()? as i64, self.u32()?),
        }))
    }
}

/// One entry of a walk.
pub struct WalkEntry {
    /// Relative path (empty for the root).
    pub path: Vec<u8>,
    /// The last component (empty for the root).
    pub name: Vec<u8>,
    pub stat: Stat,
    /// Birth time (directories only, `(0, 0)` when unknown).
    pub btime: (i64, u32),
    /// The directory holding the entry (the root's own fd for the root).
    pub parent: Rc<OwnedFd>,
}

/// Birth time of `name` in `dir` (empty name: `dir` itself), `(0, 0)` when the
/// filesystem does not keep one.
fn birth_time(dir: BorrowedFd<'_>, name: &[u8]) -> (i64, u32) {
    let flags = if name.is_empty() {
        AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW
    } else {
        AtFlags::SYMLINK_NOFOLLOW
    };
    match rustix::fs::statx(dir, os(name), flags, rustix::fs::StatxFlags::BTIME) {
        Ok(x) if x.stx_mask & rustix::fs::StatxFlags::BTIME.bits() != 0 => {
            (x.stx_btime.tv_sec, x.stx_btime.tv_nsec)
        }
        _ => (0, 0),
    }
}

impl WalkEntry {
    pub fn record(&self) -> Record {
        let mut r = Record::from_stat(self.path.clone(), &self.stat);
        r.btime = self.btime;
        r
    }
    /// Open a regular file for reading, without following a symlink put in its place.
    pub fn open(&self) -> io::Result<File> {
        let fd = rustix::fs::openat(
            &*self.parent,
            os(&self.name),
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY,
            Mode::empty(),
        )
        .map_err(io::Error::from)?;
        Ok(File::from(fd))
    }
    /// The parent directory fd (for `*at` calls on `name`).
    pub fn parent_fd(&self) -> BorrowedFd<'_> {
        self.parent.as_fd()
    }
}

struct Level {
    fd: Rc<OwnedFd>,
    prefix: Vec<u8>,
    /// Sorted names, consumed from the front (reversed: popped from the back).
    names: Vec<Vec<u8>>,
    /// The directory's own mode, put back when the walk leaves it (it was opened up).
    restore: Option<u32>,
}

impl Drop for Level {
    fn drop(&mut self) {
        if let Some(mode) = self.restore {
            let _ = rustix::fs::fchmod(&*self.fd, Mode::from_raw_mode(mode));
        }
    }
}

/// Open the directory `name` in `parent` for a walk. A directory its owner may not list or
/// enter (mode 000 from an image, unpacked rootless) is opened up (u+rx) for the walk, as
/// umoci's rootless walks do: the mode to restore is returned with the fd.
fn open_walk_dir(parent: BorrowedFd<'_>, name: &[u8]) -> io::Result<(OwnedFd, Option<u32>)> {
    match rustix::fs::openat(parent, os(name), DIR_FLAGS, Mode::empty()) {
        Ok(fd) => return Ok((fd, None)),
        Err(rustix::io::Errno::ACCESS) => {}
        Err(e) => return Err(io::Error::from(e)),
    }
    let st = strata_archive::add_dir_mode_bits(parent, name, 0o500).map_err(|e| {
        io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("cannot be read, nor opened up: {e}"),
        )
    })?;
    let Some(st) = st else {
        return Err(io::Error::from(rustix::io::Errno::ACCESS));
    };
    let mode = st.st_mode & 0o7777;
    let fd =
        rustix::fs::openat(parent, os(name), DIR_FLAGS, Mode::empty()).map_err(io::Error::from)?;
    Ok((fd, Some(mode)))
}

/// Depth-first walk with sorted children; directories are entered after they are
/// returned. The root comes first, with an empty path.
pub struct Walker {
    root: Option<Rc<OwnedFd>>,
    stack: Vec<Level>,
    /// A directory returned by the last `next` that is entered at the following call.
    pending: Option<(Vec<u8>, Rc<OwnedFd>, Vec<u8>)>,
}

impl Walker {
    /// Walk the tree at `root` (a directory, not followed if it is a symlink).
    pub fn new(root: &Path) -> io::Result<Walker> {
        let fd = rustix::fs::openat(rustix::fs::CWD, root, DIR_FLAGS, Mode::empty())
            .map_err(io::Error::from)?;
        Ok(Walker {
            root: Some(Rc::new(fd)),
            stack: Vec::new(),
            pending: None,
        })
    }

    fn list(fd: &OwnedFd) -> io::Result<Vec<Vec<u8>>> {
        let mut names = list_names(fd.as_fd())?;
        names.sort_unstable_by(|a, b| b.cmp(a));
        Ok(names)
    }

    /// Do not enter the directory the last call returned.
    pub fn skip_children(&mut self) {
        self.pending = None;
    }

    pub fn next_entry(&mut self) -> io::Result<Option<WalkEntry>> {
        if let Some(root) = self.root.take() {
            let st = rustix::fs::fstat(&*root).map_err(io::Error::from)?;
            self.pending = Some((Vec::new(), Rc::clone(&root), Vec::new()));
            let btime = birth_time(root.as_fd(), b"");
            return Ok(Some(WalkEntry {
                path: Vec::new(),
                name: Vec::new(),
                stat: st,
                btime,
                parent: root,
            }));
        }
        if let Some((path, parent, name)) = self.pending.take() {
            let (fd, restore) = if path.is_empty() {
                (parent, None)
            } else {
                let (fd, restore) = open_walk_dir(parent.as_fd(), &name).map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("directory {}: {e}", String::from_utf8_lossy(&path)),
                    )
                })?;
                (Rc::new(fd), restore)
            };
            // Pushed before listing: an error still restores the mode (drop).
            self.stack.push(Level {
                fd,
                prefix: path,
                names: Vec::new(),
                restore,
            });
            if let Some(level) = self.stack.last_mut() {
                level.names = Self::list(&level.fd)?;
            }
        }
        loop {
            let Some(level) = self.stack.last_mut() else {
                return Ok(None);
            };
            let Some(name) = level.names.pop() else {
                self.stack.pop();
                continue;
            };
            let st = match rustix::fs::statat(&*level.fd, os(&name), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                // Removed while we walk: as if it never was.
                Err(rustix::io::Errno::NOENT) => continue,
                Err(e) => return Err(io::Error::from(e)),
            };
            let mut path = level.prefix.clone();
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(&name);
            let parent = Rc::clone(&level.fd);
            let mut btime = (0, 0);
            if kind(&st) == FileType::Directory {
                btime = birth_time(parent.as_fd(), &name);
                self.pending = Some((path.clone(), Rc::clone(&parent), name.clone()));
            }
            return Ok(Some(WalkEntry {
                path,
                name,
                stat: st,
                btime,
                parent,
            }));
        }
    }
}

/// Record every path of `root` into `out` (walk order). Returns the number of records.
pub fn record_tree<W: Write>(root: &Path, out: W) -> io::Result<(u64, W)> {
    let mut walker = Walker::new(root)?;
    let mut writer = StateWriter::new(out)?;
    let mut n = 0;
    while let Some(e) = walker.next_entry()? {
        writer.write(&e.record())?;
        n += 1;
    }
    Ok((n, writer.finish()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_order_is_component_wise() {
        assert_eq!(cmp_paths(b"", b"a"), Ordering::Less);
        assert_eq!(cmp_paths(b"a", b"a/b"), Ordering::Less);
        // A byte-wise comparison would put "a.c" before "a/b" ('.' < '/').
        assert_eq!(cmp_paths(b"a/b", b"a.c"), Ordering::Less);
        assert_eq!(cmp_paths(b"a/z", b"b"), Ordering::Less);
        assert_eq!(cmp_paths(b"a/b", b"a/b"), Ordering::Equal);
        assert!(is_below(b"a/b", b"a"));
        assert!(!is_below(b"ab", b"a"));
        assert!(!is_below(b"a", b"a"));
        assert!(is_below(b"a", b""));
    }

    #[test]
    fn walk_order_matches_cmp_paths_and_state_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        for d in ["a", "a/b", "a.c", "z"] {
            std::fs::create_dir(r.join(d)).unwrap();
        }
        for f in ["a/b/f", "a/x", "a.c/y", "m"] {
            std::fs::write(r.join(f), f).unwrap();
        }
        std::os::unix::fs::symlink("/nowhere", r.join("a/l")).unwrap();
        let mut w = Walker::new(r).unwrap();
        let mut paths = Vec::new();
        while let Some(e) = w.next_entry().unwrap() {
            paths.push(String::from_utf8(e.path).unwrap());
        }
        assert_eq!(
            paths,
            [
                "", "a", "a/b", "a/b/f", "a/l", "a/x", "a.c", "a.c/y", "m", "z"
            ]
        );
        let mut sorted = paths.clone();
        sorted.sort_by(|a, b| cmp_paths(a.as_bytes(), b.as_bytes()));
        assert_eq!(paths, sorted);

        let (n, bytes) = record_tree(r, Vec::new()).unwrap();
        assert_eq!(n, 10);
        let mut rd = StateReader::new(bytes.as_slice()).unwrap();
        let mut back = Vec::new();
        while let Some(rec) = rd.next_record().unwrap() {
            back.push(rec);
        }
        assert_eq!(back.len(), 10);
        assert_eq!(back[4].path, b"a/l");
        assert_eq!(back[4].file_type(), FileType::Symlink);
        assert_eq!(back[3].size, 5);
        assert!(StateReader::new(&b"garbage-garbage-garbage"[..]).is_err());
    }
}
