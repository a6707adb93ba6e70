//! Compression encoders (parallel gzip, zstd) and decoders (gzip multi-member, zstd with a
//! window cap, xz with a memory cap, bzip2), format detection, and a decoder thread.
//!
//! # Reproducibility
//!
//! Layer digests are content addresses: the same tar must give the same blob on every
//! machine, whatever its core count. Both encoders guarantee that for a pinned level:
//! - gzip: the input is cut at fixed [`GZIP_BLOCK_BYTES`] boundaries; each block is raw
//!   deflate primed with the previous block's last 32 KiB and ended with a sync flush
//!   (pigz's scheme), so a block's bytes depend only on its input, its dictionary and the
//!   level — never on which worker compressed it or when. The result is one gzip member.
//!   A caller may also mark *segments* ([`ParallelGzEncoder::begin_segment`]): the block
//!   before is cut there, the segment's first block has no dictionary, its blocks are cut
//!   every [`GZIP_BLOCK_BYTES`] from its start, and the block after it starts without a
//!   dictionary again. A segment's compressed bytes then depend only on its own input, so
//!   the same file data inside two different tar streams (a Linux and a Windows layer of
//!   one COPY) compresses to the same bytes, which a [`SegmentCapture`] can keep and the
//!   other stream can take as they are ([`ParallelGzEncoder::push_precompressed`]).
//! - zstd: always run in zstd's multi-threaded mode (`nbWorkers ≥ 1`, also on one core),
//!   whose output does not depend on the number of workers; single-threaded mode
//!   (`nbWorkers = 0`) produces different bytes, so it is never used.
//!
//! # Trailing data (RELIABILITY A21)
//!
//! Decoders are strict like Go's `compress/gzip` (containerd, ggcr): bytes after the last
//! gzip member or zstd frame that are not another member/frame are an error, not ignored.

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crc32fast::Hasher as Crc;
use flate2::{FlushCompress, Status};
use strata_spec::{LayerCompression, MediaType};

/// Input bytes per parallel gzip block. 1 MiB keeps the sync-flush overhead (5 bytes per
/// block) and the cost of a fresh dictionary negligible while giving every worker enough
/// work per hand-off; it is fixed (not derived from the core count) so that output bytes
/// are the same on every machine.
pub const GZIP_BLOCK_BYTES: usize = 1 << 20;
/// Deflate's window: each block is primed with this much of the previous block.
const DEFLATE_DICT_BYTES: usize = 32 * 1024;
/// Most blocks in flight at once. Input in flight is limited to `2 × workers` full blocks'
/// worth of bytes; segments cut many short blocks, and counting blocks instead of bytes
/// would leave the workers idle between them.
const MAX_BLOCKS_IN_FLIGHT: u64 = 64;

/// Regular files at least this large are written as gzip segments by layer writers (see
/// the module docs). Measured on `ctx-copy500` (28,600 files, 500 MiB, 2 cores): 3 platforms
/// (2 Linux + 1 Windows) cost 1.44x one platform at 16 KiB (85 % of the bytes shared), 1.55x
/// at 64 KiB, 1.8x without segments; a single-platform build is ~3 % slower at 16 KiB.
pub const GZIP_SEGMENT_MIN_BYTES: u64 = 16 * 1024;

/// Receives the compressed bytes of captured segments, in output order, from the thread
/// that writes the gzip stream.
pub trait SegmentCapture: Send {
    /// The next raw deflate bytes of segment `id` (a segment's pieces arrive in order).
    fn piece(&mut self, id: u64, deflate: &[u8]) -> io::Result<()>;
    /// Segment `id` is complete: `crc` is the CRC-32 of its whole input, `len` its length.
    fn complete(&mut self, id: u64, crc: u32, len: u64) -> io::Result<()>;
}

/// Which captured segment a block belongs to, and whether it is its last block.
#[derive(Clone, Copy)]
struct SegTag {
    id: u64,
    end: bool,
}
/// Largest zstd window a decoder accepts (2^27 = 128 MiB, zstd's own default limit for
/// streaming decoders). A frame declaring more is rejected instead of allocating
/// (RELIABILITY A22).
pub const ZSTD_MAX_WINDOW_LOG: u32 = 27;
/// Memory the xz decoder may use (xz -9 needs 65 MiB). A stream declaring a larger
/// dictionary is rejected instead of allocating it.
pub const XZ_MAX_MEMORY: u64 = 256 << 20;
/// Chunk size handed from a decoder thread to its reader.
const PIPE_CHUNK_BYTES: usize = 256 * 1024;
/// Chunks buffered between a decoder thread and its reader (memory = this × chunk size).
const PIPE_CHUNKS: usize = 8;
/// How often a cancellable [`PipeReader`] waiting for its decoder thread looks at the
/// cancel flag: the consumer stops this soon after a Ctrl-C even when the source is stalled
/// in a read (a network stream) that only returns much later.
const PIPE_CANCEL_POLL: Duration = Duration::from_millis(50);
/// Buffer in front of decoders (fewer, larger reads from the source).
const DECODE_BUFFER_BYTES: usize = 256 * 1024;

