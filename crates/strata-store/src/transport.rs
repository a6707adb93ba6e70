//! `oci:` layouts (and the default store) as image sources and sinks, and the async → sync
//! bridge every sink of this crate writes blobs through.

use std::path::Path;
use std::sync::Mutex;

use async_trait::async_trait;
use strata_image::{
    BlobOrigin, BlobReader, BlobReplay, ImageError, ImageSink, ImageSource, RawManifest,
};
use strata_spec::{Descriptor, Digest, DigestHasher, MAX_MANIFEST_BYTES, Reference};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use crate::layout::{AlignedBuf, BlobWriter};
use crate::{OciLayout, StoreError, WriterGuard};

/// Chunks queued between the async reader and the blocking writer thread. Buffers circulate
/// (the writer hands each back once written): one being filled while the other is written,
/// so memory per blob write is `(PIPE_DEPTH + 1) * DIRECT_CHUNK` and nothing is allocated per
/// chunk. The writer thread only writes (the reader hashes), so double buffering keeps it
/// fed; a third buffer measured no faster and cost 9 MiB more peak RSS.
const PIPE_DEPTH: usize = 1;

enum Chunk {
    Data(AlignedBuf),
    /// The end of the stream, with the hasher that hashed every chunk.
    End(Box<DigestHasher>),
}

/// Feed an async stream into a [`BlobWriter`] running on a blocking thread (std::fs writes
/// and fsync off the async workers, overlapped with reading). The reader hashes each read
/// at once, while the bytes are still in its core's cache (3-7 % faster than hashing on the
/// writer thread, which then mostly waits for the disk); the writer verifies size (aborting at
/// size+1) and, with the reader's hasher, the digest, and commits. On any failure,
/// including the stream failing, the temp file is gone before this returns. Bytes are read
/// straight into aligned buffers the writer can hand to `O_DIRECT` writes as they are.
pub(crate) async fn pump_blob(
    mut writer: BlobWriter,
    mut data: BlobReader,
) -> Result<(), ImageError> {
    let (tx, mut rx) = mpsc::channel::<Chunk>(PIPE_DEPTH);
    let (back_tx, mut back_rx) = mpsc::channel::<AlignedBuf>(PIPE_DEPTH + 1);
    let mut hasher = writer.detach_hasher();
    let worker = tokio::task::spawn_blocking(move || -> Result<(), StoreError> {
        while let Some(chunk) = rx.blocking_recv() {
            match chunk {
                Chunk::Data(buf) => {
                    writer.write(buf.filled())?;
                    // The reader may be gone already; the buffer is then simply freed.
                    let _ = back_tx.try_send(buf);
                }
                Chunk::End(hasher) => {
                    writer.attach_hasher(*hasher);
                    return writer.commit();
                }
            }
        }
        // The reader gave up: dropping the writer removes the temp file.
        Err(StoreError::io(
            writer.destination().to_path_buf(),
            "blob stream aborted",
            std::io::Error::from(std::io::ErrorKind::Interrupted),
        ))
    });
    // The reading runs as its own task: the blobs a copy moves at once are then read on
    // all worker threads, not all within the one task that drives the copy.
    let reader = AbortOnDrop(tokio::spawn(async move {
        let mut allocated = 0;
        loop {
            let mut buf = match back_rx.try_recv() {
                Ok(b) => b,
                Err(_) if allocated < PIPE_DEPTH + 1 => {
                    allocated += 1;
                    AlignedBuf::new()
                        .map_err(|e| ImageError::from_io("allocating a blob buffer", e))?
                }
                Err(_) => match back_rx.recv().await {
                    Some(b) => b,
                    // The writer stopped (size exceeded, disk full): its error is reported.
                    None => return Ok(()),
                },
            };
            buf.clear();
            // Fill a whole chunk (network reads are small) before handing it over.
            let mut eof = false;
            while !buf.spare_mut().is_empty() {
                let n = data
                    .read(buf.spare_mut())
                    .await
                    .map_err(|e| ImageError::from_io("reading blob stream", e))?;
                if n == 0 {
                    eof = true;
                    break;
                }
                hasher.update(&buf.spare_mut()[..n]);
                buf.advance(n);
            }
            if buf.len() > 0 && tx.send(Chunk::Data(buf)).await.is_err() {
                // The writer stopped (size exceeded, disk full): its error is the one to report.
                return Ok(());
            }
            if eof {
                let _ = tx.send(Chunk::End(Box::new(hasher))).await;
                return Ok(());
            }
        }
    }));
    let read_result = reader
        .join()
        .await
        .map_err(|e| ImageError::io("blob reader task", std::io::Error::other(e)))
        .and_then(|r| r);
    let written = worker
        .await
        .map_err(|e| ImageError::io("blob writer thread", std::io::Error::other(e)))?;
    match (read_result, written) {
        (Err(read), _) => Err(read),
        (Ok(()), result) => Ok(result?),
    }
}

