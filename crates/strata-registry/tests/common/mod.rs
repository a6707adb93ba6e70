//! Shared helpers of the registry tests.
#![allow(dead_code)]

use std::time::Duration;

use strata_image::{BlobReader, ImageSink, ImageSource, RawManifest, VerifyingReader};
use strata_registry::{
    Client, CredentialSource, RegistryError, RegistryOptions, RegistrySink, RetryPolicy, TlsMode,
};
use strata_spec::{Descriptor, Reference};
use strata_testkit::TestImage;
use tokio::io::AsyncReadExt;

/// Options for loopback tests: plain HTTP allowed, no credentials, short backoffs.
pub fn options() -> RegistryOptions {
    RegistryOptions {
        tls: TlsMode::Insecure,
        credentials: CredentialSource::Anonymous,
        retry: RetryPolicy {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(200),
        },
        read_timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(5),
        ..RegistryOptions::default()
    }
}

pub fn client() -> Client {
    Client::new(options()).expect("client")
}

pub fn reference(host: &str, repo_tag: &str) -> Reference {
    format!("{host}/{repo_tag}").parse().expect("reference")
}

/// The error fetching `host/repo_tag`'s manifest ends in (the source opens: the ping and
/// the auth challenge pass).
pub async fn manifest_error(client: &Client, host: &str, repo_tag: &str) -> RegistryError {
    client
        .source(&reference(host, repo_tag))
        .await
        .expect("open the source")
        .fetch_manifest(None)
        .await
        .expect_err("the manifest fetch fails")
}

pub fn reader(bytes: &[u8]) -> BlobReader {
    Box::pin(std::io::Cursor::new(bytes.to_vec()))
}

/// Push `image` through strata's sink: blobs (skipping present ones), children, then the tag.
pub async fn push(sink: &RegistrySink, image: &TestImage, tag: &str) {
    for (d, b) in image.blobs() {
        if !sink.reuse_blob(d, None).await.expect("reuse_blob") {
            sink.put_blob(d, reader(b)).await.expect("put_blob");
        }
    }
    for (mt, bytes, reference) in image.manifests_to_push(tag) {
        let raw = RawManifest::new(bytes, mt.as_str().into());
        let tag = (reference == tag).then_some(tag);
        sink.put_manifest(&raw, tag).await.expect("put_manifest");
    }
}

/// Read a whole blob through the source, verified against its descriptor.
pub async fn fetch_verified(
    source: &dyn ImageSource,
    descriptor: &Descriptor,
) -> Result<Vec<u8>, strata_image::ImageError> {
    let stream = source.blob(descriptor).await?;
    let mut r = VerifyingReader::new(stream, descriptor)?;
    let mut out = Vec::new();
    r.read_to_end(&mut out)
        .await
        .map_err(|e| strata_image::ImageError::from_io("reading blob", e))?;
    Ok(out)
}

/// Check every blob of `image` comes back byte for byte.
pub async fn assert_blobs(source: &dyn ImageSource, image: &TestImage) {
    for (d, b) in image.blobs() {
        let got = fetch_verified(source, d).await.expect("blob");
        assert_eq!(got, b, "blob {}", d.digest);
    }
}