/// How to compress a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    /// gzip (levels 0–9), compressed in parallel as one pigz-style member.
    Gzip {
        level: u32,
    },
    /// zstd (levels 1–22, negative for fast modes), multi-threaded.
    Zstd {
        level: i32,
    },
}

impl Default for Compression {
    /// gzip level 1: the fastest level, 3–4× faster than level 6 for ~10 % larger layers;
    /// builds are dominated by compression time.
    fn default() -> Self {
        Compression::Gzip { level: 1 }
    }
}

impl Compression {
    pub fn layer_compression(self) -> LayerCompression {
        match self {
            Compression::None => LayerCompression::None,
            Compression::Gzip { .. } => LayerCompression::Gzip,
            Compression::Zstd { .. } => LayerCompression::Zstd,
        }
    }
    /// The OCI layer media type of a layer compressed this way.
    pub fn media_type(self) -> MediaType {
        MediaType::new(match self {
            Compression::None => MediaType::OCI_LAYER,
            Compression::Gzip { .. } => MediaType::OCI_LAYER_GZIP,
            Compression::Zstd { .. } => MediaType::OCI_LAYER_ZSTD,
        })
    }
}

/// Number of compression worker threads: the available parallelism.
pub fn default_workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// One block of input for a gzip worker.
struct Job {
    seq: u64,
    data: Vec<u8>,
    /// The previous block's last 32 KiB (empty for the first block).
    dictionary: Vec<u8>,
    last: bool,
}

/// A compressed block: raw deflate bytes and the CRC-32 of its input.
type Done = (u64, io::Result<(Vec<u8>, Crc)>);

/// A block ready to be written in order: deflate bytes, CRC of its input, capture tag.
type Ready = (Vec<u8>, Crc, Option<SegTag>);

/// Compress one block as raw deflate, primed with `dictionary`, ending with a sync flush
/// (or the final block marker when `last`). Deterministic for a given level: a fresh
/// compressor every time, because zlib-rs's `reset()` keeps some match-finder state — a
/// reused compressor gave different bytes depending on the block it compressed before
/// (measured: 72 of 521 blocks of a 520 MiB tar), so output depended on which worker
/// took which block.
fn deflate_block(
    level: u32,
    data: &[u8],
    dictionary: &[u8],
    last: bool,
) -> io::Result<(Vec<u8>, Crc)> {
    let mut compressor = flate2::Compress::new(flate2::Compression::new(level), false);
    if !dictionary.is_empty() {
        compressor
            .set_dictionary(dictionary)
            .map_err(io::Error::other)?;
    }
    let mut crc = Crc::new();
    crc.update(data);
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    // deflateBound-like estimate; grown below if a pathological block needs more.
    let mut out = Vec::with_capacity(data.len() + data.len() / 64 + 256);
    loop {
        let consumed = compressor.total_in() as usize;
        if out.capacity() - out.len() < 64 {
            out.reserve(out.capacity() / 2 + 1024);
        }
        let status = compressor
            .compress_vec(&data[consumed..], &mut out, flush)
            .map_err(io::Error::other)?;
        let consumed = compressor.total_in() as usize;
        let room_left = out.capacity() > out.len();
        match status {
            Status::StreamEnd => break,
            // With input consumed and room left over, the flush is complete.
            Status::Ok | Status::BufError if consumed == data.len() && room_left && !last => {
                break;
            }
            Status::Ok | Status::BufError => continue,
        }
    }
    Ok((out, crc))
}

/// The 10-byte gzip header strata writes: no name, mtime 0, OS "unknown" — the same bytes
/// on every machine.
fn gzip_header(level: u32) -> [u8; 10] {
    // XFL: 2 = maximum compression, 4 = fastest (RFC 1952).
    let xfl = match level {
        9 => 2,
        1 => 4,
        _ => 0,
    };
    [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 255]
}

