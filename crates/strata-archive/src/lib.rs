//! strata-archive: layer bytes.
//!
//! - Compression: [`Compression`], [`CompressWriter`], [`ParallelGzEncoder`] (pigz-style,
//!   reproducible for any worker count), [`decompress`], [`decompress_detect`] (gzip
//!   multi-member, zstd with a window cap, xz with a memory cap, bzip2), [`PipeReader`]
//!   (decode on another thread).
//! - Digests: [`HashingWriter`], [`HashingReader`], [`LayerWriter`] → [`LayerInfo`]
//!   (digest, DiffId, sizes in one pass), [`LayerReader`] → [`LayerDigests`].
//! - Writing: [`TarBuilder`] (deterministic PAX tar: long names, big files, xattrs,
//!   whiteouts, the Windows layer layout), [`write_tree`] (COPY/ADD), [`write_overlay_diff`]
//!   (RUN).
//! - Reading: [`TarReader`] (streaming, bounded metadata, refuses ambiguous archives) and
//!   [`extract_layer`] (safe extraction beneath a root through
//!   `openat2(RESOLVE_IN_ROOT)`, applying or converting OCI whiteouts).
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
mod tarread;
mod tarwrite;
pub mod xattr;

pub use compress::{
    CompressWriter, Compression, DetectedFormat, GZIP_BLOCK_BYTES, GZIP_SEGMENT_MIN_BYTES,
    ParallelGzEncoder, PipeReader, SegmentCapture, XZ_MAX_MEMORY, ZSTD_MAX_WINDOW_LOG,
    cancelled_error, decompress, decompress_detect, default_workers, detect_format,
};
pub use error::{ArchiveError, Result};
pub use extract::{
    DEFAULT_MIN_UNCOMPRESSED, DEFAULT_UNCOMPRESSED_RATIO, ExtractOptions, ExtractStats, Ownership,
    TargetPolicy, UncompressedLimit, WhiteoutMode, add_dir_mode_bits, extract_layer,
};
pub use hash::{
    HashingReader, HashingWriter, LayerDigests, LayerInfo, LayerReader, LayerWriter, Threading,
};
pub use tarread::{
    EntryData, EntryKind, MAX_LONG_NAME_BYTES, MAX_PAX_BYTES, TarEntry, TarReader, Trailing,
};
pub use tarwrite::{
    DeviceKind, EntryMeta, LayerLayout, NameMode, OwnerOverride, TarBuilder, TarOptions,
    WINDOWS_RAWSD, write_overlay_diff, write_tree,
};
