//! Image sources and sinks, and the verified streaming every transport shares.
//!
//! A transport (registry, OCI layout, archive, `dir:`) implements [`ImageSource`] to be read
//! and [`ImageSink`] to be written. The copy pipeline and the build engine only speak these
//! traits, so they never know whether bytes come over HTTP or from disk.
//!
//! Trust rule: a source hands out *unverified* bytes; whoever commits or interprets them
//! verifies. Sinks wrap every incoming blob in a [`VerifyingReader`] and commit only after it
//! reached end of stream with the right size and digest; [`read_blob_bytes`] does the same for
//! callers that want a small blob (a config) in memory.
//!
//! [`validate`] re-checks everything a source serves (ggcr's `validate.Image` and
//! `validate.Index`): digests, sizes, DiffIds, duplicate layer paths, media types, platforms.
//!
//! ```no_run
//! # async fn f(source: &dyn strata_image::ImageSource) -> Result<(), strata_image::ImageError> {
//! let top = source.manifest(None).await?;             // what the reference names
//! println!("{} {}", top.digest, top.media_type);
//! # Ok(()) }
//! ```

mod error;
pub mod mount;
pub mod repack;
pub mod runtime;
pub mod tree;
pub mod unpack;
pub mod validate;
mod verify;

use std::pin::Pin;

use async_trait::async_trait;
use strata_spec::{Descriptor, Digest, Manifest, MediaType};
use tokio::io::AsyncRead;

pub use error::ImageError;
pub use strata_archive::{Compression, Ownership};
pub use unpack::{
    BundleMeta, ExistingBundle, SyncMode, UnpackOptions, UnpackReport, read_bundle_meta, unpack,
};
pub use validate::{
    LayerCheck, Problem, ProblemKind, ValidateOptions, ValidationReport, validate, validate_strict,
};
pub use verify::{VerifyingReader, read_blob_bytes, read_manifest_bytes};

/// A stream of blob bytes.
pub type BlobReader = Pin<Box<dyn AsyncRead + Send>>;

/// A manifest or index exactly as stored, with the media type its transport declared and
/// the digest of its bytes (computed by strata, never taken from a header).
#[derive(Debug, Clone, PartialEq)]
pub struct RawManifest {
    pub bytes: Vec<u8>,
    pub media_type: MediaType,
    pub digest: Digest,
}

impl RawManifest {
    /// Wrap bytes, computing the digest. `media_type` is the declared type; when it is
    /// empty or generic the document's own `mediaType` is used.
    pub fn new(bytes: Vec<u8>, media_type: MediaType) -> Self {
        let digest = Digest::sha256_of(&bytes);
        RawManifest {
            bytes,
            media_type,
            digest,
        }
    }
    /// Parse with the ambiguity and media-type checks of [`Manifest::parse`].
    pub fn parse(&self) -> Result<Manifest, ImageError> {
        let declared = if self.media_type.as_str().is_empty() {
            None
        } else {
            Some(&self.media_type)
        };
        Manifest::parse(&self.bytes, declared).map_err(|source| ImageError::Document {
            digest: self.digest.clone(),
            source,
        })
    }
    /// The descriptor of this document (media type taken from the document when present).
    pub fn descriptor(&self) -> Descriptor {
        let media_type = match self.parse() {
            Ok(m) => m.media_type(),
            Err(_) => self.media_type.clone(),
        };
        Descriptor::new(media_type, self.digest.clone(), self.bytes.len() as u64)
    }
}

/// Where a blob came from, so a registry sink on the same host can mount it instead of
/// uploading it (cross-repository blob mount).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobOrigin {
    /// Registry host as written in the reference (`127.0.0.1:5000`).
    pub registry: String,
    pub repository: String,
}

