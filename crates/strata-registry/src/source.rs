//! Reading images: manifests (capped, verified, media type checked) and blobs.

use std::sync::Arc;

use async_trait::async_trait;
use reqwest::header::{self, HeaderValue};
use reqwest::{Method, StatusCode};
use strata_image::{BlobOrigin, BlobReader, BlobReplay, ImageError, ImageSource, RawManifest};
use strata_spec::{Descriptor, Digest, Manifest, MediaType, Reference};

use crate::client::{Follow, Host, Inner, Request, error_from, read_capped};
use crate::{RegistryError, download};

/// What strata accepts for manifests. Schema1 is listed last so a registry that only has
/// schema1 says so (and we refuse it clearly) instead of answering 404.
pub(crate) const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.docker.distribution.manifest.v2+json, \
application/vnd.docker.distribution.manifest.v1+prettyjws;q=0.1, \
application/vnd.docker.distribution.manifest.v1+json;q=0.1";

/// An image (or index) in a registry repository, opened for reading.
pub struct RegistrySource {
    inner: Arc<Inner>,
    host: Arc<Host>,
    reference: Reference,
}

impl std::fmt::Debug for RegistrySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistrySource")
            .field("reference", &self.reference)
            .finish_non_exhaustive()
    }
}

pub(crate) fn manifest_url(
    host: &Host,
    repository: &str,
    selector: &str,
) -> Result<url::Url, RegistryError> {
    host.base
        .join(&format!("v2/{repository}/manifests/{selector}"))
        .map_err(|e| RegistryError::protocol(&host.host_port(), e.to_string()))
}

pub(crate) fn blob_url(
    host: &Host,
    repository: &str,
    digest: &Digest,
) -> Result<url::Url, RegistryError> {
    host.base
        .join(&format!("v2/{repository}/blobs/{digest}"))
        .map_err(|e| RegistryError::protocol(&host.host_port(), e.to_string()))
}

/// The media type in a `Content-Type` value, without parameters.
fn bare_media_type(value: Option<&HeaderValue>) -> MediaType {
    let s = value.and_then(|v| v.to_str().ok()).unwrap_or_default();
    let s = s.split(';').next().unwrap_or_default().trim();
    MediaType::new(s.to_ascii_lowercase())
}

impl RegistrySource {
    pub(crate) fn new(inner: Arc<Inner>, host: Arc<Host>, reference: Reference) -> Self {
        RegistrySource {
            inner,
            host,
            reference,
        }
    }

    pub fn reference(&self) -> &Reference {
        &self.reference
    }

    fn scopes(&self) -> Vec<String> {
        vec![format!("repository:{}:pull", self.reference.repository())]
    }

    fn selector(&self, digest: Option<&Digest>) -> String {
        match digest {
            Some(d) => d.to_string(),
            None => self.reference.selector(),
        }
    }

