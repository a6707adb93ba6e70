//! Image layers as directories, for the overlay lower dirs of `RUN` steps.
//!
//! Each layer is extracted once, with OCI whiteouts converted to overlayfs ones, into
//! `<layout>/.strata/rootfs-layers/<flavour>/<diffid>/`, named by the DiffId strata computed
//! while extracting it (never the one an image declares, RELIABILITY rule 3; a mismatch is an
//! error). `by-blob/<blob digest>` is a symlink to that directory, so a later build finds a
//! layer by the digest it has in hand without reading the blob. Directories appear by
//! `rename` of a finished extraction: a directory under its final name is always complete,
//! and two builds extracting the same layer at once both succeed (the second one's copy is
//! discarded). A build holds a shared `flock` on `.lock` while it uses them; `prune` takes it
//! exclusively.
//!
//! The upper dir of a RUN step is itself a valid lower dir: within a build it stands for the
//! step's layer directly, and at the end it is moved into the cache under the layer's DiffId
//! (when the layer was written from it verbatim: no SOURCE_DATE_EPOCH clamp), so the next
//! build does not extract what this one produced.

use std::collections::HashMap;
use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use strata_archive::{
    ArchiveError, ExtractOptions, HashingReader, TargetPolicy, UncompressedLimit, WhiteoutMode,
    extract_layer,
};
use strata_spec::{DiffId, Digest};
use strata_store::OciLayout;
use tokio::sync::OnceCell;

use crate::BuildError;
use crate::base::poisoned;
use crate::cache::CachedLayer;
use crate::engine::Memo;
use crate::error::join_error;
use crate::layer::{LayerRef, extract_ownership, open_layer};

const BY_BLOB: &str = "by-blob";
const TMP: &str = "tmp";
const LOCK: &str = ".lock";

/// The cache directory of a layout (root and rootless extractions differ: ownership and the
/// overlay xattr namespace).
pub(crate) fn layer_cache_dir(layout_root: &Path) -> PathBuf {
    let flavour = if rustix::process::geteuid().is_root() {
        "root"
    } else {
        "rootless"
    };
    layout_root
        .join(".strata")
        .join("rootfs-layers")
        .join(flavour)
}

fn entry_name(d: &Digest) -> String {
    format!("{}-{}", d.algorithm().as_str(), d.encoded())
}

/// A valid entry name (`sha256-<hex>`), so a link target never leaves the cache.
fn valid_name(name: &str) -> bool {
    let Some((alg, hex)) = name.split_once('-') else {
        return false;
    };
    matches!(alg, "sha256" | "sha512")
        && !hex.is_empty()
        && hex
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// Set a path's mtime to now (prune by age keeps what is used).
fn touch(path: &Path) {
    let now = rustix::fs::Timespec {
        tv_sec: crate::time::now_unix() as i64,
        tv_nsec: 0,
    };
    let _ = rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &rustix::fs::Timestamps {
            last_access: now,
            last_modification: now,
        },
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    );
}

/// Create an empty directory with exactly this mode (not narrowed by the umask).
pub(crate) fn make_dir(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new().mode(mode).create(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// A unique new directory under `parent`.
pub(crate) fn unique_dir(parent: &Path, prefix: &str, mode: u32) -> io::Result<PathBuf> {
    for _ in 0..64 {
        let p = parent.join(format!(
            "{prefix}{}-{:016x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        match make_dir(&p, mode) {
            Ok(()) => return Ok(p),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other("cannot find a free directory name"))
}

/// Remove a tree, ignoring "not found"; read-only directories are made writable first.
pub(crate) fn remove_tree(path: &Path) -> io::Result<()> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            make_writable(path);
            std::fs::remove_dir_all(path)
        }
        Err(e) => Err(e),
    }
}

fn make_writable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(md) = std::fs::symlink_metadata(path) else {
        return;
    };
    if !md.is_dir() {
        return;
    }
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700));
    if let Ok(rd) = std::fs::read_dir(path) {
        for e in rd.flatten() {
            make_writable(&e.path());
        }
    }
}

/// The layer directories of one build.
pub(crate) struct LayerDirs {
    root: PathBuf,
    /// Shared lock on `<root>/.lock`, held while the build may use the directories.
    _lock: Option<std::fs::File>,
    /// blob digest → its directory, computed once per build.
    memo: Mutex<HashMap<Digest, Memo<PathBuf>>>,
    /// RUN upper dirs of this build standing for their layers (blob digest → (layer, dir)).
    uppers: Mutex<HashMap<Digest, (CachedLayer, PathBuf)>>,
    /// Cap on what one layer decompresses to (`--max-uncompressed`).
    limit: UncompressedLimit,
}