/// Whether [`ImageSource::blob`] can be called again for the same blob.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum BlobReplay {
    /// A blob is streamed once (a pipe, a step's output): a consumer that may need the bytes
    /// again (a registry upload resuming after a broken request) keeps its own copy.
    #[default]
    Once,
    /// `blob` may be called again and yields the same bytes (files; a registry, over the
    /// network): a consumer re-opens the blob instead of keeping a copy. The consumer still
    /// verifies what it re-reads.
    Reopen,
}

/// Something images can be read from.
///
/// Contract: `manifest(None)` returns the document the source was opened at (a tag or
/// digest); `manifest(Some(d))` returns the manifest with that digest (children of an
/// index). Returned manifest bytes have been checked against the requested digest when one
/// was given, and against [`strata_spec::MAX_MANIFEST_BYTES`]. Blob streams are *not*
/// verified: the consumer verifies.
#[async_trait]
pub trait ImageSource: Send + Sync {
    /// A short human name for messages (`docker://host/repo:tag`, `oci:/dir:tag`).
    fn describe(&self) -> String;
    async fn manifest(&self, digest: Option<&Digest>) -> Result<RawManifest, ImageError>;
    async fn blob(&self, descriptor: &Descriptor) -> Result<BlobReader, ImageError>;
    /// Registry and repository the blobs live in, when mounting from it is possible.
    fn origin(&self) -> Option<BlobOrigin> {
        None
    }
    /// Can `blob` be called again for the same blob? (Default: no.)
    fn blob_replay(&self) -> BlobReplay {
        BlobReplay::Once
    }
}

/// Something images can be written to.
///
/// Contract: blobs first, manifests after the blobs they reference, the tagged top-level
/// manifest last; `finish` makes the result visible (archives are written there). A blob is
/// committed only when its bytes match the descriptor's digest and size; nothing partial is
/// ever visible under a final name. All methods are idempotent.
#[async_trait]
pub trait ImageSink: Send + Sync {
    fn describe(&self) -> String;
    /// Is the blob already there? A sink may also satisfy it from `origin` (mount); returns
    /// true when the blob is present afterwards.
    async fn reuse_blob(
        &self,
        descriptor: &Descriptor,
        origin: Option<&BlobOrigin>,
    ) -> Result<bool, ImageError>;
    /// Store a blob, verifying digest and size while streaming.
    async fn put_blob(&self, descriptor: &Descriptor, data: BlobReader) -> Result<(), ImageError>;
    /// Store the blob `descriptor` names, read from `source`, verifying digest and size while
    /// streaming. The default opens it once and calls [`ImageSink::put_blob`]; a sink that may
    /// have to send bytes again (a registry upload resuming after a broken request) re-opens
    /// the blob from a source whose [`ImageSource::blob_replay`] allows it, instead of keeping
    /// a copy of every byte it sends.
    async fn put_blob_from(
        &self,
        descriptor: &Descriptor,
        source: &dyn ImageSource,
    ) -> Result<(), ImageError> {
        let data = source.blob(descriptor).await?;
        self.put_blob(descriptor, data).await
    }
    /// Store a manifest. `tag`: the name the top-level document gets (`None` for index
    /// children and digest-only destinations).
    async fn put_manifest(
        &self,
        manifest: &RawManifest,
        tag: Option<&str>,
    ) -> Result<(), ImageError>;
    /// Make everything written visible (no-op for registries and layouts).
    async fn finish(&self) -> Result<(), ImageError> {
        Ok(())
    }
    /// The copy failed or was interrupted and its other transfers were dropped: refuse new
    /// blobs and return once every blob write this sink started has ended and removed its
    /// temp files (archives: also their staging directory). The sink is unusable afterwards.
    /// Blobs already committed stay (unreferenced until gc); no manifest is written. Default:
    /// nothing to clean up.
    async fn abandon(&self) {}
    /// Does this sink accept this manifest media type? (`dir:`/archives accept all; a
    /// docker-archive only single images.)
    fn supports_index(&self) -> bool {
        true
    }
}
