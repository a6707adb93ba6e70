//! `oci-archive:` (a tar of an OCI layout) and `docker-archive:` (the `docker save` format).
//!
//! Reading indexes the tar once (member name → offset and size) and serves blobs by seeking
//! into it; nothing is extracted. Member names are checked before use: absolute names, `..`
//! components and links leaving the archive are refused (RELIABILITY M12, M13). Writing
//! stages an OCI layout in a temp directory beside the target and writes the tar to a temp
//! file renamed into place in `finish`, so a failed copy never leaves an archive behind.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use strata_image::{BlobOrigin, BlobReader, ImageError, ImageSink, ImageSource, RawManifest};
use strata_spec::{
    Algorithm, Descriptor, Digest, DigestHasher, ImageIndex, ImageManifest, MAX_CONFIG_BYTES,
    MAX_MANIFEST_BYTES, Manifest, MediaType, Reference,
};
use tokio::io::AsyncReadExt;

use crate::transport::LayoutSink;
use crate::{MAX_INDEX_BYTES, OciLayout, StoreError};

/// Most members an archive may have (a bound on the in-memory index).
const MAX_MEMBERS: usize = 1_000_000;
const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";

#[derive(Debug, Clone)]
enum Member {
    File { offset: u64, size: u64 },
    Link { target: String },
}

/// Member name → location, for one tar file.
struct TarIndex {
    path: PathBuf,
    members: HashMap<String, Member>,
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
            // Names that cannot be clean are skipped unless something asks for them, and
            // then they are not found: the archive's own index must not point outside.
            let Ok(name) = clean_name(path, &raw) else {
                continue;
            };
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
                // A hard link names its target from the archive root, a symlink from its dir.
                let target = if kind.is_hard_link() {
                    target
                } else {
                    match name.rsplit_once('/') {
                        Some((dir, _)) if !target.starts_with('/') => format!("{dir}/{target}"),
                        _ => target,
                    }
                };
                Member::Link { target }
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
            Member::Link { target } => {
                let target = clean_name(&self.path, target)?;
                match self.members.get(&target) {
                    Some(Member::File { offset, size }) => Ok((*offset, *size)),
                    Some(Member::Link { .. }) => Err(StoreError::UnsafeEntry {
                        path: self.path.clone(),
                        entry: name.clone(),
                        reason: "link chain (at most one link is followed)",
                    }),
                    None => Err(not_found()),
                }
            }
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

    fn hash(&self, name: &str) -> Result<(Digest, u64, [u8; 4]), StoreError> {
        let (offset, size) = self.locate(name)?;
        let mut f = File::open(&self.path)
            .map_err(|e| StoreError::io(&self.path, "cannot open archive", e))?;
        f.seek(SeekFrom::Start(offset))
            .map_err(|e| StoreError::io(&self.path, "cannot seek", e))?;
        let mut h = DigestHasher::new(Algorithm::Sha256);
        let mut magic = [0u8; 4];
        let mut buf = vec![0u8; 1024 * 1024];
        let mut left = size;
        let mut first = true;
        while left > 0 {
            let want = left.min(buf.len() as u64) as usize;
            let n = f
                .read(&mut buf[..want])
                .map_err(|e| StoreError::io(&self.path, "cannot read", e))?;
            if n == 0 {
                return Err(StoreError::Invalid {
                    path: self.path.clone(),
                    reason: format!("archive member {name:?} is truncated"),
                });
            }
            if first {
                let k = n.min(4);
                magic[..k].copy_from_slice(&buf[..k]);
                first = false;
            }
            h.update(&buf[..n]);
            left -= n as u64;
        }
        Ok((h.finish(), size, magic))
    }
}

