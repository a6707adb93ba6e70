//! `RUN --mount`: from parsed mounts to host paths the sandbox binds (blocking code).
//!
//! - `type=cache`: a directory `<layout>/.strata/cache-mounts/<name>` where `<name>` is the
//!   id with every byte outside `[A-Za-z0-9._-]` replaced, plus a hash of the id: an id can
//!   never name a path outside (RELIABILITY B7, CVE-2024-9675 `id=../../../root`). Created
//!   by rename of a finished directory (mode/uid/gid applied, seeded from `from`/`source`).
//!   `sharing=shared` takes a shared `flock`, `locked` an exclusive one (waits), `private` an
//!   exclusive one or, when busy, a private instance of its own.
//! - `type=bind`: `source` resolved inside the build context (`..` out of it is an error;
//!   `.dockerignore` applies) or inside the `from` stage/image's root (`/` is that root),
//!   symlinks followed only inside it. Read-only mounts bind the resolved directory (or a
//!   staged copy of what `.dockerignore` keeps); `rw` mounts get a copy whose changes are
//!   discarded, as in BuildKit.
//! - `type=secret`: the value (`--secret`) is written to a file on a tmpfs (`/dev/shm`)
//!   when there is one, else in the step's own directory, with the mount's mode and owner,
//!   and removed after the step; `env=` passes it in the environment. Secret values enter
//!   neither the step key, the history, the config nor a layer (RELIABILITY B10).
//! - `type=tmpfs`: a fresh tmpfs.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use strata_containerfile::{CacheSharing, IgnoreMatcher};
use strata_sandbox::{Access, MountSpec};
use strata_spec::Digest;

use crate::BuildError;
use crate::cache::KeyHasher;
use crate::gather::hash_files;
use crate::hashcache::HashCache;
use crate::layerdirs::{make_dir, remove_tree, unique_dir};
use crate::options::SecretSource;
use crate::source::{FileKind, SourceRoot, WalkEntry, WalkFilter};

/// Largest secret value read (BuildKit's limit is 500 KiB: secrets are tokens and keys).
pub(crate) const MAX_SECRET_BYTES: u64 = 512 * 1024;
/// statfs f_type of tmpfs.
const TMPFS_MAGIC: i64 = 0x0102_1994;
/// Readable characters kept from a cache id in its directory name.
const MAX_CACHE_NAME_CHARS: usize = 48;

/// Where a cache mount's seed or a bind mount's content comes from.
#[derive(Clone)]
pub(crate) struct MountRoot {
    pub root: Arc<SourceRoot>,
    /// The build context (`.dockerignore` applies), not a stage or image root.
    pub context: bool,
}

/// A `--mount` resolved enough for the step key; [`prepare`] makes it real on a miss.
pub(crate) enum PlannedMount {
    Bind {
        target: String,
        root: MountRoot,
        /// Root-relative path of the source, symlinks resolved inside the root.
        rel: Vec<u8>,
        /// What `.dockerignore` keeps under the source, when it drops something (then a
        /// staged copy is mounted instead of the directory itself).
        kept: Option<Vec<WalkEntry>>,
        access: Access,
    },
    Cache {
        target: String,
        name: String,
        sharing: CacheSharing,
        access: Access,
        mode: u32,
        uid: u32,
        gid: u32,
        seed: Option<(MountRoot, Vec<u8>)>,
    },
    Tmpfs {
        target: String,
        size: Option<u64>,
    },
    Secret {
        id: String,
        /// `None` with `env`: only the environment variable.
        target: Option<String>,
        env: Option<String>,
        required: bool,
        mode: u32,
        uid: u32,
        gid: u32,
    },
}

/// Directory name of a cache mount id: never `.`/`..`, never a `/`, unique per id.
pub(crate) fn cache_dir_name(id: &str) -> String {
    let readable: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(MAX_CACHE_NAME_CHARS)
        .collect();
    let readable = readable.trim_start_matches('.');
    let hash = Digest::sha256_of(id.as_bytes());
    format!("{readable}-{}", &hash.encoded()[..16])
}

/// An absolute, clean mount target (relative targets are relative to WORKDIR, `..` stops at
/// `/`, as BuildKit does).
pub(crate) fn absolute_target(target: &str, workdir: &str) -> String {
    let parts = crate::copyplan::absolute_parts(target, workdir);
    let joined: Vec<String> = parts
        .iter()
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    format!("/{}", joined.join("/"))
}

