//! Local image storage.
//!
//! [`OciLayout`] is an OCI image layout on disk with the guarantees the rest of strata relies
//! on: blobs are written to a unique temp file inside the layout, verified while streaming,
//! fsynced and renamed into place (a blob under its final name always has that digest);
//! `index.json` is read-modify-written under an exclusive `flock` and replaced atomically, so
//! concurrent writers keep each other's tags and readers never see a torn file; `gc` waits for
//! writers (they hold a shared lock for as long as they write) and removes only blobs no tag
//! reaches.
//!
//! Transports built on it implement [`strata_image::ImageSource`] / [`strata_image::ImageSink`]:
//! [`LayoutSource`] / [`LayoutSink`] (`oci:`, and the default store for bare names),
//! [`DirSource`] / [`DirSink`] (skopeo's `dir:`), and the archive transports
//! [`OciArchiveSource`] / [`OciArchiveSink`], [`DockerArchiveSource`] / [`DockerArchiveSink`].
//!
//! ```no_run
//! let layout = strata_store::OciLayout::create_or_open("/tmp/layout".as_ref()).unwrap();
//! for (tag, descriptor) in layout.list().unwrap() {
//!     println!("{} {}", tag.unwrap_or_default(), descriptor.digest);
//! }
//! ```

mod archive;
mod dir;
mod error;
mod layout;
mod transport;

pub use archive::{DockerArchiveSink, DockerArchiveSource, OciArchiveSink, OciArchiveSource};
pub use dir::{DirSink, DirSource};
pub use error::StoreError;
pub use layout::{GcReport, MAX_INDEX_BYTES, OciLayout, WriterGuard};
pub use transport::{LayoutSink, LayoutSource};

use std::path::PathBuf;

/// Where bare image names live: `$XDG_DATA_HOME/strata`, else `~/.local/share/strata`.
pub fn default_store_path() -> Result<PathBuf, StoreError> {
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(x).join("strata"));
    }
    match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        Some(h) => Ok(PathBuf::from(h).join(".local/share/strata")),
        None => Err(StoreError::NoStorePath),
    }
}
