//! Repacking a bundle: the changes made in `BUNDLE/rootfs` since `unpack` become one new
//! layer, and the image gets that layer, its DiffId and a history entry (what
//! `umoci repack` does).
//!
//! Changes are found without reading file contents: the tree is walked in the order the
//! state file was written ([`crate::tree`]) and each path compared with its record (inode,
//! ctime, mtime, size, mode, owner). Only changed files are read, once, into the layer:
//! - a path that is new, or whose record differs, is written (ctime moves on any change of
//!   content, mode, owner, xattrs or link count, and cannot be set back);
//! - a recorded path that is gone gets a whiteout (`.wh.name`; one for a whole directory);
//! - a directory whose inode changed (removed and made again) is written with an opaque
//!   marker (`.wh..wh..opq`) and all its contents; a directory replaced by a file is
//!   written as that file (extraction replaces the whole tree);
//! - hard links among written files stay hard links; symlinks, devices, FIFOs, modes,
//!   setuid bits, ownership and xattrs (`security.capability` included; overlayfs
//!   internals and `security.selinux` excluded) are kept. In a rootless bundle the owner
//!   comes from the `user.rootlesscontainers` xattr (root when absent), as umoci does.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Seek};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use rustix::fs::{FileType, Mode};
use strata_archive::{
    Compression, DeviceKind, EntryMeta, LayerInfo, LayerWriter, Ownership, TarBuilder, TarOptions,
};
use strata_spec::{Descriptor, DiffId, Manifest};

use crate::tree::{
    DIR_FLAGS, Record, StateReader, WalkEntry, Walker, cmp_paths, is_below, kind, os,
};
use crate::unpack::{
    BundleLayer, BundleMeta, META_FILE, ROOTFS_DIR, STATE_FILE, read_bundle_meta, write_file,
};
use crate::{BlobOrigin, ImageError, ImageSink, ImageSource, RawManifest};

/// First guess for an xattr name list or value (grown on ERANGE).
/// The xattr umoci (and strata) record rootless ownership in.
const ROOTLESS_XATTR: &str = "user.rootlesscontainers";
/// Warnings kept in the summary.
const MAX_WARNINGS: usize = 100;

/// Options of [`write_layer`].
#[derive(Debug, Clone)]
pub struct RepackOptions {
    pub compression: Compression,
    /// History entry's `created` (RFC 3339); default: now.
    pub created: Option<String>,
    /// History entry's `created_by`.
    pub created_by: String,
    pub comment: Option<String>,
    pub author: Option<String>,
}

impl Default for RepackOptions {
    fn default() -> Self {
        RepackOptions {
            compression: Compression::default(),
            created: None,
            created_by: "strata repack".to_string(),
            comment: None,
            author: None,
        }
    }
}

/// What changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangeStats {
    pub added: u64,
    pub modified: u64,
    pub deleted: u64,
    /// Directories written with an opaque marker (replaced since unpack).
    pub opaque: u64,
    /// Bytes of file contents written into the layer.
    pub file_bytes: u64,
    pub warning_count: u64,
    pub warnings: Vec<String>,
}

impl ChangeStats {
    fn warn(&mut self, w: String) {
        self.warning_count += 1;
        if self.warnings.len() < MAX_WARNINGS {
            self.warnings.push(w);
        }
    }
    /// Anything at all?
    pub fn is_empty(&self) -> bool {
        self.added + self.modified + self.deleted + self.opaque == 0
    }
}

/// A new image made from a bundle, ready to be written to a sink.
pub struct Repacked {
    pub changes: ChangeStats,
    pub layer: LayerInfo,
    pub layer_descriptor: Descriptor,
    pub config_descriptor: Descriptor,
    pub config: Vec<u8>,
    pub manifest: RawManifest,
    /// Blobs of the base image the sink must hold (config excluded: a new one is written).
    pub base_layers: Vec<Descriptor>,
    /// The bundle's metadata (source name, base manifest) it was made from.
    pub meta: BundleMeta,
    layer_file: File,
}

/// RFC 3339 UTC time of `secs` since the epoch (`1970-01-01T00:00:00Z`).
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    rfc3339(secs)
}

