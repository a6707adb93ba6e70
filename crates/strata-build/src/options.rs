//! What a build is asked to do.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use strata_archive::Compression;
use strata_spec::Platform;

use crate::BuildError;
use crate::run::RunExecutor;

/// Where the Containerfile comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum ContainerfileSource {
    /// A file on disk (its name appears in error messages; `<file>.dockerignore` beside it
    /// takes precedence over the context's `.dockerignore`).
    Path(PathBuf),
    /// Text given directly (stdin, tests); `name` is used in messages.
    Text { text: String, name: String },
}

impl Default for ContainerfileSource {
    fn default() -> Self {
        ContainerfileSource::Path(PathBuf::from("Containerfile"))
    }
}

/// Where the result is written.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Output {
    /// The default local store ([`strata_store::default_store_path`]); tags are normalised
    /// references (`app:1` → `docker.io/library/app:1`).
    #[default]
    Store,
    /// An OCI image layout at this path (created if missing); tags are used verbatim.
    Layout(PathBuf),
}

/// Manifest format of the result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub enum ImageFormat {
    /// OCI image manifest / OCI image index.
    #[default]
    Oci,
    /// Docker schema 2 manifest / Docker manifest list (gzip or uncompressed layers only).
    V2s2,
}

/// Whether the build cache is consulted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CachePolicy {
    /// Reuse cached steps and record new ones.
    #[default]
    Use,
    /// Rebuild every step (results are still recorded for later builds).
    NoCache,
}

/// Where a `--secret` value comes from (read when a step mounts it; never stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// The contents of this file.
    File(PathBuf),
    /// The value of this environment variable of the build process.
    Env(String),
}

/// Stops a build between steps; RUN steps already running are stopped by the executor
/// (`strata_sandbox::interrupt_all`). The CLI trips it on Ctrl-C / SIGTERM.
#[derive(Debug, Clone, Default)]
pub struct CancelFlag(Arc<std::sync::atomic::AtomicBool>);

impl CancelFlag {
    pub fn cancel(&self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
    pub fn is_cancelled(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Layer squashing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Squash {
    #[default]
    None,
    /// Merge the layers this build adds into one; base layers are kept (and shared).
    New,
    /// Flatten the whole image, base included, into one layer.
    All,
}

/// When the result is an index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IndexMode {
    /// An index only when more than one platform is built; one platform gives a manifest.
    #[default]
    Auto,
    /// Always an index, even for one platform.
    Always,
}

/// Everything [`crate::build`] needs besides the base-image resolver.
#[derive(Clone)]
pub struct BuildOptions {
    pub containerfile: ContainerfileSource,
    /// The build context directory.
    pub context: PathBuf,
    /// Target platforms; empty = the host's.
    pub platforms: Vec<Platform>,
    /// Build this stage (by name or index) instead of the last one.
    pub target: Option<String>,
    /// `--build-arg` values (override `build_arg_files`).
    pub build_args: BTreeMap<String, String>,
    /// `--build-arg-file` files of `KEY=VALUE` lines, read in order.
    pub build_arg_files: Vec<PathBuf>,
    /// `--label`: added to the final image config.
    pub labels: BTreeMap<String, String>,
    /// `--annotation`: `KEY=VALUE` goes on every manifest and the index; `manifest:KEY` only on
    /// manifests, `index:KEY` only on the index.
    pub annotations: BTreeMap<String, String>,
    /// Tags for the result in the output layout.
    pub tags: Vec<String>,
    pub output: Output,
    pub format: ImageFormat,
    /// Layer compression (default gzip level 1 with the parallel encoder).
    pub compression: Compression,
    pub cache: CachePolicy,
    /// `--no-cache-filter`: stages (names or indexes) whose steps are rebuilt even when
    /// cached.
    pub no_cache_stages: Vec<String>,
    /// The build cache directory; default `<output layout>/.strata/build-cache`.
    pub cache_dir: Option<PathBuf>,
    /// SOURCE_DATE_EPOCH: clamps `created`, history times and the mtimes of new files.
    pub source_date_epoch: Option<u64>,
    pub squash: Squash,
    pub index: IndexMode,
    /// How many layers are produced at once (0 = the number of CPUs).
    pub jobs: usize,
    /// Write the result's digest here (`--iidfile`).
    pub iidfile: Option<PathBuf>,
    /// Use this ignore file instead of `.containerignore` / `.dockerignore` (`--ignorefile`).
    pub ignore_file: Option<PathBuf>,
    /// Runs `RUN` steps ([`crate::SandboxExecutor`]). Without one, `RUN` is an error naming
    /// its line.
    pub run_executor: Option<Arc<dyn RunExecutor>>,
    /// `--secret` values by id, for `RUN --mount=type=secret`.
    pub secrets: BTreeMap<String, SecretSource>,
    /// `--network`: the network of `RUN` steps that do not name one with `RUN --network`.
    pub network: crate::Network,
    /// Checked between steps: a cancelled build stops with [`BuildError::Interrupted`].
    pub cancel: CancelFlag,
    /// Platforms built from their own Containerfile, context or build args, into one result.
    /// When non-empty these replace `containerfile`, `context` and `platforms` (which must
    /// then be empty).
    pub groups: Vec<crate::PlatformGroup>,
    /// Cap on what one base or built layer decompresses to when it is extracted (for RUN,
    /// squash): decompression bombs stop there instead of filling the disk.
    pub max_uncompressed: strata_archive::UncompressedLimit,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            containerfile: ContainerfileSource::default(),
            context: PathBuf::from("."),
            platforms: Vec::new(),
            target: None,
            build_args: BTreeMap::new(),
            build_arg_files: Vec::new(),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            tags: Vec::new(),
            output: Output::Store,
            format: ImageFormat::Oci,
            compression: Compression::Gzip { level: 1 },
            cache: CachePolicy::Use,
            cache_dir: None,
            source_date_epoch: None,
            squash: Squash::None,
            index: IndexMode::Auto,
            jobs: 0,
            iidfile: None,
            ignore_file: None,
            run_executor: None,
            secrets: BTreeMap::new(),
            network: crate::Network::Host,
            cancel: CancelFlag::default(),
            no_cache_stages: Vec::new(),
            groups: Vec::new(),
            max_uncompressed: strata_archive::UncompressedLimit::Default,
        }
    }
}

