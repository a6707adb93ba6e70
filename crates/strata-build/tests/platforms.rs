//! Multi-platform builds: one index from a multi-arch base, shared layers, Windows layers
//! entry by entry, platform errors, Docker manifest lists, `--platform=$BUILDPLATFORM`.

mod common;

use common::*;
use strata_build::{BuildError, ContainerfileSource, ImageFormat, LayerOrigin, PlatformGroup};
use strata_spec::{Manifest, MediaType, Platform};

fn plats(list: &[&str]) -> Vec<Platform> {
    list.iter().map(|p| p.parse().unwrap()).collect()
}

#[tokio::test]
async fn multi_platform_index_with_windows_and_shared_layers() {
    let bases = bases();
    let r = MapResolver::with_bases(&bases);
    let c = Ctx::new();
    c.file("app/f", b"payload\n");
    let cf = "FROM test/multi\nARG TARGETARCH\nWORKDIR C:\\\\work\nCOPY app C:\\\\app\\\\\nLABEL arch=$TARGETARCH\n";
    let mut o = c.options(cf);
    o.platforms = plats(&[
        "linux/amd64",
        "linux/arm64",
        "windows/amd64:10.0.17763.1757",
    ]);
    o.tags = vec!["multi".into()];
    o.source_date_epoch = Some(1_700_000_000);
    let (result, events) = run_build(&o, &r).await.unwrap();
    assert_eq!(result.media_type.as_str(), MediaType::OCI_INDEX);
    let Manifest::Index(index) =
        Manifest::parse(&read_blob(&result.layout, &result.digest), None).unwrap()
    else {
        panic!("not an index")
    };
    let ps: Vec<String> = index
        .manifests
        .iter()
        .map(|d| d.platform.as_ref().unwrap().to_string())
        .collect();
    assert_eq!(
        ps,
        [
            "linux/amd64",
            "linux/arm64/v8",
            "windows/amd64:10.0.17763.1757"
        ]
    );
    // Linux: the same COPY on two architectures is one blob, produced once.
    let (amd, arm, win) = (&result.images[0], &result.images[1], &result.images[2]);
    let amd_copy = amd.layers.last().unwrap();
    let arm_copy = arm.layers.last().unwrap();
    assert_eq!(amd_copy.digest, arm_copy.digest);
    let origins = [amd_copy.origin, arm_copy.origin];
    assert!(origins.contains(&LayerOrigin::Built), "{origins:?}");
    assert!(
        origins
            .iter()
            .any(|o| matches!(o, LayerOrigin::Shared | LayerOrigin::Cached)),
        "{origins:?}"
    );
    let built_events = events
        .all()
        .iter()
        .filter(|e| matches!(e, strata_build::BuildEvent::StepDone { layer: Some(_), .. }))
        .count();
    assert_eq!(built_events, 3);
    let linux = layer_entries(&result, 0, -1);
    assert_eq!(
        paths(&linux),
        ["C:\\work/", "C:\\work/C:\\app\\/", "C:\\work/C:\\app\\/f"],
        "backslashes are names on Linux: `C:\\work` is relative to /"
    );
    // Windows: Files/ + Hives/ layout, MSWINDOWS PAX records, os.version from the base.
    let w = layer_entries(&result, 2, -1);
    assert_eq!(paths(&w), ["Hives", "Files", "Files/app", "Files/app/f"]);
    assert!(w.iter().all(|e| e.kind != 'd' || !e.path.ends_with('/')));
    for e in &w {
        let keys: Vec<&str> = e.pax.iter().map(|(k, _)| k.as_str()).collect();
        // Hives/ and Files/ carry only the attribute (BuildKit/ggcr); real entries also the
        // security descriptor.
        if e.path.starts_with("Files/") {
            assert!(keys.contains(&"MSWINDOWS.rawsd"), "{}: {keys:?}", e.path);
        }
        let attr = &e
            .pax
            .iter()
            .find(|(k, _)| k == "MSWINDOWS.fileattr")
            .unwrap()
            .1;
        assert_eq!(attr, if e.kind == 'd' { "16" } else { "32" }, "{}", e.path);
    }
    assert_eq!(find(&w, "Files/app/f").data, b"payload\n");
    let wm = manifest_of(&result.layout, &win.manifest);
    let wc = config_of(&result.layout, &wm);
    assert_eq!(
        (wc.os.as_str(), wc.os_version.as_deref()),
        ("windows", Some("10.0.17763.1757"))
    );
    let wrt = wc.config.unwrap();
    assert_eq!(wrt.labels.unwrap()["arch"], "amd64");
    assert_eq!(
        wrt.working_dir.as_deref(),
        Some("C:\\work"),
        "Windows paths in Windows configs"
    );
    let ac = config_of(&result.layout, &manifest_of(&result.layout, &arm.manifest));
    assert_eq!(
        (ac.architecture.as_str(), ac.variant.as_deref()),
        ("arm64", Some("v8"))
    );
    assert_eq!(ac.config.unwrap().labels.unwrap()["arch"], "arm64");
    have("skopeo");
    let raw = run(
        "skopeo",
        &[
            "inspect",
            "--raw",
            &format!("oci:{}:multi", result.layout.display()),
        ],
    );
    assert!(raw.contains("10.0.17763.1757"));
    for (p, arch) in [("linux/arm64", "arm64"), ("linux/amd64", "amd64")] {
        let (os, a) = p.split_once('/').unwrap();
        let info = serde_json::from_str::<serde_json::Value>(&run(
            "skopeo",
            &[
                "--override-os",
                os,
                "--override-arch",
                a,
                "inspect",
                &format!("oci:{}:multi", result.layout.display()),
            ],
        ))
        .unwrap();
        assert_eq!(info["Architecture"], arch);
    }
}

