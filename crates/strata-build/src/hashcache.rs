//! Content hashes of context files, reused across builds while the file's `lstat` identity
//! (device, inode, size, mtime and ctime to the nanosecond, mode) is unchanged.
//!
//! A rebuild where nothing changed then reads no file contents at all: it stats the context
//! and looks hashes up. Like git's index, a hash is only trusted when the file's mtime and
//! ctime were comfortably older than the moment it was hashed ([`RACY_WINDOW_SECS`]): a write
//! in the same timestamp tick as the hash could otherwise keep the stat identical while the
//! bytes changed. Racily clean entries are kept as "seen" ([`HashCache::seen`]): the file is
//! hashed again, but the build knows a cached step may match.

use std::collections::HashMap;
use std::fs;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use strata_spec::Digest;

use crate::source::FileStat;

const MAGIC: &[u8] = b"strata-hash-cache 2\n";
/// Files modified this recently (relative to when they were hashed) are not persisted.
pub(crate) const RACY_WINDOW_SECS: i64 = 2;
/// Largest hash cache file read (a context of ~1M files); bigger is treated as corrupt.
const MAX_CACHE_FILE_BYTES: u64 = 256 * 1024 * 1024;
/// Longest path recorded.
const MAX_PATH_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
    ctime: i64,
    ctime_nsec: i64,
    mode: u32,
}

impl Identity {
    fn of(st: &FileStat) -> Identity {
        Identity {
            dev: st.dev,
            ino: st.ino,
            size: st.size,
            mtime: st.mtime,
            mtime_nsec: st.mtime_nsec,
            ctime: st.ctime,
            ctime_nsec: st.ctime_nsec,
            mode: st.mode,
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    identity: Identity,
    /// Hex SHA-256 of the content.
    hex: [u8; 64],
    /// Hashed long enough after the file's last change (not racily clean).
    trusted: bool,
    /// Hashed by this process: usable for the rest of this build even when racily clean
    /// (every read checks the file's stat again).
    fresh: bool,
}

/// The hash cache of one context directory.
#[derive(Debug)]
pub(crate) struct HashCache {
    file: Option<PathBuf>,
    entries: HashMap<Vec<u8>, Entry>,
    dirty: bool,
}

impl HashCache {
    /// Load the cache kept in `file` (missing or unreadable files give an empty cache: it is
    /// only an accelerator, every entry is re-validated against the file's stat).
    pub(crate) fn load(file: PathBuf) -> HashCache {
        let entries = read_file(&file).unwrap_or_default();
        HashCache {
            file: Some(file),
            entries,
            dirty: false,
        }
    }

    /// The cached digest of `rel`, if its stat identity is unchanged.
    pub(crate) fn get(&self, rel: &[u8], st: &FileStat) -> Option<Digest> {
        let e = self.entries.get(rel)?;
        if e.identity != Identity::of(st) || !(e.trusted || e.fresh) {
            return None;
        }
        let s = std::str::from_utf8(&e.hex).ok()?;
        format!("sha256:{s}").parse().ok()
    }

    /// Was `rel` hashed before with exactly this stat identity (trusted or racily clean)?
    pub(crate) fn seen(&self, rel: &[u8], st: &FileStat) -> bool {
        self.entries
            .get(rel)
            .is_some_and(|e| e.identity == Identity::of(st))
    }

    /// Record the digest of `rel` computed at `hashed_at` (Unix seconds).
    pub(crate) fn put(&mut self, rel: &[u8], st: &FileStat, digest: &Digest, hashed_at: i64) {
        let mut hex = [0u8; 64];
        let enc = digest.encoded().as_bytes();
        if enc.len() != 64 || rel.len() > MAX_PATH_BYTES {
            return;
        }
        hex.copy_from_slice(enc);
        let trusted =
            st.mtime < hashed_at - RACY_WINDOW_SECS && st.ctime < hashed_at - RACY_WINDOW_SECS;
        self.entries.insert(
            rel.to_vec(),
            Entry {
                identity: Identity::of(st),
                hex,
                trusted,
                fresh: true,
            },
        );
        self.dirty = true;
    }

    /// Write the cache back (atomically) if it changed.
    pub(crate) fn save(&mut self) -> io::Result<()> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        if !self.dirty {
            return Ok(());
        }
        let dir = file.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir)?;
        let tmp = tempfile::NamedTempFile::new_in(dir)?;
        {
            let mut w = BufWriter::with_capacity(1 << 20, tmp.as_file());
            w.write_all(MAGIC)?;
            let mut keys: Vec<&Vec<u8>> = self.entries.keys().collect();
            keys.sort();
            w.write_all(&(keys.len() as u64).to_le_bytes())?;
            for k in keys {
                let e = &self.entries[k];
                w.write_all(&(k.len() as u32).to_le_bytes())?;
                w.write_all(k)?;
                let id = &e.identity;
                for v in [id.dev, id.ino, id.size] {
                    w.write_all(&v.to_le_bytes())?;
                }
                for v in [id.mtime, id.mtime_nsec, id.ctime, id.ctime_nsec] {
                    w.write_all(&v.to_le_bytes())?;
                }
                w.write_all(&id.mode.to_le_bytes())?;
                w.write_all(&[e.trusted as u8])?;
                w.write_all(&e.hex)?;
            }
            w.flush()?;
        }
        tmp.persist(file).map_err(|e| e.error)?;
        self.dirty = false;
        Ok(())
    }
}

