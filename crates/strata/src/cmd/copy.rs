//! `strata copy SRC DST`

use anyhow::{Context, bail};
use strata_copy::{CopyOptions, ImageName, ManifestFormat, Selection, copy_image};
use strata_spec::Platform;

use crate::cli::{CopyArgs, OutputFormat};
use crate::open::{self, Side};
use crate::output;
use crate::progress::Bars;

/// Split `--format` values into a manifest format and an output format.
pub fn split_formats(values: &[String]) -> anyhow::Result<(Option<ManifestFormat>, OutputFormat)> {
    let mut manifest = None;
    let mut out = OutputFormat::Text;
    for v in values {
        match v.as_str() {
            "json" => out = OutputFormat::Json,
            "text" => out = OutputFormat::Text,
            other => {
                let f: ManifestFormat = other.parse().map_err(|e: String| {
                    anyhow::anyhow!("--format: {e}; or json/text for the output")
                })?;
                manifest = Some(f);
            }
        }
    }
    Ok((manifest, out))
}

pub fn parse_platforms(values: &[String]) -> anyhow::Result<Vec<Platform>> {
    values
        .iter()
        .map(|p| {
            p.parse::<Platform>()
                .with_context(|| format!("--platform {p}"))
        })
        .collect()
}

pub async fn run(a: CopyArgs) -> anyhow::Result<()> {
    let (format, out) = split_formats(&a.format)?;
    let source: ImageName = a.source.parse()?;
    let destination: ImageName = a.destination.parse()?;
    let selection = if a.all {
        Selection::All
    } else if !a.platform.is_empty() {
        Selection::Platforms(parse_platforms(&a.platform)?)
    } else {
        Selection::Host
    };
    if a.jobs == 0 {
        bail!("--jobs must be at least 1");
    }
    let src_side = Side {
        cert_dir: a.src_cert_dir.clone().or(a.registry.cert_dir.clone()),
        ..Side::new(
            &a.registry,
            a.src_creds.as_deref(),
            a.src_authfile.as_deref(),
            a.src_tls_verify,
        )
    };
    let dst_side = Side {
        cert_dir: a.dest_cert_dir.clone().or(a.registry.cert_dir.clone()),
        ..Side::new(
            &a.registry,
            a.dest_creds.as_deref(),
            a.dest_authfile.as_deref(),
            a.dest_tls_verify,
        )
    };
    let src = open::source(&source, &src_side).await?;
    let dst = open::sink(&destination, &dst_side).await?;
    let options = CopyOptions {
        selection,
        format,
        concurrency: a.jobs,
        tag: open::destination_tag(&destination),
        expected_digest: open::name_digest(&source),
        progress: Bars::new_if_terminal(a.quiet || out == OutputFormat::Json),
    };
    let report = copy_image(src.as_ref(), dst.as_ref(), &options)
        .await
        .with_context(|| format!("copying {source} to {destination}"))?;
    match out {
        OutputFormat::Json => output::print_json(&report)?,
        OutputFormat::Text => {
            if !a.quiet {
                eprintln!(
                    "copied {} ({} blobs, {}; {} already present)",
                    report.digest,
                    report.blobs_copied,
                    output::human_size(report.bytes_copied),
                    report.blobs_skipped
                );
            }
            println!("{}", report.digest);
        }
    }
    Ok(())
}
