//! A fault-injecting HTTP/1.1 proxy in front of a registry; with TLS it offers HTTP/2 and
//! HTTP/1.1 by ALPN, as a registry behind Go's HTTPS server does.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use http_body_util::{BodyExt, BodyStream, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use regex::Regex;

type ProxyBody = UnsyncBoxBody<Bytes, std::io::Error>;
type FrameStream = Pin<Box<dyn Stream<Item = Result<Frame<Bytes>, std::io::Error>> + Send>>;

/// What to do to a matching request.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer with this status, headers and body; nothing is forwarded.
    Status {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// Forward, then drop the connection after K bytes of the response body.
    ResetAfter(u64),
    /// Forward, but declare `Content-Length: K` and send only K bytes (a clean short body).
    Truncate(u64),
    /// Forward with the first byte of the body flipped (same length).
    CorruptBody,
    /// Forward with N extra bytes after the body (length adjusted).
    ExtendBody(u64),
    /// Read K bytes of the request body, then drop the connection. `forward`: stream those K
    /// bytes to the upstream first (and abort that request there too).
    DropRequestBody { after: u64, forward: bool },
    /// Answer with a redirect; in `location`, `{path}` is the request path, `{host}` this
    /// proxy as `127.0.0.1:PORT` and `{alt}` as `localhost:PORT` (another host name).
    Redirect { status: u16, location: String },
    /// Forward, sending the body in `chunk`-byte pieces `delay` apart.
    SlowBody { chunk: usize, delay: Duration },
    /// Forward without the request's `Range` header (the registry answers 200 with all).
    IgnoreRange,
    /// Forward without `Range` and answer 206 with `Content-Range: bytes 0-…` (wrong start).
    WrongRange,
    /// Never answer.
    Hang,
    /// Answer `status` with a generated body of `size` zero bytes (`Content-Length` declared
    /// when `declare_length`), never held in memory.
    HugeBody {
        status: u16,
        content_type: String,
        size: u64,
        declare_length: bool,
    },
}

impl Fault {
    pub fn status(status: u16) -> Fault {
        Fault::Status {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }
    pub fn with_header(status: u16, name: &str, value: &str) -> Fault {
        Fault::Status {
            status,
            headers: vec![(name.into(), value.into())],
            body: Vec::new(),
        }
    }
    /// A registry-style JSON error.
    pub fn registry_error(status: u16, code: &str, message: &str, request_id: &str) -> Fault {
        Fault::Status {
            status,
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("x-request-id".into(), request_id.into()),
            ],
            body: serde_json::to_vec(&serde_json::json!({
                "errors": [{"code": code, "message": message}]
            }))
            .unwrap_or_default(),
        }
    }
    pub fn redirect(location: &str) -> Fault {
        Fault::Redirect {
            status: 307,
            location: location.into(),
        }
    }
}

/// A fault and which requests get it.
#[derive(Clone, Debug)]
pub struct Rule {
    method: Option<String>,
    path: Regex,
    host: Option<String>,
    first: usize,
    times: Option<usize>,
    fault: Fault,
    seen: usize,
}

impl Rule {
    /// Matches `method` (`"*"` for any) and `path_regex` (searched in path + query); fires
    /// on the first matching request only, unless changed with [`Rule::nth`] /
    /// [`Rule::times`] / [`Rule::always`].
    pub fn new(method: &str, path_regex: &str, fault: Fault) -> Rule {
        Rule {
            method: (method != "*").then(|| method.to_ascii_uppercase()),
            path: Regex::new(path_regex).expect("valid path regex"),
            host: None,
            first: 1,
            times: Some(1),
            fault,
            seen: 0,
        }
    }
    /// Fire starting at the n-th matching request (1-based).
    pub fn nth(mut self, n: usize) -> Rule {
        self.first = n.max(1);
        self
    }
    /// Fire this many times.
    pub fn times(mut self, n: usize) -> Rule {
        self.times = Some(n);
        self
    }
    /// Fire on every match.
    pub fn always(mut self) -> Rule {
        self.times = None;
        self
    }
    /// Only requests whose `Host` header is `host`.
    pub fn on_host(mut self, host: &str) -> Rule {
        self.host = Some(host.into());
        self
    }
}

