//! `strata copy SRC DST`

use anyhow::{Context, bail};
use strata_copy::{CopyOptions, ImageName, ManifestFormat, Selection, copy_image};
use strata_spec::Platform;

use crate::cli::{CopyArgs, OutputFormat};
use crate::cmd::{EXIT_INTERRUPTED, Interrupts};
use crate::open::{self, Side};
use crate::output;
use crate::progress::Bars;
use crate::resolve::{self, Lookup, resolve};

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
    // Watched from the start: from here on Ctrl-C / SIGTERM no longer kill the process
    // before it has removed what it staged.
    let mut interrupts = Interrupts::watch();
    let (format, out) = split_formats(&a.format)?;
    let destination: ImageName = a.destination.parse()?;
    let selection = if a.all {
        Selection::All
    } else if !a.platform.is_empty() {
        Selection::Platforms(parse_platforms(&a.platform)?)
    } else {
        Selection::Host
    };
    let jobs = a
        .jobs
        .or(crate::config::settings().jobs.as_ref().map(|s| s.value))
        .unwrap_or(strata_copy::DEFAULT_CONCURRENCY);
    if jobs == 0 {
        bail!("--jobs must be at least 1");
    }
    let src_side = Side::new(
        &a.registry,
        a.src_creds.as_deref(),
        a.src_authfile.as_deref(),
        a.src_tls_verify,
    )
    .with_cert_dir(a.src_cert_dir.as_deref());
    let dst_side = Side::new(
        &a.registry,
        a.dest_creds.as_deref(),
        a.dest_authfile.as_deref(),
        a.dest_tls_verify,
    )
    .with_cert_dir(a.dest_cert_dir.as_deref());
    let open_both = async {
        let resolved = resolve(
            &a.source,
            &src_side,
            &resolve::short_names(),
            Lookup::default(),
        )
        .await?;
        let dst = open::sink(&destination, &dst_side).await?;
        anyhow::Ok((resolved, dst))
    };
    let (resolved, dst) = tokio::select! {
        opened = open_both => opened?,
        // Whatever was opened (an archive's staging) is dropped, and so removed, first.
        _ = interrupts.recv() => std::process::exit(EXIT_INTERRUPTED),
    };
    let source = resolved.name.clone();
    let src = resolved.into_source();
    let options = CopyOptions {
        selection,
        format,
        concurrency: jobs,
        tag: open::destination_tag(&destination),
        expected_digest: open::name_digest(&source),
        progress: Bars::new_if_terminal(a.quiet || out == OutputFormat::Json),
    };
    let mut copy = Box::pin(copy_image(src.as_ref(), dst.as_ref(), &options));
    let outcome = tokio::select! {
        result = &mut copy => Some(result),
        _ = interrupts.recv() => None,
    };
    // Dropping the copy stops its transfers; their writers then remove their temp files.
    drop(copy);
    let Some(result) = outcome else {
        eprintln!("interrupted: removing the partial copy (again to exit at once)");
        tokio::spawn(async move {
            interrupts.recv().await;
            std::process::exit(EXIT_INTERRUPTED);
        });
        dst.abandon().await;
        // Archive staging goes with the sink.
        drop(dst);
        std::process::exit(EXIT_INTERRUPTED);
    };
    let report = result.with_context(|| format!("copying {source} to {destination}"))?;
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
            outln!("{}", report.digest);
        }
    }
    Ok(())
}
