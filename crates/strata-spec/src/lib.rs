//! The OCI image-spec and Docker v2 (schema 2) data model, with no I/O.
//!
//! Main types: [`Digest`] (validated `sha256:`/`sha512:` content address) and [`DiffId`]
//! (digest of an uncompressed layer), [`MediaType`], [`Descriptor`], [`ImageManifest`],
//! [`ImageIndex`] (OCI index or Docker manifest list), [`ImageConfig`], [`Platform`] and
//! [`Reference`] (registry image names with Docker Hub normalisation).
//!
//! Documents are parsed for inspection only: the bytes read from a registry or layout are the
//! truth and are what gets stored and copied, because re-serialising changes the digest.
//! [`Manifest::parse`] applies the ambiguity rules of CVE-2021-41190: a document may not be both
//! an index and an image manifest, and its `mediaType` must agree with the media type the
//! transport declared.
//!
//! ```
//! use strata_spec::{Digest, Platform, Reference};
//! let r: Reference = "busybox".parse().unwrap();
//! assert_eq!(r.to_string(), "docker.io/library/busybox:latest");
//! let p: Platform = "linux/arm64".parse().unwrap();
//! assert!(p.matches(&"linux/arm64/v8".parse().unwrap()));
//! assert!("sha256:../../x".parse::<Digest>().is_err());
//! ```

mod config;
mod descriptor;
mod digest;
mod error;
mod manifest;
mod media_type;
mod platform;
mod reference;
mod user;

pub use config::{HealthConfig, History, ImageConfig, RootFs, RuntimeConfig};
pub use descriptor::Descriptor;
pub use digest::{Algorithm, DiffId, Digest, DigestHasher};
pub use error::SpecError;
pub use manifest::{ImageIndex, ImageManifest, MAX_INDEX_ENTRIES, Manifest};
pub use media_type::{LayerCompression, MediaType};
pub use platform::{KNOWN_OSES, Platform};
pub use reference::{DOCKER_HUB_REGISTRY, Reference, edit_distance};
pub use user::{ExecUser, resolve_user};

/// Largest manifest, index or config document read from outside, in bytes.
///
/// containers/image uses 4 MiB (made for CVE-2020-1702); the distribution spec says registries
/// SHOULD accept manifests of at least 4 MB. Callers may raise it through their own options.
pub const MAX_MANIFEST_BYTES: u64 = 4 * 1024 * 1024;

/// Largest image config document read from outside, in bytes (same reasoning as manifests).
pub const MAX_CONFIG_BYTES: u64 = 4 * 1024 * 1024;
