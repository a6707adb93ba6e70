//! Image and index validation: go-containerregistry's `validate.Image` / `validate.Index`
//! checks, recomputed from the bytes an [`ImageSource`] hands out.
//!
//! For every manifest reachable from the source's top-level document:
//! - the manifest bytes hash to the digest and size of the descriptor that named them; they
//!   parse (no ambiguous documents), and their media type agrees with that descriptor (M2);
//! - indexes: every child is visited (nested indexes recursively, with a depth limit, cycle
//!   detection and a budget on the number of manifests, M8); an image child's config
//!   platform (os, architecture, variant, os.version, os.features) agrees with the child
//!   descriptor's `platform`;
//! - images: the config blob's digest and size; it parses as an image config with
//!   `rootfs.type == "layers"`; as many `rootfs.diff_ids` as layers (M7); every layer is
//!   streamed once: size (aborting at size + 1) and digest of the stored bytes, then
//!   decompressed by its media type (gzip, zstd, uncompressed) to the DiffId, which must
//!   equal the config's; its tar entries are read with [`strata_archive::TarReader`]
//!   (ambiguous or malformed archives are problems) and must not repeat a path (image-spec:
//!   layers MUST NOT contain duplicate paths; compared after normalising `./`, `/` and a
//!   trailing `/`);
//! - artifacts (an `artifactType`, or a config that is not an image config): blobs are
//!   checked for digest and size only.
//!
//! Every problem found is reported, each with the digest at fault and where it was met; a
//! blob shared by several images is read once. Memory stays flat whatever the layer size:
//! layers stream through a blocking thread; only manifests and configs (capped at
//! [`strata_spec::MAX_MANIFEST_BYTES`] / [`strata_spec::MAX_CONFIG_BYTES`]) are held.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Read};
use std::sync::{Arc, Mutex, PoisonError};

use strata_archive::{ArchiveError, HashingReader, TarReader, decompress};
use strata_spec::{
    Algorithm, DiffId, Digest, DigestHasher, ImageConfig, ImageManifest, LayerCompression,
    MAX_CONFIG_BYTES, Manifest, MediaType, Platform,
};
use tokio::io::AsyncReadExt;
use tokio_util::io::SyncIoBridge;

use crate::{BlobReader, ImageError, ImageSource, RawManifest};
use strata_spec::Descriptor;

/// Default nesting of indexes accepted (an index of indexes of images is depth 2).
pub const DEFAULT_MAX_DEPTH: usize = 8;
/// Default number of distinct manifests visited before giving up (M8: a DAG of indexes
/// pointing at each other must not make validation unbounded).
pub const DEFAULT_MAX_MANIFESTS: usize = 10_000;
/// Duplicate paths reported per layer; more are counted in one problem.
const MAX_DUPLICATES_REPORTED: usize = 10;
/// Read buffer for layer streams.
const STREAM_BUFFER_BYTES: usize = 256 * 1024;

/// How much of each layer to check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LayerCheck {
    /// Digest, size, DiffId and tar contents (duplicate paths).
    #[default]
    Full,
    /// Digest and size of the stored bytes only (no decompression).
    DigestOnly,
}

/// Limits and switches of [`validate`].
#[derive(Debug, Clone)]
pub struct ValidateOptions {
    pub layers: LayerCheck,
    /// Index nesting limit (M8).
    pub max_depth: usize,
    /// Distinct manifests visited at most (M8).
    pub max_manifests: usize,
    /// Cap on a layer's uncompressed size (decompression bombs); `None` = no cap.
    pub max_uncompressed: Option<u64>,
    /// Layers streamed at the same time.
    pub concurrency: usize,
}

impl Default for ValidateOptions {
    fn default() -> Self {
        ValidateOptions {
            layers: LayerCheck::Full,
            max_depth: DEFAULT_MAX_DEPTH,
            max_manifests: DEFAULT_MAX_MANIFESTS,
            max_uncompressed: None,
            concurrency: std::thread::available_parallelism().map_or(2, |n| n.get().min(4)),
        }
    }
}

