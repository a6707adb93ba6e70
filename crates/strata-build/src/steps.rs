//! Layer-producing steps: COPY, ADD and RUN.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use strata_archive::{LayerLayout, WhiteoutMode};
use strata_containerfile::{AddInstr, CopyInstr, Instruction, Source};
use strata_spec::Digest;

use crate::base::poisoned;
use crate::cache::{CachedLayer, KeyHasher};
use crate::copyplan::{
    ContentId, CopyRequest, Owners, PlannedEntry, PlannedKind, SourceItem, plan_copy,
};
use crate::engine::{PlatformBuild, StageState};
use crate::error::join_error;
use crate::fetch::{DOWNLOAD_NAME, Download, FetchError};
use crate::gather::{GatherRequest, Gathered, expand_heredoc, gather};
use crate::layer::{self, LayerRef, LayerSettings, MAX_ACCOUNT_FILE_BYTES, WrittenHashes};
use crate::progress::{BuildEvent, LayerOrigin};
use crate::source::{FileKind, FileStat, OwnerSource, SourceRoot, WalkEntry, WalkFilter};
use crate::tree::{RawEntry, RawKind, Tree};
use crate::{BuildError, Location};

fn is_url(s: &str) -> bool {
    let l = s.to_ascii_lowercase();
    l.starts_with("http://") || l.starts_with("https://")
}

fn is_git(s: &str) -> bool {
    let l = s.to_ascii_lowercase();
    l.starts_with("git@")
        || l.starts_with("git://")
        || (is_url(&l)
            && l.split(['?', '#'])
                .next()
                .is_some_and(|p| p.ends_with(".git")))
}

/// A URL source of ADD.
struct UrlSource {
    url: String,
    download: Option<Arc<Download>>,
}

fn owner_source() -> OwnerSource {
    if rustix::process::geteuid().is_root() {
        OwnerSource::Inode
    } else {
        OwnerSource::RootlessXattr
    }
}

fn describe_stat(k: &mut KeyHasher, st: &FileStat, owners: Owners) {
    let kind = match st.kind {
        FileKind::Dir => "d",
        FileKind::File => "f",
        FileKind::Symlink => "l",
        FileKind::Fifo => "p",
        FileKind::CharDevice => "c",
        FileKind::BlockDevice => "b",
        FileKind::Socket => "s",
    };
    k.str("type", kind)
        .num("mode", st.mode as u64)
        .num("mtime", st.mtime_secs())
        .num(
            "size",
            if st.kind == FileKind::File {
                st.size
            } else {
                0
            },
        )
        .num("rdev", st.rdev);
    if owners == Owners::Preserve {
        k.num("uid", st.uid).num("gid", st.gid);
    }
}

/// Everything about the sources that decides the layer, for the step key.
fn describe_items(k: &mut KeyHasher, gathered: &[Gathered], urls: &[UrlSource]) {
    for g in gathered {
        match g {
            Gathered::Item(SourceItem::Dir {
                parents_rel,
                stat,
                children,
                rel,
                owners,
                ..
            }) => {
                k.str("source", "dir")
                    .field("rel", rel)
                    .field("parents", &parents_rel.join(&b'/'));
                describe_stat(k, stat, *owners);
                // Hard-link groups (by first path) so a changed link structure is a miss.
                let mut first: std::collections::HashMap<(u64, u64), Vec<u8>> = Default::default();
                for (c, id) in children.iter() {
                    k.field("child", &c.rel);
                    describe_stat(k, &c.stat, *owners);
                    if let Some(l) = &c.link {
                        k.field("link", l);
                    }
                    if let Some(id) = id {
                        k.field("id", &id.key_bytes());
                    }
                    if c.stat.nlink > 1 && c.stat.kind == FileKind::File {
                        let f = first
                            .entry((c.stat.dev, c.stat.ino))
                            .or_insert_with(|| c.rel.clone());
                        k.field("hardlink-group", f);
                    }
                }
            }
            Gathered::Item(SourceItem::Entry {
                rel,
                parents_rel,
                entry,
                id,
                owners,
                ..
            }) => {
                k.str("source", "entry")
                    .field("rel", rel)
                    .field("parents", &parents_rel.join(&b'/'));
                describe_stat(k, &entry.stat, *owners);
                if let Some(l) = &entry.link {
                    k.field("link", l);
                }
                if let Some(id) = id {
                    k.field("id", &id.key_bytes());
                }
            }
            Gathered::Item(SourceItem::Inline {
                name,
                mode,
                mtime,
                id,
                ..
            }) => {
                k.str("source", "inline")
                    .field("name", name)
                    .num("mode", *mode as u64)
                    .num("mtime", *mtime)
                    .field("id", &id.key_bytes());
            }
            Gathered::Archive { rel, stat, id, .. } => {
                k.str("source", "archive")
                    .field("rel", rel)
                    .field("id", &id.key_bytes());
                describe_stat(k, stat, Owners::Root);
            }
        }
    }
    for u in urls {
        k.str("source", "url").str("url", &u.url);
        if let Some(d) = &u.download {
            k.str("digest", &d.digest.to_string())
                .num("mtime", d.mtime.map(|m| m + 1).unwrap_or(0));
        }
    }
}

