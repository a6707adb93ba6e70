//! strata-archive: layer bytes.
//!
//! - [`Compression`], [`CompressWriter`], [`ParallelGzEncoder`] (pigz-style), [`decompress`],
//!   [`decompress_detect`] (gzip multi-member, zstd with window cap, xz, bzip2).
//! - [`HashingWriter`], [`HashingReader`], [`LayerWriter`] → [`LayerInfo`] (digest, diff_id, sizes).
//! - [`TarBuilder`]: deterministic tar with PAX records (long names, big sizes, xattrs),
//!   whiteouts, [`write_tree`], [`write_overlay_diff`], and the Windows layer layout.
//! - [`extract_layer`]: safe extraction beneath a root through `openat2(RESOLVE_IN_ROOT)`,
//!   applying or converting OCI whiteouts.
//!
//! ```no_run
//! use strata_archive::{Compression, LayerWriter, TarBuilder, TarOptions, write_tree};
//! let file = std::fs::File::create("/tmp/layer.tar.gz")?;
//! let mut tar = TarBuilder::new(LayerWriter::new(file, Compression::default())?, TarOptions::default());
//! write_tree(std::path::Path::new("context"), "app", &mut tar)?;
//! let (info, _file) = tar.finish()?.finish()?;
//! println!("{} {}", info.digest, info.diff_id);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod compress;
mod error;
mod extract;
mod hash;
mod tarwrite;

pub use compress::{
    CompressWriter, Compression, DetectedFormat, GZIP_BLOCK_BYTES, ParallelGzEncoder,
    ZSTD_MAX_WINDOW_LOG, decompress, decompress_detect, default_workers, detect_format,
};
pub use error::{ArchiveError, Result};
pub use extract::{
    ExtractOptions, ExtractStats, Ownership, TargetPolicy, WhiteoutMode, extract_layer,
};
pub use hash::{HashingReader, HashingWriter, LayerInfo, LayerWriter};
pub use tarwrite::{
    DeviceKind, EntryMeta, LayerLayout, NameMode, OwnerOverride, TarBuilder, TarOptions,
    WINDOWS_RAWSD, write_overlay_diff, write_tree,
};
