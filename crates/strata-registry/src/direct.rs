//! Blob GETs read from the socket straight into the caller's buffer, over plain HTTP or TLS.
//!
//! reqwest (hyper) reads a body into buffers of its own and hands out `Bytes`, which a blob
//! sink then copies into the aligned buffers it writes with `O_DIRECT`. For a registry on
//! loopback or a LAN that copy, with the page faults of hyper's fresh buffers, was a fifth of
//! the CPU a registry → OCI layout copy spent (`bench/copy.sh`). Here the request goes out by
//! hand on a fresh connection of its own (`Connection: close`; over TLS with the client's
//! [`rustls::ClientConfig`] offering only `http/1.1`, so a registry that speaks HTTP/2 does
//! not put every blob on one connection), the response head is parsed with `httparse`, and
//! the body of a 200/206 with a `Content-Length` is read by the caller itself, never more
//! than that length. Each blob in flight thus has its own connection, decrypted on the task
//! that consumes it.
//!
//! Everything else keeps reqwest's behaviour: a response with another status is read
//! whole (it is small: an error document, a redirect) and handed back as a
//! `reqwest::Response`, so 401 refresh, retries with `Retry-After`, redirects and error
//! bodies work unchanged; proxies, chunked or unframed bodies, oversized heads and any
//! failure before the body starts (a refused certificate included: reqwest then fails the
//! same way, and that error is the one the retry rules know) go through reqwest instead
//! ([`Outcome::NotHandled`]).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use std::sync::Arc;

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, ReadBuf};
use tokio::net::TcpStream;
use url::Url;

use crate::RegistryOptions;

/// Largest response head accepted (a registry's is well under 2 KiB).
const MAX_HEAD: usize = 64 * 1024;
/// Largest body of a non-200 answer read here (error documents); larger ones go to reqwest.
const MAX_SMALL_BODY: u64 = 64 * 1024;
/// Reads of the head: small, so few body bytes are copied out of the leftover.
const HEAD_READ: usize = 8 * 1024;
const MAX_HEADERS: usize = 96;
/// Socket reads under TLS: rustls asks for 4 KiB at a time; a buffer in between turns that
/// into a quarter of the system calls at ~16 KiB, and one per several records at this size.
const TLS_SOCKET_BUFFER: usize = 256 * 1024;

/// Can this GET take the direct path? HTTP or HTTPS, and never when a proxy is configured
/// (reqwest honours the proxy variables; a direct connection would not).
pub(crate) fn eligible(url: &Url) -> bool {
    matches!(url.scheme(), "http" | "https") && !proxy_configured(url) && url.host().is_some()
}

fn proxy_configured(url: &Url) -> bool {
    let scheme_vars: &[&str] = if url.scheme() == "https" {
        &["https_proxy", "HTTPS_PROXY"]
    } else {
        &["http_proxy", "HTTP_PROXY"]
    };
    scheme_vars
        .iter()
        .chain(&["all_proxy", "ALL_PROXY"])
        .any(|v| std::env::var_os(v).is_some_and(|x| !x.is_empty()))
}

/// The connection of one direct GET.
enum Conn {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<BufReader<TcpStream>>>),
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// TCP to `url`'s host, then the TLS handshake for `https` (SNI and certificate checks for
/// that host), all within the connect timeout.
async fn connect(url: &Url, tls: &Arc<rustls::ClientConfig>) -> io::Result<Conn> {
    let port = url
        .port_or_known_default()
        .ok_or_else(|| io::Error::other("no port"))?;
    let (tcp, server_name) = match url.host() {
        Some(url::Host::Domain(d)) => (
            TcpStream::connect((d, port)).await,
            ServerName::try_from(d.to_string()).map_err(io::Error::other),
        ),
        Some(url::Host::Ipv4(a)) => (TcpStream::connect((a, port)).await, Ok(a.into())),
        Some(url::Host::Ipv6(a)) => (TcpStream::connect((a, port)).await, Ok(a.into())),
        None => return Err(io::Error::other("no host")),
    };
    let tcp = tcp?;
    tcp.set_nodelay(true)?;
    if url.scheme() != "https" {
        return Ok(Conn::Plain(tcp));
    }
    let connector = tokio_rustls::TlsConnector::from(tls.clone());
    let stream = connector
        .connect(
            server_name?,
            BufReader::with_capacity(TLS_SOCKET_BUFFER, tcp),
        )
        .await?;
    Ok(Conn::Tls(Box::new(stream)))
}