/// Decode umoci's `user.rootlesscontainers` protobuf (`uint32 uid = 1; uint32 gid = 2;`).
pub fn decode_rootless_record(bytes: &[u8]) -> Option<(u32, u32)> {
    let (mut uid, mut gid) = (0u32, 0u32);
    let mut i = 0;
    let varint = |i: &mut usize| -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *bytes.get(*i)?;
            *i += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    };
    while i < bytes.len() {
        let key = varint(&mut i)?;
        match (key >> 3, key & 7) {
            (1, 0) => uid = u32::try_from(varint(&mut i)?).ok()?,
            (2, 0) => gid = u32::try_from(varint(&mut i)?).ok()?,
            (_, 0) => {
                varint(&mut i)?;
            }
            (_, 2) => {
                let len = usize::try_from(varint(&mut i)?).ok()?;
                i = i.checked_add(len)?;
            }
            _ => return None,
        }
    }
    Some((uid, gid))
}

/// Extended attributes as `(name, value)`, sorted by name.
type Xattrs = Vec<(String, Vec<u8>)>;

/// The xattrs that belong in a layer, sorted; and the rootless owner record if present.
fn read_xattrs(fd: BorrowedFd<'_>) -> io::Result<(Xattrs, Option<Vec<u8>>)> {
    let names = strata_archive::xattr::list(fd)?;
    let mut out = Vec::new();
    let mut rootless = None;
    for raw in names.split(|&b| b == 0) {
        let Ok(name) = std::str::from_utf8(raw) else {
            continue;
        };
        if !strata_archive::xattr::is_content(name) {
            continue;
        }
        let Some(value) = strata_archive::xattr::get(fd, name)? else {
            continue;
        };
        if name == ROOTLESS_XATTR {
            rootless = Some(value);
        } else {
            out.push((name.to_string(), value));
        }
    }
    out.sort();
    Ok((out, rootless))
}

struct Differ<W: io::Write> {
    tar: TarBuilder<W>,
    ownership: Ownership,
    /// (dev, ino) of multiply-linked files written so far → their path in the layer.
    links: HashMap<(u64, u64), Vec<u8>>,
    stats: ChangeStats,
}

fn entry_error(path: &[u8], what: &str, e: impl std::fmt::Display) -> ImageError {
    ImageError::Bundle {
        path: Path::new(ROOTFS_DIR).join(String::from_utf8_lossy(path).as_ref()),
        reason: format!("{what}: {e}"),
    }
}

impl<W: io::Write> Differ<W> {
    fn meta(&mut self, e: &WalkEntry, fd: Option<BorrowedFd<'_>>) -> EntryMeta {
        let st = &e.stat;
        let mut meta = EntryMeta {
            mode: st.st_mode & 0o7777,
            uid: u64::from(st.st_uid),
            gid: u64::from(st.st_gid),
            mtime: st.st_mtime.max(0) as u64,
            ..EntryMeta::default()
        };
        let mut record = None;
        if let Some(fd) = fd {
            match read_xattrs(fd) {
                Ok((xattrs, rootless)) => {
                    meta.xattrs = xattrs;
                    record = rootless;
                }
                Err(err) => self.stats.warn(format!(
                    "{}: xattrs not read: {err}",
                    String::from_utf8_lossy(&e.path)
                )),
            }
        }
        if self.ownership == Ownership::Rootless {
            let (uid, gid) = record
                .as_deref()
                .and_then(decode_rootless_record)
                .unwrap_or((0, 0));
            meta.uid = u64::from(uid);
            meta.gid = u64::from(gid);
        }
        meta
    }