    /// `HEAD` the manifest: its descriptor (digest and media type as the registry declares
    /// them, unverified) or `None` when it does not exist.
    pub async fn head_manifest(
        &self,
        digest: Option<&Digest>,
    ) -> Result<Option<Descriptor>, RegistryError> {
        let selector = self.selector(digest);
        let what = format!("manifest {}:{selector}", self.reference.repository());
        let url = manifest_url(&self.host, self.reference.repository(), &selector)?;
        let mut req = Request::new(Method::HEAD, url, self.scopes(), what.clone());
        req.headers
            .insert(header::ACCEPT, HeaderValue::from_static(MANIFEST_ACCEPT));
        req.follow = Follow::Redirects;
        let answer = self.inner.send(&self.host, req).await?;
        let status = answer.response.status();
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(error_from(answer, &self.host.host_port(), &what, 1).await);
        }
        let headers = answer.response.headers();
        let media_type = bare_media_type(headers.get(header::CONTENT_TYPE));
        // reqwest reports 0 for the (empty) body of a HEAD; the header has the size.
        let size = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0);
        let declared = headers
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.parse::<Digest>().ok());
        let digest = match (digest.or(self.reference.digest()), declared) {
            (Some(d), _) => d.clone(),
            (None, Some(d)) => d,
            (None, None) => {
                return Err(RegistryError::protocol(
                    &self.host.host_port(),
                    format!("{what}: HEAD answer has no Docker-Content-Digest"),
                ));
            }
        };
        Ok(Some(Descriptor::new(media_type, digest, size)))
    }

    /// GET a manifest: `None` for what the reference names, or a digest (index children).
    pub async fn fetch_manifest(
        &self,
        digest: Option<&Digest>,
    ) -> Result<RawManifest, RegistryError> {
        let selector = self.selector(digest);
        let expected = digest.or(self.reference.digest());
        let what = format!("manifest {}:{selector}", self.reference.repository());
        let host_port = self.host.host_port();
        let url = manifest_url(&self.host, self.reference.repository(), &selector)?;
        let mut req = Request::new(Method::GET, url, self.scopes(), what.clone());
        req.headers
            .insert(header::ACCEPT, HeaderValue::from_static(MANIFEST_ACCEPT));
        req.follow = Follow::Redirects;
        let answer = self.inner.send(&self.host, req).await?;
        if !answer.response.status().is_success() {
            return Err(error_from(answer, &host_port, &what, 1).await);
        }
        let declared = bare_media_type(answer.response.headers().get(header::CONTENT_TYPE));
        if declared.is_schema1() {
            return Err(RegistryError::Unsupported {
                what: format!("{what}: Docker schema1 manifest ({declared})"),
            });
        }
        let limit = self.inner.options.max_manifest_bytes;
        let bytes = read_capped(
            answer.response,
            limit,
            self.inner.options.low_speed,
            &host_port,
            &what,
        )
        .await
        .map_err(|e| match e {
            RegistryError::TooLarge { what, limit } => {
                RegistryError::ManifestTooLarge { what, limit }
            }
            e => e,
        })?;
        let actual = match expected {
            Some(d) => d.same_algorithm_of(&bytes),
            None => Digest::sha256_of(&bytes),
        };
        if let Some(d) = expected
            && &actual != d
        {
            return Err(RegistryError::DigestMismatch {
                expected: d.clone(),
                actual,
            });
        }
        let media_type = resolve_media_type(&what, &declared, &bytes)?;
        Ok(RawManifest {
            bytes,
            media_type,
            digest: actual,
        })
    }

    /// GET a blob as a stream that resumes with `Range` after a broken body. The bytes are not
    /// verified here (the consumer verifies, see [`strata_image::ImageSource`]); the stream
    /// does fail as soon as more than the descriptor's size arrives. The descriptor's `urls`
    /// are never used (RELIABILITY M10): blobs come from the registry.
    pub async fn fetch_blob(&self, descriptor: &Descriptor) -> Result<BlobReader, RegistryError> {
        download::open(
            self.inner.clone(),
            self.host.clone(),
            self.reference.repository().to_string(),
            descriptor,
        )
        .await
    }
}

#[derive(serde::Deserialize)]
struct Probe {
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    #[serde(rename = "schemaVersion", default)]
    schema_version: Option<i64>,
}

/// The media type of a fetched document: its own `mediaType`, which must agree with the
/// declared `Content-Type` when that is a manifest type (RELIABILITY M2).
fn resolve_media_type(
    what: &str,
    declared: &MediaType,
    bytes: &[u8],
) -> Result<MediaType, RegistryError> {
    let probe: Probe = serde_json::from_slice(bytes).map_err(|source| RegistryError::Spec {
        what: what.to_string(),
        source: strata_spec::SpecError::MalformedJson {
            what: "manifest",
            source,
        },
    })?;
    if probe.schema_version == Some(1) {
        return Err(RegistryError::Unsupported {
            what: format!("{what}: Docker schema1 manifest"),
        });
    }
    let document = probe.media_type.map(MediaType::new);
    if let Some(doc) = &document
        && (declared.is_manifest() || declared.is_schema1())
        && doc != declared
    {
        return Err(RegistryError::MediaTypeMismatch {
            what: what.to_string(),
            declared: declared.clone(),
            document: doc.clone(),
        });
    }
    if let Some(doc) = document {
        return Ok(doc);
    }
    if declared.is_manifest() {
        return Ok(declared.clone());
    }
    // No usable declaration either way: judge the document's shape.
    Manifest::parse(bytes, None)
        .map(|m| m.media_type())
        .map_err(|source| RegistryError::Spec {
            what: what.to_string(),
            source,
        })
}

#[async_trait]
impl ImageSource for RegistrySource {
    fn describe(&self) -> String {
        format!("docker://{}", self.reference)
    }
    async fn manifest(&self, digest: Option<&Digest>) -> Result<RawManifest, ImageError> {
        Ok(self.fetch_manifest(digest).await?)
    }
    async fn blob(&self, descriptor: &Descriptor) -> Result<BlobReader, ImageError> {
        Ok(self.fetch_blob(descriptor).await?)
    }
    /// A blob can be fetched again (a repeated upload to another registry re-reads it).
    fn blob_replay(&self) -> BlobReplay {
        BlobReplay::Reopen
    }
    fn origin(&self) -> Option<BlobOrigin> {
        Some(BlobOrigin {
            registry: self.reference.registry().to_string(),
            repository: self.reference.repository().to_string(),
        })
    }
}