/// What is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProblemKind {
    /// The bytes hash to something else than the descriptor says.
    DigestMismatch { actual: Digest },
    /// The descriptor's size is wrong; `at_least` when reading stopped at size + 1.
    SizeMismatch {
        expected: u64,
        actual: u64,
        at_least: bool,
    },
    /// The source could not deliver the blob or manifest.
    Unreadable { error: String },
    /// A manifest, index or config that does not parse (or is ambiguous).
    Malformed { error: String },
    /// A document's media type disagrees with the descriptor that names it.
    MediaTypeMismatch {
        descriptor: MediaType,
        document: MediaType,
    },
    /// A layer media type strata cannot decompress.
    UnsupportedLayerMediaType { media_type: MediaType },
    /// `rootfs.type` is not `layers`.
    RootFsType { found: String },
    /// `rootfs.diff_ids` and `layers` differ in number.
    DiffIdCount { layers: usize, diff_ids: usize },
    /// The uncompressed layer does not hash to the config's DiffId.
    DiffIdMismatch {
        layer: usize,
        config: DiffId,
        actual: DiffId,
    },
    /// The layer cannot be decompressed or is not a valid tar.
    LayerUnreadable { error: String },
    /// The same path appears twice in one layer.
    DuplicatePath { path: String },
    /// More duplicate paths than reported.
    MoreDuplicates { count: usize },
    /// An index child's descriptor platform disagrees with its config.
    PlatformMismatch {
        field: &'static str,
        descriptor: String,
        config: String,
    },
    /// Indexes nest deeper than the limit.
    DepthExceeded { limit: usize },
    /// More manifests than the budget.
    TooManyManifests { limit: usize },
    /// An index contains itself, directly or not.
    Cycle,
}

/// One problem: what, which digest, and where it was met.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The blob or manifest at fault.
    pub digest: Digest,
    /// Where: `index sha256:… > manifests[1] > layers[0]`.
    pub location: String,
    pub kind: ProblemKind,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): ", self.digest, self.location)?;
        match &self.kind {
            ProblemKind::DigestMismatch { actual } => write!(f, "content hashes to {actual}"),
            ProblemKind::SizeMismatch {
                expected,
                actual,
                at_least,
            } => write!(
                f,
                "descriptor size {expected}, content has {}{actual} bytes",
                if *at_least { "at least " } else { "" }
            ),
            ProblemKind::Unreadable { error } => write!(f, "cannot be read: {error}"),
            ProblemKind::Malformed { error } => write!(f, "malformed: {error}"),
            ProblemKind::MediaTypeMismatch {
                descriptor,
                document,
            } => write!(
                f,
                "descriptor media type {descriptor}, document media type {document}"
            ),
            ProblemKind::UnsupportedLayerMediaType { media_type } => {
                write!(f, "unsupported layer media type {media_type}")
            }
            ProblemKind::RootFsType { found } => {
                write!(f, "rootfs.type is {found:?}, not \"layers\"")
            }
            ProblemKind::DiffIdCount { layers, diff_ids } => {
                write!(f, "{layers} layers but {diff_ids} rootfs.diff_ids")
            }
            ProblemKind::DiffIdMismatch {
                layer,
                config,
                actual,
            } => write!(
                f,
                "layer {layer}: config diff_id {config}, uncompressed content hashes to {actual}"
            ),
            ProblemKind::LayerUnreadable { error } => write!(f, "layer unreadable: {error}"),
            ProblemKind::DuplicatePath { path } => write!(f, "duplicate path {path:?} in layer"),
            ProblemKind::MoreDuplicates { count } => {
                write!(f, "{count} more duplicate paths in layer")
            }
            ProblemKind::PlatformMismatch {
                field,
                descriptor,
                config,
            } => write!(
                f,
                "platform {field}: index descriptor says {descriptor:?}, config says {config:?}"
            ),
            ProblemKind::DepthExceeded { limit } => {
                write!(f, "indexes nested deeper than {limit}")
            }
            ProblemKind::TooManyManifests { limit } => {
                write!(f, "more than {limit} manifests")
            }
            ProblemKind::Cycle => write!(f, "index refers to itself"),
        }
    }
}

