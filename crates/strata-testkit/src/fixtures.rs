//! Small deterministic OCI images for tests.

use std::path::Path;

use rand::{RngCore, SeedableRng};
use strata_spec::{Descriptor, Digest, MediaType};

/// An image (or an index of images) as bytes, ready to push or write as an OCI layout.
#[derive(Clone, Debug)]
pub struct TestImage {
    /// The top document (image manifest or index).
    pub manifest: Vec<u8>,
    pub media_type: String,
    /// Child manifests of an index (empty for a single image), with their media type.
    pub children: Vec<(String, Vec<u8>)>,
    /// Config and layer blobs: descriptor and content.
    pub blob_list: Vec<(Descriptor, Vec<u8>)>,
}

impl TestImage {
    pub fn digest(&self) -> Digest {
        Digest::sha256_of(&self.manifest)
    }
    pub fn descriptor(&self) -> Descriptor {
        Descriptor::of_bytes(self.media_type.as_str(), &self.manifest)
    }
    /// Config and layers (each once).
    pub fn blobs(&self) -> impl Iterator<Item = (&Descriptor, &[u8])> {
        self.blob_list.iter().map(|(d, b)| (d, b.as_slice()))
    }
    /// The layers only (for an index: of every child).
    pub fn layers(&self) -> Vec<&Descriptor> {
        self.blob_list
            .iter()
            .filter(|(d, _)| d.media_type.as_str() == MediaType::OCI_LAYER_GZIP)
            .map(|(d, _)| d)
            .collect()
    }
    /// (media type, bytes, reference) in push order: children by digest, then the top by tag.
    pub fn manifests_to_push(&self, tag: &str) -> Vec<(String, Vec<u8>, String)> {
        let mut out: Vec<(String, Vec<u8>, String)> = self
            .children
            .iter()
            .map(|(mt, b)| (mt.clone(), b.clone(), Digest::sha256_of(b).to_string()))
            .collect();
        out.push((
            self.media_type.clone(),
            self.manifest.clone(),
            tag.to_string(),
        ));
        out
    }

    /// Write as an OCI image layout at `dir` with `tag` (for `skopeo copy oci:DIR:TAG`).
    pub fn write_oci_layout(&self, dir: &Path, tag: &str) -> std::io::Result<()> {
        let blobs = dir.join("blobs/sha256");
        std::fs::create_dir_all(&blobs)?;
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        for (d, b) in &self.blob_list {
            std::fs::write(blobs.join(d.digest.encoded()), b)?;
        }
        for (_, b) in &self.children {
            std::fs::write(blobs.join(Digest::sha256_of(b).encoded()), b)?;
        }
        std::fs::write(blobs.join(self.digest().encoded()), &self.manifest)?;
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MediaType::OCI_INDEX,
            "manifests": [{
                "mediaType": self.media_type,
                "digest": self.digest().to_string(),
                "size": self.manifest.len(),
                "annotations": {"org.opencontainers.image.ref.name": tag}
            }]
        });
        std::fs::write(dir.join("index.json"), serde_json::to_vec(&index)?)?;
        Ok(())
    }
}

/// A gzip'd tar holding one file `file-<seed>` of `size` pseudo-random bytes.
fn layer(rng: &mut rand::rngs::StdRng, index: usize, size: usize) -> Vec<u8> {
    let mut content = vec![0u8; size];
    rng.fill_bytes(&mut content);
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_ustar();
    header.set_size(size as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    tar.append_data(&mut header, format!("file-{index}"), content.as_slice())
        .expect("tar in memory");
    let tar_bytes = tar.into_inner().expect("tar in memory");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &tar_bytes).expect("gzip in memory");
    gz.finish().expect("gzip in memory")
}

/// A linux/amd64 OCI image with one gzip layer per entry of `layer_sizes` (uncompressed file
/// size; random content compresses to about the same size). Same seed, same bytes.
pub fn random_image(seed: u64, layer_sizes: &[usize]) -> TestImage {
    random_image_for(seed, layer_sizes, "amd64")
}

fn random_image_for(seed: u64, layer_sizes: &[usize], arch: &str) -> TestImage {
    random_image_for_platform(
        seed,
        layer_sizes,
        &strata_spec::Platform::new("linux", arch),
    )
}

