//! Fast, clear failures (a refused connection: `faults.rs` F21): what is not worth retrying
//! fails at once and names the host; what
//! trickles is cut off (response heads, bodies below the low-speed limit, endless tag pages);
//! refused credentials say so.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use strata_image::ImageError;
use strata_registry::{
    Client, ConnectionFailure, CredentialSource, Credentials, LowSpeedLimit, RegistryError,
    RegistrySource,
};
use strata_spec::Descriptor;
use strata_testkit::{Fault, FaultProxy, Rule, TestImage, TestRegistry, random_image};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn unknown_host_fails_at_once_naming_it() {
    let host = "no-such-registry.strata-test.invalid:5000";
    let err = client()
        .source(&reference(host, "x/y:z"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::Connection { attempts: 1, .. }),
        "{err}"
    );
    assert_eq!(
        err.connection_failure(),
        Some(ConnectionFailure::UnknownHost)
    );
    assert!(
        err.to_string()
            .starts_with(&format!("{host}: ping /v2/: unknown host")),
        "{err}"
    );
}

/// A server that answers every connection with a response head sent one byte every 20 ms,
/// for ever; returns its address and the number of connections it accepted.
async fn head_dribbler() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = listener.local_addr().unwrap().to_string();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                // Answer once the request is in (hyper drops a connection that talks first).
                let mut request = [0u8; 4096];
                if stream.read(&mut request).await.unwrap_or(0) == 0 {
                    return;
                }
                // One endless header value: never too many headers, never a complete head.
                let head = b"HTTP/1.1 200 OK\r\nX-Filler: ".iter().copied();
                let filler = std::iter::repeat(b'a');
                for byte in head.chain(filler) {
                    if stream.write_all(&[byte]).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            });
        }
    });
    (host, accepted)
}

