use std::fmt;

use serde::{Deserialize, Serialize};

/// A media type string. Known values are associated constants; unknown ones are kept verbatim
/// (image-layout: unknown media types MUST NOT be an error where they are merely carried).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct MediaType(pub String);

macro_rules! media_types {
    ($($name:ident = $value:literal;)*) => {
        impl MediaType { $(pub const $name: &'static str = $value;)* }
    };
}

media_types! {
    OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json";
    OCI_INDEX = "application/vnd.oci.image.index.v1+json";
    OCI_CONFIG = "application/vnd.oci.image.config.v1+json";
    OCI_LAYER = "application/vnd.oci.image.layer.v1.tar";
    OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip";
    OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd";
    OCI_LAYER_NONDISTRIBUTABLE = "application/vnd.oci.image.layer.nondistributable.v1.tar";
    OCI_LAYER_NONDISTRIBUTABLE_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
    OCI_LAYER_NONDISTRIBUTABLE_ZSTD = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd";
    OCI_EMPTY = "application/vnd.oci.empty.v1+json";
    DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json";
    DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json";
    DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json";
    DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    DOCKER_LAYER_FOREIGN_GZIP = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
    DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json";
    DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws";
}

/// How a layer blob is compressed, judged from its media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerCompression {
    None,
    Gzip,
    Zstd,
}

impl MediaType {
    pub fn new(s: impl Into<String>) -> Self {
        MediaType(s.into())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// An OCI image manifest or Docker schema2 manifest.
    pub fn is_image_manifest(&self) -> bool {
        self.0 == Self::OCI_MANIFEST || self.0 == Self::DOCKER_MANIFEST
    }
    /// An OCI index or Docker manifest list.
    pub fn is_index(&self) -> bool {
        self.0 == Self::OCI_INDEX || self.0 == Self::DOCKER_MANIFEST_LIST
    }
    /// An OCI or Docker image config (not an artifact's config).
    pub fn is_image_config(&self) -> bool {
        self.0 == Self::OCI_CONFIG || self.0 == Self::DOCKER_CONFIG
    }
    /// Any manifest-like document that can be pushed to `/manifests/`.
    pub fn is_manifest(&self) -> bool {
        self.is_image_manifest() || self.is_index()
    }
    pub fn is_schema1(&self) -> bool {
        self.0 == Self::DOCKER_SCHEMA1 || self.0 == Self::DOCKER_SCHEMA1_SIGNED
    }
    pub fn is_docker(&self) -> bool {
        self.0.starts_with("application/vnd.docker.")
    }
    /// A layer media type strata knows how to read (OCI or Docker).
    pub fn layer_compression(&self) -> Option<LayerCompression> {
        let s = self.0.as_str();
        match s {
            Self::OCI_LAYER | Self::OCI_LAYER_NONDISTRIBUTABLE => Some(LayerCompression::None),
            Self::OCI_LAYER_GZIP
            | Self::OCI_LAYER_NONDISTRIBUTABLE_GZIP
            | Self::DOCKER_LAYER_GZIP
            | Self::DOCKER_LAYER_FOREIGN_GZIP => Some(LayerCompression::Gzip),
            Self::OCI_LAYER_ZSTD | Self::OCI_LAYER_NONDISTRIBUTABLE_ZSTD => {
                Some(LayerCompression::Zstd)
            }
            _ => None,
        }
    }
    /// True for layers that must not be pushed to a registry by default
    /// (foreign / nondistributable layers carry `urls` pointing elsewhere).
    pub fn is_nondistributable(&self) -> bool {
        self.0.contains("nondistributable") || self.0.contains(".foreign.")
    }
    /// The media type of the same layer in the OCI or Docker world (used by `--format`).
    pub fn layer_for_format(&self, docker: bool) -> MediaType {
        let compression = self.layer_compression();
        let s = match (docker, compression) {
            (true, Some(LayerCompression::Gzip)) => Self::DOCKER_LAYER_GZIP,
            (false, Some(LayerCompression::Gzip)) => Self::OCI_LAYER_GZIP,
            (false, Some(LayerCompression::None)) => Self::OCI_LAYER,
            (false, Some(LayerCompression::Zstd)) => Self::OCI_LAYER_ZSTD,
            _ => return self.clone(),
        };
        MediaType::new(s)
    }
}

impl fmt::Display for MediaType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("(none)")
        } else {
            f.write_str(&self.0)
        }
    }
}
impl fmt::Debug for MediaType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}
impl From<&str> for MediaType {
    fn from(s: &str) -> Self {
        MediaType(s.to_string())
    }
}
impl PartialEq<&str> for MediaType {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}
