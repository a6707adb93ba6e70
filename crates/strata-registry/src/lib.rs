//! The OCI distribution client strata uses for every `docker://` image.
//!
//! [`Client`] holds an HTTP connection pool (HTTP/2 when offered) for small requests, HTTP/1.1
//! connections of their own for blob bodies (see `tls.rs` and `direct.rs`), the registries it has
//! pinged and their bearer tokens; it is cheap to clone and meant to be shared by every
//! repository one side of a copy touches. From it come [`RegistrySource`] (an
//! [`strata_image::ImageSource`]) and [`RegistrySink`] (an [`strata_image::ImageSink`]).
//!
//! What it does, and what it promises:
//! - **Auth**: pings `/v2/`, follows the `WWW-Authenticate` challenge: anonymous, Basic, or
//!   Bearer tokens (GET with Basic credentials, or the OAuth2 POST with an identity token),
//!   cached per registry and scope set until they expire; a push that mounts asks for one
//!   token covering both repositories; a 401 in the middle of a session refreshes the token
//!   once and retries. Credentials come from [`CredentialSource`] (see [`auth`] for the file
//!   lookup and credential helpers) and are only ever sent to the registry's own origin and
//!   to the token realm it names; a realm on a link-local address, or a private address for
//!   a public registry, or plain HTTP without [`TlsMode::Insecure`], is refused.
//! - **Retries**: every request, manifest PUTs included, is retried on 408/429/500/502/503/504,
//!   timeouts, resets and broken bodies with jittered exponential backoff, honouring
//!   `Retry-After` (seconds or HTTP date, capped by [`RetryPolicy::max_backoff`]). A request
//!   body is re-sent only when it can be replayed (bytes in memory, or the upload spool).
//!   After the budget the error names host, status, registry error code and request id.
//!   A refused connection, a host name that does not resolve and a TLS failure are not
//!   retried (asking again will not change them; skopeo fails at once too), nor is a
//!   response head still incomplete after the read timeout (a stuck or dribbling server).
//!   Bodies slower than [`LowSpeedLimit`] are given up like a stall.
//! - **Downloads** stream (no whole-blob buffering) and resume after a broken body with
//!   `Range: bytes=N-`, accepted only as a 206 whose `Content-Range` starts at N and ends at
//!   the blob's last byte; anything else fails rather than splicing two representations.
//!   Redirects (registries send blob GETs to storage) are followed by hand: at most
//!   [`MAX_REDIRECTS`] hops, never https→http, and `Authorization` only on hops to the
//!   registry's own origin (so an a→b→b chain never carries it to b).
//! - **Uploads**: POST, then one streamed PUT, or PATCH chunks of
//!   [`RegistryOptions::chunk_size`] and a final `PUT ?digest=`. The blob is hashed and sized
//!   while streaming and its last bytes are held back until the digest is verified, so a
//!   registry never receives a complete wrong blob. A broken PATCH/PUT resumes from the
//!   offset the registry reports (`GET` the upload, `Range: 0-E`) or restarts from POST when
//!   the session is gone; the bytes to send again come from the source itself when it can
//!   re-open the blob ([`RegistrySink::push_blob_from`], read and hashed again from the first
//!   byte), else from an unlinked spool file written while streaming ([`UploadSpool`]) —
//!   memory stays flat whatever the blob size.
//! - **Manifests**: `Accept` lists OCI and Docker schema2 types (schema1 is refused clearly),
//!   reads are capped at [`RegistryOptions::max_manifest_bytes`], digests are verified when a
//!   digest was asked for, and a `Content-Type` that disagrees with the document's `mediaType`
//!   is an error naming both. Every other body read into memory is capped too (token JSON
//!   1 MiB, error bodies 64 KiB).
//! - Secrets never appear in errors, `Debug` output or `tracing` events at any level.
//!
//! ```no_run
//! # async fn f() -> Result<(), strata_registry::RegistryError> {
//! use strata_image::ImageSource;
//! use strata_registry::{Client, RegistryOptions};
//! let client = Client::new(RegistryOptions::default())?;
//! let reference = "quay.io/podman/hello:latest".parse().unwrap();
//! let source = client.source(&reference).await?;
//! let top = source.manifest(None).await.unwrap();
//! println!("{} {}", top.digest, top.media_type);
//! # Ok(()) }
//! ```

pub mod auth;
mod challenge;
mod client;
pub mod config;
mod delete;
mod direct;
mod download;
mod error;
mod sink;
mod source;
mod speed;
pub mod tls;
mod upload;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

pub use client::Client;
pub use error::{ConnectionFailure, RegistryError};
pub use sink::RegistrySink;
pub use source::RegistrySource;

/// Most redirect hops followed for one request (Go's and curl's default is similar).
pub const MAX_REDIRECTS: usize = 10;
/// Largest token-endpoint answer read (ggcr #2296: unbounded token bodies were an OOM).
pub const MAX_TOKEN_BODY_BYTES: u64 = 1024 * 1024;
/// Largest error body read from a registry: enough for any JSON error list, not a 1 GB body.
pub const MAX_ERROR_BODY_BYTES: u64 = 64 * 1024;
/// Largest page of a tag list read (a page of 10,000 long tags fits).
pub const MAX_TAGS_PAGE_BYTES: u64 = 8 * 1024 * 1024;
/// Largest tag list read over all its pages (a registry paging forever with large pages
/// must not grow us to gigabytes): a million 60-byte tags fit.
pub const MAX_TAGS_TOTAL_BYTES: u64 = 64 * 1024 * 1024;

