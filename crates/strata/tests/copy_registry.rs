//! `strata copy` / `inspect` / `tags` / `login` against the real distribution registry
//! (strata-testkit starts `docker-registry` on a free loopback port), judged by skopeo.

mod common;

use common::{Env, fixture_layout, layout_digest, layout_tags, skopeo_raw};
use strata_testkit::{Fault, FaultProxy, Rule, TestRegistry, busybox_image, busybox_index};

/// Push the fixture index to `docker://HOST/app:v1`; returns the source layout and that name.
fn push_fixture(env: &Env, host: &str) -> (std::path::PathBuf, String) {
    let src = fixture_layout(env);
    let dest = format!("docker://{host}/app:v1");
    env.ok(&[
        "copy",
        "-q",
        "--all",
        "--tls-verify=false",
        &format!("oci:{}:multi", src.display()),
        &dest,
    ]);
    (src, dest)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn push_and_pull_keep_digests_and_skopeo_reads_the_push() {
    let env = Env::new();
    let registry = TestRegistry::start();
    let src = fixture_layout(&env);
    let dest = format!("docker://{}/app:v1", registry.host());
    let report = env.json(&[
        "copy",
        "--all",
        "--tls-verify=false",
        "--format",
        "json",
        &format!("oci:{}:multi", src.display()),
        &dest,
    ]);
    let want = layout_digest(&src, "multi");
    assert_eq!(report["digest"], want.as_str());
    assert_eq!(report["blobs_copied"], 4);
    assert_eq!(
        skopeo_raw(&dest),
        busybox_index().manifest,
        "registry holds the exact bytes"
    );
    let tags = env.ok(&[
        "tags",
        "--tls-verify=false",
        &format!("{}/app", registry.host()),
    ]);
    assert_eq!(tags.trim(), "v1");
    let back = env.path("back");
    env.ok(&[
        "copy",
        "--all",
        "--tls-verify=false",
        &dest,
        &format!("oci:{}:v1", back.display()),
    ]);
    assert_eq!(layout_digest(&back, "v1"), want);
    strata_testkit::schema::assert_layout_valid(&back);
}

#[test]
fn second_copy_skips_every_blob_and_cross_repo_copy_mounts() {
    let env = Env::new();
    let registry = TestRegistry::start();
    let rt = runtime();
    let proxy = rt.block_on(FaultProxy::start(&registry.host()));
    let (src, dest) = push_fixture(&env, &proxy.host());
    proxy.clear_log();
    let again = env.json(&[
        "copy",
        "--all",
        "--tls-verify=false",
        "--format",
        "json",
        &format!("oci:{}:multi", src.display()),
        &dest,
    ]);
    assert_eq!(again["blobs_copied"], 0);
    assert_eq!(again["blobs_skipped"], 4);
    assert!(
        proxy.matching("PATCH", "/blobs/uploads/").is_empty()
            && proxy.matching("POST", "/blobs/uploads/").is_empty()
    );
    proxy.clear_log();
    let other = format!("docker://{}/other/repo:v1", proxy.host());
    env.ok(&["copy", "-q", "--all", "--tls-verify=false", &dest, &other]);
    let mounts = proxy.matching("POST", "mount=");
    assert_eq!(mounts.len(), 4, "{:?}", proxy.requests());
    assert!(
        proxy.matching("PATCH", "/blobs/uploads/").is_empty(),
        "no blob bytes uploaded"
    );
    assert!(
        proxy.matching("PUT", "/blobs/uploads/").is_empty(),
        "no blob bytes uploaded"
    );
    assert!(
        proxy.matching("GET", "/blobs/sha256:").is_empty(),
        "no blob downloaded"
    );
    assert_eq!(skopeo_raw(&other), busybox_index().manifest);
}

#[test]
fn basic_auth_creds_authfile_login_and_logout() {
    let env = Env::new();
    let registry = TestRegistry::start_with_basic_auth("alice", "s3cret-pw");
    let src = fixture_layout(&env);
    let source = format!("oci:{}:multi", src.display());
    let dest = format!("docker://{}/app:v1", registry.host());
    let err = env.fails(&["copy", "--tls-verify=false", &source, &dest]);
    assert!(
        err.to_lowercase().contains("unauthorized") || err.contains("authentication required"),
        "{err}"
    );
    assert!(err.contains("hint:"), "{err}");
    let err = env.fails(&[
        "copy",
        "--tls-verify=false",
        "--dest-creds",
        "alice:wrong-pw",
        &source,
        &dest,
    ]);
    assert!(
        !err.contains("wrong-pw"),
        "password leaked into the error: {err}"
    );
    env.ok(&[
        "copy",
        "-q",
        "--tls-verify=false",
        "--dest-creds",
        "alice:s3cret-pw",
        &source,
        &dest,
    ]);
    // login writes an auth file that copy then uses; the password is never printed.
    let authfile = env.path("auth.json");
    let out = env
        .strata()
        .args([
            "login",
            "--tls-verify=false",
            "--authfile",
            authfile.to_str().expect("utf-8"),
            "-u",
            "alice",
            "--password-stdin",
            &registry.host(),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().expect("stdin").write_all(b"s3cret-pw\n")?;
            c.wait_with_output()
        })
        .expect("login");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains("s3cret-pw"));
    let auth: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&authfile).expect("auth file")).expect("json");
    assert!(auth["auths"][registry.host()]["auth"].is_string(), "{auth}");
    let back = env.path("back");
    env.ok(&[
        "copy",
        "-q",
        "--tls-verify=false",
        "--src-authfile",
        authfile.to_str().expect("utf-8"),
        &dest,
        &format!("oci:{}:b", back.display()),
    ]);
    // $REGISTRY_AUTH_FILE is the default auth file.
    env.strata()
        .env("REGISTRY_AUTH_FILE", &authfile)
        .args(["inspect", "--tls-verify=false", &dest])
        .output()
        .map(|o| assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr)))
        .expect("inspect");
    // A wrong password at login is refused and not stored.
    let bad = env
        .strata()
        .args([
            "login",
            "--tls-verify=false",
            "--authfile",
            env.path("bad.json").to_str().expect("utf-8"),
            "-u",
            "alice",
            "-p",
            "nope",
            &registry.host(),
        ])
        .output()
        .expect("login");
    assert_eq!(bad.status.code(), Some(1));
    assert!(!env.path("bad.json").exists());
    env.ok(&[
        "logout",
        "--authfile",
        authfile.to_str().expect("utf-8"),
        &registry.host(),
    ]);
    let auth: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&authfile).expect("auth file")).expect("json");
    assert!(auth["auths"].get(registry.host()).is_none(), "{auth}");
}

