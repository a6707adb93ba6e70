//! RELIABILITY §b fault rows (F*) and §a client rows (M*, N*) against the real registry with
//! a fault-injecting proxy in front of it.

mod common;

use std::time::Duration;

use common::*;
use strata_image::{ImageError, ImageSink, ImageSource, RawManifest};
use strata_registry::{Client, RegistryError, RegistrySource, UploadSpool};
use strata_spec::{Descriptor, MediaType};
use strata_testkit::{Fault, FaultProxy, Rule, TestImage, TestRegistry, random_image};

/// A registry with one image at `repo:v1`, a proxy in front, a client for the proxy.
async fn setup(seed: u64, sizes: &[usize]) -> (TestRegistry, FaultProxy, TestImage) {
    let registry = TestRegistry::start();
    let image = random_image(seed, sizes);
    strata_testkit::push_image_raw(&registry.host(), "faults/app", "v1", &image, None).await;
    let proxy = FaultProxy::start(&registry.host()).await;
    (registry, proxy, image)
}

/// `faults/app:v1` read through `proxy` with `client`.
async fn app_source(client: &Client, proxy: &FaultProxy) -> RegistrySource {
    client
        .source(&reference(&proxy.host(), "faults/app:v1"))
        .await
        .unwrap()
}

fn layer(image: &TestImage) -> Descriptor {
    image.layers()[0].clone()
}

fn layer_bytes(image: &TestImage) -> Vec<u8> {
    let d = layer(image);
    image
        .blobs()
        .find(|(x, _)| x.digest == d.digest)
        .unwrap()
        .1
        .to_vec()
}

#[tokio::test]
async fn f1_broken_blob_body_resumes_with_range() {
    let (_r, proxy, image) = setup(20, &[200_000]).await;
    let d = layer(&image);
    proxy.add(Rule::new("GET", "/blobs/sha256:", Fault::ResetAfter(70_000)).nth(1));
    let source = app_source(&client(), &proxy).await;
    let got = fetch_verified(&source, &d).await.unwrap();
    assert_eq!(got, layer_bytes(&image));
    let gets = proxy.matching("GET", &format!("/blobs/{}", d.digest));
    assert_eq!(gets.len(), 2, "{gets:#?}");
    assert_eq!(gets[0].range, None);
    // The resume asks for exactly what is missing.
    let range = gets[1].range.clone().unwrap();
    let from: u64 = range
        .strip_prefix("bytes=")
        .unwrap()
        .strip_suffix('-')
        .unwrap()
        .parse()
        .unwrap();
    assert!(from > 0 && from <= 70_000, "{range}");
    assert_eq!(gets[1].status, Some(206));
    // Over plain HTTP both GETs took the direct path (crate::direct: its own request with
    // `Connection: close`, the body read straight into the caller's buffer); manifests keep
    // reqwest's pooled connections.
    for g in &gets {
        assert_eq!(g.connection.as_deref(), Some("close"), "{g:#?}");
    }
    source.manifest(None).await.unwrap();
    let manifests = proxy.matching("GET", "/manifests/v1");
    assert!(
        manifests.iter().all(|m| m.connection.is_none()),
        "{manifests:#?}"
    );
}