/// A spawned task that is aborted when its handle is dropped (a cancelled copy must not
/// keep reading; the writer then sees the channel close and removes its temp file).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> AbortOnDrop<T> {
    async fn join(mut self) -> Result<T, tokio::task::JoinError> {
        (&mut self.0).await
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Reads an image from an OCI layout, at a tag (or its only entry).
pub struct LayoutSource {
    layout: OciLayout,
    tag: Option<String>,
    name: String,
}

impl LayoutSource {
    /// `oci:PATH[:TAG]`.
    pub fn open(path: &Path, tag: Option<&str>) -> Result<LayoutSource, StoreError> {
        let layout = OciLayout::open(path)?;
        Ok(LayoutSource::new(
            layout,
            tag,
            format!(
                "oci:{}{}",
                path.display(),
                tag.map(|t| format!(":{t}")).unwrap_or_default()
            ),
        ))
    }

    /// The image `reference` in the default store ([`crate::default_store`]).
    pub fn from_store(reference: &Reference) -> Result<LayoutSource, StoreError> {
        let layout = OciLayout::open(&crate::default_store_path()?)?;
        let tag = crate::store_tag(reference);
        Ok(LayoutSource::new(layout, Some(&tag), tag.clone()))
    }

    /// A source over an already opened layout, described as `name` in messages.
    pub fn new(layout: OciLayout, tag: Option<&str>, name: String) -> LayoutSource {
        LayoutSource {
            layout,
            tag: tag.map(str::to_string),
            name,
        }
    }

    pub fn layout(&self) -> &OciLayout {
        &self.layout
    }
}

#[async_trait]
impl ImageSource for LayoutSource {
    fn describe(&self) -> String {
        self.name.clone()
    }
    async fn manifest(&self, digest: Option<&Digest>) -> Result<RawManifest, ImageError> {
        let (digest, media_type) = match digest {
            None => {
                let d = self.layout.resolve(self.tag.as_deref())?;
                (d.digest, d.media_type)
            }
            // An index child: its media type comes from the document itself.
            Some(d) => (d.clone(), Default::default()),
        };
        let bytes = self.layout.read_blob(&digest, MAX_MANIFEST_BYTES)?;
        // The contract: manifests come back verified against the digest they were asked by
        // (a layout file may have been changed or corrupted since it was written).
        let actual = digest.same_algorithm_of(&bytes);
        if actual != digest {
            return Err(ImageError::DigestMismatch {
                expected: digest,
                actual,
            });
        }
        Ok(RawManifest {
            bytes,
            media_type,
            digest,
        })
    }
    /// Blobs are files: they can be opened again.
    fn blob_replay(&self) -> BlobReplay {
        BlobReplay::Reopen
    }
    async fn blob(&self, descriptor: &Descriptor) -> Result<BlobReader, ImageError> {
        let (file, _) = self.layout.open_blob(&descriptor.digest)?;
        Ok(Box::pin(tokio::fs::File::from_std(file)))
    }
}

/// Writes images into an OCI layout; the top-level manifest gets the tag `put_manifest` is
/// given (or an untagged `index.json` entry in `finish` when there is none).
pub struct LayoutSink {
    layout: OciLayout,
    name: String,
    last_manifest: Mutex<Option<(RawManifest, Option<String>)>>,
    // Held for the sink's lifetime: gc waits until the copy has tagged what it wrote.
    _guard: WriterGuard,
}

impl LayoutSink {
    /// `oci:PATH` (the tag comes with `put_manifest`); the layout is created if missing.
    pub fn create(path: &Path) -> Result<LayoutSink, StoreError> {
        let layout = OciLayout::create_or_open(path)?;
        LayoutSink::new(layout, format!("oci:{}", path.display()))
    }

    /// The default store; give `put_manifest` the tag [`crate::store_tag`] makes.
    pub fn to_store() -> Result<LayoutSink, StoreError> {
        let layout = crate::default_store()?;
        let name = format!("store:{}", layout.root().display());
        LayoutSink::new(layout, name)
    }

    pub fn new(layout: OciLayout, name: String) -> Result<LayoutSink, StoreError> {
        let guard = layout.writer_guard()?;
        Ok(LayoutSink {
            layout,
            name,
            last_manifest: Mutex::new(None),
            _guard: guard,
        })
    }

    pub fn layout(&self) -> &OciLayout {
        &self.layout
    }

    /// The manifest most recently written and its tag.
    pub(crate) fn last_manifest(&self) -> Option<(RawManifest, Option<String>)> {
        self.last_manifest.lock().ok().and_then(|l| l.clone())
    }
}

/// Stream `data` into `layout`, verified against `descriptor` (idempotent).
pub(crate) async fn put_layout_blob(
    layout: &OciLayout,
    descriptor: &Descriptor,
    data: BlobReader,
) -> Result<(), ImageError> {
    if layout.has_blob(&descriptor.digest, Some(descriptor.size_u64()?)) {
        return Ok(());
    }
    let l = layout.clone();
    let d = descriptor.clone();
    // Creating the temp file and taking the lock may block briefly (gc running).
    let writer = tokio::task::spawn_blocking(move || l.blob_writer(&d))
        .await
        .map_err(|e| ImageError::io("blob writer", std::io::Error::other(e)))??;
    pump_blob(writer, data).await
}

#[async_trait]
impl ImageSink for LayoutSink {
    fn describe(&self) -> String {
        self.name.clone()
    }
    async fn reuse_blob(
        &self,
        descriptor: &Descriptor,
        _origin: Option<&BlobOrigin>,
    ) -> Result<bool, ImageError> {
        Ok(self
            .layout
            .has_blob(&descriptor.digest, Some(descriptor.size_u64()?)))
    }
    async fn put_blob(&self, descriptor: &Descriptor, data: BlobReader) -> Result<(), ImageError> {
        put_layout_blob(&self.layout, descriptor, data).await
    }
    async fn put_manifest(
        &self,
        manifest: &RawManifest,
        tag: Option<&str>,
    ) -> Result<(), ImageError> {
        let descriptor = manifest.descriptor();
        // The digest is recomputed from the bytes, never taken from the caller.
        self.layout
            .write_blob(&descriptor, manifest.bytes.as_slice())?;
        if let Ok(mut last) = self.last_manifest.lock() {
            *last = Some((manifest.clone(), tag.map(str::to_string)));
        }
        if let Some(t) = tag {
            self.layout.set_tag(Some(t), &descriptor)?;
        }
        Ok(())
    }
    async fn finish(&self) -> Result<(), ImageError> {
        // A destination without a tag still needs its top document in index.json, or gc
        // would collect it: the last manifest written is the top one.
        if let Some((m, None)) = self.last_manifest() {
            self.layout.set_tag(None, &m.descriptor())?;
        }
        Ok(())
    }
}
