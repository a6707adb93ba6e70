//! The HTTP core: hosts, auth, retries, redirects, error bodies.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use bytes::Bytes;
use futures::StreamExt;
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use strata_spec::{DOCKER_HUB_REGISTRY, Reference};
use url::Url;

use crate::auth::{self, Secret};
use crate::challenge::{self, Challenge};
use crate::speed::SpeedCheck;
use crate::{
    ConnectionFailure, CredentialSource, LowSpeedLimit, MAX_ERROR_BODY_BYTES, MAX_REDIRECTS,
    MAX_TAGS_PAGE_BYTES, MAX_TOKEN_BODY_BYTES, RegistryError, RegistryOptions, RegistrySink,
    RegistrySource, TlsMode,
};

/// Tokens without `expires_in` live this long (distribution token spec default).
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);
/// A cached token is renewed this long before it expires, so it does not die in flight.
const TOKEN_EXPIRY_MARGIN: Duration = Duration::from_secs(10);
/// Most tag-list pages followed (a Link loop must end).
const MAX_TAG_PAGES: usize = 10_000;
/// Headers registries and their CDNs put request ids in, checked in order.
const REQUEST_ID_HEADERS: &[&str] = &[
    "x-request-id",
    "x-amz-request-id",
    "x-amzn-requestid",
    "x-github-request-id",
    "x-goog-request-id",
    "cf-ray",
];

/// A registry API client; cheap to clone (everything is behind an `Arc`).
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("tls", &self.inner.options.tls)
            .finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    /// For hosts without TLS settings of their own: a pooled client (HTTP/2 when the
    /// registry offers it) and the HTTP/1.1 blob client and TLS config (see [`Lane`]).
    shared: Arc<crate::tls::HostClients>,
    /// Clients of hosts with their own TLS settings (insecure, certs.d), by `host[:port]`;
    /// `None`: the host uses `shared`.
    per_host: Mutex<HashMap<String, Option<Arc<crate::tls::HostClients>>>>,
    pub(crate) options: RegistryOptions,
    hosts: tokio::sync::Mutex<HashMap<String, Arc<tokio::sync::OnceCell<Arc<Host>>>>>,
}

/// One registry as pinged: where it is, what auth it wants, its tokens.
pub(crate) struct Host {
    /// As written in references (`docker.io`, `127.0.0.1:5000`).
    pub(crate) registry: String,
    /// `scheme://api-host/`.
    pub(crate) base: Url,
    challenge: Mutex<Option<Challenge>>,
    secret: tokio::sync::OnceCell<Option<Secret>>,
    tokens: Mutex<HashMap<String, CachedToken>>,
    token_fetch: tokio::sync::Mutex<()>,
    /// Set once a direct blob GET to this registry got an answer that path does not read
    /// (chunked or unframed body, huge head): later blob GETs go through reqwest at once
    /// instead of asking twice.
    direct_declined: std::sync::atomic::AtomicBool,
}

#[derive(Clone)]
struct CachedToken {
    value: String,
    expires: Instant,
}

impl Host {
    pub(crate) fn host_port(&self) -> String {
        authority(&self.base)
    }
    /// Does `url` belong to this registry's origin (scheme, host and port)? Only such URLs
    /// ever get the registry's `Authorization`.
    pub(crate) fn same_origin(&self, url: &Url) -> bool {
        url.scheme() == self.base.scheme()
            && url.host_str() == self.base.host_str()
            && url.port_or_known_default() == self.base.port_or_known_default()
    }
    fn challenge(&self) -> Option<Challenge> {
        self.challenge.lock().map(|c| c.clone()).unwrap_or(None)
    }
    fn set_challenge(&self, c: Option<Challenge>) {
        if let Ok(mut g) = self.challenge.lock() {
            *g = c;
        }
    }
    fn cached_token(&self, key: &str) -> Option<String> {
        let tokens = self.tokens.lock().ok()?;
        let t = tokens.get(key)?;
        (Instant::now() + TOKEN_EXPIRY_MARGIN < t.expires).then(|| t.value.clone())
    }
    fn forget_token(&self, key: &str) {
        if let Ok(mut t) = self.tokens.lock() {
            t.remove(key);
        }
    }
}

pub(crate) fn authority(url: &Url) -> String {
    match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        _ => url.as_str().to_string(),
    }
}

fn scope_key(scopes: &[String]) -> String {
    let set: BTreeSet<&str> = scopes.iter().map(String::as_str).collect();
    set.into_iter().collect::<Vec<_>>().join(" ")
}

/// The body of a request.
pub(crate) enum Body {
    Empty,
    /// Replayable: re-sent on retry.
    Bytes(Bytes),
    /// Not replayable: a failure after sending is final.
    Once(Option<reqwest::Body>),
}

/// Which connections a request goes on.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lane {
    /// The pooled client (HTTP/2 when offered): small requests share connections.
    Pooled,
    /// A blob body: an HTTP/1.1 connection of its own while it is in flight. Over one HTTP/2
    /// connection a single task decrypts and frames every blob; over TLS that task was the
    /// bottleneck of a copy (one core), whatever the number of blobs in flight.
    Blob,
    /// A blob GET whose body may be read straight from the socket ([`crate::direct`]), on
    /// the blob lane otherwise; the body then comes back in [`Answer::direct`].
    BlobDirect,
}

/// Who gets which `Authorization`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Follow {
    Redirects,
    No,
}

pub(crate) struct Request {
    pub(crate) method: Method,
    pub(crate) url: Url,
    pub(crate) scopes: Vec<String>,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Body,
    pub(crate) follow: Follow,
    pub(crate) lane: Lane,
    /// For messages: `manifest base/busybox:latest`.
    pub(crate) what: String,
}

impl Request {
    pub(crate) fn new(method: Method, url: Url, scopes: Vec<String>, what: String) -> Self {
        Request {
            method,
            url,
            scopes,
            headers: HeaderMap::new(),
            body: Body::Empty,
            follow: Follow::No,
            lane: Lane::Pooled,
            what,
        }
    }
}

/// A response and the URL it finally came from (after redirects).
pub(crate) struct Answer {
    pub(crate) response: reqwest::Response,
    pub(crate) url: Url,
    /// The body of a 200/206 to a [`Lane::BlobDirect`] GET read from the socket; when set,
    /// `response` carries only the status and headers.
    pub(crate) direct: Option<Box<crate::direct::DirectBody>>,
}