#[tokio::test]
async fn blob_get_statuses_keep_their_meaning_on_the_direct_path() {
    // 429 with Retry-After and 503 are retried (the direct answer is handed to the same
    // retry rules), then the blob arrives.
    let (_r, proxy, image) = setup(31, &[20_000]).await;
    let d = layer(&image);
    proxy.add(
        Rule::new(
            "GET",
            "/blobs/sha256:",
            Fault::with_header(429, "Retry-After", "3600"),
        )
        .nth(1),
    );
    proxy.add(Rule::new("GET", "/blobs/sha256:", Fault::status(503)).nth(2));
    let source = app_source(&client(), &proxy).await;
    assert_eq!(
        fetch_verified(&source, &d).await.unwrap(),
        layer_bytes(&image)
    );
    let statuses: Vec<_> = proxy
        .matching("GET", &format!("/blobs/{}", d.digest))
        .iter()
        .map(|g| g.status)
        .collect();
    assert_eq!(statuses, [Some(429), Some(503), Some(200)]);

    // A registry error document on a blob GET is read and reported with its message.
    let (_r, proxy, image) = setup(32, &[1_000]).await;
    let d = layer(&image);
    proxy.add(
        Rule::new(
            "GET",
            "/blobs/sha256:",
            Fault::registry_error(403, "DENIED", "no pulls from this address", "rid-403"),
        )
        .always(),
    );
    let source = app_source(&client(), &proxy).await;
    let err = fetch_verified(&source, &d).await.unwrap_err().to_string();
    assert!(err.contains("no pulls from this address"), "{err}");
    assert!(err.contains(&d.digest.to_string()), "{err}");
}

#[tokio::test]
async fn a_chunked_blob_answer_is_left_to_reqwest() {
    // The direct path reads only Content-Length bodies: a chunked 200 is declined and the
    // same attempt is sent again through reqwest, which gets the real blob.
    let (_r, proxy, image) = setup(34, &[1_000]).await;
    let d = layer(&image);
    proxy.add(
        Rule::new(
            "GET",
            "/blobs/sha256:",
            Fault::HugeBody {
                status: 200,
                content_type: "application/octet-stream".into(),
                size: 1_000,
                declare_length: false,
            },
        )
        .nth(1),
    );
    let source = app_source(&client(), &proxy).await;
    assert_eq!(
        fetch_verified(&source, &d).await.unwrap(),
        layer_bytes(&image)
    );
    let gets = proxy.matching("GET", &format!("/blobs/{}", d.digest));
    assert_eq!(gets.len(), 2, "{gets:#?}");
    assert_eq!(gets[0].connection.as_deref(), Some("close"));
    assert_eq!(gets[1].connection, None, "the second try is reqwest's");
    // Declined once, the registry's later blob GETs go through reqwest without asking twice.
    let other = image
        .blobs()
        .map(|(b, _)| b.clone())
        .find(|b| b.digest != d.digest)
        .unwrap();
    fetch_verified(&source, &other).await.unwrap();
    let gets = proxy.matching("GET", &format!("/blobs/{}", other.digest));
    assert_eq!(gets.len(), 1, "{gets:#?}");
    assert_eq!(gets[0].connection, None);
}

#[tokio::test]
async fn stalled_blob_body_times_out_and_resumes() {
    // The body stops for longer than the read timeout: the direct reader gives up on that
    // connection and asks again (without the timeout the first GET would take 20 s and
    // be the only one).
    let (_r, proxy, image) = setup(33, &[64_000]).await;
    let d = layer(&image);
    proxy.add(
        Rule::new(
            "GET",
            "/blobs/sha256:",
            Fault::SlowBody {
                chunk: 16_000,
                delay: Duration::from_secs(5),
            },
        )
        .nth(1),
    );
    let mut options = options();
    options.read_timeout = Duration::from_millis(300);
    let source = app_source(&Client::new(options).unwrap(), &proxy).await;
    assert_eq!(
        fetch_verified(&source, &d).await.unwrap(),
        layer_bytes(&image)
    );
    let gets = proxy.matching("GET", &format!("/blobs/{}", d.digest));
    assert_eq!(gets.len(), 2, "{gets:#?}");
}

#[tokio::test]
async fn f2_resume_refuses_200_or_wrong_content_range() {
    for (name, second) in [
        ("ignored range", Fault::IgnoreRange),
        ("wrong range", Fault::WrongRange),
    ] {
        let (_r, proxy, image) = setup(21, &[100_000]).await;
        let d = layer(&image);
        proxy.add(Rule::new("GET", "/blobs/sha256:", Fault::ResetAfter(30_000)).nth(1));
        proxy.add(Rule::new("GET", "/blobs/sha256:", second).nth(2).always());
        let source = app_source(&client(), &proxy).await;
        let err = fetch_verified(&source, &d).await.unwrap_err();
        let msg = format!(
            "{err} {:?}",
            std::error::Error::source(&err).map(|s| s.to_string())
        );
        assert!(msg.contains("not splicing"), "{name}: {msg}");
    }
}

