//! `validate`: good images built with strata-archive's TarBuilder/LayerWriter into an OCI
//! layout (strata-store), then one test per corruption kind, each checking the problem
//! kind and the digest at fault.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;

use async_trait::async_trait;
use serde_json::{Value, json};
use strata_archive::{Compression, EntryMeta, LayerInfo, LayerWriter, TarBuilder, TarOptions};
use strata_image::{
    BlobReader, ImageError, ImageSource, ProblemKind, RawManifest, ValidateOptions,
    ValidationReport, validate, validate_strict,
};
use strata_spec::{Descriptor, DiffId, Digest, MediaType};
use strata_store::{LayoutSource, OciLayout};

/// A layer with these files (written with strata's own writer).
fn layer(files: &[(&str, &[u8])], compression: Compression) -> (Vec<u8>, LayerInfo) {
    let mut t = TarBuilder::new(
        LayerWriter::new(Vec::new(), compression).unwrap(),
        TarOptions::default(),
    );
    for (name, data) in files {
        t.append_file(name, &EntryMeta::with_mode(0o644), data.len() as u64, *data)
            .unwrap();
    }
    let (info, blob) = t.finish().unwrap().finish().unwrap();
    (blob, info)
}

struct Fixture {
    _dir: tempfile::TempDir,
    layout: OciLayout,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let layout = OciLayout::create_or_open(&dir.path().join("layout")).unwrap();
        Fixture { _dir: dir, layout }
    }

    fn blob(&self, media_type: &str, bytes: &[u8]) -> Descriptor {
        self.layout.write_blob_bytes(media_type, bytes).unwrap()
    }

    /// An image; `edit_config` may change the config JSON, `edit_manifest` the manifest.
    fn image(
        &self,
        layers: &[(Vec<u8>, LayerInfo)],
        arch: &str,
        edit_config: impl FnOnce(&mut Value),
        edit_manifest: impl FnOnce(&mut Value),
    ) -> Descriptor {
        let diff_ids: Vec<String> = layers.iter().map(|(_, i)| i.diff_id.to_string()).collect();
        let mut config = json!({
            "architecture": arch,
            "os": "linux",
            "config": {"Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        });
        edit_config(&mut config);
        let config_bytes = serde_json::to_vec(&config).unwrap();
        let config_desc = self.blob(MediaType::OCI_CONFIG, &config_bytes);
        let layer_descs: Vec<Value> = layers
            .iter()
            .map(|(blob, info)| {
                let d = self.blob(info.media_type.as_str(), blob);
                serde_json::to_value(&d).unwrap()
            })
            .collect();
        let mut manifest = json!({
            "schemaVersion": 2,
            "mediaType": MediaType::OCI_MANIFEST,
            "config": config_desc,
            "layers": layer_descs,
        });
        edit_manifest(&mut manifest);
        let bytes = serde_json::to_vec(&manifest).unwrap();
        let mt = manifest["mediaType"]
            .as_str()
            .unwrap_or(MediaType::OCI_MANIFEST)
            .to_string();
        self.blob(&mt, &bytes)
    }

    fn index(&self, children: &[(Descriptor, Option<Value>)], media_type: &str) -> Descriptor {
        let manifests: Vec<Value> = children
            .iter()
            .map(|(d, platform)| {
                let mut v = serde_json::to_value(d).unwrap();
                if let Some(p) = platform {
                    v["platform"] = p.clone();
                }
                v
            })
            .collect();
        let bytes = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": media_type,
            "manifests": manifests,
        }))
        .unwrap();
        self.blob(media_type, &bytes)
    }

    fn tag(&self, d: &Descriptor) {
        self.layout.set_tag(Some("t"), d).unwrap();
    }

    /// Replace a blob's bytes in place (the layout verified them when written).
    fn corrupt(&self, digest: &Digest, f: impl FnOnce(&mut Vec<u8>)) {
        let path = self.layout.blob_path(digest);
        let mut bytes = fs::read(&path).unwrap();
        f(&mut bytes);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        fs::write(&path, bytes).unwrap();
    }

    async fn check(&self, options: &ValidateOptions) -> ValidationReport {
        let source = LayoutSource::new(self.layout.clone_handle(), Some("t"), "test".into());
        validate(&source, options).await.unwrap()
    }
}

