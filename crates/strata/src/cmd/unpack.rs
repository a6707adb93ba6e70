//! `strata unpack IMAGE BUNDLE`

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use clap::Args;
use serde::Serialize;
use strata_image::runtime::{DEFAULT_HOSTNAME, RuntimeMode, RuntimeOptions, Terminal, is_root};
use strata_image::{
    ExistingBundle, Ownership, SyncMode, UncompressedLimit, UnpackOptions, UnpackReport,
};
use strata_spec::Platform;

use crate::cli::{OutputFormat, RegistryArgs};
use crate::cmd::inspect::resolve_image;
use crate::open::Side;
use crate::output::{human_size, print_json};
use crate::resolve::{Lookup, resolve, short_names};

pub use crate::cmd::EXIT_INTERRUPTED;
use crate::cmd::Interrupts;

/// `strata unpack --help` text.
pub const LONG_ABOUT: &str = "Unpack an image into an OCI runtime bundle, like `umoci unpack`.\n\n\
BUNDLE/rootfs gets every layer applied in order (whiteouts and opaque directories), \
BUNDLE/config.json a runtime config made from the image config (runnable with \
`runc run -b BUNDLE ID`), and BUNDLE/strata.json + strata.state what `strata repack` needs. \
strata.json is written last: a bundle without it is incomplete. Digests, sizes and DiffIds \
are verified while the layers stream; on any error or Ctrl-C the partial bundle is removed.";

#[derive(Args, Debug)]
pub struct UnpackArgs {
    /// Image to unpack (transport:reference; an index is narrowed to --platform).
    pub image: String,
    /// Bundle directory to create (must be missing or empty unless --force).
    pub bundle: PathBuf,
    /// For an index: the platform to unpack (default: this host's).
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
    /// Keep ownership the unprivileged way (as umoci --rootless): files owned by you, the
    /// image's uid/gid recorded in the user.rootlesscontainers xattr, devices as empty
    /// files; the config.json maps you to root in a user namespace. Default when not root.
    #[arg(long)]
    pub rootless: bool,
    /// Replace a non-empty bundle directory (or a symlink at its place) instead of refusing.
    #[arg(long)]
    pub force: bool,
    /// Stop when the layers' uncompressed content exceeds SIZE (e.g. 10G, or unlimited;
    /// default: the larger of 8G and 100x the compressed size).
    #[arg(long, value_name = "SIZE", value_parser = parse_limit)]
    pub max_uncompressed: Option<UncompressedLimit>,
    /// Hostname in config.json.
    #[arg(long, default_value = DEFAULT_HOSTNAME)]
    pub hostname: String,
    /// Give the process a terminal in config.json (for interactive `runc run`).
    #[arg(long)]
    pub terminal: bool,
    /// Flush the filesystem (syncfs) before marking the bundle complete.
    #[arg(long)]
    pub sync: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: OutputFormat,
    /// No summary line.
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// A `--max-uncompressed` value: a size ([`parse_size`]) or `unlimited`.
pub fn parse_limit(s: &str) -> Result<UncompressedLimit, String> {
    if s.trim().eq_ignore_ascii_case("unlimited") {
        return Ok(UncompressedLimit::Unlimited);
    }
    parse_size(s).map(UncompressedLimit::Bytes)
}

/// `1048576`, `512K`, `64M`, `10G`, `1T` (binary units; `KiB`/`MB` spellings accepted).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = t[digits.len()..].to_ascii_uppercase();
    let n: u64 = digits
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 500M, 10G)"))?;
    let shift = match unit.trim_end_matches("IB").trim_end_matches('B') {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return Err(format!("{s:?}: unknown unit (use K, M, G or T)")),
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("{s:?} is too large"))
}

#[derive(Serialize)]
struct Summary {
    image: String,
    digest: String,
    bundle: String,
    layers: usize,
    entries: u64,
    file_bytes: u64,
    uncompressed_bytes: u64,
    rootless: bool,
    warnings: u64,
}

