//! The copy pipeline: plan (select + convert), transfer blobs, write manifests.

use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use futures::{StreamExt, TryStreamExt};
use serde::Serialize;
use strata_image::{BlobReader, ImageError, ImageSink, ImageSource, RawManifest, read_blob_bytes};
use strata_spec::{
    Descriptor, Digest, ImageConfig, ImageManifest, MAX_CONFIG_BYTES, Manifest, MediaType, Platform,
};
use tokio::io::{AsyncRead, ReadBuf};

use crate::{CopyError, ManifestFormat, convert_manifest};

/// Blobs in flight at once by default (skopeo uses 6 per image).
pub const DEFAULT_CONCURRENCY: usize = 6;
/// Nested index depth limit (an index pointing at itself must end, RELIABILITY M8).
const MAX_INDEX_DEPTH: usize = 4;

/// Which images of an index to copy.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Selection {
    /// The image for the host platform (skopeo's default): an index becomes a single image.
    #[default]
    Host,
    /// The whole index with every image (`--all`).
    All,
    /// These platforms (`--platform`): one platform copies that image alone; several copy an
    /// index holding just those entries.
    Platforms(Vec<Platform>),
}

/// What to report while copying.
#[derive(Debug, Clone)]
pub enum ProgressEvent {
    BlobStarted { digest: Digest, size: u64 },
    BlobBytes { digest: Digest, bytes: u64 },
    BlobDone { digest: Digest },
    BlobSkipped { digest: Digest, size: u64 },
    ManifestWritten { digest: Digest, tag: Option<String> },
}

/// Receives progress events (the CLI draws bars from them).
pub trait Progress: Send + Sync {
    fn event(&self, event: ProgressEvent);
}

/// Options of [`copy_image`].
#[derive(Clone)]
pub struct CopyOptions {
    pub selection: Selection,
    /// Convert to this format; `None` keeps the source's bytes and digests.
    pub format: Option<ManifestFormat>,
    pub concurrency: usize,
    /// Name the top-level document gets at the destination.
    pub tag: Option<String>,
    /// The digest the source reference names: the top document must have it.
    pub expected_digest: Option<Digest>,
    pub progress: Option<Arc<dyn Progress>>,
}

impl Default for CopyOptions {
    fn default() -> Self {
        CopyOptions {
            selection: Selection::Host,
            format: None,
            concurrency: DEFAULT_CONCURRENCY,
            tag: None,
            expected_digest: None,
            progress: None,
        }
    }
}

/// One manifest written by a copy.
#[derive(Debug, Clone, Serialize)]
pub struct CopiedManifest {
    pub digest: Digest,
    pub media_type: MediaType,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
}

/// The outcome of a copy (`--format json`).
#[derive(Debug, Clone, Serialize)]
pub struct CopyReport {
    pub source: String,
    pub destination: String,
    pub digest: Digest,
    pub media_type: MediaType,
    pub manifests: Vec<CopiedManifest>,
    pub blobs_copied: usize,
    pub blobs_skipped: usize,
    pub bytes_copied: u64,
}

#[derive(Default)]
struct Plan {
    blobs: Vec<Descriptor>,
    seen_blobs: HashSet<Digest>,
    /// Manifests to write, children before parents; the top document is last.
    manifests: Vec<RawManifest>,
}

impl Plan {
    fn add_blob(&mut self, d: &Descriptor) {
        // Foreign / nondistributable layers with URLs are not fetched or pushed (M10).
        if d.media_type.is_nondistributable() && !d.urls.is_empty() {
            return;
        }
        if self.seen_blobs.insert(d.digest.clone()) {
            self.blobs.push(d.clone());
        }
    }
}

