//! The RUN step: command, environment and mounts → step key → (on a miss) root filesystem,
//! executor, diff → layer.
//!
//! Root filesystem: with overlayfs, the stage's layers as lower dirs (each extracted once and
//! cached by DiffId, `layerdirs.rs`; layers of earlier RUN steps of this build are their
//! upper dirs) and a fresh upper dir whose contents *are* the step's diff, so the cost of a
//! step grows with what it changes, not with the image. Without overlayfs (strata in a
//! container on overlayfs, kernels that refuse it), each stage keeps one plain directory
//! holding its filesystem, brought up to date by extracting the layers added since the last
//! RUN, snapshotted, changed in place and diffed (`dirdiff.rs`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use strata_containerfile::{CommandForm, Instruction, Mount, RunInstr};
use strata_sandbox::{Access, MountSpec, Network, OutputSink, Rootfs};
use strata_spec::Digest;

use crate::cache::{CachedLayer, KeyHasher};
use crate::engine::{PlatformBuild, StageState};
use crate::error::join_error;
use crate::layer::{self, LayerRef};
use crate::layerdirs::{make_dir, remove_tree, unique_dir};
use crate::progress::{BuildEvent, BuildProgress, LayerOrigin};
use crate::run::{RunFailure, RunFailureKind, RunRequest};
use crate::runmount::{self, MountPlaces, MountRoot, PlannedMount};
use crate::{BuildError, Location};
use strata_archive::ArchiveError;

/// Longest line of RUN output sent as one [`BuildEvent::RunOutput`] (a step printing
/// megabytes without a newline must not grow memory).
pub const MAX_OUTPUT_LINE_BYTES: usize = 4096;
/// Largest host `/etc/resolv.conf` copied into steps.
const MAX_RESOLV_CONF_BYTES: u64 = 64 * 1024;
/// Where a `RUN <<EOF` script starting with `#!` is mounted (BuildKit's path).
const PIPES_DIR: &str = "/dev/pipes";
/// Default directory of secret files (`--mount=type=secret,id=x` → `/run/secrets/x`).
const SECRETS_DIR: &str = "/run/secrets";
/// The hostname steps see (strata-sandbox's default).
const HOSTNAME: &str = "strata";

/// Which root filesystems RUN steps of this build use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RootfsKind {
    Overlay,
    Dir,
}

/// A stage's plain-directory root (the fallback): its path and how many of the stage's
/// layers it holds. Removed when the stage is done.
#[derive(Debug)]
pub(crate) struct RunDir {
    path: PathBuf,
    applied: usize,
}

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = remove_tree(&self.path);
    }
}

/// The command after the SHELL and heredoc rules, and the script file to mount, if any.
struct Command {
    args: Vec<String>,
    script: Option<(String, String)>,
}

/// `<<EOF`, `<<-EOF`, `<<"EOF"`, `3<<EOF`: the whole command is one heredoc opener
/// (BuildKit's `MustParseHeredoc`: digits, `<<`, optional `-`, one word without `<`).
fn is_single_heredoc(command: &str) -> bool {
    let rest = command
        .trim()
        .trim_start_matches(|c: char| c.is_ascii_digit());
    let Some(rest) = rest.strip_prefix("<<") else {
        return false;
    };
    let rest = rest.strip_prefix('-').unwrap_or(rest).trim();
    !rest.is_empty() && !rest.contains('<') && !rest.contains(char::is_whitespace)
}