/// Everything [`validate`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ValidationReport {
    pub problems: Vec<Problem>,
    /// Manifests and indexes checked.
    pub manifests: usize,
    /// Distinct blobs (configs, layers) read.
    pub blobs: usize,
    /// Stored bytes read.
    pub bytes: u64,
    /// Things not checked, with why (foreign layers the source does not hold).
    pub skipped: Vec<String>,
}

impl ValidationReport {
    pub fn is_valid(&self) -> bool {
        self.problems.is_empty()
    }
    /// The report, or [`ImageError::Invalid`] when there is any problem.
    pub fn into_result(self) -> Result<ValidationReport, ImageError> {
        if self.is_valid() {
            Ok(self)
        } else {
            Err(ImageError::Invalid {
                report: Box::new(self),
            })
        }
    }
    /// Problems of one kind (tests, callers that branch).
    pub fn problems_for(&self, digest: &Digest) -> Vec<&Problem> {
        self.problems
            .iter()
            .filter(|p| &p.digest == digest)
            .collect()
    }
}

impl fmt::Display for ValidationReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.problems.is_empty() {
            return write!(
                f,
                "valid: {} manifests, {} blobs, {} bytes",
                self.manifests, self.blobs, self.bytes
            );
        }
        write!(f, "{} problems:", self.problems.len())?;
        for p in &self.problems {
            write!(f, "\n  {p}")?;
        }
        Ok(())
    }
}

/// Validate the image or index `source` names; problems are in the report. Errors only when
/// the source cannot hand out its top-level document at all.
pub async fn validate(
    source: &dyn ImageSource,
    options: &ValidateOptions,
) -> Result<ValidationReport, ImageError> {
    let top = source.manifest(None).await?;
    let mut v = Validator {
        source,
        options,
        report: ValidationReport::default(),
        visited: HashMap::new(),
        stack: Vec::new(),
        blobs: HashMap::new(),
    };
    let digest = top.digest.clone();
    let declared = top.media_type.clone();
    let visited = v.manifest(top, digest.clone(), "").await;
    v.against_descriptor(&digest, None, &declared, &visited, "top-level document");
    Ok(v.report)
}

/// [`validate`], failing with [`ImageError::Invalid`] on any problem.
pub async fn validate_strict(
    source: &dyn ImageSource,
    options: &ValidateOptions,
) -> Result<ValidationReport, ImageError> {
    validate(source, options).await?.into_result()
}

/// What a validated manifest is, for the other descriptors naming it.
#[derive(Debug, Clone, Default)]
struct Visited {
    size: u64,
    /// `None` when it did not parse.
    is_index: Option<bool>,
    own_media_type: Option<MediaType>,
    /// The config's platform (images).
    platform: Option<Platform>,
}

/// What a layer turned out to be (shared by the images that use it).
#[derive(Debug, Clone)]
struct LayerFacts {
    diff_id: Option<DiffId>,
}

struct Validator<'a> {
    source: &'a dyn ImageSource,
    options: &'a ValidateOptions,
    report: ValidationReport,
    /// Manifests already validated.
    visited: HashMap<Digest, Visited>,
    /// Indexes on the current path (cycle detection).
    stack: Vec<Digest>,
    /// Blobs already read → facts (keyed by digest and declared size).
    blobs: HashMap<(Digest, i64), Option<LayerFacts>>,
}

fn child_location(parent: &str, part: &str) -> String {
    if parent.is_empty() {
        part.to_string()
    } else {
        format!("{parent} > {part}")
    }
}

impl<'a> Validator<'a> {
    fn problem(&mut self, digest: &Digest, location: &str, kind: ProblemKind) {
        self.report.problems.push(Problem {
            digest: digest.clone(),
            location: location.to_string(),
            kind,
        });
    }

