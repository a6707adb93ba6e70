//! Layer bytes: planned entries → tar → compressed blob in the layout (one pass, digests
//! computed while streaming); reading layers back (headers, one file, a whole rootfs); squash.

use std::collections::HashMap;
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

use strata_archive::{
    CompressWriter, Compression, DeviceKind, EntryMeta, ExtractOptions, HashingReader,
    HashingWriter, LayerLayout, NameMode, OwnerOverride, Ownership, TarBuilder, TarOptions,
    TargetPolicy, UncompressedLimit, WhiteoutMode, decompress, extract_layer,
};
use strata_spec::{DiffId, Digest, LayerCompression, MediaType};
use strata_store::{NewBlob, OciLayout};

use crate::BuildError;
use crate::cache::CachedLayer;
use crate::copyplan::{Content, PlannedEntry, PlannedKind};
use crate::progress::LayerOrigin;
use crate::segments::{self, Capture, GZIP_SEGMENT_MIN_BYTES, SegKey, SegmentCache};
use crate::tree::{RawEntry, scan_layer};
use strata_archive::ArchiveError;

/// Uncompressed bytes between two progress reports.
const PROGRESS_EVERY_BYTES: u64 = 8 * 1024 * 1024;
/// Largest `/etc/passwd` or `/etc/group` read for `--chown` (CVE-2024-9676: a symlink to
/// `/dev/zero` must not exhaust memory; a real file is a few KiB).
pub(crate) const MAX_ACCOUNT_FILE_BYTES: u64 = 1024 * 1024;

/// A layer of an image being built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LayerRef {
    pub digest: Digest,
    pub diff_id: DiffId,
    pub size: u64,
    pub media_type: MediaType,
    pub origin: LayerOrigin,
}

impl LayerRef {
    pub(crate) fn from_cached(c: &CachedLayer, origin: LayerOrigin) -> LayerRef {
        LayerRef {
            digest: c.digest.clone(),
            diff_id: c.diff_id.clone(),
            size: c.size,
            media_type: c.media_type.clone(),
            origin,
        }
    }
}

/// Where a layer's tar goes: DiffId hashed on the way in, compressed, straight into a new
/// blob of the layout (which computes the stored digest itself: the compressed bytes are
/// hashed once, not twice as with a `LayerWriter` in front of a `NewBlob`).
pub(crate) struct LayerSink {
    inner: HashingWriter<CompressWriter<BufWriter<NewBlob>>>,
    compression: Compression,
    /// Gzip segments shared with the other layer writers of the build, and our owner id.
    segments: Option<SegmentsHandle>,
}

struct SegmentsHandle {
    cache: Arc<SegmentCache>,
    owner: u64,
}

impl Drop for SegmentsHandle {
    fn drop(&mut self) {
        self.cache.release(self.owner);
    }
}

/// Output buffer in front of the blob file (compressed members arrive in 1 MiB pieces).
const BLOB_BUFFER_BYTES: usize = 1 << 20;

impl LayerSink {
    pub(crate) fn new(
        layout: &OciLayout,
        compression: Compression,
    ) -> Result<LayerSink, BuildError> {
        Self::with_segments(layout, compression, None)
    }

    /// A sink whose gzip segments are shared through `segments` (see `segments.rs`).
    pub(crate) fn with_segments(
        layout: &OciLayout,
        compression: Compression,
        segments: Option<&Arc<SegmentCache>>,
    ) -> Result<LayerSink, BuildError> {
        let blob = layout
            .new_blob()
            .map_err(|e| BuildError::store("creating a layer blob", e))?;
        let mut compress = CompressWriter::new(
            BufWriter::with_capacity(BLOB_BUFFER_BYTES, blob),
            compression,
        )
        .map_err(|e| BuildError::io(layout.root(), "starting layer compression", e))?;
        let segments = match (segments, compress.gzip()) {
            (Some(cache), Some(gz)) => {
                gz.set_capture(Box::new(Capture(Arc::clone(cache))));
                Some(SegmentsHandle {
                    cache: Arc::clone(cache),
                    owner: cache.new_owner(),
                })
            }
            _ => None,
        };
        Ok(LayerSink {
            inner: HashingWriter::new(compress),
            compression,
            segments,
        })
    }

