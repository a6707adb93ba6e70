//! Byte-counting, digesting readers and writers, and the layer writing pipeline.

use std::io::{self, Read, Write};

use strata_spec::{Algorithm, DiffId, Digest, DigestHasher, MediaType};

use crate::compress::{CompressWriter, Compression};

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
/// bytes → `W`. Use as the writer of a [`crate::TarBuilder`].
pub struct LayerWriter<W: Write> {
    inner: HashingWriter<CompressWriter<HashingWriter<W>>>,
    compression: Compression,
}

impl<W: Write> LayerWriter<W> {
    pub fn new(inner: W, compression: Compression) -> io::Result<Self> {
        Ok(LayerWriter {
            inner: HashingWriter::new(CompressWriter::new(HashingWriter::new(inner), compression)?),
            compression,
        })
    }

    pub fn finish(self) -> io::Result<(LayerInfo, W)> {
        let (compressor, diff_id, uncompressed_size) = self.inner.finish();
        let stored = compressor.finish()?;
        let (inner, digest, size) = stored.finish();
        let media_type = MediaType::new(match self.compression {
            Compression::None => MediaType::OCI_LAYER,
            Compression::Gzip { .. } => MediaType::OCI_LAYER_GZIP,
            Compression::Zstd { .. } => MediaType::OCI_LAYER_ZSTD,
        });
        Ok((
            LayerInfo {
                digest,
                diff_id: DiffId(diff_id),
                size,
                uncompressed_size,
                media_type,
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
