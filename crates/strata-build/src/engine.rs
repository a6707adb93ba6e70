//! The executor: stages per platform, instruction by instruction, with cache keys.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use strata_archive::LayerLayout;
use strata_containerfile::{
    CommandForm, Containerfile, Healthcheck, IgnoreMatcher, Instruction, InstructionKind, Scope,
};
use strata_spec::{
    Digest, HealthConfig, History, ImageConfig, MAX_CONFIG_BYTES, Platform, RuntimeConfig,
};
use strata_store::{LayoutSink, OciLayout};
use tokio::sync::{OnceCell, Semaphore};

use crate::base::{BaseImage, BaseTop, poisoned};
use crate::cache::{BuildCache, CachedLayer, KeyHasher, LAYER_FORMAT_VERSION, default_cache_dir};
use crate::fetch::Download;
use crate::hashcache::HashCache;
use crate::layer::{LayerRef, LayerSettings};
use crate::options::{ContainerfileSource, ImageFormat, Output, read_build_arg_file};
use crate::progress::{BuildEvent, BuildProgress, LayerOrigin};
use crate::source::{OwnerSource, SourceRoot};
use crate::time::{now_unix, rfc3339};
use crate::tree::Tree;
use crate::{BaseResolver, BuildError, BuildOptions, BuildResult, Compression, Location};

/// The `PATH` Docker gives Linux images built `FROM scratch`.
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Largest Containerfile read (the parser holds it in memory).
const MAX_CONTAINERFILE_BYTES: u64 = 16 * 1024 * 1024;
/// Bytes a history entry takes in the config besides its `created_by` text (an estimate
/// on the low side: the exact size is checked when the config is written).
const HISTORY_ENTRY_BYTES: usize = 64;
/// Bytes of JSON around a key of a map or a list entry (quotes, `:{}`, comma).
const MAP_ENTRY_BYTES: usize = 6;

/// `config_bytes` after a key is set to `value` in a map (env, labels), replacing `old`.
fn grown(config_bytes: usize, key: &str, value: &str, old: Option<&str>) -> usize {
    match old {
        Some(old) => (config_bytes + value.len()).saturating_sub(old.len()),
        None => config_bytes + key.len() + value.len() + MAP_ENTRY_BYTES,
    }
}

/// A `--from` this many edits (or fewer) from a stage name is taken for a typo of it.
const MAX_STAGE_TYPO_EDITS: usize = 2;
/// Largest ignore file read.
const MAX_IGNORE_FILE_BYTES: u64 = 4 * 1024 * 1024;
/// A value computed once per build by whichever task asks first; the others wait for it.
pub(crate) type Memo<T> = Arc<OnceCell<Arc<T>>>;

/// A layer produced in this build, with the hashes of the files read to write it.
pub(crate) type ProducedLayer = (CachedLayer, Arc<crate::layer::WrittenHashes>);

/// State shared by every platform of one build.
pub(crate) struct Shared<'r> {
    pub options: &'r BuildOptions,
    pub resolver: &'r dyn BaseResolver,
    pub progress: Option<Arc<dyn BuildProgress>>,
    pub layout: OciLayout,
    pub sink: LayoutSink,
    pub cache: BuildCache,
    pub scratch: tempfile::TempDir,
    pub now: u64,
    /// Folded into every chain root: settings that change layer bytes.
    pub salt: Digest,
    pub jobs: Arc<Semaphore>,
    pub(crate) bases: Mutex<HashMap<String, Arc<OnceCell<Arc<BaseTop>>>>>,
    pub(crate) images: Mutex<HashMap<(String, String), Memo<BaseImage>>>,
    pub(crate) inflight: Mutex<HashMap<Digest, Memo<ProducedLayer>>>,
    pub(crate) downloads: Mutex<HashMap<String, Arc<OnceCell<Arc<Download>>>>>,
    pub(crate) roots: Mutex<HashMap<Digest, Arc<OnceCell<Arc<SourceRoot>>>>>,
    /// Sources already globbed, walked and hashed (the same COPY on several platforms reads
    /// the context once).
    pub(crate) gathers: Mutex<HashMap<Digest, Memo<Vec<crate::gather::Gathered>>>>,
    /// Image layers as overlay lower dirs for RUN steps.
    pub(crate) layer_dirs: crate::layerdirs::LayerDirs,
    /// Whether RUN steps get overlay roots (probed once, at the first RUN that runs).
    pub(crate) run_rootfs: OnceCell<crate::runstep::RootfsKind>,
    /// Gzip segments shared by layer writers, when the build makes both Windows and other
    /// layers (whose tars differ around the same file data).
    pub(crate) segments: Option<Arc<crate::segments::SegmentCache>>,
}

impl Drop for Shared<'_> {
    fn drop(&mut self) {
        // Before the scratch dir goes: RUN upper dirs become cached layer dirs, when their
        // layers were written from them verbatim.
        if self.options.source_date_epoch.is_none() {
            self.layer_dirs.persist_uppers();
        }
    }
}

impl Shared<'_> {
    pub(crate) fn emit(&self, event: BuildEvent) {
        if let Some(p) = &self.progress {
            p.event(event);
        }
    }
    /// `created` of everything this build writes.
    pub(crate) fn created(&self) -> u64 {
        self.options.source_date_epoch.unwrap_or(self.now)
    }
    pub(crate) fn layer_settings(&self, windows: bool) -> LayerSettings {
        LayerSettings {
            compression: self.options.compression,
            layout: if windows {
                LayerLayout::Windows
            } else {
                LayerLayout::Linux
            },
            clamp: self.options.source_date_epoch,
            segments: self.segments.clone(),
        }
    }
}

/// One Containerfile with its context and build args: what a [`crate::PlatformGroup`]
/// becomes once read. Every platform of the group builds from it.
pub(crate) struct Recipe {
    pub file_name: String,
    pub file: Containerfile,
    pub context: Arc<SourceRoot>,
    /// Identifies the context and ignore file in keys of values computed from both (the
    /// same sources gathered for two recipes are one walk only when both agree).
    pub context_key: String,
    pub ignore: Option<Arc<(IgnoreMatcher, String)>>,
    pub hashes: Arc<Mutex<HashCache>>,
    pub build_args: BTreeMap<String, String>,
    /// The stage to build.
    pub target: usize,
    pub platforms: Vec<Platform>,
}

