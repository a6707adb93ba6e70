use std::path::PathBuf;

use strata_spec::{DiffId, Digest, SpecError};

/// Errors of image sources, sinks and the checks on their content.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    #[error("{what} not found")]
    NotFound { what: String },
    #[error("digest mismatch for {expected}: content hashes to {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("size mismatch for {digest}: descriptor says {expected} bytes, got {actual}{more}")]
    SizeMismatch {
        digest: Digest,
        expected: u64,
        actual: u64,
        more: &'static str,
    },
    #[error("{what} is larger than the limit of {limit} bytes")]
    TooLarge { what: String, limit: u64 },
    #[error("invalid document {digest}")]
    Document {
        digest: Digest,
        #[source]
        source: SpecError,
    },
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("{0}")]
    Unsupported(String),
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// [`crate::validate::validate_strict`] found problems (all of them are in the report).
    #[error("image is not valid: {report}")]
    Invalid {
        report: Box<crate::validate::ValidationReport>,
    },
    /// A layer's uncompressed content does not hash to the config's `rootfs.diff_ids` entry.
    #[error(
        "layer {layer} ({digest}): uncompressed content hashes to {actual}, the config says {expected}"
    )]
    DiffIdMismatch {
        layer: usize,
        digest: Box<Digest>,
        expected: Box<DiffId>,
        actual: Box<DiffId>,
    },
    /// A layer could not be read or applied.
    #[error("{context}")]
    Archive {
        context: String,
        #[source]
        source: Box<strata_archive::ArchiveError>,
    },
    /// A bundle directory (unpack target, repack source, mount point) is not acceptable.
    #[error("{path}: {reason}")]
    Bundle { path: PathBuf, reason: String },
    /// Stopped on request (Ctrl-C); what was written has been removed.
    #[error("interrupted")]
    Interrupted,
    /// An error of a transport (registry, store) with its own error type.
    #[error("{context}")]
    Transport {
        context: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl ImageError {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        ImageError::Io {
            context: context.into(),
            source,
        }
    }
    pub fn transport(
        context: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        ImageError::Transport {
            context: context.into(),
            source: source.into(),
        }
    }
    /// True when the thing asked for does not exist (callers branch on this).
    pub fn is_not_found(&self) -> bool {
        matches!(self, ImageError::NotFound { .. })
    }
}