trait CloneHandle {
    fn clone_handle(&self) -> OciLayout;
}
impl CloneHandle for OciLayout {
    fn clone_handle(&self) -> OciLayout {
        OciLayout::open(self.root()).unwrap()
    }
}

fn three_layers() -> Vec<(Vec<u8>, LayerInfo)> {
    vec![
        layer(
            &[("etc/os-release", b"ID=test\n"), ("bin/sh", b"#!")],
            Compression::Gzip { level: 6 },
        ),
        layer(
            &[("app/data", &vec![7u8; 300_000])],
            Compression::Zstd { level: 3 },
        ),
        layer(&[("app/plain", b"uncompressed")], Compression::None),
    ]
}

fn kinds(report: &ValidationReport, digest: &Digest) -> Vec<ProblemKind> {
    report
        .problems_for(digest)
        .into_iter()
        .map(|p| p.kind.clone())
        .collect()
}

#[tokio::test]
async fn good_image_and_index_are_valid() {
    let f = Fixture::new();
    let layers = three_layers();
    let amd = f.image(&layers, "amd64", |_| {}, |_| {});
    f.tag(&amd);
    let report = f.check(&ValidateOptions::default()).await;
    assert!(report.is_valid(), "{report}");
    assert_eq!((report.manifests, report.blobs), (1, 4));
    // An index of two platforms, and a nested index (shared blobs read once).
    let arm = f.image(
        &layers[..2],
        "arm64",
        |c| c["variant"] = json!("v8"),
        |_| {},
    );
    let index = f.index(
        &[
            (
                amd.clone(),
                Some(json!({"os": "linux", "architecture": "amd64"})),
            ),
            (
                arm.clone(),
                Some(json!({"os": "linux", "architecture": "arm64", "variant": "v8"})),
            ),
        ],
        MediaType::OCI_INDEX,
    );
    let outer = f.index(&[(index, None)], MediaType::OCI_INDEX);
    f.tag(&outer);
    let report = f.check(&ValidateOptions::default()).await;
    assert!(report.is_valid(), "{report}");
    assert_eq!(report.manifests, 4);
    assert_eq!(report.blobs, 5, "configs 2 + distinct layers 3");
    validate_strict(
        &LayoutSource::new(f.layout.clone_handle(), Some("t"), "t".into()),
        &ValidateOptions::default(),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn docker_v2s2_image_is_valid() {
    let f = Fixture::new();
    let (blob, mut info) = layer(&[("f", b"x")], Compression::Gzip { level: 1 });
    info.media_type = MediaType::new(MediaType::DOCKER_LAYER_GZIP);
    let d = f.image(
        &[(blob, info)],
        "amd64",
        |_| {},
        |m| {
            m["mediaType"] = json!(MediaType::DOCKER_MANIFEST);
            m["config"]["mediaType"] = json!(MediaType::DOCKER_CONFIG);
        },
    );
    f.tag(&d);
    let report = f.check(&ValidateOptions::default()).await;
    assert!(report.is_valid(), "{report}");
}

#[tokio::test]
async fn layer_digest_mismatch() {
    let f = Fixture::new();
    let layers = three_layers();
    let m = f.image(&layers, "amd64", |_| {}, |_| {});
    f.tag(&m);
    let plain = &layers[2].1.digest;
    // Same size, one byte of file content changed.
    f.corrupt(plain, |b| {
        let i = b.windows(12).position(|w| w == b"uncompressed").unwrap();
        b[i] = b'U';
    });
    let report = f.check(&ValidateOptions::default()).await;
    let k = kinds(&report, plain);
    assert!(
        matches!(&k[0], ProblemKind::DigestMismatch { actual } if actual != plain),
        "{report}"
    );
    assert!(
        k.iter()
            .any(|k| matches!(k, ProblemKind::DiffIdMismatch { layer: 2, .. })),
        "{report}"
    );
    // A flipped byte inside a gzip layer: digest mismatch and an unreadable layer.
    let gz = &layers[0].1.digest;
    f.corrupt(gz, |b| {
        let n = b.len();
        b[n / 2] ^= 0xff;
    });
    let report = f.check(&ValidateOptions::default()).await;
    let k = kinds(&report, gz);
    assert!(
        matches!(k[0], ProblemKind::DigestMismatch { .. }),
        "{report}"
    );
    assert!(
        k.iter()
            .any(|k| matches!(k, ProblemKind::LayerUnreadable { .. })),
        "{report}"
    );
}

#[tokio::test]
async fn layer_size_mismatch_both_ways() {
    for delta in [-10i64, 10] {
        let f = Fixture::new();
        let layers = three_layers();
        let target = layers[1].1.digest.clone();
        let m = f.image(
            &layers,
            "amd64",
            |_| {},
            |m| {
                let size = m["layers"][1]["size"].as_i64().unwrap();
                m["layers"][1]["size"] = json!(size + delta);
            },
        );
        f.tag(&m);
        let report = f.check(&ValidateOptions::default()).await;
        let k = kinds(&report, &target);
        let real = layers[1].0.len() as u64;
        match &k[0] {
            ProblemKind::SizeMismatch {
                expected,
                actual,
                at_least,
            } => {
                assert_eq!(*expected as i64, real as i64 + delta);
                if delta < 0 {
                    // Reading stops at size + 1: "at least".
                    assert!(*at_least && *actual == *expected + 1, "{report}");
                } else {
                    assert!(!at_least && *actual == real, "{report}");
                }
            }
            other => panic!("{other:?}\n{report}"),
        }
    }
}

#[tokio::test]
async fn diff_id_value_and_count() {
    let f = Fixture::new();
    let layers = three_layers();
    let bogus = DiffId(Digest::sha256_of(b"not this layer"));
    let m = f.image(
        &layers,
        "amd64",
        |c| c["rootfs"]["diff_ids"][1] = json!(bogus.to_string()),
        |_| {},
    );
    f.tag(&m);
    let report = f.check(&ValidateOptions::default()).await;
    let k = kinds(&report, &layers[1].1.digest);
    assert_eq!(
        k,
        vec![ProblemKind::DiffIdMismatch {
            layer: 1,
            config: bogus,
            actual: layers[1].1.diff_id.clone()
        }],
        "{report}"
    );
    // M7: fewer diff_ids than layers.
    let f = Fixture::new();
    let m = f.image(
        &layers,
        "amd64",
        |c| {
            c["rootfs"]["diff_ids"].as_array_mut().unwrap().pop();
        },
        |_| {},
    );
    f.tag(&m);
    let report = f.check(&ValidateOptions::default()).await;
    assert!(
        report.problems.iter().any(|p| p.kind
            == ProblemKind::DiffIdCount {
                layers: 3,
                diff_ids: 2
            }),
        "{report}"
    );
}

#[tokio::test]
async fn duplicate_paths_in_a_layer() {
    let f = Fixture::new();
    let mut t = TarBuilder::new(
        LayerWriter::new(Vec::new(), Compression::Gzip { level: 1 }).unwrap(),
        TarOptions::default(),
    );
    t.append_file("etc/x", &EntryMeta::with_mode(0o644), 1, &b"1"[..])
        .unwrap();
    t.append_dir("etc", &EntryMeta::with_mode(0o755)).unwrap();
    t.append_file("/etc/x", &EntryMeta::with_mode(0o644), 1, &b"2"[..])
        .unwrap();
    t.append_dir("./etc/", &EntryMeta::with_mode(0o755))
        .unwrap();
    let (info, blob) = t.finish().unwrap().finish().unwrap();
    let m = f.image(&[(blob, info.clone())], "amd64", |_| {}, |_| {});
    f.tag(&m);
    let report = f.check(&ValidateOptions::default()).await;
    assert_eq!(
        kinds(&report, &info.digest),
        vec![
            ProblemKind::DuplicatePath {
                path: "etc/x".into()
            },
            ProblemKind::DuplicatePath { path: "etc".into() },
        ],
        "{report}"
    );
}

#[tokio::test]
async fn config_digest_size_and_rootfs_type() {
    let f = Fixture::new();
    let layers = three_layers();
    let m = f.image(
        &layers,
        "amd64",
        |c| c["rootfs"]["type"] = json!("snapshots"),
        |_| {},
    );
    f.tag(&m);
    let manifest: Value =
        serde_json::from_slice(&f.layout.read_blob(&m.digest, 1 << 20).unwrap()).unwrap();
    let config: Digest = manifest["config"]["digest"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let report = f.check(&ValidateOptions::default()).await;
    assert_eq!(
        kinds(&report, &config),
        vec![ProblemKind::RootFsType {
            found: "snapshots".into()
        }]
    );
    // Corrupt the config (same length): digest mismatch.
    f.corrupt(&config, |b| {
        let i = b.windows(7).position(|w| w == b"/bin/sh").unwrap();
        b[i + 1] = b'B';
    });
    let report = f.check(&ValidateOptions::default()).await;
    assert!(
        matches!(
            kinds(&report, &config)[0],
            ProblemKind::DigestMismatch { .. }
        ),
        "{report}"
    );
    // Config size in the manifest wrong.
    let f = Fixture::new();
    let m = f.image(
        &layers,
        "amd64",
        |_| {},
        |m| {
            let s = m["config"]["size"].as_i64().unwrap();
            m["config"]["size"] = json!(s - 1);
        },
    );
    f.tag(&m);
    let report = f.check(&ValidateOptions::default()).await;
    assert!(
        report
            .problems
            .iter()
            .any(|p| matches!(p.kind, ProblemKind::SizeMismatch { at_least: true, .. })),
        "{report}"
    );
}

#[tokio::test]
async fn manifest_media_type_against_parent_descriptor() {
    let f = Fixture::new();
    let layers = three_layers();
    let m = f.image(&layers, "amd64", |_| {}, |_| {});
    // The index calls an OCI image manifest a Docker one, and another an index.
    let mut as_docker = m.clone();
    as_docker.media_type = MediaType::new(MediaType::DOCKER_MANIFEST);
    let mut as_index = m.clone();
    as_index.media_type = MediaType::new(MediaType::OCI_INDEX);
    let idx = f.index(&[(as_docker, None), (as_index, None)], MediaType::OCI_INDEX);
    f.tag(&idx);
    let report = f.check(&ValidateOptions::default()).await;
    let k = kinds(&report, &m.digest);
    assert_eq!(k.len(), 2, "{report}");
    assert!(
        k.iter()
            .all(|k| matches!(k, ProblemKind::MediaTypeMismatch { .. })),
        "{report}"
    );
}

#[tokio::test]
async fn platform_against_config() {
    let f = Fixture::new();
    let layers = three_layers();
    let arm = f.image(&layers, "arm", |c| c["variant"] = json!("v6"), |_| {});
    let win = f.image(
        &layers,
        "amd64",
        |c| {
            c["os"] = json!("windows");
            c["os.version"] = json!("10.0.17763.1757");
        },
        |_| {},
    );
    let idx = f.index(
        &[
            (
                arm.clone(),
                Some(json!({"os": "linux", "architecture": "arm", "variant": "v7"})),
            ),
            (
                win.clone(),
                Some(
                    json!({"os": "windows", "architecture": "arm64", "os.version": "10.0.20348.1"}),
                ),
            ),
        ],
        MediaType::OCI_INDEX,
    );
    f.tag(&idx);
    let report = f.check(&ValidateOptions::default()).await;
    let fields = |d: &Digest| -> Vec<&'static str> {
        kinds(&report, d)
            .into_iter()
            .map(|k| match k {
                ProblemKind::PlatformMismatch { field, .. } => field,
                other => panic!("{other:?}"),
            })
            .collect()
    };
    assert_eq!(fields(&arm.digest), ["variant"], "{report}");
    assert_eq!(
        fields(&win.digest),
        ["architecture", "os.version"],
        "{report}"
    );
}

#[tokio::test]
async fn missing_blobs_and_unsupported_layers() {
    let f = Fixture::new();
    let layers = three_layers();
    let m = f.image(
        &layers,
        "amd64",
        |_| {},
        |m| {
            m["layers"][2]["mediaType"] = json!("application/vnd.example.layer.v1+lz4");
        },
    );
    f.tag(&m);
    fs::remove_file(f.layout.blob_path(&layers[0].1.digest)).unwrap();
    let report = f.check(&ValidateOptions::default()).await;
    assert!(
        matches!(
            kinds(&report, &layers[0].1.digest)[..],
            [ProblemKind::Unreadable { .. }]
        ),
        "{report}"
    );
    assert!(
        matches!(
            kinds(&report, &layers[2].1.digest)[..],
            [ProblemKind::UnsupportedLayerMediaType { .. }]
        ),
        "{report}"
    );
    // The rest was still checked.
    assert!(report.problems_for(&layers[1].1.digest).is_empty());
    assert_eq!(report.problems.len(), 2, "{report}");
}

#[tokio::test]
async fn unreadable_layer_contents() {
    let f = Fixture::new();
    // A gzip stream cut short, described honestly (digest and size of the cut bytes).
    let (mut blob, mut info) = layer(
        &[("f", &vec![1u8; 100_000])],
        Compression::Gzip { level: 1 },
    );
    blob.truncate(blob.len() / 2);
    info.digest = Digest::sha256_of(&blob);
    // A tar refused as ambiguous (a symlink carrying data), uncompressed.
    let mut tar = Vec::new();
    let mut h = tar::Header::new_ustar();
    h.as_old_mut().name[..1].copy_from_slice(b"l");
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(512);
    h.set_cksum();
    tar.extend_from_slice(h.as_bytes());
    tar.extend_from_slice(&[0u8; 512 + 1024]);
    let tinfo = LayerInfo {
        digest: Digest::sha256_of(&tar),
        diff_id: DiffId(Digest::sha256_of(&tar)),
        size: tar.len() as u64,
        uncompressed_size: tar.len() as u64,
        media_type: MediaType::new(MediaType::OCI_LAYER),
    };
    let m = f.image(
        &[(blob, info.clone()), (tar, tinfo.clone())],
        "amd64",
        |_| {},
        |_| {},
    );
    f.tag(&m);
    let report = f.check(&ValidateOptions::default()).await;
    for d in [&info.digest, &tinfo.digest] {
        assert!(
            matches!(kinds(&report, d)[..], [ProblemKind::LayerUnreadable { .. }]),
            "{report}"
        );
    }
}

#[tokio::test]
async fn all_problems_are_reported_and_strict_fails() {
    let f = Fixture::new();
    let layers = three_layers();
    let m = f.image(
        &layers,
        "amd64",
        |c| {
            c["rootfs"]["diff_ids"][0] = json!(Digest::sha256_of(b"x").to_string());
        },
        |m| {
            let s = m["layers"][2]["size"].as_i64().unwrap();
            m["layers"][2]["size"] = json!(s + 1);
        },
    );
    f.tag(&m);
    f.corrupt(&layers[1].1.digest, |b| b.push(0));
    let report = f.check(&ValidateOptions::default()).await;
    for l in &layers {
        assert!(
            !report.problems_for(&l.1.digest).is_empty(),
            "{}: {report}",
            l.1.digest
        );
    }
    let err = validate_strict(
        &LayoutSource::new(f.layout.clone_handle(), Some("t"), "t".into()),
        &ValidateOptions::default(),
    )
    .await
    .unwrap_err();
    match err {
        ImageError::Invalid { report } => assert!(report.problems.len() >= 3),
        other => panic!("{other}"),
    }
}

#[tokio::test]
async fn artifacts_are_checked_for_blobs_only() {
    let f = Fixture::new();
    let cfg = f.blob("application/vnd.oci.empty.v1+json", b"{}");
    let payload = f.blob("application/vnd.example.sbom+json", b"{\"sbom\":true}");
    let bytes = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MediaType::OCI_MANIFEST,
        "artifactType": "application/vnd.example.sbom",
        "config": cfg,
        "layers": [payload],
    }))
    .unwrap();
    let m = f.blob(MediaType::OCI_MANIFEST, &bytes);
    f.tag(&m);
    let report = f.check(&ValidateOptions::default()).await;
    assert!(report.is_valid(), "{report}");
    f.corrupt(&payload.digest, |b| b[0] = b'[');
    let report = f.check(&ValidateOptions::default()).await;
    assert!(
        matches!(
            kinds(&report, &payload.digest)[..],
            [ProblemKind::DigestMismatch { .. }]
        ),
        "{report}"
    );
}