    /// Write the current state of `e` into the layer.
    fn write(&mut self, e: &WalkEntry) -> Result<(), ImageError> {
        let path = e.path.as_slice();
        if e.name.starts_with(b".wh.") {
            return Err(entry_error(
                path,
                "cannot be put in a layer",
                "names starting with .wh. are whiteouts in OCI layers",
            ));
        }
        let st = &e.stat;
        let tar_err = |err: strata_archive::ArchiveError| ImageError::Archive {
            context: format!("writing {} into the layer", String::from_utf8_lossy(path)),
            source: Box::new(err),
        };
        match kind(st) {
            FileType::Directory => {
                let fd = if path.is_empty() {
                    rustix::fs::openat(e.parent_fd(), ".", DIR_FLAGS, Mode::empty())
                } else {
                    rustix::fs::openat(e.parent_fd(), os(&e.name), DIR_FLAGS, Mode::empty())
                };
                let meta = match &fd {
                    Ok(fd) => self.meta(e, Some(fd.as_fd())),
                    Err(_) => self.meta(e, None),
                };
                self.tar.append_dir(path, &meta).map_err(tar_err)?;
            }
            FileType::RegularFile => {
                let key = (st.st_dev, st.st_ino);
                if st.st_nlink > 1
                    && let Some(target) = self.links.get(&key).cloned()
                {
                    let meta = self.meta(e, None);
                    self.tar
                        .append_hardlink(path, &meta, &target)
                        .map_err(tar_err)?;
                    return Ok(());
                }
                let file = e.open().map_err(|err| entry_error(path, "opening", err))?;
                let fst = rustix::fs::fstat(&file).map_err(|err| entry_error(path, "stat", err))?;
                let meta = self.meta(e, Some(file.as_fd()));
                let size = fst.st_size.max(0) as u64;
                self.tar
                    .append_file(path, &meta, size, io::BufReader::new(file))
                    .map_err(tar_err)?;
                self.stats.file_bytes += size;
                if st.st_nlink > 1 {
                    self.links.insert(key, path.to_vec());
                }
            }
            FileType::Symlink => {
                let target = rustix::fs::readlinkat(e.parent_fd(), os(&e.name), Vec::new())
                    .map_err(|err| entry_error(path, "readlink", err))?;
                let meta = self.meta(e, None);
                self.tar
                    .append_symlink(path, &meta, target.as_bytes())
                    .map_err(tar_err)?;
            }
            ft @ (FileType::CharacterDevice | FileType::BlockDevice) => {
                let meta = self.meta(e, None);
                let kind = if ft == FileType::CharacterDevice {
                    DeviceKind::Char
                } else {
                    DeviceKind::Block
                };
                let (major, minor) = (rustix::fs::major(st.st_rdev), rustix::fs::minor(st.st_rdev));
                self.tar
                    .append_device(path, &meta, kind, major, minor)
                    .map_err(tar_err)?;
            }
            FileType::Fifo => {
                let meta = self.meta(e, None);
                self.tar.append_fifo(path, &meta).map_err(tar_err)?;
            }
            _ => {
                self.stats.warn(format!(
                    "{}: sockets and unknown file types are not put in layers",
                    String::from_utf8_lossy(path)
                ));
            }
        }
        Ok(())
    }

    fn whiteout(&mut self, r: &Record) -> Result<(), ImageError> {
        self.stats.deleted += 1;
        self.tar
            .append_whiteout(&r.path)
            .map_err(|err| ImageError::Archive {
                context: format!("whiteout for {}", String::from_utf8_lossy(&r.path)),
                source: Box::new(err),
            })
    }
}

