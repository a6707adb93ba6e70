//! `strata build [CONTEXT]` and `strata prune`

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use async_trait::async_trait;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use strata_build::{
    BaseResolver, BuildError, BuildEvent, BuildOptions, BuildProgress, BuildResult, CachePolicy,
    CancelFlag, Compression, ContainerfileSource, ImageFormat, LayerOrigin, Output, PlatformGroup,
    PlatformPattern, PruneKeep, PruneOptions, PushOptions, SandboxExecutor, Scoped, SecretSource,
    Squash, build, check_scopes, default_cache_dir, default_containerfile, prune_cache,
    push_result, read_build_file, scoped_args, scoped_value,
};
use strata_copy::{ImageName, ManifestFormat};
use strata_image::{ImageError, ImageSource};
use strata_spec::{Platform, Reference};

use crate::cli::{BuildArgs, CompressionKind, OutputFormat, PruneArgs, PullPolicy};
use crate::cmd::copy::split_formats;
use crate::cmd::{EXIT_INTERRUPTED, Interrupts};
use crate::open::{self, Side};
use crate::output::{human_size, print_json, stderr_is_terminal, terminal_safe};
use crate::resolve::{Lookup, NotFound, ShortNames, resolve, short_names};

/// Opens `FROM` names by the rule every command uses (`crate::resolve`); `--pull` says
/// where a bare name may be looked up.
struct CliResolver {
    side: Side,
    lookup: Lookup,
    short_names: ShortNames,
}

#[async_trait]
impl BaseResolver for CliResolver {
    async fn open(&self, image: &str) -> Result<Box<dyn ImageSource>, ImageError> {
        match resolve(image, &self.side, &self.short_names, self.lookup).await {
            Ok(resolved) => Ok(resolved.into_source()),
            Err(e) => {
                let hint = e
                    .chain()
                    .find_map(|c| c.downcast_ref::<NotFound>())
                    .and_then(NotFound::hint);
                Err(ImageError::Unsupported(match hint {
                    Some(h) => format!("{e:#} (hint: {h})"),
                    None => format!("{e:#}"),
                }))
            }
        }
    }
}

/// `-f` values, each `[PATTERN=]PATH`; `-` reads the Containerfile from standard input (once).
fn containerfiles(values: &[String]) -> anyhow::Result<Vec<Scoped<ContainerfileSource>>> {
    let mut out: Vec<Scoped<ContainerfileSource>> = Vec::new();
    let mut stdin_read = false;
    for v in values {
        let (scope, path) =
            match PlatformPattern::split_scope(v).with_context(|| format!("-f {v}"))? {
                Some((scope, rest)) => (Some(scope), rest),
                None => (None, v.as_str()),
            };
        anyhow::ensure!(
            !path.is_empty(),
            "-f {v}: no file after the platform pattern"
        );
        if let Some(other) = out.iter().find(|o| o.scope == scope) {
            bail!(
                "{} and -f {v} name files for the same platforms; give one{}",
                other.given,
                if scope.is_none() {
                    ", or scope one to some platforms (-f windows=PATH)"
                } else {
                    ""
                }
            );
        }
        let source = if path == "-" {
            anyhow::ensure!(!stdin_read, "-f -: standard input can be read only once");
            stdin_read = true;
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading the Containerfile from standard input")?;
            ContainerfileSource::Text {
                text,
                name: "<stdin>".into(),
            }
        } else {
            ContainerfileSource::Path(path.into())
        };
        out.push(Scoped {
            scope,
            value: source,
            given: format!("-f {v}"),
        });
    }
    Ok(out)
}

