//! Blob uploads: verified while streaming, spooled (or re-opened from a source that can) so a
//! broken request can be resumed or restarted, monolithic or chunked.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use reqwest::header::{self, HeaderValue};
use reqwest::{Method, StatusCode};
use strata_image::{BlobReader, ImageError, ImageSource};
use strata_spec::{Descriptor, Digest, DigestHasher};
use tokio::io::AsyncReadExt;
use url::Url;

use crate::client::{
    Answer, Body, Host, Inner, Lane, Request, authority, backoff, error_from, redact_url,
};
use crate::{RegistryError, UploadSpool};

/// Bytes read from the source per step (and per spool write).
const READ_CHUNK: usize = 256 * 1024;
/// A step returns once it holds this much (fewer, larger writes to the spool and socket).
const MIN_STEP: usize = 64 * 1024;
/// Restarts from POST when the registry says the upload session is unknown, without a failure
/// of ours before it (distribution-spec: the session may expire).
const MAX_SESSION_RESTARTS: u32 = 1;

/// How bytes already sent can be had again when a request must be repeated.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resend {
    /// From the spool file ([`RegistryOptions::upload_spool`](crate::RegistryOptions)), or not
    /// at all when it is off.
    Spool,
    /// By re-opening the blob at its source and reading (and hashing) it again from the start:
    /// nothing is written aside while the upload streams.
    Reopen,
}

/// The blob being uploaded: read from the source, hashed, sized and spooled (or, for a source
/// that can re-open it, re-read after [`UploadData::restart`]).
#[derive(Clone)]
pub(crate) struct UploadData {
    shared: Arc<tokio::sync::Mutex<Shared>>,
    size: u64,
    digest: Digest,
    resend: Resend,
}

struct Shared {
    source: BlobReader,
    spool: Option<Arc<std::fs::File>>,
    /// Bytes pulled from the current source stream so far (hashed, in order).
    read: u64,
    /// Most bytes read from any stream of this blob: after a restart the new stream may be
    /// read (and hashed, not sent) up to here to reach the offset the registry continues at.
    high_water: u64,
    hasher: Option<DigestHasher>,
    verified: bool,
    /// A failure of the source or of verification: final, never retried.
    error: Option<String>,
    kind: Option<SourceFailure>,
}

#[derive(Clone)]
enum SourceFailure {
    Digest { actual: Digest },
    Size { actual: u64, more: &'static str },
    Read,
}

impl UploadData {
    pub(crate) fn new(
        source: BlobReader,
        descriptor: &Descriptor,
        spool: &UploadSpool,
        resend: Resend,
    ) -> Result<Self, RegistryError> {
        let size = descriptor
            .size_u64()
            .map_err(|source| RegistryError::Spec {
                what: format!("descriptor of {}", descriptor.digest),
                source,
            })?;
        let spool = match spool {
            _ if resend == Resend::Reopen => None,
            UploadSpool::Off => None,
            UploadSpool::TempDir => Some(tempfile::tempfile()),
            UploadSpool::Dir(d) => Some(tempfile::tempfile_in(d)),
        }
        .transpose()
        .map_err(|e| RegistryError::io("creating the upload spool file", e))?
        .map(Arc::new);
        Ok(UploadData {
            shared: Arc::new(tokio::sync::Mutex::new(Shared {
                source,
                spool,
                read: 0,
                high_water: 0,
                hasher: Some(DigestHasher::new(descriptor.digest.algorithm())),
                verified: false,
                error: None,
                kind: None,
            })),
            size,
            digest: descriptor.digest.clone(),
            resend,
        })
    }

    /// The verification/source error, if the source failed.
    pub(crate) async fn failure(&self) -> Option<RegistryError> {
        let sh = self.shared.lock().await;
        let kind = sh.kind.clone()?;
        Some(match kind {
            SourceFailure::Digest { actual } => RegistryError::DigestMismatch {
                expected: self.digest.clone(),
                actual,
            },
            SourceFailure::Size { actual, more } => RegistryError::SizeMismatch {
                digest: self.digest.clone(),
                expected: self.size,
                actual,
                more,
            },
            SourceFailure::Read => RegistryError::Source(ImageError::Io {
                context: format!(
                    "reading blob {} to upload: {}",
                    self.digest,
                    sh.error.clone().unwrap_or_default()
                ),
                source: std::io::Error::other("source stream failed"),
            }),
        })
    }

