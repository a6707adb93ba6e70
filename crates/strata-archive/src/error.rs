use std::path::PathBuf;

/// Every failure of this crate. Variants name the entry, offset or path at fault.
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
    /// A tar entry that cannot be extracted safely, or written.
    #[error("layer entry {entry:?}: {reason}")]
    Entry {
        entry: String,
        reason: String,
        #[source]
        source: Option<std::io::Error>,
    },
    /// A hard link whose target is not in the tree extracted so far (a layer extracted on
    /// its own, as an overlay lower directory, has no lower layer's files to link to).
    #[error("layer entry {entry:?}: hard link target {target:?} not found inside the root")]
    HardLinkTarget { entry: String, target: String },
    /// An entry that only makes sense applied onto the lower layers (a hard link to one of
    /// their files, a whiteout under a directory reached through their symlink), met where
    /// a layer is extracted on its own (an overlay lower directory).
    #[error("layer entry {entry:?}: {reason}: the layer must be applied onto its lower layers")]
    NeedsLowerLayers { entry: String, reason: String },
    /// The tar stream itself is malformed or ambiguous at `offset`.
    #[error("malformed tar at byte {offset}: {reason}")]
    Tar { offset: u64, reason: String },
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

    /// Turn an `io::Error` back into the `ArchiveError` it carries (errors of this crate
    /// cross `Read` boundaries wrapped in `io::Error`), or wrap it with `context`.
    pub fn from_io(context: impl Into<String>, e: std::io::Error) -> Self {
        if e.get_ref().is_some_and(|inner| inner.is::<ArchiveError>()) {
            let kind = e.kind();
            return match e.into_inner().map(|inner| inner.downcast::<ArchiveError>()) {
                Some(Ok(inner)) => *inner,
                _ => ArchiveError::io(context, std::io::Error::from(kind)),
            };
        }
        ArchiveError::io(context, e)
    }

    /// Wrap into an `io::Error` (for `Read`/`Write` implementations); an `Io` variant gives
    /// back its source.
    pub fn into_io(self) -> std::io::Error {
        match self {
            ArchiveError::Io { source, .. } => source,
            other => std::io::Error::new(std::io::ErrorKind::InvalidData, other),
        }
    }
}

pub type Result<T, E = ArchiveError> = std::result::Result<T, E>;
