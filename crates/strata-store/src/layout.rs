//! The OCI image layout: blobs, `index.json`, locks, gc.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, OFlags, flock};
use strata_spec::{Descriptor, Digest, ImageIndex, MAX_MANIFEST_BYTES, Manifest, MediaType};

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
/// How deep gc follows nested indexes (an index pointing at itself must end).
const MAX_GC_DEPTH: usize = 8;
const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// An OCI image layout directory.
#[derive(Debug, Clone)]
pub struct OciLayout {
    root: PathBuf,
}

/// What `gc` removed.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct GcReport {
    pub blobs_removed: usize,
    pub bytes_removed: u64,
    pub temp_files_removed: usize,
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
        .custom_flags(OFlags::NOFOLLOW.bits() as i32)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(code) if code == rustix::io::Errno::LOOP.raw_os_error() => {
                StoreError::NotRegular {
                    path: path.to_path_buf(),
                }
            }
            _ => StoreError::io(path, "cannot open", e),
        })?;
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

/// Read a whole small file (refusing symlinks) with a size cap.
pub(crate) fn read_capped(path: &Path, limit: u64, what: &str) -> Result<Vec<u8>, StoreError> {
    let (file, size) = open_regular(path)?;
    if size > limit {
        return Err(StoreError::TooLarge {
            path: path.to_path_buf(),
            what: what.into(),
            limit,
        });
    }
    let mut out = Vec::with_capacity(size as usize);
    file.take(limit + 1)
        .read_to_end(&mut out)
        .map_err(|e| StoreError::io(path, "cannot read", e))?;
    if out.len() as u64 > limit {
        return Err(StoreError::TooLarge {
            path: path.to_path_buf(),
            what: what.into(),
            limit,
        });
    }
    Ok(out)
}

pub(crate) fn fsync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io(dir, "cannot fsync directory", e))
}

/// Write `bytes` to `dest` atomically: a temp file in `tmp_dir`, fsync, rename, fsync dir.
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

