//! The multi-OS blog recipe in one `strata build`: Linux amd64 + arm64 from `Dockerfile`, five
//! Windows Server versions from `Dockerfile.windows`, each on its own nanoserver base
//! (`--build-arg WINBASE=1809`, …), into one index pushed to the real registry; then the same
//! from a build file. Bases are synthetic: busybox as `alpine`, one random Windows image per
//! os.version as `mcr.microsoft.com/windows/nanoserver:<release>`, in the test's own store
//! (`--pull never`: nothing leaves the machine).

mod common;

use std::path::{Path, PathBuf};

use common::{Env, push_image, run, sha256_hex, skopeo_raw, windows_image};
use serde_json::Value;
use strata_spec::Platform;
use strata_testkit::{TestRegistry, busybox_index};

/// The blog's Linux Containerfile (its build stage compiled the app; here the binary is in
/// the context already).
const LINUX_DOCKERFILE: &str = "FROM alpine\nCOPY app /app\nENTRYPOINT [\"/app\"]\n";

/// The blog's Windows Containerfile, verbatim.
const WINDOWS_DOCKERFILE: &str = "ARG WINBASE\n\
FROM mcr.microsoft.com/windows/nanoserver:${WINBASE}\n\
COPY app.exe /app.exe\n\
ENTRYPOINT [\"app.exe\"]\n";

/// (release tag, --platform os.version, the base's full os.version)
const WINDOWS: [(&str, &str, &str); 5] = [
    ("1809", "10.0.17763", "10.0.17763.1757"),
    ("1903", "10.0.18362", "10.0.18362.1256"),
    ("1909", "10.0.18363", "10.0.18363.1556"),
    ("2004", "10.0.19041", "10.0.19041.1415"),
    ("20H2", "10.0.19042", "10.0.19042.1466"),
];

const LINUX_APP: &[u8] = b"#!/bin/sh\necho linux app\n";
const WINDOWS_APP: &[u8] = b"MZ windows app";

/// The store gets `alpine` (busybox amd64 + arm64) and the five nanoserver releases; the
/// context gets both Containerfiles and both binaries. Returns the context and, per release,
/// the base's config os.version and layer digest.
fn setup(env: &Env) -> (PathBuf, Vec<(String, String)>) {
    push_image(env, &busybox_index(), "alpine");
    let mut bases = Vec::new();
    for (i, (release, _, full)) in WINDOWS.iter().enumerate() {
        let image = windows_image(full, 100 + i as u64);
        push_image(
            env,
            &image,
            &format!("mcr.microsoft.com/windows/nanoserver:{release}"),
        );
        bases.push((full.to_string(), image.layers()[0].digest.to_string()));
    }
    let ctx = env.path("ctx");
    std::fs::create_dir_all(&ctx).expect("mkdir");
    std::fs::write(ctx.join("Dockerfile"), LINUX_DOCKERFILE).expect("write");
    std::fs::write(ctx.join("Dockerfile.windows"), WINDOWS_DOCKERFILE).expect("write");
    std::fs::write(ctx.join("app"), LINUX_APP).expect("write");
    std::fs::write(ctx.join("app.exe"), WINDOWS_APP).expect("write");
    (ctx, bases)
}

fn windows_platforms() -> String {
    WINDOWS
        .iter()
        .map(|(_, v, _)| format!("windows/amd64:{v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// `--build-arg windows/amd64:<os.version>=WINBASE=<release>` for every release.
fn winbase_args() -> Vec<String> {
    WINDOWS
        .iter()
        .flat_map(|(release, v, _)| {
            [
                "--build-arg".to_string(),
                format!("windows/amd64:{v}=WINBASE={release}"),
            ]
        })
        .collect()
}

fn blob(layout: &Path, digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    std::fs::read(layout.join("blobs/sha256").join(hex)).expect("blob")
}

fn json_blob(layout: &Path, digest: &str) -> Value {
    serde_json::from_slice(&blob(layout, digest)).expect("json blob")
}

/// Paths and contents of a gzip layer's entries.
fn layer_files(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes));
    for e in archive.entries().expect("tar") {
        let mut e = e.expect("entry");
        let path = e.path().expect("path").to_string_lossy().into_owned();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut data).expect("read");
        out.push((path, data));
    }
    out
}

