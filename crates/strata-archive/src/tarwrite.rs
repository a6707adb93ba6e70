//! Deterministic tar writing with our own PAX `x` headers (the `tar` crate has no PAX writer).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use crate::error::{ArchiveError, Result};

/// Security descriptor written by go-containerregistry's `mutate.Windows` and BuildKit for
/// every entry: owner BUILTIN\Users, group BUILTIN\Users (`O:BUG:BU`), base64.
pub const WINDOWS_RAWSD: &str =
    "AQAAgBQAAAAkAAAAAAAAAAAAAAABAgAAAAAABSAAAAAhAgAAAQIAAAAAAAUgAAAAIQIAAA==";
/// Windows FILE_ATTRIBUTE_DIRECTORY, as written in `MSWINDOWS.fileattr`.
const WINDOWS_ATTR_DIRECTORY: &str = "16";
/// Windows FILE_ATTRIBUTE_ARCHIVE, used for regular files.
const WINDOWS_ATTR_ARCHIVE: &str = "32";
/// Largest value a ustar octal size field holds (11 octal digits); beyond it a PAX `size`.
const USTAR_MAX_SIZE: u64 = 0o77777777777;
/// Largest uid/gid a ustar octal id field holds (7 octal digits); beyond it PAX `uid`/`gid`.
const USTAR_MAX_ID: u64 = 0o7777777;
/// ustar `name` field length.
const USTAR_NAME_LEN: usize = 100;
/// Copy buffer for file contents.
const COPY_BUFFER_BYTES: usize = 256 * 1024;

/// Ownership written into headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OwnerOverride {
    /// Keep the uid/gid of the source.
    #[default]
    Keep,
    /// Write these ids for every entry.
    Set { uid: u64, gid: u64 },
}

/// Whether user/group names go into headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NameMode {
    #[default]
    Omit,
    Include,
}

