//! Transport names and the copy pipeline.
//!
//! [`ImageName`] parses skopeo's `transport:reference` spelling. [`copy_image`] moves an image
//! or index from any [`ImageSource`] to any [`ImageSink`]: it selects platforms, converts
//! between OCI and Docker schema 2 when asked (otherwise bytes and digests are kept exactly),
//! transfers blobs concurrently largest first, skips blobs the destination has or can mount,
//! and writes manifests last — children before their index, the tagged document at the very
//! end — so a failed copy never leaves a tag pointing at missing content.
//!
//! ```no_run
//! # async fn f(src: &dyn strata_image::ImageSource, dst: &dyn strata_image::ImageSink) {
//! use strata_copy::{copy_image, CopyOptions, Selection};
//! let options = CopyOptions { selection: Selection::All, tag: Some("v1".into()), ..Default::default() };
//! let report = copy_image(src, dst, &options).await.unwrap();
//! println!("{}", report.digest);
//! # }
//! ```

mod convert;
mod pipeline;
mod transport;

pub use convert::{ManifestFormat, convert_manifest};
pub use pipeline::{
    CopiedManifest, CopyOptions, CopyReport, DEFAULT_CONCURRENCY, Progress, ProgressEvent,
    Selection, check_single_platform, copy_image, select_platform,
};
pub use transport::ImageName;

use strata_image::ImageError;
use strata_spec::Platform;

/// Errors of the copy pipeline.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CopyError {
    #[error("invalid image name {name:?}: {reason}")]
    InvalidName { name: String, reason: String },
    #[error("{source_name}: no image for platform {wanted} (available: {available})")]
    PlatformNotFound {
        source_name: String,
        wanted: Box<Platform>,
        available: String,
    },
    /// A single image was asked for with a platform its config does not have.
    #[error("{source_name} is a single-platform image for {actual}, not {wanted}")]
    PlatformMismatch {
        source_name: String,
        wanted: Box<Platform>,
        actual: Box<Platform>,
    },
    #[error("{what}")]
    Unsupported { what: String },
    #[error("{context}")]
    Image {
        context: String,
        #[source]
        source: ImageError,
    },
    #[error("nested indexes deeper than {0} levels")]
    TooDeep(usize),
}

impl CopyError {
    pub(crate) fn image(context: impl Into<String>, source: ImageError) -> Self {
        CopyError::Image {
            context: context.into(),
            source,
        }
    }
}