/// Every check of the seven-entry index in `layout` (an OCI layout holding the index and its
/// images): platforms, os.version from each base, base layers, the app layer of each file.
fn check_index(layout: &Path, index: &Value, bases: &[(String, String)]) {
    let entries = index["manifests"].as_array().expect("manifests");
    let platforms: Vec<String> = entries
        .iter()
        .map(|m| {
            let p: Platform = serde_json::from_value(m["platform"].clone()).expect("platform");
            // arm64/v8 and arm64 are one platform.
            p.normalised().to_string()
        })
        .collect();
    let mut wanted = vec!["linux/amd64".to_string(), "linux/arm64".to_string()];
    wanted.extend(
        bases
            .iter()
            .map(|(full, _)| format!("windows/amd64:{full}")),
    );
    assert_eq!(platforms, wanted, "{index}");
    let mut windows_app_layers = Vec::new();
    for m in entries {
        let manifest = json_blob(layout, m["digest"].as_str().expect("digest"));
        let config = json_blob(
            layout,
            manifest["config"]["digest"].as_str().expect("config"),
        );
        let layers = manifest["layers"].as_array().expect("layers");
        let top = layer_files(&blob(
            layout,
            layers.last().expect("a layer")["digest"]
                .as_str()
                .expect("digest"),
        ));
        assert_eq!(config["os"], m["platform"]["os"]);
        if m["platform"]["os"] == "windows" {
            let version = m["platform"]["os.version"].as_str().expect("os.version");
            let (full, base_layer) = bases
                .iter()
                .find(|(full, _)| full == version)
                .expect("a base per version");
            // The entry, the config and the base agree on the os.version.
            assert_eq!(config["os.version"], full.as_str(), "{config}");
            assert_eq!(
                layers[0]["digest"],
                base_layer.as_str(),
                "base layer of {full}"
            );
            assert_eq!(layers.len(), 2);
            assert_eq!(
                config["config"]["Entrypoint"],
                serde_json::json!(["app.exe"])
            );
            let exe = top
                .iter()
                .find(|(p, _)| p == "Files/app.exe")
                .unwrap_or_else(|| panic!("Files/app.exe in {top:?}"));
            assert_eq!(exe.1, WINDOWS_APP);
            windows_app_layers.push(layers[1]["digest"].clone());
        } else {
            assert!(config.get("os.version").is_none(), "{config}");
            assert_eq!(config["architecture"], m["platform"]["architecture"]);
            assert_eq!(config["config"]["Entrypoint"], serde_json::json!(["/app"]));
            let app = top
                .iter()
                .find(|(p, _)| p == "app")
                .unwrap_or_else(|| panic!("app in {top:?}"));
            assert_eq!(app.1, LINUX_APP);
            assert!(!top.iter().any(|(p, _)| p.contains("app.exe")), "{top:?}");
        }
    }
    // One COPY, one layer: the five Windows images share the app layer.
    windows_app_layers.dedup();
    assert_eq!(windows_app_layers.len(), 1);
}

