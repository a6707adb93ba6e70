//! The OCI image layout: blobs, `index.json`, locks, gc.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, Mode, OFlags, ResolveFlags, flock, openat2};
use strata_spec::{
    Algorithm, Descriptor, Digest, DigestHasher, ImageIndex, MAX_INDEX_ENTRIES, MAX_MANIFEST_BYTES,
    Manifest, MediaType,
};

use crate::StoreError;

/// Largest `index.json` read (it grows with the number of tags; 16 MiB is ~60k entries).
pub const MAX_INDEX_BYTES: u64 = 16 * 1024 * 1024;
/// strata's own files inside a layout: lock files and in-flight temp files. Kept in one hidden
/// directory so the layout stays valid for other tools.
const META_DIR: &str = ".strata";
const INDEX_LOCK: &str = "index.lock";
const GC_LOCK: &str = "gc.lock";
const TEMP_DIR: &str = "tmp";
const OCI_LAYOUT: &str = "oci-layout";
const INDEX: &str = "index.json";
/// How deep gc follows nested indexes (RELIABILITY M8: an index pointing at itself must end).
const MAX_GC_DEPTH: usize = 8;
/// How many manifests gc visits at most (M8: a million-entry index must not run forever).
const MAX_GC_MANIFESTS: usize = 100_000;
/// `oci-layout` and similar marker files are tiny; anything bigger is not one.
const MAX_SMALL_FILE_BYTES: u64 = 64 * 1024;
/// Longest tag accepted (a full reference with a digest is under 300 characters).
const MAX_TAG_LEN: usize = 512;
/// Size of the chunks blobs are copied in: big enough for 400+ MiB/s, small enough that
/// memory stays flat.
pub(crate) const COPY_CHUNK: usize = 1024 * 1024;
pub(crate) const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// An OCI image layout directory.
#[derive(Debug, Clone)]
pub struct OciLayout {
    root: PathBuf,
    /// Scratch space (an archive writer's staging): blobs are neither fsynced nor written
    /// with `O_DIRECT`, since they only live until the archive is written and fsynced.
    scratch: bool,
}

/// What `gc` removed.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct GcReport {
    pub blobs_removed: usize,
    pub bytes_removed: u64,
    pub temp_files_removed: usize,
    /// Staging directories of archive writers that were killed (see
    /// [`crate::OciArchiveSink::create_noted_in`]).
    pub staging_dirs_removed: usize,
}

/// Held by a writer for as long as it writes: `gc` waits until every guard is dropped, so blobs
/// written but not yet referenced from `index.json` are never collected.
#[derive(Debug)]
pub struct WriterGuard {
    _lock: File,
}

/// Open a file refusing symlinks and anything but a regular file (RELIABILITY M14).
pub(crate) fn open_regular(path: &Path) -> Result<(File, u64), StoreError> {
    let file = OpenOptions::new()
        .read(true)
        // O_NONBLOCK: opening a FIFO planted where a file should be must not hang.
        .custom_flags((OFlags::NOFOLLOW | OFlags::NONBLOCK).bits() as i32)
        .open(path)
        .map_err(|e| open_error(path, e))?;
    check_regular(path, file)
}

fn open_error(path: &Path, e: std::io::Error) -> StoreError {
    match e.raw_os_error() {
        // ELOOP: a symlink where O_NOFOLLOW / RESOLVE_NO_SYMLINKS forbids one; EXDEV: the path
        // tried to leave the directory it was resolved beneath.
        Some(code)
            if code == rustix::io::Errno::LOOP.raw_os_error()
                || code == rustix::io::Errno::XDEV.raw_os_error() =>
        {
            StoreError::NotRegular {
                path: path.to_path_buf(),
            }
        }
        _ => StoreError::io(path, "cannot open", e),
    }
}

fn check_regular(path: &Path, file: File) -> Result<(File, u64), StoreError> {
    let meta = file
        .metadata()
        .map_err(|e| StoreError::io(path, "cannot stat", e))?;
    if !meta.is_file() {
        return Err(StoreError::NotRegular {
            path: path.to_path_buf(),
        });
    }
    Ok((file, meta.len()))
}

/// Open `relative` beneath `root` for reading with no symlink in any component (not only the
/// last) and no escape from `root`: `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`
/// (RELIABILITY rule 1, M14). Only regular files are returned. Kernels without openat2 fall
/// back to `O_NOFOLLOW` on the last component after checking the parents are no symlinks.
pub(crate) fn open_beneath(root: &Path, relative: &str) -> Result<(File, u64), StoreError> {
    let path = root.join(relative);
    let dir = File::open(root).map_err(|e| StoreError::io(root, "cannot open directory", e))?;
    let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
    // O_NONBLOCK: opening a FIFO planted where a file should be must not hang (it is refused
    // right after by the type check; reads of regular files ignore the flag).
    let flags =
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK;
    match openat2(&dir, relative, flags, Mode::empty(), resolve) {
        Ok(fd) => check_regular(&path, File::from(fd)),
        Err(rustix::io::Errno::NOSYS) => {
            let mut parent = root.to_path_buf();
            let parts: Vec<&str> = relative.split('/').collect();
            for part in &parts[..parts.len().saturating_sub(1)] {
                parent.push(part);
                if fs::symlink_metadata(&parent).is_ok_and(|m| !m.is_dir()) {
                    return Err(StoreError::NotRegular { path: parent });
                }
            }
            open_regular(&path)
        }
        Err(e) => Err(open_error(&path, e.into())),
    }
}

/// Read a whole small file beneath `root` (see [`open_beneath`]) with a size cap.
pub(crate) fn read_beneath_capped(
    root: &Path,
    relative: &str,
    limit: u64,
    what: &str,
) -> Result<Vec<u8>, StoreError> {
    let (file, size) = open_beneath(root, relative)?;
    read_open_capped(file, size, &root.join(relative), limit, what)
}