/// pigz-style parallel gzip writer producing a single gzip member.
///
/// Input is cut into [`GZIP_BLOCK_BYTES`] blocks compressed by worker threads and written
/// in order; at most `2 × workers` full blocks' worth of bytes (and at most 64 blocks, as
/// segments cut short ones) are in flight, so memory stays flat. With one worker everything
/// runs on the caller's thread. Output bytes depend only on the input and the level (see
/// the module docs).
pub struct ParallelGzEncoder<W: Write> {
    inner: Option<W>,
    level: u32,
    buf: Vec<u8>,
    dictionary: Vec<u8>,
    crc: Crc,
    pool: Option<GzPool>,

    next_seq: u64,
    next_write: u64,
    /// Compressed (or pushed) blocks waiting for their turn.
    pending: BTreeMap<u64, Ready>,
    /// Capture tags of blocks handed to workers, by sequence number.
    tags: BTreeMap<u64, SegTag>,
    /// Input bytes of the blocks not yet written, by sequence number, and their sum.
    sizes: BTreeMap<u64, usize>,
    bytes_in_flight: usize,
    /// The segment being written: its capture id, if captured.
    segment: Option<Option<u64>>,
    capture: Option<Box<dyn SegmentCapture>>,
    /// CRC of the captured segment being written out.
    capture_crc: Crc,
    header_written: bool,
    finished: bool,
}

struct GzPool {
    jobs: Option<SyncSender<Job>>,
    done: Option<Receiver<Done>>,
    workers: Vec<JoinHandle<()>>,
    /// Input (and pushed) bytes allowed in flight: `2 × workers` full blocks.
    max_bytes_in_flight: usize,
}

impl Drop for GzPool {
    fn drop(&mut self) {
        // Dropping the receiver first makes workers blocked on a send return; dropping the
        // sender ends their receive loop. Then they can be joined without spinning.
        self.done = None;
        self.jobs = None;
        for handle in self.workers.drain(..) {
            let _ = handle.join();
        }
    }
}

impl<W: Write> ParallelGzEncoder<W> {
    pub fn new(inner: W, level: u32) -> Self {
        Self::with_workers(inner, level, default_workers())
    }

    pub fn with_workers(inner: W, level: u32, workers: usize) -> Self {
        let workers = workers.max(1);
        let level = level.min(9);
        let pool = (workers > 1).then(|| {
            // The window is kept by `wait_for_room` (bytes and blocks); the job queue holds
            // it all, so the writer never blocks on a hand-off while workers are busy
            // (segments cut short blocks: a queue of `workers` jobs left cores idle).
            let (jtx, jrx) = sync_channel::<Job>(MAX_BLOCKS_IN_FLIGHT as usize);
            let max_bytes_in_flight = workers * 2 * GZIP_BLOCK_BYTES;
            // Workers must never block on handing back a result (the writer may be
            // blocked handing them a job): room for every block that can be in flight.
            let (dtx, drx) = sync_channel::<Done>(MAX_BLOCKS_IN_FLIGHT as usize + 1);
            let jrx = Arc::new(Mutex::new(jrx));
            let handles = (0..workers)
                .map(|_| {
                    let jrx = Arc::clone(&jrx);
                    let dtx = dtx.clone();
                    std::thread::spawn(move || {
                        loop {
                            let job = match jrx.lock() {
                                Ok(guard) => guard.recv(),
                                Err(_) => return,
                            };
                            let Ok(job) = job else { return };
                            let result = deflate_block(level, &job.data, &job.dictionary, job.last);
                            if dtx.send((job.seq, result)).is_err() {
                                return;
                            }
                        }
                    })
                })
                .collect();
            GzPool {
                jobs: Some(jtx),
                done: Some(drx),
                workers: handles,
                max_bytes_in_flight,
            }
        });
        ParallelGzEncoder {
            inner: Some(inner),
            level,
            buf: Vec::with_capacity(GZIP_BLOCK_BYTES),
            dictionary: Vec::new(),
            crc: Crc::new(),
            pool,
            next_seq: 0,
            next_write: 0,
            pending: BTreeMap::new(),
            tags: BTreeMap::new(),
            sizes: BTreeMap::new(),
            bytes_in_flight: 0,
            segment: None,
            capture: None,
            capture_crc: Crc::new(),
            header_written: false,
            finished: false,
        }
    }

    fn inner_mut(&mut self) -> io::Result<&mut W> {
        self.inner
            .as_mut()
            .ok_or_else(|| io::Error::other("gzip encoder already finished"))
    }