    /// A regular file's data as one gzip segment (shared when possible): see
    /// `segments::write_file`.
    fn write_file_segment(
        &mut self,
        key: Option<SegKey>,
        reader: &mut dyn Read,
        size: u64,
        sha256: bool,
    ) -> io::Result<(u64, Option<Digest>)> {
        let shared = match (&self.segments, key) {
            (Some(h), Some(key)) => Some((&*h.cache, h.owner, key)),
            _ => None,
        };
        segments::write_file(&mut self.inner, shared, reader, size, sha256)
    }
}

impl Write for LayerSink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.inner.write(data)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// How layers of this build are written.
#[derive(Clone)]
pub(crate) struct LayerSettings {
    pub compression: Compression,
    pub layout: LayerLayout,
    /// SOURCE_DATE_EPOCH: newer mtimes are clamped to it.
    pub clamp: Option<u64>,
    /// Gzip segments shared by the build's layer writers (builds for Windows and Linux).
    pub segments: Option<Arc<SegmentCache>>,
}

fn tar_options(settings: &LayerSettings) -> TarOptions {
    TarOptions {
        owner: OwnerOverride::Keep,
        mtime_clamp: settings.clamp,
        names: NameMode::Omit,
        layout: settings.layout,
    }
}

fn entry_meta(e: &PlannedEntry) -> EntryMeta {
    EntryMeta {
        mode: e.meta.mode,
        uid: e.meta.uid,
        gid: e.meta.gid,
        mtime: e.meta.mtime,
        ..Default::default()
    }
}

/// Open a planned file's bytes, checking the file is still what was planned (and hashed).
fn open_content<'a>(content: &'a Content, path: &[u8]) -> Result<Box<dyn Read + 'a>, BuildError> {
    match content {
        Content::Bytes(b) => Ok(Box::new(b.as_slice())),
        Content::Root { root, rel, stat } => {
            let shown = root.path().join(String::from_utf8_lossy(rel).as_ref());
            let f = root
                .open_file(rel)
                .map_err(|e| BuildError::io(&shown, "cannot open source file", e))?;
            let md = f
                .metadata()
                .map_err(|e| BuildError::io(&shown, "cannot stat source file", e))?;
            if !md.is_file()
                || md.len() != stat.size
                || md.ino() != stat.ino
                || md.mtime() != stat.mtime
                || md.mtime_nsec() != stat.mtime_nsec
            {
                return Err(BuildError::io(
                    &shown,
                    format!(
                        "changed while the build was reading it (layer entry {})",
                        String::from_utf8_lossy(path)
                    ),
                    io::Error::from(io::ErrorKind::InvalidData),
                ));
            }
            Ok(Box::new(f))
        }
    }
}

/// SHA-256 of files read while writing a layer (those whose id was pending), by their
/// root-relative path.
pub(crate) type WrittenHashes = HashMap<Vec<u8>, Digest>;