#[tokio::test]
async fn f3_transient_5xx_on_manifest_and_head_are_retried_then_reported() {
    let (_r, proxy, image) = setup(22, &[100]).await;
    proxy.add(Rule::new("GET", "/manifests/v1", Fault::status(503)).times(2));
    proxy.add(Rule::new("HEAD", "/blobs/", Fault::status(504)).times(1));
    let client = client();
    let r = reference(&proxy.host(), "faults/app:v1");
    let source = client.source(&r).await.unwrap();
    assert_eq!(source.manifest(None).await.unwrap().bytes, image.manifest);
    assert_eq!(proxy.matching("GET", "/manifests/v1").len(), 3);
    let sink = client.sink(&r).await.unwrap();
    assert!(sink.reuse_blob(&layer(&image), None).await.unwrap());

    // Forever failing: the error names host, status, code, request id and the attempts.
    proxy.add(
        Rule::new(
            "GET",
            "/manifests/v1",
            Fault::registry_error(502, "UNAVAILABLE", "upstream down", "req-42"),
        )
        .always(),
    );
    let err = source.fetch_manifest(None).await.unwrap_err();
    let msg = err.to_string();
    for want in [
        proxy.host().as_str(),
        "502",
        "UNAVAILABLE",
        "upstream down",
        "req-42",
        "4 attempts",
    ] {
        assert!(msg.contains(want), "{want:?} missing in {msg}");
    }
    assert!(matches!(
        err,
        RegistryError::Http {
            status: 502,
            attempts: 4,
            ..
        }
    ));
}

#[tokio::test]
async fn f4_retry_after_seconds_and_date_are_honoured_and_capped() {
    let (_r, proxy, image) = setup(23, &[100]).await;
    // One hour in both forms: without the cap (200 ms in these options) the test would hang.
    let date = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(3600));
    proxy.add(Rule::new(
        "GET",
        "/manifests/v1",
        Fault::with_header(429, "Retry-After", "3600"),
    ));
    proxy.add(
        Rule::new(
            "GET",
            "/manifests/v1",
            Fault::with_header(429, "Retry-After", &date),
        )
        .nth(2),
    );
    proxy.add(Rule::new("GET", "/manifests/v1", Fault::status(429)).nth(3));
    let source = app_source(&client(), &proxy).await;
    assert_eq!(source.manifest(None).await.unwrap().bytes, image.manifest);
    assert_eq!(proxy.matching("GET", "/manifests/v1").len(), 4);
}