impl Recipe {
    pub(crate) fn at(&self, line: usize) -> Location {
        Location {
            file: self.file_name.clone(),
            line,
        }
    }
    pub(crate) fn escape(&self) -> char {
        self.file.directives.escape
    }
    /// Stage index for a name (`AS` alias, case-insensitive) or, with `allow_index`, a number.
    pub(crate) fn stage_index(&self, name: &str, allow_index: bool) -> Option<usize> {
        let lower = name.to_ascii_lowercase();
        if let Some(s) = self
            .file
            .stages
            .iter()
            .find(|s| s.from.alias.as_deref() == Some(lower.as_str()))
        {
            return Some(s.index);
        }
        if allow_index && let Ok(i) = name.parse::<usize>() {
            return (i < self.file.stages.len()).then_some(i);
        }
        None
    }
    /// Check a `--from` value that names no stage before it is taken for an image (which
    /// would mean asking a registry for it): a stage number out of range, a name that is
    /// not a valid image name, or a bare name one or two edits from a stage's (`buidler`
    /// for `builder`) is [`BuildError::UnknownStage`]. Anything else may be an image and is
    /// fine (an image named like a stage is written in full: `docker.io/library/buidler`).
    pub(crate) fn check_from(&self, from: &str, at: &Location) -> Result<(), BuildError> {
        if self.stage_index(from, true).is_some() {
            return Ok(());
        }
        let unknown = |suggestion: String| {
            Err(BuildError::UnknownStage {
                at: at.clone(),
                name: from.to_string(),
                available: self.stage_names(),
                suggestion,
            })
        };
        if from.is_empty() || from.bytes().all(|b| b.is_ascii_digit()) {
            return unknown(String::new());
        }
        if !from.contains(['/', ':', '@', '.']) {
            let lower = from.to_ascii_lowercase();
            let nearest = self
                .file
                .stages
                .iter()
                .filter_map(|s| s.from.alias.as_deref())
                .map(|alias| (strata_spec::edit_distance(alias, &lower), alias))
                .filter(|(d, alias)| *d <= MAX_STAGE_TYPO_EDITS && *d * 2 < alias.chars().count())
                .min();
            if let Some((_, alias)) = nearest {
                return unknown(format!(
                    "; did you mean {alias:?}? (an image of that name is written in full: docker.io/library/{lower})"
                ));
            }
        }
        if from.parse::<strata_copy::ImageName>().is_err() {
            return unknown(" and it is not a valid image name either".into());
        }
        Ok(())
    }

    pub(crate) fn stage_names(&self) -> String {
        let v: Vec<String> = self
            .file
            .stages
            .iter()
            .map(|s| match &s.from.alias {
                Some(a) => format!("{a} ({})", s.index),
                None => s.index.to_string(),
            })
            .collect();
        v.join(", ")
    }
}

/// A finished stage.
#[derive(Debug, Clone)]
pub(crate) struct BuiltStage {
    pub windows: bool,
    pub config: ImageConfig,
    pub layers: Vec<LayerRef>,
    /// Layers and history entries that come from the base image (kept by `--squash`).
    pub base_layers: usize,
    pub base_history: usize,
    pub history: Vec<History>,
    pub key: Digest,
    /// The base image name and manifest digest (for annotations), when FROM an image.
    pub base: Option<(String, Digest)>,
}

/// A stage being built.
pub(crate) struct StageState {
    pub index: usize,
    pub name: String,
    pub platform: Platform,
    pub windows: bool,
    pub config: ImageConfig,
    pub layers: Vec<LayerRef>,
    pub base_layers: usize,
    pub base_history: usize,
    pub history: Vec<History>,
    pub key: Digest,
    pub scope: Scope,
    /// The rootfs index, when computed (lazily, on the first cache miss that needs it).
    pub tree: Option<Tree>,
    /// CMD was set in this stage (ENTRYPOINT then keeps it).
    pub cmd_set: bool,
    /// A later COPY/ADD of this stage will need the rootfs index (else it is dropped after
    /// each layer instead of being kept up to date).
    pub tree_needed_later: bool,
    pub base: Option<(String, Digest)>,
    /// `--no-cache-filter` names this stage: its steps are rebuilt.
    pub no_cache: bool,
    /// The plain-directory root of RUN steps when overlayfs is unavailable.
    pub run_dir: Option<crate::runstep::RunDir>,
    /// Running estimate of the serialized image config (with history), kept step by step
    /// so that a config growing past [`MAX_CONFIG_BYTES`] fails at the line that does it
    /// without serializing the whole config at every step (quadratic).
    pub config_bytes: usize,
}

impl StageState {
    pub(crate) fn workdir(&self) -> String {
        self.config
            .config
            .as_ref()
            .and_then(|c| c.working_dir.clone())
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".into())
    }
    pub(crate) fn runtime(&mut self) -> &mut RuntimeConfig {
        self.config
            .config
            .get_or_insert_with(RuntimeConfig::default)
    }
    fn finish(self) -> BuiltStage {
        BuiltStage {
            windows: self.windows,
            config: self.config,
            layers: self.layers,
            base_layers: self.base_layers,
            base_history: self.base_history,
            history: self.history,
            key: self.key,
            base: self.base,
        }
    }
}

/// One target platform.
pub(crate) struct PlatformBuild<'s, 'r> {
    pub shared: &'s Shared<'r>,
    pub recipe: &'s Recipe,
    pub platform: Platform,
    pub global: Scope,
    stages: Mutex<HashMap<usize, Arc<BuiltStage>>>,
}