/// Run `work` until it ends; on Ctrl-C or SIGTERM set `cancel` and still wait for it (it
/// cleans up). Returns the result and whether a signal came.
pub async fn until_signal<T>(
    cancel: &Arc<AtomicBool>,
    work: impl std::future::Future<Output = T>,
) -> (T, bool) {
    tokio::pin!(work);
    let mut interrupts = Interrupts::watch();
    let signalled = interrupts.recv();
    tokio::select! {
        out = &mut work => (out, false),
        _ = signalled => {
            cancel.store(true, Ordering::Relaxed);
            eprintln!("interrupted: removing the partial output");
            (work.await, true)
        }
    }
}

pub async fn run(a: UnpackArgs) -> anyhow::Result<()> {
    let side = Side::new(&a.registry, None, None, None);
    let platform = a
        .platform
        .as_deref()
        .map(str::parse::<Platform>)
        .transpose()
        .context("--platform")?;
    let resolved = resolve(&a.image, &side, &short_names(), Lookup::default()).await?;
    let (name, source, top) = (resolved.name, resolved.source, resolved.top);
    let (raw, _) = resolve_image(source.as_ref(), top, platform.as_ref()).await?;
    let rootless = a.rootless || !is_root();
    if rootless && !a.rootless {
        eprintln!("note: not running as root: unpacking rootless (as with --rootless)");
    }
    let mode = if rootless {
        match RuntimeMode::for_caller() {
            RuntimeMode::Root => RuntimeMode::Rootless { uid: 0, gid: 0 },
            m => m,
        }
    } else {
        RuntimeMode::Root
    };
    let cancel = Arc::new(AtomicBool::new(false));
    let options = UnpackOptions {
        ownership: if rootless {
            Ownership::Rootless
        } else {
            Ownership::Preserve
        },
        existing: if a.force {
            ExistingBundle::Replace
        } else {
            ExistingBundle::Refuse
        },
        max_uncompressed: a.max_uncompressed.unwrap_or_default(),
        runtime: RuntimeOptions {
            mode,
            hostname: a.hostname.clone(),
            terminal: if a.terminal {
                Terminal::Allocate
            } else {
                Terminal::None
            },
        },
        cancel: Some(Arc::clone(&cancel)),
        source_name: name.to_string(),
        sync: if a.sync {
            SyncMode::Filesystem
        } else {
            SyncMode::None
        },
    };
    let (result, signalled) = until_signal(
        &cancel,
        strata_image::unpack(source.as_ref(), &raw, &a.bundle, &options),
    )
    .await;
    if signalled && result.is_err() {
        eprintln!("interrupted: {} was not unpacked", a.bundle.display());
        std::process::exit(EXIT_INTERRUPTED);
    }
    let report: UnpackReport =
        result.with_context(|| format!("unpacking {name} into {}", a.bundle.display()))?;
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    if report.warning_count > report.warnings.len() as u64 {
        eprintln!(
            "warning: {} more warnings",
            report.warning_count - report.warnings.len() as u64
        );
    }
    let summary = Summary {
        image: name.to_string(),
        digest: raw.digest.to_string(),
        bundle: a.bundle.display().to_string(),
        layers: report.layers,
        entries: report.entries,
        file_bytes: report.file_bytes,
        uncompressed_bytes: report.uncompressed_bytes,
        rootless,
        warnings: report.warning_count,
    };
    if a.format == OutputFormat::Json {
        return print_json(&summary);
    }
    if !a.quiet {
        outln!(
            "unpacked {} ({}) into {}: {} layers, {} entries, {}{}",
            summary.image,
            summary.digest,
            summary.bundle,
            summary.layers,
            summary.entries,
            human_size(summary.file_bytes),
            if rootless { ", rootless" } else { "" }
        );
    }
    Ok(())
}
