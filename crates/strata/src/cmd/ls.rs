//! `strata ls [LAYOUT]` and `strata gc [LAYOUT]`

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
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

/// The layout a `ls`/`gc` argument names: a directory, or `oci:DIR` as other commands spell it.
fn layout_path(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let Some(given) = given else {
        return open::store_path();
    };
    let Some(text) = given.to_str() else {
        return Ok(given);
    };
    if let Some(dir) = text.strip_prefix("oci:") {
        if let Some((dir, tag)) = dir.split_once(':')
            && !Path::new(text.trim_start_matches("oci:")).exists()
        {
            bail!(
                "{text}: this command works on a whole layout, not one tag: name the directory (oci:{dir}), not its tag {tag:?}"
            );
        }
        return Ok(PathBuf::from(dir));
    }
    for transport in ["docker://", "oci-archive:", "docker-archive:", "dir:"] {
        if text.starts_with(transport) {
            bail!(
                "{text}: this command works on OCI layout directories (DIR or oci:DIR){}",
                if transport == "docker://" {
                    "; list a registry repository's tags with `strata tags`"
                } else {
                    ""
                }
            );
        }
    }
    Ok(given)
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
    if a.store_path {
        outln!("{}", open::store_path()?.display());
        return Ok(());
    }
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
            outln!(
                "removed {} blobs ({}), {} temp files, {} staging directories",
                report.blobs_removed,
                human_size(report.bytes_removed),
                report.temp_files_removed,
                report.staging_dirs_removed
            );
            Ok(())
        }
    }
}