/// Choose the index entry for `wanted`; prefers the entry whose variant equals the wanted
/// (normalised) variant exactly.
pub fn select_platform<'a>(entries: &'a [Descriptor], wanted: &Platform) -> Option<&'a Descriptor> {
    let matching: Vec<&Descriptor> = entries
        .iter()
        .filter(|d| d.platform.as_ref().is_some_and(|p| wanted.matches(p)))
        .collect();
    let want = wanted.normalised();
    matching
        .iter()
        .find(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| p.normalised().variant == want.variant)
        })
        .or(matching.first())
        .copied()
}

struct Planner<'a> {
    source: &'a dyn ImageSource,
    format: Option<ManifestFormat>,
    plan: Plan,
    copied: Vec<CopiedManifest>,
}

impl Planner<'_> {
    async fn fetch_child(&self, d: &Descriptor) -> Result<RawManifest, CopyError> {
        let mut raw = self.source.manifest(Some(&d.digest)).await.map_err(|e| {
            CopyError::image(
                format!("{}: reading manifest {}", self.source.describe(), d.digest),
                e,
            )
        })?;
        // The parent descriptor's media type is the declared type of the child (M2).
        raw.media_type = d.media_type.clone();
        Ok(raw)
    }

    /// Plan one document; returns the bytes to write for it (converted or original).
    fn visit<'s>(
        &'s mut self,
        raw: RawManifest,
        depth: usize,
        platform: Option<Platform>,
        filter: Option<&'s [Platform]>,
    ) -> futures::future::BoxFuture<'s, Result<RawManifest, CopyError>> {
        Box::pin(async move {
            if depth > MAX_INDEX_DEPTH {
                return Err(CopyError::TooDeep(MAX_INDEX_DEPTH));
            }
            let parsed = raw.parse().map_err(|e| {
                CopyError::image(
                    format!("{}: manifest {}", self.source.describe(), raw.digest),
                    e,
                )
            })?;
            let out = match &parsed {
                Manifest::Image(m) => {
                    self.plan.add_blob(&m.config);
                    for l in &m.layers {
                        self.plan.add_blob(l);
                    }
                    self.converted(&parsed, &raw, &|_| None)?
                }
                Manifest::Index(i) => {
                    let mut map: HashMap<Digest, Descriptor> = HashMap::new();
                    let mut kept = Vec::new();
                    for child in &i.manifests {
                        if let Some(wanted) = filter {
                            let ok = child
                                .platform
                                .as_ref()
                                .is_some_and(|p| wanted.iter().any(|w| w.matches(p)));
                            if !ok {
                                continue;
                            }
                        }
                        if !child.media_type.is_manifest() {
                            // Artifacts and other documents in an index are copied as blobs.
                            self.plan.add_blob(child);
                            kept.push(child.clone());
                            continue;
                        }
                        let child_raw = self.fetch_child(child).await?;
                        let written = self
                            .visit(child_raw, depth + 1, child.platform.clone(), None)
                            .await?;
                        let mut new = child.clone();
                        new.digest = written.digest.clone();
                        new.size = written.bytes.len() as i64;
                        new.media_type = written.descriptor().media_type;
                        map.insert(child.digest.clone(), new);
                        kept.push(child.clone());
                    }
                    let filtered;
                    let effective = if kept.len() != i.manifests.len() {
                        let mut idx = i.clone();
                        idx.manifests = kept;
                        filtered = Manifest::Index(idx);
                        &filtered
                    } else {
                        &parsed
                    };
                    let lookup = |d: &Descriptor| map.get(&d.digest).cloned();
                    if std::ptr::eq(effective, &parsed) {
                        self.converted(effective, &raw, &lookup)?
                    } else {
                        // The entry list changed: always re-serialise (in the requested format
                        // or the source's own).
                        let format = self.format.unwrap_or(if i.media_type().is_docker() {
                            ManifestFormat::V2s2
                        } else {
                            ManifestFormat::Oci
                        });
                        let bytes = match convert_manifest(effective, format, &lookup)? {
                            Some(b) => b,
                            None => match effective {
                                Manifest::Index(idx) => idx.to_bytes(),
                                Manifest::Image(m) => m.to_bytes(),
                            },
                        };
                        RawManifest::new(bytes, effective.media_type())
                    }
                }
            };
            let out_mt = out.descriptor().media_type;
            self.plan.manifests.push(out.clone());
            self.copied.push(CopiedManifest {
                digest: out.digest.clone(),
                media_type: out_mt,
                platform: platform.map(|p| p.to_string()),
            });
            Ok(out)
        })
    }

    fn converted(
        &self,
        parsed: &Manifest,
        raw: &RawManifest,
        lookup: &dyn Fn(&Descriptor) -> Option<Descriptor>,
    ) -> Result<RawManifest, CopyError> {
        let Some(format) = self.format else {
            // No conversion: children keep their digests, so the bytes are kept exactly.
            return Ok(raw.clone());
        };
        Ok(match convert_manifest(parsed, format, lookup)? {
            Some(bytes) => {
                let mt = match Manifest::parse(&bytes, None) {
                    Ok(m) => m.media_type(),
                    Err(_) => raw.media_type.clone(),
                };
                RawManifest::new(bytes, mt)
            }
            None => raw.clone(),
        })
    }
}

