//! `strata inspect IMAGE`

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::Context;
use serde::Serialize;
use strata_copy::{check_single_platform, select_platform};
use strata_image::{ImageSource, RawManifest, read_blob_bytes};
use strata_spec::{Descriptor, ImageConfig, MAX_CONFIG_BYTES, Manifest, MediaType, Platform};

use crate::cli::{InspectArgs, OutputFormat};
use crate::open::Side;
use crate::output::{human_size, print_json, terminal_safe as safe};
use crate::resolve::{Lookup, resolve, short_names};

#[derive(Serialize)]
struct LayerInfo {
    digest: String,
    media_type: MediaType,
    size: i64,
}

#[derive(Serialize)]
struct ImageInfo {
    name: String,
    digest: String,
    media_type: MediaType,
    #[serde(skip_serializing_if = "Option::is_none")]
    index_digest: Option<String>,
    platform: String,
    created: Option<String>,
    layers: Vec<LayerInfo>,
    env: Vec<String>,
    entrypoint: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    working_dir: Option<String>,
    user: Option<String>,
    labels: BTreeMap<String, String>,
    exposed_ports: Vec<String>,
    annotations: BTreeMap<String, String>,
    history: usize,
}

#[derive(Serialize)]
struct IndexEntry {
    digest: String,
    media_type: MediaType,
    size: i64,
    platform: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
}

#[derive(Serialize)]
struct IndexInfo {
    name: String,
    digest: String,
    media_type: MediaType,
    manifests: Vec<IndexEntry>,
    annotations: BTreeMap<String, String>,
}

/// Resolve a document to an image manifest: an index is narrowed to `platform` (host by
/// default). A single image asked for with a `platform` its config does not have is refused,
/// as `build` refuses such a base.
pub async fn resolve_image(
    source: &dyn ImageSource,
    top: RawManifest,
    platform: Option<&Platform>,
) -> anyhow::Result<(RawManifest, strata_spec::ImageManifest)> {
    let mut raw = top;
    for depth in 0..4 {
        match raw.parse()? {
            Manifest::Image(m) => {
                if let Some(wanted) = platform
                    && depth == 0
                {
                    check_single_platform(source, &m, wanted).await?;
                }
                return Ok((raw, m));
            }
            Manifest::Index(i) => {
                let want = platform.cloned().unwrap_or_else(Platform::host);
                let entry = select_platform(&i.manifests, &want).with_context(|| {
                    let available: Vec<String> = i
                        .manifests
                        .iter()
                        .filter_map(|d| d.platform.as_ref().map(|p| p.to_string()))
                        .collect();
                    format!(
                        "no image for platform {want} in {} (available: {})",
                        source.describe(),
                        available.join(", ")
                    )
                })?;
                let mut child = source.manifest(Some(&entry.digest)).await?;
                child.media_type = entry.media_type.clone();
                raw = child;
            }
        }
    }
    anyhow::bail!("{}: nested indexes too deep", source.describe())
}

pub async fn read_config(
    source: &dyn ImageSource,
    config: &Descriptor,
) -> anyhow::Result<(Vec<u8>, ImageConfig)> {
    let bytes = read_blob_bytes(source, config, MAX_CONFIG_BYTES)
        .await
        .with_context(|| format!("{}: reading config {}", source.describe(), config.digest))?;
    let parsed = ImageConfig::parse(&bytes).with_context(|| format!("config {}", config.digest))?;
    Ok((bytes, parsed))
}

