//! Writing images: blob existence, cross-repository mounts, uploads, manifest PUTs.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use reqwest::header::{self, HeaderValue};
use reqwest::{Method, StatusCode};
use strata_image::{
    BlobOrigin, BlobReader, BlobReplay, ImageError, ImageSink, ImageSource, RawManifest,
};
use strata_spec::{Descriptor, Digest, Reference};

use crate::RegistryError;
use crate::client::{Body, Follow, Host, Inner, Request, error_from};
use crate::source::{blob_url, manifest_url};
use crate::upload::Upload;

/// A registry repository opened for writing.
pub struct RegistrySink {
    inner: Arc<Inner>,
    host: Arc<Host>,
    reference: Reference,
}

impl std::fmt::Debug for RegistrySink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistrySink")
            .field("reference", &self.reference)
            .finish_non_exhaustive()
    }
}

impl RegistrySink {
    pub(crate) fn new(inner: Arc<Inner>, host: Arc<Host>, reference: Reference) -> Self {
        RegistrySink {
            inner,
            host,
            reference,
        }
    }

    pub fn reference(&self) -> &Reference {
        &self.reference
    }

    fn repository(&self) -> &str {
        self.reference.repository()
    }

    fn upload(&self) -> Upload<'_> {
        Upload {
            inner: &self.inner,
            host: &self.host,
            repository: self.repository(),
        }
    }

    /// `HEAD` the blob: is it in this repository?
    pub async fn has_blob(&self, digest: &Digest) -> Result<bool, RegistryError> {
        let what = format!("blob {digest} in {}", self.repository());
        let url = blob_url(&self.host, self.repository(), digest)?;
        let mut req = Request::new(
            Method::HEAD,
            url,
            vec![format!("repository:{}:pull,push", self.repository())],
            what.clone(),
        );
        req.follow = Follow::Redirects;
        let answer = self.inner.send(&self.host, req).await?;
        match answer.response.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(error_from(answer, &self.host.host_port(), &what, 1).await),
        }
    }

    /// Mount `digest` from `repository` of the same registry. False when the registry
    /// refused (202: it opened an upload instead, which is cancelled).
    pub async fn mount_blob(&self, digest: &Digest, from: &str) -> Result<bool, RegistryError> {
        self.upload().mount(digest, from).await
    }

    /// Upload a blob, verifying its digest and size while streaming. Bytes that may have to
    /// be sent again are kept in the spool ([`crate::RegistryOptions::upload_spool`]).
    pub async fn push_blob(
        &self,
        descriptor: &Descriptor,
        data: BlobReader,
    ) -> Result<(), RegistryError> {
        self.upload().push(descriptor, data, None).await
    }

    /// Upload a blob read from `source`, verifying its digest and size while streaming. When
    /// the source can re-open blobs ([`BlobReplay::Reopen`]), nothing is spooled: a request
    /// that must be repeated re-reads the blob from the source, hashing it again from the
    /// start, so the digest check still covers exactly the bytes sent.
    pub async fn push_blob_from(
        &self,
        descriptor: &Descriptor,
        source: &dyn ImageSource,
    ) -> Result<(), RegistryError> {
        let data = source
            .blob(descriptor)
            .await
            .map_err(RegistryError::Source)?;
        let reopen = (source.blob_replay() == BlobReplay::Reopen).then_some(source);
        self.upload().push(descriptor, data, reopen).await
    }

    /// PUT a manifest under `tag`, or under its digest when `tag` is `None`.
    pub async fn push_manifest(
        &self,
        manifest: &RawManifest,
        tag: Option<&str>,
    ) -> Result<(), RegistryError> {
        let limit = self.inner.options.max_manifest_bytes;
        let selector = match tag {
            Some(t) => {
                // Validates the tag grammar so it can't smuggle a path into the URL.
                self.reference
                    .with_tag(t)
                    .map_err(|source| RegistryError::Spec {
                        what: format!("tag {t:?}"),
                        source,
                    })?;
                t.to_string()
            }
            None => manifest.digest.to_string(),
        };
        let what = format!("manifest {}:{selector}", self.repository());
        if manifest.bytes.len() as u64 > limit {
            return Err(RegistryError::ManifestTooLarge { what, limit });
        }
        let actual = manifest.digest.same_algorithm_of(&manifest.bytes);
        if actual != manifest.digest {
            return Err(RegistryError::DigestMismatch {
                expected: manifest.digest.clone(),
                actual,
            });
        }
        let media_type = manifest.descriptor().media_type;
        if !media_type.is_manifest() {
            return Err(RegistryError::Unsupported {
                what: format!("pushing a document of type {media_type} as a manifest"),
            });
        }
        let url = manifest_url(&self.host, self.repository(), &selector)?;
        let mut req = Request::new(
            Method::PUT,
            url,
            vec![format!("repository:{}:pull,push", self.repository())],
            what.clone(),
        );
        req.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_str(media_type.as_str())
                .map_err(|_| RegistryError::protocol(&self.host.host_port(), "bad media type"))?,
        );
        req.body = Body::Bytes(Bytes::from(manifest.bytes.clone()));
        let answer = self.inner.send(&self.host, req).await?;
        if answer.response.status() != StatusCode::CREATED && !answer.response.status().is_success()
        {
            return Err(error_from(answer, &self.host.host_port(), &what, 1).await);
        }
        if let Some(returned) = answer
            .response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.parse::<Digest>().ok())
            && returned.algorithm() == manifest.digest.algorithm()
            && returned != manifest.digest
        {
            return Err(RegistryError::DigestMismatch {
                expected: manifest.digest.clone(),
                actual: returned,
            });
        }
        tracing::debug!(digest = %manifest.digest, %selector, repository = self.repository(), "pushed manifest");
        Ok(())
    }
}

#[async_trait]
impl ImageSink for RegistrySink {
    fn describe(&self) -> String {
        format!("docker://{}", self.reference)
    }

    async fn reuse_blob(
        &self,
        descriptor: &Descriptor,
        origin: Option<&BlobOrigin>,
    ) -> Result<bool, ImageError> {
        if self.has_blob(&descriptor.digest).await? {
            return Ok(true);
        }
        if let Some(o) = origin
            && o.registry == self.reference.registry()
            && o.repository != self.repository()
        {
            return Ok(self.mount_blob(&descriptor.digest, &o.repository).await?);
        }
        Ok(false)
    }

    async fn put_blob(&self, descriptor: &Descriptor, data: BlobReader) -> Result<(), ImageError> {
        Ok(self.push_blob(descriptor, data).await?)
    }

    async fn put_blob_from(
        &self,
        descriptor: &Descriptor,
        source: &dyn ImageSource,
    ) -> Result<(), ImageError> {
        Ok(self.push_blob_from(descriptor, source).await?)
    }

    async fn put_manifest(
        &self,
        manifest: &RawManifest,
        tag: Option<&str>,
    ) -> Result<(), ImageError> {
        Ok(self.push_manifest(manifest, tag).await?)
    }
}