#[test]
fn blog_flow_one_build_seven_entries_pushed() {
    let env = Env::new();
    let registry = TestRegistry::start();
    let host = registry.host();
    let (ctx, bases) = setup(&env);
    let tag = format!("{host}/app:1");
    let mut args: Vec<String> = [
        "build",
        "--pull",
        "never",
        "--tls-verify=false",
        "--format",
        "json",
        "--source-date-epoch",
        "1700000000",
        "--platform",
        "linux/amd64,linux/arm64",
        "--platform",
        &windows_platforms(),
        "-f",
        &ctx.join("Dockerfile").display().to_string(),
        "-f",
        &format!("windows={}", ctx.join("Dockerfile.windows").display()),
        "-t",
        &tag,
        "--push",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(winbase_args());
    args.push(ctx.display().to_string());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = env.json(&args);

    let digest = result["digest"].as_str().expect("digest");
    assert_eq!(result["pushed"][0]["digest"], digest);
    let images = result["images"].as_array().expect("images");
    assert_eq!(images.len(), 7);
    for image in images {
        let file = image["containerfile"].as_str().expect("containerfile");
        let windows = image["platform"]["os"] == "windows";
        assert_eq!(file.ends_with("Dockerfile.windows"), windows, "{image}");
        assert!(file.ends_with("Dockerfile") != windows, "{image}");
    }

    // skopeo reads the pushed index; its bytes are the build's result.
    let raw = skopeo_raw(&format!("docker://{tag}"));
    assert_eq!(sha256_hex(&raw), digest);
    let index: Value = serde_json::from_slice(&raw).expect("index json");
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    // Check the registry's copy through an OCI layout skopeo writes.
    let pulled = env.path("pulled");
    run(
        "skopeo",
        &[
            "copy",
            "--all",
            "--src-tls-verify=false",
            &format!("docker://{tag}"),
            &format!("oci:{}:app", pulled.display()),
        ],
    );
    check_index(&pulled, &index, &bases);
    // The Windows node of each version picks its own image.
    for (_, v, full) in WINDOWS {
        let chosen = env.json(&[
            "inspect",
            "--tls-verify=false",
            "--platform",
            &format!("windows/amd64:{v}"),
            "--format",
            "json",
            &format!("docker://{tag}"),
        ]);
        let text = chosen.to_string();
        assert!(text.contains(full), "{v}: {text}");
    }

    // The same seven platforms from a build file give the same index, byte for byte.
    let mut yaml = String::from(
        "targets:\n  linux:\n    platforms: [linux/amd64, linux/arm64]\n    context: ctx\n",
    );
    for (release, v, _) in WINDOWS {
        yaml.push_str(&format!(
            "  windows-{release}:\n    platforms: ['windows/amd64:{v}']\n    context: ctx\n    dockerfile: Dockerfile.windows\n    args:\n      WINBASE: {release}\n"
        ));
    }
    let file = env.path("strata-build.yaml");
    std::fs::write(&file, yaml).expect("write");
    let out = env.path("out");
    let from_file = env.json(&[
        "build",
        "--pull",
        "never",
        "--format",
        "json",
        "--source-date-epoch",
        "1700000000",
        "--build-file",
        file.to_str().expect("utf-8"),
        "-o",
        &format!("oci:{}:app", out.display()),
    ]);
    assert_eq!(from_file["digest"], digest, "{from_file}");
    check_index(&out, &index, &bases);
}

#[test]
fn scoping_mistakes_are_clear_errors() {
    let env = Env::new();
    let (ctx, _) = setup(&env);
    let ctx = ctx.display().to_string();
    let windows_file = format!("windows={ctx}/Dockerfile.windows");
    let bare = env.path("bare");
    std::fs::create_dir_all(&bare).expect("mkdir");
    let bare = bare.display().to_string();
    let build_file = env.path("b.yaml");
    std::fs::write(
        &build_file,
        format!("targets:\n  linux:\n    platforms: [linux/amd64]\n    context: {ctx}\n"),
    )
    .expect("write");
    let build_file = build_file.display().to_string();
    let win1809 = "windows/amd64:10.0.17763";
    let cases: [(&str, Vec<&str>, Vec<&str>); 5] = [
        (
            "a base without the platform: the existing error, naming the base and what it has",
            vec![
                "--platform",
                "windows/amd64:10.0.20348",
                "-f",
                &windows_file,
            ],
            vec![
                "mcr.microsoft.com/windows/nanoserver:1809",
                "windows/amd64:10.0.20348",
                "10.0.17763.1757",
            ],
        ),
        (
            "a scope matching no platform built (a typo or a platform left out)",
            vec![
                "--platform",
                win1809,
                "-f",
                &windows_file,
                "--build-arg",
                "windows/amd64:10.0.18362=WINBASE=1903",
            ],
            vec![
                "--build-arg windows/amd64:10.0.18362=WINBASE=1903",
                "matches none",
                win1809,
            ],
        ),
        (
            "two scopes, neither more specific, disagreeing for one platform",
            vec![
                "--platform",
                win1809,
                "-f",
                &windows_file,
                "--build-arg",
                "windows/amd64=WINBASE=1903",
                "--build-arg",
                "windows:10.0.17763=WINBASE=1909",
            ],
            vec![
                "windows/amd64=WINBASE=1903",
                "windows:10.0.17763=WINBASE=1909",
                "none is more specific",
            ],
        ),
        (
            "a platform no -f covers, in a context without a default Containerfile",
            vec![
                "--platform",
                "linux/amd64,windows/amd64:10.0.17763",
                "-f",
                &windows_file,
                &bare,
            ],
            vec!["no Containerfile for platform linux/amd64", &windows_file],
        ),
        (
            "--platform picking a platform the build file does not build",
            vec!["--build-file", &build_file, "--platform", "linux/arm64"],
            vec![
                "--platform linux/arm64",
                "b.yaml",
                "(it builds linux/amd64)",
            ],
        ),
    ];
    for (what, args, wanted) in cases {
        let mut all = vec![
            "build",
            "--pull",
            "never",
            "--build-arg",
            "windows=WINBASE=1809",
        ];
        all.extend(&args);
        if !args.contains(&"--build-file") && !args.contains(&bare.as_str()) {
            all.push(&ctx);
        }
        let err = env.fails(&all);
        for w in wanted {
            assert!(err.contains(w), "{what}: {w:?} not in\n{err}");
        }
    }
}