    fn write_block(&mut self, block: Vec<u8>, crc: Crc, tag: Option<SegTag>) -> io::Result<()> {
        if !self.header_written {
            let header = gzip_header(self.level);
            self.inner_mut()?.write_all(&header)?;
            self.header_written = true;
        }
        self.crc.combine(&crc);
        self.inner_mut()?.write_all(&block)?;
        if let Some(tag) = tag {
            self.capture_crc.combine(&crc);
            if let Some(capture) = self.capture.as_mut() {
                if !block.is_empty() {
                    capture.piece(tag.id, &block)?;
                }
                if tag.end {
                    let crc = std::mem::replace(&mut self.capture_crc, Crc::new());
                    let len = crc.total_len();
                    capture.complete(tag.id, crc.finalize(), len)?;
                }
            }
        }
        Ok(())
    }

    /// The capture tag for a block dispatched now.
    fn current_tag(&self, end: bool) -> Option<SegTag> {
        match self.segment {
            Some(Some(id)) if self.capture.is_some() => Some(SegTag { id, end }),
            _ => None,
        }
    }

    /// Hand the buffered block to a worker (or compress it here with one worker).
    fn dispatch(&mut self, last: bool) -> io::Result<()> {
        self.dispatch_tagged(last, None)
    }

    fn dispatch_tagged(&mut self, last: bool, tag: Option<SegTag>) -> io::Result<()> {
        let tag = tag.or_else(|| self.current_tag(false));
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(GZIP_BLOCK_BYTES));
        let dictionary = std::mem::take(&mut self.dictionary);
        let tail = data.len().saturating_sub(DEFLATE_DICT_BYTES);
        self.dictionary = data[tail..].to_vec();
        if self.pool.is_none() {
            // One worker: compress here, no thread hand-off.
            let (block, crc) = deflate_block(self.level, &data, &dictionary, last)?;
            return self.write_block(block, crc, tag);
        }
        self.wait_for_room()?;
        let seq = self.next_seq;
        self.sizes.insert(seq, data.len());
        self.bytes_in_flight += data.len();
        let jobs = self
            .pool
            .as_ref()
            .and_then(|p| p.jobs.as_ref())
            .ok_or_else(|| io::Error::other("gzip encoder already finished"))?;
        jobs.send(Job {
            seq,
            data,
            dictionary,
            last,
        })
        .map_err(|_| io::Error::other("gzip worker exited"))?;
        if let Some(tag) = tag {
            self.tags.insert(seq, tag);
        }
        self.next_seq += 1;
        Ok(())
    }

    /// Wait until the blocks and bytes in flight are below their limits.
    fn wait_for_room(&mut self) -> io::Result<()> {
        let max_bytes = self
            .pool
            .as_ref()
            .map_or(GZIP_BLOCK_BYTES, |p| p.max_bytes_in_flight);
        while self.next_seq - self.next_write >= MAX_BLOCKS_IN_FLIGHT
            || self.bytes_in_flight >= max_bytes
        {
            self.collect_one()?;
        }
        Ok(())
    }

    /// Write every block whose turn has come.
    fn write_ready(&mut self) -> io::Result<()> {
        while let Some((block, crc, tag)) = self.pending.remove(&self.next_write) {
            if let Some(n) = self.sizes.remove(&self.next_write) {
                self.bytes_in_flight -= n;
            }
            self.write_block(block, crc, tag)?;
            self.next_write += 1;
        }
        Ok(())
    }

    /// Write what is ready, then wait for one worker result (when one is outstanding).
    fn collect_one(&mut self) -> io::Result<()> {
        self.write_ready()?;
        if self.next_write == self.next_seq {
            return Ok(());
        }
        let done = self
            .pool
            .as_ref()
            .and_then(|p| p.done.as_ref())
            .ok_or_else(|| io::Error::other("gzip encoder already finished"))?;
        let (seq, result) = done
            .recv()
            .map_err(|_| io::Error::other("gzip worker exited"))?;
        let (block, crc) = result?;
        let tag = self.tags.remove(&seq);
        self.pending.insert(seq, (block, crc, tag));
        self.write_ready()
    }

    /// A block that needs no compression (already deflate, or empty), in sequence.
    fn push_ready(&mut self, block: Vec<u8>, crc: Crc, tag: Option<SegTag>) -> io::Result<()> {
        if self.pool.is_none() {
            return self.write_block(block, crc, tag);
        }
        self.wait_for_room()?;
        // Counted like input: pushed pieces waiting behind a slow block hold memory too.
        self.sizes.insert(self.next_seq, block.len());
        self.bytes_in_flight += block.len();
        self.pending.insert(self.next_seq, (block, crc, tag));
        self.next_seq += 1;
        self.write_ready()
    }

    /// Capture segments started with `begin_segment(Some(id))` (see [`SegmentCapture`]).
    pub fn set_capture(&mut self, capture: Box<dyn SegmentCapture>) {
        self.capture = Some(capture);
    }

    /// Start a segment: the buffered input becomes a block of its own and the segment
    /// starts without a dictionary. With `capture`, its compressed bytes go to the
    /// [`SegmentCapture`] under that id as they are written.
    pub fn begin_segment(&mut self, capture: Option<u64>) -> io::Result<()> {
        if self.segment.is_some() {
            return Err(io::Error::other("gzip segment already open"));
        }
        if !self.buf.is_empty() {
            self.dispatch(false)?;
        }
        self.dictionary.clear();
        self.segment = Some(capture);
        Ok(())
    }

    /// End the segment: its buffered input becomes its last block; the next block starts
    /// without a dictionary.
    pub fn end_segment(&mut self) -> io::Result<()> {
        if self.segment.is_none() {
            return Err(io::Error::other("no gzip segment open"));
        }
        let end = self.current_tag(true);
        if !self.buf.is_empty() {
            self.dispatch_tagged(false, end)?;
        } else if end.is_some() {
            // The segment ended on a block boundary: an empty block carries the end mark.
            self.push_ready(Vec::new(), Crc::new(), end)?;
        }
        self.dictionary.clear();
        self.segment = None;
        Ok(())
    }

    /// Raw deflate bytes of a segment compressed elsewhere (one piece of it; pieces in
    /// order), inside an open segment with nothing written to it. `crc` and `len` are the
    /// CRC-32 and length of the input these bytes stand for (give the whole segment's with
    /// one piece and `0, 0` with the others). The bytes must end on a sync flush, as
    /// captured segments do.
    pub fn push_precompressed(&mut self, deflate: Vec<u8>, crc: u32, len: u64) -> io::Result<()> {
        if self.segment.is_none() || !self.buf.is_empty() {
            return Err(io::Error::other(
                "precompressed bytes outside an empty gzip segment",
            ));
        }
        self.push_ready(deflate, Crc::new_with_initial_len(crc, len), None)
    }

    /// Write out every block in flight (the output is unchanged; for a caller that must
    /// know its captured segments are complete before it waits).
    pub fn drain(&mut self) -> io::Result<()> {
        while self.next_write < self.next_seq {
            self.collect_one()?;
        }
        Ok(())
    }

    /// Compress the rest, write the trailer, join the workers and return the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.finish_stream()?;
        self.pool = None;
        let mut inner = self
            .inner
            .take()
            .ok_or_else(|| io::Error::other("gzip encoder already finished"))?;
        inner.flush()?;
        Ok(inner)
    }

    fn finish_stream(&mut self) -> io::Result<()> {
        if self.finished {
            return Ok(());
        }
        if self.segment.is_some() {
            self.end_segment()?;
        }
        self.dispatch(true)?;
        self.drain()?;
        let mut trailer = [0u8; 8];
        // ISIZE is the input length modulo 2^32 (RFC 1952).
        trailer[..4].copy_from_slice(&self.crc.clone().finalize().to_le_bytes());
        trailer[4..].copy_from_slice(&(self.crc.total_len() as u32).to_le_bytes());
        self.inner_mut()?.write_all(&trailer)?;
        self.finished = true;
        Ok(())
    }
}

