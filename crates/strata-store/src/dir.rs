//! skopeo's `dir:` format: `version`, `manifest.json`, blobs named by their hex digest,
//! index children as `<hex>.manifest.json`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use async_trait::async_trait;
use strata_image::{
    BlobOrigin, BlobReader, ImageError, ImageSink, ImageSource, RawManifest, VerifyingReader,
};
use strata_spec::{Algorithm, Descriptor, Digest, MAX_MANIFEST_BYTES};
use tokio::io::AsyncReadExt;

use crate::StoreError;
use crate::layout::{create_temp, fsync_dir, open_regular, read_capped, write_atomic};

const VERSION_FILE: &str = "version";
const VERSION: &[u8] = b"Directory Transport Version: 1.1\n";
const MANIFEST: &str = "manifest.json";
const TEMP_PREFIX: &str = ".strata-tmp";

fn blob_name(d: &Digest) -> String {
    // containers/image: sha256 blobs by hex only, other algorithms with their prefix.
    match d.algorithm() {
        Algorithm::Sha256 => d.encoded().to_string(),
        _ => d.to_string(),
    }
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
        let top = read_capped(&self.path.join(MANIFEST), MAX_MANIFEST_BYTES, MANIFEST)?;
        let Some(d) = digest else {
            return Ok(RawManifest::new(top, Default::default()));
        };
        let bytes = if d.verify(&top) {
            top
        } else {
            let p = self.path.join(format!("{}.manifest.json", d.encoded()));
            if !p.exists() {
                return Err(ImageError::NotFound {
                    what: format!("manifest {d} in {}", self.describe()),
                });
            }
            read_capped(&p, MAX_MANIFEST_BYTES, "manifest")?
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
    async fn blob(&self, descriptor: &Descriptor) -> Result<BlobReader, ImageError> {
        let p = self.path.join(blob_name(&descriptor.digest));
        if !p.exists() {
            return Err(ImageError::NotFound {
                what: format!("blob {} in {}", descriptor.digest, self.describe()),
            });
        }
        let (file, _) = open_regular(&p)?;
        Ok(Box::pin(tokio::fs::File::from_std(file)))
    }
}

/// Writes a `dir:` image (an existing `dir:` image there is replaced).
pub struct DirSink {
    path: PathBuf,
    last: Mutex<Option<RawManifest>>,
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
        })
    }

    fn temp(&self) -> Result<(fs::File, PathBuf), StoreError> {
        // Temp files live in the target directory itself so the rename is atomic.
        let (f, p) = create_temp(&self.path)?;
        let hidden = self.path.join(format!(
            "{TEMP_PREFIX}-{}",
            p.file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default()
        ));
        fs::rename(&p, &hidden)
            .map_err(|e| StoreError::io(&hidden, "cannot create temp file", e))?;
        Ok((f, hidden))
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
        let mut reader = VerifyingReader::new(data, d)?;
        let (mut file, temp) = self.temp()?;
        let mut buf = vec![0u8; 1024 * 1024];
        let result: Result<(), ImageError> = async {
            loop {
                let n = reader
                    .read(&mut buf)
                    .await
                    .map_err(|e| ImageError::from_io(format!("reading blob {}", d.digest), e))?;
                if n == 0 {
                    break;
                }
                file.write_all(&buf[..n])
                    .map_err(|e| ImageError::io(format!("writing {}", temp.display()), e))?;
            }
            file.sync_all().map_err(|e| ImageError::io("fsync", e))?;
            let dest = self.path.join(blob_name(&d.digest));
            fs::rename(&temp, &dest)
                .map_err(|e| ImageError::io(format!("renaming to {}", dest.display()), e))?;
            Ok(())
        }
        .await;
        if result.is_err() {
            let _ = fs::remove_file(&temp);
        }
        result
    }
    async fn put_manifest(&self, m: &RawManifest, _tag: Option<&str>) -> Result<(), ImageError> {
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