    /// Can a request start at `offset`? (Anything already read needs the spool, or a source
    /// to re-open.)
    async fn can_start_at(&self, offset: u64) -> bool {
        let sh = self.shared.lock().await;
        if self.resend == Resend::Reopen {
            return offset <= sh.read.max(sh.high_water);
        }
        offset <= sh.read && (offset == sh.read || sh.spool.is_some())
    }

    /// Must the source be re-opened before a request can start at `offset`?
    async fn needs_restart(&self, offset: u64) -> bool {
        let sh = self.shared.lock().await;
        self.resend == Resend::Reopen && offset < sh.read
    }

    /// Continue from a fresh stream of the same blob: it is read and hashed again from the
    /// start, so the digest check at the end covers exactly the bytes that were sent.
    async fn restart(&self, source: BlobReader) {
        let mut sh = self.shared.lock().await;
        sh.high_water = sh.high_water.max(sh.read);
        sh.source = source;
        sh.read = 0;
        sh.hasher = Some(DigestHasher::new(self.digest.algorithm()));
        sh.verified = false;
    }

    /// Bytes ever read from the source (what the registry can at most have received).
    async fn read_so_far(&self) -> u64 {
        let sh = self.shared.lock().await;
        sh.read.max(sh.high_water)
    }

    /// After a restart: read and hash (without sending) up to `to`, at most the high-water
    /// mark of earlier streams.
    async fn fast_forward(&self, sh: &mut Shared, to: u64) -> Result<(), std::io::Error> {
        if to > sh.high_water {
            return Err(std::io::Error::other("upload offset beyond the bytes read"));
        }
        let mut scratch = vec![0u8; READ_CHUNK];
        while sh.read < to {
            let want = (to - sh.read).min(READ_CHUNK as u64) as usize;
            match sh.source.read(&mut scratch[..want]).await {
                Ok(0) => {
                    let actual = sh.read;
                    return Err(self.fail(
                        sh,
                        SourceFailure::Size {
                            actual,
                            more: " (stream ended early when re-read)",
                        },
                        format!(
                            "blob {} ended after {actual} of {} bytes when re-read",
                            self.digest, self.size
                        ),
                    ));
                }
                Ok(n) => {
                    if let Some(h) = sh.hasher.as_mut() {
                        h.update(&scratch[..n]);
                    }
                    sh.read += n as u64;
                }
                Err(e) => return Err(self.fail(sh, SourceFailure::Read, e.to_string())),
            }
        }
        Ok(())
    }

    /// Make sure the whole source was read and verified (for a final PUT without body).
    async fn ensure_verified(&self) -> Result<(), RegistryError> {
        {
            let mut sh = self.shared.lock().await;
            if !sh.verified && sh.error.is_none() {
                if sh.read < self.size && self.resend == Resend::Reopen {
                    // Re-opened after the registry had every byte: hash the rest again.
                    let _ = self.fast_forward(&mut sh, self.size).await;
                }
                if sh.error.is_none() {
                    if sh.read != self.size {
                        return Err(RegistryError::protocol(
                            "upload",
                            format!("blob {}: final PUT before all bytes were sent", self.digest),
                        ));
                    }
                    self.finish(&mut sh).await;
                }
            }
            if sh.verified {
                return Ok(());
            }
        }
        Err(self
            .failure()
            .await
            .unwrap_or_else(|| RegistryError::protocol("upload", "blob not verified")))
    }

    fn fail(&self, sh: &mut Shared, kind: SourceFailure, message: String) -> std::io::Error {
        sh.error = Some(message.clone());
        sh.kind = Some(kind);
        std::io::Error::other(message)
    }

    /// At the declared size: the source must be at EOF and the digest must match.
    async fn finish(&self, sh: &mut Shared) {
        let mut probe = [0u8; 1];
        match sh.source.read(&mut probe).await {
            Ok(0) => {}
            Ok(_) => {
                let _ = self.fail(
                    sh,
                    SourceFailure::Size {
                        actual: self.size + 1,
                        more: " or more (stream longer than declared)",
                    },
                    format!("blob {} is longer than {} bytes", self.digest, self.size),
                );
                return;
            }
            Err(e) => {
                let _ = self.fail(sh, SourceFailure::Read, e.to_string());
                return;
            }
        }
        let Some(hasher) = sh.hasher.take() else {
            return;
        };
        let actual = hasher.finish();
        if actual != self.digest {
            let _ = self.fail(
                sh,
                SourceFailure::Digest {
                    actual: actual.clone(),
                },
                format!("blob {} hashes to {actual}", self.digest),
            );
            return;
        }
        sh.verified = true;
    }

