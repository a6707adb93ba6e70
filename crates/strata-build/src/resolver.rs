//! How base images (`FROM`, `COPY --from=<image>`) are found.

use std::path::PathBuf;

use async_trait::async_trait;
use strata_copy::ImageName;
use strata_image::{ImageError, ImageSource};
use strata_store::{LayoutSource, OciLayout, store_tag};

/// Opens the image a Containerfile names. The CLI provides one that reaches registries and
/// the local store; tests use [`LocalResolver`].
///
/// Contract: `open` returns a source positioned at the name (a tag or digest); the build
/// reads the top manifest once per build, picks the platform entry itself and verifies every
/// blob it copies (sources hand out unverified bytes).
#[async_trait]
pub trait BaseResolver: Send + Sync {
    async fn open(&self, image: &str) -> Result<Box<dyn ImageSource>, ImageError>;
}

/// Resolves `oci:PATH[:TAG]` names and bare names in a local store (default: the user's
/// store). Registry names (`docker://…`) are refused: registry access is the CLI's.
#[derive(Debug, Clone, Default)]
pub struct LocalResolver {
    /// The store bare names are looked up in; `None` = [`strata_store::default_store_path`].
    pub store: Option<PathBuf>,
}

#[async_trait]
impl BaseResolver for LocalResolver {
    async fn open(&self, image: &str) -> Result<Box<dyn ImageSource>, ImageError> {
        let name: ImageName = image
            .parse()
            .map_err(|e| ImageError::Unsupported(format!("{image}: {e}")))?;
        match name {
            ImageName::OciLayout { path, tag } => Ok(Box::new(
                LayoutSource::open(&path, tag.as_deref())
                    .map_err(|e| ImageError::transport(format!("opening {image}"), e))?,
            )),
            ImageName::Store(reference) => {
                let path = match &self.store {
                    Some(p) => p.clone(),
                    None => strata_store::default_store_path()
                        .map_err(|e| ImageError::transport("locating the local store", e))?,
                };
                let layout = OciLayout::open(&path)
                    .map_err(|e| ImageError::transport(format!("opening {}", path.display()), e))?;
                let tag = store_tag(&reference);
                // Resolve now so a missing image is "not found", not a later read error.
                layout
                    .resolve(Some(&tag))
                    .map_err(|_| ImageError::NotFound {
                        what: format!("image {image} (as {tag}) in the store {}", path.display()),
                    })?;
                Ok(Box::new(LayoutSource::new(layout, Some(&tag), tag.clone())))
            }
            other => Err(ImageError::Unsupported(format!(
                "{image}: {other:?} images are not reachable from this resolver"
            ))),
        }
    }
}