/// Compare the tree with its recorded state and write the changes into `tar`.
fn diff_tree<W: io::Write>(
    rootfs: &Path,
    state: &Path,
    differ: &mut Differ<W>,
) -> Result<(), ImageError> {
    let walk_err = |e: io::Error| ImageError::io(format!("walking {}", rootfs.display()), e);
    let state_err = |e: io::Error| ImageError::io(format!("reading {}", state.display()), e);
    let mut walker = Walker::new(rootfs).map_err(walk_err)?;
    let file = File::open(state).map_err(state_err)?;
    let mut records = StateReader::new(file).map_err(state_err)?;
    let mut cur = walker.next_entry().map_err(walk_err)?;
    let mut rec = records.next_record().map_err(state_err)?;
    // Records below this path are gone with it (a deleted or replaced directory).
    let mut skip_below: Option<Vec<u8>> = None;
    loop {
        if let (Some(r), Some(p)) = (&rec, &skip_below) {
            if is_below(&r.path, p) {
                rec = records.next_record().map_err(state_err)?;
                continue;
            }
            skip_below = None;
        }
        match (&cur, &rec) {
            (None, None) => return Ok(()),
            (Some(c), None) => {
                differ.stats.added += 1;
                differ.write(c)?;
                cur = walker.next_entry().map_err(walk_err)?;
            }
            (None, Some(r)) => {
                differ.whiteout(r)?;
                if r.is_dir() {
                    skip_below = Some(r.path.clone());
                }
                rec = records.next_record().map_err(state_err)?;
            }
            (Some(c), Some(r)) => match cmp_paths(&c.path, &r.path) {
                std::cmp::Ordering::Less => {
                    differ.stats.added += 1;
                    differ.write(c)?;
                    cur = walker.next_entry().map_err(walk_err)?;
                }
                std::cmp::Ordering::Greater => {
                    differ.whiteout(r)?;
                    if r.is_dir() {
                        skip_below = Some(r.path.clone());
                    }
                    rec = records.next_record().map_err(state_err)?;
                }
                std::cmp::Ordering::Equal => {
                    let now = c.record();
                    if r.is_dir() && now.is_dir() && !now.same_directory(r) {
                        // Removed and made again: lower contents must not show through.
                        differ.stats.opaque += 1;
                        differ.write(c)?;
                        differ
                            .tar
                            .append_opaque(&c.path)
                            .map_err(|err| ImageError::Archive {
                                context: format!(
                                    "opaque marker for {}",
                                    String::from_utf8_lossy(&c.path)
                                ),
                                source: Box::new(err),
                            })?;
                        skip_below = Some(c.path.clone());
                    } else if r.is_dir() && !now.is_dir() {
                        differ.stats.modified += 1;
                        differ.write(c)?;
                        skip_below = Some(c.path.clone());
                    } else if !now.unchanged(r) {
                        differ.stats.modified += 1;
                        differ.write(c)?;
                    }
                    cur = walker.next_entry().map_err(walk_err)?;
                    rec = records.next_record().map_err(state_err)?;
                }
            },
        }
    }
}

