use std::path::PathBuf;

use strata_image::ImageError;
use strata_spec::Digest;

/// Errors of local storage. Every variant names the path, digest or tag at fault.
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
    #[error("{path} is not a regular file (symlinks and special files are refused)")]
    NotRegular { path: PathBuf },
    #[error("{what} not found in {path}")]
    NotFound { path: PathBuf, what: String },
    #[error("blob {digest} not found in {path}")]
    BlobNotFound { path: PathBuf, digest: Digest },
    #[error("{path} holds several images ({tags}); name one with :TAG")]
    Ambiguous { path: PathBuf, tags: String },
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
    #[error("cannot find a home directory for the local store (set XDG_DATA_HOME or HOME)")]
    NoStorePath,
    #[error(transparent)]
    Image(#[from] ImageError),
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
}

impl From<StoreError> for ImageError {
    fn from(e: StoreError) -> ImageError {
        match e {
            StoreError::Image(i) => i,
            StoreError::NotFound { .. } | StoreError::BlobNotFound { .. } => ImageError::NotFound {
                what: e.to_string(),
            },
            other => ImageError::transport(other.to_string(), other),
        }
    }
}