impl<W: Write> Write for ParallelGzEncoder<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.finished {
            return Err(io::Error::other("gzip encoder already finished"));
        }
        let room = GZIP_BLOCK_BYTES - self.buf.len();
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == GZIP_BLOCK_BYTES {
            self.dispatch(false)?;
        }
        Ok(n)
    }
    /// A no-op: forcing a block boundary here would make the output depend on when the
    /// caller flushes. Compressed bytes reach the inner writer block by block.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A writer compressing into `W` with one of the [`Compression`] schemes.
pub enum CompressWriter<W: Write> {
    None(W),
    Gzip(Box<ParallelGzEncoder<W>>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> CompressWriter<W> {
    pub fn new(inner: W, compression: Compression) -> io::Result<Self> {
        Self::with_workers(inner, compression, default_workers())
    }

    /// Like [`CompressWriter::new`] with an explicit worker count. The output bytes do not
    /// depend on it.
    pub fn with_workers(inner: W, compression: Compression, workers: usize) -> io::Result<Self> {
        let workers = workers.max(1);
        Ok(match compression {
            Compression::None => CompressWriter::None(inner),
            Compression::Gzip { level } => CompressWriter::Gzip(Box::new(
                ParallelGzEncoder::with_workers(inner, level, workers),
            )),
            Compression::Zstd { level } => {
                let mut enc = zstd::stream::write::Encoder::new(inner, level)?;
                // Always multi-threaded mode, also with one worker: its output is the same
                // for any worker count, unlike single-threaded mode (module docs).
                enc.multithread(workers as u32)?;
                enc.include_checksum(true)?;
                CompressWriter::Zstd(enc)
            }
        })
    }

    /// The gzip encoder, when this writer compresses with gzip (segments, capture).
    pub fn gzip(&mut self) -> Option<&mut ParallelGzEncoder<W>> {
        match self {
            CompressWriter::Gzip(g) => Some(g),
            _ => None,
        }
    }

    pub fn finish(self) -> io::Result<W> {
        match self {
            CompressWriter::None(mut w) => {
                w.flush()?;
                Ok(w)
            }
            CompressWriter::Gzip(g) => g.finish(),
            CompressWriter::Zstd(z) => z.finish(),
        }
    }
}

impl<W: Write> Write for CompressWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match self {
            CompressWriter::None(w) => w.write(data),
            CompressWriter::Gzip(g) => g.write(data),
            CompressWriter::Zstd(z) => z.write(data),
        }
    }
    fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            CompressWriter::None(w) => w.write_all(data),
            CompressWriter::Gzip(g) => g.write_all(data),
            CompressWriter::Zstd(z) => z.write_all(data),
        }
    }
    /// Flushes the inner writer for `None`; for gzip a no-op (see
    /// [`ParallelGzEncoder::flush`]); for zstd ends the current block (deterministic for
    /// the same sequence of calls).
    fn flush(&mut self) -> io::Result<()> {
        match self {
            CompressWriter::None(w) => w.flush(),
            CompressWriter::Gzip(g) => g.flush(),
            CompressWriter::Zstd(z) => z.flush(),
        }
    }
}

