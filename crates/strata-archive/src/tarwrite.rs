//! Deterministic tar writing with our own PAX `x` headers (the `tar` crate has no PAX
//! writer), the tree walker for COPY/ADD, the overlayfs diff writer for RUN, and the
//! Windows layer layout.
//!
//! Determinism: entries carry mode, uid, gid, mtime (optionally clamped), size, link target,
//! device numbers and xattrs — never atime/ctime, never the writer's pid or host names.
//! PAX records are sorted by key, the tree walker sorts directory entries by name bytes, so
//! the same tree gives the same bytes whatever `readdir` order or machine.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};

use crate::error::{ArchiveError, Result};

/// Security descriptor go-containerregistry's `mutate.Windows` writes for every entry:
/// owner BUILTIN\Users, group BUILTIN\Users (`O:BUG:BU`), no DACL, base64.
pub const WINDOWS_RAWSD: &str =
    "AQAAgBQAAAAkAAAAAAAAAAAAAAABAgAAAAAABSAAAAAhAgAAAQIAAAAAAAUgAAAAIQIAAA==";
/// Windows FILE_ATTRIBUTE_DIRECTORY, as written in `MSWINDOWS.fileattr`.
const WINDOWS_ATTR_DIRECTORY: &str = "16";
/// Windows FILE_ATTRIBUTE_ARCHIVE, written for regular files.
const WINDOWS_ATTR_ARCHIVE: &str = "32";
/// File type bits BuildKit and hcsshim put into the mode field of Windows layer entries.
const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
/// Largest value a ustar octal size field holds (11 octal digits); beyond it a PAX `size`.
const USTAR_MAX_SIZE: u64 = 0o77777777777;
/// Largest uid/gid a ustar octal id field holds (7 octal digits); beyond it PAX `uid`/`gid`.
const USTAR_MAX_ID: u64 = 0o7777777;
/// ustar `name` and `linkname` field length.
const USTAR_NAME_LEN: usize = 100;
/// Copy buffer for file contents.
const COPY_BUFFER_BYTES: usize = 256 * 1024;

/// Ownership written into headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OwnerOverride {
    /// Keep the uid/gid of the source.
    #[default]
    Keep,
    /// Write these ids for every entry (COPY `--chown`, or 0:0 for reproducible layers).
    Set { uid: u64, gid: u64 },
}

/// Whether user/group names go into headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NameMode {
    /// Ids only: names depend on the writing host's passwd file.
    #[default]
    Omit,
    Include,
}

/// Linux layers, or the Windows container layer layout (`Hives`, `Files/…`, MSWINDOWS
/// PAX records; see [`TarBuilder`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LayerLayout {
    #[default]
    Linux,
    Windows,
}

/// Normalisation applied to every entry.
#[derive(Debug, Clone, Default)]
pub struct TarOptions {
    pub owner: OwnerOverride,
    /// SOURCE_DATE_EPOCH: mtimes newer than this become this.
    pub mtime_clamp: Option<u64>,
    pub names: NameMode,
    pub layout: LayerLayout,
}

/// Metadata of one entry. atime/ctime are never written (deterministic output).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntryMeta {
    /// Permission bits (`0o7777` incl. setuid/setgid/sticky).
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    pub uname: Option<String>,
    pub gname: Option<String>,
    /// Extended attributes, written as `SCHILY.xattr.<name>` PAX records.
    pub xattrs: Vec<(String, Vec<u8>)>,
}