/// Write `entries` as one layer blob into `layout`. `on_bytes` gets the running count of
/// uncompressed bytes every few MiB. Files whose content id is still pending are hashed as
/// they are read (one read per file on a cold build).
pub(crate) fn write_layer(
    layout: &OciLayout,
    entries: &[PlannedEntry],
    settings: &LayerSettings,
    on_bytes: &dyn Fn(u64),
) -> Result<(CachedLayer, WrittenHashes), BuildError> {
    let mut hashes = WrittenHashes::new();
    let mut tar = TarBuilder::new(
        LayerSink::with_segments(layout, settings.compression, settings.segments.as_ref())?,
        tar_options(settings),
    );
    let mut written = 0u64;
    let mut reported = 0u64;
    for e in entries {
        let path = e.path();
        let meta = entry_meta(e);
        let arch = |r: strata_archive::Result<()>| {
            r.map_err(|err| {
                BuildError::archive(
                    format!("writing layer entry {}", String::from_utf8_lossy(&path)),
                    err,
                )
            })
        };
        match &e.kind {
            PlannedKind::Dir => arch(tar.append_dir(&path, &meta))?,
            PlannedKind::File { size, content, id } => {
                let reader = open_content(content, &path)?;
                // Larger files are gzip segments, shared between a build's Linux and
                // Windows layers when the source is a context file (see `segments.rs`).
                let segment = (*size >= GZIP_SEGMENT_MIN_BYTES).then(|| match content {
                    Content::Root { root, rel, stat } => Some(SegKey {
                        path: root.path().join(String::from_utf8_lossy(rel).as_ref()),
                        ino: stat.ino,
                        size: stat.size,
                        mtime: stat.mtime,
                        mtime_nsec: stat.mtime_nsec,
                    }),
                    Content::Bytes(_) => None,
                });
                let pending_rel = match content {
                    Content::Root { rel, .. } if id.is_pending() => Some(rel),
                    _ => None,
                };
                let mut reader = reader;
                if let Some(key) = segment {
                    // The segment writer hashes the data itself (or takes the hash of the
                    // writer that compressed it).
                    let mut digest = None;
                    arch(tar.append_file_with(&path, &meta, *size, |sink| {
                        let (n, d) = sink.write_file_segment(
                            key,
                            &mut reader,
                            *size,
                            pending_rel.is_some(),
                        )?;
                        digest = d;
                        Ok(n)
                    }))?;
                    if let (Some(rel), Some(d)) = (pending_rel, digest) {
                        hashes.insert(rel.clone(), d);
                    }
                } else if let Some(rel) = pending_rel {
                    let mut hashing = HashingReader::new(reader);
                    arch(tar.append_file(&path, &meta, *size, &mut hashing))?;
                    let (_, digest, n) = hashing.finish();
                    if n != *size {
                        return Err(BuildError::Internal(format!(
                            "{}: read {n} bytes, expected {size}",
                            String::from_utf8_lossy(&path)
                        )));
                    }
                    hashes.insert(rel.clone(), digest);
                } else {
                    arch(tar.append_file(&path, &meta, *size, reader))?;
                }
                written += size;
            }
            PlannedKind::Symlink(target) => arch(tar.append_symlink(&path, &meta, target))?,
            PlannedKind::Hardlink(target) => {
                arch(tar.append_hardlink(&path, &meta, target.join(&b'/')))?
            }
            PlannedKind::Fifo => arch(tar.append_fifo(&path, &meta))?,
            PlannedKind::Device {
                block,
                major,
                minor,
            } => {
                let kind = if *block {
                    DeviceKind::Block
                } else {
                    DeviceKind::Char
                };
                arch(tar.append_device(&path, &meta, kind, *major, *minor))?
            }
        }
        if written - reported >= PROGRESS_EVERY_BYTES {
            reported = written;
            on_bytes(written);
        }
    }
    Ok((finish_layer(tar, layout)?, hashes))
}

pub(crate) fn finish_layer(
    tar: TarBuilder<LayerSink>,
    layout: &OciLayout,
) -> Result<CachedLayer, BuildError> {
    let sink = tar
        .finish()
        .map_err(|e| BuildError::archive("finishing layer", e))?;
    let compression = sink.compression;
    let (compressor, diff_id, _uncompressed) = sink.inner.finish();
    let buffered = compressor
        .finish()
        .map_err(|e| BuildError::io(layout.root(), "finishing layer compression", e))?;
    let blob = buffered
        .into_inner()
        .map_err(|e| BuildError::io(layout.root(), "writing a layer blob", e.into_error()))?;
    let (digest, size) = blob
        .commit()
        .map_err(|e| BuildError::store("committing a layer blob", e))?;
    Ok(CachedLayer {
        digest,
        diff_id: DiffId(diff_id),
        size,
        media_type: compression.media_type(),
    })
}

