use std::path::PathBuf;

/// Every failure of this crate. Variants name the entry or path at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArchiveError {
    /// An I/O error while reading or writing a stream.
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// An I/O error on a path of the filesystem being read or written.
    #[error("{op} {path}")]
    Path {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A tar entry that cannot be extracted safely or is malformed.
    #[error("layer entry {entry:?}: {reason}")]
    Entry {
        entry: String,
        reason: String,
        #[source]
        source: Option<std::io::Error>,
    },
    /// A size limit was exceeded (decompression bomb, huge records).
    #[error("limit exceeded: {what} larger than {limit} bytes")]
    Limit { what: &'static str, limit: u64 },
    /// The unpack target is not acceptable (symlink, non-empty without force).
    #[error("unpack target {path}: {reason}")]
    Target { path: PathBuf, reason: String },
}

impl ArchiveError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        ArchiveError::Io {
            context: context.into(),
            source,
        }
    }
    pub(crate) fn entry(
        entry: &[u8],
        reason: impl Into<String>,
        source: Option<std::io::Error>,
    ) -> Self {
        ArchiveError::Entry {
            entry: String::from_utf8_lossy(entry).into_owned(),
            reason: reason.into(),
            source,
        }
    }
}

pub type Result<T, E = ArchiveError> = std::result::Result<T, E>;
