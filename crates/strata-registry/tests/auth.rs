//! Authentication and credential handling (Basic, Bearer with real JWTs, identity tokens,
//! helpers, auth files) and RELIABILITY N1–N7.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use common::*;
use strata_image::{ImageSink, ImageSource};
use strata_registry::{Client, CredentialSource, Credentials, RegistryError, auth};
use strata_testkit::{Fault, FaultProxy, Rule, TestRegistry, TokenServer, random_image};

const USER: &str = "alice";
const PASSWORD: &str = "s3cr3t-Pa55word!";

fn with_creds(user: &str, password: &str) -> Client {
    let mut o = options();
    o.credentials = CredentialSource::Explicit(Credentials {
        username: user.into(),
        password: password.into(),
    });
    Client::new(o).unwrap()
}

fn with_auth_file(path: &Path, helper_dir: Option<&Path>) -> Client {
    let mut o = options();
    o.credentials = CredentialSource::AuthFile(path.to_path_buf());
    if let Some(d) = helper_dir {
        o.credential_helper_dirs = vec![d.to_path_buf()];
    }
    Client::new(o).unwrap()
}

#[tokio::test]
async fn basic_auth_push_pull_and_wrong_password() {
    let registry = TestRegistry::start_with_basic_auth(USER, PASSWORD);
    let image = random_image(50, &[4000]);
    let r = reference(&registry.host(), "basic/app:v1");
    let client = with_creds(USER, PASSWORD);
    client.check_login(&registry.host()).await.unwrap();
    push(&client.sink(&r).await.unwrap(), &image, "v1").await;
    let source = client.source(&r).await.unwrap();
    assert_eq!(source.manifest(None).await.unwrap().bytes, image.manifest);
    assert_blobs(&source, &image).await;

    let bad = with_creds(USER, "wrong");
    let err = bad.check_login(&registry.host()).await.unwrap_err();
    assert!(
        matches!(err, RegistryError::CredentialsRefused { .. }),
        "{err}"
    );
    let err = bad
        .source(&r)
        .await
        .unwrap()
        .fetch_manifest(None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::CredentialsRefused { .. }),
        "{err}"
    );
    let anonymous = client_anonymous();
    let err = anonymous.check_login(&registry.host()).await.unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");
}

fn client_anonymous() -> Client {
    Client::new(options()).unwrap()
}

#[tokio::test]
async fn auth_file_login_logout_and_lookup() {
    let registry = TestRegistry::start_with_basic_auth(USER, PASSWORD);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sub/auth.json");
    // Existing content with other registries and unknown fields survives.
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(
        &file,
        r#"{"auths":{"other.example":{"auth":"eDp5"},"https://index.docker.io/v1/":{"auth":"aHViOmh1Yg=="}},"psFormat":"table","credHelpers":{"gcr.io":"gcloud"}}"#,
    )
    .unwrap();
    auth::login(&file, &registry.host(), USER, PASSWORD).unwrap();
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(v["psFormat"], "table");
    assert_eq!(v["credHelpers"]["gcr.io"], "gcloud");
    assert_eq!(v["auths"]["other.example"]["auth"], "eDp5");
    assert!(v["auths"][registry.host()]["auth"].is_string());

    let client = with_auth_file(&file, None);
    client.check_login(&registry.host()).await.unwrap();
    let image = random_image(51, &[100]);
    push(
        &client
            .sink(&reference(&registry.host(), "file/app:v1"))
            .await
            .unwrap(),
        &image,
        "v1",
    )
    .await;

    // Docker Hub aliases are one registry.
    auth::login(&file, "docker.io", "u", "p").unwrap();
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(
        v["auths"]
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| k.contains("docker.io"))
            .count(),
        1
    );
    assert!(auth::logout(&file, "index.docker.io").unwrap());
    assert!(!auth::logout(&file, "docker.io").unwrap());
    assert!(auth::logout(&file, &registry.host()).unwrap());
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(v["auths"]["other.example"]["auth"], "eDp5");
    assert!(v["auths"].get(registry.host()).is_none());
    let err = with_auth_file(&file, None)
        .check_login(&registry.host())
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");
}

