//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "strata",
    version = env!("STRATA_VERSION"),
    about = "Build, copy, inspect and unpack OCI container images without a daemon",
    long_about = "Build, copy, inspect and unpack OCI container images without a daemon.\n\n\
Images are named with a transport prefix, as skopeo names them:\n  \
docker://REGISTRY/REPO[:TAG][@DIGEST]   a registry\n  \
oci:PATH[:TAG]                          an OCI image layout directory\n  \
oci-archive:PATH[:TAG]                  a tar of an OCI image layout\n  \
docker-archive:PATH[:REF]               a `docker save` tar\n  \
dir:PATH                                a directory of manifest and blobs\n  \
NAME[:TAG]                              strata's local store ($XDG_DATA_HOME/strata) if it\n                                        has the tag, else docker://NAME; as a destination,\n                                        always the local store"
)]
pub struct Cli {
    /// More log output (-v info, -vv debug, -vvv trace); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Build images from a Containerfile, for one or many platforms.
    #[command(after_help = crate::help::BUILD)]
    Build(Box<BuildArgs>),
    /// Copy an image or index between registries, layouts, archives and directories.
    #[command(after_help = crate::help::COPY)]
    Copy(CopyArgs),
    /// Show an image's digest, platforms, layers and config.
    #[command(after_help = crate::help::INSPECT)]
    Inspect(InspectArgs),
    /// List the tags of a registry repository.
    Tags(TagsArgs),
    /// List the tags and platforms in an OCI image layout.
    Ls(LsArgs),
    /// Create, edit and push manifest lists (OCI indexes / Docker manifest lists).
    #[command(subcommand, after_help = crate::help::MANIFEST)]
    Manifest(ManifestCommand),
    /// Store credentials for a registry in the auth file.
    Login(LoginArgs),
    /// Remove stored credentials for a registry.
    Logout(LogoutArgs),
    /// Remove images: local store or OCI layout tags, registry manifests (alias delete, rmi).
    #[command(visible_aliases = ["delete", "rmi"], long_about = crate::cmd::rm::LONG_ABOUT)]
    Rm(crate::cmd::rm::RmArgs),
    /// Remove blobs no tag refers to, and leftovers of killed writers, from an OCI layout
    /// (default: the local store).
    Gc(GcArgs),
    /// Remove build cache entries (default: the local store's cache).
    Prune(PruneArgs),
    /// Unpack an image into an OCI runtime bundle (rootfs + config.json), like `umoci unpack`.
    #[command(long_about = crate::cmd::unpack::LONG_ABOUT, after_help = crate::help::UNPACK)]
    Unpack(crate::cmd::unpack::UnpackArgs),
    /// Turn the changes made in an unpacked bundle's rootfs into a new layer and image.
    #[command(long_about = crate::cmd::repack::LONG_ABOUT)]
    Repack(crate::cmd::repack::RepackArgs),
    /// Mount an image read-only (overlayfs over cached layer directories).
    #[command(long_about = crate::cmd::mount::LONG_ABOUT)]
    Mount(crate::cmd::mount::MountArgs),
    /// Unmount what `strata mount` mounted.
    Umount(crate::cmd::mount::UmountArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    #[command(after_help = crate::cmd::completion::COMPLETION_AFTER_HELP)]
    Completion(crate::cmd::completion::CompletionArgs),
    /// Write the man pages (strata.1 and one per subcommand).
    Man(crate::cmd::completion::ManArgs),
    /// Show the effective configuration and the file each setting comes from.
    #[command(long_about = crate::cmd::config::LONG_ABOUT)]
    Config(ConfigArgs),
}

/// Output format of a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum OutputFormat {
    #[default]
    Text,
    Json,
}

