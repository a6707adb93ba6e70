//! Read-only image mounts: every layer extracted once into a cache directory (overlayfs
//! whiteouts), then an overlay of those directories mounted at the target — what
//! `podman image mount` does.
//!
//! Cache layout (under the directory given to [`LayerCache::new`]):
//! ```text
//! layers/<diffid-hex>/     a layer's tree, keyed by the DiffId computed while extracting it
//! by-digest/<alg>-<hex>    DiffId of the layer blob with that (verified) digest
//! tmp/                     extractions in progress (renamed into layers/ when verified)
//! empty/                   the bottom layer of one-layer images (overlayfs wants two)
//! ```
//! A cache entry is found by the blob digest of the manifest (whose bytes were verified)
//! and the DiffId recorded when that blob was extracted and hashed: a DiffId the image
//! config merely claims is never used as a key (RELIABILITY M15), it is only compared.
//!
//! Mounting needs root: an overlayfs mounted by an unprivileged user lives only in that
//! user's own user and mount namespaces (invisible to the caller's shell), so strata
//! refuses it with [`ImageError::Unsupported`] instead of pretending.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{AtFlags, FileType, Mode};
use rustix::mount::{FsMountFlags, FsOpenFlags, MountAttrFlags, MoveMountFlags, UnmountFlags};
use strata_archive::{
    ExtractOptions, LayerReader, Ownership, TargetPolicy, Threading, WhiteoutMode, extract_layer,
};
use strata_spec::{DiffId, Digest};
use tokio_util::io::SyncIoBridge;

use crate::runtime::is_root;
use crate::unpack::remove_all_at;
use crate::{ImageError, ImageSource, RawManifest};

/// Filesystem source name of strata's mounts (how `umount` recognises them).
pub const MOUNT_SOURCE: &str = "strata";
/// Read size of the blob stream.
const STREAM_BUFFER_BYTES: usize = 256 * 1024;
/// Largest `by-digest` record read (a digest string).
const MAX_RECORD_BYTES: u64 = 1024;

/// The layer directory cache.
#[derive(Debug, Clone)]
pub struct LayerCache {
    root: PathBuf,
}

/// What a mount did.
#[derive(Debug, Clone, Default)]
pub struct MountReport {
    pub manifest_digest: Option<Digest>,
    pub layers: usize,
    /// Layers extracted now (the others came from the cache).
    pub extracted: usize,
    pub warnings: Vec<String>,
}

fn io_err(what: String) -> impl FnOnce(io::Error) -> ImageError {
    move |e| ImageError::io(what, e)
}

impl LayerCache {
    pub fn new(root: impl Into<PathBuf>) -> LayerCache {
        LayerCache { root: root.into() }
    }

    fn layer_dir(&self, diff_id: &DiffId) -> PathBuf {
        self.root.join("layers").join(diff_id.0.encoded())
    }