/// One request as the proxy saw it. Secrets are never recorded: only the auth scheme.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedRequest {
    pub method: String,
    /// Path and query.
    pub path: String,
    /// The `Host` header (`127.0.0.1:PORT` or `localhost:PORT`).
    pub host: String,
    /// `Basic` / `Bearer` when an `Authorization` header was sent.
    pub auth_scheme: Option<String>,
    pub range: Option<String>,
    /// The `Connection` header (`close` from strata's direct plain-HTTP blob GETs).
    pub connection: Option<String>,
    pub content_length: Option<u64>,
    pub content_range: Option<String>,
    /// The answer's status (None when the connection was dropped before one).
    pub status: Option<u16>,
    /// `HTTP/1.1` or `HTTP/2.0`.
    pub version: String,
    /// Which client connection carried it (numbered from 1 in accept order).
    pub connection_id: u64,
    /// The fault applied, if any (its Debug form).
    pub fault: Option<String>,
}

struct State {
    upstream: String,
    port: u16,
    rules: Mutex<Vec<Rule>>,
    log: Mutex<Vec<RecordedRequest>>,
    http: reqwest::Client,
    connections: AtomicU64,
    /// Serving HTTPS: the registry is told (`X-Forwarded-Proto`), so the upload `Location`s
    /// it makes are `https://` URLs of this proxy.
    tls: bool,
}

/// The proxy; stops when dropped.
pub struct FaultProxy {
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultProxy {
    /// Listen on a free loopback port and forward to `upstream` (`host:port`).
    pub async fn start(upstream: &str) -> FaultProxy {
        Self::start_with(upstream, None).await
    }

    /// Like [`FaultProxy::start`], serving HTTPS with `certificates`' server certificate and
    /// offering `h2` and `http/1.1` by ALPN (the upstream is still spoken to in plain HTTP).
    pub async fn start_tls(upstream: &str, certificates: &crate::TestCertificates) -> FaultProxy {
        Self::start_with(upstream, Some(tls_acceptor(certificates))).await
    }

    async fn start_with(upstream: &str, tls: Option<tokio_rustls::TlsAcceptor>) -> FaultProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let port = listener.local_addr().expect("proxy addr").port();
        let state = Arc::new(State {
            upstream: upstream.to_string(),
            port,
            rules: Mutex::new(Vec::new()),
            log: Mutex::new(Vec::new()),
            http: reqwest::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .http1_only()
                .build()
                .expect("proxy client"),
            connections: AtomicU64::new(0),
            tls: tls.is_some(),
        });
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let st = st.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let id = st.connections.fetch_add(1, Ordering::SeqCst) + 1;
                    let service =
                        hyper::service::service_fn(move |req| handle(st.clone(), id, req));
                    let Some(tls) = tls else {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .keep_alive(true)
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                        return;
                    };
                    let Ok(stream) = tls.accept(stream).await else {
                        return;
                    };
                    if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                        let _ = hyper::server::conn::http2::Builder::new(
                            hyper_util::rt::TokioExecutor::new(),
                        )
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                    } else {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .keep_alive(true)
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    }
                });
            }
        });
        FaultProxy { state, task }
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.state.port)
    }
    /// `localhost:PORT`: the same proxy under another host name (a different origin).
    pub fn alt_host(&self) -> String {
        format!("localhost:{}", self.state.port)
    }
    pub fn port(&self) -> u16 {
        self.state.port
    }
    /// Client connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.state.connections.load(Ordering::SeqCst)
    }
    pub fn add(&self, rule: Rule) {
        self.state.rules.lock().expect("rules").push(rule);
    }
    pub fn clear_rules(&self) {
        self.state.rules.lock().expect("rules").clear();
    }
    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.log.lock().expect("log").clone()
    }
    pub fn clear_log(&self) {
        self.state.log.lock().expect("log").clear();
    }
    /// Requests with this method whose path matches `regex`.
    pub fn matching(&self, method: &str, regex: &str) -> Vec<RecordedRequest> {
        let re = Regex::new(regex).expect("regex");
        self.requests()
            .into_iter()
            .filter(|r| (method == "*" || r.method == method) && re.is_match(&r.path))
            .collect()
    }
}

