//! COPY/ADD planning: sources + destination + the rootfs index → the exact tar entries of the
//! layer, sorted. Pure: no I/O, so the destination rules are table-tested.
//!
//! Docker's rules, as implemented (see `tests::docker_destination_table`):
//!
//! | sources | destination | result |
//! |---|---|---|
//! | one file | `/d/` (trailing slash) | `/d/<name>` (`/d` created) |
//! | one file | `/d`, an existing directory (or a symlink to one) | `/d/<name>` |
//! | one file | `/d`, missing or an existing file | the file *is* `/d` (replaced) |
//! | a directory | `/d` or `/d/` | the directory's *contents* go into `/d` (created with the source directory's mode and mtime) |
//! | a directory | `/d`, an existing file | error: not a directory |
//! | several sources (args or wildcard matches) | `/d` with or without `/` | `/d` is a directory; files as `/d/<name>`, directories' contents into `/d` |
//! | anything | relative `d` | relative to WORKDIR (default `/`) |
//! | anything | `.` / `./` | WORKDIR itself, as a directory |
//! | `--parents x/y/f` | `/d/` | `/d/x/y/f` (path after a `/./` pivot only) |
//! | heredoc `<<EOF` | `/d/` | `/d/EOF`; `/d` → the file `/d` |
//!
//! Existing directories (and symlinks to directories) on the way are followed, resolved
//! inside the rootfs; directories *inside* a copied directory overwrite the metadata of
//! existing ones (Docker does the same; only the top destination keeps its own); a file replaces a symlink at its own path (never writes through it);
//! missing parent directories are created 0755, owned by `--chown` or root. Files from the
//! build context are owned 0:0 unless `--chown`; files from a stage, an image or an ADD archive
//! keep their owners unless `--chown`. `--chmod` applies to copied files and directories, not
//! to created parents.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use strata_containerfile::{Chmod, EntryKind};
use strata_spec::Digest;

use crate::source::{FileKind, FileStat, SourceRoot, WalkEntry};
use crate::tree::{Name, NodeKind, NodeMeta, ResolveError, Tree};

/// Where a file's bytes come from when the layer is written.
#[derive(Debug, Clone)]
pub(crate) enum Content {
    /// A file under a source root, expected to still have this stat when read.
    Root {
        root: Arc<SourceRoot>,
        rel: Vec<u8>,
        stat: FileStat,
    },
    Bytes(Arc<Vec<u8>>),
}

/// What identifies a file's content in keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ContentId {
    /// SHA-256 of the bytes, computed by strata.
    Digest(Digest),
    /// The file `rel` of a root whose whole content is identified by `root_key` (a stage's
    /// step key, an image's manifest digest, an archive's digest).
    Within { root_key: Digest, rel: Vec<u8> },
    /// A context file not hashed yet (no hash-cache entry for its current stat): its bytes
    /// are hashed while the layer is written, and the real keys computed then. Until then
    /// it is named by its stat identity (only for deduplicating work within one build).
    Pending {
        dev: u64,
        ino: u64,
        size: u64,
        mtime: i64,
        mtime_nsec: i64,
        ctime: i64,
        ctime_nsec: i64,
    },
}

impl ContentId {
    pub(crate) fn key_bytes(&self) -> Vec<u8> {
        match self {
            ContentId::Digest(d) => d.to_string().into_bytes(),
            ContentId::Within { root_key, rel } => {
                let mut v = format!("{root_key}:").into_bytes();
                v.extend_from_slice(rel);
                v
            }
            ContentId::Pending {
                dev,
                ino,
                size,
                mtime,
                mtime_nsec,
                ctime,
                ctime_nsec,
            } => format!("pending:{dev}:{ino}:{size}:{mtime}.{mtime_nsec}:{ctime}.{ctime_nsec}")
                .into_bytes(),
        }
    }