/// The key of a layer's exact content: the entries in order with everything the tar holds.
/// Pending content ids are taken from `hashes` when they are there.
fn content_key(
    salt: &Digest,
    layout: LayerLayout,
    entries: &[PlannedEntry],
    hashes: &WrittenHashes,
) -> Digest {
    let mut k = KeyHasher::new("layer-content");
    k.str("salt", &salt.to_string()).str(
        "layout",
        if layout == LayerLayout::Windows {
            "windows"
        } else {
            "linux"
        },
    );
    for e in entries {
        k.field("path", &e.path())
            .num("mode", e.meta.mode as u64)
            .num("uid", e.meta.uid)
            .num("gid", e.meta.gid)
            .num("mtime", e.meta.mtime);
        match &e.kind {
            PlannedKind::Dir => k.str("type", "dir"),
            PlannedKind::File { size, id, content } => {
                let resolved = match (id.is_pending(), content) {
                    (true, crate::copyplan::Content::Root { rel, .. }) => hashes
                        .get(rel)
                        .map(|d| ContentId::Digest(d.clone()).key_bytes()),
                    _ => None,
                };
                k.str("type", "file")
                    .num("size", *size)
                    .field("id", &resolved.unwrap_or_else(|| id.key_bytes()))
            }
            PlannedKind::Symlink(t) => k.str("type", "symlink").field("target", t),
            PlannedKind::Hardlink(t) => k.str("type", "hardlink").field("target", &t.join(&b'/')),
            PlannedKind::Fifo => k.str("type", "fifo"),
            PlannedKind::Device {
                block,
                major,
                minor,
            } => k
                .str("type", if *block { "block" } else { "char" })
                .num("major", *major as u64)
                .num("minor", *minor as u64),
        };
    }
    k.finish()
}

fn planned_to_raw(entries: &[PlannedEntry]) -> Vec<RawEntry> {
    entries
        .iter()
        .map(|e| RawEntry {
            parts: e.parts.clone(),
            kind: match &e.kind {
                PlannedKind::Dir => RawKind::Dir,
                PlannedKind::File { size, .. } => RawKind::File(*size),
                PlannedKind::Symlink(t) => RawKind::Symlink(t.clone()),
                PlannedKind::Hardlink(t) => RawKind::Hardlink(t.join(&b'/')),
                _ => RawKind::Other,
            },
            meta: e.meta,
        })
        .collect()
}

/// Parse `/etc/passwd` or `/etc/group` and find `name`'s id (and, for passwd, primary gid).
fn account_lookup(text: &str, name: &str) -> Option<(u64, Option<u64>)> {
    for line in text.lines() {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() >= 3 && fields[0] == name {
            let id = fields[2].trim().parse().ok()?;
            let gid = fields.get(3).and_then(|g| g.trim().parse().ok());
            return Some((id, gid));
        }
    }
    None
}

/// What a `--from=` named.
#[derive(Clone, Copy)]
pub(crate) enum FromKind {
    Stage,
    Image,
}

/// A resolved `--from=`: see [`PlatformBuild::resolve_from`].
pub(crate) struct FromRoot {
    pub(crate) root: Arc<SourceRoot>,
    /// The stage's key or the image's manifest digest.
    pub(crate) key: Digest,
    pub(crate) kind: FromKind,
}

impl<'s, 'r> PlatformBuild<'s, 'r> {
    /// Make sure `st.tree` indexes the stage's current layers.
    async fn ensure_tree(&self, st: &mut StageState) -> Result<(), BuildError> {
        if st.tree.is_some() {
            return Ok(());
        }
        let layout = self.shared.layout.clone();
        let layers = st.layers.clone();
        let mode = if st.windows {
            LayerLayout::Windows
        } else {
            LayerLayout::Linux
        };
        let tree = tokio::task::spawn_blocking(move || -> Result<Tree, BuildError> {
            let mut tree = Tree::default();
            for (i, l) in layers.iter().enumerate() {
                let entries = layer::scan(&layout, l, mode)?;
                tree.apply_layer(&entries, i);
            }
            Ok(tree)
        })
        .await
        .map_err(join_error)??;
        st.tree = Some(tree);
        Ok(())
    }