fn read_open_capped(
    file: File,
    size: u64,
    path: &Path,
    limit: u64,
    what: &str,
) -> Result<Vec<u8>, StoreError> {
    let too_large = || StoreError::TooLarge {
        path: path.to_path_buf(),
        what: what.into(),
        limit,
    };
    if size > limit {
        return Err(too_large());
    }
    let mut out = Vec::with_capacity(size as usize);
    // The file may grow between stat and read: the cap holds regardless.
    file.take(limit + 1)
        .read_to_end(&mut out)
        .map_err(|e| StoreError::io(path, "cannot read", e))?;
    if out.len() as u64 > limit {
        return Err(too_large());
    }
    Ok(out)
}

pub(crate) fn fsync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io(dir, "cannot fsync directory", e))
}

/// Write `bytes` to `dest` atomically: a temp file in `tmp_dir` (same filesystem), fsync,
/// rename, fsync the directory. On failure the temp file is removed and `dest` is untouched.
pub(crate) fn write_atomic(tmp_dir: &Path, dest: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let (mut file, tmp) = create_temp(tmp_dir)?;
    let result = file
        .write_all(bytes)
        .and_then(|_| file.sync_all())
        .map_err(|e| StoreError::io(&tmp, "cannot write", e))
        .and_then(|_| {
            fs::rename(&tmp, dest).map_err(|e| StoreError::io(dest, "cannot rename into place", e))
        });
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    if let Some(parent) = dest.parent() {
        fsync_dir(parent)?;
    }
    Ok(())
}

/// A new, unique file in `dir` (created if missing), named `<prefix><pid>-<random>`.
pub(crate) fn create_temp_named(dir: &Path, prefix: &str) -> Result<(File, PathBuf), StoreError> {
    fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, "cannot create directory", e))?;
    for _ in 0..16 {
        let name = format!(
            "{prefix}{}-{:016x}",
            std::process::id(),
            rand::random::<u64>()
        );
        let path = dir.join(name);
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(OFlags::NOFOLLOW.bits() as i32)
            .open(&path)
        {
            Ok(f) => return Ok((f, path)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(StoreError::io(&path, "cannot create temp file", e)),
        }
    }
    Err(StoreError::io(
        dir,
        "cannot create temp file",
        std::io::Error::other("name collisions"),
    ))
}

pub(crate) fn create_temp(dir: &Path) -> Result<(File, PathBuf), StoreError> {
    create_temp_named(dir, ".strata-tmp-")
}

/// Blobs at least this big are written with `O_DIRECT`: they are fsynced at once anyway, and
/// going around the page cache saves the kernel's copy of every byte into it, which was the
/// largest cost of a pull after hashing (a 415 MiB pull: 0.1–0.9 s of system time for
/// buffered writes against ~0.03 s direct, on the benchmark machine). Smaller blobs (configs,
/// manifests) are written through the page cache.
const DIRECT_MIN_BYTES: u64 = 4 * 1024 * 1024;
/// Alignment `O_DIRECT` needs for buffer address, file offset and length: the largest logical
/// block size of common devices (512 or 4096).
const DIRECT_ALIGN: usize = 4096;

/// Size of the buffers blobs are read into and written from with `O_DIRECT`: one huge page.
const DIRECT_CHUNK: usize = 2 * 1024 * 1024;

/// A buffer of [`DIRECT_CHUNK`] bytes aligned for `O_DIRECT`: its own anonymous mapping
/// (page-aligned; `memmap2`, no unsafe code). [`AlignedBuf::new`] advises it to be backed by
/// one transparent huge page: one page fault instead of 512, and an `O_DIRECT` write pins one
/// folio instead of 512 pages. The copy pipeline reads straight into it and
/// [`BlobWriter::write`] writes it without another copy.
pub(crate) struct AlignedBuf {
    map: memmap2::MmapMut,
    len: usize,
}

impl AlignedBuf {
    /// A buffer backed by a huge page where the kernel has them (for buffers that are filled
    /// whole, again and again).
    pub(crate) fn new() -> std::io::Result<AlignedBuf> {
        let buf = AlignedBuf::staging()?;
        // Advice only: without THP the buffer is simply made of small pages.
        let _ = buf.map.advise(memmap2::Advice::HugePage);
        Ok(buf)
    }