#[derive(Args, Debug, Clone, Default)]
pub struct RegistryArgs {
    /// Credentials USER[:PASSWORD] for both source and destination registries (without
    /// :PASSWORD it is asked for on the terminal).
    #[arg(long, value_name = "USER[:PASS]")]
    pub creds: Option<String>,
    /// Auth file (Docker config.json or containers auth.json); default $REGISTRY_AUTH_FILE,
    /// then ${XDG_RUNTIME_DIR}/containers/auth.json, then ~/.docker/config.json.
    #[arg(long, value_name = "PATH")]
    pub authfile: Option<PathBuf>,
    /// Require HTTPS and verify certificates (false: allow plain HTTP, for local registries).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub tls_verify: Option<bool>,
    /// Attempts for a failing request (408, 429, 5xx, resets) before giving up (default:
    /// retry-times of the config file, else 5).
    #[arg(long, value_name = "N")]
    pub retry_times: Option<u32>,
    /// Directory of CA certificates (*.crt) and client certificate (*.cert + *.key) for the
    /// registry (default: certs.d/HOST[:PORT] of ~/.config/containers, /etc/containers, /etc/docker).
    #[arg(long, value_name = "PATH")]
    pub cert_dir: Option<PathBuf>,
    /// Largest manifest or index accepted from a registry, in bytes (registries should accept
    /// at least 4 MB; raise it for very large indexes).
    #[arg(long, default_value_t = strata_spec::MAX_MANIFEST_BYTES, value_name = "BYTES")]
    pub max_manifest_size: u64,
}