/// Copy the image or index `source` points at into `sink`.
///
/// On failure the other blob transfers are stopped and the sink is abandoned
/// ([`ImageSink::abandon`]) before the error is returned: no temp file or staging directory of
/// this copy is left, and no manifest was written after the failure. A caller that drops the
/// returned future instead (Ctrl-C) should call `sink.abandon()` itself.
pub async fn copy_image(
    source: &dyn ImageSource,
    sink: &dyn ImageSink,
    options: &CopyOptions,
) -> Result<CopyReport, CopyError> {
    let result = copy_image_inner(source, sink, options).await;
    if result.is_err() {
        sink.abandon().await;
    }
    result
}

async fn copy_image_inner(
    source: &dyn ImageSource,
    sink: &dyn ImageSink,
    options: &CopyOptions,
) -> Result<CopyReport, CopyError> {
    let top = source
        .manifest(None)
        .await
        .map_err(|e| CopyError::image(format!("{}: reading manifest", source.describe()), e))?;
    if let Some(expected) = &options.expected_digest
        && &top.digest != expected
    {
        return Err(CopyError::image(
            format!(
                "{}: the reference's digest does not match the content",
                source.describe()
            ),
            ImageError::DigestMismatch {
                expected: expected.clone(),
                actual: top.digest.clone(),
            },
        ));
    }
    let parsed = top.parse().map_err(|e| {
        CopyError::image(format!("{}: manifest {}", source.describe(), top.digest), e)
    })?;

    let mut planner = Planner {
        source,
        format: options.format,
        plan: Plan::default(),
        copied: Vec::new(),
    };
    let final_top = match (&parsed, &options.selection) {
        (Manifest::Index(_), Selection::All) => planner.visit(top.clone(), 0, None, None).await?,
        (Manifest::Index(i), Selection::Host) => {
            single(
                &mut planner,
                i.manifests.as_slice(),
                &Platform::host(),
                source,
            )
            .await?
        }
        (Manifest::Index(i), Selection::Platforms(ps)) if ps.len() == 1 => {
            single(&mut planner, i.manifests.as_slice(), &ps[0], source).await?
        }
        (Manifest::Index(i), Selection::Platforms(ps)) => {
            for p in ps {
                if select_platform(&i.manifests, p).is_none() {
                    return Err(CopyError::PlatformNotFound {
                        source_name: source.describe(),
                        wanted: Box::new(p.clone()),
                        available: Descriptor::platform_list(&i.manifests),
                    });
                }
            }
            planner
                .visit(top.clone(), 0, None, Some(ps.as_slice()))
                .await?
        }
        (Manifest::Image(m), Selection::Platforms(ps)) => {
            for p in ps {
                check_single_platform(source, m, p).await?;
            }
            planner.visit(top.clone(), 0, None, None).await?
        }
        (Manifest::Image(_), _) => planner.visit(top.clone(), 0, None, None).await?,
    };
    if !sink.supports_index() && final_top.descriptor().media_type.is_index() {
        return Err(CopyError::Unsupported {
            what: format!(
                "{} holds a single image; {} is an index (choose one image with --platform)",
                sink.describe(),
                source.describe()
            ),
        });
    }
    let mut plan = planner.plan;
    let copied = planner.copied;

    // Blobs: largest first so the long transfers start early.
    plan.blobs
        .sort_by(|a, b| b.size.cmp(&a.size).then(a.digest.cmp(&b.digest)));
    let origin = source.origin();
    let progress = options.progress.clone();
    let results: Vec<(bool, u64)> = futures::stream::iter(plan.blobs.iter().cloned())
        .map(|d| {
            let origin = origin.clone();
            let progress = progress.clone();
            async move {
                let size = d
                    .size_u64()
                    .map_err(|e| CopyError::image("descriptor", ImageError::Spec(e)))?;
                let present = sink.reuse_blob(&d, origin.as_ref()).await.map_err(|e| {
                    CopyError::image(
                        format!("{}: checking blob {}", sink.describe(), d.digest),
                        e,
                    )
                })?;
                if present {
                    if let Some(p) = &progress {
                        p.event(ProgressEvent::BlobSkipped {
                            digest: d.digest.clone(),
                            size,
                        });
                    }
                    return Ok::<_, CopyError>((false, 0));
                }
                if let Some(p) = &progress {
                    p.event(ProgressEvent::BlobStarted {
                        digest: d.digest.clone(),
                        size,
                    });
                }
                // The sink opens the blob from the source itself, so that it can re-open it
                // to send bytes again instead of keeping a copy (see `put_blob_from`).
                let counted;
                let from: &dyn ImageSource = match &progress {
                    Some(p) => {
                        counted = Counted {
                            inner: source,
                            progress: p.clone(),
                            reported: Arc::new(AtomicU64::new(0)),
                        };
                        &counted
                    }
                    None => source,
                };
                sink.put_blob_from(&d, from).await.map_err(|e| {
                    CopyError::image(
                        format!(
                            "copying blob {} from {} to {}",
                            d.digest,
                            source.describe(),
                            sink.describe()
                        ),
                        e,
                    )
                })?;
                if let Some(p) = &progress {
                    p.event(ProgressEvent::BlobDone {
                        digest: d.digest.clone(),
                    });
                }
                Ok((true, size))
            }
        })
        .buffer_unordered(options.concurrency.max(1))
        .try_collect()
        .await?;

    // Manifests: every child before the document that refers to it; the top one last.
    let mut written = HashSet::new();
    for raw in &plan.manifests {
        if raw.digest == final_top.digest || !written.insert(raw.digest.clone()) {
            continue;
        }
        put_manifest(sink, raw, None, &progress).await?;
    }
    put_manifest(sink, &final_top, options.tag.as_deref(), &progress).await?;
    sink.finish()
        .await
        .map_err(|e| CopyError::image(format!("{}: finishing", sink.describe()), e))?;

    let blobs_copied = results.iter().filter(|r| r.0).count();
    Ok(CopyReport {
        source: source.describe(),
        destination: sink.describe(),
        digest: final_top.digest.clone(),
        media_type: final_top.descriptor().media_type,
        manifests: copied,
        blobs_copied,
        blobs_skipped: results.len() - blobs_copied,
        bytes_copied: results.iter().map(|r| r.1).sum(),
    })
}