/// Formats recognised by magic bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DetectedFormat {
    Plain,
    Gzip,
    Zstd,
    Xz,
    Bzip2,
}

impl From<LayerCompression> for DetectedFormat {
    fn from(c: LayerCompression) -> Self {
        match c {
            LayerCompression::None => DetectedFormat::Plain,
            LayerCompression::Gzip => DetectedFormat::Gzip,
            LayerCompression::Zstd => DetectedFormat::Zstd,
        }
    }
}

/// Identify a compressed stream by its first bytes (at least 6 for xz).
pub fn detect_format(head: &[u8]) -> DetectedFormat {
    if head.starts_with(&[0x1f, 0x8b, 0x08]) {
        DetectedFormat::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        DetectedFormat::Zstd
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        DetectedFormat::Xz
    } else if head.len() >= 4 && head.starts_with(b"BZh") && (b'1'..=b'9').contains(&head[3]) {
        DetectedFormat::Bzip2
    } else {
        DetectedFormat::Plain
    }
}

/// Decoder for a format known in advance (from the layer media type).
pub fn decompress<'a, R: Read + Send + 'a>(
    reader: R,
    compression: LayerCompression,
) -> io::Result<Box<dyn Read + Send + 'a>> {
    decoder_for(
        BufReader::with_capacity(DECODE_BUFFER_BYTES, reader),
        compression.into(),
    )
}

/// Bytes [`detect_format`] needs to tell every format apart.
const MAGIC_BYTES: usize = 6;

/// Decoder chosen by magic bytes (for ADD of local archives and untyped blobs).
pub fn decompress_detect<'a, R: Read + Send + 'a>(
    reader: R,
) -> io::Result<(DetectedFormat, Box<dyn Read + Send + 'a>)> {
    let mut buffered = BufReader::with_capacity(DECODE_BUFFER_BYTES, reader);
    let head = buffered.fill_buf()?;
    if head.len() >= MAGIC_BYTES || head.is_empty() {
        let format = detect_format(head);
        return Ok((format, decoder_for(buffered, format)?));
    }
    // A source that trickles (pipe, network) may hand out fewer bytes than the magic:
    // collect them, then put them back in front of the rest.
    let mut first = head.to_vec();
    buffered.consume(first.len());
    let mut more = [0u8; MAGIC_BYTES];
    while first.len() < MAGIC_BYTES {
        let n = match buffered.read(&mut more[..MAGIC_BYTES - first.len()]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            break;
        }
        first.extend_from_slice(&more[..n]);
    }
    let format = detect_format(&first);
    let chained =
        BufReader::with_capacity(DECODE_BUFFER_BYTES, io::Cursor::new(first).chain(buffered));
    Ok((format, decoder_for(chained, format)?))
}

