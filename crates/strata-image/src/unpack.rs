//! Unpacking an image into an OCI runtime bundle (what `umoci unpack` does).
//!
//! ```text
//! BUNDLE/
//!   rootfs/         every layer applied in order (whiteouts, opaque directories)
//!   config.json     runtime spec made from the image config (crate::runtime)
//!   strata.state    per-path inode/ctime/mtime/size/mode/owner at unpack time (repack)
//!   strata.json     what was unpacked (source, manifest, config, ownership): written
//!                   last, so its presence means the unpack completed
//!   strata.partial  present while an unpack runs (it names the process); a crash leaves
//!                   it behind, and the next unpack into the same directory clears that
//!                   leftover without --force
//! ```
//!
//! An unpack holds an exclusive `flock` on the bundle directory from before it looks at
//! what is there until it has finished or cleaned up. A second unpack into the same bundle
//! fails at once ("is being unpacked by another strata (pid N)"), also with `--force`; only
//! a leftover whose lock is free (its process is gone) is a crash leftover to clear.
//!
//! Layers stream one after the other from the source through a size cap (abort at size +
//! 1), the digest of the stored bytes, decompression on a separate thread, the DiffId, and
//! [`strata_archive::extract_layer`]: memory does not grow with the image. The digest, size
//! and DiffId of each layer are compared with the manifest and config at the end of its
//! stream; any mismatch, any extraction error and a cancellation remove the partial bundle.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

use rustix::fs::{AtFlags, FileType, Mode};
use rustix::io::Errno;
use serde::{Deserialize, Serialize};
use strata_archive::{
    ExtractOptions, HashingReader, LayerDigests, Ownership, PipeReader, TargetPolicy,
    UncompressedLimit, WhiteoutMode, decompress, extract_layer,
};
use strata_spec::{
    DiffId, Digest, DigestHasher, ImageConfig, MAX_CONFIG_BYTES, Manifest, MediaType,
};
use tokio_util::io::SyncIoBridge;

use crate::runtime::{RuntimeOptions, runtime_spec};
use crate::tree::{DIR_FLAGS, list_names, os, record_tree};
use crate::{ImageError, ImageSource, RawManifest, read_blob_bytes};

/// Bundle file names.
pub const ROOTFS_DIR: &str = "rootfs";
pub const RUNTIME_CONFIG_FILE: &str = "config.json";
pub const STATE_FILE: &str = "strata.state";
pub const META_FILE: &str = "strata.json";
pub const PARTIAL_FILE: &str = "strata.partial";
/// Format version of [`BundleMeta`].
const META_VERSION: u32 = 1;
/// Read size of the blob stream before the decoder (fewer hops through the async bridge).
const STREAM_BUFFER_BYTES: usize = 256 * 1024;
/// Largest `strata.json` read back (it holds a manifest and a config, each ≤ 4 MiB).
const MAX_META_BYTES: u64 = 16 * 1024 * 1024;

/// What to do with a bundle directory that is not empty (or is a symlink).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExistingBundle {
    /// Refuse (a leftover of a crashed strata unpack is still cleared).
    #[default]
    Refuse,
    /// Remove what is there first (`--force`): a symlink is removed, never followed.
    Replace,
}

/// Whether the rootfs is flushed to disk before the bundle is marked complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncMode {
    /// No flush (umoci does not either): the marker protects against a failed or killed
    /// unpack, not against a power loss right after it.
    #[default]
    None,
    /// `syncfs` of the bundle's filesystem before the marker is written.
    Filesystem,
}

/// Options of [`unpack`].
#[derive(Debug, Clone, Default)]
pub struct UnpackOptions {
    pub ownership: Ownership,
    pub existing: ExistingBundle,
    /// Cap on the uncompressed bytes of all layers together (decompression bombs); the
    /// default scales with the image's compressed size.
    pub max_uncompressed: UncompressedLimit,
    pub runtime: RuntimeOptions,
    /// Set from another thread (Ctrl-C) to stop: the unpack fails with
    /// [`ImageError::Interrupted`] and removes what it wrote.
    pub cancel: Option<Arc<AtomicBool>>,
    /// How the image was named, kept in `strata.json` so repack can find the base blobs.
    pub source_name: String,
    pub sync: SyncMode,
}

