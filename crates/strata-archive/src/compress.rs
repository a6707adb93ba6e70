//! Compression encoders (parallel gzip, zstd) and decoders (gzip multi-member, zstd, xz, bzip2).

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use flate2::GzBuilder;
use strata_spec::LayerCompression;

/// Input bytes per gzip member. 1 MiB keeps the per-member overhead (18 bytes + lost
/// dictionary) under 0.1 % while giving every worker enough work per hand-off.
pub const GZIP_BLOCK_BYTES: usize = 1 << 20;
/// Largest zstd window a decoder accepts (2^27 = 128 MiB, zstd's own default limit for
/// streaming). A frame declaring more is rejected instead of allocating (RELIABILITY A22).
pub const ZSTD_MAX_WINDOW_LOG: u32 = 27;

/// How to compress a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    /// gzip, produced as concatenated members compressed in parallel (pigz-style).
    Gzip {
        level: u32,
    },
    Zstd {
        level: i32,
    },
}

impl Default for Compression {
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
}

/// Number of compression worker threads: the available parallelism.
pub fn default_workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

type Job = (u64, Vec<u8>);
type Done = (u64, io::Result<Vec<u8>>);

/// pigz-style parallel gzip writer: input is cut into [`GZIP_BLOCK_BYTES`] blocks, each
/// compressed as an independent gzip member (mtime 0, no name: deterministic) on a worker
/// thread, and members are written in input order. Concatenated members are a valid gzip
/// stream for `gzip -d`, Go's multistream reader and flate2's `MultiGzDecoder`.
/// At most `2 × workers` blocks are in flight, so memory stays flat.
pub struct ParallelGzEncoder<W: Write> {
    inner: Option<W>,
    buf: Vec<u8>,
    jobs: Option<SyncSender<Job>>,
    done: Receiver<Done>,
    workers: Vec<JoinHandle<()>>,
    next_seq: u64,
    next_write: u64,
    pending: BTreeMap<u64, Vec<u8>>,
    max_in_flight: u64,
    wrote_any: bool,
}

fn gzip_member(level: u32, data: &[u8]) -> io::Result<Vec<u8>> {
    let mut enc = GzBuilder::new().mtime(0).operating_system(255).write(
        Vec::with_capacity(data.len() / 2 + 64),
        flate2::Compression::new(level),
    );
    enc.write_all(data)?;
    enc.finish()
}

impl<W: Write> ParallelGzEncoder<W> {
    pub fn new(inner: W, level: u32) -> Self {
        Self::with_workers(inner, level, default_workers())
    }

    pub fn with_workers(inner: W, level: u32, workers: usize) -> Self {
        let workers_n = workers.max(1);
        let level = level.min(9);
        let (jtx, jrx) = sync_channel::<Job>(workers_n);
        let (dtx, drx) = sync_channel::<Done>(workers_n * 2 + 2);
        let jrx = Arc::new(Mutex::new(jrx));
        let mut handles = Vec::with_capacity(workers_n);
        for _ in 0..workers_n {
            let jrx = Arc::clone(&jrx);
            let dtx = dtx.clone();
            handles.push(std::thread::spawn(move || {
                loop {
                    let job = match jrx.lock() {
                        Ok(guard) => guard.recv(),
                        Err(_) => return,
                    };
                    let Ok((seq, data)) = job else { return };
                    if dtx.send((seq, gzip_member(level, &data))).is_err() {
                        return;
                    }
                }
            }));
        }
        ParallelGzEncoder {
            inner: Some(inner),
            buf: Vec::with_capacity(GZIP_BLOCK_BYTES),
            jobs: Some(jtx),
            done: drx,
            workers: handles,
            next_seq: 0,
            next_write: 0,
            pending: BTreeMap::new(),
            max_in_flight: (workers_n * 2) as u64,
            wrote_any: false,
        }
    }

