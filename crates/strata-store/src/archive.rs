//! `oci-archive:` (a tar of an OCI layout) and `docker-archive:` (the `docker save` format).
//!
//! Reading indexes the tar once (member name → offset and size) and serves blobs by seeking
//! into it; nothing is extracted. Member names are checked before use: absolute names, `..`
//! components and links leaving the archive are refused (RELIABILITY M12, M13). Writing
//! stages an OCI layout in a temp directory beside the target and writes the tar to a temp
//! file renamed into place in `finish`, so a failed copy never leaves an archive behind.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use strata_image::{
    BlobOrigin, BlobReader, BlobReplay, ImageError, ImageSink, ImageSource, RawManifest,
};
use strata_spec::{
    Algorithm, Descriptor, Digest, DigestHasher, ImageManifest, LayerCompression, MAX_CONFIG_BYTES,
    MAX_MANIFEST_BYTES, Manifest, MediaType, Reference,
};
use tokio::io::AsyncReadExt;

use crate::layout::{COPY_CHUNK, fsync_dir, open_regular, resolve_in_index};
use crate::staging::{Staging, staging_for};
use crate::transport::LayoutSink;
use crate::{MAX_INDEX_BYTES, OciLayout, StoreError};

/// Most members an archive may have (a bound on the in-memory index).
const MAX_MEMBERS: usize = 1_000_000;
/// `oci-layout` inside an archive is tiny; anything bigger is not one.
const MAX_SMALL_MEMBER_BYTES: u64 = 64 * 1024;

#[derive(Debug, Clone)]
enum Member {
    File {
        offset: u64,
        size: u64,
    },
    /// A symlink or hard link to another member (name already resolved from the archive root).
    Link {
        target: String,
    },
    /// A link whose target leaves the archive (absolute, or too many `..`).
    OutsideLink,
}

/// Member name → location, for one tar file.
struct TarIndex {
    path: PathBuf,
    members: HashMap<String, Member>,
}

/// Resolve a link target lexically inside the archive: `dir` is the link's directory.
/// `None` when it is absolute or climbs above the archive root.
fn resolve_link(dir: &str, target: &str) -> Option<String> {
    if target.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&str> = dir.split('/').filter(|p| !p.is_empty()).collect();
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            other => parts.push(other),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// Normalise a member name: strip `./`, refuse absolute names and `..`.
fn clean_name(archive: &Path, name: &str) -> Result<String, StoreError> {
    let unsafe_entry = |reason| StoreError::UnsafeEntry {
        path: archive.to_path_buf(),
        entry: name.to_string(),
        reason,
    };
    let p = Path::new(name);
    let mut parts = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(s) => parts.push(s.to_string_lossy().to_string()),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return Err(unsafe_entry("absolute path")),
            Component::ParentDir => return Err(unsafe_entry("'..' component")),
        }
    }
    if parts.is_empty() {
        return Err(unsafe_entry("empty path"));
    }
    Ok(parts.join("/"))
}

impl TarIndex {
    fn build(path: &Path) -> Result<TarIndex, StoreError> {
        let file = File::open(path).map_err(|e| StoreError::io(path, "cannot open archive", e))?;
        let mut archive = tar::Archive::new(file);
        let mut members = HashMap::new();
        let entries = archive
            .entries()
            .map_err(|e| StoreError::io(path, "cannot read archive", e))?;
        for entry in entries {
            let entry = entry.map_err(|e| StoreError::io(path, "cannot read archive entry", e))?;
            let raw = String::from_utf8_lossy(&entry.path_bytes()).to_string();
            let kind = entry.header().entry_type();
            if kind.is_dir() {
                continue;
            }
            // Every member name must be clean, whether or not it is used later: an archive
            // that names anything outside itself is refused as a whole (RELIABILITY M12).
            let name = clean_name(path, &raw)?;
            let member = if kind.is_file() {
                Member::File {
                    offset: entry.raw_file_position(),
                    size: entry.size(),
                }
            } else if kind.is_symlink() || kind.is_hard_link() {
                let target = entry
                    .link_name_bytes()
                    .map(|b| String::from_utf8_lossy(&b).to_string())
                    .unwrap_or_default();
                // A hard link names its target from the archive root, a symlink from its
                // own directory.
                let dir = if kind.is_hard_link() {
                    ""
                } else {
                    name.rsplit_once('/').map(|(d, _)| d).unwrap_or("")
                };
                match resolve_link(dir, &target) {
                    Some(target) => Member::Link { target },
                    None => Member::OutsideLink,
                }
            } else {
                continue;
            };
            if members.len() >= MAX_MEMBERS {
                return Err(StoreError::TooLarge {
                    path: path.to_path_buf(),
                    what: "archive member count".into(),
                    limit: MAX_MEMBERS as u64,
                });
            }
            members.insert(name, member);
        }
        Ok(TarIndex {
            path: path.to_path_buf(),
            members,
        })
    }

    /// Find a regular-file member, following at most one in-archive link.
    fn locate(&self, name: &str) -> Result<(u64, u64), StoreError> {
        let name = clean_name(&self.path, name)?;
        let not_found = || StoreError::NotFound {
            path: self.path.clone(),
            what: format!("archive member {name:?}"),
        };
        match self.members.get(&name).ok_or_else(not_found)? {
            Member::File { offset, size } => Ok((*offset, *size)),
            Member::OutsideLink => Err(StoreError::UnsafeEntry {
                path: self.path.clone(),
                entry: name.clone(),
                reason: "link pointing outside the archive",
            }),
            // At most one in-archive link is followed, and it must end on a regular file
            // (RELIABILITY M13: docker save links duplicate layers).
            Member::Link { target } => match self.members.get(target) {
                Some(Member::File { offset, size }) => Ok((*offset, *size)),
                Some(Member::Link { .. } | Member::OutsideLink) => Err(StoreError::UnsafeEntry {
                    path: self.path.clone(),
                    entry: name.clone(),
                    reason: "link to a link (at most one link is followed)",
                }),
                None => Err(StoreError::NotFound {
                    path: self.path.clone(),
                    what: format!("archive member {target:?} (target of link {name:?})"),
                }),
            },
        }
    }