/// Refuse a single image asked for as `wanted` when its config says another platform (an
/// artifact, whose config is not an image config, has no platform to check).
pub async fn check_single_platform(
    source: &dyn ImageSource,
    manifest: &ImageManifest,
    wanted: &Platform,
) -> Result<(), CopyError> {
    if !manifest.config.media_type.is_image_config() {
        return Ok(());
    }
    let bytes = read_blob_bytes(source, &manifest.config, MAX_CONFIG_BYTES)
        .await
        .map_err(|e| {
            CopyError::image(
                format!(
                    "{}: reading config {}",
                    source.describe(),
                    manifest.config.digest
                ),
                e,
            )
        })?;
    let config = ImageConfig::parse(&bytes).map_err(|e| {
        CopyError::image(
            format!("{}: config {}", source.describe(), manifest.config.digest),
            ImageError::Spec(e),
        )
    })?;
    let actual = config.platform();
    if wanted.matches(&actual) {
        return Ok(());
    }
    Err(CopyError::PlatformMismatch {
        source_name: source.describe(),
        wanted: Box::new(wanted.clone()),
        actual: Box::new(actual),
    })
}

async fn single(
    planner: &mut Planner<'_>,
    entries: &[Descriptor],
    wanted: &Platform,
    source: &dyn ImageSource,
) -> Result<RawManifest, CopyError> {
    let chosen = select_platform(entries, wanted).ok_or_else(|| CopyError::PlatformNotFound {
        source_name: source.describe(),
        wanted: Box::new(wanted.clone()),
        available: Descriptor::platform_list(entries),
    })?;
    let raw = planner.fetch_child(chosen).await?;
    planner.visit(raw, 1, chosen.platform.clone(), None).await
}

