//! Byte-counting, digesting readers and writers, and the layer writing and reading
//! pipelines (digest of the stored bytes and DiffId of the tar in one pass).

use std::io::{self, BufWriter, Read, Write};
use std::sync::{Arc, Mutex, PoisonError};

use strata_spec::{Algorithm, DiffId, Digest, DigestHasher, LayerCompression, MediaType};

use crate::compress::{CompressWriter, Compression, PipeReader, decompress, default_workers};

/// Buffer between the compressor and the destination (headers are 512-byte writes).
const OUTPUT_BUFFER_BYTES: usize = 256 * 1024;

/// A writer that counts and digests every byte it passes to `W`.
pub struct HashingWriter<W> {
    inner: W,
    hasher: DigestHasher,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        Self::with_algorithm(inner, Algorithm::Sha256)
    }
    pub fn with_algorithm(inner: W, algorithm: Algorithm) -> Self {
        HashingWriter {
            inner,
            hasher: DigestHasher::new(algorithm),
            count: 0,
        }
    }
    pub fn bytes_written(&self) -> u64 {
        self.count
    }
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }
    /// Count and digest `data` as if written, without passing it on (its encoded form
    /// reaches the inner writer another way, e.g. precompressed gzip segments).
    pub fn hash_only(&mut self, data: &[u8]) {
        self.hasher.update(data);
        self.count += data.len() as u64;
    }
    /// Returns the inner writer, the digest and the byte count.
    pub fn finish(self) -> (W, Digest, u64) {
        (self.inner, self.hasher.finish(), self.count)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(data)?;
        self.hasher.update(&data[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that counts and digests every byte read from `R`.
pub struct HashingReader<R> {
    inner: R,
    hasher: DigestHasher,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        Self::with_algorithm(inner, Algorithm::Sha256)
    }
    pub fn with_algorithm(inner: R, algorithm: Algorithm) -> Self {
        HashingReader {
            inner,
            hasher: DigestHasher::new(algorithm),
            count: 0,
        }
    }
    pub fn bytes_read(&self) -> u64 {
        self.count
    }
    /// Read the rest of the stream so the digest covers every byte.
    pub fn drain(&mut self) -> io::Result<u64> {
        io::copy(self, &mut io::sink())
    }
    pub fn finish(self) -> (R, Digest, u64) {
        (self.inner, self.hasher.finish(), self.count)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// What a finished layer is: the descriptor facts and the config `diff_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerInfo {
    pub digest: Digest,
    pub diff_id: DiffId,
    pub size: u64,
    pub uncompressed_size: u64,
    pub media_type: MediaType,
}

/// tar bytes in → DiffId (uncompressed) → compression → Digest and size of the stored
/// bytes → `W`. Use as the writer of a [`crate::TarBuilder`]. Output is buffered, so `W`
/// can be a plain `File`.
pub struct LayerWriter<W: Write> {
    inner: HashingWriter<CompressWriter<HashingWriter<BufWriter<W>>>>,
    compression: Compression,
}

impl<W: Write> LayerWriter<W> {
    pub fn new(inner: W, compression: Compression) -> io::Result<Self> {
        Self::with_workers(inner, compression, default_workers())
    }

    /// Like [`LayerWriter::new`] with an explicit number of compression workers; the
    /// bytes written do not depend on it.
    pub fn with_workers(inner: W, compression: Compression, workers: usize) -> io::Result<Self> {
        let buffered = BufWriter::with_capacity(OUTPUT_BUFFER_BYTES, inner);
        Ok(LayerWriter {
            inner: HashingWriter::new(CompressWriter::with_workers(
                HashingWriter::new(buffered),
                compression,
                workers,
            )?),
            compression,
        })
    }

    pub fn finish(self) -> io::Result<(LayerInfo, W)> {
        let (compressor, diff_id, uncompressed_size) = self.inner.finish();
        let stored = compressor.finish()?;
        let (buffered, digest, size) = stored.finish();
        let inner = buffered.into_inner().map_err(|e| e.into_error())?;
        Ok((
            LayerInfo {
                digest,
                diff_id: DiffId(diff_id),
                size,
                uncompressed_size,
                media_type: self.compression.media_type(),
            },
            inner,
        ))
    }
}

impl<W: Write> Write for LayerWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.inner.write(data)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Digests of a layer blob, computed while reading it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerDigests {
    /// Digest of the stored (compressed) bytes, with the algorithm asked for.
    pub digest: Digest,
    pub size: u64,
    /// SHA-256 of the uncompressed tar.
    pub diff_id: DiffId,
    pub uncompressed_size: u64,
}

/// Where a [`LayerReader`] decompresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Threading {
    /// On a separate thread feeding the reader through a bounded channel: decompression
    /// and hashing overlap with the consumer's work (unpack: about 2× on two cores).
    #[default]
    DecoderThread,
    /// On the caller's thread.
    SameThread,
}

/// Hashing state shared with a reader that may live on another thread.
#[derive(Clone)]
struct SharedHash(Arc<Mutex<(DigestHasher, u64)>>);

impl SharedHash {
    fn new(algorithm: Algorithm) -> Self {
        SharedHash(Arc::new(Mutex::new((DigestHasher::new(algorithm), 0))))
    }
    fn result(&self) -> (Digest, u64) {
        let guard = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        (guard.0.clone().finish(), guard.1)
    }
}

struct SharedHashingReader<R> {
    inner: R,
    state: SharedHash,
}

impl<R: Read> Read for SharedHashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut guard = self.state.0.lock().unwrap_or_else(PoisonError::into_inner);
        guard.0.update(&buf[..n]);
        guard.1 += n as u64;
        Ok(n)
    }
}