#[tokio::test]
async fn dribbled_response_head_times_out_and_is_not_retried() {
    let (host, accepted) = head_dribbler().await;
    let mut options = options();
    options.read_timeout = Duration::from_millis(400);
    let err = Client::new(options)
        .unwrap()
        .source(&reference(&host, "x/y:z"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::Connection { attempts: 1, .. }),
        "{}",
        strata_testkit::error_chain(&err)
    );
    assert_eq!(err.connection_failure(), Some(ConnectionFailure::Timeout));
    assert_eq!(err.to_string(), format!("{host}: ping /v2/: timed out"));
    // One HTTPS try (not TLS: fails at once), one plain-HTTP try that dribbled; no retry.
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn dribbled_blob_response_head_times_out_on_the_direct_path() {
    // A registry whose blob GETs redirect to a host that dribbles its head: the direct
    // plain-HTTP reader gives up at the read timeout, does not hand the request to reqwest
    // to wait again, and does not retry.
    let registry = TestRegistry::start();
    let image = random_image(73, &[1000]);
    strata_testkit::push_image_raw(&registry.host(), "slow/app", "v1", &image, None).await;
    let proxy = FaultProxy::start(&registry.host()).await;
    let (dribbler, accepted) = head_dribbler().await;
    proxy.add(Rule::new(
        "GET",
        "/blobs/sha256:",
        Fault::redirect(&format!("http://{dribbler}/storage")),
    ));
    let mut options = options();
    options.read_timeout = Duration::from_millis(400);
    let client = Client::new(options).unwrap();
    let source = client
        .source(&reference(&proxy.host(), "slow/app:v1"))
        .await
        .unwrap();
    let err = source.fetch_blob(image.layers()[0]).await.err().unwrap();
    assert!(matches!(err, RegistryError::TooSlow { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "{dribbler}: blob {} in slow/app: no complete response head within 0.4s (read timeout)",
            image.layers()[0].digest
        )
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

/// `slow/app:v1` with one 64 kB layer behind a proxy, and a source for it through the proxy
/// with a low-speed limit of 1000 bytes/s over 300 ms.
async fn slow_app(
    seed: u64,
) -> (
    TestRegistry,
    FaultProxy,
    TestImage,
    Descriptor,
    RegistrySource,
) {
    let registry = TestRegistry::start();
    let image = random_image(seed, &[64_000]);
    strata_testkit::push_image_raw(&registry.host(), "slow/app", "v1", &image, None).await;
    let proxy = FaultProxy::start(&registry.host()).await;
    let layer = image.layers()[0].clone();
    let mut options = options();
    options.low_speed = LowSpeedLimit {
        bytes_per_second: 1000,
        time: Duration::from_millis(300),
    };
    let source = Client::new(options)
        .unwrap()
        .source(&reference(&proxy.host(), "slow/app:v1"))
        .await
        .unwrap();
    (registry, proxy, image, layer, source)
}

fn fifty_bytes_per_second() -> Fault {
    Fault::SlowBody {
        chunk: 1,
        delay: Duration::from_millis(20),
    }
}

#[tokio::test]
async fn blob_body_below_the_speed_limit_is_abandoned_and_resumed_with_range() {
    let (_registry, proxy, image, layer, source) = slow_app(70).await;
    // 50 bytes/s: without the limit this blob would take 21 minutes.
    proxy.add(Rule::new("GET", "/blobs/sha256:", fifty_bytes_per_second()));
    let bytes = fetch_verified(&source, &layer).await.unwrap();
    let expected = image
        .blobs()
        .find(|(d, _)| d.digest == layer.digest)
        .unwrap()
        .1;
    assert_eq!(bytes, expected);
    let gets = proxy.matching("GET", &format!("/blobs/{}", layer.digest));
    assert_eq!(gets.len(), 2, "{gets:#?}");
    assert_eq!(gets[0].range, None);
    let range = gets[1].range.clone().expect("resumed with Range");
    let from: u64 = range
        .strip_prefix("bytes=")
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse().ok())
        .expect("bytes=N-");
    assert!(from > 0 && from < 64_000, "{range}");
}

#[tokio::test]
async fn a_body_always_below_the_speed_limit_fails_naming_the_rate() {
    let (_registry, proxy, _image, layer, source) = slow_app(71).await;
    let slow = fifty_bytes_per_second();
    // A manifest read into memory is cut off the same way (not resumed: it is small).
    proxy.add(Rule::new("GET", "/manifests/v1", slow.clone()));
    let err = source.fetch_manifest(None).await.unwrap_err();
    assert!(matches!(err, RegistryError::TooSlow { .. }), "{err}");
    assert!(
        err.to_string().contains("slower than 1000 bytes/s"),
        "{err}"
    );

    proxy.add(Rule::new("GET", "/blobs/sha256:", slow).always());
    let err = fetch_verified(&source, &layer).await.unwrap_err();
    let text = strata_testkit::error_chain(&err);
    assert!(text.contains("slower than 1000 bytes/s"), "{text}");
    assert!(text.contains(&layer.digest.to_string()), "{text}");
    // The policy's 4 tries, each on a new connection.
    let gets = proxy.matching("GET", &format!("/blobs/{}", layer.digest));
    assert_eq!(gets.len(), 4, "{gets:#?}");
    assert!(!matches!(err, ImageError::DigestMismatch { .. }));
}

#[tokio::test]
async fn tag_list_over_the_total_cap_fails() {
    let registry = TestRegistry::start();
    let image = random_image(72, &[100]);
    let tags: Vec<String> = (0..12).map(|i| format!("release-{i:02}")).collect();
    for t in &tags {
        strata_testkit::push_image_raw(&registry.host(), "many/tags", t, &image, None).await;
    }
    let r = reference(&registry.host(), "many/tags:x");
    let mut options = options();
    options.tags_page_size = Some(3);
    let mut all = Client::new(options.clone())
        .unwrap()
        .tags(&r)
        .await
        .unwrap();
    all.sort();
    assert_eq!(all, tags);
    // Each page of three is ~70 bytes: the cap is hit on the third page.
    options.max_tags_bytes = 150;
    let err = Client::new(options).unwrap().tags(&r).await.unwrap_err();
    assert!(
        matches!(err, RegistryError::TooLarge { limit: 150, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("tag list of many/tags"), "{err}");
}

#[tokio::test]
async fn wrong_password_is_refused_credentials_naming_the_registry_and_user() {
    let registry = TestRegistry::start_with_basic_auth("alice", "right");
    let mut options = options();
    options.credentials = CredentialSource::Explicit(Credentials {
        username: "alice".into(),
        password: "wrong".into(),
    });
    let client = Client::new(options).unwrap();
    let err = client.check_login(&registry.host()).await.unwrap_err();
    assert!(
        matches!(&err, RegistryError::CredentialsRefused { user: Some(u), .. } if u == "alice"),
        "{err}"
    );
    let err = manifest_error(&client, &registry.host(), "basic/app:v1").await;
    assert!(
        matches!(err, RegistryError::CredentialsRefused { .. }),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.starts_with(&format!(
            "{}: the credentials of user \"alice\" were refused",
            registry.host()
        )),
        "{text}"
    );
    assert!(!text.contains("wrong"), "{text}");
    // Without credentials it is a plain 401: log in.
    let err = manifest_error(&common::client(), &registry.host(), "basic/app:v1").await;
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");
}