/// Resolve a bind/seed `source` inside `root`: the root-relative path it names. `None` when
/// it climbs out of the context (RELIABILITY B7: never outside the context or the stage).
pub(crate) fn resolve_source(
    root: &MountRoot,
    source: Option<&str>,
) -> Result<Option<Vec<u8>>, String> {
    let source = source.unwrap_or("/");
    let Some((parts, _)) = crate::source::clean_source(source, !root.context) else {
        return Ok(None);
    };
    let rel = parts.join("/").into_bytes();
    match root.root.resolve(&rel) {
        Ok(Some(p)) => Ok(Some(p)),
        Ok(None) => Err(format!("source {source:?} does not exist")),
        Err(e) => Err(format!("source {source:?}: {e}")),
    }
}

fn walk_join(start: &[u8], rel: &[u8]) -> Vec<u8> {
    if start.is_empty() {
        return rel.to_vec();
    }
    let mut v = start.to_vec();
    v.push(b'/');
    v.extend_from_slice(rel);
    v
}

/// The identity of a context bind source for the step key (paths, types, modes, link
/// targets and content hashes of what `.dockerignore` keeps), and the kept entries when it
/// drops something.
pub(crate) fn context_identity(
    root: &SourceRoot,
    rel: &[u8],
    ignore: Option<&IgnoreMatcher>,
    hashes: &Mutex<HashCache>,
) -> Result<(Digest, Option<Vec<WalkEntry>>), BuildError> {
    let shown = root.path().join(std::ffi::OsStr::from_bytes(rel));
    let top = root
        .lstat(rel)
        .map_err(|e| BuildError::io(&shown, "cannot stat the bind source", e))?
        .ok_or_else(|| {
            BuildError::io(
                &shown,
                "bind source vanished",
                io::Error::from(io::ErrorKind::NotFound),
            )
        })?;
    let mut k = KeyHasher::new("bind-context");
    if top.kind != FileKind::Dir {
        let files = vec![(rel.to_vec(), top)];
        let h = hash_files(root, files, hashes)
            .map_err(|(_, e)| BuildError::io(&shown, "cannot read the bind source", e))?;
        k.str("type", "file").num("mode", top.mode as u64);
        if let Some(d) = h.get(rel) {
            k.str("content", &d.to_string());
        }
        return Ok((k.finish(), None));
    }
    let filter = WalkFilter {
        ignore,
        exclude: None,
    };
    let kept = root
        .walk(rel, &filter)
        .map_err(|e| BuildError::io(&shown, "cannot read the bind source", e))?;
    let dropped = match ignore {
        None => false,
        Some(_) => {
            let all = root
                .walk(
                    rel,
                    &WalkFilter {
                        ignore: None,
                        exclude: None,
                    },
                )
                .map_err(|e| BuildError::io(&shown, "cannot read the bind source", e))?;
            all.len() != kept.len()
        }
    };
    let files: Vec<(Vec<u8>, crate::source::FileStat)> = kept
        .iter()
        .filter(|e| e.stat.kind == FileKind::File)
        .map(|e| (walk_join(rel, &e.rel), e.stat))
        .collect();
    let digests = hash_files(root, files, hashes)
        .map_err(|(_, e)| BuildError::io(&shown, "cannot read the bind source", e))?;
    k.str("type", "dir").num("mode", top.mode as u64);
    for e in &kept {
        k.field("path", &e.rel).num("mode", e.stat.mode as u64);
        match e.stat.kind {
            FileKind::File => {
                let d = digests
                    .get(&walk_join(rel, &e.rel))
                    .map(|d| d.to_string())
                    .unwrap_or_default();
                k.str("file", &d);
            }
            FileKind::Symlink => {
                k.field("symlink", e.link.as_deref().unwrap_or_default());
            }
            FileKind::Dir => {
                k.str("dir", "");
            }
            _ => {
                k.str("other", "");
            }
        }
    }
    Ok((k.finish(), dropped.then_some(kept)))
}

/// Something released when the step is over.
pub(crate) enum Guard {
    /// A `flock` on a cache mount.
    Lock(#[allow(dead_code)] File),
    /// A directory removed afterwards (staged copies, secrets).
    Dir(PathBuf),
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Guard::Dir(p) = self {
            let _ = remove_tree(p);
        }
    }
}

/// The mounts of one step, ready for the sandbox.
#[derive(Default)]
pub(crate) struct Prepared {
    pub specs: Vec<MountSpec>,
    /// `KEY=VALUE` of `env=` secrets.
    pub env: Vec<String>,
    pub guards: Vec<Guard>,
}