/// A layer as recorded in `strata.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleLayer {
    pub digest: Digest,
    pub diff_id: DiffId,
}

/// `strata.json`: what a bundle was unpacked from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BundleMeta {
    pub version: u32,
    /// The image name given to unpack (`oci:/layout:tag`, `docker://…`).
    pub source: String,
    pub manifest_digest: Digest,
    pub manifest_media_type: MediaType,
    /// The manifest and config documents (as JSON values: every field is kept).
    pub manifest: serde_json::Value,
    pub config: serde_json::Value,
    /// `root` or `rootless`.
    pub ownership: String,
    pub layers: Vec<BundleLayer>,
}

impl BundleMeta {
    pub fn ownership(&self) -> Ownership {
        if self.ownership == "rootless" {
            Ownership::Rootless
        } else {
            Ownership::Preserve
        }
    }
    pub fn image_config(&self) -> Result<ImageConfig, ImageError> {
        serde_json::from_value(self.config.clone())
            .map_err(|e| ImageError::Unsupported(format!("strata.json: config: {e}")))
    }
}

/// Read `BUNDLE/strata.json` of a completed unpack.
pub fn read_bundle_meta(bundle: &Path) -> Result<BundleMeta, ImageError> {
    let bundle_err = |reason: String| ImageError::Bundle {
        path: bundle.to_path_buf(),
        reason,
    };
    if bundle.join(PARTIAL_FILE).exists() {
        return Err(bundle_err(
            "the unpack into it did not complete (strata.partial is present): unpack again".into(),
        ));
    }
    let file = File::open(bundle.join(META_FILE)).map_err(|e| {
        bundle_err(format!(
            "no {META_FILE} ({e}): not a bundle made by `strata unpack`"
        ))
    })?;
    let mut bytes = Vec::new();
    file.take(MAX_META_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| bundle_err(format!("reading {META_FILE}: {e}")))?;
    if bytes.len() as u64 > MAX_META_BYTES {
        return Err(bundle_err(format!("{META_FILE} is too large")));
    }
    let meta: BundleMeta = serde_json::from_slice(&bytes)
        .map_err(|e| bundle_err(format!("{META_FILE} is not valid: {e}")))?;
    if meta.version != META_VERSION {
        return Err(bundle_err(format!(
            "{META_FILE} has version {}, this strata reads {META_VERSION}",
            meta.version
        )));
    }
    Ok(meta)
}

/// What an unpack did.
#[derive(Debug, Clone, Default)]
pub struct UnpackReport {
    pub manifest_digest: Option<Digest>,
    pub layers: usize,
    pub entries: u64,
    pub file_bytes: u64,
    pub uncompressed_bytes: u64,
    pub compressed_bytes: u64,
    /// Paths recorded in `strata.state`.
    pub paths: u64,
    pub warning_count: u64,
    /// The first warnings (bounded), each naming the layer and entry.
    pub warnings: Vec<String>,
}

/// Warnings kept in the report (more are only counted).
const MAX_REPORT_WARNINGS: usize = 100;

/// Unpack the image `manifest` (an image manifest, not an index) of `source` into the
/// bundle directory `bundle`. See the module docs for the layout and guarantees.
pub async fn unpack(
    source: &dyn ImageSource,
    manifest: &RawManifest,
    bundle: &Path,
    options: &UnpackOptions,
) -> Result<UnpackReport, ImageError> {
    let (image, config_bytes, config) = image_and_config(source, manifest, "unpack").await?;
    for (i, layer) in image.layers.iter().enumerate() {
        if layer.media_type.layer_compression().is_none() {
            return Err(ImageError::Unsupported(format!(
                "layer {i} ({}) has media type {}, which strata cannot unpack",
                layer.digest, layer.media_type
            )));
        }
        layer.size_u64()?;
    }

    // The lock is held until the end of this function: after the cleanup of a failure too.
    let (created, _lock) = {
        let bundle = bundle.to_path_buf();
        let existing = options.existing;
        blocking(move || prepare_bundle(&bundle, existing)).await?
    };
    let result = unpack_into(
        source,
        manifest,
        &image,
        &config,
        &config_bytes,
        bundle,
        options,
    )
    .await;
    if result.is_err() {
        let bundle = bundle.to_path_buf();
        // Best effort: the error that stopped the unpack is the one to report.
        let _ = blocking(move || {
            discard_bundle(&bundle, created);
            Ok(())
        })
        .await;
    }
    result
}

