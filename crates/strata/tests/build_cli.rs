//! `strata build` from the command line: bases from layouts and registries, outputs to the
//! store, layouts, archives and registries, JSON results, errors naming file:line.

mod common;

use common::{Env, layout_digest, run, skopeo_info, skopeo_raw};
use strata_testkit::{TestRegistry, busybox_index};

/// A context directory with a Containerfile and one file.
fn context(env: &Env, containerfile: &str) -> std::path::PathBuf {
    let ctx = env.path("ctx");
    std::fs::create_dir_all(ctx.join("app")).expect("mkdir");
    std::fs::write(ctx.join("Containerfile"), containerfile).expect("write");
    std::fs::write(ctx.join("app/hello.txt"), "hello from strata\n").expect("write");
    ctx
}

fn base_layout(env: &Env) -> String {
    let dir = env.path("base");
    busybox_index()
        .write_oci_layout(&dir, "multi")
        .expect("layout");
    format!("oci:{}:multi", dir.display())
}

#[test]
fn builds_into_the_store_and_podman_runs_it() {
    let env = Env::new();
    let base = base_layout(&env);
    let ctx = context(
        &env,
        &format!("FROM {base}\nCOPY app/hello.txt /hello.txt\nCMD [\"cat\", \"/hello.txt\"]\n"),
    );
    let digest = env.ok(&[
        "build",
        "-q",
        "-t",
        "localhost/hello:1",
        ctx.to_str().expect("utf-8"),
    ]);
    let digest = digest.trim();
    assert!(digest.starts_with("sha256:"), "{digest}");
    let ls = env.json(&["ls", "--format", "json"]);
    assert_eq!(ls[0]["tag"], "localhost/hello:1", "{ls}");
    assert_eq!(ls[0]["digest"], digest);
    let store = env.path("data/strata");
    strata_testkit::schema::assert_layout_valid(&store);
    // podman names images after the layout path, which must then be lowercase.
    let lower = std::env::temp_dir().join(format!("strata-podman-{}", std::process::id()));
    env.ok(&[
        "copy",
        "-q",
        "localhost/hello:1",
        &format!("oci:{}:hello", lower.display()),
    ]);
    let out = run(
        "podman",
        &[
            "run",
            "--rm",
            "--network=none",
            &format!("oci:{}:hello", lower.display()),
        ],
    );
    let _ = std::fs::remove_dir_all(&lower);
    assert_eq!(out, "hello from strata\n");
}

#[test]
fn multi_platform_to_a_layout_with_json_result_and_iidfile() {
    let env = Env::new();
    let base = base_layout(&env);
    let ctx = context(
        &env,
        "ARG BASE\nFROM ${BASE}\nARG TARGETARCH\nCOPY app /app/${TARGETARCH}/\n",
    );
    let out = env.path("out");
    let iid = env.path("iid");
    let result = env.json(&[
        "build",
        "--format",
        "json",
        "--build-arg",
        &format!("BASE={base}"),
        "--platform",
        "linux/amd64,linux/arm64",
        "-o",
        &format!("oci:{}:v1", out.display()),
        "--iidfile",
        iid.to_str().expect("utf-8"),
        ctx.to_str().expect("utf-8"),
    ]);
    assert_eq!(
        result["media_type"],
        "application/vnd.oci.image.index.v1+json"
    );
    let digest = result["digest"].as_str().expect("digest");
    assert_eq!(layout_digest(&out, "v1"), digest);
    assert_eq!(
        std::fs::read_to_string(&iid).expect("iidfile").trim(),
        digest
    );
    let images = result["images"].as_array().expect("images");
    assert_eq!(images.len(), 2);
    strata_testkit::schema::assert_layout_valid(&out);
    // skopeo picks the host's entry of the index.
    assert_eq!(
        skopeo_info(&format!("oci:{}:v1", out.display()))["Architecture"],
        "amd64"
    );
    // The arm64 image has /app/arm64/hello.txt: unpack it with umoci to check.
    let bundle = env.path("bundle");
    let arm_out = env.path("arm");
    env.ok(&[
        "copy",
        "-q",
        "--platform",
        "linux/arm64",
        &format!("oci:{}:v1", out.display()),
        &format!("oci:{}:a", arm_out.display()),
    ]);
    run(
        "umoci",
        &[
            "unpack",
            "--image",
            &format!("{}:a", arm_out.display()),
            bundle.to_str().expect("utf-8"),
        ],
    );
    assert_eq!(
        std::fs::read_to_string(bundle.join("rootfs/app/arm64/hello.txt")).expect("file"),
        "hello from strata\n"
    );
}