#[tokio::test]
async fn f5_429_forever_gives_up_and_commits_nothing() {
    let (registry, proxy, image) = setup(24, &[100]).await;
    proxy.add(
        Rule::new(
            "PUT",
            "/manifests/",
            Fault::registry_error(429, "TOOMANYREQUESTS", "slow down", "rid-7"),
        )
        .always(),
    );
    let sink = client()
        .sink(&reference(&proxy.host(), "faults/app:v9"))
        .await
        .unwrap();
    let raw = RawManifest::new(image.manifest.clone(), image.media_type.as_str().into());
    let err = sink.push_manifest(&raw, Some("v9")).await.unwrap_err();
    assert!(
        matches!(
            err,
            RegistryError::Http {
                status: 429,
                attempts: 4,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("TOOMANYREQUESTS"), "{err}");
    assert_eq!(proxy.matching("PUT", "/manifests/v9").len(), 4);
    let direct = client()
        .source(&reference(&registry.host(), "faults/app:v9"))
        .await
        .unwrap();
    assert!(
        direct.head_manifest(None).await.unwrap().is_none(),
        "tag not committed"
    );
}

#[tokio::test]
async fn f6_m4_wrong_bytes_fail_digest_check() {
    let (_r, proxy, image) = setup(25, &[10_000]).await;
    let d = layer(&image);
    proxy.add(Rule::new("GET", "/blobs/sha256:", Fault::CorruptBody).always());
    let source = app_source(&client(), &proxy).await;
    let err = fetch_verified(&source, &d).await.unwrap_err();
    match err {
        ImageError::DigestMismatch { expected, actual } => {
            assert_eq!(expected, d.digest);
            assert_ne!(actual, d.digest);
        }
        other => panic!("{other}"),
    }
}

#[tokio::test]
async fn f7_truncated_body_is_resumed() {
    let (_r, proxy, image) = setup(26, &[50_000]).await;
    let d = layer(&image);
    proxy.add(Rule::new("GET", "/blobs/sha256:", Fault::Truncate(10_000)));
    let source = app_source(&client(), &proxy).await;
    assert_eq!(
        fetch_verified(&source, &d).await.unwrap(),
        layer_bytes(&image)
    );
    let gets = proxy.matching("GET", &format!("/blobs/{}", d.digest));
    assert_eq!(gets[1].range.as_deref(), Some("bytes=10000-"));
}

#[tokio::test]
async fn f8_longer_body_aborts_at_size_plus_one() {
    let (_r, proxy, image) = setup(27, &[5_000]).await;
    let d = layer(&image);
    proxy.add(Rule::new("GET", "/blobs/sha256:", Fault::ExtendBody(100)));
    let source = app_source(&client(), &proxy).await;
    let err = fetch_verified(&source, &d).await.unwrap_err();
    assert!(matches!(err, ImageError::SizeMismatch { .. }), "{err}");
}

#[tokio::test]
async fn f9_stalled_socket_times_out() {
    let (_r, proxy, _image) = setup(28, &[100]).await;
    proxy.add(Rule::new("GET", "/manifests/v1", Fault::Hang).always());
    let mut options = options();
    options.read_timeout = Duration::from_millis(300);
    options.retry.max_attempts = 2;
    let source = app_source(&Client::new(options).unwrap(), &proxy).await;
    let err = source.fetch_manifest(None).await.unwrap_err();
    // No answer within the read timeout is not asked again (it would hang as long again).
    assert!(
        matches!(err, RegistryError::Connection { attempts: 1, .. }),
        "{err}"
    );
    assert_eq!(proxy.matching("GET", "/manifests/v1").len(), 1);
    assert!(err.to_string().contains(&proxy.host()), "{err}");
}

async fn chunked_client(chunk: u64) -> Client {
    let mut options = options();
    options.chunk_size = Some(chunk);
    Client::new(options).unwrap()
}

#[tokio::test]
async fn f10_dropped_patch_resumes_from_the_registry_offset() {
    let (registry, proxy, _) = setup(29, &[100]).await;
    let image = random_image(30, &[6000]);
    let client = chunked_client(1000).await;
    // The 3rd PATCH of the layer dies mid-body before reaching the registry; the 5th gets 416.
    let d = layer(&image);
    proxy.add(
        Rule::new(
            "PATCH",
            "/blobs/uploads/",
            Fault::DropRequestBody {
                after: 300,
                forward: false,
            },
        )
        .nth(3),
    );
    proxy.add(Rule::new("PATCH", "/blobs/uploads/", Fault::status(416)).nth(6));
    let sink = client
        .sink(&reference(&proxy.host(), "faults/chunked:v1"))
        .await
        .unwrap();
    sink.put_blob(&d, reader(&layer_bytes(&image)))
        .await
        .unwrap();
    assert!(registry.has_blob(&d.digest.to_string()));
    let log = proxy.requests();
    let status_gets: Vec<_> = log
        .iter()
        .filter(|r| r.method == "GET" && r.path.contains("/blobs/uploads/"))
        .collect();
    assert_eq!(status_gets.len(), 2, "{log:#?}");
    assert!(status_gets.iter().all(|r| r.status == Some(204)));
    let ranges: Vec<String> = log
        .iter()
        .filter(|r| r.method == "PATCH")
        .filter_map(|r| r.content_range.clone())
        .collect();
    // 0-999, 1000-1999, [2000-2999 dropped], 2000-2999 again, 3000-3999, [4000-4999 → 416],
    // 4000-4999 again, then the rest.
    assert_eq!(
        &ranges[..7],
        [
            "0-999",
            "1000-1999",
            "2000-2999",
            "2000-2999",
            "3000-3999",
            "4000-4999",
            "4000-4999"
        ]
    );
    assert_eq!(
        log.iter().filter(|r| r.method == "POST").count(),
        1,
        "no restart"
    );
    let source = client
        .source(&reference(&registry.host(), "faults/chunked:v1"))
        .await
        .unwrap();
    assert_eq!(
        fetch_verified(&source, &d).await.unwrap(),
        layer_bytes(&image)
    );
}

#[tokio::test]
async fn f10_patch_broken_after_partly_reaching_registry_continues_where_it_says() {
    let (registry, proxy, _) = setup(31, &[100]).await;
    let image = random_image(32, &[5000]);
    let d = layer(&image);
    let client = chunked_client(2000).await;
    // 700 bytes of the 2nd PATCH reach the registry before both connections break. The
    // registry (2.8) discards the partial chunk and reports `Range: 0-1999`; the client asks
    // and re-sends from there, out of its spool.
    proxy.add(
        Rule::new(
            "PATCH",
            "/blobs/uploads/",
            Fault::DropRequestBody {
                after: 700,
                forward: true,
            },
        )
        .nth(2),
    );
    let sink = client
        .sink(&reference(&proxy.host(), "faults/partial:v1"))
        .await
        .unwrap();
    sink.put_blob(&d, reader(&layer_bytes(&image)))
        .await
        .unwrap();
    assert!(registry.has_blob(&d.digest.to_string()));
    let log = proxy.requests();
    let status = log
        .iter()
        .find(|r| r.method == "GET" && r.path.contains("/blobs/uploads/"))
        .expect("status asked");
    assert_eq!(status.status, Some(204));
    let ranges: Vec<String> = log
        .iter()
        .filter(|r| r.method == "PATCH")
        .filter_map(|r| r.content_range.clone())
        .collect();
    assert_eq!(&ranges[..3], ["0-1999", "2000-3999", "2000-3999"]);
    let source = client
        .source(&reference(&registry.host(), "faults/partial:v1"))
        .await
        .unwrap();
    assert_eq!(
        fetch_verified(&source, &d).await.unwrap(),
        layer_bytes(&image)
    );
}

#[tokio::test]
async fn f11_session_gone_restarts_once_and_digest_invalid_fails() {
    let (registry, proxy, _) = setup(33, &[100]).await;
    let image = random_image(34, &[3000]);
    let d = layer(&image);
    let client = client();
    proxy.add(Rule::new(
        "PUT",
        "/blobs/uploads/",
        Fault::registry_error(404, "BLOB_UPLOAD_UNKNOWN", "gone", "r1"),
    ));
    let sink = client
        .sink(&reference(&proxy.host(), "faults/gone:v1"))
        .await
        .unwrap();
    sink.put_blob(&d, reader(&layer_bytes(&image)))
        .await
        .unwrap();
    assert!(registry.has_blob(&d.digest.to_string()));
    assert_eq!(proxy.matching("POST", "/blobs/uploads/").len(), 2);

    // Gone twice in a row: one restart only.
    proxy.clear_log();
    let other = random_image(35, &[3000]);
    let d2 = layer(&other);
    proxy.add(
        Rule::new(
            "PUT",
            "/blobs/uploads/",
            Fault::registry_error(404, "BLOB_UPLOAD_UNKNOWN", "gone", "r2"),
        )
        .times(2),
    );
    let err = sink
        .push_blob(&d2, reader(&layer_bytes(&other)))
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert_eq!(proxy.matching("POST", "/blobs/uploads/").len(), 2);

    // A digest the registry rejects: the error carries its code, no retry.
    proxy.clear_log();
    proxy.add(Rule::new(
        "PUT",
        "/blobs/uploads/",
        Fault::registry_error(400, "DIGEST_INVALID", "provided digest did not match", "r3"),
    ));
    let err = sink
        .push_blob(&d2, reader(&layer_bytes(&other)))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, RegistryError::Http { status: 400, code: Some(c), .. } if c == "DIGEST_INVALID"),
        "{err}"
    );
    assert_eq!(proxy.matching("PUT", "/blobs/uploads/").len(), 1);
}