/// curl's `--speed-limit`/`--speed-time`: a body that arrives slower than `bytes_per_second`,
/// averaged over `time` spent waiting for it, is given up (a blob download then resumes
/// with `Range` on a new connection). A total stall is the read timeout's business.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LowSpeedLimit {
    pub bytes_per_second: u64,
    pub time: Duration,
}

impl Default for LowSpeedLimit {
    fn default() -> Self {
        // 1 KiB/s over 30 s: far below any working link, long enough for a slow start.
        LowSpeedLimit {
            bytes_per_second: 1024,
            time: Duration::from_secs(30),
        }
    }
}

/// How to treat TLS.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TlsMode {
    /// HTTPS with certificate verification, except for hosts [`RegistryOptions::registries`]
    /// marks insecure (which are then treated as [`TlsMode::Insecure`]).
    #[default]
    Verify,
    /// `--tls-verify=true`: HTTPS with certificate verification for every host, whatever the
    /// configuration says; never plain HTTP.
    VerifyAlways,
    /// skopeo's `--tls-verify=false`: HTTPS without certificate checks is tried first, plain
    /// HTTP when HTTPS does not answer. Token realms may then be plain HTTP too.
    Insecure,
}

/// A user name and password (or token used as password). `Debug` hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Where credentials come from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum CredentialSource {
    /// The auth files of [`auth::auth_file_search_path`], with their credential helpers.
    #[default]
    Default,
    /// This one auth file (`--authfile`), with its credential helpers.
    AuthFile(PathBuf),
    /// These credentials (`--creds USER:PASS`), for every registry this client talks to.
    Explicit(Credentials),
    /// No credentials (`--no-creds`).
    Anonymous,
}

/// How often and how patiently to retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries per request, the first one included (1 = no retry).
    pub max_attempts: u32,
    /// Wait before the second try; doubled for each later one (with jitter).
    pub initial_backoff: Duration,
    /// Longest wait between tries; also the cap on a registry's `Retry-After`.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        // containers/image: 5 tries, 2 s doubling, 60 s cap; ggcr: 3 tries from 1 s.
        RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
        }
    }
}

/// Where a blob being pushed is spooled so a broken upload can be resumed or restarted
/// (blobs pushed from a source that can re-open them are not spooled).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum UploadSpool {
    /// An unlinked temp file in the system temp directory.
    #[default]
    TempDir,
    /// An unlinked temp file in this directory.
    Dir(PathBuf),
    /// No spool: a broken upload body fails the blob (a retry would need the bytes again).
    Off,
}

/// Options of a [`Client`].
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    pub tls: TlsMode,
    pub credentials: CredentialSource,
    pub retry: RetryPolicy,
    /// Largest manifest or index read (default [`strata_spec::MAX_MANIFEST_BYTES`]).
    pub max_manifest_bytes: u64,
    /// `None`: each blob is one streamed PUT; `Some(n)`: PATCH chunks of `n` bytes.
    pub chunk_size: Option<u64>,
    pub user_agent: String,
    /// A response head (status and headers) must be complete this long after the request
    /// starts, however its bytes trickle in; one that is not fails the request without a
    /// retry (silent or dribbling, the server would hold us as long again). A body that sends
    /// nothing for this long is dropped (blobs resume).
    pub read_timeout: Duration,
    /// Bodies slower than this are given up (blobs resume with `Range`).
    pub low_speed: LowSpeedLimit,
    pub connect_timeout: Duration,
    /// `n` of tag-list requests (page size); `None` lets the registry choose.
    pub tags_page_size: Option<u32>,
    /// Most bytes of tag-list pages read in all (default [`MAX_TAGS_TOTAL_BYTES`]).
    pub max_tags_bytes: u64,
    pub upload_spool: UploadSpool,
    /// Where `docker-credential-*` helpers are looked for; empty: `PATH`.
    pub credential_helper_dirs: Vec<PathBuf>,
    /// registries.conf: insecure hosts, blocked names, `location` rewrites and mirrors for
    /// pulls (default: empty, nothing configured; the binary loads
    /// [`config::RegistriesConf::load`]).
    pub registries: std::sync::Arc<config::RegistriesConf>,
    /// Where each host's CA certificates and client certificate are looked for.
    pub cert_dirs: config::CertDirs,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            tls: TlsMode::Verify,
            credentials: CredentialSource::Default,
            retry: RetryPolicy::default(),
            max_manifest_bytes: strata_spec::MAX_MANIFEST_BYTES,
            chunk_size: None,
            user_agent: format!("strata/{}", env!("CARGO_PKG_VERSION")),
            read_timeout: Duration::from_secs(60),
            low_speed: LowSpeedLimit::default(),
            connect_timeout: Duration::from_secs(30),
            tags_page_size: None,
            max_tags_bytes: MAX_TAGS_TOTAL_BYTES,
            upload_spool: UploadSpool::TempDir,
            credential_helper_dirs: Vec::new(),
            registries: Default::default(),
            cert_dirs: config::CertDirs::default(),
        }
    }
}