    fn read_small(&self, name: &str, limit: u64) -> Result<Vec<u8>, StoreError> {
        let (offset, size) = self.locate(name)?;
        if size > limit {
            return Err(StoreError::TooLarge {
                path: self.path.clone(),
                what: format!("archive member {name:?}"),
                limit,
            });
        }
        let mut f = File::open(&self.path)
            .map_err(|e| StoreError::io(&self.path, "cannot open archive", e))?;
        f.seek(SeekFrom::Start(offset))
            .map_err(|e| StoreError::io(&self.path, "cannot seek", e))?;
        let mut out = Vec::with_capacity(size as usize);
        f.take(size)
            .read_to_end(&mut out)
            .map_err(|e| StoreError::io(&self.path, "cannot read", e))?;
        Ok(out)
    }

    fn stream(&self, name: &str) -> Result<BlobReader, StoreError> {
        let (offset, size) = self.locate(name)?;
        let mut f = File::open(&self.path)
            .map_err(|e| StoreError::io(&self.path, "cannot open archive", e))?;
        f.seek(SeekFrom::Start(offset))
            .map_err(|e| StoreError::io(&self.path, "cannot seek", e))?;
        Ok(Box::pin(tokio::fs::File::from_std(f).take(size)))
    }

    /// Read a member (following at most one link) once: its digest and size as stored, its
    /// compression (sniffed from the magic bytes, never from a name or media type) and the
    /// digest of its uncompressed content.
    fn layer_digests(&self, name: &str) -> Result<LayerDigests, StoreError> {
        let (offset, size) = self.locate(name)?;
        let mut f = File::open(&self.path)
            .map_err(|e| StoreError::io(&self.path, "cannot open archive", e))?;
        f.seek(SeekFrom::Start(offset))
            .map_err(|e| StoreError::io(&self.path, "cannot seek", e))?;
        let io = |e| StoreError::io(&self.path, "cannot read archive member", e);
        let (compression, stored, diff_id) =
            decode_and_hash(BufReader::with_capacity(COPY_CHUNK, f.take(size))).map_err(io)?;
        if stored.count != size {
            return Err(StoreError::Invalid {
                path: self.path.clone(),
                reason: format!("archive member {name:?} is truncated"),
            });
        }
        Ok(LayerDigests {
            digest: stored.hasher.finish(),
            size,
            compression,
            diff_id,
        })
    }
}

struct LayerDigests {
    digest: Digest,
    size: u64,
    compression: LayerCompression,
    diff_id: Digest,
}