#[test]
fn pushes_to_a_registry_and_writes_archives() {
    let env = Env::new();
    let registry = TestRegistry::start();
    let host = registry.host();
    // The base comes from the registry, by a bare reference, as in a normal Containerfile.
    let src = env.path("bb");
    busybox_index()
        .write_oci_layout(&src, "multi")
        .expect("layout");
    env.ok(&[
        "copy",
        "-q",
        "--all",
        "--tls-verify=false",
        &format!("oci:{}:multi", src.display()),
        &format!("docker://{host}/base/busybox:multi"),
    ]);
    let ctx = context(
        &env,
        &format!("FROM {host}/base/busybox:multi\nCOPY app/hello.txt /\n"),
    );
    let tag = format!("{host}/app:v1");
    let digest = env.ok(&[
        "build",
        "-q",
        "--tls-verify=false",
        "--platform",
        "linux/amd64,linux/arm64",
        "-t",
        &tag,
        "--push",
        ctx.to_str().expect("utf-8"),
    ]);
    assert_eq!(
        common::sha256_hex(&skopeo_raw(&format!("docker://{tag}"))),
        digest.trim()
    );
    // `docker://` is accepted on a pushed tag, as on any image name.
    let prefixed = format!("docker://{host}/app:v2");
    let digest = env.ok(&[
        "build",
        "-q",
        "--tls-verify=false",
        "--platform",
        "linux/amd64,linux/arm64",
        "-t",
        &prefixed,
        "--push",
        ctx.to_str().expect("utf-8"),
    ]);
    assert_eq!(common::sha256_hex(&skopeo_raw(&prefixed)), digest.trim());
    // docker-archive of one platform, loadable.
    let archive = env.path("app.tar");
    env.ok(&[
        "build",
        "-q",
        "--tls-verify=false",
        "--platform",
        "linux/amd64",
        "-o",
        &format!("docker-archive:{}:app:v1", archive.display()),
        ctx.to_str().expect("utf-8"),
    ]);
    let info = skopeo_info(&format!("docker-archive:{}", archive.display()));
    assert_eq!(info["Architecture"], "amd64");
    // A tag --push cannot use fails before anything is built (the base below does not exist,
    // and is never asked for).
    let missing = context(&env, "FROM localhost/never/built:1\nCOPY app/hello.txt /\n");
    let err = env.fails(&[
        "build",
        "-t",
        "Not A Name",
        "--push",
        missing.to_str().expect("utf-8"),
    ]);
    assert!(
        err.contains("--tag Not A Name") && !err.contains("never/built"),
        "{err}"
    );
}

#[test]
fn errors_name_the_file_and_line() {
    let env = Env::new();
    let base = base_layout(&env);
    let ctx = context(&env, &format!("FROM {base}\nCOPY missing.txt /\n"));
    let err = env.fails(&["build", ctx.to_str().expect("utf-8")]);
    assert!(
        err.contains("Containerfile:2") && err.contains("missing.txt"),
        "{err}"
    );
    let ctx2 = env.path("ctx2");
    std::fs::create_dir_all(&ctx2).expect("mkdir");
    std::fs::write(ctx2.join("Dockerfile"), "FROM scratch\nFROBNICATE x\n").expect("write");
    let err = env.fails(&["build", ctx2.to_str().expect("utf-8")]);
    assert!(
        err.contains("Dockerfile:2") && err.to_lowercase().contains("frobnicate"),
        "{err}"
    );
    let err = env.fails(&["build", env.path("nowhere").to_str().expect("utf-8")]);
    assert!(err.contains("Containerfile"), "{err}");
}

#[test]
fn containerfile_from_stdin_and_reproducible_digest() {
    let env = Env::new();
    let base = base_layout(&env);
    let ctx = context(&env, "");
    let text = format!("FROM {base}\nCOPY app /app\nLABEL release=1\n");
    let build = |out: &str| {
        let mut child = env
            .strata()
            .args([
                "build",
                "-q",
                "--source-date-epoch",
                "1700000000",
                "-f",
                "-",
                "-o",
                out,
                ctx.to_str().expect("utf-8"),
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write");
        let out = child.wait_with_output().expect("wait");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .expect("utf-8")
            .trim()
            .to_string()
    };
    let a = build(&format!("oci:{}:a", env.path("o1").display()));
    let b = build(&format!("oci:{}:b", env.path("o2").display()));
    assert_eq!(a, b, "same inputs, same digest, in two fresh layouts");
}

#[test]
fn compression_levels_out_of_range_are_refused_by_build_and_repack() {
    let env = Env::new();
    let ctx = context(&env, "FROM scratch\nCOPY app /app\n");
    let err = env.fails(&[
        "build",
        "--compression",
        "gzip",
        "--compression-level",
        "12",
        ctx.to_str().unwrap(),
    ]);
    assert!(
        err.contains("compression level 12: gzip levels are 0-9"),
        "{err}"
    );
    let err = env.fails(&[
        "repack",
        "--compression",
        "zstd:40",
        env.path("bundle").to_str().unwrap(),
        &format!("oci:{}:x", env.path("out").display()),
    ]);
    assert!(
        err.contains("compression level 40: zstd levels are -7 to 22"),
        "{err}"
    );
    let err = env.fails(&[
        "repack",
        "--compression",
        "gzip:x",
        env.path("bundle").to_str().unwrap(),
        &format!("oci:{}:x", env.path("out").display()),
    ]);
    assert!(err.contains("--compression gzip:x: bad level"), "{err}");
}