async fn put_manifest(
    sink: &dyn ImageSink,
    raw: &RawManifest,
    tag: Option<&str>,
    progress: &Option<Arc<dyn Progress>>,
) -> Result<(), CopyError> {
    sink.put_manifest(raw, tag).await.map_err(|e| {
        CopyError::image(
            format!("{}: writing manifest {}", sink.describe(), raw.digest),
            e,
        )
    })?;
    if let Some(p) = progress {
        p.event(ProgressEvent::ManifestWritten {
            digest: raw.digest.clone(),
            tag: tag.map(str::to_string),
        });
    }
    Ok(())
}

/// A source whose blob streams report their bytes as they pass. One per blob: a sink that
/// opens the blob again (an upload resuming after a broken request) reads bytes that were
/// already reported, so only bytes past the furthest point any stream reached count.
struct Counted<'a> {
    inner: &'a dyn ImageSource,
    progress: Arc<dyn Progress>,
    /// The furthest offset reported, across every stream of this blob.
    reported: Arc<AtomicU64>,
}

#[async_trait::async_trait]
impl ImageSource for Counted<'_> {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    async fn manifest(&self, digest: Option<&Digest>) -> Result<RawManifest, ImageError> {
        self.inner.manifest(digest).await
    }
    async fn blob(&self, descriptor: &Descriptor) -> Result<BlobReader, ImageError> {
        let inner = self.inner.blob(descriptor).await?;
        Ok(Box::pin(Counting {
            inner,
            digest: descriptor.digest.clone(),
            progress: self.progress.clone(),
            position: 0,
            reported: self.reported.clone(),
        }))
    }
    fn origin(&self) -> Option<strata_image::BlobOrigin> {
        self.inner.origin()
    }
    fn blob_replay(&self) -> strata_image::BlobReplay {
        self.inner.blob_replay()
    }
}

/// Reports bytes as they pass, the first time they pass.
struct Counting {
    inner: BlobReader,
    digest: Digest,
    progress: Arc<dyn Progress>,
    /// Bytes this stream has read.
    position: u64,
    reported: Arc<AtomicU64>,
}

impl AsyncRead for Counting {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = self.inner.as_mut().poll_read(cx, buf);
        self.position += (buf.filled().len() - before) as u64;
        let previous = self.reported.fetch_max(self.position, Ordering::Relaxed);
        if self.position > previous {
            self.progress.event(ProgressEvent::BlobBytes {
                digest: self.digest.clone(),
                bytes: self.position - previous,
            });
        }
        r
    }
}