impl std::fmt::Debug for BuildOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuildOptions")
            .field("containerfile", &self.containerfile)
            .field("context", &self.context)
            .field("platforms", &self.platforms)
            .field("target", &self.target)
            .field("tags", &self.tags)
            .field("output", &self.output)
            .field("format", &self.format)
            .field("compression", &self.compression)
            .field("cache", &self.cache)
            .field("source_date_epoch", &self.source_date_epoch)
            .field("squash", &self.squash)
            .field("groups", &self.groups)
            .finish_non_exhaustive()
    }
}

/// Read a `--build-arg-file`: `KEY=VALUE` lines; blank lines and `#` comments are skipped;
/// the value is everything after the first `=` (no quote removal, like Docker's env files).
pub fn read_build_arg_file(path: &Path) -> Result<BTreeMap<String, String>, BuildError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| BuildError::io(path, "cannot read build-arg file", e))?;
    parse_build_arg_lines(&text, path)
}

pub(crate) fn parse_build_arg_lines(
    text: &str,
    path: &Path,
) -> Result<BTreeMap<String, String>, BuildError> {
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let Some((k, v)) = trimmed.split_once('=') else {
            return Err(BuildError::BuildArgFile {
                path: path.to_path_buf(),
                line: i + 1,
                text: line.to_string(),
            });
        };
        let k = k.trim();
        if k.is_empty() || k.contains(char::is_whitespace) {
            return Err(BuildError::BuildArgFile {
                path: path.to_path_buf(),
                line: i + 1,
                text: line.to_string(),
            });
        }
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_arg_file_lines() {
        let p = Path::new("args.env");
        let m = parse_build_arg_lines("# c\n\nA=1\n  B = x=y \nEMPTY=\n", p).unwrap();
        assert_eq!(m["A"], "1");
        assert_eq!(m["B"], " x=y ");
        assert_eq!(m["EMPTY"], "");
        let err = parse_build_arg_lines("A=1\nnovalue\n", p).unwrap_err();
        assert!(err.to_string().contains("args.env:2"), "{err}");
        assert!(parse_build_arg_lines("=x\n", p).is_err());
    }
}