/// Passes bytes through, hashing and counting them.
struct HashingReader<R> {
    inner: R,
    hasher: DigestHasher,
    count: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// Writes bytes through, hashing them.
struct HashingWriter<W> {
    inner: W,
    hasher: DigestHasher,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn sniff(head: &[u8]) -> LayerCompression {
    if head.starts_with(&[0x1f, 0x8b]) {
        LayerCompression::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        LayerCompression::Zstd
    } else {
        LayerCompression::None
    }
}

/// Decompress `reader` (gzip, zstd or plain, sniffed) into `out`. Returns the compression,
/// the hashing wrapper of the input (drained to its end, so trailing bytes count: RELIABILITY
/// A21), and the digest of the uncompressed bytes.
fn decode_into<R: BufRead>(
    mut reader: R,
    out: &mut dyn Write,
) -> std::io::Result<(LayerCompression, HashingReader<R>, Digest)> {
    let compression = sniff(reader.fill_buf()?);
    let input = HashingReader {
        inner: reader,
        hasher: DigestHasher::new(Algorithm::Sha256),
        count: 0,
    };
    let mut output = HashingWriter {
        inner: out,
        hasher: DigestHasher::new(Algorithm::Sha256),
    };
    let mut input = decompress(input, compression, &mut output)?;
    std::io::copy(&mut input, &mut std::io::sink())?;
    Ok((compression, input, output.hasher.finish()))
}

/// Decompress `input` (as `compression`) into `out`; returns `input`, read up to the end of
/// the compressed stream.
fn decompress<R: Read>(
    input: R,
    compression: LayerCompression,
    out: &mut dyn Write,
) -> std::io::Result<R> {
    match compression {
        LayerCompression::None => {
            let mut input = input;
            std::io::copy(&mut input, out)?;
            Ok(input)
        }
        LayerCompression::Gzip => {
            // Multi-member gzip (pigz) is one stream (RELIABILITY A20).
            let mut decoder = flate2::read::MultiGzDecoder::new(input);
            std::io::copy(&mut decoder, out)?;
            Ok(decoder.into_inner())
        }
        LayerCompression::Zstd => {
            // The default window limit (2^27) stays: a frame asking for more is an error,
            // not an allocation (RELIABILITY A22).
            let mut decoder = zstd::stream::read::Decoder::new(input)?;
            std::io::copy(&mut decoder, out)?;
            Ok(decoder.finish().into_inner())
        }
    }
}

/// Decompress `input` on a helper thread while this thread hands the bytes to `consume`, so
/// inflating and hashing/writing overlap on two cores. Memory: [`OVERLAP_CHUNKS`] chunks,
/// allocated here and circulated (a helper thread that allocated them would keep a malloc
/// arena of its own per layer).
fn decompress_overlapped<R: Read + Send>(
    input: R,
    compression: LayerCompression,
    consume: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
) -> std::io::Result<()> {
    use std::sync::mpsc;
    /// Collects output into chunks and sends each when full; takes emptied ones back.
    struct Chunks {
        buf: Vec<u8>,
        full: mpsc::SyncSender<Vec<u8>>,
        empty: mpsc::Receiver<Vec<u8>>,
    }
    fn stopped() -> std::io::Error {
        std::io::Error::other("the archive writer stopped")
    }
    impl Chunks {
        fn send(&mut self) -> std::io::Result<()> {
            let next = self.empty.recv().map_err(|_| stopped())?;
            let full = std::mem::replace(&mut self.buf, next);
            self.full.send(full).map_err(|_| stopped())
        }
    }
    impl Write for Chunks {
        fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
            let n = data.len().min(COPY_CHUNK - self.buf.len());
            self.buf.extend_from_slice(&data[..n]);
            if self.buf.len() == COPY_CHUNK {
                self.send()?;
            }
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let (full_tx, full_rx) = mpsc::sync_channel::<Vec<u8>>(1);
    let (empty_tx, empty_rx) = mpsc::channel::<Vec<u8>>();
    for _ in 1..OVERLAP_CHUNKS {
        let _ = empty_tx.send(Vec::with_capacity(COPY_CHUNK));
    }
    let first = Vec::with_capacity(COPY_CHUNK);
    std::thread::scope(|scope| {
        let producer = scope.spawn(move || -> std::io::Result<()> {
            let mut chunks = Chunks {
                buf: first,
                full: full_tx,
                empty: empty_rx,
            };
            decompress(input, compression, &mut chunks)?;
            if !chunks.buf.is_empty() {
                let last = std::mem::take(&mut chunks.buf);
                chunks.full.send(last).map_err(|_| stopped())?;
            }
            Ok(())
        });
        let mut consumed = Ok(());
        while let Ok(mut chunk) = full_rx.recv() {
            consumed = consume(&chunk);
            if consumed.is_err() {
                break;
            }
            chunk.clear();
            let _ = empty_tx.send(chunk);
        }
        // A consumer that stopped early must not leave the producer blocked on either channel.
        drop(full_rx);
        drop(empty_tx);
        let produced = producer
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("decompression thread panicked")));
        consumed.and(produced)
    })
}

/// Chunks in circulation between the inflating thread and the archive writer.
const OVERLAP_CHUNKS: usize = 3;

fn decode_and_hash<R: BufRead>(
    reader: R,
) -> std::io::Result<(LayerCompression, HashingReader<R>, Digest)> {
    decode_into(reader, &mut std::io::sink())
}

/// Reads an `oci-archive:` by seeking into the tar (nothing is extracted).
pub struct OciArchiveSource {
    tar: TarIndex,
    top: Descriptor,
}

impl OciArchiveSource {
    /// `oci-archive:PATH[:TAG]`; without a tag the archive must hold exactly one image.
    pub fn open(path: &Path, tag: Option<&str>) -> Result<OciArchiveSource, StoreError> {
        let tar = TarIndex::build(path)?;
        let marker = tar.read_small("oci-layout", MAX_SMALL_MEMBER_BYTES)?;
        let version = serde_json::from_slice::<serde_json::Value>(&marker)
            .ok()
            .and_then(|v| v.get("imageLayoutVersion")?.as_str().map(str::to_string));
        if !version.is_some_and(|v| v.starts_with("1.")) {
            return Err(StoreError::NotALayout {
                path: path.to_path_buf(),
            });
        }
        let bytes = tar.read_small("index.json", MAX_INDEX_BYTES)?;
        let index = match Manifest::parse(&bytes, Some(&MediaType::new(MediaType::OCI_INDEX))) {
            Ok(Manifest::Index(i)) => i,
            Ok(Manifest::Image(_)) => {
                return Err(StoreError::Invalid {
                    path: path.to_path_buf(),
                    reason: "index.json is not an OCI index".into(),
                });
            }
            Err(e) => {
                return Err(StoreError::Document {
                    path: path.to_path_buf(),
                    what: "index.json".into(),
                    source: e,
                });
            }
        };
        let top = resolve_in_index(&index, tag, path)?;
        Ok(OciArchiveSource { tar, top })
    }

    fn blob_name(d: &Digest) -> String {
        format!("blobs/{}/{}", d.algorithm().as_str(), d.encoded())
    }
}

#[async_trait]
impl ImageSource for OciArchiveSource {
    fn describe(&self) -> String {
        format!("oci-archive:{}", self.tar.path.display())
    }
    async fn manifest(&self, digest: Option<&Digest>) -> Result<RawManifest, ImageError> {
        let (d, media_type) = match digest {
            Some(d) => (d.clone(), MediaType::default()),
            None => (self.top.digest.clone(), self.top.media_type.clone()),
        };
        let bytes = self
            .tar
            .read_small(&Self::blob_name(&d), MAX_MANIFEST_BYTES)?;
        let actual = d.same_algorithm_of(&bytes);
        if actual != d {
            return Err(ImageError::DigestMismatch {
                expected: d,
                actual,
            });
        }
        Ok(RawManifest {
            bytes,
            media_type,
            digest: d,
        })
    }
    async fn blob(&self, descriptor: &Descriptor) -> Result<BlobReader, ImageError> {
        Ok(self.tar.stream(&Self::blob_name(&descriptor.digest))?)
    }
    /// Blobs are members of a file: they can be opened again.
    fn blob_replay(&self) -> BlobReplay {
        BlobReplay::Reopen
    }
}

fn tar_header(size: u64, mode: u32, kind: tar::EntryType) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_size(size);
    h.set_mode(mode);
    h.set_entry_type(kind);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h
}

