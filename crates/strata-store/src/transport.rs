//! `oci:` layouts (and the default store) as image sources and sinks.

use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use async_trait::async_trait;
use strata_image::{
    BlobOrigin, BlobReader, ImageError, ImageSink, ImageSource, RawManifest, VerifyingReader,
};
use strata_spec::{Descriptor, Digest, MAX_MANIFEST_BYTES};
use tokio::io::AsyncReadExt;

use crate::{OciLayout, StoreError, WriterGuard};

/// Size of the chunks a blob is copied in.
const COPY_CHUNK: usize = 1024 * 1024;

/// Reads images from an OCI layout, at a tag (or its only entry).
pub struct LayoutSource {
    layout: OciLayout,
    tag: Option<String>,
    name: String,
}

impl LayoutSource {
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
    /// A source over an already opened layout, described as `name` in messages.
    pub fn new(layout: OciLayout, tag: Option<&str>, name: String) -> LayoutSource {
        LayoutSource {
            layout,
            tag: tag.map(str::to_string),
            name,
        }
    }
}

pub(crate) fn manifest_from_layout(
    layout: &OciLayout,
    descriptor: &Descriptor,
) -> Result<RawManifest, ImageError> {
    let bytes = layout.read_blob(&descriptor.digest, MAX_MANIFEST_BYTES)?;
    Ok(RawManifest {
        bytes,
        media_type: descriptor.media_type.clone(),
        digest: descriptor.digest.clone(),
    })
}

#[async_trait]
impl ImageSource for LayoutSource {
    fn describe(&self) -> String {
        self.name.clone()
    }
    async fn manifest(&self, digest: Option<&Digest>) -> Result<RawManifest, ImageError> {
        match digest {
            None => {
                let d = self.layout.resolve(self.tag.as_deref())?;
                manifest_from_layout(&self.layout, &d)
            }
            Some(d) => {
                let bytes = self.layout.read_blob(d, MAX_MANIFEST_BYTES)?;
                Ok(RawManifest {
                    bytes,
                    media_type: Default::default(),
                    digest: d.clone(),
                })
            }
        }
    }
    async fn blob(&self, descriptor: &Descriptor) -> Result<BlobReader, ImageError> {
        let (file, _) = self.layout.open_blob(&descriptor.digest)?;
        Ok(Box::pin(tokio::fs::File::from_std(file)))
    }
}

/// Writes images into an OCI layout, tagging the top document.
pub struct LayoutSink {
    layout: OciLayout,
    name: String,
    last_manifest: Mutex<Option<(RawManifest, Option<String>)>>,
    _guard: WriterGuard,
}

impl LayoutSink {
    /// Create or open the layout at `path`.
    pub fn create(path: &Path) -> Result<LayoutSink, StoreError> {
        let layout = OciLayout::create_or_open(path)?;
        LayoutSink::new(layout, format!("oci:{}", path.display()))
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
}

/// Stream `data` into a temp file of `layout`, verified against `descriptor`, then commit it.
pub(crate) async fn write_verified_blob(
    layout: &OciLayout,
    descriptor: &Descriptor,
    data: BlobReader,
) -> Result<(), ImageError> {
    let mut reader = VerifyingReader::new(data, descriptor)?;
    let (mut file, temp) = layout.blob_temp()?;
    let mut buf = vec![0u8; COPY_CHUNK];
    let result: Result<(), ImageError> = async {
        loop {
            let n = reader.read(&mut buf).await.map_err(|e| {
                ImageError::from_io(format!("reading blob {}", descriptor.digest), e)
            })?;
            if n == 0 {
                break;
            }
            // Writes land in the page cache; a 1 MiB write is short enough to do inline.
            file.write_all(&buf[..n])
                .map_err(|e| ImageError::io(format!("writing {}", temp.display()), e))?;
        }
        Ok(())
    }
    .await;
    if let Err(e) = result {
        drop(file);
        let _ = std::fs::remove_file(&temp);
        return Err(e);
    }
    layout.commit_blob(file, &temp, &descriptor.digest)?;
    Ok(())
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
        if self
            .layout
            .has_blob(&descriptor.digest, Some(descriptor.size_u64()?))
        {
            return Ok(());
        }
        write_verified_blob(&self.layout, descriptor, data).await
    }
    async fn put_manifest(
        &self,
        manifest: &RawManifest,
        tag: Option<&str>,
    ) -> Result<(), ImageError> {
        let digest = self.layout.write_blob_bytes(&manifest.bytes)?;
        if digest != manifest.digest {
            return Err(ImageError::DigestMismatch {
                expected: manifest.digest.clone(),
                actual: digest,
            });
        }
        if let Ok(mut last) = self.last_manifest.lock() {
            *last = Some((manifest.clone(), tag.map(str::to_string)));
        }
        if let Some(t) = tag {
            self.layout.set_tag(Some(t), &manifest.descriptor())?;
        }
        Ok(())
    }
    async fn finish(&self) -> Result<(), ImageError> {
        // A destination without a tag still needs the top document referenced from
        // index.json, or gc would collect it: the last manifest written is the top one.
        let last = self.last_manifest.lock().ok().and_then(|mut l| l.take());
        if let Some((m, None)) = last {
            self.layout.set_tag(None, &m.descriptor())?;
        }
        Ok(())
    }
}