/// Paths `prepare` works in.
pub(crate) struct MountPlaces<'a> {
    /// This step's own scratch directory (removed after the step).
    pub step_dir: &'a Path,
    /// `<layout>/.strata/cache-mounts`.
    pub cache_root: &'a Path,
    pub secrets: &'a BTreeMap<String, SecretSource>,
}

/// Make every planned mount real. Errors are messages for the RUN instruction.
pub(crate) fn prepare(
    planned: &[PlannedMount],
    places: &MountPlaces<'_>,
) -> Result<Prepared, String> {
    let mut out = Prepared::default();
    let mut secret_dir: Option<PathBuf> = None;
    for (i, m) in planned.iter().enumerate() {
        match m {
            PlannedMount::Tmpfs { target, size } => out.specs.push(MountSpec::Tmpfs {
                target: target.clone(),
                size_bytes: *size,
                mode: None,
            }),
            PlannedMount::Bind {
                target,
                root,
                rel,
                kept,
                access,
            } => {
                let source = root.root.path().join(std::ffi::OsStr::from_bytes(rel));
                let staged = kept.is_some() || *access == Access::ReadWrite;
                let source = if staged {
                    let dest = places.step_dir.join(format!("bind-{i}"));
                    let entries = match kept {
                        Some(k) => k.clone(),
                        None => {
                            let md = std::fs::symlink_metadata(&source)
                                .map_err(|e| format!("bind source {}: {e}", source.display()))?;
                            if md.is_dir() {
                                root.root
                                    .walk(
                                        rel,
                                        &WalkFilter {
                                            ignore: None,
                                            exclude: None,
                                        },
                                    )
                                    .map_err(|e| format!("reading bind source: {e}"))?
                            } else {
                                Vec::new()
                            }
                        }
                    };
                    let link = if *access == Access::ReadOnly {
                        LinkMode::HardLinkOrCopy
                    } else {
                        LinkMode::Copy
                    };
                    stage_copy(&root.root, rel, &entries, &dest, link)
                        .map_err(|e| format!("copying the bind source: {e}"))?;
                    dest
                } else {
                    source
                };
                out.specs.push(MountSpec::Bind {
                    source,
                    target: target.clone(),
                    access: *access,
                });
            }
            PlannedMount::Cache {
                target,
                name,
                sharing,
                access,
                mode,
                uid,
                gid,
                seed,
            } => {
                let (dir, lock) = cache_dir(
                    places.cache_root,
                    name,
                    *sharing,
                    *mode,
                    *uid,
                    *gid,
                    seed.as_ref(),
                )
                .map_err(|e| format!("cache mount {target}: {e}"))?;
                out.guards.push(Guard::Lock(lock));
                out.specs.push(MountSpec::Bind {
                    source: dir,
                    target: target.clone(),
                    access: *access,
                });
            }
            PlannedMount::Secret {
                id,
                target,
                env,
                required,
                mode,
                uid,
                gid,
            } => {
                let Some(value) = read_secret(id, places.secrets)? else {
                    if *required {
                        return Err(format!(
                            "secret {id:?} is required but was not given (--secret id={id},src=PATH or id={id},env=VAR)"
                        ));
                    }
                    continue;
                };
                if let Some(var) = env {
                    let text = String::from_utf8(value.clone()).map_err(|_| {
                        format!("secret {id:?} is not UTF-8 and cannot go into env {var}")
                    })?;
                    out.env.push(format!("{var}={text}"));
                }
                if let Some(target) = target {
                    let dir = match &secret_dir {
                        Some(d) => d.clone(),
                        None => {
                            let d = new_secret_dir(places.step_dir)
                                .map_err(|e| format!("creating a directory for secrets: {e}"))?;
                            out.guards.push(Guard::Dir(d.clone()));
                            secret_dir = Some(d.clone());
                            d
                        }
                    };
                    let file = dir.join(format!("{i}"));
                    write_secret(&file, &value, *mode, *uid, *gid)
                        .map_err(|e| format!("writing secret {id:?}: {e}"))?;
                    out.specs.push(MountSpec::Bind {
                        source: file,
                        target: target.clone(),
                        access: Access::ReadOnly,
                    });
                }
            }
        }
    }
    Ok(out)
}

