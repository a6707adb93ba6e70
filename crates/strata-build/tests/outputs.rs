//! Outputs: what outside tools read back (skopeo, podman), `--iidfile`, pushing to other
//! transports, compression choices, squash.

mod common;

use common::*;
use strata_build::{Compression, PushOptions, Squash, push_result};
use strata_spec::MediaType;

#[tokio::test]
async fn podman_runs_the_result_and_skopeo_reads_it() {
    let bases = bases();
    let r = MapResolver::with_bases(&bases);
    let c = Ctx::new();
    c.file("hello.sh", b"#!/bin/sh\necho hello from strata\n");
    std::fs::set_permissions(
        c.ctx().join("hello.sh"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let cf = "FROM test/busybox:amd64\nCOPY hello.sh /usr/local/bin/hello\nENV GREETING=hi\nCMD [\"/usr/local/bin/hello\"]\n";
    let mut o = c.options(cf);
    o.tags = vec!["app".into()];
    let iid = c.dir.path().join("iid");
    o.iidfile = Some(iid.clone());
    let (result, _) = run_build(&o, &r).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(&iid).unwrap(),
        result.digest.to_string()
    );
    let name = format!("oci:{}:app", result.layout.display());
    have("skopeo");
    let info = skopeo_inspect(&name);
    assert_eq!(info["Digest"], result.digest.to_string());
    assert_eq!(info["Architecture"], "amd64");
    assert_eq!(info["Layers"].as_array().unwrap().len(), 2);
    assert!(
        info["Env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "GREETING=hi")
    );
    have("podman");
    let out = podman_run(&result.layout, "app", &[], &[]);
    assert_eq!(out, "hello from strata\n");
    let out = podman_run(
        &result.layout,
        "app",
        &[],
        &["/bin/sh", "-c", "echo $GREETING; cat /etc/passwd | wc -l"],
    );
    assert_eq!(out.split_whitespace().collect::<Vec<_>>(), ["hi", "3"]);
    have("umoci");
    let bundle = c.dir.path().join("bundle");
    let image = format!("{}:app", result.layout.display());
    run(
        "umoci",
        &["unpack", "--image", &image, bundle.to_str().unwrap()],
    );
    let got = std::fs::read(bundle.join("rootfs/usr/local/bin/hello")).unwrap();
    assert_eq!(got, b"#!/bin/sh\necho hello from strata\n");
}

#[tokio::test]
async fn arm64_result_runs_under_qemu() {
    have("podman");
    assert!(arm64_busybox().is_file());
    let bases = bases();
    let r = MapResolver::with_bases(&bases);
    let c = Ctx::new();
    c.file("m", b"multi\n");
    let mut o = c.options("FROM test/multi\nCOPY m /m\n");
    o.platforms = vec![
        "linux/amd64".parse().unwrap(),
        "linux/arm64".parse().unwrap(),
    ];
    o.tags = vec!["multi".into()];
    let (result, _) = run_build(&o, &r).await.unwrap();
    for (arch, want) in [("amd64", "x86_64"), ("arm64", "aarch64")] {
        let out = podman_run(
            &result.layout,
            "multi",
            &["--arch", arch],
            &["/bin/sh", "-c", "uname -m; cat /m"],
        );
        assert_eq!(out, format!("{want}\nmulti\n"));
    }
}

#[tokio::test]
async fn push_to_oci_archive_and_docker_archive() {
    let bases = bases();
    let r = MapResolver::with_bases(&bases);
    let c = Ctx::new();
    c.file("f", b"pushed\n");
    let (result, _) = run_build(&c.options("FROM test/busybox:amd64\nCOPY f /f\n"), &r)
        .await
        .unwrap();
    let oci_archive = c.dir.path().join("image.oci.tar");
    let sink = strata_store::OciArchiveSink::create(&oci_archive).unwrap();
    let report = push_result(
        &result,
        &sink,
        &PushOptions {
            tag: Some("v1".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(report.digest, result.digest, "digests kept");
    let docker_archive = c.dir.path().join("image.docker.tar");
    let reference: strata_spec::Reference = "example.com/app:v1".parse().unwrap();
    let sink = strata_store::DockerArchiveSink::create(&docker_archive, Some(&reference)).unwrap();
    push_result(
        &result,
        &sink,
        &PushOptions {
            format: Some(strata_copy::ManifestFormat::V2s2),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    have("skopeo");
    let a = skopeo_inspect(&format!("oci-archive:{}:v1", oci_archive.display()));
    assert_eq!(a["Digest"], result.digest.to_string());
    let d = skopeo_inspect(&format!("docker-archive:{}", docker_archive.display()));
    assert_eq!(d["Layers"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn zstd_uncompressed_and_gzip_levels() {
    let bases = bases();
    let r = MapResolver::with_bases(&bases);
    let c = Ctx::new();
    c.file("data", &vec![b'z'; 200_000]);
    for (compression, media_type) in [
        (Compression::Zstd { level: 3 }, MediaType::OCI_LAYER_ZSTD),
        (Compression::None, MediaType::OCI_LAYER),
        (Compression::Gzip { level: 9 }, MediaType::OCI_LAYER_GZIP),
    ] {
        let mut o = c.options("FROM scratch\nCOPY data /data\n");
        o.compression = compression;
        let (result, _) = run_build(&o, &r).await.unwrap();
        let m = manifest_of(&result.layout, &result.images[0].manifest);
        assert_eq!(m.layers[0].media_type.as_str(), media_type);
        assert_eq!(
            find(&layer_entries(&result, 0, 0), "data").data.len(),
            200_000
        );
    }
}

#[tokio::test]
async fn squash_new_keeps_base_layers_and_all_flattens_whiteouts() {
    let bases = bases();
    let r = MapResolver::with_bases(&bases);
    let c = Ctx::new();
    c.file("a", b"a\n");
    c.file("b", b"b\n");
    let cf = "FROM test/two-layers\nCOPY a /x/a\nCOPY b /x/b\nCOPY b /x/a\n";
    let mut o = c.options(cf);
    o.squash = Squash::New;
    let (new, _) = run_build(&o, &r).await.unwrap();
    let m = manifest_of(&new.layout, &new.images[0].manifest);
    assert_eq!(m.layers.len(), 3, "two base layers + one squashed");
    let squashed = layer_entries(&new, 0, -1);
    assert_eq!(paths(&squashed), ["x/", "x/a", "x/b"]);
    assert_eq!(find(&squashed, "x/a").data, b"b\n", "later layers win");
    assert_eq!(
        new.images[0].layers[0].origin,
        strata_build::LayerOrigin::Base
    );

    o.squash = Squash::All;
    o.tags = vec!["all".into()];
    let (all, _) = run_build(&o, &r).await.unwrap();
    let m = manifest_of(&all.layout, &all.images[0].manifest);
    assert_eq!(m.layers.len(), 1);
    let flat = layer_entries(&all, 0, 0);
    let p = paths(&flat);
    assert!(p.contains(&"etc/added".to_string()) && p.contains(&"bin/busybox".to_string()));
    assert!(
        !p.contains(&"etc/group".to_string()),
        "the whiteout was applied"
    );
    assert!(p.iter().all(|p| !p.contains(".wh.")), "no whiteouts remain");
    assert_eq!(find(&flat, "x/a").data, b"b\n");
    have("podman");
    let out = podman_run(
        &all.layout,
        "all",
        &[],
        &[
            "/bin/sh",
            "-c",
            "cat /x/a /etc/added; test -e /etc/group || echo nogroup",
        ],
    );
    assert_eq!(out, "b\nsecond layer\nnogroup\n");
}

#[tokio::test]
async fn annotations_events_and_json_result() {
    let bases = bases();
    let r = MapResolver::with_bases(&bases);
    let c = Ctx::new();
    c.file("big", &vec![7u8; 20 * 1024 * 1024]);
    let mut o = c.options("FROM test/multi\nCOPY big /big\n");
    o.platforms = vec![
        "linux/amd64".parse().unwrap(),
        "linux/arm64".parse().unwrap(),
    ];
    o.annotations = map(&[
        ("org.opencontainers.image.source", "https://example.com/src"),
        ("index:org.example.only-index", "i"),
        ("manifest:org.example.only-manifest", "m"),
    ]);
    let (result, events) = run_build(&o, &r).await.unwrap();
    let index: serde_json::Value =
        serde_json::from_slice(&read_blob(&result.layout, &result.digest)).unwrap();
    let ia = index["annotations"].as_object().unwrap();
    assert_eq!(
        ia["org.opencontainers.image.source"],
        "https://example.com/src"
    );
    assert_eq!(ia["org.example.only-index"], "i");
    assert!(!ia.contains_key("org.example.only-manifest"));
    for img in &result.images {
        let m = manifest_of(&result.layout, &img.manifest);
        assert_eq!(
            m.annotations["org.opencontainers.image.source"],
            "https://example.com/src"
        );
        assert_eq!(m.annotations["org.example.only-manifest"], "m");
        assert!(!m.annotations.contains_key("org.example.only-index"));
        assert_eq!(
            m.annotations["org.opencontainers.image.base.name"],
            "test/multi"
        );
        assert!(m.annotations["org.opencontainers.image.base.digest"].starts_with("sha256:"));
    }
    // Events: steps per platform, bytes while a big layer is written, images written.
    let all = events.all();
    let started = all
        .iter()
        .filter(|e| matches!(e, strata_build::BuildEvent::StepStarted { .. }))
        .count();
    assert_eq!(started, 2);
    assert!(all.iter().any(|e| matches!(e, strata_build::BuildEvent::LayerBytes { bytes, .. } if *bytes >= 8 * 1024 * 1024)));
    let written = all
        .iter()
        .filter(|e| matches!(e, strata_build::BuildEvent::ImageWritten { .. }))
        .count();
    assert_eq!(written, 2);
    let v = serde_json::to_value(&all[0]).unwrap();
    assert!(v["event"].is_string(), "{v}");
    // The result serialises for `--format json`.
    let j = serde_json::to_value(&result).unwrap();
    assert_eq!(j["digest"], result.digest.to_string());
    assert_eq!(j["images"].as_array().unwrap().len(), 2);
    let layer = &j["images"][0]["layers"][1];
    assert!(layer["size"].as_u64().unwrap() > 0 && layer["diff_id"].is_string());
    assert!(matches!(
        layer["origin"].as_str(),
        Some("built" | "shared" | "cached")
    ));
}