#[tokio::test]
async fn f12_bodies_are_resent_only_when_replayable() {
    let (registry, proxy, image) = setup(36, &[100]).await;
    let client = client();
    let r = reference(&proxy.host(), "faults/app:v1");
    let sink = client.sink(&r).await.unwrap();
    // Manifest PUT: bytes in memory, retried.
    proxy.add(Rule::new("PUT", "/manifests/again", Fault::status(503)));
    let raw = RawManifest::new(image.manifest.clone(), image.media_type.as_str().into());
    sink.put_manifest(&raw, Some("again")).await.unwrap();
    let puts = proxy.matching("PUT", "/manifests/again");
    assert_eq!(puts.len(), 2);
    assert!(
        puts.iter()
            .all(|p| p.content_length == Some(image.manifest.len() as u64))
    );

    // Blob PUT with the spool: re-sent whole.
    let blob = random_image(37, &[20_000]);
    let d = layer(&blob);
    proxy.add(Rule::new("PUT", "/blobs/uploads/", Fault::status(500)));
    sink.put_blob(&d, reader(&layer_bytes(&blob)))
        .await
        .unwrap();
    assert!(registry.has_blob(&d.digest.to_string()));
    let puts = proxy.matching("PUT", "/blobs/uploads/");
    assert!(
        puts.iter().all(|p| p.content_length == Some(d.size as u64)),
        "never re-sent empty: {puts:#?}"
    );

    // Without a spool, a streamed body that was consumed is not re-sent.
    let mut options = options();
    options.upload_spool = UploadSpool::Off;
    let nospool = Client::new(options).unwrap().sink(&r).await.unwrap();
    let blob = random_image(38, &[20_000]);
    let d = layer(&blob);
    proxy.clear_log();
    proxy.add(Rule::new(
        "PUT",
        "/blobs/uploads/",
        Fault::DropRequestBody {
            after: 5000,
            forward: false,
        },
    ));
    let err = nospool
        .push_blob(&d, reader(&layer_bytes(&blob)))
        .await
        .unwrap_err();
    assert!(!registry.has_blob(&d.digest.to_string()), "{err}");
    assert_eq!(
        proxy.matching("PUT", "/blobs/uploads/").len(),
        1,
        "not re-sent"
    );
}