#[tokio::test]
async fn bearer_token_flow_with_real_jwt_verification() {
    let tokens = TokenServer::start(&[(USER, PASSWORD)]).await;
    let registry = TestRegistry::start_with_token_auth(&tokens);
    let image = random_image(52, &[3000, 2000]);
    let client = with_creds(USER, PASSWORD);
    let r = reference(&registry.host(), "bearer/app:v1");
    client.check_login(&registry.host()).await.unwrap();
    push(&client.sink(&r).await.unwrap(), &image, "v1").await;
    let source = client.source(&r).await.unwrap();
    assert_eq!(source.manifest(None).await.unwrap().bytes, image.manifest);
    assert_blobs(&source, &image).await;
    let log = tokens.requests();
    assert!(
        log.iter().all(|t| t.method == "GET"
            && t.auth_scheme.as_deref() == Some("Basic")
            && t.status == 200),
        "{log:#?}"
    );
    assert!(
        log.iter()
            .any(|t| t.scopes == ["repository:bearer/app:pull,push"]),
        "{log:#?}"
    );
    assert!(
        log.iter()
            .any(|t| t.scopes == ["repository:bearer/app:pull"]),
        "{log:#?}"
    );
    assert!(
        log.iter()
            .all(|t| t.service.as_deref() == Some(tokens.service()))
    );
    // Cached per scope set: one login token, one push token, one pull token.
    assert_eq!(log.len(), 3, "{log:#?}");

    // Wrong password: the token server refuses, the error says the credentials were.
    let err = with_creds(USER, "nope")
        .source(&r)
        .await
        .unwrap()
        .fetch_manifest(None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::CredentialsRefused { .. }),
        "{err}"
    );
    let err = with_creds(USER, "nope")
        .check_login(&registry.host())
        .await
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::CredentialsRefused { .. }),
        "{err}"
    );
    // Anonymous: a token without access, then the registry's 401.
    let err = client_anonymous()
        .source(&r)
        .await
        .unwrap()
        .fetch_manifest(None)
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");
}

#[tokio::test]
async fn identity_token_uses_the_oauth2_post_flow() {
    let tokens = TokenServer::start(&[(USER, PASSWORD)]).await;
    tokens.add_refresh_token("refresh-abc-123", USER);
    let registry = TestRegistry::start_with_token_auth(&tokens);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.json");
    std::fs::write(
        &file,
        serde_json::to_vec(&serde_json::json!({"auths": {registry.host(): {"auth": "", "identitytoken": "refresh-abc-123"}}})).unwrap(),
    )
    .unwrap();
    let client = with_auth_file(&file, None);
    let image = random_image(53, &[100]);
    push(
        &client
            .sink(&reference(&registry.host(), "idtoken/app:v1"))
            .await
            .unwrap(),
        &image,
        "v1",
    )
    .await;
    let log = tokens.requests();
    assert!(!log.is_empty());
    assert!(
        log.iter().all(|t| t.method == "POST"
            && t.grant_type.as_deref() == Some("refresh_token")
            && t.status == 200),
        "{log:#?}"
    );
}