    fn record_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("by-digest").join(format!(
            "{}-{}",
            digest.algorithm().as_str(),
            digest.encoded()
        ))
    }

    /// The DiffId recorded for a blob digest, if its layer directory is still there.
    fn lookup(&self, digest: &Digest) -> Option<DiffId> {
        let file = std::fs::File::open(self.record_path(digest)).ok()?;
        let mut text = String::new();
        file.take(MAX_RECORD_BYTES).read_to_string(&mut text).ok()?;
        let diff_id = DiffId(text.trim().parse().ok()?);
        self.layer_dir(&diff_id).is_dir().then_some(diff_id)
    }

    fn ensure_dirs(&self) -> Result<(), ImageError> {
        for d in ["layers", "by-digest", "tmp", "empty"] {
            let p = self.root.join(d);
            std::fs::create_dir_all(&p).map_err(io_err(format!("creating {}", p.display())))?;
        }
        Ok(())
    }

    /// Extract one layer into the cache (blocking). Returns its DiffId.
    fn extract(
        &self,
        stream: crate::BlobReader,
        descriptor: &strata_spec::Descriptor,
        expected: &DiffId,
        index: usize,
        cancel: Option<Arc<AtomicBool>>,
    ) -> Result<DiffId, ImageError> {
        let size = descriptor.size_u64()?;
        let compression = descriptor.media_type.layer_compression().ok_or_else(|| {
            ImageError::Unsupported(format!(
                "layer {index} ({}) has media type {}, which strata cannot mount",
                descriptor.digest, descriptor.media_type
            ))
        })?;
        let tmp = tempfile::Builder::new()
            .prefix("layer-")
            .tempdir_in(self.root.join("tmp"))
            .map_err(io_err("creating a temp dir in the layer cache".into()))?;
        let what = format!("layer {index} ({})", descriptor.digest);
        let bridged = io::BufReader::with_capacity(STREAM_BUFFER_BYTES, SyncIoBridge::new(stream));
        let cancelled = {
            let cancel = cancel.clone();
            move || cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed))
        };
        let capped = CapReader {
            inner: bridged,
            left: size + 1,
            cancel,
        };
        let mut reader = LayerReader::new(
            capped,
            compression,
            descriptor.digest.algorithm(),
            Threading::DecoderThread,
        )
        .map_err(io_err(format!("{what}: starting decompression")))?;
        let options = ExtractOptions {
            ownership: Ownership::Preserve,
            whiteouts: WhiteoutMode::OverlayConvert,
            target: TargetPolicy::MustBeEmpty,
            // Decompression bombs stop where an unpack's default cap would stop them.
            max_uncompressed: strata_archive::UncompressedLimit::Default.for_compressed(size),
        };
        extract_layer(&mut reader, tmp.path(), &options).map_err(|source| {
            if cancelled() {
                return ImageError::Interrupted;
            }
            ImageError::Archive {
                context: format!("{what}: extracting"),
                source: Box::new(source),
            }
        })?;
        let digests = reader
            .finish()
            .map_err(|e| ImageError::from_io(format!("{what}: reading"), e))?;
        if digests.size != size {
            return Err(ImageError::SizeMismatch {
                digest: descriptor.digest.clone(),
                expected: size,
                actual: digests.size,
                more: if digests.size > size {
                    " or more (stream longer than declared)"
                } else {
                    " (stream ended early)"
                },
            });
        }
        if digests.digest != descriptor.digest {
            return Err(ImageError::DigestMismatch {
                expected: descriptor.digest.clone(),
                actual: digests.digest,
            });
        }
        if &digests.diff_id != expected {
            return Err(ImageError::DiffIdMismatch {
                layer: index,
                digest: Box::new(descriptor.digest.clone()),
                expected: Box::new(expected.clone()),
                actual: Box::new(digests.diff_id),
            });
        }
        let final_dir = self.layer_dir(&digests.diff_id);
        let tmp_path = tmp.keep();
        match std::fs::rename(&tmp_path, &final_dir) {
            Ok(()) => {}
            // Another strata extracted the same content meanwhile: keep theirs.
            Err(e) if final_dir.is_dir() => {
                let _ = e;
                discard(&tmp_path);
            }
            Err(e) => {
                discard(&tmp_path);
                return Err(ImageError::io(
                    format!("moving {what} into {}", final_dir.display()),
                    e,
                ));
            }
        }
        let record = self.record_path(&descriptor.digest);
        let record_tmp = record.with_extension("tmp");
        crate::unpack::write_file(&record_tmp, digests.diff_id.to_string().as_bytes())?;
        std::fs::rename(&record_tmp, &record)
            .map_err(io_err(format!("writing {}", record.display())))?;
        Ok(digests.diff_id)
    }
}

fn discard(path: &Path) {
    if let (Some(parent), Some(name)) = (path.parent(), path.file_name())
        && let Ok(dir) = rustix::fs::open(parent, crate::tree::DIR_FLAGS, Mode::empty())
    {
        let _ = remove_all_at(
            std::os::fd::AsFd::as_fd(&dir),
            std::os::unix::ffi::OsStrExt::as_bytes(name),
        );
    }
}