fn read_secret(
    id: &str,
    secrets: &BTreeMap<String, SecretSource>,
) -> Result<Option<Vec<u8>>, String> {
    match secrets.get(id) {
        None => Ok(None),
        Some(SecretSource::Env(var)) => match std::env::var_os(var) {
            Some(v) => Ok(Some(v.as_bytes().to_vec())),
            None => Err(format!(
                "secret {id:?}: environment variable {var} is not set"
            )),
        },
        Some(SecretSource::File(path)) => {
            let f =
                File::open(path).map_err(|e| format!("secret {id:?}: {}: {e}", path.display()))?;
            let mut value = Vec::new();
            f.take(MAX_SECRET_BYTES + 1)
                .read_to_end(&mut value)
                .map_err(|e| format!("secret {id:?}: {}: {e}", path.display()))?;
            if value.len() as u64 > MAX_SECRET_BYTES {
                return Err(format!(
                    "secret {id:?}: {} is larger than {MAX_SECRET_BYTES} bytes",
                    path.display()
                ));
            }
            Ok(Some(value))
        }
    }
}

/// A 0700 directory for secret files: on /dev/shm when it is a tmpfs we can write (the
/// value never reaches a disk), else in the step's directory.
fn new_secret_dir(step_dir: &Path) -> io::Result<PathBuf> {
    let shm = Path::new("/dev/shm");
    // f_type is i64 here but i32/u32 on other architectures.
    #[allow(clippy::unnecessary_cast)]
    let on_tmpfs = rustix::fs::statfs(shm).is_ok_and(|s| s.f_type as i64 == TMPFS_MAGIC);
    if on_tmpfs && let Ok(d) = unique_dir(shm, "strata-secrets-", 0o700) {
        return Ok(d);
    }
    unique_dir(step_dir, "secrets-", 0o700)
}

fn write_secret(path: &Path, value: &[u8], mode: u32, uid: u32, gid: u32) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(value)?;
    if rustix::process::geteuid().is_root() {
        rustix::fs::fchown(
            f.as_fd(),
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
        )?;
    }
    f.set_permissions(std::fs::Permissions::from_mode(mode & 0o7777))
}

fn lock_file(path: &Path) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
}

/// The directory of a cache mount (created on first use) and the lock held while in use.
fn cache_dir(
    root: &Path,
    name: &str,
    sharing: CacheSharing,
    mode: u32,
    uid: u32,
    gid: u32,
    seed: Option<&(MountRoot, Vec<u8>)>,
) -> io::Result<(PathBuf, File)> {
    use rustix::fs::FlockOperation;
    std::fs::create_dir_all(root)?;
    let mut instance = 0usize;
    loop {
        let dir_name = if instance == 0 {
            name.to_string()
        } else {
            format!("{name}.private-{instance}")
        };
        let lock = lock_file(&root.join(format!("{dir_name}.lock")))?;
        let op = match sharing {
            CacheSharing::Shared => FlockOperation::LockShared,
            CacheSharing::Locked => FlockOperation::LockExclusive,
            CacheSharing::Private => FlockOperation::NonBlockingLockExclusive,
        };
        match rustix::fs::flock(lock.as_fd(), op) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) if sharing == CacheSharing::Private => {
                instance += 1;
                continue;
            }
            Err(e) => return Err(e.into()),
        }
        // The lock file's mtime records the last use (for `prune --keep-used-within`).
        let _ = lock.set_modified(std::time::SystemTime::now());
        let dir = root.join(&dir_name);
        if std::fs::symlink_metadata(&dir).is_err() {
            create_cache_dir(root, &dir, mode, uid, gid, seed)?;
        }
        return Ok((dir, lock));
    }
}

fn create_cache_dir(
    root: &Path,
    dir: &Path,
    mode: u32,
    uid: u32,
    gid: u32,
    seed: Option<&(MountRoot, Vec<u8>)>,
) -> io::Result<()> {
    let tmp = unique_dir(root, ".new-", 0o700)?;
    let result = (|| {
        if let Some((from, rel)) = seed {
            let md =
                std::fs::symlink_metadata(from.root.path().join(std::ffi::OsStr::from_bytes(rel)))?;
            if md.is_dir() {
                let entries = from.root.walk(
                    rel,
                    &WalkFilter {
                        ignore: None,
                        exclude: None,
                    },
                )?;
                stage_copy(&from.root, rel, &entries, &tmp, LinkMode::Copy)?;
            }
        }
        if rustix::process::geteuid().is_root() {
            std::os::unix::fs::chown(&tmp, Some(uid), Some(gid))?;
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode & 0o7777))?;
        match std::fs::rename(&tmp, dir) {
            Ok(()) => Ok(()),
            // Created meanwhile by another build: keep theirs.
            Err(_) if dir.is_dir() => {
                let _ = remove_tree(&tmp);
                Ok(())
            }
            Err(e) => Err(e),
        }
    })();
    if result.is_err() {
        let _ = remove_tree(&tmp);
    }
    result
}