fn resolve_in_index(
    index: &ImageIndex,
    tag: Option<&str>,
    path: &Path,
) -> Result<Descriptor, StoreError> {
    const REF_NAME: &str = "org.opencontainers.image.ref.name";
    match tag {
        Some(t) => index
            .manifests
            .iter()
            .find(|d| d.annotations.get(REF_NAME).map(String::as_str) == Some(t))
            .cloned()
            .ok_or_else(|| StoreError::NotFound {
                path: path.to_path_buf(),
                what: format!("tag {t:?}"),
            }),
        None if index.manifests.len() == 1 => Ok(index.manifests[0].clone()),
        None if index.manifests.is_empty() => Err(StoreError::NotFound {
            path: path.to_path_buf(),
            what: "any image".into(),
        }),
        None => Err(StoreError::Ambiguous {
            path: path.to_path_buf(),
            tags: index
                .manifests
                .iter()
                .map(|d| {
                    d.annotations
                        .get(REF_NAME)
                        .cloned()
                        .unwrap_or_else(|| d.digest.to_string())
                })
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// Reads an `oci-archive:`.
pub struct OciArchiveSource {
    tar: TarIndex,
    top: Descriptor,
}

impl OciArchiveSource {
    pub fn open(path: &Path, tag: Option<&str>) -> Result<OciArchiveSource, StoreError> {
        let tar = TarIndex::build(path)?;
        let bytes = tar.read_small("index.json", MAX_INDEX_BYTES)?;
        let index = match Manifest::parse(&bytes, Some(&MediaType::new(MediaType::OCI_INDEX))) {
            Ok(Manifest::Index(i)) => i,
            _ => {
                return Err(StoreError::Invalid {
                    path: path.to_path_buf(),
                    reason: "index.json is not an OCI index".into(),
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
        let (d, mt) = match digest {
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
            media_type: mt,
            digest: d,
        })
    }
    async fn blob(&self, descriptor: &Descriptor) -> Result<BlobReader, ImageError> {
        Ok(self.tar.stream(&Self::blob_name(&descriptor.digest))?)
    }
}

/// A temp directory removed on drop (staging for archive writers).
struct Staging {
    dir: PathBuf,
}
impl Drop for Staging {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn staging_for(target: &Path) -> Result<Staging, StoreError> {
    let parent = target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(|e| StoreError::io(parent, "cannot create directory", e))?;
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let dir = parent.join(format!(
        ".{name}.strata-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    fs::create_dir_all(&dir)
        .map_err(|e| StoreError::io(&dir, "cannot create staging directory", e))?;
    Ok(Staging { dir })
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

/// Write `members` (archive name, source file) into a tar at `target`, atomically.
fn write_tar(
    target: &Path,
    staging: &Path,
    dirs: &[&str],
    members: &[(String, PathBuf)],
) -> Result<(), StoreError> {
    let tmp = staging.join("archive.tar.tmp");
    let file = File::create(&tmp).map_err(|e| StoreError::io(&tmp, "cannot create", e))?;
    let mut builder = tar::Builder::new(std::io::BufWriter::with_capacity(1 << 20, file));
    let io = |e| StoreError::io(target, "cannot write archive", e);
    for d in dirs {
        let mut h = tar_header(0, 0o755, tar::EntryType::Directory);
        builder
            .append_data(&mut h, d, std::io::empty())
            .map_err(io)?;
    }
    for (name, src) in members {
        let f = File::open(src).map_err(|e| StoreError::io(src, "cannot open", e))?;
        let size = f
            .metadata()
            .map_err(|e| StoreError::io(src, "cannot stat", e))?
            .len();
        let mut h = tar_header(size, 0o644, tar::EntryType::Regular);
        builder.append_data(&mut h, name, f).map_err(io)?;
    }
    let writer = builder.into_inner().map_err(io)?;
    let file = writer
        .into_inner()
        .map_err(|e| StoreError::io(target, "cannot write archive", e.into_error()))?;
    file.sync_all().map_err(io)?;
    fs::rename(&tmp, target)
        .map_err(|e| StoreError::io(target, "cannot rename archive into place", e))?;
    Ok(())
}

/// Writes an `oci-archive:`.
pub struct OciArchiveSink {
    target: PathBuf,
    inner: LayoutSink,
    staging: Staging,
}

impl OciArchiveSink {
    pub fn create(target: &Path) -> Result<OciArchiveSink, StoreError> {
        let staging = staging_for(target)?;
        let layout = OciLayout::create_or_open(&staging.dir.join("layout"))?;
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
    async fn finish(&self) -> Result<(), ImageError> {
        self.inner.finish().await?;
        let root = self.inner.layout().root().to_path_buf();
        let mut members = vec![
            ("oci-layout".to_string(), root.join("oci-layout")),
            ("index.json".to_string(), root.join("index.json")),
        ];
        let mut dirs = vec!["blobs"];
        let mut names = Vec::new();
        let blobs = root.join("blobs");
        for alg in fs::read_dir(&blobs)
            .map_err(|e| ImageError::io("listing staged blobs", e))?
            .flatten()
        {
            let alg_name = alg.file_name().to_string_lossy().to_string();
            names.push(format!("blobs/{alg_name}"));
            let mut files: Vec<_> = fs::read_dir(alg.path())
                .map_err(|e| ImageError::io("listing staged blobs", e))?
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
        dirs.extend(names.iter().map(String::as_str));
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

/// Reads a `docker-archive:`: presents the image as a Docker schema 2 manifest whose layer
/// digests strata computed over the archive's layer files.
pub struct DockerArchiveSource {
    tar: TarIndex,
    manifest: RawManifest,
    blobs: HashMap<Digest, String>,
}

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
        let config_bytes = tar.read_small(&entry.config, MAX_CONFIG_BYTES)?;
        let config = Descriptor::of_bytes(MediaType::DOCKER_CONFIG, &config_bytes);
        blobs.insert(config.digest.clone(), entry.config.clone());
        let mut manifest = ImageManifest::new(MediaType::DOCKER_MANIFEST, config);
        for layer in &entry.layers {
            let (digest, size, magic) = tar.hash(layer)?;
            let mt = if magic[..2] == [0x1f, 0x8b] {
                MediaType::DOCKER_LAYER_GZIP
            } else if magic == [0x28, 0xb5, 0x2f, 0xfd] {
                MediaType::OCI_LAYER_ZSTD
            } else {
                DOCKER_LAYER_TAR
            };
            blobs.insert(digest.clone(), layer.clone());
            manifest.layers.push(Descriptor::new(mt, digest, size));
        }
        let manifest = RawManifest::new(
            manifest.to_bytes(),
            MediaType::new(MediaType::DOCKER_MANIFEST),
        );
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
}

/// Writes a `docker-archive:` (single image; `docker load` / `podman load` read it).
pub struct DockerArchiveSink {
    target: PathBuf,
    reference: Option<Reference>,
    inner: LayoutSink,
    staging: Staging,
    manifest: Mutex<Option<ImageManifest>>,
}

impl DockerArchiveSink {
    pub fn create(
        target: &Path,
        reference: Option<&Reference>,
    ) -> Result<DockerArchiveSink, StoreError> {
        let staging = staging_for(target)?;
        let layout = OciLayout::create_or_open(&staging.dir.join("layout"))?;
        let inner = LayoutSink::new(layout, format!("docker-archive:{}", target.display()))?;
        Ok(DockerArchiveSink {
            target: target.to_path_buf(),
            reference: reference.cloned(),
            inner,
            staging,
            manifest: Mutex::new(None),
        })
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
    async fn put_manifest(&self, m: &RawManifest, _tag: Option<&str>) -> Result<(), ImageError> {
        match m.parse()? {
            Manifest::Image(image) => {
                if let Ok(mut slot) = self.manifest.lock() {
                    *slot = Some(image);
                }
                Ok(())
            }
            Manifest::Index(_) => Err(ImageError::Unsupported(format!(
                "{} holds a single image, not an index (choose one with --platform)",
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
        let config_name = format!("{}.json", manifest.config.digest.encoded());
        let mut members = vec![(
            config_name.clone(),
            layout.blob_path(&manifest.config.digest),
        )];
        let mut layer_names = Vec::new();
        for l in &manifest.layers {
            let ext = match l.media_type.layer_compression() {
                Some(strata_spec::LayerCompression::Gzip) => "tar.gz",
                Some(strata_spec::LayerCompression::Zstd) => "tar.zst",
                _ => "tar",
            };
            let name = format!("{}.{ext}", l.digest.encoded());
            if !layer_names.contains(&name) {
                members.push((name.clone(), layout.blob_path(&l.digest)));
            }
            layer_names.push(name);
        }
        let entry = DockerArchiveEntry {
            config: config_name,
            repo_tags: Some(self.reference.iter().map(familiar).collect()),
            layers: layer_names,
        };
        let manifest_path = self.staging.dir.join("manifest.json");
        let bytes = serde_json::to_vec(&vec![entry])
            .map_err(|e| ImageError::io("manifest.json", e.into()))?;
        fs::write(&manifest_path, bytes).map_err(|e| ImageError::io("writing manifest.json", e))?;
        members.push(("manifest.json".into(), manifest_path));
        write_tar(&self.target, &self.staging.dir, &[], &members)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_names() {
        let p = Path::new("a.tar");
        assert_eq!(clean_name(p, "./blobs/sha256/x").unwrap(), "blobs/sha256/x");
        for bad in ["/etc/passwd", "../../etc/passwd", "a/../../b", "", "."] {
            assert!(clean_name(p, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn read_capped_refuses_symlinks() {
        use crate::layout::read_capped;
        let d = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/etc/hostname", d.path().join("l")).unwrap();
        assert!(matches!(
            read_capped(&d.path().join("l"), 10, "x"),
            Err(StoreError::NotRegular { .. })
        ));
    }
}
