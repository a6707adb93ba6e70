//! Blob downloads that resume with `Range` after a broken body.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use futures::Stream;
use reqwest::header::{self, HeaderValue};
use reqwest::{Method, StatusCode};
use strata_image::{BlobReader, ImageError};
use strata_spec::{Descriptor, Digest};
use tokio::io::{AsyncRead, ReadBuf};

use crate::RegistryError;
use crate::client::{Answer, Follow, Host, Inner, Lane, Request, authority, backoff, error_from};
use crate::direct::DirectBody;
use crate::source::blob_url;
use crate::speed::SpeedCheck;

/// Most resumes of one blob, whatever progress each made (a server dribbling a byte per
/// connection must not keep us forever).
const MAX_RESUMES: u32 = 64;

type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, reqwest::Error>> + Send>>;

/// Where the bytes of the current response come from.
enum Body {
    /// reqwest's chunks (TLS, proxies, redirects to other hosts); `pending` is the part of
    /// the last chunk not handed out yet.
    Stream { stream: ByteStream, pending: Bytes },
    /// Read from the socket into the caller's buffer ([`crate::direct`]).
    Direct(Box<DirectBody>),
}

impl Body {
    fn of(answer: Answer) -> Body {
        match answer.direct {
            Some(d) => Body::Direct(d),
            None => Body::Stream {
                stream: Box::pin(answer.response.bytes_stream()),
                pending: Bytes::new(),
            },
        }
    }
}

struct State {
    inner: Arc<Inner>,
    host: Arc<Host>,
    repository: String,
    digest: Digest,
    size: u64,
    url: url::Url,
    /// `None` after the body broke: the next read resumes.
    body: Option<Body>,
    /// Bytes received so far (handed out, or pending in the last chunk).
    delivered: u64,
    /// Failures since the last byte arrived.
    failures: u32,
    resumes: u32,
    last_cause: String,
    finished: bool,
    /// The current body's rate against the low-speed limit.
    speed: SpeedCheck,
    /// Set when the current body fell below the low-speed limit: it is dropped (and the
    /// blob resumed) once the bytes already received are handed out.
    abandon: Option<String>,
    /// Bodies given up for the low-speed limit; bytes arriving do not reset this (a slow
    /// server sends some on every connection).
    slow_aborts: u32,
}

/// What one step of reading the current body gave.
enum Step {
    /// Bytes were put in the buffer, or the blob is complete (nothing put).
    Read,
    Pending,
    /// The body broke or ended early: resume.
    Resume,
    Fail(RegistryError),
}

type Resuming = Pin<Box<dyn Future<Output = (Box<State>, Result<(), RegistryError>)> + Send>>;

/// The blob as an [`AsyncRead`]: never more than the descriptor's size, resumed after a
/// broken body (only with an exactly continuing 206).
struct Download {
    /// `None` while `resuming` owns it, and for good after a failure.
    state: Option<Box<State>>,
    resuming: Option<Resuming>,
    failure: Option<String>,
}

fn to_io(e: RegistryError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, ImageError::from(e))
}

pub(crate) async fn open(
    inner: Arc<Inner>,
    host: Arc<Host>,
    repository: String,
    descriptor: &Descriptor,
) -> Result<BlobReader, RegistryError> {
    let size = descriptor
        .size_u64()
        .map_err(|source| RegistryError::Spec {
            what: format!("descriptor of {}", descriptor.digest),
            source,
        })?;
    let url = blob_url(&host, &repository, &descriptor.digest)?;
    let what = format!("blob {} in {repository}", descriptor.digest);
    let mut req = Request::new(
        Method::GET,
        url.clone(),
        vec![format!("repository:{repository}:pull")],
        what.clone(),
    );
    req.follow = Follow::Redirects;
    req.lane = Lane::BlobDirect;
    let answer = inner.send(&host, req).await?;
    if !answer.response.status().is_success() {
        return Err(error_from(answer, &host.host_port(), &what, 1).await);
    }
    let inner_low_speed = inner.options.low_speed;
    let mut state = State {
        inner,
        host,
        repository,
        digest: descriptor.digest.clone(),
        size,
        url,
        body: None,
        delivered: 0,
        failures: 0,
        resumes: 0,
        last_cause: String::new(),
        finished: false,
        speed: SpeedCheck::new(inner_low_speed),
        abandon: None,
        slow_aborts: 0,
    };
    state.accept(answer)?;
    Ok(Box::pin(Download {
        state: Some(Box::new(state)),
        resuming: None,
        failure: None,
    }))
}

