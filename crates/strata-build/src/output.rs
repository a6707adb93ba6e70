//! Images and the index: squash, config, manifests, tags; pushing a result elsewhere.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use strata_archive::WhiteoutMode;
use strata_image::{BlobReader, ImageError, ImageSink, ImageSource, RawManifest};
use strata_spec::{
    Descriptor, Digest, History, ImageIndex, ImageManifest, MAX_CONFIG_BYTES, MAX_MANIFEST_BYTES,
    MediaType, Platform, Reference, RootFs,
};
use strata_store::OciLayout;

use crate::BuildError;
use crate::cache::KeyHasher;
use crate::engine::{BuiltStage, PlatformBuild, Shared};
use crate::error::join_error;
use crate::layer::{self, LayerRef};
use crate::options::{ImageFormat, IndexMode, Output, Squash};
use crate::progress::{BuildEvent, LayerOrigin};
use crate::result::{BuildResult, BuiltImage, BuiltLayer};
use crate::time::rfc3339;

/// OCI annotations naming the base image (as buildah and BuildKit write them).
const BASE_NAME_ANNOTATION: &str = "org.opencontainers.image.base.name";
const BASE_DIGEST_ANNOTATION: &str = "org.opencontainers.image.base.digest";

/// One platform's finished image.
pub(crate) struct PlatformImage {
    pub image: BuiltImage,
    pub descriptor: Descriptor,
}

fn layer_media_type(layer: &LayerRef, format: ImageFormat) -> Result<MediaType, BuildError> {
    let mt = layer
        .media_type
        .layer_for_format(format == ImageFormat::V2s2);
    if format == ImageFormat::V2s2 && !mt.is_docker() {
        return Err(BuildError::InvalidOption {
            option: "format".into(),
            reason: format!(
                "layer {} ({}) cannot be described by Docker schema 2 (use the OCI format)",
                layer.digest, layer.media_type
            ),
        });
    }
    Ok(mt)
}