fn platform_args(prefix: &str, p: &Platform, out: &mut BTreeMap<String, String>) {
    let n = p.normalised();
    out.insert(format!("{prefix}PLATFORM"), n.short());
    out.insert(format!("{prefix}OS"), n.os.clone());
    out.insert(format!("{prefix}ARCH"), n.architecture.clone());
    out.insert(
        format!("{prefix}VARIANT"),
        n.variant.clone().unwrap_or_default(),
    );
}

impl<'s, 'r> PlatformBuild<'s, 'r> {
    fn new(
        shared: &'s Shared<'r>,
        recipe: &'s Recipe,
        platform: Platform,
    ) -> Result<Self, BuildError> {
        let mut predefined = BTreeMap::new();
        platform_args("TARGET", &platform, &mut predefined);
        platform_args("BUILD", &Platform::host(), &mut predefined);
        let global = Scope::global(
            &recipe.file.global_args,
            &recipe.build_args,
            &predefined,
            recipe.escape(),
        )
        .map_err(|source| BuildError::Expand {
            at: recipe.at(recipe
                .file
                .global_args
                .first()
                .map(|i| i.span.line)
                .unwrap_or(1)),
            source,
        })?;
        Ok(PlatformBuild {
            shared,
            recipe,
            platform,
            global,
            stages: Mutex::new(HashMap::new()),
        })
    }