impl AsyncRead for Download {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if let Some(resuming) = this.resuming.as_mut() {
                let Poll::Ready((state, result)) = resuming.as_mut().poll(cx) else {
                    return Poll::Pending;
                };
                this.resuming = None;
                if let Err(e) = result {
                    this.failure = Some(e.to_string());
                    return Poll::Ready(Err(to_io(e)));
                }
                this.state = Some(state);
            }
            let Some(state) = this.state.as_mut() else {
                let why = this.failure.as_deref().unwrap_or("blob download failed");
                return Poll::Ready(Err(io::Error::other(why.to_string())));
            };
            match state.poll_body(cx, buf) {
                Step::Read => return Poll::Ready(Ok(())),
                Step::Pending => return Poll::Pending,
                Step::Fail(e) => {
                    this.state = None;
                    this.failure = Some(e.to_string());
                    return Poll::Ready(Err(to_io(e)));
                }
                Step::Resume => {
                    let Some(mut state) = this.state.take() else {
                        continue;
                    };
                    this.resuming = Some(Box::pin(async move {
                        let result = state.resume().await;
                        (state, result)
                    }));
                }
            }
        }
    }
}

impl State {
    fn poll_body(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Step {
        loop {
            if self.finished || buf.remaining() == 0 {
                return Step::Read;
            }
            let drained =
                !matches!(&self.body, Some(Body::Stream { pending, .. }) if !pending.is_empty());
            // Not when everything is in: there is nothing left to resume.
            if drained
                && self.delivered < self.size
                && let Some(cause) = self.abandon.take()
            {
                self.last_cause = cause;
                self.slow_aborts += 1;
                self.body = None;
            }
            match self.body.as_mut() {
                None => return Step::Resume,
                Some(Body::Direct(body)) => {
                    if self.delivered == self.size {
                        self.finished = true;
                        return Step::Read;
                    }
                    let before = buf.filled().len();
                    match Pin::new(body.as_mut()).poll_read(cx, buf) {
                        Poll::Pending => {
                            self.speed.waiting();
                            return Step::Pending;
                        }
                        Poll::Ready(Ok(())) => {
                            let n = (buf.filled().len() - before) as u64;
                            if n == 0 {
                                self.last_cause = "body ended early".into();
                                self.body = None;
                                continue;
                            }
                            self.delivered += n;
                            self.failures = 0;
                            self.abandon = self.speed.arrived(n).err();
                            return Step::Read;
                        }
                        Poll::Ready(Err(e)) => {
                            self.last_cause = format!("body broke: {e}");
                            self.body = None;
                        }
                    }
                }
                Some(Body::Stream { stream, pending }) => {
                    if !pending.is_empty() {
                        let n = pending.len().min(buf.remaining());
                        buf.put_slice(&pending[..n]);
                        pending.advance(n);
                        return Step::Read;
                    }
                    match stream.as_mut().poll_next(cx) {
                        Poll::Pending => {
                            self.speed.waiting();
                            return Step::Pending;
                        }
                        Poll::Ready(Some(Ok(chunk))) => {
                            let len = chunk.len() as u64;
                            if self.delivered + len > self.size {
                                // Abort at size+1: never hand out more than the descriptor says.
                                return Step::Fail(RegistryError::SizeMismatch {
                                    digest: self.digest.clone(),
                                    expected: self.size,
                                    actual: self.delivered + len,
                                    more: " or more (body longer than the descriptor)",
                                });
                            }
                            self.delivered += len;
                            if len > 0 {
                                self.failures = 0;
                            }
                            *pending = chunk;
                            self.abandon = self.speed.arrived(len).err();
                        }
                        Poll::Ready(Some(Err(e))) => {
                            self.last_cause = format!("body broke: {}", e.without_url());
                            self.body = None;
                        }
                        Poll::Ready(None) if self.delivered == self.size => {
                            self.finished = true;
                            return Step::Read;
                        }
                        Poll::Ready(None) => {
                            self.last_cause = "body ended early".into();
                            self.body = None;
                        }
                    }
                }
            }
        }
    }

    /// Ask for the rest with `Range: bytes=N-`; accept only the exact continuation.
    async fn resume(&mut self) -> Result<(), RegistryError> {
        let host_port = self.host.host_port();
        let policy = &self.inner.options.retry;
        self.failures += 1;
        self.resumes += 1;
        if self.slow_aborts >= policy.max_attempts.max(1) {
            return Err(RegistryError::TooSlow {
                host: host_port,
                what: format!("blob {} in {}", self.digest, self.repository),
                detail: format!(
                    "{} on {} connection(s) in a row; gave up at byte {} of {}",
                    self.last_cause, self.slow_aborts, self.delivered, self.size
                ),
            });
        }
        if self.failures >= policy.max_attempts.max(1) || self.resumes > MAX_RESUMES {
            return Err(RegistryError::protocol(
                &host_port,
                format!(
                    "blob {}: {} at byte {} of {}; gave up after {} resume(s)",
                    self.digest,
                    self.last_cause,
                    self.delivered,
                    self.size,
                    self.resumes - 1
                ),
            ));
        }
        let wait = backoff(policy, self.failures);
        tracing::debug!(digest = %self.digest, at = self.delivered, cause = self.last_cause, wait_ms = wait.as_millis() as u64, "resuming blob download");
        tokio::time::sleep(wait).await;
        let what = format!(
            "blob {} in {} (resume at byte {})",
            self.digest, self.repository, self.delivered
        );
        let mut req = Request::new(
            Method::GET,
            self.url.clone(),
            vec![format!("repository:{}:pull", self.repository)],
            what.clone(),
        );
        req.follow = Follow::Redirects;
        req.lane = Lane::BlobDirect;
        if self.delivered > 0 {
            let range = format!("bytes={}-", self.delivered);
            req.headers.insert(
                header::RANGE,
                HeaderValue::from_str(&range)
                    .map_err(|_| RegistryError::protocol(&host_port, "bad range"))?,
            );
        }
        let answer = match self.inner.send(&self.host, req).await {
            Ok(a) => a,
            Err(RegistryError::Connection { source, .. }) => {
                // Counted as one more failure; the next loop turn tries again.
                self.last_cause = format!("resume request failed: {}", source);
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let status = answer.response.status();
        if self.delivered == 0 && status == StatusCode::OK {
            return self.accept(answer);
        }
        if status != StatusCode::PARTIAL_CONTENT {
            if !status.is_success() {
                return Err(error_from(answer, &host_port, &what, 1).await);
            }
            return Err(RegistryError::protocol(
                &authority(&answer.url),
                format!(
                    "blob {}: {} at byte {}, and the registry answered the resume request with {status} instead of 206; not splicing two responses",
                    self.digest, self.last_cause, self.delivered
                ),
            ));
        }
        let content_range = answer
            .response
            .headers()
            .get(header::CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        if !range_continues(&content_range, self.delivered, self.size) {
            return Err(RegistryError::protocol(
                &authority(&answer.url),
                format!(
                    "blob {}: resume at byte {} answered with Content-Range {content_range:?}; not splicing",
                    self.digest, self.delivered
                ),
            ));
        }
        self.accept(answer)
    }

    /// Read the rest of the blob from `answer`, unless it announces more than is missing.
    fn accept(&mut self, answer: Answer) -> Result<(), RegistryError> {
        let announced = match &answer.direct {
            Some(d) => Some(d.len()),
            None => answer.response.content_length(),
        };
        if let Some(len) = announced.filter(|l| *l > self.size - self.delivered) {
            return Err(RegistryError::SizeMismatch {
                digest: self.digest.clone(),
                expected: self.size,
                actual: self.delivered + len,
                more: " (Content-Length larger than the descriptor)",
            });
        }
        self.body = Some(Body::of(answer));
        self.speed = SpeedCheck::new(self.inner.options.low_speed);
        self.abandon = None;
        Ok(())
    }
}

/// `bytes START-END/TOTAL` with START = `from`, END = size-1, TOTAL = size or `*`.
fn range_continues(value: &str, from: u64, size: u64) -> bool {
    let Some(rest) = value.trim().strip_prefix("bytes ") else {
        return false;
    };
    let Some((range, total)) = rest.split_once('/') else {
        return false;
    };
    let Some((start, end)) = range.split_once('-') else {
        return false;
    };
    let (Ok(start), Ok(end)) = (start.trim().parse::<u64>(), end.trim().parse::<u64>()) else {
        return false;
    };
    let total_ok = total.trim() == "*" || total.trim().parse::<u64>() == Ok(size);
    start == from && end + 1 == size && total_ok
}

#[cfg(test)]
mod tests {
    use super::range_continues;

    #[test]
    fn content_range_must_continue_exactly() {
        assert!(range_continues("bytes 100-999/1000", 100, 1000));
        assert!(range_continues("bytes 100-999/*", 100, 1000));
        assert!(!range_continues("bytes 0-999/1000", 100, 1000));
        assert!(!range_continues("bytes 100-998/1000", 100, 1000));
        assert!(!range_continues("bytes 100-999/2000", 100, 1000));
        assert!(!range_continues("100-999/1000", 100, 1000));
        assert!(!range_continues("", 100, 1000));
    }
}