/// A new, unique file in `dir`.
pub(crate) fn create_temp(dir: &Path) -> Result<(File, PathBuf), StoreError> {
    fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, "cannot create directory", e))?;
    for _ in 0..16 {
        let name = format!("{}-{:016x}", std::process::id(), rand::random::<u64>());
        let path = dir.join(name);
        match OpenOptions::new().write(true).create_new(true).open(&path) {
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

fn valid_tag(tag: &str) -> bool {
    !tag.is_empty()
        && tag.len() <= 512
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._:@+/".contains(c))
}

impl OciLayout {
    /// Open an existing layout.
    pub fn open(path: &Path) -> Result<OciLayout, StoreError> {
        let marker = path.join(OCI_LAYOUT);
        let bytes = match read_capped(&marker, 64 * 1024, OCI_LAYOUT) {
            Ok(b) => b,
            Err(StoreError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
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
        })
    }

    /// Open a layout, creating it (directory, `oci-layout`, empty `index.json`) if needed.
    pub fn create_or_open(path: &Path) -> Result<OciLayout, StoreError> {
        if path.join(OCI_LAYOUT).exists() {
            return OciLayout::open(path);
        }
        fs::create_dir_all(path)
            .map_err(|e| StoreError::io(path, "cannot create layout directory", e))?;
        let layout = OciLayout {
            root: path.to_path_buf(),
        };
        let _lock = layout.lock(INDEX_LOCK, FlockOperation::LockExclusive)?;
        if !path.join(INDEX).exists() {
            let empty = ImageIndex::new(MediaType::OCI_INDEX);
            write_atomic(&layout.temp_dir(), &path.join(INDEX), &empty.to_bytes())?;
        }
        if !path.join(OCI_LAYOUT).exists() {
            write_atomic(
                &layout.temp_dir(),
                &path.join(OCI_LAYOUT),
                br#"{"imageLayoutVersion":"1.0.0"}"#,
            )?;
        }
        fs::create_dir_all(path.join("blobs/sha256"))
            .map_err(|e| StoreError::io(path, "cannot create blobs directory", e))?;
        Ok(layout)
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

    /// Take the shared writer lock (see [`WriterGuard`]).
    pub fn writer_guard(&self) -> Result<WriterGuard, StoreError> {
        Ok(WriterGuard {
            _lock: self.lock(GC_LOCK, FlockOperation::LockShared)?,
        })
    }

    /// `blobs/<alg>/<encoded>`; safe because a `Digest` is validated on construction.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root
            .join("blobs")
            .join(digest.algorithm().as_str())
            .join(digest.encoded())
    }

    /// Is the blob present (a regular file, of `size` bytes when given)?
    pub fn has_blob(&self, digest: &Digest, size: Option<u64>) -> bool {
        match fs::symlink_metadata(self.blob_path(digest)) {
            Ok(m) => m.is_file() && size.is_none_or(|s| s == m.len()),
            Err(_) => false,
        }
    }

    /// Open a blob for reading (refusing symlinks and special files).
    pub fn open_blob(&self, digest: &Digest) -> Result<(File, u64), StoreError> {
        let path = self.blob_path(digest);
        match open_regular(&path) {
            Err(StoreError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                Err(StoreError::BlobNotFound {
                    path: self.root.clone(),
                    digest: digest.clone(),
                })
            }
            other => other,
        }
    }

    /// Read a small blob (manifest, config) into memory, verified against its digest.
    pub fn read_blob(&self, digest: &Digest, limit: u64) -> Result<Vec<u8>, StoreError> {
        let path = self.blob_path(digest);
        if !path.exists() && fs::symlink_metadata(&path).is_err() {
            return Err(StoreError::BlobNotFound {
                path: self.root.clone(),
                digest: digest.clone(),
            });
        }
        let bytes = read_capped(&path, limit, &format!("blob {digest}"))?;
        let actual = digest.same_algorithm_of(&bytes);
        if &actual != digest {
            return Err(strata_image::ImageError::DigestMismatch {
                expected: digest.clone(),
                actual,
            }
            .into());
        }
        Ok(bytes)
    }

    /// A temp file for a blob being written (inside the layout, so the rename is atomic).
    pub fn blob_temp(&self) -> Result<(File, PathBuf), StoreError> {
        create_temp(&self.temp_dir())
    }

    /// Move a fully written and verified temp file to its blob path.
    pub fn commit_blob(&self, file: File, temp: &Path, digest: &Digest) -> Result<(), StoreError> {
        let dest = self.blob_path(digest);
        let result = (|| {
            file.sync_all()
                .map_err(|e| StoreError::io(temp, "cannot fsync", e))?;
            drop(file);
            let dir = dest.parent().unwrap_or(&self.root).to_path_buf();
            fs::create_dir_all(&dir)
                .map_err(|e| StoreError::io(&dir, "cannot create directory", e))?;
            fs::rename(temp, &dest)
                .map_err(|e| StoreError::io(&dest, "cannot rename blob into place", e))?;
            fsync_dir(&dir)
        })();
        if result.is_err() {
            let _ = fs::remove_file(temp);
        }
        result
    }

    /// Store bytes as a blob (idempotent).
    pub fn write_blob_bytes(&self, bytes: &[u8]) -> Result<Digest, StoreError> {
        let digest = Digest::sha256_of(bytes);
        if self.has_blob(&digest, Some(bytes.len() as u64)) {
            return Ok(digest);
        }
        let (mut file, temp) = self.blob_temp()?;
        if let Err(e) = file.write_all(bytes) {
            let _ = fs::remove_file(&temp);
            return Err(StoreError::io(&temp, "cannot write", e));
        }
        self.commit_blob(file, &temp, &digest)?;
        Ok(digest)
    }

    /// Read `index.json` (refusing symlinks, capped).
    pub fn read_index(&self) -> Result<ImageIndex, StoreError> {
        let path = self.root.join(INDEX);
        let bytes = read_capped(&path, MAX_INDEX_BYTES, INDEX)?;
        match Manifest::parse(&bytes, Some(&MediaType::new(MediaType::OCI_INDEX))) {
            Ok(Manifest::Index(i)) => Ok(i),
            Ok(Manifest::Image(_)) => Err(StoreError::Invalid {
                path,
                reason: "index.json is not an index".into(),
            }),
            Err(e) => Err(StoreError::Invalid {
                path,
                reason: e.to_string(),
            }),
        }
    }

    /// Read-modify-write `index.json` under the exclusive index lock; the new file replaces the
    /// old one atomically.
    pub fn update_index<F>(&self, f: F) -> Result<ImageIndex, StoreError>
    where
        F: FnOnce(&mut ImageIndex) -> Result<(), StoreError>,
    {
        let _lock = self.lock(INDEX_LOCK, FlockOperation::LockExclusive)?;
        let mut index = self.read_index()?;
        f(&mut index)?;
        write_atomic(&self.temp_dir(), &self.root.join(INDEX), &index.to_bytes())?;
        Ok(index)
    }

    /// Point `tag` at `descriptor` (replacing the tag's previous entry), or add an untagged
    /// entry when `tag` is `None`.
    pub fn set_tag(&self, tag: Option<&str>, descriptor: &Descriptor) -> Result<(), StoreError> {
        if let Some(t) = tag
            && !valid_tag(t)
        {
            return Err(StoreError::Invalid {
                path: self.root.clone(),
                reason: format!("invalid tag {t:?}"),
            });
        }
        let mut entry = descriptor.clone();
        entry.annotations.remove(REF_NAME);
        if let Some(t) = tag {
            entry.annotations.insert(REF_NAME.into(), t.to_string());
        }
        self.update_index(|index| {
            index.manifests.retain(|d| match tag {
                Some(t) => d.annotations.get(REF_NAME).map(String::as_str) != Some(t),
                None => d.digest != entry.digest || d.annotations.contains_key(REF_NAME),
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
            index
                .manifests
                .retain(|d| d.annotations.get(REF_NAME).map(String::as_str) != Some(tag));
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

    /// Every entry of `index.json` with its tag.
    pub fn list(&self) -> Result<Vec<(Option<String>, Descriptor)>, StoreError> {
        Ok(self
            .read_index()?
            .manifests
            .into_iter()
            .map(|d| (d.annotations.get(REF_NAME).cloned(), d))
            .collect())
    }

    /// The entry for `tag`, or with no tag the only entry.
    pub fn resolve(&self, tag: Option<&str>) -> Result<Descriptor, StoreError> {
        let entries = self.list()?;
        match tag {
            Some(t) => entries
                .into_iter()
                .find(|(name, _)| name.as_deref() == Some(t))
                .map(|(_, d)| d)
                .ok_or_else(|| StoreError::NotFound {
                    path: self.root.clone(),
                    what: format!("tag {t:?}"),
                }),
            None => match entries.len() {
                1 => Ok(entries
                    .into_iter()
                    .next()
                    .map(|(_, d)| d)
                    .expect("one entry")),
                0 => Err(StoreError::NotFound {
                    path: self.root.clone(),
                    what: "any image".into(),
                }),
                _ => Err(StoreError::Ambiguous {
                    path: self.root.clone(),
                    tags: entries
                        .iter()
                        .map(|(t, d)| t.clone().unwrap_or_else(|| d.digest.to_string()))
                        .collect::<Vec<_>>()
                        .join(", "),
                }),
            },
        }
    }

    /// Remove blobs that no entry of `index.json` reaches, and temp files of dead writers.
    /// Waits for running writers (their [`WriterGuard`]s) to finish.
    pub fn gc(&self) -> Result<GcReport, StoreError> {
        let _lock = self.lock(GC_LOCK, FlockOperation::LockExclusive)?;
        let mut reachable = HashSet::new();
        for d in self.read_index()?.manifests {
            self.mark(&d, 0, &mut reachable)?;
        }
        let mut report = GcReport::default();
        let blobs = self.root.join("blobs");
        for alg in fs::read_dir(&blobs).map_err(|e| StoreError::io(&blobs, "cannot list", e))? {
            let alg = alg.map_err(|e| StoreError::io(&blobs, "cannot list", e))?;
            let alg_name = alg.file_name().to_string_lossy().to_string();
            for blob in fs::read_dir(alg.path())
                .map_err(|e| StoreError::io(alg.path(), "cannot list", e))?
            {
                let blob = blob.map_err(|e| StoreError::io(alg.path(), "cannot list", e))?;
                let name = format!("{alg_name}:{}", blob.file_name().to_string_lossy());
                let keep = name.parse::<Digest>().is_ok_and(|d| reachable.contains(&d));
                if !keep {
                    let size = blob.metadata().map(|m| m.len()).unwrap_or(0);
                    fs::remove_file(blob.path())
                        .map_err(|e| StoreError::io(blob.path(), "cannot remove", e))?;
                    report.blobs_removed += 1;
                    report.bytes_removed += size;
                }
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
        Ok(report)
    }

    fn mark(
        &self,
        d: &Descriptor,
        depth: usize,
        reachable: &mut HashSet<Digest>,
    ) -> Result<(), StoreError> {
        if depth > MAX_GC_DEPTH {
            return Err(StoreError::Invalid {
                path: self.root.clone(),
                reason: format!("indexes nested deeper than {MAX_GC_DEPTH}"),
            });
        }
        if !reachable.insert(d.digest.clone()) || !d.media_type.is_manifest() {
            return Ok(());
        }
        let bytes = match self.read_blob(&d.digest, MAX_MANIFEST_BYTES) {
            Ok(b) => b,
            // A tag may point at a manifest that is not here (yet); nothing below it to keep.
            Err(StoreError::BlobNotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        match Manifest::parse(&bytes, Some(&d.media_type)) {
            Ok(Manifest::Image(m)) => {
                reachable.insert(m.config.digest.clone());
                for l in &m.layers {
                    reachable.insert(l.digest.clone());
                }
                if let Some(s) = &m.subject {
                    reachable.insert(s.digest.clone());
                }
            }
            Ok(Manifest::Index(i)) => {
                for c in &i.manifests {
                    self.mark(c, depth + 1, reachable)?;
                }
            }
            // An unreadable document keeps only itself: gc must never delete on a guess.
            Err(_) => {}
        }
        Ok(())
    }
}