fn decoder_for<'a, R: BufRead + Send + 'a>(
    reader: R,
    format: DetectedFormat,
) -> io::Result<Box<dyn Read + Send + 'a>> {
    Ok(match format {
        DetectedFormat::Plain => Box::new(reader),
        // Multi-member: pigz/Go write several members and readers must read them all
        // (RELIABILITY A20).
        DetectedFormat::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(reader)),
        DetectedFormat::Zstd => {
            let mut d = zstd::stream::read::Decoder::with_buffer(reader)?;
            d.window_log_max(ZSTD_MAX_WINDOW_LOG)?;
            Box::new(d)
        }
        DetectedFormat::Xz => {
            let stream =
                xz2::stream::Stream::new_stream_decoder(XZ_MAX_MEMORY, xz2::stream::CONCATENATED)
                    .map_err(io::Error::other)?;
            Box::new(xz2::bufread::XzDecoder::new_stream(reader, stream))
        }
        DetectedFormat::Bzip2 => Box::new(bzip2::bufread::MultiBzDecoder::new(reader)),
    })
}

/// A reader fed by a thread that reads (and decodes) another stream, so decompression and
/// hashing overlap with the consumer's work (tar parsing, file creation).
///
/// Memory is bounded (8 chunks of 256 KiB). When the reader is dropped early (the consumer
/// failed), the thread's next hand-off fails and it exits: it is never left blocked on the
/// channel (RELIABILITY A23). An error of the producing stream is returned to the
/// consumer as the same `io::Error` kind and message.
///
/// A cancellable reader ([`PipeReader::spawn_cancellable`]) fails with [`cancelled_error`]
/// once its flag is set, without waiting for the decoder thread.
pub struct PipeReader {
    chunks: Option<Receiver<io::Result<Vec<u8>>>>,
    current: Vec<u8>,
    offset: usize,
    done: bool,
    thread: Option<JoinHandle<()>>,
    cancel: Option<Arc<AtomicBool>>,
}

/// The error a reader returns once cancelled (Ctrl-C). Its kind is never
/// `ErrorKind::Interrupted`: every `Read` consumer (std's `read_exact` and `io::copy`,
/// decoders, the [`PipeReader`] thread) retries that kind at once, so a cancelled source
/// answering it would be asked again forever (a thread spinning at 100 % CPU).
pub fn cancelled_error() -> io::Error {
    io::Error::other("cancelled")
}

