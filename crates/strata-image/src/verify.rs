use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use strata_spec::{Descriptor, Digest, DigestHasher};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

use crate::{BlobReader, ImageError, ImageSource, RawManifest};

/// Wraps a blob stream and checks it against a descriptor while it is read.
///
/// Fails as soon as more than `size` bytes arrive (no unbounded read of an oversized body),
/// and at end of stream when the size or digest differ. The error is an `io::Error` of kind
/// `InvalidData` wrapping an [`ImageError`]; [`ImageError::from_io`] unwraps it again.
pub struct VerifyingReader {
    inner: BlobReader,
    expected_digest: Digest,
    expected_size: u64,
    hasher: Option<DigestHasher>,
    seen: u64,
}

impl VerifyingReader {
    pub fn new(inner: BlobReader, descriptor: &Descriptor) -> Result<Self, ImageError> {
        let expected_size = descriptor.size_u64()?;
        Ok(VerifyingReader {
            inner,
            expected_digest: descriptor.digest.clone(),
            expected_size,
            hasher: Some(DigestHasher::new(descriptor.digest.algorithm())),
            seen: 0,
        })
    }
    /// Bytes read so far.
    pub fn bytes_read(&self) -> u64 {
        self.seen
    }
}

fn invalid(e: ImageError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl AsyncRead for VerifyingReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match this.inner.as_mut().poll_read(cx, buf) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Ready(Ok(())) => {
                let new_len = buf.filled().len() - before;
                if new_len == 0 {
                    // End of stream: check what we saw.
                    let Some(hasher) = this.hasher.take() else {
                        return Poll::Ready(Ok(()));
                    };
                    if this.seen != this.expected_size {
                        return Poll::Ready(Err(invalid(ImageError::SizeMismatch {
                            digest: this.expected_digest.clone(),
                            expected: this.expected_size,
                            actual: this.seen,
                            more: " (stream ended early)",
                        })));
                    }
                    let actual = hasher.finish();
                    if actual != this.expected_digest {
                        return Poll::Ready(Err(invalid(ImageError::DigestMismatch {
                            expected: this.expected_digest.clone(),
                            actual,
                        })));
                    }
                    return Poll::Ready(Ok(()));
                }
                this.seen += new_len as u64;
                if this.seen > this.expected_size {
                    this.hasher = None;
                    // An error must not leave bytes in the caller's buffer.
                    buf.set_filled(before);
                    return Poll::Ready(Err(invalid(ImageError::SizeMismatch {
                        digest: this.expected_digest.clone(),
                        expected: this.expected_size,
                        actual: this.seen,
                        more: " or more (stream longer than declared)",
                    })));
                }
                if let Some(h) = this.hasher.as_mut() {
                    h.update(&buf.filled()[before..]);
                }
                Poll::Ready(Ok(()))
            }
        }
    }
}

impl ImageError {
    /// Turn an I/O error from a blob stream back into the verification error it carries,
    /// or into [`ImageError::Io`] with `context`.
    pub fn from_io(context: impl Into<String>, e: io::Error) -> ImageError {
        if e.get_ref().is_some_and(|inner| inner.is::<ImageError>()) {
            let kind = e.kind();
            return match e.into_inner().map(|inner| inner.downcast::<ImageError>()) {
                Some(Ok(img)) => *img,
                _ => ImageError::io(context, std::io::Error::from(kind)),
            };
        }
        ImageError::io(context, e)
    }
}

/// Read a whole small blob (a config) into memory, verified, refusing more than `limit` bytes.
pub async fn read_blob_bytes(
    source: &dyn ImageSource,
    descriptor: &Descriptor,
    limit: u64,
) -> Result<Vec<u8>, ImageError> {
    let size = descriptor.size_u64()?;
    if size > limit {
        return Err(ImageError::TooLarge {
            what: format!("blob {}", descriptor.digest),
            limit,
        });
    }
    let stream = source.blob(descriptor).await?;
    let mut reader = VerifyingReader::new(stream, descriptor)?;
    let mut out = Vec::with_capacity(size as usize);
    reader
        .read_to_end(&mut out)
        .await
        .map_err(|e| ImageError::from_io(format!("reading blob {}", descriptor.digest), e))?;
    Ok(out)
}

/// Read a manifest document from a stream with a size cap, checking `expected` if given.
/// Used by transports to implement [`ImageSource::manifest`].
pub async fn read_manifest_bytes(
    mut reader: impl AsyncRead + Unpin,
    media_type: strata_spec::MediaType,
    expected: Option<&Digest>,
    limit: u64,
    what: &str,
) -> Result<RawManifest, ImageError> {
    let mut bytes = Vec::new();
    (&mut reader)
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .await
        .map_err(|e| ImageError::from_io(format!("reading {what}"), e))?;
    if bytes.len() as u64 > limit {
        return Err(ImageError::TooLarge {
            what: what.to_string(),
            limit,
        });
    }
    if let Some(d) = expected {
        let actual = d.same_algorithm_of(&bytes);
        if &actual != d {
            return Err(ImageError::DigestMismatch {
                expected: d.clone(),
                actual,
            });
        }
    }
    let mut raw = RawManifest::new(bytes, media_type);
    if let Some(d) = expected {
        raw.digest = d.clone();
    }
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn run(data: &'static [u8], descriptor: &Descriptor) -> Result<Vec<u8>, ImageError> {
        let mut r = VerifyingReader::new(Box::pin(data), descriptor)?;
        let mut out = Vec::new();
        r.read_to_end(&mut out)
            .await
            .map_err(|e| ImageError::from_io("t", e))?;
        Ok(out)
    }

    #[tokio::test]
    async fn verifies_digest_and_size() {
        let good = Descriptor::of_bytes("x", b"hello");
        assert_eq!(run(b"hello", &good).await.unwrap(), b"hello");
        let err = run(b"hellO", &good).await.unwrap_err();
        assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
        let err = run(b"hell", &good).await.unwrap_err();
        assert!(
            matches!(err, ImageError::SizeMismatch { actual: 4, .. }),
            "{err}"
        );
        let err = run(b"hello!", &good).await.unwrap_err();
        assert!(
            matches!(err, ImageError::SizeMismatch { actual: 6, .. }),
            "{err}"
        );
        let mut negative = good.clone();
        negative.size = -1;
        assert!(run(b"hello", &negative).await.is_err());
    }
}