/// The image manifest `manifest` must be, its config (bytes and parsed), with one DiffId per
/// layer; `what` names the operation in the error for an index.
pub(crate) async fn image_and_config(
    source: &dyn ImageSource,
    manifest: &RawManifest,
    what: &str,
) -> Result<(strata_spec::ImageManifest, Vec<u8>, ImageConfig), ImageError> {
    let image = match manifest.parse()? {
        Manifest::Image(m) => m,
        Manifest::Index(_) => {
            return Err(ImageError::Unsupported(format!(
                "{} is an index: pick one image of it (a platform) to {what}",
                manifest.digest
            )));
        }
    };
    let config_bytes = read_blob_bytes(source, &image.config, MAX_CONFIG_BYTES).await?;
    let config = ImageConfig::parse(&config_bytes).map_err(|source| ImageError::Document {
        digest: image.config.digest.clone(),
        source,
    })?;
    if config.rootfs.diff_ids.len() != image.layers.len() {
        return Err(ImageError::Unsupported(format!(
            "config {} lists {} rootfs.diff_ids for {} layers (M7)",
            image.config.digest,
            config.rootfs.diff_ids.len(),
            image.layers.len()
        )));
    }
    Ok((image, config_bytes, config))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ImageError> + Send + 'static,
) -> Result<T, ImageError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ImageError::io("unpack task", io::Error::other(e)))?
}

fn cancelled(options: &UnpackOptions) -> bool {
    options
        .cancel
        .as_ref()
        .is_some_and(|c| c.load(Ordering::Relaxed))
}

async fn unpack_into(
    source: &dyn ImageSource,
    manifest: &RawManifest,
    image: &strata_spec::ImageManifest,
    config: &ImageConfig,
    config_bytes: &[u8],
    bundle: &Path,
    options: &UnpackOptions,
) -> Result<UnpackReport, ImageError> {
    let compressed = image
        .layers
        .iter()
        .map(|l| l.size_u64().unwrap_or(0))
        .fold(0u64, u64::saturating_add);
    let cap = options.max_uncompressed.for_compressed(compressed);
    let rootfs = bundle.join(ROOTFS_DIR);
    let mut report = UnpackReport {
        manifest_digest: Some(manifest.digest.clone()),
        ..UnpackReport::default()
    };
    let mut layers = Vec::new();
    for (index, layer) in image.layers.iter().enumerate() {
        if cancelled(options) {
            return Err(ImageError::Interrupted);
        }
        let stream = source.blob(layer).await?;
        let expected_diff_id = config.rootfs.diff_ids[index].clone();
        let budget = cap.map(|cap| cap.saturating_sub(report.uncompressed_bytes));
        let job = LayerJob {
            index,
            descriptor: layer.clone(),
            expected_diff_id,
            rootfs: rootfs.clone(),
            extract: ExtractOptions {
                ownership: options.ownership,
                whiteouts: WhiteoutMode::Apply,
                target: if index == 0 {
                    TargetPolicy::MustBeEmpty
                } else {
                    TargetPolicy::MayExist
                },
                max_uncompressed: budget,
            },
            cancel: options.cancel.clone(),
            cap: cap.map(|limit| (limit, options.max_uncompressed)),
        };
        let outcome = blocking(move || job.run(stream)).await?;
        report.layers += 1;
        report.entries += outcome.stats.entries;
        report.file_bytes += outcome.stats.file_bytes;
        report.uncompressed_bytes += outcome.uncompressed;
        report.compressed_bytes += outcome.compressed;
        report.warning_count += outcome.stats.warning_count;
        for w in outcome.stats.warnings {
            if report.warnings.len() < MAX_REPORT_WARNINGS {
                report.warnings.push(format!("layer {index}: {w}"));
            }
        }
        layers.push(BundleLayer {
            digest: layer.digest.clone(),
            diff_id: outcome.diff_id,
        });
    }
    if cancelled(options) {
        return Err(ImageError::Interrupted);
    }
    let meta = BundleMeta {
        version: META_VERSION,
        source: options.source_name.clone(),
        manifest_digest: manifest.digest.clone(),
        manifest_media_type: image.media_type(),
        manifest: serde_json::from_slice(&manifest.bytes)
            .map_err(|e| ImageError::Unsupported(format!("manifest: {e}")))?,
        config: serde_json::from_slice(config_bytes)
            .map_err(|e| ImageError::Unsupported(format!("config: {e}")))?,
        ownership: match options.ownership {
            Ownership::Rootless => "rootless".into(),
            _ => "root".into(),
        },
        layers,
    };
    let config = config.clone();
    let runtime = options.runtime.clone();
    let cancel = options.cancel.clone();
    let bundle = bundle.to_path_buf();
    let sync = options.sync;
    let paths =
        blocking(move || finish_bundle(&bundle, &config, &runtime, &meta, sync, cancel.as_deref()))
            .await?;
    report.paths = paths;
    Ok(report)
}