    /// A buffer of small pages: only what is written to takes memory (a writer's staging
    /// buffer mostly holds a last block or nothing).
    fn staging() -> std::io::Result<AlignedBuf> {
        let map = memmap2::MmapOptions::new().len(DIRECT_CHUNK).map_anon()?;
        Ok(AlignedBuf { map, len: 0 })
    }
    pub(crate) fn len(&self) -> usize {
        self.len
    }
    pub(crate) fn clear(&mut self) {
        self.len = 0;
    }
    /// The unfilled rest of the buffer.
    pub(crate) fn spare_mut(&mut self) -> &mut [u8] {
        let at = self.len;
        &mut self.map[at..]
    }
    pub(crate) fn advance(&mut self, n: usize) {
        self.len = (self.len + n).min(DIRECT_CHUNK);
    }
    fn push(&mut self, bytes: &[u8]) {
        self.spare_mut()[..bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }
    pub(crate) fn filled(&self) -> &[u8] {
        &self.map[..self.len]
    }
}

/// Switch `O_DIRECT` on or off for an open file.
fn set_direct(file: &File, on: bool) -> std::io::Result<()> {
    let flags = rustix::fs::fcntl_getfl(file)?;
    let flags = if on {
        flags | OFlags::DIRECT
    } else {
        flags - OFlags::DIRECT
    };
    rustix::fs::fcntl_setfl(file, flags)?;
    Ok(())
}

/// Can `bytes` be written with `O_DIRECT` as they are (address and length aligned)?
fn direct_ready(bytes: &[u8]) -> bool {
    bytes.len().is_multiple_of(DIRECT_ALIGN) && bytes.as_ptr().align_offset(DIRECT_ALIGN) == 0
}

/// Write all of `bytes` to a file opened with `O_DIRECT`. A write the filesystem refuses
/// (EINVAL: an alignment it does not accept) switches the file to buffered writes and goes
/// on; returns whether the file is still direct.
fn write_direct(file: &mut File, bytes: &[u8]) -> std::io::Result<bool> {
    let mut done = 0;
    let mut direct = true;
    while done < bytes.len() {
        match file.write(&bytes[done..]) {
            Ok(0) => return Err(std::io::Error::from(std::io::ErrorKind::WriteZero)),
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e)
                if direct && e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) =>
            {
                set_direct(file, false)?;
                direct = false;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(direct)
}

/// A blob being written: a temp file beside its destination, size-checked and hashed as
/// bytes arrive (RELIABILITY rule 3: abort at size+1, digest at the end). `commit` fsyncs,
/// renames and fsyncs the directory; dropping an uncommitted writer removes the temp file, so
/// no failure path (digest mismatch, ENOSPC, cancelled copy) leaves anything behind.
/// Large blobs bypass the page cache ([`DIRECT_MIN_BYTES`]) where the filesystem allows it.
pub struct BlobWriter {
    file: Option<File>,
    temp: PathBuf,
    dest: PathBuf,
    expected: Digest,
    expected_size: u64,
    hasher: Option<DigestHasher>,
    written: u64,
    /// Set while the file is open with `O_DIRECT`.
    direct: Option<AlignedBuf>,
    /// Commit without fsync (scratch layouts).
    scratch: bool,
    _guard: Option<WriterGuard>,
}

impl std::fmt::Debug for BlobWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobWriter")
            .field("temp", &self.temp)
            .field("dest", &self.dest)
            .field("expected", &self.expected)
            .field("written", &self.written)
            .finish()
    }
}

impl BlobWriter {
    pub(crate) fn new(
        file: File,
        temp: PathBuf,
        dest: PathBuf,
        descriptor: &Descriptor,
        guard: Option<WriterGuard>,
    ) -> Result<BlobWriter, StoreError> {
        let expected_size = descriptor.size_u64().map_err(|e| StoreError::Document {
            path: dest.clone(),
            what: format!("descriptor of {}", descriptor.digest),
            source: e,
        });
        let mut writer = BlobWriter {
            file: Some(file),
            temp,
            dest,
            expected: descriptor.digest.clone(),
            expected_size: 0,
            hasher: Some(DigestHasher::new(descriptor.digest.algorithm())),
            written: 0,
            direct: None,
            scratch: false,
            _guard: guard,
        };
        // On error the writer drops here and removes its temp file.
        writer.expected_size = expected_size?;
        if writer.expected_size >= DIRECT_MIN_BYTES
            && let Some(f) = writer.file.as_ref()
            // Without a staging buffer (no memory for a mapping) the blob is written buffered.
            && let Ok(staging) = AlignedBuf::staging()
            // tmpfs and some FUSE filesystems refuse O_DIRECT: they keep buffered writes.
            && set_direct(f, true).is_ok()
        {
            writer.direct = Some(staging);
        }
        Ok(writer)
    }

    /// Write the staged bytes (a whole chunk).
    fn flush_staged(&mut self) -> Result<(), StoreError> {
        let (Some(file), Some(staging)) = (self.file.as_mut(), self.direct.as_mut()) else {
            return Ok(());
        };
        let still_direct = write_direct(file, staging.filled())
            .map_err(|e| StoreError::io(&self.temp, "cannot write blob", e))?;
        staging.clear();
        if !still_direct {
            self.direct = None;
        }
        Ok(())
    }

    /// Buffered writes and no fsync at commit (before anything is written).
    fn make_scratch(&mut self) -> Result<(), StoreError> {
        self.scratch = true;
        if self.direct.take().is_some()
            && let Some(f) = self.file.as_ref()
        {
            set_direct(f, false).map_err(|e| StoreError::io(&self.temp, "cannot open blob", e))?;
        }
        Ok(())
    }

    /// Take the hashing out of the writer (before the first write): the caller hashes every
    /// byte it passes to [`BlobWriter::write`] and gives the hasher back with
    /// [`BlobWriter::attach_hasher`] before [`BlobWriter::commit`], which then checks the
    /// digest as usual (a hasher that missed bytes fails that check). The copy pipeline
    /// hashes where it reads, while the bytes are still in that core's cache, and leaves the
    /// writer thread only the disk writes.
    pub(crate) fn detach_hasher(&mut self) -> DigestHasher {
        self.hasher
            .take()
            .unwrap_or_else(|| DigestHasher::new(self.expected.algorithm()))
    }

    /// Give back the hasher taken by [`BlobWriter::detach_hasher`].
    pub(crate) fn attach_hasher(&mut self, hasher: DigestHasher) {
        self.hasher = Some(hasher);
    }

    /// Where the blob goes on commit.
    pub fn destination(&self) -> &Path {
        &self.dest
    }