/// Write `dirs` and `members` (archive name, source file) into a tar at `target` (see
/// [`TarWriter`]: a temp file in `staging`, fsynced and renamed into place).
fn write_tar(
    target: &Path,
    staging: &Path,
    dirs: &[String],
    members: &[(String, PathBuf)],
) -> Result<(), StoreError> {
    let mut tar = TarWriter::create(staging, target)?;
    for d in dirs {
        tar.append_dir(d)?;
    }
    for (name, src) in members {
        let (f, size) = open_regular(src)?;
        tar.append_file(name, f, size)?;
    }
    tar.finish()
}

/// Writes an `oci-archive:`: an OCI layout staged beside the target, archived in `finish`.
pub struct OciArchiveSink {
    target: PathBuf,
    inner: LayoutSink,
    staging: Staging,
}

impl OciArchiveSink {
    /// `oci-archive:PATH` (the tag comes with `put_manifest`). The archive appears only when
    /// `finish` succeeds; an existing file there is replaced then. Blobs are staged in a
    /// hidden directory beside `PATH` (see [`OciArchiveSink::create_noted_in`]).
    pub fn create(target: &Path) -> Result<OciArchiveSink, StoreError> {
        OciArchiveSink::create_with(target, None)
    }

    /// As [`OciArchiveSink::create`], and note the staging directory in `store`, whose
    /// [`OciLayout::gc`] removes it should this process be killed before removing it itself.
    pub fn create_noted_in(target: &Path, store: &OciLayout) -> Result<OciArchiveSink, StoreError> {
        OciArchiveSink::create_with(target, Some(&store.staging_records()))
    }

    fn create_with(target: &Path, records: Option<&Path>) -> Result<OciArchiveSink, StoreError> {
        let staging = staging_for(target, records)?;
        // Scratch: read back in `finish` and removed; only the archive is fsynced.
        let layout = OciLayout::create_or_open(&staging.dir.join("layout"))?.into_scratch();
        let inner = LayoutSink::new(layout, format!("oci-archive:{}", target.display()))?;
        Ok(OciArchiveSink {
            target: target.to_path_buf(),
            inner,
            staging,
        })
    }
}

#[async_trait]
impl ImageSink for OciArchiveSink {
    fn describe(&self) -> String {
        format!("oci-archive:{}", self.target.display())
    }
    async fn reuse_blob(&self, d: &Descriptor, o: Option<&BlobOrigin>) -> Result<bool, ImageError> {
        self.inner.reuse_blob(d, o).await
    }
    async fn put_blob(&self, d: &Descriptor, data: BlobReader) -> Result<(), ImageError> {
        self.inner.put_blob(d, data).await
    }
    async fn put_manifest(&self, m: &RawManifest, tag: Option<&str>) -> Result<(), ImageError> {
        self.inner.put_manifest(m, tag).await
    }
    async fn abandon(&self) {
        self.inner.abandon().await;
        self.staging.remove_now();
    }
    async fn finish(&self) -> Result<(), ImageError> {
        self.inner.finish().await?;
        let root = self.inner.layout().root().to_path_buf();
        let mut members = vec![
            ("oci-layout".to_string(), root.join("oci-layout")),
            ("index.json".to_string(), root.join("index.json")),
        ];
        let mut dirs = vec!["blobs".to_string()];
        let blobs = root.join("blobs");
        let mut algorithms: Vec<_> = fs::read_dir(&blobs)
            .map_err(|e| StoreError::io(&blobs, "cannot list staged blobs", e))?
            .flatten()
            .collect();
        algorithms.sort_by_key(|e| e.file_name());
        for alg in algorithms {
            let alg_name = alg.file_name().to_string_lossy().to_string();
            dirs.push(format!("blobs/{alg_name}"));
            let mut files: Vec<_> = fs::read_dir(alg.path())
                .map_err(|e| StoreError::io(alg.path(), "cannot list staged blobs", e))?
                .flatten()
                .collect();
            files.sort_by_key(|e| e.file_name());
            for f in files {
                members.push((
                    format!("blobs/{alg_name}/{}", f.file_name().to_string_lossy()),
                    f.path(),
                ));
            }
        }
        write_tar(&self.target, &self.staging.dir, &dirs, &members)?;
        Ok(())
    }
}

/// One image of a `docker save` archive's `manifest.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct DockerArchiveEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

/// The `rootfs.diff_ids` of a config, read leniently (Docker configs carry fields the OCI
/// model does not know).
fn config_diff_ids(config: &[u8]) -> Option<Vec<String>> {
    let v: serde_json::Value = serde_json::from_slice(config).ok()?;
    v.get("rootfs")?
        .get("diff_ids")?
        .as_array()?
        .iter()
        .map(|d| d.as_str().map(str::to_string))
        .collect()
}

/// Reads a `docker-archive:` (the `docker save` format) by seeking into the tar.
///
/// The image is presented as an OCI image manifest built by strata: config media type
/// `application/vnd.oci.image.config.v1+json` (the config bytes are unchanged, so the image
/// ID stays the same), layers with the digest strata computed over the member and a media
/// type saying what the member really is: `application/vnd.oci.image.layer.v1.tar` for the
/// usual uncompressed layer tars, `+gzip`/`+zstd` when compressed. (skopeo presents
/// uncompressed layers as `…rootfs.diff.tar.gzip`; strata does not label a plain tar as
/// gzip.) Each layer's uncompressed digest is checked against the config's `diff_ids`.
pub struct DockerArchiveSource {
    tar: TarIndex,
    manifest: RawManifest,
    blobs: HashMap<Digest, String>,
}