    /// Build stage `index` (and, first, the stages it depends on). Each stage is built once.
    pub(crate) fn stage(
        &'s self,
        index: usize,
        visiting: Vec<usize>,
    ) -> BoxFuture<'s, Result<Arc<BuiltStage>, BuildError>> {
        Box::pin(async move {
            if let Some(done) = self
                .stages
                .lock()
                .map_err(|_| poisoned())?
                .get(&index)
                .cloned()
            {
                return Ok(done);
            }
            let stage = &self.recipe.file.stages[index];
            if visiting.contains(&index) {
                return Err(BuildError::StageCycle {
                    at: self.recipe.at(stage.span.line),
                    stage: stage
                        .from
                        .alias
                        .clone()
                        .unwrap_or_else(|| index.to_string()),
                });
            }
            let mut visiting = visiting;
            visiting.push(index);
            let built = Arc::new(self.run_stage(index, visiting).await?);
            self.stages
                .lock()
                .map_err(|_| poisoned())?
                .insert(index, Arc::clone(&built));
            Ok(built)
        })
    }

    async fn run_stage(
        &'s self,
        index: usize,
        visiting: Vec<usize>,
    ) -> Result<BuiltStage, BuildError> {
        let shared = self.shared;
        let recipe = self.recipe;
        let stage = &recipe.file.stages[index];
        let at = recipe.at(stage.span.line);
        let escape = recipe.escape();
        let expand = |w: &str| {
            self.global
                .expand(w, escape)
                .map_err(|source| BuildError::Expand {
                    at: at.clone(),
                    source,
                })
        };
        let image = expand(&stage.from.image)?;
        if image.is_empty() {
            return Err(BuildError::instruction(
                &at,
                &stage.original,
                "FROM names no image",
            ));
        }
        let platform = match &stage.from.platform {
            Some(p) => {
                let p = expand(p)?;
                p.parse::<Platform>()
                    .map_err(|e| BuildError::instruction(&at, &stage.original, e.to_string()))?
            }
            None => self.platform.clone(),
        };
        let windows = platform.normalised().os == "windows";
        let name = stage
            .from
            .alias
            .clone()
            .unwrap_or_else(|| index.to_string());

        let (config, layers, base_layers, history, base_history, key, base) =
            if let Some(j) = recipe.stage_index(&image, false).filter(|&j| j != index) {
                let parent = self.stage(j, visiting.clone()).await?;
                (
                    parent.config.clone(),
                    parent.layers.clone(),
                    parent.base_layers,
                    parent.history.clone(),
                    parent.base_history,
                    parent.key.clone(),
                    parent.base.clone(),
                )
            } else if image.eq_ignore_ascii_case("scratch") {
                let p = platform.normalised();
                let config = ImageConfig {
                    architecture: p.architecture.clone(),
                    os: p.os.clone(),
                    os_version: platform.os_version.clone(),
                    os_features: platform.os_features.clone(),
                    variant: p.variant.clone(),
                    config: Some(RuntimeConfig {
                        env: (!windows).then(|| vec![DEFAULT_PATH.to_string()]),
                        ..Default::default()
                    }),
                    ..Default::default()
                };
                let mut k = KeyHasher::new("from-scratch");
                k.field("salt", shared.salt.to_string().as_bytes())
                    .str("platform", &platform.to_string());
                (config, Vec::new(), 0, Vec::new(), 0, k.finish(), None)
            } else {
                let base = shared.base_image(&image, &platform).await?;
                let mut k = KeyHasher::new("from-image");
                k.field("salt", shared.salt.to_string().as_bytes())
                    .str("manifest", &base.manifest_digest.to_string())
                    .str("platform", &platform.to_string());
                let history = base.config.history.clone();
                let mut config = base.config.clone();
                config.history = Vec::new();
                config.rootfs = Default::default();
                (
                    config,
                    base.layers.clone(),
                    base.layers.len(),
                    history.clone(),
                    history.len(),
                    k.finish(),
                    Some((image.clone(), base.manifest_digest.clone())),
                )
            };

        let base_env = config
            .config
            .as_ref()
            .and_then(|c| c.env.clone())
            .unwrap_or_default();
        let scope = Scope::stage(&self.global, &base_env);
        let config_bytes = config.to_bytes().len()
            + history
                .iter()
                .map(|h| serde_json::to_vec(h).map_or(0, |v| v.len()))
                .sum::<usize>();
        let mut st = StageState {
            index,
            name,
            platform,
            windows,
            config,
            layers,
            base_layers,
            base_history,
            history,
            key,
            scope,
            tree: None,
            cmd_set: false,
            tree_needed_later: true,
            base,
            no_cache: shared.options.no_cache_stages.iter().any(|s| {
                s.eq_ignore_ascii_case(stage.from.alias.as_deref().unwrap_or(""))
                    || s.parse::<usize>() == Ok(index)
            }),
            run_dir: None,
            config_bytes,
        };

        // ONBUILD triggers of the base run first, then are cleared (Docker semantics).
        let triggers = st
            .config
            .config
            .as_mut()
            .and_then(|c| c.on_build.take())
            .unwrap_or_default();
        for (i, trigger) in triggers.iter().enumerate() {
            let at = Location {
                file: format!("{image} ONBUILD"),
                line: i + 1,
            };
            let parsed = strata_containerfile::parse(&format!("FROM scratch\n{trigger}\n"))
                .map_err(|source| BuildError::Parse {
                    file: at.file.clone(),
                    source,
                })?;
            let Some(instr) = parsed.stages.first().and_then(|s| s.instructions.first()) else {
                continue;
            };
            self.instruction(&mut st, instr, &at, i + 1, triggers.len(), &visiting)
                .await?;
        }

        let steps = stage.instructions.len();
        let last_copy = stage
            .instructions
            .iter()
            .rposition(|x| matches!(x.kind, InstructionKind::Copy(_) | InstructionKind::Add(_)));
        for (i, instr) in stage.instructions.iter().enumerate() {
            st.tree_needed_later = last_copy.is_some_and(|last| last > i);
            let at = recipe.at(instr.span.line);
            self.instruction(&mut st, instr, &at, i + 1, steps, &visiting)
                .await?;
        }
        Ok(st.finish())
    }

    fn history_entry(&self, created_by: &str, empty: bool) -> History {
        History {
            created: Some(rfc3339(self.shared.created())),
            created_by: Some(created_by.to_string()),
            author: None,
            comment: None,
            empty_layer: empty.then_some(true),
        }
    }

    /// Record a metadata-only step: history entry and chain key. The key chains the parent
    /// key (which stands for the config so far), the instruction and `effect`, the values
    /// it set as expanded in the stage's scope: so the key stands for the new config without
    /// hashing all of it at every step (quadratic in the number of steps).
    fn metadata_step(
        &self,
        st: &mut StageState,
        instr: &Instruction,
        effect: &[String],
        at: &Location,
    ) -> Result<(), BuildError> {
        let mut k = KeyHasher::new("metadata-step");
        k.str("parent", &st.key.to_string())
            .str("instruction", &instr.original);
        for value in effect {
            k.str("set", value);
        }
        k.str("author", st.config.author.as_deref().unwrap_or(""));
        st.key = k.finish();
        let created_by = instr.original.trim();
        st.config_bytes += created_by.len() + HISTORY_ENTRY_BYTES;
        if st.config_bytes as u64 > MAX_CONFIG_BYTES {
            return Err(BuildError::ConfigTooLarge {
                at: Some(at.clone()),
                what: format!("stage {:?}", st.name),
                limit: MAX_CONFIG_BYTES,
            });
        }
        st.history.push(self.history_entry(created_by, true));
        Ok(())
    }

    pub(crate) fn expand_in(
        &self,
        st: &StageState,
        word: &str,
        at: &Location,
    ) -> Result<String, BuildError> {
        st.scope
            .expand(word, self.recipe.escape())
            .map_err(|source| BuildError::Expand {
                at: at.clone(),
                source,
            })
    }

    /// [`Self::expand_in`] for a word that names a path (`what`: "the source", …): an empty
    /// or unset variable that makes the path empty, or puts a `//` in it that the word did
    /// not have, is an error naming that variable. (`TARGETVARIANT` and `BUILDVARIANT` are
    /// empty for most platforms by design and are not blamed.)
    pub(crate) fn expand_path_in(
        &self,
        st: &StageState,
        word: &str,
        at: &Location,
        what: &'static str,
    ) -> Result<String, BuildError> {
        let looked: std::cell::RefCell<Vec<(String, Option<String>)>> = Default::default();
        let lookup = |name: &str| {
            let value = st.scope.lookup(name);
            looked.borrow_mut().push((name.to_string(), value.clone()));
            value
        };
        let expanded = strata_containerfile::expand(word, &lookup, self.recipe.escape()).map_err(
            |source| BuildError::Expand {
                at: at.clone(),
                source,
            },
        )?;
        let broken = expanded.is_empty()
            || (expanded.contains("//") && !word.contains("//") && !expanded.contains("://"));
        if !broken {
            return Ok(expanded);
        }
        let looked = looked.into_inner();
        let culprit = looked.iter().find(|(name, value)| {
            value.as_deref().unwrap_or("").is_empty()
                && name != "TARGETVARIANT"
                && name != "BUILDVARIANT"
        });
        let Some((name, value)) = culprit else {
            return Ok(expanded);
        };
        let is_arg = st.scope.args().contains_key(name) || value.is_none();
        let (kind, advice) = if is_arg {
            (
                "ARG",
                format!("pass --build-arg {name}=VALUE or give the ARG a default"),
            )
        } else {
            ("ENV", format!("set ENV {name} to a value"))
        };
        let state = if value.is_some() { "empty" } else { "not set" };
        Err(BuildError::EmptyVariable {
            at: at.clone(),
            name: name.clone(),
            message: format!(
                "{kind} {name} is {state}, so {what} {word:?} expands to {expanded:?}; {advice}"
            ),
        })
    }

    pub(crate) fn shell_of(&self, st: &StageState) -> Vec<String> {
        st.config
            .config
            .as_ref()
            .and_then(|c| c.shell.clone())
            .unwrap_or_else(|| {
                if st.windows {
                    vec!["cmd".into(), "/S".into(), "/C".into()]
                } else {
                    vec!["/bin/sh".into(), "-c".into()]
                }
            })
    }

    pub(crate) fn command_args(&self, st: &StageState, form: &CommandForm) -> Vec<String> {
        match form {
            CommandForm::Exec(v) => v.clone(),
            CommandForm::Shell(s) => {
                let mut v = self.shell_of(st);
                v.push(s.clone());
                v
            }
        }
    }

    async fn instruction(
        &'s self,
        st: &mut StageState,
        instr: &Instruction,
        at: &Location,
        step: usize,
        steps: usize,
        visiting: &[usize],
    ) -> Result<(), BuildError> {
        let shared = self.shared;
        if shared.options.cancel.is_cancelled() {
            return Err(BuildError::Interrupted);
        }
        shared.emit(BuildEvent::StepStarted {
            platform: self.platform.clone(),
            stage: st.name.clone(),
            step,
            steps,
            line: at.line,
            instruction: instr.original.clone(),
        });
        let escape = self.recipe.escape();
        let bad = |msg: String| BuildError::instruction(at, &instr.original, msg);
        // What the step set, as expanded (for its key; see `metadata_step`).
        let mut effect: Vec<String> = Vec::new();
        match &instr.kind {
            InstructionKind::Arg(decls) => {
                for d in decls {
                    st.scope
                        .declare_arg(d, &self.global, &self.recipe.build_args, escape)
                        .map_err(|source| BuildError::Expand {
                            at: at.clone(),
                            source,
                        })?;
                }
                // ARG changes no config and no layer; RUN keys include the declared values.
                self.done(st, step, None);
                return Ok(());
            }
            InstructionKind::Env(pairs) => {
                for kv in pairs {
                    let k = self.expand_in(st, &kv.key, at)?;
                    let v = self.expand_in(st, &kv.value, at)?;
                    if k.is_empty() || k.contains('=') {
                        return Err(bad(format!("invalid environment variable name {k:?}")));
                    }
                    let (pos, old) = st.scope.set_env(&k, &v);
                    st.config_bytes = grown(st.config_bytes, &k, &v, old.as_deref());
                    // The config's env follows the scope's entry by entry (rebuilding the
                    // whole list at every ENV is quadratic); a base env with duplicate keys
                    // is rebuilt once.
                    let env_len = st.scope.env_len();
                    let entry = format!("{k}={v}");
                    let env = st.runtime().env.get_or_insert_with(Vec::new);
                    let in_step = if env.len() == env_len && pos < env.len() {
                        env[pos] = entry;
                        true
                    } else if env.len() + 1 == env_len && pos == env.len() {
                        env.push(entry);
                        true
                    } else {
                        false
                    };
                    if !in_step {
                        let all = st.scope.env();
                        st.runtime().env = Some(all);
                    }
                    effect.push(k);
                    effect.push(v);
                }
            }
            InstructionKind::Label(pairs) => {
                for kv in pairs {
                    let k = self.expand_in(st, &kv.key, at)?;
                    let v = self.expand_in(st, &kv.value, at)?;
                    if k.is_empty() {
                        return Err(bad("empty label name".into()));
                    }
                    let old = st
                        .runtime()
                        .labels
                        .get_or_insert_with(BTreeMap::new)
                        .insert(k.clone(), v.clone());
                    st.config_bytes = grown(st.config_bytes, &k, &v, old.as_deref());
                    effect.push(k);
                    effect.push(v);
                }
            }
            InstructionKind::Workdir(w) => {
                let w = self.expand_path_in(st, w, at, "WORKDIR")?;
                let w = if st.windows {
                    crate::copyplan::normalise_windows_path(&w)
                } else {
                    w
                };
                let parts = crate::copyplan::absolute_parts(&w, &st.workdir());
                let joined = format!(
                    "/{}",
                    parts
                        .iter()
                        .map(|p| String::from_utf8_lossy(p).into_owned())
                        .collect::<Vec<_>>()
                        .join("/")
                );
                // Windows images record the path as Windows does (`C:\app`).
                let stored = if st.windows {
                    format!("C:{}", joined.replace('/', "\\"))
                } else {
                    joined
                };
                effect.push(stored.clone());
                st.runtime().working_dir = Some(stored);
            }
            InstructionKind::User(u) => {
                let u = self.expand_in(st, u, at)?;
                effect.push(u.clone());
                st.runtime().user = Some(u);
            }
            InstructionKind::Expose(words) => {
                let mut ports = Vec::new();
                for w in words {
                    for p in
                        st.scope
                            .expand_words(w, escape)
                            .map_err(|source| BuildError::Expand {
                                at: at.clone(),
                                source,
                            })?
                    {
                        ports.extend(expose_ports(&p).map_err(&bad)?);
                    }
                }
                for p in &ports {
                    st.config_bytes += p.len() + MAP_ENTRY_BYTES;
                }
                effect.extend(ports.iter().cloned());
                let map = st.runtime().exposed_ports.get_or_insert_with(BTreeMap::new);
                for p in ports {
                    map.insert(p, serde_json::json!({}));
                }
            }
            InstructionKind::Volume(paths) => {
                let mut vols = Vec::new();
                for p in paths {
                    let v = self.expand_in(st, p, at)?;
                    if v.trim().is_empty() {
                        return Err(bad("VOLUME names an empty path".into()));
                    }
                    vols.push(v);
                }
                for v in &vols {
                    st.config_bytes += v.len() + MAP_ENTRY_BYTES;
                }
                effect.extend(vols.iter().cloned());
                let map = st.runtime().volumes.get_or_insert_with(BTreeMap::new);
                for v in vols {
                    map.insert(v, serde_json::json!({}));
                }
            }
            InstructionKind::Entrypoint(form) => {
                let args = self.command_args(st, form);
                effect.extend(args.iter().cloned());
                let windows_shell = st.windows && matches!(form, CommandForm::Shell(_));
                let cmd_set = st.cmd_set;
                let rt = st.runtime();
                rt.entrypoint = Some(args);
                if !cmd_set {
                    // An inherited CMD makes no sense with a new ENTRYPOINT: Docker drops it.
                    rt.cmd = None;
                }
                if windows_shell {
                    rt.args_escaped = Some(true);
                }
            }
            InstructionKind::Cmd(form) => {
                let args = self.command_args(st, form);
                effect.extend(args.iter().cloned());
                let windows_shell = st.windows && matches!(form, CommandForm::Shell(_));
                st.cmd_set = true;
                let rt = st.runtime();
                rt.cmd = Some(args);
                if windows_shell {
                    rt.args_escaped = Some(true);
                }
            }
            InstructionKind::Shell(v) => {
                if v.is_empty() {
                    return Err(bad("SHELL needs at least one word".into()));
                }
                st.runtime().shell = Some(v.clone());
            }
            InstructionKind::StopSignal(s) => {
                let s = self.expand_in(st, s, at)?;
                effect.push(s.clone());
                st.runtime().stop_signal = Some(s);
            }
            InstructionKind::Healthcheck(h) => {
                let hc = match h {
                    Healthcheck::None => HealthConfig {
                        test: Some(vec!["NONE".into()]),
                        ..Default::default()
                    },
                    Healthcheck::Check {
                        command,
                        interval,
                        timeout,
                        start_period,
                        start_interval,
                        retries,
                    } => {
                        let dur = |v: &Option<String>| -> Result<Option<i64>, BuildError> {
                            match v {
                                None => Ok(None),
                                Some(s) => strata_containerfile::parse_duration(s)
                                    .map(|d| Some(d.as_nanos().min(i64::MAX as u128) as i64))
                                    .map_err(|e| bad(format!("invalid duration {s:?}: {e}"))),
                            }
                        };
                        let test = match command {
                            CommandForm::Exec(v) => {
                                let mut t = vec!["CMD".to_string()];
                                t.extend(v.iter().cloned());
                                t
                            }
                            CommandForm::Shell(s) => vec!["CMD-SHELL".into(), s.clone()],
                        };
                        HealthConfig {
                            test: Some(test),
                            interval: dur(interval)?,
                            timeout: dur(timeout)?,
                            start_period: dur(start_period)?,
                            start_interval: dur(start_interval)?,
                            retries: retries.map(i64::from),
                        }
                    }
                };
                st.runtime().healthcheck = Some(hc);
            }
            InstructionKind::Onbuild(inner) => {
                let text = inner.original.trim().to_string();
                st.config_bytes += text.len() + MAP_ENTRY_BYTES;
                st.runtime()
                    .on_build
                    .get_or_insert_with(Vec::new)
                    .push(text);
            }
            InstructionKind::Maintainer(m) => {
                st.config.author = Some(m.clone());
            }
            InstructionKind::Copy(copy) => {
                return self
                    .copy_step(st, instr, copy, None, at, step, visiting)
                    .await;
            }
            InstructionKind::Add(add) => {
                return self
                    .copy_step(st, instr, &add.copy, Some(add), at, step, visiting)
                    .await;
            }
            InstructionKind::Run(run) => {
                return self.run_step(st, instr, run, at, step, visiting).await;
            }
            other => {
                return Err(bad(format!("unsupported instruction {other:?}")));
            }
        }
        self.metadata_step(st, instr, &effect, at)?;
        self.done(st, step, None);
        Ok(())
    }

    pub(crate) fn done(
        &self,
        st: &StageState,
        step: usize,
        layer: Option<(Digest, u64, LayerOrigin)>,
    ) {
        let (layer, size, origin) = match layer {
            Some((d, s, o)) => (Some(d), s, Some(o)),
            None => (None, 0, None),
        };
        self.shared.emit(BuildEvent::StepDone {
            platform: self.platform.clone(),
            stage: st.name.clone(),
            step,
            layer,
            size,
            origin,
        });
    }
}

