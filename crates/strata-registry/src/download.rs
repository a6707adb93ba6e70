//! Blob downloads that resume with `Range` after a broken body.

use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use reqwest::header::{self, HeaderValue};
use reqwest::{Method, StatusCode};
use strata_image::{BlobReader, ImageError};
use strata_spec::{Descriptor, Digest};
use tokio_util::io::StreamReader;

use crate::RegistryError;
use crate::client::{Follow, Host, Inner, Request, authority, backoff, error_from};
use crate::source::blob_url;

/// Most resumes of one blob, whatever progress each made (a server dribbling a byte per
/// connection must not keep us forever).
const MAX_RESUMES: u32 = 64;

type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, reqwest::Error>> + Send>>;

struct State {
    inner: Arc<Inner>,
    host: Arc<Host>,
    repository: String,
    digest: Digest,
    size: u64,
    url: url::Url,
    body: Option<ByteStream>,
    delivered: u64,
    /// Failures since the last byte arrived.
    failures: u32,
    resumes: u32,
    last_cause: String,
    done: bool,
}

fn to_io(e: RegistryError) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, ImageError::from(e))
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
    let answer = inner.send(&host, req).await?;
    if !answer.response.status().is_success() {
        return Err(error_from(answer, &host.host_port(), &what, 1).await);
    }
    if answer.response.content_length().is_some_and(|l| l > size) {
        return Err(RegistryError::SizeMismatch {
            digest: descriptor.digest.clone(),
            expected: size,
            actual: answer.response.content_length().unwrap_or(0),
            more: " (Content-Length larger than the descriptor)",
        });
    }
    let state = State {
        inner,
        host,
        repository,
        digest: descriptor.digest.clone(),
        size,
        url,
        body: Some(Box::pin(answer.response.bytes_stream())),
        delivered: 0,
        failures: 0,
        resumes: 0,
        last_cause: String::new(),
        done: false,
    };
    let stream = futures::stream::unfold(state, |mut st| async move {
        if st.done {
            return None;
        }
        match st.next_chunk().await {
            Ok(Some(b)) => Some((Ok(b), st)),
            Ok(None) => None,
            Err(e) => {
                st.done = true;
                Some((Err(to_io(e)), st))
            }
        }
    });
    Ok(Box::pin(StreamReader::new(stream)))
}

impl State {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, RegistryError> {
        loop {
            if let Some(body) = self.body.as_mut() {
                match body.next().await {
                    Some(Ok(chunk)) => {
                        if chunk.is_empty() {
                            continue;
                        }
                        let len = chunk.len() as u64;
                        if self.delivered + len > self.size {
                            // Abort at size+1: never hand out more than the descriptor says.
                            return Err(RegistryError::SizeMismatch {
                                digest: self.digest.clone(),
                                expected: self.size,
                                actual: self.delivered + len,
                                more: " or more (body longer than the descriptor)",
                            });
                        }
                        self.delivered += len;
                        self.failures = 0;
                        return Ok(Some(chunk));
                    }
                    Some(Err(e)) => {
                        self.last_cause = format!("body broke: {}", e.without_url());
                        self.body = None;
                    }
                    None if self.delivered == self.size => return Ok(None),
                    None => {
                        self.last_cause = "body ended early".into();
                        self.body = None;
                    }
                }
            }
            self.resume().await?;
        }
    }

    /// Ask for the rest with `Range: bytes=N-`; accept only the exact continuation.
    async fn resume(&mut self) -> Result<(), RegistryError> {
        let host_port = self.host.host_port();
        let policy = &self.inner.options.retry;
        self.failures += 1;
        self.resumes += 1;
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
            self.body = Some(Box::pin(answer.response.bytes_stream()));
            return Ok(());
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
        self.body = Some(Box::pin(answer.response.bytes_stream()));
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
