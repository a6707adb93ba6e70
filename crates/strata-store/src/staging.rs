//! Staging directories of archive writers, and removing the ones their writer left behind.
//!
//! An `oci-archive:` / `docker-archive:` sink stages its blobs in a hidden directory beside
//! the target (`.NAME.strata-PID-RANDOM`, same filesystem so the finished tar is renamed into
//! place). The sink removes it when it is dropped or abandoned; a writer killed with SIGKILL
//! cannot, so:
//! - the directory holds `staging.lock`, `flock`ed exclusively by its writer for as long as it
//!   lives: a directory whose lock can be taken belongs to a dead writer (a directory without
//!   the lock file, caught between `mkdir` and locking, counts as dead only after
//!   [`STALE_UNLOCKED_AGE`]);
//! - the next sink writing the same target removes dead staging directories beside it;
//! - a sink opened with a store notes its directory in `STORE/.strata/staging/`, and
//!   [`crate::OciLayout::gc`] of that store removes the dead ones it finds there, wherever
//!   they are.
//!
//! Only directories whose name has the staging form are ever removed, never through a
//! symlink, and never while a live process holds their lock.

use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rustix::fs::{FlockOperation, OFlags, flock};

use crate::StoreError;

/// Marks a staging directory's name: `.NAME` + this + `PID-RANDOM`.
const STAGING_INFIX: &str = ".strata-";
/// Locked by the live writer of a staging directory.
const STAGING_LOCK: &str = "staging.lock";
/// A staging directory without a lock file is only treated as dead after this long: its
/// writer may be between creating the directory and locking it.
pub const STALE_UNLOCKED_AGE: Duration = Duration::from_secs(60 * 60);
/// Directory of staging notes inside a store's `.strata`.
pub(crate) const RECORDS_DIR: &str = "staging";
/// A note holds one path; anything longer is not ours.
const MAX_RECORD_BYTES: u64 = 4096;

/// A staging directory, locked while this lives and removed on drop (with its note).
pub(crate) struct Staging {
    pub(crate) dir: PathBuf,
    record: Option<PathBuf>,
    /// Always `Some` outside tests (which take it to play a killed writer).
    lock: Option<File>,
}

impl Drop for Staging {
    fn drop(&mut self) {
        // Removed while still locked, so no sweeper races with us.
        let _ = fs::remove_dir_all(&self.dir);
        if let Some(r) = &self.record {
            let _ = fs::remove_file(r);
        }
        self.lock = None;
    }
}

impl Staging {
    /// Remove the directory now (an abandoned copy; drop does it again harmlessly).
    pub(crate) fn remove_now(&self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn staging_prefix(target: &Path) -> String {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    format!(".{name}{STAGING_INFIX}")
}

/// Does `name` have the form `.NAME.strata-PID-RANDOM`?
fn is_staging_name(name: &str) -> bool {
    let Some(at) = name.rfind(STAGING_INFIX) else {
        return false;
    };
    if !name.starts_with('.') || at == 0 {
        return false;
    }
    let Some((pid, random)) = name[at + STAGING_INFIX.len()..].split_once('-') else {
        return false;
    };
    !pid.is_empty()
        && pid.bytes().all(|b| b.is_ascii_digit())
        && random.len() == 8
        && random.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A new staging directory beside `target`; first removes the dead ones a killed writer of
/// the same target left there. With `records`, the directory is noted there for gc.
pub(crate) fn staging_for(target: &Path, records: Option<&Path>) -> Result<Staging, StoreError> {
    let parent = target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(|e| StoreError::io(parent, "cannot create directory", e))?;
    let removed = remove_dead_beside(parent, &staging_prefix(target));
    if removed > 0 {
        tracing::info!(
            removed,
            "removed staging directories of killed writers beside {}",
            target.display()
        );
    }
    let dir = parent.join(format!(
        "{}{}-{:08x}",
        staging_prefix(target),
        std::process::id(),
        rand::random::<u32>()
    ));
    fs::create_dir(&dir).map_err(|e| StoreError::io(&dir, "cannot create staging directory", e))?;
    let lock_path = dir.join(STAGING_LOCK);
    let lock = OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(OFlags::NOFOLLOW.bits() as i32)
        .open(&lock_path)
        .and_then(|f| {
            flock(&f, FlockOperation::NonBlockingLockExclusive)?;
            Ok(f)
        });
    let lock = match lock {
        Ok(l) => l,
        Err(e) => {
            let _ = fs::remove_dir_all(&dir);
            return Err(StoreError::io(
                &lock_path,
                "cannot lock staging directory",
                e,
            ));
        }
    };
    let record = records.and_then(|r| note(r, &dir));
    Ok(Staging {
        dir,
        record,
        lock: Some(lock),
    })
}

/// Note `dir` (absolute) in `records`; best effort: without a note only the next writer of
/// the same target finds a leftover.
fn note(records: &Path, dir: &Path) -> Option<PathBuf> {
    let absolute = fs::canonicalize(dir).ok()?;
    fs::create_dir_all(records).ok()?;
    let name = dir.file_name()?.to_string_lossy().to_string();
    let path = records.join(name.trim_start_matches('.'));
    crate::layout::write_atomic(records, &path, absolute.as_os_str().as_bytes()).ok()?;
    Some(path)
}

/// Remove the dead staging directories in `parent` whose name starts with `prefix`.
fn remove_dead_beside(parent: &Path, prefix: &str) -> usize {
    let Ok(entries) = fs::read_dir(parent) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            name.starts_with(prefix) && is_staging_name(&name)
        })
        .filter(|e| remove_if_dead(&e.path()))
        .count()
}

/// Remove `dir` when it is a staging directory (a real directory, not a symlink) whose
/// writer is gone; true when it was removed.
fn remove_if_dead(dir: &Path) -> bool {
    let is_dir = fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_dir());
    let named = dir
        .file_name()
        .is_some_and(|n| is_staging_name(&n.to_string_lossy()));
    if !is_dir || !named {
        return false;
    }
    let held = match OpenOptions::new()
        .read(true)
        .custom_flags((OFlags::NOFOLLOW | OFlags::NONBLOCK).bits() as i32)
        .open(dir.join(STAGING_LOCK))
    {
        Ok(f) => match flock(&f, FlockOperation::NonBlockingLockExclusive) {
            // Nobody holds it: its writer is dead. Keep holding it while removing.
            Ok(()) => Some(f),
            Err(_) => return false,
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let old = fs::symlink_metadata(dir)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .is_some_and(|age| age > STALE_UNLOCKED_AGE);
            if !old {
                return false;
            }
            None
        }
        Err(_) => return false,
    };
    let removed = fs::remove_dir_all(dir).is_ok();
    drop(held);
    removed
}

