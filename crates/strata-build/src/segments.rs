//! Gzip segments shared between the layers of one build.
//!
//! A COPY built for Linux and for Windows gives two different tars (Windows layers put files
//! under `Files/` with extra PAX records) around the same file data. Layer writers compress
//! every regular file of [`GZIP_SEGMENT_MIN_BYTES`] or more as its own gzip segment
//! (`strata_archive` module docs), whose compressed bytes depend only on the file's data,
//! so each such file needs compressing once per build: the first layer writer to reach it
//! claims it, compresses it and captures the bytes into an unlinked spool file beside the
//! layout; the others read the file only to hash it (DiffId) and to check its CRC-32 and
//! length against the captured segment, then copy the captured bytes.
//!
//! A writer that finds a segment still being compressed by another writer first writes out
//! everything it has in flight (so none of its own claims is incomplete) and then waits, so
//! two writers can never wait for each other. A writer that fails or is dropped gives up
//! its incomplete claims, waking the waiters, which then compress the file themselves.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use strata_archive::{CompressWriter, HashingReader, HashingWriter, SegmentCapture};
use strata_spec::{Algorithm, Digest, DigestHasher};

pub(crate) use strata_archive::GZIP_SEGMENT_MIN_BYTES;

/// What identifies a file's data for sharing: where it is, its identity and its
/// modification time (the data is still checked by CRC-32 and length when reused).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct SegKey {
    pub path: PathBuf,
    pub ino: u64,
    pub size: u64,
    pub mtime: i64,
    pub mtime_nsec: i64,
}

struct Entry {
    owner: u64,
    /// Spool (offset, length) pieces, in order.
    pieces: Vec<(u64, usize)>,
    /// CRC-32 and length of the input, once complete.
    done: Option<(u32, u64)>,
    /// SHA-256 of the file's data, when its writer computed one (cold builds hash files
    /// while writing them).
    sha256: Option<Digest>,
}

#[derive(Default)]
struct State {
    next_id: u64,
    next_owner: u64,
    ids: HashMap<SegKey, u64>,
    entries: HashMap<u64, Entry>,
    spool_len: u64,
}

/// The segments of one build.
pub(crate) struct SegmentCache {
    state: Mutex<State>,
    changed: Condvar,
    spool: File,
    spool_dir: PathBuf,
}

/// A complete segment another writer compressed.
pub(crate) struct ReadySegment {
    pieces: Vec<(u64, usize)>,
    crc: u32,
    len: u64,
    sha256: Option<Digest>,
}

pub(crate) enum Claim {
    /// Compress it, capturing under this id.
    Mine(u64),
    Ready(ReadySegment),
    /// Being compressed (possibly by this writer, still in flight).
    Busy,
}

