//! Uploads from sources that can re-open their blobs (`BlobReplay::Reopen`): nothing is
//! spooled; a request that must be repeated re-reads the blob from the source, hashed again
//! from the start. Faults are injected by the proxy in front of the real registry.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use common::*;
use strata_image::{BlobReader, BlobReplay, ImageError, ImageSource, RawManifest};
use strata_registry::{Client, UploadSpool};
use strata_spec::{Descriptor, Digest, MediaType};
use strata_store::{LayoutSource, OciLayout};
use strata_testkit::{Fault, FaultProxy, Rule, TestRegistry};

/// Bytes without short periods, so a splice at the wrong offset changes the digest.
fn pattern(seed: u32, len: usize) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_add(seed).wrapping_mul(2654435761) >> 13) as u8)
        .collect()
}

/// Wraps a source and counts how often each blob is opened; optionally serves other bytes
/// from the second opening on (a file changed under the copy).
struct Counting<'a> {
    inner: &'a dyn ImageSource,
    opens: AtomicUsize,
    later: Option<Vec<u8>>,
}

impl<'a> Counting<'a> {
    fn new(inner: &'a dyn ImageSource) -> Counting<'a> {
        Counting {
            inner,
            opens: AtomicUsize::new(0),
            later: None,
        }
    }
    fn opens(&self) -> usize {
        self.opens.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl ImageSource for Counting<'_> {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    async fn manifest(&self, digest: Option<&Digest>) -> Result<RawManifest, ImageError> {
        self.inner.manifest(digest).await
    }
    async fn blob(&self, descriptor: &Descriptor) -> Result<BlobReader, ImageError> {
        let n = self.opens.fetch_add(1, Ordering::SeqCst);
        match &self.later {
            Some(bytes) if n > 0 => Ok(reader(bytes)),
            _ => self.inner.blob(descriptor).await,
        }
    }
    fn blob_replay(&self) -> BlobReplay {
        self.inner.blob_replay()
    }
}

/// A layout holding one blob of `len` bytes, and its descriptor.
fn layout_with_blob(
    dir: &std::path::Path,
    seed: u32,
    len: usize,
) -> (OciLayout, Descriptor, Vec<u8>) {
    let layout = OciLayout::create_or_open(dir).unwrap();
    let bytes = pattern(seed, len);
    let d = layout
        .write_blob_bytes(MediaType::OCI_LAYER_GZIP, &bytes)
        .unwrap();
    (layout, d, bytes)
}

/// The 3rd PATCH of an upload dies 300 bytes into its body, before reaching the registry.
fn third_patch_dies_mid_body() -> Rule {
    Rule::new(
        "PATCH",
        "/blobs/uploads/",
        Fault::DropRequestBody {
            after: 300,
            forward: false,
        },
    )
    .nth(3)
}

/// The registry itself (not the proxy) serves exactly `bytes` for `d` under `repo_tag`.
async fn assert_registry_serves(
    registry: &TestRegistry,
    repo_tag: &str,
    d: &Descriptor,
    bytes: &[u8],
) {
    let back = client()
        .source(&reference(&registry.host(), repo_tag))
        .await
        .unwrap();
    assert_eq!(fetch_verified(&back, d).await.unwrap(), bytes);
}

/// No spool at all: any byte sent twice must come from re-opening the source.
fn client_without_spool(chunk: Option<u64>) -> Client {
    let mut options = options();
    options.chunk_size = chunk;
    options.upload_spool = UploadSpool::Off;
    Client::new(options).unwrap()
}

/// A broken PATCH resumes from the offset the registry reports, with the bytes re-read from
/// the re-opened layout blob (the client has no spool).
#[tokio::test]
async fn dropped_patch_resumes_from_a_reopened_layout_blob() {
    let registry = TestRegistry::start();
    let proxy = FaultProxy::start(&registry.host()).await;
    let dir = tempfile::tempdir().unwrap();
    let (layout, d, bytes) = layout_with_blob(dir.path(), 1, 6000);
    let source = LayoutSource::new(layout, None, "oci:test".into());
    assert_eq!(source.blob_replay(), BlobReplay::Reopen);
    let counting = Counting::new(&source);
    proxy.add(third_patch_dies_mid_body());
    let sink = client_without_spool(Some(1000))
        .sink(&reference(&proxy.host(), "reopen/chunked:v1"))
        .await
        .unwrap();
    sink.push_blob_from(&d, &counting).await.unwrap();
    assert!(registry.has_blob(&d.digest.to_string()));
    assert_eq!(counting.opens(), 2, "opened once more to resend");
    let ranges: Vec<String> = proxy
        .requests()
        .iter()
        .filter(|r| r.method == "PATCH")
        .filter_map(|r| r.content_range.clone())
        .collect();
    assert_eq!(
        ranges,
        [
            "0-999",
            "1000-1999",
            "2000-2999",
            "2000-2999",
            "3000-3999",
            "4000-4999",
            "5000-5999"
        ]
    );
    assert_eq!(
        proxy.matching("POST", "/blobs/uploads/").len(),
        1,
        "no restart"
    );
    assert_registry_serves(&registry, "reopen/chunked:v1", &d, &bytes).await;
}

/// A monolithic PUT broken mid-body is sent again whole from a re-opened blob.
#[tokio::test]
async fn dropped_put_is_resent_from_a_reopened_layout_blob() {
    let registry = TestRegistry::start();
    let proxy = FaultProxy::start(&registry.host()).await;
    let dir = tempfile::tempdir().unwrap();
    let (layout, d, bytes) = layout_with_blob(dir.path(), 2, 200_000);
    let source = LayoutSource::new(layout, None, "oci:test".into());
    let counting = Counting::new(&source);
    proxy.add(Rule::new(
        "PUT",
        "/blobs/uploads/",
        Fault::DropRequestBody {
            after: 70_000,
            forward: false,
        },
    ));
    let sink = client_without_spool(None)
        .sink(&reference(&proxy.host(), "reopen/put:v1"))
        .await
        .unwrap();
    sink.push_blob_from(&d, &counting).await.unwrap();
    assert!(registry.has_blob(&d.digest.to_string()));
    assert_eq!(counting.opens(), 2);
    let puts = proxy.matching("PUT", "/blobs/uploads/");
    assert_eq!(puts.len(), 2, "{puts:#?}");
    assert!(puts.iter().all(|p| p.content_length == Some(200_000)));
    assert_registry_serves(&registry, "reopen/put:v1", &d, &bytes).await;
}

/// The re-opened blob is hashed again from its first byte: when the source changed between
/// the openings (here only in bytes the registry had already received), the upload fails on
/// the digest and the registry never gets the blob.
#[tokio::test]
async fn a_blob_that_changed_when_reopened_fails_the_digest_check() {
    let registry = TestRegistry::start();
    let proxy = FaultProxy::start(&registry.host()).await;
    let dir = tempfile::tempdir().unwrap();
    let (layout, d, bytes) = layout_with_blob(dir.path(), 3, 6000);
    let source = LayoutSource::new(layout, None, "oci:test".into());
    let mut changed = bytes.clone();
    changed[10] ^= 0xff;
    let counting = Counting {
        later: Some(changed),
        ..Counting::new(&source)
    };
    proxy.add(third_patch_dies_mid_body());
    let sink = client_without_spool(Some(1000))
        .sink(&reference(&proxy.host(), "reopen/changed:v1"))
        .await
        .unwrap();
    let err = sink.push_blob_from(&d, &counting).await.unwrap_err();
    assert!(
        err.to_string().contains(&d.digest.to_string()),
        "names the blob: {err}"
    );
    assert!(
        matches!(err, strata_registry::RegistryError::DigestMismatch { .. }),
        "{err:?}"
    );
    assert!(!registry.has_blob(&d.digest.to_string()));
    assert!(
        proxy.matching("PUT", "/blobs/uploads/").is_empty(),
        "the final request is never sent"
    );
}

/// A source that streams once keeps the spool: the same broken PATCH resumes from it and
/// the source is opened only once.
#[tokio::test]
async fn a_source_that_streams_once_is_spooled() {
    struct Once<'a>(&'a dyn ImageSource);
    #[async_trait]
    impl ImageSource for Once<'_> {
        fn describe(&self) -> String {
            self.0.describe()
        }
        async fn manifest(&self, digest: Option<&Digest>) -> Result<RawManifest, ImageError> {
            self.0.manifest(digest).await
        }
        async fn blob(&self, descriptor: &Descriptor) -> Result<BlobReader, ImageError> {
            self.0.blob(descriptor).await
        }
    }
    let registry = TestRegistry::start();
    let proxy = FaultProxy::start(&registry.host()).await;
    let dir = tempfile::tempdir().unwrap();
    let (layout, d, bytes) = layout_with_blob(dir.path(), 4, 6000);
    let source = LayoutSource::new(layout, None, "oci:test".into());
    let once = Once(&source);
    assert_eq!(once.blob_replay(), BlobReplay::Once);
    let counting = Counting::new(&once);
    proxy.add(third_patch_dies_mid_body());
    let mut options = options();
    options.chunk_size = Some(1000);
    let sink = Client::new(options)
        .unwrap()
        .sink(&reference(&proxy.host(), "reopen/once:v1"))
        .await
        .unwrap();
    sink.push_blob_from(&d, &counting).await.unwrap();
    assert_eq!(counting.opens(), 1);
    assert_registry_serves(&registry, "reopen/once:v1", &d, &bytes).await;
}
