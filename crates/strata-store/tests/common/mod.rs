//! Shared test helpers: tiny images built at run time, a mini copy loop over the traits,
//! the OCI JSON schemas, and running outside judges (skopeo, umoci, podman).
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::{Value, json};
use strata_image::{ImageSink, ImageSource, RawManifest, read_blob_bytes};
use strata_spec::{Descriptor, Digest, Manifest, MediaType};

/// A small image: config, gzip layers, OCI manifest.
#[derive(Clone)]
pub struct TestImage {
    pub config: Vec<u8>,
    pub layers: Vec<Vec<u8>>,
    pub diff_ids: Vec<Digest>,
    pub manifest: Vec<u8>,
}

impl TestImage {
    pub fn manifest_descriptor(&self) -> Descriptor {
        Descriptor::of_bytes(MediaType::OCI_MANIFEST, &self.manifest)
    }
    pub fn digest(&self) -> Digest {
        Digest::sha256_of(&self.manifest)
    }
    pub fn config_descriptor(&self) -> Descriptor {
        Descriptor::of_bytes(MediaType::OCI_CONFIG, &self.config)
    }
    pub fn layer_descriptors(&self) -> Vec<Descriptor> {
        self.layers
            .iter()
            .map(|l| Descriptor::of_bytes(MediaType::OCI_LAYER_GZIP, l))
            .collect()
    }
    pub fn raw(&self) -> RawManifest {
        RawManifest::new(
            self.manifest.clone(),
            MediaType::new(MediaType::OCI_MANIFEST),
        )
    }
}

/// An uncompressed tar with the given regular files.
pub fn layer_tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, *data).unwrap();
    }
    b.into_inner().unwrap()
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// A one- or two-layer linux image whose content depends on `seed`.
pub fn image(seed: &str, arch: &str) -> TestImage {
    let tars = [
        layer_tar(&[("etc/seed", seed.as_bytes()), ("etc/arch", arch.as_bytes())]),
        layer_tar(&[("app/hello", format!("hello {seed}\n").as_bytes())]),
    ];
    let diff_ids: Vec<Digest> = tars.iter().map(|t| Digest::sha256_of(t)).collect();
    let layers: Vec<Vec<u8>> = tars.iter().map(|t| gzip(t)).collect();
    let config = serde_json::to_vec(&json!({
        "created": "2024-01-01T00:00:00Z",
        "architecture": arch,
        "os": "linux",
        "config": {"Env": ["PATH=/usr/bin:/bin"], "Cmd": ["/app/hello"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids.iter().map(|d| d.to_string()).collect::<Vec<_>>()},
        "history": [{"created_by": "test"}, {"created_by": "test"}]
    }))
    .unwrap();
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MediaType::OCI_MANIFEST,
        "config": Descriptor::of_bytes(MediaType::OCI_CONFIG, &config),
        "layers": layers.iter().map(|l| Descriptor::of_bytes(MediaType::OCI_LAYER_GZIP, l)).collect::<Vec<_>>(),
    }))
    .unwrap();
    TestImage {
        config,
        layers,
        diff_ids,
        manifest,
    }
}

/// An OCI index over images with their platforms.
pub fn index_of(images: &[(&TestImage, &str)]) -> Vec<u8> {
    let manifests: Vec<Value> = images
        .iter()
        .map(|(img, arch)| {
            let d = img.manifest_descriptor();
            json!({
                "mediaType": d.media_type,
                "digest": d.digest,
                "size": d.size,
                "platform": {"architecture": arch, "os": "linux"}
            })
        })
        .collect();
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MediaType::OCI_INDEX,
        "manifests": manifests
    }))
    .unwrap()
}

pub fn reader(bytes: Vec<u8>) -> strata_image::BlobReader {
    Box::pin(std::io::Cursor::new(bytes))
}

/// Write one image through a sink: blobs, manifest (tagged), finish.
pub async fn push_image(sink: &dyn ImageSink, img: &TestImage, tag: Option<&str>) {
    push_blobs(sink, img).await;
    sink.put_manifest(&img.raw(), tag).await.unwrap();
    sink.finish().await.unwrap();
}