#[tokio::test]
async fn mount_asks_one_token_for_both_repositories() {
    let tokens = TokenServer::start(&[(USER, PASSWORD)]).await;
    let registry = TestRegistry::start_with_token_auth(&tokens);
    let proxy = FaultProxy::start(&registry.host()).await;
    let image = random_image(54, &[5000]);
    let client = with_creds(USER, PASSWORD);
    let from = reference(&proxy.host(), "team/base:v1");
    push(&client.sink(&from).await.unwrap(), &image, "v1").await;
    let origin = client.source(&from).await.unwrap().origin().unwrap();
    let sink = client
        .sink(&reference(&proxy.host(), "team/derived:v1"))
        .await
        .unwrap();
    proxy.clear_log();
    for (d, _) in image.blobs() {
        assert!(sink.reuse_blob(d, Some(&origin)).await.unwrap());
    }
    assert!(
        proxy
            .requests()
            .iter()
            .all(|r| r.method != "PUT" && r.method != "PATCH")
    );
    let log = tokens.requests();
    let multi: Vec<_> = log.iter().filter(|t| t.scopes.len() == 2).collect();
    assert_eq!(multi.len(), 1, "{log:#?}");
    let mut scopes = multi[0].scopes.clone();
    scopes.sort();
    assert_eq!(
        scopes,
        [
            "repository:team/base:pull",
            "repository:team/derived:pull,push"
        ]
    );
}

#[tokio::test]
async fn f13_expired_token_is_refreshed_once_and_the_request_retried() {
    let tokens = TokenServer::start(&[(USER, PASSWORD)]).await;
    let registry = TestRegistry::start_with_token_auth(&tokens);
    let proxy = FaultProxy::start(&registry.host()).await;
    let challenge = format!(
        "Bearer realm=\"{}\",service=\"{}\",scope=\"repository:exp/app:pull,push\",error=\"invalid_token\"",
        tokens.realm(),
        tokens.service()
    );
    let client = with_creds(USER, PASSWORD);
    let r = reference(&proxy.host(), "exp/app:v1");
    let sink = client.sink(&r).await.unwrap();
    let image = random_image(55, &[3000]);
    // The blob PUT (a streamed body) and a manifest PUT (bytes) each meet one 401.
    proxy.add(Rule::new(
        "PUT",
        "/blobs/uploads/",
        Fault::with_header(401, "WWW-Authenticate", &challenge),
    ));
    proxy.add(Rule::new(
        "PUT",
        "/manifests/v1",
        Fault::with_header(401, "WWW-Authenticate", &challenge),
    ));
    let before = tokens.requests().len();
    push(&sink, &image, "v1").await;
    assert!(
        tokens.requests().len() >= before + 2,
        "{:#?}",
        tokens.requests()
    );
    assert_eq!(proxy.matching("PUT", "/manifests/v1").len(), 2);
    // A 401 that persists after the refresh is an error, not a loop.
    proxy.add(
        Rule::new(
            "GET",
            "/manifests/v1",
            Fault::with_header(401, "WWW-Authenticate", &challenge),
        )
        .always(),
    );
    let err = client
        .source(&r)
        .await
        .unwrap()
        .fetch_manifest(None)
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");
    assert_eq!(proxy.matching("GET", "/manifests/v1").len(), 2);
}

#[tokio::test]
async fn n1_redirects_never_carry_credentials_to_another_host() {
    // Registry A (Basic auth) redirects blob GETs to "storage": registry B without auth,
    // reached as localhost:PORT (another host), in an a→b→b chain.
    let a = TestRegistry::start_with_basic_auth(USER, PASSWORD);
    let b = TestRegistry::start();
    let image = random_image(56, &[8000]);
    strata_testkit::push_image_raw(&a.host(), "n1/app", "v1", &image, Some((USER, PASSWORD))).await;
    strata_testkit::push_image_raw(&b.host(), "n1/app", "v1", &image, None).await;
    let proxy_a = FaultProxy::start(&a.host()).await;
    let proxy_b = FaultProxy::start(&b.host()).await;
    let hop1 = format!("http://{}{{path}}?hop=1", proxy_b.alt_host());
    let hop2 = format!("http://{}{{path}}?hop=2", proxy_b.alt_host());
    proxy_a.add(Rule::new("GET", "/blobs/sha256:", Fault::redirect(&hop1)).always());
    proxy_b.add(Rule::new("GET", "hop=1", Fault::redirect(&hop2)).always());
    let client = with_creds(USER, PASSWORD);
    let source = client
        .source(&reference(&proxy_a.host(), "n1/app:v1"))
        .await
        .unwrap();
    assert_blobs(&source, &image).await;
    let on_a = proxy_a.matching("GET", "/blobs/");
    assert!(
        on_a.iter()
            .all(|r| r.auth_scheme.as_deref() == Some("Basic")),
        "{on_a:#?}"
    );
    let on_b = proxy_b.requests();
    assert_eq!(on_b.len(), 2 * image.blobs().count());
    assert!(on_b.iter().all(|r| r.auth_scheme.is_none()), "{on_b:#?}");
}