fn retryable_status(s: StatusCode) -> bool {
    matches!(s.as_u16(), 408 | 429 | 500 | 502 | 503 | 504)
}

pub(crate) fn retryable_error(e: &reqwest::Error) -> bool {
    match connection_failure(e) {
        // Asking again in a second will not make something listen there, the name resolve
        // or the certificate verify: fail at once, as skopeo does (RELIABILITY F21). A
        // connect that timed out, a reset or a broken body may well go away.
        ConnectionFailure::Refused | ConnectionFailure::UnknownHost | ConnectionFailure::Tls => {
            false
        }
        // reqwest's read timeout bounds the whole wait for the response head: a server that
        // was silent that long, or dribbled the head (reqwest cannot tell which), would only
        // hold us as long again on every try.
        ConnectionFailure::Timeout => e.is_connect(),
        ConnectionFailure::Other => {
            e.is_connect() || e.is_request() || e.is_body() || e.is_decode()
        }
    }
}

/// What kind of failure a transport error is.
pub(crate) fn connection_failure(e: &reqwest::Error) -> ConnectionFailure {
    if is_tls_error(e) {
        return ConnectionFailure::Tls;
    }
    if e.is_timeout() {
        return ConnectionFailure::Timeout;
    }
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = current {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::ConnectionRefused => return ConnectionFailure::Refused,
                std::io::ErrorKind::TimedOut => return ConnectionFailure::Timeout,
                _ => {}
            }
        }
        // hyper-util's connect error type is private; its message for a failed name lookup
        // is this fixed text (the resolver's own error below it has no usable kind).
        if e.is_connect() && err.to_string() == "dns error" {
            return ConnectionFailure::UnknownHost;
        }
        current = err.source();
    }
    ConnectionFailure::Other
}

fn head_timed_out(url: &Url, what: &str, options: &RegistryOptions) -> RegistryError {
    RegistryError::TooSlow {
        host: authority(url),
        what: what.to_string(),
        detail: format!(
            "no complete response head within {}s (read timeout)",
            options.read_timeout.as_secs_f32()
        ),
    }
}

/// A TLS failure (bad certificate, a plain-HTTP server on an https URL) will not go away by
/// asking again: fail at once (RELIABILITY F21) and never fall back to HTTP (N5).
pub(crate) fn is_tls_error(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = current {
        if err.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        // io::Error::source() skips the wrapped error itself (and hyper nests io::Errors):
        // look inside.
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
        {
            current = Some(inner);
            continue;
        }
        current = err.source();
    }
    false
}

fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_private() || v4.is_unspecified(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.is_unspecified() || (v6.segments()[0] & 0xfe00) == 0xfc00
        }
    }
}

fn is_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

fn host_ip(url: &Url) -> Option<IpAddr> {
    match url.host()? {
        url::Host::Ipv4(a) => Some(IpAddr::V4(a)),
        url::Host::Ipv6(a) => Some(IpAddr::V6(a)),
        url::Host::Domain(d) if d.eq_ignore_ascii_case("localhost") => {
            Some(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))
        }
        url::Host::Domain(_) => None,
    }
}

impl Inner {
    /// Is `host` (`host[:port]`) reached without TLS verification?
    fn insecure(&self, host: &str) -> bool {
        crate::tls::host_insecure(&self.options, host)
    }

    /// The HTTP clients for `url`'s host: the shared ones, or ones with that host's TLS
    /// settings (built once).
    fn clients_for(&self, url: &Url) -> Result<Arc<crate::tls::HostClients>, RegistryError> {
        let host = authority(url);
        if let Ok(cache) = self.per_host.lock()
            && let Some(c) = cache.get(&host)
        {
            return Ok(c.clone().unwrap_or_else(|| Arc::clone(&self.shared)));
        }
        let tls = crate::tls::host_tls(&self.options, &host)?;
        let shared = crate::tls::HostTls {
            insecure: self.options.tls == TlsMode::Insecure,
            ..Default::default()
        };
        let own = if tls == shared {
            None
        } else {
            tracing::debug!(
                host,
                insecure = tls.insecure,
                ca_files = tls.ca_certs.len(),
                client_cert = tls.client_cert.is_some(),
                "TLS settings of the host's own"
            );
            Some(Arc::new(crate::tls::host_clients(&self.options, &tls)?))
        };
        if let Ok(mut cache) = self.per_host.lock() {
            cache.insert(host, own.clone());
        }
        Ok(own.unwrap_or_else(|| Arc::clone(&self.shared)))
    }

    /// The pinged host for `registry`, pinging it the first time.
    pub(crate) async fn host(&self, registry: &str) -> Result<Arc<Host>, RegistryError> {
        self.host_pinged(registry, self.options.retry.max_attempts)
            .await
    }

    /// [`Inner::host`], with at most `attempts` tries of the ping (a mirror that does not
    /// answer is skipped at once rather than retried; a failed ping is not remembered).
    async fn host_pinged(&self, registry: &str, attempts: u32) -> Result<Arc<Host>, RegistryError> {
        let cell = {
            let mut hosts = self.hosts.lock().await;
            hosts.entry(registry.to_string()).or_default().clone()
        };
        cell.get_or_try_init(|| self.ping(registry, attempts))
            .await
            .map(Arc::clone)
    }