/// Write config.json and strata.state, then strata.json (the marker), then drop
/// strata.partial.
fn finish_bundle(
    bundle: &Path,
    config: &ImageConfig,
    runtime: &RuntimeOptions,
    meta: &BundleMeta,
    sync: SyncMode,
    cancel: Option<&AtomicBool>,
) -> Result<u64, ImageError> {
    let rootfs = bundle.join(ROOTFS_DIR);
    let spec = runtime_spec(config, &rootfs, runtime)?;
    let spec_bytes = crate::runtime::spec_json(&spec)?;
    write_file(&bundle.join(RUNTIME_CONFIG_FILE), &spec_bytes)?;
    let state_path = bundle.join(STATE_FILE);
    let state = File::create(&state_path)
        .map_err(|e| ImageError::io(format!("creating {}", state_path.display()), e))?;
    let (paths, _) = record_tree(&rootfs, state)
        .map_err(|e| ImageError::io(format!("recording {}", rootfs.display()), e))?;
    let meta_bytes = serde_json::to_vec_pretty(meta)
        .map_err(|e| ImageError::Unsupported(format!("{META_FILE}: {e}")))?;
    if sync == SyncMode::Filesystem {
        let fd = rustix::fs::open(bundle, DIR_FLAGS, Mode::empty()).map_err(|e| {
            ImageError::io(format!("opening {}", bundle.display()), io::Error::from(e))
        })?;
        rustix::fs::syncfs(&fd).map_err(|e| {
            ImageError::io(format!("syncing {}", bundle.display()), io::Error::from(e))
        })?;
    }
    if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
        return Err(ImageError::Interrupted);
    }
    let tmp = bundle.join(format!("{META_FILE}.tmp"));
    write_file(&tmp, &meta_bytes)?;
    std::fs::rename(&tmp, bundle.join(META_FILE))
        .map_err(|e| ImageError::io(format!("renaming {}", tmp.display()), e))?;
    std::fs::remove_file(bundle.join(PARTIAL_FILE)).map_err(|e| {
        ImageError::io(
            format!("removing {}", bundle.join(PARTIAL_FILE).display()),
            e,
        )
    })?;
    Ok(paths)
}

pub(crate) fn write_file(path: &Path, bytes: &[u8]) -> Result<(), ImageError> {
    let mut f = File::create(path)
        .map_err(|e| ImageError::io(format!("creating {}", path.display()), e))?;
    f.write_all(bytes)
        .map_err(|e| ImageError::io(format!("writing {}", path.display()), e))
}

