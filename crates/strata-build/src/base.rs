//! Base images: one read of the top manifest per name, the platform entry chosen by strata,
//! config and layers copied (verified) into the output layout.

use std::sync::Arc;

use strata_image::{ImageSink, ImageSource, RawManifest, read_blob_bytes};
use strata_spec::{
    Descriptor, Digest, ImageConfig, ImageIndex, ImageManifest, MAX_CONFIG_BYTES, Manifest,
    Platform,
};

use crate::BuildError;
use crate::engine::Shared;
use crate::layer::LayerRef;
use crate::progress::{BuildEvent, LayerOrigin};

/// A base name's top document, read once per build.
pub(crate) struct BaseTop {
    pub source: Arc<dyn ImageSource>,
    pub top: RawManifest,
    pub parsed: Manifest,
}

/// The image of a base for one platform, its blobs in the output layout.
#[derive(Debug)]
pub(crate) struct BaseImage {
    pub manifest_digest: Digest,
    pub config: ImageConfig,
    pub layers: Vec<LayerRef>,
}

/// Choose the entry of `index` for `wanted`. Never guesses: no match is an error naming what
/// is there; several Windows versions without an `os.version` in `wanted` is an error too.
pub(crate) fn select_entry(
    image: &str,
    index: &ImageIndex,
    wanted: &Platform,
) -> Result<Descriptor, BuildError> {
    let manifests: Vec<&Descriptor> = index
        .manifests
        .iter()
        .filter(|d| d.media_type.is_manifest())
        .collect();
    let candidates: Vec<Descriptor> = manifests
        .iter()
        .filter(|d| d.platform.as_ref().is_some_and(|p| wanted.matches(p)))
        .map(|d| (*d).clone())
        .collect();
    if candidates.is_empty() {
        return Err(BuildError::PlatformNotFound {
            image: image.to_string(),
            wanted: Box::new(wanted.clone()),
            available: Descriptor::platform_list(manifests.iter().copied()),
        });
    }
    if wanted.os == "windows" && wanted.os_version.is_none() {
        let mut versions: Vec<String> = candidates
            .iter()
            .filter_map(|d| d.platform.as_ref()?.os_version.clone())
            .collect();
        versions.sort();
        versions.dedup();
        if versions.len() > 1 {
            let mut example = wanted.clone();
            example.os_version = versions.last().cloned();
            return Err(BuildError::AmbiguousPlatform {
                image: image.to_string(),
                wanted: Box::new(wanted.clone()),
                candidates: Descriptor::platform_list(candidates.iter()),
                example: example.to_string(),
            });
        }
    }
    strata_copy::select_platform(&candidates, wanted)
        .cloned()
        .ok_or_else(|| BuildError::PlatformNotFound {
            image: image.to_string(),
            wanted: Box::new(wanted.clone()),
            available: Descriptor::platform_list(manifests.iter().copied()),
        })
}