    /// Validate one manifest or index (content only: what the naming descriptor says is
    /// checked by [`Self::against_descriptor`], once per descriptor).
    fn manifest<'s>(
        &'s mut self,
        raw: RawManifest,
        digest: Digest,
        location: &'s str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Visited> + Send + 's>>
    where
        'a: 's,
    {
        Box::pin(async move {
            let mut visited = Visited {
                size: raw.bytes.len() as u64,
                ..Visited::default()
            };
            let actual = digest.same_algorithm_of(&raw.bytes);
            if actual != digest {
                self.problem(&digest, location, ProblemKind::DigestMismatch { actual });
            }
            // Parsed on its own terms; its media type is compared with the descriptor's
            // separately, so a mislabelled document is still checked inside.
            let parsed = match Manifest::parse(&raw.bytes, None) {
                Ok(m) => m,
                Err(e) => {
                    self.problem(
                        &digest,
                        location,
                        ProblemKind::Malformed {
                            error: e.to_string(),
                        },
                    );
                    return visited;
                }
            };
            visited.own_media_type = match &parsed {
                Manifest::Index(i) => i.media_type.clone(),
                Manifest::Image(m) => m.media_type.clone(),
            };
            visited.is_index = Some(matches!(parsed, Manifest::Index(_)));
            self.report.manifests += 1;
            match parsed {
                Manifest::Index(index) => {
                    let here = if location.is_empty() {
                        format!("index {digest}")
                    } else {
                        location.to_string()
                    };
                    self.stack.push(digest.clone());
                    for (i, child) in index.manifests.iter().enumerate() {
                        let loc = child_location(&here, &format!("manifests[{i}]"));
                        self.child(child, &loc).await;
                    }
                    self.stack.pop();
                }
                Manifest::Image(manifest) => {
                    let here = if location.is_empty() {
                        format!("manifest {digest}")
                    } else {
                        location.to_string()
                    };
                    visited.platform = self.image(&manifest, &here).await;
                }
            }
            visited
        })
    }

    /// A manifest against the descriptor (or transport media type) naming it: size, media
    /// type (M2), kind.
    fn against_descriptor(
        &mut self,
        digest: &Digest,
        size: Option<i64>,
        declared: &MediaType,
        visited: &Visited,
        location: &str,
    ) {
        if let Some(size) = size
            && size != visited.size as i64
        {
            self.problem(
                digest,
                location,
                ProblemKind::SizeMismatch {
                    expected: size.max(0) as u64,
                    actual: visited.size,
                    at_least: false,
                },
            );
        }
        let Some(is_index) = visited.is_index else {
            return;
        };
        let generic = matches!(
            declared.as_str(),
            "" | "application/json" | "application/octet-stream"
        );
        if generic {
            return;
        }
        let kind_ok = if is_index {
            declared.is_index()
        } else {
            declared.is_image_manifest()
        };
        let own_ok = visited
            .own_media_type
            .as_ref()
            .is_none_or(|own| own == declared);
        if !kind_ok || !own_ok {
            let document = visited.own_media_type.clone().unwrap_or_else(|| {
                MediaType::new(if is_index {
                    "(an index without mediaType)"
                } else {
                    "(an image manifest without mediaType)"
                })
            });
            self.problem(
                digest,
                location,
                ProblemKind::MediaTypeMismatch {
                    descriptor: declared.clone(),
                    document,
                },
            );
        }
    }