struct LayerJob {
    index: usize,
    descriptor: strata_spec::Descriptor,
    expected_diff_id: DiffId,
    rootfs: PathBuf,
    extract: ExtractOptions,
    cancel: Option<Arc<AtomicBool>>,
    /// The cap on the image's uncompressed bytes and where it came from (for the error).
    cap: Option<(u64, UncompressedLimit)>,
}

struct LayerOutcome {
    stats: strata_archive::ExtractStats,
    diff_id: DiffId,
    uncompressed: u64,
    compressed: u64,
}

/// The stored bytes of a layer: hashed (for the blob digest), stopped at size + 1 bytes
/// and on cancellation. It runs on the decoder thread; the digest is read back through the
/// shared hasher once the decoded stream has ended.
struct Guarded<R> {
    inner: R,
    seen: u64,
    size: u64,
    overflow: Arc<AtomicBool>,
    cancel: Option<Arc<AtomicBool>>,
    /// Digest and count of the stored bytes read.
    hash: Arc<Mutex<(DigestHasher, u64)>>,
}

impl<R: Read> Read for Guarded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self
            .cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::Relaxed))
        {
            return Err(strata_archive::cancelled_error());
        }
        // Never more than size + 1 bytes.
        let room = (self.size + 1 - self.seen.min(self.size + 1)).min(buf.len() as u64) as usize;
        if room == 0 {
            self.overflow.store(true, Ordering::Relaxed);
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "blob longer than its descriptor",
            ));
        }
        let n = loop {
            match self.inner.read(&mut buf[..room]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other?,
            }
        };
        {
            let mut h = self.hash.lock().unwrap_or_else(PoisonError::into_inner);
            h.0.update(&buf[..n]);
            h.1 += n as u64;
        }
        self.seen += n as u64;
        if self.seen > self.size {
            self.overflow.store(true, Ordering::Relaxed);
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "blob longer than its descriptor",
            ));
        }
        Ok(n)
    }
}