pub(crate) enum Outcome {
    /// A 200 or 206 whose `Content-Length` body is read from [`DirectBody`]; the response
    /// carries the status and headers only.
    Body(reqwest::Response, DirectBody),
    /// Any other status, its (small) body read whole.
    Complete(reqwest::Response),
    /// Not something this path handles: send the request through reqwest.
    NotHandled(&'static str),
    /// No complete head within the read timeout (silence, or a server dribbling it). Not
    /// handed to reqwest nor retried: it would only wait as long again.
    HeadTimedOut,
}

/// The body of a direct GET: the bytes that came with the head, then the socket, limited to
/// `Content-Length`. A stall longer than the read timeout is an error
/// ([`io::ErrorKind::TimedOut`]); a connection that ends early reads as end of file, and the
/// caller, counting bytes, resumes.
pub(crate) struct DirectBody {
    reader: tokio::io::Chain<io::Cursor<Bytes>, tokio::io::Take<Conn>>,
    len: u64,
    read_timeout: Duration,
    /// Runs while a read is waiting: time spent by the caller between reads is not a stall.
    timer: Pin<Box<tokio::time::Sleep>>,
    armed: bool,
}

impl DirectBody {
    /// The response's `Content-Length`.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }
}

impl AsyncRead for DirectBody {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.reader).poll_read(cx, buf) {
            Poll::Ready(r) => {
                this.armed = false;
                Poll::Ready(r)
            }
            Poll::Pending => {
                if !this.armed {
                    this.armed = true;
                    let deadline = tokio::time::Instant::now() + this.read_timeout;
                    this.timer.as_mut().reset(deadline);
                }
                ready!(this.timer.as_mut().poll(cx));
                this.armed = false;
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "no data for {}s (read timeout)",
                        this.read_timeout.as_secs_f32()
                    ),
                )))
            }
        }
    }
}

/// Send `GET url` with `headers` (the caller's, `Authorization` included when it is due) on
/// a new connection and read the response head. An `Err` is a failure before any response
/// (connect, write, a head that does not parse): the caller then uses reqwest.
pub(crate) async fn get(
    url: &Url,
    headers: &HeaderMap,
    options: &RegistryOptions,
    tls: &Arc<rustls::ClientConfig>,
) -> io::Result<Outcome> {
    let mut stream = tokio::time::timeout(options.connect_timeout, connect(url, tls))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;

    let mut head = request_head(url, headers, &options.user_agent);
    timed(options.read_timeout, async {
        stream.write_all(&head).await?;
        stream.flush().await
    })
    .await?;

    // Read until the head is complete; the whole head within one read timeout (a server
    // dribbling it byte by byte does not get a timeout per byte), as reqwest does.
    head.clear();
    let head_deadline = tokio::time::Instant::now() + options.read_timeout;
    let (status, response_headers, body_start) = loop {
        if head.len() >= MAX_HEAD {
            return Ok(Outcome::NotHandled("response head too large"));
        }
        let at = head.len();
        head.resize(at + HEAD_READ, 0);
        let Ok(n) = tokio::time::timeout_at(head_deadline, stream.read(&mut head[at..])).await
        else {
            return Ok(Outcome::HeadTimedOut);
        };
        let n = n?;
        head.truncate(at + n);
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before the response head",
            ));
        }
        let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut slots);
        match response.parse(&head) {
            Ok(httparse::Status::Partial) => continue,
            Ok(httparse::Status::Complete(end)) => {
                let status = response.code.unwrap_or(0);
                let mut map = HeaderMap::new();
                for h in response.headers.iter() {
                    let (Ok(name), Ok(value)) = (
                        HeaderName::from_bytes(h.name.as_bytes()),
                        HeaderValue::from_bytes(h.value),
                    ) else {
                        return Ok(Outcome::NotHandled("unusable response header"));
                    };
                    map.append(name, value);
                }
                break (status, map, end);
            }
            Err(httparse::Error::TooManyHeaders) => {
                return Ok(Outcome::NotHandled("too many response headers"));
            }
            Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
        }
    };
    let leftover = Bytes::from(head).slice(body_start..);

    if !(200..=599).contains(&status) {
        return Ok(Outcome::NotHandled("informational status"));
    }
    if response_headers.contains_key(reqwest::header::TRANSFER_ENCODING) {
        return Ok(Outcome::NotHandled("Transfer-Encoding"));
    }
    let length = match content_length(&response_headers) {
        Ok(l) => l,
        Err(why) => return Ok(Outcome::NotHandled(why)),
    };
    let response = |body: Bytes| -> io::Result<reqwest::Response> {
        let mut builder = http::Response::builder()
            .status(status)
            .version(http::Version::HTTP_11);
        if let Some(h) = builder.headers_mut() {
            *h = response_headers.clone();
        }
        builder
            .body(body)
            .map(reqwest::Response::from)
            .map_err(io::Error::other)
    };
    match (status, length) {
        (200 | 206, Some(len)) => {
            let leftover = leftover.slice(..leftover.len().min(len as usize));
            let rest = len - leftover.len() as u64;
            let body = DirectBody {
                reader: io::Cursor::new(leftover).chain(stream.take(rest)),
                len,
                read_timeout: options.read_timeout,
                timer: Box::pin(tokio::time::sleep(options.read_timeout)),
                armed: false,
            };
            Ok(Outcome::Body(response(Bytes::new())?, body))
        }
        (200 | 206, None) => Ok(Outcome::NotHandled("body without Content-Length")),
        (204 | 304, _) | (_, Some(0)) => Ok(Outcome::Complete(response(Bytes::new())?)),
        (_, Some(len)) if len <= MAX_SMALL_BODY => {
            let mut body = leftover.slice(..leftover.len().min(len as usize)).to_vec();
            let rest = len - body.len() as u64;
            timed(
                options.read_timeout,
                (&mut stream).take(rest).read_to_end(&mut body),
            )
            .await?;
            if (body.len() as u64) < len {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "response body ended early",
                ));
            }
            Ok(Outcome::Complete(response(Bytes::from(body))?))
        }
        _ => Ok(Outcome::NotHandled("large or unframed non-200 body")),
    }
}