/// `EXPOSE` words: `80`, `80/udp`, `8000-8002/tcp` → `80/tcp`, … (ranges expanded as Docker
/// does; at most 65536 ports).
fn expose_ports(word: &str) -> Result<Vec<String>, String> {
    let (ports, proto) = match word.split_once('/') {
        Some((p, proto)) => (p, proto.to_ascii_lowercase()),
        None => (word, "tcp".to_string()),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(format!("invalid protocol in EXPOSE {word:?}"));
    }
    let parse = |s: &str| {
        s.parse::<u16>()
            .map_err(|_| format!("invalid port in EXPOSE {word:?}"))
    };
    let (lo, hi) = match ports.split_once('-') {
        Some((a, b)) => (parse(a)?, parse(b)?),
        None => {
            let p = parse(ports)?;
            (p, p)
        }
    };
    if lo > hi {
        return Err(format!("invalid port range in EXPOSE {word:?}"));
    }
    Ok((lo..=hi).map(|p| format!("{p}/{proto}")).collect())
}

fn read_capped(path: &Path, limit: u64, what: &str) -> Result<String, BuildError> {
    let f = std::fs::File::open(path)
        .map_err(|e| BuildError::io(path, format!("cannot read {what}"), e))?;
    let md = f
        .metadata()
        .map_err(|e| BuildError::io(path, format!("cannot read {what}"), e))?;
    if md.len() > limit {
        return Err(BuildError::io(
            path,
            format!("{what} is larger than {limit} bytes"),
            std::io::Error::from(std::io::ErrorKind::InvalidData),
        ));
    }
    std::fs::read_to_string(path)
        .map_err(|e| BuildError::io(path, format!("cannot read {what}"), e))
}