fn read_file(path: &Path) -> io::Result<HashMap<Vec<u8>, Entry>> {
    let f = fs::File::open(path)?;
    if f.metadata()?.len() > MAX_CACHE_FILE_BYTES {
        return Err(io::Error::other("hash cache too large"));
    }
    let mut r = BufReader::with_capacity(1 << 20, f);
    let mut magic = vec![0u8; MAGIC.len()];
    r.read_exact(&mut magic)?;
    if magic != MAGIC {
        return Err(io::Error::other("not a hash cache"));
    }
    let mut u64b = [0u8; 8];
    let mut u32b = [0u8; 4];
    r.read_exact(&mut u64b)?;
    let count = u64::from_le_bytes(u64b);
    let mut map = HashMap::with_capacity(count.min(1 << 20) as usize);
    for _ in 0..count {
        r.read_exact(&mut u32b)?;
        let len = u32::from_le_bytes(u32b) as usize;
        if len > MAX_PATH_BYTES {
            return Err(io::Error::other("corrupt hash cache"));
        }
        let mut key = vec![0u8; len];
        r.read_exact(&mut key)?;
        let mut u = [0u64; 3];
        for v in &mut u {
            r.read_exact(&mut u64b)?;
            *v = u64::from_le_bytes(u64b);
        }
        let mut s = [0i64; 4];
        for v in &mut s {
            r.read_exact(&mut u64b)?;
            *v = i64::from_le_bytes(u64b);
        }
        r.read_exact(&mut u32b)?;
        let mode = u32::from_le_bytes(u32b);
        let mut flag = [0u8; 1];
        r.read_exact(&mut flag)?;
        let mut hex = [0u8; 64];
        r.read_exact(&mut hex)?;
        if !hex.iter().all(|b| b.is_ascii_hexdigit()) {
            return Err(io::Error::other("corrupt hash cache"));
        }
        map.insert(
            key,
            Entry {
                identity: Identity {
                    dev: u[0],
                    ino: u[1],
                    size: u[2],
                    mtime: s[0],
                    mtime_nsec: s[1],
                    ctime: s[2],
                    ctime_nsec: s[3],
                    mode,
                },
                hex,
                trusted: flag[0] == 1,
                fresh: false,
            },
        );
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::FileKind;

    fn stat(mtime: i64) -> FileStat {
        FileStat {
            kind: FileKind::File,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: 3,
            mtime,
            mtime_nsec: 5,
            ctime: mtime,
            ctime_nsec: 5,
            dev: 1,
            ino: 2,
            nlink: 1,
            rdev: 0,
        }
    }

    #[test]
    fn round_trips_and_invalidates_on_stat_change() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c/hashes.bin");
        let d = Digest::sha256_of(b"abc");
        let mut c = HashCache::load(file.clone());
        c.put(b"old", &stat(1000), &d, 5000);
        c.put(b"racy", &stat(4999), &d, 5000);
        assert_eq!(c.get(b"racy", &stat(4999)), Some(d.clone()));
        c.save().unwrap();
        let c = HashCache::load(file.clone());
        assert_eq!(c.get(b"old", &stat(1000)), Some(d.clone()));
        // Racily clean entries are not trusted, but remembered as seen.
        assert_eq!(c.get(b"racy", &stat(4999)), None);
        assert!(c.seen(b"racy", &stat(4999)));
        assert!(!c.seen(b"racy", &stat(5001)));
        let mut changed = stat(1000);
        changed.mtime_nsec = 6;
        assert_eq!(c.get(b"old", &changed), None);
        // A corrupt file is an empty cache, not an error.
        std::fs::write(&file, b"garbage").unwrap();
        assert_eq!(HashCache::load(file).get(b"old", &stat(1000)), None);
    }
}