impl Shared<'_> {
    pub(crate) async fn base_top(&self, name: &str) -> Result<Arc<BaseTop>, BuildError> {
        let cell = {
            let mut map = self.bases.lock().map_err(|_| poisoned())?;
            Arc::clone(map.entry(name.to_string()).or_default())
        };
        cell.get_or_try_init(|| async {
            let source: Arc<dyn ImageSource> = Arc::from(
                self.resolver
                    .open(name)
                    .await
                    .map_err(|e| BuildError::image(name, "cannot open", e))?,
            );
            let top = source
                .manifest(None)
                .await
                .map_err(|e| BuildError::image(name, "reading its manifest", e))?;
            let parsed = top
                .parse()
                .map_err(|e| BuildError::image(name, "parsing its manifest", e))?;
            Ok(Arc::new(BaseTop {
                source,
                top,
                parsed,
            }))
        })
        .await
        .cloned()
    }

    /// The base `name` for `wanted`, with its config and layers in the output layout.
    pub(crate) async fn base_image(
        &self,
        name: &str,
        wanted: &Platform,
    ) -> Result<Arc<BaseImage>, BuildError> {
        self.emit(BuildEvent::BaseResolving {
            platform: wanted.clone(),
            image: name.to_string(),
        });
        let top = self.base_top(name).await?;
        let (manifest_raw, manifest) = match &top.parsed {
            Manifest::Index(index) => {
                let entry = select_entry(name, index, wanted)?;
                let mut raw = top
                    .source
                    .manifest(Some(&entry.digest))
                    .await
                    .map_err(|e| {
                        BuildError::image(name, format!("reading manifest {}", entry.digest), e)
                    })?;
                raw.media_type = entry.media_type.clone();
                match raw.parse().map_err(|e| {
                    BuildError::image(name, format!("parsing manifest {}", entry.digest), e)
                })? {
                    Manifest::Image(m) => (raw, m),
                    Manifest::Index(_) => {
                        return Err(BuildError::image(
                            name,
                            format!("entry {} for {wanted}", entry.digest),
                            strata_image::ImageError::Unsupported(
                                "nested indexes are not supported as base images".into(),
                            ),
                        ));
                    }
                }
            }
            Manifest::Image(m) => (top.top.clone(), m.clone()),
        };
        let key = (name.to_string(), manifest_raw.digest.to_string());
        let cell = {
            let mut map = self.images.lock().map_err(|_| poisoned())?;
            Arc::clone(map.entry(key).or_default())
        };
        let image = cell
            .get_or_try_init(|| self.fetch_base(name, &top, &manifest_raw, &manifest))
            .await?
            .clone();
        // A single-platform base (or a mislabelled index entry) must really be the platform
        // asked for: never build an image whose label lies (buildah's trap).
        let have = image.config.platform();
        if !wanted.matches(&have) {
            return Err(BuildError::PlatformNotFound {
                image: name.to_string(),
                wanted: Box::new(wanted.clone()),
                available: have.to_string(),
            });
        }
        self.emit(BuildEvent::BaseResolved {
            platform: wanted.clone(),
            image: name.to_string(),
            manifest: image.manifest_digest.clone(),
        });
        Ok(image)
    }

    async fn fetch_base(
        &self,
        name: &str,
        top: &BaseTop,
        raw: &RawManifest,
        manifest: &ImageManifest,
    ) -> Result<Arc<BaseImage>, BuildError> {
        let config_bytes = read_blob_bytes(top.source.as_ref(), &manifest.config, MAX_CONFIG_BYTES)
            .await
            .map_err(|e| {
                BuildError::image(
                    name,
                    format!("reading config {}", manifest.config.digest),
                    e,
                )
            })?;
        let config = ImageConfig::parse(&config_bytes).map_err(|e| {
            BuildError::image(
                name,
                format!("config {}", manifest.config.digest),
                strata_image::ImageError::Spec(e),
            )
        })?;
        if config.rootfs.diff_ids.len() != manifest.layers.len() {
            return Err(BuildError::image(
                name,
                format!(
                    "manifest {} has {} layers but its config lists {} diff_ids",
                    raw.digest,
                    manifest.layers.len(),
                    config.rootfs.diff_ids.len()
                ),
                strata_image::ImageError::Unsupported("inconsistent image".into()),
            ));
        }
        let copies = manifest.layers.iter().map(|d| async move {
            let size = d
                .size_u64()
                .map_err(|e| BuildError::image(name, format!("layer {}", d.digest), e.into()))?;
            if self.layout.has_blob(&d.digest, Some(size)) {
                return Ok(());
            }
            let stream =
                top.source.blob(d).await.map_err(|e| {
                    BuildError::image(name, format!("reading layer {}", d.digest), e)
                })?;
            self.sink
                .put_blob(d, stream)
                .await
                .map_err(|e| BuildError::image(name, format!("copying layer {}", d.digest), e))
        });
        futures::future::try_join_all(copies).await?;
        let layers = manifest
            .layers
            .iter()
            .zip(&config.rootfs.diff_ids)
            .map(|(d, diff_id)| LayerRef {
                digest: d.digest.clone(),
                diff_id: diff_id.clone(),
                size: d.size.max(0) as u64,
                media_type: d.media_type.clone(),
                origin: LayerOrigin::Base,
            })
            .collect();
        Ok(Arc::new(BaseImage {
            manifest_digest: raw.digest.clone(),
            config,
            layers,
        }))
    }
}

pub(crate) fn poisoned() -> BuildError {
    BuildError::Internal("a build task panicked while holding a lock".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_spec::MediaType;

    fn entry(p: &str) -> Descriptor {
        let mut d = Descriptor::of_bytes(MediaType::OCI_MANIFEST, p.as_bytes());
        d.platform = Some(p.parse().unwrap());
        d
    }

    #[test]
    fn selects_or_explains() {
        let mut index = ImageIndex::new(MediaType::OCI_INDEX);
        index.manifests = vec![
            entry("linux/amd64"),
            entry("linux/arm64/v8"),
            entry("windows/amd64:10.0.17763.1757"),
            entry("windows/amd64:10.0.20348.2000"),
        ];
        let pick = |w: &str| select_entry("base", &index, &w.parse().unwrap());
        assert_eq!(
            pick("linux/arm64").unwrap().digest,
            index.manifests[1].digest
        );
        assert_eq!(
            pick("windows/amd64:10.0.17763.1757").unwrap().digest,
            index.manifests[2].digest
        );
        assert_eq!(
            pick("windows/amd64:10.0.20348").unwrap().digest,
            index.manifests[3].digest
        );
        let err = pick("linux/s390x").unwrap_err().to_string();
        assert!(
            err.contains("base") && err.contains("linux/s390x") && err.contains("linux/arm64/v8"),
            "{err}"
        );
        let err = pick("windows/amd64").unwrap_err().to_string();
        assert!(err.contains("matches several"), "{err}");
    }
}
