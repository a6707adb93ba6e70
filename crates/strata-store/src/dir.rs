//! skopeo's `dir:` format: `version`, `manifest.json`, blobs named by their hex digest,
//! index children as `<hex>.manifest.json`.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use strata_image::{
    BlobOrigin, BlobReader, BlobReplay, ImageError, ImageSink, ImageSource, RawManifest,
};
use strata_spec::{Descriptor, Digest, MAX_MANIFEST_BYTES};

use crate::StoreError;
use crate::layout::{
    BlobWriter, create_temp_named, fsync_dir, open_beneath, read_beneath_capped, write_atomic,
};
use crate::transport::{InFlight, Tracked, pump_blob};

const VERSION_FILE: &str = "version";
const VERSION: &[u8] = b"Directory Transport Version: 1.1\n";
const MANIFEST: &str = "manifest.json";
/// Temp files live in the target directory itself so the rename is atomic.
const TEMP_PREFIX: &str = ".strata-tmp-";

fn blob_name(d: &Digest) -> String {
    // containers/image names every blob by its encoded digest alone, whatever the algorithm.
    d.encoded().to_string()
}

/// Reads a `dir:` image.
pub struct DirSource {
    path: PathBuf,
}

impl DirSource {
    pub fn open(path: &Path) -> Result<DirSource, StoreError> {
        if !path.join(MANIFEST).exists() {
            return Err(StoreError::NotFound {
                path: path.to_path_buf(),
                what: "manifest.json".into(),
            });
        }
        Ok(DirSource {
            path: path.to_path_buf(),
        })
    }
}

#[async_trait]
impl ImageSource for DirSource {
    fn describe(&self) -> String {
        format!("dir:{}", self.path.display())
    }
    async fn manifest(&self, digest: Option<&Digest>) -> Result<RawManifest, ImageError> {
        let top = read_beneath_capped(&self.path, MANIFEST, MAX_MANIFEST_BYTES, MANIFEST)?;
        let Some(d) = digest else {
            return Ok(RawManifest::new(top, Default::default()));
        };
        let bytes = if d.verify(&top) {
            top
        } else {
            let name = format!("{}.manifest.json", d.encoded());
            match read_beneath_capped(&self.path, &name, MAX_MANIFEST_BYTES, "manifest") {
                Err(StoreError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound =>
                {
                    return Err(ImageError::NotFound {
                        what: format!("manifest {d} in {}", self.describe()),
                    });
                }
                other => other?,
            }
        };
        let actual = d.same_algorithm_of(&bytes);
        if &actual != d {
            return Err(ImageError::DigestMismatch {
                expected: d.clone(),
                actual,
            });
        }
        Ok(RawManifest {
            bytes,
            media_type: Default::default(),
            digest: d.clone(),
        })
    }
    /// Blobs are files: they can be opened again.
    fn blob_replay(&self) -> BlobReplay {
        BlobReplay::Reopen
    }
    async fn blob(&self, descriptor: &Descriptor) -> Result<BlobReader, ImageError> {
        match open_beneath(&self.path, &blob_name(&descriptor.digest)) {
            Ok((file, _)) => Ok(Box::pin(tokio::fs::File::from_std(file))),
            Err(StoreError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                Err(ImageError::NotFound {
                    what: format!("blob {} in {}", descriptor.digest, self.describe()),
                })
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// Writes a `dir:` image (an existing `dir:` image there is replaced).
pub struct DirSink {
    path: PathBuf,
    last: Mutex<Option<RawManifest>>,
    in_flight: Arc<InFlight>,
}

impl DirSink {
    pub fn create(path: &Path) -> Result<DirSink, StoreError> {
        fs::create_dir_all(path).map_err(|e| StoreError::io(path, "cannot create directory", e))?;
        let entries: Vec<_> = fs::read_dir(path)
            .map_err(|e| StoreError::io(path, "cannot list", e))?
            .flatten()
            .collect();
        if !entries.is_empty() {
            if !path.join(VERSION_FILE).is_file() {
                return Err(StoreError::Invalid {
                    path: path.to_path_buf(),
                    reason:
                        "directory is not empty and holds no dir: image; refusing to overwrite it"
                            .into(),
                });
            }
            for e in entries {
                if e.file_type().is_ok_and(|t| t.is_file()) {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        write_atomic(path, &path.join(VERSION_FILE), VERSION)?;
        Ok(DirSink {
            path: path.to_path_buf(),
            last: Mutex::new(None),
            in_flight: Arc::default(),
        })
    }
}

#[async_trait]
impl ImageSink for DirSink {
    fn describe(&self) -> String {
        format!("dir:{}", self.path.display())
    }
    async fn reuse_blob(&self, d: &Descriptor, _: Option<&BlobOrigin>) -> Result<bool, ImageError> {
        Ok(fs::symlink_metadata(self.path.join(blob_name(&d.digest)))
            .is_ok_and(|m| m.is_file() && m.len() as i64 == d.size))
    }
    async fn put_blob(&self, d: &Descriptor, data: BlobReader) -> Result<(), ImageError> {
        if self.reuse_blob(d, None).await? {
            return Ok(());
        }
        let token = self
            .in_flight
            .start(&format!("writing blob {}", d.digest))?;
        let (file, temp) = create_temp_named(&self.path, TEMP_PREFIX)?;
        let writer = BlobWriter::new(file, temp, self.path.join(blob_name(&d.digest)), d, None)?;
        pump_blob(Tracked::new(writer, token), data).await
    }
    async fn abandon(&self) {
        self.in_flight.abandon().await;
    }
    async fn put_manifest(&self, m: &RawManifest, _tag: Option<&str>) -> Result<(), ImageError> {
        let actual = m.digest.same_algorithm_of(&m.bytes);
        if actual != m.digest {
            return Err(ImageError::DigestMismatch {
                expected: m.digest.clone(),
                actual,
            });
        }
        let dest = self
            .path
            .join(format!("{}.manifest.json", m.digest.encoded()));
        write_atomic(&self.path, &dest, &m.bytes)?;
        if let Ok(mut last) = self.last.lock() {
            *last = Some(m.clone());
        }
        Ok(())
    }
    async fn finish(&self) -> Result<(), ImageError> {
        // The last manifest written is the top one: it becomes manifest.json.
        let last = self.last.lock().ok().and_then(|mut l| l.take());
        if let Some(m) = last {
            let child = self
                .path
                .join(format!("{}.manifest.json", m.digest.encoded()));
            let dest = self.path.join(MANIFEST);
            fs::rename(&child, &dest)
                .map_err(|e| ImageError::io(format!("writing {}", dest.display()), e))?;
            fsync_dir(&self.path)?;
        }
        Ok(())
    }
}