#[tokio::test]
async fn n2_challenge_from_a_redirect_target_is_not_answered() {
    let tokens = TokenServer::start(&[(USER, PASSWORD)]).await;
    let registry = TestRegistry::start_with_token_auth(&tokens);
    let proxy = FaultProxy::start(&registry.host()).await;
    let client = with_creds(USER, PASSWORD);
    let image = random_image(57, &[100]);
    push(
        &client
            .sink(&reference(&proxy.host(), "n2/app:v1"))
            .await
            .unwrap(),
        &image,
        "v1",
    )
    .await;
    let challenge = format!(
        "Bearer realm=\"{}\",service=\"evil\",scope=\"repository:n2/app:pull\"",
        tokens.realm()
    );
    proxy.add(
        Rule::new(
            "GET",
            "/blobs/sha256:",
            Fault::redirect(&format!("http://{}{{path}}", proxy.alt_host())),
        )
        .on_host(&proxy.host())
        .always(),
    );
    proxy.add(
        Rule::new(
            "GET",
            "/blobs/",
            Fault::with_header(401, "WWW-Authenticate", &challenge),
        )
        .on_host(&proxy.alt_host())
        .always(),
    );
    let source = client
        .source(&reference(&proxy.host(), "n2/app:v1"))
        .await
        .unwrap();
    let before = tokens.requests();
    let err = source
        .fetch_blob(&image.layers()[0].clone())
        .await
        .err()
        .unwrap();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");
    let after = tokens.requests();
    assert!(
        after[before.len()..]
            .iter()
            .all(|t| t.service.as_deref() != Some("evil")),
        "{after:#?}"
    );
    let alt = proxy
        .requests()
        .into_iter()
        .filter(|r| r.host == proxy.alt_host())
        .collect::<Vec<_>>();
    assert_eq!(alt.len(), 1, "asked once, no retry with a token: {alt:#?}");
    assert!(alt[0].auth_scheme.is_none());
}

#[tokio::test]
async fn n3_dangerous_token_realms_are_refused() {
    let registry = TestRegistry::start();
    let proxy = FaultProxy::start(&registry.host()).await;
    for (realm, why) in [
        ("http://169.254.169.254/latest/meta-data", "link-local"),
        ("ftp://127.0.0.1/token", "not http"),
        ("http://user:pw@127.0.0.1/token", "credentials in the URL"),
    ] {
        proxy.clear_rules();
        proxy.add(
            Rule::new(
                "GET",
                "/manifests/",
                Fault::with_header(
                    401,
                    "WWW-Authenticate",
                    &format!("Bearer realm=\"{realm}\",service=\"x\""),
                ),
            )
            .always(),
        );
        let client = with_creds(USER, PASSWORD);
        let err = manifest_error(&client, &proxy.host(), "n3/app:v1").await;
        assert!(
            err.to_string().contains("refusing token realm") && err.to_string().contains(why),
            "{realm}: {err}"
        );
    }
}

