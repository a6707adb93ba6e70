//! OCI ⇄ Docker schema 2 manifest conversion (`--format oci|v2s2`).

use strata_spec::{Descriptor, ImageIndex, ImageManifest, Manifest, MediaType};

use crate::CopyError;

/// The manifest format a copy writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestFormat {
    Oci,
    V2s2,
}

impl std::str::FromStr for ManifestFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "oci" => Ok(ManifestFormat::Oci),
            "v2s2" | "docker" => Ok(ManifestFormat::V2s2),
            _ => Err(format!("unknown manifest format {s:?} (oci or v2s2)")),
        }
    }
}

fn layer_type(d: &Descriptor, format: ManifestFormat) -> Result<MediaType, CopyError> {
    let mt = &d.media_type;
    Ok(match format {
        ManifestFormat::Oci => match mt.as_str() {
            MediaType::DOCKER_LAYER_GZIP => MediaType::new(MediaType::OCI_LAYER_GZIP),
            MediaType::DOCKER_LAYER_FOREIGN_GZIP => {
                MediaType::new(MediaType::OCI_LAYER_NONDISTRIBUTABLE_GZIP)
            }
            "application/vnd.docker.image.rootfs.diff.tar" => MediaType::new(MediaType::OCI_LAYER),
            _ => mt.clone(),
        },
        ManifestFormat::V2s2 => match mt.as_str() {
            MediaType::OCI_LAYER_GZIP => MediaType::new(MediaType::DOCKER_LAYER_GZIP),
            MediaType::OCI_LAYER_NONDISTRIBUTABLE_GZIP => {
                MediaType::new(MediaType::DOCKER_LAYER_FOREIGN_GZIP)
            }
            MediaType::OCI_LAYER => MediaType::new("application/vnd.docker.image.rootfs.diff.tar"),
            MediaType::OCI_LAYER_ZSTD | MediaType::OCI_LAYER_NONDISTRIBUTABLE_ZSTD => {
                return Err(CopyError::Unsupported {
                    what: format!(
                        "layer {} is zstd-compressed, which Docker schema 2 cannot describe (copy with --format oci)",
                        d.digest
                    ),
                });
            }
            _ => mt.clone(),
        },
    })
}

/// Rewrite a manifest or index into `format`. Returns `None` when it already is in that
/// format (the original bytes must then be kept). For an index, `child_map` gives the new
/// descriptor of each converted child.
pub fn convert_manifest(
    manifest: &Manifest,
    format: ManifestFormat,
    child_map: &dyn Fn(&Descriptor) -> Option<Descriptor>,
) -> Result<Option<Vec<u8>>, CopyError> {
    match manifest {
        Manifest::Image(m) => {
            let target = match format {
                ManifestFormat::Oci => MediaType::OCI_MANIFEST,
                ManifestFormat::V2s2 => MediaType::DOCKER_MANIFEST,
            };
            if m.media_type().as_str() == target {
                return Ok(None);
            }
            let mut out = ImageManifest::new(target, m.config.clone());
            out.config.media_type = MediaType::new(match format {
                ManifestFormat::Oci => MediaType::OCI_CONFIG,
                ManifestFormat::V2s2 => MediaType::DOCKER_CONFIG,
            });
            for l in &m.layers {
                let mut l = l.clone();
                l.media_type = layer_type(&l, format)?;
                if format == ManifestFormat::V2s2 {
                    l.annotations.clear();
                }
                out.layers.push(l);
            }
            if format == ManifestFormat::Oci {
                out.annotations = m.annotations.clone();
                out.subject = m.subject.clone();
            }
            Ok(Some(out.to_bytes()))
        }
        Manifest::Index(i) => {
            let target = match format {
                ManifestFormat::Oci => MediaType::OCI_INDEX,
                ManifestFormat::V2s2 => MediaType::DOCKER_MANIFEST_LIST,
            };
            let mut changed = i.media_type().as_str() != target;
            let mut out = ImageIndex::new(target);
            for c in &i.manifests {
                let new = child_map(c).unwrap_or_else(|| c.clone());
                changed |= new != *c;
                let mut new = new;
                if format == ManifestFormat::V2s2 {
                    new.annotations.clear();
                }
                out.manifests.push(new);
            }
            if format == ManifestFormat::Oci {
                out.annotations = i.annotations.clone();
                out.subject = i.subject.clone();
            }
            Ok(if changed { Some(out.to_bytes()) } else { None })
        }
    }
}
