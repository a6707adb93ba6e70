//! What a build produced (serializable for `--format json`).

use std::path::PathBuf;

use serde::Serialize;
use strata_spec::{DiffId, Digest, MediaType, Platform};

use crate::progress::LayerOrigin;

/// One layer of a built image.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BuiltLayer {
    pub digest: Digest,
    pub diff_id: DiffId,
    pub media_type: MediaType,
    /// Stored (compressed) size.
    pub size: u64,
    pub origin: LayerOrigin,
}

/// The image built for one platform.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BuiltImage {
    pub platform: Platform,
    /// The Containerfile this platform was built from (its path as given, or `<stdin>`).
    pub containerfile: String,
    pub manifest: Digest,
    pub manifest_size: u64,
    pub config: Digest,
    pub layers: Vec<BuiltLayer>,
}

/// The result of [`crate::build`]: the top-level document (an index, or the manifest when
/// one platform was built without [`crate::IndexMode::Always`]) in `layout`, under `tags`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BuildResult {
    pub digest: Digest,
    pub media_type: MediaType,
    pub size: u64,
    pub layout: PathBuf,
    pub tags: Vec<String>,
    pub images: Vec<BuiltImage>,
}

impl BuildResult {
    /// What `--iidfile` receives: the top-level digest (`sha256:…`), which names the result
    /// in the layout (`oci:DIR@sha256:…`) and, after a push, in a registry.
    pub fn image_id(&self) -> String {
        self.digest.to_string()
    }
}