/// How docker writes a name in `RepoTags`: `busybox:latest`, `localhost/app:v1`.
fn familiar(r: &Reference) -> String {
    let name = r.name();
    let short = name
        .strip_prefix("docker.io/library/")
        .or_else(|| name.strip_prefix("docker.io/"))
        .unwrap_or(&name)
        .to_string();
    match r.tag() {
        Some(t) => format!("{short}:{t}"),
        None => short,
    }
}

impl DockerArchiveSource {
    /// `docker-archive:PATH[:REF]`: the image whose `RepoTags` holds `reference`, or without
    /// one the only image. Reads every layer once to compute its digests.
    pub fn open(
        path: &Path,
        reference: Option<&Reference>,
    ) -> Result<DockerArchiveSource, StoreError> {
        let tar = TarIndex::build(path)?;
        let bytes = tar.read_small("manifest.json", MAX_MANIFEST_BYTES)?;
        let entries: Vec<DockerArchiveEntry> =
            serde_json::from_slice(&bytes).map_err(|e| StoreError::Invalid {
                path: path.to_path_buf(),
                reason: format!("manifest.json: {e}"),
            })?;
        let entry = match reference {
            Some(r) => entries.iter().find(|e| {
                e.repo_tags.iter().flatten().any(|t| {
                    t.parse::<Reference>()
                        .is_ok_and(|p| p.to_string() == r.to_string())
                })
            }),
            None if entries.len() == 1 => entries.first(),
            None if entries.is_empty() => None,
            None => {
                let tags: Vec<String> = entries
                    .iter()
                    .flat_map(|e| e.repo_tags.clone().unwrap_or_default())
                    .collect();
                return Err(StoreError::Ambiguous {
                    path: path.to_path_buf(),
                    tags: tags.join(", "),
                });
            }
        }
        .ok_or_else(|| StoreError::NotFound {
            path: path.to_path_buf(),
            what: match reference {
                Some(r) => format!("image {r}"),
                None => "any image".into(),
            },
        })?
        .clone();
        let mut blobs = HashMap::new();
        // Names from manifest.json go through the same checks as member names: relative,
        // no `..` (RELIABILITY M12); `locate` follows at most one in-archive link (M13).
        let config_bytes = tar.read_small(&entry.config, MAX_CONFIG_BYTES)?;
        let config = Descriptor::of_bytes(MediaType::OCI_CONFIG, &config_bytes);
        blobs.insert(config.digest.clone(), entry.config.clone());
        let diff_ids = config_diff_ids(&config_bytes).unwrap_or_default();
        if diff_ids.len() != entry.layers.len() {
            return Err(StoreError::Invalid {
                path: path.to_path_buf(),
                reason: format!(
                    "config {} lists {} diff_ids for {} layers",
                    entry.config,
                    diff_ids.len(),
                    entry.layers.len()
                ),
            });
        }
        let mut manifest = ImageManifest::new(MediaType::OCI_MANIFEST, config);
        for (layer, declared) in entry.layers.iter().zip(&diff_ids) {
            let digests = tar.layer_digests(layer)?;
            if declared != &digests.diff_id.to_string() {
                return Err(StoreError::Invalid {
                    path: path.to_path_buf(),
                    reason: format!(
                        "layer {layer:?}: the config says diff_id {declared}, its content is {}",
                        digests.diff_id
                    ),
                });
            }
            let media_type = match digests.compression {
                LayerCompression::None => MediaType::OCI_LAYER,
                LayerCompression::Gzip => MediaType::OCI_LAYER_GZIP,
                LayerCompression::Zstd => MediaType::OCI_LAYER_ZSTD,
            };
            blobs.insert(digests.digest.clone(), layer.clone());
            manifest
                .layers
                .push(Descriptor::new(media_type, digests.digest, digests.size));
        }
        let manifest =
            RawManifest::new(manifest.to_bytes(), MediaType::new(MediaType::OCI_MANIFEST));
        Ok(DockerArchiveSource {
            tar,
            manifest,
            blobs,
        })
    }
}

#[async_trait]
impl ImageSource for DockerArchiveSource {
    fn describe(&self) -> String {
        format!("docker-archive:{}", self.tar.path.display())
    }
    async fn manifest(&self, digest: Option<&Digest>) -> Result<RawManifest, ImageError> {
        match digest {
            None => Ok(self.manifest.clone()),
            Some(d) if *d == self.manifest.digest => Ok(self.manifest.clone()),
            Some(d) => Err(ImageError::NotFound {
                what: format!("manifest {d} in {}", self.describe()),
            }),
        }
    }
    async fn blob(&self, descriptor: &Descriptor) -> Result<BlobReader, ImageError> {
        let name = self
            .blobs
            .get(&descriptor.digest)
            .ok_or_else(|| ImageError::NotFound {
                what: format!("blob {} in {}", descriptor.digest, self.describe()),
            })?;
        Ok(self.tar.stream(name)?)
    }
    /// Blobs are members of a file: they can be opened again.
    fn blob_replay(&self) -> BlobReplay {
        BlobReplay::Reopen
    }
}

/// Writes a `docker-archive:` that `docker load` and `podman load` read: one image,
/// `manifest.json` (`Config`, `RepoTags`, `Layers`), the config as `<hex>.json` and every
/// layer *uncompressed* as `<diff_id hex>.tar` (the copy hands over compressed blobs; they
/// are decompressed in `finish` and checked against the config's `diff_ids`).
pub struct DockerArchiveSink {
    target: PathBuf,
    reference: Option<Reference>,
    inner: LayoutSink,
    staging: Staging,
    manifest: Mutex<Option<ImageManifest>>,
}

impl DockerArchiveSink {
    /// `docker-archive:PATH[:REF]`; `REF` becomes the image's `RepoTags` entry. Blobs are
    /// staged in a hidden directory beside `PATH`.
    pub fn create(
        target: &Path,
        reference: Option<&Reference>,
    ) -> Result<DockerArchiveSink, StoreError> {
        DockerArchiveSink::create_with(target, reference, None)
    }