/// The ignore file of a Containerfile: `--ignorefile`, else `<Containerfile>.containerignore`
/// / `<Containerfile>.dockerignore` beside the Containerfile, else the context's
/// `.containerignore` / `.dockerignore`.
fn ignore_file(
    options: &BuildOptions,
    containerfile: &ContainerfileSource,
    context: &Path,
) -> Option<PathBuf> {
    if let Some(p) = &options.ignore_file {
        return Some(p.clone());
    }
    if let ContainerfileSource::Path(cf) = containerfile {
        for ext in ["containerignore", "dockerignore"] {
            let mut s = cf.as_os_str().to_os_string();
            s.push(format!(".{ext}"));
            let p = PathBuf::from(s);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    [".containerignore", ".dockerignore"]
        .iter()
        .map(|n| context.join(n))
        .find(|p| p.is_file())
}

fn salt(options: &BuildOptions) -> Digest {
    let mut k = KeyHasher::new("build-salt");
    k.str("format", LAYER_FORMAT_VERSION);
    match options.compression {
        Compression::None => k.str("compression", "none"),
        Compression::Gzip { level } => k.str("compression", "gzip").num("level", level as u64),
        Compression::Zstd { level } => k.str("compression", "zstd").num("level", level as u64),
    };
    k.num(
        "source-date-epoch",
        options.source_date_epoch.map(|v| v + 1).unwrap_or(0),
    );
    k.finish()
}

/// The groups of a build: [`BuildOptions::groups`], or one group of the plain options.
fn groups_of(options: &BuildOptions) -> Result<Vec<crate::PlatformGroup>, BuildError> {
    if options.groups.is_empty() {
        return Ok(vec![crate::PlatformGroup {
            name: None,
            platforms: options.platforms.clone(),
            containerfile: options.containerfile.clone(),
            context: options.context.clone(),
            build_args: BTreeMap::new(),
            target: None,
        }]);
    }
    if !options.platforms.is_empty() {
        return Err(BuildError::InvalidOption {
            option: "platforms".into(),
            reason: "a build of platform groups takes its platforms from the groups".into(),
        });
    }
    Ok(options.groups.clone())
}

/// A group's name for messages: its own, else its position and Containerfile.
fn group_label(index: usize, group: &crate::PlatformGroup) -> String {
    match &group.name {
        Some(n) => n.clone(),
        None => format!("group {} ({})", index + 1, group.containerfile_name()),
    }
}

/// A context directory opened once per build: its canonical path, root and hash cache.
type OpenContext = (PathBuf, Arc<SourceRoot>, Arc<Mutex<HashCache>>);

/// Read and parse a group's Containerfile, open its context (shared with other groups of the
/// same directory) and ignore file, and settle its build args and target stage.
fn recipe(
    options: &BuildOptions,
    group: &crate::PlatformGroup,
    platforms: Vec<Platform>,
    contexts: &mut Vec<OpenContext>,
    layout: &OciLayout,
    cache: &BuildCache,
) -> Result<Recipe, BuildError> {
    let (text, file_name) = match &group.containerfile {
        ContainerfileSource::Path(p) => (
            read_capped(p, MAX_CONTAINERFILE_BYTES, "Containerfile")?,
            p.display().to_string(),
        ),
        ContainerfileSource::Text { text, name } => (text.clone(), name.clone()),
    };
    let file = strata_containerfile::parse(&text).map_err(|source| BuildError::Parse {
        file: file_name.clone(),
        source,
    })?;
    if file.stages.is_empty() {
        return Err(BuildError::Parse {
            file: file_name.clone(),
            source: strata_containerfile::ParseError {
                line: 1,
                message: "no FROM instruction".into(),
                text: String::new(),
            },
        });
    }
    // Absolute, once: RUN bind mounts hand paths under it to the sandbox, which resolves
    // them from another working directory (a relative context, the default `.`, named
    // nothing there). It also identifies a context shared by several groups.
    let identity = std::fs::canonicalize(&group.context)
        .map_err(|e| BuildError::io(&group.context, "cannot open the build context", e))?;
    let (context, hashes) = match contexts.iter().find(|(p, _, _)| *p == identity) {
        Some((_, root, hashes)) => (Arc::clone(root), Arc::clone(hashes)),
        None => {
            let mut root = SourceRoot::open(&identity, OwnerSource::Inode)
                .map_err(|e| BuildError::io(&group.context, "cannot open the build context", e))?;
            root.skip_dir(layout.root());
            let root = Arc::new(root);
            let hashes = Arc::new(Mutex::new(HashCache::load(
                cache.hash_cache_file(&group.context),
            )));
            contexts.push((identity.clone(), Arc::clone(&root), Arc::clone(&hashes)));
            (root, hashes)
        }
    };
    let ignore_path = ignore_file(options, &group.containerfile, &group.context);
    let ignore = match &ignore_path {
        Some(p) => {
            let text = read_capped(p, MAX_IGNORE_FILE_BYTES, "ignore file")?;
            let m = IgnoreMatcher::parse(&text).map_err(|source| BuildError::Parse {
                file: p.display().to_string(),
                source,
            })?;
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            Some(Arc::new((m, name)))
        }
        None => None,
    };
    let mut build_args = BTreeMap::new();
    for f in &options.build_arg_files {
        build_args.extend(read_build_arg_file(f)?);
    }
    build_args.extend(options.build_args.clone());
    build_args.extend(group.build_args.clone());
    let mut recipe = Recipe {
        file_name,
        file,
        context,
        context_key: format!(
            "{}\0{}",
            identity.display(),
            ignore_path
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        ),
        ignore,
        hashes,
        build_args,
        target: 0,
        platforms,
    };
    recipe.target = match group.target.as_ref().or(options.target.as_ref()) {
        Some(t) => recipe
            .stage_index(t, true)
            .ok_or_else(|| BuildError::TargetNotFound {
                target: t.clone(),
                available: recipe.stage_names(),
            })?,
        None => recipe.file.stages.len() - 1,
    };
    Ok(recipe)
}

/// Build the Containerfile for every platform of `options` (or each group's Containerfile
/// for its platforms) into one result; see the crate docs.
pub async fn build(
    options: &BuildOptions,
    resolver: &dyn BaseResolver,
    progress: Option<Arc<dyn BuildProgress>>,
) -> Result<BuildResult, BuildError> {
    if options.format == ImageFormat::V2s2
        && matches!(options.compression, Compression::Zstd { .. })
    {
        return Err(BuildError::InvalidOption {
            option: "compression".into(),
            reason: "zstd layers cannot be described by Docker schema 2 (use the OCI format)"
                .into(),
        });
    }
    // Each platform once, in one group only.
    let groups = groups_of(options)?;
    let mut seen: Vec<(Platform, String)> = Vec::new();
    let mut group_platforms = Vec::new();
    for (i, g) in groups.iter().enumerate() {
        let mut mine: Vec<Platform> = Vec::new();
        let listed = if g.platforms.is_empty() {
            vec![Platform::host()]
        } else {
            g.platforms.clone()
        };
        for p in listed {
            if mine.contains(&p) {
                continue;
            }
            if let Some((_, other)) = seen.iter().find(|(s, _)| *s == p) {
                return Err(BuildError::PlatformInTwoGroups {
                    platform: Box::new(p),
                    first: other.clone(),
                    second: group_label(i, g),
                });
            }
            seen.push((p.clone(), group_label(i, g)));
            mine.push(p);
        }
        group_platforms.push(mine);
    }
    let layout = match &options.output {
        Output::Store => strata_store::default_store(),
        Output::Layout(p) => OciLayout::create_or_open(p),
    }
    .map_err(|e| BuildError::store("opening the output layout", e))?;
    // Held for the whole build: gc cannot collect layers written but not yet tagged.
    let _guard = layout
        .writer_guard()
        .map_err(|e| BuildError::store("locking the output layout", e))?;
    let sink = LayoutSink::new(layout.clone(), format!("oci:{}", layout.root().display()))
        .map_err(|e| BuildError::store("opening the output layout", e))?;
    let cache_dir = options
        .cache_dir
        .clone()
        .unwrap_or_else(|| default_cache_dir(layout.root()));
    let cache = BuildCache::new(cache_dir, options.cache);
    let mut contexts = Vec::new();
    let mut recipes = Vec::new();
    for (g, platforms) in groups.iter().zip(group_platforms) {
        recipes.push(recipe(
            options,
            g,
            platforms,
            &mut contexts,
            &layout,
            &cache,
        )?);
    }

    let platforms: Vec<&Platform> = recipes.iter().flat_map(|r| &r.platforms).collect();
    let jobs = if options.jobs == 0 {
        strata_archive::default_workers()
    } else {
        options.jobs
    };
    let scratch = cache.temp_dir()?;
    let layout_root = layout.root().to_path_buf();
    let windows = platforms.iter().filter(|p| p.os == "windows").count();
    let segments = if matches!(options.compression, Compression::Gzip { .. })
        && windows > 0
        && windows < platforms.len()
    {
        Some(
            crate::segments::SegmentCache::new(scratch.path())
                .map_err(|e| BuildError::io(scratch.path(), "cannot create a spool file", e))?,
        )
    } else {
        None
    };
    let shared = Shared {
        options,
        resolver,
        progress,
        layout,
        sink,
        cache,
        scratch,
        now: now_unix(),
        salt: salt(options),
        jobs: Arc::new(Semaphore::new(jobs.max(1))),
        bases: Mutex::new(HashMap::new()),
        images: Mutex::new(HashMap::new()),
        inflight: Mutex::new(HashMap::new()),
        downloads: Mutex::new(HashMap::new()),
        roots: Mutex::new(HashMap::new()),
        gathers: Mutex::new(HashMap::new()),
        layer_dirs: crate::layerdirs::LayerDirs::new(
            layout_root.as_path(),
            options.max_uncompressed,
        ),
        run_rootfs: OnceCell::new(),
        segments,
    };
    warn_unused_args(&shared, &recipes);
    check_copy_froms(&recipes)?;

    let mut builds: Vec<PlatformBuild<'_, '_>> = Vec::new();
    for r in &recipes {
        for p in &r.platforms {
            builds.push(PlatformBuild::new(&shared, r, p.clone())?);
        }
    }
    let images = futures::future::try_join_all(builds.iter().map(|b| async move {
        let stage = b.stage(b.recipe.target, Vec::new()).await?;
        b.finish_image(stage).await
    }))
    .await?;
    let result = crate::output::write_result(&shared, images).await?;
    for (_, _, hashes) in &contexts {
        if let Ok(mut h) = hashes.lock()
            && let Err(e) = h.save()
        {
            tracing::warn!("cannot save the context hash cache: {e}");
        }
    }
    if let Some(path) = &options.iidfile {
        std::fs::write(path, result.image_id())
            .map_err(|e| BuildError::io(path, "cannot write the iidfile", e))?;
    }
    Ok(result)
}

/// Every literal `COPY/ADD --from` names a stage or may be an image ([`Recipe::check_from`]),
/// checked before any stage runs (so before any registry is asked for a base). Values with
/// variables are checked when expanded.
fn check_copy_froms(recipes: &[Recipe]) -> Result<(), BuildError> {
    for recipe in recipes {
        for stage in &recipe.file.stages {
            for instruction in &stage.instructions {
                let copy = match &instruction.kind {
                    InstructionKind::Copy(c) => c,
                    InstructionKind::Add(a) => &a.copy,
                    _ => continue,
                };
                if let Some(from) = copy.from.as_deref().filter(|f| !f.contains('$')) {
                    recipe.check_from(from, &recipe.at(instruction.span.line))?;
                }
            }
        }
    }
    Ok(())
}

/// Warn about build args no ARG of any Containerfile they were given to consumes.
fn warn_unused_args(shared: &Shared<'_>, recipes: &[Recipe]) {
    let mut unused: Vec<String> = Vec::new();
    for (i, r) in recipes.iter().enumerate() {
        for name in Scope::unused_build_args(&r.file, &r.build_args) {
            let used_elsewhere = recipes.iter().enumerate().any(|(j, o)| {
                j != i
                    && o.build_args.contains_key(&name)
                    && !Scope::unused_build_args(&o.file, &o.build_args).contains(&name)
            });
            if !used_elsewhere && !unused.contains(&name) {
                unused.push(name);
            }
        }
    }
    if !unused.is_empty() {
        shared.emit(BuildEvent::Warning {
            message: format!("build args not consumed by any ARG: {}", unused.join(", ")),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expose_words() {
        assert_eq!(expose_ports("80").unwrap(), ["80/tcp"]);
        assert_eq!(expose_ports("53/UDP").unwrap(), ["53/udp"]);
        assert_eq!(
            expose_ports("8000-8002").unwrap(),
            ["8000/tcp", "8001/tcp", "8002/tcp"]
        );
        assert!(expose_ports("x").is_err());
        assert!(expose_ports("80/icmp").is_err());
        assert!(expose_ports("9-1").is_err());
    }
}