#[tokio::test]
async fn f14_redirect_loop_stops() {
    let (_r, proxy, image) = setup(39, &[100]).await;
    proxy.add(Rule::new("GET", "/blobs/", Fault::redirect("http://{host}{path}")).always());
    let source = app_source(&client(), &proxy).await;
    let err = source.fetch_blob(&layer(&image)).await.err().unwrap();
    assert!(err.to_string().contains("more than 10 redirects"), "{err}");
    assert_eq!(proxy.matching("GET", "/blobs/").len(), 11);
}

#[tokio::test]
async fn f21_connection_refused_fails_at_once_naming_host_and_port() {
    let host = format!("127.0.0.1:{}", strata_testkit::closed_loopback_port());
    // The policy allows 4 tries; a refused connection gets one (skopeo fails at once too).
    let err = client()
        .source(&reference(&host, "x/y:z"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::Connection { attempts: 1, .. }),
        "{err}"
    );
    assert_eq!(
        err.connection_failure(),
        Some(strata_registry::ConnectionFailure::Refused)
    );
    assert_eq!(
        err.to_string(),
        format!("{host}: ping /v2/: connection refused")
    );
}

#[tokio::test]
async fn f22_missing_source_blob_fails_copy_and_leaves_destination_unchanged() {
    let (_r, proxy, image) = setup(40, &[3000]).await;
    let d = layer(&image);
    proxy.add(
        Rule::new(
            "GET",
            &format!("/blobs/{}", d.digest),
            Fault::registry_error(404, "BLOB_UNKNOWN", "blob unknown", "x"),
        )
        .always(),
    );
    let source = app_source(&client(), &proxy).await;
    let dir = tempfile::tempdir().unwrap();
    let sink = strata_store::LayoutSink::create(dir.path()).unwrap();
    let err = strata_copy::copy_image(
        &source,
        &sink,
        &strata_copy::CopyOptions {
            tag: Some("v1".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    let msg = format!(
        "{err}: {:?}",
        std::error::Error::source(&err).map(|e| e.to_string())
    );
    assert!(msg.contains(&d.digest.to_string()), "{msg}");
    let layout = strata_store::OciLayout::open(dir.path()).unwrap();
    assert!(layout.list().unwrap().is_empty(), "no tag written");
}

#[tokio::test]
async fn m2_content_type_disagreeing_with_media_type_is_refused() {
    let (_r, proxy, image) = setup(41, &[100]).await;
    proxy.add(Rule::new(
        "GET",
        "/manifests/v1",
        Fault::Status {
            status: 200,
            headers: vec![("content-type".into(), MediaType::OCI_INDEX.into())],
            body: image.manifest.clone(),
        },
    ));
    let source = app_source(&client(), &proxy).await;
    let err = source.fetch_manifest(None).await.unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(MediaType::OCI_INDEX) && msg.contains(MediaType::OCI_MANIFEST),
        "{msg}"
    );
}

#[tokio::test]
async fn m3_bad_digests_never_reach_the_network() {
    let (_r, proxy, _image) = setup(42, &[100]).await;
    for bad in [
        "sha256:../../x",
        &format!("sha256:{}", "A".repeat(64)),
        &format!("sha256:{}", "a".repeat(63)),
        "md5:abc",
        "",
    ] {
        assert!(
            format!("{}/faults/app@{bad}", proxy.host())
                .parse::<strata_spec::Reference>()
                .is_err(),
            "{bad}"
        );
        assert!(
            serde_json::from_value::<Descriptor>(
                serde_json::json!({"mediaType": "x", "digest": bad, "size": 1})
            )
            .is_err(),
            "{bad}"
        );
    }
    assert!(proxy.requests().is_empty());
}

#[tokio::test]
async fn m4_wrong_blob_is_never_completed_at_the_registry() {
    let (registry, proxy, _) = setup(43, &[100]).await;
    let sink = client()
        .sink(&reference(&proxy.host(), "faults/bad:v1"))
        .await
        .unwrap();
    let claimed = Descriptor::of_bytes(MediaType::OCI_LAYER_GZIP, b"the real content");
    let err = sink
        .push_blob(&claimed, reader(b"other content!!!"))
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::DigestMismatch { .. }), "{err}");
    let actual = strata_spec::Digest::sha256_of(b"other content!!!");
    assert!(!registry.has_blob(&claimed.digest.to_string()));
    assert!(!registry.has_blob(&actual.to_string()));
    let puts = proxy.matching("PUT", "/blobs/uploads/");
    assert!(puts.iter().all(|p| p.status != Some(201)), "{puts:#?}");
    // Longer and shorter streams are refused the same way.
    let err = sink
        .push_blob(&claimed, reader(b"the real content, and more"))
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::SizeMismatch { .. }), "{err}");
    let err = sink
        .push_blob(&claimed, reader(b"the real"))
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::SizeMismatch { .. }), "{err}");
}