impl LayerJob {
    fn run(self, stream: crate::BlobReader) -> Result<LayerOutcome, ImageError> {
        let d = &self.descriptor;
        let size = d.size_u64()?;
        let compression = d
            .media_type
            .layer_compression()
            .ok_or_else(|| ImageError::Unsupported(format!("layer media type {}", d.media_type)))?;
        let overflow = Arc::new(AtomicBool::new(false));
        let stored_hash = Arc::new(Mutex::new((DigestHasher::new(d.digest.algorithm()), 0u64)));
        let guarded = Guarded {
            inner: io::BufReader::with_capacity(STREAM_BUFFER_BYTES, SyncIoBridge::new(stream)),
            seen: 0,
            size,
            overflow: Arc::clone(&overflow),
            cancel: self.cancel.clone(),
            hash: Arc::clone(&stored_hash),
        };
        let what = format!("layer {} ({})", self.index, d.digest);
        // The decoder thread reads, hashes and decompresses the stored bytes; this thread
        // hashes the tar (DiffId) and extracts it. Hashing the uncompressed stream here
        // instead of next to the decompressor balances the two threads (decompression is
        // the heavier half).
        let mut reader = decompress(guarded, compression)
            .and_then(|decoded| match &self.cancel {
                Some(cancel) => PipeReader::spawn_cancellable(decoded, Arc::clone(cancel)),
                None => PipeReader::spawn(decoded),
            })
            .map(HashingReader::new)
            .map_err(|e| ImageError::io(format!("{what}: starting decompression"), e))?;
        enum Failure {
            Extract(strata_archive::ArchiveError),
            Read(io::Error),
        }
        let result = extract_layer(&mut reader, &self.rootfs, &self.extract)
            .map_err(Failure::Extract)
            .and_then(|stats| {
                // Drains what the tar reader left, so the digests cover every byte.
                reader.drain().map_err(Failure::Read)?;
                let (pipe, diff_id, uncompressed_size) = reader.finish();
                // The pipe ended: the decoder thread has hashed every stored byte it read.
                drop(pipe);
                let (digest, stored_size) = {
                    let h = stored_hash.lock().unwrap_or_else(PoisonError::into_inner);
                    (h.0.clone().finish(), h.1)
                };
                Ok((
                    stats,
                    LayerDigests {
                        digest,
                        size: stored_size,
                        diff_id: DiffId(diff_id),
                        uncompressed_size,
                    },
                ))
            });
        let is_cancelled = self
            .cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::Relaxed));
        if is_cancelled {
            return Err(ImageError::Interrupted);
        }
        if overflow.load(Ordering::Relaxed) {
            return Err(ImageError::SizeMismatch {
                digest: d.digest.clone(),
                expected: size,
                actual: size + 1,
                more: " or more (stream longer than declared)",
            });
        }
        let (stats, digests) = match result {
            Ok(done) => done,
            Err(Failure::Extract(strata_archive::ArchiveError::Limit { .. }))
                if self.cap.is_some() =>
            {
                let (limit, how) = self.cap.unwrap_or((0, UncompressedLimit::Unlimited));
                let origin = match how {
                    UncompressedLimit::Default => format!(
                        "the default cap, the larger of {} GiB and {}x the compressed size; \
                         --max-uncompressed raises it",
                        strata_archive::DEFAULT_MIN_UNCOMPRESSED >> 30,
                        strata_archive::DEFAULT_UNCOMPRESSED_RATIO
                    ),
                    _ => "--max-uncompressed".to_string(),
                };
                return Err(ImageError::TooLarge {
                    what: format!("{what}: the image's uncompressed content ({origin})"),
                    limit,
                });
            }
            Err(Failure::Extract(source)) => {
                return Err(ImageError::Archive {
                    context: format!("{what}: extracting"),
                    source: Box::new(source),
                });
            }
            Err(Failure::Read(e)) => {
                return Err(ImageError::from_io(format!("{what}: reading"), e));
            }
        };
        if digests.size != size {
            return Err(ImageError::SizeMismatch {
                digest: d.digest.clone(),
                expected: size,
                actual: digests.size,
                more: " (stream ended early)",
            });
        }
        if digests.digest != d.digest {
            return Err(ImageError::DigestMismatch {
                expected: d.digest.clone(),
                actual: digests.digest,
            });
        }
        if digests.diff_id != self.expected_diff_id {
            return Err(ImageError::DiffIdMismatch {
                layer: self.index,
                digest: Box::new(d.digest.clone()),
                expected: Box::new(self.expected_diff_id),
                actual: Box::new(digests.diff_id),
            });
        }
        Ok(LayerOutcome {
            stats,
            diff_id: digests.diff_id,
            uncompressed: digests.uncompressed_size,
            compressed: digests.size,
        })
    }
}

/// Names strata puts in a bundle: a directory holding only these plus `strata.partial` is
/// the leftover of an interrupted unpack.
const BUNDLE_NAMES: [&str; 7] = [
    ROOTFS_DIR,
    RUNTIME_CONFIG_FILE,
    STATE_FILE,
    META_FILE,
    PARTIAL_FILE,
    // Written beside a complete bundle by `repack --refresh-bundle`, renamed into place.
    "strata.json.tmp",
    "strata.state.tmp",
];

/// An exclusive `flock` on a bundle directory, released when dropped (or when the process
/// ends, however it ends).
#[derive(Debug)]
pub struct BundleLock {
    _dir: rustix::fd::OwnedFd,
}

/// Times [`lock_bundle`] tries again when the directory it locked was removed meanwhile.
const LOCK_ATTEMPTS: usize = 3;