pub async fn run(a: InspectArgs) -> anyhow::Result<()> {
    let side = Side::new(&a.registry, None, None, None);
    let platform = a
        .platform
        .as_deref()
        .map(str::parse::<Platform>)
        .transpose()?;
    let resolved = resolve(&a.image, &side, &short_names(), Lookup::default()).await?;
    let (name, source, top) = (resolved.name, resolved.source, resolved.top);
    let parsed = top.parse()?;
    let mut stdout = std::io::stdout().lock();
    if a.raw && platform.is_none() {
        stdout.write_all(&top.bytes)?;
        return Ok(());
    }
    if let (Manifest::Index(i), false, None) = (&parsed, a.config, &platform) {
        let info = IndexInfo {
            name: name.to_string(),
            digest: top.digest.to_string(),
            media_type: parsed.media_type(),
            manifests: i
                .manifests
                .iter()
                .map(|d| IndexEntry {
                    digest: d.digest.to_string(),
                    media_type: d.media_type.clone(),
                    size: d.size,
                    platform: d.platform.as_ref().map(|p| p.to_string()),
                    annotations: d.annotations.clone(),
                })
                .collect(),
            annotations: i.annotations.clone(),
        };
        if a.format == OutputFormat::Json {
            return print_json(&info);
        }
        writeln!(stdout, "Name:       {}", safe(&info.name))?;
        writeln!(stdout, "Digest:     {}", info.digest)?;
        writeln!(stdout, "MediaType:  {}", safe(info.media_type.as_str()))?;
        writeln!(stdout, "Manifests:")?;
        for m in &info.manifests {
            writeln!(
                stdout,
                "  {}  {:<32} {}",
                m.digest,
                safe(m.platform.as_deref().unwrap_or("(no platform)")),
                human_size(m.size as u64)
            )?;
        }
        return Ok(());
    }
    let index_digest = matches!(parsed, Manifest::Index(_)).then(|| top.digest.to_string());
    let (raw, manifest) = resolve_image(source.as_ref(), top, platform.as_ref()).await?;
    if a.raw {
        stdout.write_all(&raw.bytes)?;
        return Ok(());
    }
    let (config_bytes, config) = read_config(source.as_ref(), &manifest.config).await?;
    if a.config {
        stdout.write_all(&config_bytes)?;
        return Ok(());
    }
    let rc = config.config.clone().unwrap_or_default();
    let info = ImageInfo {
        name: name.to_string(),
        digest: raw.digest.to_string(),
        media_type: manifest.media_type(),
        index_digest,
        platform: config.platform().to_string(),
        created: config.created.clone(),
        layers: manifest
            .layers
            .iter()
            .map(|l| LayerInfo {
                digest: l.digest.to_string(),
                media_type: l.media_type.clone(),
                size: l.size,
            })
            .collect(),
        env: rc.env.clone().unwrap_or_default(),
        entrypoint: rc.entrypoint.clone(),
        cmd: rc.cmd.clone(),
        working_dir: rc.working_dir.clone().filter(|w| !w.is_empty()),
        user: rc.user.clone().filter(|u| !u.is_empty()),
        labels: rc.labels.clone().unwrap_or_default(),
        exposed_ports: rc
            .exposed_ports
            .clone()
            .unwrap_or_default()
            .into_keys()
            .collect(),
        annotations: manifest.annotations.clone(),
        history: config.history.len(),
    };
    if a.format == OutputFormat::Json {
        return print_json(&info);
    }
    // Everything below but digests and sizes comes from the image: printed terminal-safe.
    writeln!(stdout, "Name:        {}", safe(&info.name))?;
    writeln!(stdout, "Digest:      {}", info.digest)?;
    if let Some(i) = &info.index_digest {
        writeln!(stdout, "Index:       {i}")?;
    }
    writeln!(stdout, "MediaType:   {}", safe(info.media_type.as_str()))?;
    writeln!(stdout, "Platform:    {}", safe(&info.platform))?;
    writeln!(
        stdout,
        "Created:     {}",
        safe(info.created.as_deref().unwrap_or("-"))
    )?;
    let total: i64 = info.layers.iter().map(|l| l.size).sum();
    writeln!(
        stdout,
        "Layers:      {} ({})",
        info.layers.len(),
        human_size(total.max(0) as u64)
    )?;
    for l in &info.layers {
        writeln!(
            stdout,
            "  {}  {:>10}  {}",
            l.digest,
            human_size(l.size.max(0) as u64),
            safe(l.media_type.as_str())
        )?;
    }
    let join = |v: &Option<Vec<String>>| {
        v.as_ref()
            .map(|v| format!("{v:?}"))
            .unwrap_or_else(|| "-".into())
    };
    writeln!(stdout, "Entrypoint:  {}", join(&info.entrypoint))?;
    writeln!(stdout, "Cmd:         {}", join(&info.cmd))?;
    writeln!(
        stdout,
        "WorkingDir:  {}",
        safe(info.working_dir.as_deref().unwrap_or("-"))
    )?;
    writeln!(
        stdout,
        "User:        {}",
        safe(info.user.as_deref().unwrap_or("-"))
    )?;
    writeln!(stdout, "Env:")?;
    for e in &info.env {
        writeln!(stdout, "  {}", safe(e))?;
    }
    if !info.exposed_ports.is_empty() {
        writeln!(
            stdout,
            "Ports:       {}",
            safe(&info.exposed_ports.join(" "))
        )?;
    }
    if !info.labels.is_empty() {
        writeln!(stdout, "Labels:")?;
        for (k, v) in &info.labels {
            writeln!(stdout, "  {}={}", safe(k), safe(v))?;
        }
    }
    Ok(())
}