    /// Add a layer to the stage (keeping the tree in sync when there is one).
    pub(crate) async fn push_layer(
        &self,
        st: &mut StageState,
        layer: LayerRef,
        planned: Option<&[PlannedEntry]>,
        created_by: &str,
    ) -> Result<(), BuildError> {
        let index = st.layers.len();
        if !st.tree_needed_later {
            st.tree = None;
        }
        if st.tree.is_some() {
            let raw = match planned {
                Some(p) => planned_to_raw(p),
                None => {
                    let layout = self.shared.layout.clone();
                    let l = layer.clone();
                    let mode = if st.windows {
                        LayerLayout::Windows
                    } else {
                        LayerLayout::Linux
                    };
                    tokio::task::spawn_blocking(move || layer::scan(&layout, &l, mode))
                        .await
                        .map_err(join_error)??
                }
            };
            if let Some(t) = st.tree.as_mut() {
                t.apply_layer(&raw, index);
            }
        }
        st.layers.push(layer);
        st.history.push(strata_spec::History {
            created: Some(crate::time::rfc3339(self.shared.created())),
            created_by: Some(created_by.to_string()),
            ..Default::default()
        });
        Ok(())
    }

    /// The bytes of a file of the stage's rootfs (for `/etc/passwd`), at most `cap`.
    async fn read_rootfs_file(
        &self,
        st: &mut StageState,
        path: &str,
    ) -> Result<Option<Vec<u8>>, BuildError> {
        self.ensure_tree(st).await?;
        let Some(tree) = &st.tree else {
            return Ok(None);
        };
        let Some((layer_index, literal, size)) = tree.file_location(path.as_bytes()) else {
            return Ok(None);
        };
        if size > MAX_ACCOUNT_FILE_BYTES {
            return Err(BuildError::Internal(format!(
                "{path} in the stage is larger than {MAX_ACCOUNT_FILE_BYTES} bytes"
            )));
        }
        let layout = self.shared.layout.clone();
        let Some(l) = st.layers.get(layer_index).cloned() else {
            return Ok(None);
        };
        let mode = if st.windows {
            LayerLayout::Windows
        } else {
            LayerLayout::Linux
        };
        tokio::task::spawn_blocking(move || {
            layer::read_file(&layout, &l, &literal, mode, MAX_ACCOUNT_FILE_BYTES)
        })
        .await
        .map_err(join_error)?
    }