/// Take the exclusive lock of the existing bundle directory `bundle` without waiting: when
/// another strata holds it, the error names that process (from `strata.partial`).
pub fn lock_bundle(bundle: &Path) -> Result<BundleLock, ImageError> {
    let io_err = |what: &str, e: Errno| {
        ImageError::io(format!("{what} {}", bundle.display()), io::Error::from(e))
    };
    for _ in 0..LOCK_ATTEMPTS {
        let dir = rustix::fs::open(
            bundle,
            DIR_FLAGS | rustix::fs::OFlags::NOFOLLOW,
            Mode::empty(),
        )
        .map_err(|e| io_err("opening", e))?;
        match rustix::fs::flock(&dir, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(Errno::WOULDBLOCK) => {
                let holder = std::fs::read_to_string(bundle.join(PARTIAL_FILE))
                    .ok()
                    .and_then(|text| partial_pid(&text))
                    .map_or_else(|| "pid unknown".to_string(), |pid| format!("pid {pid}"));
                return Err(ImageError::Bundle {
                    path: bundle.to_path_buf(),
                    reason: format!(
                        "is being unpacked by another strata ({holder}): wait for it to end"
                    ),
                });
            }
            Err(e) => return Err(io_err("locking", e)),
        }
        // The holder before us may have removed the directory (a failed unpack that made
        // it): a lock on a directory no longer at that path protects nothing.
        let held = rustix::fs::fstat(&dir).map_err(|e| io_err("stat", e))?;
        match rustix::fs::statat(rustix::fs::CWD, bundle, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(now) if now.st_ino == held.st_ino && now.st_dev == held.st_dev => {
                return Ok(BundleLock { _dir: dir });
            }
            Ok(_) | Err(Errno::NOENT) => {
                if !bundle.exists() {
                    std::fs::DirBuilder::new()
                        .mode(0o700)
                        .create(bundle)
                        .or_else(|e| match e.kind() {
                            io::ErrorKind::AlreadyExists => Ok(()),
                            _ => Err(e),
                        })
                        .map_err(|e| ImageError::io(format!("creating {}", bundle.display()), e))?;
                }
            }
            Err(e) => return Err(io_err("stat", e)),
        }
    }
    Err(ImageError::Bundle {
        path: bundle.to_path_buf(),
        reason: "keeps being removed and made again by another process".into(),
    })
}

/// Text of `strata.partial`: what runs, and which process.
pub(crate) fn partial_text(what: &str) -> String {
    format!("{what} in progress (pid {})\n", std::process::id())
}

/// The pid in a `strata.partial` written by [`partial_text`].
fn partial_pid(text: &str) -> Option<u32> {
    let (_, rest) = text.split_once("(pid ")?;
    rest.split(')').next()?.parse().ok()
}

/// Make `bundle` an empty directory (mode 0700) holding `strata.partial` and an empty
/// `rootfs`, locked. Returns whether the bundle directory was created here, and the lock.
fn prepare_bundle(
    bundle: &Path,
    existing: ExistingBundle,
) -> Result<(bool, BundleLock), ImageError> {
    let target_err = |reason: &str| ImageError::Bundle {
        path: bundle.to_path_buf(),
        reason: reason.to_string(),
    };
    let mut created = false;
    match rustix::fs::statat(rustix::fs::CWD, bundle, AtFlags::SYMLINK_NOFOLLOW) {
        Err(Errno::NOENT) => {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(bundle)
                .map_err(|e| ImageError::io(format!("creating {}", bundle.display()), e))?;
            created = true;
        }
        Err(e) => {
            return Err(ImageError::io(
                format!("stat {}", bundle.display()),
                io::Error::from(e),
            ));
        }
        Ok(st) => match FileType::from_raw_mode(st.st_mode) {
            FileType::Symlink => {
                if existing != ExistingBundle::Replace {
                    return Err(target_err(
                        "is a symlink: refused (never followed); --force replaces the link itself",
                    ));
                }
                std::fs::remove_file(bundle)
                    .map_err(|e| ImageError::io(format!("removing {}", bundle.display()), e))?;
                std::fs::DirBuilder::new()
                    .mode(0o700)
                    .create(bundle)
                    .map_err(|e| ImageError::io(format!("creating {}", bundle.display()), e))?;
                created = true;
            }
            FileType::Directory => {}
            _ => return Err(target_err("exists and is not a directory")),
        },
    }
    // Before anything in it is looked at: files of a running unpack are no leftover.
    let lock = lock_bundle(bundle)?;
    let dir = rustix::fs::open(bundle, DIR_FLAGS, Mode::empty())
        .map_err(|e| ImageError::io(format!("opening {}", bundle.display()), io::Error::from(e)))?;
    let names = list_names(dir.as_fd())
        .map_err(|e| ImageError::io(format!("reading {}", bundle.display()), e))?;
    if !names.is_empty() {
        let leftover = names.iter().any(|n| n == PARTIAL_FILE.as_bytes())
            && names
                .iter()
                .all(|n| BUNDLE_NAMES.iter().any(|b| b.as_bytes() == n.as_slice()));
        if !leftover && existing != ExistingBundle::Replace {
            return Err(target_err(
                "is not empty: refused (--force replaces its contents)",
            ));
        }
        for n in &names {
            remove_all_at(dir.as_fd(), n).map_err(|e| {
                ImageError::io(
                    format!(
                        "clearing {}/{}",
                        bundle.display(),
                        String::from_utf8_lossy(n)
                    ),
                    e,
                )
            })?;
        }
    }
    rustix::fs::fchmod(&dir, Mode::from_raw_mode(0o700))
        .map_err(|e| ImageError::io(format!("chmod {}", bundle.display()), io::Error::from(e)))?;
    write_file(
        &bundle.join(PARTIAL_FILE),
        partial_text("unpack").as_bytes(),
    )?;
    rustix::fs::mkdirat(&dir, ROOTFS_DIR, Mode::from_raw_mode(0o755)).map_err(|e| {
        ImageError::io(
            format!("creating {}/{ROOTFS_DIR}", bundle.display()),
            io::Error::from(e),
        )
    })?;
    Ok((created, lock))
}

