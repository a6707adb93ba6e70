//! The build cache: step key → layer, content key → layer, kept beside the output layout
//! (`<layout>/.strata/build-cache/` by default) so the layers themselves are the layout's
//! blobs, shared with the images that use them.
//!
//! Keys are computed by strata alone from what a step really reads (RELIABILITY rule 3 /
//! M15): the parent step's key, the expanded instruction, the content hashes and metadata of
//! every file read, the build-wide settings that change layer bytes. Nothing a layer or an
//! image claims about itself (a DiffId, an "uncompressed digest") is ever a key; a base image
//! enters keys through the digest of its manifest, which strata computes from the bytes.
//!
//! - *step key* (`steps/<hex>.json`): the chain up to and including one instruction; a hit
//!   skips the step entirely.
//! - *content key* (`content/<hex>.json`): the exact list of tar entries a layer holds; two
//!   steps with different histories but the same entries (the same `COPY` on two
//!   architectures) produce one blob.
//!
//! An entry whose blob is no longer in the layout (removed by `gc`) is a miss, never an error.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use strata_spec::{Algorithm, DiffId, Digest, DigestHasher, MediaType};
use strata_store::OciLayout;

use crate::{BuildError, CachePolicy};

/// Bumped when the bytes strata writes for the same entries change (tar writer, defaults):
/// old cache entries then stop matching instead of mixing two writers' outputs.
pub(crate) const LAYER_FORMAT_VERSION: &str = "strata-layer-v2";
/// Largest cache entry file read (they are a few hundred bytes).
const MAX_ENTRY_BYTES: u64 = 64 * 1024;
const STEPS: &str = "steps";
const CONTENT: &str = "content";
const HASHES: &str = "hashes";

/// Hashes fields into a key: every field is tagged and length-prefixed, so no two different
/// field lists hash alike.
#[derive(Clone)]
pub(crate) struct KeyHasher(DigestHasher);

impl KeyHasher {
    pub(crate) fn new(kind: &str) -> Self {
        let mut k = KeyHasher(DigestHasher::new(Algorithm::Sha256));
        k.field("kind", kind.as_bytes());
        k
    }
    pub(crate) fn field(&mut self, name: &str, value: &[u8]) -> &mut Self {
        self.0.update(&(name.len() as u64).to_le_bytes());
        self.0.update(name.as_bytes());
        self.0.update(&(value.len() as u64).to_le_bytes());
        self.0.update(value);
        self
    }
    pub(crate) fn str(&mut self, name: &str, value: &str) -> &mut Self {
        self.field(name, value.as_bytes())
    }
    pub(crate) fn num(&mut self, name: &str, value: u64) -> &mut Self {
        self.field(name, &value.to_le_bytes())
    }
    pub(crate) fn finish(self) -> Digest {
        self.0.finish()
    }
}

/// A layer as the cache records it (OCI media type; converted at output for Docker format).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CachedLayer {
    pub digest: Digest,
    pub diff_id: DiffId,
    pub size: u64,
    pub media_type: MediaType,
}

#[derive(Debug, Serialize, Deserialize)]
struct EntryFile {
    version: String,
    layer: CachedLayer,
}

/// The cache of one build.
#[derive(Debug, Clone)]
pub(crate) struct BuildCache {
    dir: PathBuf,
    policy: CachePolicy,
}

impl BuildCache {
    pub(crate) fn new(dir: PathBuf, policy: CachePolicy) -> BuildCache {
        BuildCache { dir, policy }
    }

    fn entry_path(&self, kind: &str, key: &Digest) -> PathBuf {
        let hex = key.encoded();
        self.dir
            .join(kind)
            .join(&hex[..2])
            .join(format!("{hex}.json"))
    }

    fn lookup(&self, kind: &str, key: &Digest, layout: &OciLayout) -> Option<CachedLayer> {
        if self.policy == CachePolicy::NoCache {
            return None;
        }
        let path = self.entry_path(kind, key);
        let meta = fs::symlink_metadata(&path).ok()?;
        if !meta.is_file() || meta.len() > MAX_ENTRY_BYTES {
            return None;
        }
        let bytes = fs::read(&path).ok()?;
        let entry: EntryFile = serde_json::from_slice(&bytes).ok()?;
        if entry.version != LAYER_FORMAT_VERSION {
            return None;
        }
        if !layout.has_blob(&entry.layer.digest, Some(entry.layer.size)) {
            return None;
        }
        // Touch: `prune` by age keeps what is used.
        if let Ok(f) = fs::File::options().append(true).open(&path) {
            let _ = f.set_modified(SystemTime::now());
        }
        Some(entry.layer)
    }