/// stored bytes in → digest and size → decompression (by media type) → DiffId → tar bytes
/// out. Read the tar from it, then [`LayerReader::finish`] drains the rest (so the digests
/// cover every byte, also after the tar's end blocks) and returns the [`LayerDigests`].
pub struct LayerReader {
    reader: Box<dyn Read + Send>,
    stored: SharedHash,
    uncompressed: SharedHash,
}

impl LayerReader {
    /// `algorithm`: the one of the descriptor's digest (the DiffId is always SHA-256).
    pub fn new<R: Read + Send + 'static>(
        stored: R,
        compression: LayerCompression,
        algorithm: Algorithm,
        threading: Threading,
    ) -> io::Result<LayerReader> {
        let stored_hash = SharedHash::new(algorithm);
        let uncompressed_hash = SharedHash::new(Algorithm::Sha256);
        let hashed = SharedHashingReader {
            inner: stored,
            state: stored_hash.clone(),
        };
        let decoded = SharedHashingReader {
            inner: decompress(hashed, compression)?,
            state: uncompressed_hash.clone(),
        };
        let reader: Box<dyn Read + Send> = match threading {
            Threading::SameThread => Box::new(decoded),
            Threading::DecoderThread => Box::new(PipeReader::spawn(decoded)?),
        };
        Ok(LayerReader {
            reader,
            stored: stored_hash,
            uncompressed: uncompressed_hash,
        })
    }

    /// Read to the end of the stream and return the digests.
    pub fn finish(mut self) -> io::Result<LayerDigests> {
        io::copy(&mut self.reader, &mut io::sink())?;
        // The end of stream was seen: the decoder thread hashed every byte before it handed
        // over its last (empty) chunk, so the hashers are complete even if that thread has
        // not exited yet (`PipeReader`'s drop does not wait for it).
        drop(self.reader);
        let (digest, size) = self.stored.result();
        let (diff_id, uncompressed_size) = self.uncompressed.result();
        Ok(LayerDigests {
            digest,
            size,
            diff_id: DiffId(diff_id),
            uncompressed_size,
        })
    }
}

impl Read for LayerReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reader.read(buf)
    }
}
