//! strata's build engine: Containerfile → build plan → layers → images, for every target
//! platform in one run, into an OCI layout (the local store by default).
//!
//! - [`build`] takes [`BuildOptions`], a [`BaseResolver`] (how `FROM` names are opened: the
//!   CLI gives registry + store access, tests use [`LocalResolver`]) and an optional
//!   [`BuildProgress`] receiving [`BuildEvent`]s; it returns a serializable [`BuildResult`].
//! - [`push_result`] copies a result to any [`strata_image::ImageSink`].
//! - [`prune_cache`] trims the build cache.
//! - [`RunExecutor`]: where `RUN` plugs in (the stage's rootfs in, an overlay upper dir out).
//! - [`PlatformGroup`]s ([`BuildOptions::groups`]) build platforms from different
//!   Containerfiles, contexts or build args into one result (Linux from one file, each
//!   Windows version on its own base from another); [`scoped_value`] / [`scoped_args`] pick
//!   per-platform values by [`PlatformPattern`], [`read_build_file`] reads bake-style YAML.
//!
//! How it works:
//! - **Plan.** The Containerfile is parsed once; each platform expands `FROM` lines with its
//!   own `TARGET*`/`BUILD*` args and builds the target stage, pulling in only the stages it
//!   needs (`FROM stage`, `COPY --from`). Platforms run concurrently.
//! - **Bases.** A base's top manifest is read once per build; the platform entry is chosen by
//!   strata (`windows/amd64:10.0.17763.1757` matches on os.version); a base without the
//!   platform is an error naming the base, the platform and what it has. Base blobs are copied
//!   into the output layout, verified.
//! - **Steps.** Metadata instructions edit the config. `COPY`/`ADD` glob their sources (Go
//!   `filepath.Match` per component), honour `.dockerignore` (an explicitly named ignored
//!   source is an error), never leave the context (`openat2(RESOLVE_IN_ROOT)`, symlinks copied
//!   as symlinks), apply Docker's destination rules against an index of the stage's rootfs
//!   read from layer headers, and stream the sorted entries through a deterministic tar writer
//!   and the parallel gzip encoder straight into the layout. `RUN` goes to a
//!   [`RunExecutor`]; without one it is an error naming its line.
//! - **Cache.** Every step has a key computed by strata from what it reads (parent key,
//!   expanded instruction, file content hashes and metadata); context hashes are reused across
//!   builds while a file's stat is unchanged, so a rebuild with nothing changed reads no file
//!   contents. Files never seen before are hashed while their layer is written (one read per
//!   file), and the step is recorded under its key then. Identical layer content is one blob,
//!   within a build (across platforms) and across builds. The cache lives beside the output
//!   layout (`<layout>/.strata/build-cache`); its layers are the layout's blobs. An entry whose
//!   blob was garbage-collected is a miss.
//! - **Reproducible.** Same inputs give the same digests: sorted entries, owners 0:0 for
//!   context files, no atime/ctime, pinned compression, and with `source_date_epoch` all times
//!   clamped (base layers and history untouched).
//!
//! ```no_run
//! # async fn f() -> Result<(), strata_build::BuildError> {
//! use strata_build::{BuildOptions, ContainerfileSource, LocalResolver, Output, build};
//! let options = BuildOptions {
//!     containerfile: ContainerfileSource::Path("app/Containerfile".into()),
//!     context: "app".into(),
//!     platforms: vec!["linux/amd64".parse().unwrap(), "linux/arm64".parse().unwrap()],
//!     tags: vec!["app:1".into()],
//!     output: Output::Layout("/tmp/out".into()),
//!     ..Default::default()
//! };
//! let result = build(&options, &LocalResolver::default(), None).await?;
//! println!("{}", serde_json::to_string(&result).unwrap());
//! # Ok(()) }
//! ```

mod base;
mod buildfile;
mod cache;
mod copyplan;
mod dirdiff;
mod engine;
mod error;
mod fetch;
mod gather;
mod glob;
mod groups;
mod hashcache;
mod layer;
mod layerdirs;
mod options;
mod output;
mod progress;
mod resolver;
mod result;
mod run;
mod runmount;
mod runstep;
mod sandbox;
mod segments;
mod source;
mod steps;
mod time;
mod tree;

pub use buildfile::read_build_file;
pub use cache::{PruneKeep, PruneOptions, PruneReport, default_cache_dir, prune_cache};
pub use engine::build;
pub use error::{BuildError, Location};
pub use groups::{
    PlatformGroup, PlatformPattern, Scoped, check_scopes, default_containerfile, scoped_args,
    scoped_value,
};
pub use options::{
    BuildOptions, CachePolicy, CancelFlag, Compression, ContainerfileSource, ImageFormat,
    IndexMode, Output, SecretSource, Squash, read_build_arg_file,
};
pub use output::{PushOptions, ResultSource, push_result};
pub use progress::{BuildEvent, BuildProgress, LayerOrigin};
pub use resolver::{BaseResolver, LocalResolver};
pub use result::{BuildResult, BuiltImage, BuiltLayer};
pub use run::{
    Access, MountSpec, Network, OutputSink, Rootfs, RunExecutor, RunFailure, RunFailureKind,
    RunRequest,
};
pub use runstep::MAX_OUTPUT_LINE_BYTES;
pub use sandbox::{RootfsMode, SandboxExecutor};