#[tokio::test]
async fn m6_oversized_documents_and_error_bodies_are_capped() {
    let (_r, proxy, _image) = setup(44, &[100]).await;
    let mut options = options();
    options.max_manifest_bytes = 1024 * 1024;
    let client = Client::new(options).unwrap();
    let source = client
        .source(&reference(&proxy.host(), "faults/app:v1"))
        .await
        .unwrap();
    for declare_length in [true, false] {
        proxy.add(Rule::new(
            "GET",
            "/manifests/v1",
            Fault::HugeBody {
                status: 200,
                content_type: MediaType::OCI_MANIFEST.into(),
                size: 50 << 20,
                declare_length,
            },
        ));
        let err = source.fetch_manifest(None).await.unwrap_err();
        assert!(
            matches!(err, RegistryError::ManifestTooLarge { limit: 1048576, .. }),
            "{err}"
        );
    }
    // A 1 GB error body: read up to 64 KiB, reported, no OOM.
    proxy.add(Rule::new(
        "GET",
        "/manifests/v1",
        Fault::HugeBody {
            status: 400,
            content_type: "text/plain".into(),
            size: 1 << 30,
            declare_length: true,
        },
    ));
    let err = source.fetch_manifest(None).await.unwrap_err();
    assert!(
        matches!(err, RegistryError::Http { status: 400, .. }),
        "{err}"
    );
    assert!(err.to_string().len() < 1000);
}