/// Annotations for `scope` ("manifest" or "index"): unprefixed keys go everywhere.
fn annotations_for(all: &BTreeMap<String, String>, scope: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (k, v) in all {
        match k.split_once(':') {
            Some((s, key)) if s == "manifest" || s == "index" => {
                if s == scope {
                    out.insert(key.to_string(), v.clone());
                }
            }
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    out
}

impl PlatformBuild<'_, '_> {
    /// Squash (if asked), write the config and the manifest of the target stage.
    pub(crate) async fn finish_image(
        &self,
        stage: Arc<BuiltStage>,
    ) -> Result<PlatformImage, BuildError> {
        let shared = self.shared;
        let options = shared.options;
        let mut layers = stage.layers.clone();
        let mut history = stage.history.clone();
        let squash_history = |mut history: Vec<History>, from: usize, what: &str| {
            for h in history.iter_mut().skip(from) {
                h.empty_layer = Some(true);
            }
            history.push(History {
                created: Some(rfc3339(shared.created())),
                created_by: Some(format!("strata build {what}")),
                comment: Some("squashed".into()),
                ..Default::default()
            });
            history
        };
        match options.squash {
            Squash::None => {}
            _ if stage.windows => {
                return Err(BuildError::InvalidOption {
                    option: "squash".into(),
                    reason: "squashing Windows images is not supported".into(),
                });
            }
            Squash::New => {
                let new = &stage.layers[stage.base_layers..];
                if new.len() > 1 {
                    let merged = self
                        .squash_layers(new, WhiteoutMode::OverlayConvert, "new")
                        .await?;
                    layers.truncate(stage.base_layers);
                    layers.push(merged);
                    history = squash_history(history, stage.base_history, "--squash");
                }
            }
            Squash::All => {
                if layers.len() > 1 {
                    let merged = self
                        .squash_layers(&stage.layers, WhiteoutMode::Apply, "all")
                        .await?;
                    layers = vec![merged];
                    history = squash_history(history, 0, "--squash-all");
                }
            }
        }

        if layers.is_empty() {
            // image-spec: layers SHOULD have at least one entry (its schema requires one, and
            // some runtimes refuse none): an image of only metadata gets one empty layer.
            layers.push(self.empty_layer(stage.windows).await?);
            history.push(History {
                created: Some(rfc3339(shared.created())),
                created_by: Some("strata build: empty layer (an image needs one)".into()),
                ..Default::default()
            });
        }
        let docker = options.format == ImageFormat::V2s2;
        let mut config = stage.config.clone();
        config.created = Some(rfc3339(shared.created()));
        config.history = history;
        config.rootfs = RootFs {
            kind: "layers".into(),
            diff_ids: layers.iter().map(|l| l.diff_id.clone()).collect(),
        };
        if !options.labels.is_empty() {
            let rt = config.config.get_or_insert_with(Default::default);
            let labels = rt.labels.get_or_insert_with(BTreeMap::new);
            for (k, v) in &options.labels {
                labels.insert(k.clone(), v.clone());
            }
        }
        let config_type = if docker {
            MediaType::DOCKER_CONFIG
        } else {
            MediaType::OCI_CONFIG
        };
        let config_bytes = config.to_bytes();
        if config_bytes.len() as u64 > MAX_CONFIG_BYTES {
            return Err(BuildError::ConfigTooLarge {
                at: None,
                what: format!("the image for {}", config.platform()),
                limit: MAX_CONFIG_BYTES,
            });
        }
        let config_desc = shared
            .layout
            .write_blob_bytes(config_type, &config_bytes)
            .map_err(|e| BuildError::store("writing the image config", e))?;
        let mut manifest = ImageManifest::new(
            if docker {
                MediaType::DOCKER_MANIFEST
            } else {
                MediaType::OCI_MANIFEST
            },
            config_desc.clone(),
        );
        let mut built_layers = Vec::new();
        for l in &layers {
            let mt = layer_media_type(l, options.format)?;
            manifest
                .layers
                .push(Descriptor::new(mt.clone(), l.digest.clone(), l.size));
            built_layers.push(BuiltLayer {
                digest: l.digest.clone(),
                diff_id: l.diff_id.clone(),
                media_type: mt,
                size: l.size,
                origin: l.origin,
            });
        }
        if !docker {
            manifest.annotations = annotations_for(&options.annotations, "manifest");
            if let Some((name, digest)) = &stage.base
                && options.squash != Squash::All
            {
                manifest
                    .annotations
                    .entry(BASE_NAME_ANNOTATION.into())
                    .or_insert_with(|| name.clone());
                manifest
                    .annotations
                    .entry(BASE_DIGEST_ANNOTATION.into())
                    .or_insert_with(|| digest.to_string());
            }
        }
        let bytes = manifest.to_bytes();
        let descriptor = shared
            .layout
            .write_blob_bytes(manifest.media_type().as_str(), &bytes)
            .map_err(|e| BuildError::store("writing the image manifest", e))?;
        let platform = config.platform();
        shared.emit(BuildEvent::ImageWritten {
            platform: platform.clone(),
            manifest: descriptor.digest.clone(),
        });
        let mut index_descriptor = descriptor.clone();
        index_descriptor.platform = Some(platform.clone());
        Ok(PlatformImage {
            image: BuiltImage {
                platform,
                containerfile: self.recipe.file_name.clone(),
                manifest: descriptor.digest.clone(),
                manifest_size: bytes.len() as u64,
                config: config_desc.digest,
                layers: built_layers,
            },
            descriptor: index_descriptor,
        })
    }

    async fn empty_layer(&self, windows: bool) -> Result<LayerRef, BuildError> {
        let shared = self.shared;
        let mut k = KeyHasher::new("empty-layer");
        k.str("salt", &shared.salt.to_string())
            .num("windows", windows as u64);
        let key = k.finish();
        if let Some(c) = shared.cache.lookup_content(&key, &shared.layout) {
            return Ok(LayerRef::from_cached(&c, LayerOrigin::Cached));
        }
        let layout = shared.layout.clone();
        let settings = shared.layer_settings(windows);
        let layer = tokio::task::spawn_blocking(move || {
            layer::write_layer(&layout, &[], &settings, &|_| {}).map(|(l, _)| l)
        })
        .await
        .map_err(join_error)??;
        shared.cache.record_content(&key, &layer)?;
        Ok(LayerRef::from_cached(&layer, LayerOrigin::Built))
    }

    async fn squash_layers(
        &self,
        layers: &[LayerRef],
        whiteouts: WhiteoutMode,
        what: &str,
    ) -> Result<LayerRef, BuildError> {
        let shared = self.shared;
        // Keyed by the layer digests (verified content addresses), never by claimed DiffIds.
        let mut k = KeyHasher::new("squash");
        k.str("salt", &shared.salt.to_string()).str("mode", what);
        for l in layers {
            k.str("layer", &l.digest.to_string());
        }
        let key = k.finish();
        if let Some(c) = shared.cache.lookup_content(&key, &shared.layout) {
            return Ok(LayerRef::from_cached(&c, LayerOrigin::Cached));
        }
        let layout = shared.layout.clone();
        let layers = layers.to_vec();
        let settings = shared.layer_settings(false);
        let limit = shared.options.max_uncompressed;
        let base = shared.scratch.path().to_path_buf();
        let layer = tokio::task::spawn_blocking(move || {
            let dir = tempfile::Builder::new()
                .prefix("squash-")
                .tempdir_in(&base)
                .map_err(|e| BuildError::io(&base, "cannot create a directory", e))?;
            layer::squash(&layout, &layers, dir.path(), whiteouts, &settings, limit)
        })
        .await
        .map_err(join_error)??;
        shared.cache.record_content(&key, &layer)?;
        Ok(LayerRef::from_cached(&layer, LayerOrigin::Built))
    }
}

/// Write the top-level document, tag it, and describe the result.
pub(crate) async fn write_result(
    shared: &Shared<'_>,
    images: Vec<PlatformImage>,
) -> Result<BuildResult, BuildError> {
    let options = shared.options;
    let docker = options.format == ImageFormat::V2s2;
    let (top, media_type, size) = if images.len() == 1 && options.index == IndexMode::Auto {
        let d = &images[0].descriptor;
        (d.digest.clone(), d.media_type.clone(), d.size.max(0) as u64)
    } else {
        let mut index = ImageIndex::new(if docker {
            MediaType::DOCKER_MANIFEST_LIST
        } else {
            MediaType::OCI_INDEX
        });
        let mut entries: Vec<&PlatformImage> = images.iter().collect();
        entries.sort_by_key(|i| i.image.platform.sort_key());
        index.manifests = entries.iter().map(|i| i.descriptor.clone()).collect();
        if !docker {
            index.annotations = annotations_for(&options.annotations, "index");
        }
        let d = shared
            .layout
            .write_blob_bytes(index.media_type().as_str(), &index.to_bytes())
            .map_err(|e| BuildError::store("writing the image index", e))?;
        (d.digest, d.media_type, d.size.max(0) as u64)
    };
    let descriptor = Descriptor::new(media_type.clone(), top.clone(), size);
    let mut tags = Vec::new();
    for t in &options.tags {
        let tag = match &options.output {
            Output::Store => {
                let r: Reference =
                    t.parse()
                        .map_err(|e: strata_spec::SpecError| BuildError::InvalidOption {
                            option: "tag".into(),
                            reason: format!("{t}: {e}"),
                        })?;
                strata_store::store_tag(&r)
            }
            Output::Layout(_) => t.clone(),
        };
        shared
            .layout
            .set_tag(Some(&tag), &descriptor)
            .map_err(|e| BuildError::store(format!("tagging {tag}"), e))?;
        tags.push(tag);
    }
    if tags.is_empty() {
        shared
            .layout
            .set_tag(None, &descriptor)
            .map_err(|e| BuildError::store("recording the result in index.json", e))?;
    }
    let mut built: Vec<BuiltImage> = images.into_iter().map(|i| i.image).collect();
    built.sort_by_key(|i| i.platform.sort_key());
    Ok(BuildResult {
        digest: top,
        media_type,
        size,
        layout: shared.layout.root().to_path_buf(),
        tags,
        images: built,
    })
}

/// An image source over one document of a layout, by digest (a build result, tagged or not).
pub struct ResultSource {
    layout: OciLayout,
    digest: Digest,
    media_type: MediaType,
}

impl ResultSource {
    pub fn new(result: &BuildResult) -> Result<ResultSource, BuildError> {
        Ok(ResultSource {
            layout: OciLayout::open(&result.layout)
                .map_err(|e| BuildError::store("opening the build result's layout", e))?,
            digest: result.digest.clone(),
            media_type: result.media_type.clone(),
        })
    }
}

#[async_trait]
impl ImageSource for ResultSource {
    fn describe(&self) -> String {
        format!("oci:{}@{}", self.layout.root().display(), self.digest)
    }
    async fn manifest(&self, digest: Option<&Digest>) -> Result<RawManifest, ImageError> {
        let (d, mt) = match digest {
            None => (self.digest.clone(), self.media_type.clone()),
            Some(d) => (d.clone(), MediaType::default()),
        };
        let bytes = self.layout.read_blob(&d, MAX_MANIFEST_BYTES)?;
        Ok(RawManifest {
            bytes,
            media_type: mt,
            digest: d,
        })
    }
    async fn blob(&self, descriptor: &Descriptor) -> Result<BlobReader, ImageError> {
        let (file, _) = self.layout.open_blob(&descriptor.digest)?;
        Ok(Box::pin(tokio::fs::File::from_std(file)))
    }
}

/// Options of [`push_result`].
#[derive(Debug, Clone, Default)]
pub struct PushOptions {
    /// The name the result gets at the destination (registry tag, layout tag).
    pub tag: Option<String>,
    /// Convert on the way (`None` keeps the built bytes and digests).
    pub format: Option<strata_copy::ManifestFormat>,
    /// Only these platforms (empty: all).
    pub platforms: Vec<Platform>,
}

/// Copy a build result from its layout to any sink (`oci:`, `oci-archive:`,
/// `docker-archive:`, a registry): every platform, digests kept unless converting.
pub async fn push_result(
    result: &BuildResult,
    sink: &dyn ImageSink,
    options: &PushOptions,
) -> Result<strata_copy::CopyReport, BuildError> {
    let source = ResultSource::new(result)?;
    let copy = strata_copy::CopyOptions {
        selection: if options.platforms.is_empty() {
            strata_copy::Selection::All
        } else {
            strata_copy::Selection::Platforms(options.platforms.clone())
        },
        format: options.format,
        tag: options.tag.clone(),
        expected_digest: Some(result.digest.clone()),
        ..Default::default()
    };
    strata_copy::copy_image(&source, sink, &copy)
        .await
        .map_err(|source| BuildError::Push {
            source: Box::new(source),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotation_scopes() {
        let mut all = BTreeMap::new();
        all.insert("a".to_string(), "1".to_string());
        all.insert("manifest:m".to_string(), "2".to_string());
        all.insert("index:i".to_string(), "3".to_string());
        all.insert("org.x:y".to_string(), "4".to_string());
        let m = annotations_for(&all, "manifest");
        assert_eq!(m.keys().collect::<Vec<_>>(), ["a", "m", "org.x:y"]);
        let i = annotations_for(&all, "index");
        assert_eq!(i.keys().collect::<Vec<_>>(), ["a", "i", "org.x:y"]);
    }
}
