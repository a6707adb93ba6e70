//! `strata mount IMAGE DIR`, `strata umount DIR`

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::Context;
use clap::Args;
use strata_image::mount::{LayerCache, mount_image, unmount_image};
use strata_spec::Platform;

use crate::cli::RegistryArgs;
use crate::cmd::inspect::resolve_image;
use crate::cmd::unpack::{EXIT_INTERRUPTED, until_signal};
use crate::open::{self, Side};
use crate::resolve::{Lookup, resolve, short_names};

/// `strata mount --help` text.
pub const LONG_ABOUT: &str = "Mount an image read-only at DIR, like `podman image mount`.\n\n\
Each layer is extracted once into a cache under the local store (STORE/overlay, keyed by the \
DiffId computed while extracting it, with digests verified) and DIR becomes a read-only \
overlayfs of those layer directories. Needs root: an overlay mounted without privileges would \
exist only inside its own user namespace; rootless users can `strata unpack` instead. \
Undo with `strata umount DIR`.";

#[derive(Args, Debug)]
pub struct MountArgs {
    /// Image to mount (transport:reference; an index is narrowed to --platform).
    pub image: String,
    /// Mount point (created if missing).
    pub dir: PathBuf,
    /// For an index: the platform to mount (default: this host's).
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
    /// Layer cache directory (default: STORE/overlay).
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,
    /// No summary line.
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

#[derive(Args, Debug)]
pub struct UmountArgs {
    /// Mount point given to `strata mount`.
    pub dir: PathBuf,
}

pub async fn mount(a: MountArgs) -> anyhow::Result<()> {
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
    let cache = LayerCache::new(match a.cache {
        Some(c) => c,
        None => open::store_path()?.join("overlay"),
    });
    let cancel = Arc::new(AtomicBool::new(false));
    let (result, signalled) = until_signal(
        &cancel,
        mount_image(
            source.as_ref(),
            &raw,
            &cache,
            &a.dir,
            Some(Arc::clone(&cancel)),
        ),
    )
    .await;
    if signalled && result.is_err() {
        eprintln!("interrupted: nothing mounted");
        std::process::exit(EXIT_INTERRUPTED);
    }
    let report = result.with_context(|| format!("mounting {name} at {}", a.dir.display()))?;
    if !a.quiet {
        outln!(
            "mounted {} ({}) read-only at {}: {} layers ({} extracted, {} from the cache)",
            name,
            raw.digest,
            a.dir.display(),
            report.layers,
            report.extracted,
            report.layers - report.extracted
        );
    }
    Ok(())
}

pub async fn umount(a: UmountArgs) -> anyhow::Result<()> {
    let dir = a.dir.clone();
    tokio::task::spawn_blocking(move || unmount_image(&dir))
        .await?
        .with_context(|| format!("unmounting {}", a.dir.display()))?;
    Ok(())
}
