//! `strata copy` / `inspect` / `ls` / `gc` between local transports, judged by skopeo, umoci and
//! the OCI schemas.

mod common;

use std::path::Path;

use common::{Env, fixture_layout, layout_digest, layout_tags, run, skopeo_info, skopeo_raw};
use strata_testkit::schema::assert_layout_valid;
use strata_testkit::{busybox_image, busybox_index};

#[test]
fn oci_to_oci_keeps_bytes_and_digests() {
    let env = Env::new();
    let src = fixture_layout(&env);
    let dst = env.path("dst");
    let out = env.ok(&[
        "copy",
        "--all",
        &format!("oci:{}:multi", src.display()),
        &format!("oci:{}:copy", dst.display()),
    ]);
    let want = layout_digest(&src, "multi");
    assert_eq!(out.trim(), want, "stdout is the digest of what was written");
    assert_eq!(layout_digest(&dst, "copy"), want);
    assert_layout_valid(&dst);
    // skopeo reads what strata wrote, byte for byte.
    let raw = skopeo_raw(&format!("oci:{}:copy", dst.display()));
    assert_eq!(common::sha256_hex(&raw), want);
}

#[test]
fn index_without_all_copies_the_host_image_as_a_single_image() {
    let env = Env::new();
    let src = fixture_layout(&env);
    let dst = env.path("dst");
    let out = env.json(&[
        "copy",
        "--format",
        "json",
        &format!("oci:{}:multi", src.display()),
        &format!("oci:{}:one", dst.display()),
    ]);
    assert_eq!(
        out["media_type"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    let info = skopeo_info(&format!("oci:{}:one", dst.display()));
    assert_eq!(info["Architecture"], "amd64");
    assert_eq!(info["Os"], "linux");
    assert_eq!(out["digest"], busybox_image("amd64").digest().to_string());
}

#[test]
fn platform_selection_picks_arm64_and_reports_missing_platforms() {
    let env = Env::new();
    let src = fixture_layout(&env);
    let dst = env.path("dst");
    env.ok(&[
        "copy",
        "-q",
        "--platform",
        "linux/arm64",
        &format!("oci:{}:multi", src.display()),
        &format!("oci:{}:arm", dst.display()),
    ]);
    assert_eq!(
        layout_digest(&dst, "arm"),
        busybox_image("arm64").digest().to_string()
    );
    let err = env.fails(&[
        "copy",
        "--platform",
        "linux/s390x",
        &format!("oci:{}:multi", src.display()),
        &format!("oci:{}:s390x", dst.display()),
    ]);
    assert!(
        err.contains("linux/s390x") && err.contains("linux/amd64") && err.contains("linux/arm64"),
        "{err}"
    );
    assert!(err.contains("hint:"), "{err}");
    assert!(!layout_tags(&dst).contains(&"s390x".to_string()));
}

#[test]
fn oci_archive_round_trip_and_skopeo_reads_it() {
    let env = Env::new();
    let src = fixture_layout(&env);
    let archive = env.path("img.tar");
    env.ok(&[
        "copy",
        "--all",
        &format!("oci:{}:multi", src.display()),
        &format!("oci-archive:{}:multi", archive.display()),
    ]);
    let want = layout_digest(&src, "multi");
    assert_eq!(
        common::sha256_hex(&skopeo_raw(&format!(
            "oci-archive:{}:multi",
            archive.display()
        ))),
        want
    );
    let back = env.path("back");
    env.ok(&[
        "copy",
        "--all",
        &format!("oci-archive:{}:multi", archive.display()),
        &format!("oci:{}:back", back.display()),
    ]);
    assert_eq!(layout_digest(&back, "back"), want);
    assert_layout_valid(&back);
}

#[test]
fn dir_round_trip_and_skopeo_reads_it() {
    let env = Env::new();
    let src = fixture_layout(&env);
    let dir = env.path("dirimg");
    env.ok(&[
        "copy",
        "--platform",
        "linux/amd64",
        &format!("oci:{}:multi", src.display()),
        &format!("dir:{}", dir.display()),
    ]);
    let want = busybox_image("amd64").digest().to_string();
    assert_eq!(
        common::sha256_hex(&skopeo_raw(&format!("dir:{}", dir.display()))),
        want
    );
    let back = env.path("back");
    env.ok(&[
        "copy",
        &format!("dir:{}", dir.display()),
        &format!("oci:{}:b", back.display()),
    ]);
    assert_eq!(layout_digest(&back, "b"), want);
}

#[test]
fn docker_archive_is_read_by_skopeo_and_podman_load_format() {
    let env = Env::new();
    let src = fixture_layout(&env);
    let archive = env.path("save.tar");
    env.ok(&[
        "copy",
        "--platform",
        "linux/amd64",
        &format!("oci:{}:multi", src.display()),
        &format!("docker-archive:{}:example.com/app:v1", archive.display()),
    ]);
    let info = skopeo_info(&format!("docker-archive:{}", archive.display()));
    assert_eq!(info["Architecture"], "amd64");
    // docker save's manifest.json: Config, RepoTags, Layers
    let listing = run(
        "tar",
        &["-xOf", archive.to_str().expect("utf-8"), "manifest.json"],
    );
    let manifest: serde_json::Value = serde_json::from_str(&listing).expect("manifest.json");
    assert_eq!(manifest[0]["RepoTags"][0], "example.com/app:v1");
    // strata reads it back: same config (the config blob is kept byte for byte).
    let back = env.path("back");
    env.ok(&[
        "copy",
        &format!("docker-archive:{}", archive.display()),
        &format!("oci:{}:b", back.display()),
    ]);
    let config_of = |layout: &Path, tag: &str| {
        env.json(&[
            "inspect",
            "--format",
            "json",
            &format!("oci:{}:{tag}", layout.display()),
        ])
    };
    let a = config_of(&back, "b");
    assert_eq!(a["platform"], "linux/amd64");
    let orig = env.ok(&[
        "inspect",
        "--config",
        &format!("oci:{}:multi", src.display()),
        "--platform",
        "linux/amd64",
    ]);
    let round = env.ok(&["inspect", "--config", &format!("oci:{}:b", back.display())]);
    assert_eq!(orig, round, "config bytes survive docker-archive");
}

#[test]
fn strata_reads_what_skopeo_writes() {
    let env = Env::new();
    let src = fixture_layout(&env);
    let want_config = env.ok(&[
        "inspect",
        "--config",
        "--platform",
        "linux/amd64",
        &format!("oci:{}:multi", src.display()),
    ]);
    for (i, dest) in [
        format!("oci-archive:{}:x", env.path("sk.tar").display()),
        format!("docker-archive:{}:x/y:z", env.path("sk-save.tar").display()),
        format!("dir:{}", env.path("sk-dir").display()),
        format!("oci:{}:x", env.path("sk-oci").display()),
    ]
    .iter()
    .enumerate()
    {
        run(
            "skopeo",
            &["copy", "-q", &format!("oci:{}:multi", src.display()), dest],
        );
        let got = env.ok(&["inspect", "--config", dest]);
        assert_eq!(got, want_config, "{dest}");
        let out = env.path(&format!("out{i}"));
        env.ok(&["copy", dest, &format!("oci:{}:t", out.display())]);
        assert_layout_valid(&out);
    }
}

#[test]
fn umoci_unpacks_a_layout_strata_wrote() {
    let env = Env::new();
    let src = fixture_layout(&env);
    let dst = env.path("dst");
    env.ok(&[
        "copy",
        &format!("oci:{}:multi", src.display()),
        &format!("oci:{}:latest", dst.display()),
    ]);
    let bundle = env.path("bundle");
    run(
        "umoci",
        &[
            "unpack",
            "--image",
            &format!("{}:latest", dst.display()),
            bundle.to_str().expect("utf-8"),
        ],
    );
    let unpacked = std::fs::read(bundle.join("rootfs/bin/busybox")).expect("busybox in rootfs");
    assert_eq!(
        unpacked,
        std::fs::read("/bin/busybox").expect("host busybox")
    );
    assert!(bundle.join("config.json").is_file());
}

#[test]
fn format_v2s2_converts_and_oci_converts_back() {
    let env = Env::new();
    let src = fixture_layout(&env);
    let v2 = env.path("v2");
    let report = env.json(&[
        "copy",
        "--all",
        "--format",
        "v2s2,json",
        &format!("oci:{}:multi", src.display()),
        &format!("oci:{}:v2", v2.display()),
    ]);
    assert_eq!(
        report["media_type"],
        "application/vnd.docker.distribution.manifest.list.v2+json"
    );
    // (skopeo 1.9 will not read Docker media types out of an OCI layout, so strata reads it.)
    let raw: serde_json::Value = serde_json::from_slice(
        &env.output(&["inspect", "--raw", &format!("oci:{}:v2", v2.display())])
            .stdout,
    )
    .expect("json");
    assert_eq!(
        raw["mediaType"],
        "application/vnd.docker.distribution.manifest.list.v2+json"
    );
    for m in raw["manifests"].as_array().expect("manifests") {
        assert_eq!(
            m["mediaType"],
            "application/vnd.docker.distribution.manifest.v2+json"
        );
    }
    let oci = env.path("oci");
    env.ok(&[
        "copy",
        "--all",
        "--format",
        "oci",
        &format!("oci:{}:v2", v2.display()),
        &format!("oci:{}:o", oci.display()),
    ]);
    assert_eq!(
        layout_digest(&oci, "o"),
        layout_digest(&src, "multi"),
        "OCI → v2s2 → OCI gives the original bytes"
    );
    assert_layout_valid(&oci);
}

#[test]
fn inspect_shows_platforms_layers_and_config() {
    let env = Env::new();
    let src = fixture_layout(&env);
    let name = format!("oci:{}:multi", src.display());
    let index = env.json(&["inspect", "--format", "json", &name]);
    let platforms: Vec<&str> = index["manifests"]
        .as_array()
        .expect("array")
        .iter()
        .map(|m| m["platform"].as_str().expect("platform"))
        .collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64/v8"]);
    let arm = env.json(&[
        "inspect",
        "--format",
        "json",
        "--platform",
        "linux/arm64",
        &name,
    ]);
    let image = busybox_image("arm64");
    assert_eq!(arm["digest"], image.digest().to_string());
    assert_eq!(arm["layers"].as_array().expect("layers").len(), 1);
    assert_eq!(arm["cmd"], serde_json::json!(["sh"]));
    let raw = env.output(&["inspect", "--raw", &name]).stdout;
    assert_eq!(raw, busybox_index().manifest);
    let text = env.ok(&["inspect", "--platform", "linux/arm64", &name]);
    assert!(
        text.contains("linux/arm64") && text.contains(&image.digest().to_string()),
        "{text}"
    );
}

#[test]
fn ls_lists_tags_and_platforms_and_gc_removes_unreferenced_blobs() {
    let env = Env::new();
    let src = fixture_layout(&env);
    let dst = env.path("dst");
    env.ok(&[
        "copy",
        "--all",
        &format!("oci:{}:multi", src.display()),
        &format!("oci:{}:multi", dst.display()),
    ]);
    env.ok(&[
        "copy",
        "--platform",
        "linux/arm64",
        &format!("oci:{}:multi", src.display()),
        &format!("oci:{}:arm", dst.display()),
    ]);
    let ls = env.json(&["ls", "--format", "json", dst.to_str().expect("utf-8")]);
    let tags: Vec<&str> = ls
        .as_array()
        .expect("array")
        .iter()
        .map(|e| e["tag"].as_str().expect("tag"))
        .collect();
    assert_eq!(tags.len(), 2, "{ls}");
    assert!(tags.contains(&"multi") && tags.contains(&"arm"));
    // Overwrite `multi` with the amd64 image alone: the index document becomes garbage.
    env.ok(&[
        "copy",
        "--platform",
        "linux/amd64",
        &format!("oci:{}:multi", src.display()),
        &format!("oci:{}:multi", dst.display()),
    ]);
    let index_blob = dst
        .join("blobs/sha256")
        .join(busybox_index().digest().encoded());
    assert!(index_blob.exists());
    let report = env.json(&["gc", "--format", "json", dst.to_str().expect("utf-8")]);
    assert_eq!(report["blobs_removed"], 1, "{report}");
    assert!(!index_blob.exists());
    assert_layout_valid(&dst);
}

#[test]
fn eight_concurrent_copies_into_one_layout_keep_all_tags() {
    let env = Env::new();
    let src = fixture_layout(&env);
    let dst = env.path("dst");
    let children: Vec<_> = (0..8)
        .map(|i| {
            env.strata()
                .args([
                    "copy",
                    "-q",
                    "--all",
                    &format!("oci:{}:multi", src.display()),
                    &format!("oci:{}:t{i}", dst.display()),
                ])
                .spawn()
                .expect("spawn")
        })
        .collect();
    for mut c in children {
        assert!(c.wait().expect("wait").success());
    }
    assert_eq!(
        layout_tags(&dst),
        (0..8).map(|i| format!("t{i}")).collect::<Vec<_>>()
    );
    assert_layout_valid(&dst);
}

#[test]
fn corrupt_source_blob_fails_and_leaves_no_tag_or_blob() {
    let env = Env::new();
    let src = fixture_layout(&env);
    let image = busybox_image("amd64");
    let layer = image.layers()[0].clone();
    let path = src.join("blobs/sha256").join(layer.digest.encoded());
    let mut bytes = std::fs::read(&path).expect("layer");
    let n = bytes.len();
    bytes[n / 2] ^= 0xff;
    std::fs::write(&path, &bytes).expect("corrupt");
    let dst = env.path("dst");
    let err = env.fails(&[
        "copy",
        &format!("oci:{}:multi", src.display()),
        &format!("oci:{}:bad", dst.display()),
    ]);
    assert!(
        err.contains("digest mismatch") && err.contains(&layer.digest.to_string()),
        "{err}"
    );
    assert!(
        layout_tags(&dst).is_empty(),
        "no tag may point at missing content"
    );
    assert!(
        !dst.join("blobs/sha256")
            .join(layer.digest.encoded())
            .exists()
    );
}

#[test]
fn m12_docker_archive_paths_outside_the_archive_are_refused() {
    let env = Env::new();
    let work = env.path("evil");
    std::fs::create_dir_all(&work).expect("mkdir");
    for (i, path) in ["../../../../etc/passwd", "/etc/passwd"].iter().enumerate() {
        let manifest =
            serde_json::json!([{"Config": path, "RepoTags": ["evil:1"], "Layers": [path]}]);
        std::fs::write(
            work.join("manifest.json"),
            serde_json::to_vec(&manifest).expect("json"),
        )
        .expect("write");
        let tar = env.path(&format!("evil{i}.tar"));
        run(
            "tar",
            &[
                "-C",
                work.to_str().expect("utf-8"),
                "-cf",
                tar.to_str().expect("utf-8"),
                "manifest.json",
            ],
        );
        let err = env.fails(&["inspect", &format!("docker-archive:{}", tar.display())]);
        assert!(
            err.contains(path),
            "the error names the bad path {path}: {err}"
        );
        assert!(
            !err.contains("root:x:0:0"),
            "host file content leaked: {err}"
        );
    }
}

#[test]
fn bad_names_are_usage_errors_with_the_name() {
    let env = Env::new();
    let err = env.fails(&["inspect", "docker://UPPER/Case"]);
    assert!(err.contains("UPPER/Case"), "{err}");
    let err = env.fails(&["copy", "oci:", "oci:/tmp/x"]);
    assert!(err.contains("missing path"), "{err}");
    let err = env.fails(&["inspect", "docker://127.0.0.1:1/r@sha256:../../x"]);
    assert!(err.contains("sha256:../../x"), "{err}");
    let usage = env.output(&["copy", "only-one-arg"]);
    assert_eq!(usage.status.code(), Some(2));
}

#[test]
fn podman_loads_and_runs_a_docker_archive_strata_wrote() {
    let env = Env::new();
    let src = fixture_layout(&env);
    let archive = env.path("save.tar");
    let name = format!("localhost/strata-test-load-{}:v1", std::process::id());
    env.ok(&[
        "copy",
        "--platform",
        "linux/amd64",
        &format!("oci:{}:multi", src.display()),
        &format!("docker-archive:{}:{name}", archive.display()),
    ]);
    let loaded = run(
        "podman",
        &["load", "-q", "-i", archive.to_str().expect("utf-8")],
    );
    assert!(loaded.contains(&name), "{loaded}");
    let out = run(
        "podman",
        &[
            "run",
            "--rm",
            "--network=none",
            &name,
            "/bin/busybox",
            "echo",
            "hello-from-strata",
        ],
    );
    let _ = std::process::Command::new("podman")
        .args(["rmi", "-f", &name])
        .output();
    assert_eq!(out.trim(), "hello-from-strata");
}

#[test]
fn m4_a_changed_manifest_in_a_layout_is_refused() {
    let env = Env::new();
    let src = fixture_layout(&env);
    let arm = busybox_image("arm64").digest();
    let path = src.join("blobs/sha256").join(arm.encoded());
    let mut bytes = std::fs::read(&path).expect("manifest");
    // Same length, valid JSON: only the digest tells.
    let at = bytes.iter().position(|b| *b == b'2').expect("a digit");
    bytes[at] = b'3';
    std::fs::write(&path, &bytes).expect("write");
    let err = env.fails(&[
        "inspect",
        "--platform",
        "linux/arm64",
        &format!("oci:{}:multi", src.display()),
    ]);
    assert!(
        err.contains("digest mismatch") && err.contains(&arm.to_string()),
        "{err}"
    );
}