#[tokio::test]
async fn missing_platform_is_an_error_never_a_mislabelled_image() {
    let bases = bases();
    let r = MapResolver::with_bases(&bases);
    let c = Ctx::new();
    let mut o = c.options("FROM test/amd64-only\nLABEL a=b\n");
    o.platforms = plats(&["linux/amd64", "linux/arm64"]);
    let err = run_build(&o, &r).await.unwrap_err();
    assert!(matches!(err, BuildError::PlatformNotFound { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("test/amd64-only")
            && msg.contains("linux/arm64")
            && msg.contains("available: linux/amd64"),
        "{msg}"
    );
    // A single-platform base is checked against its config too.
    let mut o = c.options("FROM test/busybox:amd64\nLABEL a=b\n");
    o.platforms = plats(&["linux/arm64"]);
    let err = run_build(&o, &r).await.unwrap_err();
    assert!(err.to_string().contains("available: linux/amd64"), "{err}");
    // Windows versions must match.
    let mut o = c.options("FROM test/multi\nLABEL a=b\n");
    o.platforms = plats(&["windows/amd64:10.0.20348"]);
    let err = run_build(&o, &r).await.unwrap_err();
    assert!(
        err.to_string().contains("windows/amd64:10.0.17763.1757"),
        "{err}"
    );
    // Without os.version the only Windows entry is used.
    o.platforms = plats(&["windows/amd64"]);
    run_build(&o, &r).await.unwrap();
    // scratch takes the platform as given.
    let mut o = c.options("FROM scratch\nLABEL a=b\n");
    o.platforms = plats(&["linux/s390x"]);
    let (s, _) = run_build(&o, &r).await.unwrap();
    assert_eq!(s.images[0].platform.to_string(), "linux/s390x");
}

#[tokio::test]
async fn run_on_a_windows_target_is_a_clear_error() {
    let bases = bases();
    let r = MapResolver::with_bases(&bases);
    let c = Ctx::new();
    let mut o = c.options("FROM test/multi\nRUN dir\n");
    o.platforms = plats(&["windows/amd64"]);
    let err = run_build(&o, &r).await.unwrap_err();
    assert!(matches!(err, BuildError::RunOnWindows { .. }), "{err}");
    assert!(err.to_string().contains("Containerfile:2"), "{err}");
}

#[tokio::test]
async fn docker_manifest_list_output() {
    let bases = bases();
    let r = MapResolver::with_bases(&bases);
    let c = Ctx::new();
    c.file("f", b"x");
    let mut o = c.options("FROM test/multi\nCOPY f /f\n");
    o.platforms = plats(&["linux/amd64", "linux/arm64"]);
    o.format = ImageFormat::V2s2;
    let (result, _) = run_build(&o, &r).await.unwrap();
    assert_eq!(result.media_type.as_str(), MediaType::DOCKER_MANIFEST_LIST);
    for img in &result.images {
        let m = manifest_of(&result.layout, &img.manifest);
        assert_eq!(m.media_type().as_str(), MediaType::DOCKER_MANIFEST);
        assert_eq!(m.config.media_type.as_str(), MediaType::DOCKER_CONFIG);
        assert!(
            m.layers
                .iter()
                .all(|l| l.media_type.as_str() == MediaType::DOCKER_LAYER_GZIP)
        );
    }
    o.compression = strata_build::Compression::Zstd { level: 3 };
    let err = run_build(&o, &r).await.unwrap_err();
    assert!(matches!(err, BuildError::InvalidOption { .. }), "{err}");
}

#[tokio::test]
async fn build_platform_stages_feed_target_platform_images() {
    let bases = bases();
    let r = MapResolver::with_bases(&bases);
    let c = Ctx::new();
    let cf = "FROM --platform=$BUILDPLATFORM test/multi AS tools\n\
              ARG TARGETARCH\n\
              COPY <<EOF /out/for\n\
              built for $TARGETARCH\n\
              EOF\n\
              FROM test/multi\n\
              COPY --from=tools /out/for /for\n";
    let mut o = c.options(cf);
    o.platforms = plats(&["linux/arm64"]);
    let (result, _) = run_build(&o, &r).await.unwrap();
    assert_eq!(result.images[0].platform.architecture, "arm64");
    assert_eq!(
        find(&layer_entries(&result, 0, -1), "for").data,
        b"built for arm64\n"
    );
}

/// A Linux + Windows build shares the compression of large files between the two layers
/// (gzip segments): the layers must be byte for byte what each platform gets when built on
/// its own, decode with gzip, and hold the files.
#[tokio::test]
async fn linux_and_windows_layers_sharing_segments_equal_separate_builds() {
    let c = Ctx::new();
    // Large files (segments, some over several 1 MiB blocks), small ones, a file whose
    // size is exactly one block, and two copies of the same content.
    let big: Vec<u8> = (0..3_500_000u32)
        .map(|i| (i % 251) as u8 ^ (i >> 13) as u8)
        .collect();
    c.file("data/big.bin", &big);
    c.file("data/copy-of-big.bin", &big);
    c.file("data/block.bin", &big[..1 << 20]);
    c.file("data/mid.txt", &b"line of text\n".repeat(3000));
    for i in 0..50 {
        c.file(
            &format!("data/small/{i}.txt"),
            format!("small {i}\n").as_bytes(),
        );
    }
    let cf = "FROM scratch\nCOPY data /data\n";
    let build = |platforms: &[&str], out: &str| {
        let mut o = c.options(cf);
        o.platforms = plats(platforms);
        o.output = strata_build::Output::Layout(c.dir.path().join(out));
        o.source_date_epoch = Some(1_700_000_000);
        o
    };
    let r = MapResolver::default();
    let (both, _) = run_build(
        &build(&["linux/amd64", "windows/amd64:10.0.17763.1757"], "both"),
        &r,
    )
    .await
    .unwrap();
    let (linux, _) = run_build(&build(&["linux/amd64"], "linux"), &r)
        .await
        .unwrap();
    let (windows, _) = run_build(&build(&["windows/amd64:10.0.17763.1757"], "windows"), &r)
        .await
        .unwrap();
    let layer = |res: &strata_build::BuildResult, i: usize| {
        res.images[i].layers.last().unwrap().digest.clone()
    };
    assert_eq!(
        layer(&both, 0),
        layer(&linux, 0),
        "linux layer differs when built with windows"
    );
    assert_eq!(
        layer(&both, 1),
        layer(&windows, 0),
        "windows layer differs when built with linux"
    );
    assert_ne!(layer(&both, 0), layer(&both, 1));
    validate_layout(&both.layout);
    // Both layers decode (gzip -t would refuse a broken stream) and hold the data.
    for (i, prefix) in [(0, "data"), (1, "Files/data")] {
        let entries = layer_entries(&both, i, -1);
        let f = find(&entries, &format!("{prefix}/big.bin"));
        assert_eq!(f.data, big, "{prefix}/big.bin");
        let f = find(&entries, &format!("{prefix}/block.bin"));
        assert_eq!(f.data, &big[..1 << 20]);
        let d = both.images[i].layers.last().unwrap();
        let blob = read_blob(&both.layout, &d.digest);
        let out = std::process::Command::new("gzip")
            .args(["-t"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut ch| {
                use std::io::Write;
                ch.stdin.take().unwrap().write_all(&blob)?;
                ch.wait()
            })
            .unwrap();
        assert!(out.success(), "gzip -t refuses layer {i}");
    }
}

/// The multi-OS recipe as platform groups: Linux from one Containerfile, two Windows releases
/// from another, each on its own base through a build arg, one index. The two files sit in one
/// context with their own ignore files, and their COPY is on the same line: each gets its own
/// files. A rebuild is all cache hits; a base lacking its platform is the usual error.
#[tokio::test]
async fn groups_build_each_platform_from_its_own_file_args_and_ignore_file() {
    let bases = bases();
    let mut r = MapResolver::with_bases(&bases);
    let ltsc2022 = write_image(
        &bases.layout,
        &"windows/amd64:10.0.20348.2113".parse().unwrap(),
        &[windows_layer(&[("Windows/win.ini", b"[2022]\r\n")])],
        serde_json::json!({"Cmd": ["cmd"]}),
        vec![serde_json::json!({"created_by": "base"})],
    );
    tag_image(&bases.layout, &ltsc2022, "ltsc2022");
    for (name, tag) in [
        ("test/nano:1809", "multi"),
        ("test/nano:ltsc2022", "ltsc2022"),
    ] {
        r.names.insert(name.into(), (bases.path(), tag.to_string()));
    }
    let c = Ctx::new();
    c.file("app/a.txt", b"a\n");
    c.file("app/b.txt", b"b\n");
    let linux_file = c.file("Dockerfile", b"# linux\nFROM test/multi\nCOPY app /app/\n");
    let windows_file = c.file(
        "Dockerfile.windows",
        b"ARG WINBASE\nFROM test/nano:${WINBASE}\nCOPY app /app/\n",
    );
    c.file("Dockerfile.windows.dockerignore", b"app/b.txt\n");
    let group = |platform: &str, file: &std::path::Path, winbase: Option<&str>| PlatformGroup {
        name: None,
        platforms: plats(&[platform]),
        containerfile: ContainerfileSource::Path(file.to_path_buf()),
        context: c.ctx(),
        build_args: winbase.map(|w| map(&[("WINBASE", w)])).unwrap_or_default(),
        target: None,
    };
    let mut o = c.options("");
    o.platforms = Vec::new();
    o.source_date_epoch = Some(1_700_000_000);
    o.groups = vec![
        group("linux/amd64", &linux_file, None),
        group("windows/amd64:10.0.17763", &windows_file, Some("1809")),
        group("windows/amd64:10.0.20348", &windows_file, Some("ltsc2022")),
    ];
    let (result, _) = run_build(&o, &r).await.unwrap();
    assert_eq!(result.media_type.as_str(), MediaType::OCI_INDEX);
    let found: Vec<(String, String)> = result
        .images
        .iter()
        .map(|i| (i.platform.to_string(), i.containerfile.clone()))
        .collect();
    let linux_name = linux_file.display().to_string();
    let windows_name = windows_file.display().to_string();
    assert_eq!(
        found,
        [
            ("linux/amd64".to_string(), linux_name),
            (
                "windows/amd64:10.0.17763.1757".to_string(),
                windows_name.clone()
            ),
            ("windows/amd64:10.0.20348.2113".to_string(), windows_name),
        ]
    );
    for (i, version) in [(1, "10.0.17763.1757"), (2, "10.0.20348.2113")] {
        let m = manifest_of(&result.layout, &result.images[i].manifest);
        let config = config_of(&result.layout, &m);
        assert_eq!(config.os_version.as_deref(), Some(version));
        let top = layer_entries(&result, i, -1);
        assert_eq!(
            paths(&top),
            ["Hives", "Files", "Files/app", "Files/app/a.txt"],
            "Dockerfile.windows.dockerignore leaves b.txt out"
        );
    }
    let linux = layer_entries(&result, 0, -1);
    assert!(
        paths(&linux).contains(&"app/b.txt".to_string()),
        "{:?}",
        paths(&linux)
    );
    // One COPY result for both releases; each keeps its own base layer.
    let windows: Vec<&Vec<strata_build::BuiltLayer>> =
        result.images[1..].iter().map(|i| &i.layers).collect();
    assert_eq!(windows[0][1].digest, windows[1][1].digest);
    assert_ne!(windows[0][0].digest, windows[1][0].digest);

    let (again, events) = run_build(&o, &r).await.unwrap();
    assert_eq!(again.digest, result.digest);
    assert_eq!(events.step_counts(), (0, 3));

    // The 1809 platform on the ltsc2022 base: the base lacks it, the usual error.
    o.groups[1].build_args = map(&[("WINBASE", "ltsc2022")]);
    let err = run_build(&o, &r).await.unwrap_err().to_string();
    assert!(
        err.contains("test/nano:ltsc2022")
            && err.contains("windows/amd64:10.0.17763")
            && err.contains("10.0.20348.2113"),
        "{err}"
    );

    // A platform in two groups, and platforms given besides groups, are refused.
    o.groups[2]
        .platforms
        .push("windows/amd64:10.0.17763".parse().unwrap());
    let err = run_build(&o, &r).await.unwrap_err();
    assert!(
        matches!(err, BuildError::PlatformInTwoGroups { .. }),
        "{err}"
    );
    let err = err.to_string();
    assert!(
        err.contains("windows/amd64:10.0.17763")
            && err.contains("group 2")
            && err.contains("group 3"),
        "{err}"
    );
    o.groups.pop();
    o.platforms = plats(&["linux/arm64"]);
    let err = run_build(&o, &r).await.unwrap_err();
    assert!(matches!(err, BuildError::InvalidOption { .. }), "{err}");
}