/// Stops after `left` bytes (size + 1: an oversized blob fails its size check) and on
/// cancellation.
struct CapReader<R> {
    inner: R,
    left: u64,
    cancel: Option<Arc<AtomicBool>>,
}

impl<R: Read> Read for CapReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self
            .cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::Relaxed))
        {
            return Err(strata_archive::cancelled_error());
        }
        let room = self.left.min(buf.len() as u64) as usize;
        if room == 0 {
            return Ok(0);
        }
        let n = self.inner.read(&mut buf[..room])?;
        self.left -= n as u64;
        Ok(n)
    }
}

/// Mount the image `manifest` of `source` read-only at `target` (created if missing; a
/// symlink there is refused). Layers not in `cache` are extracted into it first.
pub async fn mount_image(
    source: &dyn ImageSource,
    manifest: &RawManifest,
    cache: &LayerCache,
    target: &Path,
    cancel: Option<Arc<AtomicBool>>,
) -> Result<MountReport, ImageError> {
    if !is_root() {
        return Err(ImageError::Unsupported(
            "strata mount needs root: an overlay mounted without privileges exists only inside \
             its own user namespace, invisible to your shell (use `strata unpack` instead)"
                .into(),
        ));
    }
    let (image, _, config) = crate::unpack::image_and_config(source, manifest, "mount").await?;
    check_target(target)?;
    {
        let cache = cache.clone();
        tokio::task::spawn_blocking(move || cache.ensure_dirs())
            .await
            .map_err(|e| ImageError::io("mount task", io::Error::other(e)))??;
    }
    let mut report = MountReport {
        manifest_digest: Some(manifest.digest.clone()),
        ..MountReport::default()
    };
    let mut dirs = Vec::new();
    for (index, layer) in image.layers.iter().enumerate() {
        let expected = config.rootfs.diff_ids[index].clone();
        let diff_id = match cache.lookup(&layer.digest) {
            Some(d) => d,
            None => {
                let stream = source.blob(layer).await?;
                let cache = cache.clone();
                let layer = layer.clone();
                let expected = expected.clone();
                let cancel = cancel.clone();
                report.extracted += 1;
                tokio::task::spawn_blocking(move || {
                    cache.extract(stream, &layer, &expected, index, cancel)
                })
                .await
                .map_err(|e| ImageError::io("mount task", io::Error::other(e)))??
            }
        };
        if diff_id != expected {
            return Err(ImageError::DiffIdMismatch {
                layer: index,
                digest: Box::new(layer.digest.clone()),
                expected: Box::new(expected),
                actual: Box::new(diff_id),
            });
        }
        dirs.push(cache.layer_dir(&diff_id));
        report.layers += 1;
    }
    if dirs.len() == 1 {
        dirs.insert(0, cache.root.join("empty"));
    }
    if dirs.is_empty() {
        return Err(ImageError::Unsupported(
            "the image has no layers: nothing to mount".into(),
        ));
    }
    // overlayfs wants the top layer first.
    dirs.reverse();
    let target = target.to_path_buf();
    tokio::task::spawn_blocking(move || overlay_mount(&dirs, &target))
        .await
        .map_err(|e| ImageError::io("mount task", io::Error::other(e)))??;
    Ok(report)
}

fn check_target(target: &Path) -> Result<(), ImageError> {
    match rustix::fs::statat(rustix::fs::CWD, target, AtFlags::SYMLINK_NOFOLLOW) {
        Err(rustix::io::Errno::NOENT) => std::fs::create_dir_all(target)
            .map_err(io_err(format!("creating {}", target.display()))),
        Err(e) => Err(ImageError::io(
            format!("stat {}", target.display()),
            io::Error::from(e),
        )),
        Ok(st) => match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory => Ok(()),
            FileType::Symlink => Err(ImageError::Bundle {
                path: target.to_path_buf(),
                reason: "is a symlink: refused (never followed)".into(),
            }),
            _ => Err(ImageError::Bundle {
                path: target.to_path_buf(),
                reason: "is not a directory".into(),
            }),
        },
    }
}