    async fn child(&mut self, child: &Descriptor, location: &str) {
        let mt = &child.media_type;
        if !mt.is_manifest() {
            // Any other blob in an index (ggcr's #819 case): digest and size only.
            self.blob(child, location).await;
            return;
        }
        if self.stack.contains(&child.digest) {
            self.problem(&child.digest, location, ProblemKind::Cycle);
            return;
        }
        if self.stack.len() >= self.options.max_depth {
            self.problem(
                &child.digest,
                location,
                ProblemKind::DepthExceeded {
                    limit: self.options.max_depth,
                },
            );
            return;
        }
        let visited = match self.visited.get(&child.digest) {
            Some(v) => v.clone(),
            None => {
                if self.visited.len() >= self.options.max_manifests {
                    self.problem(
                        &child.digest,
                        location,
                        ProblemKind::TooManyManifests {
                            limit: self.options.max_manifests,
                        },
                    );
                    return;
                }
                let raw = match self.source.manifest(Some(&child.digest)).await {
                    Ok(raw) => raw,
                    Err(e) => {
                        let kind = match e {
                            ImageError::DigestMismatch { actual, .. } => {
                                ProblemKind::DigestMismatch { actual }
                            }
                            e => ProblemKind::Unreadable {
                                error: error_chain(&e),
                            },
                        };
                        self.problem(&child.digest, location, kind);
                        return;
                    }
                };
                // Marked before descending: a lying source cannot make it loop.
                self.visited
                    .insert(child.digest.clone(), Visited::default());
                let visited = self.manifest(raw, child.digest.clone(), location).await;
                self.visited.insert(child.digest.clone(), visited.clone());
                visited
            }
        };
        self.against_descriptor(
            &child.digest,
            Some(child.size),
            &child.media_type,
            &visited,
            location,
        );
        if let (Some(want), Some(got)) = (&child.platform, &visited.platform) {
            self.platform(&child.digest, location, want, got);
        }
    }