    /// Append bytes; fails as soon as more than the declared size arrived.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        let total = self.written + bytes.len() as u64;
        if total > self.expected_size {
            return Err(StoreError::SizeMismatch {
                path: self.dest.clone(),
                digest: self.expected.clone(),
                expected: self.expected_size,
                actual: total,
                more: " or more (longer than declared)",
            });
        }
        if self.file.is_none() {
            return Err(StoreError::io(
                &self.temp,
                "write after failure",
                std::io::Error::other("closed"),
            ));
        }
        if let Some(h) = self.hasher.as_mut() {
            h.update(bytes);
        }
        let staging_empty = self.direct.as_ref().map(AlignedBuf::len) == Some(0);
        if self.direct.is_none() {
            self.write_buffered(bytes)?;
        } else {
            let mut rest = bytes;
            let whole = bytes.len() - bytes.len() % DIRECT_ALIGN;
            if staging_empty && whole > 0 && direct_ready(&bytes[..whole]) {
                // An aligned chunk from the pipeline: written as it is, no copy. Only a
                // last chunk's unaligned tail (under one block) is staged.
                let temp = &self.temp;
                if let Some(file) = self.file.as_mut() {
                    let still_direct = write_direct(file, &bytes[..whole])
                        .map_err(|e| StoreError::io(temp, "cannot write blob", e))?;
                    if !still_direct {
                        self.direct = None;
                    }
                }
                rest = &bytes[whole..];
            }
            while let Some(staging) = self.direct.as_mut()
                && !rest.is_empty()
            {
                let n = (DIRECT_CHUNK - staging.len()).min(rest.len());
                staging.push(&rest[..n]);
                rest = &rest[n..];
                if staging.len() == DIRECT_CHUNK {
                    self.flush_staged()?;
                }
            }
            if !rest.is_empty() {
                // Direct writes were refused midway: the rest goes through the page cache.
                self.write_buffered(rest)?;
            }
        }
        self.written = total;
        Ok(())
    }

    fn write_buffered(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        let temp = &self.temp;
        let file = self.file.as_mut().ok_or_else(|| {
            StoreError::io(temp, "write after failure", std::io::Error::other("closed"))
        })?;
        file.write_all(bytes)
            .map_err(|e| StoreError::io(temp, "cannot write blob", e))
    }

    /// Check size and digest, then make the blob visible under its final name.
    pub fn commit(mut self) -> Result<(), StoreError> {
        if self.written != self.expected_size {
            return Err(StoreError::SizeMismatch {
                path: self.dest.clone(),
                digest: self.expected.clone(),
                expected: self.expected_size,
                actual: self.written,
                more: " (content ended early)",
            });
        }
        let actual = self
            .hasher
            .take()
            .map(DigestHasher::finish)
            .ok_or_else(|| StoreError::io(&self.temp, "commit twice", std::io::Error::other("")))?;
        if actual != self.expected {
            return Err(StoreError::DigestMismatch {
                path: self.dest.clone(),
                expected: self.expected.clone(),
                actual,
            });
        }
        if let Some(staging) = self.direct.as_ref()
            && staging.len() > 0
        {
            // The tail is rarely a multiple of the block size: write it through the page cache.
            if let Some(f) = self.file.as_ref() {
                set_direct(f, false)
                    .map_err(|e| StoreError::io(&self.temp, "cannot write blob", e))?;
            }
            let tail = staging.filled().to_vec();
            self.direct = None;
            self.write_buffered(&tail)?;
        }
        let file = self.file.take();
        if let Some(f) = file.filter(|_| !self.scratch) {
            f.sync_all()
                .map_err(|e| StoreError::io(&self.temp, "cannot fsync blob", e))?;
        }
        let dir = self
            .dest
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        fs::create_dir_all(&dir).map_err(|e| StoreError::io(&dir, "cannot create directory", e))?;
        fs::rename(&self.temp, &self.dest)
            .map_err(|e| StoreError::io(&self.dest, "cannot rename blob into place", e))?;
        // Renamed: nothing left for Drop to remove.
        self.temp = PathBuf::new();
        if self.scratch {
            return Ok(());
        }
        fsync_dir(&dir)
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if !self.temp.as_os_str().is_empty() {
            self.file = None;
            let _ = fs::remove_file(&self.temp);
        }
    }
}

/// A blob whose digest is only known once it is written (a layer being built): bytes go to a
/// unique temp file inside the layout and are hashed (SHA-256) as they pass; [`NewBlob::commit`]
/// fsyncs and renames the file to `blobs/sha256/<digest>` (keeping an existing blob of that
/// digest instead), then fsyncs the directory. Dropping an uncommitted `NewBlob` removes the
/// temp file. Holds a [`WriterGuard`] until committed or dropped, so `gc` cannot collect the
/// blob before the caller references it — keep your own guard until it is tagged.
pub struct NewBlob {
    file: Option<File>,
    temp: PathBuf,
    blobs_dir: PathBuf,
    hasher: DigestHasher,
    written: u64,
    _guard: WriterGuard,
}

impl std::fmt::Debug for NewBlob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewBlob")
            .field("temp", &self.temp)
            .field("written", &self.written)
            .finish()
    }
}

impl Write for NewBlob {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| std::io::Error::other("blob already committed"))?;
        let n = file.write(bytes)?;
        self.hasher.update(&bytes[..n]);
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self.file.as_mut() {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

impl NewBlob {
    /// Bytes written so far.
    pub fn bytes_written(&self) -> u64 {
        self.written
    }

    /// Make the blob visible under its digest; returns the digest and size.
    pub fn commit(mut self) -> Result<(Digest, u64), StoreError> {
        let hasher = std::mem::replace(&mut self.hasher, DigestHasher::new(Algorithm::Sha256));
        let digest = hasher.finish();
        let dest = self.blobs_dir.join(digest.encoded());
        let file = self.file.take();
        if fs::symlink_metadata(&dest).is_ok_and(|m| m.is_file() && m.len() == self.written) {
            // Same digest already stored (verified when it was written): keep it.
            return Ok((digest, self.written));
        }
        if let Some(f) = file {
            f.sync_all()
                .map_err(|e| StoreError::io(&self.temp, "cannot fsync blob", e))?;
        }
        fs::create_dir_all(&self.blobs_dir)
            .map_err(|e| StoreError::io(&self.blobs_dir, "cannot create directory", e))?;
        fs::rename(&self.temp, &dest)
            .map_err(|e| StoreError::io(&dest, "cannot rename blob into place", e))?;
        self.temp = PathBuf::new();
        fsync_dir(&self.blobs_dir)?;
        Ok((digest, self.written))
    }
}

impl Drop for NewBlob {
    fn drop(&mut self) {
        if !self.temp.as_os_str().is_empty() {
            self.file = None;
            let _ = fs::remove_file(&self.temp);
        }
    }
}

/// Copy a whole reader into a [`BlobWriter`] and commit it.
pub(crate) fn copy_into(mut writer: BlobWriter, mut reader: impl Read) -> Result<(), StoreError> {
    let mut buf = vec![0u8; COPY_CHUNK];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(StoreError::io(
                    writer.destination().to_path_buf(),
                    "cannot read blob source",
                    e,
                ));
            }
        };
        writer.write(&buf[..n])?;
    }
    writer.commit()
}