/// `GET /path?query HTTP/1.1` with `Host`, `User-Agent`, `Connection: close` and `headers`.
fn request_head(url: &Url, headers: &HeaderMap, user_agent: &str) -> Vec<u8> {
    let mut target = url.path().to_string();
    if let Some(q) = url.query() {
        target.push('?');
        target.push_str(q);
    }
    let host = match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        _ => String::new(),
    };
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n").as_bytes());
    if !headers.contains_key(reqwest::header::USER_AGENT) {
        out.extend_from_slice(b"User-Agent: ");
        out.extend_from_slice(user_agent.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Accept: */*\r\nConnection: close\r\n");
    for (name, value) in headers {
        if name == reqwest::header::HOST || name == reqwest::header::CONNECTION {
            continue;
        }
        // HeaderValue never holds CR or LF: no header can be smuggled in.
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// The one `Content-Length` (several that disagree, or one that is not a number, is not
/// something to guess about).
fn content_length(headers: &HeaderMap) -> Result<Option<u64>, &'static str> {
    let mut found: Option<u64> = None;
    for v in headers.get_all(reqwest::header::CONTENT_LENGTH) {
        let n = v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .ok_or("unparsable Content-Length")?;
        if found.is_some_and(|f| f != n) {
            return Err("conflicting Content-Length");
        }
        found = Some(n);
    }
    Ok(found)
}

async fn timed<T>(limit: Duration, fut: impl Future<Output = io::Result<T>>) -> io::Result<T> {
    tokio::time::timeout(limit, fut)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "read timed out"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_head_has_target_host_and_headers() {
        let url = Url::parse("http://127.0.0.1:5000/v2/a/b/blobs/sha256:00?x=1").unwrap();
        let mut h = HeaderMap::new();
        h.insert("range", HeaderValue::from_static("bytes=10-"));
        h.insert("host", HeaderValue::from_static("evil"));
        let head = String::from_utf8(request_head(&url, &h, "strata/test")).unwrap();
        assert!(
            head.starts_with(
                "GET /v2/a/b/blobs/sha256:00?x=1 HTTP/1.1\r\nHost: 127.0.0.1:5000\r\n"
            )
        );
        assert!(head.contains("\r\nrange: bytes=10-\r\n"));
        assert!(head.contains("\r\nUser-Agent: strata/test\r\n"));
        assert!(!head.contains("evil"));
        assert!(head.ends_with("\r\n\r\n"));
    }

    #[test]
    fn content_length_rules() {
        let mut h = HeaderMap::new();
        assert_eq!(content_length(&h), Ok(None));
        h.append("content-length", HeaderValue::from_static("42"));
        assert_eq!(content_length(&h), Ok(Some(42)));
        h.append("content-length", HeaderValue::from_static("42"));
        assert_eq!(content_length(&h), Ok(Some(42)));
        h.append("content-length", HeaderValue::from_static("43"));
        assert!(content_length(&h).is_err());
        let mut h = HeaderMap::new();
        h.append("content-length", HeaderValue::from_static("-1"));
        assert!(content_length(&h).is_err());
    }

    #[test]
    fn http_and_https_are_eligible() {
        assert!(eligible(&Url::parse("https://r.example/v2/").unwrap()));
        assert!(eligible(&Url::parse("http://127.0.0.1:5000/v2/").unwrap()));
        assert!(!eligible(&Url::parse("ftp://r.example/v2/").unwrap()));
    }
}