    fn platform(&mut self, digest: &Digest, location: &str, want: &Platform, got: &Platform) {
        let w = want.normalised();
        let g = got.normalised();
        let fields: [(&'static str, String, String); 5] = [
            ("os", w.os.clone(), g.os.clone()),
            (
                "architecture",
                w.architecture.clone(),
                g.architecture.clone(),
            ),
            (
                "variant",
                w.variant.clone().unwrap_or_default(),
                g.variant.clone().unwrap_or_default(),
            ),
            (
                "os.version",
                w.os_version.clone().unwrap_or_default(),
                g.os_version.clone().unwrap_or_default(),
            ),
            (
                "os.features",
                w.os_features.join(","),
                g.os_features.join(","),
            ),
        ];
        for (field, descriptor, config) in fields {
            if descriptor != config {
                self.problem(
                    digest,
                    location,
                    ProblemKind::PlatformMismatch {
                        field,
                        descriptor,
                        config,
                    },
                );
            }
        }
    }

    /// An image manifest; returns its config's platform.
    async fn image(&mut self, manifest: &ImageManifest, location: &str) -> Option<Platform> {
        let config_desc = &manifest.config;
        let config_loc = child_location(location, "config");
        let is_image_config = config_desc.media_type == MediaType::OCI_CONFIG
            || config_desc.media_type == MediaType::DOCKER_CONFIG;
        let artifact = manifest.artifact_type.is_some() || !is_image_config;
        let config = if artifact {
            self.blob(config_desc, &config_loc).await;
            None
        } else {
            self.config(config_desc, &config_loc).await
        };
        if let Some(config) = &config {
            if config.rootfs.kind != "layers" {
                self.problem(
                    &config_desc.digest,
                    &config_loc,
                    ProblemKind::RootFsType {
                        found: config.rootfs.kind.clone(),
                    },
                );
            }
            if config.rootfs.diff_ids.len() != manifest.layers.len() {
                self.problem(
                    &config_desc.digest,
                    &config_loc,
                    ProblemKind::DiffIdCount {
                        layers: manifest.layers.len(),
                        diff_ids: config.rootfs.diff_ids.len(),
                    },
                );
            }
        }
        // Layers, a few at a time.
        let mut pending = Vec::new();
        for (i, layer) in manifest.layers.iter().enumerate() {
            let loc = child_location(location, &format!("layers[{i}]"));
            let key = (layer.digest.clone(), layer.size);
            if let Some(facts) = self.blobs.get(&key).cloned() {
                pending.push((i, layer, loc, Task::Done(facts)));
                continue;
            }
            let check = if artifact || self.options.layers == LayerCheck::DigestOnly {
                None
            } else {
                match layer.media_type.layer_compression() {
                    Some(c) => Some(c),
                    None => {
                        self.problem(
                            &layer.digest,
                            &loc,
                            ProblemKind::UnsupportedLayerMediaType {
                                media_type: layer.media_type.clone(),
                            },
                        );
                        None
                    }
                }
            };
            let task = match self.start_blob(layer, &loc, check).await {
                Some(handle) => Task::Running(handle),
                None => Task::Done(None),
            };
            pending.push((i, layer, loc, task));
            // Bound the number of streams in flight.
            let running = pending
                .iter()
                .filter(|p| matches!(p.3, Task::Running(_)))
                .count();
            if running >= self.options.concurrency.max(1) {
                self.settle_one(&mut pending).await;
            }
        }
        while pending.iter().any(|p| matches!(p.3, Task::Running(_))) {
            self.settle_one(&mut pending).await;
        }
        for (i, layer, loc, task) in pending {
            let Task::Done(Some(facts)) = task else {
                continue;
            };
            if let (Some(config), Some(actual)) = (&config, &facts.diff_id)
                && let Some(expected) = config.rootfs.diff_ids.get(i)
                && expected != actual
            {
                self.problem(
                    &layer.digest,
                    &loc,
                    ProblemKind::DiffIdMismatch {
                        layer: i,
                        config: expected.clone(),
                        actual: actual.clone(),
                    },
                );
            }
        }
        config.map(|c| c.platform())
    }

    /// Finish the oldest running stream (in order, so results stay deterministic).
    async fn settle_one(&mut self, pending: &mut [(usize, &Descriptor, String, Task)]) {
        let Some(slot) = pending.iter_mut().find(|p| matches!(p.3, Task::Running(_))) else {
            return;
        };
        let Task::Running(handle) = std::mem::replace(&mut slot.3, Task::Done(None)) else {
            return;
        };
        let descriptor = slot.1;
        let location = slot.2.clone();
        let outcome = match handle.await {
            Ok(outcome) => outcome,
            Err(e) => StreamOutcome {
                problems: vec![ProblemKind::Unreadable {
                    error: format!("checking task failed: {e}"),
                }],
                facts: None,
                bytes: 0,
            },
        };
        self.report.bytes += outcome.bytes;
        for kind in outcome.problems {
            self.problem(&descriptor.digest, &location, kind);
        }
        self.blobs.insert(
            (descriptor.digest.clone(), descriptor.size),
            outcome.facts.clone(),
        );
        slot.3 = Task::Done(outcome.facts);
    }

    /// Start streaming a blob on a blocking thread; `None` when it could not be opened
    /// (reported here).
    async fn start_blob(
        &mut self,
        descriptor: &Descriptor,
        location: &str,
        decode: Option<LayerCompression>,
    ) -> Option<tokio::task::JoinHandle<StreamOutcome>> {
        let Ok(size) = descriptor.size_u64() else {
            self.problem(
                &descriptor.digest,
                location,
                ProblemKind::Malformed {
                    error: "negative size".into(),
                },
            );
            return None;
        };
        let stream = match self.source.blob(descriptor).await {
            Ok(s) => s,
            Err(e) => {
                if descriptor.media_type.is_nondistributable() && !descriptor.urls.is_empty() {
                    self.report.skipped.push(format!(
                        "{} ({location}): foreign layer not in the source: {}",
                        descriptor.digest,
                        error_chain(&e)
                    ));
                } else {
                    self.problem(
                        &descriptor.digest,
                        location,
                        ProblemKind::Unreadable {
                            error: error_chain(&e),
                        },
                    );
                }
                return None;
            }
        };
        self.report.blobs += 1;
        let expected = descriptor.digest.clone();
        let max_uncompressed = self.options.max_uncompressed;
        Some(tokio::task::spawn_blocking(move || {
            check_stream(stream, expected, size, decode, max_uncompressed)
        }))
    }

    /// A blob checked for digest and size only.
    async fn blob(&mut self, descriptor: &Descriptor, location: &str) {
        let key = (descriptor.digest.clone(), descriptor.size);
        if self.blobs.contains_key(&key) {
            return;
        }
        if let Some(handle) = self.start_blob(descriptor, location, None).await {
            let mut pending = [(0, descriptor, location.to_string(), Task::Running(handle))];
            self.settle_one(&mut pending).await;
        } else {
            self.blobs.insert(key, None);
        }
    }

    /// The config: digest, size, parse.
    async fn config(&mut self, descriptor: &Descriptor, location: &str) -> Option<ImageConfig> {
        let size = descriptor.size_u64().ok()?;
        if size > MAX_CONFIG_BYTES {
            self.problem(
                &descriptor.digest,
                location,
                ProblemKind::Malformed {
                    error: format!("config larger than {MAX_CONFIG_BYTES} bytes"),
                },
            );
            return None;
        }
        let mut stream = match self.source.blob(descriptor).await {
            Ok(s) => s,
            Err(e) => {
                self.problem(
                    &descriptor.digest,
                    location,
                    ProblemKind::Unreadable {
                        error: error_chain(&e),
                    },
                );
                return None;
            }
        };
        self.report.blobs += 1;
        let mut bytes = Vec::new();
        if let Err(e) = (&mut stream).take(size + 1).read_to_end(&mut bytes).await {
            self.problem(
                &descriptor.digest,
                location,
                ProblemKind::Unreadable {
                    error: e.to_string(),
                },
            );
            return None;
        }
        self.report.bytes += bytes.len() as u64;
        self.blobs
            .insert((descriptor.digest.clone(), descriptor.size), None);
        if bytes.len() as u64 != size {
            self.problem(
                &descriptor.digest,
                location,
                ProblemKind::SizeMismatch {
                    expected: size,
                    actual: bytes.len() as u64,
                    at_least: bytes.len() as u64 > size,
                },
            );
        }
        let actual = descriptor.digest.same_algorithm_of(&bytes);
        if actual != descriptor.digest {
            self.problem(
                &descriptor.digest,
                location,
                ProblemKind::DigestMismatch { actual },
            );
        }
        match ImageConfig::parse(&bytes) {
            Ok(c) => Some(c),
            Err(e) => {
                self.problem(
                    &descriptor.digest,
                    location,
                    ProblemKind::Malformed {
                        error: e.to_string(),
                    },
                );
                None
            }
        }
    }
}

enum Task {
    Running(tokio::task::JoinHandle<StreamOutcome>),
    Done(Option<LayerFacts>),
}

struct StreamOutcome {
    problems: Vec<ProblemKind>,
    facts: Option<LayerFacts>,
    bytes: u64,
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

/// The stored bytes: counted and hashed, read through a shared handle so they can be
/// drained after the decoder gave up.
struct Stored<R> {
    inner: R,
    hasher: DigestHasher,
    count: u64,
    limit: u64,
}

struct SharedStored<R>(Arc<Mutex<Stored<R>>>);

impl<R> Clone for SharedStored<R> {
    fn clone(&self) -> Self {
        SharedStored(Arc::clone(&self.0))
    }
}

impl<R: Read> Read for SharedStored<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut s = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if s.count > s.limit {
            return Ok(0);
        }
        // Never more than size + 1 bytes: an oversized blob is reported, not read on.
        let room = (s.limit + 1 - s.count).min(buf.len() as u64) as usize;
        let n = s.inner.read(&mut buf[..room])?;
        s.hasher.update(&buf[..n]);
        s.count += n as u64;
        Ok(n)
    }
}