    fn record(&self, kind: &str, key: &Digest, layer: &CachedLayer) -> Result<(), BuildError> {
        let path = self.entry_path(kind, key);
        let dir = path.parent().unwrap_or(&self.dir);
        fs::create_dir_all(dir)
            .map_err(|e| BuildError::io(dir, "cannot create cache directory", e))?;
        let bytes = serde_json::to_vec(&EntryFile {
            version: LAYER_FORMAT_VERSION.into(),
            layer: layer.clone(),
        })
        .map_err(|e| BuildError::Cache {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir)
            .map_err(|e| BuildError::io(dir, "cannot create cache entry", e))?;
        tmp.write_all(&bytes)
            .map_err(|e| BuildError::io(&path, "cannot write cache entry", e))?;
        tmp.persist(&path)
            .map_err(|e| BuildError::io(&path, "cannot write cache entry", e.error))?;
        Ok(())
    }

    pub(crate) fn lookup_step(&self, key: &Digest, layout: &OciLayout) -> Option<CachedLayer> {
        self.lookup(STEPS, key, layout)
    }
    pub(crate) fn record_step(&self, key: &Digest, layer: &CachedLayer) -> Result<(), BuildError> {
        self.record(STEPS, key, layer)
    }
    pub(crate) fn lookup_content(&self, key: &Digest, layout: &OciLayout) -> Option<CachedLayer> {
        self.lookup(CONTENT, key, layout)
    }
    pub(crate) fn record_content(
        &self,
        key: &Digest,
        layer: &CachedLayer,
    ) -> Result<(), BuildError> {
        self.record(CONTENT, key, layer)
    }

    /// Where the content-hash cache of the context at `context` lives.
    pub(crate) fn hash_cache_file(&self, context: &Path) -> PathBuf {
        let canonical = fs::canonicalize(context).unwrap_or_else(|_| context.to_path_buf());
        let id = Digest::sha256_of(canonical.as_os_str().as_encoded_bytes());
        self.dir
            .join(HASHES)
            .join(format!("{}.bin", &id.encoded()[..32]))
    }

    /// A scratch directory for this build's temporary files (same filesystem as the layout).
    pub(crate) fn temp_dir(&self) -> Result<tempfile::TempDir, BuildError> {
        let base = self.dir.join("tmp");
        fs::create_dir_all(&base)
            .map_err(|e| BuildError::io(&base, "cannot create directory", e))?;
        tempfile::Builder::new()
            .prefix("build-")
            .tempdir_in(&base)
            .map_err(|e| BuildError::io(&base, "cannot create temporary directory", e))
    }
}

/// The default cache directory of an output layout.
pub fn default_cache_dir(layout_root: &Path) -> PathBuf {
    layout_root.join(".strata").join("build-cache")
}

/// What [`prune_cache`] keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PruneKeep {
    /// Remove every entry and the context hash caches.
    #[default]
    Nothing,
    /// Keep entries used (hit or written) within this long.
    UsedWithin(Duration),
}

/// Options of [`prune_cache`].
#[derive(Debug, Clone, Default)]
pub struct PruneOptions {
    pub keep: PruneKeep,
    /// The layout the cache belongs to: entries whose blob it no longer holds are removed
    /// whatever `keep` says; its extracted layer directories and `RUN --mount=type=cache`
    /// directories are pruned by `keep` too (those in use by a running build are kept).
    pub layout: Option<PathBuf>,
}

/// What [`prune_cache`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PruneReport {
    pub entries_removed: usize,
    pub entries_kept: usize,
    pub files_removed: usize,
    /// Extracted layer directories (RUN's overlay lower dirs) removed.
    pub layer_dirs_removed: usize,
    /// `RUN --mount=type=cache` directories removed.
    pub cache_mounts_removed: usize,
}