    async fn ping(&self, registry: &str, max_attempts: u32) -> Result<Arc<Host>, RegistryError> {
        let api_host = if registry == DOCKER_HUB_REGISTRY {
            "registry-1.docker.io"
        } else {
            registry
        };
        let schemes: &[&str] = if self.insecure(registry) {
            &["https", "http"]
        } else {
            &["https"]
        };
        let mut last_err = None;
        for (i, scheme) in schemes.iter().enumerate() {
            let base = Url::parse(&format!("{scheme}://{api_host}/")).map_err(|e| {
                RegistryError::config(None, format!("invalid registry host {registry:?}: {e}"))
            })?;
            let host = Arc::new(Host {
                registry: registry.to_string(),
                base: base.clone(),
                challenge: Mutex::new(None),
                secret: tokio::sync::OnceCell::new(),
                tokens: Mutex::new(HashMap::new()),
                token_fetch: tokio::sync::Mutex::new(()),
                direct_declined: Default::default(),
            });
            let url = base
                .join("v2/")
                .map_err(|e| RegistryError::protocol(api_host, e.to_string()))?;
            // With more schemes to try, an unanswered HTTPS ping falls through at once.
            let attempts = if i + 1 < schemes.len() {
                1
            } else {
                max_attempts
            };
            let mut req = Request::new(Method::GET, url, Vec::new(), "ping /v2/".into());
            req.follow = Follow::No;
            match self.send_inner(&host, req, attempts, AuthMode::None).await {
                Ok(answer) => {
                    let status = answer.response.status();
                    tracing::debug!(registry, scheme, %status, "pinged registry");
                    match status.as_u16() {
                        200..=299 => return Ok(host),
                        401 => {
                            let c = answer
                                .response
                                .headers()
                                .get(header::WWW_AUTHENTICATE)
                                .and_then(|v| v.to_str().ok())
                                .and_then(challenge::parse);
                            if c.is_none() {
                                return Err(RegistryError::protocol(
                                    api_host,
                                    "401 on /v2/ without a usable WWW-Authenticate challenge",
                                ));
                            }
                            host.set_challenge(c);
                            return Ok(host);
                        }
                        _ => {
                            return Err(error_from(answer, api_host, "ping /v2/", 1).await);
                        }
                    }
                }
                Err(e) if i + 1 < schemes.len() => {
                    tracing::debug!(registry, scheme, error = %e, "ping failed, trying next scheme");
                    last_err = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| RegistryError::protocol(api_host, "no scheme to try")))
    }

    /// The credential for this host, looked up once.
    async fn secret(&self, host: &Host) -> Result<Option<Secret>, RegistryError> {
        host.secret
            .get_or_try_init(|| async {
                match &self.options.credentials {
                    CredentialSource::Anonymous => Ok(None),
                    CredentialSource::Explicit(c) => Ok(Some(Secret::Basic {
                        username: c.username.clone(),
                        password: c.password.clone(),
                    })),
                    CredentialSource::AuthFile(p) => {
                        auth::find_credentials(
                            std::slice::from_ref(p),
                            &host.registry,
                            &self.options.credential_helper_dirs,
                        )
                        .await
                    }
                    CredentialSource::Default => {
                        auth::find_credentials(
                            &auth::auth_file_search_path(),
                            &host.registry,
                            &self.options.credential_helper_dirs,
                        )
                        .await
                    }
                }
            })
            .await
            .cloned()
    }

    /// The `Authorization` value for a request with `scopes` to `host`'s origin.
    async fn authorization(
        &self,
        host: &Host,
        scopes: &[String],
    ) -> Result<Option<HeaderValue>, RegistryError> {
        match host.challenge() {
            None => Ok(None),
            Some(Challenge::Basic) => match self.secret(host).await? {
                Some(Secret::Basic { username, password }) => {
                    Ok(Some(basic_header(&username, &password)))
                }
                _ => Ok(None),
            },
            Some(Challenge::Bearer { realm, service, .. }) => {
                let token = self.token(host, &realm, service.as_deref(), scopes).await?;
                let mut v = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                    RegistryError::protocol(&host.registry, "token server sent an unusable token")
                })?;
                v.set_sensitive(true);
                Ok(Some(v))
            }
        }
    }

    async fn token(
        &self,
        host: &Host,
        realm: &str,
        service: Option<&str>,
        scopes: &[String],
    ) -> Result<String, RegistryError> {
        let key = scope_key(scopes);
        if let Some(t) = host.cached_token(&key) {
            return Ok(t);
        }
        let _guard = host.token_fetch.lock().await;
        if let Some(t) = host.cached_token(&key) {
            return Ok(t);
        }
        let (value, lifetime) = self.fetch_token(host, realm, service, scopes).await?;
        if let Ok(mut tokens) = host.tokens.lock() {
            tokens.insert(
                key,
                CachedToken {
                    value: value.clone(),
                    expires: Instant::now() + lifetime,
                },
            );
        }
        Ok(value)
    }

    /// RELIABILITY N3: the realm must be HTTPS (plain HTTP only when insecure), never
    /// link-local (cloud metadata), and private/loopback only for a registry that is itself
    /// private/loopback.
    fn check_realm(&self, host: &Host, realm: &str) -> Result<Url, RegistryError> {
        let bad = |why: &str| {
            RegistryError::protocol(
                &host.host_port(),
                format!("refusing token realm {realm:?}: {why}"),
            )
        };
        let url = Url::parse(realm).map_err(|_| bad("not a URL"))?;
        match url.scheme() {
            "https" => {}
            "http" if self.insecure(&host.registry) => {}
            "http" => return Err(bad("plain HTTP (only allowed with TLS verification off)")),
            _ => return Err(bad("not http(s)")),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad("credentials in the URL"));
        }
        if let Some(ip) = host_ip(&url) {
            if is_link_local(ip) {
                return Err(bad("link-local address"));
            }
            let registry_private = host_ip(&host.base).is_some_and(is_private);
            if is_private(ip) && !registry_private {
                return Err(bad("private address named by a public registry"));
            }
        }
        Ok(url)
    }

    async fn fetch_token(
        &self,
        host: &Host,
        realm: &str,
        service: Option<&str>,
        scopes: &[String],
    ) -> Result<(String, Duration), RegistryError> {
        let mut url = self.check_realm(host, realm)?;
        let secret = self.secret(host).await?;
        let realm_host = authority(&url);
        let scope_list: Vec<&str> = {
            let set: BTreeSet<&str> = scopes.iter().map(String::as_str).collect();
            set.into_iter().collect()
        };
        let what = format!(
            "token for {}",
            if scope_list.is_empty() {
                "login".to_string()
            } else {
                scope_list.join(" ")
            }
        );
        let (method, body, auth_header) = match &secret {
            Some(Secret::IdentityToken { token }) => {
                let mut form = url::form_urlencoded::Serializer::new(String::new());
                form.append_pair("grant_type", "refresh_token");
                form.append_pair("refresh_token", token);
                if let Some(s) = service {
                    form.append_pair("service", s);
                }
                if !scope_list.is_empty() {
                    form.append_pair("scope", &scope_list.join(" "));
                }
                form.append_pair("client_id", "strata");
                (Method::POST, Body::Bytes(Bytes::from(form.finish())), None)
            }
            other => {
                {
                    let mut q = url.query_pairs_mut();
                    if let Some(s) = service {
                        q.append_pair("service", s);
                    }
                    for s in &scope_list {
                        q.append_pair("scope", s);
                    }
                }
                if url.query() == Some("") {
                    url.set_query(None);
                }
                let auth = match other {
                    Some(Secret::Basic { username, password }) => {
                        Some(basic_header(username, password))
                    }
                    _ => None,
                };
                (Method::GET, Body::Empty, auth)
            }
        };
        let mut req = Request::new(method, url, Vec::new(), what.clone());
        if matches!(body, Body::Bytes(_)) {
            req.headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-www-form-urlencoded"),
            );
        }
        req.body = body;
        let mode = match auth_header {
            Some(h) => AuthMode::Header(h),
            None => AuthMode::None,
        };
        // Boxed: sending may itself need a token (recursion through `authorization`).
        let answer =
            Box::pin(self.send_inner(host, req, self.options.retry.max_attempts, mode)).await?;
        let status = answer.response.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            let detail = read_error(answer.response, MAX_ERROR_BODY_BYTES).await.1;
            let detail = if detail.is_empty() {
                String::new()
            } else {
                format!(": {detail}")
            };
            return Err(match &secret {
                Some(secret) => RegistryError::CredentialsRefused {
                    registry: host.registry.clone(),
                    user: secret.username().map(str::to_string),
                    detail: format!("token server {realm_host} answered {status}{detail}"),
                },
                None => RegistryError::Unauthorized {
                    registry: host.registry.clone(),
                    detail: format!(
                        "token server {realm_host} refused anonymous access ({status}{detail})"
                    ),
                },
            });
        }
        if !status.is_success() {
            return Err(error_from(answer, &realm_host, &what, 1).await);
        }
        let bytes = read_capped(
            answer.response,
            MAX_TOKEN_BODY_BYTES,
            self.options.low_speed,
            &realm_host,
            &what,
        )
        .await?;
        #[derive(serde::Deserialize)]
        struct TokenAnswer {
            #[serde(default)]
            token: String,
            #[serde(default)]
            access_token: String,
            #[serde(default)]
            expires_in: Option<u64>,
        }
        let parsed: TokenAnswer = serde_json::from_slice(&bytes).map_err(|_| {
            RegistryError::protocol(&realm_host, "token answer is not the expected JSON")
        })?;
        let token = if parsed.token.is_empty() {
            parsed.access_token
        } else {
            parsed.token
        };
        if token.is_empty() {
            return Err(RegistryError::protocol(
                &realm_host,
                "token answer holds no token",
            ));
        }
        let lifetime = parsed
            .expires_in
            .filter(|s| *s > 0)
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_TOKEN_LIFETIME);
        tracing::debug!(registry = host.registry, scopes = %scope_list.join(" "), lifetime_s = lifetime.as_secs(), "got bearer token");
        Ok((token, lifetime))
    }

    /// Send with the registry's auth, retries and (optionally) redirects.
    pub(crate) async fn send(&self, host: &Host, req: Request) -> Result<Answer, RegistryError> {
        self.send_inner(
            host,
            req,
            self.options.retry.max_attempts,
            AuthMode::Registry,
        )
        .await
    }

    async fn send_inner(
        &self,
        host: &Host,
        mut req: Request,
        max_attempts: u32,
        auth_mode: AuthMode,
    ) -> Result<Answer, RegistryError> {
        let max_attempts = max_attempts.max(1);
        let mut attempt: u32 = 1;
        let mut refreshed = false;
        let mut scopes = req.scopes.clone();
        loop {
            let body = match &mut req.body {
                Body::Empty => None,
                Body::Bytes(b) => Some(reqwest::Body::from(b.clone())),
                Body::Once(b) => match b.take() {
                    Some(b) => Some(b),
                    None => {
                        return Err(RegistryError::protocol(
                            &authority(&req.url),
                            format!("{}: cannot re-send a streamed body", req.what),
                        ));
                    }
                },
            };
            let replayable = !matches!(req.body, Body::Once(_));
            let result = self
                .send_following(host, &req, &scopes, body, auth_mode.clone())
                .await;
            let target = authority(&req.url);
            match result {
                Err(SendError::Fatal(e)) => return Err(e),
                Err(SendError::Transport(e)) => {
                    if retryable_error(&e) && replayable && attempt < max_attempts {
                        let wait = backoff(&self.options.retry, attempt);
                        tracing::debug!(host = target, what = req.what, attempt, wait_ms = wait.as_millis() as u64, error = %e, "retrying after connection error");
                        tokio::time::sleep(wait).await;
                        attempt += 1;
                        continue;
                    }
                    return Err(RegistryError::Connection {
                        host: target,
                        what: req.what.clone(),
                        attempts: attempt,
                        source: e.without_url(),
                    });
                }
                Ok(answer) => {
                    let status = answer.response.status();
                    tracing::trace!(method = %req.method, url = %redact_url(&answer.url), %status, attempt, "response");
                    if status == StatusCode::UNAUTHORIZED
                        && auth_mode == AuthMode::Registry
                        && host.same_origin(&answer.url)
                        && !refreshed
                    {
                        refreshed = true;
                        let c = answer
                            .response
                            .headers()
                            .get(header::WWW_AUTHENTICATE)
                            .and_then(|v| v.to_str().ok())
                            .and_then(challenge::parse);
                        if let Some(c) = c {
                            if let Challenge::Bearer { scope, .. } = &c {
                                host.forget_token(&scope_key(&scopes));
                                for s in scope {
                                    if !scopes.contains(s) {
                                        scopes.push(s.clone());
                                    }
                                }
                                host.forget_token(&scope_key(&scopes));
                            }
                            host.set_challenge(Some(c));
                            if replayable {
                                tracing::debug!(
                                    host = target,
                                    what = req.what,
                                    "401: refreshing credentials once"
                                );
                                continue;
                            }
                            // The caller replays the body itself (uploads) with fresh auth.
                            return Ok(answer);
                        }
                    }
                    if retryable_status(status) {
                        if replayable && attempt < max_attempts {
                            let wait = retry_after(answer.response.headers())
                                .map(|w| w.min(self.options.retry.max_backoff))
                                .unwrap_or_else(|| backoff(&self.options.retry, attempt));
                            tracing::debug!(host = target, what = req.what, attempt, %status, wait_ms = wait.as_millis() as u64, "retrying");
                            drop(answer.response);
                            tokio::time::sleep(wait).await;
                            attempt += 1;
                            continue;
                        }
                        return Err(error_from(answer, &target, &req.what, attempt).await);
                    }
                    if status == StatusCode::UNAUTHORIZED
                        && refreshed
                        && auth_mode == AuthMode::Registry
                        && host.same_origin(&answer.url)
                        && host.challenge() == Some(Challenge::Basic)
                        && let Some(Secret::Basic { username, .. }) = self.secret(host).await?
                    {
                        // Basic credentials went with both tries: they are wrong, not missing.
                        let message = read_error(answer.response, MAX_ERROR_BODY_BYTES).await.1;
                        return Err(RegistryError::CredentialsRefused {
                            registry: host.registry.clone(),
                            user: Some(username),
                            detail: format!(
                                "{}: {}",
                                req.what,
                                if message.is_empty() {
                                    "HTTP 401"
                                } else {
                                    &message
                                }
                            ),
                        });
                    }
                    return Ok(answer);
                }
            }
        }
    }

    /// One try, following redirects by hand when asked.
    async fn send_following(
        &self,
        host: &Host,
        req: &Request,
        scopes: &[String],
        mut body: Option<reqwest::Body>,
        auth_mode: AuthMode,
    ) -> Result<Answer, SendError> {
        let mut url = req.url.clone();
        let mut method = req.method.clone();
        let mut hops = 0;
        loop {
            let authorization = match &auth_mode {
                AuthMode::Registry if host.same_origin(&url) => self
                    .authorization(host, scopes)
                    .await
                    .map_err(SendError::Fatal)?,
                AuthMode::Header(v) if hops == 0 => Some(v.clone()),
                _ => None,
            };
            let mut direct = None;
            let mut answered = None;
            if req.lane == Lane::BlobDirect
                && method == Method::GET
                && !host.direct_declined.load(Ordering::Relaxed)
                && crate::direct::eligible(&url)
            {
                let mut headers = req.headers.clone();
                if let Some(v) = &authorization {
                    headers.insert(header::AUTHORIZATION, v.clone());
                }
                tracing::trace!(url = %redact_url(&url), hop = hops, "direct request");
                let clients = self.clients_for(&url).map_err(SendError::Fatal)?;
                match crate::direct::get(&url, &headers, &self.options, &clients.blob_tls).await {
                    Ok(crate::direct::Outcome::Body(response, body)) => {
                        answered = Some(response);
                        direct = Some(Box::new(body));
                    }
                    Ok(crate::direct::Outcome::Complete(response)) => answered = Some(response),
                    Ok(crate::direct::Outcome::HeadTimedOut) => {
                        return Err(SendError::Fatal(head_timed_out(
                            &url,
                            &req.what,
                            &self.options,
                        )));
                    }
                    Ok(crate::direct::Outcome::NotHandled(why)) => {
                        tracing::debug!(what = req.what, why, "direct GET not used");
                        host.direct_declined.store(true, Ordering::Relaxed);
                    }
                    // Nothing was answered: the same attempt goes through reqwest, whose
                    // errors are the ones the retry rules know.
                    Err(e) => tracing::debug!(what = req.what, error = %e, "direct GET failed"),
                }
            }
            let response = match answered {
                Some(r) => r,
                None => {
                    let clients = self.clients_for(&url).map_err(SendError::Fatal)?;
                    let http = match req.lane {
                        Lane::Pooled => &clients.pooled,
                        Lane::Blob | Lane::BlobDirect => &clients.blob,
                    };
                    let mut rb = http.request(method.clone(), url.clone());
                    for (k, v) in &req.headers {
                        rb = rb.header(k, v);
                    }
                    if let Some(v) = authorization {
                        rb = rb.header(header::AUTHORIZATION, v);
                    }
                    if let Some(b) = body.take() {
                        rb = rb.body(b);
                    }
                    tracing::trace!(%method, url = %redact_url(&url), hop = hops, "request");
                    rb.send().await.map_err(SendError::Transport)?
                }
            };
            let status = response.status();
            if req.follow == Follow::Redirects
                && status.is_redirection()
                && status != StatusCode::NOT_MODIFIED
            {
                let here = authority(&url);
                let Some(location) = response
                    .headers()
                    .get(header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                else {
                    return Err(SendError::Fatal(RegistryError::protocol(
                        &here,
                        format!("{}: redirect {status} without Location", req.what),
                    )));
                };
                let next = url.join(location).map_err(|_| {
                    SendError::Fatal(RegistryError::protocol(
                        &here,
                        format!("{}: unusable redirect Location", req.what),
                    ))
                })?;
                if !matches!(next.scheme(), "http" | "https") {
                    return Err(SendError::Fatal(RegistryError::protocol(
                        &here,
                        format!("{}: redirect to a {} URL refused", req.what, next.scheme()),
                    )));
                }
                if url.scheme() == "https" && next.scheme() == "http" {
                    return Err(SendError::Fatal(RegistryError::protocol(
                        &here,
                        format!(
                            "{}: redirect from https to plain http ({}) refused",
                            req.what,
                            authority(&next)
                        ),
                    )));
                }
                if host_ip(&next).is_some_and(is_link_local) {
                    return Err(SendError::Fatal(RegistryError::protocol(
                        &here,
                        format!("{}: redirect to a link-local address refused", req.what),
                    )));
                }
                hops += 1;
                if hops > MAX_REDIRECTS {
                    return Err(SendError::Fatal(RegistryError::protocol(
                        &here,
                        format!("{}: more than {MAX_REDIRECTS} redirects", req.what),
                    )));
                }
                if body.is_none() && !matches!(req.body, Body::Empty) {
                    // A body can't follow a redirect without being replayed; only GET/HEAD
                    // are sent with Follow::Redirects.
                    return Err(SendError::Fatal(RegistryError::protocol(
                        &here,
                        format!("{}: redirect of a request with a body", req.what),
                    )));
                }
                if status == StatusCode::SEE_OTHER && method != Method::HEAD {
                    method = Method::GET;
                }
                tracing::debug!(
                    what = req.what,
                    from = here,
                    to = authority(&next),
                    cross_host = !host.same_origin(&next),
                    "following redirect"
                );
                url = next;
                continue;
            }
            return Ok(Answer {
                response,
                url,
                direct,
            });
        }
    }

    // ---- operations used by sources and sinks ----

    pub(crate) async fn tags(
        &self,
        host: &Host,
        repository: &str,
    ) -> Result<Vec<String>, RegistryError> {
        let mut url = host
            .base
            .join(&format!("v2/{repository}/tags/list"))
            .map_err(|e| RegistryError::protocol(&host.host_port(), e.to_string()))?;
        if let Some(n) = self.options.tags_page_size {
            url.query_pairs_mut().append_pair("n", &n.to_string());
        }
        let scopes = vec![format!("repository:{repository}:pull")];
        let mut out = Vec::new();
        let mut seen = BTreeSet::new();
        let mut total = 0u64;
        for _ in 0..MAX_TAG_PAGES {
            if !seen.insert(url.to_string()) {
                return Err(RegistryError::protocol(
                    &host.host_port(),
                    format!("tag list of {repository}: Link pages loop"),
                ));
            }
            let what = format!("tag list of {repository}");
            let mut req = Request::new(Method::GET, url.clone(), scopes.clone(), what.clone());
            req.follow = Follow::Redirects;
            let answer = self.send(host, req).await?;
            if !answer.response.status().is_success() {
                return Err(error_from(answer, &host.host_port(), &what, 1).await);
            }
            let next = answer
                .response
                .headers()
                .get_all(header::LINK)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .find_map(next_link);
            let page_url = answer.url.clone();
            let bytes = read_capped(
                answer.response,
                MAX_TAGS_PAGE_BYTES,
                self.options.low_speed,
                &host.host_port(),
                &what,
            )
            .await?;
            total += bytes.len() as u64;
            if total > self.options.max_tags_bytes {
                return Err(RegistryError::TooLarge {
                    what: format!(
                        "{what} from {} ({} pages so far)",
                        host.host_port(),
                        seen.len()
                    ),
                    limit: self.options.max_tags_bytes,
                });
            }
            #[derive(serde::Deserialize)]
            struct Page {
                #[serde(default)]
                tags: Option<Vec<String>>,
            }
            let page: Page = serde_json::from_slice(&bytes).map_err(|_| {
                RegistryError::protocol(&host.host_port(), format!("{what}: not the expected JSON"))
            })?;
            out.extend(page.tags.unwrap_or_default());
            match next {
                None => return Ok(out),
                Some(link) => {
                    let next_url = page_url.join(&link).map_err(|_| {
                        RegistryError::protocol(&host.host_port(), format!("{what}: bad Link URL"))
                    })?;
                    if !host.same_origin(&next_url) {
                        return Err(RegistryError::protocol(
                            &host.host_port(),
                            format!("{what}: Link to another host refused"),
                        ));
                    }
                    url = next_url;
                }
            }
        }
        Err(RegistryError::protocol(
            &host.host_port(),
            format!("tag list of {repository}: more than {MAX_TAG_PAGES} pages"),
        ))
    }

    pub(crate) async fn check_login(&self, registry: &str) -> Result<(), RegistryError> {
        let host = self.host(registry).await?;
        let secret = self.secret(&host).await?;
        let url = host
            .base
            .join("v2/")
            .map_err(|e| RegistryError::protocol(&host.host_port(), e.to_string()))?;
        match host.challenge() {
            None => return Ok(()),
            Some(Challenge::Basic) => {
                if !matches!(secret, Some(Secret::Basic { .. })) {
                    return Err(RegistryError::Unauthorized {
                        registry: registry.into(),
                        detail: "the registry wants a user name and password".into(),
                    });
                }
            }
            Some(Challenge::Bearer { realm, service, .. }) => {
                if secret.is_none() {
                    return Err(RegistryError::Unauthorized {
                        registry: registry.into(),
                        detail: "no credentials configured".into(),
                    });
                }
                // A scope-less token is what `docker login` asks for.
                self.token(&host, &realm, service.as_deref(), &[]).await?;
            }
        }
        let req = Request::new(Method::GET, url, Vec::new(), "login check /v2/".into());
        let answer = self.send(&host, req).await?;
        let status = answer.response.status();
        if status.is_success() {
            return Ok(());
        }
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(RegistryError::CredentialsRefused {
                registry: registry.into(),
                user: secret
                    .as_ref()
                    .and_then(Secret::username)
                    .map(str::to_string),
                detail: format!("login check /v2/ answered {status}"),
            });
        }
        Err(error_from(answer, &host.host_port(), "login check /v2/", 1).await)
    }
}