    fn dispatch(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        while self.next_seq - self.next_write >= self.max_in_flight {
            self.collect_one()?;
        }
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(GZIP_BLOCK_BYTES));
        let jobs = self
            .jobs
            .as_ref()
            .ok_or_else(|| io::Error::other("gzip encoder already finished"))?;
        jobs.send((self.next_seq, data))
            .map_err(|_| io::Error::other("gzip worker exited"))?;
        self.next_seq += 1;
        self.wrote_any = true;
        Ok(())
    }

    fn collect_one(&mut self) -> io::Result<()> {
        let (seq, result) = self
            .done
            .recv()
            .map_err(|_| io::Error::other("gzip worker exited"))?;
        self.pending.insert(seq, result?);
        let inner = self
            .inner
            .as_mut()
            .ok_or_else(|| io::Error::other("gzip encoder already finished"))?;
        while let Some(member) = self.pending.remove(&self.next_write) {
            inner.write_all(&member)?;
            self.next_write += 1;
        }
        Ok(())
    }

    /// Flush all blocks, join the workers and return the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.dispatch()?;
        while self.next_write < self.next_seq {
            self.collect_one()?;
        }
        self.jobs = None;
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
        let mut inner = self
            .inner
            .take()
            .ok_or_else(|| io::Error::other("gzip encoder already finished"))?;
        if !self.wrote_any {
            // An empty input still needs one (empty) member to be a gzip file.
            inner.write_all(&gzip_member(0, &[])?)?;
        }
        inner.flush()?;
        Ok(inner)
    }
}

impl<W: Write> Write for ParallelGzEncoder<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = GZIP_BLOCK_BYTES - self.buf.len();
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == GZIP_BLOCK_BYTES {
            self.dispatch()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write> Drop for ParallelGzEncoder<W> {
    fn drop(&mut self) {
        self.jobs = None;
        // Unblock workers stuck on a full result channel, then join them.
        while self.done.try_recv().is_ok() {}
        for h in self.workers.drain(..) {
            while !h.is_finished() {
                while self.done.try_recv().is_ok() {}
                std::thread::yield_now();
            }
            let _ = h.join();
        }
    }
}

/// A writer compressing into `W` with one of the [`Compression`] schemes.
pub enum CompressWriter<W: Write> {
    None(W),
    Gzip(ParallelGzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> CompressWriter<W> {
    pub fn new(inner: W, compression: Compression) -> io::Result<Self> {
        Ok(match compression {
            Compression::None => CompressWriter::None(inner),
            Compression::Gzip { level } => {
                CompressWriter::Gzip(ParallelGzEncoder::new(inner, level))
            }
            Compression::Zstd { level } => {
                let mut enc = zstd::stream::write::Encoder::new(inner, level)?;
                let workers = default_workers();
                if workers > 1 {
                    enc.multithread(workers as u32)?;
                }
                CompressWriter::Zstd(enc)
            }
        })
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

/// Identify a compressed stream by its first bytes.
pub fn detect_format(head: &[u8]) -> DetectedFormat {
    if head.starts_with(&[0x1f, 0x8b]) {
        DetectedFormat::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        DetectedFormat::Zstd
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        DetectedFormat::Xz
    } else if head.starts_with(b"BZh") {
        DetectedFormat::Bzip2
    } else {
        DetectedFormat::Plain
    }
}

/// Decoder for a format known in advance (from the layer media type).
pub fn decompress<'a, R: Read + 'a>(
    reader: R,
    compression: LayerCompression,
) -> io::Result<Box<dyn Read + 'a>> {
    let format = match compression {
        LayerCompression::None => DetectedFormat::Plain,
        LayerCompression::Gzip => DetectedFormat::Gzip,
        LayerCompression::Zstd => DetectedFormat::Zstd,
    };
    decoder_for(BufReader::with_capacity(256 * 1024, reader), format)
}

/// Decoder chosen by magic bytes (for ADD of local archives and untyped blobs).
pub fn decompress_detect<'a, R: Read + 'a>(
    reader: R,
) -> io::Result<(DetectedFormat, Box<dyn Read + 'a>)> {
    let mut buffered = BufReader::with_capacity(256 * 1024, reader);
    let head = buffered.fill_buf()?;
    let format = detect_format(head);
    Ok((format, decoder_for(buffered, format)?))
}

fn decoder_for<'a, R: BufRead + 'a>(
    reader: R,
    format: DetectedFormat,
) -> io::Result<Box<dyn Read + 'a>> {
    Ok(match format {
        DetectedFormat::Plain => Box::new(reader),
        DetectedFormat::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(reader)),
        DetectedFormat::Zstd => {
            let mut d = zstd::stream::read::Decoder::with_buffer(reader)?;
            d.window_log_max(ZSTD_MAX_WINDOW_LOG)?;
            Box::new(d)
        }
        DetectedFormat::Xz => Box::new(xz2::bufread::XzDecoder::new_multi_decoder(reader)),
        DetectedFormat::Bzip2 => Box::new(bzip2::bufread::MultiBzDecoder::new(reader)),
    })
}