/// Remove build cache entries. Layer blobs stay in the layout (they may be used by images);
/// the layout's own `gc` removes those no tag references.
pub fn prune_cache(cache_dir: &Path, options: &PruneOptions) -> Result<PruneReport, BuildError> {
    let mut report = PruneReport::default();
    let layout = match &options.layout {
        Some(p) => {
            Some(OciLayout::open(p).map_err(|e| BuildError::store("opening layout for prune", e))?)
        }
        None => None,
    };
    let now = SystemTime::now();
    for kind in [STEPS, CONTENT] {
        let base = cache_dir.join(kind);
        let Ok(shards) = fs::read_dir(&base) else {
            continue;
        };
        for shard in shards.flatten() {
            let Ok(files) = fs::read_dir(shard.path()) else {
                continue;
            };
            for f in files.flatten() {
                let path = f.path();
                let keep_by_age = match options.keep {
                    PruneKeep::Nothing => false,
                    PruneKeep::UsedWithin(d) => f
                        .metadata()
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| now.duration_since(t).ok())
                        .is_some_and(|age| age <= d),
                };
                let blob_present = match &layout {
                    None => true,
                    Some(l) => fs::read(&path)
                        .ok()
                        .and_then(|b| serde_json::from_slice::<EntryFile>(&b).ok())
                        .is_some_and(|e| l.has_blob(&e.layer.digest, Some(e.layer.size))),
                };
                if keep_by_age && blob_present {
                    report.entries_kept += 1;
                    continue;
                }
                fs::remove_file(&path)
                    .map_err(|e| BuildError::io(&path, "cannot remove cache entry", e))?;
                report.entries_removed += 1;
            }
            let _ = fs::remove_dir(shard.path());
        }
    }
    if let Some(root) = &options.layout {
        let keep = match options.keep {
            PruneKeep::Nothing => None,
            PruneKeep::UsedWithin(d) => Some(d),
        };
        report.layer_dirs_removed = crate::layerdirs::prune(root, keep);
        report.cache_mounts_removed = crate::runmount::prune(root, keep);
    }
    if options.keep == PruneKeep::Nothing {
        for dir in [HASHES, "tmp"] {
            let p = cache_dir.join(dir);
            if let Ok(entries) = fs::read_dir(&p) {
                for e in entries.flatten() {
                    let path = e.path();
                    let removed = if path.is_dir() {
                        fs::remove_dir_all(&path)
                    } else {
                        fs::remove_file(&path)
                    };
                    if removed.is_ok() {
                        report.files_removed += 1;
                    }
                }
            }
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_field_exact() {
        let mut a = KeyHasher::new("t");
        a.str("x", "ab").str("y", "c");
        let mut b = KeyHasher::new("t");
        b.str("x", "a").str("y", "bc");
        assert_ne!(a.finish(), b.finish());
    }

    #[test]
    fn entries_need_their_blob_and_respect_no_cache() {
        let dir = tempfile::tempdir().unwrap();
        let layout = OciLayout::create_or_open(&dir.path().join("layout")).unwrap();
        let blob = layout
            .write_blob_bytes(MediaType::OCI_LAYER, b"tar")
            .unwrap();
        let layer = CachedLayer {
            digest: blob.digest.clone(),
            diff_id: DiffId(blob.digest.clone()),
            size: 3,
            media_type: MediaType::new(MediaType::OCI_LAYER),
        };
        let cache = BuildCache::new(dir.path().join("cache"), CachePolicy::Use);
        let key = Digest::sha256_of(b"k");
        assert!(cache.lookup_step(&key, &layout).is_none());
        cache.record_step(&key, &layer).unwrap();
        assert_eq!(cache.lookup_step(&key, &layout), Some(layer.clone()));
        let no = BuildCache::new(dir.path().join("cache"), CachePolicy::NoCache);
        assert!(no.lookup_step(&key, &layout).is_none());
        // The blob gone (gc): a miss.
        std::fs::remove_file(layout.blob_path(&blob.digest)).unwrap();
        assert!(cache.lookup_step(&key, &layout).is_none());
        let report = prune_cache(
            &dir.path().join("cache"),
            &PruneOptions {
                keep: PruneKeep::UsedWithin(Duration::from_secs(3600)),
                layout: Some(dir.path().join("layout")),
            },
        )
        .unwrap();
        assert_eq!(report.entries_removed, 1);
    }
}
