//! `strata ls [LAYOUT]` and `strata gc [LAYOUT]`

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use serde::Serialize;
use strata_image::{ImageSource, RawManifest};
use strata_spec::{Descriptor, MAX_MANIFEST_BYTES, Manifest};
use strata_store::{LayoutSource, OciLayout};

use crate::cli::{GcArgs, LsArgs, OutputFormat};
use crate::cmd::inspect::read_config;
use crate::open;
use crate::output::{human_size, print_json, terminal_safe};

#[derive(Serialize)]
struct Entry {
    tag: Option<String>,
    digest: String,
    media_type: String,
    platforms: Vec<String>,
    size: u64,
}

fn layout_path(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    match given {
        Some(p) => Ok(p),
        None => open::store_path(),
    }
}

/// Platforms of a tagged document: its index entries', or the image config's.
async fn platforms(
    source: &LayoutSource,
    descriptor: &Descriptor,
) -> anyhow::Result<(Vec<String>, u64)> {
    let bytes = source
        .layout()
        .read_blob(&descriptor.digest, MAX_MANIFEST_BYTES)?;
    let raw = RawManifest {
        bytes,
        media_type: descriptor.media_type.clone(),
        digest: descriptor.digest.clone(),
    };
    match raw.parse()? {
        Manifest::Index(i) => Ok((
            i.manifests.iter().map(Descriptor::platform_label).collect(),
            i.manifests.iter().map(|d| d.size.max(0) as u64).sum(),
        )),
        Manifest::Image(m) => {
            let (_, config) = read_config(source, &m.config).await?;
            let size = m.layers.iter().map(|l| l.size.max(0) as u64).sum::<u64>()
                + m.config.size.max(0) as u64;
            Ok((vec![config.platform().to_string()], size))
        }
    }
}

pub async fn run(a: LsArgs) -> anyhow::Result<()> {
    let path = layout_path(a.layout)?;
    let layout = OciLayout::open(&path)
        .with_context(|| format!("{} is not an OCI image layout", path.display()))?;
    let source = LayoutSource::new(layout.clone(), None, format!("oci:{}", path.display()));
    let mut entries = Vec::new();
    for (tag, descriptor) in layout.list()? {
        let (platforms, size) = platforms(&source, &descriptor)
            .await
            .with_context(|| format!("{}: entry {}", source.describe(), descriptor.digest))?;
        entries.push(Entry {
            tag,
            digest: descriptor.digest.to_string(),
            media_type: descriptor.media_type.to_string(),
            platforms,
            size,
        });
    }
    if a.format == OutputFormat::Json {
        return print_json(&entries);
    }
    let mut out = std::io::stdout().lock();
    // Tags and platform strings come from the layout (an image may carry anything).
    let tag = |e: &Entry| terminal_safe(e.tag.as_deref().unwrap_or("<none>")).into_owned();
    let width = entries
        .iter()
        .map(|e| tag(e).chars().count())
        .max()
        .unwrap_or(3)
        .max(3);
    writeln!(
        out,
        "{:<width$}  {:<19}  {:>10}  PLATFORMS",
        "TAG", "DIGEST", "SIZE"
    )?;
    for e in &entries {
        let short = e.digest.get(..19).unwrap_or(&e.digest);
        writeln!(
            out,
            "{:<width$}  {:<19}  {:>10}  {}",
            tag(e),
            short,
            human_size(e.size),
            terminal_safe(&e.platforms.join(", "))
        )?;
    }
    Ok(())
}

pub async fn gc(a: GcArgs) -> anyhow::Result<()> {
    let path = layout_path(a.layout)?;
    let layout = OciLayout::open(&path)
        .with_context(|| format!("{} is not an OCI image layout", path.display()))?;
    let report = tokio::task::spawn_blocking(move || layout.gc()).await??;
    match a.format {
        OutputFormat::Json => print_json(&report),
        OutputFormat::Text => {
            println!(
                "removed {} blobs ({}), {} temp files",
                report.blobs_removed,
                human_size(report.bytes_removed),
                report.temp_files_removed
            );
            Ok(())
        }
    }
}