    /// The next piece at `pos` (at most `max` bytes): from the spool if already read, else
    /// from the source (hashing and spooling it). The piece that completes the blob is only
    /// returned after the digest has been verified.
    ///
    /// Runs on its own task: when hyper drops a failed request's body mid-step, the bytes
    /// already taken from the source still reach the spool and the count (cancel safety).
    async fn piece(&self, pos: u64, max: u64) -> Result<Bytes, std::io::Error> {
        let data = self.clone();
        tokio::spawn(async move { data.piece_inner(pos, max).await })
            .await
            .map_err(std::io::Error::other)?
    }

    async fn piece_inner(&self, pos: u64, max: u64) -> Result<Bytes, std::io::Error> {
        let mut sh = self.shared.lock().await;
        if let Some(e) = &sh.error {
            return Err(std::io::Error::other(e.clone()));
        }
        if pos < sh.read {
            let Some(spool) = sh.spool.clone() else {
                return Err(std::io::Error::other(
                    "the blob is not spooled, its bytes cannot be sent again",
                ));
            };
            let n = (sh.read - pos).min(max).min(READ_CHUNK as u64) as usize;
            drop(sh);
            return tokio::task::spawn_blocking(move || {
                use std::os::unix::fs::FileExt as _;
                let mut buf = vec![0u8; n];
                spool.read_exact_at(&mut buf, pos)?;
                Ok(Bytes::from(buf))
            })
            .await
            .map_err(std::io::Error::other)?;
        }
        if pos > sh.read {
            self.fast_forward(&mut sh, pos).await?;
        }
        let want = (self.size - sh.read).min(max).min(READ_CHUNK as u64) as usize;
        let mut buf = BytesMut::with_capacity(want);
        while buf.len() < want {
            let before = buf.len();
            let mut limited = (&mut sh.source).take((want - before) as u64);
            match limited.read_buf(&mut buf).await {
                Ok(0) => {
                    let actual = sh.read + buf.len() as u64;
                    return Err(self.fail(
                        &mut sh,
                        SourceFailure::Size {
                            actual,
                            more: " (stream ended early)",
                        },
                        format!(
                            "blob {} ended after {actual} of {} bytes",
                            self.digest, self.size
                        ),
                    ));
                }
                Ok(_) => {}
                Err(e) => {
                    let msg = e.to_string();
                    // Keep a verification error of an upstream VerifyingReader as it is.
                    return Err(self.fail(&mut sh, SourceFailure::Read, msg));
                }
            }
            if buf.len() >= MIN_STEP {
                break;
            }
        }
        let bytes = buf.freeze();
        if let Some(h) = sh.hasher.as_mut() {
            h.update(&bytes);
        }
        if let Some(spool) = sh.spool.clone() {
            let at = sh.read;
            let data = bytes.clone();
            tokio::task::spawn_blocking(move || {
                use std::os::unix::fs::FileExt as _;
                spool.write_all_at(&data, at)
            })
            .await
            .map_err(std::io::Error::other)?
            .map_err(|e| std::io::Error::other(format!("writing the upload spool: {e}")))?;
        }
        sh.read += bytes.len() as u64;
        if sh.read == self.size {
            self.finish(&mut sh).await;
            if let Some(e) = &sh.error {
                return Err(std::io::Error::other(e.clone()));
            }
        }
        Ok(bytes)
    }

    /// A request body of bytes `[from, from+len)`.
    fn body(&self, from: u64, len: u64) -> reqwest::Body {
        let data = self.clone();
        let end = from + len;
        let stream = futures::stream::unfold((data, from), move |(data, pos)| async move {
            if pos >= end {
                return None;
            }
            match data.piece(pos, end - pos).await {
                Ok(b) => {
                    let next = pos + b.len() as u64;
                    Some((Ok::<Bytes, std::io::Error>(b), (data, next)))
                }
                // An error ends the body: hyper aborts the request, the registry never sees
                // the complete blob.
                Err(e) => Some((Err(e), (data, end))),
            }
        });
        reqwest::Body::wrap_stream(stream)
    }
}

/// How a piece of the upload went.
enum Step {
    Done(Answer),
    /// Worth retrying (connection broke, 5xx/429/408, 416, 401 once).
    Retry(RegistryError),
    /// The session is gone (404): start again from POST.
    Gone(RegistryError),
    Fatal(RegistryError),
}

pub(crate) struct Upload<'a> {
    pub(crate) inner: &'a Inner,
    pub(crate) host: &'a Host,
    pub(crate) repository: &'a str,
}

