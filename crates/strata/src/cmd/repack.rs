//! `strata repack BUNDLE IMAGE`

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use serde::Serialize;
use strata_copy::ImageName;
use strata_image::Compression;
use strata_image::repack::{RepackOptions, Repacked, bundle_layer, refresh_bundle, write_layer};

use crate::cli::{CompressionKind, OutputFormat, RegistryArgs};
use crate::cmd::build::layer_compression;
use crate::open::{self, Side};
use crate::output::{human_size, print_json};

/// `strata repack --help` text.
pub const LONG_ABOUT: &str = "Turn the changes made in BUNDLE/rootfs since `strata unpack` into one new \
layer, and write the unpacked image plus that layer (and a history entry) as IMAGE.\n\n\
Changes are found by comparing each path's inode, ctime, mtime, size, mode and owner with what \
unpack recorded (no file is hashed); changed files are read once. Deleted paths become \
whiteouts, re-created directories opaque directories; hard links, symlinks, devices, modes, \
ownership and xattrs are kept. Base layers missing at IMAGE are copied from the image the \
bundle was unpacked from.";

#[derive(Args, Debug)]
pub struct RepackArgs {
    /// Bundle made by `strata unpack`.
    pub bundle: PathBuf,
    /// Where to write the new image (transport:reference, e.g. oci:LAYOUT:newtag).
    pub image: String,
    /// Layer compression: gzip (default, level 1), gzip:LEVEL, zstd, zstd:LEVEL, none.
    #[arg(long, default_value = "gzip", value_name = "ALGO[:LEVEL]")]
    pub compression: String,
    /// `created_by` of the history entry.
    #[arg(long, default_value = "strata repack", value_name = "TEXT")]
    pub history_created_by: String,
    /// `comment` of the history entry.
    #[arg(long, value_name = "TEXT")]
    pub history_comment: Option<String>,
    /// `author` of the history entry.
    #[arg(long, value_name = "TEXT")]
    pub history_author: Option<String>,
    /// Timestamp of the config and history entry (RFC 3339); default: now, or
    /// SOURCE_DATE_EPOCH when set.
    #[arg(long, value_name = "TIME")]
    pub created: Option<String>,
    /// Afterwards, make the bundle describe the new image (the next repack then holds only
    /// later changes), as umoci's --refresh-bundle.
    #[arg(long)]
    pub refresh_bundle: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: OutputFormat,
    /// No summary line.
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// `gzip`, `gzip:6`, `zstd`, `zstd:3`, `none`.
fn parse_compression(s: &str) -> anyhow::Result<Compression> {
    let (algo, level) = match s.split_once(':') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let kind = match algo {
        "gzip" => CompressionKind::Gzip,
        "zstd" => CompressionKind::Zstd,
        "none" | "uncompressed" => CompressionKind::None,
        other => anyhow::bail!("--compression {other}: use gzip, zstd or none"),
    };
    let level = level
        .map(str::parse::<i32>)
        .transpose()
        .with_context(|| format!("--compression {s}: bad level"))?;
    layer_compression(kind, level)
}

#[derive(Serialize)]
struct Summary {
    image: String,
    digest: String,
    layer: String,
    diff_id: String,
    layer_size: u64,
    added: u64,
    modified: u64,
    deleted: u64,
    opaque: u64,
}

pub async fn run(a: RepackArgs) -> anyhow::Result<()> {
    let name: ImageName = a.image.parse()?;
    let side = Side::new(&a.registry, None, None, None);
    let created = match (&a.created, std::env::var("SOURCE_DATE_EPOCH").ok()) {
        (Some(c), _) => Some(c.clone()),
        (None, Some(epoch)) => Some(strata_image::repack::rfc3339(
            epoch
                .trim()
                .parse()
                .context("SOURCE_DATE_EPOCH is not a number of seconds")?,
        )),
        (None, None) => None,
    };
    let options = RepackOptions {
        compression: parse_compression(&a.compression)?,
        created,
        created_by: a.history_created_by.clone(),
        comment: a.history_comment.clone(),
        author: a.history_author.clone(),
    };
    let bundle = a.bundle.clone();
    let repacked: Repacked = tokio::task::spawn_blocking(move || write_layer(&bundle, &options))
        .await?
        .with_context(|| format!("repacking {}", a.bundle.display()))?;
    for w in &repacked.changes.warnings {
        eprintln!("warning: {w}");
    }
    let sink = open::sink(&name, &side).await?;
    let missing = repacked.missing_blobs(sink.as_ref(), None).await?;
    // The base image is opened only when the destination lacks some of its layers.
    let source = if missing.is_empty() {
        None
    } else {
        let base: ImageName = repacked.meta.source.parse().with_context(|| {
            format!(
                "{} base layers are missing at {name}, and the bundle's source {:?} is not an image name",
                missing.len(),
                repacked.meta.source
            )
        })?;
        Some(
            open::source_at_digest(&base, &repacked.meta.manifest_digest, &side)
                .await
                .with_context(|| {
                    format!(
                        "{} base layers are missing at {name}: opening the bundle's source {base}",
                        missing.len()
                    )
                })?,
        )
    };
    let summary = Summary {
        image: name.to_string(),
        digest: repacked.manifest.digest.to_string(),
        layer: repacked.layer.digest.to_string(),
        diff_id: repacked.layer.diff_id.to_string(),
        layer_size: repacked.layer.size,
        added: repacked.changes.added,
        modified: repacked.changes.modified,
        deleted: repacked.changes.deleted,
        opaque: repacked.changes.opaque,
    };
    let manifest = repacked.manifest.clone();
    let config = repacked.config.clone();
    let layer = bundle_layer(&repacked);
    let meta = repacked.meta.clone();
    repacked
        .commit(
            sink.as_ref(),
            source.as_deref(),
            open::destination_tag(&name).as_deref(),
        )
        .await
        .with_context(|| format!("writing {name}"))?;
    if a.refresh_bundle {
        let bundle = a.bundle.clone();
        let new_source = a.image.clone();
        tokio::task::spawn_blocking(move || {
            refresh_bundle(&bundle, &manifest, &config, layer, meta, &new_source)
        })
        .await?
        .with_context(|| format!("refreshing {}", a.bundle.display()))?;
    }
    if a.format == OutputFormat::Json {
        return print_json(&summary);
    }
    if !a.quiet {
        outln!(
            "repacked {} into {} ({}): layer {} ({}): {} added, {} modified, {} deleted",
            a.bundle.display(),
            summary.image,
            summary.digest,
            summary.layer,
            human_size(summary.layer_size),
            summary.added,
            summary.modified,
            summary.deleted
        );
    }
    Ok(())
}