/// BuildKit's heredoc rules for RUN: one heredoc opening the command runs as a script when
/// it starts with `#!`, else its body goes to the shell; otherwise the command is rebuilt
/// as `cmd\nbody\nNAME…` for the shell to read its own heredocs.
fn command_of(form: &CommandForm, run: &RunInstr, shell: &[String]) -> Command {
    let with_shell = |text: String| {
        let mut v = shell.to_vec();
        v.push(text);
        v
    };
    match form {
        CommandForm::Exec(v) => Command {
            args: v.clone(),
            script: None,
        },
        CommandForm::Shell(s) if run.heredocs.is_empty() => Command {
            args: with_shell(s.clone()),
            script: None,
        },
        CommandForm::Shell(s) => {
            if is_single_heredoc(s)
                && let Some(first) = run.heredocs.first()
            {
                if first.content.starts_with("#!") {
                    return Command {
                        args: vec![format!("{PIPES_DIR}/{}", first.name)],
                        script: Some((first.name.clone(), first.content.clone())),
                    };
                }
                return Command {
                    args: with_shell(first.content.clone()),
                    script: None,
                };
            }
            let mut full = s.clone();
            for h in &run.heredocs {
                full.push('\n');
                full.push_str(&h.content);
                full.push_str(&h.name);
            }
            Command {
                args: with_shell(full),
                script: None,
            }
        }
    }
}

/// Turns output chunks into line events.
struct Lines {
    pending: Mutex<Vec<u8>>,
    emit: Box<dyn Fn(String) + Send + Sync>,
}

impl Lines {
    fn push(&self, chunk: &[u8]) {
        let Ok(mut pending) = self.pending.lock() else {
            return;
        };
        for &b in chunk {
            if b == b'\n' {
                self.flush_locked(&mut pending);
            } else {
                pending.push(b);
                if pending.len() >= MAX_OUTPUT_LINE_BYTES {
                    self.flush_locked(&mut pending);
                }
            }
        }
    }
    fn flush_locked(&self, pending: &mut Vec<u8>) {
        let line = String::from_utf8_lossy(pending)
            .trim_end_matches('\r')
            .to_string();
        pending.clear();
        (self.emit)(line);
    }
    fn finish(&self) {
        if let Ok(mut pending) = self.pending.lock()
            && !pending.is_empty()
        {
            self.flush_locked(&mut pending);
        }
    }
}

fn hosts_file() -> String {
    format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{HOSTNAME}\n"
    )
}

fn host_resolv_conf() -> Option<String> {
    use std::io::Read;
    let f = std::fs::File::open("/etc/resolv.conf").ok()?;
    let mut text = String::new();
    f.take(MAX_RESOLV_CONF_BYTES)
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
}

/// `RUN |2 A=1 B=2 /bin/sh -c cmd`: BuildKit's history text (the build args a step sees are
/// part of what it ran, and Docker shows them the same way: use secrets, not ARGs, for
/// credentials).
fn history_text(args: &[String], build_args: &BTreeMap<String, String>) -> String {
    let mut s = String::from("RUN ");
    if !build_args.is_empty() {
        s.push_str(&format!("|{} ", build_args.len()));
        for (k, v) in build_args {
            s.push_str(&format!("{k}={v} "));
        }
    }
    s.push_str(&args.join(" "));
    s
}

fn chain_key(step_key: &Digest, layer: &Digest) -> Digest {
    // Later steps depend on what this one produced, not only on how it was asked: a step
    // rebuilt by --no-cache(-filter) with a different result invalidates what follows.
    let mut k = KeyHasher::new("run-chain");
    k.str("step", &step_key.to_string())
        .str("layer", &layer.to_string());
    k.finish()
}

impl<'s, 'r> PlatformBuild<'s, 'r> {
    /// The root a `--mount` reads from: the context, a stage, or an image, and an identity
    /// of it for the step key (`None` for the context, whose content is hashed).
    async fn mount_root(
        &'s self,
        st: &StageState,
        from: Option<&str>,
        at: &Location,
        visiting: &[usize],
    ) -> Result<(MountRoot, Option<Digest>), BuildError> {
        let Some(f) = from else {
            return Ok((
                MountRoot {
                    root: Arc::clone(&self.recipe.context),
                    context: true,
                },
                None,
            ));
        };
        let from = self.resolve_from(st, f, at, visiting).await?;
        Ok((
            MountRoot {
                root: from.root,
                context: false,
            },
            Some(from.key),
        ))
    }

