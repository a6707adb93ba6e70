use std::fmt;
use std::path::PathBuf;

use strata_image::ImageError;
use strata_spec::{Digest, MediaType};

/// Errors of the registry client.
///
/// Messages name the registry host and, where there is one, the repository, digest or tag at
/// fault; HTTP errors carry the status, the registry's error code (`MANIFEST_UNKNOWN`,
/// `DIGEST_INVALID`, …), its message and the request id the registry gave. No variant ever
/// holds a password, token or `Authorization` value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The manifest, blob or repository does not exist (HTTP 404 / `*_UNKNOWN`).
    #[error("{what} not found on {host}")]
    NotFound { host: String, what: String },
    /// The registry answered 401: credentials are needed and none were sent (or a token
    /// for the request could not be had anonymously).
    #[error("{registry}: unauthorized: {detail}")]
    Unauthorized { registry: String, detail: String },
    /// Credentials were sent and the registry (or its token server) refused them: a wrong
    /// user name or password, an expired token, a revoked identity token.
    #[error("{registry}: the credentials{} were refused: {detail}", user.as_ref().map(|u| format!(" of user {u:?}")).unwrap_or_default())]
    CredentialsRefused {
        registry: String,
        /// The user name, when the credentials have one (never the password or token).
        user: Option<String>,
        detail: String,
    },
    /// Authenticated, but not allowed (HTTP 403 / `DENIED`).
    #[error("{host}: access to {what} denied: {detail}")]
    Denied {
        host: String,
        what: String,
        detail: String,
    },
    #[error("digest mismatch: expected {expected}, content hashes to {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("size mismatch for {digest}: expected {expected} bytes, got {actual}{more}")]
    SizeMismatch {
        digest: Digest,
        expected: u64,
        actual: u64,
        more: &'static str,
    },
    #[error("{what} is larger than the limit of {limit} bytes")]
    TooLarge { what: String, limit: u64 },
    /// A manifest or index larger than [`crate::RegistryOptions::max_manifest_bytes`] (the
    /// one limit a user can raise).
    #[error("{what} is larger than the limit of {limit} bytes")]
    ManifestTooLarge { what: String, limit: u64 },
    /// The declared `Content-Type` and the document's own `mediaType` disagree (RELIABILITY M2).
    #[error("{what}: Content-Type {declared} disagrees with the document's mediaType {document}")]
    MediaTypeMismatch {
        what: String,
        declared: MediaType,
        document: MediaType,
    },
    /// An HTTP error status, after the retry budget when the status was retryable.
    #[error("{host}: {what}: {}", HttpDetail { status: *status, code, message, request_id, attempts: *attempts })]
    Http {
        host: String,
        what: String,
        status: u16,
        code: Option<String>,
        message: String,
        request_id: Option<String>,
        attempts: u32,
    },
    /// The connection failed (refused, unknown host, reset, timed out, TLS); retryable
    /// failures after the retry budget.
    #[error("{host}: {what}: {}", ConnectionDetail { source, attempts: *attempts })]
    Connection {
        host: String,
        what: String,
        attempts: u32,
        #[source]
        source: reqwest::Error,
    },
    /// The server answers, but too slowly to ever finish: a response head still incomplete
    /// at its deadline, or a body below the low-speed limit on every try
    /// ([`crate::LowSpeedLimit`]).
    #[error("{host}: {what}: {detail}")]
    TooSlow {
        host: String,
        what: String,
        detail: String,
    },
    /// The registry broke the protocol (bad redirect, bad `Location`, bad `Content-Range`,
    /// refused downgrade, redirect loop).
    #[error("{host}: {message}")]
    Protocol { host: String, message: String },
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// A credentials file or option is unusable.
    #[error("{}: {message}", path.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "configuration".into()))]
    Config {
        path: Option<PathBuf>,
        message: String,
    },
    /// The registries configuration forbids pulling this image (`blocked = true`).
    #[error("{reference} is blocked: [[registry]] prefix {prefix:?} has blocked = true in {}", path.display())]
    Blocked {
        reference: String,
        prefix: String,
        path: PathBuf,
    },
    /// A credential helper is missing, crashed or answered nonsense (RELIABILITY N7).
    #[error("credential helper docker-credential-{helper} for {registry}: {message}")]
    CredentialHelper {
        helper: String,
        registry: String,
        message: String,
    },
    #[error("{what} is not supported")]
    Unsupported { what: String },
    /// The registry refuses to delete manifests (HTTP 405 `UNSUPPORTED`): deletion is off in
    /// its configuration, which is the distribution registry's default.
    #[error(
        "{registry}: the registry does not allow deleting manifests of {repository} (HTTP 405); \
         its operator must enable deletion (distribution: storage.delete.enabled: true, or \
         REGISTRY_STORAGE_DELETE_ENABLED=true)"
    )]
    DeleteDisabled {
        registry: String,
        repository: String,
    },
    #[error("invalid {what}: {source}")]
    Spec {
        what: String,
        #[source]
        source: strata_spec::SpecError,
    },
    /// The blob stream handed to a sink failed (read error of the source side).
    #[error("reading the blob to upload")]
    Source(#[source] ImageError),
}