    pub(crate) fn pending(st: &FileStat) -> ContentId {
        ContentId::Pending {
            dev: st.dev,
            ino: st.ino,
            size: st.size,
            mtime: st.mtime,
            mtime_nsec: st.mtime_nsec,
            ctime: st.ctime,
            ctime_nsec: st.ctime_nsec,
        }
    }

    pub(crate) fn is_pending(&self) -> bool {
        matches!(self, ContentId::Pending { .. })
    }
}

/// Ownership of copied entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Owners {
    /// 0:0 (build context, URLs, heredocs).
    Root,
    /// As the source has them (stages, images, ADD archives).
    Preserve,
}

/// One source after globbing.
#[derive(Debug, Clone)]
pub(crate) enum SourceItem {
    /// A directory whose contents are copied.
    Dir {
        root: Arc<SourceRoot>,
        /// Path used with `--parents` (components kept under the destination).
        parents_rel: Vec<Name>,
        stat: FileStat,
        /// The contents, walked (relative to the directory), with content ids for files.
        children: Arc<Vec<(WalkEntry, Option<ContentId>)>>,
        /// Root-relative path of the directory (content reads).
        rel: Vec<u8>,
        owners: Owners,
    },
    /// A single non-directory entry (file, symlink, fifo, device).
    Entry {
        root: Arc<SourceRoot>,
        rel: Vec<u8>,
        parents_rel: Vec<Name>,
        entry: WalkEntry,
        id: Option<ContentId>,
        owners: Owners,
    },
    /// Bytes from a heredoc (or anything already in memory).
    Inline {
        name: Name,
        bytes: Arc<Vec<u8>>,
        mode: u32,
        mtime: u64,
        id: ContentId,
    },
}

#[derive(Debug, Clone)]
pub(crate) enum PlannedKind {
    Dir,
    File {
        size: u64,
        content: Content,
        id: ContentId,
    },
    Symlink(Vec<u8>),
    /// A hard link to an earlier entry of this layer.
    Hardlink(Vec<Name>),
    Fifo,
    Device {
        block: bool,
        major: u32,
        minor: u32,
    },
}

/// One tar entry of the layer.
#[derive(Debug, Clone)]
pub(crate) struct PlannedEntry {
    pub parts: Vec<Name>,
    pub kind: PlannedKind,
    pub meta: NodeMeta,
}

impl PlannedEntry {
    pub(crate) fn path(&self) -> Vec<u8> {
        self.parts.join(&b'/')
    }
}

/// The destination and flags of one COPY/ADD.
#[derive(Debug, Clone)]
pub(crate) struct CopyRequest<'a> {
    pub dest: &'a str,
    pub workdir: &'a str,
    pub windows: bool,
    pub chown: Option<(u64, u64)>,
    pub chmod: Option<&'a Chmod>,
    pub parents: bool,
    /// mtime of directories the copy creates (SOURCE_DATE_EPOCH, else the newest source).
    pub created_mtime: u64,
}

/// Windows destinations: `C:\app\x` → `/app/x` (drive letter dropped, backslashes).
pub(crate) fn normalise_windows_path(p: &str) -> String {
    let mut s = p.replace('\\', "/");
    let b = s.as_bytes();
    if b.len() >= 2 && b[1] == b':' && b[0].is_ascii_alphabetic() {
        s = s[2..].to_string();
        if s.is_empty() {
            s = "/".into();
        }
    }
    s
}

/// Components of `path` made absolute against `workdir`; `..` stops at `/`.
pub(crate) fn absolute_parts(path: &str, workdir: &str) -> Vec<Name> {
    let full = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("{workdir}/{path}")
    };
    let mut out: Vec<Name> = Vec::new();
    for c in full.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            _ => out.push(c.as_bytes().to_vec()),
        }
    }
    out
}

fn basename(parts: &[Name], fallback: &[u8]) -> Name {
    parts.last().cloned().unwrap_or_else(|| fallback.to_vec())
}