/// Is `tag` usable as a tag? Letters, digits and `-._:@+/`, which covers full image
/// references (`docker.io/library/busybox:latest`, `app@sha256:…`). This is looser than the
/// OCI grammar for `org.opencontainers.image.ref.name` ([`ref_name_conforms`], a SHOULD),
/// because Docker names allow `__`, runs of `-` and tags ending in `.` or `-`.
pub fn valid_tag(tag: &str) -> bool {
    !tag.is_empty()
        && tag.len() <= MAX_TAG_LEN
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._:@+/".contains(c))
}

/// Does `name` follow the image-spec grammar for `org.opencontainers.image.ref.name`?
/// `component ("/" component)*`, `component = alphanum (separator alphanum)*`,
/// `separator = [-._:@+] | "--"`.
pub fn ref_name_conforms(name: &str) -> bool {
    name.split('/').all(|component| {
        let bytes = component.as_bytes();
        if bytes.is_empty()
            || !bytes[0].is_ascii_alphanumeric()
            || !bytes[bytes.len() - 1].is_ascii_alphanumeric()
        {
            return false;
        }
        let mut i = 0;
        while i < bytes.len() {
            let c = bytes[i];
            if c.is_ascii_alphanumeric() {
                i += 1;
                continue;
            }
            let sep_len = if c == b'-' && bytes.get(i + 1) == Some(&b'-') {
                2
            } else if b"-._:@+".contains(&c) {
                1
            } else {
                return false;
            };
            i += sep_len;
            if !bytes.get(i).is_some_and(u8::is_ascii_alphanumeric) {
                return false;
            }
        }
        true
    })
}