/// Go through the staging notes in `records`: remove each dead writer's directory and the
/// notes of directories that are gone. Returns how many directories were removed.
pub(crate) fn sweep_records(records: &Path) -> Result<usize, StoreError> {
    let entries = match fs::read_dir(records) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(StoreError::io(records, "cannot list", e)),
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let note = entry.path();
        let Some(dir) = read_note(&note) else {
            continue;
        };
        if fs::symlink_metadata(&dir).is_err() {
            let _ = fs::remove_file(&note);
            continue;
        }
        if remove_if_dead(&dir) {
            removed += 1;
            let _ = fs::remove_file(&note);
        }
    }
    Ok(removed)
}

/// The absolute path a note holds (refusing symlinks, oversized or relative content).
fn read_note(note: &Path) -> Option<PathBuf> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags((OFlags::NOFOLLOW | OFlags::NONBLOCK).bits() as i32)
        .open(note)
        .ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut bytes = Vec::new();
    file.take(MAX_RECORD_BYTES + 1)
        .read_to_end(&mut bytes)
        .ok()?;
    if bytes.len() as u64 > MAX_RECORD_BYTES {
        return None;
    }
    let path = PathBuf::from(std::ffi::OsStr::from_bytes(&bytes));
    path.is_absolute().then_some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_names() {
        assert!(is_staging_name(".app.tar.strata-123-0a1b2c3d"));
        assert!(is_staging_name("..strata-1-ffffffff"));
        assert!(
            !is_staging_name("app.tar.strata-123-0a1b2c3d"),
            "not hidden"
        );
        assert!(!is_staging_name(".app.tar.strata-12x-0a1b2c3d"));
        assert!(!is_staging_name(".app.tar.strata-123-0a1b2c3"));
        assert!(!is_staging_name(".app.tar.strata-123-0a1b2c3dz"));
        assert!(!is_staging_name(".app.tar"));
        assert!(
            !is_staging_name(".strata-1-ffffffff"),
            "no target name part"
        );
    }

    /// A live writer's directory is kept, a dead one's (lock free) removed, a fresh one
    /// without a lock kept; a symlink with a staging name is never followed.
    #[test]
    fn only_dead_staging_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("app.tar");
        let live = staging_for(&target, None).unwrap();
        std::fs::write(live.dir.join("blob"), b"x").unwrap();
        let dead = dir.path().join(".app.tar.strata-999999-00000001");
        std::fs::create_dir(&dead).unwrap();
        std::fs::write(dead.join(STAGING_LOCK), b"").unwrap();
        std::fs::write(dead.join("blob"), b"x").unwrap();
        let fresh = dir.path().join(".app.tar.strata-999999-00000002");
        std::fs::create_dir(&fresh).unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join(STAGING_LOCK), b"").unwrap();
        let link = dir.path().join(".app.tar.strata-999999-00000003");
        std::os::unix::fs::symlink(outside.path(), &link).unwrap();

        assert_eq!(remove_dead_beside(dir.path(), &staging_prefix(&target)), 1);
        assert!(live.dir.join("blob").exists(), "live writer's staging kept");
        assert!(!dead.exists(), "dead writer's staging removed");
        assert!(fresh.exists(), "young unlocked staging kept");
        assert!(
            outside.path().join(STAGING_LOCK).exists(),
            "symlink not followed"
        );
        let live_dir = live.dir.clone();
        drop(live);
        assert!(!live_dir.exists(), "drop removes the staging");
    }

    #[test]
    fn notes_lead_gc_to_dead_staging_elsewhere() {
        let dir = tempfile::tempdir().unwrap();
        let records = dir.path().join("records");
        let target = dir.path().join("out/app.tar");
        let live = staging_for(&target, Some(&records)).unwrap();
        assert_eq!(std::fs::read_dir(&records).unwrap().count(), 1);
        assert_eq!(sweep_records(&records).unwrap(), 0, "live staging kept");
        assert!(live.dir.exists());
        // What SIGKILL leaves: the directory and its note, the lock released.
        let mut live = live;
        let leftover = live.dir.clone();
        let lock = live.lock.take();
        std::mem::forget(live);
        assert_eq!(sweep_records(&records).unwrap(), 0, "lock still held");
        drop(lock);
        assert_eq!(sweep_records(&records).unwrap(), 1);
        assert!(!leftover.exists());
        assert_eq!(std::fs::read_dir(&records).unwrap().count(), 0);
    }
}