struct Planner<'a> {
    tree: &'a Tree,
    req: &'a CopyRequest<'a>,
    /// Planned entries by path; later sources replace earlier ones.
    entries: BTreeMap<Vec<Name>, (PlannedKind, NodeMeta)>,
}

impl Planner<'_> {
    fn owner(&self, owners: Owners, st: Option<&FileStat>) -> (u64, u64) {
        match (self.req.chown, owners, st) {
            (Some(c), _, _) => c,
            (None, Owners::Preserve, Some(st)) => (st.uid, st.gid),
            _ => (0, 0),
        }
    }

    /// What is at `parts` now: planned by this copy, or in the rootfs.
    fn is_dir(&self, parts: &[Name]) -> bool {
        if let Some((kind, _)) = self.entries.get(parts) {
            return matches!(kind, PlannedKind::Dir);
        }
        matches!(self.tree.get(parts), Some(n) if n.is_dir())
    }

    /// The path a child named `name` of the (resolved) directory `parent` is written at: an
    /// existing symlink there is followed when it leads to a directory and the child is a
    /// directory; otherwise the child replaces it.
    fn place(&self, parent: &[Name], name: &[u8], child_is_dir: bool) -> Vec<Name> {
        let mut p = parent.to_vec();
        p.push(name.to_vec());
        if self.entries.contains_key(&p) {
            return p;
        }
        if child_is_dir
            && let Some(node) = self.tree.get(&p)
            && matches!(node.kind, NodeKind::Symlink(_))
            && let Ok((resolved, Some(target))) = self.tree.resolve(&p, true)
            && target.is_dir()
        {
            return resolved;
        }
        p
    }

    fn add(&mut self, parts: Vec<Name>, kind: PlannedKind, meta: NodeMeta) {
        // A directory over an existing planned directory keeps the latest metadata.
        self.entries.insert(parts, (kind, meta));
    }

    fn entry_kind(
        &self,
        root: &Arc<SourceRoot>,
        rel: &[u8],
        e: &WalkEntry,
        id: Option<&ContentId>,
    ) -> Result<Option<PlannedKind>, String> {
        Ok(Some(match e.stat.kind {
            FileKind::Dir => PlannedKind::Dir,
            FileKind::File => PlannedKind::File {
                size: e.stat.size,
                content: Content::Root {
                    root: Arc::clone(root),
                    rel: rel.to_vec(),
                    stat: e.stat,
                },
                id: id.cloned().ok_or_else(|| {
                    format!(
                        "internal: no content id for {}",
                        String::from_utf8_lossy(rel)
                    )
                })?,
            },
            FileKind::Symlink => PlannedKind::Symlink(e.link.clone().unwrap_or_default()),
            FileKind::Fifo => PlannedKind::Fifo,
            FileKind::CharDevice | FileKind::BlockDevice => PlannedKind::Device {
                block: e.stat.kind == FileKind::BlockDevice,
                major: rustix::fs::major(e.stat.rdev),
                minor: rustix::fs::minor(e.stat.rdev),
            },
            // Sockets cannot be stored in a tar (GNU tar skips them too).
            FileKind::Socket => return Ok(None),
        }))
    }

    fn meta(&self, st: &FileStat, owners: Owners) -> NodeMeta {
        let (uid, gid) = self.owner(owners, Some(st));
        let mode = match (self.req.chmod, st.kind) {
            (Some(c), FileKind::File) => c.apply(st.mode, EntryKind::File),
            (Some(c), FileKind::Dir) => c.apply(st.mode, EntryKind::Directory),
            _ => st.mode,
        };
        NodeMeta {
            mode,
            uid,
            gid,
            mtime: st.mtime_secs(),
        }
    }
}

fn join_rel(a: &[u8], b: &[u8]) -> Vec<u8> {
    if a.is_empty() {
        return b.to_vec();
    }
    let mut v = a.to_vec();
    v.push(b'/');
    v.extend_from_slice(b);
    v
}

