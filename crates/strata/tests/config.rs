//! Configuration like the containers tools: registries.conf (insecure, mirrors, blocked,
//! aliases), certs.d CA directories, strata's own config file, and `strata config`, against
//! the real distribution registry.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::{Env, fixture_layout, layout_digest, run, skopeo_raw};
use serde_json::Value;
use strata_testkit::{Fault, FaultProxy, Rule, TestRegistry, busybox_index};

/// Run strata in `env` with `conf` as the only registries.conf.
fn strata_with(env: &Env, conf: &Path, args: &[&str]) -> Output {
    env.strata()
        .env("CONTAINERS_REGISTRIES_CONF", conf)
        .args(args)
        .output()
        .expect("run strata")
}

fn ok_with(env: &Env, conf: &Path, args: &[&str]) -> String {
    let out = strata_with(env, conf, args);
    assert!(
        out.status.success(),
        "strata {args:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

fn fails_with(env: &Env, conf: &Path, args: &[&str]) -> String {
    let out = strata_with(env, conf, args);
    assert_eq!(
        out.status.code(),
        Some(1),
        "strata {args:?} should fail:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr).expect("utf-8")
}

/// A registries.conf of its own (each call a new file).
fn write_conf(env: &Env, text: &str) -> PathBuf {
    let dir = tempfile::tempdir_in(env.dir.path())
        .expect("tempdir")
        .keep();
    let path = dir.join("registries.conf");
    std::fs::write(&path, text).expect("write registries.conf");
    path
}

/// Copy the busybox index at `dest` into a layout; its digest must be the fixture's.
fn pull_back_and_check(env: &Env, conf: &Path, dest: &str) {
    let back = tempfile::tempdir_in(env.dir.path())
        .expect("tempdir")
        .keep();
    ok_with(
        env,
        conf,
        &[
            "copy",
            "-q",
            "--all",
            dest,
            &format!("oci:{}:v1", back.display()),
        ],
    );
    assert_eq!(
        layout_digest(&back, "v1"),
        busybox_index().digest().to_string()
    );
}

/// A loopback port nothing listens on (a mirror that is down).
fn dead_host() -> String {
    static PORT: std::sync::OnceLock<u16> = std::sync::OnceLock::new();
    let port = *PORT.get_or_init(|| {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("bind")
    });
    format!("127.0.0.1:{port}")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn registries_conf_insecure_registry_needs_no_tls_flag_and_the_flag_still_wins() {
    let env = Env::new();
    let registry = TestRegistry::start();
    let src = format!("oci:{}:multi", fixture_layout(&env).display());
    let dest = format!("docker://{}/app:v1", registry.host());
    let empty = write_conf(&env, "");
    // Without configuration a plain-HTTP registry is refused.
    let err = fails_with(&env, &empty, &["copy", "-q", "--all", &src, &dest]);
    assert!(err.contains(&registry.host()), "{err}");
    let conf = write_conf(
        &env,
        &format!(
            "[[registry]]\nlocation = \"{}\"\ninsecure = true\n",
            registry.host()
        ),
    );
    ok_with(&env, &conf, &["copy", "-q", "--all", &src, &dest]);
    assert_eq!(skopeo_raw(&dest), busybox_index().manifest);
    pull_back_and_check(&env, &conf, &dest);
    // --tls-verify=true beats the configuration.
    let err = fails_with(&env, &conf, &["inspect", "--tls-verify=true", &dest]);
    assert!(err.contains(&registry.host()), "{err}");
    // `strata config HOST` says why the host is insecure.
    let report: Value = serde_json::from_str(&ok_with(
        &env,
        &conf,
        &["config", "--format", "json", &registry.host()],
    ))
    .expect("json");
    assert_eq!(report["image"]["host"]["tls_verify"], false, "{report}");
    let because = report["image"]["host"]["because"]
        .as_str()
        .unwrap_or_default();
    assert!(
        because.contains(conf.to_str().unwrap()) && because.contains("insecure = true"),
        "{because}"
    );
}

#[test]
fn mirror_serves_pulls_falls_back_to_the_primary_and_never_gets_pushes() {
    let env = Env::new();
    let primary = TestRegistry::start();
    let mirror = TestRegistry::start();
    let src = format!("oci:{}:multi", fixture_layout(&env).display());
    let plain = write_conf(&env, "");
    // The image only on the mirror (under the rewritten path), another only on the primary.
    env.ok(&[
        "copy",
        "-q",
        "--all",
        "--tls-verify=false",
        &src,
        &format!("docker://{}/cache/app:v1", mirror.host()),
    ]);
    let only_primary = strata_testkit::random_image(7, &[1000]);
    let layout = env.path("primary-only");
    only_primary.write_oci_layout(&layout, "x").expect("layout");
    env.ok(&[
        "copy",
        "-q",
        "--tls-verify=false",
        &format!("oci:{}:x", layout.display()),
        &format!("docker://{}/other:v1", primary.host()),
    ]);
    let conf = write_conf(
        &env,
        &format!(
            "[[registry]]\nlocation = \"{p}\"\ninsecure = true\n[[registry.mirror]]\nlocation = \"{dead}\"\ninsecure = true\n[[registry.mirror]]\nlocation = \"{m}/cache\"\ninsecure = true\n",
            p = primary.host(),
            m = mirror.host(),
            dead = dead_host()
        ),
    );
    // The dead mirror is skipped; pulled from the second mirror: the primary does not have
    // app:v1 at all.
    let out = env.path("from-mirror");
    ok_with(
        &env,
        &conf,
        &[
            "copy",
            "-q",
            "--all",
            &format!("docker://{}/app:v1", primary.host()),
            &format!("oci:{}:v1", out.display()),
        ],
    );
    assert_eq!(
        layout_digest(&out, "v1"),
        busybox_index().digest().to_string()
    );
    // Without the configuration, a registry's own content: `reference` is not there.
    let assert_absent = |reference: String| {
        let err = fails_with(&env, &plain, &["inspect", "--tls-verify=false", &reference]);
        assert!(err.contains("not found"), "{reference}: {err}");
    };
    assert_absent(format!("docker://{}/app:v1", primary.host()));
    // The mirror lacks other:v1: the primary serves it.
    let out2 = env.path("from-primary");
    ok_with(
        &env,
        &conf,
        &[
            "copy",
            "-q",
            &format!("docker://{}/other:v1", primary.host()),
            &format!("oci:{}:v1", out2.display()),
        ],
    );
    assert_eq!(
        layout_digest(&out2, "v1"),
        only_primary.digest().to_string()
    );
    // A push goes to the named registry, never to the mirror.
    ok_with(
        &env,
        &conf,
        &[
            "copy",
            "-q",
            &format!("oci:{}:x", layout.display()),
            &format!("docker://{}/pushed:v1", primary.host()),
        ],
    );
    assert_eq!(
        skopeo_raw(&format!("docker://{}/pushed:v1", primary.host())),
        only_primary.manifest
    );
    assert_absent(format!("docker://{}/cache/pushed:v1", mirror.host()));
    // `strata config IMAGE` lists the order.
    let report: Value = serde_json::from_str(&ok_with(
        &env,
        &conf,
        &[
            "config",
            "--format",
            "json",
            &format!("{}/app:v1", primary.host()),
        ],
    ))
    .expect("json");
    let sources = report["image"]["pull_sources"].as_array().expect("sources");
    assert_eq!(sources[0]["reference"], format!("{}/app:v1", dead_host()));
    assert_eq!(
        sources[1]["reference"],
        format!("{}/cache/app:v1", mirror.host())
    );
    assert_eq!(sources[1]["mirror"], true);
    assert_eq!(
        sources[2]["reference"],
        format!("{}/app:v1", primary.host())
    );
    assert_eq!(sources[2]["mirror"], false);
}

#[test]
fn blocked_registry_is_refused_naming_the_file() {
    let env = Env::new();
    let registry = TestRegistry::start();
    let conf = write_conf(
        &env,
        &format!(
            "[[registry]]\nprefix = \"{}/secret\"\nblocked = true\ninsecure = true\n",
            registry.host()
        ),
    );
    let err = fails_with(
        &env,
        &conf,
        &[
            "copy",
            "-q",
            &format!("docker://{}/secret/app:v1", registry.host()),
            &format!("oci:{}:v1", env.path("out").display()),
        ],
    );
    assert!(
        err.contains(&format!("{}/secret/app:v1 is blocked", registry.host()))
            && err.contains(conf.to_str().unwrap()),
        "{err}"
    );
    assert!(!env.path("out/index.json").exists());
}

/// A CA and a certificate for 127.0.0.1 signed by it, made with openssl.
fn make_certs(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    std::fs::create_dir_all(dir).expect("mkdir");
    let p = |n: &str| dir.join(n).to_str().expect("utf-8").to_string();
    run(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=strata test CA",
            "-keyout",
            &p("ca.key"),
            "-out",
            &p("ca.crt"),
        ],
    );
    run(
        "openssl",
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            &p("server.key"),
            "-out",
            &p("server.csr"),
        ],
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write");
    run(
        "openssl",
        &[
            "x509",
            "-req",
            "-in",
            &p("server.csr"),
            "-CA",
            &p("ca.crt"),
            "-CAkey",
            &p("ca.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &p("ext.cnf"),
            "-out",
            &p("server.crt"),
        ],
    );
    (
        dir.join("ca.crt"),
        dir.join("server.crt"),
        dir.join("server.key"),
    )
}

/// A client certificate signed by the CA of [`make_certs`] in `dir`.
fn make_client_cert(dir: &Path) -> (PathBuf, PathBuf) {
    let p = |n: &str| dir.join(n).to_str().expect("utf-8").to_string();
    run(
        "openssl",
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=strata client",
            "-keyout",
            &p("client.key"),
            "-out",
            &p("client.csr"),
        ],
    );
    std::fs::write(dir.join("client-ext.cnf"), "extendedKeyUsage=clientAuth\n").expect("write");
    run(
        "openssl",
        &[
            "x509",
            "-req",
            "-in",
            &p("client.csr"),
            "-CA",
            &p("ca.crt"),
            "-CAkey",
            &p("ca.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &p("client-ext.cnf"),
            "-out",
            &p("client.cert"),
        ],
    );
    (dir.join("client.cert"), dir.join("client.key"))
}

#[test]
fn certs_d_client_certificate_is_presented() {
    let env = Env::new();
    let pki = env.path("pki");
    let (ca, cert, key) = make_certs(&pki);
    let (client_cert, client_key) = make_client_cert(&pki);
    let registry = TestRegistry::start_with_tls(&cert, &key, Some(&ca));
    let conf = write_conf(&env, "");
    let src = format!("oci:{}:multi", fixture_layout(&env).display());
    let dest = format!("docker://{}/app:v1", registry.host());
    let certs_d = env.path(&format!(
        "home/.config/containers/certs.d/{}",
        registry.host()
    ));
    std::fs::create_dir_all(&certs_d).expect("mkdir");
    std::fs::copy(&ca, certs_d.join("ca.crt")).expect("copy ca");
    // The CA alone is not enough: the registry wants a client certificate.
    let err = fails_with(&env, &conf, &["copy", "-q", "--all", &src, &dest]);
    assert!(err.contains(&registry.host()), "{err}");
    std::fs::copy(&client_cert, certs_d.join("me.cert")).expect("copy cert");
    std::fs::copy(&client_key, certs_d.join("me.key")).expect("copy key");
    ok_with(&env, &conf, &["copy", "-q", "--all", &src, &dest]);
    pull_back_and_check(&env, &conf, &dest);
    // A key without its certificate is an error naming the file.
    std::fs::remove_file(certs_d.join("me.cert")).expect("rm");
    let err = fails_with(&env, &conf, &["inspect", &dest]);
    assert!(err.contains("me.key"), "{err}");
}

#[test]
fn certs_d_ca_is_trusted_without_tls_verify_false() {
    let env = Env::new();
    let (ca, cert, key) = make_certs(&env.path("pki"));
    let registry = TestRegistry::start_with_tls(&cert, &key, None);
    let conf = write_conf(&env, "");
    let src = format!("oci:{}:multi", fixture_layout(&env).display());
    let dest = format!("docker://{}/app:v1", registry.host());
    // An unknown CA is refused.
    let err = fails_with(&env, &conf, &["copy", "-q", "--all", &src, &dest]);
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    // The CA in certs.d/HOST:PORT is trusted for that host.
    let certs_d = env.path(&format!(
        "home/.config/containers/certs.d/{}",
        registry.host()
    ));
    std::fs::create_dir_all(&certs_d).expect("mkdir");
    std::fs::copy(&ca, certs_d.join("ca.crt")).expect("copy ca");
    ok_with(&env, &conf, &["copy", "-q", "--all", &src, &dest]);
    pull_back_and_check(&env, &conf, &dest);
    let report: Value = serde_json::from_str(&ok_with(
        &env,
        &conf,
        &["config", "--format", "json", &registry.host()],
    ))
    .expect("json");
    assert_eq!(report["image"]["host"]["tls_verify"], true);
    assert_eq!(
        report["image"]["host"]["ca_certs"][0],
        certs_d.join("ca.crt").to_str().unwrap()
    );
    // A flat --dest-cert-dir works too (and replaces the certs.d lookup).
    std::fs::remove_dir_all(&certs_d).expect("rm");
    let flat = env.path("flat");
    std::fs::create_dir_all(&flat).expect("mkdir");
    std::fs::copy(&ca, flat.join("my-ca.crt")).expect("copy ca");
    ok_with(
        &env,
        &conf,
        &[
            "copy",
            "-q",
            "--all",
            "--dest-cert-dir",
            flat.to_str().unwrap(),
            &src,
            &format!("docker://{}/app:v2", registry.host()),
        ],
    );
    let err = fails_with(&env, &conf, &["inspect", &dest]);
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    ok_with(
        &env,
        &conf,
        &["inspect", "--cert-dir", flat.to_str().unwrap(), &dest],
    );
}

#[test]
fn aliases_and_search_registries_are_reported_with_their_files() {
    let env = Env::new();
    let conf = write_conf(
        &env,
        "unqualified-search-registries = [\"registry.example\", \"quay.io\"]\nshort-name-mode = \"enforcing\"\n[aliases]\n\"myapp\" = \"registry.example/team/myapp\"\n",
    );
    let report: Value =
        serde_json::from_str(&ok_with(&env, &conf, &["config", "--format", "json"])).expect("json");
    let rc = &report["registries_conf"];
    assert_eq!(
        rc["aliases"]["myapp"]["value"],
        "registry.example/team/myapp"
    );
    assert_eq!(rc["aliases"]["myapp"]["origin"], conf.to_str().unwrap());
    assert_eq!(
        rc["unqualified_search_registries"]["value"],
        serde_json::json!(["registry.example", "quay.io"])
    );
    assert_eq!(rc["short_name_mode"]["value"], "enforcing");
    assert_eq!(
        report["files"]["registries_conf"][0],
        conf.to_str().unwrap()
    );
    let text = ok_with(&env, &conf, &["config"]);
    assert!(
        text.contains("unqualified-search-registries: registry.example, quay.io"),
        "{text}"
    );
}

#[test]
fn config_file_defaults_apply_and_flags_beat_them() {
    let env = Env::new();
    let registry = TestRegistry::start();
    let rt = runtime();
    let proxy = rt.block_on(FaultProxy::start(&registry.host()));
    proxy.add(Rule::new("GET", "/v2/.*/manifests/.*", Fault::status(503)).always());
    let store = env.path("configured-store");
    let config_dir = env.path("config/strata");
    std::fs::create_dir_all(&config_dir).expect("mkdir");
    let config = config_dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "retry-times = 2\njobs = 3\ncompression = \"zstd\"\nstore = \"{}\"\n[registry.\"{}\"]\ntls-verify = false\n",
            store.display(),
            proxy.host()
        ),
    )
    .expect("write config");
    let conf = write_conf(&env, "");
    let manifest_gets = || proxy.matching("GET", "/manifests/").len();
    let image = format!("docker://{}/app:v1", proxy.host());
    // retry-times and tls-verify from the file (no --tls-verify flag: the proxy is plain HTTP).
    let err = fails_with(&env, &conf, &["inspect", &image]);
    assert!(err.contains("503"), "{err}");
    assert_eq!(manifest_gets(), 2, "retry-times = 2 from the file");
    proxy.clear_log();
    fails_with(&env, &conf, &["inspect", "--retry-times", "3", &image]);
    assert_eq!(manifest_gets(), 3, "--retry-times beats the file");
    // compression and store from the file; --compression beats it.
    let ctx = env.path("ctx");
    std::fs::create_dir_all(&ctx).expect("mkdir");
    std::fs::write(ctx.join("Containerfile"), "FROM scratch\nCOPY f /f\n").expect("write");
    std::fs::write(ctx.join("f"), "hello\n").expect("write");
    ok_with(
        &env,
        &conf,
        &["build", "-q", "-t", "localhost/z:1", ctx.to_str().unwrap()],
    );
    ok_with(
        &env,
        &conf,
        &[
            "build",
            "-q",
            "--compression",
            "gzip",
            "-t",
            "localhost/g:1",
            ctx.to_str().unwrap(),
        ],
    );
    let layer_type = |tag: &str| -> String {
        let digest = layout_digest(&store, tag);
        let hex = digest.trim_start_matches("sha256:");
        let manifest: Value = serde_json::from_slice(
            &std::fs::read(store.join("blobs/sha256").join(hex)).expect("manifest blob"),
        )
        .expect("json");
        manifest["layers"][0]["mediaType"]
            .as_str()
            .expect("mediaType")
            .to_string()
    };
    assert!(
        layer_type("localhost/z:1").ends_with("+zstd"),
        "store and compression from the file"
    );
    assert!(layer_type("localhost/g:1").ends_with("+gzip"));
    assert!(
        !env.path("data/strata/index.json").exists(),
        "the default store is not used"
    );
    // `strata config` names the file of each setting.
    let report: Value = serde_json::from_str(&ok_with(
        &env,
        &conf,
        &["config", "--format", "json", &proxy.host()],
    ))
    .expect("json");
    let file = config.to_str().unwrap();
    assert_eq!(report["settings"]["jobs"]["value"], 3);
    assert_eq!(report["settings"]["jobs"]["origin"], file);
    assert_eq!(
        report["settings"]["store"]["value"],
        store.to_str().unwrap()
    );
    assert_eq!(report["settings"]["compression"]["value"], "zstd");
    assert_eq!(report["image"]["host"]["tls_verify"], false);
    assert!(
        report["image"]["host"]["because"]
            .as_str()
            .unwrap_or_default()
            .contains(file)
    );
}

#[test]
fn malformed_files_are_errors_naming_file_and_line() {
    let env = Env::new();
    let conf = write_conf(&env, "[[registry]]\nlocation = \"a.io\"\ninsecure = yes\n");
    let err = fails_with(&env, &conf, &["inspect", "docker://a.io/x:1"]);
    assert!(
        err.contains(conf.to_str().unwrap()) && err.contains("line 3"),
        "{err}"
    );
    let config_dir = env.path("config/strata");
    std::fs::create_dir_all(&config_dir).expect("mkdir");
    let config = config_dir.join("config.toml");
    std::fs::write(&config, "jobs = 4\nretry-tims = 3\n").expect("write");
    let good = write_conf(&env, "");
    let err = fails_with(&env, &good, &["ls"]);
    assert!(
        err.contains(config.to_str().unwrap())
            && err.contains("line 2")
            && err.contains("retry-tims"),
        "{err}"
    );
    // $STRATA_CONFIG names one file, which must exist.
    let out = env
        .strata()
        .env("STRATA_CONFIG", env.path("nope.toml"))
        .args(["ls"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope.toml"));
}