/// A layer blob of the layout, decompressed.
pub(crate) fn open_layer(
    layout: &OciLayout,
    layer: &LayerRef,
) -> Result<Box<dyn Read + Send + 'static>, BuildError> {
    let (file, _) = layout
        .open_blob(&layer.digest)
        .map_err(|e| BuildError::store(format!("opening layer {}", layer.digest), e))?;
    let compression = layer
        .media_type
        .layer_compression()
        .unwrap_or(LayerCompression::Gzip);
    decompress(file, compression).map_err(|e| {
        BuildError::io(
            layout.blob_path(&layer.digest),
            "cannot decompress layer",
            e,
        )
    })
}

/// The headers of a layer.
pub(crate) fn scan(
    layout: &OciLayout,
    layer: &LayerRef,
    windows: LayerLayout,
) -> Result<Vec<RawEntry>, BuildError> {
    let reader = open_layer(layout, layer)?;
    scan_layer(reader, windows)
        .map_err(|e| BuildError::archive(format!("reading layer {}", layer.digest), e))
}

/// The bytes of the regular file `path` (literal, as stored) in a layer, at most `cap`.
pub(crate) fn read_file(
    layout: &OciLayout,
    layer: &LayerRef,
    path: &[u8],
    windows: LayerLayout,
    cap: u64,
) -> Result<Option<Vec<u8>>, BuildError> {
    let reader = open_layer(layout, layer)?;
    let mut tar = strata_archive::TarReader::new(reader);
    let err = |e: strata_archive::ArchiveError| {
        BuildError::archive(format!("reading layer {}", layer.digest), e)
    };
    while let Some(entry) = tar.next_entry().map_err(err)? {
        let Some(mut parts) = crate::tree::split_clean(&entry.path) else {
            continue;
        };
        if windows == LayerLayout::Windows {
            if parts.first().map(Vec::as_slice) != Some(b"Files".as_slice()) {
                continue;
            }
            parts.remove(0);
        }
        if parts.join(&b'/') != path || entry.kind != strata_archive::EntryKind::Regular {
            continue;
        }
        if entry.size > cap {
            return Err(BuildError::io(
                layout.blob_path(&layer.digest),
                format!(
                    "{} is larger than {cap} bytes",
                    String::from_utf8_lossy(path)
                ),
                io::Error::from(io::ErrorKind::InvalidData),
            ));
        }
        let mut out = Vec::with_capacity(entry.size as usize);
        tar.data().read_to_end(&mut out).map_err(|e| {
            BuildError::io(layout.blob_path(&layer.digest), "reading a layer entry", e)
        })?;
        return Ok(Some(out));
    }
    Ok(None)
}

pub(crate) fn extract_ownership() -> Ownership {
    if rustix::process::geteuid().is_root() {
        Ownership::Preserve
    } else {
        Ownership::Rootless
    }
}

/// Extract `layers` in order beneath `dest` (an empty directory), each within `limit`.
pub(crate) fn materialise(
    layout: &OciLayout,
    layers: &[LayerRef],
    dest: &Path,
    whiteouts: WhiteoutMode,
    limit: UncompressedLimit,
) -> Result<(), BuildError> {
    for layer in layers {
        let options = ExtractOptions {
            ownership: extract_ownership(),
            whiteouts,
            // Later layers go on top of earlier ones.
            target: TargetPolicy::MayExist,
            max_uncompressed: limit.for_compressed(layer.size),
        };
        let reader = open_layer(layout, layer)?;
        extract_layer(reader, dest, &options).map_err(|e| extract_error(layer, limit, e))?;
    }
    Ok(())
}

/// The error of extracting `layer` under `limit`: passing the limit says how to raise it.
pub(crate) fn extract_error(
    layer: &LayerRef,
    limit: UncompressedLimit,
    e: ArchiveError,
) -> BuildError {
    if let ArchiveError::Limit { limit: bytes, .. } = e {
        let origin = match limit {
            UncompressedLimit::Default => format!(
                "the default cap, the larger of {} GiB and {}x the layer's compressed size",
                strata_archive::DEFAULT_MIN_UNCOMPRESSED >> 30,
                strata_archive::DEFAULT_UNCOMPRESSED_RATIO
            ),
            _ => "--max-uncompressed".to_string(),
        };
        return BuildError::LayerTooLarge {
            digest: Box::new(layer.digest.clone()),
            limit: bytes,
            origin,
        };
    }
    BuildError::archive(format!("extracting layer {}", layer.digest), e)
}