#[tokio::test]
async fn depth_and_count_limits() {
    let f = Fixture::new();
    let layers = vec![layer(&[("f", b"x")], Compression::Gzip { level: 1 })];
    let mut d = f.image(&layers, "amd64", |_| {}, |_| {});
    let image = d.clone();
    for _ in 0..10 {
        d = f.index(&[(d, None)], MediaType::OCI_INDEX);
    }
    f.tag(&d);
    let report = f.check(&ValidateOptions::default()).await;
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.kind == ProblemKind::DepthExceeded { limit: 8 }),
        "{report}"
    );
    assert!(report.problems_for(&image.digest).is_empty());
    // Many distinct images against a small budget.
    let f = Fixture::new();
    let children: Vec<(Descriptor, Option<Value>)> = (0..5)
        .map(|i| {
            (
                f.image(
                    &layers,
                    "amd64",
                    |c| c["author"] = json!(format!("{i}")),
                    |_| {},
                ),
                None,
            )
        })
        .collect();
    let idx = f.index(&children, MediaType::OCI_INDEX);
    f.tag(&idx);
    let options = ValidateOptions {
        max_manifests: 3,
        ..ValidateOptions::default()
    };
    let report = f.check(&options).await;
    let over: Vec<_> = report
        .problems
        .iter()
        .filter(|p| p.kind == ProblemKind::TooManyManifests { limit: 3 })
        .collect();
    assert_eq!(over.len(), 2, "{report}");
    // An index with more entries than any real one (1e4 + 1) is refused when parsed.
    let f = Fixture::new();
    let one = f.image(&layers, "amd64", |_| {}, |_| {});
    let many: Vec<(Descriptor, Option<Value>)> = (0..10_001).map(|_| (one.clone(), None)).collect();
    let idx = f.index(&many, MediaType::OCI_INDEX);
    f.tag(&idx);
    let report = f.check(&ValidateOptions::default()).await;
    assert!(
        matches!(&kinds(&report, &idx.digest)[..], [ProblemKind::Malformed { error }] if error.contains("10000")),
        "{report}"
    );
}