impl Upload<'_> {
    fn scopes(&self) -> Vec<String> {
        vec![format!("repository:{}:pull,push", self.repository)]
    }
    fn what(&self, digest: &Digest) -> String {
        format!("upload of blob {digest} to {}", self.repository)
    }

    /// `Location` of an upload answer, resolved and checked (RELIABILITY N4: another host
    /// gets no credentials — `send` only adds them on the registry's origin — and a
    /// downgrade to plain HTTP or a link-local target is refused).
    fn location(&self, answer: &Answer, what: &str) -> Result<Url, RegistryError> {
        let here = authority(&answer.url);
        let loc = answer
            .response
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                RegistryError::protocol(&here, format!("{what}: no Location in the answer"))
            })?;
        let url = answer
            .url
            .join(loc)
            .map_err(|_| RegistryError::protocol(&here, format!("{what}: unusable Location")))?;
        match url.scheme() {
            "https" => {}
            "http" if answer.url.scheme() == "http" => {}
            _ => {
                return Err(RegistryError::protocol(
                    &here,
                    format!(
                        "{what}: upload Location {} refused (scheme)",
                        redact_url(&url)
                    ),
                ));
            }
        }
        if let Some(url::Host::Ipv4(a)) = url.host()
            && a.is_link_local()
        {
            return Err(RegistryError::protocol(
                &here,
                format!("{what}: upload Location on a link-local address refused"),
            ));
        }
        if !self.host.same_origin(&url) {
            tracing::debug!(
                what,
                to = authority(&url),
                "upload continues on another host, without credentials"
            );
        }
        Ok(url)
    }

    /// POST a new upload session; returns its Location.
    async fn start(&self, digest: &Digest) -> Result<Url, RegistryError> {
        let what = self.what(digest);
        let url = self
            .host
            .base
            .join(&format!("v2/{}/blobs/uploads/", self.repository))
            .map_err(|e| RegistryError::protocol(&self.host.host_port(), e.to_string()))?;
        let mut req = Request::new(Method::POST, url, self.scopes(), what.clone());
        req.body = Body::Bytes(Bytes::new());
        req.headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        let answer = self.inner.send(self.host, req).await?;
        if answer.response.status() != StatusCode::ACCEPTED {
            return Err(error_from(answer, &self.host.host_port(), &what, 1).await);
        }
        self.location(&answer, &what)
    }

    /// Try a mount from `from`; true when the registry mounted it (201).
    pub(crate) async fn mount(&self, digest: &Digest, from: &str) -> Result<bool, RegistryError> {
        let what = format!("mount of blob {digest} from {from} to {}", self.repository);
        let mut url = self
            .host
            .base
            .join(&format!("v2/{}/blobs/uploads/", self.repository))
            .map_err(|e| RegistryError::protocol(&self.host.host_port(), e.to_string()))?;
        url.query_pairs_mut()
            .append_pair("mount", &digest.to_string())
            .append_pair("from", from);
        let scopes = vec![
            format!("repository:{}:pull,push", self.repository),
            format!("repository:{from}:pull"),
        ];
        let mut req = Request::new(Method::POST, url, scopes, what.clone());
        req.body = Body::Bytes(Bytes::new());
        req.headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        let answer = self.inner.send(self.host, req).await?;
        match answer.response.status() {
            StatusCode::CREATED => {
                tracing::debug!(%digest, from, to = self.repository, "mounted blob");
                Ok(true)
            }
            StatusCode::ACCEPTED => {
                // Mount refused; the registry opened an upload session instead. Close it.
                if let Ok(loc) = self.location(&answer, &what) {
                    let req = Request::new(Method::DELETE, loc, self.scopes(), what.clone());
                    let _ = self.inner.send(self.host, req).await;
                }
                Ok(false)
            }
            s if s.is_client_error() => {
                tracing::debug!(%digest, from, status = %s, "mount refused");
                Ok(false)
            }
            _ => Err(error_from(answer, &self.host.host_port(), &what, 1).await),
        }
    }

    /// Send `[offset, offset+len)` as a PATCH (`last == false`) or as the final PUT.
    async fn send_piece(
        &self,
        data: &UploadData,
        location: &Url,
        offset: u64,
        len: u64,
        final_put: bool,
    ) -> Step {
        let what = self.what(&data.digest);
        let mut url = location.clone();
        let method = if final_put {
            url.query_pairs_mut()
                .append_pair("digest", &data.digest.to_string());
            Method::PUT
        } else {
            Method::PATCH
        };
        let mut req = Request::new(method, url, self.scopes(), what.clone());
        req.lane = Lane::Blob;
        req.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        req.headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        if !final_put
            && len > 0
            && let Ok(v) = HeaderValue::from_str(&format!("{}-{}", offset, offset + len - 1))
        {
            req.headers.insert(header::CONTENT_RANGE, v);
        }
        req.body = if len == 0 {
            Body::Bytes(Bytes::new())
        } else {
            Body::Once(Some(data.body(offset, len)))
        };
        let result = self.inner.send(self.host, req).await;
        if let Some(e) = data.failure().await {
            return Step::Fatal(e);
        }
        match result {
            Ok(answer) => {
                let status = answer.response.status();
                let ok = if final_put {
                    status == StatusCode::CREATED
                } else {
                    status == StatusCode::ACCEPTED || status == StatusCode::NO_CONTENT
                };
                if ok {
                    return Step::Done(answer);
                }
                let err = error_from(answer, &self.host.host_port(), &what, 1).await;
                match status.as_u16() {
                    404 => Step::Gone(err),
                    401 | 408 | 416 | 429 | 500 | 502 | 503 | 504 => Step::Retry(err),
                    _ => Step::Fatal(err),
                }
            }
            Err(e @ RegistryError::Connection { .. }) => Step::Retry(e),
            Err(
                e @ RegistryError::Http {
                    status: 408 | 429 | 500 | 502 | 503 | 504,
                    ..
                },
            ) => Step::Retry(e),
            Err(e @ RegistryError::NotFound { .. }) => Step::Gone(e),
            Err(e) => Step::Fatal(e),
        }
    }

    /// `GET` the upload: where to continue (`Range: 0-E` → E+1) and the current Location.
    async fn status(
        &self,
        location: &Url,
        digest: &Digest,
    ) -> Result<Option<(u64, Url)>, RegistryError> {
        let what = format!("status of {}", self.what(digest));
        let req = Request::new(Method::GET, location.clone(), self.scopes(), what.clone());
        let answer = self.inner.send(self.host, req).await?;
        let status = answer.response.status();
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if status != StatusCode::NO_CONTENT && status != StatusCode::OK {
            return Err(error_from(answer, &self.host.host_port(), &what, 1).await);
        }
        let next = parse_upload_range(answer.response.headers(), None).ok_or_else(|| {
            RegistryError::protocol(
                &authority(&answer.url),
                format!("{what}: no usable Range header"),
            )
        })?;
        let loc = if answer.response.headers().contains_key(header::LOCATION) {
            self.location(&answer, &what)?
        } else {
            location.clone()
        };
        Ok(Some((next, loc)))
    }

    /// Upload a blob. With `reopen`, bytes to send again after a broken request are read
    /// again from that source (from the start, hashed again) instead of from a spool file.
    pub(crate) async fn push(
        &self,
        descriptor: &Descriptor,
        source: BlobReader,
        reopen: Option<&dyn ImageSource>,
    ) -> Result<(), RegistryError> {
        let options = &self.inner.options;
        let resend = if reopen.is_some() {
            Resend::Reopen
        } else {
            Resend::Spool
        };
        let data = UploadData::new(source, descriptor, &options.upload_spool, resend)?;
        let size = data.size;
        let digest = &descriptor.digest;
        let max_attempts = options.retry.max_attempts.max(1);
        let mut failures: u32 = 0;
        let mut restarts: u32 = 0;
        let mut auth_retried = false;
        'session: loop {
            let mut location = self.start(digest).await?;
            let mut offset: u64 = 0;
            loop {
                if let Some(src) = reopen
                    && data.needs_restart(offset).await
                {
                    tracing::debug!(%digest, offset, "re-opening the blob at its source to send it again");
                    let fresh = src.blob(descriptor).await.map_err(RegistryError::Source)?;
                    data.restart(fresh).await;
                }
                let remaining = size - offset;
                let (len, final_put) = match options.chunk_size {
                    Some(c) if remaining > 0 => (remaining.min(c.max(1)), false),
                    Some(_) => (0, true),
                    None => (remaining, true),
                };
                if final_put && len == 0 {
                    data.ensure_verified().await?;
                }
                let step = self
                    .send_piece(&data, &location, offset, len, final_put)
                    .await;
                let err = match step {
                    Step::Done(answer) => {
                        if final_put {
                            tracing::debug!(%digest, size, repository = self.repository, "uploaded blob");
                            return Ok(());
                        }
                        let next =
                            parse_upload_range(answer.response.headers(), Some(offset + len))
                                .unwrap_or(offset + len);
                        if next != offset + len {
                            tracing::debug!(%digest, expected = offset + len, next, "registry reports another upload offset");
                        }
                        if next > data.read_so_far().await {
                            return Err(RegistryError::protocol(
                                &authority(&answer.url),
                                format!(
                                    "{}: registry claims {next} bytes, more than were sent",
                                    self.what(digest)
                                ),
                            ));
                        }
                        if answer.response.headers().contains_key(header::LOCATION) {
                            location = self.location(&answer, &self.what(digest))?;
                        }
                        offset = next;
                        continue;
                    }
                    Step::Fatal(e) => return Err(e),
                    Step::Gone(e) => {
                        restarts += 1;
                        if restarts > MAX_SESSION_RESTARTS {
                            return Err(e);
                        }
                        if !data.can_start_at(0).await {
                            return Err(e);
                        }
                        tracing::debug!(%digest, error = %e, "upload session gone, starting again");
                        continue 'session;
                    }
                    Step::Retry(e) => e,
                };
                // A retryable failure: wait, ask the registry where it stands, go on from there.
                if matches!(err, RegistryError::Unauthorized { .. }) {
                    if auth_retried {
                        return Err(err);
                    }
                    auth_retried = true;
                } else {
                    failures += 1;
                    if failures >= max_attempts {
                        return Err(err);
                    }
                    tokio::time::sleep(backoff(&options.retry, failures)).await;
                }
                tracing::debug!(%digest, offset, error = %err, "upload piece failed, checking the session");
                match self.status(&location, digest).await {
                    Ok(Some((next, loc))) if data.can_start_at(next).await => {
                        offset = next;
                        location = loc;
                    }
                    Ok(_) | Err(_) if data.can_start_at(0).await => {
                        // Session gone or unusable: restart from POST with the spooled bytes.
                        continue 'session;
                    }
                    _ => return Err(err),
                }
            }
        }
    }
}