/// One layer holding the union of `layers`: with `WhiteoutMode::OverlayConvert` whiteouts of
/// lower content are kept (squash of the new layers over a base), with `Apply` everything is
/// flattened (squash of the whole image).
pub(crate) fn squash(
    layout: &OciLayout,
    layers: &[LayerRef],
    scratch: &Path,
    whiteouts: WhiteoutMode,
    settings: &LayerSettings,
    limit: UncompressedLimit,
) -> Result<CachedLayer, BuildError> {
    let dir = scratch.join("squash");
    std::fs::create_dir_all(&dir)
        .map_err(|e| BuildError::io(&dir, "cannot create directory", e))?;
    materialise(layout, layers, &dir, whiteouts, limit)?;
    let tree_root = &dir;
    let mut tar = TarBuilder::new(
        LayerSink::new(layout, settings.compression)?,
        tar_options(settings),
    );
    let result = match whiteouts {
        WhiteoutMode::Apply => strata_archive::write_tree(tree_root, "", &mut tar),
        WhiteoutMode::OverlayConvert => strata_archive::write_overlay_diff(tree_root, &mut tar),
    };
    result.map_err(|e| BuildError::archive("writing the squashed layer", e))?;
    let layer = finish_layer(tar, layout)?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(layer)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::copyplan::ContentId;
    use crate::source::{OwnerSource, SourceRoot};
    use crate::tree::NodeMeta;

    fn planned(root: &Arc<SourceRoot>, rel: &[u8]) -> PlannedEntry {
        let stat = root.lstat(rel).unwrap().unwrap();
        PlannedEntry {
            parts: vec![rel.to_vec()],
            kind: PlannedKind::File {
                size: stat.size,
                content: Content::Root {
                    root: Arc::clone(root),
                    rel: rel.to_vec(),
                    stat,
                },
                id: ContentId::Digest(strata_spec::Digest::sha256_of(b"good")),
            },
            meta: NodeMeta {
                mode: 0o644,
                ..Default::default()
            },
        }
    }

    fn blob_count(layout: &OciLayout) -> usize {
        std::fs::read_dir(layout.root().join("blobs/sha256"))
            .unwrap()
            .count()
    }

    #[test]
    fn a25_source_swapped_after_planning_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = dir.path().join("ctx");
        std::fs::create_dir(&ctx).unwrap();
        std::fs::write(ctx.join("f"), b"good").unwrap();
        std::fs::write(ctx.join("g"), b"good").unwrap();
        let root = Arc::new(SourceRoot::open(&ctx, OwnerSource::Inode).unwrap());
        let layout = OciLayout::create_or_open(&dir.path().join("layout")).unwrap();
        let settings = LayerSettings {
            compression: Compression::Gzip { level: 1 },
            layout: LayerLayout::Linux,
            clamp: None,
            segments: None,
        };
        let f = planned(&root, b"f");
        let g = planned(&root, b"g");
        // f becomes a symlink to a host file; g another file of the same size.
        std::fs::remove_file(ctx.join("f")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", ctx.join("f")).unwrap();
        std::fs::remove_file(ctx.join("g")).unwrap();
        std::fs::write(ctx.join("g"), b"evil").unwrap();
        for e in [f, g] {
            let err = write_layer(&layout, std::slice::from_ref(&e), &settings, &|_| {})
                .map(|(l, _)| l)
                .unwrap_err();
            assert!(
                err.to_string().contains("changed") || err.to_string().contains("cannot open"),
                "{err}"
            );
        }
        assert_eq!(blob_count(&layout), 0, "nothing committed");
        assert!(
            std::fs::read_dir(layout.root().join(".strata/tmp"))
                .map(|d| d.count())
                .unwrap_or(0)
                == 0,
            "no temp file left"
        );
    }
}