#[tokio::test]
async fn m9_digest_in_reference_wins_and_is_verified() {
    let (_r, proxy, image) = setup(45, &[100]).await;
    let other = random_image(46, &[100]);
    let client = client();
    // `repo:v1@D` where v1 is another image: D is fetched.
    strata_testkit::push_image_raw(&_r.host(), "faults/app", "other", &other, None).await;
    let r: strata_spec::Reference = format!("{}/faults/app:v1@{}", proxy.host(), other.digest())
        .parse()
        .unwrap();
    let source = client.source(&r).await.unwrap();
    assert_eq!(source.manifest(None).await.unwrap().bytes, other.manifest);
    // Served bytes that don't match D: refused.
    proxy.add(Rule::new(
        "GET",
        &format!("/manifests/{}", other.digest()),
        Fault::Status {
            status: 200,
            headers: vec![("content-type".into(), image.media_type.clone())],
            body: image.manifest.clone(),
        },
    ));
    let err = source.fetch_manifest(None).await.unwrap_err();
    assert!(matches!(err, RegistryError::DigestMismatch { .. }), "{err}");
}

#[tokio::test]
async fn m10_foreign_layer_urls_are_never_fetched() {
    let (_r, proxy, image) = setup(47, &[1000]).await;
    let mut d = layer(&image);
    d.urls = vec![format!("http://{}/evil/blob", proxy.alt_host())];
    let source = app_source(&client(), &proxy).await;
    assert_eq!(
        fetch_verified(&source, &d).await.unwrap(),
        layer_bytes(&image)
    );
    assert!(
        proxy
            .requests()
            .iter()
            .all(|r| !r.path.contains("evil") && r.host == proxy.host())
    );
}

#[tokio::test]
async fn m11_schema1_is_refused_clearly() {
    let (_r, proxy, _image) = setup(48, &[100]).await;
    let schema1 =
        br#"{"schemaVersion":1,"name":"faults/app","tag":"v1","fsLayers":[],"history":[]}"#;
    proxy.add(Rule::new(
        "GET",
        "/manifests/v1",
        Fault::Status {
            status: 200,
            headers: vec![(
                "content-type".into(),
                MediaType::DOCKER_SCHEMA1_SIGNED.into(),
            )],
            body: schema1.to_vec(),
        },
    ));
    proxy.add(
        Rule::new(
            "GET",
            "/manifests/v1",
            Fault::Status {
                status: 200,
                headers: vec![("content-type".into(), "application/json".into())],
                body: schema1.to_vec(),
            },
        )
        .nth(2),
    );
    let source = app_source(&client(), &proxy).await;
    for _ in 0..2 {
        let err = source.fetch_manifest(None).await.unwrap_err();
        assert!(matches!(err, RegistryError::Unsupported { .. }), "{err}");
        assert!(err.to_string().contains("schema1"), "{err}");
    }
}