/// Mount a read-only overlay of `lower` (top first) at `target`: the mount API with one
/// `lowerdir+` per layer (no length limit), else mount(2) with a `lowerdir=` string.
fn overlay_mount(lower: &[PathBuf], target: &Path) -> Result<(), ImageError> {
    let new_api = (|| -> rustix::io::Result<()> {
        let fs = rustix::mount::fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)?;
        rustix::mount::fsconfig_set_string(&fs, "source", MOUNT_SOURCE)?;
        for dir in lower {
            rustix::mount::fsconfig_set_string(&fs, "lowerdir+", dir.as_path())?;
        }
        rustix::mount::fsconfig_create(&fs)?;
        let mnt = rustix::mount::fsmount(
            &fs,
            FsMountFlags::FSMOUNT_CLOEXEC,
            MountAttrFlags::MOUNT_ATTR_RDONLY | MountAttrFlags::MOUNT_ATTR_NODEV,
        )?;
        rustix::mount::move_mount(
            &mnt,
            "",
            rustix::fs::CWD,
            target,
            MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
        )
    })();
    let Err(first) = new_api else {
        return Ok(());
    };
    let joined: Vec<String> = lower.iter().map(|p| p.display().to_string()).collect();
    let data = std::ffi::CString::new(format!("lowerdir={}", joined.join(":")))
        .map_err(|e| ImageError::Unsupported(format!("layer path with NUL: {e}")))?;
    rustix::mount::mount(
        MOUNT_SOURCE,
        target,
        "overlay",
        rustix::mount::MountFlags::RDONLY | rustix::mount::MountFlags::NODEV,
        Some(data.as_c_str()),
    )
    .map_err(|e| {
        ImageError::io(
            format!(
                "mounting an overlay of {} layers at {} (mount API: {first})",
                lower.len(),
                target.display()
            ),
            io::Error::from(e),
        )
    })
}

/// Is `target` a mount point of a strata overlay? (from `/proc/self/mountinfo`)
pub fn is_strata_mount(target: &Path) -> Result<bool, ImageError> {
    let canonical =
        std::fs::canonicalize(target).map_err(io_err(format!("resolving {}", target.display())))?;
    let info = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(io_err("reading /proc/self/mountinfo".into()))?;
    let want = escape_mountinfo(&canonical.display().to_string());
    Ok(info.lines().any(|line| {
        let Some((left, right)) = line.split_once(" - ") else {
            return false;
        };
        let mount_point = left.split(' ').nth(4);
        let mut r = right.split(' ');
        let fstype = r.next();
        let source = r.next();
        mount_point == Some(want.as_str())
            && fstype == Some("overlay")
            && source == Some(MOUNT_SOURCE)
    }))
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn escape_mountinfo(path: &str) -> String {
    let mut out = String::new();
    for c in path.chars() {
        match c {
            ' ' => out.push_str("\\040"),
            '\t' => out.push_str("\\011"),
            '\n' => out.push_str("\\012"),
            '\\' => out.push_str("\\134"),
            c => out.push(c),
        }
    }
    out
}

/// Unmount a strata overlay at `target` (anything else mounted there is refused).
pub fn unmount_image(target: &Path) -> Result<(), ImageError> {
    if !is_strata_mount(target)? {
        return Err(ImageError::Bundle {
            path: target.to_path_buf(),
            reason: "is not a strata mount".into(),
        });
    }
    rustix::mount::unmount(target, UnmountFlags::NOFOLLOW).map_err(|e| {
        ImageError::io(
            format!("unmounting {}", target.display()),
            io::Error::from(e),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_like_mountinfo() {
        assert_eq!(escape_mountinfo("/a b\\c"), "/a\\040b\\134c");
    }
}