/// Remove what an unpack wrote (the bundle directory too when it was created here).
fn discard_bundle(bundle: &Path, created: bool) {
    let Ok(dir) = rustix::fs::open(bundle, DIR_FLAGS, Mode::empty()) else {
        return;
    };
    for name in BUNDLE_NAMES {
        if name != PARTIAL_FILE {
            let _ = remove_all_at(dir.as_fd(), name.as_bytes());
        }
    }
    // The marker of an incomplete unpack goes last: until then a rerun knows the rest is
    // ours to clear.
    let _ = remove_all_at(dir.as_fd(), PARTIAL_FILE.as_bytes());
    drop(dir);
    if created {
        let _ = std::fs::remove_dir(bundle);
    }
}

/// Remove `name` in `parent` and everything below it, never following a symlink; read-only
/// directories (rootless unpacks keep the image's modes) are made writable on the way.
pub(crate) fn remove_all_at(parent: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
    match rustix::fs::unlinkat(parent, os(name), AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => return Ok(()),
        Err(Errno::ISDIR | Errno::PERM) => {}
        Err(Errno::ACCESS) => {
            // The parent is not writable.
            rustix::fs::fchmod(parent, Mode::from_raw_mode(0o700)).map_err(io::Error::from)?;
            return remove_all_at(parent, name);
        }
        Err(e) => return Err(io::Error::from(e)),
    }
    let fd = match rustix::fs::openat(parent, os(name), DIR_FLAGS, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::ACCESS) => {
            rustix::fs::chmodat(
                parent,
                os(name),
                Mode::from_raw_mode(0o700),
                AtFlags::empty(),
            )
            .map_err(io::Error::from)?;
            rustix::fs::openat(parent, os(name), DIR_FLAGS, Mode::empty())
                .map_err(io::Error::from)?
        }
        Err(Errno::NOTDIR | Errno::LOOP) => {
            return rustix::fs::unlinkat(parent, os(name), AtFlags::empty())
                .map_err(io::Error::from);
        }
        Err(e) => return Err(io::Error::from(e)),
    };
    let st = rustix::fs::fstat(&fd).map_err(io::Error::from)?;
    if st.st_mode & 0o700 != 0o700 {
        let _ = rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o700));
    }
    for child in list_names(fd.as_fd())? {
        remove_all_at(fd.as_fd(), &child)?;
    }
    match rustix::fs::unlinkat(parent, os(name), AtFlags::REMOVEDIR) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(io::Error::from(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_marker_names_the_process() {
        let text = partial_text("unpack");
        assert_eq!(partial_pid(&text), Some(std::process::id()));
        assert_eq!(partial_pid("unpack in progress\n"), None);
        assert_eq!(partial_pid("x (pid abc)"), None);
    }
}