/// Remove the cache-mount directories of a layout (those not used within `keep`, or all)
/// that no step holds. Returns how many were removed.
pub(crate) fn prune(layout_root: &Path, keep: Option<std::time::Duration>) -> usize {
    use rustix::fs::FlockOperation;
    let root = layout_root.join(".strata").join("cache-mounts");
    let Ok(entries) = std::fs::read_dir(&root) else {
        return 0;
    };
    let now = std::time::SystemTime::now();
    let mut removed = 0;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".lock") || !e.path().is_dir() {
            continue;
        }
        let lock_path = root.join(format!("{name}.lock"));
        let Ok(lock) = lock_file(&lock_path) else {
            continue;
        };
        if rustix::fs::flock(lock.as_fd(), FlockOperation::NonBlockingLockExclusive).is_err() {
            continue; // in use by a step
        }
        // The lock file's mtime is the last use.
        let fresh = keep.is_some_and(|k| {
            std::fs::metadata(&lock_path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .is_some_and(|age| age <= k)
        });
        if !fresh && remove_tree(&e.path()).is_ok() {
            let _ = std::fs::remove_file(&lock_path);
            removed += 1;
        }
    }
    removed
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum LinkMode {
    /// Hard links to the source files (for read-only mounts), copies where linking fails.
    HardLinkOrCopy,
    Copy,
}

/// Recreate `entries` (a walk of `root` from `rel`, parents first) under `dest`, an existing
/// directory (created when missing). Files are opened inside the root without following
/// their last component; symlinks are recreated as symlinks; other types are skipped.
pub(crate) fn stage_copy(
    root: &SourceRoot,
    rel: &[u8],
    entries: &[WalkEntry],
    dest: &Path,
    link: LinkMode,
) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if std::fs::symlink_metadata(dest).is_err() {
        make_dir(dest, 0o700)?;
    }
    let is_root = rustix::process::geteuid().is_root();
    let mut dirs: Vec<(PathBuf, u32)> = Vec::new();
    if let Ok(Some(top)) = root.lstat(rel)
        && top.kind == FileKind::Dir
    {
        dirs.push((dest.to_path_buf(), top.mode));
    }
    for e in entries {
        let path = dest.join(std::ffi::OsStr::from_bytes(&e.rel));
        let src_rel = walk_join(rel, &e.rel);
        match e.stat.kind {
            FileKind::Dir => {
                make_dir(&path, 0o700)?;
                dirs.push((path.clone(), e.stat.mode));
            }
            FileKind::File => {
                let src = root.open_file(&src_rel)?;
                let linked = link == LinkMode::HardLinkOrCopy
                    && rustix::fs::linkat(
                        rustix::fs::CWD,
                        format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&src)),
                        rustix::fs::CWD,
                        &path,
                        rustix::fs::AtFlags::SYMLINK_FOLLOW,
                    )
                    .is_ok();
                if !linked {
                    let mut out = std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .open(&path)?;
                    io::copy(&mut &src, &mut out)?;
                    out.set_permissions(std::fs::Permissions::from_mode(e.stat.mode))?;
                }
            }
            FileKind::Symlink => {
                let target = e.link.clone().unwrap_or_default();
                std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(&target), &path)?;
            }
            _ => continue,
        }
        if is_root && !(e.stat.kind == FileKind::File && link == LinkMode::HardLinkOrCopy) {
            let _ =
                std::os::unix::fs::lchown(&path, Some(e.stat.uid as u32), Some(e.stat.gid as u32));
        }
    }
    for (d, mode) in dirs.iter().rev() {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(*mode))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn b7_cache_ids_never_name_a_path_outside() {
        for id in ["../../../root", "..", ".", "/etc", "a/../../b", "", "x\0y"] {
            let n = cache_dir_name(id);
            assert!(
                !n.contains('/') && n != "." && n != ".." && !n.starts_with('.'),
                "{id:?} -> {n}"
            );
            assert!(!n.contains('\0'));
        }
        assert_ne!(
            cache_dir_name("a/b"),
            cache_dir_name("a_b"),
            "distinct ids, distinct dirs"
        );
        assert!(cache_dir_name("go-build").starts_with("go-build-"));
    }

    #[test]
    fn targets_are_absolute_and_clean() {
        assert_eq!(absolute_target("cache", "/src"), "/src/cache");
        assert_eq!(absolute_target("/a/../../b", "/"), "/b");
        assert_eq!(absolute_target("/root/.cache/", "/w"), "/root/.cache");
    }
}
