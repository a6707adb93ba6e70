//! Push/pull round trips against the real distribution registry.

mod common;

use common::*;
use strata_image::{ImageSink, ImageSource};
use strata_testkit::{FaultProxy, TestRegistry, random_image, random_index};

#[tokio::test]
async fn push_then_pull_single_image_preserves_bytes() {
    let registry = TestRegistry::start();
    let image = random_image(1, &[3000, 70_000]);
    let client = client();
    let r = reference(&registry.host(), "app/one:v1");
    let sink = client.sink(&r).await.unwrap();
    push(&sink, &image, "v1").await;

    let source = client.source(&r).await.unwrap();
    let top = source.manifest(None).await.unwrap();
    assert_eq!(top.bytes, image.manifest);
    assert_eq!(top.digest, image.digest());
    assert_eq!(top.media_type.as_str(), image.media_type);
    let by_digest = source.manifest(Some(&image.digest())).await.unwrap();
    assert_eq!(by_digest.bytes, image.manifest);
    assert_blobs(&source, &image).await;
    for (d, _) in image.blobs() {
        assert!(registry.has_blob(&d.digest.to_string()), "{} stored", d.digest);
    }
}