impl OciLayout {
    /// Open an existing layout; [`StoreError::NotALayout`] when `path` has no `oci-layout`.
    pub fn open(path: &Path) -> Result<OciLayout, StoreError> {
        let marker = path.join(OCI_LAYOUT);
        let bytes = match read_beneath_capped(path, OCI_LAYOUT, MAX_SMALL_FILE_BYTES, OCI_LAYOUT) {
            Ok(b) => b,
            Err(StoreError::Io { source, .. })
                if matches!(
                    source.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) =>
            {
                return Err(StoreError::NotALayout {
                    path: path.to_path_buf(),
                });
            }
            Err(e) => return Err(e),
        };
        let v: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| StoreError::Invalid {
                path: marker.clone(),
                reason: format!("not JSON: {e}"),
            })?;
        match v.get("imageLayoutVersion").and_then(|v| v.as_str()) {
            Some(ver) if ver.starts_with("1.") => {}
            other => {
                return Err(StoreError::Invalid {
                    path: marker,
                    reason: format!("unsupported imageLayoutVersion {other:?}"),
                });
            }
        }
        Ok(OciLayout {
            root: path.to_path_buf(),
            scratch: false,
        })
    }

    /// This layout as scratch space: its blobs are written through the page cache and not
    /// fsynced (for staging that is read back at once and removed; never for a store).
    pub(crate) fn into_scratch(mut self) -> OciLayout {
        self.scratch = true;
        self
    }

    /// Open a layout, creating it (directory, `oci-layout`, empty `index.json`, each written
    /// atomically) if needed. Safe to race with other processes doing the same.
    pub fn create_or_open(path: &Path) -> Result<OciLayout, StoreError> {
        if fs::symlink_metadata(path.join(OCI_LAYOUT)).is_ok() {
            return OciLayout::open(path);
        }
        fs::create_dir_all(path)
            .map_err(|e| StoreError::io(path, "cannot create layout directory", e))?;
        let layout = OciLayout {
            root: path.to_path_buf(),
            scratch: false,
        };
        let _lock = layout.lock(INDEX_LOCK, FlockOperation::LockExclusive)?;
        fs::create_dir_all(path.join("blobs/sha256"))
            .map_err(|e| StoreError::io(path, "cannot create blobs directory", e))?;
        if fs::symlink_metadata(path.join(INDEX)).is_err() {
            let empty = ImageIndex::new(MediaType::OCI_INDEX);
            write_atomic(&layout.temp_dir(), &path.join(INDEX), &empty.to_bytes())?;
        }
        // oci-layout last: its presence means the layout is complete.
        if fs::symlink_metadata(path.join(OCI_LAYOUT)).is_err() {
            write_atomic(
                &layout.temp_dir(),
                &path.join(OCI_LAYOUT),
                br#"{"imageLayoutVersion":"1.0.0"}"#,
            )?;
        }
        drop(_lock);
        OciLayout::open(path)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn meta_dir(&self) -> PathBuf {
        self.root.join(META_DIR)
    }

    pub(crate) fn temp_dir(&self) -> PathBuf {
        self.meta_dir().join(TEMP_DIR)
    }

    /// Where archive writers note their staging directories for this layout's gc.
    pub(crate) fn staging_records(&self) -> PathBuf {
        self.meta_dir().join(crate::staging::RECORDS_DIR)
    }

    fn lock(&self, name: &str, op: FlockOperation) -> Result<File, StoreError> {
        let dir = self.meta_dir();
        fs::create_dir_all(&dir).map_err(|e| StoreError::io(&dir, "cannot create directory", e))?;
        let path = dir.join(name);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .custom_flags(OFlags::NOFOLLOW.bits() as i32)
            .open(&path)
            .map_err(|e| StoreError::io(&path, "cannot open lock file", e))?;
        flock(&file, op).map_err(|e| StoreError::io(&path, "cannot lock", e.into()))?;
        Ok(file)
    }

    /// Take the shared writer lock (see [`WriterGuard`]). Blocks while `gc` runs.
    pub fn writer_guard(&self) -> Result<WriterGuard, StoreError> {
        Ok(WriterGuard {
            _lock: self.lock(GC_LOCK, FlockOperation::LockShared)?,
        })
    }

    fn blob_relative(digest: &Digest) -> String {
        format!("blobs/{}/{}", digest.algorithm().as_str(), digest.encoded())
    }

    /// `blobs/<alg>/<encoded>`; safe to build because a `Digest` is validated on parse
    /// (RELIABILITY rule 5).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join(Self::blob_relative(digest))
    }

    /// Is the blob present (a regular file, of `size` bytes when given)? Content is not
    /// re-hashed: everything under `blobs/` was verified when written.
    pub fn has_blob(&self, digest: &Digest, size: Option<u64>) -> bool {
        match fs::symlink_metadata(self.blob_path(digest)) {
            Ok(m) => m.is_file() && size.is_none_or(|s| s == m.len()),
            Err(_) => false,
        }
    }

    /// Open a blob for reading: no symlink anywhere under the layout root, regular files
    /// only (RELIABILITY M14). Returns the file and its size.
    pub fn open_blob(&self, digest: &Digest) -> Result<(File, u64), StoreError> {
        match open_beneath(&self.root, &Self::blob_relative(digest)) {
            Err(StoreError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                Err(StoreError::BlobNotFound {
                    path: self.root.clone(),
                    digest: digest.clone(),
                })
            }
            other => other,
        }
    }

    /// Read a small blob (manifest, config) into memory, capped and verified against its
    /// digest.
    pub fn read_blob(&self, digest: &Digest, limit: u64) -> Result<Vec<u8>, StoreError> {
        let (file, size) = self.open_blob(digest)?;
        let bytes = read_open_capped(
            file,
            size,
            &self.blob_path(digest),
            limit,
            &format!("blob {digest}"),
        )?;
        let actual = digest.same_algorithm_of(&bytes);
        if &actual != digest {
            return Err(StoreError::DigestMismatch {
                path: self.blob_path(digest),
                expected: digest.clone(),
                actual,
            });
        }
        Ok(bytes)
    }

    /// Start writing the blob `descriptor` names: a temp file inside the layout, verified
    /// while written (see [`BlobWriter`]). Holds a writer guard until committed or dropped.
    pub fn blob_writer(&self, descriptor: &Descriptor) -> Result<BlobWriter, StoreError> {
        let guard = self.writer_guard()?;
        let (file, temp) = create_temp(&self.temp_dir())?;
        let mut writer = BlobWriter::new(
            file,
            temp,
            self.blob_path(&descriptor.digest),
            descriptor,
            Some(guard),
        )?;
        if self.scratch {
            writer.make_scratch()?;
        }
        Ok(writer)
    }

    /// Start writing a SHA-256 blob whose digest is not known yet (see [`NewBlob`]).
    pub fn new_blob(&self) -> Result<NewBlob, StoreError> {
        let guard = self.writer_guard()?;
        let (file, temp) = create_temp(&self.temp_dir())?;
        Ok(NewBlob {
            file: Some(file),
            temp,
            blobs_dir: self.root.join("blobs").join(Algorithm::Sha256.as_str()),
            hasher: DigestHasher::new(Algorithm::Sha256),
            written: 0,
            _guard: guard,
        })
    }

    /// Stream a blob into the layout, verifying size (abort at size+1) and digest; commit
    /// only when both match. Idempotent: an existing blob of that digest and size is kept and
    /// `reader` is not read.
    pub fn write_blob(&self, descriptor: &Descriptor, reader: impl Read) -> Result<(), StoreError> {
        if self.has_blob(&descriptor.digest, descriptor.size_u64().ok()) {
            return Ok(());
        }
        copy_into(self.blob_writer(descriptor)?, reader)
    }

    /// Store bytes as a sha256 blob (idempotent) and return their descriptor.
    pub fn write_blob_bytes(
        &self,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<Descriptor, StoreError> {
        let descriptor = Descriptor::of_bytes(media_type, bytes);
        self.write_blob(&descriptor, bytes)?;
        Ok(descriptor)
    }

    /// Read `index.json` (refusing symlinks, capped at [`MAX_INDEX_BYTES`]).
    pub fn read_index(&self) -> Result<ImageIndex, StoreError> {
        let path = self.root.join(INDEX);
        let bytes = read_beneath_capped(&self.root, INDEX, MAX_INDEX_BYTES, INDEX)?;
        match Manifest::parse(&bytes, Some(&MediaType::new(MediaType::OCI_INDEX))) {
            Ok(Manifest::Index(i)) => Ok(i),
            Ok(Manifest::Image(_)) => Err(StoreError::Invalid {
                path,
                reason: "index.json is not an index".into(),
            }),
            Err(e) => Err(StoreError::Document {
                path,
                what: INDEX.into(),
                source: e,
            }),
        }
    }

    /// Read-modify-write `index.json` under the exclusive index lock; the new file replaces
    /// the old one atomically (temp, fsync, rename, fsync dir), so concurrent writers keep
    /// each other's changes and readers see the old or the new file, never a mix.
    pub fn update_index<F>(&self, f: F) -> Result<ImageIndex, StoreError>
    where
        F: FnOnce(&mut ImageIndex) -> Result<(), StoreError>,
    {
        let _lock = self.lock(INDEX_LOCK, FlockOperation::LockExclusive)?;
        let mut index = self.read_index()?;
        f(&mut index)?;
        if index.manifests.len() > MAX_INDEX_ENTRIES {
            return Err(StoreError::TooLarge {
                path: self.root.join(INDEX),
                what: "number of index.json entries".into(),
                limit: MAX_INDEX_ENTRIES as u64,
            });
        }
        write_atomic(&self.temp_dir(), &self.root.join(INDEX), &index.to_bytes())?;
        Ok(index)
    }

    /// Point `tag` at `descriptor`, replacing the tag's previous entry (skopeo/umoci
    /// semantics: the tag lives in the `org.opencontainers.image.ref.name` annotation), or
    /// with `None` add an untagged entry (unless the same untagged entry is already there).
    pub fn set_tag(&self, tag: Option<&str>, descriptor: &Descriptor) -> Result<(), StoreError> {
        if let Some(t) = tag
            && !valid_tag(t)
        {
            return Err(StoreError::InvalidTag {
                path: self.root.clone(),
                tag: t.to_string(),
            });
        }
        let mut entry = descriptor.clone();
        entry.annotations.remove(REF_NAME);
        if let Some(t) = tag {
            entry.annotations.insert(REF_NAME.into(), t.to_string());
        }
        self.update_index(|index| {
            index.manifests.retain(|d| match tag {
                Some(t) => d.ref_name() != Some(t),
                None => d.digest != entry.digest || d.ref_name().is_some(),
            });
            index.manifests.push(entry);
            Ok(())
        })?;
        Ok(())
    }

    /// Remove a tag's entry. Blobs stay until `gc`.
    pub fn remove_tag(&self, tag: &str) -> Result<(), StoreError> {
        self.update_index(|index| {
            let before = index.manifests.len();
            index.manifests.retain(|d| d.ref_name() != Some(tag));
            if index.manifests.len() == before {
                return Err(StoreError::NotFound {
                    path: self.root.clone(),
                    what: format!("tag {tag:?}"),
                });
            }
            Ok(())
        })?;
        Ok(())
    }

    /// Remove every entry of `index.json` that `selected` picks (tagged or not) and return
    /// them; one atomic update. Blobs stay until `gc`.
    pub fn remove_entries(
        &self,
        selected: impl Fn(&Descriptor) -> bool,
    ) -> Result<Vec<Descriptor>, StoreError> {
        let mut removed = Vec::new();
        self.update_index(|index| {
            let (gone, kept) = std::mem::take(&mut index.manifests)
                .into_iter()
                .partition(|d| selected(d));
            index.manifests = kept;
            removed = gone;
            Ok(())
        })?;
        Ok(removed)
    }

    /// Every entry of `index.json` with its tag (`None` for untagged entries).
    pub fn list(&self) -> Result<Vec<(Option<String>, Descriptor)>, StoreError> {
        Ok(self
            .read_index()?
            .manifests
            .into_iter()
            .map(|d| (d.ref_name().map(str::to_string), d))
            .collect())
    }

    /// The entry for `tag`; with no tag the only entry (an error listing the tags when
    /// there are several).
    pub fn resolve(&self, tag: Option<&str>) -> Result<Descriptor, StoreError> {
        resolve_in_index(&self.read_index()?, tag, &self.root)
    }

    /// Remove blobs no entry of `index.json` reaches (following nested indexes, configs,
    /// layers and subjects) and temp files of dead writers.
    ///
    /// Waits for running writers: every writer holds a shared lock ([`WriterGuard`]) until
    /// its blobs are referenced, gc holds it exclusively, so a blob written but not yet
    /// tagged is never collected and every temp file gc sees is a dead writer's. Do not call
    /// it while this process holds a `WriterGuard` (it would wait for itself).
    /// A reachable manifest that cannot be read or parsed stops gc with an error: it never
    /// deletes on a guess.
    pub fn gc(&self) -> Result<GcReport, StoreError> {
        let _lock = self.lock(GC_LOCK, FlockOperation::LockExclusive)?;
        let mut reachable = HashSet::new();
        let mut visited = 0usize;
        for d in self.read_index()?.manifests {
            self.mark(&d, 0, &mut reachable, &mut visited)?;
        }
        let mut report = GcReport::default();
        let blobs = self.root.join("blobs");
        for alg in fs::read_dir(&blobs).map_err(|e| StoreError::io(&blobs, "cannot list", e))? {
            let alg = alg.map_err(|e| StoreError::io(&blobs, "cannot list", e))?;
            if !alg.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let alg_name = alg.file_name().to_string_lossy().to_string();
            for blob in fs::read_dir(alg.path())
                .map_err(|e| StoreError::io(alg.path(), "cannot list", e))?
            {
                let blob = blob.map_err(|e| StoreError::io(alg.path(), "cannot list", e))?;
                let name = format!("{alg_name}:{}", blob.file_name().to_string_lossy());
                // Only names that are digests are blobs; anything else is not gc's to touch.
                let Ok(digest) = name.parse::<Digest>() else {
                    continue;
                };
                if reachable.contains(&digest) {
                    continue;
                }
                let size = blob.metadata().map(|m| m.len()).unwrap_or(0);
                fs::remove_file(blob.path())
                    .map_err(|e| StoreError::io(blob.path(), "cannot remove", e))?;
                report.blobs_removed += 1;
                report.bytes_removed += size;
            }
        }
        // No writer holds the shared lock now, so every temp file is a dead writer's.
        if let Ok(entries) = fs::read_dir(self.temp_dir()) {
            for e in entries.flatten() {
                if fs::remove_file(e.path()).is_ok() {
                    report.temp_files_removed += 1;
                }
            }
        }
        report.staging_dirs_removed = crate::staging::sweep_records(&self.staging_records())?;
        Ok(report)
    }

    fn mark(
        &self,
        d: &Descriptor,
        depth: usize,
        reachable: &mut HashSet<Digest>,
        visited: &mut usize,
    ) -> Result<(), StoreError> {
        if depth > MAX_GC_DEPTH {
            return Err(StoreError::Invalid {
                path: self.root.clone(),
                reason: format!("indexes nested deeper than {MAX_GC_DEPTH} at {}", d.digest),
            });
        }
        *visited += 1;
        if *visited > MAX_GC_MANIFESTS {
            return Err(StoreError::TooLarge {
                path: self.root.clone(),
                what: "number of manifests reachable from index.json".into(),
                limit: MAX_GC_MANIFESTS as u64,
            });
        }
        if !reachable.insert(d.digest.clone()) || !d.media_type.is_manifest() {
            return Ok(());
        }
        let bytes = match self.read_blob(&d.digest, MAX_MANIFEST_BYTES) {
            Ok(b) => b,
            // A tag may point at a manifest that is not here (a partial copy); nothing below
            // it to keep.
            Err(StoreError::BlobNotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        let manifest =
            Manifest::parse(&bytes, Some(&d.media_type)).map_err(|e| StoreError::Document {
                path: self.blob_path(&d.digest),
                what: format!("manifest {} (gc stopped, nothing removed)", d.digest),
                source: e,
            })?;
        match manifest {
            Manifest::Image(m) => {
                reachable.insert(m.config.digest.clone());
                for l in &m.layers {
                    reachable.insert(l.digest.clone());
                }
                if let Some(s) = &m.subject {
                    self.mark(s, depth + 1, reachable, visited)?;
                }
            }
            Manifest::Index(i) => {
                for c in &i.manifests {
                    self.mark(c, depth + 1, reachable, visited)?;
                }
                if let Some(s) = &i.subject {
                    self.mark(s, depth + 1, reachable, visited)?;
                }
            }
        }
        Ok(())
    }
}

/// The entry of `index` tagged `tag`, or with no tag its only entry.
pub(crate) fn resolve_in_index(
    index: &ImageIndex,
    tag: Option<&str>,
    path: &Path,
) -> Result<Descriptor, StoreError> {
    match tag {
        Some(t) => index
            .manifests
            .iter()
            .find(|d| d.ref_name() == Some(t))
            .cloned()
            .ok_or_else(|| StoreError::NotFound {
                path: path.to_path_buf(),
                what: format!("tag {t:?}"),
            }),
        None => match index.manifests.as_slice() {
            [only] => Ok(only.clone()),
            [] => Err(StoreError::NotFound {
                path: path.to_path_buf(),
                what: "any image".into(),
            }),
            many => Err(StoreError::Ambiguous {
                path: path.to_path_buf(),
                tags: many
                    .iter()
                    .map(|d| {
                        d.ref_name()
                            .map(str::to_string)
                            .unwrap_or_else(|| format!("untagged {}", d.digest))
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A direct write the filesystem refuses (here: a buffer address that is not aligned,
    /// EINVAL on ext4/xfs) switches the file to buffered writes and loses nothing.
    #[test]
    fn refused_direct_writes_fall_back_to_buffered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut file = File::create(&path).unwrap();
        if set_direct(&file, true).is_err() {
            eprintln!("skipping: this filesystem has no O_DIRECT");
            return;
        }
        let data: Vec<u8> = (0..3 * DIRECT_ALIGN + 1).map(|i| (i % 251) as u8).collect();
        let aligned = AlignedBuf::new().unwrap();
        assert!(direct_ready(&aligned.map[..DIRECT_ALIGN]));
        // Offset by one byte from an aligned address: never aligned.
        let mut holder = AlignedBuf::new().unwrap();
        holder.push(&[0u8]);
        holder.push(&data[..2 * DIRECT_ALIGN]);
        let unaligned = &holder.filled()[1..];
        assert!(!direct_ready(unaligned));
        let still_direct = write_direct(&mut file, unaligned).unwrap();
        write_direct(&mut file, &data[2 * DIRECT_ALIGN..]).unwrap();
        drop(file);
        assert_eq!(fs::read(&path).unwrap(), data);
        eprintln!("direct after an unaligned write: {still_direct}");
    }

    /// A scratch layout (archive staging) writes large blobs through the page cache and
    /// commits without fsync; a normal one uses O_DIRECT where the filesystem has it. Both
    /// commit the same verified blob.
    #[test]
    fn scratch_layouts_skip_direct_writes_and_fsync() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..DIRECT_MIN_BYTES + 5000)
            .map(|i| (i % 251) as u8)
            .collect();
        let desc = Descriptor::of_bytes(MediaType::OCI_LAYER_GZIP, &data);
        let durable = OciLayout::create_or_open(&dir.path().join("a")).unwrap();
        let scratch = OciLayout::create_or_open(&dir.path().join("b"))
            .unwrap()
            .into_scratch();
        let w = scratch.blob_writer(&desc).unwrap();
        assert!(w.scratch && w.direct.is_none());
        drop(w);
        let w = durable.blob_writer(&desc).unwrap();
        assert!(!w.scratch);
        let file = File::create(dir.path().join("probe")).unwrap();
        if set_direct(&file, true).is_ok() {
            assert!(w.direct.is_some(), "O_DIRECT for a durable layout");
        }
        drop(w);
        for layout in [&durable, &scratch] {
            let mut w = layout.blob_writer(&desc).unwrap();
            w.write(&data).unwrap();
            w.commit().unwrap();
            assert_eq!(fs::read(layout.blob_path(&desc.digest)).unwrap(), data);
        }
    }
}