#[tokio::test]
async fn n4_upload_location_on_another_host_gets_no_credentials() {
    let registry = TestRegistry::start_with_basic_auth(USER, PASSWORD);
    let proxy = FaultProxy::start(&registry.host()).await;
    let client = with_creds(USER, PASSWORD);
    let sink = client
        .sink(&reference(&proxy.host(), "n4/app:v1"))
        .await
        .unwrap();
    let loc = format!(
        "http://{}/v2/n4/app/blobs/uploads/elsewhere",
        proxy.alt_host()
    );
    proxy.add(
        Rule::new(
            "POST",
            "/blobs/uploads/",
            Fault::Status {
                status: 202,
                headers: vec![("location".into(), loc)],
                body: vec![],
            },
        )
        .always(),
    );
    let image = random_image(58, &[1000]);
    let d = image.layers()[0].clone();
    let bytes = image
        .blobs()
        .find(|(x, _)| x.digest == d.digest)
        .unwrap()
        .1
        .to_vec();
    let err = sink.push_blob(&d, reader(&bytes)).await.unwrap_err();
    let alt: Vec<_> = proxy
        .requests()
        .into_iter()
        .filter(|r| r.host == proxy.alt_host())
        .collect();
    assert!(!alt.is_empty(), "{err}");
    assert!(alt.iter().all(|r| r.auth_scheme.is_none()), "{alt:#?}");
    assert!(
        proxy
            .requests()
            .iter()
            .filter(|r| r.host == proxy.host() && r.path != "/v2/")
            .all(|r| r.auth_scheme.as_deref() == Some("Basic"))
    );
}

#[tokio::test]
async fn n5_tls_failure_never_falls_back_to_http() {
    let registry = TestRegistry::start();
    let proxy = FaultProxy::start(&registry.host()).await;
    let mut o = options();
    o.tls = strata_registry::TlsMode::Verify;
    let err = Client::new(o)
        .unwrap()
        .source(&reference(&proxy.host(), "n5/app:v1"))
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::Connection { .. }), "{err}");
    assert!(err.to_string().contains(&proxy.host()));
    assert!(
        proxy.requests().is_empty(),
        "no plain HTTP request: {:#?}",
        proxy.requests()
    );
}

/// Collects everything `tracing` writes.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);
impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Capture {
        self.clone()
    }
}

#[tokio::test]
async fn n6_secrets_never_reach_logs_errors_or_debug() {
    // A global subscriber (a scoped one misses events whose callsite interest other tests
    // cached first): it also catches the other tests of this binary, which only makes the
    // check stricter.
    static CAPTURE: std::sync::OnceLock<Capture> = std::sync::OnceLock::new();
    let capture = CAPTURE
        .get_or_init(|| {
            let capture = Capture::default();
            let subscriber = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::TRACE)
                .with_writer(capture.clone())
                .with_ansi(false)
                .finish();
            tracing::subscriber::set_global_default(subscriber).expect("first subscriber");
            capture
        })
        .clone();

    let tokens = TokenServer::start(&[(USER, PASSWORD)]).await;
    tokens.add_refresh_token("refresh-SECRET-777", USER);
    let bearer = TestRegistry::start_with_token_auth(&tokens);
    let basic = TestRegistry::start_with_basic_auth(USER, PASSWORD);
    let image = random_image(59, &[2000]);
    let mut texts = Vec::new();
    for host in [bearer.host(), basic.host()] {
        let client = with_creds(USER, PASSWORD);
        texts.push(format!("{client:?} {:?}", client.options()));
        let r = reference(&host, "n6/app:v1");
        push(&client.sink(&r).await.unwrap(), &image, "v1").await;
        let source = client.source(&r).await.unwrap();
        assert_blobs(&source, &image).await;
        texts.push(format!("{source:?}"));
        let bad = with_creds(USER, &format!("{PASSWORD}-wrong"));
        let err = bad
            .source(&r)
            .await
            .unwrap()
            .fetch_manifest(None)
            .await
            .unwrap_err();
        texts.push(format!("{err} {err:?}"));
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("auth.json");
    std::fs::write(
        &file,
        serde_json::to_vec(
            &serde_json::json!({"auths": {bearer.host(): {"identitytoken": "refresh-SECRET-777"}}}),
        )
        .unwrap(),
    )
    .unwrap();
    let client = with_auth_file(&file, None);
    push(
        &client
            .sink(&reference(&bearer.host(), "n6/id:v1"))
            .await
            .unwrap(),
        &image,
        "v1",
    )
    .await;
    texts.push(format!("{client:?} {:?}", client.options()));

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("request"),
        "trace events were captured: {}",
        &logs[..logs.len().min(2000)]
    );
    let basic_b64 = base64_of(&format!("{USER}:{PASSWORD}"));
    let all = format!("{logs}\n{}", texts.join("\n"));
    for secret in [
        PASSWORD,
        basic_b64.as_str(),
        "refresh-SECRET-777",
        "eyJ",
        "Authorization: ",
    ] {
        assert!(!all.contains(secret), "{secret:?} leaked");
    }
}