/// Read the bundle, write the layer of its changes into an unlinked temp file in the
/// bundle directory, and make the new config and manifest. Blocking (file I/O).
pub fn write_layer(bundle: &Path, options: &RepackOptions) -> Result<Repacked, ImageError> {
    let meta = read_bundle_meta(bundle)?;
    let manifest_doc: strata_spec::ImageManifest = serde_json::from_value(meta.manifest.clone())
        .map_err(|e| ImageError::Unsupported(format!("{META_FILE}: manifest: {e}")))?;
    let docker = meta.manifest_media_type.is_docker();
    if docker && matches!(options.compression, Compression::Zstd { .. }) {
        return Err(ImageError::Unsupported(
            "a Docker v2s2 image cannot have zstd layers: use gzip, or convert the image to OCI first".into(),
        ));
    }
    let rootfs = bundle.join(ROOTFS_DIR);
    let tmp = tempfile::tempfile_in(bundle)
        .map_err(|e| ImageError::io(format!("temp file in {}", bundle.display()), e))?;
    let writer = LayerWriter::new(tmp, options.compression)
        .map_err(|e| ImageError::io(format!("starting the layer of {}", bundle.display()), e))?;
    let mut differ = Differ {
        tar: TarBuilder::new(writer, TarOptions::default()),
        ownership: meta.ownership(),
        links: HashMap::new(),
        stats: ChangeStats::default(),
    };
    diff_tree(&rootfs, &bundle.join(STATE_FILE), &mut differ)?;
    let Differ { tar, stats, .. } = differ;
    let writer = tar.finish().map_err(|e| ImageError::Archive {
        context: format!("finishing the layer of {}", bundle.display()),
        source: Box::new(e),
    })?;
    let (info, mut layer_file) = writer
        .finish()
        .map_err(|e| ImageError::io(format!("finishing the layer of {}", bundle.display()), e))?;
    layer_file
        .rewind()
        .map_err(|e| ImageError::io(format!("rewinding the layer of {}", bundle.display()), e))?;
    let layer_media_type = info.media_type.layer_for_format(docker);
    let layer_descriptor = Descriptor::new(layer_media_type, info.digest.clone(), info.size);

    // The config: every field kept, one DiffId and one history entry more.
    let created = options.created.clone().unwrap_or_else(now_rfc3339);
    let mut config = meta.config.clone();
    let obj = config
        .as_object_mut()
        .ok_or_else(|| ImageError::Unsupported(format!("{META_FILE}: config is not an object")))?;
    obj.insert("created".into(), created.clone().into());
    let rootfs_obj = obj
        .entry("rootfs")
        .or_insert_with(|| serde_json::json!({"type": "layers", "diff_ids": []}));
    let diff_ids = rootfs_obj
        .as_object_mut()
        .and_then(|r| {
            r.entry("diff_ids")
                .or_insert_with(|| serde_json::json!([]))
                .as_array_mut()
        })
        .ok_or_else(|| ImageError::Unsupported(format!("{META_FILE}: config rootfs")))?;
    diff_ids.push(info.diff_id.to_string().into());
    let mut history = serde_json::Map::new();
    history.insert("created".into(), created.into());
    history.insert("created_by".into(), options.created_by.clone().into());
    if let Some(a) = &options.author {
        history.insert("author".into(), a.clone().into());
    }
    if let Some(c) = &options.comment {
        history.insert("comment".into(), c.clone().into());
    }
    match obj.get_mut("history").and_then(|h| h.as_array_mut()) {
        Some(h) => h.push(history.into()),
        None => {
            obj.insert(
                "history".into(),
                vec![serde_json::Value::from(history)].into(),
            );
        }
    }
    let config_bytes =
        serde_json::to_vec(&config).map_err(|e| ImageError::Unsupported(format!("config: {e}")))?;
    // Check it still parses as an image config.
    strata_spec::ImageConfig::parse(&config_bytes)?;
    let config_descriptor = Descriptor::new(
        manifest_doc.config.media_type.clone(),
        strata_spec::Digest::sha256_of(&config_bytes),
        config_bytes.len() as u64,
    );

    let mut manifest = meta.manifest.clone();
    let mobj = manifest
        .as_object_mut()
        .ok_or_else(|| ImageError::Unsupported(format!("{META_FILE}: manifest")))?;
    mobj.insert(
        "config".into(),
        serde_json::to_value(&config_descriptor)
            .map_err(|e| ImageError::Unsupported(e.to_string()))?,
    );
    let layers = mobj
        .get_mut("layers")
        .and_then(|l| l.as_array_mut())
        .ok_or_else(|| ImageError::Unsupported(format!("{META_FILE}: manifest layers")))?;
    layers.push(
        serde_json::to_value(&layer_descriptor)
            .map_err(|e| ImageError::Unsupported(e.to_string()))?,
    );
    let manifest_bytes = serde_json::to_vec(&manifest)
        .map_err(|e| ImageError::Unsupported(format!("manifest: {e}")))?;
    let raw = RawManifest::new(manifest_bytes, meta.manifest_media_type.clone());
    match raw.parse()? {
        Manifest::Image(_) => {}
        Manifest::Index(_) => {
            return Err(ImageError::Unsupported(
                "the bundle's manifest is not an image manifest".into(),
            ));
        }
    }
    Ok(Repacked {
        changes: stats,
        layer: info,
        layer_descriptor,
        config_descriptor,
        config: config_bytes,
        manifest: raw,
        base_layers: manifest_doc.layers,
        meta,
        layer_file,
    })
}

impl Repacked {
    /// Base layers `sink` does not hold (a registry may mount them from `origin`).
    pub async fn missing_blobs(
        &self,
        sink: &dyn ImageSink,
        origin: Option<&BlobOrigin>,
    ) -> Result<Vec<Descriptor>, ImageError> {
        let mut missing = Vec::new();
        for d in &self.base_layers {
            if !sink.reuse_blob(d, origin).await? {
                missing.push(d.clone());
            }
        }
        Ok(missing)
    }