fn full(status: u16, headers: &[(String, String)], body: Vec<u8>) -> Response<ProxyBody> {
    let mut b = Response::builder().status(status);
    for (k, v) in headers {
        b = b.header(k, v);
    }
    b.header("content-length", body.len())
        .body(
            http_body_util::Full::new(Bytes::from(body))
                .map_err(|e: Infallible| match e {})
                .boxed_unsync(),
        )
        .expect("response")
}

fn io_err(msg: &str) -> std::io::Error {
    std::io::Error::other(msg.to_string())
}

fn tls_acceptor(certificates: &crate::TestCertificates) -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_file_iter(certificates.server_cert())
        .expect("server certificate")
        .collect::<Result<Vec<_>, _>>()
        .expect("server certificate PEM");
    let key = PrivateKeyDer::from_pem_file(certificates.server_key()).expect("server key");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server TLS config");
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

async fn handle(
    state: Arc<State>,
    connection_id: u64,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, std::io::Error> {
    let method = req.method().to_string();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_else(|| "/".into());
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    // HTTP/2 carries the host in the request's authority, not in a `Host` header.
    let host = header("host")
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default();
    let record = RecordedRequest {
        method: method.clone(),
        path: path.clone(),
        host: host.clone(),
        auth_scheme: header("authorization")
            .map(|v| v.split_whitespace().next().unwrap_or_default().to_string()),
        range: header("range"),
        connection: header("connection"),
        content_length: header("content-length").and_then(|v| v.parse().ok()),
        content_range: header("content-range"),
        status: None,
        fault: None,
        version: format!("{:?}", req.version()),
        connection_id,
    };
    let fault = {
        let mut rules = state.rules.lock().expect("rules");
        let mut chosen = None;
        for rule in rules.iter_mut() {
            let matches = rule.method.as_deref().is_none_or(|m| m == method)
                && rule.host.as_deref().is_none_or(|h| h == host)
                && rule.path.is_match(&path);
            if !matches {
                continue;
            }
            rule.seen += 1;
            let fires =
                rule.seen >= rule.first && rule.times.is_none_or(|t| rule.seen < rule.first + t);
            if fires && chosen.is_none() {
                chosen = Some(rule.fault.clone());
            }
        }
        chosen
    };
    let index = {
        let mut log = state.log.lock().expect("log");
        let mut r = record;
        r.fault = fault.as_ref().map(|f| {
            let s = format!("{f:?}");
            s.chars().take(120).collect()
        });
        log.push(r);
        log.len() - 1
    };
    let set_status = |status: u16| {
        if let Some(r) = state.log.lock().expect("log").get_mut(index) {
            r.status = Some(status);
        }
    };
    let path_only = path.split('?').next().unwrap_or("/").to_string();
    match &fault {
        Some(Fault::Status {
            status,
            headers,
            body,
        }) => {
            set_status(*status);
            return Ok(full(*status, headers, body.clone()));
        }
        Some(Fault::Redirect { status, location }) => {
            let loc = location
                .replace("{path}", &path_only)
                .replace("{host}", &format!("127.0.0.1:{}", state.port))
                .replace("{alt}", &format!("localhost:{}", state.port));
            set_status(*status);
            return Ok(full(*status, &[("location".into(), loc)], Vec::new()));
        }
        Some(Fault::Hang) => {
            futures::future::pending::<()>().await;
        }
        Some(Fault::HugeBody {
            status,
            content_type,
            size,
            declare_length,
        }) => {
            set_status(*status);
            let size = *size;
            let stream = futures::stream::unfold(0u64, move |sent| async move {
                if sent >= size {
                    return None;
                }
                let n = (size - sent).min(64 * 1024) as usize;
                Some((Ok(Frame::data(Bytes::from(vec![b' '; n]))), sent + n as u64))
            });
            let mut b = Response::builder()
                .status(*status)
                .header("content-type", content_type);
            if *declare_length {
                b = b.header("content-length", size);
            }
            return Ok(b
                .body(BodyExt::boxed_unsync(StreamBody::new(stream)))
                .expect("response"));
        }
        Some(Fault::DropRequestBody { after, forward }) => {
            let after = *after;
            let (parts, body) = req.into_parts();
            let mut frames = BodyStream::new(body);
            if *forward {
                // Stream the first `after` bytes upstream, then break that request too.
                let (tx, rx) = futures::channel::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
                let mut url = format!("http://{}{}", state.upstream, path);
                if url.is_empty() {
                    url = "/".into();
                }
                let mut rb = state.http.request(parts.method.clone(), url);
                for (k, v) in parts.headers.iter() {
                    if k == "connection" || k == "transfer-encoding" {
                        continue;
                    }
                    rb = rb.header(k, v);
                }
                let upstream = tokio::spawn(rb.body(reqwest::Body::wrap_stream(rx)).send());
                let mut tx = tx;
                let mut sent = 0u64;
                while let Some(Ok(frame)) = frames.next().await {
                    if let Ok(data) = frame.into_data() {
                        let take = ((after - sent) as usize).min(data.len());
                        if take > 0 {
                            let _ = futures::SinkExt::send(&mut tx, Ok(data.slice(..take))).await;
                            sent += take as u64;
                        }
                        if sent >= after {
                            break;
                        }
                    }
                }
                let _ = futures::SinkExt::send(&mut tx, Err(io_err("proxy: dropped body"))).await;
                drop(tx);
                let _ = upstream.await;
            } else {
                let mut seen = 0u64;
                while let Some(Ok(frame)) = frames.next().await {
                    if let Ok(data) = frame.into_data() {
                        seen += data.len() as u64;
                        if seen >= after {
                            break;
                        }
                    }
                }
            }
            return Err(io_err("proxy: dropping the connection mid request body"));
        }
        _ => {}
    }

    // Forward.
    let (parts, body) = req.into_parts();
    let url = format!("http://{}{}", state.upstream, path);
    let mut rb = state.http.request(parts.method.clone(), url);
    for (k, v) in parts.headers.iter() {
        if k == "connection" || k == "transfer-encoding" || k == "keep-alive" {
            continue;
        }
        if k == "range" && matches!(fault, Some(Fault::IgnoreRange | Fault::WrongRange)) {
            continue;
        }
        rb = rb.header(k, v);
    }
    if state.tls {
        rb = rb
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-host", &host);
    }
    let has_body = parts
        .headers
        .get("content-length")
        .is_some_and(|v| v.as_bytes() != b"0")
        || parts.headers.contains_key("transfer-encoding");
    if has_body {
        let stream = BodyStream::new(body).filter_map(|f| async move {
            match f {
                Ok(frame) => frame.into_data().ok().map(Ok::<Bytes, std::io::Error>),
                Err(e) => Some(Err(std::io::Error::other(e))),
            }
        });
        rb = rb.body(reqwest::Body::wrap_stream(stream));
    }
    let upstream = match rb.send().await {
        Ok(r) => r,
        Err(e) => {
            set_status(502);
            return Ok(full(
                502,
                &[],
                format!("proxy: upstream failed: {e}").into_bytes(),
            ));
        }
    };
    let mut status = upstream.status().as_u16();
    let mut headers: Vec<(String, String)> = upstream
        .headers()
        .iter()
        .filter(|(k, _)| {
            !matches!(
                k.as_str(),
                "connection" | "transfer-encoding" | "keep-alive" | "content-length"
            )
        })
        .filter_map(|(k, v)| Some((k.to_string(), v.to_str().ok()?.to_string())))
        .collect();
    let length = upstream.content_length();
    let is_head = parts.method == hyper::Method::HEAD;
    let body: FrameStream = Box::pin(
        upstream
            .bytes_stream()
            .map(|r| r.map(Frame::data).map_err(std::io::Error::other)),
    );
    let mut declared = length;
    let body: FrameStream = match &fault {
        Some(Fault::ResetAfter(k)) => limit(body, *k, LimitEnd::Error),
        Some(Fault::Truncate(k)) => {
            declared = length.map(|l| l.min(*k));
            limit(body, *k, LimitEnd::Clean)
        }
        Some(Fault::CorruptBody) => {
            let mut first = true;
            Box::pin(body.map(move |r| {
                r.map(|frame| match frame.into_data() {
                    Ok(d) if first && !d.is_empty() => {
                        first = false;
                        let mut v = d.to_vec();
                        v[0] ^= 0xff;
                        Frame::data(Bytes::from(v))
                    }
                    Ok(d) => Frame::data(d),
                    Err(f) => f,
                })
            }))
        }
        Some(Fault::ExtendBody(n)) => {
            declared = length.map(|l| l + n);
            let extra = futures::stream::once(futures::future::ready(Ok(Frame::data(
                Bytes::from(vec![0u8; *n as usize]),
            ))));
            Box::pin(body.chain(extra))
        }
        Some(Fault::SlowBody { chunk, delay }) => {
            let (chunk, delay) = ((*chunk).max(1), *delay);
            Box::pin(
                body.flat_map(move |r| {
                    let pieces: Vec<Result<Frame<Bytes>, std::io::Error>> = match r {
                        Ok(frame) => match frame.into_data() {
                            Ok(d) => (0..d.len())
                                .step_by(chunk)
                                .map(|i| Ok(Frame::data(d.slice(i..(i + chunk).min(d.len())))))
                                .collect(),
                            Err(f) => vec![Ok(f)],
                        },
                        Err(e) => vec![Err(e)],
                    };
                    futures::stream::iter(pieces)
                })
                .then(move |x| async move {
                    tokio::time::sleep(delay).await;
                    x
                }),
            )
        }
        Some(Fault::WrongRange) if status == 200 => {
            status = 206;
            if let Some(l) = length {
                headers.push((
                    "content-range".into(),
                    format!("bytes 0-{}/{}", l.saturating_sub(1), l),
                ));
            }
            body
        }
        _ => body,
    };
    set_status(status);
    let mut b = Response::builder().status(status);
    for (k, v) in &headers {
        b = b.header(k, v);
    }
    if let Some(l) = declared {
        b = b.header("content-length", l);
    }
    let body: ProxyBody = if is_head {
        BodyExt::boxed_unsync(http_body_util::Empty::new().map_err(|e: Infallible| match e {}))
    } else {
        BodyExt::boxed_unsync(StreamBody::new(body))
    };
    Ok(b.body(body).expect("response"))
}

#[derive(Clone, Copy)]
enum LimitEnd {
    /// End the body cleanly after K bytes.
    Clean,
    /// Fail after K bytes: hyper drops the connection mid-body.
    Error,
}

fn limit(body: FrameStream, k: u64, end: LimitEnd) -> FrameStream {
    Box::pin(futures::stream::unfold(
        (body, 0u64, false),
        move |(mut body, mut sent, done)| async move {
            if done {
                return None;
            }
            if sent >= k {
                return match end {
                    LimitEnd::Clean => None,
                    LimitEnd::Error => Some((Err(io_err("proxy: reset")), (body, sent, true))),
                };
            }
            match body.next().await {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(d) => {
                        let take = ((k - sent) as usize).min(d.len());
                        sent += take as u64;
                        Some((Ok(Frame::data(d.slice(..take))), (body, sent, false)))
                    }
                    Err(f) => Some((Ok(f), (body, sent, false))),
                },
                Some(Err(e)) => Some((Err(e), (body, sent, true))),
                None => None,
            }
        },
    ))
}