#[test]
fn m9_digest_in_the_reference_wins_and_is_verified() {
    let env = Env::new();
    let registry = TestRegistry::start();
    let src = fixture_layout(&env);
    env.ok(&[
        "copy",
        "-q",
        "--all",
        "--tls-verify=false",
        &format!("oci:{}:multi", src.display()),
        &format!("docker://{}/app:v1", registry.host()),
    ]);
    let arm = busybox_image("arm64").digest();
    let out = env.path("out");
    // tag says the index, digest says the arm64 image: the digest decides.
    env.ok(&[
        "copy",
        "-q",
        "--tls-verify=false",
        &format!("docker://{}/app:v1@{arm}", registry.host()),
        &format!("oci:{}:pinned", out.display()),
    ]);
    assert_eq!(layout_digest(&out, "pinned"), arm.to_string());
    let missing = strata_spec::Digest::sha256_of(b"not in the registry");
    let err = env.fails(&[
        "copy",
        "--tls-verify=false",
        &format!("docker://{}/app:v1@{missing}", registry.host()),
        &format!("oci:{}:nope", out.display()),
    ]);
    assert!(err.contains(&missing.to_string()), "{err}");
    assert!(!layout_tags(&out).contains(&"nope".to_string()));
}

#[test]
fn f22_missing_source_blob_fails_without_tagging_the_destination() {
    let env = Env::new();
    let registry = TestRegistry::start();
    let src = fixture_layout(&env);
    let layer = busybox_image("amd64").layers()[0].clone();
    std::fs::remove_file(src.join("blobs/sha256").join(layer.digest.encoded()))
        .expect("remove blob");
    let dest = format!("docker://{}/app:broken", registry.host());
    let err = env.fails(&[
        "copy",
        "--tls-verify=false",
        &format!("oci:{}:multi", src.display()),
        &dest,
    ]);
    assert!(
        err.contains(&layer.digest.to_string()),
        "the error names the blob: {err}"
    );
    let tags = env.output(&[
        "tags",
        "--tls-verify=false",
        &format!("{}/app", registry.host()),
    ]);
    assert!(!String::from_utf8_lossy(&tags.stdout).contains("broken"));
}