fn key_values(values: &[String], flag: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for v in values {
        let (k, v) = v
            .split_once('=')
            .with_context(|| format!("{flag} {v:?}: expected KEY=VALUE"))?;
        anyhow::ensure!(!k.is_empty(), "{flag} {v:?}: empty key");
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

/// `--build-arg KEY=VALUE`, or `KEY` alone to take the value from the environment (skipped
/// when unset, as Docker does), or `PATTERN=KEY=VALUE` for the platforms PATTERN matches.
fn build_args(values: &[String]) -> anyhow::Result<Vec<Scoped<(String, String)>>> {
    let mut out = Vec::new();
    for v in values {
        let given = format!("--build-arg {v}");
        if let Some((scope, rest)) =
            PlatformPattern::split_scope(v).with_context(|| given.clone())?
            && let Some((k, val)) = rest.split_once('=')
        {
            anyhow::ensure!(!k.is_empty(), "{given}: empty name");
            out.push(Scoped {
                scope: Some(scope),
                value: (k.to_string(), val.to_string()),
                given,
            });
            continue;
        }
        let (k, val) = match v.split_once('=') {
            Some((k, val)) => (k.to_string(), val.to_string()),
            None => match std::env::var(v) {
                Ok(val) => (v.clone(), val),
                Err(_) => continue,
            },
        };
        anyhow::ensure!(!k.is_empty(), "--build-arg {v:?}: empty name");
        anyhow::ensure!(
            !k.contains(['/', ':']),
            "{given}: a platform-scoped build arg is PATTERN=KEY=VALUE"
        );
        out.push(Scoped {
            scope: None,
            value: (k, val),
            given,
        });
    }
    Ok(out)
}

/// What each platform builds from (one group per Containerfile, context and args): a build
/// file's targets, or `-f` / `--build-arg` values scoped by platform pattern.
fn platform_groups(a: &BuildArgs, platforms: &[Platform]) -> anyhow::Result<Vec<PlatformGroup>> {
    let args = build_args(&a.build_arg)?;
    let mut groups = Vec::new();
    if let Some(file) = &a.build_file {
        if let Some(c) = &a.context {
            bail!(
                "--build-file {}: each target names its own context; drop the CONTEXT argument {}",
                file.display(),
                c.display()
            );
        }
        let targets = read_build_file(file)?;
        let listed: Vec<&Platform> = targets.iter().flat_map(|t| &t.platforms).collect();
        let same = |p: &Platform, q: &Platform| p.normalised() == q.normalised();
        for p in platforms {
            if !listed.iter().any(|q| same(p, q)) {
                let all: Vec<String> = listed.iter().map(|q| q.to_string()).collect();
                bail!(
                    "--platform {p}: not a platform of {} (it builds {})",
                    file.display(),
                    all.join(", ")
                );
            }
        }
        let mut chosen = Vec::new();
        for t in targets {
            for p in &t.platforms {
                if !platforms.is_empty() && !platforms.iter().any(|q| same(p, q)) {
                    continue;
                }
                let mut build_args = t.build_args.clone();
                build_args.extend(scoped_args(p, &args)?);
                chosen.push(p.clone());
                groups.push(PlatformGroup {
                    platforms: vec![p.clone()],
                    build_args,
                    ..t.clone()
                });
            }
        }
        check_scopes(&chosen, &args)?;
    } else {
        let context = a.context.clone().unwrap_or_else(|| PathBuf::from("."));
        let files = containerfiles(&a.file)?;
        let platforms = if platforms.is_empty() {
            vec![Platform::host()]
        } else {
            platforms.to_vec()
        };
        check_scopes(&platforms, &files)?;
        check_scopes(&platforms, &args)?;
        for p in &platforms {
            let containerfile = match scoped_value(p, &files)? {
                Some(f) => f.clone(),
                None => match default_containerfile(&context) {
                    Some(f) => ContainerfileSource::Path(f),
                    None if files.is_empty() => bail!(
                        "no Containerfile or Dockerfile in {}; name one with -f",
                        context.display()
                    ),
                    None => {
                        let given: Vec<&str> = files.iter().map(|f| f.given.as_str()).collect();
                        bail!(
                            "no Containerfile for platform {p}: {} match only other platforms and {} has no Containerfile or Dockerfile; add -f PATH or -f PATTERN=PATH for it",
                            given.join(", "),
                            context.display()
                        )
                    }
                },
            };
            groups.push(PlatformGroup {
                name: None,
                platforms: vec![p.clone()],
                containerfile,
                context: context.clone(),
                build_args: scoped_args(p, &args)?,
                target: None,
            });
        }
    }
    Ok(PlatformGroup::merge(groups))
}

/// `--secret id=ID,src=PATH` (also `source=`, `type=file`) or `id=ID,env=VAR` (`type=env`);
/// `id=ID` alone takes the environment variable ID, as BuildKit does.
fn secrets(values: &[String]) -> anyhow::Result<BTreeMap<String, SecretSource>> {
    let mut out = BTreeMap::new();
    for v in values {
        let (mut id, mut src, mut env, mut kind) = (None, None, None, None);
        for field in v.split(',') {
            let (k, val) = field
                .split_once('=')
                .with_context(|| format!("--secret {v:?}: expected KEY=VALUE fields"))?;
            match k.trim().to_ascii_lowercase().as_str() {
                "id" => id = Some(val.to_string()),
                "src" | "source" => src = Some(val.to_string()),
                "env" => env = Some(val.to_string()),
                "type" => kind = Some(val.to_ascii_lowercase()),
                other => bail!("--secret {v:?}: unknown field {other:?} (id, src, env, type)"),
            }
        }
        let id = id
            .filter(|i| !i.is_empty())
            .with_context(|| format!("--secret {v:?}: id= is required"))?;
        let source = match (kind.as_deref(), src, env) {
            (Some("env"), Some(var), None) | (_, None, Some(var)) => SecretSource::Env(var),
            (None | Some("file"), Some(path), None) => SecretSource::File(path.into()),
            (None | Some("env"), None, None) => SecretSource::Env(id.clone()),
            _ => bail!("--secret {v:?}: give either src=PATH or env=VAR"),
        };
        out.insert(id, source);
    }
    Ok(out)
}

/// Exit code for an error of `strata build`: 130 when it was interrupted.
pub fn exit_code(e: &anyhow::Error) -> Option<i32> {
    e.chain()
        .any(|c| {
            matches!(
                c.downcast_ref::<BuildError>(),
                Some(BuildError::Interrupted)
            )
        })
        .then_some(EXIT_INTERRUPTED)
}

/// On SIGINT/SIGTERM: stop the running RUN steps (their processes are killed, their mounts
/// vanish), stop the build between steps, and let it unwind and remove its directories; a
/// second signal exits at once.
fn watch_signals(cancel: CancelFlag) -> tokio::task::JoinHandle<()> {
    let mut interrupts = Interrupts::watch();
    tokio::spawn(async move {
        interrupts.recv().await;
        eprintln!("interrupted: stopping the build (again to exit at once)");
        strata_sandbox::interrupt_all();
        cancel.cancel();
        interrupts.recv().await;
        std::process::exit(EXIT_INTERRUPTED);
    })
}

fn compression(a: &BuildArgs) -> anyhow::Result<Compression> {
    let kind = a
        .compression
        .or(crate::config::settings()
            .compression
            .as_ref()
            .map(|s| s.value))
        .unwrap_or_default();
    layer_compression(kind, a.compression_level)
}

/// A layer compression from its kind and optional level (gzip 0–9, default 1; zstd -7–22,
/// default 3), as `build --compression K --compression-level N` and `repack --compression
/// K:N` spell it.
pub fn layer_compression(kind: CompressionKind, level: Option<i32>) -> anyhow::Result<Compression> {
    Ok(match kind {
        CompressionKind::None => Compression::None,
        CompressionKind::Gzip => {
            let level = level.unwrap_or(1);
            anyhow::ensure!(
                (0..=9).contains(&level),
                "compression level {level}: gzip levels are 0-9"
            );
            Compression::Gzip {
                level: level as u32,
            }
        }
        CompressionKind::Zstd => {
            let level = level.unwrap_or(3);
            anyhow::ensure!(
                (-7..=22).contains(&level),
                "compression level {level}: zstd levels are -7 to 22"
            );
            Compression::Zstd { level }
        }
    })
}

pub async fn run(a: BuildArgs) -> anyhow::Result<()> {
    let (manifest_format, out_format) = split_formats(&a.format)?;
    let configured = crate::config::settings().platforms.as_ref();
    let platforms = match (a.platform.is_empty(), configured) {
        (true, Some(c)) => &c.value,
        _ => &a.platform,
    };
    let platforms = platforms
        .iter()
        .map(|p| {
            p.parse::<Platform>()
                .with_context(|| format!("--platform {p}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let side = Side::new(&a.registry, None, None, None);
    let destination: Option<ImageName> = a.output.as_deref().map(str::parse).transpose()?;
    if a.push && a.tag.is_empty() {
        bail!("--push needs at least one --tag naming a registry image");
    }
    // Where --push goes is checked before anything is built, not after.
    let push_tags: Vec<Reference> = if a.push {
        a.tag
            .iter()
            .map(|t| push_reference(t))
            .collect::<anyhow::Result<_>>()?
    } else {
        Vec::new()
    };
    let mut options = BuildOptions {
        groups: platform_groups(&a, &platforms)?,
        target: a.target.clone(),
        build_arg_files: a.build_arg_file.clone(),
        labels: key_values(&a.label, "--label")?,
        annotations: key_values(&a.annotation, "--annotation")?,
        tags: a
            .tag
            .iter()
            .map(|t| t.strip_prefix("docker://").unwrap_or(t).to_string())
            .collect(),
        format: match manifest_format {
            Some(ManifestFormat::V2s2) => ImageFormat::V2s2,
            _ => ImageFormat::Oci,
        },
        compression: compression(&a)?,
        cache: if a.no_cache {
            CachePolicy::NoCache
        } else {
            CachePolicy::Use
        },
        no_cache_stages: a.no_cache_filter.clone(),
        secrets: secrets(&a.secret)?,
        network: match a.network {
            crate::cli::RunNetwork::Host => strata_build::Network::Host,
            crate::cli::RunNetwork::None => strata_build::Network::None,
        },
        run_executor: Some(Arc::new(SandboxExecutor::new())),
        source_date_epoch: a.source_date_epoch,
        squash: if a.squash_all {
            Squash::All
        } else if a.squash {
            Squash::New
        } else {
            Squash::None
        },
        jobs: a
            .jobs
            .or(crate::config::settings().jobs.as_ref().map(|s| s.value))
            .unwrap_or(0),
        max_uncompressed: a.max_uncompressed.unwrap_or_default(),
        iidfile: a.iidfile.clone(),
        ignore_file: a.ignorefile.clone(),
        ..Default::default()
    };
    // An OCI layout destination is built in place (its own build cache); other destinations
    // are written from the local store after the build.
    let mut push_to = None;
    match &destination {
        Some(ImageName::OciLayout { path, tag }) => {
            options.output = Output::Layout(path.clone());
            if let Some(t) = tag {
                options.tags.push(t.clone());
            }
        }
        Some(other) => push_to = Some(other.clone()),
        None => {}
    }
    let resolver = CliResolver {
        side: side.clone(),
        lookup: match a.pull {
            PullPolicy::Missing => Lookup::StoreThenRegistry,
            PullPolicy::Always => Lookup::RegistryOnly,
            PullPolicy::Never => Lookup::StoreOnly,
        },
        short_names: short_names(),
    };
    let view = Arc::new(View::new(if a.quiet || out_format == OutputFormat::Json {
        ViewMode::Silent
    } else if stderr_is_terminal() {
        ViewMode::Live
    } else {
        ViewMode::Lines
    }));
    let progress: Arc<dyn BuildProgress> = view.clone();
    let signals = watch_signals(options.cancel.clone());
    let result = build(&options, &resolver, Some(progress)).await;
    signals.abort();
    view.finish();
    let result = result?;

    let mut pushed = Vec::new();
    if let Some(dest) = &push_to {
        let sink = open::sink(dest, &side).await?;
        let report = push_result(
            &result,
            sink.as_ref(),
            &PushOptions {
                tag: open::destination_tag(dest),
                ..Default::default()
            },
        )
        .await
        .with_context(|| format!("writing the result to {dest}"))?;
        pushed.push((dest.to_string(), report.digest.to_string()));
    }
    if a.push {
        for reference in push_tags {
            let dest = ImageName::Registry(reference);
            let sink = open::sink(&dest, &side).await?;
            let report = push_result(
                &result,
                sink.as_ref(),
                &PushOptions {
                    tag: open::destination_tag(&dest),
                    ..Default::default()
                },
            )
            .await
            .with_context(|| format!("pushing the result to {dest}"))?;
            pushed.push((dest.to_string(), report.digest.to_string()));
        }
    }
    print_result(&result, &pushed, out_format, a.quiet)
}

/// A `--tag` to push to: a registry image name, with or without `docker://`.
fn push_reference(tag: &str) -> anyhow::Result<Reference> {
    tag.strip_prefix("docker://")
        .unwrap_or(tag)
        .parse()
        .with_context(|| {
            format!("--tag {tag}: --push needs registry image names (REGISTRY/REPO[:TAG])")
        })
}

fn print_result(
    result: &BuildResult,
    pushed: &[(String, String)],
    format: OutputFormat,
    quiet: bool,
) -> anyhow::Result<()> {
    if format == OutputFormat::Json {
        let mut value = serde_json::to_value(result)?;
        value["pushed"] = pushed
            .iter()
            .map(|(d, digest)| serde_json::json!({"destination": d, "digest": digest}))
            .collect();
        return print_json(&value);
    }
    if !quiet {
        let several_files = result
            .images
            .iter()
            .any(|i| i.containerfile != result.images[0].containerfile);
        for image in &result.images {
            let size: u64 = image.layers.iter().map(|l| l.size).sum();
            eprintln!(
                "{}: {} ({} layers, {}){}",
                image.platform,
                image.manifest,
                image.layers.len(),
                human_size(size),
                if several_files {
                    format!(" from {}", image.containerfile)
                } else {
                    String::new()
                }
            );
        }
        for t in &result.tags {
            eprintln!("tagged {t}");
        }
        for (d, _) in pushed {
            eprintln!("pushed {d}");
        }
    }
    outln!("{}", result.digest);
    Ok(())
}

pub async fn prune(a: PruneArgs) -> anyhow::Result<()> {
    let layout = match a.layout {
        Some(p) => p,
        None => open::store_path()?,
    };
    let keep = match a.keep_used_within.as_deref() {
        None => PruneKeep::Nothing,
        Some(d) => PruneKeep::UsedWithin(parse_duration(d)?),
    };
    let cache = default_cache_dir(&layout);
    let options = PruneOptions {
        keep,
        layout: Some(layout.clone()).filter(|p| p.join("index.json").exists()),
    };
    let report = tokio::task::spawn_blocking(move || prune_cache(&cache, &options)).await??;
    match a.format {
        OutputFormat::Json => print_json(&report),
        OutputFormat::Text => {
            outln!(
                "removed {} cache entries ({} kept, {} files), {} extracted layers, {} RUN cache mounts; run `strata gc {}` to free unreferenced layers",
                report.entries_removed,
                report.entries_kept,
                report.files_removed,
                report.layer_dirs_removed,
                report.cache_mounts_removed,
                layout.display()
            );
            Ok(())
        }
    }
}

/// `90s`, `30m`, `24h`, `7d`.
fn parse_duration(s: &str) -> anyhow::Result<Duration> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .with_context(|| format!("duration {s:?}: expected a number and s, m, h or d"))?;
    let secs = match unit {
        "s" | "" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => bail!("duration {s:?}: unit must be s, m, h or d"),
    };
    Ok(Duration::from_secs(secs))
}

// ---------------------------------------------------------------------------------------
// Progress: a live view on a terminal (one line per platform plus the finished steps above
// it), plain lines when piped, nothing with --quiet / --format json.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ViewMode {
    Silent,
    Lines,
    Live,
}

struct View {
    mode: ViewMode,
    multi: Option<MultiProgress>,
    bars: Mutex<BTreeMap<String, ProgressBar>>,
}

fn short(d: &strata_spec::Digest) -> String {
    d.encoded().chars().take(12).collect()
}

/// `STEP` for an unnamed stage (the engine names it by its index), else the stage's name.
fn stage_label(stage: &str) -> &str {
    if stage.chars().all(|c| c.is_ascii_digit()) {
        "STEP"
    } else {
        stage
    }
}

impl View {
    fn new(mode: ViewMode) -> View {
        View {
            mode,
            multi: (mode == ViewMode::Live)
                .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr())),
            bars: Mutex::new(BTreeMap::new()),
        }
    }

    /// One line of progress; it may carry image-provided text (platforms, RUN output), so it
    /// is printed terminal-safe.
    fn line(&self, text: String) {
        let text = terminal_safe(&text).into_owned();
        match (&self.mode, &self.multi) {
            (ViewMode::Silent, _) => {}
            (ViewMode::Live, Some(m)) => {
                let _ = m.println(text);
            }
            _ => eprintln!("{text}"),
        }
    }

    fn bar(&self, platform: &Platform) -> Option<ProgressBar> {
        let multi = self.multi.as_ref()?;
        let mut bars = self.bars.lock().ok()?;
        let key = platform.to_string();
        Some(
            bars.entry(key.clone())
                .or_insert_with(|| {
                    let bar = multi.add(ProgressBar::new_spinner());
                    bar.set_style(
                        ProgressStyle::with_template("{spinner} {prefix:.bold} {wide_msg}")
                            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                    );
                    bar.set_prefix(key);
                    bar.enable_steady_tick(Duration::from_millis(120));
                    bar
                })
                .clone(),
        )
    }

    fn finish(&self) {
        if let Ok(bars) = self.bars.lock() {
            for bar in bars.values() {
                bar.finish_and_clear();
            }
        }
    }
}

impl BuildProgress for View {
    fn event(&self, event: BuildEvent) {
        if self.mode == ViewMode::Silent {
            if let BuildEvent::Warning { message } = event {
                // Warnings matter even when quiet: they go to stderr, never stdout.
                eprintln!("warning: {}", terminal_safe(&message));
            }
            return;
        }
        match event {
            BuildEvent::BaseResolving { platform, image } => {
                if let Some(b) = self.bar(&platform) {
                    b.set_message(format!("resolving {image}"));
                }
            }
            BuildEvent::BaseResolved {
                platform,
                image,
                manifest,
            } => self.line(format!("[{platform}] FROM {image} ({})", short(&manifest))),
            BuildEvent::StepStarted {
                platform,
                stage,
                step,
                steps,
                instruction,
                ..
            } => {
                let stage = stage_label(&stage);
                let text = format!("[{platform}] {stage} {step}/{steps}: {instruction}");
                if let Some(b) = self.bar(&platform) {
                    b.set_message(format!("{stage} {step}/{steps}: {instruction}"));
                }
                if self.mode == ViewMode::Lines {
                    self.line(text);
                }
            }
            BuildEvent::StepCached {
                platform,
                stage,
                step,
                layer,
                ..
            } => self.line(format!(
                "[{platform}] {} {step}: cached{}",
                stage_label(&stage),
                layer.map(|l| format!(" {}", short(&l))).unwrap_or_default()
            )),
            BuildEvent::StepDone {
                platform,
                stage,
                step,
                layer,
                size,
                origin,
            } => {
                let what = match (layer, origin) {
                    (Some(l), Some(LayerOrigin::Shared)) => {
                        format!(" layer {} (same as another platform's)", short(&l))
                    }
                    (Some(l), Some(LayerOrigin::Cached)) => {
                        format!(" layer {} (found in cache)", short(&l))
                    }
                    (Some(l), _) => format!(" layer {} {}", short(&l), human_size(size)),
                    // Metadata steps: the start line said it all.
                    (None, _) => return,
                };
                let stage = stage_label(&stage);
                self.line(format!("[{platform}] {stage} {step}: done{what}"));
            }
            BuildEvent::LayerBytes {
                platform,
                stage,
                step,
                bytes,
            } => {
                if let Some(b) = self.bar(&platform) {
                    let stage = stage_label(&stage);
                    b.set_message(format!("{stage} {step}: {} written", human_size(bytes)));
                }
            }
            BuildEvent::ImageWritten { platform, manifest } => {
                if let Some(b) = self.bar(&platform) {
                    b.finish_and_clear();
                }
                self.line(format!("[{platform}] image {manifest}"));
            }
            BuildEvent::RunOutput {
                platform,
                stage,
                step,
                line,
            } => {
                let stage = stage_label(&stage);
                match self.bar(&platform) {
                    Some(b) => b.set_message(format!("{stage} {step}| {}", terminal_safe(&line))),
                    None => self.line(format!("[{platform}] {stage} {step}| {line}")),
                }
            }
            BuildEvent::Warning { message } => self.line(format!("warning: {message}")),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse_duration("7d").unwrap(), Duration::from_secs(604_800));
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("3w").is_err());
    }

    fn arg(s: &Scoped<(String, String)>) -> (Option<String>, &str, &str) {
        (
            s.scope.as_ref().map(|p| p.to_string()),
            s.value.0.as_str(),
            s.value.1.as_str(),
        )
    }

    #[test]
    fn build_arg_forms() {
        let args = build_args(&[
            "A=1".into(),
            "B=".into(),
            "windows/amd64:10.0.17763=WINBASE=1809".into(),
            "windows=WINBASE".into(),
            "C=x=y".into(),
        ])
        .unwrap();
        let args: Vec<_> = args.iter().map(arg).collect();
        assert_eq!(
            args,
            [
                (None, "A", "1"),
                (None, "B", ""),
                (Some("windows/amd64:10.0.17763".into()), "WINBASE", "1809"),
                // No second '=': a plain arg named after the os, as before scopes existed.
                (None, "windows", "WINBASE"),
                (None, "C", "x=y"),
            ]
        );
        assert!(build_args(&["=x".into()]).is_err());
        assert!(build_args(&["linux==x".into()]).is_err());
        assert!(build_args(&["linux/amd64=FOO".into()]).is_err());
        // PATH is always set for the test runner.
        let from_env = build_args(&["PATH".into()]).unwrap();
        assert_eq!(from_env[0].value.1, std::env::var("PATH").unwrap());
    }

    #[test]
    fn containerfile_forms() {
        let files =
            containerfiles(&["Dockerfile".into(), "windows=Dockerfile.windows".into()]).unwrap();
        assert_eq!(files[0].scope, None);
        assert_eq!(
            files[1].value,
            ContainerfileSource::Path("Dockerfile.windows".into())
        );
        let err = containerfiles(&["A".into(), "B".into()]).unwrap_err();
        assert!(format!("{err:#}").contains("-f A and -f B"), "{err:#}");
        assert!(containerfiles(&["windows=".into()]).is_err());
    }

    #[test]
    fn secret_forms() {
        let s = secrets(&[
            "id=a,src=/x".into(),
            "id=b,env=VAR".into(),
            "type=env,id=c,source=OTHER".into(),
            "id=d".into(),
        ])
        .unwrap();
        assert_eq!(s["a"], SecretSource::File("/x".into()));
        assert_eq!(s["b"], SecretSource::Env("VAR".into()));
        assert_eq!(s["c"], SecretSource::Env("OTHER".into()));
        assert_eq!(s["d"], SecretSource::Env("d".into()));
        for bad in ["src=/x", "id=a,src=/x,env=V", "id=a,what=1", "id"] {
            assert!(secrets(&[bad.into()]).is_err(), "{bad}");
        }
    }
}
