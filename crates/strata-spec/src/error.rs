use crate::MediaType;

/// Everything that can be wrong with a document, digest, platform or reference string.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpecError {
    #[error("invalid digest {value:?}: {reason}")]
    InvalidDigest { value: String, reason: &'static str },
    #[error("invalid platform {value:?}: {reason}")]
    InvalidPlatform { value: String, reason: &'static str },
    #[error("invalid image reference {value:?}: {reason}")]
    InvalidReference { value: String, reason: String },
    #[error("malformed {what}: {source}")]
    MalformedJson {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "ambiguous document: it has both \"manifests\" (index) and \"config\"/\"layers\" (image manifest) fields"
    )]
    AmbiguousManifest,
    #[error("media type mismatch: document says {document}, {declared_by} says {declared}")]
    MediaTypeMismatch {
        document: MediaType,
        declared: MediaType,
        declared_by: &'static str,
    },
    #[error("unsupported manifest type {media_type}{hint}")]
    UnsupportedMediaType {
        media_type: MediaType,
        hint: &'static str,
    },
    #[error("unsupported schemaVersion {0} (only 2 is supported)")]
    UnsupportedSchemaVersion(i64),
    #[error("index has {count} entries, more than the limit of {limit}")]
    TooManyEntries { count: usize, limit: usize },
    #[error("invalid descriptor for {digest}: {reason}")]
    InvalidDescriptor {
        digest: String,
        reason: &'static str,
    },
}