/// Like [`random_image`], with the config's os, architecture, variant, os.version and
/// os.features taken from `platform` (e.g. a Windows image for manifest-list tests).
pub fn random_image_for_platform(
    seed: u64,
    layer_sizes: &[usize],
    platform: &strata_spec::Platform,
) -> TestImage {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut blob_list = Vec::new();
    let mut diff_ids = Vec::new();
    for (i, size) in layer_sizes.iter().enumerate() {
        let bytes = layer(&mut rng, i, *size);
        let mut gz = flate2::read::MultiGzDecoder::new(bytes.as_slice());
        let mut raw = Vec::new();
        std::io::Read::read_to_end(&mut gz, &mut raw).expect("gunzip own layer");
        diff_ids.push(Digest::sha256_of(&raw).to_string());
        let d = Descriptor::of_bytes(MediaType::OCI_LAYER_GZIP, &bytes);
        blob_list.push((d, bytes));
    }
    let mut config = serde_json::json!({
        "architecture": platform.architecture,
        "os": platform.os,
        "created": "1970-01-01T00:00:00Z",
        "config": {"Env": [format!("SEED={seed}")]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "strata-testkit"}]
    });
    if let Some(v) = &platform.variant {
        config["variant"] = v.as_str().into();
    }
    if let Some(v) = &platform.os_version {
        config["os.version"] = v.as_str().into();
    }
    if !platform.os_features.is_empty() {
        config["os.features"] = platform.os_features.clone().into();
    }
    single_image(config, blob_list)
}

/// An OCI index of two images (linux/amd64 and linux/arm64), children pushed by digest.
pub fn random_index(seed: u64, layer_sizes: &[usize]) -> TestImage {
    let amd = random_image_for(seed, layer_sizes, "amd64");
    let arm = random_image_for(seed.wrapping_add(1), layer_sizes, "arm64");
    index_of(&[amd, arm])
}

/// An OCI index of single images, each entry's platform taken from the image's config.
pub fn index_of(images: &[TestImage]) -> TestImage {
    let mut manifests = Vec::new();
    let mut blob_list = Vec::new();
    let mut children = Vec::new();
    for img in images {
        let manifest: serde_json::Value =
            serde_json::from_slice(&img.manifest).expect("own manifest json");
        let config_digest = manifest["config"]["digest"]
            .as_str()
            .expect("config digest");
        let config = img
            .blob_list
            .iter()
            .find(|(d, _)| d.digest.to_string() == config_digest)
            .map(|(_, b)| serde_json::from_slice::<serde_json::Value>(b).expect("config json"))
            .expect("config blob");
        let mut platform = serde_json::json!({
            "architecture": config["architecture"],
            "os": config["os"],
        });
        for key in ["variant", "os.version", "os.features"] {
            if let Some(v) = config.get(key) {
                platform[key] = v.clone();
            }
        }
        let mut d = serde_json::to_value(img.descriptor()).expect("descriptor json");
        d["platform"] = platform;
        manifests.push(d);
        children.push((img.media_type.clone(), img.manifest.clone()));
        for (bd, b) in &img.blob_list {
            if !blob_list
                .iter()
                .any(|(x, _): &(Descriptor, Vec<u8>)| x.digest == bd.digest)
            {
                blob_list.push((bd.clone(), b.clone()));
            }
        }
    }
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MediaType::OCI_INDEX,
        "manifests": manifests,
    });
    TestImage {
        manifest: serde_json::to_vec(&index).expect("index json"),
        media_type: MediaType::OCI_INDEX.into(),
        children,
        blob_list,
    }
}

/// A linux/amd64 OCI image whose layers are the given uncompressed tars (gzip'd here,
/// DiffIds computed), with `runtime_config` as the config's `config` section (`Env`,
/// `Cmd`, `User`, `Labels`…). For unpack/repack tests that need exact layer contents.
pub fn image_from_layers(layers: &[Vec<u8>], runtime_config: serde_json::Value) -> TestImage {
    let mut blob_list = Vec::new();
    let mut diff_ids = Vec::new();
    for raw in layers {
        diff_ids.push(Digest::sha256_of(raw).to_string());
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, raw).expect("gzip in memory");
        let bytes = gz.finish().expect("gzip in memory");
        let d = Descriptor::of_bytes(MediaType::OCI_LAYER_GZIP, &bytes);
        blob_list.push((d, bytes));
    }
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": runtime_config,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "strata-testkit"}]
    });
    single_image(config, blob_list)
}

/// An OCI image manifest over `config` and the layers in `layer_blobs` (in order); the
/// config blob is put first in the image's blob list.
fn single_image(config: serde_json::Value, layer_blobs: Vec<(Descriptor, Vec<u8>)>) -> TestImage {
    let config_bytes = serde_json::to_vec(&config).expect("config json");
    let config_descriptor = Descriptor::of_bytes(MediaType::OCI_CONFIG, &config_bytes);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MediaType::OCI_MANIFEST,
        "config": config_descriptor,
        "layers": layer_blobs.iter().map(|(d, _)| d).collect::<Vec<_>>(),
    });
    let mut blob_list = layer_blobs;
    blob_list.insert(0, (config_descriptor, config_bytes));
    TestImage {
        manifest: serde_json::to_vec(&manifest).expect("manifest json"),
        media_type: MediaType::OCI_MANIFEST.into(),
        children: Vec::new(),
        blob_list,
    }
}