#[derive(Clone, PartialEq, Eq)]
enum AuthMode {
    /// The registry's own auth, on its origin only.
    Registry,
    /// This header on the first hop only (token realm with Basic credentials).
    Header(HeaderValue),
    None,
}

enum SendError {
    Transport(reqwest::Error),
    Fatal(RegistryError),
}

fn basic_header(username: &str, password: &str) -> HeaderValue {
    let encoded =
        base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    let mut v = HeaderValue::from_str(&format!("Basic {encoded}"))
        .unwrap_or_else(|_| HeaderValue::from_static("Basic"));
    v.set_sensitive(true);
    v
}

/// A URL for logs: no query (upload `_state`, presigned storage signatures), no userinfo.
pub(crate) fn redact_url(url: &Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.to_string()
}

/// `rel="next"` target of a Link header value (RFC 5988).
fn next_link(value: &str) -> Option<String> {
    for part in value.split(',') {
        let part = part.trim();
        let (target, params) = part.split_once(';').unwrap_or((part, ""));
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        let is_next = params.split(';').any(|p| {
            let p = p.trim();
            let Some((k, v)) = p.split_once('=') else {
                return false;
            };
            k.trim().eq_ignore_ascii_case("rel")
                && v.trim()
                    .trim_matches('"')
                    .split_ascii_whitespace()
                    .any(|r| r.eq_ignore_ascii_case("next"))
        });
        if is_next {
            return Some(target.to_string());
        }
    }
    None
}