    /// Resolve the `--mount`s: what the key needs (descriptions and source identities) and
    /// what `prepare` makes real on a miss.
    async fn plan_mounts(
        &'s self,
        st: &StageState,
        mounts: &[Mount],
        workdir: &str,
        at: &Location,
        instruction: &str,
        visiting: &[usize],
    ) -> Result<(Vec<PlannedMount>, Vec<String>), BuildError> {
        let bad = |msg: String| BuildError::instruction(at, instruction, msg);
        let mut planned = Vec::new();
        let mut key = Vec::new();
        for m in mounts {
            // The parsed mount (never a secret value: only ids, targets and options).
            key.push(format!("{m:?}"));
            match m {
                Mount::Bind {
                    target,
                    source,
                    from,
                    read_write,
                } => {
                    let (root, identity) =
                        self.mount_root(st, from.as_deref(), at, visiting).await?;
                    let rel = runmount::resolve_source(&root, source.as_deref())
                        .map_err(|e| bad(format!("--mount type=bind: {e}")))?
                        .ok_or_else(|| BuildError::OutsideContext {
                            at: at.clone(),
                            path: source.clone().unwrap_or_default(),
                        })?;
                    let kept = match identity {
                        Some(id) => {
                            key.push(format!("bind-root {id} {}", String::from_utf8_lossy(&rel)));
                            None
                        }
                        None => {
                            let r = Arc::clone(&root.root);
                            let ignore = self.recipe.ignore.clone();
                            let hashes = Arc::clone(&self.recipe.hashes);
                            let rel2 = rel.clone();
                            let (id, kept) = tokio::task::spawn_blocking(move || {
                                runmount::context_identity(
                                    &r,
                                    &rel2,
                                    ignore.as_deref().map(|i| &i.0),
                                    &hashes,
                                )
                            })
                            .await
                            .map_err(join_error)??;
                            key.push(format!(
                                "bind-context {id} {}",
                                String::from_utf8_lossy(&rel)
                            ));
                            kept
                        }
                    };
                    planned.push(PlannedMount::Bind {
                        target: runmount::absolute_target(target, workdir),
                        root,
                        rel,
                        kept,
                        access: if *read_write {
                            Access::ReadWrite
                        } else {
                            Access::ReadOnly
                        },
                    });
                }
                Mount::Cache {
                    target,
                    id,
                    sharing,
                    from,
                    source,
                    read_only,
                    mode,
                    uid,
                    gid,
                } => {
                    let target = runmount::absolute_target(target, workdir);
                    let id = id.clone().unwrap_or_else(|| target.clone());
                    let seed = match from {
                        None => None,
                        Some(_) => {
                            let (root, identity) =
                                self.mount_root(st, from.as_deref(), at, visiting).await?;
                            let rel = runmount::resolve_source(&root, source.as_deref())
                                .map_err(|e| bad(format!("--mount type=cache: {e}")))?
                                .ok_or_else(|| BuildError::OutsideContext {
                                    at: at.clone(),
                                    path: source.clone().unwrap_or_default(),
                                })?;
                            if let Some(i) = identity {
                                key.push(format!("cache-seed {i}"));
                            }
                            Some((root, rel))
                        }
                    };
                    planned.push(PlannedMount::Cache {
                        target,
                        name: runmount::cache_dir_name(&id),
                        sharing: *sharing,
                        access: if *read_only {
                            Access::ReadOnly
                        } else {
                            Access::ReadWrite
                        },
                        mode: mode.unwrap_or(0o755),
                        uid: uid.unwrap_or(0),
                        gid: gid.unwrap_or(0),
                        seed,
                    });
                }
                Mount::Tmpfs { target, size } => planned.push(PlannedMount::Tmpfs {
                    target: runmount::absolute_target(target, workdir),
                    size: *size,
                }),
                Mount::Secret {
                    id,
                    target,
                    env,
                    required,
                    mode,
                    uid,
                    gid,
                } => {
                    let target = match (target, env) {
                        (Some(t), _) => Some(runmount::absolute_target(t, SECRETS_DIR)),
                        (None, Some(_)) => None,
                        (None, None) => Some(format!("{SECRETS_DIR}/{id}")),
                    };
                    planned.push(PlannedMount::Secret {
                        id: id.clone(),
                        target,
                        env: env.clone(),
                        required: *required,
                        mode: *mode,
                        uid: *uid,
                        gid: *gid,
                    });
                }
                Mount::Ssh { .. } => {
                    return Err(bad("--mount type=ssh is not supported".into()));
                }
            }
        }
        Ok((planned, key))
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn run_step(
        &'s self,
        st: &mut StageState,
        instr: &Instruction,
        run: &RunInstr,
        at: &Location,
        step: usize,
        visiting: &[usize],
    ) -> Result<(), BuildError> {
        let shared = self.shared;
        if st.windows {
            return Err(BuildError::RunOnWindows {
                at: at.clone(),
                platform: Box::new(st.platform.clone()),
                instruction: instr.original.clone(),
            });
        }
        let Some(executor) = shared.options.run_executor.clone() else {
            return Err(BuildError::RunNotSupported {
                at: at.clone(),
                instruction: instr.original.clone(),
            });
        };
        let bad = |msg: String| BuildError::instruction(at, &instr.original, msg);
        let shell = self.shell_of(st);
        let command = command_of(&run.command, run, &shell);
        let run_env = st.scope.run_env();
        let env: Vec<String> = run_env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let env_names: std::collections::HashSet<String> = st
            .scope
            .env()
            .iter()
            .map(|e| e.split('=').next().unwrap_or_default().to_string())
            .collect();
        let build_args: BTreeMap<String, String> = st
            .scope
            .args()
            .iter()
            .filter(|(k, _)| !env_names.contains(k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let user = st
            .config
            .config
            .as_ref()
            .and_then(|c| c.user.clone())
            .unwrap_or_default();
        let workdir = st.workdir();
        let mut parsed = Vec::new();
        for m in &run.mounts {
            parsed.push(
                strata_containerfile::parse_mount_expanding(
                    m,
                    &|n| st.scope.lookup(n),
                    self.recipe.escape(),
                )
                .map_err(|e| bad(format!("--mount {m}: {e}")))?,
            );
        }
        let network = match run
            .network
            .as_ref()
            .map(|n| self.expand_in(st, n, at))
            .transpose()?
            .as_deref()
        {
            // No network isolation exists without a bridge or slirp: `default` is the
            // build's `--network` (the host's unless told otherwise), as with
            // `buildah --isolation chroot`.
            None | Some("default") => shared.options.network,
            Some("host") => Network::Host,
            Some("none") => Network::None,
            Some(other) => {
                return Err(bad(format!("--network={other}: use default, host or none")));
            }
        };
        let security = run
            .security
            .as_ref()
            .map(|n| self.expand_in(st, n, at))
            .transpose()?;
        if security.as_deref() == Some("insecure") {
            return Err(bad(
                "--security=insecure is not supported (steps run with the default capabilities)"
                    .into(),
            ));
        }
        let (planned, mount_key) = self
            .plan_mounts(st, &parsed, &workdir, at, &instr.original, visiting)
            .await?;

        let mut k = KeyHasher::new("RUN");
        k.str("salt", &shared.salt.to_string())
            .str("parent", &st.key.to_string())
            .str("platform", &st.platform.to_string())
            .str("args", &command.args.join("\0"))
            .str("env", &env.join("\0"))
            .str("user", &user)
            .str("workdir", &workdir)
            .str(
                "network",
                if network == Network::None {
                    "none"
                } else {
                    "host"
                },
            )
            .str("security", security.as_deref().unwrap_or(""));
        for (name, v) in &build_args {
            k.str("arg", name).str("value", v);
        }
        for m in &mount_key {
            k.str("mount", m);
        }
        if let Some((name, body)) = &command.script {
            k.str("script", name).str("body", body);
        }
        let key = k.finish();
        let created_by = history_text(&command.args, &build_args);

        if !st.no_cache
            && let Some(hit) = shared.cache.lookup_step(&key, &shared.layout)
        {
            shared.emit(BuildEvent::StepCached {
                platform: self.platform.clone(),
                stage: st.name.clone(),
                step,
                layer: Some(hit.digest.clone()),
                origin: LayerOrigin::Cached,
            });
            let (size, digest) = (hit.size, hit.digest.clone());
            self.push_layer(
                st,
                LayerRef::from_cached(&hit, LayerOrigin::Cached),
                None,
                &created_by,
            )
            .await?;
            st.key = chain_key(&key, &digest);
            self.done(st, step, Some((digest, size, LayerOrigin::Cached)));
            return Ok(());
        }
        if shared.options.cancel.is_cancelled() {
            return Err(BuildError::Interrupted);
        }

        let kind = self.rootfs_kind(executor.as_ref()).await;
        let scratch = shared.scratch.path().to_path_buf();
        let step_dir = unique_dir(&scratch, "run-", 0o700)
            .map_err(|e| BuildError::io(&scratch, "cannot create a directory", e))?;
        let result = self
            .run_in(
                st,
                StepPlan {
                    kind,
                    step_dir: step_dir.clone(),
                    command,
                    env,
                    user,
                    workdir,
                    network,
                    planned,
                },
                executor.as_ref(),
                at,
                &instr.original,
                step,
            )
            .await;
        let (layer, upper) = match result {
            Ok(v) => v,
            Err(e) => {
                let _ = tokio::task::spawn_blocking(move || remove_tree(&step_dir)).await;
                return Err(e);
            }
        };
        shared.cache.record_step(&key, &layer)?;
        let (size, digest) = (layer.size, layer.digest.clone());
        self.push_layer(
            st,
            LayerRef::from_cached(&layer, LayerOrigin::Built),
            None,
            &created_by,
        )
        .await?;
        match upper {
            // The upper dir stands for the layer from now on (a lower dir of later steps).
            Some(upper) => shared.layer_dirs.add_upper(&layer, upper),
            None => {
                if let Some(d) = st.run_dir.as_mut() {
                    d.applied = st.layers.len();
                }
            }
        }
        st.key = chain_key(&key, &digest);
        self.done(st, step, Some((digest, size, LayerOrigin::Built)));
        Ok(())
    }

    /// Overlay roots if the executor can use them here (asked once per build).
    async fn rootfs_kind(&self, executor: &dyn crate::run::RunExecutor) -> RootfsKind {
        let shared = self.shared;
        *shared
            .run_rootfs
            .get_or_init(|| async {
                match executor.overlay_available(shared.scratch.path()).await {
                    Ok(()) => RootfsKind::Overlay,
                    Err(reason) => {
                        shared.emit(BuildEvent::Warning {
                            message: format!(
                                "RUN steps use a copied root filesystem (slower): overlayfs is unavailable: {reason}"
                            ),
                        });
                        RootfsKind::Dir
                    }
                }
            })
            .await
    }

    /// Run a step that missed the cache; its layer, and its upper dir (overlay roots).
    async fn run_in(
        &'s self,
        st: &mut StageState,
        plan: StepPlan,
        executor: &dyn crate::run::RunExecutor,
        at: &Location,
        instruction: &str,
        step: usize,
    ) -> Result<(CachedLayer, Option<PathBuf>), BuildError> {
        let shared = self.shared;
        let io = |p: &Path, e: std::io::Error| BuildError::io(p, "cannot create a directory", e);
        let step_dir = plan.step_dir.clone();
        let mounts_dir = step_dir.join("mounts");
        make_dir(&mounts_dir, 0o700).map_err(|e| io(&mounts_dir, e))?;

        // The root filesystem.
        let mut kind = plan.kind;
        let mut lower: Vec<PathBuf> = Vec::with_capacity(st.layers.len());
        if kind == RootfsKind::Overlay {
            for l in st.layers.iter().rev() {
                let dir = match shared.layer_dirs.dir_for(&shared.layout, l).await {
                    Ok(dir) => dir,
                    // A hard link to a lower layer's file cannot be a lower dir of its own
                    // (docs/architecture.md, Decisions): this step runs in a copied root,
                    // where the link joins that file as in `strata unpack`.
                    Err(BuildError::Archive { source, .. })
                        if matches!(*source, ArchiveError::NeedsLowerLayers { .. }) =>
                    {
                        shared.emit(BuildEvent::Warning {
                            message: format!(
                                "{at}: layer {} applies only onto its lower layers ({source}): \
                                 this RUN step uses a copied root filesystem (slower)",
                                l.digest
                            ),
                        });
                        kind = RootfsKind::Dir;
                        break;
                    }
                    Err(e) => return Err(e),
                };
                // The same layer twice (two steps that changed nothing): overlayfs
                // refuses a directory used twice, and the lower copy changes nothing
                // the upper one does not decide anyway.
                if !lower.contains(&dir) {
                    lower.push(dir);
                }
            }
        }
        let (rootfs, snapshot) = match kind {
            RootfsKind::Overlay => {
                if lower.is_empty() {
                    // FROM scratch: overlayfs needs one lower dir.
                    let empty = step_dir.join("empty");
                    make_dir(&empty, 0o755).map_err(|e| io(&empty, e))?;
                    lower.push(empty);
                }
                let (upper, work) = (step_dir.join("upper"), step_dir.join("work"));
                make_dir(&upper, 0o755).map_err(|e| io(&upper, e))?;
                make_dir(&work, 0o700).map_err(|e| io(&work, e))?;
                (Rootfs::Overlay { lower, upper, work }, None)
            }
            RootfsKind::Dir => {
                if st.run_dir.is_none() {
                    let scratch = shared.scratch.path();
                    let path = unique_dir(scratch, "rootfs-", 0o755).map_err(|e| io(scratch, e))?;
                    st.run_dir = Some(RunDir { path, applied: 0 });
                }
                let (path, applied) = match &st.run_dir {
                    Some(d) => (d.path.clone(), d.applied),
                    None => return Err(BuildError::Internal("no RUN root".into())),
                };
                let layout = shared.layout.clone();
                let missing: Vec<LayerRef> = st.layers.get(applied..).unwrap_or_default().to_vec();
                let p = path.clone();
                let limit = shared.options.max_uncompressed;
                let snapshot = tokio::task::spawn_blocking(move || {
                    layer::materialise(
                        &layout,
                        &missing,
                        &p,
                        strata_archive::WhiteoutMode::Apply,
                        limit,
                    )?;
                    crate::dirdiff::Snapshot::take(&p)
                })
                .await
                .map_err(join_error)??;
                if let Some(d) = st.run_dir.as_mut() {
                    d.applied = st.layers.len();
                }
                (Rootfs::Dir(path), Some(snapshot))
            }
        };

        // Mounts (cache locks may wait for another build: blocking).
        let planned = plan.planned;
        let secrets = shared.options.secrets.clone();
        let cache_root = shared.layout.root().join(".strata").join("cache-mounts");
        let md = mounts_dir.clone();
        let mut prepared = tokio::task::spawn_blocking(move || {
            runmount::prepare(
                &planned,
                &MountPlaces {
                    step_dir: &md,
                    cache_root: &cache_root,
                    secrets: &secrets,
                },
            )
        })
        .await
        .map_err(join_error)?
        .map_err(|e| BuildError::instruction(at, instruction, e))?;
        if let Some((name, body)) = &plan.command.script {
            let pipes = mounts_dir.join("pipes");
            make_dir(&pipes, 0o755).map_err(|e| io(&pipes, e))?;
            let file = pipes.join(name);
            write_script(&file, body)
                .map_err(|e| BuildError::io(&file, "cannot write the heredoc script", e))?;
            prepared.specs.push(MountSpec::Bind {
                source: pipes,
                target: PIPES_DIR.into(),
                access: Access::ReadOnly,
            });
        }
        let mut env = plan.env;
        for e in &prepared.env {
            let name = e.split('=').next().unwrap_or_default();
            env.retain(|x| x.split('=').next() != Some(name));
            env.push(e.clone());
        }

        // Live output.
        let lines = shared.progress.clone().map(|p: Arc<dyn BuildProgress>| {
            let platform = self.platform.clone();
            let stage = st.name.clone();
            Arc::new(Lines {
                pending: Mutex::new(Vec::new()),
                emit: Box::new(move |line| {
                    p.event(BuildEvent::RunOutput {
                        platform: platform.clone(),
                        stage: stage.clone(),
                        step,
                        line,
                    })
                }),
            })
        });
        let output = match &lines {
            Some(l) => {
                let l = Arc::clone(l);
                OutputSink::callback(move |chunk| l.push(chunk))
            }
            None => OutputSink::discard(),
        };
        let request = RunRequest {
            platform: st.platform.clone(),
            rootfs: rootfs.clone(),
            args: plan.command.args,
            env,
            user: plan.user,
            workdir: plan.workdir,
            mounts: prepared.specs.clone(),
            network: plan.network,
            hosts: Some(hosts_file()),
            resolv_conf: host_resolv_conf(),
            output,
            location: at.clone(),
            instruction: instruction.to_string(),
        };
        let outcome = executor.run(&request).await;
        if let Some(l) = &lines {
            l.finish();
        }
        drop(prepared); // locks released, secrets and staged copies removed
        if let Err(f) = outcome {
            return Err(run_error(at, instruction, f));
        }

        // The layer.
        let layout = shared.layout.clone();
        let settings = shared.layer_settings(false);
        let (layer, upper) = tokio::task::spawn_blocking(move || -> Result<_, BuildError> {
            let mut tar = strata_archive::TarBuilder::new(
                layer::LayerSink::new(&layout, settings.compression)?,
                strata_archive::TarOptions {
                    mtime_clamp: settings.clamp,
                    ..Default::default()
                },
            );
            let upper = match (&rootfs, &snapshot) {
                (Rootfs::Overlay { upper, .. }, _) => {
                    strata_archive::write_overlay_diff(upper, &mut tar)
                        .map_err(|e| BuildError::archive("writing the RUN layer", e))?;
                    Some(upper.clone())
                }
                (Rootfs::Dir(dir), Some(before)) => {
                    crate::dirdiff::write_diff(dir, before, &mut tar)?;
                    None
                }
                (Rootfs::Dir(_), None) => {
                    return Err(BuildError::Internal("no snapshot of the RUN root".into()));
                }
            };
            let layer = layer::finish_layer(tar, &layout)?;
            // Only the upper dir stays (it stands for the layer); the rest goes now.
            let _ = remove_tree(&step_dir.join("work"));
            let _ = remove_tree(&step_dir.join("mounts"));
            Ok((layer, upper))
        })
        .await
        .map_err(join_error)??;
        if upper.is_none() {
            let dir = plan.step_dir;
            let _ = tokio::task::spawn_blocking(move || remove_tree(&dir)).await;
        }
        Ok((layer, upper))
    }
}

/// What a cache miss needs to run.
struct StepPlan {
    kind: RootfsKind,
    step_dir: PathBuf,
    command: Command,
    env: Vec<String>,
    user: String,
    workdir: String,
    network: Network,
    planned: Vec<PlannedMount>,
}

fn write_script(path: &Path, body: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o755)
        .open(path)?;
    f.write_all(body.as_bytes())?;
    f.set_permissions(std::fs::Permissions::from_mode(0o755))
}

fn run_error(at: &Location, instruction: &str, f: RunFailure) -> BuildError {
    let (message, exit_code) = match f.kind {
        RunFailureKind::Interrupted => return BuildError::Interrupted,
        RunFailureKind::Exited(c) => (format!("the command exited with code {c}"), Some(c)),
        RunFailureKind::Signaled(s) => (format!("the command was killed by signal {s}"), None),
        _ => (f.message, None),
    };
    BuildError::Run {
        at: at.clone(),
        instruction: instruction.to_string(),
        message,
        exit_code,
        output: f.output_tail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_containerfile::Heredoc;

    fn heredoc(name: &str, content: &str) -> Heredoc {
        Heredoc {
            name: name.into(),
            content: content.into(),
            expand: true,
        }
    }

    fn run_with(command: &str, docs: Vec<Heredoc>) -> (CommandForm, RunInstr) {
        let form = CommandForm::Shell(command.into());
        let run = RunInstr {
            command: form.clone(),
            mounts: vec![],
            network: None,
            security: None,
            heredocs: docs,
        };
        (form, run)
    }

    #[test]
    fn heredoc_rules_follow_buildkit() {
        let sh = vec!["/bin/sh".to_string(), "-c".to_string()];
        // One heredoc opening the command: its body goes to the shell.
        let (f, r) = run_with("<<EOF", vec![heredoc("EOF", "echo a\necho b\n")]);
        let c = command_of(&f, &r, &sh);
        assert_eq!(c.args, ["/bin/sh", "-c", "echo a\necho b\n"]);
        assert!(c.script.is_none());
        // … or runs as a script when it starts with #!.
        let (f, r) = run_with(
            "<<-'EOF'",
            vec![heredoc("EOF", "#!/bin/busybox sh\necho s\n")],
        );
        let c = command_of(&f, &r, &sh);
        assert_eq!(c.args, ["/dev/pipes/EOF"]);
        assert_eq!(c.script.unwrap().1, "#!/bin/busybox sh\necho s\n");
        // Anything else: the shell reads its own heredocs.
        let (f, r) = run_with("cat <<A > /a", vec![heredoc("A", "x\n")]);
        assert_eq!(command_of(&f, &r, &sh).args[2], "cat <<A > /a\nx\nA");
        let (f, r) = run_with("<<EOF bash", vec![heredoc("EOF", "echo\n")]);
        assert_eq!(command_of(&f, &r, &sh).args[2], "<<EOF bash\necho\nEOF");
        assert!(is_single_heredoc("3<<EOF"));
        assert!(!is_single_heredoc("<<EOF <<B"));
    }

    #[test]
    fn history_shows_build_args_like_docker() {
        let mut a = BTreeMap::new();
        assert_eq!(
            history_text(&["/bin/sh".into(), "-c".into(), "make".into()], &a),
            "RUN /bin/sh -c make"
        );
        a.insert("V".to_string(), "1".to_string());
        assert_eq!(history_text(&["x".into()], &a), "RUN |1 V=1 x");
    }

    #[test]
    fn output_lines_are_split_and_capped() {
        let got = Arc::new(Mutex::new(Vec::new()));
        let g = Arc::clone(&got);
        let l = Lines {
            pending: Mutex::new(Vec::new()),
            emit: Box::new(move |s| g.lock().unwrap().push(s)),
        };
        l.push(b"a\r\nb");
        l.push(b"c\n");
        l.push(&vec![b'x'; MAX_OUTPUT_LINE_BYTES + 1]);
        l.finish();
        let got = got.lock().unwrap();
        assert_eq!(got[..2], ["a".to_string(), "bc".to_string()]);
        assert_eq!(got[2].len(), MAX_OUTPUT_LINE_BYTES);
        assert_eq!(got[3], "x");
    }
}