fn base64_of(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn write_helper(dir: &Path, name: &str, script: &str) {
    let path = dir.join(format!("docker-credential-{name}"));
    std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[tokio::test]
async fn n7_credential_helpers_work_and_failures_are_errors() {
    let registry = TestRegistry::start_with_basic_auth(USER, PASSWORD);
    let proxy = FaultProxy::start(&registry.host()).await;
    let dir = tempfile::tempdir().unwrap();
    write_helper(
        dir.path(),
        "good",
        &format!(
            "read server; [ \"$1\" = get ] && [ \"$server\" = \"{}\" ] && echo '{{\"ServerURL\":\"x\",\"Username\":\"{USER}\",\"Secret\":\"{PASSWORD}\"}}'",
            proxy.host()
        ),
    );
    write_helper(
        dir.path(),
        "crash",
        "echo 'boom: keychain locked' >&2; exit 3",
    );
    write_helper(
        dir.path(),
        "none",
        "echo 'credentials not found in native keychain'; exit 1",
    );
    write_helper(dir.path(), "garbage", "echo 'not json'");
    let file = dir.path().join("config.json");
    let image = random_image(60, &[100]);
    let r = reference(&proxy.host(), "n7/app:v1");

    std::fs::write(
        &file,
        serde_json::to_vec(&serde_json::json!({"credHelpers": {proxy.host(): "good"}})).unwrap(),
    )
    .unwrap();
    let client = with_auth_file(&file, Some(dir.path()));
    push(&client.sink(&r).await.unwrap(), &image, "v1").await;

    for (helper, want) in [
        ("crash", "boom: keychain locked"),
        ("missing", "not found"),
        ("garbage", "not the expected JSON"),
    ] {
        std::fs::write(
            &file,
            serde_json::to_vec(&serde_json::json!({"credsStore": helper})).unwrap(),
        )
        .unwrap();
        proxy.clear_log();
        let client = with_auth_file(&file, Some(dir.path()));
        let err = client
            .source(&r)
            .await
            .unwrap()
            .fetch_manifest(None)
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, RegistryError::CredentialHelper { .. }),
            "{msg}"
        );
        assert!(
            msg.contains(helper) && msg.contains(&proxy.host()) && msg.contains(want),
            "{msg}"
        );
        // Nothing was sent with any credentials, and nothing beyond the ping.
        assert!(proxy.requests().iter().all(|r| r.auth_scheme.is_none()));
        assert!(
            proxy.requests().iter().all(|r| r.path == "/v2/"),
            "{:#?}",
            proxy.requests()
        );
    }
    // "not found" from a helper means anonymous, which this registry refuses.
    std::fs::write(
        &file,
        serde_json::to_vec(&serde_json::json!({"credsStore": "none"})).unwrap(),
    )
    .unwrap();
    let err = with_auth_file(&file, Some(dir.path()))
        .source(&r)
        .await
        .unwrap()
        .fetch_manifest(None)
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");
}