/// Paths of one layer as 128-bit keyed hashes (flat memory; per-run keys make crafted
/// collisions impossible).
struct PathKeys {
    set: HashSet<u128>,
    keys: (RandomState, RandomState),
}

impl PathKeys {
    fn insert(&mut self, path: &[u8]) -> bool {
        let mut a = self.keys.0.build_hasher();
        let mut b = self.keys.1.build_hasher();
        a.write(path);
        b.write(path);
        self.set
            .insert((u128::from(a.finish()) << 64) | u128::from(b.finish()))
    }
}

/// `./a/b/`, `/a/b` and `a//b` are the same path.
fn normalise(path: &[u8]) -> Vec<u8> {
    let parts: Vec<&[u8]> = path
        .split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .collect();
    if parts.is_empty() {
        b".".to_vec()
    } else {
        parts.join(&b'/')
    }
}

/// Stream one blob: size and digest of the stored bytes; with `decode`, the DiffId and the
/// tar entries too. Runs on a blocking thread.
fn check_stream(
    stream: BlobReader,
    expected: Digest,
    size: u64,
    decode: Option<LayerCompression>,
    max_uncompressed: Option<u64>,
) -> StreamOutcome {
    let stored = SharedStored(Arc::new(Mutex::new(Stored {
        inner: io::BufReader::with_capacity(STREAM_BUFFER_BYTES, SyncIoBridge::new(stream)),
        hasher: DigestHasher::new(expected.algorithm()),
        count: 0,
        limit: size,
    })));
    let mut problems = Vec::new();
    let mut facts = None;
    if let Some(compression) = decode {
        match decode_layer(stored.clone(), compression, max_uncompressed) {
            Ok((diff_id, duplicates)) => {
                let more = duplicates.len().saturating_sub(MAX_DUPLICATES_REPORTED);
                for path in duplicates.into_iter().take(MAX_DUPLICATES_REPORTED) {
                    problems.push(ProblemKind::DuplicatePath { path });
                }
                if more > 0 {
                    problems.push(ProblemKind::MoreDuplicates { count: more });
                }
                facts = Some(LayerFacts {
                    diff_id: Some(diff_id),
                });
            }
            Err(error) => problems.push(ProblemKind::LayerUnreadable { error }),
        }
    }
    // Whatever the decoder left (or everything, without decoding) still counts.
    let mut drain = stored.clone();
    if let Err(e) = io::copy(&mut drain, &mut io::sink()) {
        problems.push(ProblemKind::Unreadable {
            error: e.to_string(),
        });
        return StreamOutcome {
            problems,
            facts: None,
            bytes: 0,
        };
    }
    let s = stored.0.lock().unwrap_or_else(PoisonError::into_inner);
    let count = s.count;
    let actual = s.hasher.clone().finish();
    if count != size {
        problems.insert(
            0,
            ProblemKind::SizeMismatch {
                expected: size,
                actual: count,
                at_least: count > size,
            },
        );
    } else if actual != expected {
        problems.insert(0, ProblemKind::DigestMismatch { actual });
    }
    StreamOutcome {
        problems,
        facts: facts.or(Some(LayerFacts { diff_id: None })),
        bytes: count,
    }
}