impl EntryMeta {
    pub fn with_mode(mode: u32) -> Self {
        EntryMeta {
            mode,
            ..Default::default()
        }
    }
    fn from_stat(st: &Stat) -> Self {
        EntryMeta {
            mode: st.st_mode & 0o7777,
            uid: u64::from(st.st_uid),
            gid: u64::from(st.st_gid),
            mtime: st.st_mtime.max(0) as u64,
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    Char,
    Block,
}

/// Streaming tar writer with deterministic headers and PAX records.
///
/// Paths are normalised: leading `/` and `./` dropped, `.` components and repeated slashes
/// removed; a `..` component or a NUL byte is an error (strata never writes a layer that
/// climbs). Directories are written with a trailing `/`; the layer root is `./`.
///
/// # Windows layout
///
/// With [`LayerLayout::Windows`] the archive is what BuildKit's Windows differ
/// (`util/winlayers/differ.go`) and go-containerregistry's `mutate.Windows` produce, so
/// hcsshim's `ociwclayer` imports it:
/// - first `Hives` then `Files`: directories, mode `0o40555`, PAX `MSWINDOWS.fileattr=16`;
/// - then every entry as `Files/<path>` (no trailing slash), uid/gid 0, no user names, no
///   `SCHILY.xattr.*`;
/// - directories: mode `0o40000 | perm`, PAX `MSWINDOWS.fileattr=16`, `MSWINDOWS.rawsd`;
///   regular files (whiteouts included): mode `0o100000 | perm`, `MSWINDOWS.fileattr=32`,
///   `MSWINDOWS.rawsd`; symlinks and hard links: `MSWINDOWS.rawsd` only;
/// - hard link targets get the `Files/` prefix (they name archive entries); symlink
///   targets are kept (hcsshim turns them into reparse points: a `Files/` prefix there
///   would point nowhere — BuildKit prefixes them, ggcr does not);
/// - `MSWINDOWS.rawsd` is ggcr's [`WINDOWS_RAWSD`] for every entry (BuildKit uses one SD
///   for directories and another for files); no `LIBARCHIVE.creationtime` (hcsshim falls
///   back to the mtime; omitting it keeps output reproducible);
/// - devices and FIFOs cannot be represented: error.
pub struct TarBuilder<W: Write> {
    inner: W,
    options: TarOptions,
    windows_started: bool,
    buffer: Vec<u8>,
}

/// Serialise PAX records, sorted by key (as Go's archive/tar does) so output is stable.
fn pax_body(mut records: Vec<(String, Vec<u8>)>) -> Vec<u8> {
    records.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = Vec::new();
    for (key, value) in records {
        // "<len> <key>=<value>\n" where len counts itself.
        let body = key.len() + value.len() + 3; // ' ', '=', '\n'
        let mut len = body + 1;
        loop {
            let candidate = body + len.to_string().len();
            if candidate == len {
                break;
            }
            len = candidate;
        }
        out.extend_from_slice(len.to_string().as_bytes());
        out.push(b' ');
        out.extend_from_slice(key.as_bytes());
        out.push(b'=');
        out.extend_from_slice(&value);
        out.push(b'\n');
    }
    out
}

fn io_err(context: &str, path: &[u8], e: io::Error) -> ArchiveError {
    ArchiveError::io(format!("{context} {}", String::from_utf8_lossy(path)), e)
}

/// A file's data must be exactly the size its header announced: anything else means it
/// changed while being archived, and the archive is unusable.
fn check_copied(path: &[u8], copied: u64, size: u64) -> Result<()> {
    if copied == size {
        return Ok(());
    }
    let what = if copied < size { "shrank" } else { "grew" };
    Err(io_err(
        "reading",
        path,
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("file {what} while being archived: {copied} of {size} bytes"),
        ),
    ))
}

/// Normalised components of an archive path; `..` and NUL refused.
fn normalise(path: &[u8]) -> Result<Vec<&[u8]>> {
    let mut out = Vec::new();
    for c in path.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err(ArchiveError::entry(path, "path contains '..'", None)),
            _ if c.contains(&0) => {
                return Err(ArchiveError::entry(path, "path contains NUL", None));
            }
            _ => out.push(c),
        }
    }
    Ok(out)
}

/// What kind of header is being written (drives Windows records and mode bits).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Directory,
    Regular,
    Symlink,
    HardLink,
    Char,
    Block,
    Fifo,
}

impl Kind {
    fn entry_type(self) -> tar::EntryType {
        match self {
            Kind::Directory => tar::EntryType::Directory,
            Kind::Regular => tar::EntryType::Regular,
            Kind::Symlink => tar::EntryType::Symlink,
            Kind::HardLink => tar::EntryType::Link,
            Kind::Char => tar::EntryType::Char,
            Kind::Block => tar::EntryType::Block,
            Kind::Fifo => tar::EntryType::Fifo,
        }
    }
}

/// Everything one header says.
struct Fields<'a> {
    path: &'a [u8],
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    kind: Kind,
    size: u64,
    link: Option<&'a [u8]>,
    device: Option<(u32, u32)>,
    uname: Option<&'a [u8]>,
    gname: Option<&'a [u8]>,
    records: Vec<(String, Vec<u8>)>,
}