    /// As [`DockerArchiveSink::create`], and note the staging directory in `store` (see
    /// [`OciArchiveSink::create_noted_in`]).
    pub fn create_noted_in(
        target: &Path,
        reference: Option<&Reference>,
        store: &OciLayout,
    ) -> Result<DockerArchiveSink, StoreError> {
        DockerArchiveSink::create_with(target, reference, Some(&store.staging_records()))
    }

    fn create_with(
        target: &Path,
        reference: Option<&Reference>,
        records: Option<&Path>,
    ) -> Result<DockerArchiveSink, StoreError> {
        let staging = staging_for(target, records)?;
        // Scratch: read back in `finish` and removed; only the archive is fsynced.
        let layout = OciLayout::create_or_open(&staging.dir.join("layout"))?.into_scratch();
        let inner = LayoutSink::new(layout, format!("docker-archive:{}", target.display()))?;
        Ok(DockerArchiveSink {
            target: target.to_path_buf(),
            reference: reference.cloned(),
            inner,
            staging,
            manifest: Mutex::new(None),
        })
    }

    /// Append `layer`, uncompressed, to `tar` as `name`, checking that its content hashes to
    /// `diff_id`.
    fn append_layer(
        &self,
        tar: &mut TarWriter,
        name: &str,
        layer: &Descriptor,
        diff_id: &Digest,
    ) -> Result<(), ImageError> {
        let layout = self.inner.layout();
        let (file, _) = layout.open_blob(&layer.digest)?;
        let blob_path = layout.blob_path(&layer.digest);
        let mut reader = BufReader::with_capacity(COPY_CHUNK, file);
        let head = reader
            .fill_buf()
            .map_err(|e| StoreError::io(&blob_path, "cannot read", e))?;
        let compression = sniff(head);
        let mut hasher = DigestHasher::new(diff_id.algorithm());
        tar.append_streamed(name, &mut |out| {
            decompress_overlapped(&mut reader, compression, &mut |chunk| {
                hasher.update(chunk);
                out.write_all(chunk)
            })
        })
        .map_err(|e| StoreError::io(&blob_path, "cannot decompress layer into the archive", e))?;
        let actual = hasher.finish();
        if &actual != diff_id {
            return Err(ImageError::DigestMismatch {
                expected: diff_id.clone(),
                actual,
            });
        }
        Ok(())
    }
}

/// A tar written straight to a temp file beside the target: GNU headers (long names in a
/// `././@LongLink` entry), owners 0:0, mtime 0. A member whose size is only known once
/// written gets a placeholder header patched in place afterwards, so nothing is staged.
/// `finish` writes the end blocks, fsyncs and renames the file over the target.
struct TarWriter {
    out: BufWriter<File>,
    /// Bytes written so far (the next header's offset).
    at: u64,
    temp: PathBuf,
    target: PathBuf,
}

impl TarWriter {
    fn create(staging: &Path, target: &Path) -> Result<TarWriter, StoreError> {
        let (file, temp) = crate::layout::create_temp(staging)?;
        Ok(TarWriter {
            out: BufWriter::with_capacity(COPY_CHUNK, file),
            at: 0,
            temp,
            target: target.to_path_buf(),
        })
    }

    fn io(&self, e: std::io::Error) -> StoreError {
        StoreError::io(&self.target, "cannot write archive", e)
    }

    fn pad(&mut self, size: u64) -> std::io::Result<()> {
        let rest = (512 - size % 512) % 512;
        self.out.write_all(&[0u8; 512][..rest as usize])?;
        self.at += size + rest;
        Ok(())
    }

    /// Write the header of `name`; returns it and its offset (for patching the size).
    fn header(
        &mut self,
        name: &str,
        size: u64,
        mode: u32,
        kind: tar::EntryType,
    ) -> std::io::Result<(tar::Header, u64)> {
        let mut h = tar_header(size, mode, kind);
        let field = &mut h.as_old_mut().name;
        if name.len() > field.len() {
            // GNU long name: an `L` entry holding the name (NUL-terminated), then the
            // header with the name cut to the field.
            let mut long = tar_header(name.len() as u64 + 1, 0o644, tar::EntryType::GNULongName);
            long.set_path("././@LongLink")?;
            long.set_cksum();
            self.out.write_all(long.as_bytes())?;
            self.at += 512;
            self.out.write_all(name.as_bytes())?;
            self.out.write_all(&[0])?;
            self.pad(name.len() as u64 + 1)?;
            let n = field.len();
            field.copy_from_slice(&name.as_bytes()[..n]);
        } else {
            h.set_path(name)?;
        }
        h.set_cksum();
        let at = self.at;
        self.out.write_all(h.as_bytes())?;
        self.at += 512;
        Ok((h, at))
    }

    fn append_dir(&mut self, name: &str) -> Result<(), StoreError> {
        self.header(name, 0, 0o755, tar::EntryType::Directory)
            .map(|_| ())
            .map_err(|e| self.io(e))
    }

    fn append_bytes(&mut self, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
        self.append_file(name, bytes, bytes.len() as u64)
    }