/// Decompress and read the tar: (DiffId, duplicate paths).
fn decode_layer<R: Read + Send + 'static>(
    stored: SharedStored<R>,
    compression: LayerCompression,
    max_uncompressed: Option<u64>,
) -> Result<(DiffId, Vec<String>), String> {
    let decoder = decompress(stored, compression).map_err(|e| e.to_string())?;
    let mut uncompressed = HashingReader::with_algorithm(decoder, Algorithm::Sha256);
    let mut duplicates = Vec::new();
    {
        let mut tar = TarReader::with_limit(&mut uncompressed, max_uncompressed);
        let mut seen = PathKeys {
            set: HashSet::new(),
            keys: (RandomState::new(), RandomState::new()),
        };
        let listed: Result<(), ArchiveError> = (|| {
            while let Some(entry) = tar.next_entry()? {
                let path = normalise(&entry.path);
                if !seen.insert(&path) {
                    duplicates.push(String::from_utf8_lossy(&path).into_owned());
                }
            }
            tar.finish()?;
            Ok(())
        })();
        if let Err(e) = listed {
            return Err(format!("not a valid layer tar: {}", error_chain(&e)));
        }
    }
    // The tar reader stopped at its end; the DiffId covers the whole stream.
    io::copy(&mut uncompressed, &mut io::sink()).map_err(|e| e.to_string())?;
    let (_, digest, _) = uncompressed.finish();
    Ok((DiffId(digest), duplicates))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_paths() {
        assert_eq!(normalise(b"./a/b/"), b"a/b");
        assert_eq!(normalise(b"/a//b"), b"a/b");
        assert_eq!(normalise(b"./"), b".");
        assert_eq!(normalise(b"a/../b"), b"a/../b");
    }
}