impl LayerDirs {
    pub(crate) fn new(layout_root: &Path, limit: UncompressedLimit) -> LayerDirs {
        let root = layer_cache_dir(layout_root);
        let lock = std::fs::create_dir_all(&root)
            .ok()
            .and_then(|()| {
                std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(root.join(LOCK))
                    .ok()
            })
            .filter(|f| {
                rustix::fs::flock(f.as_fd(), rustix::fs::FlockOperation::LockShared).is_ok()
            });
        LayerDirs {
            root,
            _lock: lock,
            memo: Mutex::new(HashMap::new()),
            uppers: Mutex::new(HashMap::new()),
            limit,
        }
    }

    /// The directory holding `layer` in overlayfs form (extracted on first use).
    pub(crate) async fn dir_for(
        &self,
        layout: &OciLayout,
        layer: &LayerRef,
    ) -> Result<PathBuf, BuildError> {
        if let Some((_, dir)) = self
            .uppers
            .lock()
            .map_err(|_| poisoned())?
            .get(&layer.digest)
        {
            return Ok(dir.clone());
        }
        let cell = {
            let mut map = self.memo.lock().map_err(|_| poisoned())?;
            Arc::clone(
                map.entry(layer.digest.clone())
                    .or_insert_with(|| Arc::new(OnceCell::new())),
            )
        };
        let root = self.root.clone();
        let layout = layout.clone();
        let layer = layer.clone();
        let limit = self.limit;
        let dir = cell
            .get_or_try_init(|| async move {
                tokio::task::spawn_blocking(move || find_or_extract(&root, &layout, &layer, limit))
                    .await
                    .map_err(join_error)?
                    .map(Arc::new)
            })
            .await?;
        Ok(dir.as_ref().clone())
    }

    /// A RUN step's upper dir now stands for its layer.
    pub(crate) fn add_upper(&self, layer: &CachedLayer, upper: PathBuf) {
        if let Ok(mut map) = self.uppers.lock() {
            map.insert(layer.digest.clone(), (layer.clone(), upper));
        }
    }

    /// Move the RUN upper dirs of this build into the cache (best effort: a failure only
    /// means a later build extracts the layer).
    pub(crate) fn persist_uppers(&self) {
        let uppers: Vec<(CachedLayer, PathBuf)> = match self.uppers.lock() {
            Ok(mut map) => map.drain().map(|(_, v)| v).collect(),
            Err(_) => return,
        };
        for (layer, upper) in uppers {
            let name = entry_name(&layer.diff_id.0);
            let dest = self.root.join(&name);
            if std::fs::symlink_metadata(&dest).is_err() && std::fs::rename(&upper, &dest).is_err()
            {
                continue;
            }
            let _ = link_blob(&self.root, &layer.digest, &name);
        }
    }
}