impl PipeReader {
    /// Like [`PipeReader::spawn`]; reads fail with [`cancelled_error`] soon after `cancel`
    /// is set, even while the thread is blocked in its source.
    pub fn spawn_cancellable<R: Read + Send + 'static>(
        source: R,
        cancel: Arc<AtomicBool>,
    ) -> io::Result<PipeReader> {
        let mut reader = PipeReader::spawn(source)?;
        reader.cancel = Some(cancel);
        Ok(reader)
    }

    fn next_chunk(&self, rx: &Receiver<io::Result<Vec<u8>>>) -> Option<io::Result<Vec<u8>>> {
        let Some(cancel) = &self.cancel else {
            return rx.recv().ok();
        };
        loop {
            if cancel.load(Ordering::Relaxed) {
                return Some(Err(cancelled_error()));
            }
            match rx.recv_timeout(PIPE_CANCEL_POLL) {
                Ok(chunk) => return Some(chunk),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    /// Run `source` on a new thread, reading it in chunks.
    pub fn spawn<R: Read + Send + 'static>(mut source: R) -> io::Result<PipeReader> {
        let (tx, rx) = sync_channel::<io::Result<Vec<u8>>>(PIPE_CHUNKS);
        let thread = std::thread::Builder::new()
            .name("strata-decode".into())
            .spawn(move || {
                loop {
                    let mut chunk = vec![0u8; PIPE_CHUNK_BYTES];
                    let mut filled = 0;
                    // Fill whole chunks: fewer hand-offs.
                    let result = loop {
                        match source.read(&mut chunk[filled..]) {
                            Ok(0) => break Ok(()),
                            Ok(n) => {
                                filled += n;
                                if filled == chunk.len() {
                                    break Ok(());
                                }
                            }
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(e) => break Err(e),
                        }
                    };
                    chunk.truncate(filled);
                    let end = filled == 0;
                    match result {
                        Ok(()) => {
                            if tx.send(Ok(chunk)).is_err() || end {
                                return;
                            }
                        }
                        Err(e) => {
                            if filled > 0 && tx.send(Ok(chunk)).is_err() {
                                return;
                            }
                            let _ = tx.send(Err(e));
                            return;
                        }
                    }
                }
            })?;
        Ok(PipeReader {
            chunks: Some(rx),
            current: Vec::new(),
            offset: 0,
            done: false,
            thread: Some(thread),
            cancel: None,
        })
    }
}

impl Read for PipeReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.offset == self.current.len() {
            if self.done {
                return Ok(0);
            }
            let Some(rx) = self.chunks.as_ref() else {
                return Ok(0);
            };
            match self.next_chunk(rx) {
                Some(Ok(chunk)) => {
                    if chunk.is_empty() {
                        self.done = true;
                        return Ok(0);
                    }
                    self.current = chunk;
                    self.offset = 0;
                }
                Some(Err(e)) => {
                    self.done = true;
                    return Err(e);
                }
                None => {
                    self.done = true;
                    return Err(io::Error::new(
                        io::ErrorKind::BrokenPipe,
                        "decoder thread ended without end of stream",
                    ));
                }
            }
        }
        let n = buf.len().min(self.current.len() - self.offset);
        buf[..n].copy_from_slice(&self.current[self.offset..self.offset + n]);
        self.offset += n;
        Ok(n)
    }
}

impl Drop for PipeReader {
    fn drop(&mut self) {
        // Closing the receiver makes the producer's next send fail: it stops there. It is
        // joined only when already done: a source stalled in `read` (a network stream) must
        // not hang the consumer; the thread ends as soon as that read returns.
        self.chunks = None;
        if let Some(thread) = self.thread.take()
            && thread.is_finished()
        {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(len: usize) -> Vec<u8> {
        // Compressible but not trivial: a pseudo-random walk over a small alphabet.
        let mut x: u32 = 12345;
        (0..len)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                b"abcdefgh \n"[(x >> 16) as usize % 10]
            })
            .collect()
    }

    fn gzip_with(data: &[u8], level: u32, workers: usize, chunk: usize) -> Vec<u8> {
        let mut enc = ParallelGzEncoder::with_workers(Vec::new(), level, workers);
        for part in data.chunks(chunk.max(1)) {
            enc.write_all(part).unwrap();
        }
        enc.finish().unwrap()
    }

    #[test]
    fn gzip_round_trips_and_is_one_member() {
        for len in [
            0,
            1,
            1000,
            GZIP_BLOCK_BYTES,
            GZIP_BLOCK_BYTES + 1,
            3 * GZIP_BLOCK_BYTES + 7,
        ] {
            let data = sample(len);
            let gz = gzip_with(&data, 6, 3, 70_000);
            // A single-member decoder reads everything: output is one gzip member.
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&gz[..])
                .read_to_end(&mut out)
                .unwrap();
            assert_eq!(out, data, "len {len}");
        }
    }

    #[test]
    fn gzip_bytes_do_not_depend_on_workers_or_write_sizes() {
        let data = sample(5 * GZIP_BLOCK_BYTES + 12_345);
        let reference = gzip_with(&data, 1, 1, 1 << 20);
        for (workers, chunk) in [(2, 4096), (4, 100_000), (3, 7)] {
            assert_eq!(
                gzip_with(&data, 1, workers, chunk),
                reference,
                "workers {workers}"
            );
        }
    }

    #[test]
    fn detects_formats() {
        assert_eq!(detect_format(&[0x1f, 0x8b, 8, 0]), DetectedFormat::Gzip);
        assert_eq!(
            detect_format(&[0x28, 0xb5, 0x2f, 0xfd, 0]),
            DetectedFormat::Zstd
        );
        assert_eq!(detect_format(b"\xfd7zXZ\x00rest"), DetectedFormat::Xz);
        assert_eq!(detect_format(b"BZh91AY"), DetectedFormat::Bzip2);
        assert_eq!(detect_format(b"BZhx"), DetectedFormat::Plain);
        assert_eq!(detect_format(b"ustar"), DetectedFormat::Plain);
        assert_eq!(detect_format(b""), DetectedFormat::Plain);
    }
}