    /// Write the image: missing base layers copied from `source` (verified by the sink),
    /// then the new layer, the config, and the manifest tagged `tag`.
    pub async fn commit(
        self,
        sink: &dyn ImageSink,
        source: Option<&dyn ImageSource>,
        tag: Option<&str>,
    ) -> Result<(), ImageError> {
        let origin = source.and_then(|s| s.origin());
        for d in self.missing_blobs(sink, origin.as_ref()).await? {
            let Some(source) = source else {
                return Err(ImageError::NotFound {
                    what: format!(
                        "base layer {} (not at the destination, and no source to copy it from)",
                        d.digest
                    ),
                });
            };
            let stream = source.blob(&d).await?;
            sink.put_blob(&d, stream).await?;
        }
        if !sink.reuse_blob(&self.layer_descriptor, None).await? {
            let file = tokio::fs::File::from_std(self.layer_file);
            sink.put_blob(&self.layer_descriptor, Box::pin(file))
                .await?;
        }
        if !sink.reuse_blob(&self.config_descriptor, None).await? {
            sink.put_blob(
                &self.config_descriptor,
                Box::pin(io::Cursor::new(self.config.clone())),
            )
            .await?;
        }
        sink.put_manifest(&self.manifest, tag).await?;
        sink.finish().await
    }
}

/// After a commit: make the bundle describe the new image (`--refresh-bundle`), so the next
/// repack holds only later changes.
pub fn refresh_bundle(
    bundle: &Path,
    repacked_manifest: &RawManifest,
    config: &[u8],
    new_layer: BundleLayer,
    mut meta: BundleMeta,
    new_source: &str,
) -> Result<(), ImageError> {
    meta.source = new_source.to_string();
    meta.manifest_digest = repacked_manifest.digest.clone();
    meta.manifest = serde_json::from_slice(&repacked_manifest.bytes).map_err(|e| {
        ImageError::Unsupported(format!(
            "repacked manifest {}: {e}",
            repacked_manifest.digest
        ))
    })?;
    meta.config = serde_json::from_slice(config)
        .map_err(|e| ImageError::Unsupported(format!("repacked config: {e}")))?;
    meta.layers.push(new_layer);
    // Not while an unpack (or another refresh) writes the bundle.
    let _lock = crate::unpack::lock_bundle(bundle)?;
    let partial = bundle.join(crate::unpack::PARTIAL_FILE);
    write_file(&partial, crate::unpack::partial_text("refresh").as_bytes())?;
    let state_tmp = bundle.join(format!("{STATE_FILE}.tmp"));
    let file = File::create(&state_tmp)
        .map_err(|e| ImageError::io(format!("creating {}", state_tmp.display()), e))?;
    let rootfs = bundle.join(ROOTFS_DIR);
    crate::tree::record_tree(&rootfs, file)
        .map_err(|e| ImageError::io(format!("recording {}", rootfs.display()), e))?;
    std::fs::rename(&state_tmp, bundle.join(STATE_FILE))
        .map_err(|e| ImageError::io(format!("renaming {}", state_tmp.display()), e))?;
    let bytes = serde_json::to_vec_pretty(&meta)
        .map_err(|e| ImageError::Unsupported(format!("{META_FILE}: {e}")))?;
    let tmp = bundle.join(format!("{META_FILE}.tmp"));
    write_file(&tmp, &bytes)?;
    std::fs::rename(&tmp, bundle.join(META_FILE))
        .map_err(|e| ImageError::io(format!("renaming {}", tmp.display()), e))?;
    std::fs::remove_file(&partial)
        .map_err(|e| ImageError::io(format!("removing {}", partial.display()), e))?;
    Ok(())
}

/// The DiffId of a repacked layer as a bundle record.
pub fn bundle_layer(r: &Repacked) -> BundleLayer {
    BundleLayer {
        digest: r.layer.digest.clone(),
        diff_id: DiffId(r.layer.diff_id.0.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn decodes_rootless_records() {
        assert_eq!(decode_rootless_record(&[]), Some((0, 0)));
        assert_eq!(decode_rootless_record(&[0x08, 0xe8, 0x07]), Some((1000, 0)));
        assert_eq!(
            decode_rootless_record(&[0x08, 0xe8, 0x07, 0x10, 0x05]),
            Some((1000, 5))
        );
        assert_eq!(decode_rootless_record(&[0x08]), None);
    }
}
