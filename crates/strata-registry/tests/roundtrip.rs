//! Push/pull round trips against the real distribution registry.

mod common;

use common::*;
use strata_image::{ImageSink, ImageSource};
use strata_testkit::{Fault, FaultProxy, Rule, TestRegistry, random_image, random_index};

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
        assert!(
            registry.has_blob(&d.digest.to_string()),
            "{} stored",
            d.digest
        );
    }
}

#[tokio::test]
async fn push_then_pull_index_preserves_every_document() {
    let registry = TestRegistry::start();
    let index = random_index(2, &[2000]);
    let client = client();
    let r = reference(&registry.host(), "multi/app:latest");
    push(&client.sink(&r).await.unwrap(), &index, "latest").await;
    let source = client.source(&r).await.unwrap();
    let top = source.manifest(None).await.unwrap();
    assert_eq!(top.bytes, index.manifest);
    assert_eq!(top.media_type.as_str(), strata_spec::MediaType::OCI_INDEX);
    for (_, child) in &index.children {
        let d = strata_spec::Digest::sha256_of(child);
        let got = source.manifest(Some(&d)).await.unwrap();
        assert_eq!(&got.bytes, child);
    }
    assert_blobs(&source, &index).await;
}

#[tokio::test]
async fn skopeo_reads_what_strata_pushed() {
    let registry = TestRegistry::start();
    let image = random_image(3, &[5000]);
    let r = reference(&registry.host(), "interop/pushed:v1");
    push(&client().sink(&r).await.unwrap(), &image, "v1").await;
    let out = std::process::Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{}/interop/pushed:v1", registry.host()))
        .output()
        .expect("skopeo is installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, image.manifest, "skopeo reads the exact bytes");
    let out = std::process::Command::new("skopeo")
        .args(["inspect", "--tls-verify=false"])
        .arg(format!("docker://{}/interop/pushed:v1", registry.host()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["Digest"], image.digest().to_string());
    assert_eq!(v["Layers"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn strata_reads_what_skopeo_pushed() {
    let registry = TestRegistry::start();
    let image = random_image(4, &[1000, 4000]);
    let dir = tempfile::tempdir().unwrap();
    image.write_oci_layout(dir.path(), "v2").unwrap();
    let out = std::process::Command::new("skopeo")
        .args(["copy", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:v2", dir.path().display()))
        .arg(format!("docker://{}/interop/byskopeo:v2", registry.host()))
        .output()
        .expect("skopeo is installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let source = client()
        .source(&reference(&registry.host(), "interop/byskopeo:v2"))
        .await
        .unwrap();
    let top = source.manifest(None).await.unwrap();
    assert_eq!(top.digest, image.digest(), "skopeo kept the manifest as is");
    assert_blobs(&source, &image).await;
}

#[tokio::test]
async fn head_skips_blobs_already_present() {
    let registry = TestRegistry::start();
    let proxy = FaultProxy::start(&registry.host()).await;
    let image = random_image(5, &[3000]);
    let r = reference(&proxy.host(), "skip/me:v1");
    let sink = client().sink(&r).await.unwrap();
    push(&sink, &image, "v1").await;
    proxy.clear_log();
    for (d, _) in image.blobs() {
        assert!(
            sink.reuse_blob(d, None).await.unwrap(),
            "{} present",
            d.digest
        );
    }
    let log = proxy.requests();
    assert_eq!(log.len(), image.blobs().count());
    assert!(
        log.iter()
            .all(|r| r.method == "HEAD" && r.status == Some(200)),
        "{log:#?}"
    );
    let missing = random_image(6, &[10]);
    let (d, _) = missing.blobs().nth(1).unwrap();
    assert!(!sink.reuse_blob(d, None).await.unwrap());
}

#[tokio::test]
async fn cross_repo_mount_uploads_nothing() {
    let registry = TestRegistry::start();
    let proxy = FaultProxy::start(&registry.host()).await;
    let image = random_image(7, &[20_000]);
    let client = client();
    let from = reference(&proxy.host(), "mount/source:v1");
    push(&client.sink(&from).await.unwrap(), &image, "v1").await;
    let origin = client.source(&from).await.unwrap().origin().unwrap();
    let to = reference(&proxy.host(), "mount/target:v1");
    let sink = client.sink(&to).await.unwrap();
    proxy.clear_log();
    for (d, _) in image.blobs() {
        assert!(
            sink.reuse_blob(d, Some(&origin)).await.unwrap(),
            "{} mounted",
            d.digest
        );
    }
    let log = proxy.requests();
    assert!(
        log.iter().all(|r| r.method != "PUT" && r.method != "PATCH"),
        "no upload: {log:#?}"
    );
    let mounts: Vec<_> = log
        .iter()
        .filter(|r| {
            r.method == "POST"
                && r.path.contains("mount=")
                && r.path.contains("from=mount%2Fsource")
        })
        .collect();
    assert_eq!(mounts.len(), image.blobs().count(), "{log:#?}");
    assert!(mounts.iter().all(|r| r.status == Some(201)));
    // Present in the target repository now.
    for (d, _) in image.blobs() {
        assert!(sink.has_blob(&d.digest).await.unwrap());
    }
    // A mount from a repository without the blob is refused (202) and the upload the
    // registry opened instead is cancelled.
    let other = random_image(8, &[100]);
    let (d, _) = other.blobs().nth(1).unwrap();
    proxy.clear_log();
    assert!(!sink.reuse_blob(d, Some(&origin)).await.unwrap());
    let log = proxy.requests();
    assert!(
        log.iter()
            .any(|r| r.method == "POST" && r.status == Some(202)),
        "{log:#?}"
    );
    assert!(log.iter().any(|r| r.method == "DELETE"), "{log:#?}");
}

#[tokio::test]
async fn chunked_upload_sends_ordered_patches() {
    let registry = TestRegistry::start();
    let proxy = FaultProxy::start(&registry.host()).await;
    let image = random_image(9, &[5000]);
    let mut options = options();
    options.chunk_size = Some(1024);
    let client = strata_registry::Client::new(options).unwrap();
    let r = reference(&proxy.host(), "chunked/app:v1");
    push(&client.sink(&r).await.unwrap(), &image, "v1").await;
    let layer = image.layers()[0].clone();
    let patches = proxy.matching("PATCH", "/blobs/uploads/");
    let size = layer.size as u64;
    let expected_patches = size.div_ceil(1024) as usize
        + (image.blobs().next().unwrap().0.size as u64).div_ceil(1024) as usize;
    assert_eq!(patches.len(), expected_patches, "{patches:#?}");
    let layer_ranges: Vec<String> = patches
        .iter()
        .filter_map(|p| p.content_range.clone())
        .filter(|r| r.starts_with("1024-"))
        .collect();
    assert_eq!(layer_ranges, vec!["1024-2047".to_string()]);
    let puts = proxy.matching("PUT", "/blobs/uploads/.*digest=");
    assert_eq!(puts.len(), 2);
    assert!(
        puts.iter()
            .all(|p| p.content_length == Some(0) && p.status == Some(201))
    );
    let source = client.source(&r).await.unwrap();
    assert_blobs(&source, &image).await;
}

#[tokio::test]
async fn empty_blob_round_trip() {
    let registry = TestRegistry::start();
    let client = client();
    let r = reference(&registry.host(), "empty/blob:v1");
    let sink = client.sink(&r).await.unwrap();
    let d = strata_spec::Descriptor::of_bytes("application/octet-stream", b"");
    sink.put_blob(&d, reader(b"")).await.unwrap();
    assert!(sink.has_blob(&d.digest).await.unwrap());
    let source = client.source(&r).await.unwrap();
    assert_eq!(fetch_verified(&source, &d).await.unwrap(), b"");
}

/// distribution 2.8 ignores `n` on tag lists (paging came in v3), so the pages are scripted
/// by the proxy in front of it: what is tested is the client following `Link` headers.
#[tokio::test]
async fn tags_follow_link_pages() {
    let registry = TestRegistry::start();
    let proxy = FaultProxy::start(&registry.host()).await;
    let mut options = options();
    options.tags_page_size = Some(2);
    let client = strata_registry::Client::new(options).unwrap();
    let r = reference(&proxy.host(), "tags/app:t1");
    let page = |tags: &[&str], next: Option<&str>| {
        let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
        if let Some(n) = next {
            headers.push(("link".into(), format!("<{n}>; rel=\"next\"")));
        }
        Fault::Status {
            status: 200,
            headers,
            body: serde_json::to_vec(&serde_json::json!({"name": "tags/app", "tags": tags}))
                .unwrap(),
        }
    };
    proxy.add(Rule::new(
        "GET",
        r"/tags/list\?n=2$",
        page(&["t1", "t2"], Some("/v2/tags/app/tags/list?n=2&last=t2")),
    ));
    // An absolute next link on the same origin works too.
    let abs = format!("http://{}/v2/tags/app/tags/list?n=2&last=t4", proxy.host());
    proxy.add(Rule::new(
        "GET",
        r"last=t2",
        page(&["t3", "t4"], Some(&abs)),
    ));
    proxy.add(Rule::new("GET", r"last=t4", page(&["t5"], None)));
    let tags = client.tags(&r).await.unwrap();
    assert_eq!(tags, ["t1", "t2", "t3", "t4", "t5"]);
    let pages = proxy.matching("GET", "/tags/list");
    assert_eq!(pages.len(), 3, "{pages:#?}");
    assert!(pages.iter().all(|p| p.path.contains("n=2")));

    // A Link to another host is refused, not followed.
    proxy.add(Rule::new(
        "GET",
        r"/tags/list\?n=2$",
        page(&["t1"], Some("http://evil.example/v2/x/tags/list")),
    ));
    let err = client.tags(&r).await.unwrap_err();
    assert!(err.to_string().contains("another host"), "{err}");
}

#[tokio::test]
async fn manifest_by_digest_only_and_head() {
    let registry = TestRegistry::start();
    let image = random_image(11, &[100]);
    let client = client();
    let r = reference(&registry.host(), "bydigest/app:unused");
    let sink = client.sink(&r).await.unwrap();
    for (d, b) in image.blobs() {
        sink.put_blob(d, reader(b)).await.unwrap();
    }
    let raw =
        strata_image::RawManifest::new(image.manifest.clone(), image.media_type.as_str().into());
    sink.put_manifest(&raw, None).await.unwrap();
    let source = client.source(&r).await.unwrap();
    let head = source
        .head_manifest(Some(&image.digest()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(head.digest, image.digest());
    assert_eq!(head.size as usize, image.manifest.len());
    assert_eq!(head.media_type.as_str(), image.media_type);
    assert!(
        source.head_manifest(None).await.unwrap().is_none(),
        "no tag was pushed"
    );
    // distribution answers 404 for a repository without tags; others send an empty list.
    match client.tags(&r).await {
        Ok(tags) => assert!(tags.is_empty(), "{tags:?}"),
        Err(e) => assert!(e.is_not_found(), "{e}"),
    }
    let err = source.manifest(None).await.unwrap_err();
    assert!(err.is_not_found(), "{err}");
}

/// The copy pipeline drives a registry source and sink: many blobs in flight over one pool,
/// same-registry copies mount instead of uploading, every document keeps its digest.
#[tokio::test]
async fn copy_pipeline_between_registries_and_repositories() {
    let a = TestRegistry::start();
    let b = TestRegistry::start();
    let index = random_index(12, &[30_000, 20_000, 10_000, 5_000]);
    strata_testkit::push_image_raw(&a.host(), "src/app", "v1", &index, None).await;
    let proxy_a = FaultProxy::start(&a.host()).await;
    let client = client();
    let source = client
        .source(&reference(&proxy_a.host(), "src/app:v1"))
        .await
        .unwrap();
    let options = strata_copy::CopyOptions {
        selection: strata_copy::Selection::All,
        tag: Some("copied".into()),
        ..Default::default()
    };
    // Another registry: everything uploaded.
    let sink_b = client
        .sink(&reference(&b.host(), "dst/app:copied"))
        .await
        .unwrap();
    let report = strata_copy::copy_image(&source, &sink_b, &options)
        .await
        .unwrap();
    assert_eq!(report.digest, index.digest());
    assert_eq!(report.blobs_copied, index.blobs().count());
    let out = std::process::Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{}/dst/app:copied", b.host()))
        .output()
        .unwrap();
    assert_eq!(out.stdout, index.manifest);
    // The same registry, another repository: mounted, nothing uploaded.
    let sink_a = client
        .sink(&reference(&proxy_a.host(), "dst/app:copied"))
        .await
        .unwrap();
    proxy_a.clear_log();
    let report = strata_copy::copy_image(&source, &sink_a, &options)
        .await
        .unwrap();
    assert_eq!(report.blobs_skipped, index.blobs().count());
    let log = proxy_a.requests();
    assert!(
        log.iter()
            .all(|r| r.method != "PATCH" && !(r.method == "PUT" && r.path.contains("/blobs/"))),
        "{log:#?}"
    );
    assert_eq!(
        log.iter().filter(|r| r.path.contains("mount=")).count(),
        index.blobs().count()
    );
    let copied = client
        .source(&reference(&a.host(), "dst/app:copied"))
        .await
        .unwrap();
    assert_eq!(copied.manifest(None).await.unwrap().bytes, index.manifest);
    assert_blobs(&copied, &index).await;
}