    /// A member of `size` bytes read from `data`, which must hold exactly that many.
    fn append_file(&mut self, name: &str, data: impl Read, size: u64) -> Result<(), StoreError> {
        let result = (|| {
            self.header(name, size, 0o644, tar::EntryType::Regular)?;
            let copied = std::io::copy(&mut data.take(size), &mut self.out)?;
            if copied != size {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("{name}: {copied} bytes where {size} were expected"),
                ));
            }
            self.pad(size)
        })();
        result.map_err(|e| self.io(e))
    }

    /// A member whose bytes `write` produces: a placeholder header, the bytes, then the
    /// header rewritten with the size they came to.
    fn append_streamed(
        &mut self,
        name: &str,
        write: &mut dyn FnMut(&mut dyn Write) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        let (mut header, header_at) = self.header(name, 0, 0o644, tar::EntryType::Regular)?;
        let mut counted = Counted {
            inner: &mut self.out,
            count: 0,
        };
        write(&mut counted)?;
        let size = counted.count;
        self.pad(size)?;
        self.out.flush()?;
        header.set_size(size);
        header.set_cksum();
        self.out
            .get_ref()
            .write_all_at(header.as_bytes(), header_at)
    }

    /// The end-of-archive blocks, fsync, rename over the target, fsync its directory.
    fn finish(mut self) -> Result<(), StoreError> {
        self.out.write_all(&[0u8; 1024]).map_err(|e| self.io(e))?;
        let file = self
            .out
            .into_inner()
            .map_err(|e| StoreError::io(&self.target, "cannot write archive", e.into_error()))?;
        file.sync_all()
            .map_err(|e| StoreError::io(&self.target, "cannot write archive", e))?;
        drop(file);
        fs::rename(&self.temp, &self.target)
            .map_err(|e| StoreError::io(&self.target, "cannot rename archive into place", e))?;
        if let Some(parent) = self.target.parent().filter(|p| !p.as_os_str().is_empty()) {
            fsync_dir(parent)?;
        }
        Ok(())
    }
}

/// Counts bytes written through.
struct Counted<'a> {
    inner: &'a mut dyn Write,
    count: u64,
}