#[derive(Args, Debug)]
pub struct CopyArgs {
    /// Source image (transport:reference).
    pub source: String,
    /// Destination image (transport:reference).
    pub destination: String,
    /// Copy an index with every image in it (default: only the host platform's image).
    #[arg(short, long, conflicts_with = "platform")]
    pub all: bool,
    /// Copy the images for these platforms (os/arch[/variant][:os.version], comma separated);
    /// one platform copies that image alone, several copy an index of just those; a single
    /// image must have the platform.
    #[arg(long, value_delimiter = ',', value_name = "PLATFORM")]
    pub platform: Vec<String>,
    /// Manifest format to write (oci, v2s2) and/or output format (text, json); repeatable
    /// or comma separated. Without oci/v2s2 the source's bytes and digests are kept exactly.
    #[arg(short, long, value_delimiter = ',', value_name = "FORMAT")]
    pub format: Vec<String>,
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// Credentials for the source registry.
    #[arg(long, value_name = "USER[:PASS]")]
    pub src_creds: Option<String>,
    /// Credentials for the destination registry.
    #[arg(long, value_name = "USER[:PASS]")]
    pub dest_creds: Option<String>,
    /// Auth file for the source registry.
    #[arg(long, value_name = "PATH")]
    pub src_authfile: Option<PathBuf>,
    /// Auth file for the destination registry.
    #[arg(long, value_name = "PATH")]
    pub dest_authfile: Option<PathBuf>,
    /// TLS verification for the source registry only.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub src_tls_verify: Option<bool>,
    /// TLS verification for the destination registry only.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub dest_tls_verify: Option<bool>,
    /// Certificate directory for the source registry only.
    #[arg(long, value_name = "PATH")]
    pub src_cert_dir: Option<PathBuf>,
    /// Certificate directory for the destination registry only.
    #[arg(long, value_name = "PATH")]
    pub dest_cert_dir: Option<PathBuf>,
    /// Blobs transferred at once (default: jobs of the config file, else 6).
    #[arg(short, long, value_name = "N")]
    pub jobs: Option<usize>,
    /// No progress output.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Image to inspect (transport:reference).
    pub image: String,
    /// Print the manifest bytes exactly as stored.
    #[arg(long, conflicts_with = "config")]
    pub raw: bool,
    /// Print the image config bytes exactly as stored.
    #[arg(long)]
    pub config: bool,
    /// For an index: inspect the image for this platform instead of the index.
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: OutputFormat,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

#[derive(Args, Debug)]
pub struct TagsArgs {
    /// Repository: docker://REGISTRY/REPO or REGISTRY/REPO.
    pub repository: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: OutputFormat,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

#[derive(Args, Debug)]
pub struct LsArgs {
    /// OCI layout directory, DIR or oci:DIR (default: the local store).
    pub layout: Option<PathBuf>,
    /// Print the local store's path and nothing else (for other tools' oci:PATH:NAME).
    #[arg(long, conflicts_with = "layout")]
    pub store_path: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: OutputFormat,
}

#[derive(Args, Debug)]
pub struct GcArgs {
    /// OCI layout directory, DIR or oci:DIR (default: the local store).
    pub layout: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: OutputFormat,
}

#[derive(Args, Debug)]
pub struct LoginArgs {
    /// Registry host (e.g. 127.0.0.1:5000, quay.io).
    pub registry: String,
    /// User name (asked for on a terminal when missing).
    #[arg(short, long)]
    pub username: Option<String>,
    /// Password (prefer --password-stdin).
    #[arg(short, long)]
    pub password: Option<String>,
    /// Read the password from standard input.
    #[arg(long)]
    pub password_stdin: bool,
    /// Auth file to write (default ~/.docker/config.json, or $REGISTRY_AUTH_FILE).
    #[arg(long, value_name = "PATH")]
    pub authfile: Option<PathBuf>,
    /// Require HTTPS and verify certificates (false: allow plain HTTP, for local registries).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub tls_verify: Option<bool>,
    /// Directory of certificates: *.crt are trusted CAs, NAME.cert + NAME.key a client
    /// certificate.
    #[arg(long, value_name = "DIR")]
    pub cert_dir: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct LogoutArgs {
    /// Registry host.
    pub registry: String,
    /// Auth file to remove the credentials from (default: as for login).
    #[arg(long, value_name = "PATH")]
    pub authfile: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum ManifestCommand {
    /// Create a manifest list from images (replaces an existing list of that name).
    Create(ManifestCreateArgs),
    /// Add images to a list; an entry for the same platform is replaced.
    Add(ManifestAddArgs),
    /// Change the platform or annotations of one entry.
    Annotate(ManifestAnnotateArgs),
    /// Remove an entry (by digest or platform, matched as --platform matches).
    Remove(ManifestRemoveArgs),
    /// Print a list (or any manifest).
    Inspect(ManifestInspectArgs),
    /// Push a list and every image in it to a registry or layout.
    Push(ManifestPushArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum ListFormat {
    /// OCI image index
    #[default]
    Oci,
    /// Docker manifest list
    V2s2,
}

#[derive(Args, Debug)]
pub struct ManifestCreateArgs {
    /// Name of the list (kept in the store's manifest-lists layout, apart from images).
    pub list: String,
    /// Images to put in it (transport:reference; an index adds all of its entries).
    pub images: Vec<String>,
    /// Kind of list.
    #[arg(long, value_enum, default_value_t)]
    pub format: ListFormat,
    /// Keep the entries of an existing list of that name (like `docker manifest create --amend`).
    #[arg(long)]
    pub amend: bool,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

#[derive(Args, Debug)]
pub struct ManifestAddArgs {
    /// Name of the list in the local store.
    pub list: String,
    /// Images to add (transport:reference; an index adds all of its entries).
    pub images: Vec<String>,
    /// Set the entry's platform fields (overrides what the image config says).
    #[command(flatten)]
    pub platform: PlatformFields,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

#[derive(Args, Debug, Default, Clone)]
pub struct PlatformFields {
    /// Operating system of the entry (linux, windows, …).
    #[arg(long)]
    pub os: Option<String>,
    /// CPU architecture of the entry (amd64, arm64, …).
    #[arg(long)]
    pub arch: Option<String>,
    /// CPU variant of the entry (v7, v8, …).
    #[arg(long)]
    pub variant: Option<String>,
    /// OS version of the entry (Windows: 10.0.17763.1757).
    #[arg(long)]
    pub os_version: Option<String>,
    /// OS features (comma separated).
    #[arg(long, value_delimiter = ',')]
    pub os_features: Vec<String>,
    /// Annotation KEY=VALUE on the entry (repeatable).
    #[arg(long, value_name = "KEY=VALUE")]
    pub annotation: Vec<String>,
}

#[derive(Args, Debug)]
pub struct ManifestAnnotateArgs {
    /// Name of the list in the local store.
    pub list: String,
    /// The entry: its digest, its platform, or an image whose digest is in the list.
    pub entry: String,
    #[command(flatten)]
    pub platform: PlatformFields,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

#[derive(Args, Debug)]
pub struct ManifestRemoveArgs {
    /// Name of the list in the local store.
    pub list: String,
    /// The entry's digest or platform (os/arch[/variant][:os.version], as --platform).
    pub entry: String,
}

#[derive(Args, Debug)]
pub struct ManifestInspectArgs {
    /// A list made by `manifest create`, else any image name (transport:reference).
    pub list: String,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

#[derive(Args, Debug)]
pub struct ManifestPushArgs {
    /// Name of the list in the local store.
    pub list: String,
    /// Destination (docker://…, oci:…); default: the list's own name on its registry.
    pub destination: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: OutputFormat,
    /// Remove the list after a successful push.
    #[arg(long)]
    pub purge: bool,
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// No progress output.
    #[arg(short, long)]
    pub quiet: bool,
}

/// When base images are fetched from their registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum PullPolicy {
    /// Use the local store when it has the image, else the registry.
    #[default]
    Missing,
    /// Always read bases from their registry.
    Always,
    /// Only the local store (and explicit oci:/archive names).
    Never,
}

/// `strata build --network`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum RunNetwork {
    /// The host's network, as with `buildah --isolation chroot`.
    #[default]
    Host,
    /// A new network namespace with only the loopback interface.
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CompressionKind {
    #[default]
    Gzip,
    Zstd,
    None,
}

#[derive(Args, Debug)]
pub struct BuildArgs {
    /// Build context directory (default: .).
    pub context: Option<PathBuf>,
    /// Containerfile (default: CONTEXT/Containerfile, else CONTEXT/Dockerfile; - for stdin);
    /// PATTERN=PATH for the platforms PATTERN (os[/arch[/variant]][:os.version]) matches, e.g.
    /// windows=Dockerfile.windows (repeatable; the most specific pattern wins).
    #[arg(short, long, value_name = "[PATTERN=]PATH")]
    pub file: Vec<String>,
    /// YAML build file of targets (platforms, containerfile, context, args) built into one
    /// result; --platform then picks some of its platforms.
    #[arg(long, value_name = "PATH", conflicts_with = "file")]
    pub build_file: Option<PathBuf>,
    /// Name the result in the local store, or in the --output oci: layout (repeatable); with
    /// --push, the registry images to push to.
    #[arg(short, long, value_name = "NAME")]
    pub tag: Vec<String>,
    /// Target platforms, os/arch[/variant][:os.version], comma separated or repeated
    /// (default: platforms of the config file, else the host's). Several make one index.
    #[arg(long, value_delimiter = ',', value_name = "PLATFORM")]
    pub platform: Vec<String>,
    /// Build this stage (name or index) instead of the last.
    #[arg(long, value_name = "STAGE")]
    pub target: Option<String>,
    /// Build argument KEY=VALUE (repeatable); KEY alone takes the value from the environment;
    /// PATTERN=KEY=VALUE only for the platforms PATTERN matches.
    #[arg(long, value_name = "[PATTERN=]KEY[=VALUE]")]
    pub build_arg: Vec<String>,
    /// File of KEY=VALUE build arguments (repeatable; --build-arg wins).
    #[arg(long, value_name = "PATH")]
    pub build_arg_file: Vec<PathBuf>,
    /// Label KEY=VALUE on the result's config (repeatable).
    #[arg(long, value_name = "KEY=VALUE")]
    pub label: Vec<String>,
    /// Annotation KEY=VALUE on the result's manifests and index (repeatable; prefix the key with
    /// `manifest:` or `index:` for one level only).
    #[arg(long, value_name = "KEY=VALUE")]
    pub annotation: Vec<String>,
    /// Where the result goes: oci:DIR[:TAG] is built in place instead of the local store (-t
    /// then names tags in DIR); oci-archive:, docker-archive: and docker://… are written from
    /// the local store after the build.
    #[arg(short, long, value_name = "IMAGE")]
    pub output: Option<String>,
    /// Push the result to every --tag (registry names) after building.
    #[arg(long)]
    pub push: bool,
    /// Write the result's digest to this file.
    #[arg(long, value_name = "PATH")]
    pub iidfile: Option<PathBuf>,
    /// Manifest format (oci, v2s2) and/or output format (text, json); comma separated.
    #[arg(long, value_delimiter = ',', value_name = "FORMAT")]
    pub format: Vec<String>,
    /// Layer compression (default: compression of the config file, else gzip).
    #[arg(long, value_enum)]
    pub compression: Option<CompressionKind>,
    /// Compression level (gzip 0–9, default 1; zstd 1–22, default 3).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub compression_level: Option<i32>,
    /// Do not use cached steps (new results are still cached).
    #[arg(long)]
    pub no_cache: bool,
    /// Rebuild the steps of these stages (names or indexes, comma separated) even when cached.
    #[arg(long, value_delimiter = ',', value_name = "STAGE")]
    pub no_cache_filter: Vec<String>,
    /// A secret for `RUN --mount=type=secret`: id=ID,src=PATH or id=ID,env=VAR (repeatable);
    /// never stored in the image or the cache.
    #[arg(long, value_name = "id=ID,src=PATH|env=VAR")]
    pub secret: Vec<String>,
    /// Network of RUN steps without `RUN --network`: host (the default) or none (only lo).
    #[arg(long, value_enum, default_value_t)]
    pub network: RunNetwork,
    /// Merge the layers this build adds into one (base layers kept).
    #[arg(long, conflicts_with = "squash_all")]
    pub squash: bool,
    /// Flatten the whole image into one layer.
    #[arg(long)]
    pub squash_all: bool,
    /// Clamp created times, history and new files' mtimes to this Unix time (default:
    /// $SOURCE_DATE_EPOCH).
    #[arg(long, value_name = "SECONDS", env = "SOURCE_DATE_EPOCH")]
    pub source_date_epoch: Option<u64>,
    /// Ignore file instead of CONTAINERFILE.dockerignore / .containerignore / .dockerignore.
    #[arg(long, value_name = "PATH")]
    pub ignorefile: Option<PathBuf>,
    /// When to fetch base images from their registry.
    #[arg(long, value_enum, default_value_t)]
    pub pull: PullPolicy,
    /// Layers produced at once (0: one per CPU; default: jobs of the config file, else 0).
    #[arg(short, long, value_name = "N")]
    pub jobs: Option<usize>,
    /// Stop when a layer extracted for RUN or --squash decompresses to more than SIZE (e.g.
    /// 20G, or unlimited; default: the larger of 8G and 100x its compressed size).
    #[arg(long, value_name = "SIZE", value_parser = crate::cmd::unpack::parse_limit)]
    pub max_uncompressed: Option<strata_image::UncompressedLimit>,
    /// Print only the result digest.
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

#[derive(Args, Debug)]
pub struct PruneArgs {
    /// OCI layout whose build cache to prune (default: the local store).
    pub layout: Option<PathBuf>,
    /// Keep entries used within this long (e.g. 24h, 7d); default: remove all.
    #[arg(long, value_name = "DURATION")]
    pub keep_used_within: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: OutputFormat,
}

#[derive(Args, Debug)]
pub struct ConfigArgs {
    /// Also show how this image or registry host is reached (mirrors, TLS, certificates).
    pub image: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: OutputFormat,
    /// Certificate directory to report instead of the certs.d lookup.
    #[arg(long, value_name = "PATH")]
    pub cert_dir: Option<PathBuf>,
}