/// Point `by-blob/<digest>` at `name` (atomically replaced).
fn link_blob(root: &Path, blob: &Digest, name: &str) -> io::Result<()> {
    let dir = root.join(BY_BLOB);
    std::fs::create_dir_all(&dir)?;
    let tmp = dir.join(format!(
        ".tmp-{}-{:016x}",
        std::process::id(),
        rand::random::<u64>()
    ));
    std::os::unix::fs::symlink(format!("../{name}"), &tmp)?;
    std::fs::rename(&tmp, dir.join(entry_name(blob))).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// The cached directory the `by-blob` link of `blob` names, if it is there.
fn lookup(root: &Path, blob: &Digest) -> Option<PathBuf> {
    let target = std::fs::read_link(root.join(BY_BLOB).join(entry_name(blob))).ok()?;
    let name = target.to_str()?.strip_prefix("../")?;
    if !valid_name(name) {
        return None;
    }
    let dir = root.join(name);
    let md = std::fs::symlink_metadata(&dir).ok()?;
    md.is_dir().then_some(dir)
}

fn find_or_extract(
    root: &Path,
    layout: &OciLayout,
    layer: &LayerRef,
    limit: UncompressedLimit,
) -> Result<PathBuf, BuildError> {
    if let Some(dir) = lookup(root, &layer.digest) {
        touch(&dir);
        return Ok(dir);
    }
    let tmp_parent = root.join(TMP);
    std::fs::create_dir_all(&tmp_parent)
        .map_err(|e| BuildError::io(&tmp_parent, "cannot create a directory", e))?;
    let tmp = unique_dir(&tmp_parent, "extract-", 0o755)
        .map_err(|e| BuildError::io(&tmp_parent, "cannot create a directory", e))?;
    let result = extract_into(&tmp, layout, layer, limit);
    let diff_id = match result {
        Ok(d) => d,
        Err(e) => {
            let _ = remove_tree(&tmp);
            return Err(e);
        }
    };
    let name = entry_name(&diff_id.0);
    let dest = root.join(&name);
    match std::fs::rename(&tmp, &dest) {
        Ok(()) => {}
        // Another build got there first: use its copy.
        Err(e) if dest.is_dir() => {
            tracing::debug!("{} already extracted ({e})", dest.display());
            let _ = remove_tree(&tmp);
        }
        Err(e) => {
            let _ = remove_tree(&tmp);
            return Err(BuildError::io(
                &dest,
                "cannot move an extracted layer in place",
                e,
            ));
        }
    }
    link_blob(root, &layer.digest, &name)
        .map_err(|e| BuildError::io(root.join(BY_BLOB), "cannot record an extracted layer", e))?;
    Ok(dest)
}

/// Extract `layer` into `dir` with overlayfs whiteouts; the DiffId of what was read.
fn extract_into(
    dir: &Path,
    layout: &OciLayout,
    layer: &LayerRef,
    limit: UncompressedLimit,
) -> Result<DiffId, BuildError> {
    let reader = open_layer(layout, layer)?;
    let mut hashing = HashingReader::new(reader);
    let options = ExtractOptions {
        ownership: extract_ownership(),
        whiteouts: WhiteoutMode::OverlayConvert,
        target: TargetPolicy::MustBeEmpty,
        max_uncompressed: limit.for_compressed(layer.size),
    };
    let needs_lower = |entry: String, reason: &str| {
        BuildError::archive(
            format!(
                "extracting layer {} as an overlay lower directory",
                layer.digest
            ),
            ArchiveError::NeedsLowerLayers {
                entry,
                reason: reason.to_string(),
            },
        )
    };
    let stats = extract_layer(&mut hashing, dir, &options).map_err(|e| match e {
        ArchiveError::HardLinkTarget { entry, target } => {
            needs_lower(entry, &format!("hard link to {target:?} of a lower layer"))
        }
        e => crate::layer::extract_error(layer, limit, e),
    })?;
    if stats.whiteouts_under_undeclared_dirs > 0 {
        return Err(needs_lower(
            String::new(),
            "whiteouts under directories the layer does not declare (a lower symlink)",
        ));
    }
    hashing
        .drain()
        .map_err(|e| BuildError::io(layout.blob_path(&layer.digest), "reading layer", e))?;
    let (_, computed, _) = hashing.finish();
    let computed = DiffId(computed);
    if computed != layer.diff_id {
        return Err(BuildError::DiffIdMismatch {
            digest: Box::new(layer.digest.clone()),
            expected: Box::new(layer.diff_id.clone()),
            actual: Box::new(computed),
        });
    }
    Ok(computed)
}

/// Remove cached layer directories of a layout (those not used within `keep`, or all), when
/// no build is using them (a build holds `.lock` shared; this takes it exclusively or
/// removes nothing). Returns how many were removed.
pub(crate) fn prune(layout_root: &Path, keep: Option<std::time::Duration>) -> usize {
    let mut removed = 0;
    for flavour in ["root", "rootless"] {
        let root = layout_root
            .join(".strata")
            .join("rootfs-layers")
            .join(flavour);
        let Ok(lock) = std::fs::OpenOptions::new()
            .write(true)
            .open(root.join(LOCK))
        else {
            continue;
        };
        if rustix::fs::flock(
            lock.as_fd(),
            rustix::fs::FlockOperation::NonBlockingLockExclusive,
        )
        .is_err()
        {
            continue; // a build is running
        }
        let now = std::time::SystemTime::now();
        let Ok(entries) = std::fs::read_dir(&root) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let path = e.path();
            let fresh = keep.is_some_and(|k| {
                e.metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| now.duration_since(t).ok())
                    .is_some_and(|age| age <= k)
            });
            if name == TMP {
                let _ = remove_tree(&path);
            } else if valid_name(&name) && !fresh && remove_tree(&path).is_ok() {
                removed += 1;
            }
        }
        // Links to what is gone.
        if let Ok(links) = std::fs::read_dir(root.join(BY_BLOB)) {
            for l in links.flatten() {
                if !l.path().is_dir() {
                    let _ = std::fs::remove_file(l.path());
                }
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_names_are_checked() {
        assert!(valid_name(&format!("sha256-{}", "a".repeat(64))));
        for bad in ["..", "sha256-", "sha256-../x", "md5-abc", "sha256-ABC", "x"] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