    /// `--chown=user[:group]` → ids, names looked up in the stage's own `/etc/passwd` and
    /// `/etc/group` (read from its layers, never the host's).
    async fn resolve_chown(
        &self,
        st: &mut StageState,
        spec: &str,
        at: &Location,
    ) -> Result<(u64, u64), BuildError> {
        let err = |reason: String| BuildError::UnknownOwner {
            at: at.clone(),
            spec: spec.to_string(),
            reason,
        };
        let (user, group) = match spec.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (spec, None),
        };
        if user.is_empty() || group.is_some_and(str::is_empty) {
            return Err(err("expected user[:group]".into()));
        }
        let uid = match user.parse::<u64>() {
            Ok(n) => n,
            Err(_) => {
                let passwd = self
                    .read_rootfs_file(st, "/etc/passwd")
                    .await?
                    .ok_or_else(|| {
                        err(format!(
                            "no /etc/passwd in the stage to look up user {user:?}"
                        ))
                    })?;
                account_lookup(&String::from_utf8_lossy(&passwd), user)
                    .ok_or_else(|| err(format!("user {user:?} is not in the stage's /etc/passwd")))?
                    .0
            }
        };
        let gid = match group {
            // Docker: a user without a group uses the uid as the gid.
            None => uid,
            Some(g) => match g.parse::<u64>() {
                Ok(n) => n,
                Err(_) => {
                    let groups =
                        self.read_rootfs_file(st, "/etc/group")
                            .await?
                            .ok_or_else(|| {
                                err(format!("no /etc/group in the stage to look up group {g:?}"))
                            })?;
                    account_lookup(&String::from_utf8_lossy(&groups), g)
                        .ok_or_else(|| {
                            err(format!("group {g:?} is not in the stage's /etc/group"))
                        })?
                        .0
                }
            },
        };
        Ok((uid, gid))
    }

    /// A directory holding the filesystem of `layers` (extracted once per build and key).
    pub(crate) async fn root_for(
        &self,
        key: &Digest,
        layers: &[LayerRef],
        windows: bool,
    ) -> Result<Arc<SourceRoot>, BuildError> {
        let shared = self.shared;
        let cell = {
            let mut map = shared.roots.lock().map_err(|_| poisoned())?;
            Arc::clone(map.entry(key.clone()).or_default())
        };
        let layout = shared.layout.clone();
        let layers = layers.to_vec();
        let base = shared.scratch.path().to_path_buf();
        let limit = shared.options.max_uncompressed;
        cell.get_or_try_init(|| async move {
            tokio::task::spawn_blocking(move || -> Result<Arc<SourceRoot>, BuildError> {
                let dir = tempfile::Builder::new()
                    .prefix("rootfs-")
                    .tempdir_in(&base)
                    .map_err(|e| BuildError::io(&base, "cannot create a directory", e))?;
                layer::materialise(&layout, &layers, dir.path(), WhiteoutMode::Apply, limit)?;
                let sub = if windows { "Files" } else { "" };
                if windows {
                    std::fs::create_dir_all(dir.path().join(sub))
                        .map_err(|e| BuildError::io(dir.path(), "cannot create a directory", e))?;
                }
                let path = dir.path().to_path_buf();
                SourceRoot::temporary_at(dir, std::path::Path::new(sub), owner_source())
                    .map(Arc::new)
                    .map_err(|e| BuildError::io(path, "cannot open the extracted rootfs", e))
            })
            .await
            .map_err(join_error)?
        })
        .await
        .cloned()
    }

    /// The filesystem a `--from=<from>` (of COPY/ADD or a RUN mount) reads: an earlier
    /// stage's result or an image's rootfs, with its identity for step keys (the stage's key
    /// or the image's manifest digest). Naming the current stage is a cycle.
    pub(crate) async fn resolve_from(
        &'s self,
        st: &StageState,
        from: &str,
        at: &Location,
        visiting: &[usize],
    ) -> Result<FromRoot, BuildError> {
        let shared = self.shared;
        if let Some(j) = self.recipe.stage_index(from, true) {
            if j == st.index {
                return Err(BuildError::StageCycle {
                    at: at.clone(),
                    stage: st.name.clone(),
                });
            }
            let source = self.stage(j, visiting.to_vec()).await?;
            let root = self
                .root_for(&source.key, &source.layers, source.windows)
                .await?;
            return Ok(FromRoot {
                root,
                key: source.key.clone(),
                kind: FromKind::Stage,
            });
        }
        self.recipe.check_from(from, at)?;
        let image = shared.base_image(from, &st.platform).await?;
        let mut k = KeyHasher::new("image-root");
        k.str("manifest", &image.manifest_digest.to_string());
        let root = self
            .root_for(&k.finish(), &image.layers, st.windows)
            .await?;
        Ok(FromRoot {
            root,
            key: image.manifest_digest.clone(),
            kind: FromKind::Image,
        })
    }

    async fn download(
        &self,
        url: &str,
        checksum: Option<&Digest>,
        at: &Location,
    ) -> Result<Arc<Download>, BuildError> {
        let shared = self.shared;
        let cell = {
            let mut map = shared.downloads.lock().map_err(|_| poisoned())?;
            let key = format!(
                "{url}\n{}",
                checksum.map(|c| c.to_string()).unwrap_or_default()
            );
            Arc::clone(map.entry(key).or_default())
        };
        let base = shared.scratch.path().join("downloads");
        cell.get_or_try_init(|| async {
            crate::fetch::fetch(url, checksum, &base)
                .await
                .map(Arc::new)
                .map_err(|e| match e {
                    FetchError::Checksum { expected, actual } => BuildError::ChecksumMismatch {
                        at: at.clone(),
                        url: url.to_string(),
                        expected,
                        actual,
                    },
                    FetchError::Other(reason) => BuildError::Fetch {
                        at: at.clone(),
                        url: url.to_string(),
                        reason,
                    },
                })
        })
        .await
        .cloned()
    }

    /// Produce (or find) the layer for `entries`; identical content across platforms and
    /// builds is one blob.
    async fn produce(
        &self,
        st: &StageState,
        step: usize,
        entries: Arc<Vec<PlannedEntry>>,
        settings: LayerSettings,
    ) -> Result<(CachedLayer, LayerOrigin, Arc<WrittenHashes>), BuildError> {
        let shared = self.shared;
        let no_hashes = WrittenHashes::new();
        // With pending content ids this key is provisional (stat identities): it only lets
        // the platforms of this build share one production; the real content key is
        // recorded once the bytes are hashed.
        let key = content_key(&shared.salt, settings.layout, &entries, &no_hashes);
        let pending = entries
            .iter()
            .any(|e| matches!(&e.kind, PlannedKind::File { id, .. } if id.is_pending()));
        if !pending && let Some(c) = shared.cache.lookup_content(&key, &shared.layout) {
            return Ok((c, LayerOrigin::Cached, Arc::new(no_hashes)));
        }
        let cell = {
            let mut map = shared.inflight.lock().map_err(|_| poisoned())?;
            Arc::clone(map.entry(key.clone()).or_default())
        };
        let produced = AtomicBool::new(false);
        let done = cell
            .get_or_try_init(|| async {
                produced.store(true, Ordering::Relaxed);
                let _permit = shared
                    .jobs
                    .acquire()
                    .await
                    .map_err(|_| BuildError::Internal("job limiter closed".into()))?;
                let layout = shared.layout.clone();
                let progress = shared.progress.clone();
                let platform = self.platform.clone();
                let stage = st.name.clone();
                let entries2 = Arc::clone(&entries);
                let settings2 = settings.clone();
                let (layer, hashes) = tokio::task::spawn_blocking(move || {
                    let report = |bytes: u64| {
                        if let Some(p) = &progress {
                            p.event(BuildEvent::LayerBytes {
                                platform: platform.clone(),
                                stage: stage.clone(),
                                step,
                                bytes,
                            });
                        }
                    };
                    layer::write_layer(&layout, &entries2, &settings2, &report)
                })
                .await
                .map_err(join_error)??;
                let real_key = if pending {
                    self.remember_hashes(&entries, &hashes)?;
                    content_key(&shared.salt, settings.layout, &entries, &hashes)
                } else {
                    key.clone()
                };
                shared.cache.record_content(&real_key, &layer)?;
                Ok::<_, BuildError>(Arc::new((layer, Arc::new(hashes))))
            })
            .await?;
        let (layer, hashes) = done.as_ref().clone();
        let origin = if produced.load(Ordering::Relaxed) {
            LayerOrigin::Built
        } else {
            LayerOrigin::Shared
        };
        Ok((layer, origin, hashes))
    }

    /// Put the hashes computed while writing into the context's hash cache.
    fn remember_hashes(
        &self,
        entries: &[PlannedEntry],
        hashes: &WrittenHashes,
    ) -> Result<(), BuildError> {
        let now = crate::time::now_unix() as i64;
        let mut cache = self
            .recipe
            .hashes
            .lock()
            .map_err(|_| BuildError::Internal("hash cache lock poisoned".into()))?;
        for e in entries {
            if let PlannedKind::File {
                id,
                content: crate::copyplan::Content::Root { root, rel, stat },
                ..
            } = &e.kind
                && id.is_pending()
                && Arc::ptr_eq(root, &self.recipe.context)
                && let Some(d) = hashes.get(rel)
            {
                cache.put(rel, stat, d, now);
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn copy_step(
        &'s self,
        st: &mut StageState,
        instr: &Instruction,
        copy: &CopyInstr,
        add: Option<&AddInstr>,
        at: &Location,
        step: usize,
        visiting: &[usize],
    ) -> Result<(), BuildError> {
        let shared = self.shared;
        let word = if add.is_some() { "ADD" } else { "COPY" };
        let bad = |msg: String| BuildError::instruction(at, &instr.original, msg);
        if add.is_some_and(|a| a.keep_git_dir) {
            return Err(bad("--keep-git-dir: git sources are not supported".into()));
        }
        let dest = self.expand_path_in(st, &copy.dest, at, "the destination")?;
        if dest.is_empty() {
            return Err(bad("no destination".into()));
        }
        let chown = copy
            .chown
            .as_ref()
            .map(|c| self.expand_in(st, c, at))
            .transpose()?;
        let chmod_text = copy
            .chmod
            .as_ref()
            .map(|c| self.expand_in(st, c, at))
            .transpose()?;
        let chmod = match &chmod_text {
            Some(c) => Some(
                strata_containerfile::Chmod::parse(c).map_err(|e| bad(format!("--chmod: {e}")))?,
            ),
            None => None,
        };
        let from = copy
            .from
            .as_ref()
            .map(|f| self.expand_in(st, f, at))
            .transpose()?;
        let mut excludes = Vec::new();
        for e in &copy.excludes {
            excludes.push(self.expand_in(st, e, at)?);
        }
        let exclude = if excludes.is_empty() {
            None
        } else {
            Some(
                strata_containerfile::IgnoreMatcher::from_patterns(&excludes)
                    .map_err(|e| bad(format!("--exclude: {e}")))?,
            )
        };
        let checksum = match add.and_then(|a| a.checksum.as_ref()) {
            Some(c) => {
                let c = self.expand_in(st, c, at)?;
                Some(
                    c.parse::<Digest>()
                        .map_err(|e| bad(format!("--checksum {c}: {e}")))?,
                )
            }
            None => None,
        };
        if chown.is_some() && st.windows {
            return Err(bad("--chown is not supported for Windows targets".into()));
        }

        // Where the sources are.
        let (root, root_key, owners, place, is_context) = match &from {
            None => (
                Arc::clone(&self.recipe.context),
                None,
                Owners::Root,
                "the build context".to_string(),
                true,
            ),
            Some(f) => {
                let from = self.resolve_from(st, f, at, visiting).await?;
                let place = match from.kind {
                    FromKind::Stage => format!("stage {f}"),
                    FromKind::Image => format!("image {f}"),
                };
                (from.root, Some(from.key), Owners::Preserve, place, false)
            }
        };

        // Sources.
        let mut patterns = Vec::new();
        let mut inline = Vec::new();
        let mut urls = Vec::new();
        for s in &copy.sources {
            match s {
                Source::Heredoc(h) => {
                    let body = if h.expand {
                        expand_heredoc(&h.content, &|n| st.scope.lookup(n))
                    } else {
                        h.content.clone()
                    };
                    let bytes = Arc::new(body.into_bytes());
                    inline.push(Gathered::Item(SourceItem::Inline {
                        name: h.name.as_bytes().to_vec(),
                        id: ContentId::Digest(Digest::sha256_of(&bytes)),
                        bytes,
                        mode: 0o644,
                        mtime: shared.options.source_date_epoch.unwrap_or(0),
                    }));
                }
                Source::Path(p) => {
                    let p = self.expand_path_in(st, p, at, "the source")?;
                    if add.is_some() && from.is_none() && is_git(&p) {
                        return Err(bad(format!("{p}: git sources are not supported")));
                    }
                    if add.is_some() && from.is_none() && is_url(&p) {
                        urls.push(UrlSource {
                            url: p,
                            download: None,
                        });
                    } else if is_url(&p) {
                        return Err(bad(format!("{word} cannot fetch URLs ({p}); use ADD")));
                    } else {
                        patterns.push(p);
                    }
                }
            }
        }
        if checksum.is_some() && (urls.len() != 1 || !patterns.is_empty()) {
            return Err(bad("--checksum needs exactly one URL source".into()));
        }
        // Without --checksum the URL's bytes are part of the key: fetch now.
        if checksum.is_none() {
            for u in urls.iter_mut() {
                u.download = Some(self.download(&u.url, None, at).await?);
            }
        }
        let unpack = add.and_then(|a| a.unpack);
        let request = GatherRequest {
            root,
            context: is_context,
            root_key,
            ignore: self.recipe.ignore.clone(),
            exclude,
            hashes: Arc::clone(&self.recipe.hashes),
            owners,
            detect_archives: add.is_some() && unpack != Some(false),
            at: at.clone(),
            instruction: instr.original.clone(),
            place,
        };
        let mut gathered = if patterns.is_empty() {
            Vec::new()
        } else {
            let mut k = KeyHasher::new("gather");
            k.str(
                "root",
                &request
                    .root_key
                    .as_ref()
                    .map(|d| d.to_string())
                    .unwrap_or_else(|| format!("context {}", self.recipe.context_key)),
            )
            .str("patterns", &patterns.join("\0"))
            .str("excludes", &excludes.join("\0"))
            .num("archives", request.detect_archives as u64)
            .num("line", at.line as u64);
            let cell = {
                let mut map = shared.gathers.lock().map_err(|_| poisoned())?;
                Arc::clone(map.entry(k.finish()).or_default())
            };
            cell.get_or_try_init(|| async move {
                tokio::task::spawn_blocking(move || gather(&request, &patterns).map(Arc::new))
                    .await
                    .map_err(join_error)?
            })
            .await?
            .as_ref()
            .clone()
        };
        gathered.extend(inline);

        // The step key.
        let workdir = st.workdir();
        let names_in_chown = chown
            .as_deref()
            .is_some_and(|c| c.split(':').any(|p| p.parse::<u64>().is_err()));
        let mut k = KeyHasher::new(word);
        k.str("salt", &shared.salt.to_string());
        if !copy.link || names_in_chown {
            k.str("parent", &st.key.to_string());
        }
        k.str("dest", &dest)
            .str("workdir", &workdir)
            .str("chown", chown.as_deref().unwrap_or(""))
            .str("chmod", chmod_text.as_deref().unwrap_or(""))
            .num("link", copy.link as u64)
            .num("parents", copy.parents as u64)
            .str("excludes", &excludes.join("\n"))
            .str(
                "checksum",
                &checksum.as_ref().map(|c| c.to_string()).unwrap_or_default(),
            )
            .num("unpack", unpack.map(|u| u as u64 + 1).unwrap_or(0))
            .num("windows", st.windows as u64);
        let key_prefix = k;
        let parent_key = st.key.clone();
        let chain = |step_key: &Digest| {
            if copy.link && !names_in_chown {
                // The chain continues from the parent; the layer itself is independent of it.
                let mut k = KeyHasher::new("link-chain");
                k.str("parent", &parent_key.to_string())
                    .str("layer", &step_key.to_string());
                k.finish()
            } else {
                step_key.clone()
            }
        };
        let created_by = instr.original.trim().to_string();
        // Files never hashed before are hashed while the layer is written: the step key is
        // known only then (and the cache cannot have this step under stat identities the
        // hash cache has not seen).
        let pending = crate::gather::has_pending(&gathered);
        let step_key = (!pending).then(|| {
            let mut k = key_prefix.clone();
            describe_items(&mut k, &gathered, &urls);
            k.finish()
        });

        if let Some(step_key) = &step_key
            && let Some(hit) = shared.cache.lookup_step(step_key, &shared.layout)
        {
            shared.emit(BuildEvent::StepCached {
                platform: self.platform.clone(),
                stage: st.name.clone(),
                step,
                layer: Some(hit.digest.clone()),
                origin: LayerOrigin::Cached,
            });
            let size = hit.size;
            let digest = hit.digest.clone();
            self.push_layer(
                st,
                LayerRef::from_cached(&hit, LayerOrigin::Cached),
                None,
                &created_by,
            )
            .await?;
            st.key = chain(step_key);
            self.done(st, step, Some((digest, size, LayerOrigin::Cached)));
            return Ok(());
        }

        // Miss: fetch what the key did not need, unpack archives, plan against the rootfs.
        for u in urls.iter_mut() {
            if u.download.is_none() {
                u.download = Some(self.download(&u.url, checksum.as_ref(), at).await?);
            }
        }
        let mut items: Vec<SourceItem> = Vec::new();
        for g in gathered.iter().cloned() {
            match g {
                Gathered::Item(i) => items.push(i),
                Gathered::Archive {
                    root,
                    rel,
                    stat,
                    id,
                } => {
                    items.push(
                        self.unpack_archive(root, &rel, stat, id, at, &instr.original)
                            .await?,
                    );
                }
            }
        }
        for u in &urls {
            let Some(d) = &u.download else { continue };
            let st_file = d
                .root
                .lstat(DOWNLOAD_NAME)
                .map_err(|e| BuildError::io(d.root.path(), "cannot stat the download", e))?
                .ok_or_else(|| BuildError::Internal("download vanished".into()))?;
            let mut stat = st_file;
            // Docker: URL files are 0600 with the server's Last-Modified as mtime.
            stat.mode = 0o600;
            stat.mtime = d.mtime.unwrap_or(0) as i64;
            stat.mtime_nsec = 0;
            items.push(SourceItem::Entry {
                root: Arc::clone(&d.root),
                rel: DOWNLOAD_NAME.to_vec(),
                parents_rel: vec![d.name.as_bytes().to_vec()],
                entry: WalkEntry {
                    rel: Vec::new(),
                    stat,
                    link: None,
                },
                id: Some(ContentId::Digest(d.digest.clone())),
                owners: Owners::Root,
            });
        }
        let chown_ids = match &chown {
            Some(c) => Some(self.resolve_chown(st, c, at).await?),
            None => None,
        };
        let link_tree;
        let tree: &Tree = if copy.link {
            link_tree = Tree::default();
            &link_tree
        } else {
            self.ensure_tree(st).await?;
            st.tree
                .as_ref()
                .ok_or_else(|| BuildError::Internal("no rootfs index".into()))?
        };
        let newest = items
            .iter()
            .map(|i| match i {
                SourceItem::Dir { stat, children, .. } => children
                    .iter()
                    .map(|(c, _)| c.stat.mtime_secs())
                    .max()
                    .unwrap_or(0)
                    .max(stat.mtime_secs()),
                SourceItem::Entry { entry, .. } => entry.stat.mtime_secs(),
                SourceItem::Inline { mtime, .. } => *mtime,
            })
            .max()
            .unwrap_or(0);
        let request = CopyRequest {
            dest: &dest,
            workdir: &workdir,
            windows: st.windows,
            chown: chown_ids,
            chmod: chmod.as_ref(),
            parents: copy.parents,
            created_mtime: shared.options.source_date_epoch.unwrap_or(newest),
        };
        let entries = plan_copy(&items, &request, tree).map_err(bad)?;
        let entries = Arc::new(entries);
        // URL files must be read with their on-disk stat (mode/mtime above are the layer's).
        let entries = if urls.is_empty() {
            entries
        } else {
            Arc::new(fix_download_stats(&entries, &urls))
        };
        let settings = shared.layer_settings(st.windows);
        let (layer, origin, hashes) = self
            .produce(st, step, Arc::clone(&entries), settings)
            .await?;
        let step_key = match step_key {
            Some(k) => k,
            None => {
                if !crate::gather::resolve_pending(&mut gathered, &hashes) {
                    return Err(BuildError::Internal(
                        "a source file was planned but not written".into(),
                    ));
                }
                let mut k = key_prefix.clone();
                describe_items(&mut k, &gathered, &urls);
                k.finish()
            }
        };
        shared.cache.record_step(&step_key, &layer)?;
        let size = layer.size;
        let digest = layer.digest.clone();
        self.push_layer(
            st,
            LayerRef::from_cached(&layer, origin),
            Some(&entries),
            &created_by,
        )
        .await?;
        st.key = chain(&step_key);
        self.done(st, step, Some((digest, size, origin)));
        Ok(())
    }

    async fn unpack_archive(
        &self,
        root: Arc<SourceRoot>,
        rel: &[u8],
        stat: FileStat,
        id: ContentId,
        at: &Location,
        instruction: &str,
    ) -> Result<SourceItem, BuildError> {
        let base = self.shared.scratch.path().to_path_buf();
        let rel = rel.to_vec();
        let at = at.clone();
        let instruction = instruction.to_string();
        tokio::task::spawn_blocking(move || -> Result<SourceItem, BuildError> {
            let dir = tempfile::Builder::new()
                .prefix("add-archive-")
                .tempdir_in(&base)
                .map_err(|e| BuildError::io(&base, "cannot create a directory", e))?;
            let file = root
                .open_file(&rel)
                .map_err(|e| BuildError::io(root.path(), "cannot open the archive", e))?;
            let (_, reader) = strata_archive::decompress_detect(file)
                .map_err(|e| BuildError::io(root.path(), "cannot read the archive", e))?;
            let options = strata_archive::ExtractOptions {
                ownership: layer::extract_ownership(),
                ..Default::default()
            };
            strata_archive::extract_layer(reader, dir.path(), &options).map_err(|e| {
                BuildError::instruction(
                    &at,
                    &instruction,
                    format!("unpacking {}: {e}", String::from_utf8_lossy(&rel)),
                )
            })?;
            let staged = Arc::new(
                SourceRoot::temporary(dir, owner_source())
                    .map_err(|e| BuildError::io(&base, "cannot open the unpacked archive", e))?,
            );
            let children = staged
                .walk(
                    b"",
                    &WalkFilter {
                        ignore: None,
                        exclude: None,
                    },
                )
                .map_err(|e| {
                    BuildError::io(staged.path(), "cannot read the unpacked archive", e)
                })?;
            let root_key = match &id {
                ContentId::Digest(d) => d.clone(),
                ContentId::Pending { .. } => {
                    return Err(BuildError::Internal(
                        "archive without a content hash".into(),
                    ));
                }
                ContentId::Within { root_key, rel } => {
                    let mut k = KeyHasher::new("archive-in-root");
                    k.str("root", &root_key.to_string()).field("rel", rel);
                    k.finish()
                }
            };
            let children: Vec<_> = children
                .into_iter()
                .map(|c| {
                    let id = (c.stat.kind == FileKind::File).then(|| ContentId::Within {
                        root_key: root_key.clone(),
                        rel: c.rel.clone(),
                    });
                    (c, id)
                })
                .collect();
            let mut dir_stat = stat;
            dir_stat.kind = FileKind::Dir;
            dir_stat.mode = 0o755;
            Ok(SourceItem::Dir {
                root: staged,
                parents_rel: Vec::new(),
                stat: dir_stat,
                children: Arc::new(children),
                rel: Vec::new(),
                owners: Owners::Preserve,
            })
        })
        .await
        .map_err(join_error)?
    }
}

/// Planned entries of downloaded files carry the layer's mode/mtime; the read check needs the
/// file's real stat, which `plan_copy` copied from the (edited) walk entry. Restore it.
fn fix_download_stats(entries: &[PlannedEntry], urls: &[UrlSource]) -> Vec<PlannedEntry> {
    entries
        .iter()
        .map(|e| {
            let mut e = e.clone();
            if let PlannedKind::File {
                content: crate::copyplan::Content::Root { root, rel, stat },
                ..
            } = &mut e.kind
                && rel.as_slice() == DOWNLOAD_NAME
                && urls.iter().any(|u| {
                    u.download
                        .as_ref()
                        .is_some_and(|d| Arc::ptr_eq(&d.root, root))
                })
                && let Ok(Some(real)) = root.lstat(rel)
            {
                *stat = real;
            }
            e
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_files() {
        let passwd = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\nbad\n";
        assert_eq!(account_lookup(passwd, "app"), Some((1000, Some(1001))));
        assert_eq!(account_lookup(passwd, "nobody"), None);
        assert_eq!(account_lookup("staff:x:50:\n", "staff"), Some((50, None)));
    }

    #[test]
    fn url_kinds() {
        assert!(is_url("https://x/y"));
        assert!(is_git("https://github.com/a/b.git"));
        assert!(is_git("git@github.com:a/b"));
        assert!(!is_git("https://x/y.tar.gz"));
    }
}