impl SegmentCache {
    /// A cache whose spool is an unlinked file in `dir`.
    pub(crate) fn new(dir: &Path) -> io::Result<Arc<SegmentCache>> {
        Ok(Arc::new(SegmentCache {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            spool: tempfile::tempfile_in(dir)?,
            spool_dir: dir.to_path_buf(),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn new_owner(&self) -> u64 {
        let mut st = self.lock();
        st.next_owner += 1;
        st.next_owner
    }

    pub(crate) fn claim(&self, key: &SegKey, owner: u64) -> Claim {
        let mut st = self.lock();
        if let Some(id) = st.ids.get(key).copied()
            && let Some(e) = st.entries.get(&id)
        {
            return match e.done {
                Some((crc, len)) => Claim::Ready(ReadySegment {
                    pieces: e.pieces.clone(),
                    crc,
                    len,
                    sha256: e.sha256.clone(),
                }),
                None => Claim::Busy,
            };
        }
        st.next_id += 1;
        let id = st.next_id;
        st.ids.insert(key.clone(), id);
        st.entries.insert(
            id,
            Entry {
                owner,
                pieces: Vec::new(),
                done: None,
                sha256: None,
            },
        );
        Claim::Mine(id)
    }

    /// Wait until `key`'s segment is complete or given up.
    pub(crate) fn wait(&self, key: &SegKey) {
        let mut st = self.lock();
        loop {
            let busy = st
                .ids
                .get(key)
                .and_then(|id| st.entries.get(id))
                .is_some_and(|e| e.done.is_none());
            if !busy {
                return;
            }
            st = self
                .changed
                .wait(st)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    fn append(&self, id: u64, bytes: &[u8]) -> io::Result<()> {
        let mut st = self.lock();
        let offset = st.spool_len;
        self.spool.write_all_at(bytes, offset).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "writing the shared gzip segment spool in {}: {e}",
                    self.spool_dir.display()
                ),
            )
        })?;
        st.spool_len += bytes.len() as u64;
        if let Some(e) = st.entries.get_mut(&id) {
            e.pieces.push((offset, bytes.len()));
        }
        Ok(())
    }

    fn set_sha256(&self, id: u64, digest: &Digest) {
        if let Some(e) = self.lock().entries.get_mut(&id) {
            e.sha256 = Some(digest.clone());
        }
    }

    fn complete(&self, id: u64, crc: u32, len: u64) {
        if let Some(e) = self.lock().entries.get_mut(&id) {
            e.done = Some((crc, len));
        }
        self.changed.notify_all();
    }

    /// Give up `owner`'s incomplete segments (its writer failed or ended).
    pub(crate) fn release(&self, owner: u64) {
        let mut st = self.lock();
        let gone: Vec<u64> = st
            .entries
            .iter()
            .filter(|(_, e)| e.owner == owner && e.done.is_none())
            .map(|(id, _)| *id)
            .collect();
        if gone.is_empty() {
            return;
        }
        for id in &gone {
            st.entries.remove(id);
        }
        st.ids.retain(|_, id| !gone.contains(id));
        drop(st);
        self.changed.notify_all();
    }
}

/// Captures one writer's segments into the cache.
pub(crate) struct Capture(pub Arc<SegmentCache>);

impl SegmentCapture for Capture {
    fn piece(&mut self, id: u64, deflate: &[u8]) -> io::Result<()> {
        self.0.append(id, deflate)
    }
    fn complete(&mut self, id: u64, crc: u32, len: u64) -> io::Result<()> {
        self.0.complete(id, crc, len);
        Ok(())
    }
}

/// Read buffer for file data.
const READ_BYTES: usize = 1 << 20;

/// Copy up to `size` bytes in large reads (`io::copy` reads 8 KiB at a time).
fn copy(reader: &mut dyn Read, size: u64, out: &mut dyn Write) -> io::Result<u64> {
    let mut buf = vec![0u8; READ_BYTES.min(size as usize).max(1)];
    let mut limited = reader.take(size);
    let mut n = 0u64;
    loop {
        let k = match limited.read(&mut buf) {
            Ok(0) => return Ok(n),
            Ok(k) => k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        out.write_all(&buf[..k])?;
        n += k as u64;
    }
}

/// Write `size` bytes from `reader` into `sink` (DiffId hasher → compressor) as one gzip
/// segment, taking it from `cache` when another writer compressed it. Returns the bytes
/// read and, with `sha256`, the SHA-256 of the data (the claiming writer's, when the data
/// matched the segment). Without gzip this is a plain copy.
pub(crate) fn write_file<W: Write>(
    sink: &mut HashingWriter<CompressWriter<W>>,
    shared: Option<(&SegmentCache, u64, SegKey)>,
    reader: &mut dyn Read,
    size: u64,
    sha256: bool,
) -> io::Result<(u64, Option<Digest>)> {
    if sink.get_mut().gzip().is_none() {
        return hashed(reader, sha256, |r| copy(r, size, sink));
    }
    let Some((cache, owner, key)) = shared else {
        return compress_here(sink, None, reader, size, sha256);
    };
    loop {
        match cache.claim(&key, owner) {
            Claim::Mine(id) => {
                let (n, digest) = compress_here(sink, Some((cache, id)), reader, size, sha256)?;
                return Ok((n, digest));
            }
            Claim::Ready(seg) => return take_ready(sink, cache, &seg, reader, size, sha256),
            Claim::Busy => {
                // None of ours may be pending while we wait (module docs).
                gz(sink)?.drain()?;
                cache.wait(&key);
            }
        }
    }
}

/// Run `f` on `reader`, hashing what it reads when `sha256`.
fn hashed(
    reader: &mut dyn Read,
    sha256: bool,
    f: impl FnOnce(&mut dyn Read) -> io::Result<u64>,
) -> io::Result<(u64, Option<Digest>)> {
    if !sha256 {
        return Ok((f(reader)?, None));
    }
    let mut h = HashingReader::new(reader);
    let n = f(&mut h)?;
    let (_, digest, _) = h.finish();
    Ok((n, Some(digest)))
}

fn gz<W: Write>(
    sink: &mut HashingWriter<CompressWriter<W>>,
) -> io::Result<&mut strata_archive::ParallelGzEncoder<W>> {
    sink.get_mut()
        .gzip()
        .ok_or_else(|| io::Error::other("gzip segments without gzip"))
}

fn compress_here<W: Write>(
    sink: &mut HashingWriter<CompressWriter<W>>,
    capture: Option<(&SegmentCache, u64)>,
    reader: &mut dyn Read,
    size: u64,
    sha256: bool,
) -> io::Result<(u64, Option<Digest>)> {
    gz(sink)?.begin_segment(capture.map(|(_, id)| id))?;
    let (n, digest) = hashed(reader, sha256, |r| copy(r, size, &mut *sink))?;
    // Recorded before the segment can complete, so a writer that finds it complete
    // finds the hash too.
    if let (Some((cache, id)), Some(d)) = (capture, &digest) {
        cache.set_sha256(id, d);
    }
    gz(sink)?.end_segment()?;
    Ok((n, digest))
}

fn take_ready<W: Write>(
    sink: &mut HashingWriter<CompressWriter<W>>,
    cache: &SegmentCache,
    seg: &ReadySegment,
    reader: &mut dyn Read,
    size: u64,
    sha256: bool,
) -> io::Result<(u64, Option<Digest>)> {
    gz(sink)?.begin_segment(None)?;
    // The data still goes through the DiffId hash, and must be what was compressed; its
    // own SHA-256 is the claiming writer's once the CRC-32 and length agree.
    let mut own = (sha256 && seg.sha256.is_none()).then(|| DigestHasher::new(Algorithm::Sha256));
    let mut crc = crc32fast::Hasher::new();
    let mut buf = vec![0u8; READ_BYTES.min(size as usize).max(1)];
    let mut limited = reader.take(size);
    let mut n = 0u64;
    loop {
        let k = match limited.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        sink.hash_only(&buf[..k]);
        crc.update(&buf[..k]);
        if let Some(h) = own.as_mut() {
            h.update(&buf[..k]);
        }
        n += k as u64;
    }
    if n != seg.len || crc.finalize() != seg.crc {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the file changed while the build was reading it",
        ));
    }
    for (i, (offset, len)) in seg.pieces.iter().enumerate() {
        let mut bytes = vec![0u8; *len];
        cache.spool.read_exact_at(&mut bytes, *offset)?;
        let (c, l) = if i == 0 { (seg.crc, seg.len) } else { (0, 0) };
        gz(sink)?.push_precompressed(bytes, c, l)?;
    }
    if seg.pieces.is_empty() {
        gz(sink)?.push_precompressed(Vec::new(), seg.crc, seg.len)?;
    }
    gz(sink)?.end_segment()?;
    let digest = match own {
        Some(h) => Some(h.finish()),
        None if sha256 => seg.sha256.clone(),
        None => None,
    };
    Ok((n, digest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_archive::Compression;

    type Sink = HashingWriter<CompressWriter<Vec<u8>>>;

    fn sink(cache: &Arc<SegmentCache>) -> Sink {
        let mut c =
            CompressWriter::with_workers(Vec::new(), Compression::Gzip { level: 1 }, 2).unwrap();
        c.gzip()
            .unwrap()
            .set_capture(Box::new(Capture(Arc::clone(cache))));
        HashingWriter::new(c)
    }

    fn key(name: &str, size: u64) -> SegKey {
        SegKey {
            path: name.into(),
            ino: 1,
            size,
            mtime: 2,
            mtime_nsec: 3,
        }
    }

    fn finish(s: Sink) -> (Vec<u8>, String) {
        let (c, diff_id, _) = s.finish();
        (c.finish().unwrap(), diff_id.to_string())
    }

    fn sha256_hex(data: &[u8]) -> String {
        let mut h = DigestHasher::new(Algorithm::Sha256);
        h.update(data);
        h.finish().encoded().to_string()
    }

    fn gunzip(gz: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(gz)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn the_second_writer_takes_the_segment_and_checks_the_data() {
        let dir = tempfile::tempdir().unwrap();
        let cache = SegmentCache::new(dir.path()).unwrap();
        let data: Vec<u8> = (0..2_500_000u32).map(|i| (i % 97) as u8).collect();
        let k = key("f", data.len() as u64);

        let (o1, o2) = (cache.new_owner(), cache.new_owner());
        let mut a = sink(&cache);
        a.write_all(b"header of a").unwrap();
        let (n, sha_a) = write_file(
            &mut a,
            Some((&cache, o1, k.clone())),
            &mut &data[..],
            data.len() as u64,
            true,
        )
        .unwrap();
        assert_eq!(n, data.len() as u64);
        let sha_a = sha_a.unwrap();
        assert_eq!(sha_a.encoded(), sha256_hex(&data));
        a.write_all(b"trailer").unwrap();
        let (gz_a, _) = finish(a);
        assert_eq!(
            gunzip(&gz_a),
            [&b"header of a"[..], &data, b"trailer"].concat()
        );
        assert!(matches!(cache.claim(&k, o2), Claim::Ready(_)));

        // B takes it: same bytes as compressing it in B, same DiffId.
        let mut b = sink(&cache);
        b.write_all(b"other header, longer").unwrap();
        let (_, sha_b) = write_file(
            &mut b,
            Some((&cache, o2, k.clone())),
            &mut &data[..],
            data.len() as u64,
            true,
        )
        .unwrap();
        assert_eq!(sha_b, Some(sha_a));
        let (gz_b, diff_b) = finish(b);
        let alone = SegmentCache::new(dir.path()).unwrap();
        let mut c = sink(&alone);
        c.write_all(b"other header, longer").unwrap();
        write_file(&mut c, None, &mut &data[..], data.len() as u64, false).unwrap();
        let (gz_c, diff_c) = finish(c);
        assert_eq!(gz_b, gz_c);
        assert_eq!(diff_b, diff_c);

        // Different data of the same length under the same key: refused, not mixed in.
        let mut changed = data.clone();
        changed[1_000_000] ^= 1;
        let mut d = sink(&cache);
        let err = write_file(
            &mut d,
            Some((&cache, o2, k)),
            &mut &changed[..],
            data.len() as u64,
            true,
        )
        .unwrap_err();
        assert!(err.to_string().contains("changed"), "{err}");
    }

    #[test]
    fn a_dropped_writer_releases_its_claims_and_waiters_compress_themselves() {
        let dir = tempfile::tempdir().unwrap();
        let cache = SegmentCache::new(dir.path()).unwrap();
        let k = key("g", 10);
        let (o1, o2) = (cache.new_owner(), cache.new_owner());
        assert!(matches!(cache.claim(&k, o1), Claim::Mine(_)));
        assert!(matches!(cache.claim(&k, o2), Claim::Busy));
        let waiter = {
            let cache = Arc::clone(&cache);
            let k = k.clone();
            std::thread::spawn(move || cache.wait(&k))
        };
        cache.release(o1);
        waiter.join().unwrap();
        assert!(matches!(cache.claim(&k, o2), Claim::Mine(_)));
    }
}
