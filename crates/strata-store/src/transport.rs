//! `oci:` layouts (and the default store) as image sources and sinks, and the async → sync
//! bridge every sink of this crate writes blobs through.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use strata_image::{
    BlobOrigin, BlobReader, BlobReplay, ImageError, ImageSink, ImageSource, RawManifest,
};
use strata_spec::{Descriptor, Digest, DigestHasher, MAX_MANIFEST_BYTES, Reference};
use tokio::io::AsyncReadExt;
use tokio::sync::{Notify, mpsc};

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

/// How long [`InFlight::abandon`] waits for blob writers to end. A writer ends within one
/// chunk write once its reader is gone; this only bounds a disk that stopped answering.
const ABANDON_WAIT: Duration = Duration::from_secs(30);

/// The blob writes a sink has running. A write's blocking thread outlives the future that
/// started it when that future is dropped (a failed or interrupted copy drops the other
/// blobs' transfers): the thread then sees its channel close and removes its temp file, but
/// only some time later. [`InFlight::abandon`] waits for exactly that, so a copy that fails or
/// is interrupted exits with every temp file gone.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    state: Mutex<InFlightState>,
    ended: Notify,
}

#[derive(Debug, Default)]
struct InFlightState {
    running: usize,
    abandoned: bool,
}

/// One running blob write; dropped after its writer (see [`Tracked`]).
#[derive(Debug)]
pub(crate) struct WriteToken {
    flight: Arc<InFlight>,
}

impl Drop for WriteToken {
    fn drop(&mut self) {
        if let Ok(mut s) = self.flight.state.lock() {
            s.running = s.running.saturating_sub(1);
        }
        self.flight.ended.notify_waiters();
    }
}

/// A blob writer and its token: fields drop in order, so the temp file is removed before the
/// write counts as ended.
pub(crate) struct Tracked {
    pub(crate) writer: BlobWriter,
    _token: WriteToken,
}

impl InFlight {
    /// Count a new blob write; refused once the sink was abandoned.
    pub(crate) fn start(self: &Arc<Self>, what: &str) -> Result<WriteToken, ImageError> {
        let mut s = self
            .state
            .lock()
            .map_err(|_| ImageError::io(what, std::io::Error::other("poisoned lock")))?;
        if s.abandoned {
            return Err(ImageError::io(
                what,
                std::io::Error::new(
                    std::io::ErrorKind::Interrupted,
                    "the copy was abandoned; no new blobs are written",
                ),
            ));
        }
        s.running += 1;
        Ok(WriteToken {
            flight: Arc::clone(self),
        })
    }

    fn running(&self) -> usize {
        self.state.lock().map(|s| s.running).unwrap_or(0)
    }

    /// Refuse new writes and wait (at most [`ABANDON_WAIT`]) until every running one has
    /// ended and removed its temp file.
    pub(crate) async fn abandon(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.abandoned = true;
        }
        let deadline = tokio::time::Instant::now() + ABANDON_WAIT;
        loop {
            let ended = self.ended.notified();
            tokio::pin!(ended);
            // Registered before the check, so an end between check and wait is not missed.
            ended.as_mut().enable();
            if self.running() == 0 {
                return;
            }
            if tokio::time::timeout_at(deadline, ended).await.is_err() {
                tracing::warn!(
                    running = self.running(),
                    "blob writers still running after {ABANDON_WAIT:?}"
                );
                return;
            }
        }
    }
}

impl Tracked {
    pub(crate) fn new(writer: BlobWriter, token: WriteToken) -> Tracked {
        Tracked {
            writer,
            _token: token,
        }
    }
}

/// Feed an async stream into a [`BlobWriter`] running on a blocking thread (std::fs writes
/// and fsync off the async workers, overlapped with reading). The reader hashes each read
/// at once, while the bytes are still in its core's cache (3-7 % faster than hashing on the
/// writer thread, which then mostly waits for the disk); the writer verifies size (aborting at
/// size+1) and, with the reader's hasher, the digest, and commits. On any failure,
/// including the stream failing, the temp file is gone before this returns. Bytes are read
/// straight into aligned buffers the writer can hand to `O_DIRECT` writes as they are.
pub(crate) async fn pump_blob(tracked: Tracked, mut data: BlobReader) -> Result<(), ImageError> {
    let (tx, mut rx) = mpsc::channel::<Chunk>(PIPE_DEPTH);
    let (back_tx, mut back_rx) = mpsc::channel::<AlignedBuf>(PIPE_DEPTH + 1);
    let mut tracked = tracked;
    let mut hasher = tracked.writer.detach_hasher();
    let worker = tokio::task::spawn_blocking(move || -> Result<(), StoreError> {
        // Moved in whole (a closure would otherwise capture only the fields it names, and
        // the token would stay behind in the dropped future): `tracked` drops writer first,
        // token second, so the write counts as running until its temp file is gone, on every
        // path out of this closure.
        let mut tracked = tracked;
        while let Some(chunk) = rx.blocking_recv() {
            match chunk {
                Chunk::Data(buf) => {
                    tracked.writer.write(buf.filled())?;
                    // The reader may be gone already; the buffer is then simply freed.
                    let _ = back_tx.try_send(buf);
                }
                Chunk::End(hasher) => {
                    tracked.writer.attach_hasher(*hasher);
                    return tracked.writer.commit();
                }
            }
        }
        // The reader gave up: dropping the writer removes the temp file.
        Err(StoreError::io(
            tracked.writer.destination().to_path_buf(),
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
    in_flight: Arc<InFlight>,
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
            in_flight: Arc::default(),
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

/// Stream `data` into `layout`, verified against `descriptor` (idempotent); the write is
/// counted in `in_flight` from before its temp file exists until after it is gone.
async fn put_layout_blob(
    layout: &OciLayout,
    in_flight: &Arc<InFlight>,
    descriptor: &Descriptor,
    data: BlobReader,
) -> Result<(), ImageError> {
    if layout.has_blob(&descriptor.digest, Some(descriptor.size_u64()?)) {
        return Ok(());
    }
    let token = in_flight.start(&format!("writing blob {}", descriptor.digest))?;
    let l = layout.clone();
    let d = descriptor.clone();
    // Creating the temp file and taking the lock may block briefly (gc running). Should this
    // future be dropped meanwhile, the writer and its token are dropped with the task's output.
    let tracked =
        tokio::task::spawn_blocking(move || l.blob_writer(&d).map(|w| Tracked::new(w, token)))
            .await
            .map_err(|e| ImageError::io("blob writer", std::io::Error::other(e)))??;
    pump_blob(tracked, data).await
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
        put_layout_blob(&self.layout, &self.in_flight, descriptor, data).await
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
    async fn abandon(&self) {
        self.in_flight.abandon().await;
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