/// Plan the entries of one COPY/ADD. Errors are messages for the instruction's location.
pub(crate) fn plan_copy(
    items: &[SourceItem],
    req: &CopyRequest<'_>,
    tree: &Tree,
) -> Result<Vec<PlannedEntry>, String> {
    let dest_str = if req.windows {
        normalise_windows_path(req.dest)
    } else {
        req.dest.to_string()
    };
    let workdir = if req.windows {
        normalise_windows_path(req.workdir)
    } else {
        req.workdir.to_string()
    };
    let trailing = dest_str.ends_with('/')
        || dest_str == "."
        || dest_str == ".."
        || dest_str.ends_with("/.")
        || dest_str.ends_with("/..");
    let dest_parts = absolute_parts(&dest_str, &workdir);
    let (dest_resolved, dest_node) = tree
        .resolve(&dest_parts, true)
        .map_err(|e| resolve_message(&dest_str, e))?;
    let dest_exists_dir = dest_node.is_some_and(|n| n.is_dir());
    let dest_exists_other = dest_node.is_some() && !dest_exists_dir;
    let any_dir_source = items.iter().any(|i| matches!(i, SourceItem::Dir { .. }));
    let dest_is_dir = trailing || items.len() > 1 || dest_exists_dir || any_dir_source;
    if dest_is_dir && dest_exists_other {
        return Err(format!(
            "destination {dest_str} exists and is not a directory"
        ));
    }

    let mut p = Planner {
        tree,
        req,
        entries: BTreeMap::new(),
    };
    let created = |chown: Option<(u64, u64)>, mtime: u64| {
        let (uid, gid) = chown.unwrap_or((0, 0));
        NodeMeta {
            mode: 0o755,
            uid,
            gid,
            mtime,
        }
    };

    for item in items {
        match item {
            SourceItem::Dir {
                root,
                parents_rel,
                stat,
                children,
                rel,
                owners,
            } => {
                let mut target = dest_resolved.clone();
                if req.parents {
                    for c in parents_rel {
                        let next = p.place(&target, c, true);
                        target = next;
                    }
                }
                if !p.is_dir(&target) && !target.is_empty() {
                    // The destination directory is created with the source directory's
                    // mode and mtime, owned by --chown or root.
                    let (uid, gid) = p.owner(Owners::Root, None);
                    let meta = NodeMeta {
                        mode: req
                            .chmod
                            .map(|c| c.apply(stat.mode, EntryKind::Directory))
                            .unwrap_or(stat.mode),
                        uid,
                        gid,
                        mtime: stat.mtime_secs(),
                    };
                    p.add(target.clone(), PlannedKind::Dir, meta);
                }
                // Resolved location of every directory of the source, by its relative path.
                let mut dirs: HashMap<Vec<u8>, Vec<Name>> = HashMap::new();
                dirs.insert(Vec::new(), target.clone());
                for (e, id) in children.iter() {
                    let (parent_rel, name) = match e.rel.iter().rposition(|&b| b == b'/') {
                        Some(i) => (e.rel[..i].to_vec(), e.rel[i + 1..].to_vec()),
                        None => (Vec::new(), e.rel.clone()),
                    };
                    // A parent skipped by an ignore pattern that re-includes below it is
                    // created as a plain directory.
                    let parent = match dirs.get(&parent_rel) {
                        Some(d) => d.clone(),
                        None => {
                            let mut t = target.clone();
                            for c in parent_rel.split(|&b| b == b'/') {
                                t = p.place(&t, c, true);
                            }
                            dirs.insert(parent_rel.clone(), t.clone());
                            t
                        }
                    };
                    let is_dir = e.stat.kind == FileKind::Dir;
                    let at = p.place(&parent, &name, is_dir);
                    let full_rel = join_rel(rel, &e.rel);
                    let Some(kind) = p.entry_kind(root, &full_rel, e, id.as_ref())? else {
                        continue;
                    };
                    if is_dir {
                        // Directories inside the source overwrite the metadata of existing
                        // ones, as Docker's COPY does (only the top destination is kept).
                        dirs.insert(e.rel.clone(), at.clone());
                    }
                    let meta = p.meta(&e.stat, *owners);
                    p.add(at, kind, meta);
                }
            }
            SourceItem::Entry {
                root,
                rel,
                parents_rel,
                entry,
                id,
                owners,
            } => {
                let at = if dest_is_dir {
                    let mut t = dest_resolved.clone();
                    let names: Vec<Name> = if req.parents {
                        parents_rel.clone()
                    } else {
                        vec![basename(parents_rel, rel)]
                    };
                    let n = names.len();
                    for (i, c) in names.into_iter().enumerate() {
                        t = p.place(&t, &c, i + 1 < n);
                    }
                    t
                } else {
                    // The file *is* the destination: an existing symlink at the last
                    // component was already followed by resolve (COPY onto a link to a
                    // file replaces the file it names, as Docker does).
                    dest_resolved.clone()
                };
                if at.is_empty() {
                    return Err("cannot copy a file onto the root directory".into());
                }
                let Some(kind) = p.entry_kind(root, rel, entry, id.as_ref())? else {
                    continue;
                };
                let meta = p.meta(&entry.stat, *owners);
                p.add(at, kind, meta);
            }
            SourceItem::Inline {
                name,
                bytes,
                mode,
                mtime,
                id,
            } => {
                let at = if dest_is_dir {
                    p.place(&dest_resolved, name, false)
                } else {
                    dest_resolved.clone()
                };
                if at.is_empty() {
                    return Err("cannot copy a file onto the root directory".into());
                }
                let (uid, gid) = p.owner(Owners::Root, None);
                let meta = NodeMeta {
                    mode: req
                        .chmod
                        .map(|c| c.apply(*mode, EntryKind::File))
                        .unwrap_or(*mode),
                    uid,
                    gid,
                    mtime: *mtime,
                };
                p.add(
                    at,
                    PlannedKind::File {
                        size: bytes.len() as u64,
                        content: Content::Bytes(Arc::clone(bytes)),
                        id: id.clone(),
                    },
                    meta,
                );
            }
        }
    }

    // Missing parents of every entry are created.
    let mut missing: std::collections::BTreeSet<Vec<Name>> = Default::default();
    for path in p.entries.keys() {
        for i in 1..path.len() {
            let anc = &path[..i];
            if p.entries.contains_key(anc) || missing.contains(anc) {
                continue;
            }
            if !tree.get(anc).is_some_and(|n| n.is_dir()) {
                missing.insert(anc.to_vec());
            }
        }
    }
    for anc in missing {
        let meta = created(req.chown, req.created_mtime);
        p.entries.entry(anc).or_insert((PlannedKind::Dir, meta));
    }

    // Hard links: within this copy, later names of one inode link to the first (in tar order).
    let mut first: HashMap<(usize, u64, u64), Vec<Name>> = HashMap::new();
    let mut out: Vec<PlannedEntry> = Vec::with_capacity(p.entries.len());
    for (parts, (kind, meta)) in p.entries {
        let mut e = PlannedEntry { parts, kind, meta };
        if let PlannedKind::File {
            content: Content::Root { root, stat, .. },
            ..
        } = &e.kind
            && stat.nlink > 1
        {
            let key = (Arc::as_ptr(root) as usize, stat.dev, stat.ino);
            if let Some(target) = first.get(&key) {
                e.kind = PlannedKind::Hardlink(target.clone());
            } else {
                first.insert(key, e.parts.clone());
            }
        }
        out.push(e);
    }
    Ok(out)
}