impl Default for Fields<'_> {
    fn default() -> Self {
        Fields {
            path: b"",
            mode: 0,
            uid: 0,
            gid: 0,
            mtime: 0,
            kind: Kind::Regular,
            size: 0,
            link: None,
            device: None,
            uname: None,
            gname: None,
            records: Vec::new(),
        }
    }
}

impl<W: Write> TarBuilder<W> {
    pub fn new(inner: W, options: TarOptions) -> Self {
        TarBuilder {
            inner,
            options,
            windows_started: false,
            buffer: Vec::new(),
        }
    }

    pub fn options(&self) -> &TarOptions {
        &self.options
    }

    /// The writer, e.g. to ask a [`crate::LayerWriter`] how much it has written.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    fn windows(&self) -> bool {
        self.options.layout == LayerLayout::Windows
    }

    fn windows_prologue(&mut self) -> Result<()> {
        if !self.windows() || self.windows_started {
            return Ok(());
        }
        self.windows_started = true;
        for name in [&b"Hives"[..], b"Files"] {
            let records = vec![(
                "MSWINDOWS.fileattr".to_string(),
                WINDOWS_ATTR_DIRECTORY.as_bytes().to_vec(),
            )];
            self.raw_header(Fields {
                path: name,
                mode: S_IFDIR | 0o555,
                kind: Kind::Directory,
                records,
                ..Fields::default()
            })?;
        }
        Ok(())
    }

    fn raw_header(&mut self, fields: Fields<'_>) -> Result<()> {
        let Fields {
            path,
            mode,
            uid,
            gid,
            mtime,
            kind,
            size,
            link,
            device,
            uname,
            gname,
            mut records,
        } = fields;
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(kind.entry_type());
        header.set_mode(mode);
        header.set_mtime(mtime);
        // Ids beyond the octal field go to PAX, and base-256 in the header so readers
        // that ignore PAX still agree.
        if uid > USTAR_MAX_ID {
            records.push(("uid".into(), uid.to_string().into_bytes()));
        }
        header.set_uid(uid);
        if gid > USTAR_MAX_ID {
            records.push(("gid".into(), gid.to_string().into_bytes()));
        }
        header.set_gid(gid);
        // Size: octal when it fits, else PAX `size` plus the same value base-256 in the
        // header, so every reader agrees (never ustar 0 + PAX N: TARmageddon).
        if size > USTAR_MAX_SIZE {
            records.push(("size".into(), size.to_string().into_bytes()));
        }
        header.set_size(size);
        // Name: the raw ustar field, filled by us so nothing is rewritten behind our back;
        // longer names go to PAX `path` (and a truncated copy stays in the header).
        if path.len() > USTAR_NAME_LEN {
            records.push(("path".into(), path.to_vec()));
        }
        {
            let name = &mut header.as_old_mut().name;
            let n = path.len().min(USTAR_NAME_LEN);
            name[..n].copy_from_slice(&path[..n]);
        }
        if let Some(link) = link {
            if link.len() > USTAR_NAME_LEN {
                records.push(("linkpath".into(), link.to_vec()));
            }
            let field = &mut header.as_old_mut().linkname;
            let n = link.len().min(USTAR_NAME_LEN);
            field[..n].copy_from_slice(&link[..n]);
        }
        if let Some(ustar) = header.as_ustar_mut() {
            for (value, field, key) in [
                (uname, &mut ustar.uname[..], "uname"),
                (gname, &mut ustar.gname[..], "gname"),
            ] {
                match value {
                    Some(v) if v.len() < field.len() => field[..v.len()].copy_from_slice(v),
                    Some(v) => records.push((key.into(), v.to_vec())),
                    None => {}
                }
            }
        }
        if let Some((major, minor)) = device {
            header
                .set_device_major(major)
                .and_then(|_| header.set_device_minor(minor))
                .map_err(|e| io_err("device numbers of", path, e))?;
        }
        if !records.is_empty() {
            let body = pax_body(records);
            // Named like Go's archive/tar: dir/PaxHeaders.0/base (informational only).
            let trimmed = path.strip_suffix(b"/").unwrap_or(path);
            let (dir, base) = match trimmed.iter().rposition(|&b| b == b'/') {
                Some(i) => (&trimmed[..=i], &trimmed[i + 1..]),
                None => (&b""[..], trimmed),
            };
            let mut xname = Vec::with_capacity(path.len() + 13);
            xname.extend_from_slice(dir);
            xname.extend_from_slice(b"PaxHeaders.0/");
            xname.extend_from_slice(base);
            let mut xh = tar::Header::new_ustar();
            xh.set_entry_type(tar::EntryType::XHeader);
            xh.set_mode(0o644);
            xh.set_size(body.len() as u64);
            xh.set_mtime(0);
            let n = xname.len().min(USTAR_NAME_LEN);
            xh.as_old_mut().name[..n].copy_from_slice(&xname[..n]);
            xh.set_cksum();
            self.inner
                .write_all(xh.as_bytes())
                .and_then(|_| self.inner.write_all(&body))
                .map_err(|e| io_err("writing PAX header for", path, e))?;
            self.pad(body.len() as u64, path)?;
        }
        header.set_cksum();
        self.inner
            .write_all(header.as_bytes())
            .map_err(|e| io_err("writing header for", path, e))
    }

    fn pad(&mut self, size: u64, path: &[u8]) -> Result<()> {
        let rem = (size % 512) as usize;
        if rem != 0 {
            self.inner
                .write_all(&[0u8; 512][..512 - rem])
                .map_err(|e| io_err("padding", path, e))?;
        }
        Ok(())
    }

    /// The archive name of `path`.
    fn entry_path(&self, path: &[u8], kind: Kind) -> Result<Vec<u8>> {
        let parts = normalise(path)?;
        let mut out = Vec::with_capacity(path.len() + 7);
        if self.windows() {
            out.extend_from_slice(b"Files");
            for p in &parts {
                out.push(b'/');
                out.extend_from_slice(p);
            }
            if parts.is_empty() {
                return Err(ArchiveError::entry(
                    path,
                    "the layer root has no entry in a Windows layer",
                    None,
                ));
            }
            return Ok(out);
        }
        if parts.is_empty() {
            if kind != Kind::Directory {
                return Err(ArchiveError::entry(
                    path,
                    "only a directory can be the root",
                    None,
                ));
            }
            return Ok(b"./".to_vec());
        }
        out.extend_from_slice(&parts.join(&b'/'));
        if kind == Kind::Directory {
            out.push(b'/');
        }
        Ok(out)
    }

    fn header(
        &mut self,
        path: &[u8],
        meta: &EntryMeta,
        kind: Kind,
        size: u64,
        link: Option<&[u8]>,
        device: Option<(u32, u32)>,
    ) -> Result<()> {
        self.windows_prologue()?;
        let full = self.entry_path(path, kind)?;
        let mtime = match self.options.mtime_clamp {
            Some(epoch) => meta.mtime.min(epoch),
            None => meta.mtime,
        };
        let mut mode = meta.mode & 0o7777;
        let mut records: Vec<(String, Vec<u8>)> = Vec::new();
        let (uid, gid) = if self.windows() {
            (0, 0)
        } else {
            match self.options.owner {
                OwnerOverride::Keep => (meta.uid, meta.gid),
                OwnerOverride::Set { uid, gid } => (uid, gid),
            }
        };
        let link_full;
        let mut link = link;
        if self.windows() {
            let attr = match kind {
                Kind::Directory => {
                    mode |= S_IFDIR;
                    Some(WINDOWS_ATTR_DIRECTORY)
                }
                Kind::Regular => {
                    mode |= S_IFREG;
                    Some(WINDOWS_ATTR_ARCHIVE)
                }
                Kind::Symlink | Kind::HardLink => None,
                Kind::Char | Kind::Block | Kind::Fifo => {
                    return Err(ArchiveError::entry(
                        path,
                        "devices and FIFOs cannot be stored in a Windows layer",
                        None,
                    ));
                }
            };
            if let Some(attr) = attr {
                records.push(("MSWINDOWS.fileattr".into(), attr.as_bytes().to_vec()));
            }
            records.push(("MSWINDOWS.rawsd".into(), WINDOWS_RAWSD.as_bytes().to_vec()));
            if kind == Kind::HardLink
                && let Some(target) = link
            {
                link_full = self.entry_path(target, Kind::Regular)?;
                link = Some(&link_full);
            }
        } else {
            for (name, value) in &meta.xattrs {
                records.push((format!("SCHILY.xattr.{name}"), value.clone()));
            }
        }
        let names = self.options.names == NameMode::Include && !self.windows();
        self.raw_header(Fields {
            path: &full,
            mode,
            uid,
            gid,
            mtime,
            kind,
            size,
            link,
            device,
            uname: meta.uname.as_deref().map(str::as_bytes).filter(|_| names),
            gname: meta.gname.as_deref().map(str::as_bytes).filter(|_| names),
            records,
        })
    }

    /// A directory (the layer root when `path` is empty or `/`).
    pub fn append_dir(&mut self, path: impl AsRef<[u8]>, meta: &EntryMeta) -> Result<()> {
        self.header(path.as_ref(), meta, Kind::Directory, 0, None, None)
    }

    /// A regular file of exactly `size` bytes read from `reader`; a short reader is an
    /// error (the archive is then unusable: the caller discards it).
    pub fn append_file(
        &mut self,
        path: impl AsRef<[u8]>,
        meta: &EntryMeta,
        size: u64,
        reader: impl Read,
    ) -> Result<()> {
        let path = path.as_ref();
        self.header(path, meta, Kind::Regular, size, None, None)?;
        if self.buffer.is_empty() {
            self.buffer = vec![0u8; COPY_BUFFER_BYTES];
        }
        let mut limited = reader.take(size);
        let mut copied = 0u64;
        loop {
            let n = match limited.read(&mut self.buffer) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_err("reading", path, e)),
            };
            self.inner
                .write_all(&self.buffer[..n])
                .map_err(|e| io_err("writing", path, e))?;
            copied += n as u64;
        }
        check_copied(path, copied, size)?;
        self.pad(size, path)
    }

    /// A regular file of exactly `size` bytes that `write_data` writes to the inner writer
    /// itself (e.g. as a gzip segment) and whose count it returns; a different count is an
    /// error.
    pub fn append_file_with(
        &mut self,
        path: impl AsRef<[u8]>,
        meta: &EntryMeta,
        size: u64,
        write_data: impl FnOnce(&mut W) -> io::Result<u64>,
    ) -> Result<()> {
        let path = path.as_ref();
        self.header(path, meta, Kind::Regular, size, None, None)?;
        let copied = write_data(&mut self.inner).map_err(|e| io_err("writing", path, e))?;
        check_copied(path, copied, size)?;
        self.pad(size, path)
    }

    /// A symlink; `target` is stored as is (symlink targets may point anywhere).
    pub fn append_symlink(
        &mut self,
        path: impl AsRef<[u8]>,
        meta: &EntryMeta,
        target: impl AsRef<[u8]>,
    ) -> Result<()> {
        let target = target.as_ref();
        if target.is_empty() || target.contains(&0) {
            return Err(ArchiveError::entry(
                path.as_ref(),
                "symlink target is empty or contains NUL",
                None,
            ));
        }
        self.header(path.as_ref(), meta, Kind::Symlink, 0, Some(target), None)
    }

    /// Hard link to an earlier entry `target` (a path inside the archive, normalised).
    pub fn append_hardlink(
        &mut self,
        path: impl AsRef<[u8]>,
        meta: &EntryMeta,
        target: impl AsRef<[u8]>,
    ) -> Result<()> {
        let parts = normalise(target.as_ref())?;
        if parts.is_empty() {
            return Err(ArchiveError::entry(
                path.as_ref(),
                "hard link to the root",
                None,
            ));
        }
        let target = parts.join(&b'/');
        self.header(path.as_ref(), meta, Kind::HardLink, 0, Some(&target), None)
    }

    pub fn append_device(
        &mut self,
        path: impl AsRef<[u8]>,
        meta: &EntryMeta,
        kind: DeviceKind,
        major: u32,
        minor: u32,
    ) -> Result<()> {
        let kind = match kind {
            DeviceKind::Char => Kind::Char,
            DeviceKind::Block => Kind::Block,
        };
        self.header(path.as_ref(), meta, kind, 0, None, Some((major, minor)))
    }

    pub fn append_fifo(&mut self, path: impl AsRef<[u8]>, meta: &EntryMeta) -> Result<()> {
        self.header(path.as_ref(), meta, Kind::Fifo, 0, None, None)
    }

    /// OCI whiteout for `path` (written as `dir/.wh.name`, mode 0644, owner 0:0).
    pub fn append_whiteout(&mut self, path: impl AsRef<[u8]>) -> Result<()> {
        let p = path.as_ref();
        let parts = normalise(p)?;
        let Some((base, dir)) = parts.split_last() else {
            return Err(ArchiveError::entry(p, "cannot white out the root", None));
        };
        if base.starts_with(b".wh.") {
            return Err(ArchiveError::entry(
                p,
                "cannot white out a whiteout name",
                None,
            ));
        }
        let mut name = dir.join(&b'/');
        if !name.is_empty() {
            name.push(b'/');
        }
        name.extend_from_slice(b".wh.");
        name.extend_from_slice(base);
        self.header(
            &name,
            &EntryMeta::with_mode(0o644),
            Kind::Regular,
            0,
            None,
            None,
        )
    }

    /// Opaque marker `dir/.wh..wh..opq`: lower-layer contents of `dir` are hidden.
    pub fn append_opaque(&mut self, dir: impl AsRef<[u8]>) -> Result<()> {
        let parts = normalise(dir.as_ref())?;
        let mut name = parts.join(&b'/');
        if !name.is_empty() {
            name.push(b'/');
        }
        name.extend_from_slice(b".wh..wh..opq");
        self.header(
            &name,
            &EntryMeta::with_mode(0o644),
            Kind::Regular,
            0,
            None,
            None,
        )
    }

    /// Write the two end-of-archive blocks and return the writer.
    pub fn finish(mut self) -> Result<W> {
        self.windows_prologue()?;
        self.inner
            .write_all(&[0u8; 1024])
            .map_err(|e| ArchiveError::io("writing end of archive", e))?;
        self.inner
            .flush()
            .map_err(|e| ArchiveError::io("flushing archive", e))?;
        Ok(self.inner)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum WalkMode {
    Tree,
    Overlay,
}

/// Xattrs copied into layers, sorted by name. `trusted.overlay.*`/`user.overlay.*` are
/// overlayfs internals and `security.selinux` is host policy: never content. In overlay
/// mode all `trusted.*` are dropped (the RUN engine's own bookkeeping).
fn read_xattrs(fd: BorrowedFd<'_>, mode: WalkMode) -> io::Result<Vec<(String, Vec<u8>)>> {
    let names = crate::xattr::list(fd)?;
    let mut out = Vec::new();
    for raw in names.split(|&b| b == 0) {
        if raw.is_empty() {
            continue;
        }
        let Ok(name) = std::str::from_utf8(raw) else {
            continue;
        };
        if !crate::xattr::is_content(name)
            || (mode == WalkMode::Overlay && name.starts_with("trusted."))
        {
            continue;
        }
        if let Some(value) = crate::xattr::get(fd, name)? {
            out.push((name.to_string(), value));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

fn is_opaque(fd: BorrowedFd<'_>) -> bool {
    let mut v = [0u8; 4];
    ["trusted.overlay.opaque", "user.overlay.opaque"]
        .iter()
        .any(|name| matches!(rustix::fs::fgetxattr(fd, *name, &mut v[..]), Ok(1) if v[0] == b'y'))
}

struct Walker<'a, W: Write> {
    tar: &'a mut TarBuilder<W>,
    links: HashMap<(u64, u64), Vec<u8>>,
    mode: WalkMode,
}

fn join(prefix: &[u8], name: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(prefix.len() + name.len() + 1);
    v.extend_from_slice(prefix);
    if !v.is_empty() && !v.ends_with(b"/") {
        v.push(b'/');
    }
    v.extend_from_slice(name);
    v
}

fn path_err(op: &'static str, path: &Path, source: io::Error) -> ArchiveError {
    ArchiveError::Path {
        op,
        path: path.to_path_buf(),
        source,
    }
}

fn same_file(a: &Stat, b: &Stat) -> bool {
    a.st_dev == b.st_dev && a.st_ino == b.st_ino
}

const READ_DIR: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

impl<W: Write> Walker<'_, W> {
    /// Write directory `fd` (already stat'ed as `st`) as `dest`, then its children.
    fn dir(&mut self, fd: OwnedFd, st: &Stat, src: &Path, dest: &[u8]) -> Result<()> {
        let mut meta = EntryMeta::from_stat(st);
        meta.xattrs =
            read_xattrs(fd.as_fd(), self.mode).map_err(|e| path_err("xattrs of", src, e))?;
        if !dest.is_empty() {
            self.tar.append_dir(dest, &meta)?;
        }
        if self.mode == WalkMode::Overlay && is_opaque(fd.as_fd()) {
            self.tar.append_opaque(dest)?;
        }
        let mut names: Vec<Vec<u8>> = Vec::new();
        let mut dir = rustix::fs::Dir::read_from(&fd)
            .map_err(|e| path_err("reading directory", src, io::Error::from(e)))?;
        for entry in dir.by_ref() {
            let entry =
                entry.map_err(|e| path_err("reading directory", src, io::Error::from(e)))?;
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                names.push(name.to_vec());
            }
        }
        drop(dir);
        names.sort();
        for name in names {
            let child_src = src.join(OsStr::from_bytes(&name));
            let child_dest = join(dest, &name);
            self.child(fd.as_fd(), &name, &child_src, &child_dest)?;
        }
        Ok(())
    }

    fn child(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &[u8],
        src: &Path,
        dest: &[u8],
    ) -> Result<()> {
        let name_os = OsStr::from_bytes(name);
        let st = rustix::fs::statat(parent, name_os, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| path_err("stat", src, io::Error::from(e)))?;
        let ft = FileType::from_raw_mode(st.st_mode);
        let changed = || {
            path_err(
                "archiving",
                src,
                io::Error::other("file was replaced while the tree was being archived"),
            )
        };
        match ft {
            FileType::Directory => {
                let fd = rustix::fs::openat(parent, name_os, READ_DIR, Mode::empty())
                    .map_err(|e| path_err("opening directory", src, io::Error::from(e)))?;
                let fst = rustix::fs::fstat(&fd)
                    .map_err(|e| path_err("stat", src, io::Error::from(e)))?;
                if !same_file(&st, &fst) {
                    return Err(changed());
                }
                self.dir(fd, &fst, src, dest)
            }
            FileType::CharacterDevice if self.mode == WalkMode::Overlay && st.st_rdev == 0 => {
                self.tar.append_whiteout(dest)
            }
            _ => {
                let meta = EntryMeta::from_stat(&st);
                if st.st_nlink > 1 {
                    let key = (st.st_dev, st.st_ino);
                    if let Some(first) = self.links.get(&key) {
                        let first = first.clone();
                        return self.tar.append_hardlink(dest, &meta, first);
                    }
                    self.links.insert(key, dest.to_vec());
                }
                self.leaf(parent, name_os, &st, ft, meta, src, dest)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn leaf(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &OsStr,
        st: &Stat,
        ft: FileType,
        mut meta: EntryMeta,
        src: &Path,
        dest: &[u8],
    ) -> Result<()> {
        match ft {
            FileType::RegularFile => {
                // O_NOFOLLOW: if the file was swapped for a symlink since the stat, this
                // fails instead of archiving whatever the link points to.
                let fd = rustix::fs::openat(
                    parent,
                    name,
                    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| path_err("opening", src, io::Error::from(e)))?;
                let fst = rustix::fs::fstat(&fd)
                    .map_err(|e| path_err("stat", src, io::Error::from(e)))?;
                if !same_file(st, &fst)
                    || FileType::from_raw_mode(fst.st_mode) != FileType::RegularFile
                {
                    return Err(path_err(
                        "archiving",
                        src,
                        io::Error::other("file was replaced while the tree was being archived"),
                    ));
                }
                meta = EntryMeta::from_stat(&fst);
                meta.xattrs = read_xattrs(fd.as_fd(), self.mode)
                    .map_err(|e| path_err("xattrs of", src, e))?;
                let size = fst.st_size.max(0) as u64;
                self.tar.append_file(dest, &meta, size, File::from(fd))
            }
            FileType::Symlink => {
                let target = rustix::fs::readlinkat(parent, name, Vec::new())
                    .map_err(|e| path_err("reading link", src, io::Error::from(e)))?;
                self.tar.append_symlink(dest, &meta, target.as_bytes())
            }
            FileType::CharacterDevice | FileType::BlockDevice => {
                let kind = if ft == FileType::CharacterDevice {
                    DeviceKind::Char
                } else {
                    DeviceKind::Block
                };
                let rdev = st.st_rdev;
                self.tar.append_device(
                    dest,
                    &meta,
                    kind,
                    rustix::fs::major(rdev),
                    rustix::fs::minor(rdev),
                )
            }
            FileType::Fifo => self.tar.append_fifo(dest, &meta),
            // Sockets cannot be stored in tar; GNU tar skips them too.
            _ => Ok(()),
        }
    }
}

fn walk<W: Write>(
    dir: &Path,
    dest_prefix: &str,
    tar: &mut TarBuilder<W>,
    mode: WalkMode,
) -> Result<()> {
    // The root itself may be reached through a symlink (a context path); nothing below it.
    let fd = rustix::fs::openat(
        rustix::fs::CWD,
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| path_err("opening directory", dir, io::Error::from(e)))?;
    let st = rustix::fs::fstat(&fd).map_err(|e| path_err("stat", dir, io::Error::from(e)))?;
    let prefix = normalise(dest_prefix.as_bytes())?.join(&b'/');
    let mut walker = Walker {
        tar,
        links: HashMap::new(),
        mode,
    };
    walker.dir(fd, &st, &PathBuf::from(dir), &prefix)
}

/// Write the tree at `dir` (sorted by name bytes, symlinks not followed, hard links
/// detected by dev+ino, xattrs except overlay/SELinux ones) under `dest_prefix` (`""` for
/// the layer root). The directory itself is written as `dest_prefix/` when the prefix is
/// not empty; its parents are not (the caller adds them if the layer needs them).
///
/// Files are opened relative to their directory with `O_NOFOLLOW` and checked against the
/// directory listing's inode, so a file swapped for a symlink during the walk is an error,
/// never a read of the link's target.
pub fn write_tree<W: Write>(dir: &Path, dest_prefix: &str, tar: &mut TarBuilder<W>) -> Result<()> {
    walk(dir, dest_prefix, tar, WalkMode::Tree)
}

/// Convert an overlayfs upper dir into an OCI layer diff: char 0:0 devices become
/// `.wh.name`, opaque directories (`trusted.overlay.opaque=y` or `user.overlay.opaque=y`)
/// get a `.wh..wh..opq` entry, `trusted.*` xattrs are dropped, the rest is kept.
/// The upper dir must come from a mount without `redirect_dir` and `metacopy` (their
/// xattr-described renames and metadata-only copies cannot be expressed in a layer).
pub fn write_overlay_diff<W: Write>(upper_dir: &Path, tar: &mut TarBuilder<W>) -> Result<()> {
    walk(upper_dir, "", tar, WalkMode::Overlay)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_lengths_count_themselves() {
        for value_len in [0usize, 1, 5, 6, 7, 90, 94, 95, 96, 995, 996, 9990] {
            let body = pax_body(vec![("path".into(), vec![b'a'; value_len])]);
            let space = body.iter().position(|&b| b == b' ').unwrap();
            let len: usize = std::str::from_utf8(&body[..space])
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(len, body.len(), "value_len {value_len}");
        }
    }

    #[test]
    fn normalises_and_refuses_climbing_paths() {
        let mut t = TarBuilder::new(Vec::new(), TarOptions::default());
        assert_eq!(t.entry_path(b"/./a//b/.", Kind::Regular).unwrap(), b"a/b");
        assert_eq!(t.entry_path(b"a/", Kind::Directory).unwrap(), b"a/");
        assert_eq!(t.entry_path(b"/", Kind::Directory).unwrap(), b"./");
        assert!(t.entry_path(b"", Kind::Regular).is_err());
        assert!(t.append_dir("a/../../b", &EntryMeta::default()).is_err());
        assert!(t.append_whiteout("a/.wh.x").is_err());
        assert!(t.append_whiteout("/").is_err());
        assert!(
            t.append_hardlink("x", &EntryMeta::default(), "../y")
                .is_err()
        );
    }
}
