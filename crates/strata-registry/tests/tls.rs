//! Registries over TLS: blob transfers on connections of their own (HTTP/1.1, the direct
//! path for GETs) even when the registry offers HTTP/2, resume after a reset, certificate
//! checks the same on every path, redirects to another https host without credentials.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use strata_registry::config::CertDirs;

use common::*;
use strata_image::{ImageSink, ImageSource};
use strata_registry::{Client, CredentialSource, Credentials, RegistryOptions, TlsMode};
use strata_testkit::{
    Fault, FaultProxy, RecordedRequest, Rule, TestCertificates, TestImage, TestRegistry,
    error_chain, random_image,
};

/// Certificates checked against `certificates`' CA only (no `Insecure`).
fn verifying_client(ca_dir: Option<PathBuf>) -> Client {
    Client::new(RegistryOptions {
        tls: TlsMode::Verify,
        cert_dirs: ca_dir.map(CertDirs::Flat).unwrap_or_default(),
        ..options()
    })
    .unwrap()
}

/// A plain registry with `image` at `tls/app:v1` and a TLS proxy (h2 + http/1.1) in front.
async fn setup(
    seed: u64,
    sizes: &[usize],
) -> (TestCertificates, TestRegistry, FaultProxy, TestImage) {
    let certificates = TestCertificates::new();
    let registry = TestRegistry::start();
    let image = random_image(seed, sizes);
    strata_testkit::push_image_raw(&registry.host(), "tls/app", "v1", &image, None).await;
    let proxy = FaultProxy::start_tls(&registry.host(), &certificates).await;
    (certificates, registry, proxy, image)
}

fn blob_gets(proxy: &FaultProxy) -> Vec<RecordedRequest> {
    proxy.matching("GET", "/blobs/sha256:")
}

#[tokio::test]
async fn tls_blob_gets_are_direct_each_on_its_own_connection() {
    let (certificates, _registry, proxy, image) =
        setup(300, &[300_000, 200_000, 150_000, 100_000]).await;
    let client = verifying_client(Some(certificates.ca_dir()));
    let source = client
        .source(&reference(&proxy.host(), "tls/app:v1"))
        .await
        .unwrap();
    let manifest = source.manifest(None).await.unwrap();
    assert!(!manifest.bytes.is_empty());
    // All blobs at once, as a copy fetches them.
    let fetches = image.blobs().map(|(d, b)| {
        let source = &source;
        async move {
            let got = fetch_verified(source, d).await.expect("blob over TLS");
            assert_eq!(got, b, "blob {}", d.digest);
        }
    });
    futures::future::join_all(fetches).await;

    let gets = blob_gets(&proxy);
    assert_eq!(gets.len(), image.blobs().count(), "{gets:#?}");
    for g in &gets {
        // The direct path (its own request, `Connection: close`) over HTTP/1.1, though the
        // server offers h2.
        assert_eq!(g.version, "HTTP/1.1", "{g:#?}");
        assert_eq!(g.connection.as_deref(), Some("close"), "{g:#?}");
    }
    let connections: BTreeSet<u64> = gets.iter().map(|g| g.connection_id).collect();
    assert_eq!(
        connections.len(),
        gets.len(),
        "one connection per blob: {gets:#?}"
    );
    // Manifests stay on the pooled client, which speaks HTTP/2 to this server.
    let manifests = proxy.matching("GET", "/manifests/v1");
    assert!(!manifests.is_empty());
    for m in &manifests {
        assert_eq!(m.version, "HTTP/2.0", "{m:#?}");
        assert!(!connections.contains(&m.connection_id), "{m:#?}");
    }
}

#[tokio::test]
async fn tls_broken_blob_body_resumes_with_range() {
    let (certificates, _registry, proxy, image) = setup(301, &[400_000]).await;
    let d = image.layers()[0].clone();
    proxy
        .add(Rule::new("GET", "/blobs/sha256:", Fault::ResetAfter(150_000)).on_host(&proxy.host()));
    let client = verifying_client(Some(certificates.ca_dir()));
    let source = client
        .source(&reference(&proxy.host(), "tls/app:v1"))
        .await
        .unwrap();
    let got = fetch_verified(&source, &d).await.unwrap();
    let want = image.blobs().find(|(x, _)| x.digest == d.digest).unwrap().1;
    assert_eq!(got, want);
    let gets = proxy.matching("GET", &format!("/blobs/{}", d.digest));
    assert_eq!(gets.len(), 2, "{gets:#?}");
    assert_eq!(gets[0].range, None);
    let range = gets[1].range.clone().expect("resume with Range");
    let from: u64 = range
        .strip_prefix("bytes=")
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|r| r.parse().ok())
        .unwrap();
    assert!(from > 0 && from <= 150_000, "{range}");
    assert_eq!(gets[1].status, Some(206));
    for g in &gets {
        assert_eq!(g.connection.as_deref(), Some("close"), "direct: {g:#?}");
        assert_eq!(g.version, "HTTP/1.1", "{g:#?}");
    }
    assert_ne!(gets[0].connection_id, gets[1].connection_id);
}