fn resolve_message(dest: &str, e: ResolveError) -> String {
    match e {
        ResolveError::TooManyLinks => {
            format!("destination {dest}: too many levels of symbolic links")
        }
        ResolveError::NotADirectory(at) => format!(
            "destination {dest}: /{} is not a directory",
            String::from_utf8_lossy(&at.join(&b'/'))
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::OwnerSource;
    use crate::tree::{RawEntry, RawKind};

    struct Fixture {
        _dir: tempfile::TempDir,
        root: Arc<SourceRoot>,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let root = Arc::new(SourceRoot::open(dir.path(), OwnerSource::Inode).unwrap());
        Fixture { _dir: dir, root }
    }

    fn st(kind: FileKind, mode: u32) -> FileStat {
        FileStat {
            kind,
            mode,
            uid: 1000,
            gid: 1000,
            size: 4,
            mtime: 1_600_000_000,
            mtime_nsec: 0,
            ctime: 0,
            ctime_nsec: 0,
            dev: 1,
            ino: 7,
            nlink: 1,
            rdev: 0,
        }
    }

    fn file(f: &Fixture, name: &str) -> SourceItem {
        SourceItem::Entry {
            root: Arc::clone(&f.root),
            rel: name.as_bytes().to_vec(),
            parents_rel: name.split('/').map(|c| c.as_bytes().to_vec()).collect(),
            entry: WalkEntry {
                rel: Vec::new(),
                stat: st(FileKind::File, 0o644),
                link: None,
            },
            id: Some(ContentId::Digest(Digest::sha256_of(name.as_bytes()))),
            owners: Owners::Root,
        }
    }

    fn dir(f: &Fixture, name: &str, children: &[(&str, FileKind)]) -> SourceItem {
        SourceItem::Dir {
            root: Arc::clone(&f.root),
            parents_rel: name.split('/').map(|c| c.as_bytes().to_vec()).collect(),
            stat: st(FileKind::Dir, 0o750),
            children: Arc::new(
                children
                    .iter()
                    .map(|(c, k)| {
                        (
                            WalkEntry {
                                rel: c.as_bytes().to_vec(),
                                stat: st(*k, if *k == FileKind::Dir { 0o755 } else { 0o644 }),
                                link: (*k == FileKind::Symlink).then(|| b"target".to_vec()),
                            },
                            (*k == FileKind::File)
                                .then(|| ContentId::Digest(Digest::sha256_of(c.as_bytes()))),
                        )
                    })
                    .collect(),
            ),
            rel: name.as_bytes().to_vec(),
            owners: Owners::Root,
        }
    }

    fn base() -> Tree {
        let mut t = Tree::default();
        let e = |p: &str, kind: RawKind| RawEntry {
            parts: crate::tree::split_clean(p.as_bytes()).unwrap(),
            kind,
            meta: NodeMeta {
                mode: 0o755,
                ..Default::default()
            },
        };
        t.apply_layer(
            &[
                e("existing", RawKind::Dir),
                e("usr/bin", RawKind::Dir),
                e("bin", RawKind::Symlink(b"usr/bin".to_vec())),
                e("afile", RawKind::File(3)),
                e("linkfile", RawKind::Symlink(b"afile".to_vec())),
                e("app", RawKind::Dir),
            ],
            0,
        );
        t
    }

    fn req<'a>(dest: &'a str, workdir: &'a str) -> CopyRequest<'a> {
        CopyRequest {
            dest,
            workdir,
            windows: false,
            chown: None,
            chmod: None,
            parents: false,
            created_mtime: 0,
        }
    }

    fn paths(entries: &[PlannedEntry]) -> Vec<String> {
        entries
            .iter()
            .map(|e| {
                let mut s = String::from_utf8(e.path()).unwrap();
                if matches!(e.kind, PlannedKind::Dir) {
                    s.push('/');
                }
                s
            })
            .collect()
    }

    #[test]
    fn docker_destination_table() {
        let f = fixture();
        let t = base();
        type Case<'a> = (
            &'a str,
            Vec<SourceItem>,
            &'a str,
            &'a str,
            Result<Vec<&'a str>, &'a str>,
        );
        let cases: Vec<Case> = vec![
            // (case, sources, dest, workdir, expected entries)
            (
                "file to dir/",
                vec![file(&f, "a.txt")],
                "/d/",
                "/",
                Ok(vec!["d/", "d/a.txt"]),
            ),
            (
                "file to existing dir",
                vec![file(&f, "a.txt")],
                "/existing",
                "/",
                Ok(vec!["existing/a.txt"]),
            ),
            (
                "file to new path",
                vec![file(&f, "a.txt")],
                "/new",
                "/",
                Ok(vec!["new"]),
            ),
            (
                "file onto existing file",
                vec![file(&f, "a.txt")],
                "/afile",
                "/",
                Ok(vec!["afile"]),
            ),
            (
                "file onto link to file",
                vec![file(&f, "a.txt")],
                "/linkfile",
                "/",
                Ok(vec!["afile"]),
            ),
            (
                "file into symlinked dir",
                vec![file(&f, "a.txt")],
                "/bin/",
                "/",
                Ok(vec!["usr/bin/a.txt"]),
            ),
            (
                "file to deep new dir/",
                vec![file(&f, "a.txt")],
                "/x/y/",
                "/",
                Ok(vec!["x/", "x/y/", "x/y/a.txt"]),
            ),
            (
                "relative dest",
                vec![file(&f, "a.txt")],
                "rel/",
                "/app",
                Ok(vec!["app/rel/", "app/rel/a.txt"]),
            ),
            (
                "dot dest",
                vec![file(&f, "a.txt")],
                ".",
                "/app",
                Ok(vec!["app/a.txt"]),
            ),
            (
                "dotdot clamps",
                vec![file(&f, "a.txt")],
                "../../../x",
                "/app",
                Ok(vec!["x"]),
            ),
            (
                "dir contents",
                vec![dir(
                    &f,
                    "src",
                    &[
                        ("f", FileKind::File),
                        ("s", FileKind::Dir),
                        ("s/g", FileKind::File),
                    ],
                )],
                "/d",
                "/",
                Ok(vec!["d/", "d/f", "d/s/", "d/s/g"]),
            ),
            (
                "dir into existing dir",
                vec![dir(&f, "src", &[("f", FileKind::File)])],
                "/existing",
                "/",
                Ok(vec!["existing/f"]),
            ),
            (
                "dir onto file",
                vec![dir(&f, "src", &[("f", FileKind::File)])],
                "/afile",
                "/",
                Err("exists and is not a directory"),
            ),
            (
                "dir child through symlinked dir",
                vec![dir(
                    &f,
                    "src",
                    &[("bin", FileKind::Dir), ("bin/x", FileKind::File)],
                )],
                "/",
                "/",
                Ok(vec!["usr/bin/", "usr/bin/x"]),
            ),
            (
                "two files no slash",
                vec![file(&f, "a"), file(&f, "b")],
                "/multi",
                "/",
                Ok(vec!["multi/", "multi/a", "multi/b"]),
            ),
            (
                "two files onto a file",
                vec![file(&f, "a"), file(&f, "b")],
                "/afile",
                "/",
                Err("exists and is not a directory"),
            ),
            (
                "later source wins",
                vec![
                    dir(&f, "one", &[("f", FileKind::File)]),
                    dir(&f, "two", &[("f", FileKind::File)]),
                ],
                "/d/",
                "/",
                Ok(vec!["d/", "d/f"]),
            ),
            (
                "through a file",
                vec![file(&f, "a")],
                "/afile/x",
                "/",
                Err("is not a directory"),
            ),
            (
                "symlink source",
                vec![dir(&f, "s", &[("l", FileKind::Symlink)])],
                "/d",
                "/",
                Ok(vec!["d/", "d/l"]),
            ),
        ];
        for (name, items, dest, wd, want) in cases {
            let got = plan_copy(&items, &req(dest, wd), &t);
            match (got, want) {
                (Ok(entries), Ok(w)) => assert_eq!(paths(&entries), w, "case {name}"),
                (Err(e), Err(w)) => assert!(e.contains(w), "case {name}: {e}"),
                (got, want) => panic!(
                    "case {name}: got {:?}, want {want:?}",
                    got.map(|e| paths(&e))
                ),
            }
        }
    }

    #[test]
    fn parents_ownership_and_chmod() {
        let f = fixture();
        let t = base();
        let mut r = req("/dst/", "/");
        r.parents = true;
        let e = plan_copy(&[file(&f, "x/y/a.txt")], &r, &t).unwrap();
        assert_eq!(paths(&e), ["dst/", "dst/x/", "dst/x/y/", "dst/x/y/a.txt"]);
        // Context files are 0:0; --chown everything incl. created parents; --chmod only sources.
        let e = plan_copy(
            &[dir(&f, "src", &[("f", FileKind::File)])],
            &req("/n/", "/"),
            &t,
        )
        .unwrap();
        assert!(e.iter().all(|e| e.meta.uid == 0 && e.meta.gid == 0));
        assert_eq!(
            e[0].meta.mode, 0o750,
            "dest dir takes the source dir's mode"
        );
        let mut r = req("/n/deep/", "/");
        r.chown = Some((5, 6));
        let chmod = Chmod::parse("0600").unwrap();
        r.chmod = Some(&chmod);
        r.created_mtime = 42;
        let e = plan_copy(&[file(&f, "a")], &r, &t).unwrap();
        assert_eq!(paths(&e), ["n/", "n/deep/", "n/deep/a"]);
        assert!(e.iter().all(|e| e.meta.uid == 5 && e.meta.gid == 6));
        assert_eq!(e[0].meta.mode, 0o755);
        assert_eq!(e[0].meta.mtime, 42);
        assert_eq!(e[2].meta.mode, 0o600);
        // Preserved owners (stages): the source's ids.
        let mut item = file(&f, "a");
        if let SourceItem::Entry { owners, .. } = &mut item {
            *owners = Owners::Preserve;
        }
        let e = plan_copy(&[item], &req("/p", "/"), &t).unwrap();
        assert_eq!((e[0].meta.uid, e[0].meta.gid), (1000, 1000));
    }

    #[test]
    fn windows_destinations_and_heredocs() {
        assert_eq!(normalise_windows_path("C:\\app\\x"), "/app/x");
        assert_eq!(normalise_windows_path("c:"), "/");
        let t = Tree::default();
        let mut r = req("C:\\app\\", "C:\\");
        r.windows = true;
        let inline = SourceItem::Inline {
            name: b"EOF".to_vec(),
            bytes: Arc::new(b"hi\n".to_vec()),
            mode: 0o644,
            mtime: 0,
            id: ContentId::Digest(Digest::sha256_of(b"hi\n")),
        };
        let e = plan_copy(std::slice::from_ref(&inline), &r, &t).unwrap();
        assert_eq!(paths(&e), ["app/", "app/EOF"]);
        let e = plan_copy(&[inline], &req("/etc/motd", "/"), &t).unwrap();
        assert_eq!(paths(&e), ["etc/", "etc/motd"]);
    }

    #[test]
    fn hardlinks_within_a_copy() {
        let f = fixture();
        let mut item = dir(&f, "src", &[("a", FileKind::File), ("b", FileKind::File)]);
        if let SourceItem::Dir { children, .. } = &mut item {
            for (c, _) in Arc::make_mut(children).iter_mut() {
                c.stat.nlink = 2;
                c.stat.ino = 99;
            }
        }
        let e = plan_copy(&[item], &req("/h/", "/"), &Tree::default()).unwrap();
        assert!(matches!(e[1].kind, PlannedKind::File { .. }));
        match &e[2].kind {
            PlannedKind::Hardlink(t) => assert_eq!(t.join(&b'/'), b"h/a"),
            other => panic!("{other:?}"),
        }
    }
}