/// What went wrong with a connection ([`RegistryError::connection_failure`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionFailure {
    /// Nothing listens on that host and port.
    Refused,
    /// The host name does not resolve.
    UnknownHost,
    /// The TLS handshake failed (bad certificate, or not a TLS server: a plain-HTTP
    /// registry on an https URL).
    Tls,
    /// No answer within the connect or read timeout.
    Timeout,
    /// Reset, closed early, or anything else.
    Other,
}

struct HttpDetail<'a> {
    status: u16,
    code: &'a Option<String>,
    message: &'a str,
    request_id: &'a Option<String>,
    attempts: u32,
}

struct ConnectionDetail<'a> {
    source: &'a reqwest::Error,
    attempts: u32,
}

impl fmt::Display for ConnectionDetail<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match crate::client::connection_failure(self.source) {
            ConnectionFailure::Refused => "connection refused",
            ConnectionFailure::UnknownHost => "unknown host (the name does not resolve)",
            ConnectionFailure::Tls => "TLS handshake failed",
            ConnectionFailure::Timeout => "timed out",
            ConnectionFailure::Other => "connection failed",
        })?;
        if self.attempts > 1 {
            write!(f, " after {} attempts", self.attempts)?;
        }
        Ok(())
    }
}

impl fmt::Display for HttpDetail<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HTTP {}", self.status)?;
        if let Some(c) = self.code {
            write!(f, " {c}")?;
        }
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        if let Some(id) = self.request_id {
            write!(f, " (request id {id})")?;
        }
        if self.attempts > 1 {
            write!(f, " after {} attempts", self.attempts)?;
        }
        Ok(())
    }
}

impl RegistryError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        RegistryError::Io {
            context: context.into(),
            source,
        }
    }
    pub(crate) fn protocol(host: &str, message: impl Into<String>) -> Self {
        RegistryError::Protocol {
            host: host.to_string(),
            message: message.into(),
        }
    }
    pub(crate) fn config(path: Option<PathBuf>, message: impl Into<String>) -> Self {
        RegistryError::Config {
            path,
            message: message.into(),
        }
    }
    /// Why a connection failed, for a [`RegistryError::Connection`].
    pub fn connection_failure(&self) -> Option<ConnectionFailure> {
        let RegistryError::Connection { source, .. } = self else {
            return None;
        };
        Some(crate::client::connection_failure(source))
    }
    /// True when the thing asked for does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, RegistryError::NotFound { .. })
    }
    /// The HTTP status, when the error is an HTTP error.
    pub fn status(&self) -> Option<u16> {
        match self {
            RegistryError::Http { status, .. } => Some(*status),
            RegistryError::NotFound { .. } => Some(404),
            RegistryError::DeleteDisabled { .. } => Some(405),
            _ => None,
        }
    }
}

impl From<RegistryError> for ImageError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::NotFound { host, what } => ImageError::NotFound {
                what: format!("{what} on {host}"),
            },
            RegistryError::DigestMismatch { expected, actual } => {
                ImageError::DigestMismatch { expected, actual }
            }
            RegistryError::SizeMismatch {
                digest,
                expected,
                actual,
                more,
            } => ImageError::SizeMismatch {
                digest,
                expected,
                actual,
                more,
            },
            RegistryError::TooLarge { what, limit } => ImageError::TooLarge { what, limit },
            RegistryError::Unsupported { what } => {
                ImageError::Unsupported(format!("{what} is not supported"))
            }
            // Kept as the source: the limit it names is the one a user can raise.
            e @ RegistryError::ManifestTooLarge { .. } => ImageError::transport(e.to_string(), e),
            // Keep the original (verification) error of the stream we were given.
            RegistryError::Source(inner) => inner,
            other => ImageError::transport(other.to_string(), other),
        }
    }
}