pub async fn push_blobs(sink: &dyn ImageSink, img: &TestImage) {
    sink.put_blob(&img.config_descriptor(), reader(img.config.clone()))
        .await
        .unwrap();
    for (d, l) in img.layer_descriptors().iter().zip(&img.layers) {
        sink.put_blob(d, reader(l.clone())).await.unwrap();
    }
}

/// What a source holds at its top: the manifest and, per image, config + layer bytes (every
/// blob verified against its descriptor while read).
pub struct Pulled {
    pub top: RawManifest,
    pub images: Vec<(RawManifest, Vec<u8>, Vec<Vec<u8>>)>,
}

pub async fn pull(source: &dyn ImageSource) -> Pulled {
    let top = source.manifest(None).await.unwrap();
    let mut images = Vec::new();
    match top.parse().unwrap() {
        Manifest::Image(_) => images.push(pull_image(source, top.clone()).await),
        Manifest::Index(index) => {
            for child in &index.manifests {
                let m = source.manifest(Some(&child.digest)).await.unwrap();
                assert_eq!(m.digest, child.digest);
                images.push(pull_image(source, m).await);
            }
        }
    }
    Pulled { top, images }
}

async fn pull_image(
    source: &dyn ImageSource,
    m: RawManifest,
) -> (RawManifest, Vec<u8>, Vec<Vec<u8>>) {
    let Manifest::Image(image) = m.parse().unwrap() else {
        panic!("nested index")
    };
    let config = read_blob_bytes(source, &image.config, 1 << 22)
        .await
        .unwrap();
    let mut layers = Vec::new();
    for l in &image.layers {
        layers.push(read_blob_bytes(source, l, 1 << 30).await.unwrap());
    }
    (m, config, layers)
}

/// A minimal copy over the traits (what strata-copy does, without platform choice).
pub async fn copy(source: &dyn ImageSource, sink: &dyn ImageSink, tag: Option<&str>) {
    let top = source.manifest(None).await.unwrap();
    match top.parse().unwrap() {
        Manifest::Image(image) => copy_image(source, sink, &image).await,
        Manifest::Index(index) => {
            for child in &index.manifests {
                let m = source.manifest(Some(&child.digest)).await.unwrap();
                let Manifest::Image(image) = m.parse().unwrap() else {
                    panic!("nested index")
                };
                copy_image(source, sink, &image).await;
                sink.put_manifest(&m, None).await.unwrap();
            }
        }
    }
    sink.put_manifest(&top, tag).await.unwrap();
    sink.finish().await.unwrap();
}

async fn copy_image(
    source: &dyn ImageSource,
    sink: &dyn ImageSink,
    image: &strata_spec::ImageManifest,
) {
    for d in std::iter::once(&image.config).chain(&image.layers) {
        if !sink.reuse_blob(d, None).await.unwrap() {
            sink.put_blob(d, source.blob(d).await.unwrap())
                .await
                .unwrap();
        }
    }
}

// ---------------------------------------------------------------------------------------
// OCI JSON schemas (vendored in strata-testkit).

pub use strata_testkit::schema::assert_layout_valid;

// ---------------------------------------------------------------------------------------
// Outside judges.

pub fn have(tool: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("skipping: {tool} not installed");
    }
    found
}

/// Run a command, panic with its output unless it succeeds; return stdout.
pub fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Run a command expected to fail; return stderr.
pub fn run_fails(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        !out.status.success(),
        "{program} {args:?} unexpectedly succeeded"
    );
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// `skopeo inspect --raw` and `skopeo inspect` (JSON) of an image reference.
pub fn skopeo_inspect(reference: &str) -> (Vec<u8>, Value) {
    let raw = run("skopeo", &["inspect", "--raw", reference]).into_bytes();
    let info: Value = serde_json::from_str(&run("skopeo", &["inspect", reference])).unwrap();
    (raw, info)
}

/// Files left in a directory tree whose name marks them as strata temp files.
pub fn temp_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().to_string();
            if e.file_type().unwrap().is_dir() {
                if name.contains(".strata-") {
                    out.push(p.clone());
                }
                stack.push(p);
            } else if name.starts_with(".strata-tmp")
                || p.parent().is_some_and(|d| d.ends_with(".strata/tmp"))
            {
                out.push(p);
            }
        }
    }
    out
}