/// Linux layers, or the Windows container layer layout (`Hives/`, `Files/`, MSWINDOWS PAX).
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
#[derive(Debug, Clone, Default)]
pub struct EntryMeta {
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
    fn from_metadata(md: &fs::Metadata) -> Self {
        EntryMeta {
            mode: md.mode() & 0o7777,
            uid: md.uid() as u64,
            gid: md.gid() as u64,
            mtime: md.mtime().max(0) as u64,
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
pub struct TarBuilder<W: Write> {
    inner: W,
    options: TarOptions,
    windows_started: bool,
    buffer: Vec<u8>,
}

fn pax_record(out: &mut Vec<u8>, key: &str, value: &[u8]) {
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
    out.extend_from_slice(value);
    out.push(b'\n');
}

fn io_err(context: &str, path: &[u8], e: io::Error) -> ArchiveError {
    ArchiveError::io(format!("{context} {}", String::from_utf8_lossy(path)), e)
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

    fn windows_prologue(&mut self) -> Result<()> {
        if self.options.layout != LayerLayout::Windows || self.windows_started {
            return Ok(());
        }
        self.windows_started = true;
        // Fixed mode: Windows can only express 0222/0444/0666; 0555 as ggcr writes.
        let meta = EntryMeta::with_mode(0o555);
        self.raw_header(
            b"Hives",
            &meta,
            tar::EntryType::Directory,
            0,
            None,
            &[],
            false,
        )?;
        self.raw_header(
            b"Files",
            &meta,
            tar::EntryType::Directory,
            0,
            None,
            &[],
            true,
        )?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn raw_header(
        &mut self,
        path: &[u8],
        meta: &EntryMeta,
        kind: tar::EntryType,
        size: u64,
        link: Option<&[u8]>,
        device: &[u32],
        windows_records: bool,
    ) -> Result<()> {
        let mut records = Vec::new();
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(kind);
        let (uid, gid) = match self.options.owner {
            OwnerOverride::Keep => (meta.uid, meta.gid),
            OwnerOverride::Set { uid, gid } => (uid, gid),
        };
        let mtime = match self.options.mtime_clamp {
            Some(epoch) => meta.mtime.min(epoch),
            None => meta.mtime,
        };
        header.set_mode(meta.mode & 0o7777);
        header.set_mtime(mtime);
        if uid > USTAR_MAX_ID {
            pax_record(&mut records, "uid", uid.to_string().as_bytes());
            header.set_uid(0);
        } else {
            header.set_uid(uid);
        }
        if gid > USTAR_MAX_ID {
            pax_record(&mut records, "gid", gid.to_string().as_bytes());
            header.set_gid(0);
        } else {
            header.set_gid(gid);
        }
        if self.options.names == NameMode::Include {
            if let Some(u) = &meta.uname
                && header.set_username(u).is_err()
            {
                pax_record(&mut records, "uname", u.as_bytes());
            }
            if let Some(g) = &meta.gname
                && header.set_groupname(g).is_err()
            {
                pax_record(&mut records, "gname", g.as_bytes());
            }
        }
        // Size: octal when it fits, else PAX `size` plus the same value base-256 in the header,
        // so readers that ignore PAX still agree (never ustar 0 + PAX N: TARmageddon).
        if size > USTAR_MAX_SIZE {
            pax_record(&mut records, "size", size.to_string().as_bytes());
        }
        header.set_size(size);
        // Name: we fill the raw ustar field ourselves so nothing is normalised behind our back.
        let fits = path.len() <= USTAR_NAME_LEN;
        if !fits {
            pax_record(&mut records, "path", path);
        }
        {
            let name = &mut header.as_old_mut().name;
            let n = path.len().min(USTAR_NAME_LEN);
            name[..n].copy_from_slice(&path[..n]);
        }
        if let Some(link) = link {
            if link.len() > USTAR_NAME_LEN {
                pax_record(&mut records, "linkpath", link);
            }
            let field = &mut header.as_old_mut().linkname;
            let n = link.len().min(USTAR_NAME_LEN);
            field[..n].copy_from_slice(&link[..n]);
        }
        if let [major, minor] = device {
            header
                .set_device_major(*major)
                .and_then(|_| header.set_device_minor(*minor))
                .map_err(|e| io_err("device numbers of", path, e))?;
        }
        if windows_records {
            let attr = if kind == tar::EntryType::Directory {
                WINDOWS_ATTR_DIRECTORY
            } else {
                WINDOWS_ATTR_ARCHIVE
            };
            pax_record(&mut records, "MSWINDOWS.fileattr", attr.as_bytes());
            pax_record(&mut records, "MSWINDOWS.rawsd", WINDOWS_RAWSD.as_bytes());
        }
        let mut xattrs: Vec<&(String, Vec<u8>)> = meta.xattrs.iter().collect();
        xattrs.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, value) in xattrs {
            pax_record(&mut records, &format!("SCHILY.xattr.{name}"), value);
        }
        if !records.is_empty() {
            // PAX extended header named like Go's archive/tar does: dir/PaxHeaders.0/base.
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
            xh.set_size(records.len() as u64);
            xh.set_mtime(0);
            let n = xname.len().min(USTAR_NAME_LEN);
            xh.as_old_mut().name[..n].copy_from_slice(&xname[..n]);
            xh.set_cksum();
            self.inner
                .write_all(xh.as_bytes())
                .map_err(|e| io_err("writing PAX header for", path, e))?;
            self.inner
                .write_all(&records)
                .map_err(|e| io_err("writing PAX header for", path, e))?;
            self.pad(records.len() as u64, path)?;
        }
        header.set_cksum();
        self.inner
            .write_all(header.as_bytes())
            .map_err(|e| io_err("writing header for", path, e))?;
        Ok(())
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

    fn entry_path(&self, path: &[u8], directory: bool) -> Vec<u8> {
        let mut p: &[u8] = path;
        while let Some(rest) = p.strip_prefix(b"/") {
            p = rest;
        }
        while let Some(rest) = p.strip_prefix(b"./") {
            p = rest;
        }
        let mut out = Vec::with_capacity(p.len() + 7);
        if self.options.layout == LayerLayout::Windows {
            out.extend_from_slice(b"Files/");
        }
        out.extend_from_slice(p);
        while out.ends_with(b"/") {
            out.pop();
        }
        if directory && self.options.layout == LayerLayout::Linux {
            out.push(b'/');
        }
        out
    }

    fn header(
        &mut self,
        path: &[u8],
        meta: &EntryMeta,
        kind: tar::EntryType,
        size: u64,
        link: Option<&[u8]>,
        device: &[u32],
    ) -> Result<()> {
        self.windows_prologue()?;
        let full = self.entry_path(path, kind == tar::EntryType::Directory);
        let windows = self.options.layout == LayerLayout::Windows;
        let link_full = link.map(|l| {
            if windows && kind == tar::EntryType::Link {
                self.entry_path(l, false)
            } else {
                l.to_vec()
            }
        });
        self.raw_header(
            &full,
            meta,
            kind,
            size,
            link_full.as_deref(),
            device,
            windows,
        )
    }

    pub fn append_dir(&mut self, path: impl AsRef<[u8]>, meta: &EntryMeta) -> Result<()> {
        self.header(path.as_ref(), meta, tar::EntryType::Directory, 0, None, &[])
    }

    /// A regular file of exactly `size` bytes read from `reader`; a short reader is an error.
    pub fn append_file(
        &mut self,
        path: impl AsRef<[u8]>,
        meta: &EntryMeta,
        size: u64,
        reader: impl Read,
    ) -> Result<()> {
        let path = path.as_ref();
        self.header(path, meta, tar::EntryType::Regular, size, None, &[])?;
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
        if copied != size {
            return Err(io_err(
                "reading",
                path,
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("file shrank: {copied} of {size} bytes"),
                ),
            ));
        }
        self.pad(size, path)
    }

    pub fn append_symlink(
        &mut self,
        path: impl AsRef<[u8]>,
        meta: &EntryMeta,
        target: impl AsRef<[u8]>,
    ) -> Result<()> {
        self.header(
            path.as_ref(),
            meta,
            tar::EntryType::Symlink,
            0,
            Some(target.as_ref()),
            &[],
        )
    }

    /// Hard link to an earlier entry `target` (a path inside the archive).
    pub fn append_hardlink(
        &mut self,
        path: impl AsRef<[u8]>,
        meta: &EntryMeta,
        target: impl AsRef<[u8]>,
    ) -> Result<()> {
        let mut t: &[u8] = target.as_ref();
        while let Some(rest) = t.strip_prefix(b"/") {
            t = rest;
        }
        self.header(path.as_ref(), meta, tar::EntryType::Link, 0, Some(t), &[])
    }

    pub fn append_device(
        &mut self,
        path: impl AsRef<[u8]>,
        meta: &EntryMeta,
        kind: DeviceKind,
        major: u32,
        minor: u32,
    ) -> Result<()> {
        let t = match kind {
            DeviceKind::Char => tar::EntryType::Char,
            DeviceKind::Block => tar::EntryType::Block,
        };
        self.header(path.as_ref(), meta, t, 0, None, &[major, minor])
    }

    pub fn append_fifo(&mut self, path: impl AsRef<[u8]>, meta: &EntryMeta) -> Result<()> {
        self.header(path.as_ref(), meta, tar::EntryType::Fifo, 0, None, &[])
    }

    /// OCI whiteout for `path` (written as `dir/.wh.name`).
    pub fn append_whiteout(&mut self, path: impl AsRef<[u8]>) -> Result<()> {
        let p = path.as_ref();
        let p = p.strip_suffix(b"/").unwrap_or(p);
        let (dir, base) = match p.iter().rposition(|&b| b == b'/') {
            Some(i) => (&p[..=i], &p[i + 1..]),
            None => (&b""[..], p),
        };
        if base.is_empty() || base == b"." || base == b".." {
            return Err(ArchiveError::entry(p, "cannot white out this name", None));
        }
        let mut name = dir.to_vec();
        name.extend_from_slice(b".wh.");
        name.extend_from_slice(base);
        self.header(
            &name,
            &EntryMeta::with_mode(0o644),
            tar::EntryType::Regular,
            0,
            None,
            &[],
        )
    }

    /// Opaque marker `dir/.wh..wh..opq`: lower-layer contents of `dir` are hidden.
    pub fn append_opaque(&mut self, dir: impl AsRef<[u8]>) -> Result<()> {
        let d = dir.as_ref();
        let d = d.strip_suffix(b"/").unwrap_or(d);
        let mut name = d.to_vec();
        if !name.is_empty() {
            name.push(b'/');
        }
        name.extend_from_slice(b".wh..wh..opq");
        self.header(
            &name,
            &EntryMeta::with_mode(0o644),
            tar::EntryType::Regular,
            0,
            None,
            &[],
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

/// Xattrs copied into layers. `trusted.overlay.*` are overlayfs internals, never content.
fn read_xattrs(path: &Path, mode: WalkMode) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut names = vec![0u8; 1024];
    let n = match rustix::fs::llistxattr(path, &mut names) {
        Ok(n) => n,
        Err(rustix::io::Errno::RANGE) => match rustix::fs::llistxattr(path, &mut [0u8; 0][..]) {
            Ok(size) => {
                names = vec![0u8; size];
                rustix::fs::llistxattr(path, &mut names).unwrap_or(0)
            }
            Err(_) => 0,
        },
        Err(_) => 0,
    };
    for raw in names[..n.min(names.len())].split(|&b| b == 0) {
        if raw.is_empty() {
            continue;
        }
        let Ok(name) = std::str::from_utf8(raw) else {
            continue;
        };
        if name.starts_with("trusted.overlay.")
            || name.starts_with("user.overlay.")
            || name == "security.selinux"
        {
            continue;
        }
        if mode == WalkMode::Overlay && name.starts_with("trusted.") {
            continue;
        }
        let mut value = vec![0u8; 256];
        let got = match rustix::fs::lgetxattr(path, name, &mut value) {
            Ok(n) => n,
            Err(rustix::io::Errno::RANGE) => {
                match rustix::fs::lgetxattr(path, name, &mut [0u8; 0][..]) {
                    Ok(size) => {
                        value = vec![0u8; size];
                        rustix::fs::lgetxattr(path, name, &mut value).unwrap_or(0)
                    }
                    Err(_) => continue,
                }
            }
            Err(_) => continue,
        };
        value.truncate(got);
        out.push((name.to_string(), value));
    }
    out
}

fn is_opaque(path: &Path) -> bool {
    let mut v = [0u8; 4];
    for name in ["trusted.overlay.opaque", "user.overlay.opaque"] {
        if let Ok(n) = rustix::fs::lgetxattr(path, name, &mut v)
            && &v[..n] == b"y"
        {
            return true;
        }
    }
    false
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

impl<W: Write> Walker<'_, W> {
    fn entry(&mut self, src: &Path, dest: &[u8], md: &fs::Metadata) -> Result<()> {
        let ft = md.file_type();
        let mut meta = EntryMeta::from_metadata(md);
        if ft.is_dir() {
            meta.xattrs = read_xattrs(src, self.mode);
            if !dest.is_empty() {
                self.tar.append_dir(dest, &meta)?;
            }
            if self.mode == WalkMode::Overlay && is_opaque(src) {
                self.tar.append_opaque(dest)?;
            }
            let mut children: Vec<_> = fs::read_dir(src)
                .map_err(|e| path_err("reading directory", src, e))?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<io::Result<_>>()
                .map_err(|e| path_err("reading directory", src, e))?;
            children.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            for name in children {
                let child = src.join(&name);
                let cmd = fs::symlink_metadata(&child).map_err(|e| path_err("stat", &child, e))?;
                self.entry(&child, &join(dest, name.as_bytes()), &cmd)?;
            }
            return Ok(());
        }
        if self.mode == WalkMode::Overlay && ft.is_char_device() && md.rdev() == 0 {
            return self.tar.append_whiteout(dest);
        }
        if md.nlink() > 1 && !ft.is_dir() {
            let key = (md.dev(), md.ino());
            if let Some(first) = self.links.get(&key) {
                let first = first.clone();
                return self.tar.append_hardlink(dest, &meta, first);
            }
            self.links.insert(key, dest.to_vec());
        }
        if ft.is_file() {
            meta.xattrs = read_xattrs(src, self.mode);
            let f = fs::File::open(src).map_err(|e| path_err("opening", src, e))?;
            self.tar.append_file(dest, &meta, md.len(), f)
        } else if ft.is_symlink() {
            let target = fs::read_link(src).map_err(|e| path_err("reading link", src, e))?;
            self.tar
                .append_symlink(dest, &meta, target.as_os_str().as_bytes())
        } else if ft.is_char_device() || ft.is_block_device() {
            let kind = if ft.is_char_device() {
                DeviceKind::Char
            } else {
                DeviceKind::Block
            };
            let rdev = md.rdev();
            self.tar.append_device(
                dest,
                &meta,
                kind,
                rustix::fs::major(rdev),
                rustix::fs::minor(rdev),
            )
        } else if ft.is_fifo() {
            self.tar.append_fifo(dest, &meta)
        } else {
            // Sockets cannot be stored in tar; GNU tar skips them too.
            Ok(())
        }
    }
}

fn walk<W: Write>(
    dir: &Path,
    dest_prefix: &str,
    tar: &mut TarBuilder<W>,
    mode: WalkMode,
) -> Result<()> {
    let md = fs::symlink_metadata(dir).map_err(|e| path_err("stat", dir, e))?;
    let prefix = OsStr::new(dest_prefix.trim_start_matches('/'))
        .as_bytes()
        .to_vec();
    let mut walker = Walker {
        tar,
        links: HashMap::new(),
        mode,
    };
    walker.entry(dir, &prefix, &md)
}

/// Write the tree at `dir` (sorted, symlinks not followed, hardlinks detected by dev+ino)
/// under `dest_prefix` ("" for the layer root). The root directory itself is written as
/// `dest_prefix/` when the prefix is not empty.
pub fn write_tree<W: Write>(dir: &Path, dest_prefix: &str, tar: &mut TarBuilder<W>) -> Result<()> {
    walk(dir, dest_prefix, tar, WalkMode::Tree)
}

/// Convert an overlayfs upper dir into an OCI layer diff: char 0:0 devices become
/// `.wh.name`, opaque directories (`trusted.overlay.opaque=y` or `user.overlay.opaque=y`)
/// get a `.wh..wh..opq` entry, `trusted.*` xattrs are dropped, the rest is kept.
pub fn write_overlay_diff<W: Write>(upper_dir: &Path, tar: &mut TarBuilder<W>) -> Result<()> {
    walk(upper_dir, "", tar, WalkMode::Overlay)
}
