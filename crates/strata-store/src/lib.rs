//! Local image storage: OCI image layouts, the default store, and the `oci:`, `oci-archive:`,
//! `docker-archive:` and `dir:` transports.
//!
//! [`OciLayout`] is an OCI image layout on disk with the guarantees the rest of strata relies
//! on (RELIABILITY rules 3–6):
//! - blobs are written to a unique temp file inside the layout (`.strata/tmp/`), size-checked
//!   (abort at size+1) and hashed while streaming, fsynced and renamed into place, then the
//!   directory is fsynced: a file under `blobs/<alg>/<hex>` always has that digest, and a
//!   failed write (mismatch, ENOSPC, cancellation) leaves nothing behind;
//! - blobs, `index.json` and `oci-layout` are opened with `openat2(RESOLVE_BENEATH |
//!   RESOLVE_NO_SYMLINKS)`, regular files only, and read with size caps: a layout whose
//!   `blobs/sha256/<d>` is a symlink to `/etc/shadow` is refused;
//! - `index.json` is read-modify-written under an exclusive `flock` (`.strata/index.lock`)
//!   and replaced atomically, so concurrent writers keep each other's tags and readers never
//!   see a torn file;
//! - [`OciLayout::gc`] takes `.strata/gc.lock` exclusively while every writer holds it
//!   shared ([`WriterGuard`]) until its blobs are referenced: in-flight writes survive, temp
//!   files of dead writers are removed, and so are the staging directories of killed archive
//!   writers noted in `.strata/staging/` ([`OciArchiveSink::create_noted_in`]);
//! - every sink counts its running blob writes: [`strata_image::ImageSink::abandon`] (a failed
//!   or interrupted copy) refuses new ones and returns once each has removed its temp file;
//! - archive sinks stage in a hidden directory beside the target, locked (`flock`) by the
//!   live writer; the next sink for that target removes the ones whose writer is dead.
//!
//! Tags follow skopeo/umoci: the `org.opencontainers.image.ref.name` annotation of an
//! `index.json` entry; setting a tag replaces its previous entry; untagged entries are
//! allowed.
//!
//! # The default store
//!
//! Bare image names (`busybox`, `localhost/app:v1`) live in one layout at
//! [`default_store_path`] (`$XDG_DATA_HOME/strata`, else `~/.local/share/strata`). Its tags are
//! the full normalised reference ([`store_tag`]: `docker.io/library/busybox:latest`), stored
//! in `org.opencontainers.image.ref.name` itself, so `skopeo copy
//! oci:~/.local/share/strata:docker.io/library/busybox:latest …` reads them too. The
//! image-spec grammar for that annotation (a SHOULD: `alphanum (separator alphanum)*` per `/`
//! component, separators `-._:@+` and `--`) covers registry hosts with ports, paths, tags and
//! digests; only rare Docker names fall outside it (`a__b`, `a---b`, tags like `v1.` or
//! `v1_-x` with adjacent separators or a trailing one). Those are stored verbatim too
//! (strata resolves them; other tools may refuse to address them) rather than in a second,
//! strata-only annotation that other tools would not see at all.
//! [`ref_name_conforms`] tells which case a name is.
//!
//! # Transports
//!
//! All implement [`strata_image::ImageSource`] / [`strata_image::ImageSink`]:
//! - `oci:PATH[:TAG]`: [`LayoutSource::open`], [`LayoutSink::create`]; default store:
//!   [`LayoutSource::from_store`], [`LayoutSink::to_store`];
//! - `oci-archive:PATH[:TAG]`: [`OciArchiveSource::open`], [`OciArchiveSink::create`];
//! - `docker-archive:PATH[:REF]`: [`DockerArchiveSource::open`], [`DockerArchiveSink::create`];
//! - `dir:PATH`: [`DirSource::open`], [`DirSink::create`].
//!
//! The core API ([`OciLayout`]) is synchronous (`std::fs`); the trait impls stream blobs
//! through a blocking writer thread fed by a bounded channel of 1 MiB chunks, which circulate
//! between reader and writer (no allocation per chunk). Blobs of 4 MiB and more are written
//! with `O_DIRECT` where the filesystem allows it: they are fsynced at once anyway, and the
//! page-cache copy was the largest cost of a pull after hashing (they are then not in the
//! page cache for a reader that follows; they are on disk, fsynced).
//!
//! ```no_run
//! use strata_store::OciLayout;
//! let layout = OciLayout::create_or_open("/tmp/layout".as_ref())?;
//! let config = layout.write_blob_bytes("application/vnd.oci.image.config.v1+json", b"{}")?;
//! for (tag, descriptor) in layout.list()? {
//!     println!("{} {}", tag.unwrap_or_default(), descriptor.digest);
//! }
//! layout.gc()?; // removes `config` again: nothing references it
//! # Ok::<(), strata_store::StoreError>(())
//! ```

mod archive;
mod dir;
mod error;
mod layout;
mod staging;
mod transport;

pub use archive::{DockerArchiveSink, DockerArchiveSource, OciArchiveSink, OciArchiveSource};
pub use dir::{DirSink, DirSource};
pub use error::StoreError;
pub use layout::{
    BlobWriter, GcReport, MAX_INDEX_BYTES, NewBlob, OciLayout, WriterGuard, ref_name_conforms,
    valid_tag,
};
pub use staging::STALE_UNLOCKED_AGE;
pub use transport::{LayoutSink, LayoutSource};

use std::path::PathBuf;

use strata_spec::Reference;

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

/// The default store, created on first use.
pub fn default_store() -> Result<OciLayout, StoreError> {
    OciLayout::create_or_open(&default_store_path()?)
}

/// The tag an image gets in the default store: its full normalised name and tag
/// (`busybox` → `docker.io/library/busybox:latest`); a digest in the reference is not part
/// of the tag (a digest-only reference is stored under the bare name).
pub fn store_tag(reference: &Reference) -> String {
    match reference.tag() {
        Some(tag) => format!("{}:{tag}", reference.name()),
        None => reference.name(),
    }
}