/// A source that serves whatever it is told for any digest (a lying registry).
struct Lying {
    top: Vec<u8>,
    by_digest: HashMap<Digest, Vec<u8>>,
    fallback: Vec<u8>,
}

#[async_trait]
impl ImageSource for Lying {
    fn describe(&self) -> String {
        "lying".into()
    }
    async fn manifest(&self, digest: Option<&Digest>) -> Result<RawManifest, ImageError> {
        let bytes = match digest {
            None => self.top.clone(),
            Some(d) => self
                .by_digest
                .get(d)
                .cloned()
                .unwrap_or_else(|| self.fallback.clone()),
        };
        let mut raw = RawManifest::new(bytes, MediaType::default());
        if let Some(d) = digest {
            raw.digest = d.clone();
        }
        Ok(raw)
    }
    async fn blob(&self, d: &Descriptor) -> Result<BlobReader, ImageError> {
        Err(ImageError::NotFound {
            what: d.digest.to_string(),
        })
    }
}

#[tokio::test]
async fn index_cycle_through_a_lying_source() {
    let fake = Digest::sha256_of(b"fake");
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MediaType::OCI_INDEX,
        "manifests": [{"mediaType": MediaType::OCI_INDEX, "digest": fake.to_string(), "size": 1}],
    }))
    .unwrap();
    let source = Lying {
        top: index.clone(),
        by_digest: HashMap::new(),
        fallback: index,
    };
    let report = validate(&source, &ValidateOptions::default())
        .await
        .unwrap();
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.kind == ProblemKind::Cycle && p.digest == fake),
        "{report}"
    );
    assert!(
        report
            .problems
            .iter()
            .any(|p| matches!(p.kind, ProblemKind::DigestMismatch { .. }) && p.digest == fake),
        "{report}"
    );
}