#[tokio::test]
async fn untrusted_certificate_is_refused_unless_insecure_or_ca_given() {
    // The real registry serving TLS (Go's server: h2 and http/1.1 by ALPN).
    let certificates = TestCertificates::new();
    let registry = TestRegistry::start_tls(&certificates);
    let image = random_image(302, &[250_000, 50_000]);
    let r = reference(&registry.host(), "tls/real:v1");
    {
        let client = verifying_client(Some(certificates.ca_dir()));
        let sink = client.sink(&r).await.unwrap();
        push(&sink, &image, "v1").await;
    }

    let err = verifying_client(None).source(&r).await.unwrap_err();
    let chain = error_chain(&err);
    assert!(chain.contains(&registry.host()), "{chain}");
    assert!(chain.contains("invalid peer certificate"), "{chain}");
    assert!(chain.contains("UnknownIssuer"), "{chain}");

    for client in [verifying_client(Some(certificates.ca_dir())), client()] {
        let source = client.source(&r).await.unwrap();
        assert_blobs(&source, &image).await;
    }
    // A certificate directory with another CA does not make this one trusted.
    let other = TestCertificates::new();
    let err = verifying_client(Some(other.ca_dir()))
        .source(&r)
        .await
        .unwrap_err();
    assert!(
        error_chain(&err).contains("invalid peer certificate"),
        "{}",
        error_chain(&err)
    );
}

#[tokio::test]
async fn tls_uploads_go_on_http1_connections_of_their_own() {
    let certificates = TestCertificates::new();
    let registry = TestRegistry::start();
    let proxy = FaultProxy::start_tls(&registry.host(), &certificates).await;
    let image = random_image(303, &[300_000, 200_000, 100_000]);
    let client = verifying_client(Some(certificates.ca_dir()));
    let r = reference(&proxy.host(), "tls/push:v1");
    let sink = client.sink(&r).await.unwrap();
    let uploads = image.blobs().map(|(d, b)| {
        let sink = &sink;
        async move {
            sink.put_blob(d, reader(b))
                .await
                .expect("put_blob over TLS");
        }
    });
    futures::future::join_all(uploads).await;
    push(&sink, &image, "v1").await;
    let puts = proxy.matching("PUT", "/blobs/uploads/");
    assert_eq!(puts.len(), image.blobs().count(), "{puts:#?}");
    assert!(puts.iter().all(|p| p.version == "HTTP/1.1"), "{puts:#?}");
    let connections: BTreeSet<u64> = puts.iter().map(|p| p.connection_id).collect();
    assert!(
        connections.len() > 1,
        "uploads share one connection: {puts:#?}"
    );
    let manifest_puts = proxy.matching("PUT", "/manifests/");
    assert!(
        manifest_puts.iter().all(|p| p.version == "HTTP/2.0"),
        "{manifest_puts:#?}"
    );
    for (d, _) in image.blobs() {
        assert!(registry.has_blob(&d.digest.to_string()), "{}", d.digest);
    }
}

#[tokio::test]
async fn tls_redirect_to_another_host_carries_no_credentials() {
    // Registry A (Basic auth) redirects blob GETs to "storage" B over https, reached as
    // localhost:PORT (another origin), in an a→b→b chain; all on the direct path.
    const USER: &str = "alice";
    const PASSWORD: &str = "tls-Pa55word";
    let certificates = TestCertificates::new();
    let a = TestRegistry::start_with_basic_auth(USER, PASSWORD);
    let b = TestRegistry::start();
    let image = random_image(304, &[120_000]);
    strata_testkit::push_image_raw(&a.host(), "tls/app", "v1", &image, Some((USER, PASSWORD)))
        .await;
    strata_testkit::push_image_raw(&b.host(), "tls/app", "v1", &image, None).await;
    let proxy_a = FaultProxy::start_tls(&a.host(), &certificates).await;
    let proxy_b = FaultProxy::start_tls(&b.host(), &certificates).await;
    let hop1 = format!("https://{}{{path}}?hop=1", proxy_b.alt_host());
    let hop2 = format!("https://{}{{path}}?hop=2", proxy_b.alt_host());
    proxy_a.add(Rule::new("GET", "/blobs/sha256:", Fault::redirect(&hop1)).always());
    proxy_b.add(Rule::new("GET", "hop=1", Fault::redirect(&hop2)).always());
    let client = Client::new(RegistryOptions {
        tls: TlsMode::Verify,
        cert_dirs: CertDirs::Flat(certificates.ca_dir()),
        credentials: CredentialSource::Explicit(Credentials {
            username: USER.into(),
            password: PASSWORD.into(),
        }),
        ..options()
    })
    .unwrap();
    let source = client
        .source(&reference(&proxy_a.host(), "tls/app:v1"))
        .await
        .unwrap();
    assert_blobs(&source, &image).await;
    let on_a = blob_gets(&proxy_a);
    assert!(!on_a.is_empty());
    assert!(
        on_a.iter()
            .all(|r| r.auth_scheme.as_deref() == Some("Basic")),
        "{on_a:#?}"
    );
    let on_b = proxy_b.requests();
    assert_eq!(on_b.len(), 2 * image.blobs().count(), "{on_b:#?}");
    assert!(on_b.iter().all(|r| r.auth_scheme.is_none()), "{on_b:#?}");
    assert!(
        on_b.iter()
            .all(|r| r.connection.as_deref() == Some("close")),
        "{on_b:#?}"
    );
}
