use std::path::PathBuf;

use strata_image::ImageError;
use strata_spec::Digest;

/// Errors of local storage. Every variant names the path, and where there is one the digest,
/// tag or archive entry at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("{path}: {context}")]
    Io {
        path: PathBuf,
        context: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not an OCI image layout (no oci-layout file)")]
    NotALayout { path: PathBuf },
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("{path}: {what} is invalid")]
    Document {
        path: PathBuf,
        what: String,
        #[source]
        source: strata_spec::SpecError,
    },
    #[error(
        "{path} is not a regular file inside its layout (symlinks and special files are refused)"
    )]
    NotRegular { path: PathBuf },
    #[error("{what} not found in {path}")]
    NotFound { path: PathBuf, what: String },
    #[error("blob {digest} not found in {path}")]
    BlobNotFound { path: PathBuf, digest: Digest },
    #[error("{path}: blob {expected} does not match its content, which hashes to {actual}")]
    DigestMismatch {
        path: PathBuf,
        expected: Digest,
        actual: Digest,
    },
    #[error("{path}: blob {digest} should be {expected} bytes, got {actual}{more}")]
    SizeMismatch {
        path: PathBuf,
        digest: Digest,
        expected: u64,
        actual: u64,
        more: &'static str,
    },
    #[error("{path} holds several images ({tags}); name one with :TAG")]
    Ambiguous { path: PathBuf, tags: String },
    #[error("{path}: invalid tag {tag:?} (allowed: letters, digits and -._:@+/, at most 512)")]
    InvalidTag { path: PathBuf, tag: String },
    #[error("{path}: {what} is larger than {limit} bytes")]
    TooLarge {
        path: PathBuf,
        what: String,
        limit: u64,
    },
    #[error("{path}: archive entry {entry:?} is unsafe: {reason}")]
    UnsafeEntry {
        path: PathBuf,
        entry: String,
        reason: &'static str,
    },
    #[error("{path}: {what}")]
    Unsupported { path: PathBuf, what: String },
    #[error("cannot find a home directory for the local store (set XDG_DATA_HOME or HOME)")]
    NoStorePath,
}

impl StoreError {
    pub(crate) fn io(
        path: impl Into<PathBuf>,
        context: &'static str,
        source: std::io::Error,
    ) -> Self {
        StoreError::Io {
            path: path.into(),
            context,
            source,
        }
    }

    /// True when the thing asked for (tag, blob, manifest) does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            StoreError::NotFound { .. } | StoreError::BlobNotFound { .. }
        )
    }
}

impl From<StoreError> for ImageError {
    fn from(e: StoreError) -> ImageError {
        match e {
            StoreError::NotFound { .. } | StoreError::BlobNotFound { .. } => ImageError::NotFound {
                what: e.to_string(),
            },
            // Callers branch on these two, so they keep their ImageError shape.
            StoreError::DigestMismatch {
                expected, actual, ..
            } => ImageError::DigestMismatch { expected, actual },
            StoreError::SizeMismatch {
                digest,
                expected,
                actual,
                more,
                ..
            } => ImageError::SizeMismatch {
                digest,
                expected,
                actual,
                more,
            },
            StoreError::TooLarge { path, what, limit } => ImageError::TooLarge {
                what: format!("{}: {what}", path.display()),
                limit,
            },
            other => ImageError::transport(other.to_string(), other),
        }
    }
}