/// Jittered exponential backoff for try `attempt` (1-based) that just failed.
pub(crate) fn backoff(policy: &crate::RetryPolicy, attempt: u32) -> Duration {
    let exp = attempt.saturating_sub(1).min(20);
    let base = policy
        .initial_backoff
        .saturating_mul(1u32 << exp)
        .min(policy.max_backoff);
    // Jitter in [50 %, 100 %] so concurrent clients don't retry in lockstep.
    let factor = 0.5 + rand::random::<f64>() * 0.5;
    base.mul_f64(factor)
}

/// `Retry-After` as seconds or an HTTP date.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(
        when.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// Read a body into memory, failing past `limit` bytes (the `Content-Length` is checked first).
/// A body slower than `low_speed` is given up ([`RegistryError::TooSlow`]).
pub(crate) async fn read_capped(
    response: reqwest::Response,
    limit: u64,
    low_speed: LowSpeedLimit,
    host: &str,
    what: &str,
) -> Result<Vec<u8>, RegistryError> {
    if response.content_length().is_some_and(|l| l > limit) {
        return Err(RegistryError::TooLarge {
            what: format!("{what} from {host}"),
            limit,
        });
    }
    let mut out = Vec::new();
    let mut stream = response.bytes_stream();
    let mut speed = SpeedCheck::new(low_speed);
    loop {
        speed.waiting();
        let Some(chunk) = stream.next().await else {
            break;
        };
        let chunk = chunk.map_err(|e| RegistryError::Connection {
            host: host.to_string(),
            what: what.to_string(),
            attempts: 1,
            source: e.without_url(),
        })?;
        speed
            .arrived(chunk.len() as u64)
            .map_err(|detail| RegistryError::TooSlow {
                host: host.to_string(),
                what: what.to_string(),
                detail,
            })?;
        if out.len() as u64 + chunk.len() as u64 > limit {
            return Err(RegistryError::TooLarge {
                what: format!("{what} from {host}"),
                limit,
            });
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Request id and error text of an error response (body capped).
async fn read_error(
    response: reqwest::Response,
    limit: u64,
) -> (Option<String>, String, Option<String>) {
    let request_id = REQUEST_ID_HEADERS.iter().find_map(|h| {
        response
            .headers()
            .get(*h)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.chars().take(128).collect::<String>())
    });
    // Read at most `limit` bytes; a larger body is cut, not an error.
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(Ok(chunk)) = stream.next().await {
        let room = (limit as usize).saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() as u64 >= limit {
            break;
        }
    }
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<ErrorItem>,
    }
    #[derive(serde::Deserialize)]
    struct ErrorItem {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    if let Ok(e) = serde_json::from_slice::<Errors>(&body)
        && let Some(first) = e.errors.first()
    {
        let code = (!first.code.is_empty()).then(|| first.code.clone());
        let message = e
            .errors
            .iter()
            .map(|x| x.message.as_str())
            .filter(|m| !m.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        return (code, clean(&message), request_id);
    }
    let text = String::from_utf8_lossy(&body);
    (None, clean(&text), request_id)
}

/// One line, printable, short: error text from a registry goes into our messages.
fn clean(s: &str) -> String {
    let s: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(300)
        .collect();
    s.trim().to_string()
}

/// Turn a non-success answer into the right error.
pub(crate) async fn error_from(
    answer: Answer,
    host: &str,
    what: &str,
    attempts: u32,
) -> RegistryError {
    let status = answer.response.status();
    let host = if authority(&answer.url) != host {
        authority(&answer.url)
    } else {
        host.to_string()
    };
    let (code, message, request_id) = read_error(answer.response, MAX_ERROR_BODY_BYTES).await;
    match status.as_u16() {
        404 => RegistryError::NotFound {
            host,
            what: what.to_string(),
        },
        401 => RegistryError::Unauthorized {
            registry: host,
            detail: format!(
                "{what}: {}",
                if message.is_empty() {
                    "authentication required".into()
                } else {
                    message
                }
            ),
        },
        403 => RegistryError::Denied {
            host,
            what: what.to_string(),
            detail: if message.is_empty() {
                "forbidden".into()
            } else {
                message
            },
        },
        s => RegistryError::Http {
            host,
            what: what.to_string(),
            status: s,
            code,
            message,
            request_id,
            attempts,
        },
    }
}

impl Client {
    /// A client with its own connection pool; nothing is contacted until first use.
    pub fn new(options: RegistryOptions) -> Result<Client, RegistryError> {
        let shared = crate::tls::HostTls {
            insecure: options.tls == TlsMode::Insecure,
            ..Default::default()
        };
        let shared = Arc::new(crate::tls::host_clients(&options, &shared)?);
        Ok(Client {
            inner: Arc::new(Inner {
                shared,
                per_host: Mutex::new(HashMap::new()),
                options,
                hosts: tokio::sync::Mutex::new(HashMap::new()),
            }),
        })
    }

    pub fn options(&self) -> &RegistryOptions {
        &self.inner.options
    }

    /// Open `reference` for reading (pings the registry the first time), where
    /// [`RegistryOptions::registries`] says: a blocked name is refused, a `location` rewrites
    /// it, and mirrors are asked first — the first one that has the manifest serves the whole
    /// image; when none has it (or none answers), the primary location does.
    pub async fn source(&self, reference: &Reference) -> Result<RegistrySource, RegistryError> {
        let sources = self.inner.options.registries.pull_sources(reference)?;
        let last = sources.len().saturating_sub(1);
        for (i, pull) in sources.iter().enumerate() {
            if i == last {
                return self.open_source(&pull.reference).await;
            }
            let found = match self.inner.host_pinged(pull.reference.registry(), 1).await {
                Ok(host) => {
                    let source =
                        RegistrySource::new(self.inner.clone(), host, pull.reference.clone());
                    source.head_manifest(None).await.map(|m| (source, m))
                }
                Err(e) => Err(e),
            };
            match found {
                Ok((source, Some(_))) => {
                    tracing::info!(%reference, mirror = %pull.reference, "pulling from a mirror");
                    return Ok(source);
                }
                Ok((_, None)) => {
                    tracing::info!(%reference, mirror = %pull.reference, "the mirror does not have the image");
                }
                Err(e) => {
                    tracing::warn!(%reference, mirror = %pull.reference, error = %e, "mirror failed, trying the next source");
                }
            }
        }
        // pull_sources always ends with the primary location.
        self.open_source(reference).await
    }

    async fn open_source(&self, reference: &Reference) -> Result<RegistrySource, RegistryError> {
        let host = self.inner.host(reference.registry()).await?;
        Ok(RegistrySource::new(
            self.inner.clone(),
            host,
            reference.clone(),
        ))
    }

    /// Open `reference`'s repository for writing (pings the registry the first time).
    pub async fn sink(&self, reference: &Reference) -> Result<RegistrySink, RegistryError> {
        let host = self.inner.host(reference.registry()).await?;
        Ok(RegistrySink::new(
            self.inner.clone(),
            host,
            reference.clone(),
        ))
    }

    /// Every tag of `repository`'s repository, following `Link: <…>; rel="next"` pages.
    pub async fn tags(&self, repository: &Reference) -> Result<Vec<String>, RegistryError> {
        let host = self.inner.host(repository.registry()).await?;
        self.inner.tags(&host, repository.repository()).await
    }

    /// Ping `registry` and authenticate with the configured credentials (`strata login`).
    /// `docker.io` aliases (`index.docker.io`, `https://index.docker.io/v1/`) are accepted.
    pub async fn check_login(&self, registry: &str) -> Result<(), RegistryError> {
        let normalised = auth::normalise_registry(registry).ok_or_else(|| {
            RegistryError::config(None, format!("{registry:?} is not a registry host"))
        })?;
        self.inner.check_login(&normalised).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_link_headers() {
        assert_eq!(
            next_link(r#"</v2/a/tags/list?last=b&n=2>; rel="next""#).as_deref(),
            Some("/v2/a/tags/list?last=b&n=2")
        );
        assert_eq!(
            next_link(r#"<https://x/prev>; rel="prev", <https://x/n>; rel=next"#).as_deref(),
            Some("https://x/n")
        );
        assert_eq!(next_link(r#"<https://x/p>; rel="prev""#), None);
        assert_eq!(next_link("garbage"), None);
    }

    #[test]
    fn retry_after_forms() {
        let mut h = HeaderMap::new();
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("3"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        let date = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(30));
        h.insert(header::RETRY_AFTER, HeaderValue::from_str(&date).unwrap());
        let d = retry_after(&h).unwrap();
        assert!(
            d > Duration::from_secs(25) && d <= Duration::from_secs(30),
            "{d:?}"
        );
        h.insert(
            header::RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = crate::RetryPolicy {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(700),
        };
        for attempt in 1..10 {
            let d = backoff(&p, attempt);
            let full =
                Duration::from_millis(100 * (1 << (attempt - 1))).min(Duration::from_millis(700));
            assert!(d >= full / 2 && d <= full, "attempt {attempt}: {d:?}");
        }
    }

    fn host(base: &str) -> Host {
        Host {
            registry: "r".into(),
            base: Url::parse(base).unwrap(),
            challenge: Mutex::new(None),
            secret: tokio::sync::OnceCell::new(),
            tokens: Mutex::new(HashMap::new()),
            token_fetch: tokio::sync::Mutex::new(()),
            direct_declined: Default::default(),
        }
    }

    #[test]
    fn n3_realm_rules() {
        let verify = Client::new(RegistryOptions::default()).unwrap();
        let insecure = Client::new(RegistryOptions {
            tls: TlsMode::Insecure,
            ..RegistryOptions::default()
        })
        .unwrap();
        let public = host("https://registry.example/");
        let private = host("https://10.0.0.5:5000/");
        let ok = |c: &Client, h: &Host, realm: &str| c.inner.check_realm(h, realm).is_ok();
        assert!(ok(&verify, &public, "https://auth.example/token"));
        assert!(
            !ok(&verify, &public, "http://auth.example/token"),
            "plain http"
        );
        assert!(ok(&insecure, &public, "http://auth.example/token"));
        assert!(
            !ok(&insecure, &public, "https://169.254.169.254/token"),
            "metadata"
        );
        assert!(!ok(&insecure, &public, "https://[fe80::1]/token"));
        assert!(
            !ok(&verify, &public, "https://10.1.1.1/token"),
            "private for public"
        );
        assert!(!ok(&verify, &public, "https://127.0.0.1/token"));
        assert!(!ok(&verify, &public, "https://localhost/token"));
        assert!(
            ok(&verify, &private, "https://10.1.1.1/token"),
            "private for private"
        );
        assert!(!ok(&verify, &private, "https://169.254.1.1/token"));
        assert!(!ok(&verify, &public, "https://u:p@auth.example/token"));
        assert!(!ok(&verify, &public, "file:///etc/passwd"));
        assert!(!ok(&verify, &public, "not a url"));
    }

    #[test]
    fn same_origin_is_scheme_host_and_port() {
        let h = host("http://127.0.0.1:5000/");
        assert!(h.same_origin(&Url::parse("http://127.0.0.1:5000/v2/x").unwrap()));
        assert!(!h.same_origin(&Url::parse("http://localhost:5000/v2/x").unwrap()));
        assert!(!h.same_origin(&Url::parse("http://127.0.0.1:5001/v2/x").unwrap()));
        assert!(!h.same_origin(&Url::parse("https://127.0.0.1:5000/v2/x").unwrap()));
        let d = host("https://registry-1.docker.io/");
        assert!(d.same_origin(&Url::parse("https://registry-1.docker.io:443/v2/").unwrap()));
    }

    #[test]
    fn private_and_link_local() {
        assert!(is_link_local("169.254.169.254".parse().unwrap()));
        assert!(is_link_local("fe80::1".parse().unwrap()));
        assert!(is_private("10.1.2.3".parse().unwrap()));
        assert!(is_private("127.0.0.1".parse().unwrap()));
        assert!(!is_private("8.8.8.8".parse().unwrap()));
    }
}