impl Write for Counted<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[async_trait]
impl ImageSink for DockerArchiveSink {
    fn describe(&self) -> String {
        format!("docker-archive:{}", self.target.display())
    }
    fn supports_index(&self) -> bool {
        false
    }
    async fn reuse_blob(&self, d: &Descriptor, o: Option<&BlobOrigin>) -> Result<bool, ImageError> {
        self.inner.reuse_blob(d, o).await
    }
    async fn put_blob(&self, d: &Descriptor, data: BlobReader) -> Result<(), ImageError> {
        self.inner.put_blob(d, data).await
    }
    async fn abandon(&self) {
        self.inner.abandon().await;
        self.staging.remove_now();
    }
    async fn put_manifest(&self, m: &RawManifest, _tag: Option<&str>) -> Result<(), ImageError> {
        match m.parse()? {
            Manifest::Image(image) => {
                if let Ok(mut slot) = self.manifest.lock() {
                    *slot = Some(image);
                }
                Ok(())
            }
            Manifest::Index(_) => Err(ImageError::Unsupported(format!(
                "{} holds a single image, not an index (choose one platform)",
                self.describe()
            ))),
        }
    }
    async fn finish(&self) -> Result<(), ImageError> {
        let manifest = self
            .manifest
            .lock()
            .ok()
            .and_then(|m| m.clone())
            .ok_or_else(|| {
                ImageError::Unsupported(format!("{}: no image was written", self.describe()))
            })?;
        let layout = self.inner.layout();
        let config_bytes = layout.read_blob(&manifest.config.digest, MAX_CONFIG_BYTES)?;
        let diff_ids = config_diff_ids(&config_bytes).unwrap_or_default();
        if diff_ids.len() != manifest.layers.len() {
            return Err(ImageError::Unsupported(format!(
                "{}: config {} lists {} diff_ids for {} layers",
                self.describe(),
                manifest.config.digest,
                diff_ids.len(),
                manifest.layers.len()
            )));
        }
        let diff_ids: Vec<Digest> = diff_ids
            .iter()
            .map(|d| d.parse().map_err(ImageError::Spec))
            .collect::<Result<_, _>>()?;
        // Written straight into a temp file beside the target (nothing else is staged): the
        // config, each layer decompressed once, manifest.json; renamed into place at the end.
        let mut tar = TarWriter::create(&self.staging.dir, &self.target)?;
        let config_name = format!("{}.json", manifest.config.digest.encoded());
        tar.append_bytes(&config_name, &config_bytes)?;
        let mut layer_names = Vec::new();
        for (layer, diff_id) in manifest.layers.iter().zip(&diff_ids) {
            let name = format!("{}.tar", diff_id.encoded());
            if !layer_names.contains(&name) {
                self.append_layer(&mut tar, &name, layer, diff_id)?;
            }
            layer_names.push(name);
        }
        let entry = DockerArchiveEntry {
            config: config_name,
            repo_tags: Some(self.reference.iter().map(familiar).collect()),
            layers: layer_names,
        };
        let bytes = serde_json::to_vec(&vec![entry])
            .map_err(|e| ImageError::io("manifest.json", e.into()))?;
        tar.append_bytes("manifest.json", &bytes)?;
        tar.finish()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streamed_members_get_their_size_patched_in_and_long_names_survive() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("t.tar");
        // A source shorter than announced is an error naming the member (the temp file is
        // then the staging directory's to remove).
        let elsewhere = tempfile::tempdir().unwrap();
        let mut bad = TarWriter::create(elsewhere.path(), &target).unwrap();
        let err = bad.append_file("short", &b"abc"[..], 4).unwrap_err();
        let cause = std::error::Error::source(&err).map(|c| c.to_string());
        assert_eq!(
            cause.as_deref(),
            Some("short: 3 bytes where 4 were expected"),
            "{err}"
        );
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
        // sha512 names do not fit the 100-byte field.
        let long = format!("{}.tar", "ab".repeat(64));
        let long_dir = format!("blobs/{}/", "c".repeat(120));
        let mut tar = TarWriter::create(dir.path(), &target).unwrap();
        tar.append_dir("blobs/").unwrap();
        tar.append_dir(&long_dir).unwrap();
        tar.append_bytes("a.json", b"{}").unwrap();
        tar.append_streamed("b.tar", &mut |out| out.write_all(&big))
            .unwrap();
        tar.append_streamed(&long, &mut |out| out.write_all(b"long"))
            .unwrap();
        tar.append_streamed("empty.tar", &mut |_| Ok(())).unwrap();
        tar.append_bytes("manifest.json", b"[]").unwrap();
        tar.finish().unwrap();
        // The tar crate checks every header checksum while reading.
        let mut archive = tar::Archive::new(File::open(&target).unwrap());
        let mut seen = Vec::new();
        for e in archive.entries().unwrap() {
            let mut e = e.unwrap();
            let mut v = Vec::new();
            e.read_to_end(&mut v).unwrap();
            assert_eq!(e.header().size().unwrap(), v.len() as u64);
            seen.push((e.path().unwrap().display().to_string(), v));
        }
        let want: Vec<(String, Vec<u8>)> = vec![
            ("blobs/".into(), Vec::new()),
            (long_dir.clone(), Vec::new()),
            ("a.json".into(), b"{}".to_vec()),
            ("b.tar".into(), big),
            (long.clone(), b"long".to_vec()),
            ("empty.tar".into(), Vec::new()),
            ("manifest.json".into(), b"[]".to_vec()),
        ];
        assert_eq!(seen, want);
        let listed = std::process::Command::new("tar")
            .arg("-tf")
            .arg(&target)
            .output()
            .unwrap();
        assert!(listed.status.success(), "GNU tar reads it");
        assert_eq!(
            String::from_utf8_lossy(&listed.stdout),
            format!("blobs/\n{long_dir}\na.json\nb.tar\n{long}\nempty.tar\nmanifest.json\n")
        );
        // The temp file was renamed into place: the archive is all that is left.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn overlapped_decompression_delivers_everything_and_stops_cleanly() {
        use flate2::write::GzEncoder;
        let data: Vec<u8> = (0..5_000_000u32).map(|i| (i % 249) as u8).collect();
        let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&data).unwrap();
        let gz = gz.finish().unwrap();
        let mut got = Vec::new();
        decompress_overlapped(&gz[..], LayerCompression::Gzip, &mut |c| {
            got.extend_from_slice(c);
            Ok(())
        })
        .unwrap();
        assert_eq!(got, data);
        // The writer failing after one chunk ends the inflating thread too (no hang).
        let mut calls = 0;
        let err = decompress_overlapped(&gz[..], LayerCompression::Gzip, &mut |_| {
            calls += 1;
            Err(std::io::Error::other("disk full"))
        })
        .unwrap_err();
        assert_eq!((calls, err.to_string().as_str()), (1, "disk full"));
        // A corrupt stream is the inflating thread's error.
        let mut bad = gz.clone();
        bad[gz.len() / 2] ^= 0xff;
        bad[gz.len() / 2 + 1] ^= 0xff;
        assert!(decompress_overlapped(&bad[..], LayerCompression::Gzip, &mut |_| Ok(())).is_err());
    }

    #[tokio::test]
    async fn docker_archive_layer_not_matching_its_diff_id_fails_and_leaves_nothing() {
        use flate2::write::GzEncoder;
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("save.tar");
        let sink = DockerArchiveSink::create(&target, None).unwrap();
        let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&vec![7u8; 100_000]).unwrap();
        let layer_bytes = gz.finish().unwrap();
        let layer = Descriptor::of_bytes(MediaType::OCI_LAYER_GZIP, &layer_bytes);
        let lie = format!("sha256:{}", "ab".repeat(32));
        let config_bytes = format!(
            r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{lie}"]}}}}"#
        )
        .into_bytes();
        let config = Descriptor::of_bytes(MediaType::OCI_CONFIG, &config_bytes);
        for (d, b) in [(&layer, layer_bytes), (&config, config_bytes)] {
            sink.put_blob(d, Box::pin(std::io::Cursor::new(b)))
                .await
                .unwrap();
        }
        let mut manifest = ImageManifest::new(MediaType::OCI_MANIFEST, config);
        manifest.layers.push(layer);
        let raw = RawManifest::new(manifest.to_bytes(), MediaType::new(MediaType::OCI_MANIFEST));
        sink.put_manifest(&raw, None).await.unwrap();
        match sink.finish().await.unwrap_err() {
            ImageError::DigestMismatch { expected, .. } => assert_eq!(expected.to_string(), lie),
            other => panic!("{other}"),
        }
        drop(sink);
        let left: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert!(left.is_empty(), "no archive, no staging: {left:?}");
    }

    #[test]
    fn clean_names() {
        let p = Path::new("a.tar");
        assert_eq!(clean_name(p, "./blobs/sha256/x").unwrap(), "blobs/sha256/x");
        for bad in ["/etc/passwd", "../../etc/passwd", "a/../../b", "", "."] {
            assert!(clean_name(p, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn open_regular_refuses_symlinks() {
        let d = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/etc/hostname", d.path().join("l")).unwrap();
        assert!(matches!(
            open_regular(&d.path().join("l")),
            Err(StoreError::NotRegular { .. })
        ));
    }

    #[test]
    fn link_targets_resolve_inside_the_archive() {
        assert_eq!(
            resolve_link("abc", "../def/layer.tar").as_deref(),
            Some("def/layer.tar")
        );
        assert_eq!(resolve_link("", "x.tar").as_deref(), Some("x.tar"));
        assert_eq!(resolve_link("a/b", "./../c").as_deref(), Some("a/c"));
        assert_eq!(resolve_link("abc", "../../etc/passwd"), None);
        assert_eq!(resolve_link("abc", "/etc/passwd"), None);
        assert_eq!(resolve_link("abc", ".."), None);
    }
}