#[test]
fn plain_http_registry_without_tls_verify_false_gets_a_hint() {
    let env = Env::new();
    let registry = TestRegistry::start();
    let err = env.fails(&["inspect", &format!("docker://{}/app:v1", registry.host())]);
    assert!(err.contains(&registry.host()), "{err}");
    assert!(
        err.contains("hint: for a plain-HTTP registry pass --tls-verify=false"),
        "{err}"
    );
}

#[test]
fn f3_retries_503_on_manifest_and_blob_then_succeeds() {
    let env = Env::new();
    let registry = TestRegistry::start();
    let rt = runtime();
    let proxy = rt.block_on(FaultProxy::start(&registry.host()));
    let (src, dest) = push_fixture(&env, &proxy.host());
    proxy.add(
        Rule::new(
            "GET",
            "/manifests/v1",
            Fault::with_header(503, "Retry-After", "1"),
        )
        .times(2),
    );
    proxy.add(Rule::new("GET", "/blobs/sha256:", Fault::ResetAfter(100)).times(1));
    let out = env.path("out");
    env.ok(&[
        "copy",
        "-q",
        "--all",
        "--tls-verify=false",
        &dest,
        &format!("oci:{}:v1", out.display()),
    ]);
    assert_eq!(layout_digest(&out, "v1"), layout_digest(&src, "multi"));
    let manifest_gets = proxy.matching("GET", "/manifests/v1");
    assert!(
        manifest_gets.len() >= 3,
        "two 503s then a success: {manifest_gets:?}"
    );
    strata_testkit::schema::assert_layout_valid(&out);
}

#[test]
fn tls_registry_trusted_through_cert_dir_and_judged_by_skopeo() {
    // The real registry over HTTPS (HTTP/2 offered): push with --dest-cert-dir, pull back with
    // --src-cert-dir into a layout; without the CA the certificate is refused with a hint.
    let env = Env::new();
    let certificates = strata_testkit::TestCertificates::new();
    let registry = TestRegistry::start_tls(&certificates);
    let ca = certificates.ca_dir();
    let src = fixture_layout(&env);
    let dest = format!("docker://{}/app:v1", registry.host());
    env.ok(&[
        "copy",
        "-q",
        "--all",
        "--dest-cert-dir",
        ca.to_str().unwrap(),
        &format!("oci:{}:multi", src.display()),
        &dest,
    ]);
    let out = std::process::Command::new("skopeo")
        .args([
            "inspect",
            "--raw",
            "--cert-dir",
            ca.to_str().unwrap(),
            &dest,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, busybox_index().manifest);

    let back = env.path("back");
    env.ok(&[
        "copy",
        "-q",
        "--all",
        "--src-cert-dir",
        ca.to_str().unwrap(),
        &dest,
        &format!("oci:{}:v1", back.display()),
    ]);
    assert_eq!(layout_digest(&back, "v1"), layout_digest(&src, "multi"));

    let err = env.fails(&[
        "copy",
        "--all",
        &dest,
        &format!("oci:{}:v2", back.display()),
    ]);
    assert!(err.contains(&registry.host()), "{err}");
    assert!(err.contains("invalid peer certificate"), "{err}");
    assert!(
        err.contains("hint:") && err.contains("certs.d/HOST:PORT/ca.crt or pass --cert-dir"),
        "{err}"
    );
    env.ok(&[
        "copy",
        "-q",
        "--all",
        "--src-tls-verify=false",
        &dest,
        &format!("oci:{}:v3", back.display()),
    ]);
    assert_eq!(layout_digest(&back, "v3"), layout_digest(&src, "multi"));
    assert_eq!(layout_tags(&back), vec!["v1".to_string(), "v3".to_string()]);
}