/// `Range: 0-E` (or `bytes=0-E`) of an upload answer → the next offset E+1.
///
/// `0-0` is ambiguous: distribution sends it both for an empty session and for one byte.
/// `after` is what the caller believes (`Some(n)` after sending n bytes successfully); with
/// `0-0` it decides between 0 and 1, and without belief 0 is assumed (re-sending a byte is
/// harmless, skipping one is not).
fn parse_upload_range(headers: &reqwest::header::HeaderMap, after: Option<u64>) -> Option<u64> {
    let v = headers.get(header::RANGE)?.to_str().ok()?.trim();
    let v = v.strip_prefix("bytes=").unwrap_or(v);
    let (start, end) = v.split_once('-')?;
    if start.trim() != "0" {
        return None;
    }
    let end = end.trim();
    if end == "-1" {
        return Some(0);
    }
    let end = end.parse::<u64>().ok()?;
    if end == 0 {
        return Some(if after == Some(1) { 1 } else { 0 });
    }
    Some(end + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderMap;

    #[test]
    fn upload_range() {
        let mut h = HeaderMap::new();
        assert_eq!(parse_upload_range(&h, None), None);
        h.insert(header::RANGE, HeaderValue::from_static("0-99"));
        assert_eq!(parse_upload_range(&h, None), Some(100));
        h.insert(header::RANGE, HeaderValue::from_static("bytes=0-4"));
        assert_eq!(parse_upload_range(&h, Some(5)), Some(5));
        h.insert(header::RANGE, HeaderValue::from_static("5-9"));
        assert_eq!(parse_upload_range(&h, None), None);
        h.insert(header::RANGE, HeaderValue::from_static("0--1"));
        assert_eq!(parse_upload_range(&h, None), Some(0));
        h.insert(header::RANGE, HeaderValue::from_static("0-0"));
        assert_eq!(parse_upload_range(&h, None), Some(0));
        assert_eq!(parse_upload_range(&h, Some(1)), Some(1));
    }
}
